/* proxy.h - the relay core for proxy services (SPEC section 3).
 *
 * A `struct relay` owns, for one worker: the services with their backends and
 * balancers, the listening sockets, and a preallocated slab of sessions (one
 * per allowed client connection).  It talks to the network only through the
 * engine interface, so it runs unchanged on every engine.
 */
#ifndef FERRY_RELAY_PROXY_H
#define FERRY_RELAY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"
#include "lb/lb.h"

/* Buffers in flight per direction of one connection: the window.  Reading
 * from a side stops while its direction holds this many buffers. */
#define RELAY_WINDOW 4

struct relay;
struct session;
struct mconn;

/* Shared state and reloads.
 *
 * A configuration generation (`struct relay_shared`) is built from one
 * loaded file and never changes once published; a reload builds a new one.
 * What must survive a reload is kept in objects that generations point to
 * and that a new generation takes over by name: a service's counters and
 * connection count (`svc_state`), a backend's connection count and failures
 * (`backend_rt`, by service and address), a mirror's counters (`mirror_rt`).
 * Each object counts the generations holding it; a generation counts the
 * workers' views of it (and readers such as the admin endpoint); a worker's
 * view (`struct wgen`) counts the sessions that started under it.  Whatever
 * the last holder lets go of is freed, so established connections keep
 * everything they use while new connections see the new configuration. */

/* A backend of a service, shared by every worker. */
struct backend_rt {
	struct lb_backend lb;
	const struct cfg_backend *cfg; /* == &own */
	struct cfg_backend own;        /* copy, address text owned */
	_Atomic uint64_t connect_failures;
	_Atomic uint32_t health; /* health.c: streaks and down bit, packed; 0: up */
	_Atomic unsigned refs;   /* generations holding it */
};

/* A mirror of a service, shared by every worker: its counters. */
struct mirror_rt {
	const struct cfg_mirror *cfg; /* == &own */
	struct cfg_mirror own;
	_Atomic uint64_t seq;         /* client connections seen, for `sample` */
	_Atomic uint64_t bytes;       /* sent to the mirror */
	_Atomic uint64_t disconnects; /* mirror connections that ended early */
	_Atomic unsigned active;      /* mirror connections open */
	_Atomic unsigned refs;
};

/* Counters of SPEC section 5, added to by every worker with relaxed atomics
 * and read by the admin endpoint without locks. */
struct svc_counters {
	_Atomic uint64_t connections_total; /* every accepted client, rejected too */
	_Atomic uint64_t bytes_in;          /* received from clients */
	_Atomic uint64_t bytes_out;         /* sent to clients */
	_Atomic uint64_t rejected_limit, rejected_acl, rejected_no_backend;
};

/* Fan-out services' counters (SPEC section 5). */
struct fanout_counters {
	_Atomic unsigned inputs, outputs; /* connected now */
	_Atomic uint64_t dropped_records; /* on_lag: drop */
	_Atomic uint64_t disconnects;     /* outputs closed for lagging */
	_Atomic uint64_t bytes_in;        /* received from inputs */
};

/* What a service keeps across reloads. */
struct svc_state {
	char *name;
	_Atomic unsigned active; /* client connections open, all workers */
	struct svc_counters ctr;
	struct fanout_counters fo;
	_Atomic unsigned refs;
};

/* A service in one generation. */
struct shared_service {
	const struct cfg_service *cfg;
	struct svc_state *st;
	struct backend_rt **backends;
	struct lb_backend **lbp;
	size_t n_backends;
	struct mirror_rt **mirrors;
	size_t n_mirrors;
};

/* One configuration generation, shared by every worker. */
struct relay_shared {
	struct config *cfg; /* owned */
	struct shared_service *svcs;
	size_t n_svcs;
	uint64_t gen;
	_Atomic unsigned refs;
};

/* One worker's view of a generation: its services with their balancers. */
struct wgen {
	struct relay_shared *sh;
	struct service_rt *svcs;
	size_t n_svcs;
	unsigned users; /* sessions and mirror connections started under it */
	struct wgen *next_retired;
};

/* One worker's view of a service. */
struct service_rt {
	const struct cfg_service *cfg;
	struct relay *relay;
	struct wgen *wg;
	struct shared_service *sh;
	struct backend_rt **backends; /* == sh->backends */
	size_t n_backends;
	struct lb lb;
	unsigned active; /* this worker's client connections */
	/* clients waiting for a backend slot (queue_timeout), oldest first */
	struct session *queue_head, *queue_tail;
};

/* A listening socket; it survives a reload that keeps its address. */
struct listener_rt {
	struct relay *relay;
	struct service_rt *svc;
	char *text; /* address as written, owned */
	struct sockaddr_storage sa;
	socklen_t salen;
	bool wildcard;
	struct esock *es;
	int fd;
	bool paused;
	struct timer resume; /* accept pause after EMFILE */
};

struct relay {
	struct config *cfg; /* the current generation's */
	struct engine *eng;
	unsigned worker;
	unsigned n_workers;
	struct wgen *cur;
	struct wgen *retired; /* older views still used by sessions */
	struct listener_rt **listeners;
	size_t n_listeners;
	/* a reload prepared by worker 0 for this worker to apply */
	struct relay_shared *_Atomic pending;
	int *pending_fds; /* per listen address of the pending config; -1: reuse */
	struct session *slab;
	uint32_t n_slab;
	uint32_t *free; /* stack of free session indices */
	uint32_t nfree;
	/* mirror connections: a slab apart from sessions, because a mirror
	 * may outlive its client while it drains what it was sent */
	struct mconn *mslab;
	uint32_t n_mslab;
	uint32_t *mfree;
	uint32_t nmfree;
	struct buf **mring; /* n_mslab rings of mring_cap entries */
	uint32_t mring_cap;
	unsigned mirrors_open;
	unsigned listeners_closing; /* closed, not yet released by the engine */
	unsigned active;            /* client connections open, all services */
	unsigned releasing;         /* sessions closed, sockets not yet released */
	bool accept_warned;         /* EMFILE logged for the current episode */
	bool shutting_down;
	struct timer shutdown_timer;
	/* Other work of this loop (fan-out connections) that must end before
	 * a shutdown stops it: a count, 0 when done.  NULL: none. */
	unsigned (*busy)(void *arg);
	void *busy_arg;
};

/* Sizes a relay needs from its engine and pool for this config. */
uint32_t relay_max_sockets(const struct config *cfg);
uint32_t relay_max_timers(const struct config *cfg);
uint32_t relay_pool_buffers(const struct config *cfg);

/* Builds the first generation from cfg (the generation owns cfg from then
 * on) and makes it current.  0, or -1 with a message in err. */
int relay_shared_create(struct config *cfg, struct relay_shared **out, char *err, size_t len);

/* The current generation, with a reference for the caller (the admin
 * endpoint); give it back with relay_shared_release(). */
struct relay_shared *relay_current_acquire(void);
void relay_shared_release(struct relay_shared *sh);

/* Connection counter of the global max_connections, all workers. */
extern _Atomic unsigned relay_active_total;

/* Builds one worker's relay for generation sh.  Borrows eng.  Returns 0,
 * or -1 with a message in err. */
int relay_init(struct relay *r, struct relay_shared *sh, struct engine *eng, unsigned worker,
               unsigned n_workers, char *err, size_t len);

/* Binds and starts every listener (retrying a busy port for bind_timeout);
 * with several workers each binds its own sockets with SO_REUSEPORT.
 * Returns 0, or -1 with a message naming the address in err. */
int relay_listen(struct relay *r, char *err, size_t len);

/* SIGHUP (or new DNS answers), on worker 0: builds a new generation from
 * cfg (taken over in every case) and binds the listeners it adds for every
 * worker.  On success each worker's `pending` is set (worker 0 applies its
 * own at once; the caller wakes the others) and 0 is returned; on failure
 * nothing changes and -1 comes back with the reason in err; -2 when a
 * previous reload is still being applied (see relay_reload_busy). */
int relay_reload(struct relay **workers, unsigned n, struct config *cfg, char *err, size_t len);
bool relay_reload_busy(struct relay **workers, unsigned n);

/* Worker 0: the latest addresses of the host names in backend and mirror
 * addresses (taken over; NULL: none).  The next generation built uses
 * them: every address of a name is a backend "name:port@address". */
struct resolve_result;
void relay_set_resolved(struct resolve_result *res);
/* Worker 0: the latest answer for a's host name ("name:port"; NULL for a
 * numeric address or before any answer), and the port written after it. */
struct resolve_entry;
const struct resolve_entry *relay_resolved_entry(const struct cfg_addr *a, unsigned *port);
/* One resolved address of `named`: ip with `port`, its text
 * "name:port@address" written into text (len bytes) and pointed at. */
void relay_resolved_addr(const struct cfg_addr *named, const struct sockaddr_storage *ip,
                         unsigned port, struct cfg_addr *out, char *text, size_t len);

/* Opens, binds and listens on a listening socket for `service`'s address a
 * (SO_REUSEPORT when reuseport: one socket per worker).  A busy port is
 * retried for bind_timeout_ms (0 at reload: worker 0's loop must not sleep).
 * Returns the descriptor, or -1 with a message naming the address. */
int relay_listen_socket(const struct cfg_addr *a, const char *service, bool reuseport,
                        uint64_t bind_timeout_ms, char *err, size_t len);

/* The set relay_set_resolved() gave (NULL before any); worker 0's thread. */
const struct resolve_result *relay_resolved(void);

/* In each worker's loop: switches to a pending generation, if any. */
void relay_apply_pending(struct relay *r);

/* First SIGINT/SIGTERM: closes the listeners, lets connections finish for
 * shutdown_timeout, then closes the rest; stops the engine when none is
 * left. */
void relay_shutdown(struct relay *r);

/* Stops the engine if shutting down and nothing (busy hook included) is
 * left; for owners of `busy` work, called when that work may have ended. */
void relay_maybe_stop(struct relay *r);

void relay_fini(struct relay *r);

/* At exit, after every relay_fini(): lets go of the current generation. */
void relay_shared_drop_current(void);

#endif
