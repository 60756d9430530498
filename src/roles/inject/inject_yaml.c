// SPDX-License-Identifier: Apache-2.0
// Kubernetes manifests between YAML and JSON. Reading converts each YAML document to the JSON the
// API server would receive from kubectl (whose converter resolves YAML 1.1 scalars: `yes`/`on`
// are booleans, `0644` is octal, `~` is null; quoted and block scalars are strings; merge keys
// `<<` apply; aliases expand), keeping key order. Writing emits block-style YAML that reads back
// to the same JSON: a string that would resolve to another type when plain is quoted, and a
// multi-line string uses a literal block. Comments and anchors do not survive (kubectl drops them
// too). Invariant: bounded input (4 MiB), depth (64) and nodes after alias expansion (1,000,000),
// so a hostile document (alias bombs) costs at most that.
#include "roles/inject/inject.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "core/alloc.h"
#include "core/error.h"

#define YAML_MAX_INPUT (4u << 20)
#define YAML_MAX_DEPTH 64
#define YAML_MAX_NODES 1000000u
#define YAML_MAX_ANCHORS 1024

struct frame {
    json_t *node;   /* object or array being filled */
    char *key;      /* object: the pending key, NULL when a key is expected */
    json_t *merged; /* object: keys that came from a merge key (explicit keys may replace them) */
    char *anchor;   /* the collection's anchor, recorded when it is complete */
    bool merge;     /* the pending key is a plain << (a merge key) */
    size_t nodes;   /* nodes under this collection, aliases expanded */
};

struct anchor {
    char *name;
    json_t *node;
    size_t nodes;
};

struct reader {
    const char *name;
    char **err;
    struct frame stack[YAML_MAX_DEPTH];
    size_t depth;
    struct anchor anchors[YAML_MAX_ANCHORS];
    size_t nanchors;
    size_t total;
    json_t *docs;
    json_t *root;
};

static int fail(struct reader *r, const yaml_mark_t *m, const char *what)
{
    if (!*r->err) {
        *r->err = sc_asprintf("%s:%zu:%zu: %s", r->name, m->line + 1, m->column + 1, what);
    }
    return SC_ECONFIG;
}

static bool eq_any(const char *s, const char *const *set)
{
    for (size_t i = 0; set[i]; i++) {
        if (strcmp(s, set[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Parses an integer in YAML 1.1 form (sign, then 0x hex, 0b binary, 0o or leading-0 octal, or
 * decimal; '_' separators ignored). Returns false when <s> is not one. */
static bool parse_int(const char *s, long long *out)
{
    char digits[80];
    size_t n = 0;
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    } else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
        base = 2;
        p += 2;
    } else if (p[0] == '0' && p[1] == 'o') {
        base = 8;
        p += 2;
    } else if (p[0] == '0' && p[1] != '\0') {
        base = 8;
        p += 1;
    }
    for (; *p; p++) {
        if (*p == '_') {
            continue;
        }
        bool ok = base == 16   ? ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                                (*p >= 'A' && *p <= 'F'))
                  : base == 10 ? (*p >= '0' && *p <= '9')
                  : base == 8  ? (*p >= '0' && *p <= '7')
                               : (*p == '0' || *p == '1');
        if (!ok || n + 1 >= sizeof(digits)) {
            return false;
        }
        digits[n++] = *p;
    }
    if (n == 0) {
        return false;
    }
    digits[n] = '\0';
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(digits, &end, base);
    if (errno || *end || v > (unsigned long long)LLONG_MAX + (neg ? 1u : 0u)) {
        return false;
    }
    *out = neg ? (long long)(0 - v) : (long long)v;
    return true;
}

/* Parses a YAML 1.1 float ("1.5", "-2e3", "1_000.5"). Infinity and NaN have no JSON form and are
 * reported through <*special>. */
static bool parse_float(const char *s, double *out, bool *special)
{
    static const char *const specials[] = { ".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                            "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                            ".NaN",  ".NAN",  NULL };
    if (eq_any(s, specials)) {
        *special = true;
        return true;
    }
    char buf[128];
    size_t n = 0;
    bool digit = false, dot = false, exp = false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (c == '_') {
            continue;
        }
        if (c >= '0' && c <= '9') {
            digit = true;
        } else if (c == '.' && !dot && !exp) {
            dot = true;
        } else if ((c == 'e' || c == 'E') && digit && !exp) {
            exp = true;
        } else if ((c == '-' || c == '+') && (p == s || ((p[-1] == 'e' || p[-1] == 'E') && exp))) {
        } else {
            return false;
        }
        if (n + 1 >= sizeof(buf)) {
            return false;
        }
        buf[n++] = c;
    }
    if (!digit || (!dot && !exp)) {
        return false;
    }
    buf[n] = '\0';
    char *end = NULL;
    double v = strtod(buf, &end);
    if (*end || !isfinite(v)) {
        return false;
    }
    *out = v;
    return true;
}

static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };
static const char *const trues[] = { "y",    "Y",    "yes", "Yes", "YES", "true",
                                     "True", "TRUE", "on",  "On",  "ON",  NULL };
static const char *const falses[] = { "n",     "N",     "no",  "No",  "NO",  "false",
                                      "False", "FALSE", "off", "Off", "OFF", NULL };

/* Resolves a plain scalar to its JSON value. NULL when it is a float JSON cannot carry. */
static json_t *resolve_plain(const char *s)
{
    if (eq_any(s, nulls)) {
        return json_null();
    }
    if (eq_any(s, trues)) {
        return json_true();
    }
    if (eq_any(s, falses)) {
        return json_false();
    }
    long long i;
    if (parse_int(s, &i)) {
        return json_integer(i);
    }
    double d;
    bool special = false;
    if (parse_float(s, &d, &special)) {
        return special ? NULL : json_real(d);
    }
    return json_string(s);
}

bool inject_yaml_plain_is_string(const char *s)
{
    json_t *j = resolve_plain(s);
    bool str = j && json_is_string(j);
    json_decref(j);
    return str;
}

/* Converts a scalar event with its tag and style. */
static json_t *scalar_value(struct reader *r, const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (strlen(v) != ev->data.scalar.length) {
        fail(r, &ev->start_mark, "NUL byte in a scalar");
        return NULL;
    }
    if (tag && strcmp(tag, "!") != 0) {
        if (strcmp(tag, YAML_STR_TAG) == 0) {
            return json_string(v);
        }
        json_t *j = resolve_plain(v);
        bool ok = j && ((strcmp(tag, YAML_INT_TAG) == 0 && json_is_integer(j)) ||
                        (strcmp(tag, YAML_FLOAT_TAG) == 0 && json_is_number(j)) ||
                        (strcmp(tag, YAML_BOOL_TAG) == 0 && json_is_boolean(j)) ||
                        (strcmp(tag, YAML_NULL_TAG) == 0 && json_is_null(j)));
        if (!ok) {
            json_decref(j);
            fail(r, &ev->start_mark, "scalar does not match its tag (or the tag is unsupported)");
            return NULL;
        }
        return j;
    }
    json_t *j = json_string(v);
    if (!j) {
        fail(r, &ev->start_mark, "scalar is not valid UTF-8");
        return NULL;
    }
    if (ev->data.scalar.plain_implicit && !tag) {
        json_decref(j);
        j = resolve_plain(v);
        if (!j) {
            fail(r, &ev->start_mark, "infinity and NaN have no JSON form");
        }
    }
    return j;
}

static int remember_anchor(struct reader *r, const yaml_char_t *anchor, json_t *node, size_t nodes,
                           const yaml_mark_t *m)
{
    if (!anchor) {
        return 0;
    }
    for (size_t i = 0; i < r->nanchors; i++) {
        if (strcmp(r->anchors[i].name, (const char *)anchor) == 0) {
            json_decref(r->anchors[i].node);
            r->anchors[i].node = json_incref(node);
            r->anchors[i].nodes = nodes;
            return 0;
        }
    }
    if (r->nanchors == YAML_MAX_ANCHORS) {
        return fail(r, m, "too many anchors");
    }
    r->anchors[r->nanchors++] =
        (struct anchor){ sc_strdup((const char *)anchor), json_incref(node), nodes };
    return 0;
}

/* Applies a merge key's value (a mapping, or a sequence of mappings) to the object <f>: keys it
 * does not have yet are copied and marked as merged. */
static int merge_into(struct reader *r, struct frame *f, json_t *v, const yaml_mark_t *m)
{
    json_t *one[1] = { v };
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        items = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *src = items ? items[i] : json_array_get(v, i);
        if (!json_is_object(src)) {
            return fail(r, m, "a merge key (<<) takes a mapping or a sequence of mappings");
        }
        const char *k;
        json_t *val;
        json_object_foreach(src, k, val)
        {
            if (!json_object_get(f->node, k)) {
                json_object_set(f->node, k, val);
                json_object_set_new(f->merged, k, json_true());
            }
        }
    }
    return 0;
}

/* Adds a finished node <v> (taken) with <nodes> nodes beneath it to the current collection or as
 * the document root. */
static int add_node(struct reader *r, json_t *v, size_t nodes, const yaml_event_t *ev)
{
    r->total += nodes;
    if (r->total > YAML_MAX_NODES) {
        json_decref(v);
        return fail(r, &ev->start_mark, "document too large (alias expansion included)");
    }
    if (r->depth == 0) {
        r->root = v;
        return 0;
    }
    struct frame *f = &r->stack[r->depth - 1];
    f->nodes += nodes;
    if (json_is_array(f->node)) {
        json_array_append_new(f->node, v);
        return 0;
    }
    if (!f->key) {
        if (!json_is_string(v)) {
            char key[128];
            size_t n = 0;
            if (!json_is_object(v) && !json_is_array(v)) {
                n = json_dumpb(v, key, sizeof(key) - 1, JSON_ENCODE_ANY);
            }
            json_decref(v);
            if (n == 0 || n >= sizeof(key)) {
                return fail(r, &ev->start_mark, "mapping keys must be scalars");
            }
            f->key = sc_strndup(key, n);
            return 0;
        }
        f->key = sc_strdup(json_string_value(v));
        json_decref(v);
        return 0;
    }
    int rc = 0;
    if (f->merge) {
        rc = merge_into(r, f, v, &ev->start_mark);
    } else if (json_object_get(f->node, f->key) && !json_object_get(f->merged, f->key)) {
        char *what = sc_asprintf("duplicate key \"%s\"", f->key);
        rc = fail(r, &ev->start_mark, what);
        sc_free(what);
    } else {
        json_object_del(f->merged, f->key);
        json_object_set(f->node, f->key, v);
    }
    json_decref(v);
    sc_free(f->key);
    f->key = NULL;
    f->merge = false;
    return rc;
}

static int on_event(struct reader *r, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        struct frame *top = r->depth ? &r->stack[r->depth - 1] : NULL;
        if (top && json_is_object(top->node) && !top->key) {
            /* Keys are taken as written: Kubernetes keys are strings, and a label key "y" or
             * "on" stays what its author typed. */
            const char *k = (const char *)ev->data.scalar.value;
            json_t *chk = json_string(k);
            if (!chk || strlen(k) != ev->data.scalar.length) {
                json_decref(chk);
                return fail(r, &ev->start_mark, "mapping key is not valid UTF-8 text");
            }
            json_decref(chk);
            if (ev->data.scalar.anchor) {
                return fail(r, &ev->start_mark, "anchors on mapping keys are not supported");
            }
            top->key = sc_strdup(k);
            top->merge = ev->data.scalar.plain_implicit && strcmp(k, "<<") == 0;
            r->total++;
            return 0;
        }
        json_t *v = scalar_value(r, ev);
        if (!v) {
            return SC_ECONFIG;
        }
        if (remember_anchor(r, ev->data.scalar.anchor, v, 1, &ev->start_mark) < 0) {
            json_decref(v);
            return SC_ECONFIG;
        }
        return add_node(r, v, 1, ev);
    }
    case YAML_ALIAS_EVENT:
        for (size_t i = 0; i < r->nanchors; i++) {
            if (strcmp(r->anchors[i].name, (const char *)ev->data.alias.anchor) == 0) {
                /* Shared, not copied: the converter only reads it, and merge_into copies keys. */
                return add_node(r, json_incref(r->anchors[i].node), r->anchors[i].nodes, ev);
            }
        }
        return fail(r, &ev->start_mark, "alias to an unknown anchor");
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (r->depth == YAML_MAX_DEPTH) {
            return fail(r, &ev->start_mark, "nesting deeper than 64 levels");
        }
        struct frame *f = &r->stack[r->depth++];
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        *f = (struct frame){ .node = map ? json_object() : json_array(),
                             .merged = map ? json_object() : NULL };
        const yaml_char_t *anchor =
            map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        f->anchor = anchor ? sc_strdup((const char *)anchor) : NULL;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct frame f = r->stack[--r->depth];
        sc_free(f.key);
        int rc =
            remember_anchor(r, (const yaml_char_t *)f.anchor, f.node, f.nodes + 1, &ev->start_mark);
        sc_free(f.anchor);
        json_decref(f.merged);
        if (rc < 0) {
            json_decref(f.node);
            return rc;
        }
        return add_node(r, f.node, f.nodes + 1, ev);
    }
    case YAML_DOCUMENT_END_EVENT:
        if (r->root && !json_is_null(r->root)) {
            json_array_append_new(r->docs, r->root);
        } else {
            json_decref(r->root);
        }
        r->root = NULL;
        return 0;
    default:
        return 0;
    }
}

static void reader_cleanup(struct reader *r)
{
    while (r->depth > 0) {
        struct frame *f = &r->stack[--r->depth];
        json_decref(f->node);
        json_decref(f->merged);
        sc_free(f->key);
        sc_free(f->anchor);
    }
    for (size_t i = 0; i < r->nanchors; i++) {
        sc_free(r->anchors[i].name);
        json_decref(r->anchors[i].node);
    }
    json_decref(r->root);
}

int inject_yaml_parse(const char *name, const char *text, size_t len, json_t **docs, char **err)
{
    *docs = NULL;
    if (len > YAML_MAX_INPUT) {
        *err = sc_asprintf("%s: larger than 4 MiB", name);
        return SC_ETOOBIG;
    }
    struct reader *r = sc_calloc(1, sizeof(*r));
    r->name = name;
    r->err = err;
    r->docs = json_array();
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            yaml_mark_t m = p.problem_mark;
            rc = fail(r, &m, p.problem ? p.problem : "invalid YAML");
            break;
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        rc = on_event(r, &ev);
        yaml_event_delete(&ev);
        if (rc < 0 || end) {
            break;
        }
    }
    yaml_parser_delete(&p);
    if (rc == 0) {
        *docs = r->docs;
        r->docs = NULL;
    }
    json_decref(r->docs);
    reader_cleanup(r);
    sc_free(r);
    return rc;
}

/* ---- writing ---- */

static int on_write(void *data, unsigned char *buffer, size_t size)
{
    return sc_buf_append(data, buffer, size) == 0;
}

static int emit(yaml_emitter_t *e, yaml_event_t *ev)
{
    return yaml_emitter_emit(e, ev) ? 0 : SC_ETOOBIG;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t n, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, 1, 1, style);
    return emit(e, &ev);
}

/* Writes the shortest decimal form of <d> that reads back exactly, always with a '.' or an
 * exponent so that it stays a float. */
static void format_real(double d, char *out, size_t outlen)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, outlen, "%.*g", prec, d);
        if (strtod(out, NULL) == d) {
            break;
        }
    }
    if (!strpbrk(out, ".eEn")) {
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, ".0");
    }
}

static int emit_node(yaml_emitter_t *e, json_t *j)
{
    yaml_event_t ev;
    char num[64];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                            json_object_size(j) ? YAML_BLOCK_MAPPING_STYLE
                                                                : YAML_FLOW_MAPPING_STYLE);
        int rc = emit(e, &ev);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            json_t *key = json_string(k);
            rc = rc ? rc : emit_node(e, key);
            json_decref(key);
            rc = rc ? rc : emit_node(e, v);
        }
        yaml_mapping_end_event_initialize(&ev);
        return rc ? rc : emit(e, &ev);
    }
    case JSON_ARRAY: {
        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                             json_array_size(j) ? YAML_BLOCK_SEQUENCE_STYLE
                                                                : YAML_FLOW_SEQUENCE_STYLE);
        int rc = emit(e, &ev);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            rc = rc ? rc : emit_node(e, v);
        }
        yaml_sequence_end_event_initialize(&ev);
        return rc ? rc : emit(e, &ev);
    }
    case JSON_STRING: {
        const char *s = json_string_value(j);
        size_t n = json_string_length(j);
        yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
        if (memchr(s, '\n', n)) {
            style = YAML_LITERAL_SCALAR_STYLE;
        } else if (strlen(s) != n || !inject_yaml_plain_is_string(s)) {
            style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        }
        return emit_scalar(e, s, n, style);
    }
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return emit_scalar(e, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        format_real(json_real_value(j), num, sizeof(num));
        return emit_scalar(e, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE:
        return emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    default:
        return emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    }
}

int inject_yaml_emit(json_t *docs, struct sc_buf *out)
{
    yaml_emitter_t e;
    yaml_event_t ev;
    yaml_emitter_initialize(&e);
    yaml_emitter_set_output(&e, on_write, out);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    int rc = emit(&e, &ev);
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, i == 0);
        rc = rc ? rc : emit(&e, &ev);
        rc = rc ? rc : emit_node(&e, doc);
        yaml_document_end_event_initialize(&ev, 1);
        rc = rc ? rc : emit(&e, &ev);
    }
    yaml_stream_end_event_initialize(&ev);
    rc = rc ? rc : emit(&e, &ev);
    yaml_emitter_delete(&e);
    return rc;
}
