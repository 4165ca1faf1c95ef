/*
 * libFuzzer target for the FLV parser: the input is parsed whole and again in pseudo-random
 * pieces, and both runs must see the same tags, the same error and the same end state.
 *
 * Input: [max tag size] [split pattern] FLV bytes. Built with -DFE_FUZZ=ON; docs/testing.md says
 * how to run it.
 */
#include <stdint.h>
#include <stdlib.h>

#include "flv/fe_flv.h"

/* A digest of every tag seen, so two runs can be compared without storing the tags. */
typedef struct {
  uint64_t hash;
  uint64_t tags;
} fuzz_seen;

static uint64_t fuzz_mix(uint64_t h, uint64_t v) {
  return (h ^ v) * 0x100000001b3ull;
}

static int fuzz_on_tag(void *ud, const fe_flv_tag *tag) {
  fuzz_seen *s = ud;
  size_t len = FE_FLV_TAG_OVERHEAD + tag->size;

  s->hash = fuzz_mix(s->hash, tag->type);
  s->hash = fuzz_mix(s->hash, tag->timestamp);
  s->hash = fuzz_mix(s->hash, tag->size);
  s->hash = fuzz_mix(s->hash, tag->flags);
  s->hash = fuzz_mix(s->hash, tag->codec);
  for (size_t i = 0; i < len; i++) /* reads every byte, so ASan sees a short buffer */
    s->hash = fuzz_mix(s->hash, tag->data[i]);
  if (fe_flv_get_timestamp(tag->data) != tag->timestamp)
    abort();
  s->tags++;
  /* Stop now and then, to exercise the callback's error path. */
  return (tag->timestamp & 0xffff) == 0xdead ? -5 : 0;
}

/* Parses data in pieces whose lengths come from a small PRNG seeded with `seed` (0: whole). */
static int fuzz_parse(const uint8_t *data, size_t size, uint32_t max_tag, uint32_t seed,
                      fuzz_seen *seen) {
  fe_flv_parser p;
  size_t at = 0;
  int rc = 0;

  fe_flv_parser_init(&p, max_tag);
  while (at < size && rc == 0) {
    size_t n = size - at;
    if (seed) {
      seed = seed * 1103515245u + 12345u;
      size_t piece = (seed >> 16) % 64 + 1;
      if (piece < n)
        n = piece;
    }
    rc = fe_flv_parser_feed(&p, data + at, n, fuzz_on_tag, seen);
    at += n;
  }
  if (rc == 0)
    rc = fe_flv_parser_finish(&p);
  if (p.tags != seen->tags)
    abort();
  fe_flv_parser_free(&p);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_seen whole = {0xcbf29ce484222325ull, 0}, pieces = whole;
  uint32_t max_tag, seed;
  int rc_whole, rc_pieces;

  if (size < 3)
    return 0;
  /* First byte: the size limit (small ones hit ETOOBIG); second: the split pattern. */
  max_tag = data[0] < 0x80 ? data[0] : (uint32_t)data[0] << 12;
  seed = (uint32_t)data[1] | 1u;
  data += 2;
  size -= 2;
  rc_whole = fuzz_parse(data, size, max_tag, 0, &whole);
  rc_pieces = fuzz_parse(data, size, max_tag, seed, &pieces);
  if (rc_whole != rc_pieces || whole.tags != pieces.tags || whole.hash != pieces.hash)
    abort();
  return 0;
}
