// The queue scheduler and one delivery attempt; see scheduler.hpp.
#include "proxy/queue/scheduler.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/observe/log.hpp"
#include "proxy/queue/dsn.hpp"
#include "proxy/upstream/route_table.hpp"

namespace postern::queue {

using config::LogLevel;
using observe::log;

namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kIdleWake = std::chrono::seconds(1);

bool positive(int code) {
    return code >= 200 && code < 300;
}

RecipientStatus status_of(int code) {
    if (positive(code)) return RecipientStatus::kDelivered;
    if (code >= 500) return RecipientStatus::kFailed;
    return RecipientStatus::kPending;
}

bool eight_bit(std::string_view content) {
    return std::any_of(content.begin(), content.end(),
                       [](char c) { return static_cast<unsigned char>(c) > 127; });
}

}  // namespace

asio::awaitable<AttemptResult> attempt_delivery(SpooledMessage m, const Spool& spool,
                                                upstream::UpstreamPool& pool) {
    AttemptResult out;
    std::vector<size_t> pending;
    for (size_t i = 0; i < m.recipients.size(); ++i) {
        if (m.recipients[i].status == RecipientStatus::kPending) pending.push_back(i);
    }
    auto all = [&](const std::vector<size_t>& which, RecipientStatus status,
                   const std::string& reply) {
        for (size_t i : which) out.recipients.push_back({i, status, reply});
    };
    if (pending.empty()) co_return out;
    // The first attempt uses the copy the session kept; later ones read the spool file.
    std::string content;
    std::string error;
    if (m.content) {
        content = *m.content;
    } else if (!spool.read_content(m, content, error)) {
        all(pending, RecipientStatus::kPending, error);
        co_return out;
    }
    upstream::Acquired acquired = co_await pool.acquire();
    if (!acquired.lease) {
        all(pending, RecipientStatus::kPending, acquired.failure.reason);
        co_return out;
    }
    upstream::Lease lease = std::move(acquired.lease);
    smtp::MailCommandInput mail{m.envelope.mail_from, content.size(), eight_bit(content)};
    const Envelope& e = m.envelope;
    upstream::TransactionStart start =
        co_await pool.begin(lease, mail, e.recipients[pending.front()]);
    if (lease) out.host = lease->peer();
    if (start.failure) {
        all(pending, RecipientStatus::kPending, start.failure.reason);
        co_return out;
    }
    if (!positive(start.mail.code)) {
        all(pending, status_of(start.mail.code), upstream::describe(start.mail));
        co_return out;
    }
    std::vector<size_t> accepted;
    auto note = [&](size_t i, const smtp::ServerReply& reply) {
        if (positive(reply.code)) {
            accepted.push_back(i);
        } else {
            out.recipients.push_back({i, status_of(reply.code), upstream::describe(reply)});
        }
    };
    note(pending.front(), start.rcpt);
    for (size_t k = 1; k < pending.size(); ++k) {
        upstream::ClientReply r = co_await lease->rcpt(e.recipients[pending[k]]);
        if (!r.ok()) {
            // The connection broke: this and the remaining recipients wait for the next try.
            all(std::vector<size_t>(pending.begin() + k, pending.end()), RecipientStatus::kPending,
                r.failure.reason);
            all(accepted, RecipientStatus::kPending, r.failure.reason);
            co_return out;
        }
        note(pending[k], r.reply);
    }
    if (accepted.empty()) {
        lease->abandon_transaction();
        co_return out;
    }
    upstream::ClientReply r = co_await lease->send_message("", content);
    if (!r.ok()) {
        // The upstream may have the message already: sending again risks a duplicate, which
        // the guarantee allows; losing it is not.
        all(accepted, RecipientStatus::kPending, r.failure.reason);
        co_return out;
    }
    all(accepted, status_of(r.reply.code), upstream::describe(r.reply));
    co_return out;
}

Scheduler::Scheduler(asio::io_context& home, std::vector<DeliveryThread> threads,
                     const config::Config& config, Spool& spool, QueueIdGenerator& ids)
    : home_(home),
      threads_(std::move(threads)),
      config_(config),
      spool_(spool),
      ids_(ids),
      wake_(home) {
    for (const auto& [name, route] : config.routes) {
        if (route.upstream.empty()) continue;
        Route& r = routes_[name];
        r.limit = std::max(1u, config.upstreams.at(route.upstream).max_connections);
        r.active_on.assign(threads_.size(), 0);
        r.policy = RetryPolicy{route.retry_min, route.retry_max};
        r.max_age = route.max_age;
    }
}

void Scheduler::submit(SpooledMessage message) {
    asio::post(home_, [this, m = std::move(message)]() mutable {
        if (stopped_) return;
        const std::string id = m.envelope.queue_id;
        if (!routes_.count(m.envelope.route)) {
            log(LogLevel::kError, "queue_unroutable",
                {{"queue_id", id},
                 {"route", m.envelope.route},
                 {"detail", "no upstream route of that name in the configuration; kept"}});
            return;
        }
        auto [it, inserted] = messages_.emplace(id, std::move(m));
        if (!inserted) return;
        if (it->second.any(RecipientStatus::kPending)) {
            schedule(it->second, std::chrono::steady_clock::now());
        }
        settle(id);
    });
}

void Scheduler::start() {
    asio::co_spawn(home_, loop(), asio::detached);
}

void Scheduler::stop() {
    asio::post(home_, [this] {
        stopped_ = true;
        wake_.cancel();
    });
}

void Scheduler::schedule(SpooledMessage& m, std::chrono::steady_clock::time_point when) {
    routes_.at(m.envelope.route).due.emplace(when, m.envelope.queue_id);
    wake_.cancel();
}

asio::awaitable<void> Scheduler::loop() {
    while (!stopped_) {
        dispatch();
        auto next = std::chrono::steady_clock::now() + kIdleWake;
        for (const auto& [name, route] : routes_) {
            if (!route.due.empty() && route.active < route.limit) {
                next = std::min(next, route.due.begin()->first);
            }
        }
        wake_.expires_at(next);
        co_await wake_.async_wait(kUseTuple);
    }
}

void Scheduler::dispatch() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [name, route] : routes_) {
        while (!stopped_ && route.active < route.limit && !route.due.empty() &&
               route.due.begin()->first <= now) {
            std::string id = route.due.begin()->second;
            route.due.erase(route.due.begin());
            auto it = messages_.find(id);
            if (it == messages_.end()) continue;
            SpooledMessage& m = it->second;
            ++m.attempts;
            ++route.active;
            // The thread with the fewest attempts of this route running.
            size_t ti = static_cast<size_t>(
                std::min_element(route.active_on.begin(), route.active_on.end()) -
                route.active_on.begin());
            ++route.active_on[ti];
            DeliveryThread& t = threads_[ti];
            upstream::UpstreamPool* pool = t.pools->find(config_.routes.at(name).upstream);
            asio::co_spawn(*t.io, attempt_delivery(m, spool_, *pool),
                           [this, id, ti](std::exception_ptr error, AttemptResult result) {
                               if (error) {
                                   result = AttemptResult{};  // all recipients stay pending
                               }
                               asio::post(home_, [this, id, ti, r = std::move(result)]() mutable {
                                   finish(id, ti, std::move(r));
                               });
                           });
        }
    }
}

void Scheduler::finish(const std::string& id, size_t thread, AttemptResult result) {
    auto it = messages_.find(id);
    if (it == messages_.end()) return;
    SpooledMessage& m = it->second;
    Route& route = routes_.at(m.envelope.route);
    --route.active;
    --route.active_on[thread];
    wake_.cancel();  // a slot is free: due messages of this route may go now
    const auto age = std::chrono::system_clock::now() - m.envelope.received_at;
    const auto delay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(age).count();
    std::vector<size_t> final_states;  // recipients that reached a final state now
    for (RecipientResult& r : result.recipients) {
        RecipientState& state = m.recipients.at(r.index);
        state.reply = r.reply;
        state.status = r.status;
        log(r.status == RecipientStatus::kPending ? LogLevel::kWarn : LogLevel::kInfo, "delivery",
            {{"queue_id", id},
             {"rcpt", m.envelope.recipients[r.index].recipient.mailbox()},
             {"route", m.envelope.route},
             {"upstream", config_.routes.at(m.envelope.route).upstream},
             {"host", result.host},
             {"attempt", m.attempts},
             {"delay_ms", static_cast<int64_t>(delay_ms)},
             {"result", r.status == RecipientStatus::kDelivered ? "delivered"
                        : r.status == RecipientStatus::kFailed  ? "failed"
                                                                : "deferred"},
             {"reply", r.reply}});
        if (r.status != RecipientStatus::kPending) final_states.push_back(r.index);
    }
    if (m.any(RecipientStatus::kPending) && age >= route.max_age) {
        for (size_t i = 0; i < m.recipients.size(); ++i) {
            RecipientState& state = m.recipients[i];
            if (state.status != RecipientStatus::kPending) continue;
            state.status = RecipientStatus::kFailed;
            state.reply = "expired: not delivered within max_age; last error: " + state.reply;
            log(LogLevel::kWarn, "delivery",
                {{"queue_id", id},
                 {"rcpt", m.envelope.recipients[i].recipient.mailbox()},
                 {"route", m.envelope.route},
                 {"upstream", config_.routes.at(m.envelope.route).upstream},
                 {"host", result.host},
                 {"attempt", m.attempts},
                 {"delay_ms", static_cast<int64_t>(delay_ms)},
                 {"result", "failed"},
                 {"reply", state.reply}});
            final_states.push_back(i);
        }
    }
    m.content.reset();  // later attempts read the file: no message bodies held while waiting
    // A message delivered to everyone now is removed at once: its state lines would only be
    // written to be deleted. Otherwise they go to disk (a crash then resends no delivered one).
    if (m.any(RecipientStatus::kPending) || m.any(RecipientStatus::kFailed)) {
        for (size_t i : final_states) spool_.record(id, i, m.recipients[i]);
    }
    if (m.any(RecipientStatus::kPending)) {
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        auto delay = route.policy.delay(m.attempts, unit(random_));
        log(LogLevel::kInfo, "deferred",
            {{"queue_id", id},
             {"attempts", m.attempts},
             {"next_attempt_s", static_cast<int64_t>((delay.count() + 999) / 1000)}});
        schedule(m, std::chrono::steady_clock::now() + delay);
    }
    settle(id);
}

void Scheduler::settle(const std::string& id) {
    auto it = messages_.find(id);
    if (it == messages_.end()) return;
    SpooledMessage& m = it->second;
    if (!m.bouncing) {
        std::vector<size_t> unreported;
        for (size_t i = 0; i < m.recipients.size(); ++i) {
            const RecipientState& r = m.recipients[i];
            if (r.status == RecipientStatus::kFailed && !r.bounced) unreported.push_back(i);
        }
        if (!unreported.empty()) {
            m.bouncing = true;
            // bounce() may run to its end inside co_spawn (nothing to store: it does not wait)
            // and settle the message itself, erasing it: `m` must not be used after this.
            asio::co_spawn(home_, bounce(id, std::move(unreported)), asio::detached);
            return;
        }
    }
    if (m.any(RecipientStatus::kPending) || m.bouncing) return;
    spool_.remove(id);
    log(LogLevel::kInfo, "message_done",
        {{"queue_id", id},
         {"attempts", m.attempts},
         {"failed",
          std::count_if(m.recipients.begin(), m.recipients.end(), [](const RecipientState& r) {
              return r.status == RecipientStatus::kFailed;
          })}});
    messages_.erase(it);
    wake_.cancel();
}

asio::awaitable<void> Scheduler::bounce(std::string id, std::vector<size_t> indices) {
    auto it = messages_.find(id);
    if (it == messages_.end()) co_return;
    const SpooledMessage original = it->second;  // a copy: the map may change while we wait
    const Envelope& e = original.envelope;
    std::vector<FailedRecipient> report;
    for (size_t i : indices) {
        if (!wants_failure_notice(e.recipients[i])) continue;
        const std::string& reply = original.recipients[i].reply;
        report.push_back({i, reply, reply.rfind("expired:", 0) == 0});
    }
    bool stored = true;
    if (e.mail_from.sender.null || report.empty()) {
        // RFC 5321 6.1 / 4.5.5: never a bounce to <>; NOTIFY without FAILURE asked for none.
        log(LogLevel::kInfo, "bounce_skipped",
            {{"queue_id", id},
             {"reason", e.mail_from.sender.null ? "null sender" : "NOTIFY does not ask for it"},
             {"nrcpt", indices.size()}});
    } else {
        std::string content;
        std::string error;
        if (!spool_.read_content(original, content, error)) content.clear();  // no headers then
        Envelope b;
        b.queue_id = ids_.next();
        b.mail_from.sender.null = true;  // MAIL FROM:<> (RFC 3464 2, RFC 5321 4.5.5)
        smtp::RcptTo to;
        to.recipient = e.mail_from.sender;
        b.recipients.push_back(std::move(to));
        b.mail_from.params.smtputf8 = e.mail_from.sender.utf8;
        b.client_ip = "127.0.0.1";
        b.helo = config_.server.hostname;
        b.protocol = "LOCAL";
        b.listener = "bounce";
        // Routed as mail to the sender's domain would be, from the original's listener;
        // the original's route when that is not an upstream route of this queue.
        b.route = e.route;
        for (const config::ListenerConfig& l : config_.listeners) {
            if (l.name != e.listener) continue;
            const std::string& r =
                upstream::RouteTable(config_).select(l, "", e.mail_from.sender.domain);
            if (routes_.count(r)) b.route = r;
        }
        b.received_at = std::chrono::system_clock::now();
        DsnInput in;
        in.reporting_mta = config_.server.hostname;
        in.envelope = &e;
        in.failed = report;
        in.original = content;
        in.now = b.received_at;
        in.unique = b.queue_id;
        const std::string dsn = build_dsn(in);
        upstream::StoreResult r = co_await spool_.writer().store(b, std::string(), dsn);
        if (r.error) {
            stored = false;
            log(LogLevel::kError, "bounce_store_failed",
                {{"queue_id", id}, {"step", r.step}, {"error", r.error.message()}});
        } else {
            log(LogLevel::kInfo, "bounce_queued",
                {{"queue_id", id},
                 {"bounce_id", b.queue_id},
                 {"to", e.mail_from.sender.mailbox()},
                 {"nrcpt", report.size()}});
            SpooledMessage sm;
            sm.envelope = std::move(b);
            sm.size = dsn.size();
            sm.recipients.resize(1);
            submit(std::move(sm));
        }
    }
    it = messages_.find(id);
    if (it == messages_.end()) co_return;
    it->second.bouncing = false;
    if (!stored) {
        // Tried again after retry_min: an attempt with nothing pending settles the message,
        // which starts the bounce again.
        if (!it->second.any(RecipientStatus::kPending)) {
            Route& r = routes_.at(it->second.envelope.route);
            schedule(it->second, std::chrono::steady_clock::now() + r.policy.min);
        }
        co_return;
    }
    for (size_t i : indices) {
        it->second.recipients[i].bounced = true;
        spool_.record_bounced(id, i);
    }
    settle(id);
}

}  // namespace postern::queue
