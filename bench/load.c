/*
 * load.c - load generator and backends for `make bench` (driven by bench/run.py).
 *
 * One binary, one subcommand per role.  Every role is single-threaded; run.py
 * pins it with taskset.  All addresses are IPv4 "A.B.C.D:PORT" on loopback.
 *
 * Backends (run until killed):
 *   load sink   -l ADDR    accept; read and discard everything
 *   load source -l ADDR    accept; write as fast as each peer reads
 *   load echo   -l ADDR    accept; send back whatever arrives
 *   load stall  -l ADDR    accept and never read (a mirror that stalls);
 *                          close a connection once its peer closes or resets
 *
 * Clients (print one line of key=value pairs on stdout, exit 0 on success):
 *   load bulk     -c ADDR -d up|down [-n STREAMS] [-t SECONDS] [-w WARMUP]
 *                 N streams for T seconds: "up" writes to a sink, "down" reads
 *                 from a source.  The rate counts the bytes moved after the
 *                 warm-up, when the socket buffers on the path are full, so
 *                 bytes written (up) equal bytes delivered to within the
 *                 buffered amount.  bytes_total counts the whole run (for
 *                 run.py's CPU-per-byte figure).
 *   load rr       -c ADDR [-s SIZE] [-t SECONDS] [-w WARMUP]
 *                 ping-pong of SIZE bytes over one connection; round-trip
 *                 percentiles in microseconds.
 *   load connrate -c ADDR [-n CONCURRENCY] [-t SECONDS] [-w WARMUP] [-s SIZE]
 *                 [-S FIRST_SOURCE_IP] [-N SOURCES] [-r]
 *                 connect, send SIZE bytes, read SIZE bytes back, close; keep
 *                 CONCURRENCY of these in flight, clients spread round-robin
 *                 over SOURCES addresses from FIRST_SOURCE_IP up.  -r closes
 *                 with SO_LINGER 0 (reset, no TIME_WAIT).
 *   load idle     -c ADDR -n COUNT
 *                 open COUNT connections, one SIZE echo on each, print
 *                 "idle opened=COUNT", hold them until stdin reaches EOF.
 *   load fanout   -c INPUT_ADDR -o OUTPUT_ADDR [-n OUTPUTS] [-t SECONDS] [-w WARMUP]
 *                 fan-out through ferry: connect OUTPUTS sinks to OUTPUT_ADDR
 *                 and one input to INPUT_ADDR, send 1-byte probes until every
 *                 output has received one (so every output is known to ferry
 *                 before the measurement starts), then send as fast as the
 *                 input takes for WARMUP + SECONDS while the outputs read as
 *                 fast as they can.  Reports the input rate and the rate of
 *                 the slowest, the mean and the fastest output (bytes each
 *                 output received after the warm-up / measured time).
 *   load twfill   -n TARGET [-t SECONDS]
 *                 make short local connections (127.0.1.x -> 127.0.0.254) until
 *                 the kernel's TIME_WAIT count (/proc/net/sockstat "tw")
 *                 reaches TARGET, so connection-rate runs all start with the
 *                 same, full TIME_WAIT table.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define IO_CHUNK (256 * 1024) /* bytes per read/write in bulk roles */
#define MAX_EVENTS 256

static char iobuf[IO_CHUNK];

/* ------------------------------------------------------------------ helpers */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("load: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t secs_to_ns(double s)
{
	return (uint64_t)(s * 1e9);
}

/* "A.B.C.D:PORT" -> sockaddr_in; dies on a malformed address. */
static struct sockaddr_in parse_addr(const char *s)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		die("bad address '%s' (expected A.B.C.D:PORT)", s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535 || inet_pton(AF_INET, host, &a.sin_addr) != 1)
		die("bad address '%s' (expected A.B.C.D:PORT)", s);
	a.sin_port = htons((uint16_t)port);
	return a;
}

/* Use the hard descriptor limit: idle and echo hold thousands of sockets. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* Blocking connect to `a`; dies with the reason on failure. */
static int connect_to(const struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0)
		die("connect %s:%d: %s", inet_ntoa(a->sin_addr), ntohs(a->sin_port), strerror(errno));
	return fd;
}

/* Write all of buf to a (possibly non-blocking) socket, waiting when full. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
		if (w > 0) {
			buf += w;
			len -= (size_t)w;
		} else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			if (poll(&p, 1, 5000) <= 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Read exactly len bytes from a blocking socket; -1 on EOF or error. */
static int read_full(int fd, char *buf, size_t len)
{
	while (len > 0) {
		ssize_t r = recv(fd, buf, len, 0);
		if (r > 0) {
			buf += r;
			len -= (size_t)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else {
			return -1;
		}
	}
	return 0;
}

/* ----------------------------------------------------------------- backends */

enum role { ROLE_SINK, ROLE_SOURCE, ROLE_ECHO, ROLE_STALL };

/*
 * One epoll loop for the four backends (level-triggered, non-blocking).
 * A descriptor number can be reused by accept4 within one batch of events;
 * a stale event then meets EAGAIN, which every branch ignores.
 *
 * The stall backend never asks for EPOLLIN: it waits only for the peer's FIN
 * (EPOLLRDHUP) or reset (EPOLLERR/EPOLLHUP, always reported) and closes.
 */
static int serve(enum role role, struct sockaddr_in a)
{
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4096) < 0)
		die("listen %s:%d: %s", inet_ntoa(a.sin_addr), ntohs(a.sin_port), strerror(errno));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	struct epoll_event evs[MAX_EVENTS];
	size_t rd_len = role == ROLE_ECHO ? 65536 : IO_CHUNK;

	for (;;) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			uint32_t e = evs[i].events;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					set_nodelay(c);
					uint32_t want = role == ROLE_STALL    ? EPOLLRDHUP
					                : role == ROLE_SOURCE ? EPOLLIN | EPOLLOUT
					                                      : EPOLLIN;
					struct epoll_event ce = {.events = want, .data.fd = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				}
				continue;
			}
			if (role == ROLE_STALL) { /* the peer is gone: nothing was ever read */
				close(fd);
				continue;
			}
			int dead = 0;
			if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
				ssize_t r = recv(fd, iobuf, rd_len, 0);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
					dead = 1;
				else if (r > 0 && role == ROLE_ECHO && write_all(fd, iobuf, (size_t)r) < 0)
					dead = 1;
			}
			if (!dead && role == ROLE_SOURCE && (e & EPOLLOUT)) {
				ssize_t w = send(fd, iobuf, IO_CHUNK, MSG_NOSIGNAL);
				if (w < 0 && errno != EAGAIN && errno != EINTR)
					dead = 1;
			}
			if (dead)
				close(fd); /* also leaves the epoll set */
		}
	}
}

/* ------------------------------------------------------------------ clients */

struct opts {
	const char *addr;
	const char *out_addr; /* fanout: where the outputs connect */
	const char *dir;
	const char *src;
	int n;
	int nsrc;
	int size;
	int rst;
	double secs;
	double warm;
};

/* Bulk transfer over o->n streams; see the header comment. */
static int cmd_bulk(const struct opts *o)
{
	struct sockaddr_in a = parse_addr(o->addr);
	int up;
	if (!o->dir)
		die("bulk needs -d up|down");
	if (!strcmp(o->dir, "up"))
		up = 1;
	else if (!strcmp(o->dir, "down"))
		up = 0;
	else
		die("bulk: -d must be up or down");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int *fds = calloc((size_t)o->n, sizeof(int));
	for (int i = 0; i < o->n; i++) {
		fds[i] = connect_to(&a);
		set_nonblock(fds[i], 1);
		struct epoll_event ev = {.events = up ? EPOLLOUT : EPOLLIN, .data.fd = fds[i]};
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	struct epoll_event evs[MAX_EVENTS];
	uint64_t t0 = now_ns(), t_warm = t0 + secs_to_ns(o->warm);
	uint64_t t_end = t_warm + secs_to_ns(o->secs);
	uint64_t total = 0, at_warm = 0, tw = 0, now = t0;
	int warmed = 0;
	const char *err = NULL;

	while (!err) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, 100);
		now = now_ns();
		if (!warmed && now >= t_warm) {
			warmed = 1;
			at_warm = total;
			tw = now;
		}
		if (now >= t_end)
			break;
		for (int i = 0; i < n && !err; i++) {
			int fd = evs[i].data.fd;
			ssize_t r = up ? send(fd, iobuf, IO_CHUNK, MSG_NOSIGNAL) : recv(fd, iobuf, IO_CHUNK, 0);
			if (r > 0)
				total += (uint64_t)r;
			else if (r == 0)
				err = "peer closed the stream";
			else if (errno != EAGAIN && errno != EINTR)
				err = strerror(errno);
		}
	}
	if (err) {
		printf("bulk dir=%s streams=%d error=\"%s\"\n", o->dir, o->n, err);
		return 1;
	}
	double secs = (double)(now - tw) / 1e9;
	double gbps = (double)(total - at_warm) / secs / 1e9;
	printf("bulk dir=%s streams=%d seconds=%.3f bytes=%llu bytes_total=%llu GBps=%.4f\n", o->dir, o->n,
	       secs, (unsigned long long)(total - at_warm), (unsigned long long)total, gbps);
	fflush(stdout);
	for (int i = 0; i < o->n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

/* Fan-out through ferry; see the header comment.  One input, o->n outputs. */
static int cmd_fanout(const struct opts *o)
{
	if (!o->out_addr)
		die("fanout needs -o OUTPUT_ADDR");
	struct sockaddr_in ia = parse_addr(o->addr), oa = parse_addr(o->out_addr);
	int n = o->n;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int *fds = calloc((size_t)n, sizeof(int));
	uint64_t *got = calloc((size_t)n, sizeof(uint64_t));     /* bytes per output */
	uint64_t *got_warm = calloc((size_t)n, sizeof(uint64_t)); /* ... at the warm-up's end */
	if (!fds || !got || !got_warm)
		die("out of memory");
	/* epoll data: output index, or n for the input. */
	for (int i = 0; i < n; i++) {
		fds[i] = connect_to(&oa);
		set_nonblock(fds[i], 1);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	int in = connect_to(&ia);
	set_nonblock(in, 1);
	struct epoll_event iev = {.events = EPOLLOUT, .data.u32 = (uint32_t)n};
	struct epoll_event evs[MAX_EVENTS];
	const char *err = NULL;

	/* Probe: ferry delivers only to outputs connected when bytes arrive,
	 * so repeat a 1-byte send until every output has seen a byte. */
	uint64_t probes = 0, deadline = now_ns() + secs_to_ns(5);
	int ready = 0;
	while (ready < n && !err) {
		if (now_ns() > deadline) {
			err = "not every output received the probe within 5 s";
			break;
		}
		if (send(in, "p", 1, MSG_NOSIGNAL) == 1)
			probes++;
		int k = epoll_wait(ep, evs, MAX_EVENTS, 2);
		for (int i = 0; i < k && !err; i++) {
			uint32_t x = evs[i].data.u32;
			ssize_t r = recv(fds[x], iobuf, IO_CHUNK, 0);
			if (r > 0) {
				ready += got[x] == 0;
				got[x] += (uint64_t)r;
			} else if (r == 0) {
				err = "ferry closed an output";
			} else if (errno != EAGAIN && errno != EINTR) {
				err = strerror(errno);
			}
		}
	}
	if (err) {
		printf("fanout outputs=%d ready=%d error=\"%s\"\n", n, ready, err);
		return 1;
	}
	/* The probes are counted in the totals, not in the measured window. */
	epoll_ctl(ep, EPOLL_CTL_ADD, in, &iev);
	uint64_t t0 = now_ns(), t_warm = t0 + secs_to_ns(o->warm);
	uint64_t t_end = t_warm + secs_to_ns(o->secs);
	uint64_t sent = probes, sent_warm = 0, tw = 0, now = t0;
	int warmed = 0;
	while (!err) {
		int k = epoll_wait(ep, evs, MAX_EVENTS, 100);
		now = now_ns();
		if (!warmed && now >= t_warm) {
			warmed = 1;
			tw = now;
			sent_warm = sent;
			memcpy(got_warm, got, (size_t)n * sizeof(uint64_t));
		}
		if (now >= t_end)
			break;
		for (int i = 0; i < k && !err; i++) {
			uint32_t x = evs[i].data.u32;
			ssize_t r = x == (uint32_t)n ? send(in, iobuf, IO_CHUNK, MSG_NOSIGNAL)
			                             : recv(fds[x], iobuf, IO_CHUNK, 0);
			if (r > 0) {
				if (x == (uint32_t)n)
					sent += (uint64_t)r;
				else
					got[x] += (uint64_t)r;
			} else if (r == 0) {
				err = "ferry closed an output";
			} else if (errno != EAGAIN && errno != EINTR) {
				err = strerror(errno);
			}
		}
	}
	if (err) {
		printf("fanout outputs=%d error=\"%s\"\n", n, err);
		return 1;
	}
	double secs = (double)(now - tw) / 1e9;
	uint64_t lo = UINT64_MAX, hi = 0, sum = 0, sum_total = 0;
	for (int i = 0; i < n; i++) {
		uint64_t d = got[i] - got_warm[i];
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
		sum += d;
		sum_total += got[i];
	}
	printf("fanout outputs=%d seconds=%.3f probes=%llu in_bytes=%llu in_bytes_total=%llu in_GBps=%.4f "
	       "out_bytes=%llu out_bytes_total=%llu out_min_GBps=%.4f out_mean_GBps=%.4f out_max_GBps=%.4f "
	       "delivered_GBps=%.4f\n",
	       n, secs, (unsigned long long)probes, (unsigned long long)(sent - sent_warm),
	       (unsigned long long)sent, (double)(sent - sent_warm) / secs / 1e9, (unsigned long long)sum,
	       (unsigned long long)sum_total, (double)lo / secs / 1e9, (double)sum / n / secs / 1e9,
	       (double)hi / secs / 1e9, (double)sum / secs / 1e9);
	fflush(stdout);
	close(in);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	free(got);
	free(got_warm);
	return 0;
}

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct_us(const uint32_t *v, size_t n, double p)
{
	size_t k = (size_t)(p * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1] / 1000.0;
}

/* Request/response latency over one persistent connection. */
static int cmd_rr(const struct opts *o)
{
	struct sockaddr_in a = parse_addr(o->addr);
	if (o->size < 1 || o->size > 65536)
		die("rr: -s must be 1..65536");
	int fd = connect_to(&a);
	set_nodelay(fd);
	size_t cap = 1 << 20, n = 0;
	uint32_t *v = malloc(cap * sizeof(*v));
	char *msg = malloc((size_t)o->size), *reply = malloc((size_t)o->size);
	memset(msg, 'x', (size_t)o->size);
	uint64_t t0 = now_ns(), t_warm = t0 + secs_to_ns(o->warm), t_end = t_warm + secs_to_ns(o->secs);
	uint64_t sum = 0;

	for (;;) {
		uint64_t s = now_ns();
		if (s >= t_end)
			break;
		if (write_all(fd, msg, (size_t)o->size) < 0 || read_full(fd, reply, (size_t)o->size) < 0) {
			printf("rr error=\"%s\"\n", errno ? strerror(errno) : "peer closed");
			return 1;
		}
		uint64_t d = now_ns() - s;
		if (s < t_warm)
			continue;
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(*v));
			if (!v)
				die("out of memory");
		}
		v[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		sum += d;
	}
	close(fd);
	if (n == 0) {
		printf("rr error=\"no samples\"\n");
		return 1;
	}
	qsort(v, n, sizeof(*v), cmp_u32);
	printf("rr size=%d count=%zu p50_us=%.1f p99_us=%.1f p999_us=%.1f mean_us=%.1f min_us=%.1f "
	       "max_us=%.1f\n",
	       o->size, n, pct_us(v, n, 0.50), pct_us(v, n, 0.99), pct_us(v, n, 0.999),
	       (double)sum / (double)n / 1000.0, v[0] / 1000.0, v[n - 1] / 1000.0);
	free(v);
	free(msg);
	free(reply);
	return 0;
}

/* One in-flight connection of the connection-rate client. */
struct slot {
	int fd;
	int got;        /* reply bytes received so far */
	int connecting; /* waiting for the connect to finish */
};

struct crate {
	const struct opts *o;
	struct sockaddr_in dst;
	struct in_addr src0; /* first source address, host order arithmetic */
	unsigned next_src;
	int ep;
	uint64_t errors;
	char msg[1024];
};

/* Send the request on a connected slot and wait for the reply. */
static int slot_send(struct crate *c, struct slot *s, uint32_t idx)
{
	if (send(s->fd, c->msg, (size_t)c->o->size, MSG_NOSIGNAL) != c->o->size)
		return -1;
	s->connecting = 0;
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
	return epoll_ctl(c->ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Open a new connection in slot idx (non-blocking; retried on failure). */
static void slot_start(struct crate *c, struct slot *s, uint32_t idx)
{
	for (int tries = 0; tries < 100; tries++) {
		int one = 1;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket: %s", strerror(errno));
		/* Choose the port at connect time so it is unique per 4-tuple. */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(ntohl(c->src0.s_addr) + c->next_src++ % (unsigned)c->o->nsrc);
		set_nodelay(fd);
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
		    (connect(fd, (struct sockaddr *)&c->dst, sizeof(c->dst)) < 0 && errno != EINPROGRESS)) {
			c->errors++;
			close(fd);
			continue;
		}
		s->fd = fd;
		s->got = 0;
		s->connecting = 1;
		struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = idx};
		epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev);
		return;
	}
	die("connrate: 100 connects in a row failed (last: %s)", strerror(errno));
}

static void slot_close(struct crate *c, struct slot *s)
{
	if (c->o->rst) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(s->fd);
	s->fd = -1;
}

/* New connections per second; see the header comment. */
static int cmd_connrate(const struct opts *o)
{
	struct crate c = {.o = o, .dst = parse_addr(o->addr)};
	if (o->size < 1 || o->size > (int)sizeof(c.msg))
		die("connrate: -s must be 1..%zu", sizeof(c.msg));
	if (inet_pton(AF_INET, o->src, &c.src0) != 1)
		die("connrate: bad source address '%s'", o->src);
	memset(c.msg, 'c', sizeof(c.msg));
	c.ep = epoll_create1(EPOLL_CLOEXEC);
	struct slot *slots = calloc((size_t)o->n, sizeof(*slots));
	for (int i = 0; i < o->n; i++)
		slot_start(&c, &slots[i], (uint32_t)i);

	struct epoll_event evs[MAX_EVENTS];
	uint64_t t0 = now_ns(), t_warm = t0 + secs_to_ns(o->warm), t_end = t_warm + secs_to_ns(o->secs);
	uint64_t done = 0, at_warm = 0, tw = 0, now = t0;
	int warmed = 0;
	char rbuf[1024];

	for (;;) {
		int n = epoll_wait(c.ep, evs, MAX_EVENTS, 100);
		now = now_ns();
		if (!warmed && now >= t_warm) {
			warmed = 1;
			at_warm = done;
			tw = now;
		}
		if (now >= t_end)
			break;
		for (int i = 0; i < n; i++) {
			uint32_t idx = evs[i].data.u32;
			struct slot *s = &slots[idx];
			int fail = 0;
			if (s->connecting) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err || slot_send(&c, s, idx) < 0)
					fail = 1;
			} else {
				ssize_t r = recv(s->fd, rbuf, sizeof(rbuf), 0);
				if (r > 0) {
					s->got += (int)r;
					if (s->got >= o->size) { /* whole reply: done */
						slot_close(&c, s);
						done++;
						slot_start(&c, s, idx);
					}
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					fail = 1;
				}
			}
			if (fail) {
				c.errors++;
				slot_close(&c, s);
				slot_start(&c, s, idx);
			}
		}
	}
	double secs = (double)(now - tw) / 1e9;
	printf("connrate conc=%d seconds=%.3f conns=%llu rate=%.1f errors=%llu conns_total=%llu\n", o->n, secs,
	       (unsigned long long)(done - at_warm), (double)(done - at_warm) / secs,
	       (unsigned long long)c.errors, (unsigned long long)done);
	fflush(stdout);
	for (int i = 0; i < o->n; i++)
		if (slots[i].fd >= 0)
			slot_close(&c, &slots[i]);
	free(slots);
	return 0;
}

/* Hold o->n idle connections (each proven end to end by one echo). */
static int cmd_idle(const struct opts *o)
{
	struct sockaddr_in a = parse_addr(o->addr);
	int *fds = calloc((size_t)o->n, sizeof(int));
	char msg[64], reply[64];
	memset(msg, 'i', sizeof(msg));
	for (int i = 0; i < o->n; i++) {
		fds[i] = connect_to(&a);
		struct timeval tv = {.tv_sec = 5};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (write_all(fds[i], msg, sizeof(msg)) < 0 || read_full(fds[i], reply, sizeof(reply)) < 0) {
			printf("idle opened=%d error=\"echo %d failed: %s\"\n", i, i,
			       errno ? strerror(errno) : "peer closed");
			return 1;
		}
	}
	printf("idle opened=%d\n", o->n);
	fflush(stdout);
	while (read(0, iobuf, sizeof(iobuf)) > 0)
		; /* hold until run.py closes our stdin */
	for (int i = 0; i < o->n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

/* The kernel's count of TIME_WAIT sockets (/proc/net/sockstat, "tw"). */
static long tw_count(void)
{
	FILE *f = fopen("/proc/net/sockstat", "r");
	char line[256];
	long tw = -1;
	while (f && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, " tw ");
		if (!strncmp(line, "TCP:", 4) && p)
			tw = strtol(p + 4, NULL, 10);
	}
	if (f)
		fclose(f);
	return tw;
}

/*
 * Fill the TIME_WAIT table: connect from 127.0.1.x to our own listener on
 * 127.0.0.254, close the client first (it is the one left in TIME_WAIT), then
 * the accepted side.  Sources rotate over 32 addresses so the 4-tuples never
 * run out; these tuples never meet the benchmark's own.
 */
static int cmd_twfill(const struct opts *o)
{
	int one = 1;
	struct sockaddr_in la = parse_addr("127.0.0.254:0");
	socklen_t ll = sizeof(la);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(lfd, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(lfd, 4096) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&la, &ll) < 0)
		die("twfill: listen: %s", strerror(errno));
	uint64_t t0 = now_ns(), limit = t0 + secs_to_ns(o->secs);
	long tw = tw_count(), made = 0;
	while (tw < o->n && now_ns() < limit) {
		for (int i = 0; i < 512; i++, made++) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
			struct sockaddr_in src = {.sin_family = AF_INET};
			src.sin_addr.s_addr = htonl(0x7f000101u + (uint32_t)(made % 32));
			if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
			    connect(fd, (struct sockaddr *)&la, sizeof(la)) < 0)
				die("twfill: connect: %s", strerror(errno));
			int afd = accept(lfd, NULL, NULL);
			close(fd);
			if (afd >= 0)
				close(afd);
		}
		tw = tw_count();
	}
	close(lfd);
	printf("twfill target=%d tw=%ld made=%ld seconds=%.2f\n", o->n, tw, made,
	       (double)(now_ns() - t0) / 1e9);
	return 0;
}

/* ---------------------------------------------------------------------- main */

static void usage(void)
{
	fputs("usage: load sink|source|echo|stall -l ADDR\n"
	      "       load bulk -c ADDR -d up|down [-n STREAMS] [-t SECONDS] [-w WARMUP]\n"
	      "       load rr -c ADDR [-s SIZE] [-t SECONDS] [-w WARMUP]\n"
	      "       load connrate -c ADDR [-n CONC] [-t SECONDS] [-w WARMUP] [-s SIZE]\n"
	      "                     [-S FIRST_SOURCE_IP] [-N SOURCES] [-r]\n"
	      "       load idle -c ADDR -n COUNT\n"
	      "       load fanout -c INPUT_ADDR -o OUTPUT_ADDR [-n OUTPUTS] [-t SECONDS] [-w WARMUP]\n"
	      "       load twfill -n TARGET [-t MAX_SECONDS]\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *cmd = argv[1];
	struct opts o = {.n = 1, .nsrc = 1, .size = 64, .secs = 3, .warm = 0.5, .src = "127.0.0.1"};
	const char *listen_addr = NULL;
	int c;
	optind = 2;
	while ((c = getopt(argc, argv, "l:c:o:d:n:t:w:s:S:N:r")) != -1) {
		switch (c) {
		case 'l': listen_addr = optarg; break;
		case 'c': o.addr = optarg; break;
		case 'o': o.out_addr = optarg; break;
		case 'd': o.dir = optarg; break;
		case 'n': o.n = atoi(optarg); break;
		case 't': o.secs = atof(optarg); break;
		case 'w': o.warm = atof(optarg); break;
		case 's': o.size = atoi(optarg); break;
		case 'S': o.src = optarg; break;
		case 'N': o.nsrc = atoi(optarg); break;
		case 'r': o.rst = 1; break;
		default: usage();
		}
	}
	if (o.n < 1 || o.nsrc < 1 || o.secs <= 0 || o.warm < 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	memset(iobuf, 'b', sizeof(iobuf));

	static const struct {
		const char *name;
		enum role role;
	} backends[] = {{"sink", ROLE_SINK}, {"source", ROLE_SOURCE}, {"echo", ROLE_ECHO}, {"stall", ROLE_STALL}};
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (!strcmp(cmd, backends[i].name)) {
			if (!listen_addr)
				usage();
			return serve(backends[i].role, parse_addr(listen_addr));
		}
	}
	if (!strcmp(cmd, "twfill"))
		return cmd_twfill(&o);
	if (!o.addr)
		usage();
	if (!strcmp(cmd, "bulk"))
		return cmd_bulk(&o);
	if (!strcmp(cmd, "rr"))
		return cmd_rr(&o);
	if (!strcmp(cmd, "connrate"))
		return cmd_connrate(&o);
	if (!strcmp(cmd, "idle"))
		return cmd_idle(&o);
	if (!strcmp(cmd, "fanout"))
		return cmd_fanout(&o);
	usage();
}
