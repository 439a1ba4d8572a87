/* privdrop.c - dropping root after the listeners are bound; see privdrop.h.
 *
 * Why this order: setgroups() and setgid() need CAP_SETGID, which setuid()
 * to a non-root user takes away, so the groups go first and the user last.
 * setuid() by a process whose effective uid is 0 sets the real, effective
 * and saved uids together, which is what makes the drop permanent; the
 * checks after it make sure of that rather than trust it.
 *
 * Why glibc's setuid() and not the raw system call: Linux keeps credentials
 * per thread, and the admin endpoint's thread and the resolver's thread
 * exist by the time the listeners are bound.  glibc's set*id() wrappers run
 * the call on every thread of the process (SIGSETXID, which pthread_sigmask
 * cannot block), so no thread stays root.
 */
#include "core/privdrop.h"

#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* Largest buffer offered to getpwnam_r() and friends (a group with many
 * members can need more than sysconf's hint). */
#define PRIVDROP_BUF_MAX (1024u * 1024)
#define PRIVDROP_ID_MAX  4294967294UL /* (uid_t)-1 means "no change" */

#define CAP_BIT_SETGID 6
#define CAP_BIT_SETUID 7

/* What privdrop_prepare() decided and privdrop_apply() did. */
static struct {
	bool prepared;
	bool dropped; /* the uid changed away from root */
	struct privdrop_ids ids;
	char *user, *group; /* as given at start; "" when not */
	char hint[320];     /* privdrop_bind_hint() once dropped */
} st;

/* ------------------------------------------------------------------------
 * Looking names up
 */

static size_t first_buf_size(int which)
{
	long n = sysconf(which);
	return n > 0 && (unsigned long)n < PRIVDROP_BUF_MAX ? (size_t)n : 1024;
}

/* A user by name (by_id false) or by uid.  1 found (*uid, *gid set), 0 not
 * found, -errno when the database could not be read. */
static int get_pw(const char *name, bool by_id, uid_t id, uid_t *uid, gid_t *gid)
{
	size_t size = first_buf_size(_SC_GETPW_R_SIZE_MAX);

	for (;;) {
		struct passwd pw, *res = NULL;
		char *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		int r = by_id ? getpwuid_r(id, &pw, buf, size, &res)
		              : getpwnam_r(name, &pw, buf, size, &res);
		if (r == 0 && res) {
			*uid = pw.pw_uid;
			*gid = pw.pw_gid;
			free(buf);
			return 1;
		}
		free(buf);
		if (r == ERANGE && size < PRIVDROP_BUF_MAX) {
			size *= 2;
			continue;
		}
		/* getpwnam_r(3): these all mean "not there". */
		if (r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
			return 0;
		return -r;
	}
}

/* A group by name: 1 found, 0 not found, -errno. */
static int get_gr(const char *name, gid_t *gid)
{
	size_t size = first_buf_size(_SC_GETGR_R_SIZE_MAX);

	for (;;) {
		struct group gr, *res = NULL;
		char *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		int r = getgrnam_r(name, &gr, buf, size, &res);
		if (r == 0 && res) {
			*gid = gr.gr_gid;
			free(buf);
			return 1;
		}
		free(buf);
		if (r == ERANGE && size < PRIVDROP_BUF_MAX) {
			size *= 2;
			continue;
		}
		if (r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
			return 0;
		return -r;
	}
}

/* "1234" -> 1234; -1 for anything but plain decimal digits in range. */
static int parse_id(const char *s, unsigned long *out)
{
	unsigned long v = 0;

	if (!*s || strlen(s) > 10)
		return -1;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v > PRIVDROP_ID_MAX)
		return -1;
	*out = v;
	return 0;
}

static int lookup_user(const char *name, uid_t *uid, gid_t *gid, bool *has_gid, char *err,
                       size_t len)
{
	unsigned long id;
	int r = get_pw(name, false, 0, uid, gid);

	if (r == 1) {
		*has_gid = true;
		return 0;
	}
	if (r == 0 && parse_id(name, &id) == 0) {
		uid_t ignored;
		*uid = (uid_t)id;
		r = get_pw(NULL, true, (uid_t)id, &ignored, gid);
		if (r >= 0) {
			*has_gid = r == 1;
			return 0;
		}
	}
	if (r < 0) {
		snprintf(err, len, "cannot look up user \"%s\": %s", name, strerror(-r));
		return r;
	}
	snprintf(err, len, "no such user \"%s\" in the user database", name);
	return -ENOENT;
}

static int lookup_group(const char *name, gid_t *gid, char *err, size_t len)
{
	unsigned long id;
	int r = get_gr(name, gid);

	if (r == 1)
		return 0;
	if (r < 0) {
		snprintf(err, len, "cannot look up group \"%s\": %s", name, strerror(-r));
		return r;
	}
	if (parse_id(name, &id) == 0) {
		*gid = (gid_t)id;
		return 0;
	}
	snprintf(err, len, "no such group \"%s\" in the group database", name);
	return -ENOENT;
}

int privdrop_resolve(const char *user, const char *group, struct privdrop_ids *out,
                     bool *group_at_fault, char *err, size_t len)
{
	int saved_errno = errno;
	bool has_primary = false;
	gid_t primary = 0;
	int r = 0;

	memset(out, 0, sizeof(*out));
	*group_at_fault = false;
	user = user ? user : "";
	group = group ? group : "";
	if (user[0]) {
		r = lookup_user(user, &out->uid, &primary, &has_primary, err, len);
		if (r < 0)
			goto out;
		out->set_user = true;
	}
	if (group[0]) {
		r = lookup_group(group, &out->gid, err, len);
		if (r < 0) {
			*group_at_fault = true;
			goto out;
		}
		out->set_group = true;
	} else if (user[0]) {
		if (!has_primary) {
			snprintf(err, len,
			         "\"%s\" is a numeric id without an entry in the user database, so "
			         "it has no primary group: set group: as well",
			         user);
			r = -ENOENT;
			goto out;
		}
		out->gid = primary;
		out->set_group = true;
	}
out:
	errno = saved_errno;
	return r;
}

/* ------------------------------------------------------------------------
 * Start-up
 */

/* The effective capability set from /proc/self/status; false when it
 * cannot be read. */
static bool read_cap_eff(unsigned long long *caps)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "CapEff: %llx", caps) == 1;
	fclose(f);
	return found;
}

/* Whether this process may make the switch it was asked for: root, or
 * CAP_SETGID (and CAP_SETUID for a user) as a file or ambient capability. */
static bool may_switch(bool set_user)
{
	unsigned long long caps;

	if (geteuid() == 0)
		return true;
	if (!read_cap_eff(&caps))
		return false;
	if (!(caps & (1ull << CAP_BIT_SETGID)))
		return false;
	return !set_user || (caps & (1ull << CAP_BIT_SETUID));
}

static bool all_uids(uid_t want)
{
	uid_t r, e, s;
	return getresuid(&r, &e, &s) == 0 && r == want && e == want && s == want;
}

static bool all_gids(gid_t want)
{
	gid_t r, e, s;
	return getresgid(&r, &e, &s) == 0 && r == want && e == want && s == want;
}

/* `user "nobody" (uid 65534) and group "nogroup" (gid 65534)`, or the
 * user's primary group when no group was given. */
static void describe_target(char *buf, size_t len)
{
	int n = 0;

	if (st.ids.set_user)
		n = snprintf(buf, len, "user \"%s\" (uid %u) and ", st.user, (unsigned)st.ids.uid);
	if (n < 0 || (size_t)n >= len)
		return;
	if (st.group[0])
		snprintf(buf + n, len - (size_t)n, "group \"%s\" (gid %u)", st.group,
		         (unsigned)st.ids.gid);
	else
		snprintf(buf + n, len - (size_t)n, "its primary group (gid %u)",
		         (unsigned)st.ids.gid);
}

int privdrop_prepare(const char *user, const char *group, bool require_unprivileged, char *err,
                     size_t len)
{
	int saved_errno = errno;
	char msg[512], who[320];
	bool at_group;
	int r;

	user = user ? user : "";
	group = group ? group : "";
	free(st.user);
	free(st.group);
	memset(&st, 0, sizeof(st));
	st.user = strdup(user);
	st.group = strdup(group);
	if (!st.user || !st.group) {
		snprintf(err, len, "out of memory");
		r = -ENOMEM;
		goto out;
	}
	r = privdrop_resolve(user, group, &st.ids, &at_group, msg, sizeof(msg));
	if (r < 0) {
		snprintf(err, len, "%s: %s", at_group ? "group" : "user", msg);
		goto out;
	}
	uid_t ru, eu, su;
	if (getresuid(&ru, &eu, &su) == -1) {
		r = -errno;
		snprintf(err, len, "getresuid: %s", strerror(-r));
		goto out;
	}
	bool root_after = st.ids.set_user ? st.ids.uid == 0 : (ru == 0 || eu == 0 || su == 0);
	if (require_unprivileged && root_after) {
		snprintf(err, len,
		         "refusing to run as root (--require-unprivileged): set user: in the "
		         "configuration");
		r = -EPERM;
		goto out;
	}
	bool needed = (st.ids.set_user && !all_uids(st.ids.uid)) ||
	              (st.ids.set_group && !all_gids(st.ids.gid));
	if (needed && !may_switch(st.ids.set_user)) {
		describe_target(who, sizeof(who));
		snprintf(err, len,
		         "cannot switch to %s: ferry was started as uid %u, not root, and only "
		         "root can change its user and group (start ferry as root, or leave "
		         "user: and group: empty)",
		         who, (unsigned)eu);
		r = -EPERM;
		goto out;
	}
	st.prepared = true;
out:
	errno = saved_errno;
	return r;
}

/* After the switch: every id is the new one, the supplementary groups are
 * the one group, and root cannot be had back.  0 or -EPERM with the reason
 * in err. */
static int verify(const char *who, char *err, size_t len)
{
	gid_t groups[2];

	if (st.ids.set_user && !all_uids(st.ids.uid)) {
		snprintf(err, len,
		         "dropped privileges to %s, but the real, effective and saved user ids "
		         "are not all %u",
		         who, (unsigned)st.ids.uid);
		return -EPERM;
	}
	if (!all_gids(st.ids.gid)) {
		snprintf(err, len,
		         "dropped privileges to %s, but the real, effective and saved group ids "
		         "are not all %u",
		         who, (unsigned)st.ids.gid);
		return -EPERM;
	}
	int n = getgroups(2, groups);
	if (n != 1 || groups[0] != st.ids.gid) {
		snprintf(err, len,
		         "dropped privileges to %s, but the supplementary groups are not just "
		         "gid %u",
		         who, (unsigned)st.ids.gid);
		return -EPERM;
	}
	if (st.ids.set_user && st.ids.uid != 0 && setuid(0) != -1) {
		snprintf(err, len, "dropped privileges to %s, but setuid(0) still succeeds", who);
		return -EPERM;
	}
	if (st.ids.set_user && st.ids.uid != 0 && st.ids.gid != 0 && setgid(0) != -1) {
		snprintf(err, len, "dropped privileges to %s, but setgid(0) still succeeds", who);
		return -EPERM;
	}
	return 0;
}

int privdrop_apply(char *err, size_t len)
{
	int saved_errno = errno;
	char who[320];
	const char *step = NULL;
	uid_t before = geteuid();
	int r = 0;

	if (!st.prepared || (!st.ids.set_user && !st.ids.set_group))
		goto out;
	describe_target(who, sizeof(who));
	if ((!st.ids.set_user || all_uids(st.ids.uid)) && all_gids(st.ids.gid)) {
		/* Started as that user already (e.g. by systemd's User=). */
		log_msg(LOG_INFO, "privileges", "already running as %s", who);
		goto out;
	}
	step = "setgroups";
	if (setgroups(1, &st.ids.gid) == -1)
		goto fail;
	step = "setgid";
	if (setgid(st.ids.gid) == -1)
		goto fail;
	step = "setuid";
	if (st.ids.set_user && setuid(st.ids.uid) == -1)
		goto fail;
	r = verify(who, err, len);
	if (r < 0)
		goto out;
	st.dropped = before == 0 && geteuid() != 0;
	if (st.dropped)
		snprintf(st.hint, sizeof(st.hint),
		         " (ferry switched to user \"%s\" after start-up; binding a privileged "
		         "port, below 1024 by default, needs a restart of ferry)",
		         st.user);

	struct logline l;
	log_begin(&l, LOG_INFO, "privileges");
	if (st.ids.set_user) {
		log_str(&l, "user", st.user);
		log_u64(&l, "uid", st.ids.uid);
	}
	if (st.group[0])
		log_str(&l, "group", st.group);
	log_u64(&l, "gid", st.ids.gid);
	log_str(&l, "msg", st.ids.set_user ? "dropped privileges" : "changed group");
	log_end(&l);
	goto out;
fail:
	r = -errno;
	snprintf(err, len, "cannot drop privileges to %s: %s: %s%s", who, step, strerror(-r),
	         r == -EPERM && geteuid() != 0 ? " (ferry does not run as root)" : "");
out:
	errno = saved_errno;
	return r;
}

/* ------------------------------------------------------------------------
 * After start-up
 */

void privdrop_reload_check(const char *user, const char *group)
{
	user = user ? user : "";
	group = group ? group : "";
	if (!st.user || !st.group)
		return; /* never prepared */
	if (strcmp(user, st.user) == 0 && strcmp(group, st.group) == 0)
		return;
	log_msg(LOG_WARN, "reload_warning",
	        "user and group need a restart; keeping user \"%s\" and group \"%s\" (the file "
	        "now says \"%s\" and \"%s\")",
	        st.user, st.group, user, group);
}

const char *privdrop_bind_hint(int error, const struct sockaddr *sa)
{
	if (error != EACCES || !sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
		return "";
	if (st.dropped)
		return st.hint;
	return " (a privileged port, below 1024 by default, needs root or "
	       "CAP_NET_BIND_SERVICE)";
}
