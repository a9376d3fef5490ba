// Delivery status notifications (bounces): RFC 3464 multipart/report messages telling the
// envelope sender which recipients failed and why, with the original headers (RFC 6522
// text/rfc822-headers) or, when the client asked RET=FULL, the whole original message
// (message/rfc822).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/queue/spool_record.hpp"

namespace postern::queue {

struct FailedRecipient {
    size_t index = 0;      // into envelope.recipients
    std::string reply;     // the upstream's reply ("550 5.1.1 ...") or postern's reason
    bool expired = false;  // max_age passed: Status 4.4.7
};

struct DsnInput {
    std::string reporting_mta;  // server.hostname
    const Envelope* envelope = nullptr;
    std::vector<FailedRecipient> failed;
    std::string_view original;  // the spooled message: our Received header and the content
    std::chrono::system_clock::time_point now;
    std::string unique;  // unique text for the boundary and Message-ID (the bounce's queue id)
};

// Whether recipient `r` wants to hear of its failure (RFC 3461 4.1: NOTIFY absent means
// FAILURE and DELAY; NEVER means nothing).
bool wants_failure_notice(const smtp::RcptTo& r);

// The status code for a failed recipient: the enhanced code of its reply when it has one
// ("5.1.1"), 4.4.7 when it expired, else 5.0.0.
std::string dsn_status(const FailedRecipient& failed);

// The complete bounce message, CRLF line ends, to be sent from <> to the envelope sender.
std::string build_dsn(const DsnInput& input);

}  // namespace postern::queue
