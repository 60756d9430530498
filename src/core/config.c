// SPDX-License-Identifier: Apache-2.0
// Typed configuration driven by option tables (the contract is in config.h).
//
// YAML goes through libyaml's event API into a small tree of our own instead of libyaml's document
// API, so that limits bite while parsing rather than after: input is capped at 4 MiB, nodes at
// MAX_NODES and nesting at MAX_DEPTH, and an alias becomes a pointer to an already finished node,
// which keeps the tree acyclic. Walking the tree against a table counts every node it visits
// (aliases and merge keys expanded) and every byte of value it produces, so an alias bomb fails
// after bounded work instead of after 10^9 steps. Nothing recurses without a bound: YAML depth is
// bounded by MAX_DEPTH, table depth (which only programmers control) by MAX_TABLE_DEPTH. Loading
// stops at the first error, which is always "name:line:col: message" with 1-based positions.
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/str.h"
#include "core/utf8.h"

#define MAX_INPUT ((size_t)4 << 20)
#define MAX_NODES 1000000
#define MAX_DEPTH 64
/* Bytes of values one load may produce (strings, lists, list elements), aliases expanded: an alias
 * to a 2 MiB string repeated 500,000 times passes the node limit but not this one. */
#define MAX_VALUE_BYTES ((size_t)32 << 20)
#define MAX_EXPAND ((size_t)16 << 20) /* one scalar after ${VAR} expansion */
/* Data-following recursions (free, dump, required) go as deep as a load could nest (MAX_DEPTH
 * YAML levels) plus embedded objects; deeper means a table that refers to itself through OBJ or
 * INLINE, which no C struct can match. */
#define MAX_TABLE_DEPTH 128
#define HELP_DEPTH 8 /* help and doc stop here, so self-referencing OBJLIST tables still print */
#define MSG_MAX 4096
#define QUOTE_MAX 64 /* bytes of user text quoted in a message */

#define NULL_TAG "tag:yaml.org,2002:null"
#define STR_TAG "tag:yaml.org,2002:str"

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */

static _Noreturn void bad_table(const struct sc_opt *o, const char *why)
{
    /* Tables are code, not input: a bad one is a bug that every test run catches at once. */
    fprintf(stderr, "sidecar: config table bug at option \"%s\": %s\n", o ? o->name : "?", why);
    abort();
}

static bool bounded(const struct sc_opt *o)
{
    return o->max > o->min;
}

static bool is_flag(const struct sc_opt *o)
{
    return (o->flags & (SC_OPT_FLAG | SC_OPT_FLAG_ONLY)) != 0;
}

static bool is_key(const struct sc_opt *o)
{
    return (o->flags & SC_OPT_FLAG_ONLY) == 0;
}

static void *at_off(void *base, size_t off)
{
    return (char *)base + off;
}

static const void *cat_off(const void *base, size_t off)
{
    return (const char *)base + off;
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
}

/* Counts the characters (not bytes) of UTF-8 <s> up to <n> bytes, as libyaml counts columns. */
static size_t utf8_chars(const char *s, size_t n)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            chars++;
        }
    }
    return chars;
}

/* Returns the buffer's contents as a new NUL-terminated string and leaves the buffer empty. */
static char *buf_take(struct sc_buf *b)
{
    sc_buf_cstr(b);
    char *p = b->p;
    sc_buf_init(b, b->max);
    return p;
}

/* Appends <s> in double quotes with control characters escaped and long text cut, so that user
 * input can make a message neither unreadable nor huge. */
static void append_quoted(struct sc_buf *b, const char *s, size_t len)
{
    size_t n = len;
    bool cut = false;
    if (n > QUOTE_MAX) {
        n = QUOTE_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--; /* never split a UTF-8 sequence */
        }
        cut = true;
    }
    sc_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = { '\\', (char)c };
            sc_buf_append(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            sc_buf_appendf(b, "\\x%02x", c);
        } else {
            sc_buf_append(b, s + i, 1);
        }
    }
    if (cut) {
        sc_buf_append_cstr(b, "...");
    }
    sc_buf_append(b, "\"", 1);
}

/* Appends as much of <s> as the buffer's cap allows (sc_buf_append is all or nothing), so a long
 * message from a callback or an environment variable name is cut rather than lost. */
static void append_capped(struct sc_buf *b, const char *s)
{
    size_t n = strlen(s), room = b->max - b->len;
    if (n > room) {
        n = room > 3 ? room - 3 : 0;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--;
        }
        sc_buf_append(b, s, n);
        sc_buf_append(b, "...", room - n < 3 ? room - n : 3);
        return;
    }
    sc_buf_append(b, s, n);
}

static void append_quoted_c(struct sc_buf *b, const char *s)
{
    append_quoted(b, s, strlen(s));
}

/* Writes <v> in decimal to <out> (at least 21 bytes, not terminated); returns the length. */
static size_t put_u64(char *out, uint64_t v)
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

/* ------------------------------------------------------------------------------------------ */
/* A string-keyed hash set (anchors, keys seen in one mapping). Keys are borrowed.             */

struct hent {
    const char *k;
    size_t len;
    const void *v;
};

struct hset {
    struct hent *e;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

static uint64_t hash(const char *k, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static struct hent *hset_probe(struct hent *e, size_t cap, const char *k, size_t len)
{
    size_t i = (size_t)hash(k, len) & (cap - 1);
    while (e[i].k && !(e[i].len == len && memcmp(e[i].k, k, len) == 0)) {
        i = (i + 1) & (cap - 1);
    }
    return &e[i];
}

/* Returns the entry for <k>, inserting it (with v NULL) when absent; <*found> tells which. */
static struct hent *hset_get(struct hset *s, const char *k, size_t len, bool *found)
{
    if (s->n + 1 > s->cap / 2) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct hent *e = sc_calloc(cap, sizeof(*e));
        for (size_t i = 0; i < s->cap; i++) {
            if (s->e[i].k) {
                *hset_probe(e, cap, s->e[i].k, s->e[i].len) = s->e[i];
            }
        }
        sc_free(s->e);
        s->e = e;
        s->cap = cap;
    }
    struct hent *h = hset_probe(s->e, s->cap, k, len);
    *found = h->k != NULL;
    if (!h->k) {
        h->k = k;
        h->len = len;
        h->v = NULL;
        s->n++;
    }
    return h;
}

static const struct hent *hset_find(const struct hset *s, const char *k, size_t len)
{
    if (s->cap == 0) {
        return NULL;
    }
    const struct hent *h = hset_probe(s->e, s->cap, k, len);
    return h->k ? h : NULL;
}

static void hset_free(struct hset *s)
{
    sc_free(s->e);
    s->e = NULL;
    s->cap = s->n = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Number, duration and size syntax                                                            */

static int parse_bool(const char *s, bool *out)
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

static int parse_int(const char *s, int64_t *out)
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

static int parse_double(const char *s, double *out)
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

int sc_parse_duration(const char *s, uint64_t *ms)
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

int sc_parse_size(const char *s, uint64_t *bytes)
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

void sc_format_duration(uint64_t ms, char *out)
{
    if (ms == 0) {
        memcpy(out, "0", 2);
        return;
    }
    char single[32], multi[96];
    size_t ns = 0, nm = 0;
    for (size_t i = 0; i < SC_ARRAY_LEN(dur_units); i++) {
        if (ms % dur_units[i].ms == 0) {
            ns = put_u64(single, ms / dur_units[i].ms);
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
            nm += put_u64(multi + nm, q);
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
static void render_size(uint64_t bytes, char *out)
{
    static const size_t order[] = { 9, 8, 7, 6, 5, 4, 3, 1 }; /* TiB..KiB, then TB..KB */
    size_t n = put_u64(out, bytes);
    out[n] = '\0';
    for (size_t i = 0; i < SC_ARRAY_LEN(order) && bytes; i++) {
        uint64_t m = size_units[order[i]].mult;
        const char *unit = size_units[order[i]].unit;
        if (bytes % m == 0) {
            char c[32];
            size_t cn = put_u64(c, bytes / m);
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

char *sc_env_expand(const char *s, char **err, size_t *errpos)
{
    if (!s) {
        return NULL;
    }
    if (!strchr(s, '$')) {
        return sc_strdup(s);
    }
    struct sc_buf out;
    sc_buf_init(&out, MAX_EXPAND);
    size_t i = 0;
    while (s[i]) {
        if (s[i] != '$' || (s[i + 1] != '$' && s[i + 1] != '{')) {
            size_t j = i + 1;
            while (s[j] && s[j] != '$') {
                j++;
            }
            if (sc_buf_append(&out, s + i, j - i) < 0) {
                return expand_fail(&out, err, errpos, i,
                                   sc_strdup("value too long after expansion"));
            }
            i = j;
            continue;
        }
        if (s[i + 1] == '$') {
            sc_buf_append(&out, "$", 1);
            i += 2;
            continue;
        }
        size_t ref = i, n = i + 2;
        if (!name_start(s[n])) {
            return expand_fail(&out, err, errpos, ref,
                               sc_strdup("invalid variable reference: expected ${NAME} or "
                                         "${NAME:-default}"));
        }
        while (name_char(s[n])) {
            n++;
        }
        char *name = sc_strndup(s + i + 2, n - (i + 2));
        const char *def = NULL;
        size_t deflen = 0, end;
        if (s[n] == '}') {
            end = n + 1;
        } else if (s[n] == ':' && s[n + 1] == '-') {
            const char *close = strchr(s + n + 2, '}');
            if (!close) {
                sc_free(name);
                return expand_fail(&out, err, errpos, ref, sc_strdup("unterminated \"${\""));
            }
            def = s + n + 2;
            deflen = (size_t)(close - def);
            end = (size_t)(close - s) + 1;
        } else if (s[n] == '\0') {
            sc_free(name);
            return expand_fail(&out, err, errpos, ref, sc_strdup("unterminated \"${\""));
        } else {
            sc_free(name);
            return expand_fail(&out, err, errpos, ref,
                               sc_strdup("invalid variable reference: expected ${NAME} or "
                                         "${NAME:-default}"));
        }
        const char *val = getenv(name);
        int rc;
        if (def && (!val || !*val)) {
            rc = sc_buf_append(&out, def, deflen); /* ":-" as in sh: unset or empty */
        } else if (!val) {
            char *msg = sc_asprintf("environment variable \"%s\" is not set", name);
            sc_free(name);
            return expand_fail(&out, err, errpos, ref, msg);
        } else {
            rc = sc_buf_append_cstr(&out, val);
        }
        sc_free(name);
        if (rc < 0) {
            return expand_fail(&out, err, errpos, ref, sc_strdup("value too long after expansion"));
        }
        i = end;
    }
    return buf_take(&out);
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

const char *sc_did_you_mean(const char *word, const char *const *candidates, size_t n)
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

/* ------------------------------------------------------------------------------------------ */
/* Values: parse text into a field, shared by file, flags and defaults                         */

static void free_str(const struct sc_opt *o, char **p)
{
    if (*p && (o->flags & SC_OPT_SECRET)) {
        sc_free_secret(*p, strlen(*p));
    } else {
        sc_free(*p);
    }
    *p = NULL;
}

static void free_strv(const struct sc_opt *o, struct sc_strv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free_str(o, &v->v[i]);
    }
    sc_free(v->v);
    v->v = NULL;
    v->n = 0;
}

static void free_kvv(const struct sc_opt *o, struct sc_kvv *m)
{
    for (size_t i = 0; i < m->n; i++) {
        sc_free(m->v[i].key);
        free_str(o, &m->v[i].value);
    }
    sc_free(m->v);
    m->v = NULL;
    m->n = 0;
}

static void free_rec(const struct sc_opt *table, void *base, int tdepth);

static void free_objlist(const struct sc_opt *o, struct sc_vec *vec, int tdepth)
{
    for (size_t i = 0; i < vec->n; i++) {
        free_rec(o->sub, at_off(vec->v, i * o->sub_size), tdepth + 1);
    }
    sc_free(vec->v);
    vec->v = NULL;
    vec->n = 0;
}

static void strv_push(struct sc_strv *v, char *s)
{
    v->v = sc_reallocarray(v->v, v->n + 1, sizeof(*v->v));
    v->v[v->n++] = s;
}

/* Sets <key> to <value> (both taken), replacing the value of an existing key. */
static void kvv_set(const struct sc_opt *o, struct sc_kvv *m, char *key, char *value)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->v[i].key, key) == 0) {
            sc_free(key);
            free_str(o, &m->v[i].value);
            m->v[i].value = value;
            return;
        }
    }
    m->v = sc_reallocarray(m->v, m->n + 1, sizeof(*m->v));
    m->v[m->n].key = key;
    m->v[m->n].value = value;
    m->n++;
}

static void append_enums(struct sc_buf *m, const char *const *enums, const char *sep)
{
    for (size_t i = 0; enums && enums[i]; i++) {
        sc_buf_appendf(m, "%s%s", i ? sep : "", enums[i]);
    }
}

/* Parses <s> into the field of a BOOL, INT, DURATION, SIZE, DOUBLE or ENUM option, bounds
 * included. Returns 0, or SC_ECONFIG with a message appended to <m>. */
static int set_scalar(const struct sc_opt *o, void *field, const char *s, struct sc_buf *m)
{
    char v1[96], v2[96], v3[96];
    switch (o->type) {
    case SC_OPT_BOOL: {
        bool b;
        if (parse_bool(s, &b) < 0) {
            sc_buf_append_cstr(m, "invalid boolean ");
            append_quoted_c(m, s);
            sc_buf_append_cstr(m, " (expected true or false)");
            return SC_ECONFIG;
        }
        *(bool *)field = b;
        return 0;
    }
    case SC_OPT_INT: {
        int64_t v;
        if (parse_int(s, &v) < 0) {
            sc_buf_append_cstr(m, "invalid integer ");
            append_quoted_c(m, s);
            return SC_ECONFIG;
        }
        if (bounded(o) && (v < o->min || v > o->max)) {
            sc_buf_appendf(m, "%" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]", v, o->min,
                           o->max);
            return SC_ECONFIG;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case SC_OPT_DURATION:
    case SC_OPT_SIZE: {
        bool dur = o->type == SC_OPT_DURATION;
        uint64_t v;
        if ((dur ? sc_parse_duration(s, &v) : sc_parse_size(s, &v)) < 0) {
            sc_buf_append_cstr(m, dur ? "invalid duration " : "invalid size ");
            append_quoted_c(m, s);
            sc_buf_append_cstr(m, dur ? " (expected e.g. 250ms, 30s, 5m, 1h30m)"
                                      : " (expected e.g. 512, 64KiB, 1MiB, 10MB)");
            return SC_ECONFIG;
        }
        /* Parsed values never exceed INT64_MAX, so comparing as signed is exact. */
        if (bounded(o) && ((int64_t)v < o->min || (int64_t)v > o->max)) {
            uint64_t lo = o->min < 0 ? 0 : (uint64_t)o->min, hi = o->max < 0 ? 0 : (uint64_t)o->max;
            if (dur) {
                sc_format_duration(v, v1);
                sc_format_duration(lo, v2);
                sc_format_duration(hi, v3);
            } else {
                render_size(v, v1);
                render_size(lo, v2);
                render_size(hi, v3);
            }
            sc_buf_appendf(m, "%s is out of range [%s, %s]", v1, v2, v3);
            return SC_ECONFIG;
        }
        *(uint64_t *)field = v;
        return 0;
    }
    case SC_OPT_DOUBLE: {
        double d;
        if (parse_double(s, &d) < 0) {
            sc_buf_append_cstr(m, "invalid number ");
            append_quoted_c(m, s);
            return SC_ECONFIG;
        }
        if (bounded(o) && (d < (double)o->min || d > (double)o->max)) {
            sc_buf_appendf(m, "%g is out of range [%" PRId64 ", %" PRId64 "]", d, o->min, o->max);
            return SC_ECONFIG;
        }
        *(double *)field = d;
        return 0;
    }
    case SC_OPT_ENUM:
        for (int i = 0; o->enums && o->enums[i]; i++) {
            if (strcasecmp(s, o->enums[i]) == 0) {
                *(int *)field = i;
                return 0;
            }
        }
        sc_buf_append_cstr(m, "invalid value ");
        append_quoted_c(m, s);
        sc_buf_append_cstr(m, " (expected one of: ");
        append_enums(m, o->enums, ", ");
        sc_buf_append_cstr(m, ")");
        return SC_ECONFIG;
    default:
        sc_buf_append_cstr(m, "not a scalar option");
        return SC_ECONFIG;
    }
}

static int check_count(const struct sc_opt *o, size_t n, struct sc_buf *m)
{
    if (bounded(o) && ((int64_t)n < o->min || (int64_t)n > o->max)) {
        sc_buf_appendf(m, "expected between %" PRId64 " and %" PRId64 " elements, got %zu", o->min,
                       o->max, n);
        return SC_ECONFIG;
    }
    return 0;
}

static int run_check(const struct sc_opt *o, void *field, struct sc_buf *m)
{
    if (!o->check) {
        return 0;
    }
    char *e = NULL;
    if (o->check(field, &e) == 0) {
        sc_free(e);
        return 0;
    }
    append_capped(m, e && *e ? e : "invalid value");
    sc_free(e);
    return SC_ECONFIG;
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults and free                                                                           */

static void defaults_rec(const struct sc_opt *table, void *base, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nested too deep (an OBJ or INLINE cycle?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        void *field = at_off(base, o->offset);
        const char *def = o->def && *o->def ? o->def : NULL;
        switch (o->type) {
        case SC_OPT_STR:
            *(char **)field = sc_strdup(o->def);
            break;
        case SC_OPT_BOOL:
        case SC_OPT_INT:
        case SC_OPT_DURATION:
        case SC_OPT_SIZE:
        case SC_OPT_DOUBLE:
        case SC_OPT_ENUM: {
            static const uint64_t zero[2];
            memcpy(field, zero,
                   o->type == SC_OPT_BOOL   ? sizeof(bool)
                   : o->type == SC_OPT_ENUM ? sizeof(int)
                                            : sizeof(uint64_t));
            if (def) {
                struct sc_buf m;
                sc_buf_init(&m, MSG_MAX);
                if (set_scalar(o, field, def, &m) < 0) {
                    bad_table(o, sc_buf_cstr(&m));
                }
                sc_buf_cleanup(&m);
            }
            break;
        }
        case SC_OPT_STRLIST: {
            struct sc_strv *v = field;
            v->v = NULL;
            v->n = 0;
            struct sc_str rest = sc_str_c(def);
            while (rest.len) {
                struct sc_str part = sc_str_trim(sc_str_split(&rest, ','));
                if (part.len) {
                    strv_push(v, sc_strndup(part.p, part.len));
                }
            }
            break;
        }
        case SC_OPT_STRMAP: {
            struct sc_kvv *m = field;
            m->v = NULL;
            m->n = 0;
            struct sc_str rest = sc_str_c(def);
            while (rest.len) {
                struct sc_str part = sc_str_trim(sc_str_split(&rest, ','));
                if (!part.len) {
                    continue;
                }
                struct sc_str key = sc_str_trim(sc_str_split(&part, '='));
                if (!key.len || part.p == key.p + key.len) {
                    bad_table(o, "a map default reads \"key=value,key=value\"");
                }
                kvv_set(o, m, sc_strndup(key.p, key.len), sc_strndup(part.p, part.len));
            }
            break;
        }
        case SC_OPT_OBJ:
        case SC_OPT_INLINE:
            if (!o->sub) {
                bad_table(o, "OBJ and INLINE need a sub-table");
            }
            defaults_rec(o->sub, field, tdepth + 1);
            break;
        case SC_OPT_OBJLIST: {
            if (!o->sub || !o->sub_size) {
                bad_table(o, "OBJLIST needs a sub-table and sub_size");
            }
            struct sc_vec *vec = field;
            vec->v = NULL;
            vec->n = 0;
            break;
        }
        case SC_OPT_END:
            break;
        }
    }
}

void sc_config_defaults(const struct sc_opt *table, void *obj)
{
    if (table && obj) {
        defaults_rec(table, obj, 0);
    }
}

static void free_rec(const struct sc_opt *table, void *base, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nested too deep (an OBJ or INLINE cycle?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        void *field = at_off(base, o->offset);
        switch (o->type) {
        case SC_OPT_STR:
            free_str(o, field);
            break;
        case SC_OPT_STRLIST:
            free_strv(o, field);
            break;
        case SC_OPT_STRMAP:
            free_kvv(o, field);
            break;
        case SC_OPT_OBJ:
        case SC_OPT_INLINE:
            free_rec(o->sub, field, tdepth + 1);
            break;
        case SC_OPT_OBJLIST:
            free_objlist(o, field, tdepth);
            break;
        default:
            break;
        }
    }
}

void sc_config_free(const struct sc_opt *table, void *obj)
{
    if (table && obj) {
        free_rec(table, obj, 0);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The YAML tree                                                                               */

enum { N_SCALAR, N_SEQ, N_MAP, N_ALIAS };
enum { ST_PLAIN, ST_SINGLE, ST_OTHER };

struct node {
    unsigned char kind;
    unsigned char style;
    bool null;          /* plain "", "~" or "null" without a !!str tag: "not set" */
    bool one_line;      /* a scalar that starts and ends on one line */
    uint32_t line, col; /* libyaml's 0-based start mark (input <= 4 MiB, so these fit) */
    char *anchor;       /* registered once the node is complete, so aliases never form cycles */
    union {
        struct {
            char *s; /* NUL-terminated; NUL bytes inside are rejected while building */
            size_t len;
        } sc;
        struct {
            struct node **v; /* a mapping holds key, value, key, value... */
            size_t n, cap;
        } co;
        const struct node *target;
    } u;
};

#define CHUNK_NODES 256

struct chunk {
    struct chunk *next;
    size_t used;
    struct node nodes[CHUNK_NODES];
};

struct tree {
    struct chunk *chunks;
    size_t count;
    struct node *root;
    struct hset anchors;
};

struct ld {
    const char *name;
    char *err; /* the first error, complete with its position */
    size_t visits;
    size_t bytes;
};

static void tree_free(struct tree *t)
{
    struct chunk *c = t->chunks;
    while (c) {
        for (size_t i = 0; i < c->used; i++) {
            struct node *n = &c->nodes[i];
            sc_free(n->anchor);
            if (n->kind == N_SCALAR) {
                sc_free(n->u.sc.s);
            } else if (n->kind == N_SEQ || n->kind == N_MAP) {
                sc_free(n->u.co.v);
            }
        }
        struct chunk *next = c->next;
        sc_free(c);
        c = next;
    }
    hset_free(&t->anchors);
    memset(t, 0, sizeof(*t));
}

/* Records the first error as "name:line:col: <msg>" (0-based line and col in) and empties <msg>. */
static int fail_msg(struct ld *ld, size_t line, size_t col, struct sc_buf *msg)
{
    if (!ld->err) {
        struct sc_buf b;
        sc_buf_init(&b, MSG_MAX + strlen(ld->name) + 64);
        sc_buf_appendf(&b, "%s:%zu:%zu: ", ld->name, line + 1, col + 1);
        if (msg->len) {
            sc_buf_append(&b, msg->p, msg->len);
        } else {
            sc_buf_append_cstr(&b, "invalid value");
        }
        ld->err = buf_take(&b);
    }
    sc_buf_cleanup(msg);
    return SC_ECONFIG;
}

static int fail(struct ld *ld, const struct node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct ld *ld, const struct node *at, const char *fmt, ...)
{
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    va_list ap;
    va_start(ap, fmt);
    sc_buf_vappendf(&m, fmt, ap);
    va_end(ap);
    return fail_msg(ld, at ? at->line : 0, at ? at->col : 0, &m);
}

static int fail_at(struct ld *ld, const struct node *at, struct sc_buf *m)
{
    return fail_msg(ld, at->line, at->col, m);
}

struct builder {
    struct ld *ld;
    struct tree *t;
    struct node *stack[MAX_DEPTH];
    size_t depth;
    int docs;
    bool done;
};

static struct node *new_node(struct builder *b, int kind, const yaml_mark_t *mark)
{
    struct tree *t = b->t;
    if (t->count >= MAX_NODES) {
        struct node at = { .line = (uint32_t)mark->line, .col = (uint32_t)mark->column };
        fail(b->ld, &at, "too many YAML nodes (limit %d)", MAX_NODES);
        return NULL;
    }
    if (!t->chunks || t->chunks->used == CHUNK_NODES) {
        struct chunk *c = sc_calloc(1, sizeof(*c));
        c->next = t->chunks;
        t->chunks = c;
    }
    struct node *n = &t->chunks->nodes[t->chunks->used++];
    t->count++;
    n->kind = (unsigned char)kind;
    n->line = (uint32_t)mark->line;
    n->col = (uint32_t)mark->column;
    return n;
}

static void attach(struct builder *b, struct node *n)
{
    if (b->depth == 0) {
        b->t->root = n;
        return;
    }
    struct node *p = b->stack[b->depth - 1];
    if (p->u.co.n == p->u.co.cap) {
        p->u.co.cap = p->u.co.cap ? p->u.co.cap * 2 : 4;
        p->u.co.v = sc_reallocarray(p->u.co.v, p->u.co.cap, sizeof(*p->u.co.v));
    }
    p->u.co.v[p->u.co.n++] = n;
}

static void register_anchor(struct builder *b, struct node *n)
{
    if (!n->anchor) {
        return;
    }
    bool found;
    struct hent *h = hset_get(&b->t->anchors, n->anchor, strlen(n->anchor), &found);
    /* YAML lets a later anchor of the same name replace the earlier one for later aliases. */
    h->k = n->anchor;
    h->v = n;
}

static int on_scalar(struct builder *b, const yaml_event_t *ev)
{
    struct node *n = new_node(b, N_SCALAR, &ev->start_mark);
    if (!n) {
        return SC_ECONFIG;
    }
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    n->u.sc.s = sc_strndup(v, len);
    n->u.sc.len = len;
    n->style = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE           ? ST_PLAIN
               : ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ? ST_SINGLE
                                                                          : ST_OTHER;
    n->one_line = ev->start_mark.line == ev->end_mark.line;
    if (tag && strcmp(tag, NULL_TAG) == 0) {
        n->null = true;
    } else if (!tag && n->style == ST_PLAIN) {
        n->null = len == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
                  strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
    }
    if (memchr(v, '\0', len)) {
        return fail(b->ld, n, "NUL character in a scalar");
    }
    if (ev->data.scalar.anchor) {
        n->anchor = sc_strdup((const char *)ev->data.scalar.anchor);
        register_anchor(b, n);
    }
    attach(b, n);
    return 0;
}

static int on_start(struct builder *b, const yaml_event_t *ev, int kind, const yaml_char_t *anchor)
{
    if (b->depth == MAX_DEPTH) {
        struct node at = { .line = (uint32_t)ev->start_mark.line,
                           .col = (uint32_t)ev->start_mark.column };
        return fail(b->ld, &at, "nesting deeper than %d levels", MAX_DEPTH);
    }
    struct node *n = new_node(b, kind, &ev->start_mark);
    if (!n) {
        return SC_ECONFIG;
    }
    if (anchor) {
        n->anchor = sc_strdup((const char *)anchor);
    }
    attach(b, n);
    b->stack[b->depth++] = n;
    return 0;
}

static int on_alias(struct builder *b, const yaml_event_t *ev)
{
    struct node *n = new_node(b, N_ALIAS, &ev->start_mark);
    if (!n) {
        return SC_ECONFIG;
    }
    const char *name = (const char *)ev->data.alias.anchor;
    const struct hent *h = hset_find(&b->t->anchors, name, strlen(name));
    if (!h) {
        struct sc_buf m;
        sc_buf_init(&m, MSG_MAX);
        bool open = false;
        for (size_t i = 0; i < b->depth; i++) {
            open = open || (b->stack[i]->anchor && strcmp(b->stack[i]->anchor, name) == 0);
        }
        sc_buf_append_cstr(&m,
                           open ? "alias refers to a node that contains it: " : "undefined alias ");
        append_quoted_c(&m, name);
        return fail_at(b->ld, n, &m);
    }
    n->u.target = h->v;
    attach(b, n);
    return 0;
}

static int on_event(struct builder *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->docs > 1) {
            struct node at = { .line = (uint32_t)ev->start_mark.line,
                               .col = (uint32_t)ev->start_mark.column };
            return fail(b->ld, &at, "only one YAML document is allowed");
        }
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, ev, N_SEQ, ev->data.sequence_start.anchor);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, ev, N_MAP, ev->data.mapping_start.anchor);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0) {
            register_anchor(b, b->stack[--b->depth]);
        }
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_STREAM_END_EVENT:
        b->done = true;
        return 0;
    default:
        return 0;
    }
}

/* Converts a byte offset into a 0-based line and column, for libyaml reader errors. */
static void offset_to_mark(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
    *line = 0;
    *col = 0;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 >= len || text[i + 1] != '\n'))) {
            (*line)++;
            *col = 0;
        } else if (text[i] != '\r' && ((unsigned char)text[i] & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

static int yaml_fail(struct ld *ld, const yaml_parser_t *p, const char *text, size_t len)
{
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    size_t line = p->problem_mark.line, col = p->problem_mark.column;
    if (p->error == YAML_READER_ERROR) {
        offset_to_mark(text, len, p->problem_offset, &line, &col);
    }
    if (p->error == YAML_MEMORY_ERROR) {
        sc_buf_append_cstr(&m, "out of memory while parsing YAML");
    } else {
        sc_buf_append_cstr(&m, p->problem ? p->problem : "invalid YAML");
    }
    if (p->error == YAML_READER_ERROR && p->problem_value != -1) {
        sc_buf_appendf(&m, " (byte 0x%02x)", (unsigned)p->problem_value & 0xffu);
    }
    if (p->context) {
        sc_buf_appendf(&m, " (%s started at line %zu, column %zu)", p->context,
                       p->context_mark.line + 1, p->context_mark.column + 1);
    }
    return fail_msg(ld, line, col, &m);
}

static int build(struct ld *ld, const char *text, size_t len, struct tree *t)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        return fail(ld, NULL, "out of memory while parsing YAML");
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    struct builder b = { .ld = ld, .t = t };
    int rc = 0;
    while (rc == 0 && !b.done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = yaml_fail(ld, &p, text, len);
            break;
        }
        rc = on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Walking the tree against a table                                                            */

static const struct node *deref(const struct node *n)
{
    return n->kind == N_ALIAS ? n->u.target : n;
}

static int visit(struct ld *ld, const struct node *at)
{
    if (++ld->visits > MAX_NODES) {
        return fail(ld, at, "too many nodes after alias expansion (limit %d)", MAX_NODES);
    }
    return 0;
}

static int spend(struct ld *ld, const struct node *at, size_t bytes)
{
    if (bytes > MAX_VALUE_BYTES - ld->bytes) {
        return fail(ld, at, "values too large after alias expansion (limit %zu MiB)",
                    MAX_VALUE_BYTES >> 20);
    }
    ld->bytes += bytes;
    return 0;
}

static void append_got(struct sc_buf *m, const struct node *n)
{
    if (n->kind == N_MAP) {
        sc_buf_append_cstr(m, "a mapping");
    } else if (n->kind == N_SEQ) {
        sc_buf_append_cstr(m, "a list");
    } else if (n->null) {
        sc_buf_append_cstr(m, "null");
    } else {
        append_quoted(m, n->u.sc.s, n->u.sc.len);
    }
}

static const char *type_noun(const struct sc_opt *o)
{
    switch (o->type) {
    case SC_OPT_STR:
        return "a string";
    case SC_OPT_BOOL:
        return "true or false";
    case SC_OPT_INT:
        return "an integer";
    case SC_OPT_DURATION:
        return "a duration";
    case SC_OPT_SIZE:
        return "a size";
    case SC_OPT_DOUBLE:
        return "a number";
    case SC_OPT_ENUM:
        return "a string";
    case SC_OPT_STRLIST:
        return "a list of strings";
    case SC_OPT_STRMAP:
        return "a mapping of strings";
    case SC_OPT_OBJLIST:
        return "a list of mappings";
    default:
        return "a mapping";
    }
}

static int wrong_type(struct ld *ld, const struct node *at, const char *noun, const struct node *n)
{
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    sc_buf_appendf(&m, "expected %s, got ", noun);
    append_got(&m, n);
    return fail_at(ld, at, &m);
}

/* Returns the scalar <n> (reached through <ref>) with ${VAR} expanded, as a new string, or NULL
 * after recording an error. The error points at the reference itself when the scalar is plain or
 * simply quoted on one line, since then its text is exactly what the source shows. */
static char *expand(struct ld *ld, const struct node *ref, const struct node *n)
{
    char *e = NULL;
    size_t pos = 0;
    char *out = sc_env_expand(n->u.sc.s, &e, &pos);
    if (!out) {
        struct sc_buf m;
        sc_buf_init(&m, MSG_MAX);
        append_capped(&m, e ? e : "invalid variable reference");
        sc_free(e);
        size_t col = ref->col;
        if (ref == n && n->one_line && n->style == ST_PLAIN) {
            col += utf8_chars(n->u.sc.s, pos);
        } else if (ref == n && n->one_line && n->style == ST_SINGLE && !strchr(n->u.sc.s, '\'')) {
            col += 1 + utf8_chars(n->u.sc.s, pos);
        }
        fail_msg(ld, ref->line, col, &m);
        return NULL;
    }
    if (spend(ld, ref, strlen(out) + 1) < 0) {
        sc_free(out);
        return NULL;
    }
    return out;
}

struct pair {
    const struct node *k, *v;
};

struct pairs {
    struct pair *v;
    size_t n, cap;
};

static void pairs_push(struct pairs *ps, const struct node *k, const struct node *v)
{
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 8;
        ps->v = sc_reallocarray(ps->v, ps->cap, sizeof(*ps->v));
    }
    ps->v[ps->n].k = k;
    ps->v[ps->n].v = v;
    ps->n++;
}

static bool is_merge_key(const struct node *k)
{
    return k->kind == N_SCALAR && k->style == ST_PLAIN && strcmp(k->u.sc.s, "<<") == 0;
}

/* Finds the file key <k> among <table>'s options and INLINE sub-tables; <*off> gets the field's
 * offset from the start of the table's struct. */
static const struct sc_opt *find_key(const struct sc_opt *table, const char *k, size_t *off,
                                     int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < MAX_TABLE_DEPTH) {
                const struct sc_opt *r = find_key(o->sub, k, off, tdepth + 1);
                if (r) {
                    *off += o->offset;
                    return r;
                }
            }
        } else if (is_key(o) && strcmp(o->name, k) == 0) {
            *off = o->offset;
            return o;
        }
    }
    return NULL;
}

struct names {
    const char **v;
    size_t n;
};

static void collect_keys(const struct sc_opt *table, struct names *ns, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < MAX_TABLE_DEPTH) {
                collect_keys(o->sub, ns, tdepth + 1);
            }
        } else if (is_key(o)) {
            ns->v = sc_reallocarray(ns->v, ns->n + 1, sizeof(*ns->v));
            ns->v[ns->n++] = o->name;
        }
    }
}

static int unknown_key(struct ld *ld, const struct sc_opt *table, const struct node *kref,
                       const struct node *k)
{
    struct names ns = { 0 };
    collect_keys(table, &ns, 0);
    const char *hint = sc_did_you_mean(k->u.sc.s, ns.v, ns.n);
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    sc_buf_append_cstr(&m, "unknown key ");
    append_quoted(&m, k->u.sc.s, k->u.sc.len);
    if (hint) {
        sc_buf_appendf(&m, " (did you mean \"%s\"?)", hint);
    }
    sc_free(ns.v);
    return fail_at(ld, kref, &m);
}

static int flatten(struct ld *ld, const struct node *map, const struct sc_opt *table,
                   struct pairs *out, size_t depth);

/* Adds the pairs of the merge value <vref> ("<<: *base" or "<<: [*a, *b]") whose keys are not yet
 * in <seen>: explicit keys win over merged ones, and earlier merged mappings over later ones. */
static int merge(struct ld *ld, const struct node *vref, const struct sc_opt *table,
                 struct pairs *out, struct hset *seen, size_t depth)
{
    const struct node *v = deref(vref);
    const struct node *const *srcs = &vref;
    size_t nsrc = 1;
    if (v->kind == N_SEQ) {
        srcs = (const struct node *const *)v->u.co.v;
        nsrc = v->u.co.n;
    }
    for (size_t i = 0; i < nsrc; i++) {
        const struct node *s = deref(srcs[i]);
        if (s->kind != N_MAP) {
            return wrong_type(ld, srcs[i], "a mapping or a list of mappings to merge", s);
        }
        if (depth + 1 > MAX_DEPTH) {
            return fail(ld, srcs[i], "merge keys nested deeper than %d levels", MAX_DEPTH);
        }
        struct pairs sub = { 0 };
        int rc = flatten(ld, s, table, &sub, depth + 1);
        for (size_t j = 0; rc == 0 && j < sub.n; j++) {
            rc = visit(ld, sub.v[j].k);
            const struct node *k = deref(sub.v[j].k);
            bool found;
            struct hent *h = rc == 0 ? hset_get(seen, k->u.sc.s, k->u.sc.len, &found) : NULL;
            if (h && !found) {
                h->v = sub.v[j].k;
                pairs_push(out, sub.v[j].k, sub.v[j].v);
            }
        }
        sc_free(sub.v);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* Lists the key/value pairs of mapping <map> in order, with merge keys ("<<") expanded in place,
 * after checking that every key is a non-empty string that appears once and, when <table> is not
 * NULL, is one of its keys: key errors come in document order, before any value is converted. */
static int flatten(struct ld *ld, const struct node *map, const struct sc_opt *table,
                   struct pairs *out, size_t depth)
{
    struct hset seen = { 0 };
    int rc = 0;
    size_t n = map->u.co.n;
    for (size_t i = 0; rc == 0 && i + 1 < n; i += 2) {
        const struct node *kref = map->u.co.v[i];
        const struct node *k = deref(kref);
        if ((rc = visit(ld, kref)) < 0) {
            break;
        }
        if (k->kind != N_SCALAR) {
            rc = wrong_type(ld, kref, "a string as key", k);
            break;
        }
        if (k->u.sc.len == 0) {
            rc = fail(ld, kref, "empty key");
            break;
        }
        bool found;
        struct hent *h = hset_get(&seen, k->u.sc.s, k->u.sc.len, &found);
        if (found) {
            struct sc_buf m;
            sc_buf_init(&m, MSG_MAX);
            sc_buf_append_cstr(&m, "duplicate key ");
            append_quoted(&m, k->u.sc.s, k->u.sc.len);
            sc_buf_appendf(&m, " (first at line %u)", ((const struct node *)h->v)->line + 1);
            rc = fail_at(ld, kref, &m);
            break;
        }
        h->v = kref;
        size_t off;
        if (table && !is_merge_key(k) && !find_key(table, k->u.sc.s, &off, 0)) {
            rc = unknown_key(ld, table, kref, k);
        }
    }
    for (size_t i = 0; rc == 0 && i + 1 < n; i += 2) {
        if (is_merge_key(deref(map->u.co.v[i]))) {
            rc = merge(ld, map->u.co.v[i + 1], table, out, &seen, depth);
        } else {
            pairs_push(out, map->u.co.v[i], map->u.co.v[i + 1]);
        }
    }
    hset_free(&seen);
    return rc;
}

static int load_value(struct ld *ld, const struct sc_opt *o, void *field, const struct node *ref,
                      size_t depth);

/* Loads mapping <ref> into <base> as <table> describes; a null means "not set". */
static int load_map(struct ld *ld, const struct sc_opt *table, void *base, const struct node *ref,
                    size_t depth)
{
    const struct node *n = deref(ref);
    if (n->kind == N_SCALAR && n->null) {
        return 0;
    }
    if (n->kind != N_MAP) {
        return wrong_type(ld, ref, "a mapping", n);
    }
    struct pairs ps = { 0 };
    int rc = flatten(ld, n, table, &ps, depth);
    for (size_t i = 0; rc == 0 && i < ps.n; i++) {
        const struct node *k = deref(ps.v[i].k);
        size_t off = 0;
        const struct sc_opt *o = find_key(table, k->u.sc.s, &off, 0);
        if (!o) {
            rc = unknown_key(ld, table, ps.v[i].k, k);
        } else {
            rc = load_value(ld, o, at_off(base, off), ps.v[i].v, depth + 1);
        }
    }
    sc_free(ps.v);
    return rc;
}

static int load_strlist(struct ld *ld, const struct sc_opt *o, struct sc_strv *out,
                        const struct node *ref, const struct node *n)
{
    bool one = n->kind == N_SCALAR;
    size_t count = one ? 1 : n->u.co.n;
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    if (check_count(o, count, &m) < 0) {
        return fail_at(ld, ref, &m);
    }
    if (spend(ld, ref, count * sizeof(char *)) < 0) {
        return SC_ECONFIG;
    }
    free_strv(o, out);
    out->v = count ? sc_calloc(count, sizeof(char *)) : NULL;
    for (size_t i = 0; i < count; i++) {
        const struct node *eref = one ? ref : n->u.co.v[i];
        const struct node *e = deref(eref);
        if (!one && visit(ld, eref) < 0) {
            return SC_ECONFIG;
        }
        if (e->kind != N_SCALAR || e->null) {
            return wrong_type(ld, eref, "a string", e);
        }
        char *s = expand(ld, eref, e);
        if (!s) {
            return SC_ECONFIG;
        }
        out->v[out->n++] = s;
    }
    return 0;
}

static int load_strmap(struct ld *ld, const struct sc_opt *o, struct sc_kvv *out,
                       const struct node *n, size_t depth)
{
    struct pairs ps = { 0 };
    int rc = flatten(ld, n, NULL, &ps, depth);
    if (rc == 0) {
        rc = spend(ld, n, ps.n * sizeof(struct sc_kv));
    }
    if (rc == 0) {
        free_kvv(o, out);
        out->v = ps.n ? sc_calloc(ps.n, sizeof(struct sc_kv)) : NULL;
    }
    for (size_t i = 0; rc == 0 && i < ps.n; i++) {
        const struct node *k = deref(ps.v[i].k);
        const struct node *v = deref(ps.v[i].v);
        if ((rc = visit(ld, ps.v[i].v)) < 0) {
            break;
        }
        if (v->kind != N_SCALAR) {
            rc = wrong_type(ld, ps.v[i].v, "a string", v);
            break;
        }
        /* A map entry has no "not set": "key:" with nothing after it is an empty value. */
        char *val = v->null ? sc_strdup("") : expand(ld, ps.v[i].v, v);
        if (!val) {
            rc = SC_ECONFIG;
            break;
        }
        if ((rc = spend(ld, ps.v[i].k, k->u.sc.len + 1)) < 0) {
            sc_free(val);
            break;
        }
        out->v[out->n].key = sc_strndup(k->u.sc.s, k->u.sc.len);
        out->v[out->n].value = val;
        out->n++;
    }
    sc_free(ps.v);
    return rc;
}

static int load_objlist(struct ld *ld, const struct sc_opt *o, struct sc_vec *vec,
                        const struct node *ref, const struct node *n, size_t depth)
{
    if (n->kind != N_SEQ) {
        return wrong_type(ld, ref, "a list of mappings", n);
    }
    size_t count = n->u.co.n;
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    if (check_count(o, count, &m) < 0) {
        return fail_at(ld, ref, &m);
    }
    /* Checked before multiplying: count * sub_size must not wrap. */
    if (spend(ld, ref, count > MAX_VALUE_BYTES / o->sub_size ? SIZE_MAX : count * o->sub_size) <
        0) {
        return SC_ECONFIG;
    }
    /* The file's list replaces whatever was there (defaults or an earlier file). */
    free_objlist(o, vec, 0);
    vec->v = count ? sc_calloc(count, o->sub_size) : NULL;
    for (size_t i = 0; i < count; i++) {
        const struct node *eref = n->u.co.v[i];
        const struct node *e = deref(eref);
        if (visit(ld, eref) < 0) {
            return SC_ECONFIG;
        }
        if (e->kind != N_MAP) {
            return wrong_type(ld, eref, "a mapping", e);
        }
        void *el = at_off(vec->v, i * o->sub_size);
        defaults_rec(o->sub, el, 0);
        vec->n++;
        int rc = load_map(ld, o->sub, el, eref, depth + 1);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* Loads the value <ref> into the field of option <o>. A null value leaves the field alone. */
static int load_value(struct ld *ld, const struct sc_opt *o, void *field, const struct node *ref,
                      size_t depth)
{
    if (visit(ld, ref) < 0) {
        return SC_ECONFIG;
    }
    if (depth > MAX_DEPTH) {
        return fail(ld, ref, "nesting deeper than %d levels", MAX_DEPTH);
    }
    const struct node *n = deref(ref);
    if (n->kind == N_SCALAR && n->null) {
        return 0;
    }
    int rc = 0;
    switch (o->type) {
    case SC_OPT_STR:
    case SC_OPT_BOOL:
    case SC_OPT_INT:
    case SC_OPT_DURATION:
    case SC_OPT_SIZE:
    case SC_OPT_DOUBLE:
    case SC_OPT_ENUM: {
        if (n->kind != N_SCALAR) {
            return wrong_type(ld, ref, type_noun(o), n);
        }
        char *s = expand(ld, ref, n);
        if (!s) {
            return SC_ECONFIG;
        }
        if (o->type == SC_OPT_STR) {
            free_str(o, field);
            *(char **)field = s;
            break;
        }
        struct sc_buf m;
        sc_buf_init(&m, MSG_MAX);
        rc = set_scalar(o, field, s, &m);
        sc_free(s);
        if (rc < 0) {
            return fail_at(ld, ref, &m);
        }
        sc_buf_cleanup(&m);
        break;
    }
    case SC_OPT_STRLIST:
        if (n->kind == N_MAP) {
            return wrong_type(ld, ref, type_noun(o), n);
        }
        rc = load_strlist(ld, o, field, ref, n);
        break;
    case SC_OPT_STRMAP:
        if (n->kind != N_MAP) {
            return wrong_type(ld, ref, type_noun(o), n);
        }
        rc = load_strmap(ld, o, field, n, depth);
        break;
    case SC_OPT_OBJ:
        rc = load_map(ld, o->sub, field, ref, depth);
        break;
    case SC_OPT_OBJLIST:
        rc = load_objlist(ld, o, field, ref, n, depth);
        break;
    default:
        return fail(ld, ref, "option cannot be loaded");
    }
    if (rc == 0 && o->check) {
        struct sc_buf m;
        sc_buf_init(&m, MSG_MAX);
        if (run_check(o, field, &m) < 0) {
            return fail_at(ld, ref, &m);
        }
        sc_buf_cleanup(&m);
    }
    return rc;
}

int sc_config_load_string(const struct sc_opt *table, void *obj, const char *name, const char *text,
                          size_t len, char **err)
{
    struct ld ld = { .name = name ? name : "config" };
    struct tree t = { 0 };
    int rc;
    if (len > MAX_INPUT) {
        rc = fail(&ld, NULL, "input too large (over %zu MiB)", MAX_INPUT >> 20);
    } else {
        rc = build(&ld, text && len ? text : "", text ? len : 0, &t);
    }
    if (rc == 0 && t.root) {
        const struct node *root = deref(t.root);
        if (root->kind == N_MAP) {
            rc = visit(&ld, t.root);
            if (rc == 0) {
                rc = load_map(&ld, table, obj, t.root, 1);
            }
        } else if (!(root->kind == N_SCALAR && root->null)) {
            rc = wrong_type(&ld, t.root, "a mapping at the top level", root);
        }
    }
    tree_free(&t);
    if (rc < 0) {
        if (!ld.err) {
            ld.err = sc_asprintf("%s:1:1: invalid configuration", ld.name);
        }
        if (err) {
            *err = ld.err;
        } else {
            sc_free(ld.err);
        }
        return SC_ECONFIG;
    }
    return 0;
}

int sc_config_load_file(const struct sc_opt *table, void *obj, const char *path, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err) {
            *err = sc_asprintf("%s: cannot open: %s", path, sc_strerror(-e));
        }
        return SC_ECONFIG;
    }
    /* One byte over the cap is enough to tell "too large" from "exactly 4 MiB". */
    struct sc_buf b;
    sc_buf_init(&b, MAX_INPUT + 1);
    int rc = 0;
    while (b.len < b.max) {
        size_t want = b.max - b.len < 65536 ? b.max - b.len : 65536;
        sc_buf_reserve(&b, want);
        ssize_t r = read(fd, b.p + b.len, want);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int e = errno;
            if (err) {
                *err = sc_asprintf("%s: cannot read: %s", path, sc_strerror(-e));
            }
            rc = SC_ECONFIG;
            break;
        }
        if (r == 0) {
            break;
        }
        b.len += (size_t)r;
    }
    close(fd);
    if (rc == 0) {
        rc = sc_config_load_string(table, obj, path, b.p, b.len, err);
    }
    sc_buf_cleanup(&b);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Flags                                                                                       */

/* Compares an option name with a flag, '-' and '_' alike. */
static bool flag_eq(const char *name, const char *flag)
{
    for (; *name && *flag; name++, flag++) {
        char a = *name == '_' ? '-' : *name, b = *flag == '_' ? '-' : *flag;
        if (a != b) {
            return false;
        }
    }
    return *name == *flag;
}

static const struct sc_opt *find_flag(const struct sc_opt *table, const char *flag, size_t *off,
                                      int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < MAX_TABLE_DEPTH) {
                const struct sc_opt *r = find_flag(o->sub, flag, off, tdepth + 1);
                if (r) {
                    *off += o->offset;
                    return r;
                }
            }
        } else if (is_flag(o) && (flag_eq(o->name, flag) ||
                                  (o->flag_alias && strcmp(o->flag_alias, flag) == 0))) {
            *off = o->offset;
            return o;
        }
    }
    return NULL;
}

const struct sc_opt *sc_config_find_flag(const struct sc_opt *table, const char *flag)
{
    size_t off = 0;
    return table && flag ? find_flag(table, flag, &off, 0) : NULL;
}

static char *flag_name(const char *name)
{
    char *s = sc_asprintf("--%s", name);
    for (char *p = s; *p; p++) {
        if (*p == '_') {
            *p = '-';
        }
    }
    return s;
}

static void collect_flags(const struct sc_opt *table, struct names *ns, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < MAX_TABLE_DEPTH) {
                collect_flags(o->sub, ns, tdepth + 1);
            }
        } else if (is_flag(o)) {
            ns->v = sc_reallocarray(ns->v, ns->n + 1, sizeof(*ns->v));
            ns->v[ns->n++] = flag_name(o->name);
        }
    }
}

static int unknown_flag(const struct sc_opt *table, const char *flag, char **err)
{
    struct names ns = { 0 };
    collect_flags(table, &ns, 0);
    char *word = flag_name(flag ? flag : "");
    const char *hint = sc_did_you_mean(word, ns.v, ns.n);
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    sc_buf_append_cstr(&m, "unknown flag ");
    append_quoted_c(&m, word);
    if (hint) {
        sc_buf_appendf(&m, " (did you mean \"%s\"?)", hint);
    }
    if (err) {
        *err = buf_take(&m);
    }
    sc_buf_cleanup(&m);
    sc_free(word);
    for (size_t i = 0; i < ns.n; i++) {
        sc_free((char *)ns.v[i]);
    }
    sc_free(ns.v);
    return -ENOENT;
}

static int set_from_flag(const struct sc_opt *o, void *field, const char *value, struct sc_buf *m)
{
    if (o->type == SC_OPT_BOOL && !value) {
        *(bool *)field = true;
        return 0;
    }
    if (!value) {
        sc_buf_append_cstr(m, "requires a value");
        return SC_ECONFIG;
    }
    switch (o->type) {
    case SC_OPT_STR:
        free_str(o, field);
        *(char **)field = sc_strdup(value);
        return 0;
    case SC_OPT_STRLIST: {
        struct sc_strv *v = field;
        struct sc_str rest = sc_str_c(value);
        while (rest.len) {
            struct sc_str part = sc_str_trim(sc_str_split(&rest, ','));
            if (part.len) {
                strv_push(v, sc_strndup(part.p, part.len));
            }
        }
        return check_count(o, v->n, m);
    }
    case SC_OPT_STRMAP: {
        const char *eq = strchr(value, '=');
        if (!eq || eq == value) {
            sc_buf_append_cstr(m, "expected key=value, got ");
            append_quoted_c(m, value);
            return SC_ECONFIG;
        }
        kvv_set(o, field, sc_strndup(value, (size_t)(eq - value)), sc_strdup(eq + 1));
        return 0;
    }
    case SC_OPT_OBJ:
    case SC_OPT_OBJLIST:
    case SC_OPT_INLINE:
        sc_buf_append_cstr(m, "cannot be set from the command line");
        return SC_ECONFIG;
    default:
        return set_scalar(o, field, value, m);
    }
}

int sc_config_set_flag(const struct sc_opt *table, void *obj, const char *flag, const char *value,
                       char **err)
{
    size_t off = 0;
    const struct sc_opt *o = table && flag ? find_flag(table, flag, &off, 0) : NULL;
    if (!o) {
        return unknown_flag(table, flag, err);
    }
    void *field = at_off(obj, off);
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    int rc = set_from_flag(o, field, value, &m);
    if (rc == 0) {
        rc = run_check(o, field, &m);
    }
    if (rc < 0) {
        if (err) {
            char *fname = flag_name(o->name);
            *err = sc_asprintf("%s: %s", fname, sc_buf_cstr(&m));
            sc_free(fname);
        }
        rc = SC_ECONFIG;
    }
    sc_buf_cleanup(&m);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Required keys                                                                               */

/* Whether a required option counts as set. Scalars cannot tell "set to the default" from "set",
 * so numbers count when non-zero and booleans and enums always do. */
static bool is_set(const struct sc_opt *o, const void *field)
{
    switch (o->type) {
    case SC_OPT_STR:
        return *(char *const *)field != NULL;
    case SC_OPT_INT:
        return *(const int64_t *)field != 0;
    case SC_OPT_DURATION:
    case SC_OPT_SIZE:
        return *(const uint64_t *)field != 0;
    case SC_OPT_DOUBLE:
        return *(const double *)field != 0;
    case SC_OPT_STRLIST:
        return ((const struct sc_strv *)field)->n > 0;
    case SC_OPT_STRMAP:
        return ((const struct sc_kvv *)field)->n > 0;
    case SC_OPT_OBJLIST:
        return ((const struct sc_vec *)field)->n > 0;
    default:
        return true;
    }
}

static const struct sc_opt *missing(const struct sc_opt *table, const void *base,
                                    struct sc_buf *path, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nested too deep (an OBJ or INLINE cycle?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        const void *field = cat_off(base, o->offset);
        size_t keep = path->len;
        if (o->type == SC_OPT_INLINE) {
            const struct sc_opt *r = missing(o->sub, field, path, tdepth + 1);
            if (r) {
                return r;
            }
            continue;
        }
        sc_buf_appendf(path, "%s%s", keep ? "." : "", o->name);
        if ((o->flags & SC_OPT_REQUIRED) && !is_set(o, field)) {
            return o;
        }
        if (o->type == SC_OPT_OBJ) {
            const struct sc_opt *r = missing(o->sub, field, path, tdepth + 1);
            if (r) {
                return r;
            }
        } else if (o->type == SC_OPT_OBJLIST) {
            const struct sc_vec *vec = field;
            size_t keep2 = path->len;
            for (size_t i = 0; i < vec->n; i++) {
                sc_buf_appendf(path, "[%zu]", i);
                const struct sc_opt *r =
                    missing(o->sub, cat_off(vec->v, i * o->sub_size), path, tdepth + 1);
                if (r) {
                    return r;
                }
                path->len = keep2;
            }
        }
        path->len = keep;
    }
    return NULL;
}

int sc_config_check_required(const struct sc_opt *table, const void *obj, const char *name,
                             char **err)
{
    if (!table || !obj) {
        return 0;
    }
    struct sc_buf path;
    sc_buf_init(&path, 65536);
    const struct sc_opt *o = missing(table, obj, &path, 0);
    if (o && err) {
        if (o->flags & SC_OPT_FLAG_ONLY) {
            char *fname = flag_name(o->name);
            *err = sc_asprintf("%s: missing required flag \"%s\"", name ? name : "config", fname);
            sc_free(fname);
        } else {
            *err = sc_asprintf("%s: missing required key \"%s\"", name ? name : "config",
                               sc_buf_cstr(&path));
        }
    }
    sc_buf_cleanup(&path);
    return o ? SC_ECONFIG : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON dump                                                                                   */

/* Returns a JSON string for <s>; bytes that are not UTF-8 (a flag or an environment variable can
 * carry any) become U+FFFD, since jansson refuses them. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j) {
        return j;
    }
    struct sc_buf b;
    sc_buf_init(&b, SIZE_MAX / 4);
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t l = sc_utf8_seq(p + i, n - i);
        if (l) {
            sc_buf_append(&b, p + i, l);
            i += l;
        } else {
            sc_buf_append_cstr(&b, SC_UTF8_REPLACEMENT);
            i++;
        }
    }
    j = json_string(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return j ? j : json_null();
}

/* Sets <key> in <obj>, taking <v>. Keys from a flag may not be UTF-8, which jansson refuses (and
 * then drops <v>), so they go through jstr first. */
static void jset(json_t *obj, const char *key, json_t *v)
{
    json_t *k = jstr(key);
    const char *ks = json_string_value(k);
    if (ks) {
        json_object_set_new(obj, ks, v);
    } else {
        json_decref(v);
    }
    json_decref(k);
}

static void dump_rec(json_t *obj, const struct sc_opt *table, const void *base, int tdepth);

static json_t *dump_value(const struct sc_opt *o, const void *field, int tdepth)
{
    bool secret = (o->flags & SC_OPT_SECRET) != 0;
    char tmp[96];
    switch (o->type) {
    case SC_OPT_STR: {
        const char *s = *(char *const *)field;
        return !s ? json_null() : secret ? json_string("<redacted>") : jstr(s);
    }
    case SC_OPT_STRLIST: {
        const struct sc_strv *v = field;
        if (secret && v->n) {
            return json_string("<redacted>");
        }
        json_t *a = json_array();
        for (size_t i = 0; i < v->n; i++) {
            json_array_append_new(a, jstr(v->v[i]));
        }
        return a;
    }
    case SC_OPT_STRMAP: {
        const struct sc_kvv *m = field;
        if (secret && m->n) {
            return json_string("<redacted>");
        }
        json_t *j = json_object();
        for (size_t i = 0; i < m->n; i++) {
            jset(j, m->v[i].key, jstr(m->v[i].value));
        }
        return j;
    }
    case SC_OPT_OBJ: {
        json_t *j = json_object();
        dump_rec(j, o->sub, field, tdepth + 1);
        return j;
    }
    case SC_OPT_OBJLIST: {
        const struct sc_vec *vec = field;
        json_t *a = json_array();
        for (size_t i = 0; i < vec->n; i++) {
            json_t *j = json_object();
            dump_rec(j, o->sub, cat_off(vec->v, i * o->sub_size), tdepth + 1);
            json_array_append_new(a, j);
        }
        return a;
    }
    default:
        break;
    }
    if (secret) {
        return json_string("<redacted>");
    }
    switch (o->type) {
    case SC_OPT_BOOL:
        return json_boolean(*(const bool *)field);
    case SC_OPT_INT:
        return json_integer((json_int_t) * (const int64_t *)field);
    case SC_OPT_DURATION:
        sc_format_duration(*(const uint64_t *)field, tmp);
        return json_string(tmp);
    case SC_OPT_SIZE: {
        uint64_t v = *(const uint64_t *)field;
        return json_integer((json_int_t)(v > (uint64_t)INT64_MAX ? INT64_MAX : v));
    }
    case SC_OPT_DOUBLE: {
        double d = *(const double *)field;
        return isfinite(d) ? json_real(d) : json_null();
    }
    case SC_OPT_ENUM: {
        int i = *(const int *)field;
        for (int k = 0; o->enums && o->enums[k]; k++) {
            if (k == i) {
                return json_string(o->enums[k]);
            }
        }
        return json_null();
    }
    default:
        return json_null();
    }
}

static void dump_rec(json_t *obj, const struct sc_opt *table, const void *base, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nested too deep (an OBJ or INLINE cycle?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        const void *field = cat_off(base, o->offset);
        if (o->type == SC_OPT_INLINE) {
            dump_rec(obj, o->sub, field, tdepth + 1);
        } else {
            jset(obj, o->name, dump_value(o, field, tdepth));
        }
    }
}

json_t *sc_config_dump(const struct sc_opt *table, const void *obj)
{
    json_t *j = json_object();
    if (table && obj) {
        dump_rec(j, table, obj, 0);
    }
    return j;
}

/* ------------------------------------------------------------------------------------------ */
/* --help and Markdown reference                                                               */

static const char *type_name(const struct sc_opt *o)
{
    switch (o->type) {
    case SC_OPT_STR:
        return "string";
    case SC_OPT_BOOL:
        return "bool";
    case SC_OPT_INT:
        return "int";
    case SC_OPT_DURATION:
        return "duration";
    case SC_OPT_SIZE:
        return "size";
    case SC_OPT_DOUBLE:
        return "number";
    case SC_OPT_ENUM:
        return "enum";
    case SC_OPT_STRLIST:
        return "string";
    case SC_OPT_STRMAP:
        return "map";
    case SC_OPT_OBJ:
    case SC_OPT_OBJLIST:
        return "object";
    default:
        return "";
    }
}

static bool is_list(const struct sc_opt *o)
{
    return o->type == SC_OPT_STRLIST || o->type == SC_OPT_OBJLIST;
}

/* Appends the help text of an option with its enum values, bounds, and (with <def>) its default
 * or "(required)"; the doc table has a column for the default instead. */
static void describe(struct sc_buf *b, const struct sc_opt *o, bool def)
{
    sc_buf_append_cstr(b, o->help ? o->help : "");
    if (o->type == SC_OPT_ENUM) {
        sc_buf_append_cstr(b, b->len ? " (one of: " : "(one of: ");
        append_enums(b, o->enums, ", ");
        sc_buf_append_cstr(b, ")");
    }
    if (bounded(o)) {
        char lo[96], hi[96];
        sc_buf_append_cstr(b, b->len ? " [" : "[");
        if (o->type == SC_OPT_DURATION || o->type == SC_OPT_SIZE) {
            uint64_t l = o->min < 0 ? 0 : (uint64_t)o->min, h = (uint64_t)o->max;
            if (o->type == SC_OPT_DURATION) {
                sc_format_duration(l, lo);
                sc_format_duration(h, hi);
            } else {
                render_size(l, lo);
                render_size(h, hi);
            }
            sc_buf_appendf(b, "%s..%s]", lo, hi);
        } else {
            sc_buf_appendf(b, "%" PRId64 "..%" PRId64 "]", o->min, o->max);
        }
    }
    if (o->flags & SC_OPT_REQUIRED) {
        sc_buf_append_cstr(b, b->len ? " (required)" : "(required)");
    } else if (def && o->def && *o->def) {
        sc_buf_appendf(b, "%s(default: %s)", b->len ? " " : "", o->def);
    }
}

struct row {
    char *left;
    char *mid;
    char *right;
};

struct rows {
    struct row *v;
    size_t n;
};

static void rows_push(struct rows *rs, char *left, char *mid, char *right)
{
    rs->v = sc_reallocarray(rs->v, rs->n + 1, sizeof(*rs->v));
    rs->v[rs->n].left = left;
    rs->v[rs->n].mid = mid;
    rs->v[rs->n].right = right;
    rs->n++;
}

static void rows_free(struct rows *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        sc_free(rs->v[i].left);
        sc_free(rs->v[i].mid);
        sc_free(rs->v[i].right);
    }
    sc_free(rs->v);
    rs->v = NULL;
    rs->n = 0;
}

static char *describe_new(const struct sc_opt *o)
{
    struct sc_buf b;
    sc_buf_init(&b, 65536);
    describe(&b, o, true);
    return buf_take(&b);
}

static void help_flags(const struct sc_opt *table, struct rows *rs, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < HELP_DEPTH) {
                help_flags(o->sub, rs, tdepth + 1);
            }
            continue;
        }
        if (!is_flag(o)) {
            continue;
        }
        struct sc_buf b;
        sc_buf_init(&b, 65536);
        char *fname = flag_name(o->name);
        sc_buf_appendf(&b, "  %s%s%s%s", o->flag_alias ? "-" : "",
                       o->flag_alias ? o->flag_alias : "", o->flag_alias ? ", " : "", fname);
        sc_free(fname);
        switch (o->type) {
        case SC_OPT_BOOL:
            break;
        case SC_OPT_ENUM:
            sc_buf_append_cstr(&b, " {");
            append_enums(&b, o->enums, "|");
            sc_buf_append_cstr(&b, "}");
            break;
        case SC_OPT_STRLIST:
            sc_buf_append_cstr(&b, " VALUE[,VALUE...]");
            break;
        case SC_OPT_STRMAP:
            sc_buf_append_cstr(&b, " KEY=VALUE");
            break;
        case SC_OPT_INT:
            sc_buf_append_cstr(&b, " INT");
            break;
        case SC_OPT_DURATION:
            sc_buf_append_cstr(&b, " DURATION");
            break;
        case SC_OPT_SIZE:
            sc_buf_append_cstr(&b, " SIZE");
            break;
        case SC_OPT_DOUBLE:
            sc_buf_append_cstr(&b, " NUMBER");
            break;
        default:
            sc_buf_append_cstr(&b, " VALUE");
            break;
        }
        rows_push(rs, buf_take(&b), NULL, describe_new(o));
    }
}

static void help_keys(const struct sc_opt *table, size_t indent, struct rows *rs, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < HELP_DEPTH) {
                help_keys(o->sub, indent, rs, tdepth + 1);
            }
            continue;
        }
        if (!is_key(o)) {
            continue;
        }
        char *left = sc_asprintf("  %*s%s%s", (int)indent, "", o->name, is_list(o) ? "[]" : "");
        rows_push(rs, left, sc_strdup(type_name(o)), describe_new(o));
        if ((o->type == SC_OPT_OBJ || o->type == SC_OPT_OBJLIST) && o->sub) {
            if (tdepth < HELP_DEPTH) {
                help_keys(o->sub, indent + 2, rs, tdepth + 1);
            } else {
                rows_push(rs, sc_asprintf("  %*s...", (int)indent + 2, ""), NULL, NULL);
            }
        }
    }
}

static size_t col_width(const struct rows *rs, bool mid, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const char *s = mid ? rs->v[i].mid : rs->v[i].left;
        size_t l = s ? strlen(s) : 0;
        if (l <= cap && l > w) {
            w = l;
        }
    }
    return w;
}

/* Writes one help line: <left> padded to <w>, then <mid> padded to <wm> (when not NULL), then
 * <right>; a <left> wider than <w> gets a line of its own. No trailing spaces. */
static void help_line(FILE *out, const struct row *r, size_t w, size_t wm)
{
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    if (strlen(r->left) > w) {
        sc_buf_appendf(&b, "%s\n%*s", r->left, (int)w, "");
    } else {
        sc_buf_appendf(&b, "%-*s", (int)w, r->left);
    }
    if (r->mid) {
        sc_buf_appendf(&b, "   %-*s", (int)wm, r->mid);
    }
    if (r->right) {
        sc_buf_appendf(&b, "   %s", r->right);
    }
    while (b.len && b.p[b.len - 1] == ' ') {
        b.len--;
    }
    fprintf(out, "%s\n", sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
}

void sc_config_help(const struct sc_opt *table, FILE *out)
{
    if (!table || !out) {
        return;
    }
    struct rows rs = { 0 };
    help_flags(table, &rs, 0);
    if (rs.n) {
        size_t w = col_width(&rs, false, 40);
        fputs("Flags:\n", out);
        for (size_t i = 0; i < rs.n; i++) {
            help_line(out, &rs.v[i], w, 0);
        }
    }
    rows_free(&rs);
    help_keys(table, 0, &rs, 0);
    if (rs.n) {
        size_t w = col_width(&rs, false, 40), wm = col_width(&rs, true, 16);
        fputs("\nConfig file keys:\n", out);
        for (size_t i = 0; i < rs.n; i++) {
            help_line(out, &rs.v[i], w, wm);
        }
    }
    rows_free(&rs);
}

/* Writes <s> as the inside of a Markdown table cell: pipes escaped, line breaks as spaces. */
static void md_cell(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') {
            fputs("\\|", out);
        } else if (*s == '\n' || *s == '\r') {
            fputc(' ', out);
        } else {
            fputc(*s, out);
        }
    }
}

static void doc_rows(const struct sc_opt *table, FILE *out, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE) {
            if (tdepth < HELP_DEPTH) {
                doc_rows(o->sub, out, tdepth + 1);
            }
            continue;
        }
        fputs("| ", out);
        if (is_key(o)) {
            fputs("`", out);
            md_cell(out, o->name);
            fputs("`", out);
        }
        fputs(" | ", out);
        switch (o->type) {
        case SC_OPT_STRLIST:
            fputs("list of strings", out);
            break;
        case SC_OPT_STRMAP:
            fputs("map of strings", out);
            break;
        case SC_OPT_OBJLIST:
            fputs("list of objects", out);
            break;
        default:
            fputs(type_name(o), out);
            break;
        }
        fputs(" | ", out);
        if (o->def && *o->def) {
            fputs("`", out);
            md_cell(out, o->def);
            fputs("`", out);
        }
        fputs(" | ", out);
        if (is_flag(o)) {
            char *fname = flag_name(o->name);
            if (o->flag_alias) {
                fputs("`-", out);
                md_cell(out, o->flag_alias);
                fputs("`, ", out);
            }
            fputs("`", out);
            md_cell(out, fname);
            fputs("`", out);
            sc_free(fname);
        }
        fputs(" | ", out);
        struct sc_buf b;
        sc_buf_init(&b, 65536);
        describe(&b, o, false);
        if (o->flags & SC_OPT_SECRET) {
            sc_buf_append_cstr(&b, b.len ? " (secret: redacted in dumps)" : "(secret)");
        }
        if (!is_key(o)) {
            sc_buf_append_cstr(&b, b.len ? " (command line only)" : "(command line only)");
        }
        md_cell(out, sc_buf_cstr(&b));
        sc_buf_cleanup(&b);
        fputs(" |\n", out);
    }
}

static void doc_subs(const struct sc_opt *table, const char *path, FILE *out, int tdepth);

static void doc_level(const struct sc_opt *table, const char *path, FILE *out, int tdepth)
{
    if (path[0]) {
        fprintf(out, "\n#### `%s`\n\n", path);
    }
    fputs("| key | type | default | flag | description |\n", out);
    fputs("|-----|------|---------|------|-------------|\n", out);
    doc_rows(table, out, 0);
    doc_subs(table, path, out, tdepth);
}

static void doc_subs(const struct sc_opt *table, const char *path, FILE *out, int tdepth)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (o->type == SC_OPT_INLINE && tdepth < HELP_DEPTH) {
            doc_subs(o->sub, path, out, tdepth + 1);
        } else if ((o->type == SC_OPT_OBJ || o->type == SC_OPT_OBJLIST) && o->sub &&
                   tdepth < HELP_DEPTH) {
            char *sub = sc_asprintf("%s%s%s%s", path, path[0] ? "." : "", o->name,
                                    o->type == SC_OPT_OBJLIST ? "[]" : "");
            doc_level(o->sub, sub, out, tdepth + 1);
            sc_free(sub);
        }
    }
}

void sc_config_doc(const struct sc_opt *table, FILE *out)
{
    if (table && out) {
        doc_level(table, "", out, 0);
    }
}
