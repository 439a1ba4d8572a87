/* test_framer.c - fan-out's framer: the byte-level line scanner, and the
 * shared log with inputs and cursors (records across buffer boundaries,
 * several inputs, max_line, partial records at EOF, late joiners, drops,
 * reservations, references).  Buffers are tiny (64 bytes) so that records
 * cross buffer boundaries; every test's teardown checks that no buffer
 * is left out of the pool and that the log counted none.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf/pool.h"
#include "relay/framer.h"

#define BUF_SIZE  64
#define POOL_BUFS 512

struct fx {
	struct pool pool;
	struct fr_log log;
};

static int setup_pool(struct fx *x)
{
	return pool_init(&x->pool, POOL_BUFS, BUF_SIZE);
}

static int teardown(void **state)
{
	struct fx *x = *state;
	uint32_t counted = x->log.bufs;
	fr_log_fini(&x->log);
	uint32_t leaked = pool_in_use(&x->pool);
	pool_fini(&x->pool);
	free(x);
	assert_int_equal(counted, 0);
	assert_int_equal(leaked, 0);
	return 0;
}

static int setup_line(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	if (!x || setup_pool(x) != 0)
		return -1;
	if (fr_log_init(&x->log, FRAMING_LINE, 100, 256, 64) != 0)
		return -1;
	*state = x;
	return 0;
}

static int setup_raw(void **state)
{
	struct fx *x = calloc(1, sizeof(*x));
	if (!x || setup_pool(x) != 0)
		return -1;
	if (fr_log_init(&x->log, FRAMING_RAW, 100, 64, 1) != 0)
		return -1;
	*state = x;
	return 0;
}

/* Feeds `s` as one received chunk (at most one buffer). */
static int feed(struct fx *x, struct fr_input *in, const char *s, struct fr_feed *res)
{
	struct fr_feed local;
	size_t n = strlen(s);
	assert_true(n <= BUF_SIZE);
	struct buf *b = pool_get(&x->pool);
	assert_non_null(b);
	memcpy(b->data, s, n);
	b->len = (uint32_t)n;
	return fr_input_feed(&x->log, in, b, res ? res : &local);
}

/* Takes everything the cursor has, appending it to out (size cap). */
static size_t drain(struct fx *x, struct fr_cursor *c, char *out, size_t cap, bool whole)
{
	size_t len = strlen(out);
	for (;;) {
		struct iovec iov[4];
		struct buf *bufs[4];
		uint64_t bytes;
		int n = fr_cursor_take(&x->log, c, iov, bufs, 4, UINT64_MAX, whole, &bytes);
		if (n == 0)
			break;
		uint64_t sum = 0;
		for (int i = 0; i < n; i++) {
			assert_true(len + iov[i].iov_len < cap);
			memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
			len += iov[i].iov_len;
			sum += iov[i].iov_len;
			fr_put(&x->log, bufs[i]);
		}
		assert_int_equal(sum, bytes);
	}
	out[len] = '\0';
	return len;
}

/* --- framer_scan ------------------------------------------------------------ */

static void test_scan_basics(void **state)
{
	(void)state;
	struct framer_scan sc;
	assert_int_equal(framer_scan(10, 0, (const uint8_t *)"abc", 3, &sc), 0);
	assert_int_equal(sc.complete, 0);
	assert_int_equal(sc.records, 0);
	assert_int_equal(sc.partial, 3);

	assert_int_equal(framer_scan(10, 0, (const uint8_t *)"a\nbb\ncc", 7, &sc), 0);
	assert_int_equal(sc.complete, 5);
	assert_int_equal(sc.records, 2);
	assert_int_equal(sc.partial, 2);

	/* the partial record before the chunk counts toward the first record */
	assert_int_equal(framer_scan(10, 7, (const uint8_t *)"xx\n", 3, &sc), 0);
	assert_int_equal(sc.complete, 3);
	assert_int_equal(sc.records, 1);
	assert_int_equal(sc.partial, 0);

	/* empty records are records */
	assert_int_equal(framer_scan(10, 0, (const uint8_t *)"\n\n\n", 3, &sc), 0);
	assert_int_equal(sc.records, 3);
	assert_int_equal(sc.complete, 3);
	assert_int_equal(framer_scan(10, 0, (const uint8_t *)"", 0, &sc), 0);
	assert_int_equal(sc.complete, 0);
}

static void test_scan_max_line(void **state)
{
	(void)state;
	struct framer_scan sc;
	/* exactly max_line, counting the \n: fine */
	assert_int_equal(framer_scan(4, 0, (const uint8_t *)"abc\n", 4, &sc), 0);
	assert_int_equal(sc.records, 1);
	/* one more: refused, the good records before it are reported */
	assert_int_equal(framer_scan(4, 0, (const uint8_t *)"ab\nabcd\nz\n", 10, &sc), -EMSGSIZE);
	assert_int_equal(sc.complete, 3);
	assert_int_equal(sc.records, 1);
	/* across chunks */
	assert_int_equal(framer_scan(4, 3, (const uint8_t *)"a\n", 2, &sc), -EMSGSIZE);
	assert_int_equal(sc.complete, 0);
	/* an open record that already is max_line long can never end in time */
	assert_int_equal(framer_scan(4, 0, (const uint8_t *)"abc", 3, &sc), 0);
	assert_int_equal(framer_scan(4, 0, (const uint8_t *)"abcd", 4, &sc), -EMSGSIZE);
	assert_int_equal(framer_scan(4, 2, (const uint8_t *)"ab", 2, &sc), -EMSGSIZE);
	/* max_line 1: only empty records */
	assert_int_equal(framer_scan(1, 0, (const uint8_t *)"\n\n", 2, &sc), 0);
	assert_int_equal(framer_scan(1, 0, (const uint8_t *)"\nx", 2, &sc), -EMSGSIZE);
	assert_int_equal(sc.records, 1);
}

/* Random chunkings of the same stream give the same records. */
static void test_scan_chunking(void **state)
{
	(void)state;
	char stream[4096];
	size_t n = 0;
	unsigned seed = 12345;
	uint32_t want = 0;
	while (n < sizeof(stream) - 40) {
		seed = seed * 1103515245 + 12345;
		int len = (int)((seed >> 16) % 30);
		memset(stream + n, 'a' + (int)(seed % 26), (size_t)len);
		n += (size_t)len;
		stream[n++] = '\n';
		want++;
	}
	for (int round = 0; round < 50; round++) {
		uint64_t partial = 0;
		uint32_t got = 0;
		size_t pos = 0, done = 0;
		while (pos < n) {
			seed = seed * 1103515245 + 12345;
			size_t k = 1 + (seed >> 16) % 97;
			if (k > n - pos)
				k = n - pos;
			struct framer_scan sc;
			assert_int_equal(
			    framer_scan(64, partial, (const uint8_t *)stream + pos, k, &sc), 0);
			if (sc.complete) {
				assert_int_equal(stream[pos + sc.complete - 1], '\n');
				done = pos + sc.complete;
			}
			got += sc.records;
			partial = sc.partial;
			pos += k;
		}
		assert_int_equal(got, want);
		assert_int_equal(done, n);
		assert_int_equal(partial, 0);
	}
}

/* --- raw log ---------------------------------------------------------------- */

static void test_raw_two_outputs(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a, b;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &a);
	fr_cursor_attach(&x->log, &b);
	struct fr_feed res;
	assert_int_equal(feed(x, &in, "hello ", &res), 0);
	assert_int_equal(res.appended, 6);
	assert_int_equal(feed(x, &in, "world", NULL), 0);
	char oa[256] = "", ob[256] = "";
	drain(x, &a, oa, sizeof(oa), false);
	assert_string_equal(oa, "hello world");
	assert_int_equal(feed(x, &in, "!", NULL), 0);
	drain(x, &a, oa, sizeof(oa), false);
	drain(x, &b, ob, sizeof(ob), false);
	assert_string_equal(oa, "hello world!");
	assert_string_equal(ob, "hello world!");
	assert_int_equal(fr_max_queued(&x->log), 0);
	assert_int_equal(x->log.head, x->log.tail);
	fr_cursor_detach(&x->log, &a);
	fr_cursor_detach(&x->log, &b);
	fr_input_end(&x->log, &in);
}

/* Nothing is kept when no output is attached; a cursor attached later sees
 * only what comes after. */
static void test_raw_no_reader(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a;
	fr_input_init(&in);
	struct fr_feed res;
	assert_int_equal(feed(x, &in, "lost", &res), 0);
	assert_int_equal(res.appended, 0);
	assert_int_equal(res.released, 4);
	assert_int_equal(x->log.tail, 0);
	fr_cursor_attach(&x->log, &a);
	assert_int_equal(feed(x, &in, "kept", NULL), 0);
	char out[64] = "";
	drain(x, &a, out, sizeof(out), false);
	assert_string_equal(out, "kept");
	fr_cursor_detach(&x->log, &a);
	fr_input_end(&x->log, &in);
}

/* Small reads are copied into the previous buffer's room: a trickle of
 * one-byte reads holds one buffer, not one per read, and contiguous slices
 * merge while nobody took the tail. */
static void test_raw_coalesce(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &a);
	for (int i = 0; i < 40; i++)
		assert_int_equal(feed(x, &in, "x", NULL), 0);
	assert_int_equal(pool_in_use(&x->pool), 1);
	assert_int_equal(x->log.bufs, 1);
	assert_int_equal(x->log.tail - x->log.head, 1); /* one merged slice */
	char out[128] = "";
	assert_int_equal(drain(x, &a, out, sizeof(out), false), 40);
	/* after a take the tail is closed: the next read is a new slice */
	assert_int_equal(feed(x, &in, "y", NULL), 0);
	assert_int_equal(x->log.tail - x->log.head, 1);
	assert_int_equal(x->log.tail, 2);
	assert_int_equal(drain(x, &a, out, sizeof(out), false), 41);
	/* a full-size read is not copied */
	char big[BUF_SIZE + 1];
	memset(big, 'z', BUF_SIZE);
	big[BUF_SIZE] = '\0';
	assert_int_equal(feed(x, &in, big, NULL), 0);
	assert_int_equal(pool_in_use(&x->pool), 1); /* the old fill went back */
	const struct fr_slice *t = &x->log.ring[(x->log.tail - 1) & x->log.mask];
	assert_int_equal(t->off, 0);
	assert_int_equal(t->len, BUF_SIZE);
	assert_null(in.fill); /* full: no room for small reads */
	fr_cursor_detach(&x->log, &a);
	fr_input_end(&x->log, &in);
}

/* A buffer goes back to the pool when its last reader has sent it. */
static void test_raw_refs(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a, b;
	char big[BUF_SIZE + 1];
	memset(big, 'q', BUF_SIZE);
	big[BUF_SIZE] = '\0';
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &a);
	fr_cursor_attach(&x->log, &b);
	assert_int_equal(feed(x, &in, big, NULL), 0);
	fr_input_end(&x->log, &in); /* drop the fill reference */
	assert_int_equal(pool_in_use(&x->pool), 1);
	struct iovec iov[4];
	struct buf *bufs[4];
	uint64_t bytes;
	assert_int_equal(fr_cursor_take(&x->log, &a, iov, bufs, 4, UINT64_MAX, false, &bytes), 1);
	assert_int_equal(bytes, BUF_SIZE);
	assert_int_equal(fr_cursor_left(&x->log, &a), 0);
	assert_int_equal(fr_cursor_left(&x->log, &b), BUF_SIZE);
	fr_put(&x->log, bufs[0]); /* a's send is over; b still needs it */
	assert_int_equal(pool_in_use(&x->pool), 1);
	assert_int_equal(fr_cursor_take(&x->log, &b, iov, bufs, 4, UINT64_MAX, false, &bytes), 1);
	assert_int_equal(pool_in_use(&x->pool), 1); /* b's send holds it */
	fr_put(&x->log, bufs[0]);
	assert_int_equal(pool_in_use(&x->pool), 0);
	fr_cursor_detach(&x->log, &a);
	fr_cursor_detach(&x->log, &b);
}

/* Detaching gives back what the cursor had not taken. */
static void test_raw_detach(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a;
	char big[BUF_SIZE + 1];
	memset(big, 'd', BUF_SIZE);
	big[BUF_SIZE] = '\0';
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &a);
	for (int i = 0; i < 5; i++)
		assert_int_equal(feed(x, &in, big, NULL), 0);
	fr_input_end(&x->log, &in);
	assert_int_equal(pool_in_use(&x->pool), 5);
	assert_int_equal(fr_max_queued(&x->log), 5 * BUF_SIZE);
	fr_cursor_detach(&x->log, &a);
	assert_int_equal(pool_in_use(&x->pool), 0);
	assert_int_equal(x->log.head, x->log.tail);
}

/* Reservations: a receive is asked for only when its slots are set aside. */
static void test_raw_reserve(void **state)
{
	struct fx *x = *state;
	struct fr_input in[2];
	struct fr_cursor a;
	char big[BUF_SIZE + 1];
	memset(big, 'r', BUF_SIZE);
	big[BUF_SIZE] = '\0';
	fr_input_init(&in[0]);
	fr_input_init(&in[1]);
	fr_cursor_attach(&x->log, &a);
	uint32_t cap = x->log.cap;
	for (uint32_t i = 0; i < cap - 1; i++) {
		assert_int_equal(fr_input_reserve(&x->log, &in[0]), 0);
		assert_int_equal(feed(x, &in[0], big, NULL), 0);
	}
	assert_int_equal(fr_room(&x->log), 1);
	assert_int_equal(fr_input_reserve(&x->log, &in[0]), 0);
	assert_int_equal(fr_input_reserve(&x->log, &in[1]), -ENOSPC);
	assert_int_equal(fr_room(&x->log), 0);
	/* re-reserving keeps one reservation, not two */
	assert_int_equal(fr_input_reserve(&x->log, &in[0]), 0);
	assert_int_equal(x->log.reserved, 1);
	/* a feed without a reservation into a full log is refused */
	assert_int_equal(feed(x, &in[1], "no", NULL), -ENOSPC);
	assert_int_equal(feed(x, &in[0], big, NULL), 0);
	assert_int_equal(fr_room(&x->log), 0);
	char out[BUF_SIZE * 80] = "";
	struct iovec iov[4];
	struct buf *bufs[4];
	uint64_t bytes;
	assert_int_equal(fr_cursor_take(&x->log, &a, iov, bufs, 4, UINT64_MAX, false, &bytes), 4);
	for (int i = 0; i < 4; i++)
		fr_put(&x->log, bufs[i]);
	assert_int_equal(fr_room(&x->log), 4);
	assert_int_equal(fr_input_reserve(&x->log, &in[1]), 0);
	fr_input_unreserve(&x->log, &in[1]);
	assert_int_equal(x->log.reserved, 0);
	drain(x, &a, out, sizeof(out), false);
	fr_cursor_detach(&x->log, &a);
	fr_input_end(&x->log, &in[0]);
	fr_input_end(&x->log, &in[1]);
}

/* --- line log --------------------------------------------------------------- */

/* A record spread over several buffers is delivered whole, once its \n has
 * arrived, and nothing of it before. */
static void test_line_across_buffers(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor a;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &a);
	char part[BUF_SIZE + 1];
	memset(part, 'p', BUF_SIZE);
	part[BUF_SIZE] = '\0';
	part[0] = 'A';
	assert_int_equal(feed(x, &in, "r1\nstart-", NULL), 0);
	char out[512] = "";
	drain(x, &a, out, sizeof(out), true);
	assert_string_equal(out, "r1\n");
	/* 9 bytes pending, then 64: still under max_line 100 */
	assert_int_equal(feed(x, &in, part, NULL), 0);
	drain(x, &a, out, sizeof(out), true);
	assert_string_equal(out, "r1\n");
	assert_int_equal(in.partial, 6 + BUF_SIZE);
	struct fr_feed res;
	assert_int_equal(feed(x, &in, "end\nr3\n", &res), 0);
	assert_int_equal(res.records, 2);
	assert_int_equal(res.appended, 6 + BUF_SIZE + 7);
	drain(x, &a, out, sizeof(out), true);
	char want[512];
	snprintf(want, sizeof(want), "r1\nstart-%send\nr3\n", part);
	assert_string_equal(out, want);
	assert_int_equal(x->log.records, 3);
	assert_true(a.at_boundary);
	fr_cursor_detach(&x->log, &a);
	fr_input_end(&x->log, &in);
}

/* Records of several inputs interleave only between records, and each
 * input's records keep their order. */
static void test_line_several_inputs(void **state)
{
	struct fx *x = *state;
	struct fr_input a, b, c;
	struct fr_cursor o;
	fr_input_init(&a);
	fr_input_init(&b);
	fr_input_init(&c);
	fr_cursor_attach(&x->log, &o);
	assert_int_equal(feed(x, &a, "a1-part", NULL), 0);
	assert_int_equal(feed(x, &b, "b1\nb2-", NULL), 0);
	assert_int_equal(feed(x, &c, "c1\n", NULL), 0);
	assert_int_equal(feed(x, &a, "rest\na2", NULL), 0);
	assert_int_equal(feed(x, &b, "rest\n", NULL), 0);
	assert_int_equal(feed(x, &a, "\n", NULL), 0);
	char out[256] = "";
	drain(x, &o, out, sizeof(out), true);
	assert_string_equal(out, "b1\nc1\na1-partrest\nb2-rest\na2\n");
	fr_cursor_detach(&x->log, &o);
	fr_input_end(&x->log, &a);
	fr_input_end(&x->log, &b);
	fr_input_end(&x->log, &c);
}

/* Many inputs, random chunk sizes and interleavings: the output is made of
 * whole records, each input's in order, all of them. */
static void test_line_random_mix(void **state)
{
	struct fx *x = *state;
	enum { NIN = 4, PER = 60 };
	struct fr_input in[NIN];
	char streams[NIN][PER * 24];
	size_t len[NIN], pos[NIN];
	struct fr_cursor o;
	unsigned seed = 99;
	for (int i = 0; i < NIN; i++) {
		fr_input_init(&in[i]);
		len[i] = pos[i] = 0;
		for (int r = 0; r < PER; r++) {
			seed = seed * 1103515245 + 12345;
			len[i] += (size_t)sprintf(streams[i] + len[i], "i%d-r%02d-%.*s\n", i, r,
			                          (int)((seed >> 16) % 12), "xxxxxxxxxxxxxxxx");
		}
	}
	fr_cursor_attach(&x->log, &o);
	static char out[NIN * PER * 24 + 1];
	out[0] = '\0';
	for (;;) {
		int live = 0;
		for (int i = 0; i < NIN; i++)
			live += pos[i] < len[i];
		if (!live)
			break;
		seed = seed * 1103515245 + 12345;
		int i = (int)((seed >> 16) % NIN);
		if (pos[i] == len[i])
			continue;
		size_t k = 1 + (seed >> 8) % BUF_SIZE;
		if (k > len[i] - pos[i])
			k = len[i] - pos[i];
		char chunk[BUF_SIZE + 1];
		memcpy(chunk, streams[i] + pos[i], k);
		chunk[k] = '\0';
		assert_int_equal(fr_input_reserve(&x->log, &in[i]), 0);
		assert_int_equal(feed(x, &in[i], chunk, NULL), 0);
		pos[i] += k;
		if ((seed >> 4) % 3 == 0)
			drain(x, &o, out, sizeof(out), true);
	}
	drain(x, &o, out, sizeof(out), true);
	/* split into records and check order per input */
	int next[NIN] = {0};
	int total = 0;
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		int i, r;
		assert_int_equal(sscanf(line, "i%d-r%d-", &i, &r), 2);
		assert_true(i >= 0 && i < NIN);
		assert_int_equal(r, next[i]);
		next[i]++;
		total++;
	}
	assert_int_equal(total, NIN * PER);
	fr_cursor_detach(&x->log, &o);
	for (int i = 0; i < NIN; i++)
		fr_input_end(&x->log, &in[i]);
}

/* A record over max_line: refused, good records before it kept, the partial
 * record thrown away with everything it held. */
static void test_line_max_line(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor o;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &o);
	char part[BUF_SIZE + 1];
	memset(part, 'L', BUF_SIZE);
	part[BUF_SIZE] = '\0';
	assert_int_equal(feed(x, &in, "ok\nlong-", NULL), 0);
	assert_int_equal(feed(x, &in, part, NULL), 0); /* 5 + 64 = 69 < 100 */
	struct fr_feed res;
	/* 69 + 31 = 100 bytes without a \n: can never end within 100 */
	assert_int_equal(feed(x, &in, "0123456789012345678901234567890", &res), -EMSGSIZE);
	assert_int_equal(res.appended, 0);
	assert_int_equal(res.discarded, 100);
	assert_int_equal(in.count, 0);
	char out[256] = "";
	drain(x, &o, out, sizeof(out), true);
	assert_string_equal(out, "ok\n");
	fr_cursor_detach(&x->log, &o);
	fr_input_end(&x->log, &in);

	/* a record that ends but is one byte too long, with a good one first */
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &o);
	char rec[BUF_SIZE + 1];
	assert_int_equal(feed(x, &in, "g\n", NULL), 0);
	memset(rec, 'M', 50);
	rec[50] = '\0';
	assert_int_equal(feed(x, &in, rec, NULL), 0);
	memset(rec, 'N', 50);
	rec[50] = '\n';
	rec[51] = '\0';
	assert_int_equal(feed(x, &in, rec, &res), -EMSGSIZE); /* 101 with its \n */
	out[0] = '\0';
	drain(x, &o, out, sizeof(out), true);
	assert_string_equal(out, "g\n");
	fr_cursor_detach(&x->log, &o);
	fr_input_end(&x->log, &in);
}

/* An input that ends inside a record: the partial record is discarded. */
static void test_line_partial_at_eof(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor o;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &o);
	assert_int_equal(feed(x, &in, "done\nhalf", NULL), 0);
	assert_int_equal(feed(x, &in, "-more", NULL), 0);
	assert_int_equal(fr_input_end(&x->log, &in), 9);
	char out[64] = "";
	drain(x, &o, out, sizeof(out), true);
	assert_string_equal(out, "done\n");
	fr_cursor_detach(&x->log, &o);
	assert_int_equal(pool_in_use(&x->pool), 0);
}

/* A late joiner starts at a record boundary: it never sees the end of a
 * record whose start it missed, and a record still partial when it joined
 * reaches it whole. */
static void test_line_late_joiner(void **state)
{
	struct fx *x = *state;
	struct fr_input a, b;
	struct fr_cursor early, late, later;
	fr_input_init(&a);
	fr_input_init(&b);
	fr_cursor_attach(&x->log, &early);
	assert_int_equal(feed(x, &a, "one\ntw", NULL), 0);
	fr_cursor_attach(&x->log, &late);
	assert_int_equal(feed(x, &b, "B1\n", NULL), 0);
	assert_int_equal(feed(x, &a, "o\nthree\n", NULL), 0);
	fr_cursor_attach(&x->log, &later);
	assert_int_equal(feed(x, &a, "four\n", NULL), 0);
	char o1[128] = "", o2[128] = "", o3[128] = "";
	drain(x, &early, o1, sizeof(o1), true);
	drain(x, &late, o2, sizeof(o2), true);
	drain(x, &later, o3, sizeof(o3), true);
	assert_string_equal(o1, "one\nB1\ntwo\nthree\nfour\n");
	assert_string_equal(o2, "B1\ntwo\nthree\nfour\n");
	assert_string_equal(o3, "four\n");
	fr_cursor_detach(&x->log, &early);
	fr_cursor_detach(&x->log, &late);
	fr_cursor_detach(&x->log, &later);
	fr_input_end(&x->log, &a);
	fr_input_end(&x->log, &b);
}

/* Dropping skips whole records; a take with whole_records ends on a record
 * boundary, so the cursor can drop right after a send. */
static void test_line_drop(void **state)
{
	struct fx *x = *state;
	struct fr_input a, b;
	struct fr_cursor fast, slow;
	fr_input_init(&a);
	fr_input_init(&b);
	fr_cursor_attach(&x->log, &fast);
	fr_cursor_attach(&x->log, &slow);
	assert_int_equal(feed(x, &a, "a1\na2\n", NULL), 0); /* one slice, two records */
	assert_int_equal(feed(x, &b, "b1\n", NULL), 0);
	assert_int_equal(feed(x, &a, "a3\n", NULL), 0);
	uint64_t bytes;
	assert_int_equal(fr_cursor_skip(&x->log, &slow, false, &bytes), 2);
	assert_int_equal(bytes, 6);
	assert_int_equal(fr_cursor_skip(&x->log, &slow, false, &bytes), 1);
	assert_int_equal(bytes, 3);
	char o1[64] = "", o2[64] = "";
	drain(x, &slow, o2, sizeof(o2), true);
	assert_string_equal(o2, "a3\n");
	assert_int_equal(fr_cursor_skip(&x->log, &slow, false, &bytes), 0); /* nothing left */
	drain(x, &fast, o1, sizeof(o1), true);
	assert_string_equal(o1, "a1\na2\nb1\na3\n");

	/* a take stops after the last record end among the slices */
	char part[BUF_SIZE + 1];
	memset(part, 'w', BUF_SIZE);
	part[BUF_SIZE] = '\0';
	part[BUF_SIZE - 1] = '\n';
	assert_int_equal(feed(x, &b, "x\n", NULL), 0);
	assert_int_equal(feed(x, &a, part, NULL), 0);
	struct iovec iov[4];
	struct buf *bufs[4];
	memset(part, 'v', BUF_SIZE);
	assert_int_equal(feed(x, &b, "long-", NULL), 0);
	assert_int_equal(feed(x, &b, part, NULL), 0);
	assert_int_equal(feed(x, &b, "\n", NULL), 0);
	/* slow: [x\n][w...\n][long-][v...][\n]: 5 slices; take 4 -> stops at 2 */
	int n = fr_cursor_take(&x->log, &slow, iov, bufs, 4, UINT64_MAX, true, &bytes);
	assert_int_equal(n, 2);
	assert_true(slow.at_boundary);
	for (int i = 0; i < n; i++)
		fr_put(&x->log, bufs[i]);
	assert_int_equal(fr_cursor_skip(&x->log, &slow, false, &bytes), 1);
	assert_int_equal(bytes, 5 + BUF_SIZE + 1);
	/* without whole_records it may stop inside a record, and then cannot
	 * skip until the record is finished */
	memset(part, 'u', BUF_SIZE);
	assert_int_equal(feed(x, &b, "u-", NULL), 0);
	assert_int_equal(feed(x, &b, part, NULL), 0);
	assert_int_equal(feed(x, &b, "\nnext\n", NULL), 0);
	n = fr_cursor_take(&x->log, &slow, iov, bufs, 1, UINT64_MAX, false, &bytes);
	assert_int_equal(n, 1);
	assert_false(slow.at_boundary);
	fr_put(&x->log, bufs[0]);
	assert_int_equal(fr_cursor_skip(&x->log, &slow, false, &bytes), 0);
	fr_cursor_detach(&x->log, &fast);
	fr_cursor_detach(&x->log, &slow);
	fr_input_end(&x->log, &a);
	fr_input_end(&x->log, &b);
}

/* A take stops at max_bytes (one slice at least); keep_last never skips the
 * newest record group. */
static void test_line_limits(void **state)
{
	struct fx *x = *state;
	struct fr_input a, b;
	struct fr_cursor o;
	fr_input_init(&a);
	fr_input_init(&b);
	fr_cursor_attach(&x->log, &o);
	assert_int_equal(feed(x, &a, "aa\n", NULL), 0);
	assert_int_equal(feed(x, &b, "bbbb\n", NULL), 0);
	assert_int_equal(feed(x, &a, "c\n", NULL), 0);
	assert_int_equal(feed(x, &b, "dd\n", NULL), 0);
	struct iovec iov[4];
	struct buf *bufs[4];
	uint64_t bytes;
	assert_int_equal(fr_cursor_take(&x->log, &o, iov, bufs, 4, 4, true, &bytes), 1);
	assert_int_equal(bytes, 3);
	fr_put(&x->log, bufs[0]);
	assert_int_equal(fr_cursor_take(&x->log, &o, iov, bufs, 4, 1, true, &bytes), 1);
	assert_int_equal(bytes, 5); /* one slice even when larger than max_bytes */
	fr_put(&x->log, bufs[0]);
	assert_int_equal(fr_cursor_skip(&x->log, &o, true, &bytes), 1);
	assert_int_equal(bytes, 2);
	assert_int_equal(fr_cursor_skip(&x->log, &o, true, &bytes), 0); /* the newest stays */
	assert_int_equal(fr_cursor_left(&x->log, &o), 3);
	assert_int_equal(fr_cursor_skip(&x->log, &o, false, &bytes), 1);
	assert_int_equal(fr_cursor_left(&x->log, &o), 0);
	fr_cursor_detach(&x->log, &o);
	fr_input_end(&x->log, &a);
	fr_input_end(&x->log, &b);
}

/* Line reservations count the partial record's slices and a chain node. */
static void test_line_reserve(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor o;
	fr_input_init(&in);
	fr_cursor_attach(&x->log, &o);
	char part[BUF_SIZE + 1];
	memset(part, 'c', BUF_SIZE);
	part[BUF_SIZE] = '\0';
	assert_int_equal(fr_input_reserve(&x->log, &in), 0);
	assert_int_equal(in.resv_slots, 1);
	assert_int_equal(x->log.nodes_reserved, 1);
	assert_int_equal(feed(x, &in, "ab", NULL), 0);
	assert_int_equal(x->log.reserved, 0);
	assert_int_equal(x->log.nodes_reserved, 0);
	assert_int_equal(feed(x, &in, part, NULL), 0);
	assert_int_equal(in.count, 2);
	assert_int_equal(fr_input_reserve(&x->log, &in), 0);
	assert_int_equal(in.resv_slots, 3);
	/* every chain node taken: -ENOMEM */
	uint32_t saved = x->log.nfree;
	x->log.nfree = x->log.nodes_reserved;
	struct fr_input other;
	fr_input_init(&other);
	assert_int_equal(fr_input_reserve(&x->log, &other), -ENOMEM);
	x->log.nfree = saved;
	fr_input_end(&x->log, &other);
	assert_int_equal(fr_input_end(&x->log, &in), 2 + BUF_SIZE);
	assert_int_equal(x->log.reserved, 0);
	assert_int_equal(x->log.nodes_reserved, 0);
	assert_int_equal(x->log.nfree, x->log.n_nodes);
	fr_cursor_detach(&x->log, &o);
}

/* With no output, complete records are released at once and partial ones
 * still wait for their end. */
static void test_line_no_reader(void **state)
{
	struct fx *x = *state;
	struct fr_input in;
	struct fr_cursor o;
	fr_input_init(&in);
	struct fr_feed res;
	assert_int_equal(feed(x, &in, "gone\nhel", &res), 0);
	assert_int_equal(res.released, 5);
	assert_int_equal(res.records, 1);
	fr_cursor_attach(&x->log, &o);
	assert_int_equal(feed(x, &in, "lo\n", &res), 0);
	char out[64] = "";
	drain(x, &o, out, sizeof(out), true);
	assert_string_equal(out, "hello\n");
	fr_cursor_detach(&x->log, &o);
	fr_input_end(&x->log, &in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scan_basics),
	    cmocka_unit_test(test_scan_max_line),
	    cmocka_unit_test(test_scan_chunking),
	    cmocka_unit_test_setup_teardown(test_raw_two_outputs, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_no_reader, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_coalesce, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_refs, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_detach, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_raw_reserve, setup_raw, teardown),
	    cmocka_unit_test_setup_teardown(test_line_across_buffers, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_several_inputs, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_random_mix, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_max_line, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_partial_at_eof, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_late_joiner, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_drop, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_limits, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_reserve, setup_line, teardown),
	    cmocka_unit_test_setup_teardown(test_line_no_reader, setup_line, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
