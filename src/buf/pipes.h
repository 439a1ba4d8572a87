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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pipe_buf {
	int rfd, wfd;
	uint32_t bytes; /* held now: counted here, since EAGAIN is ambiguous */
	uint32_t cap;   /* real capacity (F_GETPIPE_SZ) */
	uint32_t idx;
	uint16_t held; /* asynchronous engine operations using it (pipes_hold) */
	bool returned; /* pipes_put() while held: the put waits for the release */
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

/* Takes a pipe back; one still holding bytes is closed.  A pipe that an
 * engine operation still holds (pipes_hold) is only marked returned: the put
 * happens at pipes_release(), so it is never lent twice. */
void pipes_put(struct pipe_pool *pp, struct pipe_buf *p);

/* An engine that moves bytes asynchronously (io_uring) holds a pipe while a
 * kernel operation reads or writes it; the owner may give it back meanwhile
 * (pipes_put).  pipes_release() ends one hold.  When the pipe was returned
 * during the hold: with `reclaim` it stays lent (the engine hands it back to
 * its owner, e.g. because bytes arrived in it) and true is returned;
 * otherwise the deferred put happens now and false is returned.  A pipe that
 * was not returned is untouched: true. */
void pipes_hold(struct pipe_buf *p);
bool pipes_release(struct pipe_pool *pp, struct pipe_buf *p, bool reclaim);

#endif
