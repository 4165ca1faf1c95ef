#include "http/fe_http_range.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* A borrowed byte span with a cursor: every reader below checks `p < end` before a byte. */
typedef struct {
  const char *p, *end;
} fe_rg_cur;

static int fe_rg_ows(char c) {
  return c == ' ' || c == '\t';
}

static void fe_rg_skip_ows(fe_rg_cur *c) {
  while (c->p < c->end && fe_rg_ows(*c->p))
    c->p++;
}

static int fe_rg_lower(int c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Trims OWS on both sides: a field value as received may keep it. */
static fe_rg_cur fe_rg_trim(const char *s, size_t len) {
  fe_rg_cur c = {s, s + len};
  fe_rg_skip_ows(&c);
  while (c.end > c.p && fe_rg_ows(c.end[-1]))
    c.end--;
  return c;
}

/* 1*DIGIT into *v; 0 when there is no digit or the number does not fit 64 bits. */
static int fe_rg_uint(fe_rg_cur *c, uint64_t *v) {
  const char *start = c->p;
  uint64_t n = 0;

  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    unsigned d = (unsigned)(*c->p - '0');
    if (n > (UINT64_MAX - d) / 10)
      return 0;
    n = n * 10 + d;
    c->p++;
  }
  *v = n;
  return c->p > start;
}

/*
 * Adds r to the n ranges of out, merging it with every one it overlaps or touches. The merged
 * range takes the place of the earliest one it absorbed, so request order is kept otherwise.
 */
static int fe_rg_add(fe_range *out, int n, fe_range r) {
  int at = n;

  for (int i = 0; i < n;) {
    /* Overlapping or adjacent (last < size, so last + 1 cannot wrap). */
    if (out[i].first <= r.last + 1 && r.first <= out[i].last + 1) {
      if (out[i].first < r.first)
        r.first = out[i].first;
      if (out[i].last > r.last)
        r.last = out[i].last;
      if (i < at)
        at = i;
      memmove(out + i, out + i + 1, (size_t)(n - i - 1) * sizeof(*out));
      n--;
      i = 0; /* the grown range may now reach one already passed */
      continue;
    }
    i++;
  }
  if (at > n)
    at = n;
  memmove(out + at + 1, out + at, (size_t)(n - at) * sizeof(*out));
  out[at] = r;
  return n + 1;
}

int fe_range_parse(const char *value, size_t len, uint64_t size, fe_range *out, int max) {
  fe_rg_cur c;
  int n = 0, specs = 0;

  if (!value || max <= 0)
    return FE_RANGE_IGNORE;
  c = fe_rg_trim(value, len);
  if (c.end - c.p < 6)
    return FE_RANGE_IGNORE;
  for (int i = 0; i < 5; i++)
    if (fe_rg_lower((unsigned char)c.p[i]) != "bytes"[i])
      return FE_RANGE_IGNORE;
  if (c.p[5] != '=')
    return FE_RANGE_IGNORE;
  c.p += 6;
  /* range-set = 1#range-spec; the #rule lets empty elements stand between commas. */
  for (;;) {
    uint64_t first, last;
    fe_range r;
    int sat;

    while (c.p < c.end && (*c.p == ',' || fe_rg_ows(*c.p)))
      c.p++;
    if (c.p == c.end)
      break;
    if (*c.p == '-') { /* suffix-range: the last N bytes */
      c.p++;
      if (!fe_rg_uint(&c, &last))
        return FE_RANGE_IGNORE;
      sat = last > 0 && size > 0;
      r.first = last >= size ? 0 : size - last;
      r.last = size - 1;
    } else {
      if (!fe_rg_uint(&c, &first) || c.p == c.end || *c.p != '-')
        return FE_RANGE_IGNORE;
      c.p++;
      if (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
        if (!fe_rg_uint(&c, &last) || last < first)
          return FE_RANGE_IGNORE;
      } else {
        last = UINT64_MAX;
      }
      sat = first < size;
      r.first = first;
      r.last = sat && last > size - 1 ? size - 1 : last;
    }
    if (++specs > max)
      return FE_RANGE_IGNORE;
    if (sat)
      n = fe_rg_add(out, n, r);
    /* An element ends at OWS then a comma, or at the end. */
    fe_rg_skip_ows(&c);
    if (c.p < c.end && *c.p != ',')
      return FE_RANGE_IGNORE;
  }
  if (specs == 0)
    return FE_RANGE_IGNORE;
  return n > 0 ? n : FE_RANGE_UNSAT;
}

/* ---- entity tags (RFC 9110 8.8.3) ---- */

typedef struct {
  const char *opaque; /* between the quotes */
  size_t len;
  int weak;
} fe_rg_etag;

static int fe_rg_etagc(unsigned char c) {
  return c == 0x21 || (c >= 0x23 && c != 0x7f);
}

/* entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, at the cursor. */
static int fe_rg_etag_read(fe_rg_cur *c, fe_rg_etag *t) {
  t->weak = 0;
  if (c->end - c->p >= 2 && c->p[0] == 'W' && c->p[1] == '/') {
    t->weak = 1;
    c->p += 2;
  }
  if (c->p == c->end || *c->p != '"')
    return 0;
  t->opaque = ++c->p;
  while (c->p < c->end && fe_rg_etagc((unsigned char)*c->p))
    c->p++;
  if (c->p == c->end || *c->p != '"')
    return 0;
  t->len = (size_t)(c->p - t->opaque);
  c->p++;
  return 1;
}

/* The stored ETag as one entity-tag; 0 when there is none or it is not one (nothing matches it). */
static int fe_rg_stored_etag(const fe_validators *v, fe_rg_etag *t) {
  fe_rg_cur c;

  if (!v->etag)
    return 0;
  c = fe_rg_trim(v->etag, strlen(v->etag));
  return fe_rg_etag_read(&c, t) && c.p == c.end;
}

static int fe_rg_etag_eq(const fe_rg_etag *a, const fe_rg_etag *b, int strong) {
  if (strong && (a->weak || b->weak))
    return 0;
  return a->len == b->len && memcmp(a->opaque, b->opaque, a->len) == 0;
}

/*
 * If-Match / If-None-Match = "*" / #entity-tag: 1 when "*" or a member matches the stored ETag
 * (strong or weak comparison). A member that does not parse ends the list: what came before it
 * still counts, nothing after it does.
 */
static int fe_rg_etag_list_match(const char *s, size_t len, const fe_validators *v, int strong) {
  fe_rg_cur c = fe_rg_trim(s, len);
  fe_rg_etag have, t;
  int stored;

  if (c.end - c.p == 1 && *c.p == '*')
    return 1; /* we only answer for a representation we have */
  stored = fe_rg_stored_etag(v, &have);
  for (;;) {
    while (c.p < c.end && (*c.p == ',' || fe_rg_ows(*c.p)))
      c.p++;
    if (c.p == c.end || !fe_rg_etag_read(&c, &t))
      return 0;
    if (stored && fe_rg_etag_eq(&t, &have, strong))
      return 1;
    fe_rg_skip_ows(&c);
    if (c.p < c.end && *c.p != ',')
      return 0;
  }
}

int fe_http_preconditions(const fe_conditionals *c, const fe_validators *v) {
  time_t t;

  /* 13.2.2 steps 1 and 2: the state-changing preconditions, failing with 412. */
  if (c->if_match) {
    if (!fe_rg_etag_list_match(c->if_match, c->if_match_len, v, 1))
      return 412;
  } else if (c->if_unmodified_since) {
    if (fe_http_date_parse(c->if_unmodified_since, c->if_unmodified_since_len, &t) == 0 &&
        v->last_modified != 0 && v->last_modified > t)
      return 412;
  }
  /* Steps 3 and 4: the cache validators, answering a GET or HEAD with 304. */
  if (c->if_none_match) {
    if (fe_rg_etag_list_match(c->if_none_match, c->if_none_match_len, v, 0))
      return 304;
  } else if (c->if_modified_since) {
    if (fe_http_date_parse(c->if_modified_since, c->if_modified_since_len, &t) == 0 &&
        v->last_modified != 0 && v->last_modified <= t)
      return 304;
  }
  return 0;
}

int fe_http_if_range(const fe_conditionals *c, const fe_validators *v) {
  fe_rg_cur cur;
  fe_rg_etag t, have;
  time_t when;

  if (!c->if_range)
    return 1;
  cur = fe_rg_trim(c->if_range, c->if_range_len);
  /* An entity-tag starts with DQUOTE or W/; anything else must be an HTTP-date. */
  if (cur.p < cur.end && (*cur.p == '"' || (cur.end - cur.p >= 2 && cur.p[0] == 'W' && cur.p[1] == '/'))) {
    if (!fe_rg_etag_read(&cur, &t) || cur.p != cur.end)
      return 0;
    return fe_rg_stored_etag(v, &have) && fe_rg_etag_eq(&t, &have, 1);
  }
  if (fe_http_date_parse(cur.p, (size_t)(cur.end - cur.p), &when) != 0)
    return 0;
  return v->last_modified != 0 && when == v->last_modified;
}

/* ---- HTTP dates (RFC 9110 5.6.7), in UTC by arithmetic: no locale, no TZ ---- */

static const char fe_rg_days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char fe_rg_long_days[7][10] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                            "Thursday", "Friday", "Saturday"};
static const char fe_rg_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t fe_rg_days_from_civil(int64_t y, unsigned m, unsigned d) {
  int64_t era;
  unsigned yoe, doy, doe;

  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void fe_rg_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  int64_t era;
  unsigned doe, yoe, doy, mp;

  z += 719468;
  era = (z >= 0 ? z : z - 146096) / 146097;
  doe = (unsigned)(z - era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned fe_rg_month_days(int64_t y, unsigned m) {
  static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : days[m - 1];
}

/* Matches a literal at the cursor, letters in any case (recipients should be lenient). */
static int fe_rg_lit(fe_rg_cur *c, const char *s) {
  size_t n = strlen(s);
  if ((size_t)(c->end - c->p) < n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (fe_rg_lower((unsigned char)c->p[i]) != fe_rg_lower((unsigned char)s[i]))
      return 0;
  c->p += n;
  return 1;
}

/* Exactly n digits. */
static int fe_rg_digits(fe_rg_cur *c, int n, unsigned *v) {
  *v = 0;
  if (c->end - c->p < n)
    return 0;
  for (int i = 0; i < n; i++) {
    if (c->p[i] < '0' || c->p[i] > '9')
      return 0;
    *v = *v * 10 + (unsigned)(c->p[i] - '0');
  }
  c->p += n;
  return 1;
}

static int fe_rg_month(fe_rg_cur *c, unsigned *m) {
  for (unsigned i = 0; i < 12; i++)
    if (fe_rg_lit(c, fe_rg_months[i])) {
      *m = i + 1;
      return 1;
    }
  return 0;
}

/* time-of-day = hour ":" minute ":" second (second 60 allowed: a leap second) */
static int fe_rg_time(fe_rg_cur *c, unsigned *h, unsigned *mi, unsigned *s) {
  return fe_rg_digits(c, 2, h) && fe_rg_lit(c, ":") && fe_rg_digits(c, 2, mi) &&
         fe_rg_lit(c, ":") && fe_rg_digits(c, 2, s) && *h < 24 && *mi < 60 && *s <= 60;
}

/* RFC 850's two-digit year: the year with those digits at most 50 years after the current one. */
static int64_t fe_rg_two_digit_year(unsigned yy) {
  int64_t now_y, y;
  unsigned m, d;
  time_t now = time(NULL);

  fe_rg_civil_from_days((int64_t)now / 86400 - ((int64_t)now % 86400 < 0), &now_y, &m, &d);
  y = now_y - now_y % 100 + yy;
  if (y > now_y + 50)
    y -= 100;
  else if (y <= now_y - 50)
    y += 100;
  return y;
}

int fe_http_date_parse(const char *s, size_t len, time_t *out) {
  fe_rg_cur c;
  unsigned day = 0, mon = 0, h = 0, mi = 0, sec = 0, v = 0;
  int64_t year = 0;
  int form = -1, ok = 0;

  if (!s)
    return -1;
  c = fe_rg_trim(s, len);
  /* The day name tells the form: "Sunday, " RFC 850, "Sun, " IMF-fixdate, "Sun " asctime. */
  for (int i = 0; i < 7 && form < 0; i++) {
    fe_rg_cur at = c;
    if (fe_rg_lit(&at, fe_rg_long_days[i]) && fe_rg_lit(&at, ", ")) {
      form = 850;
      c = at;
      break;
    }
    at = c;
    if (!fe_rg_lit(&at, fe_rg_days[i]))
      continue;
    if (fe_rg_lit(&at, ", "))
      form = 1123;
    else if (fe_rg_lit(&at, " "))
      form = 0;
    else
      return -1;
    c = at;
  }
  if (form == 1123) { /* Sun, 06 Nov 1994 08:49:37 GMT */
    ok = fe_rg_digits(&c, 2, &day) && fe_rg_lit(&c, " ") && fe_rg_month(&c, &mon) &&
         fe_rg_lit(&c, " ") && fe_rg_digits(&c, 4, &v) && fe_rg_lit(&c, " ") &&
         fe_rg_time(&c, &h, &mi, &sec) && fe_rg_lit(&c, " GMT");
    year = v;
  } else if (form == 850) { /* Sunday, 06-Nov-94 08:49:37 GMT */
    ok = fe_rg_digits(&c, 2, &day) && fe_rg_lit(&c, "-") && fe_rg_month(&c, &mon) &&
         fe_rg_lit(&c, "-") && fe_rg_digits(&c, 2, &v) && fe_rg_lit(&c, " ") &&
         fe_rg_time(&c, &h, &mi, &sec) && fe_rg_lit(&c, " GMT");
    year = ok ? fe_rg_two_digit_year(v) : 0;
  } else if (form == 0) { /* Sun Nov  6 08:49:37 1994 */
    ok = fe_rg_month(&c, &mon) && fe_rg_lit(&c, " ");
    if (ok && c.p < c.end && *c.p == ' ')
      ok = fe_rg_lit(&c, " ") && fe_rg_digits(&c, 1, &day);
    else
      ok = ok && fe_rg_digits(&c, 2, &day);
    ok = ok && fe_rg_lit(&c, " ") && fe_rg_time(&c, &h, &mi, &sec) && fe_rg_lit(&c, " ") &&
         fe_rg_digits(&c, 4, &v);
    year = v;
  }
  if (!ok || c.p != c.end || day < 1 || day > fe_rg_month_days(year, mon))
    return -1;
  *out = (time_t)(fe_rg_days_from_civil(year, mon, day) * 86400 + h * 3600 + mi * 60 + sec);
  return 0;
}

void fe_http_date_format(time_t t, char buf[30]) {
  /* Four-digit years only: 0000-01-01 to 9999-12-31 23:59:59. */
  const int64_t lo = -62167219200LL, hi = 253402300799LL;
  int64_t s = (int64_t)t, days, y;
  unsigned m, d, secs;

  if (s < lo)
    s = lo;
  if (s > hi)
    s = hi;
  days = s / 86400 - (s % 86400 < 0);
  secs = (unsigned)(s - days * 86400);
  fe_rg_civil_from_days(days, &y, &m, &d);
  snprintf(buf, 30, "%s, %02u %s %04u %02u:%02u:%02u GMT", fe_rg_days[((days % 7) + 11) % 7],
           d, fe_rg_months[m - 1], (unsigned)y, secs / 3600, secs / 60 % 60, secs % 60);
}

/* ---- multipart/byteranges (RFC 9110 14.6) ---- */

/* Appends n bytes to buf while they fit in cap; *len counts them either way. */
static void fe_rg_put(char *buf, size_t cap, size_t *len, const char *s, size_t n) {
  if (buf && *len + n <= cap)
    memcpy(buf + *len, s, n);
  *len += n;
}

/* The part head's length, written into buf when the whole of it fits in cap. */
static size_t fe_rg_head(char *buf, size_t cap, const char *boundary, const char *ctype,
                         const fe_range *r, uint64_t size) {
  char num[80];
  size_t len = 0;
  int n = snprintf(num, sizeof(num), "%" PRIu64 "-%" PRIu64 "/%" PRIu64, r->first, r->last, size);

  fe_rg_put(buf, cap, &len, "\r\n--", 4);
  fe_rg_put(buf, cap, &len, boundary, strlen(boundary));
  if (ctype) {
    fe_rg_put(buf, cap, &len, "\r\nContent-Type: ", 16);
    fe_rg_put(buf, cap, &len, ctype, strlen(ctype));
  }
  fe_rg_put(buf, cap, &len, "\r\nContent-Range: bytes ", 23);
  fe_rg_put(buf, cap, &len, num, (size_t)n);
  fe_rg_put(buf, cap, &len, "\r\n\r\n", 4);
  return len;
}

size_t fe_range_part_head(char *buf, size_t cap, const char *boundary, const char *ctype,
                          const fe_range *r, uint64_t size) {
  size_t n = fe_rg_head(NULL, 0, boundary, ctype, r, size);
  if (n > cap)
    return 0;
  return fe_rg_head(buf, cap, boundary, ctype, r, size);
}

size_t fe_range_part_tail(char *buf, size_t cap, const char *boundary) {
  size_t n = strlen(boundary) + 8;
  if (n > cap)
    return 0;
  memcpy(buf, "\r\n--", 4);
  memcpy(buf + 4, boundary, n - 8);
  memcpy(buf + n - 4, "--\r\n", 4);
  return n;
}

uint64_t fe_range_multipart_length(const fe_range *r, int n, const char *boundary,
                                   const char *ctype, uint64_t size) {
  uint64_t total = strlen(boundary) + 8; /* the closing delimiter */
  for (int i = 0; i < n; i++)
    total += fe_rg_head(NULL, 0, boundary, ctype, &r[i], size) + (r[i].last - r[i].first + 1);
  return total;
}
