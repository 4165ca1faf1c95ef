/* fe_metrics: process-wide counters, rendered as Prometheus text. One loop for now, so plain integers. */
#ifndef FE_METRICS_H
#define FE_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fe_metrics {
  uint64_t connections;          /* open client connections (gauge) */
  uint64_t viewers;              /* live viewers attached to a hub (gauge) */
  uint64_t streams;              /* live hubs (gauge) */
  uint64_t origin_connects;      /* origin connections opened */
  uint64_t origin_failures;      /* origin connections that failed or ended on an error */
  uint64_t viewer_jumps;         /* viewers moved forward to the newest keyframe */
  uint64_t frames_dropped;       /* tags skipped by those jumps */
  uint64_t viewers_kicked;       /* viewers cut off for staying behind */
  uint64_t bytes_sent;           /* body and header bytes written to clients */
  uint64_t bytes_received;       /* bytes read from origins */
  uint64_t requests[6];          /* by status class: [1]=1xx ... [5]=5xx */
  uint64_t window_bytes;         /* bytes held by all live windows (gauge) */
} fe_metrics;

extern fe_metrics fe_stats;

/** Counts a response status in its class. */
void fe_metrics_count_status(int status);
/** Renders all counters; returns the length written (truncated to cap). */
size_t fe_metrics_render(char *buf, size_t cap);

#endif
