#include "flv/fe_flv.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Parser states; 0 must be the start so that a zeroed struct is a fresh parser. */
enum {
  FE_FLV_ST_FILE_HEADER = 0, /* collecting the 9-byte file header in buf */
  FE_FLV_ST_SKIP,            /* skipping header extension bytes and PreviousTagSize0 */
  FE_FLV_ST_TAG_HEADER,      /* at a tag boundary, or collecting an 11-byte tag header in buf */
  FE_FLV_ST_TAG_BODY,        /* assembling a tag of `need` bytes in buf */
};

#define FE_FLV_HEADER_SIZE 9
#define FE_FLV_MAX_DATA_SIZE 0xffffffu /* DataSize is 24 bits */

/* Enhanced RTMP packet types that wrap the real one. */
enum { FE_FLV_EX_METADATA = 4, FE_FLV_EX_VIDEO_MULTITRACK = 6, FE_FLV_EX_AUDIO_MULTITRACK = 5 };
enum { FE_FLV_EX_MODEX = 7 };
enum { FE_FLV_EX_MANY_CODECS = 2 }; /* AvMultitrackType ManyTracksManyCodecs: a FourCC per track */
enum { FE_FLV_FRAME_KEY = 1, FE_FLV_FRAME_COMMAND = 5 };
enum { FE_FLV_CODEC_AVC = 7, FE_FLV_CODEC_HEVC = 12, FE_FLV_SOUND_AAC = 10, FE_FLV_SOUND_EX = 9 };

static uint32_t fe_flv_be24(const uint8_t *b) {
  return (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
}

static uint32_t fe_flv_be32(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | fe_flv_be24(b + 1);
}

void fe_flv_parser_init(fe_flv_parser *p, uint32_t max_tag_size) {
  memset(p, 0, sizeof(*p));
  p->max_tag_size = max_tag_size;
}

void fe_flv_parser_free(fe_flv_parser *p) {
  free(p->buf);
  p->buf = NULL;
  p->buf_len = p->buf_cap = 0;
}

/* Grows buf geometrically to hold n bytes, but never past the largest tag the limit admits. */
static int fe_flv_reserve(fe_flv_parser *p, size_t n) {
  size_t max_size = p->max_tag_size < FE_FLV_MAX_DATA_SIZE ? p->max_tag_size : FE_FLV_MAX_DATA_SIZE;
  size_t limit = FE_FLV_TAG_OVERHEAD + max_size;
  size_t cap = p->buf_cap ? p->buf_cap : 256;
  uint8_t *b;

  assert(n <= limit);
  if (n <= p->buf_cap)
    return 0;
  while (cap < n)
    cap *= 2;
  if (cap > limit)
    cap = limit;
  b = realloc(p->buf, cap);
  if (!b)
    return FE_FLV_ENOMEM;
  p->buf = b;
  p->buf_cap = cap;
  return 0;
}

/* Copies input into buf until it holds n bytes: 1 once it does, 0 when the input ran out first. */
static int fe_flv_fill(fe_flv_parser *p, const uint8_t **data, const uint8_t *end, size_t n) {
  size_t take = n - p->buf_len;
  if (take > (size_t)(end - *data))
    take = (size_t)(end - *data);
  memcpy(p->buf + p->buf_len, *data, take);
  p->buf_len += take;
  *data += take;
  return p->buf_len == n;
}

static int fe_flv_file_header(fe_flv_parser *p, const uint8_t **data, const uint8_t *end) {
  static const uint8_t sig[4] = {'F', 'L', 'V', 1};
  uint32_t offset;
  int done;
  int rc = fe_flv_reserve(p, FE_FLV_HEADER_SIZE);

  if (rc < 0)
    return rc;
  done = fe_flv_fill(p, data, end, FE_FLV_HEADER_SIZE);
  /* Check what has come so far, so a non-FLV reply fails at once rather than as truncated. */
  if (memcmp(p->buf, sig, p->buf_len < sizeof(sig) ? p->buf_len : sizeof(sig)) != 0)
    return FE_FLV_EBADSIG;
  if (!done)
    return 0;
  offset = fe_flv_be32(p->buf + 5);
  if (offset < FE_FLV_HEADER_SIZE)
    return FE_FLV_EBADSIG;
  p->header_flags = p->buf[4];
  p->skip = offset - FE_FLV_HEADER_SIZE + FE_FLV_PREV_SIZE;
  p->buf_len = 0;
  p->state = FE_FLV_ST_SKIP;
  return 0;
}

static void fe_flv_skip(fe_flv_parser *p, const uint8_t **data, const uint8_t *end) {
  size_t n = (size_t)(end - *data);
  if (n > p->skip)
    n = p->skip;
  *data += n;
  p->skip -= (uint32_t)n;
  if (p->skip == 0) {
    p->have_header = 1;
    p->state = FE_FLV_ST_TAG_HEADER;
  }
}

/* Validates a tag header and sets `need` to the whole tag's length. */
static int fe_flv_tag_begin(fe_flv_parser *p, const uint8_t *h) {
  uint8_t type = h[0] & 0x1f;
  uint32_t size = fe_flv_be24(h + 1);

  if ((h[0] & 0x20) || (type != FE_FLV_AUDIO && type != FE_FLV_VIDEO && type != FE_FLV_SCRIPT))
    return FE_FLV_EBADTYPE;
  if (size > p->max_tag_size)
    return FE_FLV_ETOOBIG;
  p->need = FE_FLV_TAG_OVERHEAD + size;
  return 0;
}

static int fe_flv_deliver(fe_flv_parser *p, const uint8_t *t, fe_flv_tag_cb cb, void *ud) {
  fe_flv_tag tag = {
      .data = t,
      .size = (uint32_t)(p->need - FE_FLV_TAG_OVERHEAD),
      .timestamp = fe_flv_get_timestamp(t),
      .type = t[0] & 0x1f,
  };
  int rc;

  fe_flv_classify(&tag);
  p->state = FE_FLV_ST_TAG_HEADER;
  p->buf_len = 0;
  p->tags++;
  rc = cb(ud, &tag);
  return rc < 0 ? rc : 0;
}

static int fe_flv_tag_header(fe_flv_parser *p, const uint8_t **data, const uint8_t *end,
                             fe_flv_tag_cb cb, void *ud) {
  const uint8_t *h = *data;
  size_t avail = (size_t)(end - h);
  int rc;

  if (p->buf_len == 0 && avail >= FE_FLV_TAG_HEADER_SIZE) {
    if ((rc = fe_flv_tag_begin(p, h)) < 0)
      return rc;
    if (avail >= p->need) {
      /* The whole tag is in the caller's buffer: hand it out without copying. */
      *data += p->need;
      return fe_flv_deliver(p, h, cb, ud);
    }
    /* Leave the header unconsumed: the body state copies it along with the rest. */
  } else {
    if ((rc = fe_flv_reserve(p, FE_FLV_TAG_HEADER_SIZE)) < 0)
      return rc;
    if (!fe_flv_fill(p, data, end, FE_FLV_TAG_HEADER_SIZE))
      return 0;
    if ((rc = fe_flv_tag_begin(p, p->buf)) < 0)
      return rc;
  }
  p->state = FE_FLV_ST_TAG_BODY;
  return fe_flv_reserve(p, p->need);
}

int fe_flv_parser_feed(fe_flv_parser *p, const uint8_t *data, size_t len, fe_flv_tag_cb cb,
                       void *ud) {
  const uint8_t *end;
  int rc = 0;

  if (p->error || len == 0)
    return p->error;
  end = data + len;
  while (rc == 0 && data < end) {
    switch (p->state) {
    case FE_FLV_ST_FILE_HEADER:
      rc = fe_flv_file_header(p, &data, end);
      break;
    case FE_FLV_ST_SKIP:
      fe_flv_skip(p, &data, end);
      break;
    case FE_FLV_ST_TAG_HEADER:
      rc = fe_flv_tag_header(p, &data, end, cb, ud);
      break;
    case FE_FLV_ST_TAG_BODY:
      if (fe_flv_fill(p, &data, end, p->need))
        rc = fe_flv_deliver(p, p->buf, cb, ud);
      break;
    }
  }
  p->error = rc;
  return rc;
}

int fe_flv_parser_finish(fe_flv_parser *p) {
  if (p->error)
    return p->error;
  /* Between feeds, bytes are pending exactly when buf holds some or the header tail is unread. */
  if (p->buf_len > 0 || p->state == FE_FLV_ST_SKIP)
    return FE_FLV_ETRUNC;
  return 0;
}

/*
 * Walks an enhanced-RTMP header from its second byte; `pt` is the first byte's low nibble. Skips
 * ModEx prefixes, unwraps a multitrack packet, reads the FourCC into *codec when the payload
 * carries one there. Returns the real packet type, or -1 if the payload ends first.
 */
static int fe_flv_ex_packet(const uint8_t *pl, size_t n, int pt, int multitrack, int command_frame,
                            uint32_t *codec) {
  size_t off = 1;

  while (pt == FE_FLV_EX_MODEX) {
    size_t mod_size;
    if (off >= n)
      return -1;
    mod_size = (size_t)pl[off++] + 1;
    if (mod_size == 256) {
      if (off + 2 > n)
        return -1;
      mod_size = ((size_t)pl[off] << 8 | pl[off + 1]) + 1;
      off += 2;
    }
    off += mod_size;
    if (off >= n)
      return -1;
    pt = pl[off++] & 0x0f;
  }
  /* A video command frame carries a command byte where the FourCC would be. */
  if (command_frame && pt != FE_FLV_EX_METADATA)
    return pt;
  if (pt == multitrack) {
    if (off >= n)
      return -1;
    if (pl[off] >> 4 == FE_FLV_EX_MANY_CODECS)
      return pl[off] & 0x0f;
    pt = pl[off++] & 0x0f;
  }
  if (off + 4 <= n)
    *codec = fe_flv_be32(pl + off);
  return pt;
}

static void fe_flv_classify_video(fe_flv_tag *tag, const uint8_t *pl, size_t n) {
  int frame, pt;

  if (pl[0] & 0x80) {
    frame = (pl[0] >> 4) & 7;
    tag->flags |= FE_FLV_ENHANCED;
    pt = fe_flv_ex_packet(pl, n, pl[0] & 0x0f, FE_FLV_EX_VIDEO_MULTITRACK,
                          frame == FE_FLV_FRAME_COMMAND, &tag->codec);
    if (frame == FE_FLV_FRAME_COMMAND)
      return;
    if (pt == 0 || pt == 5) /* SequenceStart, MPEG2TSSequenceStart */
      tag->flags |= FE_FLV_SEQ_HEADER;
    else if (pt == 2)
      tag->flags |= FE_FLV_SEQ_END;
    else if ((pt == 1 || pt == 3) && frame == FE_FLV_FRAME_KEY) /* CodedFrames, CodedFramesX */
      tag->flags |= FE_FLV_KEYFRAME;
    return;
  }
  frame = pl[0] >> 4;
  tag->codec = pl[0] & 0x0f;
  if (tag->codec == FE_FLV_CODEC_AVC || tag->codec == FE_FLV_CODEC_HEVC) {
    if (n < 2)
      return;
    if (pl[1] == 0)
      tag->flags |= FE_FLV_SEQ_HEADER;
    else if (pl[1] == 2)
      tag->flags |= FE_FLV_SEQ_END;
    else if (pl[1] == 1 && frame == FE_FLV_FRAME_KEY)
      tag->flags |= FE_FLV_KEYFRAME;
  } else if (frame == FE_FLV_FRAME_KEY) {
    tag->flags |= FE_FLV_KEYFRAME;
  }
}

static void fe_flv_classify_audio(fe_flv_tag *tag, const uint8_t *pl, size_t n) {
  int pt;

  tag->codec = pl[0] >> 4;
  if (tag->codec == FE_FLV_SOUND_AAC) {
    if (n >= 2 && pl[1] == 0)
      tag->flags |= FE_FLV_SEQ_HEADER;
  } else if (tag->codec == FE_FLV_SOUND_EX) {
    tag->codec = 0;
    tag->flags |= FE_FLV_ENHANCED;
    pt = fe_flv_ex_packet(pl, n, pl[0] & 0x0f, FE_FLV_EX_AUDIO_MULTITRACK, 0, &tag->codec);
    if (pt == 0)
      tag->flags |= FE_FLV_SEQ_HEADER;
    else if (pt == 2)
      tag->flags |= FE_FLV_SEQ_END;
  }
}

/* Matches an AMF0 string value (marker 0x02, u16 length, bytes) equal to s; returns its length. */
static size_t fe_flv_amf_string(const uint8_t *b, size_t n, const char *s) {
  size_t len = strlen(s);
  if (n < 3 + len || b[0] != 0x02 || ((size_t)b[1] << 8 | b[2]) != len ||
      memcmp(b + 3, s, len) != 0)
    return 0;
  return 3 + len;
}

void fe_flv_classify(fe_flv_tag *tag) {
  const uint8_t *pl = tag->data + FE_FLV_TAG_HEADER_SIZE;
  size_t n = tag->size, used;

  tag->flags = 0;
  tag->codec = 0;
  if (n == 0)
    return;
  switch (tag->type) {
  case FE_FLV_VIDEO:
    fe_flv_classify_video(tag, pl, n);
    break;
  case FE_FLV_AUDIO:
    fe_flv_classify_audio(tag, pl, n);
    break;
  case FE_FLV_SCRIPT:
    /* Encoders that went through RTMP often leave the @setDataFrame wrapper in place. */
    used = fe_flv_amf_string(pl, n, "@setDataFrame");
    if (fe_flv_amf_string(pl + used, n - used, "onMetaData"))
      tag->flags |= FE_FLV_METADATA;
    break;
  }
}

void fe_flv_set_timestamp(uint8_t *tag_header, uint32_t ts) {
  tag_header[4] = (uint8_t)(ts >> 16);
  tag_header[5] = (uint8_t)(ts >> 8);
  tag_header[6] = (uint8_t)ts;
  tag_header[7] = (uint8_t)(ts >> 24);
}

uint32_t fe_flv_get_timestamp(const uint8_t *tag_header) {
  return (uint32_t)tag_header[7] << 24 | fe_flv_be24(tag_header + 4);
}

void fe_flv_set_prev_size(uint8_t *tag, uint32_t size) {
  uint32_t prev = FE_FLV_TAG_HEADER_SIZE + size;
  uint8_t *p = tag + FE_FLV_TAG_HEADER_SIZE + size;
  p[0] = (uint8_t)(prev >> 24);
  p[1] = (uint8_t)(prev >> 16);
  p[2] = (uint8_t)(prev >> 8);
  p[3] = (uint8_t)prev;
}

void fe_flv_write_file_header(uint8_t out[FE_FLV_FILE_HEADER_SIZE], uint8_t type_flags) {
  static const uint8_t header[FE_FLV_FILE_HEADER_SIZE] = {'F', 'L', 'V', 1, 0, 0, 0, 0, 9, 0, 0, 0, 0};
  memcpy(out, header, sizeof(header));
  out[4] = type_flags;
}

const char *fe_flv_strerror(int err) {
  switch (err) {
  case 0:
    return "no error";
  case FE_FLV_EBADSIG:
    return "bad FLV signature";
  case FE_FLV_ETOOBIG:
    return "tag larger than the limit";
  case FE_FLV_EBADTYPE:
    return "bad tag type";
  case FE_FLV_ETRUNC:
    return "truncated FLV data";
  case FE_FLV_ENOMEM:
    return "out of memory";
  default:
    return "unknown FLV error";
  }
}
