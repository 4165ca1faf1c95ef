/*
 * fe_pull: a live stream pulled from an origin, as an fe_source. Opens the origin (fe_origin),
 * parses its FLV once into tags for the sink, and before the stream started asks for another
 * origin when one fails (the `origin` policy hook, through next_origin). What viewers get when
 * every attempt failed is made here: the origin's own status and body (capped), or 502/504/404
 * with a short text.
 */
#ifndef FE_PULL_H
#define FE_PULL_H

#include "loop/fe_loop.h"
#include "origin/fe_origin.h"
#include "origin/fe_source.h"

typedef struct fe_pull_opts {
  const char *key;         /* the stream, for logs (copied) */
  double connect_timeout;  /* seconds, up to the response head */
  double read_timeout;     /* seconds between reads once streaming */
  uint32_t max_tag_size;
  struct fe_tls_client *tls; /* https origins: the TLS client context (node-wide); NULL: system CAs */
  fe_stream_stats *stats;  /* the stream's counters (the sink's; may be NULL): origin connects,
                              failovers, errors and bytes are counted there too */
  /**
   * Optional: another origin after one failed before the stream started. `attempt` is 2, 3, ...;
   * `last_error` says what failed ("unreachable", "timeout", "status 503"). Returns 1 with a URL
   * in url, 0 to give up (viewers get the last failure), -1 when the policy that chooses failed
   * (logged by it; viewers get 500). `ud` is borrowed and must outlive the pull.
   */
  int (*next_origin)(void *ud, int attempt, const char *last_error, char *url, size_t cap);
  void *ud;
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
