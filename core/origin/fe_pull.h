/*
 * fe_pull: a live stream pulled from an origin, as an fe_source. Opens the origin (fe_origin),
 * parses its FLV once into tags for the sink, and when an origin fails asks for another one (the
 * `origin` policy hook or the resource's origin group, through next_origin), before the stream
 * started and in the middle of it alike.
 *
 * A failover in the middle of the stream is invisible to the sink: the new origin's FLV header is
 * swallowed, its tags are joined at a video keyframe (its metadata and sequence headers before it
 * are held back), timestamps are rebased to go on from the last one plus one frame duration, and
 * the metadata and sequence headers that differ from the ones sent before go out just before the
 * keyframe, as ordinary tags. The sink sees one continuous stream. When every origin failed, a
 * slate (a file: source) can stand in; while the stream plays from a backup or the slate, the first
 * origin is re-checked now and then (a second connection that replaces the current one at its
 * first keyframe). Failures mark origins down (fe_health) so that other streams skip them.
 *
 * What viewers get when every attempt failed before the start is made here: the origin's own
 * status and body (capped), or 502/504/404 with a short text.
 */
#ifndef FE_PULL_H
#define FE_PULL_H

#include "loop/fe_loop.h"
#include "origin/fe_origin.h"
#include "origin/fe_source.h"

typedef struct fe_pull_opts {
  const char *key;         /* the stream, for logs (copied) */
  double connect_timeout;  /* seconds, up to the response head */
  double read_timeout;     /* seconds between reads once streaming: a longer stall fails over */
  uint32_t max_tag_size;
  struct fe_tls_client *tls; /* https origins: the TLS client context (node-wide); NULL: system CAs */
  fe_stream_stats *stats;  /* the stream's counters (the sink's; may be NULL): origin connects,
                              failovers, errors and bytes are counted there too */
  /**
   * Optional: another origin after one failed. `attempt` counts from 2 after the first origin;
   * in the middle of the stream it goes on from the current origin's attempt, and after a 0 the
   * round starts again once at 1. A re-check asks for attempt 1 with last_error "recheck".
   * `last_error` says what failed: "unreachable", "timeout", "status 503" (any stage), "stall",
   * "broken" (connection lost or bad FLV mid-stream), "ended" (a clean end mid-stream: answer 0 for
   * "not a fault, end the stream"), "down" (the URL just given is marked down and was skipped).
   * Returns 1 with a URL in url, 0 to give up, -1 when the policy that chooses failed (logged by
   * it; viewers get 500 before the start). `ud` is borrowed and must outlive the pull.
   */
  int (*next_origin)(void *ud, int attempt, const char *last_error, char *url, size_t cap);
  void *ud;
  const char *slate;       /* "file:PATH" played when every origin failed mid-stream; NULL: none (copied) */
  double recheck;          /* seconds between re-checks of attempt 1 while on another; 0: never */
} fe_pull_opts;

/**
 * Starts pulling `url` for the sink. Every callback comes from the loop, never from inside this
 * call. Returns NULL when out of memory. fe_source.close stops it.
 */
fe_source *fe_pull_open(fe_loop *l, const char *url, const fe_pull_opts *opts,
                        const fe_sink_ops *ops, void *sink);

/**
 * Test seam (tests/fuzz/fuzz_origin.c): the origin a pull (`s` from fe_pull_open) reads now, or
 * NULL when it has none (a malformed stream closed it, or the pull was closed). A failover opens
 * a new one. Borrowed: valid until the next call into the pull or its origin.
 */
fe_origin *fe_pull_origin(fe_source *s);

#endif
