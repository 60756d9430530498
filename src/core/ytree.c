// SPDX-License-Identifier: Apache-2.0
// The public face of the loader's YAML tree (see ytree.h). The nodes are config.c's own, so a tree
// built here loads through exactly the code a file does; this file only reads and adds nodes.
#include "core/ytree.h"

#include <errno.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config_int.h"
#include "core/error.h"

struct sc_ytree {
    struct tree t;
    char *name;
};

static const struct node *cn(const struct sc_ynode *y)
{
    return (const struct node *)y;
}

static const struct node *deref(const struct node *n)
{
    return n && n->kind == N_ALIAS ? n->u.target : n;
}

int sc_ytree_parse(const char *name, const char *text, size_t len, struct sc_ytree **out,
                   char **err)
{
    struct sc_ytree *t = sc_ytree_new(name);
    if (sc_config_tree_parse(t->name, text, len, &t->t, err) < 0) {
        sc_ytree_free(t);
        return SC_ECONFIG;
    }
    *out = t;
    return 0;
}

struct sc_ytree *sc_ytree_new(const char *name)
{
    struct sc_ytree *t = sc_calloc(1, sizeof(*t));
    t->name = sc_strdup(name ? name : "config");
    return t;
}

void sc_ytree_free(struct sc_ytree *t)
{
    if (t) {
        sc_config_tree_free(&t->t);
        sc_free(t->name);
        sc_free(t);
    }
}

const char *sc_ytree_name(const struct sc_ytree *t)
{
    return t->name;
}

size_t sc_ytree_ndocs(const struct sc_ytree *t)
{
    return t->t.ndocs;
}

const struct sc_ynode *sc_ytree_doc(const struct sc_ytree *t, size_t i)
{
    return i < t->t.ndocs ? (const struct sc_ynode *)t->t.docs[i] : NULL;
}

enum sc_ykind sc_ynode_kind(const struct sc_ynode *y)
{
    const struct node *n = deref(cn(y));
    if (!n) {
        return SC_Y_NULL;
    }
    switch (n->kind) {
    case N_MAP:
        return SC_Y_MAP;
    case N_SEQ:
        return SC_Y_SEQ;
    default:
        return n->null ? SC_Y_NULL : SC_Y_STR;
    }
}

const char *sc_ynode_str(const struct sc_ynode *y)
{
    const struct node *n = deref(cn(y));
    return n && n->kind == N_SCALAR ? n->u.sc.s : NULL;
}

bool sc_ynode_quoted(const struct sc_ynode *y)
{
    const struct node *n = deref(cn(y));
    return n && n->kind == N_SCALAR && n->style != ST_PLAIN;
}

unsigned sc_ynode_line(const struct sc_ynode *y)
{
    return y ? cn(y)->line + 1 : 1;
}

unsigned sc_ynode_col(const struct sc_ynode *y)
{
    return y ? cn(y)->col + 1 : 1;
}

size_t sc_ynode_count(const struct sc_ynode *y)
{
    const struct node *n = deref(cn(y));
    if (!n || (n->kind != N_SEQ && n->kind != N_MAP)) {
        return 0;
    }
    return n->kind == N_MAP ? n->u.co.n / 2 : n->u.co.n;
}

const struct sc_ynode *sc_ynode_at(const struct sc_ynode *y, size_t i)
{
    const struct node *n = deref(cn(y));
    if (!n || n->kind != N_SEQ || i >= n->u.co.n) {
        return NULL;
    }
    return (const struct sc_ynode *)n->u.co.v[i];
}

const struct sc_ynode *sc_ynode_key(const struct sc_ynode *y, size_t i)
{
    const struct node *n = deref(cn(y));
    if (!n || n->kind != N_MAP || 2 * i + 1 >= n->u.co.n) {
        return NULL;
    }
    return (const struct sc_ynode *)n->u.co.v[2 * i];
}

const struct sc_ynode *sc_ynode_val(const struct sc_ynode *y, size_t i)
{
    const struct node *n = deref(cn(y));
    if (!n || n->kind != N_MAP || 2 * i + 1 >= n->u.co.n) {
        return NULL;
    }
    return (const struct sc_ynode *)n->u.co.v[2 * i + 1];
}

const struct sc_ynode *sc_ynode_get(const struct sc_ynode *y, const char *key)
{
    size_t n = sc_ynode_count(y);
    if (sc_ynode_kind(y) != SC_Y_MAP) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *k = sc_ynode_str(sc_ynode_key(y, i));
        if (k && strcmp(k, key) == 0) {
            return sc_ynode_val(y, i);
        }
    }
    return NULL;
}

struct sc_ynode *sc_ynode_get_mut(struct sc_ynode *map, const char *key)
{
    return (struct sc_ynode *)sc_ynode_get(map, key);
}

static struct node *mk(struct sc_ytree *t, int kind, const struct sc_ynode *at)
{
    return sc_config_tree_node(&t->t, kind, at ? cn(at)->line : 0, at ? cn(at)->col : 0);
}

struct sc_ynode *sc_ytree_map(struct sc_ytree *t, const struct sc_ynode *at)
{
    return (struct sc_ynode *)mk(t, N_MAP, at);
}

struct sc_ynode *sc_ytree_seq(struct sc_ytree *t, const struct sc_ynode *at)
{
    return (struct sc_ynode *)mk(t, N_SEQ, at);
}

struct sc_ynode *sc_ytree_str(struct sc_ytree *t, const struct sc_ynode *at, const char *s)
{
    struct node *n = mk(t, N_SCALAR, at);
    if (n) {
        n->u.sc.s = sc_strdup(s);
        n->u.sc.len = strlen(s);
        n->style = ST_OTHER;
        n->one_line = true;
        n->raw = true;
    }
    return (struct sc_ynode *)n;
}

static void co_push(struct node *p, struct node *n)
{
    if (p->u.co.n == p->u.co.cap) {
        p->u.co.cap = p->u.co.cap ? p->u.co.cap * 2 : 4;
        p->u.co.v = sc_reallocarray(p->u.co.v, p->u.co.cap, sizeof(*p->u.co.v));
    }
    p->u.co.v[p->u.co.n++] = n;
}

/* Copies <ref> with its position; the depth of a parsed or built tree is bounded by the loader's
 * MAX_DEPTH plus what a translator nests, and aliases never cycle, so recursion is bounded. */
static struct node *copy_rec(struct sc_ytree *t, const struct node *ref, int depth)
{
    const struct node *src = deref(ref);
    if (depth > 128) {
        return NULL;
    }
    struct node *n = sc_config_tree_node(&t->t, src->kind, ref->line, ref->col);
    if (!n) {
        return NULL;
    }
    n->style = src->style;
    n->null = src->null;
    n->one_line = src->one_line;
    n->raw = src->raw;
    if (src->kind == N_SCALAR) {
        n->u.sc.s = sc_strndup(src->u.sc.s, src->u.sc.len);
        n->u.sc.len = src->u.sc.len;
        return n;
    }
    for (size_t i = 0; i < src->u.co.n; i++) {
        struct node *c = copy_rec(t, src->u.co.v[i], depth + 1);
        if (!c) {
            return NULL;
        }
        co_push(n, c);
    }
    return n;
}

struct sc_ynode *sc_ytree_copy(struct sc_ytree *t, const struct sc_ynode *src)
{
    return src ? (struct sc_ynode *)copy_rec(t, cn(src), 0) : NULL;
}

int sc_ynode_push(struct sc_ytree *t, struct sc_ynode *seq, struct sc_ynode *v)
{
    (void)t;
    struct node *p = (struct node *)seq;
    if (!p || !v || p->kind != N_SEQ) {
        return -ENOMEM;
    }
    co_push(p, (struct node *)v);
    return 0;
}

int sc_ynode_put(struct sc_ytree *t, struct sc_ynode *map, const char *key, struct sc_ynode *v)
{
    struct node *p = (struct node *)map;
    if (!p || !v || p->kind != N_MAP) {
        return -ENOMEM;
    }
    struct sc_ynode *k = sc_ytree_str(t, v, key);
    if (!k) {
        return -ENOMEM;
    }
    co_push(p, (struct node *)k);
    co_push(p, (struct node *)v);
    return 0;
}

void sc_ynode_replace(struct sc_ynode *map, size_t i, struct sc_ynode *v)
{
    struct node *p = (struct node *)map;
    if (p && v && p->kind == N_MAP && 2 * i + 1 < p->u.co.n) {
        p->u.co.v[2 * i + 1] = (struct node *)v;
    }
}

int sc_ytree_load(const struct sc_opt *table, void *obj, const char *name,
                  const struct sc_ynode *root, char **err)
{
    return sc_config_tree_load(table, obj, name, cn(root), err);
}

static json_t *json_rec(const struct node *ref, int depth)
{
    const struct node *n = deref(ref);
    if (depth > 128) {
        return json_null();
    }
    if (n->kind == N_SCALAR) {
        return n->null ? json_null() : json_stringn(n->u.sc.s, n->u.sc.len);
    }
    if (n->kind == N_SEQ) {
        json_t *a = json_array();
        for (size_t i = 0; i < n->u.co.n; i++) {
            json_array_append_new(a, json_rec(n->u.co.v[i], depth + 1));
        }
        return a;
    }
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < n->u.co.n; i += 2) {
        const struct node *k = deref(n->u.co.v[i]);
        if (k->kind == N_SCALAR) {
            json_object_set_new(o, k->u.sc.s, json_rec(n->u.co.v[i + 1], depth + 1));
        }
    }
    return o;
}

json_t *sc_ynode_json(const struct sc_ynode *n)
{
    return n ? json_rec(cn(n), 0) : json_null();
}
