/* test_resolve.c - the resolver thread against a real DNS server: the test
 * starts tests/tools/fakedns.py (python3, standard library) on a free port
 * and rewrites its answer table at run time.  Covered: several A and AAAA
 * answers sorted and deduplicated, a re-resolution that picks up a changed
 * table within the interval, rotated answers that are no change, a name
 * turning NXDOMAIN that keeps its last addresses and is logged once (and
 * once more when it comes back), "localhost" through /etc/hosts with the
 * system configuration, start-up errors naming the host (NXDOMAIN and
 * timeout), the per-name address cap (over TCP, as the answer is truncated
 * on UDP), address literals taken as they are, a stop that does not wait
 * for DNS timeouts, and bad options.
 *
 * Without python3 (or the script) the DNS tests are skipped with a message;
 * FERRY_FAKEDNS overrides the script's path, FERRY_PYTHON the interpreter.
 * Run from the repository root (make unit does).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/resolve.h"

#define WAIT_MS     10000 /* upper bound for anything that should happen */
#define INTERVAL_MS 150

static struct {
	pid_t pid;        /* fakedns.py, 0 when not running */
	char server[64];  /* "127.0.0.1:PORT" */
	char dir[64];     /* temporary directory */
	char table[128];  /* dir/table.json */
	int notify_fd[2]; /* the notify callback writes a byte to [1] */
	const char *why;  /* why fakedns is not running */
} dns;

/* --- helpers --------------------------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Replaces the table atomically (write, then rename over it). */
static void table_set(const char *json)
{
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s.tmp", dns.table);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	assert_int_equal(fputs(json, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, dns.table), 0);
}

static void notify_cb(void *arg)
{
	int *calls = arg;
	char c = 1;
	__atomic_add_fetch(calls, 1, __ATOMIC_SEQ_CST);
	if (write(dns.notify_fd[1], &c, 1) == -1) {
		/* full pipe: the reader is behind, which is fine */
	}
}

/* Waits for a notify, then takes the set it announced. */
static struct resolve_result *wait_set(struct resolver *r, unsigned ms)
{
	uint64_t until = now_ms() + ms;
	struct resolve_result *res = NULL;
	for (;;) {
		if (resolver_take(r, &res) == 1)
			return res;
		uint64_t now = now_ms();
		if (now >= until)
			return NULL;
		struct pollfd p = {.fd = dns.notify_fd[0], .events = POLLIN};
		if (poll(&p, 1, (int)(until - now)) > 0) {
			char buf[64];
			while (read(dns.notify_fd[0], buf, sizeof(buf)) > 0)
				;
		}
	}
}

static struct resolver *start(const char *const *names, size_t n, int *calls, const char *server)
{
	char err[256] = "";
	struct resolver_opts o = {
	    .names = names,
	    .n_names = n,
	    .interval_ms = INTERVAL_MS,
	    .server = server,
	    .timeout_ms = 300,
	    .tries = 1,
	    .notify = notify_cb,
	    .notify_arg = calls,
	};
	struct resolver *r = resolver_start(&o, err, sizeof(err));
	if (!r)
		print_error("resolver_start: %s\n", err);
	assert_non_null(r);
	return r;
}

static void expect_addr(const struct sockaddr_storage *ss, const char *text)
{
	char buf[INET6_ADDRSTRLEN] = "";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(in->sin_port), 0);
	} else {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		assert_int_equal(ss->ss_family, AF_INET6);
		inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(in6->sin6_port), 0);
	}
	assert_string_equal(buf, text);
}

/* true when address i of e exists and is `text` */
static bool addr_is(const struct resolve_entry *e, size_t i, const char *text)
{
	char buf[INET6_ADDRSTRLEN] = "";
	if (i >= e->n_addrs)
		return false;
	const struct sockaddr_storage *ss = &e->addrs[i];
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, sizeof(buf));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
		          sizeof(buf));
	return strcmp(buf, text) == 0;
}

/* Counts the lines of file `path` that contain `needle`. */
static int count_lines(const char *path, const char *needle)
{
	char line[4096];
	int n = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

static bool need_dns(void)
{
	if (dns.pid > 0)
		return true;
	print_message("skipped: fake DNS server not running (%s)\n", dns.why);
	return false;
}

/* --- fixture: fakedns.py --------------------------------------------------- */

static const char *find_script(void)
{
	static char path[512];
	const char *env = getenv("FERRY_FAKEDNS");
	if (env)
		return access(env, R_OK) == 0 ? env : NULL;
	if (access("tests/tools/fakedns.py", R_OK) == 0)
		return "tests/tools/fakedns.py";
	/* run from elsewhere: the binary is build/<variant>/tests/test_resolve */
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	if (n <= 0)
		return NULL;
	path[n] = '\0';
	for (int up = 0; up < 4; up++) {
		char *slash = strrchr(path, '/');
		if (!slash)
			return NULL;
		*slash = '\0';
	}
	if (strlen(path) + sizeof("/tests/tools/fakedns.py") > sizeof(path))
		return NULL;
	strcat(path, "/tests/tools/fakedns.py");
	if (access(path, R_OK) == 0)
		return path;
	return NULL;
}

static const char *find_python(void)
{
	const char *env = getenv("FERRY_PYTHON");
	if (env)
		return env;
	if (access("/usr/bin/python3", X_OK) == 0)
		return "/usr/bin/python3";
	return NULL;
}

static int group_setup(void **state)
{
	(void)state;
	int out[2];
	const char *script = find_script(), *py = find_python();

	log_setup(LOG_WARN, LOG_TEXT); /* changes are logged at info: keep quiet */
	if (pipe2(dns.notify_fd, O_CLOEXEC | O_NONBLOCK) == -1)
		return -1;
	snprintf(dns.dir, sizeof(dns.dir), "/tmp/ferry-resolve-XXXXXX");
	if (!mkdtemp(dns.dir))
		return -1;
	snprintf(dns.table, sizeof(dns.table), "%s/table.json", dns.dir);
	table_set("{}");
	if (!py) {
		dns.why = "no /usr/bin/python3 (set FERRY_PYTHON)";
		return 0;
	}
	if (!script) {
		dns.why = "tests/tools/fakedns.py not found (set FERRY_FAKEDNS)";
		return 0;
	}
	if (pipe2(out, O_CLOEXEC) == -1)
		return -1;
	pid_t pid = fork();
	if (pid == -1)
		return -1;
	if (pid == 0) {
		dup2(out[1], 1);
		execlp(py, py, script, "--port", "0", "--table", dns.table, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	dns.pid = pid;

	/* the port on a line of its own means ready */
	char line[32] = "";
	size_t got = 0;
	uint64_t until = now_ms() + WAIT_MS;
	while (!memchr(line, '\n', got) && got < sizeof(line) - 1) {
		uint64_t now = now_ms();
		struct pollfd p = {.fd = out[0], .events = POLLIN};
		if (now >= until || poll(&p, 1, (int)(until - now)) <= 0)
			break;
		ssize_t n = read(out[0], line + got, sizeof(line) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(out[0]);
	line[got] = '\0';
	int port = atoi(line);
	if (port <= 0 || port > 65535) {
		kill(dns.pid, SIGTERM);
		waitpid(dns.pid, NULL, 0);
		dns.pid = 0;
		dns.why = "fakedns.py did not start (is python3 complete?)";
		return 0;
	}
	snprintf(dns.server, sizeof(dns.server), "127.0.0.1:%d", port);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	char tmp[160];
	if (dns.pid > 0) {
		kill(dns.pid, SIGTERM);
		waitpid(dns.pid, NULL, 0);
	}
	unlink(dns.table);
	snprintf(tmp, sizeof(tmp), "%s.tmp", dns.table);
	unlink(tmp);
	rmdir(dns.dir);
	close(dns.notify_fd[0]);
	close(dns.notify_fd[1]);
	return 0;
}

/* --- tests ------------------------------------------------------------------- */

static void test_several_a_and_aaaa(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"multi.test\": {\"A\": [\"10.0.0.3\", \"10.0.0.1\", \"10.0.0.2\", "
	          "\"10.0.0.1\"], \"AAAA\": [\"2001:db8::2\", \"2001:db8::1\"]},"
	          " \"v4only.test\": {\"A\": [\"192.0.2.7\"]},"
	          " \"v6only.test\": {\"AAAA\": [\"2001:db8::53\"]}}");
	const char *names[] = {"multi.test", "v6only.test", "multi.test", "v4only.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 4, &calls, dns.server);

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	assert_non_null(res);
	assert_int_equal(res->generation, 1);
	assert_int_equal(res->n, 3); /* the duplicate is merged, order kept */
	assert_string_equal(res->entries[0].name, "multi.test");
	assert_string_equal(res->entries[1].name, "v6only.test");
	assert_string_equal(res->entries[2].name, "v4only.test");

	const struct resolve_entry *e = resolve_result_find(res, "multi.test");
	assert_ptr_equal(e, &res->entries[0]);
	assert_int_equal(e->status, RESOLVE_OK);
	assert_string_equal(e->error, "");
	assert_false(e->truncated);
	assert_int_equal(e->n_addrs, 5);
	expect_addr(&e->addrs[0], "10.0.0.1");
	expect_addr(&e->addrs[1], "10.0.0.2");
	expect_addr(&e->addrs[2], "10.0.0.3");
	expect_addr(&e->addrs[3], "2001:db8::1");
	expect_addr(&e->addrs[4], "2001:db8::2");

	e = resolve_result_find(res, "v6only.test");
	assert_int_equal(e->status, RESOLVE_OK);
	assert_int_equal(e->n_addrs, 1);
	expect_addr(&e->addrs[0], "2001:db8::53");
	e = resolve_result_find(res, "v4only.test");
	assert_int_equal(e->n_addrs, 1);
	expect_addr(&e->addrs[0], "192.0.2.7");
	assert_null(resolve_result_find(res, "other.test"));

	/* the first set was taken by resolver_wait: nothing new yet */
	struct resolve_result *none = (void *)1;
	assert_int_equal(resolver_take(r, &none), 0);
	assert_null(none);
	resolver_stop(r);
	assert_true(__atomic_load_n(&calls, __ATOMIC_SEQ_CST) >= 1);
	/* the set outlives its resolver */
	assert_string_equal(res->entries[0].name, "multi.test");
	resolve_result_free(res);
}

static void test_reresolve_picks_up_change(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"svc.test\": {\"A\": [\"10.1.0.1\", \"10.1.0.2\"]}}");
	const char *names[] = {"svc.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 1, &calls, dns.server);
	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	resolve_result_free(res);

	/* the same addresses in another order are no change */
	table_set("{\"svc.test\": {\"A\": [\"10.1.0.2\", \"10.1.0.1\"]}}");
	sleep_ms(4 * INTERVAL_MS);
	assert_int_equal(resolver_take(r, &res), 0);
	assert_int_equal(__atomic_load_n(&calls, __ATOMIC_SEQ_CST), 1);

	/* A and AAAA are two queries: one pass may see the old table for one
	 * and the new for the other, so an intermediate set may come first */
	table_set("{\"svc.test\": {\"A\": [\"10.1.0.3\"], \"AAAA\": [\"fd00::3\"]}}");
	uint64_t t0 = now_ms();
	for (;;) {
		res = wait_set(r, WAIT_MS);
		assert_non_null(res);
		assert_int_equal(res->entries[0].status, RESOLVE_OK);
		if (addr_is(&res->entries[0], 0, "10.1.0.3") &&
		    addr_is(&res->entries[0], 1, "fd00::3") && res->entries[0].n_addrs == 2)
			break;
		resolve_result_free(res);
	}
	/* one interval plus a lookup; generous for sanitizer builds */
	assert_true(now_ms() - t0 < 20 * INTERVAL_MS);
	assert_true(res->generation >= 2);
	expect_addr(&res->entries[0].addrs[0], "10.1.0.3");
	expect_addr(&res->entries[0].addrs[1], "fd00::3");
	resolve_result_free(res);
	resolver_stop(r);
}

static void test_nxdomain_keeps_last_addresses(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	char logpath[160];
	snprintf(logpath, sizeof(logpath), "%s/log.txt", dns.dir);
	int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(logfd >= 0);
	int saved = dup(2);
	assert_true(saved >= 0);
	fflush(stderr);
	dup2(logfd, 2);
	close(logfd);
	log_setup(LOG_INFO, LOG_TEXT);

	/* IPv4 only: the AAAA query gives no address before or after a table
	 * change, so no pass can mix old and new answers (see above) */
	table_set("{\"db.test\": {\"A\": [\"10.2.0.2\", \"10.2.0.1\"]},"
	          " \"web.test\": {\"A\": [\"10.3.0.1\"]}}");
	const char *names[] = {"db.test", "web.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 2, &calls, dns.server);
	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	resolve_result_free(res);

	/* db.test disappears: kept addresses, failed status, one new set */
	table_set("{\"web.test\": {\"A\": [\"10.3.0.1\"]}}");
	res = wait_set(r, WAIT_MS);
	assert_non_null(res);
	const struct resolve_entry *db = resolve_result_find(res, "db.test");
	assert_int_equal(db->status, RESOLVE_FAILED);
	assert_non_null(strstr(db->error, "not found"));
	assert_int_equal(db->n_addrs, 2);
	expect_addr(&db->addrs[0], "10.2.0.1");
	expect_addr(&db->addrs[1], "10.2.0.2");
	const struct resolve_entry *web = resolve_result_find(res, "web.test");
	assert_int_equal(web->status, RESOLVE_OK);
	expect_addr(&web->addrs[0], "10.3.0.1");
	/* still usable: every name has an address */
	assert_int_equal(resolve_result_check(res, err, sizeof(err)), 0);
	resolve_result_free(res);

	/* failing again and again is no change */
	sleep_ms(4 * INTERVAL_MS);
	assert_int_equal(resolver_take(r, &res), 0);

	/* it comes back with another address */
	table_set("{\"db.test\": {\"A\": [\"10.2.0.9\"]}, \"web.test\": {\"A\": [\"10.3.0.1\"]}}");
	res = wait_set(r, WAIT_MS);
	assert_non_null(res);
	db = resolve_result_find(res, "db.test");
	assert_int_equal(db->status, RESOLVE_OK);
	assert_string_equal(db->error, "");
	assert_int_equal(db->n_addrs, 1);
	expect_addr(&db->addrs[0], "10.2.0.9");
	resolve_result_free(res);
	resolver_stop(r);

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	log_setup(LOG_WARN, LOG_TEXT);
	assert_int_equal(count_lines(logpath, "event=resolve_failed"), 1);
	assert_int_equal(
	    count_lines(logpath, "host=db.test error=\"Domain name not found\" kept=2"), 1);
	assert_int_equal(count_lines(logpath, "event=resolve_recovered host=db.test"), 1);
	assert_int_equal(count_lines(logpath, "addresses=10.2.0.9"), 1);
	assert_int_equal(count_lines(logpath, "web.test"), 0);
	assert_int_equal(count_lines(logpath, " warn "), 1);
	unlink(logpath);
}

/* true when /etc/hosts maps localhost to ::1 */
static bool hosts_has_v6_localhost(void)
{
	char line[512];
	bool found = false;
	FILE *f = fopen("/etc/hosts", "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *save = NULL, *addr = strtok_r(line, " \t\r\n", &save);
		if (!addr || addr[0] == '#' || strcmp(addr, "::1") != 0)
			continue;
		for (char *w; (w = strtok_r(NULL, " \t\r\n", &save)) && w[0] != '#';)
			if (strcmp(w, "localhost") == 0)
				found = true;
	}
	fclose(f);
	return found;
}

static void test_localhost_from_hosts_file(void **state)
{
	(void)state;
	const char *names[] = {"localhost"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 1, &calls, NULL);

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	const struct resolve_entry *e = &res->entries[0];
	assert_int_equal(e->status, RESOLVE_OK);
	assert_true(e->n_addrs >= 1);
	expect_addr(&e->addrs[0], "127.0.0.1");
	bool v6 = false;
	for (size_t i = 1; i < e->n_addrs; i++)
		if (e->addrs[i].ss_family == AF_INET6) {
			expect_addr(&e->addrs[i], "::1");
			v6 = true;
		}
	assert_int_equal(v6, hosts_has_v6_localhost());
	resolve_result_free(res);
	resolver_stop(r);
}

static void test_startup_error_names_host(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"ok.test\": {\"A\": [\"10.4.0.1\"]}}");
	const char *names[] = {"ok.test", "nope.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = (void *)1;
	struct resolver *r = start(names, 2, &calls, dns.server);

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), -ENOENT);
	assert_null(res);
	assert_string_equal(err, "host 'nope.test' does not resolve: Domain name not found");
	resolver_stop(r);
}

static void test_startup_timeout_is_bounded(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"silent.test\": {\"drop\": true}}");
	const char *names[] = {"silent.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	uint64_t t0 = now_ms();
	struct resolver *r = start(names, 1, &calls, dns.server); /* 300 ms, 1 try */

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), -ENOENT);
	assert_true(now_ms() - t0 < 5000);
	assert_non_null(strstr(err, "host 'silent.test' does not resolve: "));
	assert_non_null(strstr(err, "Timeout"));
	resolver_stop(r);
}

static void test_servfail_is_a_failure(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"broken.test\": {\"rcode\": 2}, \"empty.test\": {}}");
	const char *names[] = {"broken.test", "empty.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 2, &calls, dns.server);

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "broken.test"));
	resolver_stop(r);
	(void)res;
}

static void test_address_cap(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	/* 100 A records (10.5.0.99 down to 10.5.0.0) and one AAAA: 1.7 KB, over
	 * UDP's 512 bytes, so c-ares retries over TCP */
	char json[4096];
	size_t used = (size_t)snprintf(json, sizeof(json), "{\"big.test\": {\"A\": [");
	for (int i = 99; i >= 0; i--)
		used += (size_t)snprintf(json + used, sizeof(json) - used, "%s\"10.5.0.%d\"",
		                         i == 99 ? "" : ", ", i);
	snprintf(json + used, sizeof(json) - used, "], \"AAAA\": [\"fd00::5\"]}}");
	table_set(json);
	const char *names[] = {"big.test"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 1, &calls, dns.server);

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	const struct resolve_entry *e = &res->entries[0];
	assert_int_equal(e->status, RESOLVE_OK);
	assert_true(e->truncated);
	assert_int_equal(e->n_addrs, RESOLVE_MAX_ADDRS);
	for (int i = 0; i < RESOLVE_MAX_ADDRS; i++) {
		char want[32];
		snprintf(want, sizeof(want), "10.5.0.%d", i);
		expect_addr(&e->addrs[i], want);
	}
	resolve_result_free(res);
	resolver_stop(r);
}

static void test_stop_does_not_wait_for_dns(void **state)
{
	(void)state;
	if (!need_dns())
		skip();
	table_set("{\"silent.test\": {\"drop\": true}}");
	const char *names[] = {"silent.test"};
	int calls = 0;
	char err[256] = "";
	struct resolver_opts o = {
	    .names = names,
	    .n_names = 1,
	    .interval_ms = 1000,
	    .server = dns.server,
	    .timeout_ms = 2000,
	    .tries = 3,
	    .notify = notify_cb,
	    .notify_arg = &calls,
	};
	struct resolver *r = resolver_start(&o, err, sizeof(err));
	assert_non_null(r);
	sleep_ms(100);
	uint64_t t0 = now_ms();
	resolver_stop(r);
	assert_true(now_ms() - t0 < 1000);
	assert_int_equal(__atomic_load_n(&calls, __ATOMIC_SEQ_CST), 0);
}

static void test_address_literals_need_no_lookup(void **state)
{
	(void)state;
	/* no DNS server listens on the discard port: literals must not ask one */
	const char *names[] = {"2001:db8::9", "192.0.2.1", "192.0.2.1"};
	int calls = 0;
	char err[256] = "";
	struct resolve_result *res = NULL;
	struct resolver *r = start(names, 3, &calls, "127.0.0.1:9");

	assert_int_equal(resolver_wait(r, WAIT_MS, &res, err, sizeof(err)), 0);
	assert_int_equal(res->n, 2);
	assert_int_equal(res->entries[0].n_addrs, 1);
	expect_addr(&res->entries[0].addrs[0], "2001:db8::9");
	expect_addr(&resolve_result_find(res, "192.0.2.1")->addrs[0], "192.0.2.1");
	resolve_result_free(res);
	/* and they never change */
	sleep_ms(3 * INTERVAL_MS);
	assert_int_equal(resolver_take(r, &res), 0);
	resolver_stop(r);
}

static void test_bad_options(void **state)
{
	(void)state;
	char err[256];
	const char *one[] = {"a.test"};
	const char *empty[] = {"a.test", ""};
	const char *null_name[] = {NULL};
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	const char *toolong[] = {longname};
	struct resolver_opts o = {.names = one, .n_names = 1, .interval_ms = 1000};

	errno = 0;
	assert_null(resolver_start(NULL, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);

	o.n_names = 0;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_string_equal(err, "resolver: no host names");
	o.n_names = 1;

	o.interval_ms = 0;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	o.interval_ms = 1000;

	o.names = empty;
	o.n_names = 2;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_string_equal(err, "resolver: empty host name");
	o.names = null_name;
	o.n_names = 1;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);

	o.names = toolong;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(err, "too long"));

	o.names = one;
	o.n_names = RESOLVE_MAX_NAMES + 1;
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, E2BIG);
	o.n_names = 1;

	o.server = "dns.example:53";
	assert_null(resolver_start(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(err, "dns.example:53"));

	resolver_stop(NULL);
	resolve_result_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_options),
	    cmocka_unit_test(test_localhost_from_hosts_file),
	    cmocka_unit_test(test_address_literals_need_no_lookup),
	    cmocka_unit_test(test_several_a_and_aaaa),
	    cmocka_unit_test(test_reresolve_picks_up_change),
	    cmocka_unit_test(test_nxdomain_keeps_last_addresses),
	    cmocka_unit_test(test_startup_error_names_host),
	    cmocka_unit_test(test_startup_timeout_is_bounded),
	    cmocka_unit_test(test_servfail_is_a_failure),
	    cmocka_unit_test(test_address_cap),
	    cmocka_unit_test(test_stop_does_not_wait_for_dns),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
