// Replies as the SMTP client reads them from a server (RFC 5321 4.2): one or more lines with
// the same three-digit code, "-" after the code on every line but the last, each ending with
// CRLF, with the RFC 3463 enhanced code taken from the text when present. Bounded: a line over
// 512 octets or a reply of more than 100 lines is a protocol error (a server could otherwise
// make the client buffer without end).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace postern::smtp {

inline constexpr size_t kMaxReplyLine = 512;  // RFC 5321 4.5.3.1.5, including CRLF
inline constexpr size_t kMaxReplyLines = 100;

struct ServerReply {
    int code = 0;
    std::string enhanced;            // "5.7.1" when every line's text starts with one, else ""
    std::vector<std::string> lines;  // the text of each line, code, separator and enhanced
                                     // code removed
};

class ReplyParser {
  public:
    enum class Status {
        kNeedMore,  // no complete reply yet
        kReply,     // `reply` is complete; drop `consumed` octets
        kError,     // not a valid reply; `error` says why: end the session
    };
    struct Result {
        Status status = Status::kNeedMore;
        ServerReply reply;
        size_t consumed = 0;
        std::string error;
    };

    // Looks for one complete reply at the start of buffer.
    static Result next(std::string_view buffer);
};

}  // namespace postern::smtp
