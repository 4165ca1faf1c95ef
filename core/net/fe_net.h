/*
 * fe_net: a byte stream behind one small interface (read, writev now or queued, close, reset), as
 * valkey's connection.h: the server's connections and the origin client use nothing else, so TLS
 * becomes another implementation of the same calls. Listening sockets and outgoing connects live
 * here too.
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

/** A queued write; the caller's memory until its callback. */
typedef struct fe_net_write {
  uv_write_t req;
  fe_net *net;
  void (*cb)(struct fe_net_write *w, int status);
} fe_net_write;

struct fe_net {
  uv_tcp_t tcp;
  void *data;           /* the owner's */
  fe_net_read_cb on_read;
  fe_net_close_cb on_close;
  fe_net_connect_cb on_connect;
  uv_connect_t connect;
  int open;             /* initialised: must be closed */
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
 * Test seam (tests/fuzz/fuzz_conn.c): makes n (initialised with fe_net_init) the stream of an
 * already connected stream socket, e.g. one end of a socketpair(AF_UNIX), which is taken over.
 * Returns 0 or a libuv error. The server's own streams come from fe_net_accept only.
 */
int fe_net_open(fe_net *n, int fd);
/** Connects to addr; cb gets 0 or a libuv error. Returns 0 or an error (then cb never runs). */
int fe_net_connect(fe_net *n, const struct sockaddr *addr, fe_net_connect_cb cb);

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
} fe_net_listener;

/** Listens on a descriptor from fe_net_bind (taken over). Returns 0 or a libuv error. */
int fe_net_listen(fe_loop *l, fe_net_listener *ls, int fd, void (*on_accept)(fe_net_listener *ls));
/** Accepts one pending connection into n (initialised with fe_net_init). Returns 0 or an error. */
int fe_net_accept(fe_net_listener *ls, fe_net *n);
void fe_net_listener_close(fe_net_listener *ls, uv_close_cb cb);

#endif
