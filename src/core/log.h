/* log.h - one line per event to stderr, as text or JSON (SPEC section 6).
 *
 *   text: 2026-11-23T10:00:00.123Z info event=close service=web bytes_in=512
 *   json: {"ts":"2026-11-23T10:00:00.123Z","level":"info","event":"close",...}
 *
 * A line is built field by field into a fixed buffer and written with one
 * write(2), so lines from several threads never interleave.  Nothing here
 * allocates.  Values containing spaces, quotes or '=' are quoted in text.
 */
#ifndef FERRY_CORE_LOG_H
#define FERRY_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

#define LOG_LINE_MAX 2048

void log_setup(enum log_level level, enum log_format format);
bool log_enabled(enum log_level level);

struct logline {
	char buf[LOG_LINE_MAX];
	unsigned len;
	enum log_format fmt;
	bool enabled;
};

/* Starts a line with ts, level and event; fields follow; log_end writes it. */
void log_begin(struct logline *l, enum log_level level, const char *event);
void log_str(struct logline *l, const char *key, const char *val);
void log_u64(struct logline *l, const char *key, uint64_t val);
void log_i64(struct logline *l, const char *key, int64_t val);
void log_fmt(struct logline *l, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_end(struct logline *l);

/* Shorthand: an event with a "msg" field. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
