// The receive buffer of a connection (a server session, an upstream client): octets read but
// not yet consumed. Reads go straight into its
// free space (no zero-filling, unlike std::string::resize); consuming from the front only moves
// an index, and the rest is moved to the front only when space is needed.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace postern::smtp {

class InputBuffer {
  public:
    std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
    bool empty() const { return begin_ == end_; }
    size_t size() const { return end_ - begin_; }
    size_t capacity() const { return capacity_; }

    // Room for at least n more octets at write_area(); call commit() with what was written.
    char* prepare(size_t n) {
        if (capacity_ - end_ < n) {
            size_t held = size();
            if (capacity_ >= held + n && begin_ > 0) {
                std::memmove(data_.get(), data_.get() + begin_, held);
            } else {
                size_t grown = std::max(held + n, capacity_ * 2);
                auto bigger = std::make_unique_for_overwrite<char[]>(grown);
                if (held) std::memcpy(bigger.get(), data_.get() + begin_, held);
                data_ = std::move(bigger);
                capacity_ = grown;
            }
            begin_ = 0;
            end_ = held;
        }
        return data_.get() + end_;
    }
    void commit(size_t n) { end_ += n; }

    void consume(size_t n) {
        begin_ += n;
        if (begin_ == end_) begin_ = end_ = 0;
    }

    // Gives back memory above `keep` octets when what is held fits in less.
    void shrink(size_t keep) {
        if (capacity_ <= keep || size() > keep) return;
        auto smaller = std::make_unique_for_overwrite<char[]>(keep);
        if (!empty()) std::memcpy(smaller.get(), data_.get() + begin_, size());
        end_ = size();
        begin_ = 0;
        data_ = std::move(smaller);
        capacity_ = keep;
    }

  private:
    std::unique_ptr<char[]> data_;
    size_t capacity_ = 0;
    size_t begin_ = 0;
    size_t end_ = 0;
};

}  // namespace postern::smtp
