// Path parser; see address.hpp. The grammar is RFC 5321 4.1.2 and 4.1.3, extended by
// RFC 6531 3.3 (UTF8-non-ascii in atext, qtextSMTP and sub-domains).
#include "proxy/smtp/address.hpp"

#include <arpa/inet.h>

#include <string>

namespace postern::smtp {
namespace {

bool is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

// atext of RFC 5322 3.2.3.
bool is_atext(unsigned char c) {
    if (is_alpha(c) || is_digit(c)) return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '/':
        case '=':
        case '?':
        case '^':
        case '_':
        case '`':
        case '{':
        case '|':
        case '}':
        case '~':
            return true;
        default:
            return false;
    }
}

// Length of the UTF-8 sequence that starts at text[i], or 0 when it is malformed.
size_t utf8_sequence(std::string_view text, size_t i) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t len;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else
        return 0;
    if (i + len > text.size()) return 0;
    for (size_t k = 1; k < len; ++k) {
        auto cc = static_cast<unsigned char>(text[i + k]);
        if ((cc & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return len;
}

bool is_ldh_label(std::string_view label, bool utf8) {
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (size_t i = 0; i < label.size();) {
        auto c = static_cast<unsigned char>(label[i]);
        if (c >= 0x80) {
            size_t n = utf8 ? utf8_sequence(label, i) : 0;
            if (n == 0) return false;
            i += n;
            continue;
        }
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') return false;
        ++i;
    }
    return true;
}

// Dot-string of atoms, with UTF-8 allowed in atoms (RFC 6531).
bool is_dot_string(std::string_view s) {
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '.') {
            if (s[i + 1] == '.') return false;  // empty atom
            ++i;
        } else if (c >= 0x80) {
            size_t n = utf8_sequence(s, i);
            if (n == 0) return false;
            i += n;
        } else if (is_atext(c)) {
            ++i;
        } else {
            return false;
        }
    }
    return true;
}

// Quoted-string at s[pos] == '"'; returns the index after the closing quote, or npos.
size_t scan_quoted(std::string_view s, size_t pos) {
    for (size_t i = pos + 1; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '"') return i + 1;
        if (c == '\\') {
            if (i + 1 >= s.size()) return std::string_view::npos;
            auto q = static_cast<unsigned char>(s[i + 1]);
            if (q < 32 || q > 126) return std::string_view::npos;  // quoted-pairSMTP
            i += 2;
        } else if (c >= 0x80) {
            size_t n = utf8_sequence(s, i);
            if (n == 0) return std::string_view::npos;
            i += n;
        } else if (c >= 32 && c <= 126) {
            ++i;  // qtextSMTP: %d32-33 / %d35-91 / %d93-126
        } else {
            return std::string_view::npos;
        }
    }
    return std::string_view::npos;
}

bool has_high_octet(std::string_view s) {
    for (unsigned char c : s) {
        if (c >= 0x80) return true;
    }
    return false;
}

// The domain or address literal of a mailbox or At-domain.
bool is_domain_or_literal(std::string_view s) {
    if (!s.empty() && s.front() == '[') return is_valid_address_literal(s);
    return is_valid_domain(s, true);
}

// The first `c` that is not inside an address literal "[...]" (whose IPv6 form holds colons).
size_t find_outside_brackets(std::string_view s, char c) {
    bool in_literal = false;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '[') in_literal = true;
        if (s[i] == ']') in_literal = false;
        if (s[i] == c && !in_literal) return i;
    }
    return std::string_view::npos;
}

bool iequals_postmaster(std::string_view s) {
    constexpr std::string_view kPostmaster = "postmaster";
    if (s.size() != kPostmaster.size()) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != kPostmaster[i]) return false;
    }
    return true;
}

}  // namespace

std::string Address::mailbox() const {
    if (null) return {};
    if (domain.empty()) return local;
    return local + "@" + domain;
}

bool is_valid_utf8(std::string_view text) {
    for (size_t i = 0; i < text.size();) {
        size_t n = utf8_sequence(text, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

bool is_valid_domain(std::string_view domain, bool utf8) {
    if (domain.empty() || domain.size() > kMaxDomain) return false;
    size_t start = 0;
    while (true) {
        size_t dot = domain.find('.', start);
        std::string_view label = domain.substr(start, dot - start);
        if (!is_ldh_label(label, utf8)) return false;
        if (dot == std::string_view::npos) {
            // An all-numeric last label is an IP address written without brackets, never a
            // top-level domain (RFC 3696 2): "1.2.3.999" is refused, "[1.2.3.4]" is the way.
            return domain.find('.') == std::string_view::npos ||
                   label.find_first_not_of("0123456789") != std::string_view::npos;
        }
        start = dot + 1;
    }
}

bool is_valid_address_literal(std::string_view literal) {
    if (literal.size() < 3 || literal.front() != '[' || literal.back() != ']') return false;
    std::string inner(literal.substr(1, literal.size() - 2));
    unsigned char buf[16];
    // The tag is case-insensitive; "IPv6" is the only one registered (RFC 5321 4.1.3), so any
    // other General-address-literal names nothing postern could deliver to.
    if (inner.size() > 5 && (inner[0] | 0x20) == 'i' && (inner[1] | 0x20) == 'p' &&
        (inner[2] | 0x20) == 'v' && inner[3] == '6' && inner[4] == ':') {
        return inet_pton(AF_INET6, inner.c_str() + 5, buf) == 1;
    }
    return inet_pton(AF_INET, inner.c_str(), buf) == 1;
}

PathParse parse_path(std::string_view input, PathOptions options) {
    PathParse result;
    auto fail = [&](AddressError e) {
        result.error = e;
        return result;
    };
    if (input.empty() || input.front() != '<') return fail(AddressError::kSyntax);

    // Find the closing ">" outside a quoted string.
    size_t end = std::string_view::npos;
    for (size_t i = 1; i < input.size(); ++i) {
        if (input[i] == '"') {
            size_t after = scan_quoted(input, i);
            if (after == std::string_view::npos) return fail(AddressError::kSyntax);
            i = after - 1;
        } else if (input[i] == '>') {
            end = i;
            break;
        }
    }
    if (end == std::string_view::npos) return fail(AddressError::kSyntax);
    result.consumed = end + 1;
    std::string_view inner = input.substr(1, end - 1);
    if (end + 1 > kMaxPath) return fail(AddressError::kPathTooLong);
    if (has_high_octet(inner)) {
        if (!is_valid_utf8(inner)) return fail(AddressError::kBadUtf8);
        result.address.utf8 = true;
    }

    if (inner.empty()) {
        if (!options.allow_null) return fail(AddressError::kSyntax);
        result.address.null = true;
        return result;
    }

    // A-d-l ":" : accepted and ignored (RFC 5321 4.1.2 and appendix C). The mailbox after it
    // is what is relayed, so a route can never redirect mail.
    if (inner.front() == '@') {
        size_t colon = find_outside_brackets(inner, ':');
        if (colon == std::string_view::npos) return fail(AddressError::kSyntax);
        std::string_view adl = inner.substr(0, colon);
        size_t start = 0;
        while (true) {  // every At-domain, including an empty one after a trailing ","
            size_t comma = adl.find(',', start);
            std::string_view at_domain = adl.substr(start, comma - start);
            if (at_domain.size() < 2 || at_domain.front() != '@' ||
                !is_domain_or_literal(at_domain.substr(1))) {
                return fail(AddressError::kSyntax);
            }
            if (comma == std::string_view::npos) break;
            start = comma + 1;
        }
        inner = inner.substr(colon + 1);
        result.address.had_route = true;
    }

    // Local-part: quoted string or dot-string, then "@" domain.
    size_t local_end;
    if (!inner.empty() && inner.front() == '"') {
        local_end = scan_quoted(inner, 0);
        if (local_end == std::string_view::npos) return fail(AddressError::kSyntax);
    } else {
        local_end = inner.find('@');
        if (local_end == std::string_view::npos) local_end = inner.size();
        if (!is_dot_string(inner.substr(0, local_end))) return fail(AddressError::kSyntax);
    }
    std::string_view local = inner.substr(0, local_end);

    if (local_end == inner.size()) {
        // Only "<Postmaster>" may stand without a domain (RFC 5321 4.1.1.3).
        if (options.allow_postmaster && !result.address.had_route && iequals_postmaster(local)) {
            result.address.local = std::string(local);
            return result;
        }
        return fail(AddressError::kSyntax);
    }
    if (inner[local_end] != '@') return fail(AddressError::kSyntax);
    std::string_view domain = inner.substr(local_end + 1);
    if (local.size() > kMaxLocalPart) return fail(AddressError::kLocalTooLong);
    if (domain.size() > kMaxDomain) return fail(AddressError::kDomainTooLong);
    if (!is_domain_or_literal(domain)) return fail(AddressError::kSyntax);

    result.address.local = std::string(local);
    result.address.domain = std::string(domain);
    return result;
}

}  // namespace postern::smtp
