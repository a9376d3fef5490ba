// The outbox delivery target ([route.NAME] outbox = "DIR"). One storage thread per outbox writes
// the messages handed to it and commits them in groups: whatever arrived while the previous
// commit was syncing is committed together, so concurrent sessions share one fsync pair.
// Callers await store() on their I/O thread and resume there once their message is durable.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/upstream/outbox_writer.hpp"

namespace postern::upstream {

struct StoreResult {
    std::error_code error;  // empty on success
    std::string step;       // which step failed, for the log
};

class Outbox {
  public:
    // Creates the directory if needed (throws std::system_error naming it) and starts the
    // storage thread.
    explicit Outbox(std::string dir);
    // Finishes the work already handed over, then stops the storage thread.
    ~Outbox();
    Outbox(const Outbox&) = delete;
    Outbox& operator=(const Outbox&) = delete;

    // Stores header + body with the envelope's sidecar; returns once both are durable.
    // The arguments must stay alive until it returns (they are read on the storage thread).
    boost::asio::awaitable<StoreResult> store(const queue::Envelope& envelope,
                                              const std::string& header, const std::string& body);

    const std::string& dir() const { return writer_.dir(); }
    OutboxWriter& writer() { return writer_; }

  private:
    struct Job {
        OutboxWriter::Pending pending;
        std::function<void(StoreResult)> done;
    };
    void commit_batch();  // storage thread only

    OutboxWriter writer_;
    boost::asio::io_context io_{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::vector<Job> batch_;      // storage thread only
    bool commit_posted_ = false;  // storage thread only
    std::thread thread_;
};

}  // namespace postern::upstream
