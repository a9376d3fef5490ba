// Size and duration parsing; see units.hpp.
#include "proxy/config/units.hpp"

#include <array>
#include <charconv>
#include <utility>

namespace postern::config {
namespace {

// Splits "123unit" into the number and the unit; nothing when there is no leading number.
std::optional<std::pair<uint64_t, std::string_view>> split_number(std::string_view text) {
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr == text.data()) return std::nullopt;
    std::string_view unit = text.substr(static_cast<size_t>(ptr - text.data()));
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    return std::make_pair(value, unit);
}

std::optional<uint64_t> multiply(uint64_t value, uint64_t factor) {
    if (factor != 0 && value > UINT64_MAX / factor) return std::nullopt;
    return value * factor;
}

}  // namespace

std::optional<uint64_t> parse_size(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    constexpr std::array<std::pair<std::string_view, uint64_t>, 8> kUnits = {{
        {"", 1},
        {"B", 1},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", 1000ull * 1000 * 1000},
        {"KiB", 1024},
        {"MiB", 1024 * 1024},
        {"GiB", 1024ull * 1024 * 1024},
    }};
    for (const auto& [unit, factor] : kUnits) {
        if (parts->second == unit) return multiply(parts->first, factor);
    }
    return std::nullopt;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    constexpr std::array<std::pair<std::string_view, uint64_t>, 5> kUnits = {{
        {"ms", 1},
        {"s", 1000},
        {"m", 60 * 1000},
        {"h", 60 * 60 * 1000},
        {"d", 24 * 60 * 60 * 1000},
    }};
    for (const auto& [unit, factor] : kUnits) {
        if (parts->second == unit) {
            auto ms = multiply(parts->first, factor);
            if (!ms || *ms > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
            return std::chrono::milliseconds(static_cast<int64_t>(*ms));
        }
    }
    return std::nullopt;
}

}  // namespace postern::config
