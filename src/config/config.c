/* config.c - loads the YAML file of SPEC section 2 (and the command line's
 * quick mode) into one `struct config`.
 *
 * How it works: libyaml's document API builds the whole node tree, so every
 * node carries its line and column.  One table per section (key, type,
 * default, range, offset, doc line) drives parsing, defaults, range checks and
 * error messages; the reference in docs/configuration.md is printed from the
 * same tables (build this file with -DFERRY_CONFIG_DOCGEN).  While parsing,
 * the loader remembers, for every field it writes, where in the file the
 * value was and its key path, so checks that run after parsing (cross-key
 * validation, then reject_unsupported()) still point at the right place.
 *
 * Ownership: every string and array in a config is allocated here and freed
 * by config_free().  Strings are never NULL once a config is returned (empty
 * strings are ""), except cfg->path for a config built from the command line.
 * An address that is a host name keeps its text with salen == 0.
 *
 * Nothing here touches errno as seen by the caller.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config/config.h"
#include "core/privdrop.h"

/* ------------------------------------------------------------------------
 * Enumerations and their names
 */

struct enum_name {
	const char *name;
	int value;
};

static const struct enum_name engine_names[] = {
    {"auto", ENGINE_AUTO}, {"epoll", ENGINE_EPOLL}, {"io_uring", ENGINE_URING}, {NULL, 0}};
static const struct enum_name level_names[] = {
    {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}, {NULL, 0}};
static const struct enum_name format_names[] = {{"text", LOG_TEXT}, {"json", LOG_JSON}, {NULL, 0}};
static const struct enum_name mode_names[] = {
    {"proxy", MODE_PROXY}, {"fanout", MODE_FANOUT}, {NULL, 0}};
static const struct enum_name balance_names[] = {{"round_robin", BAL_ROUND_ROBIN},
                                                 {"least_conn", BAL_LEAST_CONN},
                                                 {"random", BAL_RANDOM},
                                                 {"source_hash", BAL_SOURCE_HASH},
                                                 {NULL, 0}};
static const struct enum_name pp_names[] = {
    {"none", PP_NONE}, {"v1", PP_V1}, {"v2", PP_V2}, {NULL, 0}};
static const struct enum_name mirror_lag_names[] = {
    {"disconnect", LAG_DISCONNECT}, {"block", LAG_BLOCK}, {NULL, 0}};
static const struct enum_name output_lag_names[] = {
    {"disconnect", LAG_DISCONNECT}, {"block", LAG_BLOCK}, {"drop", LAG_DROP}, {NULL, 0}};
static const struct enum_name framing_names[] = {
    {"raw", FRAMING_RAW}, {"line", FRAMING_LINE}, {NULL, 0}};

/* Enum fields are written through an int. */
_Static_assert(sizeof(enum engine_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum svc_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum balance_alg) == sizeof(int), "enum size");
_Static_assert(sizeof(enum proxy_proto) == sizeof(int), "enum size");
_Static_assert(sizeof(enum on_lag) == sizeof(int), "enum size");
_Static_assert(sizeof(enum framing) == sizeof(int), "enum size");

static int enum_lookup(const struct enum_name *t, const char *s, int *out)
{
	for (; t->name; t++) {
		if (strcmp(t->name, s) == 0) {
			*out = t->value;
			return 0;
		}
	}
	return -EINVAL;
}

static const char *enum_text(const struct enum_name *t, int v)
{
	for (; t->name; t++)
		if (t->value == v)
			return t->name;
	return "unknown";
}

/* "a, b, c" into buf. */
static void enum_list(const struct enum_name *t, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (; t->name && used < len; t++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", t->name);
}

const char *balance_name(enum balance_alg b)
{
	return enum_text(balance_names, (int)b);
}

const char *engine_name(enum engine_kind e)
{
	return enum_text(engine_names, (int)e);
}

int balance_from_name(const char *s, enum balance_alg *out)
{
	int v;

	if (!s || enum_lookup(balance_names, s, &v) < 0)
		return -EINVAL;
	*out = (enum balance_alg)v;
	return 0;
}

int engine_from_name(const char *s, enum engine_kind *out)
{
	int v;

	if (!s || enum_lookup(engine_names, s, &v) < 0)
		return -EINVAL;
	*out = (enum engine_kind)v;
	return 0;
}

int log_level_from_name(const char *s, enum log_level *out)
{
	int v;

	if (!s || enum_lookup(level_names, s, &v) < 0)
		return -EINVAL;
	*out = (enum log_level)v;
	return 0;
}

int log_format_from_name(const char *s, enum log_format *out)
{
	int v;

	if (!s || enum_lookup(format_names, s, &v) < 0)
		return -EINVAL;
	*out = (enum log_format)v;
	return 0;
}

/* ------------------------------------------------------------------------
 * Key tables: one per section of SPEC section 2
 */

enum key_type {
	KT_BOOL,      /* bool */
	KT_UINT,      /* unsigned, min..max */
	KT_WORKERS,   /* unsigned: N in min..max, or "auto" stored as 0 */
	KT_DURATION,  /* uint64_t milliseconds, min..max */
	KT_SIZE,      /* uint64_t bytes, min..max */
	KT_PERCENT,   /* unsigned 1..100 from "N%" */
	KT_ENUM,      /* enum stored as int; names in `enums` */
	KT_STRING,    /* char *, any text */
	KT_NAME,      /* char *, [a-z0-9_-]+ */
	KT_BYTES,     /* char * with escapes decoded, length (size_t) at off_n */
	KT_ADDR,      /* struct cfg_addr */
	KT_ADDR_LIST, /* struct cfg_addr * at off, count (size_t) at off_n */
	KT_CIDR_LIST, /* struct cidr * at off, count (size_t) at off_n */
	KT_SECTION,   /* nested mapping sharing this section's base */
	KT_LIST,      /* list of mappings: array at off, count (size_t) at off_n */
};

enum {
	KEY_REQUIRED = 1 << 0, /* missing key is an error */
	KEY_PROXY = 1 << 1,    /* only in a service with mode: proxy */
	KEY_FANOUT = 1 << 2,   /* only in a service with mode: fanout */
	KEY_PRESENCE = 1 << 3, /* KT_SECTION: bool at off is set when the key is there */
};

struct section;

struct key_def {
	const char *name;
	enum key_type type;
	const char *def;   /* default, written as in the file; NULL: none */
	uint64_t min, max; /* max 0: no upper bound (besides the type's) */
	size_t off;        /* field offset from the section's base */
	size_t off_n;      /* count or length offset (lists, bytes) */
	const struct enum_name *enums;
	const struct section *sub; /* KT_SECTION, KT_LIST */
	unsigned flags;
	const char *doc;
};

struct section {
	const char *name; /* as in key paths, for the docs */
	const struct key_def *keys;
	size_t n_keys;
	size_t elem_size;     /* KT_LIST: size of one element */
	const char *lead_key; /* parsed before the other keys */
};

#define N_KEYS(a) (sizeof(a) / sizeof((a)[0]))
#define CFG(f)    offsetof(struct config, f)
#define SVC(f)    offsetof(struct cfg_service, f)
#define BE(f)     offsetof(struct cfg_backend, f)
#define MIR(f)    offsetof(struct cfg_mirror, f)
#define KIB       1024ULL
#define MIB       (1024ULL * 1024)
#define GIB       (1024ULL * 1024 * 1024)

/* clang-format off */
static const struct key_def log_keys[] = {
    {.name = "level", .type = KT_ENUM, .def = "info", .off = CFG(log.level),
     .enums = level_names, .doc = "least severe level written"},
    {.name = "format", .type = KT_ENUM, .def = "text", .off = CFG(log.format),
     .enums = format_names, .doc = "text: key=value fields; json: one object per line"},
    {.name = "access", .type = KT_BOOL, .def = "true", .off = CFG(log.access),
     .doc = "one line per finished connection"},
    {.name = "access_interval", .type = KT_DURATION, .def = "0s",
     .off = CFG(log.access_interval_ms),
     .doc = "when > 0, long connections also log a progress line this often"},
};
static const struct section log_section = {"log", log_keys, N_KEYS(log_keys), 0, NULL};

static const struct key_def admin_keys[] = {
    {.name = "listen", .type = KT_ADDR, .off = CFG(admin.listen), .flags = KEY_REQUIRED,
     .doc = "address of the HTTP admin endpoint (/metrics, /status, drain/enable)"},
};
static const struct section admin_section = {"admin", admin_keys, N_KEYS(admin_keys), 0, NULL};

static const struct key_def backend_keys[] = {
    {.name = "address", .type = KT_ADDR, .off = BE(addr), .flags = KEY_REQUIRED,
     .doc = "where the backend listens"},
    {.name = "weight", .type = KT_UINT, .def = "1", .min = 1, .max = 256, .off = BE(weight),
     .doc = "share of new connections relative to the other backends"},
    {.name = "max_connections", .type = KT_UINT, .def = "0", .off = BE(max_connections),
     .doc = "active connections to this backend; 0: unlimited"},
};
static const struct section backend_section = {"services[].backends[]", backend_keys,
                                               N_KEYS(backend_keys), sizeof(struct cfg_backend),
                                               NULL};

static const struct key_def health_keys[] = {
    {.name = "interval", .type = KT_DURATION, .def = "2s", .min = 1, .off = SVC(health.interval_ms),
     .doc = "time between two checks of one backend"},
    {.name = "timeout", .type = KT_DURATION, .def = "1s", .min = 1, .off = SVC(health.timeout_ms),
     .doc = "a check not done in this time failed"},
    {.name = "rise", .type = KT_UINT, .def = "2", .min = 1, .max = 100, .off = SVC(health.rise),
     .doc = "consecutive successes that mark a down backend up"},
    {.name = "fall", .type = KT_UINT, .def = "3", .min = 1, .max = 100, .off = SVC(health.fall),
     .doc = "consecutive failures (active or passive) that mark a backend down"},
    {.name = "send", .type = KT_BYTES, .def = "", .off = SVC(health.send),
     .off_n = SVC(health.send_len),
     .doc = "bytes sent after connecting (escapes decoded, see below)"},
    {.name = "expect", .type = KT_BYTES, .def = "", .off = SVC(health.expect),
     .off_n = SVC(health.expect_len),
     .doc = "bytes the reply must contain (escapes decoded, see below)"},
};
static const struct section health_section = {"services[].health_check", health_keys,
                                              N_KEYS(health_keys), 0, NULL};

static const struct key_def mirror_keys[] = {
    {.name = "address", .type = KT_ADDR, .off = MIR(addr), .flags = KEY_REQUIRED,
     .doc = "where copies of client bytes are sent"},
    {.name = "on_lag", .type = KT_ENUM, .def = "disconnect", .off = MIR(on_lag),
     .enums = mirror_lag_names,
     .doc = "over max_lag: disconnect the mirror, or block (pace the client)"},
    {.name = "sample", .type = KT_PERCENT, .def = "100%", .min = 1, .max = 100, .off = MIR(sample),
     .doc = "share of client connections mirrored"},
    {.name = "max_lag", .type = KT_SIZE, .def = "4MiB", .min = 1, .off = MIR(max_lag),
     .doc = "bytes queued for the mirror before on_lag applies"},
};
static const struct section mirror_section = {"services[].mirrors[]", mirror_keys,
                                              N_KEYS(mirror_keys), sizeof(struct cfg_mirror), NULL};

static const struct key_def inputs_keys[] = {
    {.name = "from", .type = KT_CIDR_LIST, .off = SVC(inputs.from), .off_n = SVC(inputs.n_from),
     .doc = "peers on the shared port (listen) that are inputs"},
    {.name = "listen", .type = KT_ADDR_LIST, .off = SVC(inputs.listen),
     .off_n = SVC(inputs.n_listen), .doc = "ports whose every client is an input"},
    {.name = "connect", .type = KT_ADDR_LIST, .off = SVC(inputs.connect),
     .off_n = SVC(inputs.n_connect), .doc = "sources ferry dials and reads from"},
};
static const struct section inputs_section = {"services[].inputs", inputs_keys,
                                              N_KEYS(inputs_keys), 0, NULL};

static const struct key_def outputs_keys[] = {
    {.name = "from", .type = KT_CIDR_LIST, .off = SVC(outputs.from), .off_n = SVC(outputs.n_from),
     .doc = "peers on the shared port (listen) that are outputs"},
    {.name = "listen", .type = KT_ADDR_LIST, .off = SVC(outputs.listen),
     .off_n = SVC(outputs.n_listen), .doc = "ports whose every client is an output"},
    {.name = "connect", .type = KT_ADDR_LIST, .off = SVC(outputs.connect),
     .off_n = SVC(outputs.n_connect), .doc = "sinks ferry dials, reconnecting with backoff"},
    {.name = "on_lag", .type = KT_ENUM, .def = "disconnect", .off = SVC(out_on_lag),
     .enums = output_lag_names,
     .doc = "over max_lag: disconnect the output, block (pace inputs) or drop records"},
    {.name = "max_lag", .type = KT_SIZE, .def = "4MiB", .min = 1, .off = SVC(out_max_lag),
     .doc = "bytes queued for one output before on_lag applies"},
};
static const struct section outputs_section = {"services[].outputs", outputs_keys,
                                               N_KEYS(outputs_keys), 0, NULL};

static const struct key_def service_keys[] = {
    {.name = "name", .type = KT_NAME, .off = SVC(name), .flags = KEY_REQUIRED,
     .doc = "unique; lowercase letters, digits, `_` and `-`"},
    {.name = "mode", .type = KT_ENUM, .def = "proxy", .off = SVC(mode), .enums = mode_names,
     .doc = "proxy: load balancer; fanout: every input to every output"},
    {.name = "listen", .type = KT_ADDR_LIST, .off = SVC(listen), .off_n = SVC(n_listen),
     .doc = "addresses clients connect to (fanout: the shared port)"},
    {.name = "bind_timeout", .type = KT_DURATION, .def = "0s", .off = SVC(bind_timeout_ms),
     .doc = "keep retrying a busy port for this long before failing"},
    {.name = "max_connections", .type = KT_UINT, .def = "0", .off = SVC(max_connections),
     .doc = "client connections of this service; 0: only the global limit"},
    {.name = "queue_timeout", .type = KT_DURATION, .def = "0s", .off = SVC(queue_timeout_ms),
     .doc = "all backends full: wait this long for a free slot, then close"},
    {.name = "allow", .type = KT_CIDR_LIST, .off = SVC(allow), .off_n = SVC(n_allow),
     .doc = "when not empty, only these clients are served"},
    {.name = "deny", .type = KT_CIDR_LIST, .off = SVC(deny), .off_n = SVC(n_deny),
     .doc = "clients always closed at accept"},
    {.name = "accept_proxy_protocol", .type = KT_BOOL, .def = "false",
     .off = SVC(accept_proxy_protocol), .doc = "read a PROXY v1/v2 header from clients first"},
    {.name = "balance", .type = KT_ENUM, .def = "least_conn", .off = SVC(balance),
     .enums = balance_names, .flags = KEY_PROXY, .doc = "how a backend is chosen"},
    {.name = "backends", .type = KT_LIST, .off = SVC(backends), .off_n = SVC(n_backends),
     .sub = &backend_section, .flags = KEY_PROXY, .doc = "servers the traffic goes to"},
    {.name = "connect_timeout", .type = KT_DURATION, .def = "2s", .min = 1,
     .off = SVC(connect_timeout_ms), .flags = KEY_PROXY,
     .doc = "a backend connect not done in this time failed"},
    {.name = "idle_timeout", .type = KT_DURATION, .def = "5m", .min = 1,
     .off = SVC(idle_timeout_ms), .flags = KEY_PROXY,
     .doc = "no byte either way for this long: both sides closed"},
    {.name = "retries", .type = KT_UINT, .def = "2", .max = 100, .off = SVC(retries),
     .flags = KEY_PROXY, .doc = "a failed connect is retried on another backend"},
    {.name = "proxy_protocol", .type = KT_ENUM, .def = "none", .off = SVC(proxy_protocol),
     .enums = pp_names, .flags = KEY_PROXY, .doc = "PROXY header sent to backends and mirrors"},
    {.name = "health_check", .type = KT_SECTION, .off = SVC(health.enabled),
     .sub = &health_section, .flags = KEY_PROXY | KEY_PRESENCE,
     .doc = "active checks; absent: no backend is ever marked down"},
    {.name = "mirrors", .type = KT_LIST, .off = SVC(mirrors), .off_n = SVC(n_mirrors),
     .sub = &mirror_section, .flags = KEY_PROXY,
     .doc = "receive a copy of what clients send (shadow traffic)"},
    {.name = "framing", .type = KT_ENUM, .def = "raw", .off = SVC(framing),
     .enums = framing_names, .flags = KEY_FANOUT,
     .doc = "raw: chunks as they come; line: whole \\n-terminated records"},
    {.name = "max_line", .type = KT_SIZE, .def = "64KiB", .min = 1, .max = GIB,
     .off = SVC(max_line), .flags = KEY_FANOUT,
     .doc = "line framing: longest record, its \\n included"},
    {.name = "inputs", .type = KT_SECTION, .sub = &inputs_section, .flags = KEY_FANOUT,
     .doc = "where the bytes come from"},
    {.name = "outputs", .type = KT_SECTION, .sub = &outputs_section, .flags = KEY_FANOUT,
     .doc = "where the bytes go"},
};
static const struct section service_section = {"services[]", service_keys, N_KEYS(service_keys),
                                               sizeof(struct cfg_service), "mode"};

static const struct key_def top_keys[] = {
    {.name = "engine", .type = KT_ENUM, .def = "auto", .off = CFG(engine), .enums = engine_names,
     .doc = "I/O engine; auto: io_uring when it works, else epoll"},
    {.name = "workers", .type = KT_WORKERS, .def = "1", .min = 1, .max = 1024, .off = CFG(workers),
     .doc = "event loops (threads); auto: one per CPU"},
    {.name = "max_connections", .type = KT_UINT, .def = "10000", .min = 1,
     .off = CFG(max_connections), .doc = "client connections, all services together"},
    {.name = "buffer_size", .type = KT_SIZE, .def = "16KiB", .min = KIB, .max = 16 * MIB,
     .off = CFG(buffer_size), .doc = "size of one pooled buffer"},
    {.name = "shutdown_timeout", .type = KT_DURATION, .def = "30s",
     .off = CFG(shutdown_timeout_ms), .doc = "on SIGTERM/SIGINT, time open connections get"},
    {.name = "resolve_interval", .type = KT_DURATION, .def = "30s", .min = 100,
     .off = CFG(resolve_interval_ms), .doc = "host names are resolved again this often"},
    {.name = "user", .type = KT_STRING, .def = "", .off = CFG(user),
     .doc = "drop to this user after binding listeners; empty: stay"},
    {.name = "group", .type = KT_STRING, .def = "", .off = CFG(group),
     .doc = "drop to this group after binding listeners; empty: stay"},
    {.name = "log", .type = KT_SECTION, .sub = &log_section, .doc = "logging to stderr"},
    {.name = "admin", .type = KT_SECTION, .off = CFG(admin.enabled), .sub = &admin_section,
     .flags = KEY_PRESENCE, .doc = "admin HTTP endpoint; absent: none"},
    {.name = "services", .type = KT_LIST, .off = CFG(services), .off_n = CFG(n_services),
     .sub = &service_section, .doc = "the services; at least one is required"},
};
static const struct section top_section = {"", top_keys, N_KEYS(top_keys), 0, NULL};
/* clang-format on */

/* ------------------------------------------------------------------------
 * Scalar values: text -> field.  Shared by the file, the defaults and the
 * command line.  Each returns 0, -EINVAL with a message in msg, or -ENOMEM.
 */

static const char *const addr_expected = "expected host:port, [v6addr]:port or :port";

/* `v` as the type writes it: 90000 ms -> "90s", 16384 -> "16KiB". */
static void value_text(enum key_type t, uint64_t v, char *buf, size_t len)
{
	if (t == KT_DURATION) {
		if (v == 0)
			snprintf(buf, len, "0s");
		else if (v % 3600000 == 0)
			snprintf(buf, len, "%lluh", (unsigned long long)(v / 3600000));
		else if (v % 60000 == 0)
			snprintf(buf, len, "%llum", (unsigned long long)(v / 60000));
		else if (v % 1000 == 0)
			snprintf(buf, len, "%llus", (unsigned long long)(v / 1000));
		else
			snprintf(buf, len, "%llums", (unsigned long long)v);
	} else if (t == KT_SIZE && v != 0 && v % GIB == 0) {
		snprintf(buf, len, "%lluGiB", (unsigned long long)(v / GIB));
	} else if (t == KT_SIZE && v != 0 && v % MIB == 0) {
		snprintf(buf, len, "%lluMiB", (unsigned long long)(v / MIB));
	} else if (t == KT_SIZE && v != 0 && v % KIB == 0) {
		snprintf(buf, len, "%lluKiB", (unsigned long long)(v / KIB));
	} else if (t == KT_PERCENT) {
		snprintf(buf, len, "%llu%%", (unsigned long long)v);
	} else {
		snprintf(buf, len, "%llu", (unsigned long long)v);
	}
}

/* "1..256", "at least 1ms", or "" when any value of the type is fine. */
static void range_text(const struct key_def *k, char *buf, size_t len)
{
	char lo[32], hi[32];

	value_text(k->type, k->min, lo, sizeof(lo));
	value_text(k->type, k->max, hi, sizeof(hi));
	if (k->max)
		snprintf(buf, len, "%s..%s", lo, hi);
	else if (k->min)
		snprintf(buf, len, "at least %s", lo);
	else
		buf[0] = '\0';
}

static bool in_range(const struct key_def *k, uint64_t v)
{
	return v >= k->min && (k->max == 0 || v <= k->max);
}

static int out_of_range(const struct key_def *k, const char *text, char *msg, size_t len)
{
	char range[80];

	range_text(k, range, sizeof(range));
	snprintf(msg, len, "%s is out of range (expected %s%s)", text, range,
	         k->type == KT_WORKERS ? " or auto" : "");
	return -EINVAL;
}

/* Digits only, no sign, at most UINT_MAX. */
static int parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT_MAX)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes \r \n \t \\ \xNN from s (len bytes) into a new buffer. */
static int decode_escapes(const char *s, size_t len, char **out, size_t *out_len, char *msg,
                          size_t msglen)
{
	char *buf = malloc(len + 1);
	size_t n = 0;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\\') {
			buf[n++] = s[i];
			continue;
		}
		char c = i + 1 < len ? s[i + 1] : '\0';
		int hi, lo;

		if (c == 'r' || c == 'n' || c == 't' || c == '\\') {
			buf[n++] = c == 'r' ? '\r' : c == 'n' ? '\n' : c == 't' ? '\t' : '\\';
			i++;
			continue;
		}
		if (c == 'x' && i + 3 < len && (hi = hex_value(s[i + 2])) >= 0 &&
		    (lo = hex_value(s[i + 3])) >= 0) {
			buf[n++] = (char)(hi << 4 | lo);
			i += 3;
			continue;
		}
		free(buf);
		int shown = (int)(len - i < 4 ? len - i : 4);
		snprintf(msg, msglen,
		         "invalid escape \"%.*s\" (expected \\r, \\n, \\t, \\\\ or \\xNN)", shown,
		         s + i);
		return -EINVAL;
	}
	buf[n] = '\0';
	*out = buf;
	*out_len = n;
	return 0;
}

static bool valid_name(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '-'))
			return false;
	return true;
}

/* Parses an address into a (possibly already set) cfg_addr.  A host name is
 * kept as text with salen 0: reject_unsupported() reports it. */
static int set_addr(struct cfg_addr *a, const char *text, char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	bool wildcard = false;
	int rc = parse_address(text, &ss, &len, &wildcard);

	if (rc == -EINVAL) {
		snprintf(msg, msglen, "invalid address \"%s\" (%s)", text, addr_expected);
		return -EINVAL;
	}
	char *dup = strdup(text);
	if (!dup)
		return -ENOMEM;
	free(a->text);
	memset(a, 0, sizeof(*a));
	a->text = dup;
	if (rc == 0) {
		a->sa = ss;
		a->salen = len;
		a->wildcard = wildcard;
	}
	return 0;
}

static int set_cidr(struct cidr *c, const char *text, char *msg, size_t msglen)
{
	if (parse_cidr(text, c) < 0) {
		snprintf(
		    msg, msglen,
		    "invalid CIDR \"%s\" (expected address/prefix, e.g. 10.0.0.0/8 or ::1/128)",
		    text);
		return -EINVAL;
	}
	return 0;
}

/* Writes the scalar `text` (len bytes; only KT_BYTES may hold NULs) into the
 * field of key k at base. */
static int set_scalar(const struct key_def *k, const char *text, size_t len, char *base, char *msg,
                      size_t msglen)
{
	void *field = base + k->off;
	uint64_t v;
	unsigned u;
	int e;
	char list[128];

	switch (k->type) {
	case KT_BOOL: {
		bool b;

		if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "TRUE"))
			b = true;
		else if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "FALSE"))
			b = false;
		else {
			snprintf(msg, msglen, "invalid boolean \"%s\" (expected true or false)",
			         text);
			return -EINVAL;
		}
		memcpy(field, &b, sizeof(b));
		return 0;
	}
	case KT_UINT:
		if (parse_uint(text, &v) < 0) {
			snprintf(msg, msglen, "invalid number \"%s\" (expected a whole number)",
			         text);
			return -EINVAL;
		}
		if (!in_range(k, v))
			return out_of_range(k, text, msg, msglen);
		u = (unsigned)v;
		memcpy(field, &u, sizeof(u));
		return 0;
	case KT_WORKERS:
		if (!strcmp(text, "auto")) {
			u = 0;
			memcpy(field, &u, sizeof(u));
			return 0;
		}
		if (parse_uint(text, &v) < 0) {
			snprintf(msg, msglen,
			         "invalid value \"%s\" (expected a number of workers or auto)",
			         text);
			return -EINVAL;
		}
		if (!in_range(k, v))
			return out_of_range(k, text, msg, msglen);
		u = (unsigned)v;
		memcpy(field, &u, sizeof(u));
		return 0;
	case KT_DURATION:
		if (parse_duration_ms(text, &v) < 0) {
			snprintf(msg, msglen,
			         "invalid duration \"%s\" (expected a number with a unit: 250ms, "
			         "2s, 5m, 1h)",
			         text);
			return -EINVAL;
		}
		if (!in_range(k, v))
			return out_of_range(k, text, msg, msglen);
		memcpy(field, &v, sizeof(v));
		return 0;
	case KT_SIZE:
		if (parse_size(text, &v) < 0) {
			snprintf(msg, msglen,
			         "invalid size \"%s\" (expected bytes or KiB, MiB, GiB)", text);
			return -EINVAL;
		}
		if (!in_range(k, v))
			return out_of_range(k, text, msg, msglen);
		memcpy(field, &v, sizeof(v));
		return 0;
	case KT_PERCENT:
		if (parse_percent(text, &u) < 0) {
			snprintf(msg, msglen, "invalid percentage \"%s\" (expected 1%%..100%%)",
			         text);
			return -EINVAL;
		}
		memcpy(field, &u, sizeof(u));
		return 0;
	case KT_ENUM:
		if (enum_lookup(k->enums, text, &e) < 0) {
			enum_list(k->enums, list, sizeof(list));
			snprintf(msg, msglen, "unknown value \"%s\" (expected %s)", text, list);
			return -EINVAL;
		}
		memcpy(field, &e, sizeof(e));
		return 0;
	case KT_NAME:
		if (!valid_name(text)) {
			snprintf(
			    msg, msglen,
			    "invalid name \"%s\" (expected lowercase letters, digits, '_' and '-')",
			    text);
			return -EINVAL;
		}
		/* fall through */
	case KT_STRING: {
		char *dup = strdup(text), *old;

		if (!dup)
			return -ENOMEM;
		memcpy(&old, field, sizeof(old));
		free(old);
		memcpy(field, &dup, sizeof(dup));
		return 0;
	}
	case KT_BYTES: {
		char *buf, *old;
		size_t n;
		int rc = decode_escapes(text, len, &buf, &n, msg, msglen);

		if (rc < 0)
			return rc;
		memcpy(&old, field, sizeof(old));
		free(old);
		memcpy(field, &buf, sizeof(buf));
		memcpy(base + k->off_n, &n, sizeof(n));
		return 0;
	}
	case KT_ADDR:
		return set_addr(field, text, msg, msglen);
	case KT_ADDR_LIST:
	case KT_CIDR_LIST:
	case KT_SECTION:
	case KT_LIST:
		break;
	}
	snprintf(msg, msglen, "internal error: not a scalar key");
	return -EINVAL;
}

/* Sets every default of section `sec` into base (zeroed memory or a
 * config whose strings may already be set).  -ENOMEM or 0. */
static int apply_defaults(const struct section *sec, char *base)
{
	char msg[256];

	for (size_t i = 0; i < sec->n_keys; i++) {
		const struct key_def *k = &sec->keys[i];
		int rc = 0;

		if (k->type == KT_SECTION)
			rc = apply_defaults(k->sub, base);
		else if (k->def)
			rc = set_scalar(k, k->def, strlen(k->def), base, msg, sizeof(msg));
		if (rc < 0)
			return rc;
	}
	return 0;
}

static const struct key_def *find_key(const struct section *sec, const char *name)
{
	for (size_t i = 0; i < sec->n_keys; i++)
		if (strcmp(sec->keys[i].name, name) == 0)
			return &sec->keys[i];
	return NULL;
}

/* ------------------------------------------------------------------------
 * Freeing
 */

static void free_addrs(struct cfg_addr *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(a[i].text);
	free(a);
}

static void free_role(struct cfg_role *r)
{
	free(r->from);
	free_addrs(r->listen, r->n_listen);
	free_addrs(r->connect, r->n_connect);
}

static void free_service(struct cfg_service *s)
{
	free(s->name);
	free_addrs(s->listen, s->n_listen);
	free(s->allow);
	free(s->deny);
	for (size_t i = 0; i < s->n_backends; i++)
		free(s->backends[i].addr.text);
	free(s->backends);
	free(s->health.send);
	free(s->health.expect);
	for (size_t i = 0; i < s->n_mirrors; i++)
		free(s->mirrors[i].addr.text);
	free(s->mirrors);
	free_role(&s->inputs);
	free_role(&s->outputs);
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->user);
	free(cfg->group);
	free(cfg->admin.listen.text);
	for (size_t i = 0; i < cfg->n_services; i++)
		free_service(&cfg->services[i]);
	free(cfg->services);
	free(cfg);
}

struct config *config_new_default(void)
{
	struct config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	if (apply_defaults(&top_section, (char *)cfg) < 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* ------------------------------------------------------------------------
 * The loader: where each value came from, and error messages
 */

#define PATH_LEN 192

/* Where the value stored in `field` was written.  `node` tells a list
 * element (the mapping) from its first field, which has the same address. */
struct mark_rec {
	const void *field;
	bool node;
	bool has_mark; /* false on the command line */
	yaml_mark_t mark;
	char path[PATH_LEN];
};

struct loader {
	const char *file; /* NULL: command line, messages carry no position */
	char *err;
	size_t errlen;
	struct config *cfg;
	struct cfg_service *svc; /* service being parsed, for mode-only keys */
	struct mark_rec *marks;
	size_t n_marks, cap_marks;
};

static int vfail(struct loader *ld, const yaml_mark_t *m, const char *path, const char *fmt,
                 va_list ap)
{
	size_t used = 0;

	if (!ld->err || ld->errlen == 0)
		return -1;
	ld->err[0] = '\0';
	if (ld->file && m)
		used += (size_t)snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->file, m->line + 1,
		                         m->column + 1);
	else if (ld->file)
		used += (size_t)snprintf(ld->err, ld->errlen, "%s: ", ld->file);
	if (path && *path && used < ld->errlen)
		used += (size_t)snprintf(ld->err + used, ld->errlen - used, "%s: ", path);
	if (used < ld->errlen)
		vsnprintf(ld->err + used, ld->errlen - used, fmt, ap);
	return -1;
}

/* Writes "FILE:LINE:COL: path: message" and returns -1. */
__attribute__((format(printf, 4, 5))) static int fail(struct loader *ld, const yaml_mark_t *m,
                                                      const char *path, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail(ld, m, path, fmt, ap);
	va_end(ap);
	return rc;
}

static int oom(struct loader *ld)
{
	return fail(ld, NULL, NULL, "out of memory");
}

static int remember(struct loader *ld, const void *field, bool node, const yaml_mark_t *m,
                    const char *path)
{
	if (ld->n_marks == ld->cap_marks) {
		size_t cap = ld->cap_marks ? ld->cap_marks * 2 : 64;
		struct mark_rec *p = realloc(ld->marks, cap * sizeof(*p));

		if (!p)
			return oom(ld);
		ld->marks = p;
		ld->cap_marks = cap;
	}
	struct mark_rec *r = &ld->marks[ld->n_marks++];
	r->field = field;
	r->node = node;
	r->has_mark = m != NULL;
	if (m)
		r->mark = *m;
	snprintf(r->path, sizeof(r->path), "%s", path);
	return 0;
}

static const struct mark_rec *find_mark(const struct loader *ld, const void *field, bool node)
{
	for (size_t i = 0; i < ld->n_marks; i++)
		if (ld->marks[i].field == field && ld->marks[i].node == node)
			return &ld->marks[i];
	return NULL;
}

static const char *path_of(const struct loader *ld, const void *field, bool node)
{
	const struct mark_rec *r = find_mark(ld, field, node);

	return r ? r->path : "?";
}

/* "path.key", or "key" at the top level; a path too long is cut short. */
static void child_path(char *buf, size_t len, const char *path, const char *key)
{
	int n = path[0] ? snprintf(buf, len, "%s.%s", path, key) : snprintf(buf, len, "%s", key);

	if (n < 0 || (size_t)n >= len)
		buf[len - 1] = '\0';
}

/* "path[i]"; a path too long is cut short. */
static void index_path(char *buf, size_t len, const char *path, size_t i)
{
	int n = snprintf(buf, len, "%s[%zu]", path, i);

	if (n < 0 || (size_t)n >= len)
		buf[len - 1] = '\0';
}

/* An error about a value checked after parsing.  It points at where `field`
 * was written; when the key was left out, at the mapping `parent` (a node
 * mark) with the key path parent.key. */
__attribute__((format(printf, 5, 6))) static int fail_field(struct loader *ld, const void *field,
                                                            const void *parent, const char *key,
                                                            const char *fmt, ...)
{
	const struct mark_rec *r = find_mark(ld, field, false);
	char path[PATH_LEN];
	va_list ap;
	int rc;

	if (r) {
		snprintf(path, sizeof(path), "%s", r->path);
	} else {
		r = parent ? find_mark(ld, parent, true) : NULL;
		child_path(path, sizeof(path), r ? r->path : "", key);
	}
	va_start(ap, fmt);
	rc = vfail(ld, r && r->has_mark ? &r->mark : NULL, path, fmt, ap);
	va_end(ap);
	return rc;
}

/* ------------------------------------------------------------------------
 * Walking the YAML tree
 */

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

/* A plain empty value, "~" or "null". */
static bool is_null(const yaml_node_t *n)
{
	const char *v;

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	v = (const char *)n->data.scalar.value;
	return !strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
	       !strcmp(v, "NULL");
}

/* What a key's value should look like, for "expected X, got Y". */
static void key_expects(const struct key_def *k, char *buf, size_t len)
{
	static const char *const what[] = {
	    [KT_BOOL] = "true or false",
	    [KT_UINT] = "a number",
	    [KT_WORKERS] = "a number or auto",
	    [KT_DURATION] = "a duration",
	    [KT_SIZE] = "a size",
	    [KT_PERCENT] = "a percentage",
	    [KT_STRING] = "a string",
	    [KT_NAME] = "a name",
	    [KT_BYTES] = "a string",
	    [KT_ADDR] = "an address",
	    [KT_ADDR_LIST] = "a list of addresses",
	    [KT_CIDR_LIST] = "a list of CIDR blocks",
	    [KT_SECTION] = "a mapping",
	    [KT_LIST] = "a list",
	};
	char list[128];

	if (k->type == KT_ENUM) {
		enum_list(k->enums, list, sizeof(list));
		snprintf(buf, len, "one of %s", list);
	} else {
		snprintf(buf, len, "%s", what[k->type]);
	}
}

static int wrong_type(struct loader *ld, const struct key_def *k, yaml_node_t *v, const char *path)
{
	char what[160];

	key_expects(k, what, sizeof(what));
	if (is_null(v))
		return fail(ld, &v->start_mark, path, "missing value (expected %s)", what);
	return fail(ld, &v->start_mark, path, "expected %s, got %s", what, node_kind(v));
}

static int parse_section(struct loader *ld, const struct section *sec, yaml_document_t *doc,
                         yaml_node_t *node, char *base, const char *path);

static int parse_scalar_key(struct loader *ld, const struct key_def *k, yaml_node_t *v, char *base,
                            const char *path)
{
	const char *text = (const char *)v->data.scalar.value;
	size_t len = v->data.scalar.length;
	char msg[384];
	int rc;

	if (v->type != YAML_SCALAR_NODE)
		return wrong_type(ld, k, v, path);
	if (is_null(v)) {
		if (k->type != KT_STRING && k->type != KT_BYTES)
			return wrong_type(ld, k, v, path);
		text = "";
		len = 0;
	}
	if (k->type != KT_BYTES && strlen(text) != len)
		return fail(ld, &v->start_mark, path, "invalid value (contains a NUL character)");
	rc = set_scalar(k, text, len, base, msg, sizeof(msg));
	if (rc == -ENOMEM)
		return oom(ld);
	if (rc < 0)
		return fail(ld, &v->start_mark, path, "%s", msg);
	return 0;
}

/* A list of addresses or CIDR blocks; null is an empty list. */
static int parse_scalar_list(struct loader *ld, const struct key_def *k, yaml_document_t *doc,
                             yaml_node_t *v, char *base, const char *path)
{
	bool addrs = k->type == KT_ADDR_LIST;
	size_t elem = addrs ? sizeof(struct cfg_addr) : sizeof(struct cidr);
	char item_path[PATH_LEN], msg[384];
	size_t n;
	char *arr;

	if (is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return wrong_type(ld, k, v, path);
	n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (n == 0)
		return 0;
	arr = calloc(n, elem);
	if (!arr)
		return oom(ld);
	memcpy(base + k->off, &arr, sizeof(arr));
	memcpy(base + k->off_n, &n, sizeof(n));

	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = yaml_document_get_node(doc, v->data.sequence.items.start[i]);
		const char *text = (const char *)item->data.scalar.value;
		int rc;

		index_path(item_path, sizeof(item_path), path, i);
		if (item->type != YAML_SCALAR_NODE || is_null(item))
			return fail(ld, &item->start_mark, item_path, "expected %s, got %s",
			            addrs ? "an address" : "a CIDR block",
			            is_null(item) ? "null" : node_kind(item));
		if (remember(ld, arr + i * elem, false, &item->start_mark, item_path) < 0)
			return -1;
		if (addrs)
			rc = set_addr((struct cfg_addr *)(arr + i * elem), text, msg, sizeof(msg));
		else
			rc = set_cidr((struct cidr *)(arr + i * elem), text, msg, sizeof(msg));
		if (rc == -ENOMEM)
			return oom(ld);
		if (rc < 0)
			return fail(ld, &item->start_mark, item_path, "%s", msg);
	}
	return 0;
}

/* A list of mappings (services, backends, mirrors); null is an empty list. */
static int parse_list(struct loader *ld, const struct key_def *k, yaml_document_t *doc,
                      yaml_node_t *v, char *base, const char *path)
{
	const struct section *sub = k->sub;
	char item_path[PATH_LEN];
	size_t n;
	char *arr;

	if (is_null(v))
		return 0;
	if (v->type != YAML_SEQUENCE_NODE)
		return wrong_type(ld, k, v, path);
	n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (n == 0)
		return 0;
	arr = calloc(n, sub->elem_size);
	if (!arr)
		return oom(ld);
	memcpy(base + k->off, &arr, sizeof(arr));
	memcpy(base + k->off_n, &n, sizeof(n));

	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = yaml_document_get_node(doc, v->data.sequence.items.start[i]);
		char *elem = arr + i * sub->elem_size;
		int rc;

		index_path(item_path, sizeof(item_path), path, i);
		if (apply_defaults(sub, elem) < 0)
			return oom(ld);
		if (remember(ld, elem, true, &item->start_mark, item_path) < 0)
			return -1;
		if (item->type != YAML_MAPPING_NODE)
			return fail(ld, &item->start_mark, item_path, "expected a mapping, got %s",
			            is_null(item) ? "null" : node_kind(item));
		struct cfg_service *outer = ld->svc;

		if (sub == &service_section)
			ld->svc = (struct cfg_service *)elem;
		rc = parse_section(ld, sub, doc, item, elem, item_path);
		ld->svc = outer;
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int parse_value(struct loader *ld, const struct key_def *k, yaml_document_t *doc,
                       yaml_node_t *v, char *base, const char *path)
{
	if (k->type != KT_SECTION || (k->flags & KEY_PRESENCE)) {
		if (remember(ld, base + k->off, false, &v->start_mark, path) < 0)
			return -1;
	}
	switch (k->type) {
	case KT_SECTION:
		if (k->flags & KEY_PRESENCE) {
			bool present = true;

			memcpy(base + k->off, &present, sizeof(present));
		}
		return parse_section(ld, k->sub, doc, v, base, path);
	case KT_LIST:
		return parse_list(ld, k, doc, v, base, path);
	case KT_ADDR_LIST:
	case KT_CIDR_LIST:
		return parse_scalar_list(ld, k, doc, v, base, path);
	default:
		return parse_scalar_key(ld, k, v, base, path);
	}
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static int unknown_key(struct loader *ld, const struct section *sec, yaml_node_t *key,
                       const char *path)
{
	const char *name = (const char *)key->data.scalar.value;
	const char *best = NULL;
	size_t best_d = 3;

	for (size_t i = 0; i < sec->n_keys; i++) {
		size_t d = edit_distance(name, sec->keys[i].name);

		if (d < best_d) {
			best_d = d;
			best = sec->keys[i].name;
		}
	}
	if (best)
		return fail(ld, &key->start_mark, path, "unknown key (did you mean \"%s\"?)", best);
	return fail(ld, &key->start_mark, path, "unknown key");
}

/* Parses the mapping `node` with the keys of `sec` into base.  Null counts
 * as an empty mapping. */
static int parse_section(struct loader *ld, const struct section *sec, yaml_document_t *doc,
                         yaml_node_t *node, char *base, const char *path)
{
	yaml_node_pair_t *pairs = NULL;
	size_t n = 0;
	uint64_t seen = 0;
	char key_path[PATH_LEN];

	if (node && !is_null(node)) {
		if (node->type != YAML_MAPPING_NODE) {
			if (!path[0])
				return fail(ld, &node->start_mark, NULL,
				            "expected a mapping of top-level keys, got %s",
				            node_kind(node));
			return fail(ld, &node->start_mark, path, "expected a mapping, got %s",
			            node_kind(node));
		}
		pairs = node->data.mapping.pairs.start;
		n = (size_t)(node->data.mapping.pairs.top - pairs);
	}

	/* Keys first: unknown and repeated keys are reported in file order. */
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *key = yaml_document_get_node(doc, pairs[i].key);
		const struct key_def *k;

		if (key->type != YAML_SCALAR_NODE)
			return fail(ld, &key->start_mark, path, "expected a key name, got %s",
			            node_kind(key));
		child_path(key_path, sizeof(key_path), path, (const char *)key->data.scalar.value);
		k = find_key(sec, (const char *)key->data.scalar.value);
		if (!k)
			return unknown_key(ld, sec, key, key_path);
		uint64_t bit = 1ULL << (k - sec->keys);
		if (seen & bit)
			return fail(ld, &key->start_mark, key_path, "duplicate key");
		seen |= bit;
	}

	/* Then values, the lead key (a service's mode) before the others. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			yaml_node_t *key = yaml_document_get_node(doc, pairs[i].key);
			yaml_node_t *val = yaml_document_get_node(doc, pairs[i].value);
			const struct key_def *k =
			    find_key(sec, (const char *)key->data.scalar.value);
			bool lead = sec->lead_key && !strcmp(k->name, sec->lead_key);
			int rc;

			if (lead != (pass == 0))
				continue;
			child_path(key_path, sizeof(key_path), path, k->name);
			if ((k->flags & KEY_PROXY) && ld->svc && ld->svc->mode != MODE_PROXY)
				return fail(ld, &key->start_mark, key_path,
				            "only valid with mode: proxy");
			if ((k->flags & KEY_FANOUT) && ld->svc && ld->svc->mode != MODE_FANOUT)
				return fail(ld, &key->start_mark, key_path,
				            "only valid with mode: fanout");
			rc = parse_value(ld, k, doc, val, base, key_path);
			if (rc < 0)
				return rc;
		}
	}

	for (size_t i = 0; i < sec->n_keys; i++) {
		if (!(sec->keys[i].flags & KEY_REQUIRED) || (seen & (1ULL << i)))
			continue;
		if (!node)
			return fail(ld, NULL, path, "missing required key \"%s\"",
			            sec->keys[i].name);
		return fail(ld, &node->start_mark, path, "missing required key \"%s\"",
		            sec->keys[i].name);
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Checks across keys, after parsing
 */

static bool addr_equal(const struct cfg_addr *a, const struct cfg_addr *b)
{
	if (a->salen == 0 || b->salen == 0)
		return a->salen == b->salen && strcmp(a->text, b->text) == 0;
	return a->salen == b->salen && memcmp(&a->sa, &b->sa, a->salen) == 0;
}

static int check_proxy(struct loader *ld, struct cfg_service *s)
{
	if (s->n_listen == 0)
		return fail_field(ld, &s->listen, s, "listen",
		                  "a proxy service needs at least one listen address");
	if (s->n_backends == 0)
		return fail_field(ld, &s->backends, s, "backends",
		                  "a proxy service needs at least one backend");
	for (size_t i = 0; i < s->n_backends; i++) {
		for (size_t j = 0; j < i; j++) {
			if (!addr_equal(&s->backends[i].addr, &s->backends[j].addr))
				continue;
			const char *first = path_of(ld, &s->backends[j].addr, false);
			const char *here = path_of(ld, &s->backends[i].addr, false);

			if (strcmp(first, here) == 0)
				return fail_field(ld, &s->backends[i].addr, NULL, "backends",
				                  "duplicate backend address \"%s\"",
				                  s->backends[i].addr.text);
			return fail_field(ld, &s->backends[i].addr, NULL, "backends",
			                  "duplicate backend address \"%s\" (also %s)",
			                  s->backends[i].addr.text, first);
		}
	}
	for (size_t i = 0; i < s->n_mirrors; i++) {
		for (size_t j = 0; j < i; j++) {
			if (addr_equal(&s->mirrors[i].addr, &s->mirrors[j].addr))
				return fail_field(ld, &s->mirrors[i].addr, NULL, "mirrors",
				                  "duplicate mirror address \"%s\" (also %s)",
				                  s->mirrors[i].addr.text,
				                  path_of(ld, &s->mirrors[j].addr, false));
		}
	}
	return 0;
}

static int check_fanout(struct loader *ld, struct cfg_service *s)
{
	bool shared_roles = s->inputs.n_from > 0 || s->outputs.n_from > 0;

	if (s->out_on_lag == LAG_DROP && s->framing != FRAMING_LINE)
		return fail_field(ld, &s->out_on_lag, s, "outputs.on_lag",
		                  "drop needs framing: line (whole records are dropped)");
	if (s->inputs.n_from > 0 && s->n_listen == 0)
		return fail_field(ld, &s->inputs.from, s, "inputs.from",
		                  "needs the service's listen addresses (the shared port)");
	if (s->outputs.n_from > 0 && s->n_listen == 0)
		return fail_field(ld, &s->outputs.from, s, "outputs.from",
		                  "needs the service's listen addresses (the shared port)");
	if (s->n_listen > 0 && !shared_roles)
		return fail_field(ld, &s->listen, s, "listen",
		                  "a shared port needs inputs.from or outputs.from to tell inputs "
		                  "from outputs");
	if (s->inputs.n_from == 0 && s->inputs.n_listen == 0 && s->inputs.n_connect == 0)
		return fail_field(ld, NULL, s, "inputs",
		                  "a fanout service needs at least one input (inputs.from, "
		                  "inputs.listen or inputs.connect)");
	if (s->outputs.n_from == 0 && s->outputs.n_listen == 0 && s->outputs.n_connect == 0)
		return fail_field(ld, NULL, s, "outputs",
		                  "a fanout service needs at least one output (outputs.from, "
		                  "outputs.listen or outputs.connect)");
	return 0;
}

static int check_service(struct loader *ld, struct cfg_service *s)
{
	return s->mode == MODE_PROXY ? check_proxy(ld, s) : check_fanout(ld, s);
}

/* Every address ferry listens on, to catch one port given twice. */
static int check_listen_unique(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	const struct cfg_addr **all = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	for (size_t i = 0; i < cfg->n_services; i++) {
		struct cfg_service *s = &cfg->services[i];
		const struct {
			struct cfg_addr *a;
			size_t n;
		} lists[] = {{s->listen, s->n_listen},
		             {s->inputs.listen, s->inputs.n_listen},
		             {s->outputs.listen, s->outputs.n_listen}};

		for (size_t l = 0; l < 3; l++) {
			for (size_t j = 0; j < lists[l].n; j++) {
				if (n == cap) {
					size_t ncap = cap ? cap * 2 : 16;
					const struct cfg_addr **p = realloc(all, ncap * sizeof(*p));

					if (!p) {
						free(all);
						return oom(ld);
					}
					all = p;
					cap = ncap;
				}
				all[n++] = &lists[l].a[j];
			}
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		for (size_t j = 0; j < i; j++) {
			if (!addr_equal(all[i], all[j]))
				continue;
			rc = fail_field(ld, all[i], NULL, "listen",
			                "address \"%s\" is already used by %s", all[i]->text,
			                path_of(ld, all[j], false));
			break;
		}
	}
	free(all);
	return rc;
}

/* user and group must exist when the file is loaded, so that `ferry -t`
 * (and a reload) reports a typo at its line rather than at the drop. */
static int check_user_group(struct loader *ld)
{
	struct config *cfg = ld->cfg;
	struct privdrop_ids ids;
	bool in_group;
	char msg[512];

	if (privdrop_resolve(cfg->user, cfg->group, &ids, &in_group, msg, sizeof(msg)) == 0)
		return 0;
	if (in_group)
		return fail_field(ld, &cfg->group, NULL, "group", "%s", msg);
	return fail_field(ld, &cfg->user, NULL, "user", "%s", msg);
}

static int validate(struct loader *ld)
{
	struct config *cfg = ld->cfg;

	if (cfg->n_services == 0)
		return fail_field(ld, &cfg->services, cfg, "services",
		                  "at least one service is required");
	for (size_t i = 0; i < cfg->n_services; i++) {
		struct cfg_service *s = &cfg->services[i];

		for (size_t j = 0; j < i; j++)
			if (strcmp(s->name, cfg->services[j].name) == 0)
				return fail_field(
				    ld, &s->name, s, "name",
				    "duplicate service name \"%s\" (also services[%zu])", s->name,
				    j);
		if (check_service(ld, s) < 0)
			return -1;
	}
	if (check_listen_unique(ld) < 0)
		return -1;
	return check_user_group(ld);
}

/* ========================================================================
 * NOT SUPPORTED YET
 *
 * Everything below was parsed and validated like any other key, but this
 * version of ferry cannot act on it yet.  This is the one place that says
 * so: when a feature lands, delete its line here (and its row in the "not
 * supported yet" list of docs/configuration.md, and its test).
 * ======================================================================== */

/* Every address may be a host name: main resolves them without blocking
 * the loop (backends and mirrors through the relay, the others by
 * expanding the lists). */
static int reject_unsupported_service(struct loader *ld, struct cfg_service *s)
{
	if (s->mode == MODE_FANOUT && s->accept_proxy_protocol)
		return fail_field(
		    ld, &s->accept_proxy_protocol, s, "accept_proxy_protocol",
		    "accepting PROXY headers in a fan-out service is not supported yet");
	return 0;
}

static int reject_unsupported(struct loader *ld)
{
	struct config *cfg = ld->cfg;

	for (size_t i = 0; i < cfg->n_services; i++)
		if (reject_unsupported_service(ld, &cfg->services[i]) < 0)
			return -1;
	return 0;
}

/* ======================================================================== */

/* ------------------------------------------------------------------------
 * Entry points
 */

/* True when line `line` (0-based) of the input is indented with a tab. */
static bool tab_indented(const char *s, size_t len, size_t line)
{
	size_t i = 0;

	for (size_t l = 0; l < line && i < len; i++)
		if (s[i] == '\n')
			l++;
	for (; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
		if (s[i] == '\t')
			return true;
	return false;
}

static int syntax_error(struct loader *ld, yaml_parser_t *p, const char *input, size_t len)
{
	/* Some of libyaml's allocation failures leave no problem text. */
	if (p->error == YAML_MEMORY_ERROR || !p->problem)
		return oom(ld);
	if (p->error == YAML_READER_ERROR) {
		/* Bad encoding: libyaml gives a byte offset, not a mark. */
		yaml_mark_t m = {0, 0, 0};

		for (size_t i = 0; i < p->problem_offset && i < len; i++) {
			if (input[i] == '\n') {
				m.line++;
				m.column = 0;
			} else if (((unsigned char)input[i] & 0xc0) != 0x80) {
				m.column++;
			}
		}
		return fail(ld, &m, NULL, "YAML syntax error: %s", p->problem);
	}
	return fail(ld, &p->problem_mark, NULL, "YAML syntax error: %s%s", p->problem,
	            tab_indented(input, len, p->problem_mark.line)
	                ? " (tabs cannot indent YAML: use spaces)"
	                : "");
}

static int load_document(struct loader *ld, yaml_parser_t *parser, yaml_document_t *doc,
                         const char *input, size_t len)
{
	yaml_node_t *root;
	yaml_document_t extra;
	int rc;

	root = yaml_document_get_root_node(doc);
	if (!yaml_parser_load(parser, &extra))
		return syntax_error(ld, parser, input, len);
	yaml_node_t *second = yaml_document_get_root_node(&extra);
	if (second) {
		rc = fail(ld, &extra.start_mark, NULL,
		          "only one YAML document is allowed (found a second one)");
		yaml_document_delete(&extra);
		return rc;
	}
	yaml_document_delete(&extra);

	if (root && remember(ld, ld->cfg, true, &root->start_mark, "") < 0)
		return -1;
	if (root && parse_section(ld, &top_section, doc, root, (char *)ld->cfg, "") < 0)
		return -1;
	if (!root) {
		yaml_mark_t start = {0, 0, 0};

		return fail(ld, &start, "services", "at least one service is required");
	}
	if (validate(ld) < 0)
		return -1;
	return reject_unsupported(ld);
}

int config_load_string(const char *yaml, size_t len, const char *path, struct config **out,
                       char *err, size_t errlen)
{
	int saved_errno = errno;
	struct loader ld = {.file = path ? path : "<string>", .err = err, .errlen = errlen};
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc = -1;

	if (err && errlen)
		err[0] = '\0';
	*out = NULL;
	ld.cfg = config_new_default();
	if (!ld.cfg) {
		oom(&ld);
		goto out;
	}
	ld.cfg->path = strdup(ld.file);
	if (!ld.cfg->path) {
		oom(&ld);
		goto out_cfg;
	}
	if (!yaml_parser_initialize(&parser)) {
		oom(&ld);
		goto out_cfg;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		syntax_error(&ld, &parser, yaml, len);
		goto out_parser;
	}
	rc = load_document(&ld, &parser, &doc, yaml, len);
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
out_cfg:
	if (rc == 0)
		*out = ld.cfg;
	else
		config_free(ld.cfg);
out:
	free(ld.marks);
	errno = saved_errno;
	return rc == 0 ? 0 : -1;
}

#define CONFIG_FILE_MAX (16 * 1024 * 1024)

int config_load_file(const char *path, struct config **out, char *err, size_t errlen)
{
	int saved_errno = errno;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	FILE *f;
	int rc = -1;

	*out = NULL;
	f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	for (;;) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			char *p;

			if (ncap > CONFIG_FILE_MAX + 1)
				ncap = CONFIG_FILE_MAX + 1;
			if (len == ncap) {
				snprintf(err, errlen, "%s: file too large (more than %d MiB)", path,
				         CONFIG_FILE_MAX / (1024 * 1024));
				goto out_buf;
			}
			p = realloc(buf, ncap);
			if (!p) {
				snprintf(err, errlen, "%s: out of memory", path);
				goto out_buf;
			}
			buf = p;
			cap = ncap;
		}
		size_t got = fread(buf + len, 1, cap - len, f);

		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto out_buf;
	}
	rc = config_load_string(buf ? buf : "", len, path, out, err, errlen);
out_buf:
	free(buf);
	fclose(f);
out:
	errno = saved_errno;
	return rc;
}

/* Parses the values of one command-line flag into the addresses at offset
 * `off` of the n elements (each `size` bytes) of arr, after giving each
 * element the defaults of `sec` (NULL: none). */
static int cli_addrs(struct loader *ld, const char *flag, char **values, size_t n, char *arr,
                     size_t size, size_t off, const struct section *sec)
{
	char msg[384], path[PATH_LEN];

	for (size_t i = 0; i < n; i++) {
		char *elem = arr + i * size;
		struct cfg_addr *a = (struct cfg_addr *)(elem + off);
		const char *text = values[i] ? values[i] : "";
		int rc;

		if (sec && apply_defaults(sec, elem) < 0)
			return oom(ld);
		snprintf(path, sizeof(path), "%s \"%s\"", flag, text);
		if (remember(ld, a, false, NULL, path) < 0)
			return -1;
		rc = set_addr(a, text, msg, sizeof(msg));
		if (rc == -ENOMEM)
			return oom(ld);
		if (rc < 0)
			return fail(ld, NULL, path, "%s", msg);
	}
	return 0;
}

/* The command line's quick mode: one proxy service.  Errors name the flag
 * and the value: `--backend "x": invalid address "x" (...)`.  On error cfg
 * is left as it was. */
int config_add_cli_service(struct config *cfg, const char *name, char **listen, size_t n_listen,
                           char **backends, size_t n_backends, char **mirrors, size_t n_mirrors,
                           enum balance_alg balance, char *err, size_t errlen)
{
	int saved_errno = errno;
	struct loader ld = {.file = NULL, .err = err, .errlen = errlen, .cfg = cfg};
	struct cfg_service svc, *grown;
	int rc = -1;

	if (err && errlen)
		err[0] = '\0';
	memset(&svc, 0, sizeof(svc));
	if (apply_defaults(&service_section, (char *)&svc) < 0)
		goto out_oom;
	svc.balance = balance;
	if (!name || !valid_name(name)) {
		fail(
		    &ld, NULL, NULL,
		    "invalid service name \"%s\" (expected lowercase letters, digits, '_' and '-')",
		    name ? name : "");
		goto out;
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		if (strcmp(cfg->services[i].name, name) == 0) {
			fail(&ld, NULL, NULL, "duplicate service name \"%s\"", name);
			goto out;
		}
	}
	svc.name = strdup(name);
	if (!svc.name)
		goto out_oom;

	if (n_listen) {
		svc.listen = calloc(n_listen, sizeof(*svc.listen));
		if (!svc.listen)
			goto out_oom;
		svc.n_listen = n_listen;
	}
	if (n_backends) {
		svc.backends = calloc(n_backends, sizeof(*svc.backends));
		if (!svc.backends)
			goto out_oom;
		svc.n_backends = n_backends;
	}
	if (n_mirrors) {
		svc.mirrors = calloc(n_mirrors, sizeof(*svc.mirrors));
		if (!svc.mirrors)
			goto out_oom;
		svc.n_mirrors = n_mirrors;
	}
	if (cli_addrs(&ld, "--listen", listen, n_listen, (char *)svc.listen, sizeof(*svc.listen), 0,
	              NULL) < 0 ||
	    cli_addrs(&ld, "--backend", backends, n_backends, (char *)svc.backends,
	              sizeof(*svc.backends), offsetof(struct cfg_backend, addr),
	              &backend_section) < 0 ||
	    cli_addrs(&ld, "--mirror", mirrors, n_mirrors, (char *)svc.mirrors,
	              sizeof(*svc.mirrors), offsetof(struct cfg_mirror, addr), &mirror_section) < 0)
		goto out;

	/* The same checks as for a file, with the flags as key paths. */
	if (remember(&ld, &svc.listen, false, NULL, "--listen") < 0 ||
	    remember(&ld, &svc.backends, false, NULL, "--backend") < 0 ||
	    remember(&ld, &svc.mirrors, false, NULL, "--mirror") < 0)
		goto out;
	if (check_proxy(&ld, &svc) < 0 || reject_unsupported_service(&ld, &svc) < 0)
		goto out;

	grown = realloc(cfg->services, (cfg->n_services + 1) * sizeof(*grown));
	if (!grown)
		goto out_oom;
	cfg->services = grown;
	cfg->services[cfg->n_services++] = svc;
	rc = 0;
	goto out;
out_oom:
	oom(&ld);
out:
	if (rc < 0)
		free_service(&svc);
	free(ld.marks);
	errno = saved_errno;
	return rc;
}

/* ------------------------------------------------------------------------
 * Reference generator: gcc -DFERRY_CONFIG_DOCGEN -Isrc -D_GNU_SOURCE
 *   src/config/config.c src/config/parse.c src/core/privdrop.c src/core/log.c
 *   -lyaml && ./a.out
 * prints the key tables of docs/configuration.md from the tables above.
 */
#ifdef FERRY_CONFIG_DOCGEN
static void docgen_section(const struct section *sec)
{
	static const char *const type_names[] = {
	    [KT_BOOL] = "bool",
	    [KT_UINT] = "integer",
	    [KT_WORKERS] = "integer or `auto`",
	    [KT_DURATION] = "duration",
	    [KT_SIZE] = "size",
	    [KT_PERCENT] = "percentage",
	    [KT_ENUM] = "enum",
	    [KT_STRING] = "string",
	    [KT_NAME] = "name",
	    [KT_BYTES] = "string (escapes)",
	    [KT_ADDR] = "address",
	    [KT_ADDR_LIST] = "list of addresses",
	    [KT_CIDR_LIST] = "list of CIDRs",
	    [KT_SECTION] = "mapping",
	    [KT_LIST] = "list of mappings",
	};

	printf("| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n");
	for (size_t i = 0; i < sec->n_keys; i++) {
		const struct key_def *k = &sec->keys[i];
		char range[160], def[64];

		if (k->type == KT_ENUM)
			enum_list(k->enums, range, sizeof(range));
		else if (k->type == KT_WORKERS)
			snprintf(range, sizeof(range), "%llu..%llu or auto",
			         (unsigned long long)k->min, (unsigned long long)k->max);
		else
			range_text(k, range, sizeof(range));
		if (!range[0] && (k->type == KT_UINT || k->type == KT_DURATION))
			snprintf(range, sizeof(range), "any");
		if (k->flags & KEY_REQUIRED)
			snprintf(def, sizeof(def), "required");
		else if (k->def && k->type == KT_STRING)
			snprintf(def, sizeof(def), "`\"%s\"`", k->def);
		else if (k->def && k->type == KT_BYTES)
			snprintf(def, sizeof(def), "`''`");
		else if (k->def)
			snprintf(def, sizeof(def), "`%s`", k->def);
		else if (k->type == KT_ADDR_LIST || k->type == KT_CIDR_LIST || k->type == KT_LIST)
			snprintf(def, sizeof(def), "`[]`");
		else
			snprintf(def, sizeof(def), "absent");
		printf("| `%s`%s | %s | %s | %s | %s |\n", k->name,
		       k->flags & KEY_PROXY    ? " (proxy)"
		       : k->flags & KEY_FANOUT ? " (fanout)"
		                               : "",
		       type_names[k->type], def, range, k->doc);
	}
	for (size_t i = 0; i < sec->n_keys; i++) {
		const struct key_def *k = &sec->keys[i];

		if (k->sub) {
			printf("\n### `%s`\n\n", k->sub->name);
			docgen_section(k->sub);
		}
	}
}

int main(void);
int main(void)
{
	docgen_section(&top_section);
	return 0;
}
#endif
