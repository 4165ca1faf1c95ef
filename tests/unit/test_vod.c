/* vod/: the index rebuilt from a cache directory at startup (what survives and what is deleted),
 * LRU eviction to the size limit, purge by exact path and by pattern, and a slice dropped when
 * its file no longer matches the index. No origin: slices are written as a previous run would. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fe_test.h"
#include "vod/fe_vod.h"

#define SLICE 65536

static char dir[256];

static void put(const char *path, size_t len) {
  FILE *f = fopen(path, "wb");
  char *buf = calloc(1, len ? len : 1);
  fwrite(buf, 1, len, f);
  fclose(f);
  free(buf);
}

#define VER "0000002a" /* the version of the objects these tests write */
#define VER_CHARS '0', '0', '0', '0', '0', '0', '2', 'a'

/* An object as a previous run left it: its meta and the given slices (len -1: absent). */
static void object(const char *key, const char *path, uint64_t size, const long *slices, int n) {
  char hash[41], sub[400], file[600];
  fe_vod_hash(key, hash);
  snprintf(sub, sizeof(sub), "%s/%.2s", dir, hash);
  mkdir(sub, 0755);
  snprintf(file, sizeof(file), "%s/%s.meta", sub, hash);
  FILE *f = fopen(file, "w");
  fprintf(f, "flvedge-vod 2\nkey %s\npath %s\nsize %llu\nslice %d\nstored %.0f\nexpires %.0f\n"
             "etag \"x\"\nlast_modified \ncontent_type video/x-flv\nversion " VER "\n",
          key, path, (unsigned long long)size, SLICE, (double)time(NULL),
          (double)time(NULL) + 3600);
  fclose(f);
  for (int i = 0; i < n; i++) {
    if (slices[i] < 0)
      continue;
    snprintf(file, sizeof(file), "%s/%s." VER ".%d", sub, hash, i);
    put(file, (size_t)slices[i]);
  }
}

static int exists(const char *key, const char *suffix) {
  char hash[41], file[600];
  struct stat st;
  fe_vod_hash(key, hash);
  snprintf(file, sizeof(file), "%s/%.2s/%s.%s", dir, hash, hash, suffix);
  return stat(file, &st) == 0;
}

static fe_config config(uint64_t max) {
  static fe_resource res;
  memset(&res, 0, sizeof(res));
  res.type = FE_RES_VOD;
  res.cache_dir = dir;
  res.cache_max_size = max;
  res.slice_size = SLICE;
  fe_config cfg = {.resources = &res, .nresources = 1};
  return cfg;
}

static fe_loop loop;

static void run_loop(void) {
  uv_run(&loop.uv, UV_RUN_DEFAULT);
}

static void test_scan_rebuilds_the_index(void) {
  long a[] = {SLICE, SLICE, 100};          /* complete: 2 * 64 KiB + 100 */
  long b[] = {SLICE, 5, -1};               /* slice 1 truncated: deleted */
  object("http://o/a.flv", "/v/a.flv", 2 * SLICE + 100, a, 3);
  object("http://o/b.flv", "/v/b.flv", 2 * SLICE + 100, b, 3);
  char hash[41], stray[600];
  fe_vod_hash("http://o/a.flv", hash);
  snprintf(stray, sizeof(stray), "%s/%.2s/%s." VER ".7", dir, hash, hash); /* beyond the object */
  put(stray, SLICE);
  snprintf(stray, sizeof(stray), "%s/%.2s/%s.2.tmp", dir, hash, hash);
  put(stray, 10);
  snprintf(stray, sizeof(stray), "%s/%.2s/0123456789012345678901234567890123456789.0", dir, hash);
  put(stray, SLICE); /* an orphan: no meta */
  char old[600];
  snprintf(old, sizeof(old), "%s/%.2s/%s.00000001.0", dir, hash, hash);
  put(old, SLICE); /* slice 0 of a content the object had before (another version) */

  fe_vod_node *n = fe_vod_node_new(1);
  fe_config cfg = config(1ull << 30);
  char err[256];
  FE_CHECK_EQ(fe_vod_node_configure(n, &cfg, err, sizeof(err)), 0);
  fe_vod_cache *c = fe_vod_node_cache(n, dir);
  FE_CHECK(c != NULL);
  fe_vod_meta m;
  FE_CHECK_EQ(fe_vod_lookup(c, "http://o/a.flv", (double)time(NULL), &m), FE_VOD_FRESH);
  FE_CHECK_EQ(m.size, 2 * SLICE + 100);
  FE_CHECK(strcmp(m.etag, "\"x\"") == 0);
  FE_CHECK(fe_vod_slice_stored(c, "http://o/a.flv", 2));
  FE_CHECK(fe_vod_slice_stored(c, "http://o/b.flv", 0));
  FE_CHECK(!fe_vod_slice_stored(c, "http://o/b.flv", 1));
  FE_CHECK(!exists("http://o/b.flv", VER "." "1"));
  FE_CHECK(!exists("http://o/a.flv", VER "." "7"));
  FE_CHECK(!exists("http://o/a.flv", "2.tmp"));
  FE_CHECK(access(stray, F_OK) != 0);
  FE_CHECK(access(old, F_OK) != 0);
  char metrics[512];
  fe_vod_metrics_render(n, metrics, sizeof(metrics));
  FE_CHECK(strstr(metrics, "flvedge_vod_cache_objects 2\n") != NULL);
  char want[64];
  snprintf(want, sizeof(want), "flvedge_vod_cache_bytes %d\n", 3 * SLICE + 100);
  FE_CHECK(strstr(metrics, want) != NULL);

  /* A slice whose file changed behind our back is dropped, never handed out again. */
  fe_vod_fetch_opts o = {.url = "http://127.0.0.1:9/a.flv", .client_path = "/v/a.flv",
                         .connect_timeout = 1, .read_timeout = 1, .ttl = 60, .slice_size = SLICE};
  fe_vod_waiter w = {.loop = &loop};
  fe_vod_file file;
  FE_CHECK_EQ(fe_vod_slice_get(c, "http://o/a.flv", 0, &o, &w, &file), FE_VOD_SLICE_FILE);
  FE_CHECK_EQ(file.size, SLICE);
  fe_vod_slice_drop(c, &loop, "http://o/a.flv", 0, &file);
  FE_CHECK(!fe_vod_slice_stored(c, "http://o/a.flv", 0));
  run_loop();

  /* Purge: a pattern, then an exact path; their files go. */
  FE_CHECK_EQ(fe_vod_purge(c, &loop, "/v/b*"), 1);
  FE_CHECK_EQ(fe_vod_purge(c, &loop, "/v/a.flv"), 1);
  FE_CHECK_EQ(fe_vod_purge(c, &loop, "/v/a.flv"), 0);
  run_loop();
  FE_CHECK_EQ(fe_vod_lookup(c, "http://o/a.flv", (double)time(NULL), &m), FE_VOD_ABSENT);
  FE_CHECK(!exists("http://o/a.flv", "meta"));
  FE_CHECK(!exists("http://o/a.flv", VER "." "1"));
  FE_CHECK(!exists("http://o/b.flv", VER "." "0"));
  fe_vod_node_free(n);
}

static void test_scan_evicts_to_the_limit(void) {
  long s[] = {SLICE, SLICE, SLICE, SLICE};
  object("http://o/c.flv", "/v/c.flv", 4 * SLICE, s, 4);
  object("http://o/d.flv", "/v/d.flv", 4 * SLICE, s, 4);
  fe_vod_node *n = fe_vod_node_new(1);
  fe_config cfg = config(3 * SLICE);
  char err[256];
  FE_CHECK_EQ(fe_vod_node_configure(n, &cfg, err, sizeof(err)), 0);
  fe_vod_cache *c = fe_vod_node_cache(n, dir);
  char metrics[512];
  fe_vod_metrics_render(n, metrics, sizeof(metrics));
  unsigned long long bytes = 0;
  const char *p = strstr(metrics, "\nflvedge_vod_cache_bytes ");
  FE_CHECK(p != NULL);
  if (p)
    bytes = strtoull(p + strlen("\nflvedge_vod_cache_bytes "), NULL, 10);
  FE_CHECK(bytes <= 3 * SLICE);
  FE_CHECK(bytes > 0);
  int files = 0;
  for (int i = 0; i < 4; i++)
    files += exists("http://o/c.flv", (char[]){VER_CHARS, '.', (char)('0' + i), 0}) +
             exists("http://o/d.flv", (char[]){VER_CHARS, '.', (char)('0' + i), 0});
  FE_CHECK_EQ((unsigned long long)files * SLICE, bytes);
  (void)c;
  fe_vod_node_free(n);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/fe-test-vod-%d", (int)getpid());
  mkdir(dir, 0755);
  fe_loop_init(&loop, 0);
  FE_RUN(test_scan_rebuilds_the_index);
  FE_RUN(test_scan_evicts_to_the_limit);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
  fe_loop_close(&loop);
  return FE_DONE();
}
