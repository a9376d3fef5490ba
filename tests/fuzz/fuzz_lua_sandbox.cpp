// Fuzzes the Lua sandbox with arbitrary script text under small limits: loading and running
// every hook either works or fails with an error; nothing crashes, aborts or hangs (the
// instruction budget and the timeout end every call).
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "filters/lua/lua_state.hpp"

using namespace postern::filters;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto source = std::make_shared<lua::ScriptSource>();
    source->path = "fuzz.lua";
    source->text.assign(reinterpret_cast<const char*>(data), size);
    source->filter_name = "fuzz";
    source->routes = {"default", "other"};
    source->limits.memory = 8u * 1024 * 1024;
    source->limits.instructions = 200'000;
    source->limits.timeout = std::chrono::milliseconds(200);
    std::string error;
    std::unique_ptr<lua::LuaState> state = lua::LuaState::create(source, error);
    if (!state) return 0;
    Connection conn;
    conn.ip = "192.0.2.1";
    conn.listener = "fuzz";
    conn.helo = "client.example";
    Transaction tx;
    tx.conn = &conn;
    tx.id = "FUZZ1";
    tx.mail_from = Address::from_mailbox("a@example.com");
    Address rcpt = Address::from_mailbox("b@example.net");
    tx.rcpts.push_back(rcpt);
    const std::string message = "From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n";
    Message msg;
    msg.headers = HeaderBlock(std::string_view(message).substr(0, 34));
    msg.body = std::string_view(message).substr(36);
    msg.body_size = msg.body.size();
    for (int s = 0; s < kStageCount && !state->damaged(); ++s) {
        HookContext ctx;
        ctx.stage = static_cast<Stage>(s);
        ctx.conn = &conn;
        if (ctx.stage >= Stage::kMailFrom) ctx.tx = &tx;
        if (ctx.stage == Stage::kRcptTo) ctx.rcpt = &rcpt;
        if (ctx.stage == Stage::kData) ctx.message = &msg;
        Verdict v = state->run_stage(ctx);
        if (v.reply && v.reply->code != 0 && (v.reply->code < 400 || v.reply->code > 599)) {
            std::abort();  // postern.reject & co check their codes
        }
    }
    if (!state->damaged()) {
        DeliveryResult result{"b@example.net", "250 ok", "default"};
        state->run_event(Event::kQueued, &conn, tx, result, nullptr);
    }
    return 0;
}
