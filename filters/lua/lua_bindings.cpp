// The `postern` module and the handler arguments; see lua_bindings.hpp and docs/lua-api.md.
//
// conn, tx, msg, tx.tags and tx.notes are small userdata pointing at the server's objects.
// Each carries the serial of the call it was made for: kept in an upvalue and used later, it
// raises an error instead of touching a transaction that is gone.
#include "filters/lua/lua_bindings.hpp"

#include <openssl/evp.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cstring>
#include <lua.hpp>
#include <sstream>

#include "proxy/config/cidr.hpp"
#include "proxy/smtp/ascii.hpp"
#include "proxy/upstream/route_table.hpp"

namespace postern::filters::lua {
namespace {

constexpr const char* kConnMeta = "postern.conn";
constexpr const char* kTxMeta = "postern.tx";
constexpr const char* kMsgMeta = "postern.msg";
constexpr const char* kTagsMeta = "postern.tags";
constexpr const char* kNotesMeta = "postern.notes";
constexpr const char* kVerdictMeta = "postern.verdict";

constexpr size_t kMaxTagKey = 64;
constexpr size_t kMaxTagValue = 1024;
constexpr size_t kMaxEntries = 256;  // tags or notes on one transaction

struct Handle {
    void* target;
    uint64_t serial;
    bool read_only;
};

void push_handle(lua_State* L, const char* meta, void* target, bool read_only = false) {
    auto* h = static_cast<Handle*>(lua_newuserdatauv(L, sizeof(Handle), 0));
    h->target = target;
    h->serial = LuaState::of(L).serial();
    h->read_only = read_only;
    luaL_setmetatable(L, meta);
}

Handle& check_handle(lua_State* L, int index, const char* meta, const char* what) {
    auto* h = static_cast<Handle*>(luaL_checkudata(L, index, meta));
    if (h->serial != LuaState::of(L).serial() || !h->target) {
        luaL_error(L, "%s used after the hook call it was given to (keep state in tx.notes)", what);
    }
    return *h;
}

Transaction& check_tx(lua_State* L, int index) {
    return *static_cast<Transaction*>(check_handle(L, index, kTxMeta, "tx").target);
}

Transaction& check_writable_tx(lua_State* L, int index, const char* what) {
    Handle& h = check_handle(L, index, kTxMeta, "tx");
    if (h.read_only) luaL_error(L, "%s: a notification cannot change the transaction", what);
    return *static_cast<Transaction*>(h.target);
}

void set_string(lua_State* L, const char* key, std::string_view value) {
    lua_pushlstring(L, value.data(), value.size());
    lua_setfield(L, -2, key);
}

std::string_view check_view(lua_State* L, int index) {
    size_t len = 0;
    const char* s = luaL_checklstring(L, index, &len);
    return {s, len};
}

// Records a change in the decision trace of `postern policy test`.
void trace_change(lua_State* L, const std::string& what) {
    const HookContext* hook = LuaState::of(L).hook();
    if (hook && hook->trace) hook->trace->push_back("change: " + what);
}

// --- conn ----------------------------------------------------------------------------------

int conn_index(lua_State* L) {
    const auto& c = *static_cast<const Connection*>(check_handle(L, 1, kConnMeta, "conn").target);
    std::string_view key = check_view(L, 2);
    auto push = [&](const std::string& s) { lua_pushlstring(L, s.data(), s.size()); };
    if (key == "ip") {
        push(c.ip);
    } else if (key == "port") {
        lua_pushinteger(L, c.port);
    } else if (key == "listener") {
        push(c.listener);
    } else if (key == "helo") {
        c.helo.empty() ? lua_pushnil(L) : push(c.helo);
    } else if (key == "auth_user") {
        c.auth_user.empty() ? lua_pushnil(L) : push(c.auth_user);
    } else if (key == "tls") {
        if (c.tls_version.empty()) {
            lua_pushnil(L);
        } else {
            lua_createtable(L, 0, 2);
            set_string(L, "version", c.tls_version);
            set_string(L, "cipher", c.tls_cipher);
        }
    } else {
        return luaL_error(L, "conn has no field '%s'", std::string(key).c_str());
    }
    return 1;
}

// --- tags and notes: string-keyed maps of the transaction ------------------------------------

template <typename Map>
Map& check_map(lua_State* L, const char* meta, const char* what, bool write) {
    Handle& h = check_handle(L, 1, meta, what);
    if (write && h.read_only) luaL_error(L, "%s: a notification cannot change them", what);
    return *static_cast<Map*>(h.target);
}

void push_note(lua_State* L, const NoteValue& v) {
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>) {
                lua_pushlstring(L, x.data(), x.size());
            } else if constexpr (std::is_same_v<T, int64_t>) {
                lua_pushinteger(L, x);
            } else if constexpr (std::is_same_v<T, double>) {
                lua_pushnumber(L, x);
            } else {
                lua_pushboolean(L, x);
            }
        },
        v);
}

std::string check_key(lua_State* L, const char* what) {
    std::string_view key = check_view(L, 2);
    if (key.empty() || key.size() > kMaxTagKey) {
        luaL_error(L, "%s keys are 1 to %d characters", what, static_cast<int>(kMaxTagKey));
    }
    return std::string(key);
}

int tags_index(lua_State* L) {
    auto& tags = check_map<std::map<std::string, std::string>>(L, kTagsMeta, "tx.tags", false);
    auto it = tags.find(std::string(check_view(L, 2)));
    if (it == tags.end()) return lua_pushnil(L), 1;
    lua_pushlstring(L, it->second.data(), it->second.size());
    return 1;
}

int tags_newindex(lua_State* L) {
    auto& tags = check_map<std::map<std::string, std::string>>(L, kTagsMeta, "tx.tags", true);
    std::string key = check_key(L, "tx.tags");
    if (lua_isnil(L, 3)) {
        if (tags.erase(key)) trace_change(L, "tag " + key + " removed");
        return 0;
    }
    if (lua_type(L, 3) != LUA_TSTRING && lua_type(L, 3) != LUA_TNUMBER &&
        lua_type(L, 3) != LUA_TBOOLEAN) {
        return luaL_error(L, "tx.tags values are strings (got %s)", luaL_typename(L, 3));
    }
    std::string value = luaL_tolstring(L, 3, nullptr);
    if (value.size() > kMaxTagValue) return luaL_error(L, "tx.tags values are at most 1024 octets");
    for (char c : value) {
        if (static_cast<unsigned char>(c) < 0x20) {
            return luaL_error(L, "tx.tags values cannot hold control characters");
        }
    }
    if (!tags.count(key) && tags.size() >= kMaxEntries) {
        return luaL_error(L, "tx.tags holds at most 256 entries");
    }
    trace_change(L, "tag " + key + " = " + value);
    tags[key] = std::move(value);
    return 0;
}

int notes_index(lua_State* L) {
    auto& notes = check_map<std::map<std::string, NoteValue>>(L, kNotesMeta, "tx.notes", false);
    auto it = notes.find(std::string(check_view(L, 2)));
    if (it == notes.end()) return lua_pushnil(L), 1;
    push_note(L, it->second);
    return 1;
}

int notes_newindex(lua_State* L) {
    auto& notes = check_map<std::map<std::string, NoteValue>>(L, kNotesMeta, "tx.notes", true);
    std::string key = check_key(L, "tx.notes");
    NoteValue value;
    switch (lua_type(L, 3)) {
        case LUA_TNIL:
            notes.erase(key);
            return 0;
        case LUA_TSTRING: {
            size_t len = 0;
            const char* s = lua_tolstring(L, 3, &len);
            if (len > 8 * 1024) return luaL_error(L, "tx.notes strings are at most 8 KiB");
            value = std::string(s, len);
            break;
        }
        case LUA_TNUMBER:
            if (lua_isinteger(L, 3)) {
                value = static_cast<int64_t>(lua_tointeger(L, 3));
            } else {
                value = static_cast<double>(lua_tonumber(L, 3));
            }
            break;
        case LUA_TBOOLEAN:
            value = static_cast<bool>(lua_toboolean(L, 3));
            break;
        default:
            return luaL_error(L, "tx.notes values are strings, numbers or booleans (got %s)",
                              luaL_typename(L, 3));
    }
    if (!notes.count(key) && notes.size() >= kMaxEntries) {
        return luaL_error(L, "tx.notes holds at most 256 entries");
    }
    notes[key] = std::move(value);
    return 0;
}

// __pairs: an iterator that finds the key after the one given (the map may change between).
template <typename Map>
int map_next(lua_State* L, const char* meta, const char* what,
             void (*push_value)(lua_State*, const typename Map::mapped_type&)) {
    auto& map = check_map<Map>(L, meta, what, false);
    auto it = lua_isnil(L, 2) ? map.begin() : map.upper_bound(std::string(check_view(L, 2)));
    if (it == map.end()) return lua_pushnil(L), 1;
    lua_pushlstring(L, it->first.data(), it->first.size());
    push_value(L, it->second);
    return 2;
}

void push_tag_value(lua_State* L, const std::string& v) {
    lua_pushlstring(L, v.data(), v.size());
}

int tags_next(lua_State* L) {
    return map_next<std::map<std::string, std::string>>(L, kTagsMeta, "tx.tags", push_tag_value);
}
int notes_next(lua_State* L) {
    return map_next<std::map<std::string, NoteValue>>(L, kNotesMeta, "tx.notes", push_note);
}
int tags_pairs(lua_State* L) {
    lua_pushcfunction(L, tags_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}
int notes_pairs(lua_State* L) {
    lua_pushcfunction(L, notes_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

// --- tx ---------------------------------------------------------------------------------------

int tx_route(lua_State* L) {
    Transaction& tx = check_tx(L, 1);
    if (lua_isnoneornil(L, 2)) {
        tx.route.empty() ? lua_pushnil(L) : (void)lua_pushstring(L, tx.route.c_str());
        return 1;
    }
    check_writable_tx(L, 1, "tx:route");
    std::string name(check_view(L, 2));
    const auto& routes = LuaState::of(L).source().routes;
    if (!routes.empty() && !routes.count(name)) {
        std::string known;
        for (const std::string& r : routes) known += (known.empty() ? "" : ", ") + r;
        return luaL_error(L, "tx:route: unknown route \"%s\" (routes: %s)", name.c_str(),
                          known.c_str());
    }
    if (tx.route_locked && name != tx.route) {
        return luaL_error(L,
                          "tx:route: the route cannot change once a recipient went upstream "
                          "(delivery = \"passthrough\")");
    }
    trace_change(L, "route " + name);
    tx.route = std::move(name);
    return 0;
}

// A recipient from a script: a plain local@domain without controls, spaces or brackets.
std::string check_recipient(lua_State* L, int index, const char* what) {
    std::string_view a = check_view(L, index);
    size_t at = a.rfind('@');
    bool ok = a.size() <= 254 && at != std::string_view::npos && at > 0 && at + 1 < a.size();
    for (char c : a) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f || c == '<' || c == '>' || c == '"' || c == ',') ok = false;
    }
    if (!ok) luaL_error(L, "%s: \"%s\" is not an address like user@example.com", what, a.data());
    return std::string(a);
}

// The envelope sender: "" or "<>" for the null sender. Once the upstream transaction is open
// (passthrough) the MAIL command is sent already.
int tx_set_mail_from(lua_State* L) {
    Transaction& tx = check_writable_tx(L, 1, "tx:set_mail_from");
    std::string_view a = check_view(L, 2);
    std::string address;
    if (!a.empty() && a != "<>") address = check_recipient(L, 2, "tx:set_mail_from");
    const HookContext* hook = LuaState::of(L).hook();
    if (tx.sender_locked || (tx.live && hook && hook->stage == Stage::kData)) {
        return luaL_error(L,
                          "tx:set_mail_from: MAIL FROM went upstream already (delivery = "
                          "\"passthrough\"): change it at mail_from");
    }
    trace_change(L, "sender " + (address.empty() ? std::string("<>") : address));
    tx.mail_from = address.empty() ? Address{} : Address::from_mailbox(address);
    tx.new_mail_from = address;
    return 0;
}

// tx:add_rcpt and tx:remove_rcpt: recorded for the server (applied before storage) and shown
// at once in tx.rcpts.
int change_rcpt(lua_State* L, bool add) {
    const char* what = add ? "tx:add_rcpt" : "tx:remove_rcpt";
    Transaction& tx = check_writable_tx(L, 1, what);
    std::string address = check_recipient(L, 2, what);
    if (tx.live) {
        return luaL_error(L,
                          "%s needs delivery = \"queue\" (in passthrough the recipients go "
                          "upstream as the client sends them)",
                          what);
    }
    if (tx.rcpt_changes.size() >= 1000) {
        return luaL_error(L, "%s: at most 1000 recipient changes per transaction", what);
    }
    trace_change(L, (add ? "recipient added " : "recipient removed ") + address);
    auto same = [&](const Address& r) { return smtp::iequals(r.address, address); };
    if (!add) {
        std::erase_if(tx.rcpts, same);
    } else if (std::none_of(tx.rcpts.begin(), tx.rcpts.end(), same)) {
        tx.rcpts.push_back(Address::from_mailbox(address));
    }
    tx.rcpt_changes.push_back(RecipientChange{add, std::move(address)});
    return 0;
}

int tx_add_rcpt(lua_State* L) {
    return change_rcpt(L, true);
}
int tx_remove_rcpt(lua_State* L) {
    return change_rcpt(L, false);
}

int tx_index(lua_State* L) {
    Handle& h = check_handle(L, 1, kTxMeta, "tx");
    Transaction& tx = *static_cast<Transaction*>(h.target);
    std::string_view key = check_view(L, 2);
    if (key == "id") {
        lua_pushlstring(L, tx.id.data(), tx.id.size());
    } else if (key == "mail_from") {
        push_address(L, tx.mail_from);
    } else if (key == "rcpts") {
        lua_createtable(L, static_cast<int>(tx.rcpts.size()), 0);
        for (size_t i = 0; i < tx.rcpts.size(); ++i) {
            push_address(L, tx.rcpts[i]);
            lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
        }
    } else if (key == "size") {
        lua_pushinteger(L, static_cast<lua_Integer>(tx.size));
    } else if (key == "tags") {
        push_handle(L, kTagsMeta, &tx.tags, h.read_only);
    } else if (key == "notes") {
        push_handle(L, kNotesMeta, &tx.notes, h.read_only);
    } else if (key == "spf") {
        tx.spf ? (void)lua_pushstring(L, tx.spf->c_str()) : lua_pushnil(L);
    } else if (key == "dkim") {
        tx.dkim ? (void)lua_pushstring(L, tx.dkim->c_str()) : lua_pushnil(L);
    } else if (key == "conn") {
        tx.conn ? push_handle(L, kConnMeta, const_cast<Connection*>(tx.conn)) : lua_pushnil(L);
    } else if (key == "route") {
        lua_pushcfunction(L, tx_route);
    } else if (key == "passthrough") {
        lua_pushboolean(L, tx.live);
    } else if (key == "set_mail_from") {
        lua_pushcfunction(L, tx_set_mail_from);
    } else if (key == "add_rcpt") {
        lua_pushcfunction(L, tx_add_rcpt);
    } else if (key == "remove_rcpt") {
        lua_pushcfunction(L, tx_remove_rcpt);
    } else {
        return luaL_error(L, "tx has no field '%s'", std::string(key).c_str());
    }
    return 1;
}

// --- msg --------------------------------------------------------------------------------------

Message& check_msg(lua_State* L) {
    return *static_cast<Message*>(check_handle(L, 1, kMsgMeta, "msg").target);
}

void check_editable(lua_State* L, const char* what) {
    const HookContext* hook = LuaState::of(L).hook();
    if (hook && hook->tx && hook->tx->live) {
        luaL_error(L,
                   "%s needs delivery = \"queue\" (in passthrough the message is already on "
                   "its way upstream)",
                   what);
    }
}

int msg_header(lua_State* L) {
    auto value = check_msg(L).headers.first(check_view(L, 2));
    if (!value) return lua_pushnil(L), 1;
    lua_pushlstring(L, value->data(), value->size());
    return 1;
}

int msg_headers(lua_State* L) {
    auto values = check_msg(L).headers.all(check_view(L, 2));
    lua_createtable(L, static_cast<int>(values.size()), 0);
    for (size_t i = 0; i < values.size(); ++i) {
        lua_pushlstring(L, values[i].data(), values[i].size());
        lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
    return 1;
}

int msg_edit(lua_State* L, bool set) {
    Message& m = check_msg(L);
    const char* what = set ? "msg:set_header" : "msg:add_header";
    check_editable(L, what);
    std::string error;
    bool ok = set ? m.headers.set(check_view(L, 2), check_view(L, 3), error)
                  : m.headers.add(check_view(L, 2), check_view(L, 3), error);
    if (!ok) return luaL_error(L, "%s: %s", what, error.c_str());
    trace_change(L, std::string(set ? "header set " : "header added ") +
                        std::string(check_view(L, 2)) + ": " + std::string(check_view(L, 3)));
    return 0;
}
int msg_add_header(lua_State* L) {
    return msg_edit(L, false);
}
int msg_set_header(lua_State* L) {
    return msg_edit(L, true);
}

int msg_remove_header(lua_State* L) {
    Message& m = check_msg(L);
    check_editable(L, "msg:remove_header");
    size_t removed = m.headers.remove(check_view(L, 2));
    if (removed) {
        trace_change(L, "header removed " + std::string(check_view(L, 2)) + " (" +
                            std::to_string(removed) + ")");
    }
    lua_pushinteger(L, static_cast<lua_Integer>(removed));
    return 1;
}

int msg_body_size(lua_State* L) {
    lua_pushinteger(L, static_cast<lua_Integer>(check_msg(L).body_size));
    return 1;
}

int msg_body(lua_State* L) {
    Message& m = check_msg(L);
    lua_Integer max = luaL_optinteger(L, 2, 64 * 1024);
    if (max < 0) return luaL_error(L, "msg:body: max_bytes must not be negative");
    size_t n = std::min<size_t>(m.body.size(), static_cast<size_t>(max));
    lua_pushlstring(L, m.body.data(), n);
    return 1;
}

int msg_index(lua_State* L) {
    check_msg(L);
    std::string_view key = check_view(L, 2);
    static const std::pair<std::string_view, lua_CFunction> kMethods[] = {
        {"header", msg_header},
        {"headers", msg_headers},
        {"add_header", msg_add_header},
        {"set_header", msg_set_header},
        {"remove_header", msg_remove_header},
        {"body_size", msg_body_size},
        {"body", msg_body},
    };
    for (const auto& [name, fn] : kMethods) {
        if (name == key) return lua_pushcfunction(L, fn), 1;
    }
    return luaL_error(L, "msg has no method '%s'", std::string(key).c_str());
}

// --- verdicts ---------------------------------------------------------------------------------

bool looks_enhanced(std::string_view s) {
    return s.size() >= 5 && s[1] == '.' && (s[0] == '2' || s[0] == '4' || s[0] == '5') &&
           s.find(' ') == std::string_view::npos;
}

// postern.reject([code], [enhanced], [text]): any of them may be left out, from the left.
int make_verdict(lua_State* L, Action action, int code, const char* enhanced, const char* text,
                 const char* fn) {
    int arg = 1;
    FilterReply reply{code, enhanced, text};
    if (lua_type(L, arg) == LUA_TNUMBER) {
        if (!lua_isinteger(L, arg)) return luaL_error(L, "%s: the code is a whole number", fn);
        reply.code = static_cast<int>(lua_tointeger(L, arg++));
        reply.enhanced = "";  // a code of its own: the default enhanced code may not fit it
    }
    if (lua_type(L, arg) == LUA_TSTRING && looks_enhanced(lua_tostring(L, arg)) &&
        lua_type(L, arg + 1) == LUA_TSTRING) {
        reply.enhanced = lua_tostring(L, arg++);
    }
    if (lua_type(L, arg) == LUA_TSTRING) {
        reply.text = lua_tostring(L, arg++);
    } else if (!lua_isnoneornil(L, arg)) {
        return luaL_error(L, "%s: expected (code, enhanced, text), got a %s", fn,
                          luaL_typename(L, arg));
    }
    if (reply.enhanced.empty() && reply.code / 100 == code / 100) reply.enhanced = enhanced;
    if (auto problem = check_reply(action, reply)) {
        return luaL_error(L, "%s: %s", fn, problem->c_str());
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, action_name(action));
    lua_setfield(L, -2, "action");
    lua_pushinteger(L, reply.code);
    lua_setfield(L, -2, "code");
    set_string(L, "enhanced", reply.enhanced);
    set_string(L, "text", reply.text);
    luaL_setmetatable(L, kVerdictMeta);
    return 1;
}

int verdict_reject(lua_State* L) {
    return make_verdict(L, Action::kReject, 550, "5.7.1", "Rejected by policy", "postern.reject");
}
int verdict_tempfail(lua_State* L) {
    return make_verdict(L, Action::kTempfail, 451, "4.7.1", "Try again later", "postern.tempfail");
}
int verdict_disconnect(lua_State* L) {
    return make_verdict(L, Action::kDisconnect, 421, "4.7.0", "Closing connection",
                        "postern.disconnect");
}

int verdict_simple(lua_State* L, Action action) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, action_name(action));
    lua_setfield(L, -2, "action");
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "reason");
    }
    luaL_setmetatable(L, kVerdictMeta);
    return 1;
}
int verdict_accept(lua_State* L) {
    return verdict_simple(L, Action::kAccept);
}
int verdict_discard(lua_State* L) {
    return verdict_simple(L, Action::kDiscard);
}

// --- postern.on, log, match, hash ---------------------------------------------------------------

int postern_on(lua_State* L) {
    LuaState& state = LuaState::of(L);
    std::string event(check_view(L, 1));
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!state.loading()) return luaL_error(L, "postern.on: handlers are registered at load time");
    int slot = slot_by_name(event);
    if (slot < 0) {
        return luaL_error(L,
                          "postern.on: unknown event \"%s\" (connect, helo, auth, mail_from, "
                          "rcpt_to, data, queued, delivered, failed)",
                          event.c_str());
    }
    lua_Debug ar;
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">S", &ar);
    std::string where = std::string(ar.short_src) + ":" + std::to_string(ar.linedefined);
    lua_pushvalue(L, 2);
    state.add_handler(slot, luaL_ref(L, LUA_REGISTRYINDEX), std::move(where));
    return 0;
}

int log_at(lua_State* L, int level) {
    std::string line;
    for (int i = 1; i <= lua_gettop(L); ++i) {
        if (i > 1) line += ' ';
        line += luaL_tolstring(L, i, nullptr);
        lua_pop(L, 1);
    }
    LuaState::of(L).log_line(level, line);
    return 0;
}
int log_info(lua_State* L) {
    return log_at(L, 0);
}
int log_warn(lua_State* L) {
    return log_at(L, 1);
}
int log_error(lua_State* L) {
    return log_at(L, 2);
}

// Calls fn for each string of the list at `index` (a table of strings, or one string).
template <typename Fn>
bool any_of_list(lua_State* L, int index, const char* what, Fn fn) {
    if (lua_type(L, index) == LUA_TSTRING) return fn(std::string_view(lua_tostring(L, index)));
    luaL_checktype(L, index, LUA_TTABLE);
    lua_Integer n = luaL_len(L, index);
    for (lua_Integer i = 1; i <= n; ++i) {
        lua_geti(L, index, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "%s: list entry %d is not a string", what, static_cast<int>(i));
        }
        size_t len = 0;
        const char* s = lua_tolstring(L, -1, &len);
        bool hit = fn(std::string_view(s, len));
        lua_pop(L, 1);
        if (hit) return true;
    }
    return false;
}

int match_domain(lua_State* L) {
    std::string_view addr = check_view(L, 1);
    size_t at = addr.rfind('@');
    std::string_view domain = at == std::string_view::npos ? addr : addr.substr(at + 1);
    while (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    bool hit = any_of_list(L, 2, "postern.match.domain", [&](std::string_view pattern) {
        return upstream::domain_matches(domain, pattern);
    });
    lua_pushboolean(L, hit);
    return 1;
}

int match_cidr(lua_State* L) {
    std::string_view text = check_view(L, 1);
    auto ip = config::IpAddress::parse(text);
    if (!ip) return luaL_error(L, "postern.match.cidr: \"%s\" is not an IP address", text.data());
    bool hit = any_of_list(L, 2, "postern.match.cidr", [&](std::string_view entry) {
        auto cidr = config::Cidr::parse(entry);
        if (!cidr) {
            luaL_error(L, "postern.match.cidr: \"%s\" is not a network such as 10.0.0.0/8",
                       std::string(entry).c_str());
        }
        return cidr->contains(*ip);
    });
    lua_pushboolean(L, hit);
    return 1;
}

int hash_sha256(lua_State* L) {
    std::string_view data = check_view(L, 1);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned i = 0; i < len; ++i) {
        hex += kHex[digest[i] >> 4];
        hex += kHex[digest[i] & 15];
    }
    lua_pushlstring(L, hex.data(), hex.size());
    return 1;
}

// postern.config: the filter's `config` table from postern.toml, read-only.
void push_toml(lua_State* L, const toml::node& node) {
    if (auto t = node.as_table()) {
        lua_createtable(L, 0, static_cast<int>(t->size()));
        for (auto&& [k, v] : *t) {
            push_toml(L, v);
            lua_setfield(L, -2, std::string(k.str()).c_str());
        }
        make_read_only(L, -1);
    } else if (auto a = node.as_array()) {
        lua_createtable(L, static_cast<int>(a->size()), 0);
        lua_Integer i = 1;
        for (const toml::node& v : *a) {
            push_toml(L, v);
            lua_rawseti(L, -2, i++);
        }
        make_read_only(L, -1);
    } else if (auto s = node.value<std::string>(); s && node.is_string()) {
        lua_pushlstring(L, s->data(), s->size());
    } else if (node.is_integer()) {
        lua_pushinteger(L, node.as_integer()->get());
    } else if (node.is_floating_point()) {
        lua_pushnumber(L, node.as_floating_point()->get());
    } else if (node.is_boolean()) {
        lua_pushboolean(L, node.as_boolean()->get());
    } else {
        // Dates and times: as TOML writes them.
        std::ostringstream text;
        node.visit([&](auto&& v) { text << v; });
        lua_pushstring(L, text.str().c_str());
    }
}

void new_metatable(lua_State* L, const char* name, lua_CFunction index, lua_CFunction newindex,
                   lua_CFunction pairs) {
    luaL_newmetatable(L, name);
    if (index) {
        lua_pushcfunction(L, index);
        lua_setfield(L, -2, "__index");
    }
    if (newindex) {
        lua_pushcfunction(L, newindex);
        lua_setfield(L, -2, "__newindex");
    }
    if (pairs) {
        lua_pushcfunction(L, pairs);
        lua_setfield(L, -2, "__pairs");
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

int no_fields(lua_State* L) {
    return luaL_error(L, "this object is read-only");
}

void set_functions(lua_State* L, std::initializer_list<std::pair<const char*, lua_CFunction>> fns) {
    for (const auto& [name, fn] : fns) {
        lua_pushcfunction(L, fn);
        lua_setfield(L, -2, name);
    }
}

}  // namespace

void open_postern_module(lua_State* L, const ScriptSource& source) {
    new_metatable(L, kConnMeta, conn_index, no_fields, nullptr);
    new_metatable(L, kTxMeta, tx_index, no_fields, nullptr);
    new_metatable(L, kMsgMeta, msg_index, no_fields, nullptr);
    new_metatable(L, kTagsMeta, tags_index, tags_newindex, tags_pairs);
    new_metatable(L, kNotesMeta, notes_index, notes_newindex, notes_pairs);
    new_metatable(L, kVerdictMeta, nullptr, nullptr, nullptr);

    lua_newtable(L);
    set_functions(L, {{"on", postern_on},
                      {"accept", verdict_accept},
                      {"reject", verdict_reject},
                      {"tempfail", verdict_tempfail},
                      {"discard", verdict_discard},
                      {"disconnect", verdict_disconnect}});
    lua_newtable(L);
    set_functions(L, {{"info", log_info}, {"warn", log_warn}, {"error", log_error}});
    make_read_only(L, -1);
    lua_setfield(L, -2, "log");
    lua_newtable(L);
    set_functions(L, {{"domain", match_domain}, {"cidr", match_cidr}});
    make_read_only(L, -1);
    lua_setfield(L, -2, "match");
    lua_newtable(L);
    set_functions(L, {{"sha256", hash_sha256}});
    make_read_only(L, -1);
    lua_setfield(L, -2, "hash");

    toml::table config;
    if (!source.config_toml.empty()) {
        // Checked by LuaFilter::create already; a C++ exception must not cross Lua's frames.
        try {
            config = toml::parse(std::string_view(source.config_toml));
        } catch (const toml::parse_error& e) {
            luaL_error(L, "the filter's config table: %s", std::string(e.description()).c_str());
        }
    }
    push_toml(L, config);
    lua_setfield(L, -2, "config");
    lua_pushstring(L, source.filter_name.c_str());
    lua_setfield(L, -2, "filter_name");
    lua_pushstring(L, source.hostname.c_str());
    lua_setfield(L, -2, "hostname");
    lua_createtable(L, static_cast<int>(source.routes.size()), 0);
    lua_Integer route_index = 1;
    for (const std::string& r : source.routes) {
        lua_pushstring(L, r.c_str());
        lua_rawseti(L, -2, route_index++);
    }
    make_read_only(L, -1);
    lua_setfield(L, -2, "routes");
    make_read_only(L, -1);
}

void push_connection(lua_State* L, const Connection* conn) {
    if (!conn) return lua_pushnil(L);
    push_handle(L, kConnMeta, const_cast<Connection*>(conn));
}

void push_transaction(lua_State* L, Transaction* tx, bool read_only) {
    push_handle(L, kTxMeta, tx, read_only);
}

void push_address(lua_State* L, const Address& a) {
    lua_createtable(L, 0, 4);
    set_string(L, "address", a.address);
    set_string(L, "local", a.local);
    set_string(L, "domain", a.domain);
    lua_createtable(L, 0, static_cast<int>(a.params.size()));
    for (const auto& [k, v] : a.params) set_string(L, k.c_str(), v);
    lua_setfield(L, -2, "params");
}

void push_message(lua_State* L, Message* message) {
    push_handle(L, kMsgMeta, message);
}

void push_result(lua_State* L, Event event, const DeliveryResult& result) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, event_name(event));
    lua_setfield(L, -2, "status");
    if (!result.rcpt.empty()) set_string(L, "rcpt", result.rcpt);
    set_string(L, "reply", result.reply);
    set_string(L, "route", result.route);
}

bool read_verdict(lua_State* L, int index, Verdict& verdict, std::string& error) {
    index = lua_absindex(L, index);
    if (lua_isnil(L, index)) return true;
    if (!luaL_testudata(L, index, kVerdictMeta) && !(lua_istable(L, index) && [&] {
            if (!lua_getmetatable(L, index)) return false;
            luaL_getmetatable(L, kVerdictMeta);
            bool same = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
            return same;
        }())) {
        error = std::string("the handler returned a ") + luaL_typename(L, index) +
                "; return a postern verdict (postern.reject(...) etc.) or nothing";
        return false;
    }
    lua_getfield(L, index, "action");
    std::string_view action = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
    lua_pop(L, 1);
    for (Action a : {Action::kAccept, Action::kReject, Action::kTempfail, Action::kDiscard,
                     Action::kDisconnect}) {
        if (action == action_name(a)) verdict.action = a;
    }
    if (lua_getfield(L, index, "code") == LUA_TNUMBER) {
        FilterReply reply;
        reply.code = static_cast<int>(lua_tointeger(L, -1));
        lua_getfield(L, index, "enhanced");
        reply.enhanced = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
        lua_getfield(L, index, "text");
        reply.text = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
        lua_pop(L, 2);
        verdict.reply = std::move(reply);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, index, "reason") == LUA_TSTRING) verdict.reason = lua_tostring(L, -1);
    lua_pop(L, 1);
    return true;
}

}  // namespace postern::filters::lua
