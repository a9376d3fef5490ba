// From: addresses; see header_from.hpp.
#include "proxy/smtp/header_from.hpp"

namespace postern::smtp {

namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// The field body without comments, line folding undone.
std::string uncomment(std::string_view body) {
    std::string out;
    int depth = 0;
    bool quoted = false;
    for (size_t i = 0; i < body.size(); ++i) {
        char c = body[i];
        if (c == '\r' || c == '\n') continue;  // unfolding
        if (c == '\\' && i + 1 < body.size()) {
            if (depth == 0) {
                out += c;
                out += body[i + 1];
            }
            ++i;
            continue;
        }
        if (depth == 0 && c == '"') quoted = !quoted;
        if (!quoted && c == '(') {
            ++depth;
            continue;
        }
        if (!quoted && c == ')' && depth > 0) {
            --depth;
            continue;
        }
        if (depth == 0) out += c;
    }
    return out;
}

}  // namespace

std::optional<std::vector<std::string>> header_from_addresses(std::string_view message) {
    size_t end = message.find("\r\n\r\n");
    std::string_view headers = message.substr(0, end == std::string_view::npos ? end : end + 2);
    std::optional<std::string_view> field;
    size_t pos = 0;
    while (pos < headers.size()) {
        size_t line_end = headers.find("\r\n", pos);
        if (line_end == std::string_view::npos) line_end = headers.size();
        // The field goes on over continuation lines (starting with a blank).
        size_t next = line_end;
        while (next + 2 < headers.size() &&
               (headers[next + 2] == ' ' || headers[next + 2] == '\t')) {
            next = headers.find("\r\n", next + 2);
            if (next == std::string_view::npos) next = headers.size();
        }
        std::string_view line = headers.substr(pos, next - pos);
        if (starts_with_nocase(line, "from:")) {
            if (field) return std::nullopt;  // two From: fields
            field = line.substr(5);
        }
        pos = next + 2;
    }
    if (!field) return std::nullopt;
    const std::string body = uncomment(*field);
    std::vector<std::string> out;
    std::string item;
    bool quoted = false;
    int angle = 0;
    auto finish = [&] {
        std::string_view s = trim(item);
        // The angle-addr, if any: its "<" is the first one outside a quoted display name.
        bool in_quotes = false;
        for (size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\\') {
                ++i;
            } else if (s[i] == '"') {
                in_quotes = !in_quotes;
            } else if (s[i] == '<' && !in_quotes) {
                size_t gt = s.find('>', i);
                if (gt != std::string_view::npos) s = s.substr(i + 1, gt - i - 1);
                break;
            }
        }
        s = trim(s);
        if (!s.empty()) out.emplace_back(s);
        item.clear();
    };
    for (size_t i = 0; i < body.size(); ++i) {
        char c = body[i];
        if (c == '\\' && i + 1 < body.size()) {
            item += c;
            item += body[++i];
            continue;
        }
        if (c == '"') quoted = !quoted;
        if (!quoted && c == '<') ++angle;
        if (!quoted && c == '>' && angle > 0) --angle;
        if (!quoted && angle == 0 && c == ':') {  // "group name:" starts a group
            item.clear();
            continue;
        }
        if (!quoted && angle == 0 && (c == ',' || c == ';')) {
            finish();
            continue;
        }
        item += c;
    }
    finish();
    if (out.empty()) return std::nullopt;
    return out;
}

}  // namespace postern::smtp
