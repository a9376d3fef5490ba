// The bounce builder (RFC 3464): structure, per-recipient fields, the original as headers or in
// full, and the status codes taken from the replies.
#include "proxy/queue/dsn.hpp"

#include <gtest/gtest.h>

#include "proxy/smtp/esmtp_params.hpp"

namespace postern::queue {
namespace {

Envelope envelope(const std::string& mail_args) {
    Envelope e;
    e.queue_id = "01HGW2N7EXAMPL";
    auto mail = smtp::parse_mail_from(mail_args, 1 << 20);
    EXPECT_FALSE(mail.error) << mail_args;
    e.mail_from = mail.value;
    for (const char* r :
         {"TO:<ok@example.net>", "TO:<gone@example.net> ORCPT=rfc822;Gone+2Bx@example.net",
          "TO:<late@example.net>"}) {
        auto rcpt = smtp::parse_rcpt_to(r, false);
        EXPECT_FALSE(rcpt.error) << r;
        e.recipients.push_back(rcpt.value);
    }
    e.received_at = std::chrono::system_clock::time_point(std::chrono::seconds(1704164645));
    return e;
}

const std::string kOriginal =
    "Received: from a\r\n\tby b; date\r\n"
    "Subject: hello\r\nMessage-ID: <m1@example.com>\r\n\r\nbody line\r\n.dot\r\n";

std::string build(const Envelope& e, std::vector<ReportedRecipient> failed) {
    DsnInput in;
    in.reporting_mta = "relay.example";
    in.envelope = &e;
    in.recipients = std::move(failed);
    in.original = kOriginal;
    in.now = std::chrono::system_clock::time_point(std::chrono::seconds(1704168245));
    in.unique = "01HGW2N7BOUNCE";
    return build_dsn(in);
}

size_t count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

TEST(Dsn, StatusFromTheReply) {
    EXPECT_EQ(dsn_status({0, "550 5.1.1 No such user", false}), "5.1.1");
    EXPECT_EQ(dsn_status({0, "554 5.7.1", false}), "5.7.1");
    EXPECT_EQ(dsn_status({0, "550 No such user", false}), "5.0.0");
    EXPECT_EQ(dsn_status({0, "550 5.1.1000 odd", false}), "5.0.0");
    EXPECT_EQ(dsn_status({0, "expired: not delivered within max_age", true}), "4.4.7");
}

TEST(Dsn, StatusKeepsTheActionsClass) {
    EXPECT_EQ(dsn_status({0, "451 4.3.0 try later", false}, DsnAction::kDelayed), "4.3.0");
    EXPECT_EQ(dsn_status({0, "connection refused", false}, DsnAction::kDelayed), "4.0.0");
    EXPECT_EQ(dsn_status({0, "250 2.0.0 Ok: queued", false}, DsnAction::kRelayed), "2.0.0");
    EXPECT_EQ(dsn_status({0, "250 2.6.0 queued", false}, DsnAction::kRelayed), "2.6.0");
    EXPECT_EQ(dsn_status({0, "550 4.3.0 odd", false}, DsnAction::kFailed), "5.0.0");
}

TEST(Dsn, WantsNotice) {
    auto rcpt = [](const char* args) { return smtp::parse_rcpt_to(args, false).value; };
    using A = DsnAction;
    EXPECT_TRUE(wants_notice(rcpt("TO:<a@b.example>"), A::kFailed));
    EXPECT_TRUE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=FAILURE,DELAY"), A::kFailed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=NEVER"), A::kFailed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=SUCCESS"), A::kFailed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=DELAY"), A::kFailed));
    EXPECT_TRUE(wants_notice(rcpt("TO:<a@b.example>"), A::kDelayed));
    EXPECT_TRUE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=DELAY"), A::kDelayed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=FAILURE"), A::kDelayed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=NEVER"), A::kDelayed));
    EXPECT_FALSE(wants_notice(rcpt("TO:<a@b.example>"), A::kRelayed));
    EXPECT_TRUE(wants_notice(rcpt("TO:<a@b.example> NOTIFY=SUCCESS,FAILURE"), A::kRelayed));
}

TEST(Dsn, DelayedNoticeSaysWhenPosternGivesUp) {
    Envelope e = envelope("FROM:<alice@example.com> RET=FULL");
    DsnInput in;
    in.action = DsnAction::kDelayed;
    in.reporting_mta = "relay.example";
    in.envelope = &e;
    in.recipients = {{0, "451 4.4.1 Upstream unavailable", false}};
    in.original = kOriginal;
    in.now = std::chrono::system_clock::time_point(std::chrono::seconds(1704168245));
    in.will_retry_until = std::chrono::system_clock::time_point(std::chrono::seconds(1704600245));
    in.unique = "01HGW2N7DELAY";
    const std::string dsn = build_dsn(in);
    EXPECT_NE(dsn.find("Subject: Delayed Mail (still being retried)\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("Action: delayed\r\nStatus: 4.4.1\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("Will-Retry-Until: Sun, 7 Jan 2024 04:04:05 +0000\r\n"), std::string::npos)
        << dsn;
    // RET=FULL is for failures only: a delay notice carries the headers.
    EXPECT_NE(dsn.find("Content-Type: text/rfc822-headers"), std::string::npos);
    EXPECT_EQ(dsn.find("body line"), std::string::npos);
}

TEST(Dsn, RelayedNotice) {
    Envelope e = envelope("FROM:<alice@example.com>");
    DsnInput in;
    in.action = DsnAction::kRelayed;
    in.reporting_mta = "relay.example";
    in.envelope = &e;
    in.recipients = {{0, "250 2.0.0 Ok: queued as 123", false}};
    in.original = kOriginal;
    in.unique = "01HGW2N7RELAY";
    const std::string dsn = build_dsn(in);
    EXPECT_NE(dsn.find("Subject: Successful Mail Delivery Report\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("Action: relayed\r\nStatus: 2.0.0\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 123\r\n"),
              std::string::npos);
}

TEST(Dsn, StructureAndFields) {
    Envelope e = envelope("FROM:<alice@example.com> ENVID=abc+2Bdef");
    std::string dsn = build(e, {{1, "550 5.1.1 <gone@example.net>: No such user", false},
                                {2, "expired: not delivered within max_age", true}});
    // Headers of the bounce itself.
    EXPECT_EQ(dsn.rfind("From: Mail Delivery System <MAILER-DAEMON@relay.example>\r\n", 0), 0u);
    EXPECT_NE(dsn.find("\r\nTo: <alice@example.com>\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("\r\nAuto-Submitted: auto-replied\r\n"), std::string::npos);
    EXPECT_NE(dsn.find("Content-Type: multipart/report; report-type=delivery-status;\r\n"
                       "\tboundary=\"01HGW2N7BOUNCE/relay.example\"\r\n"),
              std::string::npos);
    // Three parts and the closing boundary.
    EXPECT_EQ(count(dsn, "\r\n--01HGW2N7BOUNCE/relay.example\r\n"), 3u);
    EXPECT_EQ(count(dsn, "\r\n--01HGW2N7BOUNCE/relay.example--\r\n"), 1u);
    // The machine-readable report.
    EXPECT_NE(dsn.find("Content-Type: message/delivery-status\r\n\r\n"
                       "Reporting-MTA: dns; relay.example\r\n"
                       "X-Postern-Queue-ID: 01HGW2N7EXAMPL\r\n"
                       "Original-Envelope-Id: abc+def\r\n"
                       "Arrival-Date: Tue, 2 Jan 2024 03:04:05 +0000\r\n"),
              std::string::npos)
        << dsn;
    EXPECT_NE(dsn.find("\r\nFinal-Recipient: rfc822; gone@example.net\r\n"
                       "Original-Recipient: rfc822;Gone+x@example.net\r\n"
                       "Action: failed\r\n"
                       "Status: 5.1.1\r\n"
                       "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: No such user\r\n"),
              std::string::npos)
        << dsn;
    EXPECT_NE(dsn.find("\r\nFinal-Recipient: rfc822; late@example.net\r\n"
                       "Action: failed\r\n"
                       "Status: 4.4.7\r\n"
                       "Diagnostic-Code: X-Postern; expired: not delivered within max_age\r\n"),
              std::string::npos)
        << dsn;
    // Only the failed recipients are reported.
    EXPECT_EQ(dsn.find("ok@example.net"), std::string::npos);
    // Headers only by default: the body is not in the bounce.
    EXPECT_NE(dsn.find("Content-Type: text/rfc822-headers\r\n\r\n"
                       "Received: from a\r\n\tby b; date\r\n"
                       "Subject: hello\r\nMessage-ID: <m1@example.com>\r\n"
                       "\r\n--01HGW2N7BOUNCE/relay.example--\r\n"),
              std::string::npos)
        << dsn;
    EXPECT_EQ(dsn.find("body line"), std::string::npos);
    // Every line ends with CRLF.
    for (size_t i = 0; i < dsn.size(); ++i) {
        if (dsn[i] == '\n') {
            ASSERT_TRUE(i > 0 && dsn[i - 1] == '\r') << i;
        }
    }
}

TEST(Dsn, RetFullCarriesTheWholeMessage) {
    Envelope e = envelope("FROM:<alice@example.com> RET=FULL");
    std::string dsn = build(e, {{1, "550 5.1.1 gone", false}});
    EXPECT_NE(dsn.find("Content-Type: message/rfc822\r\n\r\n" + kOriginal +
                       "\r\n--01HGW2N7BOUNCE/relay.example--\r\n"),
              std::string::npos)
        << dsn;
}

TEST(Dsn, RepliesCannotBreakTheHeaderLines) {
    Envelope e = envelope("FROM:<alice@example.com>");
    std::string dsn = build(e, {{1, "550 5.1.1 bad\r\nInjected: header", false}});
    EXPECT_EQ(dsn.find("\r\nInjected: header"), std::string::npos);
    EXPECT_NE(dsn.find("Diagnostic-Code: smtp; 550 5.1.1 bad  Injected: header\r\n"),
              std::string::npos);
}

}  // namespace
}  // namespace postern::queue
