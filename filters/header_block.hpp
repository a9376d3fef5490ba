// The header section of a message (RFC 5322 2.2) as a list of fields that filters read and
// edit: lookups are case-insensitive and unfold continuation lines; edits keep every untouched
// field byte for byte, so a message nobody edits is stored exactly as received.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern::filters {

class HeaderBlock {
  public:
    // What edits may add to one message in all (fields set or added).
    static constexpr size_t kMaxAdded = 64 * 1024;

    HeaderBlock() = default;
    // `section` is the header section with its line ends, without the empty line after it.
    explicit HeaderBlock(std::string_view section);

    // Splits a message into its header section (with the CRLF of its last field) and the rest
    // (from the empty line on). A message without an empty line is all header.
    static size_t header_length(std::string_view message);

    // The first field's value, unfolded (CRLF before white space removed), leading and
    // trailing white space trimmed.
    std::optional<std::string> first(std::string_view name) const;
    std::vector<std::string> all(std::string_view name) const;

    // Edits. A name must be printable US-ASCII without ':' (RFC 5322 2.2); a value has no CR,
    // LF or NUL and at most 900 octets (one line stays within 998). False and `error` otherwise.
    bool add(std::string_view name, std::string_view value, std::string& error);
    // Replaces the first field of that name (removing any others), or adds it.
    bool set(std::string_view name, std::string_view value, std::string& error);
    size_t remove(std::string_view name);

    bool changed() const { return changed_; }
    std::string text() const;

  private:
    struct Field {
        std::string name;  // as written
        std::string raw;   // the whole field: name, colon, value, continuation lines, CRLF
    };
    static bool valid(std::string_view name, std::string_view value, std::string& error);
    bool account(std::string_view name, std::string_view value, std::string& error);
    std::vector<Field> fields_;
    bool changed_ = false;
    size_t added_ = 0;  // octets added by edits: at most kMaxAdded per message
};

}  // namespace postern::filters
