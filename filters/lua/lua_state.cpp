// The sandboxed state; see lua_state.hpp. The holes a naive sandbox leaves (LIBRARY-NOTES.md
// "Lua 5.4") are closed here: pcall re-raises limit errors, library tables are read-only
// views, the string metatable is locked, and only text chunks load.
#include "filters/lua/lua_state.hpp"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <lua.hpp>
#include <sstream>

#include "filters/lua/lua_bindings.hpp"
#include "proxy/observe/log.hpp"

namespace postern::filters::lua {
namespace {

constexpr int kHookEvery = 1000;  // instructions between two count-hook calls
constexpr const char* kEnvKey = "postern.env";
constexpr const char* kLoadedKey = "postern.loaded";
constexpr size_t kMaxModuleSize = 1024 * 1024;

void* allocate(void* ud, void* ptr, size_t osize, size_t nsize) {
    auto* state = static_cast<LuaState*>(ud);
    const size_t old_size = ptr ? osize : 0;  // without ptr, osize is a type tag
    if (nsize == 0) {
        state->account(old_size, 0);
        std::free(ptr);
        return nullptr;
    }
    if (!state->account(old_size, nsize)) return nullptr;
    void* p = std::realloc(ptr, nsize);
    if (!p) state->account(nsize, old_size);
    return p;
}

void count_hook(lua_State* L, lua_Debug* ar) {
    LuaState::of(L).charge(L, ar, kHookEvery);
}

// --- the safe base functions ------------------------------------------------------------------

// pcall and xpcall that cannot swallow the end of the budget or of memory.
int safe_pcall(lua_State* L) {
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (status == LUA_ERRMEM) LuaState::of(L).set_out_of_memory();
    if (LuaState::of(L).aborting()) return lua_error(L);
    lua_pushboolean(L, status == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

int safe_xpcall(lua_State* L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);  // the handler, then the function: (f, h, args..., h) -> (h, f, args)
    lua_copy(L, 1, 2);
    lua_replace(L, 1);
    int status = lua_pcall(L, n - 2, LUA_MULTRET, 1);
    if (status == LUA_ERRMEM) LuaState::of(L).set_out_of_memory();
    if (LuaState::of(L).aborting()) return lua_error(L);
    lua_pushboolean(L, status == LUA_OK);
    lua_replace(L, 1);  // the handler's slot now holds the status
    return lua_gettop(L);
}

// Binary chunks and reader functions are refused; the environment defaults to the sandbox.
int safe_load(lua_State* L) {
    size_t len = 0;
    const char* text = luaL_checklstring(L, 1, &len);
    std::string name = "=" + std::string(luaL_optstring(L, 2, "(load)"));
    const char* mode = luaL_optstring(L, 3, "t");
    if (std::strcmp(mode, "t") != 0) return luaL_error(L, "load: only text chunks (mode \"t\")");
    const bool has_env = !lua_isnone(L, 4);
    if (luaL_loadbufferx(L, text, len, name.c_str(), "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) {
        lua_pushvalue(L, 4);
    } else {
        lua_getfield(L, LUA_REGISTRYINDEX, kEnvKey);
    }
    lua_setupvalue(L, -2, 1);
    return 1;
}

// Finalizers would run at any time, outside any hook call: not available.
int safe_setmetatable(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    // A raw look: __index on the metatable itself could add __gc while a plain lookup runs.
    if (lua_istable(L, 2) && (lua_pushliteral(L, "__gc"), lua_rawget(L, 2)) != LUA_TNIL) {
        return luaL_error(L, "setmetatable: __gc metamethods are not available in policy scripts");
    }
    lua_settop(L, 2);
    lua_getglobal(L, "setmetatable");  // the real one, in the state's own (hidden) globals
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

int safe_collectgarbage(lua_State* L) {
    static const char* const kAllowed[] = {"count", "collect", "step", "isrunning", nullptr};
    const char* option = luaL_optstring(L, 1, "collect");
    // A collection of a big heap is one C call the count hook cannot interrupt: each is
    // charged as many instructions, and refused once the budget or the time is spent.
    if (std::strcmp(option, "collect") == 0) LuaState::of(L).charge(L, nullptr, 100'000);
    if (std::strcmp(option, "step") == 0) LuaState::of(L).charge(L, nullptr, 10'000);
    for (const char* const* a = kAllowed; *a; ++a) {
        if (std::strcmp(option, *a) == 0) {
            lua_getglobal(L, "collectgarbage");
            lua_insert(L, 1);
            lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
            return lua_gettop(L);
        }
    }
    return luaL_error(L, "collectgarbage(\"%s\") is not available in policy scripts", option);
}

int safe_print(lua_State* L) {
    std::string line;
    for (int i = 1; i <= lua_gettop(L); ++i) {
        if (i > 1) line += '\t';
        line += luaL_tolstring(L, i, nullptr);
        lua_pop(L, 1);
    }
    LuaState::of(L).log_line(0, line);
    return 0;
}

bool valid_module_name(std::string_view name) {
    if (name.empty() || name.size() > 128 || name.front() == '.' || name.back() == '.') {
        return false;
    }
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (c == '.' && name[i - 1] != '.');
        if (!ok) return false;
    }
    return true;
}

// Pure-Lua modules from the script directories, loaded once per state, run in the sandbox.
int safe_require(lua_State* L) {
    std::string name = luaL_checkstring(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, kLoadedKey);
    if (lua_getfield(L, -1, name.c_str()) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    if (!valid_module_name(name)) {
        return luaL_error(L, "require: \"%s\" is not a module name (letters, digits, _ and .)",
                          name.c_str());
    }
    std::string relative = name;
    for (char& c : relative) {
        if (c == '.') c = '/';
    }
    relative += ".lua";
    std::string looked;
    for (const std::string& dir : LuaState::of(L).source().module_dirs) {
        std::string path = dir.empty() ? relative : dir + "/" + relative;
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            looked += (looked.empty() ? "" : ", ") + path;
            continue;
        }
        std::stringstream buffer;
        buffer << in.rdbuf();
        std::string text = buffer.str();
        if (text.size() > kMaxModuleSize) {
            return luaL_error(L, "require: %s is larger than 1 MiB", path.c_str());
        }
        std::string chunk = "@" + path;
        if (luaL_loadbufferx(L, text.data(), text.size(), chunk.c_str(), "t") != LUA_OK) {
            return lua_error(L);
        }
        lua_getfield(L, LUA_REGISTRYINDEX, kEnvKey);
        lua_setupvalue(L, -2, 1);
        lua_pushstring(L, name.c_str());
        lua_call(L, 1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name.c_str());  // into postern.loaded
        return 1;
    }
    return luaL_error(L,
                      "module '%s' not found (looked in: %s); only Lua modules from the "
                      "script directories can be required",
                      name.c_str(), looked.c_str());
}

int read_only_error(lua_State* L) {
    const char* key = lua_tostring(L, 2);
    return luaL_error(L, "%s is read-only (keep per-transaction state in tx.notes)",
                      key ? key : "this table");
}

// The iterator of a read-only view: the table behind it stays an upvalue, never handed out
// (pairs returning `next, table` would give scripts the writable table).
int read_only_next(lua_State* L) {
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1)) == 0) return 0;
    return 2;
}

int read_only_pairs(lua_State* L) {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushcclosure(L, read_only_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

int read_only_len(lua_State* L) {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushinteger(L, static_cast<lua_Integer>(luaL_len(L, -1)));
    return 1;
}

// Makes the (empty) table at `view` a read-only view of the table at `backing`: reads, pairs,
// ipairs and # go through; writes raise an error; the metatable cannot be fetched or changed.
void set_read_only_view(lua_State* L, int view, int backing) {
    view = lua_absindex(L, view);
    backing = lua_absindex(L, backing);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, backing);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, read_only_error);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, read_only_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushcfunction(L, read_only_len);
    lua_setfield(L, -2, "__len");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, view);
}

// Copies the named fields of the table at `from` into the table at `to`.
void copy_fields(lua_State* L, int from, int to, std::initializer_list<const char*> names) {
    from = lua_absindex(L, from);
    to = lua_absindex(L, to);
    for (const char* name : names) {
        lua_getfield(L, from, name);
        lua_setfield(L, to, name);
    }
}

}  // namespace

void make_read_only(lua_State* L, int index) {
    index = lua_absindex(L, index);
    lua_newtable(L);  // the proxy
    set_read_only_view(L, -1, index);
    lua_replace(L, index);
}

namespace {

// Builds the sandbox (see lua_state.hpp) and leaves its environment in the registry.
int setup_sandbox(lua_State* L) {
    // The real libraries live in the state's own globals, which scripts never see.
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1);
    lua_settop(L, 0);

    // Strings reach the string library through their metatable: no bytecode dumps there, and
    // the metatable cannot be fetched or changed.
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    lua_newtable(L);  // the sandbox environment
    const int env = lua_gettop(L);
    const ScriptSource& source = LuaState::of(L).source();
    lua_pushglobaltable(L);
    copy_fields(L, -1, env,
                {"assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring",
                 "type", "rawequal", "rawget", "rawlen", "getmetatable", "_VERSION"});
    lua_pop(L, 1);
    const std::pair<const char*, lua_CFunction> safe[] = {
        {"pcall", safe_pcall},     {"xpcall", safe_xpcall},
        {"load", safe_load},       {"setmetatable", safe_setmetatable},
        {"require", safe_require}, {"collectgarbage", safe_collectgarbage},
        {"print", safe_print},
    };
    for (const auto& [name, fn] : safe) {
        lua_pushcfunction(L, fn);
        lua_setfield(L, env, name);
    }
    for (const char* lib : {LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME}) {
        lua_getglobal(L, lib);
        make_read_only(L, -1);
        lua_setfield(L, env, lib);
    }
    lua_newtable(L);
    lua_getglobal(L, LUA_OSLIBNAME);
    copy_fields(L, -1, -2, {"time", "date", "clock"});
    lua_pop(L, 1);
    make_read_only(L, -1);
    lua_setfield(L, env, LUA_OSLIBNAME);

    open_postern_module(L, source);
    lua_setfield(L, env, "postern");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_pushvalue(L, env);
    lua_setfield(L, LUA_REGISTRYINDEX, kEnvKey);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, kLoadedKey);

    return 0;
}

// From now on the globals are read-only: state that outlives a call would leak between
// transactions and differ between states. The environment becomes a view of its contents.
int freeze_globals(lua_State* L) {
    lua_getfield(L, LUA_REGISTRYINDEX, kEnvKey);
    const int env = lua_gettop(L);
    lua_newtable(L);
    const int contents = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, env) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, contents);
    }
    lua_pushnil(L);
    while (lua_next(L, contents) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, env);
    }
    set_read_only_view(L, env, contents);
    return 0;
}

}  // namespace

int slot_of(Stage stage) {
    return static_cast<int>(stage);
}
int slot_of(Event event) {
    return kStageCount + static_cast<int>(event);
}

const char* slot_name(int slot) {
    if (slot < kStageCount) return stage_name(static_cast<Stage>(slot));
    return event_name(static_cast<Event>(slot - kStageCount));
}

int slot_by_name(std::string_view name) {
    for (int slot = 0; slot < kEventSlots; ++slot) {
        if (name == slot_name(slot)) return slot;
    }
    return -1;
}

LuaState& LuaState::of(lua_State* L) {
    return **static_cast<LuaState**>(lua_getextraspace(L));
}

LuaState::LuaState(std::shared_ptr<const ScriptSource> source) : source_(std::move(source)) {}

LuaState::~LuaState() {
    if (L_) {
        aborting_ = true;  // nothing runs any more: every count hook ends what it interrupts
        lua_close(L_);
    }
}

std::unique_ptr<LuaState> LuaState::create(std::shared_ptr<const ScriptSource> source,
                                           std::string& error) {
    std::unique_ptr<LuaState> state(new LuaState(std::move(source)));
    if (!state->build(error)) return nullptr;
    return state;
}

bool LuaState::account(size_t old_size, size_t new_size) {
    // A refusal is not yet a memory error: Lua collects and tries again, and a heap full of
    // garbage then has room. Refusals that go on mean live data fills the cap (and every
    // allocation would cost a full collection): then the call has run out of memory, and
    // every growth is refused until it ends.
    if (new_size > old_size &&
        (out_of_memory_ || memory_used_ - old_size + new_size > source_->limits.memory)) {
        if (++refusals_ >= kMaxRefusals) out_of_memory_ = true;
        return false;
    }
    memory_used_ = memory_used_ - old_size + new_size;
    return true;
}

void LuaState::charge(lua_State* L, lua_Debug* ar, uint64_t instructions) {
    instructions_ += instructions;
    const char* why = nullptr;
    std::string detail;
    if (aborting_) {
        why = "policy call aborted";
    } else if (instructions_ > source_->limits.instructions) {
        why = "instruction budget exceeded";
        detail = std::to_string(source_->limits.instructions) + " instructions";
    } else if (std::chrono::steady_clock::now() > deadline_) {
        why = "timeout exceeded";
        detail = std::to_string(source_->limits.timeout.count()) + " ms";
    }
    if (!why) return;
    aborting_ = true;
    // Where the script was when it ran out: the line of the running function.
    std::string where = "?";
    lua_Debug caller;  // from a C function: the Lua function that called it
    if (!ar && lua_getstack(L, 1, &caller)) ar = &caller;
    if (ar && lua_getinfo(L, "Sl", ar)) {
        where = std::string(ar->short_src) + ":" + std::to_string(ar->currentline);
    }
    // lua_error, not luaL_error: that would add the caller's position before this one.
    lua_pushfstring(L, "%s: %s (%s)", where.c_str(), why, detail.c_str());
    lua_error(L);
}

void LuaState::begin_call() {
    instructions_ = 0;
    refusals_ = 0;
    aborting_ = false;
    out_of_memory_ = false;
    deadline_ = std::chrono::steady_clock::now() + source_->limits.timeout;
    ++serial_;
}

void LuaState::add_handler(int slot, int ref, std::string where) {
    handlers_[slot].push_back(Handler{ref, std::move(where)});
}

void LuaState::log_line(int level, std::string_view text) {
    static const char* const kNames[] = {"info", "warn", "error"};
    if (hook_ && hook_->trace) {
        hook_->trace->push_back("log " + std::string(kNames[level]) + ": " + std::string(text));
        return;
    }
    const config::LogLevel levels[] = {config::LogLevel::kInfo, config::LogLevel::kWarn,
                                       config::LogLevel::kError};
    const Transaction* tx = hook_ ? hook_->tx : notified_tx_;
    const Connection* conn = hook_ ? hook_->conn : (tx ? tx->conn : nullptr);
    observe::log(levels[level], "lua",
                 {{"filter", source_->filter_name},
                  {"queue_id", tx ? tx->id : std::string()},
                  {"client", conn ? conn->ip : std::string()},
                  {"message", std::string(text)}});
}

bool LuaState::build(std::string& error) {
    L_ = lua_newstate(allocate, this);
    if (!L_) {
        error = "cannot create a Lua state (memory limit too small?)";
        return false;
    }
    *static_cast<LuaState**>(lua_getextraspace(L_)) = this;
    lua_State* L = L_;
    begin_call();  // the top level has the budget of one call
    lua_sethook(L, count_hook, LUA_MASKCOUNT, kHookEvery);

    // Every step that allocates runs protected: a refused allocation outside a protected call
    // would abort the process.
    lua_pushcfunction(L, setup_sandbox);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        error = std::string("cannot build the Lua sandbox: ") +
                (lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown error");
        return false;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, kEnvKey);
    const int env = lua_gettop(L);

    const std::string chunk = "@" + source_->path;
    if (luaL_loadbufferx(L, source_->text.data(), source_->text.size(), chunk.c_str(), "t") !=
        LUA_OK) {
        error = lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot load the script";
        return false;
    }
    lua_pushvalue(L, env);
    lua_setupvalue(L, -2, 1);
    loading_ = true;
    bool ok = call(0, 0, source_->path, error);
    loading_ = false;
    if (!ok) return false;

    lua_settop(L, 0);
    lua_pushcfunction(L, freeze_globals);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        error = std::string("cannot freeze the script's globals: ") +
                (lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown error");
        return false;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return true;
}

namespace {

// One handler call. Its arguments are made, and its verdict read, inside the protected call:
// that allocates, and an allocation the memory limit refuses outside a protected call would
// abort the process instead of failing the call.
struct PendingCall {
    int ref = 0;
    HookContext* ctx = nullptr;  // a stage, or else a notification:
    Event event = Event::kQueued;
    const Transaction* tx = nullptr;
    const DeliveryResult* result = nullptr;
    Verdict verdict;
};

int call_handler(lua_State* L) {
    auto& c = *static_cast<PendingCall*>(lua_touserdata(L, 1));
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c.ref);
    int nargs = 2;
    if (!c.ctx) {
        // Notifications see the transaction as it ended: read-only.
        push_transaction(L, const_cast<Transaction*>(c.tx), true);
        push_result(L, c.event, *c.result);
        lua_call(L, nargs, 0);
        return 0;
    }
    switch (c.ctx->stage) {
        case Stage::kConnect:
        case Stage::kHelo:
        case Stage::kAuth:
            push_connection(L, c.ctx->conn);
            nargs = 1;
            break;
        case Stage::kMailFrom:
            push_transaction(L, c.ctx->tx, false);
            nargs = 1;
            break;
        case Stage::kRcptTo:
            push_transaction(L, c.ctx->tx, false);
            push_address(L, *c.ctx->rcpt);
            break;
        case Stage::kData:
            push_transaction(L, c.ctx->tx, false);
            push_message(L, c.ctx->message);
            break;
    }
    lua_call(L, nargs, 1);
    bool ok = true;
    {
        std::string error;
        if (!read_verdict(L, -1, c.verdict, error)) {
            ok = false;
            lua_pushlstring(L, error.data(), error.size());
        }
    }
    return ok ? 0 : lua_error(L);
}

int message_handler(lua_State* L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        luaL_tolstring(L, 1, nullptr);  // converted here, protected, not by the caller
    } else if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    return 1;
}

}  // namespace

bool LuaState::call(int nargs, int nresults, const std::string& where, std::string& error) {
    lua_State* L = L_;
    const int base = lua_gettop(L) - nargs;  // the function's slot
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (status == LUA_OK && !aborting()) return true;
    if (status == LUA_ERRMEM) out_of_memory_ = true;
    if (out_of_memory_) {
        error = "memory limit exceeded (" + std::to_string(source_->limits.memory >> 20) +
                " MiB) in the function at " + where;
    } else {
        const char* text = lua_tostring(L, -1);
        error = text ? text : "unknown error";
    }
    if (aborting()) damaged_ = true;
    lua_settop(L, base - 1);
    return false;
}

Verdict LuaState::run_stage(HookContext& ctx) {
    Verdict verdict;
    const int slot = slot_of(ctx.stage);
    for (const Handler& h : handlers_[slot]) {
        begin_call();
        hook_ = &ctx;
        PendingCall pending;
        pending.ref = h.ref;
        pending.ctx = &ctx;
        lua_pushcfunction(L_, call_handler);
        lua_pushlightuserdata(L_, &pending);
        std::string error;
        bool ok = call(1, 0, h.where, error);
        const Verdict& v = pending.verdict;
        ++serial_;  // the handles given to this call are dead now
        hook_ = nullptr;
        if (!ok) {
            verdict = Verdict{};
            verdict.failure = error;
            if (ctx.trace) ctx.trace->push_back("handler at " + h.where + ": error: " + error);
            return verdict;
        }
        if (ctx.trace) {
            std::string line = "handler at " + h.where + ": " + action_name(v.action);
            if (v.reply) {
                line += " " + std::to_string(v.reply->code) + " " + v.reply->enhanced + " " +
                        v.reply->text;
            }
            if (!v.reason.empty()) line += " (" + v.reason + ")";
            ctx.trace->push_back(line);
        }
        if (v.action != Action::kContinue) return v;
    }
    return verdict;
}

void LuaState::run_event(Event event, const Connection* conn, const Transaction& tx,
                         const DeliveryResult& result, std::vector<std::string>* trace) {
    HookContext ctx;
    ctx.conn = const_cast<Connection*>(conn);
    ctx.trace = trace;
    for (const Handler& h : handlers_[slot_of(event)]) {
        begin_call();
        hook_ = trace ? &ctx : nullptr;
        notified_tx_ = &tx;
        PendingCall pending;
        pending.ref = h.ref;
        pending.event = event;
        pending.tx = &tx;
        pending.result = &result;
        lua_pushcfunction(L_, call_handler);
        lua_pushlightuserdata(L_, &pending);
        std::string error;
        bool ok = call(1, 0, h.where, error);
        ++serial_;
        hook_ = nullptr;
        notified_tx_ = nullptr;
        if (!ok) {
            if (trace) trace->push_back("handler at " + h.where + ": error: " + error);
            observe::log(config::LogLevel::kError, "filter_failed",
                         {{"filter", source_->filter_name},
                          {"notification", event_name(event)},
                          {"queue_id", tx.id},
                          {"error", error}});
            if (damaged_) return;
        }
    }
}

}  // namespace postern::filters::lua
