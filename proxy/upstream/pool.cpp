// Upstream connection pools; see pool.hpp.
#include "proxy/upstream/pool.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "proxy/await_token.hpp"
#include "proxy/observe/log.hpp"

namespace postern::upstream {

using config::LogLevel;
using observe::log;

bool HostHealth::is_down(const std::string& address,
                         std::chrono::steady_clock::time_point now) const {
    std::lock_guard lock(mutex_);
    auto it = down_until_.find(address);
    return it != down_until_.end() && now < it->second;
}

void HostHealth::mark_down(const std::string& address,
                           std::chrono::steady_clock::time_point until) {
    std::lock_guard lock(mutex_);
    down_until_[address] = until;
}

void HostHealth::mark_up(const std::string& address) {
    std::lock_guard lock(mutex_);
    down_until_.erase(address);
}

Lease& Lease::operator=(Lease&& other) noexcept {
    if (this != &other) {
        release();
        pool_ = std::exchange(other.pool_, nullptr);
        client_ = std::move(other.client_);
        reused_ = other.reused_;
    }
    return *this;
}

void Lease::release() {
    if (client_ && pool_) pool_->give_back(std::move(client_));
    client_.reset();
}

UpstreamPool::UpstreamPool(asio::io_context& io, UpstreamShared& shared, unsigned max_connections)
    : io_(io),
      shared_(shared),
      config_(shared.settings.config),
      max_connections_(std::max(1u, max_connections)) {}

UpstreamPool::~UpstreamPool() {
    idle_.clear();
}

void UpstreamPool::give_back(std::unique_ptr<SmtpClient> client) {
    if (client->reusable() && !shutting_down_) {
        client->mark_idle();
        idle_.push_back(std::move(client));
        wake_waiter();
        return;
    }
    if (!client->broken() && !client->in_data() && !shutting_down_) {
        retire(std::move(client));  // used up (max_messages_per_connection): say QUIT
        return;
    }
    client.reset();
    forget_one();
}

void UpstreamPool::forget_one() {
    if (open_ > 0) --open_;
    wake_waiter();
}

void UpstreamPool::wake_waiter() {
    if (waiters_.empty()) return;
    asio::steady_timer* t = waiters_.front();
    waiters_.pop_front();
    t->cancel();
}

void UpstreamPool::retire(std::unique_ptr<SmtpClient> client) {
    // The slot is freed at once; the QUIT exchange runs on its own.
    forget_one();
    asio::co_spawn(
        io_, [c = std::move(client)]() mutable -> asio::awaitable<void> { co_await c->quit(); },
        asio::detached);
}

Lease UpstreamPool::take_idle() {
    if (shutting_down_) return Lease();
    while (!idle_.empty()) {
        std::unique_ptr<SmtpClient> c = std::move(idle_.back());  // the most recently used
        idle_.pop_back();
        if (c->reusable()) return Lease(this, std::move(c), true);
        c.reset();
        forget_one();
    }
    return Lease();
}

asio::awaitable<Acquired> UpstreamPool::acquire(bool fresh_only) {
    const auto deadline = std::chrono::steady_clock::now() + config_.connect_timeout;
    while (true) {
        if (shutting_down_) {
            co_return Acquired{{}, ClientFailure{"pool", "postern is shutting down"}};
        }
        if (!fresh_only) {
            if (Lease idle = take_idle()) co_return Acquired{std::move(idle), {}};
        }
        if (fresh_only && !idle_.empty() && open_ >= max_connections_) {
            // Make room: an idle connection gives its slot to the fresh one.
            retire(std::move(idle_.front()));
            idle_.erase(idle_.begin());
        }
        if (open_ < max_connections_) {
            ++open_;
            Acquired a = co_await connect_new();
            if (!a.lease) forget_one();
            co_return a;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            co_return Acquired{{},
                               ClientFailure{"pool", "all " + std::to_string(max_connections_) +
                                                         " connections of this thread are busy"}};
        }
        asio::steady_timer wait(io_, deadline);
        waiters_.push_back(&wait);
        co_await wait.async_wait(kUseTuple);
        std::erase(waiters_, &wait);
    }
}

asio::awaitable<Acquired> UpstreamPool::connect_new() {
    ClientFailure last{"connect", "no host to try"};
    auto executor = io_.get_executor();
    // Addresses to try, in order: every address of every host. A first pass skips those
    // marked down; when that leaves none, all are tried (one may have come back).
    std::vector<std::pair<const config::HostPort*, tcp::endpoint>> candidates;
    tcp::resolver resolver(executor);
    for (const config::HostPort& host : config_.hosts) {
        auto [ec, results] =
            co_await resolver.async_resolve(host.host, std::to_string(host.port), kUseTuple);
        if (ec) {
            last = ClientFailure{"resolve", "cannot resolve " + host.host + ": " + ec.message()};
            log(LogLevel::kWarn, "upstream_failed",
                {{"upstream", config_.name},
                 {"host", host.to_string()},
                 {"stage", last.stage},
                 {"reason", last.reason}});
            continue;
        }
        for (const auto& entry : results) candidates.emplace_back(&host, entry.endpoint());
    }
    const auto now = std::chrono::steady_clock::now();
    std::vector<bool> skip(candidates.size());
    bool any_up = false;
    for (size_t i = 0; i < candidates.size(); ++i) {
        const auto& ep = candidates[i].second;
        skip[i] = shared_.health.is_down(
            config::HostPort{ep.address().to_string(), ep.port()}.to_string(), now);
        any_up = any_up || !skip[i];
    }
    for (size_t i = 0; i < candidates.size(); ++i) {
        if (any_up && skip[i]) continue;
        const auto& [host, endpoint] = candidates[i];
        auto client = std::make_unique<SmtpClient>(executor, shared_.settings, registry_,
                                                   host->host, endpoint);
        ClientFailure f = co_await client->open();
        if (!f) {
            shared_.health.mark_up(client->address());
            ++shared_.connections_opened;
            log(LogLevel::kInfo, "upstream_connected",
                {{"upstream", config_.name},
                 {"host", client->peer()},
                 {"address", client->address()},
                 {"tls", client->tls_description()}});
            co_return Acquired{Lease(this, std::move(client), false), {}};
        }
        if (f.host_down) {
            shared_.health.mark_down(client->address(),
                                     std::chrono::steady_clock::now() + config_.host_down_time);
        }
        if (f.auth_rejected) {
            // Wrong credentials: nothing postern can fix by retrying; the operator must.
            log(LogLevel::kError, "upstream_auth_failed",
                {{"upstream", config_.name},
                 {"host", client->peer()},
                 {"address", client->address()},
                 {"reason", f.reason},
                 {"detail", "check username and password of [upstream." + config_.name +
                                "]; messages are deferred, not bounced"}});
        } else {
            log(LogLevel::kWarn, "upstream_failed",
                {{"upstream", config_.name},
                 {"host", client->peer()},
                 {"address", client->address()},
                 {"stage", f.stage},
                 {"reason", f.reason},
                 {"marked_down", f.host_down ? "yes" : "no"}});
        }
        last = std::move(f);
    }
    co_return Acquired{{}, std::move(last)};
}

asio::awaitable<TransactionStart> UpstreamPool::begin(Lease& lease,
                                                      const smtp::MailCommandInput& mail,
                                                      const smtp::RcptTo& rcpt) {
    TransactionStart start = co_await lease->begin(mail, rcpt);
    if (start.failure && lease.reused() && !start.answered_any) {
        // An idle connection the server had closed (its own idle timeout): once more, fresh.
        log(LogLevel::kDebug, "upstream_stale",
            {{"upstream", config_.name},
             {"host", lease->peer()},
             {"reason", start.failure.reason}});
        lease.release();
        Acquired fresh = co_await acquire(true);
        if (!fresh.lease) {
            start.failure = std::move(fresh.failure);
            co_return start;
        }
        lease = std::move(fresh.lease);
        start = co_await lease->begin(mail, rcpt);
    }
    co_return start;
}

void UpstreamPool::sweep(std::chrono::steady_clock::time_point now) {
    registry_.sweep(now);
    for (size_t i = 0; i < idle_.size();) {
        if (now - idle_[i]->idle_since() >= config_.idle_timeout) {
            std::unique_ptr<SmtpClient> c = std::move(idle_[i]);
            idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
            retire(std::move(c));
        } else {
            ++i;
        }
    }
}

void UpstreamPool::shut_down() {
    shutting_down_ = true;
    std::vector<std::unique_ptr<SmtpClient>> idle = std::move(idle_);
    idle_.clear();
    for (auto& c : idle) retire(std::move(c));
    while (!waiters_.empty()) wake_waiter();
}

void UpstreamPool::close_idle() {
    shutting_down_ = true;
    idle_.clear();
}

void PoolSet::add(std::unique_ptr<UpstreamPool> pool) {
    std::string name = pool->name();
    pools_[name] = std::move(pool);
}

UpstreamPool* PoolSet::find(const std::string& upstream) const {
    auto it = pools_.find(upstream);
    return it == pools_.end() ? nullptr : it->second.get();
}

void PoolSet::sweep(std::chrono::steady_clock::time_point now) {
    for (auto& [name, pool] : pools_) pool->sweep(now);
}

void PoolSet::shut_down() {
    for (auto& [name, pool] : pools_) pool->shut_down();
}

void PoolSet::close_idle() {
    for (auto& [name, pool] : pools_) pool->close_idle();
}

}  // namespace postern::upstream
