// A message as accepted by the front end: its envelope (RFC 5321 MAIL/RCPT with their ESMTP
// parameters, and who handed it over) and its content. This is what every delivery target
// receives; it knows nothing of the session that built it.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/esmtp_params.hpp"

namespace postern::queue {

struct Envelope {
    std::string queue_id;
    smtp::MailFrom mail_from;
    std::vector<smtp::RcptTo> recipients;
    std::string client_ip;
    uint16_t client_port = 0;
    std::string helo;
    std::string protocol;  // "ESMTP", "SMTP", ... as in the Received header (RFC 3848)
    std::string tls;       // "TLSv1.3 with cipher ... (256/256 bits)"; only for the header
    std::string listener;
    std::string route;  // the [route.NAME] chosen at the first recipient
    std::chrono::system_clock::time_point received_at;
};

// The envelope as one JSON object (the outbox sidecar); keys are documented in docs/outbox.md.
// The spool's records also carry the message file's CRC-32 ("crc32").
std::string envelope_to_json(const Envelope& envelope, uint64_t message_size,
                             std::optional<uint32_t> crc32 = std::nullopt);

// Reads back what envelope_to_json wrote (the spool's records). On failure returns false and
// says why in `error`; the addresses are parsed again with the front end's parser.
bool envelope_from_json(std::string_view json, Envelope& envelope, uint64_t& message_size,
                        std::string& error, std::optional<uint32_t>* crc32 = nullptr);

}  // namespace postern::queue
