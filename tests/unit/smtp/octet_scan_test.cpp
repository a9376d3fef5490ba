// Unit tests for passing over plain message text in blocks (proxy/smtp/octet_scan.hpp), against
// a plain octet-by-octet reading of the same rule: stopping octets at every position of a block
// of 16 and of 64, line ends inside a block and across blocks, "." after a line end, a CR LF at
// the very end, NUL as text or not, the eight-bit flag only for octets passed, and line lengths
// carried in from earlier text.
#include "proxy/smtp/octet_scan.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace postern::smtp {
namespace {

struct Result {
    size_t end;
    TextScan scan;
};

// The rule, one octet at a time.
Result reference(std::string_view text, size_t from, TextScan scan, size_t max_line,
                 bool nul_is_text) {
    size_t i = from;
    while (i < text.size()) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\r' && i + 2 < text.size() && text[i + 1] == '\n' && text[i + 2] != '.') {
            if (scan.line_length > max_line) scan.long_line = true;
            scan.line_length = 0;
            i += 2;
            continue;
        }
        if (c == '\r' || c == '\n' || (c == '\0' && !nul_is_text)) break;
        if (c >= 0x80) scan.eight_bit = true;
        ++scan.line_length;
        ++i;
    }
    if (scan.line_length > max_line) scan.long_line = true;
    return {i, scan};
}

Result scanned(std::string_view text, size_t from, TextScan scan, size_t max_line,
               bool nul_is_text) {
    const size_t end = nul_is_text ? skip_plain_text<true>(text, from, max_line, scan)
                                   : skip_plain_text<false>(text, from, max_line, scan);
    return {end, scan};
}

void expect_same(std::string_view text, size_t from, TextScan before = {}, size_t max_line = 998,
                 bool nul_is_text = false) {
    const Result got = scanned(text, from, before, max_line, nul_is_text);
    const Result want = reference(text, from, before, max_line, nul_is_text);
    const std::string where = "from " + std::to_string(from) + " in " + testing::PrintToString(text);
    EXPECT_EQ(got.end, want.end) << where;
    EXPECT_EQ(got.scan.line_length, want.scan.line_length) << where;
    EXPECT_EQ(got.scan.long_line, want.scan.long_line) << where;
    EXPECT_EQ(got.scan.eight_bit, want.scan.eight_bit) << where;
}

TEST(OctetScan, NothingToStopAt) {
    expect_same("", 0);
    expect_same("abc", 0);
    expect_same(std::string(200, 'x'), 0);
    expect_same(std::string(200, 'x'), 37);
    TextScan scan;
    EXPECT_EQ(skip_plain_text<false>(std::string(200, 'x'), 37, 998, scan), 200u);
}

TEST(OctetScan, EveryStoppingOctetAtEveryPosition) {
    for (char special : {'\r', '\n', '\0'}) {
        for (size_t length = 1; length <= 140; ++length) {  // blocks of 64 and 16, and a tail
            for (size_t at = 0; at < length; at += length > 40 ? 3 : 1) {
                std::string text(length, 'a');
                text[at] = special;
                for (size_t from = 0; from <= at; from += 1 + from / 8) {
                    expect_same(text, from);
                    expect_same(text, from, {}, 998, /*nul_is_text=*/true);
                }
            }
        }
    }
}

TEST(OctetScan, LineEndsAreTakenAtEveryPositionOfABlock) {
    // A CR LF at each offset, its LF in the same block or the next one; the run goes on past it
    // unless a "." follows or the text ends there.
    // The length after it varies too, so that an LF carried out of a 64-octet block lands in
    // the next 64-octet block, a 16-octet block or the octet-by-octet tail, and one carried
    // out of a 16-octet block lands in the next or in the tail.
    for (size_t at = 0; at < 150; ++at) {
        for (char after : {'x', '.', '\r', '\n'}) {
            for (size_t rest = 0; rest <= 80; ++rest) {
                std::string text(at, 'a');
                text += "\r\n";
                text += after;
                text += std::string(rest, 'b');
                expect_same(text, 0);
            }
            std::string ends_there(at, 'a');
            ends_there += "\r\n";
            expect_same(ends_there, 0);  // the octet after the line end is not known yet
        }
    }
    // Many short lines in one block.
    expect_same("a\r\nb\r\nc\r\nd\r\ne\r\nf\r\ng\r\nh\r\n\r\n\r\nxyz", 0);
    TextScan scan;
    EXPECT_EQ(skip_plain_text<false>("ab\r\ncd\r\n.e", 0, 998, scan), 6u);
}

TEST(OctetScan, EightBitOnlyForOctetsPassed) {
    for (size_t length = 2; length <= 140; length += 3) {
        for (size_t high = 0; high < length; high += 1 + high / 16) {
            for (size_t at = 0; at < length; ++at) {
                if (at == high) continue;
                std::string text(length, 'a');
                text[high] = '\xe9';
                text[at] = '\n';
                expect_same(text, 0);
            }
        }
    }
    // 0x8d and 0x8a are CR and LF with the high bit set: text, and eight-bit.
    const std::string text = "\x0c\x0e\x09\x0b\x01\xff\x8d\x8a" "abcdefgh" "\r";
    TextScan scan;
    EXPECT_EQ(skip_plain_text<false>(text, 0, 998, scan), 16u);
    EXPECT_TRUE(scan.eight_bit);
}

TEST(OctetScan, LineLengthsCarriedInAndMeasured) {
    const std::string line(998, 'x');
    const auto long_line = [](const std::string& text, size_t carried) {
        TextScan scan{carried, false, false};
        skip_plain_text<false>(text, 0, 998, scan);
        return scan.long_line;
    };
    EXPECT_FALSE(long_line(line + "\r\nok", 0));
    EXPECT_TRUE(long_line(line + "x\r\nok", 0));
    // The line began in earlier text: its first 10 octets came before.
    EXPECT_TRUE(long_line(std::string(989, 'x') + "\r\nok", 10));
    EXPECT_FALSE(long_line(std::string(988, 'x') + "\r\nok", 10));
    TextScan open;
    EXPECT_EQ(skip_plain_text<false>("ab\r\ncdef", 0, 998, open), 8u);
    EXPECT_EQ(open.line_length, 4u);
    // Carried in, and no line end: the lengths add up.
    TextScan carried{500, false, false};
    skip_plain_text<false>("abc", 0, 998, carried);
    EXPECT_EQ(carried.line_length, 503u);
}

TEST(OctetScan, RandomTextAgreesWithTheReference) {
    // Lines over a small alphabet of the octets that matter, from many starts, with a low line
    // limit so that long lines are frequent. Lengths up to 200 cover the 64-octet blocks.
    std::mt19937 random(20261129);
    const std::string alphabet = std::string("aaaaaaaaaaaaaaaa.\r\n\r\n\xe9") + '\0';
    for (int round = 0; round < 3000; ++round) {
        std::string text(random() % 200, 'a');
        for (char& c : text) c = alphabet[random() % alphabet.size()];
        const TextScan before{random() % 8, false, false};
        for (size_t from = 0; from <= text.size(); from += 1 + random() % 9) {
            expect_same(text, from, before, 6, false);
            expect_same(text, from, before, 6, true);
        }
    }
}

TEST(OctetScan, RandomMessagesAgreeWithTheReference) {
    // Mostly ordinary lines ending in CR LF, of every length, so that runs pass whole blocks and
    // line ends fall at every offset of them; now and then a line starting with ".", an octet
    // over 127, a bare CR or LF, or a NUL.
    std::mt19937 random(29112026);
    for (int round = 0; round < 2000; ++round) {
        std::string text;
        while (text.size() < 400) {
            std::string line(random() % 90, 'x');
            if (!line.empty() && random() % 8 == 0) line[0] = '.';
            if (!line.empty() && random() % 16 == 0) line[random() % line.size()] = '\xe9';
            switch (random() % 40) {
                case 0: line += '\r'; break;
                case 1: line += '\n'; break;
                case 2: line += '\0'; break;
                default: break;
            }
            text += line;
            text += "\r\n";
        }
        const TextScan before{random() % 50, false, false};
        for (size_t from = 0; from < text.size(); from += 1 + random() % 37) {
            expect_same(text, from, before, 60, false);
            expect_same(text, from, before, 60, true);
        }
    }
}

}  // namespace
}  // namespace postern::smtp
