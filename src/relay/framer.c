/* framer.c - line framing and the shared slice log of fan-out (see framer.h
 * for the model: who holds which reference, and why small reads are copied).
 *
 * Invariants, checked by the unit tests:
 *   - every live slice (seq in [head, tail)) with pending > 0 holds exactly
 *     one reference on its buffer; one with pending == 0 holds none and has
 *     buf == NULL;
 *   - head only passes slices with pending == 0, so head is the smallest
 *     cursor position (or tail): fr_max_queued() is the largest backlog;
 *   - with line framing the log only ever grows by whole records, so the
 *     tail is a record boundary between two calls;
 *   - every chain node holds one reference; an input's `fill` holds one;
 *   - `bufs` is the number of distinct buffers those references cover.
 */
#include "relay/framer.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* --- byte level ------------------------------------------------------------ */

int framer_scan(uint64_t max_line, uint64_t partial, const uint8_t *p, size_t n,
                struct framer_scan *out)
{
	size_t start = 0;
	out->complete = 0;
	out->records = 0;
	while (start < n) {
		const uint8_t *nl = memchr(p + start, '\n', n - start);
		if (!nl)
			break;
		size_t end = (size_t)(nl - p) + 1;
		if (partial + (end - start) > max_line) {
			out->partial = partial + (n - start);
			return -EMSGSIZE;
		}
		out->records++;
		out->complete = end;
		partial = 0;
		start = end;
	}
	partial += n - start;
	out->partial = partial;
	/* Its `\n` would make it longer than max_line: refuse it now rather
	 * than hold max_line bytes hoping for a record that cannot be valid. */
	if (partial >= max_line)
		return -EMSGSIZE;
	return 0;
}

/* --- the log --------------------------------------------------------------- */

static uint32_t pow2_at_least(uint32_t n)
{
	uint32_t p = 16;
	while (p < n && p < (1u << 30))
		p <<= 1;
	return p;
}

int fr_log_init(struct fr_log *l, enum framing framing, uint64_t max_line, uint32_t slots,
                uint32_t nodes)
{
	memset(l, 0, sizeof(*l));
	if (max_line == 0 || slots == 0)
		return -EINVAL;
	l->framing = framing;
	l->max_line = max_line;
	l->cap = pow2_at_least(slots);
	l->mask = l->cap - 1;
	l->n_nodes = nodes ? nodes : 1;
	l->ring = calloc(l->cap, sizeof(*l->ring));
	l->nodes = calloc(l->n_nodes, sizeof(*l->nodes));
	l->free_nodes = calloc(l->n_nodes, sizeof(*l->free_nodes));
	if (!l->ring || !l->nodes || !l->free_nodes) {
		fr_log_fini(l);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < l->n_nodes; i++)
		l->free_nodes[i] = l->n_nodes - 1 - i;
	l->nfree = l->n_nodes;
	return 0;
}

void fr_put(struct fr_log *l, struct buf *b)
{
	if (b->refs == 1) {
		assert(l->bufs > 0);
		l->bufs--;
	}
	buf_unref(b);
}

void fr_log_fini(struct fr_log *l)
{
	for (uint64_t seq = l->head; l->ring && seq < l->tail; seq++) {
		struct fr_slice *s = &l->ring[seq & l->mask];
		if (s->pending > 0 && s->buf)
			fr_put(l, s->buf);
	}
	free(l->ring);
	free(l->nodes);
	free(l->free_nodes);
	memset(l, 0, sizeof(*l));
}

uint64_t fr_max_queued(const struct fr_log *l)
{
	if (l->head == l->tail)
		return 0;
	const struct fr_slice *s = &l->ring[l->head & l->mask];
	return l->total - (s->end - s->len);
}

/* Reclaims the slots at the head that no cursor needs any more. */
static void trim(struct fr_log *l)
{
	while (l->head < l->tail && l->ring[l->head & l->mask].pending == 0)
		l->head++;
}

/* One cursor is done with s (took it with its own reference, skipped it or
 * left): the last one gives the slice's reference back. */
static void slice_release(struct fr_log *l, struct fr_slice *s)
{
	assert(s->pending > 0);
	if (--s->pending == 0) {
		fr_put(l, s->buf);
		s->buf = NULL;
	}
}

/* Appends buf[off, off + len) for every attached cursor (readers > 0), merging
 * it into the tail slice when that is still open and contiguous.  Takes a new
 * reference for a new slice; the caller keeps its own. */
static void append_slice(struct fr_log *l, struct buf *buf, uint32_t off, uint32_t len, bool ends,
                         uint32_t nrec)
{
	assert(l->readers > 0);
	if (l->tail_open && l->tail > l->head) {
		struct fr_slice *t = &l->ring[(l->tail - 1) & l->mask];
		/* A piece that does not end a record (chain_flush) is not merged
		 * into a tail that does: the merged slice would hide that record
		 * end, and a take for whole records of that slice alone would stop
		 * inside the next record (found by tests/fuzz/fuzz_framer.c). */
		if (t->buf == buf && t->off + t->len == off && t->pending > 0 &&
		    (ends || !t->ends_record)) {
			t->len += len;
			l->total += len;
			t->end = l->total;
			t->nrec += nrec;
			t->ends_record = ends;
			return;
		}
	}
	assert(l->tail - l->head < l->cap);
	struct fr_slice *s = &l->ring[l->tail & l->mask];
	s->buf = buf_ref(buf);
	s->off = off;
	s->len = len;
	l->total += len;
	s->end = l->total;
	s->pending = l->readers;
	s->nrec = nrec;
	s->ends_record = ends;
	s->next = FR_NONE;
	l->tail++;
	l->tail_open = true;
}

/* --- inputs ---------------------------------------------------------------- */

void fr_input_init(struct fr_input *in)
{
	memset(in, 0, sizeof(*in));
	in->head = in->tail = FR_NONE;
}

static uint32_t slots_needed(const struct fr_log *l, const struct fr_input *in)
{
	return l->framing == FRAMING_LINE ? in->count + 1 : 1;
}

void fr_input_unreserve(struct fr_log *l, struct fr_input *in)
{
	l->reserved -= in->resv_slots;
	in->resv_slots = 0;
	if (in->resv_node) {
		l->nodes_reserved--;
		in->resv_node = false;
	}
}

int fr_input_reserve(struct fr_log *l, struct fr_input *in)
{
	uint32_t need = slots_needed(l, in);
	bool node = l->framing == FRAMING_LINE;
	fr_input_unreserve(l, in);
	if (need > l->cap / 2)
		return -E2BIG;
	if (fr_room(l) < need)
		return -ENOSPC;
	if (node && l->nfree <= l->nodes_reserved)
		return -ENOMEM;
	l->reserved += need;
	in->resv_slots = need;
	if (node) {
		l->nodes_reserved++;
		in->resv_node = true;
	}
	return 0;
}

static void chain_release(struct fr_log *l, struct fr_input *in)
{
	uint32_t i = in->head;
	while (i != FR_NONE) {
		struct fr_slice *nd = &l->nodes[i];
		uint32_t next = nd->next;
		fr_put(l, nd->buf);
		nd->buf = NULL;
		l->free_nodes[l->nfree++] = i;
		i = next;
	}
	in->head = in->tail = FR_NONE;
	in->count = 0;
	in->partial = 0;
}

/* Adds buf[off, off + len) to the input's partial record.  The caller made
 * sure a node is free. */
static void chain_add(struct fr_log *l, struct fr_input *in, struct buf *buf, uint32_t off,
                      uint32_t len)
{
	if (in->tail != FR_NONE) {
		struct fr_slice *t = &l->nodes[in->tail];
		if (t->buf == buf && t->off + t->len == off) {
			t->len += len;
			return;
		}
	}
	assert(l->nfree > 0);
	uint32_t i = l->free_nodes[--l->nfree];
	struct fr_slice *nd = &l->nodes[i];
	memset(nd, 0, sizeof(*nd));
	nd->buf = buf_ref(buf);
	nd->off = off;
	nd->len = len;
	nd->next = FR_NONE;
	if (in->tail == FR_NONE)
		in->head = i;
	else
		l->nodes[in->tail].next = i;
	in->tail = i;
	in->count++;
}

/* Appends the input's partial record to the log, node by node, and frees the
 * chain.  The caller appends the slice that completes it right after. */
static void chain_flush(struct fr_log *l, struct fr_input *in)
{
	for (uint32_t i = in->head; i != FR_NONE; i = l->nodes[i].next) {
		struct fr_slice *nd = &l->nodes[i];
		append_slice(l, nd->buf, nd->off, nd->len, false, 0);
	}
	chain_release(l, in);
}

int fr_input_feed(struct fr_log *l, struct fr_input *in, struct buf *b, struct fr_feed *res)
{
	uint32_t n = b->len;
	bool line = l->framing == FRAMING_LINE;
	memset(res, 0, sizeof(*res));
	l->bufs++; /* the caller's reference is ours now */
	if (!l->buf_size)
		l->buf_size = b->pool->buf_size;
	fr_input_unreserve(l, in);
	if (fr_room(l) < slots_needed(l, in) || (line && l->nfree <= l->nodes_reserved)) {
		res->discarded = n;
		fr_put(l, b);
		return line && l->nfree <= l->nodes_reserved ? -ENOMEM : -ENOSPC;
	}
	if (n == 0) {
		fr_put(l, b);
		return 0;
	}

	/* Where the bytes will live: the room of the previous buffer, or b. */
	struct buf *buf;
	uint32_t off;
	if (in->fill && in->fill->len + (size_t)n <= l->buf_size) {
		memcpy(in->fill->data + in->fill->len, b->data, n);
		buf = in->fill;
		off = in->fill->len;
		in->fill->len += n;
		fr_put(l, b);
	} else {
		if (in->fill)
			fr_put(l, in->fill);
		in->fill = b; /* the caller's reference becomes the fill reference */
		buf = b;
		off = 0;
	}

	int rc = 0;
	if (!line) {
		if (l->readers == 0) {
			res->released = n;
		} else {
			append_slice(l, buf, off, n, true, 0);
			res->appended = n;
		}
	} else {
		struct framer_scan sc;
		rc = framer_scan(l->max_line, in->partial, buf->data + off, n, &sc);
		if (sc.complete > 0) {
			uint64_t bytes = in->partial + sc.complete;
			if (l->readers == 0) {
				chain_release(l, in);
				res->released = bytes;
			} else {
				chain_flush(l, in);
				append_slice(l, buf, off, (uint32_t)sc.complete, true, sc.records);
				l->records += sc.records;
				res->appended = bytes;
			}
			res->records = sc.records;
			in->partial = 0;
		}
		uint32_t rest = n - (uint32_t)sc.complete;
		if (rc < 0) {
			res->discarded = in->partial + rest;
			chain_release(l, in);
		} else if (rest > 0) {
			chain_add(l, in, buf, off + (uint32_t)sc.complete, rest);
			in->partial = sc.partial;
		}
	}
	/* A full buffer can take no more small reads: let it go with its
	 * readers instead of pinning it. */
	if (in->fill && in->fill->len >= l->buf_size) {
		fr_put(l, in->fill);
		in->fill = NULL;
	}
	return rc;
}

uint64_t fr_input_end(struct fr_log *l, struct fr_input *in)
{
	uint64_t dropped = in->partial;
	chain_release(l, in);
	if (in->fill)
		fr_put(l, in->fill);
	fr_input_unreserve(l, in);
	fr_input_init(in);
	return dropped;
}

/* --- cursors --------------------------------------------------------------- */

void fr_cursor_attach(struct fr_log *l, struct fr_cursor *c)
{
	c->seq = l->tail;
	c->pos = l->total;
	c->at_boundary = true;
	c->attached = true;
	l->readers++;
	/* Bytes merged into the tail from now on would be missed by c. */
	l->tail_open = false;
}

void fr_cursor_detach(struct fr_log *l, struct fr_cursor *c)
{
	if (!c->attached)
		return;
	for (uint64_t seq = c->seq; seq < l->tail; seq++)
		slice_release(l, &l->ring[seq & l->mask]);
	c->seq = l->tail;
	c->pos = l->total;
	c->attached = false;
	l->readers--;
	trim(l);
}

int fr_cursor_take(struct fr_log *l, struct fr_cursor *c, struct iovec *iov, struct buf **bufs,
                   int max, uint64_t max_bytes, bool whole_records, uint64_t *bytes)
{
	uint64_t avail = l->tail - c->seq;
	int k = avail < (uint64_t)max ? (int)avail : max;
	*bytes = 0;
	if (k <= 0)
		return 0;
	uint64_t sum = l->ring[c->seq & l->mask].len;
	for (int i = 1; i < k; i++) {
		sum += l->ring[(c->seq + (uint64_t)i) & l->mask].len;
		if (sum > max_bytes) {
			k = i;
			break;
		}
	}
	if (whole_records) {
		int last = -1;
		for (int i = 0; i < k; i++)
			if (l->ring[(c->seq + (uint64_t)i) & l->mask].ends_record)
				last = i;
		if (last >= 0)
			k = last + 1;
	}
	for (int i = 0; i < k; i++) {
		struct fr_slice *s = &l->ring[(c->seq + (uint64_t)i) & l->mask];
		iov[i].iov_base = s->buf->data + s->off;
		iov[i].iov_len = s->len;
		bufs[i] = buf_ref(s->buf);
		*bytes += s->len;
		c->at_boundary = s->ends_record;
		slice_release(l, s);
	}
	c->seq += (uint64_t)k;
	c->pos += *bytes;
	if (c->seq == l->tail)
		l->tail_open = false;
	trim(l);
	return k;
}

uint32_t fr_cursor_skip(struct fr_log *l, struct fr_cursor *c, bool keep_last, uint64_t *bytes)
{
	*bytes = 0;
	if (!c->at_boundary || c->seq == l->tail)
		return 0;
	uint64_t last = c->seq;
	while (last < l->tail && !l->ring[last & l->mask].ends_record)
		last++;
	if (last == l->tail || (keep_last && last + 1 == l->tail))
		return 0;
	uint32_t recs = 0;
	for (uint64_t seq = c->seq; seq <= last; seq++) {
		struct fr_slice *s = &l->ring[seq & l->mask];
		recs += s->nrec;
		*bytes += s->len;
		slice_release(l, s);
	}
	c->seq = last + 1;
	c->pos += *bytes;
	if (c->seq == l->tail)
		l->tail_open = false;
	trim(l);
	return recs;
}
