// The spool's per-recipient state lines: format, read back, and what a torn or damaged file
// does (nothing beyond the damaged line).
#include "proxy/queue/spool_record.hpp"

#include <gtest/gtest.h>

namespace postern::queue {
namespace {

std::vector<RecipientState> three() {
    return std::vector<RecipientState>(3);
}

TEST(SpoolRecord, FormatLines) {
    EXPECT_EQ(format_state_line(0, {RecipientStatus::kDelivered, "250 2.0.0 Ok"}), "D 0\n");
    EXPECT_EQ(format_state_line(12, {RecipientStatus::kFailed, "550 5.1.1 No such user"}),
              "F 12 550 5.1.1 No such user\n");
    // A reply can never split the record.
    EXPECT_EQ(format_state_line(1, {RecipientStatus::kFailed, "550 a\r\nb\nc"}),
              "F 1 550 a  b c\n");
}

TEST(SpoolRecord, RoundTrip) {
    std::string text = format_state_line(2, {RecipientStatus::kFailed, "554 5.7.1 nope"}) +
                       format_state_line(0, {RecipientStatus::kDelivered, ""});
    auto r = three();
    apply_state_lines(text, r);
    EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
    EXPECT_EQ(r[1].status, RecipientStatus::kPending);
    EXPECT_EQ(r[2].status, RecipientStatus::kFailed);
    EXPECT_EQ(r[2].reply, "554 5.7.1 nope");
}

TEST(SpoolRecord, TornLastLineIsIgnored) {
    auto r = three();
    apply_state_lines("D 0\nD 1", r);  // the crash came before the newline of "D 1"
    EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
    EXPECT_EQ(r[1].status, RecipientStatus::kPending);
}

TEST(SpoolRecord, DamagedLinesAreSkipped) {
    auto r = three();
    apply_state_lines("X 0\nD\nD x\nD 7\nD -1\nD 1 trailing\nD 01\n\nF 2 550 ok\n", r);
    EXPECT_EQ(r[0].status, RecipientStatus::kPending);
    EXPECT_EQ(r[1].status, RecipientStatus::kDelivered);  // "D 01" and "D 1 trailing" both say 1
    EXPECT_EQ(r[2].status, RecipientStatus::kFailed);
}

TEST(SpoolRecord, BouncedMarksOnlyFailedRecipients) {
    auto r = three();
    apply_state_lines("F 0 550 no\nB 0\nD 1\nB 1\nB 2\n", r);
    EXPECT_TRUE(r[0].bounced);
    EXPECT_EQ(r[0].status, RecipientStatus::kFailed);
    EXPECT_FALSE(r[1].bounced);  // delivered: nothing to report
    EXPECT_FALSE(r[2].bounced);  // still pending
    EXPECT_EQ(format_bounced_line(7), "B 7\n");
}

TEST(SpoolRecord, LaterLineWins) {
    auto r = three();
    apply_state_lines("F 0 451 first\nD 0\n", r);
    EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
}

TEST(SpoolRecord, MessageLinesGiveAttemptsHoldAndWarning) {
    auto r = three();
    MessageFlags flags;
    apply_state_lines(format_attempts_line(2, "451 4.3.0 busy\r\nnow") + "H\nD 0\n" +
                          format_attempts_line(3, "connection refused") + "W\n",
                      r, &flags);
    EXPECT_EQ(flags.attempts, 3u);
    EXPECT_EQ(flags.last_error, "connection refused");
    EXPECT_TRUE(flags.held);
    EXPECT_TRUE(flags.delay_warned);
    EXPECT_EQ(r[0].status, RecipientStatus::kDelivered);
    apply_state_lines("R\nA x oops\nA 9", r, &flags);  // a bad count and a torn line: ignored
    EXPECT_FALSE(flags.held);
    EXPECT_EQ(flags.attempts, 3u);
}

TEST(SpoolRecord, AttemptsLineKeepsTheErrorOnOneLine) {
    EXPECT_EQ(format_attempts_line(1, "a\r\nb"), "A 1 a  b\n");
}

}  // namespace
}  // namespace postern::queue
