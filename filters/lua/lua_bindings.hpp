// The `postern` module and the objects handed to handlers (conn, tx, rcpt, msg, result); see
// docs/lua-api.md. Internal to the Lua filter.
#pragma once

#include <string>

#include "filters/filter.hpp"
#include "filters/lua/lua_state.hpp"

struct lua_State;

namespace postern::filters::lua {

// Registers the metatables and leaves the `postern` module table on the stack.
void open_postern_module(lua_State* L, const ScriptSource& source);

// Handles valid for the current call only (LuaState::serial).
void push_connection(lua_State* L, const Connection* conn);
void push_transaction(lua_State* L, Transaction* tx, bool read_only);
void push_address(lua_State* L, const Address& address);
void push_message(lua_State* L, Message* message);
void push_result(lua_State* L, Event event, const DeliveryResult& result);

// Reads a handler's return value at `index`: nil is continue, a postern verdict its action.
// False and `error` for anything else.
bool read_verdict(lua_State* L, int index, Verdict& verdict, std::string& error);

// A read-only view of the table at `index`, replacing it: writes raise an error, pairs, ipairs
// and # still work.
void make_read_only(lua_State* L, int index);

}  // namespace postern::filters::lua
