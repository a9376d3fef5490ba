// `postern policy test`: runs a Lua policy script through every hook as the server would, on an
// envelope and a message given on the command line, and prints the decision trace.
#pragma once

#include <string>
#include <vector>

namespace postern::admin {

extern const char* const kPolicyUsage;

// `args` are the words after "policy". Exit code: 0 accepted (or discarded), 1 rejected,
// 2 tempfailed (or disconnected with 421), 3 the script does not load, 64 usage.
int run_policy_command(const std::vector<std::string>& args);

}  // namespace postern::admin
