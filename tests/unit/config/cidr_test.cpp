// Unit tests for IP addresses and CIDR networks of the configuration (proxy/config/cidr.hpp).
#include "proxy/config/cidr.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace postern::config {
namespace {

IpAddress ip(const char* text) {
    auto a = IpAddress::parse(text);
    EXPECT_TRUE(a.has_value()) << text;
    return a.value_or(IpAddress{});
}

Cidr net(const char* text) {
    auto c = Cidr::parse(text);
    EXPECT_TRUE(c.has_value()) << text;
    return c.value_or(Cidr{});
}

// ---- IpAddress -------------------------------------------------------------------------------

TEST(IpAddress, ParseV4) {
    IpAddress a = ip("192.0.2.1");
    EXPECT_TRUE(a.v4);
    // Stored IPv4-mapped: ::ffff:192.0.2.1.
    std::array<uint8_t, 16> expected{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
    EXPECT_EQ(a.bytes, expected);
    EXPECT_EQ(a.to_string(), "192.0.2.1");
    EXPECT_EQ(ip("0.0.0.0").to_string(), "0.0.0.0");
    EXPECT_EQ(ip("255.255.255.255").to_string(), "255.255.255.255");
    EXPECT_EQ(ip("10.0.200.9").to_string(), "10.0.200.9");
}

TEST(IpAddress, ParseV6) {
    IpAddress a = ip("2001:db8::1");
    EXPECT_FALSE(a.v4);
    EXPECT_EQ(a.bytes[0], 0x20);
    EXPECT_EQ(a.bytes[1], 0x01);
    EXPECT_EQ(a.bytes[15], 0x01);
    EXPECT_EQ(a.to_string(), "2001:db8::1");
    EXPECT_EQ(ip("::1").to_string(), "::1");
    EXPECT_EQ(ip("::").to_string(), "::");
}

TEST(IpAddress, MappedV6IsV4) {
    IpAddress a = ip("::ffff:192.0.2.1");
    EXPECT_TRUE(a.v4);
    EXPECT_EQ(a.bytes, ip("192.0.2.1").bytes);
    EXPECT_EQ(a.to_string(), "192.0.2.1");
}

TEST(IpAddress, Rejects) {
    for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.4/32", "[::1]", "::1::",
                            "example.com", " 1.2.3.4", "1.2.3.4 ", "gggg::1", "1.2.3.04x"}) {
        EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
    }
}

// ---- Cidr::parse -----------------------------------------------------------------------------

TEST(CidrParse, V4Networks) {
    Cidr c = net("10.0.0.0/8");
    EXPECT_EQ(c.prefix, 8u);
    EXPECT_TRUE(c.network.v4);
    EXPECT_EQ(c.to_string(), "10.0.0.0/8");
    EXPECT_EQ(net("192.168.1.0/24").to_string(), "192.168.1.0/24");
    EXPECT_EQ(net("0.0.0.0/0").prefix, 0u);
    EXPECT_EQ(net("192.0.2.7/32").prefix, 32u);
}

TEST(CidrParse, V6Networks) {
    Cidr c = net("2001:db8::/32");
    EXPECT_EQ(c.prefix, 32u);
    EXPECT_FALSE(c.network.v4);
    EXPECT_EQ(c.to_string(), "2001:db8::/32");
    EXPECT_EQ(net("::1/128").prefix, 128u);
    EXPECT_EQ(net("::/0").prefix, 0u);
    EXPECT_EQ(net("fe80::/10").to_string(), "fe80::/10");
}

TEST(CidrParse, BareAddressIsHostNetwork) {
    Cidr v4 = net("192.0.2.1");
    EXPECT_EQ(v4.prefix, 32u);
    EXPECT_EQ(v4.to_string(), "192.0.2.1/32");
    Cidr v6 = net("::1");
    EXPECT_EQ(v6.prefix, 128u);
    EXPECT_EQ(v6.to_string(), "::1/128");
}

TEST(CidrParse, HostBitsSetAreRejected) {
    for (const char* bad : {"10.0.0.1/8", "192.168.1.1/24", "192.168.1.192/25", "0.0.0.1/0",
                            "2001:db8::1/32", "::1/127", "fe80::1/64", "::1/0"}) {
        EXPECT_FALSE(Cidr::parse(bad).has_value()) << bad;
    }
    // The same addresses with a prefix that covers the set bits are fine.
    EXPECT_TRUE(Cidr::parse("192.168.1.128/25"));
    EXPECT_FALSE(Cidr::parse("192.168.1.129/25"));
    EXPECT_TRUE(Cidr::parse("::1/128"));
}

TEST(CidrParse, PrefixOutOfRangeOrMalformed) {
    for (const char* bad :
         {"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/8/8", "10.0.0.0/8x", "10.0.0.0/ 8",
          "10.0.0.0/+8", "::/129", "::/1000", "10.0.0.0/4294967304", "/8", "", "10.0.0/8",
          "example.com/8", "10.0.0.0 /8"}) {
        EXPECT_FALSE(Cidr::parse(bad).has_value()) << bad;
    }
}

// ---- Cidr::contains --------------------------------------------------------------------------

TEST(CidrContains, V4) {
    Cidr c = net("10.0.0.0/8");
    EXPECT_TRUE(c.contains(ip("10.0.0.0")));
    EXPECT_TRUE(c.contains(ip("10.1.2.3")));
    EXPECT_TRUE(c.contains(ip("10.255.255.255")));
    EXPECT_FALSE(c.contains(ip("11.0.0.0")));
    EXPECT_FALSE(c.contains(ip("9.255.255.255")));

    Cidr c25 = net("192.168.1.128/25");
    EXPECT_TRUE(c25.contains(ip("192.168.1.128")));
    EXPECT_TRUE(c25.contains(ip("192.168.1.255")));
    EXPECT_FALSE(c25.contains(ip("192.168.1.127")));

    Cidr host = net("192.0.2.1");
    EXPECT_TRUE(host.contains(ip("192.0.2.1")));
    EXPECT_FALSE(host.contains(ip("192.0.2.2")));
}

TEST(CidrContains, V4AllMatchesOnlyV4) {
    Cidr all = net("0.0.0.0/0");
    EXPECT_TRUE(all.contains(ip("1.2.3.4")));
    EXPECT_TRUE(all.contains(ip("255.255.255.255")));
    EXPECT_TRUE(all.contains(ip("::ffff:1.2.3.4")));
    EXPECT_FALSE(all.contains(ip("::1")));
    EXPECT_FALSE(all.contains(ip("2001:db8::1")));
    EXPECT_FALSE(all.contains(ip("::")));
}

TEST(CidrContains, MappedClientMatchesV4Network) {
    // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
    EXPECT_TRUE(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    EXPECT_TRUE(net("192.0.2.0/24").contains(ip("::ffff:192.0.2.77")));
    EXPECT_FALSE(net("192.0.2.0/24").contains(ip("::ffff:192.0.3.1")));
}

TEST(CidrContains, V6) {
    Cidr c = net("2001:db8::/32");
    EXPECT_TRUE(c.contains(ip("2001:db8::1")));
    EXPECT_TRUE(c.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
    EXPECT_FALSE(c.contains(ip("2001:db9::1")));
    EXPECT_FALSE(c.contains(ip("10.0.0.1")));

    Cidr loop = net("::1/128");
    EXPECT_TRUE(loop.contains(ip("::1")));
    EXPECT_FALSE(loop.contains(ip("::2")));
    EXPECT_FALSE(loop.contains(ip("127.0.0.1")));

    Cidr odd = net("fe80::/10");
    EXPECT_TRUE(odd.contains(ip("febf::1")));
    EXPECT_FALSE(odd.contains(ip("fec0::1")));
}

TEST(CidrContains, V6AllMatchesEverything) {
    Cidr all = net("::/0");
    EXPECT_TRUE(all.contains(ip("::1")));
    EXPECT_TRUE(all.contains(ip("2001:db8::1")));
    EXPECT_TRUE(all.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    EXPECT_TRUE(all.contains(ip("10.0.0.1")));  // IPv4 is stored inside the IPv6 space
}

TEST(CidrContains, V4NetworkDoesNotMatchV6LookAlike) {
    // ::a00:1 has the same low 32 bits as 10.0.0.1 but is not an IPv4 client.
    EXPECT_FALSE(net("10.0.0.0/8").contains(ip("::a00:1")));
}

TEST(CidrContains, MappedV6NetworkSyntax) {
    // An IPv4-mapped network written in IPv6 syntax is kept in IPv6 prefix terms.
    auto c = Cidr::parse("::ffff:10.0.0.0/104");
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->prefix, 104u);
    EXPECT_TRUE(c->contains(ip("10.1.2.3")));
    EXPECT_TRUE(c->contains(ip("::ffff:10.1.2.3")));
    EXPECT_FALSE(c->contains(ip("11.0.0.1")));
    EXPECT_FALSE(c->contains(ip("2001:db8::1")));

    auto all_v4 = Cidr::parse("::ffff:0.0.0.0/96");
    ASSERT_TRUE(all_v4.has_value());
    EXPECT_TRUE(all_v4->contains(ip("192.0.2.1")));
    EXPECT_FALSE(all_v4->contains(ip("::1")));

    auto host = Cidr::parse("::ffff:192.0.2.1");
    ASSERT_TRUE(host.has_value());
    EXPECT_EQ(host->prefix, 128u);
    EXPECT_TRUE(host->contains(ip("192.0.2.1")));
    EXPECT_FALSE(host->contains(ip("192.0.2.2")));

    EXPECT_FALSE(Cidr::parse("::ffff:10.0.0.1/104").has_value()) << "host bits set";
}

TEST(AnyContains, Lists) {
    std::vector<Cidr> nets = {net("127.0.0.0/8"), net("::1/128"), net("192.0.2.0/24")};
    EXPECT_TRUE(any_contains(nets, ip("127.0.0.1")));
    EXPECT_TRUE(any_contains(nets, ip("::1")));
    EXPECT_TRUE(any_contains(nets, ip("192.0.2.200")));
    EXPECT_TRUE(any_contains(nets, ip("::ffff:192.0.2.200")));
    EXPECT_FALSE(any_contains(nets, ip("198.51.100.1")));
    EXPECT_FALSE(any_contains(nets, ip("::2")));
    EXPECT_FALSE(any_contains({}, ip("127.0.0.1")));
}

}  // namespace
}  // namespace postern::config
