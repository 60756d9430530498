// SPDX-License-Identifier: Apache-2.0
// The exposition parser and the metrics_prom_set it fills (the writer is prom_render.c). It works
// line by line, either on one copy of the input held in the set's arena (metrics_prom_parse: names,
// label values without escapes and HELP texts without escapes are views into that copy; anything
// unescaped is written to the arena) or on pieces of input as they arrive (metrics_prom_stream:
// every string kept is copied, names interned, so the input is never held whole and never twice).
// Families are found by an open-addressing index on their name, so merging and lookups stay O(1)
// per sample. Invariant: whatever metrics_prom_render writes, metrics_prom_parse reads back to the
// same samples in the same format.
#include "roles/metrics/prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/prom.h"
#include "core/utf8.h"

#define ARENA_BLOCK (64 * 1024)

struct metrics_prom_arena_block {
    struct metrics_prom_arena_block *next;
    size_t len, cap;
    char *ext; /* an adopted buffer (metrics_prom_adopt): the block holds no data of its own */
    _Alignas(16) char data[];
};

void metrics_prom_set_init(struct metrics_prom_set *s)
{
    memset(s, 0, sizeof(*s));
}

void metrics_prom_set_cleanup(struct metrics_prom_set *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < s->nfams; i++) {
        /* families live in the arena: free their arrays first; borrowed arrays (cap 0) are not
         * ours */
        if (s->fams[i]->cap) {
            sc_free(s->fams[i]->samples);
        }
    }
    struct metrics_prom_arena_block *b = s->arena.head;
    while (b) {
        struct metrics_prom_arena_block *next = b->next;
        sc_free(b->ext);
        sc_free(b);
        b = next;
    }
    sc_free(s->fams);
    sc_free(s->index);
    memset(s, 0, sizeof(*s));
}

/* Carves <n> bytes aligned to <align> (a power of two up to 16) from the set's arena. */
static void *carve(struct metrics_prom_set *s, size_t n, size_t align)
{
    if (n == 0) {
        n = 1;
    }
    struct metrics_prom_arena_block *b = s->arena.head;
    size_t off = b ? (b->len + align - 1) & ~(align - 1) : 0;
    if (!b || off > b->cap || b->cap - off < n) {
        size_t cap = n > ARENA_BLOCK / 4 ? n : ARENA_BLOCK;
        struct metrics_prom_arena_block *nb = sc_malloc(sizeof(*nb) + cap);
        nb->len = 0;
        nb->cap = cap;
        nb->ext = NULL;
        if (cap == n && b) {
            /* A large one-off block goes behind the current one, which keeps its free room. */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            s->arena.head = nb;
        }
        b = nb;
        off = 0;
    }
    void *p = b->data + off;
    b->len = off + n;
    s->arena.used += n;
    return p;
}

void *metrics_prom_alloc(struct metrics_prom_set *s, size_t n)
{
    return carve(s, (n + 15) & ~(size_t)15, 16);
}

bool metrics_prom_owns(const struct metrics_prom_set *s, const char *p, size_t len)
{
    for (const struct metrics_prom_arena_block *b = s->arena.head; b; b = b->next) {
        const char *d = b->ext ? b->ext : b->data;
        if (p >= d && p + len <= d + b->len) {
            return true;
        }
    }
    return false;
}

void metrics_prom_adopt(struct metrics_prom_set *s, char *p, size_t len)
{
    /* A full block (len == cap): the bump allocator never carves from it. */
    struct metrics_prom_arena_block *nb = sc_malloc(sizeof(*nb));
    nb->len = len;
    nb->cap = len;
    nb->ext = p;
    nb->next = s->arena.head;
    s->arena.head = nb;
    s->arena.used += len;
}

struct sc_str metrics_prom_strdup(struct metrics_prom_set *s, struct sc_str v)
{
    char *p = metrics_prom_alloc(s, v.len + 1);
    if (v.len) {
        memcpy(p, v.p, v.len);
    }
    p[v.len] = '\0';
    return sc_str_n(p, v.len);
}

static uint64_t hash_name(struct sc_str n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n.len; i++) {
        h ^= (unsigned char)n.p[i];
        h *= 1099511628211ull;
    }
    return h;
}

struct metrics_prom_family *metrics_prom_find(const struct metrics_prom_set *s, struct sc_str name)
{
    if (!s->icap) {
        return NULL;
    }
    size_t mask = s->icap - 1;
    for (size_t i = hash_name(name) & mask;; i = (i + 1) & mask) {
        struct metrics_prom_family *f = s->index[i];
        if (!f) {
            return NULL;
        }
        if (sc_str_eq(f->name, name)) {
            return f;
        }
    }
}

static void index_put(struct metrics_prom_family **idx, size_t cap, struct metrics_prom_family *f)
{
    size_t mask = cap - 1;
    size_t i = hash_name(f->name) & mask;
    while (idx[i]) {
        i = (i + 1) & mask;
    }
    idx[i] = f;
}

struct metrics_prom_family *metrics_prom_family_get(struct metrics_prom_set *s, struct sc_str name,
                                                    enum metrics_prom_type type)
{
    struct metrics_prom_family *f = metrics_prom_find(s, name);
    if (f) {
        return f;
    }
    if ((s->nfams + 1) * 2 > s->icap) {
        size_t cap = s->icap ? s->icap * 2 : 64;
        struct metrics_prom_family **idx = sc_calloc(cap, sizeof(*idx));
        for (size_t i = 0; i < s->nfams; i++) {
            index_put(idx, cap, s->fams[i]);
        }
        sc_free(s->index);
        s->index = idx;
        s->icap = cap;
    }
    if (s->nfams == s->fcap) {
        s->fcap = s->fcap ? s->fcap * 2 : 32;
        s->fams = sc_reallocarray(s->fams, s->fcap, sizeof(*s->fams));
    }
    f = metrics_prom_alloc(s, sizeof(*f));
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->type = type;
    s->fams[s->nfams++] = f;
    index_put(s->index, s->icap, f);
    return f;
}

struct metrics_prom_sample *metrics_prom_sample_add(struct metrics_prom_set *s,
                                                    struct metrics_prom_family *f)
{
    if (f->cap == 0 && f->nsamples) {
        /* Borrowed from another set (metrics_prom_family_share): copy before writing. */
        struct metrics_prom_sample *own = sc_reallocarray(NULL, f->nsamples * 2, sizeof(*own));
        memcpy(own, f->samples, f->nsamples * sizeof(*own));
        f->samples = own;
        f->cap = f->nsamples * 2;
    }
    if (f->nsamples == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 4;
        f->samples = sc_reallocarray(f->samples, f->cap, sizeof(*f->samples));
    }
    struct metrics_prom_sample *sm = &f->samples[f->nsamples++];
    memset(sm, 0, sizeof(*sm));
    s->nsamples++;
    return sm;
}

void metrics_prom_family_share(struct metrics_prom_set *s, struct metrics_prom_family *dst,
                               const struct metrics_prom_family *src)
{
    dst->samples = src->samples;
    dst->nsamples = src->nsamples;
    dst->cap = 0;
    s->nsamples += src->nsamples;
}

bool metrics_prom_valid_name(struct sc_str name, bool label)
{
    if (name.len == 0) {
        return false;
    }
    for (size_t i = 0; i < name.len; i++) {
        unsigned char c = (unsigned char)name.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

const char *metrics_prom_type_name(enum metrics_prom_type t, enum metrics_prom_format fmt)
{
    switch (t) {
    case METRICS_PROM_COUNTER:
        return "counter";
    case METRICS_PROM_GAUGE:
        return "gauge";
    case METRICS_PROM_HISTOGRAM:
        return "histogram";
    case METRICS_PROM_SUMMARY:
        return "summary";
    case METRICS_PROM_GAUGEHISTOGRAM:
        return "gaugehistogram";
    case METRICS_PROM_INFO:
        return "info";
    case METRICS_PROM_STATESET:
        return "stateset";
    case METRICS_PROM_UNTYPED:
        break;
    }
    return fmt == METRICS_PROM_FMT_OPENMETRICS ? "unknown" : "untyped";
}

/* ---- parsing ---- */

struct parser {
    struct metrics_prom_set *s;
    const char *base; /* the arena copy of the input */
    const char *p, *end;
    const char *line; /* start of the current line */
    uint32_t lineno;
    enum metrics_prom_format fmt;
    const struct metrics_prom_limits *lim;
    struct metrics_prom_error *err;
    struct metrics_prom_family *cur;
    struct metrics_prom_label *tmp; /* labels of the sample being parsed */
    size_t tmpcap;
    bool eof; /* "# EOF" seen */
    /* Copy mode (metrics_prom_stream): the input goes away after each call, so every string the set
     * keeps is copied; names, which repeat on every sample, are interned in a bounded table. */
    bool copy;
    struct sc_str *names; /* open addressing, NAMES_CAP slots */
    size_t nnames;
};

#define NAMES_CAP 4096

/* Returns <n> itself, or in copy mode its interned copy in the arena. */
static struct sc_str keep_name(struct parser *ps, struct sc_str n)
{
    if (!ps->copy) {
        return n;
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n.len; i++) {
        h ^= (unsigned char)n.p[i];
        h *= 1099511628211ull;
    }
    size_t i = (size_t)h & (NAMES_CAP - 1);
    for (; ps->names[i].p; i = (i + 1) & (NAMES_CAP - 1)) {
        if (sc_str_eq(ps->names[i], n)) {
            return ps->names[i];
        }
    }
    char *c = carve(ps->s, n.len + 1, 1);
    memcpy(c, n.p, n.len);
    c[n.len] = '\0';
    struct sc_str k = sc_str_n(c, n.len);
    if (ps->nnames < NAMES_CAP / 2) {
        ps->names[i] = k; /* past half full, names are copied and no longer interned */
        ps->nnames++;
    }
    return k;
}

static int fail(struct parser *ps, const char *at, const char *msg)
{
    ps->err->line = ps->lineno;
    ps->err->col = (uint32_t)(at - ps->line) + 1;
    ps->err->msg = msg;
    return SC_EINVAL;
}

static bool is_name_char(char c, bool first, bool label)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':') ||
           (!first && c >= '0' && c <= '9');
}

static struct sc_str scan_name(struct parser *ps, bool label)
{
    const char *st = ps->p;
    while (ps->p < ps->end && is_name_char(*ps->p, ps->p == st, label)) {
        ps->p++;
    }
    return sc_str_n(st, (size_t)(ps->p - st));
}

/* Skips blanks: in 0.0.4 any run of spaces and tabs, in OpenMetrics none. */
static void skip_ws(struct parser *ps)
{
    if (ps->fmt == METRICS_PROM_FMT_TEXT) {
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t')) {
            ps->p++;
        }
    }
}

/* Consumes the separator between tokens: one space in OpenMetrics, blanks in 0.0.4. */
static bool sep(struct parser *ps)
{
    if (ps->p >= ps->end ||
        (*ps->p != ' ' && !(ps->fmt == METRICS_PROM_FMT_TEXT && *ps->p == '\t'))) {
        return false;
    }
    ps->p++;
    skip_ws(ps);
    return true;
}

static bool at_eol(const struct parser *ps)
{
    return ps->p >= ps->end || *ps->p == '\n';
}

/* Parses a float token the way Prometheus does (Go's ParseFloat without hex or underscores). */
static bool parse_float(struct sc_str t, double *out)
{
    if (t.len == 0 || t.len > 64) {
        return false;
    }
    size_t i = 0;
    bool neg = false;
    if (t.p[0] == '+' || t.p[0] == '-') {
        neg = t.p[0] == '-';
        i = 1;
    }
    struct sc_str rest = sc_str_n(t.p + i, t.len - i);
    if (sc_str_caseeq(rest, SC_STR("inf")) || sc_str_caseeq(rest, SC_STR("infinity"))) {
        *out = neg ? -INFINITY : INFINITY;
        return true;
    }
    if (i == 0 && sc_str_caseeq(rest, SC_STR("nan"))) {
        *out = NAN;
        return true;
    }
    /* Fast path: a short integer. */
    uint64_t v = 0;
    size_t j = i;
    while (j < t.len && t.p[j] >= '0' && t.p[j] <= '9' && j - i < 15) {
        v = v * 10 + (uint64_t)(t.p[j] - '0');
        j++;
    }
    if (j == t.len && j > i) {
        *out = neg ? -(double)v : (double)v;
        return true;
    }
    /* Grammar check, then strtod on a terminated copy. */
    size_t digits = 0;
    j = i;
    while (j < t.len && t.p[j] >= '0' && t.p[j] <= '9') {
        j++;
        digits++;
    }
    if (j < t.len && t.p[j] == '.') {
        j++;
        while (j < t.len && t.p[j] >= '0' && t.p[j] <= '9') {
            j++;
            digits++;
        }
    }
    if (digits == 0) {
        return false;
    }
    if (j < t.len && (t.p[j] == 'e' || t.p[j] == 'E')) {
        j++;
        if (j < t.len && (t.p[j] == '+' || t.p[j] == '-')) {
            j++;
        }
        size_t ed = 0;
        while (j < t.len && t.p[j] >= '0' && t.p[j] <= '9') {
            j++;
            ed++;
        }
        if (ed == 0) {
            return false;
        }
    }
    if (j != t.len) {
        return false;
    }
    char buf[72];
    memcpy(buf, t.p, t.len);
    buf[t.len] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

static bool parse_int64(struct sc_str t, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (t.len && (t.p[0] == '-' || t.p[0] == '+')) {
        neg = t.p[0] == '-';
        i = 1;
    }
    if (i == t.len) {
        return false;
    }
    uint64_t v = 0;
    for (; i < t.len; i++) {
        if (t.p[i] < '0' || t.p[i] > '9') {
            return false;
        }
        if (v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(t.p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) {
        return false;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static struct sc_str scan_token(struct parser *ps)
{
    const char *st = ps->p;
    while (ps->p < ps->end && *ps->p != ' ' && *ps->p != '\t' && *ps->p != '\n') {
        ps->p++;
    }
    return sc_str_n(st, (size_t)(ps->p - st));
}

/* Returns the <n> bytes at <st>, already validated, with their <nesc> escapes (\\, \", \n)
 * resolved: a view of the input when there are none, else a NUL-terminated copy in the scrape's
 * arena. */
/* Returns the text <st>[0..n) with its <nesc> escapes resolved: a view of it when there are none
 * (and, in copy mode, <keep> is false: the caller copies it), else a copy in the arena. */
static struct sc_str unescape(struct parser *ps, const char *st, size_t n, size_t nesc, bool keep)
{
    if (nesc == 0 && !(ps->copy && keep)) {
        return sc_str_n(st, n);
    }
    char *d = carve(ps->s, n - nesc + 1, 1);
    if (nesc == 0) {
        memcpy(d, st, n);
        d[n] = '\0';
        return sc_str_n(d, n);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i] == '\\') {
            i++;
            d[k++] = st[i] == 'n' ? '\n' : st[i];
        } else {
            d[k++] = st[i];
        }
    }
    d[k] = '\0';
    return sc_str_n(d, k);
}

/* Reads a quoted label value (after the opening quote) up to its closing quote into <*out>,
 * unescaped into the arena when it held escapes. Returns 0, or an error with ps->err set. */
static int scan_quoted(struct parser *ps, struct sc_str *out)
{
    const char *st = ps->p;
    size_t nesc = 0;
    bool high = false;
    while (ps->p < ps->end && *ps->p != '"') {
        high = high || (unsigned char)*ps->p >= 0x80;
        if (*ps->p == '\n') {
            return fail(ps, ps->p, "newline in label value");
        }
        if (*ps->p == '\\') {
            if (ps->p + 1 >= ps->end) {
                return fail(ps, ps->p, "unterminated label value");
            }
            char c = ps->p[1];
            if (c != '\\' && c != '"' && c != 'n') {
                return fail(ps, ps->p, "invalid escape sequence in label value");
            }
            nesc++;
            ps->p += 2;
            continue;
        }
        ps->p++;
    }
    if (ps->p >= ps->end) {
        return fail(ps, ps->p, "unterminated label value");
    }
    size_t n = (size_t)(ps->p - st);
    if (high && !sc_utf8_valid(st, n)) {
        return fail(ps, st, "label value is not valid UTF-8");
    }
    ps->p++;                                 /* the closing quote */
    *out = unescape(ps, st, n, nesc, false); /* parse_sample copies the values it keeps */
    return 0;
}

/* Parses "{...}" at ps->p into ps->tmp; sets <*n>. With <keep> false (exemplars) only checks. */
static int parse_labels(struct parser *ps, size_t *n)
{
    *n = 0;
    ps->p++; /* '{' */
    skip_ws(ps);
    bool first = true;
    for (;;) {
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return 0;
        }
        if (!first) {
            if (ps->p >= ps->end || *ps->p != ',') {
                return fail(ps, ps->p, "expected ',' or '}' in label set");
            }
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == '}') {
                if (ps->fmt == METRICS_PROM_FMT_OPENMETRICS) {
                    return fail(ps, ps->p, "trailing comma in label set");
                }
                ps->p++;
                return 0;
            }
        }
        first = false;
        const char *at = ps->p;
        struct sc_str name = scan_name(ps, true);
        if (name.len == 0) {
            return fail(ps, at, "invalid label name");
        }
        if (sc_str_eq(name, SC_STR("__name__"))) {
            return fail(ps, at, "reserved label name __name__");
        }
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '=') {
            return fail(ps, ps->p, "expected '=' after label name");
        }
        ps->p++;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            return fail(ps, ps->p, "expected '\"' to start label value");
        }
        ps->p++;
        struct sc_str value;
        int rc = scan_quoted(ps, &value);
        if (rc) {
            return rc;
        }
        skip_ws(ps);
        for (size_t i = 0; i < *n; i++) {
            if (sc_str_eq(ps->tmp[i].name, name)) {
                return fail(ps, at, "duplicate label name");
            }
        }
        if (*n >= ps->lim->max_labels) {
            return fail(ps, at, "too many labels");
        }
        if (*n == ps->tmpcap) {
            ps->tmpcap = ps->tmpcap ? ps->tmpcap * 2 : 16;
            ps->tmp = sc_reallocarray(ps->tmp, ps->tmpcap, sizeof(*ps->tmp));
        }
        ps->tmp[*n].name = name;
        ps->tmp[*n].value = value;
        (*n)++;
    }
}

/* Returns true when the sample <n> belongs to family <f> given its type and the format. */
static bool belongs(const struct metrics_prom_family *f, struct sc_str n,
                    enum metrics_prom_format fmt)
{
    bool om = fmt == METRICS_PROM_FMT_OPENMETRICS;
    switch (f->type) {
    case METRICS_PROM_COUNTER:
        if (om) {
            return metrics_prom_has_suffix(n, f->name, "_total") ||
                   metrics_prom_has_suffix(n, f->name, "_created");
        }
        return sc_str_eq(n, f->name);
    case METRICS_PROM_HISTOGRAM:
        return metrics_prom_has_suffix(n, f->name, "_bucket") ||
               metrics_prom_has_suffix(n, f->name, "_sum") ||
               metrics_prom_has_suffix(n, f->name, "_count") ||
               (om && metrics_prom_has_suffix(n, f->name, "_created"));
    case METRICS_PROM_GAUGEHISTOGRAM:
        return metrics_prom_has_suffix(n, f->name, "_bucket") ||
               metrics_prom_has_suffix(n, f->name, "_gsum") ||
               metrics_prom_has_suffix(n, f->name, "_gcount");
    case METRICS_PROM_SUMMARY:
        return sc_str_eq(n, f->name) || metrics_prom_has_suffix(n, f->name, "_sum") ||
               metrics_prom_has_suffix(n, f->name, "_count") ||
               (om && metrics_prom_has_suffix(n, f->name, "_created"));
    case METRICS_PROM_INFO:
        return metrics_prom_has_suffix(n, f->name, "_info");
    default:
        return sc_str_eq(n, f->name);
    }
}

/* Returns the typed family that a sample named <name> would belong to by its suffix, if any. */
static const struct metrics_prom_family *owner_by_suffix(const struct parser *ps,
                                                         struct sc_str name)
{
    static const char *const suffixes[] = { "_bucket",  "_sum",  "_count", "_total",
                                            "_created", "_info", "_gsum",  "_gcount" };
    for (size_t i = 0; i < SC_ARRAY_LEN(suffixes); i++) {
        size_t sl = strlen(suffixes[i]);
        if (name.len <= sl || memcmp(name.p + name.len - sl, suffixes[i], sl) != 0) {
            continue;
        }
        const struct metrics_prom_family *f =
            metrics_prom_find(ps->s, sc_str_n(name.p, name.len - sl));
        if (f && f->has_type && belongs(f, name, ps->fmt)) {
            return f;
        }
    }
    return NULL;
}

static const struct metrics_prom_label *find_label(const struct metrics_prom_label *l, size_t n,
                                                   const char *name)
{
    struct sc_str k = sc_str_c(name);
    for (size_t i = 0; i < n; i++) {
        if (sc_str_eq(l[i].name, k)) {
            return &l[i];
        }
    }
    return NULL;
}

static int parse_sample(struct parser *ps)
{
    const char *at = ps->p;
    struct sc_str name = scan_name(ps, false);
    if (name.len == 0) {
        return fail(ps, at, "invalid metric name");
    }
    size_t nl = 0;
    const char *after_name = ps->p;
    skip_ws(ps); /* 0.0.4 allows blanks before the label set */
    if (ps->p < ps->end && *ps->p == '{') {
        int rc = parse_labels(ps, &nl);
        if (rc) {
            return rc;
        }
    } else {
        ps->p = after_name;
    }
    if (!sep(ps)) {
        return fail(ps, ps->p, "expected a space before the value");
    }
    const char *vat = ps->p;
    double v;
    if (!parse_float(scan_token(ps), &v)) {
        return fail(ps, vat, "invalid value");
    }
    bool has_ts = false;
    int64_t ts = 0;
    if (sep(ps) && !at_eol(ps) && *ps->p != '#') {
        const char *tat = ps->p;
        struct sc_str t = scan_token(ps);
        if (ps->fmt == METRICS_PROM_FMT_TEXT) {
            if (!parse_int64(t, &ts)) {
                return fail(ps, tat, "invalid timestamp");
            }
        } else {
            double d;
            if (!parse_float(t, &d) || !isfinite(d) || fabs(d) > 9.2e15) {
                return fail(ps, tat, "invalid timestamp");
            }
            /* llround by hand: libm's only use in the binary, and mapping libm costs every
             * role about 300 KiB of resident memory. Exact: |x| < 2^63, and past 2^53 every
             * double is an integer (fraction 0). */
            double x = d * 1000.0;
            ts = (int64_t)x;
            double frac = x - (double)ts;
            ts += frac >= 0.5 ? 1 : frac <= -0.5 ? -1 : 0;
        }
        has_ts = true;
        sep(ps);
    }
    if (!at_eol(ps) && *ps->p == '#' && ps->fmt == METRICS_PROM_FMT_OPENMETRICS) {
        /* An exemplar: " # {labels} value [timestamp]". Checked for shape, then skipped. */
        ps->p++;
        if (!sep(ps) || ps->p >= ps->end || *ps->p != '{') {
            return fail(ps, ps->p, "invalid exemplar");
        }
        size_t saved = nl;
        struct metrics_prom_label *keep = ps->tmp;
        /* parse the exemplar's labels after the sample's, in the same scratch array */
        ps->tmp = NULL;
        size_t cap = ps->tmpcap;
        ps->tmpcap = 0;
        size_t en;
        int rc = parse_labels(ps, &en);
        sc_free(ps->tmp);
        ps->tmp = keep;
        ps->tmpcap = cap;
        nl = saved;
        if (rc) {
            return rc;
        }
        if (!sep(ps)) {
            return fail(ps, ps->p, "invalid exemplar");
        }
        const char *eat = ps->p;
        double ev;
        if (!parse_float(scan_token(ps), &ev)) {
            return fail(ps, eat, "invalid exemplar value");
        }
        if (sep(ps) && !at_eol(ps)) {
            eat = ps->p;
            if (!parse_float(scan_token(ps), &ev)) {
                return fail(ps, eat, "invalid exemplar timestamp");
            }
        }
    }
    if (ps->fmt == METRICS_PROM_FMT_TEXT) {
        skip_ws(ps);
    }
    if (!at_eol(ps)) {
        return fail(ps, ps->p, "unexpected text after the sample");
    }

    struct metrics_prom_family *f = ps->cur;
    if (f && belongs(f, name, ps->fmt) && !sc_str_eq(name, f->name)) {
        struct metrics_prom_family *other = metrics_prom_find(ps->s, name);
        if (other && other != f) {
            return fail(ps, at, "sample name clashes with another family");
        }
    }
    if (!f || !belongs(f, name, ps->fmt)) {
        f = metrics_prom_find(ps->s, name);
        if (f && f->nsamples && ps->fmt == METRICS_PROM_FMT_OPENMETRICS) {
            return fail(ps, at, "samples of a family are not contiguous");
        }
        if (f && f->has_type && !belongs(f, name, ps->fmt)) {
            return fail(ps, at, "sample name does not fit its family's type");
        }
        if (!f) {
            if (ps->fmt == METRICS_PROM_FMT_OPENMETRICS && ps->cur &&
                ps->cur->type == METRICS_PROM_COUNTER && sc_str_eq(name, ps->cur->name)) {
                return fail(ps, at, "counter samples must end in _total");
            }
            if (owner_by_suffix(ps, name)) {
                return fail(ps, at, "sample of a typed family is not contiguous with it");
            }
            f = metrics_prom_family_get(ps->s, keep_name(ps, name), METRICS_PROM_UNTYPED);
        }
        ps->cur = f;
    }
    if (f->type == METRICS_PROM_HISTOGRAM || f->type == METRICS_PROM_GAUGEHISTOGRAM) {
        if (metrics_prom_has_suffix(name, f->name, "_bucket")) {
            const struct metrics_prom_label *le = find_label(ps->tmp, nl, "le");
            double b;
            if (!le || !parse_float(le->value, &b)) {
                return fail(ps, at, "histogram bucket without a valid \"le\" label");
            }
        }
    } else if (f->type == METRICS_PROM_SUMMARY && sc_str_eq(name, f->name)) {
        const struct metrics_prom_label *q = find_label(ps->tmp, nl, "quantile");
        double b;
        if (!q || !parse_float(q->value, &b)) {
            return fail(ps, at, "summary sample without a valid \"quantile\" label");
        }
    }
    if (ps->s->nsamples >= ps->lim->max_samples) {
        ps->err->line = ps->lineno;
        ps->err->col = 1;
        ps->err->msg = "too many samples";
        return SC_ELIMIT;
    }
    struct metrics_prom_sample *sm = metrics_prom_sample_add(ps->s, f);
    sm->name = sc_str_eq(name, f->name) ? f->name : keep_name(ps, name);
    sm->value = v;
    sm->has_ts = has_ts;
    sm->ts_ms = ts;
    sm->nlabels = (uint32_t)nl;
    if (nl + ps->lim->extra_labels) {
        sm->labels = metrics_prom_alloc(ps->s, (nl + ps->lim->extra_labels) * sizeof(*sm->labels));
        /* Most samples repeat the label names of the one before: reuse its copies. */
        const struct metrics_prom_sample *prev =
            f->nsamples > 1 ? &f->samples[f->nsamples - 2] : NULL;
        for (size_t i = 0; i < nl; i++) {
            struct sc_str n = ps->tmp[i].name;
            sm->labels[i].name = prev && i < prev->nlabels && sc_str_eq(prev->labels[i].name, n)
                                     ? prev->labels[i].name
                                     : keep_name(ps, n);
            sm->labels[i].value = ps->tmp[i].value;
        }
        if (ps->copy) {
            /* The values, in one piece of the arena. */
            size_t total = 0;
            for (size_t i = 0; i < nl; i++) {
                total += sm->labels[i].value.len + 1;
            }
            char *d = carve(ps->s, total, 1);
            for (size_t i = 0; i < nl; i++) {
                struct sc_str lv = sm->labels[i].value;
                if (lv.len) {
                    memcpy(d, lv.p, lv.len);
                }
                d[lv.len] = '\0';
                sm->labels[i].value = sc_str_n(d, lv.len);
                d += lv.len + 1;
            }
        }
    }
    return 0;
}

/* Reads the rest of a HELP line, unescaping \\ and \n (and \" in OpenMetrics). */
static int scan_help(struct parser *ps, struct sc_str *out)
{
    const char *st = ps->p;
    size_t nesc = 0;
    while (!at_eol(ps)) {
        if (*ps->p == '\\') {
            char c = ps->p + 1 < ps->end ? ps->p[1] : '\0';
            if (c != '\\' && c != 'n' && !(c == '"' && ps->fmt == METRICS_PROM_FMT_OPENMETRICS)) {
                return fail(ps, ps->p, "invalid escape sequence in HELP");
            }
            nesc++;
            ps->p += 2;
            continue;
        }
        ps->p++;
    }
    size_t n = (size_t)(ps->p - st);
    *out = unescape(ps, st, n, nesc, true);
    return 0;
}

static const struct {
    const char *name;
    enum metrics_prom_type type;
    bool om;   /* valid in OpenMetrics */
    bool text; /* valid in 0.0.4 */
} type_names[] = {
    { "counter", METRICS_PROM_COUNTER, true, true },
    { "gauge", METRICS_PROM_GAUGE, true, true },
    { "histogram", METRICS_PROM_HISTOGRAM, true, true },
    { "summary", METRICS_PROM_SUMMARY, true, true },
    { "untyped", METRICS_PROM_UNTYPED, false, true },
    { "unknown", METRICS_PROM_UNTYPED, true, false },
    { "gaugehistogram", METRICS_PROM_GAUGEHISTOGRAM, true, false },
    { "info", METRICS_PROM_INFO, true, false },
    { "stateset", METRICS_PROM_STATESET, true, false },
};

/* A line starting with '#'. Returns 1 for "# EOF". */
static int parse_comment(struct parser *ps)
{
    const char *hash = ps->p;
    ps->p++;
    bool om = ps->fmt == METRICS_PROM_FMT_OPENMETRICS;
    if (ps->p >= ps->end || (*ps->p != ' ' && *ps->p != '\t') || (om && *ps->p != ' ')) {
        if (om) {
            return fail(ps, hash, "invalid comment line");
        }
        goto skip;
    }
    ps->p++;
    skip_ws(ps);
    const char *kwat = ps->p;
    struct sc_str kw = scan_token(ps);
    if (om && sc_str_eq(kw, SC_STR("EOF"))) {
        if (!at_eol(ps)) {
            return fail(ps, ps->p, "text after # EOF");
        }
        return 1;
    }
    int kind;
    if (sc_str_eq(kw, SC_STR("HELP"))) {
        kind = 0;
    } else if (sc_str_eq(kw, SC_STR("TYPE"))) {
        kind = 1;
    } else if (om && sc_str_eq(kw, SC_STR("UNIT"))) {
        kind = 2;
    } else {
        if (om) {
            return fail(ps, kwat, "unknown metadata line");
        }
        goto skip;
    }
    if (!sep(ps)) {
        return fail(ps, ps->p, "expected a metric name");
    }
    const char *nat = ps->p;
    struct sc_str name = scan_name(ps, false);
    if (name.len == 0 || (!at_eol(ps) && *ps->p != ' ' && *ps->p != '\t')) {
        return fail(ps, nat, "invalid metric name");
    }
    struct metrics_prom_family *f = metrics_prom_find(ps->s, name);
    if (f && f->nsamples) {
        return fail(ps, kwat, "metadata after the family's samples");
    }
    if (om && ps->cur && !sc_str_eq(ps->cur->name, name) && f) {
        return fail(ps, kwat, "metadata of a family is not contiguous");
    }
    if (!f) {
        f = metrics_prom_family_get(ps->s, keep_name(ps, name), METRICS_PROM_UNTYPED);
    }
    ps->cur = f;
    bool more = sep(ps);
    if (kind == 0) {
        if (f->has_help) {
            return fail(ps, kwat, "second HELP line for the family");
        }
        struct sc_str help = SC_STR("");
        if (more) {
            int rc = scan_help(ps, &help);
            if (rc) {
                return rc;
            }
        }
        f->help = help;
        f->has_help = true;
    } else if (kind == 1) {
        if (f->has_type) {
            return fail(ps, kwat, "second TYPE line for the family");
        }
        const char *tat = ps->p;
        struct sc_str t = scan_token(ps);
        bool found = false;
        for (size_t i = 0; i < SC_ARRAY_LEN(type_names); i++) {
            if (sc_str_eq(t, sc_str_c(type_names[i].name)) &&
                (om ? type_names[i].om : type_names[i].text)) {
                f->type = type_names[i].type;
                found = true;
            }
        }
        if (!found) {
            return fail(ps, tat, "unknown metric type");
        }
        f->has_type = true;
        skip_ws(ps);
        if (!at_eol(ps)) {
            return fail(ps, ps->p, "unexpected text after the type");
        }
    } else {
        if (f->unit.len) {
            return fail(ps, kwat, "second UNIT line for the family");
        }
        const char *uat = ps->p;
        struct sc_str u = more ? scan_name(ps, true) : SC_STR("");
        if (!at_eol(ps)) {
            return fail(ps, ps->p, "invalid unit");
        }
        if (u.len && !(name.len > u.len + 1 && name.p[name.len - u.len - 1] == '_' &&
                       memcmp(name.p + name.len - u.len, u.p, u.len) == 0)) {
            return fail(ps, uat, "unit is not a suffix of the metric name");
        }
        f->unit = keep_name(ps, u);
    }
    return 0;
skip:
    while (!at_eol(ps)) {
        ps->p++;
    }
    return 0;
}

/* Parses the lines in [ps->p, ps->end): every line but possibly the last ends in '\n', and the
 * byte at ps->end can be read (a NUL or the next line). Returns 0 or an error with ps->err set. */
static int parse_lines(struct parser *ps)
{
    while (ps->p < ps->end) {
        ps->line = ps->p;
        if (ps->eof) {
            return fail(ps, ps->p, "text after # EOF");
        }
        skip_ws(ps);
        int rc = 0;
        if (*ps->p == '\n') {
            if (ps->fmt == METRICS_PROM_FMT_OPENMETRICS) {
                return fail(ps, ps->p, "empty line");
            }
        } else if (*ps->p == '#') {
            rc = parse_comment(ps);
            if (rc == 1) {
                ps->eof = true;
                rc = 0;
            }
        } else {
            rc = parse_sample(ps);
        }
        if (rc) {
            return rc;
        }
        if (ps->p < ps->end) {
            ps->p++; /* the newline */
            ps->lineno++;
        }
        /* 0.0.4 wants a final newline; Prometheus accepts its absence, and so do we. */
    }
    return 0;
}

static int parse_end(struct parser *ps)
{
    if (ps->fmt == METRICS_PROM_FMT_OPENMETRICS && !ps->eof) {
        ps->line = ps->p;
        return fail(ps, ps->p, "missing # EOF");
    }
    return 0;
}

int metrics_prom_parse(struct metrics_prom_set *s, const char *p, size_t len,
                       enum metrics_prom_format fmt, const struct metrics_prom_limits *lim,
                       struct metrics_prom_error *err)
{
    static const struct metrics_prom_limits deflim = { .max_samples = 1000000, .max_labels = 128 };
    struct parser ps = {
        .s = s,
        .fmt = fmt,
        .lim = lim ? lim : &deflim,
        .err = err,
        .lineno = 1,
    };
    const char *copy = p;
    if (!metrics_prom_owns(s, p, len)) {
        char *c = metrics_prom_alloc(s, len + 1);
        if (len) {
            memcpy(c, p, len);
        }
        c[len] = '\0';
        copy = c;
    }
    ps.base = copy;
    ps.p = copy;
    ps.end = copy + len;
    ps.line = copy;
    err->line = 0;
    err->col = 0;
    err->msg = NULL;
    int rc = parse_lines(&ps);
    if (rc == 0) {
        rc = parse_end(&ps);
    }
    sc_free(ps.tmp);
    return rc;
}

struct metrics_prom_stream {
    struct parser ps;
    struct metrics_prom_limits lim;
    struct metrics_prom_error err; /* the first error, repeated by later calls */
    int rc;
    struct sc_buf pending; /* input not parsed yet: at most one partial line after a call */
};

struct metrics_prom_stream *metrics_prom_stream_new(struct metrics_prom_set *s,
                                                    enum metrics_prom_format fmt,
                                                    const struct metrics_prom_limits *lim,
                                                    size_t max_line)
{
    struct metrics_prom_stream *st = SC_NEW(struct metrics_prom_stream);
    st->lim =
        lim ? *lim : (struct metrics_prom_limits){ .max_samples = 1000000, .max_labels = 128 };
    st->ps = (struct parser){
        .s = s,
        .fmt = fmt,
        .lim = &st->lim,
        .err = &st->err,
        .lineno = 1,
        .copy = true,
        .names = sc_calloc(NAMES_CAP, sizeof(struct sc_str)),
    };
    sc_buf_init(&st->pending, max_line + 1);
    return st;
}

/* Parses pending[0..upto) (whole lines) with a NUL after them; keeps the rest. */
static int stream_parse(struct metrics_prom_stream *st, size_t upto)
{
    struct parser *ps = &st->ps;
    char *b = st->pending.p;
    char saved = b[upto]; /* the buffer always has room for the terminator */
    b[upto] = '\0';
    ps->base = b;
    ps->p = b;
    ps->line = b;
    ps->end = b + upto;
    int rc = parse_lines(ps);
    b[upto] = saved;
    if (rc == 0) {
        memmove(b, b + upto, st->pending.len - upto);
        st->pending.len -= upto;
    }
    return rc;
}

int metrics_prom_stream_feed(struct metrics_prom_stream *st, const char *p, size_t len,
                             struct metrics_prom_error *err)
{
    while (st->rc == 0 && len > 0) {
        /* Take what fits, leaving room for the NUL stream_parse writes. */
        size_t room = st->pending.max - 1 - st->pending.len;
        size_t n = len < room ? len : room;
        if (n == 0) {
            st->err = (struct metrics_prom_error){ .line = st->ps.lineno,
                                                   .col = 1,
                                                   .msg = "line too long" };
            st->rc = SC_ELIMIT;
            break;
        }
        (void)sc_buf_reserve(&st->pending, n + 1);
        memcpy(st->pending.p + st->pending.len, p, n);
        size_t from = st->pending.len;
        st->pending.len += n;
        p += n;
        len -= n;
        const char *nl = NULL;
        for (size_t i = st->pending.len; i > from; i--) {
            if (st->pending.p[i - 1] == '\n') {
                nl = st->pending.p + i - 1;
                break;
            }
        }
        if (nl) {
            st->rc = stream_parse(st, (size_t)(nl - st->pending.p) + 1);
        }
    }
    *err = st->err;
    return st->rc;
}

int metrics_prom_stream_end(struct metrics_prom_stream *st, struct metrics_prom_error *err)
{
    if (st->rc == 0 && st->pending.len) {
        (void)sc_buf_reserve(&st->pending, 1);
        st->rc = stream_parse(st, st->pending.len);
    }
    if (st->rc == 0) {
        st->ps.p = st->ps.end = st->pending.p;
        st->rc = parse_end(&st->ps);
    }
    *err = st->err;
    return st->rc;
}

void metrics_prom_stream_free(struct metrics_prom_stream *st)
{
    if (!st) {
        return;
    }
    sc_free(st->ps.tmp);
    sc_free(st->ps.names);
    sc_buf_cleanup(&st->pending);
    sc_free(st);
}
