// Unit tests for the per-thread cache of coroutine frames (proxy/frame_cache.hpp): blocks come
// back by size class, large and over-aligned requests are served right, the cache stays within
// its bound, and Asio's coroutines really allocate through it (the specialization is seen).
#include <gtest/gtest.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/version.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#if BOOST_VERSION / 100 == 1081 && !defined(POSTERN_FRAME_CACHE)
#error "proxy/frame_cache.hpp is not force-included: coroutine frames would bypass the cache"
#endif

#if defined(POSTERN_FRAME_CACHE)
namespace postern::frames {
namespace {

namespace asio = boost::asio;

// Empties this thread's cache, so that each test starts from nothing cached.
void drain_cache() {
    for (size_t k = 0; k < kClasses; ++k) {
        while (cache.heads[k]) std::free(allocate((k + 1) * kClassSize, alignof(std::max_align_t)));
    }
    ASSERT_EQ(cache.bytes, 0u);
}

TEST(FrameCache, AFreedBlockServesTheNextRequestOfItsClass) {
    drain_cache();
    void* first = allocate(1000, alignof(std::max_align_t));
    deallocate(first, 1000);
    EXPECT_EQ(cache.bytes, 1024u);  // the class of 961..1024 octets
    // Another size of the same class gets the same block, which has the class's full size.
    void* second = allocate(970, alignof(std::max_align_t));
    EXPECT_EQ(second, first);
    EXPECT_EQ(cache.bytes, 0u);
    std::memset(second, 0xA5, 1024);
    // A size of another class does not.
    deallocate(second, 970);
    void* third = allocate(1100, alignof(std::max_align_t));
    EXPECT_NE(third, first);
    deallocate(third, 1100);
    EXPECT_EQ(cache.bytes, 1024u + 1152u);
    drain_cache();
}

TEST(FrameCache, LargeBlocksAreNotKept) {
    drain_cache();
    const size_t large = kClasses * kClassSize + 1;
    void* block = allocate(large, alignof(std::max_align_t));
    std::memset(block, 0x5A, large);
    deallocate(block, large);
    EXPECT_EQ(cache.bytes, 0u);
}

TEST(FrameCache, OverAlignedRequestsAreAligned) {
    drain_cache();
    for (size_t align : {32u, 64u, 128u, 4096u}) {
        for (size_t size : {1u, 65u, 1000u, 5000u}) {
            void* block = allocate(size, align);
            EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % align, 0u) << size << " " << align;
            std::memset(block, 0x11, size);
            deallocate(block, size);
        }
    }
    // What was kept is at least its class's size: the class's next request fits in it.
    void* again = allocate(1000, alignof(std::max_align_t));
    std::memset(again, 0x22, 1024);
    deallocate(again, 1000);
    drain_cache();
}

TEST(FrameCache, KeepsNoMoreThanItsBound) {
    drain_cache();
    std::vector<void*> blocks;
    const size_t size = kClasses * kClassSize;  // the largest class
    for (size_t i = 0; i < kMaxCachedBytes / size + 10; ++i) {
        blocks.push_back(allocate(size, alignof(std::max_align_t)));
    }
    for (void* block : blocks) deallocate(block, size);
    EXPECT_EQ(cache.bytes, kMaxCachedBytes);
    drain_cache();
}

TEST(FrameCache, ABlockFreedOnAnotherThreadIsKeptThere) {
    drain_cache();
    void* block = allocate(2000, alignof(std::max_align_t));
    size_t bytes_there = 0;
    std::thread other([&] {
        deallocate(block, 2000);
        bytes_there = cache.bytes;
    });  // ends: its cache is emptied (LeakSanitizer would see a block left behind)
    other.join();
    EXPECT_EQ(bytes_there, 2048u);
    EXPECT_EQ(cache.bytes, 0u);
}

asio::awaitable<int> leaf(int x) {
    char big[1500];  // a frame over Asio's own 1,020-octet recycling limit
    for (int i = 0; i < 1500; ++i) big[i] = static_cast<char>(x + i);
    co_await asio::post(asio::use_awaitable);
    int sum = 0;
    for (int i = 0; i < 1500; ++i) sum += big[i];
    co_return sum;
}

asio::awaitable<void> caller(int& result) {
    for (int i = 0; i < 3; ++i) result += co_await leaf(i);
}

TEST(FrameCache, AsioCoroutineFramesComeFromTheCache) {
    drain_cache();
    asio::io_context io(1);
    int result = 0;
    asio::co_spawn(io, caller(result), asio::detached);
    io.run();
    EXPECT_NE(result, 0);
    // The frames of caller, leaf and Asio's own wrappers were given back to this thread's cache.
    EXPECT_GT(cache.bytes, 1500u);
    drain_cache();
}

}  // namespace
}  // namespace postern::frames
#endif
