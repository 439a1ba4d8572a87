/* health.h - backend health (SPEC section 3, "Health"): active checks run on
 * worker 0's loop, passive failures reported by every worker.
 *
 * A backend's health lives in its `struct backend_rt`, shared by every
 * worker and carried across reloads: one packed atomic word (`health`) holds
 * the failure and success streaks and the down bit, and `lb.up` mirrors the
 * down bit for the balancers.  Every transition is decided by one
 * compare-and-swap on that word, so exactly one thread sees it and logs it:
 *
 *   event=backend_down service=web backend=127.0.0.1:9001 reason="timeout"
 *   event=backend_up service=web backend=127.0.0.1:9001
 *
 * Streak rules (health_step):
 *   - a failure, active or passive, adds to the failure streak; `fall`
 *     consecutive failures mark an up backend down;
 *   - an active success clears the failure streak; `rise` consecutive
 *     active successes mark a down backend up;
 *   - a successful client connect (passive success) clears only the passive
 *     failures in the streak, as HAProxy's `observe layer4` resets its
 *     consecutive-error count: a refused connect or two between good ones do
 *     not add up to `fall`, yet a backend that accepts connections but fails
 *     its `expect` still goes down while clients reach it;
 *   - passive results never bring a backend up; a passive failure while it
 *     is down restarts its rise streak.
 * Without `health_check` nothing here ever marks a backend down.
 *
 * Active checks: a `struct health` owns one checker per checked backend,
 * allocated at init; nothing is allocated per check.  Each check connects
 * (timeout `timeout`), sends the PROXY header (v1 UNKNOWN / v2 LOCAL) when
 * the service's proxy_protocol is set and `send` when set, then reads until
 * `expect` is found (streaming search across receives); EOF or the timeout
 * first is a failure.  The first check runs at once, the next ones every
 * `interval` counted from the start of the previous one (at once when a
 * check lasted longer).  Sockets and timers go through the engine only, so
 * nothing blocks the loop.
 *
 * Reloads: the checkers belong to one configuration generation (they hold
 * a reference on it); health_reload() replaces them, and the state stays
 * in the backends that the new generation takes over.
 *
 * Threads: health_init/reload/stop/busy/fini on worker 0 (the thread of
 * the engine they were given); health_passive from any worker.
 */
#ifndef FERRY_RELAY_HEALTH_H
#define FERRY_RELAY_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct backend_rt;
struct cfg_health;
struct config;
struct engine;
struct health;
struct relay_shared;

/* --- the streak state machine (pure) --------------------------------------- */

struct health_state {
	unsigned fails;  /* consecutive failures, active and passive */
	unsigned pfails; /* of which passive (since the last success of either kind) */
	unsigned oks;    /* consecutive active successes while down */
	bool down;
};

enum health_src { HEALTH_ACTIVE = 0, HEALTH_PASSIVE };
enum health_change { HEALTH_SAME = 0, HEALTH_WENT_DOWN, HEALTH_WENT_UP };

/* Applies one result to *st (rules in the head comment); rise and fall are
 * at least 1.  Returns the transition it caused, if any. */
enum health_change health_step(struct health_state *st, unsigned rise, unsigned fall,
                               enum health_src src, bool ok);

/* The packed form kept in backend_rt.health (counts saturate at 255);
 * 0 is "up, no streak". */
uint32_t health_pack(const struct health_state *st);
void health_unpack(uint32_t word, struct health_state *st);

/* --- the streaming `expect` matcher (pure) ----------------------------------- */

/* Knuth-Morris-Pratt over a byte string: the state between receives is the
 * length of the pattern prefix matched so far, so a match split across any
 * number of buffers is found, and no byte is looked at twice. */
struct health_matcher {
	const uint8_t *pat; /* borrowed */
	size_t len;
	uint32_t *fail; /* len entries, owned */
};

/* Builds the table for pat[0..len) (borrowed; it must outlive m).  len 0
 * matches at once.  0 or -ENOMEM. */
int health_matcher_init(struct health_matcher *m, const void *pat, size_t len);
void health_matcher_fini(struct health_matcher *m);

/* Feeds n more bytes; *state starts at 0 for a new stream.  True when the
 * pattern has been seen (then *state is len). */
bool health_matcher_feed(const struct health_matcher *m, size_t *state, const void *data, size_t n);

/* --- sizes -------------------------------------------------------------------- */

/* What worker 0's engine needs on top of the relay's, for cfg: a socket
 * and a timer per checked backend, twice (after a reload the old checks
 * may still be closing while the new ones start, and the new file may
 * check more backends), and pool buffers (one receive in flight per
 * checker with `expect`).  A check that finds the engine's table full is
 * skipped with a warning, not counted against the backend. */
uint32_t health_sockets(const struct config *cfg);
uint32_t health_timers(const struct config *cfg);
uint32_t health_buffers(const struct config *cfg);

/* --- active checks -------------------------------------------------------------- */

/* Creates the checkers for generation sh (taking a reference on it) on
 * worker 0's engine `eng` (borrowed), and starts the first round of checks
 * at once.  Backends of services without `health_check` are forced up (a
 * reload may have removed the checks that marked them down).  Always
 * returns an object, with no checker when nothing is checked.  0, or
 * -errno with a message in err (-ENOMEM; -EINVAL when the PROXY header
 * cannot be built). */
int health_init(struct health **out, struct relay_shared *sh, struct engine *eng, char *err,
                size_t len);

/* SIGHUP, after the relay switched worker 0 to generation sh: checks the
 * new generation's backends from now on (first round at once; a backend
 * kept across the reload keeps its state, since that lives in its
 * backend_rt).  The old checkers' sockets close and are freed once the
 * engine released them (health_busy() counts them meanwhile).  On failure
 * (-errno, message in err; -ECANCELED after health_stop()) the old checks
 * keep running. */
int health_reload(struct health *h, struct relay_shared *sh, char *err, size_t len);

/* Stops checking: cancels the timers and closes the open check sockets.
 * The sockets are released by the engine on a later loop turn; until
 * health_busy() is 0 the engine must keep running.  Idempotent. */
void health_stop(struct health *h);

/* Check sockets not yet released by the engine (keep the engine running
 * while this is not 0 after health_stop()). */
unsigned health_busy(const struct health *h);

/* Frees the checkers and lets go of the generation.  Call once
 * health_busy() is 0, or after engine_fini().  NULL is fine. */
void health_fini(struct health *h);

/* --- passive results -------------------------------------------------------------- */

/* Every client connect result, from any worker: ok false for a failed or
 * timed-out connect, true for an established one.  `h` must be the `health`
 * member of the backend's service (&svc->health: the service's name for the
 * log line is found from it).  Does nothing when the service has no
 * health_check (nor for a backend that the current generation does not
 * check, after a reload removed its health_check).  Lock-free; an established connect to a backend
 * with a clean streak costs one atomic load. */
void health_passive(struct backend_rt *b, const struct cfg_health *h, bool ok);

#endif
