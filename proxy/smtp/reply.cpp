// Reply formatting; see reply.hpp.
#include "proxy/smtp/reply.hpp"

namespace postern::smtp {

void Reply::append_to(std::string& out, bool with_enhanced) const {
    out += std::to_string(code);
    out += ' ';
    if (with_enhanced && !enhanced.empty()) {
        out += enhanced;
        out += ' ';
    }
    out += text;
    out += "\r\n";
}

std::string Reply::to_string(bool with_enhanced) const {
    std::string out;
    append_to(out, with_enhanced);
    return out;
}

void append_multiline(std::string& out, int code, const std::vector<std::string>& lines) {
    for (size_t i = 0; i < lines.size(); ++i) {
        out += std::to_string(code);
        out += (i + 1 < lines.size()) ? '-' : ' ';
        out += lines[i];
        out += "\r\n";
    }
}

}  // namespace postern::smtp
