// The server: I/O threads (one io_context each, one coroutine per connection), the listeners and
// their accept loops, the route targets, signal handling and graceful shutdown.
//
// Threads: `server.threads` I/O threads run sessions; each outbox has a storage thread for the
// blocking file I/O.
// Shutdown (SIGTERM/SIGINT): stop accepting, let open transactions finish for
// `server.shutdown_grace`, then close every session with 421 and return 0.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "proxy/config/config.hpp"

namespace postern::server {

class Server {
  public:
    explicit Server(const config::Config& config);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Blocks until shutdown. Returns the process exit code; start-up failures (a port in use, an
    // outbox that cannot be created) are logged and give 1.
    int run();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postern::server
