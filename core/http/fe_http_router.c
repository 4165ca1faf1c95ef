#include <stdio.h>
#include <string.h>

#include "http/fe_http_handlers.h"
#include "http/fe_http_router.h"
#include "vod/fe_vod.h"

/* What each resource kind does; a new kind (VOD) is one more row. */
typedef struct fe_kind {
  /** Checks the path under the prefix before the access phase. 0, or -1 after answering. */
  int (*prepare)(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
  void (*serve)(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
  int streams; /* the connection becomes the handler's: read no further request */
} fe_kind;

static const fe_kind fe_kinds[] = {
    [FE_RES_LIVE] = {fe_live_prepare, fe_live_serve, 1},
    [FE_RES_STATIC] = {NULL, fe_static_serve, 0},
    [FE_RES_VOD] = {fe_vod_prepare, fe_vod_serve, 0},
};

static int fe_router_next(const fe_conn *c, int keep) {
  return c->state == FE_CS_READING && keep ? 0 : HPE_PAUSED;
}

static void fe_serve_options(fe_conn *c, int keep) {
  static const char allow[] = "range, accept, origin, content-type";
  char extra[512];
  const fe_span *want = fe_conn_header(c, "Access-Control-Request-Headers");
  int echo = want && want->len < 256;
  snprintf(extra, sizeof(extra),
           "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
           "Access-Control-Allow-Headers: %.*s\r\nAccess-Control-Max-Age: 86400\r\n"
           "Allow: GET, HEAD, OPTIONS\r\n",
           echo ? (int)want->len : (int)sizeof(allow) - 1, echo ? c->buf + want->off : allow);
  fe_conn_respond(c, 204, NULL, extra, NULL, 0, !keep);
}

size_t fe_router_metrics(const fe_worker *w, char *buf, size_t cap) {
  size_t n = fe_metrics_render(w->all_metrics, w->nloops, buf, cap);
  if (w->loop.vod && n < cap)
    n += fe_vod_metrics_render(w->loop.vod, buf + n, cap - n);
  return n;
}

static void fe_serve_status(fe_conn *c, const char *what, size_t len, int keep) {
  if (len == 7 && memcmp(what, "metrics", 7) == 0) {
    char body[16384];
    size_t n = fe_router_metrics(c->w, body, sizeof(body));
    fe_conn_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-cache\r\n", body, n, !keep);
    return;
  }
  fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !keep);
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

/* The request as policies see it; kinds add their own fields (live: the stream). */
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
  int idx = (int)(res - c->gen->cfg->resources);
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

int fe_router_route(fe_conn *c) {
  llhttp_t *p = &c->parser;
  const fe_config *cfg = c->gen->cfg;
  int keep = fe_conn_keep_alive(c);
  const char *url = c->buf + c->url.off;
  size_t ulen = c->url.len;
  const char *q = memchr(url, '?', ulen);
  size_t plen = q ? (size_t)(q - url) : ulen;
  const char *query = q ? q + 1 : "";
  size_t qlen = q ? ulen - plen - 1 : 0;

  if (p->method == HTTP_OPTIONS) {
    fe_serve_options(c, keep);
    return fe_router_next(c, keep);
  }
  if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
    static const char msg[] = "405 method not allowed: only GET, HEAD and OPTIONS\n";
    fe_conn_respond(c, 405, NULL, "Allow: GET, HEAD, OPTIONS\r\n", msg, sizeof(msg) - 1, !keep);
    return fe_router_next(c, keep);
  }
  if (plen == 0 || url[0] != '/') {
    fe_conn_respond(c, 400, NULL, NULL, "400 bad request target\n", 23, 1);
    return HPE_PAUSED;
  }
  size_t splen = cfg->status_prefix ? strlen(cfg->status_prefix) : 0;
  if (splen && plen > splen && memcmp(url, cfg->status_prefix, splen) == 0) {
    fe_serve_status(c, url + splen, plen - splen, keep);
    return fe_router_next(c, keep);
  }
  fe_conn_host(c);
  const fe_resource *res = fe_config_route(cfg, c->host, strlen(c->host), url, plen);
  if (!res) {
    fe_conn_respond(c, 404, NULL, NULL, "404 no resource serves this path\n", 33, !keep);
    return fe_router_next(c, keep);
  }
  c->res = res;
  fe_conn_view(c, res, url, plen, query, qlen);
  const fe_kind *kind = &fe_kinds[res->type];
  size_t pre = strlen(res->prefix);
  if (kind->prepare && kind->prepare(c, res, url + pre, plen - pre) < 0)
    return fe_router_next(c, keep);
  if (fe_conn_access(c, res, keep))
    return fe_router_next(c, keep);
  kind->serve(c, res, url + pre, plen - pre);
  return kind->streams ? HPE_PAUSED : fe_router_next(c, keep);
}
