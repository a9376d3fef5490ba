// DATA payload encoding; see dot_stuffing.hpp.
#include "proxy/smtp/dot_stuffing.hpp"

namespace postern::smtp {

void append_dot_stuffed(std::string_view message, std::string& out) {
    out.reserve(out.size() + message.size() + message.size() / 64 + 5);
    bool line_start = true;
    for (size_t i = 0; i < message.size(); ++i) {
        char c = message[i];
        if (c == '\r' || c == '\n') {
            // CRLF, bare CR and bare LF all become one CRLF.
            if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
            out += "\r\n";
            line_start = true;
            continue;
        }
        if (line_start && c == '.') out += '.';
        out += c;
        line_start = false;
    }
    if (!line_start) out += "\r\n";
    out += ".\r\n";
}

}  // namespace postern::smtp
