/* fuzz_config.c - the configuration loader (src/config/config.c and parse.c
 * under it, libyaml below): config_load_string() on any bytes.
 *
 * Input: the contents of a ferry.yaml, as is (not NUL-terminated: the loader
 * takes a length).
 *
 * Properties checked besides memory safety (ASan, leaks included) and UB:
 *   - the result is 0 with a config and an empty message, or -1 with no
 *     config and one message "fuzz.yaml:..." without a trailing newline;
 *   - a config that loads obeys what the loader promises its users: at least
 *     one service, names valid and unique, a proxy service has listen
 *     addresses and backends with weights 1..256, a fan-out service has an
 *     input and an output, every string is set, the values of ranged keys
 *     are within their ranges, CIDR prefixes fit their family, and every
 *     numeric address formats and parses back to the same socket address
 *     (a host name, allowed in every address, keeps its text).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

#include "config/config.h"
#include "config/parse.h"
#include "fuzz.h"

#define FUZZ_FILE "fuzz.yaml"

static void check_name(const char *s)
{
	if (!s || !*s)
		fuzz_fail("empty service name");
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '-'))
			fuzz_fail("service name with byte 0x%02x", (unsigned char)*s);
}

/* A numeric address formats and parses back to itself; a host name keeps
 * its text. */
static void check_addr(const struct cfg_addr *a, const char *what)
{
	char text[ADDR_STRLEN];
	struct sockaddr_storage ss;
	socklen_t len = 0;
	bool wild = false;

	if (!a->text)
		fuzz_fail("%s: address without text", what);
	if (a->salen == 0) {
		if (!*a->text || !strchr(a->text, ':'))
			fuzz_fail("%s: host name \"%s\" without a port", what, a->text);
		return;
	}
	if (a->sa.ss_family != AF_INET && a->sa.ss_family != AF_INET6)
		fuzz_fail("%s: family %d", what, a->sa.ss_family);
	if (a->wildcard)
		return; /* ":port" formats as "[::]:port", which is not a wildcard */
	addr_format((const struct sockaddr *)&a->sa, text, sizeof(text));
	memset(&ss, 0, sizeof(ss));
	if (parse_address(text, &ss, &len, &wild) != 0 || len != a->salen || wild ||
	    memcmp(&ss, &a->sa, len) != 0)
		fuzz_fail("%s: \"%s\" formats as \"%s\", which parses differently", what, a->text,
		          text);
}

static void check_addrs(const struct cfg_addr *a, size_t n, const char *what)
{
	if (n && !a)
		fuzz_fail("%s: %zu addresses, no array", what, n);
	for (size_t i = 0; i < n; i++)
		check_addr(&a[i], what);
}

static void check_cidrs(const struct cidr *c, size_t n, const char *what)
{
	if (n && !c)
		fuzz_fail("%s: %zu CIDRs, no array", what, n);
	for (size_t i = 0; i < n; i++) {
		unsigned max = c[i].family == AF_INET ? 32 : c[i].family == AF_INET6 ? 128 : 0;

		if (max == 0 || c[i].prefix > max)
			fuzz_fail("%s: CIDR family %d prefix %u", what, c[i].family, c[i].prefix);
	}
}

static void check_role(const struct cfg_role *r, const char *what)
{
	check_cidrs(r->from, r->n_from, what);
	check_addrs(r->listen, r->n_listen, what);
	check_addrs(r->connect, r->n_connect, what);
}

static void check_service(const struct cfg_service *s)
{
	check_name(s->name);
	check_addrs(s->listen, s->n_listen, "listen");
	check_cidrs(s->allow, s->n_allow, "allow");
	check_cidrs(s->deny, s->n_deny, "deny");
	if (s->mode == MODE_PROXY) {
		if (s->n_listen == 0 || s->n_backends == 0)
			fuzz_fail("proxy service %s: %zu listen, %zu backends", s->name,
			          s->n_listen, s->n_backends);
		for (size_t i = 0; i < s->n_backends; i++) {
			check_addr(&s->backends[i].addr, "backend");
			if (s->backends[i].weight < 1 || s->backends[i].weight > 256)
				fuzz_fail("backend weight %u", s->backends[i].weight);
		}
		for (size_t i = 0; i < s->n_mirrors; i++) {
			const struct cfg_mirror *m = &s->mirrors[i];

			check_addr(&m->addr, "mirror");
			if (m->sample < 1 || m->sample > 100 || m->max_lag < 1)
				fuzz_fail("mirror sample %u max_lag %llu", m->sample,
				          (unsigned long long)m->max_lag);
		}
		if (s->connect_timeout_ms < 1 || s->idle_timeout_ms < 1 || s->retries > 100)
			fuzz_fail("proxy timeouts/retries out of range");
		const struct cfg_health *h = &s->health;

		if (!h->send || !h->expect)
			fuzz_fail("health strings not set");
		if (h->enabled && (h->interval_ms < 1 || h->timeout_ms < 1 || h->rise < 1 ||
		                   h->rise > 100 || h->fall < 1 || h->fall > 100))
			fuzz_fail("health check values out of range");
	} else if (s->mode == MODE_FANOUT) {
		if (s->n_backends || s->n_mirrors)
			fuzz_fail("fan-out service %s with backends or mirrors", s->name);
		if (s->inputs.n_from + s->inputs.n_listen + s->inputs.n_connect == 0 ||
		    s->outputs.n_from + s->outputs.n_listen + s->outputs.n_connect == 0)
			fuzz_fail("fan-out service %s without an input or an output", s->name);
		if (s->max_line < 1 || s->out_max_lag < 1)
			fuzz_fail("fan-out max_line/max_lag out of range");
		if (s->out_on_lag == LAG_DROP && s->framing != FRAMING_LINE)
			fuzz_fail("on_lag: drop without line framing");
		check_role(&s->inputs, "inputs");
		check_role(&s->outputs, "outputs");
	} else {
		fuzz_fail("service mode %d", (int)s->mode);
	}
}

static void check_config(const struct config *cfg)
{
	if (!cfg->path || strcmp(cfg->path, FUZZ_FILE) != 0)
		fuzz_fail("config path not kept");
	if (!cfg->user || !cfg->group)
		fuzz_fail("user/group not set");
	if (cfg->workers > 1024 || cfg->max_connections < 1 || cfg->buffer_size < 1024 ||
	    cfg->buffer_size > 16u << 20 || cfg->resolve_interval_ms < 100)
		fuzz_fail("top-level value out of range");
	if (cfg->admin.enabled)
		check_addr(&cfg->admin.listen, "admin.listen");
	if (cfg->n_services == 0 || !cfg->services)
		fuzz_fail("a config without services");
	for (size_t i = 0; i < cfg->n_services; i++) {
		check_service(&cfg->services[i]);
		for (size_t j = 0; j < i; j++)
			if (strcmp(cfg->services[i].name, cfg->services[j].name) == 0)
				fuzz_fail("service name %s twice", cfg->services[i].name);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = (struct config *)&cfg; /* must be overwritten */
	char err[512];
	int saved = errno = 1234;

	memset(err, 'x', sizeof(err));
	int rc = config_load_string((const char *)data, size, FUZZ_FILE, &cfg, err, sizeof(err));

	if (errno != saved)
		fuzz_fail("errno changed to %d", errno);
	if (!memchr(err, '\0', sizeof(err)))
		fuzz_fail("message not terminated");
	if (rc == 0) {
		if (!cfg)
			fuzz_fail("success without a config");
		if (err[0])
			fuzz_fail("success with a message: %s", err);
		check_config(cfg);
		config_free(cfg);
		return 0;
	}
	if (rc != -1)
		fuzz_fail("config_load_string returned %d", rc);
	if (cfg)
		fuzz_fail("failure with a config");
	size_t n = strlen(err);

	if (n == 0 || strncmp(err, FUZZ_FILE ":", sizeof(FUZZ_FILE)) != 0)
		fuzz_fail("message without the file name: \"%s\"", err);
	/* (A message cut at the buffer's end may end with a quoted value's
	 * newline.) */
	if (err[n - 1] == '\n' && n < sizeof(err) - 1)
		fuzz_fail("message ends with a newline: \"%s\"", err);
	return 0;
}
