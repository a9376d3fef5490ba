// Coroutine frames from a per-thread cache of freed blocks, one free list per 64-octet size
// class up to 4 KiB.
//
// Every call of a coroutine allocates its frame. Asio's own recycling keeps two freed frames
// per thread and none over 1,020 octets; postern's session and client coroutines have frames
// of 1 to 2.2 KiB, just over glibc's per-thread cache (1,032 octets), so those went through
// malloc's slow path about 30 times per relayed message (docs/bench.md, "Passthrough").
//
// How it hooks in: an explicit specialization of Asio's thread_info_base::allocate and
// deallocate for awaitable frames. A specialization must be seen before the first coroutine of
// a translation unit is compiled, so CMake force-includes this header (-include) into every
// file of every target. Elsewhere (another Boost) Asio's recycling stays.
//
// A frame freed on another thread than the one that made it (a coroutine spawned onto a
// helper thread's context) is kept by the thread that freed it; each thread keeps at most
// kMaxCachedBytes, so that costs little memory, bounded.
#pragma once

#include <boost/version.hpp>

#if BOOST_VERSION / 100 == 1081 && !defined(BOOST_ASIO_DISABLE_AWAITABLE_FRAME_RECYCLING)
#define POSTERN_FRAME_CACHE 1

#include <boost/asio/detail/thread_info_base.hpp>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)  // GCC
#define POSTERN_FRAME_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)  // clang
#define POSTERN_FRAME_ASAN 1
#endif
#endif
#if defined(POSTERN_FRAME_ASAN)
// Cached blocks are poisoned, so that a frame used after it was freed is still caught.
#include <sanitizer/asan_interface.h>
#define POSTERN_FRAME_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define POSTERN_FRAME_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POSTERN_FRAME_POISON(p, n) ((void)(p), (void)(n))
#define POSTERN_FRAME_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace postern::frames {

inline constexpr std::size_t kClassSize = 64;
inline constexpr std::size_t kClasses = 64;  // up to 4 KiB; larger frames go to malloc
inline constexpr std::size_t kMaxCachedBytes = 512 * 1024;  // per thread

// Trivially destructible, so that a frame freed late in a thread's exit still finds it.
struct Cache {
    void* heads[kClasses];
    std::size_t bytes;
    bool registered;  // the thread's Drain exists
    bool closed;      // the thread is ending: free at once from now on
};
inline thread_local Cache cache{};

// Frees the cached blocks when the thread ends.
struct Drain {
    ~Drain() {
        Cache& c = cache;
        c.closed = true;
        for (std::size_t k = 0; k < kClasses; ++k) {
            while (void* block = c.heads[k]) {
                POSTERN_FRAME_UNPOISON(block, sizeof(void*));
                c.heads[k] = *static_cast<void**>(block);
                std::free(block);
            }
        }
        c.bytes = 0;
    }
};

inline void register_drain() {
    static thread_local Drain drain;
    (void)drain;
    cache.registered = true;
}

inline void* allocate(std::size_t size, std::size_t align) {
    const std::size_t k = (size - 1) / kClassSize;  // size is never 0: a frame has a promise
    const bool aligned = align <= alignof(std::max_align_t);  // what malloc gives
    // A block of a cached class has its class's full size, whoever asked for it.
    const std::size_t bytes = k < kClasses ? (k + 1) * kClassSize : size;
    if (k < kClasses && aligned) {
        Cache& c = cache;
        if (void* block = c.heads[k]) {
            POSTERN_FRAME_UNPOISON(block, bytes);
            c.heads[k] = *static_cast<void**>(block);
            c.bytes -= bytes;
            return block;
        }
    }
    void* block = aligned ? std::malloc(bytes)
                          : std::aligned_alloc(align, (bytes + align - 1) / align * align);
    if (!block) throw std::bad_alloc();
    return block;
}

inline void deallocate(void* block, std::size_t size) {
    const std::size_t k = (size - 1) / kClassSize;
    Cache& c = cache;
    // An over-aligned block of a cached class may be cached: it has the class's full size and
    // more alignment than the blocks handed out from the cache need.
    if (k >= kClasses || c.closed || c.bytes + (k + 1) * kClassSize > kMaxCachedBytes) {
        std::free(block);
        return;
    }
    if (!c.registered) register_drain();
    *static_cast<void**>(block) = c.heads[k];
    c.heads[k] = block;
    c.bytes += (k + 1) * kClassSize;
    POSTERN_FRAME_POISON(block, (k + 1) * kClassSize);  // the link too: read only unpoisoned
}

}  // namespace postern::frames

namespace boost::asio::detail {

template <>
inline void* thread_info_base::allocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, std::size_t size,
    std::size_t align) {
    return postern::frames::allocate(size, align);
}

template <>
inline void thread_info_base::deallocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, void* pointer, std::size_t size) {
    postern::frames::deallocate(pointer, size);
}

}  // namespace boost::asio::detail

#endif
