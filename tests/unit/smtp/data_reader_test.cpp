// Unit tests for the DATA/BDAT content state machine (proxy/smtp/data_reader.hpp): dot
// transparency and end of data (RFC 5321 4.1.1.4, 4.5.2), BDAT chunks (RFC 3030), limits, and
// the SMTP smuggling variants of ../../../../shared/testdata/smtp/eod-sequences.tsv.
#include "proxy/smtp/data_reader.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace postern::smtp {
namespace {

using Mode = DataReader::Mode;
using Flags = DataReader::Flags;

constexpr uint64_t kNoLimit = UINT64_MAX;
constexpr BareLineEndPolicy kPolicies[] = {BareLineEndPolicy::kReject,
                                           BareLineEndPolicy::kNormalize};

const char* policy_name(BareLineEndPolicy p) {
    return p == BareLineEndPolicy::kReject ? "reject" : "normalize";
}

// Everything observable about one run of a reader.
struct Outcome {
    std::string out;
    size_t consumed = 0;  // total over all feed() calls
    bool done = false;
    Flags flags;
    uint64_t size = 0;
};

bool same_flags(const Flags& a, const Flags& b) {
    return a.bare_line_end == b.bare_line_end && a.nul == b.nul && a.long_line == b.long_line &&
           a.too_big == b.too_big && a.eight_bit == b.eight_bit;
}

std::string describe(const Flags& f) {
    std::string s;
    if (f.bare_line_end) s += "bare_line_end ";
    if (f.nul) s += "nul ";
    if (f.long_line) s += "long_line ";
    if (f.too_big) s += "too_big ";
    if (f.eight_bit) s += "eight_bit ";
    return s.empty() ? "(none)" : s;
}

// Feeds the pieces in order, as a session would: once the reader is done, the rest of the
// current piece and the later pieces are not its business.
Outcome run_pieces(Mode mode, BareLineEndPolicy policy, const std::vector<std::string>& pieces,
                   uint64_t max_size = kNoLimit, bool finish = false) {
    Outcome o;
    DataReader reader(mode, policy, max_size, o.out);
    for (const std::string& piece : pieces) {
        size_t used = reader.feed(piece);
        EXPECT_LE(used, piece.size());
        o.consumed += used;
        if (reader.done()) break;
        EXPECT_EQ(used, piece.size()) << "a reader that is not done must use all input";
    }
    if (finish) reader.finish();
    o.done = reader.done();
    o.flags = reader.flags();
    o.size = reader.size();
    return o;
}

Outcome run(Mode mode, BareLineEndPolicy policy, std::string_view input,
            uint64_t max_size = kNoLimit, bool finish = false) {
    return run_pieces(mode, policy, {std::string(input)}, max_size, finish);
}

Outcome read_data(std::string_view input, BareLineEndPolicy policy = BareLineEndPolicy::kReject,
                  uint64_t max_size = kNoLimit) {
    return run(Mode::kDotStuffed, policy, input, max_size);
}

Outcome chunk(std::string_view input, BareLineEndPolicy policy = BareLineEndPolicy::kReject,
              bool finish = true, uint64_t max_size = kNoLimit) {
    return run(Mode::kChunked, policy, input, max_size, finish);
}

// A string literal with its embedded NULs.
template <size_t N>
std::string bin(const char (&literal)[N]) {
    return std::string(literal, N - 1);
}

bool no_flags(const Flags& f) {
    return describe(f) == "(none)";
}

// True when every LF is preceded by CR and every CR followed by LF.
bool only_crlf_line_ends(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
        if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return false;
    }
    return true;
}

bool has_bare_or_nul(std::string_view s) {
    return !only_crlf_line_ends(s) || s.find('\0') != std::string_view::npos;
}

std::string printable(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c < 0x20 || c >= 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

// Runs `input` once whole, once byte by byte and once for every split into two pieces, and
// checks that every run gives the same outcome.
void expect_split_invariant(Mode mode, BareLineEndPolicy policy, std::string_view input,
                            uint64_t max_size = kNoLimit, bool finish = false) {
    SCOPED_TRACE("input: " + printable(input) + " policy: " + policy_name(policy));
    Outcome whole = run(mode, policy, input, max_size, finish);

    auto check = [&](const Outcome& o, const std::string& how) {
        EXPECT_EQ(o.out, whole.out) << how;
        EXPECT_EQ(o.consumed, whole.consumed) << how;
        EXPECT_EQ(o.done, whole.done) << how;
        EXPECT_EQ(o.size, whole.size) << how;
        EXPECT_TRUE(same_flags(o.flags, whole.flags))
            << how << ": " << describe(o.flags) << " vs " << describe(whole.flags);
    };

    std::vector<std::string> bytes;
    for (char c : input) bytes.emplace_back(1, c);
    check(run_pieces(mode, policy, bytes, max_size, finish), "byte by byte");

    for (size_t split = 0; split <= input.size(); ++split) {
        check(run_pieces(mode, policy,
                         {std::string(input.substr(0, split)), std::string(input.substr(split))},
                         max_size, finish),
              "split at " + std::to_string(split));
    }
    // Three pieces, the middle one short: catches state lost over an empty or one-octet feed.
    for (size_t split = 0; split + 1 <= input.size(); ++split) {
        check(
            run_pieces(mode, policy,
                       {std::string(input.substr(0, split)), std::string(),
                        std::string(input.substr(split, 1)), std::string(input.substr(split + 1))},
                       max_size, finish),
            "three pieces at " + std::to_string(split));
    }
}

// ---- DATA: basics ----------------------------------------------------------------------------

TEST(DataReaderDot, SimpleMessage) {
    std::string input = "Subject: hi\r\n\r\nHello\r\n.\r\n";
    Outcome o = read_data(input);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, input.size());
    EXPECT_EQ(o.out, "Subject: hi\r\n\r\nHello\r\n");
    EXPECT_EQ(o.size, o.out.size());
    EXPECT_TRUE(no_flags(o.flags)) << describe(o.flags);
}

TEST(DataReaderDot, EmptyMessage) {
    Outcome o = read_data(".\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, 3u);
    EXPECT_EQ(o.out, "");
    EXPECT_EQ(o.size, 0u);
    EXPECT_TRUE(no_flags(o.flags));
}

TEST(DataReaderDot, EmptyLinesOnly) {
    Outcome o = read_data("\r\n\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, "\r\n\r\n");
}

TEST(DataReaderDot, NotDoneWithoutEnd) {
    for (std::string_view input : {"", "abc", "abc\r\n", "abc\r\n.", "abc\r\n.\r", "abc\r\n\r\n"}) {
        Outcome o = read_data(input);
        EXPECT_FALSE(o.done) << printable(input);
        EXPECT_EQ(o.consumed, input.size()) << printable(input);
    }
}

TEST(DataReaderDot, DotUnstuffing) {
    EXPECT_EQ(read_data("..x\r\n.\r\n").out, ".x\r\n");
    EXPECT_EQ(read_data("..\r\n.\r\n").out, ".\r\n");
    EXPECT_EQ(read_data("...\r\n.\r\n").out, "..\r\n");
    EXPECT_EQ(read_data("a\r\n..b\r\n..\r\n.\r\n").out, "a\r\n.b\r\n.\r\n");
    // A line "..\r\n" followed by the end: the first is content, not the end.
    Outcome o = read_data("..\r\n.\r\nrest");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, ".\r\n");
    EXPECT_EQ(o.consumed, 7u);
}

TEST(DataReaderDot, LeadingDotOfUnstuffedLineIsRemoved) {
    // RFC 5321 4.5.2: the first "." of a line that has more characters is deleted.
    EXPECT_EQ(read_data(".x\r\n.\r\n").out, "x\r\n");
}

TEST(DataReaderDot, DotInsideLineIsContent) {
    std::string body = "a.b\r\n a .\r\nend.\r\n.. is two\r\n";
    Outcome o = read_data("a.b\r\n a .\r\nend.\r\n... is two\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, body);
}

TEST(DataReaderDot, DotSpaceIsNotTheEnd) {
    Outcome o = read_data(". \r\nx\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, " \r\nx\r\n");
    o = read_data(" .\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, " .\r\n");
}

TEST(DataReaderDot, LeftoverAfterEndIsNotConsumed) {
    std::string input = "x\r\n.\r\nQUIT\r\n";
    Outcome o = read_data(input);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, 6u);
    EXPECT_EQ(input.substr(o.consumed), "QUIT\r\n");
    EXPECT_EQ(o.out, "x\r\n");
}

TEST(DataReaderDot, PipelinedNextTransaction) {
    std::string next = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";
    std::string input = "Subject: 1\r\n\r\none\r\n.\r\n" + next;
    Outcome o = read_data(input);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(input.substr(o.consumed), next);
    EXPECT_EQ(o.out, "Subject: 1\r\n\r\none\r\n");
}

TEST(DataReaderDot, FeedAfterDoneUsesNothing) {
    std::string out;
    DataReader reader(Mode::kDotStuffed, BareLineEndPolicy::kReject, kNoLimit, out);
    EXPECT_EQ(reader.feed("a\r\n.\r\n"), 6u);
    ASSERT_TRUE(reader.done());
    EXPECT_EQ(reader.feed("more\r\n.\r\n"), 0u);
    EXPECT_EQ(out, "a\r\n");
}

TEST(DataReaderDot, EndSplitAcrossFeeds) {
    std::string out;
    DataReader reader(Mode::kDotStuffed, BareLineEndPolicy::kReject, kNoLimit, out);
    EXPECT_EQ(reader.feed("line\r"), 5u);
    EXPECT_FALSE(reader.done());
    EXPECT_EQ(reader.feed("\n."), 2u);
    EXPECT_FALSE(reader.done());
    EXPECT_EQ(reader.feed("\r"), 1u);
    EXPECT_FALSE(reader.done());
    EXPECT_EQ(reader.feed("\nNOOP\r\n"), 1u);
    EXPECT_TRUE(reader.done());
    EXPECT_EQ(out, "line\r\n");
}

TEST(DataReaderDot, SplitInvariance) {
    const std::string inputs[] = {
        "Subject: hi\r\n\r\nHello\r\n.\r\n",
        ".\r\n",
        ".\r\nQUIT\r\n",
        "..x\r\n..\r\n.y\r\n.\r\nNEXT",
        "a\nb\rc\r\r\n.\n.\r.\r\r\n\n.\r\n",
        bin("nul\0here\r\n\0.\r\n.\0\r\n.\r\n"),
        "8bit \xc3\xa9\xff\r\n.\r\n",
        "no end at all\r\n.",
        "trailing cr\r",
        "x\r\n.\r\r\n.\r\n",
        "\r\n.\r\n",
        "\n.\r\n.\r\n",
    };
    for (const std::string& input : inputs) {
        for (BareLineEndPolicy p : kPolicies) {
            expect_split_invariant(Mode::kDotStuffed, p, input);
        }
    }
}

TEST(DataReaderDot, SplitInvarianceWithLimits) {
    std::string long_line = std::string(1200, 'L') + "\r\n";
    expect_split_invariant(Mode::kDotStuffed, BareLineEndPolicy::kReject,
                           "a\r\n" + long_line + ".\r\n");
    expect_split_invariant(Mode::kDotStuffed, BareLineEndPolicy::kNormalize,
                           "0123456789\r\n0123456789\r\n.\r\nX", 16);
}

// ---- DATA: limits and flags ------------------------------------------------------------------

TEST(DataReaderDot, SizeLimitExactlyFits) {
    // "0123456789\r\n" is 12 octets.
    Outcome o = read_data("0123456789\r\n.\r\n", BareLineEndPolicy::kReject, 12);
    EXPECT_TRUE(o.done);
    EXPECT_FALSE(o.flags.too_big);
    EXPECT_EQ(o.out, "0123456789\r\n");
    EXPECT_EQ(o.size, 12u);
}

TEST(DataReaderDot, SizeLimitExceeded) {
    std::string input = "0123456789\r\n0123456789\r\n.\r\nQUIT\r\n";
    Outcome o = read_data(input, BareLineEndPolicy::kReject, 13);
    EXPECT_TRUE(o.flags.too_big);
    EXPECT_TRUE(o.out.empty()) << "nothing of an oversized message is kept";
    EXPECT_TRUE(o.done) << "the end of data is still found";
    EXPECT_EQ(input.substr(o.consumed), "QUIT\r\n");
    EXPECT_EQ(o.size, 24u) << "size counts past the limit";
}

TEST(DataReaderDot, SizeLimitZero) {
    Outcome o = read_data(".\r\n", BareLineEndPolicy::kReject, 0);
    EXPECT_FALSE(o.flags.too_big);
    EXPECT_TRUE(o.done);
    o = read_data("x\r\n.\r\n", BareLineEndPolicy::kReject, 0);
    EXPECT_TRUE(o.flags.too_big);
    EXPECT_TRUE(o.out.empty());
    EXPECT_TRUE(o.done);
}

TEST(DataReaderDot, SizeLimitIsOnDecodedOctets) {
    // "..x\r\n" decodes to 4 octets: fits in 4 although 5 were sent.
    Outcome o = read_data("..x\r\n.\r\n", BareLineEndPolicy::kReject, 4);
    EXPECT_FALSE(o.flags.too_big);
    EXPECT_EQ(o.out, ".x\r\n");
}

TEST(DataReaderDot, LongLine) {
    std::string line998(998, 'a');
    Outcome o = read_data(line998 + "\r\n" + line998 + "\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_FALSE(o.flags.long_line) << "998 octets without CRLF is the limit, not over it";
    EXPECT_EQ(o.out.size(), 2 * 1000u);

    std::string line999(999, 'a');
    o = read_data("short\r\n" + line999 + "\r\nshort\r\n.\r\n");
    EXPECT_TRUE(o.done);
    EXPECT_TRUE(o.flags.long_line);
    EXPECT_EQ(o.out, "short\r\n" + line999 + "\r\nshort\r\n");
}

TEST(DataReaderDot, LongLineCountsAfterUnstuffing) {
    // A stuffed line of 999 octets on the wire is 998 octets of content.
    Outcome o = read_data("." + std::string(998, '.') + "\r\n.\r\n");
    EXPECT_FALSE(o.flags.long_line);
    EXPECT_EQ(o.out.size(), 1000u);
}

TEST(DataReaderDot, EightBit) {
    Outcome o = read_data("Subject: caf\xc3\xa9\r\n.\r\n");
    EXPECT_TRUE(o.flags.eight_bit);
    EXPECT_EQ(o.out, "Subject: caf\xc3\xa9\r\n");
    EXPECT_FALSE(o.flags.bare_line_end);
    EXPECT_FALSE(read_data("plain\r\n.\r\n").flags.eight_bit);
    EXPECT_TRUE(read_data("\x80\r\n.\r\n").flags.eight_bit);
}

TEST(DataReaderDot, Nul) {
    std::string input = bin("a\0b\r\n.\r\n");
    Outcome o = read_data(input);
    EXPECT_TRUE(o.flags.nul);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.consumed, input.size());
    EXPECT_TRUE(o.out.empty()) << "a message with a NUL is refused: nothing is kept";
    EXPECT_FALSE(read_data("ab\r\n.\r\n").flags.nul);
}

TEST(DataReaderDot, NulRefusesUnderBothPolicies) {
    for (BareLineEndPolicy p : kPolicies) {
        SCOPED_TRACE(policy_name(p));
        std::string input = bin("line one\r\nline\0two\r\nline three\r\n.\r\nQUIT\r\n");
        Outcome o = read_data(input, p);
        EXPECT_TRUE(o.flags.nul);
        EXPECT_FALSE(o.flags.bare_line_end);
        EXPECT_TRUE(o.out.empty());
        EXPECT_TRUE(o.done);
        EXPECT_EQ(input.substr(o.consumed), "QUIT\r\n");
        EXPECT_EQ(o.size, 31u) << "decoded octets are still counted (the NUL is not)";
    }
}

TEST(DataReaderDot, BareLineEndsNormalised) {
    constexpr auto kNormalize = BareLineEndPolicy::kNormalize;
    Outcome o = read_data("a\nb\r\n.\r\n", kNormalize);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, "a\r\nb\r\n");

    o = read_data("a\rb\r\n.\r\n", kNormalize);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_EQ(o.out, "a\r\nb\r\n");

    o = read_data("a\r\r\nb\r\n.\r\n", kNormalize);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_EQ(o.out, "a\r\n\r\nb\r\n");

    o = read_data("a\n\nb\r\n.\r\n", kNormalize);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_EQ(o.out, "a\r\n\r\nb\r\n");
}

TEST(DataReaderDot, BareLineEndsRefusedUnderReject) {
    for (std::string_view input :
         {"a\nb\r\n.\r\nQUIT\r\n", "a\rb\r\n.\r\nQUIT\r\n", "a\r\r\nb\r\n.\r\nQUIT\r\n"}) {
        SCOPED_TRACE(printable(input));
        Outcome o = read_data(input, BareLineEndPolicy::kReject);
        EXPECT_TRUE(o.flags.bare_line_end);
        EXPECT_FALSE(o.flags.nul);
        EXPECT_TRUE(o.out.empty()) << "a refused message is not kept: " << printable(o.out);
        EXPECT_TRUE(o.done) << "the end of a refused message is still found";
        EXPECT_EQ(input.substr(o.consumed), "QUIT\r\n");
    }
}

TEST(DataReaderDot, RejectKeepsContentBeforeAnyBareLineEnd) {
    // Nothing is dropped while the message is clean.
    std::string out;
    DataReader reader(Mode::kDotStuffed, BareLineEndPolicy::kReject, kNoLimit, out);
    reader.feed("clean line\r\n");
    EXPECT_EQ(out, "clean line\r\n");
    reader.feed("bad\nline\r\n");
    EXPECT_TRUE(out.empty());
    reader.feed("more\r\n");
    EXPECT_TRUE(out.empty()) << "nothing is kept after the refusal either";
    reader.feed(".\r\n");
    EXPECT_TRUE(reader.done());
    EXPECT_TRUE(reader.flags().bare_line_end);
}

TEST(DataReaderDot, DotAfterBareLineEndIsContentNotStuffing) {
    // After a normalised bare LF the "." does not start a real line: it is kept as content,
    // neither an end of data nor a stuffing dot.
    Outcome o = read_data("a\n.\r\nb\r\n.\r\n", BareLineEndPolicy::kNormalize);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, "a\r\n.\r\nb\r\n");
    EXPECT_TRUE(o.flags.bare_line_end);
}

TEST(DataReaderDot, DotStuffingAfterBareLineEndIsUndone) {
    // A client that ends its lines with bare LF still dot-stuffs: "..b" stands for ".b".
    Outcome o = read_data("a\n..b\n.\nc\r\n.\r\n", BareLineEndPolicy::kNormalize);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.out, "a\r\n.b\r\n.\r\nc\r\n");
}

// ---- DATA: SMTP smuggling (shared/testdata/smtp/eod-sequences.tsv) ---------------------------

struct EodRow {
    std::string name;
    std::string bytes;
};

std::filesystem::path testdata_dir() {
    if (const char* env = std::getenv("POSTERN_TESTDATA")) return env;
    // shared/ is a sibling of the repository: tests/unit/smtp/ -> ../../../../shared/testdata.
    return std::filesystem::path(__FILE__).parent_path() / ".." / ".." / ".." / ".." / "shared" /
           "testdata";
}

std::string unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        char e = s[++i];
        if (e == 'r') {
            out += '\r';
        } else if (e == 'n') {
            out += '\n';
        } else if (e == 't') {
            out += '\t';
        } else if (e == '\\') {
            out += '\\';
        } else if (e == 'x' && i + 2 < s.size()) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            ADD_FAILURE() << "unknown escape \\" << e << " in " << s;
        }
    }
    return out;
}

std::vector<EodRow> load_eod_rows() {
    std::filesystem::path path = testdata_dir() / "smtp" / "eod-sequences.tsv";
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << "cannot read " << path
                           << " (set POSTERN_TESTDATA to the shared/testdata directory)";
    std::vector<EodRow> rows;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        size_t tab1 = line.find('\t');
        if (tab1 == std::string::npos) continue;
        size_t tab2 = line.find('\t', tab1 + 1);
        rows.push_back({line.substr(0, tab1), unescape(line.substr(tab1 + 1, tab2 - tab1 - 1))});
    }
    return rows;
}

const std::string kPrefix = "Subject: x\r\n\r\nbody";
const std::string kSmuggled = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n";
const std::string kEnd = "\r\n.\r\n";

TEST(DataReaderSmuggling, TestDataIsComplete) {
    std::vector<EodRow> rows = load_eod_rows();
    ASSERT_GE(rows.size(), 17u);
    bool has_valid = false;
    for (const EodRow& r : rows) {
        EXPECT_FALSE(r.bytes.empty()) << r.name;
        if (r.name == "valid") {
            has_valid = true;
            EXPECT_EQ(r.bytes, "\r\n.\r\n");
        }
        if (r.name == "nul_before_dot") {
            EXPECT_EQ(r.bytes, bin("\r\n\0.\r\n"));
        }
    }
    EXPECT_TRUE(has_valid);
}

TEST(DataReaderSmuggling, EveryEndOfDataVariant) {
    std::vector<EodRow> rows = load_eod_rows();
    ASSERT_FALSE(rows.empty());
    for (const EodRow& row : rows) {
        const std::string input = kPrefix + row.bytes + kSmuggled + kEnd;
        const bool valid = row.name == "valid";
        for (BareLineEndPolicy policy : kPolicies) {
            SCOPED_TRACE("row " + row.name + " (" + printable(row.bytes) + "), policy " +
                         policy_name(policy));
            const bool has_nul = row.bytes.find('\0') != std::string::npos;
            Outcome o = read_data(input, policy);
            ASSERT_TRUE(o.done);
            if (valid) {
                EXPECT_EQ(o.consumed, kPrefix.size() + row.bytes.size());
                EXPECT_EQ(o.out, "Subject: x\r\n\r\nbody\r\n");
                EXPECT_TRUE(no_flags(o.flags)) << describe(o.flags);
                continue;
            }
            // One message: it ends at the final CRLF.CRLF and nowhere before.
            EXPECT_EQ(o.consumed, input.size()) << "the variant ended the data early";
            Outcome cut = read_data(input.substr(0, input.size() - 1), policy);
            EXPECT_FALSE(cut.done) << "ended before the final end of data";

            EXPECT_EQ(o.out.find('\0'), std::string::npos);
            EXPECT_EQ(o.flags.nul, has_nul) << describe(o.flags);
            if (has_bare_or_nul(input)) {
                // Flagged under both policies; the policy decides what happens next.
                EXPECT_TRUE(o.flags.bare_line_end || o.flags.nul) << describe(o.flags);
            }
            // What is stored: nothing for a refused message, else the smuggled commands as
            // plain content with every line ending in CRLF.
            const bool refused =
                has_nul || (policy == BareLineEndPolicy::kReject && has_bare_or_nul(input));
            if (refused) {
                EXPECT_TRUE(o.out.empty()) << printable(o.out);
                continue;
            }
            EXPECT_TRUE(only_crlf_line_ends(o.out)) << printable(o.out);
            EXPECT_NE(o.out.find(kSmuggled), std::string::npos) << printable(o.out);
            EXPECT_EQ(o.out.rfind("smuggled\r\n\r\n"), o.out.size() - 12)
                << "content ends with the smuggled text and the empty line: " << printable(o.out);
            EXPECT_EQ(o.out.rfind("Subject: x\r\n\r\nbody", 0), 0u) << printable(o.out);
        }
    }
}

TEST(DataReaderSmuggling, EveryVariantIsSplitInvariant) {
    std::vector<EodRow> rows = load_eod_rows();
    ASSERT_FALSE(rows.empty());
    for (const EodRow& row : rows) {
        const std::string input = kPrefix + row.bytes + kSmuggled + kEnd;
        for (BareLineEndPolicy policy : kPolicies) {
            expect_split_invariant(Mode::kDotStuffed, policy, input);
        }
    }
}

TEST(DataReaderSmuggling, VariantAtStartOfData) {
    // The same sequences right at the start of DATA (the first line is a real line start).
    std::vector<EodRow> rows = load_eod_rows();
    ASSERT_FALSE(rows.empty());
    for (const EodRow& row : rows) {
        if (row.name == "valid") continue;
        std::string input = row.bytes + kSmuggled + kEnd;
        for (BareLineEndPolicy policy : kPolicies) {
            SCOPED_TRACE("row " + row.name + ", policy " + policy_name(policy));
            Outcome o = read_data(input, policy);
            EXPECT_TRUE(o.done);
            EXPECT_EQ(o.consumed, input.size());
            EXPECT_EQ(o.out.find('\0'), std::string::npos);
            const bool refused = row.bytes.find('\0') != std::string::npos ||
                                 (policy == BareLineEndPolicy::kReject && has_bare_or_nul(input));
            if (refused) {
                EXPECT_TRUE(o.out.empty()) << printable(o.out);
                EXPECT_TRUE(o.flags.bare_line_end || o.flags.nul) << describe(o.flags);
            } else {
                EXPECT_TRUE(only_crlf_line_ends(o.out)) << printable(o.out);
                EXPECT_NE(o.out.find(kSmuggled), std::string::npos) << printable(o.out);
            }
        }
    }
}

TEST(DataReaderSmuggling, ExhaustiveShortSequences) {
    // Every string of up to 6 octets over {CR, LF, ".", NUL, "x"} between a body and a real end
    // of data. The data must end exactly after the first CRLF "." CRLF whose first CRLF is a
    // real one (start of data counts as a line start), and nowhere else; the flags must say
    // exactly whether a bare CR, bare LF or NUL came before that end.
    const char kAlphabet[] = {'\r', '\n', '.', '\0', 'x'};
    std::vector<std::string> sequences = {""};
    for (size_t len = 1, begin = 0; len <= 6; ++len) {
        size_t end = sequences.size();
        for (size_t k = begin; k < end; ++k) {
            for (char c : kAlphabet) sequences.push_back(sequences[k] + c);
        }
        begin = end;
    }
    ASSERT_EQ(sequences.size(), 19531u);  // 1 + 5 + ... + 5^6
    size_t checked = 0;
    for (const std::string& seq : sequences) {
        const std::string input = "body" + seq + kEnd + "TAIL";
        const std::string framed = "\r\n" + input;
        const size_t expected_end = framed.find(kEnd) + kEnd.size() - 2;
        const std::string message = input.substr(0, expected_end);
        for (BareLineEndPolicy policy : kPolicies) {
            Outcome o = read_data(input, policy);
            ASSERT_TRUE(o.done) << printable(seq);
            ASSERT_EQ(o.consumed, expected_end) << printable(seq) << " " << policy_name(policy);
            ASSERT_EQ(o.flags.nul, message.find('\0') != std::string::npos) << printable(seq);
            ASSERT_EQ(o.flags.bare_line_end, !only_crlf_line_ends(message)) << printable(seq);
            if (!o.flags.nul && policy == BareLineEndPolicy::kNormalize) {
                ASSERT_TRUE(only_crlf_line_ends(o.out)) << printable(seq);
            }
            ++checked;
        }
        // Fed one octet at a time, the end is found at the same place.
        std::vector<std::string> bytes;
        for (char c : input) bytes.emplace_back(1, c);
        Outcome split = run_pieces(Mode::kDotStuffed, BareLineEndPolicy::kNormalize, bytes);
        ASSERT_EQ(split.consumed, expected_end) << printable(seq);
    }
    EXPECT_EQ(checked, 2 * sequences.size());
}

// ---- BDAT (chunked) --------------------------------------------------------------------------

TEST(DataReaderChunked, NoDotHandling) {
    std::string input = "a\r\n.\r\n..x\r\n.y\r\n";
    Outcome o = chunk(input);
    EXPECT_FALSE(o.done);
    EXPECT_EQ(o.consumed, input.size());
    EXPECT_EQ(o.out, input);
    EXPECT_TRUE(no_flags(o.flags)) << describe(o.flags);
}

TEST(DataReaderChunked, DotLineAtStartIsContent) {
    Outcome o = chunk(".\r\n");
    EXPECT_FALSE(o.done);
    EXPECT_EQ(o.out, ".\r\n");
}

TEST(DataReaderChunked, FeedUsesAllInput) {
    std::string out;
    DataReader reader(Mode::kChunked, BareLineEndPolicy::kReject, kNoLimit, out);
    const std::string input = "x\r\n.\r\nMAIL FROM:<a@b>\r\n";
    EXPECT_EQ(reader.feed(input), input.size());
    EXPECT_FALSE(reader.done());
    EXPECT_EQ(reader.feed(""), 0u);
    EXPECT_EQ(out, input);
}

TEST(DataReaderChunked, FinishAppendsMissingCrlf) {
    Outcome o = chunk("Subject: x\r\n\r\nno newline at end");
    EXPECT_EQ(o.out, "Subject: x\r\n\r\nno newline at end\r\n");
    EXPECT_FALSE(o.flags.bare_line_end);
    EXPECT_EQ(o.size, o.out.size());
}

TEST(DataReaderChunked, FinishKeepsExistingCrlf) {
    EXPECT_EQ(chunk("a\r\nb\r\n").out, "a\r\nb\r\n");
    EXPECT_EQ(chunk("").out, "");
    EXPECT_EQ(chunk("\r\n").out, "\r\n");
}

TEST(DataReaderChunked, WithoutFinishNothingIsAppended) {
    EXPECT_EQ(chunk("abc", BareLineEndPolicy::kReject, false).out, "abc");
}

TEST(DataReaderChunked, BareCrAtTheVeryEnd) {
    for (BareLineEndPolicy p : kPolicies) {
        SCOPED_TRACE(policy_name(p));
        Outcome o = chunk("abc\r", p, false);
        EXPECT_FALSE(o.flags.bare_line_end) << "undecided until more data or finish()";
        EXPECT_EQ(o.out, "abc");
        o = chunk("abc\r", p, true);
        EXPECT_TRUE(o.flags.bare_line_end);
        if (p == BareLineEndPolicy::kNormalize) {
            EXPECT_EQ(o.out, "abc\r\n");
        } else {
            EXPECT_TRUE(o.out.empty()) << printable(o.out);
        }
    }
}

TEST(DataReaderChunked, BareLineEndsNormalised) {
    Outcome o = chunk("a\nb\rc\r\r\nd\n", BareLineEndPolicy::kNormalize);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_EQ(o.out, "a\r\nb\r\nc\r\n\r\nd\r\n");
    EXPECT_TRUE(only_crlf_line_ends(o.out));
}

TEST(DataReaderChunked, BareLineEndsRefusedUnderReject) {
    const std::string input = "a\r\nb\nc\r\n";
    Outcome o = chunk(input, BareLineEndPolicy::kReject);
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_TRUE(o.out.empty()) << printable(o.out);
    EXPECT_EQ(o.consumed, input.size());
}

TEST(DataReaderChunked, CrLfAcrossChunksIsRealCrlf) {
    for (BareLineEndPolicy p : kPolicies) {
        SCOPED_TRACE(policy_name(p));
        Outcome o = run_pieces(Mode::kChunked, p, {"line one\r", "\nline two\r\n"});
        EXPECT_FALSE(o.flags.bare_line_end);
        EXPECT_EQ(o.out, "line one\r\nline two\r\n");
    }
}

TEST(DataReaderChunked, CrThenOtherOctetAcrossChunks) {
    Outcome o = run_pieces(Mode::kChunked, BareLineEndPolicy::kNormalize, {"one\r", "two\r\n"});
    EXPECT_TRUE(o.flags.bare_line_end);
    EXPECT_EQ(o.out, "one\r\ntwo\r\n");
}

TEST(DataReaderChunked, FlagsAndLimits) {
    EXPECT_TRUE(chunk("caf\xc3\xa9\r\n").flags.eight_bit);
    for (BareLineEndPolicy p : kPolicies) {
        Outcome o = chunk(bin("a\0b\r\n"), p);
        EXPECT_TRUE(o.flags.nul);
        EXPECT_TRUE(o.out.empty()) << policy_name(p);
    }
    EXPECT_TRUE(chunk(std::string(999, 'x') + "\r\n").flags.long_line);
    EXPECT_FALSE(chunk(std::string(998, 'x') + "\r\n").flags.long_line);
    EXPECT_TRUE(chunk(std::string(999, 'x')).flags.long_line);

    Outcome o = chunk("0123456789\r\n", BareLineEndPolicy::kReject, true, 11);
    EXPECT_TRUE(o.flags.too_big);
    EXPECT_TRUE(o.out.empty());
    EXPECT_EQ(o.size, 12u);
    o = chunk("0123456789\r\n", BareLineEndPolicy::kReject, true, 12);
    EXPECT_FALSE(o.flags.too_big);
    EXPECT_EQ(o.out, "0123456789\r\n");
}

TEST(DataReaderChunked, FinishPushingOverTheLimit) {
    // The CRLF that finish() adds counts against the limit too.
    Outcome o = chunk("0123456789", BareLineEndPolicy::kReject, true, 11);
    EXPECT_TRUE(o.flags.too_big);
    EXPECT_TRUE(o.out.empty());
}

TEST(DataReaderChunked, SplitInvariance) {
    const std::string inputs[] = {
        "a\r\n.\r\n..x\r\n", "a\nb\rc\r\r\nd\n", "ends with cr\r",
        "no line end",       bin("nul\0\r\n\0"), "\r\n.\r\n",
    };
    for (const std::string& input : inputs) {
        for (BareLineEndPolicy p : kPolicies) {
            expect_split_invariant(Mode::kChunked, p, input, kNoLimit, true);
        }
    }
}

}  // namespace
}  // namespace postern::smtp
