#include "lua/fe_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log/fe_log.h"
#include "lua/fe_lua_ffi.h"
#include "lua/fe_lua_pattern.h"

/* The count hook runs every FE_LUA_TICK VM instructions and pays them from the meter. */
#define FE_LUA_TICK 1000
/* Loading a generation (the config, policy files, factories) may take this many call budgets. */
#define FE_LUA_LOAD_BUDGETS 100
/* Allocating pays one unit per this many bytes: copying them is about that much cheaper than a VM
 * instruction. It bounds what no hook sees: string concatenation, table growth, the GC. */
#define FE_LUA_ALLOC_BYTES_PER_UNIT 16
/* How far past the budget allocations still succeed, so that whoever trips the budget (the hook, a
 * pattern, the library) can still make its error message; beyond it they are refused. */
#define FE_LUA_ALLOC_SLACK 65536
/* A call also stops when it has run for one microsecond per unit of its budget, at least 1 s and at
 * most 10 s, checked by the count hook: the last resort against C work that is paid for neither
 * per step nor by allocating (comparing or converting long strings), at most FE_LUA_TICK such
 * operations after the deadline. */
#define FE_LUA_NS_PER_UNIT 1000
#define FE_LUA_MIN_TIME_NS 1000000000LL
#define FE_LUA_MAX_TIME_NS 10000000000LL

_Static_assert(sizeof(fe_lua_meter) == 216, "lua/flvedge/budget.lua declares fe_lua_meter too");

struct fe_lua {
  lua_State *L;
  int refs;
  int nres;
  unsigned *phases;
  int ref_access, ref_origin, ref_log, ref_cache, ref_release;
  int64_t budget;
  fe_geo *geo;
  fe_lua_meter meter;
  lua_Alloc alloc; /* LuaJIT's own allocator, which fe_lua_alloc wraps */
  void *alloc_ud;
  size_t mem, mem_limit;
  int64_t deadline_ns; /* CLOCK_MONOTONIC time at which the running call stops */
  uint64_t *errors;    /* the loop's counter of failed hook calls (NULL: not counted) */
};

void fe_lua_count_errors_in(fe_lua *F, uint64_t *counter) {
  F->errors = counter;
}

/* Only the state's loop writes its counter; the metrics page reads it with an atomic load. */
static void fe_lua_count_error(fe_lua *F) {
  if (F->errors)
    __atomic_store_n(F->errors, *F->errors + 1, __ATOMIC_RELAXED);
}

static int64_t fe_lua_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * LuaJIT's allocator with a limit: while a call runs, a block that would take the state past
 * mem_limit is refused, which LuaJIT raises as "not enough memory" in the Lua code that asked, and
 * the trip makes the error uncatchable for the rest of the call. Outside calls (C pushing
 * arguments, closing the state) nothing is refused: an error there would be unprotected.
 * Wrapping LuaJIT's allocator rather than giving lua_newstate one of ours keeps its placement
 * rules (GC64 builds may refuse a foreign allocator, others need memory in the low 2 GB).
 */
static void *fe_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  fe_lua *F = ud;
  fe_lua_meter *m = &F->meter;
  size_t old = ptr ? osize : 0;
  if (nsize > old && m->active) {
    if (F->mem + (nsize - old) > F->mem_limit) {
      if (!m->tripped) {
        snprintf(m->msg, sizeof(m->msg), "memory limit exceeded (lua_memory_limit = %zu bytes)",
                 F->mem_limit);
        m->tripped = FE_LUA_TRIP_MEMORY;
      }
      return NULL;
    }
    m->left -= (int64_t)((nsize - old + FE_LUA_ALLOC_BYTES_PER_UNIT - 1) / FE_LUA_ALLOC_BYTES_PER_UNIT);
    if (m->left < -FE_LUA_ALLOC_SLACK) {
      if (!m->tripped) {
        snprintf(m->msg, sizeof(m->msg), "instruction budget exceeded while allocating (lua_budget)");
        m->tripped = FE_LUA_TRIP_BUDGET;
      }
      return NULL;
    }
  }
  void *p = F->alloc(F->alloc_ud, ptr, osize, nsize);
  if (nsize == 0 || p)
    F->mem = F->mem - old + nsize;
  return p;
}

static void fe_lua_on_count(lua_State *L, lua_Debug *ar) {
  void *ud;
  lua_getallocf(L, &ud);
  fe_lua *F = ud;
  fe_lua_meter *m = &F->meter;
  if (!m->active)
    return;
  m->left -= FE_LUA_TICK;
  if (!m->tripped && (m->left < 0 || fe_lua_now_ns() > F->deadline_ns)) {
    lua_getinfo(L, "Sl", ar);
    snprintf(m->msg, sizeof(m->msg), "%s:%d: instruction budget exceeded (lua_budget%s)",
             ar->short_src, ar->currentline,
             m->left < 0 ? "; an endless loop?" : ": ran out of time");
    m->tripped = FE_LUA_TRIP_BUDGET;
  }
  if (m->tripped) {
    /* From now on every instruction fails, so that catching the error gains nothing. */
    lua_sethook(L, fe_lua_on_count, LUA_MASKCOUNT, 1);
    lua_pushstring(L, m->msg);
    lua_error(L);
  }
}

/*
 * Calls the function below its nargs arguments under a fresh budget. Returns 0 with nres results,
 * or -1 with the reason (a string) on the stack. A call that tripped fails even when the policy
 * caught the error and returned; after a memory trip the garbage is collected at once, so that the
 * next call starts below the limit.
 */
static int fe_lua_call(fe_lua *F, int nargs, int nres, int64_t budget) {
  lua_State *L = F->L;
  fe_lua_meter *m = &F->meter;
  int64_t time_ns = budget * FE_LUA_NS_PER_UNIT;
  time_ns = time_ns < FE_LUA_MIN_TIME_NS ? FE_LUA_MIN_TIME_NS
            : time_ns > FE_LUA_MAX_TIME_NS ? FE_LUA_MAX_TIME_NS : time_ns;
  F->deadline_ns = fe_lua_now_ns() + time_ns;
  m->left = budget;
  m->tripped = 0;
  m->msg[0] = 0;
  m->active = 1;
  /* Re-arming with the same mask keeps LuaJIT's dispatch mode as it is, so this is cheap. */
  lua_sethook(L, fe_lua_on_count, LUA_MASKCOUNT, FE_LUA_TICK);
  int rc = lua_pcall(L, nargs, nres, 0);
  m->active = 0;
  if (rc == 0 && !m->tripped)
    return 0;
  if (rc == 0)
    lua_pop(L, nres);
  else if (!m->tripped && !lua_isstring(L, -1)) {
    const char *type = luaL_typename(L, -1);
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", type);
  }
  if (m->tripped) {
    if (rc != 0)
      lua_pop(L, 1);
    lua_pushstring(L, m->msg);
  }
  if (m->tripped == FE_LUA_TRIP_MEMORY || rc == LUA_ERRMEM)
    lua_gc(L, LUA_GCCOLLECT, 0);
  return -1;
}

/* The request view goes to Lua as its address in a number, not a light userdata: LuaJIT's JIT
 * compiles ffi.cast from a number but not from a light userdata (NYI), and request.new is on every
 * request's path. User-space addresses on x86-64 and arm64 (< 2^48) are exact in a double. */
static void fe_lua_push_view(lua_State *L, const fe_req_view *req) {
  lua_pushnumber(L, (lua_Number)(uintptr_t)req);
}

static int fe_lua_get_ref(lua_State *L, int table, const char *name) {
  lua_getfield(L, table, name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* call(f, ...): f(...) with every result, called from C. boot.lua calls operator code (which the
 * JIT may not compile) through it: a trace that reaches a C function ends there and LuaJIT stitches
 * a new one after it, where reaching operator code itself would abort the trace and, repeated,
 * blacklist boot.lua's dispatch for every resource. */
static int fe_lua_call_interpreted(lua_State *L) {
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* What boot.load gets from C: the meter's address, the paying pattern functions, the limits, the
 * call through C. */
static void fe_lua_push_native(fe_lua *F) {
  lua_State *L = F->L;
  fe_lua_pattern_push(L, &F->meter);
  lua_pushcfunction(L, fe_lua_call_interpreted);
  lua_setfield(L, -2, "call");
  lua_pushnumber(L, (lua_Number)(uintptr_t)&F->meter);
  lua_setfield(L, -2, "meter");
  lua_pushnumber(L, (lua_Number)F->mem_limit);
  lua_setfield(L, -2, "memory_limit");
}

fe_lua *fe_lua_open(const fe_lua_opts *opts, char *err, size_t errlen) {
  fe_lua *F = calloc(1, sizeof(*F));
  if (!F) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  F->refs = 1;
  F->nres = opts->nresources;
  F->budget = opts->budget ? opts->budget : 1000000;
  F->mem_limit = opts->memory_limit ? (size_t)opts->memory_limit : (size_t)64 << 20;
  F->phases = calloc((size_t)opts->nresources + 1, sizeof(unsigned));
  F->L = luaL_newstate();
  if (!F->phases || !F->L) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  lua_State *L = F->L;
  F->alloc = lua_getallocf(L, &F->alloc_ud);
  F->mem = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
  lua_setallocf(L, fe_lua_alloc, F);
  if (opts->geoip_db && !(F->geo = fe_geo_open(opts->geoip_db, err, (unsigned)errlen)))
    goto fail;
  luaL_openlibs(L);
  int64_t load_budget = F->budget * FE_LUA_LOAD_BUDGETS;
  char boot[4096];
  snprintf(boot, sizeof(boot), "%s/flvedge/boot.lua", opts->lua_dir);
  if (luaL_loadfile(L, boot) != 0 || fe_lua_call(F, 0, 1, load_budget) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    goto fail;
  }
  int boot_idx = lua_gettop(L);
  lua_getfield(L, boot_idx, "load");
  if (opts->config_path)
    lua_pushstring(L, opts->config_path);
  else
    lua_pushnil(L);
  if (opts->quick_policy)
    lua_pushstring(L, opts->quick_policy);
  else
    lua_pushnil(L);
  lua_pushinteger(L, opts->nresources);
  lua_pushstring(L, opts->lua_dir);
  lua_pushstring(L, opts->policy_dir);
  fe_lua_push_native(F);
  if (fe_lua_call(F, 6, 1, load_budget) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    goto fail;
  }
  for (int i = 0; i < opts->nresources; i++) {
    lua_rawgeti(L, -1, i + 1);
    F->phases[i] = (unsigned)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  F->ref_access = fe_lua_get_ref(L, boot_idx, "access");
  F->ref_origin = fe_lua_get_ref(L, boot_idx, "origin");
  F->ref_log = fe_lua_get_ref(L, boot_idx, "log");
  F->ref_cache = fe_lua_get_ref(L, boot_idx, "cache");
  F->ref_release = fe_lua_get_ref(L, boot_idx, "release");
  lua_settop(L, 0);
  return F;
fail:
  if (F->L)
    lua_close(F->L);
  fe_geo_close(F->geo);
  free(F->phases);
  free(F);
  return NULL;
}

void fe_lua_unref(fe_lua *F) {
  if (!F || --F->refs > 0)
    return;
  lua_close(F->L);
  fe_geo_close(F->geo);
  free(F->phases);
  free(F);
}

unsigned fe_lua_phases(const fe_lua *F, int resource) {
  return F && resource >= 0 && resource < F->nres ? F->phases[resource] : 0;
}

/* After a failed phase: detaches the request that phase ran with and, when id is given, forgets
 * the request kept for its later phases. Also how a request without a log phase is let go. */
static void fe_lua_forget(fe_lua *F, const uint64_t *id) {
  lua_State *L = F->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, F->ref_release);
  if (id)
    lua_pushnumber(L, (lua_Number)*id);
  else
    lua_pushnil(L);
  if (fe_lua_call(F, 1, 0, F->budget) != 0) {
    fe_lua_count_error(F);
    fe_error("releasing a request: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static char *fe_lua_dup(lua_State *L, int idx, size_t *len) {
  size_t n = 0;
  const char *s = lua_tolstring(L, idx, &n);
  if (len)
    *len = s ? n : 0;
  if (!s)
    return NULL;
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = 0;
  }
  return d;
}

static int fe_lua_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* What is wrong with a denial's status and header lines, or NULL. boot.lua's check_denial refuses
 * the same; this guard is C's own, since the head is formatted with %s: a NUL would cut it, a CR
 * or LF would end it early, a framing header would contradict the server's. */
static const char *fe_lua_deny_problem(int status, const char *h, size_t len) {
  static const char *const framing[] = {"Content-Length", "Transfer-Encoding", "Connection",
                                        "Upgrade", "Keep-Alive", "Trailer"};
  if (status < 200 || status > 599)
    return "status outside 200-599";
  const char *end = h + len;
  while (h < end) {
    const char *colon = memchr(h, ':', (size_t)(end - h));
    if (!colon || colon == h)
      return "a header line without a name";
    for (const char *p = h; p < colon; p++)
      if (!fe_lua_tchar((unsigned char)*p))
        return "a header name that is not a token";
    size_t nlen = (size_t)(colon - h);
    for (size_t i = 0; i < sizeof(framing) / sizeof(framing[0]); i++)
      if (nlen == strlen(framing[i]) && strncasecmp(h, framing[i], nlen) == 0)
        return "a framing header (the server sets it)";
    const char *p = colon + 1;
    for (; p < end && *p != '\r'; p++) {
      unsigned char ch = (unsigned char)*p;
      if ((ch < 0x20 && ch != '\t') || ch == 0x7F)
        return "a control byte in a header value";
    }
    if (end - p < 2 || p[1] != '\n')
      return "a header line not ended by CRLF";
    h = p + 2;
  }
  return NULL;
}

int fe_lua_access(fe_lua *F, int resource, uint64_t id, fe_req_view *req, fe_lua_deny *deny) {
  lua_State *L = F->L;
  req->geo = F->geo;
  lua_rawgeti(L, LUA_REGISTRYINDEX, F->ref_access);
  lua_pushinteger(L, resource + 1);
  lua_pushnumber(L, (lua_Number)id);
  fe_lua_push_view(L, req);
  if (fe_lua_call(F, 3, 3, F->budget) != 0) {
    fe_lua_count_error(F);
    fe_error("access hook (resource %.*s, client %.*s): %s", (int)req->resource.len, req->resource.p,
             (int)req->client_ip.len, req->client_ip.p, lua_tostring(L, -1));
    lua_settop(L, 0);
    fe_lua_forget(F, &id);
    return -1;
  }
  if (lua_isnil(L, -3)) {
    lua_settop(L, 0);
    return 0;
  }
  memset(deny, 0, sizeof(*deny));
  deny->status = (int)lua_tointeger(L, -3);
  if (!lua_isnil(L, -2))
    deny->body = fe_lua_dup(L, -2, &deny->body_len);
  size_t hlen = 0;
  if (!lua_isnil(L, -1))
    deny->headers = fe_lua_dup(L, -1, &hlen);
  lua_settop(L, 0);
  const char *problem = fe_lua_deny_problem(deny->status, deny->headers ? deny->headers : "", hlen);
  if (problem) {
    fe_lua_count_error(F);
    fe_error("access hook (resource %.*s, client %.*s): refused denial: %s", (int)req->resource.len,
             req->resource.p, (int)req->client_ip.len, req->client_ip.p, problem);
    fe_lua_deny_free(deny);
    return -1;
  }
  return 1;
}

void fe_lua_deny_free(fe_lua_deny *deny) {
  free(deny->body);
  free(deny->headers);
  memset(deny, 0, sizeof(*deny));
}

int fe_lua_origin(fe_lua *F, int resource, uint64_t id, fe_req_view *req, int attempt,
                  const char *last_error, char *url, size_t cap) {
  lua_State *L = F->L;
  req->geo = F->geo;
  lua_rawgeti(L, LUA_REGISTRYINDEX, F->ref_origin);
  lua_pushinteger(L, resource + 1);
  fe_lua_push_view(L, req);
  lua_pushinteger(L, attempt);
  if (last_error)
    lua_pushstring(L, last_error);
  else
    lua_pushnil(L);
  int rc = 0;
  if (fe_lua_call(F, 4, 1, F->budget) != 0) {
    fe_lua_count_error(F);
    fe_error("origin hook (resource %.*s, stream %.*s): %s", (int)req->resource.len, req->resource.p,
             (int)req->stream.len, req->stream.p, lua_tostring(L, -1));
    lua_settop(L, 0);
    fe_lua_forget(F, NULL);
    return -1;
  }
  if (!lua_isnil(L, -1)) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (n >= cap) {
      fe_lua_count_error(F);
      fe_error("origin hook (stream %.*s): URL too long", (int)req->stream.len, req->stream.p);
      rc = -1;
    } else if (memchr(s, 0, n)) {
      fe_lua_count_error(F);
      fe_error("origin hook (stream %.*s): not an origin URL: it holds a NUL byte",
               (int)req->stream.len, req->stream.p);
      rc = -1;
    } else {
      memcpy(url, s, n + 1);
      rc = 1;
    }
  }
  lua_settop(L, 0);
  return rc;
}

void fe_lua_log(fe_lua *F, int resource, uint64_t id, fe_req_view *req, const fe_lua_res *res,
                char *extra, size_t cap) {
  lua_State *L = F->L;
  extra[0] = 0;
  /* for req.country here, and the access log's country after: no earlier phase may have run */
  req->geo = F->geo;
  unsigned phases = fe_lua_phases(F, resource);
  if (!(phases & FE_LUA_LOG)) {
    /* boot.lua keeps a request for its log and cache phases only: the request is over here. */
    if (phases & FE_LUA_CACHE)
      fe_lua_forget(F, &id);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, F->ref_log);
  lua_pushinteger(L, resource + 1);
  lua_pushnumber(L, (lua_Number)id);
  fe_lua_push_view(L, req);
  lua_pushinteger(L, res->status);
  lua_pushnumber(L, (lua_Number)res->bytes_sent);
  lua_pushnumber(L, res->duration);
  if (res->cache_status)
    lua_pushstring(L, res->cache_status);
  else
    lua_pushnil(L);
  if (fe_lua_call(F, 7, 1, F->budget) != 0) {
    fe_lua_count_error(F);
    fe_error("log hook (resource %.*s): %s", (int)req->resource.len, req->resource.p,
             lua_tostring(L, -1));
    lua_settop(L, 0);
    fe_lua_forget(F, &id);
  } else if (lua_isstring(L, -1)) {
    snprintf(extra, cap, "%s", lua_tostring(L, -1));
  }
  lua_settop(L, 0);
}

static void fe_lua_push_opt(lua_State *L, const char *s) {
  if (s)
    lua_pushstring(L, s);
  else
    lua_pushnil(L);
}

int fe_lua_cache(fe_lua *F, int resource, uint64_t id, fe_req_view *req,
                 const fe_lua_cache_res *res, fe_lua_cache_out *out) {
  if (!(fe_lua_phases(F, resource) & FE_LUA_CACHE))
    return 0;
  lua_State *L = F->L;
  req->geo = F->geo;
  lua_rawgeti(L, LUA_REGISTRYINDEX, F->ref_cache);
  lua_pushinteger(L, resource + 1);
  lua_pushnumber(L, (lua_Number)id);
  fe_lua_push_view(L, req);
  int nargs = 3;
  if (res) {
    lua_pushinteger(L, res->status);
    lua_pushnumber(L, (lua_Number)res->size);
    fe_lua_push_opt(L, res->content_type);
    fe_lua_push_opt(L, res->etag);
    fe_lua_push_opt(L, res->last_modified);
    fe_lua_push_opt(L, res->cache_control);
    nargs = 9;
  }
  if (fe_lua_call(F, nargs, 3, F->budget) != 0) {
    fe_lua_count_error(F);
    fe_error("cache hook (resource %.*s, client %.*s): %s", (int)req->resource.len, req->resource.p,
             (int)req->client_ip.len, req->client_ip.p, lua_tostring(L, -1));
    lua_settop(L, 0);
    fe_lua_forget(F, &id);
    return -1;
  }
  /* boot.lua's check_cache checked the types and values; C checks again what it relies on: the
   * key fits and has no byte that could end up in a file name or a log line unescaped. */
  fe_lua_cache_out got = *out;
  const char *problem = NULL;
  if (!res && lua_type(L, -3) == LUA_TSTRING) {
    size_t n;
    const char *key = lua_tolstring(L, -3, &n);
    if (n == 0 || n >= sizeof(got.key) || !fe_str_visible(key, n))
      problem = "a key that is not 1-511 bytes of visible ASCII";
    else
      memcpy(got.key, key, n + 1);
  } else if (res && lua_type(L, -3) == LUA_TNUMBER) {
    double ttl = lua_tonumber(L, -3);
    if (!isfinite(ttl) || ttl < 0)
      problem = "a ttl that is not a finite number >= 0";
    else
      got.ttl = ttl;
  }
  if (!lua_isnil(L, -2)) {
    if (res)
      got.cacheable = lua_toboolean(L, -2);
    else
      got.keep_query = lua_toboolean(L, -2);
  }
  if (!lua_isnil(L, -1))
    got.bypass = lua_toboolean(L, -1);
  lua_settop(L, 0);
  if (problem) {
    fe_lua_count_error(F);
    fe_error("cache hook (resource %.*s, client %.*s): refused %s", (int)req->resource.len,
             req->resource.p, (int)req->client_ip.len, req->client_ip.p, problem);
    return -1;
  }
  *out = got;
  return 0;
}

/* ---- FFI entry points ---------------------------------------------------------------------- */

/* Lua finds the library's C side (fe_lua_ffi.c) by name only: referenced here, so that the linker
 * keeps it in every program that opens a state. */
__attribute__((used)) static const void *const fe_lua_ffi_keep[] = {
    (const void *)fe_lua_ffi_b64url_decode, (const void *)fe_lua_ffi_b64url_encode,
    (const void *)fe_lua_ffi_ct_equal,      (const void *)fe_lua_ffi_digits,
    (const void *)fe_lua_ffi_dir_len,       (const void *)fe_lua_ffi_blank,
    (const void *)fe_lua_ffi_query_arg,     (const void *)fe_lua_ffi_ip_parse,
    (const void *)fe_lua_ffi_ip_in,         (const void *)fe_lua_ffi_referer_host,
    (const void *)fe_lua_ffi_suffix_in,     (const void *)fe_lua_ffi_find_any,
};

int fe_lua_req_header(const fe_req_view *r, const char *name, size_t nlen, const char **out, size_t *len) {
  const fe_span *v = fe_header_find(r->base, r->headers, r->nheaders, name, nlen);
  if (!v)
    return -1;
  *out = r->base + v->off;
  *len = v->len;
  return 0;
}

int fe_lua_req_country(fe_req_view *r) {
  if (r->country_state == 0) {
    char ip[64];
    size_t n = r->client_ip.len < sizeof(ip) - 1 ? r->client_ip.len : sizeof(ip) - 1;
    memcpy(ip, r->client_ip.p, n);
    ip[n] = 0;
    r->country_state = r->geo && fe_geo_country(r->geo, ip, r->country) == 0 ? 1 : -1;
  }
  return r->country_state;
}
