#include "str/fe_str.h"

#include <strings.h>

const fe_span *fe_header_find(const char *base, const fe_header *h, int n, const char *name,
                              size_t nlen) {
  for (int i = 0; i < n; i++)
    if (h[i].name.len == nlen && strncasecmp(base + h[i].name.off, name, nlen) == 0)
      return &h[i].value;
  return NULL;
}

int fe_str_visible(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7F)
      return 0;
  return 1;
}

size_t fe_str_escape(char *out, size_t cap, const char *s, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7F) {
      if (n + 4 >= cap)
        break;
      out[n++] = '\\';
      out[n++] = 'x';
      out[n++] = hex[ch >> 4];
      out[n++] = hex[ch & 15];
    } else {
      if (n + 1 >= cap)
        break;
      out[n++] = (char)ch;
    }
  }
  out[n] = 0;
  return n;
}
