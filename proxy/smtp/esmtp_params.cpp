// MAIL/RCPT argument parsing; see esmtp_params.hpp.
#include "proxy/smtp/esmtp_params.hpp"

#include <charconv>
#include <vector>

#include "proxy/smtp/ascii.hpp"
#include "proxy/smtp/replies.hpp"
#include "proxy/smtp/xtext.hpp"

namespace postern::smtp {
namespace {

struct Param {
    std::string keyword;  // upper case
    std::string_view value;
    bool has_value = false;
};

char upper(char c) {
    return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

std::string to_upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = upper(c);
    return out;
}

bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2), separated by spaces.
std::optional<Reply> split_params(std::string_view text, std::vector<Param>& out) {
    size_t i = 0;
    while (i < text.size()) {
        if (text[i] == ' ') {
            ++i;
            continue;
        }
        size_t end = text.find(' ', i);
        if (end == std::string_view::npos) end = text.size();
        std::string_view item = text.substr(i, end - i);
        i = end;
        Param p;
        size_t eq = item.find('=');
        std::string_view keyword = item.substr(0, eq);
        if (keyword.empty() || !is_alnum(keyword[0])) return replies::kBadParameterSyntax;
        for (char c : keyword) {
            if (!is_alnum(c) && c != '-') return replies::kBadParameterSyntax;
        }
        if (eq != std::string_view::npos) {
            p.has_value = true;
            p.value = item.substr(eq + 1);
            if (p.value.empty()) return replies::kBadParameterSyntax;
            for (unsigned char c : p.value) {
                // esmtp-value = 1*(%d33-60 / %d62-126)
                if (c < 33 || c > 126 || c == '=') return replies::kBadParameterSyntax;
            }
        }
        p.keyword = to_upper(keyword);
        for (const Param& seen : out) {
            if (seen.keyword == p.keyword) return replies::kDuplicateParameter;
        }
        out.push_back(std::move(p));
    }
    return std::nullopt;
}

// "FROM:" / "TO:" then optional spaces (accepted as Postfix does, though RFC 5321 has none),
// then the path. Returns the rest after the path, or nothing when the prefix is missing.
std::optional<std::string_view> strip_prefix(std::string_view args, std::string_view prefix) {
    if (args.size() < prefix.size() || !iequals(args.substr(0, prefix.size()), prefix)) {
        return std::nullopt;
    }
    args.remove_prefix(prefix.size());
    while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
    return args;
}

Reply address_error(AddressError e, bool sender) {
    switch (e) {
        case AddressError::kLocalTooLong:
        case AddressError::kDomainTooLong:
        case AddressError::kPathTooLong:
            return sender ? replies::kSenderPathTooLong : replies::kRecipientPathTooLong;
        default:
            return sender ? replies::kBadSender : replies::kBadRecipient;
    }
}

bool parse_decimal(std::string_view text, uint64_t& out) {
    if (text.empty() || text.size() > 20) return false;  // size-value = 1*20DIGIT
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && ptr == text.data() + text.size();
}

// The part MAIL and RCPT share: "<prefix><path>[ params]" into the address and raw parameters.
std::optional<Reply> split_command(std::string_view args, std::string_view prefix,
                                   PathOptions options, bool sender, Address& address,
                                   std::vector<Param>& params) {
    const Reply& syntax = sender ? replies::kMailSyntax : replies::kRcptSyntax;
    auto rest = strip_prefix(args, prefix);
    if (!rest || rest->empty() || rest->front() != '<') return syntax;
    PathParse path = parse_path(*rest, options);
    if (path.error != AddressError::kNone) return address_error(path.error, sender);
    std::string_view tail = rest->substr(path.consumed);
    if (!tail.empty() && tail.front() != ' ') return syntax;
    if (auto e = split_params(tail, params)) return e;
    address = std::move(path.address);
    return std::nullopt;
}

}  // namespace

Parsed<MailFrom> parse_mail_from(std::string_view args, uint64_t max_size, bool extended) {
    Parsed<MailFrom> result;
    Address& sender = result.value.sender;
    std::vector<Param> params;
    result.error = split_command(args, "FROM:", {.allow_null = true}, true, sender, params);
    if (!result.error && !extended && !params.empty()) result.error = replies::kParamsNeedEhlo;
    if (result.error) return result;
    MailParams& mp = result.value.params;
    for (const Param& p : params) {
        if (p.keyword == "SIZE") {
            uint64_t size = 0;
            if (!p.has_value || !parse_decimal(p.value, size)) {
                result.error = replies::kBadSize;
                return result;
            }
            mp.size = size;
        } else if (p.keyword == "BODY") {
            if (p.has_value && iequals(p.value, "7BIT")) {
                mp.body = BodyType::k7Bit;
            } else if (p.has_value && iequals(p.value, "8BITMIME")) {
                mp.body = BodyType::k8BitMime;
            } else {
                // BINARYMIME (RFC 3030) is not advertised, so it is as bad as any other value.
                result.error = replies::kBadBody;
                return result;
            }
        } else if (p.keyword == "SMTPUTF8") {
            if (p.has_value) {
                result.error = replies::kBadSmtputf8;
                return result;
            }
            mp.smtputf8 = true;
        } else if (p.keyword == "RET") {
            if (p.has_value && iequals(p.value, "FULL")) {
                mp.ret = DsnRet::kFull;
            } else if (p.has_value && iequals(p.value, "HDRS")) {
                mp.ret = DsnRet::kHdrs;
            } else {
                result.error = replies::kBadRet;
                return result;
            }
        } else if (p.keyword == "ENVID") {
            if (!p.has_value || p.value.size() > kMaxEnvidLength || !is_valid_xtext(p.value)) {
                result.error = replies::kBadEnvid;
                return result;
            }
            mp.envid = std::string(p.value);
        } else if (p.keyword == "AUTH") {
            // RFC 4954 5: the submitter's identity as xtext, or "<>". Checked, then not used:
            // postern does not pass a client's claim on (an upstream sees AUTH=<> or nothing).
            if (!p.has_value || (p.value != "<>" && !is_valid_xtext(p.value))) {
                result.error = replies::kBadAuthParam;
                return result;
            }
        } else {
            result.error = replies::kUnknownParameter;
            return result;
        }
    }
    if (sender.utf8 && !mp.smtputf8) {
        result.error = replies::kUtf8NeedsSmtputf8;
        return result;
    }
    if (mp.size && *mp.size > max_size) {
        result.error = replies::kMessageTooBig;
        return result;
    }
    return result;
}

Parsed<RcptTo> parse_rcpt_to(std::string_view args, bool smtputf8, bool extended) {
    Parsed<RcptTo> result;
    Address& recipient = result.value.recipient;
    std::vector<Param> params;
    result.error = split_command(args, "TO:", {.allow_postmaster = true}, false, recipient, params);
    if (!result.error && !extended && !params.empty()) result.error = replies::kParamsNeedEhlo;
    if (result.error) return result;
    RcptParams& rp = result.value.params;
    for (const Param& p : params) {
        if (p.keyword == "NOTIFY") {
            if (!p.has_value) {
                result.error = replies::kBadNotify;
                return result;
            }
            std::string_view list = p.value;
            while (true) {
                size_t comma = list.find(',');
                std::string_view item = list.substr(0, comma);
                unsigned bit = iequals(item, "NEVER")     ? notify::kNever
                               : iequals(item, "SUCCESS") ? notify::kSuccess
                               : iequals(item, "FAILURE") ? notify::kFailure
                               : iequals(item, "DELAY")   ? notify::kDelay
                                                          : 0;
                if (bit == 0 || (rp.notify & bit)) {
                    result.error = replies::kBadNotify;
                    return result;
                }
                rp.notify |= bit;
                if (comma == std::string_view::npos) break;
                list.remove_prefix(comma + 1);
            }
            // NEVER stands alone (RFC 3461 4.1).
            if ((rp.notify & notify::kNever) && rp.notify != notify::kNever) {
                result.error = replies::kBadNotify;
                return result;
            }
        } else if (p.keyword == "ORCPT") {
            size_t semi = p.has_value ? p.value.find(';') : std::string_view::npos;
            if (semi == std::string_view::npos || semi == 0 || p.value.size() > kMaxOrcptLength) {
                result.error = replies::kBadOrcpt;
                return result;
            }
            std::string_view type = p.value.substr(0, semi);
            for (char c : type) {
                if (!is_alnum(c) && c != '-') {
                    result.error = replies::kBadOrcpt;
                    return result;
                }
            }
            if (!is_valid_xtext(p.value.substr(semi + 1)) || semi + 1 == p.value.size()) {
                result.error = replies::kBadOrcpt;
                return result;
            }
            rp.orcpt = std::string(p.value);
        } else {
            result.error = replies::kUnknownParameter;
            return result;
        }
    }
    if (recipient.utf8 && !smtputf8) {
        result.error = replies::kUtf8NeedsSmtputf8;
        return result;
    }
    return result;
}

}  // namespace postern::smtp
