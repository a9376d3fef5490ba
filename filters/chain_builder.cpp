// See chain_builder.hpp.
#include "filters/chain_builder.hpp"

#include "filters/lua/lua_filter.hpp"

namespace postern::filters {

std::unique_ptr<Chain> build_chain(const config::Config& config, std::vector<std::string>& errors) {
    auto chain = std::make_unique<Chain>();
    std::set<std::string> routes;
    for (const auto& [name, route] : config.routes) routes.insert(name);
    for (const config::FilterConfig& f : config.filters) {
        lua::LuaFilterOptions options;
        options.name = f.name;
        options.script = f.script;
        options.module_dirs = f.module_dirs;
        options.config_toml = f.config_toml;
        options.routes = routes;
        options.hostname = config.server.hostname;
        options.limits.memory = f.memory_limit;
        options.limits.instructions = f.instruction_limit;
        options.limits.timeout = f.timeout;
        std::string error;
        auto filter = lua::LuaFilter::create(std::move(options), error);
        if (!filter) {
            errors.push_back("filter " + f.name + ": " + error);
            continue;
        }
        chain->add(Chain::Entry{f.name, std::move(filter), f.fail_open});
    }
    if (!errors.empty()) return nullptr;
    return chain;
}

}  // namespace postern::filters
