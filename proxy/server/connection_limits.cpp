// Connection admission; see connection_limits.hpp.
#include "proxy/server/connection_limits.hpp"

namespace postern::server {

std::string ConnectionLimits::key(const config::IpAddress& address) {
    return std::string(reinterpret_cast<const char*>(address.bytes.data()), address.bytes.size());
}

ConnectionLimits::Admission ConnectionLimits::acquire(const config::IpAddress& address) {
    std::lock_guard lock(mutex_);
    if (total_ >= max_total_) return Admission::kTooMany;
    unsigned& count = per_address_[key(address)];
    if (count >= max_per_address_) {
        if (count == 0) per_address_.erase(key(address));
        return Admission::kTooManyFromAddress;
    }
    ++count;
    ++total_;
    return Admission::kAdmitted;
}

void ConnectionLimits::release(const config::IpAddress& address) {
    std::lock_guard lock(mutex_);
    auto it = per_address_.find(key(address));
    if (it == per_address_.end()) return;
    if (--it->second == 0) per_address_.erase(it);
    --total_;
}

}  // namespace postern::server
