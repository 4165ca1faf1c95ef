/*
 * fe_flv: FLV container parsing and writing.
 *
 * The parser is incremental: feed it bytes as they arrive, split anywhere, and it calls back once
 * per complete tag with the tag's bytes contiguous (11-byte header, payload, 4-byte PreviousTagSize).
 * It never looks inside payloads beyond the first bytes needed to classify a tag, so any codec
 * passes through untouched. It uses nothing of ours: floor 1.
 */
#ifndef FE_FLV_H
#define FE_FLV_H

#include <stddef.h>
#include <stdint.h>

#define FE_FLV_FILE_HEADER_SIZE 13 /* 9-byte header + PreviousTagSize0 */
#define FE_FLV_TAG_HEADER_SIZE 11
#define FE_FLV_PREV_SIZE 4
#define FE_FLV_TAG_OVERHEAD (FE_FLV_TAG_HEADER_SIZE + FE_FLV_PREV_SIZE)

enum fe_flv_type { FE_FLV_AUDIO = 8, FE_FLV_VIDEO = 9, FE_FLV_SCRIPT = 18 };

/* Header flag bits, as in the FLV file header's TypeFlags byte. */
enum { FE_FLV_HAS_VIDEO = 0x01, FE_FLV_HAS_AUDIO = 0x04 };

/* What fe_flv_classify() finds in a tag. */
enum {
  FE_FLV_KEYFRAME = 1 << 0,   /* video frame a decoder can start at (audio tags never set it) */
  FE_FLV_SEQ_HEADER = 1 << 1, /* codec configuration: AVC/HEVC/AV1/VP9 config record, AAC ASC */
  FE_FLV_METADATA = 1 << 2,   /* script tag carrying onMetaData (or @setDataFrame onMetaData) */
  FE_FLV_SEQ_END = 1 << 3,    /* end-of-sequence marker */
  FE_FLV_ENHANCED = 1 << 4,   /* enhanced-RTMP header (FourCC codec) */
};

/* Errors: negative, so they can travel with libuv's. */
enum {
  FE_FLV_EBADSIG = -1001,  /* stream does not start with "FLV" version 1 */
  FE_FLV_ETOOBIG = -1002,  /* tag DataSize beyond the configured limit */
  FE_FLV_EBADTYPE = -1003, /* tag type not audio/video/script, or encrypted (filter bit) */
  FE_FLV_ETRUNC = -1004,   /* stream ended inside a tag */
  FE_FLV_ENOMEM = -1005,
};

/* FourCC codes of enhanced RTMP, as the big-endian 32-bit value of the four characters. */
#define FE_FLV_FOURCC(a, b, c, d) \
  (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))

/** One tag as the parser hands it out. `data` is borrowed: valid only during the callback. */
typedef struct fe_flv_tag {
  const uint8_t *data; /* whole tag: header + payload + PreviousTagSize; length FE_FLV_TAG_OVERHEAD + size */
  uint32_t size;       /* payload bytes (DataSize) */
  uint32_t timestamp;  /* milliseconds, with the extension byte */
  uint8_t type;        /* enum fe_flv_type */
  unsigned flags;      /* FE_FLV_KEYFRAME ... set by fe_flv_classify() */
  uint32_t codec;      /* video: legacy CodecID or FourCC; audio: SoundFormat or FourCC; 0 for script */
} fe_flv_tag;

/** Called once per complete tag; return 0 to go on, a negative value to stop feeding with that value. */
typedef int (*fe_flv_tag_cb)(void *ud, const fe_flv_tag *tag);

/** Parser state. Owns `buf` (a tag assembled across feeds); everything else is plain data. */
typedef struct fe_flv_parser {
  uint32_t max_tag_size; /* DataSize limit */
  int state;             /* internal */
  int error;             /* first error, sticky; 0 while healthy */
  uint8_t header_flags;  /* TypeFlags from the file header, once seen */
  int have_header;       /* 1 once the 13-byte file header has been read */
  uint32_t skip;         /* internal: bytes of header extension still to skip */
  uint8_t *buf;          /* internal: partial tag */
  size_t buf_len, buf_cap, need;
  uint64_t tags;         /* tags delivered so far */
} fe_flv_parser;

/** Prepares a parser that rejects tags with DataSize above max_tag_size. */
void fe_flv_parser_init(fe_flv_parser *p, uint32_t max_tag_size);
/** Releases the parser's buffer; the struct may be re-initialised afterwards. */
void fe_flv_parser_free(fe_flv_parser *p);
/**
 * Consumes `len` bytes. Calls `cb` for each complete tag, classified. Returns 0, a FE_FLV_E* error
 * (the parser is then dead and every later call returns it again), or what `cb` returned if negative.
 */
int fe_flv_parser_feed(fe_flv_parser *p, const uint8_t *data, size_t len, fe_flv_tag_cb cb, void *ud);
/** At end of stream: 0 if the parser stopped on a tag boundary, FE_FLV_ETRUNC otherwise. */
int fe_flv_parser_finish(fe_flv_parser *p);

/** Fills tag->flags and tag->codec from the first payload bytes (legacy and enhanced headers). */
void fe_flv_classify(fe_flv_tag *tag);
/** Rewrites the timestamp (24 bits + extension byte) in a tag's 11-byte header in place. */
void fe_flv_set_timestamp(uint8_t *tag_header, uint32_t ts);
/** Reads the timestamp from an 11-byte tag header. */
uint32_t fe_flv_get_timestamp(const uint8_t *tag_header);
/** Writes a correct PreviousTagSize (11 + size) after the payload of a tag of `size` bytes. */
void fe_flv_set_prev_size(uint8_t *tag, uint32_t size);
/** Writes the 9-byte FLV file header plus PreviousTagSize0 = 0 into out (13 bytes). */
void fe_flv_write_file_header(uint8_t out[FE_FLV_FILE_HEADER_SIZE], uint8_t type_flags);
/** A human-readable string for a FE_FLV_E* code. */
const char *fe_flv_strerror(int err);

#endif
