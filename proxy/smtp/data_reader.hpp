// Message data decoding for DATA (RFC 5321 4.1.1.4, 4.5.2: dot transparency, end of data
// "CRLF . CRLF") and for BDAT chunks (RFC 3030: no dot handling). One byte-level state machine
// serves both, so the framing rules cannot drift apart.
//
// The end of data is only CR LF "." CR LF, where the first CR LF is a real one. A bare CR, bare
// LF or NUL never ends the data, whatever surrounds it (the SMTP smuggling variants). Under the
// "reject" policy such a message is refused after its end; under "normalize" a bare CR or LF
// becomes CRLF in the stored copy, and the line after it can never end the data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace postern::smtp {

inline constexpr size_t kMaxTextLine = 998;  // RFC 5321 4.5.3.1.6 / RFC 5322 2.1.1, without CRLF

enum class BareLineEndPolicy { kReject, kNormalize };

class DataReader {
  public:
    enum class Mode { kDotStuffed, kChunked };

    struct Flags {
        bool bare_line_end = false;  // a bare CR or LF was seen (under either policy)
        bool nul = false;            // a NUL octet was seen
        bool long_line = false;      // a line over 998 octets
        bool too_big = false;        // the content passed max_size; storing stopped
        bool eight_bit = false;      // an octet above 127
    };

    // Decoded content is appended to `out` until it would pass max_size, or until the message is
    // known to be refused (a NUL, or a bare CR/LF under "reject"): then `out` is emptied.
    DataReader(Mode mode, BareLineEndPolicy policy, uint64_t max_size, std::string& out);

    // Consumes input up to and including the end-of-data line (DATA mode) and returns the number
    // of octets used; done() tells whether the end was found. In chunked mode all input is used.
    size_t feed(std::string_view input);

    // Chunked mode: the last chunk was read. A trailing bare CR is judged and a message that
    // does not end with CRLF gets one, so that every stored line ends with CRLF.
    void finish();

    bool done() const { return done_; }
    const Flags& flags() const { return flags_; }
    uint64_t size() const { return size_; }  // decoded octets, counted even past max_size

  private:
    enum class State {
        kLineStart,       // after a real CRLF (or at the start): "." may begin the end of data
        kLineStartLoose,  // after a bare CR/LF: "." may be stuffing, never an end
        kDotLoose,        // a "." at a loose line start
        kDot,             // a "." at a real line start
        kDotCr,           // "." CR at a real line start
        kText,            // inside a line
        kCr,              // CR inside a line, waiting for LF
    };

    void emit(std::string_view octets);
    void emit_line_end();
    void refuse();
    void bare_line_end();
    void text(unsigned char c);

    Mode mode_;
    BareLineEndPolicy policy_;
    uint64_t max_size_;
    std::string& out_;
    State state_ = State::kLineStart;
    size_t line_length_ = 0;
    uint64_t size_ = 0;
    bool done_ = false;
    bool refused_ = false;  // a bare CR/LF under "reject", or a NUL: nothing more is kept
    Flags flags_;
};

}  // namespace postern::smtp
