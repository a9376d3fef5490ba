// The durable queue's storage (delivery = "queue" through an upstream route): one message per
// pair of files in SPOOL/queue, written with the outbox's group commit (data synced before the
// name, the name synced before the 250):
//   <id>.eml    our Received header and the client's message, exactly what will be sent
//   <id>.json   the envelope (the outbox sidecar format, with "route" and "size")
//   <id>.state  appended lines, one per recipient that reached a final state:
//               "D <index>" delivered, "F <index> <code> <text>" failed. A line without its
//               newline (a crash while appending) is ignored: at worst a recipient is sent twice.
// Records that cannot be trusted at start-up (a .json that does not parse, an .eml whose size is
// not the one recorded) are moved to SPOOL/corrupt/ and never delivered. docs/queue.md has the
// crash analysis.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/queue/message.hpp"
#include "proxy/queue/spool_record.hpp"
#include "proxy/upstream/outbox.hpp"

namespace postern::queue {

struct SpooledMessage {
    Envelope envelope;
    uint64_t size = 0;                       // of the .eml
    std::optional<uint32_t> crc32;           // of the .eml (records of older versions: none)
    std::vector<RecipientState> recipients;  // parallel to envelope.recipients
    unsigned attempts = 0;
    std::string last_error;
    bool held = false;          // by the operator: no attempts until released
    bool delay_warned = false;  // the delay warning has been sent
    bool bouncing = false;      // a bounce is being stored (not kept on disk)
    // The scheduler's bookkeeping (not kept on disk).
    bool running = false;  // an attempt is under way
    bool deleted = false;  // deleted by the operator while an attempt was running
    std::chrono::steady_clock::time_point next_attempt{};  // {}: none scheduled
    // The content as the session stored it, for the first attempt (saves reading it back).
    std::shared_ptr<const std::string> content;

    bool any(RecipientStatus s) const;
};

class Spool {
  public:
    // Creates SPOOL/queue and SPOOL/corrupt; throws std::system_error naming what failed.
    explicit Spool(const std::string& dir);

    // Stores a new message durably (returns once it is synced; see upstream::Outbox).
    upstream::Outbox& writer() { return writer_; }

    struct Recovery {
        std::vector<SpooledMessage> messages;
        size_t corrupt = 0;
        size_t stale_removed = 0;  // temporaries of writes a crash interrupted
    };
    // Start-up: loads every complete record (states applied), quarantines the bad ones.
    // Reads the small .json and .state files and stats the .eml; message bodies are not read.
    Recovery recover();

    enum class Read { kOk, kUnreadable, kCorrupt };
    // The message content to send; else why not in `error`: kCorrupt when the file is not the
    // one stored (its size or CRC-32 differs: quarantine it), kUnreadable when it cannot be read.
    Read read_content(const SpooledMessage& m, std::string& out, std::string& error) const;
    // Moves the message's files to SPOOL/corrupt/ and logs why.
    void quarantine(const std::string& id, const std::string& reason);
    // Appends a final recipient state. Not synced: losing it means one more delivery.
    void record(const std::string& id, size_t index, const RecipientState& state);
    // Appends that the failure of recipient `index` has been reported (or needs no report).
    void record_bounced(const std::string& id, size_t index);
    // Appends the attempt count and last error after a deferral.
    void record_attempts(const std::string& id, unsigned attempts, const std::string& error);
    // Appends a message-level flag line: 'H' held, 'R' released, 'W' delay warning sent.
    void record_flag(const std::string& id, char flag);
    // Removes the message's files once nothing more is to be done with it.
    void remove(const std::string& id);

    const std::string& queue_dir() const { return queue_dir_; }

  private:
    void append_state(const std::string& id, const std::string& line);

    std::string dir_;
    std::string queue_dir_;
    std::string corrupt_dir_;
    upstream::Outbox writer_;
};

}  // namespace postern::queue
