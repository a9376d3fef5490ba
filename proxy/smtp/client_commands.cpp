// Client command lines; see client_commands.hpp.
#include "proxy/smtp/client_commands.hpp"

#include "proxy/smtp/base64.hpp"

namespace postern::smtp {
namespace {

// Anything below 0x20 or DEL would end or corrupt a command line.
bool has_control(std::string_view s) {
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

bool address_safe(const Address& a) {
    return !has_control(a.local) && !has_control(a.domain);
}

const Reply kUnsafeEnvelope{550, "5.6.0", "Envelope value with control characters not relayed"};

}  // namespace

std::optional<Reply> check_message_fits(const MailFrom& mail, uint64_t size, bool eight_bit_body,
                                        const Capabilities& caps) {
    if (caps.size && *caps.size > 0 && size > *caps.size) {
        return Reply{552, "5.3.4",
                     "Message too big for the upstream server (its limit is " +
                         std::to_string(*caps.size) + " octets)"};
    }
    if (eight_bit_body && !caps.eight_bit_mime) {
        return Reply{554, "5.6.3", "8-bit message and the upstream server does not offer 8BITMIME"};
    }
    if (mail.params.smtputf8 && !caps.smtputf8) {
        return Reply{553, "5.6.7",
                     "SMTPUTF8 message and the upstream server does not offer SMTPUTF8"};
    }
    return std::nullopt;
}

Parsed<std::string> mail_command(const MailCommandInput& input, const Capabilities& caps) {
    Parsed<std::string> out;
    const MailFrom& mail = input.mail;
    if (!address_safe(mail.sender) || has_control(mail.params.envid)) {
        out.error = kUnsafeEnvelope;
        return out;
    }
    if (auto refusal =
            check_message_fits(mail, input.size.value_or(0), input.eight_bit_body, caps)) {
        out.error = refusal;
        return out;
    }
    std::string& line = out.value;
    line = "MAIL FROM:<" + mail.sender.mailbox() + ">";
    if (caps.size && input.size) line += " SIZE=" + std::to_string(*input.size);
    if (caps.eight_bit_mime) {
        if (mail.params.body == BodyType::k8BitMime || input.eight_bit_body) {
            line += " BODY=8BITMIME";
        } else if (mail.params.body == BodyType::k7Bit) {
            line += " BODY=7BIT";
        }
    }
    if (mail.params.smtputf8) line += " SMTPUTF8";
    if (caps.dsn) {
        if (mail.params.ret == DsnRet::kFull) line += " RET=FULL";
        if (mail.params.ret == DsnRet::kHdrs) line += " RET=HDRS";
        if (!mail.params.envid.empty()) line += " ENVID=" + mail.params.envid;
    }
    line += "\r\n";
    return out;
}

Parsed<std::string> rcpt_command(const RcptTo& rcpt, const Capabilities& caps) {
    Parsed<std::string> out;
    if (!address_safe(rcpt.recipient) || has_control(rcpt.params.orcpt)) {
        out.error = kUnsafeEnvelope;
        return out;
    }
    std::string& line = out.value;
    line = "RCPT TO:<" + rcpt.recipient.mailbox() + ">";
    if (caps.dsn && rcpt.params.notify != 0) {
        line += " NOTIFY=";
        if (rcpt.params.notify & notify::kNever) {
            line += "NEVER";
        } else {
            std::string list;
            auto add = [&](unsigned bit, const char* name) {
                if (!(rcpt.params.notify & bit)) return;
                if (!list.empty()) list += ',';
                list += name;
            };
            add(notify::kSuccess, "SUCCESS");
            add(notify::kFailure, "FAILURE");
            add(notify::kDelay, "DELAY");
            line += list;
        }
    }
    if (caps.dsn && !rcpt.params.orcpt.empty()) line += " ORCPT=" + rcpt.params.orcpt;
    line += "\r\n";
    return out;
}

std::string sasl_plain_response(std::string_view user, std::string_view password) {
    std::string message;
    message += '\0';
    message += user;
    message += '\0';
    message += password;
    return base64_encode(message);
}

}  // namespace postern::smtp
