// IP networks in CIDR notation ("127.0.0.0/8", "::1/128", a bare address meaning /32 or /128)
// and the match of a client address against them. IPv4-mapped IPv6 clients (::ffff:a.b.c.d)
// match IPv4 networks, as a dual-stack listener reports IPv4 clients that way.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern::config {

// An address in 16 octets; IPv4 is stored IPv4-mapped.
struct IpAddress {
    std::array<uint8_t, 16> bytes{};
    bool v4 = false;

    static std::optional<IpAddress> parse(std::string_view text);
    std::string to_string() const;
};

struct Cidr {
    IpAddress network;
    unsigned prefix = 0;  // in bits of the address family (0..32 or 0..128)

    // Nothing when text is not an address with an optional "/prefix", or when host bits are
    // set (a likely typo such as "10.0.0.1/8": write "10.0.0.0/8").
    static std::optional<Cidr> parse(std::string_view text);
    bool contains(const IpAddress& address) const;
    std::string to_string() const;
};

bool any_contains(const std::vector<Cidr>& networks, const IpAddress& address);

}  // namespace postern::config
