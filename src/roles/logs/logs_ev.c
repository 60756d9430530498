// SPDX-License-Identifier: Apache-2.0
// The record of the log pipeline: an ordered list of fields (key, typed value) whose text lives in
// the line being processed or in a per-record arena, so parsing, enrichment and encoding allocate
// nothing per value once the arena and the field array have grown to the size of a typical record.
// Also the strict JSON object parser of the `json` parser and the JSON encoders of the outputs.
// Invariants: every key and string value is valid UTF-8 without NUL; INT, REAL and RAW values hold
// canonical compact JSON text (what jansson would print); a record behaves as a jansson object did
// (setting an existing key replaces its value in place, a new key goes last, order is kept), so the
// bytes the outputs write are the ones they wrote when records were jansson objects.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/utf8.h"
#include "roles/logs/logs.h"

#define ARENA_BLOCK 16384
#define INDEX_FROM 16       /* fields before a hash index is kept */
#define KEEP_FIELDS 1024    /* field array kept across records at most */
#define JSON_MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

/* Eight bytes at a time: the tests below say whether any byte of a word needs a closer look. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Nonzero when some byte of <v> is below <n> (n <= 128). */
static inline uint64_t has_less(uint64_t v, unsigned n)
{
    return (v - ONES * n) & ~v & HIGHS;
}

static inline uint64_t has_byte(uint64_t v, unsigned c)
{
    return has_less(v ^ (ONES * c), 1);
}

struct logs_arena_blk {
    struct logs_arena_blk *next;
    size_t cap, used;
    char data[];
};

void logs_ev_init(struct logs_ev *ev)
{
    memset(ev, 0, sizeof(*ev));
}

static void free_blocks(struct logs_arena_blk *b)
{
    while (b) {
        struct logs_arena_blk *n = b->next;
        sc_free(b);
        b = n;
    }
}

void logs_ev_cleanup(struct logs_ev *ev)
{
    free_blocks(ev->arena);
    sc_free(ev->f);
    sc_free(ev->idx);
    memset(ev, 0, sizeof(*ev));
}

void logs_ev_reset(struct logs_ev *ev)
{
    if (ev->arena) {
        /* Keep the first block (standard size) for the next record, free the rest. */
        struct logs_arena_blk *keep = ev->arena;
        while (keep->next) {
            keep = keep->next;
        }
        struct logs_arena_blk *b = ev->arena;
        while (b != keep) {
            struct logs_arena_blk *n = b->next;
            sc_free(b);
            b = n;
        }
        if (keep->cap > ARENA_BLOCK) {
            sc_free(keep);
            keep = NULL;
        } else {
            keep->used = 0;
        }
        ev->arena = keep;
    }
    if (ev->cap > KEEP_FIELDS) {
        sc_free(ev->f);
        ev->f = NULL;
        ev->cap = 0;
    }
    if (ev->idx_cap > 4 * KEEP_FIELDS) {
        sc_free(ev->idx);
        ev->idx = NULL;
        ev->idx_cap = 0;
    }
    ev->n = 0;
    ev->live = 0;
    ev->indexed = false;
}

char *logs_ev_alloc(struct logs_ev *ev, size_t n)
{
    struct logs_arena_blk *b = ev->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = sc_malloc(sizeof(*b) + cap);
        b->cap = cap;
        b->used = 0;
        b->next = ev->arena;
        ev->arena = b;
    }
    char *p = b->data + b->used;
    b->used += n;
    return p;
}

struct sc_str logs_ev_copy(struct logs_ev *ev, struct sc_str s)
{
    char *p = logs_ev_alloc(ev, s.len + 1);
    if (s.len) {
        memcpy(p, s.p, s.len);
    }
    p[s.len] = 0;
    return sc_str_n(p, s.len);
}

struct sc_str logs_ev_clean(struct logs_ev *ev, struct sc_str s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t i = 0;
    while (i < s.len) {
        if (s.len - i >= 8) {
            uint64_t v = load8(p + i);
            if (!((v & HIGHS) | has_less(v, 1))) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80 && p[i] != 0) {
            i++;
            continue;
        }
        size_t l = p[i] ? sc_utf8_seq(p + i, s.len - i) : 0;
        if (l == 0) {
            break;
        }
        i += l;
    }
    if (i == s.len) {
        return s.len ? s : SC_STR("");
    }
    /* Worst case every byte becomes the 3-byte U+FFFD. */
    char *out = logs_ev_alloc(ev, i + (s.len - i) * 3 + 1);
    memcpy(out, s.p, i);
    size_t o = i;
    while (i < s.len) {
        size_t l = p[i] ? sc_utf8_seq(p + i, s.len - i) : 0;
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, l);
            o += l;
            i += l;
        }
    }
    out[o] = 0;
    return sc_str_n(out, o);
}

/* ---- fields ---- */

static uint32_t hash_key(struct sc_str k)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < k.len; i++) {
        h = (h ^ (unsigned char)k.p[i]) * 16777619u;
    }
    return h;
}

static void index_add(struct logs_ev *ev, size_t i)
{
    size_t mask = ev->idx_cap - 1;
    size_t s = hash_key(ev->f[i].key) & mask;
    while (ev->idx[s]) {
        s = (s + 1) & mask;
    }
    ev->idx[s] = (uint32_t)i + 1;
}

static void index_build(struct logs_ev *ev)
{
    size_t cap = ev->idx_cap ? ev->idx_cap : 64;
    while (cap < ev->cap * 2) {
        cap *= 2;
    }
    if (cap != ev->idx_cap) {
        sc_free(ev->idx);
        ev->idx = sc_calloc(cap, sizeof(*ev->idx));
        ev->idx_cap = cap;
    } else {
        memset(ev->idx, 0, cap * sizeof(*ev->idx));
    }
    for (size_t i = 0; i < ev->n; i++) {
        index_add(ev, i);
    }
    ev->indexed = true;
}

static bool key_eq(struct sc_str a, struct sc_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Index of the live field <key>, or -1. */
static ssize_t find(const struct logs_ev *ev, struct sc_str key)
{
    if (!ev->indexed) {
        for (size_t i = 0; i < ev->n; i++) {
            if (ev->f[i].type != LOGS_V_DEL && key_eq(ev->f[i].key, key)) {
                return (ssize_t)i;
            }
        }
        return -1;
    }
    size_t mask = ev->idx_cap - 1;
    for (size_t s = hash_key(key) & mask; ev->idx[s]; s = (s + 1) & mask) {
        const struct logs_field *f = &ev->f[ev->idx[s] - 1];
        if (f->type != LOGS_V_DEL && key_eq(f->key, key)) {
            return (ssize_t)(ev->idx[s] - 1);
        }
    }
    return -1;
}

const struct logs_field *logs_ev_get(const struct logs_ev *ev, struct sc_str key)
{
    ssize_t i = find(ev, key);
    return i < 0 ? NULL : &ev->f[i];
}

void logs_ev_set(struct logs_ev *ev, struct sc_str key, enum logs_vt type, struct sc_str val)
{
    ssize_t i = find(ev, key);
    if (i >= 0) {
        ev->f[i].type = (uint8_t)type;
        ev->f[i].val = val;
        return;
    }
    if (ev->n == ev->cap) {
        size_t ncap = ev->cap ? ev->cap * 2 : 32;
        ev->f = sc_reallocarray(ev->f, ncap, sizeof(*ev->f));
        ev->cap = ncap;
        if (ev->indexed) {
            index_build(ev);
        }
    }
    ev->f[ev->n] = (struct logs_field){ .key = key, .val = val, .type = (uint8_t)type };
    ev->n++;
    ev->live++;
    if (ev->indexed) {
        index_add(ev, ev->n - 1);
    } else if (ev->n > INDEX_FROM) {
        index_build(ev);
    }
}

bool logs_ev_del(struct logs_ev *ev, struct sc_str key)
{
    ssize_t i = find(ev, key);
    if (i < 0) {
        return false;
    }
    ev->f[i].type = LOGS_V_DEL;
    ev->live--;
    return true;
}

void logs_ev_rename(struct logs_ev *ev, struct sc_str from, struct sc_str to)
{
    ssize_t i = find(ev, from);
    if (i < 0) {
        return;
    }
    /* As jansson's set-then-delete did: the value lands under <to> (in place if <to> exists,
     * else last), then <from> goes away, even when both names are the same. */
    struct logs_field v = ev->f[i];
    logs_ev_set(ev, to, (enum logs_vt)v.type, v.val);
    logs_ev_del(ev, from);
}

/* ---- encoding ---- */

int logs_json_quote(struct sc_buf *b, struct sc_str s, enum logs_esc style)
{
    int rc = sc_buf_reserve(b, s.len * 6 + 2);
    if (rc < 0) {
        return rc;
    }
    b->len += sc_json_quote_to(b->p + b->len, s.p, s.len, (enum sc_json_style)style);
    return 0;
}

/* Room a field needs at most once encoded, separators included; <twice>: quoted again. */
static inline __attribute__((always_inline)) size_t
field_room(struct sc_str key, const struct logs_field *f, bool twice)
{
    if (twice) {
        return key.len * 7 + 7 + (f->type == LOGS_V_STR ? f->val.len * 7 + 4 : f->val.len * 6 + 5);
    }
    return key.len * 6 + 4 + (f->type == LOGS_V_STR ? f->val.len * 6 + 2 : f->val.len + 5);
}

/* A string value or key: quoted, or (<twice>) quoted as it reads inside a JSON string. */
static inline __attribute__((always_inline)) char *put_str(char *o, struct sc_str s,
                                                           enum logs_esc style, bool twice)
{
    if (!twice) {
        return o + sc_json_quote_to(o, s.p, s.len, (enum sc_json_style)style);
    }
    memcpy(o, "\\\"", 2);
    o += 2 + sc_json_escape2_to(o + 2, s.p, s.len);
    memcpy(o, "\\\"", 2);
    return o + 2;
}

static inline __attribute__((always_inline)) char *put_member(char *o, bool *first,
                                                              struct sc_str key,
                                                              const struct logs_field *f,
                                                              enum logs_esc style, bool twice)
{
    if (!*first) {
        *o++ = ',';
    }
    *first = false;
    o = put_str(o, key, style, twice);
    *o++ = ':';
    switch (f->type) {
    case LOGS_V_STR:
        return put_str(o, f->val, style, twice);
    case LOGS_V_TRUE:
        memcpy(o, "true", 4);
        return o + 4;
    case LOGS_V_FALSE:
        memcpy(o, "false", 5);
        return o + 5;
    case LOGS_V_NULL:
        memcpy(o, "null", 4);
        return o + 4;
    default:
        /* Numbers and nested JSON as they came; quoted, a nested value's quotes are escaped. */
        if (twice) {
            return o + sc_json_escape_to(o, f->val.p, f->val.len, SC_JSON_JANSSON);
        }
        memcpy(o, f->val.p, f->val.len);
        return o + f->val.len;
    }
}

enum logs_esc logs_ev_style(const struct logs_ev *ev)
{
    for (size_t i = 0; i < ev->n; i++) {
        if (ev->f[i].type == LOGS_V_REAL || ev->f[i].type == LOGS_V_RAW) {
            return LOGS_ESC_JANSSON;
        }
    }
    return LOGS_ESC_FAST;
}

/* logs_ev_dump, and (<twice>, JANSSON) logs_ev_dump_quoted without its outer quotes. */
static inline __attribute__((always_inline)) int dump(struct sc_buf *b, const struct logs_ev *ev,
                                                      enum logs_esc style,
                                                      const struct logs_field *first_f,
                                                      const struct logs_field *last_f, bool twice)
{
    const struct logs_field *own = first_f ? logs_ev_get(ev, first_f->key) : NULL;
    if (last_f && logs_ev_get(ev, last_f->key)) {
        last_f = NULL;
    }
    size_t room = 4;
    if (first_f) {
        room += field_room(first_f->key, own ? own : first_f, twice);
    }
    if (last_f) {
        room += field_room(last_f->key, last_f, twice);
    }
    for (size_t i = 0; i < ev->n; i++) {
        room += field_room(ev->f[i].key, &ev->f[i], twice);
    }
    int rc = sc_buf_reserve(b, room);
    if (rc < 0) {
        return rc;
    }
    char *o = b->p + b->len;
    bool first = true;
    if (twice) {
        *o++ = '"';
    }
    *o++ = '{';
    if (first_f) {
        /* An existing field of the same name takes the first place with its own value. */
        o = put_member(o, &first, first_f->key, own ? own : first_f, style, twice);
    }
    for (size_t i = 0; i < ev->n; i++) {
        const struct logs_field *f = &ev->f[i];
        if (f->type == LOGS_V_DEL || (first_f && key_eq(f->key, first_f->key))) {
            continue;
        }
        o = put_member(o, &first, f->key, f, style, twice);
    }
    if (last_f) {
        o = put_member(o, &first, last_f->key, last_f, style, twice);
    }
    *o++ = '}';
    if (twice) {
        *o++ = '"';
    }
    b->len = (size_t)(o - b->p);
    return 0;
}

int logs_ev_dump(struct sc_buf *b, const struct logs_ev *ev, enum logs_esc style,
                 const struct logs_field *first_f, const struct logs_field *last_f)
{
    return dump(b, ev, style, first_f, last_f, false);
}

int logs_ev_dump_quoted(struct sc_buf *b, const struct logs_ev *ev)
{
    return dump(b, ev, LOGS_ESC_JANSSON, NULL, NULL, true);
}

/* ---- the JSON object parser ---- */

struct jp {
    const unsigned char *p, *end;
    struct logs_ev *ev;
};

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline void skip_ws(struct jp *j)
{
    while (j->p < j->end && is_ws(*j->p)) {
        j->p++;
    }
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int read_u4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    if (end - p < 4) {
        return SC_EINVAL;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) {
            return SC_EINVAL;
        }
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Scans the string whose opening quote is at j->p, as jansson accepts it: no control characters,
 * valid escapes, surrogates paired, no \u0000, valid UTF-8. Sets <*body> to the raw text between
 * the quotes and <*escaped> when it holds a backslash; leaves j->p after the closing quote. */
static int scan_string(struct jp *j, struct sc_str *body, bool *escaped)
{
    const unsigned char *p = j->p + 1, *end = j->end;
    *escaped = false;
    for (;;) {
        /* The common run: printable ASCII other than the quote and the backslash. */
        while (end - p >= 8) {
            uint64_t v = load8(p);
            if ((v & HIGHS) | has_less(v, 0x20) | has_byte(v, '"') | has_byte(v, '\\')) {
                break;
            }
            p += 8;
        }
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
            p++;
        }
        if (p >= end) {
            return SC_EINVAL;
        }
        unsigned char c = *p;
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return SC_EINVAL;
        }
        if (c >= 0x80) {
            size_t l = sc_utf8_seq(p, (size_t)(end - p));
            if (l == 0) {
                return SC_EINVAL;
            }
            p += l;
            continue;
        }
        /* backslash */
        *escaped = true;
        if (end - p < 2) {
            return SC_EINVAL;
        }
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return SC_EINVAL;
        }
        unsigned u;
        if (read_u4(p + 2, end, &u) < 0) {
            return SC_EINVAL;
        }
        p += 6;
        if (u == 0 || (u >= 0xdc00 && u <= 0xdfff)) {
            return SC_EINVAL;
        }
        if (u >= 0xd800 && u <= 0xdbff) {
            unsigned lo;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || read_u4(p + 2, end, &lo) < 0 ||
                lo < 0xdc00 || lo > 0xdfff) {
                return SC_EINVAL;
            }
            p += 6;
        }
    }
    *body = sc_str_n((const char *)j->p + 1, (size_t)(p - j->p - 1));
    j->p = p + 1;
    return 0;
}

/* Decodes a string body that scan_string accepted (escapes included) into <out>, which has room
 * for s.len bytes (decoding never grows it); returns the decoded length. */
static size_t unescape_to(char *out, struct sc_str s)
{
    const unsigned char *p = (const unsigned char *)s.p, *end = p + s.len;
    size_t o = 0;
    while (p < end) {
        if (*p != '\\') {
            const unsigned char *bs = memchr(p, '\\', (size_t)(end - p));
            size_t run = (size_t)((bs ? bs : end) - p);
            memcpy(out + o, p, run);
            o += run;
            p += run;
            continue;
        }
        unsigned char c = p[1];
        p += 2;
        switch (c) {
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'u':
            break;
        default:
            out[o++] = (char)c;
            continue;
        }
        unsigned u = 0, lo = 0xdc00; /* set by read_u4: scan_string checked them */
        read_u4(p, end, &u);
        p += 4;
        if (u >= 0xd800 && u <= 0xdbff) {
            read_u4(p + 2, end, &lo);
            p += 6;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (u < 0x80) {
            out[o++] = (char)u;
        } else if (u < 0x800) {
            out[o++] = (char)(0xc0 | (u >> 6));
            out[o++] = (char)(0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
            out[o++] = (char)(0xe0 | (u >> 12));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (u & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (u >> 18));
            out[o++] = (char)(0x80 | ((u >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((u >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (u & 0x3f));
        }
    }
    return o;
}

/* Decodes a string body that scan_string accepted into the arena (NUL-terminated). */
static struct sc_str unescape(struct logs_ev *ev, struct sc_str s)
{
    char *out = logs_ev_alloc(ev, s.len + 1);
    size_t o = unescape_to(out, s);
    out[o] = 0;
    return sc_str_n(out, o);
}

ssize_t logs_json_unquote(char *out, struct sc_str q)
{
    struct jp j = { (const unsigned char *)q.p, (const unsigned char *)q.p + q.len, NULL };
    struct sc_str body;
    bool escaped;
    if (q.len < 2 || q.p[0] != '"' || scan_string(&j, &body, &escaped) < 0 || j.p != j.end) {
        return -1;
    }
    if (!escaped) {
        memcpy(out, body.p, body.len);
        return (ssize_t)body.len;
    }
    return (ssize_t)unescape_to(out, body);
}

static int parse_string(struct jp *j, struct sc_str *out)
{
    struct sc_str body;
    bool escaped;
    if (scan_string(j, &body, &escaped) < 0) {
        return SC_EINVAL;
    }
    *out = escaped ? unescape(j->ev, body) : body;
    return 0;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Scans a number token as jansson's lexer does; sets <*real> when it has a fraction or an
 * exponent. */
static int scan_number(struct jp *j, struct sc_str *tok, bool *real)
{
    const unsigned char *p = j->p, *end = j->end, *s = p;
    *real = false;
    if (p < end && *p == '-') {
        p++;
    }
    if (p >= end || !is_digit(*p)) {
        return SC_EINVAL;
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            return SC_EINVAL;
        }
    } else {
        while (p < end && is_digit(*p)) {
            p++;
        }
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            return SC_EINVAL;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
        *real = true;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || !is_digit(*p)) {
            return SC_EINVAL;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
        *real = true;
    }
    *tok = sc_str_n((const char *)s, (size_t)(p - s));
    j->p = p;
    return 0;
}

/* Integer and real values in jansson's canonical text: "%lld" for integers (out of range:
 * invalid, as for jansson), jansson's own formatting for reals (infinite: invalid). */
static int number_value(struct jp *j, struct sc_str tok, bool real, enum logs_vt *type,
                        struct sc_str *val)
{
    if (!real) {
        size_t digits = tok.len - (tok.p[0] == '-');
        if (digits < 19 && !(tok.len == 2 && tok.p[0] == '-' && tok.p[1] == '0')) {
            *type = LOGS_V_INT;
            *val = tok;
            return 0;
        }
    }
    struct sc_str z = logs_ev_copy(j->ev, tok);
    char *endp;
    errno = 0;
    if (!real) {
        long long v = strtoll(z.p, &endp, 10);
        if (errno == ERANGE) {
            return SC_EINVAL;
        }
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%lld", v);
        *type = LOGS_V_INT;
        *val = logs_ev_copy(j->ev, sc_str_n(tmp, (size_t)n));
        return 0;
    }
    double d = strtod(z.p, &endp);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) {
        return SC_EINVAL;
    }
    json_t *r = json_real(d);
    char tmp[64];
    size_t n = r ? json_dumpb(r, tmp, sizeof(tmp), JSON_ENCODE_ANY) : 0;
    json_decref(r);
    if (n == 0 || n > sizeof(tmp)) {
        return SC_EINVAL;
    }
    *type = LOGS_V_REAL;
    *val = logs_ev_copy(j->ev, sc_str_n(tmp, n));
    return 0;
}

/* jansson refuses integers outside long long and reals that overflow a double. */
static bool number_in_range(struct jp *j, struct sc_str tok, bool real)
{
    if (!real && tok.len - (tok.p[0] == '-') < 19) {
        return true;
    }
    char stack[64];
    const char *z = stack;
    if (tok.len < sizeof(stack)) {
        memcpy(stack, tok.p, tok.len);
        stack[tok.len] = 0;
    } else {
        z = logs_ev_copy(j->ev, tok).p;
    }
    errno = 0;
    if (!real) {
        (void)strtoll(z, NULL, 10);
        return errno != ERANGE;
    }
    double d = strtod(z, NULL);
    return !((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE);
}

static int expect_lit(struct jp *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) {
        return SC_EINVAL;
    }
    j->p += n;
    return 0;
}

/* Validates one nested value (object or array) at j->p without decoding it, iteratively, with
 * jansson's depth limit counted from the top-level object (<depth> levels are already open). */
static int skip_nested(struct jp *j, int depth)
{
    /* Open containers as a bit stack: 1 object, 0 array. */
    unsigned char stack[JSON_MAX_DEPTH / 8 + 1];
    int top = 0;
    bool need_value = true;
    for (;;) {
        skip_ws(j);
        if (j->p >= j->end) {
            return SC_EINVAL;
        }
        unsigned char c = *j->p;
        if (need_value) {
            /* jansson counts every value: the top-level object is 1, its members 2, ... */
            if (depth + top + 1 > JSON_MAX_DEPTH) {
                return SC_EINVAL;
            }
            if (c == '{' || c == '[') {
                bool obj = c == '{';
                if (obj) {
                    stack[top / 8] |= (unsigned char)(1u << (top % 8));
                } else {
                    stack[top / 8] &= (unsigned char)~(1u << (top % 8));
                }
                top++;
                j->p++;
                skip_ws(j);
                if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
                    j->p++;
                    top--;
                    need_value = false;
                    if (top == 0) {
                        return 0;
                    }
                    continue;
                }
                if (obj) {
                    struct sc_str body;
                    bool esc;
                    if (j->p >= j->end || *j->p != '"' || scan_string(j, &body, &esc) < 0) {
                        return SC_EINVAL;
                    }
                    skip_ws(j);
                    if (j->p >= j->end || *j->p != ':') {
                        return SC_EINVAL;
                    }
                    j->p++;
                }
                continue;
            }
            if (c == '"') {
                struct sc_str body;
                bool esc;
                if (scan_string(j, &body, &esc) < 0) {
                    return SC_EINVAL;
                }
            } else if (c == '-' || is_digit(c)) {
                struct sc_str tok;
                bool real;
                if (scan_number(j, &tok, &real) < 0) {
                    return SC_EINVAL;
                }
                if (!number_in_range(j, tok, real)) {
                    return SC_EINVAL;
                }
            } else if (c == 't') {
                if (expect_lit(j, "true", 4) < 0) {
                    return SC_EINVAL;
                }
            } else if (c == 'f') {
                if (expect_lit(j, "false", 5) < 0) {
                    return SC_EINVAL;
                }
            } else if (c == 'n') {
                if (expect_lit(j, "null", 4) < 0) {
                    return SC_EINVAL;
                }
            } else {
                return SC_EINVAL;
            }
            need_value = false;
            continue;
        }
        /* After a value: a separator or the end of the innermost container. */
        bool obj = (stack[(top - 1) / 8] >> ((top - 1) % 8)) & 1;
        if (c == ',') {
            j->p++;
            if (obj) {
                skip_ws(j);
                struct sc_str body;
                bool esc;
                if (j->p >= j->end || *j->p != '"' || scan_string(j, &body, &esc) < 0) {
                    return SC_EINVAL;
                }
                skip_ws(j);
                if (j->p >= j->end || *j->p != ':') {
                    return SC_EINVAL;
                }
                j->p++;
            }
            need_value = true;
            continue;
        }
        if (c != (obj ? '}' : ']')) {
            return SC_EINVAL;
        }
        j->p++;
        top--;
        if (top == 0) {
            return 0;
        }
    }
}

/* A nested value, validated, in jansson's compact, order-preserving form (so duplicate keys
 * inside it collapse exactly as they did). */
static int nested_value(struct jp *j, struct sc_str *val)
{
    const unsigned char *s = j->p;
    if (skip_nested(j, 1) < 0) {
        return SC_EINVAL;
    }
    json_error_t err;
    json_t *v = json_loadb((const char *)s, (size_t)(j->p - s), JSON_DECODE_ANY, &err);
    if (!v) {
        return SC_EINVAL;
    }
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    char *out = logs_ev_alloc(j->ev, n + 1);
    json_dumpb(v, out, n, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    out[n] = 0;
    json_decref(v);
    *val = sc_str_n(out, n);
    return 0;
}

int logs_ev_parse_json(struct logs_ev *ev, struct sc_str line)
{
    struct jp j = { (const unsigned char *)line.p, (const unsigned char *)line.p + line.len, ev };
    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        return SC_EINVAL;
    }
    j.p++;
    skip_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto tail;
    }
    for (;;) {
        struct sc_str key, val = SC_STR_NULL;
        enum logs_vt type;
        if (j.p >= j.end || *j.p != '"' || parse_string(&j, &key) < 0) {
            return SC_EINVAL;
        }
        skip_ws(&j);
        if (j.p >= j.end || *j.p != ':') {
            return SC_EINVAL;
        }
        j.p++;
        skip_ws(&j);
        if (j.p >= j.end) {
            return SC_EINVAL;
        }
        unsigned char c = *j.p;
        if (c == '"') {
            if (parse_string(&j, &val) < 0) {
                return SC_EINVAL;
            }
            type = LOGS_V_STR;
        } else if (c == '-' || is_digit(c)) {
            struct sc_str tok;
            bool real;
            if (scan_number(&j, &tok, &real) < 0 || number_value(&j, tok, real, &type, &val) < 0) {
                return SC_EINVAL;
            }
        } else if (c == 't') {
            if (expect_lit(&j, "true", 4) < 0) {
                return SC_EINVAL;
            }
            type = LOGS_V_TRUE;
        } else if (c == 'f') {
            if (expect_lit(&j, "false", 5) < 0) {
                return SC_EINVAL;
            }
            type = LOGS_V_FALSE;
        } else if (c == 'n') {
            if (expect_lit(&j, "null", 4) < 0) {
                return SC_EINVAL;
            }
            type = LOGS_V_NULL;
        } else if (c == '{' || c == '[') {
            if (nested_value(&j, &val) < 0) {
                return SC_EINVAL;
            }
            type = LOGS_V_RAW;
        } else {
            return SC_EINVAL;
        }
        logs_ev_set(ev, key, type, val);
        skip_ws(&j);
        if (j.p >= j.end) {
            return SC_EINVAL;
        }
        if (*j.p == ',') {
            j.p++;
            skip_ws(&j);
            continue;
        }
        if (*j.p != '}') {
            return SC_EINVAL;
        }
        j.p++;
        break;
    }
tail:
    skip_ws(&j);
    return j.p == j.end ? 0 : SC_EINVAL;
}
