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
  /* Loop lag: how late the loop's probe timer fired, a histogram (fe_metrics_lag_bounds_ms). */
  uint64_t lag[8];
  uint64_t lag_sum_us;
} fe_metrics;

enum { FE_VOD_CS_HIT, FE_VOD_CS_MISS, FE_VOD_CS_EXPIRED, FE_VOD_CS_STALE, FE_VOD_CS_BYPASS };

/** The upper bounds (ms) of the lag buckets; the last bucket is everything above. */
extern const uint32_t fe_metrics_lag_bounds_ms[7];
/** Counts one lag sample of the calling loop. */
void fe_metrics_lag(fe_metrics *m, uint64_t lag_us);

/** Adds n to a counter of the calling loop's own metrics (n may be negative for gauges). */
#define FE_METRIC_ADD(m, field, n) \
  __atomic_store_n(&(m)->field, (m)->field + (uint64_t)(int64_t)(n), __ATOMIC_RELAXED)
#define FE_METRIC_INC(m, field) FE_METRIC_ADD(m, field, 1)

/** Counts a response status in its class. */
void fe_metrics_count_status(fe_metrics *m, int status);
/** Reads one loop's counters from any thread into out. */
void fe_metrics_read(const fe_metrics *m, fe_metrics *out);
/**
 * Renders the sum over n loops' counters, then per-loop series for the gauges that show how the
 * loops share the work. Returns the length written (truncated to cap).
 */
size_t fe_metrics_render(const fe_metrics *const *loops, int n, char *buf, size_t cap);

#endif
