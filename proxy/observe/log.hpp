// Structured logging: one line per event, logfmt ("key=value ...") or JSON, written with one
// write(2) so lines from several threads never interleave. Values from clients are escaped and
// truncated before they reach the log.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "proxy/config/config.hpp"

namespace postern::observe {

using config::LogFormat;
using config::LogLevel;

inline constexpr size_t kMaxLoggedValue = 256;  // octets of one value kept in the log

struct Field {
    std::string_view key;
    std::string value;

    Field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
    Field(std::string_view k, std::string_view v) : key(k), value(v) {}
    Field(std::string_view k, const char* v) : key(k), value(v) {}
    template <typename N, typename = std::enable_if_t<std::is_arithmetic_v<N>>>
    Field(std::string_view k, N n) : key(k), value(std::to_string(n)) {}
};

// Process-wide settings; set once at start-up, before threads start.
void configure_logging(LogLevel level, LogFormat format, int fd = 2);
bool log_enabled(LogLevel level);

// Writes one line: ts, level, event, then the fields in order.
void log(LogLevel level, std::string_view event, std::initializer_list<Field> fields);

// The line log() would write, without the time stamp (for tests).
std::string format_line(LogFormat format, LogLevel level, std::string_view event,
                        std::initializer_list<Field> fields, std::string_view timestamp = "");

// JSON string literal of text, quotes included. Controls are escaped; text that is not valid
// UTF-8 has its high octets escaped as \u00XX, so any input gives valid JSON.
std::string json_quote(std::string_view text);

}  // namespace postern::observe
