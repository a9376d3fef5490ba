// Unit tests for the filter vocabulary (filters/filter.hpp): the reply check that keeps a filter
// from answering a reject with 4xx (RFC 5321 4.2.1, RFC 3463 enhanced codes), the names of
// actions, stages and events, and the split of a mailbox into local part and domain.
#include "filters/filter.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace postern::filters {
namespace {

FilterReply reply(int code, std::string enhanced = "", std::string text = "text") {
    return FilterReply{code, std::move(enhanced), std::move(text)};
}

// The problem check_reply finds, or "" when the reply suits the action.
std::string problem(Action action, const FilterReply& r) {
    return check_reply(action, r).value_or("");
}

// ---- check_reply: the code's class against the action -------------------------------------------

TEST(FilterCheckReply, RejectNeeds5xx) {
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1")), "");
    EXPECT_EQ(problem(Action::kReject, reply(554)), "");
    EXPECT_EQ(problem(Action::kReject, reply(451, "4.7.1")), "a reject needs a 5xx code, not 451");
    EXPECT_NE(problem(Action::kReject, reply(250)), "");
    EXPECT_NE(problem(Action::kReject, reply(0)), "");
    EXPECT_NE(problem(Action::kReject, reply(650)), "") << "6xx is no reply class";
}

TEST(FilterCheckReply, TempfailNeeds4xx) {
    EXPECT_EQ(problem(Action::kTempfail, reply(451, "4.7.1")), "");
    EXPECT_EQ(problem(Action::kTempfail, reply(421)), "");
    EXPECT_EQ(problem(Action::kTempfail, reply(550, "5.7.1")),
              "a tempfail needs a 4xx code, not 550");
    EXPECT_NE(problem(Action::kTempfail, reply(354)), "");
}

TEST(FilterCheckReply, DisconnectNeeds421Or5xx) {
    EXPECT_EQ(problem(Action::kDisconnect, reply(421, "4.7.0")), "");
    EXPECT_EQ(problem(Action::kDisconnect, reply(554, "5.7.1")), "");
    EXPECT_EQ(problem(Action::kDisconnect, reply(550)), "");
    EXPECT_EQ(problem(Action::kDisconnect, reply(450, "4.7.0")),
              "a disconnect needs 421 or a 5xx code, not 450");
    EXPECT_NE(problem(Action::kDisconnect, reply(451)), "");
    EXPECT_NE(problem(Action::kDisconnect, reply(221)), "");
}

// ---- check_reply: the enhanced status code (RFC 3463 class.subject.detail) ----------------------

TEST(FilterCheckReply, EnhancedClassMustMatchTheReply) {
    EXPECT_EQ(problem(Action::kReject, reply(550, "4.7.1")),
              "enhanced code 4.7.1 does not match reply code 550");
    EXPECT_NE(problem(Action::kTempfail, reply(451, "5.7.1")), "");
    EXPECT_NE(problem(Action::kDisconnect, reply(421, "5.7.0")), "");
    EXPECT_NE(problem(Action::kReject, reply(550, "2.0.0")), "");
    EXPECT_EQ(problem(Action::kDisconnect, reply(421, "4.4.2")), "");
}

TEST(FilterCheckReply, EnhancedCodeSyntax) {
    // Subject and detail have one to three digits.
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.1.1")), "");
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.123.123")), "");
    for (const char* bad :
         {"5", "5.", "5.7", "5.7.", "5..1", ".7.1", "55.7.1", "5.1234.1", "5.1.1000", "5.a.1",
          "5.1.b", "5.1.1 ", " 5.1.1", "5-1-1", "5.1.1.1", "5.7.1x"}) {
        std::string p = problem(Action::kReject, reply(550, bad));
        EXPECT_NE(p.find("is not class.subject.detail"), std::string::npos)
            << "\"" << bad << "\": " << p;
    }
    EXPECT_NE(problem(Action::kReject, reply(550, "x.1.1")), "") << "a class that is no digit";
}

TEST(FilterCheckReply, TextIsOnePrintableLine) {
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", "")), "");
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", "Relaying denied; see <https://x>")),
              "");
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", "\xc3\xa9t\xc3\xa9")), "")
        << "octets above 127 are not control characters";
    for (const char* bad : {"bad\r\n250 ok", "line\nbreak", "tab\there", "nul", "del\x7f"}) {
        std::string text = bad;
        if (text == "nul") text = std::string("a\0b", 3);
        EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", text)),
                  "reply text holds a control character")
            << bad;
    }
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", std::string(400, 'x'))), "");
    EXPECT_EQ(problem(Action::kReject, reply(550, "5.7.1", std::string(401, 'x'))),
              "reply text is longer than 400 octets");
}

// ---- names --------------------------------------------------------------------------------------

TEST(FilterNames, Actions) {
    EXPECT_STREQ(action_name(Action::kContinue), "continue");
    EXPECT_STREQ(action_name(Action::kAccept), "accept");
    EXPECT_STREQ(action_name(Action::kReject), "reject");
    EXPECT_STREQ(action_name(Action::kTempfail), "tempfail");
    EXPECT_STREQ(action_name(Action::kDiscard), "discard");
    EXPECT_STREQ(action_name(Action::kDisconnect), "disconnect");
}

TEST(FilterNames, StagesInProtocolOrder) {
    const char* expected[kStageCount] = {"connect", "helo", "auth", "mail_from", "rcpt_to", "data"};
    for (int i = 0; i < kStageCount; ++i) {
        EXPECT_STREQ(stage_name(static_cast<Stage>(i)), expected[i]) << i;
    }
    EXPECT_EQ(static_cast<int>(Stage::kData) + 1, kStageCount);
}

TEST(FilterNames, Events) {
    EXPECT_STREQ(event_name(Event::kQueued), "queued");
    EXPECT_STREQ(event_name(Event::kDelivered), "delivered");
    EXPECT_STREQ(event_name(Event::kFailed), "failed");
}

// ---- Address::from_mailbox ----------------------------------------------------------------------

TEST(FilterAddress, SplitsAtTheLastAt) {
    Address a = Address::from_mailbox("user@example.com");
    EXPECT_EQ(a.address, "user@example.com");
    EXPECT_EQ(a.local, "user");
    EXPECT_EQ(a.domain, "example.com");
    EXPECT_TRUE(a.params.empty());

    // A quoted local part may hold '@': the domain follows the last one.
    Address q = Address::from_mailbox("\"a@b\"@example.org");
    EXPECT_EQ(q.local, "\"a@b\"");
    EXPECT_EQ(q.domain, "example.org");
}

TEST(FilterAddress, NullSenderAndBareLocalPart) {
    Address null_sender = Address::from_mailbox("");
    EXPECT_EQ(null_sender.address, "");
    EXPECT_EQ(null_sender.local, "");
    EXPECT_EQ(null_sender.domain, "");

    Address postmaster = Address::from_mailbox("postmaster");
    EXPECT_EQ(postmaster.address, "postmaster");
    EXPECT_EQ(postmaster.local, "postmaster");
    EXPECT_EQ(postmaster.domain, "");
}

TEST(FilterAddress, KeepsTheDomainAsWritten) {
    Address a = Address::from_mailbox("User@Example.COM");
    EXPECT_EQ(a.local, "User");
    EXPECT_EQ(a.domain, "Example.COM");
    Address empty_domain = Address::from_mailbox("user@");
    EXPECT_EQ(empty_domain.local, "user");
    EXPECT_EQ(empty_domain.domain, "");
}

}  // namespace
}  // namespace postern::filters
