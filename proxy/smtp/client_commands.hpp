// The commands postern's SMTP client sends for an envelope (RFC 5321 4.1.1.2, 4.1.1.3) with
// the ESMTP parameters the server offers: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
// (RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461). A message the server cannot take as it is
// gets a permanent failure here instead (552 5.3.4, 554 5.6.3, 553 5.6.7). Nothing from the
// envelope that could end or split a command line (CR, LF, NUL, other controls) is ever
// written.
#pragma once

#include <optional>
#include <string>

#include "proxy/smtp/capabilities.hpp"
#include "proxy/smtp/esmtp_params.hpp"

namespace postern::smtp {

struct MailCommandInput {
    const MailFrom& mail;
    std::optional<uint64_t> size =
        std::nullopt;             // the message size when known, else the client's SIZE=
    bool eight_bit_body = false;  // the body holds octets above 127
};

// "MAIL FROM:<...> params\r\n", or the reply refusing the message for this server.
Parsed<std::string> mail_command(const MailCommandInput& input, const Capabilities& caps);
// "RCPT TO:<...> params\r\n", or the reply refusing the recipient.
Parsed<std::string> rcpt_command(const RcptTo& rcpt, const Capabilities& caps);

// The refusal when a message with these properties cannot go to this server (checked again
// at end of data, when the body is known); nullopt when it can.
std::optional<Reply> check_message_fits(const MailFrom& mail, uint64_t size, bool eight_bit_body,
                                        const Capabilities& caps);

// The initial response of AUTH PLAIN (RFC 4616): base64 of "\0user\0password".
std::string sasl_plain_response(std::string_view user, std::string_view password);

}  // namespace postern::smtp
