#include "flv/fe_flv_meta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flv/fe_flv.h"

#define FE_META_MAX_DEPTH 16       /* AMF0 nesting deeper than this: the value is refused */
#define FE_META_CLASSIFY_BYTES 256 /* payload bytes enough to tell a frame from a sequence header */

enum {
  FE_AMF_NUMBER = 0x00,
  FE_AMF_BOOLEAN = 0x01,
  FE_AMF_STRING = 0x02,
  FE_AMF_OBJECT = 0x03,
  FE_AMF_NULL = 0x05,
  FE_AMF_UNDEFINED = 0x06,
  FE_AMF_REFERENCE = 0x07,
  FE_AMF_ECMA_ARRAY = 0x08,
  FE_AMF_OBJECT_END = 0x09,
  FE_AMF_STRICT_ARRAY = 0x0a,
  FE_AMF_DATE = 0x0b,
  FE_AMF_LONG_STRING = 0x0c,
  FE_AMF_UNSUPPORTED = 0x0d,
  FE_AMF_XML = 0x0f,
};

/* A bounded AMF0 reader: every read checks the bytes left and fails (0) rather than run past. */
typedef struct {
  const uint8_t *p, *end;
} fe_amf;

/* What onMetaData gave, before validation. The arrays are malloc'd; NaN marks a non-number. */
typedef struct {
  double duration;
  double *times, *positions;
  uint32_t ntimes, npositions;
} fe_meta_raw;

static uint32_t fe_meta_be(const uint8_t *b, int n) {
  uint32_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | b[i];
  return v;
}

static size_t fe_amf_left(const fe_amf *a) {
  return (size_t)(a->end - a->p);
}

static int fe_amf_take(fe_amf *a, size_t n) {
  if (fe_amf_left(a) < n)
    return 0;
  a->p += n;
  return 1;
}

static double fe_amf_double(const uint8_t *b) {
  uint64_t bits = 0;
  double d;
  for (int i = 0; i < 8; i++)
    bits = bits << 8 | b[i];
  memcpy(&d, &bits, sizeof(d));
  return d;
}

/* A property name or string body: u16 length then bytes. */
static int fe_amf_key(fe_amf *a, const uint8_t **s, size_t *n) {
  if (fe_amf_left(a) < 2)
    return 0;
  *n = fe_meta_be(a->p, 2);
  *s = a->p + 2;
  return fe_amf_take(a, 2 + *n);
}

static int fe_amf_key_is(const uint8_t *s, size_t n, const char *want) {
  return n == strlen(want) && memcmp(s, want, n) == 0;
}

static int fe_amf_skip(fe_amf *a, int depth);

/* Object or ECMA array properties up to the 00 00 09 end marker (the ECMA count is not trusted). */
static int fe_amf_skip_props(fe_amf *a, int depth) {
  for (;;) {
    const uint8_t *k;
    size_t kn;
    if (!fe_amf_key(a, &k, &kn))
      return 0;
    if (kn == 0 && fe_amf_left(a) >= 1 && *a->p == FE_AMF_OBJECT_END)
      return fe_amf_take(a, 1);
    if (!fe_amf_skip(a, depth))
      return 0;
  }
}

/* Steps over one value of any type we know; 0 on a type we do not, too deep, or too short. */
static int fe_amf_skip(fe_amf *a, int depth) {
  uint8_t marker;
  uint32_t count;

  if (depth > FE_META_MAX_DEPTH || !fe_amf_left(a))
    return 0;
  marker = *a->p++;
  switch (marker) {
  case FE_AMF_NUMBER:
    return fe_amf_take(a, 8);
  case FE_AMF_BOOLEAN:
    return fe_amf_take(a, 1);
  case FE_AMF_STRING:
    return fe_amf_left(a) >= 2 && fe_amf_take(a, 2 + (size_t)fe_meta_be(a->p, 2));
  case FE_AMF_REFERENCE:
    return fe_amf_take(a, 2);
  case FE_AMF_LONG_STRING:
  case FE_AMF_XML:
    return fe_amf_left(a) >= 4 && fe_amf_take(a, 4 + (size_t)fe_meta_be(a->p, 4));
  case FE_AMF_NULL:
  case FE_AMF_UNDEFINED:
  case FE_AMF_UNSUPPORTED:
    return 1;
  case FE_AMF_DATE:
    return fe_amf_take(a, 10); /* double + s16 time zone */
  case FE_AMF_ECMA_ARRAY:
    if (!fe_amf_take(a, 4))
      return 0;
    /* fall through */
  case FE_AMF_OBJECT:
    return fe_amf_skip_props(a, depth + 1);
  case FE_AMF_STRICT_ARRAY:
    if (fe_amf_left(a) < 4)
      return 0;
    count = fe_meta_be(a->p, 4);
    a->p += 4;
    if (count > fe_amf_left(a)) /* every value takes a byte at least */
      return 0;
    for (uint32_t i = 0; i < count; i++)
      if (!fe_amf_skip(a, depth + 1))
        return 0;
    return 1;
  default:
    return 0;
  }
}

/*
 * A strict array of numbers into a malloc'd array (*out, *n); an element that is not a number is
 * stored as NaN so the entries keep their places. Returns 1; 0 when the value is another type
 * (skipped); -2 when the bytes break or hold too many entries; -1 when out of memory.
 */
static int fe_amf_numbers(fe_amf *a, int depth, double **out, uint32_t *n) {
  uint32_t count;
  double *v;

  if (fe_amf_left(a) < 5 || *a->p != FE_AMF_STRICT_ARRAY)
    return fe_amf_skip(a, depth) ? 0 : -2;
  count = fe_meta_be(a->p + 1, 4);
  a->p += 5;
  if (count > fe_amf_left(a) || count > FE_FLV_META_MAX_KEYFRAMES)
    return -2;
  v = malloc((count ? count : 1) * sizeof(*v));
  if (!v)
    return -1;
  for (uint32_t i = 0; i < count; i++) {
    if (fe_amf_left(a) >= 9 && *a->p == FE_AMF_NUMBER) {
      v[i] = fe_amf_double(a->p + 1);
      a->p += 9;
    } else if (fe_amf_skip(a, depth + 1)) {
      v[i] = NAN;
    } else {
      free(v);
      return -2;
    }
  }
  free(*out);
  *out = v;
  *n = count;
  return 1;
}

/*
 * The `keyframes` value (object or ECMA array): its `times` and `filepositions`. Returns 1 when
 * read through, 0 when the bytes end or break inside (what was read stays), -1 out of memory.
 */
static int fe_meta_keyframes(fe_amf *a, int depth, fe_meta_raw *raw) {
  uint8_t marker;

  if (!fe_amf_left(a))
    return 0;
  marker = *a->p;
  if (marker != FE_AMF_OBJECT && marker != FE_AMF_ECMA_ARRAY)
    return fe_amf_skip(a, depth);
  a->p++;
  if (marker == FE_AMF_ECMA_ARRAY && !fe_amf_take(a, 4))
    return 0;
  for (;;) {
    const uint8_t *k;
    size_t kn;
    int rc = 0;

    if (!fe_amf_key(a, &k, &kn))
      return 0;
    if (kn == 0 && fe_amf_left(a) >= 1 && *a->p == FE_AMF_OBJECT_END)
      return fe_amf_take(a, 1);
    if (fe_amf_key_is(k, kn, "times"))
      rc = fe_amf_numbers(a, depth + 1, &raw->times, &raw->ntimes);
    else if (fe_amf_key_is(k, kn, "filepositions"))
      rc = fe_amf_numbers(a, depth + 1, &raw->positions, &raw->npositions);
    else
      rc = fe_amf_skip(a, depth + 1) ? 0 : -2;
    if (rc == -1)
      return -1;
    if (rc == -2)
      return 0;
  }
}

/*
 * The onMetaData script tag's payload: name (after an optional @setDataFrame), then an object or
 * ECMA array whose top-level `duration` and `keyframes` are read. Lenient on the end: whatever was
 * read before the bytes break is kept. Returns 1 when it was onMetaData, 0 when not, -1 no memory.
 */
static int fe_meta_script(const uint8_t *pl, size_t n, fe_meta_raw *raw) {
  fe_amf a = {pl, pl + n};
  const uint8_t *s;
  size_t sn;
  uint8_t marker;

  if (!fe_amf_left(&a) || *a.p++ != FE_AMF_STRING || !fe_amf_key(&a, &s, &sn))
    return 0;
  if (fe_amf_key_is(s, sn, "@setDataFrame")) {
    if (!fe_amf_left(&a) || *a.p++ != FE_AMF_STRING || !fe_amf_key(&a, &s, &sn))
      return 0;
  }
  if (!fe_amf_key_is(s, sn, "onMetaData"))
    return 0;
  if (!fe_amf_left(&a))
    return 1;
  marker = *a.p++;
  if (marker != FE_AMF_OBJECT && marker != FE_AMF_ECMA_ARRAY)
    return 1;
  if (marker == FE_AMF_ECMA_ARRAY && !fe_amf_take(&a, 4))
    return 1;
  for (;;) {
    const uint8_t *k;
    size_t kn;

    if (!fe_amf_key(&a, &k, &kn) || (kn == 0 && fe_amf_left(&a) >= 1 && *a.p == FE_AMF_OBJECT_END))
      return 1;
    if (fe_amf_key_is(k, kn, "duration") && fe_amf_left(&a) >= 9 && *a.p == FE_AMF_NUMBER) {
      double d = fe_amf_double(a.p + 1);
      raw->duration = isfinite(d) && d > 0 ? d : 0;
      a.p += 9;
    } else if (fe_amf_key_is(k, kn, "keyframes")) {
      int rc = fe_meta_keyframes(&a, 2, raw);
      if (rc <= 0)
        return rc < 0 ? -1 : 1;
    } else if (!fe_amf_skip(&a, 1)) {
      return 1;
    }
  }
}

/*
 * Keeps the index entries a seek may use: a time that is a number >= 0 and not below the last kept
 * one, a position that is a whole number in [prefix_end, file_size) and above the last kept one.
 * One pass: an entry out of order is dropped, not the ones around it. Arrays of different lengths
 * pair no entry with certainty, so such an index is refused whole.
 */
static int fe_meta_index(fe_flv_meta *m, const fe_meta_raw *raw, uint64_t file_size) {
  uint32_t n = 0;
  double last_t = 0;
  uint64_t last_pos = 0;

  if (raw->ntimes != raw->npositions || raw->ntimes == 0)
    return 0;
  m->times = malloc(raw->ntimes * sizeof(*m->times));
  m->positions = malloc(raw->ntimes * sizeof(*m->positions));
  if (!m->times || !m->positions)
    return FE_FLV_ENOMEM;
  for (uint32_t i = 0; i < raw->ntimes; i++) {
    double t = raw->times[i], p = raw->positions[i];
    uint64_t pos;

    if (!(t >= 0 && t <= 1e15) || !(p >= 0 && p < 9007199254740992.0) || p != floor(p))
      continue;
    pos = (uint64_t)p;
    if (pos < m->prefix_end || (file_size > 0 && pos >= file_size))
      continue;
    if (n > 0 && (t < last_t || pos <= last_pos))
      continue;
    m->times[n] = last_t = t;
    m->positions[n] = last_pos = pos;
    n++;
  }
  m->nkeyframes = n;
  if (n == 0) {
    free(m->times);
    free(m->positions);
    m->times = NULL;
    m->positions = NULL;
  }
  return 0;
}

int fe_flv_meta_scan(const uint8_t *data, size_t len, uint64_t file_size, fe_flv_meta *out) {
  static const uint8_t sig[4] = {'F', 'L', 'V', 1};
  fe_meta_raw raw = {0};
  int have_meta = 0, rc = 0;
  uint64_t off;

  memset(out, 0, sizeof(*out));
  if (len == 0)
    return FE_FLV_META_MORE;
  if (memcmp(data, sig, len < 4 ? len : 4) != 0)
    return FE_FLV_EBADSIG;
  if (len < 9)
    return FE_FLV_META_MORE;
  if (fe_meta_be(data + 5, 4) < 9 || fe_meta_be(data + 5, 4) > UINT32_MAX - FE_FLV_PREV_SIZE)
    return FE_FLV_EBADSIG;
  out->flags = data[4];
  out->header_len = fe_meta_be(data + 5, 4) + FE_FLV_PREV_SIZE;
  /* Script tags and sequence headers are the prefix; the first other tag ends it. */
  for (off = out->header_len;;) {
    const uint8_t *h;
    uint32_t size;
    uint64_t avail;
    fe_flv_tag tag;

    if (file_size > 0 && off >= file_size && len >= file_size) {
      rc = off == file_size ? 0 : FE_FLV_ETRUNC; /* a file with no frame at all */
      break;
    }
    if (off + FE_FLV_TAG_HEADER_SIZE > len) {
      rc = file_size > 0 && len >= file_size ? FE_FLV_ETRUNC : FE_FLV_META_MORE;
      break;
    }
    h = data + off;
    if ((h[0] & 0x20) ||
        ((h[0] & 0x1f) != FE_FLV_AUDIO && (h[0] & 0x1f) != FE_FLV_VIDEO && (h[0] & 0x1f) != FE_FLV_SCRIPT)) {
      rc = FE_FLV_EBADTYPE;
      break;
    }
    size = fe_meta_be(h + 1, 3);
    avail = len - off - FE_FLV_TAG_HEADER_SIZE;
    if (avail > size)
      avail = size;
    if ((h[0] & 0x1f) != FE_FLV_SCRIPT && avail < size && avail < FE_META_CLASSIFY_BYTES) {
      rc = file_size > 0 && len >= file_size ? FE_FLV_ETRUNC : FE_FLV_META_MORE;
      break;
    }
    /* A frame is told by its first bytes; a prefix tag must be whole to be part of the prefix. */
    tag = (fe_flv_tag){.data = h, .size = (uint32_t)avail, .type = h[0] & 0x1f};
    fe_flv_classify(&tag);
    if (tag.type != FE_FLV_SCRIPT && !(tag.flags & FE_FLV_SEQ_HEADER))
      break;
    if (off + FE_FLV_TAG_OVERHEAD + size > len) {
      rc = file_size > 0 && len >= file_size ? FE_FLV_ETRUNC : FE_FLV_META_MORE;
      break;
    }
    if (tag.type == FE_FLV_SCRIPT && !have_meta) {
      int got = fe_meta_script(h + FE_FLV_TAG_HEADER_SIZE, size, &raw);
      if (got < 0) {
        rc = FE_FLV_ENOMEM;
        break;
      }
      have_meta = got;
    }
    off += FE_FLV_TAG_OVERHEAD + size;
  }
  if (rc == 0) {
    out->prefix_end = off;
    out->duration = raw.duration;
    rc = fe_meta_index(out, &raw, file_size);
  }
  free(raw.times);
  free(raw.positions);
  if (rc != 0)
    fe_flv_meta_free(out);
  return rc;
}

void fe_flv_meta_free(fe_flv_meta *m) {
  free(m->times);
  free(m->positions);
  m->times = NULL;
  m->positions = NULL;
  m->nkeyframes = 0;
}

int64_t fe_flv_meta_find(const fe_flv_meta *m, double seconds) {
  uint32_t lo = 0, hi;

  if (m->nkeyframes == 0)
    return -1;
  /* The first entry after `seconds` is at lo when the loop ends; NaN finds entry 0. */
  hi = m->nkeyframes;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (m->times[mid] <= seconds)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 ? (int64_t)lo - 1 : 0;
}
