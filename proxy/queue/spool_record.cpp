// Spool state lines; see spool_record.hpp.
#include "proxy/queue/spool_record.hpp"

#include <algorithm>
#include <charconv>

namespace postern::queue {

namespace {

std::string one_line(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    std::replace(text.begin(), text.end(), '\r', ' ');
    return text;
}

// A decimal number and nothing else (no sign).
bool parse_number(std::string_view number, size_t& out) {
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), out);
    return !number.empty() && ec == std::errc() && end == number.data() + number.size();
}

}  // namespace

std::string format_state_line(size_t index, const RecipientState& state) {
    std::string line =
        (state.status == RecipientStatus::kDelivered ? "D " : "F ") + std::to_string(index);
    if (state.status == RecipientStatus::kFailed) line += " " + one_line(state.reply);
    return line + "\n";
}

std::string format_attempts_line(unsigned attempts, const std::string& last_error) {
    return "A " + std::to_string(attempts) + " " + one_line(last_error) + "\n";
}

std::string format_bounced_line(size_t index) {
    return "B " + std::to_string(index) + "\n";
}

void apply_state_lines(std::string_view text, std::vector<RecipientState>& recipients,
                       MessageFlags* flags) {
    size_t pos = 0;
    while (true) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) break;  // a torn last line: ignored
        std::string_view line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (flags && line.size() == 1) {
            if (line[0] == 'H') flags->held = true;
            if (line[0] == 'R') flags->held = false;
            if (line[0] == 'W') flags->delay_warned = true;
            continue;
        }
        if (flags && line.size() >= 3 && line[0] == 'A' && line[1] == ' ') {
            size_t space = line.find(' ', 2);
            size_t attempts = 0;
            if (parse_number(line.substr(2, space == line.npos ? line.npos : space - 2),
                             attempts)) {
                flags->attempts = static_cast<unsigned>(attempts);
                flags->last_error =
                    space == line.npos ? std::string() : std::string(line.substr(space + 1));
            }
            continue;
        }
        if (line.size() < 3 || (line[0] != 'D' && line[0] != 'F' && line[0] != 'B') ||
            line[1] != ' ') {
            continue;
        }
        size_t space = line.find(' ', 2);
        std::string_view number = line.substr(2, space == line.npos ? line.npos : space - 2);
        size_t index = 0;
        if (!parse_number(number, index) || index >= recipients.size()) continue;
        RecipientState& r = recipients[index];
        if (line[0] == 'B') {
            if (r.status == RecipientStatus::kFailed) r.bounced = true;
            continue;
        }
        r.status = line[0] == 'D' ? RecipientStatus::kDelivered : RecipientStatus::kFailed;
        r.reply = space == line.npos ? std::string() : std::string(line.substr(space + 1));
    }
}

}  // namespace postern::queue
