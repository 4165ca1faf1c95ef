/* The client's end of a socketpair, for the targets that drive a server stream (fuzz_conn,
 * fuzz_h2, fuzz_tls): everything the server wrote, read without blocking. */
#ifndef FUZZ_CLIENT_H
#define FUZZ_CLIENT_H

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_check.h"

typedef struct fuzz_client {
  int fd;   /* non-blocking */
  char *in; /* every byte the server wrote */
  size_t len, cap;
  int eof;  /* the server closed (or reset) its end */
} fuzz_client;

/* Reads what is there. */
static void fuzz_drain(fuzz_client *cl) {
  for (;;) {
    if (cl->cap - cl->len < 65536) {
      cl->cap = cl->cap ? cl->cap * 2 : 131072;
      cl->in = realloc(cl->in, cl->cap);
      FUZZ_CHECK(cl->in != NULL);
    }
    ssize_t n = read(cl->fd, cl->in + cl->len, cl->cap - cl->len);
    if (n > 0) {
      cl->len += (size_t)n;
      continue;
    }
    FUZZ_CHECK(n == 0 || errno == EAGAIN || errno == ECONNRESET);
    if (n == 0 || errno == ECONNRESET)
      cl->eof = 1;
    return;
  }
}

#endif
