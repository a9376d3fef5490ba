// The queue scheduler and one delivery attempt; see scheduler.hpp.
#include "proxy/queue/scheduler.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "proxy/await_token.hpp"
#include "proxy/observe/log.hpp"
#include "proxy/upstream/route_table.hpp"

namespace postern::queue {

using config::LogLevel;
using observe::log;

namespace {

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
    } else if (Spool::Read read = spool.read_content(m, content, error); read != Spool::Read::kOk) {
        if (read == Spool::Read::kCorrupt) {
            out.corrupt = error;
        } else {
            all(pending, RecipientStatus::kPending, error);
        }
        co_return out;
    }
    upstream::Acquired acquired = co_await pool.acquire();
    if (!acquired.lease) {
        all(pending, RecipientStatus::kPending, acquired.failure.reason);
        co_return out;
    }
    upstream::Lease lease = std::move(acquired.lease);
    out.upstream_dsn = lease->capabilities().dsn;
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
        r.delay_warning = route.delay_warning;
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
    m.next_attempt = when;
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
            const auto when = route.due.begin()->first;
            std::string id = route.due.begin()->second;
            route.due.erase(route.due.begin());
            auto it = messages_.find(id);
            if (it == messages_.end()) continue;
            SpooledMessage& m = it->second;
            // An entry made stale by a flush, a hold or a deletion.
            if (m.running || m.held || m.deleted || m.next_attempt != when) continue;
            m.next_attempt = {};
            m.running = true;
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
    m.running = false;
    if (!m.deleted && !result.corrupt.empty()) {
        // Never sent: what is on disk is not what the client handed over (spool_corrupt).
        spool_.quarantine(id, result.corrupt);
        messages_.erase(it);
        return;
    }
    const auto age = std::chrono::system_clock::now() - m.envelope.received_at;
    const auto delay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(age).count();
    std::vector<size_t> final_states;  // recipients that reached a final state now
    std::vector<size_t> relayed;       // delivered, and the sender asked to hear of it
    auto log_delivery = [&](size_t index, const char* outcome, const std::string& reply) {
        log(std::string_view(outcome) == "deferred" ? LogLevel::kWarn : LogLevel::kInfo, "delivery",
            {{"queue_id", id},
             {"rcpt", m.envelope.recipients[index].recipient.mailbox()},
             {"route", m.envelope.route},
             {"upstream", config_.routes.at(m.envelope.route).upstream},
             {"host", result.host},
             {"attempt", m.attempts},
             {"delay_ms", static_cast<int64_t>(delay_ms)},
             {"result", outcome},
             {"reply", reply}});
    };
    for (RecipientResult& r : result.recipients) {
        RecipientState& state = m.recipients.at(r.index);
        state.reply = r.reply;
        state.status = r.status;
        log_delivery(r.index,
                     r.status == RecipientStatus::kDelivered ? "delivered"
                     : r.status == RecipientStatus::kFailed  ? "failed"
                                                             : "deferred",
                     r.reply);
        if (r.status != RecipientStatus::kPending) final_states.push_back(r.index);
        if (r.status == RecipientStatus::kDelivered && !result.upstream_dsn &&
            wants_notice(m.envelope.recipients[r.index], DsnAction::kRelayed)) {
            relayed.push_back(r.index);
        }
        if (r.status == RecipientStatus::kPending) m.last_error = r.reply;
    }
    if (m.deleted) {
        // By the operator while the attempt ran (the lines above say how it ended); the files
        // are gone already.
        messages_.erase(it);
        return;
    }
    if (m.any(RecipientStatus::kPending) && age >= route.max_age) {
        for (size_t i = 0; i < m.recipients.size(); ++i) {
            RecipientState& state = m.recipients[i];
            if (state.status != RecipientStatus::kPending) continue;
            state.status = RecipientStatus::kFailed;
            state.reply = "expired: not delivered within max_age; last error: " + state.reply;
            log_delivery(i, "failed", state.reply);
            final_states.push_back(i);
        }
    }
    if (outcome_) {
        for (size_t i : final_states) {
            outcome_(m.envelope, i, m.recipients[i].status == RecipientStatus::kDelivered,
                     m.recipients[i].reply);
        }
    }
    if (!relayed.empty() && !m.envelope.mail_from.sender.null) {
        // The files may be gone by the time the notice is written: it gets the content now.
        auto content = m.content;
        if (!content) {
            std::string text;
            std::string error;
            if (spool_.read_content(m, text, error) == Spool::Read::kOk)
                content = std::make_shared<const std::string>(std::move(text));
        }
        SpooledMessage copy = m;
        copy.content = content ? content : std::make_shared<const std::string>();
        asio::co_spawn(home_, notify(std::move(copy), DsnAction::kRelayed, std::move(relayed)),
                       asio::detached);
        it = messages_.find(id);  // the notice may have run up to its first wait
        if (it == messages_.end()) return;
    }
    SpooledMessage& msg = it->second;
    msg.content.reset();  // later attempts read the file: no message bodies held while waiting
    // A message delivered to everyone now is removed at once: its state lines would only be
    // written to be deleted. Otherwise they go to disk (a crash then resends no delivered one).
    if (msg.any(RecipientStatus::kPending) || msg.any(RecipientStatus::kFailed)) {
        for (size_t i : final_states) spool_.record(id, i, msg.recipients[i]);
    }
    if (msg.any(RecipientStatus::kPending)) {
        spool_.record_attempts(id, msg.attempts, msg.last_error);
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        auto delay = route.policy.delay(msg.attempts, unit(random_));
        log(LogLevel::kInfo, "deferred",
            {{"queue_id", id},
             {"attempts", msg.attempts},
             {"next_attempt_s", static_cast<int64_t>((delay.count() + 999) / 1000)}});
        schedule(msg, std::chrono::steady_clock::now() + delay);
        maybe_warn(msg, age);
    }
    settle(id);
}

void Scheduler::maybe_warn(SpooledMessage& m, std::chrono::system_clock::duration age) {
    const Route& route = routes_.at(m.envelope.route);
    if (route.delay_warning.count() == 0 || m.delay_warned || age < route.delay_warning) return;
    std::vector<size_t> indices;
    size_t pending = 0;
    for (size_t i = 0; i < m.recipients.size(); ++i) {
        if (m.recipients[i].status != RecipientStatus::kPending) continue;
        ++pending;
        if (wants_notice(m.envelope.recipients[i], DsnAction::kDelayed)) indices.push_back(i);
    }
    m.delay_warned = true;
    if (m.envelope.mail_from.sender.null || indices.empty()) {
        log(LogLevel::kInfo, "bounce_skipped",
            {{"queue_id", m.envelope.queue_id},
             {"kind", "delay warning"},
             {"reason",
              m.envelope.mail_from.sender.null ? "null sender" : "NOTIFY does not ask for it"},
             {"nrcpt", pending}});
        spool_.record_flag(m.envelope.queue_id, 'W');
        return;
    }
    SpooledMessage copy = m;
    copy.content.reset();
    asio::co_spawn(home_, notify(std::move(copy), DsnAction::kDelayed, std::move(indices)),
                   asio::detached);
}

void Scheduler::settle(const std::string& id) {
    auto it = messages_.find(id);
    if (it == messages_.end()) return;
    SpooledMessage& m = it->second;
    if (!m.bouncing && !m.running) {
        std::vector<size_t> unreported;
        for (size_t i = 0; i < m.recipients.size(); ++i) {
            const RecipientState& r = m.recipients[i];
            if (r.status == RecipientStatus::kFailed && !r.bounced) unreported.push_back(i);
        }
        if (!unreported.empty()) {
            m.bouncing = true;
            SpooledMessage copy = m;
            copy.content.reset();
            // notify() may run to its end inside co_spawn (nothing to store: it does not wait)
            // and settle the message itself, erasing it: `m` must not be used after this.
            asio::co_spawn(home_,
                           notify(std::move(copy), DsnAction::kFailed, std::move(unreported)),
                           asio::detached);
            return;
        }
    }
    if (m.any(RecipientStatus::kPending) || m.bouncing || m.running) return;
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

asio::awaitable<void> Scheduler::notify(SpooledMessage original, DsnAction action,
                                        std::vector<size_t> indices) {
    const std::string id = original.envelope.queue_id;
    const Envelope& e = original.envelope;
    const char* kind = action == DsnAction::kFailed    ? "bounce"
                       : action == DsnAction::kDelayed ? "delay warning"
                                                       : "relayed notice";
    std::vector<ReportedRecipient> report;
    for (size_t i : indices) {
        if (!wants_notice(e.recipients[i], action)) continue;
        const std::string& reply = original.recipients[i].reply;
        report.push_back({i, reply, reply.rfind("expired:", 0) == 0});
    }
    bool stored = true;
    if (e.mail_from.sender.null || report.empty()) {
        // RFC 5321 6.1 / 4.5.5: never a notice to <>; NOTIFY may ask for none.
        log(LogLevel::kInfo, "bounce_skipped",
            {{"queue_id", id},
             {"kind", kind},
             {"reason", e.mail_from.sender.null ? "null sender" : "NOTIFY does not ask for it"},
             {"nrcpt", indices.size()}});
    } else {
        std::string content;
        std::string error;
        if (original.content) {
            content = *original.content;
        } else if (spool_.read_content(original, content, error) != Spool::Read::kOk) {
            content.clear();  // no headers then
        }
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
        in.action = action;
        in.reporting_mta = config_.server.hostname;
        in.envelope = &e;
        in.recipients = report;
        in.original = content;
        in.now = b.received_at;
        in.unique = b.queue_id;
        if (auto r = routes_.find(e.route); r != routes_.end()) {
            in.will_retry_until = e.received_at + r->second.max_age;
        }
        const std::string dsn = build_dsn(in);
        upstream::StoreResult r = co_await spool_.writer().store(b, std::string(), dsn);
        if (r.error) {
            stored = false;
            log(LogLevel::kError, "bounce_store_failed",
                {{"queue_id", id}, {"kind", kind}, {"step", r.step}, {"error", r.error.message()}});
        } else {
            log(LogLevel::kInfo, "bounce_queued",
                {{"queue_id", id},
                 {"kind", kind},
                 {"bounce_id", b.queue_id},
                 {"to", e.mail_from.sender.mailbox()},
                 {"nrcpt", report.size()}});
            SpooledMessage sm;
            sm.envelope = std::move(b);
            sm.size = dsn.size();
            sm.crc32 = r.crc32;
            sm.recipients.resize(1);
            submit(std::move(sm));
        }
    }
    if (action == DsnAction::kRelayed) co_return;  // best effort: nothing kept about it
    auto it = messages_.find(id);
    if (it == messages_.end() || it->second.deleted) co_return;
    SpooledMessage& m = it->second;
    if (action == DsnAction::kDelayed) {
        if (stored) {
            spool_.record_flag(id, 'W');
        } else {
            m.delay_warned = false;  // tried again after the next attempt
        }
        co_return;
    }
    m.bouncing = false;
    if (!stored) {
        // Tried again after retry_min: an attempt with nothing pending settles the message,
        // which starts the bounce again.
        if (!m.any(RecipientStatus::kPending)) {
            Route& r = routes_.at(m.envelope.route);
            schedule(m, std::chrono::steady_clock::now() + r.policy.min);
        }
        co_return;
    }
    for (size_t i : indices) {
        m.recipients[i].bounced = true;
        spool_.record_bounced(id, i);
    }
    settle(id);
}

std::vector<QueueEntry> Scheduler::entries(const std::string& id, const std::string& route) const {
    std::vector<QueueEntry> out;
    const auto now = std::chrono::steady_clock::now();
    auto add = [&](const SpooledMessage& m) {
        if (m.deleted) return;
        QueueEntry e;
        e.envelope = m.envelope;
        e.size = m.size;
        e.recipients = m.recipients;
        e.attempts = m.attempts;
        e.last_error = m.last_error;
        e.state = m.running    ? "running"
                  : m.held     ? "held"
                  : m.bouncing ? "bouncing"
                  : m.attempts ? "deferred"
                               : "queued";
        if (m.next_attempt != std::chrono::steady_clock::time_point{} && !m.running && !m.held) {
            e.next_attempt_in = std::max(
                std::chrono::milliseconds(0),
                std::chrono::duration_cast<std::chrono::milliseconds>(m.next_attempt - now));
        }
        out.push_back(std::move(e));
    };
    if (!id.empty()) {
        if (auto it = messages_.find(id); it != messages_.end()) add(it->second);
        return out;
    }
    for (const auto& [key, m] : messages_) {
        if (route.empty() || m.envelope.route == route) add(m);
    }
    std::sort(out.begin(), out.end(), [](const QueueEntry& a, const QueueEntry& b) {
        return a.envelope.queue_id < b.envelope.queue_id;  // queue ids sort by time
    });
    return out;
}

size_t Scheduler::flush(const std::string& id, const std::string& route) {
    size_t n = 0;
    const auto now = std::chrono::steady_clock::now();
    for (auto& [key, m] : messages_) {
        if ((!id.empty() && key != id) || (!route.empty() && m.envelope.route != route)) continue;
        if (m.deleted || m.running || m.held) continue;
        if (m.next_attempt == std::chrono::steady_clock::time_point{}) continue;
        schedule(m, now);
        ++n;
    }
    log(LogLevel::kInfo, "queue_flush",
        {{"queue_id", id}, {"route", route}, {"messages", static_cast<int64_t>(n)}});
    return n;
}

bool Scheduler::hold(const std::string& id) {
    auto it = messages_.find(id);
    if (it == messages_.end() || it->second.deleted) return false;
    if (!it->second.held) {
        it->second.held = true;
        spool_.record_flag(id, 'H');
        log(LogLevel::kInfo, "queue_hold", {{"queue_id", id}});
    }
    return true;
}

bool Scheduler::release(const std::string& id) {
    auto it = messages_.find(id);
    if (it == messages_.end() || it->second.deleted) return false;
    SpooledMessage& m = it->second;
    if (m.held) {
        m.held = false;
        spool_.record_flag(id, 'R');
        log(LogLevel::kInfo, "queue_release", {{"queue_id", id}});
        if (!m.running && (m.any(RecipientStatus::kPending) ||
                           m.next_attempt != std::chrono::steady_clock::time_point{})) {
            schedule(m, std::chrono::steady_clock::now());
        }
    }
    return true;
}

bool Scheduler::remove(const std::string& id) {
    auto it = messages_.find(id);
    if (it == messages_.end() || it->second.deleted) return false;
    spool_.remove(id);
    log(LogLevel::kWarn, "queue_delete",
        {{"queue_id", id},
         {"from", it->second.envelope.mail_from.sender.mailbox()},
         {"detail", "deleted by the operator; no notice to the sender"}});
    if (it->second.running) {
        it->second.deleted = true;  // finish() forgets it
    } else {
        messages_.erase(it);
    }
    return true;
}

}  // namespace postern::queue
