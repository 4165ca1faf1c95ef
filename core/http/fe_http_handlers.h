/* Internal to http/: one handler per resource kind, called by the router. */
#ifndef FE_HTTP_HANDLERS_H
#define FE_HTTP_HANDLERS_H

#include "http/fe_http_admin.h"
#include "http/fe_http_conn.h"

/** Live: checks {stream}.flv under the prefix and sets c->view.stream. Returns 0, or -1 after answering. */
int fe_live_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** Live: joins (or opens) the stream's hub; the connection becomes a viewer. */
void fe_live_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** VOD: refuses paths that could leave the prefix (400). Returns 0, or -1 after answering. */
int fe_vod_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** VOD: the file from the cache, or fetched into it (http/fe_http_vod.c). */
void fe_vod_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/**
 * VOD for the admin listener: purges the objects whose client path is `path` (exact, query
 * ignored) or matches it ('*' any run of bytes), in every cache. Returns how many.
 */
int fe_vod_purge_path(fe_worker *w, const char *path);
/**
 * VOD for the admin listener: queues the whole file a client would get at `path` (routed by the
 * worker's config as a request without Host would be) for background fetching, slice by slice,
 * at most 4 files at a time per node. 0, or -1 when no vod resource serves the path or it is
 * refused by the path checks.
 */
int fe_vod_prefetch_path(fe_worker *w, const char *path);
/** The admin listener's POST /vod/purge: `urls` (exact client paths) and `pattern`; {"purged":N}. */
int fe_vod_admin_purge(fe_conn *c, const fe_admin_targets *t, fe_json_buf *out);
/** The admin listener's POST /vod/prefetch: `urls`, queued in the background; 202 {"queued":N}. */
int fe_vod_admin_prefetch(fe_conn *c, const fe_admin_targets *t, fe_json_buf *out);
/** Static: a file under the resource's root. */
void fe_static_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);

#endif
