/*
 * libFuzzer target for the config loader: fe_config_load on a file made from the input.
 *
 * The config is trusted operator code and a Lua program can loop for ever, so the input runs only
 * as Lua data: it is written as the inside of a table constructor,
 *
 *   setfenv(1, {}) return {
 *   <input>
 *   }
 *
 * and inputs holding '(' or ')' are refused. Without parentheses no function can be defined, and
 * the only values that can be called or indexed are globals, which are nil (`f"s"`, `f{}` and
 * `a:b"s"` raise; a string's methods need `("s"):rep`); no statement can follow the `return`
 * either. So every input finishes at once, with memory in proportion to its size: what is fuzzed
 * is the loader's reading of any table the Lua parser makes of the text (types, ranges, missing
 * and extra keys, nesting, strings with any bytes, NaN and infinities from 0/0 and 1/0).
 *
 * Checks: a failed load leaves a message and a zeroed config, nothing leaked (LeakSanitizer); a
 * loaded one holds every value within its documented range, paths made absolute, and each
 * resource is found by routing to its own host and prefix.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/fe_config.h"
#include "net/fe_tls.h"

#include "fuzz_check.h"

static char fuzz_dir[64];
static char fuzz_path[96];
static fe_tls_clients *fuzz_tls; /* the https origins' contexts, as main makes them */

static void fuzz_cleanup(void) {
  unlink(fuzz_path);
  rmdir(fuzz_dir);
  fe_tls_clients_free(fuzz_tls);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  /* In memory where there is a tmpfs: on ext4 a file truncated and written again is flushed to
   * the disk at its close (auto_da_alloc), which made the disk, not the loader, the bound. */
  snprintf(fuzz_dir, sizeof(fuzz_dir), "/dev/shm/fuzz_config.XXXXXX");
  if (!mkdtemp(fuzz_dir)) {
    snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/fuzz_config.XXXXXX");
    if (!mkdtemp(fuzz_dir))
      abort();
  }
  snprintf(fuzz_path, sizeof(fuzz_path), "%s/flvedge.lua", fuzz_dir);
  fuzz_tls = fe_tls_clients_new();
  if (!fuzz_tls)
    abort();
  atexit(fuzz_cleanup);
  return 0;
}

static int fuzz_in(double v, double lo, double hi) {
  return v >= lo && v <= hi; /* false for NaN */
}

/* An origin as the config accepts it: http(s)://, or for live an absolute file: source. */
static int fuzz_origin_ok(const char *o, int live) {
  return strncmp(o, "http://", 7) == 0 || strncmp(o, "https://", 8) == 0 ||
         (live && strncmp(o, "file:/", 6) == 0);
}

static void fuzz_check_resource(const fe_config *cfg, const fe_resource *res) {
  FUZZ_CHECK(res->name && res->host && res->prefix && res->prefix[0] == '/');
  if (res->type == FE_RES_LIVE) {
    FUZZ_CHECK(res->origin && !res->root);
    FUZZ_CHECK(fuzz_origin_ok(res->origin, 1));
    for (int i = 0; i < res->nbackups; i++)
      FUZZ_CHECK(res->backups[i] && fuzz_origin_ok(res->backups[i], 1));
    FUZZ_CHECK(fuzz_in(res->max_viewers_per_stream, 1, 1e7));
    FUZZ_CHECK(fuzz_in(res->window_seconds, 0, 3600));
    FUZZ_CHECK(fuzz_in((double)res->window_bytes, 65536, 4294967295.0));
    FUZZ_CHECK(res->merge_ms <= 10000 && (res->merge_auto == 0 || res->merge_auto == 1));
    FUZZ_CHECK(fuzz_in(res->linger, 0, 86400));
    FUZZ_CHECK(fuzz_in(res->slow_viewer_timeout, 0.1, 3600));
    FUZZ_CHECK(fuzz_in(res->origin_connect_timeout, 0.1, 600));
    FUZZ_CHECK(fuzz_in(res->origin_read_timeout, 0.1, 3600));
    FUZZ_CHECK(fuzz_in(res->max_tag_size, 1024, 1 << 30));
    FUZZ_CHECK(res->send_buffer <= 1u << 30);
  } else if (res->type == FE_RES_VOD) {
    FUZZ_CHECK(res->origin && fuzz_origin_ok(res->origin, 0));
    for (int i = 0; i < res->nbackups; i++)
      FUZZ_CHECK(res->backups[i] && fuzz_origin_ok(res->backups[i], 0));
    FUZZ_CHECK(res->cache_dir && res->cache_dir[0] == '/');
    FUZZ_CHECK(res->slice_size >= 65536 && res->cache_max_size >= 2 * res->slice_size);
    FUZZ_CHECK(fuzz_in(res->cache_ttl, 0, 315360000));
  } else {
    FUZZ_CHECK(res->type == FE_RES_STATIC);
    FUZZ_CHECK(res->root && res->root[0] == '/' && !res->origin);
  }
  /* Routing to the resource's own host and prefix finds it, or one with a longer prefix. */
  char host[256];
  if (strcmp(res->host, "*") == 0)
    snprintf(host, sizeof(host), "h");
  else if (res->host[0] == '*' && res->host[1] == '.')
    snprintf(host, sizeof(host), "h%s", res->host + 1);
  else
    snprintf(host, sizeof(host), "%s", res->host);
  if (strlen(host) == sizeof(host) - 1)
    return; /* cut: it would not match */
  size_t plen = strlen(res->prefix);
  const fe_resource *found = fe_config_route(cfg, host, strlen(host), res->prefix, plen);
  FUZZ_CHECK(found != NULL && strlen(found->prefix) >= plen);
}

static void fuzz_check_config(const fe_config *cfg) {
  FUZZ_CHECK(cfg->path && strcmp(cfg->path, fuzz_path) == 0);
  FUZZ_CHECK(cfg->workers >= 0 && cfg->workers <= 64);
  FUZZ_CHECK(cfg->listen_mode == FE_LISTEN_REUSEPORT || cfg->listen_mode == FE_LISTEN_SHARED);
  FUZZ_CHECK(cfg->nlisten >= 1 && cfg->listen);
  for (int i = 0; i < cfg->nlisten; i++)
    FUZZ_CHECK(cfg->listen[i] != NULL);
  FUZZ_CHECK(cfg->log_level >= 0 && cfg->log_level <= 3);
  FUZZ_CHECK(!cfg->status_prefix || cfg->status_prefix[0] == '/');
  FUZZ_CHECK(fuzz_in(cfg->max_viewers, 1, 1e7) && fuzz_in(cfg->max_connections, 1, 1e7));
  FUZZ_CHECK(fuzz_in(cfg->request_timeout, 0.1, 3600));
  FUZZ_CHECK(fuzz_in(cfg->max_header_size, 1024, 1 << 20));
  FUZZ_CHECK(fuzz_in(cfg->lua_budget, 1000, 1e9));
  FUZZ_CHECK(fuzz_in((double)cfg->lua_memory_limit, 1 << 20, 16.0 * (1 << 30)));
  FUZZ_CHECK(!cfg->access_log || strcmp(cfg->access_log, "stderr") == 0 || cfg->access_log[0] == '/');
  FUZZ_CHECK(!cfg->pid_file || cfg->pid_file[0] == '/');
  FUZZ_CHECK(!cfg->geoip_db || cfg->geoip_db[0] == '/');
  FUZZ_CHECK(cfg->nresources >= 1 && cfg->resources);
  int policies = 0;
  for (int i = 0; i < cfg->nresources; i++) {
    fuzz_check_resource(cfg, &cfg->resources[i]);
    policies |= cfg->resources[i].has_policy;
  }
  FUZZ_CHECK(cfg->has_policies == policies);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char head[] = "setfenv(1, {}) return {\n", tail[] = "\n}\n";
  /* Lua data only: see the top of this file. -1 keeps such inputs out of the corpus. */
  if (memchr(data, '(', size) || memchr(data, ')', size))
    return -1;
  unlink(fuzz_path); /* a new file each time, never one truncated (see LLVMFuzzerInitialize) */
  FILE *f = fopen(fuzz_path, "wb");
  FUZZ_CHECK(f != NULL);
  FUZZ_CHECK(fwrite(head, 1, sizeof(head) - 1, f) == sizeof(head) - 1);
  FUZZ_CHECK(fwrite(data, 1, size, f) == size);
  FUZZ_CHECK(fwrite(tail, 1, sizeof(tail) - 1, f) == sizeof(tail) - 1);
  FUZZ_CHECK(fclose(f) == 0);

  fe_config cfg;
  char err[512];
  memset(err, 0x55, sizeof(err)); /* not NUL-terminated unless the loader writes a message */
  if (fe_config_load(&cfg, fuzz_path, fuzz_tls, err, sizeof(err)) == 0) {
    fuzz_check_config(&cfg);
    fe_config_free(&cfg);
    return 0;
  }
  FUZZ_CHECK(memchr(err, 0, sizeof(err)) != NULL && err[0] != 0);
  static const fe_config zero;
  FUZZ_CHECK(memcmp(&cfg, &zero, sizeof(cfg)) == 0);
  return 0;
}
