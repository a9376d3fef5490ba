// Unit tests for strict command-line framing (proxy/smtp/line_reader.hpp).
#include "proxy/smtp/line_reader.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace postern::smtp {
namespace {

using Status = CommandReader::Status;

// Feeds `buffer` through reader the way a session does: drop `consumed` after each call, stop
// when a call needs more input. Returns every non-kNeedMore result, lines copied.
struct Event {
    Status status;
    std::string line;
};

std::vector<Event> drain(CommandReader& reader, std::string& buffer) {
    std::vector<Event> events;
    while (true) {
        CommandReader::Result r = reader.next(buffer);
        std::string line(r.line);
        buffer.erase(0, r.consumed);
        if (r.status == Status::kNeedMore) break;
        events.push_back({r.status, line});
    }
    return events;
}

TEST(CommandReader, CompleteLine) {
    CommandReader reader;
    std::string buffer = "EHLO client.example\r\n";
    CommandReader::Result r = reader.next(buffer);
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "EHLO client.example");
    EXPECT_EQ(r.consumed, buffer.size());
}

TEST(CommandReader, EmptyLine) {
    CommandReader reader;
    CommandReader::Result r = reader.next("\r\n");
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "");
    EXPECT_EQ(r.consumed, 2u);
}

TEST(CommandReader, PartialLineNeedsMore) {
    CommandReader reader;
    for (std::string_view partial : {"", "E", "EHLO x", "EHLO x\r"}) {
        CommandReader::Result r = reader.next(partial);
        EXPECT_EQ(r.status, Status::kNeedMore) << partial;
        EXPECT_EQ(r.consumed, 0u) << partial;  // nothing may be dropped yet
    }
    CommandReader::Result r = reader.next("EHLO x\r\n");
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "EHLO x");
}

TEST(CommandReader, SeveralLinesInOneBuffer) {
    CommandReader reader;
    std::string buffer = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nQUI";
    CommandReader::Result r = reader.next(buffer);
    ASSERT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "MAIL FROM:<a@b>");
    EXPECT_EQ(r.consumed, 17u);
    std::string_view rest = std::string_view(buffer).substr(r.consumed);
    r = reader.next(rest);
    ASSERT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "RCPT TO:<c@d>");
    rest = rest.substr(r.consumed);
    r = reader.next(rest);
    ASSERT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "DATA");
    rest = rest.substr(r.consumed);
    EXPECT_EQ(rest, "QUI");
    r = reader.next(rest);
    EXPECT_EQ(r.status, Status::kNeedMore);
    EXPECT_EQ(r.consumed, 0u);
}

TEST(CommandReader, BareLfIsBadLineEnd) {
    CommandReader reader;
    std::string buffer = "MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n";
    CommandReader::Result r = reader.next(buffer);
    EXPECT_EQ(r.status, Status::kBadLineEnd);
    EXPECT_EQ(r.consumed, 16u);  // up to and including the LF
    EXPECT_TRUE(r.line.empty());
    // The next line is read normally.
    r = reader.next(std::string_view(buffer).substr(16));
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "RCPT TO:<c@d>");
}

TEST(CommandReader, LoneLfIsBadLineEnd) {
    CommandReader reader;
    CommandReader::Result r = reader.next("\nNOOP\r\n");
    EXPECT_EQ(r.status, Status::kBadLineEnd);
    EXPECT_EQ(r.consumed, 1u);
}

TEST(CommandReader, BareCrInsideLineRefusesWholeLine) {
    CommandReader reader;
    std::string buffer = "MAIL FROM:<a@b>\rRCPT TO:<c@d>\r\nNOOP\r\n";
    CommandReader::Result r = reader.next(buffer);
    EXPECT_EQ(r.status, Status::kBadLineEnd);
    EXPECT_EQ(r.consumed, buffer.find('\n') + 1);
    r = reader.next(std::string_view(buffer).substr(r.consumed));
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "NOOP");
}

TEST(CommandReader, BareCrWithoutLfWaits) {
    CommandReader reader;
    // CR then other text: nothing decided until the LF arrives.
    CommandReader::Result r = reader.next("NOOP\rx");
    EXPECT_EQ(r.status, Status::kNeedMore);
    EXPECT_EQ(r.consumed, 0u);
}

TEST(CommandReader, CrCrLfIsBadLineEnd) {
    CommandReader reader;
    CommandReader::Result r = reader.next("NOOP\r\r\n");
    EXPECT_EQ(r.status, Status::kBadLineEnd);
    EXPECT_EQ(r.consumed, 7u);
}

TEST(CommandReader, NulIsBadLineEnd) {
    CommandReader reader;
    std::string buffer("MAIL FROM:<a@b>\0\r\n", 18);
    CommandReader::Result r = reader.next(buffer);
    EXPECT_EQ(r.status, Status::kBadLineEnd);
    EXPECT_EQ(r.consumed, 18u);
}

TEST(CommandReader, OtherControlsAreBadLineEnd) {
    for (char c : {'\t', '\x01', '\x1b', '\x7f'}) {
        CommandReader reader;
        std::string buffer = std::string("NOOP") + c + "x\r\n";
        CommandReader::Result r = reader.next(buffer);
        EXPECT_EQ(r.status, Status::kBadLineEnd) << static_cast<int>(c);
        EXPECT_EQ(r.consumed, buffer.size());
    }
}

TEST(CommandReader, Utf8OctetsAreAllowed) {
    CommandReader reader;
    CommandReader::Result r = reader.next("RCPT TO:<j\xc3\xb6rg@example.com>\r\n");
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "RCPT TO:<j\xc3\xb6rg@example.com>");
}

TEST(CommandReader, ExactlyAtLimit) {
    // The limit counts the CRLF: a line of max_line octets including CRLF is fine.
    constexpr size_t kLimit = 32;
    CommandReader reader(kLimit);
    std::string line(kLimit - 2, 'a');
    std::string buffer = line + "\r\n";
    CommandReader::Result r = reader.next(buffer);
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, line);
    EXPECT_EQ(r.consumed, kLimit);

    std::string longer(kLimit - 1, 'a');
    r = reader.next(longer + "\r\n");
    EXPECT_EQ(r.status, Status::kTooLong);
    EXPECT_EQ(r.consumed, kLimit + 1);
}

TEST(CommandReader, DefaultLimits) {
    EXPECT_EQ(kMaxCommandLine, 512u);
    CommandReader reader;  // kMaxExtendedCommandLine
    std::string ok(kMaxExtendedCommandLine - 2, 'x');
    EXPECT_EQ(reader.next(ok + "\r\n").status, Status::kLine);
    std::string too_long(kMaxExtendedCommandLine - 1, 'x');
    EXPECT_EQ(reader.next(too_long + "\r\n").status, Status::kTooLong);

    CommandReader strict(kMaxCommandLine);
    EXPECT_EQ(strict.next(std::string(510, 'x') + "\r\n").status, Status::kLine);
    EXPECT_EQ(strict.next(std::string(511, 'x') + "\r\n").status, Status::kTooLong);
}

TEST(CommandReader, OneOctetOverTheLimitArrivingInPieces) {
    constexpr size_t kLimit = 16;
    CommandReader reader(kLimit);
    // kLimit - 1 octets of text, then CRLF: one octet too long, whatever the split.
    std::string buffer(kLimit - 1, 'a');
    std::vector<Event> events = drain(reader, buffer);
    EXPECT_TRUE(events.empty());
    buffer += "\r";
    events = drain(reader, buffer);
    EXPECT_TRUE(events.empty());
    buffer += "\nNOOP\r\n";
    events = drain(reader, buffer);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].status, Status::kTooLong);
    EXPECT_EQ(events[1].status, Status::kLine);
    EXPECT_EQ(events[1].line, "NOOP");
}

TEST(CommandReader, OverLimitWithoutLfStartsDiscarding) {
    constexpr size_t kLimit = 16;
    CommandReader reader(kLimit);
    CommandReader::Result r = reader.next(std::string(kLimit + 1, 'a'));
    EXPECT_EQ(r.status, Status::kNeedMore);
    EXPECT_EQ(r.consumed, kLimit + 1);  // dropped: never buffered past the limit
    r = reader.next("tail\r\n");
    EXPECT_EQ(r.status, Status::kTooLong);
    EXPECT_EQ(r.consumed, 6u);
}

TEST(CommandReader, OverLongLineAcrossSeveralCalls) {
    constexpr size_t kLimit = 64;
    CommandReader reader(kLimit);

    // First piece: more than the limit, no LF. Everything is dropped.
    std::string piece1(100, 'a');
    CommandReader::Result r = reader.next(piece1);
    EXPECT_EQ(r.status, Status::kNeedMore);
    EXPECT_EQ(r.consumed, piece1.size());

    // Middle pieces, even short ones and ones ending in CR, are dropped whole.
    for (std::string_view piece : {"bbbb", "c", "dddd\r"}) {
        r = reader.next(piece);
        EXPECT_EQ(r.status, Status::kNeedMore) << piece;
        EXPECT_EQ(r.consumed, piece.size()) << piece;
    }

    // The LF of the long line: one kTooLong, consuming up to the LF only.
    std::string last = "\nNOOP\r\n";
    r = reader.next(last);
    EXPECT_EQ(r.status, Status::kTooLong);
    EXPECT_EQ(r.consumed, 1u);
    EXPECT_TRUE(r.line.empty());

    // Normal lines again.
    r = reader.next(std::string_view(last).substr(1));
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "NOOP");

    // And a short line later is not affected.
    r = reader.next("QUIT\r\n");
    EXPECT_EQ(r.status, Status::kLine);
    EXPECT_EQ(r.line, "QUIT");
}

TEST(CommandReader, OverLongLineWhoseLfArrivesInTheSameBufferAsMore) {
    constexpr size_t kLimit = 20;
    CommandReader reader(kLimit);
    std::string buffer = std::string(30, 'z') + "\r\nRSET\r\n" + std::string(25, 'y');
    std::vector<Event> events = drain(reader, buffer);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].status, Status::kTooLong);
    EXPECT_EQ(events[1].status, Status::kLine);
    EXPECT_EQ(events[1].line, "RSET");
    // The tail (25 octets, over the limit, no LF) was dropped; the reader now discards.
    EXPECT_TRUE(buffer.empty());
    buffer = "yyy\r\nNOOP\r\n";
    events = drain(reader, buffer);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].status, Status::kTooLong);
    EXPECT_EQ(events[1].status, Status::kLine);
    EXPECT_EQ(events[1].line, "NOOP");
}

TEST(CommandReader, ByteByByteFeedingGivesSameLines) {
    std::string input = "EHLO a\r\nMAIL FROM:<x@y>\r\nbad\nRCPT TO:<z@w>\r\n";
    CommandReader reader;
    std::string buffer;
    std::vector<Event> events;
    for (char c : input) {
        buffer += c;
        for (Event& e : drain(reader, buffer)) events.push_back(e);
    }
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0].line, "EHLO a");
    EXPECT_EQ(events[1].line, "MAIL FROM:<x@y>");
    EXPECT_EQ(events[2].status, Status::kBadLineEnd);
    EXPECT_EQ(events[3].status, Status::kLine);
    EXPECT_EQ(events[3].line, "RCPT TO:<z@w>");
    EXPECT_TRUE(buffer.empty());
}

TEST(CommandReader, ByteByByteOverLongLine) {
    constexpr size_t kLimit = 10;
    CommandReader reader(kLimit);
    std::string input = std::string(50, 'q') + "\r\nNOOP\r\n";
    std::string buffer;
    std::vector<Event> events;
    for (char c : input) {
        buffer += c;
        for (Event& e : drain(reader, buffer)) events.push_back(e);
        EXPECT_LE(buffer.size(), kLimit + 1);  // an over-long line is never buffered whole
    }
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].status, Status::kTooLong);
    EXPECT_EQ(events[1].status, Status::kLine);
    EXPECT_EQ(events[1].line, "NOOP");
}

}  // namespace
}  // namespace postern::smtp
