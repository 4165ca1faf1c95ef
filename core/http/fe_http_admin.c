#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>

#include "http/fe_http_admin.h"
#include "http/fe_http_handlers.h"
#include "http/fe_http_router.h"
#include "lua/fe_lua.h"

#define FE_ADMIN_MAX_NODES 4096 /* JSON values in one body */
#define FE_ADMIN_MAX_DEPTH 4
#define FE_ADMIN_METRICS_MAX (8u << 20) /* 1000 stream series take about 1.5 MiB */
#define FE_ADMIN_KEY_MAX 512

enum { FE_ADMIN_URLS = 1, FE_ADMIN_PATTERN = 2 }; /* what a POST body may hold */

/* The POST endpoints (their handlers live with their kind: vod). */
typedef struct fe_admin_post {
  const char *path;
  int accepts; /* FE_ADMIN_URLS | FE_ADMIN_PATTERN */
  fe_admin_post_fn fn;
} fe_admin_post;

static const fe_admin_post fe_admin_posts[] = {
    {"/vod/purge", FE_ADMIN_URLS | FE_ADMIN_PATTERN, fe_vod_admin_purge},
    {"/vod/prefetch", FE_ADMIN_URLS, fe_vod_admin_prefetch},
};
#define FE_ADMIN_NPOSTS (sizeof(fe_admin_posts) / sizeof(fe_admin_posts[0]))

/* ---- answers ------------------------------------------------------------------------------- */

static int fe_admin_next(const fe_conn *c, int keep) {
  return c->state == FE_CS_READING && keep ? 0 : HPE_PAUSED;
}

static int fe_admin_reply(fe_conn *c, int status, const char *extra, const fe_json_buf *b, int keep) {
  static const char overflow[] = "{\"error\":\"answer too large\"}\n";
  if (b->overflow)
    fe_conn_respond(c, 500, "application/json", NULL, overflow, sizeof(overflow) - 1, !keep);
  else
    fe_conn_respond(c, status, "application/json", extra, b->p, b->len, !keep);
  return fe_admin_next(c, keep);
}

/* {"error": why}: why is escaped, as it may quote a client's bytes (a JSON parse error). */
static int fe_admin_error(fe_conn *c, int status, const char *extra, const char *why, int keep) {
  char body[512];
  fe_json_buf b;
  fe_json_init(&b, body, sizeof(body));
  fe_json_raw(&b, "{\"error\":");
  fe_json_str(&b, why, strlen(why));
  fe_json_raw(&b, "}\n");
  return fe_admin_reply(c, status, extra, &b, keep);
}

/* ---- auth ---------------------------------------------------------------------------------- */

/* The time taken depends on the token's length only, never on how much of it a guess matched. */
static int fe_admin_token_equal(const char *got, size_t glen, const char *want) {
  size_t wlen = strlen(want);
  unsigned diff = glen != wlen;
  for (size_t i = 0; i < wlen; i++)
    diff |= (unsigned char)want[i] ^ (unsigned char)(i < glen ? got[i] : 0);
  return diff == 0;
}

/* 1 when the request carries `Authorization: Bearer <token>` (scheme in any case, RFC 9110 11.1). */
static int fe_admin_authorized(const fe_conn *c, const char *token, int *offered) {
  const fe_span *h = fe_conn_header(c, "Authorization");
  *offered = h != NULL;
  if (!h || h->len < 7 || strncasecmp(c->buf + h->off, "Bearer ", 7) != 0)
    return 0;
  const char *v = c->buf + h->off + 7;
  size_t n = h->len - 7;
  while (n > 0 && *v == ' ') {
    v++;
    n--;
  }
  return fe_admin_token_equal(v, n, token);
}

/* ---- endpoints ----------------------------------------------------------------------------- */

static int fe_admin_health(fe_conn *c, int keep) {
  char body[256];
  fe_json_buf b;
  fe_json_init(&b, body, sizeof(body));
  fe_json_raw(&b, "{\"status\":\"ok\",\"loops\":");
  fe_json_u64(&b, (uint64_t)c->w->nloops);
  fe_json_raw(&b, ",\"uptime\":");
  fe_json_u64(&b, (uv_hrtime() - c->w->started) / 1000000000u);
  fe_json_raw(&b, ",\"version\":");
  fe_json_str(&b, FE_VERSION, strlen(FE_VERSION));
  fe_json_raw(&b, "}\n");
  return fe_admin_reply(c, 200, "Cache-Control: no-cache\r\n", &b, keep);
}

/* A path as a client asks for it: '/' first, visible ASCII, no NUL hidden by an escape. */
static int fe_admin_path_ok(const fe_json_node *nd) {
  return nd->len > 0 && nd->s[0] == '/' && strlen(nd->s) == nd->len && fe_str_visible(nd->s, nd->len);
}

/* Checks the body against what the endpoint accepts; on success fills t (urls into `urls`).
 * Returns NULL, or the reason (into why) for a 400. */
static const char *fe_admin_targets_read(const fe_json_doc *doc, int accepts, const char **urls,
                                         fe_admin_targets *t, char *why, size_t cap) {
  const fe_json_node *nd = doc->nodes;
  if (nd[0].type != FE_JSON_OBJECT)
    return "the body must be a JSON object";
  for (uint32_t i = 1; i < nd[0].end; i = nd[i + 1].end) {
    int is_urls = nd[i].len == 4 && memcmp(nd[i].s, "urls", 4) == 0 && (accepts & FE_ADMIN_URLS);
    int is_pattern = nd[i].len == 7 && memcmp(nd[i].s, "pattern", 7) == 0 && (accepts & FE_ADMIN_PATTERN);
    if (!is_urls && !is_pattern) {
      snprintf(why, cap, "unknown member \"%.64s\" (this endpoint takes %s)", nd[i].s,
               accepts & FE_ADMIN_PATTERN ? "\"urls\" and \"pattern\"" : "\"urls\"");
      return why;
    }
  }
  int u = fe_json_get(doc, 0, "urls"), p = fe_json_get(doc, 0, "pattern");
  if (u < 0 && p < 0)
    return accepts & FE_ADMIN_PATTERN ? "\"urls\" or \"pattern\" is required" : "\"urls\" is required";
  if (u >= 0) {
    if (nd[u].type != FE_JSON_ARRAY)
      return "\"urls\" must be an array of paths";
    if (nd[u].count > FE_ADMIN_MAX_URLS) {
      snprintf(why, cap, "\"urls\" has more than %d entries", FE_ADMIN_MAX_URLS);
      return why;
    }
    for (uint32_t i = (uint32_t)u + 1; i < nd[u].end; i = nd[i].end) {
      if (nd[i].type != FE_JSON_STRING || !fe_admin_path_ok(&nd[i]))
        return "every entry of \"urls\" must be a path starting with '/' (visible ASCII)";
      urls[t->nurls++] = nd[i].s;
    }
  }
  if (p >= 0) {
    if (nd[p].type != FE_JSON_STRING || !fe_admin_path_ok(&nd[p]))
      return "\"pattern\" must be a path starting with '/' (visible ASCII)";
    t->pattern = nd[p].s;
  }
  t->urls = urls;
  return NULL;
}

/* The body is checked first, so a client learns of its own mistakes before of a missing module. */
static int fe_admin_post_serve(fe_conn *c, const fe_admin_post *ep, int keep) {
  /* Everything the body needs, in one allocation: nodes, decoded strings, url pointers. */
  size_t len = c->body_len;
  size_t size = FE_ADMIN_MAX_NODES * sizeof(fe_json_node) + FE_ADMIN_MAX_URLS * sizeof(char *) + len + 1;
  char *mem = malloc(size);
  if (!mem)
    return fe_admin_error(c, 500, NULL, "out of memory", keep);
  fe_json_node *nodes = (fe_json_node *)mem;
  const char **urls = (const char **)(mem + FE_ADMIN_MAX_NODES * sizeof(fe_json_node));
  char *arena = (char *)(urls + FE_ADMIN_MAX_URLS);
  fe_json_doc doc;
  char err[200], why[256];
  int rc;
  if (fe_json_parse(c->body ? c->body : "", len, nodes, FE_ADMIN_MAX_NODES, FE_ADMIN_MAX_DEPTH,
                    arena, &doc, err, sizeof(err)) < 0) {
    snprintf(why, sizeof(why), "invalid JSON: %s", err);
    rc = fe_admin_error(c, 400, NULL, why, keep);
  } else {
    fe_admin_targets t = {0};
    const char *bad = fe_admin_targets_read(&doc, ep->accepts, urls, &t, why, sizeof(why));
    if (bad) {
      rc = fe_admin_error(c, 400, NULL, bad, keep);
    } else {
      char out[4096];
      fe_json_buf b;
      fe_json_init(&b, out, sizeof(out));
      int status = ep->fn(c, &t, &b);
      rc = fe_admin_reply(c, status, NULL, &b, keep);
    }
  }
  free(mem);
  return rc;
}

/* ---- asking every loop --------------------------------------------------------------------- */

/*
 * Streams live in hubs that belong to their loops, so the admin loop never reads them itself: it
 * posts a task to every loop's mailbox (fe_loop_post), each loop copies what is asked on its own
 * thread (or kicks its viewers), and the last to finish posts the answer back to the admin loop.
 * The fan-out path takes no lock and no atomic for it; a request costs one task per loop.
 */
enum { FE_ASK_METRICS, FE_ASK_STREAMS, FE_ASK_STREAM, FE_ASK_KICK };

typedef struct fe_ask fe_ask;

typedef struct fe_ask_part {
  fe_task task;
  fe_ask *ask;
  fe_loop *loop;
  fe_hub_info *info;
  int n;
  int kicked;
  fe_stream_stats retired[FE_METRICS_RES_SLOTS]; /* FE_ASK_METRICS */
} fe_ask_part;

struct fe_ask {
  fe_conn *c;          /* NULL once the connection has gone: the answer is dropped */
  int what, keep;
  char key[FE_ADMIN_KEY_MAX];
  int remaining;       /* atomic: loops still to answer */
  fe_task done;
  fe_loop *home;
  int nloops;
  fe_ask_part parts[];
};

static void fe_ask_free(fe_ask *a) {
  for (int i = 0; i < a->nloops; i++)
    fe_hub_info_free(a->parts[i].info, a->parts[i].n);
  free(a);
}

static void fe_ask_on_done(fe_task *t);

/* A loop is done with its part: the last one sends the whole back home. */
static void fe_ask_part_done(fe_ask *a) {
  if (__atomic_sub_fetch(&a->remaining, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  if (fe_loop_post(a->home, &a->done, fe_ask_on_done) < 0)
    fe_ask_free(a); /* the admin loop has closed: its connection is gone */
}

/* On the part's loop. */
static void fe_ask_on_part(fe_task *t) {
  fe_ask_part *p = (fe_ask_part *)t;
  fe_ask *a = p->ask;
  fe_hubs *hubs = p->loop->hubs;
  if (!t->cancelled && hubs) {
    if (a->what == FE_ASK_KICK) {
      p->kicked = fe_hubs_kick(hubs, a->key);
    } else {
      p->n = fe_hubs_snapshot(hubs, a->what == FE_ASK_STREAM ? a->key : NULL, &p->info);
      if (p->n < 0)
        p->n = 0;
      if (a->what == FE_ASK_METRICS)
        memcpy(p->retired, p->loop->retired, sizeof(p->retired));
    }
  }
  fe_ask_part_done(a);
}

static void fe_ask_on_close(fe_conn *c) {
  fe_ask *a = c->kind_data;
  a->c = NULL;
  c->kind_data = NULL;
}

/* Starts asking every loop; the answer comes from fe_ask_on_done. Returns 0 or answers itself. */
static int fe_ask_start(fe_conn *c, int what, const char *key, size_t klen, int keep) {
  fe_worker *w = c->w;
  fe_ask *a = calloc(1, sizeof(*a) + (size_t)w->nloops * sizeof(fe_ask_part));
  if (!a)
    return fe_admin_error(c, 500, NULL, "out of memory", keep);
  a->c = c;
  a->what = what;
  a->keep = keep;
  a->home = &w->loop;
  a->nloops = w->nloops;
  a->remaining = w->nloops;
  if (key)
    snprintf(a->key, sizeof(a->key), "%.*s", (int)klen, key);
  c->kind_data = a;
  c->on_close = fe_ask_on_close;
  fe_conn_answer_begin(c);
  for (int i = 0; i < w->nloops; i++) {
    fe_ask_part *p = &a->parts[i];
    p->ask = a;
    p->loop = w->all_loops[i];
    if (fe_loop_post(p->loop, &p->task, fe_ask_on_part) < 0)
      fe_ask_part_done(a); /* a loop that has closed has nothing to tell */
  }
  return fe_admin_next(c, keep);
}

/* Prometheus label values: `\`, `"` and newlines escaped. */
static void fe_prom_label(char *out, size_t cap, const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len && n + 3 < cap; i++) {
    char ch = s[i];
    if (ch == '\\' || ch == '"' || ch == '\n') {
      out[n++] = '\\';
      ch = ch == '\n' ? 'n' : ch;
    }
    out[n++] = ch;
  }
  out[n] = 0;
}

/* One stream over every loop: the loops' viewers and counters summed, the rest from its owner. */
typedef struct fe_stream_row {
  const fe_hub_info *first;   /* the owner's when a loop owns it, else any */
  uint32_t viewers;
  uint64_t bitrate;
  fe_stream_stats stats;
  uint32_t *per_loop;
} fe_stream_row;

static int fe_row_by_viewers(const void *x, const void *y) {
  const fe_stream_row *a = x, *b = y;
  if (a->viewers != b->viewers)
    return a->viewers > b->viewers ? -1 : 1;
  return strcmp(a->first->key, b->first->key);
}

/* Merges the parts' snapshots by key. Returns the rows (malloc'd, per_loop inside) or NULL. */
static fe_stream_row *fe_ask_rows(fe_ask *a, int *nrows) {
  int total = 0;
  for (int i = 0; i < a->nloops; i++)
    total += a->parts[i].n;
  *nrows = 0;
  /* One allocation: the rows, then each row's viewers per loop. */
  fe_stream_row *rows = calloc(1, ((size_t)total + 1) * (sizeof(*rows) + (size_t)a->nloops * sizeof(uint32_t)));
  if (!rows)
    return NULL;
  uint32_t *loops = (uint32_t *)(rows + total + 1);
  int n = 0;
  for (int i = 0; i < a->nloops; i++)
    for (int k = 0; k < a->parts[i].n; k++) {
      const fe_hub_info *h = &a->parts[i].info[k];
      int r = 0;
      while (r < n && strcmp(rows[r].first->key, h->key) != 0)
        r++;
      if (r == n) {
        rows[n].first = h;
        rows[n].per_loop = loops + (size_t)n * (size_t)a->nloops;
        n++;
      } else if (h->owner) {
        rows[r].first = h;
      }
      rows[r].viewers += h->viewers;
      rows[r].per_loop[i] += h->viewers;
      fe_stream_stats_add(&rows[r].stats, &h->stats);
    }
  for (int r = 0; r < n; r++)
    rows[r].bitrate = rows[r].first->bitrate;
  qsort(rows, (size_t)n, sizeof(*rows), fe_row_by_viewers);
  *nrows = n;
  return rows;
}

static void fe_rows_free(fe_stream_row *rows) {
  free(rows);
}

typedef struct fe_text {
  char *p;
  size_t len, cap;
} fe_text;

static void fe_text_put(fe_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fe_text_put(fe_text *t, const char *fmt, ...) {
  if (t->len + 1 >= t->cap)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    t->len = t->len + (size_t)n < t->cap ? t->len + (size_t)n : t->cap - 1;
}

/* The counters of a stream row (or a sum of rows), as series with the given labels. */
static const struct {
  const char *name, *type;
  size_t off;
} fe_stream_fields[] = {
    {"bytes_sent_total", "counter", offsetof(fe_stream_stats, bytes_out)},
    {"origin_bytes_total", "counter", offsetof(fe_stream_stats, bytes_in)},
    {"origin_connects_total", "counter", offsetof(fe_stream_stats, origin_connects)},
    {"origin_failovers_total", "counter", offsetof(fe_stream_stats, origin_failovers)},
    {"origin_errors_total", "counter", offsetof(fe_stream_stats, origin_errors)},
    {"frames_dropped_total", "counter", offsetof(fe_stream_stats, frames_dropped)},
    {"viewer_jumps_total", "counter", offsetof(fe_stream_stats, viewer_jumps)},
    {"viewers_kicked_total", "counter", offsetof(fe_stream_stats, viewers_kicked)},
    {"joins_total", "counter", offsetof(fe_stream_stats, joins)},
};
#define FE_NSTREAM_FIELDS (sizeof(fe_stream_fields) / sizeof(fe_stream_fields[0]))

static uint64_t fe_stat(const fe_stream_stats *s, size_t off) {
  return *(const uint64_t *)((const char *)s + off);
}

/* Per stream, the busiest max_stream_series by viewers; the others summed into stream="_other". */
static void fe_metrics_streams(fe_text *t, fe_ask *a, const fe_config *cfg) {
  int n;
  fe_stream_row *rows = fe_ask_rows(a, &n);
  if (!rows)
    return;
  int shown = n < (int)cfg->max_stream_series ? n : (int)cfg->max_stream_series;
  fe_stream_row other = {0};
  for (int r = shown; r < n; r++) {
    other.viewers += rows[r].viewers;
    other.bitrate += rows[r].bitrate;
    fe_stream_stats_add(&other.stats, &rows[r].stats);
  }
  /* labels of every shown row, and of _other */
  char (*labels)[600] = malloc((size_t)(shown + 1) * sizeof(*labels));
  if (!labels) {
    fe_rows_free(rows);
    return;
  }
  for (int r = 0; r < shown; r++) {
    const char *key = rows[r].first->key, *slash = strchr(key, '/');
    size_t rl = slash ? (size_t)(slash - key) : strlen(key);
    char res[256], stream[300];
    fe_prom_label(res, sizeof(res), key, rl);
    fe_prom_label(stream, sizeof(stream), slash ? slash + 1 : "", slash ? strlen(slash + 1) : 0);
    snprintf(labels[r], sizeof(labels[r]), "resource=\"%s\",stream=\"%s\"", res, stream);
  }
  snprintf(labels[shown], sizeof(labels[shown]), "resource=\"_other\",stream=\"_other\"");
  int with_other = n > shown;
  fe_text_put(t, "# TYPE flvedge_stream_series_capped gauge\nflvedge_stream_series_capped %d\n", n - shown);
  fe_text_put(t, "# TYPE flvedge_stream_viewers gauge\n");
  for (int r = 0; r < shown + with_other; r++)
    fe_text_put(t, "flvedge_stream_viewers{%s} %u\n", labels[r], r < shown ? rows[r].viewers : other.viewers);
  fe_text_put(t, "# TYPE flvedge_stream_bitrate_bps gauge\n");
  for (int r = 0; r < shown + with_other; r++)
    fe_text_put(t, "flvedge_stream_bitrate_bps{%s} %llu\n", labels[r],
                (unsigned long long)(r < shown ? rows[r].bitrate : other.bitrate));
  for (size_t f = 0; f < FE_NSTREAM_FIELDS; f++) {
    fe_text_put(t, "# TYPE flvedge_stream_%s %s\n", fe_stream_fields[f].name, fe_stream_fields[f].type);
    for (int r = 0; r < shown + with_other; r++)
      fe_text_put(t, "flvedge_stream_%s{%s} %llu\n", fe_stream_fields[f].name, labels[r],
                  (unsigned long long)fe_stat(r < shown ? &rows[r].stats : &other.stats, fe_stream_fields[f].off));
  }
  free(labels);
  fe_rows_free(rows);
}

/* Per resource: its streams' counters (those that ended included) and its live gauges. */
static void fe_metrics_resource_streams(fe_text *t, fe_ask *a, const fe_metrics_names *names) {
  fe_stream_stats *sum = calloc(FE_METRICS_RES_SLOTS, sizeof(*sum));
  uint32_t *viewers = calloc(FE_METRICS_RES_SLOTS, sizeof(*viewers));
  uint32_t *streams = calloc(FE_METRICS_RES_SLOTS, sizeof(*streams));
  int used[FE_METRICS_RES_SLOTS] = {0};
  if (!sum || !viewers || !streams)
    goto out;
  for (int i = 0; i < a->nloops; i++) {
    fe_ask_part *p = &a->parts[i];
    for (int r = 0; r < FE_METRICS_RES_SLOTS; r++) {
      fe_stream_stats_add(&sum[r], &p->retired[r]);
      used[r] |= p->retired[r].joins || p->retired[r].origin_connects;
    }
    for (int k = 0; k < p->n; k++) {
      uint32_t slot = p->info[k].stats_slot < FE_METRICS_RES_SLOTS ? p->info[k].stats_slot : FE_METRICS_RES_SLOTS - 1;
      fe_stream_stats_add(&sum[slot], &p->info[k].stats);
      viewers[slot] += p->info[k].viewers;
      streams[slot] += p->info[k].owner || a->nloops == 1;
      used[slot] = 1;
    }
  }
  char res[256];
  fe_text_put(t, "# TYPE flvedge_resource_viewers gauge\n");
  for (int r = 0; r < FE_METRICS_RES_SLOTS; r++)
    if (used[r]) {
      const char *name = fe_metrics_names_get(names, r);
      fe_prom_label(res, sizeof(res), name, strlen(name));
      fe_text_put(t, "flvedge_resource_viewers{resource=\"%s\"} %u\n", res, viewers[r]);
      fe_text_put(t, "flvedge_resource_streams{resource=\"%s\"} %u\n", res, streams[r]);
    }
  for (size_t f = 0; f < FE_NSTREAM_FIELDS; f++) {
    if (fe_stream_fields[f].off == offsetof(fe_stream_stats, bytes_out))
      continue; /* flvedge_resource_bytes_sent_total counts every kind's bytes */
    fe_text_put(t, "# TYPE flvedge_resource_%s %s\n", fe_stream_fields[f].name, fe_stream_fields[f].type);
    for (int r = 0; r < FE_METRICS_RES_SLOTS; r++)
      if (used[r]) {
        const char *name = fe_metrics_names_get(names, r);
        fe_prom_label(res, sizeof(res), name, strlen(name));
        fe_text_put(t, "flvedge_resource_%s{resource=\"%s\"} %llu\n", fe_stream_fields[f].name, res,
                    (unsigned long long)fe_stat(&sum[r], fe_stream_fields[f].off));
      }
  }
out:
  free(sum);
  free(viewers);
  free(streams);
}

/* The process: memory, reloads, uptime (Lua hook failures are counted per loop). */
static void fe_metrics_process(fe_text *t, const fe_worker *w) {
  unsigned long long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%llu %llu", &pages, &resident) != 2)
      resident = 0;
    fclose(f);
  }
  uint64_t reloads, failures;
  fe_server_counts(w->srv, &reloads, &failures);
  fe_text_put(t, "# TYPE flvedge_process_resident_memory_bytes gauge\nflvedge_process_resident_memory_bytes %llu\n",
              resident * (unsigned long long)sysconf(_SC_PAGESIZE));
  fe_text_put(t, "# TYPE flvedge_reloads_total counter\nflvedge_reloads_total %llu\n", (unsigned long long)reloads);
  fe_text_put(t, "# TYPE flvedge_reload_failures_total counter\nflvedge_reload_failures_total %llu\n",
              (unsigned long long)failures);
  fe_text_put(t, "# TYPE flvedge_uptime_seconds gauge\nflvedge_uptime_seconds %.3f\n",
              (double)(uv_hrtime() - w->started) / 1e9);
}

static void fe_answer_metrics(fe_conn *c, fe_ask *a) {
  fe_text t = {malloc(FE_ADMIN_METRICS_MAX), 0, FE_ADMIN_METRICS_MAX};
  if (!t.p) {
    fe_admin_error(c, 500, NULL, "out of memory", a->keep);
    return;
  }
  t.len = fe_router_metrics(c->w, t.p, t.cap);
  const fe_metrics_names *names = fe_server_names(c->w->srv);
  t.len += fe_metrics_render_resources(c->w->all_metrics, c->w->nloops, names, t.p + t.len, t.cap - t.len);
  fe_metrics_resource_streams(&t, a, names);
  fe_metrics_streams(&t, a, c->gen->cfg);
  fe_metrics_process(&t, c->w);
  fe_conn_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-cache\r\n", t.p, t.len, !a->keep);
  free(t.p);
}

/* One stream as the admin API shows it. */
static void fe_json_stream(fe_json_buf *b, const fe_stream_row *r, int nloops) {
  const fe_hub_info *h = r->first;
  const char *slash = strchr(h->key, '/');
  fe_json_raw(b, "{\"key\":");
  fe_json_str(b, h->key, strlen(h->key));
  fe_json_raw(b, ",\"resource\":");
  fe_json_str(b, h->key, slash ? (size_t)(slash - h->key) : strlen(h->key));
  fe_json_raw(b, ",\"stream\":");
  fe_json_str(b, slash ? slash + 1 : "", slash ? strlen(slash + 1) : 0);
  fe_json_raw(b, ",\"viewers\":");
  fe_json_u64(b, r->viewers);
  fe_json_raw(b, ",\"viewers_per_loop\":[");
  for (int i = 0; i < nloops; i++) {
    if (i)
      fe_json_raw(b, ",");
    fe_json_u64(b, r->per_loop[i]);
  }
  fe_json_raw(b, "],\"live\":");
  fe_json_raw(b, h->live ? "true" : "false");
  fe_json_raw(b, ",\"bitrate\":");
  fe_json_u64(b, r->bitrate);
  char num[32];
  snprintf(num, sizeof(num), "%.3f", h->uptime);
  fe_json_raw(b, ",\"uptime\":");
  fe_json_raw(b, num);
  fe_json_raw(b, ",\"origin\":");
  if (h->origin)
    fe_json_str(b, h->origin, strlen(h->origin));
  else
    fe_json_raw(b, "null");
  fe_json_raw(b, ",\"origin_status\":");
  fe_json_u64(b, (uint64_t)(h->origin_status > 0 ? h->origin_status : 0));
  fe_json_raw(b, ",\"window_bytes\":");
  fe_json_u64(b, h->window_bytes);
  fe_json_raw(b, ",\"video_codec\":");
  fe_json_str(b, h->vcodec, strlen(h->vcodec));
  fe_json_raw(b, ",\"audio_codec\":");
  fe_json_str(b, h->acodec, strlen(h->acodec));
  for (size_t f = 0; f < FE_NSTREAM_FIELDS; f++) {
    fe_json_raw(b, ",\"");
    fe_json_raw(b, fe_stream_fields[f].name);
    fe_json_raw(b, "\":");
    fe_json_u64(b, fe_stat(&r->stats, fe_stream_fields[f].off));
  }
  fe_json_raw(b, "}");
}

static void fe_answer_streams(fe_conn *c, fe_ask *a) {
  int n;
  fe_stream_row *rows = fe_ask_rows(a, &n);
  if (!rows) {
    fe_admin_error(c, 500, NULL, "out of memory", a->keep);
    return;
  }
  if (a->what == FE_ASK_STREAM && n == 0) {
    fe_admin_error(c, 404, NULL, "no such stream on any loop", a->keep);
    fe_rows_free(rows);
    return;
  }
  size_t cap = 4096 + (size_t)n * (2048 + 24 * (size_t)a->nloops);
  char *out = malloc(cap);
  if (out) {
    fe_json_buf b;
    fe_json_init(&b, out, cap);
    if (a->what == FE_ASK_STREAM) {
      fe_json_stream(&b, &rows[0], a->nloops);
    } else {
      fe_json_raw(&b, "{\"streams\":[");
      for (int r = 0; r < n; r++) {
        if (r)
          fe_json_raw(&b, ",");
        fe_json_stream(&b, &rows[r], a->nloops);
      }
      fe_json_raw(&b, "]}");
    }
    fe_json_raw(&b, "\n");
    fe_admin_reply(c, 200, "Cache-Control: no-cache\r\n", &b, a->keep);
    free(out);
  } else {
    fe_admin_error(c, 500, NULL, "out of memory", a->keep);
  }
  fe_rows_free(rows);
}

/* Back on the admin loop with every loop's part. */
static void fe_ask_on_done(fe_task *t) {
  fe_ask *a = (fe_ask *)((char *)t - offsetof(fe_ask, done));
  fe_conn *c = a->c;
  if (c && !t->cancelled) {
    c->on_close = NULL;
    c->kind_data = NULL;
    if (a->what == FE_ASK_METRICS) {
      fe_answer_metrics(c, a);
    } else if (a->what == FE_ASK_KICK) {
      int kicked = 0;
      for (int i = 0; i < a->nloops; i++)
        kicked += a->parts[i].kicked;
      char body[64];
      fe_json_buf b;
      fe_json_init(&b, body, sizeof(body));
      fe_json_raw(&b, "{\"kicked\":");
      fe_json_u64(&b, (uint64_t)kicked);
      fe_json_raw(&b, "}\n");
      fe_admin_reply(c, 200, NULL, &b, a->keep);
    } else {
      fe_answer_streams(c, a);
    }
    fe_conn_answer_end(c, 0);
  }
  fe_ask_free(a);
}

/* POST /reload: the control loop reloads; the answer comes back here. */
typedef struct fe_reload_wait {
  fe_conn *c;
  int keep;
} fe_reload_wait;

static void fe_reload_on_close(fe_conn *c) {
  fe_reload_wait *r = c->kind_data;
  r->c = NULL;
  c->kind_data = NULL;
}

static void fe_reload_done(void *ud, int rc, const char *err) {
  fe_reload_wait *r = ud;
  fe_conn *c = r->c;
  if (c) {
    c->on_close = NULL;
    c->kind_data = NULL;
    if (rc == 0) {
      static const char ok[] = "{\"reloaded\":true}\n";
      fe_conn_respond(c, 200, "application/json", NULL, ok, sizeof(ok) - 1, !r->keep);
    } else {
      char why[1100];
      snprintf(why, sizeof(why), "reload failed, the running config stays: %s", err);
      fe_admin_error(c, 500, NULL, why, r->keep);
    }
    fe_conn_answer_end(c, 0);
  }
  free(r);
}

static int fe_admin_reload(fe_conn *c, int keep) {
  fe_reload_wait *r = calloc(1, sizeof(*r));
  if (!r)
    return fe_admin_error(c, 500, NULL, "out of memory", keep);
  r->c = c;
  r->keep = keep;
  if (fe_server_reload_async(c->w->srv, &c->w->loop, fe_reload_done, r) < 0) {
    free(r);
    return fe_admin_error(c, 500, NULL, "out of memory", keep);
  }
  c->kind_data = r;
  c->on_close = fe_reload_on_close;
  fe_conn_answer_begin(c);
  return fe_admin_next(c, keep);
}

/* ---- the router ---------------------------------------------------------------------------- */

static int fe_admin_route(fe_conn *c) {
  llhttp_t *p = &c->parser;
  int keep = fe_conn_keep_alive(c);
  const char *token = c->gen->cfg->admin_token;
  if (!token) /* admin was taken out of the config by a reload; the listener stays until restart */
    return fe_admin_error(c, 403, NULL, "the admin API is off in the running config", keep);
  int offered;
  if (!fe_admin_authorized(c, token, &offered))
    return fe_admin_error(c, 401,
                          offered ? "WWW-Authenticate: Bearer realm=\"flvedge\", error=\"invalid_token\"\r\n"
                                  : "WWW-Authenticate: Bearer realm=\"flvedge\"\r\n",
                          offered ? "invalid token" : "authorization required", keep);
  const char *url = c->buf + c->url.off;
  const char *q = memchr(url, '?', c->url.len);
  size_t plen = q ? (size_t)(q - url) : c->url.len;
  int get = p->method == HTTP_GET || p->method == HTTP_HEAD;
#define FE_IS(path) (plen == sizeof(path) - 1 && memcmp(url, path, plen) == 0)
  if (FE_IS("/metrics") || FE_IS("/health") || FE_IS("/streams")) {
    if (!get)
      return fe_admin_error(c, 405, "Allow: GET, HEAD\r\n", "method not allowed (GET, HEAD)", keep);
    if (FE_IS("/health"))
      return fe_admin_health(c, keep);
    return fe_ask_start(c, FE_IS("/metrics") ? FE_ASK_METRICS : FE_ASK_STREAMS, NULL, 0, keep);
  }
  if (FE_IS("/reload")) {
    if (p->method != HTTP_POST)
      return fe_admin_error(c, 405, "Allow: POST\r\n", "method not allowed (POST)", keep);
    return fe_admin_reload(c, keep);
  }
  /* /streams/<key> (GET) and /streams/<key>/kick (POST): the key is "resource/stream" */
  static const char sp[] = "/streams/";
  if (plen > sizeof(sp) - 1 && memcmp(url, sp, sizeof(sp) - 1) == 0) {
    const char *key = url + sizeof(sp) - 1;
    size_t klen = plen - (sizeof(sp) - 1);
    int kick = p->method == HTTP_POST;
    if (kick) {
      if (klen <= 5 || memcmp(key + klen - 5, "/kick", 5) != 0)
        return fe_admin_error(c, 404, NULL, "POST /streams/<resource>/<stream>/kick", keep);
      klen -= 5;
    } else if (!get) {
      return fe_admin_error(c, 405, "Allow: GET, HEAD, POST\r\n", "method not allowed", keep);
    }
    if (klen == 0 || klen >= FE_ADMIN_KEY_MAX || !fe_str_visible(key, klen))
      return fe_admin_error(c, 400, NULL, "a stream key is resource/stream (visible ASCII)", keep);
    return fe_ask_start(c, kick ? FE_ASK_KICK : FE_ASK_STREAM, key, klen, keep);
  }
  for (size_t i = 0; i < FE_ADMIN_NPOSTS; i++) {
    const fe_admin_post *ep = &fe_admin_posts[i];
    if (plen != strlen(ep->path) || memcmp(url, ep->path, plen) != 0)
      continue;
    if (p->method != HTTP_POST)
      return fe_admin_error(c, 405, "Allow: POST\r\n", "method not allowed (POST)", keep);
    return fe_admin_post_serve(c, ep, keep);
  }
#undef FE_IS
  return fe_admin_error(c, 404, NULL, "no such admin endpoint", keep);
}

const fe_conn_kind fe_admin_kind = {
    .route = fe_admin_route,
    .body_max = FE_ADMIN_BODY_MAX,
    .json_errors = 1,
    .unlimited = 1,
};
