// The arguments of MAIL and RCPT: the path and the ESMTP parameters of RFC 1870 (SIZE),
// RFC 6152 (BODY), RFC 6531 (SMTPUTF8) and RFC 3461 (RET, ENVID, NOTIFY, ORCPT), validated and
// kept on the envelope. A malformed value gets 501, an unknown keyword 555 (RFC 5321 4.1.1.11).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/smtp/address.hpp"
#include "proxy/smtp/reply.hpp"

namespace postern::smtp {

enum class BodyType { kUnspecified, k7Bit, k8BitMime };
enum class DsnRet { kUnspecified, kFull, kHdrs };

namespace notify {
inline constexpr unsigned kNever = 1;
inline constexpr unsigned kSuccess = 2;
inline constexpr unsigned kFailure = 4;
inline constexpr unsigned kDelay = 8;
}  // namespace notify

inline constexpr size_t kMaxEnvidLength = 100;  // RFC 3461 4.4
inline constexpr size_t kMaxOrcptLength = 500;  // RFC 3461 4.2

struct MailParams {
    std::optional<uint64_t> size;
    BodyType body = BodyType::kUnspecified;
    bool smtputf8 = false;
    DsnRet ret = DsnRet::kUnspecified;
    std::string envid;  // xtext exactly as received, empty when absent
};

struct RcptParams {
    unsigned notify = 0;  // notify::k* bits, 0 when absent
    std::string orcpt;    // "addr-type;xtext" exactly as received, empty when absent
};

struct MailFrom {
    Address sender;
    MailParams params;
};

struct RcptTo {
    Address recipient;
    RcptParams params;
};

// Either a parsed command or the reply that refuses it.
template <typename T>
struct Parsed {
    std::optional<Reply> error;
    T value;
};

// args is what follows "MAIL ": "FROM:<path> [params]". max_size is the SIZE this listener
// advertises: a declared SIZE above it gets 552 5.3.4 at once (RFC 1870 6.1).
// `extended` is false after HELO: then no parameter is allowed (RFC 5321 4.1.1.11, RFC 1869).
Parsed<MailFrom> parse_mail_from(std::string_view args, uint64_t max_size, bool extended = true);

// args is what follows "RCPT ": "TO:<path> [params]". smtputf8 tells whether MAIL carried the
// SMTPUTF8 parameter, without which a non-ASCII address gets 553 5.6.7 (RFC 6531 3.4).
Parsed<RcptTo> parse_rcpt_to(std::string_view args, bool smtputf8, bool extended = true);

}  // namespace postern::smtp
