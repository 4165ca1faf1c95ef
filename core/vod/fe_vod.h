/*
 * fe_vod: the node's file cache for VOD. Knows no HTTP status text or framing: http/fe_http_vod.c
 * turns what it gives into answers.
 *
 * One fe_vod_node per process (made before the loops, kept across reloads, like the relay node and
 * the fe_files table); in it one fe_vod_cache per cache directory, shared by every loop: an
 * in-memory index behind one mutex, objects by key (by default the origin URL without its query),
 * each with its meta (size, validators, type, freshness) and its slices (absent, being fetched, or
 * stored on disk with the identity of the file: size, inode, mtime).
 *
 * On disk, names are SHA-1 hex digests of the key (no client byte ever becomes a file name):
 * DIR/ab/abcdef....meta (a small versioned text record) and DIR/ab/abcdef....N (slice N), each
 * written as .tmp and renamed only when complete and of the expected length. fe_vod_node_configure
 * scans a new directory (blocking, before loops serve) and rebuilds the index.
 *
 * A slice fetch (fe_vod_fetch) is one origin GET with an aligned Range on the loop that started
 * it; concurrent requests for the slice on any loop attach to it as waiters and read its bytes as
 * they arrive, from one buffer of at most slice_size bytes published with an atomic length
 * (release/acquire). Waiters are woken through their own loop's mailbox (one uv_async each loop,
 * coalesced). The buffer lives as long as any waiter holds the fetch (refcounted, atomic), so a
 * write in flight never loses its bytes. Once complete it is written to disk in the thread pool.
 *
 * Every disk call runs in libuv's thread pool; the index's mutex is never held across I/O.
 */
#ifndef FE_VOD_H
#define FE_VOD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config/fe_config.h"
#include "loop/fe_loop.h"
#include "origin/fe_origin.h"

#define FE_VOD_MAX_FETCHES 64 /* slice fetches at their origin per node; beyond: queued or refused */
#define FE_VOD_STORE_BACKLOG (256ull << 20) /* bytes of fetched slices waiting for the disk, per
                                               node; beyond: served, not stored */
#define FE_VOD_PREFETCH_CONCURRENCY 4
/* Slices of one object at most (10 TiB at the default 10 MiB, 64 GiB at the smallest, 64 KiB): an
 * origin that announces more is answered 502, whatever size it claims. */
#define FE_VOD_MAX_SLICES (1u << 20)
/* The longest client path, origin URL or cache key of an object (a longer request gets 414):
 * nothing is ever cut, since a key cut short would be another object's, and an object's .meta
 * record (both, and at most ~1 KiB more) stays within FE_VOD_META_MAX. */
#define FE_VOD_PATH_MAX 3072
#define FE_VOD_META_MAX 8192

typedef struct fe_vod_node fe_vod_node;
typedef struct fe_vod_cache fe_vod_cache;
typedef struct fe_vod_fetch fe_vod_fetch;

/** An object's meta as stored: strings as the origin sent them ("" when absent). */
typedef struct fe_vod_meta {
  uint64_t size;
  uint64_t slice_size;
  double stored, expires; /* Unix seconds */
  char etag[FE_ORIGIN_HVAL];
  char last_modified[FE_ORIGIN_HVAL];
  char content_type[FE_ORIGIN_HVAL];
  uint32_t version;       /* in the slice files' names: a new content never reuses an old name */
} fe_vod_meta;

enum {
  FE_VOD_EFULL = -3001,    /* too many fetches in flight on the node */
  FE_VOD_ECHANGED = -3002, /* the object changed at the origin while it was being read */
  FE_VOD_ESHORT = -3003,   /* the origin sent fewer bytes than announced, or closed early */
  FE_VOD_ESTATUS = -3004,  /* the origin answered with an error status (fetch's status/body) */
  FE_VOD_EPROTO = -3005,   /* the origin's answer does not fit the request (Content-Range) */
  FE_VOD_ENOSIZE = -3006,  /* the origin's answer has no size (no Content-Length/Content-Range) */
  FE_VOD_ETOOBIG = -3007,  /* the object has more than FE_VOD_MAX_SLICES slices */
};

/* ---- the node ------------------------------------------------------------------------------ */

/** A node for `nloops` loops. NULL when out of memory. */
fe_vod_node *fe_vod_node_new(int nloops);
/** After every loop is gone. Fetches still in flight must have ended. */
void fe_vod_node_free(fe_vod_node *n);
/**
 * Opens the cache of every vod resource of cfg not open yet (control thread; blocking: a new
 * directory is made and scanned here). A directory already open keeps its index; its size limit
 * becomes the largest asked for. Returns 0, or -1 with the reason in err.
 */
int fe_vod_node_configure(fe_vod_node *n, const fe_config *cfg, char *err, size_t errlen);
/** The cache of a directory opened by fe_vod_node_configure, or NULL. Any thread. */
fe_vod_cache *fe_vod_node_cache(fe_vod_node *n, const char *dir);
/** Opens loop l's mailbox (on the control thread, before the loop runs). 0 or a libuv error. */
int fe_vod_box_open(fe_vod_node *n, fe_loop *l);
/** Closes loop l's mailbox handle (on that loop, when it stops). */
void fe_vod_box_close(fe_vod_node *n, int loop_id);
/** Node gauges as Prometheus text (cache bytes and objects, every cache together). */
size_t fe_vod_metrics_render(fe_vod_node *n, char *buf, size_t cap);

/* ---- the index ----------------------------------------------------------------------------- */

enum { FE_VOD_ABSENT, FE_VOD_FRESH, FE_VOD_EXPIRED };

/** Looks key up: FE_VOD_ABSENT, or FRESH/EXPIRED (at time now) with its meta copied to out. */
int fe_vod_lookup(fe_vod_cache *c, const char *key, double now, fe_vod_meta *out);
/** An origin error answer kept because the `cache` hook called it cacheable (a 404, say): in
 * memory only, never on disk, until it expires, is purged or a 200/206 for its key comes. */
typedef struct fe_vod_error {
  int status;
  char ctype[128];
  char body[512];
  size_t len;
} fe_vod_error;
/** 1 with *out filled when key has a fresh cached error answer (at time now), else 0. */
int fe_vod_error_lookup(fe_vod_cache *c, const char *key, double now, fe_vod_error *out);
/** Drops every object whose client path is `path`, or matches it when it holds '*' (any run of
 * bytes), and the cached error answers of those paths. Their files are deleted in the thread
 * pool of loop l. Returns how many objects and error answers. */
int fe_vod_purge(fe_vod_cache *c, fe_loop *l, const char *path);
/** The same over every cache of the node. */
int fe_vod_purge_all(fe_vod_node *n, fe_loop *l, const char *path);

/* ---- slices -------------------------------------------------------------------------------- */

/** A stored slice file as the index knows it: the file opened must match it to be served. */
typedef struct fe_vod_file {
  char path[600];
  uint64_t size, ino;
  int64_t mtime_ns;
} fe_vod_file;

/** What a request needs to start a fetch. Strings are copied. */
typedef struct fe_vod_fetch_opts {
  const char *url;             /* the origin URL (query included when the key keeps it) */
  const char *client_path;     /* for purge patterns */
  double connect_timeout, read_timeout;
  struct fe_tls_client *tls;   /* https origins: the TLS client context (node-wide) */
  double ttl;                  /* freshness of what is stored, unless on_answer changes it */
  uint64_t slice_size;         /* the resource's; an object already stored keeps its own */
  int revalidate;              /* send If-None-Match / If-Modified-Since from the stored meta */
  int no_store;                /* serve the waiters, store nothing (a bypassed request) */
  /** Called once on the fetching loop when the origin's head is in: may change ttl and cacheable
   * (the `cache` hook's answer call). NULL: defaults. `ud` must outlive the call or be cleared
   * with fe_vod_fetch_forget_answer. */
  void (*on_answer)(void *ud, int status, const fe_origin_head *h, uint64_t size, double *ttl,
                    int *cacheable);
  void *ud;
  /** The origin group: `url` begins with `base`; the same object at each backup base (in order)
   * is where a fetch goes when its origin fails before the head (unreachable, timeout, 5xx), or
   * halfway through a slice (the rest of the slice, from the same offset). Borrowed for the call. */
  const char *base;
  const char *const *backups;
  int nbackups;
  /** When the node has FE_VOD_MAX_FETCHES in flight: 1 queues the waiter for a free one
   * (FE_VOD_SLICE_WAIT, woken when one ends), 0 answers FE_VOD_EFULL. */
  int wait_slot;
} fe_vod_fetch_opts;

/** A request's hold on a fetch: embedded in the request; woken on its own loop. */
typedef struct fe_vod_waiter {
  struct fe_vod_waiter *prev, *next; /* the fetch's waiters (under the cache's mutex) */
  struct fe_vod_waiter *box_next;    /* the loop's mailbox queue (under the box's mutex) */
  int queued;
  fe_loop *loop;
  fe_vod_fetch *fetch;
  struct fe_vod_node *slot_node;     /* set while queued for a fetch slot (or just woken from it) */
  int slot_linked;                   /* in slot_node's queue (under its mutex) */
  /** Something changed: the head came, bytes arrived, or it ended. Runs on loop `loop`. */
  void (*wake)(struct fe_vod_waiter *w);
} fe_vod_waiter;

/* FE_VOD_SLICE_WAIT: w is attached to a fetch that will store the slice on its way (an origin
 * without ranges read on): when woken, detach and ask again. */
enum { FE_VOD_SLICE_FILE = 1, FE_VOD_SLICE_FETCH = 2, FE_VOD_SLICE_WAIT = 3 };

/**
 * Slice idx of key: FE_VOD_SLICE_FILE with the stored file's identity in file, or
 * FE_VOD_SLICE_FETCH with w attached to the fetch in flight (started here on loop w->loop when
 * none is; w->wake set by the caller). idx is ignored while the object's size is unknown only in
 * that the fetch learns it. A negative error (FE_VOD_EFULL) otherwise.
 */
int fe_vod_slice_get(fe_vod_cache *c, const char *key, uint32_t idx, const fe_vod_fetch_opts *o,
                     fe_vod_waiter *w, fe_vod_file *file);
/** A stored slice file did not match the index (changed behind our back): forget it. */
void fe_vod_slice_drop(fe_vod_cache *c, fe_loop *l, const char *key, uint32_t idx,
                       const fe_vod_file *file);
/** 1 when slice idx of key is stored (for the answer's X-Cache-Status), else 0. */
int fe_vod_slice_stored(fe_vod_cache *c, const char *key, uint32_t idx);
/** Marks a stored slice used (LRU). */
void fe_vod_slice_touch(fe_vod_cache *c, const char *key, uint32_t idx);
/** Lets go of the fetch (and its bytes). On w's loop. Safe when not attached. */
void fe_vod_waiter_detach(fe_vod_waiter *w);

/* ---- a fetch as its waiters see it (call from the waiter's loop; values acquire-loaded) ---- */

enum {
  FE_VOD_F_HEAD,         /* waiting for the origin's head */
  FE_VOD_F_BODY,         /* meta known; bytes arriving (fe_vod_fetch_bytes) */
  FE_VOD_F_DONE,         /* every byte of the slice is in */
  FE_VOD_F_NOT_MODIFIED, /* a revalidation: 304, the stored object is fresh again */
  FE_VOD_F_FAILED,       /* see fe_vod_fetch_error */
};

int fe_vod_fetch_state(const fe_vod_fetch *f);
/** The answer's meta (FE_VOD_F_BODY and after). */
const fe_vod_meta *fe_vod_fetch_meta(const fe_vod_fetch *f);
/** The slice's first byte's offset in the object, and its length (FE_VOD_F_BODY and after). */
void fe_vod_fetch_range(const fe_vod_fetch *f, uint64_t *start, uint64_t *len);
/** The slice's bytes that have arrived: [0, *avail) of the returned buffer. */
const uint8_t *fe_vod_fetch_bytes(const fe_vod_fetch *f, uint64_t *avail);
/** FE_VOD_F_FAILED: the error, and for FE_VOD_ESTATUS the origin's status, type and short body. */
int fe_vod_fetch_error(const fe_vod_fetch *f, int *status, const char **ctype, const char **body,
                       size_t *len);
/** 1 when the fetch's answer is being stored (cacheable). */
int fe_vod_fetch_cacheable(const fe_vod_fetch *f);
/** The starter's on_answer must not run any more (the request went away). Fetching loop only. */
void fe_vod_fetch_forget_answer(fe_vod_fetch *f, void *ud);

/* ---- prefetch ------------------------------------------------------------------------------ */

/**
 * Queues a whole object for the background: its slices fetched one after another (the first
 * learns the size), at most FE_VOD_PREFETCH_CONCURRENCY objects at a time per node, on loop l.
 * Slices already stored or in flight are skipped. Returns 0 or a negative error.
 */
int fe_vod_prefetch(fe_vod_cache *c, fe_loop *l, const char *key, const fe_vod_fetch_opts *o);

/* ---- the text it reads: parsers of outside input (tests/fuzz/fuzz_vod.c) ------------------- */

/**
 * An object's .meta record as fe_vod writes it (fe_vod_meta_format): a format line, then `name
 * value` lines. 0 with *key and *path malloc'd (the caller frees them) and *m filled; -1 (nothing
 * to free) for a record of another format, a field given twice or out of its range, a NUL, or a
 * size no fetch of this node could have stored (a slice size outside 64 KiB..1 GiB, more than
 * FE_VOD_MAX_SLICES slices). A cache directory is outside input: it may be changed behind our back.
 */
int fe_vod_meta_parse(const char *text, size_t len, char **key, char **path, fe_vod_meta *m);
/** Writes m's record into buf (cut at cap); returns its length. */
size_t fe_vod_meta_format(const fe_vod_meta *m, const char *key, const char *path, char *buf,
                          size_t cap);
/** An origin's Content-Range, "bytes FIRST-LAST/TOTAL" (digits only): 0 when FIRST <= LAST <
 * TOTAL, else -1. */
int fe_vod_content_range_parse(const char *s, uint64_t *first, uint64_t *last, uint64_t *total);

/** SHA-1 hex of key (41 bytes with the NUL): the file names of its object. */
void fe_vod_hash(const char *key, char out[41]);

#endif
