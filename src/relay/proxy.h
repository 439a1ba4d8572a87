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

/* Backend state shared by every worker. */
struct backend_rt {
	struct lb_backend lb;
	const struct cfg_backend *cfg;
	_Atomic uint64_t connect_failures;
};

/* A mirror of a service, shared by every worker: its counters. */
struct mirror_rt {
	const struct cfg_mirror *cfg;
	_Atomic uint64_t seq;         /* client connections seen, for `sample` */
	_Atomic uint64_t bytes;       /* sent to the mirror */
	_Atomic uint64_t disconnects; /* mirror connections that ended early */
	_Atomic unsigned active;      /* mirror connections open */
};

/* What the workers share: connection counts that the limits apply to, the
 * backends and the mirrors.  Built once before the workers start. */
/* Counters of SPEC section 5, added to by every worker with relaxed atomics
 * and read by the admin endpoint without locks. */
struct svc_counters {
	_Atomic uint64_t connections_total; /* every accepted client, rejected too */
	_Atomic uint64_t bytes_in;          /* received from clients */
	_Atomic uint64_t bytes_out;         /* sent to clients */
	_Atomic uint64_t rejected_limit, rejected_acl, rejected_no_backend;
};

struct shared_service {
	const struct cfg_service *cfg;
	_Atomic unsigned active; /* client connections open, all workers */
	struct svc_counters ctr;
	struct backend_rt *backends;
	struct lb_backend **lbp;
	size_t n_backends;
	struct mirror_rt *mirrors;
	size_t n_mirrors;
};

struct relay_shared {
	const struct config *cfg;
	_Atomic unsigned active; /* client connections open, all services */
	struct shared_service *svcs;
	size_t n_svcs;
};

/* One worker's view of a service. */
struct service_rt {
	const struct cfg_service *cfg;
	struct relay *relay;
	struct shared_service *sh;
	struct backend_rt *backends; /* == sh->backends */
	size_t n_backends;
	struct lb lb;
	unsigned active; /* this worker's client connections */
	/* clients waiting for a backend slot (queue_timeout), oldest first */
	struct session *queue_head, *queue_tail;
};

struct listener_rt {
	struct service_rt *svc;
	const struct cfg_addr *addr;
	struct esock *es;
	int fd;
	bool paused;
	struct timer resume; /* accept pause after EMFILE */
};

struct relay {
	struct config *cfg;
	struct engine *eng;
	struct relay_shared *sh;
	unsigned worker;
	struct service_rt *svcs;
	size_t n_svcs;
	struct listener_rt *listeners;
	size_t n_listeners;
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
	unsigned active;    /* client connections open, all services */
	unsigned releasing; /* sessions closed, sockets not yet released */
	bool accept_warned; /* EMFILE logged for the current episode */
	bool shutting_down;
	struct timer shutdown_timer;
};

/* Sizes a relay needs from its engine and pool for this config. */
uint32_t relay_max_sockets(const struct config *cfg);
uint32_t relay_max_timers(const struct config *cfg);
uint32_t relay_pool_buffers(const struct config *cfg);

/* Builds the state every worker shares.  0, or -1 with a message in err. */
int relay_shared_init(struct relay_shared *sh, const struct config *cfg, char *err, size_t len);
void relay_shared_fini(struct relay_shared *sh);

/* Builds one worker's services, balancers and session slab.  Borrows cfg,
 * eng and sh.  Returns 0, or -1 with a message in err. */
int relay_init(struct relay *r, struct config *cfg, struct engine *eng, struct relay_shared *sh,
               unsigned worker, char *err, size_t len);

/* Binds and starts every listener (retrying a busy port for bind_timeout);
 * with several workers each binds its own sockets with SO_REUSEPORT.
 * Returns 0, or -1 with a message naming the address in err. */
int relay_listen(struct relay *r, char *err, size_t len);

/* First SIGINT/SIGTERM: closes the listeners, lets connections finish for
 * shutdown_timeout, then closes the rest; stops the engine when none is
 * left. */
void relay_shutdown(struct relay *r);

void relay_fini(struct relay *r);

#endif
