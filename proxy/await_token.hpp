// The completion token of postern's coroutines: co_await op(..., kUseTuple) gives a tuple with
// the error code instead of throwing.
//
// Deferred rather than use_awaitable: use_awaitable starts every operation from a coroutine
// frame of its own; a deferred operation awaited at once is started by the awaiting coroutine
// itself (Asio's awaitable_async_op). About 160 fewer instructions per operation, the same
// results, errors and cancellation (a socket's cancel() still completes the operation with
// operation_aborted).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>

namespace postern {

inline constexpr auto kUseTuple = boost::asio::as_tuple(boost::asio::deferred);

}  // namespace postern
