/* test_admin.c - the admin endpoint (src/admin/admin.c): admin_route() on a
 * generation built by relay_shared_create() from a hand-made config, and a
 * few requests through the libmicrohttpd layer on a loopback port.
 *
 * Covered: every metric family of SPEC section 5 with one HELP and one TYPE
 * line and values equal to the counters set, the text format's syntax and
 * label escaping, /status as an exact JSON document (escaping included),
 * drain/enable flipping lb.drained with percent-encoded IPv4 and IPv6
 * addresses, the 400/404/405/503 answers, and long, hostile and random
 * request targets (run under ASan by `make asan`).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/admin.h"
#include "core/log.h"
#include "relay/proxy.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The generation every test starts from:
 *   web   proxy, listen 127.0.0.1:18080 and [::1]:18080, backends
 *         127.0.0.1:9001, 127.0.0.1:9002, [::1]:9001, mirror 127.0.0.1:9100
 *   api   proxy, listen 127.0.0.1:18081, backend 127.0.0.1:9003
 *   feed  fan-out (mode set by hand: the loader does not take fan-out yet),
 *         listen 127.0.0.1:18082, no backends */
struct fix {
	struct relay_shared *sh;
	struct shared_service *web, *api, *feed;
	struct admin_reply rep;
};

static void add_service(struct config *cfg, const char *name, char **listen, size_t nl,
                        char **backends, size_t nb, char **mirrors, size_t nm)
{
	char err[256];
	int rc = config_add_cli_service(cfg, name, listen, nl, backends, nb, mirrors, nm,
	                                BAL_ROUND_ROBIN, err, sizeof(err));
	if (rc)
		print_error("config_add_cli_service: %s\n", err);
	assert_int_equal(rc, 0);
}

static int fix_setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct config *cfg = config_new_default();
	char err[256];

	if (!f || !cfg)
		return -1;
	char *web_l[] = {"127.0.0.1:18080", "[::1]:18080"};
	char *web_b[] = {"127.0.0.1:9001", "127.0.0.1:9002", "[::1]:9001"};
	char *web_m[] = {"127.0.0.1:9100"};
	char *api_l[] = {"127.0.0.1:18081"}, *api_b[] = {"127.0.0.1:9003"};
	char *feed_l[] = {"127.0.0.1:18082"}, *feed_b[] = {"127.0.0.1:9004"};
	add_service(cfg, "web", web_l, 2, web_b, 3, web_m, 1);
	add_service(cfg, "api", api_l, 1, api_b, 1, NULL, 0);
	add_service(cfg, "feed", feed_l, 1, feed_b, 1, NULL, 0);
	struct cfg_service *feed = &cfg->services[2];
	free(feed->backends[0].addr.text);
	free(feed->backends);
	feed->backends = NULL;
	feed->n_backends = 0;
	feed->mode = MODE_FANOUT;
	if (relay_shared_create(cfg, &f->sh, err, sizeof(err)) < 0) {
		print_error("relay_shared_create: %s\n", err);
		return -1;
	}
	f->web = &f->sh->svcs[0];
	f->api = &f->sh->svcs[1];
	f->feed = &f->sh->svcs[2];
	*state = f;
	return 0;
}

static int fix_teardown(void **state)
{
	struct fix *f = *state;

	admin_reply_free(&f->rep);
	relay_shared_drop_current();
	free(f);
	return 0;
}

/* admin_route() into f->rep (the previous reply freed); returns the status. */
static int route(struct fix *f, const char *method, const char *url)
{
	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(f->sh, method, url, &f->rep), 0);
	assert_non_null(f->rep.content_type);
	if (f->rep.body)
		assert_int_equal(strlen(f->rep.body), f->rep.len);
	return f->rep.status;
}

static const char *body(struct fix *f)
{
	return f->rep.body ? f->rep.body : "";
}

/* The value of the sample line `series` (name{labels}) in a metrics body;
 * fails when the line is missing or there twice. */
static uint64_t sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	const char *found = NULL;

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			if (found)
				fail_msg("series %s twice", series);
			found = p + n + 1;
		}
	}
	if (!found)
		fail_msg("series %s missing in:\n%s", series, text);
	return strtoull(found, NULL, 10);
}

static bool has_series(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, prefix, n) == 0)
			return true;
	return false;
}

/* How many lines of text start with `line` followed by "\n" or " ". */
static int count_lines(const char *text, const char *start)
{
	int n = 0;
	size_t len = strlen(start);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, start, len) == 0 && (p[len] == ' ' || p[len] == '\n'))
			n++;
	return n;
}

static const struct {
	const char *name, *type;
} families[] = {
    {"ferry_connections_total", "counter"},
    {"ferry_connections_active", "gauge"},
    {"ferry_connections_rejected_total", "counter"},
    {"ferry_bytes_total", "counter"},
    {"ferry_backend_up", "gauge"},
    {"ferry_backend_connections_active", "gauge"},
    {"ferry_backend_connect_failures_total", "counter"},
    {"ferry_mirror_bytes_total", "counter"},
    {"ferry_mirror_disconnects_total", "counter"},
    {"ferry_fanout_outputs", "gauge"},
    {"ferry_fanout_dropped_records_total", "counter"},
    {"ferry_fanout_disconnects_total", "counter"},
};

/* Checks the Prometheus text format 0.0.4 line by line: comments are
 * "# HELP name text" or "# TYPE name type"; a sample is
 * name{label="value",...} integer, with only \\, \" and \n escapes in values
 * and a family's samples right after its TYPE line.  Returns the number of
 * samples. */
static int check_prom_syntax(const char *text)
{
	char family[128] = "";
	int samples = 0;
	const char *p = text;

	assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
	while (*p) {
		const char *eol = strchr(p, '\n');
		assert_non_null(eol);
		if (strncmp(p, "# HELP ", 7) == 0) {
			assert_true(strchr(p + 7, ' ') < eol);
		} else if (strncmp(p, "# TYPE ", 7) == 0) {
			const char *sp = strchr(p + 7, ' ');
			assert_true(sp && sp < eol && (size_t)(sp - p - 7) < sizeof(family));
			memcpy(family, p + 7, (size_t)(sp - p - 7));
			family[sp - p - 7] = '\0';
			assert_true(strncmp(sp + 1, "counter\n", 8) == 0 ||
			            strncmp(sp + 1, "gauge\n", 6) == 0);
		} else {
			size_t fl = strlen(family);
			assert_true(fl > 0 && strncmp(p, family, fl) == 0 && p[fl] == '{');
			const char *q = p + fl + 1;
			for (;;) {
				assert_true((*q >= 'a' && *q <= 'z') || *q == '_');
				while ((*q >= 'a' && *q <= 'z') || *q == '_')
					q++;
				assert_true(q[0] == '=' && q[1] == '"');
				q += 2;
				while (*q != '"') {
					assert_true(q < eol);
					if (*q == '\\') {
						assert_true(q[1] == '\\' || q[1] == '"' ||
						            q[1] == 'n');
						q++;
					}
					q++;
				}
				q++;
				if (*q == '}')
					break;
				assert_int_equal(*q, ',');
				q++;
			}
			assert_true(q[1] == ' ' && q[2] >= '0' && q[2] <= '9');
			for (q += 2; q < eol; q++)
				assert_true(*q >= '0' && *q <= '9');
			samples++;
		}
		p = eol + 1;
	}
	return samples;
}

/* --- /metrics ---------------------------------------------------------------- */

static void test_metrics_families(void **state)
{
	struct fix *f = *state;
	char line[160];

	assert_int_equal(route(f, "GET", "/metrics"), 200);
	assert_string_equal(f->rep.content_type, "text/plain; version=0.0.4; charset=utf-8");
	assert_null(f->rep.allow);
	for (size_t i = 0; i < N_OF(families); i++) {
		snprintf(line, sizeof(line), "# HELP %s", families[i].name);
		assert_int_equal(count_lines(body(f), line), 1);
		snprintf(line, sizeof(line), "# TYPE %s %s", families[i].name, families[i].type);
		assert_int_equal(count_lines(body(f), line), 1);
	}
	/* and no other family */
	assert_int_equal(count_lines(body(f), "# HELP"), N_OF(families));
	assert_int_equal(count_lines(body(f), "# TYPE"), N_OF(families));
	/* 2 proxy services x (1 + 1 + 3 + 2), 4 backends x 3, 1 mirror x 2,
	 * 1 fan-out service x 3 */
	assert_int_equal(check_prom_syntax(body(f)), 2 * 7 + 4 * 3 + 2 + 3);
}

static void test_metrics_values(void **state)
{
	struct fix *f = *state;
	struct svc_state *st = f->web->st;

	atomic_store(&st->ctr.connections_total, 1234567890123ull);
	atomic_store(&st->active, 7u);
	atomic_store(&st->ctr.rejected_limit, 11);
	atomic_store(&st->ctr.rejected_acl, 12);
	atomic_store(&st->ctr.rejected_no_backend, 13);
	atomic_store(&st->ctr.bytes_in, 1000);
	atomic_store(&st->ctr.bytes_out, UINT64_MAX);
	atomic_store(&f->web->backends[1]->lb.active, 5u);
	atomic_store(&f->web->backends[1]->connect_failures, 42);
	atomic_store(&f->web->backends[2]->lb.up, false);
	atomic_store(&f->web->mirrors[0]->bytes, 999);
	atomic_store(&f->web->mirrors[0]->disconnects, 3);
	atomic_store(&f->feed->st->fo.outputs, 4u);
	atomic_store(&f->feed->st->fo.dropped_records, 77);
	atomic_store(&f->feed->st->fo.disconnects, 2);
	atomic_store(&f->api->st->ctr.connections_total, 1);

	assert_int_equal(route(f, "GET", "/metrics"), 200);
	const char *t = body(f);
	assert_int_equal(sample(t, "ferry_connections_total{service=\"web\"}"), 1234567890123ull);
	assert_int_equal(sample(t, "ferry_connections_total{service=\"api\"}"), 1);
	assert_int_equal(sample(t, "ferry_connections_active{service=\"web\"}"), 7);
	assert_int_equal(
	    sample(t, "ferry_connections_rejected_total{service=\"web\",reason=\"limit\"}"), 11);
	assert_int_equal(
	    sample(t, "ferry_connections_rejected_total{service=\"web\",reason=\"acl\"}"), 12);
	assert_int_equal(
	    sample(t, "ferry_connections_rejected_total{service=\"web\",reason=\"no_backend\"}"),
	    13);
	assert_int_equal(sample(t, "ferry_bytes_total{service=\"web\",direction=\"in\"}"), 1000);
	assert_true(strstr(t, "ferry_bytes_total{service=\"web\",direction=\"out\"} "
	                      "18446744073709551615\n") != NULL);
	assert_int_equal(sample(t, "ferry_backend_up{service=\"web\",backend=\"127.0.0.1:9001\"}"),
	                 1);
	assert_int_equal(sample(t, "ferry_backend_up{service=\"web\",backend=\"[::1]:9001\"}"), 0);
	assert_int_equal(
	    sample(t,
	           "ferry_backend_connections_active{service=\"web\",backend=\"127.0.0.1:9002\"}"),
	    5);
	assert_int_equal(
	    sample(t,
	           "ferry_backend_connections_active{service=\"web\",backend=\"127.0.0.1:9001\"}"),
	    0);
	assert_int_equal(sample(t, "ferry_backend_connect_failures_total{service=\"web\",backend="
	                           "\"127.0.0.1:9002\"}"),
	                 42);
	assert_int_equal(sample(t, "ferry_backend_up{service=\"api\",backend=\"127.0.0.1:9003\"}"),
	                 1);
	assert_int_equal(
	    sample(t, "ferry_mirror_bytes_total{service=\"web\",mirror=\"127.0.0.1:9100\"}"), 999);
	assert_int_equal(
	    sample(t, "ferry_mirror_disconnects_total{service=\"web\",mirror=\"127.0.0.1:9100\"}"),
	    3);
	assert_int_equal(sample(t, "ferry_fanout_outputs{service=\"feed\"}"), 4);
	assert_int_equal(sample(t, "ferry_fanout_dropped_records_total{service=\"feed\"}"), 77);
	assert_int_equal(sample(t, "ferry_fanout_disconnects_total{service=\"feed\"}"), 2);
}

static void test_metrics_zero_reasons_and_scopes(void **state)
{
	struct fix *f = *state;

	assert_int_equal(route(f, "GET", "/metrics"), 200);
	const char *t = body(f);
	static const char *const reasons[] = {"limit", "acl", "no_backend"};
	char s[200];
	for (size_t i = 0; i < N_OF(reasons); i++) {
		snprintf(s, sizeof(s),
		         "ferry_connections_rejected_total{service=\"api\",reason=\"%s\"}",
		         reasons[i]);
		assert_int_equal(sample(t, s), 0);
	}
	/* Fan-out services have fan-out metrics and no connection metrics;
	 * proxy services the other way round. */
	assert_false(has_series(t, "ferry_connections_total{service=\"feed\"}"));
	assert_false(has_series(t, "ferry_bytes_total{service=\"feed\""));
	assert_false(has_series(t, "ferry_fanout_outputs{service=\"web\"}"));
	assert_false(has_series(t, "ferry_fanout_outputs{service=\"api\"}"));
	assert_false(has_series(t, "ferry_mirror_bytes_total{service=\"api\""));
}

static void test_metrics_drained_backend_still_up(void **state)
{
	struct fix *f = *state;

	atomic_store(&f->web->backends[0]->lb.drained, true);
	assert_int_equal(route(f, "GET", "/metrics"), 200);
	assert_int_equal(
	    sample(body(f), "ferry_backend_up{service=\"web\",backend=\"127.0.0.1:9001\"}"), 1);
	atomic_store(&f->web->backends[0]->lb.up, false);
	assert_int_equal(route(f, "GET", "/metrics"), 200);
	assert_int_equal(
	    sample(body(f), "ferry_backend_up{service=\"web\",backend=\"127.0.0.1:9001\"}"), 0);
}

/* Replaces a config string the generation points to (names and addresses
 * from the loader never hold these bytes; the escaping must hold anyway). */
static void set_text(char **slot, const char *text)
{
	free(*slot);
	*slot = strdup(text);
	assert_non_null(*slot);
}

static void test_metrics_label_escaping(void **state)
{
	struct fix *f = *state;

	set_text(&f->sh->cfg->services[0].name, "we\"b\\x\ny");
	set_text(&f->web->backends[0]->own.addr.text, "a\"b\\c\nd");
	f->web->backends[0]->lb.key = f->web->backends[0]->own.addr.text;
	set_text(&f->web->mirrors[0]->own.addr.text, "\\\\\"\"\n\n");
	assert_int_equal(route(f, "GET", "/metrics"), 200);
	const char *t = body(f);
	check_prom_syntax(t);
	assert_int_equal(sample(t, "ferry_connections_total{service=\"we\\\"b\\\\x\\ny\"}"), 0);
	assert_int_equal(
	    sample(t, "ferry_backend_up{service=\"we\\\"b\\\\x\\ny\",backend=\"a\\\"b\\\\c\\nd\"}"),
	    1);
	assert_int_equal(sample(t, "ferry_mirror_bytes_total{service=\"we\\\"b\\\\x\\ny\",mirror="
	                           "\"\\\\\\\\\\\"\\\"\\n\\n\"}"),
	                 0);
}

static void test_metrics_head_and_query(void **state)
{
	struct fix *f = *state;

	assert_int_equal(route(f, "GET", "/metrics"), 200);
	char *get = strdup(body(f));
	assert_int_equal(route(f, "HEAD", "/metrics"), 200);
	assert_string_equal(body(f), get);
	assert_int_equal(route(f, "GET", "/metrics?name[]=x&y=%zz"), 200);
	assert_string_equal(body(f), get);
	assert_int_equal(route(f, "GET", "/metrics#frag"), 200);
	free(get);
}

/* --- /status --------------------------------------------------------------- */

static void test_status_document(void **state)
{
	struct fix *f = *state;

	atomic_store(&f->web->backends[0]->lb.active, 3u);
	atomic_store(&f->web->backends[1]->lb.drained, true);
	atomic_store(&f->web->backends[1]->lb.up, false);
	atomic_store(&f->web->backends[2]->lb.up, false);
	atomic_store(&f->web->backends[2]->lb.weight, 256u);
	atomic_store(&f->web->mirrors[0]->active, 2u);
	atomic_store(&f->web->mirrors[0]->bytes, 12345);
	atomic_store(&f->web->mirrors[0]->disconnects, 6);
	atomic_store(&f->feed->st->fo.inputs, 2u);
	atomic_store(&f->feed->st->fo.outputs, 9u);
	/* A proxy service's fan-out counters are not shown. */
	atomic_store(&f->api->st->fo.outputs, 5u);

	assert_int_equal(route(f, "GET", "/status"), 200);
	assert_string_equal(f->rep.content_type, "application/json");
	assert_string_equal(
	    body(f),
	    "{\"services\":["
	    "{\"name\":\"web\",\"mode\":\"proxy\",\"listen\":[\"127.0.0.1:18080\",\"[::1]:18080\"],"
	    "\"backends\":["
	    "{\"address\":\"127.0.0.1:9001\",\"state\":\"up\",\"active\":3,\"weight\":1},"
	    "{\"address\":\"127.0.0.1:9002\",\"state\":\"drain\",\"active\":0,\"weight\":1},"
	    "{\"address\":\"[::1]:9001\",\"state\":\"down\",\"active\":0,\"weight\":256}],"
	    "\"mirrors\":[{\"address\":\"127.0.0.1:9100\",\"active\":2,\"bytes\":12345,"
	    "\"disconnects\":6}],\"inputs\":0,\"outputs\":0},"
	    "{\"name\":\"api\",\"mode\":\"proxy\",\"listen\":[\"127.0.0.1:18081\"],"
	    "\"backends\":[{\"address\":\"127.0.0.1:9003\",\"state\":\"up\",\"active\":0,"
	    "\"weight\":1}],\"mirrors\":[],\"inputs\":0,\"outputs\":0},"
	    "{\"name\":\"feed\",\"mode\":\"fanout\",\"listen\":[\"127.0.0.1:18082\"],"
	    "\"backends\":[],\"mirrors\":[],\"inputs\":2,\"outputs\":9}]}\n");
}

static void test_status_json_escaping(void **state)
{
	struct fix *f = *state;

	/* quote, backslash, newline, tab, a control byte, DEL, valid UTF-8 (é,
	 * €, U+1F600), then invalid UTF-8: a lone continuation byte, a
	 * truncated sequence, an overlong '/', a surrogate, and 0xff. */
	set_text(&f->sh->cfg->services[1].name,
	         "a\"b\\c\nd\te\x01\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\x80|\xe2\x82|"
	         "\xc0\xaf|\xed\xa0\x80|\xff");
	assert_int_equal(route(f, "GET", "/status"), 200);
	assert_non_null(strstr(body(f), "{\"name\":\"a\\\"b\\\\c\\nd\\te\\u0001\x7f"
	                                "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\\ufffd|"
	                                "\\ufffd\\ufffd|\\ufffd\\ufffd|"
	                                "\\ufffd\\ufffd\\ufffd|\\ufffd\",\"mode\":\"proxy\""));
}

static void test_status_methods(void **state)
{
	struct fix *f = *state;

	assert_int_equal(route(f, "HEAD", "/status"), 200);
	assert_int_equal(route(f, "POST", "/status"), 405);
	assert_string_equal(f->rep.allow, "GET, HEAD");
	assert_string_equal(f->rep.content_type, "application/json");
	assert_int_equal(route(f, "DELETE", "/metrics"), 405);
	assert_string_equal(f->rep.allow, "GET, HEAD");
	assert_int_equal(route(f, "get", "/metrics"), 405); /* methods are case-sensitive */
	assert_int_equal(route(f, "", "/metrics"), 405);
}

/* --- drain / enable ---------------------------------------------------------- */

static void test_drain_enable(void **state)
{
	struct fix *f = *state;
	struct backend_rt *b = f->web->backends[0];

	atomic_store(&b->lb.active, 2u);
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9001/drain"), 200);
	assert_string_equal(f->rep.content_type, "application/json");
	assert_string_equal(body(f), "{\"address\":\"127.0.0.1:9001\",\"state\":\"drain\","
	                             "\"active\":2,\"weight\":1}\n");
	assert_true(atomic_load(&b->lb.drained));
	assert_false(lb_eligible(&b->lb));
	/* Draining twice is fine; the other backends are untouched. */
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9001/drain"), 200);
	assert_false(atomic_load(&f->web->backends[1]->lb.drained));
	assert_false(atomic_load(&f->api->backends[0]->lb.drained));
	assert_int_equal(route(f, "GET", "/status"), 200);
	assert_non_null(strstr(body(f), "{\"address\":\"127.0.0.1:9001\",\"state\":\"drain\""));

	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9001/enable"), 200);
	assert_string_equal(body(f), "{\"address\":\"127.0.0.1:9001\",\"state\":\"up\","
	                             "\"active\":2,\"weight\":1}\n");
	assert_false(atomic_load(&b->lb.drained));
	assert_true(lb_eligible(&b->lb));

	/* Down and enabled: "down"; down and drained: "drain". */
	atomic_store(&b->lb.up, false);
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9001/enable"), 200);
	assert_non_null(strstr(body(f), "\"state\":\"down\""));
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9001/drain"), 200);
	assert_non_null(strstr(body(f), "\"state\":\"drain\""));
}

static void test_drain_encoded_addresses(void **state)
{
	struct fix *f = *state;
	static const struct {
		const char *url;
		int svc, backend;
	} cases[] = {
	    {"/services/web/backends/127.0.0.1%3A9002/drain", 0, 1},
	    {"/services/web/backends/127.0.0.1%3a9002/drain", 0, 1},
	    {"/services/web/backends/%31%32%37%2E%30.0.1:9002/drain", 0, 1},
	    {"/services/web/backends/%5B%3A%3A1%5D%3A9001/drain", 0, 2},
	    {"/services/web/backends/%5b%3a%3a1%5d%3a9001/drain", 0, 2},
	    {"/services/web/backends/[::1]:9001/drain", 0, 2},
	    {"/services/%61pi/backends/127.0.0.1%3A9003/drain", 1, 0},
	};

	for (size_t i = 0; i < N_OF(cases); i++) {
		struct backend_rt *b = f->sh->svcs[cases[i].svc].backends[cases[i].backend];
		atomic_store(&b->lb.drained, false);
		int st = route(f, "POST", cases[i].url);
		if (st != 200)
			fail_msg("%s: %d %s", cases[i].url, st, body(f));
		assert_true(atomic_load(&b->lb.drained));
		char want[128];
		snprintf(want, sizeof(want), "{\"address\":\"%s\",", b->cfg->addr.text);
		assert_true(strncmp(body(f), want, strlen(want)) == 0);
	}
	/* The IPv4 backend with the same port is not the IPv6 one. */
	assert_false(atomic_load(&f->web->backends[0]->lb.drained));
	assert_int_equal(route(f, "POST", "/services/web/backends/%5B%3A%3A1%5D%3A9001/enable"),
	                 200);
	assert_false(atomic_load(&f->web->backends[2]->lb.drained));
	/* '+' is not a space and an escaped '/' stays inside the segment. */
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1+9001/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1%2F9001/drain"), 404);
}

static void test_drain_not_found(void **state)
{
	struct fix *f = *state;

	assert_int_equal(route(f, "POST", "/services/nope/backends/127.0.0.1:9001/drain"), 404);
	assert_string_equal(f->rep.content_type, "application/json");
	assert_string_equal(body(f), "{\"error\":\"unknown service \\\"nope\\\"\"}\n");
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9999/drain"), 404);
	assert_string_equal(body(f), "{\"error\":\"unknown backend \\\"127.0.0.1:9999\\\" in "
	                             "service \\\"web\\\"\"}\n");
	/* a backend of another service */
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:9003/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/feed/backends/127.0.0.1:9004/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/WEB/backends/127.0.0.1:9001/drain"), 404);
	assert_int_equal(route(f, "POST", "/services//backends/127.0.0.1:9001/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/web/backends//drain"), 404);
	/* a prefix or an extension of an address is not the address */
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:900/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/web/backends/127.0.0.1:90011/drain"), 404);
	assert_int_equal(route(f, "POST", "/services/we/backends/127.0.0.1:9001/drain"), 404);
	/* hostile bytes in the echoed name stay valid JSON */
	assert_int_equal(route(f, "POST", "/services/%22%5C%0A%FF/backends/x/drain"), 404);
	assert_string_equal(body(f),
	                    "{\"error\":\"unknown service \\\"\\\"\\\\\\n\\ufffd\\\"\"}\n");
	for (size_t s = 0; s < f->sh->n_svcs; s++)
		for (size_t b = 0; b < f->sh->svcs[s].n_backends; b++)
			assert_false(atomic_load(&f->sh->svcs[s].backends[b]->lb.drained));
}

static void test_drain_methods(void **state)
{
	struct fix *f = *state;
	static const char *const methods[] = {"GET", "HEAD", "PUT", "DELETE", "post", "OPTIONS"};

	for (size_t i = 0; i < N_OF(methods); i++) {
		assert_int_equal(
		    route(f, methods[i], "/services/web/backends/127.0.0.1:9001/drain"), 405);
		assert_string_equal(f->rep.allow, "POST");
		assert_int_equal(
		    route(f, methods[i], "/services/web/backends/127.0.0.1%3A9001/enable"), 405);
	}
	assert_false(atomic_load(&f->web->backends[0]->lb.drained));
}

static void test_unknown_paths(void **state)
{
	struct fix *f = *state;
	static const char *const urls[] = {
	    "/",
	    "/metric",
	    "/metrics/",
	    "/metricsx",
	    "//metrics",
	    "/METRICS",
	    "/status/",
	    "/services",
	    "/services/web",
	    "/services/web/backends",
	    "/services/web/backends/127.0.0.1:9001",
	    "/services/web/backends/127.0.0.1:9001/",
	    "/services/web/backends/127.0.0.1:9001/drain/",
	    "/services/web/backends/127.0.0.1:9001/drain/x",
	    "/services/web/backends/127.0.0.1:9001/restart",
	    "/services/web/backend/127.0.0.1:9001/drain",
	    "/service/web/backends/127.0.0.1:9001/drain",
	    "/x/services/web/backends/127.0.0.1:9001/drain",
	    "/services/web/backends/127.0.0.1/9001/drain",
	    "/%6Detrics",
	};

	for (size_t i = 0; i < N_OF(urls); i++) {
		int st = route(f, "POST", urls[i]);
		if (st != 404)
			fail_msg("POST %s: %d", urls[i], st);
		assert_int_equal(route(f, "GET", urls[i]), 404);
		assert_string_equal(f->rep.content_type, "application/json");
		assert_string_equal(body(f), "{\"error\":\"not found\"}\n");
	}
}

static void test_bad_requests(void **state)
{
	struct fix *f = *state;
	static const char *const urls[] = {
	    "/services/web/backends/127.0.0.1%3/drain",
	    "/services/web/backends/127.0.0.1%/drain",
	    "/services/web/backends/%zz/drain",
	    "/services/web/backends/%g0/drain",
	    "/services/web/backends/%0g/drain",
	    "/services/web/backends/%00/drain",
	    "/services/web/backends/127.0.0.1:9001%/drain",
	    "/services/%/backends/127.0.0.1:9001/drain",
	    "/services/w%2/backends/127.0.0.1:9001/drain",
	    "/services/web%00/backends/127.0.0.1:9001/drain",
	};

	for (size_t i = 0; i < N_OF(urls); i++) {
		int st = route(f, "POST", urls[i]);
		if (st != 400)
			fail_msg("POST %s: %d", urls[i], st);
		assert_string_equal(f->rep.content_type, "application/json");
	}
	assert_int_equal(route(f, "GET", ""), 400);
	assert_int_equal(route(f, "GET", "*"), 400);
	assert_int_equal(route(f, "GET", "metrics"), 400);
	assert_int_equal(route(f, "GET", "http://127.0.0.1/metrics"), 400);
	assert_int_equal(route(f, "GET", "?/metrics"), 400);
	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(f->sh, NULL, "/metrics", &f->rep), 0);
	assert_int_equal(f->rep.status, 400);
	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(f->sh, "GET", NULL, &f->rep), 0);
	assert_int_equal(f->rep.status, 400);
	assert_false(atomic_load(&f->web->backends[0]->lb.drained));
}

static void test_no_generation(void **state)
{
	struct fix *f = *state;

	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(NULL, "GET", "/metrics", &f->rep), 0);
	assert_int_equal(f->rep.status, 503);
	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(NULL, "POST", "/services/web/backends/x/drain", &f->rep), 0);
	assert_int_equal(f->rep.status, 503);
	admin_reply_free(&f->rep);
	assert_int_equal(admin_route(NULL, "GET", "/nope", &f->rep), 0);
	assert_int_equal(f->rep.status, 404);
}

/* --- long, hostile and random targets ----------------------------------------- */

static char *repeat(const char *prefix, const char *unit, size_t times, const char *suffix)
{
	size_t pl = strlen(prefix), ul = strlen(unit), sl = strlen(suffix);
	char *s = malloc(pl + ul * times + sl + 1);
	assert_non_null(s);
	memcpy(s, prefix, pl);
	for (size_t i = 0; i < times; i++)
		memcpy(s + pl + i * ul, unit, ul);
	memcpy(s + pl + ul * times, suffix, sl + 1);
	return s;
}

static void test_long_urls(void **state)
{
	struct fix *f = *state;
	static const struct {
		const char *prefix, *unit, *suffix;
		int status;
	} cases[] = {
	    {"", "/", "", 404},
	    {"/metrics", "/", "", 404},
	    {"/services/", "a", "/backends/x/drain", 404},
	    {"/services/web/backends/", "%41", "/drain", 404},
	    {"/services/web/backends/", "%4", "/drain", 400},
	    {"/services/web/backends/", "%", "/drain", 400},
	    {"/services/web/backends/", "\"\\\n\xff", "/drain", 404},
	    {"/services/web/backends/", "x/", "drain", 404},
	    {"/metrics?", "&a=b", "", 200},
	    {"", "%", "", 400},
	};

	for (size_t i = 0; i < N_OF(cases); i++) {
		char *url = repeat(cases[i].prefix, cases[i].unit, 1u << 18, cases[i].suffix);
		int st = route(f, "POST", url);
		if (cases[i].status == 200)
			st = route(f, "GET", url);
		if (st != cases[i].status)
			fail_msg("case %zu: %d, want %d", i, st, cases[i].status);
		/* echoed names are cut short */
		assert_true(f->rep.len < 1024 || st == 200);
		free(url);
	}
}

/* Random targets from an alphabet rich in the router's own tokens; every
 * answer must be one of the known statuses with a well-formed error body,
 * and no drain may happen except through a well-formed POST. */
static void test_random_targets(void **state)
{
	struct fix *f = *state;
	static const char *const tokens[] = {
	    "/",   "/",       "/",         "services", "backends", "drain", "enable", "web",
	    "api", "feed",    "127.0.0.1", ":",        "%3A",      "%3a",   "9001",   "%",
	    "%5B", "%5D",     "[",         "]",        "::1",      "%00",   "%zz",    "?",
	    "#",   "metrics", "status",    "\xff",     "\"",       "\\",    "\n",     "%2F",
	    "%25", "+",       "%4",        "a",        "",
	};
	static const char *const methods[] = {"GET", "POST", "HEAD", "PUT", "", "POSTX"};
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	char url[512];

	for (int iter = 0; iter < 50000; iter++) {
		size_t len = 0;
		int ntok = 1 + (int)(rng % 12);
		for (int k = 0; k < ntok; k++) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			const char *t = tokens[rng % N_OF(tokens)];
			size_t tl = strlen(t);
			if (len + tl + 1 > sizeof(url))
				break;
			memcpy(url + len, t, tl);
			len += tl;
		}
		url[len] = '\0';
		rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
		const char *m = methods[rng % N_OF(methods)];
		int st = route(f, m, url);
		assert_true(st == 200 || st == 400 || st == 404 || st == 405);
		if (st != 200) {
			assert_string_equal(f->rep.content_type, "application/json");
			assert_true(strncmp(body(f), "{\"error\":\"", 10) == 0);
			assert_true(f->rep.len >= 13 &&
			            strcmp(body(f) + f->rep.len - 3, "\"}\n") == 0);
		} else if (strcmp(m, "POST") == 0) {
			/* a drain or enable went through: the body names the backend */
			assert_true(strncmp(body(f), "{\"address\":\"", 12) == 0);
		}
	}
}

/* --- the HTTP layer ------------------------------------------------------------ */

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

/* A loopback port that was free a moment ago. */
static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = loopback(0);
	socklen_t len = sizeof(sin);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

/* Sends one raw HTTP/1.0 request and returns the whole response (malloc'd). */
static char *http(uint16_t port, const char *request)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = loopback(port);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 5000), 1);
		if (len + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

static void test_http_layer(void **state)
{
	struct fix *f = *state;
	uint16_t port = free_port();
	struct sockaddr_in sin = loopback(port);
	struct admin *a = NULL;
	char err[256] = "";

	atomic_store(&f->web->st->ctr.connections_total, 31);
	int rc = admin_start(&a, (struct sockaddr *)&sin, sizeof(sin), f->sh, err, sizeof(err));
	if (rc)
		fail_msg("admin_start: %s", err);
	assert_non_null(a);

	char *r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_non_null(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(r, "\r\n\r\n# HELP ferry_connections_total "));
	assert_non_null(strstr(r, "\nferry_connections_total{service=\"web\"} 31\n"));
	free(r);

	r = http(port, "GET /status HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_non_null(strstr(r, "Content-Type: application/json\r\n"));
	assert_non_null(strstr(r, "\r\n\r\n{\"services\":[{\"name\":\"web\""));
	free(r);

	/* The escapes reach the router undecoded, and a body is ignored. */
	r = http(port, "POST /services/web/backends/%5B%3A%3A1%5D%3A9001/drain HTTP/1.0\r\n"
	               "Content-Length: 5\r\n\r\nhello");
	assert_true(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_non_null(strstr(r, "\r\n\r\n{\"address\":\"[::1]:9001\",\"state\":\"drain\""));
	assert_true(atomic_load(&f->web->backends[2]->lb.drained));
	free(r);

	r = http(port, "POST /services/web/backends/%25zz/drain HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 404 ", 13) == 0);
	free(r);
	r = http(port, "POST /services/web/backends/%zz/drain HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 400 ", 13) == 0);
	free(r);

	r = http(port, "GET /services/web/backends/127.0.0.1%3A9001/drain HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 405 ", 13) == 0);
	assert_non_null(strstr(r, "\r\nAllow: POST\r\n"));
	free(r);

	r = http(port, "GET /nope HTTP/1.0\r\n\r\n");
	assert_true(strncmp(r, "HTTP/1.1 404 ", 13) == 0);
	assert_non_null(strstr(r, "{\"error\":\"not found\"}"));
	free(r);

	/* The port is taken now: the error names the address and the reason. */
	struct admin *b = NULL;
	assert_int_equal(
	    admin_start(&b, (struct sockaddr *)&sin, sizeof(sin), NULL, err, sizeof(err)),
	    -EADDRINUSE);
	assert_null(b);
	char want[128];
	snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%u (admin): bind: ", port);
	assert_true(strncmp(err, want, strlen(want)) == 0);
	assert_non_null(strstr(err, strerror(EADDRINUSE)));

	admin_stop(a);
	/* Stopped: the socket is closed, the port can be bound again. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(fd);
	assert_int_equal(
	    admin_start(&a, (struct sockaddr *)&sin, sizeof(sin), NULL, err, sizeof(err)), 0);
	admin_stop(a);
	admin_stop(NULL);
}

static void test_start_errors(void **state)
{
	(void)state;
	struct admin *a = (struct admin *)&a;
	char err[256];

	/* not a local address */
	struct sockaddr_in sin = loopback(9);
	sin.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
	assert_int_equal(
	    admin_start(&a, (struct sockaddr *)&sin, sizeof(sin), NULL, err, sizeof(err)),
	    -EADDRNOTAVAIL);
	assert_null(a);
	assert_true(strncmp(err, "cannot listen on 192.0.2.1:9 (admin): bind: ", 44) == 0);

	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
	inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
	assert_int_equal(
	    admin_start(&a, (struct sockaddr *)&sin6, sizeof(sin6), NULL, err, sizeof(err)),
	    -EADDRNOTAVAIL);
	assert_true(strncmp(err, "cannot listen on [2001:db8::1]:9 (admin): bind: ", 48) == 0);

	struct sockaddr sa = {.sa_family = AF_UNIX};
	assert_int_equal(admin_start(&a, &sa, sizeof(sa), NULL, err, sizeof(err)), -EAFNOSUPPORT);
	assert_int_equal(admin_start(&a, NULL, 0, NULL, err, sizeof(err)), -EAFNOSUPPORT);
	assert_int_equal(
	    admin_start(&a, (struct sockaddr *)&sin, sizeof(sin) - 1, NULL, err, sizeof(err)),
	    -EAFNOSUPPORT);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fix_setup, fix_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_metrics_families),
	    T(test_metrics_values),
	    T(test_metrics_zero_reasons_and_scopes),
	    T(test_metrics_drained_backend_still_up),
	    T(test_metrics_label_escaping),
	    T(test_metrics_head_and_query),
	    T(test_status_document),
	    T(test_status_json_escaping),
	    T(test_status_methods),
	    T(test_drain_enable),
	    T(test_drain_encoded_addresses),
	    T(test_drain_not_found),
	    T(test_drain_methods),
	    T(test_unknown_paths),
	    T(test_bad_requests),
	    T(test_no_generation),
	    T(test_long_urls),
	    T(test_random_targets),
	    T(test_http_layer),
	    cmocka_unit_test(test_start_errors),
	};

	log_setup(LOG_WARN, LOG_TEXT); /* drain/enable log at info */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
