// The admin listener; see admin_server.hpp.
#include "proxy/admin/admin_server.hpp"

#include <openssl/crypto.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>

#include "proxy/admin/queue_json.hpp"
#include "proxy/await_token.hpp"
#include "proxy/observe/log.hpp"
#include "proxy/queue/queue_id.hpp"
#include "proxy/queue/scheduler.hpp"

namespace postern::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using asio::ip::tcp;
using config::LogLevel;
using observe::log;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr size_t kMaxRequestBody = 64 * 1024;

struct Reply {
    http::status status = http::status::ok;
    json::value body;
};

Reply error(http::status status, std::string message) {
    json::object o;
    o["error"] = std::move(message);
    return {status, std::move(o)};
}

bool authorized(const http::request<http::string_body>& request, const std::string& token) {
    if (token.empty()) return true;
    auto it = request.find(http::field::authorization);
    if (it == request.end()) return false;
    const std::string expected = "Bearer " + token;
    const std::string_view given(it->value().data(), it->value().size());
    return given.size() == expected.size() &&
           CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

}  // namespace

// The request's path split at '/', with its query's route=.
struct Target {
    std::vector<std::string> segments;
    std::string route;
};

namespace {

std::optional<Target> parse_target(std::string_view text) {
    auto url = boost::urls::parse_origin_form(text);
    if (!url) return std::nullopt;
    Target t;
    for (auto segment : url->segments()) t.segments.push_back(std::string(segment));
    for (auto param : url->params()) {
        if (param.key == "route") t.route = std::string(param.value);
    }
    return t;
}

Reply dispatch(const http::request<http::string_body>& request, queue::Scheduler* scheduler) {
    auto target = parse_target(std::string_view(request.target().data(), request.target().size()));
    if (!target) return error(http::status::bad_request, "malformed request target");
    const auto& p = target->segments;
    const auto method = request.method();
    const auto now = std::chrono::system_clock::now();
    if (p.size() == 1 && p[0] == "healthz") {
        if (method != http::verb::get) return error(http::status::method_not_allowed, "use GET");
        json::object o;
        o["status"] = "ok";
        return {http::status::ok, std::move(o)};
    }
    if (p.empty() || p[0] != "queue" || p.size() > 3) {
        return error(http::status::not_found, "no such endpoint: see docs/queue.md");
    }
    if (p.size() == 1) {
        if (method != http::verb::get) return error(http::status::method_not_allowed, "use GET");
        std::vector<queue::QueueEntry> entries;
        if (scheduler) entries = scheduler->entries("", target->route);
        return {http::status::ok, queue_list_json(entries, now)};
    }
    if (p.size() == 2 && p[1] == "flush") {
        if (method != http::verb::post) return error(http::status::method_not_allowed, "use POST");
        json::object o;
        o["flushed"] = scheduler ? scheduler->flush("", target->route) : 0;
        return {http::status::ok, std::move(o)};
    }
    const std::string& id = p[1];
    if (!queue::is_queue_id(id)) {
        return error(http::status::bad_request, "\"" + id.substr(0, 64) + "\" is not a queue id");
    }
    const std::string missing = "no message " + id + " in the queue";
    if (!scheduler) return error(http::status::not_found, missing);
    if (p.size() == 2) {
        if (method == http::verb::get) {
            auto entries = scheduler->entries(id);
            if (entries.empty()) return error(http::status::not_found, missing);
            return {http::status::ok, queue_entry_json(entries.front(), now)};
        }
        if (method == http::verb::delete_) {
            if (!scheduler->remove(id)) return error(http::status::not_found, missing);
            json::object o;
            o["deleted"] = id;
            return {http::status::ok, std::move(o)};
        }
        return error(http::status::method_not_allowed, "use GET or DELETE");
    }
    const std::string& action = p[2];
    if (action != "flush" && action != "hold" && action != "release") {
        return error(http::status::not_found,
                     "no such action \"" + action.substr(0, 64) + "\": flush, hold or release");
    }
    if (method != http::verb::post) return error(http::status::method_not_allowed, "use POST");
    if (scheduler->entries(id).empty()) return error(http::status::not_found, missing);
    json::object o;
    o["id"] = id;
    if (action == "flush") {
        o["flushed"] = scheduler->flush(id, "");
    } else if (action == "hold") {
        scheduler->hold(id);
    } else {
        scheduler->release(id);
    }
    auto entries = scheduler->entries(id);
    o["state"] = entries.empty() ? "gone" : entries.front().state;
    return {http::status::ok, std::move(o)};
}

}  // namespace

AdminServer::AdminServer(asio::io_context& ctx, const config::AdminConfig& config,
                         queue::Scheduler* scheduler)
    : ctx_(ctx), config_(config), scheduler_(scheduler), acceptor_(ctx) {}

AdminServer::~AdminServer() = default;

boost::system::error_code AdminServer::listen() {
    boost::system::error_code ec;
    tcp::endpoint endpoint(asio::ip::make_address(config_.address.host, ec), config_.address.port);
    if (!ec) acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    return ec;
}

void AdminServer::start() {
    asio::co_spawn(ctx_, accept_loop(), asio::detached);
}

void AdminServer::stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
}

asio::awaitable<void> AdminServer::accept_loop() {
    while (acceptor_.is_open()) {
        auto [ec, socket] = co_await acceptor_.async_accept(kUseTuple);
        if (ec) {
            if (!acceptor_.is_open()) co_return;
            continue;  // e.g. out of descriptors: the next accept may work
        }
        asio::co_spawn(ctx_, serve(std::move(socket)), asio::detached);
    }
}

asio::awaitable<void> AdminServer::serve(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    std::string peer;
    {
        boost::system::error_code ec;
        auto remote = stream.socket().remote_endpoint(ec);
        if (!ec) peer = remote.address().to_string();
    }
    while (true) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(kMaxRequestBody);
        stream.expires_after(kRequestTimeout);
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, kUseTuple);
        if (ec) co_return;  // closed, timed out or not HTTP: nothing to answer
        const auto& request = parser.get();
        Reply reply;
        // A health check needs no token: it tells nothing about the mail.
        const std::string_view target(request.target().data(), request.target().size());
        const bool health = target.substr(0, target.find('?')) == "/healthz";
        if (!health && !authorized(request, config_.token)) {
            reply = error(http::status::unauthorized, "a bearer token is required (token_file)");
            log(LogLevel::kWarn, "admin_unauthorized",
                {{"client", peer}, {"target", std::string(request.target())}});
        } else {
            reply = dispatch(request, scheduler_);
        }
        http::response<http::string_body> response{reply.status, request.version()};
        response.set(http::field::server, "postern");
        response.set(http::field::content_type, "application/json");
        if (reply.status == http::status::unauthorized) {
            response.set(http::field::www_authenticate, "Bearer");
        }
        response.keep_alive(request.keep_alive());
        response.body() = json::serialize(reply.body) + "\n";
        response.prepare_payload();
        stream.expires_after(kRequestTimeout);
        auto [write_ec, written] = co_await http::async_write(stream, response, kUseTuple);
        if (write_ec || !response.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace postern::admin
