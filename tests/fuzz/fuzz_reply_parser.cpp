// Fuzzes the client side of the wire protocol: server replies (bounded, strict CRLF), EHLO
// capabilities, base64 (SASL) and the DATA payload encoder, whose output the strict server-side
// reader must always read back as exactly one message.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/smtp/base64.hpp"
#include "proxy/smtp/capabilities.hpp"
#include "proxy/smtp/data_reader.hpp"
#include "proxy/smtp/dot_stuffing.hpp"
#include "proxy/smtp/reply_parser.hpp"

using namespace postern::smtp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);

    auto r = ReplyParser::next(input);
    if (r.status == ReplyParser::Status::kReply) {
        if (r.consumed == 0 || r.consumed > size) std::abort();
        if (r.reply.lines.empty() || r.reply.lines.size() > kMaxReplyLines) std::abort();
        if (r.reply.code < 200 || r.reply.code > 559) std::abort();
        // Any shorter prefix of a complete reply is incomplete, never a different reply.
        auto shorter = ReplyParser::next(input.substr(0, r.consumed - 1));
        if (shorter.status == ReplyParser::Status::kReply) std::abort();
        // Whatever a server says in its EHLO reply, the capabilities are well formed.
        Capabilities caps = parse_ehlo_reply(r.reply);
        for (const std::string& m : caps.auth) {
            if (m.empty() || m.find(' ') != std::string::npos) std::abort();
        }
    }

    // Base64: decoding accepts only canonical text, which encodes back to itself.
    if (auto decoded = base64_decode(input)) {
        if (base64_encode(*decoded) != input) std::abort();
    }

    std::string payload;
    append_dot_stuffed(input, payload);
    // Streamed in two pieces, cut where the first octet says, the payload is the same.
    if (size > 0) {
        size_t cut = data[0] % (size + 1);
        DotStuffer stuffer;
        std::string pieces;
        stuffer.append(input.substr(0, cut), pieces);
        stuffer.append(input.substr(cut), pieces);
        stuffer.finish(pieces);
        if (pieces != payload) std::abort();
    }
    std::string decoded;
    DataReader reader(DataReader::Mode::kDotStuffed, BareLineEndPolicy::kReject, 1 << 24, decoded);
    size_t used = reader.feed(payload);
    // The whole payload is one message, ending exactly at its end, with no bare line end.
    if (!reader.done() || used != payload.size() || reader.flags().bare_line_end) std::abort();
    return 0;
}
