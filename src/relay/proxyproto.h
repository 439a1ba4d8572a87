/* proxyproto.h - the PROXY protocol, versions 1 (text) and 2 (binary), as
 * HAProxy specifies it: parsing the header a client (a load balancer in
 * front of ferry) sends first, and building the header ferry sends first to
 * backends, mirrors and health checks.
 *
 * Pure functions over byte arrays: no I/O, no allocation, errno untouched.
 */
#ifndef FERRY_RELAY_PROXYPROTO_H
#define FERRY_RELAY_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header ferry accepts: v1 is at most 107 bytes; v2 is 16 bytes
 * plus a length field, of which ferry accepts up to this much (TLVs are
 * skipped).  A longer v2 header is an error. */
#define PP_MAX_HEADER 536

/* What a parsed header says. */
struct pp_info {
	int version; /* 1 or 2 */
	/* true: a proxied connection with the addresses below; false: LOCAL
	 * (v2) or UNKNOWN (v1), the connection's own addresses stand */
	int has_addr;
	struct sockaddr_storage src, dst;
	socklen_t src_len, dst_len;
};

enum pp_result {
	PP_NEED_MORE = 0, /* a prefix of a valid header: read more bytes */
	PP_ERR = -1,      /* not a PROXY header, or a malformed one */
};

/* Parses the start of a client's stream.  Returns the header length (> 0)
 * and fills *info when `buf[0..len)` begins with a complete, valid v1 or v2
 * header; PP_NEED_MORE when it is a valid prefix of one and shorter than
 * PP_MAX_HEADER; PP_ERR otherwise.  When err is not NULL, an error writes
 * a short reason (e.g. "bad v2 signature", "v1 line too long") to *err
 * (a static string). */
int pp_parse(const uint8_t *buf, size_t len, struct pp_info *info, const char **err);

/* Builds the header ferry sends first: for a connection from `src` to
 * `dst` (both AF_INET, or both AF_INET6; mixed families or NULL give the
 * v1 "PROXY UNKNOWN" / v2 LOCAL form).  version is 1 or 2.  Returns the
 * header length, or -1 if `cap` is too small (PP_MAX_HEADER always fits). */
int pp_build(int version, const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out,
             size_t cap);

/* The header health checks send: v1 "PROXY UNKNOWN\r\n", v2 LOCAL. */
int pp_build_local(int version, uint8_t *out, size_t cap);

#endif
