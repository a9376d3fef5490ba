// Route selection; see route_table.hpp.
#include "proxy/upstream/route_table.hpp"

#include <algorithm>

#include "proxy/smtp/ascii.hpp"

namespace postern::upstream {
namespace {

using smtp::iequals;

bool any_matches(std::string_view domain, const std::vector<std::string>& patterns) {
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& p) { return domain_matches(domain, p); });
}

}  // namespace

bool domain_matches(std::string_view domain, std::string_view pattern) {
    if (domain.empty()) return false;
    if (pattern.substr(0, 2) == "*.") {
        std::string_view suffix = pattern.substr(1);  // ".example.com"
        return domain.size() > suffix.size() &&
               iequals(domain.substr(domain.size() - suffix.size()), suffix);
    }
    return iequals(domain, pattern);
}

const std::string& RouteTable::select(const config::ListenerConfig& listener,
                                      std::string_view sender_domain,
                                      std::string_view recipient_domain) const {
    for (const config::RouteRule& rule : config_.route_rules) {
        if (!rule.listeners.empty() && std::find(rule.listeners.begin(), rule.listeners.end(),
                                                 listener.name) == rule.listeners.end()) {
            continue;
        }
        if (!rule.sender_domains.empty() && !any_matches(sender_domain, rule.sender_domains)) {
            continue;
        }
        if (!rule.recipient_domains.empty() &&
            !any_matches(recipient_domain, rule.recipient_domains)) {
            continue;
        }
        return rule.route;
    }
    return listener.route;
}

}  // namespace postern::upstream
