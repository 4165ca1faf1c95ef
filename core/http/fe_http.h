/*
 * fe_http: the client side of the edge. Accepts connections, parses requests with llhttp, routes
 * them to a resource (live hub, static file, status), and owns every client connection.
 */
#ifndef FE_HTTP_H
#define FE_HTTP_H

#include <uv.h>

#include "config/fe_config.h"
#include "lua/fe_lua.h"

typedef struct fe_server fe_server;

/**
 * Binds every listener of `cfg` and starts accepting. Logs one "listening on" line per listener.
 * Takes over cfg's contents (cfg is left empty) and the reference to `lua` (may be NULL).
 * Returns 0, or a negative libuv error (logged once here); free the server either way.
 */
int fe_server_start(uv_loop_t *loop, fe_config *cfg, fe_lua *lua, fe_server **out);
/**
 * Makes a new config and its policies the ones new requests use, taking them over as start does.
 * Requests already routed keep the generation they started with until they end. Listeners stay.
 */
int fe_server_reload(fe_server *s, fe_config *cfg, fe_lua *lua);
/**
 * Graceful stop: listeners close, hubs end, viewers get the end of their body, keep-alive
 * connections close. `done` runs once every connection is gone (at most `grace` seconds later).
 */
void fe_server_stop(fe_server *s, double grace, void (*done)(void *ud), void *ud);
/** Frees a stopped server (after `done`). */
void fe_server_free(fe_server *s);

#endif
