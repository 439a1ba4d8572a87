/* health.c - active health checks and passive failure accounting; see
 * health.h for the rules.
 *
 * One checker per checked backend, all preallocated by health_init().  A
 * checker runs one check at a time through the engine:
 *
 *   IDLE --timer--> CONNECTING --> [SENDING] --> [READING] --> CLOSING --closed--> IDLE
 *
 * Its one timer serves both purposes: while a check runs it is the check's
 * deadline (start + timeout); otherwise it is the start of the next check
 * (start + interval).  A check's socket is released by the engine only in
 * its `closed` callback, after which the engine no longer reads the
 * checker's iovecs; when the next check falls due before that, it starts
 * from the callback (`due`).
 *
 * Failures that are ferry's own (no descriptor, engine table full) are
 * logged and skipped: they say nothing about the backend, and counting them
 * would take every backend down at once.
 */
#include "relay/health.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "engine/engine.h"
#include "relay/proxy.h"
#include "relay/proxyproto.h"

/* --- the streak state machine ------------------------------------------------ */

#define HEALTH_COUNT_MAX 255u
#define HEALTH_DOWN_BIT  (1u << 24)
/* Outside struct health_state: set while the current generation checks the
 * backend.  Passive results count only then, so a connect that fails after
 * a reload removed health_check cannot mark down a backend that no check
 * would ever bring back. */
#define HEALTH_CHECKED_BIT (1u << 25)

static unsigned sat_inc(unsigned v)
{
	return v < HEALTH_COUNT_MAX ? v + 1 : HEALTH_COUNT_MAX;
}

enum health_change health_step(struct health_state *st, unsigned rise, unsigned fall,
                               enum health_src src, bool ok)
{
	if (ok && src == HEALTH_ACTIVE) {
		st->fails = 0;
		st->pfails = 0;
		if (!st->down)
			return HEALTH_SAME;
		st->oks = sat_inc(st->oks);
		if (st->oks < rise)
			return HEALTH_SAME;
		st->down = false;
		st->oks = 0;
		return HEALTH_WENT_UP;
	}
	if (ok) {
		/* A good client connect forgives the passive failures before
		 * it, not the active ones; it never counts toward rise. */
		if (!st->down) {
			st->fails -= st->pfails < st->fails ? st->pfails : st->fails;
			st->pfails = 0;
		}
		return HEALTH_SAME;
	}
	st->oks = 0;
	if (st->down)
		return HEALTH_SAME;
	st->fails = sat_inc(st->fails);
	if (src == HEALTH_PASSIVE)
		st->pfails = sat_inc(st->pfails);
	if (st->fails < fall)
		return HEALTH_SAME;
	st->down = true;
	st->fails = 0;
	st->pfails = 0;
	return HEALTH_WENT_DOWN;
}

uint32_t health_pack(const struct health_state *st)
{
	unsigned f = st->fails < HEALTH_COUNT_MAX ? st->fails : HEALTH_COUNT_MAX;
	unsigned p = st->pfails < HEALTH_COUNT_MAX ? st->pfails : HEALTH_COUNT_MAX;
	unsigned o = st->oks < HEALTH_COUNT_MAX ? st->oks : HEALTH_COUNT_MAX;
	return (uint32_t)f | (uint32_t)p << 8 | (uint32_t)o << 16 |
	       (st->down ? HEALTH_DOWN_BIT : 0);
}

void health_unpack(uint32_t word, struct health_state *st)
{
	st->fails = word & 0xff;
	st->pfails = (word >> 8) & 0xff;
	st->oks = (word >> 16) & 0xff;
	st->down = (word & HEALTH_DOWN_BIT) != 0;
}

/* --- the expect matcher ---------------------------------------------------------- */

int health_matcher_init(struct health_matcher *m, const void *pat, size_t len)
{
	m->pat = pat;
	m->len = len;
	m->fail = NULL;
	if (len == 0)
		return 0;
	m->fail = calloc(len, sizeof(*m->fail));
	if (!m->fail)
		return -ENOMEM;
	/* fail[i]: the longest proper prefix of pat[0..i] that ends at i. */
	uint32_t k = 0;
	for (size_t i = 1; i < len; i++) {
		while (k > 0 && m->pat[i] != m->pat[k])
			k = m->fail[k - 1];
		if (m->pat[i] == m->pat[k])
			k++;
		m->fail[i] = k;
	}
	return 0;
}

void health_matcher_fini(struct health_matcher *m)
{
	free(m->fail);
	m->fail = NULL;
}

bool health_matcher_feed(const struct health_matcher *m, size_t *state, const void *data, size_t n)
{
	size_t q = *state;
	if (q >= m->len)
		return true;
	const uint8_t *p = data;
	for (size_t i = 0; i < n; i++) {
		while (q > 0 && m->pat[q] != p[i])
			q = m->fail[q - 1];
		if (m->pat[q] == p[i])
			q++;
		if (q == m->len) {
			*state = q;
			return true;
		}
	}
	*state = q;
	return false;
}

/* --- shared state --------------------------------------------------------------------- */

static const struct cfg_service *service_of(const struct cfg_health *h)
{
	return (const struct cfg_service *)(const void *)((const char *)h -
	                                                  offsetof(struct cfg_service, health));
}

/* lb.up follows the down bit.  Two transitions decided by different threads
 * may store lb.up in the wrong order; whoever stores re-reads the word
 * afterwards and stores again until both agree, so the last store wins
 * with the right value. */
static void sync_up(struct backend_rt *b)
{
	for (;;) {
		bool up = !(atomic_load(&b->health) & HEALTH_DOWN_BIT);
		atomic_store(&b->lb.up, up);
		if (up == !(atomic_load(&b->health) & HEALTH_DOWN_BIT))
			return;
	}
}

static void log_change(enum health_change ch, const char *service, const struct backend_rt *b,
                       const char *reason)
{
	struct logline l;
	if (ch == HEALTH_WENT_DOWN) {
		log_begin(&l, LOG_WARN, "backend_down");
		log_str(&l, "service", service);
		log_str(&l, "backend", b->cfg->addr.text);
		log_str(&l, "reason", reason);
	} else {
		log_begin(&l, LOG_INFO, "backend_up");
		log_str(&l, "service", service);
		log_str(&l, "backend", b->cfg->addr.text);
	}
	log_end(&l);
}

/* Applies one result with a compare-and-swap on b->health; the thread whose
 * swap makes the transition logs it and updates lb.up. */
static void record(struct backend_rt *b, const struct cfg_health *h, const char *service,
                   enum health_src src, bool ok, const char *reason)
{
	uint32_t old = atomic_load(&b->health);
	uint32_t nw;
	enum health_change ch;
	do {
		if (!(old & HEALTH_CHECKED_BIT))
			return;
		struct health_state st;
		health_unpack(old, &st);
		ch = health_step(&st, h->rise, h->fall, src, ok);
		nw = health_pack(&st) | HEALTH_CHECKED_BIT;
		if (nw == old)
			return;
	} while (!atomic_compare_exchange_weak(&b->health, &old, nw));
	if (ch == HEALTH_SAME)
		return;
	sync_up(b);
	log_change(ch, service, b, reason);
}

void health_passive(struct backend_rt *b, const struct cfg_health *h, bool ok)
{
	if (!h->enabled)
		return;
	/* The common case, a good connect to a healthy backend: no write. */
	if (ok &&
	    (atomic_load_explicit(&b->health, memory_order_relaxed) & ~HEALTH_CHECKED_BIT) == 0)
		return;
	record(b, h, service_of(h)->name, HEALTH_PASSIVE, ok, "passive failures");
}

/* --- sizes ------------------------------------------------------------------------------ */

static bool checked(const struct cfg_service *s)
{
	return s->mode == MODE_PROXY && s->health.enabled;
}

static uint32_t checked_backends(const struct config *cfg, bool with_expect)
{
	uint64_t n = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		if (checked(&cfg->services[i]) &&
		    (!with_expect || cfg->services[i].health.expect_len))
			n += cfg->services[i].n_backends;
	return n > UINT32_MAX / 4 ? UINT32_MAX / 4 : (uint32_t)n;
}

uint32_t health_sockets(const struct config *cfg)
{
	return 2 * checked_backends(cfg, false);
}

uint32_t health_timers(const struct config *cfg)
{
	return 2 * checked_backends(cfg, false);
}

uint32_t health_buffers(const struct config *cfg)
{
	return checked_backends(cfg, true);
}

/* --- active checks ------------------------------------------------------------------------ */

enum hc_state { HC_IDLE = 0, HC_CONNECTING, HC_SENDING, HC_READING, HC_CLOSING };

struct hset;

struct checker {
	struct hset *set;
	struct backend_rt *b;          /* held through the set's generation */
	const struct cfg_service *svc; /* its health, name and proxy_protocol */
	struct esock *es;              /* the check's socket, until `closed` */
	struct timer timer;            /* deadline, or the next check's start */
	uint64_t started;
	uint8_t state;
	bool due;       /* the next check fell due while the socket was closing */
	bool got_bytes; /* something was received (a timeout then is a wrong reply) */
	bool warned;    /* a local error was logged; quiet until a check runs */
	size_t match;   /* expect: prefix matched so far */
	struct health_matcher m;
	struct iovec iov[2]; /* PROXY header, `send`: lent to the engine */
	int pp_len;
	uint8_t pp[PP_MAX_HEADER];
};

/* The checkers of one generation.  A reload retires the current set: its
 * timers are cancelled and its sockets closed, and it is freed from the
 * `closed` callback of its last socket (the engine is done with its
 * iovecs then). */
struct hset {
	struct health *h;
	struct relay_shared *sh; /* referenced */
	struct checker *c;
	size_t n;
	unsigned busy; /* its sockets not yet released */
	bool retired;
	struct hset *next; /* in h->retired */
};

struct health {
	struct engine *eng;
	struct hset *cur;
	struct hset *retired; /* closing, freed when released */
	unsigned busy;        /* sockets not yet released, every set */
	bool stopping;
};

static void check_start(struct checker *c);
static void on_check_timer(struct timer *t);

static void hc_connected(void *owner, int tag, int err);
static void hc_received(void *owner, int tag, struct buf *b, int res);
static void hc_sent(void *owner, int tag, int res);
static void hc_closed(void *owner, int tag);

static const struct esock_cbs checker_cbs = {
    .connected = hc_connected,
    .received = hc_received,
    .sent = hc_sent,
    .closed = hc_closed,
};

static struct engine *eng_of(const struct checker *c)
{
	return c->set->h->eng;
}

static bool halted(const struct checker *c)
{
	return c->set->retired || c->set->h->stopping;
}

static void arm(struct checker *c, uint64_t when)
{
	struct engine *eng = eng_of(c);
	if (timer_set(&eng->timers, &c->timer, when < eng->now ? eng->now : when, on_check_timer) <
	    0)
		log_msg(LOG_ERROR, "health", "timer heap full: checks of %s stop",
		        c->b->cfg->addr.text);
}

/* A problem of ferry's own: logged once per episode, not counted. */
static void local_error(struct checker *c, const char *what, const char *why)
{
	if (!c->warned) {
		struct logline l;
		log_begin(&l, LOG_WARN, "health_check_error");
		log_str(&l, "service", c->svc->name);
		log_str(&l, "backend", c->b->cfg->addr.text);
		log_fmt(&l, "error", "%s: %s", what, why);
		log_end(&l);
		c->warned = true;
	}
	arm(c, c->started + c->svc->health.interval_ms);
}

/* Ends the running check with its verdict and schedules the next one. */
static void check_done(struct checker *c, bool ok, const char *reason)
{
	struct engine *eng = eng_of(c);
	engine_timer_cancel(eng, &c->timer);
	engine_close(eng, c->es, false);
	c->state = HC_CLOSING;
	if (log_enabled(LOG_DEBUG)) {
		struct logline l;
		log_begin(&l, LOG_DEBUG, "health_check");
		log_str(&l, "service", c->svc->name);
		log_str(&l, "backend", c->b->cfg->addr.text);
		log_str(&l, "result", ok ? "ok" : "fail");
		if (!ok)
			log_str(&l, "reason", reason);
		log_u64(&l, "duration_ms", eng->now - c->started);
		log_end(&l);
	}
	record(c->b, &c->svc->health, c->svc->name, HEALTH_ACTIVE, ok, reason);
	arm(c, c->started + c->svc->health.interval_ms);
}

static void check_fail_errno(struct checker *c, const char *what, int err)
{
	char reason[128];
	snprintf(reason, sizeof(reason), "%s: %s", what, strerror(err));
	check_done(c, false, reason);
}

static void check_start(struct checker *c)
{
	struct engine *eng = eng_of(c);
	const struct cfg_addr *a = &c->b->cfg->addr;
	c->started = eng->now;
	c->match = 0;
	c->got_bytes = false;
	c->due = false;
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		local_error(c, "socket", strerror(errno));
		return;
	}
	struct esock *es = engine_open(eng, fd, &checker_cbs, c, 0);
	if (!es) {
		close(fd);
		local_error(c, "engine_open", "socket table full");
		return;
	}
	c->warned = false;
	c->es = es;
	c->set->busy++;
	c->set->h->busy++;
	c->state = HC_CONNECTING;
	arm(c, c->started + c->svc->health.timeout_ms);
	int r = engine_connect(eng, es, (const struct sockaddr *)&a->sa, a->salen);
	if (r < 0)
		check_fail_errno(c, "connect", -r);
}

static void on_check_timer(struct timer *t)
{
	struct checker *c = container_of(t, struct checker, timer);
	switch (c->state) {
	case HC_IDLE:
		if (!halted(c))
			check_start(c);
		return;
	case HC_CLOSING:
		c->due = true;
		return;
	case HC_READING:
		check_done(c, false, c->got_bytes ? "expect not found" : "timeout");
		return;
	default:
		check_done(c, false, "timeout");
		return;
	}
}

/* After connecting and sending: read for `expect`, or done. */
static void check_read(struct checker *c)
{
	if (c->svc->health.expect_len == 0) {
		check_done(c, true, NULL);
		return;
	}
	c->state = HC_READING;
	int r = engine_recv(eng_of(c), c->es);
	if (r < 0)
		check_fail_errno(c, "recv", -r);
}

static void hc_connected(void *owner, int tag, int err)
{
	struct checker *c = owner;
	(void)tag;
	if (c->state != HC_CONNECTING)
		return;
	if (err) {
		check_fail_errno(c, "connect", -err);
		return;
	}
	const struct cfg_health *hc = &c->svc->health;
	int n = 0;
	if (c->pp_len > 0)
		c->iov[n++] = (struct iovec){.iov_base = c->pp, .iov_len = (size_t)c->pp_len};
	if (hc->send_len)
		c->iov[n++] = (struct iovec){.iov_base = hc->send, .iov_len = hc->send_len};
	if (n == 0) {
		check_read(c);
		return;
	}
	c->state = HC_SENDING;
	int r = engine_send(eng_of(c), c->es, c->iov, n);
	if (r < 0)
		check_fail_errno(c, "send", -r);
}

static void hc_sent(void *owner, int tag, int res)
{
	struct checker *c = owner;
	(void)tag;
	if (c->state != HC_SENDING)
		return;
	if (res < 0) {
		check_fail_errno(c, "send", -res);
		return;
	}
	check_read(c);
}

static void hc_received(void *owner, int tag, struct buf *b, int res)
{
	struct checker *c = owner;
	(void)tag;
	bool found = false;
	if (b) {
		if (c->state == HC_READING && res > 0) {
			c->got_bytes = true;
			found = health_matcher_feed(&c->m, &c->match, b->data, b->len);
		}
		buf_unref(b);
	}
	if (c->state != HC_READING)
		return;
	if (found) {
		check_done(c, true, NULL);
		return;
	}
	if (res < 0) {
		check_fail_errno(c, "recv", -res);
		return;
	}
	if (res == 0) {
		check_done(c, false, "expect not found");
		return;
	}
	int r = engine_recv(eng_of(c), c->es);
	if (r < 0)
		check_fail_errno(c, "recv", -r);
}

static void hset_free(struct hset *s)
{
	if (!s)
		return;
	struct engine *eng = s->h->eng;
	for (size_t i = 0; s->c && i < s->n; i++) {
		if (eng->vt) /* the heap is gone after engine_fini() */
			engine_timer_cancel(eng, &s->c[i].timer);
		health_matcher_fini(&s->c[i].m);
	}
	free(s->c);
	if (s->sh)
		relay_shared_release(s->sh);
	free(s);
}

static void hset_unlink(struct hset *s)
{
	for (struct hset **p = &s->h->retired; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			return;
		}
}

static void hc_closed(void *owner, int tag)
{
	struct checker *c = owner;
	struct hset *s = c->set;
	struct health *h = s->h;
	(void)tag;
	c->es = NULL;
	c->state = HC_IDLE;
	s->busy--;
	h->busy--;
	if (s->retired) {
		if (s->busy == 0) {
			hset_unlink(s);
			hset_free(s); /* c goes with it */
		}
	} else if (c->due && !h->stopping) {
		check_start(c);
	}
}

/* Cancels a set's timers and closes its sockets. */
static void hset_halt(struct hset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct checker *c = &s->c[i];
		engine_timer_cancel(s->h->eng, &c->timer);
		c->due = false;
		if (c->es && c->state != HC_CLOSING) {
			engine_close(s->h->eng, c->es, false);
			c->state = HC_CLOSING;
		}
	}
}

/* Backends of services that are not checked are up, whatever an older
 * generation's checks said, and ignore passive results. */
static void force_up(const struct shared_service *ss)
{
	for (size_t j = 0; j < ss->n_backends; j++) {
		struct backend_rt *b = ss->backends[j];
		uint32_t old = atomic_exchange(&b->health, 0);
		sync_up(b);
		if (old & HEALTH_DOWN_BIT)
			log_change(HEALTH_WENT_UP, ss->cfg->name, b, NULL);
	}
}

static int checker_setup(struct checker *c, struct hset *s, const struct cfg_service *svc,
                         struct backend_rt *b)
{
	c->set = s;
	c->svc = svc;
	c->b = b;
	if (svc->proxy_protocol == PP_V1 || svc->proxy_protocol == PP_V2) {
		c->pp_len =
		    pp_build_local(svc->proxy_protocol == PP_V1 ? 1 : 2, c->pp, sizeof(c->pp));
		if (c->pp_len < 0)
			return -EINVAL;
	}
	return health_matcher_init(&c->m, svc->health.expect, svc->health.expect_len);
}

/* Builds the checkers of generation sh (not armed yet).  0 or -errno with
 * a message in err. */
static int hset_create(struct health *h, struct relay_shared *sh, struct hset **out, char *err,
                       size_t len)
{
	*out = NULL;
	struct hset *s = calloc(1, sizeof(*s));
	if (!s)
		goto nomem;
	s->h = h;
	s->sh = sh;
	atomic_fetch_add(&sh->refs, 1);
	size_t n = 0;
	for (size_t i = 0; i < sh->n_svcs; i++)
		if (checked(sh->svcs[i].cfg))
			n += sh->svcs[i].n_backends;
	s->c = calloc(n ? n : 1, sizeof(*s->c));
	if (!s->c)
		goto nomem;
	for (size_t i = 0; i < sh->n_svcs; i++) {
		const struct shared_service *ss = &sh->svcs[i];
		if (!checked(ss->cfg)) {
			force_up(ss);
			continue;
		}
		for (size_t j = 0; j < ss->n_backends; j++) {
			atomic_fetch_or(&ss->backends[j]->health, HEALTH_CHECKED_BIT);
			int r = checker_setup(&s->c[s->n], s, ss->cfg, ss->backends[j]);
			s->n++;
			if (r == -EINVAL) {
				snprintf(
				    err, len,
				    "service %s: cannot build the PROXY header for health checks",
				    ss->cfg->name);
				hset_free(s);
				return r;
			}
			if (r < 0)
				goto nomem;
		}
	}
	*out = s;
	return 0;
nomem:
	snprintf(err, len, "out of memory setting up health checks");
	hset_free(s);
	return -ENOMEM;
}

/* First round at once: from the loop, as every check. */
static void hset_start(struct hset *s)
{
	for (size_t i = 0; i < s->n; i++)
		arm(&s->c[i], s->h->eng->now);
}

int health_init(struct health **out, struct relay_shared *sh, struct engine *eng, char *err,
                size_t len)
{
	*out = NULL;
	struct health *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, len, "out of memory setting up health checks");
		return -ENOMEM;
	}
	h->eng = eng;
	int r = hset_create(h, sh, &h->cur, err, len);
	if (r < 0) {
		free(h);
		return r;
	}
	hset_start(h->cur);
	*out = h;
	return 0;
}

int health_reload(struct health *h, struct relay_shared *sh, char *err, size_t len)
{
	if (h->stopping) {
		snprintf(err, len, "health checks are stopping");
		return -ECANCELED;
	}
	struct hset *s;
	int r = hset_create(h, sh, &s, err, len);
	if (r < 0)
		return r;
	struct hset *old = h->cur;
	hset_halt(old);
	if (old->busy == 0) {
		hset_free(old);
	} else {
		old->retired = true;
		old->next = h->retired;
		h->retired = old;
	}
	h->cur = s;
	hset_start(s);
	return 0;
}

void health_stop(struct health *h)
{
	if (!h || h->stopping)
		return;
	h->stopping = true;
	hset_halt(h->cur);
	/* retired sets are halted already */
}

unsigned health_busy(const struct health *h)
{
	return h ? h->busy : 0;
}

void health_fini(struct health *h)
{
	if (!h)
		return;
	while (h->retired) {
		struct hset *s = h->retired;
		h->retired = s->next;
		hset_free(s);
	}
	hset_free(h->cur);
	free(h);
}
