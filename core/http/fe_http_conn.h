/* Internal to http/: the server, its config generations, and the client connection. */
#ifndef FE_HTTP_CONN_H
#define FE_HTTP_CONN_H

#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "config/fe_config.h"
#include "hub/fe_hub.h"
#include "lua/fe_lua.h"

#define FE_MAX_HEADERS 48

enum { FE_CS_READING, FE_CS_WAITING, FE_CS_LIVE, FE_CS_CLOSING };

/**
 * A config and its policies, as loaded together. Requests hold a reference to the generation they
 * were routed under, so a reload never pulls settings or a Lua state from under a viewer.
 */
typedef struct fe_gen {
  fe_config cfg;
  fe_lua *lua; /* may be NULL: no resource has a policy */
  int refs;
} fe_gen;

void fe_gen_ref(fe_gen *g);
void fe_gen_unref(fe_gen *g);

struct fe_server {
  uv_loop_t *loop;
  fe_gen *gen;                /* the generation new requests use */
  uv_tcp_t *listeners;
  int nlisteners;
  uv_timer_t sweep;
  struct fe_conn *conns;      /* every open connection */
  int conn_handles;           /* connection handles not yet closed (closing ones included) */
  int stopping;
  uv_timer_t grace;
  void (*done)(void *ud);
  void *done_ud;
  int open_handles;           /* closed one by one; the last frees the server */
  int freed;
  FILE *access_log;           /* NULL: none */
  char *access_log_path;
};

typedef struct fe_conn {
  uv_tcp_t tcp;
  struct fe_server *srv;
  struct fe_conn *prev, *next;
  llhttp_t parser;
  int state;
  uint64_t deadline;          /* loop ms by which the request head must be in (0: none) */
  fe_gen *gen;                /* the generation of the current request */
  /* the request head, as bytes with spans into them */
  char *buf;
  uint32_t len, cap;
  fe_span url;
  fe_header hdr[FE_MAX_HEADERS];
  int nhdr;
  int hdr_part;               /* 1 while in a field, 2 while in a value */
  int too_large;
  /* the current request, for policies and the access log */
  uint64_t id;
  int logged;                 /* 1 once the request's log phase ran (0: still to run) */
  int status;
  uint64_t bytes;             /* bytes sent for this request */
  double start;               /* Unix seconds */
  const char *cache_status;
  fe_req_view view;
  char client_ip[48];
  char server_ip[48];
  char host[128];
  /* live */
  fe_viewer viewer;
  const fe_resource *res;
  uv_write_t wreq;
  int writing;                /* a uv_write of pinned buffers is in flight */
  uint64_t write_since;
  int chunked;                /* HTTP/1.1: chunked framing; 1.0: close-delimited */
  int head_only;
  char chunk_line[24];
} fe_conn;

/* fe_http_server.c */
/** Looks a request header up by name (any case); returns its value span or NULL. */
const fe_span *fe_conn_header(const fe_conn *c, const char *name);
/** Queues a complete response with a copied body; closes the connection after it if `close`. */
void fe_conn_respond(fe_conn *c, int status, const char *ctype, const char *extra_headers,
                     const void *body, size_t len, int close);
/** Writes the CORS headers the config asks for into buf; returns the length. */
size_t fe_conn_cors(const fe_conn *c, char *buf, size_t cap);
/** Closes the connection (leaving its hub first). Safe to call twice. */
void fe_conn_close(fe_conn *c);
/** Queues raw bytes (copied) on the connection; `close` closes once they are written. */
void fe_conn_send(fe_conn *c, const void *data, size_t len, int close);
/** The request is over: runs the log phase and writes the access log line, once. */
void fe_conn_request_done(fe_conn *c);
/** The reason phrase for a status. */
const char *fe_http_reason(int status);

/* fe_http_live.c */
/** Serves GET/HEAD of a live stream; the stream name is c->view.stream (fe_live_stream_name). */
void fe_live_serve(fe_conn *c, const fe_resource *res);
/** Validates the stream name of a live path: {prefix}{stream}.flv. */
int fe_live_stream_name(const fe_resource *res, const char *path, size_t len, fe_str *stream);
/** Sweep: cuts a viewer that stayed behind too long. Returns 1 if it closed the connection. */
int fe_live_check_slow(fe_conn *c, uint64_t now);

/* fe_http_static.c */
void fe_static_serve(fe_conn *c, const fe_resource *res, const char *path, size_t path_len);

#endif
