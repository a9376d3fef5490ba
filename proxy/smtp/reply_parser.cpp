// Server reply parsing; see reply_parser.hpp.
#include "proxy/smtp/reply_parser.hpp"

namespace postern::smtp {
namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// "x.y.z" at the start of text, class x as the code's first digit (RFC 3463 2); its length
// including the following space, or 0.
size_t enhanced_prefix(std::string_view text, char code_class) {
    if (text.size() < 5 || text[0] != code_class || text[1] != '.') return 0;
    size_t i = 2;
    auto digits = [&](size_t max) {
        size_t start = i;
        while (i < text.size() && is_digit(text[i]) && i - start < max) ++i;
        return i > start;
    };
    if (!digits(3) || i >= text.size() || text[i] != '.') return 0;
    ++i;
    if (!digits(3)) return 0;
    if (i < text.size() && text[i] != ' ') return 0;
    return i < text.size() ? i + 1 : i;
}

}  // namespace

ReplyParser::Result ReplyParser::next(std::string_view buffer) {
    Result result;
    auto fail = [&](std::string why) {
        result.status = Status::kError;
        result.error = std::move(why);
        return result;
    };
    size_t pos = 0;
    bool enhanced_everywhere = true;
    std::string enhanced;
    while (true) {
        size_t lf = buffer.find('\n', pos);
        size_t available = (lf == std::string_view::npos ? buffer.size() : lf + 1) - pos;
        if (available > kMaxReplyLine) return fail("reply line longer than 512 octets");
        if (lf == std::string_view::npos) return result;  // kNeedMore
        if (lf == pos || buffer[lf - 1] != '\r') return fail("reply line not ended by CRLF");
        std::string_view line = buffer.substr(pos, lf - 1 - pos);
        pos = lf + 1;
        for (char c : line) {
            if (c == '\r' || c == '\0') return fail("control octet in a reply line");
        }
        // Reply-code = %x32-35 %x30-35 %x30-39
        if (line.size() < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
            !is_digit(line[2])) {
            return fail("reply line without a valid code");
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (result.reply.lines.empty()) {
            result.reply.code = code;
        } else if (code != result.reply.code) {
            return fail("reply lines with different codes");
        }
        bool last;
        std::string_view text;
        if (line.size() == 3) {
            last = true;
        } else if (line[3] == ' ' || line[3] == '-') {
            last = line[3] == ' ';
            text = line.substr(4);
        } else {
            return fail("reply code not followed by a space or a hyphen");
        }
        size_t prefix = enhanced_prefix(text, line[0]);
        if (prefix == 0) {
            enhanced_everywhere = false;
        } else {
            std::string this_code(text.substr(0, text[prefix - 1] == ' ' ? prefix - 1 : prefix));
            if (enhanced.empty()) enhanced = this_code;
            if (this_code != enhanced) enhanced_everywhere = false;
            text.remove_prefix(prefix);
        }
        result.reply.lines.emplace_back(text);
        if (last) break;
        if (result.reply.lines.size() >= kMaxReplyLines) {
            return fail("reply of more than 100 lines");
        }
    }
    if (enhanced_everywhere) result.reply.enhanced = enhanced;
    result.status = Status::kReply;
    result.consumed = pos;
    return result;
}

}  // namespace postern::smtp
