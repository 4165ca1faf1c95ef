/*
 * libFuzzer target for what an origin sends: the HTTP response (status line, headers, chunked,
 * Content-Length or close-delimited body) parsed by fe_origin's llhttp callbacks, then the FLV in
 * it parsed by fe_pull, delivered to a sink that checks the order of fe_source.h: start before
 * tags, tags and flushes only while started, end or fail once and nothing after, each tag's bytes
 * consistent with its fields, and the captured response head (fe_origin_response_head) within
 * its bounds. No socket: the bytes enter through fe_origin_feed, where a read
 * would, in pieces whose sizes the input chooses, then the end of the connection.
 *
 * Input: [split seed] [options] [tag index] response [#next# response for the failover origin]...
 *   options bits 0-1: max_tag_size (64, 4 KiB, 1 MiB, 16 MiB); bits 2-3: failovers allowed;
 *   bit 4: no end of input (the sink lets go while the origin still streams);
 *   bits 5-7: what the sink does at the tag index (FUZZ_ACT_*).
 *
 * After each input the pull is closed and the loop run until it is empty: a handle left behind
 * aborts, a leak is reported by LeakSanitizer.
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/fe_log.h"
#include "loop/fe_loop.h"
#include "origin/fe_health.h"
#include "origin/fe_origin.h"
#include "origin/fe_pull.h"

/* Separates the responses of the origins a failover goes through. */
#define FUZZ_NEXT "#next#"
#define FUZZ_NEXT_LEN 6

#include "fuzz_check.h"

/* What the sink does when the tag index comes (or at start, or in a flush). */
enum {
  FUZZ_ACT_NONE,
  FUZZ_ACT_CLOSE_IN_START,
  FUZZ_ACT_CLOSE_IN_TAG,
  FUZZ_ACT_ERROR_IN_TAG,
  FUZZ_ACT_CLOSE_IN_FLUSH,
  FUZZ_ACT_CLOSE_AND_ERROR_IN_TAG,
  FUZZ_ACT_CLOSE_LATER, /* not in end or fail but after the input: nothing may come meanwhile */
  FUZZ_ACT_NONE2,
};

typedef struct fuzz_sink {
  fe_source *src;
  uint32_t max_tag;
  int act, at;
  int failovers, attempt;
  int started, done, closed;
  uint64_t tags, hash;
  uint32_t last_frame[2]; /* the last audio [1] and video [0] frame's time */
  int have_frame[2];
  int asked;              /* the pull asked for another origin at least once */
  int switched;           /* ... and once after the stream started */
} fuzz_sink;

static fe_loop fuzz_loop;

/* The captured response head stays within its bounds whatever the headers were. */
static void fuzz_check_head(const fe_origin *o) {
  const fe_origin_head *h = fe_origin_response_head(o);
  FUZZ_CHECK(h->content_length >= -1);
  const char *fields[] = {h->content_range, h->etag, h->last_modified, h->cache_control,
                          h->content_type};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    FUZZ_CHECK(memchr(fields[i], 0, FE_ORIGIN_HVAL) != NULL);
}
static int fuzz_trace; /* FUZZ_TRACE=1: one line per input saying what the sink saw */

/* The sink lets go of its source, as the hub does when it ends or its last viewer leaves. */
static void fuzz_close(fuzz_sink *s) {
  FUZZ_CHECK(!s->closed);
  s->closed = 1;
  s->src->close(s->src);
}

static uint32_t fuzz_be24(const uint8_t *b) {
  return (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
}

static void fuzz_start(void *sink, uint8_t flv_flags) {
  fuzz_sink *s = sink;
  FUZZ_CHECK(!s->closed && !s->started && !s->done);
  s->started = 1;
  if (s->act == FUZZ_ACT_CLOSE_IN_START)
    fuzz_close(s);
}

static int fuzz_tag(void *sink, const fe_flv_tag *tag) {
  fuzz_sink *s = sink;
  FUZZ_CHECK(!s->closed && s->started && !s->done);
  FUZZ_CHECK(tag->data != NULL);
  FUZZ_CHECK(tag->type == FE_FLV_AUDIO || tag->type == FE_FLV_VIDEO || tag->type == FE_FLV_SCRIPT);
  FUZZ_CHECK((tag->data[0] & 0x1f) == tag->type);
  FUZZ_CHECK(fuzz_be24(tag->data + 1) == tag->size);
  FUZZ_CHECK(tag->size <= s->max_tag);
  if (fuzz_trace)
    fprintf(stderr, "tag type %u size %u flags %#x ts %u (bytes %u) attempt %d\n", tag->type, tag->size,
            tag->flags, tag->timestamp, fe_flv_get_timestamp(tag->data), s->attempt);
  /* `timestamp` is what counts (the hub writes it into its copy): from the first origin it is
   * the bytes' own; after a failover it is rebased, and once one happened mid-stream each
   * track's frames keep rising (whatever the new origin's clock does), up to the 32-bit cap. */
  if (!s->asked)
    FUZZ_CHECK(fe_flv_get_timestamp(tag->data) == tag->timestamp);
  if ((tag->type == FE_FLV_AUDIO || tag->type == FE_FLV_VIDEO) && !(tag->flags & FE_FLV_SEQ_HEADER)) {
    int a = tag->type == FE_FLV_AUDIO;
    FUZZ_CHECK(!s->switched || !s->have_frame[a] || tag->timestamp > s->last_frame[a] ||
               tag->timestamp == UINT32_MAX);
    s->last_frame[a] = tag->timestamp;
    s->have_frame[a] = 1;
  }
  /* Every byte is read, so that ASan sees a tag shorter than it claims. */
  for (size_t i = 0; i < FE_FLV_TAG_OVERHEAD + (size_t)tag->size; i++)
    s->hash = (s->hash ^ tag->data[i]) * 0x100000001b3ull;
  if (s->tags++ != (uint64_t)s->at)
    return 0;
  switch (s->act) {
  case FUZZ_ACT_CLOSE_IN_TAG:
    fuzz_close(s);
    return 0;
  case FUZZ_ACT_ERROR_IN_TAG:
    return -7;
  case FUZZ_ACT_CLOSE_AND_ERROR_IN_TAG:
    fuzz_close(s);
    return -7;
  default:
    return 0;
  }
}

static void fuzz_flush(void *sink) {
  fuzz_sink *s = sink;
  FUZZ_CHECK(!s->closed && s->started && !s->done);
  if (s->act == FUZZ_ACT_CLOSE_IN_FLUSH && s->tags > (uint64_t)s->at)
    fuzz_close(s);
}

static void fuzz_fail(void *sink, int status, const char *ctype, const uint8_t *body, size_t len) {
  fuzz_sink *s = sink;
  if (fuzz_trace)
    fprintf(stderr, "fuzz_origin: fail %d %s, %zu body bytes\n", status, ctype, len);
  FUZZ_CHECK(!s->closed && !s->started && !s->done);
  FUZZ_CHECK(status >= 100 && status <= 599 && ctype != NULL && strlen(ctype) < 128);
  FUZZ_CHECK(len <= 64 * 1024 && (len == 0 || body != NULL));
  for (size_t i = 0; i < len; i++)
    s->hash = (s->hash ^ body[i]) * 0x100000001b3ull;
  s->done = 1;
  if (s->act != FUZZ_ACT_CLOSE_LATER)
    fuzz_close(s);
}

static void fuzz_end(void *sink, int err) {
  fuzz_sink *s = sink;
  if (fuzz_trace)
    fprintf(stderr, "fuzz_origin: end %d after %llu tags\n", err, (unsigned long long)s->tags);
  FUZZ_CHECK(!s->closed && s->started && !s->done);
  s->done = 1;
  if (s->act != FUZZ_ACT_CLOSE_LATER)
    fuzz_close(s);
}

static const fe_sink_ops fuzz_sink_ops = {
    .start = fuzz_start,
    .tag = fuzz_tag,
    .flush = fuzz_flush,
    .fail = fuzz_fail,
    .end = fuzz_end,
};

/* The `origin` hook as fe_pull sees it: another origin while the input allows. */
static int fuzz_next_origin(void *ud, int attempt, const char *last_error, char *url, size_t cap) {
  fuzz_sink *s = ud;
  /* Asked before the start and, since mid-stream failover, after it; a round may start again at 1. */
  FUZZ_CHECK(!s->closed && !s->done);
  s->asked = 1;
  if (s->started)
    s->switched = 1;
  FUZZ_CHECK(attempt >= 1 && last_error != NULL);
  s->attempt = attempt;
  if (s->failovers == 0)
    return 0;
  s->failovers--;
  snprintf(url, cap, "http://127.0.0.1:9/attempt%d", attempt);
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fuzz_trace = getenv("FUZZ_TRACE") != NULL;
  /* Every malformed response would log a line; with FUZZ_TRACE they are shown. */
  fe_log_set_level(fuzz_trace ? FE_LOG_DEBUG : FE_LOG_ERROR + 1);
  if (fe_loop_init(&fuzz_loop, 0) < 0)
    abort();
  fuzz_loop.health = fe_health_new();
  if (!fuzz_loop.health)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint32_t max_tags[4] = {64, 4096, 1u << 20, 16u << 20};
  if (size < 3)
    return 0;
  uint32_t seed = data[0];
  uint8_t opt = data[1];
  fuzz_sink s = {
      .max_tag = max_tags[opt & 3],
      .failovers = (opt >> 2) & 3,
      .act = opt >> 5,
      .at = data[2],
      .attempt = 1,
      .hash = 0xcbf29ce484222325ull,
  };
  int eof = !(opt & 0x10);
  data += 3;
  size -= 3;

  fe_pull_opts po = {
      .key = "fuzz",
      .connect_timeout = 10,
      .read_timeout = 10,
      .max_tag_size = s.max_tag,
      .next_origin = fuzz_next_origin,
      .ud = &s,
  };
  /* No marks from earlier inputs: an input's failures do not change how the next one runs (one
   * set cleared, not a new one: 74 KB of fresh pages per input was a quarter of the time). */
  fe_health_clear(fuzz_loop.health);
  s.src = fe_pull_open(&fuzz_loop, "http://127.0.0.1:9/live", &po, &fuzz_sink_ops, &s);
  FUZZ_CHECK(s.src != NULL);

  fe_origin *fed = NULL;
  size_t at = 0, end = 0;
  int eof_sent = 0;
  while (!s.closed) {
    fe_origin *o = fe_pull_origin(s.src);
    if (!o)
      break; /* the pull gave up its origin (malformed FLV): the sink heard about it */
    if (o != fed) {
      /* The first origin, or the one a failover opened: its loop has not run yet. It reads the
       * next section of the input. */
      FUZZ_CHECK(fe_origin_feed_start(o) == 0);
      if (fed)
        at = end + (end < size ? FUZZ_NEXT_LEN : 0);
      if (at > size)
        at = size;
      const uint8_t *next = memmem(data + at, size - at, FUZZ_NEXT, FUZZ_NEXT_LEN);
      end = next ? (size_t)(next - data) : size;
      fed = o;
      eof_sent = 0;
    } else if (eof_sent) {
      break; /* ended, and no failover took its place */
    }
    fuzz_check_head(o);
    if (at < end) {
      size_t n = end - at;
      if (seed) {
        seed = seed * 1103515245u + 12345u;
        size_t piece = (seed >> 16) % 97 + 1;
        if (piece < n)
          n = piece;
      }
      fe_origin_feed(o, (ssize_t)n, (const char *)data + at);
      at += n;
    } else if (eof) {
      fe_origin_feed(o, UV_EOF, NULL);
      eof_sent = 1;
    } else {
      break;
    }
  }
  if (fuzz_trace)
    fprintf(stderr, "fuzz_origin: %s, %llu tags, %d attempts\n",
            s.done ? "done" : s.closed ? "let go by the sink" : "still open", (unsigned long long)s.tags,
            s.attempt);
  if (!s.closed)
    fuzz_close(&s);

  /* Deferred frees and handle closes; then nothing of the pull may be left on the loop. */
  for (int i = 0; i < 4 && uv_run(&fuzz_loop.uv, UV_RUN_NOWAIT); i++)
    ;
  FUZZ_CHECK(!uv_loop_alive(&fuzz_loop.uv));
  return 0;
}
