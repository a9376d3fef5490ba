// Unit tests for the DATA payload encoder (proxy/smtp/dot_stuffing.hpp), checked against the
// server-side decoder: whatever postern sends, a strict receiver reads back the same message.
#include "proxy/smtp/dot_stuffing.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/smtp/data_reader.hpp"

namespace postern::smtp {
namespace {

std::string stuffed(std::string_view message) {
    std::string out;
    append_dot_stuffed(message, out);
    return out;
}

TEST(DotStuffing, PlainMessage) {
    EXPECT_EQ(stuffed("Subject: x\r\n\r\nbody\r\n"), "Subject: x\r\n\r\nbody\r\n.\r\n");
}

TEST(DotStuffing, LeadingDotsAreDoubled) {
    EXPECT_EQ(stuffed(".\r\n..x\r\na.b\r\n"), "..\r\n...x\r\na.b\r\n.\r\n");
}

TEST(DotStuffing, MissingFinalCrlfIsAdded) {
    EXPECT_EQ(stuffed("no end"), "no end\r\n.\r\n");
    EXPECT_EQ(stuffed(""), ".\r\n");
}

TEST(DotStuffing, BareLineEndsBecomeCrlf) {
    EXPECT_EQ(stuffed("a\nb\rc\r\r\n.\n"), "a\r\nb\r\nc\r\n\r\n..\r\n.\r\n");
}

TEST(DotStuffing, RoundTripThroughTheStrictReader) {
    const std::string messages[] = {
        "Subject: t\r\n\r\n.\r\n..\r\n.x\r\nend\r\n",
        "a\n.\nMAIL FROM:<x@y>\r\n",  // a smuggling attempt arrives as text, not as an end
        "tail without CRLF",
        "",
    };
    for (const std::string& m : messages) {
        std::string payload = stuffed(m);
        std::string decoded;
        DataReader reader(DataReader::Mode::kDotStuffed, BareLineEndPolicy::kReject, 1 << 20,
                          decoded);
        EXPECT_EQ(reader.feed(payload), payload.size()) << m;
        EXPECT_TRUE(reader.done()) << m;
        EXPECT_FALSE(reader.flags().bare_line_end) << m;
        // The decoded copy is the message with every line end made CRLF.
        std::string expected;
        for (size_t i = 0; i < m.size(); ++i) {
            if (m[i] == '\r' || m[i] == '\n') {
                if (m[i] == '\r' && i + 1 < m.size() && m[i + 1] == '\n') ++i;
                expected += "\r\n";
            } else {
                expected += m[i];
            }
        }
        if (!expected.empty() && expected.substr(expected.size() - 2) != "\r\n") {
            expected += "\r\n";
        }
        EXPECT_EQ(decoded, expected) << m;
    }
}

// Streaming: a message given in pieces, cut anywhere (inside a CRLF, before a dot), encodes
// exactly as the whole message does.
TEST(DotStuffer, PiecesEncodeAsTheWhole) {
    const std::vector<std::string> messages = {
        "Subject: x\r\n\r\n.dot\r\n..two\r\n.\r\nend\r\n",
        "a\rb\nc\r\n.d\r",
        ".\r\n.\r\n",
        "no line end",
        "\r\r\n\n.",
    };
    for (const std::string& m : messages) {
        std::string whole;
        append_dot_stuffed(m, whole);
        for (size_t cut1 = 0; cut1 <= m.size(); ++cut1) {
            for (size_t cut2 = cut1; cut2 <= m.size(); ++cut2) {
                DotStuffer stuffer;
                std::string pieces;
                stuffer.append(std::string_view(m).substr(0, cut1), pieces);
                stuffer.append(std::string_view(m).substr(cut1, cut2 - cut1), pieces);
                stuffer.append(std::string_view(), pieces);  // an empty piece changes nothing
                stuffer.append(std::string_view(m).substr(cut2), pieces);
                stuffer.finish(pieces);
                EXPECT_EQ(pieces, whole) << "cuts " << cut1 << "," << cut2 << " of " << m;
            }
        }
    }
}

}  // namespace
}  // namespace postern::smtp
