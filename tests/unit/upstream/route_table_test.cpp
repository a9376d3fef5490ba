// Unit tests for route selection (proxy/upstream/route_table.hpp): domain patterns, and
// [[route_rule]] lists read by the configuration loader.
#include "proxy/upstream/route_table.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "proxy/config/config_loader.hpp"

namespace postern::upstream {
namespace {

// ---- domain_matches --------------------------------------------------------------------------

TEST(DomainMatches, Exact) {
    EXPECT_TRUE(domain_matches("example.com", "example.com"));
    EXPECT_FALSE(domain_matches("example.org", "example.com"));
    EXPECT_FALSE(domain_matches("sub.example.com", "example.com")) << "no implicit subdomains";
    EXPECT_FALSE(domain_matches("example.com", "sub.example.com"));
    EXPECT_FALSE(domain_matches("example.co", "example.com"));
}

TEST(DomainMatches, CaseInsensitive) {
    EXPECT_TRUE(domain_matches("Example.COM", "example.com"));
    EXPECT_TRUE(domain_matches("example.com", "EXAMPLE.com"));
    EXPECT_TRUE(domain_matches("Sub.EXAMPLE.com", "*.example.COM"));
}

TEST(DomainMatches, Wildcard) {
    EXPECT_TRUE(domain_matches("sub.example.com", "*.example.com"));
    EXPECT_TRUE(domain_matches("a.b.example.com", "*.example.com"));
    EXPECT_FALSE(domain_matches("example.com", "*.example.com")) << "not the domain itself";
    EXPECT_FALSE(domain_matches("badexample.com", "*.example.com"));
    EXPECT_FALSE(domain_matches(".example.com", "*.example.com"));
    EXPECT_FALSE(domain_matches("sub.example.com.evil.test", "*.example.com"));
    EXPECT_FALSE(domain_matches("sub.example.org", "*.example.com"));
}

TEST(DomainMatches, EmptyDomainNeverMatches) {
    EXPECT_FALSE(domain_matches("", "example.com"));
    EXPECT_FALSE(domain_matches("", "*.example.com"));
    EXPECT_FALSE(domain_matches("", ""));
}

// ---- RouteTable::select ----------------------------------------------------------------------

// Two listeners ("mx" on route "default", "submission" on route "relay") and outbox routes
// "default", "relay", "partner" and "internal"; the tests add [[route_rule]] tables.
constexpr const char* kBase = R"([[listener]]
name = "mx"
address = "127.0.0.1:2525"

[[listener]]
name = "submission"
address = "127.0.0.1:2587"
route = "relay"

[route.default]
outbox = "out/default"

[route.relay]
outbox = "out/relay"

[route.partner]
outbox = "out/partner"

[route.internal]
outbox = "out/internal"

)";

config::LoadResult load(const std::string& rules) {
    config::LoadResult r = config::load_config_text(kBase + rules, "routes.toml");
    std::string issues;
    for (const config::ConfigIssue& i : r.issues) issues += "  " + i.to_string() + "\n";
    EXPECT_TRUE(r.issues.empty()) << issues;
    return r;
}

class RouteTableTest : public ::testing::Test {
  protected:
    void use(const std::string& rules) {
        loaded_ = load(rules);
        ASSERT_EQ(loaded_.config.listeners.size(), 2u);
    }
    const config::ListenerConfig& mx() const { return loaded_.config.listeners.at(0); }
    const config::ListenerConfig& submission() const { return loaded_.config.listeners.at(1); }
    std::string route_for(const config::ListenerConfig& listener, std::string_view sender_domain,
                          std::string_view recipient_domain) const {
        RouteTable table(loaded_.config);
        return table.select(listener, sender_domain, recipient_domain);
    }

    config::LoadResult loaded_;
};

TEST_F(RouteTableTest, NoRulesUsesTheListenerRoute) {
    use("");
    EXPECT_EQ(route_for(mx(), "example.com", "example.net"), "default");
    EXPECT_EQ(route_for(submission(), "example.com", "example.net"), "relay");
}

TEST_F(RouteTableTest, RecipientDomainRule) {
    use(R"([[route_rule]]
recipient_domain = "partner.example"
route = "partner"
)");
    EXPECT_EQ(route_for(mx(), "example.com", "partner.example"), "partner");
    EXPECT_EQ(route_for(mx(), "example.com", "PARTNER.Example"), "partner");
    EXPECT_EQ(route_for(submission(), "example.com", "partner.example"), "partner")
        << "no listener condition: every listener";
    EXPECT_EQ(route_for(mx(), "example.com", "other.example"), "default") << "fallback";
    EXPECT_EQ(route_for(submission(), "example.com", "other.example"), "relay") << "fallback";
    EXPECT_EQ(route_for(mx(), "example.com", "sub.partner.example"), "default");
}

TEST_F(RouteTableTest, FirstMatchWins) {
    use(R"([[route_rule]]
recipient_domain = "*.example.net"
route = "internal"

[[route_rule]]
recipient_domain = ["mail.example.net", "example.net"]
route = "partner"
)");
    EXPECT_EQ(route_for(mx(), "example.com", "mail.example.net"), "internal");
    EXPECT_EQ(route_for(mx(), "example.com", "example.net"), "partner");
}

TEST_F(RouteTableTest, FirstMatchWinsInTheOtherOrder) {
    use(R"([[route_rule]]
recipient_domain = ["mail.example.net", "example.net"]
route = "partner"

[[route_rule]]
recipient_domain = "*.example.net"
route = "internal"
)");
    EXPECT_EQ(route_for(mx(), "example.com", "mail.example.net"), "partner");
    EXPECT_EQ(route_for(mx(), "example.com", "other.example.net"), "internal");
}

TEST_F(RouteTableTest, AllConditionsMustMatch) {
    use(R"([[route_rule]]
sender_domain = "example.com"
recipient_domain = "partner.example"
listener = "mx"
route = "partner"
)");
    EXPECT_EQ(route_for(mx(), "example.com", "partner.example"), "partner");
    EXPECT_EQ(route_for(mx(), "example.org", "partner.example"), "default") << "sender differs";
    EXPECT_EQ(route_for(mx(), "example.com", "example.org"), "default") << "recipient differs";
    EXPECT_EQ(route_for(submission(), "example.com", "partner.example"), "relay")
        << "listener differs";
}

TEST_F(RouteTableTest, ListEntriesAreAlternatives) {
    use(R"([[route_rule]]
sender_domain = ["a.example", "*.b.example"]
route = "internal"
)");
    EXPECT_EQ(route_for(mx(), "a.example", "x.test"), "internal");
    EXPECT_EQ(route_for(mx(), "mail.b.example", "x.test"), "internal");
    EXPECT_EQ(route_for(mx(), "b.example", "x.test"), "default");
    EXPECT_EQ(route_for(mx(), "c.example", "x.test"), "default");
}

TEST_F(RouteTableTest, ListenerCondition) {
    use(R"([[route_rule]]
listener = "submission"
route = "internal"

[[route_rule]]
listener = ["mx", "submission"]
recipient_domain = "partner.example"
route = "partner"
)");
    EXPECT_EQ(route_for(submission(), "example.com", "partner.example"), "internal");
    EXPECT_EQ(route_for(mx(), "example.com", "partner.example"), "partner");
    EXPECT_EQ(route_for(mx(), "example.com", "example.org"), "default");
}

TEST_F(RouteTableTest, NullSenderMatchesNoSenderDomainRule) {
    use(R"([[route_rule]]
sender_domain = "*.example.com"
route = "internal"

[[route_rule]]
sender_domain = "example.com"
route = "internal"

[[route_rule]]
recipient_domain = "partner.example"
route = "partner"
)");
    EXPECT_EQ(route_for(mx(), "", "example.org"), "default");
    EXPECT_EQ(route_for(mx(), "", "partner.example"), "partner")
        << "a rule without a sender condition still applies";
    EXPECT_EQ(route_for(mx(), "example.com", "example.org"), "internal");
}

}  // namespace
}  // namespace postern::upstream
