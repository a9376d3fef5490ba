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

struct ServerConfig {
    std::string hostname;  // default: the machine's host name
    unsigned threads = 0;  // resolved: 0 in the file means one per core
    std::string spool_dir = "var/spool";
    std::chrono::milliseconds shutdown_grace{std::chrono::seconds(30)};
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
};

struct RouteConfig {
    std::string name;
    std::string outbox;  // directory receiving <queueid>.eml and <queueid>.json
};

struct Config {
    std::string source;  // the file it was read from
    ServerConfig server;
    LogConfig log;
    std::vector<ListenerConfig> listeners;
    std::map<std::string, RouteConfig> routes;
};

}  // namespace postern::config
