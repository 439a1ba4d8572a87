/* pool.h - fixed-size, reference-counted buffers allocated once at start.
 *
 * The data of all buffers is one anonymous mapping, so a buffer that was never
 * used costs no resident memory; headers live in a separate array and free
 * buffers are an index stack, so a free buffer's page is never touched.
 *
 * Invariants:
 *   - a buffer handed out by pool_get() has refs == 1 and len == 0;
 *   - every holder owns exactly one reference; the holder that drops the last
 *     one (buf_unref) returns the buffer to its pool;
 *   - `len` is set by whoever fills the buffer and is read-only afterwards, so
 *     several readers (primary, mirrors, fan-out outputs) can share it, each
 *     with its own offset.
 *
 * Debug builds (-DFERRY_POOL_MALLOC) give every buffer its own malloc() so the
 * sanitizers see use-after-free and overflow; the counts stay the same.
 * A pool is used by one thread.
 */
#ifndef FERRY_BUF_POOL_H
#define FERRY_BUF_POOL_H

#include <stddef.h>
#include <stdint.h>

struct pool;

struct buf {
	uint8_t *data;
	uint32_t len;  /* bytes filled */
	uint32_t refs; /* holders */
	uint32_t idx;  /* position in the pool */
	struct pool *pool;
};

struct pool {
	size_t buf_size;
	uint32_t count;
	uint32_t nfree;
	uint32_t *free;   /* stack of free indices */
	struct buf *bufs; /* headers */
	uint8_t *mem;     /* count * buf_size bytes (NULL with FERRY_POOL_MALLOC) */
	size_t mem_len;
	uint32_t fail_after; /* test hook: > 0 makes the Nth next get fail */
};

/* Creates `count` buffers of `buf_size` bytes.  Returns 0 or -ENOMEM. */
int pool_init(struct pool *p, uint32_t count, size_t buf_size);
void pool_fini(struct pool *p);

/* Takes a free buffer (refs = 1, len = 0), or NULL when none is free. */
struct buf *pool_get(struct pool *p);

/* Adds a reference for a new holder. */
static inline struct buf *buf_ref(struct buf *b)
{
	b->refs++;
	return b;
}

/* Drops the caller's reference; the last one returns b to its pool. */
void buf_unref(struct buf *b);

/* Buffers handed out and not yet returned. */
static inline uint32_t pool_in_use(const struct pool *p)
{
	return p->count - p->nfree;
}

#endif
