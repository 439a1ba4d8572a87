/* fuzz_framer.c - fan-out's framer (src/relay/framer.c): the line scanner
 * and the shared slice log, driven by a script of operations, against a
 * model of what every output must receive.
 *
 * Input format (every read past the end gives 0):
 *   byte 0    bit 0: framing (0 raw, 1 line)
 *   byte 1    max_line - 1            (1..256)
 *   byte 2    buffer size - 4         (4..67 bytes, mod 64)
 *   byte 3    log slots - 1           (1..64, rounded up to 16 at least)
 *   byte 4    chain nodes             (mod 16; 0 means 1)
 *   byte 5    pool buffers - 8        (8..71, mod 64)
 *   then operations until the input ends, each one byte `op` and its
 *   arguments; `op >> 4` picks the input or cursor (mod 3):
 *     op & 15 = 0, 1, 2   feed: one length byte L (mod buffer size + 1),
 *                         then L data bytes; with op & 15 == 1 the input
 *                         reserves first (and feeds anyway if that fails)
 *     3  reserve          4  unreserve        5  end the input
 *     6  attach cursor    7  detach cursor
 *     8  take: one byte m (max slices 1 + m % 8, whole records when m &
 *        0x80), one byte b (max bytes 1 + b * 4, 0xff: no limit); the
 *        references are held as a send in flight
 *     9  the cursor's send is done: its references are put back
 *     10 skip, keep_last when bit 6 of op is set
 *     11..15 feed as 0
 * (tests/fuzz/corpus/framer/ was written with tests/fuzz/framer_seeds.py.)
 *
 * The model: the bytes of the log in order (`log`), each input's partial
 * record, and each cursor's position.  The properties checked besides memory
 * safety (ASan; pool buffers are malloc'd one by one in this build) and UB:
 *   - a feed appends exactly what the framing says: raw, the chunk; line,
 *     the input's partial record and the chunk up to the last record end
 *     before the first record longer than max_line; -EMSGSIZE exactly when
 *     such a record exists or the open record reached max_line, and then
 *     `discarded` is the rest; the counts in struct fr_feed agree; with no
 *     cursor the complete bytes are released instead;
 *   - a feed after a successful fr_input_reserve() never fails for room
 *     (the promise fan-out relies on before it asks for a receive);
 *   - every cursor takes exactly the log's bytes from where it attached, in
 *     order, none twice, none missing, at record boundaries with line
 *     framing (a take for whole records that holds a record end stops at
 *     one; a skip ends at one and counts its records);
 *   - the log's counters agree with the model: total, records, each
 *     cursor's position and backlog, fr_max_queued() the largest backlog,
 *     `bufs` the buffers out of the pool;
 *   - at the end, after inputs are ended, cursors detached and sends put
 *     back, every buffer is back in the pool.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "buf/pool.h"
#include "relay/framer.h"
#include "fuzz.h"

#define N_INPUTS  3
#define N_CURSORS 3
#define MAX_TAKE  8

struct reader {
	const uint8_t *p;
	size_t n;
};

static uint8_t next(struct reader *r)
{
	if (r->n == 0)
		return 0;
	r->n--;
	return *r->p++;
}

struct model_input {
	uint8_t *partial; /* the input's open record (line framing) */
	size_t partial_len;
	bool reserved; /* fr_input_reserve() succeeded, no feed since */
};

struct model_cursor {
	struct fr_cursor c;
	uint64_t pos;   /* log bytes before it, by the model */
	uint64_t start; /* where it attached */
	struct buf *inflight[MAX_TAKE];
	int n_inflight;
};

struct state {
	struct pool pool;
	struct fr_log log;
	bool line;
	uint64_t max_line;
	size_t buf_size;
	struct fr_input in[N_INPUTS];
	struct model_input mi[N_INPUTS];
	struct model_cursor mc[N_CURSORS];
	uint8_t *log_bytes; /* the model of the log: every byte appended */
	size_t log_len, log_cap;
	uint64_t log_records;
};

static void model_append(struct state *st, const uint8_t *p, size_t n)
{
	if (st->log_len + n > st->log_cap)
		fuzz_fail("model log overflow"); /* sized from the input: cannot happen */
	memcpy(st->log_bytes + st->log_len, p, n);
	st->log_len += n;
	for (size_t i = 0; i < n; i++)
		st->log_records += p[i] == '\n';
}

static uint32_t attached(const struct state *st)
{
	uint32_t n = 0;

	for (int i = 0; i < N_CURSORS; i++)
		n += st->mc[i].c.attached;
	return n;
}

static bool at_record_end(const struct state *st, uint64_t pos)
{
	return pos == 0 || st->log_bytes[pos - 1] == '\n';
}

/* The log against the model, between two operations. */
static void check_log(struct state *st)
{
	struct fr_log *l = &st->log;
	uint64_t most = 0;

	if (l->total != st->log_len)
		fuzz_fail("log total %llu, model %zu", (unsigned long long)l->total, st->log_len);
	if (st->line && l->records != st->log_records)
		fuzz_fail("log records %llu, model %llu", (unsigned long long)l->records,
		          (unsigned long long)st->log_records);
	if (l->readers != attached(st))
		fuzz_fail("log readers %u, attached %u", l->readers, attached(st));
	if (l->bufs != pool_in_use(&st->pool))
		fuzz_fail("log counts %u buffers, pool has %u out", l->bufs,
		          pool_in_use(&st->pool));
	if (l->tail - l->head > l->cap || l->reserved > l->cap - (uint32_t)(l->tail - l->head))
		fuzz_fail("log slots: %llu live, %u reserved, cap %u",
		          (unsigned long long)(l->tail - l->head), l->reserved, l->cap);
	for (int i = 0; i < N_CURSORS; i++) {
		struct model_cursor *m = &st->mc[i];

		if (!m->c.attached)
			continue;
		if (m->c.pos != m->pos)
			fuzz_fail("cursor %d at %llu, model %llu", i, (unsigned long long)m->c.pos,
			          (unsigned long long)m->pos);
		if (fr_cursor_left(l, &m->c) != st->log_len - m->pos)
			fuzz_fail("cursor %d: %llu left, model %llu", i,
			          (unsigned long long)fr_cursor_left(l, &m->c),
			          (unsigned long long)(st->log_len - m->pos));
		if (st->line && m->c.at_boundary != at_record_end(st, m->pos))
			fuzz_fail("cursor %d: at_boundary %d at %llu", i, m->c.at_boundary,
			          (unsigned long long)m->pos);
		if (st->log_len - m->pos > most)
			most = st->log_len - m->pos;
	}
	if (fr_max_queued(l) != most)
		fuzz_fail("fr_max_queued %llu, largest backlog %llu",
		          (unsigned long long)fr_max_queued(l), (unsigned long long)most);
	for (int i = 0; i < N_INPUTS; i++)
		if (st->in[i].partial != st->mi[i].partial_len)
			fuzz_fail("input %d: partial %llu, model %zu", i,
			          (unsigned long long)st->in[i].partial, st->mi[i].partial_len);
}

/* --- inputs ------------------------------------------------------------------ */

static void input_end(struct state *st, int i)
{
	uint64_t dropped = fr_input_end(&st->log, &st->in[i]);

	if (dropped != st->mi[i].partial_len)
		fuzz_fail("input %d ended: %llu dropped, model %zu", i, (unsigned long long)dropped,
		          st->mi[i].partial_len);
	st->mi[i].partial_len = 0;
	st->mi[i].reserved = false;
}

static void input_reserve(struct state *st, int i)
{
	int rc = fr_input_reserve(&st->log, &st->in[i]);

	if (rc != 0 && rc != -ENOSPC && rc != -ENOMEM && rc != -E2BIG)
		fuzz_fail("fr_input_reserve: %d", rc);
	st->mi[i].reserved = rc == 0;
}

/* What a line-framed feed of chunk c[0..n) to input i must do: *good gets
 * the bytes of partial + chunk that are complete, valid records, *bad whether
 * -EMSGSIZE is due. */
static void line_expect(const struct state *st, const uint8_t *cat, size_t len, size_t *good,
                        bool *bad)
{
	size_t start = 0;

	*good = 0;
	*bad = false;
	for (size_t i = 0; i < len; i++) {
		if (cat[i] != '\n')
			continue;
		if (i + 1 - start > st->max_line) {
			*bad = true;
			return;
		}
		start = i + 1;
		*good = start;
	}
	*bad = len - start >= st->max_line;
}

static void input_feed(struct state *st, int i, struct reader *r, bool reserve)
{
	struct model_input *mi = &st->mi[i];
	size_t n = next(r) % (st->buf_size + 1);
	uint8_t chunk[256];

	for (size_t k = 0; k < n; k++)
		chunk[k] = next(r);
	if (reserve)
		input_reserve(st, i);
	struct buf *b = pool_get(&st->pool);

	if (!b)
		return; /* the pool is dry: fan-out would wait */
	memcpy(b->data, chunk, n);
	b->len = (uint32_t)n;

	bool was_reserved = mi->reserved;
	uint64_t total_before = st->log.total;
	struct fr_feed res;
	int rc = fr_input_feed(&st->log, &st->in[i], b, &res);

	mi->reserved = false;
	if (rc == -ENOSPC || rc == -ENOMEM) {
		if (was_reserved)
			fuzz_fail("input %d: feed after a reservation failed with %d", i, rc);
		if (res.discarded != n || res.appended || res.released || res.records ||
		    st->log.total != total_before)
			fuzz_fail("input %d: refused feed still did something", i);
		input_end(st, i); /* "the input must be closed" */
		return;
	}
	if (rc != 0 && rc != -EMSGSIZE)
		fuzz_fail("fr_input_feed: %d", rc);
	if (!st->line) {
		if (rc != 0 || res.discarded || res.records)
			fuzz_fail("raw feed: rc %d discarded %llu records %u", rc,
			          (unsigned long long)res.discarded, res.records);
		if (attached(st) ? res.appended != n || res.released
		                 : res.released != n || res.appended)
			fuzz_fail("raw feed of %zu: appended %llu released %llu", n,
			          (unsigned long long)res.appended,
			          (unsigned long long)res.released);
		if (attached(st))
			model_append(st, chunk, n);
		return;
	}

	/* Line framing: the partial record and the chunk, as one. */
	size_t len = mi->partial_len + n, good;
	bool bad;
	uint8_t *cat = malloc(len ? len : 1);

	if (!cat)
		fuzz_fail("out of memory");
	memcpy(cat, mi->partial, mi->partial_len);
	memcpy(cat + mi->partial_len, chunk, n);
	line_expect(st, cat, len, &good, &bad);
	if ((rc == -EMSGSIZE) != bad)
		fuzz_fail("line feed: rc %d, model says %s", rc, bad ? "too long" : "fine");
	uint32_t recs = 0;

	for (size_t k = 0; k < good; k++)
		recs += cat[k] == '\n';
	if (res.records != recs)
		fuzz_fail("line feed: %u records, model %u", res.records, recs);
	if (attached(st) ? res.appended != good || (good && res.released)
	                 : res.released != good || res.appended)
		fuzz_fail("line feed: appended %llu released %llu, model %zu",
		          (unsigned long long)res.appended, (unsigned long long)res.released, good);
	if (res.discarded != (bad ? len - good : 0))
		fuzz_fail("line feed: discarded %llu, model %zu", (unsigned long long)res.discarded,
		          bad ? len - good : 0);
	if (attached(st))
		model_append(st, cat, good);
	if (bad) {
		mi->partial_len = 0;
		free(cat);
		input_end(st, i); /* "the input must be closed" */
		return;
	}
	memmove(mi->partial, cat + good, len - good);
	mi->partial_len = len - good;
	free(cat);
}

/* --- cursors ----------------------------------------------------------------- */

static void cursor_attach(struct state *st, int i)
{
	struct model_cursor *m = &st->mc[i];

	if (m->c.attached)
		return;
	fr_cursor_attach(&st->log, &m->c);
	m->pos = m->start = st->log_len;
	if (st->line && !at_record_end(st, m->pos))
		fuzz_fail("cursor %d attached inside a record", i);
}

static void cursor_detach(struct state *st, int i)
{
	fr_cursor_detach(&st->log, &st->mc[i].c);
}

static void cursor_done(struct state *st, int i)
{
	struct model_cursor *m = &st->mc[i];

	for (int k = 0; k < m->n_inflight; k++)
		fr_put(&st->log, m->inflight[k]);
	m->n_inflight = 0;
}

static void cursor_take(struct state *st, int i, uint8_t a, uint8_t b)
{
	struct model_cursor *m = &st->mc[i];
	struct iovec iov[MAX_TAKE];
	struct buf *bufs[MAX_TAKE];
	int max = 1 + a % MAX_TAKE;
	bool whole = a & 0x80;
	uint64_t max_bytes = b == 0xff ? UINT64_MAX : 1 + (uint64_t)b * 4, bytes = 0;

	if (!m->c.attached || m->n_inflight)
		return; /* like fan-out: one send at a time per output */
	int k = fr_cursor_take(&st->log, &m->c, iov, bufs, max, max_bytes, whole, &bytes);

	if (k < 0 || k > max)
		fuzz_fail("fr_cursor_take: %d slices of at most %d", k, max);
	uint64_t sum = 0;

	for (int j = 0; j < k; j++) {
		if (iov[j].iov_len == 0)
			fuzz_fail("empty slice taken");
		if (m->pos + sum + iov[j].iov_len > st->log_len ||
		    memcmp(iov[j].iov_base, st->log_bytes + m->pos + sum, iov[j].iov_len) != 0)
			fuzz_fail("cursor %d took bytes that differ from the log at %llu", i,
			          (unsigned long long)(m->pos + sum));
		if (j > 0 && sum + iov[j].iov_len > max_bytes)
			fuzz_fail("take went past max_bytes");
		sum += iov[j].iov_len;
		m->inflight[j] = bufs[j];
	}
	m->n_inflight = k;
	if (sum != bytes)
		fuzz_fail("take: %llu bytes in slices, %llu said", (unsigned long long)sum,
		          (unsigned long long)bytes);
	if (k == 0 && m->pos != st->log_len)
		fuzz_fail("cursor %d took nothing with %llu bytes left", i,
		          (unsigned long long)(st->log_len - m->pos));
	if (st->line && whole && sum && memchr(st->log_bytes + m->pos, '\n', sum) &&
	    st->log_bytes[m->pos + sum - 1] != '\n')
		fuzz_fail("take of whole records stopped inside a record");
	m->pos += sum;
}

static void cursor_skip(struct state *st, int i, bool keep_last)
{
	struct model_cursor *m = &st->mc[i];
	uint64_t bytes = 0;

	if (!m->c.attached)
		return;
	uint32_t recs = fr_cursor_skip(&st->log, &m->c, keep_last, &bytes);

	if (m->pos + bytes > st->log_len)
		fuzz_fail("skip past the log's end");
	if (bytes == 0) {
		if (recs)
			fuzz_fail("skip of 0 bytes, %u records", recs);
		return;
	}
	if (st->line) {
		uint32_t want = 0;

		for (uint64_t k = 0; k < bytes; k++)
			want += st->log_bytes[m->pos + k] == '\n';
		if (!at_record_end(st, m->pos) || !at_record_end(st, m->pos + bytes) ||
		    recs != want)
			fuzz_fail("skip from %llu of %llu bytes, %u records (model %u)",
			          (unsigned long long)m->pos, (unsigned long long)bytes, recs,
			          want);
	}
	if (keep_last && m->pos + bytes == st->log_len)
		fuzz_fail("skip with keep_last skipped the newest record");
	m->pos += bytes;
}

/* --- the script ---------------------------------------------------------------- */

static void finish(struct state *st)
{
	for (int i = 0; i < N_INPUTS; i++)
		input_end(st, i);
	for (int i = 0; i < N_CURSORS; i++) {
		cursor_detach(st, i);
		cursor_done(st, i);
	}
	check_log(st);
	if (st->log.bufs != 0 || pool_in_use(&st->pool) != 0)
		fuzz_fail("after the end: log counts %u buffers, pool has %u out", st->log.bufs,
		          pool_in_use(&st->pool));
	if (st->log.head != st->log.tail)
		fuzz_fail("after the end: %llu slices left in the log",
		          (unsigned long long)(st->log.tail - st->log.head));
	fr_log_fini(&st->log);
	pool_fini(&st->pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reader r = {data, size};
	struct state *st = calloc(1, sizeof(*st));

	if (!st)
		return 0;
	st->line = next(&r) & 1;
	st->max_line = 1 + (uint64_t)next(&r);
	st->buf_size = 4 + next(&r) % 64;
	uint32_t slots = 1 + next(&r) % 64, nodes = next(&r) % 16;
	uint32_t bufs = 8 + next(&r) % 64;

	/* Every byte the log ever holds came from the input once, but for the
	 * last chunk, which may run past the end (zeros). */
	st->log_cap = size + 256;
	st->log_bytes = malloc(st->log_cap);
	for (int i = 0; i < N_INPUTS; i++) {
		fr_input_init(&st->in[i]);
		st->mi[i].partial = malloc(st->max_line);
	}
	if (!st->log_bytes || pool_init(&st->pool, bufs, st->buf_size) != 0 ||
	    fr_log_init(&st->log, st->line ? FRAMING_LINE : FRAMING_RAW, st->max_line, slots,
	                nodes) != 0)
		fuzz_fail("setup failed");
	for (int i = 0; i < N_INPUTS; i++)
		if (!st->mi[i].partial)
			fuzz_fail("out of memory");

	while (r.n > 0) {
		uint8_t op = next(&r);
		int who = (op >> 4) % 3;

		switch (op & 15) {
		case 1:
			input_feed(st, who, &r, true);
			break;
		case 3:
			input_reserve(st, who);
			break;
		case 4:
			fr_input_unreserve(&st->log, &st->in[who]);
			st->mi[who].reserved = false;
			break;
		case 5:
			input_end(st, who);
			break;
		case 6:
			cursor_attach(st, who);
			break;
		case 7:
			cursor_detach(st, who);
			break;
		case 8: {
			uint8_t a = next(&r), b = next(&r);

			cursor_take(st, who, a, b);
			break;
		}
		case 9:
			cursor_done(st, who);
			break;
		case 10:
			cursor_skip(st, who, op >> 6 & 1);
			break;
		default:
			input_feed(st, who, &r, false);
			break;
		}
		check_log(st);
	}
	finish(st);
	for (int i = 0; i < N_INPUTS; i++)
		free(st->mi[i].partial);
	free(st->log_bytes);
	free(st);
	return 0;
}
