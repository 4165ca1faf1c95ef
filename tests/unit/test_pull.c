/* An origin pull without a socket: each story hands a response to the pull's origin through
 * fe_origin_feed, as its connection's reads would, and a recording sink says what viewers got. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "fe_test.h"
#include "log/fe_log.h"
#include "loop/fe_loop.h"
#include "origin/fe_origin.h"
#include "origin/fe_pull.h"

static fe_loop fe_L;

typedef struct fe_rec {
  fe_source *src;
  int closed, started, ended, failed, err, status;
  uint64_t tags;
  char body[256], ctype[128];
  size_t body_len;
} fe_rec;

static void fe_rec_close(fe_rec *r) {
  r->closed = 1;
  r->src->close(r->src);
}

static void fe_rec_start(void *sink, uint8_t flags) {
  ((fe_rec *)sink)->started++;
}

static int fe_rec_tag(void *sink, const fe_flv_tag *tag) {
  ((fe_rec *)sink)->tags++;
  return 0;
}

static void fe_rec_flush(void *sink) {}

static void fe_rec_fail(void *sink, int status, const char *ctype, const uint8_t *body, size_t len) {
  fe_rec *r = sink;
  r->failed++;
  r->status = status;
  snprintf(r->ctype, sizeof(r->ctype), "%s", ctype);
  r->body_len = len < sizeof(r->body) ? len : sizeof(r->body);
  memcpy(r->body, body, r->body_len);
  fe_rec_close(r); /* as the hub does */
}

static void fe_rec_end(void *sink, int err) {
  fe_rec *r = sink;
  r->ended++;
  r->err = err;
  fe_rec_close(r);
}

static const fe_sink_ops fe_rec_ops = {
    .start = fe_rec_start, .tag = fe_rec_tag, .flush = fe_rec_flush, .fail = fe_rec_fail, .end = fe_rec_end};

/* The FLV header and one AAC tag. */
static const char fe_flv[] = "FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
                             "\x08\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\xaf\x01\x00\x00\x00\x0d";
#define FE_FLV_LEN (sizeof(fe_flv) - 1)

/* Pulls one origin whose answer is head + body, in reads of `piece` bytes (0: head and body one
 * read each), then the connection closes. */
static fe_rec fe_pull_pieces(const char *head, const char *body, size_t body_len, size_t piece) {
  fe_rec r = {0};
  fe_pull_opts o = {.key = "test", .connect_timeout = 5, .read_timeout = 5, .max_tag_size = 1 << 20};
  char answer[1024];
  size_t head_len = strlen(head), len = head_len + body_len;
  FE_CHECK(len <= sizeof(answer));
  memcpy(answer, head, head_len);
  memcpy(answer + head_len, body, body_len);
  r.src = fe_pull_open(&fe_L, "http://127.0.0.1:9/test", &o, &fe_rec_ops, &r);
  fe_origin *org = fe_pull_origin(r.src);
  FE_CHECK(org && fe_origin_feed_start(org) == 0);
  for (size_t at = 0, n; at < len && !r.closed && (org = fe_pull_origin(r.src)); at += n) {
    n = piece ? piece : at < head_len ? head_len : body_len;
    if (n > len - at)
      n = len - at;
    fe_origin_feed(org, (ssize_t)n, answer + at);
  }
  if (!r.closed && (org = fe_pull_origin(r.src)))
    fe_origin_feed(org, UV_EOF, NULL);
  if (!r.closed)
    fe_rec_close(&r);
  for (int i = 0; i < 4 && uv_run(&fe_L.uv, UV_RUN_NOWAIT); i++)
    ;
  FE_CHECK(!uv_loop_alive(&fe_L.uv)); /* the pull and its origin are gone */
  return r;
}

static fe_rec fe_pull_answer(const char *head, const char *body, size_t body_len) {
  return fe_pull_pieces(head, body, body_len, 0);
}

/* Found with fuzz_origin: "000" read as no error, so the body went out as a 200 stream; "099" and
 * "600" reached viewers as their status. */
static void test_status_outside_http_is_502(void) {
  const char *heads[] = {"HTTP/1.1 000 X\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n",
                         "HTTP/1.1 600 X\r\nContent-Type: video/x-flv\r\n\r\n", "HTTP/1.0 999 X\r\n\r\n"};
  for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
    fe_rec r = fe_pull_answer(heads[i], fe_flv, FE_FLV_LEN);
    FE_CHECK_EQ(r.started, 0);
    FE_CHECK_EQ(r.tags, 0);
    FE_CHECK_EQ(r.failed, 1);
    FE_CHECK_EQ(r.status, 502);
  }
}

static void test_error_status_passed_on(void) {
  fe_rec r = fe_pull_answer("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                            "nope\n", 5);
  FE_CHECK_EQ(r.failed, 1);
  FE_CHECK_EQ(r.status, 404);
  FE_CHECK(r.body_len == 5 && memcmp(r.body, "nope\n", 5) == 0);
}

/* Seen with fuzz_origin's split reads: a header name cut by a read lost the Content-Type
 * ("Content-" then "Type"), or took another header's ("X-" then "Content-Type"). */
static void test_content_type_in_pieces(void) {
  const char *head = "HTTP/1.1 503 Busy\r\nX-Content-Type: a/b\r\nContent-Type: text/custom\r\n"
                     "Content-Length: 5\r\n\r\n";
  for (size_t piece = 1; piece <= 8; piece++) {
    fe_rec r = fe_pull_pieces(head, "busy\n", 5, piece);
    FE_CHECK_EQ(r.status, 503);
    FE_CHECK(strcmp(r.ctype, "text/custom") == 0);
    FE_CHECK(r.body_len == 5 && memcmp(r.body, "busy\n", 5) == 0);
  }
}

static void test_chunked_stream_starts_and_ends(void) {
  char body[256];
  int n = snprintf(body, sizeof(body), "%zx\r\n", FE_FLV_LEN);
  memcpy(body + n, fe_flv, FE_FLV_LEN);
  n += (int)FE_FLV_LEN;
  memcpy(body + n, "\r\n0\r\n\r\n", 7);
  n += 7;
  fe_rec r = fe_pull_answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body, (size_t)n);
  FE_CHECK_EQ(r.started, 1);
  FE_CHECK_EQ(r.tags, 1);
  FE_CHECK_EQ(r.ended, 1);
  FE_CHECK_EQ(r.err, 0);
  FE_CHECK_EQ(r.failed, 0);
}

int main(void) {
  fe_log_set_level(FE_LOG_ERROR + 1);
  if (fe_loop_init(&fe_L, 0) < 0)
    return 1;
  FE_RUN(test_status_outside_http_is_502);
  FE_RUN(test_error_status_passed_on);
  FE_RUN(test_content_type_in_pieces);
  FE_RUN(test_chunked_stream_starts_and_ends);
  fe_loop_close(&fe_L);
  return FE_DONE();
}
