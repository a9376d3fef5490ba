// Connection pools for the upstreams: one UpstreamPool per [upstream.NAME] and I/O thread, so a
// connection is only ever touched by the thread that owns it. Each pool keeps at most
// ceil(max_connections / threads) connections, reuses idle ones across messages (RSET between
// transactions, up to max_messages_per_connection), closes those idle for idle_timeout, and
// opens new ones with failover: hosts in priority order, every address of a name, skipping for
// host_down_time the addresses that refused, timed out or answered 4xx at greeting/EHLO (that
// knowledge is shared by all threads).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/upstream/smtp_client.hpp"

namespace postern::upstream {

// Which addresses of an upstream are being skipped, shared by the pools of all threads.
class HostHealth {
  public:
    bool is_down(const std::string& address, std::chrono::steady_clock::time_point now) const;
    void mark_down(const std::string& address, std::chrono::steady_clock::time_point until);
    void mark_up(const std::string& address);

  private:
    mutable std::mutex mutex_;
    std::map<std::string, std::chrono::steady_clock::time_point> down_until_;
};

// What the pools of one upstream share across threads. Built at start-up.
struct UpstreamShared {
    explicit UpstreamShared(const config::UpstreamConfig& c) : settings(c) {}
    UpstreamSettings settings;
    HostHealth health;
    std::atomic<uint64_t> connections_opened{0};
};

class UpstreamPool;

// A connection taken from a pool; goes back to it when the lease ends.
class Lease {
  public:
    Lease() = default;
    Lease(UpstreamPool* pool, std::unique_ptr<SmtpClient> client, bool reused)
        : pool_(pool), client_(std::move(client)), reused_(reused) {}
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { release(); }

    explicit operator bool() const { return client_ != nullptr; }
    SmtpClient* operator->() const { return client_.get(); }
    SmtpClient& client() const { return *client_; }
    bool reused() const { return reused_; }
    // Gives the connection back (closed instead when it cannot be reused).
    void release();

  private:
    UpstreamPool* pool_ = nullptr;
    std::unique_ptr<SmtpClient> client_;
    bool reused_ = false;
};

struct Acquired {
    Lease lease;
    ClientFailure failure;  // when no connection could be had: the last host's failure
};

class UpstreamPool {
  public:
    UpstreamPool(asio::io_context& io, UpstreamShared& shared, unsigned max_connections);
    ~UpstreamPool();
    UpstreamPool(const UpstreamPool&) = delete;
    UpstreamPool& operator=(const UpstreamPool&) = delete;

    // An idle connection, or a new one (failover across hosts), waiting up to connect_timeout
    // for one to become free when all are busy.
    asio::awaitable<Acquired> acquire(bool fresh_only = false);
    // The most recently used idle connection that can be reused, at once and without a
    // coroutine frame (the usual case under load); an empty lease when there is none.
    Lease take_idle();
    // SmtpClient::begin on the lease; when a reused connection turns out dead before any
    // reply, once more on a fresh connection (the lease then holds that one).
    asio::awaitable<TransactionStart> begin(Lease& lease, const smtp::MailCommandInput& mail,
                                            const smtp::RcptTo& rcpt);

    // Deadlines of busy connections, idle_timeout of idle ones. Called by the thread's sweep.
    void sweep(std::chrono::steady_clock::time_point now);
    // Shutdown: QUIT the idle connections; later releases close instead of keeping.
    void shut_down();
    // Destroys every idle connection now (the I/O context must still exist).
    void close_idle();

    const std::string& name() const { return config_.name; }

  private:
    friend class Lease;
    void give_back(std::unique_ptr<SmtpClient> client);
    void forget_one();  // a connection of this pool was closed: its slot is free
    void wake_waiter();
    asio::awaitable<Acquired> connect_new();
    void retire(std::unique_ptr<SmtpClient> client);  // QUIT and close in the background

    asio::io_context& io_;
    UpstreamShared& shared_;
    const config::UpstreamConfig& config_;
    const unsigned max_connections_;
    unsigned open_ = 0;  // connections that exist (idle, leased, being opened)
    std::vector<std::unique_ptr<SmtpClient>> idle_;
    std::deque<asio::steady_timer*> waiters_;
    ClientRegistry registry_;
    bool shutting_down_ = false;
};

// The pools of one I/O thread, by upstream name.
class PoolSet {
  public:
    void add(std::unique_ptr<UpstreamPool> pool);
    UpstreamPool* find(const std::string& upstream) const;
    void sweep(std::chrono::steady_clock::time_point now);
    void shut_down();
    void close_idle();

  private:
    std::map<std::string, std::unique_ptr<UpstreamPool>> pools_;
};

}  // namespace postern::upstream
