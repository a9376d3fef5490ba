// Queue ids: 14 characters of Crockford base32, the first 10 the time in milliseconds and the
// last 4 a counter that starts at a random point each millisecond. Ids sort by time as strings,
// stay unique across restarts (the clock moves on; a restart inside one millisecond still gets a
// fresh random counter) and are safe in file names and logs.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>

namespace postern::queue {

inline constexpr size_t kQueueIdLength = 14;

class QueueIdGenerator {
  public:
    QueueIdGenerator();

    // Thread-safe. Never returns the same id twice in one process, even if the clock steps back.
    std::string next();

    // The id for a given time and counter, for tests.
    static std::string format(uint64_t milliseconds, uint32_t counter);

  private:
    std::mutex mutex_;
    std::mt19937 random_;
    uint64_t last_ms_ = 0;
    uint32_t counter_ = 0;
};

// True when text has the shape of a queue id.
bool is_queue_id(std::string_view text);

}  // namespace postern::queue
