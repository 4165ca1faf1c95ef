/*
 * fe_source: what feeds a live stream. A source (an origin pull, a relay from another loop, test
 * ingest) delivers FLV tags to a sink through fe_sink_ops; the hub is the sink and never knows
 * which kind of source it has, so one can be replaced under it.
 *
 * Order of calls: start once, then tag* and flush* (tags of one read, then a flush), then end; or
 * fail instead of start when the stream never came. After end or fail nothing more is delivered.
 */
#ifndef FE_SOURCE_H
#define FE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "flv/fe_flv.h"

/** end() before start: the source went away (a relay whose owner just ended); open another. */
#define FE_SOURCE_ERETRY (-2100)

typedef struct fe_sink_ops {
  /** The stream is on. `flv_flags`: the FLV header's audio/video bits as the source knows them. */
  void (*start)(void *sink, uint8_t flv_flags);
  /** One complete tag (borrowed for the call). Returns 0, or a negative error to end the stream. */
  int (*tag)(void *sink, const fe_flv_tag *tag);
  /** The tags of one read are in: a moment to hand them to viewers. */
  void (*flush)(void *sink);
  /**
   * The stream never started. The answer viewers get, as the origin (or the source) gave it: a
   * status, a content type and a body, all borrowed for the call. The hub passes it on untouched.
   */
  void (*fail)(void *sink, int status, const char *ctype, const uint8_t *body, size_t len);
  /** The stream is over after start: 0 for a clean end, or a negative error. */
  void (*end)(void *sink, int err);
  /** Optional, any time (also from inside the call that opens the source): the origin now read
   * (borrowed) and the status it answered (0: not yet). */
  void (*origin)(void *sink, const char *url, int status);
} fe_sink_ops;

/** A source as its sink holds it: closing it stops every callback at once. */
typedef struct fe_source {
  void (*close)(struct fe_source *s);
} fe_source;

#endif
