// Fuzzes message data decoding and the dot-stuffing encoder. The first octet picks the mode and
// policy and the split points; the rest is fed in pieces. Invariants: splitting never changes
// the result (content, size and flags: the whole input takes the fast paths, one-octet pieces
// the octet-by-octet ones); the end of data is only ever right after "\r\n.\r\n"; under
// "normalize" every stored line ends with CRLF; and what postern would send on for a stored
// message (dot-stuffed, in the same pieces) decodes back to that message.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/smtp/data_reader.hpp"
#include "proxy/smtp/dot_stuffing.hpp"

using namespace postern::smtp;

namespace {

struct Outcome {
    std::string out;
    size_t consumed = 0;
    bool done = false;
    uint64_t size = 0;
    DataReader::Flags flags;
};

bool same_flags(const DataReader::Flags& a, const DataReader::Flags& b) {
    return a.bare_line_end == b.bare_line_end && a.nul == b.nul && a.long_line == b.long_line &&
           a.too_big == b.too_big && a.eight_bit == b.eight_bit;
}

// The DATA payload for `message`, encoded in pieces of `step` octets.
std::string stuffed(std::string_view message, size_t step) {
    std::string out;
    DotStuffer stuffer;
    for (size_t at = 0; at < message.size(); at += step)
        stuffer.append(message.substr(at, step), out);
    stuffer.finish(out);
    return out;
}

Outcome run(DataReader::Mode mode, BareLineEndPolicy policy, std::string_view input, size_t step) {
    Outcome o;
    DataReader reader(mode, policy, 4096, o.out);
    while (o.consumed < input.size() && !reader.done()) {
        size_t n = std::min(step, input.size() - o.consumed);
        size_t used = reader.feed(input.substr(o.consumed, n));
        if (used > n) std::abort();
        o.consumed += used;
        if (used < n && !reader.done()) std::abort();  // only the end stops consumption
    }
    if (mode == DataReader::Mode::kChunked) reader.finish();
    o.done = reader.done();
    o.size = reader.size();
    o.flags = reader.flags();
    return o;
}

bool well_framed(const std::string& s) {
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
        if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const uint8_t control = data[0];
    std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
    auto mode = (control & 1) ? DataReader::Mode::kChunked : DataReader::Mode::kDotStuffed;
    auto policy = (control & 2) ? BareLineEndPolicy::kNormalize : BareLineEndPolicy::kReject;
    size_t step = 1 + (control >> 2);

    Outcome whole = run(mode, policy, input, input.size() + 1);
    Outcome pieces = run(mode, policy, input, step);
    if (whole.out != pieces.out || whole.consumed != pieces.consumed || whole.done != pieces.done ||
        whole.size != pieces.size || !same_flags(whole.flags, pieces.flags))
        std::abort();
    if (whole.done) {
        if (mode == DataReader::Mode::kChunked) std::abort();
        // The end of data is "\r\n.\r\n", with the first CRLF either real or the start of data.
        std::string_view used = input.substr(0, whole.consumed);
        bool at_start = used == ".\r\n";
        if (!at_start && (used.size() < 5 || used.substr(used.size() - 5) != "\r\n.\r\n")) {
            std::abort();
        }
    }
    if (policy == BareLineEndPolicy::kNormalize && !whole.flags.too_big &&
        (whole.done || mode == DataReader::Mode::kChunked) && !well_framed(whole.out)) {
        std::abort();
    }
    if (whole.out.size() > 4096) std::abort();
    if (policy == BareLineEndPolicy::kNormalize && !whole.flags.too_big && !whole.flags.nul &&
        (whole.done || mode == DataReader::Mode::kChunked)) {
        // Round trip: a stored message, sent on by DATA, is read back as the same message.
        const std::string payload = stuffed(whole.out, step);
        if (payload != stuffed(whole.out, whole.out.size() + 1)) std::abort();
        std::string back;
        DataReader reader(DataReader::Mode::kDotStuffed, BareLineEndPolicy::kReject, 1 << 20, back);
        if (reader.feed(payload) != payload.size() || !reader.done() || back != whole.out) {
            std::abort();
        }
    }
    return 0;
}
