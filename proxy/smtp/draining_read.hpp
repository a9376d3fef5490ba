// Reading a plaintext socket without a recv() that is sure to fail.
//
// Asio starts every read with a non-blocking recv() before it waits for epoll, and skips that
// attempt only after a read that returned nothing (end of stream). An SMTP peer sends a command
// or a reply, then waits for the answer; so the read that follows our answer nearly always
// finds the socket empty, and each such recv() is a wasted system call: 7.6 per message in
// passthrough, a fifth of all postern made (docs/bench.md, "Passthrough").
//
// With TCP_INQ set on the socket (enable_receive_queue_hint), Linux tells each recvmsg() how
// many octets are left after it, and reports a received FIN as one octet left. A read made
// with a DrainingRead buffer that learns "nothing left" tells Asio so at that moment, and the
// next read waits for epoll's next edge without trying first. That is safe because Asio
// registers sockets edge-triggered (EPOLLET): whatever arrives after that recvmsg(), data, FIN
// or reset, raises a new edge, which completes the waiting read or makes Asio try again.
// (A read merely shorter than its buffer is not proof: a FIN that came with the data is still
// to be read, and raises no further edge.)
//
// How: Asio's recv operation takes its recv() step from reactive_socket_recv_op_base, a class
// template of the buffer type, and a step that returns done_and_exhausted makes the reactor
// skip the next speculative attempt (epoll_reactor::start_op and perform_io). The explicit
// specialization below, for DrainingRead only, is that step. Other buffer types, TLS streams
// included (OpenSSL reads through its own buffers), keep Asio's behaviour. Without TCP_INQ's
// answer, or on another Boost or reactor, a DrainingRead reads as Asio always does.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <boost/version.hpp>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace postern::smtp {

// One mutable buffer; use it for async_read_some on a plaintext tcp::socket.
struct DrainingRead {
    using value_type = boost::asio::mutable_buffer;
    using const_iterator = const boost::asio::mutable_buffer*;

    explicit DrainingRead(boost::asio::mutable_buffer b) : buffer(b) {}
    const_iterator begin() const { return &buffer; }
    const_iterator end() const { return &buffer + 1; }

    boost::asio::mutable_buffer buffer;
};

// Asks the kernel to report, with each read, what is left in the receive queue. Set on a
// listening socket, it holds for the connections it accepts (Linux copies the option).
inline void enable_receive_queue_hint(boost::asio::ip::tcp::socket::native_handle_type fd,
                                      boost::system::error_code& ec) {
#if defined(TCP_INQ)
    const int on = 1;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_INQ, &on, sizeof on) != 0) {
        ec.assign(errno, boost::system::system_category());
        return;
    }
#endif
    ec.clear();
}

// The octets left in the receive queue after a recvmsg(), from its TCP_CM_INQ control message;
// -1 when the kernel did not say. A FIN not yet read counts as one.
inline int receive_queue_left(msghdr& msg) {
#if defined(TCP_CM_INQ)
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_TCP && c->cmsg_type == TCP_CM_INQ &&
            c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int left;
            std::memcpy(&left, CMSG_DATA(c), sizeof left);
            return left;
        }
    }
#endif
    (void)msg;
    return -1;
}

}  // namespace postern::smtp

#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && \
    defined(TCP_CM_INQ) && BOOST_VERSION / 100 == 1081
#define POSTERN_DRAINING_READ 1
#include <boost/asio/detail/reactive_socket_recv_op.hpp>
#include <boost/asio/socket_base.hpp>

namespace boost::asio::detail {

// The same members and constructor as the primary template (reactive_socket_recv_op derives
// from it and calls that constructor); only do_perform differs.
template <>
class reactive_socket_recv_op_base<postern::smtp::DrainingRead> : public reactor_op {
  public:
    reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                                 socket_ops::state_type state,
                                 const postern::smtp::DrainingRead& buffers,
                                 socket_base::message_flags flags, func_type complete_func)
        : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
          socket_(socket),
          state_(state),
          buffer_(buffers.buffer),
          flags_(flags) {}

    // As socket_ops::non_blocking_recv1, with recvmsg() to hear what is left.
    static status do_perform(reactor_op* base) {
        auto* o = static_cast<reactive_socket_recv_op_base*>(base);
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        while (true) {
            iovec part{o->buffer_.data(), o->buffer_.size()};
            msghdr msg{};
            msg.msg_iov = &part;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof control;
            const ssize_t n = ::recvmsg(o->socket_, &msg, o->flags_);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
                o->ec_.assign(errno, boost::system::system_category());
                o->bytes_transferred_ = 0;
                return done_and_exhausted;  // as Asio: a read that returned nothing
            }
            o->bytes_transferred_ = static_cast<size_t>(n);
            const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
            if (n == 0 && stream && o->buffer_.size() > 0) {
                o->ec_ = boost::asio::error::eof;
                return done_and_exhausted;
            }
            o->ec_ = boost::system::error_code();
            // A peek leaves the data where it was, so it never empties the socket.
            const bool peek = (o->flags_ & socket_base::message_peek) != 0;
            if (stream && !peek && postern::smtp::receive_queue_left(msg) == 0) {
                return done_and_exhausted;
            }
            return done;
        }
    }

  private:
    socket_type socket_;
    socket_ops::state_type state_;
    boost::asio::mutable_buffer buffer_;
    socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail
#endif
