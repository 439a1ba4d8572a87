/* parse.c - scalar parsers for the configuration file and the command line:
 * durations, sizes, percentages, socket addresses and CIDR blocks.
 *
 * Contract (see parse.h): every parser returns 0 or -EINVAL (parse_address
 * also -EHOSTUNREACH for a host name), writes its outputs only on success,
 * never allocates and never touches errno.  Inputs are whole strings: no
 * leading or trailing blanks, no signs, no fractions.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "config/parse.h"

#define MS_PER_YEAR    (365ULL * 24 * 3600 * 1000)
#define SIZE_MAX_BYTES (1ULL << 40)
/* More digits than this cannot be a valid value for any parser here, and
 * stopping early keeps the arithmetic far from overflow. */
#define MAX_DIGITS 15

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Reads a run of decimal digits at *s into *out and advances *s past it.
 * Returns -EINVAL when there is no digit or too many. */
static int read_digits(const char **s, uint64_t *out)
{
	const char *p = *s;
	uint64_t v = 0;
	int n = 0;

	while (is_digit(*p)) {
		if (++n > MAX_DIGITS)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
		p++;
	}
	if (n == 0)
		return -EINVAL;
	*s = p;
	*out = v;
	return 0;
}

int parse_duration_ms(const char *s, uint64_t *out_ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}};
	uint64_t v;

	if (!s || read_digits(&s, &v) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s, units[i].unit) != 0)
			continue;
		if (v > MS_PER_YEAR / units[i].ms)
			return -EINVAL;
		*out_ms = v * units[i].ms;
		return 0;
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *out_bytes)
{
	static const struct {
		const char *unit;
		uint64_t mul;
	} units[] = {{"", 1}, {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30}};
	uint64_t v;

	if (!s || read_digits(&s, &v) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s, units[i].unit) != 0)
			continue;
		if (v > SIZE_MAX_BYTES / units[i].mul)
			return -EINVAL;
		*out_bytes = v * units[i].mul;
		return 0;
	}
	return -EINVAL;
}

int parse_percent(const char *s, unsigned *out)
{
	uint64_t v;

	if (!s || read_digits(&s, &v) < 0)
		return -EINVAL;
	if (strcmp(s, "%") != 0 || v < 1 || v > 100)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* "1".."65535", digits only. */
static int parse_port(const char *s, uint16_t *out)
{
	uint64_t v;

	if (read_digits(&s, &v) < 0 || *s != '\0' || v < 1 || v > 65535)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* True when [s, s+len) is a syntactically valid DNS host name: labels of
 * letters, digits and '-' (not at either end), 1..63 bytes each, 253 in all,
 * an optional final dot, and a last label that is not all digits (so that
 * "1.2.3.256" is a bad address, not a name). */
static bool is_host_name(const char *s, size_t len)
{
	size_t label = 0;
	bool all_digits = true;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';

		if (c == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			if (i == len && all_digits)
				return false;
			label = 0;
			all_digits = true;
			continue;
		}
		if (c == '-' && label == 0)
			return false;
		if (!(is_digit(c) || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
		if (!is_digit(c))
			all_digits = false;
		label++;
	}
	return true;
}

int parse_address(const char *s, struct sockaddr_storage *out, socklen_t *out_len, bool *wildcard)
{
	char host[INET6_ADDRSTRLEN];
	const char *port_s;
	size_t host_len;
	bool v6;
	uint16_t port;

	if (!s || !out)
		return -EINVAL;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		host_len = (size_t)(end - s - 1);
		if (host_len == 0 || host_len >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, host_len);
		port_s = end + 2;
		v6 = true;
	} else {
		const char *colon = strrchr(s, ':');

		/* A bare IPv6 address must be bracketed: "::1:80" is ambiguous. */
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		host_len = (size_t)(colon - s);
		if (host_len >= sizeof(host))
			return is_host_name(s, host_len) ? -EHOSTUNREACH : -EINVAL;
		memcpy(host, s, host_len);
		port_s = colon + 1;
		v6 = false;
	}
	host[host_len] = '\0';
	if (parse_port(port_s, &port) < 0)
		return -EINVAL;

	struct sockaddr_storage ss;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (v6 || host_len == 0) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_any;
		if (host_len > 0 && inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return is_host_name(host, host_len) ? -EHOSTUNREACH : -EINVAL;
		len = sizeof(*sin);
	}
	*out = ss;
	if (out_len)
		*out_len = len;
	if (wildcard)
		*wildcard = host_len == 0;
	return 0;
}

int parse_cidr(const char *s, struct cidr *out)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash;
	size_t len;
	struct cidr c;
	unsigned max;

	if (!s || !out)
		return -EINVAL;
	slash = strchr(s, '/');
	len = slash ? (size_t)(slash - s) : strlen(s);
	if (len == 0 || len >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, len);
	addr[len] = '\0';

	memset(&c, 0, sizeof(c));
	if (memchr(addr, ':', len)) {
		c.family = AF_INET6;
		max = 128;
	} else {
		c.family = AF_INET;
		max = 32;
	}
	if (inet_pton(c.family, addr, c.addr) != 1)
		return -EINVAL;
	c.prefix = (uint8_t)max;
	if (slash) {
		const char *p = slash + 1;
		uint64_t v;

		if (read_digits(&p, &v) < 0 || *p != '\0' || v > max)
			return -EINVAL;
		c.prefix = (uint8_t)v;
	}
	/* Keep only the network part, as nginx does with "10.0.0.1/8". */
	for (unsigned bit = c.prefix; bit < max; bit++)
		c.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	*out = c;
	return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	uint8_t v4[4], v6[16];
	bool have_v4 = false, have_v6 = false;

	if (!c || !sa)
		return false;
	if (sa->sa_family == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		have_v4 = true;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(v6, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		have_v6 = true;
		if (memcmp(v6, v4_mapped, sizeof(v4_mapped)) == 0) {
			memcpy(v4, v6 + 12, 4);
			have_v4 = true;
		}
	} else {
		return false;
	}
	if (c->family == AF_INET)
		return have_v4 && prefix_equal(c->addr, v4, c->prefix);
	if (c->family != AF_INET6)
		return false;
	if (!have_v6) {
		/* An IPv4 client still matches "::ffff:10.0.0.0/104". */
		memcpy(v6, v4_mapped, sizeof(v4_mapped));
		memcpy(v6 + 12, v4, 4);
	}
	return prefix_equal(c->addr, v6, c->prefix);
}

char *addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (len == 0)
		return buf;
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "unknown");
	}
	return buf;
}
