// `postern queue list|show ID|flush [ID]|delete ID|hold ID|release ID`: the queue management
// command line, a client of the running server's admin API.
#pragma once

#include <string>
#include <vector>

#include "proxy/config/config.hpp"

namespace postern::admin {

extern const char* const kQueueUsage;

// `args` are the words after "queue" without --config. Returns the exit status: 0 done,
// 1 failed (the reason on standard error), 2 a usage error.
int run_queue_command(const config::Config& config, const std::vector<std::string>& args);

}  // namespace postern::admin
