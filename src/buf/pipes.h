/* pipes.h - a pool of kernel pipes for splice(2) pass-through.
 *
 * A pipe is lent to one direction of one connection while it holds bytes
 * (socket -> pipe -> socket) and comes back when it is empty, so idle
 * connections hold none.  Pipes are created lazily up to a cap, because each
 * costs two descriptors and kernel pages counted against the user's
 * fs.pipe-user-pages-soft budget; when none is free the caller falls back to
 * pooled buffers.  A pipe that comes back still holding bytes (a connection
 * that ended mid-transfer) is closed, never reused.  One thread.
 */
#ifndef FERRY_BUF_PIPES_H
#define FERRY_BUF_PIPES_H

#include <stddef.h>
#include <stdint.h>

struct pipe_buf {
	int rfd, wfd;
	uint32_t bytes; /* held now: counted here, since EAGAIN is ambiguous */
	uint32_t cap;   /* real capacity (F_GETPIPE_SZ) */
	uint32_t idx;
};

struct pipe_pool {
	struct pipe_buf *pipes; /* cap entries; rfd == -1 when not created */
	uint32_t *free;         /* stack of created, free, empty pipes */
	uint32_t nfree;
	uint32_t cap;
	uint32_t created;
	uint32_t size; /* capacity of each pipe in bytes */
	uint32_t in_use;
	uint64_t fallbacks; /* gets that found no pipe */
};

/* Prepares a pool of at most `cap` pipes of `size` bytes (F_SETPIPE_SZ; the
 * kernel may round up).  Nothing is created yet.  cap 0 disables splicing.
 * Returns 0 or -ENOMEM. */
int pipes_init(struct pipe_pool *pp, uint32_t cap, uint32_t size);
void pipes_fini(struct pipe_pool *pp);

/* Lends an empty pipe, creating one if under the cap; NULL when none can be
 * had (cap reached, or pipe2() failed, e.g. EMFILE). */
struct pipe_buf *pipes_get(struct pipe_pool *pp);

/* Takes a pipe back; one still holding bytes is closed. */
void pipes_put(struct pipe_pool *pp, struct pipe_buf *p);

#endif
