#define _GNU_SOURCE
#include "vod/fe_vod.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <mbedtls/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/fe_log.h"
#include "origin/fe_health.h"

#define FE_VOD_BUCKETS 4096
#define FE_VOD_CHUNK 256 /* slots made together, when the first of them is used */
#define FE_VOD_META_VERSION "flvedge-vod 2"
#define FE_VOD_NEG_BUCKETS 256
#define FE_VOD_NEG_MAX 4096 /* cached error answers per cache; beyond, a new one is not kept */

/* A slice of an object as the index keeps it. */
typedef struct fe_vod_slot {
  struct fe_vod_slot *lprev, *lnext; /* the cache's LRU list of stored slices, newest first */
  struct fe_vod_obj *obj;
  uint32_t idx;
  int stored;
  uint64_t size, ino;
  int64_t mtime_ns;
} fe_vod_slot;

typedef struct fe_vod_obj {
  struct fe_vod_obj *hnext;
  char *key, *path;
  char hash[41];
  int known;           /* meta known (an answer came, or it was read from disk) */
  fe_vod_meta meta;
  uint32_t nslices;
  fe_vod_slot **chunks; /* nslices / FE_VOD_CHUNK of them, each made when a slot in it is used */
  uint32_t nstored;
  fe_vod_fetch *fetches; /* in flight, by f->onext */
  uint64_t gen;        /* bumped when the content changes: stores of the old one are dropped */
} fe_vod_obj;

/* A cached error answer (fe_vod_error_lookup). */
typedef struct fe_vod_neg {
  struct fe_vod_neg *next;
  char *key, *path;
  double expires;
  fe_vod_error e;
} fe_vod_neg;

typedef struct fe_vod_box {
  uv_mutex_t mu;
  uv_async_t async;
  fe_vod_waiter *head, *tail;
  int open;
} fe_vod_box;

struct fe_vod_cache {
  fe_vod_node *node;
  struct fe_vod_cache *next;
  char *dir;
  uint64_t max_size;
  uv_mutex_t mu;
  fe_vod_obj *buckets[FE_VOD_BUCKETS];
  uint64_t bytes, objects; /* stored slice bytes; objects (atomic reads for metrics) */
  fe_vod_slot lru;         /* sentinel */
  fe_vod_neg *negs[FE_VOD_NEG_BUCKETS];
  uint32_t nnegs;
};

/* A prefetch: one object's slices, one after another. */
typedef struct fe_vod_pf {
  struct fe_vod_pf *next;
  fe_vod_cache *cache;
  char *key, *url, *path;
  double connect_timeout, read_timeout, ttl;
  struct fe_tls_client *tls;
  uint64_t slice_size;
  uint32_t idx;
  int wait;   /* w waits for a slice another fetch stores on its way (FE_VOD_SLICE_WAIT) */
  fe_vod_waiter w;
} fe_vod_pf;

struct fe_vod_node {
  uv_mutex_t mu;
  fe_vod_cache *caches;
  int nloops;
  fe_vod_box *boxes;
  int fetches;        /* atomic: in flight, every cache */
  fe_vod_pf *pf_queue; /* waiting prefetches; under mu */
  int pf_running;
  fe_vod_waiter *slot_head, *slot_tail; /* waiting for a fetch slot; under mu */
  uint64_t backlog;   /* atomic: bytes of slices queued for the disk (FE_VOD_STORE_BACKLOG) */
};

/* Takes `len` bytes of the node's store backlog; 0 when the disk is that far behind. */
static int fe_vod_backlog_take(fe_vod_node *n, uint64_t len) {
  if (__atomic_add_fetch(&n->backlog, len, __ATOMIC_RELAXED) <= FE_VOD_STORE_BACKLOG)
    return 1;
  __atomic_sub_fetch(&n->backlog, len, __ATOMIC_RELAXED);
  return 0;
}

struct fe_vod_fetch {
  int refs; /* atomic: the fetch's own run + one per waiter */
  fe_vod_cache *cache;
  fe_loop *loop;
  fe_origin *origin;
  char *key, *url, *path;
  char hash[41];
  uint32_t idx;
  uint64_t gen;
  struct fe_vod_fetch *onext; /* obj->fetches */
  int listed;
  double ttl;
  int cacheable;
  int no_store;
  void (*on_answer)(void *, int, const fe_origin_head *, uint64_t, double *, int *);
  void *answer_ud;
  int state; /* atomic */
  int err, status;
  char ectype[128];
  char ebody[512];
  size_t elen;
  fe_vod_meta meta;
  uint64_t start, want, skip;
  uint8_t *buf;
  uint64_t len; /* atomic */
  fe_vod_waiter *waiters;
  uv_work_t work;
  int store_rc;
  fe_vod_file file;
  int runs;           /* what must finish before the fetch ends: its slice, and a tail reader */
  int counted;        /* holds one of the node's FE_VOD_MAX_FETCHES slots (while its origin runs) */
  uint64_t backlog;   /* its share of the node's store backlog while its store is queued */
  /* An origin without ranges answers 200 with the whole file: the slices it passes through are
   * stored too (at most FE_VOD_SIDE_INFLIGHT at a time, each written from its own buffer), and
   * once the fetch's own slice is in, the rest of the body is read on for them. */
  int through;
  int tail;           /* atomic: reading on past our slice; requests for later slices wait for it */
  uint64_t pos;       /* file offset of the next body byte (through) */
  uint8_t *sbuf;      /* the passing slice being gathered, or NULL */
  uint32_t sidx;
  uint64_t slen, swant;
  int sinflight;
  uint32_t sidxs[4];  /* the slices of the side stores in flight */
  uint32_t cover;     /* atomic: the first slice the tail has not stored yet (requests from here
                         on wait for it) */
  /* the origin group: the same object at the backups, tried in order when an origin fails */
  char **alts;
  int nalts, alt;
  const char *cur;    /* the origin asked now: url or one of alts (fe_health marks it) */
  int resuming;       /* the body goes on from another origin at start + len */
  double connect_timeout, read_timeout;
  struct fe_tls_client *tls; /* https origins */
  char headers[700];  /* the first request's Range and validators */
};

#define FE_VOD_SIDE_INFLIGHT 2 /* beyond: the tail pauses its origin, slices before ours are skipped */

/* The first slice the tail has not stored: the oldest store in flight, else the one it reads. */
static void fe_vod_tail_cover(fe_vod_fetch *f) {
  uint32_t c = f->meta.slice_size ? (uint32_t)(f->pos / f->meta.slice_size) : 0;
  for (int i = 0; i < f->sinflight; i++)
    if (f->sidxs[i] < c)
      c = f->sidxs[i];
  __atomic_store_n(&f->cover, c, __ATOMIC_RELEASE);
}

/* A passing slice of a 200 answer, written in the thread pool. */
typedef struct fe_vod_side {
  fe_vod_fetch *f; /* referenced */
  uint32_t idx;
  uint32_t version;
  uint64_t gen;
  uint8_t *buf;
  uint64_t len;
  int rc;
  fe_vod_file file;
  uv_work_t work;
} fe_vod_side;

static double fe_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void fe_vod_hash(const char *key, char out[41]) {
  unsigned char d[20];
  mbedtls_sha1_ret((const unsigned char *)key, strlen(key), d);
  for (int i = 0; i < 20; i++)
    snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static uint32_t fe_vod_bucket(const char *key) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++)
    h = (h ^ *p) * 16777619u;
  return h % FE_VOD_BUCKETS;
}

/* A version other than `old`, unlikely to repeat one of its past values. */
static uint32_t fe_vod_new_version(uint32_t old) {
  static uint32_t seq;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint32_t v = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec * 2654435761u ^
               __atomic_add_fetch(&seq, 0x9e3779b9u, __ATOMIC_RELAXED);
  return v == old ? v + 1 : v;
}

static void fe_vod_file_path(const fe_vod_cache *c, const char *hash, const char *suffix, char *out,
                             size_t cap) {
  snprintf(out, cap, "%s/%.2s/%s.%s", c->dir, hash, hash, suffix);
}

/* <hash>.<version>.<n>: the slices of a replaced content have other names than the new one's, so
 * a late unlink of an old slice can never remove a new one stored at the same index. */
static void fe_vod_slice_path(const fe_vod_cache *c, const char *hash, uint32_t version,
                              uint32_t idx, char *out, size_t cap) {
  char sfx[32];
  snprintf(sfx, sizeof(sfx), "%08x.%u", version, idx);
  fe_vod_file_path(c, hash, sfx, out, cap);
}

/* ---- index (under c->mu) ------------------------------------------------------------------- */

static fe_vod_obj *fe_vod_find(fe_vod_cache *c, const char *key) {
  for (fe_vod_obj *o = c->buckets[fe_vod_bucket(key)]; o; o = o->hnext)
    if (strcmp(o->key, key) == 0)
      return o;
  return NULL;
}

/* The cached error answers: a small hash table of their own, beside the objects (they have no
 * meta, no slices and no files). */
static fe_vod_neg **fe_vod_neg_slot(fe_vod_cache *c, const char *key) {
  fe_vod_neg **p = &c->negs[fe_vod_bucket(key) % FE_VOD_NEG_BUCKETS];
  while (*p && strcmp((*p)->key, key) != 0)
    p = &(*p)->next;
  return p;
}

static void fe_vod_neg_unlink(fe_vod_cache *c, fe_vod_neg **p) {
  fe_vod_neg *g = *p;
  *p = g->next;
  c->nnegs--;
  free(g->key);
  free(g->path);
  free(g);
}

/* Drops the answers whose client path matches `pattern` (fe_vod_match), or with no pattern the
 * expired ones. Returns how many. */
static int fe_vod_match(const char *pat, const char *s);
static int fe_vod_neg_sweep(fe_vod_cache *c, const char *pattern, double now) {
  int n = 0;
  for (int b = 0; b < FE_VOD_NEG_BUCKETS; b++) {
    fe_vod_neg **p = &c->negs[b];
    while (*p) {
      if (pattern ? fe_vod_match(pattern, (*p)->path) : (*p)->expires <= now) {
        fe_vod_neg_unlink(c, p);
        n++;
      } else {
        p = &(*p)->next;
      }
    }
  }
  return n;
}

static void fe_vod_neg_drop(fe_vod_cache *c, const char *key) {
  fe_vod_neg **p = fe_vod_neg_slot(c, key);
  if (*p)
    fe_vod_neg_unlink(c, p);
}

/* Keeps f's error answer for key until `expires`. When the table is full, the expired ones go
 * first; if none has, the new answer is not kept (the origin is asked again, as without it). */
static void fe_vod_neg_put(fe_vod_cache *c, const fe_vod_fetch *f, double now, double expires);

static fe_vod_obj *fe_vod_obj_new(fe_vod_cache *c, const char *key, const char *path) {
  fe_vod_obj *o = calloc(1, sizeof(*o));
  if (!o)
    return NULL;
  o->key = strdup(key);
  o->path = strdup(path ? path : "");
  if (!o->key || !o->path) {
    free(o->key);
    free(o->path);
    free(o);
    return NULL;
  }
  fe_vod_hash(key, o->hash);
  uint32_t b = fe_vod_bucket(key);
  o->hnext = c->buckets[b];
  c->buckets[b] = o;
  __atomic_add_fetch(&c->objects, 1, __ATOMIC_RELAXED);
  return o;
}

static void fe_vod_lru_unlink(fe_vod_slot *s) {
  s->lprev->lnext = s->lnext;
  s->lnext->lprev = s->lprev;
  s->lprev = s->lnext = NULL;
}

static void fe_vod_lru_front(fe_vod_cache *c, fe_vod_slot *s) {
  if (s->lprev)
    fe_vod_lru_unlink(s);
  s->lnext = c->lru.lnext;
  s->lprev = &c->lru;
  c->lru.lnext->lprev = s;
  c->lru.lnext = s;
}

/* Paths to delete once the mutex is let go. */
typedef struct fe_vod_trash {
  char **paths;
  size_t n, cap;
} fe_vod_trash;

static void fe_vod_trash_add(fe_vod_trash *t, const char *path) {
  if (t->n == t->cap) {
    size_t ncap = t->cap ? t->cap * 2 : 16;
    char **np = realloc(t->paths, ncap * sizeof(char *));
    if (!np)
      return;
    t->paths = np;
    t->cap = ncap;
  }
  char *p = strdup(path);
  if (p)
    t->paths[t->n++] = p;
}

static void fe_vod_on_unlinked(uv_fs_t *req) {
  uv_fs_req_cleanup(req);
  free(req);
}

/* Deletes the trash's files in the thread pool of loop l (synchronously when l is NULL: the
 * control thread before loops run). */
static void fe_vod_trash_empty(fe_vod_trash *t, fe_loop *l) {
  for (size_t i = 0; i < t->n; i++) {
    uv_fs_t *req = l ? malloc(sizeof(*req)) : NULL;
    if (!req || uv_fs_unlink(&l->uv, req, t->paths[i], fe_vod_on_unlinked) < 0) {
      free(req);
      unlink(t->paths[i]);
    }
    free(t->paths[i]);
  }
  free(t->paths);
  memset(t, 0, sizeof(*t));
}

static void fe_vod_slot_forget(fe_vod_cache *c, fe_vod_slot *s, fe_vod_trash *t) {
  if (!s->stored)
    return;
  char path[512];
  fe_vod_slice_path(c, s->obj->hash, s->obj->meta.version, s->idx, path, sizeof(path));
  fe_vod_trash_add(t, path);
  fe_vod_lru_unlink(s);
  s->stored = 0;
  c->bytes -= s->size;
  s->obj->nstored--;
}

/* Slot idx of o; its chunk is made when `make` (NULL when out of memory), else NULL when the
 * chunk was never used: nothing was ever stored there. NULL past the object's end. */
static fe_vod_slot *fe_vod_slot_at(fe_vod_obj *o, uint64_t idx, int make) {
  if (!o || idx >= o->nslices)
    return NULL;
  fe_vod_slot **ch = &o->chunks[idx / FE_VOD_CHUNK];
  if (!*ch && make) {
    *ch = calloc(FE_VOD_CHUNK, sizeof(fe_vod_slot));
    uint32_t base = (uint32_t)(idx / FE_VOD_CHUNK * FE_VOD_CHUNK);
    for (uint32_t i = 0; *ch && i < FE_VOD_CHUNK; i++) {
      (*ch)[i].obj = o;
      (*ch)[i].idx = base + i;
    }
  }
  return *ch ? &(*ch)[idx % FE_VOD_CHUNK] : NULL;
}

/* Frees the slots (the stored ones forgotten first when t is given). */
static void fe_vod_obj_free_slots(fe_vod_cache *c, fe_vod_obj *o, fe_vod_trash *t) {
  uint32_t nchunks = (o->nslices + FE_VOD_CHUNK - 1) / FE_VOD_CHUNK;
  for (uint32_t k = 0; o->chunks && k < nchunks; k++) {
    for (uint32_t i = 0; t && o->chunks[k] && i < FE_VOD_CHUNK; i++)
      if (k * FE_VOD_CHUNK + i < o->nslices)
        fe_vod_slot_forget(c, &o->chunks[k][i], t);
    free(o->chunks[k]);
  }
  free(o->chunks);
  o->chunks = NULL;
  o->nslices = 0;
}

/* The object's stored content goes (its slices and its meta file); the object stays listed while
 * fetches use it. */
static void fe_vod_obj_clear(fe_vod_cache *c, fe_vod_obj *o, fe_vod_trash *t) {
  fe_vod_obj_free_slots(c, o, t);
  o->known = 0;
  o->gen++;
}

static void fe_vod_obj_remove(fe_vod_cache *c, fe_vod_obj *o, fe_vod_trash *t) {
  char path[512];
  fe_vod_obj_clear(c, o, t);
  fe_vod_file_path(c, o->hash, "meta", path, sizeof(path));
  fe_vod_trash_add(t, path);
  for (fe_vod_fetch *f = o->fetches; f; f = f->onext)
    f->listed = 0; /* its store finds no object and is dropped */
  fe_vod_obj **pp = &c->buckets[fe_vod_bucket(o->key)];
  while (*pp != o)
    pp = &(*pp)->hnext;
  *pp = o->hnext;
  __atomic_sub_fetch(&c->objects, 1, __ATOMIC_RELAXED);
  free(o->key);
  free(o->path);
  free(o);
}

/* The slices an object of `size` bytes has. */
static uint64_t fe_vod_slices(uint64_t size, uint64_t slice) {
  return size / slice + (size % slice != 0);
}

/* Sizes the slots for a known size: only the chunk array is made now (8 bytes per FE_VOD_CHUNK
 * slices), a chunk of slots when one of them is used, so a size an origin claims costs next to
 * nothing until slices are stored. 0, or -1 (more than FE_VOD_MAX_SLICES, or out of memory). */
static int fe_vod_obj_size(fe_vod_cache *c, fe_vod_obj *o, uint64_t size, uint64_t slice) {
  uint64_t n = fe_vod_slices(size, slice);
  if (n > FE_VOD_MAX_SLICES)
    return -1;
  if (o->chunks && o->nslices == n)
    return 0;
  fe_vod_obj_free_slots(c, o, NULL); /* nothing stored: a new size comes with a cleared object */
  uint32_t nchunks = ((uint32_t)n + FE_VOD_CHUNK - 1) / FE_VOD_CHUNK;
  o->chunks = calloc(nchunks ? nchunks : 1, sizeof(*o->chunks));
  o->nslices = o->chunks ? (uint32_t)n : 0;
  return o->chunks ? 0 : -1;
}

static uint64_t fe_vod_slice_len(const fe_vod_meta *m, uint32_t idx) {
  uint64_t start = (uint64_t)idx * m->slice_size;
  if (start >= m->size)
    return 0;
  return m->size - start < m->slice_size ? m->size - start : m->slice_size;
}

/* LRU eviction down to the limit; objects left with nothing stored go too. */
static void fe_vod_evict(fe_vod_cache *c, fe_vod_trash *t) {
  while (c->bytes > c->max_size && c->lru.lprev != &c->lru) {
    fe_vod_slot *s = c->lru.lprev;
    fe_vod_obj *o = s->obj;
    fe_vod_slot_forget(c, s, t);
    if (o->nstored == 0 && !o->fetches)
      fe_vod_obj_remove(c, o, t);
  }
}

/* ---- the node ------------------------------------------------------------------------------ */

fe_vod_node *fe_vod_node_new(int nloops) {
  fe_vod_node *n = calloc(1, sizeof(*n));
  if (!n)
    return NULL;
  n->nloops = nloops;
  n->boxes = calloc((size_t)nloops, sizeof(fe_vod_box));
  if (!n->boxes) {
    free(n);
    return NULL;
  }
  uv_mutex_init(&n->mu);
  for (int i = 0; i < nloops; i++)
    uv_mutex_init(&n->boxes[i].mu);
  return n;
}

static void fe_vod_cache_free(fe_vod_cache *c) {
  fe_vod_trash t = {0};
  for (int b = 0; b < FE_VOD_BUCKETS; b++) {
    fe_vod_obj *o = c->buckets[b];
    while (o) {
      fe_vod_obj *next = o->hnext;
      fe_vod_obj_free_slots(c, o, NULL);
      free(o->key);
      free(o->path);
      free(o);
      o = next;
    }
  }
  for (int b = 0; b < FE_VOD_NEG_BUCKETS; b++)
    while (c->negs[b])
      fe_vod_neg_unlink(c, &c->negs[b]);
  free(t.paths);
  uv_mutex_destroy(&c->mu);
  free(c->dir);
  free(c);
}

void fe_vod_node_free(fe_vod_node *n) {
  if (!n)
    return;
  while (n->caches) {
    fe_vod_cache *c = n->caches;
    n->caches = c->next;
    fe_vod_cache_free(c);
  }
  for (int i = 0; i < n->nloops; i++)
    uv_mutex_destroy(&n->boxes[i].mu);
  free(n->boxes);
  uv_mutex_destroy(&n->mu);
  free(n);
}

/* One waiter at a time, so a wake that detaches another waiter never leaves it in a taken list. */
static void fe_vod_box_on_async(uv_async_t *a) {
  fe_vod_box *b = a->data;
  for (int i = 0; i < 4096; i++) {
    uv_mutex_lock(&b->mu);
    fe_vod_waiter *w = b->head;
    if (w) {
      b->head = w->box_next;
      if (!b->head)
        b->tail = NULL;
      w->box_next = NULL;
      w->queued = 0;
    }
    uv_mutex_unlock(&b->mu);
    if (!w)
      return;
    w->wake(w);
  }
  uv_async_send(a); /* bounded work per wakeup: the rest next time */
}

int fe_vod_box_open(fe_vod_node *n, fe_loop *l) {
  fe_vod_box *b = &n->boxes[l->id];
  int rc = uv_async_init(&l->uv, &b->async, fe_vod_box_on_async);
  if (rc < 0)
    return rc;
  b->async.data = b;
  b->open = 1;
  l->vod = n;
  return 0;
}

void fe_vod_box_close(fe_vod_node *n, int loop_id) {
  fe_vod_box *b = &n->boxes[loop_id];
  if (!b->open)
    return;
  uv_mutex_lock(&b->mu);
  b->open = 0;
  uv_mutex_unlock(&b->mu);
  uv_close((uv_handle_t *)&b->async, NULL);
}

static void fe_vod_box_push(fe_vod_node *n, fe_vod_waiter *w) {
  fe_vod_box *b = &n->boxes[w->loop->id];
  uv_mutex_lock(&b->mu);
  if (!w->queued && b->open) {
    w->queued = 1;
    w->box_next = NULL;
    if (b->tail)
      b->tail->box_next = w;
    else
      b->head = w;
    b->tail = w;
    uv_async_send(&b->async);
  }
  uv_mutex_unlock(&b->mu);
}

/* The first request queued for a fetch slot gets it: off the queue, to its loop's box. Under
 * n->mu, so that its owner's detach cannot free it meanwhile. */
static void fe_vod_slot_give(fe_vod_node *n) {
  fe_vod_waiter *w = n->slot_head;
  if (!w)
    return;
  n->slot_head = w->next;
  if (n->slot_head)
    n->slot_head->prev = NULL;
  else
    n->slot_tail = NULL;
  w->prev = w->next = NULL;
  w->slot_linked = 0;
  fe_vod_box_push(n, w);
}

static void fe_vod_box_remove(fe_vod_node *n, fe_vod_waiter *w) {
  fe_vod_box *b = &n->boxes[w->loop->id];
  uv_mutex_lock(&b->mu);
  if (w->queued) {
    fe_vod_waiter **pp = &b->head, *prev = NULL;
    while (*pp && *pp != w) {
      prev = *pp;
      pp = &(*pp)->box_next;
    }
    if (*pp) {
      *pp = w->box_next;
      if (b->tail == w)
        b->tail = prev;
    }
    w->queued = 0;
    w->box_next = NULL;
  }
  uv_mutex_unlock(&b->mu);
}

/* ---- scanning a directory at startup ------------------------------------------------------- */

/* A decimal number that is the whole of [s, e): digits only, no overflow. 0 or -1. */
static int fe_vod_u64(const char *s, const char *e, uint64_t *out) {
  uint64_t v = 0;
  if (s >= e)
    return -1;
  for (; s < e; s++) {
    unsigned d = (unsigned)(unsigned char)*s - '0';
    if (d > 9 || v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* A time in Unix seconds as the meta writes it ("%.3f"): finite and not negative. */
static int fe_vod_seconds(const char *s, size_t n, double *out) {
  char b[32];
  if (n == 0 || n >= sizeof(b))
    return -1;
  memcpy(b, s, n);
  b[n] = 0;
  char *e;
  double v = strtod(b, &e);
  if (*e || !(v >= 0 && v < 1e15))
    return -1;
  *out = v;
  return 0;
}

int fe_vod_meta_parse(const char *text, size_t len, char **key, char **path, fe_vod_meta *m) {
  static const char head[] = FE_VOD_META_VERSION "\n";
  static const char *const names[] = {"key",     "path", "size",          "slice",        "stored",
                                      "expires", "etag", "last_modified", "content_type", "version"};
  memset(m, 0, sizeof(*m));
  *key = *path = NULL;
  int ok = len >= sizeof(head) - 1 && memcmp(text, head, sizeof(head) - 1) == 0 &&
           !memchr(text, 0, len);
  const char *p = text + sizeof(head) - 1, *end = text + len;
  unsigned seen = 0;
  while (ok && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *sp = memchr(p, ' ', (size_t)(le - p));
    const char *v = sp ? sp + 1 : le;
    size_t nlen = (size_t)((sp ? sp : le) - p), vlen = (size_t)(le - v);
    int f = -1;
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])) && f < 0; i++)
      if (strlen(names[i]) == nlen && memcmp(p, names[i], nlen) == 0)
        f = i;
    p = nl ? nl + 1 : end;
    if (f < 0)
      continue; /* a field of a later format: ignored */
    ok = !(seen & 1u << f); /* each at most once */
    seen |= 1u << f;
    char *hv = f == 6 ? m->etag : f == 7 ? m->last_modified : f == 8 ? m->content_type : NULL;
    if (!ok)
      break;
    if (f == 0 || f == 1) {
      char **out = f == 0 ? key : path;
      ok = (*out = strndup(v, vlen)) != NULL;
    } else if (f == 2 || f == 3) {
      ok = fe_vod_u64(v, le, f == 2 ? &m->size : &m->slice_size) == 0;
    } else if (f == 4 || f == 5) {
      ok = fe_vod_seconds(v, vlen, f == 4 ? &m->stored : &m->expires) == 0;
    } else if (hv) {
      ok = vlen < FE_ORIGIN_HVAL;
      if (ok)
        memcpy(hv, v, vlen), hv[vlen] = 0;
    } else {
      uint64_t ver = 0;
      for (const char *c = v; ok && c < le; c++) {
        int d = *c >= '0' && *c <= '9' ? *c - '0' : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10 : -1;
        ok = d >= 0;
        ver = ver << 4 | (unsigned)d;
      }
      ok = ok && vlen > 0 && vlen <= 8;
      m->version = (uint32_t)ver;
    }
  }
  /* What a fetch of this node could have stored: a size, and a slice size the config allows. */
  if (!ok || !*key || !*path || m->size == 0 || m->slice_size < FE_SLICE_SIZE_MIN ||
      m->slice_size > FE_SLICE_SIZE_MAX || fe_vod_slices(m->size, m->slice_size) > FE_VOD_MAX_SLICES) {
    free(*key);
    free(*path);
    *key = *path = NULL;
    return -1;
  }
  return 0;
}

static int fe_vod_meta_read(const char *file, char **key, char **path, fe_vod_meta *m) {
  char buf[FE_VOD_META_MAX];
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
  if (fd >= 0)
    close(fd);
  /* A record fills a few hundred bytes: one that fills the buffer is no record of ours. */
  if (n < 0 || (size_t)n == sizeof(buf))
    return -1;
  return fe_vod_meta_parse(buf, (size_t)n, key, path, m);
}

/* One 2-hex subdirectory: metas first, then the slices they own. Anything else goes. */
static void fe_vod_scan_sub(fe_vod_cache *c, const char *sub, fe_vod_trash *t) {
  DIR *d = opendir(sub);
  if (!d)
    return;
  char file[1400];
  struct dirent *e;
  for (int pass = 0; pass < 2; pass++) {
    rewinddir(d);
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.')
        continue;
      snprintf(file, sizeof(file), "%s/%s", sub, e->d_name);
      const char *dot = strchr(e->d_name, '.');
      int tmp = strstr(e->d_name, ".tmp") != NULL;
      int meta = dot && strcmp(dot, ".meta") == 0;
      if (pass == 0 && tmp) {
        unlink(file);
        continue;
      }
      if (tmp || (pass == 0) != meta)
        continue;
      if (meta) {
        char *key, *path;
        fe_vod_meta m;
        char hash[41];
        if (fe_vod_meta_read(file, &key, &path, &m) < 0) {
          unlink(file);
          continue;
        }
        fe_vod_hash(key, hash);
        fe_vod_obj *o = NULL;
        if ((size_t)(dot - e->d_name) == 40 && memcmp(hash, e->d_name, 40) == 0 &&
            !fe_vod_find(c, key))
          o = fe_vod_obj_new(c, key, path);
        if (o && fe_vod_obj_size(c, o, m.size, m.slice_size) == 0) {
          o->meta = m;
          o->known = 1;
        } else if (!o) {
          unlink(file);
        }
        free(key);
        free(path);
        continue;
      }
      /* A slice: <hash>.<version>.<n>, owned by a meta of this directory with that version, of
       * the length it must have. */
      struct stat st;
      fe_vod_obj *owner = NULL;
      char *end = NULL, *vend = NULL;
      unsigned long ver = dot ? strtoul(dot + 1, &vend, 16) : 0;
      unsigned long idx = vend && *vend == '.' ? strtoul(vend + 1, &end, 10) : 0;
      if (dot && end && !*end && vend - dot == 9 && vend[1] && (size_t)(dot - e->d_name) == 40) {
        for (int b = 0; b < FE_VOD_BUCKETS && !owner; b++)
          for (fe_vod_obj *o = c->buckets[b]; o && !owner; o = o->hnext)
            if (memcmp(o->hash, e->d_name, 40) == 0)
              owner = o;
      }
      fe_vod_slot *s = owner && ver == owner->meta.version ? fe_vod_slot_at(owner, idx, 1) : NULL;
      if (!s || stat(file, &st) < 0 ||
          (uint64_t)st.st_size != fe_vod_slice_len(&owner->meta, (uint32_t)idx) || s->stored) {
        unlink(file);
        continue;
      }
      s->stored = 1;
      s->size = (uint64_t)st.st_size;
      s->ino = (uint64_t)st.st_ino;
      s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
      owner->nstored++;
      c->bytes += s->size;
      fe_vod_lru_front(c, s);
    }
  }
  closedir(d);
  (void)t;
}

/* Objects whose meta was read but no slice survived stay: their meta is still worth a
 * revalidation. The owner search above is linear per slice; fine at startup for a cache of
 * thousands of objects, and it runs once. */
static int fe_vod_scan(fe_vod_cache *c, char *err, size_t errlen) {
  /* Like mkdir -p: the parents too (a fresh machine has none of them). */
  char path[1024];
  snprintf(path, sizeof(path), "%s", c->dir);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    mkdir(path, 0755); /* an error shows below, at the directory itself */
    *p = '/';
  }
  if (mkdir(c->dir, 0755) < 0 && errno != EEXIST) {
    snprintf(err, errlen, "cache_dir %s: %s", c->dir, strerror(errno));
    return -1;
  }
  DIR *d = opendir(c->dir);
  if (!d) {
    snprintf(err, errlen, "cache_dir %s: %s", c->dir, strerror(errno));
    return -1;
  }
  if (access(c->dir, W_OK) < 0) {
    snprintf(err, errlen, "cache_dir %s: not writable: %s", c->dir, strerror(errno));
    closedir(d);
    return -1;
  }
  fe_vod_trash t = {0};
  struct dirent *e;
  char sub[1024];
  while ((e = readdir(d))) {
    if (strlen(e->d_name) != 2 || strspn(e->d_name, "0123456789abcdef") != 2)
      continue;
    snprintf(sub, sizeof(sub), "%s/%s", c->dir, e->d_name);
    fe_vod_scan_sub(c, sub, &t);
  }
  closedir(d);
  fe_vod_evict(c, &t);
  fe_vod_trash_empty(&t, NULL);
  fe_info("vod cache %s: %llu objects, %llu bytes", c->dir, (unsigned long long)c->objects,
          (unsigned long long)c->bytes);
  return 0;
}

int fe_vod_node_configure(fe_vod_node *n, const fe_config *cfg, char *err, size_t errlen) {
  for (int i = 0; i < cfg->nresources; i++) {
    const fe_resource *res = &cfg->resources[i];
    if (res->type != FE_RES_VOD)
      continue;
    fe_vod_cache *c = fe_vod_node_cache(n, res->cache_dir);
    if (c) {
      uv_mutex_lock(&c->mu);
      if (res->cache_max_size > c->max_size)
        c->max_size = res->cache_max_size;
      uv_mutex_unlock(&c->mu);
      continue;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->dir = strdup(res->cache_dir))) {
      free(c);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    c->node = n;
    c->max_size = res->cache_max_size;
    c->lru.lnext = c->lru.lprev = &c->lru;
    uv_mutex_init(&c->mu);
    if (fe_vod_scan(c, err, errlen) < 0) {
      fe_vod_cache_free(c);
      return -1;
    }
    uv_mutex_lock(&n->mu);
    c->next = n->caches;
    n->caches = c;
    uv_mutex_unlock(&n->mu);
  }
  return 0;
}

fe_vod_cache *fe_vod_node_cache(fe_vod_node *n, const char *dir) {
  uv_mutex_lock(&n->mu);
  fe_vod_cache *c = n->caches;
  while (c && strcmp(c->dir, dir) != 0)
    c = c->next;
  uv_mutex_unlock(&n->mu);
  return c;
}

size_t fe_vod_metrics_render(fe_vod_node *n, char *buf, size_t cap) {
  uint64_t bytes = 0, objects = 0;
  uv_mutex_lock(&n->mu);
  for (fe_vod_cache *c = n->caches; c; c = c->next) {
    uv_mutex_lock(&c->mu);
    bytes += c->bytes;
    objects += c->objects;
    uv_mutex_unlock(&c->mu);
  }
  uv_mutex_unlock(&n->mu);
  int w = snprintf(buf, cap,
                   "# TYPE flvedge_vod_cache_bytes gauge\nflvedge_vod_cache_bytes %llu\n"
                   "# TYPE flvedge_vod_cache_objects gauge\nflvedge_vod_cache_objects %llu\n"
                   "# TYPE flvedge_vod_fetches gauge\nflvedge_vod_fetches %d\n",
                   (unsigned long long)bytes, (unsigned long long)objects,
                   __atomic_load_n(&n->fetches, __ATOMIC_RELAXED));
  return w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap ? cap - 1 : 0;
}

/* ---- lookups ------------------------------------------------------------------------------- */

int fe_vod_lookup(fe_vod_cache *c, const char *key, double now, fe_vod_meta *out) {
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = fe_vod_find(c, key);
  int rc = FE_VOD_ABSENT;
  if (o && o->known) {
    *out = o->meta;
    rc = now < o->meta.expires ? FE_VOD_FRESH : FE_VOD_EXPIRED;
  }
  uv_mutex_unlock(&c->mu);
  return rc;
}

int fe_vod_error_lookup(fe_vod_cache *c, const char *key, double now, fe_vod_error *out) {
  uv_mutex_lock(&c->mu);
  fe_vod_neg **p = fe_vod_neg_slot(c, key);
  int rc = 0;
  if (*p && now < (*p)->expires) {
    *out = (*p)->e;
    rc = 1;
  } else if (*p) {
    fe_vod_neg_unlink(c, p);
  }
  uv_mutex_unlock(&c->mu);
  return rc;
}

static int fe_vod_match(const char *pat, const char *s) {
  if (!strchr(pat, '*'))
    return strcmp(pat, s) == 0;
  /* '*' matches any run of bytes: the classic backtracking walk, linear in practice. */
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*pat == '*') {
      star = pat++;
      resume = s;
    } else if (*pat == *s) {
      pat++;
      s++;
    } else if (star) {
      pat = star + 1;
      s = ++resume;
    } else {
      return 0;
    }
  }
  while (*pat == '*')
    pat++;
  return *pat == 0;
}

int fe_vod_purge(fe_vod_cache *c, fe_loop *l, const char *path) {
  fe_vod_trash t = {0};
  int n = 0;
  uv_mutex_lock(&c->mu);
  for (int b = 0; b < FE_VOD_BUCKETS; b++) {
    fe_vod_obj *o = c->buckets[b];
    while (o) {
      fe_vod_obj *next = o->hnext;
      if (fe_vod_match(path, o->path) && (o->known || o->nstored)) {
        if (o->fetches) {
          fe_vod_obj_clear(c, o, &t); /* its fetches still use it; their stores are dropped */
          char mp[512];
          fe_vod_file_path(c, o->hash, "meta", mp, sizeof(mp));
          fe_vod_trash_add(&t, mp);
        } else {
          fe_vod_obj_remove(c, o, &t);
        }
        n++;
      }
      o = next;
    }
  }
  n += fe_vod_neg_sweep(c, path, 0);
  uv_mutex_unlock(&c->mu);
  fe_vod_trash_empty(&t, l);
  return n;
}

int fe_vod_purge_all(fe_vod_node *nd, fe_loop *l, const char *path) {
  int n = 0;
  uv_mutex_lock(&nd->mu);
  fe_vod_cache *c = nd->caches;
  uv_mutex_unlock(&nd->mu);
  /* Caches are only ever added at the head, never removed while loops run. */
  for (; c; c = c->next)
    n += fe_vod_purge(c, l, path);
  return n;
}

int fe_vod_slice_stored(fe_vod_cache *c, const char *key, uint32_t idx) {
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = fe_vod_find(c, key);
  fe_vod_slot *s = fe_vod_slot_at(o, idx, 0);
  int stored = s && s->stored;
  uv_mutex_unlock(&c->mu);
  return stored;
}

void fe_vod_slice_touch(fe_vod_cache *c, const char *key, uint32_t idx) {
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = fe_vod_find(c, key);
  fe_vod_slot *s = fe_vod_slot_at(o, idx, 0);
  if (s && s->stored)
    fe_vod_lru_front(c, s);
  uv_mutex_unlock(&c->mu);
}

void fe_vod_slice_drop(fe_vod_cache *c, fe_loop *l, const char *key, uint32_t idx,
                       const fe_vod_file *file) {
  fe_vod_trash t = {0};
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = fe_vod_find(c, key);
  fe_vod_slot *s = fe_vod_slot_at(o, idx, 0);
  if (s && s->stored && s->ino == file->ino && s->mtime_ns == file->mtime_ns &&
      s->size == file->size) {
    fe_vod_slot_forget(c, s, &t);
    fe_warn("vod cache %s: %s slice %u changed on disk: dropped, fetched again", c->dir, o->path,
            idx);
  }
  uv_mutex_unlock(&c->mu);
  fe_vod_trash_empty(&t, l);
}

/* ---- fetches ------------------------------------------------------------------------------- */

static void fe_vod_fetch_unref(fe_vod_fetch *f) {
  if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  free(f->buf);
  free(f->sbuf);
  free(f->key);
  free(f->url);
  free(f->path);
  for (int i = 0; i < f->nalts; i++)
    free(f->alts[i]);
  free(f->alts);
  free(f);
}

int fe_vod_fetch_state(const fe_vod_fetch *f) {
  return __atomic_load_n(&f->state, __ATOMIC_ACQUIRE);
}

const fe_vod_meta *fe_vod_fetch_meta(const fe_vod_fetch *f) {
  return &f->meta;
}

void fe_vod_fetch_range(const fe_vod_fetch *f, uint64_t *start, uint64_t *len) {
  *start = f->start;
  *len = f->want;
}

const uint8_t *fe_vod_fetch_bytes(const fe_vod_fetch *f, uint64_t *avail) {
  *avail = __atomic_load_n(&f->len, __ATOMIC_ACQUIRE);
  return f->buf;
}

int fe_vod_fetch_error(const fe_vod_fetch *f, int *status, const char **ctype, const char **body,
                       size_t *len) {
  if (status)
    *status = f->status;
  if (ctype)
    *ctype = f->ectype[0] ? f->ectype : NULL;
  if (body)
    *body = f->ebody;
  if (len)
    *len = f->elen;
  return f->err;
}

int fe_vod_fetch_cacheable(const fe_vod_fetch *f) {
  return f->cacheable;
}

/* Any loop's request may call this on a fetch it waits for; only the one that started the fetch
 * (on the fetch's loop) is its answer's ud, so for the others the atomic compare fails and they
 * write nothing. */
void fe_vod_fetch_forget_answer(fe_vod_fetch *f, void *ud) {
  if (__atomic_load_n(&f->answer_ud, __ATOMIC_RELAXED) == ud) {
    f->on_answer = NULL;
    __atomic_store_n(&f->answer_ud, NULL, __ATOMIC_RELAXED);
  }
}

static void fe_vod_fetch_wake(fe_vod_fetch *f) {
  fe_vod_cache *c = f->cache;
  uv_mutex_lock(&c->mu);
  for (fe_vod_waiter *w = f->waiters; w; w = w->next)
    fe_vod_box_push(c->node, w);
  uv_mutex_unlock(&c->mu);
}

static void fe_vod_attach(fe_vod_fetch *f, fe_vod_waiter *w) {
  __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  w->fetch = f;
  w->prev = NULL;
  w->next = f->waiters;
  if (f->waiters)
    f->waiters->prev = w;
  f->waiters = w;
  w->queued = 0;
  w->box_next = NULL;
}

/* Off the node's queue for a fetch slot, and out of its loop's mailbox if the wake is pending. */
static void fe_vod_waiter_unqueue(fe_vod_waiter *w) {
  fe_vod_node *n = w->slot_node;
  uv_mutex_lock(&n->mu);
  if (w->slot_linked) {
    if (w->prev)
      w->prev->next = w->next;
    else
      n->slot_head = w->next;
    if (w->next)
      w->next->prev = w->prev;
    else
      n->slot_tail = w->prev;
    w->slot_linked = 0;
  }
  fe_vod_box_remove(n, w);
  uv_mutex_unlock(&n->mu);
  w->prev = w->next = NULL;
  w->slot_node = NULL;
}

void fe_vod_waiter_detach(fe_vod_waiter *w) {
  if (w->slot_node)
    fe_vod_waiter_unqueue(w);
  fe_vod_fetch *f = w->fetch;
  if (!f)
    return;
  fe_vod_cache *c = f->cache;
  uv_mutex_lock(&c->mu);
  if (w->prev)
    w->prev->next = w->next;
  else
    f->waiters = w->next;
  if (w->next)
    w->next->prev = w->prev;
  fe_vod_box_remove(c->node, w);
  uv_mutex_unlock(&c->mu);
  w->fetch = NULL;
  w->prev = w->next = NULL;
  fe_vod_fetch_unref(f);
}

/* Off the object's list (under c->mu); an object that never got its meta goes with its last
 * fetch. */
/* The fetch's origin work is over (the bytes are in, or it failed): its slot goes to the first
 * request queued for one. What it still holds (a store on its way) is bounded apart. */
static void fe_vod_fetch_uncount(fe_vod_fetch *f) {
  if (!f->counted)
    return;
  f->counted = 0;
  fe_vod_node *n = f->cache->node;
  __atomic_sub_fetch(&n->fetches, 1, __ATOMIC_RELAXED);
  uv_mutex_lock(&n->mu);
  fe_vod_slot_give(n);
  uv_mutex_unlock(&n->mu);
}

static void fe_vod_fetch_unlist(fe_vod_fetch *f, fe_vod_trash *t) {
  fe_vod_cache *c = f->cache;
  if (!f->listed)
    return;
  f->listed = 0;
  fe_vod_obj *o = fe_vod_find(c, f->key);
  if (!o)
    return;
  fe_vod_fetch **pp = &o->fetches;
  while (*pp && *pp != f)
    pp = &(*pp)->onext;
  if (*pp)
    *pp = f->onext;
  if (!o->known && !o->fetches && !o->nstored)
    fe_vod_obj_remove(c, o, t);
}

/* The fetch is over (stored, not stored or failed): its run lets go. With a tail reader, the
 * second of the two to finish ends it. */
static void fe_vod_fetch_end(fe_vod_fetch *f) {
  if (--f->runs > 0)
    return;
  fe_vod_trash t = {0};
  uv_mutex_lock(&f->cache->mu);
  fe_vod_fetch_unlist(f, &t);
  uv_mutex_unlock(&f->cache->mu);
  fe_vod_trash_empty(&t, f->loop);
  if (f->origin) {
    fe_origin_close(f->origin);
    f->origin = NULL;
  }
  fe_vod_fetch_uncount(f);
  fe_vod_fetch_unref(f);
}

static void fe_vod_neg_put(fe_vod_cache *c, const fe_vod_fetch *f, double now, double expires) {
  fe_vod_neg **p = fe_vod_neg_slot(c, f->key);
  if (*p)
    fe_vod_neg_unlink(c, p);
  if (c->nnegs >= FE_VOD_NEG_MAX)
    fe_vod_neg_sweep(c, NULL, now);
  if (c->nnegs >= FE_VOD_NEG_MAX || expires <= now)
    return;
  fe_vod_neg *g = calloc(1, sizeof(*g));
  if (!g)
    return;
  g->key = strdup(f->key);
  g->path = strdup(f->path);
  if (!g->key || !g->path) {
    free(g->key);
    free(g->path);
    free(g);
    return;
  }
  g->expires = expires;
  g->e.status = f->status;
  snprintf(g->e.ctype, sizeof(g->e.ctype), "%s", f->ectype);
  g->e.len = f->elen < sizeof(g->e.body) ? f->elen : sizeof(g->e.body);
  memcpy(g->e.body, f->ebody, g->e.len);
  fe_vod_neg **head = &c->negs[fe_vod_bucket(f->key) % FE_VOD_NEG_BUCKETS];
  g->next = *head;
  *head = g;
  c->nnegs++;
}

static void fe_vod_fetch_fail(fe_vod_fetch *f, int err) {
  f->err = err;
  if (f->buf && err == FE_VOD_ESHORT)
    fe_debug("vod: %s slice %u: origin sent %llu of %llu bytes", f->path, f->idx,
             (unsigned long long)f->len, (unsigned long long)f->want);
  __atomic_store_n(&f->state, FE_VOD_F_FAILED, __ATOMIC_RELEASE);
  fe_vod_fetch_wake(f);
  fe_vod_fetch_uncount(f);
  fe_vod_fetch_end(f);
}

static int fe_vod_write_all(int fd, const uint8_t *p, uint64_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : (size_t)n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return w < 0 ? -errno : -ENOSPC;
    p += w;
    n -= (uint64_t)w;
  }
  return 0;
}

/* A file written whole as .tmp, then published under its name: a reader never sees a part of it.
 * The tmp name is unique (two stores of one object write its meta at once). A meta replaces the
 * old one (rename); a slice is linked and never replaces one: two fetches may store the same
 * slice (same content version), and the one the index records must stay the one on disk, so
 * the second adopts the first's file (st then describes it). */
static int fe_vod_write_file(const char *path, const uint8_t *data, uint64_t len, int replace,
                             struct stat *st) {
  static uint64_t seq;
  char tmp[640];
  snprintf(tmp, sizeof(tmp), "%s.%llu.tmp", path,
           (unsigned long long)__atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  int rc = fe_vod_write_all(fd, data, len);
  if (rc == 0 && fstat(fd, st) < 0)
    rc = -errno;
  if (rc == 0 && (uint64_t)st->st_size != len)
    rc = -EIO;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && replace && rename(tmp, path) < 0)
    rc = -errno;
  if (rc == 0 && !replace) {
    if (link(tmp, path) < 0) {
      rc = -errno;
      if (rc == -EEXIST && stat(path, st) == 0 && (uint64_t)st->st_size == len)
        rc = 0; /* stored by the other fetch: adopt its file */
    }
    unlink(tmp);
  }
  if (rc < 0)
    unlink(tmp);
  return rc;
}

size_t fe_vod_meta_format(const fe_vod_meta *m, const char *key, const char *path, char *buf,
                          size_t cap) {
  int n = snprintf(buf, cap,
                   FE_VOD_META_VERSION "\nkey %s\npath %s\nsize %llu\nslice %llu\nstored %.3f\n"
                                       "expires %.3f\netag %s\nlast_modified %s\ncontent_type %s\n"
                                       "version %08x\n",
                   key, path, (unsigned long long)m->size, (unsigned long long)m->slice_size,
                   m->stored, m->expires, m->etag, m->last_modified, m->content_type, m->version);
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Thread pool: the slice (when it has bytes) and the object's meta. */
static void fe_vod_store_work(uv_work_t *w) {
  fe_vod_fetch *f = w->data;
  fe_vod_cache *c = f->cache;
  char dir[600], path[600];
  snprintf(dir, sizeof(dir), "%s/%.2s", c->dir, f->hash);
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    f->store_rc = -errno;
    return;
  }
  struct stat st;
  f->store_rc = 0;
  if (f->buf) {
    fe_vod_slice_path(c, f->hash, f->meta.version, f->idx, path, sizeof(path));
    f->store_rc = fe_vod_write_file(path, f->buf, f->want, 0, &st);
    if (f->store_rc == 0) {
      snprintf(f->file.path, sizeof(f->file.path), "%s", path);
      f->file.size = (uint64_t)st.st_size;
      f->file.ino = (uint64_t)st.st_ino;
      f->file.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
  }
  if (f->store_rc == 0) {
    char text[FE_VOD_META_MAX];
    size_t n = fe_vod_meta_format(&f->meta, f->key, f->path, text, sizeof(text));
    fe_vod_file_path(c, f->hash, "meta", path, sizeof(path));
    /* Never a record cut short (FE_VOD_PATH_MAX keeps every one within the size). */
    f->store_rc = n + 1 >= sizeof(text) ? -ENAMETOOLONG
                                        : fe_vod_write_file(path, (const uint8_t *)text, n, 1, &st);
  }
}

/* Under c->mu: a slice file just published enters the index, unless its object moved on
 * (purged, replaced: not `current`) or the slot was stored meanwhile; a file the index does not
 * name is deleted. */
static void fe_vod_slot_publish(fe_vod_cache *c, fe_vod_obj *o, int current, uint32_t idx,
                                const fe_vod_file *file, fe_vod_trash *t) {
  fe_vod_slot *s = current ? fe_vod_slot_at(o, idx, 1) : NULL;
  if (s && !s->stored) {
    s->stored = 1;
    s->size = file->size;
    s->ino = file->ino;
    s->mtime_ns = file->mtime_ns;
    o->nstored++;
    c->bytes += s->size;
    fe_vod_lru_front(c, s);
    fe_vod_evict(c, t);
  } else if (!((s = fe_vod_slot_at(o, idx, 0)) && s->ino == file->ino)) {
    fe_vod_trash_add(t, file->path);
  }
}

static void fe_vod_store_done(uv_work_t *w, int status) {
  fe_vod_fetch *f = w->data;
  fe_vod_cache *c = f->cache;
  __atomic_sub_fetch(&c->node->backlog, f->backlog, __ATOMIC_RELAXED);
  fe_vod_trash t = {0};
  int rc = status < 0 ? status : f->store_rc;
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = f->listed ? fe_vod_find(c, f->key) : NULL;
  int current = o && o->gen == f->gen && o->known;
  if (rc == 0 && f->buf)
    fe_vod_slot_publish(c, o, current, f->idx, &f->file, &t);
  uv_mutex_unlock(&c->mu);
  if (rc < 0) {
    FE_METRIC_INC(&f->loop->metrics, vod_store_errors);
    fe_warn("vod cache %s: storing %s slice %u: %s (served, not stored)", c->dir, f->path, f->idx,
            uv_strerror(rc));
  }
  fe_vod_trash_empty(&t, f->loop);
  fe_vod_fetch_end(f);
}

static void fe_vod_fetch_store(fe_vod_fetch *f) {
  fe_vod_node *n = f->cache->node;
  f->backlog = f->buf ? f->want : 0;
  if (!fe_vod_backlog_take(n, f->backlog)) {
    FE_METRIC_INC(&f->loop->metrics, vod_store_errors);
    fe_warn("vod cache %s: %s slice %u not stored: %llu bytes already wait for the disk",
            f->cache->dir, f->path, f->idx, (unsigned long long)FE_VOD_STORE_BACKLOG);
    f->backlog = 0;
    fe_vod_fetch_end(f);
    return;
  }
  f->work.data = f;
  if (uv_queue_work(&f->loop->uv, &f->work, fe_vod_store_work, fe_vod_store_done) < 0) {
    __atomic_sub_fetch(&n->backlog, f->backlog, __ATOMIC_RELAXED);
    fe_vod_fetch_end(f);
  }
}

/* "bytes F-L/T": 0 with the three numbers, -1 otherwise. */
static void fe_vod_side_work(uv_work_t *w) {
  fe_vod_side *sd = w->data;
  fe_vod_cache *c = sd->f->cache;
  char dir[600], path[600];
  struct stat st;
  snprintf(dir, sizeof(dir), "%s/%.2s", c->dir, sd->f->hash);
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    sd->rc = -errno;
    return;
  }
  fe_vod_slice_path(c, sd->f->hash, sd->version, sd->idx, path, sizeof(path));
  sd->rc = fe_vod_write_file(path, sd->buf, sd->len, 0, &st);
  if (sd->rc == 0) {
    snprintf(sd->file.path, sizeof(sd->file.path), "%s", path);
    sd->file.size = (uint64_t)st.st_size;
    sd->file.ino = (uint64_t)st.st_ino;
    sd->file.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  }
}

static void fe_vod_side_done(uv_work_t *w, int status) {
  fe_vod_side *sd = w->data;
  fe_vod_fetch *f = sd->f;
  fe_vod_cache *c = f->cache;
  __atomic_sub_fetch(&c->node->backlog, sd->len, __ATOMIC_RELAXED);
  fe_vod_trash t = {0};
  int rc = status < 0 ? status : sd->rc;
  if (rc == 0) {
    uv_mutex_lock(&c->mu);
    fe_vod_obj *o = fe_vod_find(c, f->key);
    int current = o && o->known && o->gen == sd->gen && o->meta.version == sd->version;
    fe_vod_slot_publish(c, o, current, sd->idx, &sd->file, &t);
    uv_mutex_unlock(&c->mu);
  } else {
    FE_METRIC_INC(&f->loop->metrics, vod_store_errors);
    fe_warn("vod cache %s: storing %s slice %u: %s (not stored)", c->dir, f->path, sd->idx,
            uv_strerror(rc));
  }
  fe_vod_trash_empty(&t, f->loop);
  for (int i = 0; i < f->sinflight; i++) {
    if (f->sidxs[i] == sd->idx) {
      f->sidxs[i] = f->sidxs[f->sinflight - 1];
      break;
    }
  }
  f->sinflight--;
  fe_vod_tail_cover(f);
  free(sd->buf);
  free(sd);
  if (f->origin && f->sinflight < FE_VOD_SIDE_INFLIGHT)
    fe_origin_pause(f->origin, 0);
  fe_vod_fetch_wake(f); /* requests waiting for this slice look again */
  fe_vod_fetch_unref(f);
}

/* A passing slice is complete: to the disk. The tail pauses its origin while the disk is behind;
 * the bytes of the read being parsed may still complete one more. */
static void fe_vod_side_store(fe_vod_fetch *f) {
  fe_vod_node *n = f->cache->node;
  fe_vod_side *sd = NULL;
  if (f->sinflight <= FE_VOD_SIDE_INFLIGHT && fe_vod_backlog_take(n, f->slen)) {
    sd = calloc(1, sizeof(*sd));
    if (!sd)
      __atomic_sub_fetch(&n->backlog, f->slen, __ATOMIC_RELAXED);
  }
  if (!sd) {
    free(f->sbuf);
    f->sbuf = NULL;
    return;
  }
  sd->f = f;
  sd->idx = f->sidx;
  sd->version = f->meta.version;
  sd->gen = f->gen;
  sd->buf = f->sbuf;
  sd->len = f->slen;
  sd->work.data = sd;
  f->sbuf = NULL;
  __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
  f->sidxs[f->sinflight++] = sd->idx;
  if (uv_queue_work(&f->loop->uv, &sd->work, fe_vod_side_work, fe_vod_side_done) < 0) {
    f->sinflight--;
    __atomic_sub_fetch(&n->backlog, sd->len, __ATOMIC_RELAXED);
    free(sd->buf);
    free(sd);
    fe_vod_fetch_unref(f);
    return;
  }
  if (f->tail && f->origin && f->sinflight >= FE_VOD_SIDE_INFLIGHT)
    fe_origin_pause(f->origin, 1);
}

/* Bytes of a 200 answer outside the fetch's own slice, at file offset f->pos. */
static void fe_vod_side_bytes(fe_vod_fetch *f, const uint8_t *data, size_t len) {
  uint64_t S = f->meta.slice_size;
  while (len > 0) {
    uint32_t idx = (uint32_t)(f->pos / S);
    uint64_t in = f->pos % S;
    uint64_t slice_len = fe_vod_slice_len(&f->meta, idx);
    size_t n = len < slice_len - in ? len : (size_t)(slice_len - in);
    if (in == 0 && idx != f->idx && f->cacheable && !f->sbuf &&
        (f->tail || f->sinflight < FE_VOD_SIDE_INFLIGHT) && (f->sbuf = malloc(slice_len))) {
      f->sidx = idx;
      f->slen = 0;
      f->swant = slice_len;
    }
    if (f->sbuf && f->sidx == idx) {
      memcpy(f->sbuf + f->slen, data, n);
      f->slen += n;
      if (f->slen == f->swant)
        fe_vod_side_store(f);
    }
    f->pos += n;
    data += n;
    len -= n;
  }
  fe_vod_tail_cover(f);
}

int fe_vod_content_range_parse(const char *s, uint64_t *first, uint64_t *last, uint64_t *total) {
  if (strncasecmp(s, "bytes ", 6) != 0)
    return -1;
  s += 6;
  const char *dash = strchr(s, '-'), *slash = dash ? strchr(dash, '/') : NULL;
  if (!slash || fe_vod_u64(s, dash, first) < 0 || fe_vod_u64(dash + 1, slash, last) < 0 ||
      fe_vod_u64(slash + 1, slash + 1 + strlen(slash + 1), total) < 0 || *first > *last ||
      *last >= *total)
    return -1;
  return 0;
}

static const fe_origin_cbs fe_vod_origin_cbs;

/*
 * The fetch's origin failed (`why`, for the log): the next origin of the group takes the request
 * over. Before the head, the same request; in the body, the rest of the slice from the byte it
 * stopped at (the bytes already in stay, and waiters never see the switch). Returns 1 when a
 * request is under way, 0 when no origin is left.
 */
static int fe_vod_fetch_next(fe_vod_fetch *f, const char *why) {
  fe_health_failed(f->loop->health, f->cur);
  if (f->alt >= f->nalts)
    return 0;
  /* Backups marked down by a recent failure (any fetch, any stream) are skipped; the last one is
   * tried all the same. */
  while (f->alt < f->nalts - 1 && !fe_health_usable(f->loop->health, f->alts[f->alt]))
    f->alt++;
  const char *url = f->alts[f->alt++];
  f->cur = url;
  if (f->origin)
    fe_origin_close(f->origin);
  f->origin = NULL;
  f->err = 0;
  f->status = 0;
  f->elen = 0;
  char range[128];
  const char *headers = f->headers;
  if (__atomic_load_n(&f->state, __ATOMIC_RELAXED) == FE_VOD_F_BODY) {
    uint64_t len = __atomic_load_n(&f->len, __ATOMIC_RELAXED);
    snprintf(range, sizeof(range), "Range: bytes=%llu-%llu\r\n",
             (unsigned long long)(f->start + len), (unsigned long long)(f->start + f->want - 1));
    headers = range;
    f->resuming = 1;
    f->through = 0; /* another origin's answer: no passing slices from it (their offsets differ) */
  }
  fe_warn("vod: %s slice %u: origin failed (%s); trying %s%s", f->path, f->idx, why, url,
          f->resuming ? " for the rest of the slice" : "");
  fe_origin_opts oo = {.connect_timeout = f->connect_timeout,
                       .read_timeout = f->read_timeout,
                       .max_tag_size = 1u << 20,
                       .extra_headers = headers,
                       .tls = f->tls};
  FE_METRIC_INC(&f->loop->metrics, vod_origin_requests);
  FE_METRIC_INC(&f->loop->metrics, origin_connects);
  f->origin = fe_origin_open(f->loop, url, &oo, &fe_vod_origin_cbs, f);
  return f->origin != NULL;
}

/* The answer of another origin to the rest of a slice: exactly those bytes of an object of the
 * same size, or the fetch fails short. */
static void fe_vod_on_resume(fe_vod_fetch *f, int status) {
  const fe_origin_head *h = fe_origin_response_head(f->origin);
  uint64_t first = 0, last = 0, size = 0;
  uint64_t at = f->start + __atomic_load_n(&f->len, __ATOMIC_RELAXED);
  if (status == 206 && fe_vod_content_range_parse(h->content_range, &first, &last, &size) == 0 &&
      first == at && last == f->start + f->want - 1 && size == f->meta.size) {
    f->skip = 0;
    fe_health_ok(f->loop->health, f->cur);
    return;
  }
  if (status == 200 && h->content_length >= 0 && (uint64_t)h->content_length == f->meta.size) {
    f->skip = at;
    fe_health_ok(f->loop->health, f->cur);
    return;
  }
  char why[64];
  snprintf(why, sizeof(why), "status %d to the rest of the slice", status);
  FE_METRIC_INC(&f->loop->metrics, origin_failures);
  if (!fe_vod_fetch_next(f, why))
    fe_vod_fetch_fail(f, FE_VOD_ESHORT);
}

static void fe_vod_on_response(void *ud, int status, const char *ctype) {
  fe_vod_fetch *f = ud;
  fe_vod_cache *c = f->cache;
  if (f->resuming) {
    fe_vod_on_resume(f, status);
    return;
  }
  if (status >= 500 && f->alt < f->nalts) {
    char why[32];
    snprintf(why, sizeof(why), "status %d", status);
    FE_METRIC_INC(&f->loop->metrics, origin_failures);
    if (fe_vod_fetch_next(f, why))
      return;
  }
  const fe_origin_head *h = fe_origin_response_head(f->origin);
  uint64_t size = 0, first = 0, last = 0;
  int ok = status == 200 || status == 206;
  if (ok || status == 304)
    fe_health_ok(f->loop->health, f->cur);
  if (status == 206 && fe_vod_content_range_parse(h->content_range, &first, &last, &size) < 0) {
    fe_vod_fetch_fail(f, FE_VOD_EPROTO);
    return;
  }
  if (status == 200) {
    if (h->content_length < 0) {
      fe_vod_fetch_fail(f, FE_VOD_ENOSIZE);
      return;
    }
    size = (uint64_t)h->content_length;
  }
  double ttl = f->ttl;
  int cacheable = ok && !f->no_store;
  void *answer_ud = __atomic_load_n(&f->answer_ud, __ATOMIC_RELAXED);
  if (f->on_answer && answer_ud && !f->no_store)
    f->on_answer(answer_ud, status, h, size, &ttl, &cacheable);
  double now = fe_now();
  if (status == 304) {
    fe_vod_trash t = {0};
    uv_mutex_lock(&c->mu);
    fe_vod_obj *o = f->listed ? fe_vod_find(c, f->key) : NULL;
    int known = o && o->known;
    if (known) {
      o->meta.expires = now + ttl;
      f->meta = o->meta;
      f->gen = o->gen;
    }
    uv_mutex_unlock(&c->mu);
    fe_vod_trash_empty(&t, f->loop);
    if (!known) {
      fe_vod_fetch_fail(f, FE_VOD_EPROTO); /* a 304 to a request that had no validators */
      return;
    }
    __atomic_store_n(&f->state, FE_VOD_F_NOT_MODIFIED, __ATOMIC_RELEASE);
    fe_vod_fetch_wake(f);
    /* The new expiry goes to the meta file; no slice. */
    fe_origin_close(f->origin);
    f->origin = NULL;
    fe_vod_fetch_uncount(f);
    fe_vod_fetch_store(f);
    return;
  }
  if (!ok) {
    f->status = status;
    snprintf(f->ectype, sizeof(f->ectype), "%s", ctype ? ctype : "");
    f->err = FE_VOD_ESTATUS;
    f->cacheable = cacheable && f->listed; /* the hook kept it: fe_vod_neg_put at the end */
    f->meta.expires = now + ttl;
    return; /* the short body is gathered, then the fetch fails with it */
  }
  /* A size past what the index takes (an origin may claim any): refused before anything is made
   * for it; the requests' slice numbers stay within 32 bits too. */
  if (fe_vod_slices(size, f->meta.slice_size) > FE_VOD_MAX_SLICES) {
    fe_vod_fetch_fail(f, FE_VOD_ETOOBIG);
    return;
  }
  f->meta.size = size;
  f->meta.stored = now;
  f->meta.expires = now + ttl;
  snprintf(f->meta.etag, sizeof(f->meta.etag), "%s", h->etag);
  snprintf(f->meta.last_modified, sizeof(f->meta.last_modified), "%s", h->last_modified);
  snprintf(f->meta.content_type, sizeof(f->meta.content_type), "%s", h->content_type);
  f->start = (uint64_t)f->idx * f->meta.slice_size;
  if (f->start >= size && !(size == 0 && f->idx == 0)) {
    fe_vod_fetch_fail(f, FE_VOD_EPROTO);
    return;
  }
  f->want = fe_vod_slice_len(&f->meta, f->idx);
  if (status == 206 && (first != f->start || last != f->start + f->want - 1)) {
    fe_vod_fetch_fail(f, FE_VOD_EPROTO);
    return;
  }
  f->skip = status == 200 ? f->start : 0;
  f->through = status == 200;
  f->pos = 0;
  f->cacheable = cacheable;
  /* The index learns the object's meta; a different one means the object changed at the origin:
   * its old slices go. */
  fe_vod_trash t = {0};
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = f->listed ? fe_vod_find(c, f->key) : NULL;
  if (f->listed)
    fe_vod_neg_drop(c, f->key); /* the object is there now: a kept error answer is stale */
  if (o && cacheable) {
    fe_vod_meta *m = &o->meta;
    if (o->known && (m->size != size || strcmp(m->etag, f->meta.etag) != 0 ||
                     strcmp(m->last_modified, f->meta.last_modified) != 0 ||
                     m->slice_size != f->meta.slice_size))
      fe_vod_obj_clear(c, o, &t);
    /* The same content keeps its version (its slices' names); a new one takes a new version. */
    f->meta.version = o->known ? m->version : fe_vod_new_version(m->version);
    if (fe_vod_obj_size(c, o, size, f->meta.slice_size) == 0) {
      o->meta = f->meta;
      o->known = 1;
    }
    f->gen = o->gen;
  } else {
    f->cacheable = 0;
  }
  uv_mutex_unlock(&c->mu);
  fe_vod_trash_empty(&t, f->loop);
  f->buf = malloc(f->want ? f->want : 1);
  if (!f->buf) {
    fe_vod_fetch_fail(f, UV_ENOMEM);
    return;
  }
  __atomic_store_n(&f->state, FE_VOD_F_BODY, __ATOMIC_RELEASE);
  fe_vod_fetch_wake(f);
  if (f->want == 0) {
    __atomic_store_n(&f->state, FE_VOD_F_DONE, __ATOMIC_RELEASE);
    fe_vod_fetch_end(f);
  }
}

static void fe_vod_on_body(void *ud, const uint8_t *data, size_t len) {
  fe_vod_fetch *f = ud;
  FE_METRIC_ADD(&f->loop->metrics, vod_origin_bytes, len);
  if (f->err == FE_VOD_ESTATUS) {
    size_t room = sizeof(f->ebody) - f->elen;
    memcpy(f->ebody + f->elen, data, len < room ? len : room);
    f->elen += len < room ? len : room;
    return;
  }
  int state = __atomic_load_n(&f->state, __ATOMIC_RELAXED);
  if (f->through && state == FE_VOD_F_DONE) {
    fe_vod_side_bytes(f, data, len); /* the rest of the file, for the slices after ours */
    return;
  }
  if (state != FE_VOD_F_BODY)
    return;
  if (f->skip) {
    size_t n = len < f->skip ? len : (size_t)f->skip;
    if (f->through)
      fe_vod_side_bytes(f, data, n);
    f->skip -= n;
    data += n;
    len -= n;
  }
  uint64_t have = f->len;
  size_t rest = 0;
  if (len > f->want - have) {
    rest = len - (size_t)(f->want - have);
    len = (size_t)(f->want - have);
  }
  if (len == 0)
    return;
  memcpy(f->buf + have, data, len);
  __atomic_store_n(&f->len, have + len, __ATOMIC_RELEASE);
  if (have + len < f->want)
    return;
  __atomic_store_n(&f->state, FE_VOD_F_DONE, __ATOMIC_RELEASE);
  if (f->through && f->cacheable && f->start + f->want < f->meta.size) {
    /* A 200 goes on with the rest of the file: read on for the slices after ours. */
    f->pos = f->start + f->want;
    fe_vod_tail_cover(f);
    __atomic_store_n(&f->tail, 1, __ATOMIC_RELEASE);
    f->runs++;
    fe_vod_side_bytes(f, data + len, rest);
  } else {
    /* Every byte of the slice is in. */
    fe_origin_close(f->origin);
    f->origin = NULL;
    fe_vod_fetch_uncount(f);
  }
  fe_vod_fetch_wake(f);
  if (f->cacheable)
    fe_vod_fetch_store(f);
  else
    fe_vod_fetch_end(f);
}

static void fe_vod_on_flush(void *ud) {
  fe_vod_fetch_wake(ud);
}

static void fe_vod_on_end(void *ud, int err) {
  fe_vod_fetch *f = ud;
  if (f->through && __atomic_load_n(&f->state, __ATOMIC_RELAXED) == FE_VOD_F_DONE) {
    /* The tail reader is done: a last slice shorter than the others is complete at the end. */
    if (f->sbuf && f->slen < f->swant) {
      free(f->sbuf);
      f->sbuf = NULL;
    }
    __atomic_store_n(&f->tail, 0, __ATOMIC_RELEASE);
    fe_vod_fetch_wake(f); /* requests that waited for slices it did not reach look again */
    fe_vod_fetch_uncount(f);
    fe_vod_fetch_end(f);
    return;
  }
  if (f->err == FE_VOD_ESTATUS) {
    if (f->cacheable) {
      uv_mutex_lock(&f->cache->mu);
      fe_vod_neg_put(f->cache, f, fe_now(), f->meta.expires);
      uv_mutex_unlock(&f->cache->mu);
    }
    fe_vod_fetch_fail(f, FE_VOD_ESTATUS);
    return;
  }
  int state = __atomic_load_n(&f->state, __ATOMIC_RELAXED);
  if (state == FE_VOD_F_HEAD) {
    if (err && fe_vod_fetch_next(f, fe_origin_strerror(err)))
      return;
    f->status = fe_origin_status(err);
    fe_vod_fetch_fail(f, err ? err : FE_VOD_EPROTO);
  } else if (state == FE_VOD_F_BODY) {
    FE_METRIC_INC(&f->loop->metrics, origin_failures);
    if (fe_vod_fetch_next(f, err ? fe_origin_strerror(err) : "body cut short"))
      return;
    fe_vod_fetch_fail(f, FE_VOD_ESHORT);
  }
}

static const fe_origin_cbs fe_vod_origin_cbs = {
    .on_response = fe_vod_on_response,
    .on_body = fe_vod_on_body,
    .on_flush = fe_vod_on_flush,
    .on_end = fe_vod_on_end,
};

static fe_vod_fetch *fe_vod_fetch_new(fe_vod_cache *c, fe_vod_obj *o, uint32_t idx,
                                      const fe_vod_fetch_opts *opts, fe_loop *l) {
  fe_vod_fetch *f = calloc(1, sizeof(*f));
  if (!f)
    return NULL;
  f->refs = 1;
  f->cache = c;
  f->loop = l;
  f->key = strdup(o->key);
  f->url = strdup(opts->url);
  f->path = strdup(o->path);
  if (!f->key || !f->url || !f->path) {
    free(f->key);
    free(f->url);
    free(f->path);
    free(f);
    return NULL;
  }
  memcpy(f->hash, o->hash, sizeof(f->hash));
  f->idx = idx;
  f->ttl = opts->ttl;
  f->no_store = opts->no_store;
  f->on_answer = opts->on_answer;
  f->answer_ud = opts->ud;
  f->gen = o->gen;
  f->connect_timeout = opts->connect_timeout;
  f->read_timeout = opts->read_timeout;
  f->tls = opts->tls;
  size_t blen = opts->base ? strlen(opts->base) : 0;
  if (opts->nbackups > 0 && blen && strncmp(opts->url, opts->base, blen) == 0) {
    const char *rest = opts->url + blen;
    f->alts = calloc((size_t)opts->nbackups, sizeof(char *));
    for (int i = 0; f->alts && i < opts->nbackups; i++) {
      size_t n = strlen(opts->backups[i]);
      int slash = n && opts->backups[i][n - 1] == '/';
      int need = rest[0] != '/' && !slash && opts->base[blen - 1] == '/';
      size_t len = n + strlen(rest) + 2;
      char *u = malloc(len);
      if (!u)
        break;
      snprintf(u, len, "%.*s%s%s", (int)(slash && rest[0] == '/' ? n - 1 : n), opts->backups[i],
               need ? "/" : "", rest);
      f->alts[f->nalts++] = u;
    }
  }
  f->onext = o->fetches;
  o->fetches = f;
  f->listed = 1;
  f->runs = 1;
  return f;
}

/* The first origin a fetch asks: the primary, unless it is marked down (a recent failure, any
 * fetch or stream) and a backup is not; when all are down, the primary all the same. A dead primary
 * then costs one connect timeout per back-off, not one per slice. */
static const char *fe_vod_fetch_first(fe_vod_fetch *f) {
  fe_health *h = f->loop->health;
  if (f->nalts == 0 || fe_health_usable(h, f->url))
    return f->url;
  for (int i = 0; i < f->nalts; i++) {
    if (fe_health_usable(h, f->alts[i])) {
      fe_debug("vod: %s slice %u: %s is marked down; asking %s", f->path, f->idx, f->url,
               f->alts[i]);
      f->alt = i + 1;
      return f->alts[i];
    }
  }
  return f->url;
}

int fe_vod_slice_get(fe_vod_cache *c, const char *key, uint32_t idx, const fe_vod_fetch_opts *opts,
                     fe_vod_waiter *w, fe_vod_file *file) {
  fe_vod_node *n = c->node;
  uint64_t slice_size = 0;
  char cond[512] = "";
  uv_mutex_lock(&c->mu);
  fe_vod_obj *o = fe_vod_find(c, key);
  fe_vod_slot *s = o && o->known && !opts->revalidate ? fe_vod_slot_at(o, idx, 0) : NULL;
  if (s && s->stored) {
    fe_vod_slice_path(c, o->hash, o->meta.version, idx, file->path, sizeof(file->path));
    file->size = s->size;
    file->ino = s->ino;
    file->mtime_ns = s->mtime_ns;
    fe_vod_lru_front(c, s);
    uv_mutex_unlock(&c->mu);
    return FE_VOD_SLICE_FILE;
  }
  for (fe_vod_fetch *f = o ? o->fetches : NULL; f; f = f->onext) {
    if (f->idx == idx && __atomic_load_n(&f->state, __ATOMIC_ACQUIRE) != FE_VOD_F_FAILED) {
      fe_vod_attach(f, w);
      uv_mutex_unlock(&c->mu);
      return FE_VOD_SLICE_FETCH;
    }
  }
  /* A 200 answer read on past its own slice reaches this one: wait for it to be stored. */
  for (fe_vod_fetch *f = o && o->known && !opts->revalidate ? o->fetches : NULL; f; f = f->onext) {
    if (__atomic_load_n(&f->tail, __ATOMIC_ACQUIRE) &&
        idx >= __atomic_load_n(&f->cover, __ATOMIC_ACQUIRE)) {
      fe_vod_attach(f, w);
      uv_mutex_unlock(&c->mu);
      return FE_VOD_SLICE_WAIT;
    }
  }
  if (__atomic_add_fetch(&n->fetches, 1, __ATOMIC_RELAXED) > FE_VOD_MAX_FETCHES) {
    __atomic_sub_fetch(&n->fetches, 1, __ATOMIC_RELAXED);
    if (!opts->wait_slot) {
      uv_mutex_unlock(&c->mu);
      return FE_VOD_EFULL;
    }
    /* Queued for the next slot that frees (c->mu, then n->mu: the order everywhere). */
    uv_mutex_lock(&n->mu);
    w->slot_node = n;
    w->slot_linked = 1;
    w->next = NULL;
    w->prev = n->slot_tail;
    if (n->slot_tail)
      n->slot_tail->next = w;
    else
      n->slot_head = w;
    n->slot_tail = w;
    /* A slot may have freed between the count and the lock: then it is ours at once. */
    if (__atomic_load_n(&n->fetches, __ATOMIC_RELAXED) < FE_VOD_MAX_FETCHES && n->slot_head == w)
      fe_vod_slot_give(n);
    uv_mutex_unlock(&n->mu);
    uv_mutex_unlock(&c->mu);
    return FE_VOD_SLICE_WAIT;
  }
  int made = !o;
  if (!o)
    o = fe_vod_obj_new(c, key, opts->client_path);
  fe_vod_fetch *f = o ? fe_vod_fetch_new(c, o, idx, opts, w->loop) : NULL;
  if (f)
    f->counted = 1;
  if (!f) {
    fe_vod_trash t = {0};
    if (o && made)
      fe_vod_obj_remove(c, o, &t); /* new and empty: nothing on disk */
    __atomic_sub_fetch(&n->fetches, 1, __ATOMIC_RELAXED);
    uv_mutex_unlock(&c->mu);
    for (size_t i = 0; i < t.n; i++)
      free(t.paths[i]);
    free(t.paths);
    return UV_ENOMEM;
  }
  /* The slice size of what is stored wins, so the object's slices stay aligned. */
  slice_size = o->known ? o->meta.slice_size : 0;
  if (opts->revalidate && o->known) {
    size_t k = 0;
    if (o->meta.etag[0])
      k += (size_t)snprintf(cond + k, sizeof(cond) - k, "If-None-Match: %s\r\n", o->meta.etag);
    if (o->meta.last_modified[0] && k < sizeof(cond))
      snprintf(cond + k, sizeof(cond) - k, "If-Modified-Since: %s\r\n", o->meta.last_modified);
  }
  uint64_t size = o->known ? o->meta.size : 0;
  fe_vod_attach(f, w);
  uv_mutex_unlock(&c->mu);

  f->meta.slice_size = slice_size ? slice_size : opts->slice_size;
  uint64_t first = (uint64_t)idx * f->meta.slice_size;
  uint64_t last = first + f->meta.slice_size - 1;
  if (size && last >= size)
    last = size - 1;
  snprintf(f->headers, sizeof(f->headers), "Range: bytes=%llu-%llu\r\n%s",
           (unsigned long long)first, (unsigned long long)last, cond);
  fe_origin_opts oo = {.connect_timeout = opts->connect_timeout,
                       .read_timeout = opts->read_timeout,
                       .max_tag_size = 1u << 20,
                       .extra_headers = f->headers,
                       .tls = f->tls};
  FE_METRIC_INC(&w->loop->metrics, vod_origin_requests);
  FE_METRIC_INC(&w->loop->metrics, origin_connects);
  f->cur = fe_vod_fetch_first(f);
  f->origin = fe_origin_open(w->loop, f->cur, &oo, &fe_vod_origin_cbs, f);
  if (!f->origin)
    fe_vod_fetch_fail(f, UV_ENOMEM);
  return FE_VOD_SLICE_FETCH;
}

/* ---- prefetch ------------------------------------------------------------------------------ */

/* A prefetch lives on its loop; it is started and stepped through its waiter in that loop's
 * mailbox, so any loop may hand it the turn. */
static void fe_vod_pf_next(fe_vod_node *n);

static void fe_vod_pf_finish(fe_vod_pf *p) {
  fe_vod_node *n = p->cache->node;
  fe_vod_waiter_detach(&p->w);
  free(p->key);
  free(p->url);
  free(p->path);
  free(p);
  uv_mutex_lock(&n->mu);
  n->pf_running--;
  uv_mutex_unlock(&n->mu);
  fe_vod_pf_next(n);
}

/* Slices one after another: stored ones are skipped, a missing one is fetched and waited for. */
static void fe_vod_pf_wake(fe_vod_waiter *w) {
  fe_vod_pf *p = (fe_vod_pf *)((char *)w - offsetof(fe_vod_pf, w));
  if (w->fetch && p->wait) {
    fe_vod_waiter_detach(w); /* stored, or the fetch ended: ask again */
    p->wait = 0;
  } else if (w->fetch) {
    int st = fe_vod_fetch_state(w->fetch);
    if (st == FE_VOD_F_HEAD || st == FE_VOD_F_BODY)
      return;
    fe_vod_waiter_detach(w);
    if (st == FE_VOD_F_FAILED) {
      fe_vod_pf_finish(p);
      return;
    }
    p->idx += st == FE_VOD_F_DONE;
  }
  for (;;) {
    fe_vod_meta m;
    int known = fe_vod_lookup(p->cache, p->key, fe_now(), &m) != FE_VOD_ABSENT;
    if (known && (uint64_t)p->idx * m.slice_size >= m.size) {
      fe_vod_pf_finish(p);
      return;
    }
    fe_vod_fetch_opts o = {.url = p->url, .client_path = p->path, .wait_slot = 1,
                           .connect_timeout = p->connect_timeout, .read_timeout = p->read_timeout,
                           .tls = p->tls, .ttl = p->ttl, .slice_size = p->slice_size};
    fe_vod_file file;
    int rc = fe_vod_slice_get(p->cache, p->key, p->idx, &o, &p->w, &file);
    if (rc != FE_VOD_SLICE_FILE) {
      if (rc < 0)
        fe_vod_pf_finish(p);
      p->wait = rc == FE_VOD_SLICE_WAIT;
      return;
    }
    p->idx++;
  }
}

static void fe_vod_pf_next(fe_vod_node *n) {
  for (;;) {
    uv_mutex_lock(&n->mu);
    fe_vod_pf *p = n->pf_running < FE_VOD_PREFETCH_CONCURRENCY ? n->pf_queue : NULL;
    if (p) {
      n->pf_queue = p->next;
      n->pf_running++;
    }
    uv_mutex_unlock(&n->mu);
    if (!p)
      return;
    fe_vod_box_push(n, &p->w);
  }
}

int fe_vod_prefetch(fe_vod_cache *c, fe_loop *l, const char *key, const fe_vod_fetch_opts *o) {
  fe_vod_pf *p = calloc(1, sizeof(*p));
  if (!p)
    return UV_ENOMEM;
  p->cache = c;
  p->key = strdup(key);
  p->url = strdup(o->url);
  p->path = strdup(o->client_path ? o->client_path : "");
  p->connect_timeout = o->connect_timeout;
  p->read_timeout = o->read_timeout;
  p->tls = o->tls;
  p->ttl = o->ttl;
  p->slice_size = o->slice_size;
  p->w.loop = l;
  p->w.wake = fe_vod_pf_wake;
  if (!p->key || !p->url || !p->path) {
    free(p->key);
    free(p->url);
    free(p->path);
    free(p);
    return UV_ENOMEM;
  }
  fe_vod_node *n = c->node;
  uv_mutex_lock(&n->mu);
  fe_vod_pf **pp = &n->pf_queue;
  while (*pp)
    pp = &(*pp)->next;
  *pp = p;
  uv_mutex_unlock(&n->mu);
  fe_vod_pf_next(n);
  return 0;
}
