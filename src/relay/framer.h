/* framer.h - fan-out's data path with no I/O in it: line framing, and the
 * shared log of slices that every output walks with its own cursor.
 *
 * Kept apart from fanout.c (which talks to the engine) so that it can be
 * unit-tested and fuzzed on its own: everything here is plain data structure
 * work on pooled buffers, single-threaded, and allocates only in
 * fr_log_init().
 *
 * Byte level.  framer_scan() finds record ends (`\n`) in a chunk and checks
 * each record against max_line, given how many bytes of the current record
 * came before the chunk.
 *
 * The log.  Inputs append slices {buf, off, len} of the buffers they
 * received; outputs (cursors) take them in log order.  A slice holds one
 * reference on its buffer for all the cursors that still need it (`pending`);
 * a cursor that takes slices for a send gets its own reference per slice and
 * gives it back with fr_put() once the send is over.  So a buffer goes back
 * to the pool when its last reader has sent it, and no byte is ever copied
 * per output.  A slot of the ring is reused once no cursor needs it.
 *
 * Line framing.  An input's partial record (bytes after its last `\n`) is
 * held in the input's chain, outside the log; when its `\n` arrives, the
 * chain and everything up to the last `\n` of the chunk are appended in one
 * go.  So in the log, records of different inputs are never interleaved
 * inside a record, and the tail of the log is always a record boundary: a
 * cursor attached at the tail starts at a record boundary.  A record that
 * was partial when a cursor attached is delivered to it whole when it
 * completes.  Records longer than max_line (counting their `\n`) are refused
 * (-EMSGSIZE): the input's partial record is discarded, never appended.
 *
 * Small reads.  A read that fits in the room left in the input's previous
 * buffer (`fill`) is copied there once, whatever the number of outputs, and
 * its own buffer goes back at once.  So a trickle of small reads does not pin
 * one pooled buffer per read: every buffer an input holds, except its last,
 * is more than half full.  Full-size reads are never copied.  Bytes are only
 * ever added beyond `fill->len`, where no slice points, so readers of the
 * earlier bytes of the buffer are not disturbed (pool.h's "len is read-only
 * once filled" holds for every byte a slice refers to).
 *
 * Slices that are contiguous in one buffer are merged: consecutive pieces of
 * a chain, and a new slice with the log's tail while no cursor has taken the
 * tail or attached since it was appended (`tail_open`).
 *
 * Accounting.  `bufs` counts the distinct pool buffers held through the log
 * (slices, chains, fills, references taken for sends): fr_put() is the only
 * way fan-out gives a buffer reference back, and it notices the last one.
 */
#ifndef FERRY_RELAY_FRAMER_H
#define FERRY_RELAY_FRAMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf/pool.h"
#include "config/config.h"

#define FR_NONE UINT32_MAX

/* --- byte level ------------------------------------------------------------ */

struct framer_scan {
	size_t complete;  /* bytes up to and including the last good `\n` (0: none) */
	uint32_t records; /* records ending in those bytes */
	uint64_t partial; /* bytes of the record still open after the chunk */
};

/* Scans p[0..n) for record ends; `partial` bytes of the current record came
 * before p.  Returns 0, or -EMSGSIZE when a record is longer than max_line
 * (counting its `\n`), or an unterminated one already is max_line long so
 * that it can never end in time.  Either way `out` describes the good prefix:
 * complete records up to the first bad one. */
int framer_scan(uint64_t max_line, uint64_t partial, const uint8_t *p, size_t n,
                struct framer_scan *out);

/* --- the shared log ---------------------------------------------------------- */

struct fr_slice {
	struct buf *buf; /* one reference (log: while pending > 0; chain: always) */
	uint64_t end;    /* log: bytes appended up to the end of this slice */
	uint32_t off, len;
	uint32_t pending; /* log: cursors that have neither taken nor skipped it */
	uint32_t nrec;    /* records that end inside this slice */
	uint32_t next;    /* chain: next node, FR_NONE at the end */
	bool ends_record; /* the slice ends on a record boundary (raw: always) */
};

struct fr_log {
	enum framing framing;
	uint64_t max_line;
	size_t buf_size;       /* of the pool the buffers come from (0: unknown yet) */
	struct fr_slice *ring; /* cap slots, slice seq at ring[seq & mask] */
	uint32_t cap, mask;
	uint64_t head, tail;    /* live slices: [head, tail) */
	uint64_t total;         /* bytes ever appended */
	uint64_t records;       /* records ever appended (line framing) */
	uint32_t readers;       /* cursors attached */
	uint32_t reserved;      /* slots promised to inputs (fr_input_reserve) */
	bool tail_open;         /* the tail slice may still grow (see top) */
	struct fr_slice *nodes; /* chain nodes: n_nodes, free ones stacked in nfree_idx */
	uint32_t *free_nodes;
	uint32_t n_nodes, nfree, nodes_reserved;
	uint32_t bufs; /* distinct pool buffers held through the log */
};

/* One input's state: its partial record and the buffer small reads go to. */
struct fr_input {
	struct buf *fill;           /* one reference, or NULL */
	uint32_t head, tail, count; /* chain of the partial record (node indices) */
	uint64_t partial;           /* its bytes */
	uint32_t resv_slots;        /* reservation held (fr_input_reserve) */
	bool resv_node;
};

/* One output's position. */
struct fr_cursor {
	uint64_t seq; /* next slice to take */
	uint64_t pos; /* log bytes before it */
	bool at_boundary;
	bool attached;
};

/* What one fr_input_feed() did. */
struct fr_feed {
	uint64_t appended;  /* bytes appended to the log (0 when no cursor is attached) */
	uint64_t released;  /* complete bytes dropped because no cursor was attached */
	uint32_t records;   /* records completed */
	uint64_t discarded; /* -EMSGSIZE: bytes thrown away (partial record, rest of chunk) */
};

/* Sets up a log of `slots` slices (rounded up to a power of two) and `nodes`
 * chain nodes.  0, -EINVAL or -ENOMEM. */
int fr_log_init(struct fr_log *l, enum framing framing, uint64_t max_line, uint32_t slots,
                uint32_t nodes);
/* Gives back every reference the log's slices hold and frees the log.  Inputs
 * must have been ended (fr_input_end) and send references put back first. */
void fr_log_fini(struct fr_log *l);

/* Free slots, not counting reservations. */
static inline uint32_t fr_room(const struct fr_log *l)
{
	return l->cap - (uint32_t)(l->tail - l->head) - l->reserved;
}

/* The most any cursor has left to take: bytes from the head to the tail. */
uint64_t fr_max_queued(const struct fr_log *l);

/* Drops one reference on a buffer held through the log; the last one gives
 * the buffer back to its pool and is counted out of `bufs`. */
void fr_put(struct fr_log *l, struct buf *b);

/* --- inputs ---------------------------------------------------------------- */

void fr_input_init(struct fr_input *in);

/* Sets aside the slots and the chain node that the input's next fr_input_feed()
 * can need, so that a receive can be asked for knowing its bytes will fit.
 * 0; -ENOSPC when the log has no room now (cursors must move first);
 * -ENOMEM when no chain node is free; -E2BIG when the input's partial record
 * needs more slots than the log will ever have.  A reservation is held until
 * the next feed, fr_input_unreserve() or fr_input_end(). */
int fr_input_reserve(struct fr_log *l, struct fr_input *in);
void fr_input_unreserve(struct fr_log *l, struct fr_input *in);

/* Takes the caller's reference on b (b->len bytes, received for this input)
 * and appends what is complete: raw, the whole chunk; line, every complete
 * record.  With no cursor attached complete bytes are released at once.
 * Uses the input's reservation, if any.  Returns 0; -EMSGSIZE when a record
 * is too long (the good records before it are appended, the partial record
 * and the rest of the chunk discarded: the input must be closed); -ENOSPC or
 * -ENOMEM when it was not reserved and there is no room (nothing appended,
 * the chunk is dropped, the input must be closed). */
int fr_input_feed(struct fr_log *l, struct fr_input *in, struct buf *b, struct fr_feed *res);

/* The input ended: drops its partial record (its bytes are returned) and its
 * fill buffer, and gives back its reservation.  The input may be reused
 * after fr_input_init(). */
uint64_t fr_input_end(struct fr_log *l, struct fr_input *in);

/* --- cursors ------------------------------------------------------------- */

/* Attaches c at the tail: it gets what is appended from now on, starting at
 * a record boundary. */
void fr_cursor_attach(struct fr_log *l, struct fr_cursor *c);

/* Detaches c: the slices it had not taken are no longer kept for it. */
void fr_cursor_detach(struct fr_log *l, struct fr_cursor *c);

/* Bytes appended that c has not taken yet. */
static inline uint64_t fr_cursor_left(const struct fr_log *l, const struct fr_cursor *c)
{
	return l->total - c->pos;
}

/* Takes up to max slices at c into iov[] and, each with its own reference,
 * bufs[] (the caller puts them back with fr_put() after the send), no more
 * than max_bytes of them unless the first slice alone is larger.  With
 * whole_records, stops after the last record end among them, if any.
 * Returns the slices taken (0: none left) and their bytes in *bytes. */
int fr_cursor_take(struct fr_log *l, struct fr_cursor *c, struct iovec *iov, struct buf **bufs,
                   int max, uint64_t max_bytes, bool whole_records, uint64_t *bytes);

/* Skips the record (or records merged into one slice group) at c, which must
 * be at a record boundary.  With keep_last, the last group of the log is
 * never skipped (an output always gets the newest record).  Returns the
 * number of records skipped, 0 when nothing can be skipped (not at a
 * boundary, or nothing left); *bytes gets the bytes skipped. */
uint32_t fr_cursor_skip(struct fr_log *l, struct fr_cursor *c, bool keep_last, uint64_t *bytes);

#endif
