/* admin.h - the admin HTTP endpoint (SPEC section 5, config `admin.listen`).
 *
 *   GET  /metrics                                   Prometheus text format 0.0.4
 *   GET  /status                                    JSON
 *   POST /services/NAME/backends/ADDRESS/drain      200 + the backend's JSON
 *   POST /services/NAME/backends/ADDRESS/enable
 *
 * Two layers, so that the HTTP library stays out of the logic:
 *   - admin_route() is the whole endpoint as a function of (shared state,
 *     method, request target): no sockets, no library, safe on any input
 *     string.  The unit tests and the fuzzer drive it directly.
 *   - admin_start() puts it behind libmicrohttpd on a thread of its own
 *     (bounded connections, a connection timeout), so a slow or hostile
 *     admin client never touches the workers' event loops.
 *
 * Concurrency: the endpoint reads the generation's counters with relaxed
 * atomic loads; the only lock it takes is the generation lock of
 * relay_current_acquire() (a pointer read; workers take it only to publish a
 * reload).  Drain/enable is one atomic store of `lb.drained`, which the
 * balancers read on their next pick.  A backend keeps its drain state across a reload that keeps it
 * (backend_rt survives reloads by address).
 *
 * Choices the SPEC leaves open, made here:
 *   - connection metrics (ferry_connections_*, ferry_bytes_total) are emitted
 *     for proxy services only; fan-out services have the ferry_fanout_*
 *     metrics instead.  Every metric family gets its HELP and TYPE lines even
 *     when it has no sample (no mirrors configured, no fan-out service).
 *   - /status always has "inputs" and "outputs": connected counts for a
 *     fan-out service, 0 for a proxy service; "backends" and "mirrors" are
 *     always present ([] when none).
 *   - a backend's state is "drain" when drained, whatever its health, else
 *     "up" or "down"; ferry_backend_up stays 1 for a healthy drained backend.
 *   - HEAD is answered like GET; GET/HEAD are the only methods of /metrics
 *     and /status, POST the only one of drain/enable; another method on one of
 *     these paths is 405 with an Allow header.  Unknown paths are 404.  A
 *     request target that is not a path, or a NAME/ADDRESS with a bad percent
 *     escape (or an escaped NUL), is 400.  Every error body is JSON
 *     {"error": "..."}.  The query string, if any, is ignored.
 *   - NAME and ADDRESS are percent-decoded (ADDRESS as written in the file:
 *     127.0.0.1%3A9001, %5B%3A%3A1%5D%3A9001); '+' is a literal '+'.  Every
 *     backend of the service with that address is changed.
 */
#ifndef FERRY_ADMIN_ADMIN_H
#define FERRY_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "relay/proxy.h"

/* Largest body admin_route() builds; past it the reply is a 500 (a config
 * would need tens of thousands of backends to get there). */
#define ADMIN_BODY_MAX (64u << 20)

/* Connections the HTTP thread serves at once, and how long an idle or slow
 * one may stay (seconds). */
#define ADMIN_MAX_CONNECTIONS 32
#define ADMIN_CONN_TIMEOUT_S  10

/* What admin_route() answers.  `body` is malloc'd and owned by the reply
 * (NUL-terminated, `len` bytes before the NUL), NULL when empty; release it
 * with admin_reply_free(), or take it by setting body to NULL. */
struct admin_reply {
	int status;
	const char *content_type; /* static string */
	const char *allow;        /* static; the route's methods on a 405, else NULL */
	char *body;
	size_t len, cap;
	bool nomem; /* building the body failed */
};

/* Answers one request.  `sh` is borrowed for the call (NULL: no generation
 * yet, every known route answers 503); `method` and `url` are any
 * NUL-terminated strings (NULL is a 400), `url` the request target as
 * received, not yet percent-decoded.  *out is overwritten (not freed first).
 * It is the fuzzing target: tests/unit/fuzz_seeds/admin/ holds seed inputs,
 * each one request line "METHOD SP TARGET" without a line end.
 * Returns 0, or -ENOMEM when the body could not be built: *out is then a
 * 500 with no body (the HTTP layer sends a fixed one). */
int admin_route(struct relay_shared *sh, const char *method, const char *url,
                struct admin_reply *out);

void admin_reply_free(struct admin_reply *r);

struct admin;

/* Binds sa (SO_REUSEADDR; an IPv6 wildcard also takes IPv4) and starts the
 * HTTP thread, with every signal blocked in it so signals keep going to the
 * workers.  Each request is served from the current generation
 * (relay_current_acquire()), so reloads show at once; `sh`, which may be
 * NULL, is served while no generation is current, and the endpoint holds a
 * reference on it until admin_stop().  Returns 0 and *out, or -errno with a
 * message naming the address and the reason in err. */
int admin_start(struct admin **out, const struct sockaddr *sa, socklen_t salen,
                struct relay_shared *sh, char *err, size_t errlen);

/* Stops the thread (waiting for requests being answered), closes the
 * socket, and lets go of the reference admin_start() took.  NULL is a
 * no-op. */
void admin_stop(struct admin *a);

#endif
