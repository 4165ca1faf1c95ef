#include "origin/fe_health.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define FE_HEALTH_SLOTS 256 /* origins remembered; the oldest mark goes when full */
#define FE_HEALTH_KEY 256
#define FE_HEALTH_PROBE_MS 15000 /* a probe that never reported frees the origin for another */

typedef struct fe_mark {
  char key[FE_HEALTH_KEY];
  uint32_t fails;      /* failures in a row; 0: free slot */
  uint64_t until;      /* ms: down until then */
  uint64_t probe_until;/* ms: a probe is under way until then */
  uint64_t touched;
} fe_mark;

struct fe_health {
  pthread_mutex_t lock;
  fe_mark marks[FE_HEALTH_SLOTS];
};

fe_health *fe_health_new(void) {
  fe_health *h = calloc(1, sizeof(*h));
  if (h && pthread_mutex_init(&h->lock, NULL) != 0) {
    free(h);
    return NULL;
  }
  return h;
}

void fe_health_free(fe_health *h) {
  if (!h)
    return;
  pthread_mutex_destroy(&h->lock);
  free(h);
}

void fe_health_clear(fe_health *h) {
  pthread_mutex_lock(&h->lock);
  memset(h->marks, 0, sizeof(h->marks));
  pthread_mutex_unlock(&h->lock);
}

static uint64_t fe_now_ms(void) {
  return uv_hrtime() / 1000000;
}

/* The origin a URL names: "http://host:port" (up to the path), or the whole file: URL. */
static void fe_health_key(const char *url, char *key) {
  size_t n = strlen(url);
  if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
    const char *host = strstr(url, "://") + 3;
    const char *slash = strchr(host, '/');
    if (slash)
      n = (size_t)(slash - url);
  }
  if (n >= FE_HEALTH_KEY)
    n = FE_HEALTH_KEY - 1;
  memcpy(key, url, n);
  key[n] = 0;
}

static fe_mark *fe_health_find(fe_health *h, const char *key) {
  for (int i = 0; i < FE_HEALTH_SLOTS; i++)
    if (h->marks[i].fails && strcmp(h->marks[i].key, key) == 0)
      return &h->marks[i];
  return NULL;
}

int fe_health_usable(fe_health *h, const char *url) {
  if (!h)
    return 1;
  char key[FE_HEALTH_KEY];
  fe_health_key(url, key);
  uint64_t now = fe_now_ms();
  pthread_mutex_lock(&h->lock);
  fe_mark *m = fe_health_find(h, key);
  int ok = 1;
  if (m && (now < m->until || now < m->probe_until))
    ok = 0;
  else if (m)
    m->probe_until = now + FE_HEALTH_PROBE_MS;
  pthread_mutex_unlock(&h->lock);
  return ok;
}

int fe_health_is_down(fe_health *h, const char *url) {
  if (!h)
    return 0;
  char key[FE_HEALTH_KEY];
  fe_health_key(url, key);
  uint64_t now = fe_now_ms();
  pthread_mutex_lock(&h->lock);
  fe_mark *m = fe_health_find(h, key);
  int down = m && now < m->until;
  pthread_mutex_unlock(&h->lock);
  return down;
}

void fe_health_failed(fe_health *h, const char *url) {
  if (!h)
    return;
  char key[FE_HEALTH_KEY];
  fe_health_key(url, key);
  uint64_t now = fe_now_ms();
  pthread_mutex_lock(&h->lock);
  fe_mark *m = fe_health_find(h, key);
  if (!m) {
    m = &h->marks[0];
    for (int i = 0; i < FE_HEALTH_SLOTS; i++) {
      if (!h->marks[i].fails) {
        m = &h->marks[i];
        break;
      }
      if (h->marks[i].touched < m->touched)
        m = &h->marks[i];
    }
    memset(m, 0, sizeof(*m));
    memcpy(m->key, key, strlen(key) + 1);
  } else if (now < m->until) {
    /* Still down: a try begun before the mark (another stream's, the same death) is not one
     * more failure in a row; only tries after a back-off make it grow. */
    m->touched = now;
    pthread_mutex_unlock(&h->lock);
    return;
  }
  uint64_t backoff = FE_HEALTH_BACKOFF_MIN_MS;
  for (uint32_t i = 0; i < m->fails && backoff < FE_HEALTH_BACKOFF_MAX_MS; i++)
    backoff *= 2;
  if (backoff > FE_HEALTH_BACKOFF_MAX_MS)
    backoff = FE_HEALTH_BACKOFF_MAX_MS;
  m->fails++;
  m->until = now + backoff;
  m->probe_until = 0;
  m->touched = now;
  pthread_mutex_unlock(&h->lock);
}

void fe_health_ok(fe_health *h, const char *url) {
  if (!h)
    return;
  char key[FE_HEALTH_KEY];
  fe_health_key(url, key);
  pthread_mutex_lock(&h->lock);
  fe_mark *m = fe_health_find(h, key);
  if (m)
    memset(m, 0, sizeof(*m));
  pthread_mutex_unlock(&h->lock);
}
