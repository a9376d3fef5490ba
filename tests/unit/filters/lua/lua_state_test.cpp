// Unit tests for one sandboxed Lua state (filters/lua/lua_state.hpp), below the filter's pool:
// handler slots and their order, a balanced Lua stack after every kind of call, and a memory
// limit reached outside the script's own code, which must fail the call, not the process.
#include "filters/lua/lua_state.hpp"

#include <gtest/gtest.h>

#include <lua.hpp>
#include <memory>
#include <string>
#include <vector>

namespace postern::filters::lua {
namespace {

std::shared_ptr<const ScriptSource> source(std::string text, LuaLimits limits = {}) {
    auto s = std::make_shared<ScriptSource>();
    s->path = "policy.lua";
    s->text = std::move(text);
    s->filter_name = "test";
    s->limits = limits;
    return s;
}

TEST(LuaSlots, NamesAndNumbers) {
    EXPECT_EQ(slot_by_name("connect"), slot_of(Stage::kConnect));
    EXPECT_EQ(slot_by_name("data"), slot_of(Stage::kData));
    EXPECT_EQ(slot_by_name("queued"), slot_of(Event::kQueued));
    EXPECT_EQ(slot_by_name("failed"), kEventSlots - 1);
    EXPECT_EQ(slot_by_name("rcpt"), -1);
    EXPECT_EQ(slot_by_name("Connect"), -1) << "event names are exact";
    for (int slot = 0; slot < kEventSlots; ++slot) EXPECT_EQ(slot_by_name(slot_name(slot)), slot);
    EXPECT_STREQ(slot_name(slot_of(Event::kDelivered)), "delivered");
}

TEST(LuaState, HandlersKeepFileOrderAndWhereTheyAreDefined) {
    std::string error;
    auto state = LuaState::create(source("postern.on('helo', function() end)\n"
                                         "\n"
                                         "postern.on('helo', function()\n"
                                         "end)\n"
                                         "postern.on('failed', function() end)\n"),
                                  error);
    ASSERT_NE(state, nullptr) << error;
    const auto& helo = state->handlers(slot_of(Stage::kHelo));
    ASSERT_EQ(helo.size(), 2u);
    EXPECT_EQ(helo[0].where, "policy.lua:1");
    EXPECT_EQ(helo[1].where, "policy.lua:3");
    EXPECT_EQ(state->handlers(slot_of(Event::kFailed)).size(), 1u);
    EXPECT_TRUE(state->handlers(slot_of(Stage::kConnect)).empty());
    EXPECT_FALSE(state->damaged());
}

TEST(LuaState, StackIsBalancedAfterEveryKindOfCall) {
    std::string error;
    auto state = LuaState::create(source(R"lua(
postern.on("connect", function() return "not a verdict" end)
postern.on("helo", function() error("boom") end)
postern.on("auth", function() return postern.reject() end)
postern.on("mail_from", function(tx) end)
postern.on("rcpt_to", function(tx, rcpt) return {} end)
postern.on("queued", function(tx, result) end)
postern.on("failed", function(tx, result) error("notification boom") end)
)lua"),
                                  error);
    ASSERT_NE(state, nullptr) << error;
    Connection conn;
    Transaction tx;
    Address rcpt = Address::from_mailbox("a@example.com");
    // More calls than the few free slots a Lua stack starts with.
    for (int i = 0; i < 50; ++i) {
        for (Stage stage :
             {Stage::kConnect, Stage::kHelo, Stage::kAuth, Stage::kMailFrom, Stage::kRcptTo}) {
            HookContext ctx;
            ctx.stage = stage;
            ctx.conn = &conn;
            ctx.tx = &tx;
            ctx.rcpt = &rcpt;
            Verdict v = state->run_stage(ctx);
            ASSERT_EQ(lua_gettop(state->L()), 0) << stage_name(stage) << " call " << i;
            const bool fails =
                stage == Stage::kConnect || stage == Stage::kHelo || stage == Stage::kRcptTo;
            ASSERT_EQ(v.failure.has_value(), fails) << stage_name(stage);
        }
        state->run_event(Event::kQueued, &conn, tx, DeliveryResult{}, nullptr);
        ASSERT_EQ(lua_gettop(state->L()), 0) << "notification, call " << i;
    }
    std::vector<std::string> trace;
    state->run_event(Event::kFailed, &conn, tx, DeliveryResult{}, &trace);
    EXPECT_EQ(lua_gettop(state->L()), 0) << "failed notification";
    EXPECT_EQ(trace.size(), 1u);
    EXPECT_FALSE(state->damaged());
}

// The first handler fills the state's memory to within a few octets of the limit and keeps it
// (in upvalues); the second handler of the stage cannot even be given its arguments. That must
// end as a failed call on a damaged state, as a limit inside a handler does.
const char* const kFillMemory = R"lua(
local LIMIT = 2 * 1024 * 1024
local keep = {}
for i = 1, 200 do keep[i] = false end
local saved
postern.on("mail_from", function(tx)
  saved = tx  -- the handle stays alive: the emergency collection cannot free it
  local i = 0
  collectgarbage("collect")
  while true do
    local free = LIMIT - collectgarbage("count") * 1024
    if free < 4096 then break end
    i = i + 1
    keep[i] = string.rep("x", math.floor((free - 2048) / 2))
  end
  -- The buffer boxes of the big strings are garbage with finalizers: the first collection
  -- finalizes them, the second frees them (else the emergency collection would).
  collectgarbage("collect")
  collectgarbage("collect")
  while true do
    local free = LIMIT - collectgarbage("count") * 1024
    local n = math.floor(math.min(free - 33, 1000))
    if n < 41 then
      if n >= 1 then i = i + 1 keep[i] = string.rep("q", n) end
      break
    end
    i = i + 1
    keep[i] = string.rep("z", n)
  end
end)
postern.on("mail_from", function(tx)
  local s = string.rep("y", 100)
  return postern.accept()
end)
)lua";

TEST(LuaState, MemoryLimitBetweenHandlersFailsTheCall) {
    LuaLimits limits;
    limits.memory = 2 * 1024 * 1024;
    std::string error;
    auto state = LuaState::create(source(kFillMemory, limits), error);
    ASSERT_NE(state, nullptr) << error;
    Connection conn;
    Transaction tx;
    HookContext ctx;
    ctx.stage = Stage::kMailFrom;
    ctx.conn = &conn;
    ctx.tx = &tx;
    Verdict v = state->run_stage(ctx);
    ASSERT_TRUE(v.failure.has_value()) << action_name(v.action);
    EXPECT_NE(v.failure->find("memory limit exceeded (2 MiB)"), std::string::npos) << *v.failure;
    EXPECT_TRUE(state->damaged());
}

}  // namespace
}  // namespace postern::filters::lua
