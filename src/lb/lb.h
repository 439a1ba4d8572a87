/* lb.h - backend selection for proxy services (SPEC section 3).
 *
 * A balancer chooses, per client connection, one backend among those that are
 * eligible: up, not drained, under their max_connections and not excluded by
 * the caller (backends already tried for this connection).
 *
 *   round_robin  smooth weighted round robin (nginx's algorithm)
 *   least_conn   fewest active connections relative to weight, ties in turn
 *   random       weighted power of two choices
 *   source_hash  Maglev consistent hashing of the client address; the table
 *                is keyed by each backend's address text, so the file order
 *                does not matter, and removing one of N backends moves only
 *                about 1/N of the keys.
 *
 * The balancer does not own the backends: it reads `struct lb_backend` through
 * the pointer array given to lb_init().  Backends are shared by every worker
 * (their `active` count is atomic); a `struct lb` belongs to one worker.
 */
#ifndef FERRY_LB_LB_H
#define FERRY_LB_LB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

/* Run-time view of one backend, kept by the relay. */
struct lb_backend {
	const char *key;          /* address as written: Maglev's key */
	_Atomic unsigned weight;          /* 1..256 (a reload may change it) */
	_Atomic unsigned max_connections; /* 0: unlimited */
	_Atomic unsigned active;  /* open connections now, all workers */
	_Atomic bool up;          /* health state (always true without checks) */
	_Atomic bool drained;     /* admin drain: no new connections */
};

/* Maglev lookup table size: a prime well above 100 x the backend count. */
#define LB_MAGLEV_SIZE 65537u

struct lb {
	enum balance_alg alg;
	struct lb_backend **b;
	size_t n;
	/* round_robin: current weights; least_conn: rotating tie start */
	int64_t *cur;
	size_t next;
	/* random: xorshift state */
	uint64_t rng;
	/* source_hash */
	uint32_t *maglev; /* LB_MAGLEV_SIZE entries, backend indices into b */
};

/* Builds the balancer for n backends (n >= 1).  Allocates its tables (at
 * start-up or reload, never per connection).  Returns 0 or -ENOMEM. */
int lb_init(struct lb *lb, enum balance_alg alg, struct lb_backend **backends, size_t n,
            uint64_t seed);
void lb_fini(struct lb *lb);

/* True when backend i can take a new connection now. */
bool lb_eligible(const struct lb_backend *b);

/* Picks a backend for a client.  `client` is the client's address (used by
 * source_hash, may be NULL for the others).  `exclude` is a bitmap of
 * backend indices to skip (bit i of exclude[i/64]), or NULL.  Returns the
 * index of the chosen backend, or -1 when no backend is eligible.  The caller
 * increments `active` itself when it connects. */
int lb_pick(struct lb *lb, const struct sockaddr *client, const uint64_t *exclude);

/* Maglev only: the backend index owning `key` ignoring eligibility (for tests
 * and for measuring key movement).  -1 when n == 0. */
int lb_maglev_lookup(const struct lb *lb, uint64_t key);

/* The 64-bit hash used for client addresses (address bytes only, not the
 * port, so a client keeps its backend across connections). */
uint64_t lb_hash_client(const struct sockaddr *client);

#endif
