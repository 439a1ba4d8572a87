/* test_notify.c - sd_notify without libsystemd, against a real AF_UNIX
 * datagram socket standing in for systemd: a path socket and an abstract
 * one receive the exact bytes; an unset variable is a silent success; bad
 * addresses give the documented -errno; a receiver that never reads gives
 * -EAGAIN rather than a blocked caller; several threads at once each get
 * their messages through whole.  Teardown checks that no descriptor leaked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/notify.h"

#define N_THREADS    8
#define N_PER_THR    32
#define RECV_WAIT_MS 5000

/* The stand-in for systemd's notification socket. */
struct receiver {
	char dir[64];   /* temporary directory of the path socket */
	char path[100]; /* path socket: dir/notify.sock */
	int fd;
	int fds_before; /* open descriptors when the test started */
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct receiver *r = calloc(1, sizeof(*r));

	if (!r)
		return -1;
	r->fd = -1;
	snprintf(r->dir, sizeof(r->dir), "/tmp/ferry-notify-XXXXXX");
	if (!mkdtemp(r->dir)) {
		free(r);
		return -1;
	}
	snprintf(r->path, sizeof(r->path), "%s/notify.sock", r->dir);
	unsetenv("NOTIFY_SOCKET");
	r->fds_before = count_fds();
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	struct receiver *r = *state;
	int leaked;

	if (r->fd >= 0)
		close(r->fd);
	unlink(r->path);
	rmdir(r->dir);
	unsetenv("NOTIFY_SOCKET");
	leaked = count_fds() - r->fds_before;
	free(r);
	/* Every notify call closes its socket, error paths included. */
	assert_int_equal(leaked, 0);
	return 0;
}

/* Binds the receiver to r->path (abstract == NULL) or to the abstract name,
 * and points $NOTIFY_SOCKET at it. */
static void listen_on(struct receiver *r, const char *abstract)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t len;
	char env[sizeof(sun.sun_path) + 1];

	r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(r->fd >= 0);
	if (abstract) {
		size_t n = strlen(abstract);

		memcpy(sun.sun_path + 1, abstract, n);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
		snprintf(env, sizeof(env), "@%s", abstract);
	} else {
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", r->path);
		len = (socklen_t)sizeof(sun);
		snprintf(env, sizeof(env), "%s", r->path);
	}
	assert_int_equal(bind(r->fd, (struct sockaddr *)&sun, len), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);
}

/* Next datagram into buf (NUL-terminated); its length, or -1 on timeout. */
static ssize_t receive(struct receiver *r, char *buf, size_t cap, int wait_ms)
{
	struct pollfd p = {.fd = r->fd, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, wait_ms) != 1)
		return -1;
	n = recv(r->fd, buf, cap - 1, MSG_DONTWAIT);
	assert_true(n >= 0);
	buf[n] = '\0';
	return n;
}

static void expect_message(struct receiver *r, const char *want)
{
	char buf[2 * NOTIFY_MSG_MAX];
	ssize_t n = receive(r, buf, sizeof(buf), RECV_WAIT_MS);

	assert_int_equal(n, (ssize_t)strlen(want)); /* no trailing NUL sent */
	assert_string_equal(buf, want);
}

static void expect_nothing(struct receiver *r)
{
	char buf[64];

	assert_int_equal(receive(r, buf, sizeof(buf), 0), -1);
}

static void test_path_socket(void **state)
{
	struct receiver *r = *state;

	listen_on(r, NULL);
	assert_int_equal(notify_send("READY=1"), 0);
	expect_message(r, "READY=1");
	assert_int_equal(notify_send("STOPPING=1"), 0);
	expect_message(r, "STOPPING=1");
	assert_int_equal(notify_sendf("STATUS=%u services, %s", 2u, "epoll"), 0);
	expect_message(r, "STATUS=2 services, epoll");
	expect_nothing(r);
}

static void test_abstract_socket(void **state)
{
	struct receiver *r = *state;
	char name[64];

	snprintf(name, sizeof(name), "ferry-test-notify-%ld-%ld", (long)getpid(), (long)time(NULL));
	listen_on(r, name);
	assert_int_equal(notify_send("STATUS=reloaded\nREADY=1"), 0);
	expect_message(r, "STATUS=reloaded\nREADY=1");
	expect_nothing(r);
}

static void test_reloading_has_monotonic_usec(void **state)
{
	struct receiver *r = *state;
	struct timespec ts;
	unsigned long long before, after, usec;
	char buf[256], *end;

	listen_on(r, NULL);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	before = (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
	assert_int_equal(notify_reloading(), 0);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	after = (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;

	assert_true(receive(r, buf, sizeof(buf), RECV_WAIT_MS) > 0);
	assert_memory_equal(buf, "RELOADING=1\nMONOTONIC_USEC=", 27);
	usec = strtoull(buf + 27, &end, 10);
	assert_true(end > buf + 27);
	assert_int_equal(*end, '\0');
	assert_true(usec >= before && usec <= after);
}

static void test_unset_is_success(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_send("READY=1"), 0);
	assert_int_equal(notify_reloading(), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(notify_send("READY=1"), 0);
}

static void test_bad_addresses(void **state)
{
	struct receiver *r = *state;
	char missing[160], too_long[200];
	FILE *f;

	/* Nothing listens there. */
	snprintf(missing, sizeof(missing), "%s/nobody.sock", r->dir);
	assert_int_equal(setenv("NOTIFY_SOCKET", missing, 1), 0);
	assert_int_equal(notify_send("READY=1"), -ENOENT);

	/* A file that is not a socket. */
	f = fopen(r->path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(setenv("NOTIFY_SOCKET", r->path, 1), 0);
	assert_int_equal(notify_send("READY=1"), -ECONNREFUSED);

	/* A path that cannot fit sun_path (108 bytes with its NUL). */
	memset(too_long, 'a', sizeof(too_long) - 1);
	too_long[0] = '/';
	too_long[sizeof(too_long) - 1] = '\0';
	assert_int_equal(setenv("NOTIFY_SOCKET", too_long, 1), 0);
	assert_int_equal(notify_send("READY=1"), -ENAMETOOLONG);
	too_long[0] = '@';
	assert_int_equal(setenv("NOTIFY_SOCKET", too_long, 1), 0);
	assert_int_equal(notify_send("READY=1"), -ENAMETOOLONG);

	/* Neither absolute nor abstract. */
	assert_int_equal(setenv("NOTIFY_SOCKET", "run/notify", 1), 0);
	assert_int_equal(notify_send("READY=1"), -EAFNOSUPPORT);
	assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
	assert_int_equal(notify_send("READY=1"), -EAFNOSUPPORT);
	assert_int_equal(setenv("NOTIFY_SOCKET", "@", 1), 0);
	assert_int_equal(notify_send("READY=1"), -EINVAL);
}

static void test_bad_messages(void **state)
{
	struct receiver *r = *state;
	char big[NOTIFY_MSG_MAX + 16];

	listen_on(r, NULL);
	assert_int_equal(notify_send(NULL), -EINVAL);
	assert_int_equal(notify_send(""), -EINVAL);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/* Cut short it could say something else: refused, nothing sent. */
	assert_int_equal(notify_sendf("STATUS=%s", big), -EMSGSIZE);
	expect_nothing(r);
	/* notify_send itself has no such limit. */
	memcpy(big, "STATUS=", 7);
	assert_int_equal(notify_send(big), 0);
	expect_message(r, big);
}

static void test_errno_untouched(void **state)
{
	struct receiver *r = *state;
	char missing[160];

	listen_on(r, NULL);
	errno = 4242;
	assert_int_equal(notify_send("READY=1"), 0);
	assert_int_equal(errno, 4242);
	snprintf(missing, sizeof(missing), "%s/nobody.sock", r->dir);
	assert_int_equal(setenv("NOTIFY_SOCKET", missing, 1), 0);
	assert_int_equal(notify_send("READY=1"), -ENOENT);
	assert_int_equal(errno, 4242);
	expect_message(r, "READY=1");
}

/* A systemd that does not read: the queue fills (net.unix.max_dgram_qlen,
 * or the receive buffer) and the caller gets -EAGAIN instead of blocking,
 * which would stall an event loop.  If notify_send blocked, this test
 * would hang rather than fail: the harness's timeout then reports it. */
static void test_full_queue_never_blocks(void **state)
{
	struct receiver *r = *state;
	int small = 1, rc = 0, sent = 0;

	listen_on(r, NULL);
	assert_int_equal(setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	while (sent < 100000) {
		rc = notify_send("STATUS=filling");
		if (rc < 0)
			break;
		sent++;
	}
	assert_int_equal(rc, -EAGAIN);
	assert_true(sent > 0);
	/* What was queued arrived whole. */
	for (int i = 0; i < sent; i++)
		expect_message(r, "STATUS=filling");
	expect_nothing(r);
	assert_int_equal(notify_send("READY=1"), 0);
	expect_message(r, "READY=1");
}

struct sender {
	pthread_t tid;
	int id;
	int failures;
};

static void *send_many(void *arg)
{
	struct sender *s = arg;
	struct timespec pause = {0, 100 * 1000};

	for (int i = 0; i < N_PER_THR; i++) {
		char msg[64];
		int rc;

		snprintf(msg, sizeof(msg), "STATUS=thread %d message %d", s->id, i);
		/* A full queue is the only expected failure: wait for the
		 * receiver to drain it. */
		while ((rc = notify_send(msg)) == -EAGAIN)
			nanosleep(&pause, NULL);
		if (rc != 0)
			s->failures++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct receiver *r = *state;
	struct sender senders[N_THREADS];
	int next[N_THREADS] = {0};
	char buf[128];

	listen_on(r, NULL);
	for (int t = 0; t < N_THREADS; t++) {
		senders[t].id = t;
		senders[t].failures = 0;
		assert_int_equal(pthread_create(&senders[t].tid, NULL, send_many, &senders[t]), 0);
	}
	for (int i = 0; i < N_THREADS * N_PER_THR; i++) {
		int t, k, used = 0;

		assert_true(receive(r, buf, sizeof(buf), RECV_WAIT_MS) > 0);
		assert_int_equal(sscanf(buf, "STATUS=thread %d message %d%n", &t, &k, &used), 2);
		assert_int_equal((size_t)used, strlen(buf));
		assert_true(t >= 0 && t < N_THREADS);
		/* One thread's datagrams keep their order. */
		assert_int_equal(k, next[t]);
		next[t]++;
	}
	for (int t = 0; t < N_THREADS; t++) {
		assert_int_equal(pthread_join(senders[t].tid, NULL), 0);
		assert_int_equal(senders[t].failures, 0);
		assert_int_equal(next[t], N_PER_THR);
	}
	expect_nothing(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_path_socket, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abstract_socket, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reloading_has_monotonic_usec, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unset_is_success, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_addresses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_messages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errno_untouched, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_queue_never_blocks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests_name("notify", tests, NULL, NULL);
}
