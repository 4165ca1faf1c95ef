/*
 * fe_load: HTTP-FLV load client for benchmarks (see tests/bench/README.md).
 *
 * Opens N viewers of one live HTTP-FLV URL at a given join rate and reads each one the way a player
 * does: at most once per read interval. Every viewer de-chunks its response and validates the FLV
 * incrementally. At the end it reports connection outcomes, time to first byte and to first
 * keyframe, delivery lag drift, stalls, throughput, validation errors and its own CPU.
 *
 * Cheap per viewer on purpose (10,000 viewers on one core): one static read buffer shared by all,
 * a viewer is a small struct of counters and parser states, and reading is batched per tick: every
 * read interval one epoll_wait() over the level-triggered "reading" set returns every socket with
 * data and each is read once. Connects and request writes use a second epoll set, served at once.
 *
 * One file, libc and libm only: built by CMake as target fe_load, or by hand with
 *   gcc -O2 -Wall -Wextra -Wshadow -o fe_load tests/bench/fe_load.c -lm
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE (256 * 1024)
#define READS_PER_TICK 4       /* a viewer whose read fills the buffer is read again, this often */
#define MAX_HEAD_BYTES 65536   /* a response head beyond this is a protocol error */
#define STALL_US 1000000       /* a gap without any byte longer than this is a stall */
#define DRIFT_LIMIT_MS 1000    /* viewers drifting more than this are counted */
#define FD_RESERVE 32          /* descriptors kept for stdio, epoll and the like */

/* Viewer life: IDLE until its join time, then CONNECTING (connect + request write), HEAD (reading
 * the response head), BODY (the FLV), CLOSED (with an end reason). */
enum v_state { V_IDLE, V_CONNECTING, V_HEAD, V_BODY, V_CLOSED };

/* Why a viewer ended; END_NONE while it is open (it is "ok" if still open when the run ends). */
enum v_end { END_NONE, END_CONNECT, END_STATUS, END_EARLY, END_PROTOCOL, END_NO_RESPONSE, END__COUNT };
static const char *const end_names[END__COUNT] = {
  "ok", "connect", "status", "closed_early", "protocol", "no_response",
};

enum body_mode { BODY_CLOSE, BODY_LENGTH, BODY_CHUNKED };
enum chunk_state { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_DONE };
enum flv_state { FLV_HDR, FLV_HDR_SKIP, FLV_TAG_HDR, FLV_DATA, FLV_PREV, FLV_DESYNC };

/* Validation errors, counted per kind. */
enum v_err {
  E_FLV_HEADER,     /* not "FLV" version 1 with a header of at least 9 bytes */
  E_PREV_SIZE,      /* PreviousTagSize != 11 + DataSize (PreviousTagSize0 != 0) */
  E_TAG_TYPE,       /* tag type not 8, 9 or 18: the stream can no longer be followed */
  E_AUDIO_TS,       /* audio timestamp went backwards */
  E_VIDEO_TS,       /* video timestamp went backwards */
  E_FIRST_NOT_KEY,  /* first video frame after the AVC sequence header is not a keyframe */
  E_NO_SEQ_HEADER,  /* AVC video frame before any AVC sequence header */
  E_CHUNKED,        /* malformed chunked framing */
  E_TRUNCATED,      /* the stream ended inside the file header or a tag */
  E__COUNT
};
static const char *const err_names[E__COUNT] = {
  "flv_header", "prev_tag_size", "tag_type", "audio_ts_backward", "video_ts_backward",
  "first_video_not_key", "video_before_seq_header", "chunked", "truncated",
};

/* Viewer flags. */
enum {
  F_CHUNKED = 1 << 0,    /* head: Transfer-Encoding: chunked */
  F_HAVE_CLEN = 1 << 1,  /* head: Content-Length seen */
  F_SEQ = 1 << 2,        /* AVC sequence header seen */
  F_EXPECT_KEY = 1 << 3, /* next video frame must be a keyframe */
  F_KEY = 1 << 4,        /* first keyframe seen (t_key, key_ts valid) */
  F_HAVE_A = 1 << 5,     /* last_a valid */
  F_HAVE_V = 1 << 6,     /* last_v valid */
  F_HAVE_TS = 1 << 7,    /* last_ts valid */
  F_LAG0 = 1 << 8,       /* lag_start taken */
  F_STALLED = 1 << 9,    /* had at least one stall */
  F_ERR = 1 << 10,       /* had at least one validation error */
  F_SETTLED = 1 << 11,   /* counted in g.settled (keyframe or end) */
  F_JOINING = 1 << 12,   /* --join-at-once: read as bytes come until the first keyframe */
};

/* One viewer: counters and parser states only, no buffers beyond a 48-byte scratch. */
typedef struct viewer {
  int fd;
  uint8_t state, end, body, chunk_st, flv_st, pos, digits;
  uint16_t flags, status, wofs;
  uint32_t head_bytes;
  uint32_t chunk_left;   /* chunked: data bytes left in this chunk, or the size being parsed */
  uint64_t clen_left;    /* Content-Length body: bytes left */
  uint32_t tag_left;     /* FLV: payload bytes (or header extension bytes) left */
  uint32_t tag_size;     /* FLV: DataSize of the current tag */
  uint32_t last_ts, last_a, last_v, key_ts;
  int32_t lag_start, lag_end; /* ms */
  int64_t t_start, t_first_byte, t_key, t_last_byte; /* monotonic us; 0 = not yet */
  uint64_t bytes;
  uint64_t tags;
  /* Head: the current header line, lowercased and truncated. Body: the FLV tag header (11 bytes)
   * and the first two payload bytes, or the 9-byte file header, or a PreviousTagSize. */
  uint8_t buf[48];
} viewer;

enum phase { P_JOIN, P_SETTLE, P_WARMUP, P_MEASURE, P_DONE };

static struct {
  /* options */
  const char *url;
  long viewers;
  double rate;
  double duration, warmup, join_timeout, progress;
  int read_interval_ms;
  int join_at_once;
  int json;
  const char *joins_file;
  /* target */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  char *request;
  size_t request_len;
  /* run */
  viewer *v;
  long started, settled, open;
  int conn_ep, read_ep;
  struct epoll_event *events;
  enum phase phase;
  int64_t now, t0, t_all_started, t_phase, t_measure0, t_measure1;
  int64_t measure_start; /* INT64_MAX until the measuring window opens: anchors lag_start */
  uint64_t bytes, tags, global_back;
  uint64_t bytes_at_measure0, bytes_at_measure1;
  uint64_t errs[E__COUNT];
  uint64_t stalls;
  int64_t max_gap;
  long ends[END__COUNT];
  int first_bad_status;
  int first_errno;
  double cpu_at_measure0, cpu_at_measure1;
  /* the client's own lag: how late each read tick ran (ms); a late client inflates first byte */
  double *tick_lag;
  long tick_lag_n, tick_lag_cap;
} g;

static uint8_t rbuf[READ_BUF_SIZE];
static volatile sig_atomic_t stop_requested;

static int64_t mono_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CPU seconds (user + system) this process has used. */
static double cpu_seconds(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static void note(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("fe_load: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

/* ---- viewer end and accounting ---------------------------------------------------------------- */

/* Counts a viewer as settled (first keyframe or end) once: the join phase waits for all of them. */
static void viewer_settle(viewer *v)
{
  if (!(v->flags & F_SETTLED)) {
    v->flags |= F_SETTLED;
    g.settled++;
  }
}

static void viewer_error(viewer *v, enum v_err e)
{
  g.errs[e]++;
  v->flags |= F_ERR;
}

/* Closes a viewer for `why`. While the run is on, a stream that ends inside a tag is truncated. */
static void viewer_close(viewer *v, enum v_end why)
{
  if (v->state == V_CLOSED)
    return;
  if (why == END_EARLY && v->state == V_BODY && v->flv_st != FLV_DESYNC &&
      !(v->flv_st == FLV_TAG_HDR && v->pos == 0))
    viewer_error(v, E_TRUNCATED);
  if (v->fd >= 0)
    close(v->fd);
  v->fd = -1;
  if (v->state != V_IDLE)
    g.open--;
  v->state = V_CLOSED;
  v->end = (uint8_t)why;
  g.ends[why]++;
  viewer_settle(v);
}

/* ---- FLV validation --------------------------------------------------------------------------- */

static uint32_t be24(const uint8_t *p) { return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | be24(p + 1); }

/* A whole tag has arrived (header in buf[0..11), first payload bytes in buf[11..13)). */
static void flv_tag_done(viewer *v)
{
  const uint8_t *h = v->buf;
  uint8_t type = h[0] & 0x1f;
  uint32_t ts = be24(h + 4) | (uint32_t)h[7] << 24;
  uint32_t have = v->tag_size < 2 ? v->tag_size : 2; /* payload bytes captured */

  v->tags++;
  g.tags++;
  if ((v->flags & F_HAVE_TS) && ts < v->last_ts)
    g.global_back++;
  v->last_ts = ts;
  v->flags |= F_HAVE_TS;

  if (type == 8) {
    if ((v->flags & F_HAVE_A) && ts < v->last_a)
      viewer_error(v, E_AUDIO_TS);
    v->last_a = ts;
    v->flags |= F_HAVE_A;
  } else if (type == 9) {
    if ((v->flags & F_HAVE_V) && ts < v->last_v)
      viewer_error(v, E_VIDEO_TS);
    v->last_v = ts;
    v->flags |= F_HAVE_V;
    if (have >= 1) {
      unsigned frame = h[11] >> 4, codec = h[11] & 0x0f;
      int avc = codec == 7 && have >= 2;
      int is_frame = !avc || h[12] == 1; /* AVC: packet type 0 is the sequence header, 2 the end */
      if (avc && h[12] == 0) {
        v->flags |= F_SEQ | F_EXPECT_KEY;
      } else if (is_frame) {
        if (avc && !(v->flags & F_SEQ))
          viewer_error(v, E_NO_SEQ_HEADER);
        if (v->flags & F_EXPECT_KEY) {
          if (frame != 1)
            viewer_error(v, E_FIRST_NOT_KEY);
          v->flags &= (uint16_t)~F_EXPECT_KEY;
        }
        if (frame == 1 && !(v->flags & F_KEY)) {
          v->flags |= F_KEY;
          v->t_key = g.now;
          v->key_ts = ts;
          viewer_settle(v);
        }
      }
    }
  }

  if (v->flags & F_KEY) {
    int64_t lag_us = (g.now - v->t_key) - ((int64_t)ts - (int64_t)v->key_ts) * 1000;
    int32_t lag = (int32_t)(lag_us / 1000);
    if (!(v->flags & F_LAG0) && g.now >= g.measure_start &&
        g.now >= v->t_key + (int64_t)(g.warmup * 1e6)) {
      v->lag_start = lag;
      v->flags |= F_LAG0;
    }
    v->lag_end = lag;
  }
}

/* Feeds body bytes to the viewer's FLV parser. Never fails: errors are counted, and after one that
 * loses the tag framing the rest of the stream is only counted, not parsed. */
static void flv_feed(viewer *v, const uint8_t *p, size_t n)
{
  while (n > 0) {
    switch (v->flv_st) {
    case FLV_HDR:
      while (n > 0 && v->pos < 9) {
        v->buf[v->pos++] = *p++;
        n--;
      }
      if (v->pos == 9) {
        uint32_t off = be32(v->buf + 5);
        if (memcmp(v->buf, "FLV", 3) != 0 || v->buf[3] != 1 || off < 9) {
          viewer_error(v, E_FLV_HEADER);
          v->flv_st = FLV_DESYNC;
          break;
        }
        v->tag_left = off - 9;
        v->flv_st = FLV_HDR_SKIP;
        v->pos = 0;
      }
      break;
    case FLV_HDR_SKIP: {
      size_t k = n < v->tag_left ? n : v->tag_left;
      p += k;
      n -= k;
      v->tag_left -= (uint32_t)k;
      if (v->tag_left == 0)
        v->flv_st = FLV_PREV;
      break;
    }
    case FLV_TAG_HDR:
      while (n > 0 && v->pos < 11) {
        v->buf[v->pos++] = *p++;
        n--;
      }
      if (v->pos == 11) {
        uint8_t type = v->buf[0];
        if (type != 8 && type != 9 && type != 18) {
          viewer_error(v, E_TAG_TYPE);
          v->flv_st = FLV_DESYNC;
          break;
        }
        v->tag_size = be24(v->buf + 1);
        v->tag_left = v->tag_size;
        if (v->tag_left == 0) {
          flv_tag_done(v);
          v->flv_st = FLV_PREV;
          v->pos = 0;
        } else {
          v->flv_st = FLV_DATA;
        }
      }
      break;
    case FLV_DATA: {
      while (n > 0 && v->pos < 13 && v->tag_left > 0) {
        v->buf[v->pos++] = *p++;
        n--;
        v->tag_left--;
      }
      size_t k = n < v->tag_left ? n : v->tag_left;
      p += k;
      n -= k;
      v->tag_left -= (uint32_t)k;
      if (v->tag_left == 0) {
        flv_tag_done(v);
        v->flv_st = FLV_PREV;
        v->pos = 0;
      }
      break;
    }
    case FLV_PREV:
      while (n > 0 && v->pos < 4) {
        v->buf[v->pos++] = *p++;
        n--;
      }
      if (v->pos == 4) {
        uint32_t want = v->tags == 0 ? 0 : 11 + v->tag_size;
        if (be32(v->buf) != want)
          viewer_error(v, E_PREV_SIZE);
        v->flv_st = FLV_TAG_HDR;
        v->pos = 0;
      }
      break;
    case FLV_DESYNC:
      return;
    }
  }
}

/* ---- HTTP response ---------------------------------------------------------------------------- */

static int hexval(uint8_t c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* End of a chunk-size line. Returns 0, or -1 when the line held no size. */
static int chunk_size_done(viewer *v)
{
  if (v->digits == 0)
    return -1;
  if (v->chunk_left == 0) {
    v->chunk_st = CH_TRAILER;
    v->digits = 0; /* trailer: length of the current line */
  } else {
    v->chunk_st = CH_DATA;
  }
  return 0;
}

/* Chunked body bytes. Returns 0, 1 when the body has ended, -1 on malformed framing. */
static int chunked_feed(viewer *v, const uint8_t *p, size_t n)
{
  while (n > 0) {
    uint8_t c = *p;
    switch (v->chunk_st) {
    case CH_SIZE: {
      int d = hexval(c);
      if (d >= 0) {
        if (v->chunk_left > 0x7ffffff)
          return -1;
        v->chunk_left = v->chunk_left * 16 + (uint32_t)d;
        v->digits = 1;
      } else if (c == ';' || c == ' ' || c == '\t') {
        v->chunk_st = CH_EXT;
      } else if (c == '\r') {
        v->chunk_st = CH_SIZE_LF;
      } else if (c == '\n') {
        if (chunk_size_done(v) < 0)
          return -1;
      } else {
        return -1;
      }
      p++;
      n--;
      break;
    }
    case CH_EXT:
      if (c == '\n' && chunk_size_done(v) < 0)
        return -1;
      p++;
      n--;
      break;
    case CH_SIZE_LF:
      if (c != '\n' || chunk_size_done(v) < 0)
        return -1;
      p++;
      n--;
      break;
    case CH_DATA: {
      size_t k = n < v->chunk_left ? n : v->chunk_left;
      flv_feed(v, p, k);
      p += k;
      n -= k;
      v->chunk_left -= (uint32_t)k;
      if (v->chunk_left == 0)
        v->chunk_st = CH_DATA_CR;
      break;
    }
    case CH_DATA_CR:
      if (c != '\r')
        return -1;
      v->chunk_st = CH_DATA_LF;
      p++;
      n--;
      break;
    case CH_DATA_LF:
      if (c != '\n')
        return -1;
      v->chunk_st = CH_SIZE;
      v->chunk_left = 0;
      v->digits = 0;
      p++;
      n--;
      break;
    case CH_TRAILER:
      if (c == '\n') {
        if (v->digits == 0) {
          v->chunk_st = CH_DONE;
          return 1;
        }
        v->digits = 0;
      } else if (c != '\r') {
        v->digits = 1;
      }
      p++;
      n--;
      break;
    case CH_DONE:
      return 1;
    }
  }
  return 0;
}

/* Body bytes in whatever framing the head announced. Returns 0, 1 at the end of the body, -1 on
 * malformed framing. */
static int body_feed(viewer *v, const uint8_t *p, size_t n)
{
  switch (v->body) {
  case BODY_CHUNKED:
    return chunked_feed(v, p, n);
  case BODY_LENGTH: {
    size_t k = n < v->clen_left ? n : (size_t)v->clen_left;
    flv_feed(v, p, k);
    v->clen_left -= k;
    return v->clen_left == 0 ? 1 : 0;
  }
  default:
    flv_feed(v, p, n);
    return 0;
  }
}

/* One complete head line (lowercased, in buf, NUL-terminated). Returns 0, 1 at the end of the head,
 * -1 on a malformed status line. */
static int head_line(viewer *v)
{
  const char *line = (const char *)v->buf;
  if (v->status == 0) {
    int code = 0;
    if (strncmp(line, "http/1.", 7) != 0 || line[7] == 0 || sscanf(line + 8, " %3d", &code) != 1 ||
        code < 100)
      return -1;
    v->status = (uint16_t)code;
    return 0;
  }
  if (v->pos == 0)
    return 1;
  if (strncmp(line, "transfer-encoding:", 18) == 0 && strstr(line + 18, "chunked"))
    v->flags |= F_CHUNKED;
  else if (strncmp(line, "content-length:", 15) == 0) {
    v->clen_left = strtoull(line + 15, NULL, 10);
    v->flags |= F_HAVE_CLEN;
  }
  return 0;
}

/* Bytes from the socket: the head, then the body. */
static void viewer_bytes(viewer *v, const uint8_t *p, size_t n)
{
  int r = 0;
  while (v->state == V_HEAD && n > 0) {
    uint8_t c = *p++;
    n--;
    if (++v->head_bytes > MAX_HEAD_BYTES) {
      viewer_close(v, END_PROTOCOL);
      return;
    }
    if (c == '\r')
      continue;
    if (c != '\n') {
      if (v->pos < sizeof v->buf - 1)
        v->buf[v->pos++] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    v->buf[v->pos] = 0;
    r = head_line(v);
    v->pos = 0;
    if (r < 0) {
      viewer_close(v, END_PROTOCOL);
      return;
    }
    if (r == 1) {
      if (v->status != 200) {
        if (!g.first_bad_status)
          g.first_bad_status = v->status;
        viewer_close(v, END_STATUS);
        return;
      }
      v->body = (v->flags & F_CHUNKED) ? BODY_CHUNKED : (v->flags & F_HAVE_CLEN) ? BODY_LENGTH : BODY_CLOSE;
      v->state = V_BODY;
      if (v->body == BODY_LENGTH && v->clen_left == 0) {
        viewer_close(v, END_EARLY);
        return;
      }
    }
  }
  if (v->state != V_BODY || n == 0)
    return;
  r = body_feed(v, p, n);
  if (r < 0) {
    viewer_error(v, E_CHUNKED);
    viewer_close(v, END_PROTOCOL);
  } else if (r > 0) {
    viewer_close(v, END_EARLY);
  }
}

/* ---- sockets ---------------------------------------------------------------------------------- */

static int viewer_send_request(viewer *v)
{
  while (v->wofs < g.request_len) {
    ssize_t w = send(v->fd, g.request + v->wofs, g.request_len - v->wofs, MSG_NOSIGNAL);
    if (w < 0)
      return errno == EAGAIN ? 0 : -1;
    v->wofs = (uint16_t)(v->wofs + w);
  }
  return 1;
}

/* The request is out: from now on the viewer is read only, through the reading set; with
 * --join-at-once it stays in the connect set (read as soon as bytes come, as a player's first
 * fetch is) until its first keyframe, so the read interval is not inside the join figures. */
static void viewer_to_reading(viewer *v, int in_conn_set)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = v };
  if (g.join_at_once && !(v->flags & F_KEY) && v->state == V_CONNECTING) {
    if (epoll_ctl(g.conn_ep, in_conn_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, v->fd, &ev) < 0) {
      if (!g.first_errno)
        g.first_errno = errno;
      viewer_close(v, END_CONNECT);
      return;
    }
    v->flags |= F_JOINING;
    v->state = V_HEAD;
    return;
  }
  if (in_conn_set)
    epoll_ctl(g.conn_ep, EPOLL_CTL_DEL, v->fd, NULL);
  if (epoll_ctl(g.read_ep, EPOLL_CTL_ADD, v->fd, &ev) < 0) {
    if (!g.first_errno)
      g.first_errno = errno;
    viewer_close(v, END_CONNECT);
    return;
  }
  v->state = V_HEAD;
}

static void viewer_connect_failed(viewer *v, int err)
{
  if (!g.first_errno)
    g.first_errno = err;
  viewer_close(v, END_CONNECT);
}

static void viewer_start(viewer *v)
{
  v->t_start = g.now;
  v->state = V_CONNECTING;
  g.open++;
  v->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (v->fd < 0) {
    viewer_connect_failed(v, errno);
    return;
  }
  if (connect(v->fd, (struct sockaddr *)&g.addr, g.addr_len) < 0 && errno != EINPROGRESS) {
    viewer_connect_failed(v, errno);
    return;
  }
  /* Even a connect that completed at once goes through EPOLLOUT: one code path. */
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = v };
  if (epoll_ctl(g.conn_ep, EPOLL_CTL_ADD, v->fd, &ev) < 0)
    viewer_connect_failed(v, errno);
}

/* The socket is writable (connected, or failed to). */
static void viewer_on_writable(viewer *v)
{
  int err = 0;
  socklen_t len = sizeof err;
  if (v->state != V_CONNECTING)
    return;
  if (getsockopt(v->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err) {
    viewer_connect_failed(v, err);
    return;
  }
  int r = viewer_send_request(v);
  if (r < 0)
    viewer_connect_failed(v, errno);
  else if (r > 0)
    viewer_to_reading(v, 1);
}

/* Reads what the socket has (up to READS_PER_TICK full buffers). */
static void viewer_read(viewer *v)
{
  for (int i = 0; i < READS_PER_TICK && (v->state == V_HEAD || v->state == V_BODY); i++) {
    ssize_t r = read(v->fd, rbuf, sizeof rbuf);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && errno == EAGAIN)
      return;
    if (r <= 0) {
      viewer_close(v, v->state == V_HEAD && v->head_bytes == 0 && r < 0 ? END_CONNECT : END_EARLY);
      return;
    }
    g.now = mono_us();
    if (v->t_first_byte == 0)
      v->t_first_byte = g.now;
    else if (g.now - v->t_last_byte > STALL_US) {
      g.stalls++;
      v->flags |= F_STALLED;
      if (g.now - v->t_last_byte > g.max_gap)
        g.max_gap = g.now - v->t_last_byte;
    }
    v->t_last_byte = g.now;
    v->bytes += (uint64_t)r;
    g.bytes += (uint64_t)r;
    viewer_bytes(v, rbuf, (size_t)r);
    if ((size_t)r < sizeof rbuf)
      return;
  }
}

/* --join-at-once: a joining viewer is read as its bytes come; at its first keyframe it moves to
 * the reading set and its read interval. */
static void viewer_join_read(viewer *v)
{
  viewer_read(v);
  if ((v->flags & F_JOINING) && (v->flags & F_KEY) && (v->state == V_HEAD || v->state == V_BODY)) {
    v->flags &= (uint16_t)~F_JOINING;
    int state = v->state;
    viewer_to_reading(v, 1);
    if (v->state == V_HEAD)
      v->state = (uint8_t)state;
  }
}

/* --join-at-once: the connect set's ready joiners and connects, served in the middle of a read
 * tick (reading 3000 viewers takes this client milliseconds, which a joiner's first byte would
 * otherwise wait for). */
static void serve_joiners(void)
{
  struct epoll_event ev[64];
  int n = epoll_wait(g.conn_ep, ev, 64, 0);
  for (int i = 0; i < n; i++) {
    viewer *v = ev[i].data.ptr;
    if (v == NULL)
      continue; /* the nested reading set: this is its tick */
    if (v->flags & F_JOINING)
      viewer_join_read(v);
    else
      viewer_on_writable(v);
  }
}

/* One read tick: every readable viewer once. */
static void read_tick(void)
{
  int n = epoll_wait(g.read_ep, g.events, (int)g.viewers, 0);
  for (int i = 0; i < n; i++) {
    viewer_read(g.events[i].data.ptr);
    if (g.join_at_once && i % 64 == 63)
      serve_joiners();
  }
}

/* ---- setup ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
  fputs("usage: fe_load --url http://HOST:PORT/PATH [options]\n"
        "  --viewers N            viewers to open (default 1)\n"
        "  --rate R               joins per second, 0 = all at once (default 1000)\n"
        "  --duration S           measuring window in seconds (default 20)\n"
        "  --warmup S             after all viewers have joined, wait this long before measuring\n"
        "                         (default 1); lag drift also starts this long after each\n"
        "                         viewer's first keyframe\n"
        "  --join-timeout S       stop waiting for first keyframes this long after the last\n"
        "                         join (default 10)\n"
        "  --read-interval-ms MS  read each viewer at most this often (default 10; 0 = at once)\n"
        "  --join-at-once         read a joining viewer as its bytes come, until its first\n"
        "                         keyframe (a player's first fetch); then every read interval\n"
        "  --joins-file FILE      one line per viewer: join time, first byte, first keyframe (ms)\n"
        "  --progress S           progress line on stderr every S seconds (default 5; 0 = none)\n"
        "  --json                 report as one JSON line on stdout (the text report goes to stderr)\n",
        f);
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
  char *end;
  double d = strtod(s, &end);
  if (end == s || *end || !(d >= min && d <= max)) {
    note("%s: %s is not a number in [%g, %g]", opt, s, min, max);
    exit(2);
  }
  return d;
}

static void parse_args(int argc, char **argv)
{
  static const struct option opts[] = {
    { "url", required_argument, NULL, 'u' },
    { "viewers", required_argument, NULL, 'n' },
    { "rate", required_argument, NULL, 'r' },
    { "duration", required_argument, NULL, 'd' },
    { "warmup", required_argument, NULL, 'w' },
    { "join-timeout", required_argument, NULL, 'J' },
    { "read-interval-ms", required_argument, NULL, 'i' },
    { "progress", required_argument, NULL, 'p' },
    { "json", no_argument, NULL, 'j' },
    { "join-at-once", no_argument, NULL, 'A' },
    { "joins-file", required_argument, NULL, 'F' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  g.viewers = 1;
  g.rate = 1000;
  g.duration = 20;
  g.warmup = 1;
  g.join_timeout = 10;
  g.progress = 5;
  g.read_interval_ms = 10;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'u': g.url = optarg; break;
    case 'n': g.viewers = (long)parse_num("--viewers", optarg, 1, 1e6); break;
    case 'r': g.rate = parse_num("--rate", optarg, 0, 1e7); break;
    case 'd': g.duration = parse_num("--duration", optarg, 0.1, 1e6); break;
    case 'w': g.warmup = parse_num("--warmup", optarg, 0, 1e6); break;
    case 'J': g.join_timeout = parse_num("--join-timeout", optarg, 0, 1e6); break;
    case 'i': g.read_interval_ms = (int)parse_num("--read-interval-ms", optarg, 0, 60000); break;
    case 'A': g.join_at_once = 1; break;
    case 'F': g.joins_file = optarg; break;
    case 'p': g.progress = parse_num("--progress", optarg, 0, 1e6); break;
    case 'j': g.json = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); exit(2);
    }
  }
  if (!g.url || optind != argc) {
    usage(stderr);
    exit(2);
  }
}

/* Resolves http://HOST[:PORT]/PATH into g.addr and builds the request every viewer sends. */
static void setup_target(void)
{
  const char *u = g.url;
  if (strncmp(u, "http://", 7) != 0) {
    note("--url %s: only http:// URLs are supported", g.url);
    exit(2);
  }
  u += 7;
  const char *path = strchr(u, '/');
  if (!path)
    path = "/";
  size_t authority_len = (size_t)(strchrnul(u, '/') - u);
  char authority[256], host[256], port[16] = "80";
  if (authority_len == 0 || authority_len >= sizeof authority) {
    note("--url %s: bad host", g.url);
    exit(2);
  }
  memcpy(authority, u, authority_len);
  authority[authority_len] = 0;
  const char *hp = authority, *colon;
  size_t host_len;
  if (hp[0] == '[') { /* [v6]:port */
    const char *close_br = strchr(hp, ']');
    if (!close_br) {
      note("--url %s: bad host", g.url);
      exit(2);
    }
    host_len = (size_t)(close_br - hp - 1);
    memcpy(host, hp + 1, host_len);
    colon = close_br[1] == ':' ? close_br + 1 : NULL;
  } else {
    colon = strrchr(hp, ':');
    host_len = colon ? (size_t)(colon - hp) : strlen(hp);
    memcpy(host, hp, host_len);
  }
  host[host_len] = 0;
  if (colon)
    snprintf(port, sizeof port, "%s", colon + 1);

  struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
  int rc = getaddrinfo(host, port, &hints, &ai);
  if (rc != 0) {
    note("--url %s: %s", g.url, gai_strerror(rc));
    exit(2);
  }
  memcpy(&g.addr, ai->ai_addr, ai->ai_addrlen);
  g.addr_len = ai->ai_addrlen;
  freeaddrinfo(ai);

  g.request_len = (size_t)asprintf(&g.request,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fe_load\r\n"
                                   "Accept: */*\r\nConnection: keep-alive\r\n\r\n",
                                   path, authority);
  if (g.request_len >= 60000) {
    note("--url %s: too long", g.url);
    exit(2);
  }
}

/* Raises the descriptor limit to what the viewers need, or says why it cannot. */
static void setup_fd_limit(void)
{
  struct rlimit rl;
  rlim_t need = (rlim_t)g.viewers + FD_RESERVE;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    struct rlimit up = { need, need }; /* allowed with CAP_SYS_RESOURCE (root) */
    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
      rl = up;
  }
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    note("%ld viewers need %lu file descriptors, but the hard limit (ulimit -Hn) is %lu;\n"
         "  raise it (as root: ulimit -Hn %lu; or LimitNOFILE= / limits.conf) or use fewer viewers",
         g.viewers, (unsigned long)need, (unsigned long)rl.rlim_max, (unsigned long)need);
    exit(2);
  }
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
    note("setrlimit(RLIMIT_NOFILE, %lu): %s", (unsigned long)rl.rlim_cur, strerror(errno));
    exit(2);
  }

  FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  long lo, hi;
  if (f && fscanf(f, "%ld %ld", &lo, &hi) == 2 && hi - lo + 1 < g.viewers)
    note("warning: only %ld ephemeral ports (net.ipv4.ip_local_port_range) for %ld viewers",
         hi - lo + 1, g.viewers);
  if (f)
    fclose(f);
}

/* ---- report ----------------------------------------------------------------------------------- */

typedef struct dist {
  double *x;
  long n;
} dist;

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted distribution; NAN when empty. */
static double pct(const dist *d, double p)
{
  if (d->n == 0)
    return NAN;
  long k = (long)ceil(p * (double)d->n) - 1;
  if (k < 0)
    k = 0;
  if (k >= d->n)
    k = d->n - 1;
  return d->x[k];
}

static void text_dist(FILE *f, const char *label, const dist *d, const char *unit)
{
  if (d->n == 0)
    fprintf(f, "%-15s none\n", label);
  else
    fprintf(f, "%-15s p50 %.1f %s  p99 %.1f %s  max %.1f %s  (n=%ld)\n", label, pct(d, 0.5), unit,
            pct(d, 0.99), unit, pct(d, 1.0), unit, d->n);
}

static void json_num(FILE *f, double x)
{
  if (isnan(x))
    fputs("null", f);
  else
    fprintf(f, "%.3f", x);
}

static void json_dist(FILE *f, const char *key, const dist *d)
{
  fprintf(f, "\"%s\":{\"n\":%ld,\"p50\":", key, d->n);
  json_num(f, pct(d, 0.5));
  fputs(",\"p99\":", f);
  json_num(f, pct(d, 0.99));
  fputs(",\"max\":", f);
  json_num(f, pct(d, 1.0));
  fputs("},", f);
}

static void report(void)
{
  dist ttfb = { calloc((size_t)g.viewers, sizeof(double)), 0 };
  dist ttfk = { calloc((size_t)g.viewers, sizeof(double)), 0 };
  dist drift = { calloc((size_t)g.viewers, sizeof(double)), 0 };
  long ok = 0, failed = 0, no_key = 0, drift_over = 0, stalled = 0, with_errors = 0;
  uint64_t errs_total = 0;

  FILE *jf = g.joins_file ? fopen(g.joins_file, "w") : NULL;
  if (g.joins_file && !jf)
    note("--joins-file %s: %s", g.joins_file, strerror(errno));
  for (long i = 0; i < g.viewers; i++) {
    viewer *v = &g.v[i];
    if (jf)
      fprintf(jf, "%.3f %.3f %.3f\n", (double)(v->t_start - g.t0) / 1000.0,
              v->t_first_byte ? (double)(v->t_first_byte - v->t_start) / 1000.0 : -1.0,
              v->t_key ? (double)(v->t_key - v->t_start) / 1000.0 : -1.0);
    if (v->t_first_byte)
      ttfb.x[ttfb.n++] = (double)(v->t_first_byte - v->t_start) / 1000.0;
    if (v->flags & F_KEY)
      ttfk.x[ttfk.n++] = (double)(v->t_key - v->t_start) / 1000.0;
    else
      no_key++;
    if (v->flags & F_LAG0) {
      double dr = (double)v->lag_end - (double)v->lag_start;
      drift.x[drift.n++] = dr;
      if (dr > DRIFT_LIMIT_MS)
        drift_over++;
    }
    if (v->flags & F_STALLED)
      stalled++;
    if (v->flags & F_ERR)
      with_errors++;
  }
  if (jf)
    fclose(jf);
  for (int e = END_CONNECT; e < END__COUNT; e++)
    failed += g.ends[e];
  ok = g.ends[END_NONE];
  for (int e = 0; e < E__COUNT; e++)
    errs_total += g.errs[e];
  qsort(ttfb.x, (size_t)ttfb.n, sizeof(double), cmp_double);
  qsort(ttfk.x, (size_t)ttfk.n, sizeof(double), cmp_double);
  qsort(drift.x, (size_t)drift.n, sizeof(double), cmp_double);
  dist tlag = { g.tick_lag, g.tick_lag_n };
  if (tlag.x)
    qsort(tlag.x, (size_t)tlag.n, sizeof(double), cmp_double);

  double join_s = (double)(g.t_all_started - g.t0) / 1e6;
  double measure_s = (double)(g.t_measure1 - g.t_measure0) / 1e6;
  double run_s = (double)(g.t_measure1 - g.t0) / 1e6;
  uint64_t mbytes = g.bytes_at_measure1 - g.bytes_at_measure0;
  double mbps = measure_s > 0 ? (double)mbytes * 8 / measure_s / 1e6 : NAN;
  double cpu = measure_s > 0 ? (g.cpu_at_measure1 - g.cpu_at_measure0) / measure_s * 100 : NAN;
  double cpu_run = run_s > 0 ? g.cpu_at_measure1 / run_s * 100 : NAN;

  FILE *f = g.json ? stderr : stdout;
  fprintf(f, "fe_load: %s, %ld viewers joined at %g/s in %.1f s, measured %.1f s, read every %d ms%s\n",
          g.url, g.viewers, g.rate, join_s, measure_s, g.read_interval_ms,
          g.join_at_once ? " (joining viewers at once until their first keyframe)" : "");
  fprintf(f, "%-15s %ld ok, %ld failed (connect %ld, status %ld, closed early %ld, protocol %ld, "
             "no response %ld)",
          "connections", ok, failed, g.ends[END_CONNECT], g.ends[END_STATUS], g.ends[END_EARLY],
          g.ends[END_PROTOCOL], g.ends[END_NO_RESPONSE]);
  if (g.first_bad_status)
    fprintf(f, "; first bad status %d", g.first_bad_status);
  if (g.first_errno)
    fprintf(f, "; first socket error: %s", strerror(g.first_errno));
  fputc('\n', f);
  text_dist(f, "first byte", &ttfb, "ms");
  text_dist(f, "first keyframe", &ttfk, "ms");
  text_dist(f, "client lag", &tlag, "ms");
  if (no_key)
    fprintf(f, "%-15s %ld viewers never got a keyframe\n", "", no_key);
  text_dist(f, "lag drift", &drift, "ms");
  fprintf(f, "%-15s %ld viewers drifted more than %d ms\n", "", drift_over, DRIFT_LIMIT_MS);
  fprintf(f, "%-15s %lu gaps > %d ms without a byte, in %ld viewers (longest %.2f s)\n", "stalls",
          (unsigned long)g.stalls, STALL_US / 1000, stalled, (double)g.max_gap / 1e6);
  fprintf(f, "%-15s %.1f MB in %.1f s = %.1f Mbit/s = %.3f Gbit/s (whole run %.1f MB)\n",
          "throughput", (double)mbytes / 1e6, measure_s, mbps, mbps / 1000, (double)g.bytes / 1e6);
  fprintf(f, "%-15s %lu (global timestamp backward steps %lu)\n", "tags", (unsigned long)g.tags,
          (unsigned long)g.global_back);
  fprintf(f, "%-15s %lu errors in %ld viewers", "validation", (unsigned long)errs_total, with_errors);
  for (int e = 0; e < E__COUNT; e++)
    if (g.errs[e])
      fprintf(f, "%s %s %lu", e ? "," : ":", err_names[e], (unsigned long)g.errs[e]);
  fputc('\n', f);
  fprintf(f, "%-15s %.1f %% of a core while measuring (%.1f %% over the whole run)\n", "client cpu",
          cpu, cpu_run);

  if (g.json) {
    FILE *o = stdout;
    fprintf(o, "{\"url\":\"%s\",\"viewers\":%ld,\"rate\":%g,\"read_interval_ms\":%d,\"join_at_once\":%s,",
            g.url, g.viewers, g.rate, g.read_interval_ms, g.join_at_once ? "true" : "false");
    fputs("\"join_seconds\":", o);
    json_num(o, join_s);
    fputs(",\"measure_seconds\":", o);
    json_num(o, measure_s);
    fprintf(o, ",\"ok\":%ld,\"failed\":%ld,\"failures\":{", ok, failed);
    for (int e = END_CONNECT; e < END__COUNT; e++)
      fprintf(o, "%s\"%s\":%ld", e > END_CONNECT ? "," : "", end_names[e], g.ends[e]);
    fprintf(o, "},\"first_bad_status\":%d,", g.first_bad_status);
    json_dist(o, "ttfb_ms", &ttfb);
    json_dist(o, "ttfk_ms", &ttfk);
    json_dist(o, "client_lag_ms", &tlag);
    fprintf(o, "\"no_keyframe\":%ld,", no_key);
    json_dist(o, "drift_ms", &drift);
    fprintf(o, "\"drift_over_1s\":%ld,\"stalls\":%lu,\"stalled_viewers\":%ld,\"max_gap_ms\":%.1f,",
            drift_over, (unsigned long)g.stalls, stalled, (double)g.max_gap / 1000);
    fprintf(o, "\"bytes_total\":%lu,\"bytes_measured\":%lu,\"mbps\":", (unsigned long)g.bytes,
            (unsigned long)mbytes);
    json_num(o, mbps);
    fputs(",\"gbps\":", o);
    json_num(o, mbps / 1000);
    fprintf(o, ",\"tags\":%lu,\"global_ts_backward\":%lu,\"validation_errors\":%lu,"
               "\"viewers_with_errors\":%ld,\"errors\":{",
            (unsigned long)g.tags, (unsigned long)g.global_back, (unsigned long)errs_total,
            with_errors);
    for (int e = 0; e < E__COUNT; e++)
      fprintf(o, "%s\"%s\":%lu", e ? "," : "", err_names[e], (unsigned long)g.errs[e]);
    fputs("},\"client_cpu_pct\":", o);
    json_num(o, cpu);
    fputs(",\"client_cpu_pct_run\":", o);
    json_num(o, cpu_run);
    fputs("}\n", o);
    fflush(o);
  }
  free(ttfb.x);
  free(ttfk.x);
  free(drift.x);
}

/* ---- main loop -------------------------------------------------------------------------------- */

static void enter_phase(enum phase p)
{
  g.phase = p;
  g.t_phase = g.now;
  switch (p) {
  case P_SETTLE:
    g.t_all_started = g.now;
    break;
  case P_WARMUP:
    note("all joined after %.1f s: %ld open, %ld with a keyframe, %ld failed",
         (double)(g.now - g.t0) / 1e6, g.open, g.settled - (g.viewers - g.open), g.viewers - g.open);
    break;
  case P_MEASURE:
    g.t_measure0 = g.now;
    g.measure_start = g.now;
    g.bytes_at_measure0 = g.bytes;
    g.cpu_at_measure0 = cpu_seconds();
    note("measure start");
    break;
  case P_DONE:
    g.t_measure1 = g.now;
    if (g.t_measure0 == 0) /* stopped before measuring */
      g.t_measure0 = g.now;
    g.bytes_at_measure1 = g.bytes;
    g.cpu_at_measure1 = cpu_seconds();
    note("measure end");
    break;
  default:
    break;
  }
}

/* Moves through the phases; returns the next time (us) a phase may change. */
static int64_t advance_phases(void)
{
  if (stop_requested && g.phase != P_DONE) {
    if (g.phase < P_SETTLE)
      g.t_all_started = g.now;
    enter_phase(P_DONE);
  }
  switch (g.phase) {
  case P_JOIN:
    if (g.started < g.viewers)
      return INT64_MAX;
    enter_phase(P_SETTLE);
    /* fall through */
  case P_SETTLE: {
    int64_t until = g.t_phase + (int64_t)(g.join_timeout * 1e6);
    if (g.settled < g.viewers && g.now < until)
      return until;
    enter_phase(P_WARMUP);
  }
    /* fall through */
  case P_WARMUP: {
    int64_t until = g.t_phase + (int64_t)(g.warmup * 1e6);
    if (g.now < until)
      return until;
    enter_phase(P_MEASURE);
  }
    /* fall through */
  case P_MEASURE: {
    int64_t until = g.t_phase + (int64_t)(g.duration * 1e6);
    if (g.now < until)
      return until;
    enter_phase(P_DONE);
  }
    /* fall through */
  default:
    return INT64_MAX;
  }
}

static void progress_line(int64_t *t_last, uint64_t *bytes_last, double *cpu_last)
{
  static const char *const names[] = { "joining", "settling", "warming up", "measuring", "done" };
  double dt = (double)(g.now - *t_last) / 1e6, cpu = cpu_seconds();
  uint64_t errs = 0;
  for (int e = 0; e < E__COUNT; e++)
    errs += g.errs[e];
  note("%s: %ld/%ld started, %ld open, %.1f Mbit/s, client cpu %.0f %%, %lu errors, %lu stalls",
       names[g.phase], g.started, g.viewers, g.open, (double)(g.bytes - *bytes_last) * 8 / dt / 1e6,
       (cpu - *cpu_last) / dt * 100, (unsigned long)errs, (unsigned long)g.stalls);
  *t_last = g.now;
  *bytes_last = g.bytes;
  *cpu_last = cpu;
}

static void run(void)
{
  struct epoll_event cev[256];
  int64_t interval = (int64_t)g.read_interval_ms * 1000;
  int64_t next_tick, next_progress, prog_t;
  uint64_t prog_bytes = 0;
  double prog_cpu = cpu_seconds();

  g.now = g.t0 = mono_us();
  g.measure_start = INT64_MAX;
  g.tick_lag_cap = 1 << 20;
  g.tick_lag = calloc((size_t)g.tick_lag_cap, sizeof(double));
  if (!g.tick_lag)
    g.tick_lag_cap = 0;
  next_tick = g.now;
  prog_t = g.now;
  next_progress = g.progress > 0 ? g.now + (int64_t)(g.progress * 1e6) : INT64_MAX;
  note("joining %ld viewers at %g/s to %s", g.viewers, g.rate, g.url);

  while (g.phase != P_DONE) {
    g.now = mono_us();
    while (g.started < g.viewers &&
           (g.rate <= 0 || g.now >= g.t0 + (int64_t)((double)g.started * 1e6 / g.rate)))
      viewer_start(&g.v[g.started++]);
    int64_t deadline = advance_phases();
    if (g.phase == P_DONE)
      break;
    if (g.started < g.viewers) {
      int64_t next_join = g.t0 + (int64_t)((double)g.started * 1e6 / g.rate);
      if (next_join < deadline)
        deadline = next_join;
    }
    if (interval > 0 && g.now >= next_tick) {
      if (g.tick_lag_n < g.tick_lag_cap)
        g.tick_lag[g.tick_lag_n++] = (double)(g.now - next_tick) / 1000.0;
      read_tick();
      next_tick += interval;
      g.now = mono_us();
      if (next_tick < g.now) /* saturated: tick again at once, never in bursts */
        next_tick = g.now;
    }
    if (g.now >= next_progress) {
      progress_line(&prog_t, &prog_bytes, &prog_cpu);
      next_progress += (int64_t)(g.progress * 1e6);
    }
    if (interval > 0 && next_tick < deadline)
      deadline = next_tick;
    if (next_progress < deadline)
      deadline = next_progress;
    int64_t wait_us = deadline - g.now;
    int timeout = wait_us <= 0 ? 0 : wait_us > 1000000 ? 1000 : (int)((wait_us + 999) / 1000);
    int n = epoll_wait(g.conn_ep, cev, 256, timeout);
    if (n < 0 && errno != EINTR) {
      note("epoll_wait: %s", strerror(errno));
      exit(1);
    }
    g.now = mono_us();
    for (int i = 0; i < n; i++) {
      if (cev[i].data.ptr == NULL)
        read_tick(); /* --read-interval-ms 0: the reading set is nested in this one */
      else if (((viewer *)cev[i].data.ptr)->flags & F_JOINING)
        viewer_join_read(cev[i].data.ptr);
      else
        viewer_on_writable(cev[i].data.ptr);
    }
  }

  /* End of run: the open are ok, the rest failed; gaps running at the end are stalls too. */
  for (long i = 0; i < g.viewers; i++) {
    viewer *v = &g.v[i];
    if (v->state == V_BODY && v->t_last_byte && g.now - v->t_last_byte > STALL_US) {
      g.stalls++;
      v->flags |= F_STALLED;
      if (g.now - v->t_last_byte > g.max_gap)
        g.max_gap = g.now - v->t_last_byte;
    }
    if (v->state == V_CONNECTING)
      viewer_close(v, END_CONNECT);
    else if (v->state == V_HEAD)
      viewer_close(v, END_NO_RESPONSE);
    else if (v->state == V_BODY) {
      close(v->fd);
      v->fd = -1;
      g.ends[END_NONE]++;
    }
  }
}

int main(int argc, char **argv)
{
  parse_args(argc, argv);
  setup_target();
  setup_fd_limit();

  struct sigaction sa = { .sa_handler = on_signal };
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  g.v = calloc((size_t)g.viewers, sizeof(viewer));
  g.events = calloc((size_t)g.viewers, sizeof(struct epoll_event));
  g.conn_ep = epoll_create1(EPOLL_CLOEXEC);
  g.read_ep = epoll_create1(EPOLL_CLOEXEC);
  if (!g.v || !g.events || g.conn_ep < 0 || g.read_ep < 0) {
    note("setup: %s", strerror(errno));
    return 1;
  }
  for (long i = 0; i < g.viewers; i++)
    g.v[i].fd = -1;
  if (g.read_interval_ms == 0) {
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(g.conn_ep, EPOLL_CTL_ADD, g.read_ep, &ev);
  }

  run();
  report();
  return 0;
}
