/* fuzz_proxyproto.c - the PROXY header parser (src/relay/proxyproto.c).
 *
 * Input: the first bytes a client sends, as is.
 *
 * Properties checked besides memory safety (ASan) and UB (UBSan):
 *   - the result is PP_ERR with a reason, PP_NEED_MORE only below
 *     PP_MAX_HEADER bytes, or a length within the input and PP_MAX_HEADER;
 *   - a header is self-delimiting: parsing exactly its bytes gives the same
 *     length and the same pp_info;
 *   - every strict prefix of a header, or of a valid prefix, is PP_NEED_MORE
 *     (the parser never refuses bytes it would later accept);
 *   - a parsed header says what it should: version 1 iff it starts with 'P',
 *     addresses of one family with the right lengths;
 *   - round trip: pp_build() of the parsed addresses, in both versions, parses
 *     back to the same addresses (an IPv4-mapped IPv6 address becomes IPv4,
 *     and a pair that then differs in family becomes UNKNOWN / LOCAL, as
 *     pp_build() documents); a "PROXY TCP4" line and a v2 header without TLVs
 *     are rebuilt byte for byte; pp_build() into a buffer one byte short
 *     fails; LOCAL / UNKNOWN headers round-trip through pp_build_local().
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

#include "relay/proxyproto.h"
#include "fuzz.h"

/* An address as a header carries it, IPv4-mapped IPv6 folded into IPv4. */
struct norm {
	int family;
	uint8_t addr[16];
	uint16_t port;
};

static struct norm normalize(const struct sockaddr_storage *ss)
{
	struct norm n;

	memset(&n, 0, sizeof(n));
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		n.family = AF_INET;
		memcpy(n.addr, &sin->sin_addr, 4);
		n.port = sin->sin_port;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		n.port = sin6->sin6_port;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			n.family = AF_INET;
			memcpy(n.addr, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			n.family = AF_INET6;
			memcpy(n.addr, &sin6->sin6_addr, 16);
		}
	} else {
		fuzz_fail("address of family %d", ss->ss_family);
	}
	return n;
}

static bool norm_equal(const struct norm *a, const struct norm *b)
{
	return a->family == b->family && a->port == b->port &&
	       memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

static void check_info(const uint8_t *data, const struct pp_info *info)
{
	if (info->version != 1 && info->version != 2)
		fuzz_fail("version %d", info->version);
	if ((info->version == 1) != (data[0] == 'P'))
		fuzz_fail("version %d for a header starting with 0x%02x", info->version, data[0]);
	if (!info->has_addr)
		return;
	int fam = info->src.ss_family;

	if (fam != AF_INET && fam != AF_INET6)
		fuzz_fail("source family %d", fam);
	if (info->dst.ss_family != fam)
		fuzz_fail("source family %d, destination family %d", fam, info->dst.ss_family);
	socklen_t want = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

	if (info->src_len != want || info->dst_len != want)
		fuzz_fail("address lengths %u/%u, want %u", (unsigned)info->src_len,
		          (unsigned)info->dst_len, (unsigned)want);
}

/* Builds (version, info's addresses), parses it back and compares. */
static void round_trip(int version, const struct pp_info *info)
{
	uint8_t out[PP_MAX_HEADER];
	struct pp_info back;
	const char *err = NULL;
	int n;

	if (info->has_addr)
		n = pp_build(version, (const struct sockaddr *)&info->src,
		             (const struct sockaddr *)&info->dst, out, sizeof(out));
	else
		n = pp_build_local(version, out, sizeof(out));
	if (n <= 0)
		fuzz_fail("pp_build v%d gave %d", version, n);
	int r = pp_parse(out, (size_t)n, &back, &err);

	if (r != n)
		fuzz_fail("built v%d header of %d bytes parses as %d (%s)", version, n, r,
		          r == PP_ERR && err ? err : "-");
	if (back.version != version)
		fuzz_fail("built v%d header parses as v%d", version, back.version);

	/* One byte short of the room it needs: refused. */
	int short_n = info->has_addr
	                  ? pp_build(version, (const struct sockaddr *)&info->src,
	                             (const struct sockaddr *)&info->dst, out, (size_t)n - 1)
	                  : pp_build_local(version, out, (size_t)n - 1);
	if (short_n != -1)
		fuzz_fail("pp_build v%d into %d bytes gave %d", version, n - 1, short_n);

	if (!info->has_addr) {
		if (back.has_addr)
			fuzz_fail("LOCAL/UNKNOWN v%d parses back with addresses", version);
		return;
	}
	struct norm s = normalize(&info->src), d = normalize(&info->dst);

	if (s.family != d.family) {
		if (back.has_addr)
			fuzz_fail("mixed families built as v%d with addresses", version);
		return;
	}
	if (!back.has_addr)
		fuzz_fail("addresses lost in a v%d round trip", version);
	struct norm bs = normalize(&back.src), bd = normalize(&back.dst);

	if (!norm_equal(&s, &bs) || !norm_equal(&d, &bd))
		fuzz_fail("addresses changed in a v%d round trip", version);
}

/* A header that pp_build() writes in one canonical form is rebuilt exactly. */
static void rebuild_exact(const uint8_t *data, int r, const struct pp_info *info)
{
	uint8_t out[PP_MAX_HEADER];

	if (!info->has_addr)
		return;
	if (info->version == 1 && memcmp(data, "PROXY TCP4 ", 11) != 0)
		return; /* TCP6 text has several spellings */
	if (info->version == 2) {
		/* Only PROXY over STREAM with an address block of its exact size
		 * (no TLVs) and no IPv4-mapped address has one form. */
		size_t need = info->src.ss_family == AF_INET ? 12 : 36;
		struct norm s = normalize(&info->src), d = normalize(&info->dst);

		if ((size_t)r != 16 + need || data[12] != 0x21 || s.family != info->src.ss_family ||
		    d.family != info->dst.ss_family)
			return;
	}
	int n = pp_build(info->version, (const struct sockaddr *)&info->src,
	                 (const struct sockaddr *)&info->dst, out, sizeof(out));
	if (n != r || memcmp(out, data, (size_t)r) != 0)
		fuzz_fail("v%d header of %d bytes rebuilt as %d different bytes", info->version, r,
		          n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pp_info info, again;
	const char *err = NULL;

	memset(&info, 0, sizeof(info));
	int r = pp_parse(data, size, &info, &err);

	if (r == PP_ERR) {
		if (!err || !*err)
			fuzz_fail("PP_ERR without a reason");
		return 0;
	}
	if (r == PP_NEED_MORE) {
		if (size >= PP_MAX_HEADER)
			fuzz_fail("PP_NEED_MORE with %zu bytes", size);
	} else if (r < 0 || (size_t)r > size || r > PP_MAX_HEADER) {
		fuzz_fail("pp_parse returned %d for %zu bytes", r, size);
	}

	/* Every strict prefix of a header or of a valid prefix is a valid
	 * prefix (the empty one included). */
	size_t upto = r > 0 ? (size_t)r : size;

	for (size_t k = 0; k < upto; k++) {
		int p = pp_parse(data, k, NULL, NULL);

		if (p != PP_NEED_MORE)
			fuzz_fail("prefix of %zu bytes gives %d, the %zu bytes give %d", k, p, size,
			          r);
	}
	if (r == PP_NEED_MORE)
		return 0;

	check_info(data, &info);
	memset(&again, 0, sizeof(again));
	if (pp_parse(data, (size_t)r, &again, NULL) != r)
		fuzz_fail("the header's own %d bytes do not parse alone", r);
	if (memcmp(&again, &info, sizeof(info)) != 0)
		fuzz_fail("the header's own %d bytes parse differently", r);

	round_trip(1, &info);
	round_trip(2, &info);
	rebuild_exact(data, r, &info);
	return 0;
}
