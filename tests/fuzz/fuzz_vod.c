/*
 * libFuzzer target for the text the VOD cache takes from outside (vod/fe_vod.c): an origin's
 * Content-Range, and the .meta records of a cache directory, which anyone with access to the disk
 * may change behind flvedge's back.
 *
 * Input: [selector] then by selector & 1:
 *   0  a Content-Range value (up to the first NUL): fe_vod_content_range_parse;
 *   1  a .meta record: fe_vod_meta_parse.
 *
 * Checks: a Content-Range taken has FIRST <= LAST < TOTAL, was "bytes " (any case) and digits, and
 * written back parses to the same three numbers. A record taken has a key and a path without a
 * line break, a size, a slice size of 64 KiB..1 GiB and at most FE_VOD_MAX_SLICES slices, finite
 * times, and written back (fe_vod_meta_format) parses to the same fields; a record refused leaves
 * nothing allocated (LeakSanitizer).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vod/fe_vod.h"

#include "fuzz_check.h"

static void fuzz_content_range(const uint8_t *data, size_t size) {
  char s[256];
  size_t n = strnlen((const char *)data, size);
  if (n >= sizeof(s))
    n = sizeof(s) - 1;
  memcpy(s, data, n);
  s[n] = 0;
  uint64_t first, last, total;
  if (fe_vod_content_range_parse(s, &first, &last, &total) < 0)
    return;
  FUZZ_CHECK(first <= last && last < total);
  FUZZ_CHECK(strncasecmp(s, "bytes ", 6) == 0 && strspn(s + 6, "0123456789-/") == n - 6);
  char back[96];
  snprintf(back, sizeof(back), "bytes %llu-%llu/%llu", (unsigned long long)first,
           (unsigned long long)last, (unsigned long long)total);
  uint64_t f2, l2, t2;
  FUZZ_CHECK(fe_vod_content_range_parse(back, &f2, &l2, &t2) == 0);
  FUZZ_CHECK(f2 == first && l2 == last && t2 == total);
}

static void fuzz_meta(const uint8_t *data, size_t size) {
  char *key, *path;
  fe_vod_meta m;
  if (fe_vod_meta_parse((const char *)data, size, &key, &path, &m) < 0)
    return;
  FUZZ_CHECK(key && path && !strchr(key, '\n') && !strchr(path, '\n'));
  FUZZ_CHECK(m.size > 0 && m.slice_size >= 65536 && m.slice_size <= (1u << 30));
  FUZZ_CHECK(m.size / m.slice_size + (m.size % m.slice_size != 0) <= FE_VOD_MAX_SLICES);
  FUZZ_CHECK(isfinite(m.stored) && isfinite(m.expires));
  FUZZ_CHECK(memchr(m.etag, 0, sizeof(m.etag)) && memchr(m.last_modified, 0, sizeof(m.last_modified)) &&
             memchr(m.content_type, 0, sizeof(m.content_type)));
  /* Written back and read again: the same record (times to the writer's 3 decimals). */
  size_t cap = strlen(key) + strlen(path) + 4096;
  char *text = malloc(cap);
  FUZZ_CHECK(text != NULL);
  size_t n = fe_vod_meta_format(&m, key, path, text, cap);
  FUZZ_CHECK(n > 0 && n < cap - 1);
  char *key2, *path2;
  fe_vod_meta m2;
  FUZZ_CHECK(fe_vod_meta_parse(text, n, &key2, &path2, &m2) == 0);
  FUZZ_CHECK(strcmp(key, key2) == 0 && strcmp(path, path2) == 0);
  FUZZ_CHECK(m.size == m2.size && m.slice_size == m2.slice_size && m.version == m2.version);
  FUZZ_CHECK(fabs(m.stored - m2.stored) < 0.001 && fabs(m.expires - m2.expires) < 0.001);
  FUZZ_CHECK(strcmp(m.etag, m2.etag) == 0 && strcmp(m.last_modified, m2.last_modified) == 0 &&
             strcmp(m.content_type, m2.content_type) == 0);
  free(text);
  free(key);
  free(path);
  free(key2);
  free(path2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  if (data[0] & 1)
    fuzz_meta(data + 1, size - 1);
  else
    fuzz_content_range(data + 1, size - 1);
  return 0;
}
