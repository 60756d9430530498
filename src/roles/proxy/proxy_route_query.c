// SPDX-License-Identifier: Apache-2.0
// Route query-parameter matches and regex_rewrite (see proxy_route_query.h).
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_route_query.h"

const struct sc_opt proxy_query_match_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_query_match_cfg, name),
      .help = "query parameter name, as sent",
      .flags = SC_OPT_REQUIRED },
    { .name = "exact",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_query_match_cfg, exact),
      .help = "the value, as sent (not percent-decoded)" },
    { .name = "prefix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_query_match_cfg, prefix),
      .help = "the value starts with this" },
    { .name = "suffix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_query_match_cfg, suffix),
      .help = "the value ends with this" },
    { .name = "regex",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_query_match_cfg, regex),
      .help = "PCRE2 regular expression the whole value must match" },
    { .name = "present",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_query_match_cfg, present),
      .def = "true",
      .help = "false: the route matches only when the parameter is absent; true without a "
              "value match: present with any value" },
    { 0 },
};

const struct sc_opt proxy_regex_rewrite_opts[] = {
    { .name = "pattern",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_regex_rewrite_cfg, pattern),
      .help = "PCRE2 regular expression; every match in the path is replaced" },
    { .name = "substitution",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_regex_rewrite_cfg, substitution),
      .help = "replacement text; \\1 to \\9 insert the match's groups, \\\\ a backslash" },
    { 0 },
};

enum { Q_ANY, Q_EXACT, Q_PREFIX, Q_SUFFIX, Q_REGEX };

struct proxy_query_match {
    struct sc_str name;
    struct sc_str value;
    pcre2_code *re;
    int kind;
    bool present;
};

struct proxy_regex_rewrite {
    pcre2_code *re;
    char *subst; /* in pcre2_substitute's syntax */
};

static pcre2_code *compile(const char *re, bool whole, char **err)
{
    int ec;
    PCRE2_SIZE off;
    char *why = NULL;
    if (sc_lazylib_pcre2_load(err ? err : &why) < 0) {
        sc_free(why);
        return NULL;
    }
    char *a = whole ? sc_asprintf("(?:%s)\\z", re) : sc_strdup(re);
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)a, PCRE2_ZERO_TERMINATED, whole ? PCRE2_ANCHORED : 0,
                                  &ec, &off, NULL);
    sc_free(a);
    if (!c && err) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        *err = sc_asprintf("regex \"%s\" at offset %zu: %s", re, (size_t)off, (char *)msg);
    }
    if (c) {
        (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
    }
    return c;
}

pcre2_code *proxy_route_regex_compile(const char *re)
{
    return compile(re, true, NULL);
}

/* <s> in pcre2_substitute's syntax: "\N" becomes "${N}", "\\" a backslash, "$" "$$". Returns
 * NULL when a group reference exceeds <groups> or a backslash escapes anything else. */
static char *subst_convert(const char *s, uint32_t groups)
{
    size_t n = strlen(s);
    char *o = sc_malloc(n * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '$') {
            o[k++] = '$';
            o[k++] = '$';
        } else if (s[i] != '\\') {
            o[k++] = s[i];
        } else if (s[i + 1] == '\\') {
            o[k++] = '\\';
            i++;
        } else if (s[i + 1] >= '0' && s[i + 1] <= '9' && (uint32_t)(s[i + 1] - '0') <= groups) {
            k += (size_t)snprintf(o + k, 5, "${%c}", s[i + 1]);
            i++;
        } else {
            sc_free(o);
            return NULL;
        }
    }
    o[k] = '\0';
    return o;
}

int proxy_route_query_check(const struct sc_vec *q, const struct proxy_regex_rewrite_cfg *rw,
                            bool has_prefix_rewrite, const char *where, char **err)
{
    const struct proxy_query_match_cfg *m = q->v;
    if (q->n > PROXY_QUERY_MAX) {
        *err = sc_asprintf("%s: at most %d query_parameters", where, PROXY_QUERY_MAX);
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < q->n; i++) {
        int nv = !!m[i].exact + !!m[i].prefix + !!m[i].suffix + !!m[i].regex;
        if (!m[i].name[0] || strpbrk(m[i].name, "&=#? ")) {
            *err = sc_asprintf("%s: query parameter name \"%s\" is empty or holds one of &=#? "
                               "and space",
                               where, m[i].name);
            return SC_ECONFIG;
        }
        if (nv > 1 || (nv && !m[i].present)) {
            *err = sc_asprintf("%s: query parameter \"%s\": use one of exact, prefix, suffix, "
                               "regex and present: false",
                               where, m[i].name);
            return SC_ECONFIG;
        }
        char *why = NULL;
        pcre2_code *c = m[i].regex ? compile(m[i].regex, true, &why) : NULL;
        if (m[i].regex && !c) {
            *err = sc_asprintf("%s: query parameter \"%s\": %s", where, m[i].name, why);
            sc_free(why);
            return SC_ECONFIG;
        }
        pcre2_code_free(c);
    }
    if (!rw->pattern && !rw->substitution) {
        return 0;
    }
    if (!rw->pattern || !rw->substitution) {
        *err = sc_asprintf("%s: regex_rewrite needs pattern and substitution", where);
        return SC_ECONFIG;
    }
    if (has_prefix_rewrite) {
        *err = sc_asprintf("%s: use one of prefix_rewrite and regex_rewrite", where);
        return SC_ECONFIG;
    }
    for (const char *s = rw->substitution; *s; s++) {
        if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '?' || *s == '#') {
            *err = sc_asprintf("%s: regex_rewrite substitution holds a space, control character, "
                               "? or #",
                               where);
            return SC_ECONFIG;
        }
    }
    char *why = NULL;
    if (proxy_route_regex_check(rw->pattern, rw->substitution, &why) < 0) {
        *err = sc_asprintf("%s: regex_rewrite: %s", where, why);
        sc_free(why);
        return SC_ECONFIG;
    }
    return 0;
}

int proxy_route_regex_check(const char *re, const char *subst, char **why)
{
    pcre2_code *c = compile(re, !subst, why);
    if (!c) {
        return SC_ECONFIG;
    }
    uint32_t groups = 0;
    (void)pcre2_pattern_info(c, PCRE2_INFO_CAPTURECOUNT, &groups);
    pcre2_code_free(c);
    char *sub = subst ? subst_convert(subst, groups) : NULL;
    if (subst && !sub) {
        *why = sc_asprintf("substitution \"%s\": a backslash is followed by neither a backslash "
                           "nor the number of one of the pattern's %u groups",
                           subst, groups);
        return SC_ECONFIG;
    }
    sc_free(sub);
    return 0;
}

struct proxy_query_match *proxy_query_new(const struct sc_vec *q)
{
    if (!q->n) {
        return NULL;
    }
    const struct proxy_query_match_cfg *m = q->v;
    struct proxy_query_match *v = sc_calloc(q->n, sizeof(*v));
    for (size_t i = 0; i < q->n; i++) {
        v[i].name = sc_str_c(sc_strdup(m[i].name));
        v[i].present = m[i].present;
        const char *val = m[i].exact ? m[i].exact : m[i].prefix ? m[i].prefix : m[i].suffix;
        v[i].kind = m[i].exact    ? Q_EXACT
                    : m[i].prefix ? Q_PREFIX
                    : m[i].suffix ? Q_SUFFIX
                    : m[i].regex  ? Q_REGEX
                                  : Q_ANY;
        v[i].value = val ? sc_str_c(sc_strdup(val)) : SC_STR_NULL;
        v[i].re = m[i].regex ? compile(m[i].regex, true, NULL) : NULL;
    }
    return v;
}

void proxy_query_free(struct proxy_query_match *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        sc_free((char *)v[i].name.p);
        sc_free((char *)v[i].value.p);
        pcre2_code_free(v[i].re);
    }
    sc_free(v);
}

/* Parameter <name> of query <q> (first occurrence), or p NULL. */
static struct sc_str param(struct sc_str q, struct sc_str name)
{
    while (q.len) {
        const char *amp = memchr(q.p, '&', q.len);
        size_t n = amp ? (size_t)(amp - q.p) : q.len;
        const char *eq = memchr(q.p, '=', n);
        size_t kl = eq ? (size_t)(eq - q.p) : n;
        if (kl == name.len && memcmp(q.p, name.p, kl) == 0) {
            return eq ? sc_str_n(eq + 1, n - kl - 1) : SC_STR("");
        }
        q = amp ? sc_str_n(amp + 1, q.len - n - 1) : SC_STR_NULL;
    }
    return SC_STR_NULL;
}

struct sc_str proxy_query_value(struct sc_str target, struct sc_str name)
{
    const char *qm = target.len ? memchr(target.p, '?', target.len) : NULL;
    if (!qm) {
        return SC_STR_NULL;
    }
    struct sc_str q = sc_str_n(qm + 1, target.len - (size_t)(qm - target.p) - 1);
    const char *hash = memchr(q.p, '#', q.len);
    q.len = hash ? (size_t)(hash - q.p) : q.len;
    return param(q, name);
}

bool proxy_query_matches(const struct proxy_query_match *v, size_t n, struct sc_str target,
                         pcre2_match_data *md)
{
    for (size_t i = 0; i < n; i++) {
        const struct proxy_query_match *m = &v[i];
        struct sc_str val = proxy_query_value(target, m->name);
        if (!m->present) {
            if (val.p) {
                return false;
            }
            continue;
        }
        if (!val.p) {
            return false;
        }
        bool ok = true;
        switch (m->kind) {
        case Q_EXACT:
            ok = sc_str_eq(val, m->value);
            break;
        case Q_PREFIX:
            ok = sc_str_startswith(val, m->value);
            break;
        case Q_SUFFIX:
            ok = val.len >= m->value.len &&
                 memcmp(val.p + val.len - m->value.len, m->value.p, m->value.len) == 0;
            break;
        case Q_REGEX:
            ok = m->re && pcre2_match(m->re, (PCRE2_SPTR)(val.len ? val.p : ""), val.len, 0, 0, md,
                                      NULL) >= 0;
            break;
        default:
            break;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

struct proxy_regex_rewrite *proxy_regex_rewrite_new(const struct proxy_regex_rewrite_cfg *c)
{
    if (!c->pattern || !c->substitution) {
        return NULL;
    }
    pcre2_code *re = compile(c->pattern, false, NULL);
    if (!re) {
        return NULL;
    }
    uint32_t groups = 0;
    (void)pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &groups);
    struct proxy_regex_rewrite *rw = SC_NEW(struct proxy_regex_rewrite);
    rw->re = re;
    rw->subst = subst_convert(c->substitution, groups);
    return rw;
}

void proxy_regex_rewrite_free(struct proxy_regex_rewrite *rw)
{
    if (!rw) {
        return;
    }
    pcre2_code_free(rw->re);
    sc_free(rw->subst);
    sc_free(rw);
}

long proxy_regex_rewrite_apply(const struct proxy_regex_rewrite *rw, struct sc_str origin,
                               char *out, size_t cap)
{
    const char *qm = origin.len ? memchr(origin.p, '?', origin.len) : NULL;
    size_t plen = qm ? (size_t)(qm - origin.p) : origin.len;
    PCRE2_SIZE olen = cap;
    int rc = pcre2_substitute(rw->re, (PCRE2_SPTR)(plen ? origin.p : ""), plen, 0,
                              PCRE2_SUBSTITUTE_GLOBAL, NULL, NULL, (PCRE2_SPTR)rw->subst,
                              PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)out, &olen);
    if (rc < 0) {
        return -1;
    }
    size_t rest = origin.len - plen;
    if (olen + rest > cap) {
        return -1;
    }
    memcpy(out + olen, origin.p + plen, rest);
    return (long)(olen + rest);
}
