/* fuzz_admin.c - the admin endpoint's router (src/admin/admin.c):
 * admin_route() on any method and request target.
 *
 * Input: one request line "METHOD SP TARGET" without a line end (the format
 * of the seeds, see admin.h): the bytes before the first space are the
 * method, the rest the target as received (not percent-decoded).  Without a
 * space the whole input is the method and the target is NULL.  A NUL byte
 * ends a string early, as it would in the HTTP layer.
 *
 * The generation routed against is built once, from the YAML below, like
 * tests/unit/test_admin.c builds its own: two proxy services (one with IPv4
 * and IPv6 backends, a backend and a mirror given by host names that
 * "resolved" to two addresses each, so that the backend stands for two
 * backends "backend.internal:9005@ADDRESS", and a mirror; one more host
 * name that has no address yet) and a fan-out service.  Each input is routed twice: against
 * that generation and against none (sh == NULL).  Drain/enable requests
 * change the generation's backends; later inputs see that, which is fine.
 *
 * Properties checked besides memory safety and UB:
 *   - admin_route() returns 0 (no body here comes near ADMIN_BODY_MAX);
 *   - the reply has a content type, a status among 200 400 404 405 503, an
 *     Allow header exactly on a 405, and a NUL-terminated body of `len`
 *     bytes with no NUL inside;
 *   - every JSON body (errors, /status, drain/enable) is one valid JSON
 *     document (strict: UTF-8, escapes, no control characters) and a line
 *     end, whatever bytes the target echoed into it;
 *   - /metrics and /status answer 200 to GET and HEAD and 405 to any other
 *     method; no route answers 200 without a generation;
 *   - a 200 to drain shows the backend in state "drain", a 200 to enable
 *     does not.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "admin/admin.h"
#include "config/config.h"
#include "core/log.h"
#include "core/resolve.h"
#include "relay/proxy.h"
#include "fuzz.h"

static const char gen_yaml[] = "services:\n"
                               "  - name: web\n"
                               "    listen: [\"127.0.0.1:18080\", \"[::1]:18080\"]\n"
                               "    backends:\n"
                               "      - address: 127.0.0.1:9001\n"
                               "      - address: 127.0.0.1:9002\n"
                               "        weight: 3\n"
                               "      - address: \"[::1]:9001\"\n"
                               "      - address: backend.internal:9005\n"
                               "      - address: not-yet.internal:9006\n"
                               "    mirrors:\n"
                               "      - address: 127.0.0.1:9100\n"
                               "      - address: backend.internal:9101\n"
                               "  - name: api_2-x\n"
                               "    listen: [\"127.0.0.1:18081\"]\n"
                               "    backends:\n"
                               "      - address: 127.0.0.1:9003\n"
                               "  - name: feed\n"
                               "    mode: fanout\n"
                               "    framing: line\n"
                               "    inputs:\n"
                               "      listen: [\"127.0.0.1:18082\"]\n"
                               "    outputs:\n"
                               "      listen: [\"127.0.0.1:18083\"]\n";

static struct relay_shared *gen;

/* What the resolver would have answered for backend.internal: one IPv4 and
 * one IPv6 address, in one allocation as resolve_result_free() expects. */
static struct resolve_result *fake_resolved(void)
{
	static const char name[] = "backend.internal";
	struct resolve_result *res;
	struct sockaddr_storage *addrs;
	size_t head = sizeof(*res) + sizeof(res->entries[0]);

	head = (head + _Alignof(struct sockaddr_storage) - 1) &
	       ~(_Alignof(struct sockaddr_storage) - 1);
	res = calloc(1, head + 2 * sizeof(*addrs) + sizeof(name));
	if (!res)
		fuzz_fail("out of memory");
	addrs = (struct sockaddr_storage *)((char *)res + head);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&addrs[0];
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addrs[1];

	v4->sin_family = AF_INET;
	inet_pton(AF_INET, "10.0.0.5", &v4->sin_addr);
	v6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::5", &v6->sin6_addr);
	memcpy(addrs + 2, name, sizeof(name));
	res->generation = 1;
	res->n = 1;
	res->entries[0].name = (const char *)(addrs + 2);
	res->entries[0].status = RESOLVE_OK;
	res->entries[0].n_addrs = 2;
	res->entries[0].addrs = addrs;
	return res;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config *cfg;
	char err[256];

	(void)argc, (void)argv;
	log_setup(LOG_ERROR, LOG_TEXT);      /* drain/enable log at info */
	relay_set_resolved(fake_resolved()); /* taken over */
	if (config_load_string(gen_yaml, sizeof(gen_yaml) - 1, "fuzz-admin.yaml", &cfg, err,
	                       sizeof(err)) < 0)
		fuzz_fail("the generation's config: %s", err);
	if (relay_shared_create(cfg, &gen, err, sizeof(err)) < 0)
		fuzz_fail("relay_shared_create: %s", err);
	return 0;
}

/* --- a strict JSON checker ----------------------------------------------- */

struct js {
	const unsigned char *p, *end;
	int depth;
};

static void js_ws(struct js *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool js_lit(struct js *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return false;
	j->p += n;
	return true;
}

static bool js_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One UTF-8 sequence at p (n bytes left): its length, 0 when invalid. */
static size_t js_utf8(const unsigned char *p, size_t n)
{
	unsigned c = p[0], need, min;
	unsigned long cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc0 && c < 0xe0)
		need = 1, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c < 0xf0)
		need = 2, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c < 0xf8)
		need = 3, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if (n < need + 1)
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

static bool js_string(struct js *j)
{
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	while (j->p < j->end) {
		unsigned char c = *j->p;

		if (c == '"') {
			j->p++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (j->end - j->p < 2)
				return false;
			c = j->p[1];
			if (c == 'u') {
				if (j->end - j->p < 6 || !js_hex(j->p[2]) || !js_hex(j->p[3]) ||
				    !js_hex(j->p[4]) || !js_hex(j->p[5]))
					return false;
				j->p += 6;
			} else if (strchr("\"\\/bfnrt", c) && c) {
				j->p += 2;
			} else {
				return false;
			}
			continue;
		}
		size_t l = js_utf8(j->p, (size_t)(j->end - j->p));

		if (!l)
			return false;
		j->p += l;
	}
	return false;
}

static bool js_digits(struct js *j)
{
	const unsigned char *s = j->p;

	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s;
}

static bool js_number(struct js *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (!js_digits(j))
		return false;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!js_digits(j))
			return false;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!js_digits(j))
			return false;
	}
	return true;
}

static bool js_value(struct js *j);

/* An object (close '}') or an array (close ']'), opening bracket consumed. */
static bool js_container(struct js *j, char close)
{
	js_ws(j);
	if (j->p < j->end && *j->p == (unsigned char)close) {
		j->p++;
		return true;
	}
	for (;;) {
		js_ws(j);
		if (close == '}') {
			if (!js_string(j))
				return false;
			js_ws(j);
			if (j->p >= j->end || *j->p != ':')
				return false;
			j->p++;
		}
		if (!js_value(j))
			return false;
		js_ws(j);
		if (j->p >= j->end)
			return false;
		if (*j->p == (unsigned char)close) {
			j->p++;
			return true;
		}
		if (*j->p != ',')
			return false;
		j->p++;
	}
}

static bool js_value(struct js *j)
{
	bool ok;

	js_ws(j);
	if (j->p >= j->end || ++j->depth > 64)
		return false;
	switch (*j->p) {
	case '{':
		j->p++;
		ok = js_container(j, '}');
		break;
	case '[':
		j->p++;
		ok = js_container(j, ']');
		break;
	case '"':
		ok = js_string(j);
		break;
	case 't':
		ok = js_lit(j, "true");
		break;
	case 'f':
		ok = js_lit(j, "false");
		break;
	case 'n':
		ok = js_lit(j, "null");
		break;
	default:
		ok = js_number(j);
	}
	j->depth--;
	return ok;
}

/* body[0..len) is one JSON object and "\n". */
static void check_json(const char *body, size_t len, const char *what)
{
	struct js j = {(const unsigned char *)body, (const unsigned char *)body + len, 0};

	if (len < 2 || body[0] != '{' || body[len - 1] != '\n')
		fuzz_fail("%s: not a JSON object and a line end: %.200s", what, body);
	j.end--;
	if (!js_value(&j) || j.p != j.end)
		fuzz_fail("%s: invalid JSON at byte %zu: %.300s", what,
		          (size_t)(j.p - (const unsigned char *)body), body);
}

/* --- one request ------------------------------------------------------------ */

static void check_reply(struct relay_shared *sh, const char *method, const char *url,
                        const struct admin_reply *r)
{
	const char *ct = r->content_type;

	if (!ct)
		fuzz_fail("no content type (status %d)", r->status);
	if (r->status != 200 && r->status != 400 && r->status != 404 && r->status != 405 &&
	    r->status != 503)
		fuzz_fail("status %d", r->status);
	if ((r->status == 405) != (r->allow != NULL))
		fuzz_fail("status %d with allow %s", r->status, r->allow ? r->allow : "NULL");
	if (!r->body || r->len == 0)
		fuzz_fail("status %d without a body", r->status);
	if (strlen(r->body) != r->len || r->len >= r->cap)
		fuzz_fail("body of %zu bytes, len %zu, cap %zu", strlen(r->body), r->len, r->cap);
	bool json = strcmp(ct, "application/json") == 0;

	if (r->status != 200 && !json)
		fuzz_fail("error %d as %s", r->status, ct);
	if (json)
		check_json(r->body, r->len, url ? url : "(null)");
	else if (r->body[r->len - 1] != '\n')
		fuzz_fail("metrics without a final line end");

	if (!method || !url) {
		if (r->status != 400)
			fuzz_fail("NULL method or target: status %d", r->status);
		return;
	}
	size_t n = strcspn(url, "?#");
	bool fixed =
	    (n == 8 && !memcmp(url, "/metrics", 8)) || (n == 7 && !memcmp(url, "/status", 7));
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

	if (fixed && !get && r->status != 405)
		fuzz_fail("%s %s: status %d, want 405", method, url, r->status);
	if (fixed && get && r->status != (sh ? 200 : 503))
		fuzz_fail("%s %s: status %d", method, url, r->status);
	if (r->status == 200 && !sh)
		fuzz_fail("%s %s: 200 without a generation", method, url);
	if (r->status == 200 && !fixed) {
		bool drain = n >= 6 && !memcmp(url + n - 6, "/drain", 6);
		bool shown = strstr(r->body, "\"state\":\"drain\"") != NULL;

		if (strcmp(method, "POST") != 0 || drain != shown)
			fuzz_fail("%s %s: 200 with %s", method, url, r->body);
	}
}

static void route_one(struct relay_shared *sh, const char *method, const char *url)
{
	struct admin_reply r;
	int rc = admin_route(sh, method, url, &r);

	if (rc != 0)
		fuzz_fail("admin_route returned %d", rc);
	check_reply(sh, method, url, &r);
	admin_reply_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);

	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	char *sp = memchr(line, ' ', size);
	const char *url = NULL;

	if (sp) {
		*sp = '\0';
		url = sp + 1;
	}
	route_one(gen, line, url);
	route_one(NULL, line, url);
	free(line);
	return 0;
}
