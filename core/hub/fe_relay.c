#include "hub/fe_relay.h"

#include <stdlib.h>
#include <string.h>

#include "log/fe_log.h"

enum { FE_RM_START, FE_RM_TAGS, FE_RM_FAIL, FE_RM_END, FE_RM_ORIGIN };
enum { FE_RQ_SUB, FE_RQ_UNSUB };

struct fe_relay_msg {
  fe_relay_msg *next;
  int type;
  int value;          /* START: FLV flags; FAIL: status; END: error */
  size_t len;         /* bytes in data */
  size_t ctype_len;   /* FAIL: data is the content type, then the body */
  uint8_t data[];
};

typedef struct fe_relay_req {
  struct fe_relay_req *next;
  int type;
  fe_relay_ch *ch;
  char key[];
} fe_relay_req;

struct fe_relay_box {
  uv_mutex_t mu;
  uv_async_t async;
  int open;
  fe_loop *loop;
  const fe_relay_handlers *h;
  void *ud;
  fe_relay_req *reqs, *reqs_tail;
  fe_relay_ch *ready;
};

typedef struct fe_relay_entry {
  struct fe_relay_entry *next;
  int owner;
  fe_relay_count *count;
  char key[];
} fe_relay_entry;

#define FE_RELAY_BUCKETS 1024

struct fe_relay_node {
  uv_mutex_t mu;
  int nloops;
  fe_relay_entry *table[FE_RELAY_BUCKETS];
  fe_relay_box boxes[];
};

/* ---- channels ------------------------------------------------------------------------------ */

static void fe_relay_free_msgs(fe_relay_msg *m) {
  while (m) {
    fe_relay_msg *next = m->next;
    free(m);
    m = next;
  }
}

static void fe_relay_ch_ref(fe_relay_ch *ch) {
  __atomic_add_fetch(&ch->refs, 1, __ATOMIC_RELAXED);
}

static void fe_relay_ch_unref(fe_relay_ch *ch) {
  if (__atomic_sub_fetch(&ch->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    fe_relay_free_msgs(ch->head);
    free(ch);
  }
}

void fe_relay_send_msg(fe_relay_ch *ch, fe_relay_msg *m) {
  fe_relay_box *b = ch->sub_box;
  m->next = NULL;
  uv_mutex_lock(&b->mu);
  if (ch->sub_closed || !b->open) {
    uv_mutex_unlock(&b->mu);
    free(m);
    return;
  }
  if (ch->tail)
    ch->tail->next = m;
  else
    ch->head = m;
  ch->tail = m;
  ch->queued += m->len;
  if (!ch->in_ready) {
    ch->in_ready = 1;
    fe_relay_ch_ref(ch);
    ch->ready_next = b->ready;
    b->ready = ch;
  }
  /* Under the lock: the mailbox cannot be closing while open is set. */
  uv_async_send(&b->async);
  uv_mutex_unlock(&b->mu);
}

static fe_relay_msg *fe_relay_msg_new(int type, int value, size_t len) {
  fe_relay_msg *m = malloc(sizeof(*m) + len);
  if (m) {
    m->type = type;
    m->value = value;
    m->len = len;
    m->ctype_len = 0;
  }
  return m;
}

fe_relay_msg *fe_relay_tags_new(size_t len, uint8_t **data) {
  fe_relay_msg *m = fe_relay_msg_new(FE_RM_TAGS, 0, len);
  *data = m ? m->data : NULL;
  return m;
}

void fe_relay_send_start(fe_relay_ch *ch, uint8_t flv_flags) {
  fe_relay_msg *m = fe_relay_msg_new(FE_RM_START, flv_flags, 0);
  if (m)
    fe_relay_send_msg(ch, m);
}

void fe_relay_send_fail(fe_relay_ch *ch, int status, const char *ctype, const uint8_t *body, size_t len) {
  size_t cl = ctype ? strlen(ctype) : 0;
  fe_relay_msg *m = fe_relay_msg_new(FE_RM_FAIL, status, cl + len);
  if (!m)
    return;
  m->ctype_len = cl;
  memcpy(m->data, ctype, cl);
  if (len)
    memcpy(m->data + cl, body, len);
  fe_relay_send_msg(ch, m);
}

void fe_relay_send_origin(fe_relay_ch *ch, const char *url, int status) {
  size_t n = strlen(url);
  fe_relay_msg *m = fe_relay_msg_new(FE_RM_ORIGIN, status, n);
  if (!m)
    return;
  memcpy(m->data, url, n);
  m->len = 0; /* not media: a slow loop's queue counts tag bytes only */
  m->ctype_len = n;
  fe_relay_send_msg(ch, m);
}

void fe_relay_send_end(fe_relay_ch *ch, int err) {
  fe_relay_msg *m = fe_relay_msg_new(FE_RM_END, err, 0);
  if (m)
    fe_relay_send_msg(ch, m);
}

size_t fe_relay_queued(fe_relay_ch *ch) {
  uv_mutex_lock(&ch->sub_box->mu);
  size_t q = ch->queued;
  uv_mutex_unlock(&ch->sub_box->mu);
  return q;
}

void fe_relay_ch_owner_drop(fe_relay_ch *ch) {
  if (ch->pub_dropped)
    return;
  ch->pub_dropped = 1;
  fe_relay_ch_unref(ch);
}

static int fe_relay_push_req(fe_relay_box *b, int type, fe_relay_ch *ch, const char *key) {
  size_t kl = key ? strlen(key) + 1 : 0;
  fe_relay_req *r = malloc(sizeof(*r) + kl);
  if (!r)
    return UV_ENOMEM;
  r->next = NULL;
  r->type = type;
  r->ch = ch;
  if (kl)
    memcpy(r->key, key, kl);
  uv_mutex_lock(&b->mu);
  if (!b->open) {
    uv_mutex_unlock(&b->mu);
    free(r);
    return UV_ECANCELED;
  }
  if (b->reqs_tail)
    b->reqs_tail->next = r;
  else
    b->reqs = r;
  b->reqs_tail = r;
  uv_async_send(&b->async);
  uv_mutex_unlock(&b->mu);
  return 0;
}

/* The subscriber's hub closes its source: no more delivery; the owner is told to let go. */
static void fe_relay_ch_close(fe_source *s) {
  fe_relay_ch *ch = (fe_relay_ch *)s;
  fe_relay_box *b = ch->sub_box;
  uv_mutex_lock(&b->mu);
  ch->sub_closed = 1;
  fe_relay_free_msgs(ch->head);
  ch->head = ch->tail = NULL;
  ch->queued = 0;
  uv_mutex_unlock(&b->mu);
  fe_relay_ch_ref(ch); /* the request's */
  if (fe_relay_push_req(ch->own_box, FE_RQ_UNSUB, ch, NULL) < 0)
    fe_relay_ch_unref(ch);
  fe_relay_ch_unref(ch); /* the subscriber's */
}

/* Subscriber: turns messages back into the sink calls an origin pull would make. */
static void fe_relay_deliver(fe_relay_ch *ch, fe_relay_msg *m) {
  fe_loop *l = ch->sub_box->loop;
  for (; m && !ch->sub_closed; m = m->next) {
    switch (m->type) {
    case FE_RM_START:
      ch->ops->start(ch->sink, (uint8_t)m->value);
      break;
    case FE_RM_TAGS: {
      FE_METRIC_ADD(&l->metrics, relay_bytes_in, m->len);
      size_t off = 0;
      while (off + FE_FLV_TAG_OVERHEAD <= m->len && !ch->sub_closed) {
        const uint8_t *p = m->data + off;
        fe_flv_tag tag = {.data = p, .type = p[0]};
        tag.size = (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        tag.timestamp = fe_flv_get_timestamp(p);
        fe_flv_classify(&tag);
        off += FE_FLV_TAG_OVERHEAD + tag.size;
        if (off > m->len || ch->ops->tag(ch->sink, &tag) < 0)
          break;
      }
      if (!ch->sub_closed)
        ch->ops->flush(ch->sink);
      break;
    }
    case FE_RM_FAIL: {
      char ctype[128];
      size_t cl = m->ctype_len < sizeof(ctype) - 1 ? m->ctype_len : sizeof(ctype) - 1;
      memcpy(ctype, m->data, cl);
      ctype[cl] = 0;
      ch->ops->fail(ch->sink, m->value, ctype, m->data + m->ctype_len, m->len - m->ctype_len);
      return;
    }
    case FE_RM_END:
      ch->ops->end(ch->sink, m->value);
      return;
    case FE_RM_ORIGIN:
      if (ch->ops->origin) {
        char url[2048];
        size_t n = m->ctype_len < sizeof(url) - 1 ? m->ctype_len : sizeof(url) - 1;
        memcpy(url, m->data, n);
        url[n] = 0;
        ch->ops->origin(ch->sink, url, m->value);
      }
      break;
    }
  }
}

/* ---- mailboxes ----------------------------------------------------------------------------- */

/* Takes everything waiting in the mailbox; `close` also shuts it. Under its lock. */
static void fe_relay_take(fe_relay_box *b, int close, fe_relay_req **reqs, fe_relay_ch **ready) {
  uv_mutex_lock(&b->mu);
  *reqs = b->reqs;
  *ready = b->ready;
  b->reqs = b->reqs_tail = NULL;
  b->ready = NULL;
  if (close)
    b->open = 0;
  uv_mutex_unlock(&b->mu);
}

/* Runs what waited in the mailbox: requests go to the handlers and messages to their sinks, or,
 * when the mailbox closes, are only let go (every queued item holds a channel reference). */
static void fe_relay_run(fe_relay_box *b, int close) {
  fe_relay_req *reqs;
  fe_relay_ch *ready;
  fe_relay_take(b, close, &reqs, &ready);
  while (reqs) {
    fe_relay_req *r = reqs;
    reqs = r->next;
    if (close || r->type == FE_RQ_UNSUB) {
      if (!close)
        b->h->unsubscribe(b->ud, r->ch);
      fe_relay_ch_unref(r->ch); /* a subscription's owner reference: no hub here takes it */
    } else {
      b->h->subscribe(b->ud, r->key, r->ch);
    }
    free(r);
  }
  while (ready) {
    fe_relay_ch *ch = ready;
    ready = ch->ready_next;
    uv_mutex_lock(&b->mu);
    fe_relay_msg *m = ch->head;
    ch->head = ch->tail = NULL;
    ch->queued = 0;
    ch->in_ready = 0;
    uv_mutex_unlock(&b->mu);
    if (!close)
      fe_relay_deliver(ch, m);
    fe_relay_free_msgs(m);
    fe_relay_ch_unref(ch);
  }
}

static void fe_relay_on_async(uv_async_t *a) {
  fe_relay_run(a->data, 0);
}

fe_relay_node *fe_relay_node_new(int nloops) {
  fe_relay_node *n = calloc(1, sizeof(*n) + (size_t)nloops * sizeof(fe_relay_box));
  if (!n)
    return NULL;
  n->nloops = nloops;
  uv_mutex_init(&n->mu);
  for (int i = 0; i < nloops; i++)
    uv_mutex_init(&n->boxes[i].mu);
  return n;
}

void fe_relay_node_free(fe_relay_node *n) {
  if (!n)
    return;
  for (int i = 0; i < FE_RELAY_BUCKETS; i++)
    while (n->table[i]) {
      fe_relay_entry *e = n->table[i];
      n->table[i] = e->next;
      fe_relay_count_unref(e->count);
      free(e);
    }
  for (int i = 0; i < n->nloops; i++)
    uv_mutex_destroy(&n->boxes[i].mu);
  uv_mutex_destroy(&n->mu);
  free(n);
}

int fe_relay_box_open(fe_relay_node *n, int id, fe_loop *l, const fe_relay_handlers *h, void *ud) {
  fe_relay_box *b = &n->boxes[id];
  b->loop = l;
  b->h = h;
  b->ud = ud;
  int rc = uv_async_init(&l->uv, &b->async, fe_relay_on_async);
  if (rc < 0)
    return rc;
  b->async.data = b;
  uv_mutex_lock(&b->mu);
  b->open = 1;
  uv_mutex_unlock(&b->mu);
  return 0;
}

void fe_relay_box_close(fe_relay_node *n, int id) {
  fe_relay_box *b = &n->boxes[id];
  if (!b->loop)
    return; /* never opened, or closed */
  fe_relay_run(b, 1);
  b->loop = NULL;
  uv_close((uv_handle_t *)&b->async, NULL);
}

/* ---- the registry -------------------------------------------------------------------------- */

static unsigned fe_relay_hash(const char *s) {
  unsigned h = 2166136261u;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 16777619u;
  return h % FE_RELAY_BUCKETS;
}

void fe_relay_count_unref(fe_relay_count *c) {
  if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
    free(c);
}

int fe_relay_claim(fe_relay_node *n, int id, const char *key, const fe_sink_ops *ops, void *sink,
                   fe_source **src, fe_relay_count **count) {
  *src = NULL;
  *count = NULL;
  unsigned b = fe_relay_hash(key);
  uv_mutex_lock(&n->mu);
  fe_relay_entry *e = n->table[b];
  while (e && strcmp(e->key, key) != 0)
    e = e->next;
  if (!e || e->owner == id) {
    int rc = 1;
    if (!e) {
      size_t kl = strlen(key) + 1;
      e = malloc(sizeof(*e) + kl);
      fe_relay_count *c = calloc(1, sizeof(*c));
      if (e && c) {
        e->owner = id;
        e->count = c;
        c->refs = 1;
        memcpy(e->key, key, kl);
        e->next = n->table[b];
        n->table[b] = e;
      } else {
        free(e);
        free(c);
        rc = UV_ENOMEM;
      }
    }
    if (rc == 1) {
      __atomic_add_fetch(&e->count->refs, 1, __ATOMIC_RELAXED);
      *count = e->count;
    }
    uv_mutex_unlock(&n->mu);
    return rc;
  }
  fe_relay_ch *ch = calloc(1, sizeof(*ch));
  if (!ch) {
    uv_mutex_unlock(&n->mu);
    return UV_ENOMEM;
  }
  ch->src.close = fe_relay_ch_close;
  ch->refs = 2; /* the subscriber's, and the owner's that travels with the request */
  ch->sub_box = &n->boxes[id];
  ch->own_box = &n->boxes[e->owner];
  ch->ops = ops;
  ch->sink = sink;
  int rc = fe_relay_push_req(ch->own_box, FE_RQ_SUB, ch, key);
  if (rc == 0) {
    __atomic_add_fetch(&e->count->refs, 1, __ATOMIC_RELAXED);
    *count = e->count;
  }
  uv_mutex_unlock(&n->mu);
  if (rc < 0) {
    free(ch);
    return rc;
  }
  *src = &ch->src;
  return 0;
}

int fe_relay_owner(fe_relay_node *n, const char *key) {
  uv_mutex_lock(&n->mu);
  fe_relay_entry *e = n->table[fe_relay_hash(key)];
  while (e && strcmp(e->key, key) != 0)
    e = e->next;
  int owner = e ? e->owner : -1;
  uv_mutex_unlock(&n->mu);
  return owner;
}

void fe_relay_unclaim(fe_relay_node *n, int id, const char *key) {
  fe_relay_entry **pp = &n->table[fe_relay_hash(key)];
  uv_mutex_lock(&n->mu);
  while (*pp && strcmp((*pp)->key, key) != 0)
    pp = &(*pp)->next;
  if (*pp && (*pp)->owner == id) {
    fe_relay_entry *e = *pp;
    *pp = e->next;
    fe_relay_count_unref(e->count);
    free(e);
  }
  uv_mutex_unlock(&n->mu);
}
