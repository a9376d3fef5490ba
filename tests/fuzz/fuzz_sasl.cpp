// Fuzzes the AUTH response decoders: whatever a client sends, PLAIN and LOGIN either refuse it
// or give values without NUL, CR or LF, of at most 255 octets, and a non-empty user name.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/smtp/base64.hpp"
#include "proxy/smtp/sasl.hpp"

using namespace postern::smtp;

namespace {

void check(const std::string& value) {
    if (value.size() > 255) std::abort();
    if (value.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view raw(reinterpret_cast<const char*>(data), size);
    // Both as the client's text and as what it would encode.
    for (const std::string& response : {std::string(raw), base64_encode(raw)}) {
        SaslPlain p;
        if (decode_plain(response, p) == SaslError::kNone) {
            check(p.authzid);
            check(p.authcid);
            check(p.password);
            if (p.authcid.empty() || p.password.empty()) std::abort();
        }
        std::string v;
        if (decode_login(response, v) == SaslError::kNone) {
            check(v);
            if (v.empty()) std::abort();
        }
    }
    return 0;
}
