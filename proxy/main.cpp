// The postern command line: serve, check-config, queue, policy, passwd, version.
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "filters/chain_builder.hpp"
#include "proxy/admin/policy_cli.hpp"
#include "proxy/admin/queue_cli.hpp"
#include "proxy/config/config_loader.hpp"
#include "proxy/observe/log.hpp"
#include "proxy/server/server.hpp"
#include "proxy/server/user_db.hpp"

namespace {

constexpr const char* kDefaultConfig = "config/postern.toml";

constexpr const char* kUsage =
    "usage: postern <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve         run the relay\n"
    "  check-config  validate the configuration and exit\n"
    "  queue         list and manage the durable queue of the running server\n"
    "  policy test   run a Lua policy script on an envelope and a message\n"
    "  passwd        print a password hash for the [auth] users file\n"
    "  version       print the version\n"
    "\n"
    "Run 'postern <command> --help' for the options of a command.\n";

void print_command_help(const std::string& command) {
    if (command == "serve") {
        std::cout << "usage: postern serve [--config FILE]\n\n"
                     "Runs postern in the foreground, logging to standard error.\n"
                     "SIGTERM or SIGINT stop it gracefully.\n\n"
                     "  --config FILE  configuration file (default "
                  << kDefaultConfig << ")\n";
    } else if (command == "check-config") {
        std::cout << "usage: postern check-config [--config FILE]\n\n"
                     "Validates the configuration as 'serve' would. Prints every problem as\n"
                     "file:line:col: key: message and exits 1, or prints a one-line summary\n"
                     "and exits 0.\n\n"
                     "  --config FILE  configuration file (default "
                  << kDefaultConfig << ")\n";
    } else if (command == "passwd") {
        std::cout << "usage: postern passwd\n\n"
                     "Reads a password (twice, without echo, from a terminal; else one line\n"
                     "from standard input) and prints its yescrypt hash, for a line\n"
                     "NAME:HASH of the users file ([auth] users_file).\n";
    } else if (command == "queue") {
        std::cout << postern::admin::kQueueUsage;
    } else if (command == "policy") {
        std::cout << postern::admin::kPolicyUsage;
    } else {
        std::cout << "usage: postern version\n\nPrints the version of postern.\n";
    }
}

// Loads the configuration, printing its issues; nothing when it has errors. With `admin_only`
// (the queue command, which needs only [admin]) errors elsewhere are neither fatal nor
// printed: a password_env unset in the operator's shell must not stop `postern queue list`.
std::optional<postern::config::Config> load(const std::string& path, bool admin_only = false) {
    auto result = postern::config::load_config_file(path);
    if (admin_only) {
        bool usable = true;
        for (const auto& issue : result.issues) {
            // A syntax error (no key) leaves nothing to trust.
            const bool admin = issue.key == "admin" || issue.key.rfind("admin.", 0) == 0;
            if (!issue.warning && (issue.key.empty() || admin)) {
                std::cerr << issue.to_string() << "\n";
                usable = false;
            }
        }
        if (!usable) return std::nullopt;
        return std::move(result.config);
    }
    for (const auto& issue : result.issues) std::cerr << issue.to_string() << "\n";
    if (!result.ok()) return std::nullopt;
    return std::move(result.config);
}

// One line from standard input, without echo when it is a terminal.
std::optional<std::string> read_secret(const char* prompt, bool tty) {
    termios saved{};
    if (tty) {
        std::cerr << prompt << std::flush;
        ::tcgetattr(STDIN_FILENO, &saved);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    const bool ok = static_cast<bool>(std::getline(std::cin, line));
    if (tty) {
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        std::cerr << "\n";
    }
    if (!ok) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

int passwd() {
    const bool tty = ::isatty(STDIN_FILENO) != 0;
    auto first = read_secret("Password: ", tty);
    if (!first || first->empty()) {
        std::cerr << "postern passwd: no password given\n";
        return 1;
    }
    if (tty) {
        auto again = read_secret("Again: ", tty);
        if (!again || *again != *first) {
            std::cerr << "postern passwd: the passwords differ\n";
            return 1;
        }
    }
    const std::string hash = postern::server::hash_password(*first);
    if (hash.empty()) {
        std::cerr << "postern passwd: libxcrypt could not make a yescrypt hash\n";
        return 1;
    }
    std::cout << hash << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        std::cout << kUsage;
        return args.empty() ? 2 : 0;
    }
    const std::string command = args[0];
    if (command != "serve" && command != "check-config" && command != "queue" &&
        command != "passwd" && command != "version" && command != "policy") {
        std::cerr << "postern: unknown command '" << command << "'\n\n" << kUsage;
        return 2;
    }
    if (command == "policy") {
        std::vector<std::string> rest(args.begin() + 1, args.end());
        for (const std::string& a : rest) {
            if (a == "--help" || a == "-h") {
                print_command_help(command);
                return 0;
            }
        }
        return postern::admin::run_policy_command(rest);
    }
    std::string config_path = kDefaultConfig;
    std::vector<std::string> rest;  // the queue command's own words
    for (size_t i = 1; i < args.size(); ++i) {
        if (args[i] == "--help" || args[i] == "-h") {
            print_command_help(command);
            return 0;
        }
        if (command == "passwd") {
            std::cerr << "postern passwd: unexpected argument '" << args[i] << "'\n";
            print_command_help(command);
            return 2;
        }
        if (command != "version" && args[i] == "--config" && i + 1 < args.size()) {
            config_path = args[++i];
        } else if (command != "version" && args[i].rfind("--config=", 0) == 0) {
            config_path = args[i].substr(std::strlen("--config="));
        } else if (command == "queue") {
            rest.push_back(args[i]);
        } else {
            std::cerr << "postern " << command << ": unexpected argument '" << args[i] << "'\n";
            print_command_help(command);
            return 2;
        }
    }

    if (command == "version") {
        std::cout << "postern " << POSTERN_VERSION << "\n";
        return 0;
    }
    if (command == "passwd") return passwd();
    auto config = load(config_path, command == "queue");
    if (!config) {
        std::cerr << config_path << ": configuration has errors\n";
        return 1;
    }
    if (command == "queue") return postern::admin::run_queue_command(*config, rest);
    if (command == "check-config") {
        if (!config->filters.empty()) {
            // Every script is compiled and its top level run, as at start-up.
            std::vector<std::string> errors;
            if (!postern::filters::build_chain(*config, errors)) {
                for (const std::string& e : errors) std::cerr << config_path << ": " << e << "\n";
                std::cerr << config_path << ": configuration has errors\n";
                return 1;
            }
        }
        std::cout << config_path << ": ok (" << config->listeners.size() << " listener"
                  << (config->listeners.size() == 1 ? "" : "s") << ", " << config->routes.size()
                  << " route" << (config->routes.size() == 1 ? "" : "s") << ", "
                  << config->server.threads << " threads)\n";
        return 0;
    }
    postern::observe::configure_logging(config->log.level, config->log.format);
    postern::server::Server server(*config);
    return server.run();
}
