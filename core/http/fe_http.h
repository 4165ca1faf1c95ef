/*
 * fe_http: the client side of the edge. Accepts connections, parses requests with llhttp, routes
 * them to a resource (live hub, static file, status), and owns every client connection.
 */
#ifndef FE_HTTP_H
#define FE_HTTP_H

#include <uv.h>

#include "config/fe_config.h"

typedef struct fe_server fe_server;

/**
 * Binds every listener of `cfg` and starts accepting. Logs one "listening on" line per listener.
 * `cfg` must outlive the server. Returns 0, or a negative libuv error (logged once here).
 */
int fe_server_start(uv_loop_t *loop, const fe_config *cfg, fe_server **out);
/**
 * Graceful stop: listeners close, hubs end, viewers get the end of their body, keep-alive
 * connections close. `done` runs once every connection is gone (at most `grace` seconds later).
 */
void fe_server_stop(fe_server *s, double grace, void (*done)(void *ud), void *ud);
/** Frees a stopped server (after `done`). */
void fe_server_free(fe_server *s);

#endif
