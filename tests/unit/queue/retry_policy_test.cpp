// The queue's backoff: doubling from retry_min, capped at retry_max, jittered 0.75-1.25x but
// never outside [retry_min, retry_max].
#include "proxy/queue/retry_policy.hpp"

#include <gtest/gtest.h>

namespace postern::queue {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;

TEST(RetryPolicy, DoublesFromMinWithoutJitter) {
    RetryPolicy p{minutes(1), minutes(60)};
    // unit 0.5 is the middle of the jitter range: exactly the backoff.
    EXPECT_EQ(p.delay(1, 0.5), minutes(1));
    EXPECT_EQ(p.delay(2, 0.5), minutes(2));
    EXPECT_EQ(p.delay(3, 0.5), minutes(4));
    EXPECT_EQ(p.delay(6, 0.5), minutes(32));
    EXPECT_EQ(p.delay(7, 0.5), minutes(60));  // 64 capped
    EXPECT_EQ(p.delay(1000, 0.5), minutes(60));
}

TEST(RetryPolicy, JitterStaysWithinBounds) {
    RetryPolicy p{minutes(1), minutes(60)};
    EXPECT_EQ(p.delay(3, 0.0), milliseconds(180000));  // 4 min x 0.75
    EXPECT_EQ(p.delay(3, 0.999999), milliseconds(299999));
    // Never below retry_min (1 min x 0.75 would be) nor above retry_max (60 x 1.25 would be).
    EXPECT_EQ(p.delay(1, 0.0), minutes(1));
    EXPECT_EQ(p.delay(20, 0.999), minutes(60));
    for (unsigned attempt = 1; attempt < 40; ++attempt) {
        for (double u : {0.0, 0.1, 0.5, 0.9, 0.99}) {
            auto d = p.delay(attempt, u);
            EXPECT_GE(d, minutes(1));
            EXPECT_LE(d, minutes(60));
        }
    }
}

TEST(RetryPolicy, JitterSpreadsMessagesDeferredTogether) {
    RetryPolicy p{minutes(1), minutes(60)};
    EXPECT_LT(p.delay(4, 0.1), p.delay(4, 0.9));
}

TEST(RetryPolicy, MaxBelowMinMeansMin) {
    RetryPolicy p{minutes(5), minutes(1)};
    EXPECT_EQ(p.delay(1, 0.5), minutes(5));
    EXPECT_EQ(p.delay(9, 0.9), minutes(5));
}

}  // namespace
}  // namespace postern::queue
