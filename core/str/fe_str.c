#include "str/fe_str.h"

#include <strings.h>

const fe_span *fe_header_find(const char *base, const fe_header *h, int n, const char *name,
                              size_t nlen) {
  for (int i = 0; i < n; i++)
    if (h[i].name.len == nlen && strncasecmp(base + h[i].name.off, name, nlen) == 0)
      return &h[i].value;
  return NULL;
}
