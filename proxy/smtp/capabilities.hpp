// What a server offers in its EHLO reply (RFC 5321 4.1.1.1; one keyword per line after the
// first, with parameters): the extensions postern's client uses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/smtp/reply_parser.hpp"

namespace postern::smtp {

struct Capabilities {
    bool esmtp = false;  // EHLO was answered with 250 (false after a HELO fallback)
    bool pipelining = false;
    bool starttls = false;
    bool eight_bit_mime = false;
    bool smtputf8 = false;
    bool chunking = false;
    bool dsn = false;
    bool enhanced_status_codes = false;
    std::optional<uint64_t> size;   // SIZE limit; nullopt when SIZE is not offered, 0 = no limit
    std::vector<std::string> auth;  // SASL mechanisms, upper case

    bool offers_auth(std::string_view mechanism) const;
};

// Reads the lines of a 250 EHLO reply. Keywords are case-insensitive; unknown ones are ignored;
// "AUTH=LOGIN" (the pre-standard form some servers still send) counts as AUTH LOGIN.
Capabilities parse_ehlo_reply(const ServerReply& reply);

}  // namespace postern::smtp
