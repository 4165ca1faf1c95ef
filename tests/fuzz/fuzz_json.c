/*
 * libFuzzer target for fe_json: any input either parses or is refused with a reason; what parses
 * has a consistent tree, and written back with fe_json's writer it parses again to the same
 * text (the writer's output is always valid JSON, the reader keeps every string byte). Any bytes
 * given to the writer as a string come out as valid JSON too.
 *
 * Built with -DFE_FUZZ=ON; docs/testing.md says how to run it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "str/fe_json.h"

#define FUZZ_NODES 512
#define FUZZ_DEPTH 8

/* Writes the value at nodes[i] back as JSON; returns the index after it. */
static uint32_t fuzz_write(const fe_json_doc *d, uint32_t i, fe_json_buf *b) {
  const fe_json_node *nd = &d->nodes[i];
  FUZZ_CHECK(nd->end > i && nd->end <= d->n);
  switch (nd->type) {
  case FE_JSON_NULL: fe_json_raw(b, "null"); return i + 1;
  case FE_JSON_TRUE: fe_json_raw(b, "true"); return i + 1;
  case FE_JSON_FALSE: fe_json_raw(b, "false"); return i + 1;
  case FE_JSON_STRING:
    FUZZ_CHECK(nd->s[nd->len] == 0);
    fe_json_str(b, nd->s, nd->len);
    return i + 1;
  case FE_JSON_NUMBER: {
    char num[80];
    FUZZ_CHECK(nd->len > 0 && nd->len < sizeof(num));
    memcpy(num, nd->s, nd->len);
    num[nd->len] = 0;
    fe_json_raw(b, num);
    return i + 1;
  }
  default: {
    int obj = nd->type == FE_JSON_OBJECT;
    uint32_t j = i + 1, members = 0;
    fe_json_raw(b, obj ? "{" : "[");
    while (j < nd->end) {
      if (members++)
        fe_json_raw(b, ",");
      if (obj) {
        FUZZ_CHECK(d->nodes[j].type == FE_JSON_STRING);
        j = fuzz_write(d, j, b);
        fe_json_raw(b, ":");
      }
      j = fuzz_write(d, j, b);
    }
    FUZZ_CHECK(j == nd->end && members == nd->count);
    fe_json_raw(b, obj ? "}" : "]");
    return j;
  }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fe_json_node nodes[FUZZ_NODES], nodes2[FUZZ_NODES];
  const char *in = (const char *)data;
  char *arena = malloc(size + 1), err[200];
  size_t cap = 8 * size + 64; /* every byte escaped at most to 6 */
  char *out = malloc(cap), *out2 = malloc(cap);
  FUZZ_CHECK(arena && out && out2);
  fe_json_doc doc, doc2;
  fe_json_buf b;
  err[0] = 0;
  if (fe_json_parse(in, size, nodes, FUZZ_NODES, FUZZ_DEPTH, arena, &doc, err, sizeof(err)) == 0) {
    FUZZ_CHECK(doc.n > 0 && doc.nodes[0].end == doc.n);
    fe_json_init(&b, out, cap);
    FUZZ_CHECK(fuzz_write(&doc, 0, &b) == doc.n && !b.overflow);
    char *arena2 = malloc(b.len + 1);
    FUZZ_CHECK(arena2);
    FUZZ_CHECK(fe_json_parse(out, b.len, nodes2, FUZZ_NODES, FUZZ_DEPTH, arena2, &doc2, err,
                             sizeof(err)) == 0);
    FUZZ_CHECK(doc2.n == doc.n);
    fe_json_buf b2;
    fe_json_init(&b2, out2, cap);
    fuzz_write(&doc2, 0, &b2);
    FUZZ_CHECK(b2.len == b.len && memcmp(out, out2, b.len) == 0);
    free(arena2);
  } else {
    FUZZ_CHECK(strncmp(err, "at byte ", 8) == 0);
  }
  /* The raw bytes as one string value: always valid JSON, one string node. */
  fe_json_init(&b, out, cap);
  fe_json_str(&b, in, size);
  FUZZ_CHECK(!b.overflow);
  char *arena3 = malloc(b.len + 1);
  FUZZ_CHECK(arena3);
  FUZZ_CHECK(fe_json_parse(out, b.len, nodes2, FUZZ_NODES, FUZZ_DEPTH, arena3, &doc2, err,
                           sizeof(err)) == 0);
  FUZZ_CHECK(doc2.n == 1 && doc2.nodes[0].type == FE_JSON_STRING && doc2.nodes[0].len <= 3 * size);
  free(arena3);
  free(arena);
  free(out);
  free(out2);
  return 0;
}
