// The free-space floor ([server] min_free_space): the directories postern stores mail in (the
// spool, every outbox) are checked every second; while any has less free space than the
// floor, new MAIL commands get 452 4.3.1 instead of accepting mail that could not be stored.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace postern::server {

class StorageGuard {
  public:
    explicit StorageGuard(uint64_t floor) : floor_(floor) {}

    void watch(std::string dir) { dirs_.push_back(std::move(dir)); }
    // Looks at every directory now (statvfs); logs when the state changes. One thread.
    void check();
    // Any thread: some directory is below the floor.
    bool low() const { return low_.load(std::memory_order_relaxed); }
    uint64_t floor() const { return floor_; }

  private:
    const uint64_t floor_;  // 0: no floor
    std::vector<std::string> dirs_;
    std::atomic<bool> low_{false};
};

}  // namespace postern::server
