/* HTTP/2 sessions and their streams (see fe_http2.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "http/fe_http2.h"
#include "log/fe_log.h"

#define FE_H2_IOV 256                  /* iovecs of one batch (one writev) */
#define FE_H2_ARENA (16u << 10)        /* control frames and DATA frame headers of one batch */
#define FE_H2_REFS 64                  /* DATA frames of one batch */
#define FE_H2_BATCH_BYTES (512u << 10) /* a batch this full is written before more frames are made */
#define FE_H2_LIVE_IOV 32              /* spans of one live fill */
#define FE_H2_LIVE_BYTES (128u << 10)  /* bytes of one live fill (whole tags: may be more) */
#define FE_H2_ROUNDS 32                /* send + flush rounds per pump before the loop polls again */
#define FE_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define FE_H2_MAX_CONTINUATIONS 8      /* CONTINUATION frames of one header block */

enum { FE_H2B_NONE, FE_H2B_PIECES, FE_H2B_LIVE };

typedef struct fe_h2 fe_h2;
typedef struct fe_h2_stream fe_h2_stream;

/* A stream and its request. Its body goes out from one span set at a time (a VOD piece, a finite
 * answer's copy, or a live fill of pinned hub blocks): `sent` bytes of it are in DATA frames,
 * `done` of those are written; the next span comes once done reaches len. */
struct fe_h2_stream {
  fe_conn req;                 /* first: the request, as an HTTP/1.1 one */
  fe_h2 *s;
  int32_t id;
  struct fe_h2_stream *prev, *next; /* the session's streams */
  struct fe_h2_stream *ready_next;  /* a complete head waiting for the router */
  fe_deferred dead;
  int body;                    /* FE_H2B_* */
  int eof;                     /* no span comes after the current one */
  int deferred;                /* the data source answered DEFERRED: resume when there is more */
  int ng_closed;               /* nghttp2 is done with the stream */
  int ended;                   /* the request ended (fe_conn_end) */
  int freeing;
  int answered;                /* a head was submitted */
  int refuse;                  /* the head is answered with this status (431, 400) */
  const char *why;
  size_t hdr_bytes;            /* the header list as SETTINGS_MAX_HEADER_LIST_SIZE counts it */
  int host_seen, method_seen;
  fe_span authority;
  size_t inflight;             /* bytes of its spans in batches not yet written */
  /* the current span set */
  uv_buf_t iov[FE_H2_LIVE_IOV];
  int niov, cur;               /* cur: the iovec `sent` is in */
  size_t cur_off;
  size_t len, sent, done;
  void (*done_cb)(void *ud, int status);
  void *ud;
  char *copy;                  /* a finite answer's body (owned) */
  uint64_t progress;           /* loop ms when its bytes last went into a frame */
};

typedef struct fe_h2_ref {
  fe_h2_stream *st;
  size_t len;
} fe_h2_ref;

/* One writev's worth of frames: control frames and DATA headers copied into the arena, DATA
 * payloads pointing into their streams' spans. */
typedef struct fe_h2_batch {
  uv_buf_t iov[FE_H2_IOV];
  unsigned niov;
  size_t bytes, alen;
  fe_h2_ref refs[FE_H2_REFS];
  int nref;
  char arena[FE_H2_ARENA];
} fe_h2_batch;

struct fe_h2 {
  fe_conn *c;
  nghttp2_session *ng;
  fe_h2_stream *streams;
  int nstreams;
  fe_h2_stream *ready, *ready_tail;
  fe_h2_batch *b;              /* being made */
  fe_h2_batch *wb;             /* in flight (writing) */
  fe_net_write wreq;
  int writing;
  int in_pump, again;
  fe_later later;
  int goaway;                  /* we sent GOAWAY: close once the streams have ended */
  int fatal;                   /* close once what is queued is written */
  int calm;                    /* GOAWAY ENHANCE_YOUR_CALM went out (counted once) */
  int closing;                 /* the connection is closing: nghttp2 is not driven any more */
  fe_h2_stream *upgraded;      /* stream 1 of an Upgrade, routed once the client's preface came */
  uint64_t upgraded_at;
  double tokens, rate;         /* control frames the client may still send (token bucket) */
  uint64_t tokens_at;
  uint64_t idle_since, write_since;
};

static void fe_h2_pump(fe_h2 *s);
static void fe_h2_schedule(fe_h2 *s);

int fe_h2_preface(const char *data, size_t len) {
  return len >= 14 && memcmp(data, FE_H2_PREFACE, len < 24 ? len : 24) == 0;
}

static uint64_t fe_h2_now(const fe_h2 *s) {
  return uv_now(&s->c->w->loop.uv);
}

static const fe_config *fe_h2_cfg(const fe_h2 *s) {
  return s->c->w->gen->cfg;
}

/* ---- streams ------------------------------------------------------------------------------- */

static void fe_h2_stream_free(fe_deferred *d) {
  fe_h2_stream *st = (fe_h2_stream *)((char *)d - offsetof(fe_h2_stream, dead));
  fe_conn *c = &st->req;
  fe_gen_unref(c->gen);
  free(c->buf);
  free(c->body);
  free(c->head);
  free(c->origin);
  free(st->copy);
  free(st);
}

/* Off the session once nghttp2, the request and the writes are all done with it; freed at the
 * loop's next safe point (callers up the stack may still hold it). */
static void fe_h2_maybe_free(fe_h2_stream *st) {
  if (!st->ng_closed || !st->ended || st->inflight || st->freeing)
    return;
  fe_h2 *s = st->s;
  st->freeing = 1;
  if (s->upgraded == st)
    s->upgraded = NULL;
  if (st->prev)
    st->prev->next = st->next;
  else
    s->streams = st->next;
  if (st->next)
    st->next->prev = st->prev;
  if (--s->nstreams == 0)
    s->idle_since = fe_h2_now(s);
  fe_loop_defer(&s->c->w->loop, &st->dead, fe_h2_stream_free);
  if (s->goaway && !s->closing)
    fe_h2_schedule(s); /* the pump closes a connection that said GOAWAY once its streams are gone */
}

static void fe_h2_resume(fe_h2_stream *st) {
  if (!st->deferred || st->ng_closed || st->s->closing)
    return;
  st->deferred = 0;
  nghttp2_session_resume_data(st->s->ng, st->id);
  fe_h2_schedule(st->s);
}

static void fe_h2_span_set(fe_h2_stream *st, const void *p, size_t n) {
  st->iov[0] = uv_buf_init((char *)p, (unsigned)n);
  st->niov = 1;
  st->cur = 0;
  st->cur_off = 0;
  st->len = n;
  st->sent = st->done = 0;
}

/* Every byte of the span is written: the next one may come. */
static void fe_h2_span_complete(fe_h2_stream *st) {
  st->niov = 0;
  st->len = st->sent = st->done = 0;
  if (st->body == FE_H2B_LIVE) {
    fe_hub_viewer_release(&st->req.viewer);
  } else if (st->done_cb) {
    void (*cb)(void *, int) = st->done_cb;
    st->done_cb = NULL;
    cb(st->ud, 0);
  }
  fe_h2_resume(st);
}

/* The request ended and no write holds its span: the hub's pins and a piece's owner are let go. */
static void fe_h2_span_abort(fe_h2_stream *st) {
  st->niov = 0;
  st->len = st->sent = st->done = 0;
  fe_hub_leave(&st->req.viewer);
  if (st->done_cb) {
    void (*cb)(void *, int) = st->done_cb;
    st->done_cb = NULL;
    cb(st->ud, UV_ECANCELED);
  }
}

void fe_h2_stream_end(fe_conn *r, int reset) {
  fe_h2_stream *st = r->h2s;
  fe_h2 *s = st->s;
  st->ended = 1;
  if (!st->ng_closed && !s->closing) {
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              reset ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR);
    fe_h2_schedule(s);
  }
  if (!st->inflight)
    fe_h2_span_abort(st);
  fe_h2_maybe_free(st);
}

/* ---- writing: batches ---------------------------------------------------------------------- */

static void fe_h2_batch_reset(fe_h2_batch *b) {
  b->niov = 0;
  b->bytes = b->alen = 0;
  b->nref = 0;
}

/* Copies bytes into the arena, as one more iovec or the growth of the last one. */
static void fe_h2_batch_copy(fe_h2_batch *b, const void *p, size_t n) {
  char *at = b->arena + b->alen;
  memcpy(at, p, n);
  b->alen += n;
  b->bytes += n;
  uv_buf_t *last = b->niov ? &b->iov[b->niov - 1] : NULL;
  if (last && last->base + last->len == at)
    last->len += n;
  else
    b->iov[b->niov++] = uv_buf_init(at, (unsigned)n);
}

/* The batch's DATA frames are written (status 0) or never will be: their spans move on. */
static void fe_h2_release(fe_h2_batch *b) {
  for (int i = 0; i < b->nref; i++) {
    fe_h2_stream *st = b->refs[i].st;
    st->inflight -= b->refs[i].len;
    if (st->ended) {
      if (!st->inflight) {
        fe_h2_span_abort(st);
        fe_h2_maybe_free(st);
      }
      continue;
    }
    st->done += b->refs[i].len;
    if (st->len && st->done == st->len)
      fe_h2_span_complete(st);
  }
  fe_h2_batch_reset(b);
}

static void fe_h2_on_written(fe_net_write *w, int status) {
  fe_h2 *s = (fe_h2 *)((char *)w - offsetof(fe_h2, wreq));
  s->writing = 0;
  if (status < 0 && status != UV_ECANCELED)
    fe_conn_close(s->c); /* the streams end first: release lets their spans go */
  fe_h2_release(s->wb);
  if (!s->closing)
    fe_h2_pump(s);
}

/* Writes the batch: what the socket takes now, the rest queued (the batch then is in flight and a
 * new one is made). 0 when all is written, 1 when queued, -1 when the connection closed. */
static int fe_h2_flush(fe_h2 *s) {
  fe_h2_batch *b = s->b;
  int w = fe_net_try_writev(&s->c->net, b->iov, b->niov);
  if (w < 0) {
    fe_conn_close(s->c);
    return -1;
  }
  s->write_since = fe_h2_now(s);
  if ((size_t)w == b->bytes) {
    fe_h2_release(b);
    return 0;
  }
  unsigned first = 0;
  size_t skip = (size_t)w;
  while (skip >= b->iov[first].len) {
    skip -= b->iov[first].len;
    first++;
  }
  b->iov[first].base += skip;
  b->iov[first].len -= skip;
  if (!s->wb && !(s->wb = malloc(sizeof(*s->wb)))) {
    fe_conn_close(s->c);
    return -1;
  }
  fe_h2_batch_reset(s->wb);
  s->b = s->wb;
  s->wb = b;
  s->writing = 1;
  if (fe_net_writev(&s->c->net, &s->wreq, b->iov + first, b->niov - first, fe_h2_on_written) < 0) {
    s->writing = 0;
    fe_conn_close(s->c);
    fe_h2_release(b);
    return -1;
  }
  return 1;
}

/* ---- nghttp2's callbacks: sending ---------------------------------------------------------- */

static ssize_t fe_h2_send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud) {
  fe_h2 *s = ud;
  fe_h2_batch *b = s->b;
  size_t room = FE_H2_ARENA - b->alen;
  if (s->writing || room == 0 || b->niov + 2 > FE_H2_IOV)
    return NGHTTP2_ERR_WOULDBLOCK;
  size_t n = len < room ? len : room;
  fe_h2_batch_copy(b, data, n);
  return (ssize_t)n;
}

/* The frame header, then `length` bytes of the stream's span from `sent`, pointing into it. */
static int fe_h2_send_data_cb(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
                              size_t length, nghttp2_data_source *source, void *ud) {
  fe_h2 *s = ud;
  fe_h2_stream *st = source->ptr;
  fe_h2_batch *b = s->b;
  if (s->writing || b->nref == FE_H2_REFS || b->niov + 1 + (unsigned)(st->niov - st->cur) > FE_H2_IOV ||
      FE_H2_ARENA - b->alen < 9)
    return NGHTTP2_ERR_WOULDBLOCK;
  fe_h2_batch_copy(b, framehd, 9);
  size_t left = length;
  while (left > 0) {
    uv_buf_t *v = &st->iov[st->cur];
    size_t n = v->len - st->cur_off < left ? v->len - st->cur_off : left;
    b->iov[b->niov++] = uv_buf_init(v->base + st->cur_off, (unsigned)n);
    st->cur_off += n;
    left -= n;
    if (st->cur_off == v->len) {
      st->cur++;
      st->cur_off = 0;
    }
  }
  b->bytes += length;
  st->sent += length;
  st->inflight += length;
  st->progress = fe_h2_now(s);
  b->refs[b->nref++] = (fe_h2_ref){st, length};
  fe_conn *c = &st->req;
  fe_metrics *m = &s->c->w->loop.metrics;
  if (st->body == FE_H2B_LIVE) {
    c->bytes += length + 9;
    FE_METRIC_ADD(m, bytes_sent, length + 9);
    if (c->res)
      FE_METRIC_ADD(m, res[c->res->metrics_slot].bytes_sent, length + 9);
    if (c->viewer.stats)
      c->viewer.stats->bytes_out += length + 9;
  } else if (st->copy) {
    FE_METRIC_ADD(m, bytes_sent, length + 9);
  }
  int full = b->bytes >= FE_H2_BATCH_BYTES || b->nref == FE_H2_REFS ||
             b->niov + FE_H2_LIVE_IOV + 4 > FE_H2_IOV || FE_H2_ARENA - b->alen < 1024;
  return full ? NGHTTP2_ERR_PAUSE : 0;
}

/* The body's next bytes: from the current span, or a new live fill; nothing is copied. */
static ssize_t fe_h2_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *source, void *ud) {
  fe_h2 *s = ud;
  fe_h2_stream *st = source->ptr;
  fe_conn *c = &st->req;
  if (st->body == FE_H2B_LIVE && st->len == 0) {
    c->writing = 0; /* asked for more: not stuck behind a closed window */
    size_t bytes;
    unsigned room = FE_H2_IOV - s->b->niov;
    int max = room > FE_H2_LIVE_IOV + 2 ? FE_H2_LIVE_IOV : room > 3 ? (int)room - 2 : 1;
    int n = fe_hub_viewer_fill(&c->viewer, st->iov, max, FE_H2_LIVE_BYTES, &bytes);
    if (n == 0) {
      if (fe_hub_viewer_done(&c->viewer)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
      }
      st->deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    st->niov = n;
    st->cur = 0;
    st->cur_off = 0;
    st->len = bytes;
    st->sent = st->done = 0;
    if (c->viewer.keyframe_sent && !c->keyframe_counted) {
      c->keyframe_counted = 1;
      fe_metrics *m = &s->c->w->loop.metrics;
      fe_metrics_latency(m->first_keyframe, &m->first_keyframe_sum_us, (uv_hrtime() - c->start_ns) / 1000);
    }
  }
  if (st->sent < st->len) {
    size_t n = st->len - st->sent < length ? st->len - st->sent : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (st->eof && st->sent + n == st->len)
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
  }
  if (st->eof && st->len == 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  st->deferred = 1; /* the span is sent but not written yet, or the next piece has not come */
  return NGHTTP2_ERR_DEFERRED;
}

static int fe_h2_on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
  fe_h2 *s = ud;
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
      !s->calm) {
    s->calm = 1;
    FE_METRIC_INC(&s->c->w->loop.metrics, h2_calm);
  }
  if (frame->hd.type == NGHTTP2_HEADERS) {
    fe_h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (st)
      fe_conn_first_byte(&st->req);
  }
  return 0;
}

/* ---- nghttp2's callbacks: receiving -------------------------------------------------------- */

/* The client's budget of control frames: limits.h2_control_rate a second, a burst of 10 s of them. */
static int fe_h2_spend(fe_h2 *s) {
  uint64_t now = fe_h2_now(s);
  s->tokens += (double)(now - s->tokens_at) * s->rate / 1000.0;
  if (s->tokens > s->rate * 10)
    s->tokens = s->rate * 10;
  s->tokens_at = now;
  if (--s->tokens >= 0)
    return 0;
  fe_warn("http2 %s: too many control or empty frames: GOAWAY", s->c->client_ip);
  nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
  s->fatal = 1;
  return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* A stream of id on the session, its request an fe_conn of the connection's kind and addresses. */
static fe_h2_stream *fe_h2_stream_new(fe_h2 *s, int32_t id) {
  fe_h2_stream *st = calloc(1, sizeof(*st));
  if (!st)
    return NULL;
  static const llhttp_settings_t none;
  fe_conn *c = &st->req, *p = s->c;
  st->s = s;
  st->id = id;
  c->w = p->w;
  c->kind = p->kind;
  c->h2s = st;
  c->state = FE_CS_READING;
  llhttp_init(&c->parser, HTTP_REQUEST, &none);
  c->parser.http_major = 2;
  c->parser.http_minor = 0;
  memcpy(c->client_ip, p->client_ip, sizeof(c->client_ip));
  memcpy(c->server_ip, p->server_ip, sizeof(c->server_ip));
  c->client_port = p->client_port;
  st->next = s->streams;
  if (s->streams)
    s->streams->prev = st;
  s->streams = st;
  s->nstreams++;
  nghttp2_session_set_stream_user_data(s->ng, st->id, st);
  FE_METRIC_INC(&p->w->loop.metrics, h2_streams);
  return st;
}

static int fe_h2_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
  fe_h2 *s = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  return fe_h2_stream_new(s, frame->hd.stream_id) ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* Appends to the request's head buffer (spans are offsets into it). */
static int fe_h2_append(fe_conn *c, const uint8_t *p, size_t n, fe_span *sp) {
  if (c->len + n > c->cap) {
    uint32_t ncap = c->cap ? c->cap : 512;
    while (ncap < c->len + n)
      ncap *= 2;
    char *nb = realloc(c->buf, ncap);
    if (!nb)
      return -1;
    c->buf = nb;
    c->cap = ncap;
  }
  memcpy(c->buf + c->len, p, n);
  sp->off = c->len;
  sp->len = (uint32_t)n;
  c->len += (uint32_t)n;
  return 0;
}

static void fe_h2_refuse(fe_h2_stream *st, int status, const char *why) {
  if (!st->refuse) {
    st->refuse = status;
    st->why = why;
  }
}

static int fe_h2_method(const uint8_t *v, size_t n) {
  for (int m = 0; m <= HTTP_PRI; m++) { /* the methods of HTTP/1.1 (RTSP's after PRI are not) */
    const char *name = llhttp_method_name((llhttp_method_t)m);
    if (strlen(name) == n && memcmp(name, v, n) == 0)
      return m;
  }
  return -1;
}

static int fe_h2_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                           size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud) {
  fe_h2 *s = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* trailers: never headers, as over HTTP/1.1 */
  fe_h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
  if (!st)
    return 0;
  fe_conn *c = &st->req;
  st->hdr_bytes += namelen + valuelen + 32;
  if (st->hdr_bytes > fe_h2_cfg(s)->max_header_size)
    fe_h2_refuse(st, 431, "request header fields too large");
  if (st->refuse)
    return 0;
  if (namelen > 0 && name[0] == ':') {
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
      int m = fe_h2_method(value, valuelen);
      if (m < 0) { /* a method HTTP/1.1 does not define: 501, as RFC 9110 15.6.2 asks */
        fe_h2_refuse(st, 501, "unknown method");
        return 0;
      }
      c->parser.method = (uint8_t)m;
      st->method_seen = 1;
    } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
      if (fe_h2_append(c, value, valuelen, &c->url) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
      if (fe_h2_append(c, value, valuelen, &st->authority) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
  }
  if (c->nhdr >= FE_MAX_HEADERS) {
    fe_h2_refuse(st, 431, "request header fields too large");
    return 0;
  }
  st->host_seen |= namelen == 4 && memcmp(name, "host", 4) == 0; /* a second one: nghttp2 resets */
  fe_header *h = &c->hdr[c->nhdr];
  if (fe_h2_append(c, name, namelen, &h->name) < 0 || fe_h2_append(c, value, valuelen, &h->value) < 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  c->nhdr++;
  return 0;
}

/* A complete head: routed once the read that completed it is processed. */
static void fe_h2_ready_push(fe_h2 *s, fe_h2_stream *st) {
  if (s->ready_tail)
    s->ready_tail->ready_next = st;
  else
    s->ready = st;
  s->ready_tail = st;
}

static int fe_h2_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud) {
  fe_h2 *s = ud;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
      fe_h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
      if (st)
        fe_h2_ready_push(s, st);
    }
    return 0;
  case NGHTTP2_DATA:
    if (frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      return fe_h2_spend(s);
    return 0;
  case NGHTTP2_SETTINGS:
    /* The client's preface is in (its first SETTINGS): an upgraded request may be answered. */
    if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && s->upgraded) {
      fe_h2_ready_push(s, s->upgraded);
      s->upgraded = NULL;
    }
    return frame->hd.flags & NGHTTP2_FLAG_ACK ? 0 : fe_h2_spend(s);
  case NGHTTP2_PING:
    return frame->hd.flags & NGHTTP2_FLAG_ACK ? 0 : fe_h2_spend(s);
  case NGHTTP2_RST_STREAM:
  case NGHTTP2_PRIORITY:
  case NGHTTP2_WINDOW_UPDATE:
    /* a WINDOW_UPDATE for a stream costs nothing to send: one of a connection's is fine */
    if (frame->hd.type == NGHTTP2_WINDOW_UPDATE && frame->window_update.window_size_increment > 0)
      return 0;
    return fe_h2_spend(s);
  default:
    return 0;
  }
}

static int fe_h2_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud) {
  fe_h2 *s = ud;
  fe_h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
  if (!st)
    return 0;
  st->ng_closed = 1;
  if (!st->answered && error_code != NGHTTP2_NO_ERROR)
    FE_METRIC_INC(&s->c->w->loop.metrics, h2_resets);
  if (!st->ended)
    fe_conn_close(&st->req); /* runs fe_h2_stream_end */
  else
    fe_h2_maybe_free(st);
  return 0;
}

/* ---- the pump ------------------------------------------------------------------------------ */

static void fe_h2_on_later(fe_later *t) {
  fe_h2_pump((fe_h2 *)((char *)t - offsetof(fe_h2, later)));
}

/* Frames go out on the loop's next turn: the wakes of one hub pass share a batch. */
static void fe_h2_schedule(fe_h2 *s) {
  if (s->in_pump) {
    s->again = 1;
    return;
  }
  if (!s->closing)
    fe_loop_later(&s->c->w->loop, &s->later, fe_h2_on_later);
}

/* Makes frames and writes them, batch by batch, until nghttp2 has nothing more, a write is queued
 * (resumed from its callback), or FE_H2_ROUNDS batches went out (the rest on the next turn). */
static void fe_h2_pump(fe_h2 *s) {
  if (s->in_pump || s->closing || s->writing)
    return;
  s->in_pump = 1;
  int round = 0;
  for (; round < FE_H2_ROUNDS; round++) {
    s->again = 0;
    if (nghttp2_session_send(s->ng) != 0) {
      s->fatal = 1;
      fe_h2_batch_reset(s->b); /* a frame cut short cannot be followed by another */
      break;
    }
    if (s->b->niov == 0 && !s->again)
      break;
    if (s->b->niov && fe_h2_flush(s) != 0)
      break;
    if (s->closing)
      break;
  }
  s->in_pump = 0;
  if (s->closing || s->writing)
    return;
  int want = nghttp2_session_want_read(s->ng) || nghttp2_session_want_write(s->ng);
  if (s->fatal || !want || (s->goaway && s->nstreams == 0)) {
    fe_conn_close(s->c);
    return;
  }
  if (round == FE_H2_ROUNDS || s->again)
    fe_h2_schedule(s);
}

/* ---- the connection ------------------------------------------------------------------------ */

/* A server session for c with our SETTINGS submitted (not yet sent), or NULL. */
static fe_h2 *fe_h2_session_new(fe_conn *c) {
  const fe_config *cfg = c->w->gen->cfg;
  fe_h2 *s = calloc(1, sizeof(*s));
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  if (!s || !(s->b = malloc(sizeof(*s->b))) || nghttp2_session_callbacks_new(&cbs) != 0 ||
      nghttp2_option_new(&opt) != 0)
    goto fail;
  fe_h2_batch_reset(s->b);
  s->c = c;
  s->rate = cfg->h2_control_rate;
  s->tokens = s->rate * 10;
  s->tokens_at = s->idle_since = uv_now(&c->w->loop.uv);
  nghttp2_session_callbacks_set_send_callback(cbs, fe_h2_send_cb);
  nghttp2_session_callbacks_set_send_data_callback(cbs, fe_h2_send_data_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, fe_h2_on_frame_send);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, fe_h2_on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, fe_h2_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, fe_h2_on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, fe_h2_on_stream_close);
  /* Closed streams are not kept for the priority tree: memory is the open streams' only. */
  nghttp2_option_set_no_closed_streams(opt, 1);
  /* Acks the client does not read (PING, SETTINGS) pile up no further than this. */
  nghttp2_option_set_max_outbound_ack(opt, 100);
  nghttp2_option_set_max_settings(opt, FE_H2_MAX_SETTINGS);
  /* Rapid reset (CVE-2023-44487): RST_STREAM at our control rate, as Debian's backport counts it. */
  nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)cfg->h2_control_rate * 10, cfg->h2_control_rate);
  /* CONTINUATION floods (CVE-2024-28182): a header block in at most this many frames. */
  nghttp2_option_set_max_continuations(opt, FE_H2_MAX_CONTINUATIONS);
  if (nghttp2_session_server_new2(&s->ng, cbs, s, opt) != 0)
    goto fail;
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_size},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
  return s;
fail:
  if (cbs)
    nghttp2_session_callbacks_del(cbs);
  if (opt)
    nghttp2_option_del(opt);
  if (s)
    free(s->b);
  free(s);
  return NULL;
}

/* c speaks HTTP/2 from now on. */
static void fe_h2_attach(fe_conn *c, fe_h2 *s) {
  c->h2 = s;
  c->deadline = 0;
  c->on_sweep = fe_h2_sweep;
  FE_METRIC_INC(&c->w->loop.metrics, h2_connections);
}

void fe_h2_start(fe_conn *c, const char *data, size_t len) {
  fe_h2 *s = fe_h2_session_new(c);
  if (!s) {
    fe_conn_close(c);
    return;
  }
  fe_h2_attach(c, s);
  fe_h2_on_read(c, data, len);
}

int fe_h2_settings_decode(const char *v, size_t n, uint8_t *out, size_t cap) {
  while (n > 0 && v[n - 1] == '=')
    n--; /* token68 allows padding; base64url usually goes without */
  uint32_t acc = 0;
  int bits = 0;
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = v[i];
    int d = ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
            : ch >= '0' && ch <= '9' ? ch - '0' + 52 : ch == '-' ? 62 : ch == '_' ? 63 : -1;
    if (d < 0)
      return -1;
    acc = acc << 6 | (uint32_t)d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (len == cap)
        return -1;
      out[len++] = (uint8_t)(acc >> bits);
    }
  }
  /* whole entries of 6 bytes, no stray bits (a 1-character tail cannot be base64) */
  if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0 || len % 6 != 0)
    return -1;
  /* Values nghttp2 would answer with GOAWAY after the 101: refused here, before it. */
  for (size_t i = 0; i < len; i += 6) {
    uint16_t id = (uint16_t)(out[i] << 8 | out[i + 1]);
    uint32_t val = (uint32_t)out[i + 2] << 24 | (uint32_t)out[i + 3] << 16 | (uint32_t)out[i + 4] << 8 | out[i + 5];
    if ((id == NGHTTP2_SETTINGS_ENABLE_PUSH || id == NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL ||
         id == NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES) && val > 1)
      return -1;
    if (id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE && val > (uint32_t)NGHTTP2_MAX_WINDOW_SIZE)
      return -1;
    if (id == NGHTTP2_SETTINGS_MAX_FRAME_SIZE && (val < (1u << 14) || val > (1u << 24) - 1))
      return -1;
  }
  return (int)len;
}

/* The fields of an HTTP/1.1 head that belong to its connection, not to the request (RFC 9113
 * 8.2.2), and the upgrade's own. */
static int fe_h2_upgrade_field(const char *name, size_t n) {
  static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                                     "upgrade", "http2-settings", "te"};
  for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
    if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0)
      return 1;
  return 0;
}

int fe_h2_upgrade(fe_conn *c, const uint8_t *settings, size_t slen) {
  static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
  fe_h2 *s = fe_h2_session_new(c);
  if (!s)
    return -1;
  /* The 101 goes first in the first batch: our SETTINGS follow it on the wire. */
  fe_h2_batch_copy(s->b, sw, sizeof(sw) - 1);
  fe_h2_stream *st = NULL;
  char *buf = c->len ? malloc(c->len) : NULL;
  if ((c->len && !buf) ||
      nghttp2_session_upgrade2(s->ng, settings, slen, c->parser.method == HTTP_HEAD, NULL) != 0 ||
      !(st = fe_h2_stream_new(s, 1))) {
    /* nothing was sent: the request is answered in HTTP/1.1 */
    free(buf);
    nghttp2_session_del(s->ng);
    free(s->b);
    free(s);
    return -1;
  }
  /* Stream 1 (half-closed remote) is the request: its head as the HTTP/1.1 parser kept it, the
   * spans still valid in the copy, less the connection's fields. */
  fe_conn *r = &st->req;
  if (buf)
    memcpy(buf, c->buf, c->len);
  r->buf = buf;
  r->len = r->cap = c->len;
  r->url = c->url;
  int n = c->nhdr < FE_MAX_HEADERS ? c->nhdr : FE_MAX_HEADERS;
  for (int i = 0; i < n; i++)
    if (!fe_h2_upgrade_field(c->buf + c->hdr[i].name.off, c->hdr[i].name.len))
      r->hdr[r->nhdr++] = c->hdr[i];
  r->parser.method = c->parser.method;
  st->method_seen = 1;
  st->host_seen = 1; /* HTTP/1.1: the parser made sure of one Host */
  /* Answered once the client's preface is in, not before: up to a window of DATA right behind the
   * 101 is more than some clients take before they switch (curl 7.88 fails beyond 32 KiB). */
  s->upgraded = st;
  s->upgraded_at = fe_h2_now(s);
  fe_h2_attach(c, s);
  return 0;
}

void fe_h2_on_read(fe_conn *c, const char *data, size_t len) {
  fe_h2 *s = c->h2;
  if (s->closing || s->fatal)
    return;
  ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)data, len);
  if (rv < 0) {
    /* A flood (unread acks, a header block in too many CONTINUATION frames) is told apart from a
     * broken client: ENHANCE_YOUR_CALM, counted with our own flood closes. */
    int flood = rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
    if (rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
      fe_warn("http2 %s: a header block in more than %d CONTINUATION frames: GOAWAY", c->client_ip,
              FE_H2_MAX_CONTINUATIONS);
    else if (!s->fatal)
      fe_debug("http2 %s: %s", c->client_ip, nghttp2_strerror((int)rv));
    nghttp2_session_terminate_session(s->ng, flood ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
    s->fatal = 1;
    s->ready = s->ready_tail = NULL;
  }
  /* Heads complete in this read go to the router now: one reset in the same read (rapid reset)
   * is never routed at all. */
  fe_h2_stream *st;
  s->in_pump++; /* answers made while routing go out together, below */
  while ((st = s->ready) && !s->closing) {
    s->ready = st->ready_next;
    if (!s->ready)
      s->ready_tail = NULL;
    st->ready_next = NULL;
    if (st->ng_closed || st->ended)
      continue;
    fe_conn *r = &st->req;
    if (!st->host_seen && st->authority.len && r->nhdr < FE_MAX_HEADERS) {
      fe_header *h = &r->hdr[r->nhdr];
      if (fe_h2_append(r, (const uint8_t *)"host", 4, &h->name) == 0) {
        fe_span a = st->authority;
        if (fe_h2_append(r, (const uint8_t *)r->buf + a.off, a.len, &h->value) == 0)
          r->nhdr++;
      }
    }
    /* RFC 9113 8.3.1: a Host naming another site than :authority makes the request malformed. */
    const fe_span *host = st->host_seen && st->authority.len ? fe_conn_header(r, "Host") : NULL;
    if (host && !st->refuse &&
        (host->len != st->authority.len ||
         strncasecmp(r->buf + host->off, r->buf + st->authority.off, host->len) != 0))
      fe_h2_refuse(st, 400, "bad request: Host differs from :authority");
    r->have_method = st->method_seen;
    r->have_version = 1;
    if (!st->refuse && (!st->method_seen || !r->url.len))
      fe_h2_refuse(st, 400, "bad request: no :method or :path");
    fe_conn_dispatch(r, st->refuse, st->why ? st->why : "");
  }
  s->in_pump--;
  fe_h2_pump(s);
}

void fe_h2_conn_close(fe_conn *c) {
  fe_h2 *s = c->h2;
  s->closing = 1;
  FE_METRIC_ADD(&c->w->loop.metrics, h2_connections, -1);
  fe_loop_later_cancel(&c->w->loop, &s->later);
  s->ready = s->ready_tail = NULL;
  fe_h2_stream *st, *next;
  for (st = s->streams; st; st = next) {
    next = st->next;
    st->ng_closed = 1;
  }
  for (st = s->streams; st; st = next) {
    next = st->next;
    if (!st->ended)
      fe_conn_close(&st->req);
  }
  /* Frames made but never handed to the socket: their spans go now. The batch in flight comes
   * back through its write callback (canceled by the close). */
  fe_h2_release(s->b);
}

void fe_h2_free(fe_conn *c) {
  fe_h2 *s = c->h2;
  fe_h2_stream *st, *next;
  for (st = s->streams; st; st = next) {
    next = st->next;
    if (!st->freeing)
      fe_h2_stream_free(&st->dead);
  }
  nghttp2_session_del(s->ng);
  free(s->b);
  free(s->wb);
  free(s);
  c->h2 = NULL;
}

int fe_h2_sweep(fe_conn *c, uint64_t now) {
  fe_h2 *s = c->h2;
  const fe_config *cfg = fe_h2_cfg(s);
  uint64_t send_ms = (uint64_t)(cfg->send_timeout * 1000.0);
  if (s->writing && now - s->write_since > send_ms) {
    fe_debug("http2 %s: the client took nothing for %.1f s", c->client_ip, cfg->send_timeout);
    fe_conn_reset(c);
    return 1;
  }
  if (s->upgraded && now - s->upgraded_at > (uint64_t)(cfg->request_timeout * 1000.0)) {
    fe_debug("http2 %s: no preface within %.1f s of the 101", c->client_ip, cfg->request_timeout);
    fe_conn_close(c);
    return 1;
  }
  fe_h2_stream *st, *next;
  for (st = s->streams; st; st = next) {
    next = st->next;
    fe_conn *r = &st->req;
    if (st->ended)
      continue;
    if (r->on_sweep && r->on_sweep(r, now))
      continue;
    /* A finite answer whose window stays closed: cut as a socket that takes nothing would be. */
    if (st->body != FE_H2B_LIVE && st->sent < st->len && now - st->progress > send_ms)
      fe_conn_reset(r);
  }
  if (s->nstreams == 0 && !s->writing && now - s->idle_since > (uint64_t)(cfg->request_timeout * 1000.0)) {
    if (!s->goaway) {
      s->goaway = 1;
      nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                            NGHTTP2_NO_ERROR, NULL, 0);
    }
    fe_h2_pump(s);
    return c->state == FE_CS_CLOSING;
  }
  return 0;
}

void fe_h2_stop(fe_conn *c) {
  fe_h2 *s = c->h2;
  if (s->closing)
    return;
  if (!s->goaway) {
    s->goaway = 1;
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
  }
  fe_h2_pump(s);
}

/* ---- a stream's answer --------------------------------------------------------------------- */

const fe_net *fe_h2_net(const fe_conn *r) {
  return &r->h2s->s->c->net;
}

static int fe_h2_hop_by_hop(const char *name, size_t n) {
  static const char *const drop[] = {"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                                     "upgrade"};
  for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
    if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0)
      return 1;
  return 0;
}

/* The HTTP/1.1 head text as HEADERS: ":status" from its status line, then its fields with names
 * lower-cased and the connection's own dropped. `body` 0: the stream ends with the head. */
static void fe_h2_submit(fe_h2_stream *st, const char *head, size_t hlen, int body) {
  fe_h2 *s = st->s;
  if (st->answered || st->ended || st->ng_closed || s->closing)
    return;
  char *t = malloc(hlen + 1);
  if (!t) {
    fe_conn_reset(&st->req);
    return;
  }
  memcpy(t, head, hlen);
  t[hlen] = 0;
  nghttp2_nv nv[64];
  size_t n = 0;
  char status[4] = "500";
  if (hlen > 12)
    memcpy(status, t + 9, 3);
  nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
  char *line = strstr(t, "\r\n");
  while (line && n < sizeof(nv) / sizeof(nv[0])) {
    line += 2;
    char *end = strstr(line, "\r\n");
    if (!end || end == line)
      break;
    char *colon = memchr(line, ':', (size_t)(end - line));
    if (colon) {
      size_t nl = (size_t)(colon - line);
      char *v = colon + 1;
      while (v < end && *v == ' ')
        v++;
      for (size_t i = 0; i < nl; i++)
        line[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
      if (!fe_h2_hop_by_hop(line, nl))
        nv[n++] = (nghttp2_nv){(uint8_t *)line, (uint8_t *)v, nl, (size_t)(end - v), NGHTTP2_NV_FLAG_NONE};
    }
    line = end;
  }
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = fe_h2_read_cb};
  st->answered = 1;
  int rc = nghttp2_submit_response(s->ng, st->id, nv, n, body ? &prd : NULL);
  free(t);
  if (rc != 0) {
    fe_conn_reset(&st->req);
    return;
  }
  fe_h2_schedule(s);
}

void fe_h2_respond(fe_conn *r, const char *head, size_t hlen, const void *body, size_t blen) {
  fe_h2_stream *st = r->h2s;
  if (blen) {
    if (!(st->copy = malloc(blen))) {
      fe_conn_reset(r);
      return;
    }
    memcpy(st->copy, body, blen);
    fe_h2_span_set(st, st->copy, blen);
    st->body = FE_H2B_PIECES;
    st->eof = 1;
  }
  fe_h2_submit(st, head, hlen, blen > 0);
}

void fe_h2_head(fe_conn *r, const char *head, size_t hlen, int body) {
  fe_h2_stream *st = r->h2s;
  st->body = body ? FE_H2B_PIECES : FE_H2B_NONE;
  fe_h2_submit(st, head, hlen, body);
}

void fe_h2_piece(fe_conn *r, const void *p, size_t n, void (*done)(void *ud, int status), void *ud) {
  fe_h2_stream *st = r->h2s;
  if (st->ended || st->ng_closed || st->s->closing) {
    done(ud, UV_ECANCELED);
    return;
  }
  fe_h2_span_set(st, p, n);
  st->done_cb = done;
  st->ud = ud;
  st->progress = fe_h2_now(st->s);
  fe_h2_resume(st);
}

void fe_h2_end(fe_conn *r) {
  fe_h2_stream *st = r->h2s;
  if (st->body != FE_H2B_PIECES || st->eof)
    return;
  st->eof = 1;
  fe_h2_resume(st);
}

void fe_h2_live(fe_conn *r, const char *head, size_t hlen) {
  fe_h2_stream *st = r->h2s;
  st->body = FE_H2B_LIVE;
  fe_h2_submit(st, head, hlen, 1);
}

void fe_h2_wake(fe_conn *r) {
  fe_h2_stream *st = r->h2s;
  if (!r->writing) {
    r->writing = 1; /* until nghttp2 asks for data: a window closed for long is a stuck viewer */
    r->write_since = fe_h2_now(st->s);
  }
  fe_h2_resume(st);
}
