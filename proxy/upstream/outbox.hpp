// The outbox delivery target ([route.NAME] outbox = "DIR"). One storage thread per outbox writes
// the messages handed to it and commits them in overlapping groups. Each cycle is one file-system
// sync, which makes durable both the data of the messages written since the last cycle and the
// names given in the last cycle; after it, the former get their names and the latter are
// acknowledged. So every message is covered by two syncs (data before name, name before the 250)
// while the syncs are shared by all concurrent sessions.
// Callers await store() on their I/O thread and resume there once their message is durable.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/upstream/outbox_writer.hpp"

namespace postern::upstream {

struct StoreResult {
    std::error_code error;          // empty on success
    std::string step;               // which step failed, for the log
    std::optional<uint32_t> crc32;  // of the stored message, when the sidecar records one
};

class Outbox {
  public:
    // Creates the directory if needed (throws std::system_error naming it) and starts the
    // storage thread.
    // `checksum`: the sidecar carries the message file's CRC-32 (the durable queue's records).
    explicit Outbox(std::string dir, bool checksum = false);
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
    void cycle();  // storage thread only
    void schedule_cycle();

    OutboxWriter writer_;
    bool checksum_;
    boost::asio::io_context io_{1};
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    // Storage thread only:
    std::vector<Job> written_;    // temporaries written, waiting for a sync before their rename
    std::vector<Job> published_;  // renamed, waiting for a sync before their 250
    bool cycle_posted_ = false;
    std::thread thread_;
};

}  // namespace postern::upstream
