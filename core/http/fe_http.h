/*
 * fe_http: the client side of the edge, on every core. The server binds the listeners once and
 * runs one worker per loop, each on its own thread with its own connections, hubs, counters and
 * Lua state; live streams cross loops through the relay (hub/fe_relay.h). The calling thread keeps
 * its own loop for signals and control.
 */
#ifndef FE_HTTP_H
#define FE_HTTP_H

#include <uv.h>

#include "config/fe_config.h"
#include "lua/fe_lua.h"

typedef struct fe_server fe_server;

/**
 * Binds every listener of `cfg` for `nworkers` loops and starts them. Logs one "listening on" line
 * per listener once every loop accepts on it. Takes over cfg's contents (cfg is left empty) and
 * the Lua states luas[0..nworkers-1] (each may be NULL), one per loop. `main` is the caller's loop,
 * where `done` of fe_server_stop runs. Returns 0, or a negative error (logged once here); free
 * the server either way.
 */
int fe_server_start(uv_loop_t *main, fe_config *cfg, fe_lua **luas, int nworkers,
                    fe_server **out);
/** The number of loops. */
int fe_server_workers(const fe_server *s);
/**
 * Makes a new config and its policies (one Lua state per loop) the ones new requests use on every
 * loop, taking them over as start does. Requests already routed keep the generation they started
 * with until they end. Listeners and the number of loops stay. A new vod cache_dir is scanned
 * here; UV_EINVAL (logged) when it cannot be opened, and nothing changes.
 */
int fe_server_reload(fe_server *s, fe_config *cfg, fe_lua **luas);
/**
 * Graceful stop on every loop: listeners close, hubs end, viewers get the end of their body,
 * keep-alive connections close. `done` runs on the caller's loop once every loop has finished (at
 * most `grace` seconds later).
 */
void fe_server_stop(fe_server *s, double grace, void (*done)(void *ud), void *ud);
/** Asks the access log's writer to reopen its file (SIGUSR1, after logrotate moved it). */
void fe_server_reopen_logs(fe_server *s);
/**
 * What POST /reload of the admin API runs, on the caller's (control) loop: loads and applies the
 * config as SIGHUP does; returns 0, or -1 with the reason in err. Set once after start.
 */
void fe_server_on_reload(fe_server *s, int (*fn)(void *ud, char *err, size_t cap), void *ud);
/** Joins the loops' threads and frees the server (after `done`, or after a failed start). */
void fe_server_free(fe_server *s);

#endif
