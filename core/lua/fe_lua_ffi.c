#include "lua/fe_lua_ffi.h"

#include <arpa/inet.h>
#include <string.h>

/* -1 outside the base64url alphabet. */
static const signed char fe_b64_dec[256] = {
#define X4 -1, -1, -1, -1
#define X16 X4, X4, X4, X4
    X16, X16,                                                          /* 0x00-0x1f */
    X4, X4, X4, -1, 62, -1, -1,                                        /* 0x20-0x2f: '-' */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,    /* '0'-'9' */
    -1, 0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,    /* 'A'-'O' */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,    /* 'P'-'Z', '_' */
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,    /* 'a'-'o' */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,    /* 'p'-'z' */
    X16, X16, X16, X16, X16, X16, X16, X16,                            /* 0x80-0xff */
#undef X16
#undef X4
};
_Static_assert(sizeof(fe_b64_dec) == 256, "one entry per byte");

static const char fe_b64_enc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int fe_lua_ffi_b64url_decode(const char *s, size_t n, unsigned char *out) {
  const unsigned char *u = (const unsigned char *)s;
  if (n > 0 && u[n - 1] == '=') {
    if (n % 4 != 0)
      return -1;
    n--;
    if (u[n - 1] == '=')
      n--;
  }
  size_t tail = n % 4, o = 0, i = 0;
  if (tail == 1)
    return -1;
  for (; i + 4 <= n; i += 4) {
    int a = fe_b64_dec[u[i]], b = fe_b64_dec[u[i + 1]], c = fe_b64_dec[u[i + 2]], d = fe_b64_dec[u[i + 3]];
    if ((a | b | c | d) < 0)
      return -1;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
    out[o++] = (unsigned char)(v >> 16);
    out[o++] = (unsigned char)(v >> 8);
    out[o++] = (unsigned char)v;
  }
  if (tail == 2) {
    int a = fe_b64_dec[u[i]], b = fe_b64_dec[u[i + 1]];
    if ((a | b) < 0 || (b & 15) != 0)
      return -1;
    out[o++] = (unsigned char)(a << 2 | b >> 4);
  } else if (tail == 3) {
    int a = fe_b64_dec[u[i]], b = fe_b64_dec[u[i + 1]], c = fe_b64_dec[u[i + 2]];
    if ((a | b | c) < 0 || (c & 3) != 0)
      return -1;
    uint32_t v = (uint32_t)a << 10 | (uint32_t)b << 4 | (uint32_t)c >> 2;
    out[o++] = (unsigned char)(v >> 8);
    out[o++] = (unsigned char)v;
  }
  return (int)o;
}

size_t fe_lua_ffi_b64url_encode(const unsigned char *raw, size_t n, int pad, char *out) {
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
    out[o++] = fe_b64_enc[v >> 18];
    out[o++] = fe_b64_enc[(v >> 12) & 63];
    out[o++] = fe_b64_enc[(v >> 6) & 63];
    out[o++] = fe_b64_enc[v & 63];
  }
  if (n - i == 1) {
    out[o++] = fe_b64_enc[raw[i] >> 2];
    out[o++] = fe_b64_enc[(raw[i] & 3) << 4];
    if (pad) {
      out[o++] = '=';
      out[o++] = '=';
    }
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)raw[i] << 8 | raw[i + 1];
    out[o++] = fe_b64_enc[v >> 10];
    out[o++] = fe_b64_enc[(v >> 4) & 63];
    out[o++] = fe_b64_enc[(v & 15) << 2];
    if (pad)
      out[o++] = '=';
  }
  return o;
}

int fe_lua_ffi_ct_equal(const void *a, size_t la, const void *b, size_t lb) {
  const unsigned char *ua = a, *ub = b;
  /* volatile: the compiler must not stop at the first difference. */
  volatile unsigned char diff = la == lb ? 0 : 1;
  for (size_t i = 0; i < lb; i++) {
    unsigned char ca = la > 0 ? ua[i % la] : 0;
    diff |= (unsigned char)(ca ^ ub[i]);
  }
  return diff == 0;
}

int fe_lua_ffi_digits(const char *s, size_t n) {
  if (n == 0 || n > 15)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

int fe_lua_ffi_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && (s[i] < '\t' || s[i] > '\r'))
      return 0;
  return 1;
}

int fe_lua_ffi_dir_len(const char *path, size_t n) {
  if (n == 0 || path[n - 1] == '/')
    return -1;
  for (size_t i = n - 1; i-- > 0;)
    if (path[i] == '/')
      return (int)i + 1;
  return -1;
}

static int fe_hex(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The next byte of the query-decoded [*p, e): `+` a space, %XX its byte, a bad escape as sent. */
static unsigned char fe_query_byte(const char **p, const char *e) {
  const unsigned char *s = (const unsigned char *)*p;
  if (*s == '+') {
    (*p)++;
    return ' ';
  }
  if (*s == '%' && e - *p >= 3) {
    int hi = fe_hex(s[1]), lo = fe_hex(s[2]);
    if (hi >= 0 && lo >= 0) {
      *p += 3;
      return (unsigned char)(hi << 4 | lo);
    }
  }
  (*p)++;
  return *s;
}

/* 1 when [s, e) decodes to name; 0 also when it decodes to "" (such pieces are skipped). */
static int fe_query_name_is(const char *s, const char *e, const char *name, size_t nlen) {
  size_t i = 0;
  /* Plain bytes first (the usual name has no escape), then decoding from the first `%` or `+`. */
  while (s < e && i < nlen && *s == name[i] && *s != '%' && *s != '+') {
    s++;
    i++;
  }
  if (s < e && *s != '%' && *s != '+')
    return 0;
  while (s < e) {
    if (i == nlen || fe_query_byte(&s, e) != (unsigned char)name[i])
      return 0;
    i++;
  }
  return i == nlen && nlen > 0;
}

int fe_lua_ffi_query_arg(const char *q, size_t qlen, const char *name, size_t nlen, char *out) {
  const char *p = q, *end = q + qlen, *vs = NULL, *ve = NULL;
  while (p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    if (!amp)
      amp = end;
    if (amp > p) {
      const char *eq = memchr(p, '=', (size_t)(amp - p));
      const char *ke = eq ? eq : amp;
      if (fe_query_name_is(p, ke, name, nlen)) {
        vs = eq ? eq + 1 : amp;
        ve = amp;
      }
    }
    p = amp + 1;
  }
  if (!vs)
    return -1;
  size_t o = 0;
  while (vs < ve)
    out[o++] = (char)fe_query_byte(&vs, ve);
  return (int)o;
}

int fe_lua_ffi_ip_parse(const char *s, size_t n, uint32_t w[4]) {
  char text[65];
  unsigned char b[16];
  if (n == 0 || n > 64)
    return 0;
  memcpy(text, s, n);
  text[n] = 0;
  int v6 = memchr(text, ':', n) != NULL;
  if (v6) {
    char *pct = strchr(text, '%'); /* zone id (fe80::1%eth0): not part of the address */
    if (pct)
      *pct = 0;
    if (inet_pton(AF_INET6, text, b) != 1)
      return 0;
  } else {
    memset(b, 0, 10);
    b[10] = b[11] = 0xff;
    if (inet_pton(AF_INET, text, b + 12) != 1)
      return 0;
  }
  for (int i = 0; i < 4; i++)
    w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 |
           b[4 * i + 3];
  return v6 ? 6 : 4;
}

int fe_lua_ffi_ip_in(const uint32_t *nets, int n, const char *s, size_t len) {
  uint32_t w[4];
  if (!fe_lua_ffi_ip_parse(s, len, w))
    return 0;
  for (int i = 0; i < n; i++, nets += 8)
    if ((w[0] & nets[4]) == nets[0] && (w[1] & nets[5]) == nets[1] && (w[2] & nets[6]) == nets[2] &&
        (w[3] & nets[7]) == nets[3])
      return 1;
  return 0;
}

static int fe_scheme_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '.' || c == '-';
}

int fe_lua_ffi_referer_host(const char *ref, size_t len, char *out, size_t cap) {
  const char *p = ref, *end = ref + len;
  for (const char *s = ref; (s = memchr(s, ':', (size_t)(end - s))) && s + 3 <= end; s++) {
    if (s[1] == '/' && s[2] == '/') {
      const char *c = ref;
      while (c < s && fe_scheme_byte((unsigned char)*c))
        c++;
      if (c == s)
        p = s + 3;
      break;
    }
  }
  const char *he = p;
  while (he < end && *he != '/' && *he != '?' && *he != '#')
    he++;
  for (const char *a = he; a > p; a--) /* userinfo: up to the last '@' */
    if (a[-1] == '@') {
      p = a;
      break;
    }
  if (p < he && *p == '[') {
    const char *close = memchr(p, ']', (size_t)(he - p));
    he = close ? close + 1 : p;
  } else {
    const char *colon = memchr(p, ':', (size_t)(he - p));
    if (colon)
      he = colon;
  }
  size_t n = (size_t)(he - p);
  if (n > 0 && p[n - 1] == '.')
    n--;
  if (n > cap)
    return -1;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return (int)n;
}

static unsigned char fe_lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Whether needle occurs in hay: memchr for its first byte, then memcmp. For the short strings
 * here (a header, a host) this beats glibc's memmem, whose setup cost more than the search. */
static int fe_contains(const char *hay, size_t n, const char *needle, size_t m) {
  if (m == 0)
    return 1;
  for (const char *p = hay, *last = hay + n; m <= (size_t)(last - p);) {
    p = memchr(p, needle[0], (size_t)(last - p) - m + 1);
    if (!p)
      return 0;
    if (memcmp(p + 1, needle + 1, m - 1) == 0)
      return 1;
    p++;
  }
  return 0;
}

int fe_lua_ffi_suffix_in(const char *host, size_t len, const char *set, size_t setlen) {
  char needle[260];
  if (len + 2 > sizeof(needle))
    return 0;
  for (size_t i = 0; i < len; i++) {
    if (host[i] != '.')
      continue;
    size_t n = len - i;
    needle[0] = '\n';
    memcpy(needle + 1, host + i, n);
    needle[n + 1] = '\n';
    if (fe_contains(set, setlen, needle, n + 2))
      return 1;
  }
  return 0;
}

int fe_lua_ffi_find_any(const char *s, size_t len, const char *set, size_t setlen, int ci) {
  const unsigned char *u = (const unsigned char *)s;
  char low[1024];
  if (ci && len <= sizeof(low)) { /* the usual User-Agent: lowercase it once, then search */
    for (size_t i = 0; i < len; i++)
      low[i] = (char)fe_lower(u[i]);
    s = low;
    ci = 0;
  }
  for (size_t k = 0; k < setlen;) {
    size_t n = (unsigned char)set[k];
    const unsigned char *lit = (const unsigned char *)set + k + 1;
    k += 1 + n;
    if (n == 0 || k > setlen || n > len)
      continue;
    if (!ci) {
      if (fe_contains(s, len, (const char *)lit, n))
        return 1;
      continue;
    }
    for (size_t i = 0; i + n <= len; i++) {
      if (fe_lower(u[i]) != lit[0])
        continue;
      size_t j = 1;
      while (j < n && fe_lower(u[i + j]) == lit[j])
        j++;
      if (j == n)
        return 1;
    }
  }
  return 0;
}
