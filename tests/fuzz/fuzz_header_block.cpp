// Fuzzes the header section parser that filters read and edit: whatever a client sends, an
// unedited block gives back its input byte for byte, lookups never hold a line end, and edits
// give well-formed fields.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "filters/header_block.hpp"

using postern::filters::HeaderBlock;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view message(reinterpret_cast<const char*>(data), size);
    const size_t length = HeaderBlock::header_length(message);
    if (length > message.size()) std::abort();
    HeaderBlock block(message.substr(0, length));
    if (block.text() != message.substr(0, length)) std::abort();
    for (std::string_view name : {"From", "Subject", "received", ""}) {
        for (const std::string& v : block.all(name)) {
            if (v.find_first_of("\r\n") != std::string::npos) std::abort();
        }
    }
    std::string error;
    if (!block.add("X-Fuzz", "value", error)) std::abort();
    if (block.first("x-fuzz") != std::optional<std::string>("value")) std::abort();
    if (!block.set("Subject", "set", error)) std::abort();
    if (block.all("subject").size() != 1) std::abort();
    block.remove("X-FUZZ");
    if (block.first("X-Fuzz")) std::abort();
    // A name or value from the input is either refused or written as one field.
    size_t colon = message.find(':');
    if (colon != std::string_view::npos && colon < 80) {
        HeaderBlock other;
        if (other.add(message.substr(0, colon), message.substr(colon + 1, 200), error)) {
            std::string text = other.text();
            if (text.find("\r\n") != text.size() - 2) std::abort();
        }
    }
    return 0;
}
