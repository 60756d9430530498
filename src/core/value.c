// SPDX-License-Identifier: Apache-2.0
// The syntax of configuration values, shared by files, flags and defaults: booleans, integers,
// decimals, durations ("1h30m", "250ms"), sizes ("64KiB", "10MB"), ${NAME} and ${NAME:-default}
// expansion from the environment, and the did-you-mean suggestion for a misspelt name. Invariant:
// every formatter writes text its parser reads back to the same value.
#include "core/value.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config_int.h"
#include "core/error.h"
#include "core/str.h"

/* ------------------------------------------------------------------------------------------ */
/* Number, duration and size syntax                                                            */

/* Writes <v> in decimal to <out> (at least 21 bytes, not terminated); returns the length. */
size_t sc_value_put_u64(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

int sc_value_parse_bool(const char *s, bool *out)
{
    if (strcasecmp(s, "true") == 0) {
        *out = true;
    } else if (strcasecmp(s, "false") == 0) {
        *out = false;
    } else {
        return -EINVAL;
    }
    return 0;
}

int sc_value_parse_int(const char *s, int64_t *out)
{
    bool neg = false;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v;
    if (sc_str_to_u64(sc_str_c(s), lim, &v) < 0) {
        return -EINVAL;
    }
    if (neg) {
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        *out = (int64_t)v;
    }
    return 0;
}

int sc_value_parse_double(const char *s, double *out)
{
    if (!*s) {
        return -EINVAL;
    }
    /* Decimal only: strtod would also take "inf", "nan" and hex floats. */
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '+' || *p == 'e' ||
              *p == 'E')) {
            return -EINVAL;
        }
    }
    char *end = NULL;
    double d = strtod(s, &end);
    if (end == s || *end || !isfinite(d)) {
        return -EINVAL;
    }
    *out = d;
    return 0;
}

static const struct {
    const char *unit;
    uint64_t ms;
} dur_units[] = { { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 } };

int sc_value_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s) {
        return -EINVAL;
    }
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    uint64_t total = 0;
    size_t last = SIZE_MAX; /* index into dur_units: units must come largest first, once each */
    const char *p = s;
    while (*p) {
        if (*p < '0' || *p > '9') {
            return -EINVAL;
        }
        uint64_t ip = 0;
        while (*p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p++ - '0');
            if (ip > (UINT64_MAX - d) / 10) {
                return -EINVAL;
            }
            ip = ip * 10 + d;
        }
        uint64_t frac = 0, scale = 1;
        if (*p == '.') {
            p++;
            if (*p < '0' || *p > '9') {
                return -EINVAL;
            }
            while (*p >= '0' && *p <= '9') {
                if (scale == 1000000000) {
                    return -EINVAL; /* more than nine decimals is never whole milliseconds */
                }
                frac = frac * 10 + (uint64_t)(*p++ - '0');
                scale *= 10;
            }
        }
        size_t u;
        if (p[0] == 'm' && p[1] == 's') {
            u = 3;
            p += 2;
        } else if (*p == 's') {
            u = 2;
            p++;
        } else if (*p == 'm') {
            u = 1;
            p++;
        } else if (*p == 'h') {
            u = 0;
            p++;
        } else {
            return -EINVAL;
        }
        if (last != SIZE_MAX && u <= last) {
            return -EINVAL;
        }
        last = u;
        uint64_t unit = dur_units[u].ms;
        if (ip > UINT64_MAX / unit) {
            return -EINVAL;
        }
        uint64_t v = ip * unit;
        uint64_t f = frac * unit; /* frac < 10^9 and unit <= 3.6e6: no overflow */
        if (f % scale != 0) {
            return -EINVAL; /* finer than a millisecond */
        }
        if (v > UINT64_MAX - f / scale) {
            return -EINVAL;
        }
        v += f / scale;
        if (total > (uint64_t)INT64_MAX - v || v > (uint64_t)INT64_MAX) {
            return -EINVAL; /* capped at INT64_MAX so bounds and JSON stay exact */
        }
        total += v;
    }
    *ms = total;
    return 0;
}

static const struct {
    const char *unit;
    uint64_t mult;
} size_units[] = {
    { "B", 1 },
    { "KB", 1000ULL },
    { "kB", 1000ULL },
    { "MB", 1000000ULL },
    { "GB", 1000000000ULL },
    { "TB", 1000000000000ULL },
    { "KiB", 1ULL << 10 },
    { "MiB", 1ULL << 20 },
    { "GiB", 1ULL << 30 },
    { "TiB", 1ULL << 40 },
    { "Ki", 1ULL << 10 },
    { "Mi", 1ULL << 20 },
    { "Gi", 1ULL << 30 },
    { "Ti", 1ULL << 40 },
};

int sc_value_parse_size(const char *s, uint64_t *bytes)
{
    if (!s) {
        return -EINVAL;
    }
    size_t digits = 0;
    while (s[digits] >= '0' && s[digits] <= '9') {
        digits++;
    }
    uint64_t v;
    if (sc_str_to_u64(sc_str_n(s, digits), (uint64_t)INT64_MAX, &v) < 0) {
        return -EINVAL;
    }
    const char *unit = s + digits;
    uint64_t mult = 0;
    if (*unit == '\0') {
        mult = 1;
    }
    /* Bare K/M/G are refused: Kubernetes reads "M" as 10^6 and many tools as 2^20. */
    for (size_t i = 0; i < SC_ARRAY_LEN(size_units) && !mult; i++) {
        if (strcmp(unit, size_units[i].unit) == 0) {
            mult = size_units[i].mult;
        }
    }
    if (!mult || v > (uint64_t)INT64_MAX / mult) {
        return -EINVAL;
    }
    *bytes = v * mult;
    return 0;
}

void sc_value_format_duration(uint64_t ms, char *out)
{
    if (ms == 0) {
        memcpy(out, "0", 2);
        return;
    }
    char single[32], multi[96];
    size_t ns = 0, nm = 0;
    for (size_t i = 0; i < SC_ARRAY_LEN(dur_units); i++) {
        if (ms % dur_units[i].ms == 0) {
            ns = sc_value_put_u64(single, ms / dur_units[i].ms);
            memcpy(single + ns, dur_units[i].unit, strlen(dur_units[i].unit));
            ns += strlen(dur_units[i].unit);
            break;
        }
    }
    uint64_t rem = ms;
    for (size_t i = 0; i < SC_ARRAY_LEN(dur_units); i++) {
        uint64_t q = rem / dur_units[i].ms;
        rem %= dur_units[i].ms;
        if (q) {
            nm += sc_value_put_u64(multi + nm, q);
            memcpy(multi + nm, dur_units[i].unit, strlen(dur_units[i].unit));
            nm += strlen(dur_units[i].unit);
        }
    }
    if (ns < nm) {
        memcpy(out, single, ns);
        out[ns] = '\0';
    } else {
        memcpy(out, multi, nm);
        out[nm] = '\0';
    }
}

/* Writes the shortest exact rendering of <bytes> ("512", "64KiB", "10MB") into <out> (>= 32);
 * binary units win ties. */
void sc_value_render_size(uint64_t bytes, char *out)
{
    static const size_t order[] = { 9, 8, 7, 6, 5, 4, 3, 1 }; /* TiB..KiB, then TB..KB */
    size_t n = sc_value_put_u64(out, bytes);
    out[n] = '\0';
    for (size_t i = 0; i < SC_ARRAY_LEN(order) && bytes; i++) {
        uint64_t m = size_units[order[i]].mult;
        const char *unit = size_units[order[i]].unit;
        if (bytes % m == 0) {
            char c[32];
            size_t cn = sc_value_put_u64(c, bytes / m);
            memcpy(c + cn, unit, strlen(unit));
            cn += strlen(unit);
            if (cn < n) {
                memcpy(out, c, cn);
                out[cn] = '\0';
                n = cn;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Environment expansion and did-you-mean                                                      */

static bool name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

static char *expand_fail(struct sc_buf *out, char **err, size_t *errpos, size_t pos, char *msg)
{
    sc_buf_cleanup(out);
    if (err) {
        *err = msg;
    } else {
        sc_free(msg);
    }
    if (errpos) {
        *errpos = pos;
    }
    return NULL;
}

char *sc_value_env_expand(const char *s, char **err, size_t *errpos)
{
    if (!s) {
        return NULL;
    }
    if (!strchr(s, '$')) {
        return sc_strdup(s);
    }
    static const char bad_ref[] = "invalid variable reference: expected ${NAME} or "
                                  "${NAME:-default}";
    struct sc_buf out;
    sc_buf_init(&out, MAX_EXPAND);
    char *name = NULL, *msg = NULL;
    size_t i = 0, at = 0;
    while (s[i]) {
        if (s[i] != '$' || (s[i + 1] != '$' && s[i + 1] != '{')) {
            size_t j = i + 1;
            while (s[j] && s[j] != '$') {
                j++;
            }
            if (sc_buf_append(&out, s + i, j - i) < 0) {
                at = i;
                msg = sc_strdup("value too long after expansion");
                goto fail;
            }
            i = j;
            continue;
        }
        if (s[i + 1] == '$') {
            sc_buf_append(&out, "$", 1);
            i += 2;
            continue;
        }
        size_t n = i + 2;
        at = i;
        if (!name_start(s[n])) {
            msg = sc_strdup(bad_ref);
            goto fail;
        }
        while (name_char(s[n])) {
            n++;
        }
        name = sc_strndup(s + i + 2, n - (i + 2));
        const char *def = NULL;
        size_t deflen = 0, end;
        if (s[n] == '}') {
            end = n + 1;
        } else if (s[n] == ':' && s[n + 1] == '-') {
            const char *close = strchr(s + n + 2, '}');
            if (!close) {
                msg = sc_strdup("unterminated \"${\"");
                goto fail;
            }
            def = s + n + 2;
            deflen = (size_t)(close - def);
            end = (size_t)(close - s) + 1;
        } else if (s[n] == '\0') {
            msg = sc_strdup("unterminated \"${\"");
            goto fail;
        } else {
            msg = sc_strdup(bad_ref);
            goto fail;
        }
        const char *val = getenv(name);
        int rc;
        if (def && (!val || !*val)) {
            rc = sc_buf_append(&out, def, deflen); /* ":-" as in sh: unset or empty */
        } else if (!val) {
            msg = sc_asprintf("environment variable \"%s\" is not set", name);
            goto fail;
        } else {
            rc = sc_buf_append_cstr(&out, val);
        }
        sc_free(name);
        name = NULL;
        if (rc < 0) {
            msg = sc_strdup("value too long after expansion");
            goto fail;
        }
        i = end;
    }
    return sc_config_buf_take(&out);
fail:
    sc_free(name);
    return expand_fail(&out, err, errpos, at, msg);
}

/* Optimal string alignment distance (Levenshtein plus adjacent transpositions), ASCII case
 * folded. Returns a value above <limit> as soon as the distance must exceed it. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb, size_t limit)
{
    size_t *rows = sc_calloc(3 * (lb + 1), sizeof(size_t));
    size_t *pp = rows, *prev = rows + lb + 1, *cur = rows + 2 * (lb + 1);
    for (size_t j = 0; j <= lb; j++) {
        prev[j] = j;
    }
    size_t d = 0;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        size_t rowmin = cur[0];
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = ascii_lower(a[i - 1]) == ascii_lower(b[j - 1]) ? 0 : 1;
            size_t v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) {
                v = cur[j - 1] + 1;
            }
            if (prev[j - 1] + cost < v) {
                v = prev[j - 1] + cost;
            }
            if (i > 1 && j > 1 && ascii_lower(a[i - 1]) == ascii_lower(b[j - 2]) &&
                ascii_lower(a[i - 2]) == ascii_lower(b[j - 1]) && pp[j - 2] + 1 < v) {
                v = pp[j - 2] + 1;
            }
            cur[j] = v;
            if (v < rowmin) {
                rowmin = v;
            }
        }
        if (rowmin > limit) {
            sc_free(rows);
            return limit + 1;
        }
        size_t *t = pp;
        pp = prev;
        prev = cur;
        cur = t;
    }
    d = prev[lb];
    sc_free(rows);
    return d;
}

const char *sc_value_did_you_mean(const char *word, const char *const *candidates, size_t n)
{
    if (!word || !candidates) {
        return NULL;
    }
    size_t lw = strlen(word);
    size_t limit = lw / 3 > 2 ? lw / 3 : 2;
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        const char *c = candidates[i];
        if (!c) {
            continue;
        }
        size_t lc = strlen(c);
        if ((lw > lc ? lw - lc : lc - lw) > limit) {
            continue; /* the distance is at least the difference in length */
        }
        size_t d = edit_distance(word, lw, c, lc, limit);
        /* A word that shares nothing with a candidate ("x" vs "id") is not a typo of it. */
        if (d <= limit && d < (lw > lc ? lw : lc) && d < bestd) {
            best = c;
            bestd = d;
        }
    }
    return best;
}
