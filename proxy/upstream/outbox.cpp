// Outbox target; see outbox.hpp.
#include "proxy/upstream/outbox.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

namespace postern::upstream {

namespace asio = boost::asio;

Outbox::Outbox(std::string dir)
    : writer_(std::move(dir)), work_(asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}

Outbox::~Outbox() {
    work_.reset();
    thread_.join();
}

asio::awaitable<StoreResult> Outbox::store(const queue::Envelope& envelope,
                                           const std::string& header, const std::string& body) {
    const std::string json = queue::envelope_to_json(envelope, header.size() + body.size());
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
                done(StoreResult{job.pending.error, job.pending.step});
                return;
            }
            batch_.push_back(std::move(job));
            if (!commit_posted_) {
                // Runs after every job already queued: they all join this commit.
                commit_posted_ = true;
                asio::post(io_, [this] { commit_batch(); });
            }
        });
    };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(StoreResult)>(
        initiate, asio::use_awaitable);
}

void Outbox::commit_batch() {
    commit_posted_ = false;
    std::vector<Job> jobs;
    jobs.swap(batch_);
    std::vector<OutboxWriter::Pending*> pending;
    pending.reserve(jobs.size());
    for (Job& job : jobs) pending.push_back(&job.pending);
    writer_.commit(pending);
    for (Job& job : jobs) job.done(StoreResult{job.pending.error, job.pending.step});
}

}  // namespace postern::upstream
