// A listener's TLS settings loaded into an OpenSSL server context: the certificate chain, the
// private key (checked against the certificate), the minimum version and the cipher list.
// check-config uses it to report problems before start-up; the server, to serve TLS.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "proxy/config/config.hpp"

namespace postern::config {

struct SslCtxFree {
    void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// Null, with the reason in `error` ("cannot read certificate "x.pem": ..."), when the files
// or settings are unusable.
SslCtxPtr make_server_tls_context(const ListenerConfig& listener, std::string& error);

}  // namespace postern::config
