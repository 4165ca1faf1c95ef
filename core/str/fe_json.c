#include "str/fe_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 --------------------------------------------------------------------------------- */

/* The length of the valid UTF-8 sequence at s[0..len) (1 to 4), or 0: overlong forms, surrogates
 * and code points above U+10FFFF are invalid (RFC 3629). */
static size_t fe_utf8_seq(const unsigned char *s, size_t len) {
  unsigned c = s[0];
  if (c < 0x80)
    return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF; /* the range of the second byte */
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else
    return 0;
  if (len < n || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return n;
}

/* ---- writing ------------------------------------------------------------------------------- */

void fe_json_init(fe_json_buf *b, char *p, size_t cap) {
  b->p = p;
  b->cap = cap;
  b->len = 0;
  b->overflow = 0;
  p[0] = 0;
}

static void fe_json_put(fe_json_buf *b, const char *s, size_t n) {
  if (b->overflow || b->len + n >= b->cap) {
    b->overflow = 1;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

void fe_json_raw(fe_json_buf *b, const char *s) {
  fe_json_put(b, s, strlen(s));
}

void fe_json_str(fe_json_buf *b, const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  fe_json_put(b, "\"", 1);
  size_t i = 0;
  while (i < len) {
    unsigned c = u[i];
    size_t run = i;
    /* The plain bytes in one copy. */
    while (run < len && u[run] >= 0x20 && u[run] < 0x7F && u[run] != '"' && u[run] != '\\')
      run++;
    if (run > i) {
      fe_json_put(b, s + i, run - i);
      i = run;
      continue;
    }
    char esc[8];
    const char *out = esc;
    size_t n = 2;
    switch (c) {
    case '"': out = "\\\""; break;
    case '\\': out = "\\\\"; break;
    case '\n': out = "\\n"; break;
    case '\r': out = "\\r"; break;
    case '\t': out = "\\t"; break;
    case '\b': out = "\\b"; break;
    case '\f': out = "\\f"; break;
    default:
      if (c < 0x20 || c == 0x7F) {
        snprintf(esc, sizeof(esc), "\\u%04x", c);
        n = 6;
      } else {
        size_t seq = fe_utf8_seq(u + i, len - i);
        if (seq) {
          fe_json_put(b, s + i, seq);
          i += seq;
          continue;
        }
        out = "\\ufffd";
        n = 6;
      }
    }
    fe_json_put(b, out, n);
    i++;
  }
  fe_json_put(b, "\"", 1);
}

void fe_json_u64(fe_json_buf *b, uint64_t v) {
  char num[24];
  int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
  fe_json_put(b, num, (size_t)n);
}

/* ---- reading ------------------------------------------------------------------------------- */

typedef struct fe_json_reader {
  const char *in;
  size_t len, pos;
  fe_json_doc *doc;
  int max_depth;
  char *arena;
  size_t arena_len;
  char *err;
  size_t errlen;
} fe_json_reader;

static int fe_json_fail(fe_json_reader *r, const char *fmt, ...) {
  char why[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  snprintf(r->err, r->errlen, "at byte %zu: %s", r->pos, why);
  return -1;
}

static void fe_json_ws(fe_json_reader *r) {
  while (r->pos < r->len) {
    char c = r->in[r->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      return;
    r->pos++;
  }
}

static int fe_json_node_new(fe_json_reader *r, int type, uint32_t *out) {
  fe_json_doc *d = r->doc;
  if (d->n >= d->cap)
    return fe_json_fail(r, "more than %u values", d->cap);
  fe_json_node *nd = &d->nodes[d->n];
  memset(nd, 0, sizeof(*nd));
  nd->type = type;
  *out = d->n++;
  return 0;
}

static int fe_json_hex4(fe_json_reader *r, unsigned *out) {
  if (r->len - r->pos < 4)
    return fe_json_fail(r, "a \\u escape needs 4 hex digits");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = r->in[r->pos + (size_t)i];
    unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                        : 16;
    if (d == 16)
      return fe_json_fail(r, "a \\u escape needs 4 hex digits");
    v = v * 16 + d;
  }
  r->pos += 4;
  *out = v;
  return 0;
}

static void fe_json_emit_cp(char *o, size_t *n, unsigned cp) {
  if (cp < 0x80) {
    o[(*n)++] = (char)cp;
  } else if (cp < 0x800) {
    o[(*n)++] = (char)(0xC0 | (cp >> 6));
    o[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o[(*n)++] = (char)(0xE0 | (cp >> 12));
    o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[(*n)++] = (char)(0x80 | (cp & 0x3F));
  } else {
    o[(*n)++] = (char)(0xF0 | (cp >> 18));
    o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[(*n)++] = (char)(0x80 | (cp & 0x3F));
  }
}

/* A string at r->pos (its opening quote), decoded into the arena. The decoded bytes never
 * outgrow the text (an escape is at least as long as what it stands for) and the closing quote
 * pays for the NUL, so an arena of len + 1 bytes always suffices. */
static int fe_json_string(fe_json_reader *r, uint32_t idx) {
  r->pos++;
  char *o = r->arena + r->arena_len;
  size_t n = 0;
  for (;;) {
    if (r->pos >= r->len)
      return fe_json_fail(r, "unterminated string");
    unsigned char c = (unsigned char)r->in[r->pos];
    if (c == '"') {
      r->pos++;
      break;
    }
    if (c < 0x20)
      return fe_json_fail(r, "control byte 0x%02x in a string", c);
    if (c == '\\') {
      if (++r->pos >= r->len)
        return fe_json_fail(r, "unterminated string");
      char e = r->in[r->pos++];
      switch (e) {
      case '"': o[n++] = '"'; break;
      case '\\': o[n++] = '\\'; break;
      case '/': o[n++] = '/'; break;
      case 'b': o[n++] = '\b'; break;
      case 'f': o[n++] = '\f'; break;
      case 'n': o[n++] = '\n'; break;
      case 'r': o[n++] = '\r'; break;
      case 't': o[n++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (fe_json_hex4(r, &cp) < 0)
          return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return fe_json_fail(r, "a lone low surrogate escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (r->len - r->pos < 2 || r->in[r->pos] != '\\' || r->in[r->pos + 1] != 'u')
            return fe_json_fail(r, "a high surrogate escape without its low half");
          r->pos += 2;
          if (fe_json_hex4(r, &lo) < 0)
            return -1;
          if (lo < 0xDC00 || lo > 0xDFFF)
            return fe_json_fail(r, "a high surrogate escape without its low half");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        fe_json_emit_cp(o, &n, cp);
        break;
      }
      default:
        r->pos--;
        return fe_json_fail(r, "unknown escape \\%c", e >= 0x20 && e < 0x7F ? e : '?');
      }
      continue;
    }
    size_t seq = fe_utf8_seq((const unsigned char *)r->in + r->pos, r->len - r->pos);
    if (!seq)
      return fe_json_fail(r, "invalid UTF-8 in a string");
    memcpy(o + n, r->in + r->pos, seq);
    n += seq;
    r->pos += seq;
  }
  o[n] = 0;
  fe_json_node *nd = &r->doc->nodes[idx];
  nd->s = o;
  nd->len = n;
  r->arena_len += n + 1;
  return 0;
}

static int fe_json_digits(fe_json_reader *r) {
  size_t start = r->pos;
  while (r->pos < r->len && r->in[r->pos] >= '0' && r->in[r->pos] <= '9')
    r->pos++;
  return r->pos > start ? 0 : fe_json_fail(r, "a digit expected in a number");
}

static int fe_json_number(fe_json_reader *r, uint32_t idx) {
  size_t start = r->pos;
  if (r->in[r->pos] == '-')
    r->pos++;
  if (r->pos < r->len && r->in[r->pos] == '0')
    r->pos++; /* no leading zeros: "01" is two values, refused below */
  else if (fe_json_digits(r) < 0)
    return -1;
  if (r->pos < r->len && r->in[r->pos] == '.') {
    r->pos++;
    if (fe_json_digits(r) < 0)
      return -1;
  }
  if (r->pos < r->len && (r->in[r->pos] == 'e' || r->in[r->pos] == 'E')) {
    r->pos++;
    if (r->pos < r->len && (r->in[r->pos] == '+' || r->in[r->pos] == '-'))
      r->pos++;
    if (fe_json_digits(r) < 0)
      return -1;
  }
  size_t n = r->pos - start;
  char text[64];
  if (n >= sizeof(text))
    return fe_json_fail(r, "a number longer than %zu characters", sizeof(text) - 1);
  memcpy(text, r->in + start, n);
  text[n] = 0;
  fe_json_node *nd = &r->doc->nodes[idx];
  nd->s = r->in + start;
  nd->len = n;
  nd->num = strtod(text, NULL);
  return 0;
}

static int fe_json_value(fe_json_reader *r, int depth);

/* Two members of one object with one key would let two readers see two different bodies. */
static int fe_json_dup_key(const fe_json_reader *r, uint32_t obj, uint32_t key) {
  const fe_json_node *nd = r->doc->nodes;
  for (uint32_t i = obj + 1; i < key; i = nd[i + 1].end)
    if (nd[i].len == nd[key].len && memcmp(nd[i].s, nd[key].s, nd[key].len) == 0)
      return 1;
  return 0;
}

static int fe_json_container(fe_json_reader *r, uint32_t idx, int depth, int object) {
  char close = object ? '}' : ']';
  if (depth >= r->max_depth)
    return fe_json_fail(r, "nested deeper than %d", r->max_depth);
  r->pos++;
  fe_json_ws(r);
  if (r->pos < r->len && r->in[r->pos] == close) {
    r->pos++;
    return 0;
  }
  for (;;) {
    if (object) {
      uint32_t key = 0;
      if (r->pos >= r->len || r->in[r->pos] != '"')
        return fe_json_fail(r, "a member name (a string) expected");
      size_t at = r->pos;
      if (fe_json_node_new(r, FE_JSON_STRING, &key) < 0 || fe_json_string(r, key) < 0)
        return -1;
      r->doc->nodes[key].end = key + 1;
      if (fe_json_dup_key(r, idx, key)) {
        r->pos = at;
        return fe_json_fail(r, "duplicate member \"%.40s\"", r->doc->nodes[key].s);
      }
      fe_json_ws(r);
      if (r->pos >= r->len || r->in[r->pos] != ':')
        return fe_json_fail(r, "':' expected after a member name");
      r->pos++;
      fe_json_ws(r);
    }
    if (fe_json_value(r, depth + 1) < 0)
      return -1;
    r->doc->nodes[idx].count++;
    fe_json_ws(r);
    if (r->pos >= r->len)
      return fe_json_fail(r, "'%c' expected", close);
    char c = r->in[r->pos];
    if (c == close) {
      r->pos++;
      return 0;
    }
    if (c != ',')
      return fe_json_fail(r, "',' or '%c' expected", close);
    r->pos++;
    fe_json_ws(r);
  }
}

static int fe_json_literal(fe_json_reader *r, const char *word) {
  size_t n = strlen(word);
  if (r->len - r->pos < n || memcmp(r->in + r->pos, word, n) != 0)
    return fe_json_fail(r, "a value expected");
  r->pos += n;
  return 0;
}

static int fe_json_value(fe_json_reader *r, int depth) {
  if (r->pos >= r->len)
    return fe_json_fail(r, "a value expected");
  char c = r->in[r->pos];
  int type = c == '{'   ? FE_JSON_OBJECT
             : c == '[' ? FE_JSON_ARRAY
             : c == '"' ? FE_JSON_STRING
             : c == 't' ? FE_JSON_TRUE
             : c == 'f' ? FE_JSON_FALSE
             : c == 'n' ? FE_JSON_NULL
             : c == '-' || (c >= '0' && c <= '9') ? FE_JSON_NUMBER
                                                  : -1;
  if (type < 0)
    return fe_json_fail(r, "a value expected");
  uint32_t idx = 0;
  if (fe_json_node_new(r, type, &idx) < 0)
    return -1;
  int rc;
  switch (type) {
  case FE_JSON_OBJECT: rc = fe_json_container(r, idx, depth, 1); break;
  case FE_JSON_ARRAY: rc = fe_json_container(r, idx, depth, 0); break;
  case FE_JSON_STRING: rc = fe_json_string(r, idx); break;
  case FE_JSON_NUMBER: rc = fe_json_number(r, idx); break;
  case FE_JSON_TRUE: rc = fe_json_literal(r, "true"); break;
  case FE_JSON_FALSE: rc = fe_json_literal(r, "false"); break;
  default: rc = fe_json_literal(r, "null"); break;
  }
  r->doc->nodes[idx].end = r->doc->n;
  return rc;
}

int fe_json_parse(const char *in, size_t len, fe_json_node *nodes, uint32_t max_nodes,
                  int max_depth, char *arena, fe_json_doc *doc, char *err, size_t errlen) {
  doc->nodes = nodes;
  doc->n = 0;
  doc->cap = max_nodes;
  fe_json_reader r = {.in = in, .len = len, .doc = doc, .max_depth = max_depth, .arena = arena,
                      .err = err, .errlen = errlen};
  fe_json_ws(&r);
  if (fe_json_value(&r, 0) < 0)
    return -1;
  fe_json_ws(&r);
  if (r.pos != len)
    return fe_json_fail(&r, "text after the value");
  return 0;
}

int fe_json_get(const fe_json_doc *doc, uint32_t obj, const char *key) {
  if (obj >= doc->n || doc->nodes[obj].type != FE_JSON_OBJECT)
    return -1;
  const fe_json_node *nd = doc->nodes;
  size_t klen = strlen(key);
  for (uint32_t i = obj + 1; i < nd[obj].end; i = nd[i + 1].end)
    if (nd[i].len == klen && memcmp(nd[i].s, key, klen) == 0)
      return (int)(i + 1);
  return -1;
}
