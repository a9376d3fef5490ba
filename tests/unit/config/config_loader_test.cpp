// Unit tests for the TOML configuration loader (proxy/config/config_loader.hpp): defaults, every
// kind of issue with its file:line:col and key, warnings, and several issues in one file.
#include "proxy/config/config_loader.hpp"

#include <gtest/gtest.h>
#include <toml++/toml.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

namespace postern::config {
namespace {

using namespace std::chrono_literals;

constexpr const char* kFile = "test.toml";

// The smallest valid configuration: one listener and the route it uses.
constexpr const char* kMinimal = R"([[listener]]
address = "127.0.0.1:2525"

[route.default]
outbox = "var/outbox"
)";

LoadResult load(const std::string& text) {
    return load_config_text(text, kFile);
}

std::string dump(const LoadResult& r) {
    std::string s;
    for (const ConfigIssue& i : r.issues) s += "  " + i.to_string() + "\n";
    return s.empty() ? "  (no issues)\n" : s;
}

std::vector<ConfigIssue> errors(const LoadResult& r) {
    std::vector<ConfigIssue> out;
    for (const ConfigIssue& i : r.issues) {
        if (!i.warning) out.push_back(i);
    }
    return out;
}

// The one issue about `key`; fails the test when there is not exactly one.
ConfigIssue issue_for(const LoadResult& r, const std::string& key) {
    std::vector<ConfigIssue> found;
    for (const ConfigIssue& i : r.issues) {
        if (i.key == key) found.push_back(i);
    }
    EXPECT_EQ(found.size(), 1u) << "issues for " << key << ":\n" << dump(r);
    return found.empty() ? ConfigIssue{} : found.front();
}

// Asserts one error about `key` at `line` whose text names "test.toml:LINE:" and the key and
// contains `fragment`.
void expect_error(const LoadResult& r, const std::string& key, unsigned line,
                  const std::string& fragment) {
    SCOPED_TRACE("key " + key);
    EXPECT_FALSE(r.ok()) << dump(r);
    ConfigIssue i = issue_for(r, key);
    EXPECT_FALSE(i.warning);
    EXPECT_EQ(i.file, kFile);
    EXPECT_EQ(i.line, line) << dump(r);
    EXPECT_GT(i.column, 0u);
    std::string text = i.to_string();
    EXPECT_EQ(text.rfind(std::string(kFile) + ":" + std::to_string(line) + ":", 0), 0u) << text;
    EXPECT_NE(text.find(std::string(kFile) + ":" + std::to_string(line) + ":" +
                        std::to_string(i.column) + ": " + key + ": "),
              std::string::npos)
        << text;
    EXPECT_NE(i.message.find(fragment), std::string::npos) << text;
}

// A configuration with `listener_lines` added to the listener (lines 3.. of the file).
std::string with_listener(const std::string& listener_lines) {
    return "[[listener]]\naddress = \"127.0.0.1:2525\"\n" + listener_lines +
           "\n[route.default]\noutbox = \"var/outbox\"\n";
}

// ---- valid configurations and defaults -------------------------------------------------------

TEST(ConfigLoader, MinimalIsValid) {
    LoadResult r = load(kMinimal);
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    EXPECT_EQ(r.config.source, kFile);
    ASSERT_EQ(r.config.listeners.size(), 1u);
    ASSERT_EQ(r.config.routes.size(), 1u);
    EXPECT_EQ(r.config.routes.at("default").outbox, "var/outbox");
    EXPECT_EQ(r.config.routes.at("default").name, "default");
}

TEST(ConfigLoader, DefaultsApplied) {
    LoadResult r = load(kMinimal);
    ASSERT_TRUE(r.ok()) << dump(r);
    const Config& c = r.config;
    EXPECT_FALSE(c.server.hostname.empty()) << "defaults to the machine's host name";
    EXPECT_GE(c.server.threads, 1u) << "0 resolves to the number of cores";
    EXPECT_EQ(c.server.spool_dir, "var/spool");
    EXPECT_EQ(c.server.shutdown_grace, 30s);
    EXPECT_EQ(c.log.level, LogLevel::kInfo);
    EXPECT_EQ(c.log.format, LogFormat::kLogfmt);

    const ListenerConfig& l = c.listeners.at(0);
    EXPECT_EQ(l.name, "listener0");
    EXPECT_EQ(l.address.host, "127.0.0.1");
    EXPECT_EQ(l.address.port, 2525);
    EXPECT_EQ(l.address.to_string(), "127.0.0.1:2525");
    ASSERT_EQ(l.trusted_networks.size(), 2u);
    EXPECT_EQ(l.trusted_networks[0].to_string(), "127.0.0.0/8");
    EXPECT_EQ(l.trusted_networks[1].to_string(), "::1/128");
    EXPECT_EQ(l.relay, RelayPolicy::kTrusted);
    EXPECT_EQ(l.max_message_size, 25ull * 1024 * 1024);
    EXPECT_EQ(l.max_recipients, 100u);
    EXPECT_EQ(l.max_connections, 1000u);
    EXPECT_EQ(l.max_connections_per_ip, 50u);
    EXPECT_EQ(l.delivery, DeliveryMode::kQueue);
    EXPECT_EQ(l.route, "default");
    EXPECT_EQ(l.command_timeout, 5min);
    EXPECT_EQ(l.data_timeout, 10min);
    EXPECT_EQ(l.max_errors, 20u);
    EXPECT_EQ(l.bare_lf, smtp::BareLineEndPolicy::kReject);
}

TEST(ConfigLoader, EveryKeySet) {
    LoadResult r = load(R"([server]
hostname = "mx.example.com"
threads = 4
spool_dir = "/var/spool/postern"
shutdown_grace = "10s"

[log]
level = "debug"
format = "json"

[[listener]]
name = "submission"
address = "[::1]:587"
trusted_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
relay = "trusted"
max_message_size = "50MiB"
max_recipients = 500
max_connections = 20
max_connections_per_ip = 5
delivery = "passthrough"
route = "relay"
command_timeout = "10m"
data_timeout = "1h"
max_errors = 7
bare_lf = "normalize"

[[listener]]
address = "0.0.0.0:25"
max_message_size = 1048576
trusted_networks = []

[route.relay]
outbox = "/srv/outbox"

[route.default]
outbox = "out"
)");
    ASSERT_TRUE(r.ok()) << dump(r);
    // The only remark: passthrough cannot pass through anything yet.
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    EXPECT_TRUE(r.issues[0].warning);
    EXPECT_EQ(r.issues[0].key, "listener[0].delivery");
    const Config& c = r.config;
    EXPECT_EQ(c.server.hostname, "mx.example.com");
    EXPECT_EQ(c.server.threads, 4u);
    EXPECT_EQ(c.server.spool_dir, "/var/spool/postern");
    EXPECT_EQ(c.server.shutdown_grace, 10s);
    EXPECT_EQ(c.log.level, LogLevel::kDebug);
    EXPECT_EQ(c.log.format, LogFormat::kJson);
    ASSERT_EQ(c.listeners.size(), 2u);
    const ListenerConfig& l = c.listeners[0];
    EXPECT_EQ(l.name, "submission");
    EXPECT_EQ(l.address.host, "::1");
    EXPECT_EQ(l.address.port, 587);
    EXPECT_EQ(l.address.to_string(), "[::1]:587");
    ASSERT_EQ(l.trusted_networks.size(), 3u);
    EXPECT_EQ(l.trusted_networks[2].to_string(), "192.0.2.1/32");
    EXPECT_EQ(l.relay, RelayPolicy::kTrusted);
    EXPECT_EQ(l.max_message_size, 50ull * 1024 * 1024);
    EXPECT_EQ(l.max_recipients, 500u);
    EXPECT_EQ(l.max_connections, 20u);
    EXPECT_EQ(l.max_connections_per_ip, 5u);
    EXPECT_EQ(l.delivery, DeliveryMode::kPassthrough);
    EXPECT_EQ(l.route, "relay");
    EXPECT_EQ(l.command_timeout, 10min);
    EXPECT_EQ(l.data_timeout, 1h);
    EXPECT_EQ(l.max_errors, 7u);
    EXPECT_EQ(l.bare_lf, smtp::BareLineEndPolicy::kNormalize);

    const ListenerConfig& l1 = c.listeners[1];
    EXPECT_EQ(l1.name, "listener1");
    EXPECT_EQ(l1.max_message_size, 1048576u);
    EXPECT_TRUE(l1.trusted_networks.empty()) << "[] trusts nobody";
    EXPECT_EQ(c.routes.size(), 2u);
    EXPECT_EQ(c.routes.at("relay").outbox, "/srv/outbox");
}

TEST(ConfigLoader, ReferenceConfigurationIsValid) {
    // The annotated file shipped with the sources must load without errors.
    std::string path = std::string(__FILE__);
    path = path.substr(0, path.rfind("/tests/unit/")) + "/config/postern.toml";
    LoadResult r = load_config_file(path);
    EXPECT_TRUE(r.ok()) << path << "\n" << dump(r);
    EXPECT_FALSE(r.config.listeners.empty());
}

TEST(ConfigLoader, MissingFile) {
    LoadResult r = load_config_file("/nonexistent/postern-test.toml");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.issues.size(), 1u);
    EXPECT_EQ(r.issues[0].file, "/nonexistent/postern-test.toml");
    EXPECT_NE(r.issues[0].message.find("cannot open"), std::string::npos);
}

// ---- unknown keys and sections ---------------------------------------------------------------

TEST(ConfigLoader, UnknownKeyWithSuggestion) {
    LoadResult r = load(with_listener("max_recipient = 10"));
    expect_error(r, "listener[0].max_recipient", 3, "unknown key");
    EXPECT_NE(
        issue_for(r, "listener[0].max_recipient").message.find("did you mean \"max_recipients\""),
        std::string::npos)
        << dump(r);
}

TEST(ConfigLoader, UnknownKeySuggestionsInOtherTables) {
    LoadResult r = load(
        std::string("[server]\nhostnam = \"x.example\"\n[log]\nformt = \"json\"\n") + kMinimal);
    expect_error(r, "server.hostnam", 2, "did you mean \"hostname\"");
    expect_error(r, "log.formt", 4, "did you mean \"format\"");
}

TEST(ConfigLoader, UnknownKeyWithoutSuggestion) {
    LoadResult r = load(with_listener("completely_unrelated = 1"));
    expect_error(r, "listener[0].completely_unrelated", 3, "unknown key");
    EXPECT_EQ(issue_for(r, "listener[0].completely_unrelated").message.find("did you mean"),
              std::string::npos);
}

TEST(ConfigLoader, UnknownTopLevelSection) {
    LoadResult r = load(std::string(kMinimal) + "\n[listeners]\nx = 1\n");
    expect_error(r, "listeners", 7, "did you mean \"listener\"");
}

TEST(ConfigLoader, UnsupportedSectionReported) {
    LoadResult r = load(std::string(kMinimal) + "\n[quota]\nmax_messages = 100\n");
    expect_error(r, "quota", 7, "not supported");
    // Reported once, as unsupported: not also as an unknown key.
    for (const ConfigIssue& i : r.issues) {
        EXPECT_EQ(i.message.find("unknown key"), std::string::npos) << i.to_string();
    }
}

TEST(ConfigLoader, FilterTypesOfLaterVersions) {
    LoadResult r = load(std::string(kMinimal) + "\n[[filter]]\ntype = \"spf\"\n");
    expect_error(r, "filter[0].type", 8, "not supported by this version");
    r = load(std::string(kMinimal) + "\n[[filter]]\ntype = \"perl\"\n");
    expect_error(r, "filter[0].type", 8, "is not a filter type (lua)");
}

TEST(ConfigLoader, LuaFilter) {
    LoadResult r = load(std::string(kMinimal) + R"(
[[filter]]
type = "lua"
script = "scripts/a.lua"

[[filter]]
type = "lua"
name = "second"
script = "scripts/b.lua"
module_dirs = ["lib", "scripts"]
on_error = "continue"
timeout = "250ms"
memory_limit = "8MiB"
instruction_limit = 5000
config = { deny = ["a.example"], limit = 3 }
)");
    ASSERT_TRUE(r.ok()) << dump(r);
    ASSERT_EQ(r.config.filters.size(), 2u);
    const FilterConfig& a = r.config.filters[0];
    EXPECT_EQ(a.name, "lua1");
    EXPECT_EQ(a.script, "scripts/a.lua");
    EXPECT_FALSE(a.fail_open);
    EXPECT_EQ(a.timeout, 1s);
    EXPECT_EQ(a.memory_limit, 64u * 1024 * 1024);
    EXPECT_EQ(a.instruction_limit, 10'000'000u);
    EXPECT_TRUE(a.config_toml.empty());
    const FilterConfig& b = r.config.filters[1];
    EXPECT_EQ(b.name, "second");
    EXPECT_EQ(b.module_dirs, (std::vector<std::string>{"lib", "scripts"}));
    EXPECT_TRUE(b.fail_open);
    EXPECT_EQ(b.timeout, 250ms);
    EXPECT_EQ(b.memory_limit, 8u * 1024 * 1024);
    EXPECT_EQ(b.instruction_limit, 5000u);
    EXPECT_NE(b.config_toml.find("a.example"), std::string::npos) << b.config_toml;
    EXPECT_NE(b.config_toml.find("limit = 3"), std::string::npos) << b.config_toml;
    // An inline table is written out as a document, which parses back (postern.config).
    toml::table back;
    EXPECT_NO_THROW(back = toml::parse(b.config_toml)) << b.config_toml;
    EXPECT_EQ(back["limit"].value_or(0), 3);
}

TEST(ConfigLoader, LuaFilterErrors) {
    LoadResult r = load(std::string(kMinimal) + "\n[[filter]]\ntype = \"lua\"\n");
    expect_error(r, "filter[0].script", 7, "needs its script");
    r = load(std::string(kMinimal) +
             "\n[[filter]]\ntype = \"lua\"\nscript = \"a.lua\"\non_error = \"ignore\"\n");
    expect_error(r, "filter[0].on_error", 10, "tempfail | continue");
    r = load(std::string(kMinimal) +
             "\n[[filter]]\ntype = \"lua\"\nscript = \"a.lua\"\ninstruction_limit = 10\n");
    expect_error(r, "filter[0].instruction_limit", 10, "at least 1000");
    r = load(std::string(kMinimal) +
             "\n[[filter]]\ntype = \"lua\"\nscript = \"a.lua\"\nconfig = 3\n");
    expect_error(r, "filter[0].config", 10, "expected a table");
    r = load(std::string(kMinimal) +
             "\n[[filter]]\ntype = \"lua\"\nscript = \"a.lua\"\nscripts = \"x\"\n");
    expect_error(r, "filter[0].scripts", 10, "did you mean \"script\"");
    r = load(std::string(kMinimal) + "\n[[filter]]\ntype = \"lua\"\nscript = \"a.lua\"\n" +
             "\n[[filter]]\ntype = \"lua\"\nscript = \"b.lua\"\nname = \"lua1\"\n");
    expect_error(r, "filter[1].name", 11, "used twice");
}

TEST(ConfigLoader, ListenerTags) {
    LoadResult r = load(with_listener("tags = [\"non-production\", \"eu\"]"));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.listeners[0].tags, (std::vector<std::string>{"non-production", "eu"}));
    r = load(with_listener("tags = []"));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.config.listeners[0].tags.empty());
    r = load(with_listener("tags = [\"\"]"));
    expect_error(r, "listener[0].tags", 3, "tag of 1 to 64");
}

TEST(ConfigLoader, AdminDefaultsToLoopback) {
    LoadResult r = load(std::string(kMinimal));
    EXPECT_FALSE(r.config.admin.enabled);
    r = load(std::string(kMinimal) + "\n[admin]\n");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.config.admin.enabled);
    EXPECT_EQ(r.config.admin.address.to_string(), "127.0.0.1:8025");
    EXPECT_TRUE(r.config.admin.token.empty());
}

TEST(ConfigLoader, AdminElsewhereNeedsAToken) {
    LoadResult r = load(std::string(kMinimal) + "\n[admin]\naddress = \"0.0.0.0:8025\"\n");
    expect_error(r, "admin.token_file", 7, "not loopback");
    r = load(std::string(kMinimal) + "\n[admin]\naddress = \"localhost:8025\"\n");
    expect_error(r, "admin.address", 8, "is not an IP address and port");
    r = load(std::string(kMinimal) +
             "\n[admin]\naddress = \"[::]:8025\"\ntoken_file = \"/nonexistent/token\"\n");
    expect_error(r, "admin.token_file", 9, "cannot read");
}

TEST(ConfigLoader, RouteUpstream) {
    LoadResult r = load(R"([[listener]]
address = "127.0.0.1:2525"
delivery = "passthrough"

[route.default]
upstream = "smarthost"

[upstream.smarthost]
hosts = ["smtp.example.com:587"]
)");
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    const RouteConfig& route = r.config.routes.at("default");
    EXPECT_EQ(route.upstream, "smarthost");
    EXPECT_EQ(route.outbox, "");
    ASSERT_EQ(r.config.upstreams.count("smarthost"), 1u);
    EXPECT_EQ(r.config.upstreams.at("smarthost").name, "smarthost");
}

// ---- wrong types and values ------------------------------------------------------------------

TEST(ConfigLoader, WrongTypes) {
    LoadResult r = load(with_listener(R"(name = 5
max_recipients = "100"
trusted_networks = "10.0.0.0/8"
relay = true
max_connections = 1.5)"));
    expect_error(r, "listener[0].name", 3, "expected a string");
    expect_error(r, "listener[0].max_recipients", 4, "expected a whole number");
    expect_error(r, "listener[0].trusted_networks", 5, "expected an array");
    expect_error(r, "listener[0].relay", 6, "expected a string");
    expect_error(r, "listener[0].max_connections", 7, "expected a whole number");
}

TEST(ConfigLoader, BadEnumValue) {
    LoadResult r = load(with_listener("relay = \"everyone\"\nbare_lf = \"Normalize\""));
    expect_error(r, "listener[0].relay", 3, "is not one of");
    EXPECT_NE(issue_for(r, "listener[0].relay").message.find("trusted | authenticated"),
              std::string::npos);
    expect_error(r, "listener[0].bare_lf", 4, "\"Normalize\" is not one of reject | normalize");
}

TEST(ConfigLoader, NumbersOutOfRange) {
    LoadResult r =
        load(with_listener("max_recipients = 0\nmax_errors = -1\nmax_connections = 1000001"));
    expect_error(r, "listener[0].max_recipients", 3, "between 1 and 1000000");
    expect_error(r, "listener[0].max_errors", 4, "between 1 and 100000");
    expect_error(r, "listener[0].max_connections", 5, "between 1 and 1000000");

    r = load(std::string("[server]\nthreads = 257\n") + kMinimal);
    expect_error(r, "server.threads", 2, "between 0 and 256");
}

TEST(ConfigLoader, BadCidr) {
    LoadResult r = load(with_listener(R"(trusted_networks = [
  "10.0.0.0/8",
  "10.0.0.1/8",
  "300.0.0.0/8",
  42,
])"));
    EXPECT_FALSE(r.ok()) << dump(r);
    std::vector<ConfigIssue> found;
    for (const ConfigIssue& i : r.issues) {
        if (i.key == "listener[0].trusted_networks") found.push_back(i);
    }
    ASSERT_EQ(found.size(), 3u) << dump(r);
    EXPECT_EQ(found[0].line, 5u);
    EXPECT_NE(found[0].message.find("\"10.0.0.1/8\""), std::string::npos);
    EXPECT_NE(found[0].message.find("host bits"), std::string::npos);
    EXPECT_EQ(found[1].line, 6u);
    EXPECT_NE(found[1].message.find("\"300.0.0.0/8\""), std::string::npos);
    EXPECT_EQ(found[2].line, 7u);
    // The good entry is kept.
    ASSERT_EQ(r.config.listeners.size(), 1u);
    ASSERT_EQ(r.config.listeners[0].trusted_networks.size(), 1u);
    EXPECT_EQ(r.config.listeners[0].trusted_networks[0].to_string(), "10.0.0.0/8");
}

TEST(ConfigLoader, BadAddresses) {
    const char* cases[] = {
        "127.0.0.1",        // no port
        "127.0.0.1:",       // empty port
        "127.0.0.1:0",      // port 0
        "127.0.0.1:65536",  // port too big
        "127.0.0.1:25x",    // not a number
        "::1:2525",         // IPv6 without brackets
        "[::1]2525",        // no colon after ]
        "[::1]",            // no port
        "[127.0.0.1]:25",   // brackets around IPv4
        "localhost:25",     // host names are not allowed
        "[::1:25",          // unclosed bracket
        "",
    };
    for (const char* address : cases) {
        SCOPED_TRACE(address);
        LoadResult r = load(std::string("[[listener]]\naddress = \"") + address +
                            "\"\n\n[route.default]\noutbox = \"o\"\n");
        expect_error(r, "listener[0].address", 2, "is not an IP address and port");
    }
}

TEST(ConfigLoader, GoodAddresses) {
    struct Case {
        const char* text;
        const char* host;
        uint16_t port;
    } cases[] = {
        {"0.0.0.0:25", "0.0.0.0", 25},
        {"[::]:25", "::", 25},
        {"[2001:db8::1]:65535", "2001:db8::1", 65535},
        {"192.0.2.1:1", "192.0.2.1", 1},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.text);
        LoadResult r = load(std::string("[[listener]]\naddress = \"") + c.text +
                            "\"\n[route.default]\noutbox = \"o\"\n");
        ASSERT_TRUE(r.ok()) << dump(r);
        EXPECT_EQ(r.config.listeners.at(0).address.host, c.host);
        EXPECT_EQ(r.config.listeners.at(0).address.port, c.port);
    }
}

TEST(ConfigLoader, MissingAddress) {
    LoadResult r = load("[[listener]]\nname = \"x\"\n\n[route.default]\noutbox = \"o\"\n");
    expect_error(r, "listener[0].address", 1, "missing");
}

TEST(ConfigLoader, NoListener) {
    LoadResult r = load("[route.default]\noutbox = \"o\"\n");
    EXPECT_FALSE(r.ok());
    ConfigIssue i = issue_for(r, "listener");
    EXPECT_NE(i.message.find("at least one"), std::string::npos) << dump(r);
}

TEST(ConfigLoader, ListenerNotAnArrayOfTables) {
    LoadResult r = load("listener = \"127.0.0.1:25\"\n[route.default]\noutbox = \"o\"\n");
    expect_error(r, "listener", 1, "expected [[listener]] tables");
}

TEST(ConfigLoader, UnknownRouteName) {
    LoadResult r = load(with_listener("route = \"nowhere\""));
    expect_error(r, "listener[0].route", 3, "unknown route \"nowhere\"");
    EXPECT_NE(issue_for(r, "listener[0].route").message.find("[route.nowhere]"), std::string::npos);
}

TEST(ConfigLoader, DefaultRouteMissing) {
    LoadResult r = load("[[listener]]\naddress = \"127.0.0.1:2525\"\n");
    expect_error(r, "listener[0].route", 1, "unknown route \"default\"");
}

TEST(ConfigLoader, RouteWithoutTarget) {
    LoadResult r = load("[[listener]]\naddress = \"127.0.0.1:2525\"\n[route.default]\n");
    expect_error(r, "route.default", 3, "needs a target");
    r = load("[[listener]]\naddress = \"127.0.0.1:2525\"\n[route.default]\noutbox = \"\"\n");
    expect_error(r, "route.default.outbox", 4, "must not be empty");
}

TEST(ConfigLoader, DuplicateListenerNames) {
    LoadResult r = load(R"([[listener]]
name = "smtp"
address = "127.0.0.1:25"

[[listener]]
name = "smtp"
address = "127.0.0.1:26"

[route.default]
outbox = "o"
)");
    expect_error(r, "listener[1].name", 5, "\"smtp\" is used twice");
}

TEST(ConfigLoader, DuplicateListenerAddresses) {
    LoadResult r = load(R"([[listener]]
address = "127.0.0.1:25"

[[listener]]
address = "127.0.0.1:25"

[route.default]
outbox = "o"
)");
    expect_error(r, "listener[1].address", 4, "used by two listeners");
}

TEST(ConfigLoader, SizeBelowMinimum) {
    LoadResult r = load(with_listener("max_message_size = \"63KiB\""));
    expect_error(r, "listener[0].max_message_size", 3, "at least 65536 bytes");

    r = load(with_listener("max_message_size = 65535"));
    expect_error(r, "listener[0].max_message_size", 3, "at least 65536");

    r = load(with_listener("max_message_size = \"64KiB\""));
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.listeners.at(0).max_message_size, 65536u);
}

TEST(ConfigLoader, BadSizes) {
    for (const char* value : {"\"25mb\"", "\"25 MiBs\"", "-1", "\"\"", "1.5", "true"}) {
        SCOPED_TRACE(value);
        LoadResult r = load(with_listener(std::string("max_message_size = ") + value));
        expect_error(r, "listener[0].max_message_size", 3, "expected a size");
    }
}

TEST(ConfigLoader, DurationWithoutUnit) {
    LoadResult r = load(with_listener("command_timeout = 300"));
    expect_error(r, "listener[0].command_timeout", 3, "expected a duration with a unit");
    r = load(with_listener("data_timeout = \"600\""));
    expect_error(r, "listener[0].data_timeout", 3, "expected a duration with a unit");
    r = load(std::string("[server]\nshutdown_grace = \"0s\"\n") + kMinimal);
    expect_error(r, "server.shutdown_grace", 2, "expected a duration");
}

TEST(ConfigLoader, BadServerValues) {
    LoadResult r = load(
        std::string("[server]\nhostname = \"bad_host-.example\"\nspool_dir = \"\"\n") + kMinimal);
    expect_error(r, "server.hostname", 2, "not a valid host name");
    expect_error(r, "server.spool_dir", 3, "must not be empty");
}

TEST(ConfigLoader, SectionOfWrongType) {
    LoadResult r = load(std::string("server = 1\n") + kMinimal);
    expect_error(r, "server", 1, "expected a table [server]");
}

// ---- TOML syntax errors ----------------------------------------------------------------------

TEST(ConfigLoader, TomlSyntaxError) {
    LoadResult r = load("[[listener]]\naddress = \"127.0.0.1:2525\"\nmax_errors = = 3\n");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    const ConfigIssue& i = r.issues[0];
    EXPECT_EQ(i.file, kFile);
    EXPECT_EQ(i.line, 3u);
    EXPECT_GT(i.column, 1u);
    EXPECT_TRUE(i.key.empty());
    EXPECT_FALSE(i.message.empty());
    EXPECT_EQ(i.to_string().rfind("test.toml:3:" + std::to_string(i.column) + ": ", 0), 0u)
        << i.to_string();
}

TEST(ConfigLoader, TomlUnterminatedString) {
    LoadResult r = load("[server]\nhostname = \"abc\n");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    EXPECT_EQ(r.issues[0].line, 2u);
}

TEST(ConfigLoader, TomlDuplicateKey) {
    LoadResult r = load("[server]\nthreads = 1\nthreads = 2\n");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    EXPECT_EQ(r.issues[0].line, 3u);
}

// ---- warnings --------------------------------------------------------------------------------

TEST(ConfigLoader, CommandTimeoutBelowFiveMinutesIsAWarning) {
    LoadResult r = load(with_listener("command_timeout = \"30s\""));
    EXPECT_TRUE(r.ok()) << dump(r);
    ConfigIssue i = issue_for(r, "listener[0].command_timeout");
    EXPECT_TRUE(i.warning);
    EXPECT_EQ(i.line, 3u);
    EXPECT_NE(i.message.find("5 minutes"), std::string::npos);
    EXPECT_NE(i.to_string().find("test.toml:3:"), std::string::npos);
    EXPECT_NE(i.to_string().find("warning: "), std::string::npos) << i.to_string();
    EXPECT_EQ(r.config.listeners.at(0).command_timeout, 30s) << "the value is still used";
}

TEST(ConfigLoader, RelayByAuthenticationNeedsAuth) {
    auto r = load(R"(
[[listener]]
address = "127.0.0.1:2525"
relay = "trusted_or_authenticated"
[route.default]
outbox = "out"
)");
    expect_error(r, "listener[0].relay", 4, "needs [auth] with users_file");
}

TEST(ConfigLoader, AuthAndUsers) {
    const std::string users = testing::TempDir() + "/postern-users";
    {
        std::ofstream f(users);
        f << "# apps\napp:$y$j9T$abcdefghijklmnop$0123456789012345678901234567890123456789012\n";
    }
    auto r = load(std::string(R"(
[[listener]]
address = "127.0.0.1:2525"
relay = "trusted_or_authenticated"
[route.default]
outbox = "out"
[auth]
users_file = ")") +
                  users + R"("
max_failures = 3
failure_window = "1m"
lockout = "2m"
failure_delay = "0s"
[user.app]
allowed_senders = ["app@example.com", "@example.org", "@.example.net", "<>"]
route = "default"
quota_class = "small"
[user.ghost]
allowed_senders = "ghost@example.com"
)");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.auth.max_failures, 3u);
    EXPECT_EQ(r.config.auth.failure_delay.count(), 0);
    EXPECT_EQ(r.config.users.at("app").allowed_senders.size(), 4u);
    EXPECT_EQ(r.config.users.at("app").quota_class, "small");
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    EXPECT_EQ(r.issues[0].key, "user.ghost");
    EXPECT_NE(r.issues[0].message.find("not in the users file"), std::string::npos);

    r = load(std::string(kMinimal) + "[auth]\nusers_file = \"/nonexistent/users\"\n");
    expect_error(r, "auth.users_file", 7, "cannot read the users file");
    r = load(std::string(kMinimal) + "[user.x]\nallowed_senders = [\"not an address\"]\n");
    expect_error(r, "user.x.allowed_senders", 7, "is not an address");
    expect_error(r, "user", 6, "need [auth]");
}

TEST(ConfigLoader, DurationsAreCapped) {
    auto r = load(R"(
[[listener]]
address = "127.0.0.1:2525"
command_timeout = "400d"
[route.default]
outbox = "out"
)");
    expect_error(r, "listener[0].command_timeout", 4, "at most 365d");
}

TEST(ConfigLoader, OtherWarnings) {
    LoadResult r = load(with_listener("data_timeout = \"1m\"\nmax_recipients = 10"));
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(issue_for(r, "listener[0].data_timeout").warning);
    EXPECT_TRUE(issue_for(r, "listener[0].max_recipients").warning);
    EXPECT_EQ(r.config.listeners.at(0).max_recipients, 10u);
    // At the recommended values there is no warning.
    r = load(
        with_listener("command_timeout = \"5m\"\ndata_timeout = \"10m\"\nmax_recipients = 100"));
    EXPECT_TRUE(r.issues.empty()) << dump(r);
}

// ---- upstreams -------------------------------------------------------------------------------

constexpr const char* kHosts = "hosts = [\"smtp.example.com:587\"]\n";

// kMinimal followed by [upstream.x] on line 6 and `lines` from line 7 on.
std::string with_upstream(const std::string& lines) {
    return std::string(kMinimal) + "[upstream.x]\n" + lines + "\n";
}

// For files the configuration names: a fresh directory under /tmp for each test.
class ConfigLoaderFiles : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/postern-config-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
        dir_ = tmpl;
    }

    void TearDown() override {
        if (dir_.empty()) return;
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        EXPECT_FALSE(ec) << ec.message();
    }

    // Writes `content` to a file in the directory; returns its path.
    std::string write(const std::string& name, const std::string& content) {
        std::string path = dir_ + "/" + name;
        std::ofstream out(path, std::ios::binary);
        out << content;
        out.close();
        EXPECT_TRUE(out.good()) << "cannot write " << path;
        return path;
    }

    std::string dir_;
};

TEST_F(ConfigLoaderFiles, UpstreamEveryKeySet) {
    std::string ca = write("ca.pem", "ca\n");
    std::string cert = write("client.pem", "certificate\n");
    std::string key = write("client.key", "key\n");
    write("password", "secret\n");
    std::string text = std::string(kMinimal) + R"([upstream.smarthost]
hosts = ["smtp.example.com:587", "192.0.2.1:25", "[2001:db8::1]:465"]
tls = "implicit"
allow_plaintext = true
verify_certificate = true
ca_file = "DIR/ca.pem"
server_name = "relay.example.net"
client_certificate = "DIR/client.pem"
client_key = "DIR/client.key"
username = "relay-user"
password_file = "DIR/password"
auth = "login"
helo_name = "out.example.com"
max_connections = 5
max_messages_per_connection = 50
idle_timeout = "2m"
connect_timeout = "10s"
greeting_timeout = "1m"
command_timeout = "2m"
data_init_timeout = "90s"
data_block_timeout = "4m"
data_done_timeout = "15m"
host_down_time = "45s"
)";
    for (size_t at = 0; (at = text.find("DIR/", at)) != std::string::npos; at += dir_.size()) {
        text.replace(at, 3, dir_);
    }
    LoadResult r = load(text);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    ASSERT_EQ(r.config.upstreams.size(), 1u);
    const UpstreamConfig& u = r.config.upstreams.at("smarthost");
    EXPECT_EQ(u.name, "smarthost");
    ASSERT_EQ(u.hosts.size(), 3u);
    EXPECT_EQ(u.hosts[0].host, "smtp.example.com");
    EXPECT_EQ(u.hosts[0].port, 587);
    EXPECT_EQ(u.hosts[0].to_string(), "smtp.example.com:587");
    EXPECT_EQ(u.hosts[1].host, "192.0.2.1");
    EXPECT_EQ(u.hosts[1].port, 25);
    EXPECT_EQ(u.hosts[2].host, "2001:db8::1") << "without brackets";
    EXPECT_EQ(u.hosts[2].port, 465);
    EXPECT_EQ(u.hosts[2].to_string(), "[2001:db8::1]:465");
    EXPECT_EQ(u.tls, UpstreamTls::kImplicit);
    EXPECT_TRUE(u.allow_plaintext);
    EXPECT_TRUE(u.verify_certificate);
    EXPECT_EQ(u.ca_file, ca);
    EXPECT_EQ(u.server_name, "relay.example.net");
    EXPECT_EQ(u.client_certificate, cert);
    EXPECT_EQ(u.client_key, key);
    EXPECT_EQ(u.username, "relay-user");
    EXPECT_EQ(u.password, "secret");
    EXPECT_EQ(u.auth, UpstreamAuth::kLogin);
    EXPECT_EQ(u.helo_name, "out.example.com");
    EXPECT_EQ(u.max_connections, 5u);
    EXPECT_EQ(u.max_messages_per_connection, 50u);
    EXPECT_EQ(u.idle_timeout, 2min);
    EXPECT_EQ(u.connect_timeout, 10s);
    EXPECT_EQ(u.greeting_timeout, 1min);
    EXPECT_EQ(u.command_timeout, 2min);
    EXPECT_EQ(u.data_init_timeout, 90s);
    EXPECT_EQ(u.data_block_timeout, 4min);
    EXPECT_EQ(u.data_done_timeout, 15min);
    EXPECT_EQ(u.host_down_time, 45s);
}

TEST(ConfigLoader, UpstreamDefaults) {
    LoadResult r = load(with_upstream(kHosts));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    const UpstreamConfig& u = r.config.upstreams.at("x");
    EXPECT_EQ(u.tls, UpstreamTls::kStarttls);
    EXPECT_FALSE(u.allow_plaintext);
    EXPECT_TRUE(u.verify_certificate);
    EXPECT_EQ(u.ca_file, "");
    EXPECT_EQ(u.server_name, "");
    EXPECT_EQ(u.username, "");
    EXPECT_EQ(u.password, "");
    EXPECT_EQ(u.auth, UpstreamAuth::kAuto);
    EXPECT_EQ(u.max_connections, 20u);
    EXPECT_EQ(u.max_messages_per_connection, 100u);
    EXPECT_EQ(u.idle_timeout, 60s);
    EXPECT_EQ(u.connect_timeout, 30s);
    EXPECT_EQ(u.greeting_timeout, 5min);
    EXPECT_EQ(u.command_timeout, 5min);
    EXPECT_EQ(u.data_init_timeout, 2min);
    EXPECT_EQ(u.data_block_timeout, 3min);
    EXPECT_EQ(u.data_done_timeout, 10min);
    EXPECT_EQ(u.host_down_time, 30s);
}

TEST(ConfigLoader, UpstreamHeloNameDefaultsToServerHostname) {
    LoadResult r = load("[server]\nhostname = \"mx.example.com\"\n" + with_upstream(kHosts));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.upstreams.at("x").helo_name, "mx.example.com");

    r = load(with_upstream(kHosts));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_FALSE(r.config.server.hostname.empty());
    EXPECT_EQ(r.config.upstreams.at("x").helo_name, r.config.server.hostname)
        << "the machine's host name when server.hostname is not set";

    r = load("[server]\nhostname = \"mx.example.com\"\n" +
             with_upstream(std::string(kHosts) + "helo_name = \"out.example.com\""));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.upstreams.at("x").helo_name, "out.example.com");
}

TEST(ConfigLoader, UpstreamTlsAndAuthChoices) {
    struct TlsCase {
        const char* text;
        UpstreamTls tls;
    } tls_cases[] = {
        {"starttls", UpstreamTls::kStarttls},
        {"starttls_optional", UpstreamTls::kStarttlsOptional},
        {"implicit", UpstreamTls::kImplicit},
        {"none", UpstreamTls::kNone},
    };
    for (const TlsCase& c : tls_cases) {
        SCOPED_TRACE(c.text);
        LoadResult r = load(with_upstream(std::string(kHosts) + "tls = \"" + c.text +
                                          "\"\nallow_plaintext = true"));
        ASSERT_TRUE(r.ok()) << dump(r);
        EXPECT_EQ(r.config.upstreams.at("x").tls, c.tls);
    }
    struct AuthCase {
        const char* text;
        UpstreamAuth auth;
    } auth_cases[] = {
        {"auto", UpstreamAuth::kAuto},
        {"plain", UpstreamAuth::kPlain},
        {"login", UpstreamAuth::kLogin},
    };
    for (const AuthCase& c : auth_cases) {
        SCOPED_TRACE(c.text);
        LoadResult r = load(with_upstream(std::string(kHosts) + "auth = \"" + c.text + "\""));
        ASSERT_TRUE(r.ok()) << dump(r);
        EXPECT_EQ(r.config.upstreams.at("x").auth, c.auth);
    }
}

TEST(ConfigLoader, UpstreamBadEnumValues) {
    LoadResult r = load(with_upstream(std::string(kHosts) + "tls = \"ssl\"\nauth = \"cram-md5\""));
    expect_error(r, "upstream.x.tls", 8,
                 "\"ssl\" is not one of starttls | starttls_optional | implicit | none");
    expect_error(r, "upstream.x.auth", 9, "\"cram-md5\" is not one of auto | plain | login");
}

TEST(ConfigLoader, UpstreamHostForms) {
    LoadResult r = load(with_upstream(
        "hosts = [\"localhost:25\", \"MX-1.Example.COM:2525\", \"[::1]:25\", \"10.0.0.1:587\"]"));
    ASSERT_TRUE(r.ok()) << dump(r);
    const UpstreamConfig& u = r.config.upstreams.at("x");
    ASSERT_EQ(u.hosts.size(), 4u);
    EXPECT_EQ(u.hosts[0].to_string(), "localhost:25");
    EXPECT_EQ(u.hosts[1].to_string(), "MX-1.Example.COM:2525");
    EXPECT_EQ(u.hosts[2].host, "::1");
    EXPECT_EQ(u.hosts[3].to_string(), "10.0.0.1:587");
    // One host may be given as a plain string.
    r = load(with_upstream("hosts = \"smtp.example.com:25\""));
    ASSERT_TRUE(r.ok()) << dump(r);
    ASSERT_EQ(r.config.upstreams.at("x").hosts.size(), 1u);
    EXPECT_EQ(r.config.upstreams.at("x").hosts[0].port, 25);
}

TEST(ConfigLoader, UpstreamBadHosts) {
    const char* cases[] = {
        "smtp.example.com",        // no port
        "smtp.example.com:",       // empty port
        "smtp.example.com:0",      // port 0
        "smtp.example.com:65536",  // port too big
        "smtp.example.com:25x",    // not a number
        "2001:db8::1:25",          // IPv6 without brackets
        "[2001:db8::1]25",         // no colon after ]
        "[192.0.2.1]:25",          // brackets around IPv4
        "[smtp.example.com]:25",   // brackets around a name
        "bad_host-.example:25",    // not a host name
        "1.2.3.999:25",            // neither an address nor a name
        ":25",                     // no host
        "",
    };
    for (const char* host : cases) {
        SCOPED_TRACE(host);
        LoadResult r = load(with_upstream(std::string("hosts = [\"") + host + "\"]"));
        expect_error(r, "upstream.x.hosts", 7, "is not a host and port");
        EXPECT_TRUE(r.config.upstreams.at("x").hosts.empty());
    }
}

TEST(ConfigLoader, UpstreamHostsMissingOrEmpty) {
    LoadResult r = load(with_upstream("tls = \"starttls\""));
    expect_error(r, "upstream.x.hosts", 6, "missing");
    r = load(with_upstream("hosts = []"));
    expect_error(r, "upstream.x.hosts", 7, "must not be empty");
}

TEST_F(ConfigLoaderFiles, UpstreamPasswordFile) {
    std::string file = write("password", "secret\n");
    LoadResult r = load(with_upstream(std::string(kHosts) +
                                      "username = \"relay\"\npassword_file = \"" + file + "\""));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r) << "a password file is the recommended way";
    EXPECT_EQ(r.config.upstreams.at("x").username, "relay");
    EXPECT_EQ(r.config.upstreams.at("x").password, "secret") << "the line end is not part of it";

    file = write("password-crlf", "pass word\r\n");
    r = load(with_upstream(std::string(kHosts) + "username = \"relay\"\npassword_file = \"" + file +
                           "\""));
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_EQ(r.config.upstreams.at("x").password, "pass word");
}

TEST_F(ConfigLoaderFiles, UpstreamPasswordFileEmptyOrUnreadable) {
    std::string file = write("empty", "\n");
    LoadResult r = load(with_upstream(std::string(kHosts) +
                                      "username = \"relay\"\npassword_file = \"" + file + "\""));
    expect_error(r, "upstream.x.password_file", 9, "is empty");

    r = load(with_upstream(std::string(kHosts) + "username = \"relay\"\npassword_file = \"" + dir_ +
                           "/missing\""));
    expect_error(r, "upstream.x.password_file", 9, "cannot read");
}

TEST(ConfigLoader, UpstreamPasswordEnv) {
    constexpr const char* kVar = "POSTERN_UNIT_TEST_UPSTREAM_PASSWORD";
    ASSERT_EQ(::setenv(kVar, "from-env", 1), 0);
    std::string text = with_upstream(std::string(kHosts) +
                                     "username = \"relay\"\npassword_env = \"" + kVar + "\"");
    LoadResult r = load(text);
    ::unsetenv(kVar);
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    EXPECT_EQ(r.config.upstreams.at("x").password, "from-env");

    r = load(text);
    expect_error(r, "upstream.x.password_env", 9,
                 "the environment variable POSTERN_UNIT_TEST_UPSTREAM_PASSWORD is not set");
}

TEST(ConfigLoader, UpstreamInlinePasswordWarns) {
    LoadResult r =
        load(with_upstream(std::string(kHosts) + "username = \"relay\"\npassword = \"hunter2\""));
    ASSERT_TRUE(r.ok()) << dump(r);
    ConfigIssue i = issue_for(r, "upstream.x.password");
    EXPECT_TRUE(i.warning);
    EXPECT_EQ(i.line, 9u);
    EXPECT_NE(i.message.find("prefer password_file or password_env"), std::string::npos)
        << i.to_string();
    EXPECT_EQ(r.config.upstreams.at("x").password, "hunter2") << "still used";
}

TEST(ConfigLoader, UpstreamTwoPasswordSources) {
    constexpr const char* kVar = "POSTERN_UNIT_TEST_UPSTREAM_PASSWORD_2";
    ASSERT_EQ(::setenv(kVar, "from-env", 1), 0);
    LoadResult r =
        load(with_upstream(std::string(kHosts) + "username = \"relay\"\npassword_env = \"" + kVar +
                           "\"\npassword = \"hunter2\""));
    ::unsetenv(kVar);
    expect_error(r, "upstream.x", 6, "give one of password_file, password_env and password");
}

TEST(ConfigLoader, UpstreamUsernameAndPasswordGoTogether) {
    LoadResult r = load(with_upstream(std::string(kHosts) + "username = \"relay\""));
    expect_error(r, "upstream.x.username", 8,
                 "a username needs password_file, password_env or password");
    r = load(with_upstream(std::string(kHosts) + "password = \"hunter2\""));
    expect_error(r, "upstream.x.username", 6, "a password is given but no username");
}

TEST(ConfigLoader, UpstreamPlaintextMustBeMeant) {
    LoadResult r = load(with_upstream(std::string(kHosts) + "tls = \"none\""));
    expect_error(r, "upstream.x.tls", 8, "set allow_plaintext = true");
    r = load(with_upstream(std::string(kHosts) + "tls = \"none\"\nallow_plaintext = false"));
    expect_error(r, "upstream.x.tls", 8, "set allow_plaintext = true");
    r = load(with_upstream(std::string(kHosts) + "tls = \"none\"\nallow_plaintext = true"));
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
}

TEST(ConfigLoader, UpstreamUnverifiedCertificateWarns) {
    LoadResult r = load(with_upstream(std::string(kHosts) + "verify_certificate = false"));
    ASSERT_TRUE(r.ok()) << dump(r);
    ConfigIssue i = issue_for(r, "upstream.x.verify_certificate");
    EXPECT_TRUE(i.warning);
    EXPECT_EQ(i.line, 8u);
    EXPECT_NE(i.message.find("not checked"), std::string::npos) << i.to_string();
    EXPECT_FALSE(r.config.upstreams.at("x").verify_certificate);
}

TEST(ConfigLoader, UpstreamUnreadableCaFile) {
    LoadResult r =
        load(with_upstream(std::string(kHosts) + "ca_file = \"/nonexistent/postern-ca.pem\""));
    expect_error(r, "upstream.x.ca_file", 8, "cannot read \"/nonexistent/postern-ca.pem\"");
}

// ---- routes and route rules ------------------------------------------------------------------

TEST(ConfigLoader, RouteWithTwoTargets) {
    LoadResult r = load(R"([[listener]]
address = "127.0.0.1:2525"
delivery = "passthrough"

[route.default]
outbox = "out"
upstream = "smarthost"

[upstream.smarthost]
hosts = ["smtp.example.com:587"]
)");
    expect_error(r, "route.default", 7, "not both");
}

TEST(ConfigLoader, RouteUnknownUpstream) {
    LoadResult r = load(R"([[listener]]
address = "127.0.0.1:2525"
delivery = "passthrough"

[route.default]
upstream = "nowhere"
)");
    expect_error(r, "route.default.upstream", 6, "unknown upstream \"nowhere\"");
    EXPECT_NE(issue_for(r, "route.default.upstream").message.find("[upstream.nowhere]"),
              std::string::npos);
}

TEST(ConfigLoader, RouteRuleUnknownListener) {
    // A typo in a listener name would make the rule silently never match.
    LoadResult r = load(std::string(kMinimal) + R"(
[[route_rule]]
listener = ["listener0", "listner1"]
route = "default"
)");
    EXPECT_FALSE(r.ok());
    const ConfigIssue& issue = issue_for(r, "route_rule[0].listener");
    EXPECT_NE(issue.message.find("unknown listener \"listner1\""), std::string::npos) << dump(r);
}

TEST(ConfigLoader, RouteRulesRead) {
    LoadResult r = load(std::string(kMinimal) + R"(
[route.partner]
outbox = "out/partner"

[[route_rule]]
sender_domain = "example.com"
recipient_domain = ["partner.example", "*.partner.example"]
listener = "listener0"
route = "partner"

[[route_rule]]
listener = ["listener0"]
route = "default"
)");
    ASSERT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    ASSERT_EQ(r.config.route_rules.size(), 2u);
    const RouteRule& first = r.config.route_rules[0];
    EXPECT_EQ(first.sender_domains, std::vector<std::string>{"example.com"});
    EXPECT_EQ(first.recipient_domains,
              (std::vector<std::string>{"partner.example", "*.partner.example"}));
    EXPECT_EQ(first.listeners, std::vector<std::string>{"listener0"});
    EXPECT_EQ(first.route, "partner");
    const RouteRule& second = r.config.route_rules[1];
    EXPECT_TRUE(second.sender_domains.empty());
    EXPECT_TRUE(second.recipient_domains.empty());
    EXPECT_EQ(second.listeners, (std::vector<std::string>{"listener0"}));
    EXPECT_EQ(second.route, "default");
}

TEST(ConfigLoader, RouteRuleUnknownRoute) {
    LoadResult r =
        load(std::string(kMinimal) +
             "[[route_rule]]\nroute = \"default\"\n[[route_rule]]\nroute = \"nowhere\"\n");
    expect_error(r, "route_rule[1].route", 9, "unknown route \"nowhere\"");
    EXPECT_NE(issue_for(r, "route_rule[1].route").message.find("[route.nowhere]"),
              std::string::npos);
    EXPECT_EQ(errors(r).size(), 1u) << dump(r);
}

TEST(ConfigLoader, RouteRuleWithoutRoute) {
    LoadResult r =
        load(std::string(kMinimal) + "[[route_rule]]\nrecipient_domain = \"a.example\"\n");
    expect_error(r, "route_rule[0].route", 6, "missing");
}

TEST(ConfigLoader, RouteRuleBadDomainPatterns) {
    LoadResult r = load(std::string(kMinimal) + R"([[route_rule]]
sender_domain = "bad..example"
recipient_domain = ["ok.example", "*.*.example.com"]
route = "default"
)");
    expect_error(r, "route_rule[0].sender_domain", 7, "\"bad..example\" is not a domain");
    expect_error(r, "route_rule[0].recipient_domain", 8, "\"*.*.example.com\" is not a domain");
    ASSERT_EQ(r.config.route_rules.size(), 1u);
    EXPECT_EQ(r.config.route_rules[0].recipient_domains, std::vector<std::string>{"ok.example"})
        << "the good entry is kept";
}

TEST(ConfigLoader, RouteRuleNotAnArrayOfTables) {
    LoadResult r = load("route_rule = \"default\"\n" + std::string(kMinimal));
    expect_error(r, "route_rule", 1, "expected [[route_rule]] tables");
}

// ---- delivery modes and upstream routes ------------------------------------------------------

// One listener with `listener_lines` (from line 3 on) whose route "default" relays through
// [upstream.smarthost].
std::string with_upstream_route(const std::string& listener_lines) {
    return "[[listener]]\naddress = \"127.0.0.1:2525\"\n" + listener_lines +
           "\n[route.default]\nupstream = \"smarthost\"\n\n[upstream.smarthost]\n" + kHosts;
}

TEST(ConfigLoader, QueueListenerWithUpstreamRoute) {
    // The durable queue delivers through upstream routes: queue (the default) is accepted.
    LoadResult r = load(with_upstream_route("delivery = \"queue\""));
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
    r = load(with_upstream_route(""));
    EXPECT_TRUE(r.ok()) << dump(r);
}

TEST(ConfigLoader, RouteRetrySettings) {
    LoadResult r = load(R"([[listener]]
address = "127.0.0.1:2525"

[route.default]
upstream = "smarthost"
retry_min = "30s"
retry_max = "2h"
max_age = "3d"

[upstream.smarthost]
hosts = ["smtp.example.com:587"]
)");
    ASSERT_TRUE(r.ok()) << dump(r);
    const RouteConfig& route = r.config.routes.at("default");
    EXPECT_EQ(route.retry_min, std::chrono::seconds(30));
    EXPECT_EQ(route.retry_max, std::chrono::hours(2));
    EXPECT_EQ(route.max_age, std::chrono::hours(72));

    r = load(R"([[listener]]
address = "127.0.0.1:2525"

[route.default]
upstream = "smarthost"
retry_min = "10m"
retry_max = "1m"

[upstream.smarthost]
hosts = ["smtp.example.com:587"]
)");
    expect_error(r, "route.default.retry_max", 4, "below retry_min");

    // On an outbox route the retry keys do nothing: said so.
    r = load(R"([[listener]]
address = "127.0.0.1:2525"

[route.default]
outbox = "out"
max_age = "1d"
)");
    EXPECT_TRUE(r.ok()) << dump(r);
    ASSERT_EQ(r.issues.size(), 1u) << dump(r);
    EXPECT_TRUE(r.issues[0].warning);
    EXPECT_EQ(r.issues[0].key, "route.default.max_age");
}

TEST(ConfigLoader, PassthroughListenerWithUpstreamRoute) {
    LoadResult r = load(with_upstream_route("delivery = \"passthrough\""));
    EXPECT_TRUE(r.ok()) << dump(r);
    EXPECT_TRUE(r.issues.empty()) << dump(r);
}

// Listener "mx" (queue) on an outbox route, listener "submission" (passthrough), route "relay"
// through an upstream, and one [[route_rule]] with `rule_lines` selecting "relay".
std::string with_rule_to_upstream(const std::string& rule_lines) {
    return R"([[listener]]
name = "mx"
address = "127.0.0.1:2525"

[[listener]]
name = "submission"
address = "127.0.0.1:2587"
delivery = "passthrough"

[route.default]
outbox = "out"

[route.relay]
upstream = "smarthost"

[upstream.smarthost]
hosts = ["smtp.example.com:587"]

[[route_rule]]
route = "relay"
)" + rule_lines;
}

TEST(ConfigLoader, RouteRuleToUpstreamFromQueueAndPassthroughListeners) {
    // Both delivery modes may reach an upstream route through a rule.
    LoadResult r = load(with_rule_to_upstream("recipient_domain = \"example.net\"\n"));
    EXPECT_TRUE(r.ok()) << dump(r);
    r = load(with_rule_to_upstream("listener = [\"mx\"]\n"));
    EXPECT_TRUE(r.ok()) << dump(r);
}

// ---- several issues --------------------------------------------------------------------------

TEST(ConfigLoader, AllErrorsReportedInFileOrder) {
    LoadResult r = load(R"([server]
threads = "four"

[log]
level = "verbose"

[[listener]]
address = "::1:25"
max_recipient = 5
trusted_networks = ["10.0.0.1/8"]
command_timeout = 60
max_message_size = "1KiB"
route = "missing"

[upstream.smarthost]
host = "x"
)");
    EXPECT_FALSE(r.ok());
    std::vector<ConfigIssue> errs = errors(r);
    std::vector<std::string> keys;
    for (const ConfigIssue& i : errs) keys.push_back(i.key);
    std::vector<std::string> expected = {
        "server.threads",
        "log.level",
        "listener[0].address",
        "listener[0].max_recipient",
        "listener[0].trusted_networks",
        "listener[0].command_timeout",
        "listener[0].max_message_size",
        "listener[0].route",
        "upstream.smarthost.hosts",
        "upstream.smarthost.host",
    };
    EXPECT_EQ(keys, expected) << dump(r);
    // In file order, each on its own line.
    for (size_t k = 1; k < errs.size(); ++k) {
        EXPECT_LE(errs[k - 1].line, errs[k].line) << dump(r);
    }
    unsigned expected_lines[] = {2, 5, 8, 9, 10, 11, 12, 13, 15, 16};
    for (size_t k = 0; k < errs.size() && k < std::size(expected_lines); ++k) {
        EXPECT_EQ(errs[k].line, expected_lines[k]) << errs[k].to_string();
    }
}

TEST(ConfigIssue, ToString) {
    ConfigIssue e{"a.toml", 3, 7, "listener[0].address", "bad", false};
    EXPECT_EQ(e.to_string(), "a.toml:3:7: listener[0].address: bad");
    ConfigIssue w{"a.toml", 4, 1, "k", "low", true};
    EXPECT_EQ(w.to_string(), "a.toml:4:1: warning: k: low");
    ConfigIssue s{"a.toml", 1, 2, "", "syntax", false};
    EXPECT_EQ(s.to_string(), "a.toml:1:2: syntax");
}

TEST(LoadResult, OkIgnoresWarnings) {
    LoadResult r;
    EXPECT_TRUE(r.ok());
    r.issues.push_back(ConfigIssue{"f", 1, 1, "k", "w", true});
    EXPECT_TRUE(r.ok());
    r.issues.push_back(ConfigIssue{"f", 2, 1, "k", "e", false});
    EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace postern::config
