#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/fe_http.h"
#include "http/fe_http_admin.h"
#include "http/fe_http_conn.h"
#include "http/fe_http_router.h"
#include "log/fe_log.h"
#include "origin/fe_file.h"
#include "origin/fe_health.h"
#include "vod/fe_vod.h"

#define FE_SWEEP_MS 250

/* One loop: its worker, its thread, and what the control loop tells it. */
typedef struct fe_loop_slot {
  fe_worker w;                /* first */
  uv_thread_t thread;
  int started;
  fe_net_listener *listeners;
  int nlisteners;
  fe_net_listener admin;      /* loop 0 only, when the config has an admin listener */
  int has_admin;
  uv_timer_t sweep, grace;
  uv_async_t ctl;
  /* from the control thread, under mu */
  uv_mutex_t mu;
  fe_gen *pending;            /* a reloaded generation not taken yet */
  int stop;
  double grace_s;
} fe_loop_slot;

struct fe_server {
  uv_loop_t *main;
  uv_async_t done_async;      /* a loop finished: on the control loop */
  int nworkers;
  fe_loop_slot *slots;
  const fe_metrics **metrics;
  fe_relay_node *node;
  fe_files *files;            /* FLV files of file: origins, loaded once for every loop */
  fe_health *health;          /* origin health marks, shared by every loop */
  fe_vod_node *vod;           /* the VOD caches, one per cache_dir, kept across reloads */
  fe_cfg_shared *cfg;         /* the control loop's reference to the newest config */
  fe_metrics_names names;     /* resource names -> metrics slots, append-only */
  fe_loop **loops;            /* every loop, for tasks posted to all of them */
  uint64_t reloads;           /* atomic: configs taken by reload */
  uint64_t reload_failures;   /* atomic */
  int (*reload_fn)(void *ud, char *err, size_t cap); /* the admin API's POST /reload */
  void *reload_ud;
  uv_async_t ctl_async;       /* on the control loop: reload requests from the loops */
  uv_mutex_t ctl_mu;
  struct fe_reload_req *reload_reqs; /* under ctl_mu */
  uint64_t started;           /* uv_hrtime() at start */
  int finished;               /* atomic: loops whose thread is done */
  void (*done)(void *ud);
  void *done_ud;
  int stopping;
};

/* The config as every loop will share it: its resources get their metrics slots, and its access
 * log is the running one's when the path is the same (one writer per file, kept across reloads). */
static fe_cfg_shared *fe_cfg_shared_new(fe_server *srv, fe_config *cfg) {
  fe_cfg_shared *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->cfg = *cfg; /* moved: the shared config owns the strings now */
  memset(cfg, 0, sizeof(*cfg));
  s->refs = 1;
  for (int i = 0; i < s->cfg.nresources; i++)
    s->cfg.resources[i].metrics_slot = fe_metrics_names_slot(&srv->names, s->cfg.resources[i].name);
  const char *path = s->cfg.access_log;
  fe_alog *running = srv->cfg ? srv->cfg->access_log : NULL;
  if (path && running && strcmp(fe_alog_path(running), path) == 0) {
    fe_alog_ref(running);
    s->access_log = running;
  } else if (path && !(s->access_log = fe_alog_open(path, srv->nworkers, (size_t)s->cfg.access_log_buffer))) {
    fe_error("access_log \"%s\": cannot start its writer", path);
  }
  return s;
}

/* ---- a loop's life ------------------------------------------------------------------------- */

/* This loop's access log lines go to the writer at least every FE_SWEEP_MS. */
static void fe_slot_flush_log(fe_loop_slot *sl) {
  fe_alog *a = sl->w.gen->shared->access_log;
  uint32_t dropped = a ? fe_alog_flush(a, sl->w.id) : 0;
  if (dropped)
    FE_METRIC_ADD(&sl->w.loop.metrics, access_log_dropped, dropped);
}

static void fe_slot_on_sweep(uv_timer_t *t) {
  fe_loop_slot *sl = t->data;
  fe_slot_flush_log(sl);
  fe_conn_sweep(&sl->w, uv_now(&sl->w.loop.uv));
}

/* The public listeners' connections: the router of resources, over HTTP/1.1 or HTTP/2 (by ALPN;
 * on cleartext listeners with h2c = true, by the client's preface too). */
static const fe_conn_kind fe_public_kind = {.route = fe_router_route, .http2 = 1};
static const fe_conn_kind fe_public_h2c_kind = {.route = fe_router_route, .http2 = 1, .h2c = 1};

static void fe_slot_on_accept(fe_net_listener *ls) {
  fe_loop_slot *sl = ls->data;
  const fe_config *cfg = sl->w.gen->cfg;
  int i = (int)(ls - sl->listeners);
  int h2c = i >= 0 && i < cfg->nlisten && cfg->listen_h2c && cfg->listen_h2c[i];
  fe_conn_accept(&sl->w, ls, h2c ? &fe_public_h2c_kind : &fe_public_kind);
}

static void fe_slot_on_admin_accept(fe_net_listener *ls) {
  fe_loop_slot *sl = ls->data;
  fe_conn_accept(&sl->w, ls, &fe_admin_kind);
}

/* Every connection is gone: the loop lets go of its handles and its thread ends. */
static void fe_slot_drained(fe_worker *w) {
  fe_loop_slot *sl = (fe_loop_slot *)w;
  fe_slot_flush_log(sl);
  uv_timer_stop(&sl->grace);
  uv_close((uv_handle_t *)&sl->sweep, NULL);
  uv_close((uv_handle_t *)&sl->grace, NULL);
  uv_close((uv_handle_t *)&sl->ctl, NULL);
  fe_relay_box_close(w->srv->node, w->id);
  fe_vod_box_close(w->srv->vod, w->id);
}

static void fe_slot_on_grace(uv_timer_t *t) {
  fe_loop_slot *sl = t->data;
  fe_warn("stop: closing the connections still open after the grace period");
  while (sl->w.conns)
    fe_conn_close(sl->w.conns);
}

static void fe_slot_stop(fe_loop_slot *sl, double grace) {
  fe_worker *w = &sl->w;
  if (w->stopping)
    return;
  w->stopping = 1;
  for (int i = 0; i < sl->nlisteners; i++)
    fe_net_listener_close(&sl->listeners[i], NULL);
  if (sl->has_admin)
    fe_net_listener_close(&sl->admin, NULL);
  uv_timer_stop(&sl->sweep);
  fe_hubs_end_all(w->hubs);
  /* Connections that are not streaming have nothing to finish. */
  fe_conn_stop_idle(w);
  uv_timer_start(&sl->grace, fe_slot_on_grace, (uint64_t)(grace * 1000.0), 0);
  if (w->conn_handles == 0)
    fe_slot_drained(w);
}

/* The control thread has something for this loop: a new generation, or stop. */
static void fe_slot_on_ctl(uv_async_t *a) {
  fe_loop_slot *sl = a->data;
  uv_mutex_lock(&sl->mu);
  fe_gen *g = sl->pending;
  sl->pending = NULL;
  int stop = sl->stop;
  double grace = sl->grace_s;
  uv_mutex_unlock(&sl->mu);
  if (g) {
    fe_slot_flush_log(sl); /* the lines of the old generation go to its file */
    fe_gen_unref(sl->w.gen);
    sl->w.gen = g;
    if (g->lua)
      fe_lua_count_errors_in(g->lua, &sl->w.loop.metrics.lua_errors);
    /* New handshakes use the reloaded certificates; open connections keep theirs. Listeners
     * are bound once: with a different number of them the TLS contexts stay as they were. */
    if (g->cfg->nlisten == sl->nlisteners)
      for (int i = 0; i < sl->nlisteners; i++)
        fe_net_listener_tls(&sl->listeners[i], g->cfg->listen_tls[i]);
  }
  if (stop)
    fe_slot_stop(sl, grace);
}

static void fe_slot_run(void *arg) {
  fe_loop_slot *sl = arg;
  fe_server *s = sl->w.srv;
  uv_run(&sl->w.loop.uv, UV_RUN_DEFAULT);
  fe_loop_close(&sl->w.loop);
  __atomic_add_fetch(&s->finished, 1, __ATOMIC_ACQ_REL);
  uv_async_send(&s->done_async);
}

/* Everything a loop needs, made on the control thread before the loop's thread starts. */
static int fe_slot_init(fe_server *s, int id, fe_lua *lua, int **fds, int nlisten, int *admin_fd) {
  fe_loop_slot *sl = &s->slots[id];
  fe_worker *w = &sl->w;
  int rc = fe_loop_init(&w->loop, id);
  if (rc < 0)
    return rc;
  w->srv = s;
  w->id = id;
  w->started = s->started;
  w->drained = fe_slot_drained;
  w->all_metrics = s->metrics;
  w->all_loops = s->loops;
  w->nloops = s->nworkers;
  s->metrics[id] = &w->loop.metrics;
  s->loops[id] = &w->loop;
  fe_cfg_shared_ref(s->cfg);
  w->gen = fe_gen_new(s->cfg, lua);
  if (lua)
    fe_lua_count_errors_in(lua, &w->loop.metrics.lua_errors);
  w->hubs = fe_hubs_new(&w->loop, s->node);
  w->loop.hubs = w->hubs;
  w->loop.files = s->files;
  w->loop.health = s->health;
  sl->listeners = calloc((size_t)nlisten, sizeof(*sl->listeners));
  if (!w->gen || !w->hubs || !sl->listeners)
    return UV_ENOMEM;
  if ((rc = fe_relay_box_open(s->node, id, &w->loop, &fe_hubs_relay_handlers, w->hubs)) < 0)
    return rc;
  if ((rc = fe_vod_box_open(s->vod, &w->loop)) < 0)
    return rc;
  for (int i = 0; i < nlisten; i++) {
    sl->listeners[i].data = sl;
    sl->nlisteners++;
    if ((rc = fe_net_listen(&w->loop, &sl->listeners[i], fds[i][id], fe_slot_on_accept)) < 0)
      return rc;
    fds[i][id] = -1;
    fe_net_listener_tls(&sl->listeners[i], w->gen->cfg->listen_tls[i]);
  }
  /* Admin traffic is tiny: one loop serves it. */
  if (id == 0 && *admin_fd >= 0) {
    sl->admin.data = sl;
    sl->has_admin = 1;
    if ((rc = fe_net_listen(&w->loop, &sl->admin, *admin_fd, fe_slot_on_admin_accept)) < 0)
      return rc;
    *admin_fd = -1;
  }
  uv_timer_init(&w->loop.uv, &sl->sweep);
  uv_timer_init(&w->loop.uv, &sl->grace);
  uv_async_init(&w->loop.uv, &sl->ctl, fe_slot_on_ctl);
  sl->sweep.data = sl->grace.data = sl->ctl.data = sl;
  uv_timer_start(&sl->sweep, fe_slot_on_sweep, FE_SWEEP_MS, FE_SWEEP_MS);
  return 0;
}

/* ---- the control side ---------------------------------------------------------------------- */

static void fe_server_on_ctl(uv_async_t *a);

static void fe_server_on_done(uv_async_t *a) {
  fe_server *s = a->data;
  if (__atomic_load_n(&s->finished, __ATOMIC_ACQUIRE) < s->nworkers || !s->done)
    return;
  void (*done)(void *) = s->done;
  s->done = NULL;
  done(s->done_ud);
}

int fe_server_workers(const fe_server *s) {
  return s->nworkers;
}

int fe_server_start(uv_loop_t *main, fe_config *config, fe_lua **luas, int nworkers,
                    fe_server **out) {
  fe_server *s = calloc(1, sizeof(*s));
  *out = s;
  if (!s)
    return UV_ENOMEM;
  s->main = main;
  s->nworkers = nworkers;
  s->started = uv_hrtime();
  s->slots = calloc((size_t)nworkers, sizeof(*s->slots));
  s->metrics = calloc((size_t)nworkers, sizeof(*s->metrics));
  s->loops = calloc((size_t)nworkers, sizeof(*s->loops));
  s->node = fe_relay_node_new(nworkers);
  s->files = fe_files_new();
  s->health = fe_health_new();
  s->vod = fe_vod_node_new(nworkers);
  s->cfg = fe_cfg_shared_new(s, config);
  uv_async_init(main, &s->done_async, fe_server_on_done);
  s->done_async.data = s;
  uv_async_init(main, &s->ctl_async, fe_server_on_ctl);
  s->ctl_async.data = s;
  uv_mutex_init(&s->ctl_mu);
  if (!s->slots || !s->metrics || !s->loops || !s->node || !s->files || !s->health || !s->vod || !s->cfg) {
    for (int i = 0; i < nworkers; i++)
      fe_lua_unref(luas[i]);
    free(s->slots);
    s->slots = NULL;
    return UV_ENOMEM;
  }
  for (int i = 0; i < nworkers; i++)
    uv_mutex_init(&s->slots[i].mu);
  const fe_config *cfg = &s->cfg->cfg;
  char verr[512];
  /* Cache directories are scanned here, blocking, before any loop serves. */
  if (fe_vod_node_configure(s->vod, cfg, verr, sizeof(verr)) < 0) {
    fe_error("vod: %s", verr);
    for (int i = 0; i < nworkers; i++)
      fe_lua_unref(luas[i]);
    for (int i = 0; i < nworkers; i++)
      uv_mutex_destroy(&s->slots[i].mu);
    free(s->slots);
    s->slots = NULL;
    return UV_EINVAL;
  }
  int nlisten = cfg->nlisten;
  int **fds = calloc((size_t)nlisten, sizeof(int *));
  char bound[nlisten > 0 ? nlisten : 1][80];
  int rc = fds ? 0 : UV_ENOMEM;
  for (int i = 0; rc == 0 && i < nlisten; i++) {
    char err[128];
    fds[i] = malloc((size_t)nworkers * sizeof(int));
    if (!fds[i]) {
      rc = UV_ENOMEM;
      break;
    }
    for (int k = 0; k < nworkers; k++)
      fds[i][k] = -1;
    int mode = cfg->listen_mode == FE_LISTEN_SHARED ? FE_NET_SHARED : FE_NET_REUSEPORT;
    rc = fe_net_bind(cfg->listen[i], nworkers, mode, fds[i], bound[i], sizeof(bound[i]), err, sizeof(err));
    if (rc < 0)
      fe_error("listen \"%s\": %s", cfg->listen[i], err);
  }
  int admin_fd = -1;
  char admin_bound[80] = "";
  if (rc == 0 && cfg->admin_listen) {
    char err[128];
    rc = fe_net_bind(cfg->admin_listen, 1, FE_NET_SHARED, &admin_fd, admin_bound, sizeof(admin_bound),
                     err, sizeof(err));
    if (rc < 0)
      fe_error("admin.listen \"%s\": %s", cfg->admin_listen, err);
  }
  int made = 0;
  while (rc == 0 && made < nworkers) {
    rc = fe_slot_init(s, made, luas[made], fds, nlisten, &admin_fd);
    luas[made] = NULL;
    if (rc < 0) {
      /* Out of memory or descriptors: what this loop had made is left to the exit. */
      fe_error("starting loop %d: %s", made, uv_strerror(rc));
      break;
    }
    made++;
  }
  for (int i = made + (rc < 0); i < nworkers; i++)
    fe_lua_unref(luas[i]);
  for (int i = 0; fds && i < nlisten; i++) {
    for (int k = 0; fds[i] && k < nworkers; k++)
      if (fds[i][k] >= 0)
        close(fds[i][k]);
    free(fds[i]);
  }
  free(fds);
  if (admin_fd >= 0)
    close(admin_fd);
  if (rc < 0) {
    /* Loops that were made run just long enough to close what they opened. */
    for (int i = 0; i < made; i++) {
      s->slots[i].stop = 1;
      s->slots[i].grace_s = 0;
      uv_async_send(&s->slots[i].ctl);
      uv_thread_create(&s->slots[i].thread, fe_slot_run, &s->slots[i]);
      s->slots[i].started = 1;
    }
    return rc;
  }
  for (int i = 0; i < nworkers; i++) {
    if ((rc = uv_thread_create(&s->slots[i].thread, fe_slot_run, &s->slots[i])) < 0) {
      fe_error("starting loop %d: %s", i, uv_strerror(rc));
      return rc;
    }
    s->slots[i].started = 1;
  }
  for (int i = 0; i < nlisten; i++)
    fe_info("listening on %s://%s", cfg->listen_tls[i] ? "https" : "http", bound[i]);
  if (cfg->admin_listen)
    fe_info("admin API on http://%s", admin_bound);
  fe_info("%d loop(s), connections spread by %s", nworkers,
          cfg->listen_mode == FE_LISTEN_SHARED ? "one shared socket" : "SO_REUSEPORT");
  return 0;
}

int fe_server_reload(fe_server *s, fe_config *cfg, fe_lua **luas) {
  const fe_config *old = &s->cfg->cfg;
  int same = cfg->nlisten == old->nlisten && cfg->listen_mode == old->listen_mode;
  for (int i = 0; same && i < cfg->nlisten; i++)
    same = strcmp(cfg->listen[i], old->listen[i]) == 0;
  if (!same)
    fe_warn("reload: listen addresses changed; they take effect at the next restart");
  const char *was = old->admin_listen ? old->admin_listen : "", *now = cfg->admin_listen ? cfg->admin_listen : "";
  if (strcmp(was, now) != 0)
    fe_warn("reload: admin.listen changed (\"%s\" -> \"%s\"); that takes effect at the next restart%s",
            was, now, *was && !*now ? "; until then the admin API refuses every request" : "");
  if (fe_config_workers(cfg) != s->nworkers)
    fe_warn("reload: workers changed; that takes effect at the next restart");
  char verr[512];
  /* A new cache directory is scanned here, on the control thread, before requests can use it. */
  if (fe_vod_node_configure(s->vod, cfg, verr, sizeof(verr)) < 0) {
    fe_error("reload: vod: %s", verr);
    fe_config_free(cfg);
    for (int i = 0; i < s->nworkers; i++) {
      fe_lua_unref(luas[i]);
      luas[i] = NULL;
    }
    return UV_EINVAL; /* logged; the running config stays */
  }
  fe_cfg_shared *shared = fe_cfg_shared_new(s, cfg);
  fe_gen **gens = calloc((size_t)s->nworkers, sizeof(*gens));
  int ok = shared && gens;
  for (int i = 0; ok && i < s->nworkers; i++) {
    fe_cfg_shared_ref(shared);
    if (!(gens[i] = fe_gen_new(shared, luas[i]))) {
      fe_cfg_shared_unref(shared);
      ok = 0;
    } else {
      luas[i] = NULL;
    }
  }
  if (!ok) {
    for (int i = 0; i < s->nworkers; i++) {
      fe_gen_unref(gens ? gens[i] : NULL);
      fe_lua_unref(luas[i]);
    }
    free(gens);
    fe_cfg_shared_unref(shared);
    return UV_ENOMEM;
  }
  /* Every loop gets its generation; one it has not taken yet is replaced. */
  for (int i = 0; i < s->nworkers; i++) {
    fe_loop_slot *sl = &s->slots[i];
    uv_mutex_lock(&sl->mu);
    fe_gen *stale = sl->pending;
    sl->pending = gens[i];
    if (!sl->stop)
      uv_async_send(&sl->ctl);
    uv_mutex_unlock(&sl->mu);
    /* Not taken: it holds no loop state, so releasing it here is safe. */
    fe_gen_unref(stale);
  }
  free(gens);
  fe_cfg_shared_unref(s->cfg);
  s->cfg = shared;
  __atomic_add_fetch(&s->reloads, 1, __ATOMIC_RELAXED);
  return 0;
}

void fe_server_reopen_logs(fe_server *s) {
  if (s->cfg && s->cfg->access_log)
    fe_alog_reopen(s->cfg->access_log);
}

void fe_server_on_reload(fe_server *s, int (*fn)(void *ud, char *err, size_t cap), void *ud) {
  s->reload_fn = fn;
  s->reload_ud = ud;
}

/* ---- what the admin API asks of the control side -------------------------------------------- */

const fe_metrics_names *fe_server_names(const fe_server *s) {
  return &s->names;
}

void fe_server_counts(const fe_server *s, uint64_t *reloads, uint64_t *failures) {
  *reloads = __atomic_load_n(&s->reloads, __ATOMIC_RELAXED);
  *failures = __atomic_load_n(&s->reload_failures, __ATOMIC_RELAXED);
}

/* A reload asked by the admin API: run on the control loop (where SIGHUP's runs), answered on the
 * asking loop through its task mailbox. */
typedef struct fe_reload_req {
  struct fe_reload_req *next;
  fe_task done;               /* back on the asking loop */
  fe_loop *home;
  void (*cb)(void *ud, int rc, const char *err);
  void *ud;
  int rc;
  char err[1024];
} fe_reload_req;

static void fe_reload_req_done(fe_task *t) {
  fe_reload_req *r = (fe_reload_req *)((char *)t - offsetof(fe_reload_req, done));
  r->cb(r->ud, t->cancelled ? -1 : r->rc, t->cancelled ? "the server is stopping" : r->err);
  free(r);
}

/* On the control loop: every waiting request is answered by one reload. */
static void fe_server_on_ctl(uv_async_t *a) {
  fe_server *s = a->data;
  uv_mutex_lock(&s->ctl_mu);
  fe_reload_req *list = s->reload_reqs;
  s->reload_reqs = NULL;
  uv_mutex_unlock(&s->ctl_mu);
  if (!list)
    return;
  char err[1024] = "";
  int rc = -1;
  if (s->stopping || !s->reload_fn)
    snprintf(err, sizeof(err), "%s", s->stopping ? "the server is stopping" : "reload is not available");
  else
    rc = s->reload_fn(s->reload_ud, err, sizeof(err));
  if (rc < 0)
    __atomic_add_fetch(&s->reload_failures, 1, __ATOMIC_RELAXED);
  while (list) {
    fe_reload_req *r = list;
    list = r->next;
    r->rc = rc;
    snprintf(r->err, sizeof(r->err), "%s", err);
    if (fe_loop_post(r->home, &r->done, fe_reload_req_done) < 0)
      free(r); /* the asking loop has closed: nobody waits */
  }
}

int fe_server_reload_async(fe_server *s, fe_loop *home, void (*cb)(void *ud, int rc, const char *err),
                           void *ud) {
  fe_reload_req *r = calloc(1, sizeof(*r));
  if (!r)
    return UV_ENOMEM;
  r->home = home;
  r->cb = cb;
  r->ud = ud;
  uv_mutex_lock(&s->ctl_mu);
  r->next = s->reload_reqs;
  s->reload_reqs = r;
  uv_async_send(&s->ctl_async);
  uv_mutex_unlock(&s->ctl_mu);
  return 0;
}

void fe_server_stop(fe_server *s, double grace, void (*done)(void *ud), void *ud) {
  s->stopping = 1;
  s->done = done;
  s->done_ud = ud;
  for (int i = 0; i < s->nworkers; i++) {
    fe_loop_slot *sl = &s->slots[i];
    uv_mutex_lock(&sl->mu);
    sl->stop = 1;
    sl->grace_s = grace;
    uv_async_send(&sl->ctl);
    uv_mutex_unlock(&sl->mu);
  }
  fe_server_on_done(&s->done_async);
}

static void fe_server_on_closed(uv_handle_t *h) {
  free(h->data);
}

void fe_server_free(fe_server *s) {
  if (!s)
    return;
  for (int i = 0; s->slots && i < s->nworkers; i++) {
    fe_loop_slot *sl = &s->slots[i];
    if (sl->started)
      uv_thread_join(&sl->thread);
    fe_gen_unref(sl->w.gen);
    fe_gen_unref(sl->pending);
    fe_hubs_free(sl->w.hubs);
    free(sl->listeners);
    uv_mutex_destroy(&sl->mu);
  }
  fe_relay_node_free(s->node);
  fe_files_free(s->files);
  fe_health_free(s->health);
  fe_vod_node_free(s->vod);
  /* The last lines written before the exit, unless the log's device is stuck. */
  fe_alog *log = s->cfg ? s->cfg->access_log : NULL;
  if (log)
    fe_alog_ref(log);
  fe_cfg_shared_unref(s->cfg);
  fe_alog_close(log, 2.0);
  fe_metrics_names_free(&s->names);
  free(s->slots);
  free(s->metrics);
  free(s->loops);
  /* Requests still waiting are dropped: their loops have closed. */
  while (s->reload_reqs) {
    struct fe_reload_req *r = s->reload_reqs;
    s->reload_reqs = r->next;
    free(r);
  }
  uv_mutex_destroy(&s->ctl_mu);
  uv_close((uv_handle_t *)&s->ctl_async, NULL);
  uv_close((uv_handle_t *)&s->done_async, fe_server_on_closed);
}
