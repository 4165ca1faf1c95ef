#include "loop/fe_loop.h"

#include <stdlib.h>
#include <string.h>

static void fe_loop_run_deferred(fe_loop *l) {
  /* A teardown may defer more: take the list until it stays empty. */
  while (l->deferred) {
    fe_deferred *d = l->deferred;
    l->deferred = NULL;
    while (d) {
      fe_deferred *next = d->next;
      d->queued = 0;
      d->next = NULL;
      d->fn(d);
      d = next;
    }
  }
}

static void fe_loop_on_prepare(uv_prepare_t *p) {
  fe_loop *l = p->data;
  fe_loop_run_deferred(l);
  uv_prepare_stop(p);
}

/* One turn: each slice queued before it runs once; what a slice queues again waits for the next
 * turn, so the loop polls for I/O between any two slices of the same work. */
static void fe_loop_on_idle(uv_idle_t *i) {
  fe_loop *l = i->data;
  for (uint32_t n = l->nlater; n > 0 && l->later_head; n--) {
    fe_later *t = l->later_head;
    fe_loop_later_cancel(l, t);
    t->fn(t);
  }
  if (!l->later_head)
    uv_idle_stop(i);
}

void fe_loop_later(fe_loop *l, fe_later *t, void (*fn)(fe_later *t)) {
  if (t->queued)
    return;
  t->queued = 1;
  t->fn = fn;
  t->next = NULL;
  t->prev = l->later_tail;
  if (l->later_tail)
    l->later_tail->next = t;
  else
    l->later_head = t;
  l->later_tail = t;
  l->nlater++;
  if (!uv_is_closing((uv_handle_t *)&l->later_idle))
    uv_idle_start(&l->later_idle, fe_loop_on_idle);
}

void fe_loop_later_cancel(fe_loop *l, fe_later *t) {
  if (!t->queued)
    return;
  t->queued = 0;
  l->nlater--;
  if (t->prev)
    t->prev->next = t->next;
  else
    l->later_head = t->next;
  if (t->next)
    t->next->prev = t->prev;
  else
    l->later_tail = t->prev;
  t->next = t->prev = NULL;
}

/* Loop lag, as Node's monitorEventLoopDelay: a timer that should fire every FE_LOOP_LAG_PROBE_MS
 * fires late by as long as the loop was busy with other work. */
static void fe_loop_on_lag_probe(uv_timer_t *t) {
  fe_loop *l = t->data;
  uint64_t now = uv_hrtime();
  uint64_t due = l->lag_last_ns + (uint64_t)FE_LOOP_LAG_PROBE_MS * 1000000;
  fe_metrics_lag(&l->metrics, now > due ? (now - due) / 1000 : 0);
  l->lag_last_ns = now;
}

/* Takes the queued tasks; `close` also shuts the mailbox. */
static fe_task *fe_loop_take_tasks(fe_loop *l, int close) {
  uv_mutex_lock(&l->tasks_mu);
  fe_task *t = l->tasks;
  l->tasks = l->tasks_tail = NULL;
  if (close)
    l->tasks_open = 0;
  uv_mutex_unlock(&l->tasks_mu);
  return t;
}

static void fe_loop_run_tasks(fe_task *t, int cancelled) {
  while (t) {
    fe_task *next = t->next;
    t->next = NULL;
    t->cancelled = cancelled;
    t->fn(t); /* may free t */
    t = next;
  }
}

static void fe_loop_on_tasks(uv_async_t *a) {
  fe_loop *l = a->data;
  fe_loop_run_tasks(fe_loop_take_tasks(l, 0), 0);
}

int fe_loop_post(fe_loop *l, fe_task *t, void (*fn)(fe_task *t)) {
  t->fn = fn;
  t->next = NULL;
  t->cancelled = 0;
  uv_mutex_lock(&l->tasks_mu);
  if (!l->tasks_open) {
    uv_mutex_unlock(&l->tasks_mu);
    return UV_ECANCELED;
  }
  if (l->tasks_tail)
    l->tasks_tail->next = t;
  else
    l->tasks = t;
  l->tasks_tail = t;
  /* Under the lock: the handle is not closing while tasks_open is set. */
  uv_async_send(&l->tasks_async);
  uv_mutex_unlock(&l->tasks_mu);
  return 0;
}

int fe_loop_init(fe_loop *l, int id) {
  memset(l, 0, sizeof(*l));
  int rc = uv_loop_init(&l->uv);
  if (rc < 0)
    return rc;
  l->id = id;
  uv_prepare_init(&l->uv, &l->defer_prepare);
  l->defer_prepare.data = l;
  uv_idle_init(&l->uv, &l->later_idle);
  l->later_idle.data = l;
  uv_timer_init(&l->uv, &l->lag_probe);
  l->lag_probe.data = l;
  l->lag_last_ns = uv_hrtime();
  uv_timer_start(&l->lag_probe, fe_loop_on_lag_probe, FE_LOOP_LAG_PROBE_MS, FE_LOOP_LAG_PROBE_MS);
  uv_unref((uv_handle_t *)&l->lag_probe); /* never what keeps a loop running */
  uv_mutex_init(&l->tasks_mu);
  uv_async_init(&l->uv, &l->tasks_async, fe_loop_on_tasks);
  l->tasks_async.data = l;
  uv_unref((uv_handle_t *)&l->tasks_async);
  l->tasks_open = 1;
  return 0;
}

void fe_loop_close(fe_loop *l) {
  fe_loop_run_tasks(fe_loop_take_tasks(l, 1), 1);
  uv_close((uv_handle_t *)&l->tasks_async, NULL);
  fe_loop_run_deferred(l);
  uv_close((uv_handle_t *)&l->defer_prepare, NULL);
  uv_close((uv_handle_t *)&l->later_idle, NULL);
  uv_close((uv_handle_t *)&l->lag_probe, NULL);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  fe_loop_run_deferred(l);
  uv_loop_close(&l->uv);
  uv_mutex_destroy(&l->tasks_mu);
  l->closed = 1; /* a buffer given back later is freed at once */
  while (l->nbig_free > 0)
    free(l->big_free[--l->nbig_free]);
}

void fe_loop_defer(fe_loop *l, fe_deferred *d, void (*fn)(fe_deferred *d)) {
  if (d->queued)
    return;
  d->queued = 1;
  d->fn = fn;
  d->next = l->deferred;
  l->deferred = d;
  /* An active prepare handle also keeps the loop running until the teardown is done. */
  if (!uv_is_closing((uv_handle_t *)&l->defer_prepare))
    uv_prepare_start(&l->defer_prepare, fe_loop_on_prepare);
}

void *fe_loop_big_get(fe_loop *l) {
  return l->nbig_free > 0 ? l->big_free[--l->nbig_free] : malloc(FE_LOOP_BIG_BUF);
}

void fe_loop_big_put(fe_loop *l, void *p) {
  if (p && !l->closed && l->nbig_free < FE_LOOP_BIG_KEEP)
    l->big_free[l->nbig_free++] = p;
  else
    free(p);
}

uint64_t fe_loop_request_id(fe_loop *l) {
  return (++l->next_request << 8) | (uint64_t)(l->id & 0xff);
}

void fe_loop_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  fe_loop *l = fe_loop_of(h->loop);
  buf->base = l->rbuf;
  buf->len = sizeof(l->rbuf);
}
