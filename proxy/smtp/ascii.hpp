// ASCII case-insensitive comparison, for what SMTP and RFC 5322 compare that way: keywords,
// domains, header field names (and, as postern does, addresses).
#pragma once

#include <algorithm>
#include <string_view>

namespace postern::smtp {

inline bool iequals(std::string_view a, std::string_view b) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; };
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [&](char x, char y) { return lower(x) == lower(y); });
}

}  // namespace postern::smtp
