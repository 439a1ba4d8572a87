/* test_health.c - unit tests for the pure parts of src/relay/health.c: the
 * rise/fall state machine (active and passive results) with its packed
 * form, and the streaming `expect` matcher, whose matches must be found
 * whatever the receive boundaries are.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "relay/health.h"

/* --- state machine ---------------------------------------------------------- */

static enum health_change act(struct health_state *st, unsigned rise, unsigned fall, bool ok)
{
	return health_step(st, rise, fall, HEALTH_ACTIVE, ok);
}

static enum health_change pas(struct health_state *st, unsigned rise, unsigned fall, bool ok)
{
	return health_step(st, rise, fall, HEALTH_PASSIVE, ok);
}

static void test_fall_then_rise(void **state)
{
	(void)state;
	struct health_state st = {0};
	assert_int_equal(act(&st, 2, 3, false), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_SAME);
	assert_false(st.down);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_WENT_DOWN);
	assert_true(st.down);
	/* more failures while down: no second transition */
	assert_int_equal(act(&st, 2, 3, false), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_SAME);
	assert_true(st.down);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_WENT_UP);
	assert_false(st.down);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_SAME);
}

static void test_streaks_are_consecutive(void **state)
{
	(void)state;
	struct health_state st = {0};
	/* a success between failures restarts the fall count */
	act(&st, 2, 3, false);
	act(&st, 2, 3, false);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_SAME);
	act(&st, 2, 3, false);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_WENT_DOWN);
	/* a failure between successes restarts the rise count */
	act(&st, 2, 3, true);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 3, true), HEALTH_WENT_UP);
}

static void test_rise_fall_one(void **state)
{
	(void)state;
	struct health_state st = {0};
	for (int i = 0; i < 5; i++) {
		assert_int_equal(act(&st, 1, 1, false), HEALTH_WENT_DOWN);
		assert_int_equal(act(&st, 1, 1, true), HEALTH_WENT_UP);
	}
}

static void test_passive_failures_count(void **state)
{
	(void)state;
	struct health_state st = {0};
	assert_int_equal(pas(&st, 2, 2, false), HEALTH_SAME);
	assert_int_equal(pas(&st, 2, 2, false), HEALTH_WENT_DOWN);
	/* passive successes never bring a backend up */
	for (int i = 0; i < 10; i++)
		assert_int_equal(pas(&st, 2, 2, true), HEALTH_SAME);
	assert_true(st.down);
	/* a passive failure while down restarts the rise streak */
	act(&st, 2, 2, true);
	pas(&st, 2, 2, false);
	assert_int_equal(act(&st, 2, 2, true), HEALTH_SAME);
	assert_int_equal(act(&st, 2, 2, true), HEALTH_WENT_UP);
}

static void test_mixed_failures_add_up(void **state)
{
	(void)state;
	struct health_state st = {0};
	act(&st, 2, 3, false);
	pas(&st, 2, 3, false);
	assert_int_equal(act(&st, 2, 3, false), HEALTH_WENT_DOWN);
}

static void test_passive_success_forgives_passive_only(void **state)
{
	(void)state;
	struct health_state st = {0};
	/* refused, refused, fine: the two are forgiven */
	pas(&st, 2, 3, false);
	pas(&st, 2, 3, false);
	pas(&st, 2, 3, true);
	assert_int_equal(st.fails, 0);
	assert_int_equal(pas(&st, 2, 3, false), HEALTH_SAME);
	assert_int_equal(pas(&st, 2, 3, false), HEALTH_SAME);
	pas(&st, 2, 3, true);

	/* active failures stand: a backend failing `expect` goes down even
	 * while clients connect to it fine */
	struct health_state s2 = {0};
	act(&s2, 2, 3, false);
	pas(&s2, 2, 3, true);
	act(&s2, 2, 3, false);
	pas(&s2, 2, 3, true);
	assert_int_equal(act(&s2, 2, 3, false), HEALTH_WENT_DOWN);

	/* active, passive, passive-ok: the active one remains */
	struct health_state s3 = {0};
	act(&s3, 2, 3, false);
	pas(&s3, 2, 3, false);
	pas(&s3, 2, 3, true);
	assert_int_equal(s3.fails, 1);
	assert_int_equal(s3.pfails, 0);

	/* an active success clears passive failures too */
	struct health_state s4 = {0};
	pas(&s4, 2, 3, false);
	pas(&s4, 2, 3, false);
	act(&s4, 2, 3, true);
	assert_int_equal(s4.fails, 0);
	assert_int_equal(s4.pfails, 0);
}

static void test_pack_roundtrip(void **state)
{
	(void)state;
	struct health_state zero = {0};
	assert_int_equal(health_pack(&zero), 0);
	struct health_state st = {.fails = 7, .pfails = 3, .oks = 99, .down = true};
	struct health_state back;
	health_unpack(health_pack(&st), &back);
	assert_int_equal(back.fails, 7);
	assert_int_equal(back.pfails, 3);
	assert_int_equal(back.oks, 99);
	assert_true(back.down);
	/* saturation instead of wrapping into the next field */
	struct health_state big = {.fails = 1000, .pfails = 300, .oks = 256, .down = false};
	health_unpack(health_pack(&big), &back);
	assert_int_equal(back.fails, 255);
	assert_int_equal(back.pfails, 255);
	assert_int_equal(back.oks, 255);
	assert_false(back.down);
	/* the step function keeps counts within the packed range */
	struct health_state s = {0};
	for (int i = 0; i < 1000; i++)
		act(&s, 100, 100, false), act(&s, 100, 100, false);
	assert_true(s.down);
	for (int i = 0; i < 99; i++)
		assert_int_equal(act(&s, 100, 100, true), HEALTH_SAME);
	assert_int_equal(act(&s, 100, 100, true), HEALTH_WENT_UP);
}

/* --- matcher ------------------------------------------------------------------ */

static bool feed_split(const char *pat, size_t plen, const char *data, size_t dlen,
                       const size_t *cuts, size_t ncuts)
{
	struct health_matcher m;
	assert_int_equal(health_matcher_init(&m, pat, plen), 0);
	size_t st = 0, pos = 0;
	bool found = false;
	for (size_t i = 0; i <= ncuts && !found; i++) {
		size_t end = i < ncuts ? cuts[i] : dlen;
		found = health_matcher_feed(&m, &st, data + pos, end - pos);
		pos = end;
	}
	health_matcher_fini(&m);
	return found;
}

static bool feed_whole(const char *pat, const char *data)
{
	return feed_split(pat, strlen(pat), data, strlen(data), NULL, 0);
}

static void test_match_basic(void **state)
{
	(void)state;
	assert_true(feed_whole("+PONG", "+PONG\r\n"));
	assert_true(feed_whole("+PONG", "xx+PONG"));
	assert_false(feed_whole("+PONG", "-ERR unknown\r\n"));
	assert_false(feed_whole("+PONG", "+PON"));
	assert_true(feed_whole("aab", "aaab"));
	assert_true(feed_whole("abab", "abaabab"));
	assert_true(feed_whole("abcabd", "abcabcabd"));
	assert_false(feed_whole("abcabd", "abcabcab"));
	assert_true(feed_whole("", "anything"));
	assert_true(feed_whole("", ""));
}

static void test_match_with_nul(void **state)
{
	(void)state;
	const char pat[] = {'\0', 'O', 'K', '\0'};
	const char data[] = {'x', '\0', 'O', '\0', 'O', 'K', '\0', 'y'};
	assert_true(feed_split(pat, sizeof(pat), data, sizeof(data), NULL, 0));
	const char bad[] = {'x', '\0', 'O', 'K', 'y'};
	assert_false(feed_split(pat, sizeof(pat), bad, sizeof(bad), NULL, 0));
}

/* Every way of cutting the data in two and three pieces, and byte by byte. */
static void test_match_every_boundary(void **state)
{
	(void)state;
	const char *pat = "HTTP/1.1 200";
	const char *data = "HTTP/1.HTTP/1.1 20HTTP/1.1 200 OK\r\n";
	size_t n = strlen(data);
	for (size_t a = 0; a <= n; a++) {
		size_t one[1] = {a};
		assert_true(feed_split(pat, strlen(pat), data, n, one, 1));
		for (size_t b = a; b <= n; b++) {
			size_t two[2] = {a, b};
			assert_true(feed_split(pat, strlen(pat), data, n, two, 2));
		}
	}
	size_t cuts[64];
	for (size_t i = 0; i < n; i++)
		cuts[i] = i + 1;
	assert_true(feed_split(pat, strlen(pat), data, n, cuts, n - 1));
	/* the same data minus the last '0' never matches, however cut */
	const char *near = "HTTP/1.HTTP/1.1 20HTTP/1.1 20 OK\r\n";
	size_t m = strlen(near);
	for (size_t a = 0; a <= m; a++) {
		size_t one[1] = {a};
		assert_false(feed_split(pat, strlen(pat), near, m, one, 1));
	}
}

/* Random patterns over a two-letter alphabet (many partial matches) against
 * memmem, with random cuts. */
static void test_match_random_vs_memmem(void **state)
{
	(void)state;
	uint64_t x = 88172645463325252ull;
	for (int round = 0; round < 5000; round++) {
		char pat[8], data[64];
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t plen = 1 + x % sizeof(pat);
		size_t dlen = (x >> 8) % sizeof(data);
		for (size_t i = 0; i < plen; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			pat[i] = (char)('a' + (x & 1));
		}
		for (size_t i = 0; i < dlen; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			data[i] = (char)('a' + (x & 1));
		}
		size_t cuts[4], nc = 0;
		for (size_t i = 0; i < 4; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			size_t c = dlen ? x % (dlen + 1) : 0;
			if (nc == 0 || c >= cuts[nc - 1])
				cuts[nc++] = c;
		}
		bool want = memmem(data, dlen, pat, plen) != NULL;
		assert_int_equal(feed_split(pat, plen, data, dlen, cuts, nc), want);
	}
}

static void test_match_state_stays_found(void **state)
{
	(void)state;
	struct health_matcher m;
	assert_int_equal(health_matcher_init(&m, "ok", 2), 0);
	size_t st = 0;
	assert_true(health_matcher_feed(&m, &st, "ok", 2));
	assert_true(health_matcher_feed(&m, &st, "zz", 2));
	assert_true(health_matcher_feed(&m, &st, "", 0));
	health_matcher_fini(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fall_then_rise),
	    cmocka_unit_test(test_streaks_are_consecutive),
	    cmocka_unit_test(test_rise_fall_one),
	    cmocka_unit_test(test_passive_failures_count),
	    cmocka_unit_test(test_mixed_failures_add_up),
	    cmocka_unit_test(test_passive_success_forgives_passive_only),
	    cmocka_unit_test(test_pack_roundtrip),
	    cmocka_unit_test(test_match_basic),
	    cmocka_unit_test(test_match_with_nul),
	    cmocka_unit_test(test_match_every_boundary),
	    cmocka_unit_test(test_match_random_vs_memmem),
	    cmocka_unit_test(test_match_state_stays_found),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
