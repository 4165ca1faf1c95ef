/* fe_geo: country of an IP address, from a MaxMind DB file (libmaxminddb). Uses nothing of ours. */
#ifndef FE_GEO_H
#define FE_GEO_H

typedef struct fe_geo fe_geo;

/** Opens `path` (memory-mapped). NULL with a message in err when it cannot. */
fe_geo *fe_geo_open(const char *path, char *err, unsigned errlen);
void fe_geo_close(fe_geo *g);
/**
 * Writes the ISO 3166-1 alpha-2 country of `ip` (text, IPv4 or IPv6) into out (2 letters + NUL).
 * Returns 0, or -1 when the address is not in the database or has no country. Not thread-safe:
 * g keeps a small cache of decoded records (one fe_geo per loop).
 */
int fe_geo_country(fe_geo *g, const char *ip, char out[3]);

#endif
