// The spool; see spool.hpp.
#include "proxy/queue/spool.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "proxy/observe/log.hpp"
#include "proxy/queue/checksum.hpp"

namespace postern::queue {

namespace fs = std::filesystem;
using config::LogLevel;
using observe::log;

namespace {

std::string make_dir(const std::string& path) {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw std::system_error(ec, "cannot create " + path);
    return path;
}

bool read_file(const std::string& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream buffer;
    buffer << in.rdbuf();
    out = buffer.str();
    return true;
}

}  // namespace

bool SpooledMessage::any(RecipientStatus s) const {
    return std::any_of(recipients.begin(), recipients.end(),
                       [s](const RecipientState& r) { return r.status == s; });
}

Spool::Spool(const std::string& dir)
    : dir_(dir),
      queue_dir_(make_dir(dir + "/queue")),
      corrupt_dir_(make_dir(dir + "/corrupt")),
      writer_(queue_dir_, /*checksum=*/true) {}

void Spool::quarantine(const std::string& id, const std::string& reason) {
    for (const char* ext : {".eml", ".json", ".state"}) {
        std::error_code ec;
        fs::rename(queue_dir_ + "/" + id + ext, corrupt_dir_ + "/" + id + ext, ec);
    }
    log(LogLevel::kError, "spool_corrupt",
        {{"queue_id", id}, {"reason", reason}, {"moved_to", corrupt_dir_}});
}

Spool::Recovery Spool::recover() {
    Recovery out;
    out.stale_removed = writer_.writer().remove_stale_temporaries();
    std::vector<std::string> ids;
    std::vector<std::string> states;
    for (const auto& entry : fs::directory_iterator(queue_dir_)) {
        std::string name = entry.path().filename().string();
        if (name.size() > 5 && name.ends_with(".json") && name[0] != '.') {
            ids.push_back(name.substr(0, name.size() - 5));
        } else if (name.size() > 6 && name.ends_with(".state")) {
            states.push_back(name.substr(0, name.size() - 6));
        }
    }
    for (const std::string& id : states) {
        // Left by a removal that a crash interrupted.
        if (!fs::exists(queue_dir_ + "/" + id + ".json")) {
            std::error_code ec;
            fs::remove(queue_dir_ + "/" + id + ".state", ec);
        }
    }
    std::sort(ids.begin(), ids.end());  // queue ids sort by time: oldest first
    for (const std::string& id : ids) {
        std::string json;
        std::string error;
        SpooledMessage m;
        if (!read_file(queue_dir_ + "/" + id + ".json", json)) {
            quarantine(id, "cannot read the envelope");
            ++out.corrupt;
            continue;
        }
        if (!envelope_from_json(json, m.envelope, m.size, error, &m.crc32) ||
            m.envelope.queue_id != id) {
            quarantine(id, error.empty() ? "queue id does not match the file name" : error);
            ++out.corrupt;
            continue;
        }
        std::error_code ec;
        uint64_t actual = fs::file_size(queue_dir_ + "/" + id + ".eml", ec);
        if (ec || actual != m.size) {
            quarantine(id, ec ? "message file missing"
                              : "the message file has " + std::to_string(actual) +
                                    " octets, the envelope says " + std::to_string(m.size));
            ++out.corrupt;
            continue;
        }
        m.recipients.resize(m.envelope.recipients.size());
        std::string states;
        if (read_file(queue_dir_ + "/" + id + ".state", states)) {
            MessageFlags flags;
            apply_state_lines(states, m.recipients, &flags);
            m.attempts = flags.attempts;
            m.last_error = std::move(flags.last_error);
            m.held = flags.held;
            m.delay_warned = flags.delay_warned;
        }
        out.messages.push_back(std::move(m));
    }
    return out;
}

Spool::Read Spool::read_content(const SpooledMessage& m, std::string& out,
                                std::string& error) const {
    if (!read_file(queue_dir_ + "/" + m.envelope.queue_id + ".eml", out)) {
        error = "cannot read the message file";
        return Read::kUnreadable;
    }
    if (out.size() != m.size) {
        error = "the message file has " + std::to_string(out.size()) +
                " octets, the envelope says " + std::to_string(m.size);
        return Read::kCorrupt;
    }
    if (m.crc32 && content_crc32(out) != *m.crc32) {
        error = "the message file does not match its CRC-32";
        return Read::kCorrupt;
    }
    return Read::kOk;
}

void Spool::record_bounced(const std::string& id, size_t index) {
    append_state(id, format_bounced_line(index));
}

void Spool::record_attempts(const std::string& id, unsigned attempts, const std::string& error) {
    append_state(id, format_attempts_line(attempts, error));
}

void Spool::record_flag(const std::string& id, char flag) {
    append_state(id, std::string(1, flag) + "\n");
}

void Spool::record(const std::string& id, size_t index, const RecipientState& state) {
    append_state(id, format_state_line(index, state));
}

void Spool::append_state(const std::string& id, const std::string& line) {
    int fd = ::open((queue_dir_ + "/" + id + ".state").c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return;
    ssize_t n = ::write(fd, line.data(), line.size());
    (void)n;  // best effort: a lost line means one more delivery attempt for that recipient
    ::close(fd);
}

void Spool::remove(const std::string& id) {
    // The .eml first: without it a leftover .json is an orphan that start-up cleans away.
    for (const char* ext : {".eml", ".json", ".state"}) {
        std::error_code ec;
        fs::remove(queue_dir_ + "/" + id + ext, ec);
    }
}

}  // namespace postern::queue
