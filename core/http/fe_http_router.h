/* Internal to http/: from a complete request head to the handler of its resource's kind. */
#ifndef FE_HTTP_ROUTER_H
#define FE_HTTP_ROUTER_H

#include "http/fe_http_conn.h"

/**
 * Answers a request: OPTIONS, methods, the status endpoint, then the resource (by host and
 * longest prefix), its access policy and its kind's handler. Returns 0 to go on reading the
 * connection's next request, or HPE_PAUSED when it is answered for good or became a stream.
 */
int fe_router_route(fe_conn *c);
/** Renders the node's metrics (every loop's counters summed) into buf. */
size_t fe_router_metrics(const fe_worker *w, char *buf, size_t cap);

#endif
