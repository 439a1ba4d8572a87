/* main.c - ferry's command line (SPEC section 1): parse flags, load the
 * configuration, set up the pool, the engine and the relay, run until a
 * signal says stop.
 *
 * Exit status: 0 after a shutdown or a good check, 1 for an invalid
 * configuration or a failed start, 2 for a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "admin/admin.h"
#include "buf/pool.h"
#include "config/config.h"
#include "config/parse.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/privdrop.h"
#include "core/resolve.h"
#include "engine/engine.h"
#include "relay/fanout.h"
#include "relay/health.h"
#include "relay/proxy.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif
#ifndef FERRY_LIBURING_VERSION
#define FERRY_LIBURING_VERSION "unknown"
#endif

#define EXIT_USAGE    2
#define MAX_CLI_ADDRS 64

static const char usage_text[] =
    "usage:\n"
    "  ferry -c FILE                   run with a configuration file (YAML)\n"
    "  ferry -t -c FILE                check the configuration, print \"configuration OK\"\n"
    "  ferry --listen ADDR --backend ADDR [--backend ADDR ...] [--mirror ADDR ...]\n"
    "        [--balance ALG] [--engine ENGINE] [--workers N]\n"
    "                                  run one proxy service (named \"default\") without a file\n"
    "  ferry -h | --help               this help\n"
    "  ferry -V | --version            version, engines, liburing version\n"
    "\n"
    "options (they override the file):\n"
    "  -c, --config FILE               configuration file\n"
    "  -t, --test                      check the configuration and exit\n"
    "  --listen ADDR                   listen address (repeatable): host:port, [v6]:port, :port\n"
    "  --backend ADDR                  backend address (repeatable)\n"
    "  --mirror ADDR                   mirror address (repeatable)\n"
    "  --balance ALG                   round_robin | least_conn | random | source_hash\n"
    "  --engine ENGINE                 auto | epoll | io_uring\n"
    "  --workers N|auto                event-loop threads\n"
    "  --log-level LEVEL               debug | info | warn | error\n"
    "  --log-format FORMAT             text | json\n"
    "  --admin ADDR                    admin HTTP endpoint\n"
    "  --require-unprivileged          refuse to run as root (set user: in the file)\n"
    "\n"
    "exit status: 0 after shutdown or a good check, 1 invalid configuration or failed\n"
    "start, 2 usage error.  Signals: SIGINT/SIGTERM graceful stop (a second one exits\n"
    "at once).\n";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ferry: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'ferry --help' for more information.\n", stderr);
	exit(EXIT_USAGE);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ferry: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_FAILURE);
}

static void print_version(void)
{
	printf("ferry %s\n", FERRY_VERSION);
	printf("engines:");
	for (const struct engine_vt *const *e = engine_list(); *e; e++)
		printf(" %s", (*e)->name);
	printf("\n");
	for (const struct engine_vt *const *e = engine_list(); *e; e++) {
		char why[256];
		(*e)->probe(why, sizeof(why));
		printf("  %s: %s\n", (*e)->name, why);
	}
	printf("liburing: %s\n", FERRY_LIBURING_VERSION);
}

struct cli {
	const char *config;
	bool test;
	char *listen[MAX_CLI_ADDRS], *backend[MAX_CLI_ADDRS], *mirror[MAX_CLI_ADDRS];
	size_t n_listen, n_backend, n_mirror;
	bool has_balance, has_engine, has_workers, has_level, has_format;
	enum balance_alg balance;
	enum engine_kind engine;
	unsigned workers;
	enum log_level level;
	enum log_format format;
	const char *admin;
	bool require_unprivileged;
};

enum {
	OPT_LISTEN = 256,
	OPT_BACKEND,
	OPT_MIRROR,
	OPT_BALANCE,
	OPT_ENGINE,
	OPT_WORKERS,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_ADMIN,
	OPT_REQUIRE_UNPRIVILEGED,
};

static const struct option long_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"test", no_argument, NULL, 't'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"mirror", required_argument, NULL, OPT_MIRROR},
    {"balance", required_argument, NULL, OPT_BALANCE},
    {"engine", required_argument, NULL, OPT_ENGINE},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"admin", required_argument, NULL, OPT_ADMIN},
    {"require-unprivileged", no_argument, NULL, OPT_REQUIRE_UNPRIVILEGED},
    {NULL, 0, NULL, 0},
};

static void add_addr(char **list, size_t *n, const char *flag, char *val)
{
	if (*n >= MAX_CLI_ADDRS)
		usage_error("%s: at most %d addresses", flag, MAX_CLI_ADDRS);
	list[(*n)++] = val;
}

static void parse_cli(int argc, char **argv, struct cli *o)
{
	if (argc < 2)
		usage_error("no arguments: give -c FILE or --listen ADDR --backend ADDR");
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":c:thV", long_opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->config = optarg;
			break;
		case 't':
			o->test = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(EXIT_SUCCESS);
		case 'V':
			print_version();
			exit(EXIT_SUCCESS);
		case OPT_LISTEN:
			add_addr(o->listen, &o->n_listen, "--listen", optarg);
			break;
		case OPT_BACKEND:
			add_addr(o->backend, &o->n_backend, "--backend", optarg);
			break;
		case OPT_MIRROR:
			add_addr(o->mirror, &o->n_mirror, "--mirror", optarg);
			break;
		case OPT_BALANCE:
			if (balance_from_name(optarg, &o->balance) < 0)
				usage_error(
				    "--balance: unknown value \"%s\" (expected round_robin, "
				    "least_conn, random, source_hash)",
				    optarg);
			o->has_balance = true;
			break;
		case OPT_ENGINE:
			if (engine_from_name(optarg, &o->engine) < 0)
				usage_error("--engine: unknown value \"%s\" (expected auto, epoll, "
				            "io_uring)",
				            optarg);
			o->has_engine = true;
			break;
		case OPT_WORKERS: {
			char *end;
			if (strcmp(optarg, "auto") == 0) {
				o->workers = 0;
			} else {
				errno = 0;
				unsigned long v = strtoul(optarg, &end, 10);
				if (errno || *end || end == optarg || v < 1 || v > 1024 ||
				    optarg[0] == '-')
					usage_error(
					    "--workers: invalid value \"%s\" (expected a number "
					    "from 1 to 1024, or auto)",
					    optarg);
				o->workers = (unsigned)v;
			}
			o->has_workers = true;
			break;
		}
		case OPT_LOG_LEVEL:
			if (log_level_from_name(optarg, &o->level) < 0)
				usage_error(
				    "--log-level: unknown value \"%s\" (expected debug, info, "
				    "warn, error)",
				    optarg);
			o->has_level = true;
			break;
		case OPT_LOG_FORMAT:
			if (log_format_from_name(optarg, &o->format) < 0)
				usage_error(
				    "--log-format: unknown value \"%s\" (expected text, json)",
				    optarg);
			o->has_format = true;
			break;
		case OPT_ADMIN: {
			struct sockaddr_storage ss;
			socklen_t len;
			bool wildcard;
			if (parse_address(optarg, &ss, &len, &wildcard) == -EINVAL)
				usage_error("--admin: invalid address \"%s\" (expected host:port, "
				            "[v6addr]:port or :port)",
				            optarg);
			o->admin = optarg;
			break;
		}
		case OPT_REQUIRE_UNPRIVILEGED:
			o->require_unprivileged = true;
			break;
		case ':':
			if (optopt)
				usage_error("option -%c needs a value", optopt);
			usage_error("option %s needs a value", argv[optind - 1]);
		case '?':
		default:
			if (optopt)
				usage_error("unknown option -%c", optopt);
			usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument \"%s\"", argv[optind]);
	if (o->config && (o->n_listen || o->n_backend || o->n_mirror || o->has_balance))
		usage_error(
		    "-c cannot be combined with --listen, --backend, --mirror or --balance");
	if (o->test && !o->config)
		usage_error("-t needs -c FILE");
	if (!o->config && !o->n_listen && !o->n_backend)
		usage_error("nothing to run: give -c FILE or --listen ADDR --backend ADDR");
	if (!o->config && !o->n_listen)
		usage_error("--backend needs --listen ADDR");
	if (!o->config && !o->n_backend)
		usage_error("--listen needs at least one --backend ADDR");
}

/* Command-line overrides, and what this build cannot do yet. */
static void apply_overrides(struct config *cfg, const struct cli *o)
{
	if (o->has_engine)
		cfg->engine = o->engine;
	if (o->has_workers)
		cfg->workers = o->workers;
	if (o->has_level)
		cfg->log.level = o->level;
	if (o->has_format)
		cfg->log.format = o->format;
	if (o->admin) {
		struct sockaddr_storage ss;
		socklen_t len;
		bool wildcard;
		int r = parse_address(o->admin, &ss, &len, &wildcard);
		if (r == -EHOSTUNREACH) /* a host name: resolved like the file's */
			len = 0, wildcard = false;
		char *text = strdup(o->admin);
		if (!text)
			fail("out of memory");
		free(cfg->admin.listen.text);
		cfg->admin.listen.text = text;
		cfg->admin.listen.sa = ss;
		cfg->admin.listen.salen = len;
		cfg->admin.listen.wildcard = wildcard;
		cfg->admin.enabled = true;
	}
}

/* --- signals ----------------------------------------------------------- */

static volatile sig_atomic_t stop_requests;

static void on_stop_signal(int sig)
{
	(void)sig;
	if (++stop_requests >= 2) {
		static const char msg[] = "ferry: second signal: exiting now\n";
		ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
		(void)r;
		_exit(EXIT_SUCCESS);
	}
}

static volatile sig_atomic_t hup_requests;

static void on_hup(int sig)
{
	(void)sig;
	hup_requests++;
}

/* SIGUSR1 only wakes a worker from its wait. */
static void on_wake(int sig)
{
	(void)sig;
}

/* One event loop: its own pool, engine, sessions and listening sockets. */
struct worker {
	unsigned id;
	struct pool pool;
	struct pipe_pool pipes;
	struct engine eng;
	struct relay relay;
	struct fanout_group fanouts; /* worker 0 only */
	pthread_t thread;
	bool started;
};

static struct worker *workers;
static unsigned n_workers;
static struct health *health; /* active checks, on worker 0 */
static struct cli opts;

/* Wakes the other workers (they block every signal but SIGUSR1). */
static void wake_workers(void)
{
	for (unsigned i = 1; i < n_workers; i++)
		if (workers[i].started)
			pthread_kill(workers[i].thread, SIGUSR1);
}

/* The configuration the command line asks for: the file, or quick mode,
 * with the overrides.  NULL with a message in err. */
static struct config *build_config(char *err, size_t len)
{
	struct config *cfg = NULL;
	if (opts.config) {
		if (config_load_file(opts.config, &cfg, err, len) < 0)
			return NULL;
	} else {
		cfg = config_new_default();
		if (!cfg) {
			snprintf(err, len, "out of memory");
			return NULL;
		}
		if (config_add_cli_service(cfg, "default", opts.listen, opts.n_listen, opts.backend,
		                           opts.n_backend, opts.mirror, opts.n_mirror,
		                           opts.has_balance ? opts.balance : BAL_LEAST_CONN, err,
		                           len) < 0) {
			config_free(cfg);
			return NULL;
		}
	}
	apply_overrides(cfg, &opts);
	return cfg;
}

/* --- host names -------------------------------------------------------- */

/* One resolver thread for the host names of every address of the file
 * (listeners, backends, mirrors, fan-out peers, admin); it wakes worker 0
 * when their addresses change, and worker 0 rebuilds as a reload would. */
static struct resolver *resolver;
static char **dns_names;
static size_t n_dns_names;
static pthread_t main_thread;
static _Atomic int dns_news;
static bool dns_rebuild;

static void on_resolved(void *arg)
{
	(void)arg;
	atomic_store(&dns_news, 1);
	pthread_kill(main_thread, SIGUSR1);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int add_name(char ***names, size_t *n, const struct cfg_addr *a)
{
	if (a->salen)
		return 0;
	const char *colon = strrchr(a->text, ':');
	size_t len = colon ? (size_t)(colon - a->text) : strlen(a->text);
	for (size_t i = 0; i < *n; i++)
		if (strlen((*names)[i]) == len && strncmp((*names)[i], a->text, len) == 0)
			return 0;
	char **grown = realloc(*names, (*n + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	*names = grown;
	if (!(grown[*n] = strndup(a->text, len)))
		return -1;
	(*n)++;
	return 0;
}

/* (Re)starts the resolver when the set of names changed.  With `wait`
 * (start-up) the first answers are awaited and a name without any address
 * is an error. */
static int dns_setup(const struct config *cfg, bool wait, char *err, size_t len)
{
	char **names = NULL;
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct cfg_service *c = &cfg->services[i];
		for (size_t j = 0; j < c->n_backends; j++)
			if (add_name(&names, &n, &c->backends[j].addr) < 0)
				goto nomem;
		for (size_t j = 0; j < c->n_mirrors; j++)
			if (add_name(&names, &n, &c->mirrors[j].addr) < 0)
				goto nomem;
		const struct {
			const struct cfg_addr *a;
			size_t n;
		} lists[] = {{c->listen, c->n_listen},
		             {c->inputs.listen, c->inputs.n_listen},
		             {c->inputs.connect, c->inputs.n_connect},
		             {c->outputs.listen, c->outputs.n_listen},
		             {c->outputs.connect, c->outputs.n_connect}};
		for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++)
			for (size_t j = 0; j < lists[k].n; j++)
				if (add_name(&names, &n, &lists[k].a[j]) < 0)
					goto nomem;
	}
	if (cfg->admin.enabled && add_name(&names, &n, &cfg->admin.listen) < 0)
		goto nomem;
	bool same = n == n_dns_names;
	for (size_t i = 0; same && i < n; i++)
		same = strcmp(names[i], dns_names[i]) == 0;
	if (same) {
		free_names(names, n);
		return 0;
	}
	if (resolver)
		resolver_stop(resolver); /* wakes and joins: bounded */
	resolver = NULL;
	free_names(dns_names, n_dns_names);
	dns_names = names;
	n_dns_names = n;
	if (n == 0)
		return 0;
	struct resolver_opts ro = {
	    .names = (const char *const *)names,
	    .n_names = n,
	    .interval_ms = cfg->resolve_interval_ms,
	    .server = getenv("FERRY_DNS_SERVER"), /* tests: a local DNS server */
	    .notify = on_resolved,
	};
	resolver = resolver_start(&ro, err, len);
	if (!resolver)
		return -1;
	if (!wait)
		return 0;
	struct resolve_result *res;
	if (resolver_wait(resolver, RESOLVE_PASS_MAX_MS + 5000, &res, err, len) < 0)
		return -1;
	relay_set_resolved(res);
	return 0;
nomem:
	free_names(names, n);
	snprintf(err, len, "out of memory");
	return -1;
}

/* Replaces each host name in a (n entries) by every address it resolved to
 * (none before its first answer), as "name:port@address" like a backend's.
 * The new array and its texts belong to cfg, as the old ones did.  -1 on
 * OOM (the list unchanged). */
static int expand_list(struct cfg_addr **a, size_t *n)
{
	size_t names = 0, total = 0;
	for (size_t i = 0; i < *n; i++) {
		if ((*a)[i].salen) {
			total++;
			continue;
		}
		names++;
		const struct resolve_entry *e = relay_resolved_entry(&(*a)[i], NULL);
		total += e ? e->n_addrs : 0;
	}
	if (names == 0)
		return 0;
	struct cfg_addr *out = calloc(total ? total : 1, sizeof(*out));
	if (!out)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < *n; i++) {
		const struct cfg_addr *src = &(*a)[i];
		if (src->salen) {
			out[k] = *src;
			if (!(out[k++].text = strdup(src->text)))
				goto nomem;
			continue;
		}
		unsigned port = 0;
		const struct resolve_entry *e = relay_resolved_entry(src, &port);
		for (size_t j = 0; e && j < e->n_addrs; j++) {
			struct cfg_addr *o = &out[k++];
			char text[RESOLVE_NAME_MAX + 80];
			relay_resolved_addr(src, &e->addrs[j], port, o, text, sizeof(text));
			if (!(o->text = strdup(text)))
				goto nomem;
		}
	}
	for (size_t i = 0; i < *n; i++)
		free((*a)[i].text);
	free(*a);
	*a = out;
	*n = k;
	return 0;
nomem:
	for (size_t i = 0; i < k; i++)
		free(out[i].text);
	free(out);
	return -1;
}

/* Host names in listen addresses, fan-out peers and the admin address
 * become the addresses they resolved to (backends and mirrors are expanded
 * by the relay, which keeps their names for drain and metrics). */
static int expand_hosts(struct config *cfg, char *err, size_t len)
{
	for (size_t i = 0; i < cfg->n_services; i++) {
		struct cfg_service *c = &cfg->services[i];
		if (expand_list(&c->listen, &c->n_listen) < 0 ||
		    expand_list(&c->inputs.listen, &c->inputs.n_listen) < 0 ||
		    expand_list(&c->inputs.connect, &c->inputs.n_connect) < 0 ||
		    expand_list(&c->outputs.listen, &c->outputs.n_listen) < 0 ||
		    expand_list(&c->outputs.connect, &c->outputs.n_connect) < 0)
			goto nomem;
	}
	if (cfg->admin.enabled && cfg->admin.listen.salen == 0) {
		/* one address: the first it resolved to */
		const struct resolve_entry *e = relay_resolved_entry(&cfg->admin.listen, NULL);
		if (!e || e->n_addrs == 0) {
			snprintf(err, len, "admin.listen: host name %s has no address",
			         cfg->admin.listen.text);
			return -1;
		}
		struct cfg_addr *one = malloc(sizeof(*one));
		if (!one)
			goto nomem;
		size_t n = 1;
		one[0] = cfg->admin.listen;
		if (!(one[0].text = strdup(cfg->admin.listen.text))) {
			free(one);
			goto nomem;
		}
		if (expand_list(&one, &n) < 0) {
			free(one[0].text);
			free(one);
			goto nomem;
		}
		free(cfg->admin.listen.text);
		cfg->admin.listen = one[0];
		for (size_t j = 1; j < n; j++)
			free(one[j].text);
		free(one);
	}
	return 0;
nomem:
	snprintf(err, len, "out of memory");
	return -1;
}

/* SIGHUP on worker 0, or new DNS answers: a new generation, or the old one
 * kept with the reason logged.  The command line's overrides still win. */
static void reload(bool from_dns)
{
	struct relay *rs[n_workers];
	for (unsigned i = 0; i < n_workers; i++)
		rs[i] = &workers[i].relay;
	if (relay_reload_busy(rs, n_workers)) {
		/* the previous one is still being applied: next turn */
		if (from_dns)
			dns_rebuild = true;
		else
			hup_requests = 1;
		return;
	}
	char err[1024] = "";
	if (!from_dns)
		notify_reloading(); /* systemd: reloading until the next READY=1 */
	struct config *next = build_config(err, sizeof(err));
	int r = next ? 0 : -1;
	if (next && ((!from_dns && dns_setup(next, false, err, sizeof(err)) < 0) ||
	             expand_hosts(next, err, sizeof(err)) < 0)) {
		config_free(next);
		r = -1;
	}
	if (r == 0)
		r = relay_reload(rs, n_workers, next, err, sizeof(err));
	if (r < 0) {
		struct logline l;
		log_begin(&l, LOG_ERROR, "reload_failed");
		log_str(&l, "error", err);
		log_str(&l, "msg", "keeping the running configuration");
		log_end(&l);
		if (!from_dns)
			notify_send("READY=1"); /* still serving, with the old file */
		return;
	}
	if (health_reload(health, workers[0].relay.cur->sh, err, sizeof(err)) < 0)
		log_msg(LOG_ERROR, "reload", "health checks keep the old configuration: %s", err);
	fanout_group_reload(&workers[0].fanouts, workers[0].relay.cfg, &workers[0].eng);
	const struct config *cfg = workers[0].relay.cfg;
	privdrop_reload_check(cfg->user, cfg->group);
	log_setup(opts.has_level ? opts.level : cfg->log.level,
	          opts.has_format ? opts.format : cfg->log.format);
	wake_workers();
	if (!from_dns)
		notify_send("READY=1");
}

static void tick(struct engine *e, void *arg)
{
	(void)e;
	struct worker *w = arg;
	struct relay *r = &w->relay;
	if (stop_requests && !r->shutting_down) {
		fanout_group_shutdown(&w->fanouts);
		if (w->id == 0)
			health_stop(health);
		relay_shutdown(r);
		/* The signal reached worker 0; wake the others to see it. */
		if (w->id == 0) {
			notify_send("STOPPING=1");
			wake_workers();
		}
	}
	if (hup_requests && w->id == 0 && !r->shutting_down) {
		hup_requests = 0;
		reload(false);
	}
	if (w->id == 0 && !r->shutting_down && atomic_exchange(&dns_news, 0)) {
		struct resolve_result *res = NULL;
		if (resolver && resolver_take(resolver, &res) == 1) {
			relay_set_resolved(res);
			dns_rebuild = true;
		}
	}
	if (w->id == 0 && !r->shutting_down && dns_rebuild) {
		dns_rebuild = false;
		log_msg(LOG_INFO, "resolve", "addresses of backend host names changed: rebuilding");
		reload(true);
	}
	if (w->id == 0)
		fanout_group_reap(&w->fanouts);
	if (!r->shutting_down)
		relay_apply_pending(r);
	else
		relay_maybe_stop(r); /* fan-out connections end in their own time */
}

/* Worker 0's work besides sessions that a shutdown waits for. */
static unsigned worker0_busy(void *arg)
{
	struct worker *w = arg;
	return fanout_group_busy(&w->fanouts) + health_busy(health);
}

/* Blocks the signals ferry handles; they are delivered only while worker 0
 * waits (with its wait_mask), so handlers never interrupt the relay.  The
 * other workers unblock only SIGUSR1, their wake-up. */
static void setup_signals(sigset_t *main_mask, sigset_t *worker_mask)
{
	struct sigaction sa = {0};
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_wake;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, main_mask);
	*worker_mask = block;
	sigdelset(worker_mask, SIGUSR1);
	sigdelset(main_mask, SIGINT);
	sigdelset(main_mask, SIGTERM);
	sigdelset(main_mask, SIGHUP);
	sigdelset(main_mask, SIGUSR1);
}

/* Pipes for splice: 256 KiB each, 32 MiB in all, half of the per-user
 * budget a default kernel gives (fs.pipe-user-pages-soft: 64 MiB), so pipes
 * are not shrunk.  FERRY_PIPES=N sets the count per worker (0: no splice). */
#define PIPE_SIZE   (256u * 1024)
#define PIPE_BUDGET (32u * 1024 * 1024)

static uint32_t pipes_per_worker(unsigned n)
{
	const char *env = getenv("FERRY_PIPES");
	if (env && *env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);
		if (*end == '\0' && v <= 65536)
			return (uint32_t)v;
	}
	return PIPE_BUDGET / PIPE_SIZE / (n ? n : 1);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	engine_run(&w->eng);
	return NULL;
}

/* Raises the descriptor limit to the hard limit and warns when the
 * configured connections need more. */
static void setup_nofile(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	uint64_t need = (uint64_t)cfg->max_connections * 2 + 64;
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur)
		log_msg(LOG_WARN, "limits",
		        "max_connections %u needs about %llu file descriptors but the limit is "
		        "%llu; accepting pauses when descriptors run out",
		        cfg->max_connections, (unsigned long long)need,
		        (unsigned long long)rl.rlim_cur);
}

/* `auto` takes the first engine whose probe succeeds (io_uring before
 * epoll) and says in one line why a preferred one was passed over. */
static const struct engine_vt *choose_engine(const struct config *cfg)
{
	char why[256];
	if (cfg->engine != ENGINE_AUTO) {
		const char *want = engine_name(cfg->engine);
		const struct engine_vt *vt = engine_find(want);
		if (!vt)
			fail("engine %s: not available in this build", want);
		if (vt->probe(why, sizeof(why)) < 0)
			fail("engine %s cannot start: %s", want, why);
		return vt;
	}
	const struct engine_vt *const *list = engine_list();
	for (size_t i = 0; list[i]; i++) {
		if (list[i]->probe(why, sizeof(why)) == 0)
			return list[i];
		if (list[i + 1])
			log_msg(LOG_INFO, "engine",
			        "engine %s unavailable (%s); falling back to %s", list[i]->name,
			        why, list[i + 1]->name);
	}
	fail("no engine can start here: %s", why);
}

int main(int argc, char **argv)
{
	struct cli o = {0};
	parse_cli(argc, argv, &o);
	opts = o;

	char err[1024];
	struct config *cfg = NULL;
	if (o.config) {
		if (config_load_file(o.config, &cfg, err, sizeof(err)) < 0)
			fail("%s", err);
	} else {
		cfg = config_new_default();
		if (!cfg)
			fail("out of memory");
		if (config_add_cli_service(cfg, "default", o.listen, o.n_listen, o.backend,
		                           o.n_backend, o.mirror, o.n_mirror,
		                           o.has_balance ? o.balance : BAL_LEAST_CONN, err,
		                           sizeof(err)) < 0)
			fail("%s", err);
	}
	apply_overrides(cfg, &o);
	if (o.test) {
		printf("configuration OK\n");
		config_free(cfg);
		return EXIT_SUCCESS;
	}
	if (privdrop_prepare(cfg->user, cfg->group, o.require_unprivileged, err, sizeof(err)) < 0)
		fail("%s", err);

	log_setup(cfg->log.level, cfg->log.format);
	const struct engine_vt *vt = choose_engine(cfg);
	sigset_t main_mask, worker_mask;
	setup_signals(&main_mask, &worker_mask);
	setup_nofile(cfg);

	n_workers = cfg->workers;
	if (n_workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		n_workers = n > 0 ? (unsigned)n : 1;
	}
	main_thread = pthread_self();
	if (dns_setup(cfg, true, err, sizeof(err)) < 0 || expand_hosts(cfg, err, sizeof(err)) < 0)
		fail("%s", err);
	struct relay_shared *shared;
	if (relay_shared_create(cfg, &shared, err, sizeof(err)) < 0)
		fail("%s", err);
	workers = calloc(n_workers, sizeof(*workers));
	if (!workers)
		fail("out of memory");
	struct fanout_sizes fo; /* fan-out services run on worker 0, with room to reload */
	fanout_reserve(cfg, &fo);
	for (unsigned i = 0; i < n_workers; i++) {
		struct worker *w = &workers[i];
		w->id = i;
		uint32_t nbufs =
		    relay_pool_buffers(cfg) + (i == 0 ? fo.buffers + health_buffers(cfg) : 0);
		if (pool_init(&w->pool, nbufs, cfg->buffer_size) < 0)
			fail("cannot allocate %u buffers of %llu bytes: lower max_connections or "
			     "buffer_size",
			     nbufs, (unsigned long long)cfg->buffer_size);
		int r = engine_init(
		    &w->eng, vt, &w->pool,
		    relay_max_sockets(cfg) + (i == 0 ? fo.sockets + health_sockets(cfg) : 0),
		    relay_max_timers(cfg) + (i == 0 ? fo.timers + health_timers(cfg) : 0));
		if (r < 0)
			fail("engine %s cannot start: %s", vt->name, strerror(-r));
		if (pipes_init(&w->pipes, pipes_per_worker(n_workers), PIPE_SIZE) < 0)
			fail("out of memory");
		w->eng.pipes = &w->pipes;
		w->eng.wait_mask = i == 0 ? main_mask : worker_mask;
		if (relay_init(&w->relay, shared, &w->eng, i, n_workers, err, sizeof(err)) < 0)
			fail("%s", err);
		if (relay_listen(&w->relay, err, sizeof(err)) < 0)
			fail("%s", err);
		if (i == 0) {
			if (fanout_group_init(&w->fanouts, cfg, &w->eng, err, sizeof(err)) < 0)
				fail("%s", err);
			w->fanouts.reserve = fo;
			if (health_init(&health, shared, &w->eng, err, sizeof(err)) < 0)
				fail("%s", err);
			w->relay.busy = worker0_busy;
			w->relay.busy_arg = w;
		}
		w->eng.tick = tick;
		w->eng.tick_arg = w;
	}

	struct admin *admin = NULL;
	if (cfg->admin.enabled &&
	    admin_start(&admin, (struct sockaddr *)&cfg->admin.listen.sa, cfg->admin.listen.salen,
	                shared, err, sizeof(err)) < 0)
		fail("%s", err);
	/* Every listener and the admin socket are bound: root is no longer needed. */
	if (privdrop_apply(err, sizeof(err)) < 0)
		fail("%s", err);

	struct logline l;
	log_begin(&l, LOG_INFO, "ready");
	log_str(&l, "engine", vt->name);
	log_u64(&l, "workers", n_workers);
	log_u64(&l, "services", cfg->n_services);
	log_u64(&l, "listeners", workers[0].relay.n_listeners);
	log_str(&l, "version", FERRY_VERSION);
	log_end(&l);

	for (unsigned i = 1; i < n_workers; i++) {
		int r = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
		if (r != 0)
			fail("cannot start worker %u: %s", i, strerror(r));
		workers[i].started = true;
	}
	int nr = notify_send("READY=1");
	if (nr < 0)
		log_msg(LOG_WARN, "notify", "READY=1 to $NOTIFY_SOCKET failed: %s", strerror(-nr));
	engine_run(&workers[0].eng);
	for (unsigned i = 1; i < n_workers; i++)
		if (workers[i].started)
			pthread_join(workers[i].thread, NULL);
	admin_stop(admin);

	log_msg(LOG_INFO, "stopped", "all connections closed");
	for (unsigned i = 0; i < n_workers; i++) {
		fanout_group_fini(&workers[i].fanouts);
		relay_fini(&workers[i].relay);
		engine_fini(&workers[i].eng);
		if (i == 0)
			health_fini(health);
		pipes_fini(&workers[i].pipes);
		pool_fini(&workers[i].pool);
	}
	free(workers);
	relay_shared_drop_current(); /* frees the config too */
	if (resolver)
		resolver_stop(resolver);
	free_names(dns_names, n_dns_names);
	relay_set_resolved(NULL);
	return EXIT_SUCCESS;
}
