/*
 * An in-memory stream for the targets that drive one server connection (fuzz_conn, fuzz_h2): an
 * fe_net_type of the harness's own (fe_conn_open's seam), so that an input costs no system call
 * of a socket. Half the time of a socketpair went to the kernel.
 *
 * It behaves as a stream socket does for its owner:
 * - What the client sends waits, up to FUZZ_MEM_IN_CAP bytes (a full socket: the client cannot
 *   send more), until the server reads; a read delivers what is there, at most 64 KiB (the
 *   loop's read buffer), in a buffer of exactly that size (so ASan sees a read past it). After
 *   the client's end, and once all was read, a read gets UV_EOF.
 * - The server's writes land in the client's buffer (`out`), up to `cap` bytes the client has not
 *   read yet (SIZE_MAX: no bound; a small number is a small socket buffer). What does not fit is
 *   queued; a write's callback runs once all of it landed, never within the writev call;
 *   try_writev takes nothing while writes are queued (libuv's rules).
 * - Reads, write callbacks and the close callback run from within the loop (an idle handle, active
 *   only while there is something to do), as libuv's do; a close cancels the queued writes first
 *   (UV_ECANCELED).
 * One stream at a time.
 */
#ifndef FUZZ_MEM_H
#define FUZZ_MEM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/fe_net.h"

#include "fuzz_check.h"

#define FUZZ_MEM_IN_CAP (208u * 1024) /* about what an AF_UNIX socket holds */
#define FUZZ_MEM_READ_MAX 65536

typedef struct fuzz_mem {
  fe_net *net;     /* the server's stream, from its first call until its close callback */
  int reading, closing, closed;
  /* client -> server: sent, not read yet (in fuzz_mem_in) */
  size_t in_off, in_len;
  int in_eof, eof_sent;
  /* server -> client */
  char *out; /* everything the server wrote */
  size_t out_len, out_cap;
  size_t cap, unread; /* the bytes the client has not read may be up to cap */
  fe_net_write *head, *tail;
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

/* Lands what fits of w's buffers (w->bufs: its own copy, advanced as they land). */
static void fuzz_mem_land_write(fuzz_mem *m, fe_net_write *w) {
  while (w->i < w->nbufs) {
    uv_buf_t *b = &w->bufs[w->i];
    size_t n = b->len < fuzz_mem_room(m) ? b->len : fuzz_mem_room(m);
    if (n == 0 && b->len > 0)
      return;
    fuzz_mem_land(m, b->base, n);
    b->base += n, b->len -= n;
    m->queued -= n;
    if (b->len == 0)
      w->i++;
  }
}

static int fuzz_mem_busy(const fuzz_mem *m) {
  if (!m->net || m->closing)
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
    fe_net_write *w = m->head;
    fuzz_mem_land_write(m, w);
    if (w->i < w->nbufs)
      break;
    m->head = w->next;
    if (!m->head)
      m->tail = NULL;
    free(w->bufs);
    w->bufs = NULL;
    w->cb(w, 0);
  }
  if (m->net && !m->closing && m->reading) {
    if (m->in_len > 0) {
      size_t n = m->in_len < FUZZ_MEM_READ_MAX ? m->in_len : FUZZ_MEM_READ_MAX;
      char *buf = malloc(n);
      FUZZ_CHECK(buf != NULL);
      memcpy(buf, fuzz_mem_in + m->in_off, n);
      m->in_off += n, m->in_len -= n;
      m->net->on_read(m->net, (ssize_t)n, buf);
      free(buf);
    } else if (m->in_eof && !m->eof_sent) {
      m->eof_sent = 1;
      m->net->on_read(m->net, UV_EOF, NULL);
    }
  }
  fuzz_mem_update(m);
}

/* ---- the server's end: the type --------------------------------------------------------------- */

static fuzz_mem *fuzz_mem_of(fe_net *n) {
  FUZZ_CHECK(fuzz_m.net == NULL || fuzz_m.net == n);
  fuzz_m.net = n;
  return &fuzz_m;
}

static int fuzz_mem_read_start(fe_net *n) {
  fuzz_mem *m = fuzz_mem_of(n);
  m->reading = 1;
  fuzz_mem_update(m);
  return 0;
}

static void fuzz_mem_read_stop(fe_net *n) {
  fuzz_mem *m = fuzz_mem_of(n);
  m->reading = 0;
  fuzz_mem_update(m);
}

static int fuzz_mem_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs) {
  fuzz_mem *m = fuzz_mem_of(n);
  if (m->closing)
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

static int fuzz_mem_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs) {
  fuzz_mem *m = fuzz_mem_of(n);
  if (m->closing)
    return UV_EBADF;
  w->bufs = malloc((nbufs ? nbufs : 1) * sizeof(*bufs));
  FUZZ_CHECK(w->bufs != NULL);
  memcpy(w->bufs, bufs, nbufs * sizeof(*bufs));
  w->nbufs = nbufs;
  w->i = 0;
  w->next = NULL;
  for (unsigned i = 0; i < nbufs; i++)
    m->queued += bufs[i].len;
  if (!m->head)
    fuzz_mem_land_write(m, w); /* as uv_write does with an empty queue */
  if (m->tail)
    m->tail->next = w;
  else
    m->head = w;
  m->tail = w;
  fuzz_mem_update(m);
  return 0;
}

static size_t fuzz_mem_queued(const fe_net *n) {
  (void)n;
  return fuzz_m.queued;
}

static void fuzz_mem_on_closed(uv_handle_t *h) {
  fe_net *n = h->data;
  fuzz_mem *m = &fuzz_m;
  /* As libuv: a write that went out whole reports success, the rest are cancelled. */
  m->cut = m->queued > 0;
  while (m->head) {
    fe_net_write *w = m->head;
    int whole = w->i == w->nbufs;
    m->head = w->next;
    free(w->bufs);
    w->bufs = NULL;
    w->cb(w, whole ? 0 : UV_ECANCELED);
  }
  m->tail = NULL;
  m->queued = 0;
  m->net = NULL;
  m->closed = 1;
  m->eof = 1;
  if (n->on_close)
    n->on_close(n);
}

static void fuzz_mem_close(fe_net *n, int reset) {
  (void)reset; /* the bytes that landed stay readable, as an AF_UNIX socket's do */
  fuzz_mem *m = fuzz_mem_of(n);
  m->closing = 1;
  m->reading = 0;
  uv_idle_stop(&fuzz_mem_pump);
  uv_close((uv_handle_t *)&n->tcp, fuzz_mem_on_closed);
}

static void fuzz_mem_connected(fe_net *n) {
  (void)n;
  FUZZ_CHECK(!"the in-memory stream is a server's: it never connects");
}

static const fe_net_type fuzz_mem_type = {
    .name = "fuzz-mem",
    .read_start = fuzz_mem_read_start,
    .read_stop = fuzz_mem_read_stop,
    .try_writev = fuzz_mem_try_writev,
    .writev = fuzz_mem_writev,
    .queued = fuzz_mem_queued,
    .close = fuzz_mem_close,
    .connected = fuzz_mem_connected,
};

/* ---- the client's end ------------------------------------------------------------------------- */

/* Once per process, on the loop the connections live on. */
static void fuzz_mem_init(uv_loop_t *loop) {
  FUZZ_CHECK(uv_idle_init(loop, &fuzz_mem_pump) == 0);
}

/* A new stream (the previous one closed): cap bytes the client leaves unread at most. */
static void fuzz_mem_reset(size_t cap) {
  fuzz_mem *m = &fuzz_m;
  FUZZ_CHECK(m->net == NULL && m->head == NULL);
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
}

/* Sends n bytes; returns how many the stream took: fewer when it is full, 0 when the server has
 * closed. */
static size_t fuzz_mem_send(const void *p, size_t n) {
  fuzz_mem *m = &fuzz_m;
  if (m->closing || m->closed || m->in_eof)
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
static void fuzz_mem_read(void) {
  fuzz_m.unread = 0;
  fuzz_mem_update(&fuzz_m);
}

#endif
