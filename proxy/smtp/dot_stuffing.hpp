// The DATA payload an SMTP client sends for a message (RFC 5321 4.5.2, 4.1.1.4): every line
// ends with CRLF, a line starting with "." gets one more, and the payload ends with CRLF "."
// CRLF. A bare CR or LF in the message is sent as CRLF, so that nothing postern relays can be
// read as an end of data by a lenient next hop (SMTP smuggling).
#pragma once

#include <string>
#include <string_view>

namespace postern::smtp {

// Appends the payload for `message` to `out`, terminating ".\r\n" included.
void append_dot_stuffed(std::string_view message, std::string& out);

}  // namespace postern::smtp
