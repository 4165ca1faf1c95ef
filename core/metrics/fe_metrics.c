#include "metrics/fe_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void fe_metrics_count_status(fe_metrics *m, int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5)
    FE_METRIC_INC(m, requests[cls]);
}

void fe_metrics_read(const fe_metrics *m, fe_metrics *out) {
  const uint64_t *src = (const uint64_t *)m;
  uint64_t *dst = (uint64_t *)out;
  for (size_t i = 0; i < sizeof(*m) / sizeof(uint64_t); i++)
    dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

typedef struct fe_out {
  char *buf;
  size_t cap, n;
} fe_out;

static void fe_put(fe_out *o, const char *fmt, unsigned long long a, unsigned long long b) {
  if (o->n >= o->cap)
    return;
  int w = snprintf(o->buf + o->n, o->cap - o->n, fmt, a, b);
  if (w > 0)
    o->n += (size_t)w;
  if (o->n >= o->cap)
    o->n = o->cap - 1;
}

const uint32_t fe_metrics_lag_bounds_ms[7] = {1, 2, 5, 10, 25, 50, 100};

const double fe_metrics_latency_bounds[FE_METRICS_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                  0.5,   1,    2.5,   5,    10};

void fe_metrics_latency(uint64_t *h, uint64_t *sum, uint64_t us) {
  int b = 0;
  while (b < FE_METRICS_BUCKETS - 1 && (double)us > fe_metrics_latency_bounds[b] * 1e6)
    b++;
  __atomic_store_n(&h[b], h[b] + 1, __ATOMIC_RELAXED);
  __atomic_store_n(sum, *sum + us, __ATOMIC_RELAXED);
}

int fe_metrics_cache_status(const char *name) {
  static const char *const names[] = {NULL, "HIT", "MISS", "EXPIRED", "STALE", "BYPASS"};
  for (int i = 1; name && i < 6; i++)
    if (strcasecmp(name, names[i]) == 0)
      return i;
  return FE_CACHE_NONE;
}

void fe_stream_stats_add(fe_stream_stats *a, const fe_stream_stats *b) {
  uint64_t *d = (uint64_t *)a;
  const uint64_t *s = (const uint64_t *)b;
  for (size_t i = 0; i < sizeof(*a) / sizeof(uint64_t); i++)
    d[i] += s[i];
}

int fe_metrics_names_slot(fe_metrics_names *t, const char *name) {
  int n = t->n;
  for (int i = 0; i < n; i++)
    if (strcmp(t->names[i], name) == 0)
      return i;
  if (n == FE_METRICS_RES_SLOTS - 1) {
    if (!t->names[n])
      t->names[n] = strdup("_other");
    return n;
  }
  char *copy = strdup(name);
  if (!copy)
    return FE_METRICS_RES_SLOTS - 1;
  t->names[n] = copy;
  __atomic_store_n(&t->n, n + 1, __ATOMIC_RELEASE);
  return n;
}

const char *fe_metrics_names_get(const fe_metrics_names *t, int slot) {
  int n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
  return slot < n ? t->names[slot] : "_other";
}

void fe_metrics_names_free(fe_metrics_names *t) {
  for (int i = 0; i < FE_METRICS_RES_SLOTS; i++)
    free(t->names[i]);
  memset(t, 0, sizeof(*t));
}

void fe_metrics_lag(fe_metrics *m, uint64_t lag_us) {
  int b = 0;
  while (b < 7 && lag_us > (uint64_t)fe_metrics_lag_bounds_ms[b] * 1000)
    b++;
  FE_METRIC_INC(m, lag[b]);
  FE_METRIC_ADD(m, lag_sum_us, lag_us);
}

/* Per loop: a Prometheus histogram of the lag, in seconds. */
static void fe_metrics_render_lag(fe_out *o, const fe_metrics *snap, int n) {
  fe_put(o, "# TYPE flvedge_loop_lag_seconds histogram\n", 0, 0);
  for (int i = 0; i < n; i++) {
    uint64_t cum = 0;
    char line[160];
    for (int b = 0; b < 8; b++) {
      cum += snap[i].lag[b];
      if (b < 7)
        snprintf(line, sizeof(line), "flvedge_loop_lag_seconds_bucket{loop=\"%d\",le=\"%g\"} %%llu\n", i,
                 fe_metrics_lag_bounds_ms[b] / 1000.0);
      else
        snprintf(line, sizeof(line), "flvedge_loop_lag_seconds_bucket{loop=\"%d\",le=\"+Inf\"} %%llu\n", i);
      fe_put(o, line, cum, 0);
    }
    snprintf(line, sizeof(line), "flvedge_loop_lag_seconds_count{loop=\"%d\"} %%llu\n", i);
    fe_put(o, line, cum, 0);
    snprintf(line, sizeof(line), "flvedge_loop_lag_seconds_sum{loop=\"%d\"} %.6f\n", i,
             snap[i].lag_sum_us / 1e6);
    fe_put(o, line, 0, 0);
  }
}

/* A Prometheus histogram (seconds) over the latency buckets. */
static void fe_metrics_render_hist(fe_out *o, const char *name, const uint64_t *h, uint64_t sum_us) {
  char line[200];
  snprintf(line, sizeof(line), "# TYPE flvedge_%s histogram\n", name);
  fe_put(o, line, 0, 0);
  uint64_t cum = 0;
  for (int b = 0; b < FE_METRICS_BUCKETS; b++) {
    cum += h[b];
    if (b < FE_METRICS_BUCKETS - 1)
      snprintf(line, sizeof(line), "flvedge_%s_bucket{le=\"%g\"} %%llu\n", name, fe_metrics_latency_bounds[b]);
    else
      snprintf(line, sizeof(line), "flvedge_%s_bucket{le=\"+Inf\"} %%llu\n", name);
    fe_put(o, line, cum, 0);
  }
  snprintf(line, sizeof(line), "flvedge_%s_count %%llu\nflvedge_%s_sum %.6f\n", name, name, sum_us / 1e6);
  fe_put(o, line, cum, 0);
}

size_t fe_metrics_render(const fe_metrics *const *loops, int n, char *buf, size_t cap) {
  static const struct {
    const char *name, *type;
    size_t off;
    int per_loop;
  } fields[] = {
#define F(name, type, field, per_loop) {name, type, offsetof(fe_metrics, field), per_loop}
      F("connections", "gauge", connections, 1),
      F("connections_accepted_total", "counter", accepted, 1),
      F("viewers", "gauge", viewers, 1),
      F("streams", "gauge", streams, 1),
      F("streams_refused_total", "counter", streams_refused, 0),
      F("window_bytes", "gauge", window_bytes, 0),
      F("origin_connects_total", "counter", origin_connects, 1),
      F("origin_failures_total", "counter", origin_failures, 0),
      F("origin_failovers_total", "counter", origin_failovers, 0),
      F("viewer_jumps_total", "counter", viewer_jumps, 0),
      F("frames_dropped_total", "counter", frames_dropped, 0),
      F("viewers_kicked_total", "counter", viewers_kicked, 0),
      F("bytes_sent_total", "counter", bytes_sent, 1),
      F("bytes_received_total", "counter", bytes_received, 0),
      F("relay_subscribers", "gauge", relay_subscribers, 1),
      F("relay_bytes_out_total", "counter", relay_bytes_out, 1),
      F("relay_bytes_in_total", "counter", relay_bytes_in, 1),
      F("relay_dropped_total", "counter", relay_dropped, 0),
      F("vod_bytes_sent_total", "counter", vod_bytes_sent, 0),
      F("vod_origin_bytes_total", "counter", vod_origin_bytes, 0),
      F("vod_origin_requests_total", "counter", vod_origin_requests, 0),
      F("vod_store_errors_total", "counter", vod_store_errors, 0),
      F("access_log_lines_total", "counter", access_log_lines, 0),
      F("access_log_dropped_total", "counter", access_log_dropped, 0),
      F("lua_errors_total", "counter", lua_errors, 0),
      F("h2_connections", "gauge", h2_connections, 1),
      F("h2_streams_total", "counter", h2_streams, 0),
      F("h2_early_resets_total", "counter", h2_resets, 0),
      F("h2_flood_closes_total", "counter", h2_calm, 0),
#undef F
  };
  if (n > 64)
    n = 64;
  fe_metrics *snap = malloc(sizeof(fe_metrics) * (size_t)(n + 1));
  if (!snap)
    return 0;
  fe_metrics *sum = &snap[n];
  memset(sum, 0, sizeof(*sum));
  for (int i = 0; i < n; i++) {
    fe_metrics_read(loops[i], &snap[i]);
    const uint64_t *s = (const uint64_t *)&snap[i];
    uint64_t *d = (uint64_t *)sum;
    for (size_t k = 0; k < sizeof(*sum) / sizeof(uint64_t); k++)
      d[k] += s[k];
  }
  fe_out o = {buf, cap, 0};
  if (cap)
    buf[0] = 0;
  for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
    char line[160];
    snprintf(line, sizeof(line), "# TYPE flvedge_%s %s\nflvedge_%s %%llu\n", fields[f].name,
             fields[f].type, fields[f].name);
    fe_put(&o, line, *(const uint64_t *)((const char *)sum + fields[f].off), 0);
  }
  static const char *const protos[] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2.0"};
  fe_put(&o, "# TYPE flvedge_protocol_requests_total counter\n", 0, 0);
  for (int p = 0; p < 3; p++) {
    char line[120];
    snprintf(line, sizeof(line), "flvedge_protocol_requests_total{protocol=\"%s\"} %%llu\n", protos[p]);
    fe_put(&o, line, sum->requests_proto[p], 0);
  }
  fe_put(&o, "# TYPE flvedge_requests_total counter\n", 0, 0);
  for (int cls = 1; cls <= 5; cls++)
    fe_put(&o, "flvedge_requests_total{status=\"%lluxx\"} %llu\n", (unsigned long long)cls,
           sum->requests[cls]);
  static const char *const cs[] = {"hit", "miss", "expired", "stale", "bypass"};
  fe_put(&o, "# TYPE flvedge_vod_requests_total counter\n", 0, 0);
  for (int i = 0; i < 5; i++) {
    char line[128];
    snprintf(line, sizeof(line), "flvedge_vod_requests_total{cache_status=\"%s\"} %%llu\n", cs[i]);
    fe_put(&o, line, sum->vod_requests[i], 0);
  }
  fe_put(&o, "# TYPE flvedge_loops gauge\nflvedge_loops %llu\n", (unsigned long long)n, 0);
  for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
    if (!fields[f].per_loop)
      continue;
    char line[160];
    snprintf(line, sizeof(line), "flvedge_loop_%s{loop=\"%%llu\"} %%llu\n", fields[f].name);
    for (int i = 0; i < n; i++)
      fe_put(&o, line, (unsigned long long)i,
             *(const uint64_t *)((const char *)&snap[i] + fields[f].off));
  }
  fe_metrics_render_lag(&o, snap, n);
  fe_metrics_render_hist(&o, "first_byte_seconds", sum->first_byte, sum->first_byte_sum_us);
  fe_metrics_render_hist(&o, "first_keyframe_seconds", sum->first_keyframe, sum->first_keyframe_sum_us);
  free(snap);
  return o.n;
}

size_t fe_metrics_render_resources(const fe_metrics *const *loops, int n, const fe_metrics_names *names,
                                   char *buf, size_t cap) {
  fe_res_metrics *sum = calloc(FE_METRICS_RES_SLOTS, sizeof(*sum));
  if (!sum)
    return 0;
  int used = __atomic_load_n(&names->n, __ATOMIC_ACQUIRE);
  if (names->names[FE_METRICS_RES_SLOTS - 1])
    used = FE_METRICS_RES_SLOTS;
  for (int i = 0; i < n; i++)
    for (int r = 0; r < used; r++) {
      const uint64_t *s = (const uint64_t *)&loops[i]->res[r];
      uint64_t *d = (uint64_t *)&sum[r];
      for (size_t k = 0; k < sizeof(fe_res_metrics) / sizeof(uint64_t); k++)
        d[k] += __atomic_load_n(&s[k], __ATOMIC_RELAXED);
    }
  static const char *const cs[] = {"none", "hit", "miss", "expired", "stale", "bypass"};
  fe_out o = {buf, cap, 0};
  char line[512];
  fe_put(&o, "# TYPE flvedge_resource_requests_total counter\n", 0, 0);
  for (int r = 0; r < used; r++)
    for (int cls = 1; cls <= 5; cls++) {
      snprintf(line, sizeof(line), "flvedge_resource_requests_total{resource=\"%s\",status=\"%dxx\"} %%llu\n",
               fe_metrics_names_get(names, r), cls);
      fe_put(&o, line, sum[r].requests[cls], 0);
    }
  fe_put(&o, "# TYPE flvedge_resource_cache_total counter\n", 0, 0);
  for (int r = 0; r < used; r++)
    for (int c = 0; c < 6; c++) {
      snprintf(line, sizeof(line), "flvedge_resource_cache_total{resource=\"%s\",cache_status=\"%s\"} %%llu\n",
               fe_metrics_names_get(names, r), cs[c]);
      fe_put(&o, line, sum[r].cache[c], 0);
    }
  fe_put(&o, "# TYPE flvedge_resource_bytes_sent_total counter\n", 0, 0);
  for (int r = 0; r < used; r++) {
    snprintf(line, sizeof(line), "flvedge_resource_bytes_sent_total{resource=\"%s\"} %%llu\n",
             fe_metrics_names_get(names, r));
    fe_put(&o, line, sum[r].bytes_sent, 0);
  }
  free(sum);
  return o.n;
}
