/* test_lb.c - balancers: shares by weight, skipping of ineligible and
 * excluded backends, and Maglev's order independence and minimal disruption.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/lb.h"

#define T_MAX    32
#define T_NKEYS  100000u
#define T_KEYLEN 32

/* A set of backends and a balancer over them; one per test. */
struct fix {
	struct lb_backend be[T_MAX];
	struct lb_backend *ptr[T_MAX];
	char keys[T_MAX][T_KEYLEN];
	size_t n;
	struct lb lb;
	bool inited;
};

static int fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	*state = f;
	return 0;
}

static int fix_teardown(void **state)
{
	struct fix *f = *state;

	if (f->inited)
		lb_fini(&f->lb);
	free(f);
	return 0;
}

/* n backends "10.0.0.<i+1>:80", up, with the given weights (NULL: all 1). */
static void fix_backends(struct fix *f, size_t n, const unsigned *weights)
{
	assert_true(n <= T_MAX);
	f->n = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(f->keys[i], T_KEYLEN, "10.0.0.%zu:80", i + 1);
		f->be[i] = (struct lb_backend){
		    .key = f->keys[i],
		    .weight = weights ? weights[i] : 1,
		    .up = true,
		};
		f->ptr[i] = &f->be[i];
	}
}

static void fix_init(struct fix *f, enum balance_alg alg)
{
	assert_int_equal(lb_init(&f->lb, alg, f->ptr, f->n, 42), 0);
	f->inited = true;
}

static struct sockaddr_in t_v4(uint32_t addr, uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};

	sin.sin_addr.s_addr = htonl(addr);
	return sin;
}

/* Counts picks per backend over `rounds` picks; with `hold` each pick keeps
 * its connection open (active++). */
static void t_count(struct fix *f, unsigned rounds, bool hold, const uint64_t *exclude,
                    unsigned *count)
{
	memset(count, 0, sizeof(unsigned) * f->n);
	for (unsigned r = 0; r < rounds; r++) {
		int i = lb_pick(&f->lb, NULL, exclude);

		assert_true(i >= 0 && (size_t)i < f->n);
		count[i]++;
		if (hold)
			f->be[i].active++;
	}
}

/* Marks backend 0 down, 1 drained, 2 at max_connections, 4 excluded; only 3
 * and 5 may be picked.  Returns the exclude bitmap. */
static const uint64_t *t_make_unusable(struct fix *f)
{
	static uint64_t exclude[1];

	fix_backends(f, 6, NULL);
	f->be[0].up = false;
	f->be[1].drained = true;
	f->be[2].max_connections = 3;
	f->be[2].active = 3;
	exclude[0] = 1u << 4;
	return exclude;
}

static void t_check_skips(struct fix *f, enum balance_alg alg)
{
	const uint64_t *exclude = t_make_unusable(f);
	unsigned count[T_MAX];

	fix_init(f, alg);
	for (int r = 0; r < 600; r++) {
		struct sockaddr_in sin = t_v4(0xc0a80000u + (uint32_t)r, 1234);
		int i = lb_pick(&f->lb, (struct sockaddr *)&sin, exclude);

		assert_true(i == 3 || i == 5);
	}
	if (alg != BAL_SOURCE_HASH) {
		t_count(f, 600, false, exclude, count);
		assert_int_equal(count[0] + count[1] + count[2] + count[4], 0);
		assert_true(count[3] > 150 && count[5] > 150);
	}

	/* one below max: eligible again */
	f->be[2].active = 2;
	assert_true(lb_eligible(&f->be[2]));

	/* nothing usable: -1 */
	f->be[2].active = 3;
	f->be[3].up = false;
	f->be[5].drained = true;
	for (int r = 0; r < 10; r++) {
		struct sockaddr_in sin = t_v4(0x7f000001u + (uint32_t)r, 1);

		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, exclude), -1);
	}
	/* excluded alone: -1 too */
	f->be[3].up = true;
	{
		uint64_t all = 1u << 3 | 1u << 4;
		struct sockaddr_in sin = t_v4(0x7f000001u, 1);

		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, &all), -1);
		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, exclude), 3);
	}
}

/* --- eligibility ---------------------------------------------------------- */

static void test_eligible(void **state)
{
	(void)state;
	struct lb_backend b = {.key = "x", .weight = 1, .up = true};

	assert_true(lb_eligible(&b));
	b.active = 1000;
	assert_true(lb_eligible(&b)); /* max_connections 0: unlimited */
	b.max_connections = 1000;
	assert_false(lb_eligible(&b));
	b.active = 999;
	assert_true(lb_eligible(&b));
	b.drained = true;
	assert_false(lb_eligible(&b));
	b.drained = false;
	b.up = false;
	assert_false(lb_eligible(&b));
}

static void test_no_backends(void **state)
{
	struct fix *f = *state;

	f->n = 0;
	fix_init(f, BAL_SOURCE_HASH);
	assert_int_equal(lb_pick(&f->lb, NULL, NULL), -1);
	assert_int_equal(lb_maglev_lookup(&f->lb, 7), -1);
}

/* --- round robin ---------------------------------------------------------- */

static void test_rr_exact_shares(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {1, 2, 3};
	unsigned count[T_MAX];

	fix_backends(f, 3, w);
	fix_init(f, BAL_ROUND_ROBIN);
	t_count(f, 6000, false, NULL, count);
	assert_int_equal(count[0], 1000);
	assert_int_equal(count[1], 2000);
	assert_int_equal(count[2], 3000);
}

static void test_rr_smooth_sequence(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {5, 1, 1};
	const int want[] = {0, 0, 1, 0, 2, 0, 0};

	fix_backends(f, 3, w);
	fix_init(f, BAL_ROUND_ROBIN);
	for (int round = 0; round < 3; round++)
		for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
			assert_int_equal(lb_pick(&f->lb, NULL, NULL), want[k]);
}

static void test_rr_equal_weights_in_turn(void **state)
{
	struct fix *f = *state;

	fix_backends(f, 4, NULL);
	fix_init(f, BAL_ROUND_ROBIN);
	for (int k = 0; k < 20; k++)
		assert_int_equal(lb_pick(&f->lb, NULL, NULL), k % 4);
}

static void test_rr_skips(void **state)
{
	t_check_skips(*state, BAL_ROUND_ROBIN);
}

/* A backend that comes back shares again by weight among the others. */
static void test_rr_recovers(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {1, 1, 2};
	unsigned count[T_MAX];

	fix_backends(f, 3, w);
	fix_init(f, BAL_ROUND_ROBIN);
	f->be[2].up = false;
	t_count(f, 100, false, NULL, count);
	assert_int_equal(count[0], 50);
	assert_int_equal(count[1], 50);
	assert_int_equal(count[2], 0);
	f->be[2].up = true;
	t_count(f, 4000, false, NULL, count);
	assert_in_range(count[2], 1990, 2010);
}

/* --- least connections ---------------------------------------------------- */

static void test_lc_relative_to_weight(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {1, 2, 3};
	unsigned count[T_MAX];

	fix_backends(f, 3, w);
	fix_init(f, BAL_LEAST_CONN);
	t_count(f, 600, true, NULL, count);
	assert_in_range(count[0], 99, 101);
	assert_in_range(count[1], 199, 201);
	assert_in_range(count[2], 299, 301);

	/* the one with the fewest relative to its weight wins */
	f->be[0].active = 10; /* 10/1 */
	f->be[1].active = 12; /* 6/1 */
	f->be[2].active = 21; /* 7/1 */
	for (int k = 0; k < 5; k++)
		assert_int_equal(lb_pick(&f->lb, NULL, NULL), 1);
}

static void test_lc_ties_in_turn(void **state)
{
	struct fix *f = *state;

	fix_backends(f, 3, NULL);
	fix_init(f, BAL_LEAST_CONN);
	/* without holding connections everything stays tied */
	for (int k = 0; k < 12; k++)
		assert_int_equal(lb_pick(&f->lb, NULL, NULL), k % 3);

	/* two tied, one busier: the two alternate */
	f->be[0].active = 5;
	f->be[1].active = 2;
	f->be[2].active = 2;
	int first = lb_pick(&f->lb, NULL, NULL);
	assert_true(first == 1 || first == 2);
	for (int k = 0; k < 10; k++) {
		int i = lb_pick(&f->lb, NULL, NULL);

		assert_int_equal(i, 3 - first);
		first = i;
	}
}

static void test_lc_skips(void **state)
{
	t_check_skips(*state, BAL_LEAST_CONN);
}

/* --- random (power of two choices) ---------------------------------------- */

static void test_p2c_follows_weights(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {1, 2, 3};
	unsigned count[T_MAX];

	fix_backends(f, 3, w);
	fix_init(f, BAL_RANDOM);
	/* idle backends tie, so the first draw (by weight) decides */
	t_count(f, 60000, false, NULL, count);
	assert_in_range(count[0], 9000, 11000);
	assert_in_range(count[1], 18500, 21500);
	assert_in_range(count[2], 28500, 31500);

	/* held connections: load per weight stays close */
	for (size_t i = 0; i < 3; i++)
		f->be[i].active = 0;
	t_count(f, 6000, true, NULL, count);
	assert_in_range(count[0], 850, 1150);
	assert_in_range(count[1], 1800, 2200);
	assert_in_range(count[2], 2750, 3250);
}

static void test_p2c_prefers_less_loaded(void **state)
{
	struct fix *f = *state;
	unsigned count[T_MAX];

	/* two candidates: both are always drawn, the idle one always wins */
	fix_backends(f, 2, NULL);
	fix_init(f, BAL_RANDOM);
	f->be[0].active = 10;
	t_count(f, 1000, false, NULL, count);
	assert_int_equal(count[0], 0);
	assert_int_equal(count[1], 1000);
	lb_fini(&f->lb);

	/* the busiest of several never wins: it loses every pair */
	fix_backends(f, 4, NULL);
	fix_init(f, BAL_RANDOM);
	f->be[2].active = 100;
	t_count(f, 4000, false, NULL, count);
	assert_int_equal(count[2], 0);
	assert_true(count[0] > 1000 && count[1] > 1000 && count[3] > 1000);

	/* loaded relative to weight: 10/4 beats 3/1 */
	const unsigned w[] = {4, 1};
	fix_backends(f, 2, w);
	lb_fini(&f->lb);
	fix_init(f, BAL_RANDOM);
	f->be[0].active = 10;
	f->be[1].active = 3;
	t_count(f, 100, false, NULL, count);
	assert_int_equal(count[0], 100);
}

static void test_p2c_seeded(void **state)
{
	struct fix *f = *state;
	struct lb other;
	int same = 0;

	fix_backends(f, 8, NULL);
	fix_init(f, BAL_RANDOM);
	assert_int_equal(lb_init(&other, BAL_RANDOM, f->ptr, f->n, 42), 0);
	for (int k = 0; k < 1000; k++)
		assert_int_equal(lb_pick(&f->lb, NULL, NULL), lb_pick(&other, NULL, NULL));
	lb_fini(&other);

	assert_int_equal(lb_init(&other, BAL_RANDOM, f->ptr, f->n, 43), 0);
	for (int k = 0; k < 1000; k++)
		same += lb_pick(&f->lb, NULL, NULL) == lb_pick(&other, NULL, NULL);
	assert_true(same < 500);
	lb_fini(&other);
}

static void test_p2c_skips(void **state)
{
	t_check_skips(*state, BAL_RANDOM);
}

static void test_p2c_single(void **state)
{
	struct fix *f = *state;

	fix_backends(f, 3, NULL);
	fix_init(f, BAL_RANDOM);
	f->be[0].up = false;
	f->be[2].up = false;
	f->be[1].active = 1000;
	for (int k = 0; k < 100; k++)
		assert_int_equal(lb_pick(&f->lb, NULL, NULL), 1);
}

/* --- source hash (Maglev) ------------------------------------------------- */

/* Key k of the measurements: well spread 64-bit values. */
static uint64_t t_key(uint64_t k)
{
	k += 0x9e3779b97f4a7c15ULL;
	k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ULL;
	k = (k ^ (k >> 27)) * 0x94d049bb133111ebULL;
	return k ^ (k >> 31);
}

static const char *t_owner(const struct lb *lb, uint64_t key)
{
	int i = lb_maglev_lookup(lb, key);

	assert_true(i >= 0 && (size_t)i < lb->n);
	return lb->b[i]->key;
}

static void test_maglev_order_independent(void **state)
{
	struct fix *f = *state;
	struct lb_backend *rev[T_MAX];
	struct lb other;
	const unsigned w[] = {1, 3, 2, 1, 1, 5, 1, 2, 1, 1};

	fix_backends(f, 10, w);
	fix_init(f, BAL_SOURCE_HASH);
	/* the same backends, listed in another order */
	for (size_t i = 0; i < f->n; i++)
		rev[i] = f->ptr[(i * 7 + 3) % f->n];
	assert_int_equal(lb_init(&other, BAL_SOURCE_HASH, rev, f->n, 99), 0);

	for (uint32_t j = 0; j < LB_MAGLEV_SIZE; j++)
		assert_string_equal(f->ptr[f->lb.maglev[j]]->key, rev[other.maglev[j]]->key);
	for (uint64_t k = 0; k < T_NKEYS; k++)
		assert_string_equal(t_owner(&f->lb, t_key(k)), t_owner(&other, t_key(k)));

	/* fallbacks agree too: same backend down in both */
	f->be[5].up = false;
	for (uint32_t c = 0; c < 2000; c++) {
		struct sockaddr_in sin = t_v4(0x0a010000u + c, 5000);
		int a = lb_pick(&f->lb, (struct sockaddr *)&sin, NULL);
		int b = lb_pick(&other, (struct sockaddr *)&sin, NULL);

		assert_true(a >= 0 && b >= 0);
		assert_int_not_equal(a, 5);
		assert_string_equal(f->ptr[a]->key, rev[b]->key);
	}
	lb_fini(&other);
}

/* Builds a source_hash balancer over `n` backends "10.0.0.<id>:80" where ids
 * are taken from `ids`. */
static void t_build_ids(struct lb *lb, struct lb_backend *be, struct lb_backend **ptr,
                        char (*keys)[T_KEYLEN], const unsigned *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		snprintf(keys[i], T_KEYLEN, "10.0.0.%u:80", ids[i]);
		be[i] = (struct lb_backend){.key = keys[i], .weight = 1, .up = true};
		ptr[i] = &be[i];
	}
	assert_int_equal(lb_init(lb, BAL_SOURCE_HASH, ptr, n, 0), 0);
}

/* Fraction of keys whose owner changes between a and b, and among the keys
 * whose owner exists in both, the fraction that moved anyway. */
static void t_movement(const struct lb *a, const struct lb *b, const char *gone, double *moved,
                       double *collateral)
{
	unsigned n_moved = 0, n_kept_owner = 0, n_collateral = 0;

	for (uint64_t k = 0; k < T_NKEYS; k++) {
		const char *oa = t_owner(a, t_key(k));
		const char *ob = t_owner(b, t_key(k));
		bool changed = strcmp(oa, ob) != 0;

		n_moved += changed;
		if (!gone || strcmp(oa, gone) != 0) {
			n_kept_owner++;
			n_collateral += changed;
		}
	}
	*moved = (double)n_moved / T_NKEYS;
	*collateral = n_kept_owner ? (double)n_collateral / n_kept_owner : 0;
}

static void test_maglev_remove_one(void **state)
{
	struct fix *f = *state;
	const unsigned all[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	const unsigned less[] = {1, 2, 3, 5, 6, 7, 8, 9, 10}; /* 4 removed */
	struct lb_backend be2[T_MAX], *ptr2[T_MAX];
	char keys2[T_MAX][T_KEYLEN];
	struct lb other;
	double moved, collateral;

	t_build_ids(&f->lb, f->be, f->ptr, f->keys, all, 10);
	f->n = 10;
	f->inited = true;
	t_build_ids(&other, be2, ptr2, keys2, less, 9);

	t_movement(&f->lb, &other, "10.0.0.4:80", &moved, &collateral);
	assert_true(moved >= 0.7 / 10 && moved <= 1.5 / 10);
	assert_true(collateral < 0.03);

	/* every key of the removed backend moved; nobody else's went to it */
	for (uint64_t k = 0; k < T_NKEYS; k++)
		assert_string_not_equal(t_owner(&other, t_key(k)), "10.0.0.4:80");
	lb_fini(&other);
}

static void test_maglev_add_one(void **state)
{
	struct fix *f = *state;
	const unsigned ten[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	const unsigned eleven[] = {11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	struct lb_backend be2[T_MAX], *ptr2[T_MAX];
	char keys2[T_MAX][T_KEYLEN];
	struct lb other;
	double moved, collateral;
	unsigned to_new = 0;

	t_build_ids(&f->lb, f->be, f->ptr, f->keys, ten, 10);
	f->n = 10;
	f->inited = true;
	t_build_ids(&other, be2, ptr2, keys2, eleven, 11);

	t_movement(&f->lb, &other, NULL, &moved, &collateral);
	assert_true(moved >= 0.7 / 11 && moved <= 1.5 / 11);
	for (uint64_t k = 0; k < T_NKEYS; k++)
		to_new += strcmp(t_owner(&other, t_key(k)), "10.0.0.11:80") == 0;
	/* most of the movement is towards the new backend */
	assert_true((double)to_new / T_NKEYS >= 0.7 / 11);
	assert_true(moved - (double)to_new / T_NKEYS < 0.03);
	lb_fini(&other);
}

static void test_maglev_weights(void **state)
{
	struct fix *f = *state;
	const unsigned w[] = {1, 2, 3, 4};
	unsigned count[T_MAX] = {0};

	fix_backends(f, 4, w);
	fix_init(f, BAL_SOURCE_HASH);
	for (uint32_t j = 0; j < LB_MAGLEV_SIZE; j++)
		count[f->lb.maglev[j]]++;
	for (size_t i = 0; i < 4; i++) {
		double share = (double)count[i] / LB_MAGLEV_SIZE;
		double want = w[i] / 10.0;

		assert_true(share > want * 0.98 && share < want * 1.02);
	}

	/* and clients follow the table */
	memset(count, 0, sizeof(count));
	for (uint32_t c = 0; c < T_NKEYS; c++) {
		struct sockaddr_in sin = t_v4(0x0b000000u + c * 7919u, 80);

		count[lb_pick(&f->lb, (struct sockaddr *)&sin, NULL)]++;
	}
	for (size_t i = 0; i < 4; i++) {
		double share = (double)count[i] / T_NKEYS;
		double want = w[i] / 10.0;

		assert_true(share > want * 0.93 && share < want * 1.07);
	}
}

static void test_maglev_client_port_ignored(void **state)
{
	struct fix *f = *state;

	fix_backends(f, 10, NULL);
	fix_init(f, BAL_SOURCE_HASH);
	for (uint32_t c = 0; c < 1000; c++) {
		struct sockaddr_in a = t_v4(0xc0000200u + c, 1000);
		struct sockaddr_in b = t_v4(0xc0000200u + c, 60000);
		struct sockaddr_in6 m = {.sin6_family = AF_INET6, .sin6_port = htons(7)};
		uint32_t be = htonl(0xc0000200u + c);

		/* ::ffff:a.b.c.d is the same client as a.b.c.d */
		m.sin6_addr.s6_addr[10] = 0xff;
		m.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&m.sin6_addr.s6_addr[12], &be, 4);

		assert_true(lb_hash_client((struct sockaddr *)&a) ==
		            lb_hash_client((struct sockaddr *)&b));
		assert_true(lb_hash_client((struct sockaddr *)&a) ==
		            lb_hash_client((struct sockaddr *)&m));
		int i = lb_pick(&f->lb, (struct sockaddr *)&a, NULL);
		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&b, NULL), i);
		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&m, NULL), i);
		assert_int_equal(lb_maglev_lookup(&f->lb, lb_hash_client((struct sockaddr *)&a)),
		                 i);
	}
}

static void test_maglev_ipv6(void **state)
{
	struct fix *f = *state;
	unsigned count[T_MAX] = {0};

	fix_backends(f, 4, NULL);
	fix_init(f, BAL_SOURCE_HASH);
	for (uint32_t c = 0; c < 4000; c++) {
		struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
		struct sockaddr_in6 b;

		assert_int_equal(inet_pton(AF_INET6, "2001:db8::", &a.sin6_addr), 1);
		a.sin6_addr.s6_addr[14] = (uint8_t)(c >> 8);
		a.sin6_addr.s6_addr[15] = (uint8_t)c;
		b = a;
		b.sin6_port = htons(443);
		int i = lb_pick(&f->lb, (struct sockaddr *)&a, NULL);
		assert_true(i >= 0 && i < 4);
		assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&b, NULL), i);
		count[i]++;
	}
	for (size_t i = 0; i < 4; i++)
		assert_in_range(count[i], 800, 1200);

	/* the whole address counts, not only its low bytes */
	struct sockaddr_in6 x = {.sin6_family = AF_INET6}, y = {.sin6_family = AF_INET6};
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &x.sin6_addr), 1);
	assert_int_equal(inet_pton(AF_INET6, "2001:db9::1", &y.sin6_addr), 1);
	assert_true(lb_hash_client((struct sockaddr *)&x) != lb_hash_client((struct sockaddr *)&y));
}

/* A client whose backend is down or excluded goes elsewhere, and back when
 * it returns; lookups ignore the state. */
static void test_maglev_fallback(void **state)
{
	struct fix *f = *state;
	struct sockaddr_in sin = t_v4(0xc6336401u, 4000);
	uint64_t exclude[1] = {0};
	int home, alt, alt2;

	fix_backends(f, 5, NULL);
	fix_init(f, BAL_SOURCE_HASH);
	home = lb_pick(&f->lb, (struct sockaddr *)&sin, NULL);
	assert_true(home >= 0);

	f->be[home].up = false;
	alt = lb_pick(&f->lb, (struct sockaddr *)&sin, NULL);
	assert_true(alt >= 0 && alt != home);
	assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, NULL), alt); /* stable */
	assert_int_equal(lb_maglev_lookup(&f->lb, lb_hash_client((struct sockaddr *)&sin)), home);

	/* retry on another: exclude the fallback as well */
	exclude[0] = 1ull << alt;
	alt2 = lb_pick(&f->lb, (struct sockaddr *)&sin, exclude);
	assert_true(alt2 >= 0 && alt2 != home && alt2 != alt);

	f->be[home].up = true;
	assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, NULL), home);
	exclude[0] = 1ull << home;
	assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, exclude), alt);

	/* a full backend is skipped like a down one */
	f->be[home].max_connections = 1;
	f->be[home].active = 1;
	assert_int_equal(lb_pick(&f->lb, (struct sockaddr *)&sin, NULL), alt);
}

static void test_maglev_skips(void **state)
{
	t_check_skips(*state, BAL_SOURCE_HASH);
}

/* Exclusion works past the first 64 backends (bit i of exclude[i / 64]). */
static void test_exclude_high_bits(void **state)
{
	static struct lb_backend be[130];
	static struct lb_backend *ptr[130];
	static char keys[130][T_KEYLEN];
	uint64_t exclude[3];
	const enum balance_alg algs[] = {BAL_ROUND_ROBIN, BAL_LEAST_CONN, BAL_RANDOM,
	                                 BAL_SOURCE_HASH};
	struct lb lb;

	(void)state;
	for (size_t i = 0; i < 130; i++) {
		snprintf(keys[i], T_KEYLEN, "[2001:db8::%zx]:80", i);
		be[i] = (struct lb_backend){.key = keys[i], .weight = 1, .up = true};
		ptr[i] = &be[i];
	}
	for (size_t a = 0; a < 4; a++) {
		assert_int_equal(lb_init(&lb, algs[a], ptr, 130, 7), 0);
		memset(exclude, 0xff, sizeof(exclude));
		exclude[1] &= ~(1ull << (100 - 64));
		for (uint32_t c = 0; c < 50; c++) {
			struct sockaddr_in sin = t_v4(c, 1);

			assert_int_equal(lb_pick(&lb, (struct sockaddr *)&sin, exclude), 100);
		}
		exclude[1] |= 1ull << (100 - 64);
		assert_int_equal(lb_pick(&lb, NULL, exclude), -1);
		lb_fini(&lb);
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fix_setup, fix_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_eligible),
	    T(test_no_backends),
	    T(test_rr_exact_shares),
	    T(test_rr_smooth_sequence),
	    T(test_rr_equal_weights_in_turn),
	    T(test_rr_skips),
	    T(test_rr_recovers),
	    T(test_lc_relative_to_weight),
	    T(test_lc_ties_in_turn),
	    T(test_lc_skips),
	    T(test_p2c_follows_weights),
	    T(test_p2c_prefers_less_loaded),
	    T(test_p2c_seeded),
	    T(test_p2c_skips),
	    T(test_p2c_single),
	    T(test_maglev_order_independent),
	    T(test_maglev_remove_one),
	    T(test_maglev_add_one),
	    T(test_maglev_weights),
	    T(test_maglev_client_port_ignored),
	    T(test_maglev_ipv6),
	    T(test_maglev_fallback),
	    T(test_maglev_skips),
	    T(test_exclude_high_bits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
