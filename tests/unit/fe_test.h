/* A minimal test harness: FE_CHECK records a failure and goes on; main returns the failure count. */
#ifndef FE_TEST_H
#define FE_TEST_H

#include <stdio.h>

static int fe_test_failures;
static int fe_test_checks;

#define FE_CHECK(cond)                                                              \
  do {                                                                              \
    fe_test_checks++;                                                               \
    if (!(cond)) {                                                                  \
      fe_test_failures++;                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
    }                                                                               \
  } while (0)

#define FE_CHECK_EQ(a, b)                                                           \
  do {                                                                              \
    long long fe_a_ = (long long)(a), fe_b_ = (long long)(b);                       \
    fe_test_checks++;                                                               \
    if (fe_a_ != fe_b_) {                                                           \
      fe_test_failures++;                                                           \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
              #a, #b, fe_a_, fe_b_);                                                \
    }                                                                               \
  } while (0)

#define FE_RUN(fn)                                                                  \
  do {                                                                              \
    int fe_before_ = fe_test_failures;                                              \
    fn();                                                                           \
    printf("%s %s\n", fe_test_failures == fe_before_ ? "ok  " : "FAIL", #fn);       \
  } while (0)

#define FE_DONE()                                                                   \
  (printf("%d checks, %d failed\n", fe_test_checks, fe_test_failures),              \
   fe_test_failures ? 1 : 0)

#endif
