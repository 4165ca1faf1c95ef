/* The `cache` hook from C (fe_lua_cache), without a VOD handler: a config of inline policies is
 * opened with fe_lua_open and each story calls the hook as the handler will, with a request view
 * of its own. What the server logs is read from stderr, redirected to a file around the call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fe_test.h"
#include "lua/fe_lua.h"

/* Resource 1 answers by path; 2 shares req.ctx with access; 3 has only `cache`; 4 has no policy;
 * 5 only `access`; 6 is the ready-made cache_rules. Globals are one sandbox for all: each resource keeps its req in its own. The
 * probes read a field of a kept req that nothing read while it ran (a field read stays readable). */
static const char fe_config[] =
    "local function lookup(req)\n"
    "  local p = req.path\n"
    "  if p == '/a.flv' then return { key = 'k:' .. p, keep_query = true, bypass = false } end\n"
    "  if p == '/bypass' then return { bypass = true } end\n"
    "  if p == '/space' then return { key = 'a b' } end\n"
    "  if p == '/empty' then return { key = '' } end\n"
    "  if p == '/long' then return { key = string.rep('x', 600) } end\n"
    "  if p == '/max' then return { key = string.rep('x', 511) } end\n"
    "  if p == '/unknown' then return { ttl = 5 } end\n"
    "  if p == '/kq' then return { keep_query = 'yes' } end\n"
    "  if p == '/string' then return 'key' end\n"
    "  if p == '/boom' then error('boom') end\n"
    "  if p == '/loop' then while true do end end\n"
    "  return nil\n"
    "end\n"
    "local function answer(req, res)\n"
    "  local p = req.path\n"
    "  if p == '/a.flv' then\n"
    "    local seen = res.content_type == 'video/x-flv' and res.etag == '\"e1\"' and res.size == 1234\n"
    "      and res.last_modified == 'Wed, 21 Oct 2015 07:28:00 GMT' and res.cache_control == 'max-age=5'\n"
    "    return { ttl = seen and 86400 or 1, cacheable = res.status ~= 500 }\n"
    "  end\n"
    "  if p == '/nosize' then return { ttl = res.size == nil and res.etag == nil and 7 or 8 } end\n"
    "  if p == '/neg' then return { ttl = -1 } end\n"
    "  if p == '/nan' then return { ttl = 0/0 } end\n"
    "  if p == '/inf' then return { ttl = math.huge } end\n"
    "  if p == '/str' then return { ttl = '60' } end\n"
    "  if p == '/key' then return { key = 'k' } end\n"
    "  if p == '/boom' then error('boom') end\n"
    "  return nil\n"
    "end\n"
    "return { resources = {\n"
    "  { policy = { cache = function(req, res) if res then return answer(req, res) end\n"
    "                                          return lookup(req) end } },\n"
    "  { policy = {\n"
    "      access = function(req)\n"
    "        if req.path == '/probe' then return 200, tostring(KEPT_ACCESS.server_ip) end\n"
    "        KEPT_ACCESS = req; req.ctx.n = 1\n"
    "      end,\n"
    "      cache = function(req, res)\n"
    "        req.ctx.n = req.ctx.n + 1\n"
    "        if res then return { ttl = req.ctx.n, cacheable = KEPT_ACCESS.host == 'example.com' } end\n"
    "        return { key = 'n' .. req.ctx.n }\n"
    "      end } },\n"
    "  { policy = { cache = function(req, res)\n"
    "      if req.path == '/probe' then return { key = KEPT_CACHE.host } end\n"
    "      if req.path == '/probe2' then return { key = KEPT_CACHE.server_ip } end\n"
    "      if res then return { ttl = req.ctx.seen and 10 or 20 } end\n"
    "      KEPT_CACHE = req; req.ctx.seen = true\n"
    "      if req.path == '/boom' then error('boom') end\n"
    "    end } },\n"
    "  { },\n"
    "  { policy = { access = function(req) end } },\n"
    "  { policy = 'cache_rules', policy_settings = { keep_query = true,\n"
    "      rules = { { match = '%.m3u8$', bypass = true }, { match = '%.flv$', ttl = 86400 } } } },\n"
    "} }\n";

static fe_lua *fe_L;
static char fe_logbuf[8192];
static int fe_saved_err = -1;
static FILE *fe_cap;

static void fe_capture(void) {
  fflush(stderr);
  fe_cap = tmpfile();
  fe_saved_err = dup(2);
  dup2(fileno(fe_cap), 2);
}

/* Stops capturing; fe_logbuf holds what was logged meanwhile. */
static const char *fe_captured(void) {
  fflush(stderr);
  dup2(fe_saved_err, 2);
  close(fe_saved_err);
  rewind(fe_cap);
  size_t n = fread(fe_logbuf, 1, sizeof(fe_logbuf) - 1, fe_cap);
  fe_logbuf[n] = 0;
  fclose(fe_cap);
  return fe_logbuf;
}

static int fe_count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

static fe_str fe_s(const char *s) {
  return (fe_str){s, strlen(s)};
}

static fe_req_view fe_view(const char *resource, const char *path) {
  static const char base[] = "";
  fe_req_view v = {.base = base};
  v.method = fe_s("GET");
  v.path = fe_s(path);
  v.query = fe_s("token=x&b=2");
  v.host = fe_s("example.com");
  v.resource = fe_s(resource);
  v.client_ip = fe_s("192.0.2.7");
  v.server_ip = fe_s("127.0.0.1");
  v.time = 1700000000;
  return v;
}

/* What the VOD handler fills in before a call. */
static fe_lua_cache_out fe_defaults(void) {
  fe_lua_cache_out o = {.bypass = 0, .cacheable = 1, .ttl = 3600, .keep_query = 0};
  return o;
}

static const fe_lua_cache_res fe_res_flv = {200, 1234, "video/x-flv", "\"e1\"",
                                            "Wed, 21 Oct 2015 07:28:00 GMT", "max-age=5"};

static const char *const fe_names[] = {"rules", "ctx", "cacheonly", "none", "accessonly",
                                       "cache_rules"};

/* Runs the lookup (res NULL) or answer call of request id of resource idx; the log it wrote is in
 * fe_logbuf. v must live until the request's end (fe_end), as a connection's view does. */
static int fe_call_req(int idx, uint64_t id, fe_req_view *v, const fe_lua_cache_res *res,
                       fe_lua_cache_out *out) {
  fe_capture();
  int rc = fe_lua_cache(fe_L, idx, id, v, res, out);
  fe_captured();
  return rc;
}

/* The same outside any request (id 0, as a prefetch has): nothing is kept past the call. */
static int fe_call(int idx, const char *path, const fe_lua_cache_res *res, fe_lua_cache_out *out) {
  fe_req_view v = fe_view(fe_names[idx], path);
  return fe_call_req(idx, 0, &v, res, out);
}

/* The request is over: its log phase, as fe_conn_request_done runs it. */
static void fe_end(int idx, uint64_t id, fe_req_view *v) {
  fe_lua_res res = {.status = 200};
  char extra[64];
  fe_lua_log(fe_L, idx, id, v, &res, extra, sizeof(extra));
}

/* A bad answer: -1, the defaults untouched, one log line naming the resource and the client. */
static void fe_check_refused(int idx, const char *path, const fe_lua_cache_res *res, const char *why) {
  fe_lua_cache_out out = fe_defaults(), before = out;
  FE_CHECK_EQ(fe_call(idx, path, res, &out), -1);
  FE_CHECK(memcmp(&out, &before, sizeof(out)) == 0);
  FE_CHECK_EQ(fe_count(fe_logbuf, "cache hook (resource rules, client 192.0.2.7)"), 1);
  FE_CHECK(strstr(fe_logbuf, why) != NULL);
  if (!strstr(fe_logbuf, why))
    fprintf(stderr, "  %s: logged: %s\n", path, fe_logbuf);
}

static void test_phases_report_cache(void) {
  FE_CHECK_EQ(fe_lua_phases(fe_L, 0), FE_LUA_CACHE);
  FE_CHECK_EQ(fe_lua_phases(fe_L, 1), FE_LUA_ACCESS | FE_LUA_CACHE);
  FE_CHECK_EQ(fe_lua_phases(fe_L, 3), 0);
  FE_CHECK_EQ(fe_lua_phases(fe_L, 4), FE_LUA_ACCESS);
}

static void test_lookup_sets_key_keep_query_bypass(void) {
  fe_lua_cache_out out = fe_defaults();
  out.bypass = 1;
  FE_CHECK_EQ(fe_call(0, "/a.flv", NULL, &out), 0);
  FE_CHECK(strcmp(out.key, "k:/a.flv") == 0);
  FE_CHECK_EQ(out.keep_query, 1);
  FE_CHECK_EQ(out.bypass, 0);
  FE_CHECK_EQ(out.cacheable, 1); /* not the lookup call's to change */
  FE_CHECK(out.ttl == 3600);
  FE_CHECK_EQ(fe_logbuf[0], 0);

  out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/bypass", NULL, &out), 0);
  FE_CHECK_EQ(out.bypass, 1);
  FE_CHECK_EQ(out.key[0], 0);
}

static void test_longest_key_fits(void) {
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/max", NULL, &out), 0);
  FE_CHECK_EQ(strlen(out.key), 511);
}

static void test_answer_sets_ttl_and_cacheable_from_res(void) {
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/a.flv", &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 86400);
  FE_CHECK_EQ(out.cacheable, 1);

  fe_lua_cache_res err = {500, 0, NULL, NULL, NULL, NULL};
  out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/a.flv", &err, &out), 0);
  FE_CHECK_EQ(out.cacheable, 0);
  FE_CHECK(out.ttl == 1);

  /* size 0 (unknown) and absent strings are nil in res */
  out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/nosize", &err, &out), 0);
  FE_CHECK(out.ttl == 7);
}

static void test_nil_keeps_defaults(void) {
  fe_lua_cache_out out = fe_defaults(), before = out;
  FE_CHECK_EQ(fe_call(0, "/other", NULL, &out), 0);
  FE_CHECK(memcmp(&out, &before, sizeof(out)) == 0);
  FE_CHECK_EQ(fe_call(0, "/other", &fe_res_flv, &out), 0);
  FE_CHECK(memcmp(&out, &before, sizeof(out)) == 0);
}

static void test_bad_keys_refused(void) {
  fe_check_refused(0, "/space", NULL, "visible ASCII");
  fe_check_refused(0, "/empty", NULL, "1 to 511 bytes, got 0");
  fe_check_refused(0, "/long", NULL, "1 to 511 bytes, got 600");
}

static void test_bad_ttls_refused(void) {
  fe_check_refused(0, "/neg", &fe_res_flv, "ttl must be a finite number");
  fe_check_refused(0, "/nan", &fe_res_flv, "ttl must be a finite number");
  fe_check_refused(0, "/inf", &fe_res_flv, "ttl must be a finite number");
  fe_check_refused(0, "/str", &fe_res_flv, "ttl must be a number, got string");
}

static void test_wrong_fields_and_types_refused(void) {
  fe_check_refused(0, "/unknown", NULL, "unknown field \"ttl\" in the lookup call's answer");
  fe_check_refused(0, "/key", &fe_res_flv, "unknown field \"key\" in the answer call's answer");
  fe_check_refused(0, "/kq", NULL, "keep_query must be a boolean, got string");
  fe_check_refused(0, "/string", NULL, "expected a table or nil, got string");
}

static void test_raising_hook_fails(void) {
  fe_check_refused(0, "/boom", NULL, "boom");
  fe_check_refused(0, "/boom", &fe_res_flv, "boom");
}

static void test_endless_loop_stopped_by_budget(void) {
  fe_check_refused(0, "/loop", NULL, "instruction budget exceeded");
  /* the state still works afterwards */
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call(0, "/a.flv", NULL, &out), 0);
  FE_CHECK(strcmp(out.key, "k:/a.flv") == 0);
}

static void test_no_cache_phase_is_no_call(void) {
  fe_lua_cache_out out = fe_defaults(), before = out;
  FE_CHECK_EQ(fe_call(3, "/a.flv", NULL, &out), 0);
  FE_CHECK_EQ(fe_call(4, "/a.flv", &fe_res_flv, &out), 0);
  FE_CHECK(memcmp(&out, &before, sizeof(out)) == 0);
}

/* access, lookup and answer of one request share req and req.ctx; once the request is over (its
 * log phase, here without a log function) the kept req is detached. */
static void test_request_shared_with_access_then_detached(void) {
  fe_req_view v = fe_view("ctx", "/a.flv");
  fe_lua_deny deny;
  FE_CHECK_EQ(fe_lua_access(fe_L, 1, 41, &v, &deny), 0);
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(1, 41, &v, NULL, &out), 0);
  FE_CHECK(strcmp(out.key, "n2") == 0);
  out = fe_defaults();
  out.cacheable = 0;
  FE_CHECK_EQ(fe_call_req(1, 41, &v, &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 3);
  FE_CHECK_EQ(out.cacheable, 1); /* the kept req still reads the live view */
  fe_end(1, 41, &v);

  fe_req_view probe = fe_view("ctx", "/probe");
  fe_capture();
  int rc = fe_lua_access(fe_L, 1, 42, &probe, &deny);
  fe_captured();
  FE_CHECK_EQ(rc, -1);
  FE_CHECK(strstr(fe_logbuf, "request is finished") != NULL);
  fe_end(1, 42, &probe);
}

/* Without access, the lookup call starts keeping the request; its end lets it go. */
static void test_cache_only_request_kept_until_it_ends(void) {
  fe_req_view v = fe_view("cacheonly", "/a.flv");
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(2, 51, &v, NULL, &out), 0);
  out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(2, 51, &v, &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 10); /* the lookup's req.ctx */

  out = fe_defaults();
  FE_CHECK_EQ(fe_call(2, "/probe", NULL, &out), 0); /* request 51 still runs */
  FE_CHECK(strcmp(out.key, "example.com") == 0);

  fe_end(2, 51, &v);
  out = fe_defaults();
  FE_CHECK_EQ(fe_call(2, "/probe2", NULL, &out), -1);
  FE_CHECK(strstr(fe_logbuf, "request is finished") != NULL);
}

/* A failed lookup lets its request go: the answer call gets a fresh req.ctx. */
static void test_failed_lookup_releases_request(void) {
  fe_req_view v = fe_view("cacheonly", "/boom");
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(2, 61, &v, NULL, &out), -1);
  FE_CHECK_EQ(fe_count(fe_logbuf, "cache hook (resource cacheonly, client 192.0.2.7)"), 1);
  out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(2, 61, &v, &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 20);
  fe_end(2, 61, &v);
}

/* An answer call never starts keeping a request (a fetch may outlive the request that started it). */
static void test_answer_call_keeps_nothing(void) {
  fe_req_view v = fe_view("cacheonly", "/a.flv");
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call_req(2, 71, &v, &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 20);
  fe_end(2, 71, &v);
}

/* The ready-made policy runs in the server's sandbox as in its specs. */
static void test_cache_rules_policy_in_the_server(void) {
  FE_CHECK_EQ(fe_lua_phases(fe_L, 5), FE_LUA_CACHE);
  fe_lua_cache_out out = fe_defaults();
  FE_CHECK_EQ(fe_call(5, "/v/a.flv", NULL, &out), 0);
  FE_CHECK(strcmp(out.key, "/v/a.flv?b=2") == 0); /* the view's query is token=x&b=2 */
  FE_CHECK_EQ(out.keep_query, 1);
  out = fe_defaults();
  FE_CHECK_EQ(fe_call(5, "/v/a.flv", &fe_res_flv, &out), 0);
  FE_CHECK(out.ttl == 86400);
  FE_CHECK_EQ(out.cacheable, 1);
  out = fe_defaults();
  FE_CHECK_EQ(fe_call(5, "/v/index.m3u8", NULL, &out), 0);
  FE_CHECK_EQ(out.bypass, 1);
  FE_CHECK_EQ(fe_logbuf[0], 0);
}

int main(void) {
  char dir[] = "/tmp/fe-lua-cache-XXXXXX";
  if (!mkdtemp(dir))
    return 2;
  char path[256];
  snprintf(path, sizeof(path), "%s/config.lua", dir);
  FILE *f = fopen(path, "w");
  if (!f)
    return 2;
  fputs(fe_config, f);
  fclose(f);
  fe_lua_opts opts = {.config_path = path, .nresources = 6, .lua_dir = FE_LUA_DIR,
                      .policy_dir = FE_POLICY_DIR, .budget = 100000};
  char err[512];
  fe_L = fe_lua_open(&opts, err, sizeof(err));
  unlink(path);
  rmdir(dir);
  if (!fe_L) {
    fprintf(stderr, "fe_lua_open: %s\n", err);
    return 1;
  }
  FE_RUN(test_phases_report_cache);
  FE_RUN(test_lookup_sets_key_keep_query_bypass);
  FE_RUN(test_longest_key_fits);
  FE_RUN(test_answer_sets_ttl_and_cacheable_from_res);
  FE_RUN(test_nil_keeps_defaults);
  FE_RUN(test_bad_keys_refused);
  FE_RUN(test_bad_ttls_refused);
  FE_RUN(test_wrong_fields_and_types_refused);
  FE_RUN(test_raising_hook_fails);
  FE_RUN(test_endless_loop_stopped_by_budget);
  FE_RUN(test_no_cache_phase_is_no_call);
  FE_RUN(test_request_shared_with_access_then_detached);
  FE_RUN(test_cache_only_request_kept_until_it_ends);
  FE_RUN(test_failed_lookup_releases_request);
  FE_RUN(test_answer_call_keeps_nothing);
  FE_RUN(test_cache_rules_policy_in_the_server);
  fe_lua_unref(fe_L);
  return FE_DONE();
}
