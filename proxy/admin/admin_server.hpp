// The admin listener ([admin] address): a small HTTP/1.1 server (Boost.Beast) on the
// scheduler's thread, serving the queue management API as JSON (docs/queue.md "Admin API"):
//   GET    /healthz                       {"status": "ok"}
//   GET    /queue[?route=R]               the queue, oldest first
//   GET    /queue/ID                      one message
//   POST   /queue/flush[?route=R]         every deferred message (of a route) due now
//   POST   /queue/ID/flush|hold|release
//   DELETE /queue/ID                      removed without a notice to the sender
// With a token (token_file), every request but /healthz needs "Authorization: Bearer <token>".
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <memory>

#include "proxy/config/config.hpp"

namespace postern::queue {
class Scheduler;
}

namespace postern::admin {

class AdminServer {
  public:
    // `scheduler` is null when this postern has no durable queue (the queue is then empty).
    AdminServer(boost::asio::io_context& ctx, const config::AdminConfig& config,
                queue::Scheduler* scheduler);
    ~AdminServer();

    // Binds and listens; the error says why not.
    boost::system::error_code listen();
    void start();
    // Closes the listening socket (connections in progress end with the I/O context).
    void stop();

  private:
    boost::asio::awaitable<void> accept_loop();
    boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

    boost::asio::io_context& ctx_;
    const config::AdminConfig& config_;
    queue::Scheduler* scheduler_;
    boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace postern::admin
