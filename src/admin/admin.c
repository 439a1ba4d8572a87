/* admin.c - the admin HTTP endpoint: a pure router (admin_route) and a thin
 * libmicrohttpd layer around it (admin_start / admin_stop).  See admin.h for
 * the routes and the choices the SPEC leaves open.
 *
 * The router reads `struct relay_shared` without locks: every counter is an
 * atomic loaded relaxed, so a scrape is a set of individually exact values,
 * not a snapshot of one instant.  Configuration strings (names, addresses)
 * belong to the generation, which the caller keeps alive for the call.
 */
#include "admin/admin.h"
#include "relay/fanout.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#define CT_PROM "text/plain; version=0.0.4; charset=utf-8"
#define CT_JSON "application/json"

/* --- reply buffer ----------------------------------------------------------
 * Grows by doubling up to ADMIN_BODY_MAX; the first failure latches `nomem`
 * and later writes are dropped, so builders check once at the end. */

static bool out_reserve(struct admin_reply *o, size_t more)
{
	if (o->nomem)
		return false;
	if (more > ADMIN_BODY_MAX || o->len + more + 1 > ADMIN_BODY_MAX) {
		o->nomem = true;
		return false;
	}
	size_t need = o->len + more + 1;
	if (need <= o->cap)
		return true;
	size_t cap = o->cap ? o->cap : 1024;
	while (cap < need)
		cap *= 2;
	if (cap > ADMIN_BODY_MAX)
		cap = ADMIN_BODY_MAX;
	char *p = realloc(o->body, cap);
	if (!p) {
		o->nomem = true;
		return false;
	}
	o->body = p;
	o->cap = cap;
	return true;
}

static void out_put(struct admin_reply *o, const char *s, size_t n)
{
	if (!out_reserve(o, n))
		return;
	memcpy(o->body + o->len, s, n);
	o->len += n;
	o->body[o->len] = '\0';
}

static void out_str(struct admin_reply *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void out_u64(struct admin_reply *o, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
	out_put(o, tmp, (size_t)n);
}

void admin_reply_free(struct admin_reply *r)
{
	if (!r)
		return;
	free(r->body);
	r->body = NULL;
	r->len = r->cap = 0;
}

/* --- escaping -------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* A JSON string of the n bytes at s: quotes, backslashes and control
 * characters escaped; an invalid UTF-8 byte becomes U+FFFD so that the
 * document stays valid whatever the input. */
static void json_strn(struct admin_reply *o, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	out_put(o, "\"", 1);
	size_t i = 0, run = 0;
	while (i < n) {
		unsigned char c = p[i];
		size_t l = c >= 0x20 && c != '"' && c != '\\' ? utf8_len(p + i, n - i) : 0;
		if (l) {
			i += l;
			run += l;
			continue;
		}
		out_put(o, s + i - run, run);
		run = 0;
		char esc[8];
		switch (c) {
		case '"':
			out_put(o, "\\\"", 2);
			break;
		case '\\':
			out_put(o, "\\\\", 2);
			break;
		case '\n':
			out_put(o, "\\n", 2);
			break;
		case '\r':
			out_put(o, "\\r", 2);
			break;
		case '\t':
			out_put(o, "\\t", 2);
			break;
		default:
			if (c < 0x20) {
				snprintf(esc, sizeof(esc), "\\u%04x", c);
				out_put(o, esc, 6);
			} else {
				out_put(o, "\\ufffd", 6);
			}
		}
		i++;
	}
	out_put(o, s + i - run, run);
	out_put(o, "\"", 1);
}

static void json_str(struct admin_reply *o, const char *s)
{
	json_strn(o, s ? s : "", s ? strlen(s) : 0);
}

/* A Prometheus label value, quotes included: backslash, double quote and
 * line feed are the three characters the text format escapes. */
static void prom_label(struct admin_reply *o, const char *s)
{
	out_put(o, "\"", 1);
	size_t run = 0;
	for (; s && *s; s++) {
		const char *esc = *s == '\\'   ? "\\\\"
		                  : *s == '"'  ? "\\\""
		                  : *s == '\n' ? "\\n"
		                               : NULL;
		if (!esc) {
			run++;
			continue;
		}
		out_put(o, s - run, run);
		run = 0;
		out_put(o, esc, 2);
	}
	if (s)
		out_put(o, s - run, run);
	out_put(o, "\"", 1);
}

/* --- percent-decoding -------------------------------------------------------
 * Path segments are decoded on the fly while being compared, so the router
 * needs no buffer whatever the length of the URL. */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 0 when every '%' in s[0..n) starts a two-digit escape that is not %00,
 * else -EINVAL. */
static int pct_check(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%')
			continue;
		if (n - i < 3)
			return -EINVAL;
		int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
		if (h < 0 || l < 0 || (h == 0 && l == 0))
			return -EINVAL;
		i += 2;
	}
	return 0;
}

/* The byte of s[0..n) at *i, decoded; advances *i.  s was checked. */
static char pct_next(const char *s, size_t *i)
{
	char c = s[*i];
	if (c == '%') {
		c = (char)(hexval((unsigned char)s[*i + 1]) << 4 |
		           hexval((unsigned char)s[*i + 2]));
		*i += 3;
	} else {
		*i += 1;
	}
	return c;
}

/* True when s[0..n), decoded, is exactly text. */
static bool pct_equal(const char *s, size_t n, const char *text)
{
	size_t i = 0;
	while (i < n) {
		if (*text == '\0' || pct_next(s, &i) != *text)
			return false;
		text++;
	}
	return *text == '\0';
}

/* True when text is "NAME:PORT@ADDRESS" (a backend resolved from a host
 * name) and s[0..n), decoded, is its "NAME:PORT" part as written: draining
 * a name drains every address it resolved to. */
static bool pct_name_of(const char *s, size_t n, const char *text)
{
	size_t i = 0;
	while (i < n) {
		if (*text == '\0' || *text == '@' || pct_next(s, &i) != *text)
			return false;
		text++;
	}
	return *text == '@';
}

/* Decodes s[0..n) into dst (capacity cap >= 4), cut with "..." when longer:
 * for echoing in error messages only. */
static void pct_decode_short(const char *s, size_t n, char *dst, size_t cap)
{
	size_t i = 0, j = 0;
	while (i < n && j + 1 < cap)
		dst[j++] = pct_next(s, &i);
	if (i < n) {
		memcpy(dst + cap - 4, "...", 3);
		j = cap - 1;
	}
	dst[j] = '\0';
}

/* --- replies --------------------------------------------------------------- */

static void reply_error(struct admin_reply *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_error(struct admin_reply *o, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->status = status;
	o->content_type = CT_JSON;
	o->len = 0;
	out_str(o, "{\"error\":");
	json_str(o, msg);
	out_str(o, "}\n");
}

static uint64_t ld64(_Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static uint64_t ld32(_Atomic unsigned *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static const char *mode_name(enum svc_mode m)
{
	return m == MODE_FANOUT ? "fanout" : "proxy";
}

static const char *backend_state(struct backend_rt *b)
{
	if (atomic_load_explicit(&b->lb.drained, memory_order_relaxed))
		return "drain";
	return atomic_load_explicit(&b->lb.up, memory_order_relaxed) ? "up" : "down";
}

static void json_backend(struct admin_reply *o, struct backend_rt *b)
{
	out_str(o, "{\"address\":");
	json_str(o, b->cfg->addr.text);
	out_str(o, ",\"state\":\"");
	out_str(o, backend_state(b));
	out_str(o, "\",\"active\":");
	out_u64(o, ld32(&b->lb.active));
	out_str(o, ",\"weight\":");
	out_u64(o, ld32(&b->lb.weight));
	out_str(o, "}");
}

/* --- /metrics -------------------------------------------------------------- */

enum m_scope { M_PROXY, M_FANOUT, M_BACKEND, M_MIRROR };

/* One metric family: its samples come from `get` once per service (M_PROXY,
 * M_FANOUT), backend or mirror, and once per value of the extra label. */
struct metric {
	const char *name, *type, *help;
	enum m_scope scope;
	const char *label;           /* extra label or NULL */
	const char *const values[4]; /* its values, NULL-terminated */
	uint64_t (*get)(struct shared_service *ss, size_t i, size_t v);
};

static uint64_t get_conn_total(struct shared_service *ss, size_t i, size_t v)
{
	(void)i, (void)v;
	return ld64(&ss->st->ctr.connections_total);
}

static uint64_t get_conn_active(struct shared_service *ss, size_t i, size_t v)
{
	(void)i, (void)v;
	return ld32(&ss->st->active);
}

static uint64_t get_rejected(struct shared_service *ss, size_t i, size_t v)
{
	(void)i;
	struct svc_counters *c = &ss->st->ctr;
	return ld64(v == 0   ? &c->rejected_limit
	            : v == 1 ? &c->rejected_acl
	                     : &c->rejected_no_backend);
}

static uint64_t get_bytes(struct shared_service *ss, size_t i, size_t v)
{
	(void)i;
	return ld64(v == 0 ? &ss->st->ctr.bytes_in : &ss->st->ctr.bytes_out);
}

static uint64_t get_backend_up(struct shared_service *ss, size_t i, size_t v)
{
	(void)v;
	return atomic_load_explicit(&ss->backends[i]->lb.up, memory_order_relaxed) ? 1 : 0;
}

static uint64_t get_backend_active(struct shared_service *ss, size_t i, size_t v)
{
	(void)v;
	return ld32(&ss->backends[i]->lb.active);
}

static uint64_t get_backend_failures(struct shared_service *ss, size_t i, size_t v)
{
	(void)v;
	return ld64(&ss->backends[i]->connect_failures);
}

static uint64_t get_mirror_bytes(struct shared_service *ss, size_t i, size_t v)
{
	(void)v;
	return ld64(&ss->mirrors[i]->bytes);
}

static uint64_t get_mirror_disconnects(struct shared_service *ss, size_t i, size_t v)
{
	(void)v;
	return ld64(&ss->mirrors[i]->disconnects);
}

/* Fan-out counters are kept by the running fan-out service (worker 0); a
 * service that is not running (not started yet, or a relay_shared built by
 * hand in tests) shows what its svc_state holds. */
static struct fanout_stats fo_of(const struct shared_service *ss)
{
	struct fanout_stats st;
	if (!fanout_stats_by_name(ss->cfg->name, &st)) {
		st.inputs = ld32(&ss->st->fo.inputs);
		st.outputs = ld32(&ss->st->fo.outputs);
		st.dropped_records = ld64(&ss->st->fo.dropped_records);
		st.disconnects = ld64(&ss->st->fo.disconnects);
	}
	return st;
}

static uint64_t get_fo_outputs(struct shared_service *ss, size_t i, size_t v)
{
	(void)i, (void)v;
	return fo_of(ss).outputs;
}

static uint64_t get_fo_dropped(struct shared_service *ss, size_t i, size_t v)
{
	(void)i, (void)v;
	return fo_of(ss).dropped_records;
}

static uint64_t get_fo_disconnects(struct shared_service *ss, size_t i, size_t v)
{
	(void)i, (void)v;
	return fo_of(ss).disconnects;
}

#define COUNTER "counter"
#define GAUGE   "gauge"

static const struct metric metrics[] = {
    {.name = "ferry_connections_total",
     .type = COUNTER,
     .scope = M_PROXY,
     .help = "Client connections accepted, rejected ones included.",
     .get = get_conn_total},
    {.name = "ferry_connections_active",
     .type = GAUGE,
     .scope = M_PROXY,
     .help = "Client connections open now.",
     .get = get_conn_active},
    {.name = "ferry_connections_rejected_total",
     .type = COUNTER,
     .scope = M_PROXY,
     .help = "Client connections closed at once, by reason.",
     .get = get_rejected,
     .label = "reason",
     .values = {"limit", "acl", "no_backend", NULL}},
    {.name = "ferry_bytes_total",
     .type = COUNTER,
     .scope = M_PROXY,
     .help = "Bytes received from clients (in) and sent to clients (out).",
     .get = get_bytes,
     .label = "direction",
     .values = {"in", "out", NULL}},
    {.name = "ferry_backend_up",
     .type = GAUGE,
     .scope = M_BACKEND,
     .help = "1 when the backend is healthy, else 0 (a drained backend stays 1).",
     .get = get_backend_up},
    {.name = "ferry_backend_connections_active",
     .type = GAUGE,
     .scope = M_BACKEND,
     .help = "Connections open to the backend now.",
     .get = get_backend_active},
    {.name = "ferry_backend_connect_failures_total",
     .type = COUNTER,
     .scope = M_BACKEND,
     .help = "Connects to the backend that failed or timed out.",
     .get = get_backend_failures},
    {.name = "ferry_mirror_bytes_total",
     .type = COUNTER,
     .scope = M_MIRROR,
     .help = "Bytes sent to the mirror.",
     .get = get_mirror_bytes},
    {.name = "ferry_mirror_disconnects_total",
     .type = COUNTER,
     .scope = M_MIRROR,
     .help = "Mirror connections that ended early.",
     .get = get_mirror_disconnects},
    {.name = "ferry_fanout_outputs",
     .type = GAUGE,
     .scope = M_FANOUT,
     .help = "Outputs connected now.",
     .get = get_fo_outputs},
    {.name = "ferry_fanout_dropped_records_total",
     .type = COUNTER,
     .scope = M_FANOUT,
     .help = "Records skipped for lagging outputs (on_lag: drop).",
     .get = get_fo_dropped},
    {.name = "ferry_fanout_disconnects_total",
     .type = COUNTER,
     .scope = M_FANOUT,
     .help = "Outputs closed for lagging.",
     .get = get_fo_disconnects},
};

static void metric_samples(struct admin_reply *o, const struct metric *m, struct shared_service *ss,
                           const char *key, const char *item, size_t i)
{
	size_t nv = 0;
	while (m->label && m->values[nv])
		nv++;
	for (size_t v = 0; v < (nv ? nv : 1); v++) {
		out_str(o, m->name);
		out_str(o, "{service=");
		prom_label(o, ss->cfg->name);
		if (key) {
			out_str(o, ",");
			out_str(o, key);
			out_str(o, "=");
			prom_label(o, item);
		}
		if (nv) {
			out_str(o, ",");
			out_str(o, m->label);
			out_str(o, "=");
			prom_label(o, m->values[v]);
		}
		out_str(o, "} ");
		out_u64(o, m->get(ss, i, v));
		out_str(o, "\n");
	}
}

static void route_metrics(struct relay_shared *sh, struct admin_reply *o)
{
	o->status = 200;
	o->content_type = CT_PROM;
	for (size_t k = 0; k < sizeof(metrics) / sizeof(metrics[0]); k++) {
		const struct metric *m = &metrics[k];
		out_str(o, "# HELP ");
		out_str(o, m->name);
		out_str(o, " ");
		out_str(o, m->help);
		out_str(o, "\n# TYPE ");
		out_str(o, m->name);
		out_str(o, " ");
		out_str(o, m->type);
		out_str(o, "\n");
		for (size_t s = 0; s < sh->n_svcs; s++) {
			struct shared_service *ss = &sh->svcs[s];
			bool fanout = ss->cfg->mode == MODE_FANOUT;
			switch (m->scope) {
			case M_PROXY:
				if (!fanout)
					metric_samples(o, m, ss, NULL, NULL, 0);
				break;
			case M_FANOUT:
				if (fanout)
					metric_samples(o, m, ss, NULL, NULL, 0);
				break;
			case M_BACKEND:
				for (size_t b = 0; b < ss->n_backends; b++)
					metric_samples(o, m, ss, "backend",
					               ss->backends[b]->cfg->addr.text, b);
				break;
			case M_MIRROR:
				for (size_t b = 0; b < ss->n_mirrors; b++)
					metric_samples(o, m, ss, "mirror",
					               ss->mirrors[b]->cfg->addr.text, b);
				break;
			}
		}
	}
}

/* --- /status --------------------------------------------------------------- */

static void route_status(struct relay_shared *sh, struct admin_reply *o)
{
	o->status = 200;
	o->content_type = CT_JSON;
	out_str(o, "{\"services\":[");
	for (size_t s = 0; s < sh->n_svcs; s++) {
		struct shared_service *ss = &sh->svcs[s];
		const struct cfg_service *c = ss->cfg;
		bool fanout = c->mode == MODE_FANOUT;
		out_str(o, s ? ",{\"name\":" : "{\"name\":");
		json_str(o, c->name);
		out_str(o, ",\"mode\":\"");
		out_str(o, mode_name(c->mode));
		out_str(o, "\",\"listen\":[");
		for (size_t i = 0; i < c->n_listen; i++) {
			if (i)
				out_str(o, ",");
			json_str(o, c->listen[i].text);
		}
		out_str(o, "],\"backends\":[");
		for (size_t i = 0; i < ss->n_backends; i++) {
			if (i)
				out_str(o, ",");
			json_backend(o, ss->backends[i]);
		}
		out_str(o, "],\"mirrors\":[");
		for (size_t i = 0; i < ss->n_mirrors; i++) {
			struct mirror_rt *m = ss->mirrors[i];
			out_str(o, i ? ",{\"address\":" : "{\"address\":");
			json_str(o, m->cfg->addr.text);
			out_str(o, ",\"active\":");
			out_u64(o, ld32(&m->active));
			out_str(o, ",\"bytes\":");
			out_u64(o, ld64(&m->bytes));
			out_str(o, ",\"disconnects\":");
			out_u64(o, ld64(&m->disconnects));
			out_str(o, "}");
		}
		out_str(o, "],\"inputs\":");
		out_u64(o, fanout ? fo_of(ss).inputs : 0);
		out_str(o, ",\"outputs\":");
		out_u64(o, fanout ? fo_of(ss).outputs : 0);
		out_str(o, "}");
	}
	out_str(o, "]}\n");
}

/* --- drain / enable ---------------------------------------------------------- */

static void route_backend(struct relay_shared *sh, const char *name, size_t name_len,
                          const char *addr, size_t addr_len, bool drain, struct admin_reply *o)
{
	char shown[128];
	struct shared_service *ss = NULL;
	for (size_t s = 0; s < sh->n_svcs && !ss; s++)
		if (pct_equal(name, name_len, sh->svcs[s].cfg->name))
			ss = &sh->svcs[s];
	if (!ss) {
		pct_decode_short(name, name_len, shown, sizeof(shown));
		reply_error(o, 404, "unknown service \"%s\"", shown);
		return;
	}
	struct backend_rt *found = NULL;
	for (size_t b = 0; b < ss->n_backends; b++) {
		struct backend_rt *rt = ss->backends[b];
		if (!pct_equal(addr, addr_len, rt->cfg->addr.text) &&
		    !pct_name_of(addr, addr_len, rt->cfg->addr.text))
			continue;
		atomic_store(&rt->lb.drained, drain);
		if (!found)
			found = rt;
	}
	if (!found) {
		pct_decode_short(addr, addr_len, shown, sizeof(shown));
		reply_error(o, 404, "unknown backend \"%s\" in service \"%s\"", shown,
		            ss->cfg->name);
		return;
	}
	struct logline l;
	log_begin(&l, LOG_INFO, drain ? "backend_drain" : "backend_enable");
	log_str(&l, "service", ss->cfg->name);
	log_str(&l, "backend", found->cfg->addr.text);
	log_end(&l);
	o->status = 200;
	o->content_type = CT_JSON;
	json_backend(o, found);
	out_str(o, "\n");
}

/* --- the router ------------------------------------------------------------ */

/* True when p[0..n) is exactly lit. */
static bool seg_is(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static void method_not_allowed(struct admin_reply *o, const char *allow)
{
	o->allow = allow;
	reply_error(o, 405, "method not allowed (allowed: %s)", allow);
}

/* Splits path[0..n) (after its leading '/') into at most max segments;
 * returns the number found, or max + 1 when there are more. */
static size_t split_path(const char *path, size_t n, const char **seg, size_t *len, size_t max)
{
	size_t k = 0, start = 1;
	for (size_t i = 1; i <= n; i++) {
		if (i < n && path[i] != '/')
			continue;
		if (k == max)
			return max + 1;
		seg[k] = path + start;
		len[k] = i - start;
		k++;
		start = i + 1;
	}
	return k;
}

int admin_route(struct relay_shared *sh, const char *method, const char *url,
                struct admin_reply *out)
{
	struct admin_reply *o = out;
	*o = (struct admin_reply){0};
	if (!method || !url) {
		reply_error(o, 400, "bad request");
		goto out;
	}
	size_t n = strcspn(url, "?#");
	if (n == 0 || url[0] != '/') {
		reply_error(o, 400, "the request target must be a path");
		goto out;
	}
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	enum { R_NONE, R_METRICS, R_STATUS, R_BACKEND } route = R_NONE;
	const char *seg[5];
	size_t len[5];
	if (seg_is(url, n, "/metrics"))
		route = R_METRICS;
	else if (seg_is(url, n, "/status"))
		route = R_STATUS;
	else if (split_path(url, n, seg, len, 5) == 5 && seg_is(seg[0], len[0], "services") &&
	         seg_is(seg[2], len[2], "backends") &&
	         (seg_is(seg[4], len[4], "drain") || seg_is(seg[4], len[4], "enable")))
		route = R_BACKEND;

	if (route == R_NONE) {
		reply_error(o, 404, "not found");
	} else if (route != R_BACKEND && !get) {
		method_not_allowed(o, "GET, HEAD");
	} else if (route == R_BACKEND && strcmp(method, "POST") != 0) {
		method_not_allowed(o, "POST");
	} else if (route == R_BACKEND &&
	           (pct_check(seg[1], len[1]) < 0 || pct_check(seg[3], len[3]) < 0)) {
		reply_error(o, 400, "bad percent-escape in the service name or backend address");
	} else if (!sh) {
		reply_error(o, 503, "no configuration loaded");
	} else if (route == R_METRICS) {
		route_metrics(sh, o);
	} else if (route == R_STATUS) {
		route_status(sh, o);
	} else {
		route_backend(sh, seg[1], len[1], seg[3], len[3], seg_is(seg[4], len[4], "drain"),
		              o);
	}
out:
	if (o->nomem) {
		admin_reply_free(o);
		o->status = 500;
		o->content_type = CT_JSON;
		o->allow = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* --- the HTTP layer ---------------------------------------------------------- */

struct admin {
	struct MHD_Daemon *d;
	struct relay_shared *fallback; /* reference held, or NULL */
	char where[INET6_ADDRSTRLEN + 8];
};

/* libmicrohttpd decodes the path before the handler sees it unless told
 * otherwise; the router wants it raw (it decodes NAME and ADDRESS itself and
 * must tell a bad escape apart), so the "unescaper" keeps it as it is. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls, (void)c;
	return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct admin *a = cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_msg(LOG_WARN, "admin", "%s: %s", a->where, msg);
}

/* The request handler, called at least twice per request: once when the
 * headers are in (nothing answered yet, so a body can follow), then per
 * piece of body (discarded: no route takes one), then once more to answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req)
{
	static int started;
	struct admin *a = cls;
	(void)version, (void)upload;
	if (!*req) {
		*req = &started;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	struct relay_shared *sh = relay_current_acquire();
	bool borrowed = !sh;
	if (!sh)
		sh = a->fallback;
	struct admin_reply rep;
	admin_route(sh, method, url, &rep);
	if (!borrowed)
		relay_shared_release(sh);

	static char oom[] = "{\"error\":\"out of memory\"}\n";
	struct MHD_Response *resp;
	if (rep.body)
		resp = MHD_create_response_from_buffer_with_free_callback(rep.len, rep.body, free);
	else if (rep.status == 500)
		resp =
		    MHD_create_response_from_buffer(sizeof(oom) - 1, oom, MHD_RESPMEM_PERSISTENT);
	else
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		admin_reply_free(&rep);
		return MHD_NO;
	}
	rep.body = NULL; /* the response owns it now */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rep.content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (rep.allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rep.allow);
	enum MHD_Result r = MHD_queue_response(c, (unsigned)rep.status, resp);
	MHD_destroy_response(resp);
	return r;
}

static void format_addr(const struct sockaddr *sa, char *dst, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(dst, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(dst, len, "[%s]:%u", host, port);
	} else {
		snprintf(dst, len, "(address family %d)", sa->sa_family);
	}
}

/* Opens, binds and listens on sa.  Returns the descriptor or -errno, with
 * the failing step in *step. */
static int admin_listen(const struct sockaddr *sa, socklen_t salen, const char **step)
{
	*step = "socket";
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		int v6only = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? 0 : 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	}
	*step = "bind";
	if (bind(fd, sa, salen) == -1)
		goto fail;
	*step = "listen";
	if (listen(fd, 64) == -1)
		goto fail;
	return fd;
fail:;
	int e = errno;
	close(fd);
	return -e;
}

int admin_start(struct admin **out, const struct sockaddr *sa, socklen_t salen,
                struct relay_shared *sh, char *err, size_t errlen)
{
	*out = NULL;
	if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
	    salen < (sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
	                                      : sizeof(struct sockaddr_in6))) {
		snprintf(err, errlen, "admin endpoint: not an IPv4 or IPv6 address");
		return -EAFNOSUPPORT;
	}
	struct admin *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "admin endpoint: out of memory");
		return -ENOMEM;
	}
	format_addr(sa, a->where, sizeof(a->where));
	const char *step;
	int fd = admin_listen(sa, salen, &step);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s (admin): %s: %s", a->where, step,
		         strerror(-fd));
		free(a);
		return fd;
	}
	/* The HTTP thread inherits the mask of the thread creating it. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	errno = 0;
	a->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG,
	                        0, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
	                        a, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
	                        (unsigned)ADMIN_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
	                        (unsigned)ADMIN_CONN_TIMEOUT_S, MHD_OPTION_UNESCAPE_CALLBACK,
	                        keep_escaped, NULL, MHD_OPTION_END);
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!a->d) {
		snprintf(err, errlen, "cannot start the admin endpoint on %s: %s", a->where,
		         e ? strerror(e) : "libmicrohttpd failed");
		close(fd);
		free(a);
		return e ? -e : -EIO;
	}
	if (sh) {
		atomic_fetch_add(&sh->refs, 1);
		a->fallback = sh;
	}
	*out = a;
	return 0;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->d); /* closes the listening socket too */
	relay_shared_release(a->fallback);
	free(a);
}
