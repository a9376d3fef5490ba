// Fuzzes message data decoding. The first octet picks the mode and policy and the split points;
// the rest is fed in pieces. Invariants: splitting never changes the result; the end of data is
// only ever right after "\r\n.\r\n"; under "normalize" every stored line ends with CRLF.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/smtp/data_reader.hpp"

using namespace postern::smtp;

namespace {

struct Outcome {
    std::string out;
    size_t consumed = 0;
    bool done = false;
    DataReader::Flags flags;
};

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
    if (whole.out != pieces.out || whole.consumed != pieces.consumed || whole.done != pieces.done)
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
    return 0;
}
