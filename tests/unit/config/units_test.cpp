// Unit tests for size and duration values of the configuration (proxy/config/units.hpp).
#include "proxy/config/units.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>

namespace postern::config {
namespace {

using std::chrono::milliseconds;

TEST(ParseSize, PlainBytes) {
    EXPECT_EQ(parse_size("0"), 0u);
    EXPECT_EQ(parse_size("1"), 1u);
    EXPECT_EQ(parse_size("65536"), 65536u);
    EXPECT_EQ(parse_size("100B"), 100u);
}

TEST(ParseSize, DecimalUnits) {
    EXPECT_EQ(parse_size("1KB"), 1000u);
    EXPECT_EQ(parse_size("512KB"), 512000u);
    EXPECT_EQ(parse_size("1MB"), 1000000u);
    EXPECT_EQ(parse_size("25MB"), 25000000u);
    EXPECT_EQ(parse_size("1GB"), 1000000000u);
    EXPECT_EQ(parse_size("3GB"), 3000000000u);
}

TEST(ParseSize, BinaryUnits) {
    EXPECT_EQ(parse_size("1KiB"), 1024u);
    EXPECT_EQ(parse_size("64KiB"), 65536u);
    EXPECT_EQ(parse_size("1MiB"), 1048576u);
    EXPECT_EQ(parse_size("25MiB"), 25u * 1024 * 1024);
    EXPECT_EQ(parse_size("1GiB"), 1073741824u);
    EXPECT_EQ(parse_size("5GiB"), 5ull * 1024 * 1024 * 1024);
}

TEST(ParseSize, SpaceBeforeUnit) {
    EXPECT_EQ(parse_size("25 MiB"), 25u * 1024 * 1024);
    EXPECT_EQ(parse_size("10 KB"), 10000u);
}

TEST(ParseSize, UnitsAreCaseSensitive) {
    EXPECT_FALSE(parse_size("1kb"));
    EXPECT_FALSE(parse_size("1kib"));
    EXPECT_FALSE(parse_size("1KIB"));
    EXPECT_FALSE(parse_size("1mb"));
    EXPECT_FALSE(parse_size("1b"));
}

TEST(ParseSize, BadUnitsAndSyntax) {
    for (const char* bad :
         {"",   "MiB",  "KB", "1K", "1M",    "1G",   "1TB", "1TiB", "1 MiB ", "1MiBs",  "1.5MiB",
          "-1", "-1KB", "+1", " 1", "1_000", "0x10", "abc", "1e6",  "1 2",    "10MiB10"}) {
        EXPECT_FALSE(parse_size(bad).has_value()) << "\"" << bad << "\"";
    }
}

TEST(ParseSize, Overflow) {
    EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
    EXPECT_FALSE(parse_size("18446744073709551616"));
    EXPECT_FALSE(parse_size("99999999999999999999999"));
    EXPECT_FALSE(parse_size("18446744073709551615KB"));
    EXPECT_FALSE(parse_size("17179869184GiB"));  // 2^34 GiB = 2^64
    EXPECT_EQ(parse_size("17179869183GiB"), (17179869183ull) << 30);
    EXPECT_FALSE(parse_size("18446744073709552KB"));
    EXPECT_EQ(parse_size("18446744073709551KB"), 18446744073709551000ull);
}

TEST(ParseDuration, AllUnits) {
    EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
    EXPECT_EQ(parse_duration("30s"), milliseconds(30000));
    EXPECT_EQ(parse_duration("5m"), milliseconds(5 * 60 * 1000));
    EXPECT_EQ(parse_duration("1h"), milliseconds(3600 * 1000));
    EXPECT_EQ(parse_duration("5d"), milliseconds(5ll * 24 * 3600 * 1000));
    EXPECT_EQ(parse_duration("0s"), milliseconds(0));
    EXPECT_EQ(parse_duration("10 s"), milliseconds(10000));
}

TEST(ParseDuration, MinutesAreNotMilliseconds) {
    EXPECT_EQ(parse_duration("1m"), milliseconds(60000));
    EXPECT_EQ(parse_duration("1ms"), milliseconds(1));
}

TEST(ParseDuration, MissingOrBadUnit) {
    for (const char* bad :
         {"",   "5",  "300", "s",    "ms",  "5sec", "5 min", "5M",  "5S",    "5H",
          "5D", "1w", "1y",  "1.5s", "-1s", "+1s",  " 1s",   "1s ", "1h30m", "1 h 2"}) {
        EXPECT_FALSE(parse_duration(bad).has_value()) << "\"" << bad << "\"";
    }
}

TEST(ParseDuration, Overflow) {
    // The largest count of milliseconds that fits int64_t.
    EXPECT_EQ(parse_duration("9223372036854775807ms"), milliseconds(INT64_MAX));
    EXPECT_FALSE(parse_duration("9223372036854775808ms"));
    EXPECT_FALSE(parse_duration("18446744073709551615ms"));
    EXPECT_FALSE(parse_duration("18446744073709551616ms"));
    EXPECT_FALSE(parse_duration("9223372036854776s"));
    EXPECT_EQ(parse_duration("9223372036854775s"), milliseconds(9223372036854775000ll));
    EXPECT_FALSE(parse_duration("213503982335d"));
    EXPECT_FALSE(parse_duration("99999999999999999999d"));
}

}  // namespace
}  // namespace postern::config
