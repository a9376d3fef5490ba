// The scheduler of the durable queue: keeps every spooled message that still has recipients to
// deliver, tries each at once, then again after the route's backoff (RetryPolicy) until every
// recipient is delivered or failed, or max_age has passed. At most `max_connections` attempts
// per route run at a time, so a route whose upstream is down holds only its own messages.
//
// The scheduler's state lives on one I/O thread (its "home"); attempts run on all I/O threads in
// turn, each with that thread's upstream pool, and report back home. The management calls
// (list, flush, hold, release, remove) are made on the home thread too: the admin listener
// runs there.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/config/config.hpp"
#include "proxy/queue/dsn.hpp"
#include "proxy/queue/queue_entry.hpp"
#include "proxy/queue/queue_id.hpp"
#include "proxy/queue/retry_policy.hpp"
#include "proxy/queue/spool.hpp"
#include "proxy/upstream/pool.hpp"

namespace postern::queue {

namespace asio = boost::asio;

// An I/O thread an attempt can run on.
struct DeliveryThread {
    asio::io_context* io;
    upstream::PoolSet* pools;
};

// The outcome of one attempt for one recipient.
struct RecipientResult {
    size_t index = 0;
    RecipientStatus status = RecipientStatus::kPending;  // pending = deferred
    std::string reply;
};

struct AttemptResult {
    std::string host;
    bool upstream_dsn = false;  // the upstream offered DSN: it reports success itself
    std::string corrupt;        // the message file is damaged (why): it was not sent
    std::vector<RecipientResult> recipients;
};

class Scheduler {
  public:
    // `ids` names the bounces the scheduler writes.
    Scheduler(asio::io_context& home, std::vector<DeliveryThread> threads,
              const config::Config& config, Spool& spool, QueueIdGenerator& ids);

    // Any thread: a message just stored, or recovered at start-up.
    void submit(SpooledMessage message);
    // Home thread: starts the dispatch loop.
    void start();
    // Any thread: no new attempts (those running finish or are dropped with their thread).
    void stop();

    // Management, home thread only. `entries` lists the messages (one when `id` is given, those
    // of one route when `route` is), oldest first.
    std::vector<QueueEntry> entries(const std::string& id = "",
                                    const std::string& route = "") const;
    // Makes messages due now (one, those of a route, or all): returns how many. Held messages
    // and running attempts are left alone.
    size_t flush(const std::string& id, const std::string& route);
    // False when there is no such message.
    bool hold(const std::string& id);
    bool release(const std::string& id);
    // Removes the message from the queue and the spool without any notice to the sender.
    bool remove(const std::string& id);

    // Called on the home thread for each recipient that reaches a final state (delivered or
    // failed, expiry included); set before start(). The filter chain's notifications.
    using OutcomeListener = std::function<void(const Envelope& envelope, size_t recipient,
                                               bool delivered, const std::string& reply)>;
    void on_outcome(OutcomeListener listener) { outcome_ = std::move(listener); }

  private:
    struct Route {
        unsigned active = 0;
        unsigned limit = 1;
        // Attempts running on each thread: each thread's pool has only its share of the
        // upstream's connections, so attempts go where a connection is free.
        std::vector<unsigned> active_on;
        RetryPolicy policy;
        std::chrono::milliseconds max_age{0};
        std::chrono::milliseconds delay_warning{0};  // 0: none
        std::multimap<std::chrono::steady_clock::time_point, std::string> due;
    };

    asio::awaitable<void> loop();
    void dispatch();
    void finish(const std::string& id, size_t thread, AttemptResult result);
    void schedule(SpooledMessage& m, std::chrono::steady_clock::time_point when);
    // After a change of recipient states: reports new failures to the sender, and removes
    // the message once nothing is pending and every failure is reported.
    void settle(const std::string& id);
    // Stores a notice to the sender of message `id` for its recipients `indices` (home thread):
    // a bounce (marks them reported), a delay warning (marks it sent) or a relayed notice.
    // `original` is a copy: the message may change or go while the notice is stored.
    asio::awaitable<void> notify(SpooledMessage original, DsnAction action,
                                 std::vector<size_t> indices);
    // Sends the delay warning when it is due.
    void maybe_warn(SpooledMessage& m, std::chrono::system_clock::duration age);

    asio::io_context& home_;
    std::vector<DeliveryThread> threads_;
    const config::Config& config_;
    OutcomeListener outcome_;
    Spool& spool_;
    QueueIdGenerator& ids_;
    asio::steady_timer wake_;
    std::unordered_map<std::string, SpooledMessage> messages_;  // home thread only
    std::map<std::string, Route> routes_;                       // by route name
    std::mt19937_64 random_{std::random_device{}()};
    bool stopped_ = false;
};

// One attempt: all pending recipients of `m` (a copy: the attempt owns it) in one transaction
// through `pool`.
asio::awaitable<AttemptResult> attempt_delivery(SpooledMessage m, const Spool& spool,
                                                upstream::UpstreamPool& pool);

}  // namespace postern::queue
