// One admin API request; see admin_client.hpp.
#include "proxy/admin/admin_client.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>

namespace postern::admin {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

AdminResponse admin_request(const config::AdminConfig& admin, const std::string& method,
                            const std::string& target) {
    const std::string where = "admin listener " + admin.address.to_string();
    asio::io_context io;
    tcp::socket socket(io);
    boost::system::error_code ec;
    tcp::endpoint endpoint(asio::ip::make_address(admin.address.host, ec), admin.address.port);
    if (!ec) socket.connect(endpoint, ec);
    if (ec) {
        throw std::runtime_error("cannot reach the " + where + ": " + ec.message() +
                                 " (is postern running with this configuration?)");
    }
    // The server answers from memory at once; a stuck one should not hang a script.
    timeval timeout{30, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    http::request<http::string_body> request{http::string_to_verb(method), target, 11};
    request.set(http::field::host, admin.address.to_string());
    request.set(http::field::user_agent, "postern-cli");
    if (!admin.token.empty()) request.set(http::field::authorization, "Bearer " + admin.token);
    request.keep_alive(false);
    request.prepare_payload();
    http::write(socket, request, ec);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> response;
    if (!ec) http::read(socket, buffer, response, ec);
    if (ec) throw std::runtime_error("no answer from the " + where + ": " + ec.message());
    return {static_cast<unsigned>(response.result_int()), response.body()};
}

}  // namespace postern::admin
