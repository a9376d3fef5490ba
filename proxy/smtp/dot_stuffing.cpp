// DATA payload encoding; see dot_stuffing.hpp.
#include "proxy/smtp/dot_stuffing.hpp"

#include <cstdint>

#include "proxy/smtp/octet_scan.hpp"

namespace postern::smtp {

void DotStuffer::append(std::string_view piece, std::string& out) {
    const size_t size = piece.size();
    if (size == 0) return;
    out.reserve(out.size() + size + size / 64 + 5);
    size_t i = 0;
    if (skip_lf_ && piece[0] == '\n') ++i;  // the LF of a CRLF split between pieces
    skip_lf_ = false;
    TextScan scan;  // line lengths and eight-bit octets do not matter here
    while (i < size) {
        if (line_start_ && piece[i] == '.') out += '.';
        // Whole CRLF lines are copied as they are, in one go, until a line that begins with "."
        // (its dot is doubled above), a bare CR or LF (rewritten below) or the end of the piece.
        // A NUL is text here.
        const size_t start = i;
        const size_t stop = skip_plain_text<true>(piece, i, SIZE_MAX, scan);
        if (stop == size) {
            out.append(piece.substr(start));
            line_start_ = false;
            return;
        }
        if (piece[stop] == '\r' && stop + 1 < size && piece[stop + 1] == '\n') {
            out.append(piece.substr(start, stop + 2 - start));  // ends with its CRLF
            i = stop + 2;
        } else {
            // A bare CR or LF becomes CRLF; a CR that ends the piece may have its LF next.
            out.append(piece.substr(start, stop - start));
            out += "\r\n";
            if (piece[stop] == '\r' && stop + 1 == size) skip_lf_ = true;
            i = stop + 1;
        }
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
