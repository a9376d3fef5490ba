// The filter interface (DESIGN.md "Filter chain"): a filter sees the connection and the
// transaction at each stage and answers with a Verdict; it changes the message only through the
// Transaction (tags, notes, route, recipient changes) and the Message (header edits). Filters
// never open the relay: relay permission is decided by the core before any filter runs.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "filters/header_block.hpp"

namespace postern::filters {

enum class Action {
    kContinue,    // go on with the next filter of this stage (the default)
    kAccept,      // skip the remaining filters of this stage; the transaction goes on
    kReject,      // refuse with a 5xx reply
    kTempfail,    // refuse with a 4xx reply; the client retries later
    kDiscard,     // answer as accepted, deliver nothing, log it
    kDisconnect,  // answer 421 (or the reply's 5xx) and close the connection
};
const char* action_name(Action action);

struct FilterReply {
    int code = 0;          // 4xx for kTempfail, 5xx for kReject; checked by check_reply
    std::string enhanced;  // RFC 3463, e.g. "5.7.1"
    std::string text;
};

struct Verdict {
    Action action = Action::kContinue;
    std::optional<FilterReply> reply;
    std::string reason;  // for the log, never sent to the client
    // Set when the filter failed (script error, budget or memory exceeded): the chain applies
    // the filter's on_error policy instead of the action.
    std::optional<std::string> failure;
};

// Why a reply does not suit its action ("a reject needs a 5xx code, not 451"), or nothing.
// A reject never carries 4xx, a tempfail never 5xx, a disconnect 421 or 5xx; the enhanced code
// has the reply's class; the text is one printable line.
std::optional<std::string> check_reply(Action action, const FilterReply& reply);

// The SMTP stages with a decision, in protocol order.
enum class Stage { kConnect, kHelo, kAuth, kMailFrom, kRcptTo, kData };
inline constexpr int kStageCount = 6;
const char* stage_name(Stage stage);

// Notifications: they cannot refuse anything.
enum class Event { kQueued, kDelivered, kFailed };
const char* event_name(Event event);

struct Connection {
    std::string ip;
    uint16_t port = 0;
    std::string listener;
    std::string helo;         // empty before HELO/EHLO
    std::string tls_version;  // empty without TLS
    std::string tls_cipher;
    std::string auth_user;  // empty when not authenticated
};

struct Address {
    std::string address;  // local@domain, or empty for the null sender <>
    std::string local;
    std::string domain;
    std::vector<std::pair<std::string, std::string>> params;  // ESMTP parameters, as sent

    static Address from_mailbox(std::string_view mailbox);
};

using NoteValue = std::variant<std::string, int64_t, double, bool>;

struct RecipientChange {
    bool add = true;
    std::string address;
};

struct Transaction {
    const Connection* conn = nullptr;
    std::string id;  // the queue id the message will have
    Address mail_from;
    std::vector<Address> rcpts;               // accepted so far (rcpt_to: the ones before this one)
    uint64_t size = 0;                        // declared SIZE until data, then the message's size
    std::map<std::string, std::string> tags;  // seen by later filters and in the log
    std::map<std::string, NoteValue> notes;   // per-transaction state kept between hooks
    std::string route;                        // set by a filter: overrides route selection
    std::vector<RecipientChange> rcpt_changes;  // applied by the server before storage
    // A new envelope sender from a filter ("" for <>), applied by the server after the hook.
    std::optional<std::string> new_mail_from;
    std::optional<std::string> spf;  // results, once those filters have run
    std::optional<std::string> dkim;
    // Passthrough: the recipients and the message go upstream live, so a filter cannot change
    // recipients or headers, nor the route once a recipient was relayed.
    bool live = false;
    bool route_locked = false;
    bool sender_locked = false;  // MAIL FROM went upstream (passthrough)
};

// The message at the data stage: its header section (editable) and its body (read-only).
struct Message {
    HeaderBlock headers;
    std::string_view body;  // what the server still holds of the body (see body_complete)
    uint64_t body_size = 0;
    bool body_complete = true;  // false in passthrough once the body streamed upstream
};

// What a notification reports.
struct DeliveryResult {
    std::string rcpt;   // empty: the message as a whole (queued)
    std::string reply;  // "250 2.0.0 Ok" or the reason
    std::string route;
};

// One hook call's arguments. `tx` is null at connect/helo/auth, `rcpt` is set at rcpt_to and
// `message` at data.
struct HookContext {
    Stage stage = Stage::kConnect;
    Connection* conn = nullptr;
    Transaction* tx = nullptr;
    const Address* rcpt = nullptr;
    Message* message = nullptr;
    // When set, a decision trace (`postern policy test`) collects what the filter did here.
    std::vector<std::string>* trace = nullptr;
};

// One filter instance serves many sessions concurrently, from several I/O threads: it keeps no
// per-session state of its own (that belongs on the transaction) and guards any shared state.
//
// Lifetime: the context and what it points to stay valid until the returned awaitable
// completes. A hook that throws is a failed filter: the chain applies the filter's on_error
// policy (tempfail by default), never "continue".
class Filter {
  public:
    virtual ~Filter() = default;

    // Whether the filter does anything at this stage; the chain skips it otherwise.
    virtual bool handles(Stage stage) const = 0;
    virtual boost::asio::awaitable<Verdict> on_stage(HookContext& ctx) = 0;
    // Notifications must not block; errors are logged, never raised.
    virtual void notify(Event, const Connection*, const Transaction&, const DeliveryResult&) {}
    // SIGHUP: reload what the filter reads from files. False (and `error`) keeps the old one.
    virtual bool reload(std::string& /*error*/) { return true; }
};

}  // namespace postern::filters
