// Route selection: which [route.NAME] a recipient of a message takes, from the ordered
// [[route_rule]] list (sender domain, recipient domain, listener; first match wins) with the
// listener's own route as the fallback.
#pragma once

#include <string>
#include <string_view>

#include "proxy/config/config.hpp"

namespace postern::upstream {

// True when domain equals pattern (ASCII case-insensitively) or, for a pattern "*.example.com",
// when it is a subdomain of example.com (not example.com itself).
bool domain_matches(std::string_view domain, std::string_view pattern);

class RouteTable {
  public:
    explicit RouteTable(const config::Config& config) : config_(config) {}

    // The route name for one recipient. sender_domain is empty for the null sender (which then
    // matches no sender_domain condition).
    const std::string& select(const config::ListenerConfig& listener,
                              std::string_view sender_domain,
                              std::string_view recipient_domain) const;

  private:
    const config::Config& config_;
};

}  // namespace postern::upstream
