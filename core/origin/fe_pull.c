#include "origin/fe_pull.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/fe_log.h"
#include "origin/fe_health.h"
#include "origin/fe_origin.h"

#define FE_ERROR_BODY_MAX (64 * 1024) /* an origin's error body passed on to viewers */
#define FE_MAX_ORIGIN_ATTEMPTS 16     /* next_origin calls in one failover before giving up */
#define FE_FRAME_MS_DEFAULT 40        /* the gap after a switch until a frame duration is seen */
#define FE_FRAME_MS_MAX 200           /* a longer step between video tags is no frame duration */
#define FE_URL_MAX 4096

typedef struct fe_pull fe_pull;

/* A tag kept whole (header, payload, PreviousTagSize) with its classification. */
typedef struct fe_kept {
  uint8_t *data;
  uint32_t size;   /* payload bytes */
  unsigned flags;
  uint32_t codec;
} fe_kept;

/*
 * One origin connection of the pull and its FLV. The pull has up to two: `cur` feeds the stream
 * (or joins it after a failover), `probe` tries a better origin while the stream plays from a
 * backup or the slate. A leg is freed when its timer handle has closed (fe_pull_leg_close), never
 * inside one of its own callbacks.
 */
typedef struct fe_leg {
  fe_pull *p;
  fe_origin *origin;      /* NULL once closed */
  fe_flv_parser parser;
  char *url;
  int attempt;            /* what next_origin was asked for it; 0 for the slate */
  int joined;             /* its tags go to the sink */
  int64_t ts_offset;      /* added to its timestamps once joined */
  fe_kept meta, vseq, aseq; /* before joining: the newest of each it sent */
  uv_timer_t timer;       /* before the start: an error body's deadline; after: the join's */
  /* an origin's error answer before the start, passed on as it is */
  int err_status;
  char err_ctype[128];
  uint8_t *err_body;
  size_t err_len;
} fe_leg;

struct fe_pull {
  fe_source src;              /* first: the sink holds the pull as its source */
  fe_loop *loop;
  fe_pull_opts opts;
  char *key, *slate;
  const fe_sink_ops *ops;
  void *sink;
  int closed;                 /* the sink let go: free at the loop's safe point */
  fe_deferred defer;
  fe_leg *cur, *probe;
  uv_timer_t recheck;
  int started;                /* the sink got start */
  /* the failover under way: how many were asked, whether the round started again at 1 */
  int asked, wrapped, last_attempt;
  uint64_t failed_at;         /* loop ms the current leg failed (for the log of the switch) */
  /* what the sink got */
  uint32_t last_ts, last_video_ts, frame_ms;
  uint32_t last_frame_ts[2];  /* the last video [0] and audio [1] frame's timestamp */
  int64_t max_pts;            /* the latest presentation time of a video frame sent (ms) */
  int have_pts;
  int have_frame_ts[2];
  int switched;               /* a failover joined another origin: frames are kept increasing */
  int have_ts, have_video_ts, has_video;
  fe_kept sent_meta, sent_vseq, sent_aseq;
};

static const fe_origin_cbs fe_pull_origin_cbs;

static void fe_pull_count_error(fe_pull *p) {
  FE_METRIC_INC(&p->loop->metrics, origin_failures);
  if (p->opts.stats)
    p->opts.stats->origin_errors++;
}

/* ---- kept tags ----------------------------------------------------------------------------- */

static void fe_kept_set(fe_kept *k, const fe_flv_tag *tag) {
  size_t len = FE_FLV_TAG_OVERHEAD + tag->size;
  uint8_t *d = malloc(len);
  if (!d)
    return; /* a header not kept is a header not re-sent: the stream still plays */
  memcpy(d, tag->data, len);
  free(k->data);
  k->data = d;
  k->size = tag->size;
  k->flags = tag->flags;
  k->codec = tag->codec;
}

static void fe_kept_clear(fe_kept *k) {
  free(k->data);
  memset(k, 0, sizeof(*k));
}

/* Same payload (timestamps aside)? */
static int fe_kept_same(const fe_kept *a, const fe_kept *b) {
  return a->data && b->data && a->size == b->size &&
         memcmp(a->data + FE_FLV_TAG_HEADER_SIZE, b->data + FE_FLV_TAG_HEADER_SIZE, a->size) == 0;
}

/* ---- legs ---------------------------------------------------------------------------------- */

static void fe_leg_on_closed(uv_handle_t *h) {
  fe_leg *g = h->data;
  fe_flv_parser_free(&g->parser);
  fe_kept_clear(&g->meta);
  fe_kept_clear(&g->vseq);
  fe_kept_clear(&g->aseq);
  free(g->err_body);
  free(g->url);
  free(g);
}

/* Stops the leg now (no callback after); the memory goes once its timer has closed. */
static void fe_leg_close(fe_leg *g) {
  if (!g)
    return;
  if (g->origin)
    fe_origin_close(g->origin);
  g->origin = NULL;
  uv_timer_stop(&g->timer);
  uv_close((uv_handle_t *)&g->timer, fe_leg_on_closed);
}

static fe_leg *fe_leg_open(fe_pull *p, const char *url, int attempt) {
  fe_leg *g = calloc(1, sizeof(*g));
  if (!g)
    return NULL;
  g->p = p;
  g->attempt = attempt;
  g->url = strdup(url);
  fe_flv_parser_init(&g->parser, p->opts.max_tag_size);
  uv_timer_init(&p->loop->uv, &g->timer);
  g->timer.data = g;
  fe_origin_opts oo = {.connect_timeout = p->opts.connect_timeout,
                       .read_timeout = p->opts.read_timeout,
                       .max_tag_size = p->opts.max_tag_size,
                       .tls = p->opts.tls};
  if (g->url)
    g->origin = fe_origin_open(p->loop, url, &oo, &fe_pull_origin_cbs, g);
  FE_METRIC_INC(&p->loop->metrics, origin_connects);
  if (p->opts.stats)
    p->opts.stats->origin_connects++;
  if (!g->origin) {
    fe_leg_close(g);
    return NULL;
  }
  return g;
}

/* ---- what the sink gets -------------------------------------------------------------------- */

/* A video frame's composition offset (PTS - DTS, ms): AVC/HEVC's 24-bit signed field, legacy or
 * enhanced (CodedFrames); 0 when the tag has none. */
static int32_t fe_pull_cts(const fe_flv_tag *t) {
  const uint8_t *p = t->data + FE_FLV_TAG_HEADER_SIZE;
  size_t at;
  if (p[0] & 0x80) { /* enhanced RTMP: packet type in the low bits, FourCC after */
    if ((p[0] & 0x0f) != 1 || t->size < 8)
      return 0;
    at = 5;
  } else {
    unsigned codec = p[0] & 0x0f;
    if ((codec != 7 && codec != 12) || t->size < 5 || p[1] != 1)
      return 0;
    at = 2;
  }
  int32_t v = (int32_t)((uint32_t)p[at] << 16 | (uint32_t)p[at + 1] << 8 | p[at + 2]);
  return v & 0x800000 ? v - 0x1000000 : v;
}

/* A tag of a joined leg to the sink, its timestamp moved by the leg's offset. */
static int fe_pull_emit(fe_pull *p, fe_leg *g, const fe_flv_tag *tag) {
  fe_flv_tag t = *tag;
  int64_t ts = (int64_t)tag->timestamp + g->ts_offset;
  t.timestamp = ts < 0 ? 0 : ts > UINT32_MAX ? UINT32_MAX : (uint32_t)ts;
  /* After a switch, each track's frames stay strictly increasing: the new origin's audio may
   * run a few ms behind its keyframe, which the join put just after everything the sink had.
   * (Headers are not frames; the first origin's timestamps are left as they are. At the 32-bit
   * limit, 49.7 days, they stay there rather than wrap to 0.) */
  if ((t.type == FE_FLV_AUDIO || t.type == FE_FLV_VIDEO) && !(t.flags & FE_FLV_SEQ_HEADER)) {
    int a = t.type == FE_FLV_AUDIO;
    if (p->switched && p->have_frame_ts[a] && t.timestamp <= p->last_frame_ts[a])
      t.timestamp = p->last_frame_ts[a] == UINT32_MAX ? UINT32_MAX : p->last_frame_ts[a] + 1;
    p->last_frame_ts[a] = t.timestamp;
    p->have_frame_ts[a] = 1;
    if (!a && t.size > 0) {
      int64_t pts = (int64_t)t.timestamp + fe_pull_cts(&t);
      if (!p->have_pts || pts > p->max_pts)
        p->max_pts = pts;
      p->have_pts = 1;
    }
  }
  if (t.type == FE_FLV_VIDEO) {
    p->has_video = 1;
    if (p->have_video_ts && t.timestamp > p->last_video_ts &&
        t.timestamp - p->last_video_ts <= FE_FRAME_MS_MAX)
      p->frame_ms = t.timestamp - p->last_video_ts;
    p->last_video_ts = t.timestamp;
    p->have_video_ts = 1;
  }
  if (!p->have_ts || t.timestamp > p->last_ts)
    p->last_ts = t.timestamp;
  p->have_ts = 1;
  if (t.flags & FE_FLV_METADATA)
    fe_kept_set(&p->sent_meta, &t);
  else if (t.flags & FE_FLV_SEQ_HEADER)
    fe_kept_set(t.type == FE_FLV_VIDEO ? &p->sent_vseq : &p->sent_aseq, &t);
  return p->ops->tag(p->sink, &t);
}

/* A header the joining leg held back, sent at `ts` (its own clock) when it differs from the one
 * the sink has. */
static int fe_pull_emit_kept(fe_pull *p, fe_leg *g, const fe_kept *k, const fe_kept *sent,
                             uint8_t type, uint32_t ts) {
  if (!k->data || fe_kept_same(k, sent))
    return 0;
  fe_flv_tag t = {.data = k->data, .size = k->size, .timestamp = ts, .type = type,
                  .flags = k->flags, .codec = k->codec};
  return fe_pull_emit(p, g, &t);
}

/* ---- failover ------------------------------------------------------------------------------ */

static void fe_pull_on_recheck(uv_timer_t *t);

/* The recheck runs while the stream plays from anything but attempt 1's origin. */
static void fe_pull_recheck_arm(fe_pull *p) {
  if (p->opts.recheck <= 0 || !p->opts.next_origin || p->closed)
    return;
  if (p->cur && p->cur->attempt == 1) {
    uv_timer_stop(&p->recheck);
    return;
  }
  if (!uv_is_active((uv_handle_t *)&p->recheck)) {
    uint64_t ms = (uint64_t)(p->opts.recheck * 1000.0 + 0.5);
    uv_timer_start(&p->recheck, fe_pull_on_recheck, ms, ms);
  }
}

static const char *fe_pull_what(int err, int joined) {
  switch (err) {
  case 0: return joined ? "ended" : "broken";
  case FE_ORIGIN_ESTALL: return "stall";
  case FE_ORIGIN_ETIMEDOUT: return "timeout";
  case FE_ORIGIN_EUNREACH: return "unreachable";
  case FE_ORIGIN_ENOTFOUND: return "status 404";
  default: return "broken";
  }
}

static void fe_leg_on_join_timeout(uv_timer_t *t);

/*
 * Asks next_origin for the origin after the one that failed with `what`, skipping those marked
 * down. Returns 1 with url and *attempt, 0 when there is none, -1 when the policy failed. In the
 * middle of the stream, a 0 for a fault starts the round again once at attempt 1 (the origin that
 * just failed, `failed`, is not offered again in this failover). When every
 * origin offered was marked down, the first of them is tried all the same (before the start, or
 * when no slate stands in): a mark spares origins from most streams, it never strands one.
 */
static int fe_pull_next(fe_pull *p, const char *what, const char *failed, char *url, int *attempt) {
  char why[64], first[FE_URL_MAX] = "";
  int first_attempt = 0;
  snprintf(why, sizeof(why), "%s", what);
  while (p->opts.next_origin && p->asked < FE_MAX_ORIGIN_ATTEMPTS) {
    int a = p->last_attempt + 1;
    int rc = p->opts.next_origin(p->opts.ud, a, why, url, FE_URL_MAX);
    p->asked++;
    if (rc < 0)
      return -1;
    if (rc == 0) {
      if (!p->started || p->wrapped || strcmp(why, "ended") == 0 || p->last_attempt == 0)
        break;
      p->wrapped = 1;
      p->last_attempt = 0;
      continue;
    }
    p->last_attempt = a;
    if (failed && strcmp(url, failed) == 0)
      continue; /* not the one that just failed, again */
    if (!fe_health_usable(p->loop->health, url)) {
      fe_debug("stream %s: skipping %s (marked down)", p->key, url);
      if (!first[0]) {
        snprintf(first, sizeof(first), "%s", url);
        first_attempt = a;
      }
      snprintf(why, sizeof(why), "down");
      continue;
    }
    *attempt = a;
    return 1;
  }
  if (first[0] && (!p->started || !p->slate)) {
    snprintf(url, FE_URL_MAX, "%s", first);
    *attempt = first_attempt;
    return 1;
  }
  return 0;
}

static void fe_pull_end_sink(fe_pull *p, int err) {
  uv_timer_stop(&p->recheck);
  p->ops->end(p->sink, err);
}

/* The stream's leg failed in the middle of the stream: another origin joins, or the slate, or the
 * stream ends. */
static void fe_pull_failover(fe_pull *p, int err, const char *what, const char *failed) {
  if (!p->failed_at)
    p->failed_at = uv_now(&p->loop->uv);
  if (p->probe) {
    /* A better origin was being tried already: it takes over. */
    p->cur = p->probe;
    p->probe = NULL;
    uv_timer_start(&p->cur->timer, fe_leg_on_join_timeout,
                   (uint64_t)((p->opts.connect_timeout + p->opts.read_timeout) * 1000.0), 0);
    return;
  }
  char url[FE_URL_MAX];
  int attempt = 0;
  int rc = fe_pull_next(p, what, failed, url, &attempt);
  if (rc < 0) {
    fe_error("stream %s: the origin policy failed during a failover; ending the stream", p->key);
    fe_pull_end_sink(p, err ? err : FE_ORIGIN_EPROTO);
    return;
  }
  if (rc == 0) {
    if (strcmp(what, "ended") == 0) {
      fe_info("stream %s: origin ended the stream", p->key);
      fe_pull_end_sink(p, 0);
      return;
    }
    if (!p->slate || (failed && strcmp(failed, p->slate) == 0)) {
      fe_error("stream %s: no origin left (%s); ending the stream", p->key, what);
      fe_pull_end_sink(p, err ? err : FE_ORIGIN_EPROTO);
      return;
    }
    fe_warn("stream %s: no origin left (%s); playing the slate %s", p->key, what, p->slate);
    snprintf(url, sizeof(url), "%s", p->slate);
    attempt = 0;
  } else {
    fe_warn("stream %s: origin failed mid-stream (%s); trying %s (attempt %d)", p->key, what, url,
            attempt);
  }
  fe_leg *g = fe_leg_open(p, url, attempt);
  if (!g) {
    fe_pull_end_sink(p, UV_ENOMEM);
    return;
  }
  p->cur = g;
  uv_timer_start(&g->timer, fe_leg_on_join_timeout,
                 (uint64_t)((p->opts.connect_timeout + p->opts.read_timeout) * 1000.0), 0);
}

/* A leg that is not (or not yet) the stream's failed. `err` as fe_origin reports it, or `what`. */
static void fe_leg_failed(fe_leg *g, int err, const char *what) {
  fe_pull *p = g->p;
  if (!what)
    what = fe_pull_what(err, g->joined);
  if (strcmp(what, "ended") != 0 && g->attempt != 0)
    fe_health_failed(p->loop->health, g->url);
  fe_pull_count_error(p);
  if (g == p->probe) {
    fe_info("stream %s: re-check of %s failed (%s)", p->key, g->url, what);
    p->probe = NULL;
    fe_leg_close(g);
    return;
  }
  p->cur = NULL;
  fe_pull_failover(p, err, what, g->url);
  fe_leg_close(g);
}

static void fe_leg_on_join_timeout(uv_timer_t *t) {
  fe_leg *g = t->data;
  fe_warn("stream %s: %s sent no keyframe in time", g->p->key, g->url);
  fe_leg_failed(g, FE_ORIGIN_ETIMEDOUT, "timeout");
}

static void fe_pull_on_recheck(uv_timer_t *t) {
  fe_pull *p = t->data;
  if (p->closed || p->probe || !p->cur || !p->cur->joined || p->cur->attempt == 1)
    return;
  char url[FE_URL_MAX];
  int rc = p->opts.next_origin(p->opts.ud, 1, "recheck", url, sizeof(url));
  if (rc != 1 || strcmp(url, p->cur->url) == 0 || !fe_health_usable(p->loop->health, url))
    return;
  fe_info("stream %s: re-checking %s", p->key, url);
  p->probe = fe_leg_open(p, url, 1);
  if (p->probe)
    uv_timer_start(&p->probe->timer, fe_leg_on_join_timeout,
                   (uint64_t)((p->opts.connect_timeout + p->opts.read_timeout) * 1000.0), 0);
}

/*
 * A leg joins the stream at its first keyframe (or first audio frame of an audio-only stream).
 * Before that its metadata and sequence headers are held and everything else dropped. Returns
 * what the sink returned.
 */
static int fe_leg_join_tag(fe_leg *g, const fe_flv_tag *tag) {
  fe_pull *p = g->p;
  if (tag->flags & FE_FLV_METADATA) {
    fe_kept_set(&g->meta, tag);
    return 0;
  }
  if (tag->flags & FE_FLV_SEQ_HEADER) {
    fe_kept_set(tag->type == FE_FLV_VIDEO ? &g->vseq : &g->aseq, tag);
    return 0;
  }
  int key = tag->type == FE_FLV_VIDEO && (tag->flags & FE_FLV_KEYFRAME);
  if (!key && !(tag->type == FE_FLV_AUDIO && !p->has_video))
    return 0;
  if (g == p->probe) {
    fe_leg_close(p->cur);
    p->cur = g;
    p->probe = NULL;
  }
  uv_timer_stop(&g->timer);
  uint32_t frame = p->frame_ms ? p->frame_ms : FE_FRAME_MS_DEFAULT;
  uint32_t base = p->have_ts ? p->last_ts + frame : 0;
  /* The new keyframe is also presented after every frame already sent: with B-frames the last
   * frame sent in decode order may be presented later than its timestamp says. */
  if (p->have_pts && tag->type == FE_FLV_VIDEO) {
    int64_t by_pts = p->max_pts + frame - fe_pull_cts(tag);
    if (by_pts > (int64_t)base && by_pts <= UINT32_MAX)
      base = (uint32_t)by_pts;
  }
  g->ts_offset = (int64_t)base - tag->timestamp;
  g->joined = 1;
  p->switched = p->have_ts;
  if (g->attempt != 0)
    fe_health_ok(p->loop->health, g->url);
  uint64_t now = uv_now(&p->loop->uv);
  fe_warn("stream %s: now from %s (attempt %d)%s; %llu ms since the last origin failed", p->key,
          g->url, g->attempt, g->attempt == 0 ? " (the slate)" : "",
          p->failed_at ? (unsigned long long)(now - p->failed_at) : 0ull);
  FE_METRIC_INC(&p->loop->metrics, origin_failovers);
  if (p->opts.stats)
    p->opts.stats->origin_failovers++;
  if (p->ops->origin)
    p->ops->origin(p->sink, g->url, 200);
  p->failed_at = 0;
  p->asked = 0;
  p->wrapped = 0;
  p->last_attempt = g->attempt;
  fe_pull_recheck_arm(p);
  /* The sink may let go of the pull in any of these tags: nothing goes to it after that. */
  int rc = p->closed ? FE_FLV_ENOMEM : 0;
  if (rc == 0)
    rc = fe_pull_emit_kept(p, g, &g->meta, &p->sent_meta, FE_FLV_SCRIPT, tag->timestamp);
  if (rc == 0 && !p->closed)
    rc = fe_pull_emit_kept(p, g, &g->vseq, &p->sent_vseq, FE_FLV_VIDEO, tag->timestamp);
  if (rc == 0 && !p->closed)
    rc = fe_pull_emit_kept(p, g, &g->aseq, &p->sent_aseq, FE_FLV_AUDIO, tag->timestamp);
  fe_kept_clear(&g->meta);
  fe_kept_clear(&g->vseq);
  fe_kept_clear(&g->aseq);
  if (rc == 0 && p->closed)
    rc = FE_FLV_ENOMEM; /* stops the feed, as fe_pull_on_tag does for a closed pull */
  return rc ? rc : fe_pull_emit(p, g, tag);
}

/* ---- the origin's callbacks ---------------------------------------------------------------- */

static void fe_pull_on_end(void *ud, int err);

/* An error answer goes to viewers when its body ends, when FE_ERROR_BODY_MAX of it are in, or
 * read_timeout after its head, whichever comes first: an endless or trickling body holds nobody. */
static void fe_pull_error_done(fe_leg *g) {
  uv_timer_stop(&g->timer);
  fe_origin_close(g->origin);
  g->origin = NULL;
  fe_pull_on_end(g, 0);
}

static void fe_pull_on_error_timeout(uv_timer_t *t) {
  fe_leg *g = t->data;
  fe_info("stream %s: the origin's %d body is not over after %.1f s; answering with %zu bytes of it",
          g->p->key, g->err_status, g->p->opts.read_timeout, g->err_len);
  fe_pull_error_done(g);
}

static void fe_pull_on_response(void *ud, int status, const char *ctype) {
  fe_leg *g = ud;
  fe_pull *p = g->p;
  if (p->ops->origin && g == p->cur && !p->started)
    p->ops->origin(p->sink, g->url, status);
  if (p->started || g != p->cur) {
    /* A failover's answer: anything but 200 moves on at once. */
    if (status != 200) {
      char what[32];
      snprintf(what, sizeof(what), "status %d", status);
      fe_leg_failed(g, FE_ORIGIN_EPROTO, what);
    }
    return;
  }
  /* A status HTTP does not have is no answer to pass on (and 000 would read as "no error"). */
  if (status < 100 || status > 599) {
    static const char msg[] = "502 the origin sent an invalid status\n";
    fe_error("stream %s: origin answered status %d; answering 502", p->key, status);
    fe_pull_count_error(p);
    fe_origin_close(g->origin);
    g->origin = NULL;
    p->ops->fail(p->sink, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  if (status != 200) {
    g->err_status = status;
    snprintf(g->err_ctype, sizeof(g->err_ctype), "%s", ctype ? ctype : "text/plain");
    uv_timer_start(&g->timer, fe_pull_on_error_timeout,
                   (uint64_t)(p->opts.read_timeout * 1000.0 + 0.5), 0);
    return;
  }
  fe_info("stream %s: origin answered 200", p->key);
}

static int fe_pull_on_tag(void *ud, const fe_flv_tag *tag) {
  fe_leg *g = ud;
  fe_pull *p = g->p;
  if (p->closed)
    return FE_FLV_ENOMEM; /* stops the feed; nothing is reported to a closed pull's sink */
  if (g->joined)
    return fe_pull_emit(p, g, tag);
  if (p->started)
    return fe_leg_join_tag(g, tag);
  /* The stream starts with its first tag: the FLV header alone says nothing yet. */
  p->started = 1;
  g->joined = 1;
  p->last_attempt = g->attempt;
  p->asked = 0;
  fe_health_ok(p->loop->health, g->url);
  p->ops->start(p->sink, g->parser.header_flags);
  if (p->closed)
    return FE_FLV_ENOMEM;
  fe_pull_recheck_arm(p);
  return fe_pull_emit(p, g, tag);
}

static void fe_pull_on_body(void *ud, const uint8_t *data, size_t len) {
  fe_leg *g = ud;
  fe_pull *p = g->p;
  FE_METRIC_ADD(&p->loop->metrics, bytes_received, len);
  if (p->opts.stats)
    p->opts.stats->bytes_in += len;
  if (g->err_status) {
    size_t room = FE_ERROR_BODY_MAX - g->err_len;
    if (len > room)
      len = room;
    if (len && !g->err_body)
      g->err_body = malloc(FE_ERROR_BODY_MAX);
    if (g->err_body) {
      memcpy(g->err_body + g->err_len, data, len);
      g->err_len += len;
    }
    if (g->err_len == FE_ERROR_BODY_MAX)
      fe_pull_error_done(g);
    return;
  }
  int rc = fe_flv_parser_feed(&g->parser, data, len, fe_pull_on_tag, g);
  if (rc < 0 && !p->closed && g->origin) {
    fe_error("stream %s: malformed FLV from %s: %s", p->key, g->url, fe_flv_strerror(rc));
    if (p->started) {
      fe_origin_close(g->origin);
      g->origin = NULL;
      fe_leg_failed(g, rc, "broken");
      return;
    }
    fe_pull_count_error(p);
    fe_origin_close(g->origin);
    g->origin = NULL;
    static const char msg[] = "502 the origin sent no valid FLV\n";
    p->ops->fail(p->sink, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
  }
}

static void fe_pull_on_flush(void *ud) {
  fe_leg *g = ud;
  if (g->joined && !g->p->closed)
    g->p->ops->flush(g->p->sink);
}

/* Before the stream started: asks for another origin. Returns 1 when a new pull is under way, 0
 * when there is none, -1 when the policy asked failed. */
static int fe_pull_failover_early(fe_pull *p, fe_leg *g, int err) {
  char what[64], url[FE_URL_MAX];
  if (g->err_status)
    snprintf(what, sizeof(what), "status %d", g->err_status);
  else
    snprintf(what, sizeof(what), "%s", err == FE_ORIGIN_ETIMEDOUT ? "timeout" : "unreachable");
  int attempt;
  int rc = fe_pull_next(p, what, g->url, url, &attempt);
  if (rc != 1)
    return rc;
  fe_warn("stream %s: origin failed (%s); trying %s (attempt %d)", p->key, what, url, attempt);
  FE_METRIC_INC(&p->loop->metrics, origin_failovers);
  if (p->opts.stats)
    p->opts.stats->origin_failovers++;
  fe_leg *n = fe_leg_open(p, url, attempt);
  if (!n)
    return 0; /* the caller answers the viewers and counts the error */
  /* The origin that failed is an error even when another one takes over (as after the start). */
  fe_pull_count_error(p);
  if (g->err_status || err == FE_ORIGIN_ETIMEDOUT || err == FE_ORIGIN_EUNREACH)
    fe_health_failed(p->loop->health, g->url);
  p->cur = n;
  fe_leg_close(g);
  return 1;
}

static void fe_pull_on_end(void *ud, int err) {
  fe_leg *g = ud;
  fe_pull *p = g->p;
  uv_timer_stop(&g->timer);
  if (p->closed)
    return;
  if (p->started || g != p->cur) {
    if (err == 0 && g->joined && fe_flv_parser_finish(&g->parser) < 0)
      err = FE_FLV_ETRUNC;
    if (err)
      fe_warn("stream %s: %s: %s", p->key, g->url, fe_origin_strerror(err));
    fe_leg_failed(g, err, NULL);
    return;
  }
  int next = fe_pull_failover_early(p, g, err);
  if (next == 1)
    return;
  if (next < 0) {
    static const char msg[] = "500 policy error\n";
    fe_pull_count_error(p);
    p->ops->fail(p->sink, 500, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  if (g->err_status) {
    fe_info("stream %s: origin answered %d", p->key, g->err_status);
    p->ops->fail(p->sink, g->err_status, g->err_ctype, g->err_body, g->err_len);
    return;
  }
  if (err == 0)
    err = FE_ORIGIN_EPROTO;
  int status = fe_origin_status(err);
  fe_error("stream %s: %s; answering %d", p->key, fe_origin_strerror(err), status);
  fe_pull_count_error(p);
  const char *msg = status == 504   ? "504 origin timed out\n"
                    : status == 404 ? "404 no such stream\n"
                                    : "502 origin unreachable\n";
  p->ops->fail(p->sink, status, "text/plain", (const uint8_t *)msg, strlen(msg));
}

static const fe_origin_cbs fe_pull_origin_cbs = {
    .on_response = fe_pull_on_response,
    .on_body = fe_pull_on_body,
    .on_flush = fe_pull_on_flush,
    .on_end = fe_pull_on_end,
};

/* ---- the source ---------------------------------------------------------------------------- */

static void fe_pull_on_timer_closed(uv_handle_t *h) {
  fe_pull *p = h->data;
  fe_kept_clear(&p->sent_meta);
  fe_kept_clear(&p->sent_vseq);
  fe_kept_clear(&p->sent_aseq);
  free(p->key);
  free(p->slate);
  free(p);
}

static void fe_pull_free(fe_deferred *d) {
  fe_pull *p = (fe_pull *)((char *)d - offsetof(fe_pull, defer));
  uv_close((uv_handle_t *)&p->recheck, fe_pull_on_timer_closed);
}

/* The sink may close its source from inside one of the pull's own callbacks (a parser is then
 * mid-feed): stop now, free later. */
static void fe_pull_close(fe_source *s) {
  fe_pull *p = (fe_pull *)s;
  p->closed = 1;
  uv_timer_stop(&p->recheck);
  fe_leg_close(p->cur);
  fe_leg_close(p->probe);
  p->cur = p->probe = NULL;
  fe_loop_defer(p->loop, &p->defer, fe_pull_free);
}

fe_source *fe_pull_open(fe_loop *l, const char *url, const fe_pull_opts *opts,
                        const fe_sink_ops *ops, void *sink) {
  fe_pull *p = calloc(1, sizeof(*p));
  if (!p)
    return NULL;
  p->src.close = fe_pull_close;
  p->loop = l;
  p->opts = *opts;
  p->key = strdup(opts->key ? opts->key : "?");
  p->slate = opts->slate ? strdup(opts->slate) : NULL;
  p->opts.key = p->key;
  p->opts.slate = p->slate;
  p->ops = ops;
  p->sink = sink;
  p->last_attempt = 1;
  /* A first origin marked down by another stream's failure: straight to the next one. */
  char other[FE_URL_MAX];
  int attempt = 1;
  if (p->key && opts->next_origin && !fe_health_usable(p->loop->health, url) &&
      fe_pull_next(p, "down", NULL, other, &attempt) == 1)
    url = other;
  p->asked = 0;
  fe_info("stream %s: pulling %s", p->key, url);
  if (!p->key || (opts->slate && !p->slate) || !(p->cur = fe_leg_open(p, url, attempt))) {
    free(p->key);
    free(p->slate);
    free(p);
    return NULL;
  }
  uv_timer_init(&l->uv, &p->recheck);
  p->recheck.data = p;
  return &p->src;
}

fe_origin *fe_pull_origin(fe_source *s) {
  fe_pull *p = (fe_pull *)s;
  return p->closed || !p->cur ? NULL : p->cur->origin;
}
