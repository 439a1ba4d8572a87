/* config.h - ferry's configuration: the YAML file of SPEC section 2 and the
 * command-line quick mode both produce one `struct config`.
 *
 * Ownership: a config is built by config_load_file() or config_new_default() + config_add_cli_service() and
 * released whole by config_free(); every string and array inside belongs to it.
 */
#ifndef FERRY_CONFIG_CONFIG_H
#define FERRY_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/parse.h"

enum engine_kind { ENGINE_AUTO = 0, ENGINE_EPOLL, ENGINE_URING };
enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_TEXT = 0, LOG_JSON };
enum svc_mode { MODE_PROXY = 0, MODE_FANOUT };
enum balance_alg { BAL_ROUND_ROBIN = 0, BAL_LEAST_CONN, BAL_RANDOM, BAL_SOURCE_HASH };
enum proxy_proto { PP_NONE = 0, PP_V1, PP_V2 };
enum on_lag { LAG_DISCONNECT = 0, LAG_BLOCK, LAG_DROP };
enum framing { FRAMING_RAW = 0, FRAMING_LINE };

/* An address as written in the file plus its parsed form. */
struct cfg_addr {
	char *text; /* as written: used in logs, metrics and the admin API */
	struct sockaddr_storage sa;
	socklen_t salen;
	bool wildcard; /* ":port" */
};

struct cfg_backend {
	struct cfg_addr addr;
	unsigned weight;          /* 1..256, default 1 */
	unsigned max_connections; /* 0: unlimited */
};

struct cfg_health {
	bool enabled; /* the health_check key is present */
	uint64_t interval_ms, timeout_ms;
	unsigned rise, fall;
	char *send;  /* decoded bytes (escapes resolved), may contain NUL */
	size_t send_len;
	char *expect;
	size_t expect_len;
};

struct cfg_mirror {
	struct cfg_addr addr;
	enum on_lag on_lag; /* disconnect | block */
	unsigned sample;    /* percent 1..100 */
	uint64_t max_lag;   /* bytes */
};

struct cfg_role {
	struct cidr *from;
	size_t n_from;
	struct cfg_addr *listen;
	size_t n_listen;
	struct cfg_addr *connect;
	size_t n_connect;
};

struct cfg_service {
	char *name;
	enum svc_mode mode;
	struct cfg_addr *listen;
	size_t n_listen;
	uint64_t bind_timeout_ms;
	unsigned max_connections; /* 0: only the global limit */
	uint64_t queue_timeout_ms;
	struct cidr *allow;
	size_t n_allow;
	struct cidr *deny;
	size_t n_deny;
	bool accept_proxy_protocol;

	/* proxy mode */
	enum balance_alg balance;
	struct cfg_backend *backends;
	size_t n_backends;
	uint64_t connect_timeout_ms;
	uint64_t idle_timeout_ms;
	unsigned retries;
	enum proxy_proto proxy_protocol;
	struct cfg_health health;
	struct cfg_mirror *mirrors;
	size_t n_mirrors;

	/* fan-out mode */
	enum framing framing;
	uint64_t max_line;
	struct cfg_role inputs;
	struct cfg_role outputs;
	enum on_lag out_on_lag;
	uint64_t out_max_lag;
};

struct config {
	char *path; /* file the config came from, or NULL for the command line */
	enum engine_kind engine;
	unsigned workers; /* 0 means "auto" (one per CPU) */
	unsigned max_connections;
	uint64_t buffer_size;
	uint64_t shutdown_timeout_ms;
	uint64_t resolve_interval_ms;
	char *user, *group; /* "" when not set */
	struct {
		enum log_level level;
		enum log_format format;
		bool access;
		uint64_t access_interval_ms;
	} log;
	struct {
		bool enabled;
		struct cfg_addr listen;
	} admin;
	struct cfg_service *services;
	size_t n_services;
};

/* Loads and validates `path`.  On success returns 0 and stores a new config
 * in *out.  On failure returns -1 and writes one human-readable message,
 * without a trailing newline, into err (size errlen), of the form
 *   FILE:LINE:COL: key.path: what is wrong (expected ...)
 * Keys that later issues bring are parsed and validated, then rejected with
 * "... not supported yet". */
int config_load_file(const char *path, struct config **out, char *err, size_t errlen);

/* Same as config_load_file() on a string (path only names it in messages). */
int config_load_string(const char *yaml, size_t len, const char *path, struct config **out,
                       char *err, size_t errlen);

/* A config with every default of SPEC section 2 and no services.  NULL on
 * allocation failure. */
struct config *config_new_default(void);

/* Adds a proxy service named `name` to cfg, with the given listen and backend
 * addresses (quick mode of the command line).  Returns 0, or -1 with a message
 * in err naming the bad address. */
int config_add_cli_service(struct config *cfg, const char *name, char **listen, size_t n_listen,
                           char **backends, size_t n_backends, char **mirrors, size_t n_mirrors,
                           enum balance_alg balance, char *err, size_t errlen);

void config_free(struct config *cfg);

/* Names for enums, used by messages and logs. */
const char *balance_name(enum balance_alg b);
const char *engine_name(enum engine_kind e);
int balance_from_name(const char *s, enum balance_alg *out);
int engine_from_name(const char *s, enum engine_kind *out);
int log_level_from_name(const char *s, enum log_level *out);
int log_format_from_name(const char *s, enum log_format *out);

#endif
