/*
 * libFuzzer target for the request as Lua sees it: a fe_req_view made from the input (path,
 * query, headers) goes through fe_lua_access and fe_lua_log of a real policy state (fe_lua_open
 * on tests/fuzz/fuzz_request.lua, with the repository's lua/ and policies/), so request.lua's
 * lazy fields and headers, util.parse_query and unescape, header_key, the FFI header lookup, the
 * checks of a denial and of log fields all run on outside bytes. Every request goes to each
 * resource of that config: the checking policy (fuzz_request_policy.lua), secure_token as md5,
 * hmac and nginx, access_control.
 *
 * Input: a request target ("path?query"), then header lines "name: value", each line ended by
 * '\n' (a '\r' before it is dropped). The view's spans point into an exact-size copy of the input, so
 * reading past a value is a heap overflow. Bytes that llhttp would refuse are let through.
 *
 * Checks: the hook answers (a ready-made policy admits or denies, never fails; the checking
 * policy's asserts hold); a denial's status is 100-599 and its headers are "Name: value" lines;
 * the body of x-fuzz-mode "deny" is exactly what this file predicts; log fields have no control
 * characters; a request kept past its phase cannot be read (the policy checks it, ASan would see
 * the freed copy).
 */
#define _GNU_SOURCE /* memrchr */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/fe_log.h"
#include "lua/fe_lua.h"

#include "fuzz_check.h"

#define FUZZ_MAX_HEADERS 48 /* as the server keeps (FE_MAX_HEADERS) */

static const char *const fuzz_resources[] = {"check", "md5", "hmac", "nginx", "acl"};
#define FUZZ_NRES ((int)(sizeof(fuzz_resources) / sizeof(fuzz_resources[0])))

static fe_lua *fuzz_lua;
static uint64_t fuzz_id;
static int fuzz_trace; /* FUZZ_TRACE=1: each hook's answer, and the errors of failing hooks */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fe_lua_opts opts = {
      .config_path = FE_FUZZ_DIR "/fuzz_request.lua",
      .nresources = FUZZ_NRES,
      .lua_dir = FE_LUA_DIR,
      .policy_dir = FE_POLICY_DIR,
      .budget = 1000000,
  };
  char err[512];
  fuzz_lua = fe_lua_open(&opts, err, sizeof(err));
  if (!fuzz_lua) {
    fprintf(stderr, "fuzz_request: %s\n", err);
    abort();
  }
  FUZZ_CHECK(fe_lua_phases(fuzz_lua, 0) == (FE_LUA_ACCESS | FE_LUA_LOG));
  for (int i = 1; i < FUZZ_NRES; i++)
    FUZZ_CHECK(fe_lua_phases(fuzz_lua, i) == FE_LUA_ACCESS);
  /* A failing hook logs its error; shown again only when a failure was not expected. */
  fuzz_trace = getenv("FUZZ_TRACE") != NULL;
  fe_log_set_level(fuzz_trace ? FE_LOG_ERROR : FE_LOG_ERROR + 1);
  return 0;
}

static fe_str fuzz_header(const char *base, const fe_header *h, int n, const char *name) {
  const fe_span *v = fe_header_find(base, h, n, name, strlen(name));
  return v ? (fe_str){base + v->off, v->len} : (fe_str){NULL, 0};
}

/* A denial's headers: "Name: value\r\n" lines, a token for a name, no CR or LF inside. */
static void fuzz_check_header_lines(const char *s) {
  while (*s) {
    size_t name = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            "!#$%&'*+.^_`|~-");
    FUZZ_CHECK(name > 0 && s[name] == ':' && s[name + 1] == ' ');
    const char *end = strstr(s, "\r\n");
    FUZZ_CHECK(end != NULL && memchr(s, '\n', (size_t)(end - s)) == NULL);
    s = end + 2;
  }
}

/* Runs access, then log, of resource i. A failing hook is a finding, except with x-fuzz-mode
 * "raw" on the checking policy, whose denial comes straight from the query. */
static void fuzz_run(int i, fe_req_view *view, const char *mode, int mode_len) {
  uint64_t id = ++fuzz_id;
  fe_lua_deny deny;
  view->resource = (fe_str){fuzz_resources[i], strlen(fuzz_resources[i])};
  int raw = i == 0 && mode_len == 3 && memcmp(mode, "raw", 3) == 0;
  int denying = i == 0 && mode_len == 4 && memcmp(mode, "deny", 4) == 0;
  int rc = fe_lua_access(fuzz_lua, i, id, view, &deny);
  if (fuzz_trace)
    fprintf(stderr, "fuzz_request: %s: %s %d %.*s\n", fuzz_resources[i],
            rc < 0 ? "failed" : rc ? "denied" : "admitted", rc == 1 ? deny.status : 0,
            rc == 1 && deny.body ? (int)deny.body_len : 0, rc == 1 && deny.body ? deny.body : "");
  if (rc < 0 && !raw) {
    fe_log_set_level(FE_LOG_ERROR); /* the same call again, to show why */
    fe_lua_access(fuzz_lua, i, ++fuzz_id, view, &deny);
    FUZZ_CHECK(!"the access hook failed");
  }
  if (rc < 0)
    return; /* the request was released */
  if (i == 0 && !raw)
    FUZZ_CHECK(rc == denying);
  if (rc == 1) {
    FUZZ_CHECK(deny.status >= 100 && deny.status <= 599);
    if (i > 0)
      FUZZ_CHECK((deny.status == 403 || deny.status == 410) && deny.body && !deny.headers);
    if (deny.headers)
      fuzz_check_header_lines(deny.headers);
    if (denying) {
      /* method " " path "?" query "\n" (X-Fuzz or "-") */
      fe_str x = fuzz_header(view->base, view->headers, view->nheaders, "x-fuzz");
      size_t n = view->method.len + 1 + view->path.len + 1 + view->query.len + 1 + (x.p ? x.len : 1);
      char *want = malloc(n), *w = want;
      FUZZ_CHECK(want != NULL);
      memcpy(w, view->method.p, view->method.len), w += view->method.len, *w++ = ' ';
      memcpy(w, view->path.p, view->path.len), w += view->path.len, *w++ = '?';
      memcpy(w, view->query.p, view->query.len), w += view->query.len, *w++ = '\n';
      if (x.p)
        memcpy(w, x.p, x.len);
      else
        *w = '-';
      FUZZ_CHECK(deny.status == 403 && deny.body_len == n && memcmp(deny.body, want, n) == 0);
      FUZZ_CHECK(deny.headers && strncmp(deny.headers, "X-Args: ", 8) == 0);
      free(want);
    }
    fe_lua_deny_free(&deny);
  }
  fe_lua_res res = {.status = 200, .bytes_sent = 1234, .duration = 0.5};
  char extra[1024];
  fe_lua_log(fuzz_lua, i, id, view, &res, extra, sizeof(extra));
  if (fuzz_trace && extra[0])
    fprintf(stderr, "fuzz_request: %s: log fields:%s\n", fuzz_resources[i], extra);
  for (const char *c = extra; *c; c++)
    FUZZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The request head the view borrows from: exactly the input's size, so ASan sees overreads. */
  char *base = malloc(size ? size : 1);
  FUZZ_CHECK(base != NULL);
  memcpy(base, data, size);
  const char *end = base + size;

  const char *line_end = memchr(base, '\n', size);
  const char *target_end = line_end ? line_end : end;
  if (target_end > base && target_end[-1] == '\r')
    target_end--;
  const char *q = memchr(base, '?', (size_t)(target_end - base));
  fe_header hdr[FUZZ_MAX_HEADERS];
  int nhdr = 0;
  for (const char *p = line_end ? line_end + 1 : end; p < end && nhdr < FUZZ_MAX_HEADERS;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *vend = le > p && le[-1] == '\r' ? le - 1 : le;
    const char *colon = memchr(p, ':', (size_t)(vend - p));
    if (colon && colon > p) {
      const char *v = colon + 1;
      while (v < vend && (*v == ' ' || *v == '\t'))
        v++;
      hdr[nhdr++] = (fe_header){{(uint32_t)(p - base), (uint32_t)(colon - p)},
                                {(uint32_t)(v - base), (uint32_t)(vend - v)}};
    }
    p = nl ? nl + 1 : end;
  }

  fe_req_view view = {.base = base, .headers = hdr, .nheaders = nhdr, .time = 1700000000.25};
  view.method = (fe_str){"GET", 3};
  view.path = (fe_str){base, (size_t)((q ? q : target_end) - base)};
  view.query = q ? (fe_str){q + 1, (size_t)(target_end - q - 1)} : (fe_str){"", 0};
  view.host = fuzz_header(base, hdr, nhdr, "host");
  const char *slash = view.path.len ? memrchr(view.path.p, '/', view.path.len) : NULL;
  if (slash && (size_t)(slash + 1 - view.path.p) < view.path.len)
    view.stream = (fe_str){slash + 1, view.path.len - (size_t)(slash + 1 - view.path.p)};
  view.client_ip = fuzz_header(base, hdr, nhdr, "x-fuzz-ip");
  if (!view.client_ip.p)
    view.client_ip = (fe_str){"192.0.2.1", 9};
  view.server_ip = (fe_str){"127.0.0.1", 9};
  fe_str mode = fuzz_header(base, hdr, nhdr, "x-fuzz-mode");

  for (int i = 0; i < FUZZ_NRES; i++) {
    view.country_state = 0;
    fuzz_run(i, &view, mode.p, (int)mode.len);
  }
  free(base);
  return 0;
}
