// Finding the octets that matter in message text: CR, LF and NUL, sixteen octets at a time
// (SSE2, which every x86-64 has) or eight (a 64-bit word, elsewhere).
//
// The message data decoder and the dot-stuffing encoder spend most of their time looking for
// line ends. Testing a block for any of three octet values costs about as much as testing one
// octet three times: on a 4 KB message this took a third off postern's user-space
// instructions (docs/bench.md, "Passthrough").
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace postern::smtp {

namespace octet_scan_detail {
constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHigh = 0x8080808080808080ULL;
// The high bit of each zero byte of x is set; the lowest set bit marks the first zero byte
// exactly (a borrow can only mark bytes above a real zero byte).
constexpr uint64_t zero_bytes(uint64_t x) {
    return (x - kOnes) & ~x & kHigh;
}
}  // namespace octet_scan_detail

// The index of the first CR, LF or NUL in `text` at or after `from`, or text.size(). Sets
// `eight_bit` when an octet above 127 comes before it.
inline size_t find_cr_lf_nul(std::string_view text, size_t from, bool& eight_bit) {
    using namespace octet_scan_detail;
    const char* p = text.data();
    const size_t size = text.size();
    size_t i = from;
    uint64_t high = 0;
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'), nul = _mm_setzero_si128();
    for (; i + 16 <= size; i += 16) {
        const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        const __m128i hits =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(block, cr), _mm_cmpeq_epi8(block, lf)),
                         _mm_cmpeq_epi8(block, nul));
        const auto found = static_cast<unsigned>(_mm_movemask_epi8(hits));
        const auto above_127 = static_cast<unsigned>(_mm_movemask_epi8(block));  // high bits
        if (found) {
            const int k = std::countr_zero(found);
            if (high || (above_127 & ((1U << k) - 1))) eight_bit = true;
            return i + static_cast<size_t>(k);
        }
        if (above_127) high = 1;
    }
#endif
    for (; i + 8 <= size; i += 8) {
        uint64_t word;
        std::memcpy(&word, p + i, 8);  // little-endian: byte k of the text is bits 8k..8k+7
        const uint64_t found = zero_bytes(word) | zero_bytes(word ^ (kOnes * '\r')) |
                               zero_bytes(word ^ (kOnes * '\n'));
        if (found) {
            const int bits_before = std::countr_zero(found) & ~7;  // whole bytes before it
            if (bits_before > 0) high |= word & (kHigh >> (64 - bits_before));
            if (high) eight_bit = true;
            return i + static_cast<size_t>(bits_before / 8);
        }
        high |= word & kHigh;
    }
    if (high) eight_bit = true;
    for (; i < size; ++i) {
        const auto c = static_cast<unsigned char>(p[i]);
        if (c == '\r' || c == '\n' || c == '\0') return i;
        if (c >= 0x80) eight_bit = true;
    }
    return size;
}

}  // namespace postern::smtp
