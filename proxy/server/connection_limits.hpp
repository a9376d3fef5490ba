// Connection admission per listener: a total cap and a cap per client address (max_connections,
// max_connections_per_ip). Over either cap the client gets 421 4.7.0 at greeting.
// Thread-safe: slots are taken on the accepting thread and given back on the session's thread.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "proxy/config/cidr.hpp"

namespace postern::server {

class ConnectionLimits {
  public:
    enum class Admission { kAdmitted, kTooMany, kTooManyFromAddress };

    ConnectionLimits(unsigned max_total, unsigned max_per_address)
        : max_total_(max_total), max_per_address_(max_per_address) {}

    // On kAdmitted the caller owns a slot and must release() it exactly once.
    Admission acquire(const config::IpAddress& address);
    void release(const config::IpAddress& address);

  private:
    static std::string key(const config::IpAddress& address);

    const unsigned max_total_;
    const unsigned max_per_address_;
    std::mutex mutex_;
    unsigned total_ = 0;
    std::unordered_map<std::string, unsigned> per_address_;
};

}  // namespace postern::server
