// Unit tests for the RFC 5321 Path parser (proxy/smtp/address.hpp).
#include "proxy/smtp/address.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace postern::smtp {
namespace {

constexpr PathOptions kReverse{.allow_null = true};
constexpr PathOptions kForward{.allow_postmaster = true};
constexpr PathOptions kStrict{};

PathParse parse(std::string_view input, PathOptions options = kStrict) {
    return parse_path(input, options);
}

// ---- plain mailboxes -------------------------------------------------------------------------

TEST(ParsePath, SimpleMailbox) {
    PathParse r = parse("<user@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "user");
    EXPECT_EQ(r.address.domain, "example.com");
    EXPECT_EQ(r.address.mailbox(), "user@example.com");
    EXPECT_FALSE(r.address.null);
    EXPECT_FALSE(r.address.utf8);
    EXPECT_FALSE(r.address.had_route);
    EXPECT_EQ(r.consumed, 18u);
}

TEST(ParsePath, ConsumedStopsAfterClosingBracket) {
    std::string_view input = "<a@b.c> SIZE=100 BODY=8BITMIME";
    PathParse r = parse(input);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.consumed, 7u);
    EXPECT_EQ(input.substr(r.consumed), " SIZE=100 BODY=8BITMIME");
}

TEST(ParsePath, ConsumedWithQuotedGreaterThan) {
    // A ">" inside a quoted local part does not close the path.
    std::string_view input = "<\"a>b\"@example.com>rest";
    PathParse r = parse(input);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "\"a>b\"");
    EXPECT_EQ(input.substr(r.consumed), "rest");
}

TEST(ParsePath, AtextSpecialsInLocalPart) {
    PathParse r = parse("<!#$%&'*+-/=?^_`{|}~.x@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "!#$%&'*+-/=?^_`{|}~.x");
}

TEST(ParsePath, DotAtomLocalPart) {
    PathParse r = parse("<first.middle.last@sub.example.org>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "first.middle.last");
    EXPECT_EQ(r.address.domain, "sub.example.org");
}

TEST(ParsePath, LocalPartCaseIsKept) {
    PathParse r = parse("<UsEr@ExAmPlE.CoM>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.mailbox(), "UsEr@ExAmPlE.CoM");
}

TEST(ParsePath, PercentAndBangAreKeptVerbatim) {
    // No %-hack or bang path interpretation: relayed as written.
    PathParse r = parse("<a%b@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "a%b");
    EXPECT_EQ(r.address.domain, "c.example");
    r = parse("<host!user@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "host!user");
}

// ---- null path and postmaster ----------------------------------------------------------------

TEST(ParsePath, NullPathOnlyWithAllowNull) {
    PathParse r = parse("<>", kReverse);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.null);
    EXPECT_EQ(r.address.mailbox(), "");
    EXPECT_EQ(r.consumed, 2u);

    EXPECT_EQ(parse("<>", kStrict).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<>", kForward).error, AddressError::kSyntax);
}

TEST(ParsePath, NullPathFollowedByParameters) {
    PathParse r = parse("<> SIZE=10", kReverse);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.null);
    EXPECT_EQ(r.consumed, 2u);
}

TEST(ParsePath, NullPathWithSpaceIsNotNull) {
    EXPECT_EQ(parse("< >", kReverse).error, AddressError::kSyntax);
}

TEST(ParsePath, PostmasterOnlyWithAllowPostmaster) {
    PathParse r = parse("<postmaster>", kForward);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "postmaster");
    EXPECT_TRUE(r.address.domain.empty());
    EXPECT_EQ(r.address.mailbox(), "postmaster");
    EXPECT_FALSE(r.address.null);

    EXPECT_EQ(parse("<postmaster>", kStrict).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<postmaster>", kReverse).error, AddressError::kSyntax);
}

TEST(ParsePath, PostmasterIsCaseInsensitiveAndKeepsSpelling) {
    PathParse r = parse("<PostMaster>", kForward);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "PostMaster");
    EXPECT_EQ(r.address.mailbox(), "PostMaster");
}

TEST(ParsePath, OtherBareLocalPartsAreRejected) {
    EXPECT_EQ(parse("<root>", kForward).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<postmasters>", kForward).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<postmaste>", kForward).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<\"postmaster\">", kForward).error, AddressError::kSyntax);
}

TEST(ParsePath, PostmasterWithDomainIsAnOrdinaryMailbox) {
    PathParse r = parse("<postmaster@example.com>", kStrict);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.mailbox(), "postmaster@example.com");
}

TEST(ParsePath, PostmasterAfterRouteIsRejected) {
    EXPECT_EQ(parse("<@relay.example:postmaster>", kForward).error, AddressError::kSyntax);
}

// ---- quoted local parts ----------------------------------------------------------------------

TEST(ParsePath, QuotedLocalPartKeptWithQuotes) {
    PathParse r = parse("<\"john doe\"@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "\"john doe\"");
    EXPECT_EQ(r.address.domain, "example.com");
    EXPECT_EQ(r.address.mailbox(), "\"john doe\"@example.com");
}

TEST(ParsePath, QuotedLocalPartWithEscapes) {
    PathParse r = parse(R"(<"a\"b\\c"@example.com>)");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, R"("a\"b\\c")");
}

TEST(ParsePath, QuotedLocalPartWithSpecials) {
    PathParse r = parse("<\"a@b,c:d<e>f\"@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "\"a@b,c:d<e>f\"");
    EXPECT_EQ(r.address.domain, "example.com");
}

TEST(ParsePath, EmptyQuotedLocalPart) {
    PathParse r = parse("<\"\"@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, "\"\"");
}

TEST(ParsePath, QuotedEscapedQuoteDoesNotEndString) {
    // The escaped quote and ">" stay inside the quoted string.
    std::string_view input = R"(<"a\">"@x.example>!)";
    PathParse r = parse(input);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, R"("a\">")");
    EXPECT_EQ(input.substr(r.consumed), "!");
}

TEST(ParsePath, BadQuotedLocalParts) {
    EXPECT_EQ(parse("<\"unterminated@example.com>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<\"a\"b@example.com>").error, AddressError::kSyntax);  // text after quote
    EXPECT_EQ(parse("<a\"b\"@example.com>").error, AddressError::kSyntax);  // quote mid atom
    EXPECT_EQ(parse("<\"a\"@>").error, AddressError::kSyntax);              // empty domain
    EXPECT_EQ(parse("<\"a\">").error, AddressError::kSyntax);               // no domain
    EXPECT_EQ(parse(std::string("<\"a\tb\"@x.example>")).error, AddressError::kSyntax);  // TAB
    EXPECT_EQ(parse(std::string("<\"a\x01\"@x.example>")).error, AddressError::kSyntax);
    EXPECT_EQ(parse(std::string("<\"a\\\x01\"@x.example>")).error, AddressError::kSyntax);
    EXPECT_EQ(parse("<\"a\\").error, AddressError::kSyntax);  // escape at the very end
}

// ---- address literals ------------------------------------------------------------------------

TEST(ParsePath, Ipv4Literal) {
    PathParse r = parse("<user@[192.0.2.1]>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.domain, "[192.0.2.1]");
    EXPECT_EQ(r.address.mailbox(), "user@[192.0.2.1]");
}

TEST(ParsePath, Ipv6Literal) {
    PathParse r = parse("<user@[IPv6:::1]>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.domain, "[IPv6:::1]");
    r = parse("<user@[IPv6:2001:db8::1]>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.domain, "[IPv6:2001:db8::1]");
}

TEST(ParsePath, UnregisteredGeneralAddressLiteralIsRefused) {
    // Only the IPv6 tag is registered (RFC 5321 4.1.3): no other literal names a destination.
    EXPECT_EQ(parse("<user@[x-tag:some-content]>").error, AddressError::kSyntax);
}

TEST(ParsePath, SourceRouteWithIpv6Literal) {
    // The colons of an IPv6 literal are not the end of the route.
    PathParse r = parse("<@[IPv6:::1],@b.example:user@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.had_route);
    EXPECT_EQ(r.address.mailbox(), "user@c.example");
}

TEST(ParsePath, AllNumericTopLevelLabelIsRefused) {
    EXPECT_EQ(parse("<user@1.2.3.999>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@1.2.3.4>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@123.example>").error, AddressError::kNone);
}

TEST(ParsePath, BadAddressLiterals) {
    EXPECT_EQ(parse("<user@[1.2.3]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[256.1.1.1]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[IPv6:1.2.3.4.5]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[IPv6:zz::1]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[1.2.3.4>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@1.2.3.4]>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<user@[::1]>").error, AddressError::kSyntax);  // IPv6 needs the tag
}

TEST(IsValidAddressLiteral, Accepts) {
    EXPECT_TRUE(is_valid_address_literal("[127.0.0.1]"));
    EXPECT_TRUE(is_valid_address_literal("[0.0.0.0]"));
    EXPECT_TRUE(is_valid_address_literal("[255.255.255.255]"));
    EXPECT_TRUE(is_valid_address_literal("[IPv6:::1]"));
    EXPECT_TRUE(is_valid_address_literal("[IPv6:::]"));
    EXPECT_TRUE(is_valid_address_literal("[IPv6:2001:db8::ff00:42:8329]"));
    EXPECT_TRUE(is_valid_address_literal("[IPv6:::ffff:192.0.2.1]"));
    EXPECT_TRUE(is_valid_address_literal("[ipv6:::1]"));
    EXPECT_TRUE(is_valid_address_literal("[IPV6:::1]"));
}

TEST(IsValidAddressLiteral, Rejects) {
    EXPECT_FALSE(is_valid_address_literal(""));
    EXPECT_FALSE(is_valid_address_literal("[]"));
    EXPECT_FALSE(is_valid_address_literal("["));
    EXPECT_FALSE(is_valid_address_literal("127.0.0.1"));
    EXPECT_FALSE(is_valid_address_literal("[127.0.0.1"));
    EXPECT_FALSE(is_valid_address_literal("127.0.0.1]"));
    EXPECT_FALSE(is_valid_address_literal("[127.0.0.1.5]"));
    EXPECT_FALSE(is_valid_address_literal("[127.0.0]"));
    EXPECT_FALSE(is_valid_address_literal("[1.2.3.256]"));
    EXPECT_FALSE(is_valid_address_literal("[ 1.2.3.4]"));
    EXPECT_FALSE(is_valid_address_literal("[IPv6:]"));
    EXPECT_FALSE(is_valid_address_literal("[IPv6:1.2.3.4]"));
    EXPECT_FALSE(is_valid_address_literal("[IPv6:1::2::3]"));
    EXPECT_FALSE(is_valid_address_literal("[IPv6:12345::1]"));
    EXPECT_FALSE(is_valid_address_literal("[::1]"));
    EXPECT_FALSE(is_valid_address_literal("[tag:]"));      // 1*dcontent
    EXPECT_FALSE(is_valid_address_literal("[:content]"));  // empty tag
    EXPECT_FALSE(is_valid_address_literal("[tag]"));       // no colon
    EXPECT_FALSE(is_valid_address_literal("[-tag:x]"));    // tag is an Ldh-str
    EXPECT_FALSE(is_valid_address_literal("[tag:a b]"));   // space is not dcontent
    EXPECT_FALSE(is_valid_address_literal("[tag:content]"));  // unregistered tag
    EXPECT_FALSE(is_valid_address_literal("[IPV6:zz:yy]"));
    EXPECT_FALSE(is_valid_address_literal("[tag:a[b]"));   // "[" is not dcontent
    EXPECT_FALSE(is_valid_address_literal("[tag:a\\b]"));  // "\" is not dcontent
    EXPECT_FALSE(is_valid_address_literal("[tag:a]b]"));   // "]" is not dcontent
    EXPECT_FALSE(is_valid_address_literal("[tag:\x7f]"));
}

// ---- source routes ---------------------------------------------------------------------------

TEST(ParsePath, SourceRouteIsDropped) {
    PathParse r = parse("<@a.example,@b.example:user@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.had_route);
    EXPECT_EQ(r.address.local, "user");
    EXPECT_EQ(r.address.domain, "c.example");
    EXPECT_EQ(r.address.mailbox(), "user@c.example");
}

TEST(ParsePath, SingleHopRouteAndShortNames) {
    PathParse r = parse("<@a:user@c>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.had_route);
    EXPECT_EQ(r.address.mailbox(), "user@c");

    r = parse("<@a,@b:user@c>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.had_route);
    EXPECT_EQ(r.address.mailbox(), "user@c");
}

TEST(ParsePath, RouteWithAddressLiteral) {
    PathParse r = parse("<@[192.0.2.1]:user@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.had_route);
    EXPECT_EQ(r.address.mailbox(), "user@c.example");
}

TEST(ParsePath, NoRouteFlagWithoutRoute) {
    PathParse r = parse("<user@c.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_FALSE(r.address.had_route);
}

TEST(ParsePath, BadSourceRoutes) {
    EXPECT_EQ(parse("<@a.example>").error, AddressError::kSyntax);   // no colon
    EXPECT_EQ(parse("<@:user@c>").error, AddressError::kSyntax);     // empty domain
    EXPECT_EQ(parse("<@a,:user@c>").error, AddressError::kSyntax);   // empty hop
    EXPECT_EQ(parse("<@a,b:user@c>").error, AddressError::kSyntax);  // hop without @
    EXPECT_EQ(parse("<@a,,@b:user@c>").error, AddressError::kSyntax);
    EXPECT_EQ(parse("<@-a:user@c>").error, AddressError::kSyntax);  // bad domain
    EXPECT_EQ(parse("<@a:>").error, AddressError::kSyntax);         // no mailbox
    EXPECT_EQ(parse("<@a:user>").error, AddressError::kSyntax);     // no domain
    EXPECT_EQ(parse("<@a:<>>", kReverse).error, AddressError::kSyntax);
}

// ---- bad syntax ------------------------------------------------------------------------------

TEST(ParsePath, BadSyntax) {
    const char* cases[] = {
        "",
        "user@example.com",     // no brackets
        "<user@example.com",    // missing >
        "user@example.com>",    // missing <
        " <user@example.com>",  // leading space
        "< user@example.com>",  // space inside
        "<user@example.com >",
        "<user @example.com>",
        "<us er@example.com>",
        "<user@exa mple.com>",
        "<@>",
        "<user@>",               // empty domain
        "<@example.com>",        // empty local part (parsed as a route without colon)
        "<.user@example.com>",   // empty first atom
        "<user.@example.com>",   // trailing dot in local part
        "<us..er@example.com>",  // double dot in local part
        "<user@example..com>",   // double dot in domain
        "<user@.example.com>",   // leading dot in domain
        "<user@example.com.>",   // trailing dot in domain
        "<user@@example.com>",
        "<user@example@com>",
        "<user@-example.com>",  // hyphen at label start
        "<user@example-.com>",  // hyphen at label end
        "<user@exa(mple.com>",
        "<user(x)@example.com>",
        "<a,b@example.com>",
        "<a;b@example.com>",
        "<a\\b@example.com>",  // backslash only inside quotes
        "<a[b@example.com>",
        "<user@example.com><x>",  // fine up to '>', then parsed; see below
    };
    for (const char* c : cases) {
        std::string_view input = c;
        PathParse r = parse(input, kReverse);
        if (input == "<user@example.com><x>") {
            // The path itself is valid; what follows is left to the caller.
            EXPECT_EQ(r.error, AddressError::kNone);
            EXPECT_EQ(input.substr(r.consumed), "<x>");
            continue;
        }
        EXPECT_EQ(r.error, AddressError::kSyntax) << "input: " << input;
    }
}

TEST(ParsePath, ControlCharactersRejected) {
    EXPECT_EQ(parse(std::string("<us\0er@example.com>", 19)).error, AddressError::kSyntax);
    EXPECT_EQ(parse(std::string("<us\ter@example.com>")).error, AddressError::kSyntax);
    EXPECT_EQ(parse(std::string("<user@exa\x7fmple.com>")).error, AddressError::kSyntax);
    EXPECT_EQ(parse(std::string("<user@example.com\r>")).error, AddressError::kSyntax);
}

TEST(ParsePath, UnderscoreAcceptedInDomain) {
    PathParse r = parse("<user@my_host.example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.domain, "my_host.example.com");
}

TEST(ParsePath, SingleLabelDomain) {
    PathParse r = parse("<user@localhost>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.domain, "localhost");
}

// ---- length limits ---------------------------------------------------------------------------

TEST(ParsePath, LocalPartLimitIs64) {
    std::string local64(64, 'a');
    PathParse r = parse("<" + local64 + "@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.address.local, local64);

    std::string local65(65, 'a');
    EXPECT_EQ(parse("<" + local65 + "@example.com>").error, AddressError::kLocalTooLong);
}

TEST(ParsePath, QuotedLocalPartLimitCountsQuotes) {
    // 62 characters inside the quotes: 64 octets as written.
    std::string ok = "\"" + std::string(62, 'a') + "\"";
    EXPECT_EQ(parse("<" + ok + "@x.example>").error, AddressError::kNone);
    std::string too_long = "\"" + std::string(63, 'a') + "\"";
    EXPECT_EQ(parse("<" + too_long + "@x.example>").error, AddressError::kLocalTooLong);
}

// A domain made of labels of the given lengths.
std::string domain_from_labels(std::initializer_list<size_t> lengths) {
    std::string d;
    char fill = 'a';
    for (size_t n : lengths) {
        if (!d.empty()) d += '.';
        d += std::string(n, fill++);
    }
    return d;
}

TEST(ParsePath, PathLimitIs256IncludingBrackets) {
    // "<" + local + "@" + domain + ">" = 256 octets exactly.
    std::string domain = domain_from_labels({63, 63, 63, 48});
    ASSERT_EQ(domain.size(), 240u);
    ASSERT_TRUE(is_valid_domain(domain, false));
    std::string local(256 - 3 - domain.size(), 'l');
    std::string path = "<" + local + "@" + domain + ">";
    ASSERT_EQ(path.size(), 256u);
    PathParse r = parse(path);
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_EQ(r.consumed, 256u);
    EXPECT_EQ(r.address.domain, domain);

    std::string longer = "<" + local + "l@" + domain + ">";
    ASSERT_EQ(longer.size(), 257u);
    EXPECT_EQ(parse(longer).error, AddressError::kPathTooLong);
}

TEST(ParsePath, LongDomainIsRefused) {
    // A 255-octet domain is valid on its own but cannot fit in a 256-octet path with a local
    // part; a longer one is refused too. Either way the address is not accepted.
    std::string domain255 = domain_from_labels({63, 63, 63, 63});
    ASSERT_EQ(domain255.size(), 255u);
    EXPECT_TRUE(is_valid_domain(domain255, false));
    PathParse r = parse("<a@" + domain255 + ">");
    EXPECT_TRUE(r.error == AddressError::kPathTooLong || r.error == AddressError::kDomainTooLong)
        << static_cast<int>(r.error);
    std::string domain256 = domain_from_labels({63, 63, 63, 33, 30});
    r = parse("<a@" + domain256 + ">");
    EXPECT_TRUE(r.error == AddressError::kPathTooLong || r.error == AddressError::kDomainTooLong)
        << static_cast<int>(r.error);
}

TEST(ParsePath, LongNonsenseWithoutCloseIsSyntax) {
    std::string input = "<" + std::string(10000, 'a');
    EXPECT_EQ(parse(input).error, AddressError::kSyntax);
}

// ---- UTF-8 -----------------------------------------------------------------------------------

TEST(ParsePath, Utf8LocalPartAndDomain) {
    PathParse r = parse(
        "<j\xc3\xb6rg@b\xc3\xbc"
        "cher.example>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.utf8);
    EXPECT_EQ(r.address.local, "j\xc3\xb6rg");
    EXPECT_EQ(r.address.domain,
              "b\xc3\xbc"
              "cher.example");
}

TEST(ParsePath, Utf8FourByteAndCjk) {
    PathParse r =
        parse("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.utf8);
    r = parse("<\xf0\x9f\x98\x80@example.com>");  // U+1F600
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.utf8);
}

TEST(ParsePath, Utf8InQuotedLocalPart) {
    PathParse r = parse("<\"\xc3\xa9 x\"@example.com>");
    ASSERT_EQ(r.error, AddressError::kNone);
    EXPECT_TRUE(r.address.utf8);
    EXPECT_EQ(r.address.local, "\"\xc3\xa9 x\"");
}

TEST(ParsePath, AsciiAddressHasNoUtf8Flag) {
    EXPECT_FALSE(parse("<a@b.example>").address.utf8);
}

TEST(ParsePath, MalformedUtf8IsBadUtf8) {
    const char* cases[] = {
        "<\xff@example.com>",              // never valid
        "<a\xc3@example.com>",             // truncated sequence
        "<a\xc3(@example.com>",            // bad continuation
        "<\x80@example.com>",              // lone continuation
        "<\xc0\xaf@example.com>",          // overlong "/"
        "<\xc1\xbf@example.com>",          // overlong
        "<\xe0\x80\xaf@example.com>",      // overlong 3-byte
        "<\xf0\x80\x80\xaf@example.com>",  // overlong 4-byte
        "<\xed\xa0\x80@example.com>",      // surrogate U+D800
        "<\xed\xbf\xbf@example.com>",      // surrogate U+DFFF
        "<\xf4\x90\x80\x80@example.com>",  // above U+10FFFF
        "<\xf5\x80\x80\x80@example.com>",
        "<a@ex\xff"
        "ample.com>",  // in the domain
        "<a@example.com\xc3>",
    };
    for (const char* c : cases) {
        EXPECT_EQ(parse(c).error, AddressError::kBadUtf8) << "input: " << c;
    }
}

TEST(ParsePath, Utf8InAtomsButNoAsciiSpace) {
    // RFC 6531 allows any UTF8-non-ascii in atoms (U+00A0 included); an ASCII space is not.
    EXPECT_EQ(parse("<a\xc2\xa0@example.com>").error, AddressError::kNone);
    EXPECT_EQ(parse("<a \xc3\xa9@example.com>").error, AddressError::kSyntax);
}

TEST(IsValidUtf8, Cases) {
    EXPECT_TRUE(is_valid_utf8(""));
    EXPECT_TRUE(is_valid_utf8("plain ascii"));
    EXPECT_TRUE(is_valid_utf8("\xc2\x80"));          // U+0080
    EXPECT_TRUE(is_valid_utf8("\xdf\xbf"));          // U+07FF
    EXPECT_TRUE(is_valid_utf8("\xe0\xa0\x80"));      // U+0800
    EXPECT_TRUE(is_valid_utf8("\xed\x9f\xbf"));      // U+D7FF
    EXPECT_TRUE(is_valid_utf8("\xee\x80\x80"));      // U+E000
    EXPECT_TRUE(is_valid_utf8("\xef\xbf\xbf"));      // U+FFFF
    EXPECT_TRUE(is_valid_utf8("\xf0\x90\x80\x80"));  // U+10000
    EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
    EXPECT_TRUE(is_valid_utf8(std::string_view("\0", 1)));

    EXPECT_FALSE(is_valid_utf8("\x80"));
    EXPECT_FALSE(is_valid_utf8("\xc0\x80"));
    EXPECT_FALSE(is_valid_utf8("\xc1\x81"));
    EXPECT_FALSE(is_valid_utf8("\xe0\x9f\xbf"));
    EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));
    EXPECT_FALSE(is_valid_utf8("\xf0\x8f\xbf\xbf"));
    EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));
    EXPECT_FALSE(is_valid_utf8("\xf8\x88\x80\x80\x80"));
    EXPECT_FALSE(is_valid_utf8("\xfe"));
    EXPECT_FALSE(is_valid_utf8("\xe2\x82"));  // truncated at the end
    EXPECT_FALSE(is_valid_utf8("\xc3"));
    EXPECT_FALSE(
        is_valid_utf8("a\xc3"
                      "a"));
}

// ---- is_valid_domain -------------------------------------------------------------------------

TEST(IsValidDomain, Accepts) {
    EXPECT_TRUE(is_valid_domain("example.com", false));
    EXPECT_TRUE(is_valid_domain("localhost", false));
    EXPECT_TRUE(is_valid_domain("a", false));
    EXPECT_TRUE(is_valid_domain("a-b.c-d.example", false));
    EXPECT_TRUE(is_valid_domain("my_host.example", false));
    EXPECT_TRUE(is_valid_domain("_dmarc.example", false));
    EXPECT_TRUE(is_valid_domain("123.example", false));
    EXPECT_TRUE(is_valid_domain("xn--bcher-kva.example", false));
    EXPECT_TRUE(is_valid_domain(std::string(63, 'a') + ".example", false));
}

TEST(IsValidDomain, Rejects) {
    EXPECT_FALSE(is_valid_domain("", false));
    EXPECT_FALSE(is_valid_domain(".", false));
    EXPECT_FALSE(is_valid_domain("example.com.", false));
    EXPECT_FALSE(is_valid_domain(".example.com", false));
    EXPECT_FALSE(is_valid_domain("example..com", false));
    EXPECT_FALSE(is_valid_domain("-example.com", false));
    EXPECT_FALSE(is_valid_domain("example-.com", false));
    EXPECT_FALSE(is_valid_domain("example.-com", false));
    EXPECT_FALSE(is_valid_domain("example.com-", false));
    EXPECT_FALSE(is_valid_domain("exa mple.com", false));
    EXPECT_FALSE(is_valid_domain("exa@mple.com", false));
    EXPECT_FALSE(is_valid_domain("[127.0.0.1]", false));
    EXPECT_FALSE(is_valid_domain(std::string(64, 'a') + ".example", false));
    EXPECT_FALSE(is_valid_domain("example." + std::string(64, 'a'), false));
}

TEST(IsValidDomain, TotalLengthLimit) {
    std::string d255 = domain_from_labels({63, 63, 63, 63});
    ASSERT_EQ(d255.size(), 255u);
    EXPECT_TRUE(is_valid_domain(d255, false));
    std::string d256 = domain_from_labels({63, 63, 63, 33, 30});
    ASSERT_EQ(d256.size(), 256u);
    EXPECT_FALSE(is_valid_domain(d256, false));
}

TEST(IsValidDomain, Utf8OnlyWhenAllowed) {
    std::string u =
        "b\xc3\xbc"
        "cher.example";
    EXPECT_TRUE(is_valid_domain(u, true));
    EXPECT_FALSE(is_valid_domain(u, false));
    EXPECT_FALSE(
        is_valid_domain("b\xff"
                        "cher.example",
                        true));
    EXPECT_FALSE(is_valid_domain("b\xed\xa0\x80.example", true));
}

}  // namespace
}  // namespace postern::smtp
