// Unit tests for the Lua policy filter (filters/lua/lua_filter.hpp) and, through it, the
// `postern` module (lua_bindings) and the sandbox (lua_state): every function a script can call,
// and every way out of the sandbox we know of, each of which must end as a contained failure.
#include "filters/lua/lua_filter.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "filters/chain.hpp"

namespace postern::filters::lua {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

class LuaFilterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char pattern[] = "/tmp/postern_lua_test_XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        dir_ = pattern;
        path_ = dir_ + "/policy.lua";

        conn_.ip = "192.0.2.10";
        conn_.port = 40000;
        conn_.listener = "inbound";
        tx_.conn = &conn_;
        tx_.id = "01HQUEUEID";
        tx_.mail_from = Address::from_mailbox("alice@sender.example");
        tx_.mail_from.params = {{"SIZE", "1234"}, {"BODY", "8BITMIME"}};
        tx_.rcpts = {Address::from_mailbox("bob@rcpt.example"),
                     Address::from_mailbox("carol@other.example")};
        tx_.size = 1234;
        rcpt_ = Address::from_mailbox("dave@rcpt.example");
        rcpt_.params = {{"NOTIFY", "NEVER"}};
        headers_ =
            "From: Alice <alice@sender.example>\r\n"
            "Subject: Hello\r\n world\r\n"
            "Received: one\r\n"
            "Received: two\r\n"
            "X-Remove: a\r\n"
            "x-remove: b\r\n";
        body_ = "Line one\r\nLine two\r\n";
        message_.headers = HeaderBlock(headers_);
        message_.body = body_;
        message_.body_size = body_.size();
    }

    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    // Writes a file under the temporary directory (creating directories) and returns its path.
    std::string write(const std::string& name, const std::string& text) {
        fs::path path = fs::path(dir_) / name;
        fs::create_directories(path.parent_path());
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << text;
        return path.string();
    }

    LuaFilterOptions options() const {
        LuaFilterOptions o;
        o.name = "policy";
        o.script = path_;
        return o;
    }

    // The filter for this script, or null (a test failure) when it does not load.
    std::unique_ptr<LuaFilter> load(const std::string& script) { return load(script, options()); }
    std::unique_ptr<LuaFilter> load(const std::string& script, LuaFilterOptions o) {
        write(fs::path(o.script).lexically_relative(dir_).string(), script);
        std::string error;
        auto filter = LuaFilter::create(std::move(o), error);
        EXPECT_NE(filter, nullptr) << error;
        return filter;
    }

    // The error of a script that must not load.
    std::string load_error(const std::string& script, LuaFilterOptions o) {
        write(fs::path(o.script).lexically_relative(dir_).string(), script);
        std::string error;
        auto filter = LuaFilter::create(std::move(o), error);
        EXPECT_EQ(filter, nullptr);
        EXPECT_FALSE(error.empty());
        return error;
    }
    std::string load_error(const std::string& script) { return load_error(script, options()); }

    HookContext context(Stage stage) {
        HookContext ctx;
        ctx.stage = stage;
        ctx.conn = &conn_;
        ctx.trace = &trace_;
        if (stage >= Stage::kMailFrom) ctx.tx = &tx_;
        if (stage == Stage::kRcptTo) ctx.rcpt = &rcpt_;
        if (stage == Stage::kData) ctx.message = &message_;
        return ctx;
    }

    Verdict run(LuaFilter& filter, Stage stage) {
        HookContext ctx = context(stage);
        return filter.run(ctx);
    }

    // Runs the stage and expects no failure.
    Verdict run_ok(LuaFilter& filter, Stage stage) {
        Verdict v = run(filter, stage);
        EXPECT_FALSE(v.failure.has_value()) << v.failure.value_or("");
        return v;
    }

    // Runs the stage and returns the failure text ("" when it did not fail: a test failure).
    std::string run_failure(LuaFilter& filter, Stage stage) {
        Verdict v = run(filter, stage);
        EXPECT_TRUE(v.failure.has_value()) << "action " << action_name(v.action);
        return v.failure.value_or("");
    }

    // The reply text of a verdict (scripts report values through it).
    static std::string text_of(const Verdict& v) { return v.reply ? v.reply->text : "(none)"; }

    bool traced(const std::string& part) const {
        for (const std::string& line : trace_) {
            if (line.find(part) != std::string::npos) return true;
        }
        return false;
    }

    std::string dir_;
    std::string path_;
    Connection conn_;
    Transaction tx_;
    Address rcpt_;
    std::string headers_;
    std::string body_;
    Message message_;
    Strings trace_;
};

// Evaluates each argument once (the haystack is often a filter call).
#define EXPECT_CONTAINS(haystack, needle)                                   \
    do {                                                                    \
        const std::string hay_ = (haystack);                                \
        const std::string needle_ = (needle);                               \
        EXPECT_NE(hay_.find(needle_), std::string::npos)                    \
            << "\"" << hay_ << "\" does not contain \"" << needle_ << "\""; \
    } while (0)

// ---- loading ------------------------------------------------------------------------------------

TEST_F(LuaFilterTest, HandlesOnlyTheStagesWithHandlers) {
    auto filter = load(R"lua(
postern.on("data", function(tx, msg) end)
postern.on("queued", function(tx, result) end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(filter->name(), "policy");
    EXPECT_TRUE(filter->handles(Stage::kData));
    EXPECT_FALSE(filter->handles(Stage::kConnect));
    EXPECT_FALSE(filter->handles(Stage::kRcptTo));
    EXPECT_TRUE(filter->handles(Event::kQueued));
    EXPECT_FALSE(filter->handles(Event::kDelivered));
    // A stage without handlers continues.
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).action, Action::kContinue);
}

TEST_F(LuaFilterTest, LoadErrorsNameFileAndLine) {
    EXPECT_EQ(load_error("local x = 1\nerror(\"load-time boom\")\n"), path_ + ":2: load-time boom");
    std::string syntax = load_error("postern.on(\"connect\", function(conn)\n  return +\nend)\n");
    EXPECT_EQ(syntax, path_ + ":2: unexpected symbol near '+'");
    EXPECT_CONTAINS(load_error("postern.on(\"rcpt\", function() end)\n"), "unknown event \"rcpt\"");
    EXPECT_CONTAINS(load_error("postern.on(\"connect\", 42)\n"), path_ + ":1:");
    EXPECT_CONTAINS(load_error("nil_global.x = 1\n"), path_ + ":1:");

    LuaFilterOptions missing = options();
    missing.script = dir_ + "/none.lua";
    std::string error;
    EXPECT_EQ(LuaFilter::create(missing, error), nullptr);
    EXPECT_EQ(error, "cannot read the script \"" + dir_ + "/none.lua\"");
}

TEST_F(LuaFilterTest, TopLevelHasABudgetToo) {
    LuaFilterOptions o = options();
    o.limits.instructions = 100000;
    EXPECT_CONTAINS(load_error("while true do end\n", o), "instruction budget exceeded");
}

// ---- conn ---------------------------------------------------------------------------------------

TEST_F(LuaFilterTest, ConnFields) {
    auto filter = load(R"lua(
postern.on("connect", function(conn)
  assert(conn.ip == "192.0.2.10", "ip")
  assert(conn.port == 40000 and math.type(conn.port) == "integer", "port")
  assert(conn.listener == "inbound", "listener")
  assert(conn.helo == nil, "no helo yet")
  assert(conn.auth_user == nil, "not authenticated")
  assert(conn.tls == nil, "no tls")
  return postern.accept("connect ok")
end)
postern.on("helo", function(conn)
  assert(conn.helo == "client.example", "helo")
  assert(conn.auth_user == "alice", "auth_user")
  assert(conn.tls.version == "TLSv1.3", "tls version")
  assert(conn.tls.cipher == "TLS_AES_256_GCM_SHA384", "tls cipher")
  return postern.accept("helo ok")
end)
postern.on("auth", function(conn)
  if conn.auth_user == "writer" then conn.ip = "10.0.0.1" end
  return conn.no_such_field
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "connect ok");
    conn_.helo = "client.example";
    conn_.auth_user = "alice";
    conn_.tls_version = "TLSv1.3";
    conn_.tls_cipher = "TLS_AES_256_GCM_SHA384";
    EXPECT_EQ(run_ok(*filter, Stage::kHelo).reason, "helo ok");
    EXPECT_CONTAINS(run_failure(*filter, Stage::kAuth), "conn has no field 'no_such_field'");
    conn_.auth_user = "writer";
    EXPECT_CONTAINS(run_failure(*filter, Stage::kAuth), "this object is read-only");
    EXPECT_EQ(conn_.ip, "192.0.2.10");
}

// ---- tx and rcpt --------------------------------------------------------------------------------

TEST_F(LuaFilterTest, TxFields) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx.id == "01HQUEUEID", "id")
  local from = tx.mail_from
  assert(from.address == "alice@sender.example", "address")
  assert(from["local"] == "alice", "local")
  assert(from.domain == "sender.example", "domain")
  assert(from.params.SIZE == "1234" and from.params.BODY == "8BITMIME", "params")
  assert(#tx.rcpts == 2, "rcpts")
  assert(tx.rcpts[1].address == "bob@rcpt.example", "rcpt 1")
  assert(tx.rcpts[2].domain == "other.example", "rcpt 2")
  assert(tx.size == 1234 and math.type(tx.size) == "integer", "size")
  assert(tx.spf == "pass", "spf")
  assert(tx.dkim == nil, "dkim")
  assert(tx.conn.ip == "192.0.2.10" and tx.conn.listener == "inbound", "conn")
  assert(tx:route() == nil, "route")
  local ok, err = pcall(function() return tx.no_such_field end)
  assert(not ok and err:find("tx has no field 'no_such_field'", 1, true), err)
  ok, err = pcall(function() tx.id = "forged" end)
  assert(not ok and err:find("read-only", 1, true), err)
  return postern.accept("tx ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.spf = "pass";
    EXPECT_EQ(run_ok(*filter, Stage::kMailFrom).reason, "tx ok");
    EXPECT_EQ(tx_.id, "01HQUEUEID");

    tx_.spf.reset();
    tx_.dkim = "pass";
    EXPECT_CONTAINS(run_failure(*filter, Stage::kMailFrom), "spf");
}

TEST_F(LuaFilterTest, NullSenderAndMissingConn) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx.mail_from.address == "" and tx.mail_from.domain == "", "null sender")
  assert(#tx.rcpts == 0, "no rcpts yet")
  assert(tx.conn == nil, "no conn")
  return postern.accept()
end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.mail_from = Address::from_mailbox("");
    tx_.rcpts.clear();
    tx_.conn = nullptr;
    EXPECT_EQ(run_ok(*filter, Stage::kMailFrom).action, Action::kAccept);
}

TEST_F(LuaFilterTest, RcptArgument) {
    auto filter = load(R"lua(
postern.on("rcpt_to", function(tx, rcpt)
  assert(rcpt.address == "dave@rcpt.example", "address")
  assert(rcpt["local"] == "dave" and rcpt.domain == "rcpt.example", "parts")
  assert(rcpt.params.NOTIFY == "NEVER", "params")
  assert(#tx.rcpts == 2, "the earlier recipients only")
  return postern.accept("rcpt ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kRcptTo).reason, "rcpt ok");
}

// ---- tags and notes -----------------------------------------------------------------------------

TEST_F(LuaFilterTest, TagsReadWriteAndPairs) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx.tags.preset == "from the server", "preset")
  assert(tx.tags.missing == nil, "missing")
  tx.tags.b = "two"
  tx.tags.a = 1
  tx.tags.c = true
  tx.tags.preset = nil
  tx.tags.never_set = nil
  local seen = {}
  for k, v in pairs(tx.tags) do seen[#seen + 1] = k .. "=" .. v end
  assert(table.concat(seen, ",") == "a=1,b=two,c=true", table.concat(seen, ","))
  local function fails(fn, text)
    local ok, err = pcall(fn)
    assert(not ok and err:find(text, 1, true), tostring(err))
  end
  fails(function() tx.tags.t = {} end, "tx.tags values are strings (got table)")
  fails(function() tx.tags[""] = "x" end, "tx.tags keys are 1 to 64 characters")
  fails(function() tx.tags[string.rep("k", 65)] = "x" end, "keys are 1 to 64")
  fails(function() tx.tags.x = "a\nb" end, "control characters")
  fails(function() tx.tags.x = string.rep("v", 1025) end, "at most 1024 octets")
  tx.tags.long = string.rep("v", 1024)
  return postern.accept()
end)
postern.on("rcpt_to", function(tx)
  for i = 1, 300 do tx.tags["k" .. i] = "v" end
end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.tags["preset"] = "from the server";
    EXPECT_EQ(run_ok(*filter, Stage::kMailFrom).action, Action::kAccept);
    std::map<std::string, std::string> expected{
        {"a", "1"}, {"b", "two"}, {"c", "true"}, {"long", std::string(1024, 'v')}};
    EXPECT_EQ(tx_.tags, expected);
    EXPECT_TRUE(traced("change: tag b = two"));
    EXPECT_TRUE(traced("change: tag preset removed"));

    tx_.tags.clear();
    EXPECT_CONTAINS(run_failure(*filter, Stage::kRcptTo), "tx.tags holds at most 256 entries");
    EXPECT_EQ(tx_.tags.size(), 256u);
}

TEST_F(LuaFilterTest, NotesKeepTheirTypes) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx.notes.from_server == 7 and math.type(tx.notes.from_server) == "integer", "preset")
  tx.notes.s = "text"
  tx.notes.i = 42
  tx.notes.f = 1.5
  tx.notes.b = false
  tx.notes.from_server = nil
  assert(math.type(tx.notes.i) == "integer" and math.type(tx.notes.f) == "float", "numbers")
  assert(tx.notes.b == false and tx.notes.s == "text", "read back")
  local n = 0
  for k, v in pairs(tx.notes) do n = n + 1 end
  assert(n == 4, "pairs: " .. n)
  local ok, err = pcall(function() tx.notes.t = {} end)
  assert(not ok and err:find("strings, numbers or booleans (got table)", 1, true), err)
  ok, err = pcall(function() tx.notes.big = string.rep("x", 8 * 1024 + 1) end)
  assert(not ok and err:find("8 KiB", 1, true), err)
end)
postern.on("rcpt_to", function(tx, rcpt)
  tx.notes.count = (tx.notes.count or 0) + 1
end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.notes["from_server"] = int64_t{7};
    run_ok(*filter, Stage::kMailFrom);
    ASSERT_EQ(tx_.notes.size(), 4u);
    EXPECT_EQ(std::get<std::string>(tx_.notes["s"]), "text");
    EXPECT_EQ(std::get<int64_t>(tx_.notes["i"]), 42);
    EXPECT_EQ(std::get<double>(tx_.notes["f"]), 1.5);
    EXPECT_EQ(std::get<bool>(tx_.notes["b"]), false);
    // Notes last from one hook call to the next.
    run_ok(*filter, Stage::kRcptTo);
    run_ok(*filter, Stage::kRcptTo);
    EXPECT_EQ(std::get<int64_t>(tx_.notes["count"]), 2);
}

// ---- route and recipients -----------------------------------------------------------------------

TEST_F(LuaFilterTest, RouteKnownAndUnknown) {
    LuaFilterOptions o = options();
    o.routes = {"default", "smarthost"};
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx:route() == nil, "no route yet")
  tx:route("smarthost")
  assert(tx:route() == "smarthost", "route set")
  local ok, err = pcall(tx.route, tx, "nowhere")
  assert(not ok, "unknown route refused")
  assert(err:find('unknown route "nowhere" (routes: default, smarthost)', 1, true), err)
  assert(tx:route() == "smarthost", "unchanged by the refusal")
end)
postern.on("rcpt_to", function(tx) tx:route("default") end)
postern.on("data", function(tx) tx:route("nowhere") end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kMailFrom);
    EXPECT_EQ(tx_.route, "smarthost");
    EXPECT_TRUE(traced("change: route smarthost"));
    EXPECT_CONTAINS(run_failure(*filter, Stage::kData), "unknown route \"nowhere\"");
    EXPECT_EQ(tx_.route, "smarthost");

    // Once a recipient went upstream (passthrough), the route is fixed.
    tx_.route_locked = true;
    EXPECT_CONTAINS(run_failure(*filter, Stage::kRcptTo), "the route cannot change");
    EXPECT_EQ(tx_.route, "smarthost");
    tx_.route = "default";
    run_ok(*filter, Stage::kRcptTo);  // the same route again is fine
}

TEST_F(LuaFilterTest, AnyRouteWhenNoneAreKnown) {
    auto filter = load("postern.on('mail_from', function(tx) tx:route('anything') end)\n");
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kMailFrom);
    EXPECT_EQ(tx_.route, "anything");
}

TEST_F(LuaFilterTest, AddAndRemoveRecipients) {
    auto filter = load(R"lua(
postern.on("data", function(tx, msg)
  tx:add_rcpt("archive@archive.example")
  tx:add_rcpt("carol@other.example")      -- already a recipient: listed once
  tx:remove_rcpt("BOB@rcpt.example")      -- the address compares without case
  for _, bad in ipairs({"not an address", "<x@example.com>", "@example.com", "user@",
                        "nodomain", "a,b@example.com", "tab\t@example.com", 'q"@example.com',
                        string.rep("a", 250) .. "@x.com"}) do
    local ok, err = pcall(tx.add_rcpt, tx, bad)
    assert(not ok and err:find("is not an address like user@example.com", 1, true), bad)
    ok = pcall(tx.remove_rcpt, tx, bad)
    assert(not ok, bad)
  end
  local now = {}
  for _, r in ipairs(tx.rcpts) do now[#now + 1] = r.address end
  assert(table.concat(now, " ") == "carol@other.example archive@archive.example",
         table.concat(now, " "))
end)
)lua");
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kData);
    ASSERT_EQ(tx_.rcpt_changes.size(), 3u);
    EXPECT_TRUE(tx_.rcpt_changes[0].add);
    EXPECT_EQ(tx_.rcpt_changes[0].address, "archive@archive.example");
    EXPECT_TRUE(tx_.rcpt_changes[1].add);
    EXPECT_FALSE(tx_.rcpt_changes[2].add);
    EXPECT_EQ(tx_.rcpt_changes[2].address, "BOB@rcpt.example");
    ASSERT_EQ(tx_.rcpts.size(), 2u);
    EXPECT_EQ(tx_.rcpts[0].address, "carol@other.example");
    EXPECT_EQ(tx_.rcpts[1].address, "archive@archive.example");
    EXPECT_EQ(tx_.rcpts[1].domain, "archive.example");
    EXPECT_TRUE(traced("change: recipient added archive@archive.example"));
    EXPECT_TRUE(traced("change: recipient removed BOB@rcpt.example"));
}

TEST_F(LuaFilterTest, SetMailFrom) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx)
  assert(tx.passthrough == false, "queue delivery")
  tx:set_mail_from("bounces@sender.example")
  assert(tx.mail_from.address == "bounces@sender.example", "seen at once")
  assert(tx.mail_from.domain == "sender.example", "split")
  local ok, err = pcall(tx.set_mail_from, tx, "<bad@example.com>")
  assert(not ok and err:find("is not an address like", 1, true), err)
  assert(tx.mail_from.address == "bounces@sender.example", "unchanged by the refusal")
end)
postern.on("rcpt_to", function(tx) tx:set_mail_from("<>") end)
postern.on("data", function(tx) tx:set_mail_from("late@sender.example") end)
)lua");
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kMailFrom);
    EXPECT_EQ(tx_.mail_from.address, "bounces@sender.example");
    EXPECT_EQ(tx_.new_mail_from.value_or("?"), "bounces@sender.example");
    EXPECT_TRUE(traced("change: sender bounces@sender.example"));

    run_ok(*filter, Stage::kRcptTo);
    EXPECT_EQ(tx_.mail_from.address, "");
    EXPECT_EQ(tx_.new_mail_from.value_or("?"), "") << "<> is the null sender";
    EXPECT_TRUE(traced("change: sender <>"));

    // In passthrough, MAIL FROM went upstream before the data.
    tx_.live = true;
    EXPECT_CONTAINS(run_failure(*filter, Stage::kData), "MAIL FROM went upstream already");
    EXPECT_EQ(tx_.mail_from.address, "");
    tx_.live = false;
    tx_.route_locked = true;  // the route alone being fixed does not stop a sender change
    run_ok(*filter, Stage::kRcptTo);
    tx_.sender_locked = true;
    EXPECT_CONTAINS(run_failure(*filter, Stage::kRcptTo), "MAIL FROM went upstream already");
}

TEST_F(LuaFilterTest, PassthroughFlag) {
    auto filter = load(R"lua(
postern.on("mail_from", function(tx) return postern.reject(550, tostring(tx.passthrough)) end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kMailFrom)), "false");
    tx_.live = true;
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kMailFrom)), "true");
}

// ---- msg ----------------------------------------------------------------------------------------

TEST_F(LuaFilterTest, MessageMethods) {
    auto filter = load(R"lua(
postern.on("data", function(tx, msg)
  assert(msg:header("subject") == "Hello world", "unfolded, case-insensitive")
  assert(msg:header("X-None") == nil, "missing header")
  local received = msg:headers("RECEIVED")
  assert(#received == 2 and received[1] == "one" and received[2] == "two", "headers")
  assert(#msg:headers("X-None") == 0, "no headers")
  assert(msg:body_size() == 20, "body_size")
  assert(msg:body() == "Line one\r\nLine two\r\n", "body")
  assert(msg:body(4) == "Line", "body prefix")
  assert(msg:body(0) == "", "empty prefix")
  assert(msg:body(1000) == msg:body(), "max beyond the body")
  local ok, err = pcall(msg.body, msg, -1)
  assert(not ok and err:find("must not be negative", 1, true), err)
  msg:add_header("X-Policy", "checked")
  msg:set_header("Subject", "[ext] Hello")
  assert(msg:remove_header("x-remove") == 2, "two removed")
  assert(msg:remove_header("x-remove") == 0, "none left")
  ok, err = pcall(msg.add_header, msg, "X-Bad", "a\r\nBcc: victim@example.com")
  assert(not ok, "CRLF in a value")
  assert(err:find("msg:add_header: a header value cannot hold CR, LF or NUL", 1, true), err)
  ok, err = pcall(msg.set_header, msg, "Bad:Name", "v")
  assert(not ok and err:find("msg:set_header:", 1, true), err)
  ok, err = pcall(function() return msg.no_such_method end)
  assert(not ok and err:find("msg has no method 'no_such_method'", 1, true), err)
  ok, err = pcall(function() msg.body = nil end)
  assert(not ok, "msg is read-only")
  return postern.accept("msg ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kData).reason, "msg ok");
    EXPECT_TRUE(message_.headers.changed());
    EXPECT_EQ(message_.headers.text(),
              "From: Alice <alice@sender.example>\r\n"
              "Subject: [ext] Hello\r\n"
              "Received: one\r\n"
              "Received: two\r\n"
              "X-Policy: checked\r\n");
    EXPECT_TRUE(traced("change: header added X-Policy: checked"));
    EXPECT_TRUE(traced("change: header set Subject: [ext] Hello"));
    EXPECT_TRUE(traced("change: header removed x-remove (2)"));
}

TEST_F(LuaFilterTest, PassthroughForbidsEdits) {
    auto filter = load(R"lua(
postern.on("data", function(tx, msg)
  local function refused(fn, text)
    local ok, err = pcall(fn)
    assert(not ok and err:find(text, 1, true), tostring(err))
  end
  refused(function() msg:add_header("X-A", "1") end, 'msg:add_header needs delivery = "queue"')
  refused(function() msg:set_header("Subject", "x") end, "msg:set_header needs")
  refused(function() msg:remove_header("Received") end, "msg:remove_header needs")
  refused(function() tx:add_rcpt("x@example.com") end, 'tx:add_rcpt needs delivery = "queue"')
  refused(function() tx:remove_rcpt("bob@rcpt.example") end, "tx:remove_rcpt needs")
  -- Reading still works, and so do tags.
  assert(msg:header("Subject") == "Hello world", "read")
  tx.tags.live = "yes"
  msg:add_header("X-Unchecked", "1")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.live = true;
    EXPECT_CONTAINS(run_failure(*filter, Stage::kData), "msg:add_header needs delivery");
    EXPECT_FALSE(message_.headers.changed());
    EXPECT_EQ(message_.headers.text(), headers_);
    EXPECT_TRUE(tx_.rcpt_changes.empty());
    EXPECT_EQ(tx_.tags["live"], "yes");
}

// ---- postern.match, postern.hash, postern.config ------------------------------------------------

TEST_F(LuaFilterTest, MatchDomain) {
    auto filter = load(R"lua(
local d = postern.match.domain
postern.on("connect", function()
  assert(d("user@mail.example.com", {"*.example.com"}), "wildcard subdomain")
  assert(d("user@a.b.example.com", {"*.example.com"}), "deeper subdomain")
  assert(not d("user@example.com", {"*.example.com"}), "wildcard is not the domain")
  assert(not d("user@badexample.com", "*.example.com"), "label boundary")
  assert(d("user@example.com", {"other.test", "example.com"}), "second entry")
  assert(d("User@EXAMPLE.Com.", "example.com"), "case and trailing dot")
  assert(d("example.com", "example.com"), "a bare domain")
  assert(not d("user@example.org", "example.com"), "other domain")
  assert(not d("user@example.com", {}), "empty list")
  assert(not d("user@", "example.com"), "no domain")
  local ok, err = pcall(d, "x@example.com", {"example.org", 1})
  assert(not ok and err:find("list entry 2 is not a string", 1, true), err)
  return postern.accept("domain ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "domain ok");
}

TEST_F(LuaFilterTest, MatchCidr) {
    auto filter = load(R"lua(
local c = postern.match.cidr
postern.on("connect", function(conn)
  assert(c(conn.ip, {"192.0.2.0/24"}), "conn.ip v4")
  assert(not c("192.0.3.7", {"192.0.2.0/24"}), "outside")
  assert(c("10.1.2.3", {"192.0.2.0/24", "10.0.0.0/8"}), "second entry")
  assert(c("192.0.2.7", "192.0.2.7"), "a bare address")
  assert(c("2001:db8::1", "2001:db8::/32"), "v6")
  assert(not c("2001:db9::1", "2001:db8::/32"), "v6 outside")
  assert(c("::ffff:192.0.2.7", "192.0.2.0/24"), "v4-mapped client")
  assert(not c("192.0.2.7", "2001:db8::/32"), "v4 client, v6 network")
  assert(c("::1", {"::1/128"}), "loopback")
  local ok, err = pcall(c, "not-an-ip", "10.0.0.0/8")
  assert(not ok and err:find('"not-an-ip" is not an IP address', 1, true), err)
  ok, err = pcall(c, "10.0.0.1", {"10.0.0.1/8"})
  assert(not ok and err:find("is not a network", 1, true), err)
  ok = pcall(c, "10.0.0.1", "bogus")
  assert(not ok, "bogus network")
  return postern.accept("cidr ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "cidr ok");
}

TEST_F(LuaFilterTest, HashSha256) {
    auto filter = load(R"lua(
local h = postern.hash.sha256
postern.on("connect", function()
  assert(h("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc")
  assert(h("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty")
  assert(h("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "two blocks")
  assert(h("a\0b") == "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138", "NUL")
  return postern.accept("hash ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "hash ok");
}

TEST_F(LuaFilterTest, ConfigFromToml) {
    LuaFilterOptions o = options();
    o.config_toml = R"toml(
threshold = 5
ratio = 0.25
label = "corp"
enabled = true
domains = ["a.example", "b.example"]
[limits]
per_hour = 100
)toml";
    auto filter = load(R"lua(
local cfg = postern.config
postern.on("connect", function()
  assert(cfg.threshold == 5 and math.type(cfg.threshold) == "integer", "integer")
  assert(cfg.ratio == 0.25, "float")
  assert(cfg.label == "corp", "string")
  assert(cfg.enabled == true, "boolean")
  assert(#cfg.domains == 2 and cfg.domains[2] == "b.example", "array")
  local n = 0
  for i, d in ipairs(cfg.domains) do n = n + 1 end
  assert(n == 2, "ipairs")
  local keys = {}
  for k in pairs(cfg) do keys[#keys + 1] = k end
  table.sort(keys)
  assert(table.concat(keys, ",") == "domains,enabled,label,limits,ratio,threshold",
         table.concat(keys, ","))
  assert(cfg.limits.per_hour == 100, "nested table")
  assert(cfg.missing == nil, "missing")
  assert(postern.match.domain("x@b.example", cfg.domains), "usable as a list")
  assert(postern.filter_name == "policy", "filter_name")
  local ok, err = pcall(function() cfg.threshold = 6 end)
  assert(not ok and err:find("threshold is read-only", 1, true), err)
  ok = pcall(function() cfg.limits.per_hour = 1 end)
  assert(not ok, "nested tables are read-only")
  ok = pcall(table.insert, cfg.domains, "c.example")
  assert(not ok, "arrays are read-only")
  assert(cfg.threshold == 5 and #cfg.domains == 2, "unchanged")
  return postern.accept("config ok")
end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "config ok");
}

TEST_F(LuaFilterTest, HostnameAndRoutes) {
    LuaFilterOptions o = options();
    o.hostname = "relay.example.com";
    o.routes = {"smarthost", "default", "bulk"};
    auto filter = load(R"lua(
postern.on("connect", function()
  assert(postern.hostname == "relay.example.com", "hostname")
  assert(#postern.routes == 3, "three routes")
  assert(table.concat({postern.routes[1], postern.routes[2], postern.routes[3]}, ",") ==
         "bulk,default,smarthost", "sorted")
  local ok = pcall(function() postern.routes[1] = "x" end)
  assert(not ok, "routes are read-only")
  ok = pcall(function() postern.hostname = "x" end)
  assert(not ok, "hostname is read-only")
  return postern.accept("names ok")
end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "names ok");
}

TEST_F(LuaFilterTest, EmptyConfig) {
    auto filter = load(R"lua(
postern.on("connect", function()
  assert(type(postern.config) == "table" and next(postern.config) == nil, "empty")
  for k in pairs(postern.config) do error("unexpected key " .. k) end
  assert(postern.config.anything == nil, "nothing")
  return postern.accept("empty ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "empty ok");
}

// ---- log and print ------------------------------------------------------------------------------

TEST_F(LuaFilterTest, LogFunctionsReachTheTrace) {
    auto filter = load(R"lua(postern.on("connect", function(conn)
  postern.log.info("hello", 42, true, nil)
  postern.log.warn("careful")
  postern.log.error("bad client", conn.ip)
  print("printed", 1.5)
end)
)lua");
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kConnect);
    EXPECT_EQ(trace_, (Strings{"log info: hello 42 true nil", "log warn: careful",
                               "log error: bad client 192.0.2.10", "log info: printed\t1.5",
                               "handler at " + path_ + ":1: continue"}));

    // Without a trace the lines go to the log; nothing breaks.
    HookContext ctx = context(Stage::kConnect);
    ctx.trace = nullptr;
    EXPECT_FALSE(filter->run(ctx).failure.has_value());
}

// ---- verdicts -----------------------------------------------------------------------------------

class LuaVerdictTest : public LuaFilterTest {
  protected:
    void SetUp() override {
        LuaFilterTest::SetUp();
        filter_ = load(R"lua(
local cases = {
  reject_default = function() return postern.reject() end,
  reject_text = function() return postern.reject("No thanks") end,
  reject_code = function() return postern.reject(554, "Go away") end,
  reject_code_only = function() return postern.reject(553) end,
  reject_full = function() return postern.reject(553, "5.1.8", "Bad sender") end,
  tempfail_default = function() return postern.tempfail() end,
  tempfail_full = function() return postern.tempfail(450, "4.2.0", "Busy") end,
  disconnect_default = function() return postern.disconnect() end,
  disconnect_full = function() return postern.disconnect(554, "5.7.1", "Bye") end,
  disconnect_5xx = function() return postern.disconnect(554) end,
  accept = function() return postern.accept("allow-listed") end,
  accept_plain = function() return postern.accept() end,
  discard = function() return postern.discard("spam trap") end,
  nothing = function() end,
  explicit_nil = function() return nil end,
  reject_4xx = function() return postern.reject(451, "4.7.1", "later") end,
  tempfail_5xx = function() return postern.tempfail(550) end,
  disconnect_450 = function() return postern.disconnect(450) end,
  class_mismatch = function() return postern.reject(550, "4.7.1", "x") end,
  newline = function() return postern.reject("a\r\n250 ok") end,
  float_code = function() return postern.reject(550.5) end,
  bad_argument = function() return postern.reject({}) end,
  a_string = function() return "reject" end,
  a_table = function() return {action = "reject", code = 550} end,
  a_number = function() return 550 end,
  a_boolean = function() return false end,
  forged_code = function() local v = postern.reject() v.code = 451 return v end,
}
postern.on("mail_from", function(tx) return cases[tx.notes.case]() end)
)lua");
        ASSERT_NE(filter_, nullptr);
    }

    Verdict verdict(const std::string& name) {
        tx_.notes["case"] = name;
        return run(*filter_, Stage::kMailFrom);
    }

    void expect_reply(const std::string& name, Action action, int code, const std::string& enhanced,
                      const std::string& text) {
        Verdict v = verdict(name);
        EXPECT_FALSE(v.failure.has_value()) << name << ": " << v.failure.value_or("");
        EXPECT_EQ(v.action, action) << name;
        ASSERT_TRUE(v.reply.has_value()) << name;
        EXPECT_EQ(v.reply->code, code) << name;
        EXPECT_EQ(v.reply->enhanced, enhanced) << name;
        EXPECT_EQ(v.reply->text, text) << name;
    }

    std::string failure(const std::string& name) {
        Verdict v = verdict(name);
        EXPECT_TRUE(v.failure.has_value()) << name;
        return v.failure.value_or("");
    }

    std::unique_ptr<LuaFilter> filter_;
};

TEST_F(LuaVerdictTest, RejectDefaultsAndExplicitCodes) {
    expect_reply("reject_default", Action::kReject, 550, "5.7.1", "Rejected by policy");
    expect_reply("reject_text", Action::kReject, 550, "5.7.1", "No thanks");
    expect_reply("reject_code", Action::kReject, 554, "5.7.1", "Go away");
    expect_reply("reject_code_only", Action::kReject, 553, "5.7.1", "Rejected by policy");
    expect_reply("reject_full", Action::kReject, 553, "5.1.8", "Bad sender");
}

TEST_F(LuaVerdictTest, TempfailAndDisconnect) {
    expect_reply("tempfail_default", Action::kTempfail, 451, "4.7.1", "Try again later");
    expect_reply("tempfail_full", Action::kTempfail, 450, "4.2.0", "Busy");
    expect_reply("disconnect_default", Action::kDisconnect, 421, "4.7.0", "Closing connection");
    expect_reply("disconnect_full", Action::kDisconnect, 554, "5.7.1", "Bye");
    // The default enhanced code is 4.x.x: a 5xx disconnect goes without one.
    expect_reply("disconnect_5xx", Action::kDisconnect, 554, "", "Closing connection");
}

TEST_F(LuaVerdictTest, AcceptDiscardAndContinue) {
    Verdict accept = verdict("accept");
    EXPECT_EQ(accept.action, Action::kAccept);
    EXPECT_EQ(accept.reason, "allow-listed");
    EXPECT_FALSE(accept.reply.has_value());
    EXPECT_FALSE(accept.failure.has_value());
    EXPECT_EQ(verdict("accept_plain").action, Action::kAccept);
    EXPECT_EQ(verdict("accept_plain").reason, "");
    Verdict discard = verdict("discard");
    EXPECT_EQ(discard.action, Action::kDiscard);
    EXPECT_EQ(discard.reason, "spam trap");
    for (const char* name : {"nothing", "explicit_nil"}) {
        Verdict v = verdict(name);
        EXPECT_EQ(v.action, Action::kContinue) << name;
        EXPECT_FALSE(v.failure.has_value()) << name;
        EXPECT_FALSE(v.reply.has_value()) << name;
    }
}

TEST_F(LuaVerdictTest, ReplyThatDoesNotSuitTheActionIsAFailure) {
    std::string reject_4xx = failure("reject_4xx");
    EXPECT_CONTAINS(reject_4xx, "postern.reject: a reject needs a 5xx code, not 451");
    EXPECT_CONTAINS(reject_4xx, path_ + ":");
    EXPECT_CONTAINS(failure("tempfail_5xx"), "postern.tempfail: a tempfail needs a 4xx code");
    EXPECT_CONTAINS(failure("disconnect_450"), "a disconnect needs 421 or a 5xx code");
    EXPECT_CONTAINS(failure("class_mismatch"), "enhanced code 4.7.1 does not match");
    EXPECT_CONTAINS(failure("newline"), "reply text holds a control character");
    EXPECT_CONTAINS(failure("float_code"), "the code is a whole number");
    EXPECT_CONTAINS(failure("bad_argument"), "expected (code, enhanced, text), got a table");
}

TEST_F(LuaVerdictTest, ReturningANonVerdictIsAFailure) {
    EXPECT_CONTAINS(failure("a_string"), "the handler returned a string; return a postern verdict");
    EXPECT_CONTAINS(failure("a_table"), "the handler returned a table");
    EXPECT_CONTAINS(failure("a_number"), "the handler returned a number");
    EXPECT_CONTAINS(failure("a_boolean"), "the handler returned a boolean");
    // A failure leaves the state usable.
    expect_reply("reject_default", Action::kReject, 550, "5.7.1", "Rejected by policy");
}

TEST_F(LuaVerdictTest, ForgedReplyIsCaughtByTheChain) {
    // A script may edit a verdict table; the chain still checks the reply it ends with.
    Verdict forged = verdict("forged_code");
    EXPECT_EQ(forged.action, Action::kReject);
    ASSERT_TRUE(forged.reply.has_value());
    EXPECT_EQ(forged.reply->code, 451);

    Chain chain;
    chain.add(Chain::Entry{"policy", std::move(filter_), false});
    tx_.notes["case"] = std::string("forged_code");
    HookContext ctx = context(Stage::kMailFrom);
    boost::asio::io_context io;
    auto future = boost::asio::co_spawn(io, chain.run(ctx), boost::asio::use_future);
    io.run();
    Verdict v = future.get();
    EXPECT_EQ(v.action, Action::kTempfail);
    ASSERT_TRUE(v.reply.has_value());
    EXPECT_EQ(v.reply->code, 451);
    EXPECT_EQ(v.reply->enhanced, "4.3.0");
    EXPECT_TRUE(traced("bad verdict: a reject needs a 5xx code, not 451"));
}

// ---- handlers: order, trace, notifications ------------------------------------------------------

TEST_F(LuaFilterTest, SeveralHandlersRunInFileOrder) {
    auto filter = load(R"lua(postern.on("rcpt_to", function(tx, rcpt) tx.tags.order = "1" end)
postern.on("rcpt_to", function(tx, rcpt) tx.tags.order = tx.tags.order .. "2" end)
postern.on("rcpt_to", function(tx, rcpt)
  if rcpt.domain == "blocked.example" then return postern.reject(550, "5.1.1", "Blocked") end
  tx.tags.order = tx.tags.order .. "3"
end)
postern.on("rcpt_to", function(tx, rcpt) tx.tags.order = tx.tags.order .. "4" end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kRcptTo).action, Action::kContinue);
    EXPECT_EQ(tx_.tags["order"], "1234");

    rcpt_ = Address::from_mailbox("eve@blocked.example");
    trace_.clear();
    Verdict v = run_ok(*filter, Stage::kRcptTo);
    EXPECT_EQ(v.action, Action::kReject);
    EXPECT_EQ(tx_.tags["order"], "12") << "the first verdict ends the stage";
    EXPECT_EQ(trace_, (Strings{"change: tag order = 1", "handler at " + path_ + ":1: continue",
                               "change: tag order = 12", "handler at " + path_ + ":2: continue",
                               "handler at " + path_ + ":3: reject 550 5.1.1 Blocked"}));
    EXPECT_EQ(filter->calls(), 2u);
}

TEST_F(LuaFilterTest, Notifications) {
    auto filter = load(R"lua(
postern.on("queued", function(tx, result)
  postern.log.info(result.status, result.reply, result.route, tostring(result.rcpt), tx.id,
                   tx.tags.k, tx.notes.n, tx:route())
  for _, try in ipairs({
      function() tx.tags.k = "changed" end,
      function() tx.notes.n = 2 end,
      function() tx:route("other") end,
      function() tx:add_rcpt("x@example.com") end,
      function() tx:remove_rcpt("x@example.com") end,
      function() tx:set_mail_from("x@example.com") end}) do
    local ok, err = pcall(try)
    postern.log.info(tostring(ok), err)
  end
end)
postern.on("delivered", function(tx, result)
  postern.log.info(result.status, result.rcpt, result.reply)
end)
postern.on("failed", function(tx, result) error("notification boom") end)
postern.on("failed", function(tx, result) postern.log.info("second failed handler") end)
)lua");
    ASSERT_NE(filter, nullptr);
    tx_.tags["k"] = "v";
    tx_.notes["n"] = int64_t{1};
    tx_.route = "default";
    filter->notify_traced(Event::kQueued, &conn_, tx_,
                          DeliveryResult{"", "250 2.0.0 Ok", "default"}, &trace_);
    ASSERT_GE(trace_.size(), 7u);
    EXPECT_EQ(trace_[0], "log info: queued 250 2.0.0 Ok default nil 01HQUEUEID v 1 default");
    EXPECT_EQ(trace_[1],
              "log info: false " + path_ + ":6: tx.tags: a notification cannot change them");
    EXPECT_EQ(trace_[2],
              "log info: false " + path_ + ":7: tx.notes: a notification cannot change them");
    EXPECT_CONTAINS(trace_[3], "tx:route: a notification cannot change the transaction");
    EXPECT_CONTAINS(trace_[4], "tx:add_rcpt: a notification cannot change the transaction");
    EXPECT_CONTAINS(trace_[5], "tx:remove_rcpt: a notification cannot change the transaction");
    ASSERT_GE(trace_.size(), 7u);
    EXPECT_CONTAINS(trace_[6], "tx:set_mail_from: a notification cannot change the transaction");
    EXPECT_EQ(tx_.mail_from.address, "alice@sender.example");
    EXPECT_EQ(tx_.tags["k"], "v");
    EXPECT_EQ(std::get<int64_t>(tx_.notes["n"]), 1);
    EXPECT_EQ(tx_.route, "default");
    EXPECT_TRUE(tx_.rcpt_changes.empty());

    trace_.clear();
    filter->notify_traced(Event::kDelivered, &conn_, tx_,
                          DeliveryResult{"bob@rcpt.example", "250 ok", "default"}, &trace_);
    EXPECT_EQ(trace_, (Strings{"log info: delivered bob@rcpt.example 250 ok"}));

    // An error in a notification is logged; the next handler still runs, nothing throws.
    trace_.clear();
    filter->notify_traced(Event::kFailed, &conn_, tx_,
                          DeliveryResult{"bob@rcpt.example", "550 no", "default"}, &trace_);
    EXPECT_EQ(trace_,
              (Strings{"handler at " + path_ + ":19: error: " + path_ + ":19: notification boom",
                       "log info: second failed handler"}));
    filter->notify(Event::kFailed, &conn_, tx_, DeliveryResult{});
}

// ---- the sandbox: what is not there -------------------------------------------------------------

TEST_F(LuaFilterTest, DangerousGlobalsAreAbsent) {
    auto filter = load(R"lua(
postern.on("connect", function()
  local present = {}
  local function check(name, value) if value ~= nil then present[#present + 1] = name end end
  check("io", io) check("debug", debug) check("package", package)
  check("coroutine", coroutine) check("dofile", dofile) check("loadfile", loadfile)
  check("rawset", rawset) check("string.dump", string.dump) check("os.execute", os.execute)
  check("os.getenv", os.getenv) check("os.exit", os.exit) check("os.remove", os.remove)
  check("os.rename", os.rename) check("os.tmpname", os.tmpname)
  check("collectgarbage stop", select(2, pcall(collectgarbage, "stop")) == 0 or nil)
  assert(#present == 0, "present: " .. table.concat(present, ", "))
  -- What is there works.
  assert(type(os.time()) == "number" and type(os.clock()) == "number", "os.time/clock")
  assert(os.date("!%Y", 0) == "1970", "os.date")
  assert(("abc"):upper() == "ABC" and string.format("%03d", 7) == "007", "string")
  assert(math.max(1, 5) == 5 and utf8.char(233) == "\u{e9}", "math, utf8")
  local t = {3, 1, 2} table.sort(t) assert(table.concat(t) == "123", "table")
  assert(type(collectgarbage("count")) == "number", "collectgarbage count")
  return postern.accept("absent ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "absent ok");
}

TEST_F(LuaFilterTest, OsExecuteIsNil) {
    LuaFilterOptions o = options();
    o.config_toml = "marker = \"" + dir_ + "/pwned\"\n";
    auto filter = load(R"lua(
postern.on("connect", function()
  os.execute("touch " .. postern.config.marker)
end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect), "attempt to call a nil value");
    EXPECT_FALSE(fs::exists(dir_ + "/pwned"));
}

TEST_F(LuaFilterTest, IoOpenIsNotThere) {
    auto filter = load(R"lua(
postern.on("connect", function()
  local f = io.open("/etc/passwd")
  return postern.reject(550, f:read("l"))
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect), "attempt to index a nil value");
}

TEST_F(LuaFilterTest, RequireFindsNoNativeModules) {
    auto filter = load(R"lua(
postern.on("connect", function() local ffi = require "ffi" end)
postern.on("helo", function()
  for _, name in ipairs({"io", "os", "debug", "socket.core"}) do
    local ok, err = pcall(require, name)
    assert(not ok and err:find("not found", 1, true), name)
  end
  for _, name in ipairs({"../../etc/passwd", "/etc/passwd", "a..b", ".hidden", "x/y", ""}) do
    local ok, err = pcall(require, name)
    assert(not ok and err:find("is not a module name", 1, true), name .. ": " .. tostring(err))
  end
  return postern.accept("require ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    std::string error = run_failure(*filter, Stage::kConnect);
    EXPECT_CONTAINS(error, "module 'ffi' not found");
    EXPECT_CONTAINS(error, "only Lua modules from the script directories");
    EXPECT_EQ(run_ok(*filter, Stage::kHelo).reason, "require ok");
}

TEST_F(LuaFilterTest, LoadRefusesBinaryChunks) {
    auto filter = load(R"lua(
postern.on("connect", function()
  assert(string.dump == nil, "no string.dump")
  local f, err = load("\27Lua\84\0\25\147\13\10\26\10\4\8\8\120\86\0\0\0\0\0\0\0\0\0\0\0\40\119\64")
  assert(f == nil and err:find("binary", 1, true), tostring(err))
  local ok, e = pcall(load, "\27Lua", "x", "b")
  assert(not ok and e:find("only text chunks", 1, true), tostring(e))
  ok = pcall(load, "\27Lua", "x", "bt")
  assert(not ok, "mode bt")
  ok = pcall(load, function() return nil end)
  assert(not ok, "reader functions")
  -- Text chunks load, in the sandbox.
  local g = load("return 1 + 1")
  assert(g() == 2, "text chunk")
  local h = load("return io")
  assert(h() == nil, "same sandbox")
  local w = load("x_from_load = 1")
  ok = pcall(w)
  assert(not ok, "cannot write globals either")
  local env = {}
  load("y = 5", "chunk", "t", env)()
  assert(env.y == 5, "own environment")
  return postern.accept("load ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "load ok");
}

// ---- the sandbox: limits ------------------------------------------------------------------------

// A script that counts its calls in an upvalue, so a test sees whether the state was kept
// (the count goes on) or thrown away (it starts again at 1), and misbehaves on request.
const char* const kCountingScript = R"lua(
local calls = 0
postern.on("mail_from", function(tx)
  calls = calls + 1
  local case = tx.notes.case
  if case == "memory" then local s = string.rep("x", 1024 * 1024 * 1024) end
  if case == "table_memory" then local t = {} for i = 1, 1e9 do t[i] = i end end
  if case == "pcall_memory" then pcall(string.rep, "x", 1024 * 1024 * 1024) end
  if case == "loop" then while true do end end
  if case == "pcall_loop" then
    local ok = pcall(function() while true do end end)
    return postern.reject(550, "swallowed: " .. tostring(ok))
  end
  if case == "xpcall_loop" then
    xpcall(function() while true do end end, function(e) return e end)
    return postern.reject(550, "swallowed")
  end
  if case == "pcall_load_loop" then pcall(load("while true do end")) end
  if case == "recursion" then
    local function f(n) return f(n + 1) + 1 end
    f(1)
  end
  if case == "c_recursion" then
    local function g() return string.gsub("a", "a", g) end
    g()
  end
  if case == "error" then error("boom") end
  return postern.reject(550, "calls=" .. calls)
end)
)lua";

class LuaLimitTest : public LuaFilterTest {
  protected:
    std::unique_ptr<LuaFilter> counting(LuaLimits limits = {}) {
        LuaFilterOptions o = options();
        o.limits = limits;
        return load(kCountingScript, o);
    }

    Verdict call(LuaFilter& filter, const std::string& c) {
        tx_.notes["case"] = c;
        return run(filter, Stage::kMailFrom);
    }

    std::string calls(LuaFilter& filter) {
        Verdict v = call(filter, "");
        EXPECT_FALSE(v.failure.has_value()) << v.failure.value_or("");
        return text_of(v);
    }

    // The misbehaving call fails with `expected` in its text, and the next call runs on a
    // fresh state when `damaged` (the count starts again) or on the same one otherwise.
    void expect_contained(const std::string& c, const std::string& expected, bool damaged,
                          LuaLimits limits = {}) {
        SCOPED_TRACE(c);
        auto filter = counting(limits);
        ASSERT_NE(filter, nullptr);
        EXPECT_EQ(calls(*filter), "calls=1");
        Verdict v = call(*filter, c);
        ASSERT_TRUE(v.failure.has_value()) << text_of(v);
        EXPECT_CONTAINS(*v.failure, expected);
        EXPECT_EQ(calls(*filter), damaged ? "calls=1" : "calls=3");
    }
};

TEST_F(LuaLimitTest, StateIsKeptBetweenCalls) {
    auto filter = counting();
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(calls(*filter), "calls=1");
    EXPECT_EQ(calls(*filter), "calls=2");
}

TEST_F(LuaLimitTest, ErrorInAHandlerNamesScriptAndLine) {
    auto filter = counting();
    ASSERT_NE(filter, nullptr);
    Verdict v = call(*filter, "error");
    ASSERT_TRUE(v.failure.has_value());
    EXPECT_EQ(*v.failure, path_ + ":27: boom");
    EXPECT_TRUE(traced("handler at " + path_ + ":3: error: " + path_ + ":27: boom"));
    EXPECT_EQ(calls(*filter), "calls=2") << "a plain error leaves the state usable";
}

TEST_F(LuaLimitTest, ErrorObjectsThatAreNoStrings) {
    auto filter = load("postern.on('connect', function() error({code = 1}) end)\n");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_failure(*filter, Stage::kConnect), "(error object is a table value)");
}

TEST_F(LuaLimitTest, MemoryBomb) {
    LuaLimits limits;
    limits.memory = 16 * 1024 * 1024;
    expect_contained("memory", "memory limit exceeded (16 MiB) in the function at " + path_ + ":3",
                     true, limits);
    expect_contained("table_memory", "memory limit exceeded", true, limits);
}

TEST_F(LuaLimitTest, PcallCannotSwallowTheMemoryLimit) {
    LuaLimits limits;
    limits.memory = 16 * 1024 * 1024;
    expect_contained("pcall_memory", "memory limit exceeded", true, limits);
}

TEST_F(LuaLimitTest, InfiniteLoopEndsWithTheBudget) {
    LuaLimits limits;
    limits.instructions = 100000;
    expect_contained("loop", "instruction budget exceeded (100000 instructions)", true, limits);
    // The default budget ends it as well.
    expect_contained("loop", "instruction budget exceeded", true);
}

TEST_F(LuaLimitTest, BudgetErrorNamesTheLineOfTheLoop) {
    LuaFilterOptions o = options();
    o.limits.instructions = 100000;
    auto filter = load(R"lua(
local function spin()
  while true do end
end
postern.on("connect", function()
  spin()
end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_failure(*filter, Stage::kConnect),
              path_ + ":3: instruction budget exceeded (100000 instructions)");
}

TEST_F(LuaLimitTest, PcallCannotSwallowTheBudget) {
    LuaLimits limits;
    limits.instructions = 100000;
    expect_contained("pcall_loop", "instruction budget exceeded", true, limits);
    expect_contained("xpcall_loop", "instruction budget exceeded", true, limits);
    expect_contained("pcall_load_loop", "instruction budget exceeded", true, limits);
}

TEST_F(LuaLimitTest, Timeout) {
    LuaLimits limits;
    limits.instructions = 1'000'000'000'000'000ull;
    limits.timeout = std::chrono::milliseconds(50);
    const auto start = std::chrono::steady_clock::now();
    expect_contained("loop", "timeout exceeded (50 ms)", true, limits);
    expect_contained("pcall_loop", "timeout exceeded (50 ms)", true, limits);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(LuaLimitTest, DeepRecursion) {
    SCOPED_TRACE("Lua recursion");
    auto filter = counting();
    ASSERT_NE(filter, nullptr);
    Verdict v = call(*filter, "recursion");
    ASSERT_TRUE(v.failure.has_value());
    EXPECT_TRUE(v.failure->find("stack overflow") != std::string::npos ||
                v.failure->find("memory limit") != std::string::npos)
        << *v.failure;
    EXPECT_EQ(text_of(call(*filter, "")).rfind("calls=", 0), 0u) << "the filter still works";

    Verdict c = call(*filter, "c_recursion");
    ASSERT_TRUE(c.failure.has_value());
    EXPECT_CONTAINS(*c.failure, "stack overflow");
    EXPECT_EQ(text_of(call(*filter, "")).rfind("calls=", 0), 0u);
}

// ---- the sandbox: frozen globals, locked metatables, stale handles ------------------------------

TEST_F(LuaFilterTest, GlobalsAreFrozenAfterLoad) {
    auto filter = load(R"lua(
limit = 5                 -- a global at load time is fine
postern.on("connect", function()
  assert(limit == 5, "read")
  counter = (counter or 0) + 1
end)
postern.on("helo", function() _G.limit = 6 end)
postern.on("auth", function()
  local ok = pcall(function() postern.reject = function() end end)
  assert(not ok, "postern is read-only")
  ok = pcall(function() postern.log.info = print end)
  assert(not ok, "postern.log is read-only")
  assert(getmetatable(_G) == false, "the environment's metatable is hidden")
  assert(next(_G) == nil, "nothing to iterate past the view")
  return postern.accept("frozen ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect),
                    "counter is read-only (keep per-transaction state in tx.notes)");
    EXPECT_CONTAINS(run_failure(*filter, Stage::kHelo), "limit is read-only");
    EXPECT_EQ(run_ok(*filter, Stage::kAuth).reason, "frozen ok");
}

TEST_F(LuaFilterTest, StringMetatableAndLibrariesAreLocked) {
    auto filter = load(R"lua(
postern.on("connect", function()
  assert(getmetatable("") == false, "getmetatable gives false, not the table")
  local function refused(fn, what)
    local ok, err = pcall(fn)
    assert(not ok, what .. " was allowed")
  end
  refused(function() string.lower = function() return "pwned" end end, "string.lower =")
  refused(function() string.custom = 1 end, "string.custom =")
  refused(function() table.insert = nil end, "table.insert =")
  refused(function() math.pi = 3 end, "math.pi =")
  refused(function() os.time = nil end, "os.time =")
  refused(function() utf8.char = nil end, "utf8.char =")
  refused(function() setmetatable(string, {}) end, "setmetatable(string)")
  refused(function() setmetatable("", {}) end, "setmetatable('')")
  -- pairs on a library must not hand out the table behind the read-only view.
  local _, behind = pairs(string)
  refused(function() behind.upper = function() return "pwned" end end, "write through pairs")
  local n = 0
  for k, v in pairs(string) do n = n + 1 end
  assert(n > 10, "pairs still lists the library: " .. n)
  assert(("abc"):upper() == "ABC" and ("ABC"):lower() == "abc", "string methods")
  return postern.accept("locked ok")
end)
postern.on("helo", function() string.lower = nil end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "locked ok");
    EXPECT_CONTAINS(run_failure(*filter, Stage::kHelo), "lower is read-only");
    // And the library is intact afterwards.
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "locked ok");
}

TEST_F(LuaFilterTest, SetmetatableRefusesGc) {
    auto filter = load(R"lua(
postern.on("connect", function()
  setmetatable({}, {__gc = function() print("finalizer") end})
end)
postern.on("helo", function()
  local ok = pcall(setmetatable, {}, {__gc = false})
  assert(not ok, "__gc = false")
  local t = setmetatable({}, {__index = function(_, k) return k .. "!" end})
  assert(t.x == "x!", "other metamethods work")
  local locked = setmetatable({}, {__metatable = "locked"})
  assert(getmetatable(locked) == "locked", "__metatable")
  ok = pcall(setmetatable, locked, {})
  assert(not ok, "a protected metatable stays")
  ok = pcall(collectgarbage, "stop")
  assert(not ok, "collectgarbage stop")
  ok = pcall(collectgarbage, "incremental")
  assert(not ok, "collectgarbage incremental")
  return postern.accept("metatables ok")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect),
                    "setmetatable: __gc metamethods are not available in policy scripts");
    EXPECT_EQ(run_ok(*filter, Stage::kHelo).reason, "metatables ok");
}

// The check looks at the metatable raw: an __index on the metatable that adds __gc while the
// check looks would otherwise slip a finalizer through (finalizers run without the count hook).
TEST_F(LuaFilterTest, SetmetatableGcCheckIsRaw) {
    auto filter = load(R"lua(
postern.on("connect", function()
  local mt = setmetatable({}, {__index = function(t, k)
    if k == "__gc" then t.__gc = function() while true do end end end
  end})
  setmetatable({}, mt)
  return postern.accept("no finalizer")
end)
postern.on("helo", function()
  collectgarbage("collect")  -- a finalizer, had one slipped through, would never return here
  collectgarbage("collect")
  return postern.accept("collected")
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "no finalizer");
    EXPECT_EQ(run_ok(*filter, Stage::kHelo).reason, "collected");
}

// A collection is one C call the count hook cannot interrupt: each is charged to the budget.
TEST_F(LuaFilterTest, CollectgarbageIsCharged) {
    auto filter = load(R"lua(
postern.on("connect", function()
  while true do collectgarbage("collect") end
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect), "instruction budget exceeded");
}

TEST_F(LuaFilterTest, HandlesDieWithTheirCall) {
    auto filter = load(R"lua(
local saved_tx, saved_tags, saved_msg, saved_conn
postern.on("mail_from", function(tx)
  if saved_tx then return postern.reject(550, saved_tx.id) end
  saved_tx = tx
end)
postern.on("rcpt_to", function(tx)
  if saved_tags then saved_tags.x = "late" return end
  saved_tags = tx.tags
end)
postern.on("data", function(tx, msg)
  if saved_msg then
    return postern.reject(550, msg:header("Subject") .. saved_msg:header("Subject"))
  end
  saved_msg = msg
end)
postern.on("connect", function(conn)
  if saved_conn then return postern.reject(550, saved_conn.ip) end
  saved_conn = conn
end)
)lua");
    ASSERT_NE(filter, nullptr);
    run_ok(*filter, Stage::kMailFrom);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kMailFrom),
                    "tx used after the hook call it was given to (keep state in tx.notes)");
    run_ok(*filter, Stage::kRcptTo);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kRcptTo), "tx.tags used after the hook call");
    EXPECT_EQ(tx_.tags.count("x"), 0u);
    run_ok(*filter, Stage::kData);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kData), "msg used after the hook call");
    run_ok(*filter, Stage::kConnect);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect), "conn used after the hook call");
}

TEST_F(LuaFilterTest, HandlesDieBetweenHandlersOfOneStage) {
    auto filter = load(R"lua(
local saved
postern.on("mail_from", function(tx) saved = tx end)
postern.on("mail_from", function(tx) return postern.reject(550, saved.id) end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kMailFrom), "tx used after the hook call");
}

TEST_F(LuaFilterTest, PosternOnOnlyAtLoad) {
    auto filter = load(R"lua(
postern.on("connect", function()
  postern.on("helo", function() return postern.reject() end)
end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_CONTAINS(run_failure(*filter, Stage::kConnect),
                    "postern.on: handlers are registered at load time");
    EXPECT_FALSE(filter->handles(Stage::kHelo));
    EXPECT_EQ(run_ok(*filter, Stage::kHelo).action, Action::kContinue);
}

// ---- reload -------------------------------------------------------------------------------------

TEST_F(LuaFilterTest, ReloadKeepsTheOldScriptWhenTheNewOneIsBroken) {
    auto filter = load("postern.on('mail_from', function() return postern.reject('v1') end)\n");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kMailFrom)), "v1");

    write("policy.lua", "postern.on('mail_from', function()\n  return postern.reject('v2'\nend)\n");
    std::string error;
    EXPECT_FALSE(filter->reload(error));
    EXPECT_EQ(error.rfind(path_ + ":3:", 0), 0u) << error;
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kMailFrom)), "v1");

    write("policy.lua", "error('top level fails')\n");
    EXPECT_FALSE(filter->reload(error));
    EXPECT_EQ(error, path_ + ":1: top level fails");
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kMailFrom)), "v1");
    EXPECT_TRUE(filter->handles(Stage::kMailFrom));

    write("policy.lua", "postern.on('data', function() return postern.reject('v3') end)\n");
    ASSERT_TRUE(filter->reload(error)) << error;
    EXPECT_FALSE(filter->handles(Stage::kMailFrom));
    EXPECT_TRUE(filter->handles(Stage::kData));
    EXPECT_EQ(run_ok(*filter, Stage::kMailFrom).action, Action::kContinue);
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kData)), "v3");
}

// ---- require ------------------------------------------------------------------------------------

TEST_F(LuaFilterTest, RequireFromModuleDirs) {
    write("lib/helpers.lua", R"lua(
local M = {}
function M.double(x) return 2 * x end
M.has_io = io ~= nil
return M
)lua");
    write("lib/util/strings.lua", "return { shout = function(s) return s:upper() .. '!' end }\n");
    write("lib/flag.lua", "-- returns nothing\n");
    LuaFilterOptions o = options();
    o.module_dirs = {dir_ + "/nowhere", dir_ + "/lib"};
    auto filter = load(R"lua(
local helpers = require("helpers")
postern.on("connect", function()
  assert(helpers.double(21) == 42, "module function")
  assert(helpers.has_io == false, "modules run in the sandbox")
  assert(require("helpers") == helpers, "loaded once")
  local strings = require("util.strings")       -- at call time, from a subdirectory
  assert(strings.shout("hi") == "HI!", "nested module")
  assert(require("flag") == true, "a module without a value")
  return postern.accept("require ok")
end)
)lua",
                       o);
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "require ok");
    EXPECT_EQ(run_ok(*filter, Stage::kConnect).reason, "require ok");
}

TEST_F(LuaFilterTest, RequireDefaultsToTheScriptDirectory) {
    write("local_mod.lua", "return 7\n");
    auto filter = load(R"lua(
local seven = require "local_mod"
postern.on("connect", function() return postern.reject(550, "got " .. seven) end)
)lua");
    ASSERT_NE(filter, nullptr);
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kConnect)), "got 7");
}

TEST_F(LuaFilterTest, BrokenModuleNamesItsFileAndLine) {
    write("broken.lua", "local x = 1\nreturn (\n");
    std::string error = load_error("local b = require 'broken'\n");
    EXPECT_CONTAINS(error, dir_ + "/broken.lua:3:");
    write("failing.lua", "\nerror('module fails')\n");
    EXPECT_CONTAINS(load_error("local f = require 'failing'\n"),
                    dir_ + "/failing.lua:2: module fails");
    std::string missing = load_error("local m = require 'missing'\n");
    EXPECT_CONTAINS(missing, "module 'missing' not found (looked in: " + dir_ + "/missing.lua)");
}

TEST_F(LuaFilterTest, ModulesMayRegisterHandlersAtLoad) {
    write("plugin.lua",
          "postern.on('helo', function() return postern.reject('from plugin') end)\n");
    auto filter = load("require 'plugin'\n");
    ASSERT_NE(filter, nullptr);
    EXPECT_TRUE(filter->handles(Stage::kHelo));
    EXPECT_EQ(text_of(run_ok(*filter, Stage::kHelo)), "from plugin");
}

}  // namespace
}  // namespace postern::filters::lua
