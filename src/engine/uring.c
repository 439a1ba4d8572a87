/* uring.c - the io_uring engine: the completion-style operations of
 * engine.h produced from io_uring completions, behaving like epoll.c from the
 * owner's point of view.
 *
 * Requests never touch the ring.  engine_send(), engine_recv() and friends
 * only record what is wanted (pending bits) and put the socket on the pending
 * list; poll() turns pending bits into SQEs at the start of each turn, submits
 * them and waits in the same system call, then handles at most
 * URING_CQES_PER_TURN completions and the sockets on the ready list.  So
 * completions reach owners from poll() only, a request cannot fail for want
 * of an SQE, and a handler may request, close and free freely.
 *
 * user_data = op (8 bits) | generation (24 bits) | slot index (32 bits),
 * decoded in ud_decode() only; a completion whose generation no longer
 * matches is dropped, after returning any buffer it carries.  Every socket
 * counts its SQEs whose last CQE has not come (inflight); a multishot SQE
 * stays in flight until a CQE without IORING_CQE_F_MORE.
 *
 * Receiving: one provided buffer ring (group URING_BGID) of br_entries slots,
 * refilled from the pool at every turn up to br_target buffers; a buffer id
 * maps to the pool buffer lent under it (bid_buf).  The kernel takes ring
 * buffers in FIFO order, so every lent buffer ends up resident: the target
 * starts at URING_RING_START and doubles at each ENOBUFS, so memory follows
 * demand instead of the ring's size.  The first engine_recv()
 * arms a multishot recv that keeps reading ahead: buffers that arrive while
 * the owner has not asked wait in the socket's queue (chained through qnext,
 * indexed by pool buffer, so queues cost nothing per connection).  When the
 * queue reaches URING_RQ_CAP the multishot is cancelled so that one
 * connection cannot drain the shared ring; it is re-armed once the owner has
 * taken the queue below URING_RQ_LOW.  Every CQE without F_MORE (ENOBUFS, CQ
 * overflow, cancel) re-arms if the socket still wants data; nothing is lost
 * because the data stays in the socket.  A receive is never armed on an
 * empty ring: the socket waits on the pending list until owners give buffers
 * back to the pool, so a dry pool is back-pressure, as in epoll.c.  EOF and
 * errors are queued after the data and delivered in order.
 *
 * Sending: one sendmsg (MSG_WAITALL | MSG_NOSIGNAL) in flight per socket,
 * continued from where it stopped after a short completion.
 *
 * Splicing (when the opcode probe has IORING_OP_SPLICE): io_uring always runs
 * a splice in an io-wq worker, where an empty socket gives a final -EAGAIN, so
 * splice_in first waits for POLLIN, then takes the pipe (*slot, or one from
 * the pool; none: a buffer receive instead) and issues a SPLICE_F_NONBLOCK
 * splice socket -> pipe.  -EAGAIN with bytes in the pipe means it is out of
 * room: the receive waits until the owner arms it again after draining the
 * pipe, as in epoll.c.  Bytes read ahead into buffers before the switch are
 * delivered first, as `received`.  splice_out splices pipe -> socket at once
 * and waits for POLLOUT after a short or -EAGAIN result, until all n bytes
 * are sent.  A pipe is held (pipes_hold) while a splice writes it, so an owner
 * giving it back meanwhile cannot have it lent twice; pipes are never held by
 * an idle connection (hence no poll linked to the splice).
 *
 * The sockets stay O_NONBLOCK (blocking ones would park an io-wq thread per
 * stalled request).  The price: when a polled request wakes without making
 * progress, io_uring punts it to io-wq, where O_NONBLOCK turns the retry into
 * a final -EAGAIN (after reporting any partial progress).  So -EAGAIN never
 * reaches an owner: sends are issued again from where they stopped, receives
 * and accepts re-armed, and a connect is finished the way epoll.c does it
 * (SO_ERROR, then getpeername), after a poll for POLLOUT if still pending.
 *
 * Closing: SO_LINGER{1,0} first when a reset is asked, then one
 * ASYNC_CANCEL(FD | ALL); the descriptor is closed when inflight reaches 0
 * (IO.md: close() alone does not stop a pending recv), and `closed` is
 * delivered from the ready list; only then is the slot reused.
 *
 * The ring is SINGLE_ISSUER | DEFER_TASKRUN when the kernel takes it, else
 * COOP_TASKRUN | TASKRUN_FLAG, else plain; always a large CQ and SUBMIT_ALL.
 * With DEFER_TASKRUN completions exist only after entering the kernel with
 * GETEVENTS, which every turn does.  SINGLE_ISSUER binds the ring to one
 * thread, and main.c creates every worker's engine on the main thread: so the
 * ring is created disabled (R_DISABLED) and enabled by the first poll(),
 * which makes the thread that runs the loop its issuer.
 */
#include "engine/engine.h"
#include "engine/uring_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* valgrind 3.19 aborts when a signal arrives inside io_uring_enter() called
 * with a signal mask (it models the mask of ppoll and the like, not this
 * one); under valgrind the wait sets the thread's mask instead (see
 * uring_poll).  Without the header, valgrind runs are not detected. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define URING_ON_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef URING_ON_VALGRIND
#define URING_ON_VALGRIND() false
#endif

/* Sizes; the #ifndef lets a test build shrink the CQ to force overflows. */
#ifndef URING_SQ_ENTRIES
#define URING_SQ_ENTRIES 2048
#endif
#ifndef URING_CQ_MIN
#define URING_CQ_MIN 4096
#endif
#ifndef URING_CQ_MAX
#define URING_CQ_MAX 65536
#endif
#ifndef URING_CQES_PER_TURN
#define URING_CQES_PER_TURN 1024
#endif
#define URING_BGID       0
#define URING_WAIT_MAX_S 3600 /* "no limit" waits wake up this often */
#define URING_VG_WAIT_MS 100  /* under valgrind: longest wait (see poll) */
/* Provided buffer ring: at most about this many bytes of pool buffers, within
 * [URING_RING_MIN, URING_RING_MAX] slots and a quarter of the pool; lent
 * buffers start at URING_RING_START and grow with demand. */
#define URING_RING_BYTES (16u << 20)
#define URING_RING_MIN   16
#define URING_RING_MAX   4096
#define URING_RING_START 64
/* Receive queue: stop reading ahead at CAP buffers, resume below LOW. */
#define URING_RQ_CAP 4
#define URING_RQ_LOW 2

#define UD_GEN_BITS 24
#define UD_GEN_MASK ((1u << UD_GEN_BITS) - 1)
#define QNEXT_END   UINT32_MAX

enum uop {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_CONNECT,
	OP_CONNECT_POLL, /* connect still in progress: wait for POLLOUT */
	OP_CANCEL,
	OP_SPIN_POLL,  /* splice_in: wait for POLLIN */
	OP_SPIN,       /* splice_in: socket -> pipe */
	OP_SPOUT_POLL, /* splice_out: wait for POLLOUT */
	OP_SPOUT,      /* splice_out: pipe -> socket */
};

/* Socket state. */
enum {
	S_USED = 1 << 0,
	S_CLOSED = 1 << 1, /* engine_close() called; `closed` not yet delivered */
	S_LISTEN = 1 << 2,
	S_PAUSED = 1 << 3,
	S_ACCEPT_ARMED = 1 << 4,  /* multishot accept issued, last CQE not seen */
	S_ACCEPT_CANCEL = 1 << 5, /* ...and its cancel asked */
	S_RECV_ON = 1 << 6,       /* the owner receives: keep reading ahead */
	S_RECV_WANT = 1 << 7,     /* a `received` completion is owed */
	S_RECV_ARMED = 1 << 8,    /* multishot recv issued, last CQE not seen */
	S_RECV_CANCEL = 1 << 9,   /* ...and its cancel asked (queue full) */
	S_RECV_END = 1 << 10,     /* rq_end (EOF or error) follows the queue */
	S_SENDING = 1 << 11,
	S_SEND_NOW = 1 << 12, /* nothing to send: complete from the loop */
	S_CONNECTING = 1 << 13,
	S_SPIN_WANT = 1 << 14,  /* splice_in asked: a `spliced` completion is owed */
	S_SPIN_POLL = 1 << 15,  /* ...its POLLIN poll issued, CQE not seen */
	S_SPIN_OP = 1 << 16,    /* ...its splice issued (in_pipe held), CQE not seen */
	S_SPIN_FULL = 1 << 17,  /* ...the pipe is out of room: wait for splice_in */
	S_SPOUT = 1 << 18,      /* the send is a splice from out_pipe */
	S_SPOUT_POLL = 1 << 19, /* ...waiting for POLLOUT */
	S_SPOUT_OP = 1 << 20,   /* ...its splice issued, CQE not seen */
	S_SPIN_EOF = 1 << 21,   /* splice_in saw the end while S_SPOUT_OP: held */
};

/* Work for the next flush, turned into SQEs in this order. */
enum {
	P_CANCEL_ALL = 1 << 0,
	P_CANCEL_ACCEPT = 1 << 1,
	P_CANCEL_RECV = 1 << 2,
	P_ACCEPT = 1 << 3,
	P_CONNECT = 1 << 4,
	P_CONNECT_POLL = 1 << 5,
	P_SEND = 1 << 6,
	P_RECV = 1 << 7,
	P_SPIN_POLL = 1 << 8,
	P_SPIN = 1 << 9,
	P_SPOUT_POLL = 1 << 10,
	P_SPOUT = 1 << 11,
};
#define P_LAST P_SPOUT

struct esock {
	int fd;
	uint32_t gen;
	uint32_t idx;
	uint32_t flags;
	uint16_t pend;
	uint16_t inflight; /* SQEs whose last CQE has not come */
	uint16_t ncancel;  /* cancels among them */
	uint16_t rq_len;
	bool on_pending, on_ready; /* list membership outlives the slot's use */
	int tag;
	int rq_end; /* with S_RECV_END: 0 (EOF) or -errno */
	const struct esock_cbs *cbs;
	void *owner;
	struct esock *pending_next, *ready_next;
	struct buf *rq_head, *rq_tail; /* received, not yet delivered */
	const struct iovec *iov;       /* borrowed until the send completes */
	int niov;
	size_t sent, total;
	struct msghdr msg; /* what the SQE points at: stable until submitted */
	struct iovec v[ENGINE_MAX_IOV];
	socklen_t addrlen;
	struct sockaddr_storage addr; /* connect target, stable until submitted */
	/* splice mode */
	struct pipe_buf **slot;    /* splice_in: the owner's pipe slot */
	struct pipe_buf *in_pipe;  /* splice_in: the pipe its splice writes (held) */
	bool in_took;              /* ...taken from the pool, not the owner's */
	struct pipe_buf *out_pipe; /* splice_out: the pipe to drain */
};

struct sock_list {
	struct esock *head, *tail;
};

struct uring {
	struct io_uring ring;
	const char *mode; /* setup flags chosen */
	bool enabled;     /* by the first poll(), on the loop's thread... */
	int enable_err;   /* ...or why that failed (then poll() only sleeps) */
	bool valgrind;    /* wait without the enter's sigmask (see poll) */
	pthread_t owner;  /* ...which alone may enter or register from then on */
	uint32_t nsocks;
	struct esock *socks;
	uint32_t *free; /* stack of free slot indices */
	uint32_t nfree;
	struct sock_list pending, ready;
	/* the provided buffer ring */
	struct io_uring_buf_ring *br;
	size_t br_len;
	uint32_t br_entries; /* a power of two */
	uint32_t br_target;  /* lend up to this many (grows at ENOBUFS) */
	uint32_t br_count;   /* buffers lent to the kernel, CQE not yet seen */
	struct buf **bid_buf;
	uint16_t *bid_free; /* stack of unused buffer ids */
	uint32_t nbid_free;
	uint32_t *qnext; /* receive queues: next pool index, by pool index */
	bool in_overflow;
	bool can_splice; /* IORING_OP_SPLICE in the opcode probe */
	/* counters, logged at fini */
	uint64_t overflows, nobufs, stale, short_sends, starved, eagain;
	uint64_t spliced_in, spliced_out; /* bytes moved through pipes */
	uint64_t spin_eagain, spin_full, spout_waits, splice_fallbacks;
};

static struct uring *u_of(struct engine *e)
{
	return e->impl;
}

/* --- user_data ----------------------------------------------------------- */

struct ud {
	uint32_t idx;
	uint32_t gen;
	enum uop op;
};

static uint64_t ud_make(const struct esock *s, enum uop op)
{
	return ((uint64_t)op << 56) | ((uint64_t)(s->gen & UD_GEN_MASK) << 32) | s->idx;
}

static struct ud ud_decode(uint64_t v)
{
	struct ud d = {
	    .idx = (uint32_t)v,
	    .gen = (uint32_t)(v >> 32) & UD_GEN_MASK,
	    .op = (enum uop)(v >> 56),
	};
	return d;
}

/* The socket a completion belongs to, or NULL when it is stale. */
static struct esock *ud_sock(struct uring *u, struct ud d)
{
	if (d.idx >= u->nsocks)
		return NULL;
	struct esock *s = &u->socks[d.idx];
	if (!(s->flags & S_USED) || (s->gen & UD_GEN_MASK) != d.gen)
		return NULL;
	return s;
}

/* --- lists --------------------------------------------------------------- */

static void list_append(struct sock_list *l, struct esock *s, bool pending)
{
	if (pending)
		s->pending_next = NULL;
	else
		s->ready_next = NULL;
	if (!l->tail)
		l->head = s;
	else if (pending)
		l->tail->pending_next = s;
	else
		l->tail->ready_next = s;
	l->tail = s;
}

static void push_pending(struct uring *u, struct esock *s, uint16_t bits)
{
	s->pend |= bits;
	if (!s->on_pending) {
		s->on_pending = true;
		list_append(&u->pending, s, true);
	}
}

static void push_ready(struct uring *u, struct esock *s)
{
	if (!s->on_ready) {
		s->on_ready = true;
		list_append(&u->ready, s, false);
	}
}

static bool alive(const struct esock *s, uint32_t gen)
{
	return s->gen == gen && (s->flags & (S_USED | S_CLOSED)) == S_USED;
}

/* --- the provided buffer ring -------------------------------------------- */

static uint32_t ring_entries_for(const struct pool *p)
{
	uint64_t want = URING_RING_BYTES / p->buf_size;
	if (want > URING_RING_MAX)
		want = URING_RING_MAX;
	if (want < URING_RING_MIN)
		want = URING_RING_MIN;
	if (want > p->count / 4)
		want = p->count / 4;
	uint32_t n = 1;
	while ((uint64_t)n * 2 <= want)
		n *= 2;
	return n;
}

/* Lends free pool buffers to the kernel until br_target are lent or the pool
 * is empty.  Called every turn: this is how buffers the owners released come
 * back to the ring. */
static void ring_refill(struct engine *e, struct uring *u)
{
	int mask = io_uring_buf_ring_mask(u->br_entries);
	int n = 0;
	while (u->br_count + (uint32_t)n < u->br_target) {
		struct buf *b = pool_get(e->pool);
		if (!b)
			break;
		uint16_t bid = u->bid_free[--u->nbid_free];
		u->bid_buf[bid] = b;
		io_uring_buf_ring_add(u->br, b->data, (unsigned)e->pool->buf_size, bid, mask, n);
		n++;
	}
	if (n) {
		io_uring_buf_ring_advance(u->br, n);
		u->br_count += (uint32_t)n;
	}
}

/* Takes back the buffer a CQE names; NULL for an id we did not lend. */
static struct buf *ring_take(struct uring *u, uint32_t bid)
{
	if (bid >= u->br_entries || !u->bid_buf[bid])
		return NULL;
	struct buf *b = u->bid_buf[bid];
	u->bid_buf[bid] = NULL;
	u->bid_free[u->nbid_free++] = (uint16_t)bid;
	u->br_count--;
	return b;
}

/* --- receive queues ------------------------------------------------------ */

static void rq_push(struct uring *u, struct esock *s, struct buf *b)
{
	u->qnext[b->idx] = QNEXT_END;
	if (s->rq_tail)
		u->qnext[s->rq_tail->idx] = b->idx;
	else
		s->rq_head = b;
	s->rq_tail = b;
	s->rq_len++;
}

static struct buf *rq_pop(struct engine *e, struct uring *u, struct esock *s)
{
	struct buf *b = s->rq_head;
	if (!b)
		return NULL;
	uint32_t next = u->qnext[b->idx];
	s->rq_head = next == QNEXT_END ? NULL : &e->pool->bufs[next];
	if (!s->rq_head)
		s->rq_tail = NULL;
	s->rq_len--;
	return b;
}

static void rq_drop(struct engine *e, struct uring *u, struct esock *s)
{
	struct buf *b;
	while ((b = rq_pop(e, u, s)) != NULL)
		buf_unref(b);
}

/* Arms the multishot recv (at the next flush) when the owner receives, the
 * stream goes on and the queue has room; withdraws a cancel not yet sent. */
static void recv_maybe_arm(struct uring *u, struct esock *s)
{
	uint32_t f = s->flags;
	if (!(f & S_RECV_ON) || (f & (S_CLOSED | S_RECV_END)) || s->rq_len >= URING_RQ_LOW)
		return;
	if (f & S_RECV_ARMED) {
		if (s->pend & P_CANCEL_RECV) {
			s->pend &= (uint16_t)~P_CANCEL_RECV;
			s->flags &= ~(uint32_t)S_RECV_CANCEL;
		}
		return;
	}
	push_pending(u, s, P_RECV);
}

/* Stops reading ahead once the queue is full (the owner is not asking). */
static void recv_check_cap(struct uring *u, struct esock *s)
{
	if ((s->flags & (S_RECV_ARMED | S_RECV_CANCEL | S_RECV_WANT)) != S_RECV_ARMED ||
	    s->rq_len < URING_RQ_CAP)
		return;
	s->flags |= S_RECV_CANCEL;
	push_pending(u, s, P_CANCEL_RECV);
}

/* Delivers one `received` completion if one is owed and something is queued.
 * The callback may close or re-arm s. */
static void recv_deliver(struct engine *e, struct uring *u, struct esock *s)
{
	if ((s->flags & (S_RECV_WANT | S_CLOSED)) != S_RECV_WANT)
		return;
	struct buf *b = rq_pop(e, u, s);
	if (b) {
		s->flags &= ~(uint32_t)S_RECV_WANT;
		recv_maybe_arm(u, s);
		s->cbs->received(s->owner, s->tag, b, (int)b->len);
	} else if (s->flags & S_RECV_END) {
		s->flags &= ~(uint32_t)S_RECV_WANT;
		s->cbs->received(s->owner, s->tag, NULL, s->rq_end);
	}
}

static void accept_maybe_arm(struct uring *u, struct esock *s)
{
	if ((s->flags & (S_LISTEN | S_PAUSED | S_CLOSED | S_ACCEPT_ARMED)) == S_LISTEN)
		push_pending(u, s, P_ACCEPT);
}

/* --- splice -------------------------------------------------------------- */

/* Moves a splice_in along: bytes already read ahead into buffers (and an end
 * after them) go first, as a `received`, so order is kept; a multishot recv
 * still armed is cancelled and its last CQE awaited; otherwise POLLIN is
 * awaited (the splice itself is issued when it fires: see on_spin_poll). */
static void spin_kick(struct uring *u, struct esock *s)
{
	uint32_t f = s->flags;
	if ((f & (S_SPIN_WANT | S_CLOSED)) != S_SPIN_WANT)
		return;
	if (s->rq_head || (f & S_RECV_END)) {
		s->flags = (f & ~(uint32_t)(S_SPIN_WANT | S_SPIN_FULL)) | S_RECV_WANT;
		push_ready(u, s);
		return;
	}
	if (f & S_RECV_ARMED) {
		if (!(f & S_RECV_CANCEL)) {
			s->flags |= S_RECV_CANCEL;
			push_pending(u, s, P_CANCEL_RECV);
		}
		return;
	}
	if ((f & (S_SPIN_POLL | S_SPIN_OP | S_SPIN_FULL | S_SPIN_EOF)) || s->in_pipe)
		return;
	push_pending(u, s, P_SPIN_POLL);
}

/* Ends the splice_in's hold on in_pipe without handing it to the owner: a
 * pipe taken from the pool goes back, one the owner gave back meanwhile gets
 * its deferred put, the owner's own stays where it is. */
static void spin_drop_pipe(struct engine *e, struct esock *s)
{
	struct pipe_buf *p = s->in_pipe;
	if (!p)
		return;
	s->in_pipe = NULL;
	if (pipes_release(e->pipes, p, false) && s->in_took)
		pipes_put(e->pipes, p);
	s->in_took = false;
}

/* --- ring set-up (shared with the probe) --------------------------------- */

/* Creates the ring with the best task-running mode the kernel accepts:
 * EINVAL means "flag unknown here", anything else is a real failure. */
static int ring_setup(struct io_uring *ring, unsigned sq, unsigned cq, unsigned extra,
                      const char **mode)
{
	static const struct {
		unsigned flags;
		const char *name;
	} tries[] = {
	    {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	     "DEFER_TASKRUN"},
	    {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	     "COOP_TASKRUN"},
	    {0, "no setup flags"},
	};
	int r = -EINVAL;
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = tries[i].flags | extra;
		if (cq) {
			p.flags |= IORING_SETUP_CQSIZE;
			p.cq_entries = cq;
		}
		r = io_uring_queue_init_params(sq, ring, &p);
		if (r == 0) {
			*mode = tries[i].name;
			return 0;
		}
		if (r != -EINVAL)
			return r;
	}
	return r;
}

/* Registers `entries` (a power of two) ring slots at page-aligned memory:
 * liburing 2.3 has no io_uring_setup_buf_ring(). */
static int buf_ring_register(struct io_uring *ring, uint32_t entries,
                             struct io_uring_buf_ring **out, size_t *out_len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (entries * sizeof(struct io_uring_buf) + page - 1) & ~(page - 1);
	void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -ENOMEM;
	struct io_uring_buf_ring *br = mem;
	io_uring_buf_ring_init(br);
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)mem;
	reg.ring_entries = entries;
	reg.bgid = URING_BGID;
	int r = io_uring_register_buf_ring(ring, &reg, 0);
	if (r < 0) {
		munmap(mem, len);
		return r;
	}
	*out = br;
	*out_len = len;
	return 0;
}

/* --- probe --------------------------------------------------------------- */

/* Why io_uring_setup() failed, in words an operator can act on. */
static void explain_setup_error(int r, char *why, size_t len)
{
	int disabled = -1;
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
	if (f) {
		if (fscanf(f, "%d", &disabled) != 1)
			disabled = -1;
		fclose(f);
	}
	if (r == -EPERM && disabled == 2)
		snprintf(why, len,
		         "io_uring_setup: EPERM: disabled by sysctl "
		         "kernel.io_uring_disabled=2");
	else if (r == -EPERM && disabled == 1)
		snprintf(why, len,
		         "io_uring_setup: EPERM: kernel.io_uring_disabled=1 and this "
		         "process is not in kernel.io_uring_group");
	else if (r == -EPERM)
		snprintf(why, len, "io_uring_setup: EPERM: blocked (seccomp or container policy?)");
	else if (r == -ENOSYS)
		snprintf(why, len, "io_uring_setup: ENOSYS: kernel without io_uring");
	else if (r == -ENOMEM)
		snprintf(why, len,
		         "io_uring_setup: ENOMEM: cannot allocate the rings "
		         "(RLIMIT_MEMLOCK?)");
	else
		snprintf(why, len, "io_uring_setup: %s", strerror(-r));
}

static const struct {
	int op;
	const char *name;
} needed_ops[] = {
    {IORING_OP_ACCEPT, "ACCEPT"},     {IORING_OP_RECV, "RECV"},
    {IORING_OP_SENDMSG, "SENDMSG"},   {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_POLL_ADD, "POLL_ADD"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    {IORING_OP_SHUTDOWN, "SHUTDOWN"}, {IORING_OP_PROVIDE_BUFFERS, "PROVIDE_BUFFERS"},
};

#define NEEDED_FEATURES                                                                            \
	(IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL | IORING_FEAT_EXT_ARG |                        \
	 IORING_FEAT_SUBMIT_STABLE)

static int probe_ops(struct io_uring *ring, char *why, size_t len)
{
	if ((ring->features & NEEDED_FEATURES) != NEEDED_FEATURES) {
		snprintf(why, len,
		         "missing features: have 0x%x, need 0x%x (NODROP, FAST_POLL, "
		         "EXT_ARG, SUBMIT_STABLE)",
		         ring->features, (unsigned)NEEDED_FEATURES);
		return -EOPNOTSUPP;
	}
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	if (!p) {
		snprintf(why, len, "cannot read the opcode probe (IORING_REGISTER_PROBE)");
		return -EOPNOTSUPP;
	}
	int r = 0;
	for (size_t i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
		if (!io_uring_opcode_supported(p, needed_ops[i].op)) {
			snprintf(why, len, "opcode %s not supported", needed_ops[i].name);
			r = -EOPNOTSUPP;
			break;
		}
	}
	io_uring_free_probe(p);
	return r;
}

/* Waits (up to 1 s in all) for completions and hands each to `fn` until it
 * says done. */
static int probe_wait(struct io_uring *ring, bool (*fn)(const struct io_uring_cqe *, void *),
                      void *arg)
{
	for (int tries = 0; tries < 10; tries++) {
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
		struct io_uring_cqe *cqe;
		int r = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
		if (r < 0 && r != -ETIME && r != -EINTR)
			return r;
		unsigned head, n = 0;
		bool done = false;
		io_uring_for_each_cqe(ring, head, cqe)
		{
			n++;
			if (fn(cqe, arg))
				done = true;
		}
		io_uring_cq_advance(ring, n);
		if (done)
			return 0;
	}
	return -ETIMEDOUT;
}

struct probe_state {
	int accept_res, recv_res, cancel_res;
	unsigned accept_flags, recv_flags;
	bool got_accept, got_recv, got_cancel;
	int finals; /* last CQEs seen after the cancels */
};

static bool probe_first(const struct io_uring_cqe *cqe, void *arg)
{
	struct probe_state *ps = arg;
	if (cqe->user_data == 1 && !ps->got_accept) {
		ps->got_accept = true;
		ps->accept_res = cqe->res;
		ps->accept_flags = cqe->flags;
		if (cqe->res >= 0)
			close(cqe->res);
	} else if (cqe->user_data == 2 && !ps->got_recv) {
		ps->got_recv = true;
		ps->recv_res = cqe->res;
		ps->recv_flags = cqe->flags;
	}
	return ps->got_accept && ps->got_recv;
}

static bool probe_cancel(const struct io_uring_cqe *cqe, void *arg)
{
	struct probe_state *ps = arg;
	if (cqe->user_data == 3) {
		ps->got_cancel = true;
		ps->cancel_res = cqe->res;
	} else if (cqe->user_data == 4) {
		/* second cancel: nothing to check */
	} else if (!(cqe->flags & IORING_CQE_F_MORE)) {
		ps->finals++;
	} else if (cqe->user_data == 1 && cqe->res >= 0) {
		close(cqe->res);
	}
	return ps->got_cancel && ps->finals >= 2;
}

/* Tries what uring.c relies on, on a throw-away ring: a buffer ring, a
 * multishot recv into it, a multishot accept and cancelling by descriptor.
 * All on AF_UNIX sockets, so no network set-up is needed. */
static int probe_live(struct io_uring *ring, char *why, size_t len)
{
	static char bufs[2][64];
	struct io_uring_buf_ring *br;
	size_t br_len;
	int sp[2] = {-1, -1}, lfd = -1, cfd = -1;
	int r = buf_ring_register(ring, 2, &br, &br_len);
	if (r < 0) {
		snprintf(why, len, "buffer ring registration: %s", strerror(-r));
		return r;
	}
	io_uring_buf_ring_add(br, bufs[0], sizeof(bufs[0]), 0, 1, 0);
	io_uring_buf_ring_add(br, bufs[1], sizeof(bufs[1]), 1, 1, 1);
	io_uring_buf_ring_advance(br, 2);

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t sl = sizeof(sa_family_t);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) == -1 ||
	    (lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(lfd, (struct sockaddr *)&sun, sl) == -1 || listen(lfd, 4) == -1) {
		r = -errno;
		snprintf(why, len, "probe sockets: %s", strerror(-r));
		goto out;
	}
	sl = sizeof(sun);
	if (getsockname(lfd, (struct sockaddr *)&sun, &sl) == -1) {
		r = -errno;
		snprintf(why, len, "probe sockets: %s", strerror(-r));
		goto out;
	}

	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, 1);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_recv_multishot(sqe, sp[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = URING_BGID;
	io_uring_sqe_set_data64(sqe, 2);
	io_uring_submit(ring);
	cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cfd == -1 || connect(cfd, (struct sockaddr *)&sun, sl) == -1 ||
	    write(sp[1], "x", 1) != 1) {
		r = -errno;
		snprintf(why, len, "probe sockets: %s", strerror(-r));
		goto out;
	}
	struct probe_state ps = {0};
	r = probe_wait(ring, probe_first, &ps);
	r = -EOPNOTSUPP;
	if (!ps.got_accept)
		snprintf(why, len, "multishot accept: no completion within 1s");
	else if (ps.accept_res < 0 || !(ps.accept_flags & IORING_CQE_F_MORE))
		snprintf(why, len, "multishot accept not supported (%s)",
		         ps.accept_res < 0 ? strerror(-ps.accept_res) : "single shot");
	else if (!ps.got_recv)
		snprintf(why, len, "multishot recv: no completion within 1s");
	else if (ps.recv_res != 1 || !(ps.recv_flags & IORING_CQE_F_MORE) ||
	         !(ps.recv_flags & IORING_CQE_F_BUFFER))
		snprintf(why, len, "multishot recv with a buffer ring not supported (%s)",
		         ps.recv_res < 0 ? strerror(-ps.recv_res) : "single shot");
	else
		r = 0;
	if (r < 0)
		goto out;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_cancel_fd(sqe, lfd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, 3);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_cancel_fd(sqe, sp[0], IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, 4);
	r = probe_wait(ring, probe_cancel, &ps);
	if (ps.got_cancel && ps.cancel_res < 0) {
		snprintf(why, len, "cancel by descriptor not supported (%s)",
		         strerror(-ps.cancel_res));
		r = -EOPNOTSUPP;
	} else if (r < 0) {
		snprintf(why, len, "cancel by descriptor: no completion (%s)", strerror(-r));
		r = -EOPNOTSUPP;
	}
out:
	if (cfd >= 0)
		close(cfd);
	if (lfd >= 0)
		close(lfd);
	if (sp[0] >= 0) {
		close(sp[0]);
		close(sp[1]);
	}
	/* Nothing is armed any more (or the ring goes away with it): the
	 * static buffers are never written after this. */
	io_uring_unregister_buf_ring(ring, URING_BGID);
	munmap(br, br_len);
	return r;
}

/* IORING_OP_SPLICE is optional: without it connections use buffers. */
static bool probe_splice(struct io_uring *ring)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	if (!p)
		return false;
	bool ok = io_uring_opcode_supported(p, IORING_OP_SPLICE);
	io_uring_free_probe(p);
	return ok;
}

static int uring_probe(char *why, size_t len)
{
	struct io_uring ring;
	const char *mode = "";
	int r = ring_setup(&ring, 8, 0, 0, &mode);
	if (r < 0) {
		explain_setup_error(r, why, len);
		return r;
	}
	r = probe_ops(&ring, why, len);
	if (r == 0)
		r = probe_live(&ring, why, len);
	if (r == 0)
		snprintf(why, len,
		         "usable: multishot accept, multishot recv, buf ring, cancel by fd%s, %s, "
		         "features 0x%x%s",
		         probe_splice(&ring) ? ", splice" : "", mode, ring.features,
		         (ring.features & IORING_FEAT_RECVSEND_BUNDLE) ? " (bundles available)"
		                                                       : "");
	io_uring_queue_exit(&ring);
	return r;
}

/* --- init / fini --------------------------------------------------------- */

static unsigned cq_entries_for(uint32_t max_socks)
{
	uint64_t want = (uint64_t)max_socks * 4;
	unsigned n = URING_CQ_MIN;
	while (n < want && n < URING_CQ_MAX)
		n *= 2;
	return n;
}

static void uring_free(struct uring *u)
{
	free(u->socks);
	free(u->free);
	free(u->bid_buf);
	free(u->bid_free);
	free(u->qnext);
	free(u);
}

static int uring_init(struct engine *e, uint32_t max_socks)
{
	if (max_socks == 0)
		return -EINVAL;
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->nsocks = max_socks;
	u->br_entries = ring_entries_for(e->pool);
	u->socks = calloc(max_socks, sizeof(*u->socks));
	u->free = calloc(max_socks, sizeof(*u->free));
	u->bid_buf = calloc(u->br_entries, sizeof(*u->bid_buf));
	u->bid_free = calloc(u->br_entries, sizeof(*u->bid_free));
	u->qnext = calloc(e->pool->count, sizeof(*u->qnext));
	if (!u->socks || !u->free || !u->bid_buf || !u->bid_free || !u->qnext) {
		uring_free(u);
		return -ENOMEM;
	}
	int r = ring_setup(&u->ring, URING_SQ_ENTRIES, cq_entries_for(max_socks),
	                   IORING_SETUP_R_DISABLED, &u->mode);
	if (r < 0) {
		uring_free(u);
		return r;
	}
	r = buf_ring_register(&u->ring, u->br_entries, &u->br, &u->br_len);
	if (r < 0) {
		io_uring_queue_exit(&u->ring);
		uring_free(u);
		return r;
	}
	for (uint32_t i = 0; i < max_socks; i++) {
		u->socks[i].idx = i;
		u->socks[i].fd = -1;
		u->free[i] = max_socks - 1 - i;
	}
	u->nfree = max_socks;
	for (uint32_t i = 0; i < u->br_entries; i++)
		u->bid_free[i] = (uint16_t)(u->br_entries - 1 - i);
	u->nbid_free = u->br_entries;
	u->br_target = u->br_entries < URING_RING_START ? u->br_entries : URING_RING_START;
	u->valgrind = URING_ON_VALGRIND();
	u->can_splice = probe_splice(&u->ring);
	e->impl = u;
	log_msg(LOG_DEBUG, "engine",
	        "io_uring: %s, sq %u, cq %u, buffer ring %u x %zu bytes (%u lent at first), "
	        "receive queue cap %d, splice %s",
	        u->mode, u->ring.sq.ring_entries, u->ring.cq.ring_entries, u->br_entries,
	        e->pool->buf_size, u->br_target, URING_RQ_CAP,
	        u->can_splice ? "supported" : "not supported");
	return 0;
}

/* At exit: cancels whatever is still in flight and reaps it (at most about a
 * second), so that every pool buffer lent to the kernel comes back. */
static void fini_drain(struct uring *u)
{
	bool any = false;
	for (uint32_t i = 0; i < u->nsocks; i++) {
		struct esock *s = &u->socks[i];
		if (!(s->flags & S_USED) || s->inflight == 0 || s->fd < 0)
			continue;
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
		if (!sqe) {
			io_uring_submit(&u->ring);
			sqe = io_uring_get_sqe(&u->ring);
		}
		if (!sqe)
			break;
		io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, ud_make(s, OP_CANCEL));
		s->inflight++;
		s->ncancel++;
		any = true;
	}
	for (int tries = 0; any && tries < 20; tries++) {
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
		struct io_uring_cqe *cqe;
		io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
		unsigned head, n = 0;
		io_uring_for_each_cqe(&u->ring, head, cqe)
		{
			n++;
			if (cqe->flags & IORING_CQE_F_BUFFER) {
				struct buf *b = ring_take(u, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
				if (b)
					buf_unref(b);
			}
			struct ud d = ud_decode(cqe->user_data);
			struct esock *s = ud_sock(u, d);
			if (d.op == OP_ACCEPT && cqe->res >= 0)
				close(cqe->res);
			if (s && !(cqe->flags & IORING_CQE_F_MORE) && s->inflight)
				s->inflight--;
		}
		io_uring_cq_advance(&u->ring, n);
		any = false;
		for (uint32_t i = 0; i < u->nsocks && !any; i++)
			any = (u->socks[i].flags & S_USED) && u->socks[i].inflight > 0;
	}
}

static void uring_fini(struct engine *e)
{
	struct uring *u = u_of(e);
	if (!u)
		return;
	/* Only the issuer thread may enter or register.  Another thread
	 * (main.c finishing a worker's engine) leaves the cancelling to the
	 * kernel's ring teardown; at a normal stop nothing but a listener's
	 * accept is still armed then, and no buffer is being written. */
	bool issuer = u->enabled && pthread_equal(u->owner, pthread_self());
	if (issuer)
		fini_drain(u);
	for (uint32_t i = 0; i < u->nsocks; i++) {
		struct esock *s = &u->socks[i];
		if (!(s->flags & S_USED))
			continue;
		rq_drop(e, u, s);
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
	}
	if (issuer)
		io_uring_unregister_buf_ring(&u->ring, URING_BGID);
	io_uring_queue_exit(&u->ring);
	for (uint32_t bid = 0; bid < u->br_entries; bid++)
		if (u->bid_buf[bid])
			buf_unref(u->bid_buf[bid]);
	munmap(u->br, u->br_len);
	log_msg(LOG_DEBUG, "engine",
	        "io_uring: buffers lent at most %u, cq overflows %llu, ENOBUFS %llu, "
	        "starved %llu, stale %llu, short sends %llu, sends retried after EAGAIN %llu",
	        u->br_target, (unsigned long long)u->overflows, (unsigned long long)u->nobufs,
	        (unsigned long long)u->starved, (unsigned long long)u->stale,
	        (unsigned long long)u->short_sends, (unsigned long long)u->eagain);
	log_msg(LOG_DEBUG, "engine",
	        "io_uring: spliced in %llu bytes, out %llu bytes; splice_in EAGAIN %llu, "
	        "pipe full %llu, no pipe (buffers) %llu; splice_out waits for POLLOUT %llu",
	        (unsigned long long)u->spliced_in, (unsigned long long)u->spliced_out,
	        (unsigned long long)u->spin_eagain, (unsigned long long)u->spin_full,
	        (unsigned long long)u->splice_fallbacks, (unsigned long long)u->spout_waits);
	uring_free(u);
	e->impl = NULL;
}

/* --- requests ------------------------------------------------------------ */

static struct esock *uring_open(struct engine *e, int fd, const struct esock_cbs *cbs, void *owner,
                                int tag)
{
	struct uring *u = u_of(e);
	if (u->nfree == 0 || fd < 0)
		return NULL;
	struct esock *s = &u->socks[u->free[--u->nfree]];
	s->fd = fd;
	s->flags = S_USED;
	s->pend = 0;
	s->inflight = 0;
	s->ncancel = 0;
	s->rq_len = 0;
	s->rq_head = s->rq_tail = NULL;
	s->rq_end = 0;
	s->tag = tag;
	s->cbs = cbs;
	s->owner = owner;
	s->iov = NULL;
	s->niov = 0;
	s->slot = NULL;
	s->in_pipe = NULL;
	s->in_took = false;
	s->out_pipe = NULL;
	return s;
}

static int uring_listen(struct engine *e, struct esock *s)
{
	s->flags |= S_LISTEN;
	accept_maybe_arm(u_of(e), s);
	return 0;
}

static void uring_accept_pause(struct engine *e, struct esock *s, bool pause)
{
	struct uring *u = u_of(e);
	if (s->flags & S_CLOSED)
		return;
	if (pause) {
		s->flags |= S_PAUSED;
		s->pend &= (uint16_t)~P_ACCEPT;
		if ((s->flags & (S_ACCEPT_ARMED | S_ACCEPT_CANCEL)) == S_ACCEPT_ARMED) {
			s->flags |= S_ACCEPT_CANCEL;
			push_pending(u, s, P_CANCEL_ACCEPT);
		}
		return;
	}
	s->flags &= ~(uint32_t)S_PAUSED;
	if (s->pend & P_CANCEL_ACCEPT) {
		s->pend &= (uint16_t)~P_CANCEL_ACCEPT;
		s->flags &= ~(uint32_t)S_ACCEPT_CANCEL;
	}
	/* An accept still being cancelled is re-armed by its last CQE. */
	accept_maybe_arm(u, s);
}

static int uring_connect(struct engine *e, struct esock *s, const struct sockaddr *sa,
                         socklen_t len)
{
	if (s->flags & S_CLOSED)
		return -EBADF;
	if (len > sizeof(s->addr))
		return -EINVAL;
	memcpy(&s->addr, sa, len);
	s->addrlen = len;
	s->flags |= S_CONNECTING;
	push_pending(u_of(e), s, P_CONNECT);
	return 0;
}

static int uring_recv(struct engine *e, struct esock *s)
{
	struct uring *u = u_of(e);
	if (s->flags & S_CLOSED)
		return -EBADF;
	s->flags |= S_RECV_ON | S_RECV_WANT;
	if (s->rq_head || (s->flags & S_RECV_END))
		push_ready(u, s);
	else
		recv_maybe_arm(u, s);
	return 0;
}

/* Points the msghdr at what is left to send. */
static void send_build(struct esock *s)
{
	size_t skip = s->sent;
	int n = 0;
	for (int i = 0; i < s->niov; i++) {
		if (skip >= s->iov[i].iov_len) {
			skip -= s->iov[i].iov_len;
			continue;
		}
		s->v[n].iov_base = (char *)s->iov[i].iov_base + skip;
		s->v[n].iov_len = s->iov[i].iov_len - skip;
		skip = 0;
		n++;
	}
	memset(&s->msg, 0, sizeof(s->msg));
	s->msg.msg_iov = s->v;
	s->msg.msg_iovlen = (size_t)n;
}

static int uring_send(struct engine *e, struct esock *s, const struct iovec *iov, int n)
{
	struct uring *u = u_of(e);
	if (n <= 0 || n > ENGINE_MAX_IOV)
		return -EINVAL;
	if (s->flags & S_CLOSED)
		return -EBADF;
	if (s->flags & S_SENDING)
		return -EBUSY;
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (total > INT32_MAX)
		return -EINVAL;
	s->iov = iov;
	s->niov = n;
	s->sent = 0;
	s->total = total;
	s->flags |= S_SENDING;
	if (total == 0) {
		s->flags |= S_SEND_NOW;
		push_ready(u, s);
		return 0;
	}
	send_build(s);
	push_pending(u, s, P_SEND);
	return 0;
}

static int uring_splice_in(struct engine *e, struct esock *s, struct pipe_buf **slot)
{
	struct uring *u = u_of(e);
	if (s->flags & S_CLOSED)
		return -EBADF;
	if (!u->can_splice)
		return uring_recv(e, s);
	s->slot = slot;
	/* No reading ahead into buffers from now on; called again after the
	 * pipe drained, which ends a wait for room. */
	s->flags = (s->flags & ~(uint32_t)(S_RECV_ON | S_SPIN_FULL)) | S_SPIN_WANT;
	spin_kick(u, s);
	return 0;
}

static int uring_splice_out(struct engine *e, struct esock *s, struct pipe_buf *p, uint32_t n)
{
	struct uring *u = u_of(e);
	if (s->flags & S_CLOSED)
		return -EBADF;
	if (s->flags & S_SENDING)
		return -EBUSY;
	if (!u->can_splice || n == 0 || n > p->bytes || n > INT32_MAX)
		return -EINVAL;
	s->out_pipe = p;
	s->iov = NULL;
	s->niov = 0;
	s->sent = 0;
	s->total = n;
	s->flags |= S_SENDING | S_SPOUT;
	push_pending(u, s, P_SPOUT);
	return 0;
}

static int uring_shutdown_wr(struct engine *e, struct esock *s)
{
	(void)e;
	if (s->fd < 0)
		return -EBADF;
	if (shutdown(s->fd, SHUT_WR) == -1)
		return -errno;
	return 0;
}

/* Closes the descriptor now that nothing is in flight; `closed` follows
 * from the ready list. */
static void finish_close(struct uring *u, struct esock *s)
{
	close(s->fd);
	s->fd = -1;
	push_ready(u, s);
}

static void uring_close(struct engine *e, struct esock *s, bool reset)
{
	struct uring *u = u_of(e);
	if ((s->flags & (S_USED | S_CLOSED)) != S_USED)
		return;
	if (reset) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	rq_drop(e, u, s);
	/* A pipe taken for a splice not yet issued: nothing will end it. */
	if (s->in_pipe && !(s->flags & S_SPIN_OP))
		spin_drop_pipe(e, s);
	s->flags = S_USED | S_CLOSED;
	s->pend = 0;
	s->iov = NULL;
	if (s->inflight > 0)
		push_pending(u, s, P_CANCEL_ALL);
	else
		finish_close(u, s);
}

static int uring_fd(const struct esock *s)
{
	return s->fd;
}

/* --- submission ---------------------------------------------------------- */

static struct io_uring_sqe *sqe_get(struct uring *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		/* SQ full: hand what is queued to the kernel and go on. */
		io_uring_submit(&u->ring);
		sqe = io_uring_get_sqe(&u->ring);
	}
	return sqe;
}

static struct io_uring_sqe *sqe_for(struct uring *u, struct esock *s, enum uop op)
{
	struct io_uring_sqe *sqe = sqe_get(u);
	if (!sqe)
		return NULL;
	s->inflight++;
	if (op == OP_CANCEL)
		s->ncancel++;
	/* the prep helpers leave user_data alone: the caller sets it last,
	 * with sqe_done() */
	return sqe;
}

static void sqe_done(struct io_uring_sqe *sqe, const struct esock *s, enum uop op)
{
	io_uring_sqe_set_data64(sqe, ud_make(s, op));
}

/* Turns one pending bit into an SQE.  False: keep it for the next turn (no
 * SQE available, or no buffer to receive into yet). */
static bool issue_one(struct uring *u, struct esock *s, uint16_t bit)
{
	struct io_uring_sqe *sqe;
	uint32_t f = s->flags;
	switch (bit) {
	case P_CANCEL_ACCEPT:
	case P_CANCEL_RECV: {
		uint32_t armed = bit == P_CANCEL_ACCEPT ? S_ACCEPT_ARMED : S_RECV_ARMED;
		if (!(f & armed))
			return true;
		if (!(sqe = sqe_for(u, s, OP_CANCEL)))
			return false;
		io_uring_prep_cancel64(sqe,
		                       ud_make(s, bit == P_CANCEL_ACCEPT ? OP_ACCEPT : OP_RECV), 0);
		sqe_done(sqe, s, OP_CANCEL);
		return true;
	}
	case P_ACCEPT:
		if ((f & (S_LISTEN | S_PAUSED | S_ACCEPT_ARMED)) != S_LISTEN)
			return true;
		if (!(sqe = sqe_for(u, s, OP_ACCEPT)))
			return false;
		io_uring_prep_multishot_accept(sqe, s->fd, NULL, NULL,
		                               SOCK_NONBLOCK | SOCK_CLOEXEC);
		sqe_done(sqe, s, OP_ACCEPT);
		s->flags |= S_ACCEPT_ARMED;
		return true;
	case P_CONNECT:
		if (!(sqe = sqe_for(u, s, OP_CONNECT)))
			return false;
		io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&s->addr, s->addrlen);
		sqe_done(sqe, s, OP_CONNECT);
		return true;
	case P_CONNECT_POLL:
		if (!(sqe = sqe_for(u, s, OP_CONNECT_POLL)))
			return false;
		io_uring_prep_poll_add(sqe, s->fd, POLLOUT | POLLERR | POLLHUP);
		sqe_done(sqe, s, OP_CONNECT_POLL);
		return true;
	case P_SEND:
		if (!(f & S_SENDING))
			return true;
		if (!(sqe = sqe_for(u, s, OP_SEND)))
			return false;
		io_uring_prep_sendmsg(sqe, s->fd, &s->msg, MSG_WAITALL | MSG_NOSIGNAL);
		sqe_done(sqe, s, OP_SEND);
		return true;
	case P_RECV:
		if (!(f & S_RECV_ON) || (f & (S_RECV_END | S_RECV_ARMED)) ||
		    s->rq_len >= URING_RQ_LOW)
			return true;
		if (u->br_count == 0) {
			/* Never armed on an empty ring: wait for owners to
			 * give buffers back (refilled at every flush). */
			u->starved++;
			return false;
		}
		if (!(sqe = sqe_for(u, s, OP_RECV)))
			return false;
		io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = URING_BGID;
		sqe_done(sqe, s, OP_RECV);
		s->flags |= S_RECV_ARMED;
		return true;
	case P_SPIN_POLL:
		if ((f & (S_SPIN_WANT | S_SPIN_POLL | S_SPIN_OP | S_SPIN_FULL | S_SPIN_EOF)) !=
		        S_SPIN_WANT ||
		    s->in_pipe)
			return true;
		if (!(sqe = sqe_for(u, s, OP_SPIN_POLL)))
			return false;
		io_uring_prep_poll_add(sqe, s->fd, POLLIN | POLLRDHUP);
		sqe_done(sqe, s, OP_SPIN_POLL);
		s->flags |= S_SPIN_POLL;
		return true;
	case P_SPIN: {
		struct pipe_buf *p = s->in_pipe;
		if (!p || (f & S_SPIN_OP))
			return true;
		if (!(sqe = sqe_for(u, s, OP_SPIN)))
			return false;
		/* Nonblocking: the data is there (POLLIN), and a full pipe
		 * must come back as EAGAIN rather than park an io-wq worker. */
		io_uring_prep_splice(sqe, s->fd, -1, p->wfd, -1, p->cap - p->bytes,
		                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		sqe_done(sqe, s, OP_SPIN);
		s->flags |= S_SPIN_OP;
		return true;
	}
	case P_SPOUT_POLL:
		if ((f & (S_SENDING | S_SPOUT | S_SPOUT_POLL)) != (S_SENDING | S_SPOUT))
			return true;
		if (!(sqe = sqe_for(u, s, OP_SPOUT_POLL)))
			return false;
		io_uring_prep_poll_add(sqe, s->fd, POLLOUT);
		sqe_done(sqe, s, OP_SPOUT_POLL);
		s->flags |= S_SPOUT_POLL;
		return true;
	case P_SPOUT:
		if ((f & (S_SENDING | S_SPOUT | S_SPOUT_POLL)) != (S_SENDING | S_SPOUT))
			return true;
		if (!(sqe = sqe_for(u, s, OP_SPOUT)))
			return false;
		io_uring_prep_splice(sqe, s->out_pipe->rfd, -1, s->fd, -1,
		                     (unsigned)(s->total - s->sent),
		                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		sqe_done(sqe, s, OP_SPOUT);
		s->flags |= S_SPOUT_OP;
		return true;
	}
	return true;
}

static void issue(struct uring *u, struct esock *s)
{
	uint16_t pend = s->pend;
	s->pend = 0;
	if (!(s->flags & S_USED))
		return;
	if (s->flags & S_CLOSED) {
		if (!(pend & P_CANCEL_ALL) || s->fd < 0 || s->inflight <= s->ncancel)
			return;
		struct io_uring_sqe *sqe = sqe_for(u, s, OP_CANCEL);
		if (!sqe) {
			push_pending(u, s, P_CANCEL_ALL);
			return;
		}
		io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
		sqe_done(sqe, s, OP_CANCEL);
		return;
	}
	uint16_t keep = 0;
	for (uint16_t bit = P_CANCEL_ACCEPT; bit <= P_LAST; bit = (uint16_t)(bit << 1))
		if ((pend & bit) && !issue_one(u, s, bit))
			keep |= bit;
	if (keep)
		push_pending(u, s, keep);
}

/* Refills the buffer ring, then turns the pending list into SQEs.  Sockets
 * that must wait (no buffer yet) go back on the list for the next turn. */
static void flush(struct engine *e, struct uring *u)
{
	ring_refill(e, u);
	struct esock *s = u->pending.head;
	u->pending.head = u->pending.tail = NULL;
	while (s) {
		struct esock *next = s->pending_next;
		s->on_pending = false;
		issue(u, s);
		s = next;
	}
}

/* --- completions --------------------------------------------------------- */

static void on_accept(struct uring *u, struct esock *s, int res, bool more)
{
	uint32_t gen = s->gen;
	if (!more)
		s->flags &= ~(uint32_t)(S_ACCEPT_ARMED | S_ACCEPT_CANCEL);
	if (res >= 0) {
		/* The multishot accept has one address buffer for many
		 * completions, so ask each socket for its peer instead. */
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getpeername(res, (struct sockaddr *)&ss, &len) == -1)
			close(res); /* reset before we got to it */
		else
			s->cbs->accepted(s->owner, res, (struct sockaddr *)&ss, len);
	} else if (res != -ECANCELED && res != -EINTR && res != -ECONNABORTED && res != -EPROTO &&
	           res != -EAGAIN) {
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: the owner decides (it
		 * pauses accepting for a while). */
		s->cbs->accepted(s->owner, res, NULL, 0);
	}
	if (!more && alive(s, gen))
		accept_maybe_arm(u, s);
}

static void on_recv(struct engine *e, struct uring *u, struct esock *s, int res, bool more,
                    struct buf *b)
{
	uint32_t gen = s->gen;
	if (!more)
		s->flags &= ~(uint32_t)(S_RECV_ARMED | S_RECV_CANCEL);
	if (res > 0 && b) {
		b->len = (uint32_t)res;
		rq_push(u, s, b);
		b = NULL;
	} else if (res >= 0) {
		/* Data without a buffer cannot happen; treat it as an error
		 * rather than lose bytes silently. */
		s->flags |= S_RECV_END;
		s->rq_end = res == 0 ? 0 : -EIO;
	} else if (res == -ENOBUFS) {
		u->nobufs++;
		if (u->br_target < u->br_entries)
			u->br_target *= 2;
	} else if (res != -ECANCELED && res != -EINTR && res != -EAGAIN) {
		s->flags |= S_RECV_END;
		s->rq_end = res;
	}
	if (b)
		buf_unref(b);
	recv_deliver(e, u, s);
	if (!alive(s, gen))
		return;
	if (more)
		recv_check_cap(u, s);
	else
		recv_maybe_arm(u, s);
	spin_kick(u, s);
}

/* A connect came back unfinished (see the head comment): decide it from the
 * socket's state as epoll.c does, or wait for POLLOUT and look again. */
static void on_connect(struct uring *u, struct esock *s, enum uop op, int res)
{
	if (op == OP_CONNECT && res != -EAGAIN && res != -EINPROGRESS && res != -EALREADY &&
	    res != -EINTR)
		goto done;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err == 0) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) == -1) {
			if (errno == ENOTCONN) {
				push_pending(u, s, P_CONNECT_POLL);
				return;
			}
			err = errno;
		}
	}
	res = -err;
done:
	s->flags &= ~(uint32_t)S_CONNECTING;
	s->cbs->connected(s->owner, s->tag, res > 0 ? 0 : res);
}

static void on_send(struct uring *u, struct esock *s, int res)
{
	if (res == -EAGAIN || res == -EINTR) {
		/* Punted and given up (head comment): a fresh request
		 * polls again; nothing was sent by this one. */
		u->eagain++;
		push_pending(u, s, P_SEND);
		return;
	}
	if (res > 0)
		s->sent += (size_t)res;
	if (res >= 0 && s->sent < s->total) {
		if (res > 0) {
			u->short_sends++;
			send_build(s);
			push_pending(u, s, P_SEND);
			return;
		}
		res = -EPIPE; /* no progress: do not spin */
	}
	s->flags &= ~(uint32_t)S_SENDING;
	s->iov = NULL;
	s->cbs->sent(s->owner, s->tag, res < 0 ? res : (int)s->total);
}

/* POLLIN for a splice_in: take the pipe now (*slot is read when the bytes
 * move) and issue the splice; with no pipe to be had, receive into buffers
 * instead, as epoll.c does. */
static void on_spin_poll(struct engine *e, struct uring *u, struct esock *s, int res)
{
	s->flags &= ~(uint32_t)S_SPIN_POLL;
	if (!(s->flags & S_SPIN_WANT))
		return;
	if (res < 0 && res != -ECANCELED && res != -EINTR && res != -EAGAIN) {
		s->flags &= ~(uint32_t)S_SPIN_WANT;
		s->cbs->spliced(s->owner, s->tag, res);
		return;
	}
	if (res < 0) {
		spin_kick(u, s);
		return;
	}
	struct pipe_buf *p = *s->slot;
	bool took = false;
	if (!p) {
		p = pipes_get(e->pipes);
		if (!p) {
			u->splice_fallbacks++;
			s->flags = (s->flags & ~(uint32_t)S_SPIN_WANT) | S_RECV_ON | S_RECV_WANT;
			recv_maybe_arm(u, s);
			return;
		}
		took = true;
	}
	if (p->bytes >= p->cap) {
		s->flags |= S_SPIN_FULL;
		u->spin_full++;
		return;
	}
	pipes_hold(p);
	s->in_pipe = p;
	s->in_took = took;
	push_pending(u, s, P_SPIN);
}

/* Socket -> pipe done.  EAGAIN with bytes in the pipe means "out of room"
 * (capacity is in pages, not bytes; see epoll.c): wait for the owner to arm
 * again after draining it.  EAGAIN on an empty pipe: wait for POLLIN again. */
static void on_spin(struct engine *e, struct uring *u, struct esock *s, int res)
{
	struct pipe_buf *p = s->in_pipe;
	s->flags &= ~(uint32_t)S_SPIN_OP;
	if (!p)
		return;
	if (res > 0) {
		p->bytes += (uint32_t)res;
		u->spliced_in += (uint64_t)res;
		/* The owner may have given it back meanwhile: it gets it again. */
		pipes_release(e->pipes, p, true);
		s->in_pipe = NULL;
		s->in_took = false;
		*s->slot = p;
		s->flags &= ~(uint32_t)S_SPIN_WANT;
		s->cbs->spliced(s->owner, s->tag, res);
		return;
	}
	bool full = !s->in_took && !p->returned && p->bytes > 0;
	spin_drop_pipe(e, s);
	if (res == -EAGAIN || res == -EINTR) {
		if (full) {
			s->flags |= S_SPIN_FULL;
			u->spin_full++;
		} else {
			u->spin_eagain++;
			spin_kick(u, s);
		}
		return;
	}
	if (res == 0 && (s->flags & S_SPOUT_OP)) {
		/* A reset socket reads as the end once its error was taken,
		 * and the splice_out running now in io-wq may be taking it:
		 * hold the end until that splice reports (see on_spout). */
		s->flags |= S_SPIN_EOF;
		return;
	}
	s->flags &= ~(uint32_t)S_SPIN_WANT;
	s->cbs->spliced(s->owner, s->tag, res);
}

/* Delivers an end that on_spin held while a splice_out was running. */
static void spin_eof_flush(struct esock *s, uint32_t gen)
{
	if (!alive(s, gen) || !(s->flags & S_SPIN_EOF))
		return;
	s->flags &= ~(uint32_t)(S_SPIN_EOF | S_SPIN_WANT);
	s->cbs->spliced(s->owner, s->tag, 0);
}

/* Pipe -> socket.  The pipe holds the bytes (counted), so EAGAIN or a short
 * count is the socket's send buffer: wait for POLLOUT, then go on. */
static void on_spout(struct uring *u, struct esock *s, int res)
{
	struct pipe_buf *p = s->out_pipe;
	uint32_t gen = s->gen;
	s->flags &= ~(uint32_t)S_SPOUT_OP;
	if (res > 0) {
		p->bytes -= (uint32_t)res;
		s->sent += (size_t)res;
		u->spliced_out += (uint64_t)res;
		if (s->sent < s->total) {
			u->spout_waits++;
			push_pending(u, s, P_SPOUT_POLL);
			spin_eof_flush(s, gen);
			return;
		}
		res = (int)s->total;
	} else if (res == -EAGAIN || res == -EINTR) {
		u->spout_waits++;
		push_pending(u, s, res == -EAGAIN ? P_SPOUT_POLL : P_SPOUT);
		spin_eof_flush(s, gen);
		return;
	} else if (res == 0) {
		res = -EPIPE; /* the pipe holds bytes: no progress, do not spin */
	}
	s->flags &= ~(uint32_t)(S_SENDING | S_SPOUT);
	s->out_pipe = NULL;
	s->cbs->sent(s->owner, s->tag, res);
	/* After an error the owner has closed s (a reset): the end is moot. */
	spin_eof_flush(s, gen);
}

static void on_spout_poll(struct uring *u, struct esock *s, int res)
{
	s->flags &= ~(uint32_t)S_SPOUT_POLL;
	if (res >= 0 || res == -ECANCELED || res == -EINTR || res == -EAGAIN) {
		/* POLLERR or POLLHUP too: the splice reports the error. */
		push_pending(u, s, P_SPOUT);
		return;
	}
	s->flags &= ~(uint32_t)(S_SENDING | S_SPOUT);
	s->out_pipe = NULL;
	s->cbs->sent(s->owner, s->tag, res);
}

/* A splice CQE for a closed socket: keep the pipe's count right (its owner
 * closes a pipe that holds bytes) and end the hold. */
static void splice_closed_cqe(struct engine *e, struct esock *s, enum uop op, int res)
{
	if (op == OP_SPIN && s->in_pipe) {
		if (res > 0)
			s->in_pipe->bytes += (uint32_t)res;
		spin_drop_pipe(e, s);
	} else if (op == OP_SPOUT && s->out_pipe) {
		if (res > 0)
			s->out_pipe->bytes -= (uint32_t)res;
		s->out_pipe = NULL;
	}
}

/* A completion for a socket the owner closed: give back what it carries,
 * close the descriptor once the last one is in, and cancel again when
 * something survived the first cancel. */
static void on_closed_cqe(struct uring *u, struct esock *s, enum uop op, int res, bool more)
{
	if (op == OP_ACCEPT && res >= 0)
		close(res);
	if (s->inflight == 0) {
		if (s->fd >= 0)
			finish_close(u, s);
		return;
	}
	if (s->ncancel == 0 && (more || (op == OP_CANCEL && res == -EALREADY)))
		push_pending(u, s, P_CANCEL_ALL);
}

static void handle_cqe(struct engine *e, struct uring *u, uint64_t ud, int res, uint32_t cflags)
{
	if (ud == LIBURING_UDATA_TIMEOUT)
		return;
	struct buf *b = NULL;
	if (cflags & IORING_CQE_F_BUFFER)
		b = ring_take(u, cflags >> IORING_CQE_BUFFER_SHIFT);
	struct ud d = ud_decode(ud);
	struct esock *s = ud_sock(u, d);
	bool more = (cflags & IORING_CQE_F_MORE) != 0;
	if (!s || (!more && s->inflight == 0)) {
		u->stale++;
		if (b)
			buf_unref(b);
		if (d.op == OP_ACCEPT && res >= 0)
			close(res);
		return;
	}
	if (!more)
		s->inflight--;
	if (d.op == OP_CANCEL && s->ncancel)
		s->ncancel--;
	if (s->flags & S_CLOSED) {
		if (b)
			buf_unref(b);
		splice_closed_cqe(e, s, d.op, res);
		on_closed_cqe(u, s, d.op, res, more);
		return;
	}
	switch (d.op) {
	case OP_ACCEPT:
		on_accept(u, s, res, more);
		break;
	case OP_RECV:
		on_recv(e, u, s, res, more, b);
		b = NULL;
		break;
	case OP_SEND:
		on_send(u, s, res);
		break;
	case OP_CONNECT:
	case OP_CONNECT_POLL:
		on_connect(u, s, d.op, res);
		break;
	case OP_SPIN_POLL:
		on_spin_poll(e, u, s, res);
		break;
	case OP_SPIN:
		on_spin(e, u, s, res);
		break;
	case OP_SPOUT_POLL:
		on_spout_poll(u, s, res);
		break;
	case OP_SPOUT:
		on_spout(u, s, res);
		break;
	case OP_CANCEL:
	default:
		break;
	}
	if (b)
		buf_unref(b);
}

/* Handles up to URING_CQES_PER_TURN completions.  Handlers never touch the
 * ring (requests only set pending bits), so the CQEs can be read in place
 * and released together. */
static unsigned reap(struct engine *e, struct uring *u)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		handle_cqe(e, u, cqe->user_data, cqe->res, cqe->flags);
		if (++n == URING_CQES_PER_TURN)
			break;
	}
	io_uring_cq_advance(&u->ring, n);
	return n;
}

/* One step for a socket on the ready list; callbacks may close or re-arm s. */
static void ready_step(struct engine *e, struct uring *u, struct esock *s)
{
	if (!(s->flags & S_USED))
		return;
	if (s->flags & S_CLOSED) {
		if (s->inflight > 0 || s->fd >= 0)
			return;
		const struct esock_cbs *cbs = s->cbs;
		void *owner = s->owner;
		int tag = s->tag;
		s->gen++;
		s->flags = 0;
		s->pend = 0;
		s->cbs = NULL;
		s->owner = NULL;
		u->free[u->nfree++] = s->idx;
		if (cbs && cbs->closed)
			cbs->closed(owner, tag);
		return;
	}
	uint32_t gen = s->gen;
	if (s->flags & S_SEND_NOW) {
		s->flags &= ~(uint32_t)(S_SEND_NOW | S_SENDING);
		s->iov = NULL;
		s->cbs->sent(s->owner, s->tag, 0);
		if (!alive(s, gen))
			return;
	}
	recv_deliver(e, u, s);
}

/* Makes the calling thread the ring's issuer: see the head comment. */
static int ring_enable(struct uring *u)
{
	/* io_uring_enable_rings() is declared but not exported by 2.3. */
	int r = io_uring_register(u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (r < 0) {
		log_msg(LOG_ERROR, "engine", "io_uring: cannot enable the ring: %s", strerror(-r));
		return r;
	}
	/* Saves a descriptor lookup per enter; optional, and per thread. */
	(void)io_uring_register_ring_fd(&u->ring);
	u->owner = pthread_self();
	u->enabled = true;
	return 0;
}

static int uring_poll(struct engine *e, int timeout_ms)
{
	struct uring *u = u_of(e);
	if (!u->enabled && !u->enable_err)
		u->enable_err = ring_enable(u);
	if (u->enable_err) {
		/* Cannot happen on a ring created R_DISABLED; do not spin. */
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
		return u->enable_err;
	}
	flush(e, u);
	int r;
	if (u->ready.head || io_uring_cq_ready(&u->ring) > 0 || timeout_ms == 0) {
		/* Work is waiting: submit and collect without sleeping. */
		r = io_uring_submit_and_get_events(&u->ring);
	} else {
		/* Always with a timeout: liburing 2.3 then enters exactly once.
		 * Without one it loops when the kernel answers a signal with the
		 * count of SQEs submitted rather than -EINTR, and the wait would
		 * go on after the handler ran. */
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = URING_WAIT_MAX_S, .tv_nsec = 0};
		if (timeout_ms >= 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		}
		if (!u->valgrind) {
			r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, &e->wait_mask);
		} else {
			/* valgrind resumes the wait after running a handler,
			 * so bound it: a stop request is seen in time. */
			if (timeout_ms < 0 || timeout_ms > URING_VG_WAIT_MS) {
				ts.tv_sec = 0;
				ts.tv_nsec = URING_VG_WAIT_MS * 1000000LL;
			}
			sigset_t old;
			pthread_sigmask(SIG_SETMASK, &e->wait_mask, &old);
			r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
			pthread_sigmask(SIG_SETMASK, &old, NULL);
		}
	}
	int ret = 0;
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
		ret = r;
	e->now = clock_now_ms();
	reap(e, u);
	/* With NODROP an overflowed CQ keeps its completions in the kernel;
	 * the next GETEVENTS moves them in as room frees.  Count episodes. */
	if (io_uring_cq_has_overflow(&u->ring)) {
		if (!u->in_overflow)
			u->overflows++;
		u->in_overflow = true;
		if (io_uring_cq_ready(&u->ring) == 0)
			io_uring_get_events(&u->ring);
	} else {
		u->in_overflow = false;
	}
	/* This turn's ready list; what handlers make ready waits for the next. */
	struct esock *s = u->ready.head;
	u->ready.head = u->ready.tail = NULL;
	while (s) {
		struct esock *next = s->ready_next;
		s->on_ready = false;
		ready_step(e, u, s);
		s = next;
	}
	return ret;
}

const struct engine_vt engine_uring = {
    .name = "io_uring",
    .probe = uring_probe,
    .init = uring_init,
    .fini = uring_fini,
    .poll = uring_poll,
    .open = uring_open,
    .listen = uring_listen,
    .accept_pause = uring_accept_pause,
    .connect = uring_connect,
    .recv = uring_recv,
    .send = uring_send,
    .splice_in = uring_splice_in,
    .splice_out = uring_splice_out,
    .shutdown_wr = uring_shutdown_wr,
    .close = uring_close,
    .fd = uring_fd,
};
