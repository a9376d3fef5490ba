// Received header; see received_header.hpp.
#include "proxy/server/received_header.hpp"

#include <ctime>

namespace postern::server {

std::string rfc5322_date(std::chrono::system_clock::time_point t) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    // Every message of a busy second gets the same text: formatted once per second and thread
    // (gmtime and snprintf were 3 % of a relayed message's instructions).
    thread_local std::time_t cached_second = -1;
    thread_local std::string cached_text;
    if (tt == cached_second) return cached_text;
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday],
                  tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    cached_second = tt;
    cached_text = buf;
    return cached_text;
}

std::string received_header(const queue::Envelope& e, const std::string& hostname) {
    // Appended piece by piece into one string: once per relayed message, so no temporaries.
    const bool v6 = e.client_ip.find(':') != std::string::npos;
    std::string h;
    h.reserve(256 + e.helo.size() + e.tls.size() + hostname.size());
    h.append("Received: from ").append(e.helo).append(v6 ? " ([IPv6:" : " ([");
    h.append(e.client_ip).append("])\r\n");
    if (!e.tls.empty()) h.append("\t(using ").append(e.tls).append(")\r\n");  // as Postfix does
    h.append("\tby ").append(hostname).append(" (postern) with ").append(e.protocol);
    h.append(" id ").append(e.queue_id);
    // RFC 5322 3.6.7: the tokens end with ";" before the date, with or without a "for".
    if (e.recipients.size() == 1) {
        h.append("\r\n\tfor <").append(e.recipients.front().recipient.mailbox()).append(">; ");
    } else {
        h.append(";\r\n\t");
    }
    h.append(rfc5322_date(e.received_at)).append("\r\n");
    return h;
}

}  // namespace postern::server
