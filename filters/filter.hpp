// The filter interface (DESIGN.md "Filter chain"): a filter sees the connection and the
// transaction at each stage and answers with a Verdict. Filters never open the relay: relay
// permission is decided by the core before any filter runs.
//
// No filter is wired into the session yet; the chain arrives with the policy-engine issue. This
// header fixes the vocabulary so that filters and the server can be built against it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>

namespace postern::filters {

enum class Action {
    kContinue,    // go on with the next filter of this stage (the default)
    kAccept,      // skip the remaining filters of this stage; the transaction goes on
    kReject,      // refuse with a 5xx reply
    kTempfail,    // refuse with a 4xx reply; the client retries later
    kDiscard,     // answer as accepted, deliver nothing, log it
    kDisconnect,  // answer 421 and close the connection
};

struct FilterReply {
    int code = 0;          // 4xx for kTempfail, 5xx for kReject; checked by the chain
    std::string enhanced;  // RFC 3463, e.g. "5.7.1"
    std::string text;
};

struct Verdict {
    Action action = Action::kContinue;
    std::optional<FilterReply> reply;
    std::string reason;  // for the log, never sent to the client
};

// Read-only views handed to filters; the fields grow with the policy-engine issue.
struct ConnectionView {
    std::string client_ip;
    std::string listener;
    std::string helo;
    std::string auth_user;  // empty when not authenticated
};

struct TransactionView {
    std::string queue_id;
    std::string mail_from;
};

// One filter instance serves many sessions concurrently, from several I/O threads: it keeps no
// per-session state of its own (that belongs on the transaction) and guards any shared state.
//
// Lifetime: the views passed by reference stay valid until the returned awaitable completes;
// the caller keeps them alive across every co_await of the hook. A hook that throws is a failed
// filter: the chain applies the filter's on_error policy (tempfail by default), never "continue".
class Filter {
public:
    virtual ~Filter() = default;

    // Decision hooks, one per SMTP stage; the default continues.
    virtual boost::asio::awaitable<Verdict> on_connect(const ConnectionView&) {
        co_return Verdict{};
    }
    virtual boost::asio::awaitable<Verdict> on_helo(const ConnectionView&) { co_return Verdict{}; }
    virtual boost::asio::awaitable<Verdict> on_auth(const ConnectionView&) { co_return Verdict{}; }
    virtual boost::asio::awaitable<Verdict> on_mail_from(const ConnectionView&,
                                                         const TransactionView&) {
        co_return Verdict{};
    }
    virtual boost::asio::awaitable<Verdict> on_rcpt_to(const ConnectionView&,
                                                       const TransactionView&,
                                                       const std::string& /*recipient*/) {
        co_return Verdict{};
    }
    virtual boost::asio::awaitable<Verdict> on_data(const ConnectionView&,
                                                    const TransactionView&) {
        co_return Verdict{};
    }

    // Notifications: they cannot refuse anything and must not block.
    virtual void on_queued(const ConnectionView&, const TransactionView&) {}
    virtual void on_reset(const ConnectionView&) {}
    virtual void on_disconnect(const ConnectionView&) {}
};

}  // namespace postern::filters
