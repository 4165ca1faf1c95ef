#include "http/fe_http_range.h"

#include <stdlib.h>
#include <string.h>

#include "fe_test.h"

/* One Range header against one size: the result and the ranges it should give. */
typedef struct {
  const char *value;
  uint64_t size;
  int want;             /* count, FE_RANGE_IGNORE or FE_RANGE_UNSAT */
  fe_range ranges[4];
} range_case;

static const range_case range_cases[] = {
    /* RFC 9110 14.1.2's examples, on a 10000-byte representation. */
    {"bytes=0-499", 10000, 1, {{0, 499}}},
    {"bytes=500-999", 10000, 1, {{500, 999}}},
    {"bytes=-500", 10000, 1, {{9500, 9999}}},
    {"bytes=9500-", 10000, 1, {{9500, 9999}}},
    {"bytes=0-0,-1", 10000, 2, {{0, 0}, {9999, 9999}}},
    {"bytes= 0-999, 4500-5499, -1000", 10000, 3, {{0, 999}, {4500, 5499}, {9000, 9999}}},
    {"bytes=500-600,601-999", 10000, 1, {{500, 999}}},
    {"bytes=500-700,601-999", 10000, 1, {{500, 999}}},
    /* Clamping and satisfiability. */
    {"bytes=0-99999", 10000, 1, {{0, 9999}}},
    {"bytes=9999-9999", 10000, 1, {{9999, 9999}}},
    {"bytes=10000-", 10000, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=10000-20000", 10000, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=-0", 10000, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=-20000", 10000, 1, {{0, 9999}}},
    {"bytes=-10000", 10000, 1, {{0, 9999}}},
    {"bytes=0-", 0, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=-5", 0, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=20000-,5-9", 10000, 1, {{5, 9}}},
    {"bytes=-0,0-0", 1, 1, {{0, 0}}},
    /* Coalescing keeps request order; a late range can join two earlier ones. */
    {"bytes=50-59,0-9,10-19", 100, 2, {{50, 59}, {0, 19}}},
    {"bytes=0-9,20-29,5-25", 100, 1, {{0, 29}}},
    {"bytes=20-29,0-9,10-19", 100, 1, {{0, 29}}},
    {"bytes=0-9,11-19", 100, 2, {{0, 9}, {11, 19}}},
    {"bytes=0-,-10", 100, 1, {{0, 99}}},
    {"bytes=90-99,-5", 100, 1, {{90, 99}}},
    /* The #rule: empty elements and OWS around commas. */
    {"bytes=,0-1", 100, 1, {{0, 1}}},
    {"bytes=0-1,,,4-5,", 100, 2, {{0, 1}, {4, 5}}},
    {"bytes=0-1 , 4-5", 100, 2, {{0, 1}, {4, 5}}},
    {"bytes=0-1,\t4-5", 100, 2, {{0, 1}, {4, 5}}},
    {"  bytes=0-1  ", 100, 1, {{0, 1}}},
    /* The unit in any case; another unit ignored. */
    {"BYTES=0-1", 100, 1, {{0, 1}}},
    {"Bytes=0-1", 100, 1, {{0, 1}}},
    {"items=0-1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"byte=0-1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytesx=0-1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    /* Syntax errors. */
    {"", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=,", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes =0-1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=5-1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=-", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=a-b", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0 -1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0- 1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0-1 2-3", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0-1;2-3", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=--1", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=+1-2", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0-1,x", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=1-2-3", 100, FE_RANGE_IGNORE, {{0, 0}}},
    /* 64-bit numbers: the largest parses, one more overflows. */
    {"bytes=0-18446744073709551615", 100, 1, {{0, 99}}},
    {"bytes=0-18446744073709551616", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=18446744073709551615-", 100, FE_RANGE_UNSAT, {{0, 0}}},
    {"bytes=-18446744073709551615", 100, 1, {{0, 99}}},
    {"bytes=-99999999999999999999", 100, FE_RANGE_IGNORE, {{0, 0}}},
    {"bytes=0-1", UINT64_MAX, 1, {{0, 1}}},
    {"bytes=-1", UINT64_MAX, 1, {{UINT64_MAX - 1, UINT64_MAX - 1}}},
    {"bytes=5-", UINT64_MAX, 1, {{5, UINT64_MAX - 1}}},
};

static void test_range_parse_table(void) {
  for (size_t i = 0; i < sizeof(range_cases) / sizeof(range_cases[0]); i++) {
    const range_case *c = &range_cases[i];
    fe_range out[FE_RANGE_MAX];
    int n = fe_range_parse(c->value, strlen(c->value), c->size, out, FE_RANGE_MAX);

    if (n != c->want)
      fprintf(stderr, "case %zu: %s\n", i, c->value);
    FE_CHECK_EQ(n, c->want);
    for (int j = 0; j < n && n == c->want; j++) {
      if (out[j].first != c->ranges[j].first || out[j].last != c->ranges[j].last)
        fprintf(stderr, "case %zu: %s, range %d\n", i, c->value, j);
      FE_CHECK(out[j].first == c->ranges[j].first);
      FE_CHECK(out[j].last == c->ranges[j].last);
    }
  }
}

/* More specs than max is ignored whole (a range flood), even if they would coalesce. */
static void test_range_max(void) {
  char v[512] = "bytes=";
  fe_range out[FE_RANGE_MAX];

  for (int i = 0; i < FE_RANGE_MAX; i++)
    sprintf(v + strlen(v), "%s%d-%d", i ? "," : "", i * 10, i * 10 + 1);
  FE_CHECK_EQ(fe_range_parse(v, strlen(v), 1000, out, FE_RANGE_MAX), FE_RANGE_MAX);
  FE_CHECK(out[FE_RANGE_MAX - 1].first == (FE_RANGE_MAX - 1) * 10);
  strcat(v, ",0-1");
  FE_CHECK_EQ(fe_range_parse(v, strlen(v), 1000, out, FE_RANGE_MAX), FE_RANGE_IGNORE);
  FE_CHECK_EQ(fe_range_parse("bytes=0-1,0-1,0-1", 17, 1000, out, 2), FE_RANGE_IGNORE);
  FE_CHECK_EQ(fe_range_parse("bytes=0-1,0-1", 13, 1000, out, 2), 1);
  /* The length bounds the value: a prefix is parsed, not the NUL-terminated whole. */
  FE_CHECK_EQ(fe_range_parse("bytes=0-1,junk", 9, 1000, out, 2), 1);
  FE_CHECK(out[0].last == 1);
}

/* ---- dates ---- */

static void test_date_forms(void) {
  static const struct {
    const char *s;
    int ok;
    time_t t;
  } cases[] = {
      {"Sun, 06 Nov 1994 08:49:37 GMT", 0, 784111777},  /* RFC 9110 5.6.7 */
      {"Sunday, 06-Nov-94 08:49:37 GMT", 0, 784111777}, /* RFC 850 */
      {"Sun Nov  6 08:49:37 1994", 0, 784111777},       /* asctime */
      {"Sun Nov 16 08:49:37 1994", 0, 784975777},
      {"Thu, 01 Jan 1970 00:00:00 GMT", 0, 0},
      {"Wed, 31 Dec 1969 23:59:59 GMT", 0, -1},
      {"Tue, 19 Jan 2038 03:14:08 GMT", 0, 2147483648LL},
      {"Tue, 29 Feb 2000 12:00:00 GMT", 0, 951825600},
      {"Fri, 31 Dec 9999 23:59:59 GMT", 0, 253402300799LL},
      {"Sat, 31 Dec 2016 23:59:60 GMT", 0, 1483228800}, /* a leap second: the next second */
      {"sun, 06 nov 1994 08:49:37 gmt", 0, 784111777},  /* names in any case */
      {" Sun, 06 Nov 1994 08:49:37 GMT ", 0, 784111777},
      {"Sun, 06 Nov 1994 08:49:37 UTC", -1, 0},
      {"Sun, 06 Nov 1994 08:49:37", -1, 0},
      {"Sun, 6 Nov 1994 08:49:37 GMT", -1, 0},
      {"Sun, 06 Nov 94 08:49:37 GMT", -1, 0},
      {"Sun, 06 Foo 1994 08:49:37 GMT", -1, 0},
      {"Sun, 30 Feb 1994 08:49:37 GMT", -1, 0},
      {"Sun, 29 Feb 1900 08:49:37 GMT", -1, 0},
      {"Sun, 00 Nov 1994 08:49:37 GMT", -1, 0},
      {"Sun, 06 Nov 1994 24:00:00 GMT", -1, 0},
      {"Sun, 06 Nov 1994 08:60:00 GMT", -1, 0},
      {"Sun, 06 Nov 1994 08:49:61 GMT", -1, 0},
      {"Sun, 06 Nov 1994 08:49:37 GMTx", -1, 0},
      {"Xyz, 06 Nov 1994 08:49:37 GMT", -1, 0},
      {"Sun,06 Nov 1994 08:49:37 GMT", -1, 0},
      {"Sunday, 06 Nov 1994 08:49:37 GMT", -1, 0},
      {"Sun Nov 6 08:49:37 1994", -1, 0},
      {"Sun Nov  6 08:49:37 94", -1, 0},
      {"0", -1, 0},
      {"", -1, 0},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    time_t t = 12345;
    int rc = fe_http_date_parse(cases[i].s, strlen(cases[i].s), &t);
    if (rc != cases[i].ok || (rc == 0 && t != cases[i].t))
      fprintf(stderr, "date case %zu: %s -> %d %lld\n", i, cases[i].s, rc, (long long)t);
    FE_CHECK_EQ(rc, cases[i].ok);
    if (rc == 0)
      FE_CHECK_EQ(t, cases[i].t);
  }
}

/* RFC 850's two-digit year: at most 50 years ahead of now, else the century before. */
static void test_date_rfc850_century(void) {
  char buf[30], s[64];
  time_t now = time(NULL), t;
  int year, yy;

  fe_http_date_format(now, buf);
  year = atoi(buf + 12);
  /* 49 years ahead stays in the future; 51 years ahead is read as 49 years ago. */
  yy = (year + 49) % 100;
  snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", yy);
  FE_CHECK_EQ(fe_http_date_parse(s, strlen(s), &t), 0);
  fe_http_date_format(t, buf);
  FE_CHECK_EQ(atoi(buf + 12), year + 49);
  yy = (year + 51) % 100;
  snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", yy);
  FE_CHECK_EQ(fe_http_date_parse(s, strlen(s), &t), 0);
  fe_http_date_format(t, buf);
  FE_CHECK_EQ(atoi(buf + 12), year - 49);
  yy = year % 100;
  snprintf(s, sizeof(s), "Monday, 01-Jan-%02d 00:00:00 GMT", yy);
  FE_CHECK_EQ(fe_http_date_parse(s, strlen(s), &t), 0);
  fe_http_date_format(t, buf);
  FE_CHECK_EQ(atoi(buf + 12), year);
}

static void test_date_format(void) {
  static const struct {
    time_t t;
    const char *s;
  } cases[] = {
      {784111777, "Sun, 06 Nov 1994 08:49:37 GMT"},
      {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
      {-1, "Wed, 31 Dec 1969 23:59:59 GMT"},
      {951825600, "Tue, 29 Feb 2000 12:00:00 GMT"},
      {4102444800LL, "Fri, 01 Jan 2100 00:00:00 GMT"},
      {253402300799LL, "Fri, 31 Dec 9999 23:59:59 GMT"},
      {253402300800LL, "Fri, 31 Dec 9999 23:59:59 GMT"}, /* clamped to four-digit years */
      {-62167219200LL, "Sat, 01 Jan 0000 00:00:00 GMT"},
      {-62167219201LL, "Sat, 01 Jan 0000 00:00:00 GMT"},
  };
  char buf[30];

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    memset(buf, 'x', sizeof(buf));
    fe_http_date_format(cases[i].t, buf);
    if (strcmp(buf, cases[i].s) != 0)
      fprintf(stderr, "format %lld: %s\n", (long long)cases[i].t, buf);
    FE_CHECK(strcmp(buf, cases[i].s) == 0);
  }
  /* Every day for a few centuries: format then parse gives the same second back. */
  for (int64_t t = -2208988800LL; t < 7258118400LL; t += 86400 * 7 + 3661) {
    time_t back;
    fe_http_date_format((time_t)t, buf);
    FE_CHECK(strlen(buf) == 29);
    FE_CHECK_EQ(fe_http_date_parse(buf, 29, &back), 0);
    if (back != t) {
      FE_CHECK_EQ(back, t);
      break;
    }
  }
}

/* ---- conditionals ---- */

/* Sets a conditional header's value and length from a literal. */
#define SET(c, f, s) ((c).f = (s), (c).f##_len = sizeof(s) - 1)

static fe_conditionals cond_none(void) {
  fe_conditionals c;
  memset(&c, 0, sizeof(c));
  return c;
}

static void test_if_match(void) {
  fe_validators v = {"\"abc\"", 784111777};
  fe_validators weak = {"W/\"abc\"", 784111777};
  fe_validators none = {NULL, 0};
  static const struct {
    const char *value;
    int want_strong, want_weak, want_none;
  } cases[] = {
      {"\"abc\"", 0, 412, 412},
      {"W/\"abc\"", 412, 412, 412}, /* strong comparison: a weak tag never matches */
      {"\"xyz\"", 412, 412, 412},
      {"\"xyz\", \"abc\"", 0, 412, 412},
      {"\"xyz\",\"abc\"", 0, 412, 412},
      {", ,\"abc\",", 0, 412, 412},
      {"*", 0, 0, 0}, /* any current representation */
      {" * ", 0, 0, 0},
      {"abc", 412, 412, 412},
      {"\"ab", 412, 412, 412},
      {"\"abc\" junk", 0, 412, 412}, /* matched before the list broke */
      {"junk, \"abc\"", 412, 412, 412},
      {"", 412, 412, 412},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fe_conditionals c = cond_none();
    c.if_match = cases[i].value;
    c.if_match_len = strlen(cases[i].value);
    FE_CHECK_EQ(fe_http_preconditions(&c, &v), cases[i].want_strong);
    FE_CHECK_EQ(fe_http_preconditions(&c, &weak), cases[i].want_weak);
    FE_CHECK_EQ(fe_http_preconditions(&c, &none), cases[i].want_none);
  }
}

static void test_if_none_match(void) {
  fe_validators v = {"\"abc\"", 784111777};
  fe_validators weak = {"W/\"abc\"", 784111777};
  static const struct {
    const char *value;
    int want, want_weak;
  } cases[] = {
      {"\"abc\"", 304, 304},
      {"W/\"abc\"", 304, 304}, /* weak comparison */
      {"\"xyz\"", 0, 0},
      {"\"xyz\", W/\"abc\"", 304, 304},
      {"*", 304, 304},
      {"\"ABC\"", 0, 0}, /* opaque tags compare byte for byte */
      {"abc", 0, 0},
      {"", 0, 0},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fe_conditionals c = cond_none();
    c.if_none_match = cases[i].value;
    c.if_none_match_len = strlen(cases[i].value);
    FE_CHECK_EQ(fe_http_preconditions(&c, &v), cases[i].want);
    FE_CHECK_EQ(fe_http_preconditions(&c, &weak), cases[i].want_weak);
  }
}

static void test_dates_conditions(void) {
  fe_validators v = {"\"abc\"", 784111777}; /* Sun, 06 Nov 1994 08:49:37 GMT */
  fe_validators nolm = {"\"abc\"", 0};
  fe_conditionals c = cond_none();

  /* If-Modified-Since: not modified when Last-Modified <= the date. */
  SET(c, if_modified_since, "Sun, 06 Nov 1994 08:49:37 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 304);
  FE_CHECK_EQ(fe_http_preconditions(&c, &nolm), 0);
  SET(c, if_modified_since, "Sun, 06 Nov 1994 08:49:38 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 304);
  SET(c, if_modified_since, "Sun, 06 Nov 1994 08:49:36 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
  SET(c, if_modified_since, "Sunday, 06-Nov-94 08:49:37 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 304);
  SET(c, if_modified_since, "yesterday"); /* invalid: ignored */
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
  /* If-None-Match present: If-Modified-Since is not looked at. */
  SET(c, if_modified_since, "Sun, 06 Nov 1994 08:49:37 GMT");
  SET(c, if_none_match, "\"xyz\"");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
  SET(c, if_none_match, "\"abc\"");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 304);

  /* If-Unmodified-Since: 412 when modified after the date. */
  c = cond_none();
  SET(c, if_unmodified_since, "Sun, 06 Nov 1994 08:49:36 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 412);
  FE_CHECK_EQ(fe_http_preconditions(&c, &nolm), 0);
  SET(c, if_unmodified_since, "Sun, 06 Nov 1994 08:49:37 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
  SET(c, if_unmodified_since, "garbage");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
  /* ... but not when If-Match is there (and matches). */
  SET(c, if_unmodified_since, "Sun, 06 Nov 1994 08:49:36 GMT");
  SET(c, if_match, "\"abc\"");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);

  /* The order of 13.2.2: a failed If-Match is 412 even when If-None-Match would give 304. */
  c = cond_none();
  SET(c, if_match, "\"xyz\"");
  SET(c, if_none_match, "\"abc\"");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 412);
  SET(c, if_match, "\"abc\"");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 304);
  c = cond_none();
  SET(c, if_unmodified_since, "Sun, 06 Nov 1994 08:49:36 GMT");
  SET(c, if_modified_since, "Sun, 06 Nov 1994 08:49:37 GMT");
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 412);
  /* Nothing conditional: serve. */
  c = cond_none();
  FE_CHECK_EQ(fe_http_preconditions(&c, &v), 0);
}

static void test_if_range(void) {
  fe_validators v = {"\"abc\"", 784111777};
  fe_validators weak = {"W/\"abc\"", 784111777};
  fe_validators none = {NULL, 0};
  static const struct {
    const char *value;
    int want, want_weak, want_none;
  } cases[] = {
      {"\"abc\"", 1, 0, 0},
      {" \"abc\" ", 1, 0, 0},
      {"W/\"abc\"", 0, 0, 0}, /* a weak tag never matches */
      {"\"xyz\"", 0, 0, 0},
      {"\"abc\", \"xyz\"", 0, 0, 0}, /* one tag, not a list */
      {"Sun, 06 Nov 1994 08:49:37 GMT", 1, 1, 0},
      {"Sun Nov  6 08:49:37 1994", 1, 1, 0},
      {"Sun, 06 Nov 1994 08:49:38 GMT", 0, 0, 0}, /* exactly equal, not later */
      {"Sun, 06 Nov 1994 08:49:36 GMT", 0, 0, 0},
      {"Wed, 09 Jun 2021 10:18:14 GMT", 0, 0, 0}, /* a date starting with W is still a date */
      {"*", 0, 0, 0},
      {"", 0, 0, 0},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fe_conditionals c = cond_none();
    c.if_range = cases[i].value;
    c.if_range_len = strlen(cases[i].value);
    if (fe_http_if_range(&c, &v) != cases[i].want)
      fprintf(stderr, "if-range case %zu: %s\n", i, cases[i].value);
    FE_CHECK_EQ(fe_http_if_range(&c, &v), cases[i].want);
    FE_CHECK_EQ(fe_http_if_range(&c, &weak), cases[i].want_weak);
    FE_CHECK_EQ(fe_http_if_range(&c, &none), cases[i].want_none);
  }
  {
    fe_conditionals c = cond_none();
    fe_validators wed = {NULL, 1623233894}; /* Wed, 09 Jun 2021 10:18:14 GMT */
    FE_CHECK_EQ(fe_http_if_range(&c, &v), 1); /* no If-Range: the Range applies */
    SET(c, if_range, "Wed, 09 Jun 2021 10:18:14 GMT");
    FE_CHECK_EQ(fe_http_if_range(&c, &wed), 1);
  }
}

/* ---- multipart/byteranges ---- */

static void test_multipart(void) {
  const fe_range r[3] = {{0, 0}, {500, 999}, {9999, 9999}};
  const char *b = "THIS_STRING_SEPARATES";
  char buf[256];
  size_t n;
  uint64_t sum = 0;

  n = fe_range_part_head(buf, sizeof(buf), b, "video/x-flv", &r[1], 10000);
  FE_CHECK(n == strlen("\r\n--THIS_STRING_SEPARATES\r\nContent-Type: video/x-flv\r\n"
                       "Content-Range: bytes 500-999/10000\r\n\r\n"));
  FE_CHECK(memcmp(buf, "\r\n--THIS_STRING_SEPARATES\r\nContent-Type: video/x-flv\r\n"
                       "Content-Range: bytes 500-999/10000\r\n\r\n", n) == 0);
  /* Exactly its length fits (no NUL written); one byte less is refused. */
  FE_CHECK_EQ(fe_range_part_head(buf, n, b, "video/x-flv", &r[1], 10000), n);
  FE_CHECK_EQ(fe_range_part_head(buf, n - 1, b, "video/x-flv", &r[1], 10000), 0);
  n = fe_range_part_head(buf, sizeof(buf), b, NULL, &r[0], 10000);
  FE_CHECK(n == strlen("\r\n--THIS_STRING_SEPARATES\r\nContent-Range: bytes 0-0/10000\r\n\r\n"));
  FE_CHECK(memcmp(buf, "\r\n--THIS_STRING_SEPARATES\r\nContent-Range: bytes 0-0/10000\r\n\r\n", n) == 0);

  n = fe_range_part_tail(buf, sizeof(buf), b);
  FE_CHECK(n == strlen("\r\n--THIS_STRING_SEPARATES--\r\n"));
  FE_CHECK(memcmp(buf, "\r\n--THIS_STRING_SEPARATES--\r\n", n) == 0);
  FE_CHECK_EQ(fe_range_part_tail(buf, n, b), n);
  FE_CHECK_EQ(fe_range_part_tail(buf, n - 1, b), 0);

  /* The announced length is what the writer produces, with and without a Content-Type. */
  for (int ct = 0; ct < 2; ct++) {
    const char *ctype = ct ? "video/x-flv" : NULL;
    sum = 0;
    for (int i = 0; i < 3; i++)
      sum += fe_range_part_head(buf, sizeof(buf), b, ctype, &r[i], 10000) + r[i].last - r[i].first + 1;
    sum += fe_range_part_tail(buf, sizeof(buf), b);
    FE_CHECK(fe_range_multipart_length(r, 3, b, ctype, 10000) == sum);
  }
  /* Large numbers: twenty digits each. */
  {
    fe_range big = {UINT64_MAX - 10, UINT64_MAX - 1};
    n = fe_range_part_head(buf, sizeof(buf), "b", NULL, &big, UINT64_MAX);
    FE_CHECK(n == strlen("\r\n--b\r\nContent-Range: bytes 18446744073709551605-"
                         "18446744073709551614/18446744073709551615\r\n\r\n"));
    FE_CHECK(fe_range_multipart_length(&big, 1, "b", NULL, UINT64_MAX) ==
             n + 10 + strlen("\r\n--b--\r\n"));
  }
}

/* A parsed request end to end: the ranges a parse gives add up with their framing. */
static void test_multipart_from_parse(void) {
  const char *v = "bytes=0-99,200-299,-50";
  fe_range out[FE_RANGE_MAX];
  char buf[256];
  uint64_t sum = 0;
  int n = fe_range_parse(v, strlen(v), 1000, out, FE_RANGE_MAX);

  FE_CHECK_EQ(n, 3);
  for (int i = 0; i < n; i++)
    sum += fe_range_part_head(buf, sizeof(buf), "xyz", "application/octet-stream", &out[i], 1000) +
           out[i].last - out[i].first + 1;
  sum += fe_range_part_tail(buf, sizeof(buf), "xyz");
  FE_CHECK(sum == fe_range_multipart_length(out, n, "xyz", "application/octet-stream", 1000));
  FE_CHECK(sum > 250);
}

int main(void) {
  FE_RUN(test_range_parse_table);
  FE_RUN(test_range_max);
  FE_RUN(test_date_forms);
  FE_RUN(test_date_rfc850_century);
  FE_RUN(test_date_format);
  FE_RUN(test_if_match);
  FE_RUN(test_if_none_match);
  FE_RUN(test_dates_conditions);
  FE_RUN(test_if_range);
  FE_RUN(test_multipart);
  FE_RUN(test_multipart_from_parse);
  return FE_DONE();
}
