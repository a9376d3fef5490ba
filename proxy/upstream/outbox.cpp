// Outbox target; see outbox.hpp.
#include "proxy/upstream/outbox.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

#include "proxy/queue/checksum.hpp"

namespace postern::upstream {

namespace asio = boost::asio;

Outbox::Outbox(std::string dir, bool checksum)
    : writer_(std::move(dir)),
      checksum_(checksum),
      work_(asio::make_work_guard(io_)),
      thread_([this] { io_.run(); }) {}

Outbox::~Outbox() {
    work_.reset();
    thread_.join();
}

asio::awaitable<StoreResult> Outbox::store(const queue::Envelope& envelope,
                                           const std::string& header, const std::string& body) {
    std::optional<uint32_t> crc;
    if (checksum_) crc = queue::content_crc32(header, body);
    const std::string json = queue::envelope_to_json(envelope, header.size() + body.size(), crc);
    auto initiate = [&](auto handler) {
        // The handler resumes the caller; it is moved into a shared_ptr so that the std::function
        // of the Job can hold it, and it is run on the caller's own executor.
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto done = [shared](StoreResult result) {
            auto executor = asio::get_associated_executor(*shared);
            asio::post(executor, [shared, result = std::move(result)]() mutable {
                std::move (*shared)(std::move(result));
            });
        };
        asio::post(io_, [this, &envelope, &header, &body, &json, done = std::move(done)] {
            Job job{writer_.prepare(envelope.queue_id, header, body, json), done};
            if (job.pending.error) {
                done(StoreResult{job.pending.error, job.pending.step, std::nullopt});
                return;
            }
            written_.push_back(std::move(job));
            schedule_cycle();
        });
    };
    StoreResult result =
        co_await asio::async_initiate<decltype(asio::use_awaitable), void(StoreResult)>(
            initiate, asio::use_awaitable);
    if (!result.error) result.crc32 = crc;
    co_return result;
}

void Outbox::schedule_cycle() {
    // Posted behind the writes already queued: they all join the coming sync.
    if (cycle_posted_) return;
    cycle_posted_ = true;
    asio::post(io_, [this] { cycle(); });
}

void Outbox::cycle() {
    cycle_posted_ = false;
    std::vector<Job> to_publish;
    to_publish.swap(written_);
    std::vector<Job> to_acknowledge;
    to_acknowledge.swap(published_);

    if (auto ec = writer_.sync()) {
        for (Job& job : to_acknowledge) writer_.abandon(job.pending, ec, "sync directory");
        for (Job& job : to_publish) writer_.abandon(job.pending, ec, "sync data");
    } else {
        std::vector<OutboxWriter::Pending*> pending;
        pending.reserve(to_publish.size());
        for (Job& job : to_publish) pending.push_back(&job.pending);
        writer_.publish(pending);
    }
    for (Job& job : to_acknowledge)
        job.done(StoreResult{job.pending.error, job.pending.step, std::nullopt});
    for (Job& job : to_publish) {
        if (job.pending.error) {
            job.done(StoreResult{job.pending.error, job.pending.step, std::nullopt});
        } else {
            published_.push_back(std::move(job));
        }
    }
    if (!published_.empty() || !written_.empty()) schedule_cycle();
}

}  // namespace postern::upstream
