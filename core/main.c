/* flvedge: command line, signals, the loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config/fe_config.h"
#include "http/fe_http.h"
#include "log/fe_log.h"

#define FE_STOP_GRACE 5.0

typedef struct fe_main {
  uv_loop_t *loop;
  fe_server *server;
  uv_signal_t sigterm, sigint;
  int stopping;
} fe_main;

static void fe_usage(FILE *out) {
  fprintf(out,
          "usage: flvedge -c CONFIG          run with a Lua config file\n"
          "       flvedge -t -c CONFIG       check the config and exit\n"
          "       flvedge --listen HOST:PORT --origin URL   quick live proxy, no config file\n"
          "       flvedge -v                 print the version\n"
          "options: --log-level debug|info|warn|error\n");
}

static void fe_on_stopped(void *ud) {
  fe_main *m = ud;
  fe_info("stopped");
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sigint, NULL);
  fe_server_free(m->server);
}

static void fe_on_signal(uv_signal_t *sig, int signum) {
  fe_main *m = sig->data;
  if (m->stopping)
    return;
  m->stopping = 1;
  fe_info("%s: stopping gracefully", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  fe_server_stop(m->server, FE_STOP_GRACE, fe_on_stopped, m);
}

int main(int argc, char **argv) {
  const char *config_path = NULL, *listen = NULL, *origin = NULL, *level = NULL;
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
      config_path = argv[++i];
    } else if (strcmp(a, "--listen") == 0 && has_value) {
      listen = argv[++i];
    } else if (strcmp(a, "--origin") == 0 && has_value) {
      origin = argv[++i];
    } else if (strcmp(a, "--log-level") == 0 && has_value) {
      level = argv[++i];
    } else {
      fprintf(stderr, "flvedge: unknown or incomplete option \"%s\"\n", a);
      fe_usage(stderr);
      return 1;
    }
  }
  if (!config_path && !(listen && origin)) {
    fe_usage(stderr);
    return 1;
  }
  if (config_path && (listen || origin)) {
    fprintf(stderr, "flvedge: -c and --listen/--origin exclude each other\n");
    return 1;
  }

  fe_config cfg;
  char err[1024];
  int rc = config_path ? fe_config_load(&cfg, config_path, err, sizeof(err))
                       : fe_config_quick(&cfg, listen, origin, err, sizeof(err));
  if (rc < 0) {
    fprintf(stderr, "flvedge: %s: %s\n", config_path ? config_path : "quick mode", err);
    return 1;
  }
  if (test_only) {
    printf("flvedge: configuration %s is ok\n", config_path ? config_path : "(quick mode)");
    fe_config_free(&cfg);
    return 0;
  }
  fe_log_level = cfg.log_level;
  if (level) {
    fe_log_level = fe_log_parse_level(level);
    if (fe_log_level < 0) {
      fprintf(stderr, "flvedge: --log-level: expected debug, info, warn or error\n");
      return 1;
    }
  }
  signal(SIGPIPE, SIG_IGN);

  fe_main m = {.loop = uv_default_loop()};
  if (fe_server_start(m.loop, &cfg, &m.server) < 0) {
    fe_server_free(m.server);
    uv_run(m.loop, UV_RUN_DEFAULT);
    fe_config_free(&cfg);
    return 1;
  }
  uv_signal_init(m.loop, &m.sigterm);
  uv_signal_init(m.loop, &m.sigint);
  m.sigterm.data = m.sigint.data = &m;
  uv_signal_start(&m.sigterm, fe_on_signal, SIGTERM);
  uv_signal_start(&m.sigint, fe_on_signal, SIGINT);
  uv_run(m.loop, UV_RUN_DEFAULT);
  uv_loop_close(m.loop);
  fe_config_free(&cfg);
  return 0;
}
