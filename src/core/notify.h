/* notify.h - the systemd readiness protocol (sd_notify) without libsystemd.
 *
 * Under a unit with Type=notify, systemd puts the address of a datagram
 * socket in $NOTIFY_SOCKET and waits for "READY=1" before it calls the
 * service started.  The protocol is one AF_UNIX datagram of newline-separated
 * VAR=value lines, so linking libsystemd (and its dependencies) for it would
 * cost more than the 100 lines it takes.
 *
 * The calls ferry makes (see sd_notify(3)):
 *
 *   notify_send("READY=1")         every listener is bound (also after a reload)
 *   notify_reloading()             SIGHUP received, reload starting; send READY=1
 *                                  again when it is over, whether it worked or not
 *   notify_send("STOPPING=1")      graceful shutdown started
 *   notify_sendf("STATUS=%s", ..)  one line shown by `systemctl status`
 *
 * Every function sends at most one datagram and never blocks: the socket is
 * non-blocking, so a systemd that does not read gives -EAGAIN instead of a
 * stuck event loop.  They keep no state (a new socket per call) and are safe
 * from any thread; they do not change errno.  Each returns 0 when the message
 * was sent or $NOTIFY_SOCKET is not set (not under systemd), else -errno.
 * Readiness is advisory, so callers usually log a failure and go on.
 */
#ifndef FERRY_CORE_NOTIFY_H
#define FERRY_CORE_NOTIFY_H

/* Longest message notify_sendf() and notify_reloading() build. */
#define NOTIFY_MSG_MAX 4096

/* Sends `state` (e.g. "READY=1", "STATUS=serving\nREADY=1") as is.
 * -EINVAL for a NULL or empty state, -EAFNOSUPPORT when $NOTIFY_SOCKET is
 * neither an absolute path nor an abstract name starting with '@',
 * -ENAMETOOLONG when it does not fit a sockaddr_un, else the error of
 * socket(2) or sendto(2) (-ENOENT: no such socket, -EAGAIN: queue full). */
int notify_send(const char *state);

/* printf-style notify_send(); -EMSGSIZE when the text exceeds NOTIFY_MSG_MAX. */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sends "RELOADING=1\nMONOTONIC_USEC=<now>": the time stamp lets systemd's
 * Type=notify-reload (v253+) tell this reload from an older one, and plain
 * Type=notify ignores it. */
int notify_reloading(void);

#endif
