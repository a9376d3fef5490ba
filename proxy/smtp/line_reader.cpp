// Command-line framing; see line_reader.hpp.
#include "proxy/smtp/line_reader.hpp"

#include "proxy/smtp/command.hpp"

namespace postern::smtp {

CommandReader::Result CommandReader::next(std::string_view buffer) {
    Result result;
    // A line ends at the first LF. Whether it was preceded by CR decides if it is well formed;
    // everything up to that LF belongs to this line in both cases.
    size_t lf = buffer.find('\n');
    if (lf == std::string_view::npos) {
        if (discarding_ || buffer.size() > max_line_) {
            discarding_ = true;
            result.consumed = buffer.size();
        }
        return result;
    }
    result.consumed = lf + 1;
    if (discarding_ || lf + 1 > max_line_) {
        discarding_ = false;
        result.status = Status::kTooLong;
        return result;
    }
    if (lf == 0 || buffer[lf - 1] != '\r') {
        result.status = Status::kBadLineEnd;
        return result;
    }
    std::string_view line = buffer.substr(0, lf - 1);
    for (unsigned char c : line) {
        if (!is_command_octet(c)) {
            result.status = Status::kBadLineEnd;
            return result;
        }
    }
    result.status = Status::kLine;
    result.line = line;
    return result;
}

}  // namespace postern::smtp
