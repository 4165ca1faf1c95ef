#include "origin/fe_health.h"

#include <time.h>

#include "fe_test.h"

#define A "http://10.0.0.1:8080/live/a.flv"
#define A_OTHER_PATH "http://10.0.0.1:8080/live/b.flv"

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Keyed by scheme://host:port: another path of the same origin shares its mark. */
static void test_key_is_the_origin(void) {
  fe_health *h = fe_health_new();
  FE_CHECK(fe_health_usable(h, A));
  fe_health_failed(h, A);
  FE_CHECK(fe_health_is_down(h, A_OTHER_PATH));
  FE_CHECK(!fe_health_usable(h, A_OTHER_PATH));
  FE_CHECK(!fe_health_is_down(h, "http://10.0.0.1:8081/live/a.flv"));
  fe_health_ok(h, A);
  FE_CHECK(!fe_health_is_down(h, A));
  FE_CHECK(fe_health_usable(h, A));
  fe_health_free(h);
}

/*
 * Many streams losing one origin at once report as many failures: the back-off stays 1 s (they
 * are one death, not failures in a row). After it, one caller gets the probe; the others still
 * see the origin down until the probe reports. A failed probe doubles the back-off (2 s).
 */
static void test_backoff_and_one_probe(void) {
  fe_health *h = fe_health_new();
  for (int i = 0; i < 5; i++)
    fe_health_failed(h, A);
  FE_CHECK(!fe_health_usable(h, A));
  sleep_ms(FE_HEALTH_BACKOFF_MIN_MS + 100);
  FE_CHECK(!fe_health_is_down(h, A));
  FE_CHECK(fe_health_usable(h, A));  /* the probe */
  FE_CHECK(!fe_health_usable(h, A)); /* everyone else, while it runs */
  fe_health_failed(h, A);            /* the probe failed */
  sleep_ms(FE_HEALTH_BACKOFF_MIN_MS + 100);
  FE_CHECK(fe_health_is_down(h, A)); /* 2 s this time */
  FE_CHECK(!fe_health_usable(h, A));
  sleep_ms(FE_HEALTH_BACKOFF_MIN_MS);
  FE_CHECK(fe_health_usable(h, A));
  fe_health_ok(h, A);
  FE_CHECK(fe_health_usable(h, A));
  FE_CHECK(fe_health_usable(h, A)); /* healthy: no probe, everyone */
  fe_health_free(h);
}

int main(void) {
  FE_RUN(test_key_is_the_origin);
  FE_RUN(test_backoff_and_one_probe);
  return FE_DONE();
}
