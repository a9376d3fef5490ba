// The outbox delivery target ([route.NAME] outbox = "DIR"): hands each message to OutboxWriter on
// the blocking-I/O pool and resumes the caller on its own I/O thread when the files are on disk.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <string>
#include <system_error>

#include "proxy/queue/message.hpp"
#include "proxy/upstream/outbox_writer.hpp"

namespace postern::upstream {

struct StoreResult {
    std::error_code error;  // empty on success
    std::string step;       // which step failed, for the log
};

class Outbox {
public:
    // `pool` runs the blocking writes and must outlive the Outbox.
    Outbox(std::string dir, boost::asio::thread_pool& pool);

    // Stores header + body with the envelope's sidecar. Returns once both are durable.
    boost::asio::awaitable<StoreResult> store(const queue::Envelope& envelope,
                                              const std::string& header, const std::string& body);

    const std::string& dir() const { return writer_.dir(); }
    OutboxWriter& writer() { return writer_; }

private:
    OutboxWriter writer_;
    boost::asio::thread_pool& pool_;
};

}  // namespace postern::upstream
