/*
 * libFuzzer target for what a client can send an HTTPS listener before its handshake is done: the
 * TLS server stream of net/fe_tls.c (the first byte's triage: a handshake record, a plain HTTP
 * request answered 400, anything else closed; then mbedTLS's ClientHello parsing, our SNI choice
 * among a default and a wildcard certificate, ALPN, the record buffer and the end of the stream).
 * That is all of TLS an attacker reaches without a key: a handshake cannot complete from fuzzed
 * bytes (the Finished message is keyed by the server's fresh ECDHE share).
 *
 * One end of a socketpair(AF_UNIX, SOCK_STREAM) is the server's stream (fe_net_open, then
 * fe_tls_accept as a TLS listener does); the other is the client. Input: [split] client bytes;
 * split: bits 0-2 pick the largest piece (1, 2, 5, 16, 100, 517, 4096, 64 KiB), bits 3-7 seed the
 * sizes. After the input the client half-closes.
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
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log/fe_log.h"
#include "net/fe_net.h"
#include "net/fe_tls.h"

#include "fuzz_check.h"
#include "fuzz_client.h"

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
  fuzz_base_handles = fuzz_loop.uv.active_handles;
  return 0;
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
static void fuzz_check_output(const fuzz_client *cl, int plain) {
  static const char answer[] = "HTTP/1.1 400 Bad Request\r\n";
  if (plain) {
    FUZZ_CHECK(cl->len > sizeof(answer) - 1 && memcmp(cl->in, answer, sizeof(answer) - 1) == 0);
    const char *body = memmem(cl->in, cl->len, "\r\n\r\n", 4);
    FUZZ_CHECK(body && memmem(cl->in, cl->len, "Content-Length: 48\r\n", 20) &&
               (size_t)(body + 4 - cl->in) + 48 == cl->len);
    return;
  }
  const unsigned char *p = (const unsigned char *)cl->in, *end = p + cl->len;
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

static void fuzz_run(fuzz_client *cl, int turns) {
  for (int i = 0; i < turns; i++) {
    uv_run(&fuzz_loop.uv, UV_RUN_NOWAIT);
    fuzz_drain(cl);
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

  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  FUZZ_CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
  fuzz_client cl = {.fd = sv[1]};
  fuzz_server *s = calloc(1, sizeof(*s));
  FUZZ_CHECK(s != NULL);
  fe_net_init(&fuzz_loop, &s->net, s);
  FUZZ_CHECK(fe_net_open(&s->net, sv[0]) == 0);
  FUZZ_CHECK(fe_tls_accept(&s->net, fuzz_srv) == 0);
  FUZZ_CHECK(fe_net_read_start(&s->net, fuzz_on_read) == 0);

  size_t off = 0;
  while (off < size && !s->ends) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    size_t n = 1 + rng % max_piece;
    if (n > size - off)
      n = size - off;
    ssize_t wr = write(sv[1], data + off, n);
    if (wr <= 0)
      break; /* the server closed, or stopped reading and the socket is full */
    off += (size_t)wr;
    /* One turn reads the piece; what the server writes waits in the socket until the end (a
     * server writes a few KiB at most before a handshake is done), which halves the calls. */
    uv_run(&fuzz_loop.uv, UV_RUN_NOWAIT);
  }
  /* The client is done: the server hears the end (EOF, or what it made of the bytes before). */
  shutdown(sv[1], SHUT_WR);
  for (int i = 0; i < 1000 && !s->ends; i++) {
    uv_run(&fuzz_loop.uv, UV_RUN_ONCE);
    fuzz_drain(&cl);
  }
  FUZZ_CHECK(s->ends == 1 && s->end < 0);
  for (int i = 0; i < 1000 && !s->closed; i++)
    uv_run(&fuzz_loop.uv, UV_RUN_ONCE);
  FUZZ_CHECK(s->closed && s->ends == 1);
  fuzz_run(&cl, 2);
  FUZZ_CHECK(fuzz_loop.uv.active_handles == fuzz_base_handles);
  if (getenv("FUZZ_TRACE")) {
    fprintf(stderr, "fuzz_tls: %zu of %zu bytes sent, end %d, %zu bytes back:", off, size, s->end,
            cl.len);
    for (size_t i = 0; i < cl.len && i < 64; i++)
      fprintf(stderr, " %02x", (unsigned char)cl.in[i]);
    fprintf(stderr, "\n");
  }
  fuzz_check_output(&cl, plain);

  close(sv[1]);
  free(cl.in);
  free(s);
  return 0;
}
