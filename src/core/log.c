// SPDX-License-Identifier: Apache-2.0
// Structured log lines built on the stack and written with one write(2) each.
#include "core/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

#define LINE_MAX_BYTES 16384

enum sc_log_level sc_log_min_level = SC_LOG_INFO;
static enum sc_log_format log_format = SC_LOG_TEXT;
static const char *log_role;

static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };

void sc_log_setup(enum sc_log_level level, enum sc_log_format format, const char *role)
{
    sc_log_min_level = level;
    log_format = format;
    log_role = role;
}

int sc_log_level_parse(const char *s, enum sc_log_level *out)
{
    for (int i = 0; i <= SC_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum sc_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = SC_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

int sc_log_format_parse(const char *s, enum sc_log_format *out)
{
    if (strcmp(s, "json") == 0) {
        *out = SC_LOG_JSON;
    } else if (strcmp(s, "text") == 0) {
        *out = SC_LOG_TEXT;
    } else {
        return -EINVAL;
    }
    return 0;
}

struct line {
    char p[LINE_MAX_BYTES];
    size_t len;
    bool full;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->full || l->len + n > sizeof(l->p) - 16) {
        l->full = true;
        return;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct line *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
}

static void put_json_str(struct line *l, const char *s, size_t n)
{
    put(l, "\"", 1);
    if (!l->full && !sc_json_escape(l->p, sizeof(l->p) - 16, &l->len, s, n)) {
        l->full = true;
    }
    put(l, "\"", 1);
}

/* Text values are written bare when they are simple, else quoted with JSON escaping. */
static void put_text_str(struct line *l, const char *s, size_t n)
{
    bool bare = n > 0;
    for (size_t i = 0; i < n && bare; i++) {
        unsigned char c = (unsigned char)s[i];
        bare = c > 0x20 && c < 0x7f && c != '"' && c != '=' && c != '\\';
    }
    if (bare) {
        put(l, s, n);
    } else {
        put_json_str(l, s, n);
    }
}

static void put_value(struct line *l, const struct sc_log_field *f, bool json)
{
    switch (f->type) {
    case SC_LF_STR:
    case SC_LF_STRN: {
        const char *s = f->v.s ? f->v.s : "";
        size_t n = f->type == SC_LF_STR ? strlen(s) : (f->v.s ? f->len : 0);
        if (json) {
            put_json_str(l, s, n);
        } else {
            put_text_str(l, s, n);
        }
        break;
    }
    case SC_LF_INT:
        putf(l, "%lld", f->v.i);
        break;
    case SC_LF_UINT:
        putf(l, "%llu", f->v.u);
        break;
    case SC_LF_DBL:
        if (isfinite(f->v.d)) {
            putf(l, "%.6g", f->v.d);
        } else {
            put(l, json ? "null" : "NaN", json ? 4 : 3);
        }
        break;
    case SC_LF_BOOL:
        put(l, f->v.b ? "true" : "false", f->v.b ? 4 : 5);
        break;
    case SC_LF_END:
        break;
    }
}

static void put_time(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    putf(l, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
         tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

void sc_log_at(enum sc_log_level level, const char *msg, ...)
{
    if (level < sc_log_min_level || level >= SC_LOG_OFF) {
        return;
    }
    struct line l;
    l.len = 0;
    l.full = false;
    bool json = log_format == SC_LOG_JSON;
    const char *lname = level_names[level];

    if (json) {
        put(&l, "{\"ts\":\"", 7);
        put_time(&l);
        put(&l, "\",\"level\":\"", 11);
        put(&l, lname, strlen(lname));
        put(&l, "\"", 1);
        if (log_role) {
            put(&l, ",\"role\":", 8);
            put_json_str(&l, log_role, strlen(log_role));
        }
        put(&l, ",\"msg\":", 7);
        put_json_str(&l, msg, strlen(msg));
    } else {
        put_time(&l);
        put(&l, " ", 1);
        put(&l, lname, strlen(lname));
        put(&l, " ", 1);
        put(&l, msg, strlen(msg));
    }

    /* On overflow the line rolls back to the last whole field, so JSON stays well formed. */
    size_t safe = l.full ? 0 : l.len;
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        struct sc_log_field f = va_arg(ap, struct sc_log_field);
        if (f.type == SC_LF_END || l.full) {
            break;
        }
        if (json) {
            put(&l, ",", 1);
            put_json_str(&l, f.key, strlen(f.key));
            put(&l, ":", 1);
        } else {
            put(&l, " ", 1);
            put(&l, f.key, strlen(f.key));
            put(&l, "=", 1);
        }
        put_value(&l, &f, json);
        if (!l.full) {
            safe = l.len;
        }
    }
    va_end(ap);

    /* put() keeps 16 bytes spare for this tail. */
    if (l.full) {
        l.len = safe;
        l.full = false;
        put(&l, json ? ",\"truncated\":true" : " truncated=true", json ? 17 : 15);
    }
    if (json) {
        l.p[l.len++] = '}';
    }
    l.p[l.len++] = '\n';
    const char *p = l.p;
    size_t n = l.len;
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}
