#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include "http/fe_http.h"
#include "http/fe_http_conn.h"
#include "log/fe_log.h"
#include "metrics/fe_metrics.h"

#define FE_SWEEP_MS 250

static uint64_t fe_next_request_id;

typedef struct fe_send_req {
  uv_write_t req;
  fe_conn *conn;
  int close;
  size_t len;
  char data[];
} fe_send_req;

const char *fe_http_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 410: return "Gone";
  case 416: return "Range Not Satisfiable";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

/* ---- connection lifetime ------------------------------------------------------------------- */

static void fe_server_maybe_done(fe_server *s) {
  /* Done when the last connection handle is closed, not merely unlisted: its close callback
   * still uses the server. */
  if (s->stopping && s->conn_handles == 0 && s->done) {
    void (*done)(void *) = s->done;
    s->done = NULL;
    uv_timer_stop(&s->grace);
    done(s->done_ud);
  }
}

void fe_gen_ref(fe_gen *g) {
  g->refs++;
}

void fe_gen_unref(fe_gen *g) {
  if (!g || --g->refs > 0)
    return;
  fe_lua_unref(g->lua);
  fe_config_free(&g->cfg);
  free(g);
}

static double fe_wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fe_conn_on_closed(uv_handle_t *h) {
  fe_conn *c = h->data;
  fe_server *s = c->srv;
  fe_gen_unref(c->gen);
  free(c->buf);
  free(c);
  s->conn_handles--;
  fe_server_maybe_done(s);
}

void fe_conn_close(fe_conn *c) {
  if (c->state == FE_CS_CLOSING)
    return;
  fe_conn_request_done(c);
  c->state = FE_CS_CLOSING;
  fe_server *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  fe_stats.connections--;
  /* After uv_close libuv writes nothing more, so the pinned buffers can be let go. */
  uv_close((uv_handle_t *)&c->tcp, fe_conn_on_closed);
  fe_hub_leave(&c->viewer);
}

static void fe_conn_on_sent(uv_write_t *req, int status) {
  fe_send_req *r = (fe_send_req *)req;
  fe_conn *c = r->conn;
  if (status == 0)
    fe_stats.bytes_sent += r->len;
  if (r->close || status < 0)
    fe_conn_close(c);
  free(r);
}

static fe_send_req *fe_send_req_new(fe_conn *c, size_t len, int close) {
  fe_send_req *r = malloc(sizeof(*r) + len);
  if (!r)
    return NULL;
  r->conn = c;
  r->close = close;
  r->len = len;
  return r;
}

static void fe_send_req_queue(fe_conn *c, fe_send_req *r) {
  uv_buf_t b = uv_buf_init(r->data, (unsigned)r->len);
  if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, fe_conn_on_sent) < 0) {
    free(r);
    fe_conn_close(c);
  }
}

void fe_conn_send(fe_conn *c, const void *data, size_t len, int close) {
  if (c->state == FE_CS_CLOSING)
    return;
  fe_send_req *r = fe_send_req_new(c, len, close);
  if (!r) {
    fe_conn_close(c);
    return;
  }
  memcpy(r->data, data, len);
  fe_send_req_queue(c, r);
}

size_t fe_conn_cors(const fe_conn *c, char *buf, size_t cap) {
  const char *origin = (c->gen ? c->gen : c->srv->gen)->cfg.cors_origin;
  buf[0] = 0;
  if (!origin)
    return 0;
  int n = snprintf(buf, cap,
                   "Access-Control-Allow-Origin: %s\r\n"
                   "Access-Control-Expose-Headers: Content-Length, Content-Range, X-Cache-Status\r\n",
                   origin);
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static size_t fe_respond_head(char *buf, size_t cap, int status, const char *ctype, size_t len,
                              const char *cors, const char *extra_headers, int close) {
  int n = snprintf(buf, cap,
                   "HTTP/1.1 %d %s\r\nServer: flvedge/" FE_VERSION "\r\n"
                   "Content-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                   status, fe_http_reason(status), ctype ? ctype : "text/plain", len, cors,
                   extra_headers ? extra_headers : "", close ? "Connection: close\r\n" : "");
  return n < 0 ? 0 : (size_t)n;
}

void fe_conn_respond(fe_conn *c, int status, const char *ctype, const char *extra_headers,
                     const void *body, size_t len, int close) {
  fe_metrics_count_status(status);
  if (c->state == FE_CS_CLOSING)
    return;
  char cors[256];
  fe_conn_cors(c, cors, sizeof(cors));
  /* Measured, then formatted straight into the send request: a policy's headers may be long,
   * and the head is never cut. */
  size_t n = fe_respond_head(NULL, 0, status, ctype, len, cors, extra_headers, close);
  size_t body_len = c->parser.method == HTTP_HEAD ? 0 : len;
  c->status = status;
  c->bytes += n + body_len;
  fe_conn_request_done(c);
  fe_send_req *r = fe_send_req_new(c, n + 1 + body_len, close);
  if (!r) {
    fe_conn_close(c);
    return;
  }
  fe_respond_head(r->data, n + 1, status, ctype, len, cors, extra_headers, close);
  if (body_len)
    memcpy(r->data + n, body, body_len);
  r->len = n + body_len;
  fe_send_req_queue(c, r);
}

static void fe_access_log_write(fe_conn *c, const char *extra) {
  FILE *f = c->srv->access_log;
  const fe_span *ref = fe_conn_header(c, "Referer");
  const fe_span *ua = fe_conn_header(c, "User-Agent");
  char when[64];
  time_t t = (time_t)c->start;
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);
  fprintf(f, "%s - - [%s] \"%s %.*s HTTP/%d.%d\" %d %llu \"%.*s\" \"%.*s\" %.3f %s %s%s\n",
          c->client_ip, when, llhttp_method_name((llhttp_method_t)c->parser.method), (int)c->url.len,
          c->buf + c->url.off, c->parser.http_major, c->parser.http_minor, c->status,
          (unsigned long long)c->bytes, ref ? (int)ref->len : 1, ref ? c->buf + ref->off : "-",
          ua ? (int)ua->len : 1, ua ? c->buf + ua->off : "-", fe_wall_time() - c->start,
          c->cache_status ? c->cache_status : "-", c->res ? c->res->name : "-", extra);
}

void fe_conn_request_done(fe_conn *c) {
  if (c->logged || !c->id)
    return;
  c->logged = 1;
  char extra[1024] = "";
  fe_lua *lua = c->gen ? c->gen->lua : NULL;
  if (lua && c->res) {
    int idx = (int)(c->res - c->gen->cfg.resources);
    fe_lua_res res = {.status = c->status, .bytes_sent = c->bytes,
                      .duration = fe_wall_time() - c->start, .cache_status = c->cache_status};
    fe_lua_log(lua, idx, c->id, &c->view, &res, extra, sizeof(extra));
  }
  if (c->srv->access_log && c->buf)
    fe_access_log_write(c, extra);
}

const fe_span *fe_conn_header(const fe_conn *c, const char *name) {
  return fe_header_find(c->buf, c->hdr, c->nhdr < FE_MAX_HEADERS ? c->nhdr : FE_MAX_HEADERS, name,
                        strlen(name));
}

/* ---- request parsing ----------------------------------------------------------------------- */

static int fe_conn_append(fe_conn *c, const char *at, size_t len) {
  uint32_t limit = c->srv->gen->cfg.max_header_size;
  if (c->len + len > limit) {
    c->too_large = 1;
    return -1;
  }
  if (c->len + len > c->cap) {
    uint32_t ncap = c->cap ? c->cap : 512;
    while (ncap < c->len + len)
      ncap *= 2;
    if (ncap > limit)
      ncap = limit;
    char *nb = realloc(c->buf, ncap);
    if (!nb)
      return -1;
    c->buf = nb;
    c->cap = ncap;
  }
  memcpy(c->buf + c->len, at, len);
  c->len += (uint32_t)len;
  return 0;
}

static int fe_on_message_begin(llhttp_t *p) {
  fe_conn *c = p->data;
  c->len = 0;
  c->nhdr = 0;
  c->hdr_part = 0;
  c->url.off = c->url.len = 0;
  return 0;
}

static int fe_on_url(llhttp_t *p, const char *at, size_t len) {
  fe_conn *c = p->data;
  if (fe_conn_append(c, at, len) < 0)
    return HPE_USER;
  c->url.len += (uint32_t)len;
  return 0;
}

static int fe_on_header_field(llhttp_t *p, const char *at, size_t len) {
  fe_conn *c = p->data;
  if (c->hdr_part != 1) {
    c->hdr_part = 1;
    if (c->nhdr < FE_MAX_HEADERS) {
      c->hdr[c->nhdr].name.off = c->len;
      c->hdr[c->nhdr].name.len = 0;
      c->hdr[c->nhdr].value.off = c->len;
      c->hdr[c->nhdr].value.len = 0;
    }
    c->nhdr++;
  }
  if (fe_conn_append(c, at, len) < 0)
    return HPE_USER;
  if (c->nhdr <= FE_MAX_HEADERS)
    c->hdr[c->nhdr - 1].name.len += (uint32_t)len;
  return 0;
}

static int fe_on_header_value(llhttp_t *p, const char *at, size_t len) {
  fe_conn *c = p->data;
  if (c->hdr_part != 2) {
    c->hdr_part = 2;
    if (c->nhdr <= FE_MAX_HEADERS)
      c->hdr[c->nhdr - 1].value.off = c->len;
  }
  if (fe_conn_append(c, at, len) < 0)
    return HPE_USER;
  if (c->nhdr <= FE_MAX_HEADERS)
    c->hdr[c->nhdr - 1].value.len += (uint32_t)len;
  return 0;
}

static int fe_on_headers_complete(llhttp_t *p) {
  fe_conn *c = p->data;
  if (c->nhdr > FE_MAX_HEADERS) {
    c->too_large = 1;
    return HPE_USER;
  }
  return 0;
}

static void fe_serve_options(fe_conn *c) {
  char extra[512];
  const fe_span *want = fe_conn_header(c, "Access-Control-Request-Headers");
  snprintf(extra, sizeof(extra),
           "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
           "Access-Control-Allow-Headers: %.*s\r\nAccess-Control-Max-Age: 86400\r\n"
           "Allow: GET, HEAD, OPTIONS\r\n",
           want && want->len < 256 ? (int)want->len : 32,
           want && want->len < 256 ? c->buf + want->off : "range, accept, origin, content-type");
  fe_conn_respond(c, 204, NULL, extra, NULL, 0, !llhttp_should_keep_alive(&c->parser));
}

static void fe_serve_status(fe_conn *c, const char *what, size_t len) {
  if (len == 7 && memcmp(what, "metrics", 7) == 0) {
    char body[4096];
    size_t n = fe_metrics_render(body, sizeof(body));
    fe_conn_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-cache\r\n", body, n,
                    !llhttp_should_keep_alive(&c->parser));
    return;
  }
  fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !llhttp_should_keep_alive(&c->parser));
}

/* c->host: the Host header lowercase, without the port; an IPv6 literal keeps its brackets.
 * Routing and policies both use this one form. */
static void fe_conn_host(fe_conn *c) {
  const fe_span *host = fe_conn_header(c, "Host");
  size_t hl = 0;
  if (host) {
    const char *h = c->buf + host->off;
    while (hl < host->len && hl < sizeof(c->host) - 1 && !(h[hl] == ':' && h[0] != '[')) {
      c->host[hl] = (char)((h[hl] >= 'A' && h[hl] <= 'Z') ? h[hl] + 32 : h[hl]);
      if (h[hl++] == ']')
        break;
    }
  }
  c->host[hl] = 0;
}

/* The request as policies see it; stream is set for live resources. */
static void fe_conn_view(fe_conn *c, const fe_resource *res, const char *url, size_t plen,
                         const char *query, size_t qlen) {
  fe_req_view *v = &c->view;
  memset(v, 0, sizeof(*v));
  v->base = c->buf;
  v->headers = c->hdr;
  v->nheaders = c->nhdr < FE_MAX_HEADERS ? c->nhdr : FE_MAX_HEADERS;
  const char *m = llhttp_method_name((llhttp_method_t)c->parser.method);
  v->method = (fe_str){m, strlen(m)};
  v->path = (fe_str){url, plen};
  v->query = (fe_str){query, qlen};
  v->host = (fe_str){c->host, strlen(c->host)};
  v->resource = (fe_str){res->name, strlen(res->name)};
  v->client_ip = (fe_str){c->client_ip, strlen(c->client_ip)};
  v->server_ip = (fe_str){c->server_ip, strlen(c->server_ip)};
  v->time = c->start;
}

/* Runs the resource's access phase. Returns 1 when the request was answered (denied or failed). */
static int fe_conn_access(fe_conn *c, const fe_resource *res, int keep) {
  fe_lua *lua = c->gen->lua;
  int idx = (int)(res - c->gen->cfg.resources);
  if (!(fe_lua_phases(lua, idx) & FE_LUA_ACCESS))
    return 0;
  fe_lua_deny deny;
  int rc = fe_lua_access(lua, idx, c->id, &c->view, &deny);
  if (rc == 0)
    return 0;
  if (rc < 0) {
    fe_conn_respond(c, 500, NULL, NULL, "500 policy error\n", 17, !keep);
    return 1;
  }
  char msg[64];
  const char *body = deny.body;
  size_t blen = deny.body_len;
  if (!body) {
    blen = (size_t)snprintf(msg, sizeof(msg), "%d %s\n", deny.status, fe_http_reason(deny.status));
    body = msg;
  }
  fe_conn_respond(c, deny.status, NULL, deny.headers, body, blen, !keep);
  fe_lua_deny_free(&deny);
  return 1;
}

/* A complete request head: route it. Returns HPE_PAUSED when the connection becomes a stream. */
static int fe_on_message_complete(llhttp_t *p) {
  fe_conn *c = p->data;
  fe_server *s = c->srv;
  if (c->gen != s->gen) {
    fe_gen_unref(c->gen);
    c->gen = s->gen;
    fe_gen_ref(c->gen);
  }
  const fe_config *cfg = &c->gen->cfg;
  int keep = llhttp_should_keep_alive(p);
  c->deadline = uv_now(s->loop) + (uint64_t)(cfg->request_timeout * 1000.0);
  c->id = ++fe_next_request_id;
  c->logged = 0;
  c->status = 0;
  c->bytes = 0;
  c->start = fe_wall_time();
  c->cache_status = NULL;
  c->res = NULL;
  const char *url = c->buf + c->url.off;
  size_t ulen = c->url.len;
  const char *q = memchr(url, '?', ulen);
  size_t plen = q ? (size_t)(q - url) : ulen;
  const char *query = q ? q + 1 : "";
  size_t qlen = q ? ulen - plen - 1 : 0;

  if (s->stopping) {
    fe_conn_respond(c, 503, NULL, NULL, "503 shutting down\n", 18, 1);
    return HPE_PAUSED;
  }
  if (p->method == HTTP_OPTIONS) {
    fe_serve_options(c);
    return keep ? 0 : HPE_PAUSED;
  }
  if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
    static const char msg[] = "405 method not allowed: only GET, HEAD and OPTIONS\n";
    fe_conn_respond(c, 405, NULL, "Allow: GET, HEAD, OPTIONS\r\n", msg, sizeof(msg) - 1, !keep);
    return keep ? 0 : HPE_PAUSED;
  }
  if (plen == 0 || url[0] != '/') {
    fe_conn_respond(c, 400, NULL, NULL, "400 bad request target\n", 23, 1);
    return HPE_PAUSED;
  }
  size_t splen = strlen(cfg->status_prefix);
  if (plen > splen && memcmp(url, cfg->status_prefix, splen) == 0) {
    fe_serve_status(c, url + splen, plen - splen);
    return keep ? 0 : HPE_PAUSED;
  }
  fe_conn_host(c);
  const fe_resource *res = fe_config_route(cfg, c->host, strlen(c->host), url, plen);
  if (!res) {
    fe_conn_respond(c, 404, NULL, NULL, "404 no resource serves this path\n", 33, !keep);
    return keep ? 0 : HPE_PAUSED;
  }
  c->res = res;
  fe_conn_view(c, res, url, plen, query, qlen);
  size_t pre = strlen(res->prefix);
  if (res->type == FE_RES_STATIC) {
    if (!fe_conn_access(c, res, keep))
      fe_static_serve(c, res, url + pre, plen - pre);
    return c->state == FE_CS_CLOSING || !keep ? HPE_PAUSED : 0;
  }
  if (fe_live_stream_name(res, url, plen, &c->view.stream) < 0) {
    static const char msg[] = "404 live streams are {prefix}{stream}.flv\n";
    fe_conn_respond(c, 404, NULL, NULL, msg, sizeof(msg) - 1, !keep);
    return keep ? 0 : HPE_PAUSED;
  }
  if (fe_conn_access(c, res, keep))
    return keep ? 0 : HPE_PAUSED;
  fe_live_serve(c, res);
  return HPE_PAUSED;
}

static llhttp_settings_t fe_request_settings;

static void fe_conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char chunk[65536]; /* one loop: each read is parsed before the next one */
  buf->base = chunk;
  buf->len = sizeof(chunk);
}

static void fe_conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  fe_conn *c = stream->data;
  if (nread < 0) {
    fe_conn_close(c);
    return;
  }
  if (nread == 0 || c->state != FE_CS_READING)
    return; /* a viewer's further bytes are ignored; only its close matters */
  llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
  if (e == HPE_OK || e == HPE_PAUSED)
    return;
  if (c->too_large) {
    fe_conn_respond(c, 431, NULL, NULL, "431 request header fields too large\n", 36, 1);
  } else {
    char msg[160];
    int n = snprintf(msg, sizeof(msg), "400 bad request: %s\n", llhttp_errno_name(e));
    fe_conn_respond(c, 400, NULL, NULL, msg, (size_t)n, 1);
  }
  c->state = FE_CS_WAITING;
}

/* ---- accept, sweep, stop ------------------------------------------------------------------- */

static void fe_server_on_connection(uv_stream_t *listener, int status) {
  fe_server *s = listener->data;
  if (status < 0)
    return;
  fe_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  c->srv = s;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || s->stopping ||
      fe_stats.connections >= s->gen->cfg.max_connections) {
    /* Shed load: accept and close rather than leave the kernel queue full. */
    c->state = FE_CS_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
    return;
  }
  fe_stats.connections++;
  s->conn_handles++;
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
    uv_ip_name((struct sockaddr *)&ss, c->client_ip, sizeof(c->client_ip));
  sl = sizeof(ss);
  if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
    uv_ip_name((struct sockaddr *)&ss, c->server_ip, sizeof(c->server_ip));
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &fe_request_settings);
  c->parser.data = c;
  c->deadline = uv_now(s->loop) + (uint64_t)(s->gen->cfg.request_timeout * 1000.0);
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, fe_conn_alloc, fe_conn_on_read);
}

static void fe_server_on_sweep(uv_timer_t *t) {
  fe_server *s = t->data;
  uint64_t now = uv_now(s->loop);
  if (s->access_log)
    fflush(s->access_log);
  fe_conn *next;
  for (fe_conn *c = s->conns; c; c = next) {
    next = c->next;
    if (c->state == FE_CS_LIVE) {
      fe_live_check_slow(c, now);
    } else if (c->state == FE_CS_READING && c->deadline && now >= c->deadline) {
      fe_debug("closing a connection that sent no complete request in time");
      fe_conn_close(c);
    }
  }
}

static fe_gen *fe_gen_new(fe_config *cfg, fe_lua *lua) {
  fe_gen *g = calloc(1, sizeof(*g));
  if (!g)
    return NULL;
  g->cfg = *cfg; /* moved: the generation owns the strings now */
  memset(cfg, 0, sizeof(*cfg));
  g->lua = lua;
  g->refs = 1;
  return g;
}

static void fe_server_open_log(fe_server *s, const char *path) {
  if (s->access_log && s->access_log_path && path && strcmp(path, s->access_log_path) == 0)
    return;
  if (s->access_log)
    fclose(s->access_log);
  free(s->access_log_path);
  s->access_log = NULL;
  s->access_log_path = NULL;
  if (!path)
    return;
  s->access_log = strcmp(path, "stderr") == 0 ? fdopen(dup(2), "a") : fopen(path, "a");
  if (!s->access_log) {
    fe_error("access_log \"%s\": cannot open: %s", path, strerror(errno));
    return;
  }
  setvbuf(s->access_log, NULL, _IOFBF, 1 << 16);
  s->access_log_path = strdup(path);
}

int fe_server_reload(fe_server *s, fe_config *cfg, fe_lua *lua) {
  int same = cfg->nlisten == s->gen->cfg.nlisten;
  for (int i = 0; same && i < cfg->nlisten; i++)
    same = strcmp(cfg->listen[i], s->gen->cfg.listen[i]) == 0;
  if (!same)
    fe_warn("reload: listen addresses changed; they take effect at the next restart");
  fe_gen *g = fe_gen_new(cfg, lua);
  if (!g)
    return UV_ENOMEM;
  fe_server_open_log(s, g->cfg.access_log);
  fe_gen_unref(s->gen);
  s->gen = g;
  return 0;
}

int fe_server_start(uv_loop_t *loop, fe_config *config, fe_lua *lua, fe_server **out) {
  fe_server *s = calloc(1, sizeof(*s));
  if (!s)
    return UV_ENOMEM;
  s->loop = loop;
  s->gen = fe_gen_new(config, lua);
  const fe_config *cfg = &s->gen->cfg;
  fe_server_open_log(s, cfg->access_log);
  s->listeners = calloc((size_t)cfg->nlisten, sizeof(uv_tcp_t));
  llhttp_settings_init(&fe_request_settings);
  fe_request_settings.on_message_begin = fe_on_message_begin;
  fe_request_settings.on_url = fe_on_url;
  fe_request_settings.on_header_field = fe_on_header_field;
  fe_request_settings.on_header_value = fe_on_header_value;
  fe_request_settings.on_headers_complete = fe_on_headers_complete;
  fe_request_settings.on_message_complete = fe_on_message_complete;
  uv_timer_init(loop, &s->sweep);
  uv_timer_init(loop, &s->grace);
  s->sweep.data = s->grace.data = s;
  s->open_handles = 2;
  int rc = 0;
  for (int i = 0; i < cfg->nlisten; i++) {
    const char *spec = cfg->listen[i];
    const char *colon = strrchr(spec, ':');
    char host[256];
    struct sockaddr_storage ss;
    if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
      fe_error("listen \"%s\": expected host:port", spec);
      rc = UV_EINVAL;
      break;
    }
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']')
      memcpy(host, spec + 1, hl - 2), host[hl - 2] = 0;
    else
      memcpy(host, spec, hl), host[hl] = 0;
    int port = atoi(colon + 1);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
      fe_error("listen \"%s\": not an IP address and port", spec);
      rc = UV_EINVAL;
      break;
    }
    uv_tcp_t *l = &s->listeners[i];
    uv_tcp_init(loop, l);
    l->data = s;
    s->nlisteners++;
    s->open_handles++;
    if ((rc = uv_tcp_bind(l, (struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)l, 4096, fe_server_on_connection)) < 0) {
      fe_error("listen \"%s\": %s", spec, uv_strerror(rc));
      break;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    char ip[64];
    uv_tcp_getsockname(l, (struct sockaddr *)&bound, &blen);
    if (bound.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
      fe_info("listening on http://[%s]:%d", ip, ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
    } else {
      uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
      fe_info("listening on http://%s:%d", ip, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    }
  }
  *out = s;
  if (rc < 0)
    return rc;
  uv_timer_start(&s->sweep, fe_server_on_sweep, FE_SWEEP_MS, FE_SWEEP_MS);
  return 0;
}

static void fe_server_on_handle_closed(uv_handle_t *h) {
  fe_server *s = h->data;
  if (--s->open_handles == 0 && s->freed) {
    fe_gen_unref(s->gen);
    fe_server_open_log(s, NULL);
    free(s->listeners);
    free(s);
  }
}

static void fe_server_close_listeners(fe_server *s) {
  for (int i = 0; i < s->nlisteners; i++)
    if (!uv_is_closing((uv_handle_t *)&s->listeners[i]))
      uv_close((uv_handle_t *)&s->listeners[i], fe_server_on_handle_closed);
}

static void fe_server_on_grace(uv_timer_t *t) {
  fe_server *s = t->data;
  fe_warn("stop: closing %s connection(s) still open after the grace period",
          s->conns ? "the" : "no");
  while (s->conns)
    fe_conn_close(s->conns);
}

void fe_server_stop(fe_server *s, double grace, void (*done)(void *ud), void *ud) {
  s->stopping = 1;
  s->done = done;
  s->done_ud = ud;
  fe_server_close_listeners(s);
  uv_timer_stop(&s->sweep);
  fe_hub_end_all();
  /* Connections that are not streaming have nothing to finish. */
  fe_conn *next;
  for (fe_conn *c = s->conns; c; c = next) {
    next = c->next;
    if (c->state == FE_CS_READING)
      fe_conn_close(c);
  }
  uv_timer_start(&s->grace, fe_server_on_grace, (uint64_t)(grace * 1000.0), 0);
  fe_server_maybe_done(s);
}

void fe_server_free(fe_server *s) {
  s->freed = 1;
  fe_server_close_listeners(s);
  uv_close((uv_handle_t *)&s->sweep, fe_server_on_handle_closed);
  uv_close((uv_handle_t *)&s->grace, fe_server_on_handle_closed);
  /* The memory goes with the last handle, in the loop run that follows. */
}
