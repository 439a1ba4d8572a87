/* test_parse.c - unit tests for the scalar parsers of src/config/parse.c:
 * durations, sizes, percentages, addresses, CIDR blocks and addr_format().
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "config/parse.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* --- durations ---------------------------------------------------------- */

static void test_duration_good(void **state)
{
	static const struct {
		const char *s;
		uint64_t ms;
	} cases[] = {
	    {"250ms", 250},
	    {"2s", 2000},
	    {"5m", 300000},
	    {"1h", 3600000},
	    {"0s", 0},
	    {"0ms", 0},
	    {"1ms", 1},
	    {"90s", 90000},
	    {"8760h", 31536000000ULL},
	    {"525600m", 31536000000ULL},
	    {"007s", 7000},
	};
	(void)state;
	for (size_t i = 0; i < N_OF(cases); i++) {
		uint64_t ms = 12345;

		assert_int_equal(parse_duration_ms(cases[i].s, &ms), 0);
		assert_int_equal(ms, cases[i].ms);
	}
}

static void test_duration_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    "5",
	    "s",
	    "ms",
	    "-1s",
	    "+1s",
	    "1.5s",
	    "2 s",
	    " 2s",
	    "2s ",
	    "2S",
	    "2sec",
	    "2d",
	    "1h1m",
	    "8761h",
	    "31536000001ms",
	    "99999999999999999999s",
	    "0x10s",
	};
	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		uint64_t ms = 777;

		assert_int_equal(parse_duration_ms(bad[i], &ms), -EINVAL);
		assert_int_equal(ms, 777); /* untouched on failure */
	}
	assert_int_equal(parse_duration_ms(NULL, NULL), -EINVAL);
}

/* --- sizes -------------------------------------------------------------- */

static void test_size_good(void **state)
{
	static const struct {
		const char *s;
		uint64_t bytes;
	} cases[] = {
	    {"0", 0},
	    {"4096", 4096},
	    {"64KiB", 64 * 1024},
	    {"4MiB", 4 * 1024 * 1024},
	    {"1GiB", 1024ULL * 1024 * 1024},
	    {"1024GiB", 1ULL << 40},
	    {"1099511627776", 1ULL << 40},
	};
	(void)state;
	for (size_t i = 0; i < N_OF(cases); i++) {
		uint64_t v = 1;

		assert_int_equal(parse_size(cases[i].s, &v), 0);
		assert_int_equal(v, cases[i].bytes);
	}
}

static void test_size_bad(void **state)
{
	static const char *const bad[] = {
	    "",   "KiB",    "4MB",   "4K",      "4kib",          "4 KiB",
	    "-1", "1.5MiB", "4KiBs", "1025GiB", "1099511627777", "999999999999999999",
	    "4B",
	};
	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		uint64_t v = 5;

		assert_int_equal(parse_size(bad[i], &v), -EINVAL);
		assert_int_equal(v, 5);
	}
}

/* --- percentages -------------------------------------------------------- */

static void test_percent(void **state)
{
	unsigned v = 0;

	(void)state;
	assert_int_equal(parse_percent("1%", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(parse_percent("70%", &v), 0);
	assert_int_equal(v, 70);
	assert_int_equal(parse_percent("100%", &v), 0);
	assert_int_equal(v, 100);

	static const char *const bad[] = {"0%",  "101%", "50", "%",   "50 %",
	                                  "-5%", "5.5%", "",   "50%%"};
	for (size_t i = 0; i < N_OF(bad); i++) {
		v = 9;
		assert_int_equal(parse_percent(bad[i], &v), -EINVAL);
		assert_int_equal(v, 9);
	}
}

/* --- addresses ---------------------------------------------------------- */

static void test_address_ipv4(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	bool wildcard = true;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

	(void)state;
	assert_int_equal(parse_address("127.0.0.1:8080", &ss, &len, &wildcard), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_false(wildcard);
	assert_int_equal(ntohs(sin->sin_port), 8080);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);

	assert_int_equal(parse_address("0.0.0.0:1", &ss, &len, &wildcard), 0);
	assert_false(wildcard); /* an explicit any-address is not the ":port" form */
	assert_int_equal(ntohs(sin->sin_port), 1);
	assert_int_equal(parse_address("255.255.255.255:65535", &ss, NULL, NULL), 0);
	assert_int_equal(ntohs(sin->sin_port), 65535);
}

static void test_address_ipv6(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	bool wildcard = true;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	struct in6_addr want;

	(void)state;
	assert_int_equal(parse_address("[::1]:8080", &ss, &len, &wildcard), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_false(wildcard);
	assert_int_equal(ntohs(sin6->sin6_port), 8080);
	assert_memory_equal(&sin6->sin6_addr, &in6addr_loopback, sizeof(want));

	assert_int_equal(parse_address("[2001:db8::42]:443", &ss, &len, &wildcard), 0);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::42", &want), 1);
	assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
	assert_int_equal(ntohs(sin6->sin6_port), 443);

	assert_int_equal(parse_address("[::ffff:10.1.2.3]:80", &ss, &len, &wildcard), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
}

static void test_address_wildcard(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	bool wildcard = false;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

	(void)state;
	assert_int_equal(parse_address(":9000", &ss, &len, &wildcard), 0);
	assert_true(wildcard);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(sin6->sin6_port), 9000);
	assert_memory_equal(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
}

static void test_address_host_names(void **state)
{
	static const char *const names[] = {
	    "localhost:80", "example.com:443", "db-1.internal:5432", "a.b.c.:1", "x1:2",
	};
	struct sockaddr_storage ss;
	socklen_t len = 3;
	bool wildcard = true;

	(void)state;
	for (size_t i = 0; i < N_OF(names); i++) {
		assert_int_equal(parse_address(names[i], &ss, &len, &wildcard), -EHOSTUNREACH);
		assert_int_equal(len, 3);
		assert_true(wildcard);
	}
	/* A bad port makes even a host name plainly invalid. */
	assert_int_equal(parse_address("localhost:0", &ss, &len, &wildcard), -EINVAL);
}

static void test_address_bad(void **state)
{
	static const char *const bad[] = {
	    "",
	    ":",
	    "127.0.0.1",
	    "127.0.0.1:",
	    "127.0.0.1:0",
	    ":65536",
	    "1.2.3.4:x",
	    "1.2.3.4:+80",
	    "1.2.3.4: 80",
	    "1.2.3.4:80 ",
	    "::1:80",
	    "::1",
	    "[::1]80",
	    "[::1]",
	    "[::1]:",
	    "[]:80",
	    "[localhost]:80",
	    "[1.2.3.4]:80",
	    "1.2.3.256:80",
	    "1.2.3:80",
	    "-bad.com:80",
	    "bad-.com:80",
	    "under_score:80",
	    "a..b:80",
	    "[::1]:80x",
	    " 1.2.3.4:80",
	    "[fe80::1%eth0]:80",
	    "1.2.3.4:99999999999999999999",
	};
	struct sockaddr_storage ss;
	socklen_t len = 3;
	bool wildcard = true;

	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		int rc = parse_address(bad[i], &ss, &len, &wildcard);

		if (rc != -EINVAL)
			print_error("address \"%s\" gave %d\n", bad[i], rc);
		assert_int_equal(rc, -EINVAL);
		assert_int_equal(len, 3);
		assert_true(wildcard);
	}
	assert_int_equal(parse_address(NULL, &ss, &len, &wildcard), -EINVAL);
}

/* --- CIDR --------------------------------------------------------------- */

static void test_cidr_parse(void **state)
{
	struct cidr c;
	uint8_t want[16];

	(void)state;
	assert_int_equal(parse_cidr("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[0], 10);

	assert_int_equal(parse_cidr("192.168.1.7", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(c.addr[3], 7);

	/* Host bits are cleared, as nginx does. */
	assert_int_equal(parse_cidr("10.1.2.3/12", &c), 0);
	assert_int_equal(c.addr[0], 10);
	assert_int_equal(c.addr[1], 0);
	assert_int_equal(c.addr[2], 0);
	assert_int_equal(c.addr[3], 0);

	assert_int_equal(parse_cidr("::1/128", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(inet_pton(AF_INET6, "::1", want), 1);
	assert_memory_equal(c.addr, want, 16);

	assert_int_equal(parse_cidr("2001:db8::/32", &c), 0);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(parse_cidr("::", &c), 0);
	assert_int_equal(c.prefix, 128);
	assert_int_equal(parse_cidr("0.0.0.0/0", &c), 0);
	assert_int_equal(c.prefix, 0);
}

static void test_cidr_bad(void **state)
{
	static const char *const bad[] = {
	    "",          "/8",          "10.0.0.0/",    "10.0.0.0/33", "::1/129",   "10.0.0.0/-1",
	    "10.0.0/8",  "foo/8",       "10.0.0.0/8/8", "10.0.0.0/ 8", "[::1]/128", "10.0.0.0/8x",
	    "localhost", "10.0.0.0:80", "10.0.0.0/+8",
	};
	struct cidr c = {.family = 99};

	(void)state;
	for (size_t i = 0; i < N_OF(bad); i++) {
		assert_int_equal(parse_cidr(bad[i], &c), -EINVAL);
		assert_int_equal(c.family, 99);
	}
}

static struct sockaddr_storage sa_of(const char *addr)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
	}
	return ss;
}

static bool match(const char *cidr, const char *addr)
{
	struct cidr c;
	struct sockaddr_storage ss = sa_of(addr);

	assert_int_equal(parse_cidr(cidr, &c), 0);
	return cidr_match(&c, (struct sockaddr *)&ss);
}

static void test_cidr_match_v4(void **state)
{
	(void)state;
	assert_true(match("10.0.0.0/8", "10.255.1.2"));
	assert_false(match("10.0.0.0/8", "11.0.0.1"));
	assert_true(match("192.168.0.0/13", "192.175.255.255"));
	assert_false(match("192.168.0.0/13", "192.176.0.0"));
	assert_true(match("127.0.0.1", "127.0.0.1"));
	assert_false(match("127.0.0.1/32", "127.0.0.2"));
	assert_true(match("0.0.0.0/0", "1.2.3.4"));
	assert_false(match("0.0.0.0/0", "2001:db8::1")); /* IPv4 block, IPv6 client */
}

static void test_cidr_match_v6(void **state)
{
	(void)state;
	assert_true(match("2001:db8::/32", "2001:db8:ffff::1"));
	assert_false(match("2001:db8::/32", "2001:db9::1"));
	assert_true(match("::1/128", "::1"));
	assert_false(match("::1/128", "::2"));
	assert_true(match("fe80::/10", "febf::1"));
	assert_false(match("fe80::/10", "fec0::1"));
	assert_false(match("::1/128", "127.0.0.1"));
	assert_true(match("::/0", "2001:db8::1"));
}

static void test_cidr_match_mapped(void **state)
{
	(void)state;
	/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
	assert_true(match("10.0.0.0/8", "::ffff:10.9.8.7"));
	assert_false(match("10.0.0.0/8", "::ffff:11.9.8.7"));
	assert_true(match("127.0.0.1/32", "::ffff:127.0.0.1"));
	/* And an IPv4 client matches a block written in mapped form. */
	assert_true(match("::ffff:10.0.0.0/104", "10.1.1.1"));
	assert_false(match("::ffff:10.0.0.0/104", "11.1.1.1"));
	assert_true(match("::ffff:10.0.0.0/104", "::ffff:10.1.1.1"));
}

static void test_cidr_match_odd_input(void **state)
{
	struct cidr c;
	struct sockaddr_storage ss;

	(void)state;
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_int_equal(parse_cidr("0.0.0.0/0", &c), 0);
	assert_false(cidr_match(&c, (struct sockaddr *)&ss));
	assert_false(cidr_match(NULL, (struct sockaddr *)&ss));
	assert_false(cidr_match(&c, NULL));
}

/* --- addr_format -------------------------------------------------------- */

static void test_addr_format(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"127.0.0.1:8080", "127.0.0.1:8080"},
	    {"[::1]:80", "[::1]:80"},
	    {"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443"},
	    {":9000", "[::]:9000"},
	    {"10.0.0.1:00080", "10.0.0.1:80"},
	};
	char buf[ADDR_STRLEN];
	struct sockaddr_storage ss;

	(void)state;
	for (size_t i = 0; i < N_OF(cases); i++) {
		assert_int_equal(parse_address(cases[i].in, &ss, NULL, NULL), 0);
		assert_ptr_equal(addr_format((struct sockaddr *)&ss, buf, sizeof(buf)), buf);
		assert_string_equal(buf, cases[i].out);
	}
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	assert_string_equal(addr_format((struct sockaddr *)&ss, buf, sizeof(buf)), "unknown");

	/* A short buffer is truncated, still terminated. */
	char small[6];
	assert_int_equal(parse_address("127.0.0.1:8080", &ss, NULL, NULL), 0);
	assert_string_equal(addr_format((struct sockaddr *)&ss, small, sizeof(small)), "127.0");
}

static void test_errno_untouched(void **state)
{
	struct sockaddr_storage ss;
	struct cidr c;
	uint64_t v;
	unsigned p;
	char buf[ADDR_STRLEN];

	(void)state;
	errno = 4242;
	assert_int_equal(parse_duration_ms("5", &v), -EINVAL);
	assert_int_equal(parse_size("5MB", &v), -EINVAL);
	assert_int_equal(parse_percent("0%", &p), -EINVAL);
	assert_int_equal(parse_address("bad:name:1", &ss, NULL, NULL), -EINVAL);
	assert_int_equal(parse_address("localhost:1", &ss, NULL, NULL), -EHOSTUNREACH);
	assert_int_equal(parse_address("[zz::1]:1", &ss, NULL, NULL), -EINVAL);
	assert_int_equal(parse_cidr("1.2.3.4/40", &c), -EINVAL);
	assert_int_equal(parse_cidr("gg::/8", &c), -EINVAL);
	assert_int_equal(parse_address("[::1]:1", &ss, NULL, NULL), 0);
	addr_format((struct sockaddr *)&ss, buf, sizeof(buf));
	assert_int_equal(errno, 4242);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_duration_good),
	    cmocka_unit_test(test_duration_bad),
	    cmocka_unit_test(test_size_good),
	    cmocka_unit_test(test_size_bad),
	    cmocka_unit_test(test_percent),
	    cmocka_unit_test(test_address_ipv4),
	    cmocka_unit_test(test_address_ipv6),
	    cmocka_unit_test(test_address_wildcard),
	    cmocka_unit_test(test_address_host_names),
	    cmocka_unit_test(test_address_bad),
	    cmocka_unit_test(test_cidr_parse),
	    cmocka_unit_test(test_cidr_bad),
	    cmocka_unit_test(test_cidr_match_v4),
	    cmocka_unit_test(test_cidr_match_v6),
	    cmocka_unit_test(test_cidr_match_mapped),
	    cmocka_unit_test(test_cidr_match_odd_input),
	    cmocka_unit_test(test_addr_format),
	    cmocka_unit_test(test_errno_untouched),
	};

	return cmocka_run_group_tests_name("parse", tests, NULL, NULL);
}
