/*
 * libFuzzer target for fe_http_range and fe_flv_meta: the pure functions the VOD handler runs on
 * client headers and on a file's first bytes. The first byte chooses what the rest is:
 *   0: [max] a Range value. Checks: at most max ranges, each within the size, first <= last, no
 *      two overlapping or adjacent, the multipart length equal to its heads, bytes and tail.
 *   1: conditional headers split at '\n' (If-Match, If-None-Match, If-Modified-Since,
 *      If-Unmodified-Since, If-Range, stored ETag, stored date); results in their sets.
 *   2: an HTTP date; a parsed date formats back to one that parses to the same second.
 *   3: FLV bytes for fe_flv_meta_scan (file size: the input's); the index ascending and inside
 *      [prefix_end, size), and the scan of shorter prefixes never contradicting it.
 * Every value is copied to an exact-size heap buffer, so ASan sees a read past its length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flv/fe_flv_meta.h"
#include "fuzz_check.h"
#include "http/fe_http_range.h"

static char *fuzz_dup(const uint8_t *p, size_t n) {
  char *s = malloc(n ? n : 1);
  FUZZ_CHECK(s);
  if (n)
    memcpy(s, p, n);
  return s;
}

static void fuzz_range(const uint8_t *data, size_t size) {
  static const uint64_t sizes[] = {0, 1, 2, 100, 10000, UINT64_MAX};
  fe_range out[FE_RANGE_MAX];
  char buf[512];
  int max;
  char *v;

  if (size < 1)
    return;
  max = data[0] % (FE_RANGE_MAX + 1);
  v = fuzz_dup(data + 1, size - 1);
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
    uint64_t total = 0; /* may wrap for huge sizes: both sides wrap alike */
    int n = fe_range_parse(v, size - 1, sizes[s], out, max);

    FUZZ_CHECK(n >= FE_RANGE_UNSAT && n <= max);
    for (int i = 0; i < n; i++) {
      FUZZ_CHECK(out[i].first <= out[i].last && out[i].last < sizes[s]);
      for (int j = 0; j < i; j++)
        FUZZ_CHECK(out[j].last + 1 < out[i].first || out[i].last + 1 < out[j].first);
      total += fe_range_part_head(buf, sizeof(buf), "B0UND", "video/x-flv", &out[i], sizes[s]);
      total += out[i].last - out[i].first + 1;
    }
    if (n > 0) {
      total += fe_range_part_tail(buf, sizeof(buf), "B0UND");
      FUZZ_CHECK(total == fe_range_multipart_length(out, n, "B0UND", "video/x-flv", sizes[s]));
    }
  }
  free(v);
}

static void fuzz_conditionals(const uint8_t *data, size_t size) {
  const char *field[7] = {0};
  size_t flen[7] = {0};
  char *copy[7] = {0};
  size_t at = 0;
  fe_conditionals c;
  fe_validators v;
  time_t t = 0;
  int pre, ir;

  /* Up to seven '\n'-separated fields; an empty field is an absent header. */
  for (int i = 0; i < 7 && at <= size; i++) {
    const uint8_t *nl = memchr(data + at, '\n', size - at);
    size_t n = nl ? (size_t)(nl - (data + at)) : size - at;
    if (n > 0) {
      copy[i] = fuzz_dup(data + at, n);
      field[i] = copy[i];
      flen[i] = n;
    }
    at += n + 1;
    if (!nl)
      break;
  }
  memset(&c, 0, sizeof(c));
  c.if_match = field[0], c.if_match_len = flen[0];
  c.if_none_match = field[1], c.if_none_match_len = flen[1];
  c.if_modified_since = field[2], c.if_modified_since_len = flen[2];
  c.if_unmodified_since = field[3], c.if_unmodified_since_len = flen[3];
  c.if_range = field[4], c.if_range_len = flen[4];
  /* The stored ETag is a C string: cut at the first NUL. */
  v.etag = NULL;
  if (field[5]) {
    char *e = malloc(flen[5] + 1);
    FUZZ_CHECK(e);
    memcpy(e, field[5], flen[5]);
    e[flen[5]] = 0;
    free(copy[5]);
    copy[5] = e;
    v.etag = e;
  }
  v.last_modified = 0;
  if (field[6] && fe_http_date_parse(field[6], flen[6], &t) == 0)
    v.last_modified = t;
  pre = fe_http_preconditions(&c, &v);
  FUZZ_CHECK(pre == 0 || pre == 304 || pre == 412);
  ir = fe_http_if_range(&c, &v);
  FUZZ_CHECK(ir == 0 || ir == 1);
  if (!c.if_range)
    FUZZ_CHECK(ir == 1);
  /* Without If-Match and If-Unmodified-Since nothing can give 412. */
  if (!c.if_match && !c.if_unmodified_since)
    FUZZ_CHECK(pre != 412);
  for (int i = 0; i < 7; i++)
    free(copy[i]);
}

static void fuzz_date(const uint8_t *data, size_t size) {
  char *s = fuzz_dup(data, size);
  char buf[30];
  time_t t, back;

  if (fe_http_date_parse(s, size, &t) == 0) {
    fe_http_date_format(t, buf);
    FUZZ_CHECK(strlen(buf) == 29);
    FUZZ_CHECK(fe_http_date_parse(buf, 29, &back) == 0);
    FUZZ_CHECK(back == t);
  }
  free(s);
}

static void fuzz_meta_check(const fe_flv_meta *m, uint64_t file_size) {
  FUZZ_CHECK(m->header_len >= 13);
  FUZZ_CHECK(m->prefix_end >= m->header_len);
  FUZZ_CHECK(m->duration >= 0);
  FUZZ_CHECK((m->nkeyframes == 0) == (m->times == NULL));
  for (uint32_t i = 0; i < m->nkeyframes; i++) {
    FUZZ_CHECK(m->times[i] >= 0);
    FUZZ_CHECK(m->positions[i] >= m->prefix_end);
    FUZZ_CHECK(file_size == 0 || m->positions[i] < file_size);
    if (i > 0)
      FUZZ_CHECK(m->times[i] >= m->times[i - 1] && m->positions[i] > m->positions[i - 1]);
    FUZZ_CHECK(fe_flv_meta_find(m, m->times[i]) >= i);
  }
}

static void fuzz_meta(const uint8_t *data, size_t size) {
  uint8_t *copy = (uint8_t *)fuzz_dup(data, size);
  fe_flv_meta m, part;
  int rc = fe_flv_meta_scan(copy, size, size, &m);

  /* The whole file is there: "more" only for an empty input (a size of 0 is "unknown"). */
  FUZZ_CHECK(rc <= 0 || (rc == FE_FLV_META_MORE && size == 0));
  if (rc == 0) {
    fuzz_meta_check(&m, size);
    /* Size unknown, shorter lengths: "more", or the same prefix once the first frame's head is in. */
    for (size_t len = 0; len < size; len += 1 + len / 2) {
      int r = fe_flv_meta_scan(copy, len, 0, &part);
      FUZZ_CHECK(r == FE_FLV_META_MORE || r == 0);
      if (r == 0) {
        fuzz_meta_check(&part, 0);
        FUZZ_CHECK(part.prefix_end == m.prefix_end && part.header_len == m.header_len);
      }
      fe_flv_meta_free(&part);
    }
  } else {
    FUZZ_CHECK(m.times == NULL && m.positions == NULL && m.nkeyframes == 0);
  }
  fe_flv_meta_free(&m);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  switch (data[0] & 3) {
  case 0:
    fuzz_range(data + 1, size - 1);
    break;
  case 1:
    fuzz_conditionals(data + 1, size - 1);
    break;
  case 2:
    fuzz_date(data + 1, size - 1);
    break;
  case 3:
    fuzz_meta(data + 1, size - 1);
    break;
  }
  return 0;
}
