// One SMTP client connection to an upstream smarthost (RFC 5321 as a client): greeting, EHLO
// (HELO when EHLO is refused), STARTTLS (RFC 3207) or implicit TLS (RFC 8314) with certificate
// and host-name checks, AUTH PLAIN/LOGIN (RFC 4954), then transactions: MAIL and RCPT
// (pipelined when offered, RFC 2920), the message by BDAT (RFC 3030) or DATA with
// dot-stuffing, RSET between transactions. Replies are read with the bounded ReplyParser.
//
// A connection belongs to one I/O thread. Timeouts (RFC 5321 4.5.3.2) work as in the server
// session: each operation sets a deadline and the owner's periodic sweep cancels what is late.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "proxy/config/config.hpp"
#include "proxy/smtp/capabilities.hpp"
#include "proxy/smtp/client_commands.hpp"
#include "proxy/smtp/dot_stuffing.hpp"
#include "proxy/smtp/input_buffer.hpp"
#include "proxy/smtp/reply_parser.hpp"

namespace postern::upstream {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Why a connection or an exchange failed without a usable reply. Empty stage: no failure.
struct ClientFailure {
    std::string stage;       // connect, greeting, ehlo, starttls, tls, auth, mail, rcpt, data, ...
    std::string reason;      // for the log and the 4xx text
    bool host_down = false;  // refused, timed out or 4xx at greeting/EHLO: skip this host
    bool auth_rejected = false;  // the server refused the credentials (535 and the like)

    explicit operator bool() const { return !stage.empty(); }
};

// A server reply, or the failure that prevented one.
struct ClientReply {
    smtp::ServerReply reply;
    ClientFailure failure;
    bool ok() const { return !failure; }
};

// What a transaction's first exchange gave: MAIL's reply and the first RCPT's reply.
struct TransactionStart {
    ClientFailure failure;      // no usable reply at all (connection lost, protocol error)
    bool answered_any = false;  // some reply was read (a reused connection is then alive)
    smtp::ServerReply mail;
    smtp::ServerReply rcpt;  // meaningful when mail.code is 2xx
};

// Everything the connections of one [upstream.NAME] share, on every thread: built once.
struct UpstreamSettings {
    const config::UpstreamConfig& config;
    asio::ssl::context tls;

    // Throws std::runtime_error naming the file when ca_file or the client key cannot be used.
    explicit UpstreamSettings(const config::UpstreamConfig& c);
};

class SmtpClient;

// The live connections of one pool (one thread), for the deadline sweep.
class ClientRegistry {
  public:
    void add(SmtpClient* c) { clients_.insert(c); }
    void remove(SmtpClient* c) { clients_.erase(c); }
    void sweep(std::chrono::steady_clock::time_point now);

  private:
    std::unordered_set<SmtpClient*> clients_;
};

class SmtpClient {
  public:
    // `host` is the configured name (for SNI, the name check and logs unless server_name is
    // set); `endpoint` the address being connected to.
    SmtpClient(asio::any_io_executor executor, UpstreamSettings& settings, ClientRegistry& registry,
               std::string host, tcp::endpoint endpoint);
    ~SmtpClient();
    SmtpClient(const SmtpClient&) = delete;
    SmtpClient& operator=(const SmtpClient&) = delete;

    // Connect, greeting, EHLO, TLS, EHLO again, AUTH. On failure the connection is unusable.
    asio::awaitable<ClientFailure> open();

    // RSET when the last transaction was left open, then MAIL and the first RCPT (one write
    // when the server offers PIPELINING).
    asio::awaitable<TransactionStart> begin(const smtp::MailCommandInput& mail,
                                            const smtp::RcptTo& rcpt);
    asio::awaitable<ClientReply> rcpt(const smtp::RcptTo& rcpt);
    // Sends DATA ahead, when the message will go by DATA, so that the 354 round trip overlaps
    // the client's sending of the body. send_message() then reads the 354.
    asio::awaitable<ClientFailure> announce_data();
    // The message (our header, then the client's content): BDAT when CHUNKING is offered, else
    // DATA and the dot-stuffed payload. The final reply is the server's verdict on the message.
    // All at once:
    asio::awaitable<ClientReply> send_message(std::string_view header, std::string_view body);
    // Or streamed: start_message(header), then send_part() for each piece as it arrives, then
    // finish_message() with the last piece. start_message and send_part give a reply with
    // code 0 to mean "go on"; any other reply is final (the server refused, or a failure).
    asio::awaitable<ClientReply> start_message(std::string_view header);
    asio::awaitable<ClientReply> send_part(std::string_view piece);
    asio::awaitable<ClientReply> finish_message(std::string_view last_piece);
    // Leaves the transaction (RSET is sent before the next one).
    void abandon_transaction() { dirty_ = true; }
    // QUIT, waiting briefly for the reply, then close.
    asio::awaitable<void> quit();
    void close();

    // Not broken, in no transaction, under max_messages_per_connection.
    bool reusable() const;
    bool broken() const { return broken_; }
    // Between DATA/BDAT and the reply to the message: the connection is only good for closing.
    bool in_data() const { return in_data_; }
    const smtp::Capabilities& capabilities() const { return caps_; }
    const std::string& peer() const { return peer_; }        // "host:port" as configured
    const std::string& address() const { return address_; }  // "ip:port" connected to
    std::string tls_description() const;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" or "none"
    std::chrono::steady_clock::time_point idle_since() const { return idle_since_; }
    void mark_idle() { idle_since_ = std::chrono::steady_clock::now(); }

    void check_deadline(std::chrono::steady_clock::time_point now);

  private:
    asio::awaitable<ClientFailure> write(std::vector<asio::const_buffer> buffers,
                                         std::chrono::milliseconds timeout, std::string_view stage);
    // One piece: its own coroutine rather than a call of the one above, as commands and DATA
    // payloads are written this way (the hot path: no second frame, no vector).
    asio::awaitable<ClientFailure> write(std::string_view text, std::chrono::milliseconds timeout,
                                         std::string_view stage);
    // Into `out`, fresh from the caller: no reply moved through a coroutine's result.
    asio::awaitable<void> read_reply(ClientReply& out, std::chrono::milliseconds timeout,
                                     std::string_view stage);
    asio::awaitable<ClientReply> command(std::string_view line, std::chrono::milliseconds timeout,
                                         std::string_view stage);
    asio::awaitable<ClientFailure> ehlo();
    asio::awaitable<ClientFailure> starttls();
    asio::awaitable<ClientFailure> handshake();
    asio::awaitable<ClientFailure> authenticate();
    ClientFailure fail(std::string_view stage, std::string reason, bool host_down = false);

    enum class Io { kNone, kBusy };

    UpstreamSettings& settings_;
    const config::UpstreamConfig& config_;
    ClientRegistry& registry_;
    std::string host_;
    tcp::endpoint endpoint_;
    std::string peer_;
    std::string address_;
    asio::ssl::stream<tcp::socket> stream_;
    bool tls_ = false;
    smtp::InputBuffer in_;  // received, not yet consumed
    smtp::Capabilities caps_;
    bool broken_ = false;
    bool dirty_ = false;           // a transaction was left open: RSET before the next
    bool in_data_ = false;         // between DATA/BDAT and its reply: not reusable if interrupted
    bool data_announced_ = false;  // DATA sent by announce_data(), its reply not read yet
    std::string header_;           // our header, sent with the first piece of the message
    smtp::DotStuffer stuffer_;     // DATA encoding state across pieces
    unsigned transactions_ = 0;
    Io io_ = Io::kNone;
    bool timed_out_ = false;
    std::chrono::steady_clock::time_point deadline_;
    std::chrono::steady_clock::time_point idle_since_;
};

// "552 5.3.4 text" of a server reply, for logs.
std::string describe(const smtp::ServerReply& reply);

}  // namespace postern::upstream
