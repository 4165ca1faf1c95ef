/*
 * fe_origin: one pull from an origin, delivered as a byte stream.
 *
 * Two kinds behind one interface: an HTTP/1.1 GET (llhttp parses the response; chunked,
 * Content-Length and close-delimited bodies all arrive de-framed; informational 1xx answers are
 * skipped, a 101 is a protocol error) and a built-in file source
 * ("file:PATH") that plays an FLV file as an endless live stream in real time, looping with
 * monotonic timestamps. The caller owns nothing inside; fe_origin_close() ends it, after which no
 * callback runs and the memory is released once libuv has closed the handles.
 */
#ifndef FE_ORIGIN_H
#define FE_ORIGIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "loop/fe_loop.h"

/* Failures, negative. Map to the status a viewer sees with fe_origin_status(). */
enum {
  FE_ORIGIN_EUNREACH = -2001,  /* resolve or connect failed: 502 */
  FE_ORIGIN_ETIMEDOUT = -2002, /* connect or response timeout: 504 */
  FE_ORIGIN_EPROTO = -2003,    /* not a valid HTTP response: 502 */
  FE_ORIGIN_ESTALL = -2004,    /* no data for the read timeout once streaming */
  FE_ORIGIN_EFILE = -2005,     /* file source unreadable or not FLV */
  FE_ORIGIN_EURL = -2006,      /* origin URL not understood (fe_origin_check_url) */
  FE_ORIGIN_ENOTFOUND = -2007, /* file source: no such file: 404 */
  FE_ORIGIN_ETLS = -2008,      /* https: the TLS handshake failed: 502 */
  FE_ORIGIN_ETLSVERIFY = -2009, /* https: the origin's certificate was not verified: 502 */
};

struct fe_tls_client;

typedef struct fe_origin fe_origin;

typedef struct fe_origin_cbs {
  /** Response head received: status and Content-Type (may be NULL; borrowed). */
  void (*on_response)(void *ud, int status, const char *content_type);
  /** Body bytes (de-chunked); borrowed for the call. */
  void (*on_body)(void *ud, const uint8_t *data, size_t len);
  /** A batch of on_body calls is over: a good moment to flush to viewers. */
  void (*on_flush)(void *ud);
  /** The pull is over: 0 for a clean end of body, or a FE_ORIGIN_E* / libuv error. Last callback. */
  void (*on_end)(void *ud, int err);
} fe_origin_cbs;

typedef struct fe_origin_opts {
  double connect_timeout; /* seconds, up to the response head */
  double read_timeout;    /* seconds between reads once streaming */
  uint32_t max_tag_size;  /* file source: tags beyond this make the file invalid */
  /** More request header lines ("Range: bytes=0-9\r\n..."), copied; NULL for none. Each line
   * must be "Name: value\r\n" of visible ASCII and spaces: fe_origin_open refuses others (the
   * origin ends with FE_ORIGIN_EURL). At most 1 KiB. */
  const char *extra_headers;
  /** https:// URLs: the TLS client context (node-wide, net/fe_tls.h; the resource's ca_file and
   * tls_verify). NULL: verified against the system's CA bundle. */
  struct fe_tls_client *tls;
} fe_origin_opts;

#define FE_ORIGIN_HVAL 256 /* captured response header values are cut to this (NUL included) */

/**
 * The response head's headers a cache needs, captured as they are (values longer than
 * FE_ORIGIN_HVAL - 1 are cut; "" when absent). Content-Length is parsed: -1 when absent or not a
 * number. Valid from on_response until the origin is closed.
 */
typedef struct fe_origin_head {
  int64_t content_length;
  char content_range[FE_ORIGIN_HVAL];
  char etag[FE_ORIGIN_HVAL];
  char last_modified[FE_ORIGIN_HVAL];
  char cache_control[FE_ORIGIN_HVAL];
  char content_type[FE_ORIGIN_HVAL];
} fe_origin_head;

/**
 * Starts pulling `url` ("http[s]://host[:port]/path" or "file:PATH"). Callbacks come from the loop,
 * never from inside this call. Returns NULL only when out of memory.
 */
fe_origin *fe_origin_open(fe_loop *loop, const char *url, const fe_origin_opts *opts,
                          const fe_origin_cbs *cbs, void *ud);
/**
 * 0 when fe_origin_open can pull `url`: "file:PATH", or "http[s]://host[:port][/path]" made only of
 * visible ASCII (no control byte, space, DEL or byte >= 0x80: the URL goes into the request line
 * as it is). FE_ORIGIN_EURL otherwise; fe_origin_open then ends with that error.
 */
int fe_origin_check_url(const char *url);
/** The captured response head (zeroed, content_length -1, before the head arrives). */
const fe_origin_head *fe_origin_response_head(const fe_origin *o);
/** Stops the pull; no callback runs after this. Safe from inside a callback. */
void fe_origin_close(fe_origin *o);
/**
 * Stops (pause 1) or resumes (0) reading an HTTP body, as back-pressure from the owner: the
 * read timeout does not run while paused. Bytes of the read being parsed still arrive. No-op
 * outside a body, and for file sources.
 */
void fe_origin_pause(fe_origin *o, int pause);
/** The HTTP status a viewer gets for a failure code (404, 502 or 504). */
int fe_origin_status(int err);
/** A short description of a failure code, for logs. */
const char *fe_origin_strerror(int err);

/*
 * Test seam (tests/fuzz/fuzz_origin.c): the HTTP response parsed from bytes the caller hands in,
 * with the same llhttp settings and callbacks as a connection's reads, and no socket.
 */
/**
 * Makes `o`, an http:// origin just returned by fe_origin_open (its loop has not run since), take
 * its response from fe_origin_feed() instead of resolving and connecting. Returns 0, or -1 when
 * `o` is not such an origin.
 */
int fe_origin_feed_start(fe_origin *o);
/** Hands `o` what a read of its connection would: nread bytes of data, or nread = UV_EOF. */
void fe_origin_feed(fe_origin *o, ssize_t nread, const char *data);

#endif
