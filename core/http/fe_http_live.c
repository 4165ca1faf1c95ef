/* The live viewer: joins a hub, then writes what the hub hands it with one writev per batch. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/fe_http2.h"
#include "http/fe_http_handlers.h"
#include "log/fe_log.h"
#include "origin/fe_origin.h"
#include "origin/fe_pull.h"

#define FE_LIVE_MAX_IOV 64 /* plus the head, the chunk line and its CRLF */
#define FE_LIVE_MAX_BYTES (256 * 1024)
#define FE_STREAM_NAME_MAX 200

#define fe_conn_of(v) ((fe_conn *)((char *)(v) - offsetof(fe_conn, viewer)))

static void fe_live_write(fe_conn *c);

static void fe_live_finish(fe_conn *c) {
  fe_hub_leave(&c->viewer);
  if (c->chunked)
    fe_conn_send(c, "0\r\n\r\n", 5, 1);
  else
    fe_conn_close(c);
}

/* The head is written: it goes with the first batch, so a viewer's start is one writev. */
static void fe_live_head_sent(fe_conn *c) {
  free(c->head);
  c->head = NULL;
  c->head_len = 0;
}

static void fe_live_on_written(fe_net_write *w, int status) {
  fe_conn *c = (fe_conn *)((char *)w - offsetof(fe_conn, wreq));
  c->writing = 0;
  if (status < 0) {
    if (status != UV_ECANCELED)
      fe_conn_close(c);
    return;
  }
  fe_live_head_sent(c);
  fe_hub_viewer_release(&c->viewer);
  fe_live_write(c);
}

/* The first keyframe handed to the viewer: how long its wait for a picture was, once. */
static void fe_live_keyframe(fe_conn *c) {
  if (!c->viewer.keyframe_sent || c->keyframe_counted)
    return;
  c->keyframe_counted = 1;
  fe_metrics *m = &c->w->loop.metrics;
  fe_metrics_latency(m->first_keyframe, &m->first_keyframe_sum_us, (uv_hrtime() - c->start_ns) / 1000);
}

/* "{size in hex}\r\n" into out (room for 16 digits + 2): per viewer and write, so no printf. */
static int fe_chunk_line(char *out, size_t size) {
  static const char digits[] = "0123456789abcdef";
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = digits[size & 15];
    size >>= 4;
  } while (size);
  for (int i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  out[n] = '\r';
  out[n + 1] = '\n';
  return n + 2;
}

/* Sends everything the hub has for this viewer: writev straight from the shared blocks; only
 * what the socket does not take at once is queued (the hub's blocks stay pinned meanwhile). */
static void fe_live_write(fe_conn *c) {
  if (c->h2s && c->state == FE_CS_LIVE) {
    fe_h2_wake(c); /* its DATA frames are filled from the hub when nghttp2 asks */
    return;
  }
  if (c->state != FE_CS_LIVE || c->writing)
    return;
  for (;;) {
    /* [head] [chunk line] media... [CRLF] */
    uv_buf_t iov[FE_LIVE_MAX_IOV + 3];
    size_t bytes;
    int n = fe_hub_viewer_fill(&c->viewer, iov + 2, FE_LIVE_MAX_IOV, FE_LIVE_MAX_BYTES, &bytes);
    if (n == 0 && !c->head) {
      if (fe_hub_viewer_done(&c->viewer))
        fe_live_finish(c);
      return;
    }
    uv_buf_t *bufs = iov + 2;
    unsigned cnt = (unsigned)n;
    size_t total = bytes;
    if (c->chunked && n > 0) {
      int hl = fe_chunk_line(c->chunk_line, bytes);
      iov[1] = uv_buf_init(c->chunk_line, (unsigned)hl);
      iov[n + 2] = uv_buf_init((char *)"\r\n", 2);
      bufs = iov + 1;
      cnt += 2;
      total += (size_t)hl + 2;
    }
    if (c->head) {
      bufs--;
      *bufs = uv_buf_init(c->head, (unsigned)c->head_len);
      cnt++;
      total += c->head_len;
    }
    c->bytes += total - c->head_len; /* the head was counted when it was made */
    if (c->head)
      fe_conn_first_byte(c);
    fe_live_keyframe(c);
    int w = fe_net_try_writev(&c->net, bufs, cnt);
    if (w < 0) {
      fe_conn_close(c);
      return;
    }
    fe_metrics *m = &c->w->loop.metrics;
    FE_METRIC_ADD(m, bytes_sent, total);
    FE_METRIC_ADD(m, res[c->res->metrics_slot].bytes_sent, total);
    if (c->viewer.stats)
      c->viewer.stats->bytes_out += total;
    if (w == (int)total) {
      fe_live_head_sent(c);
      fe_hub_viewer_release(&c->viewer);
      continue;
    }
    size_t done = (size_t)w;
    while (done > 0) {
      if (bufs->len <= done) {
        done -= bufs->len;
        bufs++;
        cnt--;
      } else {
        bufs->base += done;
        bufs->len -= done;
        done = 0;
      }
    }
    c->writing = 1;
    c->write_since = uv_now(&c->w->loop.uv);
    if (fe_net_writev(&c->net, &c->wreq, bufs, cnt, fe_live_on_written) < 0) {
      c->writing = 0;
      fe_conn_close(c);
    }
    return;
  }
}

static void fe_live_start(fe_viewer *v, int hit) {
  fe_conn *c = fe_conn_of(v);
  char cors[256];
  char head[768];
  fe_conn_cors(c, cors, sizeof(cors));
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.%d 200 OK\r\nServer: flvedge/" FE_VERSION "\r\n"
                   "Content-Type: video/x-flv\r\n%s"
                   "Cache-Control: no-cache, no-store\r\nConnection: close\r\n"
                   "X-Cache-Status: %s\r\n%s\r\n",
                   c->chunked ? 1 : 0, c->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                   hit ? "HIT" : "MISS", cors);
  fe_metrics_count_status(&c->w->loop.metrics, 200);
  c->status = 200;
  c->cache_status = hit ? "HIT" : "MISS";
  if (v->hub) {
    int ostatus;
    const char *origin = fe_hub_origin(v->hub, &ostatus);
    free(c->origin);
    c->origin = origin ? strdup(origin) : NULL;
    c->origin_status = ostatus;
  }
  c->bytes += (size_t)n;
  if (c->head_only) {
    fe_hub_leave(v);
    if (c->h2s)
      fe_h2_respond(c, head, (size_t)n, NULL, 0);
    else
      fe_conn_send(c, head, (size_t)n, 1);
    return;
  }
  if (c->h2s) {
    c->state = FE_CS_LIVE;
    fe_h2_live(c, head, (size_t)n);
    return;
  }
  c->head = malloc((size_t)n);
  if (!c->head) {
    fe_conn_close(c);
    return;
  }
  memcpy(c->head, head, (size_t)n);
  c->head_len = (size_t)n;
  c->state = FE_CS_LIVE;
  /* A bounded kernel buffer: a slow viewer falls behind in the window, where it is moved to a
   * keyframe, instead of sitting seconds behind in a socket buffer autotuned to megabytes. */
  if (c->res->send_buffer)
    fe_net_send_buffer(&c->net, (int)c->res->send_buffer);
  fe_live_write(c);
}

static void fe_live_fail(fe_viewer *v, int status, const char *ctype, const uint8_t *body, size_t len) {
  fe_conn *c = fe_conn_of(v);
  fe_conn_respond(c, status, ctype, "Cache-Control: no-cache\r\n", body, len, 1);
}

static void fe_live_wake(fe_viewer *v) {
  fe_conn *c = fe_conn_of(v);
  if (c->state == FE_CS_LIVE)
    fe_live_write(c);
  else if (c->state == FE_CS_WAITING && fe_hub_viewer_done(v)) {
    /* The stream ended (shutdown) before the origin answered. */
    fe_hub_leave(v);
    fe_conn_respond(c, 503, NULL, NULL, "503 stream ended\n", 17, 1);
  }
}

/* The admin API cuts the stream's viewers: a reset, as for a slow viewer. */
static void fe_live_kick(fe_viewer *v) {
  fe_conn *c = fe_conn_of(v);
  FE_METRIC_INC(&c->w->loop.metrics, viewers_kicked);
  fe_conn_reset(c);
}

static const fe_viewer_ops fe_live_ops = {
    .start = fe_live_start,
    .fail = fe_live_fail,
    .wake = fe_live_wake,
    .kick = fe_live_kick,
};

/* Swept: cuts a viewer that takes nothing, or stayed behind the window, for too long. */
static int fe_live_check_slow(fe_conn *c, uint64_t now) {
  if (c->state != FE_CS_LIVE)
    return 0; /* still waiting for the stream: behind_since is the MISS mark then */
  uint64_t limit = (uint64_t)(c->res->slow_viewer_timeout * 1000.0);
  const fe_viewer *v = &c->viewer;
  int stuck = c->writing && now - c->write_since > limit;
  int behind = v->behind_since && now - v->behind_since > limit;
  if (!stuck && !behind)
    return 0;
  fe_warn("stream %s: cutting off a viewer %s for more than %.1f s (%llu frames dropped)",
          v->hub ? fe_hub_key(v->hub) : "?", stuck ? "that takes nothing" : "that stayed behind",
          c->res->slow_viewer_timeout, (unsigned long long)v->frames_dropped);
  FE_METRIC_INC(&c->w->loop.metrics, viewers_kicked);
  if (c->viewer.stats)
    c->viewer.stats->viewers_kicked++;
  fe_conn_reset(c);
  return 1;
}

/* "1"/"true" and "0"/"false"; anything else is a client error. */
static int fe_live_flag(const char *val, size_t len) {
  if ((len == 1 && val[0] == '1') || (len == 4 && memcmp(val, "true", 4) == 0))
    return 1;
  if ((len == 1 && val[0] == '0') || (len == 5 && memcmp(val, "false", 5) == 0))
    return 0;
  return -1;
}

/* Reads only_audio / only_video from the query. Returns FE_HUB_WANT_* or -1 with msg set. */
static int fe_live_want(const char *q, size_t qlen, const char **msg) {
  int audio = 0, video = 0;
  while (qlen > 0) {
    const char *amp = memchr(q, '&', qlen);
    size_t plen = amp ? (size_t)(amp - q) : qlen;
    const char *eq = memchr(q, '=', plen);
    size_t klen = eq ? (size_t)(eq - q) : plen;
    const char *val = eq ? eq + 1 : "";
    size_t vlen = eq ? plen - klen - 1 : 0;
    int *slot = NULL;
    if (klen == 10 && memcmp(q, "only_audio", 10) == 0)
      slot = &audio;
    else if (klen == 10 && memcmp(q, "only_video", 10) == 0)
      slot = &video;
    if (slot && (*slot = fe_live_flag(val, vlen)) < 0) {
      *msg = "400 only_audio and only_video take 1 or 0\n";
      return -1;
    }
    q += plen + (amp ? 1 : 0);
    qlen -= plen + (amp ? 1 : 0);
  }
  if (audio && video) {
    *msg = "400 only_audio and only_video exclude each other\n";
    return -1;
  }
  return audio ? FE_HUB_WANT_AUDIO : video ? FE_HUB_WANT_VIDEO : FE_HUB_WANT_ALL;
}

static int fe_live_name_ok(const char *s, size_t len) {
  if (len == 0 || len > FE_STREAM_NAME_MAX || s[0] == '/' || s[len - 1] == '/')
    return 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-' || ch == '.' || ch == '/';
    if (!ok || (ch == '.' && i + 1 < len && s[i + 1] == '.') || (ch == '/' && s[i + 1] == '/'))
      return 0;
  }
  return 1;
}

int fe_live_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len) {
  fe_str *stream = &c->view.stream;
  if (len < 5 || memcmp(rest + len - 4, ".flv", 4) != 0 || !fe_live_name_ok(rest, len - 4)) {
    static const char msg[] = "404 live streams are {prefix}{stream}.flv\n";
    fe_conn_respond(c, 404, NULL, NULL, msg, sizeof(msg) - 1, !fe_conn_keep_alive(c));
    return -1;
  }
  stream->p = rest;
  stream->len = len - 4;
  return 0;
}

/* The URL to pull a stream from, by one rule for a resource's origin and for a policy's answer:
 * a URL that ends in .flv or has a query names the stream itself (every stream of a `file:`
 * slate, or a policy's full URL) and is used as is; anything else is a base, {base}/{stream}.flv. */
static int fe_live_stream_url(const char *src, fe_str stream, char *out, size_t cap) {
  size_t n = strlen(src);
  int w;
  if ((n > 4 && strcmp(src + n - 4, ".flv") == 0) || strchr(src, '?')) {
    w = snprintf(out, cap, "%s", src);
  } else {
    while (n > 0 && src[n - 1] == '/')
      n--;
    w = snprintf(out, cap, "%.*s/%.*s.flv", (int)n, src, (int)stream.len, stream.p);
  }
  return w >= 0 && (size_t)w < cap ? 0 : -1; /* never a URL cut short: that is another stream's */
}

/*
 * What opening the stream's pull needs after the request that asked for it is gone: a copy of that
 * request (its head, headers, addresses) for the origin phase, and the generation whose resource
 * and policy apply. Made by the loop that opens the hub; used only if that loop becomes the
 * stream's owner (otherwise it is relayed and never pulls).
 */
typedef struct fe_origin_ctx {
  fe_gen *gen;
  int resource;
  const char *failed; /* why the first origin cannot be pulled: the viewer's 500 body */
  fe_req_view view;
  fe_header hdr[FE_MAX_HEADERS];
  char client_ip[48], server_ip[48], host[128];
  char buf[];
} fe_origin_ctx;

static fe_str fe_rebase(fe_str s, const char *from, size_t from_len, char *to) {
  if (s.p >= from && s.p + s.len <= from + from_len)
    s.p = to + (s.p - from);
  return s;
}

static fe_origin_ctx *fe_origin_ctx_new(fe_conn *c, int resource) {
  fe_origin_ctx *x = malloc(sizeof(*x) + c->len);
  if (!x)
    return NULL;
  x->gen = c->gen;
  fe_gen_ref(x->gen);
  x->resource = resource;
  x->failed = NULL;
  memcpy(x->buf, c->buf, c->len);
  memcpy(x->hdr, c->hdr, sizeof(x->hdr));
  memcpy(x->client_ip, c->client_ip, sizeof(x->client_ip));
  memcpy(x->server_ip, c->server_ip, sizeof(x->server_ip));
  memcpy(x->host, c->host, sizeof(x->host));
  x->view = c->view;
  x->view.base = x->buf;
  x->view.headers = x->hdr;
  x->view.path = fe_rebase(c->view.path, c->buf, c->len, x->buf);
  x->view.query = fe_rebase(c->view.query, c->buf, c->len, x->buf);
  x->view.stream = fe_rebase(c->view.stream, c->buf, c->len, x->buf);
  x->view.client_ip.p = x->client_ip;
  x->view.server_ip.p = x->server_ip;
  x->view.host.p = x->host;
  return x;
}

static void fe_origin_ctx_free(void *ud) {
  fe_origin_ctx *x = ud;
  fe_gen_unref(x->gen);
  free(x);
}

/* The URL to pull from a policy's answer. -1 when it cannot be pulled (logged here, once): the
 * policy is at fault, so the viewers get 500, not an origin's status. */
static int fe_origin_ctx_url(fe_origin_ctx *x, const char *got, char *url, size_t cap) {
  if (fe_live_stream_url(got, x->view.stream, url, cap) < 0) {
    fe_error("origin hook (resource %s, stream %.*s): the URL is longer than %zu bytes",
             x->gen->cfg->resources[x->resource].name, (int)x->view.stream.len, x->view.stream.p,
             cap - 1);
    return -1;
  }
  if (fe_origin_check_url(url) == 0)
    return 0;
  char shown[512];
  fe_str_escape(shown, sizeof(shown), url, strlen(url));
  fe_error("origin hook (resource %s, stream %.*s): not an origin URL: \"%s\"",
           x->gen->cfg->resources[x->resource].name, (int)x->view.stream.len, x->view.stream.p,
           shown);
  return -1;
}

/* The resource's own origin group, when no policy chooses: the primary, then the backups in
 * order. A clean end is the stream's end unless failover_on_end says it is a fault. */
static int fe_origin_ctx_group(fe_origin_ctx *x, int attempt, const char *last_error, char *url,
                               size_t cap) {
  const fe_resource *res = &x->gen->cfg->resources[x->resource];
  if (last_error && strcmp(last_error, "ended") == 0 && !res->failover_on_end)
    return 0;
  if (attempt < 1 || attempt > 1 + res->nbackups)
    return 0;
  if (fe_live_stream_url(attempt == 1 ? res->origin : res->backups[attempt - 2], x->view.stream,
                         url, cap) < 0) {
    fe_error("resource %s: origin %d with the stream name is longer than %zu bytes", res->name,
             attempt, cap - 1);
    return -1;
  }
  return 1;
}

static int fe_origin_ctx_next(void *ud, int attempt, const char *last_error, char *url, size_t cap) {
  fe_origin_ctx *x = ud;
  if (!(fe_lua_phases(x->gen->lua, x->resource) & FE_LUA_ORIGIN))
    return fe_origin_ctx_group(x, attempt, last_error, url, cap);
  char got[4096];
  int rc =
      fe_lua_origin(x->gen->lua, x->resource, 0, &x->view, attempt, last_error, got, sizeof(got));
  if (rc != 1)
    return rc;
  return fe_origin_ctx_url(x, got, url, cap) < 0 ? -1 : 1;
}

/* This loop owns the stream: the first origin is the policy's answer or the resource's. */
static fe_source *fe_live_open_pull(void *ud, fe_loop *l, const char *key, const fe_sink_ops *ops,
                                    void *sink, fe_stream_stats *stats) {
  fe_origin_ctx *x = ud;
  const fe_resource *res = &x->gen->cfg->resources[x->resource];
  int policy_origin = (fe_lua_phases(x->gen->lua, x->resource) & FE_LUA_ORIGIN) != 0;
  char got[4096], url[4096];
  int rc = policy_origin ? fe_lua_origin(x->gen->lua, x->resource, 0, &x->view, 1, NULL, got, sizeof(got)) : 0;
  if (rc < 0 || (rc == 1 && fe_origin_ctx_url(x, got, url, sizeof(url)) < 0)) {
    x->failed = "500 policy error\n";
    return NULL;
  }
  if (rc == 0 && fe_origin_ctx_group(x, 1, NULL, url, sizeof(url)) < 0) {
    x->failed = "500 origin URL too long\n"; /* the config's: no policy is involved */
    return NULL;
  }
  fe_pull_opts po = {
      .key = key,
      .connect_timeout = res->origin_connect_timeout,
      .read_timeout = res->origin_read_timeout,
      .max_tag_size = res->max_tag_size,
      .tls = res->origin_tls,
      .stats = stats,
      .next_origin = fe_origin_ctx_next,
      .ud = x,
      .slate = res->slate,
      .recheck = res->origin_recheck,
  };
  return fe_pull_open(l, url, &po, ops, sink);
}

/* A new stream costs an origin pull and a window: none beyond the node's limits, summed over the
 * loops when a stream opens (as max_viewers is). A stream that another loop already pulls is not
 * new: its viewers here are admitted, though this loop's copy of its window counts too. */
static int fe_live_full(const fe_conn *c, const char *key) {
  const fe_config *cfg = c->gen->cfg;
  if (fe_worker_sum(c->w, offsetof(fe_metrics, streams)) < cfg->max_streams &&
      fe_worker_sum(c->w, offsetof(fe_metrics, window_bytes)) < cfg->max_window_memory)
    return 0;
  return !fe_hubs_known(c->w->hubs, key);
}

void fe_live_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len) {
  fe_worker *w = c->w;
  const char *msg = NULL;
  fe_str stream = c->view.stream;
  int want = fe_live_want(c->view.query.p, c->view.query.len, &msg);
  if (want < 0) {
    fe_conn_respond(c, 400, NULL, NULL, msg, strlen(msg), 1);
    return;
  }
  if (fe_worker_sum(w, offsetof(fe_metrics, viewers)) >= c->gen->cfg->max_viewers) {
    static const char full[] = "503 too many viewers on this server\n";
    fe_conn_respond(c, 503, NULL, "Retry-After: 5\r\n", full, sizeof(full) - 1, 1);
    return;
  }
  char key[FE_STREAM_NAME_MAX + 128];
  snprintf(key, sizeof(key), "%s/%.*s", res->name, (int)stream.len, stream.p);
  fe_hub *hub = fe_hub_find(w->hubs, key);
  if (!hub && fe_live_full(c, key)) {
    static const char full[] = "503 too many streams on this server\n";
    FE_METRIC_INC(&w->loop.metrics, streams_refused);
    fe_conn_respond(c, 503, NULL, "Retry-After: 5\r\n", full, sizeof(full) - 1, 1);
    return;
  }
  if (!hub) {
    fe_hub_opts opts = {
        .window_seconds = res->window_seconds,
        .window_bytes = res->window_bytes,
        .merge_ms = res->merge_ms,
        .merge_auto = res->merge_auto,
        .linger = res->linger,
        .max_viewers = res->max_viewers_per_stream,
        .stats_slot = (uint32_t)res->metrics_slot,
        .stamp_time = res->stamp_time,
        .open_pull = fe_live_open_pull,
        .pull_ud = fe_origin_ctx_new(c, (int)(res - c->gen->cfg->resources)),
        .free_pull_ud = fe_origin_ctx_free,
    };
    if (opts.pull_ud)
      hub = fe_hub_open(w->hubs, key, &opts);
    if (!hub) {
      const char *failed = opts.pull_ud ? ((fe_origin_ctx *)opts.pull_ud)->failed : NULL;
      if (opts.pull_ud)
        fe_origin_ctx_free(opts.pull_ud);
      if (failed)
        fe_conn_respond(c, 500, NULL, NULL, failed, strlen(failed), 1);
      else
        fe_conn_respond(c, 503, NULL, NULL, "503 out of memory\n", 18, 1);
      return;
    }
  }
  c->state = FE_CS_WAITING;
  c->chunked = c->parser.http_major == 1 && c->parser.http_minor >= 1;
  c->head_only = c->parser.method == HTTP_HEAD;
  c->on_sweep = fe_live_check_slow;
  int rc = fe_hub_join(hub, &c->viewer, &fe_live_ops, (uint8_t)want);
  if (rc < 0) {
    static const char full[] = "503 too many viewers on this stream\n";
    fe_conn_respond(c, 503, NULL, "Retry-After: 5\r\n", full, sizeof(full) - 1, 1);
  }
}
