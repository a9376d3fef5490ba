// Unit tests for the filter chain (filters/chain.hpp) with small C++ filters: order, the end of
// a stage (accept, the first other verdict), failures that tempfail with 451 4.3.0 unless the
// filter fails open, replies that do not suit their action, and the default replies.
#include "filters/chain.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace postern::filters {
namespace {

namespace asio = boost::asio;

using Strings = std::vector<std::string>;

// A filter that records its calls in a shared log and answers with `decide`.
class StubFilter : public Filter {
  public:
    using Decide = std::function<Verdict(HookContext&)>;

    StubFilter(std::string name, Strings* calls, Decide decide,
               std::set<Stage> stages = {Stage::kConnect, Stage::kHelo, Stage::kAuth,
                                         Stage::kMailFrom, Stage::kRcptTo, Stage::kData})
        : name_(std::move(name)),
          calls_(calls),
          decide_(std::move(decide)),
          stages_(std::move(stages)) {}

    bool handles(Stage stage) const override { return stages_.count(stage) > 0; }

    asio::awaitable<Verdict> on_stage(HookContext& ctx) override {
        calls_->push_back(name_ + "@" + stage_name(ctx.stage));
        co_return decide_(ctx);
    }

    void notify(Event event, const Connection*, const Transaction&,
                const DeliveryResult&) override {
        calls_->push_back(name_ + " notified " + event_name(event));
        if (throw_on_notify) throw std::runtime_error("notify failed");
    }

    bool reload(std::string& error) override {
        calls_->push_back(name_ + " reloaded");
        if (!reload_error.empty()) error = reload_error;
        return reload_error.empty();
    }

    bool throw_on_notify = false;
    std::string reload_error;

  private:
    std::string name_;
    Strings* calls_;
    Decide decide_;
    std::set<Stage> stages_;
};

Verdict verdict(Action action, std::optional<FilterReply> reply = std::nullopt,
                std::string reason = "") {
    Verdict v;
    v.action = action;
    v.reply = std::move(reply);
    v.reason = std::move(reason);
    return v;
}

StubFilter::Decide answer(Verdict v) {
    return [v](HookContext&) { return v; };
}

StubFilter::Decide go_on() {
    return answer(Verdict{});
}

class ChainTest : public ::testing::Test {
  protected:
    // Adds a filter; returns it for further set-up (the chain owns it).
    StubFilter* add(const std::string& name, StubFilter::Decide decide, bool fail_open = false,
                    std::set<Stage> stages = {Stage::kConnect, Stage::kHelo, Stage::kAuth,
                                              Stage::kMailFrom, Stage::kRcptTo, Stage::kData}) {
        auto filter =
            std::make_unique<StubFilter>(name, &calls_, std::move(decide), std::move(stages));
        StubFilter* raw = filter.get();
        chain_.add(Chain::Entry{name, std::move(filter), fail_open});
        return raw;
    }

    Verdict run(Stage stage) {
        HookContext ctx;
        ctx.stage = stage;
        ctx.conn = &conn_;
        if (stage >= Stage::kMailFrom) ctx.tx = &tx_;
        ctx.trace = &trace_;
        asio::io_context io;
        auto future = asio::co_spawn(io, chain_.run(ctx), asio::use_future);
        io.run();
        return future.get();
    }

    // The failure tempfail: 451 4.3.0, whatever the filter said.
    static void expect_failure_tempfail(const Verdict& v, const std::string& filter) {
        EXPECT_EQ(v.action, Action::kTempfail);
        ASSERT_TRUE(v.reply.has_value());
        EXPECT_EQ(v.reply->code, 451);
        EXPECT_EQ(v.reply->enhanced, "4.3.0");
        EXPECT_EQ(v.reply->text, "Policy check failed; try again later");
        EXPECT_EQ(v.reason, "filter " + filter + " failed");
        // The failure stays visible: the session does not count it against the client.
        EXPECT_TRUE(v.failure.has_value());
    }

    bool traced(const std::string& line) const {
        for (const std::string& t : trace_) {
            if (t.find(line) != std::string::npos) return true;
        }
        return false;
    }

    Chain chain_;
    Strings calls_;
    Strings trace_;
    Connection conn_{"192.0.2.1", 2525, "inbound", "", "", "", ""};
    Transaction tx_;
};

// ---- order and the end of a stage ---------------------------------------------------------------

TEST_F(ChainTest, EmptyChainContinues) {
    EXPECT_TRUE(chain_.empty());
    EXPECT_FALSE(chain_.handles(Stage::kConnect));
    Verdict v = run(Stage::kConnect);
    EXPECT_EQ(v.action, Action::kContinue);
    EXPECT_FALSE(v.reply.has_value());
    EXPECT_FALSE(v.failure.has_value());
}

TEST_F(ChainTest, RunsFiltersInOrder) {
    add("a", go_on());
    add("b", go_on());
    add("c", go_on());
    EXPECT_FALSE(chain_.empty());
    ASSERT_EQ(chain_.entries().size(), 3u);
    EXPECT_EQ(chain_.entries()[1].name, "b");
    Verdict v = run(Stage::kHelo);
    EXPECT_EQ(v.action, Action::kContinue);
    EXPECT_EQ(calls_, (Strings{"a@helo", "b@helo", "c@helo"}));
}

TEST_F(ChainTest, SkipsFiltersWithoutTheStage) {
    add("connect_only", go_on(), false, {Stage::kConnect});
    add("data_only", answer(verdict(Action::kReject)), false, {Stage::kData});
    EXPECT_TRUE(chain_.handles(Stage::kConnect));
    EXPECT_TRUE(chain_.handles(Stage::kData));
    EXPECT_FALSE(chain_.handles(Stage::kRcptTo));
    EXPECT_EQ(run(Stage::kConnect).action, Action::kContinue);
    EXPECT_EQ(run(Stage::kRcptTo).action, Action::kContinue);
    EXPECT_EQ(run(Stage::kData).action, Action::kReject);
    EXPECT_EQ(calls_, (Strings{"connect_only@connect", "data_only@data"}));
}

TEST_F(ChainTest, AcceptSkipsTheRestOfTheStageOnly) {
    add("a", go_on());
    add("allow", [](HookContext& ctx) {
        return ctx.stage == Stage::kMailFrom ? verdict(Action::kAccept, std::nullopt, "trusted")
                                             : Verdict{};
    });
    add("deny", answer(verdict(Action::kReject)));
    Verdict v = run(Stage::kMailFrom);
    EXPECT_EQ(v.action, Action::kAccept);
    EXPECT_EQ(v.reason, "trusted");
    EXPECT_FALSE(v.reply.has_value()) << "accept needs no reply";
    EXPECT_EQ(calls_, (Strings{"a@mail_from", "allow@mail_from"}));

    // The next stage runs every filter again.
    calls_.clear();
    EXPECT_EQ(run(Stage::kRcptTo).action, Action::kReject);
    EXPECT_EQ(calls_, (Strings{"a@rcpt_to", "allow@rcpt_to", "deny@rcpt_to"}));
}

TEST_F(ChainTest, FirstVerdictOtherThanContinueWins) {
    add("a", go_on());
    add("busy", answer(verdict(Action::kTempfail, FilterReply{450, "4.2.0", "Mailbox busy"},
                               "greylisted")));
    add("deny", answer(verdict(Action::kReject, FilterReply{554, "5.7.1", "no"})));
    Verdict v = run(Stage::kRcptTo);
    EXPECT_EQ(v.action, Action::kTempfail);
    ASSERT_TRUE(v.reply.has_value());
    EXPECT_EQ(v.reply->code, 450);
    EXPECT_EQ(v.reply->enhanced, "4.2.0");
    EXPECT_EQ(v.reply->text, "Mailbox busy");
    EXPECT_EQ(v.reason, "greylisted");
    EXPECT_EQ(calls_, (Strings{"a@rcpt_to", "busy@rcpt_to"}));
}

TEST_F(ChainTest, DiscardAndDisconnectEndTheStage) {
    add("drop", [](HookContext& ctx) {
        return ctx.stage == Stage::kData ? verdict(Action::kDiscard) : Verdict{};
    });
    add("bye", answer(verdict(Action::kDisconnect, FilterReply{554, "5.7.1", "Go away"})));
    Verdict discard = run(Stage::kData);
    EXPECT_EQ(discard.action, Action::kDiscard);
    EXPECT_FALSE(discard.reply.has_value());
    Verdict bye = run(Stage::kConnect);
    EXPECT_EQ(bye.action, Action::kDisconnect);
    ASSERT_TRUE(bye.reply.has_value());
    EXPECT_EQ(bye.reply->code, 554);
}

TEST_F(ChainTest, TheFilterSeesTheContext) {
    std::string seen;
    add("look", [&](HookContext& ctx) {
        seen = std::string(stage_name(ctx.stage)) + " " + ctx.conn->ip + " " +
               (ctx.tx ? ctx.tx->id : "-");
        return Verdict{};
    });
    tx_.id = "01TESTQUEUEID";
    run(Stage::kMailFrom);
    EXPECT_EQ(seen, "mail_from 192.0.2.1 01TESTQUEUEID");
}

// ---- failures -----------------------------------------------------------------------------------

TEST_F(ChainTest, ThrowingFilterTempfails) {
    add("a", go_on());
    add("broken", [](HookContext&) -> Verdict { throw std::runtime_error("lookup exploded"); });
    add("never", answer(verdict(Action::kAccept)));
    Verdict v = run(Stage::kMailFrom);
    expect_failure_tempfail(v, "broken");
    EXPECT_EQ(calls_, (Strings{"a@mail_from", "broken@mail_from"}));
    EXPECT_TRUE(traced("filter broken failed: lookup exploded"));
    EXPECT_EQ(chain_.failed_open(), 0u);
}

TEST_F(ChainTest, FailureVerdictTempfailsWhateverItsAction) {
    Verdict failed = verdict(Action::kAccept);
    failed.failure = "script.lua:3: attempt to index a nil value";
    add("script", answer(failed));
    add("never", go_on());
    Verdict v = run(Stage::kHelo);
    expect_failure_tempfail(v, "script");
    EXPECT_EQ(calls_, (Strings{"script@helo"}));
    EXPECT_TRUE(traced("filter script failed: script.lua:3: attempt to index a nil value"));
}

TEST_F(ChainTest, FailOpenContinuesAndCounts) {
    add(
        "broken", [](HookContext&) -> Verdict { throw std::runtime_error("down"); }, true);
    Verdict failed;
    failed.failure = "budget";
    add("also_broken", answer(failed), true);
    add("deny", answer(verdict(Action::kReject, FilterReply{550, "5.7.1", "Denied"})));
    Verdict v = run(Stage::kRcptTo);
    EXPECT_EQ(v.action, Action::kReject);
    ASSERT_TRUE(v.reply.has_value());
    EXPECT_EQ(v.reply->text, "Denied");
    EXPECT_EQ(calls_, (Strings{"broken@rcpt_to", "also_broken@rcpt_to", "deny@rcpt_to"}));
    EXPECT_EQ(chain_.failed_open(), 2u);
    EXPECT_TRUE(traced("filter broken failed: down"));

    run(Stage::kRcptTo);
    EXPECT_EQ(chain_.failed_open(), 4u) << "every failure counts";
}

TEST_F(ChainTest, FailOpenOnlyForItsOwnFilter) {
    add(
        "open", [](HookContext&) -> Verdict { throw std::runtime_error("x"); }, true);
    add(
        "closed", [](HookContext&) -> Verdict { throw std::runtime_error("y"); }, false);
    expect_failure_tempfail(run(Stage::kConnect), "closed");
    EXPECT_EQ(chain_.failed_open(), 1u);
}

// ---- replies that do not suit their action ------------------------------------------------------

TEST_F(ChainTest, RejectWith4xxIsAFailure) {
    add("bad", answer(verdict(Action::kReject, FilterReply{451, "4.7.1", "later"})));
    add("never", go_on());
    Verdict v = run(Stage::kRcptTo);
    expect_failure_tempfail(v, "bad");
    EXPECT_TRUE(traced("filter bad failed: bad verdict: a reject needs a 5xx code, not 451"));
    EXPECT_EQ(calls_, (Strings{"bad@rcpt_to"}));
}

TEST_F(ChainTest, OtherBadRepliesAreFailures) {
    const FilterReply bad_replies[] = {
        {550, "5.7.1", "line\r\n250 injected"},  // control characters
        {550, "4.7.1", "class mismatch"},
        {550, "5.7", "syntax"},
        {550, "5.7.1", std::string(401, 'x')},
    };
    for (const FilterReply& r : bad_replies) {
        Chain chain;
        Strings calls;
        chain.add(Chain::Entry{
            "bad", std::make_unique<StubFilter>("bad", &calls, answer(verdict(Action::kReject, r))),
            false});
        HookContext ctx;
        ctx.stage = Stage::kConnect;
        asio::io_context io;
        auto future = asio::co_spawn(io, chain.run(ctx), asio::use_future);
        io.run();
        Verdict v = future.get();
        EXPECT_EQ(v.action, Action::kTempfail) << r.text;
        ASSERT_TRUE(v.reply.has_value());
        EXPECT_EQ(v.reply->enhanced, "4.3.0") << r.text;
    }
}

TEST_F(ChainTest, TempfailWith5xxAndDisconnectWith450AreFailures) {
    add("a", [](HookContext& ctx) {
        return ctx.stage == Stage::kHelo
                   ? verdict(Action::kTempfail, FilterReply{550, "5.7.1", "x"})
                   : verdict(Action::kDisconnect, FilterReply{450, "4.7.0", "x"});
    });
    expect_failure_tempfail(run(Stage::kHelo), "a");
    EXPECT_TRUE(traced("a tempfail needs a 4xx code, not 550"));
    expect_failure_tempfail(run(Stage::kConnect), "a");
    EXPECT_TRUE(traced("a disconnect needs 421 or a 5xx code, not 450"));
}

TEST_F(ChainTest, BadReplyFailsOpenToo) {
    add("bad", answer(verdict(Action::kReject, FilterReply{451, "", "x"})), true);
    add("next", answer(verdict(Action::kAccept)));
    EXPECT_EQ(run(Stage::kData).action, Action::kAccept);
    EXPECT_EQ(chain_.failed_open(), 1u);
}

// ---- default replies ----------------------------------------------------------------------------

TEST_F(ChainTest, VerdictsWithoutReplyGetTheDefault) {
    struct Case {
        Action action;
        int code;
        const char* enhanced;
        const char* text;
    };
    const Case cases[] = {
        {Action::kReject, 550, "5.7.1", "Rejected by policy"},
        {Action::kTempfail, 451, "4.7.1", "Try again later"},
        {Action::kDisconnect, 421, "4.7.0", "Closing connection"},
    };
    for (const Case& c : cases) {
        Chain chain;
        Strings calls;
        chain.add(Chain::Entry{
            "f", std::make_unique<StubFilter>("f", &calls, answer(verdict(c.action))), false});
        HookContext ctx;
        asio::io_context io;
        auto future = asio::co_spawn(io, chain.run(ctx), asio::use_future);
        io.run();
        Verdict v = future.get();
        EXPECT_EQ(v.action, c.action) << action_name(c.action);
        ASSERT_TRUE(v.reply.has_value()) << action_name(c.action);
        EXPECT_EQ(v.reply->code, c.code);
        EXPECT_EQ(v.reply->enhanced, c.enhanced);
        EXPECT_EQ(v.reply->text, c.text);
        // The defaults pass their own check.
        EXPECT_FALSE(check_reply(c.action, Chain::default_reply(c.action)).has_value());
    }
    EXPECT_EQ(Chain::default_reply(Action::kAccept).code, 0) << "accept has no reply";
    EXPECT_EQ(Chain::default_reply(Action::kContinue).code, 0);
}

// ---- notifications and reload -------------------------------------------------------------------

TEST_F(ChainTest, NotifyReachesEveryFilterEvenAfterAThrow) {
    add("a", go_on())->throw_on_notify = true;
    add("b", go_on());
    chain_.notify(Event::kQueued, &conn_, tx_, DeliveryResult{"", "250 2.0.0 Ok", "default"});
    EXPECT_EQ(calls_, (Strings{"a notified queued", "b notified queued"}));
}

TEST_F(ChainTest, ReloadReportsEachFailingFilter) {
    add("a", go_on());
    add("b", go_on())->reload_error = "policy.lua:3: syntax error";
    add("c", go_on())->reload_error = "cannot read";
    EXPECT_EQ(chain_.reload(), (Strings{"b: policy.lua:3: syntax error", "c: cannot read"}));
    EXPECT_EQ(calls_, (Strings{"a reloaded", "b reloaded", "c reloaded"}));
}

}  // namespace
}  // namespace postern::filters
