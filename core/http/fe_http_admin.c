#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/fe_http_admin.h"
#include "http/fe_http_handlers.h"
#include "http/fe_http_router.h"

#define FE_ADMIN_MAX_NODES 4096 /* JSON values in one body */
#define FE_ADMIN_MAX_DEPTH 4
#define FE_ADMIN_METRICS_MAX (256u << 10)

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

static int fe_admin_metrics(fe_conn *c, int keep) {
  char *body = malloc(FE_ADMIN_METRICS_MAX);
  if (!body)
    return fe_admin_error(c, 500, NULL, "out of memory", keep);
  size_t n = fe_router_metrics(c->w, body, FE_ADMIN_METRICS_MAX);
  fe_conn_respond(c, 200, "text/plain; version=0.0.4", "Cache-Control: no-cache\r\n", body, n, !keep);
  free(body);
  return fe_admin_next(c, keep);
}

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
  if (FE_IS("/metrics") || FE_IS("/health")) {
    if (!get)
      return fe_admin_error(c, 405, "Allow: GET, HEAD\r\n", "method not allowed (GET, HEAD)", keep);
    return FE_IS("/metrics") ? fe_admin_metrics(c, keep) : fe_admin_health(c, keep);
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
};
