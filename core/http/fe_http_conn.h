/*
 * Internal to http/: a loop's worker (its config generation and connections) and the client
 * connection: its lifetime, request parsing (llhttp), send queue, finite responses and the access
 * log. A complete request goes to its listener's `route` function (the public or the admin router); the connection
 * code knows no resource kind.
 */
#ifndef FE_HTTP_CONN_H
#define FE_HTTP_CONN_H

#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "config/fe_config.h"
#include "hub/fe_hub.h"
#include "loop/fe_loop.h"
#include "log/fe_alog.h"
#include "lua/fe_lua.h"
#include "net/fe_net.h"
#include "str/fe_str.h"

#define FE_MAX_HEADERS 48

enum { FE_CS_READING, FE_CS_WAITING, FE_CS_LIVE, FE_CS_CLOSING };

/** A config as loaded, shared read-only by every loop's generation of it. */
typedef struct fe_cfg_shared {
  fe_config cfg;
  fe_alog *access_log; /* NULL: none; shared with the generations before it when the path is the same */
  int refs;         /* atomic: one per loop generation */
} fe_cfg_shared;

/**
 * A loop's generation: the shared config and this loop's own Lua state for it. Requests hold a
 * reference to the generation they were routed under, so a reload never pulls settings or a Lua
 * state from under a viewer. Loop-local refcount.
 */
typedef struct fe_gen {
  const fe_config *cfg;
  fe_cfg_shared *shared;
  fe_lua *lua; /* may be NULL: no resource has a policy */
  int refs;
} fe_gen;

/** Takes a reference of `shared` and `lua` over. NULL when out of memory. */
fe_gen *fe_gen_new(fe_cfg_shared *shared, fe_lua *lua);
void fe_gen_ref(fe_gen *g);
void fe_gen_unref(fe_gen *g);
void fe_cfg_shared_ref(fe_cfg_shared *s);
void fe_cfg_shared_unref(fe_cfg_shared *s);

struct fe_conn;
struct fe_server;
struct fe_h2;
struct fe_h2_stream;

/**
 * What a listener's connections are: who answers their requests, and whether a request body is
 * kept for it. Static and read-only; every connection points at its listener's.
 */
typedef struct fe_conn_kind {
  /** Answers a complete request; returns 0 to read the next one or HPE_PAUSED. */
  int (*route)(struct fe_conn *c);
  /** Request body bytes kept in c->body for route, beyond which the request is refused with
   * 413 and the connection closed. 0: bodies are parsed past and never kept (public listeners). */
  uint32_t body_max;
  int json_errors; /* the connection layer's own refusals (400, 413, 431 ...) answer JSON */
  int unlimited;   /* not shed by max_connections: the admin API stays reachable on a full node */
  int http2;       /* speaks HTTP/2 when TLS's ALPN agreed on h2 (http/fe_http2.h) */
  int h2c;         /* and on cleartext, to a client that opens with HTTP/2's preface (prior knowledge)
                      or asks for it with HTTP/1.1's Upgrade: h2c */
} fe_conn_kind;

/** One loop's share of the server; lives on that loop's thread. */
typedef struct fe_worker {
  fe_loop loop;               /* first */
  struct fe_server *srv;
  int id;
  fe_gen *gen;                /* the generation new requests use */
  fe_hubs *hubs;
  const fe_metrics *const *all_metrics; /* every loop's counters, for node-wide limits and /metrics */
  fe_loop *const *all_loops;  /* every loop, for tasks posted to each (the admin API) */
  int nloops;
  uint64_t started;           /* uv_hrtime() when the server started (for uptime) */
  struct fe_conn *conns;      /* every open connection */
  int conn_handles;           /* connection handles not yet closed (closing ones included) */
  int stopping;
  void (*drained)(struct fe_worker *w); /* the last connection closed while stopping */
} fe_worker;

/*
 * A client connection, or one request of an HTTP/2 connection (h2s set): a stream is an fe_conn
 * too, whose net is unused, so the router, the policies, the kinds and the access log take either.
 * Where their answers reach the wire the two differ: fe_conn_respond, fe_conn_answer_*, and the
 * live and VOD writers hand an HTTP/2 stream's head and body to http/fe_http2.h instead.
 */
typedef struct fe_conn {
  fe_net net;                 /* unused by an HTTP/2 stream */
  fe_worker *w;
  const fe_conn_kind *kind;
  struct fe_h2 *h2;           /* the connection speaks HTTP/2: its session (fe_http2.c) */
  struct fe_h2_stream *h2s;   /* this is a request of an HTTP/2 connection: its stream */
  int proto_checked;          /* the first bytes were looked at for HTTP/2 (ALPN, preface) */
  struct fe_conn *prev, *next;
  llhttp_t parser;
  int state;
  uint64_t deadline;          /* loop ms by which the request head must be in (0: none) */
  /* One request at a time: while its answer is written, the parser is paused, and what the
   * client sent after it waits here (at most one read) with reading stopped. */
  int sending;                /* writes of finite answers in flight */
  int read_stopped;
  int parsing;                /* inside llhttp_execute: an answer made now may be written at once */
  int eof_held;               /* the client ended its side while an answer was written */
  char *pending;
  uint32_t pending_off, pending_len;
  uint64_t send_progress;     /* loop ms when the answer's bytes last moved */
  size_t send_queued;         /* bytes the kernel had not taken then */
  fe_gen *gen;                /* the generation of the current request */
  /* the request head, as bytes with spans into them */
  char *buf;
  uint32_t len, cap;
  fe_span url;
  fe_header hdr[FE_MAX_HEADERS];
  int nhdr;
  int hdr_part;               /* 1 while in a field, 2 while in a value */
  int head_done;              /* the head is complete: what follows is body and trailers */
  int h2c_upgrade;            /* a bodyless HTTP/1.1 request asking Upgrade: h2c on an h2c listener */
  char *body;                 /* the request body, when the kind keeps bodies */
  uint32_t body_len, body_cap;
  int have_method, have_version; /* the request line got that far (for the access log) */
  int refuse_status;          /* the head was refused: 400, 431 or 505 (0: not refused) */
  const char *refuse_why;     /* static text for the answer */
  /* the current request, for policies and the access log */
  uint64_t id;
  int logged;                 /* 1 once the request's log phase ran (0: still to run) */
  int status;
  uint64_t bytes;             /* bytes sent for this request */
  double start;               /* Unix seconds */
  uint64_t start_ns;          /* uv_hrtime() when the request began */
  uint64_t first_byte_ns;     /* uv_hrtime() when its answer's first byte went out (0: not yet) */
  const char *cache_status;
  char *origin;               /* live: the origin URL the stream came from (owned; NULL: none) */
  int origin_status;          /* its status (0: unknown) */
  uint16_t client_port;
  int keyframe_counted;       /* live: the first keyframe's wait is in the histogram */
  fe_req_view view;
  char client_ip[48];
  char server_ip[48];
  char host[128];
  const fe_resource *res;
  /** Runs once when the connection closes while a handler's answer is in progress (VOD): the
   * handler lets go of what it holds for c. Cleared by the handler when its answer ends. */
  void (*on_close)(struct fe_conn *c);
  void *kind_data;            /* the handler's state for the answer in progress */
  /** Swept every 250 ms while set (a live viewer's slowness check). Returns 1 if it closed c. */
  int (*on_sweep)(struct fe_conn *c, uint64_t now);
  /* live */
  fe_viewer viewer;
  fe_net_write wreq;
  int writing;                /* a write of pinned buffers is in flight */
  uint64_t write_since;
  char *head;                 /* the response head, sent with the first writev of media */
  size_t head_len;
  int chunked;                /* HTTP/1.1: chunked framing; 1.0: close-delimited */
  int head_only;
  char chunk_line[24];
} fe_conn;

/** The server's resource names by metrics slot (any thread). */
const fe_metrics_names *fe_server_names(const struct fe_server *s);
/** Configs taken by reload, and reloads that failed, since the start. */
void fe_server_counts(const struct fe_server *s, uint64_t *reloads, uint64_t *failures);
/**
 * Reloads the config on the control loop as SIGHUP does; cb(ud, rc, err) runs later on `home`
 * (0, or -1 with the reason; also -1 when the server stops first). 0, or UV_ENOMEM.
 */
int fe_server_reload_async(struct fe_server *s, fe_loop *home, void (*cb)(void *ud, int rc, const char *err),
                           void *ud);

/** A node-wide gauge: the sum of one fe_metrics field (by offset) over every loop. */
uint64_t fe_worker_sum(const fe_worker *w, size_t field);
/** Accepts a connection of `kind` from a listener of the worker's loop. */
void fe_conn_accept(fe_worker *w, fe_net_listener *ls, const fe_conn_kind *kind);
/**
 * Test seam (tests/fuzz/fuzz_mem.h): a connection on a stream of the caller's own type (the fuzz
 * targets' in-memory stream) instead of a socket accepted from a listener; then exactly as
 * accepted. Returns it, or NULL when out of memory.
 */
fe_conn *fe_conn_open(fe_worker *w, const fe_net_type *type, const fe_conn_kind *kind);
/** Looks a request header up by name (any case); returns its value span or NULL. */
const fe_span *fe_conn_header(const fe_conn *c, const char *name);
/** Queues a complete response with a copied body; closes the connection after it if `close`. */
void fe_conn_respond(fe_conn *c, int status, const char *ctype, const char *extra_headers,
                     const void *body, size_t len, int close);
/** Writes the CORS headers the config asks for into buf; returns the length. */
size_t fe_conn_cors(const fe_conn *c, char *buf, size_t cap);
/** Closes the connection (leaving its hub first). Safe to call twice. */
void fe_conn_close(fe_conn *c);
/** Closes with a reset: what is still queued for it is stale and is not delivered. */
void fe_conn_reset(fe_conn *c);
/** Queues raw bytes (copied) on the connection; `close` closes once they are written. */
void fe_conn_send(fe_conn *c, const void *data, size_t len, int close);
/**
 * A handler's answer written over time (VOD): counts as a write in flight, so the connection reads
 * no further request and send_timeout applies, until fe_conn_answer_end. Then the next request is
 * read (or the connection closes when `close`).
 */
void fe_conn_answer_begin(fe_conn *c);
void fe_conn_answer_end(fe_conn *c, int close);
/**
 * A request assembled elsewhere (an HTTP/2 stream: head, headers, method and version set) begins
 * under the newest generation and goes to the kind's route function; `refuse` (431, 400) answers
 * it with that status and `why` instead.
 */
void fe_conn_dispatch(fe_conn *c, int refuse, const char *why);
/** The answer's first byte is being written now: its time counts once per request. */
void fe_conn_first_byte(fe_conn *c);
/**
 * The connection's TLS version and cipher suite for the access log, "" for plain TCP. A seam for
 * net/'s TLS streams: the only place the log asks about TLS.
 */
void fe_conn_tls(const fe_conn *c, const char **version, const char **cipher);
/** The request is over: runs the log phase and writes the access log line, once. */
void fe_conn_request_done(fe_conn *c);
/** 1 when the request lets the connection stay open for the next one. */
int fe_conn_keep_alive(const fe_conn *c);
/** Sweep: request heads past request_timeout, answers not moving for send_timeout, and each
 * connection's own check. */
void fe_conn_sweep(fe_worker *w, uint64_t now);
/** Stop: closes idle connections; the others finish what they do. */
void fe_conn_stop_idle(fe_worker *w);
/** The reason phrase for a status. */
const char *fe_http_reason(int status);

#endif
