// The outbox target's storage: each message becomes DIR/<queueid>.eml with its envelope in
// DIR/<queueid>.json. Both are written under hidden temporary names, flushed to disk, renamed
// (never over an existing file) and the directory is flushed, all before the caller may answer
// 250. A reader that sees <queueid>.eml sees a complete message whose .json is already there.
//
// Blocking file I/O: call only from a worker thread, never from an I/O thread.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace postern::upstream {

class OutboxWriter {
public:
    // Creates the directory (and parents) when missing. Throws std::system_error naming the
    // directory when it cannot be created or opened.
    explicit OutboxWriter(std::string dir);
    ~OutboxWriter();
    OutboxWriter(const OutboxWriter&) = delete;
    OutboxWriter& operator=(const OutboxWriter&) = delete;

    // Writes `header` followed by `body` as the message and `envelope_json` as the sidecar.
    // On error nothing is left behind and the error names the failing step in `what`.
    std::error_code write(std::string_view queue_id, std::string_view header,
                          std::string_view body, std::string_view envelope_json,
                          std::string* what = nullptr);

    // Deletes temporaries left by a crash (".tmp-*"); returns how many.
    size_t remove_stale_temporaries();

    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
    int dir_fd_ = -1;
};

}  // namespace postern::upstream
