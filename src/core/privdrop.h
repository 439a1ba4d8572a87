/* privdrop.h - `user:` and `group:` (SPEC section 2) and
 * `--require-unprivileged` (section 1): who ferry runs as once its listening
 * sockets are bound.
 *
 * The order at start-up (main.c):
 *
 *   config loaded        config.c calls privdrop_resolve(): a user or group
 *                        that does not exist is a configuration error with
 *                        its FILE:LINE:COL, so `ferry -t` reports it
 *   privdrop_prepare()   before anything is bound: resolves again, refuses
 *                        root under --require-unprivileged, and refuses a
 *                        switch this process has no right to make
 *   ... every listener and the admin socket bound ...
 *   privdrop_apply()     setgroups, setgid, setuid, in that order, then
 *                        checks that they all took and cannot be undone
 *   "ready" logged
 *
 * The drop is process-wide: glibc applies set*id() to every thread (its
 * SIGSETXID broadcast, which no thread can block), so the admin endpoint's
 * and the resolver's threads, started earlier, change too.  Threads started
 * later inherit the new ids.
 *
 * Once dropped, ferry cannot get its privileges back: a reload (SIGHUP)
 * re-reads the file as the new user, binds new ports as that user (ports
 * below 1024 then fail, see privdrop_bind_hint()) and cannot change user or
 * group (privdrop_reload_check() warns).
 *
 * Everything here runs at start-up or on worker 0 during a reload; the
 * functions keep their state in statics and are not meant to be called from
 * several threads at once.  None changes errno as seen by the caller except
 * where noted.
 */
#ifndef FERRY_CORE_PRIVDROP_H
#define FERRY_CORE_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* What `user:` and `group:` resolve to. */
struct privdrop_ids {
	bool set_user;  /* user: given: uid is meaningful */
	bool set_group; /* a group to switch to (group:, or the user's primary) */
	uid_t uid;
	gid_t gid;
};

/* Looks `user` and `group` up in the user and group databases
 * (getpwnam_r / getgrnam_r, so NSS sources count).  A name that is not in
 * the database but is a number (0..4294967294) is taken as the id itself.
 * An empty `group` with a `user` means the user's primary group; a numeric
 * user without a database entry therefore needs `group`.  Both empty: no
 * change (*out all false).
 *
 * Returns 0, or -ENOENT (no such user or group), -EINVAL (an empty name
 * where one is needed) or another -errno from the lookup, with a message
 * without the key name in err (`no such user "x" in the user database`),
 * and *group_at_fault telling whether `group` (true) or `user` (false) is
 * the key to blame. */
int privdrop_resolve(const char *user, const char *group, struct privdrop_ids *out,
                     bool *group_at_fault, char *err, size_t len);

/* Start-up, before any socket is bound.  Resolves `user` and `group` (both
 * borrowed; copied) and remembers what privdrop_apply() will do, then fails
 * early, with a message in err, when
 *   - require_unprivileged is set and ferry would still run as uid 0 after
 *     the drop (no user given, or user root): -EPERM with
 *     "refusing to run as root (--require-unprivileged): set user: in the
 *     configuration";
 *   - the process may not switch to the user or group it was given
 *     (started as another, non-root user without CAP_SETUID/CAP_SETGID):
 *     -EPERM naming both users.
 * Returns 0 or -errno. */
int privdrop_prepare(const char *user, const char *group, bool require_unprivileged, char *err,
                     size_t len);

/* Start-up, after every listening socket (and the admin socket) is bound
 * and before ferry reports ready.  With a user: setgroups() to the one
 * group, setgid(), setuid(); with only a group: setgroups() and setgid().
 * Then verifies with getresuid()/getresgid()/getgroups() that the real,
 * effective and saved ids all changed and that setuid(0) now fails.  Logs
 * one info line (event=privileges) saying who ferry runs as.
 *
 * Returns 0 (also when there is nothing to do, or ferry already runs as the
 * user and group asked for), or -errno with a message naming the user or
 * group and the call that failed; the caller must treat that as fatal, as
 * the process may be half-switched. */
int privdrop_apply(char *err, size_t len);

/* Reload (worker 0): logs a warning (event=reload_warning) when the new
 * file's `user` or `group` differ from the ones ferry started with, which
 * only a restart can apply. */
void privdrop_reload_check(const char *user, const char *group);

/* A hint to append to a bind() error message: for EACCES on a port below
 * 1024, what it takes (root or CAP_NET_BIND_SERVICE), and, once privileges
 * were dropped, that only a restart can bind it.  "" otherwise.  The string
 * is static. */
const char *privdrop_bind_hint(int error, const struct sockaddr *sa);

#endif
