// Queue id generation; see queue_id.hpp.
#include "proxy/queue/queue_id.hpp"

#include <chrono>

namespace postern::queue {
namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";  // ascending in ASCII
constexpr uint32_t kCounterLimit = 1u << 20;                      // 4 base32 digits

uint64_t now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(
        duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

}  // namespace

QueueIdGenerator::QueueIdGenerator() : random_(std::random_device{}()) {}

std::string QueueIdGenerator::format(uint64_t milliseconds, uint32_t counter) {
    std::string id(kQueueIdLength, '0');
    for (int i = 9; i >= 0; --i) {
        id[static_cast<size_t>(i)] = kAlphabet[milliseconds & 31];
        milliseconds >>= 5;
    }
    for (int i = 13; i >= 10; --i) {
        id[static_cast<size_t>(i)] = kAlphabet[counter & 31];
        counter >>= 5;
    }
    return id;
}

std::string QueueIdGenerator::next() {
    std::lock_guard lock(mutex_);
    uint64_t ms = now_ms();
    if (ms > last_ms_) {
        last_ms_ = ms;
        // The lower half leaves room for at least 2^19 ids in this millisecond.
        counter_ = random_() % (kCounterLimit / 2);
    } else if (++counter_ >= kCounterLimit) {
        // A million ids in one millisecond, or the clock went back: borrow the next millisecond.
        ++last_ms_;
        counter_ = 0;
    }
    return format(last_ms_, counter_);
}

bool is_queue_id(std::string_view text) {
    if (text.size() != kQueueIdLength) return false;
    for (char c : text) {
        bool found = false;
        for (const char* a = kAlphabet; *a; ++a) found |= (*a == c);
        if (!found) return false;
    }
    return true;
}

}  // namespace postern::queue
