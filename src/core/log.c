/* log.c - text and JSON event lines on stderr; see log.h. */
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_INFO;
static enum log_format log_form = LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, enum log_format format)
{
	log_min = level;
	log_form = format;
}

bool log_enabled(enum log_level level)
{
	return level >= log_min;
}

static void put(struct logline *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "}\n" */
	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void puts_(struct logline *l, const char *s)
{
	put(l, s, strlen(s));
}

/* Writes s escaped for a JSON string body. */
static void put_json_str(struct logline *l, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(l, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(l, esc, 6);
		} else {
			put(l, (const char *)&c, 1);
		}
	}
}

/* Text values are bare unless they hold a space, quote, '=' or control. */
static void put_text_val(struct logline *l, const char *s)
{
	bool quote = *s == '\0';
	for (const char *p = s; *p; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
			quote = true;
	if (!quote) {
		puts_(l, s);
		return;
	}
	put(l, "\"", 1);
	put_json_str(l, s);
	put(l, "\"", 1);
}

static void put_key(struct logline *l, const char *key)
{
	if (l->fmt == LOG_JSON) {
		put(l, ",\"", 2);
		puts_(l, key);
		put(l, "\":", 2);
	} else {
		put(l, " ", 1);
		puts_(l, key);
		put(l, "=", 1);
	}
}

void log_begin(struct logline *l, enum log_level level, const char *event)
{
	l->enabled = log_enabled(level);
	l->len = 0;
	l->fmt = log_form;
	if (!l->enabled)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[96];
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (long)(ts.tv_nsec / 1000000) % 1000);
	if (l->fmt == LOG_JSON) {
		puts_(l, "{\"ts\":\"");
		puts_(l, stamp);
		puts_(l, "\",\"level\":\"");
		puts_(l, level_names[level]);
		puts_(l, "\",\"event\":\"");
		put_json_str(l, event);
		put(l, "\"", 1);
	} else {
		puts_(l, stamp);
		put(l, " ", 1);
		puts_(l, level_names[level]);
		puts_(l, " event=");
		puts_(l, event);
	}
}

void log_str(struct logline *l, const char *key, const char *val)
{
	if (!l->enabled)
		return;
	put_key(l, key);
	if (l->fmt == LOG_JSON) {
		put(l, "\"", 1);
		put_json_str(l, val);
		put(l, "\"", 1);
	} else {
		put_text_val(l, val);
	}
}

void log_u64(struct logline *l, const char *key, uint64_t val)
{
	if (!l->enabled)
		return;
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)val);
	put_key(l, key);
	put(l, num, (size_t)n);
}

void log_i64(struct logline *l, const char *key, int64_t val)
{
	if (!l->enabled)
		return;
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)val);
	put_key(l, key);
	put(l, num, (size_t)n);
}

void log_fmt(struct logline *l, const char *key, const char *fmt, ...)
{
	if (!l->enabled)
		return;
	char val[LOG_LINE_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	log_str(l, key, val);
}

void log_end(struct logline *l)
{
	if (!l->enabled)
		return;
	if (l->fmt == LOG_JSON)
		l->buf[l->len++] = '}';
	l->buf[l->len++] = '\n';
	/* One write per line; a short write to a pipe of this size does not
	 * happen, and a failing stderr must not stop the relay. */
	ssize_t r = write(STDERR_FILENO, l->buf, l->len);
	(void)r;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct logline l;
	log_begin(&l, level, event);
	if (!l.enabled)
		return;
	char val[LOG_LINE_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	log_str(&l, "msg", val);
	log_end(&l);
}
