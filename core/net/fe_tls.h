/*
 * fe_tls: TLS (mbedTLS) as another fe_net connection type, and the contexts it runs under.
 *
 * A server context holds a listener's certificates (a default one and more chosen by SNI), its
 * session-ticket keys and its mbedTLS config; it is made when a config is loaded (on the control
 * thread), shared read-only by every loop, and refcounted (atomic): a listener and every stream
 * accepted under it hold a reference, so a reload that brings new certificates lets the streams
 * already open finish under the old ones while new handshakes use the new ones.
 *
 * A client context (an origin's) holds a CA chain, or none when verification is off. They live in
 * the node's fe_tls_clients set until it is freed: one per (ca_file, verify, file version), so an
 * origin never holds a reference and a reload that changes a CA file makes a new one.
 *
 * Debian 12's mbedTLS is 2.28: TLS 1.2 only (no TLS 1.3). Only ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305 is offered. Everything mbedTLS-specific stays in fe_tls.c.
 */
#ifndef FE_TLS_H
#define FE_TLS_H

#include <stddef.h>

#include "net/fe_net.h"

typedef struct fe_tls_server fe_tls_server;
typedef struct fe_tls_client fe_tls_client;
typedef struct fe_tls_clients fe_tls_clients;

/** One certificate of a listener: PEM files of the chain and its key. `name` is the SNI name it
 * answers ("example.com" or "*.example.com"), NULL for the default one. */
typedef struct fe_tls_cert_spec {
  const char *name;
  const char *cert;
  const char *key;
} fe_tls_cert_spec;

/**
 * Loads certs[0] (the default: unknown or absent SNI names get it) and certs[1..n-1] (by SNI
 * name). Returns a context with one reference, or NULL with a message in err (a file that does
 * not load, a key that does not match its certificate).
 */
fe_tls_server *fe_tls_server_new(const fe_tls_cert_spec *certs, int n, char *err, size_t errlen);
/** Whether ALPN offers h2 before http/1.1 (on when made). Only before the context is in use. */
void fe_tls_server_http2(fe_tls_server *s, int on);
void fe_tls_server_ref(fe_tls_server *s);
/** Releases a reference; NULL is ignored. */
void fe_tls_server_unref(fe_tls_server *s);

/**
 * The node's client contexts (origins'): one per (ca_file, verify, file version), made by config
 * loads only, never by a loop (a CA bundle takes milliseconds to read), kept until the set is
 * freed. An origin a policy names uses its resource's context. Made before the first config load; freed after every loop and every config
 * that holds one of its contexts is gone. NULL when out of memory.
 */
fe_tls_clients *fe_tls_clients_new(void);
void fe_tls_clients_free(fe_tls_clients *set);
/**
 * The client context of `set` for origins: verifying against the PEM bundle `ca_file` (NULL: the
 * system's, /etc/ssl/certs/ca-certificates.crt), or not verifying at all when `verify` is 0.
 * NULL with a message in err when the CA file does not load (or set is NULL).
 */
fe_tls_client *fe_tls_client_get(fe_tls_clients *set, const char *ca_file, int verify, char *err,
                                 size_t errlen);

/** fe_net's side: makes the stream n just accepted a TLS server stream of s (referenced). */
int fe_tls_accept(fe_net *n, fe_tls_server *s);

#endif
