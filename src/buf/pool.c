/* pool.c - fixed-size, reference-counted buffers allocated once at start.
 *
 * Layout: `bufs` is an array of `count` headers, `free` a stack of the
 * indices of the free ones (top at free[nfree - 1]), and `mem` one anonymous
 * mapping of count * buf_size bytes where buffer i owns
 * [i * buf_size, (i + 1) * buf_size).  The mapping is MAP_NORESERVE and
 * nothing here ever writes to it, so a page costs resident memory only once a
 * holder has written into a buffer that lies on it.
 *
 * The stack is LIFO: the buffer returned last is handed out first, so a busy
 * pool keeps reusing the same few warm buffers instead of walking the whole
 * mapping.
 *
 * With -DFERRY_POOL_MALLOC there is no mapping: pool_get() mallocs buf_size
 * bytes for the buffer and the last buf_unref() frees them, so ASan reports
 * any access through a stale pointer.  Headers, indices and counts behave
 * exactly as in the normal build.
 *
 * Every header points back to its pool, so a pool must not move in memory
 * between pool_init() and pool_fini().
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "buf/pool.h"

/* Creates `count` buffers of `buf_size` bytes in *p (which is overwritten).
 * Returns 0, -EINVAL when count or buf_size is 0 or buf_size does not fit the
 * 32-bit `len`, or -ENOMEM.  On failure *p is left empty (pool_fini is safe). */
int pool_init(struct pool *p, uint32_t count, size_t buf_size)
{
	memset(p, 0, sizeof(*p));
	if (count == 0 || buf_size == 0 || buf_size > UINT32_MAX)
		return -EINVAL;
	if ((size_t)count > SIZE_MAX / buf_size)
		return -ENOMEM;

	p->buf_size = buf_size;
	p->count = count;
	p->bufs = calloc(count, sizeof(*p->bufs));
	if (!p->bufs)
		goto out_err;
	p->free = calloc(count, sizeof(*p->free));
	if (!p->free)
		goto out_bufs;

#ifndef FERRY_POOL_MALLOC
	p->mem_len = (size_t)count * buf_size;
	p->mem = mmap(NULL, p->mem_len, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p->mem == MAP_FAILED) {
		p->mem = NULL;
		p->mem_len = 0;
		goto out_free;
	}
#endif

	for (uint32_t i = 0; i < count; i++) {
		struct buf *b = &p->bufs[i];

		b->idx = i;
		b->pool = p;
		b->data = p->mem ? p->mem + (size_t)i * buf_size : NULL;
		/* index 0 on top: the first gets walk the mapping in order */
		p->free[i] = count - 1 - i;
	}
	p->nfree = count;
	return 0;

#ifndef FERRY_POOL_MALLOC
out_free:
	free(p->free);
#endif
out_bufs:
	free(p->bufs);
out_err:
	memset(p, 0, sizeof(*p));
	return -ENOMEM;
}

/* Releases the pool.  Buffers still held become invalid (a leak is a bug the
 * unit tests catch with pool_in_use()); in the malloc build their data is
 * freed too.  Safe on a zeroed or already finished pool. */
void pool_fini(struct pool *p)
{
#ifdef FERRY_POOL_MALLOC
	for (uint32_t i = 0; p->bufs && i < p->count; i++)
		free(p->bufs[i].data);
#endif
	if (p->mem)
		munmap(p->mem, p->mem_len);
	free(p->free);
	free(p->bufs);
	memset(p, 0, sizeof(*p));
}

/* Pops the most recently returned buffer.  The caller owns the one reference
 * of the result (refs == 1, len == 0) and drops it with buf_unref().  NULL
 * when the pool is empty or the fail_after hook fires: fail_after = N makes
 * the Nth following pool_get() return NULL (whether or not a buffer was free)
 * and resets fail_after to 0; a failed get takes no buffer. */
struct buf *pool_get(struct pool *p)
{
	struct buf *b;

	if (p->fail_after > 0 && --p->fail_after == 0)
		return NULL;
	if (p->nfree == 0)
		return NULL;

	b = &p->bufs[p->free[p->nfree - 1]];
	assert(b->refs == 0);
#ifdef FERRY_POOL_MALLOC
	assert(b->data == NULL);
	b->data = malloc(p->buf_size);
	if (!b->data)
		return NULL;
#endif
	p->nfree--;
	b->refs = 1;
	b->len = 0;
	return b;
}

/* Drops the caller's reference.  The holder of the last one gives the buffer
 * back: it goes on top of the free stack (and, in the malloc build, its data
 * is freed).  Unreferencing a free buffer is a bug: it trips an assertion. */
void buf_unref(struct buf *b)
{
	struct pool *p = b->pool;

	assert(b->refs > 0);
	if (--b->refs > 0)
		return;

	assert(p->nfree < p->count);
#ifdef FERRY_POOL_MALLOC
	free(b->data);
	b->data = NULL;
#endif
	p->free[p->nfree++] = b->idx;
}
