/* proxy.c - proxy sessions: accept, choose a backend, relay both ways.
 *
 * A session is one client connection and at most one backend connection at a
 * time.  Bytes from each side go into that side's half: a queue of at most
 * RELAY_WINDOW pooled buffers, sent to the other side in one request while
 * nothing else is being sent there.  A side is read only while its half has
 * room, so a slow reader slows its writer and memory stays bounded by the
 * window (back-pressure).
 *
 * Lifecycle:  accept -> [QUEUED] -> CONNECTING -> ESTABLISHED -> CLOSED -> free
 *   - every end goes through session_close(), which logs the access line,
 *     gives back the backend slot and asks the engine to close both sockets;
 *   - the slot is reused only after the engine's `closed` callbacks for every
 *     socket the session opened, because until then the engine may still use
 *     the session's buffers and iovecs.
 * Half-close: a side's FIN is passed on (shutdown of writing) after the bytes
 * queued before it; the session ends when both directions have been shut.
 */
#include "relay/proxy.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/privdrop.h"
#include "core/resolve.h"
#include "relay/health.h"
#include "relay/proxyproto.h"

enum side { SIDE_CLIENT = 0, SIDE_BACKEND = 1 };

enum sstate { S_FREE = 0, S_HEADER, S_QUEUED, S_CONNECTING, S_ESTABLISHED, S_CLOSED };

enum end_reason {
	END_NONE = 0,
	END_CLIENT_FIN,
	END_BACKEND_FIN,
	END_CLIENT_RESET,
	END_BACKEND_RESET,
	END_IDLE_TIMEOUT,
	END_CONNECT_FAILED,
	END_NO_BACKEND,
	END_SHUTDOWN,
};

static const char *const end_names[] = {
    [END_NONE] = "none",
    [END_CLIENT_FIN] = "client_fin",
    [END_BACKEND_FIN] = "backend_fin",
    [END_CLIENT_RESET] = "client_reset",
    [END_BACKEND_RESET] = "backend_reset",
    [END_IDLE_TIMEOUT] = "idle_timeout",
    [END_CONNECT_FAILED] = "connect_failed",
    [END_NO_BACKEND] = "no_backend",
    [END_SHUTDOWN] = "shutdown",
};

/* Bytes read from one side and not yet sent to the other. */
struct half {
	/* oldest first; q[0..inflight) are being sent; one slot more than the
	 * window for the PROXY header put in front at connect */
	struct buf *q[RELAY_WINDOW + 1];
	struct iovec iov[RELAY_WINDOW + 1];
	uint8_t count;
	uint8_t inflight;
	struct pipe_buf *pipe; /* splice path: the bytes wait in this pipe */
	uint32_t splice_out;   /* bytes of the pipe being sent */
	bool recv_armed;
	bool bulk;     /* a receive filled a whole buffer: splice from now on */
	bool eof_held; /* end of stream seen while a send to this side was in flight */
	bool eof;      /* the source sent FIN */
	bool shut;     /* FIN passed on to the destination */
	uint64_t received;
	uint64_t sent;
};

#define EXCL_WORDS 4 /* retries avoid tried backends among the first 256 */

struct session {
	uint32_t gen;
	uint8_t state;
	uint8_t socks; /* sockets opened and not yet released by the engine */
	uint8_t first_fin;
	bool fin_seen;
	bool in_queue;
	bool connected; /* a backend connection was established */
	int backend;    /* index in svc->backends, or -1 */
	unsigned tries;
	struct service_rt *svc;
	struct esock *es[2];
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} peer; /* the client: from the socket, or from its PROXY header */
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} local;            /* where the client connected to (PROXY header dst) */
	struct buf *pp_acc; /* accept_proxy_protocol: the header read so far */
	uint64_t excl[EXCL_WORDS];
	uint64_t t_start, last_active, deadline, next_progress;
	struct timer timer;
	struct session *qprev, *qnext;
	struct half h[2];      /* indexed by the side the bytes come from */
	struct mconn *mirrors; /* this client's mirror connections */
};

/* One mirror connection: what the client sent, queued as shared buffer
 * references in a ring, sent in order; replies read and thrown away.  It
 * belongs to its session until the session ends, then drains on its own
 * (detached, s == NULL) and closes after the last byte and a FIN. */
enum mstate { M_FREE = 0, M_CONNECTING, M_UP, M_CLOSED };

struct mconn {
	struct relay *r;
	struct session *s;  /* NULL once detached */
	struct mconn *next; /* in the session's list */
	struct mirror_rt *rt;
	const struct cfg_service *svc;
	struct wgen *wg; /* keeps rt and svc alive while detached */
	struct esock *es;
	struct buf **ring; /* r->mring slice of r->mring_cap entries */
	uint32_t head, count, inflight;
	uint64_t queued; /* bytes in the ring */
	uint64_t last_active;
	uint8_t state;
	bool eof; /* the client's bytes ended: FIN after the last */
	bool fin_sent;
	bool recv_armed;
	struct timer timer; /* detached: bounded by idle_timeout */
	struct iovec iov[ENGINE_MAX_IOV];
};

#define SIDE_MIRROR 2

static void try_connect(struct session *s);
static void session_close(struct session *s, enum end_reason end, bool rst_client,
                          bool rst_backend);

static struct relay *relay_of(struct session *s)
{
	return s->svc->relay;
}

/* Takes one of `max` slots of a counter shared by the workers (max 0: no
 * limit).  False when all are taken. */
static bool slot_acquire(_Atomic unsigned *n, unsigned max)
{
	unsigned cur = atomic_load_explicit(n, memory_order_relaxed);
	do {
		if (max && cur >= max)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(n, &cur, cur + 1, memory_order_relaxed,
	                                                memory_order_relaxed));
	return true;
}

static void slot_release(_Atomic unsigned *n)
{
	atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
}

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* --- sizes ------------------------------------------------------------- */

static uint32_t total_listeners(const struct config *cfg)
{
	uint32_t n = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		n += (uint32_t)cfg->services[i].n_listen;
	return n;
}

/* Mirror connections a worker may hold: one per mirror of the service with
 * the most, per client connection. */
static uint32_t mirror_slots(const struct config *cfg)
{
	size_t most = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		if (cfg->services[i].mode == MODE_PROXY && cfg->services[i].n_mirrors > most)
			most = cfg->services[i].n_mirrors;
	return (uint32_t)(most * cfg->max_connections);
}

/* Ring entries per mirror connection: max_lag in full buffers, plus the
 * client's window, so a ring is full only past max_lag or with many small
 * reads (then the lag policy applies). */
static uint32_t mirror_ring_cap(const struct config *cfg)
{
	uint64_t lag = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		for (size_t j = 0; j < cfg->services[i].n_mirrors; j++)
			if (cfg->services[i].mirrors[j].max_lag > lag)
				lag = cfg->services[i].mirrors[j].max_lag;
	uint64_t n = (lag + cfg->buffer_size - 1) / cfg->buffer_size + RELAY_WINDOW + 2;
	return n > 65536 ? 65536 : (uint32_t)n;
}

uint32_t relay_max_sockets(const struct config *cfg)
{
	/* client + backend, plus a failed backend socket awaiting release */
	return cfg->max_connections * 3 + mirror_slots(cfg) + total_listeners(cfg) + 16;
}

uint32_t relay_max_timers(const struct config *cfg)
{
	return cfg->max_connections + mirror_slots(cfg) + total_listeners(cfg) + 8;
}

/* Every connection's window, plus for mirrors what lagging ones may hold,
 * capped: when the pool runs dry receives wait for buffers to come back. */
#define RELAY_MIRROR_POOL_MAX 65536u

uint32_t relay_pool_buffers(const struct config *cfg)
{
	uint64_t mirror = (uint64_t)mirror_slots(cfg) * mirror_ring_cap(cfg);
	if (mirror > RELAY_MIRROR_POOL_MAX)
		mirror = RELAY_MIRROR_POOL_MAX;
	return cfg->max_connections * 2 * RELAY_WINDOW + (uint32_t)mirror + 16;
}

/* --- logging ----------------------------------------------------------- */

static const char *backend_text(const struct session *s)
{
	return s->backend >= 0 ? s->svc->backends[s->backend]->cfg->addr.text : "-";
}

/* The access log names the backend that served the client: "-" when no
 * connection was established (each failed try has its connect_error line). */
static const char *served_by(const struct session *s)
{
	return s->connected ? backend_text(s) : "-";
}

static void log_session(struct session *s, const char *event, enum end_reason end)
{
	struct relay *r = relay_of(s);
	if (!r->cfg->log.access)
		return;
	struct logline l;
	log_begin(&l, LOG_INFO, event);
	if (!l.enabled)
		return;
	char addr[ADDR_STRLEN];
	log_str(&l, "service", s->svc->cfg->name);
	log_str(&l, "client", addr_format(&s->peer.sa, addr, sizeof(addr)));
	log_str(&l, "backend", served_by(s));
	log_u64(&l, "bytes_in", s->h[SIDE_CLIENT].received);
	log_u64(&l, "bytes_out", s->h[SIDE_BACKEND].sent);
	log_u64(&l, "duration_ms", r->eng->now - s->t_start);
	if (end != END_NONE)
		log_str(&l, "end", end_names[end]);
	log_end(&l);
}

static void log_rejected(struct relay *r, struct service_rt *svc, const struct sockaddr *peer,
                         const char *reason)
{
	if (!r->cfg->log.access)
		return;
	struct logline l;
	log_begin(&l, LOG_INFO, "close");
	char addr[ADDR_STRLEN];
	log_str(&l, "service", svc->cfg->name);
	log_str(&l, "client", addr_format(peer, addr, sizeof(addr)));
	log_str(&l, "backend", "-");
	log_u64(&l, "bytes_in", 0);
	log_u64(&l, "bytes_out", 0);
	log_u64(&l, "duration_ms", 0);
	log_str(&l, "end", "rejected");
	log_str(&l, "reason", reason);
	log_end(&l);
}

static void log_connect_error(struct session *s, const char *why)
{
	struct logline l;
	log_begin(&l, LOG_WARN, "connect_error");
	char addr[ADDR_STRLEN];
	log_str(&l, "service", s->svc->cfg->name);
	log_str(&l, "client", addr_format(&s->peer.sa, addr, sizeof(addr)));
	log_str(&l, "backend", backend_text(s));
	log_u64(&l, "try", s->tries + 1);
	log_str(&l, "error", why);
	log_end(&l);
}

/* --- timers ------------------------------------------------------------ */

static void on_session_timer(struct timer *t);

/* Arms the session's one timer at its earliest deadline.  Activity does not
 * move the timer: the idle check re-arms it lazily when it fires early. */
static void session_arm_timer(struct session *s)
{
	struct relay *r = relay_of(s);
	const struct cfg_service *c = s->svc->cfg;
	uint64_t when = UINT64_MAX;
	if (s->state == S_QUEUED || s->state == S_CONNECTING || s->state == S_HEADER)
		when = s->deadline;
	else if (s->state == S_ESTABLISHED && c->idle_timeout_ms)
		when = s->last_active + c->idle_timeout_ms;
	if (r->cfg->log.access_interval_ms && s->next_progress < when)
		when = s->next_progress;
	if (when == UINT64_MAX)
		timer_cancel(&r->eng->timers, &s->timer);
	else
		timer_set(&r->eng->timers, &s->timer, when, on_session_timer);
}

/* --- queue of clients waiting for a backend slot ------------------------- */

static void queue_push(struct service_rt *svc, struct session *s)
{
	s->in_queue = true;
	s->qnext = NULL;
	s->qprev = svc->queue_tail;
	if (svc->queue_tail)
		svc->queue_tail->qnext = s;
	else
		svc->queue_head = s;
	svc->queue_tail = s;
}

static void queue_remove(struct service_rt *svc, struct session *s)
{
	if (!s->in_queue)
		return;
	s->in_queue = false;
	if (s->qprev)
		s->qprev->qnext = s->qnext;
	else
		svc->queue_head = s->qnext;
	if (s->qnext)
		s->qnext->qprev = s->qprev;
	else
		svc->queue_tail = s->qprev;
	s->qprev = s->qnext = NULL;
}

static bool svc_any_eligible(const struct service_rt *svc)
{
	for (size_t i = 0; i < svc->n_backends; i++)
		if (lb_eligible(&svc->backends[i]->lb))
			return true;
	return false;
}

/* True when some backend is up but every one is at its max_connections. */
static bool svc_all_full(const struct service_rt *svc)
{
	bool any_up = false;
	for (size_t i = 0; i < svc->n_backends; i++) {
		const struct lb_backend *b = &svc->backends[i]->lb;
		if (b->up && !b->drained)
			any_up = true;
	}
	return any_up;
}

/* A backend slot was freed: serve waiting clients, oldest first. */
static void svc_wake_queue(struct service_rt *svc)
{
	while (svc->queue_head && svc_any_eligible(svc)) {
		struct session *s = svc->queue_head;
		queue_remove(svc, s);
		try_connect(s);
	}
}

/* --- the data path ----------------------------------------------------- */

static bool mirrors_have_room(const struct session *s);
static void mirror_push(struct mconn *mc, struct buf *b);
static void mirror_pump(struct mconn *mc);
static void mirrors_detach(struct session *s, bool reset);
static void maybe_stop(struct relay *r);
static void wgen_put(struct relay *r, struct wgen *wg);

/* The client's bytes stay in buffers while its PROXY header is read and
 * until the outgoing header is in front of them. */
static bool pp_holds_splice(const struct session *s)
{
	return s->state == S_HEADER ||
	       (s->svc->cfg->proxy_protocol != PP_NONE && s->state != S_ESTABLISHED);
}

/* A pool buffer holding the PROXY header for this client, or NULL. */
static struct buf *pp_header(struct session *s)
{
	struct buf *b = pool_get(relay_of(s)->eng->pool);
	if (!b)
		return NULL;
	int v = s->svc->cfg->proxy_protocol == PP_V1 ? 1 : 2;
	int n = pp_build(v, &s->peer.sa, &s->local.sa, b->data, relay_of(s)->eng->pool->buf_size);
	if (n <= 0) {
		buf_unref(b);
		return NULL;
	}
	b->len = (uint32_t)n;
	return b;
}

/* Asks for the next bytes from `side` when its half has room.  Pass-through
 * halves splice through a pipe while they hold no buffers, once a receive has
 * filled a whole buffer (as HAProxy's splice-auto: small request/response
 * traffic costs fewer system calls in buffers, one recv and one send per
 * message, than through a pipe); a half holds bytes either in buffers or in
 * its pipe, never both, so order is kept. */
static void arm_recv(struct session *s, enum side side)
{
	struct half *h = &s->h[side];
	struct engine *eng = relay_of(s)->eng;
	if (s->state == S_CLOSED || h->recv_armed || h->eof || h->eof_held ||
	    h->count >= RELAY_WINDOW)
		return;
	if (side == SIDE_BACKEND && s->state != S_ESTABLISHED)
		return;
	if (side == SIDE_CLIENT && !mirrors_have_room(s))
		return; /* on_lag: block paces the client to its slowest mirror */
	int r;
	if (h->bulk && !s->mirrors && !pp_holds_splice(s) && engine_can_splice(eng)) {
		/* Going over to the pipe: the buffers queued go out first
		 * (on_sent arms again once they are sent). */
		if (h->count > 0 || (h->pipe && h->pipe->bytes >= h->pipe->cap))
			return;
		r = engine_splice_in(eng, s->es[side], &h->pipe);
	} else {
		r = engine_recv(eng, s->es[side]);
	}
	if (r == 0)
		h->recv_armed = true;
}

static void check_finished(struct session *s)
{
	if (s->h[SIDE_CLIENT].shut && s->h[SIDE_BACKEND].shut)
		session_close(s, s->first_fin == SIDE_CLIENT ? END_CLIENT_FIN : END_BACKEND_FIN,
		              false, false);
}

/* Sends what `src` queued to the other side, or passes its FIN on. */
static void pump(struct session *s, enum side src)
{
	struct half *h = &s->h[src];
	enum side dst = src == SIDE_CLIENT ? SIDE_BACKEND : SIDE_CLIENT;
	if (s->state != S_ESTABLISHED || h->inflight || h->splice_out)
		return;
	struct engine *eng = relay_of(s)->eng;
	/* Buffers never follow pipe bytes (see arm_recv): buffers first. */
	if (h->count == 0 && h->pipe && h->pipe->bytes > 0) {
		uint32_t n = h->pipe->bytes;
		if (engine_splice_out(eng, s->es[dst], h->pipe, n) == 0)
			h->splice_out = n;
		return;
	}
	if (h->count > 0) {
		for (int i = 0; i < h->count; i++) {
			h->iov[i].iov_base = h->q[i]->data;
			h->iov[i].iov_len = h->q[i]->len;
		}
		if (engine_send(eng, s->es[dst], h->iov, h->count) == 0)
			h->inflight = h->count;
		return;
	}
	if (h->eof && !h->shut) {
		h->shut = true;
		/* ENOTCONN here means the peer is gone; its reset shows up as
		 * a receive error, so nothing to do with the result.  When the
		 * other way is already shut, the session closes now and the
		 * close sends this FIN (dst's end was read, so nothing unread
		 * turns it into a reset): one system call less per connection. */
		if (!s->h[dst].shut)
			(void)engine_shutdown_wr(eng, s->es[dst]);
		check_finished(s);
	}
}

static void pp_feed(struct session *s, struct buf *b, int res);
static void pp_error(struct session *s, const char *why);

static void on_received(void *owner, int tag, struct buf *b, int res)
{
	struct session *s = owner;
	enum side side = (enum side)tag;
	struct half *h = &s->h[side];
	h->recv_armed = false;
	if (s->state == S_HEADER && side == SIDE_CLIENT && res >= 0) {
		pp_feed(s, b, res);
		return;
	}
	if (res > 0) {
		h->q[h->count++] = b;
		h->received += (uint64_t)res;
		if ((size_t)res >= relay_of(s)->eng->pool->buf_size)
			h->bulk = true;
		if (side == SIDE_CLIENT)
			for (struct mconn *mc = s->mirrors, *next; mc; mc = next) {
				next = mc->next;
				mirror_push(mc, b);
			}
		if (side == SIDE_CLIENT)
			ctr_add(&s->svc->sh->st->ctr.bytes_in, (uint64_t)res);
		s->last_active = relay_of(s)->eng->now;
		pump(s, side);
		arm_recv(s, side);
		return;
	}
	if (res == 0) {
		/* After a reset, whichever operation runs first takes the
		 * socket's error and a receive after it reads a plain end of
		 * stream.  With a send to this side in flight (io_uring runs
		 * both at once) its result decides: a reset, or a real FIN. */
		const struct half *to = &s->h[side == SIDE_CLIENT ? SIDE_BACKEND : SIDE_CLIENT];
		if (to->inflight || to->splice_out) {
			h->eof_held = true;
			return;
		}
		h->eof = true;
		if (side == SIDE_CLIENT)
			for (struct mconn *mc = s->mirrors; mc; mc = mc->next) {
				mc->eof = true;
				mirror_pump(mc);
			}
		if (!s->fin_seen) {
			s->fin_seen = true;
			s->first_fin = (uint8_t)side;
		}
		pump(s, side);
		return;
	}
	if (res == -ENOBUFS)
		log_msg(LOG_ERROR, "internal", "buffer pool exhausted (service %s)",
		        s->svc->cfg->name);
	/* A reset (or any receive error) on one side resets the other. */
	if (side == SIDE_CLIENT)
		session_close(s, END_CLIENT_RESET, false, true);
	else
		session_close(s, END_BACKEND_RESET, true, false);
}

/* Bytes moved from `side` into its half's pipe (res > 0), or its end. */
static void on_spliced(void *owner, int tag, int res)
{
	struct session *s = owner;
	enum side side = (enum side)tag;
	struct half *h = &s->h[side];
	if (res <= 0) {
		on_received(owner, tag, NULL, res);
		return;
	}
	h->recv_armed = false;
	h->received += (uint64_t)res;
	if (side == SIDE_CLIENT)
		ctr_add(&s->svc->sh->st->ctr.bytes_in, (uint64_t)res);
	s->last_active = relay_of(s)->eng->now;
	pump(s, side);
	arm_recv(s, side);
}

static void on_sent(void *owner, int tag, int res)
{
	struct session *s = owner;
	enum side dst = (enum side)tag;
	enum side src = dst == SIDE_CLIENT ? SIDE_BACKEND : SIDE_CLIENT;
	struct half *h = &s->h[src];
	if (res < 0) {
		if (dst == SIDE_CLIENT)
			session_close(s, END_CLIENT_RESET, false, true);
		else
			session_close(s, END_BACKEND_RESET, true, false);
		return;
	}
	if (h->splice_out) {
		h->splice_out = 0;
		/* An empty pipe goes back at once: idle connections hold none. */
		if (h->pipe->bytes == 0) {
			pipes_put(relay_of(s)->eng->pipes, h->pipe);
			h->pipe = NULL;
		}
		/* A receive that found the pipe full waits for this. */
		if (h->recv_armed)
			engine_splice_in(relay_of(s)->eng, s->es[src], &h->pipe);
	} else {
		for (int i = 0; i < h->inflight; i++)
			buf_unref(h->q[i]);
		memmove(h->q, h->q + h->inflight,
		        (size_t)(h->count - h->inflight) * sizeof(h->q[0]));
		h->count = (uint8_t)(h->count - h->inflight);
		h->inflight = 0;
	}
	h->sent += (uint64_t)res;
	if (dst == SIDE_CLIENT)
		ctr_add(&s->svc->sh->st->ctr.bytes_out, (uint64_t)res);
	s->last_active = relay_of(s)->eng->now;
	if (s->h[dst].eof_held) {
		/* the send went through: the end of stream was a real FIN */
		s->h[dst].eof_held = false;
		on_received(s, dst, NULL, 0);
		if (s->state == S_CLOSED)
			return;
	}
	pump(s, src);
	arm_recv(s, src);
}

/* --- connecting -------------------------------------------------------- */

static void release_backend(struct session *s)
{
	if (s->backend < 0)
		return;
	slot_release(&s->svc->backends[s->backend]->lb.active);
}

/* One try failed: count it against the backend, then retry or give up. */
static void connect_failed(struct session *s, const char *why)
{
	struct relay *r = relay_of(s);
	struct backend_rt *b = s->svc->backends[s->backend];
	atomic_fetch_add_explicit(&b->connect_failures, 1, memory_order_relaxed);
	health_passive(b, &s->svc->cfg->health, false);
	log_connect_error(s, why);
	engine_close(r->eng, s->es[SIDE_BACKEND], false);
	s->es[SIDE_BACKEND] = NULL;
	release_backend(s);
	if ((size_t)s->backend < EXCL_WORDS * 64)
		s->excl[s->backend / 64] |= 1ull << (s->backend % 64);
	s->tries++;
	svc_wake_queue(s->svc);
	if (s->tries > s->svc->cfg->retries) {
		session_close(s, END_CONNECT_FAILED, false, false);
		return;
	}
	s->backend = -1;
	try_connect(s);
}

static void on_connected(void *owner, int tag, int err)
{
	struct session *s = owner;
	(void)tag;
	if (err) {
		connect_failed(s, strerror(-err));
		return;
	}
	health_passive(s->svc->backends[s->backend], &s->svc->cfg->health, true);
	if (s->svc->cfg->proxy_protocol != PP_NONE) {
		struct buf *hb = pp_header(s);
		if (!hb) {
			log_msg(LOG_ERROR, "internal", "no buffer for the PROXY header");
			session_close(s, END_CONNECT_FAILED, false, true);
			return;
		}
		struct half *h = &s->h[SIDE_CLIENT];
		memmove(h->q + 1, h->q, (size_t)h->count * sizeof(h->q[0]));
		h->q[0] = hb;
		h->count++;
	}
	s->state = S_ESTABLISHED;
	s->connected = true;
	s->last_active = relay_of(s)->eng->now;
	session_arm_timer(s);
	arm_recv(s, SIDE_BACKEND);
	pump(s, SIDE_CLIENT);
}

static void on_sock_closed(void *owner, int tag);

static const struct esock_cbs session_cbs = {
    .connected = on_connected,
    .received = on_received,
    .sent = on_sent,
    .spliced = on_spliced,
    .closed = on_sock_closed,
};

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Chooses a backend and takes one of its connection slots.  Another worker
 * may take the last slot between the balancer's look and the increment; then
 * that backend is skipped for this pick.  Returns the index or -1. */
static int pick_backend(struct session *s)
{
	struct service_rt *svc = s->svc;
	bool use_excl = svc->n_backends <= EXCL_WORDS * 64;
	uint64_t skip[EXCL_WORDS];
	memcpy(skip, s->excl, sizeof(skip));
	for (unsigned round = 0; round < 8; round++) {
		int idx = lb_pick(&svc->lb, &s->peer.sa, use_excl ? skip : NULL);
		if (idx < 0 && s->tries > 0 && round == 0) {
			/* every backend was tried: any eligible one will do */
			memset(skip, 0, sizeof(skip));
			idx = lb_pick(&svc->lb, &s->peer.sa, use_excl ? skip : NULL);
		}
		if (idx < 0)
			return -1;
		struct lb_backend *b = &svc->backends[idx]->lb;
		if (slot_acquire(&b->active, b->max_connections))
			return idx;
		if (!use_excl)
			return -1;
		skip[idx / 64] |= 1ull << (idx % 64);
	}
	return -1;
}

/* Chooses a backend and starts connecting; queues or ends the session when
 * none can take it. */
static void try_connect(struct session *s)
{
	struct service_rt *svc = s->svc;
	struct relay *r = svc->relay;
	int idx = pick_backend(s);
	if (idx < 0) {
		if (svc_all_full(svc) && svc->cfg->queue_timeout_ms > 0) {
			if (s->state != S_QUEUED) {
				s->state = S_QUEUED;
				s->deadline = r->eng->now + svc->cfg->queue_timeout_ms;
			}
			queue_push(svc, s);
			session_arm_timer(s);
			return;
		}
		ctr_add(&svc->sh->st->ctr.rejected_no_backend, 1);
		session_close(s, END_NO_BACKEND, false, false);
		return;
	}
	s->backend = idx;
	struct backend_rt *b = svc->backends[idx];
	s->state = S_CONNECTING;
	s->deadline = r->eng->now + svc->cfg->connect_timeout_ms;
	int fd = socket(b->cfg->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		int err = errno;
		log_connect_error(s, strerror(err));
		release_backend(s);
		session_close(s, END_CONNECT_FAILED, false, false);
		return;
	}
	set_nodelay(fd);
	struct esock *es = engine_open(r->eng, fd, &session_cbs, s, SIDE_BACKEND);
	if (!es) {
		close(fd);
		log_connect_error(s, "engine socket table full");
		release_backend(s);
		session_close(s, END_CONNECT_FAILED, false, false);
		return;
	}
	s->es[SIDE_BACKEND] = es;
	s->socks++;
	engine_connect(r->eng, es, (const struct sockaddr *)&b->cfg->addr.sa, b->cfg->addr.salen);
	session_arm_timer(s);
}

static void on_session_timer(struct timer *t)
{
	struct session *s = container_of(t, struct session, timer);
	struct relay *r = relay_of(s);
	uint64_t now = r->eng->now;
	const struct cfg_service *c = s->svc->cfg;
	uint64_t interval = r->cfg->log.access_interval_ms;
	if (interval && now >= s->next_progress) {
		log_session(s, "progress", END_NONE);
		s->next_progress = now + interval;
	}
	switch (s->state) {
	case S_HEADER:
		if (now >= s->deadline) {
			pp_error(s, "no complete header within connect_timeout");
			return;
		}
		break;
	case S_QUEUED:
		if (now >= s->deadline) {
			ctr_add(&s->svc->sh->st->ctr.rejected_no_backend, 1);
			session_close(s, END_NO_BACKEND, false, false);
			return;
		}
		break;
	case S_CONNECTING:
		if (now >= s->deadline) {
			connect_failed(s, "connect timeout");
			return;
		}
		break;
	case S_ESTABLISHED:
		if (c->idle_timeout_ms && now >= s->last_active + c->idle_timeout_ms) {
			session_close(s, END_IDLE_TIMEOUT, false, false);
			return;
		}
		break;
	default:
		return;
	}
	session_arm_timer(s);
}

/* --- ending ------------------------------------------------------------ */

static void session_free(struct session *s)
{
	struct relay *r = relay_of(s);
	for (int side = 0; side < 2; side++) {
		struct half *h = &s->h[side];
		for (int i = 0; i < h->count; i++)
			buf_unref(h->q[i]);
		h->count = 0;
		if (h->pipe) {
			pipes_put(r->eng->pipes, h->pipe);
			h->pipe = NULL;
		}
	}
	if (s->pp_acc) {
		buf_unref(s->pp_acc);
		s->pp_acc = NULL;
	}
	s->state = S_FREE;
	s->gen++;
	r->free[r->nfree++] = (uint32_t)(s - r->slab);
	r->releasing--;
	wgen_put(r, s->svc->wg);
}

static void maybe_stop(struct relay *r)
{
	if (r->shutting_down && r->active == 0 && r->releasing == 0 && r->mirrors_open == 0 &&
	    r->listeners_closing == 0 && !(r->busy && r->busy(r->busy_arg)))
		engine_stop(r->eng);
}

void relay_maybe_stop(struct relay *r)
{
	maybe_stop(r);
}

static void on_sock_closed(void *owner, int tag)
{
	struct session *s = owner;
	(void)tag;
	s->socks--;
	if (s->state == S_CLOSED && s->socks == 0) {
		struct relay *r = relay_of(s); /* s->svc may go with the session */
		session_free(s);
		maybe_stop(r);
	}
}

/* The one way a session ends.  Logs it, frees the backend slot and closes
 * both sockets (with a reset where asked); the slot itself is freed when the
 * engine has released every socket. */
static void session_close(struct session *s, enum end_reason end, bool rst_client, bool rst_backend)
{
	struct relay *r = relay_of(s);
	if (s->state == S_CLOSED || s->state == S_FREE)
		return;
	queue_remove(s->svc, s);
	bool held_backend = s->backend >= 0 && s->es[SIDE_BACKEND] != NULL;
	timer_cancel(&r->eng->timers, &s->timer);
	log_session(s, "close", end);
	s->state = S_CLOSED;
	mirrors_detach(s, end == END_CLIENT_RESET);
	r->releasing++;
	if (s->es[SIDE_CLIENT])
		engine_close(r->eng, s->es[SIDE_CLIENT], rst_client);
	if (s->es[SIDE_BACKEND])
		engine_close(r->eng, s->es[SIDE_BACKEND], rst_backend);
	s->es[SIDE_CLIENT] = s->es[SIDE_BACKEND] = NULL;
	s->svc->active--;
	slot_release(&s->svc->sh->st->active);
	slot_release(&relay_active_total);
	r->active--;
	if (held_backend) {
		release_backend(s);
		svc_wake_queue(s->svc);
	}
	if (s->socks == 0) /* cannot happen: the client socket is always open */
		session_free(s);
	maybe_stop(r);
}

/* --- mirrors ------------------------------------------------------------ */

static void mirror_pump(struct mconn *mc);
static void mirror_close(struct mconn *mc, bool reset);

static void log_mirror(struct mconn *mc, enum log_level level, const char *event, const char *why)
{
	struct logline l;
	log_begin(&l, level, event);
	if (!l.enabled)
		return;
	log_str(&l, "service", mc->svc->name);
	if (mc->s) {
		char addr[ADDR_STRLEN];
		log_str(&l, "client", addr_format(&mc->s->peer.sa, addr, sizeof(addr)));
	}
	log_str(&l, "mirror", mc->rt->cfg->addr.text);
	if (why)
		log_str(&l, "error", why);
	log_end(&l);
}

/* Room for one more client read in every mirror that blocks. */
static bool mirrors_have_room(const struct session *s)
{
	for (const struct mconn *mc = s->mirrors; mc; mc = mc->next) {
		const struct cfg_mirror *c = mc->rt->cfg;
		if (c->on_lag != LAG_BLOCK || mc->state == M_CLOSED)
			continue;
		if (mc->queued >= c->max_lag || mc->count + 1 >= mc->r->mring_cap)
			return false;
	}
	return true;
}

/* A mirror that failed or fell behind: counted, logged, closed.  The
 * client's connection never notices. */
static void mirror_fail(struct mconn *mc, const char *why)
{
	atomic_fetch_add_explicit(&mc->rt->disconnects, 1, memory_order_relaxed);
	log_mirror(mc, LOG_WARN, "mirror_error", why);
	mirror_close(mc, true);
}

static void unlink_mirror(struct mconn *mc)
{
	if (!mc->s)
		return;
	struct mconn **pp = &mc->s->mirrors;
	while (*pp && *pp != mc)
		pp = &(*pp)->next;
	if (*pp)
		*pp = mc->next;
	mc->next = NULL;
	mc->s = NULL;
}

static void mirror_close(struct mconn *mc, bool reset)
{
	if (mc->state == M_CLOSED || mc->state == M_FREE)
		return;
	struct session *s = mc->s;
	unlink_mirror(mc);
	mc->state = M_CLOSED;
	timer_cancel(&mc->r->eng->timers, &mc->timer);
	engine_close(mc->r->eng, mc->es, reset);
	mc->es = NULL;
	atomic_fetch_sub_explicit(&mc->rt->active, 1, memory_order_relaxed);
	/* A blocking mirror that goes away may unblock its client. */
	if (s)
		arm_recv(s, SIDE_CLIENT);
}

/* A detached mirror drains for at most idle_timeout without progress. */
static void on_mirror_timer(struct timer *t)
{
	struct mconn *mc = container_of(t, struct mconn, timer);
	uint64_t limit = mc->svc->idle_timeout_ms;
	if (!limit)
		return;
	if (mc->r->eng->now >= mc->last_active + limit) {
		mirror_fail(mc, "idle timeout while draining");
		return;
	}
	timer_set(&mc->r->eng->timers, &mc->timer, mc->last_active + limit, on_mirror_timer);
}

static void on_mirror_connect_timeout(struct timer *t)
{
	struct mconn *mc = container_of(t, struct mconn, timer);
	if (mc->state == M_CONNECTING)
		mirror_fail(mc, "connect timeout");
}

static void on_mirror_connected(void *owner, int tag, int err)
{
	struct mconn *mc = owner;
	(void)tag;
	if (mc->s) /* attached: the timer was the connect timeout */
		timer_cancel(&mc->r->eng->timers, &mc->timer);
	if (err) {
		mirror_fail(mc, strerror(-err));
		return;
	}
	mc->state = M_UP;
	mc->last_active = mc->r->eng->now;
	if (engine_recv(mc->r->eng, mc->es) == 0)
		mc->recv_armed = true;
	mirror_pump(mc);
}

static void on_mirror_received(void *owner, int tag, struct buf *b, int res)
{
	struct mconn *mc = owner;
	(void)tag;
	mc->recv_armed = false;
	if (b)
		buf_unref(b); /* what a mirror answers is thrown away */
	if (res > 0) {
		if (engine_recv(mc->r->eng, mc->es) == 0)
			mc->recv_armed = true;
		return;
	}
	if (res < 0)
		mirror_fail(mc, strerror(-res));
	/* res == 0: the mirror stopped sending; it may still read */
}

static void on_mirror_sent(void *owner, int tag, int res)
{
	struct mconn *mc = owner;
	(void)tag;
	if (res < 0) {
		mirror_fail(mc, strerror(-res));
		return;
	}
	uint32_t cap = mc->r->mring_cap;
	for (uint32_t i = 0; i < mc->inflight; i++) {
		buf_unref(mc->ring[mc->head]);
		mc->head = (mc->head + 1) % cap;
	}
	mc->count -= mc->inflight;
	mc->inflight = 0;
	mc->queued -= (uint64_t)res;
	mc->last_active = mc->r->eng->now;
	atomic_fetch_add_explicit(&mc->rt->bytes, (uint64_t)res, memory_order_relaxed);
	mirror_pump(mc);
	if (mc->s && mc->rt->cfg->on_lag == LAG_BLOCK)
		arm_recv(mc->s, SIDE_CLIENT);
}

static void on_mirror_closed(void *owner, int tag)
{
	struct mconn *mc = owner;
	(void)tag;
	struct relay *r = mc->r;
	uint32_t cap = r->mring_cap;
	for (uint32_t i = 0; i < mc->count; i++)
		buf_unref(mc->ring[(mc->head + i) % cap]);
	mc->count = 0;
	mc->state = M_FREE;
	r->mfree[r->nmfree++] = (uint32_t)(mc - r->mslab);
	r->mirrors_open--;
	wgen_put(r, mc->wg);
	maybe_stop(r);
}

static const struct esock_cbs mirror_cbs = {
    .connected = on_mirror_connected,
    .received = on_mirror_received,
    .sent = on_mirror_sent,
    .closed = on_mirror_closed,
};

/* Sends what is queued, or the FIN once the client's bytes are all out. */
static void mirror_pump(struct mconn *mc)
{
	if (mc->state != M_UP || mc->inflight)
		return;
	if (mc->count > 0) {
		uint32_t n = mc->count < ENGINE_MAX_IOV ? mc->count : ENGINE_MAX_IOV;
		for (uint32_t i = 0; i < n; i++) {
			struct buf *b = mc->ring[(mc->head + i) % mc->r->mring_cap];
			mc->iov[i].iov_base = b->data;
			mc->iov[i].iov_len = b->len;
		}
		if (engine_send(mc->r->eng, mc->es, mc->iov, (int)n) == 0)
			mc->inflight = n;
		return;
	}
	if (mc->eof && !mc->fin_sent) {
		mc->fin_sent = true;
		(void)engine_shutdown_wr(mc->r->eng, mc->es);
	}
	if (mc->fin_sent && !mc->s)
		mirror_close(mc, false); /* detached and done */
}

/* Queues one client buffer for a mirror (a new reference, no copy). */
static void mirror_push(struct mconn *mc, struct buf *b)
{
	const struct cfg_mirror *c = mc->rt->cfg;
	if (mc->count >= mc->r->mring_cap) {
		mirror_fail(mc, "lagging: queue full");
		return;
	}
	mc->ring[(mc->head + mc->count) % mc->r->mring_cap] = buf_ref(b);
	mc->count++;
	mc->queued += b->len;
	if (c->on_lag == LAG_DISCONNECT && mc->queued > c->max_lag) {
		mirror_fail(mc, "lagging: more than max_lag queued");
		return;
	}
	mirror_pump(mc);
}

/* `sample` spread evenly and deterministically: the nth connection is
 * mirrored when n * sample / 100 steps up (at 25%: every fourth). */
static bool mirror_sampled(struct mirror_rt *rt)
{
	uint64_t n = atomic_fetch_add_explicit(&rt->seq, 1, memory_order_relaxed) + 1;
	unsigned pct = rt->cfg->sample;
	return (n * pct) / 100 != ((n - 1) * pct) / 100;
}

static void mirror_open(struct session *s, struct mirror_rt *rt)
{
	struct relay *r = relay_of(s);
	if (!mirror_sampled(rt))
		return;
	if (r->nmfree == 0) {
		atomic_fetch_add_explicit(&rt->disconnects, 1, memory_order_relaxed);
		return;
	}
	const struct cfg_addr *a = &rt->cfg->addr;
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct mconn *mc = &r->mslab[r->mfree[r->nmfree - 1]];
	struct esock *es = fd >= 0 ? engine_open(r->eng, fd, &mirror_cbs, mc, SIDE_MIRROR) : NULL;
	if (!es) {
		if (fd >= 0)
			close(fd);
		atomic_fetch_add_explicit(&rt->disconnects, 1, memory_order_relaxed);
		return;
	}
	r->nmfree--;
	r->mirrors_open++;
	struct buf **ring = mc->ring;
	memset(mc, 0, offsetof(struct mconn, iov));
	mc->ring = ring;
	mc->r = r;
	mc->s = s;
	mc->rt = rt;
	mc->svc = s->svc->cfg;
	mc->wg = s->svc->wg;
	mc->wg->users++;
	mc->es = es;
	mc->state = M_CONNECTING;
	mc->next = s->mirrors;
	s->mirrors = mc;
	atomic_fetch_add_explicit(&rt->active, 1, memory_order_relaxed);
	set_nodelay(fd);
	engine_connect(r->eng, es, (const struct sockaddr *)&a->sa, a->salen);
	/* A mirror that never answers must not hold a blocking client. */
	timer_set(&r->eng->timers, &mc->timer, r->eng->now + mc->svc->connect_timeout_ms,
	          on_mirror_connect_timeout);
}

/* The session ended: its mirrors finish on their own.  A client reset
 * resets them; otherwise they get a FIN after what is queued. */
static void mirrors_detach(struct session *s, bool reset)
{
	struct mconn *mc;
	while ((mc = s->mirrors) != NULL) {
		s->mirrors = mc->next;
		mc->next = NULL;
		mc->s = NULL;
		if (reset) {
			mirror_close(mc, true);
			continue;
		}
		mc->eof = true;
		mc->last_active = relay_of(s)->eng->now;
		on_mirror_timer(&mc->timer);
		mirror_pump(mc);
	}
}

/* --- PROXY protocol from clients ------------------------------------------ */

/* The client is known: mirrors get the PROXY header first, then a backend
 * is chosen.  Reads ahead while connecting: at most one window. */
static void mirror_headers(struct session *s)
{
	if (s->svc->cfg->proxy_protocol == PP_NONE || !s->mirrors)
		return;
	struct buf *hb = pp_header(s);
	for (struct mconn *mc = s->mirrors, *next; hb && mc; mc = next) {
		next = mc->next;
		mirror_push(mc, hb);
	}
	if (hb)
		buf_unref(hb);
}

static void session_start(struct session *s)
{
	mirror_headers(s);
	s->state = S_CONNECTING;
	arm_recv(s, SIDE_CLIENT);
	try_connect(s);
}

static void pp_error(struct session *s, const char *why)
{
	struct logline l;
	char addr[ADDR_STRLEN];
	log_begin(&l, LOG_WARN, "proxy_protocol_error");
	log_str(&l, "service", s->svc->cfg->name);
	log_str(&l, "client", addr_format(&s->peer.sa, addr, sizeof(addr)));
	log_str(&l, "error", why);
	log_end(&l);
	session_close(s, END_CLIENT_RESET, true, false);
}

/* Queues b (taking the caller's reference) as client bytes, for the backend
 * and the mirrors; an empty b is dropped. */
static void queue_client_bytes(struct session *s, struct buf *b)
{
	if (b->len == 0) {
		buf_unref(b);
		return;
	}
	struct half *h = &s->h[SIDE_CLIENT];
	h->q[h->count++] = b;
	h->received += b->len;
	ctr_add(&s->svc->sh->st->ctr.bytes_in, b->len);
	for (struct mconn *mc = s->mirrors, *next; mc; mc = next) {
		next = mc->next;
		mirror_push(mc, b);
	}
}

/* Bytes of a client whose PROXY header is not complete yet: gathered in
 * the first buffer (a header is at most PP_MAX_HEADER bytes) until it
 * parses; what follows the header is kept, in order, as client bytes. */
static void pp_feed(struct session *s, struct buf *b, int res)
{
	if (res == 0) {
		pp_error(s, "connection closed before a complete header");
		return;
	}
	struct buf *acc = s->pp_acc;
	uint32_t used = (uint32_t)res; /* bytes of b now in acc */
	if (!acc) {
		acc = s->pp_acc = b;
	} else {
		uint32_t room = PP_MAX_HEADER > acc->len ? PP_MAX_HEADER - acc->len : 0;
		used = (uint32_t)res < room ? (uint32_t)res : room;
		memcpy(acc->data + acc->len, b->data, used);
		acc->len += used;
	}
	struct pp_info info;
	const char *why = "malformed header";
	int n = pp_parse(acc->data, acc->len, &info, &why);
	if (n == PP_NEED_MORE && acc->len < PP_MAX_HEADER) {
		if (b != acc)
			buf_unref(b);
		arm_recv(s, SIDE_CLIENT);
		return;
	}
	if (n <= 0) {
		if (b != acc)
			buf_unref(b);
		pp_error(s, n == PP_NEED_MORE ? "header too long" : why);
		return;
	}
	s->pp_acc = NULL;
	if (info.has_addr) {
		memset(&s->peer, 0, sizeof(s->peer));
		memcpy(&s->peer, &info.src,
		       info.src_len < sizeof(s->peer) ? info.src_len : sizeof(s->peer));
		memset(&s->local, 0, sizeof(s->local));
		memcpy(&s->local, &info.dst,
		       info.dst_len < sizeof(s->local) ? info.dst_len : sizeof(s->local));
	}
	/* What came after the header: the rest of acc, then the rest of b.
	 * Both buffers are ours alone here, so they are shifted in place. */
	memmove(acc->data, acc->data + n, acc->len - (uint32_t)n);
	acc->len -= (uint32_t)n;
	struct buf *rest = NULL;
	if (b != acc) {
		memmove(b->data, b->data + used, (uint32_t)res - used);
		b->len = (uint32_t)res - used;
		rest = b;
	}
	s->last_active = relay_of(s)->eng->now;
	/* Order: mirrors' PROXY header, then these bytes, then new reads. */
	mirror_headers(s);
	queue_client_bytes(s, acc);
	if (rest)
		queue_client_bytes(s, rest);
	s->state = S_CONNECTING;
	arm_recv(s, SIDE_CLIENT);
	try_connect(s);
}

/* --- accepting --------------------------------------------------------- */

#define ACCEPT_PAUSE_MS 100

static void on_resume_accept(struct timer *t)
{
	struct listener_rt *l = container_of(t, struct listener_rt, resume);
	struct relay *r = l->svc->relay;
	if (r->shutting_down || !l->es)
		return;
	l->paused = false;
	engine_accept_pause(r->eng, l->es, false);
}

static bool acl_allows(const struct cfg_service *c, const struct sockaddr *peer)
{
	for (size_t i = 0; i < c->n_deny; i++)
		if (cidr_match(&c->deny[i], peer))
			return false;
	if (c->n_allow == 0)
		return true;
	for (size_t i = 0; i < c->n_allow; i++)
		if (cidr_match(&c->allow[i], peer))
			return true;
	return false;
}

static void on_accepted(void *owner, int fd, const struct sockaddr *peer, socklen_t len)
{
	struct listener_rt *l = owner;
	struct service_rt *svc = l->svc;
	struct relay *r = svc->relay;
	if (fd < 0) {
		/* Out of descriptors or memory: the pending client stays in the
		 * backlog.  Pause this listener instead of spinning on it. */
		if (!r->accept_warned) {
			r->accept_warned = true;
			struct logline ll;
			log_begin(&ll, LOG_WARN, "accept_paused");
			log_str(&ll, "service", svc->cfg->name);
			log_str(&ll, "listen", l->text);
			log_str(&ll, "error", strerror(-fd));
			log_fmt(&ll, "msg", "cannot accept, retrying every %dms", ACCEPT_PAUSE_MS);
			log_end(&ll);
		}
		l->paused = true;
		engine_accept_pause(r->eng, l->es, true);
		engine_timer_set(r->eng, &l->resume, ACCEPT_PAUSE_MS, on_resume_accept);
		return;
	}
	if (r->accept_warned) {
		r->accept_warned = false;
		log_msg(LOG_INFO, "accept_resumed", "accepting again on %s", l->text);
	}
	ctr_add(&svc->sh->st->ctr.connections_total, 1);
	const struct cfg_service *c = svc->cfg;
	if (!acl_allows(c, peer)) {
		ctr_add(&svc->sh->st->ctr.rejected_acl, 1);
		close(fd);
		log_rejected(r, svc, peer, "acl");
		return;
	}
	bool got_global = false, got_svc = false;
	struct session *s = NULL;
	struct esock *es = NULL;
	if (r->nfree > 0 &&
	    (got_global = slot_acquire(&relay_active_total, r->cfg->max_connections)) &&
	    (got_svc = slot_acquire(&svc->sh->st->active, c->max_connections))) {
		s = &r->slab[r->free[r->nfree - 1]];
		es = engine_open(r->eng, fd, &session_cbs, s, SIDE_CLIENT);
	}
	if (!es) {
		if (got_global)
			slot_release(&relay_active_total);
		if (got_svc)
			slot_release(&svc->sh->st->active);
		ctr_add(&svc->sh->st->ctr.rejected_limit, 1);
		close(fd);
		log_rejected(r, svc, peer, "limit");
		return;
	}
	r->nfree--;
	set_nodelay(fd);
	uint32_t gen = s->gen;
	memset(s, 0, sizeof(*s));
	s->gen = gen;
	s->svc = svc;
	s->backend = -1;
	s->es[SIDE_CLIENT] = es;
	s->socks = 1;
	if (len > sizeof(s->peer))
		len = sizeof(s->peer);
	memcpy(&s->peer, peer, len);
	s->t_start = s->last_active = r->eng->now;
	s->next_progress = r->cfg->log.access_interval_ms
	                       ? s->t_start + r->cfg->log.access_interval_ms
	                       : UINT64_MAX;
	/* Only an outgoing PROXY header names the address the client reached. */
	socklen_t ll = sizeof(s->local);
	if ((c->proxy_protocol != PP_NONE || c->accept_proxy_protocol) &&
	    getsockname(fd, &s->local.sa, &ll) == -1)
		memset(&s->local, 0, sizeof(s->local));
	r->active++;
	svc->active++;
	svc->wg->users++;
	for (size_t j = 0; j < svc->sh->n_mirrors; j++)
		mirror_open(s, svc->sh->mirrors[j]);
	if (c->accept_proxy_protocol) {
		/* The client's PROXY header first; the backend is chosen once
		 * the real client address is known. */
		s->state = S_HEADER;
		s->deadline = r->eng->now + c->connect_timeout_ms;
		session_arm_timer(s);
		arm_recv(s, SIDE_CLIENT);
		return;
	}
	session_start(s);
}

/* --- generations --------------------------------------------------------- */

_Atomic unsigned relay_active_total;

/* gen_current is written by worker 0 (start, reload) and read by the admin
 * thread; the lock makes "read it and take a reference" one step. */
static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct relay_shared *gen_current;
static uint64_t gen_seq;

static void svc_state_put(struct svc_state *st)
{
	if (st && atomic_fetch_sub(&st->refs, 1) == 1) {
		free(st->name);
		free(st);
	}
}

static void backend_put(struct backend_rt *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
		free(b->own.addr.text);
		free(b);
	}
}

static void mirror_put(struct mirror_rt *m)
{
	if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
		free(m->own.addr.text);
		free(m);
	}
}

static void shared_free(struct relay_shared *sh)
{
	for (size_t i = 0; sh->svcs && i < sh->n_svcs; i++) {
		struct shared_service *ss = &sh->svcs[i];
		svc_state_put(ss->st);
		for (size_t j = 0; ss->backends && j < ss->n_backends; j++)
			backend_put(ss->backends[j]);
		for (size_t j = 0; ss->mirrors && j < ss->n_mirrors; j++)
			mirror_put(ss->mirrors[j]);
		free(ss->backends);
		free(ss->lbp);
		free(ss->mirrors);
	}
	free(sh->svcs);
	config_free(sh->cfg);
	free(sh);
}

void relay_shared_release(struct relay_shared *sh)
{
	if (sh && atomic_fetch_sub(&sh->refs, 1) == 1)
		shared_free(sh);
}

struct relay_shared *relay_current_acquire(void)
{
	pthread_mutex_lock(&gen_lock);
	struct relay_shared *sh = gen_current;
	if (sh)
		atomic_fetch_add(&sh->refs, 1);
	pthread_mutex_unlock(&gen_lock);
	return sh;
}

/* Makes sh current (taking a reference) and drops the old current's. */
static void gen_publish(struct relay_shared *sh)
{
	if (sh)
		atomic_fetch_add(&sh->refs, 1);
	pthread_mutex_lock(&gen_lock);
	struct relay_shared *old = gen_current;
	gen_current = sh;
	pthread_mutex_unlock(&gen_lock);
	relay_shared_release(old);
}

static const struct shared_service *prev_service(const struct relay_shared *prev,
                                                 const struct cfg_service *c)
{
	for (size_t i = 0; prev && i < prev->n_svcs; i++)
		if (strcmp(prev->svcs[i].cfg->name, c->name) == 0 &&
		    prev->svcs[i].cfg->mode == c->mode)
			return &prev->svcs[i];
	return NULL;
}

/* A backend or mirror is the same one across a reload when its service has
 * the same name and it has the same address text. */
static struct backend_rt *backend_get(const struct shared_service *ps, const struct cfg_backend *c)
{
	for (size_t i = 0; ps && i < ps->n_backends; i++) {
		struct backend_rt *b = ps->backends[i];
		if (strcmp(b->own.addr.text, c->addr.text) == 0) {
			atomic_fetch_add(&b->refs, 1);
			/* Balancers of older views read these too: atomics. */
			atomic_store(&b->lb.weight, c->weight);
			atomic_store(&b->lb.max_connections, c->max_connections);
			return b;
		}
	}
	struct backend_rt *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->own = *c;
	b->own.addr.text = strdup(c->addr.text);
	if (!b->own.addr.text) {
		free(b);
		return NULL;
	}
	b->cfg = &b->own;
	b->lb.key = b->own.addr.text;
	b->lb.weight = c->weight;
	b->lb.max_connections = c->max_connections;
	b->lb.up = true;
	b->refs = 1;
	return b;
}

static struct mirror_rt *mirror_get(const struct shared_service *ps, const struct cfg_mirror *c)
{
	for (size_t i = 0; ps && i < ps->n_mirrors; i++) {
		struct mirror_rt *m = ps->mirrors[i];
		if (strcmp(m->own.addr.text, c->addr.text) == 0 && m->own.on_lag == c->on_lag &&
		    m->own.sample == c->sample && m->own.max_lag == c->max_lag) {
			atomic_fetch_add(&m->refs, 1);
			return m;
		}
	}
	struct mirror_rt *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->own = *c;
	m->own.addr.text = strdup(c->addr.text);
	if (!m->own.addr.text) {
		free(m);
		return NULL;
	}
	m->cfg = &m->own;
	m->refs = 1;
	return m;
}

/* Host names: the latest addresses, owned by worker 0 (the only thread
 * that builds generations). */
static struct resolve_result *g_resolved;

void relay_set_resolved(struct resolve_result *res)
{
	resolve_result_free(g_resolved);
	g_resolved = res;
}

const struct resolve_result *relay_resolved(void)
{
	return g_resolved;
}

/* Splits "name:port" (a host name as written) into its parts. */
static int split_name(const char *text, char *host, size_t hostlen, unsigned *port)
{
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= hostlen || colon == text)
		return -1;
	char *end;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (*end || p == 0 || p > 65535)
		return -1;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	*port = (unsigned)p;
	return 0;
}

const struct resolve_entry *relay_resolved_entry(const struct cfg_addr *a, unsigned *port)
{
	char host[RESOLVE_NAME_MAX + 1];
	unsigned p;
	if (a->salen || !g_resolved || split_name(a->text, host, sizeof(host), &p) < 0)
		return NULL;
	if (port)
		*port = p;
	return resolve_result_find(g_resolved, host);
}

void relay_resolved_addr(const struct cfg_addr *named, const struct sockaddr_storage *ip,
                         unsigned port, struct cfg_addr *out, char *text, size_t len)
{
	memset(out, 0, sizeof(*out));
	out->sa = *ip;
	if (out->sa.ss_family == AF_INET) {
		((struct sockaddr_in *)&out->sa)->sin_port = htons((uint16_t)port);
		out->salen = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)&out->sa)->sin6_port = htons((uint16_t)port);
		out->salen = sizeof(struct sockaddr_in6);
	}
	char addr[ADDR_STRLEN];
	addr_format((struct sockaddr *)&out->sa, addr, sizeof(addr));
	char *c = strrchr(addr, ':');
	if (c)
		*c = '\0';
	snprintf(text, len, "%s@%s", named->text, addr);
	out->text = text;
}

/* The addresses a written address stands for: itself, or every address
 * its host name resolved to (none before the first answer). */
static size_t expand_addr(const struct cfg_addr *a, struct cfg_addr *out, size_t max,
                          char (*texts)[RESOLVE_NAME_MAX + 80])
{
	if (a->salen) {
		if (max)
			out[0] = *a;
		return 1;
	}
	unsigned port = 0;
	const struct resolve_entry *e = relay_resolved_entry(a, &port);
	size_t n = 0;
	for (; e && n < e->n_addrs && n < max; n++)
		relay_resolved_addr(a, &e->addrs[n], port, &out[n], texts[n], sizeof(texts[n]));
	return n;
}

/* Builds a generation from cfg (taking it over), carrying the state of
 * services, backends and mirrors that prev has too.  NULL on OOM (cfg is
 * freed then). */
static struct relay_shared *shared_build(struct config *cfg, const struct relay_shared *prev)
{
	struct relay_shared *sh = calloc(1, sizeof(*sh));
	if (!sh) {
		config_free(cfg);
		return NULL;
	}
	sh->cfg = cfg;
	sh->gen = ++gen_seq;
	sh->n_svcs = cfg->n_services;
	sh->svcs = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*sh->svcs));
	if (!sh->svcs)
		goto nomem;
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct cfg_service *c = &cfg->services[i];
		struct shared_service *ss = &sh->svcs[i];
		const struct shared_service *ps = prev_service(prev, c);
		ss->cfg = c;
		if (ps) {
			ss->st = ps->st;
			atomic_fetch_add(&ss->st->refs, 1);
		} else {
			ss->st = calloc(1, sizeof(*ss->st));
			if (!ss->st)
				goto nomem;
			ss->st->refs = 1;
			ss->st->name = strdup(c->name);
			if (!ss->st->name)
				goto nomem;
		}
		size_t n = 0;
		for (size_t j = 0; j < c->n_backends; j++) {
			const struct cfg_addr *a = &c->backends[j].addr;
			const struct resolve_entry *e = NULL;
			char host[RESOLVE_NAME_MAX + 1];
			unsigned port;
			if (a->salen)
				n++;
			else if (g_resolved &&
			         split_name(a->text, host, sizeof(host), &port) == 0 &&
			         (e = resolve_result_find(g_resolved, host)))
				n += e->n_addrs;
		}
		ss->backends = calloc(n ? n : 1, sizeof(*ss->backends));
		ss->lbp = calloc(n ? n : 1, sizeof(*ss->lbp));
		ss->mirrors = calloc(c->n_mirrors ? c->n_mirrors : 1, sizeof(*ss->mirrors));
		if (!ss->backends || !ss->lbp || !ss->mirrors)
			goto nomem;
		for (size_t j = 0; j < c->n_backends; j++) {
			struct cfg_addr addrs[RESOLVE_MAX_ADDRS];
			char texts[RESOLVE_MAX_ADDRS][RESOLVE_NAME_MAX + 80];
			size_t m =
			    expand_addr(&c->backends[j].addr, addrs, RESOLVE_MAX_ADDRS, texts);
			for (size_t k = 0; k < m && ss->n_backends < n; k++) {
				struct cfg_backend one = c->backends[j];
				one.addr = addrs[k];
				struct backend_rt *b = backend_get(ps, &one);
				if (!b)
					goto nomem;
				ss->backends[ss->n_backends] = b;
				ss->lbp[ss->n_backends] = &b->lb;
				ss->n_backends++;
			}
		}
		for (size_t j = 0; j < c->n_mirrors; j++) {
			struct cfg_addr addrs[1];
			char texts[1][RESOLVE_NAME_MAX + 80];
			struct cfg_mirror one = c->mirrors[j];
			if (!c->mirrors[j].addr.salen) {
				/* a mirror that is a name: its first address */
				if (!expand_addr(&c->mirrors[j].addr, addrs, 1, texts))
					continue;
				one.addr = addrs[0];
			}
			ss->mirrors[ss->n_mirrors] = mirror_get(ps, &one);
			if (!ss->mirrors[ss->n_mirrors])
				goto nomem;
			ss->n_mirrors++;
		}
	}
	return sh;
nomem:
	shared_free(sh);
	return NULL;
}

int relay_shared_create(struct config *cfg, struct relay_shared **out, char *err, size_t len)
{
	struct relay_shared *sh = shared_build(cfg, NULL);
	if (!sh) {
		snprintf(err, len, "out of memory setting up services");
		return -1;
	}
	gen_publish(sh);
	*out = sh;
	return 0;
}

/* --- a worker's view of a generation --------------------------------------- */

static void wgen_free(struct wgen *wg)
{
	for (size_t i = 0; wg->svcs && i < wg->n_svcs; i++)
		if (wg->svcs[i].n_backends)
			lb_fini(&wg->svcs[i].lb);
	free(wg->svcs);
	relay_shared_release(wg->sh);
	free(wg);
}

static struct wgen *wgen_build(struct relay *r, struct relay_shared *sh)
{
	struct wgen *wg = calloc(1, sizeof(*wg));
	if (!wg)
		return NULL;
	atomic_fetch_add(&sh->refs, 1);
	wg->sh = sh;
	wg->n_svcs = sh->n_svcs;
	wg->svcs = calloc(sh->n_svcs ? sh->n_svcs : 1, sizeof(*wg->svcs));
	if (!wg->svcs)
		goto nomem;
	for (size_t i = 0; i < sh->n_svcs; i++) {
		struct service_rt *svc = &wg->svcs[i];
		svc->sh = &sh->svcs[i];
		svc->cfg = svc->sh->cfg;
		svc->relay = r;
		svc->wg = wg;
		svc->backends = svc->sh->backends;
		if (svc->cfg->mode == MODE_PROXY && svc->sh->n_backends) {
			if (lb_init(&svc->lb, svc->cfg->balance, svc->sh->lbp, svc->sh->n_backends,
			            (uint64_t)time(NULL) ^ (i << 8) ^ r->worker ^ (sh->gen << 16)) <
			    0)
				goto nomem;
			svc->n_backends = svc->sh->n_backends;
		}
	}
	return wg;
nomem:
	wgen_free(wg);
	return NULL;
}

/* A session or mirror started under wg has ended. */
static void wgen_put(struct relay *r, struct wgen *wg)
{
	if (--wg->users > 0 || wg == r->cur)
		return;
	for (struct wgen **pp = &r->retired; *pp; pp = &(*pp)->next_retired) {
		if (*pp == wg) {
			*pp = wg->next_retired;
			wgen_free(wg);
			return;
		}
	}
}

/* --- listeners ------------------------------------------------------------- */

static bool same_addr(const struct sockaddr_storage *a, socklen_t alen,
                      const struct sockaddr_storage *b, socklen_t blen)
{
	if (a->ss_family != b->ss_family || alen != blen)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

int relay_listen_socket(const struct cfg_addr *a, const char *service, bool reuseport,
                        uint64_t bind_timeout_ms, char *err, size_t len)
{
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, len, "cannot listen on %s (service %s): socket: %s", a->text, service,
		         strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Several workers: each has its own socket on the port and the
	 * kernel spreads new connections among them. */
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (a->sa.ss_family == AF_INET6) {
		int v6only = a->wildcard ? 0 : 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	uint64_t give_up = clock_now_ms() + bind_timeout_ms;
	while (bind(fd, (const struct sockaddr *)&a->sa, a->salen) == -1) {
		int e = errno;
		if (e == EADDRINUSE && clock_now_ms() < give_up) {
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
			continue;
		}
		snprintf(err, len, "cannot listen on %s (service %s): bind: %s%s", a->text, service,
		         strerror(e), privdrop_bind_hint(e, (const struct sockaddr *)&a->sa));
		close(fd);
		return -1;
	}
	if (listen(fd, 4096) == -1) {
		snprintf(err, len, "cannot listen on %s (service %s): listen: %s", a->text, service,
		         strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void listener_free(struct listener_rt *l)
{
	free(l->text);
	free(l);
}

static void on_listener_closed(void *owner, int tag)
{
	(void)tag;
	struct listener_rt *l = owner;
	struct relay *r = l->relay;
	listener_free(l);
	r->listeners_closing--;
	maybe_stop(r);
}

static const struct esock_cbs listener_cbs = {
    .accepted = on_accepted,
    .closed = on_listener_closed,
};

/* Starts accepting on fd for svc; takes fd over.  NULL on failure (fd
 * closed, message in err). */
static struct listener_rt *listener_start(struct relay *r, struct service_rt *svc,
                                          const struct cfg_addr *a, int fd, char *err, size_t len)
{
	struct listener_rt *l = calloc(1, sizeof(*l));
	char *text = strdup(a->text);
	struct esock *es = NULL;
	if (l && text)
		es = engine_open(r->eng, fd, &listener_cbs, l, 0);
	if (!es) {
		snprintf(err, len, "cannot listen on %s: out of memory or socket slots", a->text);
		free(text);
		free(l);
		close(fd);
		return NULL;
	}
	l->relay = r;
	l->svc = svc;
	l->text = text;
	l->sa = a->sa;
	l->salen = a->salen;
	l->wildcard = a->wildcard;
	l->es = es;
	l->fd = fd;
	engine_listen(r->eng, es);
	return l;
}

static void listener_close(struct relay *r, struct listener_rt *l)
{
	timer_cancel(&r->eng->timers, &l->resume);
	if (l->es) {
		r->listeners_closing++;
		engine_close(r->eng, l->es, false); /* frees l when released */
		return;
	}
	if (l->fd >= 0)
		close(l->fd);
	listener_free(l);
}

static bool listens_here(const struct cfg_service *c)
{
	return c->mode == MODE_PROXY;
}

/* --- set-up, reload and shutdown -------------------------------------------- */

int relay_init(struct relay *r, struct relay_shared *sh, struct engine *eng, unsigned worker,
               unsigned n_workers, char *err, size_t len)
{
	struct config *cfg = sh->cfg;
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->eng = eng;
	r->worker = worker;
	r->n_workers = n_workers;
	r->n_slab = cfg->max_connections;
	r->slab = calloc(r->n_slab, sizeof(*r->slab));
	r->free = calloc(r->n_slab, sizeof(*r->free));
	if (!r->slab || !r->free)
		goto nomem;
	for (uint32_t i = 0; i < r->n_slab; i++)
		r->free[i] = r->n_slab - 1 - i;
	r->nfree = r->n_slab;
	r->n_mslab = mirror_slots(cfg);
	if (r->n_mslab) {
		r->mring_cap = mirror_ring_cap(cfg);
		r->mslab = calloc(r->n_mslab, sizeof(*r->mslab));
		r->mfree = calloc(r->n_mslab, sizeof(*r->mfree));
		r->mring = calloc((size_t)r->n_mslab * r->mring_cap, sizeof(*r->mring));
		if (!r->mslab || !r->mfree || !r->mring)
			goto nomem;
		for (uint32_t i = 0; i < r->n_mslab; i++) {
			r->mslab[i].ring = r->mring + (size_t)i * r->mring_cap;
			r->mfree[i] = r->n_mslab - 1 - i;
		}
		r->nmfree = r->n_mslab;
	}
	r->cur = wgen_build(r, sh);
	if (!r->cur)
		goto nomem;
	return 0;
nomem:
	snprintf(err, len, "out of memory setting up %u connection slots", cfg->max_connections);
	relay_fini(r);
	return -1;
}

static int add_listener(struct listener_rt ***list, size_t *n, struct listener_rt *l)
{
	struct listener_rt **grown = realloc(*list, (*n + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	grown[(*n)++] = l;
	*list = grown;
	return 0;
}

int relay_listen(struct relay *r, char *err, size_t len)
{
	struct wgen *wg = r->cur;
	for (size_t i = 0; i < wg->n_svcs; i++) {
		const struct cfg_service *c = wg->svcs[i].cfg;
		if (!listens_here(c))
			continue;
		for (size_t j = 0; j < c->n_listen; j++) {
			int fd = relay_listen_socket(&c->listen[j], c->name, r->n_workers > 1,
			                             c->bind_timeout_ms, err, len);
			if (fd < 0)
				return -1;
			struct listener_rt *l =
			    listener_start(r, &wg->svcs[i], &c->listen[j], fd, err, len);
			if (!l)
				return -1;
			if (add_listener(&r->listeners, &r->n_listeners, l) < 0) {
				listener_close(r, l);
				snprintf(err, len, "out of memory");
				return -1;
			}
		}
	}
	return 0;
}

static struct listener_rt *find_listener(struct relay *r, const struct cfg_addr *a)
{
	for (size_t i = 0; i < r->n_listeners; i++)
		if (r->listeners[i] &&
		    same_addr(&r->listeners[i]->sa, r->listeners[i]->salen, &a->sa, a->salen))
			return r->listeners[i];
	return NULL;
}

static size_t count_listen(const struct config *cfg)
{
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		if (listens_here(&cfg->services[i]))
			n += cfg->services[i].n_listen;
	return n;
}

/* Keys whose memory or threads are set up at start: a reload keeps the
 * running values (engine and workers may come from the command line, so a
 * difference there is not worth a warning). */
static void keep_start_up_values(struct config *next, const struct config *now)
{
	if (next->max_connections != now->max_connections || next->buffer_size != now->buffer_size)
		log_msg(LOG_WARN, "reload_warning",
		        "max_connections and buffer_size need a restart; keeping %u and %llu",
		        now->max_connections, (unsigned long long)now->buffer_size);
	next->max_connections = now->max_connections;
	next->buffer_size = now->buffer_size;
	next->workers = now->workers;
	next->engine = now->engine;
}

bool relay_reload_busy(struct relay **workers, unsigned n)
{
	for (unsigned w = 0; w < n; w++)
		if (atomic_load(&workers[w]->pending))
			return true;
	return false;
}

int relay_reload(struct relay **workers, unsigned n, struct config *cfg, char *err, size_t len)
{
	if (relay_reload_busy(workers, n)) {
		config_free(cfg);
		return -2;
	}
	struct relay *r0 = workers[0];
	keep_start_up_values(cfg, r0->cfg);
	if (mirror_slots(cfg) > r0->n_mslab ||
	    (mirror_slots(cfg) > 0 && mirror_ring_cap(cfg) > r0->mring_cap)) {
		snprintf(err, len,
		         "the new mirrors need more memory than was set aside at start "
		         "(more mirrors per service or a larger max_lag): restart ferry");
		config_free(cfg);
		return -1;
	}
	struct relay_shared *sh = shared_build(cfg, r0->cur->sh);
	if (!sh) {
		snprintf(err, len, "out of memory building the new configuration");
		return -1;
	}
	/* Bind what is new for every worker first, so that a busy port
	 * leaves everything as it was. */
	size_t nl = count_listen(sh->cfg);
	int **fds = calloc(n, sizeof(*fds));
	bool ok = fds != NULL;
	for (unsigned w = 0; ok && w < n; w++) {
		fds[w] = malloc((nl ? nl : 1) * sizeof(int));
		if (!fds[w]) {
			ok = false;
			break;
		}
		for (size_t k = 0; k < nl; k++)
			fds[w][k] = -1;
		size_t k = 0;
		for (size_t i = 0; ok && i < sh->cfg->n_services; i++) {
			const struct cfg_service *c = &sh->cfg->services[i];
			if (!listens_here(c))
				continue;
			for (size_t j = 0; ok && j < c->n_listen; j++, k++) {
				if (find_listener(workers[w], &c->listen[j]))
					continue;
				fds[w][k] =
				    relay_listen_socket(&c->listen[j], c->name, n > 1, 0, err, len);
				if (fds[w][k] < 0)
					ok = false;
			}
		}
	}
	if (!ok) {
		for (unsigned w = 0; fds && w < n; w++) {
			for (size_t k = 0; fds[w] && k < nl; k++)
				if (fds[w][k] >= 0)
					close(fds[w][k]);
			free(fds[w]);
		}
		free(fds);
		if (!err[0])
			snprintf(err, len, "out of memory");
		atomic_store(&sh->refs, 0);
		shared_free(sh);
		return -1;
	}
	gen_publish(sh);
	for (unsigned w = 0; w < n; w++) {
		workers[w]->pending_fds = fds[w];
		atomic_store(&workers[w]->pending, sh);
	}
	free(fds);
	relay_apply_pending(r0);
	return 0;
}

void relay_apply_pending(struct relay *r)
{
	struct relay_shared *sh = atomic_load(&r->pending);
	if (!sh)
		return;
	char err[256];
	struct wgen *wg = wgen_build(r, sh);
	size_t nl = count_listen(sh->cfg);
	struct listener_rt **list = NULL;
	size_t n = 0;
	bool *kept = calloc(r->n_listeners ? r->n_listeners : 1, sizeof(*kept));
	if (!wg || !kept) {
		log_msg(LOG_ERROR, "reload", "out of memory applying the new configuration");
		for (size_t k = 0; k < nl; k++)
			if (r->pending_fds[k] >= 0)
				close(r->pending_fds[k]);
		if (wg)
			wgen_free(wg);
		free(kept);
		goto out;
	}
	size_t k = 0;
	for (size_t i = 0; i < sh->cfg->n_services; i++) {
		const struct cfg_service *c = &sh->cfg->services[i];
		if (!listens_here(c))
			continue;
		for (size_t j = 0; j < c->n_listen; j++, k++) {
			struct listener_rt *l = NULL;
			if (r->pending_fds[k] < 0) {
				for (size_t x = 0; x < r->n_listeners; x++) {
					struct listener_rt *o = r->listeners[x];
					if (!kept[x] &&
					    same_addr(&o->sa, o->salen, &c->listen[j].sa,
					              c->listen[j].salen)) {
						kept[x] = true;
						l = o;
						l->svc = &wg->svcs[i];
						break;
					}
				}
			} else {
				l = listener_start(r, &wg->svcs[i], &c->listen[j],
				                   r->pending_fds[k], err, sizeof(err));
				if (!l)
					log_msg(LOG_ERROR, "reload", "%s", err);
			}
			if (l && add_listener(&list, &n, l) < 0)
				listener_close(r, l);
		}
	}
	for (size_t x = 0; x < r->n_listeners; x++)
		if (!kept[x])
			listener_close(r, r->listeners[x]);
	free(kept);
	free(r->listeners);
	r->listeners = list;
	r->n_listeners = n;
	struct wgen *old = r->cur;
	r->cur = wg;
	r->cfg = sh->cfg;
	if (old->users == 0) {
		wgen_free(old);
	} else {
		old->next_retired = r->retired;
		r->retired = old;
	}
	if (r->worker == 0) {
		struct logline l;
		log_begin(&l, LOG_INFO, "reload");
		log_u64(&l, "generation", sh->gen);
		log_u64(&l, "services", sh->n_svcs);
		log_u64(&l, "listeners", n);
		log_str(&l, "msg", "configuration reloaded");
		log_end(&l);
	}
out:
	free(r->pending_fds);
	r->pending_fds = NULL;
	atomic_store(&r->pending, NULL);
}

static void on_shutdown_timeout(struct timer *t)
{
	struct relay *r = container_of(t, struct relay, shutdown_timer);
	if (r->active)
		log_msg(LOG_WARN, "shutdown", "shutdown_timeout reached: closing %u connections",
		        r->active);
	for (uint32_t i = 0; i < r->n_slab; i++) {
		struct session *s = &r->slab[i];
		if (s->state != S_FREE && s->state != S_CLOSED)
			session_close(s, END_SHUTDOWN, false, false);
	}
	for (uint32_t i = 0; i < r->n_mslab; i++)
		if (r->mslab[i].state == M_CONNECTING || r->mslab[i].state == M_UP)
			mirror_close(&r->mslab[i], false);
	maybe_stop(r);
}

void relay_shutdown(struct relay *r)
{
	if (r->shutting_down)
		return;
	r->shutting_down = true;
	for (size_t i = 0; i < r->n_listeners; i++)
		listener_close(r, r->listeners[i]);
	free(r->listeners);
	r->listeners = NULL;
	r->n_listeners = 0;
	if (r->worker == 0)
		log_msg(LOG_INFO, "shutdown",
		        "listeners closed; waiting up to %llums for open connections",
		        (unsigned long long)r->cfg->shutdown_timeout_ms);
	engine_timer_set(r->eng, &r->shutdown_timer, r->cfg->shutdown_timeout_ms,
	                 on_shutdown_timeout);
	maybe_stop(r);
}

void relay_fini(struct relay *r)
{
	if (r->slab) {
		for (uint32_t i = 0; i < r->n_slab; i++) {
			struct session *s = &r->slab[i];
			for (int side = 0; side < 2 && s->state != S_FREE; side++)
				for (int k = 0; k < s->h[side].count; k++)
					buf_unref(s->h[side].q[k]);
		}
	}
	for (uint32_t i = 0; r->mslab && i < r->n_mslab; i++) {
		struct mconn *mc = &r->mslab[i];
		for (uint32_t k = 0; mc->state != M_FREE && k < mc->count; k++)
			buf_unref(mc->ring[(mc->head + k) % r->mring_cap]);
	}
	for (size_t i = 0; i < r->n_listeners; i++) {
		if (r->listeners[i]->fd >= 0 && !r->listeners[i]->es)
			close(r->listeners[i]->fd);
		listener_free(r->listeners[i]); /* engine_fini closes their sockets */
	}
	free(r->listeners);
	if (r->pending_fds) {
		struct relay_shared *sh = atomic_load(&r->pending);
		for (size_t k = 0; sh && k < count_listen(sh->cfg); k++)
			if (r->pending_fds[k] >= 0)
				close(r->pending_fds[k]);
		free(r->pending_fds);
	}
	while (r->retired) {
		struct wgen *wg = r->retired;
		r->retired = wg->next_retired;
		wgen_free(wg);
	}
	if (r->cur)
		wgen_free(r->cur);
	free(r->mslab);
	free(r->mfree);
	free(r->mring);
	free(r->slab);
	free(r->free);
	memset(r, 0, sizeof(*r));
}

void relay_shared_drop_current(void)
{
	gen_publish(NULL);
}
