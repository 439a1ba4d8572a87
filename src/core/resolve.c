/* resolve.c - the resolver thread: c-ares driven by poll(2), results handed
 * over as whole sets behind a pointer swap; see resolve.h.
 *
 * State split:
 *   - `struct name_state` (addresses, status, reason) and the channel are
 *     touched only by the resolver thread once resolver_start has returned
 *     (and by resolver_stop after the join);
 *   - `pending` and `first_done` are guarded by `lock`; the lock is held only
 *     to swap or read them, never across I/O, allocation or a free;
 *   - `wake_fd` (an eventfd) is written by resolver_stop and polled by the
 *     thread together with c-ares' sockets, so a stop never waits for a
 *     DNS timeout.
 */
#include "core/resolve.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* Longest "addresses=" list put in one log line (core/log.h caps the line). */
#define RESOLVE_LOG_ADDRS 1024

struct resolver;

/* One distinct name; resolver thread only (see the head comment). */
struct name_state {
	char *name;
	struct resolver *r; /* back pointer for the c-ares callback */
	enum resolve_status status;
	char error[RESOLVE_ERR_MAX];
	bool truncated;
	size_t n_addrs;
	struct sockaddr_storage *addrs; /* exactly n_addrs, sorted; NULL when 0 */
};

struct resolver {
	struct name_state *names;
	size_t n;
	uint64_t interval_ms;
	unsigned timeout_ms, tries;
	char *server; /* NULL: system configuration */
	void (*notify)(void *arg);
	void *notify_arg;

	/* resolver thread only */
	ares_channel channel;
	size_t in_flight;  /* lookups whose callback has not run */
	bool first_pass;   /* the first pass is running */
	bool changed;      /* a name changed since the last publish */
	bool channel_warn; /* a channel rebuild failure was logged */
	uint64_t generation;

	int wake_fd;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;            /* first_done became true */
	struct resolve_result *pending; /* lock: newest set nobody took */
	bool first_done;                /* lock: the first pass was published */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- addresses ------------------------------------------------------------- */

/* Total order: IPv4 before IPv6, then address bytes, then (IPv6) scope. */
static int addr_cmp(const void *pa, const void *pb)
{
	const struct sockaddr_storage *a = pa, *b = pb;
	if (a->ss_family != b->ss_family)
		return a->ss_family == AF_INET ? -1 : 1;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr));
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	int c = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	if (c)
		return c;
	return (x->sin6_scope_id > y->sin6_scope_id) - (x->sin6_scope_id < y->sin6_scope_id);
}

/* Copies one answer into a zeroed sockaddr_storage with port 0; false for a
 * family other than IPv4/IPv6 or a short address. */
static bool addr_copy(struct sockaddr_storage *out, const struct ares_addrinfo_node *n)
{
	memset(out, 0, sizeof(*out));
	if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)n->ai_addr;
		struct sockaddr_in *o = (void *)out;
		o->sin_family = AF_INET;
		o->sin_addr = in->sin_addr;
		return true;
	}
	if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in = (const void *)n->ai_addr;
		struct sockaddr_in6 *o = (void *)out;
		o->sin6_family = AF_INET6;
		o->sin6_addr = in->sin6_addr;
		o->sin6_scope_id = in->sin6_scope_id;
		return true;
	}
	return false;
}

/* "10.0.0.1,2001:db8::1" into buf, cut (with "...") when it does not fit. */
static void addrs_format(const struct sockaddr_storage *a, size_t n, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char ip[INET6_ADDRSTRLEN];
		const void *src =
		    a[i].ss_family == AF_INET
		        ? (const void *)&((const struct sockaddr_in *)&a[i])->sin_addr
		        : (const void *)&((const struct sockaddr_in6 *)&a[i])->sin6_addr;
		if (!inet_ntop(a[i].ss_family, src, ip, sizeof(ip)))
			snprintf(ip, sizeof(ip), "?");
		int w = snprintf(buf + used, len - used, "%s%s", i ? "," : "", ip);
		if (w < 0 || (size_t)w >= len - used) {
			if (len >= 4)
				memcpy(buf + len - 4, "...", 4);
			return;
		}
		used += (size_t)w;
	}
}

/* --- per-name transitions ----------------------------------------------------- */

static void log_addrs(enum log_level level, const char *event, const struct name_state *ns)
{
	struct logline l;
	char list[RESOLVE_LOG_ADDRS];

	if (!log_enabled(level))
		return;
	addrs_format(ns->addrs, ns->n_addrs, list, sizeof(list));
	log_begin(&l, level, event);
	log_str(&l, "host", ns->name);
	log_str(&l, "addresses", list);
	if (ns->truncated)
		log_u64(&l, "kept", ns->n_addrs);
	log_end(&l);
}

/* A lookup gave `n` sorted, distinct addresses; takes `addrs` (malloc'd). */
static void name_success(struct name_state *ns, struct sockaddr_storage *addrs, size_t n,
                         bool truncated)
{
	struct resolver *r = ns->r;
	bool same = n == ns->n_addrs;
	for (size_t i = 0; same && i < n; i++)
		same = addr_cmp(&addrs[i], &ns->addrs[i]) == 0;
	enum resolve_status before = ns->status;

	ns->status = RESOLVE_OK;
	ns->error[0] = '\0';
	ns->truncated = truncated;
	if (same) {
		free(addrs);
	} else {
		free(ns->addrs);
		ns->addrs = addrs;
		ns->n_addrs = n;
	}
	if (r->first_pass)
		log_addrs(LOG_DEBUG, "resolved", ns);
	else if (before == RESOLVE_FAILED)
		log_addrs(LOG_INFO, "resolve_recovered", ns);
	else if (!same)
		log_addrs(LOG_INFO, "resolve_changed", ns);
	if (!same || before != RESOLVE_OK)
		r->changed = true;
}

/* A lookup failed: the addresses of the last success stay. */
static void name_failure(struct name_state *ns, const char *why)
{
	struct resolver *r = ns->r;
	enum resolve_status before = ns->status;
	struct logline l;

	snprintf(ns->error, sizeof(ns->error), "%s", why);
	ns->status = RESOLVE_FAILED;
	if (!r->first_pass && before == RESOLVE_FAILED)
		return; /* logged and published when it started failing */
	r->changed = true;
	log_begin(&l, r->first_pass ? LOG_DEBUG : LOG_WARN, "resolve_failed");
	log_str(&l, "host", ns->name);
	log_str(&l, "error", why);
	log_u64(&l, "kept", ns->n_addrs);
	log_end(&l);
}

/* ares_addrinfo_callback: runs on the resolver thread, inside
 * ares_getaddrinfo, ares_process_fd, ares_cancel or ares_destroy. */
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct name_state *ns = arg;
	struct resolver *r = ns->r;
	(void)timeouts;

	if (r->in_flight) /* never below 0, see run_pass */
		r->in_flight--;
	if (status == ARES_EDESTRUCTION) /* resolver_stop: nothing to record */
		goto out;
	if (status == ARES_ECANCELLED) {
		name_failure(ns, "lookup cancelled: pass took too long");
		goto out;
	}
	if (status != ARES_SUCCESS) {
		name_failure(ns, ares_strerror(status));
		goto out;
	}

	size_t total = 0;
	for (const struct ares_addrinfo_node *n = ai ? ai->nodes : NULL; n; n = n->ai_next)
		total++;
	struct sockaddr_storage *a = total ? calloc(total, sizeof(*a)) : NULL;
	if (total && !a) {
		name_failure(ns, "out of memory");
		goto out;
	}
	size_t k = 0;
	for (const struct ares_addrinfo_node *n = ai ? ai->nodes : NULL; n; n = n->ai_next)
		if (addr_copy(&a[k], n))
			k++;
	qsort(a, k, sizeof(*a), addr_cmp);
	size_t m = 0;
	for (size_t i = 0; i < k; i++)
		if (m == 0 || addr_cmp(&a[m - 1], &a[i]) != 0)
			a[m++] = a[i];
	if (m == 0) {
		free(a);
		name_failure(ns, "no IPv4 or IPv6 address in the answer");
		goto out;
	}
	bool truncated = m > RESOLVE_MAX_ADDRS;
	if (truncated)
		m = RESOLVE_MAX_ADDRS;
	/* shrink to the kept addresses; the old block stays valid if this fails */
	struct sockaddr_storage *fit = realloc(a, m * sizeof(*a));
	name_success(ns, fit ? fit : a, m, truncated);
out:
	if (ai)
		ares_freeaddrinfo(ai);
}

/* An address literal is its own answer: c-ares 1.18 would still send it to
 * the DNS server first.  False when the name is not a literal. */
static bool numeric_lookup(struct name_state *ns)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (void *)&ss;
	struct sockaddr_in6 *in6 = (void *)&ss;
	if (inet_pton(AF_INET, ns->name, &in->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, ns->name, &in6->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	else
		return false;
	struct sockaddr_storage *a = malloc(sizeof(*a));
	if (!a)
		name_failure(ns, "out of memory");
	else
		name_success(ns, memcpy(a, &ss, sizeof(ss)), 1, false);
	return true;
}

/* --- c-ares channel ------------------------------------------------------------- */

static int channel_make(const struct resolver *r, ares_channel *out, char *err, size_t len)
{
	struct ares_options o;
	int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
	char lookups[] = "b";
	ares_channel ch;
	int st;

	memset(&o, 0, sizeof(o));
	o.timeout = (int)r->timeout_ms;
	o.tries = (int)r->tries;
	if (r->server) {
		/* tests: that server only, names exactly as given */
		mask |= ARES_OPT_FLAGS | ARES_OPT_LOOKUPS;
		o.flags = ARES_FLAG_NOSEARCH;
		o.lookups = lookups;
	}
	st = ares_init_options(&ch, &o, mask);
	if (st != ARES_SUCCESS) {
		snprintf(err, len, "resolver: c-ares initialisation failed: %s", ares_strerror(st));
		return st == ARES_ENOMEM ? -ENOMEM : -EIO;
	}
	if (r->server) {
		st = ares_set_servers_ports_csv(ch, r->server);
		if (st != ARES_SUCCESS) {
			snprintf(err, len, "resolver: bad DNS server '%s': %s", r->server,
			         ares_strerror(st));
			ares_destroy(ch);
			return st == ARES_ENOMEM ? -ENOMEM : -EINVAL;
		}
	}
	*out = ch;
	return 0;
}

/* --- publishing ------------------------------------------------------------------ */

/* One allocation: header, entries, then every address, then every name. */
static struct resolve_result *result_build(const struct resolver *r, uint64_t generation)
{
	size_t n_addrs = 0, names = 0;
	for (size_t i = 0; i < r->n; i++) {
		n_addrs += r->names[i].n_addrs;
		names += strlen(r->names[i].name) + 1;
	}
	size_t head = sizeof(struct resolve_result) + r->n * sizeof(struct resolve_entry);
	head = (head + alignof(struct sockaddr_storage) - 1) &
	       ~(size_t)(alignof(struct sockaddr_storage) - 1);
	struct resolve_result *res =
	    malloc(head + n_addrs * sizeof(struct sockaddr_storage) + names);
	if (!res)
		return NULL;

	struct sockaddr_storage *a = (void *)((char *)res + head);
	char *s = (char *)(a + n_addrs);
	res->generation = generation;
	res->n = r->n;
	for (size_t i = 0; i < r->n; i++) {
		const struct name_state *ns = &r->names[i];
		struct resolve_entry *e = &res->entries[i];
		size_t nl = strlen(ns->name) + 1;

		memcpy(s, ns->name, nl);
		e->name = s;
		s += nl;
		e->status = ns->status;
		memcpy(e->error, ns->error, sizeof(e->error));
		e->truncated = ns->truncated;
		e->n_addrs = ns->n_addrs;
		e->addrs = a;
		if (ns->n_addrs)
			memcpy(a, ns->addrs, ns->n_addrs * sizeof(*a));
		a += ns->n_addrs;
	}
	return res;
}

/* Publishes the current state as the newest set (replacing one not taken),
 * then calls notify.  On allocation failure `changed` stays set and the next
 * pass tries again. */
static void publish(struct resolver *r)
{
	struct resolve_result *res = result_build(r, r->generation + 1);
	struct resolve_result *old;

	if (!res) {
		log_msg(LOG_ERROR, "resolve", "out of memory building a result set; retrying");
		return;
	}
	r->generation++;
	r->changed = false;
	pthread_mutex_lock(&r->lock);
	old = r->pending;
	r->pending = res;
	if (!r->first_done) {
		r->first_done = true;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
	free(old);
	if (r->notify)
		r->notify(r->notify_arg);
}

/* --- the thread ------------------------------------------------------------------ */

/* true when resolver_stop asked us to leave. */
static bool woken(const struct pollfd *p)
{
	return p->revents != 0;
}

/* Sleeps until `until` (monotonic ms) or a stop; true on stop. */
static bool sleep_until(struct resolver *r, uint64_t until)
{
	for (;;) {
		uint64_t now = now_ms();
		if (now >= until)
			return false;
		uint64_t left = until - now;
		struct pollfd p = {.fd = r->wake_fd, .events = POLLIN};
		int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0 && woken(&p))
			return true;
	}
}

/* One pass: every name in parallel, until all callbacks ran.  -ECANCELED
 * when a stop came in (lookups are left for ares_destroy). */
static int run_pass(struct resolver *r, uint64_t started)
{
	struct ares_addrinfo_hints hints;
	uint64_t deadline = started + RESOLVE_PASS_MAX_MS;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_flags = ARES_AI_NOSORT; /* we sort; skip RFC 6724 probing */
	for (size_t i = 0; i < r->n; i++) {
		if (numeric_lookup(&r->names[i]))
			continue;
		r->in_flight++; /* before: the callback may run inside the call */
		ares_getaddrinfo(r->channel, r->names[i].name, NULL, &hints, on_addrinfo,
		                 &r->names[i]);
	}

	while (r->in_flight > 0) {
		struct pollfd p[1 + ARES_GETSOCK_MAXNUM];
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		/* unsigned: ARES_GETSOCK_WRITABLE shifts 1 into the sign bit */
		unsigned bits = (unsigned)ares_getsock(r->channel, socks, ARES_GETSOCK_MAXNUM);
		nfds_t np = 1;

		p[0] = (struct pollfd){.fd = r->wake_fd, .events = POLLIN};
		for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short ev = 0;
			if (bits >> i & 1u)
				ev |= POLLIN;
			if (bits >> (i + ARES_GETSOCK_MAXNUM) & 1u)
				ev |= POLLOUT;
			if (ev)
				p[np++] = (struct pollfd){.fd = socks[i], .events = ev};
		}

		uint64_t now = now_ms();
		if (now >= deadline) {
			ares_cancel(r->channel); /* every callback runs, ECANCELLED */
			if (r->in_flight) {
				/* cannot happen with c-ares 1.18; never count below 0 */
				log_msg(LOG_ERROR, "resolve", "%zu lookups left after cancel",
				        r->in_flight);
				r->in_flight = 0;
			}
			break;
		}
		struct timeval cap = {.tv_sec = 1}, tv;
		struct timeval *t = ares_timeout(r->channel, &cap, &tv);
		uint64_t ms = (uint64_t)t->tv_sec * 1000 + ((uint64_t)t->tv_usec + 999) / 1000;
		if (ms > deadline - now)
			ms = deadline - now;

		int n = poll(p, np, (int)ms);
		if (n == -1) {
			if (errno != EINTR) {
				log_msg(LOG_ERROR, "resolve", "poll: %s", strerror(errno));
				if (sleep_until(r, now_ms() + 100))
					return -ECANCELED;
			}
			continue;
		}
		if (n > 0 && woken(&p[0]))
			return -ECANCELED;
		bool any = false;
		for (nfds_t i = 1; n > 0 && i < np; i++) {
			if (!p[i].revents)
				continue;
			bool rd = p[i].revents & (POLLIN | POLLERR | POLLHUP);
			bool wr = p[i].revents & (POLLOUT | POLLERR | POLLHUP);
			ares_process_fd(r->channel, rd ? p[i].fd : ARES_SOCKET_BAD,
			                wr ? p[i].fd : ARES_SOCKET_BAD);
			any = true;
		}
		if (!any) /* timeouts only */
			ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	}
	return 0;
}

static void *resolver_main(void *arg)
{
	struct resolver *r = arg;
	uint64_t next = now_ms();

	for (;;) {
		if (sleep_until(r, next))
			break;
		uint64_t started = now_ms();
		next = started + r->interval_ms;
		if (!r->first_pass) {
			char err[256];
			ares_channel ch;
			if (channel_make(r, &ch, err, sizeof(err)) == 0) {
				ares_destroy(r->channel); /* idle: no callback runs */
				r->channel = ch;
				r->channel_warn = false;
			} else if (!r->channel_warn) {
				log_msg(LOG_WARN, "resolve", "%s; keeping the previous one", err);
				r->channel_warn = true;
			}
		}
		if (run_pass(r, started) < 0)
			break;
		if (r->changed || r->first_pass)
			publish(r);
		r->first_pass = false;
	}
	return NULL;
}

/* --- API ------------------------------------------------------------------------ */

static void names_free(struct resolver *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->names[i].name);
		free(r->names[i].addrs);
	}
	free(r->names);
}

/* Copies the distinct names in the order given. */
static int names_copy(struct resolver *r, const struct resolver_opts *o, char *err, size_t len)
{
	r->names = calloc(o->n_names, sizeof(*r->names));
	if (!r->names) {
		snprintf(err, len, "resolver: out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < o->n_names; i++) {
		const char *s = o->names[i];
		size_t sl = s ? strlen(s) : 0;
		size_t max = RESOLVE_NAME_MAX + (sl && s[sl - 1] == '.');
		if (sl == 0 || sl > max) {
			snprintf(err, len, "resolver: %s host name%s%.64s%s",
			         sl ? "too long a" : "empty", sl ? " '" : "", sl ? s : "",
			         sl ? "...'" : "");
			return -EINVAL;
		}
		bool dup = false;
		for (size_t j = 0; j < r->n && !dup; j++)
			dup = strcmp(r->names[j].name, s) == 0;
		if (dup)
			continue;
		struct name_state *ns = &r->names[r->n];
		ns->name = strdup(s);
		if (!ns->name) {
			snprintf(err, len, "resolver: out of memory");
			return -ENOMEM;
		}
		ns->r = r;
		ns->status = RESOLVE_FAILED;
		snprintf(ns->error, sizeof(ns->error), "not resolved yet");
		r->n++;
	}
	return 0;
}

static void resolver_free(struct resolver *r)
{
	if (r->channel)
		ares_destroy(r->channel); /* callbacks: ARES_EDESTRUCTION */
	names_free(r);
	free(r->pending);
	free(r->server);
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
	ares_library_cleanup();
}

struct resolver *resolver_start(const struct resolver_opts *o, char *err, size_t len)
{
	struct resolver *r;
	pthread_condattr_t ca;
	sigset_t all, old;
	int e, st;

	if (!o || !o->names || o->n_names == 0 || o->interval_ms == 0) {
		snprintf(err, len, "resolver: %s",
		         !o || !o->names || !o->n_names ? "no host names" : "zero interval");
		errno = EINVAL;
		return NULL;
	}
	if (o->n_names > RESOLVE_MAX_NAMES) {
		snprintf(err, len, "resolver: %zu host names, at most %d", o->n_names,
		         RESOLVE_MAX_NAMES);
		errno = E2BIG;
		return NULL;
	}
	st = ares_library_init(ARES_LIB_INIT_ALL);
	if (st != ARES_SUCCESS) {
		snprintf(err, len, "resolver: c-ares: %s", ares_strerror(st));
		errno = EIO;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		ares_library_cleanup();
		snprintf(err, len, "resolver: out of memory");
		errno = ENOMEM;
		return NULL;
	}
	r->wake_fd = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	r->interval_ms = o->interval_ms;
	r->timeout_ms = o->timeout_ms ? o->timeout_ms : RESOLVE_TIMEOUT_MS;
	r->tries = o->tries ? o->tries : RESOLVE_TRIES;
	r->notify = o->notify;
	r->notify_arg = o->notify_arg;
	r->first_pass = true;

	e = names_copy(r, o, err, len);
	if (e < 0)
		goto out_free;
	if (o->server) {
		r->server = strdup(o->server);
		if (!r->server) {
			snprintf(err, len, "resolver: out of memory");
			e = -ENOMEM;
			goto out_free;
		}
	}
	e = channel_make(r, &r->channel, err, len);
	if (e < 0)
		goto out_free;
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wake_fd == -1) {
		e = -errno;
		snprintf(err, len, "resolver: eventfd: %s", strerror(-e));
		goto out_free;
	}

	/* the thread inherits the mask: no process signal is delivered to it */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	e = -pthread_create(&r->thread, NULL, resolver_main, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e < 0) {
		snprintf(err, len, "resolver: pthread_create: %s", strerror(-e));
		goto out_free;
	}
	r->thread_started = true;
	return r;

out_free:
	resolver_free(r);
	errno = -e;
	return NULL;
}

int resolver_take(struct resolver *r, struct resolve_result **out)
{
	pthread_mutex_lock(&r->lock);
	*out = r->pending;
	r->pending = NULL;
	pthread_mutex_unlock(&r->lock);
	return *out != NULL;
}

int resolver_wait(struct resolver *r, uint64_t timeout_ms, struct resolve_result **out, char *err,
                  size_t len)
{
	struct timespec until;
	bool done;
	int e = 0;

	*out = NULL;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(timeout_ms / 1000);
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&r->lock);
	while (!r->first_done && e == 0)
		e = pthread_cond_timedwait(&r->cond, &r->lock, &until);
	done = r->first_done;
	if (done) {
		*out = r->pending;
		r->pending = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (!done || !*out) {
		/* timed out, or the set was already taken (API misuse) */
		snprintf(err, len, "host names not resolved within %llu ms",
		         (unsigned long long)timeout_ms);
		return -ETIMEDOUT;
	}
	e = resolve_result_check(*out, err, len);
	if (e < 0) {
		free(*out);
		*out = NULL;
	}
	return e;
}

void resolver_stop(struct resolver *r)
{
	uint64_t one = 1;

	if (!r)
		return;
	if (r->thread_started) {
		while (write(r->wake_fd, &one, sizeof(one)) == -1 && errno == EINTR)
			;
		pthread_join(r->thread, NULL);
	}
	resolver_free(r);
}

int resolve_result_check(const struct resolve_result *res, char *err, size_t len)
{
	for (size_t i = 0; i < res->n; i++) {
		const struct resolve_entry *e = &res->entries[i];
		if (e->n_addrs == 0) {
			snprintf(err, len, "host '%s' does not resolve: %s", e->name,
			         e->error[0] ? e->error : "no address");
			return -ENOENT;
		}
	}
	return 0;
}

const struct resolve_entry *resolve_result_find(const struct resolve_result *res, const char *name)
{
	for (size_t i = 0; i < res->n; i++)
		if (strcmp(res->entries[i].name, name) == 0)
			return &res->entries[i];
	return NULL;
}

void resolve_result_free(struct resolve_result *res)
{
	free(res);
}
