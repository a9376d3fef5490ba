// The per-recipient state lines of a spooled message (SPOOL/queue/<id>.state): one line per
// recipient that reached a final state, appended as it happens:
//   "D <index>\n"              delivered
//   "F <index> <reply>\n"      failed, with the reply or reason (newlines replaced)
//   "B <index>\n"              the failure was reported to the sender (or needs no report)
// and lines about the whole message:
//   "A <attempts> <error>\n"   attempts made so far and the last error (after a deferral)
//   "H\n" / "R\n"              held / released by the operator
//   "W\n"                      the delay warning was sent
// The newline ends a record: a line without one (a crash while appending) is not applied.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace postern::queue {

enum class RecipientStatus { kPending, kDelivered, kFailed };

struct RecipientState {
    RecipientStatus status = RecipientStatus::kPending;
    std::string reply;     // the last reply or failure reason
    bool bounced = false;  // failed, and the bounce is stored (or none is wanted)
};

// What the message-level lines say.
struct MessageFlags {
    unsigned attempts = 0;
    std::string last_error;
    bool held = false;
    bool delay_warned = false;
};

// The line for a final state (delivered or failed) of recipient `index`.
std::string format_state_line(size_t index, const RecipientState& state);
// The line saying that the failure of recipient `index` has been reported.
std::string format_bounced_line(size_t index);

std::string format_attempts_line(unsigned attempts, const std::string& last_error);

// Applies every complete, well-formed line of `text` to `recipients` (indexes out of range and
// malformed lines are skipped; a later line for the same recipient wins).
void apply_state_lines(std::string_view text, std::vector<RecipientState>& recipients,
                       MessageFlags* flags = nullptr);

}  // namespace postern::queue
