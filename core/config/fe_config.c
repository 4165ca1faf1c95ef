/*
 * The config file is trusted operator code: it runs in a throwaway LuaJIT state that is closed as
 * soon as the table has been copied into plain C structs, so nothing on the request path touches it.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include "config/fe_config.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/fe_log.h"
#include "net/fe_tls.h"
#include "str/fe_str.h"

#define FE_STR_(x) #x
#define FE_STRINGIFY(x) FE_STR_(x)

typedef struct fe_cfg_reader {
  lua_State *L;
  char *err;
  size_t errlen;
  const char *dir; /* directory of the config file, with trailing '/' */
  struct fe_tls_clients *tls; /* where https origins' client contexts come from */
} fe_cfg_reader;

static int fe_cfg_fail(fe_cfg_reader *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, r->errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static char *fe_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* Makes a relative path absolute against the config's directory. */
static char *fe_cfg_path(const fe_cfg_reader *r, const char *p) {
  if (p[0] == '/' || !r->dir)
    return fe_strdup(p);
  size_t a = strlen(r->dir), b = strlen(p);
  char *s = malloc(a + b + 1);
  if (!s)
    return NULL;
  memcpy(s, r->dir, a);
  memcpy(s + a, p, b + 1);
  return s;
}

/* Reads t[key] (t at stack index idx) into *out. Absent keeps the default. */
static int fe_cfg_number(fe_cfg_reader *r, int idx, const char *where, const char *key, double min,
                         double max, double *out) {
  lua_getfield(r->L, idx, key);
  int rc = 0;
  if (!lua_isnil(r->L, -1)) {
    if (lua_type(r->L, -1) != LUA_TNUMBER)
      rc = fe_cfg_fail(r, "%s%s: expected a number", where, key);
    else {
      double v = lua_tonumber(r->L, -1);
      if (!(v >= min && v <= max)) /* NaN too (0/0 in the file) */
        rc = fe_cfg_fail(r, "%s%s: %g is out of range [%g, %g]", where, key, v, min, max);
      else
        *out = v;
    }
  }
  lua_pop(r->L, 1);
  return rc;
}

static int fe_cfg_u32(fe_cfg_reader *r, int idx, const char *where, const char *key, double min,
                      double max, uint32_t *out) {
  double v = *out;
  if (fe_cfg_number(r, idx, where, key, min, max, &v) < 0)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* Reads a string field; *out stays as it is when absent. allow_false stores NULL for `false`. */
static int fe_cfg_string(fe_cfg_reader *r, int idx, const char *where, const char *key,
                         int allow_false, char **out) {
  lua_getfield(r->L, idx, key);
  int rc = 0;
  int t = lua_type(r->L, -1);
  if (t == LUA_TSTRING) {
    free(*out);
    *out = fe_strdup(lua_tostring(r->L, -1));
  } else if (t == LUA_TBOOLEAN && allow_false && !lua_toboolean(r->L, -1)) {
    free(*out);
    *out = NULL;
  } else if (t != LUA_TNIL) {
    rc = fe_cfg_fail(r, "%s%s: expected a string", where, key);
  }
  lua_pop(r->L, 1);
  return rc;
}

static void fe_resource_defaults(fe_resource *res) {
  memset(res, 0, sizeof(*res));
  res->host = fe_strdup("*");
  res->prefix = fe_strdup("/");
  res->max_viewers_per_stream = 10000;
  res->window_seconds = 5;
  res->window_bytes = 64u << 20;
  res->merge_ms = 60;
  res->merge_auto = 1;
  res->linger = 10;
  res->slow_viewer_timeout = 10;
  res->origin_connect_timeout = 5;
  res->origin_read_timeout = 10;
  res->origin_recheck = 5;
  res->max_tag_size = 16u << 20;
  res->send_buffer = 256u << 10;
  res->cache_max_size = 10ull << 30;
  res->cache_ttl = 3600;
  res->slice_size = 10u << 20;
  res->start_unit = FE_START_BYTES;
}

static void fe_config_defaults(fe_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->log_level = FE_LOG_INFO;
  cfg->cors_origin = fe_strdup("*");
  cfg->max_stream_series = 1000;
  cfg->access_log_buffer = 8u << 20;
  cfg->max_viewers = 20000;
  cfg->max_connections = 30000;
  cfg->max_streams = 1000;
  cfg->max_window_memory = 1ull << 30;
  cfg->request_timeout = 10;
  cfg->send_timeout = 60;
  cfg->max_header_size = 8192;
  cfg->h2_max_streams = 100;
  cfg->h2_control_rate = 100;
  cfg->lua_budget = 1000000;
  cfg->lua_memory_limit = 64u << 20;
}

/* merge_ms: a number of milliseconds, or "auto" (the default). */
static int fe_cfg_merge(fe_cfg_reader *r, int idx, const char *where, fe_resource *res) {
  lua_getfield(r->L, idx, "merge_ms");
  int t = lua_type(r->L, -1);
  int auto_ = t == LUA_TSTRING && strcmp(lua_tostring(r->L, -1), "auto") == 0;
  lua_pop(r->L, 1);
  if (auto_ || t == LUA_TNIL)
    return 0;
  if (fe_cfg_u32(r, idx, where, "merge_ms", 0, 10000, &res->merge_ms) < 0) {
    if (t == LUA_TSTRING)
      fe_cfg_fail(r, "%smerge_ms: expected \"auto\" or a number of milliseconds", where);
    return -1;
  }
  res->merge_auto = 0;
  return 0;
}

/* An http:// or https:// origin goes into request lines as it is: visible ASCII only (origin/
 * checks the whole URL again before any request). */
static int fe_cfg_http_origin(const char *o) {
  size_t s = strncmp(o, "http://", 7) == 0 ? 7 : strncmp(o, "https://", 8) == 0 ? 8 : 0;
  return s && o[s] && fe_str_visible(o, strlen(o));
}

static int fe_cfg_origin_ok(const char *o) {
  return strncmp(o, "file:", 5) == 0 || fe_cfg_http_origin(o);
}

/* An https origin's client context: the resource's ca_file (else the global one, else the
 * system's), or none verified with tls_verify = false. Made here, never by a loop: reading a CA
 * bundle takes milliseconds. A resource with a policy gets one even when its configured origins
 * are http, as its origin hook may answer an https URL; if that context cannot be made, the load
 * goes on and only such URLs fail (at connect, logged). */
static int fe_cfg_origin_tls(fe_cfg_reader *r, int idx, const char *where, const char *global_ca,
                             fe_resource *res) {
  char *ca = NULL;
  int verify = 1;
  lua_getfield(r->L, idx, "tls_verify");
  int t = lua_type(r->L, -1);
  if (t == LUA_TBOOLEAN)
    verify = lua_toboolean(r->L, -1);
  lua_pop(r->L, 1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    return fe_cfg_fail(r, "%stls_verify: expected true or false", where);
  if (fe_cfg_string(r, idx, where, "ca_file", 0, &ca) < 0)
    return -1;
  int https = res->origin && strncmp(res->origin, "https://", 8) == 0;
  for (int i = 0; i < res->nbackups; i++)
    https |= strncmp(res->backups[i], "https://", 8) == 0;
  if (!https && !(res->has_policy && res->origin)) {
    free(ca);
    return 0;
  }
  char *abs = ca ? fe_cfg_path(r, ca) : NULL;
  char err[256];
  res->origin_tls = fe_tls_client_get(r->tls, abs ? abs : global_ca, verify, err, sizeof(err));
  free(abs);
  free(ca);
  if (!res->origin_tls && !https) {
    fe_warn("%s%s: https origins from its policy will fail", where, err);
    return 0;
  }
  return res->origin_tls ? 0 : fe_cfg_fail(r, "%s%s", where, err);
}

/* A size: a number of bytes, or a string "N", "NK", "NM", "NG" or "NT" (binary units). */
static int fe_cfg_size(fe_cfg_reader *r, int idx, const char *where, const char *key, double min,
                       double max, uint64_t *out) {
  lua_getfield(r->L, idx, key);
  int t = lua_type(r->L, -1);
  double v = (double)*out;
  int rc = 0;
  if (t == LUA_TSTRING) {
    const char *s = lua_tostring(r->L, -1);
    char *end;
    v = strtod(s, &end);
    static const char units[] = "KMGT";
    const char *u = *end ? strchr(units, *end == 'k' ? 'K' : *end) : NULL;
    if (end == s || (*end && (!u || end[1])))
      rc = fe_cfg_fail(r, "%s%s: \"%s\" is not a size (bytes, or a number with K, M, G or T)",
                       where, key, s);
    else if (u)
      v *= (double)(1ull << (10 * (u - units + 1)));
  } else if (t == LUA_TNUMBER) {
    v = lua_tonumber(r->L, -1);
  } else if (t != LUA_TNIL) {
    rc = fe_cfg_fail(r, "%s%s: expected a number of bytes or a string like \"10G\"", where, key);
  }
  lua_pop(r->L, 1);
  if (rc == 0 && t != LUA_TNIL) {
    if (!(v >= min && v <= max))
      return fe_cfg_fail(r, "%s%s: %.0f is out of range [%.0f, %.0f]", where, key, v, min, max);
    *out = (uint64_t)v;
  }
  return rc;
}

/* A boolean; absent leaves *out as it is. */
static int fe_cfg_bool(fe_cfg_reader *r, int idx, const char *where, const char *key, int *out) {
  lua_getfield(r->L, idx, key);
  int t = lua_type(r->L, -1), rc = 0;
  if (t == LUA_TBOOLEAN)
    *out = lua_toboolean(r->L, -1);
  else if (t != LUA_TNIL)
    rc = fe_cfg_fail(r, "%s%s: expected true or false", where, key);
  lua_pop(r->L, 1);
  return rc;
}

/* One origin of a group: a live resource's file: sources are made absolute. NULL when refused
 * (the message is set). */
static char *fe_cfg_one_origin(fe_cfg_reader *r, const char *where, const char *key, const char *o,
                               int vod) {
  if (vod ? !fe_cfg_http_origin(o) : !fe_cfg_origin_ok(o)) {
    fe_cfg_fail(r, vod ? "%s%s: expected \"http[s]://host[:port]/path/\" (visible ASCII)"
                       : "%s%s: expected \"http[s]://host[:port]/path\" or \"file:PATH\"",
                where, key);
    return NULL;
  }
  if (strncmp(o, "file:", 5) != 0)
    return fe_strdup(o);
  char *abs = fe_cfg_path(r, o + 5);
  size_t n = strlen(abs);
  char *out = malloc(n + 6);
  memcpy(out, "file:", 5);
  memcpy(out + 5, abs, n + 1);
  free(abs);
  return out;
}

/* `origin`: a URL, or a list of them (the primary, then the backups in order). */
static int fe_cfg_origins(fe_cfg_reader *r, int idx, const char *where, fe_resource *res, int vod) {
  lua_getfield(r->L, idx, "origin");
  int t = lua_type(r->L, -1), rc = 0;
  if (t == LUA_TSTRING) {
    res->origin = fe_cfg_one_origin(r, where, "origin", lua_tostring(r->L, -1), vod);
    rc = res->origin ? 0 : -1;
  } else if (t == LUA_TTABLE) {
    int n = (int)lua_objlen(r->L, -1);
    if (n < 1 || n > 64) {
      rc = fe_cfg_fail(r, "%sorigin: a list of 1 to 64 origin URLs", where);
    } else {
      res->backups = calloc((size_t)n, sizeof(char *));
      for (int i = 1; i <= n && rc == 0; i++) {
        lua_rawgeti(r->L, -1, i);
        char key[32];
        snprintf(key, sizeof(key), "origin[%d]", i);
        char *o = lua_type(r->L, -1) == LUA_TSTRING
                      ? fe_cfg_one_origin(r, where, key, lua_tostring(r->L, -1), vod)
                      : NULL;
        if (!o && lua_type(r->L, -1) != LUA_TSTRING)
          fe_cfg_fail(r, "%s%s: expected a URL string", where, key);
        lua_pop(r->L, 1);
        if (!o)
          rc = -1;
        else if (i == 1)
          res->origin = o;
        else
          res->backups[res->nbackups++] = o;
      }
    }
  } else {
    rc = fe_cfg_fail(r, vod ? "%sorigin: expected \"http[s]://host[:port]/path/\" or a list of them"
                            : "%sorigin: expected \"http[s]://host[:port]/path\", \"file:PATH\" or a list of them",
                     where);
  }
  lua_pop(r->L, 1);
  return rc;
}

/* A vod resource: an http:// origin (the client path under the prefix is appended to it), a
 * cache directory, and the cache's sizes and times. */
static int fe_cfg_vod(fe_cfg_reader *r, int idx, const char *where, fe_resource *res) {
  char *unit = NULL, *dir = NULL;
  if (fe_cfg_origins(r, idx, where, res, 1) < 0 ||
      fe_cfg_string(r, idx, where, "cache_dir", 0, &dir) < 0 ||
      fe_cfg_string(r, idx, where, "start_unit", 0, &unit) < 0)
    goto fail;
  if (!dir || !*dir) {
    fe_cfg_fail(r, "%scache_dir: missing (the directory the cache keeps its files in)", where);
    goto fail;
  }
  res->cache_dir = fe_cfg_path(r, dir);
  if (unit && strcmp(unit, "bytes") != 0 && strcmp(unit, "seconds") != 0) {
    fe_cfg_fail(r, "%sstart_unit: expected \"bytes\" or \"seconds\"", where);
    goto fail;
  }
  res->start_unit = unit && strcmp(unit, "seconds") == 0 ? FE_START_SECONDS : FE_START_BYTES;
  if (fe_cfg_size(r, idx, where, "cache_max_size", 1 << 20, 1125899906842624.0, &res->cache_max_size) < 0 ||
      fe_cfg_size(r, idx, where, "slice_size", FE_SLICE_SIZE_MIN, FE_SLICE_SIZE_MAX,
                   &res->slice_size) < 0 ||
      fe_cfg_number(r, idx, where, "cache_ttl", 0, 315360000, &res->cache_ttl) < 0 ||
      fe_cfg_number(r, idx, where, "origin_connect_timeout", 0.1, 600, &res->origin_connect_timeout) < 0 ||
      fe_cfg_number(r, idx, where, "origin_read_timeout", 0.1, 3600, &res->origin_read_timeout) < 0)
    goto fail;
  if (res->cache_max_size < 2 * res->slice_size) {
    fe_cfg_fail(r, "%scache_max_size: must hold at least two slices (%llu bytes)", where,
                (unsigned long long)(2 * res->slice_size));
    goto fail;
  }
  free(dir);
  free(unit);
  return 0;
fail:
  free(dir);
  free(unit);
  return -1;
}

static int fe_cfg_resource(fe_cfg_reader *r, int i, fe_resource *res, const char *global_ca) {
  char where[64];
  int idx = lua_gettop(r->L);
  char *type = NULL;
  snprintf(where, sizeof(where), "resources[%d].", i);
  if (fe_cfg_string(r, idx, where, "name", 0, &res->name) < 0 ||
      fe_cfg_string(r, idx, where, "host", 0, &res->host) < 0 ||
      fe_cfg_string(r, idx, where, "prefix", 0, &res->prefix) < 0 ||
      fe_cfg_string(r, idx, where, "type", 0, &type) < 0)
    goto fail;
  lua_getfield(r->L, idx, "policy");
  int pt = lua_type(r->L, -1);
  lua_pop(r->L, 1);
  if (pt != LUA_TNIL && pt != LUA_TSTRING && pt != LUA_TTABLE && pt != LUA_TFUNCTION) {
    fe_cfg_fail(r, "%spolicy: expected a module name, a .lua file or a policy table", where);
    goto fail;
  }
  res->has_policy = pt != LUA_TNIL;
  lua_getfield(r->L, idx, "policy_settings");
  pt = lua_type(r->L, -1);
  lua_pop(r->L, 1);
  if (pt != LUA_TNIL && pt != LUA_TTABLE) {
    fe_cfg_fail(r, "%spolicy_settings: expected a table", where);
    goto fail;
  }
  if (!res->name) {
    char n[32];
    snprintf(n, sizeof(n), "resource%d", i);
    res->name = fe_strdup(n);
  }
  if (res->prefix[0] != '/') {
    fe_cfg_fail(r, "%sprefix: must start with '/'", where);
    goto fail;
  }
  if (!type) {
    fe_cfg_fail(r, "%stype: missing (\"live\", \"vod\" or \"static\")", where);
    goto fail;
  }
  if (strcmp(type, "live") == 0) {
    res->type = FE_RES_LIVE;
    double bytes = (double)res->window_bytes;
    char *slate = NULL;
    if (fe_cfg_origins(r, idx, where, res, 0) < 0 ||
        fe_cfg_string(r, idx, where, "slate", 0, &slate) < 0)
      goto fail;
    if (slate) {
      /* "file:PATH" or a bare path: an FLV file played as a live stream */
      const char *path = strncmp(slate, "file:", 5) == 0 ? slate + 5 : slate;
      if (!*path) {
        free(slate);
        fe_cfg_fail(r, "%sslate: expected \"file:PATH\" (an FLV file) or a path", where);
        goto fail;
      }
      char *abs = fe_cfg_path(r, path);
      size_t n = strlen(abs);
      res->slate = malloc(n + 6);
      memcpy(res->slate, "file:", 5);
      memcpy(res->slate + 5, abs, n + 1);
      free(abs);
      free(slate);
    }
    lua_getfield(r->L, idx, "failover_on_end");
    int fb = lua_type(r->L, -1);
    res->failover_on_end = lua_toboolean(r->L, -1);
    lua_pop(r->L, 1);
    if (fb != LUA_TNIL && fb != LUA_TBOOLEAN) {
      fe_cfg_fail(r, "%sfailover_on_end: expected true or false", where);
      goto fail;
    }
    if (fe_cfg_u32(r, idx, where, "max_viewers_per_stream", 1, 1e7, &res->max_viewers_per_stream) < 0 ||
        fe_cfg_number(r, idx, where, "window_seconds", 0, 3600, &res->window_seconds) < 0 ||
        fe_cfg_number(r, idx, where, "window_bytes", 65536, 4294967295.0, &bytes) < 0 ||
        fe_cfg_merge(r, idx, where, res) < 0 ||
        fe_cfg_number(r, idx, where, "linger", 0, 86400, &res->linger) < 0 ||
        fe_cfg_number(r, idx, where, "slow_viewer_timeout", 0.1, 3600, &res->slow_viewer_timeout) < 0 ||
        fe_cfg_number(r, idx, where, "origin_connect_timeout", 0.1, 600, &res->origin_connect_timeout) < 0 ||
        fe_cfg_number(r, idx, where, "origin_read_timeout", 0.1, 3600, &res->origin_read_timeout) < 0 ||
        fe_cfg_number(r, idx, where, "origin_recheck", 0, 86400, &res->origin_recheck) < 0 ||
        fe_cfg_u32(r, idx, where, "max_tag_size", 1024, 1 << 30, &res->max_tag_size) < 0 ||
        fe_cfg_u32(r, idx, where, "send_buffer", 0, 1 << 30, &res->send_buffer) < 0 ||
        fe_cfg_bool(r, idx, where, "stamp_time", &res->stamp_time) < 0)
      goto fail;
    res->window_bytes = (size_t)bytes;
  } else if (strcmp(type, "static") == 0) {
    res->type = FE_RES_STATIC;
    char *root = NULL;
    if (fe_cfg_string(r, idx, where, "root", 0, &root) < 0)
      goto fail;
    if (!root) {
      fe_cfg_fail(r, "%sroot: missing (the directory to serve)", where);
      goto fail;
    }
    res->root = fe_cfg_path(r, root);
    free(root);
  } else if (strcmp(type, "vod") == 0) {
    res->type = FE_RES_VOD;
    if (fe_cfg_vod(r, idx, where, res) < 0)
      goto fail;
  } else {
    fe_cfg_fail(r, "%stype: \"%s\" is not a resource type (\"live\", \"vod\" or \"static\")",
                where, type);
    goto fail;
  }
  if (fe_cfg_origin_tls(r, idx, where, global_ca, res) < 0)
    goto fail;
  free(type);
  return 0;
fail:
  free(type);
  return -1;
}

/* Both set, a token hard enough to guess (visible ASCII: it travels in a header). */
static int fe_admin_check(const char *listen, const char *token, const char *where, char *err,
                          size_t errlen) {
  const char *why = NULL;
  if (!listen)
    why = "listen: missing (the admin API's own \"host:port\")";
  else if (!token)
    why = "token: missing (the Bearer token every admin request must carry)";
  else if (strlen(token) < FE_ADMIN_TOKEN_MIN)
    why = "token: too short: at least " FE_STRINGIFY(FE_ADMIN_TOKEN_MIN) " characters";
  else if (!fe_str_visible(token, strlen(token)))
    why = "token: only visible ASCII characters (no spaces or control bytes)";
  if (why)
    snprintf(err, errlen, "%s%s", where, why);
  return why ? -1 : 0;
}

/* admin = { listen = "host:port", token = "..." }: a misspelt key is refused, not ignored, as
 * a forgotten token would otherwise fail open or shut without saying why. */
static int fe_cfg_admin(fe_cfg_reader *r, fe_config *cfg, int idx) {
  lua_pushnil(r->L);
  while (lua_next(r->L, idx)) {
    int known = lua_type(r->L, -2) == LUA_TSTRING && (strcmp(lua_tostring(r->L, -2), "listen") == 0 ||
                                                      strcmp(lua_tostring(r->L, -2), "token") == 0);
    if (!known) {
      lua_pop(r->L, 2);
      return fe_cfg_fail(r, "admin: unknown key (expected listen and token)");
    }
    lua_pop(r->L, 1);
  }
  if (fe_cfg_string(r, idx, "admin.", "listen", 0, &cfg->admin_listen) < 0 ||
      fe_cfg_string(r, idx, "admin.", "token", 0, &cfg->admin_token) < 0)
    return -1;
  return fe_admin_check(cfg->admin_listen, cfg->admin_token, "admin.", r->err, r->errlen);
}

/* tls = { cert = "a.pem", key = "a.key", sni = { ["b.example"] = { cert = ..., key = ... } } }:
 * the certificates are loaded now, so a file that does not load fails the (re)load. */
static int fe_cfg_tls(fe_cfg_reader *r, int idx, const char *where, struct fe_tls_server **out) {
  enum { FE_MAX_SNI = 64 };
  fe_tls_cert_spec specs[FE_MAX_SNI + 1];
  char *strs[3 * (FE_MAX_SNI + 1)];
  int nstr = 0, n = 0, rc = -1;
  char w[160];
  memset(specs, 0, sizeof(specs));
  lua_pushnil(r->L);
  while (lua_next(r->L, idx)) {
    const char *k = lua_type(r->L, -2) == LUA_TSTRING ? lua_tostring(r->L, -2) : "";
    int known = strcmp(k, "cert") == 0 || strcmp(k, "key") == 0 || strcmp(k, "sni") == 0 ||
                strcmp(k, "http2") == 0;
    lua_pop(r->L, 1);
    if (!known) {
      lua_pop(r->L, 1);
      return fe_cfg_fail(r, "%sunknown key (expected cert, key, sni and http2)", where);
    }
  }
  /* specs[0]: the default certificate; then one per SNI name */
  for (int pass = 0; pass < 2; pass++) {
    int ti = idx;
    if (pass == 1) {
      lua_getfield(r->L, idx, "sni");
      if (lua_isnil(r->L, -1)) {
        lua_pop(r->L, 1);
        break;
      }
      if (lua_type(r->L, -1) != LUA_TTABLE) {
        lua_pop(r->L, 1);
        fe_cfg_fail(r, "%ssni: expected a table of name = { cert = ..., key = ... }", where);
        goto done;
      }
      ti = lua_gettop(r->L);
      lua_pushnil(r->L);
    }
    while (pass == 0 || lua_next(r->L, ti)) {
      int ci = pass == 0 ? idx : lua_gettop(r->L);
      const char *name = pass == 0 ? NULL : lua_type(r->L, -2) == LUA_TSTRING ? lua_tostring(r->L, -2) : "";
      snprintf(w, sizeof(w), pass == 0 ? "%s" : "%ssni[\"%s\"].", where, name ? name : "");
      if (pass == 1 && (!*name || lua_type(r->L, -1) != LUA_TTABLE || n > FE_MAX_SNI)) {
        lua_pop(r->L, 3);
        fe_cfg_fail(r, n > FE_MAX_SNI ? "%stoo many names" : "%s: expected name = { cert = ..., key = ... }", w);
        goto done;
      }
      char *cert = NULL, *key = NULL;
      if (fe_cfg_string(r, ci, w, "cert", 0, &cert) < 0 || fe_cfg_string(r, ci, w, "key", 0, &key) < 0 ||
          ((!cert || !key) && fe_cfg_fail(r, "%s%s: missing", w, !cert ? "cert" : "key"))) {
        free(cert);
        free(key);
        if (pass == 1)
          lua_pop(r->L, 3);
        goto done;
      }
      specs[n].cert = strs[nstr++] = fe_cfg_path(r, cert);
      specs[n].key = strs[nstr++] = fe_cfg_path(r, key);
      specs[n].name = name ? (strs[nstr++] = fe_strdup(name)) : NULL;
      n++;
      free(cert);
      free(key);
      if (pass == 0)
        break;
      lua_pop(r->L, 1);
    }
    if (pass == 1)
      lua_pop(r->L, 1);
  }
  char err[300];
  *out = fe_tls_server_new(specs, n, err, sizeof(err));
  rc = *out ? 0 : fe_cfg_fail(r, "%s%s", where, err);
  if (*out) {
    /* http2 = false: ALPN offers http/1.1 only (HTTP/2 is on by default) */
    lua_getfield(r->L, idx, "http2");
    if (lua_type(r->L, -1) == LUA_TBOOLEAN)
      fe_tls_server_http2(*out, lua_toboolean(r->L, -1));
    else if (!lua_isnil(r->L, -1))
      rc = fe_cfg_fail(r, "%shttp2: expected true or false", where);
    lua_pop(r->L, 1);
  }
done:
  for (int i = 0; i < nstr; i++)
    free(strs[i]);
  return rc;
}

/* A listen entry (on the stack top): "host:port", or { "host:port", tls = { ... } }. */
static int fe_cfg_listen_entry(fe_cfg_reader *r, fe_config *cfg, int i) {
  lua_State *L = r->L;
  int t = lua_type(L, -1);
  if (t == LUA_TSTRING) {
    cfg->listen[cfg->nlisten++] = fe_strdup(lua_tostring(L, -1));
    return 0;
  }
  if (t != LUA_TTABLE)
    return fe_cfg_fail(r, "listen[%d]: expected a \"host:port\" string or { \"host:port\", tls = { ... } }", i);
  int idx = lua_gettop(L);
  lua_rawgeti(L, idx, 1);
  if (lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    return fe_cfg_fail(r, "listen[%d][1]: expected the \"host:port\" string", i);
  }
  cfg->listen[cfg->nlisten++] = fe_strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, idx, "h2c");
  int rc = 0;
  if (lua_type(L, -1) == LUA_TBOOLEAN)
    cfg->listen_h2c[cfg->nlisten - 1] = lua_toboolean(L, -1);
  else if (!lua_isnil(L, -1))
    rc = fe_cfg_fail(r, "listen[%d].h2c: expected true or false", i);
  lua_pop(L, 1);
  if (rc < 0)
    return rc;
  lua_getfield(L, idx, "tls");
  char where[48];
  snprintf(where, sizeof(where), "listen[%d].tls.", i);
  if (lua_type(L, -1) == LUA_TTABLE)
    rc = fe_cfg_tls(r, lua_gettop(L), where, &cfg->listen_tls[cfg->nlisten - 1]);
  else if (!lua_isnil(L, -1))
    rc = fe_cfg_fail(r, "listen[%d].tls: expected a table { cert = ..., key = ..., sni = { ... } }", i);
  lua_pop(L, 1);
  return rc;
}

static int fe_cfg_read(fe_cfg_reader *r, fe_config *cfg) {
  lua_State *L = r->L;
  int top = lua_gettop(L);
  char *level = NULL;

  lua_getfield(L, top, "listen");
  if (lua_type(L, -1) == LUA_TSTRING) {
    cfg->listen = calloc(1, sizeof(char *));
    cfg->listen_tls = calloc(1, sizeof(*cfg->listen_tls));
    cfg->listen_h2c = calloc(1, sizeof(*cfg->listen_h2c));
    cfg->listen[cfg->nlisten++] = fe_strdup(lua_tostring(L, -1));
  } else if (lua_type(L, -1) == LUA_TTABLE) {
    int n = (int)lua_objlen(L, -1);
    int li = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, li)) {
      int bad = lua_type(L, -2) != LUA_TNUMBER;
      lua_pop(L, 1);
      if (bad) {
        lua_pop(L, 1);
        return fe_cfg_fail(r, "listen: expected a list of \"host:port\" strings or "
                              "{ \"host:port\", tls = { ... } } tables");
      }
    }
    cfg->listen = calloc((size_t)n + 1, sizeof(char *));
    cfg->listen_tls = calloc((size_t)n + 1, sizeof(*cfg->listen_tls));
    cfg->listen_h2c = calloc((size_t)n + 1, sizeof(*cfg->listen_h2c));
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      if (fe_cfg_listen_entry(r, cfg, i) < 0)
        return -1;
      lua_pop(L, 1);
    }
  } else {
    return fe_cfg_fail(r, "listen: expected a list of \"host:port\" strings");
  }
  lua_pop(L, 1);
  if (cfg->nlisten == 0)
    return fe_cfg_fail(r, "listen: at least one address is needed");

  if (fe_cfg_string(r, top, "", "log_level", 0, &level) < 0)
    return -1;
  if (level) {
    cfg->log_level = fe_log_parse_level(level);
    free(level);
    if (cfg->log_level < 0)
      return fe_cfg_fail(r, "log_level: expected debug, info, warn or error");
  }
  lua_getfield(L, top, "workers");
  if (lua_type(L, -1) == LUA_TNUMBER) {
    double w = lua_tonumber(L, -1);
    if (!(w >= 1 && w <= 64) || w != (int)w)
      return fe_cfg_fail(r, "workers: expected \"auto\" or a whole number from 1 to 64");
    cfg->workers = (int)w;
  } else if (!(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "auto") == 0) &&
             !lua_isnil(L, -1)) {
    return fe_cfg_fail(r, "workers: expected \"auto\" or a whole number from 1 to 64");
  }
  lua_pop(L, 1);
  char *mode = NULL;
  if (fe_cfg_string(r, top, "", "listen_mode", 0, &mode) < 0)
    return -1;
  if (mode) {
    int ok = strcmp(mode, "reuseport") == 0 || strcmp(mode, "shared") == 0;
    cfg->listen_mode = strcmp(mode, "shared") == 0 ? FE_LISTEN_SHARED : FE_LISTEN_REUSEPORT;
    free(mode);
    if (!ok)
      return fe_cfg_fail(r, "listen_mode: expected \"reuseport\" or \"shared\"");
  }
  char *geo = NULL, *pid = NULL;
  double lua_mem = (double)cfg->lua_memory_limit;
  if (fe_cfg_string(r, top, "", "cors_origin", 1, &cfg->cors_origin) < 0 ||
      fe_cfg_string(r, top, "", "status_prefix", 0, &cfg->status_prefix) < 0 ||
      fe_cfg_string(r, top, "", "access_log", 1, &cfg->access_log) < 0 ||
      fe_cfg_string(r, top, "", "pid_file", 1, &pid) < 0 ||
      fe_cfg_string(r, top, "", "geoip_db", 1, &geo) < 0 ||
      fe_cfg_u32(r, top, "", "lua_budget", 1000, 1e9, &cfg->lua_budget) < 0 ||
      fe_cfg_number(r, top, "", "lua_memory_limit", 1 << 20, 16.0 * (1 << 30), &lua_mem) < 0) {
    free(geo);
    free(pid);
    return -1;
  }
  cfg->lua_memory_limit = (uint64_t)lua_mem;
  if (cfg->status_prefix && (cfg->status_prefix[0] != '/' || !fe_str_visible(cfg->status_prefix, strlen(cfg->status_prefix)))) {
    free(geo);
    free(pid);
    return fe_cfg_fail(r, "status_prefix: expected a path starting with '/' (visible ASCII)");
  }
  char *format = NULL;
  if (fe_cfg_size(r, top, "", "access_log_buffer", 65536, 1 << 30, &cfg->access_log_buffer) < 0 ||
      fe_cfg_string(r, top, "", "access_log_format", 0, &format) < 0) {
    free(geo);
    free(pid);
    return -1;
  }
  if (format) {
    int ok = strcmp(format, "json") == 0 || strcmp(format, "combined") == 0;
    cfg->access_log_format = strcmp(format, "combined") == 0 ? FE_ALOG_COMBINED : FE_ALOG_JSON;
    free(format);
    if (!ok) {
      free(geo);
      free(pid);
      return fe_cfg_fail(r, "access_log_format: expected \"json\" or \"combined\"");
    }
  }
  if (geo)
    cfg->geoip_db = fe_cfg_path(r, geo);
  if (pid)
    cfg->pid_file = fe_cfg_path(r, pid);
  free(geo);
  free(pid);
  char *ca = NULL;
  if (fe_cfg_string(r, top, "", "ca_file", 0, &ca) < 0)
    return -1;
  if (ca)
    cfg->ca_file = fe_cfg_path(r, ca);
  free(ca);
  if (cfg->access_log && strcmp(cfg->access_log, "stderr") != 0) {
    char *abs = fe_cfg_path(r, cfg->access_log);
    free(cfg->access_log);
    cfg->access_log = abs;
  }

  lua_getfield(L, top, "limits");
  if (lua_type(L, -1) == LUA_TTABLE) {
    int li = lua_gettop(L);
    double window_memory = (double)cfg->max_window_memory;
    if (fe_cfg_u32(r, li, "limits.", "max_viewers", 1, 1e7, &cfg->max_viewers) < 0 ||
        fe_cfg_u32(r, li, "limits.", "max_connections", 1, 1e7, &cfg->max_connections) < 0 ||
        fe_cfg_u32(r, li, "limits.", "max_streams", 1, 1e7, &cfg->max_streams) < 0 ||
        fe_cfg_number(r, li, "limits.", "max_window_memory", 1 << 20, 1099511627776.0,
                      &window_memory) < 0 ||
        fe_cfg_number(r, li, "limits.", "request_timeout", 0.1, 3600, &cfg->request_timeout) < 0 ||
        fe_cfg_number(r, li, "limits.", "send_timeout", 0.1, 3600, &cfg->send_timeout) < 0 ||
        fe_cfg_u32(r, li, "limits.", "max_header_size", 1024, 1 << 20, &cfg->max_header_size) < 0 ||
        fe_cfg_u32(r, li, "limits.", "h2_max_streams", 1, 10000, &cfg->h2_max_streams) < 0 ||
        fe_cfg_u32(r, li, "limits.", "h2_control_rate", 1, 1e6, &cfg->h2_control_rate) < 0)
      return -1;
    cfg->max_window_memory = (uint64_t)window_memory;
  } else if (!lua_isnil(L, -1)) {
    return fe_cfg_fail(r, "limits: expected a table");
  }
  lua_pop(L, 1);

  lua_getfield(L, top, "metrics");
  if (lua_type(L, -1) == LUA_TTABLE) {
    if (fe_cfg_u32(r, lua_gettop(L), "metrics.", "max_stream_series", 0, 1e6, &cfg->max_stream_series) < 0)
      return -1;
  } else if (!lua_isnil(L, -1)) {
    return fe_cfg_fail(r, "metrics: expected a table { max_stream_series = N }");
  }
  lua_pop(L, 1);

  lua_getfield(L, top, "admin");
  if (lua_type(L, -1) == LUA_TTABLE) {
    if (fe_cfg_admin(r, cfg, lua_gettop(L)) < 0)
      return -1;
  } else if (!lua_isnil(L, -1)) {
    return fe_cfg_fail(r, "admin: expected a table { listen = \"host:port\", token = \"...\" }");
  }
  lua_pop(L, 1);

  lua_getfield(L, top, "resources");
  if (lua_type(L, -1) != LUA_TTABLE)
    return fe_cfg_fail(r, "resources: expected a list of resource tables");
  int n = (int)lua_objlen(L, -1);
  if (n == 0)
    return fe_cfg_fail(r, "resources: at least one resource is needed");
  cfg->resources = calloc((size_t)n, sizeof(fe_resource));
  for (int i = 1; i <= n; i++) {
    fe_resource *res = &cfg->resources[cfg->nresources++];
    fe_resource_defaults(res);
    lua_rawgeti(L, -1, i);
    if (lua_type(L, -1) != LUA_TTABLE)
      return fe_cfg_fail(r, "resources[%d]: expected a table", i);
    if (fe_cfg_resource(r, i, res, cfg->ca_file) < 0)
      return -1;
    cfg->has_policies |= res->has_policy;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

int fe_config_load(fe_config *cfg, const char *path, struct fe_tls_clients *tls, char *err,
                   size_t errlen) {
  fe_config_defaults(cfg);
  cfg->path = fe_strdup(path);
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (slash) {
    size_t n = (size_t)(slash - path) + 1;
    if (n >= sizeof(dir))
      n = sizeof(dir) - 1;
    memcpy(dir, path, n);
    dir[n] = 0;
  } else {
    strcpy(dir, "./");
  }
  fe_cfg_reader r = {.L = luaL_newstate(), .err = err, .errlen = errlen, .dir = dir, .tls = tls};
  if (!r.L) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  luaL_openlibs(r.L);
  int rc = -1;
  if (luaL_loadfile(r.L, path) != 0 || lua_pcall(r.L, 0, 1, 0) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(r.L, -1));
  } else if (lua_type(r.L, -1) != LUA_TTABLE) {
    snprintf(err, errlen, "the file must return a table");
  } else {
    rc = fe_cfg_read(&r, cfg);
  }
  lua_close(r.L);
  if (rc < 0)
    fe_config_free(cfg);
  return rc;
}

int fe_config_pid_file(const char *path, char **out, char *err, size_t errlen) {
  *out = NULL;
  char dir[4096];
  const char *slash = strrchr(path, '/');
  size_t n = slash ? (size_t)(slash - path) + 1 : 0;
  snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
  fe_cfg_reader r = {.L = luaL_newstate(), .err = err, .errlen = errlen, .dir = n ? dir : "./"};
  if (!r.L) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  luaL_openlibs(r.L);
  char *pid = NULL;
  int rc = -1;
  if (luaL_loadfile(r.L, path) != 0 || lua_pcall(r.L, 0, 1, 0) != 0)
    snprintf(err, errlen, "%s", lua_tostring(r.L, -1));
  else if (lua_type(r.L, -1) != LUA_TTABLE)
    snprintf(err, errlen, "the file must return a table");
  else
    rc = fe_cfg_string(&r, lua_gettop(r.L), "", "pid_file", 1, &pid);
  lua_close(r.L);
  if (rc == 0 && pid)
    *out = fe_cfg_path(&r, pid);
  free(pid);
  return rc;
}

int fe_config_quick(fe_config *cfg, const char *listen, const char *const *origins, int norigins,
                    const char *cache_dir, struct fe_tls_clients *tls, char *err, size_t errlen) {
  fe_config_defaults(cfg);
  for (int i = 0; i < norigins; i++) {
    const char *origin = origins[i];
    if (cache_dir && !fe_cfg_http_origin(origin)) {
      snprintf(err, errlen, "--origin: a vod origin is \"http[s]://host[:port][/path]\"");
      fe_config_free(cfg);
      return -1;
    }
    if (!fe_cfg_origin_ok(origin)) {
      snprintf(err, errlen, "--origin: expected \"http[s]://host[:port][/path]\" or \"file:PATH\"");
      fe_config_free(cfg);
      return -1;
    }
  }
  cfg->listen = calloc(1, sizeof(char *));
  cfg->listen_tls = calloc(1, sizeof(*cfg->listen_tls));
  cfg->listen_h2c = calloc(1, sizeof(*cfg->listen_h2c));
  cfg->listen[cfg->nlisten++] = fe_strdup(listen);
  cfg->resources = calloc(1, sizeof(fe_resource));
  fe_resource *res = &cfg->resources[cfg->nresources++];
  fe_resource_defaults(res);
  res->name = fe_strdup("quick");
  res->type = FE_RES_LIVE;
  res->origin = fe_strdup(origins[0]);
  if (norigins > 1) {
    res->backups = calloc((size_t)norigins - 1, sizeof(char *));
    for (int i = 1; i < norigins; i++)
      res->backups[res->nbackups++] = fe_strdup(origins[i]);
  }
  if (cache_dir) {
    res->type = FE_RES_VOD;
    char cwd[4096];
    if (cache_dir[0] != '/' && getcwd(cwd, sizeof(cwd))) {
      size_t a = strlen(cwd), b = strlen(cache_dir);
      res->cache_dir = malloc(a + b + 2);
      snprintf(res->cache_dir, a + b + 2, "%s/%s", cwd, cache_dir);
    } else {
      res->cache_dir = fe_strdup(cache_dir);
    }
  }
  int https = 0;
  for (int i = 0; i < norigins; i++)
    https |= strncmp(origins[i], "https://", 8) == 0;
  if (https && !(res->origin_tls = fe_tls_client_get(tls, NULL, 1, err, errlen))) {
    fe_config_free(cfg);
    return -1;
  }
  return 0;
}

int fe_config_tls(fe_config *cfg, const char *cert, const char *key, char *err, size_t errlen) {
  fe_tls_cert_spec spec = {.cert = cert, .key = key};
  char why[300];
  fe_tls_server *s = fe_tls_server_new(&spec, 1, why, sizeof(why));
  if (!s) {
    snprintf(err, errlen, "--tls-cert/--tls-key: %s", why);
    return -1;
  }
  for (int i = 0; i < cfg->nlisten; i++) {
    if (i > 0)
      fe_tls_server_ref(s);
    fe_tls_server_unref(cfg->listen_tls[i]);
    cfg->listen_tls[i] = s;
  }
  return 0;
}

int fe_config_admin(fe_config *cfg, const char *listen, const char *token, char *err, size_t errlen) {
  if (fe_admin_check(listen, token, "--admin/--admin-token: admin ", err, errlen) < 0)
    return -1;
  free(cfg->admin_listen);
  free(cfg->admin_token);
  cfg->admin_listen = fe_strdup(listen);
  cfg->admin_token = fe_strdup(token);
  return 0;
}

int fe_config_workers(const fe_config *cfg) {
  if (cfg->workers > 0)
    return cfg->workers;
  cpu_set_t set;
  int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  return n < 1 ? 1 : n > 64 ? 64 : n;
}

void fe_config_free(fe_config *cfg) {
  for (int i = 0; i < cfg->nlisten; i++) {
    free(cfg->listen[i]);
    if (cfg->listen_tls)
      fe_tls_server_unref(cfg->listen_tls[i]);
  }
  free(cfg->listen);
  free(cfg->listen_tls);
  free(cfg->listen_h2c);
  free(cfg->ca_file);
  for (int i = 0; i < cfg->nresources; i++) {
    fe_resource *res = &cfg->resources[i];
    free(res->name);
    free(res->host);
    free(res->prefix);
    free(res->origin);
    for (int j = 0; j < res->nbackups; j++)
      free(res->backups[j]);
    free(res->backups);
    free(res->slate);
    free(res->root);
    free(res->cache_dir);
  }
  free(cfg->resources);
  free(cfg->cors_origin);
  free(cfg->status_prefix);
  free(cfg->access_log);
  free(cfg->pid_file);
  free(cfg->geoip_db);
  free(cfg->admin_listen);
  free(cfg->admin_token);
  free(cfg->path);
  memset(cfg, 0, sizeof(*cfg));
}

static int fe_host_match(const char *pattern, const char *host, size_t hostlen) {
  if (strcmp(pattern, "*") == 0)
    return 1;
  if (pattern[0] == '*' && pattern[1] == '.') {
    size_t plen = strlen(pattern + 1); /* ".example.com" */
    return hostlen > plen && strncasecmp(host + hostlen - plen, pattern + 1, plen) == 0;
  }
  return strlen(pattern) == hostlen && strncasecmp(pattern, host, hostlen) == 0;
}

const fe_resource *fe_config_route(const fe_config *cfg, const char *host, size_t hostlen,
                                   const char *path, size_t pathlen) {
  const fe_resource *best = NULL;
  size_t best_len = 0;
  for (int i = 0; i < cfg->nresources; i++) {
    const fe_resource *res = &cfg->resources[i];
    size_t plen = strlen(res->prefix);
    if (plen > pathlen || memcmp(res->prefix, path, plen) != 0)
      continue;
    if (!fe_host_match(res->host, host ? host : "", host ? hostlen : 0))
      continue;
    if (!best || plen > best_len) {
      best = res;
      best_len = plen;
    }
  }
  return best;
}
