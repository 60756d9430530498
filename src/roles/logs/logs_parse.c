// SPDX-License-Identifier: Apache-2.0
// Log line parsers: json, logfmt, regex with named groups, none, the CRI framing, and timestamp
// extraction. Every function here is pure and total on arbitrary bytes: a line that does not parse
// becomes {"message": line, "parse_error": true}, never an error that loses it, and every string
// put into an event is valid UTF-8 (invalid sequences become U+FFFD), so encoders never fail.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/logs/logs.h"

static void raw_event(struct logs_ev *ev, struct sc_str line, bool error)
{
    logs_ev_reset(ev);
    logs_ev_set(ev, SC_STR("message"), LOGS_V_STR, logs_ev_clean(ev, line));
    if (error) {
        logs_ev_set(ev, SC_STR("parse_error"), LOGS_V_TRUE, SC_STR_NULL);
    }
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *p, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* Nanoseconds since the epoch, or -EINVAL outside what int64_t holds (years before 1678 or
 * after 2262). */
static int secs_to_ns(int64_t secs, int64_t frac, int64_t *ns)
{
    if (secs > INT64_MAX / 1000000000 - 1 || secs < INT64_MIN / 1000000000 + 1) {
        return -EINVAL;
    }
    *ns = secs * 1000000000 + frac;
    return 0;
}

static int parse_rfc3339(struct sc_str s, int64_t *ns)
{
    const char *p = s.p;
    size_t n = s.len;
    unsigned Y, M, D, h, mi, se;
    if (n < 19 || !digits(p, 4, &Y) || p[4] != '-' || !digits(p + 5, 2, &M) || p[7] != '-' ||
        !digits(p + 8, 2, &D) || (p[10] != 'T' && p[10] != 't' && p[10] != ' ') ||
        !digits(p + 11, 2, &h) || p[13] != ':' || !digits(p + 14, 2, &mi) || p[16] != ':' ||
        !digits(p + 17, 2, &se)) {
        return -EINVAL;
    }
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || se > 60) {
        return -EINVAL;
    }
    size_t i = 19;
    int64_t frac = 0;
    if (i < n && (p[i] == '.' || p[i] == ',')) {
        i++;
        int nd = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (nd < 9) {
                frac = frac * 10 + (p[i] - '0');
                nd++;
            }
            i++;
        }
        if (nd == 0) {
            return -EINVAL;
        }
        for (; nd < 9; nd++) {
            frac *= 10;
        }
    }
    int64_t off = 0;
    if (i < n && (p[i] == 'Z' || p[i] == 'z')) {
        i++;
    } else if (i < n && (p[i] == '+' || p[i] == '-')) {
        unsigned oh, om;
        if (n - i < 6 || !digits(p + i + 1, 2, &oh) || p[i + 3] != ':' ||
            !digits(p + i + 4, 2, &om) || oh > 23 || om > 59) {
            return -EINVAL;
        }
        off = (int64_t)(oh * 3600 + om * 60) * (p[i] == '-' ? -1 : 1);
        i += 6;
    } else if (i != n) {
        return -EINVAL;
    }
    if (i != n) {
        return -EINVAL;
    }
    int64_t secs = days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + se - off;
    return secs_to_ns(secs, frac, ns);
}

/* "<digits>[.<digits>]" in units of <scale> nanoseconds, computed exactly in integers. */
static int parse_unix(struct sc_str s, int64_t scale, int64_t *ns)
{
    size_t i = 0;
    int64_t whole = 0;
    if (s.len == 0) {
        return -EINVAL;
    }
    for (; i < s.len && s.p[i] >= '0' && s.p[i] <= '9'; i++) {
        if (whole > (INT64_MAX / scale - 9) / 10) {
            return -EINVAL;
        }
        whole = whole * 10 + (s.p[i] - '0');
    }
    if (i == 0) {
        return -EINVAL;
    }
    int64_t frac = 0;
    if (i < s.len && s.p[i] == '.') {
        i++;
        int64_t unit = scale;
        size_t nd = 0;
        for (; i < s.len && s.p[i] >= '0' && s.p[i] <= '9'; i++, nd++) {
            unit /= 10;
            frac += (s.p[i] - '0') * unit;
        }
        if (nd == 0) {
            return -EINVAL;
        }
    }
    if (i != s.len) {
        return -EINVAL;
    }
    *ns = whole * scale + frac;
    return 0;
}

int logs_parse_time(struct sc_str s, const char *format, int64_t *ns)
{
    if (!format || strcmp(format, "rfc3339") == 0) {
        return parse_rfc3339(s, ns);
    }
    if (strcmp(format, "unix") == 0) {
        return parse_unix(s, 1000000000, ns);
    }
    if (strcmp(format, "unix_ms") == 0) {
        return parse_unix(s, 1000000, ns);
    }
    if (strcmp(format, "unix_ns") == 0) {
        return parse_unix(s, 1, ns);
    }
    char tmp[128];
    if (s.len >= sizeof(tmp)) {
        return -EINVAL;
    }
    memcpy(tmp, s.p, s.len);
    tmp[s.len] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(tmp, format, &tm);
    if (!end || *end) {
        return -EINVAL;
    }
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31) {
        return -EINVAL;
    }
    int64_t days =
        days_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday);
    return secs_to_ns(days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec, 0, ns);
}

static bool lf_keychar(char c)
{
    return c > ' ' && c != '=' && c != '"' && c != 0x7f;
}

int logs_parse_logfmt(struct sc_str line, struct logs_ev *ev)
{
    const char *p = line.p, *end = line.p + line.len;
    size_t npairs = 0;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (p == end) {
            break;
        }
        const char *k = p;
        while (p < end && lf_keychar(*p)) {
            p++;
        }
        size_t klen = (size_t)(p - k);
        if (klen == 0 || klen >= 256) {
            return SC_EINVAL;
        }
        struct sc_str key = logs_ev_clean(ev, sc_str_n(k, klen));
        if (p == end || *p != '=') {
            if (p < end && *p != ' ' && *p != '\t') {
                return SC_EINVAL;
            }
            logs_ev_set(ev, key, LOGS_V_TRUE, SC_STR_NULL);
            npairs++;
            continue;
        }
        p++;
        if (p < end && *p == '"') {
            p++;
            char *val = logs_ev_alloc(ev, (size_t)(end - p) + 1);
            size_t vl = 0;
            bool closed = false;
            while (p < end) {
                if (*p == '\\' && p + 1 < end) {
                    char c = p[1];
                    val[vl++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    closed = true;
                    break;
                } else {
                    val[vl++] = *p++;
                }
            }
            if (!closed || (p < end && *p != ' ' && *p != '\t')) {
                return SC_EINVAL;
            }
            logs_ev_set(ev, key, LOGS_V_STR, logs_ev_clean(ev, sc_str_n(val, vl)));
        } else {
            const char *v = p;
            while (p < end && *p != ' ' && *p != '\t') {
                if (*p == '"') {
                    return SC_EINVAL;
                }
                p++;
            }
            logs_ev_set(ev, key, LOGS_V_STR, logs_ev_clean(ev, sc_str_n(v, (size_t)(p - v))));
        }
        npairs++;
    }
    return npairs ? 0 : SC_EINVAL;
}

static int parse_regex(const struct logs_parse_cfg *pc, struct sc_str line, struct logs_ev *ev)
{
    int rc =
        pcre2_match(pc->re, (PCRE2_SPTR)(line.len ? line.p : ""), line.len, 0, 0, pc->md, NULL);
    if (rc < 0) {
        return SC_EINVAL;
    }
    uint32_t count = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMEENTRYSIZE, &esize);
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMETABLE, &table);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(pc->md);
    for (uint32_t i = 0; i < count; i++) {
        PCRE2_SPTR e = table + (size_t)i * esize;
        int grp = (e[0] << 8) | e[1];
        if (grp >= rc || ov[2 * grp] == PCRE2_UNSET) {
            continue;
        }
        size_t s = ov[2 * grp], t = ov[2 * grp + 1];
        if (t < s || t > line.len) {
            continue;
        }
        /* The name lives in the compiled pattern, which outlives the record. */
        logs_ev_set(ev, sc_str_c((const char *)(e + 2)), LOGS_V_STR,
                    logs_ev_clean(ev, sc_str_n(line.p + s, t - s)));
    }
    return 0;
}

static void extract_time(const struct logs_parse_cfg *pc, struct logs_ev *ev, int64_t *ts_ns)
{
    struct sc_str key = sc_str_c(pc->time_key);
    const struct logs_field *t = logs_ev_get(ev, key);
    if (!t) {
        return;
    }
    int64_t ns;
    int rc = -EINVAL;
    if (t->type == LOGS_V_STR) {
        rc = logs_parse_time(t->val, pc->time_format, &ns);
    } else if (t->type == LOGS_V_INT || t->type == LOGS_V_REAL) {
        int64_t scale = 1000000000;
        if (pc->time_format && strcmp(pc->time_format, "unix_ms") == 0) {
            scale = 1000000;
        } else if (pc->time_format && strcmp(pc->time_format, "unix_ns") == 0) {
            scale = 1;
        }
        /* Digits with an optional fraction are read exactly (a time in nanoseconds needs more
         * bits than a double holds); only an exponent goes through strtod. */
        rc = parse_unix(t->val, scale, &ns);
        if (rc != 0) {
            char tmp[64];
            size_t n = t->val.len < sizeof(tmp) - 1 ? t->val.len : sizeof(tmp) - 1;
            memcpy(tmp, t->val.p, n);
            tmp[n] = 0;
            double v = strtod(tmp, NULL) * (double)scale;
            if (v >= 0 && v < 9.0e18) {
                ns = (int64_t)v;
                rc = 0;
            }
        }
    }
    if (rc == 0) {
        *ts_ns = ns;
        if (!pc->keep_time_key) {
            logs_ev_del(ev, key);
        }
    }
}

void logs_parse_line(const struct logs_parse_cfg *pc, struct sc_str line, struct logs_ev *ev,
                     int64_t *ts_ns, bool *parse_error)
{
    int rc = SC_EINVAL;
    *parse_error = false;
    logs_ev_reset(ev);
    switch (pc->parser) {
    case LOGS_P_JSON:
        rc = logs_ev_parse_json(ev, line);
        break;
    case LOGS_P_LOGFMT:
        rc = logs_parse_logfmt(line, ev);
        break;
    case LOGS_P_REGEX:
        rc = pc->re ? parse_regex(pc, line, ev) : SC_EINVAL;
        break;
    case LOGS_P_NONE:
    case LOGS_P_CRI:
    default:
        raw_event(ev, line, false);
        return;
    }
    if (rc < 0) {
        *parse_error = true;
        raw_event(ev, line, true);
        return;
    }
    if (pc->time_key) {
        extract_time(pc, ev, ts_ns);
    }
}

int logs_cri_split(struct sc_str line, struct sc_str *time, struct sc_str *stream, bool *partial,
                   struct sc_str *msg)
{
    struct sc_str rest = line;
    const char *sp = memchr(rest.p, ' ', rest.len);
    if (!rest.len || !sp) {
        return -EINVAL;
    }
    *time = sc_str_n(rest.p, (size_t)(sp - rest.p));
    rest = sc_str_n(sp + 1, rest.len - time->len - 1);
    sp = memchr(rest.p, ' ', rest.len);
    if (!sp) {
        return -EINVAL;
    }
    *stream = sc_str_n(rest.p, (size_t)(sp - rest.p));
    rest = sc_str_n(sp + 1, rest.len - stream->len - 1);
    if (time->len == 0 || stream->len == 0 || rest.len < 1) {
        return -EINVAL;
    }
    /* The tag field may carry more flags after ':' (P or F first). */
    sp = memchr(rest.p, ' ', rest.len);
    size_t tlen = sp ? (size_t)(sp - rest.p) : rest.len;
    if (tlen < 1 || (rest.p[0] != 'P' && rest.p[0] != 'F') || (tlen > 1 && rest.p[1] != ':')) {
        return -EINVAL;
    }
    *partial = rest.p[0] == 'P';
    *msg = sp ? sc_str_n(sp + 1, rest.len - tlen - 1) : sc_str_n(rest.p + tlen, 0);
    return 0;
}

bool logs_is_continuation(struct sc_str line)
{
    if (line.len == 0) {
        return false;
    }
    if (line.p[0] == ' ' || line.p[0] == '\t') {
        return true;
    }
    if (sc_str_startswith(line, SC_STR("Caused by:"))) {
        return true;
    }
    if (sc_str_startswith(line, SC_STR("... ")) && line.len > 4 && line.p[4] >= '0' &&
        line.p[4] <= '9') {
        return true;
    }
    return false;
}
