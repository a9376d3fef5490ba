// Unit tests for EHLO reply parsing (proxy/smtp/capabilities.hpp), on replies read from the wire
// by ReplyParser as the client does.
#include "proxy/smtp/capabilities.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/reply_parser.hpp"

namespace postern::smtp {
namespace {

using Mechanisms = std::vector<std::string>;

// The reply in `raw`, which must be exactly one complete reply.
ServerReply reply(std::string_view raw) {
    ReplyParser::Result r = ReplyParser::next(raw);
    EXPECT_EQ(r.status, ReplyParser::Status::kReply) << r.error << "\n" << raw;
    EXPECT_EQ(r.consumed, raw.size()) << raw;
    return r.reply;
}

Capabilities parse(std::string_view raw) {
    return parse_ehlo_reply(reply(raw));
}

// ---- real servers ----------------------------------------------------------------------------

TEST(Capabilities, Postfix) {
    Capabilities c = parse(
        "250-mail.example.com\r\n"
        "250-PIPELINING\r\n"
        "250-SIZE 10240000\r\n"
        "250-VRFY\r\n"
        "250-ETRN\r\n"
        "250-STARTTLS\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250-8BITMIME\r\n"
        "250-DSN\r\n"
        "250-SMTPUTF8\r\n"
        "250 CHUNKING\r\n");
    EXPECT_TRUE(c.esmtp);
    EXPECT_TRUE(c.pipelining);
    EXPECT_EQ(c.size, 10240000u);
    EXPECT_TRUE(c.starttls);
    EXPECT_TRUE(c.enhanced_status_codes);
    EXPECT_TRUE(c.eight_bit_mime);
    EXPECT_TRUE(c.dsn);
    EXPECT_TRUE(c.smtputf8);
    EXPECT_TRUE(c.chunking);
    EXPECT_TRUE(c.auth.empty());
}

TEST(Capabilities, PostfixAfterStarttlsWithBothAuthForms) {
    // Postfix with broken_sasl_auth_clients = yes repeats AUTH in the old form.
    Capabilities c = parse(
        "250-mail.example.com\r\n"
        "250-PIPELINING\r\n"
        "250-SIZE 10240000\r\n"
        "250-AUTH PLAIN LOGIN\r\n"
        "250-AUTH=PLAIN LOGIN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250-8BITMIME\r\n"
        "250 DSN\r\n");
    EXPECT_FALSE(c.starttls);
    EXPECT_EQ(c.auth, (Mechanisms{"PLAIN", "LOGIN"})) << "no mechanism listed twice";
    EXPECT_TRUE(c.offers_auth("PLAIN"));
    EXPECT_TRUE(c.offers_auth("LOGIN"));
    EXPECT_FALSE(c.offers_auth("CRAM-MD5"));
}

TEST(Capabilities, AmazonSes) {
    // The last line, "Ok", is no keyword and is ignored.
    Capabilities c = parse(
        "250-email-smtp.amazonaws.com\r\n"
        "250-8BITMIME\r\n"
        "250-SIZE 10485760\r\n"
        "250-STARTTLS\r\n"
        "250-AUTH PLAIN LOGIN\r\n"
        "250 Ok\r\n");
    EXPECT_TRUE(c.esmtp);
    EXPECT_TRUE(c.eight_bit_mime);
    EXPECT_EQ(c.size, 10485760u);
    EXPECT_TRUE(c.starttls);
    EXPECT_EQ(c.auth, (Mechanisms{"PLAIN", "LOGIN"}));
    EXPECT_FALSE(c.pipelining);
    EXPECT_FALSE(c.dsn);
    EXPECT_FALSE(c.smtputf8);
    EXPECT_FALSE(c.chunking);
    EXPECT_FALSE(c.enhanced_status_codes);
}

TEST(Capabilities, Microsoft365) {
    Capabilities c = parse(
        "250-MW4PR03CA0123.outlook.office365.com Hello [203.0.113.5]\r\n"
        "250-SIZE 157286400\r\n"
        "250-PIPELINING\r\n"
        "250-DSN\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250-AUTH LOGIN XOAUTH2\r\n"
        "250-8BITMIME\r\n"
        "250-BINARYMIME\r\n"
        "250-CHUNKING\r\n"
        "250 SMTPUTF8\r\n");
    EXPECT_EQ(c.size, 157286400u);
    EXPECT_TRUE(c.pipelining);
    EXPECT_TRUE(c.dsn);
    EXPECT_TRUE(c.enhanced_status_codes);
    EXPECT_EQ(c.auth, (Mechanisms{"LOGIN", "XOAUTH2"}));
    EXPECT_FALSE(c.offers_auth("PLAIN"));
    EXPECT_TRUE(c.eight_bit_mime);
    EXPECT_TRUE(c.chunking);
    EXPECT_TRUE(c.smtputf8);
    EXPECT_FALSE(c.starttls) << "not offered after STARTTLS";
}

TEST(Capabilities, Gmail) {
    Capabilities c = parse(
        "250-smtp.gmail.com at your service, [203.0.113.5]\r\n"
        "250-SIZE 35882577\r\n"
        "250-8BITMIME\r\n"
        "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250-PIPELINING\r\n"
        "250-CHUNKING\r\n"
        "250 SMTPUTF8\r\n");
    EXPECT_EQ(c.size, 35882577u);
    EXPECT_EQ(c.auth, (Mechanisms{"LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER",
                                  "XOAUTH"}));
    EXPECT_TRUE(c.offers_auth("PLAIN"));
    EXPECT_TRUE(c.pipelining);
    EXPECT_TRUE(c.chunking);
    EXPECT_TRUE(c.smtputf8);
    EXPECT_FALSE(c.dsn);
}

// ---- SIZE ------------------------------------------------------------------------------------

TEST(Capabilities, SizeAbsent) {
    Capabilities c = parse("250-mx.example\r\n250 PIPELINING\r\n");
    EXPECT_FALSE(c.size.has_value());
}

TEST(Capabilities, SizeWithoutNumberMeansNoLimit) {
    Capabilities c = parse("250-mx.example\r\n250 SIZE\r\n");
    ASSERT_TRUE(c.size.has_value()) << "SIZE is offered";
    EXPECT_EQ(*c.size, 0u);
}

TEST(Capabilities, SizeZeroMeansNoLimit) {
    Capabilities c = parse("250-mx.example\r\n250 SIZE 0\r\n");
    ASSERT_TRUE(c.size.has_value());
    EXPECT_EQ(*c.size, 0u);
}

TEST(Capabilities, SizeNotANumberMeansNoLimit) {
    for (std::string_view value : {"abc", "12x", "-5", "99999999999999999999999"}) {
        SCOPED_TRACE(value);
        Capabilities c = parse("250-mx.example\r\n250 SIZE " + std::string(value) + "\r\n");
        ASSERT_TRUE(c.size.has_value());
        EXPECT_EQ(*c.size, 0u);
    }
}

TEST(Capabilities, SizeLargestValue) {
    Capabilities c = parse("250-mx.example\r\n250 SIZE 18446744073709551615\r\n");
    EXPECT_EQ(c.size, UINT64_MAX);
}

// ---- AUTH ------------------------------------------------------------------------------------

TEST(Capabilities, AuthListInOrder) {
    Capabilities c = parse("250-mx.example\r\n250 AUTH CRAM-MD5 PLAIN LOGIN\r\n");
    EXPECT_EQ(c.auth, (Mechanisms{"CRAM-MD5", "PLAIN", "LOGIN"}));
}

TEST(Capabilities, OldAuthEqualsForm) {
    Capabilities c = parse("250-mx.example\r\n250 AUTH=LOGIN PLAIN\r\n");
    EXPECT_EQ(c.auth, (Mechanisms{"LOGIN", "PLAIN"}));
    EXPECT_TRUE(c.offers_auth("LOGIN"));
    EXPECT_TRUE(c.offers_auth("PLAIN"));
}

TEST(Capabilities, AuthWithoutMechanisms) {
    Capabilities c = parse("250-mx.example\r\n250 AUTH\r\n");
    EXPECT_TRUE(c.auth.empty());
}

TEST(Capabilities, AuthMechanismsUpperCased) {
    Capabilities c = parse("250-mx.example\r\n250-auth plain Login\r\n250 auth=cram-md5\r\n");
    EXPECT_EQ(c.auth, (Mechanisms{"PLAIN", "LOGIN", "CRAM-MD5"}));
}

TEST(Capabilities, ExtraSpacesBetweenWords) {
    Capabilities c = parse("250-mx.example\r\n250-AUTH  PLAIN   LOGIN \r\n250 SIZE  2048\r\n");
    EXPECT_EQ(c.auth, (Mechanisms{"PLAIN", "LOGIN"}));
    EXPECT_EQ(c.size, 2048u);
}

// ---- keywords --------------------------------------------------------------------------------

TEST(Capabilities, KeywordsAreCaseInsensitive) {
    Capabilities c = parse(
        "250-mx.example\r\n"
        "250-pipelining\r\n"
        "250-StartTLS\r\n"
        "250-8bitmime\r\n"
        "250-SmtpUtf8\r\n"
        "250-chunking\r\n"
        "250-dsn\r\n"
        "250-EnhancedStatusCodes\r\n"
        "250 size 1000\r\n");
    EXPECT_TRUE(c.pipelining);
    EXPECT_TRUE(c.starttls);
    EXPECT_TRUE(c.eight_bit_mime);
    EXPECT_TRUE(c.smtputf8);
    EXPECT_TRUE(c.chunking);
    EXPECT_TRUE(c.dsn);
    EXPECT_TRUE(c.enhanced_status_codes);
    EXPECT_EQ(c.size, 1000u);
}

TEST(Capabilities, UnknownKeywordsIgnored) {
    // Including ones that begin like known keywords, and parameters naming known ones.
    Capabilities c = parse(
        "250-mx.example\r\n"
        "250-VRFY\r\n"
        "250-ETRN\r\n"
        "250-XFORWARD NAME ADDR PROTO HELO\r\n"
        "250-X-EXPS GSSAPI NTLM\r\n"
        "250-AUTHENTICATE PLAIN\r\n"
        "250-SIZEX 100\r\n"
        "250-STARTTLSX\r\n"
        "250-BINARYMIME\r\n"
        "250 DELIVERBY 300\r\n");
    EXPECT_TRUE(c.esmtp);
    EXPECT_FALSE(c.pipelining);
    EXPECT_FALSE(c.starttls);
    EXPECT_FALSE(c.eight_bit_mime);
    EXPECT_FALSE(c.smtputf8);
    EXPECT_FALSE(c.chunking);
    EXPECT_FALSE(c.dsn);
    EXPECT_FALSE(c.enhanced_status_codes);
    EXPECT_FALSE(c.size.has_value());
    EXPECT_TRUE(c.auth.empty());
}

TEST(Capabilities, DuplicateKeywordsHarmless) {
    Capabilities c = parse(
        "250-mx.example\r\n"
        "250-PIPELINING\r\n"
        "250-PIPELINING\r\n"
        "250-AUTH PLAIN\r\n"
        "250-AUTH PLAIN LOGIN\r\n"
        "250 AUTH=LOGIN\r\n");
    EXPECT_TRUE(c.pipelining);
    EXPECT_EQ(c.auth, (Mechanisms{"PLAIN", "LOGIN"}));
}

TEST(Capabilities, FirstLineIsNotAKeyword) {
    // The first line is the server's name and greeting, whatever it says.
    Capabilities c = parse("250-STARTTLS\r\n250 SIZE 1000\r\n");
    EXPECT_FALSE(c.starttls);
    EXPECT_EQ(c.size, 1000u);
    c = parse("250 PIPELINING SIZE AUTH PLAIN\r\n");
    EXPECT_TRUE(c.esmtp);
    EXPECT_FALSE(c.pipelining);
    EXPECT_FALSE(c.size.has_value());
    EXPECT_TRUE(c.auth.empty());
}

TEST(Capabilities, SingleLineReplyOffersNothing) {
    Capabilities c = parse("250 mx.example.com Hello\r\n");
    EXPECT_TRUE(c.esmtp);
    EXPECT_FALSE(c.pipelining);
    EXPECT_FALSE(c.starttls);
    EXPECT_FALSE(c.size.has_value());
    EXPECT_TRUE(c.auth.empty());
}

TEST(Capabilities, NotA250IsNotEsmtp) {
    // A server that does not know EHLO: the client falls back to HELO.
    for (std::string_view raw : {"500 5.5.1 Command unrecognized\r\n",
                                 "502 Command not implemented\r\n", "554 5.7.1 Go away\r\n"}) {
        SCOPED_TRACE(raw);
        Capabilities c = parse(raw);
        EXPECT_FALSE(c.esmtp);
        EXPECT_FALSE(c.size.has_value());
        EXPECT_TRUE(c.auth.empty());
    }
}

TEST(Capabilities, DefaultIsNothing) {
    Capabilities c;
    EXPECT_FALSE(c.esmtp);
    EXPECT_FALSE(c.size.has_value());
    EXPECT_FALSE(c.offers_auth("PLAIN"));
}

}  // namespace
}  // namespace postern::smtp
