/* test_config.c - unit tests for the configuration loader (src/config/config.c):
 * good files and their values, every kind of error with its exact message
 * (file:line:col, key path, what was expected), the keys that are "not
 * supported yet", the command line's quick mode and the file entry point.
 *
 * Error cases are one table; each row runs as its own cmocka test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The smallest valid service, lines 1-5 of most error cases below. */
#define BASE                                                                                       \
	"services:\n"                                                                              \
	"  - name: web\n"                                                                          \
	"    listen: [\"127.0.0.1:8080\"]\n"                                                       \
	"    backends:\n"                                                                          \
	"      - address: 127.0.0.1:9001\n"

static struct config *load_ok(const char *yaml)
{
	char err[512] = "";
	struct config *cfg = NULL;
	int rc = config_load_string(yaml, strlen(yaml), "ferry.yaml", &cfg, err, sizeof(err));

	if (rc != 0)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(cfg);
	return cfg;
}

static void load_fails(const char *yaml, const char *want)
{
	char err[512] = "";
	struct config *cfg = (struct config *)&err; /* must be reset to NULL */
	int rc = config_load_string(yaml, strlen(yaml), "ferry.yaml", &cfg, err, sizeof(err));

	assert_int_equal(rc, -1);
	assert_null(cfg);
	assert_string_equal(err, want);
}

static uint16_t port_of(const struct cfg_addr *a)
{
	if (a->sa.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

/* ------------------------------------------------------------------------
 * Good files
 */

static void test_minimal_defaults(void **state)
{
	struct config *cfg = load_ok(BASE);
	struct cfg_service *s;

	(void)state;
	assert_string_equal(cfg->path, "ferry.yaml");
	assert_int_equal(cfg->engine, ENGINE_AUTO);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->buffer_size, 16 * 1024);
	assert_int_equal(cfg->shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->resolve_interval_ms, 30000);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->group, "");
	assert_int_equal(cfg->log.level, LOG_INFO);
	assert_int_equal(cfg->log.format, LOG_TEXT);
	assert_true(cfg->log.access);
	assert_int_equal(cfg->log.access_interval_ms, 0);
	assert_false(cfg->admin.enabled);

	assert_int_equal(cfg->n_services, 1);
	s = &cfg->services[0];
	assert_string_equal(s->name, "web");
	assert_int_equal(s->mode, MODE_PROXY);
	assert_int_equal(s->n_listen, 1);
	assert_string_equal(s->listen[0].text, "127.0.0.1:8080");
	assert_int_equal(s->listen[0].sa.ss_family, AF_INET);
	assert_int_equal(s->listen[0].salen, sizeof(struct sockaddr_in));
	assert_false(s->listen[0].wildcard);
	assert_int_equal(port_of(&s->listen[0]), 8080);
	assert_int_equal(s->bind_timeout_ms, 0);
	assert_int_equal(s->max_connections, 0);
	assert_int_equal(s->queue_timeout_ms, 0);
	assert_int_equal(s->n_allow, 0);
	assert_int_equal(s->n_deny, 0);
	assert_false(s->accept_proxy_protocol);
	assert_int_equal(s->balance, BAL_LEAST_CONN);
	assert_int_equal(s->n_backends, 1);
	assert_string_equal(s->backends[0].addr.text, "127.0.0.1:9001");
	assert_int_equal(port_of(&s->backends[0].addr), 9001);
	assert_int_equal(s->backends[0].weight, 1);
	assert_int_equal(s->backends[0].max_connections, 0);
	assert_int_equal(s->connect_timeout_ms, 2000);
	assert_int_equal(s->idle_timeout_ms, 5 * 60 * 1000);
	assert_int_equal(s->retries, 2);
	assert_int_equal(s->proxy_protocol, PP_NONE);
	assert_false(s->health.enabled);
	assert_int_equal(s->health.interval_ms, 2000);
	assert_int_equal(s->health.timeout_ms, 1000);
	assert_int_equal(s->health.rise, 2);
	assert_int_equal(s->health.fall, 3);
	assert_non_null(s->health.send);
	assert_int_equal(s->health.send_len, 0);
	assert_non_null(s->health.expect);
	assert_int_equal(s->health.expect_len, 0);
	assert_int_equal(s->n_mirrors, 0);
	/* Fan-out keys keep their defaults in a proxy service too. */
	assert_int_equal(s->framing, FRAMING_RAW);
	assert_int_equal(s->max_line, 64 * 1024);
	assert_int_equal(s->out_on_lag, LAG_DISCONNECT);
	assert_int_equal(s->out_max_lag, 4 * 1024 * 1024);
	config_free(cfg);
}

/* Every key of SPEC section 2 that this version supports, none at its
 * default. */
static const char full_yaml[] = "# every supported key\n"
                                "engine: epoll\n"
                                "workers: 1\n"
                                "max_connections: 500\n"
                                "buffer_size: 64KiB\n"
                                "shutdown_timeout: 250ms\n"
                                "resolve_interval: 1h\n"
                                "user: \"\"\n"
                                "group: ''\n"
                                "log:\n"
                                "  level: debug\n"
                                "  format: json\n"
                                "  access: false\n"
                                "  access_interval: 5m\n"
                                "services:\n"
                                "  - name: web_1\n"
                                "    mode: proxy\n"
                                "    listen: [\"127.0.0.1:8080\", \"[::1]:8080\", \":8081\"]\n"
                                "    bind_timeout: 3s\n"
                                "    max_connections: 100\n"
                                "    queue_timeout: 500ms\n"
                                "    allow: [\"10.0.0.0/8\", \"::1\"]\n"
                                "    deny:\n"
                                "      - 10.6.6.0/24\n"
                                "    accept_proxy_protocol: false\n"
                                "    balance: source_hash\n"
                                "    backends:\n"
                                "      - address: 127.0.0.1:9001\n"
                                "        weight: 256\n"
                                "        max_connections: 7\n"
                                "      - address: \"[::1]:9002\"\n"
                                "    connect_timeout: 1500ms\n"
                                "    idle_timeout: 2h\n"
                                "    retries: 0\n"
                                "    proxy_protocol: none\n"
                                "    mirrors: []\n"
                                "  - name: db-2\n"
                                "    listen: [\"0.0.0.0:5432\"]\n"
                                "    balance: round_robin\n"
                                "    backends: [{address: \"10.0.0.1:5432\", weight: 3}]\n";

static void test_full_file(void **state)
{
	struct config *cfg = load_ok(full_yaml);
	struct cfg_service *s;
	struct sockaddr_in6 *sin6;

	(void)state;
	assert_int_equal(cfg->engine, ENGINE_EPOLL);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->max_connections, 500);
	assert_int_equal(cfg->buffer_size, 64 * 1024);
	assert_int_equal(cfg->shutdown_timeout_ms, 250);
	assert_int_equal(cfg->resolve_interval_ms, 3600 * 1000);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->group, "");
	assert_int_equal(cfg->log.level, LOG_DEBUG);
	assert_int_equal(cfg->log.format, LOG_JSON);
	assert_false(cfg->log.access);
	assert_int_equal(cfg->log.access_interval_ms, 300000);
	assert_int_equal(cfg->n_services, 2);

	s = &cfg->services[0];
	assert_string_equal(s->name, "web_1");
	assert_int_equal(s->mode, MODE_PROXY);
	assert_int_equal(s->n_listen, 3);
	assert_int_equal(s->listen[1].sa.ss_family, AF_INET6);
	assert_string_equal(s->listen[1].text, "[::1]:8080");
	assert_true(s->listen[2].wildcard);
	assert_int_equal(s->listen[2].sa.ss_family, AF_INET6);
	sin6 = (struct sockaddr_in6 *)&s->listen[2].sa;
	assert_memory_equal(&sin6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
	assert_int_equal(port_of(&s->listen[2]), 8081);
	assert_int_equal(s->bind_timeout_ms, 3000);
	assert_int_equal(s->max_connections, 100);
	assert_int_equal(s->queue_timeout_ms, 500);
	assert_int_equal(s->n_allow, 2);
	assert_int_equal(s->allow[0].family, AF_INET);
	assert_int_equal(s->allow[0].prefix, 8);
	assert_int_equal(s->allow[1].family, AF_INET6);
	assert_int_equal(s->allow[1].prefix, 128);
	assert_int_equal(s->n_deny, 1);
	assert_int_equal(s->deny[0].prefix, 24);
	assert_false(s->accept_proxy_protocol);
	assert_int_equal(s->balance, BAL_SOURCE_HASH);
	assert_int_equal(s->n_backends, 2);
	assert_int_equal(s->backends[0].weight, 256);
	assert_int_equal(s->backends[0].max_connections, 7);
	assert_string_equal(s->backends[1].addr.text, "[::1]:9002");
	assert_int_equal(s->backends[1].weight, 1);
	assert_int_equal(s->connect_timeout_ms, 1500);
	assert_int_equal(s->idle_timeout_ms, 2 * 3600 * 1000);
	assert_int_equal(s->retries, 0);
	assert_int_equal(s->proxy_protocol, PP_NONE);
	assert_int_equal(s->n_mirrors, 0);

	s = &cfg->services[1];
	assert_string_equal(s->name, "db-2");
	assert_int_equal(s->balance, BAL_ROUND_ROBIN);
	assert_int_equal(s->n_backends, 1);
	assert_int_equal(s->backends[0].weight, 3);
	assert_string_equal(s->backends[0].addr.text, "10.0.0.1:5432");
	config_free(cfg);
}

static void test_null_and_empty_values(void **state)
{
	struct config *cfg = load_ok("log:\n"
	                             "user:\n"
	                             "group: ~\n" BASE "    allow:\n"
	                             "    deny: []\n"
	                             "    mirrors:\n");
	(void)state;
	assert_int_equal(cfg->log.level, LOG_INFO);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->group, "");
	assert_int_equal(cfg->services[0].n_allow, 0);
	assert_int_equal(cfg->services[0].n_deny, 0);
	assert_int_equal(cfg->services[0].n_mirrors, 0);
	config_free(cfg);
}

static void test_yaml_flavours(void **state)
{
	/* Quoted numbers, flow mappings, anchors and aliases, explicit
	 * engine auto, CRLF line ends. */
	struct config *cfg =
	    load_ok("engine: auto\r\n"
	            "max_connections: \"42\"\r\n"
	            "services:\r\n"
	            "  - {name: a, listen: [\"127.0.0.1:1\"], backends: &be [{address: "
	            "\"127.0.0.1:2\"}, {address: \"127.0.0.1:3\", weight: 2}]}\r\n"
	            "  - name: b\r\n"
	            "    listen: ['127.0.0.1:4']\r\n"
	            "    backends: *be\r\n");
	(void)state;
	assert_int_equal(cfg->engine, ENGINE_AUTO);
	assert_int_equal(cfg->max_connections, 42);
	assert_int_equal(cfg->n_services, 2);
	assert_int_equal(cfg->services[1].n_backends, 2);
	assert_int_equal(cfg->services[1].backends[1].weight, 2);
	assert_string_equal(cfg->services[1].backends[0].addr.text, "127.0.0.1:2");
	config_free(cfg);
}

static void test_range_edges_accepted(void **state)
{
	struct config *cfg = load_ok("buffer_size: 1KiB\n"
	                             "max_connections: 1\n"
	                             "shutdown_timeout: 0s\n" BASE "        weight: 1\n"
	                             "      - address: 127.0.0.1:9002\n"
	                             "        weight: 256\n"
	                             "    retries: 100\n"
	                             "    connect_timeout: 1ms\n"
	                             "    max_connections: 4294967295\n");
	(void)state;
	assert_int_equal(cfg->buffer_size, 1024);
	assert_int_equal(cfg->max_connections, 1);
	assert_int_equal(cfg->shutdown_timeout_ms, 0);
	assert_int_equal(cfg->services[0].retries, 100);
	assert_int_equal(cfg->services[0].connect_timeout_ms, 1);
	assert_int_equal(cfg->services[0].max_connections, 4294967295u);
	config_free(cfg);

	cfg = load_ok("buffer_size: 16MiB\n" BASE);
	assert_int_equal(cfg->buffer_size, 16 * 1024 * 1024);
	config_free(cfg);
}

static void test_mirrors_values(void **state)
{
	(void)state;
	struct config *cfg =
	    load_ok(BASE "    mirrors:\n      - address: 127.0.0.1:9100\n"
	                 "        on_lag: block\n        sample: 25%\n"
	                 "        max_lag: 1MiB\n      - address: 127.0.0.1:9101\n");
	const struct cfg_service *s = &cfg->services[0];
	assert_int_equal(s->n_mirrors, 2);
	assert_string_equal(s->mirrors[0].addr.text, "127.0.0.1:9100");
	assert_int_equal(s->mirrors[0].on_lag, LAG_BLOCK);
	assert_int_equal(s->mirrors[0].sample, 25);
	assert_int_equal(s->mirrors[0].max_lag, 1024 * 1024);
	assert_int_equal(s->mirrors[1].on_lag, LAG_DISCONNECT);
	assert_int_equal(s->mirrors[1].sample, 100);
	assert_int_equal(s->mirrors[1].max_lag, 4 * 1024 * 1024);
	config_free(cfg);
}

static void test_workers_values(void **state)
{
	(void)state;
	struct config *cfg = load_ok("workers: 4\n" BASE);
	assert_int_equal(cfg->workers, 4);
	config_free(cfg);
	cfg = load_ok("workers: auto\n" BASE);
	assert_int_equal(cfg->workers, 0);
	config_free(cfg);
}

/* A fan-out service with every fan-out key is accepted (it used to be
 * refused as "not supported yet"). */
static void test_fanout_values(void **state)
{
	(void)state;
	struct config *cfg = load_ok(
	    "services:\n  - name: feed\n    mode: fanout\n    listen: [\"127.0.0.1:7000\"]\n"
	    "    framing: line\n    max_line: 1MiB\n"
	    "    inputs:\n      from: [\"127.0.0.1/32\"]\n      listen: []\n      connect: []\n"
	    "    outputs:\n      from: [\"127.0.0.2/32\"]\n      listen: [\"127.0.0.1:7001\"]\n"
	    "      connect: [\"127.0.0.1:7100\"]\n      on_lag: drop\n      max_lag: 4MiB\n");
	const struct cfg_service *s = &cfg->services[0];

	assert_int_equal(s->mode, MODE_FANOUT);
	assert_int_equal(s->framing, FRAMING_LINE);
	assert_int_equal(s->max_line, 1024 * 1024);
	assert_int_equal(s->inputs.n_from, 1);
	assert_int_equal(s->inputs.n_listen, 0);
	assert_int_equal(s->inputs.n_connect, 0);
	assert_int_equal(s->outputs.n_from, 1);
	assert_int_equal(s->outputs.n_listen, 1);
	assert_string_equal(s->outputs.listen[0].text, "127.0.0.1:7001");
	assert_int_equal(s->outputs.n_connect, 1);
	assert_string_equal(s->outputs.connect[0].text, "127.0.0.1:7100");
	assert_int_equal(s->out_on_lag, LAG_DROP);
	assert_int_equal(s->out_max_lag, 4 * 1024 * 1024);
	config_free(cfg);
}

static void test_admin_listen(void **state)
{
	(void)state;
	struct config *cfg = load_ok("admin:\n  listen: 127.0.0.1:9901\n" BASE);
	assert_true(cfg->admin.enabled);
	assert_string_equal(cfg->admin.listen.text, "127.0.0.1:9901");
	config_free(cfg);
}

/* user and group are looked up when the file is loaded; numeric ids
 * need no database entry (a group then gives the user's group). */
static void test_user_group(void **state)
{
	(void)state;
	struct config *cfg = load_ok("user: root\ngroup: root\n" BASE);
	assert_string_equal(cfg->user, "root");
	assert_string_equal(cfg->group, "root");
	config_free(cfg);
	cfg = load_ok("user: nobody\n" BASE);
	assert_string_equal(cfg->user, "nobody");
	assert_string_equal(cfg->group, "");
	config_free(cfg);
	cfg = load_ok("user: 4000000001\ngroup: 4000000002\n" BASE);
	assert_string_equal(cfg->user, "4000000001");
	config_free(cfg);
	cfg = load_ok("group: root\n" BASE);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->group, "root");
	config_free(cfg);
}

static void test_host_name_backends(void **state)
{
	(void)state;
	struct config *cfg = load_ok("services:\n  - name: web\n    listen: [\"127.0.0.1:8080\"]\n"
	                             "    backends:\n      - address: app.internal:9001\n"
	                             "    mirrors:\n      - address: shadow.internal:9100\n");
	const struct cfg_service *s = &cfg->services[0];
	assert_string_equal(s->backends[0].addr.text, "app.internal:9001");
	assert_int_equal(s->backends[0].addr.salen, 0); /* resolved at run time */
	assert_string_equal(s->mirrors[0].addr.text, "shadow.internal:9100");
	config_free(cfg);
}

static void test_load_twice_independent(void **state)
{
	struct config *a = load_ok(BASE);
	struct config *b = load_ok("engine: epoll\n" BASE);

	(void)state;
	assert_int_equal(a->engine, ENGINE_AUTO);
	assert_int_equal(b->engine, ENGINE_EPOLL);
	config_free(a);
	config_free(b);
	config_free(NULL);
}

static void test_message_truncated_safely(void **state)
{
	char err[16];
	struct config *cfg;
	const char *yaml = "engine: [x]\n";

	(void)state;
	memset(err, 'z', sizeof(err));
	assert_int_equal(
	    config_load_string(yaml, strlen(yaml), "ferry.yaml", &cfg, err, sizeof(err)), -1);
	assert_int_equal(strlen(err), sizeof(err) - 1);
	assert_string_equal(err, "ferry.yaml:1:9:");
	/* No buffer at all is fine too. */
	assert_int_equal(config_load_string(yaml, strlen(yaml), "ferry.yaml", &cfg, NULL, 0), -1);
}

static void test_errno_preserved(void **state)
{
	struct config *cfg;
	char err[256];

	(void)state;
	errno = 4242;
	assert_int_equal(config_load_string("x: [", 4, "f", &cfg, err, sizeof(err)), -1);
	assert_int_equal(errno, 4242);
	assert_int_equal(config_load_file("/nonexistent/ferry.yaml", &cfg, err, sizeof(err)), -1);
	assert_int_equal(errno, 4242);
}

/* ------------------------------------------------------------------------
 * The file entry point
 */

static void test_load_file(void **state)
{
	char path[] = "/tmp/ferry-test-XXXXXX";
	char err[512] = "", want[600];
	struct config *cfg = NULL;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, BASE, strlen(BASE)), (ssize_t)strlen(BASE));
	close(fd);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->path, path);
	assert_string_equal(cfg->services[0].name, "web");
	config_free(cfg);

	/* Errors name the file as given. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "engine: foo\n", 12), 12);
	close(fd);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(want, sizeof(want),
	         "%s:1:9: engine: unknown value \"foo\" (expected auto, epoll, io_uring)", path);
	assert_string_equal(err, want);
	unlink(path);
}

static void test_load_file_missing(void **state)
{
	char err[512] = "";
	struct config *cfg = NULL;

	(void)state;
	assert_int_equal(config_load_file("/nonexistent/ferry.yaml", &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	assert_string_equal(err, "/nonexistent/ferry.yaml: cannot open: No such file or directory");

	assert_int_equal(config_load_file("/tmp", &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	assert_string_equal(err, "/tmp: cannot read: Is a directory");
}

/* ------------------------------------------------------------------------
 * Errors: one row per case, each run as its own test
 */

struct err_case {
	const char *name;
	const char *yaml;
	const char *want;
};

static const struct err_case err_cases[] = {
    /* --- unknown keys ----------------------------------------------- */
    {"unknown_top_key", "enigne: epoll\n" BASE,
     "ferry.yaml:1:1: enigne: unknown key (did you mean \"engine\"?)"},
    {"unknown_service_key", BASE "    colour: red\n",
     "ferry.yaml:6:5: services[0].colour: unknown key"},
    {"unknown_backend_key", BASE "        wieght: 2\n",
     "ferry.yaml:6:9: services[0].backends[0].wieght: unknown key (did you mean \"weight\"?)"},
    {"unknown_log_key", "log:\n  levle: debug\n" BASE,
     "ferry.yaml:2:3: log.levle: unknown key (did you mean \"level\"?)"},
    {"duplicate_key", "engine: epoll\nengine: auto\n" BASE,
     "ferry.yaml:2:1: engine: duplicate key"},
    {"key_not_a_name", "? [a]\n: b\n" BASE, "ferry.yaml:1:3: expected a key name, got a list"},

    /* --- wrong types ------------------------------------------------ */
    {"services_not_a_list", "services: {name: web}\n",
     "ferry.yaml:1:11: services: expected a list, got a mapping"},
    {"log_not_a_mapping", "log: info\n" BASE,
     "ferry.yaml:1:6: log: expected a mapping, got a scalar"},
    {"enum_given_a_list", "engine: [epoll]\n" BASE,
     "ferry.yaml:1:9: engine: expected one of auto, epoll, io_uring, got a list"},
    {"listen_not_a_list",
     "services:\n  - name: web\n    listen: 127.0.0.1:8080\n    backends:\n"
     "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:3:13: services[0].listen: expected a list of addresses, got a scalar"},
    {"listen_item_mapping",
     "services:\n  - name: web\n    listen: [{a: 1}]\n    backends:\n"
     "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:3:14: services[0].listen[0]: expected an address, got a mapping"},
    {"backend_not_a_mapping",
     "services:\n  - name: web\n    listen: [\"127.0.0.1:8080\"]\n    backends:\n"
     "      - 127.0.0.1:9001\n",
     "ferry.yaml:5:9: services[0].backends[0]: expected a mapping, got a scalar"},
    {"number_given_a_list", BASE "        weight: [1]\n",
     "ferry.yaml:6:17: services[0].backends[0].weight: expected a number, got a list"},
    {"service_null", "services:\n  -\n",
     "ferry.yaml:2:4: services[0]: expected a mapping, got null"},
    {"missing_value", "engine:\n" BASE,
     "ferry.yaml:1:8: engine: missing value (expected one of auto, epoll, io_uring)"},
    {"top_level_list", "- services\n",
     "ferry.yaml:1:1: expected a mapping of top-level keys, got a list"},

    /* --- enums ------------------------------------------------------ */
    {"bad_balance",
     "# ferry test\n"
     "engine: epoll\n"
     "services:\n"
     "  - name: web\n"
     "    listen: [\"127.0.0.1:8080\"]\n"
     "    backends: [{address: \"127.0.0.1:9001\"}]\n"
     "    balance: leastconn\n",
     "ferry.yaml:7:14: services[0].balance: unknown value \"leastconn\" (expected round_robin, "
     "least_conn, random, source_hash)"},
    {"bad_log_level", "log:\n  level: verbose\n" BASE,
     "ferry.yaml:2:10: log.level: unknown value \"verbose\" (expected debug, info, warn, error)"},
    {"bad_log_format", "log:\n  format: xml\n" BASE,
     "ferry.yaml:2:11: log.format: unknown value \"xml\" (expected text, json)"},
    {"bad_mode", BASE "    mode: lb\n",
     "ferry.yaml:6:11: services[0].mode: unknown value \"lb\" (expected proxy, fanout)"},
    {"bad_proxy_protocol", BASE "    proxy_protocol: v3\n",
     "ferry.yaml:6:21: services[0].proxy_protocol: unknown value \"v3\" (expected none, v1, v2)"},
    {"mirror_on_lag_drop",
     BASE "    mirrors:\n      - address: 127.0.0.1:9100\n        on_lag: drop\n",
     "ferry.yaml:8:17: services[0].mirrors[0].on_lag: unknown value \"drop\" (expected "
     "disconnect, block)"},
    {"bad_boolean", BASE "    accept_proxy_protocol: maybe\n",
     "ferry.yaml:6:28: services[0].accept_proxy_protocol: invalid boolean \"maybe\" (expected "
     "true or false)"},
    {"bad_boolean_yes", "log:\n  access: yes\n" BASE,
     "ferry.yaml:2:11: log.access: invalid boolean \"yes\" (expected true or false)"},

    /* --- durations and sizes ---------------------------------------- */
    {"duration_without_unit", BASE "    connect_timeout: 5\n",
     "ferry.yaml:6:22: services[0].connect_timeout: invalid duration \"5\" (expected a number "
     "with a unit: 250ms, 2s, 5m, 1h)"},
    {"duration_fraction", "shutdown_timeout: 1.5s\n" BASE,
     "ferry.yaml:1:19: shutdown_timeout: invalid duration \"1.5s\" (expected a number with a "
     "unit: 250ms, 2s, 5m, 1h)"},
    {"duration_zero_not_allowed", BASE "    idle_timeout: 0s\n",
     "ferry.yaml:6:19: services[0].idle_timeout: 0s is out of range (expected at least 1ms)"},
    {"duration_over_a_year", "log:\n  access_interval: 9000h\n" BASE,
     "ferry.yaml:2:20: log.access_interval: invalid duration \"9000h\" (expected a number with "
     "a unit: 250ms, 2s, 5m, 1h)"},
    {"bad_size", "buffer_size: 4MB\n" BASE,
     "ferry.yaml:1:14: buffer_size: invalid size \"4MB\" (expected bytes or KiB, MiB, GiB)"},
    {"size_too_small", "buffer_size: 512\n" BASE,
     "ferry.yaml:1:14: buffer_size: 512 is out of range (expected 1KiB..16MiB)"},
    {"size_too_large", "buffer_size: 32MiB\n" BASE,
     "ferry.yaml:1:14: buffer_size: 32MiB is out of range (expected 1KiB..16MiB)"},

    /* --- addresses and CIDRs ---------------------------------------- */
    {"bad_listen_address",
     "services:\n  - name: web\n    listen: [\"x\"]\n    backends:\n"
     "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:3:14: services[0].listen[0]: invalid address \"x\" (expected host:port, "
     "[v6addr]:port or :port)"},
    {"bad_backend_port",
     "services:\n  - name: web\n    listen: [\"127.0.0.1:8080\"]\n    backends:\n"
     "      - address: 127.0.0.1:70000\n",
     "ferry.yaml:5:18: services[0].backends[0].address: invalid address \"127.0.0.1:70000\" "
     "(expected host:port, [v6addr]:port or :port)"},
    {"unbracketed_ipv6", "admin:\n  listen: ::1:9901\n" BASE,
     "ferry.yaml:2:11: admin.listen: invalid address \"::1:9901\" (expected host:port, "
     "[v6addr]:port or :port)"},
    {"bad_cidr", BASE "    allow: [\"10.0.0.0/33\"]\n",
     "ferry.yaml:6:13: services[0].allow[0]: invalid CIDR \"10.0.0.0/33\" (expected "
     "address/prefix, e.g. 10.0.0.0/8 or ::1/128)"},
    {"bad_cidr_second_item", BASE "    deny:\n      - ::1/128\n      - 10.0.0.0/8x\n",
     "ferry.yaml:8:9: services[0].deny[1]: invalid CIDR \"10.0.0.0/8x\" (expected "
     "address/prefix, e.g. 10.0.0.0/8 or ::1/128)"},

    /* --- numbers out of range --------------------------------------- */
    {"weight_zero", BASE "        weight: 0\n",
     "ferry.yaml:6:17: services[0].backends[0].weight: 0 is out of range (expected 1..256)"},
    {"weight_too_big", BASE "        weight: 300\n",
     "ferry.yaml:6:17: services[0].backends[0].weight: 300 is out of range (expected 1..256)"},
    {"weight_not_a_number", BASE "        weight: heavy\n",
     "ferry.yaml:6:17: services[0].backends[0].weight: invalid number \"heavy\" (expected a "
     "whole number)"},
    {"retries_too_many", BASE "    retries: 101\n",
     "ferry.yaml:6:14: services[0].retries: 101 is out of range (expected 0..100)"},
    {"global_max_connections_zero", "max_connections: 0\n" BASE,
     "ferry.yaml:1:18: max_connections: 0 is out of range (expected at least 1)"},
    {"max_connections_negative", "max_connections: -1\n" BASE,
     "ferry.yaml:1:18: max_connections: invalid number \"-1\" (expected a whole number)"},
    {"max_connections_overflow", BASE "    max_connections: 4294967296\n",
     "ferry.yaml:6:22: services[0].max_connections: invalid number \"4294967296\" (expected a "
     "whole number)"},
    {"workers_zero", "workers: 0\n" BASE,
     "ferry.yaml:1:10: workers: 0 is out of range (expected 1..1024 or auto)"},
    {"workers_word", "workers: many\n" BASE,
     "ferry.yaml:1:10: workers: invalid value \"many\" (expected a number of workers or auto)"},
    {"health_rise_zero", BASE "    health_check:\n      rise: 0\n",
     "ferry.yaml:7:13: services[0].health_check.rise: 0 is out of range (expected 1..100)"},
    {"mirror_sample_zero",
     BASE "    mirrors:\n      - address: 127.0.0.1:9100\n        sample: 0%\n",
     "ferry.yaml:8:17: services[0].mirrors[0].sample: invalid percentage \"0%\" (expected "
     "1%..100%)"},
    {"health_send_bad_escape", BASE "    health_check:\n      send: 'PING\\q'\n",
     "ferry.yaml:7:13: services[0].health_check.send: invalid escape \"\\q\" (expected \\r, \\n, "
     "\\t, \\\\ or \\xNN)"},
    {"health_expect_short_hex", BASE "    health_check:\n      expect: 'OK\\x4'\n",
     "ferry.yaml:7:15: services[0].health_check.expect: invalid escape \"\\x4\" (expected \\r, "
     "\\n, \\t, \\\\ or \\xNN)"},

    /* --- services --------------------------------------------------- */
    {"no_services", "engine: epoll\n",
     "ferry.yaml:1:1: services: at least one service is required"},
    {"services_empty", "services: []\n",
     "ferry.yaml:1:11: services: at least one service is required"},
    {"empty_file", "", "ferry.yaml:1:1: services: at least one service is required"},
    {"duplicate_service_name",
     BASE "  - name: web\n    listen: [\"127.0.0.1:8081\"]\n    backends:\n"
          "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:6:11: services[1].name: duplicate service name \"web\" (also services[0])"},
    {"bad_service_name",
     "services:\n  - name: Web\n    listen: [\"127.0.0.1:8080\"]\n    backends:\n"
     "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:2:11: services[0].name: invalid name \"Web\" (expected lowercase letters, "
     "digits, '_' and '-')"},
    {"missing_name",
     "services:\n  - listen: [\"127.0.0.1:8080\"]\n    backends:\n"
     "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:2:5: services[0]: missing required key \"name\""},
    {"missing_backends", "services:\n  - name: web\n    listen: [\"127.0.0.1:8080\"]\n",
     "ferry.yaml:2:5: services[0].backends: a proxy service needs at least one backend"},
    {"empty_backends",
     "services:\n  - name: web\n    listen: [\"127.0.0.1:8080\"]\n    backends: []\n",
     "ferry.yaml:4:15: services[0].backends: a proxy service needs at least one backend"},
    {"missing_listen", "services:\n  - name: web\n    backends:\n      - address: 127.0.0.1:9001\n",
     "ferry.yaml:2:5: services[0].listen: a proxy service needs at least one listen address"},
    {"missing_backend_address", BASE "      - weight: 2\n",
     "ferry.yaml:6:9: services[0].backends[1]: missing required key \"address\""},
    {"duplicate_backend", BASE "      - address: 127.0.0.1:09001\n",
     "ferry.yaml:6:18: services[0].backends[1].address: duplicate backend address "
     "\"127.0.0.1:09001\" (also services[0].backends[0].address)"},
    {"duplicate_listen_across_services",
     BASE "  - name: api\n    listen: [\"127.0.0.1:8080\"]\n    backends:\n"
          "      - address: 127.0.0.1:9001\n",
     "ferry.yaml:7:14: services[1].listen[0]: address \"127.0.0.1:8080\" is already used by "
     "services[0].listen[0]"},
    {"admin_without_listen", "admin: {}\n" BASE,
     "ferry.yaml:1:8: admin: missing required key \"listen\""},

    /* --- proxy-only and fan-out-only keys ---------------------------- */
    {"fanout_key_in_proxy", BASE "    framing: line\n",
     "ferry.yaml:6:5: services[0].framing: only valid with mode: fanout"},
    {"outputs_in_proxy", BASE "    outputs: {}\n",
     "ferry.yaml:6:5: services[0].outputs: only valid with mode: fanout"},
    {"proxy_key_in_fanout_before_mode",
     "services:\n  - name: feed\n    balance: random\n    mode: fanout\n",
     "ferry.yaml:3:5: services[0].balance: only valid with mode: proxy"},
    {"backends_in_fanout", "services:\n  - name: feed\n    mode: fanout\n    backends: []\n",
     "ferry.yaml:4:5: services[0].backends: only valid with mode: proxy"},
    {"fanout_drop_needs_line",
     "services:\n  - name: feed\n    mode: fanout\n    inputs: {listen: [\"127.0.0.1:7000\"]}\n"
     "    outputs:\n      listen: [\"127.0.0.1:7001\"]\n      on_lag: drop\n",
     "ferry.yaml:7:15: services[0].outputs.on_lag: drop needs framing: line (whole records are "
     "dropped)"},
    {"fanout_without_outputs",
     "services:\n  - name: feed\n    mode: fanout\n    inputs: {connect: [\"127.0.0.1:7000\"]}\n",
     "ferry.yaml:2:5: services[0].outputs: a fanout service needs at least one output "
     "(outputs.from, outputs.listen or outputs.connect)"},
    {"fanout_from_without_shared_port",
     "services:\n  - name: feed\n    mode: fanout\n    inputs: {from: [\"127.0.0.1\"]}\n"
     "    outputs: {listen: [\"127.0.0.1:7001\"]}\n",
     "ferry.yaml:4:20: services[0].inputs.from: needs the service's listen addresses (the "
     "shared port)"},

    /* --- YAML itself ------------------------------------------------ */
    {"yaml_unclosed_flow", "services: [\n",
     "ferry.yaml:2:1: YAML syntax error: did not find expected node content"},
    {"yaml_bad_mapping", "engine: epoll: auto\n",
     "ferry.yaml:1:14: YAML syntax error: mapping values are not allowed in this context"},
    {"yaml_tab_indent", "services:\n\t- name: web\n",
     "ferry.yaml:2:1: YAML syntax error: found character that cannot start any token (tabs "
     "cannot indent YAML: use spaces)"},
    {"yaml_unquoted_ipv6_in_flow", "services:\n  - name: web\n    listen: [[::1]:80]\n",
     "ferry.yaml:3:15: YAML syntax error: did not find expected node content"},
    {"yaml_two_documents", BASE "---\nengine: epoll\n",
     "ferry.yaml:6:1: only one YAML document is allowed (found a second one)"},
    {"yaml_bad_utf8", "engine: epoll\nuser: \"\xff\"\n" BASE,
     "ferry.yaml:2:8: YAML syntax error: invalid leading UTF-8 octet"},
    {"yaml_control_character", "engine: epoll\x01\n" BASE,
     "ferry.yaml:1:14: YAML syntax error: control characters are not allowed"},
    {"yaml_undefined_alias", "engine: *nope\n" BASE,
     "ferry.yaml:1:9: YAML syntax error: found undefined alias"},

    /* --- user and group must exist (check_user_group) ------------------ */
    {"unknown_user", "user: ferry-no-such-user\n" BASE,
     "ferry.yaml:1:7: user: no such user \"ferry-no-such-user\" in the user database"},
    {"unknown_group", "user: root\ngroup: ferry-no-such-group\n" BASE,
     "ferry.yaml:2:8: group: no such group \"ferry-no-such-group\" in the group database"},
    {"unknown_group_alone", "engine: epoll\ngroup: \"ferry-no-such-group\"\n" BASE,
     "ferry.yaml:2:8: group: no such group \"ferry-no-such-group\" in the group database"},
    {"numeric_user_needs_group", "user: 4000000001\n" BASE,
     "ferry.yaml:1:7: user: \"4000000001\" is a numeric id without an entry in the user "
     "database, so it has no primary group: set group: as well"},
    {"user_id_out_of_range", "user: 4294967295\ngroup: root\n" BASE,
     "ferry.yaml:1:7: user: no such user \"4294967295\" in the user database"},

    /* --- not supported yet (reject_unsupported) ---------------------- */
    {"fanout_accept_proxy_protocol",
     "services:\n  - name: feed\n    mode: fanout\n    listen: [\"127.0.0.1:7000\"]\n"
     "    accept_proxy_protocol: true\n    inputs:\n      from: [\"127.0.0.1\"]\n"
     "    outputs:\n      from: [\"127.0.0.2\"]\n",
     "ferry.yaml:5:28: services[0].accept_proxy_protocol: accepting PROXY headers in a "
     "fan-out service is not supported yet"},
    {"validation_before_unsupported", "engine: io_uring\n" BASE "        weight: 0\n",
     "ferry.yaml:7:17: services[0].backends[0].weight: 0 is out of range (expected 1..256)"},
};

static void test_error_case(void **state)
{
	const struct err_case *c = *state;

	load_fails(c->yaml, c->want);
}

/* ------------------------------------------------------------------------
 * Defaults and the command line's quick mode
 */

static void test_new_default(void **state)
{
	struct config *cfg = config_new_default();

	(void)state;
	assert_non_null(cfg);
	assert_null(cfg->path);
	assert_int_equal(cfg->engine, ENGINE_AUTO);
	assert_int_equal(cfg->workers, 1);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->buffer_size, 16384);
	assert_int_equal(cfg->shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->resolve_interval_ms, 30000);
	assert_string_equal(cfg->user, "");
	assert_string_equal(cfg->group, "");
	assert_int_equal(cfg->log.level, LOG_INFO);
	assert_int_equal(cfg->log.format, LOG_TEXT);
	assert_true(cfg->log.access);
	assert_false(cfg->admin.enabled);
	assert_int_equal(cfg->n_services, 0);
	config_free(cfg);
}

static void test_cli_service(void **state)
{
	char *listen[] = {":8080", "127.0.0.1:8081"};
	char *backends[] = {"127.0.0.1:9001", "[::1]:9002"};
	char err[256] = "";
	struct config *cfg = config_new_default();
	struct cfg_service *s;

	(void)state;
	assert_int_equal(config_add_cli_service(cfg, "cli", listen, 2, backends, 2, NULL, 0,
	                                        BAL_RANDOM, err, sizeof(err)),
	                 0);
	assert_int_equal(cfg->n_services, 1);
	s = &cfg->services[0];
	assert_string_equal(s->name, "cli");
	assert_int_equal(s->mode, MODE_PROXY);
	assert_int_equal(s->balance, BAL_RANDOM);
	assert_int_equal(s->n_listen, 2);
	assert_true(s->listen[0].wildcard);
	assert_int_equal(port_of(&s->listen[0]), 8080);
	assert_int_equal(s->n_backends, 2);
	assert_string_equal(s->backends[1].addr.text, "[::1]:9002");
	assert_int_equal(s->backends[0].weight, 1);
	assert_int_equal(s->backends[1].weight, 1);
	assert_int_equal(s->connect_timeout_ms, 2000);
	assert_int_equal(s->idle_timeout_ms, 300000);
	assert_int_equal(s->retries, 2);
	assert_int_equal(s->n_mirrors, 0);

	/* A second one with another name is fine; the same name is not. */
	assert_int_equal(config_add_cli_service(cfg, "cli2", listen + 1, 0, backends, 1, NULL, 0,
	                                        BAL_LEAST_CONN, err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "--listen: a proxy service needs at least one listen address");
	assert_int_equal(config_add_cli_service(cfg, "cli", listen + 1, 1, backends, 1, NULL, 0,
	                                        BAL_LEAST_CONN, err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "duplicate service name \"cli\"");
	assert_int_equal(cfg->n_services, 1);
	config_free(cfg);
}

struct cli_case {
	const char *name;
	char *listen[2];
	size_t n_listen;
	char *backends[3];
	size_t n_backends;
	char *mirrors[1];
	size_t n_mirrors;
	const char *want;
};

static const struct cli_case cli_cases[] = {
    {"cli_bad_listen",
     {"x"},
     1,
     {"127.0.0.1:9001"},
     1,
     {NULL},
     0,
     "--listen \"x\": invalid address \"x\" (expected host:port, [v6addr]:port or :port)"},
    {"cli_bad_backend",
     {":8080"},
     1,
     {"127.0.0.1:9001", "x"},
     2,
     {NULL},
     0,
     "--backend \"x\": invalid address \"x\" (expected host:port, [v6addr]:port or :port)"},
    {"cli_no_backend",
     {":8080"},
     1,
     {NULL},
     0,
     {NULL},
     0,
     "--backend: a proxy service needs at least one backend"},
    {"cli_duplicate_backend",
     {":8080"},
     1,
     {"127.0.0.1:9001", "127.0.0.1:9001"},
     2,
     {NULL},
     0,
     "--backend \"127.0.0.1:9001\": duplicate backend address \"127.0.0.1:9001\""},
    {"cli_bad_mirror",
     {":8080"},
     1,
     {"127.0.0.1:9001"},
     1,
     {"nope"},
     1,
     "--mirror \"nope\": invalid address \"nope\" (expected host:port, [v6addr]:port or :port)"},
};

static void test_cli_case(void **state)
{
	const struct cli_case *c = *state;
	struct config *cfg = config_new_default();
	char err[256] = "";

	assert_non_null(cfg);
	assert_int_equal(config_add_cli_service(cfg, "cli", (char **)c->listen, c->n_listen,
	                                        (char **)c->backends, c->n_backends,
	                                        (char **)c->mirrors, c->n_mirrors, BAL_LEAST_CONN,
	                                        err, sizeof(err)),
	                 -1);
	assert_string_equal(err, c->want);
	assert_int_equal(cfg->n_services, 0);
	config_free(cfg);
}

static void test_cli_bad_name(void **state)
{
	char *listen[] = {":8080"}, *backends[] = {"127.0.0.1:9001"};
	struct config *cfg = config_new_default();
	char err[256] = "";

	(void)state;
	assert_int_equal(config_add_cli_service(cfg, "Bad Name", listen, 1, backends, 1, NULL, 0,
	                                        BAL_LEAST_CONN, err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "invalid service name \"Bad Name\" (expected lowercase letters, "
	                         "digits, '_' and '-')");
	config_free(cfg);
}

static void test_enum_names(void **state)
{
	enum balance_alg b;
	enum engine_kind e;
	enum log_level l;
	enum log_format f;

	(void)state;
	assert_string_equal(balance_name(BAL_ROUND_ROBIN), "round_robin");
	assert_string_equal(balance_name(BAL_LEAST_CONN), "least_conn");
	assert_string_equal(balance_name(BAL_RANDOM), "random");
	assert_string_equal(balance_name(BAL_SOURCE_HASH), "source_hash");
	assert_string_equal(engine_name(ENGINE_AUTO), "auto");
	assert_string_equal(engine_name(ENGINE_EPOLL), "epoll");
	assert_string_equal(engine_name(ENGINE_URING), "io_uring");

	assert_int_equal(balance_from_name("source_hash", &b), 0);
	assert_int_equal(b, BAL_SOURCE_HASH);
	assert_int_equal(balance_from_name("leastconn", &b), -EINVAL);
	assert_int_equal(engine_from_name("io_uring", &e), 0);
	assert_int_equal(e, ENGINE_URING);
	assert_int_equal(engine_from_name("uring", &e), -EINVAL);
	assert_int_equal(engine_from_name(NULL, &e), -EINVAL);
	assert_int_equal(log_level_from_name("warn", &l), 0);
	assert_int_equal(l, LOG_WARN);
	assert_int_equal(log_level_from_name("warning", &l), -EINVAL);
	assert_int_equal(log_format_from_name("json", &f), 0);
	assert_int_equal(f, LOG_JSON);
	assert_int_equal(log_format_from_name("JSON", &f), -EINVAL);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
	    cmocka_unit_test(test_minimal_defaults),
	    cmocka_unit_test(test_full_file),
	    cmocka_unit_test(test_null_and_empty_values),
	    cmocka_unit_test(test_yaml_flavours),
	    cmocka_unit_test(test_range_edges_accepted),
	    cmocka_unit_test(test_workers_values),
	    cmocka_unit_test(test_mirrors_values),
	    cmocka_unit_test(test_fanout_values),
	    cmocka_unit_test(test_admin_listen),
	    cmocka_unit_test(test_user_group),
	    cmocka_unit_test(test_host_name_backends),
	    cmocka_unit_test(test_load_twice_independent),
	    cmocka_unit_test(test_message_truncated_safely),
	    cmocka_unit_test(test_errno_preserved),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_load_file_missing),
	    cmocka_unit_test(test_new_default),
	    cmocka_unit_test(test_cli_service),
	    cmocka_unit_test(test_cli_bad_name),
	    cmocka_unit_test(test_enum_names),
	};
	enum { N_FIXED = N_OF(fixed), N_ERR = N_OF(err_cases), N_CLI = N_OF(cli_cases) };
	struct CMUnitTest tests[N_FIXED + N_ERR + N_CLI];
	size_t n = 0;

	for (size_t i = 0; i < N_FIXED; i++)
		tests[n++] = fixed[i];
	for (size_t i = 0; i < N_ERR; i++)
		tests[n++] = (struct CMUnitTest){.name = err_cases[i].name,
		                                 .test_func = test_error_case,
		                                 .initial_state = (void *)&err_cases[i]};
	for (size_t i = 0; i < N_CLI; i++)
		tests[n++] = (struct CMUnitTest){.name = cli_cases[i].name,
		                                 .test_func = test_cli_case,
		                                 .initial_state = (void *)&cli_cases[i]};
	return _cmocka_run_group_tests("config", tests, n, NULL, NULL);
}
