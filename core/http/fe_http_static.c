/*
 * Plain files from a directory: the player page and its scripts, a downloadable sample. Files are
 * read whole with one blocking read, which is fine for a few MB from the page cache (the answer
 * copies the body, or writes it to the socket at once, so the buffer is free again); FLV VOD with
 * ranges and an origin cache is the vod/ module's job, not this one's.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/fe_http_handlers.h"

#define FE_STATIC_MAX (64u << 20)

static const char *fe_static_type(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
      {".flv", "video/x-flv"},               {".png", "image/png"},
      {".svg", "image/svg+xml"},             {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"}, {".ico", "image/x-icon"},
  };
  const char *dot = strrchr(path, '.');
  for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
    if (strcmp(dot, types[i].ext) == 0)
      return types[i].type;
  return "application/octet-stream";
}

void fe_static_serve(fe_conn *c, const fe_resource *res, const char *path, size_t path_len) {
  int keep = fe_conn_keep_alive(c);
  char rel[1024];
  if (path_len >= sizeof(rel) - 16) {
    fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !keep);
    return;
  }
  memcpy(rel, path, path_len);
  rel[path_len] = 0;
  if (path_len == 0 || rel[path_len - 1] == '/')
    strcat(rel, "index.html");
  /* No way out of the root: no "..", no encoded characters. */
  if (strstr(rel, "..") || strchr(rel, '%') || rel[0] == '/') {
    fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !keep);
    return;
  }
  char full[2048];
  size_t root_len = strlen(res->root);
  if (root_len + 1 + strlen(rel) >= sizeof(full)) {
    fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !keep);
    return;
  }
  memcpy(full, res->root, root_len);
  full[root_len] = '/';
  strcpy(full + root_len + 1, rel);
  int fd = open(full, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > FE_STATIC_MAX) {
    if (fd >= 0)
      close(fd);
    fe_conn_respond(c, 404, NULL, NULL, "404 not found\n", 14, !keep);
    return;
  }
  size_t size = (size_t)st.st_size;
  /* A small file is read into one of the loop's buffers: no allocation per request. */
  fe_loop *loop = &c->w->loop;
  char *body = size <= FE_LOOP_BIG_BUF ? fe_loop_big_get(loop) : malloc(size ? size : 1);
  size_t got = 0;
  while (body && got < size) {
    ssize_t r = read(fd, body + got, size - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  if (body && got == size)
    fe_conn_respond(c, 200, fe_static_type(rel), "Cache-Control: max-age=60\r\nAccept-Ranges: none\r\n",
                    body, size, !keep);
  else
    fe_conn_respond(c, 500, NULL, NULL, "500 read error\n", 15, 1);
  if (size <= FE_LOOP_BIG_BUF)
    fe_loop_big_put(loop, body);
  else
    free(body);
}
