// One inbound SMTP connection (RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
// SMTPUTF8, CHUNKING and DSN parameters): one coroutine owns the socket and the session state,
// runs the command loop, enforces the limits and timeouts of its listener, checks relay
// permission and hands accepted messages to the listener's route target.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "filters/chain.hpp"
#include "proxy/config/config.hpp"
#include "proxy/queue/queue_id.hpp"
#include "proxy/queue/scheduler.hpp"
#include "proxy/queue/spool.hpp"
#include "proxy/server/auth_limiter.hpp"
#include "proxy/server/connection_limits.hpp"
#include "proxy/server/storage_guard.hpp"
#include "proxy/server/user_db.hpp"
#include "proxy/smtp/command.hpp"
#include "proxy/smtp/data_reader.hpp"
#include "proxy/smtp/esmtp_params.hpp"
#include "proxy/smtp/input_buffer.hpp"
#include "proxy/smtp/line_reader.hpp"
#include "proxy/smtp/reply.hpp"
#include "proxy/upstream/outbox.hpp"
#include "proxy/upstream/pool.hpp"
#include "proxy/upstream/route_table.hpp"

namespace postern::server {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// What every session of one listener shares. Owned by the Server; outlives all sessions.
// A listener's TLS context. SIGHUP replaces it (new certificates) while sessions run on other
// threads: each session takes the current one at its handshake and keeps it alive.
struct ListenerTls {
    std::atomic<std::shared_ptr<asio::ssl::context>> current;
};

// AUTH for every listener: the users (SIGHUP replaces them), the failure counts, and a thread
// for the deliberately slow password hashes, off the I/O threads.
struct AuthContext {
    explicit AuthContext(const config::AuthConfig& c)
        : config(c), limiter(c.max_failures, c.failure_window, c.lockout) {}
    const config::AuthConfig& config;
    std::atomic<std::shared_ptr<const UserDb>> users;
    AuthLimiter limiter;
    asio::thread_pool hashing{1};
};

struct ListenerContext {
    const config::Config& config;
    const config::ListenerConfig& listener;
    queue::QueueIdGenerator& ids;
    const upstream::RouteTable& routes;
    const std::map<std::string, upstream::Outbox*>& outboxes;  // by route name (outbox routes)
    ConnectionLimits& limits;
    // The durable queue, for upstream routes in queue mode (null when no route needs it).
    queue::Spool* spool;
    queue::Scheduler* scheduler;
    const StorageGuard* storage;  // the free-space floor
    ListenerTls* tls;             // the listener's certificate (null without tls)
    AuthContext* auth;            // null without [auth]
    filters::Chain* chain;        // null without [[filter]]
};

class Session;

// The sessions of one I/O thread, so that shutdown can reach them. Touched only on that thread.
class SessionRegistry {
  public:
    void add(Session* s) { sessions_.insert(s); }
    void remove(Session* s) { sessions_.erase(s); }
    // Drain: idle sessions close with 421 at once, sessions in a transaction after it.
    // Force: every session closes with 421 now.
    void shutdown_all(bool force);
    // Ends the reads and writes whose deadline has passed (the session then answers 421).
    void sweep(std::chrono::steady_clock::time_point now);

  private:
    std::unordered_set<Session*> sessions_;
};

class Session {
  public:
    // Takes over an admitted connection slot of ctx.limits for `client`; gives it back on exit.
    // `pools` are the upstream connection pools of the session's I/O thread.
    Session(tcp::socket socket, ListenerContext& ctx, SessionRegistry& registry,
            upstream::PoolSet& pools, uint64_t id, config::IpAddress client, uint16_t client_port);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    asio::awaitable<void> run();

    // Called on the session's own thread (through the registry).
    void request_shutdown(bool force);
    void check_deadline(std::chrono::steady_clock::time_point now);

  private:
    enum class ReadOutcome { kData, kClosed, kTimeout, kShutdown };

    struct Transaction {
        bool active = false;
        smtp::MailFrom mail;
        std::vector<smtp::RcptTo> recipients;
        bool bdat_started = false;
        std::optional<smtp::Reply> bdat_error;  // repeated for every chunk until LAST or RSET
        std::unique_ptr<smtp::DataReader> chunk_reader;  // refers to body_
        unsigned rcpt_attempts = 0;  // RCPT commands that got as far as the route
        // Chosen at the first recipient; later recipients must take the same one.
        const config::RouteConfig* route = nullptr;
        // Through an upstream (passthrough): the connection carrying this transaction, and
        // why it failed when it did (the transaction cannot complete then).
        upstream::UpstreamPool* pool = nullptr;
        upstream::Lease upstream;
        std::string upstream_failure;
        smtp::Capabilities upstream_caps;  // of the connection the transaction started on
        // Streaming the body upstream (passthrough): started, and the upstream's final word
        // when it refused the message before its end.
        bool stream_started = false;
        std::optional<smtp::ServerReply> upstream_final;
        // check_header_from, judged once on the header section: at the first piece streamed
        // upstream (passthrough) or at the end of data.
        bool header_checked = false;
        std::optional<smtp::Reply> header_refusal;
        // Given once, when the message is first needed (stream start or end of data).
        std::string queue_id;
        std::chrono::system_clock::time_point received_at;
        // What the filters see and change (tags, notes, route, recipient changes).
        filters::Transaction filtered;
        bool discarded = false;        // a filter said discard: answered as accepted, not stored
        unsigned discarded_rcpts = 0;  // recipients a filter discarded at RCPT
        std::string discard_reason;    // for the log
        std::string saved_header;      // passthrough: the header section, for the data stage
    };

    // Reads up to `chunk` more octets into in_, waiting at most `timeout` (or until `deadline`).
    asio::awaitable<ReadOutcome> read_more(std::chrono::milliseconds timeout, size_t chunk);
    asio::awaitable<ReadOutcome> read_until(std::chrono::steady_clock::time_point deadline,
                                            size_t chunk);
    // Writes out_. flush_at_once() does it without a coroutine frame when it can (plaintext,
    // and the socket takes all of out_: the usual case); when it returns false, co_await
    // flush() for the rest, which also reports a failed write. Both false: the session ends.
    bool flush_at_once();
    asio::awaitable<bool> flush();
    void write_failed();
    // STARTTLS (after its 220) or implicit TLS: the handshake, within tls_handshake_timeout.
    // False (and the session closing) when it fails.
    asio::awaitable<bool> start_tls();
    void on_starttls(std::string_view args);
    asio::awaitable<void> on_auth(std::string_view args);
    // client_ca: a verified client certificate whose CN names a user authenticates as it.
    void authenticate_certificate(SSL* ssl);
    // One step of an AUTH exchange: "334 challenge", then the client's line. False when the
    // session ends or the line is unusable (the reply is given).
    asio::awaitable<bool> auth_exchange(std::string_view challenge, std::string& response);
    bool auth_offered() const { return ctx_.auth && (tls_ || ctx_.listener.allow_plaintext_auth); }
    // The relay policy of the listener, for this client as it stands.
    bool may_relay() const;
    // The next complete command line of in_, into line_ (true); lines that cannot be commands
    // (too long, bad line ends) are answered on the way. False: no complete line, or closing.
    bool next_command_line();
    // Runs one command line. Commands answered at once are answered here; the others come
    // back as their handler's coroutine, for the caller to co_await (one frame fewer per
    // command). The handler refers to `line`, which must outlive it.
    std::optional<asio::awaitable<void>> dispatch(const std::string& line);

    asio::awaitable<void> on_helo(std::string_view args, bool extended);
    asio::awaitable<void> on_mail(std::string_view args);
    // Runs the filter chain at a stage. True: go on (continue, accept or discard); false: the
    // verdict's reply is given (and the session closes on a disconnect). `verdict`, when given,
    // receives the stage's verdict.
    asio::awaitable<bool> run_filters(filters::Stage stage, const filters::Address* rcpt = nullptr,
                                      filters::Message* message = nullptr,
                                      filters::Verdict* verdict = nullptr);
    // The data stage before storage or the final relay: false when the message goes no further
    // (the reply is given).
    asio::awaitable<bool> filter_message(uint64_t size);
    void notify_filters(filters::Event event, const std::string& reply);
    asio::awaitable<void> on_rcpt(std::string_view args);
    // RCPT through the transaction's upstream: opens the upstream transaction at the first one.
    asio::awaitable<void> relay_rcpt(const smtp::RcptTo& rcpt);
    asio::awaitable<void> relay_message(queue::Envelope& envelope, const std::string& header,
                                        const smtp::DataReader& reader);
    asio::awaitable<void> store_message(queue::Envelope& envelope, const std::string& header);
    // The upstream's reply as the client's (enhanced code added after EHLO when it had none).
    void relay_reply(const smtp::ServerReply& r);
    void upstream_unavailable(const std::string& reason);
    void log_relay_deferred(const upstream::ClientFailure& failure);
    asio::awaitable<void> on_data(std::string_view args);
    asio::awaitable<void> on_bdat(std::string_view args);
    asio::awaitable<void> complete_transaction(const smtp::DataReader& reader);
    // Passthrough: sends what body_ holds on to the upstream once it is large enough, so that
    // a big message is never whole in memory.
    asio::awaitable<void> stream_body(const smtp::DataReader& reader);
    queue::Envelope make_envelope();
    // check_header_from: a refusal when the From: field names an address the user does not own.
    std::optional<smtp::Reply> header_from_refusal(std::string_view message) const;
    void check_header_from_once();
    // Ends the session on a read that brought no data; returns false when it did.
    bool handle_read_failure(ReadOutcome outcome);

    asio::awaitable<void> close_connection();
    void reply(const smtp::Reply& r, bool counts_as_error = true);
    void reset_transaction();
    // Gives the connection slot back to the listener's limits (once).
    void release_slot() {
        if (slot_held_) ctx_.limits.release(client_);
        slot_held_ = false;
    }
    // The transaction goes live through an upstream (passthrough), not into storage.
    bool relaying() const {
        return transaction_.route && !transaction_.route->upstream.empty() &&
               !transaction_.discarded &&
               ctx_.listener.delivery == config::DeliveryMode::kPassthrough;
    }
    bool stop_now() const { return force_stop_ || (draining_ && !transaction_.active); }

    // Timeouts: each read or write sets deadline_; the registry's periodic sweep cancels the
    // operation once it has passed. No timer per operation.
    enum class Io { kNone, kReading, kWriting };

    tcp::socket socket_;
    // Once TLS is up, all reads and writes go through it.
    std::shared_ptr<asio::ssl::context> tls_context_;  // outlives tls_, which uses it
    std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
    std::string tls_info_;       // "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    bool starttls_now_ = false;  // STARTTLS answered 220: the handshake comes next
    ListenerContext& ctx_;
    SessionRegistry& registry_;
    upstream::PoolSet& pools_;
    const uint64_t id_;
    const config::IpAddress client_;
    const std::string client_text_;
    const uint16_t client_port_;
    const bool trusted_;
    const std::chrono::steady_clock::time_point started_;

    smtp::InputBuffer in_;  // received, not yet consumed
    std::string out_;       // replies of the current pipelined group
    std::string line_;
    std::string body_;
    smtp::CommandReader reader_;
    smtp::Verb current_verb_ = smtp::Verb::kUnknown;

    std::string helo_;
    filters::Connection filter_conn_;  // the connection as filters see it
    bool discard_all_ = false;         // a filter said discard before any transaction
    std::string user_;                 // authenticated as (empty: not)
    const config::UserConfig* user_options_ = nullptr;
    bool greeted_ = false;
    bool esmtp_ = false;
    Transaction transaction_;
    unsigned errors_ = 0;
    unsigned commands_ = 0;
    uint64_t lines_ = 0;  // complete lines judged, well formed or not
    unsigned messages_ = 0;
    bool closing_ = false;
    bool peer_closed_ = false;  // the client closed or reset the connection
    bool io_failed_ = false;    // a write failed or timed out
    Io io_ = Io::kNone;
    std::chrono::steady_clock::time_point deadline_;
    bool timed_out_ = false;
    bool draining_ = false;
    bool slot_held_ = true;  // of ctx_.limits, taken by the server before the session began
    bool force_stop_ = false;
    std::string end_reason_ = "quit";
};

// Tells a refused client why (421 at greeting) and closes; used when admission fails.
asio::awaitable<void> refuse_connection(tcp::socket socket, smtp::Reply reply);

}  // namespace postern::server
