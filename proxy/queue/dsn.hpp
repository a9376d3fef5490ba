// Delivery status notifications: RFC 3464 multipart/report messages telling the envelope sender
// which recipients failed and why (bounces), which are still being retried (delay warnings),
// or which were relayed to an upstream that cannot pass on the DSN request (NOTIFY=SUCCESS).
// They carry the original headers (RFC 6522 text/rfc822-headers) or, for a failure when the
// client asked RET=FULL, the whole original message (message/rfc822).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/queue/spool_record.hpp"

namespace postern::queue {

// RFC 3464 2.3.3 Action, one per notice.
enum class DsnAction { kFailed, kDelayed, kRelayed };

struct ReportedRecipient {
    size_t index = 0;      // into envelope.recipients
    std::string reply;     // the upstream's reply ("550 5.1.1 ...") or postern's reason
    bool expired = false;  // max_age passed: Status 4.4.7
};

struct DsnInput {
    DsnAction action = DsnAction::kFailed;
    std::string reporting_mta;  // server.hostname
    const Envelope* envelope = nullptr;
    std::vector<ReportedRecipient> recipients;
    // Delayed notices: when postern gives up (RFC 3464 2.3.9 Will-Retry-Until).
    std::chrono::system_clock::time_point will_retry_until{};
    std::string_view original;  // the spooled message: our Received header and the content
    std::chrono::system_clock::time_point now;
    std::string unique;  // unique text for the boundary and Message-ID (the bounce's queue id)
};

// Whether recipient `r` wants this notice (RFC 3461 4.1: NOTIFY absent means FAILURE and
// DELAY; NEVER means nothing; SUCCESS must be asked for).
bool wants_notice(const smtp::RcptTo& r, DsnAction action);

// The status code of a reported recipient: the enhanced code of its reply when it has one of
// the action's class ("5.1.1"), 4.4.7 when it expired, else 5.0.0, 4.0.0 or 2.0.0.
std::string dsn_status(const ReportedRecipient& r, DsnAction action = DsnAction::kFailed);

// The complete notice, CRLF line ends, to be sent from <> to the envelope sender.
std::string build_dsn(const DsnInput& input);

}  // namespace postern::queue
