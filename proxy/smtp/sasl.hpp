// SASL responses of AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN, decoded from base64 and checked
// before anything looks at them.
#pragma once

#include <string>
#include <string_view>

namespace postern::smtp {

struct SaslPlain {
    std::string authzid;  // who to act as; empty: the authcid
    std::string authcid;  // the user name
    std::string password;
};

enum class SaslError {
    kNone,
    kBadBase64,     // not canonical base64
    kBadStructure,  // PLAIN: not "[authzid] NUL authcid NUL password", or an empty part
    kBadOctets,     // a NUL, CR or LF inside a value, or a value over 255 octets
};

// RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, each at most 255 octets.
// `response` is the client's base64 ("=" is the empty initial response: a bad structure).
SaslError decode_plain(std::string_view response, SaslPlain& out);

// One LOGIN step (the user name or the password): base64 of a value without NUL, CR or LF.
SaslError decode_login(std::string_view response, std::string& out);

}  // namespace postern::smtp
