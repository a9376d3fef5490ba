// The typed, validated configuration. Built once by config_loader from one TOML file and then
// shared read-only by every thread. Key names follow ../docs/configuration.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proxy/config/cidr.hpp"
#include "proxy/smtp/data_reader.hpp"

namespace postern::config {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
enum class LogFormat { kLogfmt, kJson };
enum class RelayPolicy { kTrusted, kAuthenticated, kTrustedOrAuthenticated };
enum class DeliveryMode { kQueue, kPassthrough };
// Inbound TLS: none, STARTTLS offered (RFC 3207), STARTTLS before MAIL, or TLS from the first
// octet (RFC 8314 "submissions").
enum class ListenerTls { kNone, kStarttls, kStarttlsRequired, kImplicit };

struct ServerConfig {
    std::string hostname;  // default: the machine's host name
    unsigned threads = 0;  // resolved: 0 in the file means one per core
    std::string spool_dir = "var/spool";
    std::chrono::milliseconds shutdown_grace{std::chrono::seconds(30)};
    uint64_t min_free_space = 100ull * 1024 * 1024;  // below it MAIL gets 452 4.3.1; 0: off
};

struct LogConfig {
    LogLevel level = LogLevel::kInfo;
    LogFormat format = LogFormat::kLogfmt;
};

struct Endpoint {
    std::string host;  // an IP address literal, without brackets
    uint16_t port = 0;
    std::string to_string() const;
};

struct ListenerConfig {
    std::string name;
    Endpoint address;
    std::vector<Cidr> trusted_networks;
    RelayPolicy relay = RelayPolicy::kTrusted;
    uint64_t max_message_size = 25ull * 1024 * 1024;
    unsigned max_recipients = 100;
    unsigned max_connections = 1000;
    unsigned max_connections_per_ip = 50;
    DeliveryMode delivery = DeliveryMode::kQueue;
    std::string route = "default";
    std::chrono::milliseconds command_timeout{std::chrono::minutes(5)};
    std::chrono::milliseconds data_timeout{std::chrono::minutes(10)};
    unsigned max_errors = 20;
    smtp::BareLineEndPolicy bare_lf = smtp::BareLineEndPolicy::kReject;
    bool allow_plaintext_auth = false;  // AUTH without TLS (loopback test set-ups only)
    // An authenticated user's header From: must be among its allowed_senders too.
    bool check_header_from = false;
    ListenerTls tls = ListenerTls::kNone;
    std::string certificate;      // PEM: the server certificate, then its chain
    std::string private_key;      // PEM
    std::string min_tls_version;  // "1.2" (the default) or "1.3"
    std::string ciphers;          // OpenSSL cipher list for TLS 1.2; empty: OpenSSL's default
    // PEM CA certificates: a client certificate they verify authenticates the client as the
    // user named by its subject's CN.
    std::string client_ca;
    std::chrono::milliseconds tls_handshake_timeout{std::chrono::seconds(30)};
    // Tags every transaction of this listener starts with (tx.tags[name] == "true" in Lua),
    // e.g. "non-production".
    std::vector<std::string> tags;
};

// [upstream.NAME]: a smarthost (or several, in priority order) that postern relays through.
enum class UpstreamTls { kStarttls, kStarttlsOptional, kImplicit, kNone };
enum class UpstreamAuth { kAuto, kPlain, kLogin };

struct HostPort {
    std::string host;  // a host name or an IP address literal, without brackets
    uint16_t port = 0;
    std::string to_string() const;
};

struct UpstreamConfig {
    std::string name;
    std::vector<HostPort> hosts;  // priority order
    UpstreamTls tls = UpstreamTls::kStarttls;
    bool allow_plaintext = false;  // needed for tls = "none" and for AUTH without TLS
    bool verify_certificate = true;
    std::string ca_file;      // empty: the system store
    std::string server_name;  // SNI and name check; empty: the host being connected to
    std::string client_certificate;
    std::string client_key;
    std::string username;  // empty: no AUTH
    std::string password;  // read from password_file / password_env / password at load time
    UpstreamAuth auth = UpstreamAuth::kAuto;
    std::string helo_name;  // empty: server.hostname
    unsigned max_connections = 20;
    unsigned max_messages_per_connection = 100;
    std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
    // RFC 5321 4.5.3.2 client timeouts.
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};
    std::chrono::milliseconds greeting_timeout{std::chrono::minutes(5)};
    std::chrono::milliseconds command_timeout{std::chrono::minutes(5)};  // EHLO, MAIL, RCPT...
    std::chrono::milliseconds data_init_timeout{std::chrono::minutes(2)};
    std::chrono::milliseconds data_block_timeout{std::chrono::minutes(3)};
    std::chrono::milliseconds data_done_timeout{std::chrono::minutes(10)};
    std::chrono::milliseconds host_down_time{std::chrono::seconds(30)};  // failover back-off
};

struct RouteConfig {
    std::string name;
    std::string outbox;    // directory receiving <queueid>.eml and <queueid>.json, or
    std::string upstream;  // the [upstream.NAME] to relay through
    // Queue mode through the upstream: exponential backoff between retry_min and retry_max,
    // then failure after max_age.
    std::chrono::milliseconds retry_min{std::chrono::minutes(1)};
    std::chrono::milliseconds retry_max{std::chrono::hours(1)};
    std::chrono::milliseconds max_age{std::chrono::hours(24 * 5)};
    // A "delayed" notice to the sender once a message has waited this long; 0: none.
    std::chrono::milliseconds delay_warning{0};
};

// [[route_rule]]: the first rule whose every given condition matches picks the route; a list
// matches when any entry does. Domains match exactly (case-insensitively) or, written
// "*.example.com", any subdomain of example.com.
struct RouteRule {
    std::vector<std::string> sender_domains;
    std::vector<std::string> recipient_domains;
    std::vector<std::string> listeners;
    std::string route;
};

// [auth]: the users who may AUTH (RFC 4954), and what a failed login costs.
struct AuthConfig {
    bool enabled = false;    // the [auth] table is present
    std::string users_file;  // "name:crypt-hash" lines
    unsigned max_failures = 5;
    std::chrono::milliseconds failure_window{std::chrono::minutes(5)};
    std::chrono::milliseconds lockout{std::chrono::minutes(15)};
    std::chrono::milliseconds failure_delay{std::chrono::seconds(1)};  // before each 535
};

// [user.NAME]: what an authenticated user may do.
struct UserConfig {
    std::string name;
    // "a@example.com", "@example.com" (that domain), "@.example.com" (its subdomains), "<>" (the
    // null sender); empty: any sender.
    std::vector<std::string> allowed_senders;
    std::string route;        // empty: the listener's routing
    std::string quota_class;  // for the quota issue; kept, not used yet
};

// [admin]: the HTTP listener of the queue API (and, later, metrics).
struct AdminConfig {
    bool enabled = false;  // the [admin] table is present
    Endpoint address{"127.0.0.1", 8025};
    std::string token_file;  // when set, every request needs "Authorization: Bearer <token>"
    std::string token;       // read from token_file at load time
};

// [[filter]]: one entry of the filter chain, run in file order.
struct FilterConfig {
    std::string name;  // default: the type and the position ("lua1")
    std::string type;  // "lua"
    std::string script;
    std::vector<std::string> module_dirs;  // require() looks here; default: the script's dir
    bool fail_open = false;                // on_error = "continue" (default "tempfail")
    std::chrono::milliseconds timeout{std::chrono::seconds(1)};  // per hook call
    uint64_t memory_limit = 64ull * 1024 * 1024;                 // per Lua state
    uint64_t instruction_limit = 10'000'000;                     // per hook call
    std::string config_toml;  // the entry's `config` table, as TOML (postern.config in Lua)
};

struct Config {
    std::string source;  // the file it was read from
    ServerConfig server;
    LogConfig log;
    AdminConfig admin;
    AuthConfig auth;
    std::map<std::string, UserConfig> users;
    std::vector<ListenerConfig> listeners;
    std::map<std::string, RouteConfig> routes;
    std::map<std::string, UpstreamConfig> upstreams;
    std::vector<RouteRule> route_rules;
    std::vector<FilterConfig> filters;
};

}  // namespace postern::config
