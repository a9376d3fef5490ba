// The client side of the admin API, for the `postern queue` command: one HTTP request to the
// configured [admin] address, with the bearer token when one is configured.
#pragma once

#include <string>

#include "proxy/config/config.hpp"

namespace postern::admin {

struct AdminResponse {
    unsigned status = 0;
    std::string body;
};

// `method` is "GET", "POST" or "DELETE". Throws std::runtime_error naming the address and
// the problem when no answer comes (not listening, timeout, not HTTP).
AdminResponse admin_request(const config::AdminConfig& admin, const std::string& method,
                            const std::string& target);

}  // namespace postern::admin
