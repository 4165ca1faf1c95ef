#include "hub/fe_hub.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "flv/fe_flv.h"
#include "log/fe_log.h"
#include "metrics/fe_metrics.h"
#include "origin/fe_origin.h"

#define FE_BLOCK_SIZE (64 * 1024)
#define FE_WINDOW_MAX_TAGS 65536     /* bounds the index however small the tags */
#define FE_ERROR_BODY_MAX (64 * 1024) /* an origin's error body passed on to viewers */
#define FE_NO_SEQ UINT64_MAX
#define FE_HUB_BUCKETS 1024
#define FE_READY_FALLBACK_TAGS 600   /* start viewers without a keyframe after this many tags */
#define FE_MAX_ORIGIN_ATTEMPTS 16

enum { FE_HS_CONNECTING, FE_HS_LIVE, FE_HS_ENDED };
enum { FE_VS_WAITING, FE_VS_PREFIX, FE_VS_KEYWAIT, FE_VS_LIVE };

typedef struct fe_tagref {
  fe_block *blk;
  uint32_t off, len, ts;
  uint8_t type, flags;
} fe_tagref;

struct fe_hub {
  uv_loop_t *loop;
  char *key;
  fe_hub *hnext;              /* stream table chain */
  int in_table;
  int state;
  int closing;                /* destroy started: waiting for handles */
  int handles;
  fe_hub_opts opts;
  fe_origin *origin;
  fe_flv_parser parser;
  uv_timer_t linger_timer;
  uv_timer_t merge_timer;
  /* viewers */
  fe_viewer *viewers;
  uint32_t nviewers;
  int had_viewer;             /* the first join is the MISS */
  /* window */
  fe_tagref *tags;
  uint64_t mask, head, tail;  /* tags[seq & mask] for head <= seq < tail */
  uint64_t gop_start;         /* newest video keyframe in the window, or FE_NO_SEQ */
  size_t bytes;
  fe_block *cur;              /* block being appended to (the hub holds a ref) */
  int dirty;                  /* tags appended since the last flush */
  /* join prefix */
  uint8_t seen_flags;         /* track types seen */
  fe_block *meta, *vseq, *aseq;
  /* timestamps */
  int64_t ts_offset;
  uint32_t last_ts;
  int have_ts;
  /* an origin error response, passed on as it is */
  int attempt;                /* origin attempts so far */
  int err_status;
  char err_ctype[128];
  uint8_t *err_body;
  size_t err_len;
};

static fe_hub *fe_hub_table[FE_HUB_BUCKETS];

static const uint8_t fe_flv_headers[4][FE_FLV_FILE_HEADER_SIZE] = {
    {'F', 'L', 'V', 1, 0, 0, 0, 0, 9, 0, 0, 0, 0},
    {'F', 'L', 'V', 1, FE_FLV_HAS_VIDEO, 0, 0, 0, 9, 0, 0, 0, 0},
    {'F', 'L', 'V', 1, FE_FLV_HAS_AUDIO, 0, 0, 0, 9, 0, 0, 0, 0},
    {'F', 'L', 'V', 1, FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO, 0, 0, 0, 9, 0, 0, 0, 0},
};

/* ---- blocks -------------------------------------------------------------------------------- */

static fe_block *fe_block_new(uint32_t cap) {
  fe_block *b = malloc(sizeof(*b) + cap);
  if (!b)
    return NULL;
  b->refs = 1;
  b->len = 0;
  b->cap = cap;
  fe_stats.window_bytes += cap;
  return b;
}

void fe_block_release(fe_block *b) {
  assert(b->refs > 0);
  if (--b->refs == 0) {
    fe_stats.window_bytes -= b->cap;
    free(b);
  }
}

static fe_block *fe_block_copy(const uint8_t *data, uint32_t len) {
  fe_block *b = fe_block_new(len);
  if (b) {
    memcpy(b->data, data, len);
    b->len = len;
  }
  return b;
}

/* ---- stream table -------------------------------------------------------------------------- */

static unsigned fe_hash(const char *s) {
  unsigned h = 2166136261u;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 16777619u;
  return h % FE_HUB_BUCKETS;
}

fe_hub *fe_hub_find(const char *key) {
  for (fe_hub *h = fe_hub_table[fe_hash(key)]; h; h = h->hnext)
    if (strcmp(h->key, key) == 0)
      return h;
  return NULL;
}

static void fe_hub_unlist(fe_hub *h) {
  if (!h->in_table)
    return;
  fe_hub **pp = &fe_hub_table[fe_hash(h->key)];
  while (*pp != h)
    pp = &(*pp)->hnext;
  *pp = h->hnext;
  h->in_table = 0;
}

const char *fe_hub_key(const fe_hub *h) {
  return h->key;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void fe_hub_on_handle_closed(uv_handle_t *handle) {
  fe_hub *h = handle->data;
  if (--h->handles > 0)
    return;
  if (h->opts.free_origin_ud)
    h->opts.free_origin_ud(h->opts.origin_ud);
  free(h->key);
  free(h->tags);
  free(h->err_body);
  free(h);
}

/* Frees everything once no viewer is attached; the memory goes when libuv has closed the timers. */
static void fe_hub_destroy(fe_hub *h) {
  assert(h->nviewers == 0);
  if (h->closing)
    return;
  h->closing = 1;
  fe_hub_unlist(h);
  if (h->origin)
    fe_origin_close(h->origin);
  h->origin = NULL;
  fe_flv_parser_free(&h->parser);
  for (uint64_t s = h->head; s < h->tail; s++)
    fe_block_release(h->tags[s & h->mask].blk);
  if (h->cur)
    fe_block_release(h->cur);
  if (h->meta)
    fe_block_release(h->meta);
  if (h->vseq)
    fe_block_release(h->vseq);
  if (h->aseq)
    fe_block_release(h->aseq);
  h->bytes = 0;
  fe_stats.streams--;
  fe_debug("stream %s: closed", h->key);
  uv_close((uv_handle_t *)&h->linger_timer, fe_hub_on_handle_closed);
  uv_close((uv_handle_t *)&h->merge_timer, fe_hub_on_handle_closed);
}

static void fe_hub_wake_all(fe_hub *h) {
  h->dirty = 0;
  fe_viewer *next;
  for (fe_viewer *v = h->viewers; v; v = next) {
    next = v->next; /* a viewer may leave inside wake */
    v->ops->wake(v);
  }
}

/* The stream is over (origin end, error, shutdown): viewers drain what they have, then end. */
static void fe_hub_end(fe_hub *h) {
  if (h->state == FE_HS_ENDED)
    return;
  h->state = FE_HS_ENDED;
  fe_hub_unlist(h);
  if (h->origin)
    fe_origin_close(h->origin);
  h->origin = NULL;
  uv_timer_stop(&h->merge_timer);
  if (h->nviewers == 0) {
    fe_hub_destroy(h);
    return;
  }
  fe_hub_wake_all(h);
}

static void fe_hub_detach(fe_hub *h, fe_viewer *v) {
  if (v->prev)
    v->prev->next = v->next;
  else
    h->viewers = v->next;
  if (v->next)
    v->next->prev = v->prev;
  v->prev = v->next = NULL;
  v->hub = NULL;
  h->nviewers--;
  fe_stats.viewers--;
}

/* Before the stream started: every waiting viewer gets the same status and body. */
static void fe_hub_fail_all(fe_hub *h, int status, const char *ctype, const uint8_t *body, size_t len) {
  while (h->viewers) {
    fe_viewer *v = h->viewers;
    fe_hub_detach(h, v);
    v->ops->fail(v, status, ctype, body, len);
  }
  fe_hub_destroy(h);
}

static void fe_hub_on_linger(uv_timer_t *t) {
  fe_hub *h = t->data;
  fe_debug("stream %s: no viewer for the linger time, closing the origin", h->key);
  fe_hub_destroy(h);
}

/* No viewer left: an ended stream goes now, a live one after the linger. */
static void fe_hub_idle(fe_hub *h) {
  if (h->state == FE_HS_LIVE && h->opts.linger > 0)
    uv_timer_start(&h->linger_timer, fe_hub_on_linger, (uint64_t)(h->opts.linger * 1000.0), 0);
  else
    fe_hub_destroy(h);
}

static void fe_hub_on_merge(uv_timer_t *t) {
  fe_hub *h = t->data;
  if (h->dirty)
    fe_hub_wake_all(h);
}

/* ---- window -------------------------------------------------------------------------------- */

static int fe_hub_grow_index(fe_hub *h) {
  uint64_t cap = h->mask + 1, count = h->tail - h->head;
  if (count < cap)
    return 0;
  uint64_t ncap = cap * 2;
  fe_tagref *n = malloc(ncap * sizeof(*n));
  if (!n)
    return -1;
  for (uint64_t s = h->head; s < h->tail; s++)
    n[s & (ncap - 1)] = h->tags[s & h->mask];
  free(h->tags);
  h->tags = n;
  h->mask = ncap - 1;
  return 0;
}

/* Drops tags from the head: beyond the byte/count caps always; otherwise only before the
 * current GOP and older than window_seconds behind the newest tag. */
static void fe_hub_trim(fe_hub *h) {
  uint32_t keep_ms = (uint32_t)(h->opts.window_seconds * 1000.0);
  while (h->head < h->tail) {
    fe_tagref *t = &h->tags[h->head & h->mask];
    int over = h->bytes > h->opts.window_bytes || h->tail - h->head > FE_WINDOW_MAX_TAGS;
    if (!over) {
      if (h->gop_start == FE_NO_SEQ || h->head >= h->gop_start)
        break;
      if (h->last_ts - t->ts <= keep_ms)
        break;
    }
    h->bytes -= t->len;
    fe_block_release(t->blk);
    if (h->head == h->gop_start)
      h->gop_start = FE_NO_SEQ;
    h->head++;
  }
}

/* Keeps timestamps monotonic whatever the origin does: a jump back of more than a second (origin
 * restart, loop) is rebased to continue from the last one; small reorderings are clamped. */
static uint32_t fe_hub_timestamp(fe_hub *h, uint32_t ts) {
  int64_t out = (int64_t)ts + h->ts_offset;
  if (h->have_ts && out < (int64_t)h->last_ts) {
    if ((int64_t)h->last_ts - out > 1000)
      h->ts_offset += (int64_t)h->last_ts - out;
    out = h->last_ts;
  }
  if (out < 0)
    out = 0;
  h->have_ts = 1;
  h->last_ts = (uint32_t)out;
  return (uint32_t)out;
}

static void fe_hub_keep(fe_block **slot, const uint8_t *data, uint32_t len) {
  fe_block *b = fe_block_copy(data, len);
  if (!b)
    return;
  if (*slot)
    fe_block_release(*slot);
  *slot = b;
}

static int fe_hub_on_tag(void *ud, const fe_flv_tag *tag) {
  fe_hub *h = ud;
  uint32_t len = FE_FLV_TAG_OVERHEAD + tag->size;
  uint32_t ts = fe_hub_timestamp(h, tag->timestamp);
  int key = tag->type == FE_FLV_VIDEO && (tag->flags & FE_FLV_KEYFRAME);

  if (tag->type == FE_FLV_AUDIO)
    h->seen_flags |= FE_FLV_HAS_AUDIO;
  else if (tag->type == FE_FLV_VIDEO)
    h->seen_flags |= FE_FLV_HAS_VIDEO;
  /* A batch starts at a keyframe: what came before goes out first. */
  if (key && h->opts.merge_ms > 0 && h->dirty)
    fe_hub_wake_all(h);

  if (!h->cur || h->cur->cap - h->cur->len < len) {
    if (h->cur)
      fe_block_release(h->cur);
    h->cur = fe_block_new(len > FE_BLOCK_SIZE ? len : FE_BLOCK_SIZE);
    if (!h->cur)
      return FE_FLV_ENOMEM;
  }
  if (fe_hub_grow_index(h) < 0)
    return FE_FLV_ENOMEM;
  uint8_t *dst = h->cur->data + h->cur->len;
  memcpy(dst, tag->data, len);
  fe_flv_set_timestamp(dst, ts);
  /* The edge writes a correct PreviousTagSize whatever the origin sent. */
  uint32_t prev = FE_FLV_TAG_HEADER_SIZE + tag->size;
  dst[len - 4] = (uint8_t)(prev >> 24);
  dst[len - 3] = (uint8_t)(prev >> 16);
  dst[len - 2] = (uint8_t)(prev >> 8);
  dst[len - 1] = (uint8_t)prev;

  if (tag->flags & FE_FLV_METADATA)
    fe_hub_keep(&h->meta, dst, len);
  else if (tag->flags & FE_FLV_SEQ_HEADER)
    fe_hub_keep(tag->type == FE_FLV_VIDEO ? &h->vseq : &h->aseq, dst, len);

  fe_tagref *t = &h->tags[h->tail & h->mask];
  t->blk = h->cur;
  t->off = h->cur->len;
  t->len = len;
  t->ts = ts;
  t->type = tag->type;
  t->flags = (uint8_t)tag->flags;
  h->cur->refs++;
  h->cur->len += len;
  if (key)
    h->gop_start = h->tail;
  h->tail++;
  h->bytes += len;
  h->dirty = 1;
  fe_hub_trim(h);
  return 0;
}

/* ---- origin callbacks ---------------------------------------------------------------------- */

static void fe_hub_on_response(void *ud, int status, const char *ctype) {
  fe_hub *h = ud;
  if (status != 200) {
    h->err_status = status;
    snprintf(h->err_ctype, sizeof(h->err_ctype), "%s", ctype ? ctype : "text/plain");
    return;
  }
  h->state = FE_HS_LIVE;
  fe_info("stream %s: origin answered 200, %u viewer(s) waiting", h->key, h->nviewers);
  fe_viewer *next;
  for (fe_viewer *v = h->viewers; v; v = next) {
    next = v->next;
    int hit = !v->behind_since;
    v->behind_since = 0;
    v->state = FE_VS_PREFIX;
    v->ops->start(v, hit);
  }
  if (h->nviewers == 0)
    fe_hub_idle(h);
}

static void fe_hub_on_body(void *ud, const uint8_t *data, size_t len) {
  fe_hub *h = ud;
  fe_stats.bytes_received += len;
  if (h->err_status) {
    size_t room = FE_ERROR_BODY_MAX - h->err_len;
    if (len > room)
      len = room;
    if (len && !h->err_body)
      h->err_body = malloc(FE_ERROR_BODY_MAX);
    if (h->err_body) {
      memcpy(h->err_body + h->err_len, data, len);
      h->err_len += len;
    }
    return;
  }
  int rc = fe_flv_parser_feed(&h->parser, data, len, fe_hub_on_tag, h);
  if (rc < 0 && h->state == FE_HS_LIVE) {
    fe_error("stream %s: malformed FLV from the origin: %s; ending the stream", h->key,
             fe_flv_strerror(rc));
    fe_stats.origin_failures++;
    fe_hub_end(h);
  }
}

static void fe_hub_on_flush(void *ud) {
  fe_hub *h = ud;
  if (h->state != FE_HS_LIVE)
    return;
  if (h->dirty && h->opts.merge_ms == 0)
    fe_hub_wake_all(h);
}

static const fe_origin_cbs fe_hub_origin_cbs;

/* Before the stream started: asks for another origin. Returns 1 when a new pull is under way. */
static int fe_hub_failover(fe_hub *h, int err) {
  if (!h->opts.next_origin || h->nviewers == 0 || h->attempt >= FE_MAX_ORIGIN_ATTEMPTS)
    return 0;
  char what[64], url[4096];
  if (h->err_status)
    snprintf(what, sizeof(what), "status %d", h->err_status);
  else
    snprintf(what, sizeof(what), "%s", err == FE_ORIGIN_ETIMEDOUT ? "timeout" : "unreachable");
  if (h->opts.next_origin(h->opts.origin_ud, h->attempt + 1, what, url, sizeof(url)) != 1)
    return 0;
  h->attempt++;
  fe_warn("stream %s: origin failed (%s); trying %s (attempt %d)", h->key, what, url, h->attempt);
  fe_origin_close(h->origin);
  h->err_status = 0;
  h->err_len = 0;
  fe_origin_opts oo = {.connect_timeout = h->opts.origin_connect_timeout,
                       .read_timeout = h->opts.origin_read_timeout,
                       .max_tag_size = h->opts.max_tag_size};
  h->origin = fe_origin_open(h->loop, url, &oo, &fe_hub_origin_cbs, h);
  fe_stats.origin_connects++;
  return h->origin != NULL;
}

static void fe_hub_on_end(void *ud, int err) {
  fe_hub *h = ud;
  if (h->state == FE_HS_CONNECTING && fe_hub_failover(h, err))
    return;
  if (h->err_status) {
    fe_info("stream %s: origin answered %d", h->key, h->err_status);
    fe_hub_fail_all(h, h->err_status, h->err_ctype, h->err_body, h->err_len);
    return;
  }
  if (h->state == FE_HS_CONNECTING) {
    int status = fe_origin_status(err);
    fe_error("stream %s: %s; answering %d", h->key, fe_origin_strerror(err), status);
    fe_stats.origin_failures++;
    const char *msg = status == 504   ? "504 origin timed out\n"
                      : status == 404 ? "404 no such stream\n"
                                      : "502 origin unreachable\n";
    fe_hub_fail_all(h, status, "text/plain", (const uint8_t *)msg, strlen(msg));
    return;
  }
  if (err == 0 && fe_flv_parser_finish(&h->parser) < 0)
    err = FE_FLV_ETRUNC;
  if (err) {
    fe_error("stream %s: %s; ending the stream", h->key, fe_origin_strerror(err));
    fe_stats.origin_failures++;
  } else {
    fe_info("stream %s: origin ended the stream", h->key);
  }
  fe_hub_end(h);
}

static const fe_origin_cbs fe_hub_origin_cbs = {
    .on_response = fe_hub_on_response,
    .on_body = fe_hub_on_body,
    .on_flush = fe_hub_on_flush,
    .on_end = fe_hub_on_end,
};

fe_hub *fe_hub_create(uv_loop_t *loop, const char *key, const char *origin_url, const fe_hub_opts *opts) {
  fe_hub *h = calloc(1, sizeof(*h));
  if (!h)
    return NULL;
  h->loop = loop;
  h->key = strdup(key);
  h->opts = *opts;
  h->mask = 255;
  h->tags = malloc((h->mask + 1) * sizeof(*h->tags));
  h->gop_start = FE_NO_SEQ;
  if (!h->key || !h->tags) {
    free(h->key);
    free(h->tags);
    free(h);
    return NULL;
  }
  fe_flv_parser_init(&h->parser, opts->max_tag_size);
  uv_timer_init(loop, &h->linger_timer);
  uv_timer_init(loop, &h->merge_timer);
  h->linger_timer.data = h->merge_timer.data = h;
  h->handles = 2;
  fe_origin_opts oo = {.connect_timeout = opts->origin_connect_timeout,
                       .read_timeout = opts->origin_read_timeout,
                       .max_tag_size = opts->max_tag_size};
  h->attempt = 1;
  if (origin_url)
    h->origin = fe_origin_open(loop, origin_url, &oo, &fe_hub_origin_cbs, h);
  else
    h->state = FE_HS_LIVE;
  unsigned b = fe_hash(key);
  h->hnext = fe_hub_table[b];
  fe_hub_table[b] = h;
  h->in_table = 1;
  if (opts->merge_ms > 0)
    uv_timer_start(&h->merge_timer, fe_hub_on_merge, opts->merge_ms, opts->merge_ms);
  fe_stats.streams++;
  if (!origin_url)
    return h;
  fe_stats.origin_connects++;
  fe_info("stream %s: pulling %s", key, origin_url);
  if (!h->origin) {
    /* Out of memory: no hub. The caller answers 503 and still owns origin_ud. */
    h->opts.free_origin_ud = NULL;
    fe_hub_destroy(h);
    return NULL;
  }
  return h;
}

void fe_hub_ingest(fe_hub *h, const uint8_t *data, size_t len) {
  fe_hub_on_body(h, data, len);
  if (!h->closing)
    fe_hub_on_flush(h);
}

void fe_hub_end_all(void) {
  for (int i = 0; i < FE_HUB_BUCKETS; i++)
    while (fe_hub_table[i])
      fe_hub_end(fe_hub_table[i]);
}

/* ---- viewers ------------------------------------------------------------------------------- */

int fe_hub_join(fe_hub *h, fe_viewer *v, const fe_viewer_ops *ops, uint8_t want) {
  if (h->state == FE_HS_ENDED)
    return FE_HUB_ENDED;
  if (h->nviewers >= h->opts.max_viewers)
    return FE_HUB_EFULL;
  v->ops = ops;
  v->hub = h;
  v->want = want;
  v->npins = 0;
  v->frames_dropped = 0;
  /* behind_since doubles as the MISS mark until the stream starts. */
  v->behind_since = h->had_viewer ? 0 : 1;
  h->had_viewer = 1;
  v->prev = NULL;
  v->next = h->viewers;
  if (h->viewers)
    h->viewers->prev = v;
  h->viewers = v;
  h->nviewers++;
  fe_stats.viewers++;
  uv_timer_stop(&h->linger_timer);
  if (h->state == FE_HS_LIVE) {
    v->state = FE_VS_PREFIX;
    v->behind_since = 0;
    ops->start(v, 1);
  } else {
    v->state = FE_VS_WAITING;
  }
  return 0;
}

void fe_hub_leave(fe_viewer *v) {
  fe_hub *h = v->hub;
  fe_hub_viewer_release(v);
  if (!h)
    return;
  fe_hub_detach(h, v);
  if (h->nviewers == 0 && !h->closing && h->state != FE_HS_CONNECTING)
    fe_hub_idle(h);
  /* Still connecting: the origin's answer finds no viewer and the linger starts then. */
}

void fe_hub_viewer_release(fe_viewer *v) {
  for (int i = 0; i < v->npins; i++)
    fe_block_release(v->pins[i]);
  v->npins = 0;
}

int fe_hub_viewer_done(const fe_viewer *v) {
  const fe_hub *h = v->hub;
  return !h || (h->state == FE_HS_ENDED && (v->state != FE_VS_LIVE || v->cursor >= h->tail));
}

static int fe_hub_ready(const fe_hub *h) {
  if (h->gop_start != FE_NO_SEQ)
    return 1;
  if (h->tail == h->head)
    return 0;
  uint8_t flags = h->parser.header_flags;
  return !(flags & FE_FLV_HAS_VIDEO) || h->tail >= FE_READY_FALLBACK_TAGS;
}

/* Where a viewer (re)starts: the newest keyframe, or the tail to wait for one. */
static void fe_hub_place(fe_hub *h, fe_viewer *v) {
  if (h->gop_start != FE_NO_SEQ) {
    v->cursor = h->gop_start;
    v->state = FE_VS_LIVE;
  } else {
    v->cursor = h->tail;
    v->state = (v->want & FE_HUB_WANT_VIDEO) && (h->seen_flags & FE_FLV_HAS_VIDEO) ? FE_VS_KEYWAIT
                                                                                  : FE_VS_LIVE;
  }
}

typedef struct fe_fill {
  fe_viewer *v;
  uv_buf_t *iov;
  int n, max;
  size_t bytes;
} fe_fill;

/* Appends a span, merging it with the previous one when contiguous in the same block. */
static int fe_fill_add(fe_fill *f, fe_block *b, const uint8_t *p, size_t len) {
  fe_viewer *v = f->v;
  if (f->n > 0 && v->npins > 0 && v->pins[v->npins - 1] == b &&
      f->iov[f->n - 1].base + f->iov[f->n - 1].len == (const char *)p) {
    f->iov[f->n - 1].len += len;
    f->bytes += len;
    return 0;
  }
  if (f->n == f->max || (b && v->npins == FE_VIEWER_MAX_PINS && v->pins[v->npins - 1] != b))
    return -1;
  if (b && (v->npins == 0 || v->pins[v->npins - 1] != b)) {
    b->refs++;
    v->pins[v->npins++] = b;
  }
  f->iov[f->n++] = uv_buf_init((char *)p, (unsigned)len);
  f->bytes += len;
  return 0;
}

static void fe_fill_block(fe_fill *f, fe_block *b) {
  if (b)
    fe_fill_add(f, b, b->data, b->len);
}

int fe_hub_viewer_fill(fe_viewer *v, uv_buf_t *iov, int max_iov, size_t max_bytes, size_t *bytes) {
  fe_hub *h = v->hub;
  fe_fill f = {.v = v, .iov = iov, .max = max_iov};
  *bytes = 0;
  assert(v->npins == 0);
  if (!h || v->state == FE_VS_WAITING)
    return 0;
  if (v->state == FE_VS_PREFIX) {
    if (!fe_hub_ready(h))
      return 0;
    uint8_t flags = (h->parser.header_flags | h->seen_flags) & (FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
    if (v->want == FE_HUB_WANT_AUDIO)
      flags = FE_FLV_HAS_AUDIO;
    else if (v->want == FE_HUB_WANT_VIDEO)
      flags = FE_FLV_HAS_VIDEO;
    int idx = ((flags & FE_FLV_HAS_AUDIO) ? 2 : 0) | ((flags & FE_FLV_HAS_VIDEO) ? 1 : 0);
    fe_fill_add(&f, NULL, fe_flv_headers[idx], FE_FLV_FILE_HEADER_SIZE);
    /* Metadata may claim both tracks; a filtered viewer goes without it. */
    if (v->want == FE_HUB_WANT_ALL)
      fe_fill_block(&f, h->meta);
    if (v->want & FE_HUB_WANT_VIDEO)
      fe_fill_block(&f, h->vseq);
    if (v->want & FE_HUB_WANT_AUDIO)
      fe_fill_block(&f, h->aseq);
    fe_hub_place(h, v);
  } else if (v->cursor < h->head) {
    uint64_t from = v->cursor;
    fe_hub_place(h, v);
    v->frames_dropped += v->cursor - from;
    fe_stats.frames_dropped += v->cursor - from;
    fe_stats.viewer_jumps++;
    if (!v->behind_since)
      v->behind_since = uv_now(h->loop);
  }
  while (v->cursor < h->tail && f.bytes < max_bytes) {
    const fe_tagref *t = &h->tags[v->cursor & h->mask];
    if (v->state == FE_VS_KEYWAIT) {
      if (t->type == FE_FLV_VIDEO && (t->flags & FE_FLV_KEYFRAME))
        v->state = FE_VS_LIVE;
      else if (t->type == FE_FLV_VIDEO) {
        v->cursor++;
        continue;
      }
    }
    int skip = (t->type == FE_FLV_AUDIO && !(v->want & FE_HUB_WANT_AUDIO)) ||
               (t->type == FE_FLV_VIDEO && !(v->want & FE_HUB_WANT_VIDEO)) ||
               (t->type == FE_FLV_SCRIPT && v->want != FE_HUB_WANT_ALL);
    if (!skip && fe_fill_add(&f, t->blk, t->blk->data + t->off, t->len) < 0)
      break;
    v->cursor++;
  }
  if (v->cursor == h->tail)
    v->behind_since = 0;
  *bytes = f.bytes;
  return f.n;
}
