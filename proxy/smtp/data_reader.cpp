// Message data state machine; see data_reader.hpp.
#include "proxy/smtp/data_reader.hpp"

#include "proxy/smtp/octet_scan.hpp"

namespace postern::smtp {

DataReader::DataReader(Mode mode, BareLineEndPolicy policy, uint64_t max_size, std::string& out)
    : mode_(mode), policy_(policy), max_size_(max_size), out_(out) {}

void DataReader::emit(std::string_view octets) {
    size_ += octets.size();
    if (flags_.too_big || refused_) return;
    if (size_ > max_size_) {
        // Stop buffering at once: nothing of an oversized message is kept or stored.
        flags_.too_big = true;
        out_.clear();
        out_.shrink_to_fit();
        return;
    }
    out_.append(octets);
}

void DataReader::emit_line_end() {
    emit("\r\n");
    line_length_ = 0;
}

void DataReader::bare_line_end() {
    flags_.bare_line_end = true;
    if (policy_ == BareLineEndPolicy::kReject) refuse();
    // The framing is the same under both policies: the next line starts "loose", so it can
    // never be the end of data.
    emit_line_end();
    state_ = State::kLineStartLoose;
}

void DataReader::refuse() {
    // The message will be refused: keep reading to its end, but stop buffering it.
    refused_ = true;
    out_.clear();
    out_.shrink_to_fit();
}

void DataReader::text(unsigned char c) {
    if (c == 0) {
        flags_.nul = true;
        refuse();
        return;
    }
    // One octet of text (runs of text take the fast path in feed()).
    if (c >= 0x80) flags_.eight_bit = true;
    if (++line_length_ > kMaxTextLine) flags_.long_line = true;
    const char octet = static_cast<char>(c);
    emit(std::string_view(&octet, 1));
}

size_t DataReader::feed(std::string_view input) {
    size_t i = 0;
    while (i < input.size() && !done_) {
        auto c = static_cast<unsigned char>(input[i]);
        switch (state_) {
            case State::kLineStart:
                if (mode_ == Mode::kDotStuffed && c == '.') {
                    state_ = State::kDot;
                    ++i;
                    continue;
                }
                state_ = State::kText;
                continue;  // the same octet, as text
            case State::kLineStartLoose:
                if (mode_ == Mode::kDotStuffed && c == '.') {
                    state_ = State::kDotLoose;
                    ++i;
                    continue;
                }
                state_ = State::kText;
                continue;
            case State::kDotLoose:
                // A client that ends lines with bare LF still dot-stuffs: "..x" is ".x". A "."
                // alone on such a line is content ("."), never an end of data.
                if (c == '\r' || c == '\n') text('.');
                state_ = State::kText;
                continue;
            case State::kDot:
                if (c == '\r') {
                    state_ = State::kDotCr;
                    ++i;
                    continue;
                }
                // RFC 5321 4.5.2: a leading "." followed by more text is removed. A "." followed
                // by a bare LF is kept as content (it is not an end of data either way).
                if (c == '\n') text('.');
                state_ = State::kText;
                continue;
            case State::kDotCr:
                if (c == '\n') {
                    done_ = true;
                    ++i;
                    continue;
                }
                // "." CR then something else: the dot is content, the CR is bare.
                text('.');
                bare_line_end();
                continue;
            case State::kText: {
                // The common case: whole lines of ordinary text, copied at once. A real line end
                // stays inside the run only when the next octet is here and is not ".": the
                // same as the states above would do with it (kLineStart, then kText).
                TextScan scan{line_length_, false, false};
                const size_t end = skip_plain_text<false>(input, i, kMaxTextLine, scan);
                line_length_ = scan.line_length;
                if (scan.long_line) flags_.long_line = true;
                if (scan.eight_bit) flags_.eight_bit = true;
                if (end > i) emit(input.substr(i, end - i));
                i = end;
                if (i == input.size()) continue;
                // A CR, LF or NUL that the run could not take.
                c = static_cast<unsigned char>(input[i]);
                if (c == '\r') {
                    state_ = State::kCr;
                } else if (c == '\n') {
                    bare_line_end();
                } else {
                    text(c);
                }
                ++i;
                continue;
            }
            case State::kCr:
                if (c == '\n') {
                    emit_line_end();
                    state_ = State::kLineStart;
                    ++i;
                    continue;
                }
                bare_line_end();  // the CR was bare; the octet is judged on the loose line
                continue;
        }
    }
    return i;
}

void DataReader::finish() {
    switch (state_) {
        case State::kCr:
            bare_line_end();
            break;
        case State::kText:
            emit_line_end();
            break;
        default:
            break;
    }
}

}  // namespace postern::smtp
