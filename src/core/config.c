// SPDX-License-Identifier: Apache-2.0
// Typed configuration driven by option tables (the contract is in config.h): the bounded YAML tree
// and the loader that walks it against a table. Value syntax is in value.c, flags and required keys
// in config_flags.c, the dump, --help and the Markdown reference in config_doc.c.
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
#include "core/config_int.h"
#include "core/error.h"
#include "core/str.h"

#define MAX_INPUT ((size_t)4 << 20)
#define MAX_DEPTH 64
/* Bytes of values one load may produce (strings, lists, list elements), aliases expanded: an alias
 * to a 2 MiB string repeated 500,000 times passes the node limit but not this one. */
#define MAX_VALUE_BYTES ((size_t)32 << 20)
#define QUOTE_MAX 64 /* bytes of user text quoted in a message */

#define NULL_TAG "tag:yaml.org,2002:null"
#define STR_TAG "tag:yaml.org,2002:str"

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */

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
char *sc_config_buf_take(struct sc_buf *b)
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

void sc_config_append_quoted(struct sc_buf *b, const char *s)
{
    append_quoted(b, s, strlen(s));
}

/* ------------------------------------------------------------------------------------------ */
/* A string-keyed hash set (anchors, keys seen in one mapping). Keys are borrowed.             */

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
/* Values: parse text into a field, shared by file, flags and defaults                         */

void sc_config_free_str(const struct sc_opt *o, char **p)
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
        sc_config_free_str(o, &v->v[i]);
    }
    sc_free(v->v);
    v->v = NULL;
    v->n = 0;
}

static void free_kvv(const struct sc_opt *o, struct sc_kvv *m)
{
    for (size_t i = 0; i < m->n; i++) {
        sc_free(m->v[i].key);
        sc_config_free_str(o, &m->v[i].value);
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

void sc_config_strv_push(struct sc_strv *v, char *s)
{
    v->v = sc_reallocarray(v->v, v->n + 1, sizeof(*v->v));
    v->v[v->n++] = s;
}

/* Sets <key> to <value> (both taken), replacing the value of an existing key. */
void sc_config_kvv_set(const struct sc_opt *o, struct sc_kvv *m, char *key, char *value)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->v[i].key, key) == 0) {
            sc_free(key);
            sc_config_free_str(o, &m->v[i].value);
            m->v[i].value = value;
            return;
        }
    }
    m->v = sc_reallocarray(m->v, m->n + 1, sizeof(*m->v));
    m->v[m->n].key = key;
    m->v[m->n].value = value;
    m->n++;
}

void sc_config_append_enums(struct sc_buf *m, const char *const *enums, const char *sep)
{
    for (size_t i = 0; enums && enums[i]; i++) {
        sc_buf_appendf(m, "%s%s", i ? sep : "", enums[i]);
    }
}

/* Appends "invalid <what> <quoted s><hint>" to <m>. Returns SC_ECONFIG. */
static int invalid(struct sc_buf *m, const char *what, const char *s, const char *hint)
{
    sc_buf_appendf(m, "invalid %s ", what);
    sc_config_append_quoted(m, s);
    sc_buf_append_cstr(m, hint);
    return SC_ECONFIG;
}

/* Parses <s> into the field of a BOOL, INT, DURATION, SIZE, DOUBLE or ENUM option, bounds
 * included. Returns 0, or SC_ECONFIG with a message appended to <m>. */
int sc_config_set_scalar(const struct sc_opt *o, void *field, const char *s, struct sc_buf *m)
{
    char v1[96], v2[96], v3[96];
    switch (o->type) {
    case SC_OPT_BOOL: {
        bool b;
        if (sc_value_parse_bool(s, &b) < 0) {
            return invalid(m, "boolean", s, " (expected true or false)");
        }
        *(bool *)field = b;
        return 0;
    }
    case SC_OPT_INT: {
        int64_t v;
        if (sc_value_parse_int(s, &v) < 0) {
            return invalid(m, "integer", s, "");
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
        if ((dur ? sc_value_parse_duration(s, &v) : sc_value_parse_size(s, &v)) < 0) {
            return invalid(m, dur ? "duration" : "size", s,
                           dur ? " (expected e.g. 250ms, 30s, 5m, 1h30m)"
                               : " (expected e.g. 512, 64KiB, 1MiB, 10MB)");
        }
        /* Parsed values never exceed INT64_MAX, so comparing as signed is exact. */
        if (bounded(o) && ((int64_t)v < o->min || (int64_t)v > o->max)) {
            uint64_t lo = o->min < 0 ? 0 : (uint64_t)o->min, hi = o->max < 0 ? 0 : (uint64_t)o->max;
            if (dur) {
                sc_value_format_duration(v, v1);
                sc_value_format_duration(lo, v2);
                sc_value_format_duration(hi, v3);
            } else {
                sc_value_render_size(v, v1);
                sc_value_render_size(lo, v2);
                sc_value_render_size(hi, v3);
            }
            sc_buf_appendf(m, "%s is out of range [%s, %s]", v1, v2, v3);
            return SC_ECONFIG;
        }
        *(uint64_t *)field = v;
        return 0;
    }
    case SC_OPT_DOUBLE: {
        double d;
        if (sc_value_parse_double(s, &d) < 0) {
            return invalid(m, "number", s, "");
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
        invalid(m, "value", s, " (expected one of: ");
        sc_config_append_enums(m, o->enums, ", ");
        sc_buf_append_cstr(m, ")");
        return SC_ECONFIG;
    default:
        sc_buf_append_cstr(m, "not a scalar option");
        return SC_ECONFIG;
    }
}

int sc_config_check_count(const struct sc_opt *o, size_t n, struct sc_buf *m)
{
    if (bounded(o) && ((int64_t)n < o->min || (int64_t)n > o->max)) {
        sc_buf_appendf(m, "expected between %" PRId64 " and %" PRId64 " elements, got %zu", o->min,
                       o->max, n);
        return SC_ECONFIG;
    }
    return 0;
}

int sc_config_run_check(const struct sc_opt *o, void *field, struct sc_buf *m)
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
                if (sc_config_set_scalar(o, field, def, &m) < 0) {
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
                    sc_config_strv_push(v, sc_strndup(part.p, part.len));
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
                sc_config_kvv_set(o, m, sc_strndup(key.p, key.len), sc_strndup(part.p, part.len));
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
            sc_config_free_str(o, field);
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

void sc_config_strv_copy(struct sc_strv *dst, const struct sc_strv *src)
{
    dst->n = src->n;
    dst->v = src->n ? sc_calloc(src->n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = sc_strdup(src->v[i]);
    }
}

void sc_config_strv_free(struct sc_strv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        sc_free(v->v[i]);
    }
    sc_free(v->v);
    v->v = NULL;
    v->n = 0;
}

void sc_config_free(const struct sc_opt *table, void *obj)
{
    if (table && obj) {
        free_rec(table, obj, 0);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The YAML tree                                                                               */

void sc_config_tree_free(struct tree *t)
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
    sc_free(t->docs);
    memset(t, 0, sizeof(*t));
}

/* Records the first error as "name:line:col: <msg>" (0-based line and col in) and empties <msg>. */
static int fail_msg(struct ld *ld, size_t line, size_t col, struct sc_buf *msg)
{
    if (!ld->err) {
        struct sc_buf b;
        sc_buf_init(&b, MSG_MAX + strlen(ld->name) + 64);
        sc_buf_appendf(&b, "%s:%zu:%zu: ", ld->name, line + 1, col + 1);
        /* One line whatever the message quotes: control bytes from the input are escaped. */
        for (size_t i = 0; i < msg->len; i++) {
            unsigned char c = (unsigned char)msg->p[i];
            if (c < 0x20 || c == 0x7f) {
                sc_buf_appendf(&b, "\\x%02x", c);
            } else {
                sc_buf_append(&b, (const char *)&c, 1);
            }
        }
        if (!msg->len) {
            sc_buf_append_cstr(&b, "invalid value");
        }
        ld->err = sc_config_buf_take(&b);
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
    bool multi; /* a stream of documents (t->docs) rather than one (t->root) */
};

struct node *sc_config_tree_node(struct tree *t, int kind, size_t line, size_t col)
{
    if (t->count >= MAX_NODES) {
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
    n->line = (uint32_t)line;
    n->col = (uint32_t)col;
    return n;
}

static struct node *new_node(struct builder *b, int kind, const yaml_mark_t *mark)
{
    struct node *n = sc_config_tree_node(b->t, kind, mark->line, mark->column);
    if (!n) {
        struct node at = { .line = (uint32_t)mark->line, .col = (uint32_t)mark->column };
        fail(b->ld, &at, "too many YAML nodes (limit %d)", MAX_NODES);
    }
    return n;
}

static void attach(struct builder *b, struct node *n)
{
    if (b->depth == 0) {
        struct tree *t = b->t;
        t->root = t->root ? t->root : n;
        if (b->multi) {
            t->docs = sc_reallocarray(t->docs, t->ndocs + 1, sizeof(*t->docs));
            t->docs[t->ndocs++] = n;
        }
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
        sc_config_append_quoted(&m, name);
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
        if (++b->docs > 1 && !b->multi) {
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

static int build(struct ld *ld, const char *text, size_t len, struct tree *t, bool multi)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        return fail(ld, NULL, "out of memory while parsing YAML");
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    struct builder b = { .ld = ld, .t = t, .multi = multi };
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
    char *out = n->raw ? sc_strdup(n->u.sc.s) : sc_value_env_expand(n->u.sc.s, &e, &pos);
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
    const char *hint = sc_value_did_you_mean(k->u.sc.s, ns.v, ns.n);
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
    if (sc_config_check_count(o, count, &m) < 0) {
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
    if (sc_config_check_count(o, count, &m) < 0) {
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
            sc_config_free_str(o, field);
            *(char **)field = s;
            break;
        }
        struct sc_buf m;
        sc_buf_init(&m, MSG_MAX);
        rc = sc_config_set_scalar(o, field, s, &m);
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
        if (sc_config_run_check(o, field, &m) < 0) {
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
        rc = build(&ld, text && len ? text : "", text ? len : 0, &t, false);
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
    sc_config_tree_free(&t);
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

int sc_config_tree_parse(const char *name, const char *text, size_t len, struct tree *t, char **err)
{
    struct ld ld = { .name = name ? name : "config" };
    int rc;
    if (len > MAX_INPUT) {
        rc = fail(&ld, NULL, "input too large (over %zu MiB)", MAX_INPUT >> 20);
    } else {
        rc = build(&ld, text && len ? text : "", text ? len : 0, t, true);
    }
    if (rc < 0) {
        *err = ld.err ? ld.err : sc_asprintf("%s:1:1: invalid YAML", ld.name);
        return SC_ECONFIG;
    }
    return 0;
}

int sc_config_tree_load(const struct sc_opt *table, void *obj, const char *name,
                        const struct node *root, char **err)
{
    struct ld ld = { .name = name ? name : "config" };
    const struct node *n = deref(root);
    int rc = 0;
    if (n->kind == N_MAP) {
        rc = visit(&ld, root);
        if (rc == 0) {
            rc = load_map(&ld, table, obj, root, 1);
        }
    } else if (!(n->kind == N_SCALAR && n->null)) {
        rc = wrong_type(&ld, root, "a mapping at the top level", n);
    }
    if (rc < 0) {
        *err = ld.err ? ld.err : sc_asprintf("%s:1:1: invalid configuration", ld.name);
        return SC_ECONFIG;
    }
    return 0;
}
