/* test_proxyproto.c - unit tests for src/relay/proxyproto.c: parsing v1 and v2
 * PROXY headers (complete, every prefix, malformed of every kind, bytes after
 * the header left alone) and building them (exact bytes, round trips,
 * IPv4-mapped and mixed addresses, LOCAL, short buffers).
 *
 * Headers are written out by hand here rather than only made by pp_build(),
 * so that a builder and a parser that agree on a mistake still fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "relay/proxyproto.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A byte string that may hold NULs: the literal and its length. */
struct bytes {
	const char *s;
	size_t n;
};
#define B(lit)                                                                                     \
	{                                                                                          \
		lit, sizeof(lit) - 1                                                               \
	}

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* --- helpers ----------------------------------------------------------------------- */

static int parse(const void *buf, size_t len, struct pp_info *info, const char **err)
{
	return pp_parse((const uint8_t *)buf, len, info, err);
}

static int parse_str(const char *s, struct pp_info *info)
{
	const char *err = NULL;

	return parse(s, strlen(s), info, &err);
}

/* Writes a v2 header: signature, the two type bytes, the length field
 * `alen`, then `body_len` bytes of `body` (which may differ from alen). */
static size_t v2_hdr(uint8_t *out, uint8_t ver_cmd, uint8_t fam, uint16_t alen, const uint8_t *body,
                     size_t body_len)
{
	memcpy(out, SIG, sizeof(SIG));
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(alen >> 8);
	out[15] = (uint8_t)alen;
	if (body_len)
		memcpy(out + 16, body, body_len);
	return 16 + body_len;
}

static void assert_in4(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
                       unsigned port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	struct in_addr want;

	assert_int_equal(ss->ss_family, AF_INET);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
	assert_memory_equal(&sin->sin_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_in6(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
                       unsigned port)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
	struct in6_addr want;

	assert_int_equal(ss->ss_family, AF_INET6);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
	assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin6->sin6_port), port);
}

static struct sockaddr_storage sa4(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage sa6(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Every proper prefix of buf[0..len) is PP_NEED_MORE, the whole is `len`, and
 * bytes after it are not taken. */
static void assert_prefixes(const uint8_t *buf, size_t len)
{
	uint8_t more[PP_MAX_HEADER + 64];
	struct pp_info info;

	assert_true(len <= PP_MAX_HEADER);
	for (size_t k = 0; k < len; k++) {
		const char *err = NULL;
		int r = pp_parse(buf, k, &info, &err);

		if (r != PP_NEED_MORE)
			fail_msg("prefix of %zu of %zu bytes gave %d (%s)", k, len, r,
			         err ? err : "-");
	}
	assert_int_equal(pp_parse(buf, len, &info, NULL), (int)len);
	memcpy(more, buf, len);
	memcpy(more + len, "PROXY TCP4 \r\n\r\n", 15);
	assert_int_equal(pp_parse(more, len + 15, &info, NULL), (int)len);
}

/* --- v1: good headers -------------------------------------------------------------- */

static void test_v1_tcp4(void **state)
{
	static const char hdr[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
	static const char all[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
	                          "GET / HTTP/1.1\r\n\r\n";
	struct pp_info info;

	(void)state;
	assert_int_equal(parse_str(all, &info), (int)strlen(hdr));
	assert_int_equal(info.version, 1);
	assert_int_equal(info.has_addr, 1);
	assert_in4(&info.src, info.src_len, "192.168.0.1", 56324);
	assert_in4(&info.dst, info.dst_len, "192.168.0.11", 443);

	/* The longest TCP4 line, and the extreme ports. */
	assert_int_equal(
	    parse_str("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", &info), 56);
	assert_in4(&info.src, info.src_len, "255.255.255.255", 65535);
	assert_int_equal(parse_str("PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\nX", &info), 33);
	assert_in4(&info.src, info.src_len, "0.0.0.0", 0);
	assert_in4(&info.dst, info.dst_len, "10.0.0.1", 0);
}

static void test_v1_tcp6(void **state)
{
	static const char max[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                          "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n";
	struct pp_info info;

	(void)state;
	assert_int_equal(parse_str("PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 8080\r\nrest", &info),
	                 47);
	assert_int_equal(info.version, 1);
	assert_int_equal(info.has_addr, 1);
	assert_in6(&info.src, info.src_len, "2001:db8::1", 1);
	assert_in6(&info.dst, info.dst_len, "::ffff:10.0.0.1", 8080);

	assert_int_equal(strlen(max), 104);
	assert_int_equal(parse_str(max, &info), 104);
	assert_in6(&info.dst, info.dst_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	assert_int_equal(parse_str("PROXY TCP6 :: ::1 0 22\r\n", &info), 24);
	assert_in6(&info.src, info.src_len, "::", 0);
	assert_in6(&info.dst, info.dst_len, "::1", 22);
}

static void test_v1_unknown(void **state)
{
	static const char longest[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct pp_info info;

	(void)state;
	memset(&info, 0x5a, sizeof(info));
	assert_int_equal(parse_str("PROXY UNKNOWN\r\nSSH-2.0-x\r\n", &info), 15);
	assert_int_equal(info.version, 1);
	assert_int_equal(info.has_addr, 0);
	assert_int_equal(info.src_len, 0);
	assert_int_equal(info.dst_len, 0);

	assert_int_equal(strlen(longest), 107);
	assert_int_equal(parse_str(longest, &info), 107);
	assert_int_equal(info.has_addr, 0);
	/* Anything before the CRLF is ignored, even what TCP4 would refuse. */
	assert_int_equal(parse_str("PROXY UNKNOWN what  ever 99999\r\nxx", &info), 32);
	assert_int_equal(parse_str("PROXY UNKNOWN \r\n", &info), 16);
}

static void test_v1_length_limit(void **state)
{
	char line[200];
	struct pp_info info;
	const char *err = NULL;

	(void)state;
	/* 105 bytes of line and its CRLF: 107, accepted. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(parse(line, 107, &info, NULL), 107);
	assert_int_equal(parse(line, 150, &info, NULL), 107);

	/* 106 bytes before the CRLF: the CR would be the 107th byte, the LF
	 * the 108th. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	assert_int_equal(parse(line, 106, &info, NULL), PP_NEED_MORE);
	assert_int_equal(parse(line, 107, &info, NULL), PP_ERR);
	assert_int_equal(parse(line, 108, &info, &err), PP_ERR);
	assert_string_equal(err, "v1 line too long");

	/* No CRLF at all within 107 bytes. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	assert_int_equal(parse(line, 106, &info, NULL), PP_NEED_MORE);
	err = NULL;
	assert_int_equal(parse(line, 107, &info, &err), PP_ERR);
	assert_non_null(err);
	assert_int_equal(parse(line, sizeof(line), &info, NULL), PP_ERR);
}

/* --- v1: malformed ----------------------------------------------------------------- */

static void test_v1_malformed(void **state)
{
	static const struct bytes bad[] = {
	    /* spacing */
	    B("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"),
	    B(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n"),
	    B("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP41.2.3.4 5.6.7.8 1 2\r\n"),
	    /* line end */
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r"),
	    B("PROXY UNKNOWN\n"),
	    B("PROXY UNKNOWN\rX"),
	    B("PROXY UNKNOWN foo\nbar\r\n"),
	    B("PROXY UNKNOWN foo\rbar\r\n"),
	    /* fields missing or extra */
	    B("PROXY\r\n"),
	    B("PROXY \r\n"),
	    B("PROXY TCP4\r\n"),
	    B("PROXY TCP4 \r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8\r\n"),
	    /* addresses */
	    B("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.999 1 2\r\n"),
	    B("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 localhost 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"),
	    B("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"),
	    B("PROXY TCP6 1::2::3 ::1 1 2\r\n"),
	    B("PROXY TCP6 :::1 ::1 1 2\r\n"),
	    B("PROXY TCP6 :1 ::1 1 2\r\n"),
	    B("PROXY TCP6 1: ::1 1 2\r\n"),
	    B("PROXY TCP6 12345::1 ::1 1 2\r\n"),
	    B("PROXY TCP6 g::1 ::1 1 2\r\n"),
	    B("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
	    B("PROXY TCP6 [::1] ::1 1 2\r\n"),
	    B("PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n"),
	    B("PROXY TCP6 ::ffff:1.2.3.4.5 ::1 1 2\r\n"),
	    /* an address of the wrong family */
	    B("PROXY TCP4 ::1 ::1 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"),
	    B("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP6 ::1 1.2.3.4 1 2\r\n"),
	    /* ports */
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n"),
	    /* protocol names and case */
	    B("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("Proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
	    B("PROXY unknown\r\n"),
	    B("PROXY UNKNOWNX\r\n"),
	    B("PROXY UNKNOWN\t\r\n"),
	    /* NUL inside the line */
	    B("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"),
	    B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n"),
	    /* not PROXY at all */
	    B("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	    B("SSH-2.0-OpenSSH_9.2\r\n"),
	    B("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
	    B("\0\0\0\0"),
	    B("\r\n\r\n\r\n\r\n"),
	    B("\n"),
	};

	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		struct pp_info info;
		const char *err = NULL;
		int r;

		memset(&info, 0, sizeof(info));
		info.version = 77;
		r = parse(bad[i].s, bad[i].n, &info, &err);
		if (r != PP_ERR)
			fail_msg("case %zu \"%.*s\" gave %d, not PP_ERR", i, (int)bad[i].n,
			         bad[i].s, r);
		assert_non_null(err);
		assert_true(strlen(err) > 0);
		assert_int_equal(info.version, 77); /* untouched */
	}
}

/* A prefix that can no longer become a header is an error at once; one that
 * still can asks for more, however little of it there is. */
static void test_v1_early_decision(void **state)
{
	static const char *const err_now[] = {
	    "GET /",
	    "G",
	    "p",
	    "PROX ",
	    "PROXY FOO",
	    "PROXY TCP4 256",
	    "PROXY TCP4 1.2.3.4  ",
	    "PROXY TCP4 1.2.3.4.",
	    "PROXY TCP4 1.2.03",
	    "PROXY TCP4 :",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 70000",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 01",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
	    "PROXY TCP6 1:2:3:4:5:6:7:8:",
	    "PROXY TCP6 ::1::",
	    "PROXY TCP6 :1",
	    "PROXY TCP6 :::",
	    "PROXY TCP6 1::2:3:4:5:6:7:",
	    "PROXY TCP6 1.",
	    "PROXY TCP6 ::12345",
	    "PROXY TCP6 1:2:3:4:5:1.",
	    "PROXY UNKNOWNS",
	    "PROXY UNKNOWN \n",
	};
	static const char *const more[] = {
	    "P",
	    "PRO",
	    "PROXY",
	    "PROXY ",
	    "PROXY U",
	    "PROXY T",
	    "PROXY TCP",
	    "PROXY UNKNOWN",
	    "PROXY UNKNOWN blah \r",
	    "PROXY TCP4",
	    "PROXY TCP4 ",
	    "PROXY TCP4 1.2.",
	    "PROXY TCP4 1.2.3.4",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
	    "PROXY TCP6 ",
	    "PROXY TCP6 :",
	    "PROXY TCP6 ::",
	    "PROXY TCP6 2001:db8:",
	    "PROXY TCP6 ::ffff:1.2.",
	    "PROXY TCP6 1:2:3:4:5:6:1.",
	    "PROXY TCP6 1:2:3:4:5:6:7::",
	};
	const char *err;

	(void)state;
	for (size_t i = 0; i < N_OF(err_now); i++) {
		err = NULL;
		if (parse(err_now[i], strlen(err_now[i]), NULL, &err) != PP_ERR)
			fail_msg("\"%s\" is not refused at once", err_now[i]);
		assert_non_null(err);
	}
	for (size_t i = 0; i < N_OF(more); i++)
		if (parse(more[i], strlen(more[i]), NULL, NULL) != PP_NEED_MORE)
			fail_msg("\"%s\" is not a prefix", more[i]);
	assert_int_equal(parse("", 0, NULL, NULL), PP_NEED_MORE);
}

/* The errors name what is wrong. */
static void test_error_reasons(void **state)
{
	static const struct {
		struct bytes in;
		const char *err;
	} cases[] = {
	    {B("GET / HTTP/1.0\r\n"), "not a PROXY header"},
	    {B("PROXY FOO\r\n"), "bad v1 protocol"},
	    {B("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n"), "bad v1 source address"},
	    {B("PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), "bad v1 destination address"},
	    {B("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n"), "bad v1 source port"},
	    {B("PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n"), "bad v1 destination port"},
	    {B("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rx"), "v1 line not ended by CRLF"},
	    {B("\r\n\r\n\0\r\nQUIX"), "bad v2 signature"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x11"), "bad v2 version"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x22"), "bad v2 command"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x21\x41"), "bad v2 address family"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x21\x12"), "v2 datagram protocol not supported"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0b"), "v2 address block too short"},
	    {B("\r\n\r\n\0\r\nQUIT\n\x21\x11\x02\x09"), "v2 header too long"},
	};

	(void)state;
	for (size_t i = 0; i < N_OF(cases); i++) {
		const char *err = NULL;

		assert_int_equal(parse(cases[i].in.s, cases[i].in.n, NULL, &err), PP_ERR);
		assert_non_null(err);
		assert_string_equal(err, cases[i].err);
	}
}

/* --- v2 ---------------------------------------------------------------------------- */

static void test_v2_tcp4(void **state)
{
	static const uint8_t body[] = {10, 1, 2, 3, 10, 4, 5, 6, 0x04, 0xd2, 0x00, 0x50};
	uint8_t buf[64];
	struct pp_info info;
	size_t n;

	(void)state;
	n = v2_hdr(buf, 0x21, 0x11, 12, body, sizeof(body));
	memcpy(buf + n, "abc", 3);
	memset(&info, 0x5a, sizeof(info));
	assert_int_equal(parse(buf, n + 3, &info, NULL), 28);
	assert_int_equal(info.version, 2);
	assert_int_equal(info.has_addr, 1);
	assert_in4(&info.src, info.src_len, "10.1.2.3", 1234);
	assert_in4(&info.dst, info.dst_len, "10.4.5.6", 80);
	assert_int_equal(((struct sockaddr_in *)&info.src)->sin_port, htons(1234));
}

static void test_v2_tcp6(void **state)
{
	uint8_t body[36], buf[64];
	struct pp_info info;
	size_t n;

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", body), 1);
	assert_int_equal(inet_pton(AF_INET6, "fe80::1:2", body + 16), 1);
	memcpy(body + 32, "\xff\xff\x00\x00", 4); /* ports 65535 and 0 */
	n = v2_hdr(buf, 0x21, 0x21, 36, body, sizeof(body));
	assert_int_equal(n, 52);
	assert_int_equal(parse(buf, n, &info, NULL), 52);
	assert_int_equal(info.version, 2);
	assert_int_equal(info.has_addr, 1);
	assert_in6(&info.src, info.src_len, "2001:db8::7", 65535);
	assert_in6(&info.dst, info.dst_len, "fe80::1:2", 0);
}

/* TLVs after the addresses are skipped; the returned length covers them. */
static void test_v2_tlvs_and_size_limit(void **state)
{
	static const uint8_t body[] = {127,  0,    0,    1,    127,  0,   0,   2,   0,   1,
	                               0,    2,    0x04, 0x00, 0x04, 'n', 'o', 'o', 'p', /* NOOP */
	                               0x02, 0x00, 0x01, 'x'}; /* AUTHORITY */
	uint8_t buf[PP_MAX_HEADER + 32], pad[PP_MAX_HEADER];
	struct pp_info info;
	const char *err = NULL;
	size_t n;

	(void)state;
	n = v2_hdr(buf, 0x21, 0x11, sizeof(body), body, sizeof(body));
	memcpy(buf + n, "data", 4);
	assert_int_equal(parse(buf, n + 4, &info, NULL), 16 + (int)sizeof(body));
	assert_in4(&info.src, info.src_len, "127.0.0.1", 1);
	assert_in4(&info.dst, info.dst_len, "127.0.0.2", 2);

	/* Exactly PP_MAX_HEADER is fine; one more byte is refused as soon as
	 * the length field is read. */
	memset(pad, 0, sizeof(pad));
	memcpy(pad, body, 12);
	n = v2_hdr(buf, 0x21, 0x11, PP_MAX_HEADER - 16, pad, PP_MAX_HEADER - 16);
	assert_int_equal(parse(buf, n, &info, NULL), PP_MAX_HEADER);
	v2_hdr(buf, 0x21, 0x11, PP_MAX_HEADER - 15, pad, PP_MAX_HEADER - 15);
	assert_int_equal(parse(buf, 16, &info, &err), PP_ERR);
	assert_string_equal(err, "v2 header too long");
	assert_int_equal(parse(buf, PP_MAX_HEADER + 1, &info, NULL), PP_ERR);
	v2_hdr(buf, 0x21, 0x11, 0xffff, NULL, 0);
	assert_int_equal(parse(buf, 16, &info, NULL), PP_ERR);
}

/* LOCAL, and PROXY with no usable address: accepted, has_addr = 0. */
static void test_v2_no_address(void **state)
{
	static const struct {
		uint8_t ver_cmd, fam;
		uint16_t alen;
	} ok[] = {
	    {0x20, 0x00, 0},   /* LOCAL, the usual form */
	    {0x20, 0x11, 12},  /* LOCAL with addresses: ignored */
	    {0x20, 0x11, 0},   /* LOCAL ignores the family: no minimum length */
	    {0x20, 0x22, 36},  /* ... even DGRAM */
	    {0x20, 0xff, 5},   /* ... even unassigned values */
	    {0x21, 0x00, 0},   /* PROXY, UNSPEC */
	    {0x21, 0x00, 20},  /* PROXY, UNSPEC with bytes: skipped */
	    {0x21, 0x10, 0},   /* AF_INET, protocol UNSPEC */
	    {0x21, 0x01, 0},   /* AF_UNSPEC, STREAM */
	    {0x21, 0x31, 216}, /* UNIX stream */
	    {0x21, 0x31, 240}, /* UNIX stream and TLVs */
	};
	uint8_t buf[PP_MAX_HEADER], body[PP_MAX_HEADER];

	(void)state;
	memset(body, 0xab, sizeof(body));
	for (size_t i = 0; i < N_OF(ok); i++) {
		struct pp_info info;
		size_t n = v2_hdr(buf, ok[i].ver_cmd, ok[i].fam, ok[i].alen, body, ok[i].alen);

		memset(&info, 0x5a, sizeof(info));
		assert_int_equal(parse(buf, n, &info, NULL), (int)n);
		assert_int_equal(info.version, 2);
		assert_int_equal(info.has_addr, 0);
		assert_int_equal(info.src_len, 0);
		assert_int_equal(info.dst_len, 0);
		assert_prefixes(buf, n);
	}
}

static void test_v2_malformed(void **state)
{
	static const uint8_t body[36] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
	static const struct {
		uint8_t ver_cmd, fam;
		uint16_t alen;
		size_t have;  /* address bytes present */
		size_t first; /* the byte count at which it is refused */
	} bad[] = {
	    {0x11, 0x11, 12, 12, 13},    /* version 1 */
	    {0x01, 0x11, 12, 12, 13},    /* version 0 */
	    {0x31, 0x11, 12, 12, 13},    /* version 3 */
	    {0xf1, 0x11, 12, 12, 13},    /* version 15 */
	    {0x22, 0x11, 12, 12, 13},    /* command 2 */
	    {0x2f, 0x11, 12, 12, 13},    /* command 15 */
	    {0x21, 0x41, 12, 12, 14},    /* family 4 */
	    {0x21, 0xf1, 12, 12, 14},    /* family 15 */
	    {0x21, 0x13, 12, 12, 14},    /* protocol 3 */
	    {0x21, 0x12, 12, 12, 14},    /* UDP over IPv4 */
	    {0x21, 0x22, 36, 36, 14},    /* UDP over IPv6 */
	    {0x21, 0x32, 0, 0, 14},      /* UNIX datagram */
	    {0x21, 0x02, 0, 0, 14},      /* UNSPEC datagram */
	    {0x21, 0x11, 11, 11, 16},    /* short IPv4 block */
	    {0x21, 0x11, 0, 0, 16},      /* no IPv4 block */
	    {0x21, 0x21, 35, 35, 16},    /* short IPv6 block */
	    {0x21, 0x21, 12, 12, 16},    /* an IPv4 block for IPv6 */
	    {0x21, 0x31, 215, 0, 16},    /* short UNIX block */
	    {0x21, 0x11, 521, 0, 16},    /* longer than PP_MAX_HEADER */
	    {0x20, 0x00, 521, 0, 16},    /* LOCAL too */
	    {0x21, 0x21, 0xffff, 0, 16}, /* the largest length */
	};
	uint8_t buf[PP_MAX_HEADER + 64];

	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		struct pp_info info;
		const char *err = NULL;
		size_t n = v2_hdr(buf, bad[i].ver_cmd, bad[i].fam, bad[i].alen, body, bad[i].have);

		info.version = 77;
		if (parse(buf, n, &info, &err) != PP_ERR)
			fail_msg("v2 case %zu (%02x %02x len %u) not refused", i, bad[i].ver_cmd,
			         bad[i].fam, bad[i].alen);
		assert_non_null(err);
		assert_int_equal(info.version, 77);
		/* Refused from the first byte that shows it, not later. */
		assert_int_equal(parse(buf, bad[i].first, &info, NULL), PP_ERR);
		assert_int_equal(parse(buf, bad[i].first - 1, &info, NULL), PP_NEED_MORE);
	}
}

/* Every byte of the signature matters. */
static void test_v2_bad_signature(void **state)
{
	uint8_t buf[64];
	size_t n;

	(void)state;
	n = v2_hdr(buf, 0x20, 0x00, 0, NULL, 0);
	assert_int_equal(parse(buf, n, NULL, NULL), 16);
	for (size_t i = 0; i < sizeof(SIG); i++) {
		const char *err = NULL;

		buf[i] ^= 0x20;
		assert_int_equal(parse(buf, n, NULL, &err), PP_ERR);
		/* and at once: the byte itself is enough */
		assert_int_equal(parse(buf, i + 1, NULL, NULL), PP_ERR);
		assert_non_null(err);
		buf[i] ^= 0x20;
	}
	/* A truncated header is only a prefix. */
	assert_int_equal(parse(buf, 15, NULL, NULL), PP_NEED_MORE);
	n = v2_hdr(buf, 0x21, 0x11, 12, (const uint8_t *)"123456789012", 11);
	assert_int_equal(parse(buf, n, NULL, NULL), PP_NEED_MORE);
}

/* --- every prefix ------------------------------------------------------------------- */

static void test_every_prefix_needs_more(void **state)
{
	static const char *const v1[] = {
	    "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
	    "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
	    "PROXY TCP4 0.0.0.0 1.10.100.200 0 10\r\n",
	    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	    "PROXY TCP6 ::1 ::ffff:192.0.2.1 1 2\r\n",
	    "PROXY TCP6 1:2:3:4:5:6:7:: ::1:2:3:4:5:6:7 1 2\r\n",
	    "PROXY TCP6 1:2:3:4:5:6:1.2.3.4 :: 1 2\r\n",
	    "PROXY UNKNOWN\r\n",
	    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
	};
	uint8_t buf[PP_MAX_HEADER], body[PP_MAX_HEADER];
	size_t n;

	(void)state;
	for (size_t i = 0; i < N_OF(v1); i++)
		assert_prefixes((const uint8_t *)v1[i], strlen(v1[i]));

	memset(body, 7, sizeof(body));
	n = v2_hdr(buf, 0x21, 0x11, 12, body, 12);
	assert_prefixes(buf, n);
	n = v2_hdr(buf, 0x21, 0x21, 36, body, 36);
	assert_prefixes(buf, n);
	n = v2_hdr(buf, 0x21, 0x21, 100, body, 100);
	assert_prefixes(buf, n);
	n = v2_hdr(buf, 0x20, 0x00, 0, body, 0);
	assert_prefixes(buf, n);
	n = v2_hdr(buf, 0x21, 0x11, PP_MAX_HEADER - 16, body, PP_MAX_HEADER - 16);
	assert_prefixes(buf, n);
}

/* IPv6 text in every form inet_pton takes: what the parser refuses early
 * must never be the start of a valid address.  Random addresses with runs of
 * zero groups, written canonically, in full, with leading zeros, in upper
 * case and with a dotted quad at the end. */
static void test_v1_ipv6_forms(void **state)
{
	char addr[64], line[160];
	unsigned seed = 12345;

	(void)state;
	for (int i = 0; i < 3000; i++) {
		struct in6_addr a;
		uint16_t g[8];
		int form = i % 5, len;

		for (int k = 0; k < 8; k++) {
			seed = seed * 1103515245u + 12345u;
			g[k] = (uint16_t)(seed >> 8);
			if ((seed >> 28) < 6)
				g[k] = 0;
			if ((seed >> 28) == 6)
				g[k] = (uint16_t)(g[k] & 0xf);
		}
		for (int k = 0; k < 8; k++) {
			a.s6_addr[2 * k] = (uint8_t)(g[k] >> 8);
			a.s6_addr[2 * k + 1] = (uint8_t)g[k];
		}
		if (form == 0) {
			assert_non_null(inet_ntop(AF_INET6, &a, addr, sizeof(addr)));
		} else if (form == 1 || form == 2) {
			len = 0;
			for (int k = 0; k < 8; k++)
				len +=
				    snprintf(addr + len, sizeof(addr) - (size_t)len,
				             form == 1 ? "%x%s" : "%04X%s", g[k], k < 7 ? ":" : "");
		} else if (form == 3) {
			snprintf(addr, sizeof(addr), "%x:%x:%x:%x:%x:%x:%u.%u.%u.%u", g[0], g[1],
			         g[2], g[3], g[4], g[5], a.s6_addr[12], a.s6_addr[13],
			         a.s6_addr[14], a.s6_addr[15]);
		} else {
			snprintf(addr, sizeof(addr), "::%s%u.%u.%u.%u", g[0] & 1 ? "ffff:" : "",
			         a.s6_addr[12], a.s6_addr[13], a.s6_addr[14], a.s6_addr[15]);
		}
		assert_int_equal(inet_pton(AF_INET6, addr, &a), 1);
		len = snprintf(line, sizeof(line), "PROXY TCP6 %s %s 1 2\r\n", addr, addr);
		if (len > 107)
			continue;
		for (int k = 0; k < len; k++)
			if (parse(line, (size_t)k, NULL, NULL) != PP_NEED_MORE)
				fail_msg("\"%.*s\" refused (address %s)", k, line, addr);
		struct pp_info info;

		assert_int_equal(parse(line, (size_t)len, &info, NULL), len);
		assert_in6(&info.src, info.src_len, addr, 1);
	}
}

/* --- building ---------------------------------------------------------------------- */

static void test_build_exact_bytes(void **state)
{
	static const uint8_t v2_4[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
	                               0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 192,  168,  0,    1,
	                               192,  168,  0,    11,   0xdc, 0x04, 0x01, 0xbb};
	struct sockaddr_storage s = sa4("192.168.0.1", 56324), d = sa4("192.168.0.11", 443);
	uint8_t out[PP_MAX_HEADER];
	int n;

	(void)state;
	n = pp_build(1, SA(s), SA(d), out, sizeof(out));
	assert_int_equal(n, 47);
	assert_memory_equal(out, "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", 47);
	n = pp_build(2, SA(s), SA(d), out, sizeof(out));
	assert_int_equal(n, sizeof(v2_4));
	assert_memory_equal(out, v2_4, sizeof(v2_4));

	s = sa6("2001:db8::1", 1);
	d = sa6("2001:db8::2", 2);
	n = pp_build(1, SA(s), SA(d), out, sizeof(out));
	assert_int_equal(n, 40);
	assert_memory_equal(out, "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", 40);
	n = pp_build(2, SA(s), SA(d), out, sizeof(out));
	assert_int_equal(n, 52);
	assert_int_equal(out[12], 0x21);
	assert_int_equal(out[13], 0x21);
	assert_int_equal(out[14], 0);
	assert_int_equal(out[15], 36);
	assert_memory_equal(out + 16, &((struct sockaddr_in6 *)&s)->sin6_addr, 16);
	assert_memory_equal(out + 32, &((struct sockaddr_in6 *)&d)->sin6_addr, 16);
	assert_memory_equal(out + 48, "\x00\x01\x00\x02", 4);
}

static void test_roundtrip(void **state)
{
	static const struct {
		const char *src, *dst;
		unsigned sport, dport;
	} cases[] = {
	    {"127.0.0.1", "127.0.0.2", 40000, 8080},
	    {"0.0.0.0", "255.255.255.255", 0, 65535},
	    {"203.0.113.9", "10.0.0.1", 65535, 1},
	    {"::1", "::1", 51234, 443},
	    {"2001:db8:0:0:1:0:0:1", "fe80::abcd", 1, 0},
	    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", 65535, 65535},
	    {"64:ff9b::192.0.2.33", "::2", 7, 8},
	};

	(void)state;
	for (int version = 1; version <= 2; version++) {
		for (size_t i = 0; i < N_OF(cases); i++) {
			bool v6 = strchr(cases[i].src, ':') != NULL;
			struct sockaddr_storage s = v6 ? sa6(cases[i].src, cases[i].sport)
			                               : sa4(cases[i].src, cases[i].sport);
			struct sockaddr_storage d = v6 ? sa6(cases[i].dst, cases[i].dport)
			                               : sa4(cases[i].dst, cases[i].dport);
			uint8_t out[PP_MAX_HEADER + 8];
			struct pp_info info;
			int n;

			n = pp_build(version, SA(s), SA(d), out, PP_MAX_HEADER);
			assert_true(n > 0);
			memcpy(out + n, "tail", 4);
			assert_int_equal(pp_parse(out, (size_t)n + 4, &info, NULL), n);
			assert_int_equal(info.version, version);
			assert_int_equal(info.has_addr, 1);
			if (v6) {
				assert_in6(&info.src, info.src_len, cases[i].src, cases[i].sport);
				assert_in6(&info.dst, info.dst_len, cases[i].dst, cases[i].dport);
			} else {
				assert_in4(&info.src, info.src_len, cases[i].src, cases[i].sport);
				assert_in4(&info.dst, info.dst_len, cases[i].dst, cases[i].dport);
			}
			assert_prefixes(out, (size_t)n);
		}
	}
}

/* A dual-stack socket sees an IPv4 client as ::ffff:a.b.c.d: the header
 * gives the IPv4 address.  Mixed families and NULL give UNKNOWN / LOCAL. */
static void test_build_mapped_and_mixed(void **state)
{
	struct sockaddr_storage m1 = sa6("::ffff:192.0.2.1", 1000);
	struct sockaddr_storage m2 = sa6("::ffff:192.0.2.2", 2000);
	struct sockaddr_storage v4 = sa4("198.51.100.3", 3000);
	struct sockaddr_storage v6 = sa6("2001:db8::3", 3000);
	struct sockaddr_storage un;
	uint8_t out[PP_MAX_HEADER];
	struct pp_info info;
	int n;

	(void)state;
	n = pp_build(1, SA(m1), SA(m2), out, sizeof(out));
	assert_int_equal(n, 42);
	assert_memory_equal(out, "PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n", 42);
	n = pp_build(2, SA(m1), SA(m2), out, sizeof(out));
	assert_int_equal(n, 28);
	assert_int_equal(pp_parse(out, (size_t)n, &info, NULL), 28);
	assert_in4(&info.src, info.src_len, "192.0.2.1", 1000);
	assert_in4(&info.dst, info.dst_len, "192.0.2.2", 2000);
	/* mapped with plain IPv4: both IPv4 */
	n = pp_build(1, SA(m1), SA(v4), out, sizeof(out));
	assert_int_equal(n, 45);
	assert_memory_equal(out, "PROXY TCP4 192.0.2.1 198.51.100.3 1000 3000\r\n", 45);

	/* IPv4 with IPv6, NULLs and other families */
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNIX;
	const struct sockaddr *pairs[][2] = {
	    {SA(v4), SA(v6)}, {SA(v6), SA(m1)}, {NULL, SA(v4)},   {SA(v6), NULL},
	    {NULL, NULL},     {SA(un), SA(un)}, {SA(v4), SA(un)},
	};
	for (size_t i = 0; i < N_OF(pairs); i++) {
		n = pp_build(1, pairs[i][0], pairs[i][1], out, sizeof(out));
		assert_int_equal(n, 15);
		assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
		n = pp_build(2, pairs[i][0], pairs[i][1], out, sizeof(out));
		assert_int_equal(n, 16);
		assert_int_equal(out[12], 0x20);
		assert_int_equal(out[13], 0x00);
	}
}

static void test_build_local(void **state)
{
	static const uint8_t v2[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
	                               0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};
	uint8_t out[PP_MAX_HEADER];
	struct pp_info info;

	(void)state;
	assert_int_equal(pp_build_local(1, out, sizeof(out)), 15);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
	assert_int_equal(pp_parse(out, 15, &info, NULL), 15);
	assert_int_equal(info.version, 1);
	assert_int_equal(info.has_addr, 0);

	assert_int_equal(pp_build_local(2, out, sizeof(out)), 16);
	assert_memory_equal(out, v2, 16);
	assert_int_equal(pp_parse(out, 16, &info, NULL), 16);
	assert_int_equal(info.version, 2);
	assert_int_equal(info.has_addr, 0);

	assert_int_equal(pp_build_local(0, out, sizeof(out)), -1);
	assert_int_equal(pp_build_local(3, out, sizeof(out)), -1);
}

/* Too small a buffer gives -1 (and no partial header); exactly enough is
 * fine; PP_MAX_HEADER always is. */
static void test_build_capacity(void **state)
{
	struct sockaddr_storage s = sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	struct sockaddr_storage d = sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	uint8_t out[PP_MAX_HEADER];
	int full;

	(void)state;
	for (int version = 1; version <= 2; version++) {
		full = pp_build(version, SA(s), SA(d), out, PP_MAX_HEADER);
		assert_true(full > 0 && full <= PP_MAX_HEADER);
		memset(out, 0xee, sizeof(out));
		assert_int_equal(pp_build(version, SA(s), SA(d), out, (size_t)full - 1), -1);
		assert_int_equal(out[0], 0xee);
		assert_int_equal(pp_build(version, SA(s), SA(d), out, (size_t)full), full);
		assert_int_equal(pp_build(version, SA(s), SA(d), out, 0), -1);
		assert_int_equal(pp_build(version, NULL, NULL, out, 10), -1);
		full = pp_build_local(version, out, PP_MAX_HEADER);
		assert_int_equal(pp_build_local(version, out, (size_t)full - 1), -1);
		assert_int_equal(pp_build_local(version, out, (size_t)full), full);
	}
	assert_int_equal(pp_build(0, SA(s), SA(d), out, sizeof(out)), -1);
	assert_int_equal(pp_build(3, SA(s), SA(d), out, sizeof(out)), -1);
}

/* "No I/O, errno untouched": a caller may log errno after calling us. */
static void test_errno_untouched(void **state)
{
	struct sockaddr_storage s = sa6("2001:db8::1", 1), d = sa6("2001:db8::2", 2);
	uint8_t out[PP_MAX_HEADER];
	const char *err;

	(void)state;
	errno = 4242;
	assert_true(pp_build(1, SA(s), SA(d), out, sizeof(out)) > 0);
	assert_true(pp_build(2, SA(s), SA(d), out, 3) == -1);
	assert_true(pp_build_local(1, out, sizeof(out)) > 0);
	assert_int_equal(parse_str("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", NULL), 40);
	assert_int_equal(parse_str("PROXY TCP6 2001:db8::1 1::2::3 1 2\r\n", NULL), PP_ERR);
	assert_int_equal(parse("\r\n\r\n\0\r\nQUIT\n\x31", 13, NULL, &err), PP_ERR);
	assert_int_equal(parse_str("PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n", NULL), PP_ERR);
	assert_int_equal(errno, 4242);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_tcp4),          cmocka_unit_test(test_v1_tcp6),
	    cmocka_unit_test(test_v1_unknown),       cmocka_unit_test(test_v1_length_limit),
	    cmocka_unit_test(test_v1_malformed),     cmocka_unit_test(test_v1_early_decision),
	    cmocka_unit_test(test_error_reasons),    cmocka_unit_test(test_v2_tcp4),
	    cmocka_unit_test(test_v2_tcp6),          cmocka_unit_test(test_v2_tlvs_and_size_limit),
	    cmocka_unit_test(test_v2_no_address),    cmocka_unit_test(test_v2_malformed),
	    cmocka_unit_test(test_v2_bad_signature), cmocka_unit_test(test_every_prefix_needs_more),
	    cmocka_unit_test(test_v1_ipv6_forms),    cmocka_unit_test(test_build_exact_bytes),
	    cmocka_unit_test(test_roundtrip),        cmocka_unit_test(test_build_mapped_and_mixed),
	    cmocka_unit_test(test_build_local),      cmocka_unit_test(test_build_capacity),
	    cmocka_unit_test(test_errno_untouched),
	};

	return cmocka_run_group_tests_name("proxyproto", tests, NULL, NULL);
}
