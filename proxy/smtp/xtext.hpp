// xtext (RFC 3461 section 4): printable ASCII except "+" and "=", with "+XX" hex escapes. Used by
// the DSN parameters ENVID and ORCPT.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace postern::smtp {

bool is_valid_xtext(std::string_view text);

// The decoded value, or nothing when text is not valid xtext.
std::optional<std::string> xtext_decode(std::string_view text);

}  // namespace postern::smtp
