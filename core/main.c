/* flvedge: command line, signals, the loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "config/fe_config.h"
#include "http/fe_http.h"
#include "log/fe_log.h"
#include "net/fe_tls.h"
#include "lua/fe_lua.h"

#define FE_STOP_GRACE 5.0
#define FE_QUICK_ORIGINS_MAX 16 /* --origin given this often at most */

typedef struct fe_main {
  uv_loop_t *loop;
  fe_server *server;
  uv_signal_t sigterm, sigint, sighup, sigusr1;
  int stopping;
  int stopped;           /* the server is freed: signals are caught and ignored */
  /* what to load again on SIGHUP */
  const char *config_path, *listen, *origin, *policy;
  const char *origins[FE_QUICK_ORIGINS_MAX]; /* --origin, each time given: primary, then backups */
  int norigins;
  const char *admin, *admin_token; /* quick mode's admin listener */
  const char *tls_cert, *tls_key;  /* quick mode's listener speaks HTTPS (read again on SIGHUP) */
  int vod;               /* --vod: quick mode makes a vod resource */
  const char *cache_dir; /* --cache-dir */
  int workers;           /* --workers, 0: the config's */
  int log_level_set;     /* --log-level wins over the config's, on reload too */
  char *pid_file;
  fe_tls_clients *tls;   /* origins' TLS contexts: every config load's, for the process's life */
} fe_main;

static const char *fe_env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}

static void fe_unref_all(fe_lua **luas, int n) {
  for (int i = 0; i < n; i++)
    fe_lua_unref(luas[i]);
  free(luas);
}

/* Loads the config and, when any resource has a policy, a fresh Lua state with the policies for
 * each of `nloops` loops (0: as many as the config asks for). All or nothing: a policy that fails
 * in one state changes no loop. */
static int fe_load(const fe_main *m, int nloops, fe_config *cfg, fe_lua ***luas, char *err,
                   size_t errlen) {
  *luas = NULL;
  int rc = m->config_path ? fe_config_load(cfg, m->config_path, m->tls, err, errlen)
                          : fe_config_quick(cfg, m->listen, m->origins, m->norigins,
                                            m->vod ? m->cache_dir : NULL, m->tls, err, errlen);
  if (rc == 0 && m->admin && fe_config_admin(cfg, m->admin, m->admin_token, err, errlen) < 0) {
    fe_config_free(cfg);
    rc = -1;
  }
  if (rc == 0 && m->tls_cert && fe_config_tls(cfg, m->tls_cert, m->tls_key, err, errlen) < 0) {
    fe_config_free(cfg);
    rc = -1;
  }
  if (rc < 0)
    return -1;
  if (m->workers)
    cfg->workers = m->workers;
  if (nloops == 0)
    nloops = fe_config_workers(cfg);
  *luas = calloc((size_t)nloops, sizeof(fe_lua *));
  if (!*luas) {
    snprintf(err, errlen, "out of memory");
    fe_config_free(cfg);
    return -1;
  }
  if (!cfg->has_policies && !m->policy && !cfg->geoip_db)
    return nloops;
  fe_lua_opts lo = {
      .config_path = m->config_path,
      .quick_policy = m->policy,
      .nresources = cfg->nresources,
      .lua_dir = fe_env_or("FLVEDGE_LUA_DIR", FE_LUA_DIR),
      .policy_dir = fe_env_or("FLVEDGE_POLICY_DIR", FE_POLICY_DIR),
      .budget = cfg->lua_budget,
      .memory_limit = cfg->lua_memory_limit,
      .geoip_db = cfg->geoip_db,
  };
  for (int i = 0; i < nloops; i++) {
    if (!((*luas)[i] = fe_lua_open(&lo, err, errlen))) {
      fe_unref_all(*luas, nloops);
      *luas = NULL;
      fe_config_free(cfg);
      return -1;
    }
  }
  return nloops;
}

/* Loads the config again and hands it to every loop: SIGHUP and the admin API's POST /reload.
 * Returns 0, or -1 with the reason in err (logged here). */
static int fe_reload(void *ud, char *err, size_t cap) {
  fe_main *m = ud;
  if (m->stopping) {
    snprintf(err, cap, "the server is stopping");
    return -1;
  }
  fe_config cfg;
  fe_lua **luas;
  int n = fe_load(m, fe_server_workers(m->server), &cfg, &luas, err, cap);
  if (n < 0) {
    fe_error("reload failed, the running config and policies stay in force: %s: %s",
             m->config_path ? m->config_path : "quick mode", err);
    return -1;
  }
  int level = cfg.log_level;
  int rrc = fe_server_reload(m->server, &cfg, luas);
  if (rrc < 0) {
    if (rrc == UV_ENOMEM)
      fe_error("reload failed: out of memory");
    snprintf(err, cap, "%s", rrc == UV_ENOMEM ? "out of memory" : "the new config was refused (see the log)");
    fe_config_free(&cfg);
    fe_unref_all(luas, n);
    return -1;
  }
  free(luas);
  if (!m->log_level_set)
    fe_log_set_level(level);
  fe_info("reloaded %s", m->config_path ? m->config_path : "the policy");
  return 0;
}

static void fe_on_reload(uv_signal_t *sig, int signum) {
  char err[1024];
  fe_main *m = sig->data;
  if (!m->stopped)
    fe_reload(m, err, sizeof(err));
}

/* logrotate moved the access log: the writer opens the path again. */
static void fe_on_reopen(uv_signal_t *sig, int signum) {
  fe_main *m = sig->data;
  if (!m->stopping) {
    fe_info("SIGUSR1: reopening the access log");
    fe_server_reopen_logs(m->server);
  }
}

static int fe_write_pid(const char *path) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  fprintf(f, "%d\n", (int)getpid());
  return fclose(f);
}

/* flvedge -s reload|stop: signals the running instance named by the config's pid_file. */
static int fe_signal_running(const char *what, const char *pid_file) {
  int sig = strcmp(what, "reload") == 0 ? SIGHUP : strcmp(what, "stop") == 0 ? SIGTERM : 0;
  if (!sig) {
    fprintf(stderr, "flvedge: -s takes reload or stop\n");
    return 1;
  }
  if (!pid_file) {
    fprintf(stderr, "flvedge: -s needs a pid file: set pid_file in the config (or --pid-file)\n");
    return 1;
  }
  FILE *f = fopen(pid_file, "r");
  int pid = 0;
  if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
    fprintf(stderr, "flvedge: %s: no running flvedge (%s)\n", pid_file, f ? "bad pid file" : strerror(errno));
    if (f)
      fclose(f);
    return 1;
  }
  fclose(f);
  if (kill(pid, sig) < 0) {
    fprintf(stderr, "flvedge: signalling pid %d: %s\n", pid, strerror(errno));
    return 1;
  }
  return 0;
}

/* flvedge -s stop needs the pid file only, so that a broken config or policy never blocks a
 * stop: --pid-file, else the config's pid_file read alone. */
static int fe_stop_running(const char *config_path, const char *pid_file) {
  if (pid_file)
    return fe_signal_running("stop", pid_file);
  char *path, err[1024];
  if (fe_config_pid_file(config_path, &path, err, sizeof(err)) < 0) {
    fprintf(stderr, "flvedge: %s: %s; cannot read its pid_file (give it with --pid-file)\n",
            config_path, err);
    return 1;
  }
  int rc = fe_signal_running("stop", path);
  free(path);
  return rc;
}

static void fe_usage(FILE *out) {
  fprintf(out,
          "usage: flvedge -c CONFIG          run with a Lua config file\n"
          "       flvedge -t -c CONFIG       check the config and exit\n"
          "       flvedge -s reload|stop -c CONFIG   signal the running instance (pid_file)\n"
          "       flvedge --listen HOST:PORT --origin URL [--origin BACKUP...] [--policy FILE.lua]\n"
          "                                  quick live proxy, no config file; origins after the\n"
          "                                  first are backups, tried in order when it fails\n"
          "       flvedge --listen HOST:PORT --origin URL --vod --cache-dir DIR\n"
          "                                  quick VOD caching proxy: /PATH from URL/PATH\n"
          "         [--admin HOST:PORT --admin-token TOKEN]   its admin API (metrics, health)\n"
          "         [--tls-cert FILE --tls-key FILE]          the listener speaks HTTPS\n"
          "       flvedge -v                 print the version\n"
          "options: --log-level debug|info|warn|error, --pid-file PATH,\n"
          "         --workers N|auto         loops (threads); default: the config's, else auto\n");
}

/* The VOD cache's disk work (open, fstat, read, write, rename, sendfile) runs in libuv's thread
 * pool, shared by every loop: 4 threads (libuv's default) would let a few slow disks stall every
 * loop's hits. max(8, 2 * loops), unless the environment already says; it must be set before the
 * pool's first use, which is here, before any loop runs. */
static void fe_threadpool_size(int nloops) {
  const char *have = getenv("UV_THREADPOOL_SIZE");
  if (have && *have)
    return;
  char v[16];
  snprintf(v, sizeof(v), "%d", nloops * 2 > 8 ? nloops * 2 : 8);
  setenv("UV_THREADPOOL_SIZE", v, 1);
}

static void fe_on_stopped(void *ud) {
  fe_main *m = ud;
  fe_info("stopped");
  /* The signal handles stay open to the end (unreferenced, so the loop can finish): closing
   * them would give the signals back their default actions, and a second SIGTERM in the last
   * moments of the stop (the access log writer may take up to 2 s) would kill the process and
   * leave the pid file behind. Their callbacks do nothing once stopped. */
  m->stopped = 1;
  fe_server_free(m->server);
  uv_unref((uv_handle_t *)&m->sigterm);
  uv_unref((uv_handle_t *)&m->sigint);
  uv_unref((uv_handle_t *)&m->sighup);
  uv_unref((uv_handle_t *)&m->sigusr1);
}

static void fe_on_signal(uv_signal_t *sig, int signum) {
  fe_main *m = sig->data;
  if (m->stopping)
    return;
  m->stopping = 1;
  fe_info("%s: stopping gracefully", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  fe_server_stop(m->server, FE_STOP_GRACE, fe_on_stopped, m);
}

/*
 * The kernel grows a process's descriptor table by doubling, and in a process with threads each
 * growth waits for an RCU grace period (expand_fdtable's synchronize_rcu, about 10 ms here) inside
 * whichever accept4() or open() crossed the size: a loop stood still for 10 ms as its connections
 * passed 256, 512, 1024, 2048, and every viewer joining meanwhile waited (seen in the joins
 * benchmark). Grown once here, before any thread exists, it costs 8 bytes per descriptor and no
 * wait later: room for every connection allowed, their origin pulls and VOD files.
 */
static void fe_fd_table_reserve(const fe_config *cfg) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return;
  uint64_t want = (uint64_t)cfg->max_connections * 2 + 1024;
  if (want > rl.rlim_cur)
    want = rl.rlim_cur;
  if (want > (1u << 20))
    want = 1u << 20;
  int fd = (int)want - 1;
  if (fd <= 2 || fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
    return;
  for (int from = 0; from <= 2; from++) /* any open descriptor will do; one may be closed */
    if (dup2(from, fd) == fd) {
      close(fd);
      return;
    }
}

int main(int argc, char **argv) {
  fe_main m = {0};
  const char *level = NULL, *signal_what = NULL, *pid_file = NULL;
  int test_only = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has_value = i + 1 < argc;
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("flvedge " FE_VERSION "\n");
      return 0;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fe_usage(stdout);
      return 0;
    } else if (strcmp(a, "-t") == 0) {
      test_only = 1;
    } else if (strcmp(a, "-c") == 0 && has_value) {
      m.config_path = argv[++i];
    } else if (strcmp(a, "-s") == 0 && has_value) {
      signal_what = argv[++i];
    } else if (strcmp(a, "--listen") == 0 && has_value) {
      m.listen = argv[++i];
    } else if (strcmp(a, "--origin") == 0 && has_value) {
      if (m.norigins == FE_QUICK_ORIGINS_MAX) {
        fprintf(stderr, "flvedge: --origin: at most %d origins\n", FE_QUICK_ORIGINS_MAX);
        return 1;
      }
      m.origins[m.norigins++] = argv[++i];
      m.origin = m.origins[0];
    } else if (strcmp(a, "--admin") == 0 && has_value) {
      m.admin = argv[++i];
    } else if (strcmp(a, "--tls-cert") == 0 && has_value) {
      m.tls_cert = argv[++i];
    } else if (strcmp(a, "--tls-key") == 0 && has_value) {
      m.tls_key = argv[++i];
    } else if (strcmp(a, "--admin-token") == 0 && has_value) {
      m.admin_token = argv[++i];
    } else if (strcmp(a, "--vod") == 0) {
      m.vod = 1;
    } else if (strcmp(a, "--cache-dir") == 0 && has_value) {
      m.cache_dir = argv[++i];
    } else if (strcmp(a, "--policy") == 0 && has_value) {
      m.policy = argv[++i];
    } else if (strcmp(a, "--pid-file") == 0 && has_value) {
      pid_file = argv[++i];
    } else if (strcmp(a, "--log-level") == 0 && has_value) {
      level = argv[++i];
    } else if (strcmp(a, "--workers") == 0 && has_value) {
      const char *v = argv[++i];
      char *end;
      long n = strtol(v, &end, 10);
      if (strcmp(v, "auto") == 0) {
        m.workers = 0;
      } else if (*end || n < 1 || n > 64) {
        fprintf(stderr, "flvedge: --workers: expected auto or a number from 1 to 64\n");
        return 1;
      } else {
        m.workers = (int)n;
      }
    } else {
      fprintf(stderr, "flvedge: unknown or incomplete option \"%s\"\n", a);
      fe_usage(stderr);
      return 1;
    }
  }
  if (!m.config_path && !(m.listen && m.origin) && !(signal_what && pid_file)) {
    fe_usage(stderr);
    return 1;
  }
  if (m.vod != (m.cache_dir != NULL)) {
    fprintf(stderr, "flvedge: --vod needs --cache-dir DIR (and --cache-dir needs --vod)\n");
    return 1;
  }
  if (m.config_path && (m.listen || m.origin || m.policy || m.vod || m.admin || m.admin_token)) {
    fprintf(stderr, "flvedge: -c and --listen/--origin/--policy/--vod/--admin exclude each other "
                    "(the config's admin table sets the admin listener)\n");
    return 1;
  }
  if (!m.tls_cert != !m.tls_key) {
    fprintf(stderr, "flvedge: --tls-cert FILE and --tls-key FILE go together\n");
    return 1;
  }
  if (m.config_path && m.tls_cert) {
    fprintf(stderr, "flvedge: -c and --tls-cert exclude each other (the config's listen entries "
                    "set certificates)\n");
    return 1;
  }
  if (m.admin && !m.admin_token) {
    fprintf(stderr, "flvedge: --admin needs --admin-token TOKEN (at least %d characters): the "
                    "admin API never runs without a token\n", FE_ADMIN_TOKEN_MIN);
    return 1;
  }
  if (m.admin_token && !m.admin) {
    fprintf(stderr, "flvedge: --admin-token needs --admin HOST:PORT\n");
    return 1;
  }
  if (level && fe_log_parse_level(level) < 0) {
    fprintf(stderr, "flvedge: --log-level: expected debug, info, warn or error\n");
    return 1;
  }

  fe_config cfg;
  fe_lua **luas = NULL;
  char err[1024];
  if (signal_what && !m.config_path)
    return fe_signal_running(signal_what, pid_file);
  if (signal_what && strcmp(signal_what, "stop") == 0)
    return fe_stop_running(m.config_path, pid_file);
  m.tls = fe_tls_clients_new();
  if (!m.tls) {
    fprintf(stderr, "flvedge: out of memory\n");
    return 1;
  }
  /* -s and -t need one policy state at most: checking it is what they are for. */
  int nloops = fe_load(&m, signal_what || test_only ? 1 : 0, &cfg, &luas, err, sizeof(err));
  if (nloops < 0) {
    fprintf(stderr, "flvedge: %s: %s\n", m.config_path ? m.config_path : "quick mode", err);
    fe_tls_clients_free(m.tls);
    return 1;
  }
  if (signal_what || test_only) {
    int rc = 0;
    if (signal_what)
      rc = fe_signal_running(signal_what, pid_file ? pid_file : cfg.pid_file);
    else
      printf("flvedge: configuration %s is ok\n", m.config_path ? m.config_path : "(quick mode)");
    fe_config_free(&cfg);
    fe_unref_all(luas, nloops);
    fe_tls_clients_free(m.tls);
    return rc;
  }
  m.log_level_set = level != NULL;
  fe_log_set_level(level ? fe_log_parse_level(level) : cfg.log_level);
  signal(SIGPIPE, SIG_IGN);
  /* Every viewer is a descriptor: take all the kernel allows this process. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  fe_fd_table_reserve(&cfg);
  if (pid_file || cfg.pid_file)
    m.pid_file = strdup(pid_file ? pid_file : cfg.pid_file);

  fe_threadpool_size(nloops);
  m.loop = uv_default_loop();
  int rc = fe_server_start(m.loop, &cfg, luas, nloops, &m.server);
  free(luas);
  if (rc < 0) {
    fe_server_free(m.server);
    uv_run(m.loop, UV_RUN_DEFAULT);
    free(m.pid_file);
    fe_tls_clients_free(m.tls);
    return 1;
  }
  if (m.pid_file && fe_write_pid(m.pid_file) < 0)
    fe_warn("pid_file %s: %s", m.pid_file, strerror(errno));
  uv_signal_init(m.loop, &m.sigterm);
  uv_signal_init(m.loop, &m.sigint);
  uv_signal_init(m.loop, &m.sighup);
  uv_signal_init(m.loop, &m.sigusr1);
  m.sigterm.data = m.sigint.data = m.sighup.data = m.sigusr1.data = &m;
  fe_server_on_reload(m.server, fe_reload, &m);
  uv_signal_start(&m.sigterm, fe_on_signal, SIGTERM);
  uv_signal_start(&m.sigint, fe_on_signal, SIGINT);
  uv_signal_start(&m.sighup, fe_on_reload, SIGHUP);
  uv_signal_start(&m.sigusr1, fe_on_reopen, SIGUSR1);
  uv_run(m.loop, UV_RUN_DEFAULT);
  /* The signal handles are still open (fe_on_stopped) and libuv's handler would look them up in
   * this frame: from here to the process's end (atexit work, LeakSanitizer's check under ASan) a
   * late signal is ignored instead. A second SIGTERM there had crashed the exit (SIGSEGV). */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGUSR1, SIG_IGN);
  uv_loop_close(m.loop);
  fe_tls_clients_free(m.tls); /* the server, its loops and configs are gone */
  if (m.pid_file)
    unlink(m.pid_file);
  free(m.pid_file);
  return 0;
}
