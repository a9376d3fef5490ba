// Unit tests for structured log lines (proxy/observe/log.hpp): logfmt quoting and escaping,
// truncation of client values, JSON lines and json_quote.
#include "proxy/observe/log.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace postern::observe {
namespace {

std::string logfmt(std::string_view event, std::initializer_list<Field> fields,
                   LogLevel level = LogLevel::kInfo) {
    return format_line(LogFormat::kLogfmt, level, event, fields);
}

std::string json(std::string_view event, std::initializer_list<Field> fields,
                 LogLevel level = LogLevel::kInfo, std::string_view ts = "") {
    return format_line(LogFormat::kJson, level, event, fields, ts);
}

// ---- logfmt ----------------------------------------------------------------------------------

TEST(LogfmtLine, PlainValues) {
    EXPECT_EQ(logfmt("session_start", {{"client", "192.0.2.1"}, {"port", 2525}}),
              "level=info event=session_start client=192.0.2.1 port=2525\n");
}

TEST(LogfmtLine, Levels) {
    EXPECT_EQ(logfmt("e", {}, LogLevel::kDebug), "level=debug event=e\n");
    EXPECT_EQ(logfmt("e", {}, LogLevel::kInfo), "level=info event=e\n");
    EXPECT_EQ(logfmt("e", {}, LogLevel::kWarn), "level=warn event=e\n");
    EXPECT_EQ(logfmt("e", {}, LogLevel::kError), "level=error event=e\n");
}

TEST(LogfmtLine, Timestamp) {
    EXPECT_EQ(format_line(LogFormat::kLogfmt, LogLevel::kInfo, "e", {{"k", "v"}},
                          "2024-01-02T03:04:05.678Z"),
              "ts=2024-01-02T03:04:05.678Z level=info event=e k=v\n");
}

TEST(LogfmtLine, NumericFields) {
    EXPECT_EQ(logfmt("e", {{"n", 0}, {"neg", -5}, {"big", 18446744073709551615ull}}),
              "level=info event=e n=0 neg=-5 big=18446744073709551615\n");
}

TEST(LogfmtLine, FieldTypes) {
    std::string owned = "owned";
    std::string_view view = "view";
    EXPECT_EQ(logfmt("e", {{"a", owned}, {"b", view}, {"c", "literal"}}),
              "level=info event=e a=owned b=view c=literal\n");
}

TEST(LogfmtLine, QuotingAndEscaping) {
    EXPECT_EQ(logfmt("e", {{"helo", "my host"}}), "level=info event=e helo=\"my host\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "a\"b"}}), "level=info event=e v=\"a\\\"b\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "a\\b"}}), "level=info event=e v=\"a\\\\b\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "a=b"}}), "level=info event=e v=\"a=b\"\n");
    EXPECT_EQ(logfmt("e", {{"v", ""}}), "level=info event=e v=\"\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "tab\there"}}), "level=info event=e v=\"tab\\x09here\"\n");
}

TEST(LogfmtLine, ControlBytesEscaped) {
    // A client cannot forge a second log line or terminal escapes.
    EXPECT_EQ(logfmt("e", {{"v", "x\r\nlevel=error event=forged"}}),
              "level=info event=e v=\"x\\x0d\\x0alevel=error event=forged\"\n");
    EXPECT_EQ(logfmt("e", {{"v", std::string("a\0b", 3)}}), "level=info event=e v=\"a\\x00b\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "\x1b[31m"}}), "level=info event=e v=\"\\x1b[31m\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "del\x7f"}}), "level=info event=e v=\"del\\x7f\"\n");
    EXPECT_EQ(logfmt("e", {{"v", "caf\xc3\xa9"}}), "level=info event=e v=\"caf\\xc3\\xa9\"\n");
}

TEST(LogfmtLine, OneLineWhateverTheInput) {
    std::string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    std::string line = logfmt("e", {{"v", all}});
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    EXPECT_EQ(line.find('\r'), std::string::npos);
    for (unsigned char c : line.substr(0, line.size() - 1)) {
        EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(c);
    }
}

TEST(LogfmtLine, EventIsEscapedToo) {
    EXPECT_EQ(logfmt("bad event", {}), "level=info event=\"bad event\"\n");
}

TEST(LogfmtLine, Truncation) {
    std::string exact(kMaxLoggedValue, 'a');
    EXPECT_EQ(logfmt("e", {{"v", exact}}), "level=info event=e v=" + exact + "\n");

    std::string longer(kMaxLoggedValue + 1, 'b');
    EXPECT_EQ(logfmt("e", {{"v", longer}}),
              "level=info event=e v=" + std::string(kMaxLoggedValue, 'b') + "...\n");

    std::string huge(100000, 'c');
    std::string line = logfmt("e", {{"v", huge}});
    EXPECT_EQ(line, "level=info event=e v=" + std::string(kMaxLoggedValue, 'c') + "...\n");
}

TEST(LogfmtLine, TruncationBeforeEscaping) {
    // 256 octets are kept, then escaped: the line may grow, but the value is cut at 256 input
    // octets, not at 256 output characters.
    std::string spaces(300, ' ');
    std::string line = logfmt("e", {{"v", spaces}});
    EXPECT_EQ(line, "level=info event=e v=\"" + std::string(kMaxLoggedValue, ' ') + "...\"\n");
    std::string controls(300, '\x01');
    line = logfmt("e", {{"v", controls}});
    std::string expected;
    for (size_t i = 0; i < kMaxLoggedValue; ++i) expected += "\\x01";
    EXPECT_EQ(line, "level=info event=e v=\"" + expected + "...\"\n");
}

// ---- JSON lines ------------------------------------------------------------------------------

TEST(JsonLine, Basic) {
    EXPECT_EQ(json("session_start", {{"client", "192.0.2.1"}, {"port", 25}}),
              "{\"level\":\"info\",\"event\":\"session_start\",\"client\":\"192.0.2.1\","
              "\"port\":\"25\"}\n");
}

TEST(JsonLine, WithTimestamp) {
    EXPECT_EQ(json("e", {{"k", "v"}}, LogLevel::kWarn, "2024-01-02T03:04:05.678Z"),
              "{\"ts\":\"2024-01-02T03:04:05.678Z\",\"level\":\"warn\",\"event\":\"e\","
              "\"k\":\"v\"}\n");
}

TEST(JsonLine, Escaping) {
    EXPECT_EQ(json("e", {{"v", "a\"b\\c\r\n\t\x01"}}),
              "{\"level\":\"info\",\"event\":\"e\",\"v\":\"a\\\"b\\\\c\\r\\n\\t\\u0001\"}\n");
    EXPECT_EQ(json("e", {{"v", "caf\xc3\xa9"}}),
              "{\"level\":\"info\",\"event\":\"e\",\"v\":\"caf\xc3\xa9\"}\n");
    EXPECT_EQ(json("e", {{"v", "bad\xff"}}),
              "{\"level\":\"info\",\"event\":\"e\",\"v\":\"bad\\u00ff\"}\n");
}

TEST(JsonLine, Truncation) {
    std::string longer(kMaxLoggedValue + 10, 'x');
    EXPECT_EQ(json("e", {{"v", longer}}), "{\"level\":\"info\",\"event\":\"e\",\"v\":\"" +
                                              std::string(kMaxLoggedValue, 'x') + "...\"}\n");
    std::string exact(kMaxLoggedValue, 'y');
    EXPECT_EQ(json("e", {{"v", exact}}),
              "{\"level\":\"info\",\"event\":\"e\",\"v\":\"" + exact + "\"}\n");
}

TEST(JsonLine, TruncationInsideUtf8StaysValidJson) {
    // 255 ASCII octets then "é": the cut falls inside the two-octet sequence. Whatever is
    // written must still be a JSON string without raw invalid UTF-8.
    std::string value = std::string(kMaxLoggedValue - 1, 'a') + "\xc3\xa9";
    std::string line = json("e", {{"v", value}});
    EXPECT_EQ(line.find('\xc3'), std::string::npos) << "a lone lead octet is never written raw";
    EXPECT_NE(line.find("\\u00c3"), std::string::npos) << line;
    EXPECT_EQ(line.substr(line.size() - 6), "...\"}\n");
}

// ---- json_quote ------------------------------------------------------------------------------

TEST(JsonQuote, Basics) {
    EXPECT_EQ(json_quote(""), "\"\"");
    EXPECT_EQ(json_quote("plain"), "\"plain\"");
    EXPECT_EQ(json_quote("a\"b"), "\"a\\\"b\"");
    EXPECT_EQ(json_quote("a\\b"), "\"a\\\\b\"");
    EXPECT_EQ(json_quote("/"), "\"/\"");
    EXPECT_EQ(json_quote("\n\r\t"), "\"\\n\\r\\t\"");
    EXPECT_EQ(json_quote(std::string_view("\0", 1)), "\"\\u0000\"");
    EXPECT_EQ(json_quote("\x1f\x7f"), "\"\\u001f\\u007f\"");
    EXPECT_EQ(json_quote("\b\f"), "\"\\u0008\\u000c\"");
}

TEST(JsonQuote, ValidUtf8KeptRaw) {
    EXPECT_EQ(json_quote("j\xc3\xb6rg@b\xc3\xbc"
                         "cher.example"),
              "\"j\xc3\xb6rg@b\xc3\xbc"
              "cher.example\"");
    EXPECT_EQ(json_quote("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");
}

TEST(JsonQuote, InvalidUtf8Escaped) {
    EXPECT_EQ(json_quote("\xff"), "\"\\u00ff\"");
    EXPECT_EQ(json_quote("\xc3"), "\"\\u00c3\"");
    EXPECT_EQ(json_quote("\xc0\xaf"), "\"\\u00c0\\u00af\"");             // overlong
    EXPECT_EQ(json_quote("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"");  // surrogate
    // One bad octet makes every high octet of the text escaped, valid sequences included.
    EXPECT_EQ(json_quote("caf\xc3\xa9 \xff"), "\"caf\\u00c3\\u00a9 \\u00ff\"");
}

TEST(JsonQuote, OutputIsAlwaysAsciiOrValidUtf8) {
    std::string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    std::string q = json_quote(all);
    for (unsigned char c : q) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(c);
    EXPECT_EQ(q.front(), '"');
    EXPECT_EQ(q.back(), '"');
}

// ---- log() and levels ------------------------------------------------------------------------

class LogToPipe : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_EQ(::pipe2(fds_, O_NONBLOCK | O_CLOEXEC), 0); }
    void TearDown() override {
        configure_logging(LogLevel::kInfo, LogFormat::kLogfmt, 2);
        ::close(fds_[0]);
        ::close(fds_[1]);
    }
    std::string read_all() {
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fds_[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
        return out;
    }
    int fds_[2] = {-1, -1};
};

TEST_F(LogToPipe, LevelFilterAndTimestamp) {
    configure_logging(LogLevel::kWarn, LogFormat::kLogfmt, fds_[1]);
    EXPECT_FALSE(log_enabled(LogLevel::kDebug));
    EXPECT_FALSE(log_enabled(LogLevel::kInfo));
    EXPECT_TRUE(log_enabled(LogLevel::kWarn));
    EXPECT_TRUE(log_enabled(LogLevel::kError));

    log(LogLevel::kInfo, "hidden", {{"k", "v"}});
    EXPECT_EQ(read_all(), "");

    log(LogLevel::kError, "shown", {{"k", "v w"}});
    std::string line = read_all();
    ASSERT_EQ(line.rfind("ts=", 0), 0u) << line;
    // ts=YYYY-MM-DDTHH:MM:SS.mmmZ
    ASSERT_GT(line.size(), 28u);
    EXPECT_EQ(line[7], '-');
    EXPECT_EQ(line[13], 'T');
    EXPECT_EQ(line[26], 'Z');
    EXPECT_EQ(line.substr(27), " level=error event=shown k=\"v w\"\n");
}

TEST_F(LogToPipe, JsonFormat) {
    configure_logging(LogLevel::kDebug, LogFormat::kJson, fds_[1]);
    log(LogLevel::kDebug, "e", {{"n", 1}});
    std::string line = read_all();
    ASSERT_EQ(line.rfind("{\"ts\":\"", 0), 0u) << line;
    EXPECT_NE(line.find("\",\"level\":\"debug\",\"event\":\"e\",\"n\":\"1\"}\n"), std::string::npos)
        << line;
}

}  // namespace
}  // namespace postern::observe
