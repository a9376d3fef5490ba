// Unit tests for base64 (proxy/smtp/base64.hpp): the RFC 4648 test vectors, every octet value,
// and the strict decoder's refusals.
#include "proxy/smtp/base64.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace postern::smtp {
namespace {

struct Vector {
    std::string_view plain;
    std::string_view encoded;
};

// RFC 4648 section 10.
constexpr Vector kRfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

TEST(Base64, EncodeRfc4648Vectors) {
    for (const Vector& v : kRfc4648) {
        SCOPED_TRACE(std::string(v.plain));
        EXPECT_EQ(base64_encode(v.plain), v.encoded);
    }
}

TEST(Base64, DecodeRfc4648Vectors) {
    for (const Vector& v : kRfc4648) {
        SCOPED_TRACE(std::string(v.encoded));
        std::optional<std::string> decoded = base64_decode(v.encoded);
        ASSERT_TRUE(decoded.has_value());
        EXPECT_EQ(*decoded, v.plain);
    }
}

TEST(Base64, EveryOctetRoundTrips) {
    std::string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    std::string encoded = base64_encode(all);
    EXPECT_EQ(encoded.size(), 4 * ((all.size() + 2) / 3));
    EXPECT_EQ(base64_decode(encoded), all);
    // Each octet alone (two padding characters), and in pairs (one).
    for (int c = 0; c < 256; ++c) {
        std::string one(1, static_cast<char>(c));
        std::string two = one + static_cast<char>(255 - c);
        SCOPED_TRACE(c);
        EXPECT_EQ(base64_encode(one).size(), 4u);
        EXPECT_EQ(base64_decode(base64_encode(one)), one);
        EXPECT_EQ(base64_decode(base64_encode(two)), two);
    }
}

TEST(Base64, EncodeUsesTheStandardAlphabet) {
    // 0xfb 0xff 0xbf -> 111110 111111 111110 111111: "+/+/" (not the URL-safe "-_").
    EXPECT_EQ(base64_encode("\xfb\xff\xbf"), "+/+/");
    EXPECT_EQ(base64_decode("+/+/"), std::string("\xfb\xff\xbf"));
    EXPECT_EQ(base64_encode(std::string_view("\0\0\0", 3)), "AAAA");
}

TEST(Base64, DecodeRejectsBadCharacters) {
    for (std::string_view bad :
         {std::string_view("Zm9-"), std::string_view("Zm9_"), std::string_view("Zm9*"),
          std::string_view("Zm.v"), std::string_view("Zm9\xc3"), std::string_view("Zm9\0", 4)}) {
        SCOPED_TRACE(testing::PrintToString(std::string(bad)));
        EXPECT_FALSE(base64_decode(bad).has_value());
    }
}

TEST(Base64, DecodeRejectsBadLength) {
    for (std::string_view bad : {"Z", "Zg", "Zg=", "Zm9", "Zm9vY", "Zm9vYg=", "Zm9vYmFy="}) {
        SCOPED_TRACE(bad);
        EXPECT_FALSE(base64_decode(bad).has_value());
    }
}

TEST(Base64, DecodeRejectsMisplacedPadding) {
    for (std::string_view bad :
         {"====", "=Zg=", "Z===", "Zg=a", "Z=g=", "Zg==Zg==", "Zm9v====", "Zm8=Zm9v", "Zm9v=Zg="}) {
        SCOPED_TRACE(bad);
        EXPECT_FALSE(base64_decode(bad).has_value());
    }
}

TEST(Base64, DecodeRejectsWhitespace) {
    // Each of a valid length: only the whitespace is wrong.
    for (std::string_view bad : {" Zm9vYg=", "Zm9v Zg=", "Zm9v\r\nZg",
                                 "Zm9v\tZg=", "Zm9v\nZg=", "Zm9vYmFy\r\n\r\n", "Zm9vYmFy    "}) {
        SCOPED_TRACE(testing::PrintToString(std::string(bad)));
        EXPECT_FALSE(base64_decode(bad).has_value());
    }
}

}  // namespace
}  // namespace postern::smtp
