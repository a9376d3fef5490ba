// Brute-force protection for AUTH: failures are counted per client address; after max_failures
// within failure_window the address is locked out for `lockout` (every AUTH from it gets 421,
// even with the right password). Shared by the sessions of every thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>

#include "proxy/config/cidr.hpp"

namespace postern::server {

class AuthLimiter {
  public:
    using Clock = std::chrono::steady_clock;
    AuthLimiter(unsigned max_failures, std::chrono::milliseconds window,
                std::chrono::milliseconds lockout);

    bool locked(const config::IpAddress& client, Clock::time_point now);
    // Counts a failure; true when it starts a lockout. A success forgets nothing: with one
    // account of its own, a client could otherwise guess at others' without end.
    bool failure(const config::IpAddress& client, Clock::time_point now);

  private:
    struct Record {
        std::deque<Clock::time_point> failures;  // within the window
        Clock::time_point locked_until{};
    };
    void forget_old(Clock::time_point now);  // mutex held

    const unsigned max_failures_;
    const std::chrono::milliseconds window_;
    const std::chrono::milliseconds lockout_;
    std::mutex mutex_;
    std::map<std::array<uint8_t, 16>, Record> records_;
    Clock::time_point last_sweep_{};
};

}  // namespace postern::server
