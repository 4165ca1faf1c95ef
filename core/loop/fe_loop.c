#include "loop/fe_loop.h"

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

int fe_loop_init(fe_loop *l, int id) {
  memset(l, 0, sizeof(*l));
  int rc = uv_loop_init(&l->uv);
  if (rc < 0)
    return rc;
  l->id = id;
  uv_prepare_init(&l->uv, &l->defer_prepare);
  l->defer_prepare.data = l;
  return 0;
}

void fe_loop_close(fe_loop *l) {
  fe_loop_run_deferred(l);
  uv_close((uv_handle_t *)&l->defer_prepare, NULL);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  fe_loop_run_deferred(l);
  uv_loop_close(&l->uv);
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

uint64_t fe_loop_request_id(fe_loop *l) {
  return (++l->next_request << 8) | (uint64_t)(l->id & 0xff);
}

void fe_loop_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  fe_loop *l = fe_loop_of(h->loop);
  buf->base = l->rbuf;
  buf->len = sizeof(l->rbuf);
}
