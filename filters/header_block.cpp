// Header section parsing and edits; see header_block.hpp.
#include "filters/header_block.hpp"

#include <algorithm>

#include "proxy/smtp/ascii.hpp"

namespace postern::filters {
namespace {

using smtp::iequals;

bool is_wsp(char c) {
    return c == ' ' || c == '\t';
}

// The value of a raw field: after the colon, continuation line ends removed, trimmed.
std::string unfold(std::string_view raw) {
    size_t colon = raw.find(':');
    std::string_view value = colon == std::string_view::npos ? "" : raw.substr(colon + 1);
    std::string out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '\r' || c == '\n') continue;
        out += c;
    }
    size_t begin = 0;
    while (begin < out.size() && is_wsp(out[begin])) ++begin;
    size_t end = out.size();
    while (end > begin && is_wsp(out[end - 1])) --end;
    return out.substr(begin, end - begin);
}

}  // namespace

size_t HeaderBlock::header_length(std::string_view message) {
    if (message.substr(0, 2) == "\r\n") return 0;
    size_t blank = message.find("\r\n\r\n");
    return blank == std::string_view::npos ? message.size() : blank + 2;
}

HeaderBlock::HeaderBlock(std::string_view section) {
    size_t pos = 0;
    while (pos < section.size()) {
        size_t end = section.find("\r\n", pos);
        end = end == std::string_view::npos ? section.size() : end + 2;
        // Continuation lines (starting with white space) belong to the field before; a
        // leading one without a field is kept as a field of its own, without a name.
        while (end < section.size() && is_wsp(section[end])) {
            size_t next = section.find("\r\n", end);
            end = next == std::string_view::npos ? section.size() : next + 2;
        }
        std::string_view raw = section.substr(pos, end - pos);
        size_t colon = raw.find(':');
        std::string name;
        if (colon != std::string_view::npos && !is_wsp(raw.front())) {
            name = std::string(raw.substr(0, colon));
            while (!name.empty() && is_wsp(name.back())) name.pop_back();  // obs-optional
        }
        fields_.push_back(Field{std::move(name), std::string(raw)});
        pos = end;
    }
}

std::optional<std::string> HeaderBlock::first(std::string_view name) const {
    for (const Field& f : fields_) {
        if (!f.name.empty() && iequals(f.name, name)) return unfold(f.raw);
    }
    return std::nullopt;
}

std::vector<std::string> HeaderBlock::all(std::string_view name) const {
    std::vector<std::string> out;
    for (const Field& f : fields_) {
        if (!f.name.empty() && iequals(f.name, name)) out.push_back(unfold(f.raw));
    }
    return out;
}

bool HeaderBlock::valid(std::string_view name, std::string_view value, std::string& error) {
    if (name.empty() || name.size() > 76) {
        error = "a header name needs 1 to 76 characters";
        return false;
    }
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u < 33 || u > 126 || c == ':') {
            error = "a header name is printable US-ASCII without ':'";
            return false;
        }
    }
    if (value.size() > 900) {
        error = "a header value is at most 900 octets";
        return false;
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
        error = "a header value cannot hold CR, LF or NUL";
        return false;
    }
    return true;
}

bool HeaderBlock::account(std::string_view name, std::string_view value, std::string& error) {
    const size_t size = name.size() + value.size() + 4;
    if (added_ + size > kMaxAdded) {
        error = "header edits add at most 64 KiB to a message";
        return false;
    }
    added_ += size;
    return true;
}

bool HeaderBlock::add(std::string_view name, std::string_view value, std::string& error) {
    if (!valid(name, value, error) || !account(name, value, error)) return false;
    std::string raw(name);
    raw += ": ";
    raw += value;
    raw += "\r\n";
    fields_.push_back(Field{std::string(name), std::move(raw)});
    changed_ = true;
    return true;
}

bool HeaderBlock::set(std::string_view name, std::string_view value, std::string& error) {
    if (!valid(name, value, error) || !account(name, value, error)) return false;
    auto it = std::find_if(fields_.begin(), fields_.end(), [&](const Field& f) {
        return !f.name.empty() && iequals(f.name, name);
    });
    if (it == fields_.end()) {
        fields_.push_back(
            Field{std::string(name), std::string(name) + ": " + std::string(value) + "\r\n"});
        changed_ = true;
        return true;
    }
    it->raw = std::string(name) + ": " + std::string(value) + "\r\n";
    it->name = std::string(name);
    size_t index = static_cast<size_t>(it - fields_.begin());
    for (size_t i = fields_.size(); i-- > index + 1;) {
        if (!fields_[i].name.empty() && iequals(fields_[i].name, name)) {
            fields_.erase(fields_.begin() + static_cast<std::ptrdiff_t>(i));
        }
    }
    changed_ = true;
    return true;
}

size_t HeaderBlock::remove(std::string_view name) {
    size_t before = fields_.size();
    std::erase_if(fields_,
                  [&](const Field& f) { return !f.name.empty() && iequals(f.name, name); });
    size_t removed = before - fields_.size();
    if (removed) changed_ = true;
    return removed;
}

std::string HeaderBlock::text() const {
    std::string out;
    for (const Field& f : fields_) out += f.raw;
    return out;
}

}  // namespace postern::filters
