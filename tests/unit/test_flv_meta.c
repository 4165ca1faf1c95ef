#include "flv/fe_flv_meta.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flv/fe_flv.h"
#include "fe_test.h"

/* A byte buffer that AMF0 values and FLV tags are appended to. */
typedef struct {
  uint8_t b[65536];
  size_t len;
} buf;

static void put(buf *o, const void *p, size_t n) {
  memcpy(o->b + o->len, p, n);
  o->len += n;
}

static void put_u8(buf *o, uint8_t v) {
  o->b[o->len++] = v;
}

static void put_be(buf *o, uint32_t v, int n) {
  for (int i = n - 1; i >= 0; i--)
    o->b[o->len + (size_t)(n - 1 - i)] = (uint8_t)(v >> (8 * i));
  o->len += (size_t)n;
}

static void amf_key(buf *o, const char *k) {
  put_be(o, (uint32_t)strlen(k), 2);
  put(o, k, strlen(k));
}

static void amf_str(buf *o, const char *s) {
  put_u8(o, 0x02);
  amf_key(o, s);
}

/* A number whose bytes sit at the returned offset + 1 (for patching). */
static size_t amf_num(buf *o, double d) {
  uint64_t bits;
  size_t at = o->len;
  memcpy(&bits, &d, sizeof(bits));
  put_u8(o, 0x00);
  put_be(o, (uint32_t)(bits >> 32), 4);
  put_be(o, (uint32_t)bits, 4);
  return at;
}

static void amf_patch_num(buf *o, size_t at, double d) {
  buf tmp = {.len = 0};
  amf_num(&tmp, d);
  memcpy(o->b + at, tmp.b, 9);
}

static void amf_end(buf *o) {
  put_be(o, 0, 2);
  put_u8(o, 0x09);
}

/* A strict array of numbers; the offsets of each number go to at[] when given. */
static void amf_numbers(buf *o, const double *v, uint32_t n, size_t *at) {
  put_u8(o, 0x0a);
  put_be(o, n, 4);
  for (uint32_t i = 0; i < n; i++) {
    size_t a = amf_num(o, v[i]);
    if (at)
      at[i] = a;
  }
}

/* The 13-byte file header. */
static void flv_header(buf *o) {
  put(o, "FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", 13);
}

/* One tag with the given payload; returns its offset. */
static size_t flv_tag(buf *o, uint8_t type, uint32_t ts, const void *pl, size_t n) {
  size_t at = o->len;
  put_u8(o, type);
  put_be(o, (uint32_t)n, 3);
  put_be(o, ts & 0xffffff, 3);
  put_u8(o, (uint8_t)(ts >> 24));
  put_be(o, 0, 3);
  put(o, pl, n);
  put_be(o, (uint32_t)(11 + n), 4);
  return at;
}

static const uint8_t avc_seq[] = {0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1f};
static const uint8_t aac_seq[] = {0xaf, 0x00, 0x12, 0x10};
static const uint8_t avc_key[] = {0x17, 0x01, 0, 0, 0, 0, 0, 0, 5, 0x65, 1, 2, 3, 4};
static const uint8_t avc_inter[] = {0x27, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x41, 1};
static const uint8_t aac_raw[] = {0xaf, 0x01, 1, 2, 3};

/*
 * A file as yamdi or ffmpeg write it: onMetaData (ECMA array) with duration and a keyframes
 * object, both sequence headers, then three seconds of a keyframe and an inter frame each, the
 * index patched to the keyframes' real offsets. `wrap` puts @setDataFrame in front.
 */
typedef struct {
  buf f;
  size_t prefix_end, key_at[3];
  size_t time_at[3], pos_at[3];
} sample;

static void sample_build(sample *s, int wrap) {
  buf meta = {.len = 0};
  double zeros[3] = {0, 0, 0};
  size_t meta_tag, meta_pl;

  memset(s, 0, sizeof(*s));
  if (wrap)
    amf_str(&meta, "@setDataFrame");
  amf_str(&meta, "onMetaData");
  put_u8(&meta, 0x08);
  put_be(&meta, 4, 4);
  amf_key(&meta, "duration");
  amf_num(&meta, 3.0);
  amf_key(&meta, "hasKeyframes");
  put_u8(&meta, 0x01);
  put_u8(&meta, 1);
  amf_key(&meta, "encoder");
  amf_str(&meta, "test");
  amf_key(&meta, "keyframes");
  put_u8(&meta, 0x03);
  amf_key(&meta, "times");
  amf_numbers(&meta, zeros, 3, s->time_at);
  amf_key(&meta, "filepositions");
  amf_numbers(&meta, zeros, 3, s->pos_at);
  amf_end(&meta);
  amf_end(&meta);

  flv_header(&s->f);
  meta_tag = flv_tag(&s->f, FE_FLV_SCRIPT, 0, meta.b, meta.len);
  meta_pl = meta_tag + FE_FLV_TAG_HEADER_SIZE;
  flv_tag(&s->f, FE_FLV_VIDEO, 0, avc_seq, sizeof(avc_seq));
  flv_tag(&s->f, FE_FLV_AUDIO, 0, aac_seq, sizeof(aac_seq));
  s->prefix_end = s->f.len;
  for (int i = 0; i < 3; i++) {
    s->key_at[i] = flv_tag(&s->f, FE_FLV_VIDEO, (uint32_t)i * 1000, avc_key, sizeof(avc_key));
    flv_tag(&s->f, FE_FLV_AUDIO, (uint32_t)i * 1000 + 10, aac_raw, sizeof(aac_raw));
    flv_tag(&s->f, FE_FLV_VIDEO, (uint32_t)i * 1000 + 40, avc_inter, sizeof(avc_inter));
    s->time_at[i] += meta_pl;
    s->pos_at[i] += meta_pl;
    amf_patch_num(&s->f, s->time_at[i], i);
    amf_patch_num(&s->f, s->pos_at[i], (double)s->key_at[i]);
  }
}

static void test_meta_basic(void) {
  for (int wrap = 0; wrap < 2; wrap++) {
    sample s;
    fe_flv_meta m;

    sample_build(&s, wrap);
    FE_CHECK_EQ(fe_flv_meta_scan(s.f.b, s.f.len, s.f.len, &m), 0);
    FE_CHECK_EQ(m.flags, 5);
    FE_CHECK_EQ(m.header_len, 13);
    FE_CHECK_EQ(m.prefix_end, s.prefix_end);
    FE_CHECK(m.duration == 3.0);
    FE_CHECK_EQ(m.nkeyframes, 3);
    for (uint32_t i = 0; i < m.nkeyframes && m.nkeyframes == 3; i++) {
      FE_CHECK(m.times[i] == i);
      FE_CHECK_EQ(m.positions[i], s.key_at[i]);
    }
    fe_flv_meta_free(&m);
    FE_CHECK(m.times == NULL && m.positions == NULL && m.nkeyframes == 0);
  }
}

/* Every length short of the first frame's head asks for more; from there on the answer is final. */
static void test_meta_more(void) {
  sample s;
  fe_flv_meta m;

  sample_build(&s, 0);
  for (size_t len = 0; len <= s.f.len; len++) {
    int rc = fe_flv_meta_scan(s.f.b, len, 0, &m);
    if (len < s.prefix_end + FE_FLV_TAG_HEADER_SIZE + sizeof(avc_key)) {
      if (rc != FE_FLV_META_MORE)
        fprintf(stderr, "len %zu: %d\n", len, rc);
      FE_CHECK_EQ(rc, FE_FLV_META_MORE);
      FE_CHECK(m.times == NULL);
    } else {
      FE_CHECK_EQ(rc, 0);
      FE_CHECK_EQ(m.prefix_end, s.prefix_end);
      FE_CHECK_EQ(m.nkeyframes, 3);
    }
    fe_flv_meta_free(&m);
  }
  /* When the whole file is there, a file cut inside the prefix is truncated, not "more". */
  FE_CHECK_EQ(fe_flv_meta_scan(s.f.b, s.prefix_end - 3, s.prefix_end - 3, &m), FE_FLV_ETRUNC);
}

/* A big first frame: its first bytes are enough to tell it is a frame. */
static void test_meta_big_frame(void) {
  static buf f;
  static uint8_t key[100000];
  fe_flv_meta m;
  size_t at;

  f.len = 0;
  flv_header(&f);
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_seq, sizeof(avc_seq));
  memcpy(key, avc_key, sizeof(avc_key));
  at = f.len;
  put_u8(&f, FE_FLV_VIDEO);
  put_be(&f, sizeof(key), 3);
  put_be(&f, 0, 7);
  put(&f, key, 1000);
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, at + 11 + 255, 0, &m), FE_FLV_META_MORE);
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, at + 11 + 256, 0, &m), 0);
  FE_CHECK_EQ(m.prefix_end, at);
  FE_CHECK_EQ(m.nkeyframes, 0);
  FE_CHECK(m.duration == 0);
  fe_flv_meta_free(&m);
}

static void test_meta_not_flv(void) {
  fe_flv_meta m;
  uint8_t b[64];
  buf f = {.len = 0};

  FE_CHECK_EQ(fe_flv_meta_scan((const uint8_t *)"FL", 2, 0, &m), FE_FLV_META_MORE);
  FE_CHECK_EQ(fe_flv_meta_scan((const uint8_t *)"GIF89a", 6, 0, &m), FE_FLV_EBADSIG);
  FE_CHECK_EQ(fe_flv_meta_scan((const uint8_t *)"FLV\x02", 4, 0, &m), FE_FLV_EBADSIG);
  memcpy(b, "FLV\x01\x05\x00\x00\x00\x08", 9); /* DataOffset below 9 */
  FE_CHECK_EQ(fe_flv_meta_scan(b, 9, 0, &m), FE_FLV_EBADSIG);
  flv_header(&f);
  flv_tag(&f, 7, 0, "x", 1);
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), FE_FLV_EBADTYPE);
  f.len = 0;
  flv_header(&f);
  flv_tag(&f, FE_FLV_VIDEO | 0x20, 0, avc_key, sizeof(avc_key)); /* encrypted */
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), FE_FLV_EBADTYPE);
  /* A header with an extension: tags start after it. */
  f.len = 0;
  put(&f, "FLV\x01\x01\x00\x00\x00\x0c\xaa\xbb\xcc\x00\x00\x00\x00", 16);
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_key, sizeof(avc_key));
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), 0);
  FE_CHECK_EQ(m.header_len, 16);
  FE_CHECK_EQ(m.prefix_end, 16);
  /* Only script tags and sequence headers, then the file ends: the prefix is the whole file. */
  f.len = 0;
  flv_header(&f);
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_seq, sizeof(avc_seq));
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, f.len, &m), 0);
  FE_CHECK_EQ(m.prefix_end, f.len);
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), FE_FLV_META_MORE);
}

/* Enhanced RTMP: a SequenceStart is prefix, CodedFrames end it. */
static void test_meta_enhanced(void) {
  static const uint8_t hvc_start[] = {0x90, 'h', 'v', 'c', '1', 1, 2, 3};
  static const uint8_t hvc_key[] = {0x91, 'h', 'v', 'c', '1', 0, 0, 0, 9, 9};
  static const uint8_t opus_start[] = {0x90, 'O', 'p', 'u', 's', 1};
  buf f = {.len = 0};
  fe_flv_meta m;
  size_t at;

  flv_header(&f);
  flv_tag(&f, FE_FLV_VIDEO, 0, hvc_start, sizeof(hvc_start));
  flv_tag(&f, FE_FLV_AUDIO, 0, opus_start, sizeof(opus_start));
  at = flv_tag(&f, FE_FLV_VIDEO, 0, hvc_key, sizeof(hvc_key));
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), 0);
  FE_CHECK_EQ(m.prefix_end, at);
  /* An audio frame first ends the prefix too. */
  f.len = 0;
  flv_header(&f);
  at = flv_tag(&f, FE_FLV_AUDIO, 0, aac_raw, sizeof(aac_raw));
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_seq, sizeof(avc_seq));
  FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), 0);
  FE_CHECK_EQ(m.prefix_end, at);
}

/*
 * A hand-made onMetaData with the given index arrays, then one frame. The positions in p are
 * relative to the end of the prefix (the metadata's size depends only on the array lengths).
 */
static int scan_index(const double *t, uint32_t nt, const double *p, uint32_t np,
                      uint64_t file_size_rel, fe_flv_meta *m, size_t *prefix_end) {
  static buf meta, f;
  double abs_p[16];

  for (int pass = 0; pass < 2; pass++) {
    meta.len = 0;
    amf_str(&meta, "onMetaData");
    put_u8(&meta, 0x03);
    amf_key(&meta, "keyframes");
    put_u8(&meta, 0x08);
    put_be(&meta, 2, 4);
    amf_key(&meta, "times");
    amf_numbers(&meta, t, nt, NULL);
    amf_key(&meta, "filepositions");
    amf_numbers(&meta, abs_p, np, NULL);
    amf_end(&meta);
    amf_end(&meta);
    *prefix_end = FE_FLV_FILE_HEADER_SIZE + FE_FLV_TAG_OVERHEAD + meta.len;
    for (uint32_t i = 0; i < np; i++)
      abs_p[i] = p[i] + (double)*prefix_end;
  }
  f.len = 0;
  flv_header(&f);
  flv_tag(&f, FE_FLV_SCRIPT, 0, meta.b, meta.len);
  FE_CHECK_EQ(f.len, *prefix_end);
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_key, sizeof(avc_key));
  return fe_flv_meta_scan(f.b, f.len, file_size_rel ? *prefix_end + file_size_rel : 0, m);
}

static void test_meta_validation(void) {
  fe_flv_meta m;
  size_t pe;

  FE_CHECK_EQ(scan_index(NULL, 0, NULL, 0, 0, &m, &pe), 0);
  FE_CHECK_EQ(m.nkeyframes, 0);
  FE_CHECK(m.times == NULL);
  {
    /* Out of order, NaN, negative, infinite, non-integer, before the prefix, at file_size. */
    double tt[8] = {0, 1, 0.5, NAN, -1, 2, INFINITY, 3};
    double pp[8] = {0, 100, 50, 200, 300, 400.5, 500, 600};
    FE_CHECK_EQ(scan_index(tt, 8, pp, 8, 0, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 3);
    if (m.nkeyframes == 3) {
      FE_CHECK(m.times[0] == 0 && m.times[1] == 1 && m.times[2] == 3);
      FE_CHECK(m.positions[0] == pe && m.positions[1] == pe + 100 && m.positions[2] == pe + 600);
    }
    fe_flv_meta_free(&m);
    /* file_size known: positions at or past it dropped. */
    FE_CHECK_EQ(scan_index(tt, 8, pp, 8, 600, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 2);
    fe_flv_meta_free(&m);
  }
  {
    double tt[3] = {0, 1, 2}, pp[3] = {-1, 0, 10};
    FE_CHECK_EQ(scan_index(tt, 3, pp, 3, 0, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 2); /* the one inside the prefix dropped */
    FE_CHECK(m.nkeyframes == 2 && m.times[0] == 1 && m.positions[0] == pe);
    fe_flv_meta_free(&m);
    /* Mismatched lengths: the index is refused whole. */
    FE_CHECK_EQ(scan_index(tt, 3, pp, 2, 0, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 0);
    FE_CHECK(m.times == NULL && m.positions == NULL);
    /* Equal times are kept (ascending, not strictly); equal positions are not. */
    tt[1] = 0;
    pp[0] = 0;
    pp[1] = 5;
    FE_CHECK_EQ(scan_index(tt, 3, pp, 3, 0, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 3);
    fe_flv_meta_free(&m);
    pp[1] = pp[0];
    FE_CHECK_EQ(scan_index(tt, 3, pp, 3, 0, &m, &pe), 0);
    FE_CHECK_EQ(m.nkeyframes, 2);
    fe_flv_meta_free(&m);
  }
}

/* Writes an onMetaData whose first property is `body` (raw AMF0 value), then a good keyframes. */
static int scan_with(const uint8_t *body, size_t n, fe_flv_meta *m) {
  static buf meta, f;
  double t[2] = {0, 1}, p[2] = {10000, 20000};

  meta.len = 0;
  amf_str(&meta, "onMetaData");
  put_u8(&meta, 0x08);
  put_be(&meta, 0xffffffff, 4); /* the ECMA count is not trusted */
  amf_key(&meta, "other");
  put(&meta, body, n);
  amf_key(&meta, "keyframes");
  put_u8(&meta, 0x03);
  amf_key(&meta, "filepositions");
  amf_numbers(&meta, p, 2, NULL);
  amf_key(&meta, "times");
  amf_numbers(&meta, t, 2, NULL);
  amf_end(&meta);
  amf_end(&meta);
  f.len = 0;
  flv_header(&f);
  flv_tag(&f, FE_FLV_SCRIPT, 0, meta.b, meta.len);
  flv_tag(&f, FE_FLV_VIDEO, 0, avc_key, sizeof(avc_key));
  return fe_flv_meta_scan(f.b, f.len, 0, m);
}

static void test_meta_amf_types(void) {
  static buf v;
  fe_flv_meta m;

  /* Every type the reader knows, nested, before the keyframes: all skipped. */
  v.len = 0;
  put_u8(&v, 0x03);
  amf_key(&v, "b");
  put(&v, "\x01\x00", 2);
  amf_key(&v, "s");
  amf_str(&v, "text");
  amf_key(&v, "ls");
  put(&v, "\x0c\x00\x00\x00\x03xyz", 8);
  amf_key(&v, "n");
  put_u8(&v, 0x05);
  amf_key(&v, "u");
  put_u8(&v, 0x06);
  amf_key(&v, "d");
  put(&v, "\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 11);
  amf_key(&v, "sa");
  put(&v, "\x0a\x00\x00\x00\x03\x05\x06\x01\x01", 9);
  amf_key(&v, "ea");
  put(&v, "\x08\x00\x00\x00\x00", 5);
  amf_end(&v);
  amf_end(&v);
  FE_CHECK_EQ(scan_with(v.b, v.len, &m), 0);
  FE_CHECK_EQ(m.nkeyframes, 2);
  FE_CHECK(m.nkeyframes == 2 && m.positions[1] == 20000);
  fe_flv_meta_free(&m);

  /* Nesting within the bound is read through; deeper is refused (the keyframes after it lost). */
  for (int depth = 14; depth <= 17; depth++) {
    v.len = 0;
    for (int i = 0; i < depth; i++) {
      put_u8(&v, 0x03);
      amf_key(&v, "x");
    }
    put_u8(&v, 0x05);
    for (int i = 0; i < depth; i++)
      amf_end(&v);
    FE_CHECK_EQ(scan_with(v.b, v.len, &m), 0);
    FE_CHECK_EQ(m.nkeyframes, depth <= 15 ? 2 : 0);
    fe_flv_meta_free(&m);
  }

  /* Lengths past the bytes: a string, a long string, a strict array count. */
  FE_CHECK_EQ(scan_with((const uint8_t *)"\x02\xff\xff", 3, &m), 0);
  FE_CHECK_EQ(m.nkeyframes, 0);
  FE_CHECK_EQ(scan_with((const uint8_t *)"\x0c\xff\xff\xff\xff", 5, &m), 0);
  FE_CHECK_EQ(m.nkeyframes, 0);
  FE_CHECK_EQ(scan_with((const uint8_t *)"\x0a\xff\xff\xff\xff", 5, &m), 0);
  FE_CHECK_EQ(m.nkeyframes, 0);
  /* An unknown marker stops the reading too. */
  FE_CHECK_EQ(scan_with((const uint8_t *)"\x11", 1, &m), 0);
  FE_CHECK_EQ(m.nkeyframes, 0);
  /* A null among the numbers: that entry is dropped, the others keep their pairs. */
  {
    static buf meta, f;
    meta.len = 0;
    amf_str(&meta, "onMetaData");
    put_u8(&meta, 0x03);
    amf_key(&meta, "keyframes");
    put_u8(&meta, 0x03);
    amf_key(&meta, "times");
    put(&meta, "\x0a\x00\x00\x00\x03", 5);
    amf_num(&meta, 0);
    put_u8(&meta, 0x05);
    amf_num(&meta, 2);
    amf_key(&meta, "filepositions");
    put(&meta, "\x0a\x00\x00\x00\x03", 5);
    amf_num(&meta, 1000);
    amf_num(&meta, 2000);
    amf_num(&meta, 3000);
    amf_end(&meta);
    amf_end(&meta);
    f.len = 0;
    flv_header(&f);
    flv_tag(&f, FE_FLV_SCRIPT, 0, meta.b, meta.len);
    flv_tag(&f, FE_FLV_VIDEO, 0, avc_key, sizeof(avc_key));
    FE_CHECK_EQ(fe_flv_meta_scan(f.b, f.len, 0, &m), 0);
    FE_CHECK_EQ(m.nkeyframes, 2);
    FE_CHECK(m.nkeyframes == 2 && m.times[1] == 2 && m.positions[1] == 3000);
    fe_flv_meta_free(&m);
  }
}

static void test_meta_find(void) {
  double times[5] = {0, 2, 4, 4, 8};
  uint64_t pos[5] = {100, 200, 300, 400, 500};
  fe_flv_meta m = {.nkeyframes = 5, .times = times, .positions = pos};
  fe_flv_meta empty = {.nkeyframes = 0};
  static const struct {
    double s;
    int64_t want;
  } cases[] = {{-1, 0}, {0, 0}, {1.9, 0}, {2, 1}, {3.99, 1}, {4, 3}, {7, 3}, {8, 4}, {1e9, 4}};

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    FE_CHECK_EQ(fe_flv_meta_find(&m, cases[i].s), cases[i].want);
  FE_CHECK_EQ(fe_flv_meta_find(&m, NAN), 0);
  FE_CHECK_EQ(fe_flv_meta_find(&empty, 5), -1);
  times[0] = 1;
  FE_CHECK_EQ(fe_flv_meta_find(&m, 0.5), 0); /* before the first: the first */
}

/* ffmpeg's -flvflags add_keyframe_index: every entry is a video keyframe tag at that time. */
static void test_meta_ffmpeg_file(void) {
  const char *path = FE_TEST_MEDIA "/keyframes.flv";
  FILE *fp = fopen(path, "rb");
  uint8_t *data;
  long size;
  fe_flv_meta m;

  FE_CHECK(fp != NULL);
  if (!fp)
    return;
  fseek(fp, 0, SEEK_END);
  size = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  data = malloc((size_t)size);
  FE_CHECK(fread(data, 1, (size_t)size, fp) == (size_t)size);
  fclose(fp);

  FE_CHECK_EQ(fe_flv_meta_scan(data, (size_t)size, (uint64_t)size, &m), 0);
  FE_CHECK(fabs(m.duration - 6.0) < 0.1);
  FE_CHECK(m.nkeyframes >= 6);
  FE_CHECK(m.positions[0] == m.prefix_end);
  for (uint32_t i = 0; i < m.nkeyframes; i++) {
    const uint8_t *h = data + m.positions[i];
    fe_flv_tag tag = {.data = h, .type = h[0] & 0x1f,
                      .size = (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3]};
    FE_CHECK(m.positions[i] + FE_FLV_TAG_OVERHEAD + tag.size <= (uint64_t)size);
    fe_flv_classify(&tag);
    FE_CHECK_EQ(tag.type, FE_FLV_VIDEO);
    FE_CHECK(tag.flags & FE_FLV_KEYFRAME);
    FE_CHECK(fabs(fe_flv_get_timestamp(h) / 1000.0 - m.times[i]) <= 0.001);
    if (i > 0)
      FE_CHECK(m.times[i] > m.times[i - 1]);
  }
  /* The prefix holds the metadata and both sequence headers, and no frame. */
  {
    uint64_t off = m.header_len;
    int seq = 0;
    while (off < m.prefix_end) {
      fe_flv_tag tag = {.data = data + off, .type = data[off] & 0x1f,
                        .size = (uint32_t)data[off + 1] << 16 | (uint32_t)data[off + 2] << 8 | data[off + 3]};
      fe_flv_classify(&tag);
      FE_CHECK(tag.type == FE_FLV_SCRIPT || (tag.flags & FE_FLV_SEQ_HEADER));
      seq += (tag.flags & FE_FLV_SEQ_HEADER) != 0;
      off += FE_FLV_TAG_OVERHEAD + tag.size;
    }
    FE_CHECK_EQ(off, m.prefix_end);
    FE_CHECK_EQ(seq, 2);
  }
  /* The first 64 KiB suffice; a seek to 3.5 s lands on the keyframe of 3 s. */
  fe_flv_meta_free(&m);
  FE_CHECK_EQ(fe_flv_meta_scan(data, 65536, (uint64_t)size, &m), 0);
  FE_CHECK(m.nkeyframes >= 6 && fabs(m.times[fe_flv_meta_find(&m, 3.5)] - 3.0) < 0.001);
  fe_flv_meta_free(&m);
  free(data);
}

int main(void) {
  FE_RUN(test_meta_basic);
  FE_RUN(test_meta_more);
  FE_RUN(test_meta_big_frame);
  FE_RUN(test_meta_not_flv);
  FE_RUN(test_meta_enhanced);
  FE_RUN(test_meta_validation);
  FE_RUN(test_meta_amf_types);
  FE_RUN(test_meta_find);
  FE_RUN(test_meta_ffmpeg_file);
  return FE_DONE();
}
