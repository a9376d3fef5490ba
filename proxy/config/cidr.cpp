// CIDR parsing and matching; see cidr.hpp.
#include "proxy/config/cidr.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace postern::config {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    std::string s(text);
    IpAddress a;
    in_addr v4{};
    if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
        a.v4 = true;
        a.bytes[10] = 0xff;
        a.bytes[11] = 0xff;
        std::memcpy(a.bytes.data() + 12, &v4, 4);
        return a;
    }
    in6_addr v6{};
    if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
        std::memcpy(a.bytes.data(), &v6, 16);
        static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        a.v4 = std::memcmp(a.bytes.data(), kMapped, 12) == 0;
        return a;
    }
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    if (v4) {
        // Written here: glibc's inet_ntop formats IPv4 with sprintf, and every session asks.
        char* end = buf;
        for (size_t i = 12; i < 16; ++i) {
            if (i > 12) *end++ = '.';
            end = std::to_chars(end, buf + sizeof buf, bytes[i]).ptr;
        }
        return std::string(buf, end);
    }
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
    return buf;
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
    size_t slash = text.find('/');
    auto address = IpAddress::parse(text.substr(0, slash));
    if (!address) return std::nullopt;
    // An IPv4-mapped IPv6 network is kept in IPv6 prefix terms; plain IPv4 in IPv4 terms.
    bool v4_syntax = text.substr(0, slash).find(':') == std::string_view::npos;
    unsigned max_prefix = v4_syntax ? 32 : 128;
    unsigned prefix = max_prefix;
    if (slash != std::string_view::npos) {
        std::string_view p = text.substr(slash + 1);
        auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
        if (ec != std::errc() || ptr != p.data() + p.size() || p.empty() || prefix > max_prefix) {
            return std::nullopt;
        }
    }
    Cidr cidr{*address, v4_syntax ? prefix + 96 : prefix};
    // Host bits must be zero.
    for (unsigned bit = cidr.prefix; bit < 128; ++bit) {
        if (cidr.network.bytes[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;
    }
    cidr.prefix = prefix;
    // contains() reads `prefix` in IPv4 terms only for IPv4 syntax. IpAddress::parse marks an
    // IPv4-mapped IPv6 address (::ffff:a.b.c.d) as v4 too, but its prefix is in IPv6 terms.
    cidr.network.v4 = v4_syntax;
    return cidr;
}

bool Cidr::contains(const IpAddress& address) const {
    const unsigned bits = network.v4 ? prefix + 96 : prefix;
    if (network.v4 && !address.v4) return false;
    // Whole octets at once, then the high bits of the octet the prefix ends in.
    const unsigned whole = bits / 8;
    if (std::memcmp(network.bytes.data(), address.bytes.data(), whole) != 0) return false;
    if (bits % 8 == 0) return true;
    const auto mask = static_cast<uint8_t>(0xff00 >> (bits % 8));
    return (network.bytes[whole] & mask) == (address.bytes[whole] & mask);
}

std::string Cidr::to_string() const {
    return network.to_string() + "/" + std::to_string(prefix);
}

bool any_contains(const std::vector<Cidr>& networks, const IpAddress& address) {
    for (const Cidr& n : networks) {
        if (n.contains(address)) return true;
    }
    return false;
}

}  // namespace postern::config
