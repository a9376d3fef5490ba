// Strict command-line framing (RFC 5321 2.3.8, 4.1.1): a command is a line that ends with CRLF.
// Octets up to a bare LF, or a line holding a bare CR or NUL, are refused as a whole (500) and
// never run as a command; whatever follows the LF is judged as the next line.
#pragma once

#include <cstddef>
#include <string_view>

namespace postern::smtp {

// RFC 5321 4.5.3.1.4: 512 octets including CRLF. MAIL and RCPT may grow by the lengths that
// RFC 3461 (DSN) and RFC 4954 (AUTH=) add; the session checks per verb.
inline constexpr size_t kMaxCommandLine = 512;
inline constexpr size_t kMaxExtendedCommandLine = 512 + 500;

class CommandReader {
  public:
    enum class Status {
        kNeedMore,    // no complete line yet; `consumed` octets may be dropped (an over-long line)
        kLine,        // `line` is a command without its CRLF
        kTooLong,     // a line longer than the limit ended; reply 500 5.5.6
        kBadLineEnd,  // the line held a bare CR, bare LF or another control octet; reply 500
    };
    struct Result {
        Status status = Status::kNeedMore;
        std::string_view line;
        size_t consumed = 0;
    };

    explicit CommandReader(size_t max_line = kMaxExtendedCommandLine) : max_line_(max_line) {}

    // Looks for the next line in buffer. The caller drops `consumed` octets from its buffer.
    Result next(std::string_view buffer);

  private:
    size_t max_line_;
    bool discarding_ = false;  // inside an over-long line, skipping to its LF
};

}  // namespace postern::smtp
