#include "flv/fe_flv.h"

#include <stdlib.h>
#include <string.h>

#include "fe_test.h"

#define FOURCC(s) FE_FLV_FOURCC((s)[0], (s)[1], (s)[2], (s)[3])

/* What the parser should report for one tag, and where the tag sits in the stream. */
typedef struct {
  uint8_t type;
  uint32_t ts, size, codec;
  unsigned flags;
  size_t offset;
} want_tag;

/* A synthetic FLV stream built in memory, with the tags it holds. */
typedef struct {
  uint8_t bytes[4096];
  size_t len;
  want_tag want[48];
  int n;
} stream;

/* What the callback saw: tags (data pointers as given) and their bytes concatenated. */
typedef struct {
  fe_flv_tag tags[48];
  int n;
  uint8_t bytes[4096];
  size_t len;
  const uint8_t *input; /* the buffer fed whole, to check zero copy */
  size_t input_len;
  int in_input;
  int stop_at; /* return -5 on this tag number (1-based); 0 never */
} got_tags;

static void put_be(uint8_t *b, uint32_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8)
    b[i] = (uint8_t)v;
}

static void stream_begin(stream *s, uint8_t flags, uint32_t data_offset) {
  memset(s, 0, sizeof(*s));
  memcpy(s->bytes, "FLV\x01", 4);
  s->bytes[4] = flags;
  put_be(s->bytes + 5, data_offset, 4);
  s->len = data_offset + 4; /* extension bytes (zero) and PreviousTagSize0 */
}

/* Appends a tag written by hand (not with fe_flv_set_timestamp), noting what should be found. */
static void stream_tag(stream *s, uint8_t type, uint32_t ts, const void *payload, size_t n,
                       unsigned flags, uint32_t codec) {
  uint8_t *t = s->bytes + s->len;
  want_tag *w = &s->want[s->n++];

  t[0] = type;
  put_be(t + 1, (uint32_t)n, 3);
  put_be(t + 4, ts & 0xffffff, 3);
  t[7] = (uint8_t)(ts >> 24);
  put_be(t + 8, 0, 3);
  memcpy(t + FE_FLV_TAG_HEADER_SIZE, payload, n);
  put_be(t + FE_FLV_TAG_HEADER_SIZE + n, (uint32_t)(FE_FLV_TAG_HEADER_SIZE + n), 4);
  *w = (want_tag){type, ts, (uint32_t)n, codec, flags, s->len};
  s->len += FE_FLV_TAG_OVERHEAD + n;
}

#define TAG(s, type, ts, flags, codec, ...)                                            \
  do {                                                                                 \
    static const uint8_t pl_[] = {__VA_ARGS__};                                        \
    stream_tag(s, type, ts, pl_, sizeof(pl_), flags, codec);                           \
  } while (0)

/* The stream of the stories below: what a live origin sends, plus every codec we classify. */
static void build_sample(stream *s, int short_one) {
  const unsigned enh = FE_FLV_ENHANCED;
  stream_begin(s, FE_FLV_HAS_VIDEO | FE_FLV_HAS_AUDIO, 9);
  TAG(s, FE_FLV_SCRIPT, 0, FE_FLV_METADATA, 0, 0x02, 0x00, 0x0a, 'o', 'n', 'M', 'e', 't', 'a', 'D',
      'a', 't', 'a', 0x08, 0, 0, 0, 0, 0, 0, 9);
  TAG(s, FE_FLV_VIDEO, 0, FE_FLV_SEQ_HEADER, 7, 0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f, 0xff);
  TAG(s, FE_FLV_AUDIO, 0, FE_FLV_SEQ_HEADER, 10, 0xaf, 0x00, 0x12, 0x10);
  TAG(s, FE_FLV_VIDEO, 0, FE_FLV_KEYFRAME, 7, 0x17, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88);
  TAG(s, FE_FLV_AUDIO, 23, 0, 10, 0xaf, 0x01, 0x21, 0x10, 0x04);
  if (short_one)
    return;
  TAG(s, FE_FLV_VIDEO, 33, 0, 7, 0x27, 0x01, 0, 0, 0x21, 0, 0, 0, 2, 0x41, 0x9a);
  TAG(s, FE_FLV_AUDIO, 46, 0, 10, 0xaf, 0x01, 0x21, 0x10, 0x05, 0x06);
  TAG(s, FE_FLV_VIDEO, 66, 0, 7, 0x27, 0x01, 0, 0, 0x21, 0, 0, 0, 2, 0x41, 0x9b);
  /* A stream running for days: the timestamp needs the extension byte. */
  TAG(s, FE_FLV_VIDEO, 0x01234567, 0, 7, 0x27, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x41);
  TAG(s, FE_FLV_AUDIO, 0xfe000001, 0, 10, 0xaf, 0x01, 0x21);
  stream_tag(s, FE_FLV_VIDEO, 100, "", 0, 0, 0); /* an empty tag: no flags, no codec */
  TAG(s, FE_FLV_VIDEO, 100, FE_FLV_SEQ_HEADER, 12, 0x1c, 0x00, 0, 0, 0, 0x01);
  TAG(s, FE_FLV_VIDEO, 100, FE_FLV_KEYFRAME, 12, 0x1c, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x26, 0x01);
  TAG(s, FE_FLV_VIDEO, 133, 0, 12, 0x2c, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x02, 0x01);
  TAG(s, FE_FLV_VIDEO, 200, enh | FE_FLV_SEQ_HEADER, FOURCC("hvc1"), 0x90, 'h', 'v', 'c', '1', 0x01,
      0x01, 0x60);
  TAG(s, FE_FLV_VIDEO, 200, enh | FE_FLV_KEYFRAME, FOURCC("hvc1"), 0x91, 'h', 'v', 'c', '1', 0, 0,
      0, 0x26, 0x01);
  TAG(s, FE_FLV_VIDEO, 233, enh, FOURCC("hvc1"), 0xa3, 'h', 'v', 'c', '1', 0x02, 0x01);
  TAG(s, FE_FLV_VIDEO, 300, enh | FE_FLV_KEYFRAME, FOURCC("av01"), 0x91, 'a', 'v', '0', '1', 0, 0,
      0, 0x12, 0x00);
  TAG(s, FE_FLV_VIDEO, 400, enh | FE_FLV_KEYFRAME, FOURCC("vp09"), 0x93, 'v', 'p', '0', '9', 0x82);
  TAG(s, FE_FLV_VIDEO, 400, enh | FE_FLV_SEQ_END, FOURCC("vp09"), 0x92, 'v', 'p', '0', '9');
  /* Sorenson H.263 has no packet type byte: the frame type alone marks the keyframe. */
  TAG(s, FE_FLV_VIDEO, 500, FE_FLV_KEYFRAME, 2, 0x12, 0x00, 0x00, 0x84);
  TAG(s, FE_FLV_VIDEO, 533, 0, 2, 0x22, 0x00, 0x00, 0x86);
  TAG(s, FE_FLV_VIDEO, 600, FE_FLV_SEQ_END, 7, 0x17, 0x02, 0, 0, 0);
  TAG(s, FE_FLV_AUDIO, 600, enh | FE_FLV_SEQ_HEADER, FOURCC("Opus"), 0x90, 'O', 'p', 'u', 's', 0x4f);
  TAG(s, FE_FLV_AUDIO, 620, enh, FOURCC("Opus"), 0x91, 'O', 'p', 'u', 's', 0xfc);
  TAG(s, FE_FLV_SCRIPT, 700, FE_FLV_METADATA, 0, 0x02, 0x00, 0x0d, '@', 's', 'e', 't', 'D', 'a',
      't', 'a', 'F', 'r', 'a', 'm', 'e', 0x02, 0x00, 0x0a, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a',
      't', 'a', 0x08, 0, 0, 0, 0, 0, 0, 9);
  TAG(s, FE_FLV_SCRIPT, 800, 0, 0, 0x02, 0x00, 0x0a, 'o', 'n', 'C', 'u', 'e', 'P', 'o', 'i', 'n',
      't');
}

static int collect(void *ud, const fe_flv_tag *tag) {
  got_tags *g = ud;
  size_t len = FE_FLV_TAG_OVERHEAD + tag->size;

  if (g->n == (int)(sizeof(g->tags) / sizeof(g->tags[0])) || g->len + len > sizeof(g->bytes))
    return -1;
  g->tags[g->n++] = *tag;
  memcpy(g->bytes + g->len, tag->data, len);
  g->len += len;
  if (g->input && tag->data >= g->input && tag->data + len <= g->input + g->input_len)
    g->in_input++;
  return g->n == g->stop_at ? -5 : 0;
}

/* 1 if the callback saw exactly the stream's tags, byte for byte; says what differs otherwise. */
static int got_matches(const stream *s, const got_tags *g) {
  size_t at = 0;

  if (g->n != s->n) {
    fprintf(stderr, "  got %d tags, want %d\n", g->n, s->n);
    return 0;
  }
  for (int i = 0; i < s->n; i++) {
    const fe_flv_tag *t = &g->tags[i];
    const want_tag *w = &s->want[i];
    size_t len = FE_FLV_TAG_OVERHEAD + w->size;
    if (t->type != w->type || t->timestamp != w->ts || t->size != w->size ||
        t->flags != w->flags || t->codec != w->codec ||
        memcmp(g->bytes + at, s->bytes + w->offset, len) != 0) {
      fprintf(stderr, "  tag %d: type %d ts %u size %u flags %#x codec %#x; want %d %u %u %#x %#x\n",
              i, t->type, t->timestamp, t->size, t->flags, t->codec, w->type, w->ts, w->size,
              w->flags, w->codec);
      return 0;
    }
    at += len;
  }
  return 1;
}

/* Parses s in pieces ending at the given cut points; 1 if it yields the stream's tags cleanly. */
static int parse_in_pieces(const stream *s, const size_t *cuts, int ncuts) {
  static got_tags g;
  fe_flv_parser p;
  size_t from = 0;
  int ok = 1;

  memset(&g, 0, sizeof(g));
  fe_flv_parser_init(&p, 1 << 20);
  for (int i = 0; i <= ncuts; i++) {
    size_t to = i < ncuts ? cuts[i] : s->len;
    if (fe_flv_parser_feed(&p, s->bytes + from, to - from, collect, &g) != 0)
      ok = 0;
    from = to;
  }
  if (fe_flv_parser_finish(&p) != 0 || !got_matches(s, &g) || p.tags != (uint64_t)s->n ||
      p.header_flags != s->bytes[4])
    ok = 0;
  fe_flv_parser_free(&p);
  return ok;
}

static void test_whole_stream_is_handed_out_in_place(void) {
  static stream s;
  static got_tags g;
  fe_flv_parser p;

  build_sample(&s, 0);
  g.input = s.bytes;
  g.input_len = s.len;
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), 0);
  FE_CHECK_EQ(fe_flv_parser_finish(&p), 0);
  FE_CHECK(got_matches(&s, &g));
  FE_CHECK_EQ(g.in_input, s.n);
  FE_CHECK(p.have_header);
  FE_CHECK_EQ(p.header_flags, FE_FLV_HAS_VIDEO | FE_FLV_HAS_AUDIO);
  FE_CHECK_EQ(p.tags, s.n);
  fe_flv_parser_free(&p);
}

static void test_byte_by_byte_gives_the_same_tags(void) {
  static stream s;
  size_t cuts[sizeof(s.bytes)];

  build_sample(&s, 0);
  for (size_t i = 0; i + 1 < s.len; i++)
    cuts[i] = i + 1;
  FE_CHECK(parse_in_pieces(&s, cuts, (int)s.len - 1));
}

static void test_every_split_gives_the_same_tags(void) {
  static stream s;
  int bad = 0;

  build_sample(&s, 0);
  for (size_t i = 0; i <= s.len; i++)
    if (!parse_in_pieces(&s, &i, 1) && bad++ == 0)
      fprintf(stderr, "  first bad split at %zu\n", i);
  FE_CHECK_EQ(bad, 0);
}

static void test_every_three_way_split_gives_the_same_tags(void) {
  static stream s;
  int bad = 0;

  build_sample(&s, 1);
  for (size_t i = 0; i <= s.len; i++)
    for (size_t j = i; j <= s.len; j++) {
      size_t cuts[2] = {i, j};
      if (!parse_in_pieces(&s, cuts, 2) && bad++ == 0)
        fprintf(stderr, "  first bad split at %zu, %zu\n", i, j);
    }
  FE_CHECK_EQ(bad, 0);
}

static void test_header_extension_is_skipped(void) {
  static stream s;
  int bad = 0;

  stream_begin(&s, FE_FLV_HAS_VIDEO, 13);
  memset(s.bytes + 9, 0xee, 4); /* the extension, whatever it holds */
  TAG(&s, FE_FLV_VIDEO, 0, FE_FLV_SEQ_HEADER, 7, 0x17, 0x00, 0, 0, 0, 0x01);
  TAG(&s, FE_FLV_VIDEO, 0, FE_FLV_KEYFRAME, 7, 0x17, 0x01, 0, 0, 0, 0x65);
  FE_CHECK(parse_in_pieces(&s, NULL, 0));
  for (size_t i = 0; i <= s.len; i++)
    bad += !parse_in_pieces(&s, &i, 1);
  FE_CHECK_EQ(bad, 0);
}

static void test_previous_tag_size_mismatch_passes_through(void) {
  static stream s;

  stream_begin(&s, FE_FLV_HAS_AUDIO, 9);
  TAG(&s, FE_FLV_AUDIO, 0, FE_FLV_SEQ_HEADER, 10, 0xaf, 0x00, 0x12, 0x10);
  TAG(&s, FE_FLV_AUDIO, 23, 0, 10, 0xaf, 0x01, 0x21);
  put_be(s.bytes + s.want[1].offset - 4, 0xdeadbeef, 4);
  FE_CHECK(parse_in_pieces(&s, NULL, 0));
}

/* Classifies a tag made of the given payload. */
static fe_flv_tag classify(const uint8_t *payload, size_t n, uint8_t type) {
  static uint8_t t[64];
  fe_flv_tag tag = {.data = t, .size = (uint32_t)n, .type = type};

  memset(t, 0, sizeof(t));
  t[0] = type;
  memcpy(t + FE_FLV_TAG_HEADER_SIZE, payload, n);
  fe_flv_classify(&tag);
  return tag;
}

#define CLASSIFY(tag, type, ...)                                                       \
  do {                                                                                 \
    static const uint8_t pl_[] = {__VA_ARGS__};                                        \
    tag = classify(pl_, sizeof(pl_), type);                                            \
  } while (0)

static void test_classify_unusual_video_headers(void) {
  fe_flv_tag t;

  CLASSIFY(t, FE_FLV_VIDEO, 0x17); /* AVC without its packet type byte */
  FE_CHECK_EQ(t.flags, 0);
  FE_CHECK_EQ(t.codec, 7);
  CLASSIFY(t, FE_FLV_VIDEO, 0x57, 0x01); /* legacy video info/command frame */
  FE_CHECK_EQ(t.flags, 0);
  CLASSIFY(t, FE_FLV_VIDEO, 0x52, 0x00); /* same, for a codec without packet types */
  FE_CHECK_EQ(t.flags, 0);
  CLASSIFY(t, FE_FLV_VIDEO, 0x91, 'h', 'v'); /* enhanced, FourCC cut short */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_KEYFRAME);
  FE_CHECK_EQ(t.codec, 0);
  CLASSIFY(t, FE_FLV_VIDEO, 0xd1, 0x00); /* enhanced command frame: a command byte, no FourCC */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  FE_CHECK_EQ(t.codec, 0);
  CLASSIFY(t, FE_FLV_VIDEO, 0x95, 'a', 'v', '0', '1', 0x80); /* MPEG2TSSequenceStart */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_SEQ_HEADER);
  FE_CHECK_EQ(t.codec, FOURCC("av01"));
  CLASSIFY(t, FE_FLV_VIDEO, 0x94, 'h', 'v', 'c', '1', 0x02); /* metadata */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  FE_CHECK_EQ(t.codec, FOURCC("hvc1"));
}

static void test_classify_multitrack_and_modex(void) {
  fe_flv_tag t;

  /* One track: the real packet type and the FourCC follow the multitrack byte. */
  CLASSIFY(t, FE_FLV_VIDEO, 0x96, 0x01, 'a', 'v', '0', '1', 0x00, 0x12);
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_KEYFRAME);
  FE_CHECK_EQ(t.codec, FOURCC("av01"));
  CLASSIFY(t, FE_FLV_VIDEO, 0x96, 0x10, 'h', 'v', 'c', '1', 0x00, 0, 0, 4, 0x01);
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_SEQ_HEADER);
  /* Many codecs: each track names its own, so the tag has none. */
  CLASSIFY(t, FE_FLV_VIDEO, 0x96, 0x23, 'a', 'v', '0', '1', 0x00, 0, 0, 1, 0x12);
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_KEYFRAME);
  FE_CHECK_EQ(t.codec, 0);
  CLASSIFY(t, FE_FLV_VIDEO, 0xa6, 0x01, 'a', 'v', '0', '1', 0x00, 0x12); /* inter frame */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  CLASSIFY(t, FE_FLV_VIDEO, 0x96); /* cut after the first byte */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  /* ModEx (a nanosecond offset) ahead of CodedFrames. */
  CLASSIFY(t, FE_FLV_VIDEO, 0x97, 0x02, 0x00, 0x01, 0x00, 0x01, 'h', 'v', 'c', '1', 0, 0, 0);
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_KEYFRAME);
  FE_CHECK_EQ(t.codec, FOURCC("hvc1"));
  CLASSIFY(t, FE_FLV_VIDEO, 0x97, 0x02, 0x00, 0x01); /* ModEx data runs to the end */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  CLASSIFY(t, FE_FLV_VIDEO, 0x97, 0xff, 0x00); /* 16-bit ModEx size cut short */
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED);
  /* Audio multitrack is packet type 5, and audio never counts as a keyframe. */
  CLASSIFY(t, FE_FLV_AUDIO, 0x95, 0x00, 'm', 'p', '4', 'a', 0x00, 0x12, 0x10);
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_SEQ_HEADER);
  FE_CHECK_EQ(t.codec, FOURCC("mp4a"));
  CLASSIFY(t, FE_FLV_AUDIO, 0x92, 'O', 'p', 'u', 's');
  FE_CHECK_EQ(t.flags, FE_FLV_ENHANCED | FE_FLV_SEQ_END);
}

static void test_classify_short_audio_and_script(void) {
  fe_flv_tag t;

  CLASSIFY(t, FE_FLV_AUDIO, 0xaf); /* AAC without its packet type byte */
  FE_CHECK_EQ(t.flags, 0);
  FE_CHECK_EQ(t.codec, 10);
  CLASSIFY(t, FE_FLV_AUDIO, 0x2f, 0x00); /* MP3: no sequence header */
  FE_CHECK_EQ(t.flags, 0);
  FE_CHECK_EQ(t.codec, 2);
  CLASSIFY(t, FE_FLV_SCRIPT, 0x02, 0x00, 0x0a, 'o', 'n', 'M', 'e', 't', 'a'); /* cut in the name */
  FE_CHECK_EQ(t.flags, 0);
  CLASSIFY(t, FE_FLV_SCRIPT, 0x02, 0x00, 0x0d, '@', 's', 'e', 't', 'D', 'a', 't', 'a', 'F', 'r', 'a',
           'm', 'e');
  FE_CHECK_EQ(t.flags, 0);
  CLASSIFY(t, FE_FLV_SCRIPT, 0x02);
  FE_CHECK_EQ(t.flags, 0);
  FE_CHECK_EQ(t.codec, 0);
}

static void test_bad_signature_is_sticky(void) {
  static const uint8_t reply[] = "HTTP/1.1 404 Not Found\r\n";
  static stream s;
  got_tags g = {0};
  fe_flv_parser p;

  build_sample(&s, 1);
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, reply, 3, collect, &g), FE_FLV_EBADSIG);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_EBADSIG);
  FE_CHECK_EQ(fe_flv_parser_finish(&p), FE_FLV_EBADSIG);
  FE_CHECK_EQ(g.n, 0);
  fe_flv_parser_free(&p);

  s.bytes[3] = 2; /* FLV version 2 */
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_EBADSIG);
  fe_flv_parser_free(&p);

  s.bytes[3] = 1;
  put_be(s.bytes + 5, 8, 4); /* DataOffset inside the header */
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_EBADSIG);
  FE_CHECK_EQ(g.n, 0);
  fe_flv_parser_free(&p);
}

static void test_oversized_tag_fails_before_allocating(void) {
  static stream s;
  got_tags g = {0};
  fe_flv_parser p;
  size_t header_end;
  int rc = 0;

  stream_begin(&s, FE_FLV_HAS_VIDEO, 9);
  TAG(&s, FE_FLV_VIDEO, 0, FE_FLV_SEQ_HEADER, 7, 0x17, 0x00, 0, 0, 0, 0x01);
  header_end = s.want[0].offset + FE_FLV_TAG_HEADER_SIZE;
  put_be(s.bytes + s.want[0].offset + 1, 0xffffff, 3);

  /* Byte by byte, so the header is assembled in the parser's buffer. */
  fe_flv_parser_init(&p, 1000);
  for (size_t i = 0; i < header_end - 1; i++)
    rc |= fe_flv_parser_feed(&p, s.bytes + i, 1, collect, &g);
  FE_CHECK_EQ(rc, 0);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes + header_end - 1, 1, collect, &g), FE_FLV_ETOOBIG);
  FE_CHECK(p.buf_cap <= FE_FLV_TAG_OVERHEAD + 1000);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, 1, collect, &g), FE_FLV_ETOOBIG);
  fe_flv_parser_free(&p);

  /* Whole, header in place. */
  fe_flv_parser_init(&p, 1000);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, header_end, collect, &g), FE_FLV_ETOOBIG);
  FE_CHECK(p.buf_cap <= FE_FLV_TAG_OVERHEAD + 1000);
  FE_CHECK_EQ(g.n, 0);
  fe_flv_parser_free(&p);
}

static void test_tag_at_the_limit_fits_the_buffer(void) {
  static stream s;
  static uint8_t payload[1000];
  got_tags g = {0};
  fe_flv_parser p;
  int rc = 0;

  payload[0] = 0x27;
  payload[1] = 0x01;
  stream_begin(&s, FE_FLV_HAS_VIDEO, 9);
  stream_tag(&s, FE_FLV_VIDEO, 40, payload, sizeof(payload), 0, 7);
  fe_flv_parser_init(&p, sizeof(payload));
  for (size_t i = 0; i < s.len; i++)
    rc |= fe_flv_parser_feed(&p, s.bytes + i, 1, collect, &g);
  FE_CHECK_EQ(rc, 0);
  FE_CHECK_EQ(g.n, 1);
  FE_CHECK_EQ(g.tags[0].size, sizeof(payload));
  FE_CHECK_EQ(p.buf_cap, FE_FLV_TAG_OVERHEAD + sizeof(payload));
  FE_CHECK_EQ(fe_flv_parser_finish(&p), 0);
  fe_flv_parser_free(&p);

  fe_flv_parser_init(&p, sizeof(payload) - 1);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_ETOOBIG);
  fe_flv_parser_free(&p);
}

static void test_unknown_and_encrypted_tags_are_rejected(void) {
  static stream s;
  got_tags g = {0};
  fe_flv_parser p;

  stream_begin(&s, FE_FLV_HAS_VIDEO, 9);
  TAG(&s, FE_FLV_VIDEO, 0, FE_FLV_SEQ_HEADER, 7, 0x17, 0x00, 0, 0, 0, 0x01);
  TAG(&s, 7, 0, 0, 0, 0x00);
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_EBADTYPE);
  FE_CHECK_EQ(g.n, 1);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, 1, collect, &g), FE_FLV_EBADTYPE);
  fe_flv_parser_free(&p);

  s.bytes[s.want[1].offset] = 0x20 | FE_FLV_VIDEO; /* filter bit: encrypted */
  g.n = 0;
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), FE_FLV_EBADTYPE);
  FE_CHECK_EQ(g.n, 1);
  FE_CHECK_EQ(p.tags, 1);
  fe_flv_parser_free(&p);
}

/* Feeds the first n bytes of s and reports what finish says. */
static int finish_after(const stream *s, size_t n) {
  got_tags g = {0};
  fe_flv_parser p;
  int rc;

  fe_flv_parser_init(&p, 1 << 20);
  rc = fe_flv_parser_feed(&p, s->bytes, n, collect, &g);
  if (rc == 0)
    rc = fe_flv_parser_finish(&p);
  fe_flv_parser_free(&p);
  return rc;
}

static void test_finish_tells_a_clean_end_from_a_cut(void) {
  static stream s;
  size_t second;

  build_sample(&s, 1);
  second = s.want[1].offset;
  FE_CHECK_EQ(finish_after(&s, 0), 0);
  FE_CHECK_EQ(finish_after(&s, 5), FE_FLV_ETRUNC);   /* inside the file header */
  FE_CHECK_EQ(finish_after(&s, 9), FE_FLV_ETRUNC);   /* before PreviousTagSize0 */
  FE_CHECK_EQ(finish_after(&s, 13), 0);              /* header only: no tags yet */
  FE_CHECK_EQ(finish_after(&s, second), 0);          /* on a tag boundary */
  FE_CHECK_EQ(finish_after(&s, second + 4), FE_FLV_ETRUNC); /* inside a tag header */
  FE_CHECK_EQ(finish_after(&s, second + 12), FE_FLV_ETRUNC); /* inside a payload */
  FE_CHECK_EQ(finish_after(&s, s.len - 1), FE_FLV_ETRUNC);   /* before the last PreviousTagSize */
  FE_CHECK_EQ(finish_after(&s, s.len), 0);
}

static void test_callback_stops_the_feed(void) {
  static stream s;
  static got_tags g;
  fe_flv_parser p;

  build_sample(&s, 0);
  g.stop_at = 2;
  fe_flv_parser_init(&p, 1 << 20);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), -5);
  FE_CHECK_EQ(g.n, 2);
  FE_CHECK_EQ(p.tags, 2);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, s.bytes, s.len, collect, &g), -5);
  FE_CHECK_EQ(g.n, 2);
  fe_flv_parser_free(&p);
}

static void test_timestamp_round_trip(void) {
  static const uint32_t ts[] = {0, 1, 0xffffff, 0x1000000, 0x12345678, 0xffffffff};
  uint8_t h[FE_FLV_TAG_HEADER_SIZE];

  memset(h, 0xaa, sizeof(h));
  fe_flv_set_timestamp(h, 0x12345678);
  FE_CHECK_EQ(h[4], 0x34);
  FE_CHECK_EQ(h[5], 0x56);
  FE_CHECK_EQ(h[6], 0x78);
  FE_CHECK_EQ(h[7], 0x12);
  FE_CHECK_EQ(h[3], 0xaa); /* DataSize and StreamID untouched */
  FE_CHECK_EQ(h[8], 0xaa);
  for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
    fe_flv_set_timestamp(h, ts[i]);
    FE_CHECK_EQ(fe_flv_get_timestamp(h), ts[i]);
  }
}

static void test_written_file_header_parses(void) {
  static const uint8_t want[FE_FLV_FILE_HEADER_SIZE] = {'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0};
  uint8_t h[FE_FLV_FILE_HEADER_SIZE];
  got_tags g = {0};
  fe_flv_parser p;

  fe_flv_write_file_header(h, FE_FLV_HAS_VIDEO | FE_FLV_HAS_AUDIO);
  FE_CHECK(memcmp(h, want, sizeof(h)) == 0);
  fe_flv_parser_init(&p, 0);
  FE_CHECK_EQ(fe_flv_parser_feed(&p, h, sizeof(h), collect, &g), 0);
  FE_CHECK(p.have_header);
  FE_CHECK_EQ(p.header_flags, 5);
  FE_CHECK_EQ(fe_flv_parser_finish(&p), 0);
  fe_flv_parser_free(&p);
}

static void test_error_strings(void) {
  FE_CHECK(strcmp(fe_flv_strerror(FE_FLV_EBADSIG), "bad FLV signature") == 0);
  FE_CHECK(strcmp(fe_flv_strerror(FE_FLV_ETOOBIG), "tag larger than the limit") == 0);
  FE_CHECK(strcmp(fe_flv_strerror(FE_FLV_EBADTYPE), "bad tag type") == 0);
  FE_CHECK(strcmp(fe_flv_strerror(FE_FLV_ETRUNC), "truncated FLV data") == 0);
  FE_CHECK(strcmp(fe_flv_strerror(FE_FLV_ENOMEM), "out of memory") == 0);
  FE_CHECK(fe_flv_strerror(-1) != NULL);
}

int main(void) {
  FE_RUN(test_whole_stream_is_handed_out_in_place);
  FE_RUN(test_byte_by_byte_gives_the_same_tags);
  FE_RUN(test_every_split_gives_the_same_tags);
  FE_RUN(test_every_three_way_split_gives_the_same_tags);
  FE_RUN(test_header_extension_is_skipped);
  FE_RUN(test_previous_tag_size_mismatch_passes_through);
  FE_RUN(test_classify_unusual_video_headers);
  FE_RUN(test_classify_multitrack_and_modex);
  FE_RUN(test_classify_short_audio_and_script);
  FE_RUN(test_bad_signature_is_sticky);
  FE_RUN(test_oversized_tag_fails_before_allocating);
  FE_RUN(test_tag_at_the_limit_fits_the_buffer);
  FE_RUN(test_unknown_and_encrypted_tags_are_rejected);
  FE_RUN(test_finish_tells_a_clean_end_from_a_cut);
  FE_RUN(test_callback_stops_the_feed);
  FE_RUN(test_timestamp_round_trip);
  FE_RUN(test_written_file_header_parses);
  FE_RUN(test_error_strings);
  return FE_DONE();
}
