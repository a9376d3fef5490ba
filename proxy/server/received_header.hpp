// The Received: trace header postern prepends to every message (RFC 5321 4.4, with the
// protocol keywords of RFC 3848 and RFC 6531 3.7.3).
#pragma once

#include <chrono>
#include <string>

#include "proxy/queue/message.hpp"

namespace postern::server {

// "Received: from HELO ([IP])\r\n\tby HOST (postern) with PROTO id QID\r\n\tfor <RCPT>; DATE\r\n"
// With TLS, a line "\t(using TLSv1.3 with cipher ... (256/256 bits))" follows the first.
// The "for" clause names the recipient only when there is exactly one (RFC 5321 7.2); without
// it the second line ends with ";" and the third holds the date.
std::string received_header(const queue::Envelope& envelope, const std::string& hostname);

// RFC 5322 3.3 date-time in UTC: "Sat, 28 Nov 2026 15:42:32 +0000".
std::string rfc5322_date(std::chrono::system_clock::time_point t);

}  // namespace postern::server
