/*
 * fe_http_range: what RFC 9110 says about ranges and conditional requests, as pure functions of
 * header values and a representation's validators: Range parsing (bytes=N-M, N-, -N, lists),
 * If-Range, the precondition order of section 13.2.2, HTTP dates, and the multipart/byteranges
 * framing. No I/O, no allocation: http/'s VOD handler (and tests, and a fuzz target) call it.
 */
#ifndef FE_HTTP_RANGE_H
#define FE_HTTP_RANGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FE_RANGE_MAX 16 /* more ranges than this in one request: served whole (200) */

typedef struct fe_range {
  uint64_t first, last; /* inclusive byte positions, first <= last < size */
} fe_range;

enum {
  FE_RANGE_IGNORE = 0,  /* no usable Range: serve the whole representation (200) */
  FE_RANGE_UNSAT = -1,  /* syntactically valid, none satisfiable: 416 + Content-Range: bytes *\/SIZE */
};

/**
 * Parses a Range header value against a representation of `size` bytes. Returns the number of
 * satisfiable ranges written to out (at most `max`, in request order, overlapping or adjacent ones
 * coalesced), FE_RANGE_IGNORE when the value is not a valid bytes range set (another unit, a
 * syntax error, more than `max` ranges: RFC 9110 lets a server ignore it), or FE_RANGE_UNSAT.
 * A size of 0 makes every valid range unsatisfiable.
 */
int fe_range_parse(const char *value, size_t len, uint64_t size, fe_range *out, int max);

/** The validators of a stored representation. etag: as sent ("\"abc\"" or W/"abc"), NULL if none. */
typedef struct fe_validators {
  const char *etag;
  time_t last_modified; /* 0: none */
} fe_validators;

/** A request's conditional headers: values as received, NULL when absent. */
typedef struct fe_conditionals {
  const char *if_match, *if_none_match, *if_modified_since, *if_unmodified_since, *if_range;
  size_t if_match_len, if_none_match_len, if_modified_since_len, if_unmodified_since_len,
      if_range_len;
} fe_conditionals;

/**
 * RFC 9110 13.2.2 for a GET or HEAD: returns 412 (If-Match / If-Unmodified-Since failed), 304
 * (If-None-Match / If-Modified-Since: not modified), or 0 to go on and serve. Weak comparison for
 * If-None-Match, strong for If-Match; If-Modified-Since is ignored when If-None-Match is present.
 */
int fe_http_preconditions(const fe_conditionals *c, const fe_validators *v);

/**
 * If-Range (RFC 9110 13.1.5): 1 when the Range header applies (no If-Range, or it matches: a
 * strong ETag equal to the stored one, or a date equal to Last-Modified), 0 to serve the whole
 * representation instead.
 */
int fe_http_if_range(const fe_conditionals *c, const fe_validators *v);

/** Parses an HTTP date (IMF-fixdate, and the obsolete RFC 850 and asctime forms). 0 or -1. */
int fe_http_date_parse(const char *s, size_t len, time_t *out);
/** Writes t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", 29 bytes + NUL) into buf[30]. */
void fe_http_date_format(time_t t, char buf[30]);

/**
 * multipart/byteranges (RFC 9110 14.6): the part header that goes before range i's bytes
 * ("\r\n--BOUNDARY\r\nContent-Type: ...\r\nContent-Range: bytes F-L/SIZE\r\n\r\n"), written into
 * buf; returns its length, or 0 when cap is too small. `ctype` may be NULL (no Content-Type line).
 */
size_t fe_range_part_head(char *buf, size_t cap, const char *boundary, const char *ctype,
                          const fe_range *r, uint64_t size);
/** The closing delimiter ("\r\n--BOUNDARY--\r\n") into buf; its length, or 0 when cap is too small. */
size_t fe_range_part_tail(char *buf, size_t cap, const char *boundary);
/** The whole multipart body's length for these ranges, part heads and tail included. */
uint64_t fe_range_multipart_length(const fe_range *r, int n, const char *boundary,
                                   const char *ctype, uint64_t size);

#endif
