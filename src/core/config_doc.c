// SPDX-License-Identifier: Apache-2.0
// What option tables say about themselves: the JSON dump of an effective configuration (/config
// and --check; secrets redacted) and the --help text and Markdown reference generated from the
// same tables. Invariant: the dump reads nothing but the struct and the table, so it can run at any
// time after a load.
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
#include "core/utf8.h"

#include <jansson.h>

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
        sc_value_format_duration(*(const uint64_t *)field, tmp);
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

/* Appends the help text of an option with its enum values, bounds, whether a reload may change it,
 * and (with <def>) its default or "(required)"; the doc table has a column for the default
 * instead. */
static void describe(struct sc_buf *b, const struct sc_opt *o, bool def)
{
    sc_buf_append_cstr(b, o->help ? o->help : "");
    if (o->type == SC_OPT_ENUM) {
        sc_buf_append_cstr(b, b->len ? " (one of: " : "(one of: ");
        sc_config_append_enums(b, o->enums, ", ");
        sc_buf_append_cstr(b, ")");
    }
    if (bounded(o)) {
        char lo[96], hi[96];
        sc_buf_append_cstr(b, b->len ? " [" : "[");
        if (o->type == SC_OPT_DURATION || o->type == SC_OPT_SIZE) {
            uint64_t l = o->min < 0 ? 0 : (uint64_t)o->min, h = (uint64_t)o->max;
            if (o->type == SC_OPT_DURATION) {
                sc_value_format_duration(l, lo);
                sc_value_format_duration(h, hi);
            } else {
                sc_value_render_size(l, lo);
                sc_value_render_size(h, hi);
            }
            sc_buf_appendf(b, "%s..%s]", lo, hi);
        } else {
            sc_buf_appendf(b, "%" PRId64 "..%" PRId64 "]", o->min, o->max);
        }
    }
    if (o->flags & SC_OPT_RESTART) {
        sc_buf_append_cstr(b, b->len ? " (changes only with a restart)"
                                     : "(changes only with a restart)");
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
    return sc_config_buf_take(&b);
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
        char *fname = sc_config_flag_name(o->name);
        sc_buf_appendf(&b, "  %s%s%s%s", o->flag_alias ? "-" : "",
                       o->flag_alias ? o->flag_alias : "", o->flag_alias ? ", " : "", fname);
        sc_free(fname);
        switch (o->type) {
        case SC_OPT_BOOL:
            break;
        case SC_OPT_ENUM:
            sc_buf_append_cstr(&b, " {");
            sc_config_append_enums(&b, o->enums, "|");
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
        rows_push(rs, sc_config_buf_take(&b), NULL, describe_new(o));
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
            char *fname = sc_config_flag_name(o->name);
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
