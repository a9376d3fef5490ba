// Unit tests for the SMTP client's MAIL and RCPT lines and AUTH PLAIN response
// (proxy/smtp/client_commands.hpp): which ESMTP parameters are sent for which server, the
// permanent refusals when the message cannot go to that server, and that nothing from the
// envelope can break a command line.
#include "proxy/smtp/client_commands.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/smtp/base64.hpp"

namespace postern::smtp {
namespace {

constexpr uint64_t kMax = 100 * 1024 * 1024;

// The envelope parts as the server side parsed them from the client.
MailFrom mail(std::string_view args) {
    Parsed<MailFrom> p = parse_mail_from(args, kMax);
    EXPECT_FALSE(p.error.has_value()) << args << ": " << p.error->text;
    return p.value;
}

RcptTo rcpt(std::string_view args, bool smtputf8 = false) {
    Parsed<RcptTo> p = parse_rcpt_to(args, smtputf8);
    EXPECT_FALSE(p.error.has_value()) << args << ": " << p.error->text;
    return p.value;
}

// A server that answered EHLO with nothing but its name.
Capabilities plain_esmtp() {
    Capabilities c;
    c.esmtp = true;
    return c;
}

// A server that offers every extension the client uses, with no size limit.
Capabilities everything() {
    Capabilities c = plain_esmtp();
    c.pipelining = true;
    c.eight_bit_mime = true;
    c.smtputf8 = true;
    c.chunking = true;
    c.dsn = true;
    c.enhanced_status_codes = true;
    c.size = 0;
    return c;
}

// One command line: CRLF at the end and nowhere else, no other control character.
void expect_one_line(const std::string& line) {
    ASSERT_GE(line.size(), 2u);
    EXPECT_EQ(line.substr(line.size() - 2), "\r\n") << line;
    std::string_view body(line.data(), line.size() - 2);
    for (unsigned char c : body) {
        EXPECT_TRUE(c >= 0x20 && c != 0x7f) << "control " << int(c) << " in " << line;
    }
}

// The command line of a successful build.
std::string line_of(const Parsed<std::string>& p) {
    EXPECT_FALSE(p.error.has_value()) << p.error->code << " " << p.error->text;
    expect_one_line(p.value);
    return p.value;
}

std::string mail_line(const MailFrom& m, const Capabilities& caps,
                      std::optional<uint64_t> size = std::nullopt, bool eight_bit = false) {
    return line_of(mail_command({.mail = m, .size = size, .eight_bit_body = eight_bit}, caps));
}

#define EXPECT_REFUSED(parsed, expected_code, expected_enhanced)              \
    do {                                                                      \
        const auto& p_ = (parsed);                                            \
        ASSERT_TRUE(p_.error.has_value()) << "sent: " << p_.value;            \
        EXPECT_EQ(p_.error->code, (expected_code)) << p_.error->text;         \
        EXPECT_EQ(p_.error->enhanced, (expected_enhanced)) << p_.error->text; \
        EXPECT_FALSE(p_.error->text.empty());                                 \
        EXPECT_EQ(p_.value, "") << "no command line with a refusal";          \
    } while (0)

// ---- MAIL FROM -------------------------------------------------------------------------------

TEST(MailCommand, PlainSender) {
    MailFrom m = mail("FROM:<alice@example.com>");
    EXPECT_EQ(mail_line(m, plain_esmtp()), "MAIL FROM:<alice@example.com>\r\n");
    EXPECT_EQ(mail_line(m, everything()), "MAIL FROM:<alice@example.com>\r\n")
        << "no parameter the message does not need";
}

TEST(MailCommand, NullSender) {
    MailFrom m = mail("FROM:<>");
    EXPECT_EQ(mail_line(m, plain_esmtp()), "MAIL FROM:<>\r\n");
    EXPECT_EQ(mail_line(m, everything(), 1234), "MAIL FROM:<> SIZE=1234\r\n");
}

TEST(MailCommand, LocalPartKeptAsReceived) {
    MailFrom m = mail("FROM:<\"john smith\"@Example.COM>");
    EXPECT_EQ(mail_line(m, plain_esmtp()), "MAIL FROM:<\"john smith\"@Example.COM>\r\n");
}

TEST(MailCommand, SizeOnlyWhenOfferedAndKnown) {
    MailFrom m = mail("FROM:<alice@example.com>");
    Capabilities offered = plain_esmtp();
    offered.size = 10000;
    EXPECT_EQ(mail_line(m, offered, 1234), "MAIL FROM:<alice@example.com> SIZE=1234\r\n");
    EXPECT_EQ(mail_line(m, offered, std::nullopt), "MAIL FROM:<alice@example.com>\r\n")
        << "unknown size";
    EXPECT_EQ(mail_line(m, plain_esmtp(), 1234), "MAIL FROM:<alice@example.com>\r\n")
        << "SIZE not offered";
    offered.size = 0;  // offered without a limit
    EXPECT_EQ(mail_line(m, offered, 1234), "MAIL FROM:<alice@example.com> SIZE=1234\r\n");
}

TEST(MailCommand, SizeOverServerLimitRefused) {
    MailFrom m = mail("FROM:<alice@example.com>");
    Capabilities caps = plain_esmtp();
    caps.size = 1000;
    EXPECT_REFUSED(mail_command({.mail = m, .size = 1001}, caps), 552, "5.3.4");
    EXPECT_EQ(mail_line(m, caps, 1000), "MAIL FROM:<alice@example.com> SIZE=1000\r\n")
        << "exactly the limit fits";
    // The limit is named in the text.
    auto refused = mail_command({.mail = m, .size = 5000}, caps);
    ASSERT_TRUE(refused.error.has_value());
    EXPECT_NE(refused.error->text.find("1000"), std::string::npos) << refused.error->text;
}

TEST(MailCommand, SizeZeroMeansNoLimit) {
    MailFrom m = mail("FROM:<alice@example.com>");
    Capabilities caps = plain_esmtp();
    caps.size = 0;
    EXPECT_EQ(mail_line(m, caps, UINT64_MAX),
              "MAIL FROM:<alice@example.com> SIZE=18446744073709551615\r\n");
}

TEST(MailCommand, BodyEightBitMimeWhenDeclared) {
    MailFrom m = mail("FROM:<alice@example.com> BODY=8BITMIME");
    Capabilities caps = plain_esmtp();
    caps.eight_bit_mime = true;
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n");
}

TEST(MailCommand, BodyEightBitMimeWhenBodyIsEightBit) {
    MailFrom m = mail("FROM:<alice@example.com>");
    Capabilities caps = plain_esmtp();
    caps.eight_bit_mime = true;
    EXPECT_EQ(mail_line(m, caps, std::nullopt, true),
              "MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n");
    // Even when the client wrongly declared 7BIT.
    MailFrom seven = mail("FROM:<alice@example.com> BODY=7BIT");
    EXPECT_EQ(mail_line(seven, caps, std::nullopt, true),
              "MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n");
}

TEST(MailCommand, BodySevenBitPassedOn) {
    MailFrom m = mail("FROM:<alice@example.com> BODY=7BIT");
    Capabilities caps = plain_esmtp();
    caps.eight_bit_mime = true;
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<alice@example.com> BODY=7BIT\r\n");
}

TEST(MailCommand, NoBodyParameterWithout8BitMime) {
    // A 7-bit body may go to any server, whatever was declared; BODY is not sent unless offered.
    for (std::string_view args :
         {"FROM:<alice@example.com> BODY=8BITMIME", "FROM:<alice@example.com> BODY=7BIT"}) {
        SCOPED_TRACE(args);
        MailFrom m = mail(args);
        EXPECT_EQ(mail_line(m, plain_esmtp()), "MAIL FROM:<alice@example.com>\r\n");
    }
}

TEST(MailCommand, EightBitBodyWithout8BitMimeRefused) {
    MailFrom m = mail("FROM:<alice@example.com> BODY=8BITMIME");
    EXPECT_REFUSED(mail_command({.mail = m, .size = 100, .eight_bit_body = true}, plain_esmtp()),
                   554, "5.6.3");
    MailFrom undeclared = mail("FROM:<alice@example.com>");
    EXPECT_REFUSED(
        mail_command({.mail = undeclared, .size = 100, .eight_bit_body = true}, plain_esmtp()), 554,
        "5.6.3");
}

TEST(MailCommand, Smtputf8) {
    MailFrom m = mail("FROM:<j\xc3\xb6rg@example.com> SMTPUTF8");
    Capabilities caps = plain_esmtp();
    EXPECT_REFUSED(mail_command({.mail = m}, caps), 553, "5.6.7");
    caps.smtputf8 = true;
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<j\xc3\xb6rg@example.com> SMTPUTF8\r\n");
    // Declared with an ASCII sender: still needs the extension (recipients or headers may not
    // be ASCII).
    MailFrom ascii = mail("FROM:<alice@example.com> SMTPUTF8");
    EXPECT_REFUSED(mail_command({.mail = ascii}, plain_esmtp()), 553, "5.6.7");
}

TEST(MailCommand, DsnParametersOnlyWhenOffered) {
    MailFrom m = mail("FROM:<alice@example.com> RET=HDRS ENVID=QQ314159");
    Capabilities caps = plain_esmtp();
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<alice@example.com>\r\n");
    caps.dsn = true;
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<alice@example.com> RET=HDRS ENVID=QQ314159\r\n");
    MailFrom full = mail("FROM:<alice@example.com> RET=FULL");
    EXPECT_EQ(mail_line(full, caps), "MAIL FROM:<alice@example.com> RET=FULL\r\n");
}

TEST(MailCommand, EnvidKeptAsXtext) {
    MailFrom m = mail("FROM:<alice@example.com> ENVID=a+2Bb+3Dc");
    Capabilities caps = plain_esmtp();
    caps.dsn = true;
    EXPECT_EQ(mail_line(m, caps), "MAIL FROM:<alice@example.com> ENVID=a+2Bb+3Dc\r\n");
}

TEST(MailCommand, EveryParameter) {
    MailFrom m =
        mail("FROM:<j\xc3\xb6rg@example.com> ENVID=id1 RET=FULL SMTPUTF8 BODY=8BITMIME SIZE=5000");
    EXPECT_EQ(mail_line(m, everything(), 5000, true),
              "MAIL FROM:<j\xc3\xb6rg@example.com> SIZE=5000 BODY=8BITMIME SMTPUTF8 RET=FULL "
              "ENVID=id1\r\n");
}

// ---- RCPT TO ---------------------------------------------------------------------------------

TEST(RcptCommand, PlainRecipient) {
    RcptTo r = rcpt("TO:<bob@example.net>");
    EXPECT_EQ(line_of(rcpt_command(r, plain_esmtp())), "RCPT TO:<bob@example.net>\r\n");
    EXPECT_EQ(line_of(rcpt_command(r, everything())), "RCPT TO:<bob@example.net>\r\n");
}

TEST(RcptCommand, NotifyInFixedOrder) {
    Capabilities caps = plain_esmtp();
    caps.dsn = true;
    RcptTo r = rcpt("TO:<bob@example.net> NOTIFY=DELAY,FAILURE,SUCCESS");
    EXPECT_EQ(line_of(rcpt_command(r, caps)),
              "RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE,DELAY\r\n");
    r = rcpt("TO:<bob@example.net> NOTIFY=delay,failure");
    EXPECT_EQ(line_of(rcpt_command(r, caps)), "RCPT TO:<bob@example.net> NOTIFY=FAILURE,DELAY\r\n");
    r = rcpt("TO:<bob@example.net> NOTIFY=SUCCESS");
    EXPECT_EQ(line_of(rcpt_command(r, caps)), "RCPT TO:<bob@example.net> NOTIFY=SUCCESS\r\n");
}

TEST(RcptCommand, NotifyNever) {
    Capabilities caps = plain_esmtp();
    caps.dsn = true;
    RcptTo r = rcpt("TO:<bob@example.net> NOTIFY=never");
    EXPECT_EQ(line_of(rcpt_command(r, caps)), "RCPT TO:<bob@example.net> NOTIFY=NEVER\r\n");
}

TEST(RcptCommand, Orcpt) {
    Capabilities caps = plain_esmtp();
    caps.dsn = true;
    RcptTo r = rcpt("TO:<bob@example.net> ORCPT=rfc822;bob+2Bx@example.net NOTIFY=FAILURE");
    EXPECT_EQ(line_of(rcpt_command(r, caps)),
              "RCPT TO:<bob@example.net> NOTIFY=FAILURE ORCPT=rfc822;bob+2Bx@example.net\r\n");
}

TEST(RcptCommand, DsnParametersOnlyWhenOffered) {
    RcptTo r = rcpt("TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net");
    Capabilities caps = everything();
    caps.dsn = false;
    EXPECT_EQ(line_of(rcpt_command(r, caps)), "RCPT TO:<bob@example.net>\r\n");
}

TEST(RcptCommand, Utf8Recipient) {
    const std::string address =
        "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a";
    RcptTo r = rcpt("TO:<" + address + ">", true);
    EXPECT_EQ(line_of(rcpt_command(r, everything())), "RCPT TO:<" + address + ">\r\n");
}

// ---- control characters in the envelope ------------------------------------------------------

// Addresses the server-side parser would never produce, built by hand: the client must still
// not write them.
TEST(ClientCommands, ControlCharacterInSenderRefused) {
    for (std::string_view local :
         {std::string_view("a\r\nRCPT TO:<x@evil.example>"), std::string_view("a\nb"),
          std::string_view("a\rb"), std::string_view("a\0b", 3), std::string_view("a\tb"),
          std::string_view("a\177b")}) {
        SCOPED_TRACE(testing::PrintToString(std::string(local)));
        MailFrom m;
        m.sender.local = std::string(local);
        m.sender.domain = "example.com";
        EXPECT_REFUSED(mail_command({.mail = m}, everything()), 550, "5.6.0");
    }
    MailFrom m;
    m.sender.local = "alice";
    m.sender.domain = "example.com\r\nDATA";
    EXPECT_REFUSED(mail_command({.mail = m}, everything()), 550, "5.6.0");
}

TEST(ClientCommands, ControlCharacterInEnvidRefused) {
    MailFrom m = mail("FROM:<alice@example.com>");
    m.params.envid = "abc\ndef";
    EXPECT_REFUSED(mail_command({.mail = m}, everything()), 550, "5.6.0");
}

TEST(ClientCommands, ControlCharacterInRecipientRefused) {
    RcptTo r;
    r.recipient.local = "bob\r\nDATA";
    r.recipient.domain = "example.net";
    EXPECT_REFUSED(rcpt_command(r, everything()), 550, "5.6.0");
    r.recipient.local = "bob";
    r.recipient.domain = std::string("example.net\0", 12);
    EXPECT_REFUSED(rcpt_command(r, everything()), 550, "5.6.0");
}

TEST(ClientCommands, ControlCharacterInOrcptRefused) {
    RcptTo r = rcpt("TO:<bob@example.net>");
    r.params.orcpt = "rfc822;bob@example.net\r\nQUIT";
    EXPECT_REFUSED(rcpt_command(r, everything()), 550, "5.6.0");
}

// ---- check_message_fits ----------------------------------------------------------------------

TEST(CheckMessageFits, FitsOrNot) {
    MailFrom m = mail("FROM:<alice@example.com>");
    Capabilities caps = plain_esmtp();
    EXPECT_FALSE(check_message_fits(m, 1u << 30, false, caps).has_value()) << "no SIZE: no limit";
    caps.size = 1000;
    EXPECT_FALSE(check_message_fits(m, 1000, false, caps).has_value());
    auto big = check_message_fits(m, 1001, false, caps);
    ASSERT_TRUE(big.has_value());
    EXPECT_EQ(big->code, 552);
    EXPECT_EQ(big->enhanced, "5.3.4");
    caps.size = 0;
    EXPECT_FALSE(check_message_fits(m, UINT64_MAX, false, caps).has_value());

    auto eight = check_message_fits(m, 10, true, caps);
    ASSERT_TRUE(eight.has_value());
    EXPECT_EQ(eight->code, 554);
    EXPECT_EQ(eight->enhanced, "5.6.3");
    caps.eight_bit_mime = true;
    EXPECT_FALSE(check_message_fits(m, 10, true, caps).has_value());
}

TEST(CheckMessageFits, Smtputf8) {
    MailFrom m = mail("FROM:<alice@example.com> SMTPUTF8");
    Capabilities caps = plain_esmtp();
    auto r = check_message_fits(m, 10, false, caps);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->code, 553);
    EXPECT_EQ(r->enhanced, "5.6.7");
    caps.smtputf8 = true;
    EXPECT_FALSE(check_message_fits(m, 10, false, caps).has_value());
}

// ---- AUTH PLAIN ------------------------------------------------------------------------------

TEST(SaslPlain, Response) {
    EXPECT_EQ(sasl_plain_response("user", "pass"), "AHVzZXIAcGFzcw==");
    EXPECT_EQ(base64_decode(sasl_plain_response("user", "pass")), std::string("\0user\0pass", 10));
    EXPECT_EQ(sasl_plain_response("", ""), "AAA=");
}

TEST(SaslPlain, PasswordWithAnyOctets) {
    std::string password = "p\xc3\xa4ss w=rd:\x01";
    EXPECT_EQ(base64_decode(sasl_plain_response("relay@example.com", password)),
              std::string("\0relay@example.com\0", 19) + password);
}

}  // namespace
}  // namespace postern::smtp
