// Writing SMTP lines on a plaintext socket: one direct non-blocking send first, and an
// asynchronous write only for what did not fit.
//
// Replies and commands are a few hundred octets and the socket's send buffer is nearly always
// free, so the direct send nearly always takes everything and the coroutine does not suspend.
// That saves, per write, an operation object, the reactor's lock, a trip through the
// scheduler's queue and a resumption: about a fifth of postern's user-space CPU per message
// in passthrough (67 -> 53 us; docs/bench.md, "Passthrough"). The system calls are the same:
// Asio's asynchronous write also starts with a non-blocking send.
//
// The socket must be in non-blocking mode (socket.non_blocking(true)); TLS streams keep the
// asynchronous path, as OpenSSL may need to read before it can write.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <vector>

namespace postern::smtp {

// Sends what the socket takes now. Returns the octets sent; `ec` is set only for a real
// failure (a full send buffer is not one: the caller writes the rest asynchronously).
template <typename ConstBufferSequence>
size_t send_now(boost::asio::ip::tcp::socket& socket, const ConstBufferSequence& buffers,
                boost::system::error_code& ec) {
    size_t n = socket.write_some(buffers, ec);
    if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        ec.clear();
        n = 0;
    }
    return n;
}

// Drops the first `n` octets of a buffer sequence: what send_now() already sent.
inline void consume(std::vector<boost::asio::const_buffer>& buffers, size_t n) {
    size_t whole = 0;
    while (whole < buffers.size() && n >= buffers[whole].size()) n -= buffers[whole++].size();
    buffers.erase(buffers.begin(), buffers.begin() + static_cast<std::ptrdiff_t>(whole));
    if (n > 0 && !buffers.empty()) buffers.front() += n;
}

}  // namespace postern::smtp
