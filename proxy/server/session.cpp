// Inbound SMTP session; see session.hpp. Replies are collected per pipelined group and written
// with one write when the buffered input holds no further complete command, or after a command
// that ends a group (RFC 2920 3.1), and before any wait for input.
#include "proxy/server/session.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <tuple>

#include "proxy/await_token.hpp"
#include "proxy/observe/log.hpp"
#include "proxy/server/received_header.hpp"
#include "proxy/smtp/address.hpp"
#include "proxy/smtp/ascii.hpp"
#include "proxy/smtp/command.hpp"
#include "proxy/smtp/draining_read.hpp"
#include "proxy/smtp/header_from.hpp"
#include "proxy/smtp/replies.hpp"
#include "proxy/smtp/sasl.hpp"
#include "proxy/smtp/send_now.hpp"

namespace postern::server {

using config::LogLevel;
using observe::log;
using smtp::Verb;
namespace replies = smtp::replies;

namespace {

constexpr size_t kCommandChunk = 1024;    // read size while waiting for commands
constexpr size_t kDataChunk = 64 * 1024;  // read size while receiving message data
// The first read of message data, and the body's first capacity: most messages fit, and a 64 KiB
// buffer per message cost a large malloc and free (which consolidates glibc's heap each time).
constexpr size_t kFirstDataChunk = 16 * 1024;
constexpr size_t kFirstBodyCapacity = 8 * 1024;
constexpr size_t kKeepCapacity = 16 * 1024;  // buffers above this are released when idle
constexpr size_t kStreamPiece = 256 * 1024;  // passthrough: body octets sent upstream at once

filters::Address filter_address(const smtp::Address& a) {
    filters::Address out;
    if (a.null) return out;
    out.address = a.mailbox();
    out.local = a.local;
    out.domain = a.domain;
    return out;
}

filters::Address filter_sender(const smtp::MailFrom& m) {
    filters::Address out = filter_address(m.sender);
    if (m.params.size) out.params.emplace_back("SIZE", std::to_string(*m.params.size));
    if (m.params.body == smtp::BodyType::k8BitMime) out.params.emplace_back("BODY", "8BITMIME");
    if (m.params.body == smtp::BodyType::k7Bit) out.params.emplace_back("BODY", "7BIT");
    if (m.params.smtputf8) out.params.emplace_back("SMTPUTF8", "");
    if (m.params.ret == smtp::DsnRet::kFull) out.params.emplace_back("RET", "FULL");
    if (m.params.ret == smtp::DsnRet::kHdrs) out.params.emplace_back("RET", "HDRS");
    if (!m.params.envid.empty()) out.params.emplace_back("ENVID", m.params.envid);
    return out;
}

filters::Address filter_recipient(const smtp::RcptTo& r) {
    filters::Address out = filter_address(r.recipient);
    if (!r.params.orcpt.empty()) out.params.emplace_back("ORCPT", r.params.orcpt);
    return out;
}

// The refusal for a message whose content breaks the listener's rules, known from its flags.
std::optional<smtp::Reply> content_refusal(const smtp::DataReader::Flags& flags,
                                           smtp::BareLineEndPolicy bare_lf) {
    if (flags.too_big) return replies::kMessageTooBig;
    if (flags.nul) return replies::kNulInData;
    if (flags.bare_line_end && bare_lf == smtp::BareLineEndPolicy::kReject) {
        return replies::kBareLineEnd;
    }
    if (flags.long_line) return replies::kDataLineTooLong;
    return std::nullopt;
}

constexpr size_t kMaxAuthLine = 12288 + 2;  // RFC 4954 4: responses up to 12288 octets

asio::awaitable<bool> verify_on_pool(std::shared_ptr<const UserDb> users, const UserDb::User* user,
                                     std::string password) {
    co_return users->verify(user, password);
}

// A user name from the wire, fit for a log line.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += (c < 0x20 || c == 0x7f) ? '?' : c;
    return out;
}

// RFC 2920 3.1: after these the client waits for the reply, so the group ends here.
bool ends_group(Verb verb) {
    switch (verb) {
        case Verb::kEhlo:
        case Verb::kHelo:
        case Verb::kData:
        case Verb::kVrfy:
        case Verb::kExpn:
        case Verb::kQuit:
        case Verb::kNoop:
        case Verb::kHelp:
        case Verb::kStarttls:
        case Verb::kAuth:
            return true;
        default:
            return false;
    }
}

constexpr auto kLingerTime = std::chrono::seconds(2);  // see close_connection()
constexpr size_t kLingerBytes = 1024 * 1024;

// Gives back the memory of a large buffer (an idle session stays small).
void release_if_large(std::string& s) {
    if (s.capacity() > kKeepCapacity) std::string().swap(s);
}

}  // namespace

void SessionRegistry::shutdown_all(bool force) {
    // Copy first: a session may end (and unregister) while being told.
    std::vector<Session*> sessions(sessions_.begin(), sessions_.end());
    for (Session* s : sessions) s->request_shutdown(force);
}

void SessionRegistry::sweep(std::chrono::steady_clock::time_point now) {
    for (Session* s : sessions_) s->check_deadline(now);
}

Session::Session(tcp::socket socket, ListenerContext& ctx, SessionRegistry& registry,
                 upstream::PoolSet& pools, uint64_t id, config::IpAddress client,
                 uint16_t client_port)
    : socket_(std::move(socket)),
      ctx_(ctx),
      registry_(registry),
      pools_(pools),
      id_(id),
      client_(client),
      client_text_(client.to_string()),
      client_port_(client_port),
      trusted_(config::any_contains(ctx.listener.trusted_networks, client)),
      started_(std::chrono::steady_clock::now()) {
    registry_.add(this);
    filter_conn_.ip = client_text_;
    filter_conn_.port = client_port_;
    filter_conn_.listener = ctx_.listener.name;
}

Session::~Session() {
    registry_.remove(this);
    release_slot();
}

void Session::request_shutdown(bool force) {
    draining_ = true;
    force_stop_ = force_stop_ || force;
    // Wake a session that waits for input and has nothing to finish, or any session when
    // forced. One that is storing a message notices at its next read.
    if ((io_ == Io::kReading && stop_now()) || (io_ != Io::kNone && force_stop_)) {
        boost::system::error_code ignored;
        socket_.cancel(ignored);
    }
}

void Session::check_deadline(std::chrono::steady_clock::time_point now) {
    if (io_ == Io::kNone || now < deadline_) return;
    timed_out_ = true;
    boost::system::error_code ignored;
    socket_.cancel(ignored);
}

// Not a coroutine itself: it hands back read_until's, one coroutine frame fewer per read.
asio::awaitable<Session::ReadOutcome> Session::read_more(std::chrono::milliseconds timeout,
                                                         size_t chunk) {
    return read_until(std::chrono::steady_clock::now() + timeout, chunk);
}

asio::awaitable<Session::ReadOutcome> Session::read_until(
    std::chrono::steady_clock::time_point deadline, size_t chunk) {
    while (true) {
        if (stop_now()) co_return ReadOutcome::kShutdown;
        if (std::chrono::steady_clock::now() >= deadline) co_return ReadOutcome::kTimeout;
        deadline_ = deadline;
        timed_out_ = false;
        io_ = Io::kReading;
        boost::system::error_code ec;
        size_t n = 0;
        const auto buffer = asio::buffer(in_.prepare(chunk), chunk);
        if (tls_) {
            std::tie(ec, n) = co_await tls_->async_read_some(buffer, kUseTuple);
        } else {
            std::tie(ec, n) =
                co_await socket_.async_read_some(smtp::DrainingRead(buffer), kUseTuple);
        }
        io_ = Io::kNone;
        in_.commit(n);
        if (!ec) co_return ReadOutcome::kData;
        if (ec == asio::error::operation_aborted) {
            if (timed_out_) co_return ReadOutcome::kTimeout;
            continue;  // woken by shutdown: the loop head decides
        }
        // A TLS client that closes without close_notify: as good as a close here.
        end_reason_ = (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
                          ? "client closed"
                          : ec.message();
        peer_closed_ = true;
        co_return ReadOutcome::kClosed;
    }
}

bool Session::flush_at_once() {
    if (out_.empty()) return true;
    if (tls_ || io_failed_) return false;
    boost::system::error_code ec;
    const size_t n = smtp::send_now(socket_, asio::buffer(out_), ec);
    if (ec) {
        timed_out_ = false;
        write_failed();
        return false;
    }
    if (n < out_.size()) {
        out_.erase(0, n);  // the socket's buffer is full: flush() writes the rest
        return false;
    }
    out_.clear();
    release_if_large(out_);
    return true;
}

void Session::write_failed() {
    out_.clear();
    release_if_large(out_);
    end_reason_ = timed_out_ ? "write timeout" : "write failed";
    io_failed_ = true;
    closing_ = true;
}

asio::awaitable<bool> Session::flush() {
    if (io_failed_) co_return false;
    if (out_.empty()) co_return true;
    deadline_ = std::chrono::steady_clock::now() + ctx_.listener.command_timeout;
    timed_out_ = false;
    io_ = Io::kWriting;
    boost::system::error_code ec;
    size_t n = 0;
    if (tls_) {
        std::tie(ec, n) = co_await asio::async_write(*tls_, asio::buffer(out_), kUseTuple);
    } else {
        n = smtp::send_now(socket_, asio::buffer(out_), ec);
        if (!ec && n < out_.size()) {
            std::tie(ec, std::ignore) =
                co_await asio::async_write(socket_, asio::buffer(out_) + n, kUseTuple);
        }
    }
    io_ = Io::kNone;
    if (ec) {
        write_failed();
        co_return false;
    }
    out_.clear();
    release_if_large(out_);
    co_return true;
}

void Session::reply(const smtp::Reply& r, bool counts_as_error) {
    r.append_to(out_, esmtp_);
    if (r.code < 400) return;
    if (current_verb_ != Verb::kUnknown || r.code != 421) {
        std::string text = r.to_string(true);
        text.resize(text.size() - 2);  // without CRLF
        log(LogLevel::kInfo, "reject",
            {{"conn", id_},
             {"client", client_text_},
             {"cmd", smtp::verb_name(current_verb_)},
             // AUTH carries credentials: never logged; nor is an unknown line, which may be
             // a credential sent without waiting for its 334 prompt.
             {"arg", current_verb_ == Verb::kAuth ? std::string("(not logged)")
                     : current_verb_ == Verb::kUnknown
                         ? "(not logged: " + std::to_string(line_.size()) + " octets)"
                         : line_},
             {"reply", text}});
    }
    if (r.code == 421) {
        closing_ = true;
        return;
    }
    if (counts_as_error && ++errors_ >= ctx_.listener.max_errors) {
        end_reason_ = "too many errors";
        replies::kTooManyErrors.append_to(out_, esmtp_);
        closing_ = true;
    }
}

void Session::reset_transaction() {
    transaction_ = Transaction{};
    body_.clear();
    release_if_large(body_);
}

asio::awaitable<void> Session::run() {
    // For smtp::send_now. accept_connection() made it so already, without a system call.
    if (!socket_.non_blocking()) {
        boost::system::error_code ignored;
        socket_.non_blocking(true, ignored);
    }
    // Fields are built only when the line will be written (hot path).
    if (observe::log_enabled(LogLevel::kInfo))
        log(LogLevel::kInfo, "connect",
            {{"conn", id_},
             {"listener", ctx_.listener.name},
             {"client", client_text_},
             {"port", client_port_},
             {"trusted", trusted_ ? "yes" : "no"}});
    bool ok = true;
    if (ctx_.listener.tls == config::ListenerTls::kImplicit) ok = co_await start_tls();
    if (ok && ctx_.chain && ctx_.chain->handles(filters::Stage::kConnect)) {
        if (!co_await run_filters(filters::Stage::kConnect)) {
            // No greeting: the refusal is the greeting (RFC 5321 3.1), then the session ends.
            closing_ = true;
            end_reason_ = "refused by filter";
            ok = false;
        }
    }
    if (ok) {
        out_ = "220 " + ctx_.config.server.hostname + " ESMTP postern\r\n";
        ok = flush_at_once() || co_await flush();
    }
    std::chrono::steady_clock::time_point command_deadline;
    uint64_t lines_at_deadline = UINT64_MAX;
    while (ok && !closing_) {
        // The complete commands in in_, their replies written per group (RFC 2920 3.1).
        while (next_command_line()) {
            if (auto pending = dispatch(line_)) co_await std::move(*pending);
            if (starttls_now_) break;  // what follows in in_ is never executed
            if (ends_group(current_verb_) && !closing_ && !flush_at_once() && !co_await flush())
                break;
        }
        if (closing_) break;
        if (!flush_at_once() && !co_await flush()) break;
        if (starttls_now_) {
            starttls_now_ = false;
            if (!co_await start_tls()) break;
            continue;
        }
        // command_timeout bounds the whole command line, not each read: a client trickling a
        // line (even an over-long, discarded one) cannot hold the session for longer. The clock
        // starts again only once a line has been complete.
        if (lines_ != lines_at_deadline) {
            lines_at_deadline = lines_;
            command_deadline = std::chrono::steady_clock::now() + ctx_.listener.command_timeout;
        }
        ReadOutcome outcome = co_await read_until(command_deadline, kCommandChunk);
        if (outcome != ReadOutcome::kData && !handle_read_failure(outcome)) break;
    }
    if (!out_.empty() && !io_failed_) co_await flush();
    co_await close_connection();
    // Before the disconnect line: once it is logged, the slot is free for a new connection.
    release_slot();
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_);
    // Fields are built only when the line will be written (hot path).
    if (observe::log_enabled(LogLevel::kInfo))
        log(LogLevel::kInfo, "disconnect",
            {{"conn", id_},
             {"client", client_text_},
             {"reason", end_reason_},
             {"commands", commands_},
             {"messages", messages_},
             {"errors", errors_},
             {"duration_ms", static_cast<int64_t>(elapsed.count())}});
}

asio::awaitable<void> Session::close_connection() {
    boost::system::error_code ignored;
    // When postern ends the session while the client may still be sending (421 for errors,
    // timeouts or shutdown, a lost BDAT framing), closing with unread input would reset the
    // connection and could destroy the last replies in flight (RFC 1122 4.2.2.13). So: send
    // FIN, read and drop what still comes for a short while, then close.
    const bool client_done = peer_closed_ || io_failed_ || (end_reason_ == "quit" && in_.empty());
    if (!client_done) {
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        deadline_ = std::chrono::steady_clock::now() + kLingerTime;
        size_t dropped = 0;
        while (dropped < kLingerBytes && !force_stop_) {
            timed_out_ = false;
            io_ = Io::kReading;
            auto [ec, n] = co_await socket_.async_read_some(
                asio::buffer(in_.prepare(kCommandChunk), kCommandChunk), kUseTuple);
            io_ = Io::kNone;
            if (ec) break;
            dropped += n;
        }
    }
    socket_.close(ignored);
}

bool Session::handle_read_failure(ReadOutcome outcome) {
    switch (outcome) {
        case ReadOutcome::kData:
            return true;
        case ReadOutcome::kClosed:
            if (transaction_.active) end_reason_ += " in a transaction";
            closing_ = true;
            return false;
        case ReadOutcome::kTimeout:
            end_reason_ = "timeout";
            current_verb_ = Verb::kUnknown;
            reply(replies::kTimeout);
            closing_ = true;
            return false;
        case ReadOutcome::kShutdown:
            end_reason_ = "shutdown";
            current_verb_ = Verb::kUnknown;
            reply(replies::kShuttingDown);
            closing_ = true;
            return false;
    }
    return false;
}

bool Session::next_command_line() {
    while (!closing_) {
        auto result = reader_.next(in_.view());
        if (result.status != smtp::CommandReader::Status::kNeedMore) ++lines_;
        switch (result.status) {
            case smtp::CommandReader::Status::kNeedMore:
                in_.consume(result.consumed);
                return false;
            case smtp::CommandReader::Status::kTooLong:
                in_.consume(result.consumed);
                line_.clear();
                current_verb_ = Verb::kUnknown;
                reply(replies::kLineTooLong);
                continue;
            case smtp::CommandReader::Status::kBadLineEnd:
                line_.assign(in_.view().substr(0, result.consumed));
                in_.consume(result.consumed);
                // Named only so that a malformed AUTH line is not logged either.
                current_verb_ =
                    smtp::parse_command(line_).verb == Verb::kAuth ? Verb::kAuth : Verb::kUnknown;
                reply(replies::kBadCommandOctets);
                continue;
            case smtp::CommandReader::Status::kLine:
                line_.assign(result.line);
                in_.consume(result.consumed);
                return true;
        }
    }
    return false;
}

std::optional<asio::awaitable<void>> Session::dispatch(const std::string& line) {
    ++commands_;
    smtp::Command cmd = smtp::parse_command(line);
    current_verb_ = cmd.verb;
    const bool extended_line = cmd.verb == Verb::kMail || cmd.verb == Verb::kRcpt;
    if (!extended_line && line.size() + 2 > smtp::kMaxCommandLine) {
        reply(replies::kLineTooLong);
        return std::nullopt;
    }
    switch (cmd.verb) {
        case Verb::kEhlo:
            return on_helo(cmd.args, true);
        case Verb::kHelo:
            return on_helo(cmd.args, false);
        case Verb::kMail:
            return on_mail(cmd.args);
        case Verb::kRcpt:
            return on_rcpt(cmd.args);
        case Verb::kData:
            return on_data(cmd.args);
        case Verb::kBdat:
            return on_bdat(cmd.args);
        case Verb::kRset:
            if (!cmd.args.empty()) {
                reply(replies::kNoArguments);
                break;
            }
            reset_transaction();
            reply(replies::kOk);
            break;
        case Verb::kNoop:
            reply(replies::kOk);
            break;
        case Verb::kQuit:
            reply(replies::kBye);
            end_reason_ = "quit";
            closing_ = true;
            break;
        case Verb::kVrfy:
            reply(cmd.args.empty() ? replies::kVrfySyntax : replies::kCannotVrfy);
            break;
        case Verb::kHelp:
            reply(
                {214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"});
            break;
        case Verb::kExpn:
            reply(replies::kExpnDisabled);
            break;
        case Verb::kStarttls:
            on_starttls(cmd.args);
            break;
        case Verb::kAuth:
            return on_auth(cmd.args);
        case Verb::kUnknown:
            reply(replies::kUnknownCommand);
            break;
    }
    return std::nullopt;
}

asio::awaitable<void> Session::on_helo(std::string_view args, bool extended) {
    while (!args.empty() && args.back() == ' ') args.remove_suffix(1);  // tolerated, as Postfix
    // A bare IPv4 address is not RFC 5321 syntax but common in the wild (Postfix accepts it).
    const bool bare_ip =
        config::IpAddress::parse(args).has_value() && args.find(':') == std::string_view::npos;
    if (args.empty() ||
        !(smtp::is_valid_domain(args, false) || smtp::is_valid_address_literal(args) || bare_ip)) {
        reply(replies::kHeloSyntax);
        co_return;
    }
    // RFC 5321 4.1.4: EHLO/HELO resets the session as RSET does.
    reset_transaction();
    if (ctx_.chain && ctx_.chain->handles(filters::Stage::kHelo)) {
        filter_conn_.helo = std::string(args);
        if (!co_await run_filters(filters::Stage::kHelo)) {
            // Refused: as if the client had not said HELO at all, even after an earlier one.
            filter_conn_.helo.clear();
            helo_.clear();
            greeted_ = false;
            esmtp_ = false;
            co_return;
        }
    }
    helo_ = std::string(args);
    filter_conn_.helo = helo_;
    greeted_ = true;
    esmtp_ = extended;
    const std::string& host = ctx_.config.server.hostname;
    if (!extended) {
        smtp::Reply{250, "", host}.append_to(out_, false);
        co_return;
    }
    std::vector<std::string> lines = {
        host,       "PIPELINING",          "SIZE " + std::to_string(ctx_.listener.max_message_size),
        "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
        "CHUNKING",
    };
    // RFC 3207 4.2: not after the handshake.
    if (!tls_ && ctx_.tls) lines.push_back("STARTTLS");
    if (auth_offered() && user_.empty()) lines.push_back("AUTH PLAIN LOGIN");
    smtp::append_multiline(out_, 250, lines);
}

void Session::on_starttls(std::string_view args) {
    if (tls_) return reply(replies::kTlsActive);
    if (!ctx_.tls) return reply(replies::kTlsNotOffered);
    if (!args.empty()) return reply(replies::kStarttlsArgs);
    if (!greeted_) return reply(replies::kNeedHelo);
    if (transaction_.active) return reply(replies::kStarttlsInTransaction);
    reply(replies::kReadyForTls);
    starttls_now_ = true;
}

asio::awaitable<bool> Session::start_tls() {
    // RFC 3207 4.2 / CVE-2011-0411: whatever the client sent in plaintext after STARTTLS is
    // dropped, never executed inside TLS.
    if (!in_.empty()) {
        log(LogLevel::kWarn, "starttls_injection",
            {{"conn", id_}, {"client", client_text_}, {"discarded_octets", in_.size()}});
        in_.consume(in_.size());
    }
    tls_context_ = ctx_.tls->current.load();
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *tls_context_);
    deadline_ = std::chrono::steady_clock::now() + ctx_.listener.tls_handshake_timeout;
    timed_out_ = false;
    io_ = Io::kReading;
    auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, kUseTuple);
    io_ = Io::kNone;
    if (ec) {
        std::string reason = timed_out_ ? "handshake timeout" : ec.message();
        if (ec.category() == asio::error::get_ssl_category()) {
            const char* r = ERR_reason_error_string(ec.value());
            if (r) reason = r;
        }
        log(LogLevel::kWarn, "tls_failed",
            {{"conn", id_}, {"client", client_text_}, {"reason", reason}});
        end_reason_ = "TLS handshake failed";
        io_failed_ = true;  // nothing more can be said to this client
        closing_ = true;
        co_return false;
    }
    SSL* ssl = tls_->native_handle();
    int secret_bits = 0;
    const int bits = SSL_get_cipher_bits(ssl, &secret_bits);
    filter_conn_.tls_version = SSL_get_version(ssl);
    filter_conn_.tls_cipher = SSL_get_cipher_name(ssl);
    filter_conn_.helo.clear();
    filter_conn_.auth_user.clear();
    tls_info_ = std::string(SSL_get_version(ssl)) + " with cipher " + SSL_get_cipher_name(ssl) +
                " (" + std::to_string(bits) + "/" + std::to_string(secret_bits) + " bits)";
    log(LogLevel::kInfo, "tls",
        {{"conn", id_},
         {"client", client_text_},
         {"version", SSL_get_version(ssl)},
         {"cipher", SSL_get_cipher_name(ssl)}});
    // RFC 3207 4.2: the client starts again with EHLO; nothing from before counts.
    reset_transaction();
    helo_.clear();
    user_.clear();
    user_options_ = nullptr;
    greeted_ = false;
    esmtp_ = false;
    if (!ctx_.listener.client_ca.empty()) authenticate_certificate(ssl);
    co_return true;
}

void Session::authenticate_certificate(SSL* ssl) {
    X509* peer = SSL_get0_peer_certificate(ssl);
    if (!peer) return;  // none offered: the client may still AUTH
    const long verified = SSL_get_verify_result(ssl);
    auto refuse = [&](const std::string& reason) {
        log(LogLevel::kWarn, "tls_client_refused",
            {{"conn", id_}, {"client", client_text_}, {"reason", reason}});
    };
    if (verified != X509_V_OK) return refuse(X509_verify_cert_error_string(verified));
    char cn[256];
    const int n =
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
    if (n <= 0) return refuse("the certificate's subject has no CN");
    const std::string name(cn, static_cast<size_t>(n));
    auto users = ctx_.auth ? ctx_.auth->users.load() : nullptr;
    auto options = ctx_.config.users.find(name);
    if (!(users && users->find(name)) && options == ctx_.config.users.end()) {
        return refuse("CN \"" + printable(name) + "\" is not a user ([user.NAME] or users_file)");
    }
    user_ = name;
    filter_conn_.auth_user = name;
    user_options_ = options == ctx_.config.users.end() ? nullptr : &options->second;
    log(LogLevel::kInfo, "auth",
        {{"conn", id_}, {"client", client_text_}, {"user", user_}, {"mechanism", "certificate"}});
}

bool Session::may_relay() const {
    switch (ctx_.listener.relay) {
        case config::RelayPolicy::kTrusted:
            return trusted_;
        case config::RelayPolicy::kAuthenticated:
            return !user_.empty();
        case config::RelayPolicy::kTrustedOrAuthenticated:
            return trusted_ || !user_.empty();
    }
    return false;
}

asio::awaitable<bool> Session::auth_exchange(std::string_view challenge, std::string& response) {
    out_ += "334 ";
    out_ += challenge;
    out_ += "\r\n";
    if (!flush_at_once() && !co_await flush()) co_return false;
    smtp::CommandReader reader(kMaxAuthLine);
    const auto deadline = std::chrono::steady_clock::now() + ctx_.listener.command_timeout;
    while (true) {
        auto result = reader.next(in_.view());
        switch (result.status) {
            case smtp::CommandReader::Status::kLine:
                response.assign(result.line);
                in_.consume(result.consumed);
                ++lines_;
                if (response == "*") {
                    reply(replies::kAuthCancelled);
                    co_return false;
                }
                co_return true;
            case smtp::CommandReader::Status::kTooLong:
                in_.consume(result.consumed);
                reply(replies::kAuthLineTooLong);
                co_return false;
            case smtp::CommandReader::Status::kBadLineEnd:
                in_.consume(result.consumed);
                reply(replies::kAuthBadResponse);
                co_return false;
            case smtp::CommandReader::Status::kNeedMore:
                in_.consume(result.consumed);
                break;
        }
        ReadOutcome outcome = co_await read_until(deadline, kCommandChunk);
        if (outcome != ReadOutcome::kData) {
            handle_read_failure(outcome);
            co_return false;
        }
    }
}

asio::awaitable<void> Session::on_auth(std::string_view args) {
    if (!ctx_.auth) co_return reply(replies::kNotImplemented);
    if (!greeted_) co_return reply(replies::kNeedHelo);
    if (!esmtp_) co_return reply(replies::kAuthNeedsEhlo);
    if (!auth_offered()) co_return reply(replies::kAuthNeedsTls);
    if (!user_.empty()) co_return reply(replies::kAuthAlready);
    if (transaction_.active) co_return reply(replies::kAuthInTransaction);
    const size_t space = args.find(' ');
    std::string mechanism(args.substr(0, space));
    std::string_view initial = space == std::string_view::npos ? "" : args.substr(space + 1);
    if (mechanism.empty() || initial.find(' ') != std::string_view::npos ||
        (space != std::string_view::npos && initial.empty())) {
        co_return reply(replies::kAuthSyntax);
    }
    for (char& c : mechanism) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (mechanism != "PLAIN" && mechanism != "LOGIN") {
        co_return reply(replies::kAuthUnknownMechanism);
    }
    AuthContext& auth = *ctx_.auth;
    auto refuse_if_locked = [&] {
        if (!auth.limiter.locked(client_, std::chrono::steady_clock::now())) return false;
        log(LogLevel::kWarn, "auth_refused",
            {{"conn", id_}, {"client", client_text_}, {"reason", "locked out"}});
        end_reason_ = "auth lockout";
        reply(replies::kAuthLockout);
        return true;
    };
    if (refuse_if_locked()) co_return;
    smtp::SaslPlain credentials;
    smtp::SaslError decoded = smtp::SaslError::kNone;
    if (mechanism == "PLAIN") {
        std::string response(initial);
        if (initial.empty() && !co_await auth_exchange("", response)) co_return;
        decoded = smtp::decode_plain(response, credentials);
    } else {
        std::string response(initial);
        if (initial.empty() && !co_await auth_exchange("VXNlcm5hbWU6", response)) co_return;
        decoded = smtp::decode_login(response, credentials.authcid);
        if (decoded == smtp::SaslError::kNone) {
            if (!co_await auth_exchange("UGFzc3dvcmQ6", response)) co_return;
            decoded = smtp::decode_login(response, credentials.password);
        }
    }
    if (decoded != smtp::SaslError::kNone) co_return reply(replies::kAuthBadResponse);
    // Again now: a lockout may have begun while this exchange waited for the client.
    if (refuse_if_locked()) co_return;

    auto users = auth.users.load();
    const UserDb::User* user = users->find(credentials.authcid);
    const std::string password = std::move(credentials.password);
    // The hash is slow on purpose: computed on the hashing thread, not this I/O thread. (The
    // awaitable is made first: GCC 12 destroys a lambda temporary in co_await twice.)
    asio::awaitable<bool> check = verify_on_pool(users, user, password);
    const bool valid = co_await asio::co_spawn(auth.hashing, std::move(check), asio::use_awaitable);
    // RFC 4616: an authzid other than the user is a request to act for someone else: refused.
    const bool proxying =
        !credentials.authzid.empty() && credentials.authzid != credentials.authcid;
    if (valid && !proxying && ctx_.chain && ctx_.chain->handles(filters::Stage::kAuth)) {
        filter_conn_.auth_user = user->name;
        if (!co_await run_filters(filters::Stage::kAuth)) {
            filter_conn_.auth_user.clear();
            // Counted and delayed as a failed login: otherwise the quick, different reply
            // would tell a guesser that the password was right.
            const bool locked = auth.limiter.failure(client_, std::chrono::steady_clock::now());
            log(LogLevel::kWarn, "auth_refused",
                {{"conn", id_},
                 {"client", client_text_},
                 {"user", user->name},
                 {"reason", "refused by filter"},
                 {"locked_out", locked ? "yes" : "no"}});
            if (auth.config.failure_delay.count() > 0) {
                // The filter's reply waits in out_ meanwhile.
                asio::steady_timer delay(socket_.get_executor());
                delay.expires_after(auth.config.failure_delay);
                co_await delay.async_wait(kUseTuple);
            }
            co_return;
        }
    }
    if (valid && !proxying) {
        user_ = user->name;
        filter_conn_.auth_user = user_;
        user_options_ = user->options;
        log(LogLevel::kInfo, "auth",
            {{"conn", id_}, {"client", client_text_}, {"user", user_}, {"mechanism", mechanism}});
        co_return reply(replies::kAuthOk);
    }
    const bool locked = auth.limiter.failure(client_, std::chrono::steady_clock::now());
    log(LogLevel::kWarn, "auth_failed",
        {{"conn", id_},
         {"client", client_text_},
         {"user", printable(credentials.authcid)},
         {"mechanism", mechanism},
         {"reason", !user    ? "unknown user"
                    : !valid ? "wrong password"
                             : "authzid differs from the user"},
         {"locked_out", locked ? "yes" : "no"}});
    if (auth.config.failure_delay.count() > 0) {
        // Slows down guessing; the session does nothing else meanwhile.
        asio::steady_timer delay(socket_.get_executor());
        delay.expires_after(auth.config.failure_delay);
        co_await delay.async_wait(kUseTuple);
    }
    reply(replies::kAuthFailed);
}

asio::awaitable<void> Session::on_mail(std::string_view args) {
    if (!greeted_) co_return reply(replies::kNeedHelo);
    if (!tls_ && ctx_.listener.tls == config::ListenerTls::kStarttlsRequired) {
        co_return reply(replies::kTlsRequired);
    }
    if (transaction_.active) co_return reply(replies::kNestedMail);
    if (draining_) {
        end_reason_ = "shutdown";
        co_return reply(replies::kShuttingDown);
    }
    if (ctx_.listener.relay == config::RelayPolicy::kAuthenticated && user_.empty()) {
        co_return reply(replies::kAuthRequired);
    }
    if (ctx_.storage && ctx_.storage->low()) {
        // Not the client's error: it should try again later (RFC 5321 4.5.3.1.10 spirit).
        co_return reply(replies::kInsufficientStorage, false);
    }
    auto parsed = smtp::parse_mail_from(args, ctx_.listener.max_message_size, esmtp_);
    if (parsed.error) co_return reply(*parsed.error);
    if (user_options_ && !sender_allowed(user_options_->allowed_senders, parsed.value.sender)) {
        const std::string address = parsed.value.sender.null ? "<>" : parsed.value.sender.mailbox();
        co_return reply({553, "5.7.1",
                         "Sender address <" + (parsed.value.sender.null ? "" : address) +
                             "> is not owned by user " + user_});
    }
    transaction_.mail = std::move(parsed.value);
    if (ctx_.chain) {
        // The filters see the transaction from MAIL on, with the queue id it will have.
        filters::Transaction& f = transaction_.filtered;
        f.conn = &filter_conn_;
        transaction_.queue_id = ctx_.ids.next();
        transaction_.received_at = std::chrono::system_clock::now();
        f.id = transaction_.queue_id;
        f.mail_from = filter_sender(transaction_.mail);
        f.size = transaction_.mail.params.size.value_or(0);
        for (const std::string& tag : ctx_.listener.tags) f.tags[tag] = "true";
        f.live = ctx_.listener.delivery == config::DeliveryMode::kPassthrough;
        if (ctx_.chain->handles(filters::Stage::kMailFrom) &&
            !co_await run_filters(filters::Stage::kMailFrom)) {
            transaction_ = Transaction{};
            co_return;
        }
        if (discard_all_) {
            transaction_.discarded = true;
            transaction_.discard_reason = "the connection was discarded by a filter";
        }
    }
    transaction_.active = true;
    reply(replies::kSenderOk);
}

asio::awaitable<void> Session::on_rcpt(std::string_view args) {
    if (!transaction_.active) co_return reply(replies::kNeedMail);
    if (transaction_.bdat_started) co_return reply(replies::kBdatInProgress);
    // Relay permission comes before any look at the address: an untrusted client is refused
    // for every address form, whatever the syntax (%-hack, routes, bang paths, quoting).
    if (!may_relay()) co_return reply(replies::kRelayDenied);
    auto parsed = smtp::parse_rcpt_to(args, transaction_.mail.params.smtputf8, esmtp_);
    if (parsed.error) co_return reply(*parsed.error);
    if (transaction_.recipients.size() >= ctx_.listener.max_recipients) {
        // Not a client error: RFC 5321 4.5.3.1.10 expects the client to send the rest later.
        co_return reply(replies::kTooManyRecipients, false);
    }
    filters::Transaction& filtered = transaction_.filtered;
    filters::Address filter_rcpt;
    // What the transaction was before this recipient's hook: a recipient that is not taken
    // leaves no route, sender or recipient change behind.
    std::optional<filters::Transaction> before_hook;
    smtp::Address sender_before;
    auto undo_hook = [&] {
        if (!before_hook) return;
        filtered = std::move(*before_hook);
        transaction_.mail.sender = sender_before;
    };
    if (ctx_.chain && ctx_.chain->handles(filters::Stage::kRcptTo)) {
        filter_rcpt = filter_recipient(parsed.value);
        before_hook = filtered;
        sender_before = transaction_.mail.sender;
        filters::Verdict verdict;
        if (!co_await run_filters(filters::Stage::kRcptTo, &filter_rcpt, nullptr, &verdict)) {
            undo_hook();
            co_return;
        }
        if (verdict.action == filters::Action::kDiscard) {
            // Answered as accepted; this recipient gets nothing.
            log(LogLevel::kInfo, "discarded",
                {{"conn", id_},
                 {"queue_id", filtered.id},
                 {"rcpt", filter_rcpt.address},
                 {"reason", verdict.reason}});
            ++transaction_.rcpt_attempts;
            ++transaction_.discarded_rcpts;
            co_return reply(replies::kRecipientOk);
        }
    }
    // A route chosen by a filter (tx:route) comes first, then an authenticated user's own
    // route ([user.NAME] route), then the rules.
    const std::string& route_name =
        !filtered.route.empty() ? filtered.route
        : user_options_ && !user_options_->route.empty()
            ? user_options_->route
            : ctx_.routes.select(ctx_.listener, transaction_.mail.sender.domain,
                                 parsed.value.recipient.domain);
    const config::RouteConfig& route = ctx_.config.routes.at(route_name);
    if (transaction_.route && transaction_.route != &route) {
        // One transaction goes one way; the client sends the rest again (RFC 5321 4.5.3.1.10).
        undo_hook();
        co_return reply(replies::kOtherRoute, false);
    }
    transaction_.route = &route;
    ++transaction_.rcpt_attempts;
    if (ctx_.chain) {
        if (filter_rcpt.address.empty()) filter_rcpt = filter_recipient(parsed.value);
    }
    if (relaying() && !transaction_.discarded) {
        const size_t before = transaction_.recipients.size();
        co_await relay_rcpt(parsed.value);
        if (ctx_.chain && transaction_.upstream) {
            // The upstream transaction is open (MAIL went out): its route and sender are fixed
            // now, whatever became of this recipient.
            filtered.route_locked = true;
            filtered.sender_locked = true;
            filtered.route = route.name;
        }
        if (ctx_.chain && transaction_.recipients.size() > before) {
            filtered.rcpts.push_back(std::move(filter_rcpt));
        }
        co_return;
    }
    transaction_.recipients.push_back(std::move(parsed.value));
    if (ctx_.chain) filtered.rcpts.push_back(std::move(filter_rcpt));
    reply(replies::kRecipientOk);
}

namespace {

// Text from an upstream on its way to our client: no terminal escapes or other controls, and
// short enough that the reply line stays within 512 octets (RFC 5321 4.5.3.1.5) with the
// "code-enhanced " prefix (at most 10 octets) and CRLF.
std::string client_safe(std::string_view text) {
    constexpr size_t kMaxText = smtp::kMaxReplyLine - 12;
    std::string out(text.substr(0, kMaxText));
    for (char& c : out) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return out;
}

}  // namespace

void Session::relay_reply(const smtp::ServerReply& r) {
    std::string enhanced = r.enhanced;
    if (enhanced.empty()) enhanced = std::to_string(r.code / 100) + ".0.0";  // we advertise
    // An upstream's 421 closes the upstream connection, not our client's session: the client
    // hears a plain transient failure.
    const int code = r.code == 421 ? 451 : r.code;
    for (size_t i = 0; i + 1 < r.lines.size(); ++i) {
        out_ += std::to_string(code) + "-" + (esmtp_ ? enhanced + " " : "") +
                client_safe(r.lines[i]) + "\r\n";
    }
    smtp::Reply last{code, enhanced, r.lines.empty() ? std::string() : client_safe(r.lines.back())};
    // A refusal of the upstream's is not the client's protocol error, but a 5xx still counts
    // toward max_errors as any refused recipient does.
    reply(last, r.code >= 500);
}

void Session::upstream_unavailable(const std::string& reason) {
    // The reason may quote the upstream's own words (a refused greeting, AUTH reply...).
    const std::string text = "Upstream unavailable: " + reason;
    reply({replies::kUpstreamUnavailableCode, replies::kUpstreamUnavailableEnhanced,
           client_safe(text.substr(0, smtp::kMaxReplyLine - 40)) + "; try again later"},
          false);
}

void Session::log_relay_deferred(const upstream::ClientFailure& f) {
    // Which fields apply: the queue id once the message exists, the host once a connection
    // was had (otherwise the upstream_failed lines before this one name the hosts).
    const Transaction& t = transaction_;
    const std::string& upstream = t.route->upstream;
    if (!t.upstream) {
        log(LogLevel::kWarn, "relay_deferred",
            {{"conn", id_}, {"upstream", upstream}, {"stage", f.stage}, {"reason", f.reason}});
    } else if (t.queue_id.empty()) {
        log(LogLevel::kWarn, "relay_deferred",
            {{"conn", id_},
             {"upstream", upstream},
             {"host", t.upstream->peer()},
             {"stage", f.stage},
             {"reason", f.reason}});
    } else {
        log(LogLevel::kWarn, "relay_deferred",
            {{"conn", id_},
             {"queue_id", t.queue_id},
             {"upstream", upstream},
             {"host", t.upstream->peer()},
             {"stage", f.stage},
             {"reason", f.reason}});
    }
}

asio::awaitable<void> Session::relay_rcpt(const smtp::RcptTo& rcpt) {
    Transaction& t = transaction_;
    if (!t.upstream_failure.empty()) co_return upstream_unavailable(t.upstream_failure);
    upstream::ClientReply result;
    if (!t.upstream) {
        t.pool = pools_.find(t.route->upstream);
        upstream::Acquired acquired{t.pool->take_idle(), {}};
        if (!acquired.lease) acquired = co_await t.pool->acquire();
        if (!acquired.lease) {
            log_relay_deferred(acquired.failure);
            co_return upstream_unavailable("cannot reach " + t.route->upstream + " (" +
                                           acquired.failure.reason + ")");
        }
        t.upstream = std::move(acquired.lease);
        // The upstream receives our Received header too: declare it with the client's size.
        std::optional<uint64_t> size = t.mail.params.size;
        if (size) {
            queue::Envelope envelope = make_envelope();
            envelope.recipients.push_back(rcpt);
            *size += received_header(envelope, ctx_.config.server.hostname).size();
        }
        smtp::MailCommandInput mail{t.mail, size, false};
        upstream::TransactionStart start = co_await t.pool->begin(t.upstream, mail, rcpt);
        if (start.failure) {
            log_relay_deferred(start.failure);
            t.upstream.release();
            co_return upstream_unavailable(start.failure.reason);
        }
        if (start.mail.code < 200 || start.mail.code >= 300) {
            // The upstream refused the sender: every recipient gets that answer, the upstream
            // connection goes back (no transaction was opened there).
            log(LogLevel::kInfo, "relay_sender_refused",
                {{"conn", id_},
                 {"upstream", t.route->upstream},
                 {"host", t.upstream->peer()},
                 {"from", t.mail.sender.mailbox()},
                 {"reply", upstream::describe(start.mail)}});
            t.upstream.release();
            co_return relay_reply(start.mail);
        }
        t.upstream_caps = t.upstream->capabilities();
        result.reply = std::move(start.rcpt);
    } else {
        result = co_await t.upstream->rcpt(rcpt);
        if (!result.ok()) {
            t.upstream_failure = result.failure.reason;
            log_relay_deferred(result.failure);
            t.upstream.release();
            co_return upstream_unavailable(result.failure.reason);
        }
    }
    if (result.reply.code >= 200 && result.reply.code < 300) t.recipients.push_back(rcpt);
    relay_reply(result.reply);
}

asio::awaitable<void> Session::on_data(std::string_view args) {
    if (!args.empty()) co_return reply(replies::kNoArguments);
    if (!transaction_.active) co_return reply(replies::kNeedMail);
    if (transaction_.bdat_started) co_return reply(replies::kBdatInProgress);
    if (transaction_.recipients.empty() && transaction_.discarded_rcpts > 0) {
        transaction_.discarded = true;  // every recipient was discarded: so is the message
    }
    if (transaction_.recipients.empty() && !transaction_.discarded) {
        co_return reply(transaction_.rcpt_attempts ? replies::kNoValidRecipients
                                                   : replies::kNeedRcpt);
    }
    if (transaction_.upstream) {
        if (upstream::ClientFailure f = co_await transaction_.upstream->announce_data()) {
            transaction_.upstream_failure = f.reason;
        }
    }
    if (!transaction_.upstream_failure.empty()) {
        upstream_unavailable(transaction_.upstream_failure);
        co_return reset_transaction();
    }
    reply(replies::kStartData);
    if (!flush_at_once() && !co_await flush()) co_return;

    body_.clear();
    // SIZE is a hint only: a client's SIZE must not make idle memory.
    const uint64_t declared = transaction_.mail.params.size.value_or(kFirstBodyCapacity);
    body_.reserve(std::min<uint64_t>({declared, ctx_.listener.max_message_size, kDataChunk}));
    smtp::DataReader reader(smtp::DataReader::Mode::kDotStuffed, ctx_.listener.bare_lf,
                            ctx_.listener.max_message_size, body_);
    in_.consume(reader.feed(in_.view()));
    size_t chunk = kFirstDataChunk;
    while (!reader.done()) {
        co_await stream_body(reader);
        const size_t held = in_.size();
        ReadOutcome outcome = co_await read_more(ctx_.listener.data_timeout, chunk);
        if (!handle_read_failure(outcome)) co_return;
        // A read that filled its buffer: more is waiting, so read in larger pieces from now on.
        if (in_.size() - held == chunk) chunk = kDataChunk;
        in_.consume(reader.feed(in_.view()));
    }
    in_.shrink(kCommandChunk);
    co_await complete_transaction(reader);
}

asio::awaitable<void> Session::on_bdat(std::string_view args) {
    // BDAT size [LAST] (RFC 3030 2). Without a size the chunk's end cannot be known: close.
    uint64_t size = 0;
    std::string_view rest = args;
    size_t space = rest.find(' ');
    std::string_view number = rest.substr(0, space);
    auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), size);
    bool last = false;
    bool syntax_ok = !number.empty() && number.size() <= 20 && ec == std::errc() &&
                     ptr == number.data() + number.size();
    if (space != std::string_view::npos) {
        std::string_view tail = rest.substr(space + 1);
        last = tail.size() == 4 && (tail[0] | 0x20) == 'l' && (tail[1] | 0x20) == 'a' &&
               (tail[2] | 0x20) == 's' && (tail[3] | 0x20) == 't';
        syntax_ok = syntax_ok && last;
    }
    if (!syntax_ok) {
        end_reason_ = "BDAT syntax (chunk framing lost)";
        reply(replies::kBdatSyntax);
        closing_ = true;
        co_return;
    }

    std::optional<smtp::Reply> error;
    if (!esmtp_) {
        error = replies::kBdatNeedsEhlo;  // CHUNKING is advertised to EHLO only (RFC 3030 2)
    } else if (!transaction_.active) {
        error = replies::kNeedMail;
    } else if (transaction_.recipients.empty() && transaction_.discarded_rcpts == 0 &&
               !transaction_.discarded) {
        error = transaction_.rcpt_attempts ? replies::kNoValidRecipients : replies::kNeedRcpt;
    } else if (transaction_.bdat_error) {
        error = transaction_.bdat_error;
    }
    const bool repeated_error = transaction_.bdat_error.has_value();
    if (!error && !transaction_.bdat_started) {
        if (transaction_.recipients.empty()) transaction_.discarded = true;  // all discarded
        transaction_.bdat_started = true;
        body_.clear();
        transaction_.chunk_reader = std::make_unique<smtp::DataReader>(
            smtp::DataReader::Mode::kChunked, ctx_.listener.bare_lf, ctx_.listener.max_message_size,
            body_);
    }

    // The chunk is read in full even when it is refused: RFC 3030 3 keeps the framing.
    uint64_t remaining = size;
    while (remaining > 0) {
        if (in_.empty()) {
            if (!flush_at_once() && !co_await flush()) co_return;
            size_t want = static_cast<size_t>(std::min<uint64_t>(remaining, kDataChunk));
            ReadOutcome outcome = co_await read_more(ctx_.listener.data_timeout, want);
            if (!handle_read_failure(outcome)) co_return;
        }
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining, in_.size()));
        if (!error) transaction_.chunk_reader->feed(in_.view().substr(0, take));
        in_.consume(take);
        remaining -= take;
    }
    in_.shrink(kCommandChunk);

    if (!error && transaction_.chunk_reader->flags().too_big) {
        transaction_.bdat_error = replies::kMessageTooBig;
        error = replies::kMessageTooBig;
    }
    if (error) {
        // Only the first refusal of a chunked message counts toward max_errors: the client had
        // to send the rest of its chunks anyway (RFC 3030 3).
        reply(*error, !repeated_error);
        if (last && transaction_.active) reset_transaction();
        co_return;
    }
    if (!last) {
        co_await stream_body(*transaction_.chunk_reader);
        reply({250, "2.0.0", std::to_string(size) + " octets received"});
        co_return;
    }
    transaction_.chunk_reader->finish();
    co_await complete_transaction(*transaction_.chunk_reader);
}

queue::Envelope Session::make_envelope() {
    Transaction& t = transaction_;
    if (t.queue_id.empty()) {
        t.queue_id = ctx_.ids.next();
        t.received_at = std::chrono::system_clock::now();
    }
    queue::Envelope envelope;
    envelope.queue_id = t.queue_id;
    envelope.mail_from = t.mail;
    envelope.recipients = t.recipients;
    envelope.client_ip = client_text_;
    envelope.client_port = client_port_;
    envelope.helo = helo_;
    envelope.protocol = std::string(envelope.mail_from.params.smtputf8 ? "UTF8SMTP"
                                    : esmtp_                           ? "ESMTP"
                                                                       : "SMTP");
    // RFC 3848 / RFC 6531 3.7.3: "S" for TLS, "A" for AUTH (none for plain SMTP).
    if (tls_ && envelope.protocol != "SMTP") envelope.protocol += "S";
    if (!user_.empty() && envelope.protocol != "SMTP") envelope.protocol += "A";
    envelope.tls = tls_info_;
    envelope.listener = ctx_.listener.name;
    envelope.received_at = t.received_at;
    return envelope;
}

void Session::check_header_from_once() {
    if (transaction_.header_checked) return;
    transaction_.header_checked = true;
    transaction_.header_refusal = header_from_refusal(body_);
}

std::optional<smtp::Reply> Session::header_from_refusal(std::string_view message) const {
    if (!ctx_.listener.check_header_from || !user_options_ ||
        user_options_->allowed_senders.empty()) {
        return std::nullopt;
    }
    auto addresses = smtp::header_from_addresses(message);
    if (!addresses) {
        return smtp::Reply{550, "5.7.1", "Message needs exactly one From: header with an address"};
    }
    for (const std::string& a : *addresses) {
        smtp::PathOptions options;
        smtp::PathParse parsed = smtp::parse_path("<" + a + ">", options);
        const bool owned = parsed.error == smtp::AddressError::kNone &&
                           parsed.consumed == a.size() + 2 &&
                           sender_allowed(user_options_->allowed_senders, parsed.address);
        if (!owned) {
            std::string shown = a.substr(0, 200);
            for (char& c : shown) {
                if (static_cast<unsigned char>(c) < 0x20) c = '?';
            }
            return smtp::Reply{550, "5.7.1",
                               "Header From: <" + shown + "> is not owned by user " + user_};
        }
    }
    return std::nullopt;
}

asio::awaitable<bool> Session::run_filters(filters::Stage stage, const filters::Address* rcpt,
                                           filters::Message* message, filters::Verdict* verdict) {
    using filters::Action;
    filters::HookContext hook;
    hook.stage = stage;
    hook.conn = &filter_conn_;
    const bool in_transaction = stage >= filters::Stage::kMailFrom;
    hook.tx = in_transaction ? &transaction_.filtered : nullptr;
    hook.rcpt = rcpt;
    hook.message = message;
    filters::Verdict v = co_await ctx_.chain->run(hook);
    if (in_transaction && transaction_.filtered.new_mail_from) {
        // tx:set_mail_from: the script checked the form; parsed here as a client's would be.
        const std::string address = *transaction_.filtered.new_mail_from;
        transaction_.filtered.new_mail_from.reset();
        smtp::PathOptions options;
        options.allow_null = true;
        smtp::PathParse parsed = smtp::parse_path("<" + address + ">", options);
        if (parsed.error == smtp::AddressError::kNone && parsed.consumed == address.size() + 2) {
            log(LogLevel::kInfo, "sender_rewritten",
                {{"conn", id_},
                 {"queue_id", transaction_.filtered.id},
                 {"from", transaction_.mail.sender.mailbox()},
                 {"to", parsed.address.mailbox()}});
            transaction_.mail.sender = parsed.address;
        } else {
            log(LogLevel::kWarn, "filter_sender_invalid",
                {{"conn", id_}, {"queue_id", transaction_.filtered.id}, {"from", address}});
            transaction_.filtered.mail_from = filter_sender(transaction_.mail);  // unchanged
        }
    }
    if (verdict) *verdict = v;
    if (v.action == Action::kContinue || v.action == Action::kAccept) co_return true;
    if (v.action == Action::kDiscard) {
        // At rcpt_to only that recipient goes (the caller sees the verdict); before a
        // transaction, every message of the connection.
        if (!in_transaction) discard_all_ = true;
        if (stage == filters::Stage::kMailFrom || stage == filters::Stage::kData) {
            transaction_.discarded = true;
            transaction_.discard_reason = v.reason;
        }
        co_return true;
    }
    smtp::Reply out{v.reply->code, v.reply->enhanced, v.reply->text};
    if (stage == filters::Stage::kConnect) {
        // In place of the greeting only 554 and 421 are meaningful (RFC 5321 3.1, 3.8).
        out.code = out.code / 100 == 5 ? 554 : 421;
        closing_ = true;
    }
    if (v.action == Action::kDisconnect) {
        end_reason_ = "disconnected by filter";
        closing_ = true;
    }
    // A failing filter is postern's fault, not the client's: not counted toward max_errors.
    reply(out, !v.failure.has_value());
    co_return false;
}

asio::awaitable<bool> Session::filter_message(uint64_t size) {
    Transaction& t = transaction_;
    filters::Transaction& f = t.filtered;
    if (t.discarded) co_return true;
    f.size = size;
    f.live = relaying();
    // A passthrough listener's messages cannot change route at the end: the choice of
    // relaying or storing was made at RCPT.
    if (ctx_.listener.delivery == config::DeliveryMode::kPassthrough) f.route_locked = true;
    // The message is parsed for the filters only when one of them looks at it.
    if (ctx_.chain->handles(filters::Stage::kData)) {
        const bool streamed = t.stream_started;
        std::string_view whole = body_;
        const size_t header_length =
            streamed ? t.saved_header.size() : filters::HeaderBlock::header_length(whole);
        filters::Message message;
        message.headers = filters::HeaderBlock(streamed ? std::string_view(t.saved_header)
                                                        : whole.substr(0, header_length));
        const size_t blank = whole.substr(header_length, 2) == "\r\n" ? 2 : 0;
        message.body = streamed ? std::string_view() : whole.substr(header_length + blank);
        message.body_size = size > header_length + blank ? size - header_length - blank : 0;
        message.body_complete = !streamed;
        if (!co_await run_filters(filters::Stage::kData, nullptr, &message)) {
            if (t.upstream) {
                // Refused before the upstream saw the end of the data: it must never deliver.
                t.upstream->close();
                t.upstream.release();
            }
            co_return false;
        }
        if (t.discarded) co_return true;
        if (message.headers.changed() && !streamed) {
            body_.replace(0, header_length, message.headers.text());
        }
    }
    for (const filters::RecipientChange& c : f.rcpt_changes) {
        if (c.add) {
            smtp::PathParse parsed = smtp::parse_path("<" + c.address + ">", smtp::PathOptions{});
            if (parsed.error != smtp::AddressError::kNone ||
                parsed.consumed != c.address.size() + 2) {
                log(LogLevel::kWarn, "filter_rcpt_invalid",
                    {{"conn", id_}, {"queue_id", f.id}, {"rcpt", c.address}});
                continue;
            }
            const bool known = std::any_of(
                t.recipients.begin(), t.recipients.end(),
                [&](const auto& r) { return smtp::iequals(r.recipient.mailbox(), c.address); });
            if (known) continue;
            smtp::RcptTo added;
            added.recipient = parsed.address;
            t.recipients.push_back(std::move(added));
        } else {
            std::erase_if(t.recipients, [&](const auto& r) {
                return smtp::iequals(r.recipient.mailbox(), c.address);
            });
        }
    }
    if (!f.rcpt_changes.empty()) {
        f.rcpts.clear();
        for (const smtp::RcptTo& r : t.recipients) f.rcpts.push_back(filter_recipient(r));
        f.rcpt_changes.clear();
        if (t.recipients.empty()) {
            t.discarded = true;
            t.discard_reason = "every recipient removed by a filter";
        }
    }
    if (!f.route.empty() && t.route && f.route != t.route->name) {
        t.route = &ctx_.config.routes.at(f.route);
    }
    co_return true;
}

void Session::notify_filters(filters::Event event, const std::string& reply_text) {
    filters::DeliveryResult result;
    result.reply = reply_text;
    result.route = transaction_.route ? transaction_.route->name : std::string();
    ctx_.chain->notify(event, &filter_conn_, transaction_.filtered, result);
}

asio::awaitable<void> Session::complete_transaction(const smtp::DataReader& reader) {
    if (auto refusal = content_refusal(reader.flags(), ctx_.listener.bare_lf)) {
        reply(*refusal);
        reset_transaction();
        co_return;
    }
    check_header_from_once();
    if (transaction_.header_refusal) {
        // An upstream left inside DATA is dropped with the transaction, never delivered.
        log(LogLevel::kInfo, "header_from_refused",
            {{"conn", id_}, {"client", client_text_}, {"user", user_}});
        reply(*transaction_.header_refusal);
        reset_transaction();
        co_return;
    }
    if (ctx_.chain && !co_await filter_message(reader.size())) co_return reset_transaction();
    if (transaction_.discarded) {
        // Answered as if stored; nothing is kept (a filter's decision, logged).
        if (transaction_.upstream) {
            transaction_.upstream->close();  // an unfinished DATA upstream is never delivered
            transaction_.upstream.release();
        }
        make_envelope();
        log(LogLevel::kInfo, "discarded",
            {{"conn", id_},
             {"queue_id", transaction_.queue_id},
             {"from", transaction_.mail.sender.mailbox()},
             {"nrcpt", transaction_.recipients.size()},
             {"reason", transaction_.discard_reason}});
        reply({250, "2.0.0", "Ok: queued as " + transaction_.queue_id});
        co_return reset_transaction();
    }
    queue::Envelope envelope = make_envelope();
    std::string header = received_header(envelope, ctx_.config.server.hostname);
    if (relaying()) {
        co_await relay_message(envelope, header, reader);
    } else {
        co_await store_message(envelope, header);
    }
    reset_transaction();
}

asio::awaitable<void> Session::stream_body(const smtp::DataReader& reader) {
    Transaction& t = transaction_;
    if (!relaying() || body_.size() < kStreamPiece) co_return;
    if (!t.upstream || !t.upstream_failure.empty() || t.upstream_final) {
        body_.clear();  // the message cannot go anywhere now: its end gets the reason
        co_return;
    }
    // With our header, as the upstream's SIZE limit applies to what it receives.
    const uint64_t so_far =
        reader.size() + received_header(make_envelope(), ctx_.config.server.hostname).size();
    // The header section is in the first piece: judged before anything goes upstream.
    check_header_from_once();
    if (content_refusal(reader.flags(), ctx_.listener.bare_lf) || t.header_refusal ||
        smtp::check_message_fits(t.mail, so_far, reader.flags().eight_bit, t.upstream_caps)) {
        // The message will be refused at its end. A DATA that never ends is never delivered:
        // closing the connection is how the upstream is told to drop it.
        t.upstream->close();
        t.upstream.release();
        body_.clear();
        co_return;
    }
    auto fail = [&](const upstream::ClientFailure& f) {
        t.upstream_failure = f.reason;
        log_relay_deferred(f);
        t.upstream.release();
        body_.clear();
    };
    if (!t.stream_started) {
        t.stream_started = true;
        if (ctx_.chain && ctx_.chain->handles(filters::Stage::kData)) {
            // The data stage runs at the end, when this is long gone upstream: it sees the
            // header section kept here, and none of the body.
            t.saved_header = body_.substr(0, filters::HeaderBlock::header_length(body_));
        }
        queue::Envelope envelope = make_envelope();
        upstream::ClientReply r = co_await t.upstream->start_message(
            received_header(envelope, ctx_.config.server.hostname));
        if (!r.ok()) co_return fail(r.failure);
        if (r.reply.code != 0) {
            t.upstream_final = std::move(r.reply);
            body_.clear();
            co_return;
        }
    }
    upstream::ClientReply r = co_await t.upstream->send_part(body_);
    body_.clear();
    if (!r.ok()) co_return fail(r.failure);
    if (r.reply.code != 0) t.upstream_final = std::move(r.reply);
}

asio::awaitable<void> Session::store_message(queue::Envelope& envelope, const std::string& header) {
    // An outbox route stores into its directory; an upstream route in queue mode into the
    // spool, from which the scheduler delivers.
    const bool spooled = !transaction_.route->upstream.empty();
    upstream::Outbox& outbox =
        spooled ? ctx_.spool->writer() : *ctx_.outboxes.at(transaction_.route->name);
    envelope.route = transaction_.route->name;
    upstream::StoreResult stored = co_await outbox.store(envelope, header, body_);
    if (stored.error) {
        log(LogLevel::kError, "store_failed",
            {{"conn", id_},
             {"queue_id", envelope.queue_id},
             {"target", outbox.dir()},
             {"step", stored.step},
             {"error", stored.error.message()}});
        co_return reply(replies::kStorageFailed, false);  // our failure, not the client's
    }
    ++messages_;
    errors_ = 0;  // as Postfix: max_errors counts errors since the last delivered message
    log(LogLevel::kInfo, "queued",
        {{"conn", id_},
         {"queue_id", envelope.queue_id},
         {"from", envelope.mail_from.sender.mailbox()},
         {"nrcpt", envelope.recipients.size()},
         {"size", header.size() + body_.size()},
         {"route", transaction_.route->name},
         {"target", outbox.dir()}});
    if (spooled) {
        queue::SpooledMessage m;
        m.size = header.size() + body_.size();
        m.crc32 = stored.crc32;
        auto content = std::make_shared<std::string>();
        content->reserve(m.size);
        *content += header;
        *content += body_;
        m.content = std::move(content);
        m.recipients.resize(envelope.recipients.size());
        const std::string id = envelope.queue_id;
        m.envelope = std::move(envelope);
        ctx_.scheduler->submit(std::move(m));
        if (ctx_.chain) notify_filters(filters::Event::kQueued, "250 2.0.0 Ok: queued as " + id);
        co_return reply({250, "2.0.0", "Ok: queued as " + id});
    }
    if (ctx_.chain) {
        notify_filters(filters::Event::kQueued, "250 2.0.0 Ok: queued as " + envelope.queue_id);
    }
    reply({250, "2.0.0", "Ok: queued as " + envelope.queue_id});
}

asio::awaitable<void> Session::relay_message(queue::Envelope& envelope, const std::string& header,
                                             const smtp::DataReader& reader) {
    Transaction& t = transaction_;
    const uint64_t size = header.size() + reader.size();
    auto log_refused = [&](const std::string& reply_text) {
        log(LogLevel::kWarn, "relay_refused",
            {{"conn", id_},
             {"queue_id", envelope.queue_id},
             {"from", envelope.mail_from.sender.mailbox()},
             {"nrcpt", envelope.recipients.size()},
             {"size", size},
             {"route", t.route->name},
             {"upstream", t.route->upstream},
             {"reply", reply_text}});
    };
    if (t.upstream_final) {
        // The upstream refused the message before its end (DATA or a BDAT chunk refused).
        log_refused(upstream::describe(*t.upstream_final));
        if (t.upstream) t.upstream->abandon_transaction();
        co_return relay_reply(*t.upstream_final);
    }
    if (auto refusal = smtp::check_message_fits(envelope.mail_from, size, reader.flags().eight_bit,
                                                t.upstream_caps)) {
        log_refused(std::to_string(refusal->code) + " " + refusal->enhanced + " " + refusal->text);
        if (t.upstream && t.upstream->in_data()) {
            t.upstream->close();  // DATA is out already: only closing can take it back
        } else if (t.upstream) {
            t.upstream->abandon_transaction();
        }
        co_return reply(*refusal);
    }
    if (!t.upstream_failure.empty() || !t.upstream) {
        co_return upstream_unavailable(t.upstream_failure.empty() ? "connection lost"
                                                                  : t.upstream_failure);
    }
    // Not a conditional expression: GCC 12 miscompiles co_await inside ?: (double free).
    upstream::ClientReply result;
    if (t.stream_started) {
        result = co_await t.upstream->finish_message(body_);
    } else {
        result = co_await t.upstream->send_message(header, body_);
    }
    if (!result.ok()) {
        log_relay_deferred(result.failure);
        co_return upstream_unavailable(result.failure.reason);
    }
    const bool delivered = result.reply.code >= 200 && result.reply.code < 300;
    if (!delivered) {
        log_refused(upstream::describe(result.reply));
        co_return relay_reply(result.reply);
    }
    ++messages_;
    errors_ = 0;
    // Fields are built only when the line will be written (hot path).
    if (observe::log_enabled(LogLevel::kInfo))
        log(LogLevel::kInfo, "relayed",
            {{"conn", id_},
             {"queue_id", envelope.queue_id},
             {"from", envelope.mail_from.sender.mailbox()},
             {"nrcpt", envelope.recipients.size()},
             {"size", size},
             {"route", t.route->name},
             {"upstream", t.route->upstream},
             {"host", t.upstream->peer()},
             {"reply", upstream::describe(result.reply)}});
    if (ctx_.chain) {
        // Passthrough: the upstream took it for every recipient it accepted at RCPT.
        filters::DeliveryResult delivered;
        delivered.reply = upstream::describe(result.reply);
        delivered.route = t.route->name;
        for (const filters::Address& r : t.filtered.rcpts) {
            delivered.rcpt = r.address;
            ctx_.chain->notify(filters::Event::kDelivered, &filter_conn_, t.filtered, delivered);
        }
    }
    relay_reply(result.reply);
}

asio::awaitable<void> refuse_connection(tcp::socket socket, smtp::Reply reply) {
    std::string text = reply.to_string(true);
    co_await asio::async_write(socket, asio::buffer(text), kUseTuple);
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
}

}  // namespace postern::server
