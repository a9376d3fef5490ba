// Queue entries as JSON and as mailq-style text; see queue_json.hpp.
#include "proxy/admin/queue_json.hpp"

#include <algorithm>
#include <boost/json/array.hpp>
#include <ctime>

namespace postern::admin {

namespace json = boost::json;

namespace {

const char* status_name(queue::RecipientStatus s) {
    switch (s) {
        case queue::RecipientStatus::kDelivered:
            return "delivered";
        case queue::RecipientStatus::kFailed:
            return "failed";
        case queue::RecipientStatus::kPending:
            break;
    }
    return "pending";
}

std::string utc(int64_t unix_seconds, const char* format) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buffer[64];
    size_t n = std::strftime(buffer, sizeof buffer, format, &tm);
    return std::string(buffer, n);
}

// Tolerant readers: the CLI may talk to another version of the server.
std::string text(const json::object& o, std::string_view key) {
    const json::value* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

int64_t number(const json::object& o, std::string_view key, int64_t otherwise = 0) {
    const json::value* v = o.if_contains(key);
    if (v && v->is_int64()) return v->as_int64();
    if (v && v->is_uint64()) return static_cast<int64_t>(v->as_uint64());
    return otherwise;
}

std::string seconds_text(int64_t s) {
    if (s < 120) return std::to_string(s) + "s";
    if (s < 7200) return std::to_string(s / 60) + "m";
    if (s < 2 * 86400) return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
    return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h";
}

// "attempts 3, next attempt in 54s, route default".
std::string schedule_text(const json::object& m) {
    std::string out = "attempts " + std::to_string(number(m, "attempts"));
    const json::value* next = m.if_contains("next_attempt_in_s");
    const std::string state = text(m, "state");
    if (state == "held") {
        out += ", held";
    } else if (state == "running") {
        out += ", attempt under way";
    } else if (next && (next->is_int64() || next->is_uint64())) {
        out += ", next attempt in " + seconds_text(number(m, "next_attempt_in_s"));
    }
    return out + ", route " + text(m, "route");
}

}  // namespace

json::object queue_entry_json(const queue::QueueEntry& e,
                              std::chrono::system_clock::time_point now) {
    using std::chrono::duration_cast;
    using std::chrono::seconds;
    json::object o;
    const int64_t received =
        duration_cast<seconds>(e.envelope.received_at.time_since_epoch()).count();
    o["id"] = e.envelope.queue_id;
    o["route"] = e.envelope.route;
    o["sender"] = e.envelope.mail_from.sender.null ? "" : e.envelope.mail_from.sender.mailbox();
    o["size"] = e.size;
    o["received_at"] = utc(received, "%Y-%m-%dT%H:%M:%SZ");
    o["received_unix"] = received;
    o["age_s"] = std::max<int64_t>(0, duration_cast<seconds>(now - e.envelope.received_at).count());
    o["attempts"] = e.attempts;
    o["state"] = e.state;
    if (e.next_attempt_in) {
        o["next_attempt_in_s"] = (e.next_attempt_in->count() + 999) / 1000;
    } else {
        o["next_attempt_in_s"] = nullptr;
    }
    o["last_error"] = e.last_error;
    json::array recipients;
    for (size_t i = 0; i < e.recipients.size() && i < e.envelope.recipients.size(); ++i) {
        const queue::RecipientState& r = e.recipients[i];
        json::object ro;
        ro["address"] = e.envelope.recipients[i].recipient.mailbox();
        ro["state"] = status_name(r.status);
        ro["reply"] = r.reply;
        ro["notified"] = r.bounced;
        recipients.push_back(std::move(ro));
    }
    o["recipients"] = std::move(recipients);
    return o;
}

json::object queue_list_json(const std::vector<queue::QueueEntry>& entries,
                             std::chrono::system_clock::time_point now) {
    json::array messages;
    for (const queue::QueueEntry& e : entries) messages.push_back(queue_entry_json(e, now));
    json::object o;
    o["count"] = entries.size();
    o["messages"] = std::move(messages);
    return o;
}

std::string format_queue_table(const json::value& list) {
    const json::array* messages = nullptr;
    if (list.is_object()) {
        if (const json::value* m = list.as_object().if_contains("messages"); m && m->is_array())
            messages = &m->as_array();
    }
    if (!messages || messages->empty()) return "Mail queue is empty\n";
    size_t id_width = 10;
    for (const json::value& v : *messages) {
        if (v.is_object()) id_width = std::max(id_width, text(v.as_object(), "id").size() + 1);
    }
    auto pad = [](std::string s, size_t width, bool right) {
        if (s.size() >= width) return s;
        return right ? std::string(width - s.size(), ' ') + s
                     : s + std::string(width - s.size(), ' ');
    };
    std::string out = pad("-Queue ID-", id_width, false) +
                      " --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
    const std::string indent(id_width + 1 + 8 + 1 + 19 + 2, ' ');  // under the sender
    uint64_t total = 0;
    for (const json::value& v : *messages) {
        if (!v.is_object()) continue;
        const json::object& m = v.as_object();
        const std::string state = text(m, "state");
        std::string id = text(m, "id");
        if (state == "running") id += "*";
        if (state == "held") id += "!";
        const int64_t size = number(m, "size");
        total += static_cast<uint64_t>(std::max<int64_t>(0, size));
        const std::string sender = text(m, "sender");
        out += pad(id, id_width, false) + " " + pad(std::to_string(size), 8, true) + " " +
               utc(number(m, "received_unix"), "%a %b %d %H:%M:%S") + "  " +
               (sender.empty() ? "MAILER-DAEMON" : sender) + "\n";
        if (const std::string error = text(m, "last_error"); !error.empty()) {
            out += "(" + error + ")\n";
        }
        out += "(" + schedule_text(m) + ")\n";
        if (const json::value* r = m.if_contains("recipients"); r && r->is_array()) {
            for (const json::value& rv : r->as_array()) {
                if (!rv.is_object() || text(rv.as_object(), "state") != "pending") continue;
                out += indent + text(rv.as_object(), "address") + "\n";
            }
        }
        out += "\n";
    }
    const size_t n = messages->size();
    out += "-- " + std::to_string((total + 1023) / 1024) + " Kbytes in " + std::to_string(n) +
           (n == 1 ? " Request.\n" : " Requests.\n");
    return out;
}

std::string format_queue_entry(const json::value& entry) {
    if (!entry.is_object()) return "";
    const json::object& m = entry.as_object();
    const std::string sender = text(m, "sender");
    std::string out;
    out += "id:          " + text(m, "id") + "\n";
    out += "state:       " + text(m, "state") + "\n";
    out += "route:       " + text(m, "route") + "\n";
    out += "sender:      " + (sender.empty() ? std::string("<> (a notice)") : "<" + sender + ">") +
           "\n";
    out += "size:        " + std::to_string(number(m, "size")) + "\n";
    out += "received:    " + text(m, "received_at") + " (" + seconds_text(number(m, "age_s")) +
           " ago)\n";
    out += "schedule:    " + schedule_text(m) + "\n";
    if (const std::string error = text(m, "last_error"); !error.empty()) {
        out += "last error:  " + error + "\n";
    }
    out += "recipients:\n";
    if (const json::value* r = m.if_contains("recipients"); r && r->is_array()) {
        for (const json::value& rv : r->as_array()) {
            if (!rv.is_object()) continue;
            const json::object& ro = rv.as_object();
            out += "  <" + text(ro, "address") + "> " + text(ro, "state");
            if (const std::string reply = text(ro, "reply"); !reply.empty()) {
                out += ": " + reply;
            }
            out += "\n";
        }
    }
    return out;
}

}  // namespace postern::admin
