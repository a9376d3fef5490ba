// Unit tests for MAIL/RCPT argument parsing (proxy/smtp/esmtp_params.hpp) and xtext
// (proxy/smtp/xtext.hpp).
#include "proxy/smtp/esmtp_params.hpp"

#include <gtest/gtest.h>

#include <string>

#include "proxy/smtp/xtext.hpp"

namespace postern::smtp {
namespace {

constexpr uint64_t kMax = 10 * 1024 * 1024;

// Asserts that `error` holds a reply with this code and enhanced code.
#define EXPECT_REPLY(parsed, expected_code, expected_enhanced)                \
    do {                                                                      \
        const auto& p_ = (parsed);                                            \
        ASSERT_TRUE(p_.error.has_value()) << "expected " << (expected_code);  \
        EXPECT_EQ(p_.error->code, (expected_code)) << p_.error->text;         \
        EXPECT_EQ(p_.error->enhanced, (expected_enhanced)) << p_.error->text; \
        EXPECT_FALSE(p_.error->text.empty());                                 \
    } while (0)

#define EXPECT_OK(parsed)                                                            \
    do {                                                                             \
        const auto& p_ = (parsed);                                                   \
        EXPECT_FALSE(p_.error.has_value())                                           \
            << p_.error->code << " " << p_.error->enhanced << " " << p_.error->text; \
    } while (0)

Parsed<MailFrom> mail(std::string_view args, uint64_t max = kMax) {
    return parse_mail_from(args, max);
}
Parsed<RcptTo> rcpt(std::string_view args, bool smtputf8 = false) {
    return parse_rcpt_to(args, smtputf8);
}

// ---- MAIL FROM: prefix and path --------------------------------------------------------------

TEST(MailFrom, PlainAddress) {
    auto r = mail("FROM:<alice@example.com>");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.sender.mailbox(), "alice@example.com");
    EXPECT_FALSE(r.value.params.size.has_value());
    EXPECT_EQ(r.value.params.body, BodyType::kUnspecified);
    EXPECT_FALSE(r.value.params.smtputf8);
    EXPECT_EQ(r.value.params.ret, DsnRet::kUnspecified);
    EXPECT_EQ(r.value.params.envid, "");
}

TEST(MailFrom, SpaceAfterColonAccepted) {
    auto r = mail("FROM: <alice@example.com>");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.sender.mailbox(), "alice@example.com");
    r = mail("FROM:   <alice@example.com> SIZE=5");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.sender.mailbox(), "alice@example.com");
    EXPECT_EQ(r.value.params.size, 5u);
}

TEST(MailFrom, PrefixCaseInsensitive) {
    auto r = mail("from:<a@b.example>");
    EXPECT_OK(r);
    r = mail("FrOm:<a@b.example>");
    EXPECT_OK(r);
}

TEST(MailFrom, NullReversePath) {
    auto r = mail("FROM:<>");
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.sender.null);
    EXPECT_EQ(r.value.sender.mailbox(), "");
    r = mail("FROM:<> SIZE=100");
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.sender.null);
    EXPECT_EQ(r.value.params.size, 100u);
}

TEST(MailFrom, PostmasterWithoutDomainIsNotASender) {
    EXPECT_REPLY(mail("FROM:<postmaster>"), 501, "5.1.7");
}

TEST(MailFrom, MissingOrBrokenPrefix) {
    EXPECT_REPLY(mail(""), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM: "), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM <a@b.example>"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:a@b.example"), 501, "5.5.4");
    EXPECT_REPLY(mail("TO:<a@b.example>"), 501, "5.5.4");
    EXPECT_REPLY(mail(" FROM:<a@b.example>"), 501, "5.5.4");
}

TEST(MailFrom, BadSenderAddress) {
    EXPECT_REPLY(mail("FROM:<a@@b>"), 501, "5.1.7");
    EXPECT_REPLY(mail("FROM:<a b@c.example>"), 501, "5.1.7");
    EXPECT_REPLY(mail("FROM:<a@b.example"), 501, "5.1.7");
    EXPECT_REPLY(mail("FROM:<\xff@b.example> SMTPUTF8"), 501, "5.1.7");
}

TEST(MailFrom, SenderTooLong) {
    std::string local(65, 'a');
    EXPECT_REPLY(mail("FROM:<" + local + "@b.example>"), 501, "5.1.7");
    // A valid 255-octet domain makes a 259-octet path.
    std::string label(63, 'd');
    std::string long_path = "FROM:<a@" + label + "." + label + "." + label + "." + label + ">";
    auto r = mail(long_path);
    EXPECT_REPLY(r, 501, "5.1.7");
    // The "too long" reply, not the generic syntax one.
    EXPECT_NE(r.error->text.find("too long"), std::string::npos) << r.error->text;
}

TEST(MailFrom, TextGluedToPathIsSyntaxError) {
    EXPECT_REPLY(mail("FROM:<a@b.example>SIZE=10"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example>x"), 501, "5.5.4");
}

TEST(MailFrom, SourceRouteDropped) {
    auto r = mail("FROM:<@relay.example:a@b.example>");
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.sender.had_route);
    EXPECT_EQ(r.value.sender.mailbox(), "a@b.example");
}

TEST(MailFrom, ExtraSpacesBetweenParameters) {
    auto r = mail("FROM:<a@b.example>   SIZE=10   BODY=7BIT  ");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.size, 10u);
    EXPECT_EQ(r.value.params.body, BodyType::k7Bit);
}

// ---- SIZE ------------------------------------------------------------------------------------

TEST(MailFrom, SizeValid) {
    auto r = mail("FROM:<a@b.example> SIZE=12345");
    EXPECT_OK(r);
    ASSERT_TRUE(r.value.params.size.has_value());
    EXPECT_EQ(*r.value.params.size, 12345u);

    r = mail("FROM:<a@b.example> SIZE=0");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.size, 0u);

    r = mail("FROM:<a@b.example> size=7");  // keywords are case-insensitive
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.size, 7u);
}

TEST(MailFrom, SizeAtAndAboveMaximum) {
    auto r = mail("FROM:<a@b.example> SIZE=" + std::to_string(kMax));
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.size, kMax);
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=" + std::to_string(kMax + 1)), 552, "5.3.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=1000", 999), 552, "5.3.4");
}

TEST(MailFrom, SizeTwentyDigits) {
    // size-value = 1*20DIGIT: 20 digits are syntactically fine (then too big for the limit).
    auto r = mail("FROM:<a@b.example> SIZE=00000000000000000042");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.size, 42u);
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=18446744073709551615"), 552, "5.3.4");
}

TEST(MailFrom, SizeMalformed) {
    const char* cases[] = {
        "FROM:<a@b.example> SIZE",
        "FROM:<a@b.example> SIZE=abc",
        "FROM:<a@b.example> SIZE=12k",
        "FROM:<a@b.example> SIZE=-1",
        "FROM:<a@b.example> SIZE=+1",
        "FROM:<a@b.example> SIZE=1.5",
        "FROM:<a@b.example> SIZE=0x10",
        "FROM:<a@b.example> SIZE=000000000000000000001",  // 21 digits
        "FROM:<a@b.example> SIZE=123456789012345678901",  // 21 digits
    };
    for (const char* c : cases) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(mail(c), 501, "5.5.4");
    }
}

TEST(MailFrom, SizeEmptyValueIsSyntaxError) {
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE="), 501, "5.5.4");
}

// ---- BODY ------------------------------------------------------------------------------------

TEST(MailFrom, Body) {
    auto r = mail("FROM:<a@b.example> BODY=7BIT");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.body, BodyType::k7Bit);
    r = mail("FROM:<a@b.example> BODY=8BITMIME");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.body, BodyType::k8BitMime);
    r = mail("FROM:<a@b.example> body=8bitmime");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.body, BodyType::k8BitMime);
}

TEST(MailFrom, BodyRejected) {
    for (const char* c : {"FROM:<a@b.example> BODY=BINARYMIME", "FROM:<a@b.example> BODY",
                          "FROM:<a@b.example> BODY=8BIT", "FROM:<a@b.example> BODY=7BITX"}) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(mail(c), 501, "5.5.4");
    }
}

// ---- SMTPUTF8 --------------------------------------------------------------------------------

TEST(MailFrom, Smtputf8) {
    auto r = mail("FROM:<a@b.example> SMTPUTF8");
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.params.smtputf8);
    EXPECT_FALSE(r.value.sender.utf8);

    r = mail(
        "FROM:<j\xc3\xb6rg@b\xc3\xbc"
        "cher.example> SMTPUTF8");
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.params.smtputf8);
    EXPECT_TRUE(r.value.sender.utf8);
    EXPECT_EQ(r.value.sender.mailbox(),
              "j\xc3\xb6rg@b\xc3\xbc"
              "cher.example");
}

TEST(MailFrom, Smtputf8WithValueRejected) {
    EXPECT_REPLY(mail("FROM:<a@b.example> SMTPUTF8=yes"), 501, "5.5.4");
}

TEST(MailFrom, Utf8AddressWithoutSmtputf8) {
    EXPECT_REPLY(mail("FROM:<j\xc3\xb6rg@example.com>"), 553, "5.6.7");
    EXPECT_REPLY(mail("FROM:<jorg@b\xc3\xbc"
                      "cher.example> BODY=8BITMIME"),
                 553, "5.6.7");
}

// ---- RET and ENVID ---------------------------------------------------------------------------

TEST(MailFrom, Ret) {
    auto r = mail("FROM:<a@b.example> RET=FULL");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.ret, DsnRet::kFull);
    r = mail("FROM:<a@b.example> RET=hdrs");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.ret, DsnRet::kHdrs);
    EXPECT_REPLY(mail("FROM:<a@b.example> RET=NONE"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> RET"), 501, "5.5.4");
}

TEST(MailFrom, EnvidKeptAsReceived) {
    auto r = mail("FROM:<a@b.example> ENVID=QQ314159+2B1");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.envid, "QQ314159+2B1");  // not decoded
}

TEST(MailFrom, EnvidLength) {
    std::string envid100(100, 'x');
    auto r = mail("FROM:<a@b.example> ENVID=" + envid100);
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.envid, envid100);
    EXPECT_REPLY(mail("FROM:<a@b.example> ENVID=" + std::string(101, 'x')), 501, "5.5.4");
}

TEST(MailFrom, EnvidBadXtext) {
    const char* cases[] = {
        "FROM:<a@b.example> ENVID",       "FROM:<a@b.example> ENVID=a+",
        "FROM:<a@b.example> ENVID=a+2",   "FROM:<a@b.example> ENVID=a+2b",
        "FROM:<a@b.example> ENVID=a+G0",  "FROM:<a@b.example> ENVID=+",
        "FROM:<a@b.example> ENVID=a+2B+",
    };
    for (const char* c : cases) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(mail(c), 501, "5.5.4");
    }
}

TEST(MailFrom, AllParametersTogether) {
    auto r = mail("FROM:<a@b.example> SIZE=2048 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+3D42");
    EXPECT_OK(r);
    const MailParams& p = r.value.params;
    EXPECT_EQ(p.size, 2048u);
    EXPECT_EQ(p.body, BodyType::k8BitMime);
    EXPECT_TRUE(p.smtputf8);
    EXPECT_EQ(p.ret, DsnRet::kHdrs);
    EXPECT_EQ(p.envid, "id+3D42");
}

// ---- generic parameter errors ----------------------------------------------------------------

TEST(MailFrom, DuplicateParameters) {
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=1 SIZE=1"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=1 size=2"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> SMTPUTF8 SMTPUTF8"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> BODY=7BIT BODY=8BITMIME"), 501, "5.5.4");
    auto r = mail("FROM:<a@b.example> RET=FULL RET=FULL");
    EXPECT_REPLY(r, 501, "5.5.4");
    EXPECT_NE(r.error->text.find("Duplicate"), std::string::npos) << r.error->text;
}

TEST(MailFrom, AuthParameterIsCheckedAndAccepted) {
    // RFC 4954 5: xtext or "<>"; postern does not pass a client's claim on.
    EXPECT_FALSE(mail("FROM:<a@b.example> AUTH=<>").error);
    EXPECT_FALSE(mail("FROM:<a@b.example> AUTH=app+2Bone@example.com").error);
    EXPECT_REPLY(mail("FROM:<a@b.example> AUTH"), 501, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> AUTH=a+zz"), 501, "5.5.4");
}

TEST(MailFrom, UnknownParameter) {
    EXPECT_REPLY(mail("FROM:<a@b.example> FOO=bar"), 555, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> XYZ"), 555, "5.5.4");
    // RCPT-only parameters are unknown to MAIL.
    EXPECT_REPLY(mail("FROM:<a@b.example> NOTIFY=NEVER"), 555, "5.5.4");
    EXPECT_REPLY(mail("FROM:<a@b.example> SIZE=1 FOO=bar"), 555, "5.5.4");
}

TEST(MailFrom, MalformedParameterSyntax) {
    const char* cases[] = {
        "FROM:<a@b.example> =x",           // empty keyword
        "FROM:<a@b.example> -X=1",         // keyword must start alphanumeric
        "FROM:<a@b.example> S_ZE=1",       // "_" not in a keyword
        "FROM:<a@b.example> SIZE=1=2",     // "=" not in a value
        "FROM:<a@b.example> ENVID=a\x01",  // control in value
        "FROM:<a@b.example> ENVID=\xc3\xa9",
        "FROM:<a@b.example> X\xc3\xa9=1",
    };
    for (const char* c : cases) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(mail(c), 501, "5.5.4");
    }
}

// ---- RCPT TO ---------------------------------------------------------------------------------

TEST(RcptTo, PlainAddress) {
    auto r = rcpt("TO:<bob@example.net>");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.recipient.mailbox(), "bob@example.net");
    EXPECT_EQ(r.value.params.notify, 0u);
    EXPECT_EQ(r.value.params.orcpt, "");
}

TEST(RcptTo, SpaceAfterColonAndCase) {
    auto r = rcpt("to: <bob@example.net>");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.recipient.mailbox(), "bob@example.net");
}

TEST(RcptTo, Postmaster) {
    auto r = rcpt("TO:<Postmaster>");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.recipient.mailbox(), "Postmaster");
}

TEST(RcptTo, NullPathRejected) {
    EXPECT_REPLY(rcpt("TO:<>"), 501, "5.1.3");
}

TEST(RcptTo, MissingPrefix) {
    EXPECT_REPLY(rcpt(""), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO:"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("FROM:<a@b.example>"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO:bob@example.net"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO:<bob@example.net>NOTIFY=NEVER"), 501, "5.5.4");
}

TEST(RcptTo, BadAndLongRecipient) {
    EXPECT_REPLY(rcpt("TO:<bob@@example.net>"), 501, "5.1.3");
    EXPECT_REPLY(rcpt("TO:<" + std::string(65, 'b') + "@example.net>"), 501, "5.1.3");
}

TEST(RcptTo, Utf8NeedsSmtputf8FromMail) {
    std::string args = "TO:<j\xc3\xb6rg@example.com>";
    EXPECT_REPLY(rcpt(args, false), 553, "5.6.7");
    auto r = rcpt(args, true);
    EXPECT_OK(r);
    EXPECT_TRUE(r.value.recipient.utf8);
}

TEST(RcptTo, NotifySingle) {
    struct Case {
        const char* value;
        unsigned bits;
    } cases[] = {
        {"NEVER", notify::kNever}, {"SUCCESS", notify::kSuccess}, {"FAILURE", notify::kFailure},
        {"DELAY", notify::kDelay}, {"never", notify::kNever},     {"Failure", notify::kFailure},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.value);
        auto r = rcpt(std::string("TO:<b@example.net> NOTIFY=") + c.value);
        EXPECT_OK(r);
        EXPECT_EQ(r.value.params.notify, c.bits);
    }
}

TEST(RcptTo, NotifyCombinations) {
    auto r = rcpt("TO:<b@example.net> NOTIFY=SUCCESS,FAILURE,DELAY");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.notify, notify::kSuccess | notify::kFailure | notify::kDelay);
    r = rcpt("TO:<b@example.net> NOTIFY=DELAY,SUCCESS");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.notify, notify::kSuccess | notify::kDelay);
}

TEST(RcptTo, NotifyInvalid) {
    const char* cases[] = {
        "NOTIFY",                // no value
        "NOTIFY=NEVER,SUCCESS",  // NEVER must stand alone
        "NOTIFY=FAILURE,NEVER",
        "NOTIFY=NEVER,NEVER",
        "NOTIFY=SUCCESS,SUCCESS",  // duplicates
        "NOTIFY=SUCCESS,success",
        "NOTIFY=ALWAYS",    // unknown
        "NOTIFY=SUCCESS,",  // empty item
        "NOTIFY=,SUCCESS",
        "NOTIFY=SUCCESS,,FAILURE",
        "NOTIFY=SUCCESS;FAILURE",
    };
    for (const char* c : cases) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(rcpt(std::string("TO:<b@example.net> ") + c), 501, "5.5.4");
    }
}

TEST(RcptTo, Orcpt) {
    auto r = rcpt("TO:<b@example.net> ORCPT=rfc822;b@example.net");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.orcpt, "rfc822;b@example.net");
    r = rcpt("TO:<b@example.net> ORCPT=rfc822;b+2Bx@example.net");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.orcpt, "rfc822;b+2Bx@example.net");  // kept encoded
    r = rcpt("TO:<b@example.net> ORCPT=utf-8;b@example.net");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.orcpt, "utf-8;b@example.net");
}

TEST(RcptTo, OrcptInvalid) {
    const char* cases[] = {
        "ORCPT",                        // no value
        "ORCPT=b@example.net",          // no ";"
        "ORCPT=;b@example.net",         // empty addr-type
        "ORCPT=rfc822;",                // empty xtext
        "ORCPT=rfc_822;b@example.net",  // bad addr-type
        "ORCPT=rfc822;b+zz@x",          // bad escape
        "ORCPT=rfc822;b+2b@x",          // lower-case hex
        "ORCPT=rfc822;b+",
    };
    for (const char* c : cases) {
        SCOPED_TRACE(c);
        EXPECT_REPLY(rcpt(std::string("TO:<b@example.net> ") + c), 501, "5.5.4");
    }
}

TEST(RcptTo, OrcptLength) {
    std::string prefix = "rfc822;";
    std::string ok = prefix + std::string(500 - prefix.size(), 'x');
    auto r = rcpt("TO:<b@example.net> ORCPT=" + ok);
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.orcpt, ok);
    std::string too_long = prefix + std::string(501 - prefix.size(), 'x');
    EXPECT_REPLY(rcpt("TO:<b@example.net> ORCPT=" + too_long), 501, "5.5.4");
}

TEST(RcptTo, NotifyAndOrcptTogether) {
    auto r = rcpt("TO:<b@example.net> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@example.net");
    EXPECT_OK(r);
    EXPECT_EQ(r.value.params.notify, notify::kFailure | notify::kDelay);
    EXPECT_EQ(r.value.params.orcpt, "rfc822;b@example.net");
    EXPECT_EQ(r.value.recipient.mailbox(), "b@example.net");
}

TEST(RcptTo, DuplicateAndUnknownParameters) {
    EXPECT_REPLY(rcpt("TO:<b@example.net> NOTIFY=NEVER NOTIFY=NEVER"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO:<b@example.net> ORCPT=rfc822;a ORCPT=rfc822;b"), 501, "5.5.4");
    EXPECT_REPLY(rcpt("TO:<b@example.net> FOO"), 555, "5.5.4");
    // MAIL-only parameters are unknown to RCPT.
    EXPECT_REPLY(rcpt("TO:<b@example.net> SIZE=10"), 555, "5.5.4");
    EXPECT_REPLY(rcpt("TO:<b@example.net> SMTPUTF8"), 555, "5.5.4");
}

// ---- xtext -----------------------------------------------------------------------------------

TEST(Xtext, DecodeValid) {
    EXPECT_EQ(xtext_decode(""), "");
    EXPECT_EQ(xtext_decode("plain"), "plain");
    EXPECT_EQ(xtext_decode("a+2Bb"), "a+b");
    EXPECT_EQ(xtext_decode("+3D"), "=");
    EXPECT_EQ(xtext_decode("+2B+3D"), "+=");
    EXPECT_EQ(xtext_decode("x+20y"), "x y");
    EXPECT_EQ(xtext_decode("+00"), std::string(1, '\0'));
    EXPECT_EQ(xtext_decode("+FF"), std::string(1, '\xff'));
    EXPECT_EQ(xtext_decode("!~<>@"), "!~<>@");
}

TEST(Xtext, DecodeInvalid) {
    for (std::string_view bad :
         {"+", "+2", "a+2", "+2b", "+g0", "+G0", "a=b", "a b", "\x7f", "\xc3\xa9", "a\tb", "+ 2"}) {
        EXPECT_FALSE(xtext_decode(bad).has_value()) << bad;
        EXPECT_FALSE(is_valid_xtext(bad)) << bad;
    }
}

TEST(Xtext, IsValid) {
    EXPECT_TRUE(is_valid_xtext(""));
    EXPECT_TRUE(is_valid_xtext("rfc822+3Bx"));
    EXPECT_TRUE(is_valid_xtext("+2B"));
}

}  // namespace
}  // namespace postern::smtp
