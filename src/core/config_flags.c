// SPDX-License-Identifier: Apache-2.0
// Command-line flags over option tables (--name value, --name=value, dashes and underscores
// alike, nested options as --parent.child) and the check that every required key is set. A flag
// sets a field through the same value parser as a file does, so a flag and a key never disagree.
#include "core/config.h"

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

char *sc_config_flag_name(const char *name)
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
            ns->v[ns->n++] = sc_config_flag_name(o->name);
        }
    }
}

static int unknown_flag(const struct sc_opt *table, const char *flag, char **err)
{
    struct names ns = { 0 };
    collect_flags(table, &ns, 0);
    char *word = sc_config_flag_name(flag ? flag : "");
    const char *hint = sc_value_did_you_mean(word, ns.v, ns.n);
    struct sc_buf m;
    sc_buf_init(&m, MSG_MAX);
    sc_buf_append_cstr(&m, "unknown flag ");
    sc_config_append_quoted(&m, word);
    if (hint) {
        sc_buf_appendf(&m, " (did you mean \"%s\"?)", hint);
    }
    if (err) {
        *err = sc_config_buf_take(&m);
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
        sc_config_free_str(o, field);
        *(char **)field = sc_strdup(value);
        return 0;
    case SC_OPT_STRLIST: {
        struct sc_strv *v = field;
        struct sc_str rest = sc_str_c(value);
        while (rest.len) {
            struct sc_str part = sc_str_trim(sc_str_split(&rest, ','));
            if (part.len) {
                sc_config_strv_push(v, sc_strndup(part.p, part.len));
            }
        }
        return sc_config_check_count(o, v->n, m);
    }
    case SC_OPT_STRMAP: {
        const char *eq = strchr(value, '=');
        if (!eq || eq == value) {
            sc_buf_append_cstr(m, "expected key=value, got ");
            sc_config_append_quoted(m, value);
            return SC_ECONFIG;
        }
        sc_config_kvv_set(o, field, sc_strndup(value, (size_t)(eq - value)), sc_strdup(eq + 1));
        return 0;
    }
    case SC_OPT_OBJ:
    case SC_OPT_OBJLIST:
    case SC_OPT_INLINE:
        sc_buf_append_cstr(m, "cannot be set from the command line");
        return SC_ECONFIG;
    default:
        return sc_config_set_scalar(o, field, value, m);
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
        rc = sc_config_run_check(o, field, &m);
    }
    if (rc < 0) {
        if (err) {
            char *fname = sc_config_flag_name(o->name);
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
            char *fname = sc_config_flag_name(o->name);
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
