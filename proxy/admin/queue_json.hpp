// The queue management API's JSON (docs/queue.md "Admin API"): the server renders queue entries
// with it, the `postern queue` command reads them back and prints a mailq-style table.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "proxy/queue/queue_entry.hpp"

namespace postern::admin {

// One message: id, route, sender, size, received_at (RFC 3339, UTC), age_s, attempts, state,
// next_attempt_in_s (null when none is scheduled), last_error, recipients (address, state,
// reply, notified).
boost::json::object queue_entry_json(const queue::QueueEntry& entry,
                                     std::chrono::system_clock::time_point now);

// {"count": N, "messages": [...]}.
boost::json::object queue_list_json(const std::vector<queue::QueueEntry>& entries,
                                    std::chrono::system_clock::time_point now);

// The list as `mailq` prints it (Postfix layout): one block per message, the id marked '*'
// while an attempt runs and '!' when held, then the last error and the recipients still to
// deliver; a summary line at the end. `list` is what queue_list_json made.
std::string format_queue_table(const boost::json::value& list);

// One message in full, recipient by recipient, for `postern queue show`.
std::string format_queue_entry(const boost::json::value& entry);

}  // namespace postern::admin
