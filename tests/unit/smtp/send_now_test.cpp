// Unit tests for the direct send of SMTP lines (proxy/smtp/send_now.hpp), on a real loopback
// TCP connection: everything taken at once, a full send buffer (a partial send, not an error,
// and the rest goes after what was sent, in order), a peer that has gone, and consume().
#include "proxy/smtp/send_now.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <string>
#include <vector>

namespace postern::smtp {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A connected pair on loopback; `sender` is non-blocking, as send_now() requires.
struct Pair {
    asio::io_context io;
    tcp::socket sender{io};
    tcp::socket receiver{io};

    Pair() {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        sender.connect(acceptor.local_endpoint());
        acceptor.accept(receiver);
        sender.non_blocking(true);
    }
    std::string receive(size_t n) {
        std::string out(n, '\0');
        asio::read(receiver, asio::buffer(out));
        return out;
    }
};

TEST(SendNow, ShortLineGoesAtOnce) {
    Pair p;
    const std::string line = "250 2.0.0 Ok\r\n";
    boost::system::error_code ec;
    EXPECT_EQ(send_now(p.sender, asio::buffer(line), ec), line.size());
    EXPECT_FALSE(ec);
    EXPECT_EQ(p.receive(line.size()), line);
}

TEST(SendNow, GatheredBuffersGoInOrder) {
    Pair p;
    const std::string a = "MAIL FROM:<a@example.org>\r\n", b = "RCPT TO:<b@example.net>\r\n";
    std::vector<asio::const_buffer> buffers{asio::buffer(a), asio::buffer(b)};
    boost::system::error_code ec;
    EXPECT_EQ(send_now(p.sender, buffers, ec), a.size() + b.size());
    EXPECT_FALSE(ec);
    EXPECT_EQ(p.receive(a.size() + b.size()), a + b);
}

TEST(SendNow, FullSendBufferIsAPartialSendNotAnError) {
    Pair p;
    // More than the kernel's send and receive buffers together: the first call cannot take it
    // all, and a later one finds no room at all while nobody reads.
    std::string big(64 * 1024 * 1024, 'x');
    boost::system::error_code ec;
    size_t sent = send_now(p.sender, asio::buffer(big), ec);
    EXPECT_FALSE(ec);
    EXPECT_GT(sent, 0u);
    EXPECT_LT(sent, big.size());
    EXPECT_EQ(send_now(p.sender, asio::buffer(big) + sent, ec), 0u);
    EXPECT_FALSE(ec) << ec.message();
}

TEST(SendNow, PeerGoneIsAnError) {
    Pair p;
    p.receiver.set_option(asio::socket_base::linger(true, 0));  // close with RST
    p.receiver.close();
    const std::string line = "250 Ok\r\n";
    boost::system::error_code ec;
    // The first send may still be taken before the reset is seen; a later one fails.
    for (int i = 0; i < 100 && !ec; ++i) send_now(p.sender, asio::buffer(line), ec);
    EXPECT_TRUE(ec);
}

TEST(SendNowConsume, DropsWholeAndPartialBuffers) {
    const std::string a = "abc", b = "defg", c = "hi";
    std::vector<asio::const_buffer> buffers{asio::buffer(a), asio::buffer(b), asio::buffer(c)};
    consume(buffers, 0);
    EXPECT_EQ(buffers.size(), 3u);
    consume(buffers, 5);  // all of "abc", "de" of "defg"
    ASSERT_EQ(buffers.size(), 2u);
    EXPECT_EQ(std::string(static_cast<const char*>(buffers[0].data()), buffers[0].size()), "fg");
    consume(buffers, 2);  // exactly the rest of the first
    ASSERT_EQ(buffers.size(), 1u);
    EXPECT_EQ(std::string(static_cast<const char*>(buffers[0].data()), buffers[0].size()), "hi");
    consume(buffers, 2);
    EXPECT_TRUE(buffers.empty());
}

}  // namespace
}  // namespace postern::smtp
