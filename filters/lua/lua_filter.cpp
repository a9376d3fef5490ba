// The Lua filter's state pool and reload; see lua_filter.hpp.
#include "filters/lua/lua_filter.hpp"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "proxy/observe/log.hpp"

namespace postern::filters::lua {
namespace {

constexpr size_t kMaxScriptSize = 1024 * 1024;

bool read_file(const std::string& path, std::string& text, std::string& error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error = "cannot read the script \"" + path + "\"";
        return false;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
    if (text.size() > kMaxScriptSize) {
        error = "the script \"" + path + "\" is larger than 1 MiB";
        return false;
    }
    return true;
}

uint32_t handler_mask(const LuaState& state) {
    uint32_t mask = 0;
    for (int slot = 0; slot < kEventSlots; ++slot) {
        if (!state.handlers(slot).empty()) mask |= 1u << slot;
    }
    return mask;
}

}  // namespace

std::unique_ptr<LuaFilter> LuaFilter::create(LuaFilterOptions options, std::string& error) {
    if (options.module_dirs.empty()) {
        size_t slash = options.script.rfind('/');
        options.module_dirs.push_back(slash == std::string::npos ? "."
                                                                 : options.script.substr(0, slash));
    }
    if (!options.config_toml.empty()) {
        try {
            (void)toml::parse(std::string_view(options.config_toml));
        } catch (const toml::parse_error& e) {
            error = "the script's config: line " + std::to_string(e.source().begin.line) + ": " +
                    std::string(e.description());
            return nullptr;
        }
    }
    std::unique_ptr<LuaFilter> filter(new LuaFilter(std::move(options)));
    if (!filter->load(error)) return nullptr;
    return filter;
}

bool LuaFilter::load(std::string& error) {
    auto source = std::make_shared<ScriptSource>();
    source->path = options_.script;
    if (!read_file(options_.script, source->text, error)) return false;
    source->module_dirs = options_.module_dirs;
    source->config_toml = options_.config_toml;
    source->routes = options_.routes;
    source->filter_name = options_.name;
    source->hostname = options_.hostname;
    source->limits = options_.limits;
    std::unique_ptr<LuaState> state = LuaState::create(source, error);
    if (!state) return false;
    std::vector<std::unique_ptr<LuaState>> old;  // closed after the lock is released
    std::lock_guard lock(mutex_);
    source->generation = source_ ? source_->generation + 1 : 1;
    source_ = std::move(source);
    old.swap(idle_);  // states of the old version are not used again
    handled_.store(handler_mask(*state), std::memory_order_relaxed);
    idle_.push_back(std::move(state));
    return true;
}

bool LuaFilter::reload(std::string& error) {
    return load(error);
}

bool LuaFilter::handles(Stage stage) const {
    return handled_.load(std::memory_order_relaxed) & (1u << slot_of(stage));
}

bool LuaFilter::handles(Event event) const {
    return handled_.load(std::memory_order_relaxed) & (1u << slot_of(event));
}

std::unique_ptr<LuaState> LuaFilter::acquire(std::string& error) {
    std::shared_ptr<const ScriptSource> source;
    {
        std::lock_guard lock(mutex_);
        if (!idle_.empty()) {
            std::unique_ptr<LuaState> state = std::move(idle_.back());
            idle_.pop_back();
            return state;
        }
        source = source_;
    }
    // A new state (first use on this thread, or the last one was damaged). The script loaded
    // once already, so this fails only when a module or the memory limit lets it down.
    std::unique_ptr<LuaState> state = LuaState::create(source, error);
    return state;
}

void LuaFilter::release(std::unique_ptr<LuaState> state) {
    if (!state || state->damaged()) return;  // rebuilt on the next acquire
    std::lock_guard lock(mutex_);
    if (state->source().generation != source_->generation) return;  // reloaded meanwhile
    idle_.push_back(std::move(state));
}

Verdict LuaFilter::run(HookContext& ctx) {
    const auto start = std::chrono::steady_clock::now();
    std::string error;
    std::unique_ptr<LuaState> state = acquire(error);
    Verdict verdict;
    if (!state) {
        verdict.failure = "cannot build a Lua state: " + error;
    } else {
        verdict = state->run_stage(ctx);
        release(std::move(state));
    }
    calls_.fetch_add(1, std::memory_order_relaxed);
    total_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                  std::chrono::steady_clock::now() - start)
                                                  .count()),
                        std::memory_order_relaxed);
    return verdict;
}

boost::asio::awaitable<Verdict> LuaFilter::on_stage(HookContext& ctx) {
    co_return run(ctx);
}

void LuaFilter::notify_traced(Event event, const Connection* conn, const Transaction& tx,
                              const DeliveryResult& result, std::vector<std::string>* trace) {
    if (!handles(event)) return;
    std::string error;
    std::unique_ptr<LuaState> state = acquire(error);
    if (!state) {
        observe::log(config::LogLevel::kError, "filter_failed",
                     {{"filter", options_.name},
                      {"notification", event_name(event)},
                      {"queue_id", tx.id},
                      {"error", "cannot build a Lua state: " + error}});
        return;
    }
    state->run_event(event, conn, tx, result, trace);
    release(std::move(state));
}

void LuaFilter::notify(Event event, const Connection* conn, const Transaction& tx,
                       const DeliveryResult& result) {
    notify_traced(event, conn, tx, result, nullptr);
}

}  // namespace postern::filters::lua
