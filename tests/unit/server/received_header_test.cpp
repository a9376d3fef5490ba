// Unit tests for the Received header and its date (proxy/server/received_header.hpp): the RFC
// 5322 date-time in UTC, also when consecutive calls fall in the same second or not (the text
// is kept per second), and the header's lines with one recipient and with several.
#include "proxy/server/received_header.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace postern::server {
namespace {

using namespace std::chrono_literals;

std::chrono::system_clock::time_point at(std::chrono::seconds since_epoch) {
    return std::chrono::system_clock::time_point(since_epoch);
}

TEST(Rfc5322Date, FormatsUtc) {
    EXPECT_EQ(rfc5322_date(at(0s)), "Thu, 1 Jan 1970 00:00:00 +0000");
    EXPECT_EQ(rfc5322_date(at(1795880552s)), "Sat, 28 Nov 2026 15:42:32 +0000");
}

TEST(Rfc5322Date, SameSecondSameTextNextSecondNewText) {
    const auto t = at(1795880552s);
    EXPECT_EQ(rfc5322_date(t), "Sat, 28 Nov 2026 15:42:32 +0000");
    EXPECT_EQ(rfc5322_date(t + 999ms), "Sat, 28 Nov 2026 15:42:32 +0000");
    EXPECT_EQ(rfc5322_date(t + 1s), "Sat, 28 Nov 2026 15:42:33 +0000");
    EXPECT_EQ(rfc5322_date(t), "Sat, 28 Nov 2026 15:42:32 +0000");  // back again
    EXPECT_EQ(rfc5322_date(t + 86400s), "Sun, 29 Nov 2026 15:42:32 +0000");
}

TEST(ReceivedHeader, OneRecipientIsNamed) {
    queue::Envelope e;
    e.helo = "app.example";
    e.client_ip = "192.0.2.7";
    e.protocol = "ESMTP";
    e.queue_id = "Q1";
    e.received_at = at(1795880552s);
    e.recipients.push_back({});
    e.recipients.back().recipient = smtp::parse_path("<b@example.net>", {}).address;
    EXPECT_EQ(received_header(e, "relay.example"),
              "Received: from app.example ([192.0.2.7])\r\n"
              "\tby relay.example (postern) with ESMTP id Q1\r\n"
              "\tfor <b@example.net>; Sat, 28 Nov 2026 15:42:32 +0000\r\n");
    e.recipients.push_back(e.recipients.back());
    e.client_ip = "2001:db8::7";
    EXPECT_EQ(received_header(e, "relay.example"),
              "Received: from app.example ([IPv6:2001:db8::7])\r\n"
              "\tby relay.example (postern) with ESMTP id Q1;\r\n"
              "\tSat, 28 Nov 2026 15:42:32 +0000\r\n");
}

}  // namespace
}  // namespace postern::server
