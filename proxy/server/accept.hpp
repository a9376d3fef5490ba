// Accepting a connection on a listening socket, with two system calls fewer per connection
// than Asio's async_accept.
//
// Asio's accept makes a socket it knows nothing of: before the first operation it calls
// ioctl(FIONBIO), and when the socket closes it calls epoll_ctl(EPOLL_CTL_DEL), since the
// descriptor might have been duplicated elsewhere. Here accept4() makes the socket non-blocking
// and close-on-exec at once, and the socket is handed to Asio marked as non-blocking and not
// duplicated (which it is not: nothing here dups it, and children never inherit it). A
// passthrough message costs about 25 system calls, so this is worth having (docs/bench.md).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

namespace postern::server {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct Accepted {
    boost::system::error_code ec;  // set: nothing was accepted (the caller pauses or stops)
    tcp::socket socket;
    tcp::endpoint remote;
    bool waited = false;  // the listener had nothing at first: other work ran meanwhile
};

// The listening socket must be non-blocking (acceptor.non_blocking(true)). Waits until a
// connection is there; a connection the client abandoned before it was accepted is skipped.
// Closing the acceptor ends the wait with operation_aborted.
asio::awaitable<Accepted> accept_connection(tcp::acceptor& acceptor);

}  // namespace postern::server
