/*
 * VOD: FLV files from an origin through the node's cache (vod/). A request is looked up (after
 * the `cache` hook's lookup call), its answer decided from the object's meta (HIT, or the origin's
 * head on a MISS, or a revalidation's answer: EXPIRED, STALE), then its body written as a list of
 * segments: memory bytes (the head, multipart part heads, a seek's FLV header and prefix) and
 * ranges of the object, each slice read from its file in the thread pool or from the fetch in
 * flight as its bytes arrive. One write in flight at a time; the next slice is looked at only when
 * the previous one is written.
 */
#define _GNU_SOURCE /* preadv2, RWF_NOWAIT */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <linux/openat2.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flv/fe_flv.h"
#include "flv/fe_flv_meta.h"
#include "http/fe_http2.h"
#include "http/fe_http_handlers.h"
#include "http/fe_http_range.h"
#include "log/fe_log.h"
#include "vod/fe_vod.h"

#define FE_VOD_READ FE_LOOP_BIG_BUF /* one read of a stored slice (256 KiB) */
#if defined(__SANITIZE_THREAD__)
#define FE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FE_TSAN 1
#endif
#endif
#ifndef FE_TSAN
#define FE_TSAN 0
#endif
#define FE_VOD_SENDFILE (1u << 20) /* the most one sendfile in the thread pool sends */
#define FE_VOD_SEEK_HEAD (4u << 20) /* the most of a file's head read to find its keyframes */
#define FE_VOD_BOUNDARY "flvedge-byteranges-7d1c0e"
#define FE_VOD_MAX_SEGS (2 * FE_RANGE_MAX + 4)

typedef struct fe_vseg {
  const char *mem;   /* memory bytes, or NULL: the object's bytes from off */
  uint64_t off, len;
} fe_vseg;

enum { FE_VP_META, FE_VP_SEEKHEAD, FE_VP_BODY };

#define FE_VREQ_BYPASS_TAG 32 /* "#bypass-" and a request id in hex, with room to spare */

typedef struct fe_vreq {
  fe_conn *c;          /* NULL once the connection closed */
  fe_loop *loop;
  fe_vod_cache *cache;
  const fe_resource *res;
  int resource;        /* index, for the hook */
  char *key, *url, *path; /* the cache key, the origin URL, the client's path: in strs */
  size_t key_cap, url_cap;
  char *strs;             /* one allocation, sized for this request */
  int keep, head_only, hook;
  int phase;
  int cstatus;         /* FE_VOD_CS_* */
  fe_vod_meta meta;
  fe_vod_meta old;     /* the stored meta of an expired object */
  fe_vod_fetch_opts fo;
  fe_vod_waiter w;
  uint32_t w_idx;      /* the slice w is attached for */
  int w_wait;          /* w waits for a slice another fetch stores on its way, or for a fetch
                          slot (FE_VOD_SLICE_WAIT): when woken, ask again */
  uint32_t meta_idx;   /* the first slice, whose fetch gives the meta */
  int meta_expired;    /* the stored object had expired: revalidate, STALE when the origin fails */
  /* the body */
  fe_vseg segs[FE_VOD_MAX_SEGS];
  int nseg, seg;
  uint64_t seg_done;
  char *mem;           /* the head and part heads, one allocation */
  /* a stored slice being read */
  uv_file fd;
  uint32_t fd_idx;
  fe_vod_file file;
  uv_work_t work;
  int open_rc;
  uv_fs_t fs;
  uint8_t *rbuf;
  /* the seek by time: the file's first bytes */
  uint8_t *seekbuf;
  uint64_t seek_len;
  double seek_time;
  uint64_t seek_bytes; /* ?start=N in bytes; 0: none */
  int seek;            /* 1: bytes, 2: time */
  fe_net_write wreq;
  uint64_t wlen;
  fe_deferred defer;   /* freed at the loop's safe point after a write failed at once */
  const char *pre;     /* a head held back to go in the writev of the bytes after it */
  uint64_t pre_len;
  /* sendfile: in the thread pool to the socket (non-blocking); when the socket is full, a poll
   * on a dup of it waits until it takes more */
  int sock;            /* the socket for sendfile, -1: read and write instead (TLS) */
  int pfd;             /* the dup polled, -1 until the first wait */
  uv_poll_t poll;
  uint64_t wait_since; /* loop ms when the wait for writability began; 0: not waiting */
  uint64_t sf_off, sf_len;
  ssize_t sf_rc;       /* what the pool's sendfile returned (bytes, or a libuv error) */
  int io;              /* a write, read, open or close in flight */
  int closed;
  uint64_t body_sent;
} fe_vreq;

static void fe_vreq_pump(fe_vreq *v);
static void fe_vreq_decide(fe_vreq *v);

static double fe_vod_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- path checks --------------------------------------------------------------------------- */

/* No client byte may climb out of the prefix or smuggle a separator past us: `..` segments,
 * encoded dots and slashes, backslashes, NUL and control bytes are refused before anything. */
static const char *fe_vod_path_bad(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch < 0x20 || ch >= 0x7f)
      return "control or non-ASCII byte in the path";
    if (ch == '\\')
      return "backslash in the path";
    if (ch == '%' && i + 2 < len) {
      char a = p[i + 1], b = (char)(p[i + 2] | 0x20);
      if ((a == '2' && (b == 'e' || b == 'f')) || (a == '5' && b == 'c') || (a == '0' && b == '0'))
        return "encoded dot, slash, backslash or NUL in the path";
    }
    int seg_start = i == 0 || p[i - 1] == '/';
    if (seg_start && ch == '.' && i + 1 < len && p[i + 1] == '.' && (i + 2 == len || p[i + 2] == '/'))
      return "\"..\" segment in the path";
  }
  return NULL;
}

int fe_vod_prepare(fe_conn *c, const fe_resource *res, const char *rest, size_t len) {
  int keep = fe_conn_keep_alive(c);
  const char *why = fe_vod_path_bad(c->view.path.p, c->view.path.len);
  if (why) {
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "400 bad request: %s\n", why);
    fe_conn_respond(c, 400, NULL, NULL, msg, (size_t)n, !keep);
    return -1;
  }
  if (len == 0 || rest[len - 1] == '/') {
    fe_conn_respond(c, 404, NULL, NULL, "404 not a file\n", 15, !keep);
    return -1;
  }
  return 0;
}

/* ---- the socket's duplicate ---------------------------------------------------------------- */

/* The duplicate of a client's socket that the pool sends to and the loop polls. Under
 * ThreadSanitizer both ends are raw system calls, as libuv's own close of a socket is: it never
 * sees those closes, so a number one loop's socket just had, taken again here by another loop,
 * looked to it like a race on the descriptor (the kernel orders the two). */
static int fe_vreq_dup(int fd) {
#if FE_TSAN
  return (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
#else
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
#endif
}

static void fe_vreq_close_dup(int fd) {
#if FE_TSAN
  syscall(SYS_close, fd);
#else
  close(fd);
#endif
}

/* ---- the end of an answer ------------------------------------------------------------------ */

static void fe_vreq_release(fe_vreq *v);

static void fe_vreq_on_poll_closed(uv_handle_t *h) {
  fe_vreq *v = h->data;
  fe_vreq_close_dup(v->pfd);
  v->pfd = -1;
  fe_vreq_release(v);
}

/* The poll handle (when there is one) goes through libuv's close first. */
static void fe_vreq_free(fe_vreq *v) {
  if (v->pfd >= 0) {
    v->poll.data = v;
    uv_close((uv_handle_t *)&v->poll, fe_vreq_on_poll_closed);
    return;
  }
  fe_vreq_release(v);
}

static void fe_vreq_release(fe_vreq *v) {
  fe_vod_waiter_detach(&v->w);
  if (v->fd >= 0) {
    uv_fs_t req;
    uv_fs_close(NULL, &req, v->fd, NULL); /* a regular file: close does not wait for the disk */
    uv_fs_req_cleanup(&req);
    v->fd = -1;
  }
  free(v->mem);
  free(v->strs);
  fe_loop_big_put(v->loop, v->rbuf);
  free(v->seekbuf);
  free(v);
}

/* The connection went away: what is in flight comes back to a request without connection. */
static void fe_vreq_on_conn_close(fe_conn *c) {
  fe_vreq *v = c->kind_data;
  c->kind_data = NULL;
  c->on_sweep = NULL;
  v->c = NULL;
  v->closed = 1;
  if (v->wait_since) { /* no callback comes for a poll that is stopped */
    uv_poll_stop(&v->poll);
    v->wait_since = 0;
    v->io = 0;
  }
  if (v->w.fetch)
    fe_vod_fetch_forget_answer(v->w.fetch, v);
  if (!v->io)
    fe_vreq_free(v);
}

/* The whole answer is written: the next request may come. */
static void fe_vreq_finish(fe_vreq *v) {
  fe_conn *c = v->c;
  if (v->w.fetch)
    fe_vod_fetch_forget_answer(v->w.fetch, v);
  c->on_close = NULL;
  c->on_sweep = NULL;
  c->kind_data = NULL;
  fe_conn_request_done(c);
  int keep = v->keep;
  fe_vreq_free(v);
  fe_conn_answer_end(c, !keep);
}

/* The body cannot be completed: the client sees it cut short. */
static void fe_vreq_abort(fe_vreq *v, const char *why) {
  fe_warn("vod %s: answer cut short: %s", v->path, why);
  fe_conn_close(v->c); /* runs fe_vreq_on_conn_close */
}

/* A finite answer instead of the body (errors, 304, 412, 416). */
static void fe_vreq_respond(fe_vreq *v, int status, const char *ctype, const char *extra,
                            const char *body, size_t len) {
  fe_conn *c = v->c;
  c->on_close = NULL;
  c->on_sweep = NULL;
  c->kind_data = NULL;
  if (v->w.fetch)
    fe_vod_fetch_forget_answer(v->w.fetch, v);
  fe_conn_respond(c, status, ctype, extra, body, len, !v->keep);
  fe_vreq_free(v);
  fe_conn_answer_end(c, 0);
}

/* ---- writing ------------------------------------------------------------------------------- */

/* `n` bytes of the current segment went out. */
static void fe_vreq_account(fe_vreq *v, uint64_t n) {
  fe_conn *c = v->c;
  FE_METRIC_ADD(&c->w->loop.metrics, bytes_sent, n);
  c->bytes += n;
  if (!v->segs[v->seg].mem) {
    FE_METRIC_ADD(&c->w->loop.metrics, vod_bytes_sent, n);
    v->body_sent += n;
  }
  v->seg_done += n;
}

static void fe_vreq_written(fe_vreq *v, int status) {
  v->io = 0;
  if (v->closed) {
    fe_vreq_free(v);
    return;
  }
  if (status < 0) {
    fe_conn_close(v->c);
    return;
  }
  fe_vreq_account(v, v->wlen);
  fe_vreq_pump(v);
}

static void fe_vreq_on_written(fe_net_write *wr, int status) {
  fe_vreq_written((fe_vreq *)((char *)wr - offsetof(fe_vreq, wreq)), status);
}

/* An HTTP/2 stream's piece is written (or the stream ended first). */
static void fe_vreq_h2_written(void *ud, int status) {
  fe_vreq_written(ud, status);
}

/* Sends bytes that stay valid until the write's callback (the head, the fetch's buffer pinned by
 * the waiter, the read buffer). While the answer is the seek's head read, they go to memory. */
static void fe_vreq_on_defer_free(fe_deferred *d) {
  fe_vreq_free((fe_vreq *)((char *)d - offsetof(fe_vreq, defer)));
}

/* A write failed at once: the connection closes, and v (whose caller, the pump, still reads it)
 * is freed at the loop's next safe point instead of inside the close. */
static void fe_vreq_close_conn(fe_vreq *v) {
  v->io = 1;
  fe_conn_close(v->c); /* marks v closed */
  v->io = 0;
  if (v->closed)
    fe_loop_defer(v->loop, &v->defer, fe_vreq_on_defer_free);
}

static void fe_vreq_write(fe_vreq *v, const void *p, uint64_t n) {
  if (v->phase == FE_VP_SEEKHEAD) {
    memcpy(v->seekbuf + v->seek_len, p, n);
    v->seek_len += n;
    v->seg_done += n;
    return;
  }
  v->wlen = n;
  v->io = 1;
  if (v->c->h2s) {
    fe_h2_piece(v->c, p, n, fe_vreq_h2_written, v);
    return;
  }
  /* What the socket takes now is done now (the pump goes on in the same turn); the rest is
   * queued and the pump resumes when it is written. A held head goes in the same writev. */
  uv_buf_t b[2];
  unsigned nb = 0;
  if (v->pre_len)
    b[nb++] = uv_buf_init((char *)v->pre, (unsigned)v->pre_len);
  if (n)
    b[nb++] = uv_buf_init((char *)p, (unsigned)n);
  uint64_t total = v->pre_len + n;
  v->pre_len = 0; /* accounted when it was held */
  int w = fe_net_try_writev(&v->c->net, b, nb);
  if (w < 0 && w != UV_EAGAIN) {
    fe_vreq_close_conn(v);
    return;
  }
  if (w >= 0 && (uint64_t)w == total) {
    v->io = 0;
    fe_vreq_account(v, n);
    return;
  }
  /* The rest of both buffers, queued. */
  uint64_t done = w > 0 ? (uint64_t)w : 0;
  unsigned first = 0;
  while (first < nb && done >= b[first].len) {
    done -= b[first].len;
    first++;
  }
  b[first].base += done;
  b[first].len -= (unsigned)done;
  if (fe_net_writev(&v->c->net, &v->wreq, b + first, nb - first, fe_vreq_on_written) < 0)
    fe_vreq_close_conn(v);
}

/* ---- a stored slice ------------------------------------------------------------------------ */

/* The opened file must be the one the index knows (size, inode, mtime). 1, or 0 (then closed). */
static int fe_vreq_file_ok(fe_vreq *v, int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0) {
    int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if ((uint64_t)st.st_size == v->file.size && (uint64_t)st.st_ino == v->file.ino &&
        mtime == v->file.mtime_ns)
      return 1;
  }
  close(fd);
  return 0;
}

/* Thread pool: the file is opened and checked. */
static void fe_vreq_open_work(uv_work_t *w) {
  fe_vreq *v = w->data;
  int fd = open(v->file.path, O_RDONLY | O_CLOEXEC);
  v->open_rc = -1;
  if (fd >= 0 && fe_vreq_file_ok(v, fd)) {
    v->fd = fd;
    v->open_rc = 0;
  }
}

/* On the loop, when the kernel can open the file from its caches alone (openat2 with
 * RESOLVE_CACHED: no disk read, EAGAIN otherwise): 1 opened and checked, 0 not possible now (the
 * thread pool opens it), -1 opened and changed behind our back (dropped: fetched again). The
 * fstat of an open file reads the in-memory inode. */
static int fe_vreq_open_now(fe_vreq *v) {
#if FE_TSAN
  /* ThreadSanitizer does not see a raw openat2 create the descriptor, and takes its reuse of a
   * number another loop just closed for a race: under it the pool opens. */
  return 0;
#endif
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_CACHED};
  int fd = (int)syscall(SYS_openat2, AT_FDCWD, v->file.path, &how, sizeof(how));
  if (fd < 0)
    return 0; /* EAGAIN (not cached), ENOSYS (an old kernel), ENOENT...: the pool decides */
  if (!fe_vreq_file_ok(v, fd)) {
    fe_vod_slice_drop(v->cache, &v->c->w->loop, v->key, v->fd_idx, &v->file);
    return -1;
  }
  v->fd = fd;
  return 1;
}

/* On the loop, what the page cache holds of [in, in + n) (preadv2 RWF_NOWAIT never waits for
 * the disk): the bytes read into rbuf, 0 when none is cached (the thread pool reads), -1 on an
 * error. */
static ssize_t fe_vreq_read_now(fe_vreq *v, uint64_t in, uint64_t n) {
  struct iovec iov = {v->rbuf, (size_t)n};
  ssize_t r;
  do
    r = preadv2(v->fd, &iov, 1, (off_t)in, RWF_NOWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return errno == EAGAIN || errno == EOPNOTSUPP ? 0 : -1;
  return r;
}

static void fe_vreq_opened(uv_work_t *w, int status) {
  fe_vreq *v = w->data;
  v->io = 0;
  if (v->closed) {
    fe_vreq_free(v);
    return;
  }
  if (status < 0 || v->open_rc < 0) {
    /* Changed or gone behind our back: never served; the slice is fetched again. */
    fe_vod_slice_drop(v->cache, &v->c->w->loop, v->key, v->fd_idx, &v->file);
    v->fd = -1;
  }
  fe_vreq_pump(v);
}

static void fe_vreq_on_read(uv_fs_t *req) {
  fe_vreq *v = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  v->io = 0;
  if (v->closed) {
    fe_vreq_free(v);
    return;
  }
  if (n <= 0) {
    fe_vreq_abort(v, n < 0 ? uv_strerror((int)n) : "stored slice shorter than its index entry");
    return;
  }
  fe_vreq_write(v, v->rbuf, (uint64_t)n);
  if (!v->io) /* written at once (or gathered for a seek's head): on with the next piece */
    fe_vreq_pump(v);
}

/* ---- sendfile ------------------------------------------------------------------------------ */

static void fe_vreq_sendfile(fe_vreq *v, uint64_t in, uint64_t n);

static void fe_vreq_on_writable(uv_poll_t *p, int status, int events) {
  fe_vreq *v = p->data;
  uv_poll_stop(p);
  v->io = 0;
  v->wait_since = 0;
  if (v->closed) {
    fe_vreq_free(v);
    return;
  }
  if (status < 0) {
    fe_conn_close(v->c);
    return;
  }
  fe_vreq_pump(v);
}

/* The socket took nothing: wait until it takes more (the sweep cuts a wait past send_timeout). */
static void fe_vreq_wait_writable(fe_vreq *v) {
  v->io = 1;
  v->wait_since = uv_now(&v->c->w->loop.uv);
  if (uv_poll_start(&v->poll, UV_WRITABLE, fe_vreq_on_writable) < 0) {
    v->io = 0;
    fe_vreq_abort(v, "cannot wait for the socket");
  }
}

/* In the thread pool: the kernel sends from the page cache, and a cold page blocks a pool thread,
 * never the loop. The socket is non-blocking: a full one gives EAGAIN at once. (libuv's own
 * uv_fs_sendfile is not used: before 1.45 it falls back to 8 KiB reads and writes on Linux when
 * copy_file_range refuses a socket.) */
static void fe_vreq_sendfile_work(uv_work_t *w) {
  fe_vreq *v = w->data;
  off_t off = (off_t)v->sf_off;
  ssize_t r;
  do
    r = sendfile(v->pfd, v->fd, &off, (size_t)v->sf_len);
  while (r < 0 && errno == EINTR);
  v->sf_rc = r < 0 ? uv_translate_sys_error(errno) : r;
}

static void fe_vreq_on_sendfile(uv_work_t *w, int status) {
  fe_vreq *v = w->data;
  ssize_t n = status < 0 ? status : v->sf_rc;
  v->io = 0;
  if (v->closed) {
    fe_vreq_free(v);
    return;
  }
  if (n == UV_EAGAIN || n == 0) {
    fe_vreq_wait_writable(v);
    return;
  }
  if (n < 0) {
    fe_conn_close(v->c); /* the client went away (EPIPE, ECONNRESET) */
    return;
  }
  fe_conn *c = v->c;
  FE_METRIC_ADD(&c->w->loop.metrics, bytes_sent, n);
  FE_METRIC_ADD(&c->w->loop.metrics, vod_bytes_sent, n);
  c->bytes += (uint64_t)n;
  c->send_progress = uv_now(&c->w->loop.uv);
  v->body_sent += (uint64_t)n;
  v->seg_done += (uint64_t)n;
  fe_vreq_pump(v);
}

static void fe_vreq_sendfile(fe_vreq *v, uint64_t in, uint64_t n) {
  /* Our own descriptor of the socket: the connection may close while the pool thread sends, and
   * its number could then name another client's socket. The same one is polled for writability. */
  if (v->pfd < 0) {
    v->pfd = fe_vreq_dup(v->sock);
    if (v->pfd < 0 || uv_poll_init(&v->c->w->loop.uv, &v->poll, v->pfd) < 0) {
      if (v->pfd >= 0)
        fe_vreq_close_dup(v->pfd);
      v->pfd = -1;
      fe_vreq_abort(v, "cannot send the file");
      return;
    }
    v->poll.data = v;
  }
  v->sf_off = in;
  v->sf_len = n;
  v->work.data = v;
  v->io = 1;
  if (uv_queue_work(&v->c->w->loop.uv, &v->work, fe_vreq_sendfile_work, fe_vreq_on_sendfile) < 0) {
    v->io = 0;
    fe_vreq_abort(v, "sendfile failed");
  }
}

/* Swept: a sendfile answer waiting for a client that takes nothing is cut after send_timeout. */
static int fe_vreq_check_slow(fe_conn *c, uint64_t now) {
  fe_vreq *v = c->kind_data;
  double limit = (c->gen ? c->gen : c->w->gen)->cfg->send_timeout;
  if (!v || !v->wait_since || now - v->wait_since < (uint64_t)(limit * 1000.0))
    return 0;
  fe_debug("vod %s: the client took nothing for %.1f s", v->path, limit);
  fe_conn_reset(c);
  return 1;
}

/* ---- the pump ------------------------------------------------------------------------------ */

static void fe_vreq_close_fd(fe_vreq *v) {
  if (v->fd < 0)
    return;
  uv_fs_t req;
  uv_fs_close(NULL, &req, v->fd, NULL);
  uv_fs_req_cleanup(&req);
  v->fd = -1;
}

static void fe_vreq_seek_ready(fe_vreq *v);

/* Writes what can be written now; returns when a write or read is in flight, when it waits for a
 * fetch, or when the answer is complete. */
static void fe_vreq_pump(fe_vreq *v) {
  while (!v->io && !v->closed) {
    if (v->seg == v->nseg) {
      if (v->phase == FE_VP_SEEKHEAD) {
        fe_vreq_seek_ready(v);
        return;
      }
      fe_vreq_finish(v);
      return;
    }
    fe_vseg *s = &v->segs[v->seg];
    if (v->seg_done == s->len) {
      v->seg++;
      v->seg_done = 0;
      continue;
    }
    uint64_t left = s->len - v->seg_done;
    if (s->mem) {
      /* On a hit, a head (or part head) followed by file bytes waits for them: one writev, one
       * segment, instead of a write of its own. Not on a miss: its client sees the head even if
       * the origin then fails. (Over HTTP/2 the head is a HEADERS frame apart.) */
      if (!v->c->h2s && v->cstatus == FE_VOD_CS_HIT && v->phase == FE_VP_BODY && !v->pre_len &&
          v->seg + 1 < v->nseg && !v->segs[v->seg + 1].mem) {
        v->pre = s->mem + v->seg_done;
        v->pre_len = left;
        fe_vreq_account(v, left);
        continue;
      }
      fe_vreq_write(v, s->mem + v->seg_done, left);
      continue;
    }
    uint64_t S = v->meta.slice_size;
    uint64_t pos = s->off + v->seg_done;
    uint32_t idx = (uint32_t)(pos / S);
    uint64_t in = pos % S;
    if (v->w_wait) {
      /* Woken while waiting for a slice another fetch stores on its way: ask again. */
      v->w_wait = 0;
      fe_vod_waiter_detach(&v->w);
      v->w_idx = UINT32_MAX;
    }
    /* From the fetch we are attached to, when it is this slice's. */
    if (v->w.fetch && v->w_idx == idx) {
      fe_vod_fetch *f = v->w.fetch;
      int st = fe_vod_fetch_state(f);
      if (st == FE_VOD_F_HEAD)
        return;
      if (st == FE_VOD_F_FAILED) {
        fe_vreq_abort(v, "the origin failed while the slice was fetched");
        return;
      }
      if (st == FE_VOD_F_NOT_MODIFIED) {
        fe_vod_waiter_detach(&v->w);
        continue;
      }
      const fe_vod_meta *m = fe_vod_fetch_meta(f);
      if (m->size != v->meta.size || strcmp(m->etag, v->meta.etag) != 0) {
        fe_vreq_abort(v, "the file changed at the origin");
        return;
      }
      uint64_t avail;
      const uint8_t *buf = fe_vod_fetch_bytes(f, &avail);
      if (in >= avail) {
        if (st == FE_VOD_F_DONE) {
          fe_vreq_abort(v, "slice shorter than expected");
          return;
        }
        return; /* woken when more arrives */
      }
      uint64_t n = avail - in < left ? avail - in : left;
      fe_vreq_write(v, buf + in, n);
      continue;
    }
    /* From the slice's file, when it is open. What is left of a small answer (up to one read)
     * is read on the loop when the page cache has it: no thread-pool round trip for a hot hit. */
    if (v->fd >= 0 && v->fd_idx == idx && (left <= FE_VOD_READ || v->sock < 0 ||
                                           v->phase != FE_VP_BODY)) {
      uint64_t n = left < FE_VOD_READ ? left : FE_VOD_READ;
      if (n > S - in)
        n = S - in;
      if (!v->rbuf && !(v->rbuf = fe_loop_big_get(v->loop))) {
        fe_vreq_abort(v, "out of memory");
        return;
      }
      ssize_t got = fe_vreq_read_now(v, in, n);
      if (got < 0) {
        fe_vreq_abort(v, "read failed");
        return;
      }
      if (got > 0) {
        fe_vreq_write(v, v->rbuf, (uint64_t)got);
        continue;
      }
    }
    /* Larger ones to a plain socket: sendfile in the pool (a held head goes out first). */
    if (v->fd >= 0 && v->fd_idx == idx && v->sock >= 0 && v->phase == FE_VP_BODY && v->pre_len) {
      fe_vreq_write(v, NULL, 0);
      continue;
    }
    if (v->fd >= 0 && v->fd_idx == idx && v->sock >= 0 && v->phase == FE_VP_BODY) {
      uint64_t n = left < FE_VOD_SENDFILE ? left : FE_VOD_SENDFILE;
      if (n > S - in)
        n = S - in;
      fe_vreq_sendfile(v, in, n);
      return;
    }
    if (v->fd >= 0 && v->fd_idx == idx) {
      uint64_t n = left < FE_VOD_READ ? left : FE_VOD_READ;
      if (n > S - in)
        n = S - in;
      if (!v->rbuf && !(v->rbuf = fe_loop_big_get(v->loop))) {
        fe_vreq_abort(v, "out of memory");
        return;
      }
      uv_buf_t b = uv_buf_init((char *)v->rbuf, (unsigned)n);
      v->fs.data = v;
      v->io = 1;
      if (uv_fs_read(&v->c->w->loop.uv, &v->fs, v->fd, &b, 1, (int64_t)in, fe_vreq_on_read) < 0) {
        v->io = 0;
        fe_vreq_abort(v, "read failed");
      }
      return;
    }
    /* Another slice: let go of the previous one, then find this one. */
    fe_vod_waiter_detach(&v->w);
    v->w_idx = UINT32_MAX;
    fe_vreq_close_fd(v);
    v->fo.revalidate = 0;
    v->fo.wait_slot = 1; /* mid-answer: a full node makes it wait, never cuts it */
    int rc = fe_vod_slice_get(v->cache, v->key, idx, &v->fo, &v->w, &v->file);
    if (rc == FE_VOD_SLICE_FILE) {
      v->fd_idx = idx;
      int now = fe_vreq_open_now(v);
      if (now != 0)
        continue; /* open: on to the bytes; or changed: the next turn fetches the slice */
      v->work.data = v;
      v->io = 1;
      if (uv_queue_work(&v->c->w->loop.uv, &v->work, fe_vreq_open_work, fe_vreq_opened) < 0) {
        v->io = 0;
        fe_vreq_abort(v, "cannot queue the open");
      }
      return;
    }
    if (rc < 0) {
      fe_vreq_abort(v, uv_strerror(rc));
      return;
    }
    if (rc == FE_VOD_SLICE_WAIT) {
      v->w_wait = 1;
      return;
    }
    v->w_idx = idx;
  }
}

static void fe_vreq_meta_get(fe_vreq *v);

static void fe_vreq_wake(fe_vod_waiter *w) {
  fe_vreq *v = (fe_vreq *)((char *)w - offsetof(fe_vreq, w));
  if (v->closed)
    return;
  if (v->phase == FE_VP_META && v->w_wait) {
    /* A fetch slot freed: ask again. */
    v->w_wait = 0;
    fe_vod_waiter_detach(&v->w);
    fe_vreq_meta_get(v);
    return;
  }
  if (v->phase == FE_VP_META) {
    fe_vreq_decide(v);
    return;
  }
  fe_vreq_pump(v);
}

/* ---- the answer's head --------------------------------------------------------------------- */

static const char *fe_vod_ctype(const fe_vreq *v) {
  if (v->meta.content_type[0])
    return v->meta.content_type;
  size_t n = strlen(v->path);
  return n > 4 && strcasecmp(v->path + n - 4, ".flv") == 0 ? "video/x-flv"
                                                             : "application/octet-stream";
}

static const char *const fe_vod_cs_names[] = {"HIT", "MISS", "EXPIRED", "STALE", "BYPASS"};

/* The validators and conditionals of the request against the object. */
static void fe_vreq_conditionals(const fe_vreq *v, fe_conditionals *cd, fe_validators *vd) {
  const fe_conn *c = v->c;
  memset(cd, 0, sizeof(*cd));
  const struct {
    const char *name;
    const char **val;
    size_t *len;
  } h[] = {
      {"If-Match", &cd->if_match, &cd->if_match_len},
      {"If-None-Match", &cd->if_none_match, &cd->if_none_match_len},
      {"If-Modified-Since", &cd->if_modified_since, &cd->if_modified_since_len},
      {"If-Unmodified-Since", &cd->if_unmodified_since, &cd->if_unmodified_since_len},
      {"If-Range", &cd->if_range, &cd->if_range_len},
  };
  for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
    const fe_span *sp = fe_conn_header(c, h[i].name);
    if (sp) {
      *h[i].val = c->buf + sp->off;
      *h[i].len = sp->len;
    }
  }
  vd->etag = v->meta.etag[0] ? v->meta.etag : NULL;
  vd->last_modified = 0;
  if (v->meta.last_modified[0])
    fe_http_date_parse(v->meta.last_modified, strlen(v->meta.last_modified), &vd->last_modified);
}

/* The validator headers every answer about the object carries. */
static size_t fe_vreq_validators(const fe_vreq *v, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%s%s%s%s%s%sAccept-Ranges: bytes\r\nX-Cache-Status: %s\r\n",
                   v->meta.etag[0] ? "ETag: " : "", v->meta.etag, v->meta.etag[0] ? "\r\n" : "",
                   v->meta.last_modified[0] ? "Last-Modified: " : "", v->meta.last_modified,
                   v->meta.last_modified[0] ? "\r\n" : "", fe_vod_cs_names[v->cstatus]);
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Builds the head and the body's segments, then starts writing. */
static void fe_vreq_start_body(fe_vreq *v, int status, const char *ctype, uint64_t clen,
                               const char *extra) {
  fe_conn *c = v->c;
  char val[1024], cors[256];
  /* A known object whose first slice asked for is not stored is a MISS for this answer. */
  for (int i = 0; i < v->nseg && v->cstatus == FE_VOD_CS_HIT; i++) {
    if (!v->segs[i].mem && v->segs[i].len) {
      if (!fe_vod_slice_stored(v->cache, v->key, (uint32_t)(v->segs[i].off / v->meta.slice_size)))
        v->cstatus = FE_VOD_CS_MISS;
      break;
    }
  }
  fe_vreq_validators(v, val, sizeof(val));
  fe_conn_cors(c, cors, sizeof(cors));
  size_t cap = 2048 + strlen(extra) + strlen(ctype);
  char *head = malloc(cap);
  if (!head) {
    fe_conn_close(c);
    return;
  }
  int n = snprintf(head, cap,
                   "HTTP/1.1 %d %s\r\nServer: flvedge/" FE_VERSION "\r\nContent-Type: %s\r\n"
                   "Content-Length: %llu\r\n%s%s%s%s\r\n",
                   status, fe_http_reason(status), ctype, (unsigned long long)clen, val, extra, cors,
                   v->keep ? "" : "Connection: close\r\n");
  if (c->h2s) {
    /* HTTP/2: the head is a HEADERS frame; the segments are the DATA. */
    free(v->mem);
    v->mem = NULL;
    if (v->head_only)
      v->nseg = 0;
    fe_h2_head(c, head, (size_t)n, !v->head_only);
    free(head);
    v->seg = 0;
    v->seg_done = 0;
    v->phase = FE_VP_BODY;
    c->status = status;
    c->bytes += (uint64_t)n;
    c->cache_status = fe_vod_cs_names[v->cstatus];
    fe_metrics_count_status(&c->w->loop.metrics, status);
    FE_METRIC_INC(&c->w->loop.metrics, vod_requests[v->cstatus]);
    fe_vreq_pump(v);
    return;
  }
  /* The head goes first, in front of segments already planned. */
  memmove(&v->segs[1], &v->segs[0], (size_t)v->nseg * sizeof(fe_vseg));
  v->nseg++;
  v->segs[0] = (fe_vseg){head, 0, (uint64_t)n};
  if (v->head_only)
    v->nseg = 1;
  free(v->mem);
  v->mem = head;
  v->seg = 0;
  v->seg_done = 0;
  v->phase = FE_VP_BODY;
  c->status = status;
  c->cache_status = fe_vod_cs_names[v->cstatus];
  fe_metrics_count_status(&c->w->loop.metrics, status);
  FE_METRIC_INC(&c->w->loop.metrics, vod_requests[v->cstatus]);
  fe_vreq_pump(v);
}

/* Multipart parts: part heads are kept in one allocation that lives with the request. */
static void fe_vreq_multipart(fe_vreq *v, const fe_range *r, int n) {
  const char *ctype = fe_vod_ctype(v);
  size_t per = 256 + strlen(ctype);
  char *parts = malloc(per * (size_t)(n + 1));
  if (!parts) {
    fe_conn_close(v->c);
    return;
  }
  uint64_t total = fe_range_multipart_length(r, n, FE_VOD_BOUNDARY, ctype, v->meta.size);
  v->nseg = 0;
  for (int i = 0; i < n; i++) {
    size_t hl = fe_range_part_head(parts + per * (size_t)i, per, FE_VOD_BOUNDARY, ctype, &r[i],
                                   v->meta.size);
    v->segs[v->nseg++] = (fe_vseg){parts + per * (size_t)i, 0, hl};
    v->segs[v->nseg++] = (fe_vseg){NULL, r[i].first, r[i].last - r[i].first + 1};
  }
  size_t tl = fe_range_part_tail(parts + per * (size_t)n, per, FE_VOD_BOUNDARY);
  v->segs[v->nseg++] = (fe_vseg){parts + per * (size_t)n, 0, tl};
  /* The head replaces v->mem; the part heads must outlive it: they are kept in seekbuf's place. */
  free(v->seekbuf);
  v->seekbuf = (uint8_t *)parts;
  fe_vreq_start_body(v, 206, "multipart/byteranges; boundary=" FE_VOD_BOUNDARY, total, "");
}

static uint64_t fe_vod_num(const char *q, size_t qlen, const char *name, int *found, double *dv) {
  size_t nl = strlen(name);
  for (size_t i = 0; i + nl < qlen; i++) {
    if ((i == 0 || q[i - 1] == '&') && memcmp(q + i, name, nl) == 0 && q[i + nl] == '=') {
      char tmp[32];
      size_t k = 0, j = i + nl + 1;
      while (j < qlen && q[j] != '&' && k < sizeof(tmp) - 1)
        tmp[k++] = q[j++];
      tmp[k] = 0;
      char *end;
      double d = strtod(tmp, &end);
      if (end == tmp || *end || !(d >= 0) || d > 1e18)
        return 0;
      *found = 1;
      *dv = d;
      return (uint64_t)d;
    }
  }
  return 0;
}

/* The object's meta is known: preconditions, then a seek, a range, or the whole file. */
static void fe_vreq_answer(fe_vreq *v) {
  fe_conn *c = v->c;
  fe_conditionals cd;
  fe_validators vd;
  char val[1024];
  fe_vreq_conditionals(v, &cd, &vd);
  c->cache_status = fe_vod_cs_names[v->cstatus];
  int pre = fe_http_preconditions(&cd, &vd);
  if (pre) {
    fe_vreq_validators(v, val, sizeof(val));
    FE_METRIC_INC(&c->w->loop.metrics, vod_requests[v->cstatus]);
    fe_vreq_respond(v, pre, NULL, val, pre == 412 ? "412 precondition failed\n" : NULL,
                    pre == 412 ? 24 : 0);
    return;
  }
  uint64_t size = v->meta.size;
  /* Seek: ?start=N (bytes, or seconds when the resource says so) or ?t=SECONDS. */
  const char *q = c->view.query.p;
  size_t qlen = c->view.query.len;
  int has_start = 0, has_t = 0;
  double dstart = 0, dt = 0;
  uint64_t start = fe_vod_num(q, qlen, "start", &has_start, &dstart);
  fe_vod_num(q, qlen, "t", &has_t, &dt);
  if (has_t || (has_start && v->res->start_unit == FE_START_SECONDS)) {
    if (v->seek == 0 && (has_t ? dt : dstart) > 0) {
      v->seek = 2;
      v->seek_time = has_t ? dt : dstart;
      v->seek_len = 0;
      uint64_t want = size < FE_VOD_SEEK_HEAD ? size : FE_VOD_SEEK_HEAD;
      v->seekbuf = malloc(want ? want : 1);
      if (!v->seekbuf) {
        fe_conn_close(c);
        return;
      }
      v->segs[0] = (fe_vseg){NULL, 0, want};
      v->nseg = 1;
      v->seg = 0;
      v->seg_done = 0;
      v->phase = FE_VP_SEEKHEAD;
      fe_vreq_pump(v);
      return;
    }
  } else if (has_start && start > 0) {
    /* As nginx's flv module: a fixed FLV header, then the file from N (a tag, unchecked). */
    static const char flv_head[13] = {'F', 'L', 'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0};
    if (start < FE_FLV_FILE_HEADER_SIZE || start > size)
      start = start > size ? size : FE_FLV_FILE_HEADER_SIZE;
    v->segs[0] = (fe_vseg){flv_head, 0, 13};
    v->segs[1] = (fe_vseg){NULL, start, size - start};
    v->nseg = 2;
    fe_vreq_start_body(v, 200, fe_vod_ctype(v), 13 + size - start, "");
    return;
  }
  /* Range, when If-Range lets it apply. */
  const fe_span *rh = fe_conn_header(c, "Range");
  fe_range r[FE_RANGE_MAX];
  int n = rh && fe_http_if_range(&cd, &vd) ? fe_range_parse(c->buf + rh->off, rh->len, size, r, FE_RANGE_MAX)
                                           : FE_RANGE_IGNORE;
  if (n == FE_RANGE_UNSAT) {
    char extra[1200];
    size_t k = fe_vreq_validators(v, extra, sizeof(extra));
    snprintf(extra + k, sizeof(extra) - k, "Content-Range: bytes */%llu\r\n",
             (unsigned long long)size);
    FE_METRIC_INC(&c->w->loop.metrics, vod_requests[v->cstatus]);
    fe_vreq_respond(v, 416, NULL, extra, "416 range not satisfiable\n", 26);
    return;
  }
  if (n > 1) {
    fe_vreq_multipart(v, r, n);
    return;
  }
  if (n == 1) {
    char cr[96];
    snprintf(cr, sizeof(cr), "Content-Range: bytes %llu-%llu/%llu\r\n",
             (unsigned long long)r[0].first, (unsigned long long)r[0].last, (unsigned long long)size);
    v->segs[0] = (fe_vseg){NULL, r[0].first, r[0].last - r[0].first + 1};
    v->nseg = 1;
    fe_vreq_start_body(v, 206, fe_vod_ctype(v), r[0].last - r[0].first + 1, cr);
    return;
  }
  v->segs[0] = (fe_vseg){NULL, 0, size};
  v->nseg = size ? 1 : 0;
  fe_vreq_start_body(v, 200, fe_vod_ctype(v), size, "");
}

/* The file's first bytes are in: header + prefix + the file from the keyframe at or before the
 * time asked. Without a usable index the whole file is served. */
static void fe_vreq_seek_ready(fe_vreq *v) {
  fe_flv_meta m;
  memset(&m, 0, sizeof(m));
  int rc = fe_flv_meta_scan(v->seekbuf, v->seek_len, v->meta.size, &m);
  int64_t k = rc == 0 ? fe_flv_meta_find(&m, v->seek_time) : -1;
  v->phase = FE_VP_BODY;
  if (k < 0 || m.prefix_end > v->seek_len || m.positions[k] >= v->meta.size) {
    fe_flv_meta_free(&m);
    v->segs[0] = (fe_vseg){NULL, 0, v->meta.size};
    v->nseg = 1;
    fe_vreq_start_body(v, 200, fe_vod_ctype(v), v->meta.size, "");
    return;
  }
  uint64_t pos = m.positions[k];
  v->segs[0] = (fe_vseg){(const char *)v->seekbuf, 0, m.prefix_end};
  v->segs[1] = (fe_vseg){NULL, pos, v->meta.size - pos};
  v->nseg = 2;
  fe_flv_meta_free(&m);
  fe_vreq_start_body(v, 200, fe_vod_ctype(v), v->segs[0].len + v->segs[1].len, "");
}

/* ---- the decision -------------------------------------------------------------------------- */

/* The origin failed before anything was sent: its answer is passed on, or the stale copy used. */
static void fe_vreq_origin_failed(fe_vreq *v, fe_vod_fetch *f) {
  int status;
  const char *ctype, *body;
  size_t blen;
  int err = fe_vod_fetch_error(f, &status, &ctype, &body, &blen);
  if (v->old.size && (err != FE_VOD_ESTATUS || status >= 500)) {
    fe_vod_waiter_detach(&v->w);
    v->meta = v->old;
    v->cstatus = FE_VOD_CS_STALE;
    fe_vreq_answer(v);
    return;
  }
  char msg[160];
  if (err == FE_VOD_ESTATUS) {
    /* The body and type live in the fetch, which the detach may free: copied first. */
    char b[sizeof(msg)], t[128];
    size_t n = blen < sizeof(b) ? blen : sizeof(b);
    memcpy(b, body, n);
    snprintf(t, sizeof(t), "%s", ctype ? ctype : "");
    fe_vod_waiter_detach(&v->w);
    v->c->cache_status = fe_vod_cs_names[v->cstatus];
    fe_vreq_respond(v, status, t[0] ? t : NULL, NULL, b, n);
    return;
  }
  int st = err == FE_VOD_EFULL ? 503 : err <= -2000 && err > -3000 ? fe_origin_status(err) : 502;
  int n = snprintf(msg, sizeof(msg), "%d %s\n", st,
                   err == FE_VOD_ETOOBIG ? "object larger than the cache takes"
                   : err <= -3000        ? "origin answer unusable"
                                         : fe_origin_strerror(err));
  fe_vod_waiter_detach(&v->w);
  fe_vreq_respond(v, st, NULL, NULL, msg, (size_t)n);
}

static void fe_vreq_decide(fe_vreq *v) {
  fe_vod_fetch *f = v->w.fetch;
  int st = fe_vod_fetch_state(f);
  if (st == FE_VOD_F_HEAD)
    return;
  if (st == FE_VOD_F_FAILED) {
    fe_vreq_origin_failed(v, f);
    return;
  }
  v->meta = *fe_vod_fetch_meta(f);
  if (st == FE_VOD_F_NOT_MODIFIED)
    fe_vod_waiter_detach(&v->w);
  else if (!fe_vod_fetch_cacheable(f))
    v->cstatus = FE_VOD_CS_BYPASS;
  fe_vreq_answer(v);
}

/* The slice a request starts in, before the size is known: the first range's start, or 0. */
static uint32_t fe_vreq_first_slice(fe_vreq *v, uint64_t size, uint64_t slice) {
  const fe_span *rh = fe_conn_header(v->c, "Range");
  if (!rh)
    return 0;
  fe_range r[FE_RANGE_MAX];
  uint64_t guess = size ? size : (1ull << 62);
  int n = fe_range_parse(v->c->buf + rh->off, rh->len, guess, r, FE_RANGE_MAX);
  if (n < 1 || (!size && r[0].last == guess - 1 && r[0].first > guess / 2))
    return 0; /* a suffix range of an unknown size: the first slice tells the size */
  uint64_t idx = r[0].first / slice;
  return idx < UINT32_MAX ? (uint32_t)idx : 0;
}

/* The `cache` hook's answer call: on the loop that fetches, when the origin's head is in. */
static void fe_vreq_on_answer(void *ud, int status, const fe_origin_head *h, uint64_t size,
                              double *ttl, int *cacheable) {
  fe_vreq *v = ud;
  if (!v->hook || !v->c)
    return;
  fe_lua_cache_out out = {.cacheable = *cacheable, .ttl = *ttl};
  fe_lua_cache_res res = {.status = status, .size = size,
                          .content_type = h->content_type[0] ? h->content_type : NULL,
                          .etag = h->etag[0] ? h->etag : NULL,
                          .last_modified = h->last_modified[0] ? h->last_modified : NULL,
                          .cache_control = h->cache_control[0] ? h->cache_control : NULL};
  fe_conn *c = v->c;
  if (fe_lua_cache(c->gen->lua, v->resource, c->id, &c->view, &res, &out) < 0 || out.bypass) {
    *cacheable = 0;
    return;
  }
  *cacheable = out.cacheable;
  *ttl = out.ttl;
}

/* A request not served from the cache at all: its bytes come from one fetch that stores nothing.
 * (The fetch still is a slice fetch: a bypassed request sees one slice per origin request.) */
void fe_vod_serve(fe_conn *c, const fe_resource *res, const char *rest, size_t len) {
  int keep = fe_conn_keep_alive(c);
  fe_vod_cache *cache = c->w->loop.vod ? fe_vod_node_cache(c->w->loop.vod, res->cache_dir) : NULL;
  if (!cache) {
    fe_conn_respond(c, 500, NULL, NULL, "500 cache not open\n", 19, !keep);
    return;
  }
  fe_vreq *v = calloc(1, sizeof(*v));
  if (!v) {
    fe_conn_respond(c, 503, NULL, NULL, "503 out of memory\n", 18, !keep);
    return;
  }
  v->c = c;
  v->loop = &c->w->loop;
  v->cache = cache;
  v->res = res;
  v->resource = (int)(res - c->gen->cfg->resources);
  v->keep = keep;
  v->head_only = c->parser.method == HTTP_HEAD;
  v->fd = -1;
  v->pfd = -1;
  v->sock = c->h2s ? -1 : fe_net_sendfile_fd(&c->net); /* HTTP/2 frames what it reads */
  v->w_idx = UINT32_MAX;
  v->w.loop = &c->w->loop;
  v->w.wake = fe_vreq_wake;
  v->cstatus = FE_VOD_CS_MISS;
  /* The strings, sized here so that nothing is cut: a key cut short would be another object's. */
  size_t olen = strlen(res->origin), plen = c->view.path.len;
  int slash = olen && res->origin[olen - 1] == '/';
  size_t hook_key = sizeof(((fe_lua_cache_out *)0)->key); /* the longest key a hook gives, + 1 */
  v->url_cap = olen + 1 + len + 1 + c->view.query.len + 1; /* room for "?query" */
  v->key_cap = (v->url_cap > hook_key ? v->url_cap : hook_key) + FE_VREQ_BYPASS_TAG;
  v->strs = malloc(plen + 1 + v->url_cap + v->key_cap);
  if (!v->strs) {
    free(v);
    fe_conn_respond(c, 503, NULL, NULL, "503 out of memory\n", 18, !keep);
    return;
  }
  v->path = v->strs;
  v->url = v->path + plen + 1;
  v->key = v->url + v->url_cap;
  memcpy(v->path, c->view.path.p, plen);
  v->path[plen] = 0;
  snprintf(v->url, v->url_cap, "%s%s%.*s", res->origin, slash ? "" : "/", (int)len, rest);
  snprintf(v->key, v->key_cap, "%s", v->url);
  fe_conn_answer_begin(c);
  c->on_close = fe_vreq_on_conn_close;
  c->on_sweep = fe_vreq_check_slow;
  c->kind_data = v;

  /* The hook's lookup call: the key, the query kept, or no cache at all. */
  int bypass = 0;
  if (fe_lua_phases(c->gen->lua, v->resource) & FE_LUA_CACHE) {
    v->hook = 1;
    fe_lua_cache_out out = {.cacheable = 1, .ttl = res->cache_ttl};
    if (fe_lua_cache(c->gen->lua, v->resource, c->id, &c->view, NULL, &out) < 0) {
      bypass = 1;
    } else {
      bypass = out.bypass;
      if (out.keep_query && c->view.query.len) {
        size_t ul = strlen(v->url);
        snprintf(v->url + ul, v->url_cap - ul, "?%.*s", (int)c->view.query.len, c->view.query.p);
      }
      snprintf(v->key, v->key_cap, "%s", out.key[0] ? out.key : v->url);
    }
  }
  if (plen > FE_VOD_PATH_MAX || strlen(v->url) > FE_VOD_PATH_MAX || strlen(v->key) > FE_VOD_PATH_MAX) {
    fe_vreq_respond(v, 414, NULL, NULL, "414 URI too long\n", 17);
    return;
  }
  if (fe_origin_check_url(v->url) < 0) {
    fe_vreq_respond(v, 400, NULL, NULL, "400 bad request: path not usable at the origin\n", 47);
    return;
  }
  v->fo = (fe_vod_fetch_opts){.url = v->url, .client_path = v->path,
                              .connect_timeout = res->origin_connect_timeout,
                              .read_timeout = res->origin_read_timeout, .ttl = res->cache_ttl,
                              .tls = res->origin_tls,
                              .slice_size = res->slice_size, .on_answer = fe_vreq_on_answer, .ud = v,
                              .base = res->origin, .backups = (const char *const *)res->backups,
                              .nbackups = res->nbackups};
  if (bypass) {
    /* A key of its own that no lookup shares, and nothing stored: the origin's bytes pass
     * through the same fetch machinery, slice by slice. */
    size_t kl = strlen(v->key);
    snprintf(v->key + kl, v->key_cap - kl, "#bypass-%llx", (unsigned long long)c->id);
    v->fo.no_store = 1;
    v->cstatus = FE_VOD_CS_BYPASS;
  }
  int found = bypass ? FE_VOD_ABSENT : fe_vod_lookup(cache, v->key, fe_vod_now(), &v->meta);
  if (found == FE_VOD_FRESH) {
    v->cstatus = FE_VOD_CS_HIT;
    fe_vreq_answer(v);
    return;
  }
  fe_vod_error kept;
  if (found == FE_VOD_ABSENT && !bypass && fe_vod_error_lookup(cache, v->key, fe_vod_now(), &kept)) {
    /* An origin error the hook made cacheable: answered from memory, the origin not asked. */
    v->cstatus = FE_VOD_CS_HIT;
    v->c->cache_status = fe_vod_cs_names[v->cstatus];
    fe_vreq_respond(v, kept.status, kept.ctype[0] ? kept.ctype : NULL, "X-Cache-Status: HIT\r\n",
                    kept.body, kept.len);
    return;
  }
  uint64_t slice = res->slice_size;
  if (found == FE_VOD_EXPIRED) {
    v->old = v->meta;
    v->cstatus = FE_VOD_CS_EXPIRED;
    v->fo.revalidate = 1;
    slice = v->meta.slice_size;
  }
  v->phase = FE_VP_META;
  v->meta_idx = fe_vreq_first_slice(v, found == FE_VOD_EXPIRED ? v->meta.size : 0, slice);
  v->meta_expired = found == FE_VOD_EXPIRED;
  fe_vreq_meta_get(v);
}

/* The first slice the answer needs (its fetch gives the object's meta). When the node has every
 * fetch slot taken, the request queues for one instead of failing. */
static void fe_vreq_meta_get(fe_vreq *v) {
  fe_vod_file file;
  v->fo.revalidate = v->meta_expired;
  v->fo.wait_slot = 1;
  int rc = fe_vod_slice_get(v->cache, v->key, v->meta_idx, &v->fo, &v->w, &file);
  v->fo.revalidate = 0;
  if (rc == FE_VOD_SLICE_WAIT) {
    v->w_wait = 1;
    return;
  }
  if (rc < 0) {
    if (v->meta_expired) {
      v->cstatus = FE_VOD_CS_STALE;
      fe_vreq_answer(v);
      return;
    }
    fe_vreq_respond(v, 503, NULL, "Retry-After: 1\r\n", "503 no memory\n", 14);
    return;
  }
  v->w_idx = v->meta_idx;
  fe_vreq_decide(v); /* a fetch already past its head decides now; otherwise its wake will */
}

/* ---- admin entries ------------------------------------------------------------------------- */

int fe_vod_purge_path(fe_worker *w, const char *path) {
  char p[FE_VOD_PATH_MAX + 1];
  size_t n = strcspn(path, "?");
  if (n > FE_VOD_PATH_MAX)
    return 0; /* no object has such a path (and a pattern cut short would match others) */
  memcpy(p, path, n);
  p[n] = 0;
  return w->loop.vod ? fe_vod_purge_all(w->loop.vod, &w->loop, p) : 0;
}

int fe_vod_prefetch_path(fe_worker *w, const char *path) {
  const fe_config *cfg = w->gen->cfg;
  size_t plen = strcspn(path, "?");
  const fe_resource *res = fe_config_route(cfg, "", 0, path, plen);
  if (!res || res->type != FE_RES_VOD || !w->loop.vod || fe_vod_path_bad(path, plen))
    return -1;
  fe_vod_cache *cache = fe_vod_node_cache(w->loop.vod, res->cache_dir);
  size_t pre = strlen(res->prefix);
  if (!cache || plen <= pre)
    return -1;
  size_t olen = strlen(res->origin);
  char url[FE_VOD_PATH_MAX + 1], cpath[FE_VOD_PATH_MAX + 1];
  int n = snprintf(url, sizeof(url), "%s%s%.*s", res->origin,
                   olen && res->origin[olen - 1] == '/' ? "" : "/", (int)(plen - pre), path + pre);
  if (plen > FE_VOD_PATH_MAX || n < 0 || (size_t)n > FE_VOD_PATH_MAX)
    return -1; /* as a request for it would be refused (414) */
  memcpy(cpath, path, plen);
  cpath[plen] = 0;
  if (fe_origin_check_url(url) < 0)
    return -1;
  /* The default key (the hook's lookup call needs a request; a prefetch has none). */
  fe_vod_fetch_opts o = {.url = url, .client_path = cpath,
                         .connect_timeout = res->origin_connect_timeout,
                         .read_timeout = res->origin_read_timeout, .ttl = res->cache_ttl,
                         .tls = res->origin_tls, .slice_size = res->slice_size, .base = res->origin,
                         .backups = (const char *const *)res->backups, .nbackups = res->nbackups};
  return fe_vod_prefetch(cache, &w->loop, url, &o) < 0 ? -1 : 0;
}

/* ---- the admin listener's VOD endpoints ---------------------------------------------------- */

int fe_vod_admin_purge(fe_conn *c, const fe_admin_targets *t, fe_json_buf *out) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < t->nurls; i++)
    n += (uint64_t)fe_vod_purge_path(c->w, t->urls[i]);
  if (t->pattern)
    n += (uint64_t)fe_vod_purge_path(c->w, t->pattern);
  fe_json_raw(out, "{\"purged\":");
  fe_json_u64(out, n);
  fe_json_raw(out, "}");
  return 200;
}

/* All or nothing: a list with a path no vod resource serves is refused whole (400), so a typo
 * is not half applied. */
int fe_vod_admin_prefetch(fe_conn *c, const fe_admin_targets *t, fe_json_buf *out) {
  const fe_config *cfg = c->w->gen->cfg;
  for (uint32_t i = 0; i < t->nurls; i++) {
    const char *u = t->urls[i];
    size_t plen = strcspn(u, "?");
    const fe_resource *res = fe_config_route(cfg, "", 0, u, plen);
    if (!res || res->type != FE_RES_VOD || fe_vod_path_bad(u, plen)) {
      fe_json_raw(out, "{\"error\":\"no vod resource serves this path\",\"url\":");
      fe_json_str(out, u, strlen(u));
      fe_json_raw(out, "}");
      return 400;
    }
  }
  uint64_t queued = 0;
  for (uint32_t i = 0; i < t->nurls; i++)
    queued += fe_vod_prefetch_path(c->w, t->urls[i]) == 0;
  fe_json_raw(out, "{\"queued\":");
  fe_json_u64(out, queued);
  fe_json_raw(out, "}");
  return queued == t->nurls ? 202 : 503;
}
