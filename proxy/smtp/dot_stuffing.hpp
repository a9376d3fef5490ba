// The DATA payload an SMTP client sends for a message (RFC 5321 4.5.2, 4.1.1.4): every line
// ends with CRLF, a line starting with "." gets one more, and the payload ends with CRLF "."
// CRLF. A bare CR or LF in the message is sent as CRLF, so that nothing postern relays can be
// read as an end of data by a lenient next hop (SMTP smuggling).
#pragma once

#include <string>
#include <string_view>

namespace postern::smtp {

// Encodes a message given in pieces of any size (a piece may end inside a CRLF).
class DotStuffer {
  public:
    // Appends the encoding of the next piece of the message to `out`.
    void append(std::string_view piece, std::string& out);
    // Appends the end: a CRLF if the message did not end with a line end, then ".\r\n".
    void finish(std::string& out);

  private:
    bool line_start_ = true;
    bool skip_lf_ = false;  // the last piece ended with CR, already sent as CRLF
};

// Appends the payload for `message` to `out`, terminating ".\r\n" included.
void append_dot_stuffed(std::string_view message, std::string& out);

}  // namespace postern::smtp
