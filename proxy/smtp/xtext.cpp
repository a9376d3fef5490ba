// xtext validation and decoding; see xtext.hpp.
#include "proxy/smtp/xtext.hpp"

namespace postern::smtp {
namespace {

int hex_value(char c) {
    // RFC 3461 requires upper-case hex digits in xtext.
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::optional<std::string> xtext_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '+') {
            if (i + 2 >= text.size()) return std::nullopt;
            int hi = hex_value(text[i + 1]);
            int lo = hex_value(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else if (c >= 33 && c <= 126 && c != '=') {
            out += static_cast<char>(c);
        } else {
            return std::nullopt;
        }
    }
    return out;
}

bool is_valid_xtext(std::string_view text) {
    return xtext_decode(text).has_value();
}

}  // namespace postern::smtp
