// DATA payload encoding; see dot_stuffing.hpp.
#include "proxy/smtp/dot_stuffing.hpp"

#include <cstring>

namespace postern::smtp {

void append_dot_stuffed(std::string_view message, std::string& out) {
    out.reserve(out.size() + message.size() + message.size() / 64 + 5);
    const char* p = message.data();
    const char* end = p + message.size();
    bool line_start = true;
    const char* next_lf = nullptr;  // the next LF at or after p, or end: each octet scanned once
    while (p < end) {
        if (line_start && *p == '.') out += '.';
        if (!next_lf || next_lf < p) {
            next_lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
            if (!next_lf) next_lf = end;
        }
        // Copy up to the next line end in one go.
        const char* cr = static_cast<const char*>(std::memchr(p, '\r', next_lf - p));
        const char* stop = cr ? cr : next_lf;
        out.append(p, stop);
        p = stop;
        if (p == end) {
            line_start = false;
            break;
        }
        // CRLF, bare CR and bare LF all become one CRLF.
        if (*p == '\r' && p + 1 < end && p[1] == '\n') ++p;
        ++p;
        out += "\r\n";
        line_start = true;
    }
    if (!line_start) out += "\r\n";
    out += ".\r\n";
}

}  // namespace postern::smtp
