/*
 * fe_lua: the only door between C and Lua. One LuaJIT state holds the policies of one config
 * generation; C calls their phase functions (access, origin, cache, log) per request, each call
 * under a budget (VM instructions plus C work, see fe_lua_meter) and the state under a memory
 * limit, and Lua reads the request through small FFI functions (fe_lua_req_*) that look into the
 * C request view without copying it. Operator code runs in a sandbox (lua/flvedge/sandbox.lua).
 */
#ifndef FE_LUA_H
#define FE_LUA_H

#include <stddef.h>
#include <stdint.h>

#include "geo/fe_geo.h"
#include "str/fe_str.h"

typedef struct fe_lua fe_lua;


/**
 * What Lua sees of a request. Owned by the caller (http/), valid while the request is; every
 * pointer is borrowed. Lua reads it through the fe_lua_req_* functions only.
 */
typedef struct fe_req_view {
  const char *base;         /* request head bytes: header spans are offsets into them */
  const fe_header *headers;
  int nheaders;
  fe_str method, path, query, host, stream, resource, client_ip, server_ip;
  double time;              /* Unix seconds */
  fe_geo *geo;              /* may be NULL; the lookup caches in it (one per loop) */
  int8_t country_state;     /* 0 not looked up yet, 1 found, -1 none */
  char country[3];
} fe_req_view;

/** Where a policy's phases come from: one entry per config resource (NULL: no policy). */
typedef struct fe_lua_opts {
  const char *config_path;  /* the config file, run again to take each resource's `policy` */
  const char *quick_policy; /* quick mode: a policy file for the single resource */
  int nresources;
  const char *lua_dir;      /* flvedge.* library */
  const char *policy_dir;   /* ready-made policies */
  uint32_t budget;          /* VM instructions (and C work units) per hook call */
  uint64_t memory_limit;    /* bytes the state may hold while Lua runs; 0: 64 MiB */
  const char *geoip_db;     /* MaxMind DB for req.country; NULL: none */
} fe_lua_opts;

/**
 * The budget of the call now running, shared with Lua: lua/flvedge/budget.lua declares the same
 * struct for the FFI and pays the library's own loops from it, the count hook pays VM
 * instructions, the pattern functions (fe_lua_pattern.c) pay their steps. Owned by the fe_lua.
 */
typedef struct fe_lua_meter {
  int64_t left;    /* units left in this call: one per VM instruction, pattern step or byte of C work */
  int32_t tripped; /* FE_LUA_TRIP_*: once set, every later check raises msg until the call returns */
  int32_t active;  /* a call is running (outside one nothing is paid or limited) */
  char msg[200];   /* the error of the trip, with the script and line where it is known */
} fe_lua_meter;

enum { FE_LUA_TRIP_BUDGET = 1, FE_LUA_TRIP_MEMORY = 2 };

/** Phases a resource's policy has. */
enum { FE_LUA_ACCESS = 1, FE_LUA_ORIGIN = 2, FE_LUA_LOG = 4, FE_LUA_CACHE = 8 };

/** What `access` decided when it denied. The strings are owned by the struct; fe_lua_deny_free. */
typedef struct fe_lua_deny {
  int status;
  char *body;
  size_t body_len;
  char *headers; /* "Name: value\r\n" lines, validated */
} fe_lua_deny;

typedef struct fe_lua_res {
  int status;
  uint64_t bytes_sent;
  double duration;
  const char *cache_status; /* may be NULL */
} fe_lua_res;

/**
 * Makes a fresh state and loads every resource's policy. Returns NULL with the reason in err
 * (script:line included) when anything fails to load: a broken script never takes effect.
 */
fe_lua *fe_lua_open(const fe_lua_opts *opts, char *err, size_t errlen);
/** Drops a reference; the state closes at zero (pending requests released first). */
void fe_lua_unref(fe_lua *L);
/** FE_LUA_* bits of resource i's policy; 0 when it has none. */
unsigned fe_lua_phases(const fe_lua *L, int resource);

/**
 * Runs access(req) of resource i. Returns 0 to admit, 1 when denied (deny filled), or -1 when the
 * hook failed (error or budget; logged here once): the caller answers 500. `id` names the request
 * for later phases (its req object and req.ctx are kept until its log phase, when the policy has a
 * log or cache phase).
 */
int fe_lua_access(fe_lua *L, int resource, uint64_t id, fe_req_view *req, fe_lua_deny *deny);
void fe_lua_deny_free(fe_lua_deny *deny);
/**
 * Runs origin(req, attempt, last_error). Returns 1 with a URL in url, 0 when the hook gave nil
 * (use the resource's origin on attempt 1; give up after), -1 on failure (logged).
 */
int fe_lua_origin(fe_lua *L, int resource, uint64_t id, fe_req_view *req, int attempt,
                  const char *last_error, char *url, size_t cap);
/**
 * Runs log(req, res), if resource i has one, and releases request `id` (call it at the end of every
 * request: a policy with a cache phase keeps the request too). Extra access-log fields
 * the hook returned are written into extra as ` key="value"` pairs (may be empty).
 */
void fe_lua_log(fe_lua *L, int resource, uint64_t id, fe_req_view *req, const fe_lua_res *res,
                char *extra, size_t cap);

/**
 * What the `cache` hook decided. The caller fills the defaults before the call (the resource's
 * cache_ttl, cacheable for 200/206, key empty, keep_query 0); the hook changes what it returns.
 */
typedef struct fe_lua_cache_out {
  int bypass;      /* 1: not served from the cache and not stored (X-Cache-Status: BYPASS) */
  int cacheable;   /* answer call: store this answer */
  double ttl;      /* answer call: seconds it stays fresh */
  int keep_query;  /* lookup call: the query string is part of the key and of the origin URL */
  char key[512];   /* lookup call: the cache key; "" keeps the default (the origin URL) */
} fe_lua_cache_out;

/** The origin's answer as the `cache` hook sees it (res). Strings may be NULL; borrowed. */
typedef struct fe_lua_cache_res {
  int status;
  uint64_t size;             /* the whole object's size, when known (0: unknown) */
  const char *content_type, *etag, *last_modified, *cache_control;
} fe_lua_cache_res;

/**
 * Runs cache(req, res) of resource i: with res NULL before the cache lookup (the hook may set key,
 * keep_query, bypass), and with res for every origin answer (ttl, cacheable, bypass). Returns 0
 * with out updated, or -1 when the hook failed (logged once): the caller then bypasses the cache.
 * Values the hook returns are checked (key: visible ASCII, 1-511 bytes; ttl: a number >= 0).
 * Returns 0 without a call when the policy has no cache phase. `id` is the request's (0 for none,
 * e.g. a prefetch): a lookup call keeps the req object (and req.ctx, shared with access) for the
 * answer calls until fe_lua_log ends the request, so req must stay valid until then, as for
 * fe_lua_access; an answer call never starts keeping one. res->size 0 reaches Lua as nil.
 */
int fe_lua_cache(fe_lua *L, int resource, uint64_t id, fe_req_view *req,
                 const fe_lua_cache_res *res, fe_lua_cache_out *out);

/**
 * Hook failures (errors, budget, refused answers) are counted in *counter from now on: the
 * counter of the loop that runs the state (a state runs on one loop), so that it survives reloads.
 */
void fe_lua_count_errors_in(fe_lua *F, uint64_t *counter);

/* FFI entry points, called from lua/flvedge/request.lua: exported, not for C callers. */
int fe_lua_req_country(fe_req_view *r);
int fe_lua_req_header(const fe_req_view *r, const char *name, size_t nlen, const char **out, size_t *len);

#endif
