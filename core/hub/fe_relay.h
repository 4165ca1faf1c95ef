/*
 * fe_relay: live streams across loops. One loop pulls a stream from its origin (its owner); every
 * other loop with viewers of it holds a local hub fed through a channel from the owner: each batch
 * of tags crosses once per subscribing loop, as a copy that the subscriber then fans out from its
 * own window. A copy per loop (not shared blocks) keeps every block's refcount a plain integer of
 * one loop: pinning a block for a viewer's write needs no atomic, and no cache line bounces.
 *
 * Three parts:
 * - the node's registry: which loop owns which stream (a mutex, taken once per stream open);
 * - one mailbox per loop (a mutex and a uv_async): subscription requests for the streams it owns,
 *   and channels with messages for it;
 * - channels: one subscription, owner loop -> subscriber loop, whose messages (start, tags, fail,
 *   end, gone) are queued under the subscriber's mailbox lock. The subscriber side is an fe_source:
 *   it decodes the messages into sink calls, as an origin pull would make them.
 *
 * A channel is refcounted across the two threads; every queue it sits in holds a reference.
 */
#ifndef FE_RELAY_H
#define FE_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "loop/fe_loop.h"
#include "origin/fe_source.h"

typedef struct fe_relay_node fe_relay_node;
typedef struct fe_relay_box fe_relay_box;
typedef struct fe_relay_msg fe_relay_msg;

/** One subscription. Fields marked "owner" are used only on the owner's loop. */
typedef struct fe_relay_ch {
  fe_source src;              /* first: the subscriber's hub holds it as its source */
  int refs;                   /* atomic */
  fe_relay_box *sub_box, *own_box;
  /* the subscriber's mailbox lock guards these */
  fe_relay_msg *head, *tail;
  size_t queued;              /* bytes waiting for the subscriber */
  int in_ready, sub_closed;
  struct fe_relay_ch *ready_next;
  /* subscriber's loop */
  const fe_sink_ops *ops;
  void *sink;
  /* owner's loop */
  void *pub;                  /* the owner's hub */
  struct fe_relay_ch *pub_next;
  uint64_t next;              /* the next window sequence to send */
  int started;                /* START and the window were sent */
  int pub_dropped;            /* the owner let it go */
} fe_relay_ch;

/** What a loop's mailbox does with what arrives for it (called on that loop). */
typedef struct fe_relay_handlers {
  /** A loop subscribes to `key`, which this loop claimed. The handler owns one reference of ch. */
  void (*subscribe)(void *ud, const char *key, fe_relay_ch *ch);
  /** The subscriber of ch left; the owner lets ch go (fe_relay_ch_owner_drop) if it has not. */
  void (*unsubscribe)(void *ud, fe_relay_ch *ch);
} fe_relay_handlers;

/** The registry and mailboxes of `nloops` loops. */
fe_relay_node *fe_relay_node_new(int nloops);
/** After every mailbox is closed. */
void fe_relay_node_free(fe_relay_node *n);
/** Opens loop `id`'s mailbox on its own thread. Returns 0 or a libuv error. */
int fe_relay_box_open(fe_relay_node *n, int id, fe_loop *l, const fe_relay_handlers *h, void *ud);
/** Closes the mailbox (its loop's thread): nothing is delivered to it after; queued work is dropped. */
void fe_relay_box_close(fe_relay_node *n, int id);

/** A stream's viewers on every loop, shared by its hubs: per-stream limits hold node-wide. */
typedef struct fe_relay_count {
  int refs;    /* atomic */
  int viewers; /* atomic */
} fe_relay_count;

/** Drops a reference of a count. */
void fe_relay_count_unref(fe_relay_count *c);

/**
 * Opens `key` on loop `id`: returns 1 when no loop had it (this loop is now its owner and pulls
 * it), 0 with *src set to a relay from the owner that will feed ops/sink, or a negative error.
 * Either way *count is the stream's shared viewer count (a reference for the caller).
 */
int fe_relay_claim(fe_relay_node *n, int id, const char *key, const fe_sink_ops *ops, void *sink,
                   fe_source **src, fe_relay_count **count);
/** The loop that owns `key`, or -1 when no loop has it. */
int fe_relay_owner(fe_relay_node *n, const char *key);
/** The owner gives `key` up (its stream ended): the next claim makes a new owner. */
void fe_relay_unclaim(fe_relay_node *n, int id, const char *key);

/** Owner: sends START with the FLV flags. */
void fe_relay_send_start(fe_relay_ch *ch, uint8_t flv_flags);
/** Owner: a message with room for len bytes of whole FLV tags back to back, filled by the caller
 * and sent with fe_relay_send_msg (which takes it over). */
fe_relay_msg *fe_relay_tags_new(size_t len, uint8_t **data);
void fe_relay_send_msg(fe_relay_ch *ch, fe_relay_msg *m);
/** Owner: the stream never started. */
void fe_relay_send_fail(fe_relay_ch *ch, int status, const char *ctype, const uint8_t *body, size_t len);
/** Owner: the origin its pull reads now and the status it answered. */
void fe_relay_send_origin(fe_relay_ch *ch, const char *url, int status);
/** Owner: the stream ended (err 0 or negative), or FE_SOURCE_ERETRY when it is not here any more. */
void fe_relay_send_end(fe_relay_ch *ch, int err);
/** Owner: bytes still queued for the subscriber (a slow loop shows here). */
size_t fe_relay_queued(fe_relay_ch *ch);
/** Owner: lets the channel go (once). */
void fe_relay_ch_owner_drop(fe_relay_ch *ch);

#endif
