/* resolve.h - host names in backend and target addresses, resolved without
 * ever blocking an event loop and re-resolved every resolve_interval (SPEC
 * section 2: "every address it resolves to is a backend").
 *
 * Why a thread: c-ares needs its sockets watched and its timeouts run, and
 * ferry's engines have no generic descriptor-watch API (io_uring and epoll
 * would each need one).  So one dedicated resolver thread owns the c-ares
 * channel and may block in poll(2); the event loops only ever swap a pointer.
 *
 * Life of a resolver:
 *
 *   r = resolver_start(&opts, err, len);     names copied; thread started;
 *                                            the first pass begins at once
 *   resolver_wait(r, ms, &res, err, len);    start-up only: blocks until the
 *                                            first pass is over, then fails
 *                                            naming the first host without
 *                                            an address (ferry exits 1)
 *   ... opts.notify(arg) from the resolver thread ...
 *   resolver_take(r, &res);                  event loop: 1 and a new set, or
 *                                            0 when nothing changed
 *   resolver_stop(r);                        wakes and joins the thread
 *
 * Passes: every name is looked up in parallel (ares_getaddrinfo, AF_UNSPEC:
 * A and AAAA; /etc/hosts then DNS as /etc/resolv.conf says, or only the DNS
 * server of opts.server; an address literal such as "10.0.0.1" is taken as
 * it is, without a lookup).  A pass starts `interval_ms` after the previous
 * one started (at once when it lasted longer); passes never overlap.  The
 * channel is built again before each pass, so an edited /etc/resolv.conf is
 * picked up.  A pass is bounded by c-ares' own timeout and tries (per-try
 * timeout doubling, about 3 s worst case with the defaults and one server)
 * and, as a backstop, by RESOLVE_PASS_MAX_MS, after which the lookups still
 * running are cancelled and count as failed.
 *
 * Results: a `struct resolve_result` holds every distinct name, in the order
 * first given, with its addresses: IPv4 before IPv6, each family sorted by
 * address bytes, duplicates removed, at most RESOLVE_MAX_ADDRS (the lowest
 * ones are kept, `truncated` is set), ports 0: the module resolves names
 * only, the caller keeps its ports.  The sorted order makes a DNS server
 * that rotates its answers produce no change.  A name whose lookup fails
 * keeps the addresses of its last success with status RESOLVE_FAILED and the
 * reason in `error`; a name that never resolved has no addresses.
 *
 * A new set is published after the first pass and after every pass in which
 * some name changed its addresses or its status (not when only the reason of
 * a failure changed).  Each transition is logged once, by the resolver
 * thread, one write per line (core/log.h):
 *
 *   warn event=resolve_failed host=db.internal error="Domain name not found" kept=2
 *   info event=resolve_recovered host=db.internal addresses=10.0.0.1,10.0.0.2
 *   info event=resolve_changed host=db.internal addresses=10.0.0.1,10.0.0.3
 *
 * The first pass logs only at debug: start-up failures are the caller's to
 * report (resolve_result_check builds the message).
 *
 * Threads and ownership: resolver_start, resolver_wait and resolver_stop run
 * on one control thread (they are not safe against each other: c-ares'
 * library init is not thread-safe in 1.18).  resolver_take may run on any one
 * thread (the consumer), concurrently with the resolver thread; it never
 * waits for network I/O: the resolver's mutex only guards a pointer swap.
 * A set returned by resolver_take or resolver_wait belongs to the caller,
 * who frees it with resolve_result_free(); it is one allocation and stays
 * valid after resolver_stop.  The notify callback runs on the resolver
 * thread with no lock held, after the set was published; it must be cheap
 * and thread-safe (write an eventfd, signal worker 0).  The resolver thread
 * blocks every signal, so process signals never land on it.
 */
#ifndef FERRY_CORE_RESOLVE_H
#define FERRY_CORE_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RESOLVE_MAX_NAMES   1024  /* distinct names per resolver */
#define RESOLVE_MAX_ADDRS   64    /* addresses kept per name */
#define RESOLVE_NAME_MAX    253   /* longest DNS name, without the final dot */
#define RESOLVE_ERR_MAX     96    /* room for a failure reason */
#define RESOLVE_TIMEOUT_MS  1000  /* default first per-try timeout */
#define RESOLVE_TRIES       2     /* default tries per server */
#define RESOLVE_PASS_MAX_MS 30000 /* backstop: lookups cancelled after this */

enum resolve_status {
	RESOLVE_OK = 0, /* the last lookup gave at least one address */
	RESOLVE_FAILED, /* it did not: `addrs` are those of the last success */
};

struct resolve_entry {
	const char *name; /* as given to resolver_start; points into the set */
	enum resolve_status status;
	char error[RESOLVE_ERR_MAX]; /* RESOLVE_FAILED: why (c-ares' text) */
	bool truncated;              /* more than RESOLVE_MAX_ADDRS answered */
	size_t n_addrs;
	const struct sockaddr_storage *addrs; /* points into the set; port 0 */
};

/* One complete result set: a single allocation, freed whole. */
struct resolve_result {
	uint64_t generation; /* 1 for the first pass, +1 per published set */
	size_t n;            /* distinct names */
	struct resolve_entry entries[];
};

struct resolver_opts {
	const char *const *names;  /* borrowed; copied by resolver_start */
	size_t n_names;            /* 1..; duplicates are merged */
	uint64_t interval_ms;      /* > 0: time between pass starts */
	const char *server;        /* NULL: system (resolv.conf, hosts); else
	                            * "127.0.0.1:5353" or "[::1]:5353" (tests):
	                            * that server only, no search domains */
	unsigned timeout_ms;       /* first per-try timeout; 0: RESOLVE_TIMEOUT_MS */
	unsigned tries;            /* 0: RESOLVE_TRIES */
	void (*notify)(void *arg); /* optional; resolver thread, no lock held */
	void *notify_arg;
};

/* Copies the names, builds the c-ares channel and starts the resolver
 * thread, which begins the first pass at once.  Does no network I/O itself
 * (it reads /etc/resolv.conf).  Returns the resolver, or NULL with errno set
 * and a message in err: EINVAL (no names, an empty or too long name, zero
 * interval, a bad server), E2BIG (more than RESOLVE_MAX_NAMES names), ENOMEM,
 * EIO (c-ares could not initialise), or pthread_create's error. */
struct resolver *resolver_start(const struct resolver_opts *o, char *err, size_t len);

/* Start-up: blocks up to timeout_ms for the first pass, then takes its set
 * (as resolver_take) and checks it with resolve_result_check.  Returns 0 and
 * gives the set to *out (caller frees); -ENOENT with err naming the first
 * host without an address, or -ETIMEDOUT; *out is NULL on error.  Call it
 * before any resolver_take. */
int resolver_wait(struct resolver *r, uint64_t timeout_ms, struct resolve_result **out, char *err,
                  size_t len);

/* Event loop: 1 and the newest set published since the last take (owned by
 * the caller), or 0 and *out NULL when there is none.  Sets published in
 * between are dropped: every set is complete, only the newest matters. */
int resolver_take(struct resolver *r, struct resolve_result **out);

/* Wakes the resolver thread, cancels its lookups, joins it (bounded: it
 * polls an eventfd alongside the c-ares sockets) and frees everything,
 * including a set nobody took.  NULL is a no-op.  notify is not called after
 * resolver_stop returns. */
void resolver_stop(struct resolver *r);

/* Borrows res: 0 when every name has at least one address, else -ENOENT and
 * "host 'NAME' does not resolve: REASON" in err for the first one that has
 * none. */
int resolve_result_check(const struct resolve_result *res, char *err, size_t len);

/* Borrows res: the entry of `name` (exact match), or NULL. */
const struct resolve_entry *resolve_result_find(const struct resolve_result *res, const char *name);

/* Frees a set from resolver_take or resolver_wait; NULL is a no-op. */
void resolve_result_free(struct resolve_result *res);

#endif
