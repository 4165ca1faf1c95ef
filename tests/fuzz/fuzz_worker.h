/* The worker the targets that drive one connection (fuzz_conn, fuzz_h2) serve from: one loop set
 * up as fe_http_server.c sets up a loop, with a config of tests/fuzz/ (no policy). */
#ifndef FUZZ_WORKER_H
#define FUZZ_WORKER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/fe_config.h"
#include "http/fe_http_conn.h"
#include "hub/fe_relay.h"
#include "log/fe_alog.h"
#include "log/fe_log.h"
#include "net/fe_tls.h"
#include "origin/fe_file.h"

#include "fuzz_check.h"
#include "fuzz_mem.h"

static fe_worker fuzz_w;
static const fe_metrics *fuzz_metrics[1];
static fe_relay_node *fuzz_node;
static fe_tls_clients *fuzz_tls; /* the config's origin TLS contexts, kept as main keeps its own */
static unsigned fuzz_base_handles; /* the loop's own active handles (relay box, ...) */
static int fuzz_trace;

static void fuzz_worker_init(const char *name, const char *config) {
  fuzz_trace = getenv("FUZZ_TRACE") != NULL;
  fe_log_set_level(fuzz_trace ? FE_LOG_DEBUG : FE_LOG_ERROR + 1);
  signal(SIGPIPE, SIG_IGN);
  fe_config cfg;
  char err[256];
  fuzz_tls = fe_tls_clients_new();
  FUZZ_CHECK(fuzz_tls != NULL);
  if (fe_config_load(&cfg, config, fuzz_tls, err, sizeof(err)) < 0) {
    fprintf(stderr, "%s: %s\n", name, err);
    abort();
  }
  fe_cfg_shared *shared = calloc(1, sizeof(*shared));
  FUZZ_CHECK(shared != NULL);
  shared->cfg = cfg;
  shared->refs = 1;
  shared->access_log = fe_alog_open(cfg.access_log, 1, 1u << 20); /* written by its thread */
  FUZZ_CHECK(shared->access_log != NULL);
  fe_worker *w = &fuzz_w;
  FUZZ_CHECK(fe_loop_init(&w->loop, 0) == 0);
  fuzz_node = fe_relay_node_new(1);
  w->id = 0;
  fuzz_metrics[0] = &w->loop.metrics;
  w->all_metrics = fuzz_metrics;
  w->nloops = 1;
  w->gen = fe_gen_new(shared, NULL);
  w->hubs = fe_hubs_new(&w->loop, fuzz_node);
  w->loop.hubs = w->hubs;
  w->loop.files = fe_files_new();
  FUZZ_CHECK(fuzz_node && w->gen && w->hubs && w->loop.files);
  FUZZ_CHECK(fe_relay_box_open(fuzz_node, 0, &w->loop, &fe_hubs_relay_handlers, w->hubs) == 0);
  fuzz_mem_init(&w->loop.uv);
  fuzz_base_handles = w->loop.uv.active_handles;
}

/* ---- the connection's stream: fuzz_mem.h as an fe_net_type (fe_conn_open's seam) ------------ */

static fe_net *fuzz_net; /* the connection's stream, from its first call until it is closed */

static fe_net *fuzz_net_of(fe_net *n) {
  FUZZ_CHECK(fuzz_net == NULL || fuzz_net == n);
  return fuzz_net = n;
}

/* A read in a buffer of exactly its size, so that ASan sees a read past it. */
static void fuzz_net_deliver(ssize_t nread, const char *data) {
  char *buf = NULL;
  if (nread > 0) {
    buf = malloc((size_t)nread);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, (size_t)nread);
  }
  fuzz_net->on_read(fuzz_net, nread, buf);
  free(buf);
}

static int fuzz_net_read_start(fe_net *n) {
  fuzz_net_of(n);
  fuzz_mem_set_reading(1);
  return 0;
}

static void fuzz_net_read_stop(fe_net *n) {
  fuzz_net_of(n);
  fuzz_mem_set_reading(0);
}

static int fuzz_net_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs) {
  fuzz_net_of(n);
  return fuzz_mem_try(bufs, nbufs);
}

static void fuzz_net_written(void *req, int status) {
  fe_net_write *w = req;
  w->cb(w, status);
}

static int fuzz_net_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs) {
  fuzz_net_of(n);
  return fuzz_mem_write(w, fuzz_net_written, bufs, nbufs);
}

static size_t fuzz_net_queued(const fe_net *n) {
  (void)n;
  return fuzz_m.queued;
}

static void fuzz_net_on_closed(uv_handle_t *h) {
  fe_net *n = h->data;
  fuzz_mem_closed();
  fuzz_net = NULL;
  if (n->on_close)
    n->on_close(n);
}

static void fuzz_net_close(fe_net *n, int reset) {
  (void)reset; /* the bytes that landed stay readable, as an AF_UNIX socket's do */
  fuzz_net_of(n);
  fuzz_mem_closing();
  uv_close((uv_handle_t *)&n->tcp, fuzz_net_on_closed); /* never opened: only the handle */
}

static void fuzz_net_connected(fe_net *n) {
  (void)n;
  FUZZ_CHECK(!"the in-memory stream is a server's: it never connects");
}

static const fe_net_type fuzz_net_type = {
    .name = "fuzz-mem",
    .read_start = fuzz_net_read_start,
    .read_stop = fuzz_net_read_stop,
    .try_writev = fuzz_net_try_writev,
    .writev = fuzz_net_writev,
    .queued = fuzz_net_queued,
    .close = fuzz_net_close,
    .connected = fuzz_net_connected,
};

/* ---- the worker ------------------------------------------------------------------------------- */

/* The connection, while open: w->conns holds at most this one. */
static fe_conn *fuzz_conn(void) {
  return fuzz_w.conns;
}

/* How the i-th turn of a loop that waits for the connection runs the loop: without waiting while
 * its writes wait for the client to read (the client reads between turns), else waiting for what
 * it waits for (an origin's refusal, a timer). */
static uv_run_mode fuzz_worker_run_mode(int i) {
  return i < 4 || fuzz_m.head ? UV_RUN_NOWAIT : UV_RUN_ONCE;
}

/* A connection on a new in-memory stream (fuzz_mem.h) whose client leaves at most `cap` bytes
 * unread (SIZE_MAX: no bound). */
static void fuzz_worker_open(const fe_conn_kind *kind, size_t cap) {
  fuzz_mem_reset(fuzz_net_deliver, cap);
  FUZZ_CHECK(fe_conn_open(&fuzz_w, &fuzz_net_type, kind) != NULL);
}

/* The client is done: it ends its side of the stream, which closes the connection; that must
 * go, with every answer read; then the live streams end and the loop must hold no handle of the
 * input. */
static void fuzz_worker_finish(void) {
  fuzz_mem_shutdown();
  for (int i = 0; i < 10000 && (fuzz_w.conn_handles > 0 || !fuzz_m.eof); i++) {
    uv_run(&fuzz_w.loop.uv, fuzz_worker_run_mode(i));
    fuzz_mem_read();
  }
  FUZZ_CHECK(fuzz_w.conn_handles == 0 && fuzz_w.conns == NULL && fuzz_m.eof);
  fe_hubs_end_all(fuzz_w.hubs);
  for (int i = 0; i < 10000 && fuzz_w.loop.uv.active_handles > fuzz_base_handles; i++)
    uv_run(&fuzz_w.loop.uv, i < 4 ? UV_RUN_NOWAIT : UV_RUN_ONCE);
  uv_run(&fuzz_w.loop.uv, UV_RUN_NOWAIT); /* deferred frees */
  FUZZ_CHECK(fuzz_w.loop.uv.active_handles == fuzz_base_handles);
}

#endif
