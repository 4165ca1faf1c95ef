/*
 * fe_health: passive health marks of origins, one set per node, shared by every loop (fe_loop's
 * `health`). A failure marks the origin (its scheme://host:port, or the file of a file: source)
 * down for a back-off that doubles with each failure in a row (1 s up to 30 s); a failure while
 * it is still down (a try begun before the mark: many streams losing one origin at once) does
 * not count again; a success clears the mark. Once the back-off is over, one caller gets to try it (a probe) while the others still
 * see it down, so a dead origin is not hammered by every stream that used it. Thread-safe; no
 * caller owns anything inside. A NULL set (a loop without a node, in tests) marks nothing.
 */
#ifndef FE_HEALTH_H
#define FE_HEALTH_H

#define FE_HEALTH_BACKOFF_MIN_MS 1000
#define FE_HEALTH_BACKOFF_MAX_MS 30000

typedef struct fe_health fe_health;

fe_health *fe_health_new(void);
void fe_health_free(fe_health *h);
/**
 * 1 when `url` may be tried now: it has no mark, or its back-off is over and no other caller is
 * probing it (the caller then is the probe, until it reports), else 0.
 */
int fe_health_usable(fe_health *h, const char *url);
/** A try of `url` failed: down for the next back-off (unless it is down already). */
void fe_health_failed(fe_health *h, const char *url);
/** `url` delivered: the mark is gone. */
void fe_health_ok(fe_health *h, const char *url);
/** Forgets every mark (a fuzz target starts each input from none). */
void fe_health_clear(fe_health *h);
/** 1 when `url` is marked down now (no side effect, for logs and tests). */
int fe_health_is_down(fe_health *h, const char *url);

#endif
