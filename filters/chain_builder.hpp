// Builds the filter chain from the [[filter]] entries of the configuration (compiling every
// script), for the server and for check-config.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "filters/chain.hpp"
#include "proxy/config/config.hpp"

namespace postern::filters {

// The chain, or nothing and one error per filter that does not load ("filter policy:
// scripts/policy.lua:12: ...").
std::unique_ptr<Chain> build_chain(const config::Config& config, std::vector<std::string>& errors);

}  // namespace postern::filters
