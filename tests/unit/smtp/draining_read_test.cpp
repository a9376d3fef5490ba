// Unit tests for reads that tell Asio when they emptied the socket (proxy/smtp/draining_read.hpp),
// on a real loopback TCP connection: the recv() step's verdicts (with and without TCP_INQ, with
// a FIN behind the data), and that a read started after one that emptied the socket still
// completes, whether the next data or the close comes later or had already arrived.
#include "proxy/smtp/draining_read.hpp"

#include <gtest/gtest.h>
#include <poll.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/version.hpp>
#include <chrono>
#include <optional>
#include <string>

namespace postern::smtp {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A connected pair on loopback; `receiver` is non-blocking, as Asio keeps its sockets, and
// has TCP_INQ unless `hint` is false.
struct Pair {
    asio::io_context io;
    tcp::socket sender{io};
    tcp::socket receiver{io};

    explicit Pair(bool hint = true) {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        sender.connect(acceptor.local_endpoint());
        acceptor.accept(receiver);
        receiver.non_blocking(true);
        boost::system::error_code ec;
        if (hint) enable_receive_queue_hint(receiver.native_handle(), ec);
        EXPECT_FALSE(ec) << ec.message();
    }
    void send(const std::string& text) { asio::write(sender, asio::buffer(text)); }
    // Until what was sent is in the receiver's queue (loopback is nearly always at once).
    bool readable() {
        pollfd p{receiver.native_handle(), POLLIN, 0};
        return ::poll(&p, 1, 2000) == 1;
    }
};

// Where it can be (Linux's epoll, this Boost), the specialization must be in effect: else the
// tests of the recv() step below would vanish without a word.
#if defined(__linux__) && BOOST_VERSION / 100 == 1081 && !defined(POSTERN_DRAINING_READ)
#error "DrainingRead's recv() step is not in effect on Linux with Boost 1.81"
#endif

#if defined(POSTERN_DRAINING_READ)
// The recv() step Asio runs for a DrainingRead, called directly. (The operation's destructor
// is protected in Asio: a subclass makes one on the stack.)
struct RecvStep : asio::detail::reactive_socket_recv_op_base<DrainingRead> {
    RecvStep(tcp::socket& s, char* data, size_t size)
        : reactive_socket_recv_op_base(boost::system::error_code(), s.native_handle(),
                                       asio::detail::socket_ops::stream_oriented,
                                       DrainingRead(asio::buffer(data, size)), 0, &no_completion) {}
    static void no_completion(void*, asio::detail::scheduler_operation*,
                              const boost::system::error_code&, std::size_t) {}
};
using Status = asio::detail::reactor_op::status;

TEST(DrainingRead, NothingThereIsNotDone) {
    Pair p;
    char data[64];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::not_done);
}

TEST(DrainingRead, ShortReadEmptiedTheSocket) {
    Pair p;
    p.send("HELO a\r\n");
    ASSERT_TRUE(p.readable());
    char data[64];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::done_and_exhausted);
    EXPECT_FALSE(step.ec_);
    EXPECT_EQ(std::string(data, step.bytes_transferred_), "HELO a\r\n");
}

TEST(DrainingRead, MoreLeftIsNotEmpty) {
    Pair p;
    p.send("MAIL FROM:<a@example.org>\r\n");
    ASSERT_TRUE(p.readable());
    char data[4];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::done);  // Asio may try the next read at once
    EXPECT_EQ(std::string(data, step.bytes_transferred_), "MAIL");
}

TEST(DrainingRead, FinBehindTheDataIsNotEmpty) {
    // The FIN came with the data: it raises no further edge, so the next read must try.
    Pair p;
    p.send("QUIT\r\n");
    p.sender.shutdown(tcp::socket::shutdown_send);
    ASSERT_TRUE(p.readable());
    char data[64];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::done);
    EXPECT_EQ(std::string(data, step.bytes_transferred_), "QUIT\r\n");
    RecvStep next(p.receiver, data, sizeof data);
    EXPECT_EQ(next.perform(), Status::done_and_exhausted);
    EXPECT_EQ(next.ec_, asio::error::eof);
}

TEST(DrainingRead, WithoutTheHintAShortReadProvesNothing) {
    Pair p(false);
    p.send("HELO a\r\n");
    ASSERT_TRUE(p.readable());
    char data[64];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::done);
    EXPECT_EQ(std::string(data, step.bytes_transferred_), "HELO a\r\n");
}

TEST(DrainingRead, EndOfStreamEmptiedTheSocket) {
    Pair p;
    p.sender.close();
    ASSERT_TRUE(p.readable());
    char data[64];
    RecvStep step(p.receiver, data, sizeof data);
    EXPECT_EQ(step.perform(), Status::done_and_exhausted);
    EXPECT_EQ(step.ec_, asio::error::eof);
}
#endif

// One async_read_some with a DrainingRead; nullopt when it did not complete within 5 s.
struct Read {
    boost::system::error_code ec;
    std::string text;
};
void start_read(Pair& p, char* data, size_t size, std::optional<Read>& out) {
    p.receiver.async_read_some(DrainingRead(asio::buffer(data, size)),
                               [&out, data](boost::system::error_code ec, size_t n) {
                                   out = Read{ec, std::string(data, n)};
                               });
}
std::optional<Read> run_until_done(Pair& p, std::optional<Read>& out) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!out && std::chrono::steady_clock::now() < deadline) {
        p.io.restart();
        p.io.run_one_for(100ms);
    }
    return out;
}

// Sends `line` and reads it: the read empties the socket.
void send_and_read(Pair& p, char* data, size_t size, const std::string& line) {
    p.send(line);
    std::optional<Read> r;
    start_read(p, data, size, r);
    ASSERT_TRUE(run_until_done(p, r));
    EXPECT_EQ(r->text, line);
}

TEST(DrainingRead, NextDataAfterAnEmptyingReadStillArrives) {
    Pair p;
    char data[1024];
    send_and_read(p, data, sizeof data, "EHLO client.example\r\n");

    // The socket is empty now; the next command comes while the read waits.
    std::optional<Read> second;
    start_read(p, data, sizeof data, second);
    asio::steady_timer later(p.io, 50ms);
    later.async_wait([&](boost::system::error_code) { p.send("MAIL FROM:<>\r\n"); });
    ASSERT_TRUE(run_until_done(p, second)) << "the read after an emptying one never completed";
    EXPECT_FALSE(second->ec);
    EXPECT_EQ(second->text, "MAIL FROM:<>\r\n");
}

TEST(DrainingRead, DataThatCameBeforeTheNextReadStartedIsNotMissed) {
    Pair p;
    char data[1024];
    send_and_read(p, data, sizeof data, "RCPT TO:<b@example.net>\r\n");

    // The next command is already queued when the read starts: its edge must still count.
    p.send("DATA\r\n");
    ASSERT_TRUE(p.readable());
    std::optional<Read> second;
    start_read(p, data, sizeof data, second);
    ASSERT_TRUE(run_until_done(p, second)) << "data that came between two reads was missed";
    EXPECT_EQ(second->text, "DATA\r\n");
}

TEST(DrainingRead, CloseThatCameWithTheDataEndsTheNextRead) {
    // The read waits first, so that epoll reports data and FIN as one edge; the FIN's only
    // edge is then spent, and the next read must not wait for another.
    Pair p;
    char data[1024];
    std::optional<Read> first, second;
    start_read(p, data, sizeof data, first);
    p.send("Subject: cut\r\n\r\nhello\r\n.");
    p.sender.shutdown(tcp::socket::shutdown_send);
    ASSERT_TRUE(p.readable());
    ASSERT_TRUE(run_until_done(p, first));
    EXPECT_EQ(first->text, "Subject: cut\r\n\r\nhello\r\n.");
    start_read(p, data, sizeof data, second);
    ASSERT_TRUE(run_until_done(p, second)) << "the close behind the data was never seen";
    EXPECT_EQ(second->ec, asio::error::eof);
}

TEST(DrainingRead, ManyEmptyingReadsInARowLoseNothing) {
    Pair p;
    char data[256];
    for (int i = 0; i < 200; ++i) {
        const std::string line = "NOOP " + std::to_string(i) + "\r\n";
        std::optional<Read> r;
        start_read(p, data, sizeof data, r);
        if (i % 2 == 0) {
            p.send(line);  // before the reactor runs
        } else {
            p.io.restart();
            p.io.poll();  // the reactor runs first, then the line comes
            p.send(line);
        }
        ASSERT_TRUE(run_until_done(p, r)) << "read " << i << " never completed";
        ASSERT_FALSE(r->ec);
        EXPECT_EQ(r->text, line) << "read " << i;
    }
}

}  // namespace
}  // namespace postern::smtp
