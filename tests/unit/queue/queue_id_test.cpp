// Unit tests for queue ids (proxy/queue/queue_id.hpp): shape, ordering by time, uniqueness.
#include "proxy/queue/queue_id.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace postern::queue {
namespace {

constexpr std::string_view kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

uint64_t decode(std::string_view digits) {
    uint64_t v = 0;
    for (char c : digits) {
        size_t d = kAlphabet.find(c);
        EXPECT_NE(d, std::string_view::npos) << c;
        v = v * 32 + d;
    }
    return v;
}

uint64_t now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(
        duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

TEST(QueueIdFormat, KnownValues) {
    EXPECT_EQ(QueueIdGenerator::format(0, 0), "00000000000000");
    EXPECT_EQ(QueueIdGenerator::format(1, 0), "00000000010000");
    EXPECT_EQ(QueueIdGenerator::format(0, 1), "00000000000001");
    EXPECT_EQ(QueueIdGenerator::format(31, 31), "000000000Z000Z");
    EXPECT_EQ(QueueIdGenerator::format(32, 32), "00000000100010");
    EXPECT_EQ(QueueIdGenerator::format(0, (1u << 20) - 1), "0000000000ZZZZ");
    EXPECT_EQ(QueueIdGenerator::format((1ull << 50) - 1, 0), "ZZZZZZZZZZ0000");
}

TEST(QueueIdFormat, LengthAndShape) {
    for (uint64_t ms : {0ull, 1ull, 1700000000000ull, 4102444800000ull, (1ull << 50) - 1}) {
        std::string id = QueueIdGenerator::format(ms, 12345);
        EXPECT_EQ(id.size(), kQueueIdLength);
        EXPECT_EQ(id.size(), 14u);
        EXPECT_TRUE(is_queue_id(id)) << id;
        EXPECT_EQ(decode(id.substr(0, 10)), ms);
        EXPECT_EQ(decode(id.substr(10)), 12345u);
    }
}

TEST(QueueIdFormat, CounterUsesLowTwentyBits) {
    EXPECT_EQ(QueueIdGenerator::format(5, 1u << 20), QueueIdGenerator::format(5, 0));
}

TEST(QueueIdFormat, OrderingByTimeThenCounter) {
    // A later millisecond sorts after any counter of an earlier one.
    EXPECT_LT(QueueIdGenerator::format(1000, (1u << 20) - 1), QueueIdGenerator::format(1001, 0));
    EXPECT_LT(QueueIdGenerator::format(1000, 7), QueueIdGenerator::format(1000, 8));
    // Across digit boundaries the string order follows the numeric order.
    std::vector<uint64_t> times = {
        0, 1, 31, 32, 33, 1023, 1024, 32767, 32768, 1699999999999ull, 1700000000000ull};
    for (size_t i = 1; i < times.size(); ++i) {
        EXPECT_LT(QueueIdGenerator::format(times[i - 1], 0), QueueIdGenerator::format(times[i], 0))
            << times[i - 1] << " vs " << times[i];
    }
    // Every value of the alphabet sorts in ASCII order.
    for (uint64_t d = 1; d < 32; ++d) {
        EXPECT_LT(QueueIdGenerator::format(d - 1, 0), QueueIdGenerator::format(d, 0)) << d;
    }
}

TEST(IsQueueId, Rejects) {
    EXPECT_FALSE(is_queue_id(""));
    EXPECT_FALSE(is_queue_id("0000000000000"));    // 13
    EXPECT_FALSE(is_queue_id("000000000000000"));  // 15
    EXPECT_FALSE(is_queue_id("0000000000000a"));   // lower case
    EXPECT_FALSE(is_queue_id("0000000000000I"));   // not in Crockford base32
    EXPECT_FALSE(is_queue_id("0000000000000L"));
    EXPECT_FALSE(is_queue_id("0000000000000O"));
    EXPECT_FALSE(is_queue_id("0000000000000U"));
    EXPECT_FALSE(is_queue_id("000000000000-0"));
    EXPECT_FALSE(is_queue_id("../../etc/pass"));
    EXPECT_FALSE(is_queue_id(std::string_view("0000000000000\0", 14)));
    EXPECT_TRUE(is_queue_id("0123456789ABCD"));
    EXPECT_TRUE(is_queue_id("EFGHJKMNPQRSTV"));
    EXPECT_TRUE(is_queue_id("WXYZ0000000000"));
}

TEST(QueueIdGenerator, StrictlyIncreasing) {
    QueueIdGenerator gen;
    std::string previous = gen.next();
    ASSERT_TRUE(is_queue_id(previous)) << previous;
    for (int i = 0; i < 100000; ++i) {
        std::string id = gen.next();
        ASSERT_EQ(id.size(), kQueueIdLength);
        ASSERT_LT(previous, id) << "call " << i;
        previous = std::move(id);
    }
    EXPECT_TRUE(is_queue_id(previous)) << previous;
}

TEST(QueueIdGenerator, TimePartIsTheClock) {
    QueueIdGenerator gen;
    uint64_t before = now_ms();
    std::string id = gen.next();
    uint64_t after = now_ms();
    uint64_t ms = decode(std::string_view(id).substr(0, 10));
    EXPECT_GE(ms, before);
    EXPECT_LE(ms, after + 1);  // +1: a counter overflow may borrow the next millisecond
}

TEST(QueueIdGenerator, TwoGeneratorsDiffer) {
    // Each millisecond's counter starts at a random point, so two generators (or a restart)
    // rarely collide; 20 tries make a false failure practically impossible.
    int different = 0;
    for (int i = 0; i < 20; ++i) {
        QueueIdGenerator a;
        QueueIdGenerator b;
        if (a.next().substr(10) != b.next().substr(10)) ++different;
    }
    EXPECT_GT(different, 0);
}

TEST(QueueIdGenerator, UniqueAcrossThreads) {
    QueueIdGenerator gen;
    constexpr int kThreads = 4;
    constexpr int kPerThread = 25000;
    std::vector<std::vector<std::string>> ids(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&gen, &ids, t] {
            ids[t].reserve(kPerThread);
            for (int i = 0; i < kPerThread; ++i) ids[t].push_back(gen.next());
        });
    }
    for (std::thread& t : threads) t.join();

    std::set<std::string> all;
    for (const auto& list : ids) {
        ASSERT_EQ(list.size(), static_cast<size_t>(kPerThread));
        for (size_t i = 0; i < list.size(); ++i) {
            EXPECT_TRUE(is_queue_id(list[i]));
            // Each thread sees its own ids increasing as well.
            if (i > 0) {
                ASSERT_LT(list[i - 1], list[i]);
            }
            all.insert(list[i]);
        }
    }
    EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
}

}  // namespace
}  // namespace postern::queue
