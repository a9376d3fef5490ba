// The outbox target's storage: each message becomes DIR/<queueid>.eml with its envelope in
// DIR/<queueid>.json. Both are written under hidden temporary names, flushed to disk, renamed
// (never over an existing file) and the directory is flushed, all before the caller may answer
// 250. A reader that sees <queueid>.eml sees a complete message whose .json is already there.
//
// Group commit: prepare() writes a message's temporaries without syncing; sync() flushes the
// file system once for everything written so far; publish() renames synced temporaries to their
// final names. A message is stored once a sync() that followed its publish() succeeded:
// prepare -> sync -> publish -> sync. commit() does that for one batch; the Outbox overlaps
// batches so that each sync serves one batch's data and the previous batch's names.
//
// Blocking file I/O: call only from a storage thread, never from an I/O thread. Not thread-safe:
// one thread drives one writer (which also keeps the kernel's directory lock uncontended).
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace postern::upstream {

class OutboxWriter {
  public:
    // Creates the directory (and parents) when missing, locks it (flock) for this writer and
    // checks that a file can be written there. Throws std::system_error naming the directory
    // when it cannot be created, opened or written, or when another writer holds it.
    explicit OutboxWriter(std::string dir);
    ~OutboxWriter();
    OutboxWriter(const OutboxWriter&) = delete;
    OutboxWriter& operator=(const OutboxWriter&) = delete;

    struct Pending {
        std::string tmp_eml, tmp_json, eml, json;
        std::error_code error;   // set by any step; nothing is left behind then
        const char* step = "";   // the failing step, for the log
        bool published = false;  // renamed to its final names
    };

    // Writes `header` followed by `body` as the message and `envelope_json` as the sidecar,
    // under temporary names. Check `error` before committing.
    Pending prepare(std::string_view queue_id, std::string_view header, std::string_view body,
                    std::string_view envelope_json);

    // Flushes the file system holding the directory (syncfs).
    std::error_code sync();

    // Renames each synced temporary of the batch to its final names (never over an existing
    // file), or sets its error and removes its files. Entries with an error are skipped.
    void publish(const std::vector<Pending*>& batch);

    // Removes the files of `p` (temporary or final) and records why.
    void abandon(Pending& p, std::error_code ec, const char* step);

    // sync, publish, sync for one batch: every prepared message of the batch is durable and
    // visible, or has its error set. Entries whose prepare() failed are skipped.
    void commit(const std::vector<Pending*>& batch);

    // prepare() and commit() of one message.
    std::error_code write(std::string_view queue_id, std::string_view header, std::string_view body,
                          std::string_view envelope_json, std::string* what = nullptr);

    // Deletes what a crash can leave: temporaries (".tmp-*") and envelopes whose message was
    // never renamed into place (<queueid>.json without <queueid>.eml). Returns how many.
    size_t remove_stale_temporaries();

    const std::string& dir() const { return dir_; }

  private:
    std::string dir_;
    int dir_fd_ = -1;
};

}  // namespace postern::upstream
