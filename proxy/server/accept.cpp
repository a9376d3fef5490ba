// Accepting connections without ioctl and epoll_ctl per connection; see accept.hpp.
#include "proxy/server/accept.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "proxy/await_token.hpp"

namespace postern::server {

namespace {

#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
// Asio's reactor keeps, per descriptor and kind of operation, whether the next operation should
// first try its system call before waiting for epoll ("speculative"); a new descriptor starts
// with yes. The member is private: an explicit instantiation may name it (access is not checked
// there, [temp.spec.general]), and the friend it defines hands out the member pointer.
using DescriptorState = asio::detail::epoll_reactor::descriptor_state;
using SpeculationFlags = bool[asio::detail::epoll_reactor::max_ops];
SpeculationFlags DescriptorState::*speculation_flags();
template <SpeculationFlags DescriptorState::*Member>
struct ExposeSpeculationFlags {
    friend SpeculationFlags DescriptorState::*speculation_flags() { return Member; }
};
template struct ExposeSpeculationFlags<&DescriptorState::try_speculative_>;
#endif

// Asio keeps, per socket, whether it is non-blocking and whether its descriptor may have been
// duplicated; only a subclass can reach that state. Both facts are known here: accept4() set
// O_NONBLOCK, and the descriptor is new and ours alone.
class AdoptedSocket : public tcp::socket {
  public:
    using tcp::socket::socket;
    void mark_non_blocking_and_unshared() {
#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
        namespace ops = asio::detail::socket_ops;
        auto& state = impl_.get_implementation().state_;
        state |= ops::user_set_non_blocking | ops::internal_non_blocking;
        state &= ~ops::possible_dup;
#endif
    }
    // The first read of a new connection would nearly always find nothing (an SMTP client waits
    // for our greeting), so it waits for epoll at once: a recv() fewer per connection. (On an
    // implicit-TLS listener the ClientHello may be there already: that read then takes one
    // epoll round.) Safe with the edge-triggered registration just made: data already there
    // when the descriptor was added is reported by epoll all the same, anything later raises an
    // edge, and an event that finds no read waiting sets the flag again. This relies on one
    // thread running the socket's I/O context (each worker's own), so that no epoll_wait can
    // take the first event between the registration and this line.
    void read_first_when_ready() {
#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
        if (DescriptorState* state = impl_.get_implementation().reactor_data_) {
            (state->*speculation_flags())[asio::detail::epoll_reactor::read_op] = false;
        }
#endif
    }
};

bool worth_retrying_at_once(int error) {
    // The client went before it was accepted, or a signal: the next one may be waiting.
    return error == EINTR || error == ECONNABORTED || error == EPROTO;
}

}  // namespace

asio::awaitable<Accepted> accept_connection(tcp::acceptor& acceptor) {
    bool waited = false;
    while (true) {
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        const int fd = ::accept4(acceptor.native_handle(), reinterpret_cast<sockaddr*>(&address),
                                 &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int error = errno;
            if (worth_retrying_at_once(error)) continue;
            if (error == EAGAIN || error == EWOULDBLOCK) {
                auto [ec] = co_await acceptor.async_wait(tcp::acceptor::wait_read, kUseTuple);
                if (ec) co_return Accepted{ec, tcp::socket(acceptor.get_executor()), {}, true};
                waited = true;
                continue;
            }
            co_return Accepted{{error, boost::system::system_category()},
                               tcp::socket(acceptor.get_executor()),
                               {}};
        }
        Accepted out{{}, tcp::socket(acceptor.get_executor()), {}, waited};
        if (length <= out.remote.capacity()) {
            std::memcpy(out.remote.data(), &address, length);
            out.remote.resize(length);
        }
        AdoptedSocket socket(acceptor.get_executor());
        const tcp protocol = address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4();
        socket.assign(protocol, fd, out.ec);  // registers the descriptor with epoll
        if (out.ec) {
            ::close(fd);
            co_return out;
        }
        socket.mark_non_blocking_and_unshared();
        socket.read_first_when_ready();
        out.socket = std::move(socket);
        co_return out;
    }
}

}  // namespace postern::server
