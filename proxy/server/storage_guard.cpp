// Free-space floor; see storage_guard.hpp.
#include "proxy/server/storage_guard.hpp"

#include <sys/statvfs.h>

#include "proxy/observe/log.hpp"

namespace postern::server {

using config::LogLevel;
using observe::log;

void StorageGuard::check() {
    if (floor_ == 0) return;
    bool low = false;
    std::string where;
    uint64_t free_bytes = 0;
    for (const std::string& dir : dirs_) {
        struct statvfs st {};
        if (::statvfs(dir.c_str(), &st) != 0) continue;
        // f_bavail: what an unprivileged writer can still use.
        uint64_t available = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
        if (available < floor_) {
            low = true;
            where = dir;
            free_bytes = available;
            break;
        }
    }
    if (low == low_.load()) return;
    low_.store(low);
    if (low) {
        log(LogLevel::kError, "storage_low",
            {{"dir", where},
             {"free_bytes", free_bytes},
             {"min_free_space", floor_},
             {"detail", "new MAIL commands get 452 4.3.1 until space returns"}});
    } else {
        log(LogLevel::kInfo, "storage_ok", {{"min_free_space", floor_}});
    }
}

}  // namespace postern::server
