// The vocabulary helpers of filter.hpp.
#include "filters/filter.hpp"

namespace postern::filters {

const char* action_name(Action action) {
    switch (action) {
        case Action::kContinue:
            return "continue";
        case Action::kAccept:
            return "accept";
        case Action::kReject:
            return "reject";
        case Action::kTempfail:
            return "tempfail";
        case Action::kDiscard:
            return "discard";
        case Action::kDisconnect:
            return "disconnect";
    }
    return "?";
}

const char* stage_name(Stage stage) {
    switch (stage) {
        case Stage::kConnect:
            return "connect";
        case Stage::kHelo:
            return "helo";
        case Stage::kAuth:
            return "auth";
        case Stage::kMailFrom:
            return "mail_from";
        case Stage::kRcptTo:
            return "rcpt_to";
        case Stage::kData:
            return "data";
    }
    return "?";
}

const char* event_name(Event event) {
    switch (event) {
        case Event::kQueued:
            return "queued";
        case Event::kDelivered:
            return "delivered";
        case Event::kFailed:
            return "failed";
    }
    return "?";
}

std::optional<std::string> check_reply(Action action, const FilterReply& reply) {
    const int code = reply.code;
    const int klass = code / 100;
    if (action == Action::kReject && klass != 5) {
        return "a reject needs a 5xx code, not " + std::to_string(code);
    }
    if (action == Action::kTempfail && klass != 4) {
        return "a tempfail needs a 4xx code, not " + std::to_string(code);
    }
    if (action == Action::kDisconnect && code != 421 && klass != 5) {
        return "a disconnect needs 421 or a 5xx code, not " + std::to_string(code);
    }
    if (code < 400 || code > 599) return "code " + std::to_string(code) + " is not 4xx or 5xx";
    if (!reply.enhanced.empty()) {
        // class.subject.detail, RFC 3463: the class is the reply's, the others 1 to 3 digits.
        const std::string& e = reply.enhanced;
        size_t dot1 = e.find('.');
        size_t dot2 = dot1 == std::string::npos ? dot1 : e.find('.', dot1 + 1);
        auto digits = [&](size_t from, size_t to) {
            if (to <= from || to - from > 3) return false;
            for (size_t i = from; i < to; ++i) {
                if (e[i] < '0' || e[i] > '9') return false;
            }
            return true;
        };
        if (dot1 != 1 || dot2 == std::string::npos || !digits(2, dot2) ||
            !digits(dot2 + 1, e.size())) {
            return "enhanced code \"" + e + "\" is not class.subject.detail (RFC 3463)";
        }
        if (e[0] - '0' != klass) {
            return "enhanced code " + e + " does not match reply code " + std::to_string(code);
        }
    }
    if (reply.text.size() > 400) return "reply text is longer than 400 octets";
    for (char c : reply.text) {
        auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) return "reply text holds a control character";
    }
    return std::nullopt;
}

Address Address::from_mailbox(std::string_view mailbox) {
    Address a;
    a.address = std::string(mailbox);
    size_t at = mailbox.rfind('@');
    if (at != std::string_view::npos) {
        a.local = std::string(mailbox.substr(0, at));
        a.domain = std::string(mailbox.substr(at + 1));
    } else {
        a.local = a.address;
    }
    return a;
}

}  // namespace postern::filters
