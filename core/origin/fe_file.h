/*
 * fe_file: the FLV files of `file:` origins, read and indexed once per process and shared
 * read-only by every stream that plays them, on every loop. `file:one.flv` serves every stream
 * name from one file and `file:DIR/` a file per name: a thousand names of one file cost one copy
 * of it, not a thousand.
 *
 * The table is the node's, like the relay registry: one mutex, taken once when a stream's source
 * opens (in libuv's thread pool, where the file is read) and once when it closes; playing a file
 * reads the shared bytes without a lock. A file changed on disk (inode, size or mtime) is read
 * again for the streams that open after the change; those still playing the old copy keep it.
 */
#ifndef FE_FILE_H
#define FE_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fe_file_tag {
  uint32_t off, len, ts;
  uint8_t skip_on_loop; /* metadata and sequence headers go out on the first pass only */
} fe_file_tag;

/** A loaded file: read-only once fe_file_open returned it. */
typedef struct fe_file {
  const uint8_t *data;
  size_t len;
  const fe_file_tag *tags;
  size_t ntags;
  uint32_t loop_len;    /* one pass: first tag to last plus one typical frame gap */
  uint32_t max_size;    /* the largest tag's DataSize */
} fe_file;

typedef struct fe_files fe_files;

/** The node's table of loaded files. NULL when out of memory. */
fe_files *fe_files_new(void);
/** After every file was let go. */
void fe_files_free(fe_files *t);
/**
 * The file at `path`, loaded once: the copy already in use if the file is unchanged on disk, else
 * read and indexed now (blocking: call it from the thread pool; a second opener of a file being
 * read waits for it). `t` may be NULL: a private copy. Returns 0 with *out referenced, or a
 * FE_ORIGIN_E* error (ENOTFOUND, EFILE).
 */
int fe_file_open(fe_files *t, const char *path, const fe_file **out);
/** Lets go of a file from fe_file_open (same `t`); the last reference frees it. Any thread. */
void fe_file_unref(fe_files *t, const fe_file *f);

#endif
