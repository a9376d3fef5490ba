// From: field addresses (RFC 5322 3.6.2, 3.4).
#include "proxy/smtp/header_from.hpp"

#include <gtest/gtest.h>

namespace postern::smtp {
namespace {

using List = std::vector<std::string>;

std::optional<List> from(const std::string& headers) {
    return header_from_addresses(headers + "\r\nbody From: <x@evil.example>\r\n");
}

TEST(HeaderFrom, Forms) {
    EXPECT_EQ(from("From: a@example.com\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("from:<a@example.com>\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("From: App One <a@example.com>\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("From: \"One, <two>\" <a@example.com>\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("From: a@example.com (App <b@evil.example>)\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("From: App\r\n <a@example.com>\r\n"), List{"a@example.com"});
    EXPECT_EQ(from("From: a@example.com, B <b@example.org>\r\n"),
              (List{"a@example.com", "b@example.org"}));
    EXPECT_EQ(from("From: Team: a@example.com, b@example.org;\r\n"),
              (List{"a@example.com", "b@example.org"}));
    EXPECT_EQ(from("Subject: x\r\nFrom: <a@example.com>\r\nTo: y@example.net\r\n"),
              List{"a@example.com"});
}

TEST(HeaderFrom, Refusals) {
    EXPECT_EQ(from("Subject: no from\r\n"), std::nullopt);
    EXPECT_EQ(from("From: a@example.com\r\nFrom: b@evil.example\r\n"), std::nullopt);
    EXPECT_EQ(from("From: \r\n"), std::nullopt);
    EXPECT_EQ(from("From: (only a comment)\r\n"), std::nullopt);
    // Only the header section counts.
    EXPECT_EQ(header_from_addresses("Subject: x\r\n\r\nFrom: a@example.com\r\n"), std::nullopt);
    // "X-From:" is another field.
    EXPECT_EQ(from("X-From: a@example.com\r\n"), std::nullopt);
}

}  // namespace
}  // namespace postern::smtp
