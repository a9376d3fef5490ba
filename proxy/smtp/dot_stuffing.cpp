// DATA payload encoding; see dot_stuffing.hpp.
#include "proxy/smtp/dot_stuffing.hpp"

#include <cstring>

namespace postern::smtp {

void DotStuffer::append(std::string_view piece, std::string& out) {
    out.reserve(out.size() + piece.size() + piece.size() / 64 + 5);
    const char* p = piece.data();
    const char* end = p + piece.size();
    if (p == end) return;
    if (skip_lf_ && *p == '\n') ++p;  // the LF of a CRLF split between pieces
    skip_lf_ = false;
    const char* next_lf = nullptr;  // the next LF at or after p, or end: each octet scanned once
    while (p < end) {
        if (line_start_ && *p == '.') out += '.';
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
            line_start_ = false;
            break;
        }
        // CRLF, bare CR and bare LF all become one CRLF.
        if (*p == '\r') {
            if (p + 1 == end) skip_lf_ = true;
            if (p + 1 < end && p[1] == '\n') ++p;
        }
        ++p;
        out += "\r\n";
        line_start_ = true;
    }
}

void DotStuffer::finish(std::string& out) {
    if (!line_start_) out += "\r\n";
    out += ".\r\n";
    line_start_ = true;
    skip_lf_ = false;
}

void append_dot_stuffed(std::string_view message, std::string& out) {
    DotStuffer stuffer;
    stuffer.append(message, out);
    stuffer.finish(out);
}

}  // namespace postern::smtp
