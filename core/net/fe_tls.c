/*
 * TLS streams: the fe_net calls over mbedTLS. The socket stays the libuv TCP handle of fe_net;
 * mbedTLS reads the ciphertext of the current libuv read through fe_tls_recv and writes records
 * through fe_tls_send.
 *
 * Reads: each libuv read (in the loop's shared read buffer) is fed to mbedTLS, which keeps at most
 * one partial record; each record's plaintext goes to the owner from the loop's tls_in buffer. When
 * the owner stops reading in the middle of a read, the rest of its ciphertext is kept (held) and
 * fed again on the loop's next turn after reading restarts.
 *
 * Writes: fe_net_try_writev encrypts the owner's buffers straight from where they are (the hub's
 * shared blocks: no per-viewer copy of media besides mbedTLS's own record buffer), each record
 * handed to the socket as soon as it is made; it stops at the first record the socket does not
 * take whole, keeps the rest of that record (the connection's record buffer) and flushes it with
 * a libuv write. Pieces under FE_TLS_DIRECT_MIN (a chunk-size line, small audio tags) are gathered
 * in the loop's tls_stage buffer first, so one batch becomes few records of up to 16 KiB instead
 * of one per piece. Queued writes (fe_net_writev) are encrypted FE_TLS_OUT_BUDGET at a time into
 * the record buffer and written; the owner's callback runs when the last of its records is written.
 *
 * A server stream sets its mbedTLS context up only when the first bytes arrive: a connection that
 * sends nothing costs no TLS memory; one that stops mid-handshake holds mbedTLS's buffers (about
 * 40 KiB) until the owner's request_timeout closes it.
 */
#include "net/fe_tls.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#define FE_TLS_RECORD 16384           /* the largest record's plaintext */
#define FE_TLS_DIRECT_MIN 4096        /* smaller pieces are gathered with their neighbours */
#define FE_TLS_OUT_BUDGET 16384       /* queued writes: encrypt up to this much ciphertext a turn */
#define FE_TLS_OUT_CAP (FE_TLS_OUT_BUDGET + 2 * (FE_TLS_RECORD + 512))
#define FE_TLS_TICKET_LIFETIME 86400  /* seconds */
#define FE_TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

/* TLS 1.2, forward secret and AEAD only; ECDSA certificates first, then RSA ones. */
static const mbedtls_ecp_group_id fe_tls_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE};

static const int fe_tls_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* ALPN: a server offers h2 first (http/fe_http2.c), unless its listener turned HTTP/2 off; the
 * origin client speaks HTTP/1.1 only. */
static const char *fe_tls_alpn[] = {"http/1.1", NULL};
static const char *fe_tls_alpn_h2[] = {"h2", "http/1.1", NULL};

typedef struct fe_tls_cert {
  char *name; /* SNI name, NULL for the default */
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
} fe_tls_cert;

struct fe_tls_server {
  int refs; /* atomic */
  mbedtls_ssl_config conf;
  mbedtls_ssl_ticket_context ticket;
  fe_tls_cert *certs;
  int ncerts;
};

struct fe_tls_client {
  struct fe_tls_client *next;
  char *ca_file;
  int verify;
  struct timespec mtime;
  off_t size;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca;
};

typedef struct fe_tls_conn {
  mbedtls_ssl_context ssl;
  fe_net *net;
  fe_loop *loop;
  fe_tls_server *srv;        /* a server stream's context (a reference) */
  fe_tls_client *cli;        /* a client stream's context (node-wide) */
  char *server_name;         /* a client's SNI name */
  int ready;                 /* ssl is set up */
  int handshake_done;
  int reading;               /* the owner wants reads */
  int uv_reading;
  int read_failed;           /* the owner heard an error or EOF */
  const char *rx;            /* ciphertext of the read being fed */
  size_t rx_len;
  char *held;                /* ciphertext left when the owner stopped reading */
  size_t held_len;
  fe_later later;            /* feeds held, or completes a write with nothing to flush */
  /* writes */
  char *out;                 /* records the socket has not taken yet */
  size_t out_len;
  int direct;                /* records go to the socket first (try_writev, handshake) */
  int flushing;              /* out[0..flush_len) is being written */
  size_t flush_len;
  uv_write_t flush;
  int werr;                  /* a write failed: everything after fails with it */
  fe_net_write *qhead, *qtail;
  fe_net_write *qenc;        /* the first queued write not wholly encrypted */
  size_t qbytes;             /* plaintext of queued writes not encrypted yet */
} fe_tls_conn;

/* ---- randomness: one generator per thread, so handshakes on different loops never contend ---- */

typedef struct fe_tls_rng_state {
  int ready;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
} fe_tls_rng_state;

static __thread fe_tls_rng_state fe_tls_rng_tl;

static int fe_tls_rng(void *unused, unsigned char *out, size_t len) {
  fe_tls_rng_state *r = &fe_tls_rng_tl;
  if (!r->ready) {
    static const char pers[] = "flvedge";
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                   (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc != 0)
      return rc;
    r->ready = 1;
  }
  return mbedtls_ctr_drbg_random(&r->drbg, out, len);
}

static void fe_tls_strerror(int rc, char *out, size_t cap) {
  mbedtls_strerror(rc, out, cap);
}

/* ---- server contexts ----------------------------------------------------------------------- */

static int fe_tls_load_cert(fe_tls_cert *c, const fe_tls_cert_spec *spec, char *err, size_t errlen) {
  char why[160];
  mbedtls_x509_crt_init(&c->crt);
  mbedtls_pk_init(&c->key);
  c->name = spec->name ? strdup(spec->name) : NULL;
  int rc = mbedtls_x509_crt_parse_file(&c->crt, spec->cert);
  if (rc != 0) {
    fe_tls_strerror(rc, why, sizeof(why));
    snprintf(err, errlen, "cert \"%s\": %s", spec->cert, why);
    return -1;
  }
  rc = mbedtls_pk_parse_keyfile(&c->key, spec->key, NULL);
  if (rc != 0) {
    fe_tls_strerror(rc, why, sizeof(why));
    snprintf(err, errlen, "key \"%s\": %s", spec->key, why);
    return -1;
  }
  if (mbedtls_pk_check_pair(&c->crt.pk, &c->key) != 0) {
    snprintf(err, errlen, "key \"%s\" is not the key of cert \"%s\"", spec->key, spec->cert);
    return -1;
  }
  return 0;
}

/* "*.example.com" matches one label in front of ".example.com". */
static int fe_tls_name_match(const char *pattern, const unsigned char *name, size_t len) {
  if (pattern[0] == '*' && pattern[1] == '.') {
    size_t pl = strlen(pattern + 1);
    if (len <= pl || strncasecmp((const char *)name + len - pl, pattern + 1, pl) != 0)
      return 0;
    return memchr(name, '.', len - pl) == NULL;
  }
  return strlen(pattern) == len && strncasecmp(pattern, (const char *)name, len) == 0;
}

/* SNI: a name of the listener gets its certificate; any other name gets the default one (as
 * nginx's default server does), so a client asking for a name we do not have fails to verify
 * the default certificate rather than the handshake. */
static int fe_tls_sni(void *p, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len) {
  fe_tls_server *s = p;
  for (int i = 1; i < s->ncerts; i++)
    if (fe_tls_name_match(s->certs[i].name, name, len))
      return mbedtls_ssl_set_hs_own_cert(ssl, &s->certs[i].crt, &s->certs[i].key);
  return 0;
}

static void fe_tls_server_free(fe_tls_server *s) {
  for (int i = 0; i < s->ncerts; i++) {
    free(s->certs[i].name);
    mbedtls_x509_crt_free(&s->certs[i].crt);
    mbedtls_pk_free(&s->certs[i].key);
  }
  free(s->certs);
  mbedtls_ssl_ticket_free(&s->ticket);
  mbedtls_ssl_config_free(&s->conf);
  free(s);
}

fe_tls_server *fe_tls_server_new(const fe_tls_cert_spec *certs, int n, char *err, size_t errlen) {
  fe_tls_server *s = calloc(1, sizeof(*s));
  if (!s || !(s->certs = calloc((size_t)n, sizeof(*s->certs)))) {
    snprintf(err, errlen, "out of memory");
    free(s);
    return NULL;
  }
  s->refs = 1;
  mbedtls_ssl_config_init(&s->conf);
  mbedtls_ssl_ticket_init(&s->ticket);
  for (int i = 0; i < n; i++) {
    s->ncerts++;
    if (fe_tls_load_cert(&s->certs[i], &certs[i], err, errlen) < 0)
      goto fail;
  }
  mbedtls_ssl_config *c = &s->conf;
  int rc = mbedtls_ssl_config_defaults(c, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                       MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc == 0)
    rc = mbedtls_ssl_ticket_setup(&s->ticket, fe_tls_rng, NULL, MBEDTLS_CIPHER_AES_256_GCM,
                                  FE_TLS_TICKET_LIFETIME);
  if (rc == 0)
    rc = mbedtls_ssl_conf_own_cert(c, &s->certs[0].crt, &s->certs[0].key);
  if (rc == 0)
    rc = mbedtls_ssl_conf_alpn_protocols(c, fe_tls_alpn_h2);
  if (rc != 0) {
    char why[160];
    fe_tls_strerror(rc, why, sizeof(why));
    snprintf(err, errlen, "TLS setup: %s", why);
    goto fail;
  }
  mbedtls_ssl_conf_rng(c, fe_tls_rng, NULL);
  mbedtls_ssl_conf_min_version(c, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(c, fe_tls_suites);
  /* The server picks the key exchange's curve in this order. mbedTLS's default list starts with
   * secp521r1, several times the cost of X25519 or P-256 per handshake for no gain in practice. */
  mbedtls_ssl_conf_curves(c, fe_tls_curves);
  mbedtls_ssl_conf_session_tickets_cb(c, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                      &s->ticket);
  mbedtls_ssl_conf_sni(c, fe_tls_sni, s);
  mbedtls_ssl_conf_renegotiation(c, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  return s;
fail:
  fe_tls_server_free(s);
  return NULL;
}

void fe_tls_server_ref(fe_tls_server *s) {
  __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void fe_tls_server_unref(fe_tls_server *s) {
  if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
    fe_tls_server_free(s);
}

/* ---- client contexts ----------------------------------------------------------------------- */

struct fe_tls_clients {
  pthread_mutex_t mu;
  fe_tls_client *head; /* made at config loads; read by origins through pointers */
};

static void fe_tls_client_free(fe_tls_client *c) {
  mbedtls_ssl_config_free(&c->conf);
  mbedtls_x509_crt_free(&c->ca);
  free(c->ca_file);
  free(c);
}

fe_tls_clients *fe_tls_clients_new(void) {
  fe_tls_clients *set = calloc(1, sizeof(*set));
  if (set && pthread_mutex_init(&set->mu, NULL) != 0) {
    free(set);
    return NULL;
  }
  return set;
}

void fe_tls_clients_free(fe_tls_clients *set) {
  if (!set)
    return;
  while (set->head) {
    fe_tls_client *c = set->head;
    set->head = c->next;
    fe_tls_client_free(c);
  }
  pthread_mutex_destroy(&set->mu);
  free(set);
}

fe_tls_client *fe_tls_client_get(fe_tls_clients *set, const char *ca_file, int verify, char *err,
                                 size_t errlen) {
  const char *path = verify ? (ca_file ? ca_file : FE_TLS_SYSTEM_CA) : "";
  if (!set) {
    snprintf(err, errlen, "no TLS client contexts here");
    return NULL;
  }
  struct stat st = {0};
  if (verify && stat(path, &st) < 0) {
    snprintf(err, errlen, "ca_file \"%s\": %s", path, strerror(errno));
    return NULL;
  }
  pthread_mutex_lock(&set->mu);
  fe_tls_client *c;
  for (c = set->head; c; c = c->next)
    if (c->verify == verify && strcmp(c->ca_file, path) == 0 && c->size == st.st_size &&
        c->mtime.tv_sec == st.st_mtim.tv_sec && c->mtime.tv_nsec == st.st_mtim.tv_nsec)
      break;
  if (c) {
    pthread_mutex_unlock(&set->mu);
    return c;
  }
  c = calloc(1, sizeof(*c));
  if (!c || !(c->ca_file = strdup(path))) {
    free(c);
    pthread_mutex_unlock(&set->mu);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->verify = verify;
  c->size = st.st_size;
  c->mtime = st.st_mtim;
  mbedtls_ssl_config_init(&c->conf);
  mbedtls_x509_crt_init(&c->ca);
  int rc = verify ? mbedtls_x509_crt_parse_file(&c->ca, path) : 0;
  if (rc != 0) {
    char why[160];
    fe_tls_strerror(rc, why, sizeof(why));
    snprintf(err, errlen, "ca_file \"%s\": %s", path, why);
    goto fail;
  }
  rc = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                   MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc == 0)
    rc = mbedtls_ssl_conf_alpn_protocols(&c->conf, fe_tls_alpn);
  if (rc != 0) {
    snprintf(err, errlen, "TLS client setup failed");
    goto fail;
  }
  mbedtls_ssl_conf_rng(&c->conf, fe_tls_rng, NULL);
  mbedtls_ssl_conf_curves(&c->conf, fe_tls_curves); /* offered to origins in this order */
  mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&c->conf, fe_tls_suites);
  mbedtls_ssl_conf_authmode(&c->conf, verify ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_NONE);
  if (verify)
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
  c->next = set->head;
  set->head = c;
  pthread_mutex_unlock(&set->mu);
  return c;
fail:
  pthread_mutex_unlock(&set->mu);
  fe_tls_client_free(c);
  return NULL;
}

/* ---- the record layer's I/O ---------------------------------------------------------------- */

static int fe_tls_recv(void *ctx, unsigned char *buf, size_t len) {
  fe_tls_conn *t = ((fe_net *)ctx)->tls;
  if (t->rx_len == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  size_t k = len < t->rx_len ? len : t->rx_len;
  memcpy(buf, t->rx, k);
  t->rx += k;
  t->rx_len -= k;
  return (int)k;
}

/* Takes every record whole: to the socket first when nothing is waiting before it (direct), the
 * rest into the record buffer. A socket error is kept in werr and reported by the next write. */
static int fe_tls_send(void *ctx, const unsigned char *buf, size_t len) {
  fe_net *n = ctx;
  fe_tls_conn *t = n->tls;
  size_t done = 0;
  if (t->werr)
    return (int)len;
  if (t->direct && t->out_len == 0 && !t->flushing) {
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    int w = uv_try_write((uv_stream_t *)&n->tcp, &b, 1);
    if (w >= 0)
      done = (size_t)w;
    else if (w != UV_EAGAIN) {
      t->werr = w;
      return (int)len;
    }
  }
  if (done == len)
    return (int)len;
  if (!t->out && !(t->out = malloc(FE_TLS_OUT_CAP))) {
    t->werr = UV_ENOMEM;
    return (int)len;
  }
  if (t->out_len + (len - done) > FE_TLS_OUT_CAP) {
    t->werr = UV_ENOBUFS; /* cannot happen: encryption stops at the budget */
    return (int)len;
  }
  memcpy(t->out + t->out_len, buf + done, len - done);
  t->out_len += len - done;
  return (int)len;
}

static void fe_tls_on_flushed(uv_write_t *req, int status);

static void fe_tls_start_flush(fe_net *n) {
  fe_tls_conn *t = n->tls;
  if (t->flushing || t->out_len == 0 || t->werr)
    return;
  uv_buf_t b = uv_buf_init(t->out, (unsigned)t->out_len);
  t->flush.data = n;
  int rc = uv_write(&t->flush, (uv_stream_t *)&n->tcp, &b, 1, fe_tls_on_flushed);
  if (rc < 0) {
    t->werr = rc;
  } else {
    t->flushing = 1;
    t->flush_len = t->out_len;
  }
}

/* One record of plaintext (the socket or the record buffer takes it whole). */
static int fe_tls_write_record(fe_tls_conn *t, const char *p, size_t len) {
  while (len > 0) {
    int r = mbedtls_ssl_write(&t->ssl, (const unsigned char *)p, len);
    if (r < 0)
      return FE_NET_ETLS;
    p += r;
    len -= (size_t)r;
  }
  return t->werr;
}

/*
 * Encrypts bufs[*pi..] (consumed in place) until all of it is in records or the record buffer
 * holds `budget` bytes. Returns the plaintext taken, or an error.
 */
static ssize_t fe_tls_encrypt(fe_net *n, uv_buf_t *bufs, unsigned nbufs, unsigned *pi, size_t budget) {
  fe_tls_conn *t = n->tls;
  char *stage = t->loop->tls_stage;
  size_t staged = 0;
  ssize_t taken = 0;
  unsigned i = *pi;
  int rc = 0;
  while (i < nbufs && t->out_len < budget && rc == 0) {
    uv_buf_t *b = &bufs[i];
    if (b->len == 0) {
      i++;
      continue;
    }
    size_t k;
    if (staged == 0 && b->len >= FE_TLS_DIRECT_MIN) {
      k = b->len < FE_TLS_RECORD ? b->len : FE_TLS_RECORD;
      rc = fe_tls_write_record(t, b->base, k);
    } else {
      k = FE_TLS_RECORD - staged;
      if (k > b->len)
        k = b->len;
      memcpy(stage + staged, b->base, k);
      staged += k;
      if (staged == FE_TLS_RECORD) {
        rc = fe_tls_write_record(t, stage, staged);
        staged = 0;
      }
    }
    b->base += k;
    b->len -= k;
    taken += (ssize_t)k;
  }
  if (staged > 0 && rc == 0)
    rc = fe_tls_write_record(t, stage, staged);
  while (i < nbufs && bufs[i].len == 0)
    i++;
  *pi = i;
  if (rc < 0 && !t->werr)
    t->werr = rc;
  return rc < 0 ? rc : taken;
}

/* Ends every queued write with status (a failed or closed stream). Callbacks may close n. */
static void fe_tls_fail_writes(fe_net *n, int status) {
  fe_tls_conn *t = n->tls;
  while (t->qhead) {
    fe_net_write *w = t->qhead;
    t->qhead = w->next;
    free(w->bufs);
    w->bufs = NULL;
    w->cb(w, status);
  }
  t->qtail = t->qenc = NULL;
  t->qbytes = 0;
}

static void fe_tls_schedule(fe_net *n);

/* Encrypts queued writes a budget at a time; one flush in flight. */
static void fe_tls_pump_out(fe_net *n) {
  fe_tls_conn *t = n->tls;
  while (t->qenc && !t->flushing && !t->werr && t->handshake_done) {
    fe_net_write *w = t->qenc;
    ssize_t taken = fe_tls_encrypt(n, w->bufs, w->nbufs, &w->i, FE_TLS_OUT_BUDGET);
    if (taken < 0)
      break;
    t->qbytes -= (size_t)taken;
    if (w->i == w->nbufs) {
      w->encrypted = 1;
      t->qenc = w->next;
    }
    if (t->out_len > 0) {
      fe_tls_start_flush(n);
      break;
    }
    if (w->encrypted) {
      fe_tls_schedule(n); /* nothing to write for it: its callback on the next turn */
      break;
    }
  }
  if (t->werr && t->qhead && !t->flushing)
    fe_tls_schedule(n);
}

/* Callbacks of the writes whose records are all written, oldest first. */
static void fe_tls_complete_writes(fe_net *n) {
  fe_tls_conn *t = n->tls;
  while (t->qhead && t->qhead->encrypted && !t->flushing && t->out_len == 0) {
    fe_net_write *w = t->qhead;
    t->qhead = w->next;
    if (!t->qhead)
      t->qtail = NULL;
    free(w->bufs);
    w->bufs = NULL;
    w->cb(w, 0);
    if (uv_is_closing((uv_handle_t *)&n->tcp))
      return;
  }
}

static void fe_tls_on_flushed(uv_write_t *req, int status) {
  fe_net *n = req->data;
  fe_tls_conn *t = n->tls;
  t->flushing = 0;
  /* Records made while it was written (a handshake message, an alert) follow it. */
  t->out_len -= t->flush_len;
  memmove(t->out, t->out + t->flush_len, t->out_len);
  if (status < 0) {
    t->werr = status;
    fe_tls_fail_writes(n, status);
    return;
  }
  fe_tls_start_flush(n);
  fe_tls_complete_writes(n);
  if (uv_is_closing((uv_handle_t *)&n->tcp))
    return;
  fe_tls_pump_out(n);
  if (!t->flushing && !t->qhead && t->out_len == 0) {
    free(t->out); /* a viewer keeping up holds no record buffer */
    t->out = NULL;
  }
}

/* ---- reading and the handshake ------------------------------------------------------------- */

static int fe_tls_closing(fe_net *n) {
  return uv_is_closing((uv_handle_t *)&n->tcp);
}

/* The owner hears the end once: UV_EOF, a libuv error or FE_NET_ETLS*. */
static void fe_tls_read_failed(fe_net *n, int err) {
  fe_tls_conn *t = n->tls;
  t->rx_len = 0;
  if (n->connecting) {
    n->connecting = 0;
    n->on_connect(n, err);
    return;
  }
  if (t->read_failed || !n->on_read)
    return;
  t->read_failed = 1;
  n->on_read(n, err, NULL);
}

static void fe_tls_uv_read(fe_net *n, int on);

/* Drives the handshake with what rx holds. 1 when it is done (and the caller goes on to read). */
static int fe_tls_handshake(fe_net *n) {
  fe_tls_conn *t = n->tls;
  t->direct = 1;
  int rc = mbedtls_ssl_handshake(&t->ssl);
  t->direct = 0;
  fe_tls_start_flush(n);
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
    return 0;
  if (rc != 0 || t->werr) {
    int verify = t->cli && (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ||
                            mbedtls_ssl_get_verify_result(&t->ssl) != 0);
    fe_tls_read_failed(n, t->werr && rc == 0 ? t->werr : verify ? FE_NET_ETLSVERIFY : FE_NET_ETLS);
    return 0;
  }
  t->handshake_done = 1;
  if (n->connecting) {
    n->connecting = 0;
    n->on_connect(n, 0);
    if (fe_tls_closing(n))
      return 0;
  }
  if (!t->reading)
    fe_tls_uv_read(n, 0);
  fe_tls_pump_out(n);
  return 1;
}

#define FE_TLS_PLAIN_BODY "A plain HTTP request was sent to an HTTPS port.\n"
static const char fe_tls_plain_answer[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    "Content-Length: 48\r\n\r\n" FE_TLS_PLAIN_BODY;
_Static_assert(sizeof(FE_TLS_PLAIN_BODY) - 1 == 48, "Content-Length of the plain HTTP answer");

/* A server stream's first bytes: a TLS handshake record sets mbedTLS up; a plain HTTP request
 * is answered 400 (as nginx does); anything else is closed. */
static int fe_tls_setup_server(fe_net *n) {
  fe_tls_conn *t = n->tls;
  unsigned char first = (unsigned char)t->rx[0];
  if (first != 0x16) {
    if (first >= 'A' && first <= 'Z') {
      uv_buf_t b = uv_buf_init((char *)fe_tls_plain_answer, sizeof(fe_tls_plain_answer) - 1);
      uv_try_write((uv_stream_t *)&n->tcp, &b, 1);
    }
    fe_tls_read_failed(n, first >= 'A' && first <= 'Z' ? FE_NET_EPLAIN : FE_NET_ETLS);
    return -1;
  }
  mbedtls_ssl_init(&t->ssl);
  t->ready = 1;
  if (mbedtls_ssl_setup(&t->ssl, &t->srv->conf) != 0) {
    fe_tls_read_failed(n, UV_ENOMEM);
    return -1;
  }
  mbedtls_ssl_set_bio(&t->ssl, n, fe_tls_send, fe_tls_recv, NULL);
  return 0;
}

/* Feeds rx to mbedTLS: the handshake, then each record's plaintext to the owner while it reads. */
static void fe_tls_feed(fe_net *n) {
  fe_tls_conn *t = n->tls;
  if (!t->ready && fe_tls_setup_server(n) < 0)
    return;
  if (!t->handshake_done && !fe_tls_handshake(n))
    return;
  while (t->reading && !fe_tls_closing(n) && !t->read_failed) {
    int r = mbedtls_ssl_read(&t->ssl, (unsigned char *)t->loop->tls_in, sizeof(t->loop->tls_in));
    if (r > 0) {
      n->on_read(n, r, t->loop->tls_in);
      continue;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
      break;
    fe_tls_read_failed(n, r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ? UV_EOF : FE_NET_ETLS);
    return;
  }
  if (fe_tls_closing(n) || t->read_failed || t->rx_len == 0)
    return;
  /* The owner stopped reading in the middle: keep the rest for when it reads again. */
  char *h = malloc(t->rx_len);
  if (!h) {
    fe_tls_read_failed(n, UV_ENOMEM);
    return;
  }
  memcpy(h, t->rx, t->rx_len);
  t->held = h;
  t->held_len = t->rx_len;
  t->rx_len = 0;
}

static void fe_tls_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fe_net *n = s->data;
  fe_tls_conn *t = n->tls;
  if (nread == 0)
    return;
  if (nread < 0) {
    fe_tls_read_failed(n, (int)nread);
    return;
  }
  t->rx = buf->base;
  t->rx_len = (size_t)nread;
  fe_tls_feed(n);
}

static void fe_tls_uv_read(fe_net *n, int on) {
  fe_tls_conn *t = n->tls;
  if (on && !t->uv_reading)
    uv_read_start((uv_stream_t *)&n->tcp, fe_loop_alloc, fe_tls_on_read);
  else if (!on && t->uv_reading)
    uv_read_stop((uv_stream_t *)&n->tcp);
  t->uv_reading = on;
}

/* The loop's next turn: held ciphertext for a reader again, writes with nothing left to flush. */
static void fe_tls_on_later(fe_later *l) {
  fe_tls_conn *t = (fe_tls_conn *)((char *)l - offsetof(fe_tls_conn, later));
  fe_net *n = t->net;
  if (fe_tls_closing(n))
    return;
  if (t->werr && t->qhead) {
    fe_tls_fail_writes(n, t->werr);
    if (fe_tls_closing(n))
      return;
  }
  fe_tls_complete_writes(n);
  if (fe_tls_closing(n))
    return;
  fe_tls_pump_out(n);
  if (t->held && t->reading) {
    char *h = t->held;
    t->held = NULL;
    t->rx = h;
    t->rx_len = t->held_len;
    fe_tls_feed(n);
    free(h);
  }
  if (t->reading && !t->held && !fe_tls_closing(n))
    fe_tls_uv_read(n, 1);
}

static void fe_tls_schedule(fe_net *n) {
  fe_loop_later(n->tls->loop, &n->tls->later, fe_tls_on_later);
}

/* ---- the connection type ------------------------------------------------------------------- */

static int fe_tls_read_start(fe_net *n) {
  fe_tls_conn *t = n->tls;
  t->reading = 1;
  /* Held ciphertext comes before anything the socket has now: reading resumes after it. */
  if (t->held)
    fe_tls_schedule(n);
  else
    fe_tls_uv_read(n, 1);
  return 0;
}

static void fe_tls_read_stop(fe_net *n) {
  fe_tls_conn *t = n->tls;
  t->reading = 0;
  if (t->handshake_done)
    fe_tls_uv_read(n, 0);
}

static int fe_tls_try_writev(fe_net *n, const uv_buf_t *bufs, unsigned nbufs) {
  fe_tls_conn *t = n->tls;
  if (t->werr)
    return t->werr;
  if (!t->handshake_done || t->flushing || t->qhead)
    return 0;
  uv_buf_t local[128];
  uv_buf_t *copy = nbufs <= 128 ? local : malloc(nbufs * sizeof(uv_buf_t));
  if (!copy)
    return 0;
  memcpy(copy, bufs, nbufs * sizeof(uv_buf_t));
  unsigned i = 0;
  t->direct = 1;
  ssize_t taken = fe_tls_encrypt(n, copy, nbufs, &i, 1);
  t->direct = 0;
  if (copy != local)
    free(copy);
  if (taken < 0)
    return (int)taken;
  fe_tls_start_flush(n);
  return t->werr ? t->werr : (int)taken;
}

static int fe_tls_writev(fe_net *n, fe_net_write *w, const uv_buf_t *bufs, unsigned nbufs) {
  fe_tls_conn *t = n->tls;
  if (t->werr)
    return t->werr;
  w->bufs = malloc((nbufs ? nbufs : 1) * sizeof(uv_buf_t));
  if (!w->bufs)
    return UV_ENOMEM;
  memcpy(w->bufs, bufs, nbufs * sizeof(uv_buf_t));
  w->nbufs = nbufs;
  w->i = 0;
  w->encrypted = 0;
  w->next = NULL;
  for (unsigned i = 0; i < nbufs; i++)
    t->qbytes += bufs[i].len;
  if (t->qtail)
    t->qtail->next = w;
  else
    t->qhead = w;
  t->qtail = w;
  if (!t->qenc)
    t->qenc = w;
  fe_tls_pump_out(n);
  return 0;
}

static size_t fe_tls_queued(const fe_net *n) {
  return uv_stream_get_write_queue_size((const uv_stream_t *)&n->tcp) + n->tls->qbytes;
}

static void fe_tls_on_closed(uv_handle_t *h) {
  fe_net *n = h->data;
  fe_tls_conn *t = n->tls;
  fe_tls_fail_writes(n, UV_ECANCELED);
  if (n->connecting) {
    n->connecting = 0;
    n->on_connect(n, UV_ECANCELED);
  }
  if (t->ready)
    mbedtls_ssl_free(&t->ssl);
  free(t->out);
  free(t->held);
  free(t->server_name);
  fe_tls_server_unref(t->srv);
  free(t);
  n->tls = NULL;
  if (n->on_close)
    n->on_close(n);
}

static void fe_tls_close(fe_net *n, int reset) {
  fe_tls_conn *t = n->tls;
  fe_loop_later_cancel(t->loop, &t->later);
  if (!reset && t->handshake_done && !t->flushing && !t->werr) {
    t->direct = 1;
    mbedtls_ssl_close_notify(&t->ssl); /* best effort: what the socket takes now */
    t->direct = 0;
  }
  uv_close((uv_handle_t *)&n->tcp, fe_tls_on_closed);
}

static void fe_tls_connected(fe_net *n) {
  fe_tls_conn *t = n->tls;
  mbedtls_ssl_init(&t->ssl);
  t->ready = 1;
  if (mbedtls_ssl_setup(&t->ssl, &t->cli->conf) != 0 ||
      mbedtls_ssl_set_hostname(&t->ssl, t->server_name) != 0) {
    fe_tls_read_failed(n, UV_ENOMEM);
    return;
  }
  mbedtls_ssl_set_bio(&t->ssl, n, fe_tls_send, fe_tls_recv, NULL);
  fe_tls_uv_read(n, 1);
  fe_tls_handshake(n); /* the ClientHello */
}

static const fe_net_type fe_net_tls = {
    .name = "tls",
    .read_start = fe_tls_read_start,
    .read_stop = fe_tls_read_stop,
    .try_writev = fe_tls_try_writev,
    .writev = fe_tls_writev,
    .queued = fe_tls_queued,
    .close = fe_tls_close,
    .connected = fe_tls_connected,
};

static fe_tls_conn *fe_tls_conn_new(fe_net *n) {
  fe_tls_conn *t = calloc(1, sizeof(*t));
  if (!t)
    return NULL;
  t->loop = fe_loop_of(n->tcp.loop);
  t->net = n;
  n->tls = t;
  n->type = &fe_net_tls;
  return t;
}

int fe_tls_accept(fe_net *n, fe_tls_server *s) {
  fe_tls_conn *t = fe_tls_conn_new(n);
  if (!t)
    return UV_ENOMEM;
  fe_tls_server_ref(s);
  t->srv = s;
  return 0;
}

int fe_net_use_tls(fe_net *n, fe_tls_client *ctx, const char *server_name) {
  fe_tls_conn *t = fe_tls_conn_new(n);
  if (!t)
    return UV_ENOMEM;
  t->cli = ctx;
  t->server_name = strdup(server_name);
  return t->server_name ? 0 : UV_ENOMEM;
}

int fe_net_is_tls(const fe_net *n) {
  return n->type == &fe_net_tls;
}

const char *fe_net_tls_version(const fe_net *n) {
  return n->tls && n->tls->handshake_done ? mbedtls_ssl_get_version(&n->tls->ssl) : "";
}

const char *fe_net_tls_cipher(const fe_net *n) {
  const char *c = n->tls && n->tls->handshake_done ? mbedtls_ssl_get_ciphersuite(&n->tls->ssl) : NULL;
  return c ? c : "";
}

void fe_tls_server_http2(fe_tls_server *s, int on) {
  mbedtls_ssl_conf_alpn_protocols(&s->conf, on ? fe_tls_alpn_h2 : fe_tls_alpn);
}

const char *fe_net_alpn(const fe_net *n) {
  const char *p = n->tls && n->tls->handshake_done ? mbedtls_ssl_get_alpn_protocol(&n->tls->ssl) : NULL;
  return p ? p : "";
}
