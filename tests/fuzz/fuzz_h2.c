/*
 * libFuzzer target for HTTP/2 through the server's connection code (http/fe_http2.c over
 * http/fe_http_conn.c): what a client sends a listener with `h2c = true`, on an in-memory stream
 * as in fuzz_conn (fuzz_mem.h; the same worker; tests/fuzz/fuzz_h2.lua: fuzz_conn's config and a
 * live stream that plays, from a file). nghttp2 parses the frames;
 * what is fuzzed is ours: the session's callbacks, the request made of a stream's headers (pseudo
 * headers, :authority against host, the limits), the CONTINUATION and control-frame flood limits,
 * flow control of the DATA we make, streams reset or ended at any point, and the end of the
 * connection in any state.
 *
 * Input: [mode] client bytes. mode: bits 0-2 pick the largest piece (1, 2, 3, 9, 64, 512, 16393,
 * 64 KiB), bit 3 set: the bytes go as they are (an HTTP/1.1 request with Upgrade: h2c, a preface
 * of the input's own, or anything), else the client preface is sent first; bit 7 set: the
 * server's socket buffer is small (4 KiB) and the client reads only when it cannot write and at
 * the end, so that the server's writes wait (flow control of the socket, not only of HTTP/2);
 * bits 4-6 seed the sizes. Each piece is sent, the loop run twice after it.
 *
 * Checks, on everything the server wrote (after a 101 answer to an Upgrade; any other HTTP/1.x
 * answer is fuzz_conn's matter): whole frames, the first a SETTINGS; each of a type a
 * server sends (never PUSH_PROMISE or PRIORITY) on a stream its type allows (client-initiated,
 * odd, for HEADERS, DATA, RST_STREAM and CONTINUATION; 0 for SETTINGS, PING and GOAWAY), of the
 * length its type has, at most 16384 bytes; header blocks in HEADERS then CONTINUATION on the
 * same stream until END_HEADERS, each decoding (nghttp2's HPACK inflater) to `:status` first
 * (100-599) and lowercase names with no connection-specific field; DATA only after a stream's
 * HEADERS and nothing on a stream after it ended (END_STREAM or RST_STREAM); no stream above a
 * GOAWAY's last stream id opened after it; no window update of 0. Then, as in fuzz_conn: the
 * connection ends when the client does, the loop holds no handle of the input, nothing leaked. The
 * last frame may be cut when the connection closed with writes still queued (they are dropped).
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "http/fe_http_router.h"

#include "fuzz_worker.h"

#define FUZZ_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define FUZZ_MAX_STREAMS 4096

static const fe_conn_kind fuzz_kind = {.route = fe_router_route, .http2 = 1, .h2c = 1};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fuzz_worker_init("fuzz_h2", FE_FUZZ_DIR "/fuzz_h2.lua");
  return 0;
}

/* ---- the server's frames ------------------------------------------------------------------- */

enum { FUZZ_S_IDLE, FUZZ_S_OPEN, FUZZ_S_ENDED };

typedef struct fuzz_h2_check {
  nghttp2_hd_inflater *inf;
  uint8_t state[FUZZ_MAX_STREAMS]; /* by (stream id - 1) / 2, for the first streams */
  int64_t goaway_last;             /* -1: no GOAWAY yet */
  uint32_t block_stream;           /* a header block is open on this stream (0: none) */
  int block_end_stream;            /* its HEADERS had END_STREAM */
  int block_fields;                /* fields decoded of the block so far */
} fuzz_h2_check;

static uint8_t *fuzz_stream(fuzz_h2_check *k, uint32_t id) {
  static uint8_t beyond; /* streams past the table are not tracked */
  uint32_t i = (id - 1) / 2;
  if (i >= FUZZ_MAX_STREAMS) {
    beyond = FUZZ_S_OPEN;
    return &beyond;
  }
  return &k->state[i];
}

/* Decodes one fragment of the open header block; `last` when it ends the block. */
static void fuzz_h2_fields(fuzz_h2_check *k, const uint8_t *p, size_t n, int last) {
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t r = nghttp2_hd_inflate_hd2(k->inf, &nv, &flags, p, n, last);
    FUZZ_CHECK(r >= 0); /* the server's header block is valid HPACK */
    p += r;
    n -= (size_t)r;
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      if (k->block_fields++ == 0) {
        FUZZ_CHECK(nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0 && nv.valuelen == 3);
        FUZZ_CHECK(nv.value[0] >= '1' && nv.value[0] <= '5' && nv.value[1] >= '0' &&
                   nv.value[1] <= '9' && nv.value[2] >= '0' && nv.value[2] <= '9');
      } else {
        FUZZ_CHECK(nv.namelen > 0 && nv.name[0] != ':');
        for (size_t i = 0; i < nv.namelen; i++)
          FUZZ_CHECK(!(nv.name[i] >= 'A' && nv.name[i] <= 'Z'));
        static const char *const banned[] = {"connection", "keep-alive", "proxy-connection",
                                             "transfer-encoding", "upgrade"};
        for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
          FUZZ_CHECK(!(nv.namelen == strlen(banned[i]) && memcmp(nv.name, banned[i], nv.namelen) == 0));
      }
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      FUZZ_CHECK(n == 0 && k->block_fields > 0);
      nghttp2_hd_inflate_end_headers(k->inf);
      return;
    }
    if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && n == 0)
      return;
  }
}

static void fuzz_h2_check_frames(const uint8_t *p, size_t len, int cut) {
  fuzz_h2_check k = {.goaway_last = -1};
  FUZZ_CHECK(nghttp2_hd_inflate_new(&k.inf) == 0);
  /* Whatever table size the client's SETTINGS allowed: the check decodes, it does not police. */
  FUZZ_CHECK(nghttp2_hd_inflate_change_table_size(k.inf, 1u << 30) == 0);
  const uint8_t *end = p + len;
  int first = 1;
  while (p < end) {
    if (cut && (end - p < 9 || (size_t)(end - p - 9) < ((size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2])))
      break; /* the last frame, cut by a close that dropped the rest of its write */
    FUZZ_CHECK(end - p >= 9);
    uint32_t flen = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
    uint8_t type = p[3], flags = p[4];
    uint32_t id = ((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8]) &
                  0x7fffffffu;
    FUZZ_CHECK(flen <= 16384 && (size_t)(end - p - 9) >= flen);
    const uint8_t *f = p + 9;
    p += 9 + flen;
    if (first)
      FUZZ_CHECK(type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK));
    first = 0;
    /* A header block is not interleaved with anything. */
    FUZZ_CHECK(k.block_stream == 0 || (type == NGHTTP2_CONTINUATION && id == k.block_stream));
    switch (type) {
    case NGHTTP2_SETTINGS:
      FUZZ_CHECK(id == 0 && ((flags & NGHTTP2_FLAG_ACK) ? flen == 0 : flen % 6 == 0));
      break;
    case NGHTTP2_PING:
      FUZZ_CHECK(id == 0 && flen == 8);
      break;
    case NGHTTP2_GOAWAY: {
      FUZZ_CHECK(id == 0 && flen >= 8);
      int64_t last = (int64_t)(((uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 | (uint32_t)f[2] << 8 |
                                f[3]) & 0x7fffffffu);
      FUZZ_CHECK(k.goaway_last < 0 || last <= k.goaway_last); /* never raised */
      k.goaway_last = last;
      break;
    }
    case NGHTTP2_WINDOW_UPDATE:
      FUZZ_CHECK(flen == 4 && (((uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 | (uint32_t)f[2] << 8 |
                                f[3]) & 0x7fffffffu) != 0);
      break;
    case NGHTTP2_RST_STREAM:
      FUZZ_CHECK(id % 2 == 1 && flen == 4);
      *fuzz_stream(&k, id) = FUZZ_S_ENDED;
      break;
    case NGHTTP2_HEADERS: {
      FUZZ_CHECK(id % 2 == 1);
      uint8_t *st = fuzz_stream(&k, id);
      /* A stream's answer: its head (or a 1xx then the head), once, before anything ends it. */
      FUZZ_CHECK(*st != FUZZ_S_ENDED);
      if (*st == FUZZ_S_IDLE)
        FUZZ_CHECK(k.goaway_last < 0 || id <= k.goaway_last);
      *st = FUZZ_S_OPEN;
      size_t pad = 0;
      if (flags & NGHTTP2_FLAG_PADDED) {
        FUZZ_CHECK(flen >= 1);
        pad = f[0];
        f++, flen--;
      }
      if (flags & NGHTTP2_FLAG_PRIORITY) {
        FUZZ_CHECK(flen >= 5);
        f += 5, flen -= 5;
      }
      FUZZ_CHECK(pad <= flen);
      k.block_stream = id;
      k.block_end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
      k.block_fields = 0;
      fuzz_h2_fields(&k, f, flen - pad, (flags & NGHTTP2_FLAG_END_HEADERS) != 0);
      break;
    }
    case NGHTTP2_CONTINUATION:
      FUZZ_CHECK(k.block_stream != 0 && id == k.block_stream);
      fuzz_h2_fields(&k, f, flen, (flags & NGHTTP2_FLAG_END_HEADERS) != 0);
      break;
    case NGHTTP2_DATA: {
      FUZZ_CHECK(id % 2 == 1 && *fuzz_stream(&k, id) == FUZZ_S_OPEN);
      if (flags & NGHTTP2_FLAG_PADDED)
        FUZZ_CHECK(flen >= 1 && f[0] < flen);
      if (flags & NGHTTP2_FLAG_END_STREAM)
        *fuzz_stream(&k, id) = FUZZ_S_ENDED;
      break;
    }
    default:
      FUZZ_CHECK(!"a frame type the server does not send");
    }
    if ((type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) &&
        (flags & NGHTTP2_FLAG_END_HEADERS)) {
      if (k.block_end_stream)
        *fuzz_stream(&k, k.block_stream) = FUZZ_S_ENDED;
      k.block_stream = 0;
    }
  }
  nghttp2_hd_inflate_del(k.inf);
}

/* What the server wrote: after a 101, or from the start, HTTP/2 frames. */
static void fuzz_h2_check_output(const fuzz_mem *cl) {
  const uint8_t *p = (const uint8_t *)cl->out;
  size_t len = cl->out_len;
  /* An HTTP/1.x answer (a live stream answers an HTTP/1.0 request in 1.0) is fuzz_conn's matter;
   * only a 101 (to an HTTP/1.1 Upgrade) is followed by frames. */
  if (len >= 9 && memcmp(p, "HTTP/1.", 7) == 0) {
    if (len < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0)
      return;
    const uint8_t *head_end = memmem(p, len, "\r\n\r\n", 4);
    FUZZ_CHECK(head_end != NULL);
    len -= (size_t)(head_end + 4 - p);
    p = head_end + 4;
  }
  fuzz_h2_check_frames(p, len, cl->cut);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {1, 2, 3, 9, 64, 512, 16393, 65536};
  if (size < 1)
    return 0;
  size_t max_piece = pieces[data[0] & 7];
  int raw = (data[0] >> 3) & 1, slow = data[0] >> 7;
  uint32_t rng = (uint32_t)((data[0] >> 4) & 7) * 2654435761u + 1;
  data++, size--;

  fuzz_worker_open(&fuzz_kind, slow ? 4096 : SIZE_MAX);
  if (!raw)
    FUZZ_CHECK(fuzz_mem_send(FUZZ_H2_PREFACE, sizeof(FUZZ_H2_PREFACE) - 1) ==
               sizeof(FUZZ_H2_PREFACE) - 1);

  size_t off = 0;
  while (off < size && fuzz_conn()) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    size_t n = 1 + rng % max_piece;
    if (n > size - off)
      n = size - off;
    size_t sent = fuzz_mem_send(data + off, n);
    if (sent == 0) {
      /* The server stopped reading (its answers wait for room): make room, once more. */
      uv_run(&fuzz_w.loop.uv, UV_RUN_NOWAIT);
      fuzz_mem_read();
      if ((sent = fuzz_mem_send(data + off, n)) == 0)
        break;
    }
    off += sent;
    uv_run(&fuzz_w.loop.uv, UV_RUN_NOWAIT);
    uv_run(&fuzz_w.loop.uv, UV_RUN_NOWAIT);
    if (!slow)
      fuzz_mem_read();
  }
  fuzz_worker_finish();
  const fuzz_mem *cl = &fuzz_m;
  if (fuzz_trace)
    fprintf(stderr, "fuzz_h2: %zu of %zu bytes sent, %zu bytes back\n", off, size, cl->out_len);
  fuzz_h2_check_output(cl);
  return 0;
}
