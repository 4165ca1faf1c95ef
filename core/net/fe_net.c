#include "net/fe_net.h"
#include "net/fe_tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- plain TCP ----------------------------------------------------------------------------- */

static void fe_tcp_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fe_net *n = s->data;
  if (nread != 0)
    n->on_read(n, nread, buf->base);
}

static int fe_tcp_read_start(fe_net *n) {
  return uv_read_start((uv_stream_t *)&n->tcp, fe_loop_alloc, fe_tcp_on_read);
}

static void fe_tcp_read_stop(fe_net *n) {
  uv_read_stop((uv_stream_t *)&n->tcp);
}

static int fe_tcp_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs) {
  int w = uv_try_write((uv_stream_t *)&n->tcp, bufs, nbufs);
  return w == UV_EAGAIN ? 0 : w;
}

static void fe_tcp_on_written(uv_write_t *req, int status) {
  fe_net_write *w = (fe_net_write *)req;
  w->cb(w, status);
}

static int fe_tcp_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs) {
  return uv_write(&w->req, (uv_stream_t *)&n->tcp, bufs, nbufs, fe_tcp_on_written);
}

static size_t fe_tcp_queued(const fe_net *n) {
  return uv_stream_get_write_queue_size((const uv_stream_t *)&n->tcp);
}

static void fe_tcp_on_closed(uv_handle_t *h) {
  fe_net *n = h->data;
  if (n->on_close)
    n->on_close(n);
}

static void fe_tcp_close(fe_net *n, int reset) {
  uv_close((uv_handle_t *)&n->tcp, fe_tcp_on_closed);
}

static void fe_tcp_connected(fe_net *n) {
  n->connecting = 0;
  n->on_connect(n, 0);
}

const fe_net_type fe_net_tcp = {
    .name = "tcp",
    .read_start = fe_tcp_read_start,
    .read_stop = fe_tcp_read_stop,
    .try_writev = fe_tcp_try_writev,
    .writev = fe_tcp_writev,
    .queued = fe_tcp_queued,
    .close = fe_tcp_close,
    .connected = fe_tcp_connected,
};

/* ---- the interface: every call goes through the stream's type ------------------------------- */

void fe_net_init(fe_loop *l, fe_net *n, void *data) {
  uv_tcp_init(&l->uv, &n->tcp);
  n->tcp.data = n;
  n->type = &fe_net_tcp;
  n->tls = NULL;
  n->connecting = 0;
  n->data = data;
  n->open = 1;
}

int fe_net_read_start(fe_net *n, fe_net_read_cb cb) {
  n->on_read = cb;
  return n->type->read_start(n);
}

void fe_net_read_stop(fe_net *n) {
  n->type->read_stop(n);
}

int fe_net_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs) {
  return n->type->try_writev(n, bufs, nbufs);
}

int fe_net_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs,
                  void (*cb)(fe_net_write *w, int status)) {
  w->net = n;
  w->cb = cb;
  return n->type->writev(n, w, bufs, nbufs);
}

int fe_net_sendfile_fd(const fe_net *n) {
  uv_os_fd_t fd;
  if (fe_net_is_tls(n))
    return -1;
  return uv_fileno((const uv_handle_t *)&n->tcp, &fd) == 0 ? fd : -1;
}

size_t fe_net_queued(const fe_net *n) {
  return n->type->queued(n);
}

void fe_net_close(fe_net *n, fe_net_close_cb cb) {
  if (!n->open || uv_is_closing((uv_handle_t *)&n->tcp))
    return;
  n->on_close = cb;
  n->type->close(n, 0);
}

void fe_net_reset(fe_net *n, fe_net_close_cb cb) {
  uv_os_fd_t fd;
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  if (!n->open || uv_is_closing((uv_handle_t *)&n->tcp))
    return;
  if (uv_fileno((uv_handle_t *)&n->tcp, &fd) == 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  n->on_close = cb;
  n->type->close(n, 1);
}

void fe_net_send_buffer(fe_net *n, int bytes) {
  uv_send_buffer_size((uv_handle_t *)&n->tcp, &bytes);
}

void fe_net_nodelay(fe_net *n) {
  uv_tcp_nodelay(&n->tcp, 1);
}

int fe_net_peer_ip(fe_net *n, char *out, size_t cap) {
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  int rc = uv_tcp_getpeername(&n->tcp, (struct sockaddr *)&ss, &sl);
  return rc < 0 ? rc : uv_ip_name((struct sockaddr *)&ss, out, cap);
}

int fe_net_local_ip(fe_net *n, char *out, size_t cap) {
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  int rc = uv_tcp_getsockname(&n->tcp, (struct sockaddr *)&ss, &sl);
  return rc < 0 ? rc : uv_ip_name((struct sockaddr *)&ss, out, cap);
}

int fe_net_open(fe_net *n, int fd) {
  return uv_tcp_open(&n->tcp, fd);
}

static void fe_net_on_connect(uv_connect_t *req, int status) {
  fe_net *n = req->data;
  if (status < 0) {
    n->connecting = 0;
    n->on_connect(n, status);
  } else {
    n->type->connected(n);
  }
}

int fe_net_connect(fe_net *n, const struct sockaddr *addr, fe_net_connect_cb cb) {
  n->on_connect = cb;
  n->connect.data = n;
  int rc = uv_tcp_connect(&n->connect, &n->tcp, addr, fe_net_on_connect);
  n->connecting = rc == 0;
  return rc;
}

/* ---- listening ----------------------------------------------------------------------------- */

static int fe_net_parse_addr(const char *spec, struct sockaddr_storage *ss, char *err, size_t errlen) {
  const char *colon = strrchr(spec, ':');
  char host[256];
  if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
    snprintf(err, errlen, "expected host:port");
    return UV_EINVAL;
  }
  size_t hl = (size_t)(colon - spec);
  if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
    memcpy(host, spec + 1, hl - 2);
    host[hl - 2] = 0;
  } else {
    memcpy(host, spec, hl);
    host[hl] = 0;
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535 ||
      (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0 &&
       uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0)) {
    snprintf(err, errlen, "not an IP address and port");
    return UV_EINVAL;
  }
  return 0;
}

static int fe_net_socket(const struct sockaddr_storage *ss, int reuseport) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  if (ss->ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  socklen_t sl = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(fd, (const struct sockaddr *)ss, sl) < 0) {
    int e = -errno;
    close(fd);
    return e;
  }
  return fd;
}

int fe_net_bind(const char *spec, int n, int mode, int *fds, char *bound, size_t bcap, char *err,
                size_t errlen) {
  struct sockaddr_storage ss;
  int rc = fe_net_parse_addr(spec, &ss, err, errlen);
  if (rc < 0)
    return rc;
  int made = 0;
  for (int i = 0; i < n; i++) {
    int fd = mode == FE_NET_SHARED && i > 0 ? dup(fds[0]) : fe_net_socket(&ss, mode == FE_NET_REUSEPORT);
    if (fd < 0) {
      rc = mode == FE_NET_SHARED && i > 0 ? -errno : fd;
      snprintf(err, errlen, "%s", uv_strerror(rc));
      goto fail;
    }
    fds[made++] = fd;
    if (i == 0) {
      /* Port 0: the others bind the port the kernel chose for the first. */
      socklen_t sl = sizeof(ss);
      getsockname(fd, (struct sockaddr *)&ss, &sl);
    }
  }
  char ip[64];
  int port;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
    port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(bound, bcap, "[%s]:%d", ip, port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(bound, bcap, "%s:%d", ip, port);
  }
  return 0;
fail:
  while (made > 0)
    close(fds[--made]);
  return rc;
}

static void fe_net_on_connection(uv_stream_t *s, int status) {
  fe_net_listener *ls = s->data;
  if (status == 0)
    ls->on_accept(ls);
}

int fe_net_listen(fe_loop *l, fe_net_listener *ls, int fd, void (*on_accept)(fe_net_listener *ls)) {
  uv_tcp_init(&l->uv, &ls->tcp);
  ls->tcp.data = ls;
  ls->on_accept = on_accept;
  int rc = uv_tcp_open(&ls->tcp, fd);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&ls->tcp, 4096, fe_net_on_connection);
  return rc;
}

int fe_net_accept(fe_net_listener *ls, fe_net *n) {
  int rc = uv_accept((uv_stream_t *)&ls->tcp, (uv_stream_t *)&n->tcp);
  if (rc == 0 && ls->tls)
    rc = fe_tls_accept(n, ls->tls);
  return rc;
}

void fe_net_listener_tls(fe_net_listener *ls, struct fe_tls_server *tls) {
  if (tls)
    fe_tls_server_ref(tls);
  fe_tls_server_unref(ls->tls);
  ls->tls = tls;
}

void fe_net_listener_close(fe_net_listener *ls, uv_close_cb cb) {
  if (!uv_is_closing((uv_handle_t *)&ls->tcp)) {
    fe_net_listener_tls(ls, NULL);
    uv_close((uv_handle_t *)&ls->tcp, cb);
  }
}
