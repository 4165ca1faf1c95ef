/*
 * fe_policy_micro: the access phase of a config's policies called in a loop, without sockets: the
 * server's own path (fe_lua_access: budget hook, memory limit, sandbox, request view, FFI reads),
 * timed per call. What policy_bench.py's wrk figures hold besides TCP and HTTP, measured without
 * their noise, and small enough for callgrind. Run by tests/bench/policy_bench.py (--micro).
 *
 *   fe_policy_micro -c flvedge.lua -n NRES [-g geo.mmdb] [-a CLIENT_IP] [-i ITER] [-r ROUNDS]
 *                   [-m server|budget|bare] [-H 'Name: value']... LABEL,RESOURCE,PATH,QUERY,EXPECT...
 *
 * -m says how much of the sandbox is there, to state its cost on its own:
 *   server  fe_lua_access, as the server calls it: a fresh budget per call (count hook, meter,
 *           deadline), the memory limit (fe_lua_alloc), the library paying its work (the default);
 *   budget  the same Lua (boot.lua, the sandboxed policies, the library paying its work into a
 *           meter) in a plain state: no count hook, LuaJIT's own allocator, lua_pcall;
 *   bare    as budget, with the library's payments (flvedge.budget.charge) a no-op.
 *
 * RESOURCE is the config's resource index from 0; EXPECT is 0 (admitted) or 1 (denied): a call
 * that answers otherwise stops the run. Prints, per round and case, "round R LABEL NS ns/call";
 * rounds interleave the cases. The time is the thread's CPU time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "geo/fe_geo.h"
#include "lua/fe_lua.h"

#define FE_MICRO_MAX_CASES 16
#define FE_MICRO_MAX_HEADERS 16

typedef struct fe_micro_case {
  char label[64];
  int resource;
  int expect;
  char path[256], query[512];
} fe_micro_case;

/* The thread's CPU time: on a shared machine, time another process ran is not ours. */
static double fe_micro_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int fe_micro_parse_case(const char *arg, fe_micro_case *c) {
  char buf[1024];
  snprintf(buf, sizeof(buf), "%s", arg);
  char *f[5] = {0};
  char *p = buf;
  for (int i = 0; i < 5; i++) {
    char *comma = i < 4 ? strchr(p, ',') : NULL;
    if (i < 4 && !comma)
      return -1;
    if (comma)
      *comma = 0;
    f[i] = p;
    p = comma ? comma + 1 : p;
  }
  snprintf(c->label, sizeof(c->label), "%.63s", f[0]);
  c->resource = atoi(f[1]);
  snprintf(c->path, sizeof(c->path), "%.255s", f[2]);
  snprintf(c->query, sizeof(c->query), "%.511s", f[3]);
  c->expect = atoi(f[4]);
  return 0;
}

/* FLVEDGE_LUA_DIR / FLVEDGE_POLICY_DIR, as the server reads them (another tree's Lua, to compare). */
static const char *fe_micro_dir(const char *env, const char *def) {
  const char *v = getenv(env);
  return v && *v ? v : def;
}

/* The same as fe_lua_call_interpreted (fe_lua.c): operator code runs called from C. */
static int fe_micro_call(lua_State *L) {
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* A plain state running boot.lua as fe_lua_open does, minus the limits. Returns the state with
 * boot.access in the registry at *access, or NULL. */
static lua_State *fe_micro_plain(const char *config, int nres, int bare, fe_lua_meter *meter,
                                 int *access) {
  const char *lua_dir = fe_micro_dir("FLVEDGE_LUA_DIR", FE_LUA_DIR);
  char path[4096];
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (bare) {
    /* flvedge.budget with nothing bound: charge() does nothing (what busted runs with). */
    snprintf(path, sizeof(path),
             "package.preload['flvedge.budget'] = function() local B = dofile('%s/flvedge/budget.lua'); "
             "B.bind = function() end; return B end",
             lua_dir);
    luaL_dostring(L, path);
  }
  snprintf(path, sizeof(path), "%s/flvedge/boot.lua", lua_dir);
  if (luaL_loadfile(L, path) || lua_pcall(L, 0, 1, 0)) {
    fprintf(stderr, "fe_policy_micro: %s\n", lua_tostring(L, -1));
    return NULL;
  }
  lua_getfield(L, -1, "load");
  lua_pushstring(L, config);
  lua_pushnil(L);
  lua_pushinteger(L, nres);
  lua_pushstring(L, lua_dir);
  lua_pushstring(L, fe_micro_dir("FLVEDGE_POLICY_DIR", FE_POLICY_DIR));
  lua_newtable(L);
  lua_getglobal(L, "string");
  const char *fns[] = {"find", "match", "gmatch", "gsub"};
  for (int i = 0; i < 4; i++) {
    lua_getfield(L, -1, fns[i]);
    lua_setfield(L, -3, fns[i]);
  }
  lua_pop(L, 1);
  lua_pushnumber(L, (lua_Number)(uintptr_t)meter);
  lua_setfield(L, -2, "meter");
  lua_pushnumber(L, (lua_Number)(64 << 20));
  lua_setfield(L, -2, "memory_limit");
  lua_pushcfunction(L, fe_micro_call);
  lua_setfield(L, -2, "call");
  if (lua_pcall(L, 6, 1, 0)) {
    fprintf(stderr, "fe_policy_micro: %s\n", lua_tostring(L, -1));
    return NULL;
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "access");
  *access = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return L;
}

/* boot.access(i, id, view) in the plain state: 0 admitted, 1 denied, -1 failed. */
static int fe_micro_plain_access(lua_State *L, int access, fe_lua_meter *meter, int resource,
                                 uint64_t id, fe_req_view *v) {
  meter->left = INT64_MAX / 2;
  meter->active = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, access);
  lua_pushinteger(L, resource + 1);
  lua_pushnumber(L, (lua_Number)id);
  lua_pushnumber(L, (lua_Number)(uintptr_t)v);
  int rc = lua_pcall(L, 3, 3, 0);
  meter->active = 0;
  if (rc) {
    fprintf(stderr, "fe_policy_micro: %s\n", lua_tostring(L, -1));
    lua_settop(L, 0);
    return -1;
  }
  rc = lua_isnil(L, -3) ? 0 : 1;
  lua_settop(L, 0);
  return rc;
}

int main(int argc, char **argv) {
  const char *config = NULL, *geo = NULL, *ip = "127.0.0.1", *mode = "server";
  int nres = 0, rounds = 5;
  long iters = 200000;
  char heads[4096];
  size_t hlen = 0;
  fe_header hdr[FE_MICRO_MAX_HEADERS];
  int nhdr = 0;
  fe_micro_case cases[FE_MICRO_MAX_CASES];
  int ncases = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] == '-' && i + 1 < argc) {
      const char *v = argv[++i];
      if (!strcmp(a, "-c"))
        config = v;
      else if (!strcmp(a, "-n"))
        nres = atoi(v);
      else if (!strcmp(a, "-g"))
        geo = v;
      else if (!strcmp(a, "-a"))
        ip = v;
      else if (!strcmp(a, "-i"))
        iters = atol(v);
      else if (!strcmp(a, "-r"))
        rounds = atoi(v);
      else if (!strcmp(a, "-m"))
        mode = v;
      else if (!strcmp(a, "-H") && nhdr < FE_MICRO_MAX_HEADERS) {
        const char *colon = strchr(v, ':');
        size_t n = strlen(v);
        if (!colon || hlen + n > sizeof(heads))
          goto usage;
        memcpy(heads + hlen, v, n);
        size_t name = (size_t)(colon - v), val = name + 1;
        while (val < n && v[val] == ' ')
          val++;
        hdr[nhdr].name = (fe_span){(uint32_t)hlen, (uint32_t)name};
        hdr[nhdr].value = (fe_span){(uint32_t)(hlen + val), (uint32_t)(n - val)};
        nhdr++;
        hlen += n;
      } else
        goto usage;
    } else if (a[0] != '-' && ncases < FE_MICRO_MAX_CASES) {
      if (fe_micro_parse_case(a, &cases[ncases++]) != 0)
        goto usage;
    } else
      goto usage;
  }
  if (!config || nres <= 0 || ncases == 0)
    goto usage;

  int server = !strcmp(mode, "server"), bare = !strcmp(mode, "bare");
  if (!server && !bare && strcmp(mode, "budget"))
    goto usage;
  fe_lua_opts opts = {.config_path = config,
                      .nresources = nres,
                      .lua_dir = fe_micro_dir("FLVEDGE_LUA_DIR", FE_LUA_DIR),
                      .policy_dir = fe_micro_dir("FLVEDGE_POLICY_DIR", FE_POLICY_DIR),
                      .budget = 1000000,
                      .geoip_db = geo};
  char err[512];
  fe_lua *L = NULL;
  lua_State *P = NULL;
  fe_geo *G = NULL;
  static fe_lua_meter meter;
  int access = 0;
  if (server)
    L = fe_lua_open(&opts, err, sizeof(err));
  else if (!(P = fe_micro_plain(config, nres, bare, &meter, &access)))
    return 1;
  if (server && !L) {
    fprintf(stderr, "fe_policy_micro: %s\n", err);
    return 1;
  }
  if (!server && geo && !(G = fe_geo_open(geo, err, sizeof(err)))) {
    fprintf(stderr, "fe_policy_micro: %s\n", err);
    return 1;
  }
  fe_req_view v = {.base = heads, .headers = hdr, .nheaders = nhdr, .geo = G};
  v.method = (fe_str){"GET", 3};
  v.host = (fe_str){"127.0.0.1", 9};
  v.client_ip = (fe_str){ip, strlen(ip)};
  v.server_ip = (fe_str){"127.0.0.1", 9};
  uint64_t id = 1;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < ncases; k++) {
      fe_micro_case *c = &cases[k];
      v.path = (fe_str){c->path, strlen(c->path)};
      v.query = (fe_str){c->query, strlen(c->query)};
      v.resource = (fe_str){c->label, strlen(c->label)};
      double t0 = fe_micro_now();
      for (long n = 0; n < iters; n++) {
        fe_lua_deny deny;
        v.time = (double)time(NULL);
        v.country_state = 0; /* each request looks its country up again, as a new one would */
        int rc;
        if (server) {
          rc = fe_lua_access(L, c->resource, id++, &v, &deny);
          if (rc == 1)
            fe_lua_deny_free(&deny);
        } else {
          rc = fe_micro_plain_access(P, access, &meter, c->resource, id++, &v);
        }
        if (rc != c->expect) {
          fprintf(stderr, "fe_policy_micro: %s: access returned %d, expected %d\n", c->label, rc,
                  c->expect);
          return 1;
        }
      }
      double ns = (fe_micro_now() - t0) / (double)iters;
      printf("round %d %s %.1f ns/call\n", r + 1, c->label, ns);
      fflush(stdout);
    }
  }
  fe_lua_unref(L);
  if (P)
    lua_close(P);
  fe_geo_close(G);
  return 0;
usage:
  fprintf(stderr, "usage: fe_policy_micro -c CONFIG -n NRES [-g GEO] [-a IP] [-i ITER] [-r ROUNDS] "
                  "[-m server|budget|bare] [-H 'Name: value']... LABEL,RESOURCE,PATH,QUERY,EXPECT...\n");
  return 2;
}
