// AUTH failure counting; see auth_limiter.hpp.
#include "proxy/server/auth_limiter.hpp"

namespace postern::server {

AuthLimiter::AuthLimiter(unsigned max_failures, std::chrono::milliseconds window,
                         std::chrono::milliseconds lockout)
    : max_failures_(max_failures), window_(window), lockout_(lockout) {}

bool AuthLimiter::locked(const config::IpAddress& client, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = records_.find(client.bytes);
    return it != records_.end() && now < it->second.locked_until;
}

bool AuthLimiter::failure(const config::IpAddress& client, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    forget_old(now);
    Record& r = records_[client.bytes];
    while (!r.failures.empty() && r.failures.front() + window_ <= now) r.failures.pop_front();
    r.failures.push_back(now);
    if (r.failures.size() < max_failures_) return false;
    r.failures.clear();
    r.locked_until = now + lockout_;
    return true;
}

void AuthLimiter::forget_old(Clock::time_point now) {
    // At most once a minute: records with nothing left to remember go.
    if (now - last_sweep_ < std::chrono::minutes(1)) return;
    last_sweep_ = now;
    for (auto it = records_.begin(); it != records_.end();) {
        const Record& r = it->second;
        const bool failures_old = r.failures.empty() || r.failures.back() + window_ <= now;
        if (failures_old && r.locked_until <= now) {
            it = records_.erase(it);
        } else {
            ++it;
        }
    }
}

}  // namespace postern::server
