// SASL PLAIN and LOGIN responses (RFC 4616, RFC 4954).
#include "proxy/smtp/sasl.hpp"

#include <gtest/gtest.h>

#include "proxy/smtp/base64.hpp"

namespace postern::smtp {
namespace {

std::string b64(std::string_view s) {
    return base64_encode(s);
}

TEST(SaslPlain, UserAndPassword) {
    SaslPlain p;
    ASSERT_EQ(decode_plain(b64(std::string("\0app\0s3cret", 11)), p), SaslError::kNone);
    EXPECT_EQ(p.authzid, "");
    EXPECT_EQ(p.authcid, "app");
    EXPECT_EQ(p.password, "s3cret");
    ASSERT_EQ(decode_plain(b64(std::string("admin\0app\0pw", 12)), p), SaslError::kNone);
    EXPECT_EQ(p.authzid, "admin");
    // A password may hold a blank or a colon; only NUL, CR and LF are refused.
    ASSERT_EQ(decode_plain(b64(std::string("\0app\0a b:c", 10)), p), SaslError::kNone);
    EXPECT_EQ(p.password, "a b:c");
}

TEST(SaslPlain, Refusals) {
    SaslPlain p;
    EXPECT_EQ(decode_plain("=", p), SaslError::kBadStructure);
    EXPECT_EQ(decode_plain("not base64!", p), SaslError::kBadBase64);
    EXPECT_EQ(decode_plain("AGFwcABzM2NyZXQ", p), SaslError::kBadBase64);  // no padding
    EXPECT_EQ(decode_plain(b64("apps3cret"), p), SaslError::kBadStructure);
    EXPECT_EQ(decode_plain(b64(std::string("\0apps3cret", 10)), p), SaslError::kBadStructure);
    EXPECT_EQ(decode_plain(b64(std::string("\0\0pw", 4)), p), SaslError::kBadStructure);
    EXPECT_EQ(decode_plain(b64(std::string("\0app\0", 5)), p), SaslError::kBadStructure);
    EXPECT_EQ(decode_plain(b64(std::string("\0app\0pw\0more", 12)), p), SaslError::kBadOctets);
    EXPECT_EQ(decode_plain(b64(std::string("\0ap\rp\0pw", 8)), p), SaslError::kBadOctets);
    EXPECT_EQ(decode_plain(b64(std::string("\0app\0p\nw", 8)), p), SaslError::kBadOctets);
    EXPECT_EQ(decode_plain(b64(std::string("\0app\0", 5) + std::string(256, 'x')), p),
              SaslError::kBadOctets);
    EXPECT_EQ(decode_plain(b64(std::string("\0app\0", 5) + std::string(255, 'x')), p),
              SaslError::kNone);
}

TEST(SaslLogin, Steps) {
    std::string v;
    ASSERT_EQ(decode_login("YXBw", v), SaslError::kNone);
    EXPECT_EQ(v, "app");
    EXPECT_EQ(decode_login("", v), SaslError::kBadStructure);
    EXPECT_EQ(decode_login("YXB", v), SaslError::kBadBase64);
    EXPECT_EQ(decode_login(b64(std::string("a\0b", 3)), v), SaslError::kBadOctets);
    EXPECT_EQ(decode_login(b64("a\r\nb"), v), SaslError::kBadOctets);
}

}  // namespace
}  // namespace postern::smtp
