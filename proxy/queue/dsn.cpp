// Bounce messages; see dsn.hpp.
#include "proxy/queue/dsn.hpp"

#include "proxy/server/received_header.hpp"
#include "proxy/smtp/xtext.hpp"

namespace postern::queue {
namespace {

bool is_enhanced(std::string_view s) {
    // class "." subject "." detail, with class 2, 4 or 5 (RFC 3463 2)
    if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
    size_t dot = s.find('.', 2);
    if (dot == std::string_view::npos || dot == 2 || dot > 5) return false;
    for (size_t i = 2; i < dot; ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
    }
    if (dot + 1 >= s.size() || s.size() - dot - 1 > 3) return false;
    for (size_t i = dot + 1; i < s.size(); ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
    }
    return true;
}

// The end of the header section of a message: the offset just after the empty line, or the
// whole message when there is none.
size_t header_end(std::string_view message) {
    if (message.substr(0, 2) == "\r\n") return 2;
    size_t at = message.find("\r\n\r\n");
    return at == std::string_view::npos ? message.size() : at + 4;
}

std::string address_type(const smtp::Address& a) {
    return a.utf8 ? "utf-8; " : "rfc822; ";
}

// A header field value must not carry line breaks from a reply.
std::string one_line(std::string text) {
    for (char& c : text) {
        if (c == '\r' || c == '\n') c = ' ';
    }
    return text;
}

}  // namespace

bool wants_notice(const smtp::RcptTo& r, DsnAction action) {
    const unsigned n = r.params.notify;
    if (n & smtp::notify::kNever) return false;
    switch (action) {
        case DsnAction::kFailed:
            return n == 0 || (n & smtp::notify::kFailure) != 0;
        case DsnAction::kDelayed:
            return n == 0 || (n & smtp::notify::kDelay) != 0;
        case DsnAction::kRelayed:
            return (n & smtp::notify::kSuccess) != 0;
    }
    return false;
}

std::string dsn_status(const ReportedRecipient& r, DsnAction action) {
    if (r.expired) return "4.4.7";
    const char status_class = action == DsnAction::kFailed    ? '5'
                              : action == DsnAction::kDelayed ? '4'
                                                              : '2';
    // "550 5.1.1 text": the second word.
    std::string_view reply = r.reply;
    size_t space = reply.find(' ');
    if (space != std::string_view::npos) {
        std::string_view rest = reply.substr(space + 1);
        std::string_view word = rest.substr(0, rest.find(' '));
        if (is_enhanced(word) && word[0] == status_class) return std::string(word);
    }
    return std::string(1, status_class) + ".0.0";
}

std::string build_dsn(const DsnInput& in) {
    const Envelope& e = *in.envelope;
    const std::string boundary = in.unique + "/" + in.reporting_mta;
    const std::string date = server::rfc5322_date(in.now);
    std::string m;
    m += "From: Mail Delivery System <MAILER-DAEMON@" + in.reporting_mta + ">\r\n";
    m += "To: <" + e.mail_from.sender.mailbox() + ">\r\n";
    const char* subject = in.action == DsnAction::kFailed    ? "Undelivered Mail Returned to Sender"
                          : in.action == DsnAction::kDelayed ? "Delayed Mail (still being retried)"
                                                             : "Successful Mail Delivery Report";
    m += "Subject: " + std::string(subject) + "\r\n";
    m += "Date: " + date + "\r\n";
    m += "Message-ID: <" + in.unique + ".bounce@" + in.reporting_mta + ">\r\n";
    m += "Auto-Submitted: auto-replied\r\n";  // RFC 3834: no automatic replies to this
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
    m += "\tboundary=\"" + boundary + "\"\r\n";
    m += "\r\n";
    m += "This is a MIME-encapsulated message.\r\n\r\n";

    // 1. For people.
    m += "--" + boundary + "\r\n";
    m += "Content-Description: Notification\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
    m += "This is the mail system at host " + in.reporting_mta + ".\r\n\r\n";
    const std::string plural = in.recipients.size() == 1 ? "" : "s";
    if (in.action == DsnAction::kFailed) {
        m += "Your message (queue id " + e.queue_id + ") could not be delivered to the\r\n";
        m += "following recipient" + plural + ":\r\n\r\n";
    } else if (in.action == DsnAction::kDelayed) {
        m += "Your message (queue id " + e.queue_id + ") has not yet been delivered to the\r\n";
        m += "following recipient" + plural + ". It is still being retried until\r\n";
        m += server::rfc5322_date(in.will_retry_until) + "; you need not send it again.\r\n\r\n";
    } else {
        m += "Your message (queue id " + e.queue_id + ") was relayed to the following\r\n";
        m += "recipient" + plural + ". The next server does not support delivery\r\n";
        m += "notifications: this is the last one you will receive.\r\n\r\n";
    }
    for (const ReportedRecipient& f : in.recipients) {
        m +=
            "<" + e.recipients.at(f.index).recipient.mailbox() + ">: " + one_line(f.reply) + "\r\n";
    }
    m += "\r\n";

    // 2. For programs (RFC 3464 2.1).
    m += "--" + boundary + "\r\n";
    m += "Content-Description: Delivery report\r\n";
    m += "Content-Type: message/delivery-status\r\n\r\n";
    m += "Reporting-MTA: dns; " + in.reporting_mta + "\r\n";
    m += "X-Postern-Queue-ID: " + e.queue_id + "\r\n";
    if (!e.mail_from.params.envid.empty()) {
        // RFC 3461 4.4: xtext in SMTP, the decoded value in the DSN (one line, printable).
        m += "Original-Envelope-Id: " +
             one_line(
                 smtp::xtext_decode(e.mail_from.params.envid).value_or(e.mail_from.params.envid)) +
             "\r\n";
    }
    m += "Arrival-Date: " + server::rfc5322_date(e.received_at) + "\r\n";
    for (const ReportedRecipient& f : in.recipients) {
        const smtp::RcptTo& r = e.recipients.at(f.index);
        m += "\r\n";
        m += "Final-Recipient: " + address_type(r.recipient) + r.recipient.mailbox() + "\r\n";
        if (!r.params.orcpt.empty()) {
            // "addr-type;xtext" in SMTP; the address decoded in the DSN (RFC 3461 4.2).
            std::string_view orcpt = r.params.orcpt;
            size_t semi = orcpt.find(';');
            std::string decoded = semi == std::string_view::npos
                                      ? std::string(orcpt)
                                      : std::string(orcpt.substr(0, semi + 1)) +
                                            smtp::xtext_decode(orcpt.substr(semi + 1))
                                                .value_or(std::string(orcpt.substr(semi + 1)));
            m += "Original-Recipient: " + one_line(decoded) + "\r\n";
        }
        m += in.action == DsnAction::kFailed    ? "Action: failed\r\n"
             : in.action == DsnAction::kDelayed ? "Action: delayed\r\n"
                                                : "Action: relayed\r\n";
        m += "Status: " + dsn_status(f, in.action) + "\r\n";
        if (!f.expired && f.reply.size() > 3 && f.reply[0] >= '2' && f.reply[0] <= '5') {
            m += "Diagnostic-Code: smtp; " + one_line(f.reply) + "\r\n";
        } else {
            m += "Diagnostic-Code: X-Postern; " + one_line(f.reply) + "\r\n";
        }
        m += "Last-Attempt-Date: " + date + "\r\n";
        if (in.action == DsnAction::kDelayed) {
            m += "Will-Retry-Until: " + server::rfc5322_date(in.will_retry_until) + "\r\n";
        }
    }
    m += "\r\n";

    // 3. The original: headers only unless RET=FULL, which is for failures (RFC 3461 4.3).
    const bool full =
        e.mail_from.params.ret == smtp::DsnRet::kFull && in.action == DsnAction::kFailed;
    m += "--" + boundary + "\r\n";
    if (full) {
        m += "Content-Description: Undelivered message\r\n";
        m += "Content-Type: message/rfc822\r\n\r\n";
        m += in.original;
        if (!in.original.empty() && in.original.substr(in.original.size() - 1) != "\n") {
            m += "\r\n";
        }
    } else {
        m += in.action == DsnAction::kFailed ? "Content-Description: Undelivered message headers\r\n"
                                             : "Content-Description: Message headers\r\n";
        m += "Content-Type: text/rfc822-headers\r\n\r\n";
        std::string_view headers = in.original.substr(0, header_end(in.original));
        if (headers.size() >= 4 && headers.substr(headers.size() - 4) == "\r\n\r\n") {
            headers.remove_suffix(2);  // the empty line ends the part, not the headers
        }
        m += headers;
    }
    m += "\r\n--" + boundary + "--\r\n";
    return m;
}

}  // namespace postern::queue
