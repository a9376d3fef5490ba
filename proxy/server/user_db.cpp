// The users file and sender ownership; see user_db.hpp.
#include "proxy/server/user_db.hpp"

#include <crypt.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace postern::server {

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

bool crypt_matches(const std::string& hash, const std::string& password) {
    crypt_data data{};
    const char* computed = crypt_r(password.c_str(), hash.c_str(), &data);
    // libxcrypt returns "*0"/"*1" (or null) for a setting it cannot use: never a match.
    if (!computed || computed[0] == '*') return false;
    const size_t n = std::strlen(computed);
    return n == hash.size() && CRYPTO_memcmp(computed, hash.data(), n) == 0;
}

}  // namespace

bool parse_users(std::string_view text, std::vector<UserEntry>& out, std::string& error) {
    size_t line_number = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        ++line_number;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || line.front() == '#') continue;
        const std::string where = "line " + std::to_string(line_number) + ": ";
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            error = where + "expected name:hash";
            return false;
        }
        std::string_view name = line.substr(0, colon);
        std::string_view hash = line.substr(colon + 1);
        if (name.empty() || name.find_first_of(" \t") != std::string_view::npos) {
            error = where + "the user name is empty or has blanks";
            return false;
        }
        // yescrypt, scrypt, bcrypt, sha512-crypt, sha256-crypt: not DES or MD5 crypt, not NT
        // hashes, not a clear password.
        static constexpr std::string_view kStrong[] = {"$y$",  "$gy$", "$7$", "$2b$",
                                                       "$2a$", "$2y$", "$6$", "$5$"};
        const bool strong = std::any_of(std::begin(kStrong), std::end(kStrong),
                                        [&](std::string_view p) { return hash.starts_with(p); });
        if (!strong || hash.find_first_of(" \t:") != std::string_view::npos) {
            error = where + "the hash of \"" + std::string(name) +
                    "\" is not a strong crypt(3) hash (yescrypt, bcrypt, sha512-crypt...) such as "
                    "mkpasswd -m yescrypt makes";
            return false;
        }
        for (const UserEntry& e : out) {
            if (e.name == name) {
                error = where + "\"" + std::string(name) + "\" is listed twice";
                return false;
            }
        }
        out.push_back({std::string(name), std::string(hash)});
    }
    return true;
}

std::shared_ptr<const UserDb> UserDb::load(const config::Config& config, std::string& error) {
    std::ifstream in(config.auth.users_file, std::ios::binary);
    if (!in) {
        error = "cannot read the users file \"" + config.auth.users_file + "\"";
        return nullptr;
    }
    std::ostringstream text;
    text << in.rdbuf();
    std::vector<UserEntry> entries;
    std::string problem;
    if (!parse_users(text.str(), entries, problem)) {
        error = config.auth.users_file + ": " + problem;
        return nullptr;
    }
    auto db = std::make_shared<UserDb>();
    for (UserEntry& e : entries) {
        User u{e.name, e.hash, nullptr};
        if (auto it = config.users.find(e.name); it != config.users.end()) u.options = &it->second;
        db->users_.emplace(e.name, std::move(u));
    }
    // The dummy: a yescrypt hash of nothing anyone types.
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting)) {
        crypt_data data{};
        if (const char* h = crypt_r("postern-dummy", setting, &data); h && h[0] != '*') {
            db->dummy_hash_ = h;
        }
    }
    return db;
}

const UserDb::User* UserDb::find(std::string_view name) const {
    auto it = users_.find(name);
    return it == users_.end() ? nullptr : &it->second;
}

bool UserDb::verify(const User* user, const std::string& password) const {
    if (!user) {
        if (!dummy_hash_.empty()) crypt_matches(dummy_hash_, password);
        return false;
    }
    return crypt_matches(user->hash, password);
}

std::string hash_password(const std::string& password) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting)) return {};
    crypt_data data{};
    const char* hash = crypt_r(password.c_str(), setting, &data);
    if (!hash || hash[0] == '*') return {};
    return hash;
}

bool sender_allowed(const std::vector<std::string>& allowed, const smtp::Address& sender) {
    if (allowed.empty()) return true;
    const std::string domain = lower(sender.domain);
    const std::string address = lower(sender.mailbox());
    for (const std::string& entry : allowed) {
        if (entry == "<>") {
            if (sender.null) return true;
            continue;
        }
        if (sender.null) continue;
        if (entry.rfind("@.", 0) == 0) {
            const std::string parent = lower(std::string_view(entry).substr(2));
            if (domain.size() > parent.size() + 1 && domain.ends_with("." + parent)) return true;
        } else if (entry.front() == '@') {
            if (domain == lower(std::string_view(entry).substr(1))) return true;
        } else if (address == lower(entry)) {
            return true;
        }
    }
    return false;
}

std::optional<std::string> check_allowed_sender(const std::string& entry) {
    if (entry == "<>") return std::nullopt;
    if (entry.rfind("@.", 0) == 0 || entry.rfind("@", 0) == 0) {
        std::string_view domain = std::string_view(entry).substr(entry[1] == '.' ? 2 : 1);
        if (smtp::is_valid_domain(domain, true)) return std::nullopt;
        return "is not \"@domain\" or \"@.domain\" with a valid domain";
    }
    smtp::PathOptions options;
    smtp::PathParse parsed = smtp::parse_path("<" + entry + ">", options);
    if (parsed.error == smtp::AddressError::kNone && parsed.consumed == entry.size() + 2) {
        return std::nullopt;
    }
    return "is not an address (a@example.com), \"@domain\", \"@.domain\" or \"<>\"";
}

}  // namespace postern::server
