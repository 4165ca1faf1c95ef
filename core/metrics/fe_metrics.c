#include "metrics/fe_metrics.h"

#include <stdio.h>

fe_metrics fe_stats;

void fe_metrics_count_status(int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5)
    fe_stats.requests[cls]++;
}

size_t fe_metrics_render(char *buf, size_t cap) {
  const fe_metrics *m = &fe_stats;
  int n = snprintf(buf, cap,
                   "# TYPE flvedge_connections gauge\nflvedge_connections %llu\n"
                   "# TYPE flvedge_viewers gauge\nflvedge_viewers %llu\n"
                   "# TYPE flvedge_streams gauge\nflvedge_streams %llu\n"
                   "# TYPE flvedge_window_bytes gauge\nflvedge_window_bytes %llu\n"
                   "# TYPE flvedge_origin_connects_total counter\nflvedge_origin_connects_total %llu\n"
                   "# TYPE flvedge_origin_failures_total counter\nflvedge_origin_failures_total %llu\n"
                   "# TYPE flvedge_viewer_jumps_total counter\nflvedge_viewer_jumps_total %llu\n"
                   "# TYPE flvedge_frames_dropped_total counter\nflvedge_frames_dropped_total %llu\n"
                   "# TYPE flvedge_viewers_kicked_total counter\nflvedge_viewers_kicked_total %llu\n"
                   "# TYPE flvedge_bytes_sent_total counter\nflvedge_bytes_sent_total %llu\n"
                   "# TYPE flvedge_bytes_received_total counter\nflvedge_bytes_received_total %llu\n"
                   "# TYPE flvedge_requests_total counter\n",
                   (unsigned long long)m->connections, (unsigned long long)m->viewers,
                   (unsigned long long)m->streams, (unsigned long long)m->window_bytes,
                   (unsigned long long)m->origin_connects, (unsigned long long)m->origin_failures,
                   (unsigned long long)m->viewer_jumps, (unsigned long long)m->frames_dropped,
                   (unsigned long long)m->viewers_kicked, (unsigned long long)m->bytes_sent,
                   (unsigned long long)m->bytes_received);
  for (int cls = 1; cls <= 5 && n >= 0 && (size_t)n < cap; cls++)
    n += snprintf(buf + n, cap - (size_t)n, "flvedge_requests_total{status=\"%dxx\"} %llu\n", cls,
                  (unsigned long long)m->requests[cls]);
  if (n < 0)
    return 0;
  return (size_t)n < cap ? (size_t)n : cap - 1;
}
