/* The live window without a socket: a fake viewer transport collects what fe_hub_viewer_fill gives. */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "fe_test.h"
#include "flv/fe_flv.h"
#include "hub/fe_hub.h"
#include "loop/fe_loop.h"

/* Every story runs on one loop with no other loop: the hub is its own stream's owner. */
static fe_loop fe_L;
static fe_hubs *fe_T;

/* ---- test ingest: a source that is the test itself ----------------------------------------- */

typedef struct fe_feed {
  fe_hub *h;
  int started;
} fe_feed;

static int fe_feed_tag(void *ud, const fe_flv_tag *tag) {
  fe_feed *f = ud;
  if (!f->started) {
    f->started = 1;
    fe_hub_sink.start(f->h, FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
  }
  return fe_hub_sink.tag(f->h, tag);
}

/* Feeds FLV bytes (the file header first) as an origin pull would, then flushes. */
static fe_flv_parser fe_feed_parser; /* the current hub's: reset by fe_hub_create */

static int fe_hub_ingest(fe_hub *h, const uint8_t *data, size_t len) {
  fe_flv_parser *p = &fe_feed_parser;
  fe_feed f = {h, p->tags > 0};
  int rc = fe_flv_parser_feed(p, data, len, fe_feed_tag, &f);
  if (rc < 0) {
    fe_hub_sink.end(h, rc);
    return rc;
  }
  fe_hub_sink.flush(h);
  return 0;
}

/* A hub fed by the test: started at once, as a source that answered 200. */
static fe_hub *fe_hub_create(const char *key, const fe_hub_opts *o) {
  fe_flv_parser_free(&fe_feed_parser);
  fe_flv_parser_init(&fe_feed_parser, 1u << 20);
  fe_hub *h = fe_hub_open(fe_T, key, o);
  fe_hub_sink.start(h, FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
  return h;
}

#define fe_stats (fe_L.metrics)

/* ---- a synthetic stream -------------------------------------------------------------------- */

typedef struct fe_gen {
  uint8_t *buf;
  size_t len, cap;
} fe_gen;

static void fe_gen_put(fe_gen *g, const void *p, size_t n) {
  if (g->len + n > g->cap) {
    g->cap = (g->len + n) * 2;
    g->buf = realloc(g->buf, g->cap);
  }
  memcpy(g->buf + g->len, p, n);
  g->len += n;
}

static void fe_gen_header(fe_gen *g) {
  uint8_t h[FE_FLV_FILE_HEADER_SIZE];
  fe_flv_write_file_header(h, FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
  fe_gen_put(g, h, sizeof(h));
}

/* A tag whose payload starts with b0 b1 and is padded to `size` bytes. */
static void fe_gen_tag(fe_gen *g, uint8_t type, uint32_t ts, uint8_t b0, uint8_t b1, uint32_t size) {
  uint8_t h[11] = {type, (uint8_t)(size >> 16), (uint8_t)(size >> 8), (uint8_t)size};
  fe_flv_set_timestamp(h, ts);
  fe_gen_put(g, h, 11);
  uint8_t *payload = calloc(1, size);
  payload[0] = b0;
  if (size > 1)
    payload[1] = b1;
  fe_gen_put(g, payload, size);
  free(payload);
  uint32_t prev = 11 + size;
  uint8_t p[4] = {(uint8_t)(prev >> 24), (uint8_t)(prev >> 16), (uint8_t)(prev >> 8), (uint8_t)prev};
  fe_gen_put(g, p, 4);
}

static void fe_gen_meta(fe_gen *g) {
  static const uint8_t amf[] = {2, 0, 10, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a', 8, 0, 0, 0, 0, 0, 0, 9};
  uint8_t h[11] = {FE_FLV_SCRIPT, 0, 0, sizeof(amf)};
  fe_gen_put(g, h, 11);
  fe_gen_put(g, amf, sizeof(amf));
  uint8_t p[4] = {0, 0, 0, 11 + sizeof(amf)};
  fe_gen_put(g, p, 4);
}

static void fe_gen_start(fe_gen *g) {
  fe_gen_header(g);
  fe_gen_meta(g);
  fe_gen_tag(g, FE_FLV_VIDEO, 0, 0x17, 0, 40); /* AVC sequence header */
  fe_gen_tag(g, FE_FLV_AUDIO, 0, 0xAF, 0, 4);  /* AAC sequence header */
}

/* One GOP: a keyframe and `frames - 1` inter frames at 40 ms, an audio frame after each. */
static void fe_gen_gop(fe_gen *g, uint32_t *ts, int frames, uint32_t frame_size) {
  for (int i = 0; i < frames; i++) {
    fe_gen_tag(g, FE_FLV_VIDEO, *ts, i == 0 ? 0x17 : 0x27, 1, frame_size);
    fe_gen_tag(g, FE_FLV_AUDIO, *ts, 0xAF, 1, 200);
    *ts += 40;
  }
}

/* ---- a viewer that collects ---------------------------------------------------------------- */

typedef struct fe_tview {
  fe_viewer v; /* first: the ops recover the struct by cast */
  int started, hit, failed, wakes;
  fe_gen got;
  const uint8_t *first_ptr; /* the first media span, to compare identities across viewers */
  int nspans;               /* the spans it was handed, to tell shared memory from copies */
  const uint8_t *span_p[256];
  size_t span_len[256];
  int leave_on_wake;        /* a transport whose write fails inside wake: it leaves there */
  uint64_t first_wake_at;   /* loop ms + 1 of its first wake (0: never woken) */
} fe_tview;

/* 1 when p lies inside one of the spans t was handed. */
static int fe_tv_was_handed(const fe_tview *t, const uint8_t *p) {
  for (int i = 0; i < t->nspans; i++)
    if (p >= t->span_p[i] && p < t->span_p[i] + t->span_len[i])
      return 1;
  return 0;
}

static void fe_tv_start(fe_viewer *v, int hit) {
  fe_tview *t = (fe_tview *)v;
  t->started = 1;
  t->hit = hit;
}

static void fe_tv_fail(fe_viewer *v, int status, const char *ct, const uint8_t *b, size_t n) {
  ((fe_tview *)v)->failed = status;
}

static void fe_tv_wake(fe_viewer *v) {
  fe_tview *t = (fe_tview *)v;
  t->wakes++;
  if (!t->first_wake_at)
    t->first_wake_at = uv_now(&fe_L.uv) + 1;
  if (t->leave_on_wake)
    fe_hub_leave(v);
}

static const fe_viewer_ops fe_tv_ops = {.start = fe_tv_start, .fail = fe_tv_fail, .wake = fe_tv_wake};

/* Drains what the hub has for the viewer, as a transport that writes everything at once. */
static size_t fe_tv_drain(fe_tview *t) {
  size_t total = 0;
  for (;;) {
    uv_buf_t iov[64];
    size_t bytes;
    int n = fe_hub_viewer_fill(&t->v, iov, 64, 1 << 20, &bytes);
    if (n == 0)
      return total;
    for (int i = 0; i < n; i++) {
      if (!t->first_ptr && iov[i].len > FE_FLV_FILE_HEADER_SIZE)
        t->first_ptr = (const uint8_t *)iov[i].base;
      if (t->nspans < 256) {
        t->span_p[t->nspans] = (const uint8_t *)iov[i].base;
        t->span_len[t->nspans++] = iov[i].len;
      }
      fe_gen_put(&t->got, iov[i].base, iov[i].len);
    }
    total += bytes;
    fe_hub_viewer_release(&t->v);
  }
}

typedef struct fe_seen {
  int n;
  uint8_t type[4096];
  uint8_t b0[4096], b1[4096];
  uint32_t ts[4096];
  int prev_ok;
} fe_seen;

/* Splits collected bytes into tags (they start with a 13-byte FLV header). */
static void fe_tv_tags(const fe_tview *t, fe_seen *s, uint8_t *flags) {
  memset(s, 0, sizeof(*s));
  s->prev_ok = 1;
  const uint8_t *p = t->got.buf;
  size_t len = t->got.len;
  if (len < FE_FLV_FILE_HEADER_SIZE)
    return;
  *flags = p[4];
  size_t off = FE_FLV_FILE_HEADER_SIZE;
  while (off + 11 <= len && s->n < 4096) {
    uint32_t size = (uint32_t)p[off + 1] << 16 | (uint32_t)p[off + 2] << 8 | p[off + 3];
    s->type[s->n] = p[off];
    s->b0[s->n] = p[off + 11];
    s->b1[s->n] = size > 1 ? p[off + 12] : 0;
    s->ts[s->n] = fe_flv_get_timestamp(p + off);
    const uint8_t *q = p + off + 11 + size;
    uint32_t prev = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
    if (prev != 11 + size)
      s->prev_ok = 0;
    s->n++;
    off += 15 + size;
  }
}

static fe_hub_opts fe_opts(void) {
  fe_hub_opts o = {.window_seconds = 0, .window_bytes = 8u << 20, .merge_ms = 0, .linger = 0,
                   .max_viewers = 100};
  return o;
}

/* ---- stories ------------------------------------------------------------------------------- */

static void test_first_viewer_waits_for_a_keyframe_then_gets_headers_first(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/first", &o);
  fe_tview a = {0};
  FE_CHECK_EQ(fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL), 0);
  FE_CHECK(a.started);
  fe_gen g = {0};
  fe_gen_start(&g);
  fe_hub_ingest(h, g.buf, g.len);
  FE_CHECK_EQ(fe_tv_drain(&a), 0); /* no keyframe yet: nothing to start from */
  g.len = 0;
  uint32_t ts = 0;
  fe_gen_gop(&g, &ts, 10, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  FE_CHECK(a.wakes > 0);
  fe_tv_drain(&a);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&a, &s, &flags);
  FE_CHECK_EQ(flags, FE_FLV_HAS_AUDIO | FE_FLV_HAS_VIDEO);
  FE_CHECK_EQ(s.type[0], FE_FLV_SCRIPT);
  FE_CHECK(s.type[1] == FE_FLV_VIDEO && s.b1[1] == 0); /* AVC sequence header */
  FE_CHECK(s.type[2] == FE_FLV_AUDIO && s.b1[2] == 0); /* AAC sequence header */
  FE_CHECK(s.type[3] == FE_FLV_VIDEO && s.b0[3] == 0x17 && s.b1[3] == 1);
  FE_CHECK_EQ(s.n, 3 + 20);
  FE_CHECK(s.prev_ok);
  fe_hub_leave(&a.v);
  free(a.got.buf);
  free(g.buf);
}

static void test_late_joiner_starts_at_the_newest_keyframe(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/late", &o);
  fe_tview early = {0}, late = {0};
  fe_hub_join(h, &early.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  for (int i = 0; i < 3; i++)
    fe_gen_gop(&g, &ts, 10, 1000);
  fe_gen_tag(&g, FE_FLV_VIDEO, ts, 0x27, 1, 500); /* inside the third GOP... */
  fe_gen_gop(&g, &ts, 4, 1000);                  /* ...then a fourth starts */
  fe_hub_ingest(h, g.buf, g.len);
  fe_tv_drain(&early);
  FE_CHECK_EQ(fe_hub_join(h, &late.v, &fe_tv_ops, FE_HUB_WANT_ALL), 0);
  FE_CHECK(late.started && late.hit);
  fe_tv_drain(&late);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&late, &s, &flags);
  FE_CHECK(s.type[3] == FE_FLV_VIDEO && s.b0[3] == 0x17 && s.b1[3] == 1);
  FE_CHECK_EQ(s.ts[3], 30 * 40); /* the fourth GOP's keyframe */
  FE_CHECK_EQ(s.n, 3 + 8);
  /* Both viewers were handed the same bytes, not copies. */
  fe_seen e;
  fe_tv_tags(&early, &e, &flags);
  FE_CHECK(late.first_ptr != NULL && fe_tv_was_handed(&early, late.first_ptr));
  fe_hub_leave(&early.v);
  fe_hub_leave(&late.v);
  free(early.got.buf);
  free(late.got.buf);
  free(g.buf);
}

static void test_viewers_share_the_same_memory(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/share", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 5, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview a = {0}, b = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_hub_join(h, &b.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  uv_buf_t ia[64], ib[64];
  size_t na, nb;
  int ca = fe_hub_viewer_fill(&a.v, ia, 64, 1 << 20, &na);
  int cb = fe_hub_viewer_fill(&b.v, ib, 64, 1 << 20, &nb);
  FE_CHECK_EQ(ca, cb);
  FE_CHECK_EQ(na, nb);
  for (int i = 0; i < ca && i < cb; i++)
    FE_CHECK(ia[i].base == ib[i].base && ia[i].len == ib[i].len);
  /* Contiguous tags of one block go out as one span: far fewer spans than tags. */
  FE_CHECK(ca < 8);
  fe_hub_viewer_release(&a.v);
  fe_hub_viewer_release(&b.v);
  fe_hub_leave(&a.v);
  fe_hub_leave(&b.v);
  free(g.buf);
}

static void test_only_audio_gets_audio_and_its_own_header(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/audio", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 5, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview a = {0}, v = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_AUDIO);
  fe_hub_join(h, &v.v, &fe_tv_ops, FE_HUB_WANT_VIDEO);
  fe_tv_drain(&a);
  fe_tv_drain(&v);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&a, &s, &flags);
  FE_CHECK_EQ(flags, FE_FLV_HAS_AUDIO);
  int other = 0;
  for (int i = 0; i < s.n; i++)
    other += s.type[i] != FE_FLV_AUDIO;
  FE_CHECK_EQ(other, 0);
  FE_CHECK_EQ(s.n, 1 + 5);
  fe_tv_tags(&v, &s, &flags);
  FE_CHECK_EQ(flags, FE_FLV_HAS_VIDEO);
  other = 0;
  for (int i = 0; i < s.n; i++)
    other += s.type[i] != FE_FLV_VIDEO;
  FE_CHECK_EQ(other, 0);
  FE_CHECK(s.b0[1] == 0x17 && s.b1[1] == 1);
  fe_hub_leave(&a.v);
  fe_hub_leave(&v.v);
  free(a.got.buf);
  free(v.got.buf);
  free(g.buf);
}

static void test_a_viewer_that_falls_behind_jumps_to_the_newest_keyframe(void) {
  fe_hub_opts o = fe_opts();
  o.window_bytes = 256 * 1024; /* a few GOPs of 10 x 5 KB */
  fe_hub *h = fe_hub_create("t/slow", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 10, 5000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview slow = {0}, fast = {0};
  fe_hub_join(h, &slow.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_hub_join(h, &fast.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_tv_drain(&slow);
  fe_tv_drain(&fast);
  size_t slow_before = slow.got.len;
  uint64_t jumps = fe_stats.viewer_jumps;
  for (int i = 0; i < 40; i++) { /* 2 MB pass while the slow one reads nothing */
    g.len = 0;
    fe_gen_gop(&g, &ts, 10, 5000);
    fe_hub_ingest(h, g.buf, g.len);
    fe_tv_drain(&fast);
    FE_CHECK(fe_stats.window_bytes <= o.window_bytes + 2 * 65536 + 4096);
  }
  fe_tv_drain(&slow);
  FE_CHECK_EQ(fe_stats.viewer_jumps, jumps + 1);
  FE_CHECK(slow.v.frames_dropped > 0);
  FE_CHECK(slow.v.behind_since == 0); /* it caught up after the jump */
  /* What the slow one got after the jump starts at a keyframe. */
  const uint8_t *p = slow.got.buf + slow_before;
  FE_CHECK(p[0] == FE_FLV_VIDEO && p[11] == 0x17 && p[12] == 1);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&fast, &s, &flags);
  FE_CHECK_EQ(s.n, 3 + 41 * 20); /* the fast one lost nothing */
  fe_hub_leave(&slow.v);
  fe_hub_leave(&fast.v);
  free(slow.got.buf);
  free(fast.got.buf);
  free(g.buf);
}

static void test_timestamps_stay_monotonic_when_the_origin_restarts(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/ts", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_gen g = {0};
  uint32_t ts = 100000;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 5, 100);
  fe_hub_ingest(h, g.buf, g.len);
  g.len = 0;
  ts = 0; /* the origin restarted its clock */
  fe_gen_gop(&g, &ts, 5, 100);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tv_drain(&a);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&a, &s, &flags);
  int backwards = 0;
  for (int i = 4; i < s.n; i++)
    backwards += s.ts[i] < s.ts[i - 1];
  FE_CHECK_EQ(backwards, 0);
  FE_CHECK(s.ts[s.n - 1] >= 100000 + 4 * 40);
  fe_hub_leave(&a.v);
  free(a.got.buf);
  free(g.buf);
}

static void test_malformed_input_ends_the_stream(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/bad", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  FE_CHECK(fe_hub_find(fe_T, "t/bad") == h);
  fe_hub_ingest(h, (const uint8_t *)"NOT FLV AT ALL", 14);
  FE_CHECK(fe_hub_viewer_done(&a.v));
  FE_CHECK(fe_hub_find(fe_T, "t/bad") == NULL); /* the next request starts afresh */
  fe_hub_leave(&a.v);
}

static void test_viewer_limit(void) {
  fe_hub_opts o = fe_opts();
  o.max_viewers = 1;
  fe_hub *h = fe_hub_create("t/limit", &o);
  fe_tview a = {0}, b = {0};
  FE_CHECK_EQ(fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL), 0);
  FE_CHECK_EQ(fe_hub_join(h, &b.v, &fe_tv_ops, FE_HUB_WANT_ALL), FE_HUB_EFULL);
  fe_hub_leave(&a.v);
}


/* A viewer whose write fails while the hub wakes everyone leaves inside wake; with linger 0 that
 * ends the hub inside its own flush, whose pass then still walks on. Under ASan this read freed
 * memory before teardown was deferred to the loop's safe point. */
static void test_hub_is_not_freed_inside_its_own_callback(void) {
  fe_hub_opts o = fe_opts();
  o.merge_ms = 0;
  o.linger = 0;
  fe_hub *h = fe_hub_create("t/defer", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  a.leave_on_wake = 1;
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 5, 1000);
  fe_gen_gop(&g, &ts, 5, 1000);
  fe_hub_ingest(h, g.buf, g.len); /* one read, one flush: the viewer leaves inside it */
  FE_CHECK_EQ(a.wakes, 1);
  FE_CHECK(a.v.hub == NULL);
  FE_CHECK(fe_hub_find(fe_T, "t/defer") == NULL);
  FE_CHECK_EQ(fe_stats.streams, 0);
  FE_CHECK(fe_stats.window_bytes > 0); /* freed at the safe point, not yet */
  uv_run(&fe_L.uv, UV_RUN_NOWAIT);
  FE_CHECK_EQ(fe_stats.window_bytes, 0);
  free(g.buf);
}

static void test_window_seconds_keeps_older_gops(void) {
  fe_hub_opts o = fe_opts();
  o.window_seconds = 1.0; /* 25 frames at 40 ms */
  fe_hub *h = fe_hub_create("t/window", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  for (int i = 0; i < 6; i++)
    fe_gen_gop(&g, &ts, 10, 1000); /* 400 ms GOPs */
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview late = {0};
  fe_hub_join(h, &late.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_tv_drain(&late);
  fe_seen s;
  uint8_t flags = 0;
  fe_tv_tags(&late, &s, &flags);
  FE_CHECK_EQ(s.ts[3], 5 * 400); /* a joiner still starts at the newest keyframe */
  /* The window behind it holds what is within a second of the newest tag, whole GOPs from there:
   * a viewer that falls behind by less than that is not moved. */
  fe_tview slow = {0};
  fe_hub_join(h, &slow.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  uint64_t jumps = fe_stats.viewer_jumps;
  g.len = 0;
  fe_gen_gop(&g, &ts, 10, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tv_drain(&slow);
  FE_CHECK_EQ(fe_stats.viewer_jumps, jumps);
  fe_hub_leave(&late.v);
  fe_hub_leave(&slow.v);
  free(late.got.buf);
  free(slow.got.buf);
  free(g.buf);
}

static void test_merge_window_wakes_on_the_timer_not_per_read(void) {
  fe_hub_opts o = fe_opts();
  o.merge_ms = 50;
  fe_hub *h = fe_hub_create("t/merge", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 5, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  int before = a.wakes;
  g.len = 0;
  for (int i = 0; i < 3; i++, ts += 40)
    fe_gen_tag(&g, FE_FLV_VIDEO, ts, 0x27, 1, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  FE_CHECK_EQ(a.wakes, before); /* no flush per read with a merge window */
  g.len = 0;
  fe_gen_gop(&g, &ts, 1, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  FE_CHECK_EQ(a.wakes, before); /* a keyframe waits for the window too: flushes stay staggered */
  uint64_t t0 = uv_now(&fe_L.uv);
  while (a.wakes == before && uv_now(&fe_L.uv) - t0 < 1000)
    uv_run(&fe_L.uv, UV_RUN_ONCE); /* the merge timer (50 ms) sends it all */
  FE_CHECK_EQ(a.wakes, before + 1);
  FE_CHECK(uv_now(&fe_L.uv) - t0 <= 200);
  fe_hub_leave(&a.v);
  free(g.buf);
}

static void test_linger_keeps_the_stream_then_closes_it(void) {
  fe_hub_opts o = fe_opts();
  o.linger = 0.05;
  fe_hub *h = fe_hub_create("t/linger", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_hub_leave(&a.v);
  FE_CHECK(fe_hub_find(fe_T, "t/linger") == h);
  fe_tview b = {0};
  FE_CHECK_EQ(fe_hub_join(h, &b.v, &fe_tv_ops, FE_HUB_WANT_ALL), 0); /* back within the linger */
  FE_CHECK(b.started && b.hit);
  fe_hub_leave(&b.v);
  uint64_t t0 = uv_now(&fe_L.uv);
  while (fe_hub_find(fe_T, "t/linger") && uv_now(&fe_L.uv) - t0 < 1000)
    uv_run(&fe_L.uv, UV_RUN_ONCE);
  FE_CHECK(fe_hub_find(fe_T, "t/linger") == NULL);
  FE_CHECK(uv_now(&fe_L.uv) - t0 >= 40);
}

/* A viewer pins at most FE_VIEWER_MAX_PINS blocks per write: a fill stops there, and the rest
 * comes with the next fill. */
static void test_a_fill_pins_a_bounded_number_of_blocks(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_create("t/pins", &o);
  fe_tview a = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 40, 60000); /* about one 64 KiB block per frame */
  FE_CHECK_EQ(fe_hub_ingest(h, g.buf, g.len), 0);
  uv_buf_t iov[64];
  size_t bytes;
  int n = fe_hub_viewer_fill(&a.v, iov, 64, 64u << 20, &bytes);
  FE_CHECK(n > 0);
  FE_CHECK_EQ(a.v.npins, FE_VIEWER_MAX_PINS);
  fe_hub_viewer_release(&a.v);
  FE_CHECK_EQ(a.v.npins, 0);
  FE_CHECK(fe_hub_viewer_fill(&a.v, iov, 64, 64u << 20, &bytes) > 0); /* the rest follows */
  fe_hub_viewer_release(&a.v);
  fe_hub_leave(&a.v);
  free(g.buf);
}

/* With no merge window, one flush over many viewers is done in slices: the loop polls for I/O
 * (accepts, joins) between them, and every viewer is still woken once, in order. */
static void test_a_fan_out_pass_is_done_in_slices(void) {
  enum { N = 600 };
  fe_hub_opts o = fe_opts();
  o.merge_ms = 0;
  o.max_viewers = N + 1;
  fe_hub *h = fe_hub_create("t/slices", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 2, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview *v = calloc(N, sizeof(*v));
  for (int i = 0; i < N; i++) {
    fe_hub_join(h, &v[i].v, &fe_tv_ops, FE_HUB_WANT_ALL);
    fe_tv_drain(&v[i]);
  }
  v[300].leave_on_wake = 1; /* leaves inside the pass */
  g.len = 0;
  fe_gen_tag(&g, FE_FLV_VIDEO, ts, 0x27, 1, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  int woken = 0;
  for (int i = 0; i < N; i++)
    woken += v[i].wakes;
  FE_CHECK_EQ(woken, 256); /* one slice now */
  /* A second read before the pass is over: its viewers are not woken twice meanwhile. */
  fe_hub_ingest(h, g.buf, g.len);
  for (int turn = 0; turn < 10; turn++)
    uv_run(&fe_L.uv, UV_RUN_NOWAIT);
  int once = 1, twice = 1;
  for (int i = 0; i < N; i++) {
    once &= v[i].wakes >= 1;
    twice &= i == 300 ? v[i].wakes == 1 : v[i].wakes == 2;
  }
  FE_CHECK(once);
  FE_CHECK(twice);
  FE_CHECK(v[300].v.hub == NULL);
  for (int i = 0; i < N; i++) {
    if (i != 300)
      fe_hub_leave(&v[i].v);
    free(v[i].got.buf);
  }
  free(v);
  free(g.buf);
}

/* With a merge window, a big audience is flushed in groups at staggered instants across the
 * window, each within the window of the data. */
static void test_merge_window_staggers_the_flushes(void) {
  enum { N = 512 };
  fe_hub_opts o = fe_opts();
  o.merge_ms = 80;
  o.max_viewers = N + 1;
  fe_hub *h = fe_hub_create("t/stagger", &o);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 2, 1000);
  fe_hub_ingest(h, g.buf, g.len);
  fe_tview *v = calloc(N, sizeof(*v));
  for (int i = 0; i < N; i++) {
    fe_hub_join(h, &v[i].v, &fe_tv_ops, FE_HUB_WANT_ALL);
    fe_tv_drain(&v[i]);
  }
  /* The first data's window is over (the timer stops once every group was flushed). */
  for (uint64_t t = uv_now(&fe_L.uv); uv_now(&fe_L.uv) - t < 1000;) {
    uv_run(&fe_L.uv, UV_RUN_ONCE);
    int woken = 1;
    for (int i = 0; i < N; i++)
      woken &= v[i].wakes == 1;
    if (woken)
      break;
  }
  for (int i = 0; i < N; i++) {
    fe_tv_drain(&v[i]);
    v[i].wakes = 0;
    v[i].first_wake_at = 0;
  }
  g.len = 0;
  fe_gen_tag(&g, FE_FLV_VIDEO, ts, 0x27, 1, 1000);
  uv_update_time(&fe_L.uv);
  uint64_t t0 = uv_now(&fe_L.uv);
  fe_hub_ingest(h, g.buf, g.len);
  int all = 0;
  while (!all && uv_now(&fe_L.uv) - t0 < 1000) {
    uv_run(&fe_L.uv, UV_RUN_ONCE);
    all = 1;
    for (int i = 0; i < N; i++)
      all &= v[i].wakes == 1;
  }
  FE_CHECK(all);
  uint64_t first = UINT64_MAX, last = 0;
  for (int i = 0; i < N; i++) {
    first = v[i].first_wake_at < first ? v[i].first_wake_at : first;
    last = v[i].first_wake_at > last ? v[i].first_wake_at : last;
  }
  first -= 1 + t0;
  last -= 1 + t0;
  printf("  staggered flushes: first %llu ms, last %llu ms after the data\n", (unsigned long long)first,
         (unsigned long long)last);
  FE_CHECK(first <= 20);           /* the first group goes after one tick (80 / 8 ms) */
  FE_CHECK(last >= 60);            /* the last one most of a window later */
  FE_CHECK(last <= 80 + 40);       /* within the window (plus timer slack) */
  for (int i = 0; i < N; i++) {
    fe_hub_leave(&v[i].v);
    free(v[i].got.buf);
  }
  free(v);
  free(g.buf);
}

/* A source that fails before the stream started: every waiting viewer gets its answer. */
static void test_a_source_that_fails_answers_every_waiting_viewer(void) {
  fe_hub_opts o = fe_opts();
  fe_hub *h = fe_hub_open(fe_T, "t/fail", &o); /* not started */
  fe_tview a = {0}, b = {0};
  fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  fe_hub_join(h, &b.v, &fe_tv_ops, FE_HUB_WANT_ALL);
  FE_CHECK(!a.started && !b.started);
  fe_hub_sink.fail(h, 503, "text/plain", (const uint8_t *)"no\n", 3);
  FE_CHECK_EQ(a.failed, 503);
  FE_CHECK_EQ(b.failed, 503);
  FE_CHECK(a.v.hub == NULL && b.v.hub == NULL);
  FE_CHECK(fe_hub_find(fe_T, "t/fail") == NULL);
}

/* stamp_time: the hub writes its own onFI tag (the edge's clock) into the window, once a second. */
static void test_stamp_time_puts_the_edge_clock_in_the_window(void) {
  for (int stamp = 0; stamp <= 1; stamp++) {
    fe_hub_opts o = fe_opts();
    o.stamp_time = stamp;
    fe_hub *h = fe_hub_create(stamp ? "t/stamped" : "t/plain", &o);
    fe_tview a = {0};
    fe_hub_join(h, &a.v, &fe_tv_ops, FE_HUB_WANT_ALL);
    fe_gen g = {0};
    uint32_t ts = 0;
    fe_gen_start(&g);
    fe_gen_gop(&g, &ts, 10, 500);
    fe_hub_ingest(h, g.buf, g.len);
    fe_tv_drain(&a);
    /* A second later the next GOP: its keyframe is followed by a stamp. */
    uv_sleep(1010);
    uv_update_time(&fe_L.uv);
    size_t first = g.len;
    fe_gen_gop(&g, &ts, 10, 500);
    fe_hub_ingest(h, g.buf + first, g.len - first);
    fe_tv_drain(&a);
    const uint8_t *at = memmem(a.got.buf, a.got.len, "\x02\x00\x04" "onFI", 7);
    FE_CHECK_EQ(at != NULL, stamp);
    if (at) {
      const uint8_t *ms = memmem(at, a.got.len - (size_t)(at - a.got.buf), "\x00\x07" "edge_ms" "\x00", 10);
      FE_CHECK(ms != NULL);
      uint64_t bits = 0;
      for (int i = 0; i < 8; i++)
        bits = bits << 8 | ms[10 + i];
      double v;
      memcpy(&v, &bits, 8);
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      double now_ms = (double)now.tv_sec * 1000.0 + (double)now.tv_nsec / 1e6;
      FE_CHECK(v > now_ms - 5000 && v <= now_ms + 1);
      /* A script tag of its own, whole: the tag header right before the AMF name. */
      FE_CHECK_EQ(at[-11], FE_FLV_SCRIPT);
    }
    fe_hub_leave(&a.v);
    free(a.got.buf);
    free(g.buf);
  }
}

static void fe_tv_kick(fe_viewer *v) {
  ((fe_tview *)v)->failed = -1;
  fe_hub_leave(v);
}

static const fe_viewer_ops fe_tv_kick_ops = {
    .start = fe_tv_start, .fail = fe_tv_fail, .wake = fe_tv_wake, .kick = fe_tv_kick};

/* What the admin API sees: a snapshot of the loop's hubs, and kicking one stream's viewers. */
static void test_snapshot_and_kick(void) {
  fe_hub_opts o = fe_opts();
  o.linger = 30;
  fe_hub *h = fe_hub_create("t/snap", &o);
  fe_hub *other = fe_hub_create("t/other", &o);
  fe_tview v[3], w;
  memset(v, 0, sizeof(v));
  memset(&w, 0, sizeof(w));
  for (int i = 0; i < 3; i++)
    fe_hub_join(h, &v[i].v, &fe_tv_kick_ops, FE_HUB_WANT_ALL);
  fe_hub_join(other, &w.v, &fe_tv_kick_ops, FE_HUB_WANT_ALL);
  fe_gen g = {0};
  uint32_t ts = 0;
  fe_gen_start(&g);
  fe_gen_gop(&g, &ts, 50, 1000); /* 2 s of 1000 + 200 bytes per 40 ms: about 240 kbit/s */
  fe_hub_ingest(h, g.buf, g.len);
  fe_hub_info *info;
  int n = fe_hubs_snapshot(fe_T, "t/snap", &info);
  FE_CHECK_EQ(n, 1);
  FE_CHECK(strcmp(info[0].key, "t/snap") == 0);
  FE_CHECK_EQ(info[0].viewers, 3);
  FE_CHECK_EQ(info[0].stats.joins, 3);
  FE_CHECK(strcmp(info[0].vcodec, "avc") == 0 && strcmp(info[0].acodec, "aac") == 0);
  FE_CHECK(info[0].bitrate > 200000 && info[0].bitrate < 300000);
  FE_CHECK(info[0].live && info[0].window_bytes > 50000);
  fe_hub_info_free(info, n);
  FE_CHECK_EQ(fe_hubs_snapshot(fe_T, NULL, &info), 2);
  fe_hub_info_free(info, 2);
  FE_CHECK_EQ(fe_hubs_kick(fe_T, "t/snap"), 3);
  for (int i = 0; i < 3; i++)
    FE_CHECK(v[i].failed == -1 && v[i].v.hub == NULL);
  FE_CHECK(w.failed == 0 && w.v.hub == other); /* another stream's viewer stays */
  FE_CHECK_EQ(fe_hubs_kick(fe_T, "t/none"), 0);
  FE_CHECK_EQ(fe_hubs_snapshot(fe_T, "t/snap", &info), 1); /* lingering, no viewer */
  FE_CHECK_EQ(info[0].viewers, 0);
  FE_CHECK_EQ(info[0].stats.viewers_kicked, 3);
  fe_hub_info_free(info, 1);
  fe_hub_leave(&w.v);
  for (int i = 0; i < 3; i++)
    free(v[i].got.buf);
  free(g.buf);
  fe_hubs_end_all(fe_T);
}

int main(void) {
  fe_loop_init(&fe_L, 0);
  fe_T = fe_hubs_new(&fe_L, NULL);
  FE_RUN(test_first_viewer_waits_for_a_keyframe_then_gets_headers_first);
  FE_RUN(test_late_joiner_starts_at_the_newest_keyframe);
  FE_RUN(test_viewers_share_the_same_memory);
  FE_RUN(test_only_audio_gets_audio_and_its_own_header);
  FE_RUN(test_a_viewer_that_falls_behind_jumps_to_the_newest_keyframe);
  FE_RUN(test_timestamps_stay_monotonic_when_the_origin_restarts);
  FE_RUN(test_malformed_input_ends_the_stream);
  FE_RUN(test_viewer_limit);
  FE_RUN(test_hub_is_not_freed_inside_its_own_callback);
  FE_RUN(test_window_seconds_keeps_older_gops);
  FE_RUN(test_merge_window_wakes_on_the_timer_not_per_read);
  FE_RUN(test_a_fan_out_pass_is_done_in_slices);
  FE_RUN(test_merge_window_staggers_the_flushes);
  FE_RUN(test_linger_keeps_the_stream_then_closes_it);
  FE_RUN(test_a_fill_pins_a_bounded_number_of_blocks);
  FE_RUN(test_a_source_that_fails_answers_every_waiting_viewer);
  FE_RUN(test_stamp_time_puts_the_edge_clock_in_the_window);
  FE_RUN(test_snapshot_and_kick);
  /* Hubs close their timers through the loop: let it finish so nothing leaks. */
  fe_loop_close(&fe_L);
  fe_hubs_free(fe_T);
  fe_flv_parser_free(&fe_feed_parser);
  FE_CHECK_EQ(fe_stats.window_bytes, 0);
  FE_CHECK_EQ(fe_stats.streams, 0);
  return FE_DONE();
}
