// The filter chain (DESIGN.md "Filter chain"): the configured filters, run in order at each
// stage. The first verdict other than continue ends the stage (accept only skips the remaining
// filters). A filter that fails (throws, times out, a script error) tempfails the stage with
// 451 4.3.0, unless its on_error is "continue": then the failure is logged and counted, and the
// chain goes on. Replies are checked: a reject never carries a 4xx, a tempfail never a 5xx.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "filters/filter.hpp"

namespace postern::filters {

class Chain {
  public:
    struct Entry {
        std::string name;
        std::unique_ptr<Filter> filter;
        bool fail_open = false;  // on_error = "continue"
    };

    void add(Entry entry);
    bool empty() const { return entries_.empty(); }
    bool handles(Stage stage) const;
    const std::vector<Entry>& entries() const { return entries_; }

    // The stage's verdict, with a checked reply for reject, tempfail and disconnect.
    boost::asio::awaitable<Verdict> run(HookContext& ctx);
    void notify(Event event, const Connection* conn, const Transaction& tx,
                const DeliveryResult& result);
    // SIGHUP: every filter reloads; a filter that fails keeps its old version. The errors, one
    // per failing filter, are returned.
    std::vector<std::string> reload();

    // Failures passed over by on_error = "continue", since start.
    uint64_t failed_open() const { return failed_open_.load(std::memory_order_relaxed); }

    // The reply a verdict gets when the filter gave none (e.g. 550 5.7.1 for a reject).
    static FilterReply default_reply(Action action);

  private:
    std::vector<Entry> entries_;
    std::atomic<uint64_t> failed_open_{0};
};

}  // namespace postern::filters
