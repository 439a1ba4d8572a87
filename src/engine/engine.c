/* engine.c - what every engine shares: the registry, the timer heap and the
 * loop that alternates between waiting for I/O and running due timers. */
#include "engine/engine.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const struct engine_vt *const engines[] = {
    &engine_uring,
    &engine_epoll,
    NULL,
};

const struct engine_vt *const *engine_list(void)
{
	return engines;
}

const struct engine_vt *engine_find(const char *name)
{
	for (size_t i = 0; engines[i]; i++)
		if (strcmp(engines[i]->name, name) == 0)
			return engines[i];
	return NULL;
}

int engine_init(struct engine *e, const struct engine_vt *vt, struct pool *pool, uint32_t max_socks,
                uint32_t max_timers)
{
	memset(e, 0, sizeof(*e));
	e->vt = vt;
	e->pool = pool;
	e->now = clock_now_ms();
	sigemptyset(&e->wait_mask);
	int r = timer_heap_init(&e->timers, max_timers);
	if (r < 0)
		return r;
	r = vt->init(e, max_socks);
	if (r < 0) {
		timer_heap_fini(&e->timers);
		return r;
	}
	return 0;
}

void engine_fini(struct engine *e)
{
	if (e->vt)
		e->vt->fini(e);
	timer_heap_fini(&e->timers);
	e->vt = NULL;
}

/* Timers fired per turn: bounded so a burst of expiries cannot starve I/O. */
#define ENGINE_TIMERS_PER_TURN 1024

int engine_run(struct engine *e)
{
	while (!e->stop) {
		e->now = clock_now_ms();
		int64_t next = timer_next_ms(&e->timers, e->now);
		int timeout = next < 0 ? -1 : (next > 60000 ? 60000 : (int)next);
		e->vt->poll(e, timeout);
		e->now = clock_now_ms();
		timer_run(&e->timers, e->now, ENGINE_TIMERS_PER_TURN);
		if (e->tick)
			e->tick(e, e->tick_arg);
	}
	return 0;
}
