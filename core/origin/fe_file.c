#include "origin/fe_file.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "flv/fe_flv.h"
#include "origin/fe_origin.h"

/* A file is indexed once for every source: with the largest DataSize any config allows; each
 * source then checks the file's largest tag against its own max_tag_size. */
#define FE_FILE_MAX_TAG (1u << 30)

typedef struct fe_file_entry {
  fe_file f;                  /* first: what openers hold */
  struct fe_file_entry *next; /* the table's list, while listed */
  int listed;
  int refs;                   /* under the table's mutex */
  int loading;                /* its first opener reads it; others wait on the table's `loaded` */
  int rc;                     /* the read's result, once loaded */
  char *path;
  struct stat st;             /* what was on disk when it was read */
  uint8_t *data;
  fe_file_tag *tags;
  size_t cap;
} fe_file_entry;

struct fe_files {
  uv_mutex_t mu;
  uv_cond_t loaded;
  fe_file_entry *list;
};

fe_files *fe_files_new(void) {
  fe_files *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  if (uv_mutex_init(&t->mu) < 0) {
    free(t);
    return NULL;
  }
  if (uv_cond_init(&t->loaded) < 0) {
    uv_mutex_destroy(&t->mu);
    free(t);
    return NULL;
  }
  return t;
}

void fe_files_free(fe_files *t) {
  if (!t)
    return;
  assert(!t->list);
  uv_cond_destroy(&t->loaded);
  uv_mutex_destroy(&t->mu);
  free(t);
}

static void fe_file_entry_free(fe_file_entry *e) {
  free(e->path);
  free(e->data);
  free(e->tags);
  free(e);
}

/* ---- reading and indexing ------------------------------------------------------------------ */

static int fe_file_on_tag(void *ud, const fe_flv_tag *tag) {
  fe_file_entry *e = ud;
  if (e->f.ntags == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 256;
    fe_file_tag *t = realloc(e->tags, cap * sizeof(*t));
    if (!t)
      return FE_FLV_ENOMEM;
    e->tags = t;
    e->cap = cap;
  }
  fe_file_tag *ft = &e->tags[e->f.ntags++];
  ft->off = (uint32_t)(tag->data - e->data);
  ft->len = FE_FLV_TAG_OVERHEAD + tag->size;
  ft->ts = tag->timestamp;
  ft->skip_on_loop = (tag->flags & (FE_FLV_SEQ_HEADER | FE_FLV_METADATA)) != 0;
  if (tag->size > e->f.max_size)
    e->f.max_size = tag->size;
  return 0;
}

/* Reads and indexes the whole file; each pass of each stream then replays it from memory. */
static int fe_file_read(fe_file_entry *e) {
  FILE *f = fopen(e->path, "rb");
  if (!f)
    return errno == ENOENT ? FE_ORIGIN_ENOTFOUND : FE_ORIGIN_EFILE;
  int rc = FE_ORIGIN_EFILE;
  if (fseek(f, 0, SEEK_END) != 0)
    goto out;
  long size = ftell(f);
  if (size < FE_FLV_FILE_HEADER_SIZE || size > (1L << 31))
    goto out;
  rewind(f);
  e->data = malloc((size_t)size);
  if (!e->data || fread(e->data, 1, (size_t)size, f) != (size_t)size)
    goto out;
  e->f.data = e->data;
  e->f.len = (size_t)size;
  fe_flv_parser p;
  fe_flv_parser_init(&p, FE_FILE_MAX_TAG);
  /* Fed whole, the parser hands out pointers into the file itself. */
  int prc = fe_flv_parser_feed(&p, e->data, e->f.len, fe_file_on_tag, e);
  if (prc == 0)
    prc = fe_flv_parser_finish(&p);
  fe_flv_parser_free(&p);
  if (prc < 0 || e->f.ntags == 0)
    goto out;
  e->f.tags = e->tags;
  uint32_t first = e->tags[0].ts, last = e->tags[e->f.ntags - 1].ts;
  uint32_t gap = e->f.ntags > 1 ? (last - first) / (uint32_t)(e->f.ntags - 1) : 40;
  e->f.loop_len = last - first + (gap ? gap : 1);
  rc = 0;
out:
  fclose(f);
  return rc;
}

/* ---- the table ----------------------------------------------------------------------------- */

static int fe_file_same(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Off the list: openers from now on read the file again; holders keep this copy. */
static void fe_files_unlist(fe_files *t, fe_file_entry *e) {
  if (!e->listed)
    return;
  fe_file_entry **pp = &t->list;
  while (*pp != e)
    pp = &(*pp)->next;
  *pp = e->next;
  e->listed = 0;
}

/* Under the mutex. */
static void fe_files_drop(fe_files *t, fe_file_entry *e) {
  if (--e->refs > 0)
    return;
  fe_files_unlist(t, e);
  fe_file_entry_free(e);
}

static fe_file_entry *fe_file_entry_new(const char *path, const struct stat *st) {
  fe_file_entry *e = calloc(1, sizeof(*e));
  if (!e)
    return NULL;
  e->path = strdup(path);
  if (!e->path) {
    free(e);
    return NULL;
  }
  e->st = *st;
  e->refs = 1;
  return e;
}

int fe_file_open(fe_files *t, const char *path, const fe_file **out) {
  struct stat st;
  *out = NULL;
  if (stat(path, &st) < 0)
    return errno == ENOENT ? FE_ORIGIN_ENOTFOUND : FE_ORIGIN_EFILE;
  if (!S_ISREG(st.st_mode))
    return FE_ORIGIN_EFILE;
  if (!t) {
    fe_file_entry *e = fe_file_entry_new(path, &st);
    int rc = e ? fe_file_read(e) : FE_ORIGIN_EFILE;
    if (rc == 0)
      *out = &e->f;
    else if (e)
      fe_file_entry_free(e);
    return rc;
  }
  uv_mutex_lock(&t->mu);
  fe_file_entry *e = t->list;
  while (e && strcmp(e->path, path) != 0)
    e = e->next;
  if (e && !fe_file_same(&e->st, &st)) {
    fe_files_unlist(t, e);
    e = NULL;
  }
  if (e) {
    e->refs++;
    while (e->loading)
      uv_cond_wait(&t->loaded, &t->mu);
    int rc = e->rc;
    if (rc == 0)
      *out = &e->f;
    else
      fe_files_drop(t, e);
    uv_mutex_unlock(&t->mu);
    return rc;
  }
  e = fe_file_entry_new(path, &st);
  if (!e) {
    uv_mutex_unlock(&t->mu);
    return FE_ORIGIN_EFILE;
  }
  e->loading = 1;
  e->listed = 1;
  e->next = t->list;
  t->list = e;
  uv_mutex_unlock(&t->mu);
  /* Read without the lock: other files open meanwhile; openers of this one wait for it. */
  int rc = fe_file_read(e);
  uv_mutex_lock(&t->mu);
  e->loading = 0;
  e->rc = rc;
  if (rc == 0) {
    *out = &e->f;
  } else {
    fe_files_unlist(t, e); /* not kept: the next opener tries again */
    fe_files_drop(t, e);
  }
  uv_cond_broadcast(&t->loaded);
  uv_mutex_unlock(&t->mu);
  return rc;
}

void fe_file_unref(fe_files *t, const fe_file *f) {
  fe_file_entry *e = (fe_file_entry *)f;
  if (!t) {
    fe_file_entry_free(e);
    return;
  }
  uv_mutex_lock(&t->mu);
  fe_files_drop(t, e);
  uv_mutex_unlock(&t->mu);
}
