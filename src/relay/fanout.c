/* fanout.c - fan-out services on the engine: listeners that classify peers,
 * dialers that reconnect, inputs that feed the shared log of framer.h, and
 * outputs that walk it with their own cursors.
 *
 * Data path.  An input's receive completes with a pooled buffer; the framer
 * appends it (raw) or its complete records (line) to the log; every output
 * with no send in flight then takes up to ENGINE_MAX_IOV slices from its
 * cursor, each with its own buffer reference, and sends them in one request.
 * When the send completes the references go back and the output takes more.
 * Bytes outputs send are received and dropped at once, so their socket
 * buffers never fill.
 *
 * Room.  An input is read only after it has reserved the log slots its next
 * chunk can need (fr_input_reserve) and while the buffers held through the
 * log stay under the service's budget, so a receive always fits and memory
 * is bounded whatever the peers do.  An input that cannot read waits
 * (`waiting`) and is tried again whenever outputs make progress.
 *
 * Lag (queued = bytes appended that an output has not had sent, its send in
 * flight included), checked after every append and before every send:
 *   disconnect  queued > max_lag closes the output;
 *   drop        the oldest whole records queued for it are skipped until it
 *               is back under max_lag (a record being sent is finished first,
 *               and the newest record is always kept, so a record larger
 *               than max_lag still reaches an output that keeps up);
 *   block       while any output is over max_lag no input is read.
 * A full log counts as lag for the outputs holding its oldest slot: disconnect
 * closes them, drop skips their oldest record (or closes them when they are
 * inside a record too long to skip), block waits.
 *
 * Re-entrancy.  Handlers change state and may close connections; the work
 * that follows from progress (waking waiting inputs, unblocking, making room,
 * draining at shutdown) is done once per callback, in settle(), never
 * recursively.
 *
 * Lifecycle of a connection object (slab, made at init):
 *   FREE -> [CONNECTING] -> OPEN -> CLOSING -> (engine `closed`) -> FREE
 * Every end goes through fo_close(): it logs, leaves the role (partial record
 * discarded, cursor detached) and asks the engine to close; buffers lent to
 * a send in flight come back in the `closed` callback, when the engine is
 * done with them.  Dialers own one object each and redial from FREE after a
 * backoff: 100ms, doubling to 10s, back to 100ms after a connection that was
 * established.
 */
#include "relay/fanout.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "relay/framer.h"
#include "relay/proxy.h"

#define FO_BACKOFF_MIN_MS     100
#define FO_BACKOFF_MAX_MS     10000
#define FO_CONNECT_TIMEOUT_MS 2000
#define FO_ACCEPT_PAUSE_MS    100
#define FO_RETRY_MS           20 /* pool or budget empty: try receiving again this soon */
/* Inputs whose longest partial records the buffer budget covers at once;
 * more inputs holding long partial records wait for each other. */
#define FO_PENDING_INPUTS 16
/* Buffers an engine may read ahead per socket (io_uring's receive queue). */
#define FO_READAHEAD 4
/* Log slots: one per this many bytes of max_lag (each read is at least one
 * slot while outputs keep up, so reads averaging less than this make the log
 * full before max_lag is reached). */
#define FO_SLOT_BYTES    64
#define FO_MIN_SLOTS     1024
#define FO_MAX_SLOTS     (1u << 20)
#define FO_MAX_NODES     (1u << 20)
#define FO_MAX_BUFFERS   (1u << 18)
#define FO_SETTLE_ROUNDS 8

enum fo_role { ROLE_INPUT = 0, ROLE_OUTPUT = 1 };
enum fo_via { VIA_SHARED = 0, VIA_LISTEN, VIA_CONNECT };
enum fo_state { C_FREE = 0, C_CONNECTING, C_OPEN, C_CLOSING };

static const char *const role_names[] = {"input", "output"};
static const char *const via_names[] = {"shared", "listen", "connect"};

struct fo_dialer;

struct fo_conn {
	struct fanout *f;
	struct esock *es;
	struct fo_dialer *dialer;    /* NULL: accepted */
	struct fo_conn *prev, *next; /* open inputs or open outputs */
	uint8_t state, role, via;
	bool recv_armed;
	bool waiting; /* input: wants to read, no room yet */
	bool starved; /* output: its receive found the pool empty */
	int ninfl;    /* slices of the send in flight (output) */
	uint64_t inflight_bytes;
	uint64_t bytes; /* received (input) or sent (output) */
	uint64_t dropped;
	uint64_t t_start;
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
		struct sockaddr_storage ss;
	} peer;
	struct fr_input in;   /* input */
	struct fr_cursor cur; /* output */
	struct iovec iov[ENGINE_MAX_IOV];
	struct buf *ibuf[ENGINE_MAX_IOV]; /* a reference per slice in flight */
};

struct fo_dialer {
	struct fanout *f;
	struct cfg_addr addr; /* copy, text owned */
	uint8_t role;
	struct fo_conn *conn; /* its own slab object */
	uint64_t next_delay;  /* ms before the next try */
	struct timer timer;   /* redial wait, or connect timeout while connecting */
};

struct fo_listener {
	struct fanout *f;
	struct cfg_addr addr; /* copy, text owned */
	uint8_t via;          /* VIA_SHARED or VIA_LISTEN */
	uint8_t role;         /* VIA_LISTEN: every client's role */
	int fd;
	struct esock *es;
	struct timer resume; /* accept pause after EMFILE */
};

/* Written by worker 0 only: relaxed loads and stores, no read-modify-write. */
struct fo_counters {
	_Atomic uint64_t inputs, outputs, bytes_in, bytes_out, records, dropped_records,
	    disconnects, rejected, too_long;
};

struct fanout {
	char *name;
	struct engine *eng;
	/* what the service needs of its configuration, copied */
	enum framing framing;
	uint64_t max_line;
	enum on_lag on_lag;
	uint64_t max_lag;
	uint64_t shutdown_timeout_ms, connect_timeout_ms, bind_timeout_ms;
	struct cidr *in_from, *out_from, *allow, *deny;
	size_t n_in_from, n_out_from, n_allow, n_deny;
	uint64_t send_max; /* bytes one send carries at most (one slice may be more) */

	struct fr_log log;
	uint32_t budget; /* buffers the log may hold before inputs wait */

	struct fo_conn *slab; /* dialers' objects first, then accepted ones */
	uint32_t n_slab;
	uint32_t *free; /* stack of free accepted objects */
	uint32_t nfree;
	struct fo_listener **ls; /* each its own object: a reload hands it over */
	size_t n_ls, ls_cap;
	unsigned ls_closing;
	struct fo_dialer *ds;
	size_t n_ds;

	struct fo_conn *inputs, *outputs; /* open ones */
	unsigned n_inputs, n_outputs;
	unsigned active;    /* slab objects not FREE */
	unsigned n_waiting; /* inputs waiting for room */
	unsigned sends;     /* sends in flight */
	bool blocked;       /* on_lag block: an output is over max_lag */
	bool need_room;     /* an input found the log full */
	bool settling;
	bool shutting_down;
	bool accept_warned;
	bool retiring; /* a reload replaces or removes it: its listeners may move */
	bool retired;  /* replaced or removed: ends like at shutdown, then freed */
	struct fanout_sizes need;
	struct timer retry, shutdown_timer;
	struct fo_counters ctr;
	/* totals of the instances this one replaced, once they were freed
	 * (written under registry_lock) */
	struct fo_counters carried;
};

static void settle(struct fanout *f);
static void input_arm(struct fo_conn *c);
static void pump(struct fo_conn *o);
static void dial(struct fo_dialer *d);
static void on_dial_timer(struct timer *t);
static void on_retry(struct timer *t);

/* --- small helpers --------------------------------------------------------- */

static void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static void ctr_sub(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
	                      memory_order_relaxed);
}

static void list_add(struct fo_conn **head, struct fo_conn *c)
{
	c->prev = NULL;
	c->next = *head;
	if (*head)
		(*head)->prev = c;
	*head = c;
}

static void list_del(struct fo_conn **head, struct fo_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static bool cidr_any(const struct cidr *c, size_t n, const struct sockaddr *sa)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_match(&c[i], sa))
			return true;
	return false;
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

static uint32_t clamp32(uint64_t v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

/* Bytes queued for an output: not yet taken, plus its send in flight. */
static uint64_t queued(const struct fo_conn *o)
{
	return fr_cursor_left(&o->f->log, &o->cur) + o->inflight_bytes;
}

/* --- sizes ------------------------------------------------------------------ */

static uint32_t n_dialers(const struct cfg_service *svc)
{
	return (uint32_t)(svc->inputs.n_connect + svc->outputs.n_connect);
}

static uint32_t n_listeners(const struct cfg_service *svc)
{
	return (uint32_t)(svc->n_listen + svc->inputs.n_listen + svc->outputs.n_listen);
}

static uint32_t accepted_max(const struct config *cfg, const struct cfg_service *svc)
{
	return svc->max_connections ? svc->max_connections : cfg->max_connections;
}

/* Chain nodes (and buffers) one input's longest partial record can need:
 * every buffer but the last of a chain is more than half full (framer.h). */
static uint32_t chain_max(const struct config *cfg, const struct cfg_service *svc)
{
	if (svc->framing != FRAMING_LINE)
		return 0;
	return clamp32(2 * div_up(svc->max_line, cfg->buffer_size) + 2, 0, FO_MAX_NODES);
}

static uint32_t log_slots(const struct config *cfg, const struct cfg_service *svc)
{
	uint64_t by_lag = svc->out_max_lag / FO_SLOT_BYTES;
	uint64_t by_line = 8 * ((uint64_t)chain_max(cfg, svc) + 1);
	return clamp32(by_lag > by_line ? by_lag : by_line, FO_MIN_SLOTS, FO_MAX_SLOTS);
}

static uint32_t log_nodes(const struct config *cfg, const struct cfg_service *svc)
{
	if (svc->framing != FRAMING_LINE)
		return 1;
	return clamp32((uint64_t)chain_max(cfg, svc) * FO_PENDING_INPUTS + 64, 256, FO_MAX_NODES);
}

/* Buffers the log may hold: what max_lag takes at worst (buffers more than
 * half full), what sends in flight hold beyond it, and the partial records
 * and fill buffers of FO_PENDING_INPUTS inputs. */
static uint32_t buffer_budget(const struct config *cfg, const struct cfg_service *svc)
{
	uint64_t lag = 2 * div_up(svc->out_max_lag, cfg->buffer_size) + 2 * ENGINE_MAX_IOV + 8;
	uint64_t inputs = accepted_max(cfg, svc) + n_dialers(svc);
	if (inputs > FO_PENDING_INPUTS)
		inputs = FO_PENDING_INPUTS;
	return clamp32(lag + inputs * ((uint64_t)chain_max(cfg, svc) + 2), 64, FO_MAX_BUFFERS);
}

uint32_t fanout_pool_buffers(const struct config *cfg, const struct cfg_service *svc)
{
	uint64_t b = buffer_budget(cfg, svc);
	uint64_t socks = accepted_max(cfg, svc) + n_dialers(svc);
	if (socks > 64)
		socks = 64;
	/* Receives being filled and engine read-ahead, then a third more:
	 * io_uring lends up to a quarter of the pool to its buffer ring. */
	b += socks * FO_READAHEAD;
	b += b / 3;
	return clamp32(b, 0, FO_MAX_BUFFERS * 2);
}

uint32_t fanout_max_sockets(const struct config *cfg, const struct cfg_service *svc)
{
	return accepted_max(cfg, svc) + n_dialers(svc) + n_listeners(svc) + 8;
}

uint32_t fanout_max_timers(const struct config *cfg, const struct cfg_service *svc)
{
	(void)cfg;
	return n_dialers(svc) + n_listeners(svc) + 4;
}

/* --- logging ------------------------------------------------------------------ */

static void log_conn(struct fo_conn *c, const char *state, const char *end, uint64_t discarded)
{
	struct fanout *f = c->f;
	struct logline l;
	log_begin(&l, LOG_INFO, c->role == ROLE_INPUT ? "fanout_input" : "fanout_output");
	if (!l.enabled)
		return;
	char addr[ADDR_STRLEN];
	log_str(&l, "service", f->name);
	log_str(&l, "peer", addr_format(&c->peer.sa, addr, sizeof(addr)));
	log_str(&l, "role", role_names[c->role]);
	log_str(&l, "via", via_names[c->via]);
	log_str(&l, "state", state);
	log_u64(&l, "bytes", c->bytes);
	if (end) {
		log_u64(&l, "duration_ms", f->eng->now - c->t_start);
		if (c->role == ROLE_OUTPUT && f->on_lag == LAG_DROP)
			log_u64(&l, "dropped_records", c->dropped);
		if (discarded)
			log_u64(&l, "discarded", discarded);
		log_str(&l, "end", end);
	}
	log_end(&l);
}

static void log_rejected(struct fanout *f, const struct fo_listener *ls,
                         const struct sockaddr *peer, const char *reason)
{
	struct logline l;
	log_begin(&l, LOG_WARN, "fanout_rejected");
	if (!l.enabled)
		return;
	char addr[ADDR_STRLEN];
	log_str(&l, "service", f->name);
	log_str(&l, "listen", ls->addr.text);
	log_str(&l, "peer", addr_format(peer, addr, sizeof(addr)));
	log_str(&l, "reason", reason);
	log_end(&l);
}

static void log_conn_error(struct fo_conn *c, enum log_level level, const char *event,
                           const char *error)
{
	struct logline l;
	log_begin(&l, level, event);
	if (!l.enabled)
		return;
	char addr[ADDR_STRLEN];
	log_str(&l, "service", c->f->name);
	log_str(&l, "peer", addr_format(&c->peer.sa, addr, sizeof(addr)));
	log_str(&l, "role", role_names[c->role]);
	log_str(&l, "error", error);
	log_end(&l);
}

static void log_dial_error(struct fo_dialer *d, const char *error, uint64_t retry_ms)
{
	struct logline l;
	log_begin(&l, LOG_WARN, "fanout_connect_error");
	if (!l.enabled)
		return;
	log_str(&l, "service", d->f->name);
	log_str(&l, "peer", d->addr.text);
	log_str(&l, "role", role_names[d->role]);
	log_str(&l, "error", error);
	log_u64(&l, "retry_ms", retry_ms);
	log_end(&l);
}

/* --- closing ---------------------------------------------------------------- */

/* The one way a connection ends: leaves its role, logs, asks the engine to
 * close (with a RST when `reset`).  The object is reused after `closed`. */
static void fo_close(struct fo_conn *c, const char *end, bool reset)
{
	struct fanout *f = c->f;
	if (c->state == C_FREE || c->state == C_CLOSING)
		return;
	if (c->state == C_OPEN) {
		uint64_t discarded = 0;
		if (c->role == ROLE_INPUT) {
			discarded = fr_input_end(&f->log, &c->in);
			list_del(&f->inputs, c);
			f->n_inputs--;
			ctr_sub(&f->ctr.inputs, 1);
			if (c->waiting) {
				c->waiting = false;
				f->n_waiting--;
			}
		} else {
			fr_cursor_detach(&f->log, &c->cur);
			list_del(&f->outputs, c);
			f->n_outputs--;
			ctr_sub(&f->ctr.outputs, 1);
		}
		log_conn(c, "disconnected", end, discarded);
	}
	if (c->dialer)
		engine_timer_cancel(f->eng, &c->dialer->timer);
	c->state = C_CLOSING;
	engine_close(f->eng, c->es, reset);
	c->es = NULL;
}

static void schedule_redial(struct fo_dialer *d)
{
	struct fanout *f = d->f;
	if (f->shutting_down)
		return;
	engine_timer_set(f->eng, &d->timer, d->next_delay, on_dial_timer);
	d->next_delay *= 2;
	if (d->next_delay > FO_BACKOFF_MAX_MS)
		d->next_delay = FO_BACKOFF_MAX_MS;
}

static void on_conn_closed(void *owner, int tag)
{
	struct fo_conn *c = owner;
	struct fanout *f = c->f;
	(void)tag;
	for (int i = 0; i < c->ninfl; i++)
		fr_put(&f->log, c->ibuf[i]);
	if (c->ninfl)
		f->sends--;
	c->ninfl = 0;
	c->inflight_bytes = 0;
	c->state = C_FREE;
	f->active--;
	if (c->dialer)
		schedule_redial(c->dialer);
	else
		f->free[f->nfree++] = (uint32_t)(c - f->slab);
	settle(f);
}

/* --- outputs ---------------------------------------------------------------- */

/* Skips the oldest whole records queued for o while it is over max_lag. */
static void drop_records(struct fo_conn *o)
{
	struct fanout *f = o->f;
	while (queued(o) > f->max_lag) {
		uint64_t bytes;
		uint32_t n = fr_cursor_skip(&f->log, &o->cur, true, &bytes);
		if (bytes == 0)
			break;
		o->dropped += n;
		ctr_add(&f->ctr.dropped_records, n);
	}
}

static void output_arm_recv(struct fo_conn *o)
{
	if (o->state != C_OPEN || o->recv_armed)
		return;
	if (engine_recv(o->f->eng, o->es) == 0)
		o->recv_armed = true;
}

/* Sends what the cursor has, when no send is in flight.  At shutdown, once
 * no input is left, an output that has had everything is closed. */
static void pump(struct fo_conn *o)
{
	struct fanout *f = o->f;
	if (o->state != C_OPEN || o->ninfl)
		return;
	if (f->on_lag == LAG_DROP && queued(o) > f->max_lag)
		drop_records(o);
	uint64_t bytes;
	int n = fr_cursor_take(&f->log, &o->cur, o->iov, o->ibuf, ENGINE_MAX_IOV, f->send_max,
	                       f->framing == FRAMING_LINE, &bytes);
	if (n == 0) {
		if (f->shutting_down && f->n_inputs == 0)
			fo_close(o, "shutdown", false);
		return;
	}
	if (engine_send(f->eng, o->es, o->iov, n) < 0) {
		for (int i = 0; i < n; i++)
			fr_put(&f->log, o->ibuf[i]);
		fo_close(o, "send_error", true);
		return;
	}
	o->ninfl = n;
	o->inflight_bytes = bytes;
	f->sends++;
}

static void pump_all(struct fanout *f)
{
	struct fo_conn *next;
	for (struct fo_conn *o = f->outputs; o; o = next) {
		next = o->next;
		pump(o);
	}
}

static void on_output_sent(struct fo_conn *o, int res)
{
	struct fanout *f = o->f;
	for (int i = 0; i < o->ninfl; i++)
		fr_put(&f->log, o->ibuf[i]);
	o->ninfl = 0;
	o->inflight_bytes = 0;
	f->sends--;
	if (res < 0) {
		fo_close(o, "reset", true);
		return;
	}
	o->bytes += (uint64_t)res;
	ctr_add(&f->ctr.bytes_out, (uint64_t)res);
	pump(o);
}

/* Whatever an output sends is read and dropped; its FIN or an error ends it
 * (a dialed one is redialed). */
static void on_output_received(struct fo_conn *o, struct buf *b, int res)
{
	struct fanout *f = o->f;
	o->recv_armed = false;
	if (res > 0) {
		buf_unref(b);
		output_arm_recv(o);
		return;
	}
	if (res == 0) {
		fo_close(o, "fin", false);
		return;
	}
	if (res == -ENOBUFS) {
		o->starved = true;
		if (!timer_armed(&f->retry))
			engine_timer_set(f->eng, &f->retry, FO_RETRY_MS, on_retry);
		return;
	}
	fo_close(o, "reset", false);
}

/* After bytes were appended: apply on_lag to outputs over max_lag. */
static void check_lag(struct fanout *f)
{
	if (f->n_outputs == 0 || fr_max_queued(&f->log) + f->send_max <= f->max_lag)
		return;
	struct fo_conn *next;
	for (struct fo_conn *o = f->outputs; o; o = next) {
		next = o->next;
		if (queued(o) <= f->max_lag)
			continue;
		switch (f->on_lag) {
		case LAG_DISCONNECT:
			ctr_add(&f->ctr.disconnects, 1);
			fo_close(o, "lag", false);
			break;
		case LAG_DROP:
			drop_records(o);
			break;
		case LAG_BLOCK:
			f->blocked = true;
			break;
		}
	}
}

static bool any_lagging(const struct fanout *f)
{
	for (const struct fo_conn *o = f->outputs; o; o = o->next)
		if (queued(o) > f->max_lag)
			return true;
	return false;
}

/* The log is full: on_lag applies to the outputs holding its oldest slot.
 * True when something was freed. */
static bool make_room(struct fanout *f)
{
	if (f->on_lag == LAG_BLOCK || f->log.head == f->log.tail)
		return false;
	uint64_t head = f->log.head;
	bool freed = false;
	struct fo_conn *next;
	for (struct fo_conn *o = f->outputs; o; o = next) {
		next = o->next;
		if (o->cur.seq != head)
			continue;
		if (f->on_lag == LAG_DROP) {
			uint64_t bytes;
			uint32_t n = fr_cursor_skip(&f->log, &o->cur, false, &bytes);
			if (bytes > 0) {
				o->dropped += n;
				ctr_add(&f->ctr.dropped_records, n);
				freed = true;
				continue;
			}
		}
		ctr_add(&f->ctr.disconnects, 1);
		fo_close(o, "lag", false);
		freed = true;
	}
	return freed;
}

/* --- inputs ----------------------------------------------------------------- */

static void input_wait(struct fo_conn *c, bool retry)
{
	struct fanout *f = c->f;
	if (!c->waiting) {
		c->waiting = true;
		f->n_waiting++;
	}
	if (retry && !timer_armed(&f->retry))
		engine_timer_set(f->eng, &f->retry, FO_RETRY_MS, on_retry);
}

/* Buffers or chain nodes are all held: when nothing is queued for any output
 * and nothing is being sent, only partial records hold them and waiting
 * would never end, so an input holding one is closed.  True when c was. */
static bool input_stuck(struct fo_conn *c)
{
	struct fanout *f = c->f;
	if (f->sends > 0 || fr_max_queued(&f->log) > 0 || c->in.partial == 0)
		return false;
	log_conn_error(c, LOG_ERROR, "fanout_input_error",
	               "partial records of the inputs fill the fan-out buffers");
	fo_close(c, "no_buffers", true);
	return true;
}

/* Asks for the input's next bytes when there is room for them. */
static void input_arm(struct fo_conn *c)
{
	struct fanout *f = c->f;
	if (c->state != C_OPEN || c->recv_armed)
		return;
	if (f->blocked) {
		input_wait(c, false);
		return;
	}
	if (f->log.bufs >= f->budget) {
		if (!input_stuck(c))
			input_wait(c, true);
		return;
	}
	int r = fr_input_reserve(&f->log, &c->in);
	if (r == -ENOSPC) {
		f->need_room = true;
		input_wait(c, false);
		return;
	}
	if (r == -ENOMEM) {
		if (!input_stuck(c))
			input_wait(c, true);
		return;
	}
	if (r < 0) {
		log_conn_error(c, LOG_ERROR, "fanout_input_error",
		               "partial record needs more log slots than the log has");
		fo_close(c, "no_room", true);
		return;
	}
	if (engine_recv(f->eng, c->es) < 0) {
		fr_input_unreserve(&f->log, &c->in);
		fo_close(c, "error", true);
		return;
	}
	c->recv_armed = true;
}

static void kick_inputs(struct fanout *f)
{
	struct fo_conn *next;
	for (struct fo_conn *c = f->inputs; c && f->n_waiting; c = next) {
		next = c->next;
		if (!c->waiting)
			continue;
		c->waiting = false;
		f->n_waiting--;
		input_arm(c);
	}
}

static void on_input_received(struct fo_conn *c, struct buf *b, int res)
{
	struct fanout *f = c->f;
	c->recv_armed = false;
	if (res > 0) {
		c->bytes += (uint64_t)res;
		ctr_add(&f->ctr.bytes_in, (uint64_t)res);
		struct fr_feed fd;
		int r = fr_input_feed(&f->log, &c->in, b, &fd);
		if (fd.appended) {
			ctr_add(&f->ctr.records, fd.records);
			check_lag(f);
			pump_all(f);
		}
		if (r == -EMSGSIZE) {
			ctr_add(&f->ctr.too_long, 1);
			struct logline l;
			char addr[ADDR_STRLEN];
			log_begin(&l, LOG_ERROR, "fanout_max_line");
			log_str(&l, "service", f->name);
			log_str(&l, "peer", addr_format(&c->peer.sa, addr, sizeof(addr)));
			log_u64(&l, "max_line", f->max_line);
			log_u64(&l, "discarded", fd.discarded);
			log_str(&l, "msg", "record longer than max_line: closing the input");
			log_end(&l);
			fo_close(c, "max_line", true);
			return;
		}
		if (r < 0) {
			log_conn_error(c, LOG_ERROR, "fanout_input_error", strerror(-r));
			fo_close(c, "no_room", true);
			return;
		}
		input_arm(c);
		return;
	}
	fr_input_unreserve(&f->log, &c->in);
	if (res == 0) {
		fo_close(c, "fin", false);
		return;
	}
	if (res == -ENOBUFS) {
		input_wait(c, true);
		return;
	}
	fo_close(c, "reset", false);
}

/* --- engine callbacks for connections --------------------------------------- */

/* A connection is established (accepted or dialed): it takes its role. */
static void conn_open(struct fo_conn *c)
{
	struct fanout *f = c->f;
	c->state = C_OPEN;
	c->t_start = f->eng->now;
	if (c->role == ROLE_INPUT) {
		fr_input_init(&c->in);
		list_add(&f->inputs, c);
		f->n_inputs++;
		ctr_add(&f->ctr.inputs, 1);
		log_conn(c, "connected", NULL, 0);
		input_arm(c);
	} else {
		fr_cursor_attach(&f->log, &c->cur);
		list_add(&f->outputs, c);
		f->n_outputs++;
		ctr_add(&f->ctr.outputs, 1);
		log_conn(c, "connected", NULL, 0);
		output_arm_recv(c);
	}
}

static void on_conn_connected(void *owner, int tag, int err)
{
	struct fo_conn *c = owner;
	struct fo_dialer *d = c->dialer;
	struct fanout *f = c->f;
	(void)tag;
	engine_timer_cancel(f->eng, &d->timer);
	if (err) {
		log_dial_error(d, strerror(-err), d->next_delay);
		fo_close(c, "connect_failed", false);
	} else {
		d->next_delay = FO_BACKOFF_MIN_MS;
		conn_open(c);
	}
	settle(f);
}

static void on_conn_received(void *owner, int tag, struct buf *b, int res)
{
	struct fo_conn *c = owner;
	(void)tag;
	if (c->role == ROLE_INPUT)
		on_input_received(c, b, res);
	else
		on_output_received(c, b, res);
	settle(c->f);
}

static void on_conn_sent(void *owner, int tag, int res)
{
	struct fo_conn *c = owner;
	(void)tag;
	on_output_sent(c, res);
	settle(c->f);
}

static const struct esock_cbs conn_cbs = {
    .connected = on_conn_connected,
    .received = on_conn_received,
    .sent = on_conn_sent,
    .closed = on_conn_closed,
};

/* --- settling --------------------------------------------------------------- */

/* What follows from progress, once per callback: unblock, wake waiting
 * inputs, make room in a full log, drain outputs at shutdown. */
static void settle(struct fanout *f)
{
	if (f->settling)
		return;
	f->settling = true;
	for (int round = 0; round < FO_SETTLE_ROUNDS; round++) {
		if (f->blocked && !any_lagging(f))
			f->blocked = false;
		if (f->n_waiting && !f->blocked)
			kick_inputs(f);
		if (!f->need_room)
			break;
		f->need_room = false;
		if (!make_room(f))
			break;
	}
	if (f->shutting_down && f->n_inputs == 0)
		pump_all(f);
	f->settling = false;
}

static void on_retry(struct timer *t)
{
	struct fanout *f = container_of(t, struct fanout, retry);
	for (struct fo_conn *o = f->outputs; o; o = o->next) {
		if (o->starved) {
			o->starved = false;
			output_arm_recv(o);
		}
	}
	settle(f);
}

/* --- dialers ---------------------------------------------------------------- */

static void on_dial_timer(struct timer *t)
{
	struct fo_dialer *d = container_of(t, struct fo_dialer, timer);
	struct fanout *f = d->f;
	if (d->conn->state == C_CONNECTING) {
		log_dial_error(d, "connect timeout", d->next_delay);
		fo_close(d->conn, "connect_timeout", false);
		settle(f);
		return;
	}
	if (d->conn->state == C_FREE)
		dial(d);
}

static void dial(struct fo_dialer *d)
{
	struct fanout *f = d->f;
	struct fo_conn *c = d->conn;
	if (f->shutting_down || c->state != C_FREE)
		return;
	int fd = socket(d->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_dial_error(d, strerror(errno), d->next_delay);
		schedule_redial(d);
		return;
	}
	set_nodelay(fd);
	struct esock *es = engine_open(f->eng, fd, &conn_cbs, c, 0);
	if (!es) {
		close(fd);
		log_dial_error(d, "engine socket table full", d->next_delay);
		schedule_redial(d);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->f = f;
	c->dialer = d;
	c->es = es;
	c->role = d->role;
	c->via = VIA_CONNECT;
	memcpy(&c->peer.ss, &d->addr.sa, sizeof(d->addr.sa));
	c->state = C_CONNECTING;
	c->t_start = f->eng->now;
	f->active++;
	int r = engine_connect(f->eng, es, (const struct sockaddr *)&d->addr.sa, d->addr.salen);
	if (r < 0) {
		log_dial_error(d, strerror(-r), d->next_delay);
		fo_close(c, "connect_failed", false);
		return;
	}
	engine_timer_set(f->eng, &d->timer, f->connect_timeout_ms, on_dial_timer);
}

/* --- listeners -------------------------------------------------------------- */

static void on_resume_accept(struct timer *t)
{
	struct fo_listener *l = container_of(t, struct fo_listener, resume);
	if (l->f->shutting_down || !l->es)
		return;
	engine_accept_pause(l->f->eng, l->es, false);
}

static bool acl_allows(const struct fanout *f, const struct sockaddr *peer)
{
	if (cidr_any(f->deny, f->n_deny, peer))
		return false;
	return f->n_allow == 0 || cidr_any(f->allow, f->n_allow, peer);
}

static void on_accepted(void *owner, int fd, const struct sockaddr *peer, socklen_t len)
{
	struct fo_listener *l = owner;
	struct fanout *f = l->f;
	if (fd < 0) {
		/* Out of descriptors: the client stays in the backlog; pause
		 * this listener instead of spinning on it. */
		if (!f->accept_warned) {
			f->accept_warned = true;
			struct logline ll;
			log_begin(&ll, LOG_WARN, "accept_paused");
			log_str(&ll, "service", f->name);
			log_str(&ll, "listen", l->addr.text);
			log_str(&ll, "error", strerror(-fd));
			log_fmt(&ll, "msg", "cannot accept, retrying every %dms",
			        FO_ACCEPT_PAUSE_MS);
			log_end(&ll);
		}
		engine_accept_pause(f->eng, l->es, true);
		engine_timer_set(f->eng, &l->resume, FO_ACCEPT_PAUSE_MS, on_resume_accept);
		return;
	}
	f->accept_warned = false;
	const char *why = NULL;
	uint8_t role = ROLE_INPUT;
	if (f->shutting_down)
		why = "shutdown";
	else if (!acl_allows(f, peer))
		why = "acl";
	else if (l->via == VIA_LISTEN)
		role = l->role;
	else if (cidr_any(f->in_from, f->n_in_from, peer))
		role = ROLE_INPUT;
	else if (cidr_any(f->out_from, f->n_out_from, peer))
		role = ROLE_OUTPUT;
	else
		why = "no_role";
	struct fo_conn *c = NULL;
	struct esock *es = NULL;
	if (!why) {
		if (f->nfree > 0) {
			c = &f->slab[f->free[f->nfree - 1]];
			es = engine_open(f->eng, fd, &conn_cbs, c, 0);
		}
		if (!es)
			why = "limit";
	}
	if (why) {
		close(fd);
		ctr_add(&f->ctr.rejected, 1);
		log_rejected(f, l, peer, why);
		return;
	}
	f->nfree--;
	set_nodelay(fd);
	memset(c, 0, sizeof(*c));
	c->f = f;
	c->es = es;
	c->role = role;
	c->via = l->via;
	if (len > sizeof(c->peer))
		len = sizeof(c->peer);
	memcpy(&c->peer, peer, len);
	f->active++;
	conn_open(c);
	settle(f);
}

static void on_listener_closed(void *owner, int tag)
{
	struct fo_listener *l = owner;
	(void)tag;
	l->f->ls_closing--;
}

static const struct esock_cbs listener_cbs = {
    .accepted = on_accepted,
    .closed = on_listener_closed,
};

/* --- set-up ---------------------------------------------------------------- */

static int copy_addr(struct cfg_addr *dst, const struct cfg_addr *src)
{
	*dst = *src;
	dst->text = strdup(src->text);
	return dst->text ? 0 : -1;
}

static int copy_cidrs(struct cidr **dst, size_t *n_dst, const struct cidr *src, size_t n)
{
	*n_dst = n;
	*dst = NULL;
	if (n == 0)
		return 0;
	*dst = malloc(n * sizeof(*src));
	if (!*dst)
		return -1;
	memcpy(*dst, src, n * sizeof(*src));
	return 0;
}

/* Listeners in config order: the shared port, then inputs.listen, then
 * outputs.listen; dialers: inputs.connect, then outputs.connect. */
static int build(struct fanout *f, const struct config *cfg, const struct cfg_service *svc)
{
	f->name = strdup(svc->name);
	if (!f->name)
		return -1;
	f->framing = svc->framing;
	f->max_line = svc->max_line;
	f->on_lag = svc->out_on_lag;
	f->max_lag = svc->out_max_lag;
	f->shutdown_timeout_ms = cfg->shutdown_timeout_ms;
	f->connect_timeout_ms =
	    svc->connect_timeout_ms ? svc->connect_timeout_ms : FO_CONNECT_TIMEOUT_MS;
	f->bind_timeout_ms = svc->bind_timeout_ms;
	/* A send carries at most max_lag (or one slice), so that a send in
	 * flight alone never makes an output lag. */
	f->send_max = (uint64_t)ENGINE_MAX_IOV * cfg->buffer_size;
	if (f->send_max > f->max_lag)
		f->send_max = f->max_lag > cfg->buffer_size ? f->max_lag : cfg->buffer_size;
	if (copy_cidrs(&f->in_from, &f->n_in_from, svc->inputs.from, svc->inputs.n_from) < 0 ||
	    copy_cidrs(&f->out_from, &f->n_out_from, svc->outputs.from, svc->outputs.n_from) < 0 ||
	    copy_cidrs(&f->allow, &f->n_allow, svc->allow, svc->n_allow) < 0 ||
	    copy_cidrs(&f->deny, &f->n_deny, svc->deny, svc->n_deny) < 0)
		return -1;

	if (fr_log_init(&f->log, svc->framing, svc->max_line, log_slots(cfg, svc),
	                log_nodes(cfg, svc)) < 0)
		return -1;
	f->budget = buffer_budget(cfg, svc);

	f->n_ds = n_dialers(svc);
	f->n_slab = accepted_max(cfg, svc) + (uint32_t)f->n_ds;
	f->slab = calloc(f->n_slab, sizeof(*f->slab));
	f->free = calloc(f->n_slab, sizeof(*f->free));
	f->ls = calloc(n_listeners(svc) ? n_listeners(svc) : 1, sizeof(*f->ls));
	for (uint32_t i = 0; f->ls && i < n_listeners(svc); i++, f->ls_cap++)
		if (!(f->ls[i] = calloc(1, sizeof(**f->ls))))
			return -1;
	f->ds = calloc(f->n_ds ? f->n_ds : 1, sizeof(*f->ds));
	if (!f->slab || !f->free || !f->ls || !f->ds)
		return -1;
	for (uint32_t i = 0; i < f->n_slab; i++)
		f->slab[i].f = f;
	for (uint32_t i = f->n_slab; i > f->n_ds; i--)
		f->free[f->nfree++] = i - 1;

	const struct {
		const struct cfg_addr *a;
		size_t n;
		uint8_t via, role;
	} ls[] = {{svc->listen, svc->n_listen, VIA_SHARED, ROLE_INPUT},
	          {svc->inputs.listen, svc->inputs.n_listen, VIA_LISTEN, ROLE_INPUT},
	          {svc->outputs.listen, svc->outputs.n_listen, VIA_LISTEN, ROLE_OUTPUT}};
	for (size_t k = 0; k < 3; k++) {
		for (size_t j = 0; j < ls[k].n; j++) {
			struct fo_listener *l = f->ls[f->n_ls];
			l->f = f;
			l->fd = -1;
			l->via = ls[k].via;
			l->role = ls[k].role;
			if (copy_addr(&l->addr, &ls[k].a[j]) < 0)
				return -1;
			f->n_ls++;
		}
	}
	const struct {
		const struct cfg_addr *a;
		size_t n;
		uint8_t role;
	} ds[] = {{svc->inputs.connect, svc->inputs.n_connect, ROLE_INPUT},
	          {svc->outputs.connect, svc->outputs.n_connect, ROLE_OUTPUT}};
	size_t di = 0;
	for (size_t k = 0; k < 2; k++) {
		for (size_t j = 0; j < ds[k].n; j++, di++) {
			struct fo_dialer *d = &f->ds[di];
			d->f = f;
			d->role = ds[k].role;
			d->conn = &f->slab[di];
			d->conn->dialer = d;
			d->next_delay = FO_BACKOFF_MIN_MS;
			if (copy_addr(&d->addr, &ds[k].a[j]) < 0)
				return -1;
		}
	}
	return 0;
}

static void free_all(struct fanout *f)
{
	for (size_t i = 0; f->ls && i < f->ls_cap; i++) {
		struct fo_listener *l = f->ls[i];
		if (!l)
			continue;
		if (l->fd >= 0 && !l->es)
			close(l->fd);
		free(l->addr.text);
		free(l);
	}
	for (size_t i = 0; f->ds && i < f->n_ds; i++)
		free(f->ds[i].addr.text);
	fr_log_fini(&f->log);
	free(f->ls);
	free(f->ds);
	free(f->slab);
	free(f->free);
	free(f->in_from);
	free(f->out_from);
	free(f->allow);
	free(f->deny);
	free(f->name);
	free(f);
}

/* The fan-out services running, for the admin endpoint's thread: it reads
 * their counters by service name (relaxed atomics).  A service is listed
 * from a successful fanout_init() to fanout_fini().  The lock guards the
 * list and the carried totals, so that a retired instance's counters move
 * to its successor in one step (no total ever goes backwards or counts
 * twice); counters themselves are written without it. */
#define FANOUT_REGISTRY_MAX 256
static struct fanout *registry[FANOUT_REGISTRY_MAX];
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static void registry_add(struct fanout *f)
{
	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < FANOUT_REGISTRY_MAX; i++) {
		if (!registry[i]) {
			registry[i] = f;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

static uint64_t ld(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static void fold(_Atomic uint64_t *into, const _Atomic uint64_t *a, const _Atomic uint64_t *b)
{
	atomic_store_explicit(into, ld(into) + ld(a) + ld(b), memory_order_relaxed);
}

/* Removes f; its running totals (not its gauges) go to `heir` if any. */
static void registry_remove(struct fanout *f, struct fanout *heir)
{
	pthread_mutex_lock(&registry_lock);
	if (heir) {
		struct fo_counters *h = &heir->carried;
		const struct fo_counters *c = &f->ctr, *k = &f->carried;
		fold(&h->bytes_in, &c->bytes_in, &k->bytes_in);
		fold(&h->bytes_out, &c->bytes_out, &k->bytes_out);
		fold(&h->records, &c->records, &k->records);
		fold(&h->dropped_records, &c->dropped_records, &k->dropped_records);
		fold(&h->disconnects, &c->disconnects, &k->disconnects);
		fold(&h->rejected, &c->rejected, &k->rejected);
		fold(&h->too_long, &c->too_long, &k->too_long);
	}
	for (size_t i = 0; i < FANOUT_REGISTRY_MAX; i++)
		if (registry[i] == f)
			registry[i] = NULL;
	pthread_mutex_unlock(&registry_lock);
}

static void stats_add(struct fanout_stats *out, const struct fanout *f)
{
	const struct fo_counters *c = &f->ctr, *k = &f->carried;
	out->inputs += ld(&c->inputs);
	out->outputs += ld(&c->outputs);
	out->bytes_in += ld(&c->bytes_in) + ld(&k->bytes_in);
	out->bytes_out += ld(&c->bytes_out) + ld(&k->bytes_out);
	out->records += ld(&c->records) + ld(&k->records);
	out->dropped_records += ld(&c->dropped_records) + ld(&k->dropped_records);
	out->disconnects += ld(&c->disconnects) + ld(&k->disconnects);
	out->rejected += ld(&c->rejected) + ld(&k->rejected);
	out->too_long += ld(&c->too_long) + ld(&k->too_long);
}

/* A service replaced by a reload runs on beside its successor until its
 * connections end: the counters of the name are those of both. */
bool fanout_stats_by_name(const char *name, struct fanout_stats *out)
{
	memset(out, 0, sizeof(*out));
	bool found = false;
	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < FANOUT_REGISTRY_MAX; i++) {
		struct fanout *f = registry[i];
		if (f && strcmp(f->name, name) == 0) {
			stats_add(out, f);
			found = true;
		}
	}
	pthread_mutex_unlock(&registry_lock);
	return found;
}

/* Same local address (family, port, address): the same listening socket. */
static bool same_sockaddr(const struct cfg_addr *a, const struct cfg_addr *b)
{
	if (a->sa.ss_family != b->sa.ss_family)
		return false;
	if (a->sa.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->sa, *y = (const void *)&b->sa;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->sa, *y = (const void *)&b->sa;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
		       x->sin6_scope_id == y->sin6_scope_id && a->wildcard == b->wildcard;
	}
	return a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

/* A listening socket of a service that a reload retires, bound to a's
 * address: the new service takes it over instead of binding again, so no
 * connection attempt meets a closed port. */
static struct fo_listener **find_handover(const struct fanout_group *g, const struct cfg_addr *a)
{
	for (size_t i = 0; g && i < g->n; i++) {
		struct fanout *o = g->svcs[i];
		if (!o->retiring || o->shutting_down)
			continue;
		for (size_t j = 0; j < o->n_ls; j++)
			if (o->ls[j] && o->ls[j]->es && same_sockaddr(&o->ls[j]->addr, a))
				return &o->ls[j];
	}
	return NULL;
}

/* Builds a service: binds what is not handed over from a retiring service of
 * `from` (without waiting for a busy port when !wait_bind: a reload must not
 * hold the loop), registers the listeners with the engine and starts the
 * dialers.  Nothing is taken from `from` unless this succeeds. */
static int fanout_create(struct fanout **out, const struct config *cfg,
                         const struct cfg_service *svc, struct engine *eng,
                         const struct fanout_group *from, bool wait_bind, char *err, size_t len)
{
	*out = NULL;
	struct fanout *f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, len, "out of memory setting up fan-out service %s", svc->name);
		return -1;
	}
	f->eng = eng;
	if (build(f, cfg, svc) < 0) {
		snprintf(err, len, "out of memory setting up fan-out service %s", svc->name);
		free_all(f);
		return -1;
	}
	f->need.buffers = fanout_pool_buffers(cfg, svc);
	f->need.sockets = fanout_max_sockets(cfg, svc);
	f->need.timers = fanout_max_timers(cfg, svc);
	/* Bind everything before the engine learns of any socket, so that a
	 * failure leaves nothing for the loop to call back. */
	for (size_t i = 0; i < f->n_ls; i++) {
		struct fo_listener *l = f->ls[i];
		if (find_handover(from, &l->addr))
			continue;
		l->fd = relay_listen_socket(&l->addr, f->name, false,
		                            wait_bind ? f->bind_timeout_ms : 0, err, len);
		if (l->fd < 0) {
			free_all(f);
			return -1;
		}
	}
	for (size_t i = 0; i < f->n_ls; i++) {
		struct fo_listener *l = f->ls[i];
		struct fo_listener **from_slot = find_handover(from, &l->addr);
		if (from_slot) {
			/* The running socket, its engine slot and its accept
			 * pause move over; address text and role come from the
			 * new configuration. */
			struct fo_listener *h = *from_slot;
			*from_slot = NULL;
			free(h->addr.text);
			h->addr = l->addr;
			h->via = l->via;
			h->role = l->role;
			h->f = f;
			free(l);
			f->ls[i] = h;
			continue;
		}
		l->es = engine_open(eng, l->fd, &listener_cbs, l, 0);
		if (!l->es) {
			snprintf(err, len,
			         "cannot listen on %s (service %s): engine socket table full",
			         l->addr.text, f->name);
			if (!from) {
				/* start-up: a sizing bug; the caller exits before
				 * the loop runs */
				free_all(f);
				return -1;
			}
			log_msg(LOG_ERROR, "reload", "%s", err);
			close(l->fd);
			l->fd = -1;
			continue;
		}
		engine_listen(eng, l->es);
	}
	for (size_t i = 0; i < f->n_ds; i++)
		dial(&f->ds[i]);
	registry_add(f);
	*out = f;
	return 0;
}

int fanout_init(struct fanout **out, const struct config *cfg, const struct cfg_service *svc,
                struct engine *eng, char *err, size_t len)
{
	return fanout_create(out, cfg, svc, eng, NULL, true, err, len);
}

/* --- shutdown and teardown --------------------------------------------------- */

static void on_shutdown_timeout(struct timer *t)
{
	struct fanout *f = container_of(t, struct fanout, shutdown_timer);
	unsigned open = f->n_inputs + f->n_outputs;
	if (open)
		log_msg(LOG_WARN, "shutdown",
		        "shutdown_timeout reached: closing %u fan-out connections (service %s)",
		        open, f->name);
	for (uint32_t i = 0; i < f->n_slab; i++) {
		struct fo_conn *c = &f->slab[i];
		if (c->state == C_OPEN || c->state == C_CONNECTING)
			fo_close(c, "shutdown", false);
	}
	settle(f);
}

void fanout_shutdown(struct fanout *f)
{
	if (f->shutting_down)
		return;
	f->shutting_down = true;
	for (size_t i = 0; i < f->n_ls; i++) {
		struct fo_listener *l = f->ls[i];
		if (!l)
			continue; /* handed over to the service that replaced this one */
		engine_timer_cancel(f->eng, &l->resume);
		if (l->es) {
			engine_close(f->eng, l->es, false);
			l->es = NULL;
			f->ls_closing++;
		}
	}
	for (size_t i = 0; i < f->n_ds; i++) {
		struct fo_dialer *d = &f->ds[i];
		engine_timer_cancel(f->eng, &d->timer);
		if (d->conn->state == C_CONNECTING)
			fo_close(d->conn, "shutdown", false);
	}
	engine_timer_set(f->eng, &f->shutdown_timer, f->shutdown_timeout_ms, on_shutdown_timeout);
	settle(f);
}

unsigned fanout_active(const struct fanout *f)
{
	return f->active + f->ls_closing;
}

const char *fanout_name(const struct fanout *f)
{
	return f->name;
}

void fanout_stats(const struct fanout *f, struct fanout_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&registry_lock);
	stats_add(out, f);
	pthread_mutex_unlock(&registry_lock);
}

void fanout_fini(struct fanout *f)
{
	if (!f)
		return;
	registry_remove(f, NULL);
	engine_timer_cancel(f->eng, &f->retry);
	engine_timer_cancel(f->eng, &f->shutdown_timer);
	for (size_t i = 0; i < f->n_ls; i++)
		if (f->ls[i])
			engine_timer_cancel(f->eng, &f->ls[i]->resume);
	for (size_t i = 0; i < f->n_ds; i++)
		engine_timer_cancel(f->eng, &f->ds[i].timer);
	/* After the loop: whatever is still open gives its buffers back; the
	 * engine closes the descriptors when it is finished. */
	for (uint32_t i = 0; i < f->n_slab; i++) {
		struct fo_conn *c = &f->slab[i];
		if (c->state == C_OPEN && c->role == ROLE_INPUT)
			fr_input_end(&f->log, &c->in);
		if (c->state == C_OPEN && c->role == ROLE_OUTPUT)
			fr_cursor_detach(&f->log, &c->cur);
		for (int k = 0; k < c->ninfl; k++)
			fr_put(&f->log, c->ibuf[k]);
		c->ninfl = 0;
	}
	for (size_t i = 0; i < f->n_ls; i++)
		if (f->ls[i])
			f->ls[i]->fd = -1; /* owned by the engine once opened */
	free_all(f);
}

/* --- every fan-out service of a config ------------------------------------ */

void fanout_sizes(const struct config *cfg, struct fanout_sizes *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct cfg_service *svc = &cfg->services[i];
		if (svc->mode != MODE_FANOUT)
			continue;
		out->buffers += fanout_pool_buffers(cfg, svc);
		out->sockets += fanout_max_sockets(cfg, svc);
		out->timers += fanout_max_timers(cfg, svc);
	}
}

/* Room for reloads: the start-up services twice over (a replaced instance
 * runs beside its successor until its connections end) and a spare for
 * services added later. */
#define FO_SPARE_BUFFERS 1024
#define FO_SPARE_SOCKETS 1024
#define FO_SPARE_TIMERS  256

void fanout_reserve(const struct config *cfg, struct fanout_sizes *out)
{
	fanout_sizes(cfg, out);
	out->buffers = 2 * out->buffers + FO_SPARE_BUFFERS;
	out->sockets = 2 * out->sockets + FO_SPARE_SOCKETS;
	out->timers = 2 * out->timers + FO_SPARE_TIMERS;
}

int fanout_group_init(struct fanout_group *g, const struct config *cfg, struct engine *eng,
                      char *err, size_t len)
{
	memset(g, 0, sizeof(*g));
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		n += cfg->services[i].mode == MODE_FANOUT;
	if (n == 0)
		return 0;
	g->svcs = calloc(n, sizeof(*g->svcs));
	if (!g->svcs) {
		snprintf(err, len, "out of memory setting up fan-out services");
		return -1;
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct cfg_service *svc = &cfg->services[i];
		if (svc->mode != MODE_FANOUT)
			continue;
		if (fanout_init(&g->svcs[g->n], cfg, svc, eng, err, len) < 0) {
			fanout_group_fini(g);
			return -1;
		}
		g->n++;
	}
	return 0;
}

/* --- reload ------------------------------------------------------------------ */

/* The running instance has the sockets and sizes svc asks for: only what
 * can change in place differs (peer lists, timeouts). */
static bool same_structure(const struct fanout *f, const struct config *cfg,
                           const struct cfg_service *svc)
{
	if (f->framing != svc->framing || f->max_line != svc->max_line ||
	    f->on_lag != svc->out_on_lag || f->max_lag != svc->out_max_lag ||
	    f->n_slab != accepted_max(cfg, svc) + n_dialers(svc) || f->n_ds != n_dialers(svc) ||
	    f->n_ls != n_listeners(svc))
		return false;
	const struct {
		const struct cfg_addr *a;
		size_t n;
		uint8_t via, role;
	} ls[] = {{svc->listen, svc->n_listen, VIA_SHARED, ROLE_INPUT},
	          {svc->inputs.listen, svc->inputs.n_listen, VIA_LISTEN, ROLE_INPUT},
	          {svc->outputs.listen, svc->outputs.n_listen, VIA_LISTEN, ROLE_OUTPUT}};
	size_t i = 0;
	for (size_t k = 0; k < 3; k++) {
		for (size_t j = 0; j < ls[k].n; j++) {
			const struct fo_listener *l = f->ls[i++];
			if (!l || !l->es || l->via != ls[k].via || l->role != ls[k].role ||
			    !same_sockaddr(&l->addr, &ls[k].a[j]))
				return false;
		}
	}
	const struct {
		const struct cfg_addr *a;
		size_t n;
		uint8_t role;
	} ds[] = {{svc->inputs.connect, svc->inputs.n_connect, ROLE_INPUT},
	          {svc->outputs.connect, svc->outputs.n_connect, ROLE_OUTPUT}};
	i = 0;
	for (size_t k = 0; k < 2; k++) {
		for (size_t j = 0; j < ds[k].n; j++) {
			const struct fo_dialer *d = &f->ds[i++];
			if (d->role != ds[k].role || !same_sockaddr(&d->addr, &ds[k].a[j]))
				return false;
		}
	}
	return true;
}

/* Peer lists and timeouts: new peers and new dials follow them at once. */
static int update_in_place(struct fanout *f, const struct config *cfg,
                           const struct cfg_service *svc)
{
	struct cidr *in_from, *out_from = NULL, *allow = NULL, *deny = NULL;
	size_t n_in, n_out, n_allow, n_deny;
	if (copy_cidrs(&in_from, &n_in, svc->inputs.from, svc->inputs.n_from) < 0 ||
	    copy_cidrs(&out_from, &n_out, svc->outputs.from, svc->outputs.n_from) < 0 ||
	    copy_cidrs(&allow, &n_allow, svc->allow, svc->n_allow) < 0 ||
	    copy_cidrs(&deny, &n_deny, svc->deny, svc->n_deny) < 0) {
		free(in_from);
		free(out_from);
		free(allow);
		free(deny);
		return -1;
	}
	free(f->in_from);
	free(f->out_from);
	free(f->allow);
	free(f->deny);
	f->in_from = in_from, f->n_in_from = n_in;
	f->out_from = out_from, f->n_out_from = n_out;
	f->allow = allow, f->n_allow = n_allow;
	f->deny = deny, f->n_deny = n_deny;
	f->shutdown_timeout_ms = cfg->shutdown_timeout_ms;
	f->connect_timeout_ms =
	    svc->connect_timeout_ms ? svc->connect_timeout_ms : FO_CONNECT_TIMEOUT_MS;
	f->bind_timeout_ms = svc->bind_timeout_ms;
	return 0;
}

static const struct cfg_service *find_service(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_services; i++)
		if (strcmp(cfg->services[i].name, name) == 0)
			return &cfg->services[i];
	return NULL;
}

static struct fanout *live_by_name(const struct fanout_group *g, const char *name)
{
	for (size_t i = 0; i < g->n; i++)
		if (!g->svcs[i]->retired && strcmp(g->svcs[i]->name, name) == 0)
			return g->svcs[i];
	return NULL;
}

static void log_reload(const char *name, const char *action, const char *msg)
{
	struct logline l;
	log_begin(&l, LOG_INFO, "fanout_reload");
	log_str(&l, "service", name);
	log_str(&l, "action", action);
	log_str(&l, "msg", msg);
	log_end(&l);
}

static void add_sizes(struct fanout_sizes *a, const struct fanout_sizes *b)
{
	a->buffers += b->buffers;
	a->sockets += b->sockets;
	a->timers += b->timers;
}

int fanout_group_reload(struct fanout_group *g, const struct config *cfg, struct engine *eng)
{
	size_t n_new = 0;
	for (size_t i = 0; i < cfg->n_services; i++)
		n_new += cfg->services[i].mode == MODE_FANOUT;
	if (n_new) {
		struct fanout **grown = realloc(g->svcs, (g->n + n_new) * sizeof(*grown));
		if (!grown) {
			log_msg(LOG_ERROR, "reload",
			        "out of memory: fan-out services keep their configuration");
			return -1;
		}
		g->svcs = grown;
	}
	/* What stays, what changes in place, what a new instance replaces. */
	struct fanout_sizes used = {0};
	size_t n_old = g->n;
	for (size_t i = 0; i < n_old; i++) {
		struct fanout *o = g->svcs[i];
		add_sizes(&used, &o->need);
		if (o->retired)
			continue;
		const struct cfg_service *svc = find_service(cfg, o->name);
		if (!svc || svc->mode != MODE_FANOUT || !same_structure(o, cfg, svc))
			o->retiring = true;
		else if (update_in_place(o, cfg, svc) < 0)
			log_msg(LOG_ERROR, "reload",
			        "out of memory: fan-out service %s keeps its peer lists", o->name);
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct cfg_service *svc = &cfg->services[i];
		if (svc->mode != MODE_FANOUT)
			continue;
		struct fanout *old = live_by_name(g, svc->name);
		if (old && !old->retiring)
			continue; /* kept */
		struct fanout_sizes need = {fanout_pool_buffers(cfg, svc),
		                            fanout_max_sockets(cfg, svc),
		                            fanout_max_timers(cfg, svc)};
		char err[512];
		struct fanout *n = NULL;
		if (used.timers + need.timers > g->reserve.timers)
			snprintf(err, sizeof(err),
			         "needs %u timers, %u of the %u reserved at start are free "
			         "(restart ferry to resize)",
			         need.timers,
			         used.timers < g->reserve.timers ? g->reserve.timers - used.timers
			                                         : 0,
			         g->reserve.timers);
		else if (fanout_create(&n, cfg, svc, eng, g, false, err, sizeof(err)) == 0)
			g->svcs[g->n++] = n;
		if (!n) {
			struct logline l;
			log_begin(&l, LOG_ERROR, "reload_failed");
			log_str(&l, "service", svc->name);
			log_str(&l, "error", err);
			log_str(&l, "msg",
			        old ? "keeping the running fan-out service"
			            : "service not started");
			log_end(&l);
			if (old)
				old->retiring = false;
			continue;
		}
		add_sizes(&used, &need);
		if (used.buffers > g->reserve.buffers || used.sockets > g->reserve.sockets)
			log_msg(
			    LOG_WARN, "reload_warning",
			    "fan-out services now may use %u buffers and %u sockets of worker 0; "
			    "%u and %u were reserved at start: past that, peers are refused "
			    "(restart ferry to resize)",
			    used.buffers, used.sockets, g->reserve.buffers, g->reserve.sockets);
		log_reload(svc->name, old ? "replaced" : "added",
		           old ? "new peers join the new configuration; connections of the old "
		                 "one end as at shutdown"
		               : "started");
	}
	for (size_t i = 0; i < n_old; i++) {
		struct fanout *o = g->svcs[i];
		if (!o->retiring)
			continue;
		o->retiring = false;
		o->retired = true;
		if (!live_by_name(g, o->name))
			log_reload(o->name, "removed",
			           "listeners closed; its connections end as at shutdown");
		fanout_shutdown(o);
	}
	return 0;
}

void fanout_group_reap(struct fanout_group *g)
{
	for (size_t i = 0; i < g->n;) {
		struct fanout *o = g->svcs[i];
		if (!o->retired || fanout_active(o) > 0) {
			i++;
			continue;
		}
		registry_remove(o, live_by_name(g, o->name));
		fanout_fini(o);
		memmove(&g->svcs[i], &g->svcs[i + 1], (g->n - i - 1) * sizeof(*g->svcs));
		g->n--;
	}
}

void fanout_group_shutdown(struct fanout_group *g)
{
	for (size_t i = 0; i < g->n; i++)
		fanout_shutdown(g->svcs[i]);
}

unsigned fanout_group_busy(void *arg)
{
	const struct fanout_group *g = arg;
	unsigned n = 0;
	for (size_t i = 0; i < g->n; i++)
		n += fanout_active(g->svcs[i]);
	return n;
}

void fanout_group_fini(struct fanout_group *g)
{
	for (size_t i = 0; i < g->n; i++)
		fanout_fini(g->svcs[i]);
	free(g->svcs);
	memset(g, 0, sizeof(*g));
}
