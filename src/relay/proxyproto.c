/* proxyproto.c - the PROXY protocol v1 and v2 (HAProxy's "The PROXY protocol
 * Versions 1 & 2"); see proxyproto.h for the contract.
 *
 * The parser keeps no state between calls: it re-reads the buffer from its
 * first byte every time.  A header is at most PP_MAX_HEADER bytes, so this
 * costs little, and the caller needs no per-connection parser object; it
 * only calls again with the longer buffer after each read.
 *
 * The parser is strict because a PROXY header is a claim about who the
 * client is: what does not exactly match the specification is refused, and
 * as early as possible (a prefix that can no longer become a valid header is
 * an error at once), so that a client that is not a PROXY sender is told at
 * once instead of after the header timeout.  Choices where the
 * specification leaves room:
 *
 *  - v1: numbers (IPv4 octets, ports) without leading zeros, as the
 *    specification demands; after "UNKNOWN" comes CRLF or a space and any
 *    bytes up to the first CRLF, but never a lone CR or LF (the line must end
 *    with CRLF and nothing else).
 *  - v2 LOCAL: the family byte is ignored and the address block skipped, as
 *    the specification says for LOCAL.
 *  - v2 PROXY: AF_INET/AF_INET6 over STREAM give addresses.  AF_UNSPEC or
 *    protocol UNSPEC, and AF_UNIX over STREAM (an upstream proxy listening
 *    on a UNIX socket), are accepted without addresses: the connection's own
 *    addresses stand.  DGRAM is refused (ferry relays TCP streams only), and
 *    so are the family and protocol values the specification leaves
 *    unassigned.  An address block shorter than its family needs (12, 36,
 *    216 bytes) is refused; bytes after it (TLVs) are skipped unread.
 */
#include "relay/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6
 * addresses and ports). */
#define PP_V1_MAX 107

/* The fixed part of a v2 header: signature, version/command, family, length. */
#define PP_V2_FIXED 16

#define PP_V2_CMD_LOCAL 0x0
#define PP_V2_CMD_PROXY 0x1

#define PP_V2_AF_UNSPEC 0x0
#define PP_V2_AF_INET   0x1
#define PP_V2_AF_INET6  0x2
#define PP_V2_AF_UNIX   0x3

#define PP_V2_PROTO_UNSPEC 0x0
#define PP_V2_PROTO_STREAM 0x1
#define PP_V2_PROTO_DGRAM  0x2

/* Address block sizes: two addresses, then two ports (none for UNIX). */
#define PP_V2_LEN_INET  (2 * 4 + 2 * 2)
#define PP_V2_LEN_INET6 (2 * 16 + 2 * 2)
#define PP_V2_LEN_UNIX  (2 * 108)

static const uint8_t pp_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* The result of one parsing step: the step's part is complete and valid, the
 * bytes so far are a valid prefix of it, or they can never become valid. */
enum pp_step {
	PP_STEP_BAD = -1,
	PP_STEP_MORE = 0,
	PP_STEP_OK = 1,
};

/* --- address fields as text ------------------------------------------------- */

static bool pp_is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool pp_is_hex(uint8_t c)
{
	return pp_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* True when s[0..n) can still grow into a dotted-quad IPv4 address: octets of
 * one to three digits, none above 255, no leading zero, at most three dots.
 * inet_pton() has the last word on a complete address; this only has to say
 * early that no completion exists. */
static bool pp_ipv4_prefix_ok(const uint8_t *s, size_t n)
{
	unsigned dots = 0, digits = 0, val = 0;

	for (size_t i = 0; i < n; i++) {
		if (pp_is_digit(s[i])) {
			if (digits == 1 && val == 0)
				return false;
			val = val * 10 + (unsigned)(s[i] - '0');
			if (++digits > 3 || val > 255)
				return false;
		} else if (s[i] == '.') {
			if (digits == 0 || ++dots > 3)
				return false;
			digits = 0;
			val = 0;
		} else {
			return false;
		}
	}
	return true;
}

/* True when s[0..n) can still grow into a textual IPv6 address as
 * inet_pton() takes it: groups of one to four hex digits separated by one
 * colon, at most one "::" standing for one or more zero groups, eight groups
 * in all, the last two of which may be written as a dotted quad.  `groups`
 * counts the groups finished by a colon; a group in progress needs one more
 * slot, a dotted quad two. */
static bool pp_ipv6_prefix_ok(const uint8_t *s, size_t n)
{
	unsigned groups = 0, digits = 0, colons = 0, max;
	bool dcolon = false;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c == '.') {
			/* The group in progress was the first octet of a trailing
			 * dotted quad, which fills the last two slots. */
			if (digits == 0)
				return false;
			if (dcolon ? groups + 2 > 7 : groups != 6)
				return false;
			return pp_ipv4_prefix_ok(s + i - digits, n - (i - digits));
		}
		if (pp_is_hex(c)) {
			if (colons == 1 && groups == 0)
				return false; /* a lone leading colon */
			if (++digits > 4)
				return false;
			colons = 0;
		} else if (c == ':') {
			if (digits > 0) {
				groups++;
				digits = 0;
				colons = 1;
			} else if (colons == 1 && !dcolon) {
				dcolon = true;
				colons = 2;
			} else if (colons == 0 && groups == 0) {
				colons = 1; /* the first colon of a leading "::" */
			} else {
				return false; /* ":::" or a second "::" */
			}
		} else {
			return false;
		}
		max = dcolon ? 7 : 8;
		if (groups + (digits > 0) > max)
			return false;
		/* After a single colon another group (or the second colon of
		 * "::", which takes a slot too) must still fit. */
		if (colons == 1 && groups + 1 > max)
			return false;
	}
	return true;
}

/* True when s[0..n) can still grow into a port: decimal digits, no leading
 * zero, at most 65535. */
static bool pp_port_prefix_ok(const uint8_t *s, size_t n)
{
	unsigned long val = 0;

	if (n > 5)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!pp_is_digit(s[i]) || (i == 1 && s[0] == '0'))
			return false;
		val = val * 10 + (unsigned long)(s[i] - '0');
	}
	return val <= 65535;
}

/* --- v1 ------------------------------------------------------------------------- */

/* Matches the literal `lit` at *pos of buf[0..n); advances *pos past it. */
static enum pp_step pp_v1_literal(const uint8_t *buf, size_t n, size_t *pos, const char *lit)
{
	size_t want = strlen(lit), have = n - *pos;
	size_t k = have < want ? have : want;

	if (memcmp(buf + *pos, lit, k) != 0)
		return PP_STEP_BAD;
	if (k < want)
		return PP_STEP_MORE;
	*pos += want;
	return PP_STEP_OK;
}

/* Reads one field ending with `term` at *pos: its bytes so far must pass
 * `prefix_ok` and number at most `max`.  On PP_STEP_OK, *start and *flen give
 * the field (not empty) and *pos is past the terminator. */
static enum pp_step pp_v1_field(const uint8_t *buf, size_t n, size_t *pos, uint8_t term,
                                bool (*prefix_ok)(const uint8_t *, size_t), size_t max,
                                size_t *start, size_t *flen)
{
	size_t i = *pos;

	while (i < n && buf[i] != term && i - *pos <= max)
		i++;
	if (i - *pos > max || !prefix_ok(buf + *pos, i - *pos))
		return PP_STEP_BAD;
	if (i == n)
		return PP_STEP_MORE;
	if (i == *pos)
		return PP_STEP_BAD;
	*start = *pos;
	*flen = i - *pos;
	*pos = i + 1;
	return PP_STEP_OK;
}

/* Converts a complete address field into `ss` with port 0. */
static bool pp_v1_addr(int family, const uint8_t *s, size_t n, struct sockaddr_storage *ss,
                       socklen_t *sslen)
{
	char text[INET6_ADDRSTRLEN];

	if (n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		*sslen = sizeof(*sin);
		return inet_pton(AF_INET, text, &sin->sin_addr) == 1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	*sslen = sizeof(*sin6);
	return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
}

/* A complete port field (already checked by pp_port_prefix_ok) in network
 * order. */
static uint16_t pp_v1_port(const uint8_t *s, size_t n)
{
	unsigned val = 0;

	for (size_t i = 0; i < n; i++)
		val = val * 10 + (unsigned)(s[i] - '0');
	return htons((uint16_t)val);
}

static void pp_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = port;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = port;
}

/* After "UNKNOWN": CRLF, or a space and anything but a lone CR or LF up to
 * the first CRLF.  Returns the line length on success. */
static int pp_v1_unknown_tail(const uint8_t *buf, size_t n, size_t pos, const char **why)
{
	if (pos == n)
		return PP_NEED_MORE;
	if (buf[pos] != '\r' && buf[pos] != ' ') {
		*why = "bad v1 protocol";
		return PP_ERR;
	}
	for (; pos < n; pos++) {
		if (buf[pos] == '\n') {
			*why = "v1 line not ended by CRLF";
			return PP_ERR;
		}
		if (buf[pos] != '\r')
			continue;
		if (pos + 1 == n)
			return PP_NEED_MORE;
		if (buf[pos + 1] != '\n') {
			*why = "v1 line not ended by CRLF";
			return PP_ERR;
		}
		return (int)(pos + 2);
	}
	return PP_NEED_MORE;
}

/* Parses "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n"
 * in buf[0..n), n <= PP_V1_MAX.  Returns the line length, PP_NEED_MORE or
 * PP_ERR (with *why set). */
static int pp_v1_parse_line(const uint8_t *buf, size_t n, struct pp_info *out, const char **why)
{
	static const char *const what[4] = {"bad v1 source address", "bad v1 destination address",
	                                    "bad v1 source port", "bad v1 destination port"};
	size_t pos = 0, start = 0, flen = 0;
	enum pp_step st, st4, st6;
	int family;

	st = pp_v1_literal(buf, n, &pos, "PROXY ");
	if (st != PP_STEP_OK) {
		*why = "not a PROXY header";
		return st == PP_STEP_MORE ? PP_NEED_MORE : PP_ERR;
	}
	out->version = 1;
	size_t pos4 = pos, pos6 = pos;

	st = pp_v1_literal(buf, n, &pos, "UNKNOWN");
	if (st == PP_STEP_OK)
		return pp_v1_unknown_tail(buf, n, pos, why);
	st4 = pp_v1_literal(buf, n, &pos4, "TCP4 ");
	st6 = pp_v1_literal(buf, n, &pos6, "TCP6 ");
	if (st4 == PP_STEP_OK) {
		family = AF_INET;
		pos = pos4;
	} else if (st6 == PP_STEP_OK) {
		family = AF_INET6;
		pos = pos6;
	} else if (st == PP_STEP_MORE || st4 == PP_STEP_MORE || st6 == PP_STEP_MORE) {
		return PP_NEED_MORE;
	} else {
		*why = "bad v1 protocol";
		return PP_ERR;
	}

	bool (*addr_ok)(const uint8_t *, size_t) =
	    family == AF_INET ? pp_ipv4_prefix_ok : pp_ipv6_prefix_ok;
	size_t addr_max = family == AF_INET ? INET_ADDRSTRLEN - 1 : INET6_ADDRSTRLEN - 1;
	uint16_t ports[2] = {0, 0};

	for (int f = 0; f < 4; f++) {
		bool is_addr = f < 2;

		st = pp_v1_field(buf, n, &pos, f == 3 ? '\r' : ' ',
		                 is_addr ? addr_ok : pp_port_prefix_ok, is_addr ? addr_max : 5,
		                 &start, &flen);
		if (st != PP_STEP_OK) {
			*why = what[f];
			return st == PP_STEP_MORE ? PP_NEED_MORE : PP_ERR;
		}
		if (f == 0 && !pp_v1_addr(family, buf + start, flen, &out->src, &out->src_len)) {
			*why = what[f];
			return PP_ERR;
		}
		if (f == 1 && !pp_v1_addr(family, buf + start, flen, &out->dst, &out->dst_len)) {
			*why = what[f];
			return PP_ERR;
		}
		if (!is_addr)
			ports[f - 2] = pp_v1_port(buf + start, flen);
	}
	if (pos == n)
		return PP_NEED_MORE;
	if (buf[pos] != '\n') {
		*why = "v1 line not ended by CRLF";
		return PP_ERR;
	}
	pp_set_port(&out->src, ports[0]);
	pp_set_port(&out->dst, ports[1]);
	out->has_addr = 1;
	return (int)(pos + 1);
}

/* v1 within its length limit: a line that has no CRLF in its first
 * PP_V1_MAX bytes is too long. */
static int pp_v1_parse(const uint8_t *buf, size_t len, struct pp_info *out, const char **why)
{
	size_t n = len < PP_V1_MAX ? len : PP_V1_MAX;
	int r = pp_v1_parse_line(buf, n, out, why);

	if (r == PP_NEED_MORE && len >= PP_V1_MAX) {
		*why = "v1 line too long";
		return PP_ERR;
	}
	return r;
}

/* --- v2 ------------------------------------------------------------------------- */

/* Parses the binary header.  Each check runs as soon as the bytes it needs
 * are there, so that a bad header is refused before its end arrives. */
static int pp_v2_parse(const uint8_t *buf, size_t len, struct pp_info *out, const char **why)
{
	size_t k = len < sizeof(pp_v2_sig) ? len : sizeof(pp_v2_sig);

	if (memcmp(buf, pp_v2_sig, k) != 0) {
		*why = "bad v2 signature";
		return PP_ERR;
	}
	if (len < 13)
		return PP_NEED_MORE;
	unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0f;

	if (ver != 2) {
		*why = "bad v2 version";
		return PP_ERR;
	}
	if (cmd != PP_V2_CMD_LOCAL && cmd != PP_V2_CMD_PROXY) {
		*why = "bad v2 command";
		return PP_ERR;
	}
	if (len < 14)
		return PP_NEED_MORE;
	unsigned fam = buf[13] >> 4, proto = buf[13] & 0x0f;
	size_t need = 0;
	bool addr = false;

	if (cmd == PP_V2_CMD_PROXY) {
		if (fam > PP_V2_AF_UNIX || proto > PP_V2_PROTO_DGRAM) {
			*why = "bad v2 address family";
			return PP_ERR;
		}
		if (proto == PP_V2_PROTO_DGRAM) {
			*why = "v2 datagram protocol not supported";
			return PP_ERR;
		}
		if (proto == PP_V2_PROTO_STREAM) {
			if (fam == PP_V2_AF_INET)
				need = PP_V2_LEN_INET;
			else if (fam == PP_V2_AF_INET6)
				need = PP_V2_LEN_INET6;
			else if (fam == PP_V2_AF_UNIX)
				need = PP_V2_LEN_UNIX;
			addr = fam == PP_V2_AF_INET || fam == PP_V2_AF_INET6;
		}
	}
	if (len < PP_V2_FIXED)
		return PP_NEED_MORE;
	size_t alen = (size_t)buf[14] << 8 | buf[15];

	if (PP_V2_FIXED + alen > PP_MAX_HEADER) {
		*why = "v2 header too long";
		return PP_ERR;
	}
	if (alen < need) {
		*why = "v2 address block too short";
		return PP_ERR;
	}
	if (len < PP_V2_FIXED + alen)
		return PP_NEED_MORE;

	out->version = 2;
	if (addr && fam == PP_V2_AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
		const uint8_t *a = buf + PP_V2_FIXED;

		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		out->src_len = out->dst_len = sizeof(struct sockaddr_in);
	} else if (addr) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
		const uint8_t *a = buf + PP_V2_FIXED;

		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		out->src_len = out->dst_len = sizeof(struct sockaddr_in6);
	}
	out->has_addr = addr;
	return (int)(PP_V2_FIXED + alen);
}

/* --- parsing: the entry point ------------------------------------------------- */

/* *info is written only when a whole header was parsed: the caller may keep
 * calling with the same struct while bytes trickle in. */
int pp_parse(const uint8_t *buf, size_t len, struct pp_info *info, const char **err)
{
	struct pp_info out;
	const char *why = "not a PROXY header";
	int r;

	if (len == 0)
		return PP_NEED_MORE;
	memset(&out, 0, sizeof(out));
	if (buf[0] == 'P')
		r = pp_v1_parse(buf, len, &out, &why);
	else if (buf[0] == pp_v2_sig[0])
		r = pp_v2_parse(buf, len, &out, &why);
	else
		r = PP_ERR;
	if (r == PP_ERR && err)
		*err = why;
	if (r > 0 && info)
		*info = out;
	return r;
}

/* --- building ----------------------------------------------------------------- */

/* An endpoint as a header carries it: IPv4 (4 address bytes) or IPv6 (16),
 * port in network order. */
struct pp_endpoint {
	int family;
	uint8_t addr[16];
	uint16_t port;
};

/* Reads `sa` into `ep`, turning an IPv4-mapped IPv6 address (a dual-stack
 * socket's view of an IPv4 peer) into the IPv4 address it stands for, so
 * that the backend sees the client as it really is.  False for NULL and
 * other families. */
static bool pp_endpoint_load(const struct sockaddr *sa, struct pp_endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	if (sa && sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		ep->family = AF_INET;
		memcpy(ep->addr, &sin->sin_addr, 4);
		ep->port = sin->sin_port;
		return true;
	}
	if (sa && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		ep->port = sin6->sin6_port;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			ep->family = AF_INET;
			memcpy(ep->addr, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			ep->family = AF_INET6;
			memcpy(ep->addr, &sin6->sin6_addr, 16);
		}
		return true;
	}
	return false;
}

static int pp_put(uint8_t *out, size_t cap, const void *hdr, size_t n)
{
	if (n > cap)
		return -1;
	memcpy(out, hdr, n);
	return (int)n;
}

static int pp_build_v1(const struct pp_endpoint *s, const struct pp_endpoint *d, uint8_t *out,
                       size_t cap)
{
	char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	char line[PP_V1_MAX + 32];
	int n;

	if (!inet_ntop(s->family, s->addr, sa, sizeof(sa)) ||
	    !inet_ntop(d->family, d->addr, da, sizeof(da)))
		return -1;
	n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
	             s->family == AF_INET ? "TCP4" : "TCP6", sa, da, (unsigned)ntohs(s->port),
	             (unsigned)ntohs(d->port));
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;
	return pp_put(out, cap, line, (size_t)n);
}

static int pp_build_v2(const struct pp_endpoint *s, const struct pp_endpoint *d, uint8_t *out,
                       size_t cap)
{
	uint8_t hdr[PP_V2_FIXED + PP_V2_LEN_INET6];
	size_t alen = s->family == AF_INET ? 4 : 16;
	size_t blen = 2 * alen + 4;
	uint8_t *a = hdr + PP_V2_FIXED;

	memcpy(hdr, pp_v2_sig, sizeof(pp_v2_sig));
	hdr[12] = 0x20 | PP_V2_CMD_PROXY;
	hdr[13] = (uint8_t)((s->family == AF_INET ? PP_V2_AF_INET : PP_V2_AF_INET6) << 4 |
	                    PP_V2_PROTO_STREAM);
	hdr[14] = (uint8_t)(blen >> 8);
	hdr[15] = (uint8_t)blen;
	memcpy(a, s->addr, alen);
	memcpy(a + alen, d->addr, alen);
	memcpy(a + 2 * alen, &s->port, 2);
	memcpy(a + 2 * alen + 2, &d->port, 2);
	return pp_put(out, cap, hdr, PP_V2_FIXED + blen);
}

/* An IPv4-mapped IPv6 address counts as IPv4 (see pp_endpoint_load), so a
 * mapped address paired with a plain IPv4 one is a pair of IPv4 addresses;
 * any other mix has no header form and gives UNKNOWN / LOCAL.  A version
 * other than 1 or 2 gives -1 like a short buffer. */
int pp_build(int version, const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out,
             size_t cap)
{
	struct pp_endpoint s, d;

	if (version != 1 && version != 2)
		return -1;
	if (!pp_endpoint_load(src, &s) || !pp_endpoint_load(dst, &d) || s.family != d.family)
		return pp_build_local(version, out, cap);
	return version == 1 ? pp_build_v1(&s, &d, out, cap) : pp_build_v2(&s, &d, out, cap);
}

/* v1 has no LOCAL command: "UNKNOWN" is its way of saying "use the
 * connection's own addresses".  v2 LOCAL carries no address block. */
int pp_build_local(int version, uint8_t *out, size_t cap)
{
	static const char v1[] = "PROXY UNKNOWN\r\n";
	uint8_t v2[PP_V2_FIXED];

	if (version == 1)
		return pp_put(out, cap, v1, sizeof(v1) - 1);
	if (version != 2)
		return -1;
	memcpy(v2, pp_v2_sig, sizeof(pp_v2_sig));
	v2[12] = 0x20 | PP_V2_CMD_LOCAL;
	v2[13] = PP_V2_AF_UNSPEC << 4 | PP_V2_PROTO_UNSPEC;
	v2[14] = 0;
	v2[15] = 0;
	return pp_put(out, cap, v2, sizeof(v2));
}
