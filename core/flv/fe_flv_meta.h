/*
 * fe_flv_meta: what a VOD file's first bytes say, for seeking. Reads the FLV header, the
 * onMetaData script tag (AMF0: duration and the `keyframes` object with its `times` and
 * `filepositions` arrays, as yamdi, flvmeta and ffmpeg's add_keyframe_index write them) and the
 * codec sequence headers that a decoder needs before any frame. Floor 1: plain data in, plain data
 * out; the arrays are malloc'd and owned by the result (fe_flv_meta_free).
 */
#ifndef FE_FLV_META_H
#define FE_FLV_META_H

#include <stddef.h>
#include <stdint.h>

#define FE_FLV_META_MAX_KEYFRAMES 1000000 /* more entries than this: the index is refused */

typedef struct fe_flv_meta {
  uint8_t flags;          /* the header's audio/video bits */
  uint32_t header_len;    /* bytes of the FLV header and PreviousTagSize0 (13 when no extension) */
  /* The prefix a seek puts in front of the keyframe: bytes [header_len, prefix_end) of the file
   * hold only script tags and sequence headers (no frame), so header + prefix + the file from a
   * keyframe's position on is a valid FLV stream. */
  uint64_t prefix_end;    /* file offset of the first tag that is neither (a frame) */
  double duration;        /* seconds, from onMetaData; 0 if absent */
  uint32_t nkeyframes;
  double *times;          /* seconds, ascending */
  uint64_t *positions;    /* file offsets of the keyframes' tags (their 11-byte headers) */
} fe_flv_meta;

enum {
  FE_FLV_META_MORE = 1,   /* the bytes end before the first frame: give more (up to a bound) */
};

/**
 * Scans the first `len` bytes of a file (`data` from offset 0). Returns 0 with `out` filled, FE_FLV_META_MORE
 * when the first frame lies beyond len, or a negative FE_FLV_E* error for bytes that are not FLV.
 * A file without a usable keyframes index gives 0 with nkeyframes = 0 (time seeks then fall back
 * to the start). Index entries that are not ascending or point outside [prefix_end, file_size)
 * (when file_size is known; 0 = unknown) are dropped.
 */
int fe_flv_meta_scan(const uint8_t *data, size_t len, uint64_t file_size, fe_flv_meta *out);
void fe_flv_meta_free(fe_flv_meta *m);
/** The index of the last keyframe at or before `seconds` (0 when before the first); -1 when none. */
int64_t fe_flv_meta_find(const fe_flv_meta *m, double seconds);

#endif
