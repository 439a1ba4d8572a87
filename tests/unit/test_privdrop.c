/* test_privdrop.c - unit tests for src/core/privdrop.c: names and numeric
 * ids resolve as documented, with the key to blame and the exact message
 * for what does not exist; --require-unprivileged refuses root; the bind
 * hint; the reload warning.  The drop itself runs in forked children (it
 * cannot be undone), only when the tests run as root: every id of every
 * thread changes, including a thread started before the drop, the
 * supplementary groups are the one group, and root cannot be had back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "core/privdrop.h"

/* The ids of "nobody" (every Linux has it), or skip. */
static void nobody_ids(uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam("nobody");

	if (!pw)
		skip();
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
}

static void need_root(void)
{
	if (geteuid() != 0)
		skip();
}

static void test_resolve_names(void **state)
{
	struct privdrop_ids ids;
	bool at_group = true;
	char err[256] = "";
	uid_t nuid;
	gid_t ngid;

	(void)state;
	assert_int_equal(privdrop_resolve("root", "root", &ids, &at_group, err, sizeof(err)), 0);
	assert_true(ids.set_user && ids.set_group);
	assert_int_equal(ids.uid, 0);
	assert_int_equal(ids.gid, 0);
	assert_false(at_group);

	nobody_ids(&nuid, &ngid);
	/* No group: the user's primary group. */
	assert_int_equal(privdrop_resolve("nobody", "", &ids, &at_group, err, sizeof(err)), 0);
	assert_true(ids.set_user && ids.set_group);
	assert_int_equal(ids.uid, nuid);
	assert_int_equal(ids.gid, ngid);
	/* A number that names a user takes that user's primary group too. */
	char num[16];
	snprintf(num, sizeof(num), "%u", (unsigned)nuid);
	assert_int_equal(privdrop_resolve(num, NULL, &ids, &at_group, err, sizeof(err)), 0);
	assert_int_equal(ids.uid, nuid);
	assert_int_equal(ids.gid, ngid);
}

static void test_resolve_nothing_or_group_only(void **state)
{
	struct privdrop_ids ids;
	bool at_group;
	char err[256] = "";

	(void)state;
	assert_int_equal(privdrop_resolve("", "", &ids, &at_group, err, sizeof(err)), 0);
	assert_false(ids.set_user);
	assert_false(ids.set_group);
	assert_int_equal(privdrop_resolve(NULL, NULL, &ids, &at_group, err, sizeof(err)), 0);
	assert_false(ids.set_user || ids.set_group);

	assert_int_equal(privdrop_resolve("", "root", &ids, &at_group, err, sizeof(err)), 0);
	assert_false(ids.set_user);
	assert_true(ids.set_group);
	assert_int_equal(ids.gid, 0);
}

static void test_resolve_numeric_without_entry(void **state)
{
	struct privdrop_ids ids;
	bool at_group = true;
	char err[256] = "";

	(void)state;
	assert_int_equal(
	    privdrop_resolve("4000000001", "4000000002", &ids, &at_group, err, sizeof(err)), 0);
	assert_int_equal(ids.uid, 4000000001u);
	assert_int_equal(ids.gid, 4000000002u);

	/* Without a group there is no primary group to take. */
	assert_int_equal(privdrop_resolve("4000000001", "", &ids, &at_group, err, sizeof(err)),
	                 -ENOENT);
	assert_false(at_group);
	assert_string_equal(err, "\"4000000001\" is a numeric id without an entry in the user "
	                         "database, so it has no primary group: set group: as well");
}

static void test_resolve_unknown(void **state)
{
	struct privdrop_ids ids;
	bool at_group = true;
	char err[256] = "";

	(void)state;
	assert_int_equal(
	    privdrop_resolve("ferry-no-such-user", "root", &ids, &at_group, err, sizeof(err)),
	    -ENOENT);
	assert_false(at_group);
	assert_string_equal(err, "no such user \"ferry-no-such-user\" in the user database");

	assert_int_equal(
	    privdrop_resolve("root", "ferry-no-such-group", &ids, &at_group, err, sizeof(err)),
	    -ENOENT);
	assert_true(at_group);
	assert_string_equal(err, "no such group \"ferry-no-such-group\" in the group database");

	/* (uid_t)-1 is not an id; signs and spaces are not numbers. */
	const char *bad[] = {"4294967295", "-1", "+5", " 5", "5 ", "99999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(
		    privdrop_resolve(bad[i], "root", &ids, &at_group, err, sizeof(err)), -ENOENT);
		assert_false(at_group);
	}
}

static void test_errno_preserved(void **state)
{
	struct privdrop_ids ids;
	bool at_group;
	char err[256];

	(void)state;
	errno = 1234;
	privdrop_resolve("ferry-no-such-user", "", &ids, &at_group, err, sizeof(err));
	assert_int_equal(errno, 1234);
	privdrop_resolve("root", "ferry-no-such-group", &ids, &at_group, err, sizeof(err));
	assert_int_equal(errno, 1234);
}

static void test_require_unprivileged(void **state)
{
	char err[256] = "";
	uid_t nuid;
	gid_t ngid;

	(void)state;
	need_root();
	nobody_ids(&nuid, &ngid);
	assert_int_equal(privdrop_prepare("", "", true, err, sizeof(err)), -EPERM);
	assert_string_equal(err, "refusing to run as root (--require-unprivileged): set user: in "
	                         "the configuration");
	assert_int_equal(privdrop_prepare("root", "", true, err, sizeof(err)), -EPERM);
	assert_int_equal(privdrop_prepare("0", "root", true, err, sizeof(err)), -EPERM);
	/* A group alone leaves ferry root. */
	assert_int_equal(privdrop_prepare("", "root", true, err, sizeof(err)), -EPERM);
	assert_int_equal(privdrop_prepare("nobody", "", true, err, sizeof(err)), 0);
	assert_int_equal(privdrop_prepare("", "", false, err, sizeof(err)), 0);
}

static void test_bind_hint(void **state)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(80)};
	const struct sockaddr *sa = (const struct sockaddr *)&sin;

	(void)state;
	assert_string_equal(privdrop_bind_hint(EADDRINUSE, sa), "");
	assert_string_equal(privdrop_bind_hint(EACCES, NULL), "");
	/* Nothing dropped in this process. */
	assert_non_null(strstr(privdrop_bind_hint(EACCES, sa), "CAP_NET_BIND_SERVICE"));
}

/* Runs fn in a child and expects it to exit 0. */
static void in_child(int (*fn)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn());
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A thread started before the drop reports its ids after it. */
struct watcher {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go, done;
	uid_t r, e, s;
	gid_t gr, ge, gs;
};

static void *watcher_main(void *arg)
{
	struct watcher *w = arg;

	pthread_mutex_lock(&w->lock);
	while (!w->go)
		pthread_cond_wait(&w->cond, &w->lock);
	getresuid(&w->r, &w->e, &w->s);
	getresgid(&w->gr, &w->ge, &w->gs);
	w->done = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static int child_drop_to_nobody(void)
{
	struct watcher w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	struct passwd *pw = getpwnam("nobody");
	char err[512] = "";
	pthread_t t;

	if (!pw || pthread_create(&t, NULL, watcher_main, &w) != 0)
		return 10;
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (privdrop_prepare("nobody", "", true, err, sizeof(err)) < 0)
		return 11;
	if (privdrop_apply(err, sizeof(err)) < 0) {
		fprintf(stderr, "apply: %s\n", err);
		return 12;
	}
	uid_t r, e, s;
	gid_t gr, ge, gs, groups[4];
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	if (r != uid || e != uid || s != uid || gr != gid || ge != gid || gs != gid)
		return 13;
	if (getgroups(4, groups) != 1 || groups[0] != gid)
		return 14;
	if (setuid(0) != -1 || seteuid(0) != -1 || setgid(0) != -1)
		return 15;
	pthread_mutex_lock(&w.lock);
	w.go = true;
	pthread_cond_broadcast(&w.cond);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_join(t, NULL);
	if (w.r != uid || w.e != uid || w.s != uid || w.gr != gid || w.ge != gid || w.gs != gid)
		return 16;
	/* Once dropped, the bind hint says a restart is needed. */
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(80)};
	if (!strstr(privdrop_bind_hint(EACCES, (struct sockaddr *)&sin), "restart"))
		return 17;
	return 0;
}

static int child_group_only(void)
{
	char err[512] = "";
	struct group *gr = getgrnam("nogroup");

	if (!gr)
		gr = getgrnam("nobody");
	if (!gr)
		return 0; /* nothing to test with */
	gid_t gid = gr->gr_gid;
	char name[64];
	snprintf(name, sizeof(name), "%s", gr->gr_name);
	if (privdrop_prepare("", name, false, err, sizeof(err)) < 0 ||
	    privdrop_apply(err, sizeof(err)) < 0)
		return 11;
	uid_t r, e, s;
	gid_t g1, g2, g3, groups[4];
	getresuid(&r, &e, &s);
	getresgid(&g1, &g2, &g3);
	if (r != 0 || e != 0 || s != 0)
		return 12; /* only the group changes */
	if (g1 != gid || g2 != gid || g3 != gid)
		return 13;
	if (getgroups(4, groups) != 1 || groups[0] != gid)
		return 14;
	return 0;
}

/* Started as nobody, asked to become root's "daemon": refused before
 * anything is bound, with both ids in the message. */
static int child_not_root(void)
{
	char err[512] = "";
	struct passwd *pw = getpwnam("daemon");

	if (!pw)
		return 0;
	pw = getpwnam("nobody"); /* getpwnam's buffer is shared: this one last */
	if (!pw)
		return 0;
	if (setgroups(0, NULL) == -1 || setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1)
		return 10;
	if (privdrop_prepare("daemon", "", false, err, sizeof(err)) != -EPERM)
		return 11;
	if (!strstr(err, "cannot switch to user \"daemon\"") || !strstr(err, "not root"))
		return 12;
	/* The user it already is: nothing to do. */
	if (privdrop_prepare("nobody", "", true, err, sizeof(err)) < 0 ||
	    privdrop_apply(err, sizeof(err)) < 0)
		return 13;
	return 0;
}

static void test_drop_to_nobody(void **state)
{
	(void)state;
	need_root();
	uid_t u;
	gid_t g;
	nobody_ids(&u, &g);
	in_child(child_drop_to_nobody);
}

static void test_group_only(void **state)
{
	(void)state;
	need_root();
	in_child(child_group_only);
}

static void test_not_root_refused(void **state)
{
	(void)state;
	need_root(); /* to become nobody first */
	in_child(child_not_root);
}

/* The reload warning goes to stderr: catch it in a pipe. */
static void test_reload_check(void **state)
{
	char err[256] = "", buf[4096] = "";
	int p[2];

	(void)state;
	assert_int_equal(privdrop_prepare("root", "", false, err, sizeof(err)), 0);
	log_setup(LOG_INFO, LOG_TEXT);
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	privdrop_reload_check("root", "");
	privdrop_reload_check("root", NULL);
	ssize_t n1 = read(p[0], buf, sizeof(buf) - 1);
	privdrop_reload_check("nobody", "");
	ssize_t n2 = read(p[0], buf, sizeof(buf) - 1);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[0]);
	close(p[1]);
	assert_true(n1 < 0); /* same user: nothing logged */
	assert_true(n2 > 0);
	buf[n2] = '\0';
	assert_non_null(strstr(buf, "event=reload_warning"));
	assert_non_null(strstr(buf, "need a restart"));
	assert_non_null(strstr(buf, "\\\"nobody\\\""));
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resolve_names),
	    cmocka_unit_test(test_resolve_nothing_or_group_only),
	    cmocka_unit_test(test_resolve_numeric_without_entry),
	    cmocka_unit_test(test_resolve_unknown),
	    cmocka_unit_test(test_errno_preserved),
	    cmocka_unit_test(test_require_unprivileged),
	    cmocka_unit_test(test_bind_hint),
	    cmocka_unit_test(test_drop_to_nobody),
	    cmocka_unit_test(test_group_only),
	    cmocka_unit_test(test_not_root_refused),
	    cmocka_unit_test(test_reload_check),
	};
	return cmocka_run_group_tests_name("privdrop", tests, NULL, NULL);
}
