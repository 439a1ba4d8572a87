/* test_pool.c - buffer pool: get/unref cycles, shared references, exhaustion,
 * the fail_after hook and the lazily resident mapping.  Built both normally
 * and with -DFERRY_POOL_MALLOC; every test's teardown checks that no buffer
 * was leaked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buf/pool.h"

#define T_COUNT 8
#define T_SIZE  4096

static int pool_setup(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (!p || pool_init(p, T_COUNT, T_SIZE) != 0) {
		free(p);
		return -1;
	}
	*state = p;
	return 0;
}

static int pool_teardown(void **state)
{
	struct pool *p = *state;
	uint32_t leaked = pool_in_use(p);

	pool_fini(p);
	free(p);
	assert_int_equal(leaked, 0);
	return 0;
}

static void test_init_state(void **state)
{
	struct pool *p = *state;

	assert_int_equal(p->count, T_COUNT);
	assert_int_equal(p->nfree, T_COUNT);
	assert_int_equal(p->buf_size, T_SIZE);
	assert_int_equal(p->fail_after, 0);
	assert_int_equal(pool_in_use(p), 0);
#ifdef FERRY_POOL_MALLOC
	assert_null(p->mem);
#else
	assert_non_null(p->mem);
	assert_true(p->mem_len >= (size_t)T_COUNT * T_SIZE);
#endif
}

static void test_init_errors(void **state)
{
	struct pool q;

	(void)state;
	assert_int_equal(pool_init(&q, 0, 64), -EINVAL);
	pool_fini(&q);
	assert_int_equal(pool_init(&q, 4, 0), -EINVAL);
	pool_fini(&q);
	assert_int_equal(pool_init(&q, 4, (size_t)UINT32_MAX + 1), -EINVAL); /* len is 32-bit */
	pool_fini(&q);
#ifndef FERRY_POOL_MALLOC
	/* 2 PiB of address space: more than a process can map */
	assert_int_equal(pool_init(&q, 1u << 20, 1u << 31), -ENOMEM);
	assert_null(q.bufs);
	pool_fini(&q);
#endif
	assert_int_equal(pool_init(&q, 1, 1), 0);
	pool_fini(&q);
}

static void test_get_unref_cycles(void **state)
{
	struct pool *p = *state;
	struct buf *b[T_COUNT];

	for (int cycle = 0; cycle < 1000; cycle++) {
		for (uint32_t i = 0; i < T_COUNT; i++) {
			b[i] = pool_get(p);
			assert_non_null(b[i]);
			assert_non_null(b[i]->data);
			assert_int_equal(b[i]->refs, 1);
			assert_int_equal(b[i]->len, 0);
			assert_ptr_equal(b[i]->pool, p);
			assert_int_equal(pool_in_use(p), i + 1);
			for (uint32_t j = 0; j < i; j++)
				assert_ptr_not_equal(b[i], b[j]);
			b[i]->len = 100 + i; /* the next holder must see 0 again */
		}
		for (uint32_t i = 0; i < T_COUNT; i++) {
			buf_unref(b[(i * 3 + cycle) % T_COUNT]);
			assert_int_equal(pool_in_use(p), T_COUNT - 1 - i);
		}
	}
}

/* The buffer returned last is handed out first. */
static void test_lifo(void **state)
{
	struct pool *p = *state;
	struct buf *a = pool_get(p), *b = pool_get(p), *c;

	assert_non_null(a);
	assert_non_null(b);
	buf_unref(a);
	c = pool_get(p);
	assert_ptr_equal(c, a);
	buf_unref(b);
	buf_unref(c);
	c = pool_get(p);
	assert_ptr_equal(c, a);
	buf_unref(c);
}

static void test_shared_refs(void **state)
{
	struct pool *p = *state;
	struct buf *b = pool_get(p);

	assert_non_null(b);
	memcpy(b->data, "hello", 5);
	b->len = 5;
	assert_ptr_equal(buf_ref(b), b);
	assert_ptr_equal(buf_ref(b), b);
	assert_int_equal(b->refs, 3);
	assert_int_equal(pool_in_use(p), 1);

	buf_unref(b);
	assert_int_equal(b->refs, 2);
	assert_int_equal(pool_in_use(p), 1);
	assert_memory_equal(b->data, "hello", 5); /* still valid for the others */
	buf_unref(b);
	assert_int_equal(pool_in_use(p), 1);
	assert_int_equal(b->len, 5);
	buf_unref(b);
	assert_int_equal(pool_in_use(p), 0);
	assert_int_equal(p->nfree, T_COUNT);
}

static void test_exhaustion(void **state)
{
	struct pool *p = *state;
	struct buf *b[T_COUNT];
	struct buf *again;

	for (uint32_t i = 0; i < T_COUNT; i++)
		assert_non_null(b[i] = pool_get(p));
	assert_int_equal(pool_in_use(p), T_COUNT);
	assert_null(pool_get(p));
	assert_null(pool_get(p));
	assert_int_equal(pool_in_use(p), T_COUNT);

	buf_unref(b[3]);
	again = pool_get(p);
	assert_ptr_equal(again, b[3]);
	assert_null(pool_get(p));
	for (uint32_t i = 0; i < T_COUNT; i++)
		buf_unref(b[i]);
}

static void test_fail_after(void **state)
{
	struct pool *p = *state;
	struct buf *a, *b, *c;

	/* N = 3: the third following get fails, then the hook is off */
	p->fail_after = 3;
	a = pool_get(p);
	b = pool_get(p);
	assert_non_null(a);
	assert_non_null(b);
	assert_null(pool_get(p));
	assert_int_equal(p->fail_after, 0);
	assert_int_equal(pool_in_use(p), 2); /* a failed get takes nothing */
	c = pool_get(p);
	assert_non_null(c);
	buf_unref(c);

	/* N = 1: the very next get fails */
	p->fail_after = 1;
	assert_null(pool_get(p));
	assert_int_equal(p->fail_after, 0);
	c = pool_get(p);
	assert_non_null(c);
	buf_unref(c);

	buf_unref(a);
	buf_unref(b);
	assert_int_equal(pool_in_use(p), 0);
}

/* Every buffer can hold buf_size bytes of its own. */
static void test_data_writable(void **state)
{
	struct pool *p = *state;
	struct buf *b[T_COUNT];

	for (uint32_t i = 0; i < T_COUNT; i++) {
		b[i] = pool_get(p);
		assert_non_null(b[i]);
		memset(b[i]->data, 0xa0 + (int)i, p->buf_size);
		b[i]->len = (uint32_t)p->buf_size;
	}
	for (uint32_t i = 0; i < T_COUNT; i++)
		for (size_t k = 0; k < p->buf_size; k++)
			assert_int_equal(b[i]->data[k], 0xa0 + i);
	for (uint32_t i = 0; i < T_COUNT; i++)
		buf_unref(b[i]);
}

/* A large pool costs no resident memory until buffers are written: getting
 * and returning buffers never touches their pages. */
static void test_lazy_resident(void **state)
{
#ifdef FERRY_POOL_MALLOC
	(void)state;
	skip();
#else
	struct pool big;
	long page = sysconf(_SC_PAGESIZE);
	size_t pages;
	unsigned char *vec;
	size_t resident = 0;
	struct buf *b[64];

	(void)state;
	assert_int_equal(pool_init(&big, 64, 64 * 1024), 0);
	pages = (big.mem_len + (size_t)page - 1) / (size_t)page;
	vec = calloc(pages, 1);
	assert_non_null(vec);

	for (int i = 0; i < 64; i++)
		assert_non_null(b[i] = pool_get(&big));
	for (int i = 0; i < 64; i++)
		buf_unref(b[i]);
	assert_int_equal(mincore(big.mem, big.mem_len, vec), 0);
	for (size_t k = 0; k < pages; k++)
		resident += vec[k] & 1;
	assert_int_equal(resident, 0);

	b[0] = pool_get(&big);
	memset(b[0]->data, 1, 16);
	assert_int_equal(mincore(big.mem, big.mem_len, vec), 0);
	assert_true(vec[(size_t)(b[0]->data - big.mem) / (size_t)page] & 1);
	buf_unref(b[0]);

	free(vec);
	assert_int_equal(pool_in_use(&big), 0);
	pool_fini(&big);
#endif
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, pool_setup, pool_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_init_state), T(test_init_errors),   T(test_get_unref_cycles),
	    T(test_lifo),       T(test_shared_refs),   T(test_exhaustion),
	    T(test_fail_after), T(test_data_writable), T(test_lazy_resident),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
