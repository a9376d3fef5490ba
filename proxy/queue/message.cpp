// Envelope serialisation; see message.hpp.
#include "proxy/queue/message.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <ctime>
#include <optional>

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

std::string envelope_to_json(const Envelope& e, uint64_t message_size,
                             std::optional<uint32_t> crc32) {
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
    if (!e.route.empty()) out += "  \"route\": " + json_quote(e.route) + ",\n";
    out += "  \"received_at\": " + json_quote(iso_time(e.received_at)) + ",\n";
    if (crc32) out += "  \"crc32\": " + std::to_string(*crc32) + ",\n";
    out += "  \"size\": " + std::to_string(message_size) + "\n";
    out += "}\n";
    return out;
}

namespace {

std::optional<smtp::Address> address_from(std::string_view mailbox, bool reverse_path) {
    std::string path = "<" + std::string(mailbox) + ">";
    smtp::PathOptions options;
    options.allow_null = reverse_path;
    options.allow_postmaster = !reverse_path;
    smtp::PathParse parsed = smtp::parse_path(path, options);
    if (parsed.error != smtp::AddressError::kNone || parsed.consumed != path.size()) {
        return std::nullopt;
    }
    return parsed.address;
}

std::optional<std::chrono::system_clock::time_point> time_from(std::string_view iso) {
    std::tm tm{};
    std::string text(iso);
    const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end != '\0') return std::nullopt;
    return std::chrono::system_clock::from_time_t(timegm(&tm));
}

unsigned notify_from(std::string_view list) {
    unsigned bits = 0;
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string_view word =
            list.substr(pos, comma == std::string_view::npos ? list.npos : comma - pos);
        if (word == "NEVER") bits |= smtp::notify::kNever;
        if (word == "SUCCESS") bits |= smtp::notify::kSuccess;
        if (word == "FAILURE") bits |= smtp::notify::kFailure;
        if (word == "DELAY") bits |= smtp::notify::kDelay;
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    return bits;
}

}  // namespace

bool envelope_from_json(std::string_view json, Envelope& e, uint64_t& message_size,
                        std::string& error, std::optional<uint32_t>* crc32) {
    namespace bj = boost::json;
    boost::system::error_code ec;
    bj::value root = bj::parse(json, ec);
    if (ec || !root.is_object()) {
        error = "not a JSON object" + (ec ? ": " + ec.message() : std::string());
        return false;
    }
    const bj::object& o = root.get_object();
    auto string_at = [&](std::string_view key, std::string& out) {
        const bj::value* v = o.if_contains(key);
        if (!v || !v->is_string()) {
            error = "missing or not a string: " + std::string(key);
            return false;
        }
        out = std::string(v->get_string());
        return true;
    };
    std::string sender;
    std::string received;
    if (!string_at("queue_id", e.queue_id) || !string_at("mail_from", sender) ||
        !string_at("client_ip", e.client_ip) || !string_at("helo", e.helo) ||
        !string_at("protocol", e.protocol) || !string_at("listener", e.listener) ||
        !string_at("received_at", received)) {
        return false;
    }
    if (const bj::value* v = o.if_contains("route"); v && v->is_string()) {
        e.route = std::string(v->get_string());
    }
    const bj::value* size = o.if_contains("size");
    const bj::value* port = o.if_contains("client_port");
    if (!size || !size->is_number() || !port || !port->is_number()) {
        error = "missing size or client_port";
        return false;
    }
    // Each conversion fails on its own (a negative, fractional or too large number).
    boost::system::error_code size_ec;
    boost::system::error_code port_ec;
    message_size = size->to_number<uint64_t>(size_ec);
    if (crc32) {
        crc32->reset();
        if (const bj::value* v = o.if_contains("crc32")) {
            boost::system::error_code crc_ec;
            uint32_t value = v->is_number() ? v->to_number<uint32_t>(crc_ec) : 0;
            if (!v->is_number() || crc_ec) {
                error = "crc32 is not a number from 0 to 4294967295";
                return false;
            }
            *crc32 = value;
        }
    }
    e.client_port = port->to_number<uint16_t>(port_ec);
    auto when = time_from(received);
    auto from = address_from(sender, true);
    if (size_ec || port_ec || !when || !from) {
        error = "bad size, client_port, received_at or mail_from";
        return false;
    }
    e.received_at = *when;
    e.mail_from.sender = *from;
    if (const bj::value* p = o.if_contains("mail_params"); p && p->is_object()) {
        const bj::object& mp = p->get_object();
        smtp::MailParams& params = e.mail_from.params;
        if (auto* v = mp.if_contains("size"); v && v->is_number()) {
            params.size = v->to_number<uint64_t>(ec);
        }
        if (auto* v = mp.if_contains("body"); v && v->is_string()) {
            params.body =
                v->get_string() == "8BITMIME" ? smtp::BodyType::k8BitMime : smtp::BodyType::k7Bit;
        }
        if (auto* v = mp.if_contains("smtputf8"); v && v->is_bool())
            params.smtputf8 = v->get_bool();
        if (auto* v = mp.if_contains("ret"); v && v->is_string()) {
            params.ret = v->get_string() == "FULL" ? smtp::DsnRet::kFull : smtp::DsnRet::kHdrs;
        }
        if (auto* v = mp.if_contains("envid"); v && v->is_string()) {
            params.envid = std::string(v->get_string());
        }
    }
    const bj::value* rcpts = o.if_contains("recipients");
    if (!rcpts || !rcpts->is_array() || rcpts->get_array().empty()) {
        error = "missing recipients";
        return false;
    }
    e.recipients.clear();
    for (const bj::value& r : rcpts->get_array()) {
        const bj::value* address = r.is_object() ? r.get_object().if_contains("address") : nullptr;
        auto parsed = address && address->is_string()
                          ? address_from(std::string_view(address->get_string()), false)
                          : std::nullopt;
        if (!parsed) {
            error = "bad recipient";
            return false;
        }
        smtp::RcptTo rcpt;
        rcpt.recipient = *parsed;
        const bj::object& ro = r.get_object();
        if (auto* v = ro.if_contains("notify"); v && v->is_string()) {
            rcpt.params.notify = notify_from(std::string_view(v->get_string()));
        }
        if (auto* v = ro.if_contains("orcpt"); v && v->is_string()) {
            rcpt.params.orcpt = std::string(v->get_string());
        }
        e.recipients.push_back(std::move(rcpt));
    }
    return true;
}

}  // namespace postern::queue
