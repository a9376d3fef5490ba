// EHLO keyword parsing; see capabilities.hpp.
#include "proxy/smtp/capabilities.hpp"

#include <algorithm>
#include <charconv>

namespace postern::smtp {
namespace {

std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    }
    return out;
}

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    size_t pos = 0;
    while (pos < line.size()) {
        size_t start = line.find_first_not_of(' ', pos);
        if (start == std::string_view::npos) break;
        size_t end = line.find(' ', start);
        if (end == std::string_view::npos) end = line.size();
        out.push_back(line.substr(start, end - start));
        pos = end;
    }
    return out;
}

void add_mechanisms(Capabilities& caps, const std::vector<std::string_view>& mechanisms,
                    size_t first) {
    for (size_t i = first; i < mechanisms.size(); ++i) {
        std::string m = upper(mechanisms[i]);
        if (!m.empty() && !caps.offers_auth(m)) caps.auth.push_back(std::move(m));
    }
}

}  // namespace

bool Capabilities::offers_auth(std::string_view mechanism) const {
    return std::find(auth.begin(), auth.end(), mechanism) != auth.end();
}

Capabilities parse_ehlo_reply(const ServerReply& reply) {
    Capabilities caps;
    caps.esmtp = reply.code == 250;
    // The first line is the server's name and greeting text, not a keyword. The parser removed
    // what looked like an enhanced code from the lines' text; EHLO lines carry none
    // (RFC 2034 3), so a keyword such as "2.0.0" cannot occur.
    for (size_t i = 1; i < reply.lines.size(); ++i) {
        std::vector<std::string_view> w = words(reply.lines[i]);
        if (w.empty()) continue;
        std::string keyword = upper(w[0]);
        if (keyword == "PIPELINING") {
            caps.pipelining = true;
        } else if (keyword == "STARTTLS") {
            caps.starttls = true;
        } else if (keyword == "8BITMIME") {
            caps.eight_bit_mime = true;
        } else if (keyword == "SMTPUTF8") {
            caps.smtputf8 = true;
        } else if (keyword == "CHUNKING") {
            caps.chunking = true;
        } else if (keyword == "DSN") {
            caps.dsn = true;
        } else if (keyword == "ENHANCEDSTATUSCODES") {
            caps.enhanced_status_codes = true;
        } else if (keyword == "SIZE") {
            uint64_t limit = 0;
            if (w.size() > 1) {
                auto [p, ec] = std::from_chars(w[1].data(), w[1].data() + w[1].size(), limit);
                if (ec != std::errc() || p != w[1].data() + w[1].size()) limit = 0;
            }
            caps.size = limit;
        } else if (keyword == "AUTH") {
            add_mechanisms(caps, w, 1);
        } else if (keyword.rfind("AUTH=", 0) == 0) {
            std::vector<std::string_view> mechanisms = w;
            mechanisms[0].remove_prefix(5);
            add_mechanisms(caps, mechanisms, 0);
        }
    }
    return caps;
}

}  // namespace postern::smtp
