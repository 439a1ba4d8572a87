/* test_timer.c - deadline heap: firing order, cancel, move, re-arming from a
 * callback, the per-run cap and timer_next_ms.  Teardown checks that every
 * test left the heap empty.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"

#define T_CAP  1024
#define T_MAXF 4096

/* An owner of a timer, as a session would be. */
struct owner {
	int id;
	struct timer t;
	uint64_t period;      /* > 0: re-arm itself this much later */
	unsigned left;        /* re-arms left */
	struct owner *victim; /* cancelled when this one fires */
	struct owner *spawn;  /* armed (at spawn_when) when this one fires */
	uint64_t spawn_when;
};

static struct timer_heap *t_heap;
static int t_fired[T_MAXF];
static uint64_t t_fired_when[T_MAXF];
static unsigned t_nfired;

static void t_record(struct timer *t)
{
	struct owner *o = container_of(t, struct owner, t);

	assert_false(timer_armed(t)); /* disarmed before the call */
	assert_true(t_nfired < T_MAXF);
	t_fired[t_nfired] = o->id;
	t_fired_when[t_nfired] = t->when;
	t_nfired++;
	if (o->period && o->left) {
		o->left--;
		assert_int_equal(timer_set(t_heap, t, t->when + o->period, t_record), 0);
	}
	if (o->victim)
		timer_cancel(t_heap, &o->victim->t);
	if (o->spawn)
		assert_int_equal(timer_set(t_heap, &o->spawn->t, o->spawn_when, t_record), 0);
}

static int heap_setup(void **state)
{
	struct timer_heap *th = calloc(1, sizeof(*th));

	if (!th || timer_heap_init(th, T_CAP) != 0) {
		free(th);
		return -1;
	}
	t_heap = th;
	t_nfired = 0;
	*state = th;
	return 0;
}

static int heap_teardown(void **state)
{
	struct timer_heap *th = *state;
	uint32_t left = th->n;

	timer_heap_fini(th);
	free(th);
	t_heap = NULL;
	assert_int_equal(left, 0);
	return 0;
}

/* Checks the heap order and every slot. */
static void t_check_heap(const struct timer_heap *th)
{
	for (uint32_t i = 0; i < th->n; i++) {
		assert_int_equal(th->h[i]->slot, i + 1);
		if (i > 0)
			assert_true(th->h[(i - 1) / 2]->when <= th->h[i]->when);
	}
}

static void test_order(void **state)
{
	struct timer_heap *th = *state;
	const uint64_t when[] = {50, 10, 40, 20, 30};
	struct owner o[5] = {{0}};

	for (int i = 0; i < 5; i++) {
		o[i].id = i;
		assert_false(timer_armed(&o[i].t));
		assert_int_equal(timer_set(th, &o[i].t, when[i], t_record), 0);
		assert_true(timer_armed(&o[i].t));
	}
	t_check_heap(th);

	/* only what is due */
	assert_int_equal(timer_run(th, 25, 100), 2);
	assert_int_equal(t_nfired, 2);
	assert_int_equal(t_fired[0], 1);
	assert_int_equal(t_fired[1], 3);
	assert_false(timer_armed(&o[1].t));
	assert_int_equal(timer_run(th, 25, 100), 0);

	/* a deadline equal to now is due */
	assert_int_equal(timer_run(th, 40, 100), 2);
	assert_int_equal(t_fired[2], 4);
	assert_int_equal(t_fired[3], 2);
	assert_int_equal(timer_run(th, 1000, 100), 1);
	assert_int_equal(t_fired[4], 0);
	assert_int_equal(th->n, 0);
}

static void test_next_ms(void **state)
{
	struct timer_heap *th = *state;
	struct owner a = {.id = 1}, b = {.id = 2};

	assert_int_equal(timer_next_ms(th, 0), -1);
	assert_int_equal(timer_set(th, &a.t, 1000, t_record), 0);
	assert_int_equal(timer_next_ms(th, 400), 600);
	assert_int_equal(timer_set(th, &b.t, 700, t_record), 0);
	assert_int_equal(timer_next_ms(th, 400), 300);
	assert_int_equal(timer_next_ms(th, 700), 0);
	assert_int_equal(timer_next_ms(th, 5000), 0);
	assert_int_equal(timer_set(th, &a.t, UINT64_MAX, t_record), 0);
	timer_cancel(th, &b.t);
	assert_int_equal(timer_next_ms(th, 0), INT64_MAX);
	timer_cancel(th, &a.t);
	assert_int_equal(timer_next_ms(th, 0), -1);
}

static void test_cancel(void **state)
{
	struct timer_heap *th = *state;
	struct owner o[6] = {{0}};

	for (int i = 0; i < 6; i++) {
		o[i].id = i;
		assert_int_equal(timer_set(th, &o[i].t, 100 + 10 * (uint64_t)i, t_record), 0);
	}
	timer_cancel(th, &o[3].t); /* middle */
	timer_cancel(th, &o[0].t); /* root */
	timer_cancel(th, &o[5].t); /* last */
	timer_cancel(th, &o[5].t); /* not armed: no-op */
	assert_false(timer_armed(&o[0].t));
	assert_int_equal(th->n, 3);
	t_check_heap(th);

	assert_int_equal(timer_run(th, 1000, 100), 3);
	assert_int_equal(t_fired[0], 1);
	assert_int_equal(t_fired[1], 2);
	assert_int_equal(t_fired[2], 4);
}

static void test_move(void **state)
{
	struct timer_heap *th = *state;
	struct owner o[4] = {{0}};

	for (int i = 0; i < 4; i++) {
		o[i].id = i;
		assert_int_equal(timer_set(th, &o[i].t, 100 + 10 * (uint64_t)i, t_record), 0);
	}
	assert_int_equal(timer_set(th, &o[0].t, 500, t_record), 0); /* later */
	assert_int_equal(timer_set(th, &o[3].t, 50, t_record), 0);  /* earlier */
	assert_int_equal(timer_set(th, &o[2].t, 120, t_record), 0); /* same */
	assert_int_equal(th->n, 4);
	t_check_heap(th);
	assert_int_equal(timer_next_ms(th, 0), 50);

	assert_int_equal(timer_run(th, 1000, 100), 4);
	assert_int_equal(t_fired[0], 3);
	assert_int_equal(t_fired[1], 1);
	assert_int_equal(t_fired[2], 2);
	assert_int_equal(t_fired[3], 0);
}

static void test_rearm_in_callback(void **state)
{
	struct timer_heap *th = *state;
	struct owner tick = {.id = 7, .period = 10, .left = 100};

	assert_int_equal(timer_set(th, &tick.t, 10, t_record), 0);
	/* 10, 20, ..., 100 are due: it fires ten times in one run */
	assert_int_equal(timer_run(th, 100, 1000), 10);
	for (unsigned k = 0; k < 10; k++)
		assert_int_equal(t_fired_when[k], 10 * (k + 1));
	assert_true(timer_armed(&tick.t));
	assert_int_equal(timer_next_ms(th, 100), 10);
	timer_cancel(th, &tick.t);
}

static void test_cancel_and_arm_in_callback(void **state)
{
	struct timer_heap *th = *state;
	struct owner a = {.id = 1}, b = {.id = 2}, c = {.id = 3}, d = {.id = 4};

	a.victim = &b; /* a cancels b, due after it */
	a.spawn = &c;  /* and arms c, due at once */
	a.spawn_when = 5;
	assert_int_equal(timer_set(th, &a.t, 10, t_record), 0);
	assert_int_equal(timer_set(th, &b.t, 20, t_record), 0);
	assert_int_equal(timer_set(th, &d.t, 30, t_record), 0);

	assert_int_equal(timer_run(th, 30, 100), 3);
	assert_int_equal(t_fired[0], 1);
	assert_int_equal(t_fired[1], 3);
	assert_int_equal(t_fired[2], 4);
	assert_false(timer_armed(&b.t));
}

static void test_max_per_run(void **state)
{
	struct timer_heap *th = *state;
	struct owner o[10] = {{0}};

	for (int i = 0; i < 10; i++) {
		o[i].id = i;
		assert_int_equal(timer_set(th, &o[i].t, 10 + (uint64_t)i, t_record), 0);
	}
	assert_int_equal(timer_run(th, 100, 3), 3);
	assert_int_equal(th->n, 7);
	assert_int_equal(timer_next_ms(th, 100), 0); /* still due */
	assert_int_equal(timer_run(th, 100, 0), 0);
	assert_int_equal(timer_run(th, 100, 3), 3);
	assert_int_equal(timer_run(th, 100, 100), 4);
	for (int i = 0; i < 10; i++)
		assert_int_equal(t_fired[i], i);

	/* a self re-arming timer due again cannot loop past the cap */
	struct owner tick = {.id = 9, .period = 1, .left = 1000000};
	assert_int_equal(timer_set(th, &tick.t, 1, t_record), 0);
	assert_int_equal(timer_run(th, UINT64_MAX - 10, 5), 5);
	timer_cancel(th, &tick.t);
}

static void test_capacity(void **state)
{
	struct timer_heap small;
	struct owner o[3] = {{.id = 0}, {.id = 1}, {.id = 2}};

	(void)state;
	assert_int_equal(timer_heap_init(&small, 2), 0);
	assert_int_equal(timer_set(&small, &o[0].t, 10, t_record), 0);
	assert_int_equal(timer_set(&small, &o[1].t, 20, t_record), 0);
	assert_int_equal(timer_set(&small, &o[2].t, 5, t_record), -ENOSPC);
	assert_false(timer_armed(&o[2].t));
	/* moving an armed timer needs no room */
	assert_int_equal(timer_set(&small, &o[1].t, 1, t_record), 0);
	timer_cancel(&small, &o[0].t);
	assert_int_equal(timer_set(&small, &o[2].t, 5, t_record), 0);
	timer_cancel(&small, &o[1].t);
	timer_cancel(&small, &o[2].t);
	assert_int_equal(small.n, 0);
	timer_heap_fini(&small);
}

/* Random arms, moves and cancels against a plain array as the reference. */
static void test_random_ops(void **state)
{
	struct timer_heap *th = *state;
	static struct owner o[512];
	uint64_t rng = 0x243f6a8885a308d3ULL;
	uint64_t last = 0;

	memset(o, 0, sizeof(o));
	for (int i = 0; i < 512; i++)
		o[i].id = i;
	for (int step = 0; step < 20000; step++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		struct owner *x = &o[rng % 512];

		if ((rng >> 20) % 4 == 0)
			timer_cancel(th, &x->t);
		else
			assert_int_equal(timer_set(th, &x->t, (rng >> 32) % 100000, t_record), 0);
	}
	t_check_heap(th);
	uint32_t armed = 0;
	for (int i = 0; i < 512; i++)
		armed += timer_armed(&o[i].t) ? 1 : 0;
	assert_int_equal(th->n, armed);

	/* drain in small runs: deadlines never go backwards */
	while (th->n) {
		unsigned before = t_nfired;

		timer_run(th, UINT64_MAX, 7);
		for (unsigned k = before; k < t_nfired; k++) {
			assert_true(t_fired_when[k] >= last);
			last = t_fired_when[k];
		}
		t_check_heap(th);
	}
	assert_int_equal(t_nfired, armed);
}

static void test_clock(void **state)
{
	uint64_t a = clock_now_ms(), b = clock_now_ms();

	(void)state;
	assert_true(a > 0);
	assert_true(b >= a);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, heap_setup, heap_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_order),       T(test_next_ms),           T(test_cancel),
	    T(test_move),        T(test_rearm_in_callback), T(test_cancel_and_arm_in_callback),
	    T(test_max_per_run), T(test_capacity),          T(test_random_ops),
	    T(test_clock),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
