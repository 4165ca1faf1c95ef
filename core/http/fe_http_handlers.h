/* Internal to http/: one handler per resource kind, called by the router. */
#ifndef FE_HTTP_HANDLERS_H
#define FE_HTTP_HANDLERS_H

#include "http/fe_http_conn.h"

/** Live: checks {stream}.flv under the prefix and sets c->view.stream. Returns 0, or -1 after answering. */
int fe_live_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** Live: joins (or opens) the stream's hub; the connection becomes a viewer. */
void fe_live_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** VOD: refuses paths that could leave the prefix (400). Returns 0, or -1 after answering. */
int fe_vod_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** VOD: the file from the cache, or fetched into it (http/fe_http_vod.c). */
void fe_vod_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);
/** Static: a file under the resource's root. */
void fe_static_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len);

#endif
