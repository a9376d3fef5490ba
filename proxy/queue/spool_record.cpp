// Spool state lines; see spool_record.hpp.
#include "proxy/queue/spool_record.hpp"

#include <algorithm>
#include <charconv>

namespace postern::queue {

std::string format_state_line(size_t index, const RecipientState& state) {
    std::string line =
        (state.status == RecipientStatus::kDelivered ? "D " : "F ") + std::to_string(index);
    if (state.status == RecipientStatus::kFailed) {
        std::string reply = state.reply;
        std::replace(reply.begin(), reply.end(), '\n', ' ');
        std::replace(reply.begin(), reply.end(), '\r', ' ');
        line += " " + reply;
    }
    return line + "\n";
}

std::string format_bounced_line(size_t index) {
    return "B " + std::to_string(index) + "\n";
}

void apply_state_lines(std::string_view text, std::vector<RecipientState>& recipients) {
    size_t pos = 0;
    while (true) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) break;  // a torn last line: ignored
        std::string_view line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.size() < 3 || (line[0] != 'D' && line[0] != 'F' && line[0] != 'B') ||
            line[1] != ' ') {
            continue;
        }
        size_t space = line.find(' ', 2);
        std::string_view number = line.substr(2, space == line.npos ? line.npos : space - 2);
        size_t index = 0;
        auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), index);
        if (number.empty() || ec != std::errc() || end != number.data() + number.size() ||
            index >= recipients.size()) {
            continue;
        }
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
