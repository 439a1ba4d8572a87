/* engine.h - the I/O engine interface, in completion style.
 *
 * The relay core asks for operations on sockets and is told, through a
 * callback table, when each one completed.  It never learns whether epoll
 * readiness or io_uring completions did the work:
 *
 *   accept   engine_listen() keeps accepting until paused; each new client or
 *            accept error is one `accepted` completion.
 *   connect  engine_connect(): one `connected` completion, 0 or -errno.
 *   receive  engine_recv(): one `received` completion carrying a pooled buffer
 *            (the reference passes to the owner), 0 at end of stream, or
 *            -errno.  At most one receive in flight per socket.
 *   send     engine_send(): a list of slices, sent whole (like MSG_WAITALL);
 *            one `sent` completion with the byte count or -errno.  At most
 *            one send in flight per socket.  The engine borrows the iovec
 *            array and the memory it points to until the completion (or the
 *            `closed` callback): the caller keeps both alive and unchanged.
 *   splice   engine_splice_in(): like a receive, but the bytes go from the
 *            socket into a pipe (zero-copy), taken from the engine's pipe
 *            pool when the caller's slot holds none; one `spliced`
 *            completion with the bytes moved, 0 at end of stream, or -errno.
 *            When no pipe can be had it receives into a buffer instead and
 *            completes with `received`.  engine_splice_out(): like a send,
 *            from a pipe to the socket; completes with `sent`.  The engine
 *            keeps pipe->bytes up to date.  *slot is read when the bytes
 *            move, so while a splice_in is armed the caller may give an
 *            empty pipe back (set *slot to NULL first); an engine that
 *            moves bytes asynchronously keeps such a pipe until its
 *            operation ends and then stores it back in *slot.  Engines
 *            without splice leave these NULL; the caller then uses buffers.
 *   shutdown engine_shutdown_wr(): FIN after what was sent; immediate.
 *   close    engine_close(): no completion fires for the socket after it
 *            but one `closed` callback, from the loop, once nothing is in
 *            flight and the descriptor is closed: only then may the owner
 *            release memory it lent to the engine.  With `reset` the peer
 *            gets a RST instead of a FIN.
 *   timers   engine_timer_set()/engine_timer_cancel() on timers embedded in
 *            the caller's objects.
 *
 * Completions are always delivered from the loop, never from inside the call
 * that requested them, so a handler may request, close and free freely.
 * If a request returns an error, its completion never fires.
 *
 * Sockets are engine-owned slots (struct esock) addressed in the kernel by
 * slot index and generation, never by pointer; a stale event is dropped.
 */
#ifndef FERRY_ENGINE_ENGINE_H
#define FERRY_ENGINE_ENGINE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "buf/pipes.h"
#include "buf/pool.h"
#include "core/timer.h"

#define ENGINE_MAX_IOV 16

struct engine;
struct esock;

/* One table per kind of owner (listener, session side, ...). */
struct esock_cbs {
	void (*accepted)(void *owner, int fd, const struct sockaddr *peer, socklen_t len);
	void (*connected)(void *owner, int tag, int err);
	void (*received)(void *owner, int tag, struct buf *b, int res);
	void (*sent)(void *owner, int tag, int res);
	void (*spliced)(void *owner, int tag, int res);
	void (*closed)(void *owner, int tag);
};

struct engine_vt {
	const char *name;
	/* 0 when usable here; otherwise -errno and a reason in why. */
	int (*probe)(char *why, size_t len);
	int (*init)(struct engine *e, uint32_t max_socks);
	void (*fini)(struct engine *e);
	/* Waits for events (at most timeout_ms, -1: no limit) and delivers
	 * completions; returns when something happened, or the wait was
	 * interrupted by a signal. */
	int (*poll)(struct engine *e, int timeout_ms);

	struct esock *(*open)(struct engine *e, int fd, const struct esock_cbs *cbs, void *owner,
	                      int tag);
	int (*listen)(struct engine *e, struct esock *s);
	void (*accept_pause)(struct engine *e, struct esock *s, bool pause);
	int (*connect)(struct engine *e, struct esock *s, const struct sockaddr *sa, socklen_t len);
	int (*recv)(struct engine *e, struct esock *s);
	int (*send)(struct engine *e, struct esock *s, const struct iovec *iov, int n);
	/* optional (NULL: no zero-copy path) */
	int (*splice_in)(struct engine *e, struct esock *s, struct pipe_buf **slot);
	int (*splice_out)(struct engine *e, struct esock *s, struct pipe_buf *p, uint32_t n);
	int (*shutdown_wr)(struct engine *e, struct esock *s);
	void (*close)(struct engine *e, struct esock *s, bool reset);
	int (*fd)(const struct esock *s);
};

struct engine {
	const struct engine_vt *vt;
	void *impl;
	struct pool *pool;
	struct pipe_pool *pipes; /* NULL or cap 0: no splicing */
	struct timer_heap timers;
	uint64_t now; /* ms, refreshed each loop turn */
	bool stop;
	sigset_t wait_mask; /* signal mask during the wait (signals arrive there) */
	/* called once per loop turn after completions and timers */
	void (*tick)(struct engine *e, void *arg);
	void *tick_arg;
};

extern const struct engine_vt engine_epoll;
extern const struct engine_vt engine_uring;

/* Engines compiled in, in order of preference for `auto`. */
const struct engine_vt *const *engine_list(void);
const struct engine_vt *engine_find(const char *name);

/* Creates the engine: its pool is `pool` (borrowed), its socket table holds
 * max_socks sockets and its timer heap max_timers timers.  0 or -errno. */
int engine_init(struct engine *e, const struct engine_vt *vt, struct pool *pool, uint32_t max_socks,
                uint32_t max_timers);
void engine_fini(struct engine *e);

/* Runs until engine_stop().  Returns 0. */
int engine_run(struct engine *e);
static inline void engine_stop(struct engine *e)
{
	e->stop = true;
}

static inline struct esock *engine_open(struct engine *e, int fd, const struct esock_cbs *cbs,
                                        void *owner, int tag)
{
	return e->vt->open(e, fd, cbs, owner, tag);
}
static inline int engine_listen(struct engine *e, struct esock *s)
{
	return e->vt->listen(e, s);
}
static inline void engine_accept_pause(struct engine *e, struct esock *s, bool pause)
{
	e->vt->accept_pause(e, s, pause);
}
static inline int engine_connect(struct engine *e, struct esock *s, const struct sockaddr *sa,
                                 socklen_t len)
{
	return e->vt->connect(e, s, sa, len);
}
static inline int engine_recv(struct engine *e, struct esock *s)
{
	return e->vt->recv(e, s);
}
static inline int engine_send(struct engine *e, struct esock *s, const struct iovec *iov, int n)
{
	return e->vt->send(e, s, iov, n);
}
static inline bool engine_can_splice(const struct engine *e)
{
	return e->vt->splice_in && e->pipes && e->pipes->cap > 0;
}
static inline int engine_splice_in(struct engine *e, struct esock *s, struct pipe_buf **slot)
{
	return e->vt->splice_in(e, s, slot);
}
static inline int engine_splice_out(struct engine *e, struct esock *s, struct pipe_buf *p,
                                    uint32_t n)
{
	return e->vt->splice_out(e, s, p, n);
}
static inline int engine_shutdown_wr(struct engine *e, struct esock *s)
{
	return e->vt->shutdown_wr(e, s);
}
static inline void engine_close(struct engine *e, struct esock *s, bool reset)
{
	e->vt->close(e, s, reset);
}
static inline int engine_fd(struct engine *e, const struct esock *s)
{
	return e->vt->fd(s);
}
static inline int engine_timer_set(struct engine *e, struct timer *t, uint64_t delay_ms,
                                   timer_fn fn)
{
	return timer_set(&e->timers, t, e->now + delay_ms, fn);
}
static inline void engine_timer_cancel(struct engine *e, struct timer *t)
{
	timer_cancel(&e->timers, t);
}

#endif
