// SASL decoding; see sasl.hpp.
#include "proxy/smtp/sasl.hpp"

#include "proxy/smtp/base64.hpp"

namespace postern::smtp {

namespace {

constexpr size_t kMaxValue = 255;  // RFC 4616 2

bool clean(std::string_view value) {
    return value.size() <= kMaxValue &&
           value.find_first_of(std::string_view("\0\r\n", 3)) == std::string_view::npos;
}

}  // namespace

SaslError decode_plain(std::string_view response, SaslPlain& out) {
    if (response == "=") return SaslError::kBadStructure;
    auto decoded = base64_decode(response);
    if (!decoded) return SaslError::kBadBase64;
    const std::string& m = *decoded;
    const size_t first = m.find('\0');
    if (first == std::string::npos) return SaslError::kBadStructure;
    const size_t second = m.find('\0', first + 1);
    if (second == std::string::npos) return SaslError::kBadStructure;
    std::string_view authzid(m.data(), first);
    std::string_view authcid(m.data() + first + 1, second - first - 1);
    std::string_view password(m.data() + second + 1, m.size() - second - 1);
    if (authcid.empty() || password.empty()) return SaslError::kBadStructure;
    if (!clean(authzid) || !clean(authcid) || !clean(password)) return SaslError::kBadOctets;
    out.authzid = authzid;
    out.authcid = authcid;
    out.password = password;
    return SaslError::kNone;
}

SaslError decode_login(std::string_view response, std::string& out) {
    auto decoded = base64_decode(response);
    if (!decoded) return SaslError::kBadBase64;
    if (decoded->empty()) return SaslError::kBadStructure;
    if (!clean(*decoded)) return SaslError::kBadOctets;
    out = std::move(*decoded);
    return SaslError::kNone;
}

}  // namespace postern::smtp
