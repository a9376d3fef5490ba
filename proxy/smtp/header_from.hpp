// The addresses of a message's From: field (RFC 5322 3.6.2), for the check that an
// authenticated user writes only as the addresses it owns (check_header_from).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern::smtp {

// The addr-specs of the single From: field in the header section of `message` (CRLF lines;
// folding, comments, quoted display names, angle addresses and groups understood). nullopt
// when there is no From: field, more than one, or one without any address.
std::optional<std::vector<std::string>> header_from_addresses(std::string_view message);

}  // namespace postern::smtp
