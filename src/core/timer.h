/* timer.h - a binary min-heap of deadlines with a fixed capacity.
 *
 * Timers are embedded in their owners (container_of finds the owner); the heap
 * only stores pointers, so arming, moving and cancelling a timer never
 * allocates.  Capacity is fixed at init from the number of objects that can
 * hold a timer.  One thread.
 */
#ifndef FERRY_CORE_TIMER_H
#define FERRY_CORE_TIMER_H

#include <stddef.h>
#include <stdint.h>

struct timer;
typedef void (*timer_fn)(struct timer *t);

struct timer {
	uint64_t when; /* monotonic ms */
	uint32_t slot; /* heap position + 1; 0 when not armed */
	timer_fn fn;
};

struct timer_heap {
	struct timer **h;
	uint32_t n, cap;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

int timer_heap_init(struct timer_heap *th, uint32_t cap);
void timer_heap_fini(struct timer_heap *th);

/* Arms (or moves) t to fire at `when`.  Returns 0, or -ENOSPC when the heap
 * is full (a sizing bug: capacity covers every timer owner). */
int timer_set(struct timer_heap *th, struct timer *t, uint64_t when, timer_fn fn);
void timer_cancel(struct timer_heap *th, struct timer *t);
static inline int timer_armed(const struct timer *t)
{
	return t->slot != 0;
}

/* Milliseconds until the earliest deadline (0 when due), or -1 when empty. */
int64_t timer_next_ms(const struct timer_heap *th, uint64_t now);

/* Fires every timer due at `now`, earliest first; each is disarmed before its
 * function runs, so the function may re-arm it.  At most `max` per call.
 * Returns the number fired. */
unsigned timer_run(struct timer_heap *th, uint64_t now, unsigned max);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t clock_now_ms(void);

#endif
