// The upstream SMTP client; see smtp_client.hpp.
#include "proxy/upstream/smtp_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <stdexcept>
#include <utility>

#include "proxy/await_token.hpp"
#include "proxy/config/cidr.hpp"
#include "proxy/smtp/base64.hpp"
#include "proxy/smtp/dot_stuffing.hpp"
#include "proxy/smtp/draining_read.hpp"
#include "proxy/smtp/send_now.hpp"

namespace postern::upstream {
namespace {

constexpr size_t kReadChunk = 4096;
constexpr auto kQuitWait = std::chrono::seconds(2);

bool positive(const smtp::ServerReply& r) {
    return r.code >= 200 && r.code < 300;
}

std::string openssl_error(const boost::system::error_code& ec) {
    std::string text = ec.message();
    if (ec.category() == asio::error::get_ssl_category()) {
        // "certificate verify failed (SSL routines)" and the like: keep the first part.
        if (auto paren = text.find(" ("); paren != std::string::npos) text.resize(paren);
    }
    return text;
}

}  // namespace

std::string describe(const smtp::ServerReply& reply) {
    std::string out = std::to_string(reply.code);
    if (!reply.enhanced.empty()) out += " " + reply.enhanced;
    if (!reply.lines.empty()) out += " " + reply.lines.back();
    return out;
}

UpstreamSettings::UpstreamSettings(const config::UpstreamConfig& c)
    : config(c), tls(asio::ssl::context::tls_client) {
    SSL_CTX* ctx = tls.native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    tls.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    boost::system::error_code ec;
    if (!c.ca_file.empty()) {
        tls.load_verify_file(c.ca_file, ec);
        if (ec)
            throw std::runtime_error("upstream." + c.name + ".ca_file \"" + c.ca_file +
                                     "\": " + openssl_error(ec));
    } else {
        tls.set_default_verify_paths(ec);
        if (ec)
            throw std::runtime_error("upstream." + c.name +
                                     ": cannot load the system CA store: " + ec.message());
    }
    if (!c.client_certificate.empty()) {
        tls.use_certificate_chain_file(c.client_certificate, ec);
        if (!ec) tls.use_private_key_file(c.client_key, asio::ssl::context::pem, ec);
        if (ec)
            throw std::runtime_error("upstream." + c.name +
                                     ".client_certificate: " + openssl_error(ec));
    }
    tls.set_verify_mode(c.verify_certificate ? asio::ssl::verify_peer : asio::ssl::verify_none);
}

void ClientRegistry::sweep(std::chrono::steady_clock::time_point now) {
    for (SmtpClient* c : clients_) c->check_deadline(now);
}

SmtpClient::SmtpClient(asio::any_io_executor executor, UpstreamSettings& settings,
                       ClientRegistry& registry, std::string host, tcp::endpoint endpoint)
    : settings_(settings),
      config_(settings.config),
      registry_(registry),
      host_(std::move(host)),
      endpoint_(endpoint),
      peer_(config::HostPort{host_, endpoint.port()}.to_string()),
      address_(config::HostPort{endpoint.address().to_string(), endpoint.port()}.to_string()),
      stream_(executor, settings.tls) {
    registry_.add(this);
}

SmtpClient::~SmtpClient() {
    registry_.remove(this);
    close();
}

void SmtpClient::close() {
    boost::system::error_code ignored;
    stream_.next_layer().close(ignored);
    broken_ = true;
}

void SmtpClient::check_deadline(std::chrono::steady_clock::time_point now) {
    if (io_ == Io::kNone || now < deadline_) return;
    timed_out_ = true;
    boost::system::error_code ignored;
    stream_.next_layer().cancel(ignored);
}

bool SmtpClient::reusable() const {
    return !broken_ && !in_data_ && transactions_ < config_.max_messages_per_connection;
}

std::string SmtpClient::tls_description() const {
    if (!tls_) return "none";
    SSL* ssl = const_cast<asio::ssl::stream<tcp::socket>&>(stream_).native_handle();
    return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
}

ClientFailure SmtpClient::fail(std::string_view stage, std::string reason, bool host_down) {
    broken_ = true;
    boost::system::error_code ignored;
    stream_.next_layer().close(ignored);
    ClientFailure f;
    f.stage = std::string(stage);
    f.reason = std::move(reason);
    f.host_down = host_down;
    return f;
}

asio::awaitable<ClientFailure> SmtpClient::write(std::vector<asio::const_buffer> buffers,
                                                 std::chrono::milliseconds timeout,
                                                 std::string_view stage) {
    if (broken_) co_return fail(stage, "connection already closed");
    deadline_ = std::chrono::steady_clock::now() + timeout;
    timed_out_ = false;
    io_ = Io::kBusy;
    boost::system::error_code ec;
    if (tls_) {
        std::tie(ec, std::ignore) = co_await asio::async_write(stream_, buffers, kUseTuple);
    } else {
        smtp::consume(buffers, smtp::send_now(stream_.next_layer(), buffers, ec));
        if (!ec && asio::buffer_size(buffers) > 0) {
            std::tie(ec, std::ignore) =
                co_await asio::async_write(stream_.next_layer(), buffers, kUseTuple);
        }
    }
    io_ = Io::kNone;
    if (!ec) co_return ClientFailure{};
    co_return fail(stage, timed_out_ ? "timeout while sending" : "send failed: " + ec.message(),
                   timed_out_);
}

asio::awaitable<ClientFailure> SmtpClient::write(std::string_view text,
                                                 std::chrono::milliseconds timeout,
                                                 std::string_view stage) {
    if (broken_) co_return fail(stage, "connection already closed");
    timed_out_ = false;
    boost::system::error_code ec;
    if (!tls_) {
        text.remove_prefix(smtp::send_now(stream_.next_layer(), asio::buffer(text), ec));
        if (!ec && text.empty()) co_return ClientFailure{};
    }
    if (!ec) {
        deadline_ = std::chrono::steady_clock::now() + timeout;
        io_ = Io::kBusy;
        if (tls_) {
            std::tie(ec, std::ignore) =
                co_await asio::async_write(stream_, asio::buffer(text), kUseTuple);
        } else {
            std::tie(ec, std::ignore) =
                co_await asio::async_write(stream_.next_layer(), asio::buffer(text), kUseTuple);
        }
        io_ = Io::kNone;
    }
    if (!ec) co_return ClientFailure{};
    co_return fail(stage, timed_out_ ? "timeout while sending" : "send failed: " + ec.message(),
                   timed_out_);
}

asio::awaitable<void> SmtpClient::read_reply(ClientReply& out, std::chrono::milliseconds timeout,
                                             std::string_view stage) {
    deadline_ = std::chrono::steady_clock::now() + timeout;
    while (true) {
        auto parsed = smtp::ReplyParser::next(in_.view());
        if (parsed.status == smtp::ReplyParser::Status::kReply) {
            in_.consume(parsed.consumed);
            out.reply = std::move(parsed.reply);
            // 421: the server is closing the connection (RFC 5321 3.8); nothing more goes on it.
            if (out.reply.code == 421) close();
            co_return;
        }
        if (parsed.status == smtp::ReplyParser::Status::kError) {
            out.failure = fail(stage, "protocol error: " + parsed.error);
            co_return;
        }
        if (broken_) {
            out.failure = fail(stage, "connection already closed");
            co_return;
        }
        timed_out_ = false;
        io_ = Io::kBusy;
        boost::system::error_code ec;
        size_t n = 0;
        auto buffer = asio::buffer(in_.prepare(kReadChunk), kReadChunk);
        if (tls_) {
            std::tie(ec, n) = co_await stream_.async_read_some(buffer, kUseTuple);
        } else {
            std::tie(ec, n) = co_await stream_.next_layer().async_read_some(
                smtp::DrainingRead(buffer), kUseTuple);
        }
        io_ = Io::kNone;
        in_.commit(n);
        if (ec) {
            std::string why = timed_out_               ? "timeout waiting for the reply"
                              : ec == asio::error::eof ? "connection closed by the server"
                                                       : "read failed: " + ec.message();
            out.failure = fail(stage, why, timed_out_);
            co_return;
        }
    }
}

asio::awaitable<ClientReply> SmtpClient::command(std::string_view line,
                                                 std::chrono::milliseconds timeout,
                                                 std::string_view stage) {
    ClientReply r;
    if (ClientFailure f = co_await write(line, config_.command_timeout, stage)) {
        r.failure = std::move(f);
    } else {
        co_await read_reply(r, timeout, stage);
    }
    co_return r;
}

asio::awaitable<ClientFailure> SmtpClient::open() {
    const auto& c = config_;
    deadline_ = std::chrono::steady_clock::now() + c.connect_timeout;
    timed_out_ = false;
    io_ = Io::kBusy;
    auto [ec] = co_await stream_.next_layer().async_connect(endpoint_, kUseTuple);
    io_ = Io::kNone;
    if (ec) {
        co_return fail("connect", timed_out_ ? "connection timed out" : ec.message(), true);
    }
    boost::system::error_code ignored;
    stream_.next_layer().set_option(tcp::no_delay(true), ignored);
    smtp::enable_receive_queue_hint(stream_.next_layer().native_handle(), ignored);  // DrainingRead
    stream_.next_layer().non_blocking(true, ignored);  // for smtp::send_now
    if (c.tls == config::UpstreamTls::kImplicit) {
        if (ClientFailure f = co_await handshake()) co_return f;
    }
    ClientReply greeting;
    co_await read_reply(greeting, c.greeting_timeout, "greeting");
    if (!greeting.ok()) {
        greeting.failure.host_down = true;
        co_return greeting.failure;
    }
    if (greeting.reply.code != 220) {
        co_return fail("greeting", "server refused the session: " + describe(greeting.reply), true);
    }
    if (ClientFailure f = co_await ehlo()) co_return f;
    if (c.tls == config::UpstreamTls::kStarttls ||
        c.tls == config::UpstreamTls::kStarttlsOptional) {
        if (ClientFailure f = co_await starttls()) co_return f;
    }
    if (!c.username.empty()) {
        if (ClientFailure f = co_await authenticate()) co_return f;
    }
    mark_idle();
    co_return ClientFailure{};
}

asio::awaitable<ClientFailure> SmtpClient::ehlo() {
    ClientReply r =
        co_await command("EHLO " + config_.helo_name + "\r\n", config_.command_timeout, "ehlo");
    if (!r.ok()) {
        r.failure.host_down = true;
        co_return r.failure;
    }
    if (r.reply.code == 250) {
        caps_ = smtp::parse_ehlo_reply(r.reply);
        co_return ClientFailure{};
    }
    if (r.reply.code >= 400 && r.reply.code < 500) {
        co_return fail("ehlo", "EHLO refused: " + describe(r.reply), true);
    }
    // RFC 5321 3.2: a server that does not know EHLO answers 5xx; greet it with HELO.
    r = co_await command("HELO " + config_.helo_name + "\r\n", config_.command_timeout, "helo");
    if (!r.ok()) co_return r.failure;
    if (r.reply.code != 250) {
        co_return fail("helo", "EHLO and HELO refused: " + describe(r.reply), r.reply.code < 500);
    }
    caps_ = smtp::Capabilities{};
    co_return ClientFailure{};
}

asio::awaitable<ClientFailure> SmtpClient::starttls() {
    const bool required = config_.tls == config::UpstreamTls::kStarttls;
    if (!caps_.starttls) {
        if (required) co_return fail("starttls", "the server does not offer STARTTLS");
        co_return ClientFailure{};
    }
    ClientReply r = co_await command("STARTTLS\r\n", config_.command_timeout, "starttls");
    if (!r.ok()) co_return r.failure;
    if (r.reply.code != 220) {
        // Only 220 means "go ahead" (RFC 3207 4); anything else is no TLS. A 2xx/3xx other
        // than 220 is nonsense from a server in this state: do not guess.
        if (required || r.reply.code < 400) {
            co_return fail("starttls", "STARTTLS refused: " + describe(r.reply));
        }
        co_return ClientFailure{};  // opportunistic: the server said no, go on in plaintext
    }
    if (!in_.empty()) {
        // Bytes after the 220 and before the handshake were not protected by TLS; acting on
        // them would let a man in the middle inject replies (STARTTLS response injection).
        co_return fail("starttls", "response injection: the server sent " +
                                       std::to_string(in_.size()) +
                                       " octets after the 220 reply to STARTTLS, before TLS");
    }
    if (ClientFailure f = co_await handshake()) co_return f;
    // RFC 3207 4.2: forget what was learnt before TLS and ask again.
    caps_ = smtp::Capabilities{};
    co_return co_await ehlo();
}

asio::awaitable<ClientFailure> SmtpClient::handshake() {
    SSL* ssl = stream_.native_handle();
    const std::string& name = config_.server_name.empty() ? host_ : config_.server_name;
    const bool name_is_ip = config::IpAddress::parse(name).has_value();
    if (!name_is_ip) SSL_set_tlsext_host_name(ssl, name.c_str());  // SNI takes names only
    if (config_.verify_certificate) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                            : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
        if (ok != 1) co_return fail("tls", "cannot set the name to verify: " + name);
    }
    deadline_ = std::chrono::steady_clock::now() + config_.command_timeout;
    timed_out_ = false;
    io_ = Io::kBusy;
    auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::client, kUseTuple);
    io_ = Io::kNone;
    if (ec) {
        long verify = SSL_get_verify_result(ssl);
        std::string reason;
        if (timed_out_) {
            reason = "TLS handshake timed out";
        } else if (verify != X509_V_OK) {
            reason = std::string("certificate rejected: ") + X509_verify_cert_error_string(verify) +
                     " (name checked: " + name + ")";
        } else {
            reason = "TLS handshake failed: " + openssl_error(ec);
        }
        co_return fail("tls", reason);
    }
    tls_ = true;
    co_return ClientFailure{};
}

asio::awaitable<ClientFailure> SmtpClient::authenticate() {
    if (!tls_ && !config_.allow_plaintext) {
        co_return fail("auth",
                       "no TLS on this connection: credentials are not sent in plaintext "
                       "(allow_plaintext = false)");
    }
    if (caps_.auth.empty()) {
        co_return fail("auth", "the server does not offer AUTH but a username is configured");
    }
    std::string mechanism;
    switch (config_.auth) {
        case config::UpstreamAuth::kPlain:
            mechanism = "PLAIN";
            break;
        case config::UpstreamAuth::kLogin:
            mechanism = "LOGIN";
            break;
        case config::UpstreamAuth::kAuto:
            mechanism = caps_.offers_auth("PLAIN") ? "PLAIN" : "LOGIN";
            break;
    }
    if (!caps_.offers_auth(mechanism)) {
        std::string offered;
        for (const auto& m : caps_.auth) offered += (offered.empty() ? "" : " ") + m;
        co_return fail(
            "auth", "the server does not offer AUTH " + mechanism + " (it offers " + offered + ")");
    }
    ClientReply r;
    if (mechanism == "PLAIN") {
        r = co_await command(
            "AUTH PLAIN " + smtp::sasl_plain_response(config_.username, config_.password) + "\r\n",
            config_.command_timeout, "auth");
    } else {
        r = co_await command("AUTH LOGIN\r\n", config_.command_timeout, "auth");
        if (r.ok() && r.reply.code == 334) {
            r = co_await command(smtp::base64_encode(config_.username) + "\r\n",
                                 config_.command_timeout, "auth");
        }
        if (r.ok() && r.reply.code == 334) {
            r = co_await command(smtp::base64_encode(config_.password) + "\r\n",
                                 config_.command_timeout, "auth");
        }
    }
    if (!r.ok()) co_return r.failure;
    if (r.reply.code == 235) co_return ClientFailure{};
    ClientFailure f = fail("auth", "AUTH " + mechanism + " refused: " + describe(r.reply));
    // 4xx is the server's temporary trouble; 5xx (535 above all) says the credentials are wrong.
    f.auth_rejected = r.reply.code >= 500;
    co_return f;
}

asio::awaitable<TransactionStart> SmtpClient::begin(const smtp::MailCommandInput& mail,
                                                    const smtp::RcptTo& rcpt) {
    TransactionStart out;
    auto mail_line = smtp::mail_command(mail, caps_);
    if (mail_line.error) {
        out.mail = smtp::ServerReply{
            mail_line.error->code, mail_line.error->enhanced, {mail_line.error->text}};
        out.answered_any = false;
        co_return out;
    }
    auto rcpt_line = smtp::rcpt_command(rcpt, caps_);
    const bool reset = dirty_;
    std::string batch;
    if (reset) batch += "RSET\r\n";
    batch += mail_line.value;
    const bool pipeline = caps_.pipelining && !rcpt_line.error;
    if (pipeline) batch += rcpt_line.value;
    if (!caps_.pipelining && reset) {
        ClientReply r = co_await command("RSET\r\n", config_.command_timeout, "rset");
        if (!r.ok()) {
            out.failure = r.failure;
            co_return out;
        }
        if (r.reply.code == 421) {
            out.failure = fail("rset", "server closing the connection: " + describe(r.reply));
            co_return out;
        }
        out.answered_any = true;
        batch.erase(0, 6);
    }
    dirty_ = true;  // from here until the end of data or an RSET
    if (ClientFailure f = co_await write(batch, config_.command_timeout, "mail")) {
        out.failure = f;
        co_return out;
    }
    if (reset && caps_.pipelining) {
        ClientReply r;
        co_await read_reply(r, config_.command_timeout, "rset");
        if (!r.ok()) {
            out.failure = r.failure;
            co_return out;
        }
        if (r.reply.code == 421) {
            out.failure = fail("rset", "server closing the connection: " + describe(r.reply));
            co_return out;  // answered_any stays false: a pooled connection gets one retry
        }
        out.answered_any = true;
    }
    ClientReply m;
    co_await read_reply(m, config_.command_timeout, "mail");
    if (!m.ok()) {
        out.failure = m.failure;
        co_return out;
    }
    if (m.reply.code == 421) {
        // The server closed this connection (often its idle timeout, on a pooled one) rather
        // than refusing the sender: a failure of the connection, which a retry can fix.
        out.failure = fail("mail", "server closing the connection: " + describe(m.reply));
        out.answered_any = false;
        co_return out;
    }
    out.answered_any = true;
    out.mail = std::move(m.reply);
    ClientReply r;
    if (pipeline) {
        co_await read_reply(r, config_.command_timeout, "rcpt");  // read even after a refusal
    } else if (positive(out.mail)) {
        if (rcpt_line.error) {
            r.reply = smtp::ServerReply{
                rcpt_line.error->code, rcpt_line.error->enhanced, {rcpt_line.error->text}};
        } else {
            r = co_await command(rcpt_line.value, config_.command_timeout, "rcpt");
        }
    }
    if (!r.ok()) {
        out.failure = r.failure;
        co_return out;
    }
    out.rcpt = std::move(r.reply);
    if (!positive(out.mail)) dirty_ = false;  // no transaction was opened
    co_return out;
}

asio::awaitable<ClientReply> SmtpClient::rcpt(const smtp::RcptTo& rcpt) {
    auto line = smtp::rcpt_command(rcpt, caps_);
    if (line.error) {
        co_return ClientReply{
            smtp::ServerReply{line.error->code, line.error->enhanced, {line.error->text}}, {}};
    }
    co_return co_await command(line.value, config_.command_timeout, "rcpt");
}

asio::awaitable<ClientFailure> SmtpClient::announce_data() {
    if (caps_.chunking || data_announced_) co_return ClientFailure{};
    in_data_ = true;
    data_announced_ = true;
    co_return co_await write("DATA\r\n", config_.command_timeout, "data");
}

asio::awaitable<ClientReply> SmtpClient::start_message(std::string_view header) {
    in_data_ = true;
    header_.assign(header);
    stuffer_ = smtp::DotStuffer{};
    if (caps_.chunking) co_return ClientReply{};  // BDAT needs no go-ahead
    ClientReply r;
    if (std::exchange(data_announced_, false)) {
        co_await read_reply(r, config_.data_init_timeout, "data");
    } else {
        r = co_await command("DATA\r\n", config_.data_init_timeout, "data");
    }
    if (!r.ok()) co_return r;
    if (r.reply.code != 354) {
        in_data_ = false;  // the transaction is still open: the caller abandons it
        co_return r;
    }
    co_return ClientReply{};
}

asio::awaitable<ClientReply> SmtpClient::send_part(std::string_view piece) {
    if (piece.empty()) co_return ClientReply{};
    if (caps_.chunking) {
        // RFC 3030 2: each chunk is acknowledged; a refusal ends the message.
        std::string command = "BDAT " + std::to_string(header_.size() + piece.size()) + "\r\n";
        std::vector<asio::const_buffer> buffers = {asio::buffer(command), asio::buffer(header_),
                                                   asio::buffer(piece.data(), piece.size())};
        if (ClientFailure f =
                co_await write(std::move(buffers), config_.data_block_timeout, "data")) {
            co_return ClientReply{{}, f};
        }
        header_.clear();
        ClientReply r;
        co_await read_reply(r, config_.data_block_timeout, "data");
        if (r.ok() && r.reply.code == 250) co_return ClientReply{};
        if (r.ok()) in_data_ = false;  // refused: the transaction is over
        co_return r;
    }
    std::string payload = std::move(header_);
    header_.clear();
    stuffer_.append(piece, payload);
    if (ClientFailure f = co_await write(payload, config_.data_block_timeout, "data")) {
        co_return ClientReply{{}, f};
    }
    co_return ClientReply{};
}

asio::awaitable<ClientReply> SmtpClient::finish_message(std::string_view last_piece) {
    ClientFailure failure;
    if (caps_.chunking) {
        std::string command =
            "BDAT " + std::to_string(header_.size() + last_piece.size()) + " LAST\r\n";
        std::vector<asio::const_buffer> buffers = {
            asio::buffer(command), asio::buffer(header_),
            asio::buffer(last_piece.data(), last_piece.size())};
        failure = co_await write(std::move(buffers), config_.data_block_timeout, "data");
    } else {
        std::string payload = std::move(header_);
        stuffer_.append(last_piece, payload);
        stuffer_.finish(payload);
        failure = co_await write(payload, config_.data_block_timeout, "data");
    }
    if (failure) co_return ClientReply{{}, failure};
    header_.clear();
    ClientReply r;
    co_await read_reply(r, config_.data_done_timeout, "data");
    if (r.ok()) {
        in_data_ = false;
        dirty_ = false;  // the end of data ends the transaction whatever the reply
        ++transactions_;
    }
    co_return r;
}

asio::awaitable<ClientReply> SmtpClient::send_message(std::string_view header,
                                                      std::string_view body) {
    ClientReply r = co_await start_message(header);
    if (!r.ok() || r.reply.code != 0) co_return r;
    co_return co_await finish_message(body);
}

asio::awaitable<void> SmtpClient::quit() {
    if (broken_) co_return;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(kQuitWait);
    if (!co_await write("QUIT\r\n", wait, "quit")) {
        ClientReply ignored;
        co_await read_reply(ignored, wait, "quit");
    }
    close();  // no TLS close_notify exchange: the server closes after 221 anyway
}

}  // namespace postern::upstream
