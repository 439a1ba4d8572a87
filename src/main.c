/* main.c - ferry's command line (SPEC section 1): parse flags, load the
 * configuration, set up the pool, the engine and the relay, run until a
 * signal says stop.
 *
 * Exit status: 0 after a shutdown or a good check, 1 for an invalid
 * configuration or a failed start, 2 for a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf/pool.h"
#include "config/config.h"
#include "core/log.h"
#include "engine/engine.h"
#include "relay/proxy.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.1.0"
#endif
#ifndef FERRY_LIBURING_VERSION
#define FERRY_LIBURING_VERSION "unknown"
#endif

#define EXIT_USAGE 2
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
	printf("  io_uring: not built into this version\n");
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
				usage_error("--balance: unknown value \"%s\" (expected round_robin, "
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
					usage_error("--workers: invalid value \"%s\" (expected a number "
					            "from 1 to 1024, or auto)",
					            optarg);
				o->workers = (unsigned)v;
			}
			o->has_workers = true;
			break;
		}
		case OPT_LOG_LEVEL:
			if (log_level_from_name(optarg, &o->level) < 0)
				usage_error("--log-level: unknown value \"%s\" (expected debug, info, "
				            "warn, error)",
				            optarg);
			o->has_level = true;
			break;
		case OPT_LOG_FORMAT:
			if (log_format_from_name(optarg, &o->format) < 0)
				usage_error("--log-format: unknown value \"%s\" (expected text, json)",
				            optarg);
			o->has_format = true;
			break;
		case OPT_ADMIN:
			o->admin = optarg;
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
		usage_error("-c cannot be combined with --listen, --backend, --mirror or --balance");
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
	if (o->has_engine && o->engine == ENGINE_URING)
		fail("--engine io_uring: not supported yet (this build has the epoll engine; use "
		     "epoll or auto)");
	if (o->has_workers && o->workers != 1)
		fail("--workers %s: more than one worker is not supported yet",
		     o->workers ? "N" : "auto");
	if (o->admin)
		fail("--admin %s: the admin endpoint is not supported yet", o->admin);
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

static void tick(struct engine *e, void *arg)
{
	(void)e;
	struct relay *r = arg;
	if (stop_requests && !r->shutting_down)
		relay_shutdown(r);
	if (hup_requests) {
		hup_requests = 0;
		log_msg(LOG_WARN, "reload", "SIGHUP: configuration reload is not supported yet; "
		                            "keeping the running configuration");
	}
}

/* Blocks the signals ferry handles; they are delivered only while the
 * engine waits (with wait_mask), so handlers never interrupt the relay. */
static void setup_signals(sigset_t *wait_mask)
{
	struct sigaction sa = {0};
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, wait_mask);
	sigdelset(wait_mask, SIGINT);
	sigdelset(wait_mask, SIGTERM);
	sigdelset(wait_mask, SIGHUP);
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

static const struct engine_vt *choose_engine(const struct config *cfg)
{
	const char *want = cfg->engine == ENGINE_URING ? "io_uring" : "epoll";
	const struct engine_vt *vt = engine_find(want);
	if (!vt)
		fail("engine %s: not available in this build", want);
	char why[256];
	if (vt->probe(why, sizeof(why)) < 0)
		fail("engine %s cannot start: %s", want, why);
	return vt;
}

int main(int argc, char **argv)
{
	struct cli o = {0};
	parse_cli(argc, argv, &o);

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

	log_setup(cfg->log.level, cfg->log.format);
	const struct engine_vt *vt = choose_engine(cfg);
	sigset_t wait_mask;
	setup_signals(&wait_mask);
	setup_nofile(cfg);

	struct pool pool;
	if (pool_init(&pool, relay_pool_buffers(cfg), cfg->buffer_size) < 0)
		fail("cannot allocate %u buffers of %llu bytes: lower max_connections or "
		     "buffer_size",
		     relay_pool_buffers(cfg), (unsigned long long)cfg->buffer_size);
	struct engine eng;
	int r = engine_init(&eng, vt, &pool, relay_max_sockets(cfg), relay_max_timers(cfg));
	if (r < 0)
		fail("engine %s cannot start: %s", vt->name, strerror(-r));
	eng.wait_mask = wait_mask;
	struct relay relay;
	if (relay_init(&relay, cfg, &eng, err, sizeof(err)) < 0)
		fail("%s", err);
	if (relay_listen(&relay, err, sizeof(err)) < 0)
		fail("%s", err);
	eng.tick = tick;
	eng.tick_arg = &relay;

	struct logline l;
	log_begin(&l, LOG_INFO, "ready");
	log_str(&l, "engine", vt->name);
	log_u64(&l, "workers", 1);
	log_u64(&l, "services", cfg->n_services);
	log_u64(&l, "listeners", relay.n_listeners);
	log_str(&l, "version", FERRY_VERSION);
	log_end(&l);

	engine_run(&eng);

	log_msg(LOG_INFO, "stopped", "all connections closed");
	relay_fini(&relay);
	engine_fini(&eng);
	pool_fini(&pool);
	config_free(cfg);
	return EXIT_SUCCESS;
}
