/*
 * fe_net: a byte stream behind one small interface (read, writev now or queued, close, reset), as
 * valkey's connection.h: a table of functions per connection type (`fe_net_type`), plain TCP here
 * and TLS (mbedTLS) in fe_tls.c. The server's connections and the origin client call only the
 * fe_net_* functions below, which dispatch through the stream's type, so they do not know whether
 * their bytes are encrypted. Listening sockets and outgoing connects live here too: a listener with
 * a TLS context (fe_tls.h) makes TLS streams, fe_net_use_tls() makes a connect a TLS client.
 *
 * The caller owns an fe_net's memory and frees it only in the close callback (libuv's rule). Reads
 * land in the loop's shared read buffer (fe_loop) and are valid only during the read callback.
 * Timeouts stay with the owner: the server sweeps deadlines every 250 ms instead of arming a timer
 * per connection, and the origin client keeps one timer for connect, head and stall.
 */
#ifndef FE_NET_H
#define FE_NET_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "loop/fe_loop.h"

typedef struct fe_net fe_net;

/** Bytes read (buffer borrowed for the call), or UV_EOF / a libuv error. */
typedef void (*fe_net_read_cb)(fe_net *n, ssize_t nread, const char *data);
typedef void (*fe_net_close_cb)(fe_net *n);
typedef void (*fe_net_connect_cb)(fe_net *n, int status);

/* Errors of TLS streams, beyond libuv's (negative). */
enum {
  FE_NET_ETLS = -5001,       /* the TLS handshake failed (protocol, no common suite, alert) */
  FE_NET_ETLSVERIFY = -5002, /* the peer's certificate was not verified (a TLS client) */
  FE_NET_EPLAIN = -5003,     /* plain HTTP on a TLS port: answered 400, then this to the reader */
};

/** A queued write; the caller's memory until its callback. */
typedef struct fe_net_write {
  uv_write_t req;
  fe_net *net;
  void (*cb)(struct fe_net_write *w, int status);
  /* a TLS stream's bookkeeping: the buffers still to encrypt (a copy of the array) */
  struct fe_net_write *next;
  uv_buf_t *bufs;
  unsigned nbufs, i;
  int encrypted; /* all of it is in records: done once they are flushed */
} fe_net_write;

/**
 * A connection type: the calls every stream answers (valkey's ConnectionType). The fe_net_*
 * functions of the same names dispatch here; their comments say what each one does.
 */
typedef struct fe_net_type {
  const char *name;
  int (*read_start)(fe_net *n);
  void (*read_stop)(fe_net *n);
  int (*try_writev)(fe_net *n, const uv_buf_t *bufs, unsigned nbufs);
  int (*writev)(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs);
  size_t (*queued)(const fe_net *n);
  void (*close)(fe_net *n, int reset);
  /** A connected socket is open under it: TLS handshakes from here; the owner hears on_connect. */
  void (*connected)(fe_net *n);
} fe_net_type;

extern const fe_net_type fe_net_tcp;

struct fe_tls_conn;
struct fe_tls_server;
struct fe_tls_client;

struct fe_net {
  uv_tcp_t tcp;
  const fe_net_type *type; /* fe_net_tcp, or TLS once accepted on a TLS listener or fe_net_use_tls */
  void *data;           /* the owner's */
  fe_net_read_cb on_read;
  fe_net_close_cb on_close;
  fe_net_connect_cb on_connect;
  uv_connect_t connect;
  int open;             /* initialised: must be closed */
  int connecting;       /* fe_net_connect started and on_connect has not run yet */
  struct fe_tls_conn *tls; /* a TLS stream's state (fe_tls.c); NULL for TCP */
};

/** Prepares a stream on the loop. */
void fe_net_init(fe_loop *l, fe_net *n, void *data);
/** Starts delivering reads to cb. Returns 0 or a libuv error. */
int fe_net_read_start(fe_net *n, fe_net_read_cb cb);
void fe_net_read_stop(fe_net *n);
/** Writes what the socket takes now. Returns the bytes written (0 when it takes nothing) or an error. */
int fe_net_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs);
/** Queues the buffers (kept by the caller until cb). Returns 0 or an error (then cb never runs). */
int fe_net_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs,
                  void (*cb)(fe_net_write *w, int status));
/**
 * The socket a file may be sent to with sendfile(2): the kernel copies straight from the page
 * cache. -1 when the stream transforms its bytes (TLS): then read and write them instead.
 */
int fe_net_sendfile_fd(const fe_net *n);
/** Bytes of queued writes the kernel has not taken yet: it shrinks as the peer reads. */
size_t fe_net_queued(const fe_net *n);
/** Closes; queued writes end with UV_ECANCELED; cb runs from the loop, after which n may be freed. */
void fe_net_close(fe_net *n, fe_net_close_cb cb);
/** Closes with a reset instead of a FIN: what is still queued is dropped, not delivered. */
void fe_net_reset(fe_net *n, fe_net_close_cb cb);
/** SO_SNDBUF. */
void fe_net_send_buffer(fe_net *n, int bytes);
void fe_net_nodelay(fe_net *n);
/** The peer's and our own IP address as text. */
int fe_net_peer_ip(fe_net *n, char *out, size_t cap);
int fe_net_local_ip(fe_net *n, char *out, size_t cap);
/**
 * Test seam (tests/fuzz/fuzz_tls.c): makes n (initialised with fe_net_init) the stream of an
 * already connected stream socket, e.g. one end of a socketpair(AF_UNIX), which is taken over.
 * Returns 0 or a libuv error. The server's own streams come from fe_net_accept only.
 */
int fe_net_open(fe_net *n, int fd);
/**
 * Connects to addr; cb gets 0 or a libuv error (for a TLS client: once the handshake is done, or
 * FE_NET_ETLS / FE_NET_ETLSVERIFY). Returns 0 or an error (then cb never runs).
 */
int fe_net_connect(fe_net *n, const struct sockaddr *addr, fe_net_connect_cb cb);
/**
 * Makes n (initialised, not connected yet) a TLS client of `ctx` (fe_tls.h; referenced while n
 * lives) that sends `server_name` as SNI and verifies the certificate against it when ctx
 * verifies. Returns 0 or UV_ENOMEM.
 */
int fe_net_use_tls(fe_net *n, struct fe_tls_client *ctx, const char *server_name);
/** 1 for a TLS stream. */
int fe_net_is_tls(const fe_net *n);
/** A TLS stream's protocol version and cipher suite once its handshake is done ("" otherwise). */
const char *fe_net_tls_version(const fe_net *n);
const char *fe_net_tls_cipher(const fe_net *n);
/** The ALPN protocol agreed ("" when none or not TLS): room for h2 on the same listener. */
const char *fe_net_alpn(const fe_net *n);

/* ---- listening ----------------------------------------------------------------------------- */

/** How connections reach the loops of one address. */
enum { FE_NET_REUSEPORT, FE_NET_SHARED };

/**
 * Binds "host:port" ("[v6]:port") for n loops: with FE_NET_REUSEPORT n sockets with SO_REUSEPORT on
 * one port (port 0 is chosen once), with FE_NET_SHARED one socket that every loop polls. Writes the
 * descriptors into fds (dup'ed for SHARED) and the bound address as text into bound. Returns 0 or a
 * libuv error with a message in err.
 */
int fe_net_bind(const char *spec, int n, int mode, int *fds, char *bound, size_t bcap, char *err,
                size_t errlen);

typedef struct fe_net_listener {
  uv_tcp_t tcp;
  void (*on_accept)(struct fe_net_listener *ls);
  void *data;
  /** NULL: plain TCP. Else the TLS context its connections start with (a reference the listener
   * holds; changed on the listener's loop with fe_net_listener_tls, e.g. at a reload). */
  struct fe_tls_server *tls;
} fe_net_listener;

/** Listens on a descriptor from fe_net_bind (taken over). Returns 0 or a libuv error. */
int fe_net_listen(fe_loop *l, fe_net_listener *ls, int fd, void (*on_accept)(fe_net_listener *ls));
/**
 * Accepts one pending connection into n (initialised with fe_net_init): a TLS stream when the
 * listener has a TLS context (its handshake runs before the first read is delivered). Returns 0 or
 * an error.
 */
int fe_net_accept(fe_net_listener *ls, fe_net *n);
/** Sets the TLS context of the listener's new connections (referenced; the old one released). */
void fe_net_listener_tls(fe_net_listener *ls, struct fe_tls_server *tls);
/** Closes the listener (and releases its TLS context). */
void fe_net_listener_close(fe_net_listener *ls, uv_close_cb cb);

#endif
