// One sandboxed Lua 5.4 state with an operator's policy script loaded (DESIGN.md "lua").
//
// The sandbox: source chunks only (binary chunks are refused), an environment holding only safe
// base functions and the string, table, math, utf8 libraries and os.time/date/clock, read-only
// library tables and a locked string metatable, `require` of pure-Lua modules from the
// configured directories, no `io`, `debug`, `package`, `coroutine`, `dofile`, `loadfile`, no
// `__gc` metamethods. Limits: memory per state (a custom allocator) and, per hook call, an
// instruction budget and a wall-clock timeout (a count hook). `pcall` cannot swallow a limit
// error. After a limit error the state may be half-way through something: it is thrown away.
//
// A state is used by one thread at a time (LuaFilter keeps a pool); its handlers run with the
// transaction bound for the duration of one call only.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "filters/filter.hpp"

struct lua_State;
struct lua_Debug;

namespace postern::filters::lua {

struct LuaLimits {
    uint64_t memory = 64ull * 1024 * 1024;
    uint64_t instructions = 10'000'000;
    std::chrono::milliseconds timeout{std::chrono::seconds(1)};
};

// What every state of one filter is built from; a reload makes a new one.
struct ScriptSource {
    std::string path;  // as configured; the chunk name, so errors read "path:line: ..."
    std::string text;
    std::vector<std::string> module_dirs;  // where require() looks
    std::string config_toml;               // becomes postern.config
    std::set<std::string> routes;          // names tx:route() accepts
    std::string filter_name;
    std::string hostname;
    LuaLimits limits;
    uint64_t generation = 0;
};

// The handler slots: the six stages, then the three notifications.
inline constexpr int kEventSlots = kStageCount + 3;
int slot_of(Stage stage);
int slot_of(Event event);
const char* slot_name(int slot);
int slot_by_name(std::string_view name);  // -1 when unknown

class LuaState {
  public:
    // Builds the sandbox and runs the script's top level. Nothing and `error` (naming
    // file:line when Lua knows it) when the script does not compile or its top level fails.
    static std::unique_ptr<LuaState> create(std::shared_ptr<const ScriptSource> source,
                                            std::string& error);
    ~LuaState();
    LuaState(const LuaState&) = delete;
    LuaState& operator=(const LuaState&) = delete;

    struct Handler {
        int ref = 0;        // in the registry
        std::string where;  // "policy.lua:12", where the function is defined
    };
    const std::vector<Handler>& handlers(int slot) const { return handlers_[slot]; }
    const ScriptSource& source() const { return *source_; }

    // Runs the handlers of a stage in file order until one returns a verdict.
    Verdict run_stage(HookContext& ctx);
    // Runs the handlers of a notification; errors are logged.
    void run_event(Event event, const Connection* conn, const Transaction& tx,
                   const DeliveryResult& result, std::vector<std::string>* trace);

    // A limit was hit or the state ran out of memory: it must not be used again.
    bool damaged() const { return damaged_; }

    // --- for the C functions of the sandbox and the bindings ---------------------------------
    static LuaState& of(lua_State* L);
    lua_State* L() const { return L_; }
    bool loading() const { return loading_; }
    uint64_t serial() const { return serial_; }
    HookContext* hook() const { return hook_; }
    const Transaction* notified_tx() const { return notified_tx_; }
    void add_handler(int slot, int ref, std::string where);
    // Called by the count hook; raises a Lua error when the call is over its budget.
    // Also for C functions that do much work in one call (ar null: the position is the
    // calling Lua function's).
    void charge(lua_State* L, lua_Debug* ar, uint64_t instructions);
    // Allocation accounting; false when the cap refuses the allocation.
    bool account(size_t old_size, size_t new_size);
    bool aborting() const { return aborting_ || out_of_memory_; }
    void set_out_of_memory() { out_of_memory_ = true; }
    void log_line(int level, std::string_view text);

  private:
    explicit LuaState(std::shared_ptr<const ScriptSource> source);
    bool build(std::string& error);
    void begin_call();
    // Calls the function on the stack top with nargs arguments below it... see lua_state.cpp.
    bool call(int nargs, int nresults, const std::string& where, std::string& error);

    std::shared_ptr<const ScriptSource> source_;
    lua_State* L_ = nullptr;
    std::array<std::vector<Handler>, kEventSlots> handlers_;
    uint64_t memory_used_ = 0;
    uint64_t instructions_ = 0;
    std::chrono::steady_clock::time_point deadline_;
    bool loading_ = false;
    bool aborting_ = false;  // the budget or the timeout ended the call
    bool out_of_memory_ = false;
    static constexpr unsigned kMaxRefusals = 2;  // allocations refused in one call
    unsigned refusals_ = 0;
    bool damaged_ = false;
    uint64_t serial_ = 0;  // one per call: handles from an earlier call are refused
    HookContext* hook_ = nullptr;
    const Transaction* notified_tx_ = nullptr;
};

}  // namespace postern::filters::lua
