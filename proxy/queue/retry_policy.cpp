// Retry backoff; see retry_policy.hpp.
#include "proxy/queue/retry_policy.hpp"

#include <algorithm>

namespace postern::queue {

std::chrono::milliseconds RetryPolicy::delay(unsigned attempts, double unit) const {
    const double lo = static_cast<double>(min.count());
    const double hi = static_cast<double>(std::max(min, max).count());
    double backoff = lo;
    for (unsigned i = 1; i < attempts && backoff < hi; ++i) backoff *= 2;
    backoff = std::min(backoff, hi);
    double jittered = backoff * (0.75 + 0.5 * std::clamp(unit, 0.0, 1.0));
    jittered = std::clamp(jittered, lo, hi);
    return std::chrono::milliseconds(static_cast<int64_t>(jittered));
}

}  // namespace postern::queue
