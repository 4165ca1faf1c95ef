/*
 * fe_loop: the per-loop context. One process runs one libuv loop per worker thread; everything
 * mutable on the request path belongs to one loop and is reached from it: its counters, its read
 * buffer, its request ids, its hub table, and the list of objects waiting to be freed.
 *
 * Later turns: work too long for one turn (a fan-out pass over thousands of viewers) is done in
 * slices; between two slices the loop polls for I/O, so accepts and request heads are served
 * in between (as libuv bounds its reads per wakeup). fe_loop_later() queues the next slice.
 *
 * Deferred teardown: an object that must not be freed inside one of its own callbacks (a hub, as
 * valkey's clients) is queued with fe_loop_defer() and freed just before the loop next waits for
 * I/O (a uv_prepare handle, like valkey's beforeSleep), when no caller up the stack uses it.
 */
#ifndef FE_LOOP_H
#define FE_LOOP_H

#include <stdint.h>
#include <uv.h>

#include "metrics/fe_metrics.h"

#define FE_LOOP_RBUF_SIZE 65536
#define FE_LOOP_LAG_PROBE_MS 50
#define FE_LOOP_BIG_BUF (256u << 10) /* fe_loop_big_get's buffers */
#define FE_LOOP_BIG_KEEP 16          /* free ones a loop keeps for reuse */

struct fe_hubs;
struct fe_files;
struct fe_vod_node;

/** A queued teardown: embedded in the object; `fn` frees it. */
typedef struct fe_deferred {
  struct fe_deferred *next;
  void (*fn)(struct fe_deferred *d);
  int queued;
} fe_deferred;

/** A slice of work queued for the loop's next turn: embedded in its object; `fn` runs it once. */
typedef struct fe_later {
  struct fe_later *next, *prev;
  void (*fn)(struct fe_later *t);
  int queued;
} fe_later;

/**
 * Work posted to a loop from any thread (fe_loop_post): `fn` runs once on that loop's thread, or
 * with `cancelled` set when the loop closed first (then it must only let go of what it holds).
 * Embedded in its object; the poster owns the memory.
 */
typedef struct fe_task {
  struct fe_task *next;
  void (*fn)(struct fe_task *t);
  int cancelled;
} fe_task;

typedef struct fe_loop {
  uv_loop_t uv;          /* first: fe_loop_of() recovers the context from its libuv loop */
  int id;                /* 0 .. workers-1 */
  fe_metrics metrics;    /* written by this loop only */
  uint64_t next_request; /* request ids: (n << 8) | id, unique in the process */
  struct fe_hubs *hubs;  /* the live streams of this loop (hub/) */
  struct fe_files *files; /* the node's loaded FLV files (origin/fe_file), shared by every loop */
  struct fe_vod_node *vod; /* the node's VOD caches (vod/), shared by every loop */
  struct fe_health *health; /* the node's origin health marks (origin/fe_health), shared by every loop */
  uv_prepare_t defer_prepare;
  fe_deferred *deferred;
  uv_idle_t later_idle;  /* active while slices are queued: the loop polls without waiting */
  fe_later *later_head, *later_tail;
  uint32_t nlater;
  void *big_free[FE_LOOP_BIG_KEEP]; /* FE_LOOP_BIG_BUF buffers kept for reuse */
  int nbig_free;
  int closed;            /* fe_loop_close is done: buffers given back are freed */
  uv_timer_t lag_probe;  /* fires every FE_LOOP_LAG_PROBE_MS: how late it fires is the loop lag */
  uint64_t lag_last_ns;
  /* tasks from other threads: under tasks_mu */
  uv_mutex_t tasks_mu;
  uv_async_t tasks_async;
  fe_task *tasks, *tasks_tail;
  int tasks_open;
  /* stream counters of the hubs this loop freed, by resource slot: read on this loop only */
  fe_stream_stats retired[FE_METRICS_RES_SLOTS];
  /* Every read of this loop lands here and is consumed before the next read. */
  char rbuf[FE_LOOP_RBUF_SIZE];
  /* TLS streams (net/fe_tls): a record's plaintext for the reader, and small pieces of a write
   * gathered into one record. Each is consumed before the loop does anything else. */
  char tls_in[16384];
  char tls_stage[16384];
} fe_loop;

/** The context of a loop made by fe_loop_init(). */
static inline fe_loop *fe_loop_of(uv_loop_t *uv) {
  return (fe_loop *)uv;
}

/** Initialises the loop and its context. Returns 0 or a libuv error. */
int fe_loop_init(fe_loop *l, int id);
/** Runs what is deferred, closes the loop's own handles and the loop (after every other handle). */
void fe_loop_close(fe_loop *l);
/** Queues d->fn(d) for the loop's next safe point; queuing twice is a no-op. */
void fe_loop_defer(fe_loop *l, fe_deferred *d, void (*fn)(fe_deferred *d));
/** Queues t->fn(t) for the loop's next turn, after it has polled for I/O; queuing twice is a no-op. */
void fe_loop_later(fe_loop *l, fe_later *t, void (*fn)(fe_later *t));
/** Takes t off the queue if it is there (its object is going away). */
void fe_loop_later_cancel(fe_loop *l, fe_later *t);
/**
 * Runs t->fn(t) on loop `l`'s thread (any thread may call this). Returns 0, or UV_ECANCELED when
 * the loop has closed its mailbox (t is then untouched and the caller's again).
 */
int fe_loop_post(fe_loop *l, fe_task *t, void (*fn)(fe_task *t));
/**
 * A FE_LOOP_BIG_BUF buffer (NULL when out of memory), and back. Reused on the loop: a fresh one
 * per request would be an mmap, page faults on first touch and an munmap each time.
 */
void *fe_loop_big_get(fe_loop *l);
void fe_loop_big_put(fe_loop *l, void *p);
/** A new request id, unique across loops. */
uint64_t fe_loop_request_id(fe_loop *l);
/** libuv's alloc callback for every read: the loop's shared read buffer. */
void fe_loop_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

#endif
