// SPDX-License-Identifier: Apache-2.0
// Log line parsers: json, logfmt, regex with named groups, none, the CRI framing, and timestamp
// extraction. Every function here is pure and total on arbitrary bytes: a line that does not parse
// becomes {"message": line, "parse_error": true}, never an error that loses it, and every string
// put into an event is valid UTF-8 (invalid sequences become U+FFFD), so encoders never fail.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/logs/logs.h"

/* Returns the length of the valid UTF-8 sequence at <p> (at most <n> bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    unsigned cp = c & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

json_t *logs_json_str(struct sc_str s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t i = 0;
    bool valid = true;
    while (i < s.len) {
        if (p[i] < 0x80 && p[i] != 0) {
            i++;
            continue;
        }
        size_t l = p[i] ? utf8_seq(p + i, s.len - i) : 0;
        if (l == 0) {
            valid = false;
            break;
        }
        i += l;
    }
    if (valid) {
        /* Checked above: valid UTF-8 without NUL, so jansson need not check it again. */
        return json_stringn_nocheck(s.len ? s.p : "", s.len);
    }
    /* Worst case every byte becomes the 3-byte U+FFFD. */
    char *out = sc_malloc(s.len * 3 + 1);
    size_t o = 0;
    i = 0;
    while (i < s.len) {
        size_t l = p[i] ? utf8_seq(p + i, s.len - i) : 0;
        if (l == 0) {
            out[o++] = (char)0xef;
            out[o++] = (char)0xbf;
            out[o++] = (char)0xbd;
            i++;
        } else {
            memcpy(out + o, p + i, l);
            o += l;
            i += l;
        }
    }
    json_t *j = json_stringn_nocheck(out, o);
    sc_free(out);
    return j;
}

static json_t *raw_event(struct sc_str line, bool error)
{
    json_t *ev = json_object();
    json_object_set_new(ev, "message", logs_json_str(line));
    if (error) {
        json_object_set_new(ev, "parse_error", json_true());
    }
    return ev;
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
    *ns = secs * 1000000000 + frac;
    return 0;
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
    *ns = (days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) * 1000000000LL;
    return 0;
}

static bool lf_keychar(char c)
{
    return c > ' ' && c != '=' && c != '"' && c != 0x7f;
}

json_t *logs_parse_logfmt(struct sc_str line)
{
    json_t *ev = json_object();
    const char *p = line.p, *end = line.p + line.len;
    size_t npairs = 0;
    char *val = NULL;
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
        if (p == k) {
            goto fail;
        }
        char key[256];
        size_t klen = (size_t)(p - k);
        if (klen >= sizeof(key)) {
            goto fail;
        }
        memcpy(key, k, klen);
        key[klen] = 0;
        if (p == end || *p != '=') {
            if (p < end && *p != ' ' && *p != '\t') {
                goto fail;
            }
            json_object_set_new(ev, key, json_true());
            npairs++;
            continue;
        }
        p++;
        if (p < end && *p == '"') {
            p++;
            val = sc_malloc((size_t)(end - p) + 1);
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
                goto fail;
            }
            json_object_set_new(ev, key, logs_json_str(sc_str_n(val, vl)));
            sc_free(val);
            val = NULL;
        } else {
            const char *v = p;
            while (p < end && *p != ' ' && *p != '\t') {
                if (*p == '"') {
                    goto fail;
                }
                p++;
            }
            json_object_set_new(ev, key, logs_json_str(sc_str_n(v, (size_t)(p - v))));
        }
        npairs++;
    }
    if (npairs == 0) {
        goto fail;
    }
    return ev;
fail:
    sc_free(val);
    json_decref(ev);
    return NULL;
}

static json_t *parse_regex(const struct logs_parse_cfg *pc, struct sc_str line)
{
    int rc =
        pcre2_match(pc->re, (PCRE2_SPTR)(line.len ? line.p : ""), line.len, 0, 0, pc->md, NULL);
    if (rc < 0) {
        return NULL;
    }
    uint32_t count = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMECOUNT, &count);
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMEENTRYSIZE, &esize);
    pcre2_pattern_info(pc->re, PCRE2_INFO_NAMETABLE, &table);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(pc->md);
    json_t *ev = json_object();
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
        json_object_set_new(ev, (const char *)(e + 2), logs_json_str(sc_str_n(line.p + s, t - s)));
    }
    return ev;
}

static void extract_time(const struct logs_parse_cfg *pc, json_t *ev, int64_t *ts_ns)
{
    json_t *t = json_object_get(ev, pc->time_key);
    if (!t) {
        return;
    }
    int64_t ns;
    int rc = -EINVAL;
    if (json_is_string(t)) {
        rc = logs_parse_time(sc_str_n(json_string_value(t), json_string_length(t)), pc->time_format,
                             &ns);
    } else if (json_is_number(t)) {
        double v = json_number_value(t);
        double scale = 1e9;
        if (pc->time_format && strcmp(pc->time_format, "unix_ms") == 0) {
            scale = 1e6;
        } else if (pc->time_format && strcmp(pc->time_format, "unix_ns") == 0) {
            scale = 1;
        }
        if (v >= 0 && v * scale < 9.0e18) {
            ns = (int64_t)(v * scale);
            rc = 0;
        }
    }
    if (rc == 0) {
        *ts_ns = ns;
        if (!pc->keep_time_key) {
            json_object_del(ev, pc->time_key);
        }
    }
}

json_t *logs_parse_line(const struct logs_parse_cfg *pc, struct sc_str line, int64_t *ts_ns,
                        bool *parse_error)
{
    json_t *ev = NULL;
    *parse_error = false;
    switch (pc->parser) {
    case LOGS_P_JSON: {
        json_error_t jerr;
        json_t *j = line.len ? json_loadb(line.p, line.len, 0, &jerr) : NULL;
        if (j && json_is_object(j)) {
            ev = j;
        } else {
            json_decref(j);
        }
        break;
    }
    case LOGS_P_LOGFMT:
        ev = logs_parse_logfmt(line);
        break;
    case LOGS_P_REGEX:
        ev = pc->re ? parse_regex(pc, line) : NULL;
        break;
    case LOGS_P_NONE:
    case LOGS_P_CRI:
    default:
        return raw_event(line, false);
    }
    if (!ev) {
        *parse_error = true;
        return raw_event(line, true);
    }
    if (pc->time_key) {
        extract_time(pc, ev, ts_ns);
    }
    return ev;
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
