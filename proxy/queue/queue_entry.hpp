// One spooled message as the queue management API shows it: a copy of the scheduler's state,
// taken on its thread, that the admin listener turns into JSON.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/queue/spool_record.hpp"

namespace postern::queue {

struct QueueEntry {
    Envelope envelope;
    uint64_t size = 0;
    std::vector<RecipientState> recipients;  // parallel to envelope.recipients
    unsigned attempts = 0;
    std::string last_error;
    // "queued" (no attempt yet), "running", "deferred", "held" or "bouncing" (a notice to the
    // sender is being stored).
    std::string state;
    std::optional<std::chrono::milliseconds> next_attempt_in;  // none when not scheduled
};

}  // namespace postern::queue
