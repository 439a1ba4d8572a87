/* notify.c - sd_notify(3) without libsystemd; see notify.h.
 *
 * A socket per call rather than one kept open: the messages are a handful
 * per process lifetime (ready, reloading, stopping), and a socket that lives
 * only inside the call needs no lock, cannot leak into a child (CLOEXEC even
 * while it exists) and keeps working if systemd re-creates its socket.
 */
#include "core/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Fills *sun from $NOTIFY_SOCKET's value `e`: "/path" or "@abstract" (the
 * '@' stands for the leading NUL of Linux's abstract namespace, and the
 * name's length is part of the address, so no trailing NUL is counted). */
static int notify_addr(const char *e, struct sockaddr_un *sun, socklen_t *len)
{
	size_t n = strlen(e);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (e[0] == '/') {
		if (n >= sizeof(sun->sun_path))
			return -ENAMETOOLONG;
		memcpy(sun->sun_path, e, n + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		return 0;
	}
	if (e[0] == '@') {
		if (n < 2)
			return -EINVAL; /* "@" alone names nothing */
		if (n > sizeof(sun->sun_path))
			return -ENAMETOOLONG;
		sun->sun_path[0] = '\0';
		memcpy(sun->sun_path + 1, e + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	/* Relative paths, and systemd's newer "vsock:CID:PORT" addresses,
	 * which a relay on the host never gets. */
	return -EAFNOSUPPORT;
}

int notify_send(const char *state)
{
	int saved_errno = errno;
	struct sockaddr_un sun;
	socklen_t len;
	const char *e;
	int fd, rc;

	if (!state || !state[0])
		return -EINVAL;
	/* getenv is safe against other getenv callers; ferry never calls
	 * setenv once threads run.  An empty value is "not under systemd". */
	e = getenv("NOTIFY_SOCKET");
	if (!e || !e[0])
		return 0;
	rc = notify_addr(e, &sun, &len);
	if (rc < 0)
		return rc;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1) {
		rc = -errno;
		goto out;
	}
	/* One datagram: all of it is sent or none (no short write to handle). */
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) == -1)
		rc = -errno;
	close(fd);
out:
	errno = saved_errno;
	return rc;
}

int notify_sendf(const char *fmt, ...)
{
	int saved_errno = errno;
	char msg[NOTIFY_MSG_MAX + 1];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0) {
		errno = saved_errno;
		return -EINVAL;
	}
	if ((size_t)n >= sizeof(msg))
		return -EMSGSIZE; /* a cut message could say something else */
	return notify_send(msg);
}

int notify_reloading(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC is systemd's clock for MONOTONIC_USEC; it cannot
	 * fail with a valid clock id and pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return notify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu",
	                    (unsigned long long)ts.tv_sec * 1000000ULL +
	                        (unsigned long long)ts.tv_nsec / 1000ULL);
}
