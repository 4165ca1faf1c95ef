/*
 * Internal to http/: the admin API, on its own listener (`admin.listen`), served by loop 0. Every
 * request carries `Authorization: Bearer <admin.token>` (compared in constant time; the token of
 * the newest config counts, so a reload changes it). Answers are JSON, Prometheus text for
 * /metrics. GET /metrics and GET /health are built in; POST endpoints come from a table whose
 * handlers other http/ modules set (VOD: /vod/purge, /vod/prefetch); an endpoint with none answers
 * 501.
 */
#ifndef FE_HTTP_ADMIN_H
#define FE_HTTP_ADMIN_H

#include "http/fe_http_conn.h"
#include "str/fe_json.h"

#define FE_ADMIN_BODY_MAX (64u << 10) /* request body bytes; beyond: 413 */
#define FE_ADMIN_MAX_URLS 1000        /* "urls" entries one request may name */

/** The admin listener's connections: this router, JSON refusals, bodies up to FE_ADMIN_BODY_MAX. */
extern const fe_conn_kind fe_admin_kind;

/**
 * What a POST endpoint is asked about, from its JSON body `{"urls": [...], "pattern": "..."}`,
 * already checked: every string starts with '/' and is visible ASCII. Borrowed for the call.
 */
typedef struct fe_admin_targets {
  const char *const *urls; /* NUL-terminated */
  uint32_t nurls;
  const char *pattern;     /* NULL when absent */
} fe_admin_targets;

/**
 * A POST endpoint's handler: runs on loop 0, writes a JSON object into `out` and returns the
 * status to answer with (a 2xx, or 4xx/5xx with `{"error": ...}`). Must not keep `t` or `c`.
 */
typedef int (*fe_admin_post_fn)(fe_conn *c, const fe_admin_targets *t, fe_json_buf *out);

#endif
