/* timer.c - a binary min-heap of deadlines with a fixed capacity.
 *
 * h[0] is the earliest deadline; the children of h[i] are h[2i+1] and
 * h[2i+2].  Every armed timer knows its position (slot = index + 1), so
 * moving or cancelling one is O(log n) without a search; slot 0 means "not
 * armed".  The heap never owns the timers: they are embedded in their owners,
 * which must cancel them before they are freed.
 *
 * Timers with the same deadline fire in an unspecified order.  The order is
 * deterministic: the same sequence of calls always gives the same order, but
 * it is not the order of arming.  Callers that need an order among equal
 * deadlines must use distinct deadlines.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timer.h"

/* Places t at index i and records the slot. */
static void timer_place(struct timer_heap *th, uint32_t i, struct timer *t)
{
	th->h[i] = t;
	t->slot = i + 1;
}

/* Moves the timer at index i towards the root while it is earlier than its
 * parent. */
static void timer_sift_up(struct timer_heap *th, uint32_t i)
{
	struct timer *t = th->h[i];

	while (i > 0) {
		uint32_t parent = (i - 1) / 2;

		if (th->h[parent]->when <= t->when)
			break;
		timer_place(th, i, th->h[parent]);
		i = parent;
	}
	timer_place(th, i, t);
}

/* Moves the timer at index i towards the leaves while a child is earlier. */
static void timer_sift_down(struct timer_heap *th, uint32_t i)
{
	struct timer *t = th->h[i];

	for (;;) {
		uint32_t child = 2 * i + 1;

		if (child >= th->n)
			break;
		if (child + 1 < th->n && th->h[child + 1]->when < th->h[child]->when)
			child++;
		if (t->when <= th->h[child]->when)
			break;
		timer_place(th, i, th->h[child]);
		i = child;
	}
	timer_place(th, i, t);
}

/* Takes the timer at index i out of the heap and disarms it. */
static void timer_remove_at(struct timer_heap *th, uint32_t i)
{
	struct timer *t = th->h[i];
	struct timer *last;

	assert(i < th->n && t->slot == i + 1);
	th->n--;
	t->slot = 0;
	if (i == th->n) {
		th->h[i] = NULL;
		return;
	}
	last = th->h[th->n];
	th->h[th->n] = NULL;
	timer_place(th, i, last);
	if (i > 0 && th->h[(i - 1) / 2]->when > last->when)
		timer_sift_up(th, i);
	else
		timer_sift_down(th, i);
}

/* Prepares an empty heap for at most `cap` armed timers.  Returns 0 or
 * -ENOMEM. */
int timer_heap_init(struct timer_heap *th, uint32_t cap)
{
	memset(th, 0, sizeof(*th));
	th->h = calloc(cap ? cap : 1, sizeof(*th->h));
	if (!th->h)
		return -ENOMEM;
	th->cap = cap;
	return 0;
}

/* Frees the heap.  Timers still armed are not touched (their slot stays
 * set); owners cancel their timers before the heap goes away. */
void timer_heap_fini(struct timer_heap *th)
{
	free(th->h);
	memset(th, 0, sizeof(*th));
}

/* Arms t, or moves it when already armed, to fire `fn` at `when`.  Borrows t:
 * it must stay valid until it fires or is cancelled.  Returns 0, or -ENOSPC
 * when t is not armed and the heap is full (t is then left unarmed). */
int timer_set(struct timer_heap *th, struct timer *t, uint64_t when, timer_fn fn)
{
	assert(fn != NULL);
	t->fn = fn;
	if (t->slot) {
		uint32_t i = t->slot - 1;
		uint64_t old = t->when;

		assert(i < th->n && th->h[i] == t);
		t->when = when;
		if (when < old)
			timer_sift_up(th, i);
		else if (when > old)
			timer_sift_down(th, i);
		return 0;
	}
	if (th->n == th->cap)
		return -ENOSPC;
	t->when = when;
	th->h[th->n] = t;
	th->n++;
	timer_sift_up(th, th->n - 1);
	return 0;
}

/* Disarms t; a no-op when it is not armed. */
void timer_cancel(struct timer_heap *th, struct timer *t)
{
	if (!t->slot)
		return;
	assert(th->h[t->slot - 1] == t);
	timer_remove_at(th, t->slot - 1);
}

/* Milliseconds from `now` to the earliest deadline: 0 when it is due, -1 when
 * no timer is armed. */
int64_t timer_next_ms(const struct timer_heap *th, uint64_t now)
{
	uint64_t when;

	if (th->n == 0)
		return -1;
	when = th->h[0]->when;
	if (when <= now)
		return 0;
	if (when - now > (uint64_t)INT64_MAX)
		return INT64_MAX;
	return (int64_t)(when - now);
}

/* Fires due timers (when <= now), earliest first, at most `max` of them
 * (0 fires none).  Each timer is disarmed before its function runs, so the
 * function may re-arm it, arm or cancel others, or free its owner.  A timer
 * re-armed at or before `now` fires again in the same call if `max` allows.
 * Returns the number fired. */
unsigned timer_run(struct timer_heap *th, uint64_t now, unsigned max)
{
	unsigned fired = 0;

	while (fired < max && th->n > 0 && th->h[0]->when <= now) {
		struct timer *t = th->h[0];

		timer_remove_at(th, 0);
		fired++;
		t->fn(t);
	}
	return fired;
}

/* CLOCK_MONOTONIC in milliseconds (never fails on Linux). */
uint64_t clock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
