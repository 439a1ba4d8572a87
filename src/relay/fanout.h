/* fanout.h - fan-out services (SPEC section 4): every byte any input sends
 * goes to every output connected when it arrives.
 *
 * One `struct fanout` per service with `mode: fanout`, on worker 0 only (the
 * other workers skip fan-out services: a shared log is only cheap inside one
 * thread).  It owns its listeners (the shared port, role ports), its dialers
 * (inputs.connect / outputs.connect, redialed with backoff), a slab of
 * connection objects made at init, and the shared slice log of framer.h.
 * It talks to the network only through the engine interface, so it runs on
 * every engine.
 *
 * A service keeps its own copy of what it needs of the configuration, so a
 * SIGHUP reload never pulls memory from under it.  A reload
 * (fanout_group_reload) keeps a service whose sockets and sizes are
 * unchanged, changing its peer lists (from, allow, deny) and timeouts in
 * place; otherwise it starts a new instance that takes over the running
 * listening sockets (no connection attempt meets a closed port) and retires
 * the old one, whose connections end as at shutdown; a retired instance is
 * freed once its last connection is gone (fanout_group_reap).  The counters
 * of a name are those of all its instances.
 *
 * Sizing: main gives worker 0's pool, socket table and timer heap twice
 * fanout_sizes() plus a spare (group.reserve), so that a reload can run new
 * instances beside retiring ones.  Nothing is allocated on the data path.
 */
#ifndef FERRY_RELAY_FANOUT_H
#define FERRY_RELAY_FANOUT_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"

struct fanout;

/* Counters of one service for the metrics endpoint (SPEC section 5). */
struct fanout_stats {
	uint64_t inputs;          /* connected now */
	uint64_t outputs;         /* connected now: ferry_fanout_outputs */
	uint64_t bytes_in;        /* received from inputs */
	uint64_t bytes_out;       /* sent to outputs, all together */
	uint64_t records;         /* line framing: records delivered to the log */
	uint64_t dropped_records; /* ferry_fanout_dropped_records_total (on_lag: drop) */
	uint64_t disconnects;     /* ferry_fanout_disconnects_total: outputs closed for lag */
	uint64_t rejected;        /* peers closed at accept (no role, acl, limit) */
	uint64_t too_long;        /* inputs closed for a record over max_line */
};

/* What one service needs from worker 0's pool, socket table and timer heap. */
uint32_t fanout_pool_buffers(const struct config *cfg, const struct cfg_service *svc);
uint32_t fanout_max_sockets(const struct config *cfg, const struct cfg_service *svc);
uint32_t fanout_max_timers(const struct config *cfg, const struct cfg_service *svc);

/* Builds the service: copies what it needs of cfg and svc, makes the slab
 * and the log, binds every listener (retrying a busy port for bind_timeout)
 * and starts the dialers.  Borrows eng.  Returns 0 and the service in *out,
 * or -1 with a message naming the address in err (nothing is left open). */
int fanout_init(struct fanout **out, const struct config *cfg, const struct cfg_service *svc,
                struct engine *eng, char *err, size_t len);

/* SIGINT/SIGTERM: closes the listeners and stops dialing at once.  Open
 * connections go on for up to shutdown_timeout: inputs until they end;
 * outputs until every input is gone and they have been sent what is queued
 * for them; then the rest are closed. */
void fanout_shutdown(struct fanout *f);

/* Connections and listeners not yet released by the engine: the loop may
 * stop when this is 0 after fanout_shutdown(). */
unsigned fanout_active(const struct fanout *f);

/* A copy of the counters; they are written by worker 0 only, with relaxed
 * atomics, so another thread may call this. */
void fanout_stats(const struct fanout *f, struct fanout_stats *out);

/* From any thread: the counters of the running fan-out service `name`
 * (zeros and false when there is none). */
bool fanout_stats_by_name(const char *name, struct fanout_stats *out);
const char *fanout_name(const struct fanout *f);

/* Frees the service (after the loop stopped).  Gives back every buffer. */
void fanout_fini(struct fanout *f);

/* --- every fan-out service of a config, for main ------------------------ */

struct fanout_sizes {
	uint32_t buffers, sockets, timers;
};

struct fanout_group {
	struct fanout **svcs; /* running ones, then any retired by a reload */
	size_t n;
	struct fanout_sizes reserve; /* worker 0's room for fan-out (set by main) */
};

/* Sums the needs of every fan-out service of cfg (zero when none). */
void fanout_sizes(const struct config *cfg, struct fanout_sizes *out);

/* What worker 0 sets aside for fan-out services: twice fanout_sizes() and a
 * spare for services added by a reload. */
void fanout_reserve(const struct config *cfg, struct fanout_sizes *out);

/* fanout_init() for every fan-out service of cfg.  0, or -1 with err set
 * (the services already built are freed). */
int fanout_group_init(struct fanout_group *g, const struct config *cfg, struct engine *eng,
                      char *err, size_t len);
void fanout_group_shutdown(struct fanout_group *g);
/* SIGHUP, on worker 0: brings the group to cfg's fan-out services (kept,
 * changed in place, replaced, added or removed; see the top of this file).
 * A service that cannot be built is logged (reload_failed, naming it) and
 * the running one, if any, kept.  -1 only when nothing could be done. */
int fanout_group_reload(struct fanout_group *g, const struct config *cfg, struct engine *eng);
/* Frees retired instances whose connections have all ended (worker 0's
 * tick). */
void fanout_group_reap(struct fanout_group *g);
/* Sum of fanout_active(); takes the group as void * so that it can serve as
 * the relay's `busy` hook. */
unsigned fanout_group_busy(void *g);
/* Safe on a zeroed group. */
void fanout_group_fini(struct fanout_group *g);

#endif
