/*
 * Internal to http/: HTTP/2 (Debian's libnghttp2) on a client connection, negotiated by ALPN on
 * TLS listeners, or on h2c listeners by the preface (prior knowledge) or HTTP/1.1's Upgrade: h2c.
 *
 * One nghttp2 session per connection, on top of fe_net. Each stream is a request: an fe_conn of
 * its own (c->h2s) that goes through the same router, policies, kinds and access log as an
 * HTTP/1.1 request. A kind answers a stream through the small response interface below, which
 * an HTTP/1.1 connection implements with its own writes:
 *   - a head, given as the HTTP/1.1 text the kinds already make (status line and fields; the
 *     connection-specific ones are dropped, names lower-cased),
 *   - body pieces that stay the caller's until their `done` callback (VOD), or the live viewer's
 *     spans filled from the hub's shared blocks,
 *   - the end.
 * DATA frames are written with nghttp2's NO_COPY data source: the 9-byte frame header and the
 * pinned span go out in one writev, gathered with other frames into one batch per flush, so no
 * media byte is copied per viewer. Flow control stands in for the socket's back-pressure: a live
 * stream whose window stays closed falls behind in the hub's window and is moved to a keyframe (or
 * cut off) as a slow HTTP/1.1 viewer is, while the other streams of its connection go on; nghttp2's
 * scheduler shares the connection between streams of equal weight, one frame at a time.
 *
 * Limits: SETTINGS_MAX_CONCURRENT_STREAMS (limits.h2_max_streams), the header list
 * (limits.max_header_size, answered 431), nghttp2's own bounds (RST_STREAM rate, CONTINUATION
 * frames, unacknowledged SETTINGS/PING acks, SETTINGS entries) and our token bucket on PING,
 * SETTINGS, RST_STREAM and empty frames (limits.h2_control_rate): beyond it, GOAWAY
 * ENHANCE_YOUR_CALM and the connection closes.
 */
#ifndef FE_HTTP2_H
#define FE_HTTP2_H

#include <stddef.h>
#include <stdint.h>

#include "http/fe_http_conn.h"

/** 1 when data starts with (at least 14 bytes of) HTTP/2's connection preface. */
int fe_h2_preface(const char *data, size_t len);
/**
 * Makes c an HTTP/2 connection: the session and our SETTINGS, then the bytes read so far (the
 * client's preface on h2c). On failure c is closed.
 */
void fe_h2_start(fe_conn *c, const char *data, size_t len);
/** Entries of one SETTINGS frame at most, the upgrade's HTTP2-Settings too (6 bytes each). */
#define FE_H2_MAX_SETTINGS 16
/**
 * Decodes an HTTP2-Settings value (base64url, RFC 7540 3.2.1) into out: the SETTINGS payload's
 * length, or -1 when it is not base64url, not whole 6-byte entries, longer than cap, or holds a
 * value HTTP/2 forbids (ENABLE_PUSH 2, a window or frame size out of range).
 */
int fe_h2_settings_decode(const char *v, size_t n, uint8_t *out, size_t cap);
/**
 * The HTTP/1.1 Upgrade to h2c (RFC 7540 3.2) of the bodyless request c's parser just completed,
 * `settings` its decoded HTTP2-Settings: c becomes an HTTP/2 connection whose stream 1 (half-closed
 * remote) is that request, routed once the client's preface has come (within request_timeout, or
 * the connection closes); `101 Switching Protocols` and our SETTINGS go out first. The bytes read
 * after the request go to fe_h2_on_read (call it with len 0 when there are none: the 101 goes out
 * from there). 0, or -1 with c untouched (answer it in HTTP/1.1).
 */
int fe_h2_upgrade(fe_conn *c, const uint8_t *settings, size_t slen);
/** Bytes read on an HTTP/2 connection. */
void fe_h2_on_read(fe_conn *c, const char *data, size_t len);
/** The connection closes (fe_conn_end): every stream's request ends now. */
void fe_h2_conn_close(fe_conn *c);
/** From the connection's close callback: the session and its streams are freed. */
void fe_h2_free(fe_conn *c);
/** Swept every 250 ms: the streams' own checks, send and idle timeouts. 1 if it closed c. */
int fe_h2_sweep(fe_conn *c, uint64_t now);
/** Graceful stop: GOAWAY; the connection closes once its streams have ended. */
void fe_h2_stop(fe_conn *c);

/* ---- a stream's answer (r: a request with r->h2s) --------------------------------------------- */

/** The connection a stream's request came on (its TLS details, for the access log). */
const fe_net *fe_h2_net(const fe_conn *r);
/** A finite answer: the HTTP/1.1 head text and a body (copied; NULL/0: none). */
void fe_h2_respond(fe_conn *r, const char *head, size_t hlen, const void *body, size_t blen);
/** A head whose body follows as pieces (fe_h2_piece, then fe_h2_end); `body` 0: head only. */
void fe_h2_head(fe_conn *r, const char *head, size_t hlen, int body);
/**
 * A piece of the body: p stays valid until done(ud, status) runs (0 once it is written, or an
 * error when the stream ended first). One piece at a time.
 */
void fe_h2_piece(fe_conn *r, const void *p, size_t n, void (*done)(void *ud, int status), void *ud);
/** The body is complete (after the last piece's done). */
void fe_h2_end(fe_conn *r);
/** A live answer: the head, then DATA straight from the viewer's hub (r->viewer) as it fills. */
void fe_h2_live(fe_conn *r, const char *head, size_t hlen);
/** The hub has more for the live viewer (or it ended). */
void fe_h2_wake(fe_conn *r);
/** The request ended (fe_conn_end): reset the stream if unfinished; freed when nothing holds it. */
void fe_h2_stream_end(fe_conn *r, int reset);

#endif
