/* pipes.c - the pipe pool; see pipes.h. */
#include "buf/pipes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pipes_init(struct pipe_pool *pp, uint32_t cap, uint32_t size)
{
	memset(pp, 0, sizeof(*pp));
	pp->cap = cap;
	pp->size = size;
	if (cap == 0)
		return 0;
	pp->pipes = calloc(cap, sizeof(*pp->pipes));
	pp->free = calloc(cap, sizeof(*pp->free));
	if (!pp->pipes || !pp->free) {
		pipes_fini(pp);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < cap; i++) {
		pp->pipes[i].rfd = pp->pipes[i].wfd = -1;
		pp->pipes[i].idx = i;
	}
	return 0;
}

void pipes_fini(struct pipe_pool *pp)
{
	for (uint32_t i = 0; pp->pipes && i < pp->cap; i++) {
		if (pp->pipes[i].rfd >= 0) {
			close(pp->pipes[i].rfd);
			close(pp->pipes[i].wfd);
		}
	}
	free(pp->pipes);
	free(pp->free);
	memset(pp, 0, sizeof(*pp));
}

/* Slots never created or closed after a dirty return, for creation. */
static struct pipe_buf *create_one(struct pipe_pool *pp)
{
	for (uint32_t i = 0; i < pp->cap; i++) {
		struct pipe_buf *p = &pp->pipes[(pp->created + i) % pp->cap];
		if (p->rfd >= 0)
			continue;
		int fds[2];
		if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
			return NULL;
		/* Best effort: a smaller pipe still works, only slower. */
		if (pp->size)
			fcntl(fds[1], F_SETPIPE_SZ, (int)pp->size);
		int real = fcntl(fds[1], F_GETPIPE_SZ);
		p->cap = real > 0 ? (uint32_t)real : 4096;
		p->rfd = fds[0];
		p->wfd = fds[1];
		p->bytes = 0;
		p->held = 0;
		p->returned = false;
		pp->created++;
		return p;
	}
	return NULL;
}

struct pipe_buf *pipes_get(struct pipe_pool *pp)
{
	struct pipe_buf *p = NULL;
	if (pp->nfree > 0)
		p = &pp->pipes[pp->free[--pp->nfree]];
	else if (pp->in_use < pp->cap)
		p = create_one(pp);
	if (!p) {
		pp->fallbacks++;
		return NULL;
	}
	pp->in_use++;
	return p;
}

void pipes_put(struct pipe_pool *pp, struct pipe_buf *p)
{
	if (p->held) {
		p->returned = true;
		return;
	}
	pp->in_use--;
	if (p->bytes != 0) {
		close(p->rfd);
		close(p->wfd);
		p->rfd = p->wfd = -1;
		p->bytes = 0;
		return;
	}
	pp->free[pp->nfree++] = p->idx;
}

void pipes_hold(struct pipe_buf *p)
{
	p->held++;
}

bool pipes_release(struct pipe_pool *pp, struct pipe_buf *p, bool reclaim)
{
	p->held--;
	if (p->held || !p->returned)
		return true;
	p->returned = false;
	if (reclaim)
		return true;
	pipes_put(pp, p);
	return false;
}
