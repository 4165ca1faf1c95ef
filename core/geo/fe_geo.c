#include "geo/fe_geo.h"

#include <arpa/inet.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decoded country codes by the offset of their record in the data section: many networks share
 * one record (a country's), and decoding it (MMDB_get_value's walk of the map by key names) cost
 * more than finding it. Entries are never stale: the database does not change while open. */
#define FE_GEO_CACHE 64

typedef struct fe_geo_cached {
  uint64_t offset; /* record offset + 1; 0: empty */
  char country[3]; /* "" when the record has no country */
} fe_geo_cached;

struct fe_geo {
  MMDB_s db;
  fe_geo_cached cache[FE_GEO_CACHE];
};

fe_geo *fe_geo_open(const char *path, char *err, unsigned errlen) {
  fe_geo *g = calloc(1, sizeof(*g));
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  int rc = MMDB_open(path, MMDB_MODE_MMAP, &g->db);
  if (rc != MMDB_SUCCESS) {
    snprintf(err, errlen, "%s: %s", path, MMDB_strerror(rc));
    free(g);
    return NULL;
  }
  return g;
}

void fe_geo_close(fe_geo *g) {
  if (!g)
    return;
  MMDB_close(&g->db);
  free(g);
}

int fe_geo_country(fe_geo *g, const char *ip, char out[3]) {
  /* inet_pton and a sockaddr, not MMDB_lookup_string: that one goes through getaddrinfo, which
   * took a third of the lookup's time. */
  struct sockaddr_in6 sa6;
  struct sockaddr_in sa4;
  const struct sockaddr *sa;
  memset(&sa6, 0, sizeof(sa6));
  memset(&sa4, 0, sizeof(sa4));
  if (inet_pton(AF_INET, ip, &sa4.sin_addr) == 1) {
    sa4.sin_family = AF_INET;
    sa = (const struct sockaddr *)&sa4;
  } else if (inet_pton(AF_INET6, ip, &sa6.sin6_addr) == 1) {
    sa6.sin6_family = AF_INET6;
    sa = (const struct sockaddr *)&sa6;
  } else {
    return -1;
  }
  int mmdb_error = 0;
  MMDB_lookup_result_s r = MMDB_lookup_sockaddr((MMDB_s *)&g->db, sa, &mmdb_error);
  if (mmdb_error != MMDB_SUCCESS || !r.found_entry)
    return -1;
  fe_geo_cached *c = &g->cache[(r.entry.offset ^ (r.entry.offset >> 7)) % FE_GEO_CACHE];
  if (c->offset != (uint64_t)r.entry.offset + 1) {
    MMDB_entry_data_s d;
    c->offset = (uint64_t)r.entry.offset + 1;
    c->country[0] = 0;
    /* GeoIP2/GeoLite2 Country and City keep it under country.iso_code. */
    if (MMDB_get_value(&r.entry, &d, "country", "iso_code", NULL) == MMDB_SUCCESS && d.has_data &&
        d.type == MMDB_DATA_TYPE_UTF8_STRING && d.data_size == 2) {
      c->country[0] = d.utf8_string[0];
      c->country[1] = d.utf8_string[1];
      c->country[2] = 0;
    }
  }
  if (!c->country[0])
    return -1;
  memcpy(out, c->country, 3);
  return 0;
}
