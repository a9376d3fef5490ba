// Structured logging; see log.hpp.
#include "proxy/observe/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "proxy/smtp/address.hpp"

namespace postern::observe {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kLogfmt};
std::atomic<int> g_fd{2};

std::string_view level_name(LogLevel level) {
    switch (level) {
        case LogLevel::kDebug:
            return "debug";
        case LogLevel::kInfo:
            return "info";
        case LogLevel::kWarn:
            return "warn";
        case LogLevel::kError:
            return "error";
    }
    return "info";
}

std::string truncated(std::string_view value) {
    if (value.size() <= kMaxLoggedValue) return std::string(value);
    return std::string(value.substr(0, kMaxLoggedValue)) + "...";
}

void append_hex(std::string& out, unsigned char c, std::string_view prefix) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += prefix;
    out += kHex[c >> 4];
    out += kHex[c & 15];
}

// logfmt: bare when the value is plain, else quoted with \" \\ and \xNN escapes.
void append_logfmt_value(std::string& out, std::string_view raw) {
    std::string value = truncated(raw);
    bool plain = !value.empty();
    for (unsigned char c : value) {
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\') plain = false;
    }
    if (plain) {
        out += value;
        return;
    }
    out += '"';
    for (unsigned char c : value) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < ' ' || c >= 0x7f) {
            append_hex(out, c, "\\x");
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
}

std::string timestamp_now() {
    using namespace std::chrono;
    auto now = system_clock::now();
    std::time_t t = system_clock::to_time_t(now);
    auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    return buf;
}

}  // namespace

std::string json_quote(std::string_view text) {
    const bool utf8 = smtp::is_valid_utf8(text);
    std::string out;
    out.reserve(text.size() + 2);
    out += '"';
    for (unsigned char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) {
                    append_hex(out, c, "\\u00");
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
    return out;
}

void configure_logging(LogLevel level, LogFormat format, int fd) {
    g_level = level;
    g_format = format;
    g_fd = fd;
}

bool log_enabled(LogLevel level) {
    return level >= g_level.load(std::memory_order_relaxed);
}

std::string format_line(LogFormat format, LogLevel level, std::string_view event,
                        std::initializer_list<Field> fields, std::string_view timestamp) {
    std::string line;
    line.reserve(256);
    if (format == LogFormat::kJson) {
        line += '{';
        if (!timestamp.empty()) line += "\"ts\":" + json_quote(timestamp) + ",";
        line += "\"level\":" + json_quote(level_name(level));
        line += ",\"event\":" + json_quote(event);
        for (const Field& f : fields) {
            line += ',';
            line += json_quote(f.key);
            line += ':';
            line += json_quote(truncated(f.value));
        }
        line += "}\n";
        return line;
    }
    if (!timestamp.empty()) {
        line += "ts=";
        line += timestamp;
        line += ' ';
    }
    line += "level=";
    line += level_name(level);
    line += " event=";
    append_logfmt_value(line, event);
    for (const Field& f : fields) {
        line += ' ';
        line += f.key;
        line += '=';
        append_logfmt_value(line, f.value);
    }
    line += '\n';
    return line;
}

void log(LogLevel level, std::string_view event, std::initializer_list<Field> fields) {
    if (!log_enabled(level)) return;
    std::string line = format_line(g_format.load(), level, event, fields, timestamp_now());
    int fd = g_fd.load();
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // nowhere to report a failing log; drop the line
        p += n;
        left -= static_cast<size_t>(n);
    }
}

}  // namespace postern::observe
