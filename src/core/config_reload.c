// SPDX-License-Identifier: Apache-2.0
// What a reload may change, read from the option tables: an option flagged SC_OPT_RESTART keeps
// its value or the reload is refused with the key that changed, for every role alike, so no role
// compares fields by hand. Tables are code: the walk is bounded by MAX_TABLE_DEPTH like every
// other walk over them.
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config_int.h"
#include "core/error.h"

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_obj(const struct sc_opt *table, const void *a, const void *b, int tdepth);

/* Whether the field of <o> holds the same value in <a> and <b> (the structs it lives in). */
static bool same_value(const struct sc_opt *o, const void *a, const void *b, int tdepth)
{
    const void *fa = cat_off(a, o->offset), *fb = cat_off(b, o->offset);
    switch (o->type) {
    case SC_OPT_STR:
        return same_str(*(char *const *)fa, *(char *const *)fb);
    case SC_OPT_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case SC_OPT_INT:
        return *(const int64_t *)fa == *(const int64_t *)fb;
    case SC_OPT_DURATION:
    case SC_OPT_SIZE:
        return *(const uint64_t *)fa == *(const uint64_t *)fb;
    case SC_OPT_DOUBLE:
        return memcmp(fa, fb, sizeof(double)) == 0;
    case SC_OPT_ENUM:
        return *(const int *)fa == *(const int *)fb;
    case SC_OPT_STRLIST: {
        const struct sc_strv *va = fa, *vb = fb;
        if (va->n != vb->n) {
            return false;
        }
        for (size_t i = 0; i < va->n; i++) {
            if (!same_str(va->v[i], vb->v[i])) {
                return false;
            }
        }
        return true;
    }
    case SC_OPT_STRMAP: {
        const struct sc_kvv *ma = fa, *mb = fb;
        if (ma->n != mb->n) {
            return false;
        }
        for (size_t i = 0; i < ma->n; i++) {
            if (!same_str(ma->v[i].key, mb->v[i].key) ||
                !same_str(ma->v[i].value, mb->v[i].value)) {
                return false;
            }
        }
        return true;
    }
    case SC_OPT_OBJ:
    case SC_OPT_INLINE:
        return same_obj(o->sub, fa, fb, tdepth + 1);
    case SC_OPT_OBJLIST: {
        const struct sc_vec *la = fa, *lb = fb;
        if (la->n != lb->n) {
            return false;
        }
        for (size_t i = 0; i < la->n; i++) {
            if (!same_obj(o->sub, (const char *)la->v + i * o->sub_size,
                          (const char *)lb->v + i * o->sub_size, tdepth + 1)) {
                return false;
            }
        }
        return true;
    }
    case SC_OPT_END:
        break;
    }
    bad_table(o, "unknown option type");
}

static bool same_obj(const struct sc_opt *table, const void *a, const void *b, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nest too deep (a table that contains itself?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if (!same_value(o, a, b, tdepth)) {
            return false;
        }
    }
    return true;
}

/* Whether <table> (or a table inside it) flags an option SC_OPT_RESTART. */
static bool has_restart(const struct sc_opt *table, int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nest too deep (a table that contains itself?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        if ((o->flags & SC_OPT_RESTART) ||
            ((o->type == SC_OPT_OBJ || o->type == SC_OPT_INLINE || o->type == SC_OPT_OBJLIST) &&
             has_restart(o->sub, tdepth + 1))) {
            return true;
        }
    }
    return false;
}

/* Appends the key of <o> to <path> ("a.b", "list[2].c"; inline keys add nothing). */
static void path_push(struct sc_buf *path, const struct sc_opt *o)
{
    if (o->type == SC_OPT_INLINE) {
        return;
    }
    if (path->len) {
        sc_buf_append(path, ".", 1);
    }
    sc_buf_append_cstr(path, o->name);
}

/* Checks <table> over <a> and <b>; on the first change, leaves its key in <path> and returns
 * false. */
static bool check(const struct sc_opt *table, const void *a, const void *b, struct sc_buf *path,
                  int tdepth)
{
    if (tdepth > MAX_TABLE_DEPTH) {
        bad_table(table, "tables nest too deep (a table that contains itself?)");
    }
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        size_t mark = path->len;
        path_push(path, o);
        if (o->flags & SC_OPT_RESTART) {
            if (!same_value(o, a, b, tdepth)) {
                return false;
            }
        } else if ((o->type == SC_OPT_OBJ || o->type == SC_OPT_INLINE) &&
                   has_restart(o->sub, tdepth + 1)) {
            if (!check(o->sub, cat_off(a, o->offset), cat_off(b, o->offset), path, tdepth + 1)) {
                return false;
            }
        } else if (o->type == SC_OPT_OBJLIST && has_restart(o->sub, tdepth + 1)) {
            const struct sc_vec *la = cat_off(a, o->offset), *lb = cat_off(b, o->offset);
            if (la->n != lb->n) {
                return false; /* elements added or removed */
            }
            for (size_t i = 0; i < la->n; i++) {
                size_t at = path->len;
                sc_buf_appendf(path, "[%zu]", i);
                if (!check(o->sub, (const char *)la->v + i * o->sub_size,
                           (const char *)lb->v + i * o->sub_size, path, tdepth + 1)) {
                    return false;
                }
                path->len = at;
            }
        }
        path->len = mark;
    }
    return true;
}

int sc_config_check_reload(const struct sc_opt *table, const void *cur, const void *next,
                           char **err)
{
    struct sc_buf path;
    sc_buf_init(&path, 4096);
    int rc = 0;
    if (!check(table, cur, next, &path, 0)) {
        *err = sc_asprintf("%s changes only with a restart", sc_buf_cstr(&path));
        rc = SC_ECONFIG;
    }
    sc_buf_cleanup(&path);
    return rc;
}
