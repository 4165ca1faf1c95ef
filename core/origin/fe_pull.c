#include "origin/fe_pull.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/fe_log.h"
#include "origin/fe_origin.h"

#define FE_ERROR_BODY_MAX (64 * 1024) /* an origin's error body passed on to viewers */
#define FE_MAX_ORIGIN_ATTEMPTS 16

typedef struct fe_pull {
  fe_source src;              /* first: the sink holds the pull as its source */
  fe_loop *loop;
  fe_pull_opts opts;
  char *key;
  const fe_sink_ops *ops;
  void *sink;
  fe_origin *origin;
  fe_flv_parser parser;
  int closed;                 /* the sink let go: free at the loop's safe point */
  fe_deferred defer;
  uv_timer_t timer;           /* an error answer's body: read_timeout from its head at most */
  int attempt;
  char *url;                  /* the origin read now */
  /* an origin's error answer, passed on as it is */
  int err_status;
  char err_ctype[128];
  uint8_t *err_body;
  size_t err_len;
} fe_pull;

static const fe_origin_cbs fe_pull_origin_cbs;

static void fe_pull_count_error(fe_pull *p) {
  FE_METRIC_INC(&p->loop->metrics, origin_failures);
  if (p->opts.stats)
    p->opts.stats->origin_errors++;
}

static void fe_pull_on_timer_closed(uv_handle_t *h) {
  free(h->data);
}

static void fe_pull_free(fe_deferred *d) {
  fe_pull *p = (fe_pull *)((char *)d - offsetof(fe_pull, defer));
  fe_flv_parser_free(&p->parser);
  free(p->err_body);
  free(p->key);
  free(p->url);
  uv_close((uv_handle_t *)&p->timer, fe_pull_on_timer_closed);
}

/* The sink may close its source from inside one of the pull's own callbacks (the parser is then
 * mid-feed): stop now, free later. */
static void fe_pull_close(fe_source *s) {
  fe_pull *p = (fe_pull *)s;
  p->closed = 1;
  uv_timer_stop(&p->timer);
  if (p->origin)
    fe_origin_close(p->origin);
  p->origin = NULL;
  fe_loop_defer(p->loop, &p->defer, fe_pull_free);
}

static int fe_pull_connect(fe_pull *p, const char *url) {
  fe_origin_opts oo = {.connect_timeout = p->opts.connect_timeout,
                       .read_timeout = p->opts.read_timeout,
                       .max_tag_size = p->opts.max_tag_size,
                       .tls = p->opts.tls};
  p->origin = fe_origin_open(p->loop, url, &oo, &fe_pull_origin_cbs, p);
  FE_METRIC_INC(&p->loop->metrics, origin_connects);
  if (p->opts.stats)
    p->opts.stats->origin_connects++;
  char *copy = strdup(url);
  if (copy) {
    free(p->url);
    p->url = copy;
  }
  if (p->ops->origin)
    p->ops->origin(p->sink, p->url, 0);
  return p->origin ? 0 : -1;
}

static void fe_pull_on_end(void *ud, int err);

/* An error answer goes to viewers when its body ends, when FE_ERROR_BODY_MAX of it are in, or
 * read_timeout after its head, whichever comes first: an endless or trickling body holds nobody. */
static void fe_pull_error_done(fe_pull *p) {
  uv_timer_stop(&p->timer);
  fe_origin_close(p->origin);
  p->origin = NULL;
  fe_pull_on_end(p, 0);
}

static void fe_pull_on_error_timeout(uv_timer_t *t) {
  fe_pull *p = t->data;
  fe_info("stream %s: the origin's %d body is not over after %.1f s; answering with %zu bytes of it",
          p->key, p->err_status, p->opts.read_timeout, p->err_len);
  fe_pull_error_done(p);
}

static void fe_pull_on_response(void *ud, int status, const char *ctype) {
  fe_pull *p = ud;
  if (p->ops->origin && p->url)
    p->ops->origin(p->sink, p->url, status);
  /* A status HTTP does not have is no answer to pass on (and 000 would read as "no error"). */
  if (status < 100 || status > 599) {
    static const char msg[] = "502 the origin sent an invalid status\n";
    fe_error("stream %s: origin answered status %d; answering 502", p->key, status);
    fe_pull_count_error(p);
    fe_origin_close(p->origin);
    p->origin = NULL;
    p->ops->fail(p->sink, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  if (status != 200) {
    p->err_status = status;
    snprintf(p->err_ctype, sizeof(p->err_ctype), "%s", ctype ? ctype : "text/plain");
    uv_timer_start(&p->timer, fe_pull_on_error_timeout,
                   (uint64_t)(p->opts.read_timeout * 1000.0 + 0.5), 0);
    return;
  }
  fe_info("stream %s: origin answered 200", p->key);
}

static int fe_pull_on_tag(void *ud, const fe_flv_tag *tag) {
  fe_pull *p = ud;
  if (p->parser.tags == 1)
    p->ops->start(p->sink, p->parser.header_flags);
  if (p->closed)
    return FE_FLV_ENOMEM; /* stops the feed; nothing is reported to a closed pull's sink */
  return p->ops->tag(p->sink, tag);
}

static void fe_pull_on_body(void *ud, const uint8_t *data, size_t len) {
  fe_pull *p = ud;
  FE_METRIC_ADD(&p->loop->metrics, bytes_received, len);
  if (p->opts.stats)
    p->opts.stats->bytes_in += len;
  if (p->err_status) {
    size_t room = FE_ERROR_BODY_MAX - p->err_len;
    if (len > room)
      len = room;
    if (len && !p->err_body)
      p->err_body = malloc(FE_ERROR_BODY_MAX);
    if (p->err_body) {
      memcpy(p->err_body + p->err_len, data, len);
      p->err_len += len;
    }
    if (p->err_len == FE_ERROR_BODY_MAX)
      fe_pull_error_done(p);
    return;
  }
  /* The stream starts with its first tag: the FLV header alone says nothing yet. */
  int rc = fe_flv_parser_feed(&p->parser, data, len, fe_pull_on_tag, p);
  if (rc < 0 && !p->closed) {
    fe_error("stream %s: malformed FLV from the origin: %s; ending the stream", p->key,
             fe_flv_strerror(rc));
    fe_pull_count_error(p);
    fe_origin_close(p->origin);
    p->origin = NULL;
    if (p->parser.tags > 0) {
      p->ops->end(p->sink, rc);
    } else {
      static const char msg[] = "502 the origin sent no valid FLV\n";
      p->ops->fail(p->sink, 502, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    }
  }
}

static void fe_pull_on_flush(void *ud) {
  fe_pull *p = ud;
  if (p->parser.tags > 0 && !p->closed)
    p->ops->flush(p->sink);
}

/* Before the stream started: asks for another origin. Returns 1 when a new pull is under way, 0
 * when there is none, -1 when the policy asked failed. */
static int fe_pull_failover(fe_pull *p, int err) {
  if (!p->opts.next_origin || p->attempt >= FE_MAX_ORIGIN_ATTEMPTS)
    return 0;
  char what[64], url[4096];
  if (p->err_status)
    snprintf(what, sizeof(what), "status %d", p->err_status);
  else
    snprintf(what, sizeof(what), "%s", err == FE_ORIGIN_ETIMEDOUT ? "timeout" : "unreachable");
  int rc = p->opts.next_origin(p->opts.ud, p->attempt + 1, what, url, sizeof(url));
  if (rc != 1)
    return rc;
  p->attempt++;
  if (p->opts.stats)
    p->opts.stats->origin_failovers++;
  fe_warn("stream %s: origin failed (%s); trying %s (attempt %d)", p->key, what, url, p->attempt);
  if (p->origin)
    fe_origin_close(p->origin);
  p->origin = NULL;
  p->err_status = 0;
  p->err_len = 0;
  fe_flv_parser_free(&p->parser);
  fe_flv_parser_init(&p->parser, p->opts.max_tag_size);
  return fe_pull_connect(p, url) == 0;
}

static void fe_pull_on_end(void *ud, int err) {
  fe_pull *p = ud;
  int before_start = p->parser.tags == 0;
  uv_timer_stop(&p->timer);
  int next = before_start ? fe_pull_failover(p, err) : 0;
  if (next == 1)
    return;
  if (next < 0) {
    static const char msg[] = "500 policy error\n";
    fe_pull_count_error(p);
    p->ops->fail(p->sink, 500, "text/plain", (const uint8_t *)msg, sizeof(msg) - 1);
    return;
  }
  if (p->err_status) {
    fe_info("stream %s: origin answered %d", p->key, p->err_status);
    p->ops->fail(p->sink, p->err_status, p->err_ctype, p->err_body, p->err_len);
    return;
  }
  if (before_start) {
    if (err == 0)
      err = FE_ORIGIN_EPROTO;
    int status = fe_origin_status(err);
    fe_error("stream %s: %s; answering %d", p->key, fe_origin_strerror(err), status);
    fe_pull_count_error(p);
    const char *msg = status == 504   ? "504 origin timed out\n"
                      : status == 404 ? "404 no such stream\n"
                                      : "502 origin unreachable\n";
    p->ops->fail(p->sink, status, "text/plain", (const uint8_t *)msg, strlen(msg));
    return;
  }
  if (err == 0 && fe_flv_parser_finish(&p->parser) < 0)
    err = FE_FLV_ETRUNC;
  if (err) {
    fe_error("stream %s: %s; ending the stream", p->key, fe_origin_strerror(err));
    fe_pull_count_error(p);
  } else {
    fe_info("stream %s: origin ended the stream", p->key);
  }
  p->ops->end(p->sink, err);
}

static const fe_origin_cbs fe_pull_origin_cbs = {
    .on_response = fe_pull_on_response,
    .on_body = fe_pull_on_body,
    .on_flush = fe_pull_on_flush,
    .on_end = fe_pull_on_end,
};

fe_source *fe_pull_open(fe_loop *l, const char *url, const fe_pull_opts *opts,
                        const fe_sink_ops *ops, void *sink) {
  fe_pull *p = calloc(1, sizeof(*p));
  if (!p)
    return NULL;
  p->src.close = fe_pull_close;
  p->loop = l;
  p->opts = *opts;
  p->key = strdup(opts->key ? opts->key : "?");
  p->opts.key = p->key;
  p->ops = ops;
  p->sink = sink;
  p->attempt = 1;
  fe_flv_parser_init(&p->parser, opts->max_tag_size);
  fe_info("stream %s: pulling %s", p->key, url);
  if (!p->key || fe_pull_connect(p, url) < 0) {
    fe_flv_parser_free(&p->parser);
    free(p->key);
    free(p->url);
    free(p);
    return NULL;
  }
  uv_timer_init(&l->uv, &p->timer);
  p->timer.data = p;
  return &p->src;
}

fe_origin *fe_pull_origin(fe_source *s) {
  fe_pull *p = (fe_pull *)s;
  return p->closed ? NULL : p->origin;
}
