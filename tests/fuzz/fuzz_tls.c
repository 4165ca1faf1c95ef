/*
 * libFuzzer target for what a client can send an HTTPS listener before its handshake is done: the
 * TLS server stream of net/fe_tls.c (the first byte's triage: a handshake record, a plain HTTP
 * request answered 400, anything else closed; then mbedTLS's ClientHello parsing, our SNI choice
 * among a default and a wildcard certificate, ALPN, the record buffer and the end of the stream).
 * That is all of TLS an attacker reaches without a key: a handshake cannot complete from fuzzed
 * bytes (the Finished message is keyed by the server's fresh ECDHE share).
 *
 * The server's stream is an fe_net made a TLS stream by fe_tls_accept, as a TLS listener does,
 * over no socket: the libuv stream calls fe_tls.c makes on its handle (read start and stop,
 * writes, the write queue's size, the close) are wrapped at link time (-Wl,--wrap, in
 * CMakeLists.txt) and go to the in-memory stream of fuzz_mem.h, the client at its other end; every
 * other handle's calls go to libuv. Input: [split] client bytes; split: bits 0-2 pick the largest
 * piece (1, 2, 5, 16, 100, 517, 4096, 64 KiB), bits 3-7 seed the sizes; each piece is one read.
 * After the input the client half-closes.
 *
 * Checks: the owner never reads plaintext; it hears the end exactly once; a first byte of 'A'-'Z'
 * is answered with the whole plain-HTTP 400 and nothing else; anything else the server wrote is
 * whole TLS records (handshake messages in 3.x, or an alert; at most 16 KiB + 2 KiB each); the stream
 * closes, the loop keeps no handle of it, and LeakSanitizer sees no leak.
 *
 * The certificates in tests/fuzz/tls/ are throwaway test keys (openssl req -x509 -newkey ec
 * -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500, CN fuzz.test and *.w.test).
 */
#define _GNU_SOURCE /* memmem */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/fe_log.h"
#include "net/fe_net.h"
#include "net/fe_tls.h"

#include "fuzz_check.h"
#include "fuzz_mem.h"

static fe_loop fuzz_loop;
static fe_tls_server *fuzz_srv;
static unsigned fuzz_base_handles;

typedef struct fuzz_server fuzz_server;
static void fuzz_on_close(fe_net *n);

struct fuzz_server {
  fe_net net;
  int ends;   /* times the owner heard the end */
  int end;    /* what it heard */
  int closed; /* the close callback ran */
};

static void fuzz_on_close(fe_net *n) {
  ((fuzz_server *)n)->closed = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  fe_log_set_level(getenv("FUZZ_TRACE") ? FE_LOG_DEBUG : FE_LOG_ERROR + 1);
  signal(SIGPIPE, SIG_IGN);
  FUZZ_CHECK(fe_loop_init(&fuzz_loop, 0) == 0);
  fe_tls_cert_spec certs[2] = {
      {NULL, FE_FUZZ_DIR "/tls/default.crt", FE_FUZZ_DIR "/tls/default.key"},
      {"*.w.test", FE_FUZZ_DIR "/tls/wild.crt", FE_FUZZ_DIR "/tls/wild.key"},
  };
  char err[256];
  fuzz_srv = fe_tls_server_new(certs, 2, err, sizeof(err));
  if (!fuzz_srv) {
    fprintf(stderr, "fuzz_tls: %s\n", err);
    abort();
  }
  fuzz_mem_init(&fuzz_loop.uv);
  fuzz_base_handles = fuzz_loop.uv.active_handles;
  return 0;
}

/* ---- the server's handle: its libuv stream calls go to fuzz_mem.h ----------------------------- */

static uv_stream_t *fuzz_stream; /* the server's handle, until its close callback */
static uv_alloc_cb fuzz_alloc_cb;
static uv_read_cb fuzz_read_cb;
static uv_close_cb fuzz_close_cb;

int __real_uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
int __real_uv_read_stop(uv_stream_t *s);
int __real_uv_try_write(uv_stream_t *s, const uv_buf_t bufs[], unsigned nbufs);
int __real_uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t bufs[], unsigned nbufs,
                    uv_write_cb cb);
size_t __real_uv_stream_get_write_queue_size(const uv_stream_t *s);
void __real_uv_close(uv_handle_t *h, uv_close_cb cb);

/* A read as libuv makes one: into the buffer the owner's alloc_cb gives. */
static void fuzz_uv_deliver(ssize_t nread, const char *data) {
  uv_buf_t b = uv_buf_init(NULL, 0);
  fuzz_alloc_cb((uv_handle_t *)fuzz_stream, FUZZ_MEM_READ_MAX, &b);
  if (nread > 0) {
    FUZZ_CHECK(b.base != NULL && b.len >= (size_t)nread);
    memcpy(b.base, data, (size_t)nread);
  }
  fuzz_read_cb(fuzz_stream, nread, &b);
}

int __wrap_uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
  if (s != fuzz_stream)
    return __real_uv_read_start(s, alloc_cb, read_cb);
  fuzz_alloc_cb = alloc_cb;
  fuzz_read_cb = read_cb;
  fuzz_mem_set_reading(1);
  return 0;
}

int __wrap_uv_read_stop(uv_stream_t *s) {
  if (s != fuzz_stream)
    return __real_uv_read_stop(s);
  fuzz_mem_set_reading(0);
  return 0;
}

int __wrap_uv_try_write(uv_stream_t *s, const uv_buf_t bufs[], unsigned nbufs) {
  if (s != fuzz_stream)
    return __real_uv_try_write(s, bufs, nbufs);
  int n = fuzz_mem_try(bufs, nbufs);
  return n == 0 ? UV_EAGAIN : n;
}

static void fuzz_uv_written(void *req, int status) {
  uv_write_t *w = req;
  w->cb(w, status);
}

int __wrap_uv_write(uv_write_t *req, uv_stream_t *s, const uv_buf_t bufs[], unsigned nbufs,
                    uv_write_cb cb) {
  if (s != fuzz_stream)
    return __real_uv_write(req, s, bufs, nbufs, cb);
  req->type = UV_WRITE;
  req->handle = s;
  req->cb = cb;
  return fuzz_mem_write(req, fuzz_uv_written, bufs, nbufs);
}

size_t __wrap_uv_stream_get_write_queue_size(const uv_stream_t *s) {
  return s == fuzz_stream ? fuzz_m.queued : __real_uv_stream_get_write_queue_size(s);
}

static void fuzz_uv_on_closed(uv_handle_t *h) {
  fuzz_mem_closed();
  fuzz_stream = NULL;
  fuzz_close_cb(h);
}

void __wrap_uv_close(uv_handle_t *h, uv_close_cb cb) {
  if (h != (uv_handle_t *)fuzz_stream || fuzz_m.closing) {
    __real_uv_close(h, cb);
    return;
  }
  fuzz_mem_closing();
  fuzz_close_cb = cb;
  __real_uv_close(h, fuzz_uv_on_closed); /* never opened: only the handle */
}

static void fuzz_on_read(fe_net *n, ssize_t nread, const char *data) {
  (void)data;
  fuzz_server *s = (fuzz_server *)n;
  FUZZ_CHECK(nread < 0); /* no plaintext without a finished handshake */
  s->ends++;
  s->end = (int)nread;
  fe_net_close(n, fuzz_on_close); /* as the server's connections do on an error or the end */
}

/* What the server wrote: the plain-HTTP answer, or whole TLS records before the handshake's end. */
static void fuzz_check_output(const fuzz_mem *cl, int plain) {
  static const char answer[] = "HTTP/1.1 400 Bad Request\r\n";
  if (plain) {
    FUZZ_CHECK(cl->out_len > sizeof(answer) - 1 && memcmp(cl->out, answer, sizeof(answer) - 1) == 0);
    const char *body = memmem(cl->out, cl->out_len, "\r\n\r\n", 4);
    FUZZ_CHECK(body && memmem(cl->out, cl->out_len, "Content-Length: 48\r\n", 20) &&
               (size_t)(body + 4 - cl->out) + 48 == cl->out_len);
    return;
  }
  const unsigned char *p = (const unsigned char *)cl->out, *end = p + cl->out_len;
  while (p < end) {
    FUZZ_CHECK(end - p >= 5);
    unsigned type = p[0], len = (unsigned)p[3] << 8 | p[4];
    FUZZ_CHECK(type == 21 || type == 22); /* an alert, or the server's handshake messages */
    /* mbedTLS answers a hello of an unknown version with a protocol_version alert in a record
     * of that version (seen: 0.0): only the handshake's records must be 3.x. */
    FUZZ_CHECK(type == 21 || (p[1] == 3 && p[2] <= 3));
    FUZZ_CHECK(len > 0 && len <= 16384 + 2048 && (size_t)(end - p - 5) >= len);
    p += 5 + len;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {1, 2, 5, 16, 100, 517, 4096, 65536};
  if (size < 2)
    return 0;
  size_t max_piece = pieces[data[0] & 7];
  uint32_t rng = (uint32_t)(data[0] >> 3) * 2654435761u + 1;
  data++, size--;
  int plain = data[0] >= 'A' && data[0] <= 'Z';

  fuzz_server *s = calloc(1, sizeof(*s));
  FUZZ_CHECK(s != NULL);
  fe_net_init(&fuzz_loop, &s->net, s);
  fuzz_mem_reset(fuzz_uv_deliver, SIZE_MAX); /* the client reads at the end */
  fuzz_stream = (uv_stream_t *)&s->net.tcp;
  FUZZ_CHECK(fe_tls_accept(&s->net, fuzz_srv) == 0);
  FUZZ_CHECK(fe_net_read_start(&s->net, fuzz_on_read) == 0);

  size_t off = 0;
  while (off < size && !s->ends) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    size_t n = 1 + rng % max_piece;
    if (n > size - off)
      n = size - off;
    size_t sent = fuzz_mem_send(data + off, n);
    if (sent == 0)
      break; /* the server closed, or stopped reading and the stream is full */
    off += sent;
    uv_run(&fuzz_loop.uv, UV_RUN_NOWAIT); /* one read of the piece */
  }
  /* The client is done: the server hears the end (EOF, or what it made of the bytes before). */
  fuzz_mem_shutdown();
  for (int i = 0; i < 1000 && !s->ends; i++)
    uv_run(&fuzz_loop.uv, UV_RUN_ONCE);
  FUZZ_CHECK(s->ends == 1 && s->end < 0);
  for (int i = 0; i < 1000 && !s->closed; i++)
    uv_run(&fuzz_loop.uv, UV_RUN_ONCE);
  FUZZ_CHECK(s->closed && s->ends == 1);
  uv_run(&fuzz_loop.uv, UV_RUN_NOWAIT);
  FUZZ_CHECK(fuzz_loop.uv.active_handles == fuzz_base_handles);
  const fuzz_mem *cl = &fuzz_m;
  if (getenv("FUZZ_TRACE")) {
    fprintf(stderr, "fuzz_tls: %zu of %zu bytes sent, end %d, %zu bytes back:", off, size, s->end,
            cl->out_len);
    for (size_t i = 0; i < cl->out_len && i < 64; i++)
      fprintf(stderr, " %02x", (unsigned char)cl->out[i]);
    fprintf(stderr, "\n");
  }
  fuzz_check_output(cl, plain);
  free(s);
  return 0;
}
