// Envelope serialisation; see message.hpp.
#include "proxy/queue/message.hpp"

#include <ctime>

#include "proxy/observe/log.hpp"

namespace postern::queue {
namespace {

using observe::json_quote;

std::string body_name(smtp::BodyType body) {
    switch (body) {
        case smtp::BodyType::k7Bit:
            return "7BIT";
        case smtp::BodyType::k8BitMime:
            return "8BITMIME";
        default:
            return "";
    }
}

std::string ret_name(smtp::DsnRet ret) {
    switch (ret) {
        case smtp::DsnRet::kFull:
            return "FULL";
        case smtp::DsnRet::kHdrs:
            return "HDRS";
        default:
            return "";
    }
}

std::string notify_list(unsigned notify) {
    std::string out;
    auto add = [&](unsigned bit, const char* name) {
        if (!(notify & bit)) return;
        if (!out.empty()) out += ',';
        out += name;
    };
    add(smtp::notify::kNever, "NEVER");
    add(smtp::notify::kSuccess, "SUCCESS");
    add(smtp::notify::kFailure, "FAILURE");
    add(smtp::notify::kDelay, "DELAY");
    return out;
}

std::string iso_time(std::chrono::system_clock::time_point t) {
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace

std::string envelope_to_json(const Envelope& e, uint64_t message_size) {
    const smtp::MailParams& mp = e.mail_from.params;
    std::string out = "{\n";
    out += "  \"queue_id\": " + json_quote(e.queue_id) + ",\n";
    out += "  \"mail_from\": " + json_quote(e.mail_from.sender.mailbox()) + ",\n";
    out += "  \"mail_params\": {";
    std::string params;
    // `json` is an already-encoded JSON value; strings go through json_quote.
    auto param = [&](const char* key, const std::string& json) {
        params += (params.empty() ? "" : ", ") + json_quote(key) + ": " + json;
    };
    if (mp.size) param("size", std::to_string(*mp.size));
    if (mp.body != smtp::BodyType::kUnspecified) param("body", json_quote(body_name(mp.body)));
    if (mp.smtputf8) param("smtputf8", "true");
    if (mp.ret != smtp::DsnRet::kUnspecified) param("ret", json_quote(ret_name(mp.ret)));
    if (!mp.envid.empty()) param("envid", json_quote(mp.envid));
    out += params + "},\n";
    out += "  \"recipients\": [";
    for (size_t i = 0; i < e.recipients.size(); ++i) {
        const smtp::RcptTo& r = e.recipients[i];
        out += i ? ",\n    " : "\n    ";
        out += "{\"address\": " + json_quote(r.recipient.mailbox());
        if (r.params.notify) out += ", \"notify\": " + json_quote(notify_list(r.params.notify));
        if (!r.params.orcpt.empty()) out += ", \"orcpt\": " + json_quote(r.params.orcpt);
        out += "}";
    }
    out += "\n  ],\n";
    out += "  \"client_ip\": " + json_quote(e.client_ip) + ",\n";
    out += "  \"client_port\": " + std::to_string(e.client_port) + ",\n";
    out += "  \"helo\": " + json_quote(e.helo) + ",\n";
    out += "  \"protocol\": " + json_quote(e.protocol) + ",\n";
    out += "  \"listener\": " + json_quote(e.listener) + ",\n";
    out += "  \"received_at\": " + json_quote(iso_time(e.received_at)) + ",\n";
    out += "  \"size\": " + std::to_string(message_size) + "\n";
    out += "}\n";
    return out;
}

}  // namespace postern::queue
