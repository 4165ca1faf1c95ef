/*
 * fe_hub: one live stream on one loop. Keeps a sliding window of ready-to-send tags in refcounted
 * blocks and fans them out to viewers that are cursors into it. Tags come from a source (an origin
 * pull, a relay from the loop that owns the stream, or a test), through the sink calls of
 * fe_source.h; the hub opens none itself: fe_hub_open asks the node's registry whether this loop
 * pulls the stream (then the caller's open_pull makes the pull) or subscribes to the loop that does.
 *
 * The hub knows nothing of HTTP: a viewer transport (http/ implements one) embeds an fe_viewer and
 * passes fe_viewer_ops. The hub calls `wake` when a viewer has something new; the transport then
 * calls fe_hub_viewer_fill() to get iovecs pointing into shared blocks (pinned until
 * fe_hub_viewer_release()), and writes them with one writev. No media is copied per viewer.
 *
 * A hub is never freed inside one of its own callbacks: its teardown is deferred to the loop's
 * next safe point (fe_loop_defer).
 */
#ifndef FE_HUB_H
#define FE_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "hub/fe_relay.h"
#include "loop/fe_loop.h"
#include "origin/fe_source.h"

/** A refcounted run of FLV bytes: one ref per window tag inside it, one per in-flight write. */
typedef struct fe_block {
  uint32_t refs;
  uint32_t len, cap;
  fe_metrics *metrics;    /* the loop's, for the window gauge */
  uint8_t data[];
} fe_block;

/** Drops a reference; the block is freed at zero. */
void fe_block_release(fe_block *b);

typedef struct fe_hub fe_hub;
typedef struct fe_hubs fe_hubs;
typedef struct fe_viewer fe_viewer;

enum { FE_HUB_WANT_AUDIO = 1, FE_HUB_WANT_VIDEO = 2, FE_HUB_WANT_ALL = 3 };
enum { FE_HUB_EFULL = -3001, FE_HUB_ENDED = -3002 };

/** What a viewer transport does when the hub calls it. */
typedef struct fe_viewer_ops {
  /** The stream started: send the response head. `hit` is 0 for the viewer that opened it. */
  void (*start)(fe_viewer *v, int hit);
  /** The stream failed before it started; `v` is already detached. Send status and body. */
  void (*fail)(fe_viewer *v, int status, const char *content_type, const uint8_t *body, size_t len);
  /** There may be something to send (or the stream ended): call fe_hub_viewer_fill when writable. */
  void (*wake)(fe_viewer *v);
  /** Optional: cut the viewer off now (fe_hubs_kick); it must leave the hub before returning. */
  void (*kick)(fe_viewer *v);
} fe_viewer_ops;

#define FE_VIEWER_MAX_PINS 8

/** A viewer's place in a hub. Embedded in the transport's connection; zeroed before join. */
struct fe_viewer {
  const fe_viewer_ops *ops;
  fe_hub *hub;
  fe_viewer *prev, *next;
  uint64_t cursor;       /* sequence number of the next tag to send */
  uint64_t behind_since; /* loop ms when it last fell off the window; 0 while keeping up */
  uint64_t frames_dropped;
  uint8_t want;          /* FE_HUB_WANT_* */
  uint8_t state;         /* internal */
  uint8_t npins;
  uint8_t group;         /* internal: its flush group */
  uint8_t keyframe_sent; /* a fill has handed it a video keyframe */
  fe_stream_stats *stats; /* its stream's counters on this loop, while joined (bytes_out is the
                             transport's to count) */
  fe_block *pins[FE_VIEWER_MAX_PINS];
};

typedef struct fe_hub_opts {
  double window_seconds;   /* media kept beyond the current GOP */
  size_t window_bytes;     /* hard cap on the window; also on what waits for a slow loop */
  uint32_t merge_ms;       /* 0: flush after every origin read; else this long after the first
                              unsent tag, and at keyframes */
  int merge_auto;          /* merge_ms is the most: the window grows with the loop's viewers */
  double linger;           /* seconds the pull stays after the last viewer on any loop */
  uint32_t max_viewers;
  uint32_t stats_slot;     /* where the stream's counters go when the hub ends (fe_loop.retired) */
  int stamp_time;          /* the owner inserts an onFI script tag with its wall clock every second */
  /**
   * Makes the origin pull when this loop becomes the stream's owner (at open, or later when the
   * owner it subscribed to went away). NULL: the hub has no source of its own (tests feed it).
   * `pull_ud` is the hub's once fe_hub_open succeeded; free_pull_ud releases it with the hub.
   */
  fe_source *(*open_pull)(void *ud, fe_loop *l, const char *key, const fe_sink_ops *ops, void *sink,
                          fe_stream_stats *stats);
  void *pull_ud;
  void (*free_pull_ud)(void *ud);
} fe_hub_opts;

/** The sink calls a source makes on a hub (the sink is the fe_hub *). */
extern const fe_sink_ops fe_hub_sink;

/** One loop's live streams. `node` (may be NULL: one loop) is shared by the loops of the process. */
fe_hubs *fe_hubs_new(fe_loop *l, fe_relay_node *node);
/** Ends every hub (shutdown): pulls close, viewers drain what they have and end. */
void fe_hubs_end_all(fe_hubs *t);
/** After every hub has gone (the loop ran its deferred teardowns). */
void fe_hubs_free(fe_hubs *t);
/** The relay handlers of this loop's mailbox (for fe_relay_box_open, with the fe_hubs as ud). */
extern const fe_relay_handlers fe_hubs_relay_handlers;

/** 1 when a loop of the node has `key` open (pulled by one loop, relayed to others), else 0. */
int fe_hubs_known(fe_hubs *t, const char *key);
/** The running hub for `key`, or NULL. Ended hubs are not found. */
fe_hub *fe_hub_find(fe_hubs *t, const char *key);
/**
 * The hub for `key`: the running one, or a new one pulling the origin (open_pull) or relayed from
 * the loop that pulls it. NULL when out of memory or the pull cannot be made; pull_ud then stays
 * the caller's.
 */
fe_hub *fe_hub_open(fe_hubs *t, const char *key, const fe_hub_opts *opts);
/**
 * Attaches a viewer. Returns 0 (start or fail will follow, possibly before this returns),
 * FE_HUB_EFULL when the stream has max_viewers already, FE_HUB_ENDED when it is over.
 */
int fe_hub_join(fe_hub *h, fe_viewer *v, const fe_viewer_ops *ops, uint8_t want);
/** Detaches a viewer and releases its pins. The transport must not write the pinned buffers after. */
void fe_hub_leave(fe_viewer *v);
/**
 * Fills up to max_iov iovecs (at most about max_bytes) with what `v` sends next and pins the
 * blocks they point into. Returns the iovec count (0: nothing now) and the byte total in *bytes.
 * Call only with no pins held (after fe_hub_viewer_release()).
 */
int fe_hub_viewer_fill(fe_viewer *v, uv_buf_t *iov, int max_iov, size_t max_bytes, size_t *bytes);
/** The write of the last fill is over: unpins its blocks. */
void fe_hub_viewer_release(fe_viewer *v);
/** 1 when the stream has ended and `v` has received everything. */
int fe_hub_viewer_done(const fe_viewer *v);
/** The hub's key ("resource/stream"), for logs. */
const char *fe_hub_key(const fe_hub *h);
/** The origin URL its pull (on whichever loop owns it) reads now and the status it answered;
 * NULL and 0 while unknown. Borrowed until the hub's next callback. */
const char *fe_hub_origin(const fe_hub *h, int *status);

/** What the admin API and the metrics see of one stream on one loop: a copy, owned by the caller. */
typedef struct fe_hub_info {
  char *key;                /* "resource/stream" (malloc'd) */
  char *origin;             /* may be NULL (malloc'd) */
  int origin_status;
  int owner;                /* this loop pulls it */
  int live;                 /* started (not connecting, not ended) */
  uint32_t viewers;
  uint32_t stats_slot;
  uint64_t bitrate;         /* bits/s of the media in the window */
  double uptime;            /* seconds since the hub opened */
  size_t window_bytes;      /* tag bytes in the window */
  char vcodec[8], acodec[8]; /* from the sequence headers ("avc", "hevc", "aac" ...; "" unknown) */
  fe_stream_stats stats;
} fe_hub_info;

/**
 * Copies every running hub of the loop (on its thread) into a malloc'd array (*out, NULL when
 * none); `key` non-NULL: only that stream. Returns the count, or -1 when out of memory.
 */
int fe_hubs_snapshot(fe_hubs *t, const char *key, fe_hub_info **out);
void fe_hub_info_free(fe_hub_info *info, int n);
/** Cuts off every viewer of `key` on this loop (ops->kick); returns how many. */
int fe_hubs_kick(fe_hubs *t, const char *key);

#endif
