// Server start-up, accept loops and shutdown; see server.hpp.
#include "proxy/server/server.hpp"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "filters/chain_builder.hpp"
#include "filters/lua/lua_filter.hpp"
#include "proxy/admin/admin_server.hpp"
#include "proxy/await_token.hpp"
#include "proxy/config/tls_files.hpp"
#include "proxy/observe/log.hpp"
#include "proxy/queue/queue_id.hpp"
#include "proxy/server/accept.hpp"
#include "proxy/server/session.hpp"
#include "proxy/smtp/draining_read.hpp"
#include "proxy/smtp/replies.hpp"
#include "proxy/upstream/outbox.hpp"

namespace postern::server {

using config::LogLevel;
using observe::log;

namespace {

constexpr int kListenBacklog = 1024;
constexpr auto kForcedExitWait = std::chrono::seconds(5);
constexpr unsigned kAcceptsBeforeYield = 16;  // connections accepted in a row, then other work
// How often each I/O thread looks for reads and writes past their deadline: timeouts fire at
// most this late, and no timer is armed per operation.
constexpr auto kSweepInterval = std::chrono::milliseconds(200);

// From the socket's own bytes, not text: a link-local client ("fe80::1%eth0") has a scope.
config::IpAddress to_ip_address(const asio::ip::address& address) {
    config::IpAddress ip;
    auto set_v4 = [&](const asio::ip::address_v4& v4) {
        auto b = v4.to_bytes();
        ip.v4 = true;
        ip.bytes[10] = ip.bytes[11] = 0xff;
        std::memcpy(ip.bytes.data() + 12, b.data(), 4);
    };
    if (address.is_v4()) {
        set_v4(address.to_v4());
    } else if (address.to_v6().is_v4_mapped()) {
        set_v4(asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()));
    } else {
        auto b = address.to_v6().to_bytes();
        std::memcpy(ip.bytes.data(), b.data(), 16);
    }
    return ip;
}

}  // namespace

struct Worker {
    SessionRegistry registry;  // declared first: sessions still in `ctx` unregister on destruction
    upstream::PoolSet pools;   // likewise: leases still in `ctx` go back to their pool
    asio::io_context ctx{1};
};

struct ListenerState {
    ListenerState(const config::Config& config, const config::ListenerConfig& listener,
                  queue::QueueIdGenerator& ids, const upstream::RouteTable& routes,
                  const std::map<std::string, upstream::Outbox*>& outboxes)
        : limits(listener.max_connections, listener.max_connections_per_ip),
          context{config,  listener, ids,     routes,  outboxes, limits,
                  nullptr, nullptr,  nullptr, nullptr, nullptr,  nullptr} {}
    ConnectionLimits limits;
    std::unique_ptr<ListenerTls> tls;  // before `context`, which points to it
    ListenerContext context;
    // One acceptor per I/O thread on the same port (SO_REUSEPORT): the kernel spreads the
    // connections and each is served where it was accepted, with no hand-over between threads.
    std::vector<std::unique_ptr<tcp::acceptor>> acceptors;  // [i] belongs to workers[i]
};

struct Server::Impl {
    explicit Impl(const config::Config& c) : config(c), routes(c) {}
    ~Impl() {
        // What belongs to a worker's I/O context must go before the context does (workers are
        // destroyed first, below): the scheduler's timer, the acceptors and the idle upstream
        // connections.
        admin.reset();
        scheduler.reset();
        if (notifications) notifications->join();  // the last notifications run to their end
        for (auto& l : listeners) l->acceptors.clear();
        for (auto& w : workers) w->pools.close_idle();
    }

    asio::awaitable<void> accept_loop(ListenerState& listener, size_t index);
    asio::awaitable<void> run_session(tcp::socket socket, ListenerState& listener, Worker& worker,
                                      config::IpAddress client, uint16_t port);
    asio::awaitable<void> shutdown(int signal_number);
    asio::awaitable<void> sweep_deadlines(Worker& worker);
    void tell_sessions(bool force);
    void force_close(int signal_number);
    // SIGHUP: the listeners' certificates and keys are read again; a listener whose new files
    // do not load keeps the old ones (tls_reload_failed says why).
    void reload_certificates();

    const config::Config& config;
    queue::QueueIdGenerator ids;
    upstream::RouteTable routes;
    // One Outbox (one storage thread) per directory, shared by the routes that name it.
    std::map<std::string, std::unique_ptr<upstream::Outbox>> outboxes;
    std::map<std::string, upstream::Outbox*> route_targets;
    // Per upstream: TLS context and host health, shared by the pools of every worker.
    std::map<std::string, std::unique_ptr<upstream::UpstreamShared>> upstreams;
    std::unique_ptr<AuthContext> auth;      // with [auth]
    std::unique_ptr<filters::Chain> chain;  // with [[filter]]
    // Runs the delivered/failed notifications of the queue; destroyed (joined) before chain.
    std::unique_ptr<asio::thread_pool> notifications;
    // The durable queue, when a queue-mode listener can reach an upstream route.
    std::unique_ptr<queue::Spool> spool;
    std::unique_ptr<queue::Scheduler> scheduler;
    std::unique_ptr<admin::AdminServer> admin;  // on the scheduler's thread
    std::unique_ptr<StorageGuard> storage;
    std::vector<std::unique_ptr<ListenerState>> listeners;
    // Last, so destroyed first: coroutine frames left in the contexts refer to everything above.
    std::vector<std::unique_ptr<Worker>> workers;
    std::atomic<size_t> active_sessions{0};
    std::atomic<uint64_t> next_session_id{1};
    std::atomic<bool> stopping{false};  // set on the main thread, read by the accept loops
    // Main thread only:
    bool forced = false;
    std::chrono::steady_clock::time_point forced_at;
};

Server::Server(const config::Config& config) : impl_(std::make_unique<Impl>(config)) {}
Server::~Server() = default;

asio::awaitable<void> Server::Impl::run_session(tcp::socket socket, ListenerState& listener,
                                                Worker& worker, config::IpAddress client,
                                                uint16_t port) {
    uint64_t id = next_session_id++;
    try {
        Session session(std::move(socket), listener.context, worker.registry, worker.pools, id,
                        client, port);
        co_await session.run();
    } catch (const std::exception& e) {
        // The last catch of a session: it ends, the server goes on.
        log(LogLevel::kError, "session_error", {{"conn", id}, {"error", e.what()}});
    }
    --active_sessions;
}

asio::awaitable<void> Server::Impl::accept_loop(ListenerState& listener, size_t index) {
    Worker& worker = *workers[index];
    tcp::acceptor& acceptor = *listener.acceptors[index];
    unsigned accepted_in_a_row = 0;
    while (true) {
        // The peer's address comes with the connection: no getpeername() per connection.
        auto [ec, socket, remote, waited] = co_await accept_connection(acceptor);
        if (stopping || !acceptor.is_open()) co_return;
        // A listener that always has a connection waiting would keep this thread from the
        // sessions it already has: let them run now and then.
        accepted_in_a_row = waited ? 0 : accepted_in_a_row + 1;
        if (accepted_in_a_row % kAcceptsBeforeYield == kAcceptsBeforeYield - 1) {
            co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        }
        if (ec) {
            // EMFILE and friends: wait a moment rather than spin, then go on accepting.
            log(LogLevel::kWarn, "accept_failed",
                {{"listener", listener.context.listener.name}, {"error", ec.message()}});
            asio::steady_timer pause(co_await asio::this_coro::executor,
                                     std::chrono::milliseconds(100));
            co_await pause.async_wait(kUseTuple);
            continue;
        }
        const config::IpAddress client_address = to_ip_address(remote.address());
        const config::IpAddress* client = &client_address;
        auto admission = listener.limits.acquire(*client);
        if (admission != ConnectionLimits::Admission::kAdmitted) {
            bool per_ip = admission == ConnectionLimits::Admission::kTooManyFromAddress;
            log(LogLevel::kWarn, "connection_refused",
                {{"listener", listener.context.listener.name},
                 {"client", client->to_string()},
                 {"reason", per_ip ? "max_connections_per_ip" : "max_connections"}});
            asio::co_spawn(worker.ctx,
                           refuse_connection(std::move(socket),
                                             per_ip ? smtp::replies::kTooManyConnectionsFromIp
                                                    : smtp::replies::kTooManyConnections),
                           asio::detached);
            continue;
        }
        ++active_sessions;
        asio::co_spawn(worker.ctx,
                       run_session(std::move(socket), listener, worker, *client, remote.port()),
                       asio::detached);
    }
}

void Server::Impl::tell_sessions(bool force) {
    for (auto& w : workers) {
        Worker* worker = w.get();
        asio::post(worker->ctx, [worker, force] {
            worker->registry.shutdown_all(force);
            worker->pools.shut_down();  // idle upstream connections say QUIT now
        });
    }
}

asio::awaitable<void> Server::Impl::sweep_deadlines(Worker& worker) {
    asio::steady_timer tick(worker.ctx);
    unsigned ticks = 0;
    while (true) {
        tick.expires_after(kSweepInterval);
        auto [ec] = co_await tick.async_wait(kUseTuple);
        if (ec) co_return;
        auto now = std::chrono::steady_clock::now();
        worker.registry.sweep(now);
        worker.pools.sweep(now);
        // The free-space floor, once a second, by the first worker.
        if (&worker == workers.front().get() && ++ticks % 5 == 0) storage->check();
    }
}

void Server::Impl::force_close(int signal_number) {
    if (forced) return;
    forced = true;
    forced_at = std::chrono::steady_clock::now();
    log(LogLevel::kWarn, "shutdown_forced",
        {{"signal", signal_number}, {"sessions", active_sessions.load()}});
    tell_sessions(true);
}

asio::awaitable<void> Server::Impl::shutdown(int signal_number) {
    // Each acceptor is closed on its own thread; new connections are refused once all are
    // closed, and only then is the shutdown logged (tests and operators rely on that order).
    auto open = std::make_shared<std::atomic<size_t>>(workers.size());
    for (size_t i = 0; i < workers.size(); ++i) {
        asio::post(workers[i]->ctx, [this, i, open] {
            for (auto& l : listeners) {
                boost::system::error_code ignored;
                l->acceptors[i]->close(ignored);
            }
            --*open;
        });
    }
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 1000 && open->load() > 0; ++i) {
        wait.expires_after(std::chrono::milliseconds(1));
        co_await wait.async_wait(kUseTuple);
    }
    log(LogLevel::kInfo, "shutdown",
        {{"signal", signal_number},
         {"sessions", active_sessions.load()},
         {"grace_ms", static_cast<int64_t>(config.server.shutdown_grace.count())}});
    tell_sessions(false);
    if (admin) admin->stop();
    if (scheduler) scheduler->stop();
    const auto grace_end = std::chrono::steady_clock::now() + config.server.shutdown_grace;
    asio::steady_timer tick(co_await asio::this_coro::executor);
    while (active_sessions.load() > 0) {
        auto now = std::chrono::steady_clock::now();
        if (now >= grace_end) force_close(0);  // 0: the grace period ran out
        // Sessions stuck in a write get this long after being told, then the process exits.
        if (forced && now >= forced_at + kForcedExitWait) break;
        tick.expires_after(std::chrono::milliseconds(20));
        co_await tick.async_wait(kUseTuple);
    }
    if (chain) {
        for (const auto& e : chain->entries()) {
            auto* lua = dynamic_cast<filters::lua::LuaFilter*>(e.filter.get());
            if (!lua) continue;
            const uint64_t calls = lua->calls();
            log(LogLevel::kInfo, "filter_stats",
                {{"filter", e.name},
                 {"calls", calls},
                 {"mean_us",
                  calls ? static_cast<double>(lua->total_ns()) / 1000.0 / static_cast<double>(calls)
                        : 0.0}});
        }
    }
    log(LogLevel::kInfo, "stopped", {{"sessions_left", active_sessions.load()}});
    for (auto& w : workers) w->ctx.stop();
}

void Server::Impl::reload_certificates() {
    for (auto& l : listeners) {
        if (!l->tls) continue;
        const config::ListenerConfig& lc = l->context.listener;
        std::string problem;
        config::SslCtxPtr native = config::make_server_tls_context(lc, problem);
        if (!native) {
            log(LogLevel::kError, "tls_reload_failed",
                {{"listener", lc.name},
                 {"error", problem},
                 {"detail", "the previous certificate stays in use"}});
            continue;
        }
        l->tls->current.store(std::make_shared<asio::ssl::context>(native.release()));
        log(LogLevel::kInfo, "tls_reloaded",
            {{"listener", lc.name}, {"certificate", lc.certificate}});
    }
    if (auth) {
        std::string problem;
        if (auto users = UserDb::load(config, problem)) {
            auth->users.store(users);
            log(LogLevel::kInfo, "users_loaded",
                {{"file", config.auth.users_file}, {"users", users->size()}});
        } else {
            log(LogLevel::kError, "users_reload_failed",
                {{"error", problem}, {"detail", "the previous users stay in use"}});
        }
    }
    if (chain) {
        // Each filter keeps its old script when the new one does not load.
        for (const std::string& error : chain->reload()) {
            log(LogLevel::kError, "filter_reload_failed",
                {{"error", error}, {"detail", "the previous version stays in use"}});
        }
    }
    log(LogLevel::kInfo, "reload",
        {{"detail",
          "TLS certificates, the users file and the filter scripts read again; other "
          "configuration changes need a restart"}});
}

int Server::run() {
    Impl& s = *impl_;
    const config::Config& config = s.config;
    ::signal(SIGPIPE, SIG_IGN);
    // A file-size limit must fail the write (EFBIG -> 451), not kill the server.
    ::signal(SIGXFSZ, SIG_IGN);
    // Sessions allocate and free buffers of tens of KiB per message; without this, glibc gives
    // the top of each thread's heap back with madvise() after nearly every message.
    ::mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    // One descriptor per connection: take the hard limit, as max_connections may need it.
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }

    for (unsigned i = 0; i < config.server.threads; ++i) {
        s.workers.push_back(std::make_unique<Worker>());
    }
    asio::io_context& main_ctx = s.workers.front()->ctx;

    // The first SIGTERM/SIGINT drains; a second one closes every session at once.
    // SIGHUP reads the certificates and the users file again (reload_certificates).
    // Installed before anything listens: a signal sent as soon as the port answers must not
    // take the default action (SIGHUP would end the server); it waits for main_ctx.run().
    asio::signal_set signals(main_ctx, SIGTERM, SIGINT, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal =
        [&](const boost::system::error_code& ec, int number) {
            if (ec) return;
            if (number == SIGHUP) {
                s.reload_certificates();
            } else if (!s.stopping) {
                s.stopping = true;
                asio::co_spawn(main_ctx, s.shutdown(number), asio::detached);
            } else {
                s.force_close(number);
            }
            signals.async_wait(on_signal);
        };
    signals.async_wait(on_signal);

    try {
        for (const auto& [name, route] : config.routes) {
            if (route.outbox.empty()) continue;
            // Created first, so that "out" and "out/" resolve to one canonical name.
            std::filesystem::create_directories(route.outbox);
            std::string dir = std::filesystem::canonical(route.outbox).string();
            auto& outbox = s.outboxes[dir];
            if (!outbox) {
                outbox = std::make_unique<upstream::Outbox>(route.outbox);
                if (size_t n = outbox->writer().remove_stale_temporaries()) {
                    log(LogLevel::kWarn, "outbox_cleanup",
                        {{"route", name}, {"dir", route.outbox}, {"removed", n}});
                }
            }
            s.route_targets[name] = outbox.get();
        }
        for (const auto& [name, upstream] : config.upstreams) {
            s.upstreams[name] = std::make_unique<upstream::UpstreamShared>(upstream);
        }
        const bool queue_listener =
            std::any_of(config.listeners.begin(), config.listeners.end(),
                        [](const auto& l) { return l.delivery == config::DeliveryMode::kQueue; });
        const bool upstream_route =
            std::any_of(config.routes.begin(), config.routes.end(),
                        [](const auto& r) { return !r.second.upstream.empty(); });
        if (queue_listener && upstream_route) {
            s.spool = std::make_unique<queue::Spool>(config.server.spool_dir);
        }
    } catch (const std::exception& e) {
        log(LogLevel::kError, "startup_failed", {{"error", e.what()}});
        return 1;
    }
    for (auto& w : s.workers) {
        for (const auto& [name, shared] : s.upstreams) {
            // The connection limit is shared out between the threads, each owning its part.
            unsigned threads = static_cast<unsigned>(s.workers.size());
            unsigned share = (shared->settings.config.max_connections + threads - 1) / threads;
            w->pools.add(std::make_unique<upstream::UpstreamPool>(w->ctx, *shared, share));
        }
    }

    if (!config.filters.empty()) {
        std::vector<std::string> errors;
        s.chain = filters::build_chain(config, errors);
        if (!s.chain) {
            for (const std::string& e : errors) {
                log(LogLevel::kError, "startup_failed", {{"error", e}});
            }
            return 1;
        }
        for (const auto& e : s.chain->entries()) {
            log(LogLevel::kInfo, "filter_loaded", {{"filter", e.name}});
        }
    }

    s.storage = std::make_unique<StorageGuard>(config.server.min_free_space);
    for (const auto& [dir, outbox] : s.outboxes) s.storage->watch(dir);
    if (s.spool) s.storage->watch(s.spool->queue_dir());
    s.storage->check();

    if (s.spool) {
        std::vector<queue::DeliveryThread> threads;
        for (auto& w : s.workers) threads.push_back({&w->ctx, &w->pools});
        s.scheduler = std::make_unique<queue::Scheduler>(main_ctx, std::move(threads), config,
                                                         *s.spool, s.ids);
        // Everything acknowledged before a stop or a crash is delivered again from the spool.
        const auto started = std::chrono::steady_clock::now();
        queue::Spool::Recovery recovered = s.spool->recover();
        const size_t count = recovered.messages.size();
        for (auto& m : recovered.messages) s.scheduler->submit(std::move(m));
        log(LogLevel::kInfo, "spool_recovered",
            {{"dir", s.spool->queue_dir()},
             {"messages", count},
             {"corrupt", recovered.corrupt},
             {"stale_removed", recovered.stale_removed},
             {"duration_ms",
              static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::steady_clock::now() - started)
                                       .count())}});
        if (s.chain) {
            // delivered / failed: the transaction as the queue kept it (tags and notes are
            // not stored with the message). The handlers run on a thread of their own: a slow
            // one must not hold up the scheduler.
            filters::Chain* chain = s.chain.get();
            s.notifications = std::make_unique<asio::thread_pool>(1);
            asio::thread_pool* pool = s.notifications.get();
            s.scheduler->on_outcome([chain, pool](const queue::Envelope& envelope, size_t index,
                                                  bool delivered, const std::string& reply) {
                auto tx = std::make_shared<filters::Transaction>();
                tx->id = envelope.queue_id;
                if (!envelope.mail_from.sender.null) {
                    tx->mail_from =
                        filters::Address::from_mailbox(envelope.mail_from.sender.mailbox());
                }
                for (const auto& r : envelope.recipients) {
                    tx->rcpts.push_back(filters::Address::from_mailbox(r.recipient.mailbox()));
                }
                tx->route = envelope.route;
                filters::DeliveryResult result;
                result.rcpt = envelope.recipients.at(index).recipient.mailbox();
                result.reply = reply;
                result.route = envelope.route;
                const auto event = delivered ? filters::Event::kDelivered : filters::Event::kFailed;
                asio::post(*pool, [chain, tx, result, event] {
                    chain->notify(event, nullptr, *tx, result);
                });
            });
        }

        s.scheduler->start();
    }

    if (config.auth.enabled) {
        std::string problem;
        auto users = UserDb::load(config, problem);
        if (!users) {
            log(LogLevel::kError, "startup_failed", {{"error", problem}});
            return 1;
        }
        s.auth = std::make_unique<AuthContext>(config.auth);
        s.auth->users.store(users);
        log(LogLevel::kInfo, "users_loaded",
            {{"file", config.auth.users_file}, {"users", users->size()}});
    }

    if (config.admin.enabled) {
        s.admin = std::make_unique<admin::AdminServer>(main_ctx, config.admin, s.scheduler.get());
        if (boost::system::error_code ec = s.admin->listen()) {
            log(LogLevel::kError, "startup_failed",
                {{"listener", "admin"},
                 {"address", config.admin.address.to_string()},
                 {"error", "cannot listen: " + ec.message()}});
            return 1;
        }
        s.admin->start();
        log(LogLevel::kInfo, "listening",
            {{"listener", "admin"},
             {"address", config.admin.address.to_string()},
             {"token", config.admin.token.empty() ? "none" : "required"}});
    }

    for (const config::ListenerConfig& lc : config.listeners) {
        auto state = std::make_unique<ListenerState>(config, lc, s.ids, s.routes, s.route_targets);
        state->context.spool = s.spool.get();
        state->context.scheduler = s.scheduler.get();
        state->context.storage = s.storage.get();
        state->context.auth = s.auth.get();
        state->context.chain = s.chain.get();
        if (lc.tls != config::ListenerTls::kNone) {
            std::string problem;
            config::SslCtxPtr native = config::make_server_tls_context(lc, problem);
            if (!native) {
                log(LogLevel::kError, "startup_failed",
                    {{"listener", lc.name}, {"error", problem}});
                return 1;
            }
            state->tls = std::make_unique<ListenerTls>();
            state->tls->current.store(std::make_shared<asio::ssl::context>(native.release()));
            state->context.tls = state->tls.get();
        }
        boost::system::error_code ec;
        tcp::endpoint endpoint(asio::ip::make_address(lc.address.host, ec), lc.address.port);
        auto open = [&](tcp::acceptor& a, bool reuse_port) {
            if (!ec) a.open(endpoint.protocol(), ec);
            if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
            if (!ec && reuse_port) {
                a.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true),
                             ec);
            }
            if (!ec && endpoint.address().is_v6()) a.set_option(asio::ip::v6_only(false), ec);
            // Accepted sockets inherit TCP_NODELAY from the listening one (Linux): replies go
            // out at once, with no setsockopt() per connection.
            if (!ec) a.set_option(tcp::no_delay(true), ec);
            // So is TCP_INQ, with which reads see when they emptied the socket (DrainingRead).
            // An optimisation only: a kernel without it reads as before.
            if (!ec) {
                boost::system::error_code unsupported;
                smtp::enable_receive_queue_hint(a.native_handle(), unsupported);
            }
            if (!ec) a.bind(endpoint, ec);
            if (!ec && reuse_port) a.listen(kListenBacklog, ec);
            if (!ec && reuse_port) a.non_blocking(true, ec);  // for accept_connection
        };
        // A plain bind fails when anyone, another postern included, listens on the port.
        tcp::acceptor probe(main_ctx);
        open(probe, false);
        if (!ec) probe.close(ec);
        for (auto& w : s.workers) {
            state->acceptors.push_back(std::make_unique<tcp::acceptor>(w->ctx));
            open(*state->acceptors.back(), true);
        }
        if (ec) {
            log(LogLevel::kError, "startup_failed",
                {{"listener", lc.name},
                 {"address", lc.address.to_string()},
                 {"error", "cannot listen: " + ec.message()}});
            return 1;
        }
        log(LogLevel::kInfo, "listening",
            {{"listener", lc.name},
             {"address", lc.address.to_string()},
             {"route", lc.route},
             {"relay", lc.relay == config::RelayPolicy::kTrusted ? "trusted"
                       : lc.relay == config::RelayPolicy::kAuthenticated
                           ? "authenticated"
                           : "trusted_or_authenticated"}});
        s.listeners.push_back(std::move(state));
    }
    for (auto& l : s.listeners) {
        for (size_t i = 0; i < s.workers.size(); ++i) {
            asio::co_spawn(s.workers[i]->ctx, s.accept_loop(*l, i), asio::detached);
        }
    }
    for (auto& w : s.workers) {
        asio::co_spawn(w->ctx, s.sweep_deadlines(*w), asio::detached);
    }

    log(LogLevel::kInfo, "started",
        {{"version", POSTERN_VERSION},
         {"hostname", config.server.hostname},
         {"threads", config.server.threads}});

    std::vector<std::thread> threads;
    for (size_t i = 1; i < s.workers.size(); ++i) {
        Worker* w = s.workers[i].get();
        threads.emplace_back([w] {
            auto guard = asio::make_work_guard(w->ctx);
            w->ctx.run();
        });
    }
    {
        auto guard = asio::make_work_guard(main_ctx);
        main_ctx.run();
    }
    for (auto& t : threads) t.join();
    // Acceptors and idle upstream connections go in ~Impl, while their contexts still exist.
    // Finish the storage threads while everything their results refer to still exists: a
    // session given up by a forced shutdown may still be waiting for its store(); its result
    // is then queued into the stopped I/O context and destroyed with it.
    s.admin.reset();
    s.scheduler.reset();
    s.spool.reset();
    s.route_targets.clear();
    s.outboxes.clear();
    return 0;
}

}  // namespace postern::server
