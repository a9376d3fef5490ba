// When a deferred message is tried again: exponential backoff from retry_min, doubling per
// attempt, capped at retry_max, with jitter so that messages deferred together do not all
// come back at the same moment (the usual thundering herd after an outage).
#pragma once

#include <chrono>

namespace postern::queue {

struct RetryPolicy {
    std::chrono::milliseconds min{std::chrono::minutes(1)};
    std::chrono::milliseconds max{std::chrono::hours(1)};

    // The delay after the `attempts`-th failed attempt (1 for the first). `unit` is a uniform
    // random number in [0, 1): the delay is 0.75-1.25 x the backoff, kept within [min, max].
    std::chrono::milliseconds delay(unsigned attempts, double unit) const;
};

}  // namespace postern::queue
