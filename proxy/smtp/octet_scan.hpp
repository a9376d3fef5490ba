// Passing over plain message text: the octets that the DATA decoder and the dot-stuffing encoder
// copy as they are, 64 or 16 at a time (SSE2, which every x86-64 has) or one at a time elsewhere.
//
// Both spend most of their time looking for line ends. Each block of sixteen octets is tested
// for CR, LF (and NUL) at once, four blocks to a mask, and every line end inside is judged from
// the mask, without starting the search again after each line (docs/bench.md, "Passthrough").
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace postern::smtp {

// What skip_plain_text() learned about the text it passed, accumulated over calls.
struct TextScan {
    size_t line_length = 0;  // octets of the current line so far (it may have begun earlier)
    bool long_line = false;  // some line had more than the limit
    bool eight_bit = false;  // an octet above 127 was passed
};

// Passes plain text starting at `from` and returns where it stopped: octets other than CR, LF
// and NUL (NUL is text when NulIsText), and CR LF line ends followed by an octet that is in
// `text` and is not ".". Stops at anything else (a bare CR or LF, a NUL, a CR LF at the end of
// `text` or before a "."), or at text.size(). Line lengths are measured against `max_line`.
template <bool NulIsText>
inline size_t skip_plain_text(std::string_view text, size_t from, size_t max_line,
                              TextScan& scan) {
    const char* const p = text.data();
    const size_t size = text.size();
    // Where the current line starts. It may lie before `from` (and wrap below zero): only
    // differences are taken, and those are right in unsigned arithmetic.
    size_t line_start = from - scan.line_length;
    bool long_line = false;
    unsigned high = 0;  // high bits of the octets passed, as found
    size_t i = from;
    size_t stop = size;
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    const auto hits = [&](__m128i block) {
        __m128i h = _mm_or_si128(_mm_cmpeq_epi8(block, cr), _mm_cmpeq_epi8(block, lf));
        if constexpr (!NulIsText) h = _mm_or_si128(h, _mm_cmpeq_epi8(block, _mm_setzero_si128()));
        return static_cast<uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(h)));
    };
    const auto high_bits = [](__m128i block) {
        return static_cast<uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(block)));
    };
    uint64_t carried_lf = 0;  // 1: the next octet is the LF of a line end already taken
    // Judges the line ends among `special` (bit k: octet i + k), the CR LF ones taken. False when
    // an octet stops the run (`stop` says where).
    const auto take_line_ends = [&](uint64_t special, int bits, auto&& high_below) {
        while (special) {
            const int k = std::countr_zero(special);
            const size_t at = i + static_cast<size_t>(k);
            if (p[at] != '\r' || at + 2 >= size || p[at + 1] != '\n' || p[at + 2] == '.') {
                high |= high_below(k);
                stop = at;
                return false;
            }
            long_line |= at - line_start > max_line;
            line_start = at + 2;
            special &= ~(uint64_t{3} << k);  // the CR and its LF
            carried_lf = k == bits - 1;
        }
        return true;
    };
    // Sixty-four octets at a time: one CR/LF/NUL mask for all four blocks.
    for (; i + 64 <= size; i += 64) {
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 16));
        const __m128i b2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 32));
        const __m128i b3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 48));
        const uint64_t special =
            (hits(b0) | hits(b1) << 16 | hits(b2) << 32 | hits(b3) << 48) & ~carried_lf;
        carried_lf = 0;
        const auto high_below = [&](int k) -> unsigned {
            const uint64_t all =
                high_bits(b0) | high_bits(b1) << 16 | high_bits(b2) << 32 | high_bits(b3) << 48;
            return (all & ((uint64_t{1} << k) - 1)) != 0;
        };
        if (!take_line_ends(special, 64, high_below)) goto done;
        high |= static_cast<unsigned>(
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(b0, b1), _mm_or_si128(b2, b3))));
    }
    // Then sixteen at a time.
    for (; i + 16 <= size; i += 16) {
        const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
        const uint64_t special = hits(block) & ~carried_lf;
        carried_lf = 0;
        const auto high_below = [&](int k) -> unsigned {
            return (high_bits(block) & ((uint64_t{1} << k) - 1)) != 0;
        };
        if (!take_line_ends(special, 16, high_below)) goto done;
        high |= static_cast<unsigned>(high_bits(block));
    }
    i += carried_lf;
#endif
    for (; i < size; ++i) {
        const auto c = static_cast<unsigned char>(p[i]);
        if (c == '\r') {
            if (i + 2 >= size || p[i + 1] != '\n' || p[i + 2] == '.') {
                stop = i;
                goto done;
            }
            long_line |= i - line_start > max_line;
            line_start = i + 2;
            ++i;  // and the LF
            continue;
        }
        if (c == '\n' || (!NulIsText && c == '\0')) {
            stop = i;
            goto done;
        }
        high |= c & 0x80;
    }
done:
    scan.line_length = stop - line_start;
    scan.long_line |= long_line || scan.line_length > max_line;
    scan.eight_bit |= high != 0;
    return stop;
}

}  // namespace postern::smtp
