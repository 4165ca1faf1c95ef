#include "log/fe_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int fe_log_level = FE_LOG_INFO;

static const char *const fe_log_names[] = {"debug", "info", "warn", "error"};

void fe_log(int level, const char *fmt, ...) {
  if (level < fe_log_get_level())
    return;
  char line[2048];
  int n = snprintf(line, sizeof(line), level == FE_LOG_INFO ? "flvedge: " : "flvedge: [%s] ",
                   fe_log_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof(line) - 2)
    len = sizeof(line) - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}

int fe_log_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, fe_log_names[i]) == 0)
      return i;
  return -1;
}
