/* lb.c - backend selection for proxy services (SPEC section 3).
 *
 * Every algorithm considers only the backends that are eligible
 * (lb_eligible) and not excluded by the caller; when none is, lb_pick()
 * returns -1.  Nothing here allocates after lb_init(), and nothing changes the
 * backends: the relay owns them and updates `active`, `up` and `drained`.
 *
 * A weight of 0 (which the configuration never produces) counts as 1.
 *
 * round_robin  nginx's smooth weighted round robin: each pick adds every
 *              candidate's weight to its current weight, takes the largest
 *              (the lowest index on a tie) and subtracts the candidates'
 *              total from it.  Exact shares, spread out: 5,1,1 gives
 *              a a b a c a a.
 * least_conn   the smallest active/weight, compared as cross products so it
 *              stays in integers; the scan starts after the last pick, so
 *              equal candidates are taken in turn.
 * random       two distinct candidates drawn by weight (xorshift64*), the
 *              one with the smaller active/weight wins (the first drawn on a
 *              tie, so an idle pool follows the weights).
 * source_hash  Maglev (Eisenbud et al., NSDI 2016); see lb_maglev_build().
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "lb/lb.h"

#define LB_MAGLEV_EMPTY UINT32_MAX

/* Seeds of the three independent hashes. */
#define LB_SEED_OFFSET 0x6d61676c65762d6fULL
#define LB_SEED_SKIP   0x736b69702d2d2d73ULL
#define LB_SEED_CLIENT 0x636c69656e742d63ULL

/* splitmix64's finaliser: a bijection that spreads every input bit. */
static uint64_t lb_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* FNV-1a 64 over the bytes, started from a seeded basis, then finalised:
 * fixed across builds and hosts, so two ferry instances agree. */
static uint64_t lb_hash_bytes(const void *data, size_t len, uint64_t seed)
{
	const uint8_t *p = data;
	uint64_t h = 0xcbf29ce484222325ULL ^ lb_mix64(seed);

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return lb_mix64(h ^ len);
}

static uint64_t lb_rand(struct lb *lb)
{
	uint64_t x = lb->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	lb->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static unsigned lb_weight(const struct lb_backend *b)
{
	return b->weight ? b->weight : 1;
}

/* Up, not drained and under max_connections (0: unlimited). */
bool lb_eligible(const struct lb_backend *b)
{
	return b->up && !b->drained && (b->max_connections == 0 || b->active < b->max_connections);
}

/* Eligible and not in the caller's exclude bitmap. */
static bool lb_usable(const struct lb *lb, size_t i, const uint64_t *exclude)
{
	if (exclude && (exclude[i / 64] >> (i % 64)) & 1)
		return false;
	return lb_eligible(lb->b[i]);
}

/* True when a carries strictly less load per weight than b. */
static bool lb_less_loaded(const struct lb_backend *a, const struct lb_backend *b)
{
	return (uint64_t)a->active * lb_weight(b) < (uint64_t)b->active * lb_weight(a);
}

static int lb_pick_round_robin(struct lb *lb, const uint64_t *exclude)
{
	int64_t total = 0;
	size_t best = SIZE_MAX;

	for (size_t i = 0; i < lb->n; i++) {
		if (!lb_usable(lb, i, exclude))
			continue;
		lb->cur[i] += lb_weight(lb->b[i]);
		total += lb_weight(lb->b[i]);
		if (best == SIZE_MAX || lb->cur[i] > lb->cur[best])
			best = i;
	}
	if (best == SIZE_MAX)
		return -1;
	lb->cur[best] -= total;
	return (int)best;
}

static int lb_pick_least_conn(struct lb *lb, const uint64_t *exclude)
{
	size_t best = SIZE_MAX;

	for (size_t k = 0; k < lb->n; k++) {
		size_t i = (lb->next + k) % lb->n;

		if (!lb_usable(lb, i, exclude))
			continue;
		if (best == SIZE_MAX || lb_less_loaded(lb->b[i], lb->b[best]))
			best = i;
	}
	if (best == SIZE_MAX)
		return -1;
	lb->next = (best + 1) % lb->n;
	return (int)best;
}

/* Draws one usable backend by weight among those other than `skip`, whose
 * weights sum to `total` (> 0). */
static size_t lb_draw(struct lb *lb, const uint64_t *exclude, uint64_t total, size_t skip)
{
	uint64_t r = lb_rand(lb) % total;
	size_t last = SIZE_MAX;

	for (size_t i = 0; i < lb->n; i++) {
		unsigned w;

		if (i == skip || !lb_usable(lb, i, exclude))
			continue;
		w = lb_weight(lb->b[i]);
		if (r < w)
			return i;
		r -= w;
		last = i;
	}
	return last; /* not reached while total is the true sum */
}

static int lb_pick_random(struct lb *lb, const uint64_t *exclude)
{
	uint64_t total = 0;
	size_t count = 0, only = SIZE_MAX, a, b;

	for (size_t i = 0; i < lb->n; i++) {
		if (!lb_usable(lb, i, exclude))
			continue;
		total += lb_weight(lb->b[i]);
		count++;
		only = i;
	}
	if (count == 0)
		return -1;
	if (count == 1)
		return (int)only;
	a = lb_draw(lb, exclude, total, SIZE_MAX);
	b = lb_draw(lb, exclude, total - lb_weight(lb->b[a]), a);
	return (int)(lb_less_loaded(lb->b[b], lb->b[a]) ? b : a);
}

static int lb_pick_source_hash(struct lb *lb, const struct sockaddr *client,
                               const uint64_t *exclude)
{
	size_t j, k;
	bool any = false;

	for (size_t i = 0; i < lb->n && !any; i++)
		any = lb_usable(lb, i, exclude);
	if (!any)
		return -1;

	/* Walk forward from the client's entry to the first usable owner, so
	 * that every instance with the same backends and states agrees.  Some
	 * backend is usable and owns at least one entry, so this ends. */
	j = lb_hash_client(client) % LB_MAGLEV_SIZE;
	for (k = 0; k < LB_MAGLEV_SIZE; k++) {
		uint32_t idx = lb->maglev[j];

		if (lb_usable(lb, idx, exclude))
			return (int)idx;
		if (++j == LB_MAGLEV_SIZE)
			j = 0;
	}
	return -1;
}

/* Hashes the client's address bytes only: 4 for IPv4 (also when written as
 * IPv4-mapped IPv6), 16 for IPv6.  The port is left out so that a client
 * keeps its backend across connections. */
uint64_t lb_hash_client(const struct sockaddr *client)
{
	if (client && client->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)client;

		return lb_hash_bytes(&in4->sin_addr, 4, LB_SEED_CLIENT);
	}
	if (client && client->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)client;
		const uint8_t *a = in6->sin6_addr.s6_addr;

		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return lb_hash_bytes(a + 12, 4, LB_SEED_CLIENT);
		return lb_hash_bytes(a, 16, LB_SEED_CLIENT);
	}
	/* no address (or not IP): every such client shares one entry */
	return lb_hash_bytes(NULL, 0, LB_SEED_CLIENT);
}

/* The Maglev owner of table entry key % M, whatever its state; -1 when the
 * balancer has no table (not source_hash, or no backends). */
int lb_maglev_lookup(const struct lb *lb, uint64_t key)
{
	if (!lb->maglev || lb->n == 0)
		return -1;
	return (int)lb->maglev[key % LB_MAGLEV_SIZE];
}

/* Per-backend state while the Maglev table is filled. */
struct lb_maglev_fill {
	const char *key;
	uint32_t idx;  /* original index into lb->b */
	uint32_t pos;  /* next table position in this backend's permutation */
	uint32_t skip; /* 1..M-1: with M prime the permutation visits every entry */
	unsigned weight;
	unsigned acc; /* weight accumulated towards the next entry */
};

static int lb_maglev_cmp(const void *pa, const void *pb)
{
	const struct lb_maglev_fill *a = pa, *b = pb;
	int c = strcmp(a->key, b->key);

	if (c)
		return c;
	if (a->weight != b->weight)
		return a->weight < b->weight ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Fills lb->maglev.  Each backend's preference list is the permutation
 * offset, offset + skip, offset + 2 skip, ... (mod M), with offset and skip
 * from two hashes of its key, so it depends only on the key.  The backends
 * take turns in key order (never file order), each taking its next preferred
 * free entry.  Weights: in each round a backend adds its weight to `acc` and
 * takes one entry per max_weight accumulated, so shares follow weights and
 * equal weights give the plain Maglev fill.  Returns 0 or -ENOMEM. */
static int lb_maglev_build(struct lb *lb)
{
	const uint32_t m = LB_MAGLEV_SIZE;
	struct lb_maglev_fill *f;
	unsigned max_w = 1;
	uint32_t filled = 0;

	lb->maglev = malloc(m * sizeof(*lb->maglev));
	f = calloc(lb->n, sizeof(*f));
	if (!lb->maglev || !f) {
		free(f);
		free(lb->maglev);
		lb->maglev = NULL;
		return -ENOMEM;
	}

	for (size_t i = 0; i < lb->n; i++) {
		const char *key = lb->b[i]->key ? lb->b[i]->key : "";
		size_t len = strlen(key);

		f[i].key = key;
		f[i].idx = (uint32_t)i;
		f[i].pos = (uint32_t)(lb_hash_bytes(key, len, LB_SEED_OFFSET) % m);
		f[i].skip = (uint32_t)(lb_hash_bytes(key, len, LB_SEED_SKIP) % (m - 1)) + 1;
		f[i].weight = lb_weight(lb->b[i]);
		if (f[i].weight > max_w)
			max_w = f[i].weight;
	}
	qsort(f, lb->n, sizeof(*f), lb_maglev_cmp);

	for (uint32_t j = 0; j < m; j++)
		lb->maglev[j] = LB_MAGLEV_EMPTY;

	while (filled < m) {
		for (size_t i = 0; i < lb->n && filled < m; i++) {
			f[i].acc += f[i].weight;
			while (f[i].acc >= max_w && filled < m) {
				f[i].acc -= max_w;
				while (lb->maglev[f[i].pos] != LB_MAGLEV_EMPTY)
					f[i].pos = (uint32_t)(((uint64_t)f[i].pos + f[i].skip) % m);
				lb->maglev[f[i].pos] = f[i].idx;
				filled++;
			}
		}
	}
	free(f);
	return 0;
}

/* Builds the balancer over backends[0..n-1], which it borrows: the array and
 * the backends must outlive it.  `seed` drives random's draws only.  Returns
 * 0, -ENOMEM, or -EINVAL for an unknown algorithm.  n == 0 is accepted: every
 * pick then returns -1.  On failure lb_fini() is still safe. */
int lb_init(struct lb *lb, enum balance_alg alg, struct lb_backend **backends, size_t n,
            uint64_t seed)
{
	memset(lb, 0, sizeof(*lb));
	lb->alg = alg;
	lb->b = backends;
	lb->n = n;
	lb->rng = lb_mix64(seed) | 1; /* xorshift needs a non-zero state */

	if (n == 0)
		return 0;
	if (n > UINT32_MAX - 1)
		return -EINVAL;

	switch (alg) {
	case BAL_ROUND_ROBIN:
		lb->cur = calloc(n, sizeof(*lb->cur));
		if (!lb->cur)
			return -ENOMEM;
		break;
	case BAL_SOURCE_HASH:
		return lb_maglev_build(lb);
	case BAL_LEAST_CONN:
	case BAL_RANDOM:
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

/* Frees the tables (not the backends). */
void lb_fini(struct lb *lb)
{
	free(lb->cur);
	free(lb->maglev);
	memset(lb, 0, sizeof(*lb));
}

/* Chooses a usable backend and returns its index, or -1 when none is.
 * `exclude`, when not NULL, has (n + 63) / 64 words.  round_robin, least_conn
 * and random advance their state on every successful pick. */
int lb_pick(struct lb *lb, const struct sockaddr *client, const uint64_t *exclude)
{
	if (lb->n == 0)
		return -1;
	switch (lb->alg) {
	case BAL_ROUND_ROBIN:
		return lb_pick_round_robin(lb, exclude);
	case BAL_LEAST_CONN:
		return lb_pick_least_conn(lb, exclude);
	case BAL_RANDOM:
		return lb_pick_random(lb, exclude);
	case BAL_SOURCE_HASH:
		return lb_pick_source_hash(lb, client, exclude);
	}
	return -1;
}
