// Outbox storage; see outbox_writer.hpp.
#include "proxy/upstream/outbox_writer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <vector>

#include "proxy/queue/queue_id.hpp"

namespace postern::upstream {
namespace {

constexpr std::string_view kTempPrefix = ".tmp-";

std::error_code last_error() {
    return {errno, std::generic_category()};
}

// Writes all of the pieces with writev, retrying short writes.
std::error_code write_all(int fd, std::vector<std::string_view> pieces) {
    std::vector<iovec> iov;
    for (std::string_view piece : pieces) {
        if (!piece.empty()) iov.push_back({const_cast<char*>(piece.data()), piece.size()});
    }
    size_t first = 0;
    while (first < iov.size()) {
        ssize_t n = ::writev(fd, iov.data() + first, static_cast<int>(iov.size() - first));
        if (n < 0) {
            if (errno == EINTR) continue;
            return last_error();
        }
        auto written = static_cast<size_t>(n);
        while (first < iov.size() && written >= iov[first].iov_len) {
            written -= iov[first].iov_len;
            ++first;
        }
        if (first < iov.size()) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + written;
            iov[first].iov_len -= written;
        }
    }
    return {};
}

// Creates `name` exclusively in dir_fd and writes the pieces (not yet synced: see commit()).
// On failure the file is gone, unless it existed before: that one belongs to someone else.
std::error_code write_file(int dir_fd, const std::string& name,
                           std::vector<std::string_view> pieces) {
    int fd = ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) return last_error();
    std::error_code ec = write_all(fd, std::move(pieces));
    if (::close(fd) != 0 && !ec) ec = last_error();
    if (ec) ::unlinkat(dir_fd, name.c_str(), 0);
    return ec;
}

// rename() that fails instead of replacing an existing file (a queue id is never reused).
std::error_code rename_new(int dir_fd, const std::string& from, const std::string& to) {
    if (::renameat2(dir_fd, from.c_str(), dir_fd, to.c_str(), RENAME_NOREPLACE) != 0) {
        return last_error();
    }
    return {};
}

}  // namespace

OutboxWriter::OutboxWriter(std::string dir) : dir_(std::move(dir)) {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) throw std::system_error(ec, "cannot create outbox directory " + dir_);
    dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd_ < 0) throw std::system_error(last_error(), "cannot open outbox directory " + dir_);
    // One writer per directory: a second one (another postern) would have its in-flight
    // temporaries removed by this one's start-up clean-up.
    if (::flock(dir_fd_, LOCK_EX | LOCK_NB) != 0) {
        std::error_code lock_error = last_error();
        ::close(dir_fd_);
        throw std::system_error(lock_error,
                                "outbox directory " + dir_ + " is in use by another writer");
    }
    // Find out now, not at the first message, that the directory cannot be written or that
    // the file system lacks what commit() needs (renameat2 with RENAME_NOREPLACE, syncfs).
    const std::string probe = std::string(kTempPrefix) + "probe";
    const std::string probe_renamed = std::string(kTempPrefix) + "probe-renamed";
    ::unlinkat(dir_fd_, probe.c_str(), 0);
    ::unlinkat(dir_fd_, probe_renamed.c_str(), 0);
    std::error_code probe_error = write_file(dir_fd_, probe, {"probe"});
    if (!probe_error) probe_error = rename_new(dir_fd_, probe, probe_renamed);
    if (!probe_error) probe_error = sync();
    ::unlinkat(dir_fd_, probe.c_str(), 0);
    ::unlinkat(dir_fd_, probe_renamed.c_str(), 0);
    if (probe_error) {
        ::close(dir_fd_);
        throw std::system_error(probe_error, "cannot write into outbox directory " + dir_);
    }
}

OutboxWriter::~OutboxWriter() {
    if (dir_fd_ >= 0) ::close(dir_fd_);
}

OutboxWriter::Pending OutboxWriter::prepare(std::string_view queue_id, std::string_view header,
                                            std::string_view body, std::string_view envelope_json) {
    const std::string id(queue_id);
    Pending p{std::string(kTempPrefix) + id + ".eml",
              std::string(kTempPrefix) + id + ".json",
              id + ".eml",
              id + ".json",
              {},
              "",
              false};
    // On failure only what this call created is removed: a temporary that already existed
    // (EEXIST) is another message's.
    if (auto ec = write_file(dir_fd_, p.tmp_eml, {header, body})) {
        p.error = ec;
        p.step = "write message";
    } else if (auto ec2 = write_file(dir_fd_, p.tmp_json, {envelope_json})) {
        ::unlinkat(dir_fd_, p.tmp_eml.c_str(), 0);
        p.error = ec2;
        p.step = "write envelope";
    }
    return p;
}

std::error_code OutboxWriter::write(std::string_view queue_id, std::string_view header,
                                    std::string_view body, std::string_view envelope_json,
                                    std::string* what) {
    Pending p = prepare(queue_id, header, body, envelope_json);
    if (!p.error) commit({&p});
    if (p.error && what) *what = p.step;
    return p.error;
}

std::error_code OutboxWriter::sync() {
    // One flush of the whole file system instead of one fdatasync per file: the data and
    // inodes of every temporary written so far, and every rename done so far.
    if (::syncfs(dir_fd_) != 0) return last_error();
    return {};
}

void OutboxWriter::publish(const std::vector<Pending*>& batch) {
    // The sidecar first, so that whoever sees the .eml finds its envelope.
    for (Pending* p : batch) {
        if (p->error) continue;
        if (auto ec = rename_new(dir_fd_, p->tmp_json, p->json)) {
            p->error = ec;
            p->step = "rename envelope";
        } else if (auto ec2 = rename_new(dir_fd_, p->tmp_eml, p->eml)) {
            ::unlinkat(dir_fd_, p->json.c_str(), 0);
            p->error = ec2;
            p->step = "rename message";
        } else {
            p->published = true;
            continue;
        }
        ::unlinkat(dir_fd_, p->tmp_eml.c_str(), 0);
        ::unlinkat(dir_fd_, p->tmp_json.c_str(), 0);
    }
}

void OutboxWriter::abandon(Pending& p, std::error_code ec, const char* step) {
    if (p.published) {
        ::unlinkat(dir_fd_, p.eml.c_str(), 0);
        ::unlinkat(dir_fd_, p.json.c_str(), 0);
    } else {
        ::unlinkat(dir_fd_, p.tmp_eml.c_str(), 0);
        ::unlinkat(dir_fd_, p.tmp_json.c_str(), 0);
    }
    p.published = false;
    p.error = ec;
    p.step = step;
}

void OutboxWriter::commit(const std::vector<Pending*>& prepared) {
    // Entries that failed in prepare() own no files here: leave them alone.
    std::vector<Pending*> batch;
    for (Pending* p : prepared) {
        if (!p->error) batch.push_back(p);
    }
    // 1. The temporaries' data, before any of them gets its name.
    if (auto ec = sync()) {
        for (Pending* p : batch) abandon(*p, ec, "sync data");
        return;
    }
    // 2. The names.
    publish(batch);
    // 3. The names on disk. If this fails the files may not survive a crash: take them back,
    // the client is told 451 and retries, rather than risk losing a message acknowledged.
    if (auto ec = sync()) {
        for (Pending* p : batch) {
            if (p->published) abandon(*p, ec, "sync directory");
        }
    }
}

size_t OutboxWriter::remove_stale_temporaries() {
    // A fresh open: readdir on a dup of dir_fd_ would share (and move) its offset.
    int fd = ::openat(dir_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 0;
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        return 0;
    }
    std::set<std::string> names;
    while (dirent* e = ::readdir(d)) names.emplace(e->d_name);
    ::closedir(d);
    size_t removed = 0;
    for (const std::string& name : names) {
        std::string_view n = name;
        bool temporary = n.substr(0, kTempPrefix.size()) == kTempPrefix;
        // A crash between the two renames of commit() leaves an envelope without its message.
        // Only names postern makes are touched.
        constexpr std::string_view kJson = ".json";
        std::string_view stem = n.substr(0, n.size() - std::min(n.size(), kJson.size()));
        bool orphan = n.size() > kJson.size() && n.substr(stem.size()) == kJson &&
                      queue::is_queue_id(stem) && !names.count(std::string(stem) + ".eml");
        if ((temporary || orphan) && ::unlinkat(dir_fd_, name.c_str(), 0) == 0) ++removed;
    }
    return removed;
}

}  // namespace postern::upstream
