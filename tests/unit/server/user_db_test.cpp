// The users file, password checks and sender ownership.
#include "proxy/server/user_db.hpp"

#include <crypt.h>
#include <gtest/gtest.h>

#include <fstream>

#include "proxy/server/auth_limiter.hpp"

namespace postern::server {
namespace {

smtp::Address address(const std::string& text) {
    smtp::PathOptions options;
    options.allow_null = true;
    return smtp::parse_path("<" + text + ">", options).address;
}

std::string hash_of(const char* password, const char* prefix) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    EXPECT_NE(crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting), nullptr);
    crypt_data data{};
    return crypt_r(password, setting, &data);
}

TEST(Users, ParseLines) {
    std::vector<UserEntry> users;
    std::string error;
    ASSERT_TRUE(parse_users("# apps\n\napp:$y$j9T$salt$hash\r\nother:$6$salt$hash\n", users, error))
        << error;
    ASSERT_EQ(users.size(), 2u);
    EXPECT_EQ(users[0].name, "app");
    EXPECT_EQ(users[1].hash, "$6$salt$hash");
}

TEST(Users, BadLinesNamed) {
    std::vector<UserEntry> users;
    std::string error;
    EXPECT_FALSE(parse_users("ok:$6$a$b\nnocolon\n", users, error));
    EXPECT_EQ(error, "line 2: expected name:hash");
    users.clear();
    EXPECT_FALSE(parse_users("app:secret\n", users, error));
    EXPECT_NE(error.find("line 1: the hash of \"app\" is not a strong crypt(3) hash"),
              std::string::npos);
    users.clear();
    EXPECT_FALSE(parse_users(":$6$a$b\n", users, error));
    users.clear();
    EXPECT_FALSE(parse_users("a:$6$a$b\na:$6$c$d\n", users, error));
    EXPECT_EQ(error, "line 2: \"a\" is listed twice");
}

TEST(Users, VerifyEachHashKind) {
    const std::string path = testing::TempDir() + "/postern-user-db-test";
    {
        std::ofstream f(path);
        f << "y:" << hash_of("pw-y", "$y$") << "\n";
        f << "s:" << hash_of("pw-s", "$6$") << "\n";
        f << "b:" << hash_of("pw-b", "$2b$") << "\n";
    }
    config::Config c;
    c.auth.users_file = path;
    std::string error;
    auto db = UserDb::load(c, error);
    ASSERT_TRUE(db) << error;
    EXPECT_EQ(db->size(), 3u);
    for (const char* name : {"y", "s", "b"}) {
        const UserDb::User* u = db->find(name);
        ASSERT_NE(u, nullptr) << name;
        EXPECT_TRUE(db->verify(u, std::string("pw-") + name)) << name;
        EXPECT_FALSE(db->verify(u, "wrong")) << name;
        EXPECT_FALSE(db->verify(u, "")) << name;
    }
    EXPECT_EQ(db->find("nobody"), nullptr);
    EXPECT_FALSE(db->verify(nullptr, "pw-y"));
}

TEST(Senders, Matrix) {
    const std::vector<std::string> domain = {"@example.com"};
    EXPECT_TRUE(sender_allowed(domain, address("a@example.com")));
    EXPECT_TRUE(sender_allowed(domain, address("A@EXAMPLE.COM")));
    EXPECT_FALSE(sender_allowed(domain, address("a@example.org")));
    EXPECT_FALSE(sender_allowed(domain, address("a@sub.example.com")));
    EXPECT_FALSE(sender_allowed(domain, address("")));  // the null sender
    const std::vector<std::string> subdomains = {"@.example.com"};
    EXPECT_TRUE(sender_allowed(subdomains, address("a@sub.example.com")));
    EXPECT_TRUE(sender_allowed(subdomains, address("a@deep.sub.example.com")));
    EXPECT_FALSE(sender_allowed(subdomains, address("a@example.com")));
    EXPECT_FALSE(sender_allowed(subdomains, address("a@badexample.com")));
    const std::vector<std::string> exact = {"app@example.com", "<>"};
    EXPECT_TRUE(sender_allowed(exact, address("App@Example.com")));
    EXPECT_FALSE(sender_allowed(exact, address("other@example.com")));
    EXPECT_TRUE(sender_allowed(exact, address("")));
    EXPECT_TRUE(sender_allowed({}, address("anyone@anywhere.example")));
}

TEST(Senders, ConfigEntries) {
    EXPECT_FALSE(check_allowed_sender("a@example.com"));
    EXPECT_FALSE(check_allowed_sender("@example.com"));
    EXPECT_FALSE(check_allowed_sender("@.example.com"));
    EXPECT_FALSE(check_allowed_sender("<>"));
    EXPECT_TRUE(check_allowed_sender("example.com"));
    EXPECT_TRUE(check_allowed_sender("@"));
    EXPECT_TRUE(check_allowed_sender("a@b@c"));
}

TEST(AuthLimiter, LockoutAfterFailuresAndExpiry) {
    using namespace std::chrono;
    AuthLimiter limiter(3, minutes(5), minutes(15));
    auto ip = *config::IpAddress::parse("192.0.2.7");
    auto other = *config::IpAddress::parse("192.0.2.8");
    const auto t0 = AuthLimiter::Clock::time_point{} + hours(1);
    EXPECT_FALSE(limiter.failure(ip, t0));
    EXPECT_FALSE(limiter.failure(ip, t0 + seconds(1)));
    EXPECT_FALSE(limiter.locked(ip, t0 + seconds(2)));
    EXPECT_TRUE(limiter.failure(ip, t0 + seconds(2)));
    EXPECT_TRUE(limiter.locked(ip, t0 + seconds(3)));
    EXPECT_FALSE(limiter.locked(other, t0 + seconds(3)));
    EXPECT_TRUE(limiter.locked(ip, t0 + seconds(2) + minutes(15) - milliseconds(1)));
    EXPECT_FALSE(limiter.locked(ip, t0 + seconds(2) + minutes(15)));
}

TEST(AuthLimiter, FailuresOutsideTheWindowDoNotCount) {
    using namespace std::chrono;
    AuthLimiter limiter(3, minutes(5), minutes(15));
    auto ip = *config::IpAddress::parse("2001:db8::1");
    const auto t0 = AuthLimiter::Clock::time_point{} + hours(1);
    EXPECT_FALSE(limiter.failure(ip, t0));
    EXPECT_FALSE(limiter.failure(ip, t0 + minutes(1)));
    EXPECT_FALSE(limiter.failure(ip, t0 + minutes(6)));  // the first has left the window
    EXPECT_FALSE(limiter.locked(ip, t0 + minutes(6)));
    EXPECT_FALSE(limiter.failure(ip, t0 + minutes(6) + seconds(1)));  // 1m has left too
    EXPECT_TRUE(limiter.failure(ip, t0 + minutes(6) + seconds(2)));   // 3 within 5 minutes
    EXPECT_TRUE(limiter.locked(ip, t0 + minutes(7)));
}

}  // namespace
}  // namespace postern::server
