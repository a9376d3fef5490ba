// Unit tests for the word-at-a-time search for CR, LF and NUL (proxy/smtp/octet_scan.hpp),
// against the plain octet-by-octet answer: every special octet at every position of a word and
// of the tail, and the eight-bit flag only for octets before the one found.
#include "proxy/smtp/octet_scan.hpp"

#include <gtest/gtest.h>

#include <string>

namespace postern::smtp {
namespace {

struct Plain {
    size_t index;
    bool eight_bit;
};

Plain plain(std::string_view text, size_t from) {
    bool eight_bit = false;
    for (size_t i = from; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '\r' || c == '\n' || c == '\0') return {i, eight_bit};
        if (c >= 0x80) eight_bit = true;
    }
    return {text.size(), eight_bit};
}

void expect_same(std::string_view text, size_t from) {
    bool eight_bit = false;
    const size_t found = find_cr_lf_nul(text, from, eight_bit);
    const Plain want = plain(text, from);
    EXPECT_EQ(found, want.index) << "from " << from;
    EXPECT_EQ(eight_bit, want.eight_bit) << "from " << from;
}

TEST(OctetScan, NothingToFind) {
    expect_same("", 0);
    expect_same("abc", 0);
    expect_same(std::string(100, 'x'), 0);
    expect_same(std::string(100, 'x'), 37);
}

TEST(OctetScan, EverySpecialOctetAtEveryPosition) {
    for (char special : {'\r', '\n', '\0'}) {
        for (size_t length = 1; length <= 40; ++length) {
            for (size_t at = 0; at < length; ++at) {
                std::string text(length, 'a');
                text[at] = special;
                for (size_t from = 0; from <= at; ++from) expect_same(text, from);
            }
        }
    }
}

TEST(OctetScan, EightBitOnlyBeforeTheOctetFound) {
    for (size_t length = 2; length <= 48; ++length) {  // blocks of 16 and 8, and a tail
        for (size_t high = 0; high < length; ++high) {
            for (size_t at = 0; at < length; ++at) {
                if (at == high) continue;
                std::string text(length, 'a');
                text[high] = '\xe9';
                text[at] = '\n';
                expect_same(text, 0);
            }
        }
    }
}

TEST(OctetScan, OctetsNextToTheSpecialValuesAreText) {
    // 0x0c/0x0e next to CR, 0x09/0x0b next to LF, 0x01 and 0xff next to NUL; 0x8d and 0x8a are
    // CR and LF with the high bit set: text, and eight-bit.
    const std::string text =
        "\x0c\x0e\x09\x0b\x01\xff\x8d\x8a"
        "abcdefgh"
        "\r";
    expect_same(text, 0);
    bool eight_bit = false;
    EXPECT_EQ(find_cr_lf_nul(text, 0, eight_bit), 16u);
    EXPECT_TRUE(eight_bit);
}

}  // namespace
}  // namespace postern::smtp
