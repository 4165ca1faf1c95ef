/*
 * fe_config: the settings, read from a Lua file that returns a table, or built by quick mode.
 * The config owns every string in it; fe_config_free releases them. Read-only once loaded.
 */
#ifndef FE_CONFIG_H
#define FE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct fe_tls_server;
struct fe_tls_client;
struct fe_tls_clients;

enum fe_resource_type { FE_RES_LIVE, FE_RES_STATIC, FE_RES_VOD };

enum { FE_START_BYTES, FE_START_SECONDS }; /* what ?start=N means for a vod resource */

typedef struct fe_resource {
  char *name;
  char *host;   /* "*", "example.com" or "*.example.com" */
  char *prefix; /* path prefix, starts with '/' */
  int type;     /* enum fe_resource_type */
  /* live */
  char *origin; /* "http[s]://host:port/base/" or "file:PATH" (made absolute): the primary */
  char **backups; /* the origin group after the primary, in order (`origin = {a, b, c}`) */
  int nbackups;
  char *slate;  /* "file:PATH" (absolute) played when every origin failed mid-stream; NULL: none */
  double origin_recheck; /* seconds between re-checks of the primary while on a backup; 0: never */
  int failover_on_end;   /* the group moves on when an origin ends the stream cleanly */
  struct fe_tls_client *origin_tls; /* an https origin's TLS client context (in the set the
                                       config was loaded with, net/fe_tls.h) */
  uint32_t max_viewers_per_stream;
  double window_seconds;
  size_t window_bytes;
  uint32_t merge_ms;     /* the merge window, or with merge_auto its most */
  int merge_auto;        /* "auto": the window grows with the loop's viewers, up to merge_ms */
  double linger;
  double slow_viewer_timeout;
  double origin_connect_timeout;
  double origin_read_timeout;
  uint32_t max_tag_size;
  uint32_t send_buffer;  /* SO_SNDBUF for viewers; 0 leaves the kernel's autotuning */
  int stamp_time;        /* insert an onFI tag with the edge's wall clock once a second */
  /* static */
  char *root;   /* absolute directory */
  /* vod (origin and the origin timeouts above too: origin is "http://host[:port]/base/") */
  char *cache_dir;        /* absolute; resources with the same directory share one cache */
  uint64_t cache_max_size; /* bytes */
  double cache_ttl;       /* seconds a 200/206 stays fresh without a hook */
  uint64_t slice_size;    /* bytes, >= 64 KiB */
  int start_unit;         /* FE_START_* */
  int has_policy; /* `policy` is set: the Lua state resolves it */
  int metrics_slot; /* its slot of fe_metrics.res (set by the server when the config is taken) */
} fe_resource;

enum { FE_LISTEN_REUSEPORT, FE_LISTEN_SHARED }; /* how connections reach the loops */
enum { FE_ALOG_JSON, FE_ALOG_COMBINED };           /* access_log_format */

typedef struct fe_config {
  char *path;        /* the file it came from, or NULL in quick mode */
  int workers;       /* loops (threads); 0: "auto", the CPUs this process may run on */
  int listen_mode;   /* FE_LISTEN_* */
  char **listen;     /* "host:port" */
  struct fe_tls_server **listen_tls; /* per listen address: its TLS context (a reference), NULL: plain */
  int *listen_h2c;   /* per listen address: 1 when a cleartext client may speak HTTP/2 (prior knowledge) */
  int nlisten;
  char *ca_file;     /* the CA bundle https origins are verified against; NULL: the system's */
  int log_level;
  char *cors_origin; /* NULL: send no CORS headers */
  char *status_prefix; /* NULL (default): no metrics on the public listeners; the admin API has them */
  uint32_t max_viewers;
  uint32_t max_connections;
  uint32_t max_streams;      /* live streams (hubs) on every loop together; beyond: 503 */
  uint64_t max_window_memory; /* bytes the live windows may hold when a new stream opens */
  double request_timeout;    /* receiving a request head */
  double send_timeout;       /* a finite answer's write making no progress */
  uint32_t max_header_size;
  uint32_t h2_max_streams;   /* HTTP/2: concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS) */
  uint32_t h2_control_rate;  /* HTTP/2: PING, SETTINGS, RST_STREAM and empty frames a client may send per
                              * second on one connection (with a burst of 10 s of them); beyond: GOAWAY */
  fe_resource *resources;
  int nresources;
  char *access_log;  /* path, "stderr", or NULL for none */
  int access_log_format; /* FE_ALOG_JSON or FE_ALOG_COMBINED */
  uint64_t access_log_buffer; /* bytes waiting for the log's writer; beyond, lines are dropped */
  uint32_t max_stream_series; /* streams with their own /metrics series; the rest are "_other" */
  char *pid_file;    /* NULL: none */
  char *geoip_db;    /* MaxMind DB for req.country; NULL: none */
  uint32_t lua_budget;
  uint64_t lua_memory_limit; /* bytes a policy state may hold while a hook runs */
  int has_policies;  /* some resource names a policy */
  char *admin_listen; /* the admin API's "host:port"; NULL: no admin listener */
  char *admin_token;  /* the Bearer token it requires (set with admin_listen) */
} fe_config;

/** The fewest characters an admin token may have. */
#define FE_ADMIN_TOKEN_MIN 16
/** A vod resource's slice_size: at least, at most (bytes). */
#define FE_SLICE_SIZE_MIN 65536
#define FE_SLICE_SIZE_MAX (1u << 30)

/**
 * Loads `path`; https origins get their TLS client contexts from `tls` (the node's set, which
 * must outlive the config). On failure returns -1 with a message (without the path) in err.
 */
int fe_config_load(fe_config *cfg, const char *path, struct fe_tls_clients *tls, char *err,
                   size_t errlen);
/**
 * Only the pid_file of the config at `path` (absolute; NULL when it sets none), whatever else in
 * the file is wrong: what -s stop needs. -1 with a message when the file does not run.
 */
int fe_config_pid_file(const char *path, char **out, char *err, size_t errlen);
/**
 * Quick mode: one resource at "/" with `origins` (the primary, then the backups in order),
 * everything else at its default: live, or with `cache_dir` set a vod resource caching in that
 * directory.
 */
int fe_config_quick(fe_config *cfg, const char *listen, const char *const *origins, int norigins,
                    const char *cache_dir, struct fe_tls_clients *tls, char *err, size_t errlen);
/**
 * Quick mode's --admin ADDR --admin-token TOKEN: checks them as the config's `admin` table is
 * checked and sets them. -1 with a message in err.
 */
int fe_config_admin(fe_config *cfg, const char *listen, const char *token, char *err, size_t errlen);
/**
 * Quick mode's --tls-cert FILE --tls-key FILE: the listener speaks HTTPS with that certificate.
 * -1 with a message in err when they do not load.
 */
int fe_config_tls(fe_config *cfg, const char *cert, const char *key, char *err, size_t errlen);
/** The loops to run: `workers`, or for "auto" the CPUs in this process's affinity mask. */
int fe_config_workers(const fe_config *cfg);
void fe_config_free(fe_config *cfg);

/** The resource serving host+path: of those whose host matches, the longest prefix (the first on
 * a tie), or NULL. `host` is the Host header without its port. */
const fe_resource *fe_config_route(const fe_config *cfg, const char *host, size_t hostlen,
                                   const char *path, size_t pathlen);

#endif
