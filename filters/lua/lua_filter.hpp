// The Lua policy filter: an operator's script, loaded into a pool of sandboxed states (one per
// thread that needs one at the same moment), reloaded on SIGHUP only when the new version loads
// everywhere. See docs/lua-api.md.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "filters/filter.hpp"
#include "filters/lua/lua_state.hpp"

namespace postern::filters::lua {

struct LuaFilterOptions {
    std::string name;                      // the [[filter]] name, for logs
    std::string script;                    // path of the script
    std::vector<std::string> module_dirs;  // for require(); default: the script's directory
    std::string config_toml;               // the filter's `config` table, as TOML text
    std::set<std::string> routes;
    std::string hostname;  // postern.hostname: the server's name ([server] hostname)
    LuaLimits limits;
};

class LuaFilter : public Filter {
  public:
    // Loads and checks the script; nothing and `error` (with file:line) when it fails.
    static std::unique_ptr<LuaFilter> create(LuaFilterOptions options, std::string& error);

    bool handles(Stage stage) const override;
    bool handles(Event event) const;
    boost::asio::awaitable<Verdict> on_stage(HookContext& ctx) override;
    // Synchronous form of on_stage (the Lua work never waits).
    Verdict run(HookContext& ctx);
    void notify(Event event, const Connection* conn, const Transaction& tx,
                const DeliveryResult& result) override;
    void notify_traced(Event event, const Connection* conn, const Transaction& tx,
                       const DeliveryResult& result, std::vector<std::string>* trace);
    bool reload(std::string& error) override;

    // Hook calls so far and their total time, for the log at shutdown and the benchmark.
    uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }
    uint64_t total_ns() const { return total_ns_.load(std::memory_order_relaxed); }
    const std::string& name() const { return options_.name; }

  private:
    explicit LuaFilter(LuaFilterOptions options) : options_(std::move(options)) {}
    // Reads the script and builds one state from it (kept in the pool when it works).
    bool load(std::string& error);
    std::unique_ptr<LuaState> acquire(std::string& error);
    void release(std::unique_ptr<LuaState> state);

    const LuaFilterOptions options_;
    std::mutex mutex_;
    std::shared_ptr<const ScriptSource> source_;   // guarded by mutex_
    std::vector<std::unique_ptr<LuaState>> idle_;  // guarded by mutex_
    std::atomic<uint32_t> handled_{0};             // bit per slot with at least one handler
    std::atomic<uint64_t> calls_{0};
    std::atomic<uint64_t> total_ns_{0};
};

}  // namespace postern::filters::lua
