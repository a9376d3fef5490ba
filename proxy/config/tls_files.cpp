// Server TLS contexts; see tls_files.hpp.
#include "proxy/config/tls_files.hpp"

#include <openssl/err.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace postern::config {

namespace {

// The most recent OpenSSL error, as text ("no such file", "key values mismatch").
std::string openssl_reason() {
    unsigned long code = 0;
    unsigned long last = 0;
    while ((code = ERR_get_error()) != 0) last = code;
    if (last == 0) return "unknown OpenSSL error";
    const char* reason = ERR_reason_error_string(last);
    return reason ? reason : "OpenSSL error " + std::to_string(last);
}

}  // namespace

SslCtxPtr make_server_tls_context(const ListenerConfig& l, std::string& error) {
    ERR_clear_error();
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) {
        error = "cannot create a TLS context: " + openssl_reason();
        return nullptr;
    }
    // An encrypted private key fails to load instead of prompting on the terminal.
    SSL_CTX_set_default_passwd_cb(ctx.get(), [](char*, int, int, void*) { return 0; });
    const int min_version = l.min_tls_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx.get(), min_version);
    // No renegotiation (a DoS vector, and nothing SMTP needs); the server picks the cipher.
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                       SSL_OP_NO_COMPRESSION);
    for (auto [what, file] :
         {std::pair{"certificate", &l.certificate}, std::pair{"private key", &l.private_key}}) {
        if (::access(file->c_str(), R_OK) != 0) {
            error = std::string("cannot read the ") + what + " \"" + *file +
                    "\": " + std::strerror(errno);
            return nullptr;
        }
    }
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), l.certificate.c_str()) != 1) {
        error = "cannot load the certificate \"" + l.certificate + "\": " + openssl_reason();
        return nullptr;
    }
    const bool key_loaded =
        SSL_CTX_use_PrivateKey_file(ctx.get(), l.private_key.c_str(), SSL_FILETYPE_PEM) == 1;
    const std::string key_problem = key_loaded ? std::string() : openssl_reason();
    if (!key_loaded && key_problem != "key values mismatch") {
        error = "cannot load the private key \"" + l.private_key + "\": " + key_problem;
        return nullptr;
    }
    if (!key_loaded || SSL_CTX_check_private_key(ctx.get()) != 1) {
        error = "the private key \"" + l.private_key + "\" does not belong to the certificate \"" +
                l.certificate + "\"";
        return nullptr;
    }
    if (!l.ciphers.empty() && SSL_CTX_set_cipher_list(ctx.get(), l.ciphers.c_str()) != 1) {
        error = "no usable cipher in \"" + l.ciphers + "\": " + openssl_reason();
        return nullptr;
    }
    if (!l.client_ca.empty()) {
        if (::access(l.client_ca.c_str(), R_OK) != 0) {
            error =
                "cannot read the client CA file \"" + l.client_ca + "\": " + std::strerror(errno);
            return nullptr;
        }
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(l.client_ca.c_str());
        if (!names || SSL_CTX_load_verify_locations(ctx.get(), l.client_ca.c_str(), nullptr) != 1) {
            if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
            error = "no CA certificate in the client CA file \"" + l.client_ca +
                    "\": " + openssl_reason();
            return nullptr;
        }
        SSL_CTX_set_client_CA_list(ctx.get(), names);
        // A certificate is asked for, never required; one that does not verify only leaves
        // the client unauthenticated (the session checks the result after the handshake).
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
    }
    // Sessions resume across connections of one process (the cache is per context).
    SSL_CTX_set_session_id_context(ctx.get(), reinterpret_cast<const unsigned char*>("postern"), 7);
    return ctx;
}

}  // namespace postern::config
