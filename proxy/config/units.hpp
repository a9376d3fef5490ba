// Sizes ("25MiB", "512KB", "1000") and durations ("30s", "5m", "1h", "5d", "250ms") as written
// in the configuration file.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace postern::config {

// Bytes; B, KB/MB/GB (powers of 1000) and KiB/MiB/GiB (powers of 1024), case-sensitive units.
std::optional<uint64_t> parse_size(std::string_view text);

// A whole number followed by ms, s, m, h or d.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace postern::config
