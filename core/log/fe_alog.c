#include "log/fe_alog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log/fe_log.h"

typedef struct fe_alog_chunk {
  struct fe_alog_chunk *next;
  size_t len, cap;
  uint32_t lines;
  char data[];
} fe_alog_chunk;

struct fe_alog {
  char *path;
  int refs;                  /* atomic */
  int nloops;
  size_t queue_max;
  fe_alog_chunk **cur;       /* cur[i]: loop i's chunk, touched by that loop only */
  pthread_mutex_t mu;
  pthread_cond_t wake;       /* the writer: work, reopen or stop */
  pthread_cond_t done_cond;  /* fe_alog_close: the writer ended */
  /* under mu */
  fe_alog_chunk *head, *tail;
  size_t queued;             /* handed over and not written yet (taken by the writer included) */
  int reopen, stopping, done, waited;
  uint32_t lost;             /* atomic: lines the writer could not write, for a loop to count */
};

static fe_alog_chunk *fe_alog_chunk_new(size_t cap) {
  fe_alog_chunk *c = malloc(sizeof(*c) + cap);
  if (c) {
    c->next = NULL;
    c->len = 0;
    c->cap = cap;
    c->lines = 0;
  }
  return c;
}

static void fe_alog_free(fe_alog *a) {
  for (int i = 0; i < a->nloops; i++)
    free(a->cur[i]);
  while (a->head) {
    fe_alog_chunk *c = a->head;
    a->head = c->next;
    free(c);
  }
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->wake);
  pthread_cond_destroy(&a->done_cond);
  free(a->cur);
  free(a->path);
  free(a);
}

/* Blocking, on the writer thread only. -1 when the file cannot be opened (logged). */
static int fe_alog_open_fd(const fe_alog *a) {
  if (strcmp(a->path, "stderr") == 0)
    return dup(2);
  int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    fe_error("access_log \"%s\": cannot open: %s (lines are dropped until it can)", a->path,
             strerror(errno));
  return fd;
}

/* Writes a chunk; returns the lines not (wholly) written. A full disk (ENOSPC) or any other
 * write error loses the rest of the chunk, as a dropped chunk would be; logged when it starts. */
static uint32_t fe_alog_write_all(const fe_alog *a, int fd, const fe_alog_chunk *c, int *failing) {
  const char *p = c->data;
  size_t len = c->len;
  if (fd < 0)
    return c->lines; /* the open failed (logged) */
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      if (!*failing)
        fe_error("access_log \"%s\": cannot write: %s (lines are dropped until it can)", a->path,
                 w < 0 ? strerror(errno) : "nothing written");
      *failing = 1;
      uint32_t n = 0;
      for (const char *e = p + len; p < e; p++)
        n += *p == '\n';
      return n;
    }
    p += w;
    len -= (size_t)w;
  }
  *failing = 0;
  return 0;
}

static void *fe_alog_run(void *arg) {
  fe_alog *a = arg;
  int fd = -1, tried = 0, failing = 0;
  pthread_mutex_lock(&a->mu);
  for (;;) {
    while (!a->head && !a->reopen && !a->stopping)
      pthread_cond_wait(&a->wake, &a->mu);
    fe_alog_chunk *list = a->head;
    a->head = a->tail = NULL;
    int reopen = a->reopen, stopping = a->stopping;
    a->reopen = 0;
    pthread_mutex_unlock(&a->mu);
    if (reopen && fd >= 0) {
      close(fd);
      fd = -1;
      tried = 0;
    }
    /* Opened lazily: a missing directory is retried at the next reopen, not on every chunk. */
    if (fd < 0 && (!tried || reopen) && list) {
      fd = fe_alog_open_fd(a);
      tried = 1;
    }
    size_t written = 0;
    uint32_t lost = 0;
    while (list) {
      fe_alog_chunk *c = list;
      list = c->next;
      lost += fe_alog_write_all(a, fd, c, &failing);
      written += c->len;
      free(c);
    }
    if (lost) /* counted by the next loop that flushes (the writer has no loop's metrics) */
      __atomic_add_fetch(&a->lost, lost, __ATOMIC_RELAXED);
    pthread_mutex_lock(&a->mu);
    a->queued -= written;
    if (stopping && !a->head)
      break;
  }
  a->done = 1;
  int waited = a->waited;
  pthread_cond_broadcast(&a->done_cond);
  pthread_mutex_unlock(&a->mu);
  if (fd >= 0)
    close(fd);
  if (!waited)
    fe_alog_free(a); /* nobody waits: the writer has the last word */
  return NULL;
}

fe_alog *fe_alog_open(const char *path, int nloops, size_t queue_max) {
  fe_alog *a = calloc(1, sizeof(*a));
  if (!a)
    return NULL;
  a->path = strdup(path);
  a->cur = calloc((size_t)nloops, sizeof(*a->cur));
  a->nloops = nloops;
  a->queue_max = queue_max;
  a->refs = 1;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->wake, NULL);
  pthread_cond_init(&a->done_cond, NULL);
  pthread_t t;
  if (!a->path || !a->cur || pthread_create(&t, NULL, fe_alog_run, a) != 0) {
    fe_alog_free(a);
    return NULL;
  }
  pthread_detach(t); /* a writer stuck on a dead device must never hold the exit */
  return a;
}

const char *fe_alog_path(const fe_alog *a) {
  return a->path;
}

void fe_alog_ref(fe_alog *a) {
  __atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED);
}

/* A full chunk to the writer's queue (under a->mu). */
static void fe_alog_enqueue(fe_alog *a, fe_alog_chunk *c) {
  if (a->tail)
    a->tail->next = c;
  else
    a->head = c;
  a->tail = c;
  a->queued += c->len;
}

static int fe_alog_release(fe_alog *a, int wait) {
  if (__atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return 0;
  pthread_mutex_lock(&a->mu);
  /* The loops are done with it: what they still held goes to the queue, unbounded this once. */
  for (int i = 0; i < a->nloops; i++) {
    fe_alog_chunk *c = a->cur[i];
    a->cur[i] = NULL;
    if (!c || c->len == 0) {
      free(c);
      continue;
    }
    fe_alog_enqueue(a, c);
  }
  a->stopping = 1;
  a->waited = wait;
  pthread_cond_signal(&a->wake);
  pthread_mutex_unlock(&a->mu);
  return 1;
}

void fe_alog_unref(fe_alog *a) {
  if (a)
    fe_alog_release(a, 0);
}

void fe_alog_close(fe_alog *a, double seconds) {
  if (!a || !fe_alog_release(a, 1))
    return;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)seconds;
  until.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&a->mu);
  while (!a->done)
    if (pthread_cond_timedwait(&a->done_cond, &a->mu, &until) == ETIMEDOUT)
      break;
  int done = a->done;
  if (!done)
    a->waited = 0; /* the writer frees it whenever it ends (maybe never: a stuck device) */
  pthread_mutex_unlock(&a->mu);
  if (done)
    fe_alog_free(a);
  else
    fe_warn("access_log \"%s\": the writer did not finish in %.0f s; its last lines are lost",
            a->path, seconds);
}

void fe_alog_reopen(fe_alog *a) {
  pthread_mutex_lock(&a->mu);
  a->reopen = 1;
  pthread_cond_signal(&a->wake);
  pthread_mutex_unlock(&a->mu);
}

uint32_t fe_alog_flush(fe_alog *a, int loop) {
  fe_alog_chunk *c = a->cur[loop];
  /* What the writer lost goes to whichever loop flushes first (each does every sweep). */
  uint32_t lost = 0;
  if (__atomic_load_n(&a->lost, __ATOMIC_RELAXED))
    lost = __atomic_exchange_n(&a->lost, 0, __ATOMIC_RELAXED);
  if (!c || c->len == 0)
    return lost;
  uint32_t dropped = 0;
  pthread_mutex_lock(&a->mu);
  if (a->queued + c->len > a->queue_max) {
    dropped = c->lines; /* the chunk stays the loop's, emptied */
  } else {
    fe_alog_enqueue(a, c);
    a->cur[loop] = NULL;
    pthread_cond_signal(&a->wake);
  }
  pthread_mutex_unlock(&a->mu);
  if (dropped) {
    c->len = 0;
    c->lines = 0;
  }
  return dropped + lost;
}

uint32_t fe_alog_append(fe_alog *a, int loop, const char *line, size_t len) {
  uint32_t dropped = 0;
  fe_alog_chunk *c = a->cur[loop];
  if (c && c->cap - c->len < len) {
    dropped = fe_alog_flush(a, loop);
    c = a->cur[loop];
  }
  if (!c || c->cap - c->len < len) {
    size_t cap = len > FE_ALOG_CHUNK ? len : FE_ALOG_CHUNK;
    fe_alog_chunk *n = fe_alog_chunk_new(cap);
    if (!n)
      return dropped + 1;
    if (c) { /* emptied but too small for this line */
      free(c);
    }
    a->cur[loop] = c = n;
  }
  memcpy(c->data + c->len, line, len);
  c->len += len;
  c->lines++;
  if (c->len >= FE_ALOG_CHUNK)
    dropped += fe_alog_flush(a, loop);
  return dropped;
}
