// RFC 5321 4.1.2 Path syntax ("<local@domain>", "<>", source routes, address literals,
// quoted local parts) with the RFC 6531 extension for UTF-8 mailboxes and the length limits
// of RFC 5321 4.5.3.1.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace postern::smtp {

inline constexpr size_t kMaxLocalPart = 64;  // RFC 5321 4.5.3.1.1
inline constexpr size_t kMaxDomain = 255;    // RFC 5321 4.5.3.1.2
inline constexpr size_t kMaxPath = 256;      // RFC 5321 4.5.3.1.3, including "<" and ">"

enum class AddressError {
    kNone,
    kSyntax,         // not a Path
    kLocalTooLong,   // local part over 64 octets
    kDomainTooLong,  // domain over 255 octets
    kPathTooLong,    // path over 256 octets
    kBadUtf8,        // octets above 127 that are not well-formed UTF-8
};

struct Address {
    // The local part exactly as written, quotes and backslashes included: it is relayed as
    // parsed and never re-interpreted (no %-hack, no bang path, no source route).
    std::string local;
    std::string
        domain;  // a domain name or an address literal "[...]"; empty for <> and <postmaster>
    bool null = false;       // the null reverse-path "<>"
    bool utf8 = false;       // holds octets above 127 (needs SMTPUTF8, RFC 6531 3.4)
    bool had_route = false;  // an A-d-l source route was given and dropped (RFC 5321 4.1.2, C.)

    // "local@domain", "" for the null path, "postmaster" for the bare postmaster form.
    std::string mailbox() const;
};

struct PathParse {
    AddressError error = AddressError::kNone;
    Address address;
    size_t consumed = 0;  // octets of input used, up to and including ">"
};

struct PathOptions {
    bool allow_null = false;        // "<>" (reverse-path only)
    bool allow_postmaster = false;  // "<Postmaster>" without a domain (forward-path only)
};

// Parses a Path at the start of input; what follows ">" is left for the ESMTP parameters.
PathParse parse_path(std::string_view input, PathOptions options);

// True for a syntactically valid Domain (RFC 5321 4.1.2, with RFC 6531 U-labels when
// utf8 is set). Underscores are accepted in labels, as real clients send them in EHLO. A name of
// several labels whose last one is all digits is refused (an address without brackets).
bool is_valid_domain(std::string_view domain, bool utf8);

// True for "[IPv4]" or "[IPv6:...]" (tag in any case). Other General-address-literal tags are
// refused: none is registered besides IPv6 (RFC 5321 4.1.3).
bool is_valid_address_literal(std::string_view literal);

// True when text is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace postern::smtp
