// Base64 (RFC 4648 4) for SASL exchanges (RFC 4954), through OpenSSL's EVP encoder.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace postern::smtp {

std::string base64_encode(std::string_view data);
// nullopt when text is not canonical base64 (bad characters, bad length or padding).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace postern::smtp
