// The filter chain; see chain.hpp.
#include "filters/chain.hpp"

#include <exception>

#include "proxy/observe/log.hpp"

namespace postern::filters {

using config::LogLevel;
using observe::log;

void Chain::add(Entry entry) {
    entries_.push_back(std::move(entry));
}

bool Chain::handles(Stage stage) const {
    for (const Entry& e : entries_) {
        if (e.filter->handles(stage)) return true;
    }
    return false;
}

FilterReply Chain::default_reply(Action action) {
    switch (action) {
        case Action::kReject:
            return {550, "5.7.1", "Rejected by policy"};
        case Action::kTempfail:
            return {451, "4.7.1", "Try again later"};
        case Action::kDisconnect:
            return {421, "4.7.0", "Closing connection"};
        default:
            return {};
    }
}

boost::asio::awaitable<Verdict> Chain::run(HookContext& ctx) {
    static const std::string kNone;
    const std::string& queue_id = ctx.tx ? ctx.tx->id : kNone;  // for the log lines only
    for (Entry& e : entries_) {
        if (!e.filter->handles(ctx.stage)) continue;
        Verdict v;
        try {
            v = co_await e.filter->on_stage(ctx);
        } catch (const std::exception& ex) {
            v = Verdict{};
            v.failure = ex.what();
        }
        const bool needs_reply = v.action == Action::kReject || v.action == Action::kTempfail ||
                                 v.action == Action::kDisconnect;
        if (!v.failure && needs_reply) {
            if (!v.reply) v.reply = default_reply(v.action);
            if (auto problem = check_reply(v.action, *v.reply))
                v.failure = "bad verdict: " + *problem;
        }
        if (v.failure) {
            log(LogLevel::kError, "filter_failed",
                {{"filter", e.name},
                 {"stage", stage_name(ctx.stage)},
                 {"queue_id", queue_id},
                 {"client", ctx.conn ? ctx.conn->ip : std::string()},
                 {"error", *v.failure},
                 {"on_error", e.fail_open ? "continue" : "tempfail"}});
            if (ctx.trace) ctx.trace->push_back("filter " + e.name + " failed: " + *v.failure);
            if (e.fail_open) {
                failed_open_.fetch_add(1, std::memory_order_relaxed);
                log(LogLevel::kWarn, "filter_failed_open",
                    {{"filter", e.name},
                     {"stage", stage_name(ctx.stage)},
                     {"queue_id", queue_id},
                     {"failed_open_total", failed_open()}});
                continue;
            }
            Verdict tempfail;
            tempfail.action = Action::kTempfail;
            tempfail.reply = FilterReply{451, "4.3.0", "Policy check failed; try again later"};
            tempfail.reason = "filter " + e.name + " failed";
            tempfail.failure = v.failure;  // callers tell a failure from a decision
            co_return tempfail;
        }
        if (v.action == Action::kContinue) continue;
        if (observe::log_enabled(LogLevel::kInfo)) {
            log(LogLevel::kInfo, "filter_verdict",
                {{"filter", e.name},
                 {"stage", stage_name(ctx.stage)},
                 {"queue_id", queue_id},
                 {"client", ctx.conn ? ctx.conn->ip : std::string()},
                 {"action", action_name(v.action)},
                 {"reply", v.reply ? std::to_string(v.reply->code) + " " + v.reply->enhanced + " " +
                                         v.reply->text
                                   : std::string()},
                 {"reason", v.reason}});
        }
        co_return v;
    }
    co_return Verdict{};
}

void Chain::notify(Event event, const Connection* conn, const Transaction& tx,
                   const DeliveryResult& result) {
    for (Entry& e : entries_) {
        try {
            e.filter->notify(event, conn, tx, result);
        } catch (const std::exception& ex) {
            log(LogLevel::kError, "filter_failed",
                {{"filter", e.name}, {"notification", event_name(event)}, {"error", ex.what()}});
        }
    }
}

std::vector<std::string> Chain::reload() {
    std::vector<std::string> errors;
    for (Entry& e : entries_) {
        std::string error;
        if (!e.filter->reload(error)) errors.push_back(e.name + ": " + error);
    }
    return errors;
}

}  // namespace postern::filters
