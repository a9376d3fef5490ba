// Unit tests for server reply parsing (proxy/smtp/reply_parser.hpp).
#include "proxy/smtp/reply_parser.hpp"

#include <gtest/gtest.h>

#include <string>

namespace postern::smtp {
namespace {

using Status = ReplyParser::Status;

TEST(ReplyParser, SingleLine) {
    auto r = ReplyParser::next("250 2.1.0 Ok\r\nNEXT");
    ASSERT_EQ(r.status, Status::kReply);
    EXPECT_EQ(r.reply.code, 250);
    EXPECT_EQ(r.reply.enhanced, "2.1.0");
    EXPECT_EQ(r.reply.lines, std::vector<std::string>{"Ok"});
    EXPECT_EQ(r.consumed, 14u);
}

TEST(ReplyParser, MultiLineEhlo) {
    std::string ehlo = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 CHUNKING\r\n";
    auto r = ReplyParser::next(ehlo);
    ASSERT_EQ(r.status, Status::kReply);
    EXPECT_EQ(r.reply.code, 250);
    EXPECT_EQ(r.reply.enhanced, "");
    EXPECT_EQ(r.reply.lines,
              (std::vector<std::string>{"mx.example", "PIPELINING", "SIZE 10240000", "CHUNKING"}));
    EXPECT_EQ(r.consumed, ehlo.size());
}

TEST(ReplyParser, CodeAloneAndEmptyText) {
    auto r = ReplyParser::next("354\r\n");
    ASSERT_EQ(r.status, Status::kReply);
    EXPECT_EQ(r.reply.code, 354);
    EXPECT_EQ(r.reply.lines, std::vector<std::string>{""});
}

TEST(ReplyParser, EnhancedCodeOnEveryLineOnly) {
    auto same = ReplyParser::next("550-5.7.1 first\r\n550 5.7.1 second\r\n");
    ASSERT_EQ(same.status, Status::kReply);
    EXPECT_EQ(same.reply.enhanced, "5.7.1");
    EXPECT_EQ(same.reply.lines, (std::vector<std::string>{"first", "second"}));
    auto mixed = ReplyParser::next("550-5.7.1 first\r\n550 second\r\n");
    ASSERT_EQ(mixed.status, Status::kReply);
    EXPECT_EQ(mixed.reply.enhanced, "");
    // The class of the enhanced code must match the reply's.
    auto wrong_class = ReplyParser::next("550 2.0.0 odd\r\n");
    EXPECT_EQ(wrong_class.reply.enhanced, "");
    EXPECT_EQ(wrong_class.reply.lines, std::vector<std::string>{"2.0.0 odd"});
    // A dotted number that is not x.y.z is text.
    EXPECT_EQ(ReplyParser::next("250 2.0 ok\r\n").reply.enhanced, "");
    EXPECT_EQ(ReplyParser::next("250 2.0.0\r\n").reply.enhanced, "2.0.0");
}

TEST(ReplyParser, NeedsMore) {
    EXPECT_EQ(ReplyParser::next("").status, Status::kNeedMore);
    EXPECT_EQ(ReplyParser::next("250 Ok").status, Status::kNeedMore);
    EXPECT_EQ(ReplyParser::next("250-a\r\n").status, Status::kNeedMore);
    EXPECT_EQ(ReplyParser::next("250-a\r\n250 b\r").status, Status::kNeedMore);
}

TEST(ReplyParser, EveryPrefixOfAReplyNeedsMore) {
    std::string reply = "250-mx.example\r\n250-8BITMIME\r\n250 DSN\r\n";
    for (size_t n = 0; n < reply.size(); ++n) {
        EXPECT_EQ(ReplyParser::next(reply.substr(0, n)).status, Status::kNeedMore) << n;
    }
    EXPECT_EQ(ReplyParser::next(reply).status, Status::kReply);
}

TEST(ReplyParser, ProtocolErrors) {
    EXPECT_EQ(ReplyParser::next("250 Ok\n").status, Status::kError);      // bare LF
    EXPECT_EQ(ReplyParser::next("250 O\rk\r\n").status, Status::kError);  // bare CR
    EXPECT_EQ(ReplyParser::next("25 Ok\r\n").status, Status::kError);     // short code
    EXPECT_EQ(ReplyParser::next("650 Ok\r\n").status, Status::kError);    // bad class
    EXPECT_EQ(ReplyParser::next("2x0 Ok\r\n").status, Status::kError);
    EXPECT_EQ(ReplyParser::next("250_Ok\r\n").status, Status::kError);          // separator
    EXPECT_EQ(ReplyParser::next("250-a\r\n251 b\r\n").status, Status::kError);  // codes differ
    EXPECT_EQ(ReplyParser::next(std::string("250 a\0b\r\n", 9)).status, Status::kError);
}

TEST(ReplyParser, LineLengthBound) {
    std::string ok = "250 " + std::string(kMaxReplyLine - 6, 'x') + "\r\n";
    ASSERT_EQ(ok.size(), kMaxReplyLine);
    EXPECT_EQ(ReplyParser::next(ok).status, Status::kReply);
    std::string too_long = "250 " + std::string(kMaxReplyLine - 5, 'x') + "\r\n";
    EXPECT_EQ(ReplyParser::next(too_long).status, Status::kError);
    // Known too long before its end arrives: no need to wait for more.
    EXPECT_EQ(ReplyParser::next("250 " + std::string(600, 'x')).status, Status::kError);
}

TEST(ReplyParser, LineCountBound) {
    std::string hundred;
    for (size_t i = 0; i + 1 < kMaxReplyLines; ++i) hundred += "250-x\r\n";
    EXPECT_EQ(ReplyParser::next(hundred + "250 x\r\n").status, Status::kReply);
    EXPECT_EQ(ReplyParser::next(hundred + "250-x\r\n250 x\r\n").status, Status::kError);
}

}  // namespace
}  // namespace postern::smtp
