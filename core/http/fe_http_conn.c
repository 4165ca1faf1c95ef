#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "http/fe_http2.h"
#include "http/fe_http_conn.h"
#include "log/fe_log.h"
#include "str/fe_json.h"

typedef struct fe_send_req {
  fe_net_write w;
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
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 408: return "Request Timeout";
  case 410: return "Gone";
  case 416: return "Range Not Satisfiable";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

/* ---- generations --------------------------------------------------------------------------- */

void fe_cfg_shared_ref(fe_cfg_shared *s) {
  __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void fe_cfg_shared_unref(fe_cfg_shared *s) {
  if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  fe_alog_unref(s->access_log);
  fe_config_free(&s->cfg);
  free(s);
}

fe_gen *fe_gen_new(fe_cfg_shared *shared, fe_lua *lua) {
  fe_gen *g = calloc(1, sizeof(*g));
  if (!g)
    return NULL;
  g->shared = shared;
  g->cfg = &shared->cfg;
  g->lua = lua;
  g->refs = 1;
  return g;
}

void fe_gen_ref(fe_gen *g) {
  g->refs++;
}

void fe_gen_unref(fe_gen *g) {
  if (!g || --g->refs > 0)
    return;
  fe_lua_unref(g->lua);
  fe_cfg_shared_unref(g->shared);
  free(g);
}

static double fe_wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- connection lifetime ------------------------------------------------------------------- */

static void fe_conn_on_closed(fe_net *n) {
  fe_conn *c = n->data;
  fe_worker *w = c->w;
  if (c->h2)
    fe_h2_free(c);
  fe_gen_unref(c->gen);
  free(c->buf);
  free(c->body);
  free(c->head);
  free(c->pending);
  free(c->origin);
  free(c);
  if (--w->conn_handles == 0 && w->stopping && w->drained)
    w->drained(w);
}

/* Off the worker's list and closed (with a reset: what is queued is dropped), then off its hub. */
static void fe_conn_end(fe_conn *c, int reset) {
  if (c->state == FE_CS_CLOSING)
    return;
  fe_conn_request_done(c);
  c->state = FE_CS_CLOSING;
  if (c->h2s) {
    /* A stream: its handler lets go, then the session resets it if unfinished and leaves the
     * hub once no write holds the viewer's pinned buffers. The connection stays. */
    if (c->on_close) {
      void (*fn)(fe_conn *) = c->on_close;
      c->on_close = NULL;
      fn(c);
    }
    fe_h2_stream_end(c, reset);
    return;
  }
  fe_worker *w = c->w;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  FE_METRIC_ADD(&w->loop.metrics, connections, -1);
  if (c->on_close) {
    void (*fn)(fe_conn *) = c->on_close;
    c->on_close = NULL;
    fn(c);
  }
  if (c->h2)
    fe_h2_conn_close(c);
  /* After the close libuv writes nothing more, so the pinned buffers can be let go. */
  if (reset)
    fe_net_reset(&c->net, fe_conn_on_closed);
  else
    fe_net_close(&c->net, fe_conn_on_closed);
  fe_hub_leave(&c->viewer);
}

void fe_conn_close(fe_conn *c) {
  fe_conn_end(c, 0);
}

void fe_conn_reset(fe_conn *c) {
  fe_conn_end(c, 1);
}

static void fe_conn_next(fe_conn *c);

static void fe_conn_on_sent(fe_net_write *w, int status) {
  fe_send_req *r = (fe_send_req *)w;
  fe_conn *c = r->conn;
  int close = r->close || status < 0;
  if (status == 0)
    FE_METRIC_ADD(&c->w->loop.metrics, bytes_sent, r->len);
  free(r);
  c->sending--;
  if (close)
    fe_conn_close(c);
  else if (c->sending == 0)
    fe_conn_next(c);
}

void fe_conn_answer_begin(fe_conn *c) {
  if (c->sending++ == 0)
    c->send_progress = uv_now(&c->w->loop.uv);
}

void fe_conn_answer_end(fe_conn *c, int close) {
  if (c->h2s) {
    c->sending--;
    fe_h2_end(c);
    return;
  }
  c->sending--;
  if (close)
    fe_conn_close(c);
  else if (c->sending == 0)
    fe_conn_next(c);
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
  if (fe_net_writev(&c->net, &r->w, &b, 1, fe_conn_on_sent) < 0) {
    free(r);
    fe_conn_close(c);
    return;
  }
  if (c->sending++ == 0)
    c->send_progress = uv_now(&c->w->loop.uv);
  c->send_queued = fe_net_queued(&c->net);
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

/* CONNECT and Upgrade requests are answered as plain requests (or refused), and the connection
 * closes after the answer: what the client sends next is not HTTP/1.1 to us. */
int fe_conn_keep_alive(const fe_conn *c) {
  if (c->h2s)
    return 1; /* a stream ends; its connection goes on */
  return !c->parser.upgrade && llhttp_should_keep_alive(&c->parser);
}

/* Appends s[0..n) to buf at *at, as much as fits in cap - 1, and keeps it a C string. */
static void fe_put(char *buf, size_t cap, size_t *at, const char *s, size_t n) {
  size_t room = *at < cap ? cap - 1 - *at : 0;
  if (n > room)
    n = room;
  memcpy(buf + *at, s, n);
  *at += n;
  buf[*at] = 0;
}

size_t fe_conn_cors(const fe_conn *c, char *buf, size_t cap) {
  static const char allow[] = "Access-Control-Allow-Origin: ",
                    expose[] = "\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, "
                               "X-Cache-Status\r\n";
  const char *origin = (c->gen ? c->gen : c->w->gen)->cfg->cors_origin;
  size_t n = 0;
  buf[0] = 0;
  if (!origin)
    return 0;
  fe_put(buf, cap, &n, allow, sizeof(allow) - 1);
  fe_put(buf, cap, &n, origin, strlen(origin));
  fe_put(buf, cap, &n, expose, sizeof(expose) - 1);
  return n;
}

/* 1xx, 204 and 304 have no body (RFC 9110 6.4.1), so no Content-Length and no Content-Type. */
static int fe_status_bodiless(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* A response head as pieces, measured once and copied once: the answer of every small request
 * is made here, and formatting it with printf cost more than parsing the request. */
typedef struct fe_head {
  struct {
    const char *p;
    size_t n;
  } part[16];
  int count;
  size_t len;
  char status[4], clen[24];
} fe_head;

static void fe_head_add(fe_head *h, const char *p, size_t n) {
  h->part[h->count].p = p;
  h->part[h->count++].n = n;
  h->len += n;
}

#define FE_HEAD_LIT(h, s) fe_head_add((h), (s), sizeof(s) - 1)

static void fe_respond_head(fe_head *h, int status, const char *ctype, size_t len,
                            const char *cors, const char *extra_headers, int close) {
  h->count = 0;
  h->len = 0;
  if (status < 100 || status > 999)
    status = 500;
  h->status[0] = (char)('0' + status / 100);
  h->status[1] = (char)('0' + status / 10 % 10);
  h->status[2] = (char)('0' + status % 10);
  h->status[3] = ' ';
  const char *reason = fe_http_reason(status);
  FE_HEAD_LIT(h, "HTTP/1.1 ");
  fe_head_add(h, h->status, 4);
  fe_head_add(h, reason, strlen(reason));
  FE_HEAD_LIT(h, "\r\nServer: flvedge/" FE_VERSION "\r\n");
  if (!fe_status_bodiless(status)) {
    FE_HEAD_LIT(h, "Content-Type: ");
    ctype = ctype ? ctype : "text/plain";
    fe_head_add(h, ctype, strlen(ctype));
    FE_HEAD_LIT(h, "\r\nContent-Length: ");
    char *end = h->clen + sizeof(h->clen), *d = end;
    do
      *--d = (char)('0' + len % 10);
    while ((len /= 10) > 0);
    fe_head_add(h, d, (size_t)(end - d));
    FE_HEAD_LIT(h, "\r\n");
  }
  fe_head_add(h, cors, strlen(cors));
  if (extra_headers)
    fe_head_add(h, extra_headers, strlen(extra_headers));
  if (close)
    FE_HEAD_LIT(h, "Connection: close\r\n");
  FE_HEAD_LIT(h, "\r\n");
}

/* Writes the head to out (h->len bytes and a NUL). */
static void fe_head_copy(const fe_head *h, char *out) {
  for (int i = 0; i < h->count; i++) {
    memcpy(out, h->part[i].p, h->part[i].n);
    out += h->part[i].n;
  }
  *out = 0;
}

void fe_conn_respond(fe_conn *c, int status, const char *ctype, const char *extra_headers,
                     const void *body, size_t len, int close) {
  fe_metrics_count_status(&c->w->loop.metrics, status);
  if (c->state == FE_CS_CLOSING)
    return;
  char cors[256];
  fe_conn_cors(c, cors, sizeof(cors));
  /* Measured, then copied straight into the send request: a policy's headers may be long, and
   * the head is never cut. */
  fe_head head_parts;
  fe_respond_head(&head_parts, status, ctype, len, cors, extra_headers, close);
  size_t n = head_parts.len;
  /* parser.method is the last method read: a head refused before its method keeps the one of
   * the request before it, so only a method read for this request counts. */
  int head = c->have_method && c->parser.method == HTTP_HEAD;
  size_t body_len = head || fe_status_bodiless(status) ? 0 : len;
  c->status = status;
  c->bytes += n + body_len;
  fe_conn_first_byte(c);
  fe_conn_request_done(c);
  if (c->h2s) {
    /* HTTP/2 says nothing of Connection: the head is made again without it. */
    fe_respond_head(&head_parts, status, ctype, len, cors, extra_headers, 0);
    n = head_parts.len;
    char *h = malloc(n + 1);
    if (!h) {
      fe_conn_reset(c);
      return;
    }
    fe_head_copy(&head_parts, h);
    fe_h2_respond(c, h, n, body_len ? body : NULL, body_len);
    free(h);
    return;
  }
  /* Made while the parser runs, with nothing else in flight: the answer goes to the socket at
   * once. The usual small answer then needs no copy, no write request and no callback, and the
   * parser goes on to a pipelined request; what the socket does not take is queued as below. A
   * closing answer is always queued: the connection closes when its last byte has left. */
  size_t done = 0;
  char hbuf[2048];
  if (c->parsing && !c->sending && !close && n < sizeof(hbuf)) {
    fe_head_copy(&head_parts, hbuf);
    uv_buf_t b[2] = {uv_buf_init(hbuf, (unsigned)n), uv_buf_init((char *)body, (unsigned)body_len)};
    int w = fe_net_try_writev(&c->net, b, body_len ? 2 : 1);
    if (w < 0 && w != UV_EAGAIN) {
      fe_conn_close(c);
      return;
    }
    done = w > 0 ? (size_t)w : 0;
    FE_METRIC_ADD(&c->w->loop.metrics, bytes_sent, done);
    if (done == n + body_len)
      return;
  }
  fe_send_req *r = fe_send_req_new(c, n + 1 + body_len - done, close);
  if (!r) {
    fe_conn_close(c);
    return;
  }
  if (done == 0) {
    fe_head_copy(&head_parts, r->data);
  } else if (done < n) {
    memcpy(r->data, hbuf + done, n - done);
  }
  size_t head_left = done < n ? n - done : 0, body_done = done > n ? done - n : 0;
  if (body_len > body_done)
    memcpy(r->data + head_left, (const char *)body + body_done, body_len - body_done);
  r->len = n + body_len - done;
  fe_send_req_queue(c, r);
}

/* ---- the access log ------------------------------------------------------------------------ */

/* A log line being made: room for every field escaped, so nothing is cut. */
typedef struct fe_line {
  char *p;
  size_t cap, len;
} fe_line;

static void fe_line_raw(fe_line *l, const char *s) {
  size_t n = strlen(s);
  if (l->len + n < l->cap) {
    memcpy(l->p + l->len, s, n);
    l->len += n;
  }
}

/* A string field as nginx's escape=default writes it; "-" when it is not known. */
static void fe_line_field(fe_line *l, const char *s, size_t n) {
  if (s)
    l->len += fe_str_escape(l->p + l->len, l->cap - l->len, s, n);
  else
    fe_line_raw(l, "-");
}

static void fe_line_cstr(fe_line *l, const char *s) {
  fe_line_field(l, s, s ? strlen(s) : 0);
}

/* One line per answer, for requests that failed to parse too: what is not known is "-" (the
 * request field is "-" when not even the method was read). Every string field is escaped, so no
 * byte a client sent can end a field or forge the next one. */
static size_t fe_access_log_combined(fe_conn *c, const char *extra, char **out) {
  const fe_span *ref = fe_conn_header(c, "Referer");
  const fe_span *ua = fe_conn_header(c, "User-Agent");
  const char *url = c->buf && c->url.len ? c->buf + c->url.off : NULL;
  const char *res = c->res ? c->res->name : NULL;
  char when[64], num[96];
  time_t t = (time_t)c->start;
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);
  size_t escaped = strlen(c->client_ip) + c->url.len + (ref ? ref->len : 0) + (ua ? ua->len : 0) +
                   (res ? strlen(res) : 0) + 16;
  fe_line l = {.cap = 256 + 4 * escaped + strlen(extra)};
  l.p = malloc(l.cap);
  *out = l.p;
  if (!l.p)
    return 0;
  fe_line_cstr(&l, c->client_ip);
  fe_line_raw(&l, " - - [");
  fe_line_raw(&l, when);
  fe_line_raw(&l, "] \"");
  if (c->have_method) {
    fe_line_cstr(&l, llhttp_method_name((llhttp_method_t)c->parser.method));
    fe_line_raw(&l, " ");
    fe_line_field(&l, url, c->url.len);
    if (c->have_version) {
      snprintf(num, sizeof(num), " HTTP/%d.%d", c->parser.http_major, c->parser.http_minor);
      fe_line_raw(&l, num);
    } else {
      fe_line_raw(&l, " -");
    }
  } else {
    fe_line_raw(&l, "-");
  }
  snprintf(num, sizeof(num), "\" %d %llu \"", c->status, (unsigned long long)c->bytes);
  fe_line_raw(&l, num);
  fe_line_field(&l, ref ? c->buf + ref->off : NULL, ref ? ref->len : 0);
  fe_line_raw(&l, "\" \"");
  fe_line_field(&l, ua ? c->buf + ua->off : NULL, ua ? ua->len : 0);
  snprintf(num, sizeof(num), "\" %.3f ", fe_wall_time() - c->start);
  fe_line_raw(&l, num);
  fe_line_cstr(&l, c->cache_status);
  fe_line_raw(&l, " ");
  fe_line_cstr(&l, res);
  fe_line_raw(&l, extra); /* ` key="value"` pairs, escaped by boot.lua */
  fe_line_raw(&l, "\n");
  return l.len;
}

void fe_conn_tls(const fe_conn *c, const char **version, const char **cipher) {
  const fe_net *n = c->h2s ? fe_h2_net(c) : &c->net;
  const char *v = fe_net_tls_version(n), *ci = fe_net_tls_cipher(n);
  *version = v ? v : "";
  *cipher = ci ? ci : "";
}

static void fe_json_key(fe_json_buf *b, const char *key) {
  fe_json_raw(b, ",\"");
  fe_json_raw(b, key);
  fe_json_raw(b, "\":");
}

static void fe_json_field(fe_json_buf *b, const char *key, const char *s, size_t len) {
  fe_json_key(b, key);
  fe_json_str(b, s ? s : "", s ? len : 0);
}

static void fe_json_cfield(fe_json_buf *b, const char *key, const char *s) {
  fe_json_field(b, key, s, s ? strlen(s) : 0);
}

static void fe_json_span(fe_json_buf *b, const char *key, const fe_conn *c, const fe_span *sp) {
  fe_json_field(b, key, sp ? c->buf + sp->off : NULL, sp ? sp->len : 0);
}

static void fe_json_num(fe_json_buf *b, const char *key, const char *fmt, double v) {
  char num[48];
  snprintf(num, sizeof(num), fmt, v);
  fe_json_key(b, key);
  fe_json_raw(b, num);
}

/* The log hook's ` key="value"` pairs (boot.lua escaped `"`, `\`, control and non-ASCII bytes as
 * \xHH) as members of an object: each decoded back to its bytes, then escaped as JSON. */
static void fe_json_extra(fe_json_buf *b, const char *extra) {
  fe_json_raw(b, ",\"fields\":{");
  int first = 1;
  const char *p = extra;
  char tmp[1024];
  while (*p == ' ') {
    const char *k = p + 1, *eq = strstr(k, "=\"");
    if (!eq)
      break;
    const char *v = eq + 2, *end = strchr(v, '"');
    if (!end)
      break;
    for (int part = 0; part < 2; part++) {
      const char *s = part ? v : k, *e = part ? end : eq;
      size_t n = 0;
      while (s < e && n < sizeof(tmp)) {
        unsigned hi, lo;
        if (s[0] == '\\' && e - s >= 4 && s[1] == 'x' && sscanf(s + 2, "%1x%1x", &hi, &lo) == 2) {
          tmp[n++] = (char)(hi << 4 | lo);
          s += 4;
        } else {
          tmp[n++] = *s++;
        }
      }
      if (part == 0)
        fe_json_raw(b, first ? "" : ",");
      fe_json_str(b, tmp, n);
      if (part == 0)
        fe_json_raw(b, ":");
    }
    first = 0;
    p = end + 1;
  }
  fe_json_raw(b, "}");
}

/* One JSON object per line. Every string goes through fe_json_str: a quote, a backslash or a
 * control byte a client sent is escaped, so it can neither end the line nor add a member. */
static size_t fe_access_log_json(fe_conn *c, const char *extra, char **out) {
  const fe_span *ref = fe_conn_header(c, "Referer");
  const fe_span *ua = fe_conn_header(c, "User-Agent");
  size_t cap = 1024 + 6 * ((size_t)c->len + strlen(extra) + (c->origin ? strlen(c->origin) : 0));
  char *p = malloc(cap);
  *out = p;
  if (!p)
    return 0;
  fe_json_buf b;
  fe_json_init(&b, p, cap);
  char when[64];
  time_t t = (time_t)c->start;
  struct tm tm;
  gmtime_r(&t, &tm);
  size_t wl = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + wl, sizeof(when) - wl, ".%03dZ", (int)((c->start - (double)t) * 1000.0) % 1000);
  fe_json_raw(&b, "{\"time\":\"");
  fe_json_raw(&b, when);
  fe_json_raw(&b, "\"");
  char id[32];
  snprintf(id, sizeof(id), "%llx", (unsigned long long)c->id);
  fe_json_cfield(&b, "request_id", id);
  fe_json_cfield(&b, "client", c->client_ip);
  fe_json_num(&b, "client_port", "%.0f", c->client_port);
  fe_json_cfield(&b, "method", c->have_method ? llhttp_method_name((llhttp_method_t)c->parser.method) : "");
  fe_json_field(&b, "uri", c->buf ? c->buf + c->url.off : NULL, c->buf ? c->url.len : 0);
  char proto[16] = "";
  if (c->have_version)
    snprintf(proto, sizeof(proto), "HTTP/%d.%d", c->parser.http_major, c->parser.http_minor);
  fe_json_cfield(&b, "protocol", proto);
  fe_json_cfield(&b, "host", c->host);
  fe_json_num(&b, "status", "%.0f", c->status);
  fe_json_num(&b, "bytes", "%.0f", (double)c->bytes);
  fe_json_num(&b, "duration", "%.3f", fe_wall_time() - c->start);
  if (c->first_byte_ns)
    fe_json_num(&b, "first_byte", "%.4f", (double)(c->first_byte_ns - c->start_ns) / 1e9);
  else
    fe_json_raw(&b, ",\"first_byte\":null");
  fe_json_span(&b, "referer", c, ref);
  fe_json_span(&b, "user_agent", c, ua);
  fe_json_cfield(&b, "cache_status", c->cache_status);
  fe_json_cfield(&b, "resource", c->res ? c->res->name : NULL);
  fe_json_field(&b, "stream", c->res ? c->view.stream.p : NULL, c->res ? c->view.stream.len : 0);
  fe_json_cfield(&b, "origin", c->origin);
  fe_json_num(&b, "origin_status", "%.0f", c->origin_status);
  const char *country = "";
  if (c->res && c->view.geo && fe_lua_req_country(&c->view) == 1)
    country = c->view.country;
  fe_json_cfield(&b, "country", country);
  const char *tls_version, *tls_cipher;
  fe_conn_tls(c, &tls_version, &tls_cipher);
  fe_json_cfield(&b, "tls_version", tls_version);
  fe_json_cfield(&b, "tls_cipher", tls_cipher);
  fe_json_extra(&b, extra);
  fe_json_raw(&b, "}\n");
  if (b.overflow) { /* cannot happen with the room above; a cut line would not be JSON */
    free(p);
    *out = NULL;
    return 0;
  }
  return b.len;
}

static void fe_access_log_write(fe_conn *c, fe_alog *a, const char *extra) {
  char *line;
  size_t n = c->gen->cfg->access_log_format == FE_ALOG_COMBINED ? fe_access_log_combined(c, extra, &line)
                                                                 : fe_access_log_json(c, extra, &line);
  fe_worker *w = c->w;
  fe_metrics *m = &w->loop.metrics;
  uint32_t dropped = n ? fe_alog_append(a, w->id, line, n) : 1;
  free(line);
  /* A generation replaced by a reload: its log may be another file; nothing else flushes it. */
  if (a != w->gen->shared->access_log)
    dropped += fe_alog_flush(a, w->id);
  FE_METRIC_INC(m, access_log_lines);
  if (dropped)
    FE_METRIC_ADD(m, access_log_dropped, dropped);
}

void fe_conn_first_byte(fe_conn *c) {
  if (c->first_byte_ns || !c->start_ns)
    return;
  c->first_byte_ns = uv_hrtime();
  fe_metrics *m = &c->w->loop.metrics;
  fe_metrics_latency(m->first_byte, &m->first_byte_sum_us, (c->first_byte_ns - c->start_ns) / 1000);
}

/* The resource's counters: by status class and cache status; its bytes, except live viewers'
 * (counted as written). */
static void fe_conn_count_resource(fe_conn *c) {
  if (!c->res)
    return;
  fe_res_metrics *r = &c->w->loop.metrics.res[c->res->metrics_slot];
  int cls = c->status / 100;
  if (cls >= 1 && cls <= 5)
    __atomic_store_n(&r->requests[cls], r->requests[cls] + 1, __ATOMIC_RELAXED);
  int cs = fe_metrics_cache_status(c->cache_status);
  __atomic_store_n(&r->cache[cs], r->cache[cs] + 1, __ATOMIC_RELAXED);
  if (c->res->type != FE_RES_LIVE || c->status != 200)
    __atomic_store_n(&r->bytes_sent, r->bytes_sent + c->bytes, __ATOMIC_RELAXED);
}

void fe_conn_request_done(fe_conn *c) {
  if (c->logged || !c->id)
    return;
  c->logged = 1;
  fe_conn_count_resource(c);
  if (c->have_version) {
    int proto = c->parser.http_major == 2 ? FE_PROTO_HTTP2 : c->parser.http_minor == 0 ? FE_PROTO_HTTP10
                                                                                       : FE_PROTO_HTTP11;
    FE_METRIC_INC(&c->w->loop.metrics, requests_proto[proto]);
  }
  char extra[1024];
  extra[0] = 0;
  fe_lua *lua = c->gen ? c->gen->lua : NULL;
  if (lua && c->res) {
    int idx = (int)(c->res - c->gen->cfg->resources);
    fe_lua_res res = {.status = c->status, .bytes_sent = c->bytes,
                      .duration = fe_wall_time() - c->start, .cache_status = c->cache_status};
    fe_lua_log(lua, idx, c->id, &c->view, &res, extra, sizeof(extra));
  }
  fe_alog *a = c->gen ? c->gen->shared->access_log : NULL;
  if (a)
    fe_access_log_write(c, a, extra);
  free(c->origin);
  c->origin = NULL;
  c->origin_status = 0;
}

const fe_span *fe_conn_header(const fe_conn *c, const char *name) {
  return fe_header_find(c->buf, c->hdr, c->nhdr < FE_MAX_HEADERS ? c->nhdr : FE_MAX_HEADERS, name,
                        strlen(name));
}

/* ---- request parsing ----------------------------------------------------------------------- */

/* Stops the parser: the request is answered with status (and why, a static string) and the
 * connection closes. */
static int fe_conn_refuse(fe_conn *c, int status, const char *why) {
  c->refuse_status = status;
  c->refuse_why = why;
  return HPE_USER;
}

static int fe_conn_append(fe_conn *c, const char *at, size_t len) {
  if (len == 0)
    return 0; /* llhttp may give an empty span before anything is kept: c->buf is still NULL */
  uint32_t limit = c->w->gen->cfg->max_header_size;
  if (c->len + len > limit) {
    fe_conn_refuse(c, 431, "request header fields too large");
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
  c->head_done = 0;
  c->h2c_upgrade = 0;
  c->body_len = 0;
  c->have_method = 0;
  c->have_version = 0;
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

static int fe_on_method_complete(llhttp_t *p) {
  ((fe_conn *)p->data)->have_method = 1;
  return 0;
}

/* HTTP/1.0 and 1.1 only. llhttp takes 0.9 and 2.0 itself and rejects other digits (below). */
static int fe_version_ok(const llhttp_t *p) {
  return p->http_major == 1 && p->http_minor <= 1;
}

static int fe_on_version_complete(llhttp_t *p) {
  ((fe_conn *)p->data)->have_version = 1;
  return fe_version_ok(p) ? 0 : fe_conn_refuse(p->data, 505, "HTTP version not supported");
}

/* llhttp 8 refuses a well-formed version it does not know (HTTP/1.2, HTTP/3.0) with this reason;
 * a malformed one (HTTP/x.1) has another. The first is 505, as nginx answers; the second 400. */
static int fe_version_unsupported(const llhttp_t *p, llhttp_errno_t e) {
  const char *reason = llhttp_get_error_reason(p);
  return e == HPE_INVALID_VERSION && reason && strcmp(reason, "Invalid HTTP version") == 0;
}

/* Fields and values after the head are a chunked body's trailers: never headers, so neither
 * routing nor policies see them. */
static int fe_on_header_field(llhttp_t *p, const char *at, size_t len) {
  fe_conn *c = p->data;
  if (c->head_done)
    return 0;
  /* llhttp 8 lets a space through before the colon ("Host : x"); nginx and RFC 9112 refuse it. */
  if (memchr(at, ' ', len))
    return fe_conn_refuse(c, 400, "space in a header name");
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
  if (c->head_done)
    return 0;
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
  c->head_done = 1;
  if (c->nhdr > FE_MAX_HEADERS)
    return fe_conn_refuse(c, 431, "request header fields too large");
  /* "GET /" with no version at all is an HTTP/0.9 request: llhttp reports no version for it. */
  if (!fe_version_ok(p))
    return fe_conn_refuse(c, 505, "HTTP version not supported");
  int hosts = 0;
  for (int i = 0; i < c->nhdr; i++)
    hosts += c->hdr[i].name.len == 4 && strncasecmp(c->buf + c->hdr[i].name.off, "Host", 4) == 0;
  /* One Host: routing and policies must not pick one of two (RFC 9112 3.2). */
  if (hosts > 1)
    return fe_conn_refuse(c, 400, "more than one Host header");
  if (hosts == 0 && p->http_minor == 1)
    return fe_conn_refuse(c, 400, "HTTP/1.1 request without Host");
  /* A body announced too large is refused before any of it is read. */
  if (c->kind->body_max && (p->flags & F_CONTENT_LENGTH) && p->content_length > c->kind->body_max)
    return fe_conn_refuse(c, 413, "request body too large");
  /* Upgrade to h2c only without a body (RFC 7540 3.2 lets a server ignore it otherwise): stream 1
   * is half-closed remote, so the body would have nowhere to go. llhttp pauses after this request
   * because of the Upgrade either way; the rest is checked once it is complete. */
  c->h2c_upgrade = c->kind->h2c && p->upgrade && p->method != HTTP_CONNECT && p->http_minor == 1 &&
                   !(p->flags & F_CHUNKED) && p->content_length == 0 && !fe_net_is_tls(&c->net);
  return 0;
}

/* Kept only where the kind wants bodies (the admin API), bounded; elsewhere llhttp parses past
 * them and this returns at once. */
static int fe_on_body(llhttp_t *p, const char *at, size_t len) {
  fe_conn *c = p->data;
  uint32_t max = c->kind->body_max;
  if (max == 0)
    return 0;
  if (len > max - c->body_len)
    return fe_conn_refuse(c, 413, "request body too large");
  if (c->body_len + len > c->body_cap) {
    uint32_t ncap = c->body_cap ? c->body_cap : 1024;
    while (ncap < c->body_len + len)
      ncap *= 2;
    if (ncap > max)
      ncap = max;
    char *nb = realloc(c->body, ncap);
    if (!nb)
      return fe_conn_refuse(c, 500, "out of memory");
    c->body = nb;
    c->body_cap = ncap;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += (uint32_t)len;
  return 0;
}

/* A new request under the newest generation: its id and a clean slate for its log line. */
static void fe_conn_request_begin(fe_conn *c) {
  fe_worker *w = c->w;
  if (c->gen != w->gen) {
    fe_gen_unref(c->gen);
    c->gen = w->gen;
    fe_gen_ref(c->gen);
  }
  c->deadline = 0; /* the head is in: the answer has send_timeout */
  c->id = fe_loop_request_id(&w->loop);
  c->logged = 0;
  c->status = 0;
  c->bytes = 0;
  c->start = fe_wall_time();
  c->start_ns = uv_hrtime();
  c->first_byte_ns = 0;
  c->keyframe_counted = 0;
  c->cache_status = NULL;
  c->res = NULL;
}

void fe_conn_dispatch(fe_conn *c, int refuse, const char *why) {
  fe_conn_request_begin(c);
  if (refuse) {
    char msg[160];
    int n = snprintf(msg, sizeof(msg), "%d %s\n", refuse, why);
    fe_conn_respond(c, refuse, NULL, NULL, msg, (size_t)n, 0);
    return;
  }
  if (c->w->stopping) {
    fe_conn_respond(c, 503, NULL, NULL, "503 shutting down\n", 18, 0);
    return;
  }
  c->kind->route(c);
}

/* 1 when the comma-separated list v[0..n) holds `tok` (any case). */
static int fe_has_token(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t b = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - b == tl && strncasecmp(v + b, tok, tl) == 0)
      return 1;
  }
  return 0;
}

/* The request asks for h2c as RFC 7540 3.2 says (Connection: Upgrade, HTTP2-Settings; Upgrade:
 * h2c; exactly one HTTP2-Settings, well formed) and HTTP/2 takes the connection over. 0 when it
 * did; -1 when the upgrade is ignored and the request answered in HTTP/1.1. */
static int fe_conn_h2c_upgrade(fe_conn *c) {
  const fe_span *conn = fe_conn_header(c, "Connection"), *up = fe_conn_header(c, "Upgrade");
  const fe_span *set = NULL;
  int nset = 0;
  for (int i = 0; i < c->nhdr && i < FE_MAX_HEADERS; i++)
    if (c->hdr[i].name.len == 14 && strncasecmp(c->buf + c->hdr[i].name.off, "HTTP2-Settings", 14) == 0) {
      set = &c->hdr[i].value;
      nset++;
    }
  if (!conn || !up || nset != 1 || !fe_has_token(c->buf + up->off, up->len, "h2c") ||
      !fe_has_token(c->buf + conn->off, conn->len, "upgrade") ||
      !fe_has_token(c->buf + conn->off, conn->len, "http2-settings"))
    return -1;
  uint8_t payload[FE_H2_MAX_SETTINGS * 6];
  int n = fe_h2_settings_decode(c->buf + set->off, set->len, payload, sizeof(payload));
  if (n < 0) {
    fe_debug("%s: a malformed HTTP2-Settings: the upgrade is ignored", c->client_ip);
    return -1;
  }
  return fe_h2_upgrade(c, payload, (size_t)n);
}

/* A complete request: the router answers it. */
static int fe_on_message_complete(llhttp_t *p) {
  fe_conn *c = p->data;
  fe_worker *w = c->w;
  /* Upgraded: the request is stream 1's; llhttp stops here (HPE_PAUSED_UPGRADE) and the bytes
   * after it are HTTP/2's (fe_conn_parse). */
  if (c->h2c_upgrade && !w->stopping && fe_conn_h2c_upgrade(c) == 0)
    return 0;
  fe_conn_request_begin(c);
  c->deadline = uv_now(&w->loop.uv) + (uint64_t)(c->gen->cfg->request_timeout * 1000.0);
  if (w->stopping) {
    fe_conn_respond(c, 503, NULL, NULL, "503 shutting down\n", 18, 1);
    return HPE_PAUSED;
  }
  int rc = c->kind->route(c);
  /* The next request waits until this answer has left. */
  return rc == 0 && c->sending ? HPE_PAUSED : rc;
}

/* Read-only: every loop's parsers share it. */
static const llhttp_settings_t fe_request_settings = {
    .on_message_begin = fe_on_message_begin,
    .on_url = fe_on_url,
    .on_method_complete = fe_on_method_complete,
    .on_version_complete = fe_on_version_complete,
    .on_header_field = fe_on_header_field,
    .on_header_value = fe_on_header_value,
    .on_headers_complete = fe_on_headers_complete,
    .on_body = fe_on_body,
    .on_message_complete = fe_on_message_complete,
};

/* Parses what the client sent. Returns how many bytes are left when the parser paused (a request
 * whose answer is being written, or the last one), 0 otherwise. */
static size_t fe_conn_parse(fe_conn *c, const char *data, size_t len) {
  c->parsing = 1;
  llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
  c->parsing = 0;
  /* HPE_PAUSED_UPGRADE: a CONNECT or Upgrade request was answered, and the connection closes;
   * or the request upgraded the connection to h2c, and what follows it is HTTP/2's. */
  if (e == HPE_PAUSED_UPGRADE && c->h2) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    fe_h2_on_read(c, pos, (size_t)(data + len - pos));
    return 0;
  }
  if (e == HPE_OK || e == HPE_PAUSED_UPGRADE)
    return 0;
  if (e == HPE_PAUSED)
    return (size_t)(data + len - llhttp_get_error_pos(&c->parser));
  int unsupported = fe_version_unsupported(&c->parser, e);
  int status = c->refuse_status ? c->refuse_status : unsupported ? 505 : 400;
  c->have_version |= unsupported; /* llhttp stored the digits it refused */
  const char *why = c->refuse_why ? c->refuse_why
                    : status == 505 ? "HTTP version not supported"
                                    : llhttp_errno_name(e);
  char msg[160];
  int n = c->kind->json_errors
              ? snprintf(msg, sizeof(msg), "{\"error\":\"%s\"}\n", why) /* static text: no escaping */
              : snprintf(msg, sizeof(msg), "%d %s%s\n", status, status == 400 ? "bad request: " : "", why);
  fe_conn_request_begin(c); /* a request that failed to parse is answered and logged too */
  fe_conn_respond(c, status, c->kind->json_errors ? "application/json" : NULL, NULL, msg,
                  (size_t)n, 1);
  c->state = FE_CS_WAITING;
  return 0;
}

static void fe_conn_on_read(fe_net *n, ssize_t nread, const char *data);

/* While an answer is written the client's further requests wait in its socket, not in our
 * memory: what was read past the request (one read at most) is kept, and reading stops. (A small
 * answer made while parsing is written at once and never gets here: stopping and restarting
 * reading around it cost two epoll_ctl calls per request.) */
static void fe_conn_hold(fe_conn *c, const char *rest, size_t len) {
  if (len > 0) {
    char *p = malloc(c->pending_len + len);
    if (!p) {
      fe_conn_close(c);
      return;
    }
    if (c->pending_len)
      memcpy(p, c->pending + c->pending_off, c->pending_len);
    memcpy(p + c->pending_len, rest, len);
    free(c->pending);
    c->pending = p;
    c->pending_off = 0;
    c->pending_len += (uint32_t)len;
  }
  if (!c->read_stopped) {
    fe_net_read_stop(&c->net);
    c->read_stopped = 1;
  }
}

/* The answer has left: the next request, from what was kept, then from the socket again. */
static void fe_conn_next(fe_conn *c) {
  if (c->state != FE_CS_READING)
    return;
  if (c->w->stopping) {
    fe_conn_close(c);
    return;
  }
  c->deadline = uv_now(&c->w->loop.uv) + (uint64_t)(c->w->gen->cfg->request_timeout * 1000.0);
  if (llhttp_get_errno(&c->parser) == HPE_PAUSED)
    llhttp_resume(&c->parser);
  if (c->pending_len > 0) {
    size_t len = c->pending_len;
    size_t rest = fe_conn_parse(c, c->pending + c->pending_off, len);
    c->pending_off += (uint32_t)(len - rest);
    c->pending_len = (uint32_t)rest;
    if (c->state == FE_CS_READING && c->sending)
      return;
  }
  free(c->pending);
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  if (c->eof_held && c->state == FE_CS_READING) {
    fe_conn_close(c);
    return;
  }
  if (c->read_stopped && c->state != FE_CS_CLOSING) {
    c->read_stopped = 0;
    fe_net_read_start(&c->net, fe_conn_on_read);
  }
}

static void fe_conn_on_read(fe_net *n, ssize_t nread, const char *data) {
  fe_conn *c = n->data;
  if (nread == UV_EOF && !c->h2 && c->state == FE_CS_READING && c->sending) {
    /* A client may end its side after its request: the answer is still written in full, and
     * what it sent before is still answered; the connection closes after that. */
    c->eof_held = 1;
    if (!c->read_stopped) {
      fe_net_read_stop(&c->net);
      c->read_stopped = 1;
    }
    return;
  }
  if (nread < 0) {
    fe_conn_close(c);
    return;
  }
  if (c->h2) {
    fe_h2_on_read(c, data, (size_t)nread);
    return;
  }
  if (c->state != FE_CS_READING)
    return; /* a viewer's further bytes are ignored; only its close matters */
  if (c->sending) {
    fe_conn_hold(c, data, (size_t)nread); /* the answer before it has not finished */
    return;
  }
  /* The first bytes: HTTP/2 when TLS agreed on h2, or (h2c listeners) when they are its preface. */
  if (!c->proto_checked) {
    c->proto_checked = 1;
    const char *alpn = fe_net_alpn(&c->net);
    if ((c->kind->http2 && alpn && strcmp(alpn, "h2") == 0) ||
        (c->kind->h2c && !fe_net_is_tls(&c->net) && fe_h2_preface(data, (size_t)nread))) {
      fe_h2_start(c, data, (size_t)nread);
      return;
    }
  }
  size_t rest = fe_conn_parse(c, data, (size_t)nread);
  if (c->state == FE_CS_READING && c->sending)
    fe_conn_hold(c, data + nread - rest, rest);
}

/* ---- accept, sweep, stop ------------------------------------------------------------------- */

static void fe_conn_on_shed(fe_net *n) {
  free(n->data);
}

uint64_t fe_worker_sum(const fe_worker *w, size_t field) {
  uint64_t sum = 0;
  for (int i = 0; i < w->nloops; i++)
    sum += __atomic_load_n((const uint64_t *)((const char *)w->all_metrics[i] + field), __ATOMIC_RELAXED);
  return sum;
}

/* An accepted (or opened) connection starts reading its first request. */
static void fe_conn_start(fe_worker *w, fe_conn *c) {
  FE_METRIC_INC(&w->loop.metrics, connections);
  FE_METRIC_INC(&w->loop.metrics, accepted);
  w->conn_handles++;
  fe_net_peer_ip(&c->net, c->client_ip, sizeof(c->client_ip));
  struct sockaddr_storage peer;
  int plen = sizeof(peer);
  if (uv_tcp_getpeername(&c->net.tcp, (struct sockaddr *)&peer, &plen) == 0)
    c->client_port = ntohs(peer.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&peer)->sin6_port
                                                      : ((struct sockaddr_in *)&peer)->sin_port);
  fe_net_local_ip(&c->net, c->server_ip, sizeof(c->server_ip));
  c->next = w->conns;
  if (w->conns)
    w->conns->prev = c;
  w->conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &fe_request_settings);
  c->parser.data = c;
  c->deadline = uv_now(&w->loop.uv) + (uint64_t)(w->gen->cfg->request_timeout * 1000.0);
  fe_net_nodelay(&c->net);
  fe_net_read_start(&c->net, fe_conn_on_read);
}

void fe_conn_accept(fe_worker *w, fe_net_listener *ls, const fe_conn_kind *kind) {
  fe_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return;
  fe_net_init(&w->loop, &c->net, c);
  c->w = w;
  c->kind = kind;
  if (fe_net_accept(ls, &c->net) < 0 || w->stopping ||
      (!kind->unlimited && fe_worker_sum(w, offsetof(fe_metrics, connections)) >= w->gen->cfg->max_connections)) {
    /* Shed load: accept and close rather than leave the kernel queue full. */
    c->state = FE_CS_CLOSING;
    fe_net_close(&c->net, fe_conn_on_shed);
    return;
  }
  fe_conn_start(w, c);
}

fe_conn *fe_conn_open(fe_worker *w, const fe_net_type *type, const fe_conn_kind *kind) {
  fe_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  fe_net_init(&w->loop, &c->net, c);
  c->net.type = type; /* its uv_tcp_t stays unopened: closing it is the type's close */
  c->w = w;
  c->kind = kind;
  fe_conn_start(w, c);
  return c;
}

/* A finite answer is cut only when its bytes have not moved for send_timeout. */
static void fe_conn_check_send(fe_conn *c, uint64_t now) {
  size_t queued = fe_net_queued(&c->net);
  if (queued == 0 || queued < c->send_queued)
    c->send_progress = now;
  c->send_queued = queued;
  double limit = (c->gen ? c->gen : c->w->gen)->cfg->send_timeout;
  if (now - c->send_progress < (uint64_t)(limit * 1000.0))
    return;
  fe_debug("closing a connection that took none of its answer for %.1f s (%zu bytes left)", limit,
           queued);
  fe_conn_reset(c);
}

void fe_conn_sweep(fe_worker *w, uint64_t now) {
  fe_conn *next;
  for (fe_conn *c = w->conns; c; c = next) {
    next = c->next;
    if (c->on_sweep && c->on_sweep(c, now))
      continue;
    if (c->sending) {
      fe_conn_check_send(c, now);
    } else if (!c->on_sweep && c->state == FE_CS_READING && c->deadline && now >= c->deadline) {
      fe_debug("closing a connection that sent no complete request in time");
      fe_conn_close(c);
    }
  }
}

void fe_conn_stop_idle(fe_worker *w) {
  fe_conn *next;
  for (fe_conn *c = w->conns; c; c = next) {
    next = c->next;
    if (c->h2)
      fe_h2_stop(c);
    else if (c->state == FE_CS_READING && !c->sending)
      fe_conn_close(c);
  }
}
