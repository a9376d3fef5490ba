// The users who may AUTH: the users file ("name:hash" lines, hashes in crypt(3) formats such as
// yescrypt "$y$...", sha512-crypt "$6$..." or bcrypt "$2b$...", as mkpasswd makes them), checked
// with libxcrypt; and the sender addresses each may use ([user.NAME] allowed_senders).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/config.hpp"
#include "proxy/smtp/address.hpp"

namespace postern::server {

struct UserEntry {
    std::string name;
    std::string hash;
};

// Parses a users file: "name:hash" per line; empty lines and lines starting with '#' are
// skipped. False with "line N: ..." in `error` at the first bad line (no ':', an empty or
// duplicate name, a hash that is not a crypt(3) "$id$" hash).
bool parse_users(std::string_view text, std::vector<UserEntry>& out, std::string& error);

class UserDb {
  public:
    // Reads config.auth.users_file; null with the reason in `error`.
    static std::shared_ptr<const UserDb> load(const config::Config& config, std::string& error);

    struct User {
        std::string name;
        std::string hash;
        const config::UserConfig* options = nullptr;  // its [user.NAME] table, if any
    };
    const User* find(std::string_view name) const;
    size_t size() const { return users_.size(); }

    // crypt_r() of `password` with the user's hash as setting, compared in constant time. Slow
    // by design (tens of milliseconds for yescrypt): not on an I/O thread. For an unknown user
    // pass nullptr: the same work is done against a dummy hash, and false is returned, so that
    // the time taken does not tell which names exist.
    bool verify(const User* user, const std::string& password) const;

  private:
    std::map<std::string, User, std::less<>> users_;
    std::string dummy_hash_;
};

// A yescrypt hash of `password` with a fresh random salt, for the users file (`postern passwd`);
// empty when libxcrypt cannot make one.
std::string hash_password(const std::string& password);

// Whether `sender` is one of `allowed` ("a@example.com" exactly, the domain of "@example.com",
// the subdomains of "@.example.com", "<>" for the null sender). Domains and local parts
// compare without regard to case. An empty list allows any sender.
bool sender_allowed(const std::vector<std::string>& allowed, const smtp::Address& sender);

// A check of one allowed_senders entry for the configuration: nullopt when it is well formed.
std::optional<std::string> check_allowed_sender(const std::string& entry);

}  // namespace postern::server
