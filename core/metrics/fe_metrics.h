/*
 * fe_metrics: counters of one loop, rendered as Prometheus text summed over every loop.
 *
 * Each loop owns its fe_metrics and is the only writer; /metrics is read from another thread. A
 * write is a relaxed atomic store (a plain mov on x86-64 and arm64, no locked instruction), a read
 * a relaxed atomic load, so the fan-out path pays nothing and the sum is race-free.
 */
#ifndef FE_METRICS_H
#define FE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define FE_METRICS_RES_SLOTS 64   /* resources with their own series; later names share "_other" */
#define FE_METRICS_BUCKETS 12     /* latency histograms: fe_metrics_latency_bounds, then +Inf */

/** A resource's counters on one loop (requests are counted when they end). */
typedef struct fe_res_metrics {
  uint64_t requests[6];          /* by status class: [1]=1xx ... [5]=5xx */
  uint64_t cache[6];             /* by cache status: FE_CACHE_* */
  uint64_t bytes_sent;           /* live: as written; other kinds: when the request ends */
} fe_res_metrics;

/** Cache statuses of the access log and the per-resource counters. */
enum { FE_CACHE_NONE, FE_CACHE_HIT, FE_CACHE_MISS, FE_CACHE_EXPIRED, FE_CACHE_STALE, FE_CACHE_BYPASS };
/** FE_CACHE_* of a cache status as answered ("HIT", "MISS", ...; NULL: FE_CACHE_NONE). */
int fe_metrics_cache_status(const char *name);

/**
 * One live stream's counters on one loop, kept by its hub. Plain integers: only that loop writes
 * them and only that loop reads them (the admin API asks each loop for a snapshot).
 */
typedef struct fe_stream_stats {
  uint64_t bytes_out;            /* bytes written to this stream's viewers */
  uint64_t bytes_in;             /* bytes read from the origin (the owning loop's pull) */
  uint64_t origin_connects;
  uint64_t origin_failovers;     /* another origin tried after one failed */
  uint64_t origin_errors;
  uint64_t frames_dropped;
  uint64_t viewer_jumps;         /* viewers moved forward to the newest keyframe */
  uint64_t viewers_kicked;       /* cut off for staying behind, or by the admin API */
  uint64_t joins;                /* viewers that joined */
} fe_stream_stats;

/** Adds every counter of b to a. */
void fe_stream_stats_add(fe_stream_stats *a, const fe_stream_stats *b);

typedef struct fe_metrics {
  uint64_t connections;          /* open client connections (gauge) */
  uint64_t accepted;             /* client connections accepted */
  uint64_t viewers;              /* live viewers attached to a hub (gauge) */
  uint64_t streams;              /* live hubs of this loop, relayed ones included (gauge) */
  uint64_t streams_refused;      /* new streams refused: limits.max_streams or max_window_memory */
  uint64_t origin_connects;      /* origin connections opened */
  uint64_t origin_failures;      /* origin connections that failed or ended on an error */
  uint64_t origin_failovers;     /* live streams moved to another origin (or the slate) mid-stream */
  uint64_t viewer_jumps;         /* viewers moved forward to the newest keyframe */
  uint64_t frames_dropped;       /* tags skipped by those jumps */
  uint64_t viewers_kicked;       /* viewers cut off for staying behind */
  uint64_t bytes_sent;           /* body and header bytes written to clients */
  uint64_t bytes_received;       /* bytes read from origins */
  uint64_t requests[6];          /* by status class: [1]=1xx ... [5]=5xx */
  uint64_t requests_proto[3];    /* by protocol: FE_PROTO_* */
  uint64_t h2_connections;       /* open HTTP/2 connections (gauge) */
  uint64_t h2_streams;           /* HTTP/2 streams opened by clients */
  uint64_t h2_resets;            /* HTTP/2 streams the client reset before they were answered */
  uint64_t h2_calm;              /* HTTP/2 connections ended for a flood (GOAWAY ENHANCE_YOUR_CALM) */
  uint64_t window_bytes;         /* bytes held by this loop's live windows (gauge) */
  uint64_t relay_subscribers;    /* other loops fed by this loop's pulls (gauge) */
  uint64_t relay_bytes_out;      /* tag bytes handed to other loops */
  uint64_t relay_bytes_in;       /* tag bytes received from other loops */
  uint64_t relay_dropped;        /* relay batches dropped because a loop fell behind */
  uint64_t vod_requests[5];      /* VOD answers by cache status (FE_VOD_CS_*) */
  uint64_t vod_bytes_sent;       /* VOD body bytes written to clients */
  uint64_t vod_origin_bytes;     /* body bytes read from VOD origins */
  uint64_t vod_origin_requests;  /* VOD origin requests made (slice fetches, revalidations) */
  uint64_t vod_store_errors;     /* slices or metas that could not be written to the cache dir */
  uint64_t access_log_lines;     /* access log lines handed to the writer */
  uint64_t lua_errors;           /* policy hook calls that failed (error, budget, bad answer) */
  uint64_t access_log_dropped;   /* lines dropped: the writer's queue was full (slow device) */
  uint64_t first_byte[FE_METRICS_BUCKETS]; /* request start to its answer's first byte */
  uint64_t first_byte_sum_us;
  uint64_t first_keyframe[FE_METRICS_BUCKETS]; /* live: request start to the first keyframe sent */
  uint64_t first_keyframe_sum_us;
  fe_res_metrics res[FE_METRICS_RES_SLOTS];
  /* Loop lag: how late the loop's probe timer fired, a histogram (fe_metrics_lag_bounds_ms). */
  uint64_t lag[8];
  uint64_t lag_sum_us;
} fe_metrics;

enum { FE_PROTO_HTTP10, FE_PROTO_HTTP11, FE_PROTO_HTTP2 };

enum { FE_VOD_CS_HIT, FE_VOD_CS_MISS, FE_VOD_CS_EXPIRED, FE_VOD_CS_STALE, FE_VOD_CS_BYPASS };

/** The upper bounds (ms) of the lag buckets; the last bucket is everything above. */
extern const uint32_t fe_metrics_lag_bounds_ms[7];
/** Counts one lag sample of the calling loop. */
void fe_metrics_lag(fe_metrics *m, uint64_t lag_us);

/** Adds n to a counter of the calling loop's own metrics (n may be negative for gauges). */
#define FE_METRIC_ADD(m, field, n) \
  __atomic_store_n(&(m)->field, (m)->field + (uint64_t)(int64_t)(n), __ATOMIC_RELAXED)
#define FE_METRIC_INC(m, field) FE_METRIC_ADD(m, field, 1)

/** Upper bounds (seconds) of the latency buckets; the last bucket is everything above. */
extern const double fe_metrics_latency_bounds[FE_METRICS_BUCKETS - 1];
/** Counts one sample (us) of a loop's latency histogram (`h`: first_byte or first_keyframe; `sum`: its sum). */
void fe_metrics_latency(uint64_t *h, uint64_t *sum, uint64_t us);

/** Counts a response status in its class. */
void fe_metrics_count_status(fe_metrics *m, int status);
/** Reads one loop's counters from any thread into out. */
void fe_metrics_read(const fe_metrics *m, fe_metrics *out);
/**
 * Renders the sum over n loops' counters, then per-loop series for the gauges that show how the
 * loops share the work. Returns the length written (truncated to cap).
 */
size_t fe_metrics_render(const fe_metrics *const *loops, int n, char *buf, size_t cap);

/**
 * The node's resource names, each given a fixed slot of fe_metrics.res the first time it is seen,
 * so a reload that reorders resources keeps every counter with its name. Names come in on the
 * control thread (config load); slots beyond FE_METRICS_RES_SLOTS - 1 share the last, "_other".
 */
typedef struct fe_metrics_names {
  char *names[FE_METRICS_RES_SLOTS];
  int n; /* atomic (release when a name is added): readers on other threads see whole names */
} fe_metrics_names;

/** The slot of `name`, added if new (the control thread only). */
int fe_metrics_names_slot(fe_metrics_names *t, const char *name);
/** The name of a slot, for rendering (any thread). */
const char *fe_metrics_names_get(const fe_metrics_names *t, int slot);
void fe_metrics_names_free(fe_metrics_names *t);

/**
 * Renders the per-resource series (requests by class and cache status, bytes) summed over loops:
 * the part of /metrics with a `resource` label. Returns the length written.
 */
size_t fe_metrics_render_resources(const fe_metrics *const *loops, int n, const fe_metrics_names *names,
                                   char *buf, size_t cap);

#endif
