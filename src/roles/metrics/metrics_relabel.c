// SPDX-License-Identifier: Apache-2.0
// Prometheus-style relabeling of one sample's labels (the metric name is the label __name__):
// replace, keep, drop, labeldrop, labelkeep, labelmap and hashmod, with regexes anchored at both
// ends as Prometheus anchors them (^(?:regex)$), $1 / ${1} / ${name} groups in replacement and
// target_label, and hashmod's value equal to Prometheus's (the low 64 bits of the MD5, big-endian,
// modulo the modulus) so shards agree with a Prometheus that shards the same way.
#include <stdio.h>
#include <string.h>

#include "core/regex.h"

#include "core/alloc.h"
#include "core/lazylib.h"
#include "core/error.h"
#include "roles/metrics/metrics.h"

struct rule {
    enum metrics_relabel_action action;
    char *strings; /* owned copies of the config's strings, which the views below point into */
    struct sc_str *sources;
    size_t nsources;
    struct sc_str separator;
    struct sc_str target;
    struct sc_str replacement;
    uint64_t modulus;
    pcre2_code *re;
    pcre2_match_data *md;
};

struct metrics_relabel {
    struct rule *rules;
    size_t n;
    struct sc_buf scratch; /* the joined source values */
    struct sc_buf expand;
};

static const char *const action_names[] = { "replace",   "keep",     "drop",    "labeldrop",
                                            "labelkeep", "labelmap", "hashmod", NULL };

void metrics_relabel_free(struct metrics_relabel *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        pcre2_match_data_free(r->rules[i].md);
        pcre2_code_free(r->rules[i].re);
        sc_free(r->rules[i].sources);
        sc_free(r->rules[i].strings);
    }
    sc_free(r->rules);
    sc_buf_cleanup(&r->scratch);
    sc_buf_cleanup(&r->expand);
    sc_free(r);
}

int metrics_relabel_compile(const struct metrics_relabel_cfg *rules, size_t n,
                            struct metrics_relabel **out, char **err)
{
    struct metrics_relabel *r = SC_NEW(struct metrics_relabel);
    r->rules = sc_calloc(n ? n : 1, sizeof(*r->rules));
    sc_buf_init(&r->scratch, 1 << 20);
    sc_buf_init(&r->expand, 1 << 20);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const struct metrics_relabel_cfg *c = &rules[i];
        struct rule *ru = &r->rules[i];
        r->n = i + 1;
        ru->action = (enum metrics_relabel_action)c->action;
        ru->nsources = c->source_labels.n;
        ru->sources = sc_calloc(ru->nsources ? ru->nsources : 1, sizeof(*ru->sources));
        const char *sep = c->separator ? c->separator : ";";
        const char *target = c->target_label ? c->target_label : "";
        const char *repl = c->replacement ? c->replacement : "$1";
        size_t total = strlen(sep) + strlen(target) + strlen(repl) + 3;
        for (size_t k = 0; k < c->source_labels.n; k++) {
            total += strlen(c->source_labels.v[k]) + 1;
        }
        ru->strings = sc_malloc(total);
        char *w = ru->strings;
        struct sc_str *views[] = { &ru->separator, &ru->target, &ru->replacement };
        const char *texts[] = { sep, target, repl };
        for (size_t k = 0; k < 3 + c->source_labels.n; k++) {
            const char *t = k < 3 ? texts[k] : c->source_labels.v[k - 3];
            size_t len = strlen(t);
            memcpy(w, t, len + 1);
            if (k < 3) {
                *views[k] = sc_str_n(w, len);
            } else {
                ru->sources[k - 3] = sc_str_n(w, len);
            }
            w += len + 1;
        }
        if (sc_lazylib_pcre2_load(err) < 0) {
            rc = SC_ECONFIG;
            goto out;
        }
        const char *regex = c->regex ? c->regex : "(.*)";
        char *pat = sc_asprintf("^(?:%s)$", regex);
        int ec;
        PCRE2_SIZE eo;
        ru->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_DOTALL,
                               &ec, &eo, NULL);
        sc_free(pat);
        if (!ru->re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            *err = sc_asprintf("relabel_configs[%zu]: regex: %s", i, (const char *)msg);
            rc = SC_ECONFIG;
            goto out;
        }
        (void)pcre2_jit_compile(ru->re, PCRE2_JIT_COMPLETE);
        ru->md = pcre2_match_data_create_from_pattern(ru->re, NULL);
        switch (ru->action) {
        case RELABEL_REPLACE:
            if (!c->target_label) {
                *err = sc_asprintf("relabel_configs[%zu]: replace needs target_label", i);
                rc = SC_ECONFIG;
                goto out;
            }
            break;
        case RELABEL_HASHMOD:
            if (!c->target_label || c->modulus <= 0) {
                *err = sc_asprintf("relabel_configs[%zu]: hashmod needs target_label and a "
                                   "modulus > 0",
                                   i);
                rc = SC_ECONFIG;
                goto out;
            }
            ru->modulus = (uint64_t)c->modulus;
            break;
        case RELABEL_KEEP:
        case RELABEL_DROP:
            if (!c->source_labels.n) {
                *err = sc_asprintf("relabel_configs[%zu]: %s needs source_labels", i,
                                   action_names[ru->action]);
                rc = SC_ECONFIG;
                goto out;
            }
            break;
        default:
            break;
        }
    }
    *out = r;
    r = NULL;
out:
    metrics_relabel_free(r);
    return rc;
}

struct sc_str metrics_lbls_get(const struct metrics_lbls *l, struct sc_str name)
{
    for (size_t i = 0; i < l->n; i++) {
        if (sc_str_eq(l->v[i].name, name)) {
            return l->v[i].value;
        }
    }
    return SC_STR_NULL;
}

void metrics_lbls_set(struct metrics_lbls *l, struct sc_str name, struct sc_str value)
{
    for (size_t i = 0; i < l->n; i++) {
        if (sc_str_eq(l->v[i].name, name)) {
            if (value.len == 0) {
                l->v[i] = l->v[--l->n];
                return;
            }
            l->v[i].value = value;
            return;
        }
    }
    if (value.len == 0) {
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = sc_reallocarray(l->v, l->cap, sizeof(*l->v));
    }
    l->v[l->n].name = name;
    l->v[l->n].value = value;
    l->n++;
}

static bool match(const struct rule *ru, struct sc_str s)
{
    int rc = pcre2_match(ru->re, (PCRE2_SPTR)(s.p ? s.p : ""), s.len, 0, 0, ru->md, NULL);
    return rc >= 0;
}

/* Appends the replacement template expanded with the last match's groups on <subject>. */
static void expand(struct metrics_relabel *r, const struct rule *ru, struct sc_str tmpl,
                   struct sc_str subject, struct sc_buf *out)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ru->md);
    uint32_t ng = pcre2_get_ovector_count(ru->md);
    (void)r;
    for (size_t i = 0; i < tmpl.len; i++) {
        char c = tmpl.p[i];
        if (c != '$' || i + 1 >= tmpl.len) {
            sc_buf_append(out, &c, 1);
            continue;
        }
        if (tmpl.p[i + 1] == '$') {
            sc_buf_append(out, "$", 1);
            i++;
            continue;
        }
        size_t st, en;
        if (tmpl.p[i + 1] == '{') {
            st = i + 2;
            en = st;
            while (en < tmpl.len && tmpl.p[en] != '}') {
                en++;
            }
            if (en >= tmpl.len) {
                sc_buf_append(out, &c, 1); /* not a reference: literal, as Go does */
                continue;
            }
            i = en;
        } else {
            st = i + 1;
            en = st;
            while (en < tmpl.len &&
                   ((tmpl.p[en] >= '0' && tmpl.p[en] <= '9') ||
                    (tmpl.p[en] >= 'a' && tmpl.p[en] <= 'z') ||
                    (tmpl.p[en] >= 'A' && tmpl.p[en] <= 'Z') || tmpl.p[en] == '_')) {
                en++;
            }
            if (en == st) {
                sc_buf_append(out, &c, 1);
                continue;
            }
            i = en - 1;
        }
        struct sc_str name = sc_str_n(tmpl.p + st, en - st);
        int group = -1;
        bool digits = name.len > 0;
        for (size_t k = 0; k < name.len; k++) {
            digits = digits && name.p[k] >= '0' && name.p[k] <= '9';
        }
        if (digits) {
            uint64_t g;
            if (sc_str_to_u64(name, 1000, &g) == 0) {
                group = (int)g;
            }
        } else if (name.len < 64) {
            char nb[64];
            memcpy(nb, name.p, name.len);
            nb[name.len] = '\0';
            group = pcre2_substring_number_from_name(ru->re, (PCRE2_SPTR)nb);
        }
        if (group >= 0 && (uint32_t)group < ng && ov[2 * group] != PCRE2_UNSET) {
            sc_buf_append(out, subject.p + ov[2 * group], ov[2 * group + 1] - ov[2 * group]);
        }
    }
}

static struct sc_str keep_str(struct metrics_lbls *l, const struct sc_buf *b)
{
    return metrics_prom_strdup(l->arena_set, sc_buf_str(b));
}

static uint64_t md5_low64(struct sc_str s)
{
    unsigned char d[16] = { 0 };
    sc_lazylib_md5(s.p, s.len, d);
    uint64_t v = 0;
    for (int i = 8; i < 16; i++) {
        v = (v << 8) | d[i];
    }
    return v;
}

bool metrics_relabel_apply(const struct metrics_relabel *rc, struct metrics_lbls *l)
{
    struct metrics_relabel *r = (struct metrics_relabel *)rc; /* scratch buffers only */
    if (!r) {
        return true;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct rule *ru = &r->rules[i];
        struct sc_str val = SC_STR("");
        if (ru->nsources) {
            sc_buf_reset(&r->scratch);
            for (size_t k = 0; k < ru->nsources; k++) {
                if (k) {
                    sc_buf_append_str(&r->scratch, ru->separator);
                }
                sc_buf_append_str(&r->scratch, metrics_lbls_get(l, ru->sources[k]));
            }
            val = sc_buf_str(&r->scratch);
        }
        switch (ru->action) {
        case RELABEL_KEEP:
            if (!match(ru, val)) {
                return false;
            }
            break;
        case RELABEL_DROP:
            if (match(ru, val)) {
                return false;
            }
            break;
        case RELABEL_REPLACE: {
            if (!match(ru, val)) {
                break;
            }
            sc_buf_reset(&r->expand);
            expand(r, ru, ru->target, val, &r->expand);
            struct sc_str target = keep_str(l, &r->expand);
            if (!metrics_prom_valid_name(target, true) && !sc_str_eq(target, SC_STR("__name__"))) {
                break; /* Prometheus skips an invalid target label */
            }
            sc_buf_reset(&r->expand);
            expand(r, ru, ru->replacement, val, &r->expand);
            metrics_lbls_set(l, target, keep_str(l, &r->expand));
            break;
        }
        case RELABEL_HASHMOD: {
            char num[24];
            int nn = snprintf(num, sizeof(num), "%llu",
                              (unsigned long long)(md5_low64(val) % ru->modulus));
            metrics_lbls_set(l, ru->target,
                             metrics_prom_strdup(l->arena_set, sc_str_n(num, (size_t)nn)));
            break;
        }
        case RELABEL_LABELMAP: {
            size_t n = l->n;
            for (size_t k = 0; k < n; k++) {
                struct sc_str name = l->v[k].name;
                if (!match(ru, name)) {
                    continue;
                }
                sc_buf_reset(&r->expand);
                expand(r, ru, ru->replacement, name, &r->expand);
                struct sc_str nn = keep_str(l, &r->expand);
                if (metrics_prom_valid_name(nn, true)) {
                    metrics_lbls_set(l, nn, l->v[k].value);
                }
            }
            break;
        }
        case RELABEL_LABELDROP:
        case RELABEL_LABELKEEP:
            for (size_t k = 0; k < l->n;) {
                bool m = match(ru, l->v[k].name);
                bool drop = ru->action == RELABEL_LABELDROP ? m : !m;
                if (drop && !sc_str_eq(l->v[k].name, SC_STR("__name__"))) {
                    l->v[k] = l->v[--l->n];
                } else {
                    k++;
                }
            }
            break;
        }
    }
    return true;
}
