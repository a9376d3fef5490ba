// Unit tests for the outbox storage (proxy/upstream/outbox_writer.hpp), in a fresh directory
// under /tmp for each test.
#include "proxy/upstream/outbox_writer.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace postern::upstream {
namespace {

namespace fs = std::filesystem;

class OutboxWriterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/postern-outbox-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
        root_ = tmpl;
        dir_ = root_ + "/outbox";
    }

    void TearDown() override {
        if (root_.empty()) return;
        std::error_code ec;
        // Give back any permission a test took away, then remove everything.
        for (auto it = fs::recursive_directory_iterator(root_, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (it->is_directory()) ::chmod(it->path().c_str(), 0700);
        }
        ::chmod(root_.c_str(), 0700);
        fs::remove_all(root_, ec);
        EXPECT_FALSE(ec) << ec.message();
    }

    static std::string read_file(const fs::path& path) {
        std::ifstream in(path, std::ios::binary);
        EXPECT_TRUE(in.good()) << "cannot read " << path;
        return std::string(std::istreambuf_iterator<char>(in), {});
    }

    static void write_plain(const fs::path& path, const std::string& content) {
        std::ofstream out(path, std::ios::binary);
        out << content;
        ASSERT_TRUE(out.good()) << path;
    }

    std::set<std::string> names() const { return names_in(dir_); }

    static std::set<std::string> names_in(const std::string& dir) {
        std::set<std::string> out;
        for (const auto& entry : fs::directory_iterator(dir)) {
            out.insert(entry.path().filename().string());
        }
        return out;
    }

    std::set<std::string> temporaries() const {
        std::set<std::string> out;
        for (const std::string& n : names()) {
            if (n.rfind(".tmp-", 0) == 0) out.insert(n);
        }
        return out;
    }

    std::string root_;
    std::string dir_;
};

const std::string kHeader = "Received: from client.example ([192.0.2.1])\r\n";
const std::string kBody = "Subject: test\r\n\r\nHello\r\n";
const std::string kJson = "{\"queue_id\": \"X\"}\n";

TEST_F(OutboxWriterTest, ConstructorCreatesDirectoryAndParents) {
    std::string deep = root_ + "/a/b/c";
    OutboxWriter writer(deep);
    EXPECT_TRUE(fs::is_directory(deep));
    EXPECT_EQ(writer.dir(), deep);
}

TEST_F(OutboxWriterTest, ConstructorAcceptsExistingDirectory) {
    fs::create_directories(dir_);
    write_plain(fs::path(dir_) / "existing.eml", "x");
    OutboxWriter writer(dir_);
    EXPECT_EQ(names(), std::set<std::string>{"existing.eml"});
}

TEST_F(OutboxWriterTest, ConstructorUnderRegularFileThrows) {
    std::string file = root_ + "/plain-file";
    write_plain(file, "not a directory");
    std::string bad = file + "/outbox";
    try {
        OutboxWriter writer(bad);
        FAIL() << "no exception for " << bad;
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
        EXPECT_TRUE(e.code()) << "carries the errno";
    }
    EXPECT_THROW(OutboxWriter{file}, std::system_error) << "a regular file is not a directory";
}

TEST_F(OutboxWriterTest, WriteProducesMessageAndEnvelope) {
    OutboxWriter writer(dir_);
    std::string what = "untouched";
    std::error_code ec = writer.write("0123456789ABCD", kHeader, kBody, kJson, &what);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(what, "untouched") << "`what` is set only on failure";
    EXPECT_EQ(names(), (std::set<std::string>{"0123456789ABCD.eml", "0123456789ABCD.json"}));
    EXPECT_EQ(read_file(fs::path(dir_) / "0123456789ABCD.eml"), kHeader + kBody);
    EXPECT_EQ(read_file(fs::path(dir_) / "0123456789ABCD.json"), kJson);
    EXPECT_TRUE(temporaries().empty());
}

TEST_F(OutboxWriterTest, ContentIsByteExact) {
    OutboxWriter writer(dir_);
    std::string header = "X-Bin: \xff\xfe\r\n";
    std::string body;
    for (int i = 0; i < 256; ++i) body += static_cast<char>(i);
    body += std::string("\0\r\n.\r\n\n\r", 8);
    body += std::string(1 << 20, 'z');  // 1 MiB: more than one write() may be needed
    ASSERT_FALSE(writer.write("BIN", header, body, "{}"));
    EXPECT_EQ(read_file(fs::path(dir_) / "BIN.eml"), header + body);
    EXPECT_EQ(read_file(fs::path(dir_) / "BIN.json"), "{}");
}

TEST_F(OutboxWriterTest, EmptyPieces) {
    OutboxWriter writer(dir_);
    ASSERT_FALSE(writer.write("EMPTY", "", "", ""));
    EXPECT_EQ(fs::file_size(fs::path(dir_) / "EMPTY.eml"), 0u);
    EXPECT_EQ(fs::file_size(fs::path(dir_) / "EMPTY.json"), 0u);
}

TEST_F(OutboxWriterTest, FilesAreNotWorldReadable) {
    OutboxWriter writer(dir_);
    ASSERT_FALSE(writer.write("PERM", kHeader, kBody, kJson));
    struct stat st {};
    ASSERT_EQ(::stat((dir_ + "/PERM.eml").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0007, 0u);
    EXPECT_EQ(st.st_mode & 0200, 0200u);
}

TEST_F(OutboxWriterTest, SameIdTwiceFailsWithEexistAndKeepsFirst) {
    OutboxWriter writer(dir_);
    ASSERT_FALSE(writer.write("DUP", kHeader, "first\r\n", "{\"n\": 1}"));
    std::string what;
    std::error_code ec = writer.write("DUP", kHeader, "second\r\n", "{\"n\": 2}", &what);
    EXPECT_EQ(ec, std::errc::file_exists) << ec.message();
    EXPECT_FALSE(what.empty());
    EXPECT_EQ(read_file(fs::path(dir_) / "DUP.eml"), kHeader + "first\r\n");
    EXPECT_EQ(read_file(fs::path(dir_) / "DUP.json"), "{\"n\": 1}");
    EXPECT_EQ(names(), (std::set<std::string>{"DUP.eml", "DUP.json"}));
}

TEST_F(OutboxWriterTest, ExistingMessageWithoutEnvelopeIsNotReplaced) {
    // Only DUP.eml exists: the envelope rename succeeds, the message rename fails and the
    // envelope is taken back, so no .json without its own .eml is left.
    fs::create_directories(dir_);
    write_plain(fs::path(dir_) / "HALF.eml", "older message");
    OutboxWriter writer(dir_);
    std::string what;
    std::error_code ec = writer.write("HALF", kHeader, kBody, kJson, &what);
    EXPECT_EQ(ec, std::errc::file_exists) << ec.message();
    EXPECT_EQ(what, "rename message");
    EXPECT_EQ(read_file(fs::path(dir_) / "HALF.eml"), "older message");
    EXPECT_EQ(names(), std::set<std::string>{"HALF.eml"});
}

TEST_F(OutboxWriterTest, BatchOfFifty) {
    OutboxWriter writer(dir_);
    std::vector<OutboxWriter::Pending> pending;
    pending.reserve(50);
    for (int i = 0; i < 50; ++i) {
        std::string id = "ID" + std::to_string(1000 + i);
        pending.push_back(writer.prepare(id, kHeader, "body " + std::to_string(i) + "\r\n",
                                         "{\"i\": " + std::to_string(i) + "}"));
        ASSERT_FALSE(pending.back().error) << pending.back().step;
        EXPECT_EQ(pending.back().eml, id + ".eml");
        EXPECT_EQ(pending.back().json, id + ".json");
    }
    // Prepared but not committed: only temporaries, nothing visible yet.
    EXPECT_EQ(temporaries().size(), 100u);
    EXPECT_EQ(names().size(), 100u);

    std::vector<OutboxWriter::Pending*> batch;
    for (auto& p : pending) batch.push_back(&p);
    writer.commit(batch);
    for (const auto& p : pending) EXPECT_FALSE(p.error) << p.eml << ": " << p.step;

    EXPECT_TRUE(temporaries().empty());
    EXPECT_EQ(names().size(), 100u);
    for (int i = 0; i < 50; ++i) {
        std::string id = "ID" + std::to_string(1000 + i);
        EXPECT_EQ(read_file(fs::path(dir_) / (id + ".eml")),
                  kHeader + "body " + std::to_string(i) + "\r\n");
        EXPECT_EQ(read_file(fs::path(dir_) / (id + ".json")), "{\"i\": " + std::to_string(i) + "}");
    }
}

TEST_F(OutboxWriterTest, OneFailureInABatchDoesNotFailTheOthers) {
    fs::create_directories(dir_);
    write_plain(fs::path(dir_) / "B.json", "someone else's");
    OutboxWriter writer(dir_);
    OutboxWriter::Pending a = writer.prepare("A", kHeader, "a", "{}");
    OutboxWriter::Pending b = writer.prepare("B", kHeader, "b", "{}");
    OutboxWriter::Pending c = writer.prepare("C", kHeader, "c", "{}");
    ASSERT_FALSE(a.error);
    ASSERT_FALSE(b.error);
    ASSERT_FALSE(c.error);
    writer.commit({&a, &b, &c});
    EXPECT_FALSE(a.error);
    EXPECT_EQ(b.error, std::errc::file_exists);
    EXPECT_STREQ(b.step, "rename envelope");
    EXPECT_FALSE(c.error);
    EXPECT_EQ(names(), (std::set<std::string>{"A.eml", "A.json", "B.json", "C.eml", "C.json"}));
    EXPECT_EQ(read_file(fs::path(dir_) / "B.json"), "someone else's");
}

TEST_F(OutboxWriterTest, SecondPrepareOfSameIdLeavesFirstAlone) {
    OutboxWriter writer(dir_);
    OutboxWriter::Pending first = writer.prepare("SAME", kHeader, "first", "{\"n\": 1}");
    ASSERT_FALSE(first.error);
    OutboxWriter::Pending second = writer.prepare("SAME", kHeader, "second", "{\"n\": 2}");
    EXPECT_EQ(second.error, std::errc::file_exists);
    EXPECT_STREQ(second.step, "write message");
    // The failed prepare removed nothing of the first one's.
    writer.commit({&first});
    ASSERT_FALSE(first.error) << first.error.message() << " at " << first.step;
    EXPECT_EQ(read_file(fs::path(dir_) / "SAME.eml"), kHeader + "first");
    EXPECT_EQ(read_file(fs::path(dir_) / "SAME.json"), "{\"n\": 1}");
    EXPECT_TRUE(temporaries().empty());
}

TEST_F(OutboxWriterTest, FailedEnvelopeWriteLeavesNothingOfItsOwn) {
    // Something (here a directory) already holds the envelope's temporary name.
    fs::create_directories(fs::path(dir_) / ".tmp-ENV.json");
    OutboxWriter writer(dir_);
    OutboxWriter::Pending p = writer.prepare("ENV", kHeader, kBody, kJson);
    EXPECT_EQ(p.error, std::errc::file_exists);
    EXPECT_STREQ(p.step, "write envelope");
    EXPECT_EQ(names(), std::set<std::string>{".tmp-ENV.json"}) << "the message temporary is gone";
    EXPECT_TRUE(fs::is_directory(fs::path(dir_) / ".tmp-ENV.json")) << "not ours: left alone";
}

TEST_F(OutboxWriterTest, RemoveStaleTemporaries) {
    fs::create_directories(dir_);
    for (const char* n : {".tmp-A.eml", ".tmp-A.json", ".tmp-", ".tmp-B.eml", "A.eml", "A.json",
                          ".hidden", "tmp-x", "x.tmp-", "..tmp-y", ".tmpfoo"}) {
        write_plain(fs::path(dir_) / n, n);
    }
    OutboxWriter writer(dir_);
    EXPECT_EQ(writer.remove_stale_temporaries(), 4u);
    EXPECT_EQ(names(), (std::set<std::string>{"A.eml", "A.json", ".hidden", "tmp-x", "x.tmp-",
                                              "..tmp-y", ".tmpfoo"}));
    EXPECT_EQ(read_file(fs::path(dir_) / "A.eml"), "A.eml");
    EXPECT_EQ(writer.remove_stale_temporaries(), 0u);
}

TEST_F(OutboxWriterTest, RemoveStaleTemporariesAlsoRemovesOrphanEnvelopes) {
    fs::create_directories(dir_);
    // 01M8HDW9P9FG1H.json without its .eml: a crash between the two renames of commit().
    // Files whose names are not queue ids are not postern's and are left alone.
    for (const char* n : {"01M8HDW9P9FG1G.eml", "01M8HDW9P9FG1G.json", "01M8HDW9P9FG1H.json",
                          "01M8HDW9P9FG1J.eml", "notes.json", "B.json"}) {
        write_plain(fs::path(dir_) / n, n);
    }
    OutboxWriter writer(dir_);
    EXPECT_EQ(writer.remove_stale_temporaries(), 1u);
    EXPECT_EQ(names(), (std::set<std::string>{"01M8HDW9P9FG1G.eml", "01M8HDW9P9FG1G.json",
                                              "01M8HDW9P9FG1J.eml", "notes.json", "B.json"}));
}

TEST_F(OutboxWriterTest, SecondWriterOnTheSameDirectoryIsRefused) {
    OutboxWriter first(dir_);
    EXPECT_THROW(OutboxWriter second(dir_), std::system_error);
    // The first one still works.
    EXPECT_FALSE(first.write("LOCKED", kHeader, kBody, kJson));
}

TEST_F(OutboxWriterTest, RemoveStaleTemporariesOfAPreparedMessage) {
    OutboxWriter writer(dir_);
    OutboxWriter::Pending p = writer.prepare("CRASH", kHeader, kBody, kJson);
    ASSERT_FALSE(p.error);
    // As after a crash between prepare() and commit().
    EXPECT_EQ(writer.remove_stale_temporaries(), 2u);
    EXPECT_TRUE(names().empty());
}

TEST_F(OutboxWriterTest, NonWritableDirectory) {
    OutboxWriter writer(dir_);
    ASSERT_EQ(::chmod(dir_.c_str(), 0500), 0);
    // root (CAP_DAC_OVERRIDE) writes regardless of the mode: detect it and skip.
    std::string probe = dir_ + "/probe";
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
        ::close(fd);
        ::unlink(probe.c_str());
        GTEST_SKIP() << "running with privileges that ignore directory permissions (uid "
                     << ::geteuid() << "): chmod 0500 does not stop writes";
    }
    std::string what;
    std::error_code ec = writer.write("RO", kHeader, kBody, kJson, &what);
    EXPECT_TRUE(ec);
    EXPECT_EQ(ec, std::errc::permission_denied) << ec.message();
    EXPECT_EQ(what, "write message");
    EXPECT_TRUE(names().empty());
}

}  // namespace
}  // namespace postern::upstream
