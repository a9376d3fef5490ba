// Unit tests for the filter interface (filters/filter.hpp): the pass-through defaults continue,
// and an override's verdict reaches the caller through the awaitable.
#include "filters/filter.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

namespace postern::filters {
namespace {

namespace asio = boost::asio;

class RefuseRecipients : public Filter {
public:
    asio::awaitable<Verdict> on_rcpt_to(const ConnectionView&, const TransactionView&,
                                        const std::string& recipient) override {
        if (recipient.find("@blocked.example") == std::string::npos) co_return Verdict{};
        co_return Verdict{Action::kReject, FilterReply{550, "5.7.1", "blocked"}, "test"};
    }
};

template <typename Hook>
Verdict run(Hook hook) {
    asio::io_context io;
    auto future = asio::co_spawn(io, hook(), asio::use_future);
    io.run();
    return future.get();
}

TEST(Filter, DefaultsContinue) {
    Filter pass;
    ConnectionView conn{"192.0.2.1", "internal", "client.example", ""};
    TransactionView tx{"01M8HDW9P9FG1G", "a@example.org"};
    EXPECT_EQ(run([&] { return pass.on_connect(conn); }).action, Action::kContinue);
    EXPECT_EQ(run([&] { return pass.on_auth(conn); }).action, Action::kContinue);
    EXPECT_EQ(run([&] { return pass.on_data(conn, tx); }).action, Action::kContinue);
    EXPECT_FALSE(run([&] { return pass.on_mail_from(conn, tx); }).reply.has_value());
}

TEST(Filter, OverrideDecides) {
    RefuseRecipients filter;
    ConnectionView conn{"192.0.2.1", "internal", "client.example", ""};
    TransactionView tx{"01M8HDW9P9FG1G", "a@example.org"};
    std::string ok = "b@example.net";
    std::string blocked = "b@blocked.example";
    EXPECT_EQ(run([&] { return filter.on_rcpt_to(conn, tx, ok); }).action, Action::kContinue);
    Verdict v = run([&] { return filter.on_rcpt_to(conn, tx, blocked); });
    EXPECT_EQ(v.action, Action::kReject);
    ASSERT_TRUE(v.reply.has_value());
    EXPECT_EQ(v.reply->code, 550);
    EXPECT_EQ(v.reply->enhanced, "5.7.1");
}

}  // namespace
}  // namespace postern::filters
