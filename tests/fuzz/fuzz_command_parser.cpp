// Fuzzes the command side of the wire protocol: line framing, verb split, MAIL/RCPT arguments,
// paths and ESMTP parameters. Invariants are checked, not only crashes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/smtp/address.hpp"
#include "proxy/smtp/command.hpp"
#include "proxy/smtp/esmtp_params.hpp"
#include "proxy/smtp/line_reader.hpp"

using namespace postern::smtp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    CommandReader reader;
    std::string_view rest = input;
    while (true) {
        auto r = reader.next(rest);
        if (r.consumed > rest.size()) std::abort();
        if (r.status == CommandReader::Status::kLine) {
            // A line never holds CR, LF or NUL and never exceeds the limit.
            for (unsigned char c : r.line) {
                if (c == '\r' || c == '\n' || c == 0) std::abort();
            }
            if (r.line.size() + 2 > kMaxExtendedCommandLine) std::abort();
            Command cmd = parse_command(r.line);
            auto mail = parse_mail_from(cmd.args, 1 << 20);
            if (!mail.error) {
                const Address& a = mail.value.sender;
                if (a.local.size() > kMaxLocalPart || a.domain.size() > kMaxDomain) std::abort();
                if (a.utf8 && !mail.value.params.smtputf8) std::abort();
            } else if (mail.error->code < 500) {
                std::abort();  // syntax problems are permanent
            }
            auto rcpt = parse_rcpt_to(cmd.args, size % 2 == 0);
            if (!rcpt.error && rcpt.value.recipient.null) std::abort();  // <> is no recipient
        }
        if (r.status == CommandReader::Status::kNeedMore) break;
        rest.remove_prefix(r.consumed);
    }
    PathParse p = parse_path(input, {.allow_null = true, .allow_postmaster = true});
    if (p.error == AddressError::kNone && p.consumed > size) std::abort();
    return 0;
}
