/*
 * fe_alog: an access log file written by its own thread, so a slow or full disk (or a FIFO nobody
 * reads) never stalls a loop. Each loop appends finished lines to its own chunk, with no lock;
 * a full chunk, or the loop's periodic flush, hands it to the writer's queue under a mutex the
 * writer holds only to take the queue, never across open() or write(). The queue is bounded: a
 * chunk that does not fit is dropped whole and its lines are reported to the loop that flushed
 * it (which counts them in its metrics). Lines the writer cannot write (a full disk: ENOSPC, a
 * file that does not open) are reported to the next loop that flushes. The file is opened by the
 * writer thread (opening a FIFO blocks until a reader comes) and reopened on fe_alog_reopen
 * (SIGUSR1, after logrotate renamed it).
 *
 * Refcounted across threads: every config generation that names the path holds a reference.
 * The last fe_alog_unref lets the writer drain the queue and end on its own; fe_alog_close waits
 * for that (bounded), for the process exit.
 */
#ifndef FE_ALOG_H
#define FE_ALOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct fe_alog fe_alog;

#define FE_ALOG_CHUNK (64u << 10)     /* a loop's chunk: handed over when this full */
#define FE_ALOG_QUEUE_MAX (8u << 20)  /* default bound of what is handed over and not written yet */

/**
 * Starts the writer of `path` ("stderr": the process's standard error) for `nloops` loops; at most
 * `queue_max` bytes wait for it (beyond, chunks are dropped).
 * The file is opened by the writer thread; failures are logged there (lines are then dropped).
 * NULL when out of memory or the thread cannot start.
 */
fe_alog *fe_alog_open(const char *path, int nloops, size_t queue_max);
void fe_alog_ref(fe_alog *a);
/** Drops a reference; at zero the writer writes what is queued and ends (not waited for). */
void fe_alog_unref(fe_alog *a);
/** Drops the caller's (last) reference and waits up to `seconds` for the writer to finish. */
void fe_alog_close(fe_alog *a, double seconds);
/** The path it was opened with. */
const char *fe_alog_path(const fe_alog *a);
/**
 * Loop `loop` appends one line (with its newline). Returns the lines dropped by a hand-off this
 * caused (the chunk was full and the queue too), else 0. Only loop `loop`'s thread calls this.
 */
uint32_t fe_alog_append(fe_alog *a, int loop, const char *line, size_t len);
/** Hands loop `loop`'s chunk to the writer. Returns the lines dropped (queue full, or lost by
 * the writer since the last flush of any loop), else 0. */
uint32_t fe_alog_flush(fe_alog *a, int loop);
/** Asks the writer to reopen the file before its next write (any thread). */
void fe_alog_reopen(fe_alog *a);

#endif
