/* parse.h - scalar parsers shared by the configuration loader and the
 * command line: durations, sizes, socket addresses and CIDR blocks.
 *
 * Every parser returns 0 on success and -EINVAL on malformed input and never
 * touches errno.  None of them allocates.
 */
#ifndef FERRY_CONFIG_PARSE_H
#define FERRY_CONFIG_PARSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* "250ms", "2s", "5m", "1h" (a unit is required; "0s" is zero).  Result in
 * milliseconds.  Values above one year are rejected. */
int parse_duration_ms(const char *s, uint64_t *out_ms);

/* "4096", "64KiB", "4MiB", "1GiB" (binary units only, KiB/MiB/GiB; a bare
 * number is bytes).  Values above 1 TiB are rejected. */
int parse_size(const char *s, uint64_t *out_bytes);

/* "host:port", "[v6addr]:port", ":port" (all interfaces, IPv6 wildcard that
 * also accepts IPv4 unless the kernel says otherwise; see listen code).
 * Only numeric hosts are accepted here: a name returns -EHOSTUNREACH so that
 * callers can say "host names are not supported yet".  Port must be 1..65535
 * `wildcard` is set when the host part was
 * empty. */
int parse_address(const char *s, struct sockaddr_storage *out, socklen_t *out_len,
                  bool *wildcard);

/* A CIDR block: "10.0.0.0/8", "::1/128", or a bare address (full length). */
struct cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint8_t prefix; /* 0..32 or 0..128 */
};
int parse_cidr(const char *s, struct cidr *out);

/* True when `sa` (AF_INET or AF_INET6; IPv4-mapped IPv6 is matched as IPv4)
 * lies inside `c`. */
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);

/* Formats an address as "1.2.3.4:80" or "[::1]:80" into buf (at least
 * ADDR_STRLEN bytes).  Returns buf. */
#define ADDR_STRLEN 64
char *addr_format(const struct sockaddr *sa, char *buf, size_t len);

/* "70%" or "100%": 1..100.  Used by mirrors' `sample`. */
int parse_percent(const char *s, unsigned *out);

#endif
