// Outbox target; see outbox.hpp.
#include "proxy/upstream/outbox.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace postern::upstream {

namespace asio = boost::asio;

Outbox::Outbox(std::string dir, asio::thread_pool& pool) : writer_(std::move(dir)), pool_(pool) {}

asio::awaitable<StoreResult> Outbox::store(const queue::Envelope& envelope,
                                           const std::string& header, const std::string& body) {
    std::string json = queue::envelope_to_json(envelope, header.size() + body.size());
    // co_spawn onto the pool runs the writes there; co_await resumes us on our own executor.
    co_return co_await asio::co_spawn(
        pool_,
        [&]() -> asio::awaitable<StoreResult> {
            StoreResult result;
            result.error = writer_.write(envelope.queue_id, header, body, json, &result.step);
            co_return result;
        },
        asio::use_awaitable);
}

}  // namespace postern::upstream
