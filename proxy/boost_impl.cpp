// The compiled part of Boost.Asio and Asio SSL, built once here (BOOST_ASIO_SEPARATE_COMPILATION)
// instead of in every translation unit that includes Asio; and of Boost.URL (the admin API's
// request targets), which Debian ships without a library.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/url/src.hpp>
