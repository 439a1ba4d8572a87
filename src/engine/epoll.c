/* epoll.c - the epoll engine: completion-style operations built on
 * edge-triggered readiness.
 *
 * Every socket is registered once with IN|OUT|RDHUP|ET; its data word holds
 * the slot index and generation, so an event for a slot that was closed and
 * reused is recognised and dropped.  Readiness is cached in flags.  A socket
 * that has a wanted operation and the readiness for it sits on the ready list;
 * each loop turn moves the ready list to a work list and performs one step per
 * socket (one recv, one send until EAGAIN, up to 64 accepts), so work per turn
 * is bounded and no connection starves the others.  Completions are delivered
 * from the work list only, never from inside the call that asked.
 */
#include "engine/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EP_EVENTS          256
#define EP_ACCEPTS_PER_RUN 64

enum {
	F_USED = 1 << 0,
	F_READABLE = 1 << 1,
	F_WRITABLE = 1 << 2,
	F_LISTEN = 1 << 3,
	F_PAUSED = 1 << 4,
	F_WANT_RECV = 1 << 5,
	F_WANT_SEND = 1 << 6,
	F_CONNECTING = 1 << 7,
	F_CONN_DONE = 1 << 8,  /* connect() finished at once; result in conn_res */
	F_CLOSED = 1 << 9,     /* closed: `closed` callback pending */
	F_RDHUP = 1 << 10,     /* the peer's FIN or an error was seen */
	F_PIPE_FULL = 1 << 11, /* splice_in hit EAGAIN with bytes in the pipe */
};

enum { L_NONE = 0, L_READY, L_WORK, L_NOBUF };

struct esock {
	int fd;
	uint32_t gen;
	uint32_t idx;
	uint16_t flags;
	uint8_t list;
	int tag;
	int conn_res;
	const struct esock_cbs *cbs;
	void *owner;
	struct esock *prev, *next; /* ready or work list */
	const struct iovec *iov;   /* borrowed until the send completes */
	int niov;
	size_t sent, total;
	struct pipe_buf **slot;    /* receive in splice mode: the caller's pipe slot */
	struct pipe_buf *out_pipe; /* send in splice mode: the pipe to drain */
};

struct sock_list {
	struct esock *head, *tail;
};

struct ep {
	int epfd;
	uint32_t nsocks;
	struct esock *socks;
	uint32_t *free; /* stack of free slot indices */
	uint32_t nfree;
	struct sock_list ready, work;
	struct sock_list nobuf; /* receives waiting for a free pool buffer */
	struct epoll_event events[EP_EVENTS];
};

static struct ep *ep_of(struct engine *e)
{
	return e->impl;
}

static struct sock_list *list_of(struct ep *ep, uint8_t which)
{
	return which == L_READY ? &ep->ready : which == L_WORK ? &ep->work : &ep->nobuf;
}

static void list_remove(struct ep *ep, struct esock *s)
{
	if (s->list == L_NONE)
		return;
	struct sock_list *l = list_of(ep, s->list);
	if (s->prev)
		s->prev->next = s->next;
	else
		l->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		l->tail = s->prev;
	s->prev = s->next = NULL;
	s->list = L_NONE;
}

static void list_push(struct ep *ep, struct esock *s, uint8_t which)
{
	struct sock_list *l = list_of(ep, which);
	s->prev = l->tail;
	s->next = NULL;
	if (l->tail)
		l->tail->next = s;
	else
		l->head = s;
	l->tail = s;
	s->list = which;
}

static bool actionable(const struct esock *s)
{
	uint16_t f = s->flags;
	if (f & F_CLOSED)
		return true;
	if ((f & F_LISTEN) && (f & F_READABLE) && !(f & F_PAUSED))
		return true;
	if (f & F_CONNECTING)
		return (f & (F_WRITABLE | F_CONN_DONE)) != 0;
	if ((f & F_WANT_RECV) && (f & F_READABLE) && !(f & F_PIPE_FULL))
		return true;
	if ((f & F_WANT_SEND) && (f & F_WRITABLE))
		return true;
	return false;
}

/* Puts s on the ready list when it has something to do and is on no list. */
static void maybe_ready(struct ep *ep, struct esock *s)
{
	if (s->list == L_NONE && actionable(s))
		list_push(ep, s, L_READY);
}

static int ep_probe(char *why, size_t len)
{
	int fd = epoll_create1(EPOLL_CLOEXEC);
	if (fd == -1) {
		snprintf(why, len, "epoll_create1: %s", strerror(errno));
		return -errno;
	}
	close(fd);
	snprintf(why, len, "usable");
	return 0;
}

static int ep_init(struct engine *e, uint32_t max_socks)
{
	struct ep *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ep->epfd == -1) {
		int err = errno;
		free(ep);
		return -err;
	}
	ep->nsocks = max_socks;
	ep->socks = calloc(max_socks, sizeof(*ep->socks));
	ep->free = calloc(max_socks, sizeof(*ep->free));
	if (!ep->socks || !ep->free) {
		close(ep->epfd);
		free(ep->socks);
		free(ep->free);
		free(ep);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < max_socks; i++) {
		ep->socks[i].idx = i;
		ep->socks[i].fd = -1;
		ep->free[i] = max_socks - 1 - i;
	}
	ep->nfree = max_socks;
	e->impl = ep;
	return 0;
}

static void ep_fini(struct engine *e)
{
	struct ep *ep = ep_of(e);
	if (!ep)
		return;
	for (uint32_t i = 0; i < ep->nsocks; i++)
		if ((ep->socks[i].flags & F_USED) && !(ep->socks[i].flags & F_CLOSED))
			close(ep->socks[i].fd);
	close(ep->epfd);
	free(ep->socks);
	free(ep->free);
	free(ep);
	e->impl = NULL;
}

static struct esock *ep_open(struct engine *e, int fd, const struct esock_cbs *cbs, void *owner,
                             int tag)
{
	struct ep *ep = ep_of(e);
	if (ep->nfree == 0)
		return NULL;
	struct esock *s = &ep->socks[ep->free[ep->nfree - 1]];
	struct epoll_event ev = {
	    .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
	    .data.u64 = (uint64_t)s->idx | ((uint64_t)s->gen << 32),
	};
	if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return NULL;
	ep->nfree--;
	s->fd = fd;
	/* Assume ready: the first attempt finds out, EAGAIN clears the flag. */
	s->flags = F_USED | F_READABLE | F_WRITABLE;
	s->list = L_NONE;
	s->tag = tag;
	s->cbs = cbs;
	s->owner = owner;
	s->iov = NULL;
	s->niov = 0;
	s->slot = NULL;
	s->out_pipe = NULL;
	return s;
}

static int ep_listen(struct engine *e, struct esock *s)
{
	s->flags |= F_LISTEN;
	maybe_ready(ep_of(e), s);
	return 0;
}

static void ep_accept_pause(struct engine *e, struct esock *s, bool pause)
{
	if (pause) {
		s->flags |= F_PAUSED;
		return;
	}
	/* Resuming: connections may be waiting without a new edge. */
	s->flags = (uint16_t)((s->flags & ~F_PAUSED) | F_READABLE);
	maybe_ready(ep_of(e), s);
}

static int ep_connect(struct engine *e, struct esock *s, const struct sockaddr *sa, socklen_t len)
{
	s->flags |= F_CONNECTING;
	if (connect(s->fd, sa, len) == 0) {
		s->conn_res = 0;
		s->flags |= F_CONN_DONE;
	} else if (errno == EINPROGRESS) {
		s->flags &= (uint16_t)~F_WRITABLE;
	} else {
		s->conn_res = -errno;
		s->flags |= F_CONN_DONE;
	}
	maybe_ready(ep_of(e), s);
	return 0;
}

static int ep_recv(struct engine *e, struct esock *s)
{
	s->slot = NULL;
	s->flags |= F_WANT_RECV;
	maybe_ready(ep_of(e), s);
	return 0;
}

static int ep_splice_in(struct engine *e, struct esock *s, struct pipe_buf **slot)
{
	s->slot = slot;
	/* Called again after the pipe drained: worth another try. */
	s->flags = (uint16_t)((s->flags & ~F_PIPE_FULL) | F_WANT_RECV);
	maybe_ready(ep_of(e), s);
	return 0;
}

static int ep_splice_out(struct engine *e, struct esock *s, struct pipe_buf *p, uint32_t n)
{
	if (n == 0 || n > p->bytes)
		return -EINVAL;
	s->out_pipe = p;
	s->iov = NULL;
	s->niov = 0;
	s->sent = 0;
	s->total = n;
	s->flags |= F_WANT_SEND;
	maybe_ready(ep_of(e), s);
	return 0;
}

static int ep_send(struct engine *e, struct esock *s, const struct iovec *iov, int n)
{
	if (n <= 0 || n > ENGINE_MAX_IOV)
		return -EINVAL;
	s->out_pipe = NULL;
	s->iov = iov;
	s->niov = n;
	s->sent = 0;
	s->total = 0;
	for (int i = 0; i < n; i++)
		s->total += iov[i].iov_len;
	s->flags |= F_WANT_SEND;
	maybe_ready(ep_of(e), s);
	return 0;
}

static int ep_shutdown_wr(struct engine *e, struct esock *s)
{
	(void)e;
	if (shutdown(s->fd, SHUT_WR) == -1)
		return -errno;
	return 0;
}

static void ep_close(struct engine *e, struct esock *s, bool reset)
{
	struct ep *ep = ep_of(e);
	if (s->flags & F_CLOSED)
		return;
	if (reset) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (s->list == L_NOBUF)
		list_remove(ep, s);
	/* Closing the only descriptor also removes it from the epoll set. */
	close(s->fd);
	s->fd = -1;
	s->flags = F_USED | F_CLOSED;
	s->iov = NULL;
	s->slot = NULL;
	s->out_pipe = NULL;
	maybe_ready(ep, s);
}

static int ep_fd(const struct esock *s)
{
	return s->fd;
}

static void slot_free(struct ep *ep, struct esock *s)
{
	s->gen++;
	s->flags = 0;
	s->cbs = NULL;
	s->owner = NULL;
	ep->free[ep->nfree++] = s->idx;
}

/* True while s is the same open socket as when `gen` was read. */
static bool alive(const struct esock *s, uint32_t gen)
{
	return s->gen == gen && (s->flags & F_USED) && !(s->flags & F_CLOSED);
}

static void do_accept(struct esock *s)
{
	uint32_t gen = s->gen;
	for (int i = 0; i < EP_ACCEPTS_PER_RUN; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(s->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			int err = errno;
			if (err == EAGAIN || err == EWOULDBLOCK) {
				s->flags &= (uint16_t)~F_READABLE;
				return;
			}
			if (err == EINTR || err == ECONNABORTED || err == EPROTO)
				continue;
			/* EMFILE, ENFILE, ENOBUFS, ENOMEM: the owner decides
			 * (it pauses accepting for a while). */
			s->cbs->accepted(s->owner, -err, NULL, 0);
			return;
		}
		s->cbs->accepted(s->owner, fd, (struct sockaddr *)&ss, len);
		if (!alive(s, gen) || (s->flags & F_PAUSED))
			return;
	}
}

static void do_connect_check(struct esock *s)
{
	int res;
	if (s->flags & F_CONN_DONE) {
		res = s->conn_res;
	} else {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err == 0) {
			/* Writable without an error: make sure the handshake is
			 * done, not a spurious report on a fresh socket. */
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) == -1) {
				if (errno == ENOTCONN) {
					s->flags &= (uint16_t)~F_WRITABLE;
					return;
				}
				err = errno;
			}
		}
		res = -err;
	}
	s->flags &= (uint16_t) ~(F_CONNECTING | F_CONN_DONE);
	if (res == 0)
		s->flags |= F_WRITABLE | F_READABLE;
	s->cbs->connected(s->owner, s->tag, res);
}

static void do_splice_out(struct esock *s)
{
	struct pipe_buf *p = s->out_pipe;
	for (;;) {
		ssize_t r = splice(p->rfd, NULL, s->fd, NULL, s->total - s->sent,
		                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (r > 0) {
			p->bytes -= (uint32_t)r;
			s->sent += (size_t)r;
			if (s->sent < s->total)
				continue;
			s->flags &= (uint16_t)~F_WANT_SEND;
			s->out_pipe = NULL;
			s->cbs->sent(s->owner, s->tag, (int)s->total);
			return;
		}
		if (r == -1 && errno == EINTR)
			continue;
		/* The pipe holds the bytes (counted), so EAGAIN is the socket. */
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			s->flags &= (uint16_t)~F_WRITABLE;
			return;
		}
		int err = r == 0 ? EPIPE : errno;
		s->flags &= (uint16_t)~F_WANT_SEND;
		s->out_pipe = NULL;
		s->cbs->sent(s->owner, s->tag, -err);
		return;
	}
}

static void do_send(struct esock *s)
{
	if (s->out_pipe) {
		do_splice_out(s);
		return;
	}
	for (;;) {
		struct iovec v[ENGINE_MAX_IOV];
		int n = 0;
		size_t skip = s->sent;
		for (int i = 0; i < s->niov; i++) {
			if (skip >= s->iov[i].iov_len) {
				skip -= s->iov[i].iov_len;
				continue;
			}
			v[n].iov_base = (char *)s->iov[i].iov_base + skip;
			v[n].iov_len = s->iov[i].iov_len - skip;
			skip = 0;
			n++;
		}
		struct msghdr msg = {.msg_iov = v, .msg_iovlen = (size_t)n};
		ssize_t r = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				s->flags &= (uint16_t)~F_WRITABLE;
				return;
			}
			int err = errno;
			s->flags &= (uint16_t)~F_WANT_SEND;
			s->iov = NULL;
			s->cbs->sent(s->owner, s->tag, -err);
			return;
		}
		s->sent += (size_t)r;
		if (s->sent >= s->total) {
			s->flags &= (uint16_t)~F_WANT_SEND;
			s->iov = NULL;
			s->cbs->sent(s->owner, s->tag, (int)s->total);
			return;
		}
	}
}

static void do_recv(struct engine *e, struct esock *s);

/* Socket -> pipe.  EAGAIN is ambiguous: an empty socket, or a pipe out of
 * room (its capacity is in pages, not bytes).  With bytes in the pipe it is
 * taken as "full": the receive waits until the caller arms it again after
 * draining the pipe, instead of spinning or losing the readable state. */
static void do_splice_in(struct engine *e, struct esock *s)
{
	struct pipe_buf **slot = s->slot;
	struct pipe_buf *p = *slot;
	bool took = false;
	if (!p) {
		p = pipes_get(e->pipes);
		if (!p) { /* no pipe to be had: a buffer will do */
			s->slot = NULL;
			do_recv(e, s);
			return;
		}
		took = true;
	}
	for (;;) {
		size_t room = p->cap > p->bytes ? p->cap - p->bytes : 0;
		ssize_t r = room ? splice(s->fd, NULL, p->wfd, NULL, room,
		                          SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
		                 : (errno = EAGAIN, -1);
		if (r > 0) {
			p->bytes += (uint32_t)r;
			*slot = p;
			s->flags &= (uint16_t)~F_WANT_RECV;
			s->slot = NULL;
			s->cbs->spliced(s->owner, s->tag, (int)r);
			return;
		}
		if (r == -1 && errno == EINTR)
			continue;
		int res = r == 0 ? 0 : -errno;
		if (took)
			pipes_put(e->pipes, p);
		if (res == -EAGAIN || res == -EWOULDBLOCK) {
			if (!took && p->bytes > 0)
				s->flags |= F_PIPE_FULL;
			else
				s->flags &= (uint16_t)~F_READABLE;
			return;
		}
		s->flags &= (uint16_t)~F_WANT_RECV;
		s->slot = NULL;
		s->cbs->spliced(s->owner, s->tag, res);
		return;
	}
}

static void do_recv(struct engine *e, struct esock *s)
{
	if (s->slot) {
		do_splice_in(e, s);
		return;
	}
	struct buf *b = pool_get(e->pool);
	if (!b) {
		/* Every buffer is in flight: wait for one to come back instead
		 * of failing; the pool running dry is back-pressure too. */
		list_push(ep_of(e), s, L_NOBUF);
		return;
	}
	size_t cap = e->pool->buf_size;
	for (;;) {
		ssize_t r = recv(s->fd, b->data, cap, MSG_DONTWAIT);
		if (r > 0) {
			b->len = (uint32_t)r;
			/* A short read drained the socket: the next arrival
			 * raises a new edge, so skip the EAGAIN round trip, unless
			 * the peer's FIN is already in (it raises no new edge). */
			if ((size_t)r < cap && !(s->flags & F_RDHUP))
				s->flags &= (uint16_t)~F_READABLE;
			s->flags &= (uint16_t)~F_WANT_RECV;
			s->cbs->received(s->owner, s->tag, b, (int)r);
			return;
		}
		if (r == -1 && errno == EINTR)
			continue;
		int res = r == 0 ? 0 : -errno;
		buf_unref(b);
		if (res == -EAGAIN || res == -EWOULDBLOCK) {
			s->flags &= (uint16_t)~F_READABLE;
			return;
		}
		s->flags &= (uint16_t)~F_WANT_RECV;
		s->cbs->received(s->owner, s->tag, NULL, res);
		return;
	}
}

/* One step of work for s; any callback may close or re-arm s. */
static void process(struct engine *e, struct ep *ep, struct esock *s)
{
	uint32_t gen = s->gen;
	if (s->flags & F_CLOSED) {
		const struct esock_cbs *cbs = s->cbs;
		void *owner = s->owner;
		int tag = s->tag;
		slot_free(ep, s);
		if (cbs && cbs->closed)
			cbs->closed(owner, tag);
		return;
	}
	if (s->flags & F_LISTEN) {
		if ((s->flags & F_READABLE) && !(s->flags & F_PAUSED))
			do_accept(s);
		goto out;
	}
	if (s->flags & F_CONNECTING) {
		if (s->flags & (F_WRITABLE | F_CONN_DONE))
			do_connect_check(s);
		goto out;
	}
	if ((s->flags & F_WANT_SEND) && (s->flags & F_WRITABLE)) {
		do_send(s);
		if (!alive(s, gen))
			goto out;
	}
	if ((s->flags & F_WANT_RECV) && (s->flags & F_READABLE))
		do_recv(e, s);
out:
	if (s->gen == gen && (s->flags & F_USED))
		maybe_ready(ep, s);
}

static int ep_poll(struct engine *e, int timeout_ms)
{
	struct ep *ep = ep_of(e);
	if (ep->ready.head || (ep->nobuf.head && e->pool->nfree > 0))
		timeout_ms = 0;
	int n = epoll_pwait(ep->epfd, ep->events, EP_EVENTS, timeout_ms, &e->wait_mask);
	if (n == -1 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++) {
		uint64_t d = ep->events[i].data.u64;
		uint32_t idx = (uint32_t)d, gen = (uint32_t)(d >> 32);
		if (idx >= ep->nsocks)
			continue;
		struct esock *s = &ep->socks[idx];
		if (s->gen != gen || !(s->flags & F_USED) || (s->flags & F_CLOSED))
			continue; /* stale: the slot was closed or reused */
		uint32_t ev = ep->events[i].events;
		if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			s->flags |= F_RDHUP;
		if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			s->flags |= F_READABLE;
		if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			s->flags |= F_WRITABLE;
		maybe_ready(ep, s);
	}
	e->now = clock_now_ms();
	/* Buffers came back: let the receives that waited try again. */
	for (struct esock *w; e->pool->nfree > 0 && (w = ep->nobuf.head) != NULL;) {
		list_remove(ep, w);
		list_push(ep, w, L_READY);
	}
	/* Take this turn's work; what handlers make ready waits for the next. */
	ep->work = ep->ready;
	ep->ready.head = ep->ready.tail = NULL;
	for (struct esock *s = ep->work.head; s; s = s->next)
		s->list = L_WORK;
	struct esock *s;
	while ((s = ep->work.head) != NULL) {
		list_remove(ep, s);
		process(e, ep, s);
	}
	return 0;
}

const struct engine_vt engine_epoll = {
    .name = "epoll",
    .probe = ep_probe,
    .init = ep_init,
    .fini = ep_fini,
    .poll = ep_poll,
    .open = ep_open,
    .listen = ep_listen,
    .accept_pause = ep_accept_pause,
    .connect = ep_connect,
    .recv = ep_recv,
    .send = ep_send,
    .splice_in = ep_splice_in,
    .splice_out = ep_splice_out,
    .shutdown_wr = ep_shutdown_wr,
    .close = ep_close,
    .fd = ep_fd,
};
