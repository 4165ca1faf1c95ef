/*
 * fe_json: the little JSON the admin API speaks. A writer into a caller's buffer that escapes every
 * string (a client's bytes can never end a string early or forge a field), and a strict, bounded
 * reader for request bodies: RFC 8259 grammar, UTF-8 checked, duplicate keys refused, nesting and
 * values counted against limits the caller sets. Floor 1: no allocation, nothing but libc.
 */
#ifndef FE_JSON_H
#define FE_JSON_H

#include <stddef.h>
#include <stdint.h>

/* ---- writing ------------------------------------------------------------------------------- */

/** An answer being written into p[0..cap). `overflow` is set once something did not fit. */
typedef struct fe_json_buf {
  char *p;
  size_t len, cap;
  int overflow;
} fe_json_buf;

/** Starts writing into the caller's p[0..cap) (cap > 0); the text stays NUL-terminated. */
void fe_json_init(fe_json_buf *b, char *p, size_t cap);
/** Appends JSON text as it is (punctuation, keys the caller knows to be plain). */
void fe_json_raw(fe_json_buf *b, const char *s);
/**
 * Appends s[0..len) as a quoted JSON string: `"` and `\` escaped, control bytes as \n, \t ... or
 * \u00XX, DEL as \u007f, and every byte that is not part of valid UTF-8 as \ufffd, so the output is
 * valid JSON whatever the input.
 */
void fe_json_str(fe_json_buf *b, const char *s, size_t len);
/** Appends an unsigned integer. */
void fe_json_u64(fe_json_buf *b, uint64_t v);

/* ---- reading ------------------------------------------------------------------------------- */

enum fe_json_type {
  FE_JSON_NULL,
  FE_JSON_FALSE,
  FE_JSON_TRUE,
  FE_JSON_NUMBER,
  FE_JSON_STRING,
  FE_JSON_ARRAY,
  FE_JSON_OBJECT
};

/**
 * One value of a parsed document. Values are stored in document order; a container's members
 * follow it, an object's as key, value, key, value. `end` is the index just past the value and
 * everything inside it, so a reader skips a member with i = nodes[i].end.
 */
typedef struct fe_json_node {
  int type;          /* enum fe_json_type */
  uint32_t count;    /* array: elements; object: members (pairs) */
  uint32_t end;
  const char *s;     /* string: decoded, NUL-terminated (in the caller's arena); number: its text */
  size_t len;        /* string: decoded bytes (may hold NUL); number: text bytes */
  double num;        /* number: its value */
} fe_json_node;

/** A parsed document: nodes[0] is the top value. Strings point into the caller's arena. */
typedef struct fe_json_doc {
  fe_json_node *nodes;
  uint32_t n, cap;
} fe_json_doc;

/**
 * Parses in[0..len) whole (one value, whitespace around it, nothing else) into doc, whose nodes
 * (cap `max_nodes`) and string arena (`arena`, at least len + 1 bytes: decoded strings are never
 * longer than their text) the caller owns. Nesting deeper than `max_depth` or more than max_nodes
 * values is refused. Returns 0, or -1 with the reason and the byte offset in err.
 */
int fe_json_parse(const char *in, size_t len, fe_json_node *nodes, uint32_t max_nodes,
                  int max_depth, char *arena, fe_json_doc *doc, char *err, size_t errlen);

/** The value of member `key` of the object at nodes[obj], or -1 (absent, or obj is no object). */
int fe_json_get(const fe_json_doc *doc, uint32_t obj, const char *key);

#endif
