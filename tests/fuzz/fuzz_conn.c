/*
 * libFuzzer target for a request through the server's connection code (http/fe_http_conn.c,
 * the router, the static, status and live handlers) without a socket: the connection's stream is
 * an in-memory one (fuzz_mem.h, through the test seam fe_conn_open, where fe_conn_accept takes a
 * socket from a listener) that behaves as a stream socket does, with the client at its other
 * end. The input is what the client sends, in pieces whose sizes the input chooses, the worker's
 * loop run after each so that each piece is one read of fe_conn_on_read; the answers are what
 * lands at the client's end. The worker is set up as fe_http_server.c sets up a loop (config from
 * tests/fuzz/fuzz_conn.lua, one loop, no policy).
 *
 * Input: [split] client bytes. split: bits 0-2 pick the largest piece (1, 2, 3, 7, 16, 64, 512,
 * 64 KiB), bits 3-6 seed the sizes, bit 7 gives the server's end a 4 KiB socket buffer (its
 * answers then go out in many partial writes, and pipelined requests wait behind them); a piece
 * is sent only once the server has read the one before (or stopped reading while it answers).
 *
 * After the input: the loop runs until the connection is quiet (waiting for more, or closed), the
 * client half-closes, the loop runs until the connection is gone, the live streams are ended.
 * Checks: every answer is HTTP/1.1 (status line, "Name: value" header lines, a Content-Length its
 * body matches, or a chunked body ended by its last chunk, or a body to the end for a live stream
 * of an HTTP/1.0 request); a HEAD or a 1xx/204/304 answer has no body; there are at most as many
 * answers as request heads routed, plus one refusal of a head that failed to parse (400, 431 or
 * 505, Connection: close); nothing follows an answer with Connection: close; the loop holds no
 * handle of the input afterwards; LeakSanitizer sees no leak.
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/fe_http_router.h"

#include "fuzz_worker.h"

#define FUZZ_MAX_ROUTED 4096

/* The methods of the request heads routed in this input, in order. */
static int fuzz_methods[FUZZ_MAX_ROUTED];
static int fuzz_routed;

static int fuzz_route(fe_conn *c) {
  if (fuzz_routed < FUZZ_MAX_ROUTED)
    fuzz_methods[fuzz_routed] = (int)c->parser.method;
  fuzz_routed++;
  return fe_router_route(c);
}

static const fe_conn_kind fuzz_kind = {.route = fuzz_route};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fuzz_worker_init("fuzz_conn", FE_FUZZ_DIR "/fuzz_conn.lua");
  return 0;
}

/* ---- the client's end ---------------------------------------------------------------------- */

/* Quiet: closed, or reading with nothing of its own to do (all it was sent is read). */
static int fuzz_quiet(void) {
  fe_conn *c = fuzz_conn();
  if (!c)
    return fuzz_w.conn_handles == 0;
  return c->state == FE_CS_READING && !c->sending && !c->read_stopped && c->pending_len == 0 &&
         fuzz_m.in_len == 0;
}

/* Runs the loop until quiet; a live stream waits for its origin's refusal. The answers are read
 * only while the connection is busy (it may be waiting for room in the socket). */
static void fuzz_settle(void) {
  for (int i = 0; i < 10000; i++) {
    uv_run(&fuzz_w.loop.uv, fuzz_worker_run_mode(i));
    if (fuzz_quiet())
      return;
    fuzz_mem_read();
  }
  FUZZ_CHECK(!"the connection never settled");
}

/* ---- the answers --------------------------------------------------------------------------- */

static int fuzz_is_tchar(unsigned char ch) {
  return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Checks the answers (all that landed at the client's end); returns how many there were. */
static int fuzz_check_answers(const fuzz_mem *cl) {
  const char *p = cl->out, *end = cl->out + cl->out_len;
  int n = 0;
  while (p < end) {
    const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    FUZZ_CHECK(head_end != NULL);
    FUZZ_CHECK(end - p > 13 && memcmp(p, "HTTP/1.1 ", 9) == 0);
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    FUZZ_CHECK(p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' &&
               p[11] <= '9' && p[12] == ' ');
    const char *line = memmem(p, (size_t)(head_end + 2 - p), "\r\n", 2);
    for (const char *c = p + 13; c < line; c++)
      FUZZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
    long long clen = -1;
    int chunked = 0, close = 0;
    for (const char *h = line + 2; h < head_end + 2;) {
      const char *le = memmem(h, (size_t)(head_end + 2 - h), "\r\n", 2);
      size_t name = 0;
      while (h + name < le && fuzz_is_tchar((unsigned char)h[name]))
        name++;
      FUZZ_CHECK(name > 0 && h + name + 1 < le && h[name] == ':' && h[name + 1] == ' ');
      const char *v = h + name + 2;
      for (const char *c = v; c < le; c++)
        FUZZ_CHECK(((unsigned char)*c >= 0x20 && *c != 0x7f) || *c == '\t');
      size_t vlen = (size_t)(le - v);
      if (name == 14 && strncasecmp(h, "Content-Length", 14) == 0) {
        FUZZ_CHECK(clen < 0 && vlen > 0 && vlen < 19 && strspn(v, "0123456789") >= vlen);
        clen = strtoll(v, NULL, 10);
      } else if (name == 17 && strncasecmp(h, "Transfer-Encoding", 17) == 0) {
        FUZZ_CHECK(vlen == 7 && strncasecmp(v, "chunked", 7) == 0);
        chunked = 1;
      } else if (name == 10 && strncasecmp(h, "Connection", 10) == 0) {
        close |= vlen == 5 && strncasecmp(v, "close", 5) == 0;
      }
      h = le + 2;
    }
    FUZZ_CHECK(!(chunked && clen >= 0));
    int method = n < fuzz_routed && n < FUZZ_MAX_ROUTED ? fuzz_methods[n] : -1;
    int refusal = n >= fuzz_routed;
    if (refusal) /* a head that failed to parse: the last answer, and it closes */
      FUZZ_CHECK(n == fuzz_routed && close && (status == 400 || status == 431 || status == 505));
    int bodiless = (status >= 100 && status < 200) || status == 204 || status == 304;
    if (bodiless)
      FUZZ_CHECK(clen < 0 && !chunked);
    p = head_end + 4;
    /* A refused head's method is not known here: its answer has its whole body, or none when it
     * was a HEAD (then the connection ends there). */
    if (method == HTTP_HEAD || bodiless || (refusal && p == end)) {
      /* no body */
    } else if (clen >= 0) {
      FUZZ_CHECK(end - p >= clen);
      p += clen;
    } else if (chunked) {
      for (;;) {
        const char *le = memmem(p, (size_t)(end - p), "\r\n", 2);
        FUZZ_CHECK(le != NULL && le > p);
        char *e;
        unsigned long long sz = strtoull(p, &e, 16);
        FUZZ_CHECK(e == le);
        p = le + 2;
        FUZZ_CHECK((unsigned long long)(end - p) >= sz + 2 && memcmp(p + sz, "\r\n", 2) == 0);
        p += sz + 2;
        if (sz == 0)
          break;
      }
    } else {
      /* A body to the end of the connection: a live stream of an HTTP/1.0 request. */
      FUZZ_CHECK(status == 200 && cl->eof);
      p = end;
    }
    n++;
    if (close)
      FUZZ_CHECK(p == end); /* nothing after an answer that closes */
  }
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {1, 2, 3, 7, 16, 64, 512, 65536};
  if (size < 1)
    return 0;
  size_t max_piece = pieces[data[0] & 7];
  uint32_t rng = (uint32_t)((data[0] >> 3) & 15) * 2654435761u + 1;
  int small = data[0] >> 7;
  data++, size--;
  fuzz_routed = 0;

  fuzz_worker_open(&fuzz_kind, small ? 4096 : SIZE_MAX);
  size_t off = 0;
  while (off < size) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    size_t n = 1 + rng % max_piece;
    if (n > size - off)
      n = size - off;
    size_t sent = fuzz_conn() ? fuzz_mem_send(data + off, n) : 0;
    if (sent == 0)
      break; /* closed, or the server stopped reading and the stream is full */
    off += sent;
    fuzz_settle();
  }
  fuzz_settle();
  fuzz_worker_finish();

  const fuzz_mem *cl = &fuzz_m;
  if (fuzz_trace)
    fprintf(stderr, "fuzz_conn: answers:\n%.*s\n", (int)cl->out_len, cl->out);
  int answers = fuzz_check_answers(cl);
  if (fuzz_trace)
    fprintf(stderr, "fuzz_conn: %zu of %zu bytes sent, %d heads routed, %d answers, %zu bytes back\n",
            off, size, fuzz_routed, answers, cl->out_len);
  FUZZ_CHECK(answers <= fuzz_routed + 1);
  return 0;
}
