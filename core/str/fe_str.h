/*
 * fe_str: spans and strings borrowed from a request head, and header lookup. Floor 1: what http/,
 * origin/ and lua/ all need, with nothing of theirs.
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

#endif
