// SMTP replies: a three-digit code, an RFC 3463 enhanced status code and text, formatted for the
// wire (RFC 5321 4.2, multi-line replies; RFC 2034 enhanced codes after EHLO).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace postern::smtp {

struct Reply {
    int code = 250;
    std::string enhanced;  // "2.0.0"; empty where RFC 2034 puts none (greeting, EHLO lines)
    std::string text;

    // One line "code SP [enhanced SP] text CRLF". The enhanced code is written only when the
    // client said EHLO (RFC 2034 section 3).
    void append_to(std::string& out, bool with_enhanced) const;
    std::string to_string(bool with_enhanced = true) const;
};

// A multi-line reply: "code-line1", ..., "code line N" (RFC 5321 4.2.1).
void append_multiline(std::string& out, int code, const std::vector<std::string>& lines);

}  // namespace postern::smtp
