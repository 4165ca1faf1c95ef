#include "origin/fe_origin.h"

#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "flv/fe_flv.h"
#include "net/fe_net.h"
#include "net/fe_tls.h"
#include "origin/fe_file.h"
#include "str/fe_str.h"

enum { FE_OK_HTTP, FE_OK_FILE };
enum { FE_OS_RESOLVING, FE_OS_CONNECTING, FE_OS_HEAD, FE_OS_BODY, FE_OS_DONE };

struct fe_origin {
  fe_loop *loop;
  fe_origin_cbs cbs;
  void *ud;
  fe_origin_opts opts;
  int kind;
  int state;
  int paused;    /* the owner stopped the body for now (fe_origin_pause) */
  int closed;  /* fe_origin_close() was called: no more callbacks */
  int ended;   /* on_end was delivered */
  int handles; /* handles and requests still to come back before the memory can go */
  uv_timer_t timer;
  /* HTTP */
  fe_net net;
  uv_getaddrinfo_t gai;
  fe_net_write write;
  char *host, *port, *request;
  size_t request_len;
  int https;
  struct fe_tls_client *tls;
  llhttp_t parser;
  llhttp_settings_t settings;
  char hname[24];   /* the header name being parsed, lowercase; hname_len > 23: not one we keep */
  size_t hname_len;
  char *hval;       /* where the current header's value goes (a field of head), or NULL */
  size_t hval_len;
  fe_origin_head head;
  char clen[24];    /* Content-Length as received */
  int interim;  /* the head parsed is a 1xx: its message ends, and the answer comes after it */
  /* file */
  char *file_path;
  const fe_file *file; /* shared by every stream playing it (origin/fe_file) */
  size_t next;
  uint64_t start_ms;   /* loop time that maps to output timestamp 0 */
  uint64_t loop_base;  /* output timestamp of the current pass's first tag */
  int pass;
  uv_work_t load;      /* the file is opened (read and indexed once per process) off the loop */
  int load_rc;
};

static void fe_origin_maybe_free(fe_origin *o) {
  if (!o->closed || o->handles > 0)
    return;
  free(o->host);
  free(o->port);
  free(o->request);
  free(o->file_path);
  if (o->file)
    fe_file_unref(o->loop->files, o->file);
  free(o);
}

static void fe_origin_on_handle_closed(uv_handle_t *h) {
  fe_origin *o = h->data;
  o->handles--;
  fe_origin_maybe_free(o);
}

static void fe_origin_on_net_closed(fe_net *n) {
  fe_origin *o = n->data;
  o->handles--;
  fe_origin_maybe_free(o);
}

/* Delivers on_end once, unless the owner already closed us. */
static void fe_origin_finish(fe_origin *o, int err) {
  if (o->ended || o->closed)
    return;
  o->ended = 1;
  o->state = FE_OS_DONE;
  uv_timer_stop(&o->timer);
  if (o->net.open)
    fe_net_read_stop(&o->net);
  o->cbs.on_end(o->ud, err);
}

int fe_origin_status(int err) {
  return err == FE_ORIGIN_ETIMEDOUT ? 504 : err == FE_ORIGIN_ENOTFOUND ? 404 : 502;
}

const char *fe_origin_strerror(int err) {
  switch (err) {
  case 0: return "end of stream";
  case FE_ORIGIN_EUNREACH: return "origin unreachable";
  case FE_ORIGIN_ETIMEDOUT: return "origin timed out";
  case FE_ORIGIN_EPROTO: return "invalid HTTP response from origin";
  case FE_ORIGIN_ESTALL: return "origin stalled (read timeout)";
  case FE_ORIGIN_EFILE: return "file source unreadable or not FLV";
  case FE_ORIGIN_EURL: return "origin URL not understood";
  case FE_ORIGIN_ENOTFOUND: return "no such file";
  case FE_ORIGIN_ETLS: return "TLS handshake with the origin failed";
  case FE_ORIGIN_ETLSVERIFY: return "origin certificate not verified";
  default: return err <= -1000 ? fe_flv_strerror(err) : uv_strerror(err);
  }
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static uint64_t fe_ms(double seconds) {
  return (uint64_t)(seconds * 1000.0 + 0.5);
}

static void fe_origin_on_timeout(uv_timer_t *t) {
  fe_origin *o = t->data;
  fe_origin_finish(o, o->state == FE_OS_BODY ? FE_ORIGIN_ESTALL : FE_ORIGIN_ETIMEDOUT);
}

/* A header name may come in pieces, one per read: it is gathered (lowercase, bounded) and matched
 * once complete. */
static int fe_oh_on_header_field(llhttp_t *p, const char *at, size_t len) {
  fe_origin *o = p->data;
  for (size_t i = 0; i < len && o->hname_len < sizeof(o->hname); i++) {
    char ch = at[i];
    o->hname[o->hname_len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  if (len > sizeof(o->hname))
    o->hname_len = sizeof(o->hname);
  return 0;
}

static int fe_oh_on_header_field_complete(llhttp_t *p) {
  fe_origin *o = p->data;
  static const struct {
    const char *name;
    size_t off;
  } kept[] = {
      {"content-type", offsetof(fe_origin_head, content_type)},
      {"content-range", offsetof(fe_origin_head, content_range)},
      {"content-length", 0}, /* parsed from a scratch copy in content_range's place below */
      {"etag", offsetof(fe_origin_head, etag)},
      {"last-modified", offsetof(fe_origin_head, last_modified)},
      {"cache-control", offsetof(fe_origin_head, cache_control)},
  };
  o->hval = NULL;
  for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
    if (o->hname_len == strlen(kept[i].name) && memcmp(o->hname, kept[i].name, o->hname_len) == 0) {
      o->hval = kept[i].off ? (char *)&o->head + kept[i].off : o->clen;
      o->hval[0] = 0;
      o->hval_len = 0;
    }
  }
  o->hname_len = 0;
  return 0;
}

static int fe_oh_on_header_value(llhttp_t *p, const char *at, size_t len) {
  fe_origin *o = p->data;
  if (o->hval) {
    size_t cap = o->hval == o->clen ? sizeof(o->clen) : FE_ORIGIN_HVAL;
    size_t room = cap - 1 - o->hval_len;
    if (len > room)
      len = room;
    memcpy(o->hval + o->hval_len, at, len);
    o->hval_len += len;
    o->hval[o->hval_len] = 0;
  }
  return 0;
}

/* The head's Content-Length, from the value gathered: digits only, else unknown (-1). */
static void fe_oh_content_length(fe_origin *o) {
  const char *s = o->clen;
  o->head.content_length = -1;
  if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 18)
    return;
  o->head.content_length = strtoll(s, NULL, 10);
}

static void fe_oh_reset_head(fe_origin *o) {
  memset(&o->head, 0, sizeof(o->head));
  o->head.content_length = -1;
  o->clen[0] = 0;
  o->hval = NULL;
}

const fe_origin_head *fe_origin_response_head(const fe_origin *o) {
  return &o->head;
}

static int fe_oh_on_headers_complete(llhttp_t *p) {
  fe_origin *o = p->data;
  /* 101 would turn the connection into another protocol: not a stream we can read. */
  if (p->status_code == 101)
    return -1;
  /* 100 Continue, 103 Early Hints: not the answer; wait for it (the head timeout still runs). */
  if (p->status_code >= 100 && p->status_code < 200) {
    o->interim = 1;
    fe_oh_reset_head(o);
    return 0;
  }
  fe_oh_content_length(o);
  o->state = FE_OS_BODY;
  uv_timer_start(&o->timer, fe_origin_on_timeout, fe_ms(o->opts.read_timeout), 0);
  o->cbs.on_response(o->ud, p->status_code, o->head.content_type[0] ? o->head.content_type : NULL);
  return o->closed ? HPE_USER : 0;
}

static int fe_oh_on_body(llhttp_t *p, const char *at, size_t len) {
  fe_origin *o = p->data;
  o->cbs.on_body(o->ud, (const uint8_t *)at, len);
  return o->closed || o->ended ? HPE_USER : 0;
}

static int fe_oh_on_message_complete(llhttp_t *p) {
  fe_origin *o = p->data;
  if (o->interim) {
    o->interim = 0;
    return 0;
  }
  fe_origin_finish(o, 0);
  return HPE_USER;
}

static void fe_origin_on_read(fe_net *n, ssize_t nread, const char *data) {
  fe_origin *o = n->data;
  if (o->closed || o->ended)
    return;
  if (nread > 0) {
    if (o->state == FE_OS_BODY && !o->paused)
      uv_timer_start(&o->timer, fe_origin_on_timeout, fe_ms(o->opts.read_timeout), 0);
    llhttp_errno_t e = llhttp_execute(&o->parser, data, (size_t)nread);
    if (o->closed || o->ended)
      return;
    if (e != HPE_OK) {
      fe_origin_finish(o, FE_ORIGIN_EPROTO);
      return;
    }
    if (o->state == FE_OS_BODY)
      o->cbs.on_flush(o->ud);
  } else if (nread < 0) {
    if (nread == UV_EOF) {
      /* A close-delimited body ends here; anything else is cut short. */
      llhttp_errno_t e = llhttp_finish(&o->parser);
      if (o->closed || o->ended)
        return;
      fe_origin_finish(o, e == HPE_OK && o->state == FE_OS_BODY ? 0 : FE_ORIGIN_EPROTO);
    } else {
      int err = nread == FE_NET_ETLS ? FE_ORIGIN_ETLS : (int)nread;
      fe_origin_finish(o, o->state == FE_OS_BODY ? err : FE_ORIGIN_EUNREACH);
    }
  }
}

static void fe_origin_on_write(fe_net_write *w, int status) {
  fe_origin *o = w->net->data;
  o->handles--;
  if (status < 0 && status != UV_ECANCELED)
    fe_origin_finish(o, FE_ORIGIN_EUNREACH);
  fe_origin_maybe_free(o);
}

static void fe_origin_on_connect(fe_net *n, int status) {
  fe_origin *o = n->data;
  o->handles--;
  if (o->closed) {
    fe_origin_maybe_free(o);
    return;
  }
  if (status < 0) {
    fe_origin_finish(o, status == UV_ETIMEDOUT      ? FE_ORIGIN_ETIMEDOUT
                        : status == FE_NET_ETLSVERIFY ? FE_ORIGIN_ETLSVERIFY
                        : status == FE_NET_ETLS       ? FE_ORIGIN_ETLS
                                                      : FE_ORIGIN_EUNREACH);
    return;
  }
  o->state = FE_OS_HEAD;
  fe_net_nodelay(&o->net);
  uv_buf_t b = uv_buf_init(o->request, (unsigned)o->request_len);
  if (fe_net_writev(&o->net, &o->write, &b, 1, fe_origin_on_write) == 0)
    o->handles++;
  fe_net_read_start(&o->net, fe_origin_on_read);
}

static void fe_origin_connect_addr(fe_origin *o, const struct sockaddr *addr) {
  fe_net_init(o->loop, &o->net, o);
  o->handles++;
  o->state = FE_OS_CONNECTING;
  int rc = !o->https ? 0 : o->tls ? fe_net_use_tls(&o->net, o->tls, o->host) : FE_ORIGIN_ETLS;
  if (rc == 0)
    rc = fe_net_connect(&o->net, addr, fe_origin_on_connect);
  if (rc < 0) {
    fe_origin_finish(o, FE_ORIGIN_EUNREACH);
    return;
  }
  o->handles++;
}

static void fe_origin_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  fe_origin *o = req->data;
  o->handles--;
  if (o->closed || status < 0 || !res) {
    if (res)
      uv_freeaddrinfo(res);
    if (!o->closed)
      fe_origin_finish(o, FE_ORIGIN_EUNREACH);
    fe_origin_maybe_free(o);
    return;
  }
  fe_origin_connect_addr(o, res->ai_addr);
  uv_freeaddrinfo(res);
}

typedef struct fe_url_parts {
  const char *host, *port, *path; /* path: "/" when the URL has none */
  size_t host_len, port_len;
  int authority_len;              /* host[:port] as the URL wrote it */
  int https;
  const char *authority;
} fe_url_parts;

/* Splits "http://host[:port][/path]". -1 when it is not one: the URL goes into the request line
 * and the Host header as it is, so a byte that is not visible ASCII (a CR or LF would add a
 * header, a space would end the target) makes it invalid, wherever it came from. */
static int fe_origin_split_url(const char *url, fe_url_parts *u) {
  size_t n = strlen(url);
  u->https = strncmp(url, "https://", 8) == 0;
  size_t scheme = u->https ? 8 : 7;
  if (n < scheme + 1 || (!u->https && strncmp(url, "http://", 7) != 0) || !fe_str_visible(url, n))
    return -1;
  const char *p = url + scheme;
  u->authority = p;
  const char *host_end;
  u->host = p;
  if (*p == '[') {
    u->host = p + 1;
    host_end = strchr(p, ']');
    if (!host_end)
      return -1;
    p = host_end + 1;
  } else {
    host_end = p + strcspn(p, ":/");
    p = host_end;
  }
  if (host_end == u->host)
    return -1;
  u->host_len = (size_t)(host_end - u->host);
  u->port = u->https ? "443" : "80";
  u->port_len = u->https ? 3 : 2;
  if (*p == ':') {
    u->port = p + 1;
    u->port_len = strcspn(u->port, "/");
    p = u->port + u->port_len;
    if (u->port_len == 0 || u->port_len > 5 || strspn(u->port, "0123456789") != u->port_len)
      return -1;
  }
  if (*p && *p != '/')
    return -1;
  u->path = *p ? p : "/";
  u->authority_len = (int)(p - u->authority);
  return 0;
}

int fe_origin_check_url(const char *url) {
  fe_url_parts u;
  if (strncmp(url, "file:", 5) == 0)
    return url[5] ? 0 : FE_ORIGIN_EURL;
  return fe_origin_split_url(url, &u) == 0 ? 0 : FE_ORIGIN_EURL;
}

/* The host, the port and the request, from a URL that fe_origin_split_url takes. */
/* Extra request headers: whole "Name: value\r\n" lines of visible ASCII and spaces, so that no
 * byte from a caller can end the head or start another request. */
static int fe_origin_headers_ok(const char *h) {
  size_t n = strlen(h);
  if (n > 1024)
    return 0;
  while (*h) {
    const char *eol = strstr(h, "\r\n");
    const char *colon = memchr(h, ':', eol ? (size_t)(eol - h) : 0);
    if (!eol || !colon || colon == h)
      return 0;
    for (const char *q = h; q < eol; q++)
      if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
        return 0;
    for (const char *q = h; q < colon; q++)
      if (*q == ' ')
        return 0;
    h = eol + 2;
  }
  return 1;
}

static int fe_origin_parse_url(fe_origin *o, const char *url, const char *extra) {
  fe_url_parts u;
  extra = extra ? extra : "";
  if (fe_origin_split_url(url, &u) < 0 || !fe_origin_headers_ok(extra))
    return -1;
  o->host = strndup(u.host, u.host_len);
  o->port = strndup(u.port, u.port_len);
  /* Host carries the authority as the URL wrote it, so virtual hosts at the origin match. */
  const char *fmt = "GET %s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: flvedge/" FE_VERSION
                    "\r\nAccept: */*\r\nConnection: close\r\n%s\r\n";
  o->https = u.https;
  int need = snprintf(NULL, 0, fmt, u.path, u.authority_len, u.authority, extra);
  o->request = malloc((size_t)need + 1);
  if (!o->host || !o->port || !o->request)
    return -1;
  o->request_len =
      (size_t)snprintf(o->request, (size_t)need + 1, fmt, u.path, u.authority_len, u.authority, extra);
  return 0;
}

static void fe_origin_start_http(uv_timer_t *t) {
  fe_origin *o = t->data;
  struct sockaddr_storage ss;
  uv_timer_start(&o->timer, fe_origin_on_timeout, fe_ms(o->opts.connect_timeout), 0);
  if (uv_ip4_addr(o->host, atoi(o->port), (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(o->host, atoi(o->port), (struct sockaddr_in6 *)&ss) == 0) {
    fe_origin_connect_addr(o, (struct sockaddr *)&ss);
    return;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  o->gai.data = o;
  o->state = FE_OS_RESOLVING;
  if (uv_getaddrinfo(&o->loop->uv, &o->gai, fe_origin_on_resolved, o->host, o->port, &hints) < 0) {
    fe_origin_finish(o, FE_ORIGIN_EUNREACH);
    return;
  }
  o->handles++;
}

/* ---- file source --------------------------------------------------------------------------- */

static void fe_file_tick(uv_timer_t *t);

static void fe_file_schedule(fe_origin *o) {
  const fe_file_tag *tags = o->file->tags;
  uint64_t due = o->start_ms + o->loop_base + (tags[o->next].ts - tags[0].ts);
  uint64_t now = uv_now(&o->loop->uv);
  uv_timer_start(&o->timer, fe_file_tick, due > now ? due - now : 0, 0);
}

/* Delivers the tags that are due, each a copy with its output timestamp. The copies of one tick
 * share a buffer the loop gives back at once: a thousand idle streams hold none. */
static void fe_file_tick(uv_timer_t *t) {
  fe_origin *o = t->data;
  const fe_file *f = o->file;
  uint64_t now = uv_now(&o->loop->uv);
  uint8_t *scratch = NULL;
  size_t cap = 0;
  for (;;) {
    const fe_file_tag *ft = &f->tags[o->next];
    uint64_t out_ts = o->loop_base + (ft->ts - f->tags[0].ts);
    if (o->start_ms + out_ts > now)
      break;
    if (!(o->pass > 0 && ft->skip_on_loop)) {
      if (cap < ft->len) {
        free(scratch);
        scratch = malloc(ft->len);
        cap = scratch ? ft->len : 0;
        if (!scratch) {
          fe_origin_finish(o, UV_ENOMEM);
          return;
        }
      }
      memcpy(scratch, f->data + ft->off, ft->len);
      fe_flv_set_timestamp(scratch, (uint32_t)out_ts);
      o->cbs.on_body(o->ud, scratch, ft->len);
      if (o->closed || o->ended) {
        free(scratch);
        return;
      }
    }
    if (++o->next == f->ntags) {
      o->next = 0;
      o->pass++;
      o->loop_base += f->loop_len;
    }
  }
  free(scratch);
  o->cbs.on_flush(o->ud);
  if (!o->closed && !o->ended)
    fe_file_schedule(o);
}

static void fe_file_load_work(uv_work_t *w) {
  fe_origin *o = w->data;
  o->load_rc = fe_file_open(o->loop->files, o->file_path, &o->file);
  /* The file is shared: its largest tag is checked against this source's own limit. */
  if (o->load_rc == 0 && o->file->max_size > o->opts.max_tag_size)
    o->load_rc = FE_ORIGIN_EFILE;
}

static void fe_file_loaded(uv_work_t *w, int status) {
  fe_origin *o = w->data;
  o->handles--;
  if (o->closed) {
    fe_origin_maybe_free(o);
    return;
  }
  if (status < 0 || o->load_rc < 0) {
    fe_origin_finish(o, status < 0 ? FE_ORIGIN_EFILE : o->load_rc);
    return;
  }
  o->state = FE_OS_BODY;
  o->cbs.on_response(o->ud, 200, "video/x-flv");
  if (o->closed)
    return;
  uint8_t header[FE_FLV_FILE_HEADER_SIZE];
  fe_flv_write_file_header(header, o->file->data[4]);
  o->cbs.on_body(o->ud, header, sizeof(header));
  if (o->closed)
    return;
  o->start_ms = uv_now(&o->loop->uv);
  fe_file_tick(&o->timer);
}

/* Reading a large file would stall every viewer of the loop: it happens in the thread pool. */
static void fe_origin_start_file(uv_timer_t *t) {
  fe_origin *o = t->data;
  o->load.data = o;
  if (uv_queue_work(&o->loop->uv, &o->load, fe_file_load_work, fe_file_loaded) < 0) {
    fe_origin_finish(o, FE_ORIGIN_EFILE);
    return;
  }
  o->handles++;
}

/* ---- common -------------------------------------------------------------------------------- */

static void fe_origin_start_bad_url(uv_timer_t *t) {
  fe_origin_finish(t->data, FE_ORIGIN_EURL);
}

fe_origin *fe_origin_open(fe_loop *loop, const char *url, const fe_origin_opts *opts,
                          const fe_origin_cbs *cbs, void *ud) {
  fe_origin *o = calloc(1, sizeof(*o));
  if (!o)
    return NULL;
  o->loop = loop;
  o->cbs = *cbs;
  o->ud = ud;
  o->opts = *opts;
  o->opts.extra_headers = NULL; /* the caller's: copied into the request below */
  o->tls = opts->tls;
  fe_oh_reset_head(o);
  uv_timer_init(&loop->uv, &o->timer);
  o->timer.data = o;
  o->handles = 1;
  uv_timer_cb start;
  if (strncmp(url, "file:", 5) == 0) {
    o->kind = FE_OK_FILE;
    o->file_path = strdup(url + 5);
    start = fe_origin_start_file;
  } else if (fe_origin_parse_url(o, url, opts->extra_headers) == 0) {
    o->kind = FE_OK_HTTP;
    llhttp_settings_init(&o->settings);
    o->settings.on_header_field = fe_oh_on_header_field;
    o->settings.on_header_field_complete = fe_oh_on_header_field_complete;
    o->settings.on_header_value = fe_oh_on_header_value;
    o->settings.on_headers_complete = fe_oh_on_headers_complete;
    o->settings.on_body = fe_oh_on_body;
    o->settings.on_message_complete = fe_oh_on_message_complete;
    llhttp_init(&o->parser, HTTP_RESPONSE, &o->settings);
    o->parser.data = o;
    start = fe_origin_start_http;
  } else {
    start = fe_origin_start_bad_url;
  }
  /* Start from the loop so that no callback runs inside this call. */
  uv_timer_start(&o->timer, start, 0, 0);
  return o;
}

void fe_origin_close(fe_origin *o) {
  if (o->closed)
    return;
  o->closed = 1;
  if (o->state == FE_OS_RESOLVING)
    uv_cancel((uv_req_t *)&o->gai);
  if (o->kind == FE_OK_FILE && o->state != FE_OS_BODY)
    uv_cancel((uv_req_t *)&o->load);
  uv_close((uv_handle_t *)&o->timer, fe_origin_on_handle_closed);
  if (o->net.open)
    fe_net_close(&o->net, fe_origin_on_net_closed);
}

/* ---- test seam ----------------------------------------------------------------------------- */

/* The response comes from the caller instead of a socket: the start timer (resolve, connect) is
 * stopped before it ran, and fe_origin_feed() enters where a read would. */
int fe_origin_feed_start(fe_origin *o) {
  if (o->kind != FE_OK_HTTP || !o->request || o->closed || o->state != FE_OS_RESOLVING ||
      o->handles != 1)
    return -1;
  uv_timer_stop(&o->timer);
  o->net.data = o;
  o->state = FE_OS_HEAD;
  return 0;
}

void fe_origin_feed(fe_origin *o, ssize_t nread, const char *data) {
  fe_origin_on_read(&o->net, nread, data);
}

void fe_origin_pause(fe_origin *o, int pause) {
  if (o->closed || o->ended || o->state != FE_OS_BODY || !o->net.open || o->paused == !!pause)
    return;
  o->paused = !!pause;
  if (pause) {
    fe_net_read_stop(&o->net);
    uv_timer_stop(&o->timer); /* a pause is the owner's, not a stall */
  } else {
    fe_net_read_start(&o->net, fe_origin_on_read);
    uv_timer_start(&o->timer, fe_origin_on_timeout, fe_ms(o->opts.read_timeout), 0);
  }
}
