// The queue command line; see queue_cli.hpp.
#include "proxy/admin/queue_cli.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <iostream>
#include <stdexcept>

#include "proxy/admin/admin_client.hpp"
#include "proxy/admin/queue_json.hpp"

namespace postern::admin {

namespace json = boost::json;

const char* const kQueueUsage =
    "usage: postern queue <action> [--json] [--route NAME] [--config FILE]\n"
    "\n"
    "Manages the durable queue of the running postern through its [admin] listener.\n"
    "\n"
    "actions:\n"
    "  list            the queue, like mailq ('*' attempt under way, '!' held)\n"
    "  show ID         one message, recipient by recipient\n"
    "  flush [ID]      try now: one message, or every deferred one (of --route)\n"
    "  delete ID       remove a message without a notice to the sender\n"
    "  hold ID         no more attempts until released (kept across restarts)\n"
    "  release ID      undo hold; the message is tried at once\n"
    "\n"
    "  --json          print the API's JSON instead of text\n"
    "  --route NAME    list or flush only the messages of that route\n"
    "  --config FILE   configuration naming the [admin] address (default config/postern.toml)\n";

namespace {

// Percent-encodes a query value.
std::string query_value(const std::string& text) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string error_text(const std::string& body) {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    if (!ec && v.is_object()) {
        if (const json::value* e = v.as_object().if_contains("error"); e && e->is_string()) {
            return std::string(e->as_string());
        }
    }
    return body;
}

}  // namespace

int run_queue_command(const config::Config& config, const std::vector<std::string>& args) {
    std::string action;
    std::string id;
    std::string route;
    bool as_json = false;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--json") {
            as_json = true;
        } else if (a == "--route" && i + 1 < args.size()) {
            route = args[++i];
        } else if (a.rfind("--route=", 0) == 0) {
            route = a.substr(8);
        } else if (!a.empty() && a[0] == '-') {
            std::cerr << "postern queue: unexpected option '" << a << "'\n\n" << kQueueUsage;
            return 2;
        } else if (action.empty()) {
            action = a;
        } else if (id.empty()) {
            id = a;
        } else {
            std::cerr << "postern queue: unexpected argument '" << a << "'\n\n" << kQueueUsage;
            return 2;
        }
    }
    const bool needs_id =
        action == "show" || action == "delete" || action == "hold" || action == "release";
    const bool known = needs_id || action == "list" || action == "flush";
    if (!known || (needs_id && id.empty()) || (action == "list" && !id.empty())) {
        if (action.empty()) {
            std::cerr << "postern queue: which action?\n\n";
        } else if (!known) {
            std::cerr << "postern queue: unknown action '" << action << "'\n\n";
        } else {
            std::cerr << "postern queue " << action << ": "
                      << (id.empty() ? "needs a queue id" : "takes no queue id") << "\n\n";
        }
        std::cerr << kQueueUsage;
        return 2;
    }
    if (!config.admin.enabled) {
        std::cerr << "postern queue: " << config.source
                  << " has no [admin] table: the queue is managed through the admin listener "
                     "(add [admin] with address = \"127.0.0.1:8025\" and restart postern)\n";
        return 1;
    }
    std::string method = "POST";
    std::string target = "/queue";
    const std::string query = route.empty() ? "" : "?route=" + query_value(route);
    if (action == "list") {
        method = "GET";
        target += query;
    } else if (action == "show") {
        method = "GET";
        target += "/" + id;
    } else if (action == "delete") {
        method = "DELETE";
        target += "/" + id;
    } else if (action == "flush") {
        target += id.empty() ? "/flush" + query : "/" + id + "/flush";
    } else {
        target += "/" + id + "/" + action;
    }
    AdminResponse response;
    try {
        response = admin_request(config.admin, method, target);
    } catch (const std::exception& e) {
        std::cerr << "postern queue: " << e.what() << "\n";
        return 1;
    }
    if (response.status != 200) {
        std::cerr << "postern queue " << action << ": " << error_text(response.body) << " (HTTP "
                  << response.status << ")\n";
        return 1;
    }
    if (as_json) {
        std::cout << response.body;
        return 0;
    }
    boost::system::error_code ec;
    json::value v = json::parse(response.body, ec);
    if (ec || !v.is_object()) {
        std::cerr << "postern queue: the admin listener's answer is not JSON\n";
        return 1;
    }
    const json::object& o = v.as_object();
    if (action == "list") {
        std::cout << format_queue_table(v);
    } else if (action == "show") {
        std::cout << format_queue_entry(v);
    } else if (action == "flush") {
        const json::value* n = o.if_contains("flushed");
        std::cout << (n ? json::serialize(*n) : "0") << " message(s) due now\n";
    } else if (action == "delete") {
        std::cout << id << ": deleted\n";
    } else {
        const json::value* state = o.if_contains("state");
        std::cout << id << ": "
                  << (state && state->is_string() ? std::string(state->as_string()) : "?") << "\n";
    }
    return 0;
}

}  // namespace postern::admin
