/* test_pipes.c - the pipe pool lends empty pipes, creates them lazily up to
 * its cap, and never reuses a pipe that came back holding bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "buf/pipes.h"

static void test_lazy_and_capped(void **state)
{
	(void)state;
	struct pipe_pool pp;
	assert_int_equal(pipes_init(&pp, 2, 65536), 0);
	assert_int_equal(pp.created, 0);
	struct pipe_buf *a = pipes_get(&pp), *b = pipes_get(&pp);
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	assert_int_equal(pp.created, 2);
	assert_null(pipes_get(&pp));
	assert_int_equal(pp.fallbacks, 1);
	assert_true(a->cap >= 65536);
	pipes_put(&pp, a);
	pipes_put(&pp, b);
	assert_int_equal(pp.in_use, 0);
	/* Reuse, not re-creation. */
	struct pipe_buf *c = pipes_get(&pp);
	assert_true(c == a || c == b);
	assert_int_equal(pp.created, 2);
	pipes_put(&pp, c);
	pipes_fini(&pp);
}

static void test_dirty_pipe_closed(void **state)
{
	(void)state;
	struct pipe_pool pp;
	assert_int_equal(pipes_init(&pp, 1, 0), 0);
	struct pipe_buf *p = pipes_get(&pp);
	assert_non_null(p);
	int old_r = p->rfd;
	assert_int_equal(write(p->wfd, "abc", 3), 3);
	p->bytes = 3;
	pipes_put(&pp, p);
	assert_int_equal(fcntl(old_r, F_GETFD), -1); /* closed */
	struct pipe_buf *q = pipes_get(&pp);
	assert_non_null(q);
	assert_int_equal(q->bytes, 0);
	char buf[4];
	assert_int_equal(read(q->rfd, buf, sizeof(buf)), -1); /* empty, nonblocking */
	pipes_put(&pp, q);
	pipes_fini(&pp);
}

static void test_disabled(void **state)
{
	(void)state;
	struct pipe_pool pp;
	assert_int_equal(pipes_init(&pp, 0, 65536), 0);
	assert_null(pipes_get(&pp));
	pipes_fini(&pp);
}

/* A pipe an engine operation holds is not lent again when its owner gives it
 * back meanwhile: the put waits for the release, or the engine reclaims it. */
static void test_held_pipe(void **state)
{
	(void)state;
	struct pipe_pool pp;
	assert_int_equal(pipes_init(&pp, 2, 0), 0);
	struct pipe_buf *p = pipes_get(&pp);
	assert_non_null(p);
	/* Not returned during the hold: untouched. */
	pipes_hold(p);
	assert_true(pipes_release(&pp, p, false));
	assert_int_equal(pp.in_use, 1);
	/* Returned during the hold, released without reclaim: put then. */
	pipes_hold(p);
	pipes_put(&pp, p);
	assert_int_equal(pp.in_use, 1);
	assert_int_equal(pp.nfree, 0);
	struct pipe_buf *q = pipes_get(&pp);
	assert_ptr_not_equal(q, p); /* a new one, never the held one */
	assert_false(pipes_release(&pp, p, false));
	assert_int_equal(pp.in_use, 1);
	assert_int_equal(pp.nfree, 1);
	/* Returned during the hold, reclaimed: still lent. */
	struct pipe_buf *r = pipes_get(&pp);
	assert_ptr_equal(r, p);
	pipes_hold(r);
	pipes_put(&pp, r);
	assert_true(pipes_release(&pp, r, true));
	assert_int_equal(pp.in_use, 2);
	assert_false(r->returned);
	pipes_put(&pp, r);
	pipes_put(&pp, q);
	assert_int_equal(pp.in_use, 0);
	pipes_fini(&pp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lazy_and_capped),
	    cmocka_unit_test(test_dirty_pipe_closed),
	    cmocka_unit_test(test_disabled),
	    cmocka_unit_test(test_held_pipe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
