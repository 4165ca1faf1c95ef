/*
 * fe_str: spans and strings borrowed from a request head, header lookup, and the byte checks and
 * escaping that URLs and log lines need. Floor 1: what http/, origin/, config/ and lua/ all need,
 * with nothing of theirs.
 */
#ifndef FE_STR_H
#define FE_STR_H

#include <stddef.h>
#include <stdint.h>

/** A span of a buffer that its owner keeps: offset and length, so the buffer may move. */
typedef struct fe_span {
  uint32_t off, len;
} fe_span;

/** A header as two spans of the request head's bytes. */
typedef struct fe_header {
  fe_span name, value;
} fe_header;

/** A borrowed string that need not end in NUL. */
typedef struct fe_str {
  const char *p;
  size_t len;
} fe_str;

/** The value of header `name` (any case) among n headers whose spans point into base, or NULL. */
const fe_span *fe_header_find(const char *base, const fe_header *h, int n, const char *name,
                              size_t nlen);

/**
 * 1 when every byte of s[0..len) is visible ASCII (0x21-0x7E): what a URL may hold raw in a
 * request line. A space, CR, LF, any other control byte, DEL or a byte >= 0x80 gives 0.
 */
int fe_str_visible(const char *s, size_t len);

/**
 * Copies s[0..len) into out for a log line, as nginx's escape=default does: `"`, `\`, bytes below
 * 0x20, 0x7F and bytes from 0x80 become \xHH, so a field can neither end early nor forge the next
 * one. Stops before an escape that would not fit whole; out is NUL-terminated (cap > 0). Returns
 * the length written.
 */
size_t fe_str_escape(char *out, size_t cap, const char *s, size_t len);

#endif
