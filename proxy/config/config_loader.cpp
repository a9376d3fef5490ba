// TOML -> Config; see config_loader.hpp. The walker checks every table against the keys it knows
// and converts each value, collecting issues instead of stopping at the first.
#include "proxy/config/config_loader.hpp"

#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "proxy/config/tls_files.hpp"
#include "proxy/config/units.hpp"
#include "proxy/server/user_db.hpp"
#include "proxy/smtp/address.hpp"

namespace postern::config {
namespace {

// Keys of sections that later versions of postern read (DESIGN.md); reported as unsupported
// rather than unknown so that the message says what is going on.
const std::set<std::string> kNotYetSupported = {"quota"};

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t cur = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1] ? 1 : 0)});
            prev = cur;
        }
    }
    return row[b.size()];
}

template <typename E>
struct EnumName {
    std::string_view name;
    E value;
};

class Walker {
  public:
    explicit Walker(std::string file) : file_(std::move(file)) {}

    std::vector<ConfigIssue> issues;

    void error(const toml::source_region& where, const std::string& key, std::string message) {
        add(where, key, std::move(message), false);
    }
    void warn(const toml::source_region& where, const std::string& key, std::string message) {
        add(where, key, std::move(message), true);
    }

    // Reports keys of `table` not in `known`, with the closest known key as a suggestion.
    void check_keys(const toml::table& table, const std::string& path,
                    const std::vector<std::string_view>& known) {
        for (auto&& [key, node] : table) {
            std::string_view k = key.str();
            if (std::find(known.begin(), known.end(), k) != known.end()) continue;
            std::string message = "unknown key";
            std::string_view best;
            size_t best_distance = 3;
            for (std::string_view candidate : known) {
                size_t d = edit_distance(k, candidate);
                if (d < best_distance) {
                    best_distance = d;
                    best = candidate;
                }
            }
            if (!best.empty()) message += " (did you mean \"" + std::string(best) + "\"?)";
            error(key.source(), join(path, k), message);
        }
    }

    bool get_string(const toml::table& t, std::string_view key, const std::string& path,
                    std::string& out) {
        const toml::node* node = t.get(key);
        if (!node) return false;
        if (auto s = node->value<std::string>(); s && node->is_string()) {
            out = *s;
            return true;
        }
        error(node->source(), join(path, key), "expected a string");
        return false;
    }

    // True when the key is there and is true or false (then in `out`).
    bool get_bool(const toml::table& t, std::string_view key, const std::string& path, bool& out) {
        const toml::node* node = t.get(key);
        if (!node) return false;
        if (auto b = node->value<bool>(); b && node->is_boolean()) {
            out = *b;
            return true;
        }
        error(node->source(), join(path, key), "expected true or false");
        return false;
    }

    bool get_uint(const toml::table& t, std::string_view key, const std::string& path,
                  unsigned& out, unsigned min, unsigned max) {
        const toml::node* node = t.get(key);
        if (!node) return false;
        if (!node->is_integer()) {
            error(node->source(), join(path, key), "expected a whole number");
            return false;
        }
        int64_t v = node->as_integer()->get();
        if (v < static_cast<int64_t>(min) || v > static_cast<int64_t>(max)) {
            error(node->source(), join(path, key),
                  "must be between " + std::to_string(min) + " and " + std::to_string(max));
            return false;
        }
        out = static_cast<unsigned>(v);
        return true;
    }

    bool get_size(const toml::table& t, std::string_view key, const std::string& path,
                  uint64_t& out, uint64_t min) {
        const toml::node* node = t.get(key);
        if (!node) return false;
        std::optional<uint64_t> size;
        if (node->is_integer() && node->as_integer()->get() >= 0) {
            size = static_cast<uint64_t>(node->as_integer()->get());
        } else if (node->is_string()) {
            size = parse_size(node->as_string()->get());
        }
        if (!size) {
            error(node->source(), join(path, key),
                  "expected a size such as \"25MiB\", \"512KB\" or a number of bytes");
            return false;
        }
        if (*size < min) {
            error(node->source(), join(path, key),
                  "must be at least " + std::to_string(min) + " bytes");
            return false;
        }
        out = *size;
        return true;
    }

    bool get_duration(const toml::table& t, std::string_view key, const std::string& path,
                      std::chrono::milliseconds& out) {
        const toml::node* node = t.get(key);
        if (!node) return false;
        std::optional<std::chrono::milliseconds> d;
        if (node->is_string()) d = parse_duration(node->as_string()->get());
        constexpr auto kMaxDuration = std::chrono::hours(24 * 365);
        if (d && *d > kMaxDuration) {
            error(node->source(), join(path, key), "must be at most 365d");
            return false;
        }
        if (!d || d->count() == 0) {
            error(node->source(), join(path, key),
                  "expected a duration with a unit, such as \"30s\", \"5m\", \"1h\" or \"500ms\"");
            return false;
        }
        out = *d;
        return true;
    }

    template <typename E>
    bool get_enum(const toml::table& t, std::string_view key, const std::string& path, E& out,
                  const std::vector<EnumName<E>>& names) {
        std::string value;
        if (!get_string(t, key, path, value)) return false;
        for (const auto& n : names) {
            if (n.name == value) {
                out = n.value;
                return true;
            }
        }
        std::string choices;
        for (const auto& n : names) choices += (choices.empty() ? "" : " | ") + std::string(n.name);
        error(t.get(key)->source(), join(path, key), "\"" + value + "\" is not one of " + choices);
        return false;
    }

    static std::string join(const std::string& path, std::string_view key) {
        return path.empty() ? std::string(key) : path + "." + std::string(key);
    }

  private:
    void add(const toml::source_region& where, const std::string& key, std::string message,
             bool warning) {
        issues.push_back(ConfigIssue{file_, static_cast<unsigned>(where.begin.line),
                                     static_cast<unsigned>(where.begin.column), key,
                                     std::move(message), warning});
    }

    std::string file_;
};

// "host:port" with a host name or IPv4 literal, or "[v6]:port".
std::optional<HostPort> parse_host_port(std::string_view text) {
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        if (!IpAddress::parse(host) || host.find(':') == std::string_view::npos) {
            return std::nullopt;
        }
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs [ ]
        if (!IpAddress::parse(host) && !smtp::is_valid_domain(host, false)) return std::nullopt;
    }
    unsigned p = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return std::nullopt;
        p = p * 10 + static_cast<unsigned>(c - '0');
        if (p > 65535) return std::nullopt;
    }
    if (port.empty() || p == 0) return std::nullopt;
    return HostPort{std::string(host), static_cast<uint16_t>(p)};
}

// A listener address: as parse_host_port, but the host must be an IP address literal.
std::optional<Endpoint> parse_endpoint(std::string_view text) {
    auto hp = parse_host_port(text);
    if (!hp || !IpAddress::parse(hp->host)) return std::nullopt;
    return Endpoint{hp->host, hp->port};
}

std::string default_hostname() {
    char buf[HOST_NAME_MAX + 1] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

void read_server(Walker& w, const toml::table& t, ServerConfig& s) {
    w.check_keys(t, "server",
                 {"hostname", "threads", "spool_dir", "shutdown_grace", "min_free_space"});
    w.get_size(t, "min_free_space", "server", s.min_free_space, 0);
    if (w.get_string(t, "hostname", "server", s.hostname) &&
        !smtp::is_valid_domain(s.hostname, false)) {
        w.error(t.get("hostname")->source(), "server.hostname",
                "\"" + s.hostname + "\" is not a valid host name");
    }
    w.get_uint(t, "threads", "server", s.threads, 0, 256);
    if (w.get_string(t, "spool_dir", "server", s.spool_dir) && s.spool_dir.empty()) {
        w.error(t.get("spool_dir")->source(), "server.spool_dir", "must not be empty");
    }
    w.get_duration(t, "shutdown_grace", "server", s.shutdown_grace);
}

std::string read_secret_file(const std::string& file, std::string& error);

void read_admin(Walker& w, const toml::table& t, AdminConfig& a) {
    a.enabled = true;
    w.check_keys(t, "admin", {"address", "token_file"});
    std::string address;
    if (w.get_string(t, "address", "admin", address)) {
        if (auto e = parse_endpoint(address)) {
            a.address = *e;
        } else {
            w.error(t.get("address")->source(), "admin.address",
                    "\"" + address +
                        "\" is not an IP address and port such as \"127.0.0.1:8025\" or "
                        "\"[::1]:8025\"");
        }
    }
    if (w.get_string(t, "token_file", "admin", a.token_file)) {
        std::string problem;
        a.token = read_secret_file(a.token_file, problem);
        if (!problem.empty()) w.error(t.get("token_file")->source(), "admin.token_file", problem);
    }
    auto ip = IpAddress::parse(a.address.host);
    const bool loopback =
        ip && (Cidr::parse("127.0.0.0/8")->contains(*ip) || Cidr::parse("::1/128")->contains(*ip));
    if (!loopback && a.token_file.empty()) {
        w.error(t.source(), "admin.token_file",
                "the admin address " + a.address.to_string() +
                    " is not loopback: give token_file so that requests need a bearer token");
    }
}

void get_string_list(Walker& w, const toml::table& t, std::string_view key, const std::string& path,
                     std::vector<std::string>& out,
                     const std::function<std::optional<std::string>(const std::string&)>& valid);

void read_auth(Walker& w, const toml::table& t, AuthConfig& a) {
    a.enabled = true;
    w.check_keys(t, "auth",
                 {"users_file", "max_failures", "failure_window", "lockout", "failure_delay"});
    if (!w.get_string(t, "users_file", "auth", a.users_file) && !t.get("users_file")) {
        w.error(t.source(), "auth.users_file", "missing: the file of name:hash lines");
    }
    w.get_uint(t, "max_failures", "auth", a.max_failures, 1, 1000);
    w.get_duration(t, "failure_window", "auth", a.failure_window);
    w.get_duration(t, "lockout", "auth", a.lockout);
    if (const toml::node* n = t.get("failure_delay")) {
        // "0s" turns the delay off (tests); get_duration refuses zero.
        if (n->is_string() && n->as_string()->get() == "0s") {
            a.failure_delay = std::chrono::milliseconds(0);
        } else {
            w.get_duration(t, "failure_delay", "auth", a.failure_delay);
        }
    }
}

void read_user(Walker& w, const toml::table& t, const std::string& path, UserConfig& u) {
    w.check_keys(t, path, {"allowed_senders", "route", "quota_class"});
    get_string_list(w, t, "allowed_senders", path, u.allowed_senders,
                    [](const std::string& entry) { return server::check_allowed_sender(entry); });
    w.get_string(t, "route", path, u.route);
    w.get_string(t, "quota_class", path, u.quota_class);
}

void read_log(Walker& w, const toml::table& t, LogConfig& l) {
    w.check_keys(t, "log", {"level", "format"});
    w.get_enum<LogLevel>(t, "level", "log", l.level,
                         {{"debug", LogLevel::kDebug},
                          {"info", LogLevel::kInfo},
                          {"warn", LogLevel::kWarn},
                          {"error", LogLevel::kError}});
    w.get_enum<LogFormat>(t, "format", "log", l.format,
                          {{"logfmt", LogFormat::kLogfmt}, {"json", LogFormat::kJson}});
}

void read_listener_tls(Walker& w, const toml::table& t, const std::string& path,
                       ListenerConfig& l) {
    w.get_enum<ListenerTls>(t, "tls", path, l.tls,
                            {{"none", ListenerTls::kNone},
                             {"starttls", ListenerTls::kStarttls},
                             {"starttls_required", ListenerTls::kStarttlsRequired},
                             {"implicit", ListenerTls::kImplicit}});
    const bool has_cert = w.get_string(t, "certificate", path, l.certificate);
    const bool has_key = w.get_string(t, "private_key", path, l.private_key);
    if (w.get_string(t, "min_tls_version", path, l.min_tls_version) && l.min_tls_version != "1.2" &&
        l.min_tls_version != "1.3") {
        w.error(
            t.get("min_tls_version")->source(), path + ".min_tls_version",
            "\"" + l.min_tls_version + "\" is not one of 1.2 | 1.3 (older versions are unsafe)");
    }
    w.get_string(t, "ciphers", path, l.ciphers);
    w.get_string(t, "client_ca", path, l.client_ca);
    w.get_duration(t, "tls_handshake_timeout", path, l.tls_handshake_timeout);
    if (l.tls == ListenerTls::kNone) {
        for (std::string_view key : {"certificate", "private_key", "min_tls_version", "ciphers",
                                     "client_ca", "tls_handshake_timeout"}) {
            if (t.get(key)) {
                w.warn(t.get(key)->source(), Walker::join(path, key),
                       "not used: the listener has no tls (\"starttls\", \"starttls_required\" "
                       "or \"implicit\")");
            }
        }
        return;
    }
    if (!has_cert || !has_key) {
        w.error(t.get("tls")->source(), path + (has_cert ? ".private_key" : ".certificate"),
                "tls needs certificate and private_key (PEM files)");
        return;
    }
    std::string problem;
    if (!make_server_tls_context(l, problem)) {
        const toml::node* where = t.get("certificate");
        if (problem.find("private key") != std::string::npos) where = t.get("private_key");
        if (problem.find("cipher") != std::string::npos && t.get("ciphers"))
            where = t.get("ciphers");
        if (problem.find("client CA") != std::string::npos) where = t.get("client_ca");
        w.error(where->source(), path + ".tls", problem);
    }
}

void read_listener(Walker& w, const toml::table& t, const std::string& path, ListenerConfig& l) {
    w.check_keys(t, path,
                 {"name",
                  "address",
                  "trusted_networks",
                  "relay",
                  "max_message_size",
                  "max_recipients",
                  "max_connections",
                  "max_connections_per_ip",
                  "delivery",
                  "route",
                  "command_timeout",
                  "data_timeout",
                  "max_errors",
                  "bare_lf",
                  "allow_plaintext_auth",
                  "check_header_from",
                  "tls",
                  "certificate",
                  "private_key",
                  "min_tls_version",
                  "ciphers",
                  "client_ca",
                  "tls_handshake_timeout",
                  "tags"});
    w.get_string(t, "name", path, l.name);
    std::string address;
    if (w.get_string(t, "address", path, address)) {
        auto e = parse_endpoint(address);
        if (!e) {
            w.error(t.get("address")->source(), path + ".address",
                    "\"" + address +
                        "\" is not an IP address and port such as "
                        "\"127.0.0.1:2525\" or \"[::1]:2525\"");
        } else {
            l.address = *e;
        }
    } else if (!t.get("address")) {
        w.error(t.source(), path + ".address", "missing: every listener needs an address");
    }
    if (const toml::node* node = t.get("trusted_networks")) {
        l.trusted_networks.clear();
        if (const toml::array* arr = node->as_array()) {
            for (const toml::node& item : *arr) {
                auto s = item.value<std::string>();
                auto cidr = (s && item.is_string()) ? Cidr::parse(*s) : std::nullopt;
                if (!cidr) {
                    w.error(item.source(), path + ".trusted_networks",
                            (s ? "\"" + *s + "\"" : std::string("value")) +
                                " is not a network such as \"10.0.0.0/8\" or \"::1/128\" "
                                "(host bits must be zero)");
                } else {
                    l.trusted_networks.push_back(*cidr);
                }
            }
        } else {
            w.error(node->source(), path + ".trusted_networks", "expected an array of networks");
        }
    }
    w.get_enum<RelayPolicy>(t, "relay", path, l.relay,
                            {{"trusted", RelayPolicy::kTrusted},
                             {"authenticated", RelayPolicy::kAuthenticated},
                             {"trusted_or_authenticated", RelayPolicy::kTrustedOrAuthenticated}});
    // RFC 5321 4.5.3.1.7: at least 64K octets of message content.
    w.get_size(t, "max_message_size", path, l.max_message_size, 64 * 1024);
    if (w.get_uint(t, "max_recipients", path, l.max_recipients, 1, 1000000) &&
        l.max_recipients < 100) {
        w.warn(t.get("max_recipients")->source(), path + ".max_recipients",
               "below the 100 recipients RFC 5321 4.5.3.1.8 asks servers to accept");
    }
    w.get_uint(t, "max_connections", path, l.max_connections, 1, 1000000);
    w.get_uint(t, "max_connections_per_ip", path, l.max_connections_per_ip, 1, 1000000);
    w.get_enum<DeliveryMode>(
        t, "delivery", path, l.delivery,
        {{"queue", DeliveryMode::kQueue}, {"passthrough", DeliveryMode::kPassthrough}});
    w.get_string(t, "route", path, l.route);
    if (w.get_duration(t, "command_timeout", path, l.command_timeout) &&
        l.command_timeout < std::chrono::minutes(5)) {
        w.warn(t.get("command_timeout")->source(), path + ".command_timeout",
               "below the 5 minutes RFC 5321 4.5.3.2.7 recommends");
    }
    if (w.get_duration(t, "data_timeout", path, l.data_timeout) &&
        l.data_timeout < std::chrono::minutes(10)) {
        w.warn(t.get("data_timeout")->source(), path + ".data_timeout",
               "below the 10 minutes RFC 5321 4.5.3.2.6 recommends");
    }
    w.get_uint(t, "max_errors", path, l.max_errors, 1, 100000);
    w.get_bool(t, "check_header_from", path, l.check_header_from);
    if (w.get_bool(t, "allow_plaintext_auth", path, l.allow_plaintext_auth) &&
        l.allow_plaintext_auth) {
        w.warn(t.get("allow_plaintext_auth")->source(), path + ".allow_plaintext_auth",
               "passwords may cross the network in clear: for loopback tests only");
    }
    w.get_enum<smtp::BareLineEndPolicy>(t, "bare_lf", path, l.bare_lf,
                                        {{"reject", smtp::BareLineEndPolicy::kReject},
                                         {"normalize", smtp::BareLineEndPolicy::kNormalize}});
    const toml::node* tags = t.get("tags");
    const bool no_tags = tags && tags->is_array() && tags->as_array()->empty();  // the default
    if (!no_tags)
        get_string_list(w, t, "tags", path, l.tags, [](const std::string& tag) {
            return tag.empty() || tag.size() > 64
                       ? std::optional<std::string>("is not a tag of 1 to 64 characters")
                       : std::nullopt;
        });
    read_listener_tls(w, t, path, l);
}

void read_route(Walker& w, const toml::table& t, const std::string& path, RouteConfig& r) {
    w.check_keys(t, path,
                 {"outbox", "upstream", "retry_min", "retry_max", "max_age", "delay_warning"});
    w.get_duration(t, "retry_min", path, r.retry_min);
    w.get_duration(t, "retry_max", path, r.retry_max);
    w.get_duration(t, "max_age", path, r.max_age);
    if (r.retry_max < r.retry_min) {
        w.error(t.source(), path + ".retry_max", "must not be below retry_min");
    }
    if (w.get_duration(t, "delay_warning", path, r.delay_warning) && r.delay_warning >= r.max_age) {
        w.warn(t.get("delay_warning")->source(), path + ".delay_warning",
               "not below max_age: the message expires before any delay warning");
    }
    for (std::string_view key : {"retry_min", "retry_max", "max_age", "delay_warning"}) {
        if (t.get(key) && !t.get("upstream")) {
            w.warn(t.get(key)->source(), Walker::join(path, key),
                   "only used by routes with an upstream");
        }
    }
    bool has_outbox = w.get_string(t, "outbox", path, r.outbox);
    bool has_upstream = w.get_string(t, "upstream", path, r.upstream);
    if (has_outbox && r.outbox.empty()) {
        w.error(t.get("outbox")->source(), path + ".outbox", "must not be empty");
    }
    if (has_outbox && has_upstream) {
        w.error(t.get("upstream")->source(), path,
                "a route has one target: outbox = \"DIR\" or upstream = \"NAME\", not both");
    } else if (!t.get("outbox") && !t.get("upstream")) {
        w.error(t.source(), path,
                "a route needs a target: outbox = \"DIR\" or upstream = \"NAME\"");
    }
}

// A string or an array of strings, each checked by `valid`.
void get_string_list(Walker& w, const toml::table& t, std::string_view key, const std::string& path,
                     std::vector<std::string>& out,
                     const std::function<std::optional<std::string>(const std::string&)>& valid) {
    const toml::node* node = t.get(key);
    if (!node) return;
    std::vector<const toml::node*> items;
    if (node->is_string()) {
        items.push_back(node);
    } else if (const toml::array* arr = node->as_array()) {
        for (const toml::node& item : *arr) items.push_back(&item);
        if (arr->empty()) w.error(node->source(), Walker::join(path, key), "must not be empty");
    } else {
        w.error(node->source(), Walker::join(path, key),
                "expected a string or an array of strings");
        return;
    }
    for (const toml::node* item : items) {
        auto s = item->value<std::string>();
        if (!s || !item->is_string()) {
            w.error(item->source(), Walker::join(path, key), "expected a string");
            continue;
        }
        if (auto problem = valid(*s)) {
            w.error(item->source(), Walker::join(path, key), "\"" + *s + "\" " + *problem);
            continue;
        }
        out.push_back(*s);
    }
}

std::optional<std::string> check_domain_pattern(const std::string& pattern) {
    std::string_view d = pattern;
    if (d.substr(0, 2) == "*.") d.remove_prefix(2);
    if (!smtp::is_valid_domain(d, true)) {
        return "is not a domain such as \"example.com\" or \"*.example.com\"";
    }
    return std::nullopt;
}

void read_route_rule(Walker& w, const toml::table& t, const std::string& path, RouteRule& r) {
    w.check_keys(t, path, {"sender_domain", "recipient_domain", "listener", "route"});
    get_string_list(w, t, "sender_domain", path, r.sender_domains, check_domain_pattern);
    get_string_list(w, t, "recipient_domain", path, r.recipient_domains, check_domain_pattern);
    get_string_list(w, t, "listener", path, r.listeners,
                    [](const std::string&) { return std::optional<std::string>(); });
    if (!w.get_string(t, "route", path, r.route) && !t.get("route")) {
        w.error(t.source(), path + ".route", "missing: a route_rule needs the route it selects");
    }
}

std::string read_secret_file(const std::string& file, std::string& error) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        error = "cannot read \"" + file + "\": " + std::strerror(errno);
        return {};
    }
    std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) error = "\"" + file + "\" is empty";
    return secret;
}

void read_upstream(Walker& w, const toml::table& t, const std::string& path, UpstreamConfig& u) {
    w.check_keys(t, path,
                 {"hosts",
                  "tls",
                  "allow_plaintext",
                  "verify_certificate",
                  "ca_file",
                  "server_name",
                  "client_certificate",
                  "client_key",
                  "username",
                  "password_file",
                  "password_env",
                  "password",
                  "auth",
                  "helo_name",
                  "max_connections",
                  "max_messages_per_connection",
                  "idle_timeout",
                  "connect_timeout",
                  "greeting_timeout",
                  "command_timeout",
                  "data_init_timeout",
                  "data_block_timeout",
                  "data_done_timeout",
                  "host_down_time"});
    std::vector<std::string> hosts;
    get_string_list(w, t, "hosts", path, hosts, [&](const std::string& h) {
        if (auto hp = parse_host_port(h)) {
            u.hosts.push_back(*hp);
            return std::optional<std::string>();
        }
        return std::optional<std::string>(
            "is not a host and port such as \"smtp.example.com:587\", \"192.0.2.1:25\" or "
            "\"[2001:db8::1]:25\"");
    });
    if (!t.get("hosts")) w.error(t.source(), path + ".hosts", "missing: list the smarthosts");
    w.get_enum<UpstreamTls>(t, "tls", path, u.tls,
                            {{"starttls", UpstreamTls::kStarttls},
                             {"starttls_optional", UpstreamTls::kStarttlsOptional},
                             {"implicit", UpstreamTls::kImplicit},
                             {"none", UpstreamTls::kNone}});
    w.get_bool(t, "allow_plaintext", path, u.allow_plaintext);
    if (w.get_bool(t, "verify_certificate", path, u.verify_certificate) && !u.verify_certificate) {
        w.warn(t.get("verify_certificate")->source(), path + ".verify_certificate",
               "the smarthost's certificate is not checked: anyone on the path can "
               "read the mail and the password");
    }
    if (u.tls == UpstreamTls::kNone && !u.allow_plaintext) {
        w.error(t.get("tls")->source(), path + ".tls",
                "tls = \"none\" sends mail in plaintext: set allow_plaintext = true to mean it");
    }
    auto readable_file = [&](std::string_view key, std::string& out) {
        if (!w.get_string(t, key, path, out)) return;
        if (::access(out.c_str(), R_OK) != 0) {
            w.error(t.get(key)->source(), Walker::join(path, key),
                    "cannot read \"" + out + "\": " + std::strerror(errno));
        }
    };
    readable_file("ca_file", u.ca_file);
    readable_file("client_certificate", u.client_certificate);
    readable_file("client_key", u.client_key);
    if (u.client_certificate.empty() != u.client_key.empty()) {
        w.error(t.source(), path + ".client_key", "client_certificate and client_key go together");
    }
    if (w.get_string(t, "server_name", path, u.server_name) &&
        !smtp::is_valid_domain(u.server_name, false) && !IpAddress::parse(u.server_name)) {
        w.error(t.get("server_name")->source(), path + ".server_name",
                "\"" + u.server_name + "\" is not a host name");
    }
    w.get_string(t, "username", path, u.username);
    int password_sources = 0;
    std::string value;
    if (w.get_string(t, "password_file", path, value)) {
        ++password_sources;
        std::string problem;
        u.password = read_secret_file(value, problem);
        if (!problem.empty())
            w.error(t.get("password_file")->source(), path + ".password_file", problem);
    }
    if (w.get_string(t, "password_env", path, value)) {
        ++password_sources;
        const char* env = std::getenv(value.c_str());
        if (!env || !*env) {
            w.error(t.get("password_env")->source(), path + ".password_env",
                    "the environment variable " + value + " is not set");
        } else {
            u.password = env;
        }
    }
    if (w.get_string(t, "password", path, u.password)) {
        ++password_sources;
        w.warn(t.get("password")->source(), path + ".password",
               "a password in the configuration file: prefer password_file or password_env");
    }
    if (password_sources > 1) {
        w.error(t.source(), path, "give one of password_file, password_env and password");
    }
    if (!u.username.empty() && password_sources == 0) {
        w.error(t.get("username")->source(), path + ".username",
                "a username needs password_file, password_env or password");
    }
    if (u.username.empty() && password_sources > 0) {
        w.error(t.source(), path + ".username", "a password is given but no username");
    }
    if (u.username.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos ||
        u.password.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
        w.error(t.source(), path, "username and password must not contain NUL, CR or LF");
    }
    w.get_enum<UpstreamAuth>(t, "auth", path, u.auth,
                             {{"auto", UpstreamAuth::kAuto},
                              {"plain", UpstreamAuth::kPlain},
                              {"login", UpstreamAuth::kLogin}});
    if (w.get_string(t, "helo_name", path, u.helo_name) &&
        !smtp::is_valid_domain(u.helo_name, false)) {
        w.error(t.get("helo_name")->source(), path + ".helo_name",
                "\"" + u.helo_name + "\" is not a valid host name");
    }
    w.get_uint(t, "max_connections", path, u.max_connections, 1, 10000);
    w.get_uint(t, "max_messages_per_connection", path, u.max_messages_per_connection, 1, 1000000);
    w.get_duration(t, "idle_timeout", path, u.idle_timeout);
    w.get_duration(t, "connect_timeout", path, u.connect_timeout);
    w.get_duration(t, "greeting_timeout", path, u.greeting_timeout);
    w.get_duration(t, "command_timeout", path, u.command_timeout);
    w.get_duration(t, "data_init_timeout", path, u.data_init_timeout);
    w.get_duration(t, "data_block_timeout", path, u.data_block_timeout);
    w.get_duration(t, "data_done_timeout", path, u.data_done_timeout);
    w.get_duration(t, "host_down_time", path, u.host_down_time);
}

// The routes a listener's messages can take: its own and those of the rules that may apply.
std::set<std::string> reachable_routes(const Config& c, const ListenerConfig& l) {
    std::set<std::string> routes = {l.route};
    for (const RouteRule& r : c.route_rules) {
        if (r.listeners.empty() ||
            std::find(r.listeners.begin(), r.listeners.end(), l.name) != r.listeners.end()) {
            routes.insert(r.route);
        }
    }
    return routes;
}

void read_filter(Walker& w, const toml::table& t, const std::string& path, FilterConfig& f) {
    w.check_keys(t, path,
                 {"type", "name", "script", "module_dirs", "on_error", "timeout", "memory_limit",
                  "instruction_limit", "config"});
    w.get_string(t, "name", path, f.name);
    if (!w.get_string(t, "type", path, f.type) && !t.get("type")) {
        w.error(t.source(), path + ".type", "missing: a filter needs a type (\"lua\")");
    } else if (!f.type.empty() && f.type != "lua") {
        const bool later = f.type == "spf" || f.type == "dkim_verify" || f.type == "dkim_sign" ||
                           f.type == "quota";
        w.error(t.get("type")->source(), path + ".type",
                "\"" + f.type + "\" " +
                    (later ? std::string("is not supported by this version of postern yet")
                           : std::string("is not a filter type (lua)")));
    }
    if (!w.get_string(t, "script", path, f.script) && !t.get("script") && f.type == "lua") {
        w.error(t.source(), path + ".script", "missing: a lua filter needs its script");
    }
    get_string_list(w, t, "module_dirs", path, f.module_dirs,
                    [](const std::string&) { return std::optional<std::string>(); });
    std::string on_error;
    if (w.get_string(t, "on_error", path, on_error)) {
        if (on_error == "continue") {
            f.fail_open = true;
        } else if (on_error != "tempfail") {
            w.error(t.get("on_error")->source(), path + ".on_error",
                    "\"" + on_error + "\" is not one of tempfail | continue");
        }
    }
    w.get_duration(t, "timeout", path, f.timeout);
    w.get_size(t, "memory_limit", path, f.memory_limit, 1024 * 1024);
    if (const toml::node* n = t.get("instruction_limit")) {
        if (!n->is_integer() || n->as_integer()->get() < 1000) {
            w.error(n->source(), path + ".instruction_limit", "expected a number of at least 1000");
        } else {
            f.instruction_limit = static_cast<uint64_t>(n->as_integer()->get());
        }
    }
    if (const toml::node* n = t.get("config")) {
        if (!n->is_table()) {
            w.error(n->source(), path + ".config",
                    "expected a table (postern.config in the script)");
        } else {
            // Written as a document: an inline table ("config = { ... }") would print as
            // "{ ... }", which does not parse back as one.
            toml::table copy = *n->as_table();
            copy.is_inline(false);
            std::ostringstream text;
            text << copy;
            f.config_toml = text.str();
        }
    }
}

LoadResult walk(const toml::table& root, const std::string& name) {
    LoadResult result;
    Config& c = result.config;
    c.source = name;
    Walker w(name);

    for (auto&& [key, node] : root) {
        std::string k(key.str());
        if (kNotYetSupported.count(k)) {
            w.error(key.source(), k,
                    "[" + k + "] is not supported by this version of postern yet (see README)");
        }
    }
    std::vector<std::string_view> known = {"server",     "log",   "listener", "route", "upstream",
                                           "route_rule", "admin", "auth",     "user",  "filter"};
    for (const std::string& k : kNotYetSupported) known.push_back(k);
    w.check_keys(root, "", known);

    auto table_at = [&](std::string_view key) -> const toml::table* {
        const toml::node* node = root.get(key);
        if (!node) return nullptr;
        if (!node->is_table()) {
            w.error(node->source(), std::string(key),
                    "expected a table [" + std::string(key) + "]");
            return nullptr;
        }
        return node->as_table();
    };

    if (const toml::table* t = table_at("server")) read_server(w, *t, c.server);
    if (c.server.hostname.empty()) c.server.hostname = default_hostname();
    if (const toml::table* t = table_at("log")) read_log(w, *t, c.log);
    if (const toml::table* t = table_at("admin")) read_admin(w, *t, c.admin);
    if (const toml::table* t = table_at("auth")) read_auth(w, *t, c.auth);

    if (const toml::table* routes = table_at("route")) {
        for (auto&& [key, node] : *routes) {
            std::string path = "route." + std::string(key.str());
            if (!node.is_table()) {
                w.error(node.source(), path, "expected a table [" + path + "]");
                continue;
            }
            RouteConfig r;
            r.name = std::string(key.str());
            read_route(w, *node.as_table(), path, r);
            c.routes.emplace(r.name, r);
        }
    }

    if (const toml::table* upstreams = table_at("upstream")) {
        for (auto&& [key, node] : *upstreams) {
            std::string path = "upstream." + std::string(key.str());
            if (!node.is_table()) {
                w.error(node.source(), path, "expected a table [" + path + "]");
                continue;
            }
            UpstreamConfig u;
            u.name = std::string(key.str());
            read_upstream(w, *node.as_table(), path, u);
            if (u.helo_name.empty()) u.helo_name = c.server.hostname;
            c.upstreams.emplace(u.name, u);
        }
    }
    for (auto& [name, r] : c.routes) {
        if (!r.upstream.empty() && !c.upstreams.count(r.upstream)) {
            const toml::node* where = root.at_path("route." + name + ".upstream").node();
            w.error(where ? where->source() : root.source(), "route." + name + ".upstream",
                    "unknown upstream \"" + r.upstream + "\": define it as [upstream." +
                        r.upstream + "]");
        }
    }
    if (const toml::node* rules = root.get("route_rule")) {
        if (!rules->is_array_of_tables()) {
            w.error(rules->source(), "route_rule", "expected [[route_rule]] tables");
        } else {
            size_t index = 0;
            for (const toml::node& node : *rules->as_array()) {
                std::string path = "route_rule[" + std::to_string(index++) + "]";
                RouteRule r;
                const toml::table& t = *node.as_table();
                read_route_rule(w, t, path, r);
                if (!r.route.empty() && !c.routes.count(r.route)) {
                    w.error(
                        t.get("route")->source(), path + ".route",
                        "unknown route \"" + r.route + "\": define it as [route." + r.route + "]");
                }
                c.route_rules.push_back(std::move(r));
            }
        }
    }

    if (const toml::node* filters = root.get("filter")) {
        if (!filters->is_array_of_tables()) {
            w.error(filters->source(), "filter", "expected [[filter]] tables");
        } else {
            size_t index = 0;
            std::set<std::string> filter_names;
            for (const toml::node& node : *filters->as_array()) {
                std::string path = "filter[" + std::to_string(index++) + "]";
                FilterConfig f;
                const toml::table& t = *node.as_table();
                read_filter(w, t, path, f);
                if (f.name.empty())
                    f.name = (f.type.empty() ? "filter" : f.type) + std::to_string(index);
                if (!filter_names.insert(f.name).second) {
                    w.error(t.source(), path + ".name",
                            "filter name \"" + f.name + "\" is used twice");
                }
                c.filters.push_back(std::move(f));
            }
        }
    }

    if (const toml::table* users = table_at("user")) {
        for (auto&& [key, node] : *users) {
            std::string path = "user." + std::string(key.str());
            if (!node.is_table()) {
                w.error(node.source(), path, "expected a table [" + path + "]");
                continue;
            }
            UserConfig u;
            u.name = std::string(key.str());
            const toml::table& t = *node.as_table();
            read_user(w, t, path, u);
            if (!u.route.empty() && !c.routes.count(u.route)) {
                w.error(t.get("route")->source(), path + ".route",
                        "unknown route \"" + u.route + "\": define it as [route." + u.route + "]");
            }
            c.users.emplace(u.name, std::move(u));
        }
        if (!c.auth.enabled) {
            w.error(root.get("user")->source(), "user",
                    "[user.NAME] tables need [auth] with users_file");
        }
    }
    if (c.auth.enabled && !c.auth.users_file.empty()) {
        std::string problem;
        auto db = server::UserDb::load(c, problem);
        const toml::node* where = root.at_path("auth.users_file").node();
        if (!db) {
            w.error(where->source(), "auth.users_file", problem);
        } else {
            for (const auto& [name, u] : c.users) {
                if (db->find(name)) continue;
                // Not at_path(): a user name may hold dots ("app.example").
                const toml::node* where = root.get("user")->as_table()->get(name);
                w.warn(where->source(), "user." + name,
                       "\"" + name +
                           "\" is not in the users file: it can log in only with a client "
                           "certificate (client_ca)");
            }
        }
    }

    const toml::node* listeners = root.get("listener");
    if (!listeners) {
        w.error(root.source(), "listener", "no [[listener]]: postern needs at least one");
    } else if (!listeners->is_array_of_tables()) {
        w.error(listeners->source(), "listener", "expected [[listener]] tables");
    } else {
        size_t index = 0;
        std::set<std::string> names;
        std::set<std::string> addresses;
        for (const toml::node& node : *listeners->as_array()) {
            std::string path = "listener[" + std::to_string(index) + "]";
            ListenerConfig l;
            l.trusted_networks = {*Cidr::parse("127.0.0.0/8"), *Cidr::parse("::1/128")};
            l.name = "listener" + std::to_string(index);
            const toml::table& t = *node.as_table();
            read_listener(w, t, path, l);
            if (!names.insert(l.name).second) {
                w.error(t.source(), path + ".name",
                        "listener name \"" + l.name + "\" is used twice");
            }
            if (l.address.port != 0 && !addresses.insert(l.address.to_string()).second) {
                w.error(t.source(), path + ".address",
                        l.address.to_string() + " is used by two listeners");
            }
            if (!c.routes.count(l.route)) {
                const toml::node* where = t.get("route");
                w.error(where ? where->source() : t.source(), path + ".route",
                        "unknown route \"" + l.route + "\": define it as [route." + l.route + "]");
            }
            if (l.delivery == DeliveryMode::kPassthrough && t.get("delivery")) {
                bool any_outbox = false;
                for (const std::string& route : reachable_routes(c, l)) {
                    auto it = c.routes.find(route);
                    any_outbox = any_outbox || (it != c.routes.end() && !it->second.outbox.empty());
                }
                if (any_outbox) {
                    w.warn(t.get("delivery")->source(), path + ".delivery",
                           "passthrough into an outbox route stores the message before "
                           "replying, as queue does");
                }
            }
            if (l.relay == RelayPolicy::kAuthenticated && l.tls == ListenerTls::kNone &&
                !l.allow_plaintext_auth) {
                w.warn(t.get("relay")->source(), path + ".relay",
                       "nobody can authenticate here: AUTH needs tls (or allow_plaintext_auth)");
            }
            if (l.relay != RelayPolicy::kTrusted && !c.auth.enabled) {
                const toml::node* where = t.get("relay");
                w.error(where ? where->source() : t.source(), path + ".relay",
                        "relay by authentication needs [auth] with users_file");
            }
            c.listeners.push_back(std::move(l));
            ++index;
        }
        // A rule naming a listener that does not exist would silently never match.
        if (const toml::node* rules = root.get("route_rule");
            rules && rules->is_array_of_tables()) {
            size_t r = 0;
            for (const toml::node& node : *rules->as_array()) {
                std::string path = "route_rule[" + std::to_string(r) + "]";
                for (const std::string& name : c.route_rules.at(r).listeners) {
                    if (names.count(name)) continue;
                    w.error(node.as_table()->get("listener")->source(), path + ".listener",
                            "unknown listener \"" + name + "\"");
                }
                ++r;
            }
        }
    }

    if (c.server.threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        c.server.threads = cores > 0 ? static_cast<unsigned>(cores) : 1;
    }
    std::stable_sort(w.issues.begin(), w.issues.end(), [](const auto& a, const auto& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    result.issues = std::move(w.issues);
    return result;
}

}  // namespace

std::string HostPort::to_string() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

std::string Endpoint::to_string() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

std::string ConfigIssue::to_string() const {
    std::string out = file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
    if (warning) out += "warning: ";
    if (!key.empty()) out += key + ": ";
    return out + message;
}

bool LoadResult::ok() const {
    return std::none_of(issues.begin(), issues.end(), [](const auto& i) { return !i.warning; });
}

LoadResult load_config_text(std::string_view text, const std::string& name) {
    try {
        toml::table root = toml::parse(text, std::string_view(name));
        return walk(root, name);
    } catch (const toml::parse_error& e) {
        LoadResult result;
        result.issues.push_back(ConfigIssue{name, static_cast<unsigned>(e.source().begin.line),
                                            static_cast<unsigned>(e.source().begin.column), "",
                                            std::string(e.description()), false});
        return result;
    }
}

LoadResult load_config_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        LoadResult result;
        result.issues.push_back(
            ConfigIssue{path, 0, 0, "", "cannot open the configuration file", false});
        return result;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return load_config_text(buffer.str(), path);
}

}  // namespace postern::config
