/* fe_log: one line per event on stderr. Errors are logged once, where they are handled. */
#ifndef FE_LOG_H
#define FE_LOG_H

enum fe_log_level { FE_LOG_DEBUG, FE_LOG_INFO, FE_LOG_WARN, FE_LOG_ERROR };

/** Lines below this level are dropped. Process-wide, set by the control thread, read by every
 * loop: relaxed atomics, a plain load on the hot path. */
extern int fe_log_level;

static inline int fe_log_get_level(void) {
  return __atomic_load_n(&fe_log_level, __ATOMIC_RELAXED);
}

static inline void fe_log_set_level(int level) {
  __atomic_store_n(&fe_log_level, level, __ATOMIC_RELAXED);
}

/** Writes "flvedge: [level] message" (no tag for info) as one write, so lines never interleave. */
void fe_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Parses "debug|info|warn|error"; returns the level or -1. */
int fe_log_parse_level(const char *name);

#define fe_debug(...) do { if (fe_log_get_level() <= FE_LOG_DEBUG) fe_log(FE_LOG_DEBUG, __VA_ARGS__); } while (0)
#define fe_info(...) fe_log(FE_LOG_INFO, __VA_ARGS__)
#define fe_warn(...) fe_log(FE_LOG_WARN, __VA_ARGS__)
#define fe_error(...) fe_log(FE_LOG_ERROR, __VA_ARGS__)

#endif
