/*
 * An in-memory stream for the targets that drive one server stream (fuzz_conn, fuzz_h2 through an
 * fe_net_type of their own given to fe_conn_open, in fuzz_worker.h; fuzz_tls through libuv's
 * stream calls, wrapped at link time), so that an input costs no system call of a socket: half
 * the time of a socketpair went to the kernel.
 *
 * It behaves as a stream socket does for its owner:
 * - What the client sends waits, up to FUZZ_MEM_IN_CAP bytes (a full socket: the client cannot
 *   send more), until the server reads; a read delivers what is there, at most 64 KiB (the
 *   loop's read buffer). After the client's end, and once all was read, a read gets UV_EOF.
 * - The server's writes land in the client's buffer (`out`), up to `cap` bytes the client has not
 *   read yet (SIZE_MAX: no bound; a small number is a small socket buffer). What does not fit is
 *   queued; a write's callback runs once all of it landed, never within the write call;
 *   a try-write takes nothing while writes are queued (libuv's rules).
 * - Reads, write callbacks and the close callback run from within the loop (an idle handle, active
 *   only while there is something to do), as libuv's do; a close ends the queued writes first, as
 *   libuv does: success for one that went out whole, UV_ECANCELED for the others.
 * One stream at a time. The adapter that makes it a stream gives `deliver` (a read, to the owner).
 */
#ifndef FUZZ_MEM_H
#define FUZZ_MEM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "fuzz_check.h"

#define FUZZ_MEM_IN_CAP (208u * 1024) /* about what an AF_UNIX socket holds */
#define FUZZ_MEM_READ_MAX 65536

/* A queued write: a copy of its buffers, advanced as they land, and how its owner hears the end. */
typedef struct fuzz_mem_wr {
  struct fuzz_mem_wr *next;
  uv_buf_t *bufs;
  unsigned nbufs, i;
  void *req; /* the owner's request (fe_net_write, uv_write_t) */
  void (*done)(void *req, int status);
} fuzz_mem_wr;

typedef struct fuzz_mem {
  int open; /* from fuzz_mem_reset until the close callback */
  int reading, closing;
  void (*deliver)(ssize_t nread, const char *data); /* a read (or UV_EOF), to the owner */
  /* client -> server: sent, not read yet (in fuzz_mem_in) */
  size_t in_off, in_len;
  int in_eof, eof_sent;
  /* server -> client */
  char *out; /* everything the server wrote */
  size_t out_len, out_cap;
  size_t cap, unread; /* the bytes the client has not read may be up to cap */
  fuzz_mem_wr *head, *tail;
  size_t queued;
  int eof; /* the client saw the server's end */
  int cut; /* the close dropped bytes of queued writes: the output may end mid-frame */
} fuzz_mem;

static fuzz_mem fuzz_m;
static uint8_t fuzz_mem_in[FUZZ_MEM_IN_CAP];
static uv_idle_t fuzz_mem_pump; /* runs reads, write callbacks and the close from within the loop */

static size_t fuzz_mem_room(const fuzz_mem *m) {
  return m->cap == SIZE_MAX ? SIZE_MAX : m->cap > m->unread ? m->cap - m->unread : 0;
}

static void fuzz_mem_land(fuzz_mem *m, const void *p, size_t n) {
  if (m->out_cap - m->out_len < n) {
    while (m->out_cap - m->out_len < n)
      m->out_cap = m->out_cap ? m->out_cap * 2 : 131072;
    m->out = realloc(m->out, m->out_cap);
    FUZZ_CHECK(m->out != NULL);
  }
  memcpy(m->out + m->out_len, p, n);
  m->out_len += n;
  if (m->cap != SIZE_MAX)
    m->unread += n;
}

/* Lands what fits of wr's buffers. */
static void fuzz_mem_land_write(fuzz_mem *m, fuzz_mem_wr *wr) {
  while (wr->i < wr->nbufs) {
    uv_buf_t *b = &wr->bufs[wr->i];
    size_t n = b->len < fuzz_mem_room(m) ? b->len : fuzz_mem_room(m);
    if (n == 0 && b->len > 0)
      return;
    fuzz_mem_land(m, b->base, n);
    b->base += n, b->len -= n;
    m->queued -= n;
    if (b->len == 0)
      wr->i++;
  }
}

static int fuzz_mem_busy(const fuzz_mem *m) {
  if (!m->open || m->closing)
    return 0;
  if (m->reading && (m->in_len > 0 || (m->in_eof && !m->eof_sent)))
    return 1;
  return m->head && (m->head->i == m->head->nbufs || fuzz_mem_room(m) > 0);
}

static void fuzz_mem_pump_cb(uv_idle_t *h);

static void fuzz_mem_update(fuzz_mem *m) {
  if (fuzz_mem_busy(m))
    uv_idle_start(&fuzz_mem_pump, fuzz_mem_pump_cb);
  else
    uv_idle_stop(&fuzz_mem_pump);
}

static void fuzz_mem_pump_cb(uv_idle_t *h) {
  (void)h;
  fuzz_mem *m = &fuzz_m;
  /* The writes that landed whole are done. */
  while (m->head && !m->closing) {
    fuzz_mem_wr *wr = m->head;
    fuzz_mem_land_write(m, wr);
    if (wr->i < wr->nbufs)
      break;
    m->head = wr->next;
    if (!m->head)
      m->tail = NULL;
    void *req = wr->req;
    void (*done)(void *, int) = wr->done;
    free(wr->bufs);
    free(wr);
    done(req, 0);
  }
  if (m->open && !m->closing && m->reading) {
    if (m->in_len > 0) {
      size_t n = m->in_len < FUZZ_MEM_READ_MAX ? m->in_len : FUZZ_MEM_READ_MAX;
      const char *p = (const char *)fuzz_mem_in + m->in_off;
      m->in_off += n, m->in_len -= n; /* the client sends only between loop runs */
      m->deliver((ssize_t)n, p);
    } else if (m->in_eof && !m->eof_sent) {
      m->eof_sent = 1;
      m->deliver(UV_EOF, NULL);
    }
  }
  fuzz_mem_update(m);
}

/* ---- the server's end, for the adapters ------------------------------------------------------ */

static void fuzz_mem_set_reading(int on) {
  fuzz_m.reading = on;
  fuzz_mem_update(&fuzz_m);
}

/* A try-write: the bytes taken now (0 while writes are queued or when none fit), or UV_EBADF. */
static int fuzz_mem_try(const uv_buf_t *bufs, unsigned nbufs) {
  fuzz_mem *m = &fuzz_m;
  if (m->closing || !m->open)
    return UV_EBADF;
  if (m->head)
    return 0;
  size_t done = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t k = bufs[i].len < fuzz_mem_room(m) ? bufs[i].len : fuzz_mem_room(m);
    fuzz_mem_land(m, bufs[i].base, k);
    done += k;
    if (k < bufs[i].len)
      break;
  }
  return (int)done;
}

/* A write: what fits lands now (as uv_write does with an empty queue), done(req, status) later. */
static int fuzz_mem_write(void *req, void (*done)(void *, int), const uv_buf_t *bufs,
                          unsigned nbufs) {
  fuzz_mem *m = &fuzz_m;
  if (m->closing || !m->open)
    return UV_EBADF;
  fuzz_mem_wr *wr = calloc(1, sizeof(*wr));
  FUZZ_CHECK(wr != NULL);
  wr->bufs = malloc((nbufs ? nbufs : 1) * sizeof(*bufs));
  FUZZ_CHECK(wr->bufs != NULL);
  memcpy(wr->bufs, bufs, nbufs * sizeof(*bufs));
  wr->nbufs = nbufs;
  wr->req = req;
  wr->done = done;
  for (unsigned i = 0; i < nbufs; i++)
    m->queued += bufs[i].len;
  if (!m->head)
    fuzz_mem_land_write(m, wr);
  if (m->tail)
    m->tail->next = wr;
  else
    m->head = wr;
  m->tail = wr;
  fuzz_mem_update(m);
  return 0;
}

/* The close has begun (the adapter then closes its handle). */
static void fuzz_mem_closing(void) {
  fuzz_m.closing = 1;
  fuzz_m.reading = 0;
  uv_idle_stop(&fuzz_mem_pump);
}

/* The handle's close callback runs: the queued writes end first, as libuv ends them. */
static void fuzz_mem_closed(void) {
  fuzz_mem *m = &fuzz_m;
  m->cut = m->queued > 0;
  while (m->head) {
    fuzz_mem_wr *wr = m->head;
    int whole = wr->i == wr->nbufs;
    m->head = wr->next;
    void *req = wr->req;
    void (*done)(void *, int) = wr->done;
    free(wr->bufs);
    free(wr);
    done(req, whole ? 0 : UV_ECANCELED);
  }
  m->tail = NULL;
  m->queued = 0;
  m->open = 0;
  m->eof = 1;
}

/* ---- the client's end ------------------------------------------------------------------------- */

/* Once per process, on the loop the server's streams live on. */
static void fuzz_mem_init(uv_loop_t *loop) {
  FUZZ_CHECK(uv_idle_init(loop, &fuzz_mem_pump) == 0);
}

/* A new stream (the previous one closed) whose reads go to deliver: cap bytes the client leaves
 * unread at most. */
static void fuzz_mem_reset(void (*deliver)(ssize_t, const char *), size_t cap) {
  fuzz_mem *m = &fuzz_m;
  FUZZ_CHECK(!m->open && m->head == NULL);
  char *out = m->out; /* kept: its room is needed again */
  size_t out_cap = m->out_cap;
  memset(m, 0, sizeof(*m));
  if (!out) { /* never NULL: the checks do arithmetic on it */
    out_cap = 131072;
    out = malloc(out_cap);
    FUZZ_CHECK(out != NULL);
  }
  m->out = out;
  m->out_cap = out_cap;
  m->cap = cap;
  m->deliver = deliver;
  m->open = 1;
}

/* Sends n bytes; returns how many the stream took: fewer when it is full, 0 when the server has
 * closed. */
static size_t fuzz_mem_send(const void *p, size_t n) {
  fuzz_mem *m = &fuzz_m;
  if (m->closing || !m->open || m->in_eof)
    return 0;
  if (m->in_off > 0) {
    memmove(fuzz_mem_in, fuzz_mem_in + m->in_off, m->in_len);
    m->in_off = 0;
  }
  size_t room = FUZZ_MEM_IN_CAP - m->in_len;
  if (n > room)
    n = room;
  memcpy(fuzz_mem_in + m->in_len, p, n);
  m->in_len += n;
  fuzz_mem_update(m);
  return n;
}

/* The client's end of sending (shutdown(SHUT_WR)). */
static void fuzz_mem_shutdown(void) {
  fuzz_m.in_eof = 1;
  fuzz_mem_update(&fuzz_m);
}

/* The client reads all that landed: room for the server's queued writes. */
static inline void fuzz_mem_read(void) {
  fuzz_m.unread = 0;
  fuzz_mem_update(&fuzz_m);
}

#endif
