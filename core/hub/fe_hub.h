/*
 * fe_hub: one live stream. Pulls its origin once, parses the FLV once, keeps a sliding window of
 * ready-to-send tags in refcounted blocks, and fans them out to viewers that are cursors into it.
 *
 * The hub knows nothing of HTTP: a viewer transport (http/ implements one) embeds an fe_viewer and
 * passes fe_viewer_ops. The hub calls `wake` when a viewer has something new; the transport then
 * calls fe_hub_viewer_fill() to get iovecs pointing into shared blocks (pinned until
 * fe_hub_viewer_release()), and writes them with one writev. No media is copied per viewer.
 */
#ifndef FE_HUB_H
#define FE_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** A refcounted run of FLV bytes: one ref per window tag inside it, one per in-flight write. */
typedef struct fe_block {
  uint32_t refs;
  uint32_t len, cap;
  uint8_t data[];
} fe_block;

/** Drops a reference; the block is freed at zero. */
void fe_block_release(fe_block *b);

typedef struct fe_hub fe_hub;
typedef struct fe_viewer fe_viewer;

enum { FE_HUB_WANT_AUDIO = 1, FE_HUB_WANT_VIDEO = 2, FE_HUB_WANT_ALL = 3 };
enum { FE_HUB_EFULL = -3001, FE_HUB_ENDED = -3002 };

/** What a viewer transport does when the hub calls it. */
typedef struct fe_viewer_ops {
  /** The origin answered 200: send the response head. `hit` is 0 for the viewer that opened it. */
  void (*start)(fe_viewer *v, int hit);
  /** The stream failed before it started; `v` is already detached. Send status and body. */
  void (*fail)(fe_viewer *v, int status, const char *content_type, const uint8_t *body, size_t len);
  /** There may be something to send (or the stream ended): call fe_hub_viewer_fill when writable. */
  void (*wake)(fe_viewer *v);
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
  fe_block *pins[FE_VIEWER_MAX_PINS];
};

typedef struct fe_hub_opts {
  double window_seconds;   /* media kept beyond the current GOP */
  size_t window_bytes;     /* hard cap on the window */
  uint32_t merge_ms;       /* 0: flush after every origin read; else at this period and at keyframes */
  double linger;           /* seconds the origin stays after the last viewer */
  uint32_t max_viewers;
  uint32_t max_tag_size;
  double origin_connect_timeout;
  double origin_read_timeout;
  /**
   * Optional: asked for another origin when the current one fails before the stream started
   * (unreachable, timeout, a status other than 200). `attempt` is 2, 3, ...; `last_error` says what
   * failed ("unreachable", "timeout", "status 503"). Returns 1 with a URL in url to try it, 0 to give
   * up (viewers then get the last origin's answer). `origin_ud` is released with free_origin_ud
   * when the hub goes.
   */
  int (*next_origin)(void *ud, int attempt, const char *last_error, char *url, size_t cap);
  void (*free_origin_ud)(void *ud);
  void *origin_ud;
} fe_hub_opts;

/** The running hub for `key`, or NULL. Ended hubs are not found. */
fe_hub *fe_hub_find(const char *key);
/**
 * Creates the hub for `key` and starts pulling `origin_url`. NULL when out of memory. With a NULL
 * origin_url the hub is live at once and takes its FLV bytes from fe_hub_ingest() (tests, pushes).
 */
fe_hub *fe_hub_create(uv_loop_t *loop, const char *key, const char *origin_url, const fe_hub_opts *opts);
/** Feeds FLV bytes as if they came from the origin, then flushes to viewers as a read would. */
void fe_hub_ingest(fe_hub *h, const uint8_t *data, size_t len);
/**
 * Attaches a viewer. Returns 0 (start or fail will follow, possibly before this returns) or
 * FE_HUB_EFULL when the stream has max_viewers already.
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
/** Ends every hub (shutdown): origins close, viewers drain what they have and end. */
void fe_hub_end_all(void);

#endif
