#include "hub/fe_hub.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flv/fe_flv.h"
#include "log/fe_log.h"

#define FE_BLOCK_SIZE (64 * 1024)
#define FE_WINDOW_MAX_TAGS 65536     /* bounds the index however small the tags */
#define FE_NO_SEQ UINT64_MAX
#define FE_HUB_BUCKETS 1024
#define FE_READY_FALLBACK_TAGS 600   /* start viewers without a keyframe after this many tags */
#define FE_MAX_REOPENS 4             /* a relay whose owner went away: claim again this often */
/* merge_ms "auto": no window up to the first, the full window from the second count of viewers
 * on the loop, linear between. A few viewers get every tag at once; a busy loop makes fewer,
 * larger writes (the kernel's cost is per write), adding at most merge_ms of delay. */
#define FE_MERGE_AUTO_FROM 100
#define FE_MERGE_AUTO_FULL 1000
/* A fan-out pass wakes viewers for at most FE_HUB_SLICE_NS per loop turn (a viewer's write costs
 * 2-15 us on loopback, more over TLS), and at most FE_HUB_SLICE of them; the loop polls for I/O
 * (accepts, request heads, joins) between slices. A joiner waits for up to two slices (its
 * accept, then its request head), so a slice is kept well under a millisecond: 256 wakes took
 * 3 ms at 3000 viewers and put a joiner's p99 near 8 ms. */
#define FE_HUB_SLICE 256
#define FE_HUB_SLICE_NS 300000
#define FE_HUB_SLICE_CHECK 8 /* wakes between two looks at the clock */
/* With a merge window, viewers are spread over this many groups flushed at staggered instants
 * across the window (each viewer keeps its own period), so the loop's load is even. */
#define FE_HUB_GROUPS 8
#define FE_HUB_ALL_GROUPS ((1u << FE_HUB_GROUPS) - 1)

enum { FE_HS_CONNECTING, FE_HS_LIVE, FE_HS_ENDED };
enum { FE_VS_WAITING, FE_VS_PREFIX, FE_VS_KEYWAIT, FE_VS_LIVE };

typedef struct fe_tagref {
  fe_block *blk;
  uint32_t off, len, ts;
  uint8_t type, flags;
} fe_tagref;

struct fe_hubs {
  fe_loop *loop;
  fe_relay_node *node;
  fe_hub *table[FE_HUB_BUCKETS];
};

struct fe_hub {
  fe_hubs *t;
  fe_loop *loop;
  char *key;
  fe_hub *hnext;              /* stream table chain */
  int in_table;
  int state;
  int closing;                /* destroy started: the memory goes at the loop's safe point */
  int handles;
  fe_deferred defer;
  fe_hub_opts opts;
  fe_source *src;
  int owner;                  /* this loop claimed the stream: its pull is here */
  int relayed;                /* fed by the owner loop: timestamps come rebased already */
  int reopens;
  uv_timer_t linger_timer;
  uv_timer_t merge_timer;
  /* viewers, in groups (see FE_HUB_GROUPS) */
  fe_viewer *groups[FE_HUB_GROUPS];
  uint32_t gcount[FE_HUB_GROUPS];
  uint32_t nviewers;
  /* the fan-out pass: wakes the groups of pass_mask, FE_HUB_SLICE viewers per loop turn */
  fe_later pass;
  unsigned pass_mask, pending_mask; /* groups of this pass; groups woken while it runs */
  int pass_group;
  fe_viewer *pass_next;
  int in_pass;                /* a slice is running now (a wake inside it only marks pending) */
  uint32_t tick;              /* merge ticks so far */
  double tick_due;            /* loop ms of the next tick: fractional, so a group's period is merge_ms */
  int had_viewer;             /* the first join is the MISS */
  /* other loops fed from here */
  fe_relay_ch *subs;
  uint32_t nsubs;
  fe_relay_count *count;      /* the stream's viewers on every loop */
  fe_relay_count own_count;   /* the count when there is no other loop */
  /* window */
  fe_tagref *tags;
  uint64_t mask, head, tail;  /* tags[seq & mask] for head <= seq < tail */
  uint64_t gop_start;         /* newest video keyframe in the window, or FE_NO_SEQ */
  size_t bytes;
  fe_block *cur;              /* block being appended to (the hub holds a ref) */
  unsigned dirty;             /* groups with tags appended since their last flush */
  /* join prefix */
  uint8_t flv_flags;          /* from the source's FLV header */
  uint8_t seen_flags;         /* track types seen */
  uint8_t headers[4][FE_FLV_FILE_HEADER_SIZE]; /* the FLV header for each track choice */
  fe_block *meta, *vseq, *aseq;
  /* timestamps */
  int64_t ts_offset;
  uint32_t last_ts;
  int have_ts;
  /* what the admin API and the metrics show */
  fe_stream_stats stats;
  uint64_t opened_ms;         /* loop ms */
  char *origin;               /* the origin read now (its owner's, relayed) */
  int origin_status;
  uint64_t stamp_next;        /* loop ms of the next onFI stamp */
  int stamping;               /* the stamp tag is being appended */
};

static void fe_hub_relay_flush(fe_hub *h);
static int fe_hub_reopen(fe_hub *h);

/* ---- blocks -------------------------------------------------------------------------------- */

static fe_block *fe_block_new(fe_hub *h, uint32_t cap) {
  fe_block *b = malloc(sizeof(*b) + cap);
  if (!b)
    return NULL;
  b->refs = 1;
  b->len = 0;
  b->cap = cap;
  b->metrics = &h->loop->metrics;
  FE_METRIC_ADD(b->metrics, window_bytes, cap);
  return b;
}

void fe_block_release(fe_block *b) {
  assert(b->refs > 0);
  if (--b->refs == 0) {
    FE_METRIC_ADD(b->metrics, window_bytes, -(int64_t)b->cap);
    free(b);
  }
}

static fe_block *fe_block_copy(fe_hub *h, const uint8_t *data, uint32_t len) {
  fe_block *b = fe_block_new(h, len);
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

fe_hub *fe_hub_find(fe_hubs *t, const char *key) {
  for (fe_hub *h = t->table[fe_hash(key)]; h; h = h->hnext)
    if (strcmp(h->key, key) == 0)
      return h;
  return NULL;
}

int fe_hubs_known(fe_hubs *t, const char *key) {
  if (t->node)
    return fe_relay_owner(t->node, key) >= 0;
  return fe_hub_find(t, key) != NULL;
}

/* Off the table and out of the registry: the next viewer starts afresh. */
static void fe_hub_unlist(fe_hub *h) {
  if (h->owner && h->t->node)
    fe_relay_unclaim(h->t->node, h->loop->id, h->key);
  h->owner = 0;
  if (!h->in_table)
    return;
  fe_hub **pp = &h->t->table[fe_hash(h->key)];
  while (*pp != h)
    pp = &(*pp)->hnext;
  *pp = h->hnext;
  h->in_table = 0;
}

const char *fe_hub_key(const fe_hub *h) {
  return h->key;
}

const char *fe_hub_origin(const fe_hub *h, int *status) {
  *status = h->origin_status;
  return h->origin;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void fe_hub_on_handle_closed(uv_handle_t *handle) {
  fe_hub *h = handle->data;
  if (--h->handles > 0)
    return;
  if (h->opts.free_pull_ud)
    h->opts.free_pull_ud(h->opts.pull_ud);
  if (h->count != &h->own_count)
    fe_relay_count_unref(h->count);
  free(h->origin);
  free(h->key);
  free(h->tags);
  free(h);
}

/* The loop's safe point: nobody up the stack uses the hub any more. */
static void fe_hub_free(fe_deferred *d) {
  fe_hub *h = (fe_hub *)((char *)d - offsetof(fe_hub, defer));
  /* Its counters stay in the loop's per-resource totals: they never go down. */
  uint32_t slot = h->opts.stats_slot < FE_METRICS_RES_SLOTS ? h->opts.stats_slot : FE_METRICS_RES_SLOTS - 1;
  fe_stream_stats_add(&h->loop->retired[slot], &h->stats);
  for (uint64_t s = h->head; s < h->tail; s++)
    fe_block_release(h->tags[s & h->mask].blk);
  fe_block **kept[] = {&h->cur, &h->meta, &h->vseq, &h->aseq};
  for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
    if (*kept[i])
      fe_block_release(*kept[i]);
  uv_close((uv_handle_t *)&h->linger_timer, fe_hub_on_handle_closed);
  uv_close((uv_handle_t *)&h->merge_timer, fe_hub_on_handle_closed);
}

static void fe_hub_close_source(fe_hub *h) {
  if (h->src)
    h->src->close(h->src);
  h->src = NULL;
}

/* Lets every subscribed loop go: a started one is told the stream's end (err), one still waiting
 * to open it again. */
static void fe_hub_drop_subs(fe_hub *h, int err) {
  while (h->subs) {
    fe_relay_ch *ch = h->subs;
    h->subs = ch->pub_next;
    fe_relay_send_end(ch, ch->started ? err : FE_SOURCE_ERETRY);
    fe_relay_ch_owner_drop(ch);
  }
  FE_METRIC_ADD(&h->loop->metrics, relay_subscribers, -(int64_t)h->nsubs);
  h->nsubs = 0;
}

/* Once no viewer is attached: stops everything now, frees at the loop's safe point. */
static void fe_hub_destroy(fe_hub *h) {
  assert(h->nviewers == 0);
  if (h->closing)
    return;
  h->closing = 1;
  h->state = FE_HS_ENDED;
  fe_hub_unlist(h);
  fe_hub_close_source(h);
  fe_hub_drop_subs(h, FE_SOURCE_ERETRY);
  uv_timer_stop(&h->linger_timer);
  uv_timer_stop(&h->merge_timer);
  fe_loop_later_cancel(h->loop, &h->pass);
  h->pass_next = NULL;
  FE_METRIC_ADD(&h->loop->metrics, streams, -1);
  fe_debug("stream %s: closed", h->key);
  fe_loop_defer(h->loop, &h->defer, fe_hub_free);
}

static void fe_hub_on_pass(fe_later *t);
static uint32_t fe_hub_merge_ms(const fe_hub *h);

/* Runs the pass on: at most FE_HUB_SLICE wakes, then the rest on the loop's next turn. Groups woken
 * meanwhile join the next pass, which starts when this one is over. */
static void fe_hub_pass_slice(fe_hub *h) {
  int budget = FE_HUB_SLICE;
  uint64_t until = uv_hrtime() + FE_HUB_SLICE_NS;
  h->in_pass = 1;
  while (!h->closing) {
    if (!h->pass_next) {
      int g = h->pass_group + 1;
      while (g < FE_HUB_GROUPS && !((h->pass_mask >> g) & 1))
        g++;
      if (g < FE_HUB_GROUPS) {
        h->pass_group = g;
        h->pass_next = h->groups[g];
        continue;
      }
      if (!h->pending_mask)
        break;
      h->pass_mask = h->pending_mask;
      h->pending_mask = 0;
      h->pass_group = -1;
      continue;
    }
    if (budget-- == 0 ||
        ((FE_HUB_SLICE - budget) % FE_HUB_SLICE_CHECK == 0 && uv_hrtime() > until)) {
      fe_loop_later(h->loop, &h->pass, fe_hub_on_pass);
      break;
    }
    fe_viewer *v = h->pass_next;
    h->pass_next = v->next; /* a viewer may leave inside wake: detach moves pass_next on */
    v->ops->wake(v);
  }
  h->in_pass = 0;
}

static void fe_hub_on_pass(fe_later *t) {
  fe_hub *h = (fe_hub *)((char *)t - offsetof(fe_hub, pass));
  fe_hub_pass_slice(h);
}

static int fe_hub_passing(const fe_hub *h) {
  return h->pass_next || h->pass.queued || h->in_pass;
}

/* Wakes the viewers of `groups`: now, for as many as one slice takes. */
static void fe_hub_wake(fe_hub *h, unsigned groups) {
  h->dirty &= ~groups;
  if (fe_hub_passing(h)) {
    h->pending_mask |= groups;
    return;
  }
  h->pass_mask = groups;
  h->pass_group = -1;
  fe_hub_pass_slice(h);
}

static void fe_hub_wake_all(fe_hub *h) {
  fe_hub_wake(h, FE_HUB_ALL_GROUPS);
}

/* The stream is over (origin end, error, shutdown): viewers drain what they have, then end. */
static void fe_hub_end(fe_hub *h, int err) {
  if (h->state == FE_HS_ENDED)
    return;
  fe_hub_relay_flush(h);
  h->state = FE_HS_ENDED;
  fe_hub_unlist(h);
  fe_hub_close_source(h);
  fe_hub_drop_subs(h, err);
  uv_timer_stop(&h->merge_timer);
  if (h->nviewers == 0) {
    fe_hub_destroy(h);
    return;
  }
  fe_hub_wake_all(h);
}

static void fe_hub_detach(fe_hub *h, fe_viewer *v) {
  if (h->pass_next == v)
    h->pass_next = v->next;
  if (v->prev)
    v->prev->next = v->next;
  else
    h->groups[v->group] = v->next;
  h->gcount[v->group]--;
  if (v->next)
    v->next->prev = v->prev;
  v->prev = v->next = NULL;
  v->hub = NULL;
  v->stats = NULL;
  h->nviewers--;
  __atomic_sub_fetch(&h->count->viewers, 1, __ATOMIC_RELAXED);
  FE_METRIC_ADD(&h->loop->metrics, viewers, -1);
}

static void fe_hub_on_linger(uv_timer_t *t) {
  fe_hub *h = t->data;
  fe_debug("stream %s: no viewer on any loop for the linger time, closing the origin", h->key);
  fe_hub_destroy(h);
}

/* No viewer here and no loop fed from here: a pull lingers, a relay goes at once (the owner
 * lingers for the whole node). */
static void fe_hub_idle(fe_hub *h) {
  if (h->nviewers > 0 || h->nsubs > 0 || h->closing)
    return;
  if (h->state == FE_HS_LIVE && h->opts.linger > 0 && !h->relayed)
    uv_timer_start(&h->linger_timer, fe_hub_on_linger, (uint64_t)(h->opts.linger * 1000.0), 0);
  else
    fe_hub_destroy(h);
}

/* Ticks per merge window: each wakes 1/ticks of the groups, so every viewer is flushed once per
 * window, at its own instant. Short windows (libuv timers count milliseconds) and small audiences
 * (nothing to even out) use fewer ticks. */
static unsigned fe_hub_ticks(const fe_hub *h, uint32_t merge) {
  unsigned n = FE_HUB_GROUPS;
  while (n > 1 && (merge / n < 4 || h->nviewers < n * 32))
    n /= 2;
  return n;
}

static void fe_hub_on_merge(uv_timer_t *t);

/* Schedules the next tick merge/ticks after the last one (not after now: a late tick does not
 * stretch every group's period), never in the past. */
static void fe_hub_tick_next(fe_hub *h, uint32_t merge, unsigned ticks) {
  double now = (double)uv_now(&h->loop->uv);
  h->tick_due += (double)merge / ticks;
  if (h->tick_due < now)
    h->tick_due = now;
  uint64_t wait = (uint64_t)(h->tick_due - now + 0.999);
  uv_timer_start(&h->merge_timer, fe_hub_on_merge, wait, 0);
}

static void fe_hub_on_merge(uv_timer_t *t) {
  fe_hub *h = t->data;
  uint32_t merge = fe_hub_merge_ms(h);
  if (merge == 0) {
    uv_timer_stop(t);
    if (h->dirty)
      fe_hub_wake(h, h->dirty);
    return;
  }
  unsigned ticks = fe_hub_ticks(h, merge);
  unsigned slot = h->tick++ % ticks, groups = 0;
  for (unsigned g = slot; g < FE_HUB_GROUPS; g += ticks)
    groups |= 1u << g;
  if (h->dirty & groups)
    fe_hub_wake(h, h->dirty & groups);
  if (h->dirty && !h->closing)
    fe_hub_tick_next(h, merge, ticks);
}

/* The merge window now: fixed, or for "auto" by the loop's viewers (its own gauge, no atomics). */
static uint32_t fe_hub_merge_ms(const fe_hub *h) {
  if (!h->opts.merge_auto)
    return h->opts.merge_ms;
  uint64_t v = h->loop->metrics.viewers;
  if (v <= FE_MERGE_AUTO_FROM)
    return 0;
  if (v >= FE_MERGE_AUTO_FULL)
    return h->opts.merge_ms;
  return (uint32_t)((v - FE_MERGE_AUTO_FROM) * h->opts.merge_ms / (FE_MERGE_AUTO_FULL - FE_MERGE_AUTO_FROM));
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
 * restart, loop) is rebased to continue from the last one; small reorderings are clamped. A relay
 * carries the owner's output, which is monotonic already: rebasing it again could only differ. */
static uint32_t fe_hub_timestamp(fe_hub *h, uint32_t ts) {
  if (h->relayed) {
    h->last_ts = ts > h->last_ts ? ts : h->last_ts;
    return ts;
  }
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

static void fe_hub_keep(fe_hub *h, fe_block **slot, const uint8_t *data, uint32_t len) {
  fe_block *b = fe_block_copy(h, data, len);
  if (!b)
    return;
  if (*slot)
    fe_block_release(*slot);
  *slot = b;
}

/* ---- the sink: what the source delivers ---------------------------------------------------- */

static void fe_hub_sub_start(fe_hub *h, fe_relay_ch *ch);

static void fe_hub_on_start(void *sink, uint8_t flv_flags) {
  fe_hub *h = sink;
  if (h->state != FE_HS_CONNECTING)
    return;
  h->state = FE_HS_LIVE;
  h->flv_flags = flv_flags & (FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
  fe_debug("stream %s: started, %u viewer(s) waiting", h->key, h->nviewers);
  fe_viewer *next;
  for (int g = 0; g < FE_HUB_GROUPS; g++) {
    for (fe_viewer *v = h->groups[g]; v; v = next) {
      next = v->next;
      int hit = !v->behind_since;
      v->behind_since = 0;
      v->state = FE_VS_PREFIX;
      v->ops->start(v, hit);
    }
  }
  for (fe_relay_ch *ch = h->subs; ch; ch = ch->pub_next)
    fe_hub_sub_start(h, ch);
  /* Every viewer left while it was connecting: the linger starts now. */
  if (h->had_viewer)
    fe_hub_idle(h);
}

static int fe_hub_stamp(fe_hub *h, uint32_t ts);

static int fe_hub_on_tag(void *sink, const fe_flv_tag *tag) {
  fe_hub *h = sink;
  if (h->closing || h->state != FE_HS_LIVE)
    return FE_HUB_ENDED;

  uint32_t len = FE_FLV_TAG_OVERHEAD + tag->size;
  uint32_t ts = fe_hub_timestamp(h, tag->timestamp);
  int key = tag->type == FE_FLV_VIDEO && (tag->flags & FE_FLV_KEYFRAME);

  if (tag->type == FE_FLV_AUDIO)
    h->seen_flags |= FE_FLV_HAS_AUDIO;
  else if (tag->type == FE_FLV_VIDEO)
    h->seen_flags |= FE_FLV_HAS_VIDEO;

  if (!h->cur || h->cur->cap - h->cur->len < len) {
    if (h->cur)
      fe_block_release(h->cur);
    h->cur = fe_block_new(h, len > FE_BLOCK_SIZE ? len : FE_BLOCK_SIZE);
    if (!h->cur)
      return FE_FLV_ENOMEM;
  }
  if (fe_hub_grow_index(h) < 0)
    return FE_FLV_ENOMEM;
  uint8_t *dst = h->cur->data + h->cur->len;
  memcpy(dst, tag->data, len);
  fe_flv_set_timestamp(dst, ts);
  /* The edge writes a correct PreviousTagSize whatever the origin sent. */
  fe_flv_set_prev_size(dst, tag->size);

  if (tag->flags & FE_FLV_METADATA)
    fe_hub_keep(h, &h->meta, dst, len);
  else if (tag->flags & FE_FLV_SEQ_HEADER)
    fe_hub_keep(h, tag->type == FE_FLV_VIDEO ? &h->vseq : &h->aseq, dst, len);

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
  h->dirty = FE_HUB_ALL_GROUPS;
  fe_hub_trim(h);
  /* After the tag, not before: a stamp due at a keyframe is then inside the GOP viewers join. */
  if (h->opts.stamp_time && !h->relayed && !h->stamping && uv_now(&h->loop->uv) >= h->stamp_next)
    return fe_hub_stamp(h, tag->timestamp);
  return 0;
}

static void fe_hub_on_flush(void *sink) {
  fe_hub *h = sink;
  if (h->state != FE_HS_LIVE || h->closing)
    return;
  fe_hub_relay_flush(h);
  if (!h->dirty)
    return;
  uint32_t merge = fe_hub_merge_ms(h);
  if (merge == 0)
    fe_hub_wake_all(h);
  else if (!uv_is_active((uv_handle_t *)&h->merge_timer)) {
    h->tick_due = (double)uv_now(&h->loop->uv);
    fe_hub_tick_next(h, merge, fe_hub_ticks(h, merge));
  }
}

/* Before the stream started: every waiting viewer, here and on subscribed loops, gets the same
 * status and body. */
static void fe_hub_on_fail(void *sink, int status, const char *ctype, const uint8_t *body, size_t len) {
  fe_hub *h = sink;
  if (h->closing)
    return;
  while (h->subs) {
    fe_relay_ch *ch = h->subs;
    h->subs = ch->pub_next;
    fe_relay_send_fail(ch, status, ctype, body, len);
    fe_relay_ch_owner_drop(ch);
  }
  FE_METRIC_ADD(&h->loop->metrics, relay_subscribers, -(int64_t)h->nsubs);
  h->nsubs = 0;
  for (int g = 0; g < FE_HUB_GROUPS; g++)
    while (h->groups[g]) {
      fe_viewer *v = h->groups[g];
      fe_hub_detach(h, v);
      v->ops->fail(v, status, ctype, body, len);
    }
  fe_hub_destroy(h);
}

static void fe_hub_on_end(void *sink, int err) {
  fe_hub *h = sink;
  if (h->closing)
    return;
  if (err == FE_SOURCE_ERETRY && h->state == FE_HS_CONNECTING) {
    if (fe_hub_reopen(h) == 0)
      return;
    static const char msg[] = "502 the stream could not be opened\n";
    fe_hub_on_fail(h, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  if (h->state == FE_HS_CONNECTING) {
    static const char msg[] = "502 stream ended before it started\n";
    fe_hub_on_fail(h, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  fe_hub_end(h, err);
}

static void fe_hub_on_origin(void *sink, const char *url, int status) {
  fe_hub *h = sink;
  if (!h->origin || strcmp(h->origin, url) != 0) {
    char *copy = strdup(url);
    if (!copy)
      return;
    free(h->origin);
    h->origin = copy;
  }
  h->origin_status = status;
  for (fe_relay_ch *ch = h->subs; ch; ch = ch->pub_next)
    fe_relay_send_origin(ch, h->origin, status);
}

const fe_sink_ops fe_hub_sink = {
    .start = fe_hub_on_start,
    .tag = fe_hub_on_tag,
    .flush = fe_hub_on_flush,
    .fail = fe_hub_on_fail,
    .end = fe_hub_on_end,
    .origin = fe_hub_on_origin,
};

/* ---- the edge's clock in the stream -------------------------------------------------------- */

/* AMF0: a string without its marker (u16 length, bytes). */
static uint8_t *fe_amf_key(uint8_t *p, const char *s) {
  size_t n = strlen(s);
  *p++ = (uint8_t)(n >> 8);
  *p++ = (uint8_t)n;
  memcpy(p, s, n);
  return p + n;
}

static uint8_t *fe_amf_number(uint8_t *p, double v) {
  uint64_t bits;
  memcpy(&bits, &v, 8);
  *p++ = 0; /* number marker */
  for (int i = 7; i >= 0; i--)
    *p++ = (uint8_t)(bits >> (8 * i));
  return p;
}

static uint8_t *fe_amf_string(uint8_t *p, const char *s) {
  *p++ = 2; /* string marker */
  return fe_amf_key(p, s);
}

/*
 * Inserts `onFI {sd, st, edge_ms}` at stream time ts (the origin's, before rebasing, as the tag it
 * precedes): the edge's wall clock, once a second, in the window like any tag, so every viewer on
 * every loop gets the same bytes and a player can tell how old what it plays is. sd/st are the
 * date and time strings encoders write into onFI; edge_ms is Unix milliseconds.
 */
static int fe_hub_stamp(fe_hub *h, uint32_t ts) {
  h->stamp_next = uv_now(&h->loop->uv) + 1000;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double ms = (double)now.tv_sec * 1000.0 + (double)(now.tv_nsec / 1000000);
  struct tm tm;
  time_t secs = now.tv_sec;
  gmtime_r(&secs, &tm);
  char sd[16], st[24];
  strftime(sd, sizeof(sd), "%d-%m-%Y", &tm);
  snprintf(st, sizeof(st), "%02d:%02d:%02d.%03ld", tm.tm_hour, tm.tm_min, tm.tm_sec,
           now.tv_nsec / 1000000);
  uint8_t buf[160], *p = buf + FE_FLV_TAG_HEADER_SIZE;
  p = fe_amf_string(p, "onFI");
  *p++ = 3; /* object */
  p = fe_amf_key(p, "sd");
  p = fe_amf_string(p, sd);
  p = fe_amf_key(p, "st");
  p = fe_amf_string(p, st);
  p = fe_amf_key(p, "edge_ms");
  p = fe_amf_number(p, ms);
  *p++ = 0;
  *p++ = 0;
  *p++ = 9; /* object end */
  uint32_t size = (uint32_t)(p - buf - FE_FLV_TAG_HEADER_SIZE);
  buf[0] = FE_FLV_SCRIPT;
  buf[1] = (uint8_t)(size >> 16);
  buf[2] = (uint8_t)(size >> 8);
  buf[3] = (uint8_t)size;
  memset(buf + 4, 0, 7); /* timestamp and stream id: the timestamp is set when appended */
  p += FE_FLV_PREV_SIZE;  /* PreviousTagSize: set when appended */
  fe_flv_tag tag = {.data = buf, .type = FE_FLV_SCRIPT, .size = size, .timestamp = ts};
  h->stamping = 1;
  int rc = fe_hub_on_tag(h, &tag);
  h->stamping = 0;
  return rc;
}

/* ---- other loops fed from here ------------------------------------------------------------- */

static size_t fe_hub_span_bytes(const fe_hub *h, uint64_t from) {
  size_t n = 0;
  for (uint64_t s = from; s < h->tail; s++)
    n += h->tags[s & h->mask].len;
  return n;
}

static uint8_t *fe_hub_copy_tags(const fe_hub *h, uint8_t *out, uint64_t from) {
  for (uint64_t s = from; s < h->tail; s++) {
    const fe_tagref *t = &h->tags[s & h->mask];
    memcpy(out, t->blk->data + t->off, t->len);
    out += t->len;
  }
  return out;
}

/* A loop subscribes to a live stream: the start, the join prefix and the whole window, one copy. */
static void fe_hub_sub_start(fe_hub *h, fe_relay_ch *ch) {
  fe_relay_send_start(ch, h->flv_flags | h->seen_flags);
  const fe_block *prefix[] = {h->meta, h->vseq, h->aseq};
  size_t len = fe_hub_span_bytes(h, h->head);
  for (int i = 0; i < 3; i++)
    len += prefix[i] ? prefix[i]->len : 0;
  uint8_t *p;
  fe_relay_msg *m = fe_relay_tags_new(len, &p);
  if (m) {
    for (int i = 0; i < 3; i++)
      if (prefix[i]) {
        memcpy(p, prefix[i]->data, prefix[i]->len);
        p += prefix[i]->len;
      }
    fe_hub_copy_tags(h, p, h->head);
    FE_METRIC_ADD(&h->loop->metrics, relay_bytes_out, len);
    fe_relay_send_msg(ch, m);
  }
  ch->next = h->tail;
  ch->started = 1;
}

/* What came in since the last flush goes to every subscribed loop, one copy each. A loop that
 * does not take its messages is skipped and, once the window moved past it, resumes at the
 * newest keyframe, as a slow viewer does. */
static void fe_hub_relay_flush(fe_hub *h) {
  for (fe_relay_ch *ch = h->subs; ch; ch = ch->pub_next) {
    if (!ch->started || ch->next == h->tail)
      continue;
    if (ch->next < h->head) {
      ch->next = h->gop_start != FE_NO_SEQ ? h->gop_start : h->tail;
      FE_METRIC_INC(&h->loop->metrics, relay_dropped);
    }
    if (ch->next == h->tail || fe_relay_queued(ch) > h->opts.window_bytes)
      continue;
    size_t len = fe_hub_span_bytes(h, ch->next);
    uint8_t *p;
    fe_relay_msg *m = fe_relay_tags_new(len, &p);
    if (!m)
      continue;
    fe_hub_copy_tags(h, p, ch->next);
    ch->next = h->tail;
    FE_METRIC_ADD(&h->loop->metrics, relay_bytes_out, len);
    fe_relay_send_msg(ch, m);
  }
}

static void fe_hubs_on_subscribe(void *ud, const char *key, fe_relay_ch *ch) {
  fe_hubs *t = ud;
  fe_hub *h = fe_hub_find(t, key);
  if (!h || !h->owner || h->closing || h->state == FE_HS_ENDED) {
    fe_relay_send_end(ch, FE_SOURCE_ERETRY);
    fe_relay_ch_owner_drop(ch);
    return;
  }
  ch->pub = h;
  ch->pub_next = h->subs;
  h->subs = ch;
  if (h->origin)
    fe_relay_send_origin(ch, h->origin, h->origin_status);
  h->nsubs++;
  FE_METRIC_INC(&t->loop->metrics, relay_subscribers);
  uv_timer_stop(&h->linger_timer);
  if (h->state == FE_HS_LIVE)
    fe_hub_sub_start(h, ch);
}

static void fe_hubs_on_unsubscribe(void *ud, fe_relay_ch *ch) {
  if (ch->pub_dropped)
    return;
  fe_hub *h = ch->pub;
  fe_relay_ch **pp = &h->subs;
  while (*pp && *pp != ch)
    pp = &(*pp)->pub_next;
  if (*pp) {
    *pp = ch->pub_next;
    h->nsubs--;
    FE_METRIC_ADD(&h->loop->metrics, relay_subscribers, -1);
  }
  fe_relay_ch_owner_drop(ch);
  fe_hub_idle(h);
}

const fe_relay_handlers fe_hubs_relay_handlers = {
    .subscribe = fe_hubs_on_subscribe,
    .unsubscribe = fe_hubs_on_unsubscribe,
};

/* ---- opening ------------------------------------------------------------------------------- */

/* Finds the stream's source: this loop's own pull when no loop has it, else a relay. */
static int fe_hub_attach_source(fe_hub *h) {
  int own = 1;
  if (h->t->node) {
    fe_relay_count *count;
    own = fe_relay_claim(h->t->node, h->loop->id, h->key, &fe_hub_sink, h, &h->src, &count);
    if (own < 0)
      return own;
    if (h->count != &h->own_count) {
      /* Reopened: the new owner's count; this loop's viewers move over. */
      __atomic_sub_fetch(&h->count->viewers, (int)h->nviewers, __ATOMIC_RELAXED);
      fe_relay_count_unref(h->count);
    }
    __atomic_add_fetch(&count->viewers, (int)h->nviewers, __ATOMIC_RELAXED);
    h->count = count;
  }
  if (!own) {
    h->relayed = 1;
    h->had_viewer = 1; /* the owner loop's first viewer is the MISS */
    return 0;
  }
  h->owner = 1;
  h->relayed = 0;
  if (!h->opts.open_pull)
    return 0; /* fed by the caller through fe_hub_sink */
  h->src = h->opts.open_pull(h->opts.pull_ud, h->loop, h->key, &fe_hub_sink, h, &h->stats);
  return h->src ? 0 : UV_ENOMEM;
}

/* The owner this relay subscribed to went away before the stream started: claim it again. */
static int fe_hub_reopen(fe_hub *h) {
  fe_hub_close_source(h);
  if (++h->reopens > FE_MAX_REOPENS)
    return -1;
  fe_debug("stream %s: the owning loop let it go; opening it again", h->key);
  return fe_hub_attach_source(h);
}

fe_hubs *fe_hubs_new(fe_loop *l, fe_relay_node *node) {
  fe_hubs *t = calloc(1, sizeof(*t));
  if (t) {
    t->loop = l;
    t->node = node;
  }
  return t;
}

void fe_hubs_free(fe_hubs *t) {
  free(t);
}

fe_hub *fe_hub_open(fe_hubs *t, const char *key, const fe_hub_opts *opts) {
  fe_hub *h = fe_hub_find(t, key);
  if (h)
    return h;
  h = calloc(1, sizeof(*h));
  if (!h)
    return NULL;
  h->t = t;
  h->loop = t->loop;
  h->key = strdup(key);
  h->opts = *opts;
  h->mask = 255;
  h->tags = malloc((h->mask + 1) * sizeof(*h->tags));
  h->gop_start = FE_NO_SEQ;
  h->count = &h->own_count;
  h->opened_ms = uv_now(&t->loop->uv);
  if (!h->key || !h->tags) {
    free(h->key);
    free(h->tags);
    free(h);
    return NULL;
  }
  for (int i = 0; i < 4; i++)
    fe_flv_write_file_header(h->headers[i], (uint8_t)(((i & 2) ? FE_FLV_HAS_AUDIO : 0) |
                                                      ((i & 1) ? FE_FLV_HAS_VIDEO : 0)));
  uv_timer_init(&t->loop->uv, &h->linger_timer);
  uv_timer_init(&t->loop->uv, &h->merge_timer);
  h->linger_timer.data = h->merge_timer.data = h;
  h->handles = 2;
  unsigned b = fe_hash(key);
  h->hnext = t->table[b];
  t->table[b] = h;
  h->in_table = 1;
  FE_METRIC_INC(&t->loop->metrics, streams);
  if (fe_hub_attach_source(h) < 0) {
    /* The caller answers 503 and still owns pull_ud. */
    h->opts.free_pull_ud = NULL;
    fe_hub_destroy(h);
    return NULL;
  }
  return h;
}

void fe_hubs_end_all(fe_hubs *t) {
  for (int i = 0; i < FE_HUB_BUCKETS; i++)
    while (t->table[i])
      fe_hub_end(t->table[i], 0);
}

/* ---- viewers ------------------------------------------------------------------------------- */

int fe_hub_join(fe_hub *h, fe_viewer *v, const fe_viewer_ops *ops, uint8_t want) {
  if (h->state == FE_HS_ENDED)
    return FE_HUB_ENDED;
  /* Node-wide: the count is shared by the stream's hubs on every loop. */
  if (__atomic_add_fetch(&h->count->viewers, 1, __ATOMIC_RELAXED) > (int)h->opts.max_viewers) {
    __atomic_sub_fetch(&h->count->viewers, 1, __ATOMIC_RELAXED);
    return FE_HUB_EFULL;
  }
  v->ops = ops;
  v->hub = h;
  v->want = want;
  v->npins = 0;
  v->frames_dropped = 0;
  v->keyframe_sent = 0;
  v->stats = &h->stats;
  h->stats.joins++;
  /* behind_since doubles as the MISS mark until the stream starts. */
  v->behind_since = h->had_viewer ? 0 : 1;
  h->had_viewer = 1;
  /* The smallest group: staggered flushes stay even. */
  int g = 0;
  for (int i = 1; i < FE_HUB_GROUPS; i++)
    if (h->gcount[i] < h->gcount[g])
      g = i;
  v->group = (uint8_t)g;
  v->prev = NULL;
  v->next = h->groups[g];
  if (h->groups[g])
    h->groups[g]->prev = v;
  h->groups[g] = v;
  h->gcount[g]++;
  h->nviewers++;
  FE_METRIC_INC(&h->loop->metrics, viewers);
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
  /* An owner still connecting waits for the origin's answer; a relay goes now. */
  if (h->state != FE_HS_CONNECTING || h->relayed)
    fe_hub_idle(h);
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
  return !((h->flv_flags | h->seen_flags) & FE_FLV_HAS_VIDEO) || h->tail >= FE_READY_FALLBACK_TAGS;
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
    uint8_t flags = (h->flv_flags | h->seen_flags) & (FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
    if (v->want == FE_HUB_WANT_AUDIO)
      flags = FE_FLV_HAS_AUDIO;
    else if (v->want == FE_HUB_WANT_VIDEO)
      flags = FE_FLV_HAS_VIDEO;
    int idx = ((flags & FE_FLV_HAS_AUDIO) ? 2 : 0) | ((flags & FE_FLV_HAS_VIDEO) ? 1 : 0);
    fe_fill_add(&f, NULL, h->headers[idx], FE_FLV_FILE_HEADER_SIZE);
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
    FE_METRIC_ADD(&h->loop->metrics, frames_dropped, v->cursor - from);
    FE_METRIC_INC(&h->loop->metrics, viewer_jumps);
    h->stats.frames_dropped += v->cursor - from;
    h->stats.viewer_jumps++;
    if (!v->behind_since)
      v->behind_since = uv_now(&h->loop->uv);
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
    if (!skip && t->type == FE_FLV_VIDEO && (t->flags & FE_FLV_KEYFRAME))
      v->keyframe_sent = 1;
    v->cursor++;
  }
  if (v->cursor == h->tail)
    v->behind_since = 0;
  *bytes = f.bytes;
  return f.n;
}

/* ---- what the admin API sees --------------------------------------------------------------- */

/* The codec of a sequence header tag, by the FLV (or enhanced-RTMP FourCC) codec id. */
static void fe_hub_codec(const fe_block *b, int video, char *out) {
  out[0] = 0;
  if (!b || b->len <= FE_FLV_TAG_HEADER_SIZE)
    return;
  const uint8_t *d = b->data + FE_FLV_TAG_HEADER_SIZE;
  size_t n = b->len - FE_FLV_TAG_OVERHEAD;
  if (video && (d[0] & 0x80) && n >= 5) { /* enhanced: a FourCC */
    for (int i = 0; i < 4; i++)
      out[i] = (char)((d[1 + i] >= 0x20 && d[1 + i] < 0x7f) ? d[1 + i] : '?');
    out[4] = 0;
    return;
  }
  static const char *const vnames[16] = {[2] = "h263", [4] = "vp6", [7] = "avc", [12] = "hevc"};
  static const char *const anames[16] = {[2] = "mp3", [10] = "aac", [11] = "speex", [13] = "opus"};
  const char *name = video ? vnames[d[0] & 0x0f] : anames[d[0] >> 4];
  snprintf(out, 8, "%s", name ? name : "other");
}

static int fe_hub_info_fill(const fe_hub *h, fe_hub_info *i) {
  memset(i, 0, sizeof(*i));
  i->key = strdup(h->key);
  i->origin = h->origin ? strdup(h->origin) : NULL;
  if (!i->key || (h->origin && !i->origin))
    return -1;
  i->origin_status = h->origin_status;
  i->owner = h->owner;
  i->live = h->state == FE_HS_LIVE;
  i->viewers = h->nviewers;
  i->stats_slot = h->opts.stats_slot;
  i->uptime = (double)(uv_now(&h->loop->uv) - h->opened_ms) / 1000.0;
  i->window_bytes = h->bytes;
  if (h->tail > h->head) {
    uint32_t span = h->last_ts - h->tags[h->head & h->mask].ts;
    if (span >= 500)
      i->bitrate = (uint64_t)h->bytes * 8000u / span;
  }
  fe_hub_codec(h->vseq, 1, i->vcodec);
  fe_hub_codec(h->aseq, 0, i->acodec);
  i->stats = h->stats;
  return 0;
}

void fe_hub_info_free(fe_hub_info *info, int n) {
  for (int k = 0; info && k < n; k++) {
    free(info[k].key);
    free(info[k].origin);
  }
  free(info);
}

int fe_hubs_snapshot(fe_hubs *t, const char *key, fe_hub_info **out) {
  *out = NULL;
  int n = 0, cap = 0;
  fe_hub_info *arr = NULL;
  for (int b = 0; b < FE_HUB_BUCKETS; b++)
    for (const fe_hub *h = t->table[b]; h; h = h->hnext) {
      if (h->closing || (key && strcmp(h->key, key) != 0))
        continue;
      if (n == cap) {
        int ncap = cap ? cap * 2 : 16;
        fe_hub_info *na = realloc(arr, (size_t)ncap * sizeof(*na));
        if (!na) {
          fe_hub_info_free(arr, n);
          return -1;
        }
        arr = na;
        cap = ncap;
      }
      if (fe_hub_info_fill(h, &arr[n++]) < 0) {
        fe_hub_info_free(arr, n);
        return -1;
      }
    }
  *out = arr;
  return n;
}

int fe_hubs_kick(fe_hubs *t, const char *key) {
  fe_hub *h = fe_hub_find(t, key);
  if (!h)
    return 0;
  int n = 0;
  for (int g = 0; g < FE_HUB_GROUPS; g++)
    while (h->groups[g]) {
      fe_viewer *v = h->groups[g];
      h->stats.viewers_kicked++;
      n++;
      if (v->ops->kick)
        v->ops->kick(v);
      if (h->groups[g] == v) /* a transport that could not let go: off the hub anyway */
        fe_hub_leave(v);
    }
  return n;
}
