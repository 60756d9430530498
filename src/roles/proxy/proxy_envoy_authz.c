// SPDX-License-Identifier: Apache-2.0
// Envoy's authorization HTTP filters as proxy configuration (see proxy_front.h):
// envoy.filters.http.rbac onto `authorization:` policies (ALLOW, DENY, LOG -> AUDIT; shadow_rules
// -> dry_run), envoy.filters.http.jwt_authn onto `request_authentication:` and, for rules that
// require a token, DENY policies; envoy.filters.http.ext_authz (http_service) onto an
// `extension_providers:` entry and a CUSTOM policy for every request; the connection manager's path
// options onto path_normalization and escaped_slashes. An RBAC policy matches when one permission
// and one principal match; each principal and permission becomes a set of alternatives (source or
// operation fields plus `when` conditions), and the policy becomes native rules whose sources and
// operations are those alternatives. Invariant: what has no equivalent with the same decision
// (regex and contains matchers, ':path' headers that include the query, AND of two values of one
// field, metadata) is refused at its position, never approximated.
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_envoy.h"

#define T_RBAC T_PREFIX "envoy.extensions.filters.http.rbac.v3.RBAC"
#define T_JWT T_PREFIX "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
#define T_EXTAUTHZ T_PREFIX "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
#define ALTS_MAX 64 /* alternatives of one principal or permission */
#define DEPTH_MAX 8 /* nested and/or/not */
#define PATTERN_MAX 1024

/* One alternative: fields of a source (or operation) and `when` conditions, all of which hold. */
struct alt {
    struct sc_ynode *fields; /* mapping: native field -> list of patterns */
    struct sc_ynode *when;   /* list of {key, values | not_values} */
};

struct alts {
    struct alt v[ALTS_MAX];
    size_t n;
};

/* The Envoy shape of principals or permissions and what a leaf becomes. */
struct side {
    const char *and_key, *or_key, *list_key, *not_key, *what;
    int (*leaf)(struct proxy_front *f, const struct sc_ynode *hcm, const char *k,
                const struct sc_ynode *v, const char *path, bool neg, struct alt *out);
};

static int new_alt(struct proxy_front *f, const struct sc_ynode *at, struct alt *a)
{
    a->fields = proxy_front_map(f, at);
    a->when = proxy_front_seq(f, at);
    return f->err ? SC_ECONFIG : 0;
}

/* Sets field <key> (negated: not_<key>) of <a> to the one-element list <value>. */
static void set_field(struct proxy_front *f, struct alt *a, const char *key, bool neg,
                      const char *value, const struct sc_ynode *at)
{
    char k[64];
    snprintf(k, sizeof(k), "%s%s", neg ? "not_" : "", key);
    struct sc_ynode *l = proxy_front_seq(f, at);
    proxy_front_push(f, l, sc_ytree_str(f->out, at, value), at);
    proxy_front_set(f, a->fields, k, l, at);
}

static void add_when(struct proxy_front *f, struct alt *a, const char *key, bool neg,
                     const char *value, const struct sc_ynode *at)
{
    struct sc_ynode *c = proxy_front_map(f, at);
    proxy_front_put(f, c, "key", at, key);
    struct sc_ynode *l = proxy_front_seq(f, at);
    proxy_front_push(f, l, sc_ytree_str(f->out, at, value), at);
    proxy_front_set(f, c, neg ? "not_values" : "values", l, at);
    proxy_front_push(f, a->when, c, at);
}

/* A StringMatcher as a native pattern (exact, "prefix*", "*suffix") into <out>. */
static int pattern(struct proxy_front *f, const struct sc_ynode *sm, const char *path, char *out)
{
    static const char *const k[] = { "exact", "prefix", "suffix", "ignore_case", NULL };
    if (proxy_front_keys(f, sm, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *ic = proxy_front_str(f, sm, "ignore_case", path);
    if (ic && !is(ic, "false")) {
        return proxy_front_refuse(f, sc_ynode_get(sm, "ignore_case"), path,
                                  "ignore_case is not supported (matches are exact)");
    }
    const char *ops[] = { "exact", "prefix", "suffix" };
    int which = -1;
    const char *s = NULL;
    for (int i = 0; i < 3; i++) {
        const char *v = proxy_front_str(f, sm, ops[i], path);
        if (v && which >= 0) {
            return proxy_front_refuse(f, sm, path, "one of exact, prefix and suffix");
        }
        if (v) {
            which = i;
            s = v;
        }
    }
    if (which < 0) {
        return proxy_front_refuse(f, sm, path, "needs exact, prefix or suffix");
    }
    if (strchr(s, '*')) {
        return proxy_front_refuse(f, sm, path,
                                  "a '*' in the value is not supported (it would be a wildcard "
                                  "here)");
    }
    if (strlen(s) + 2 > PATTERN_MAX) {
        return proxy_front_refuse(f, sm, path, "value too long");
    }
    snprintf(out, PATTERN_MAX, "%s%s%s", which == 2 ? "*" : "", s, which == 1 ? "*" : "");
    if (which == 1 && !*s) {
        snprintf(out, PATTERN_MAX, "*");
    }
    return f->err ? SC_ECONFIG : 0;
}

/* A HeaderMatcher: its name, its pattern and whether it is inverted. */
static int header_matcher(struct proxy_front *f, const struct sc_ynode *h, const char *path,
                          const char **name, char *pat, bool *inv)
{
    static const char *const k[] = { "name",         "exact_match",
                                     "prefix_match", "suffix_match",
                                     "string_match", "present_match",
                                     "invert_match", NULL };
    if (proxy_front_keys(f, h, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    *name = proxy_front_str(f, h, "name", path);
    const char *invs = proxy_front_str(f, h, "invert_match", path);
    *inv = invs && is(invs, "true");
    if (!*name || !**name) {
        return proxy_front_refuse(f, h, path, "name is required");
    }
    const char *v;
    const struct sc_ynode *sm = sc_ynode_get(h, "string_match");
    if (sm) {
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".string_match");
        return pattern(f, sm, p, pat);
    }
    if ((v = proxy_front_str(f, h, "exact_match", path)) != NULL) {
        snprintf(pat, PATTERN_MAX, "%s", v);
    } else if ((v = proxy_front_str(f, h, "prefix_match", path)) != NULL) {
        snprintf(pat, PATTERN_MAX, "%s*", v);
    } else if ((v = proxy_front_str(f, h, "suffix_match", path)) != NULL) {
        snprintf(pat, PATTERN_MAX, "*%s", v);
    } else if ((v = proxy_front_str(f, h, "present_match", path)) != NULL && is(v, "true")) {
        snprintf(pat, PATTERN_MAX, "*");
    } else {
        return proxy_front_refuse(f, h, path,
                                  "needs exact_match, prefix_match, suffix_match, string_match "
                                  "or present_match: true");
    }
    if (strchr(v, '*')) {
        return proxy_front_refuse(f, h, path, "a '*' in the value is not supported");
    }
    return f->err ? SC_ECONFIG : 0;
}

/* A CidrRange as "address/len" (Envoy's prefix_len defaults to 0). */
static int cidr(struct proxy_front *f, const struct sc_ynode *c, const char *path, char *out)
{
    static const char *const k[] = { "address_prefix", "prefix_len", NULL };
    if (proxy_front_keys(f, c, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *a = proxy_front_str(f, c, "address_prefix", path);
    const char *l = proxy_front_str(f, c, "prefix_len", path);
    if (!a) {
        return proxy_front_refuse(f, c, path, "address_prefix is required");
    }
    snprintf(out, PATTERN_MAX, "%s/%s", a, l ? l : "0");
    return 0;
}

/* An Envoy principal's URI SAN "spiffe://td/ns/N/sa/S" is the native principal "td/ns/N/sa/S". */
static int principal_name(struct proxy_front *f, const struct sc_ynode *au, const char *path,
                          char *out)
{
    static const char *const k[] = { "principal_name", NULL };
    if (proxy_front_keys(f, au, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *pn = sc_ynode_get(au, "principal_name");
    if (!pn) {
        snprintf(out, PATTERN_MAX, "*"); /* any authenticated peer */
        return 0;
    }
    char p[PROXY_FRONT_PATH], pat[PATTERN_MAX];
    proxy_front_path(p, path, ".principal_name");
    if (pattern(f, pn, p, pat) < 0) {
        return SC_ECONFIG;
    }
    static const char spiffe[] = "spiffe://";
    const char *s = pat;
    if (*s == '*' && (!s[1] || strchr(s, '/'))) {
        snprintf(out, PATTERN_MAX, "%s", s); /* any, or the end of a SPIFFE path */
        return 0;
    }
    if (*s == '*') {
        /* Envoy also compares DNS SANs and the subject: a suffix without '/' may mean those,
         * and a DENY on them would silently match nothing here. */
        return proxy_front_refuse(f, pn, p,
                                  "a suffix without '/' is not supported (peers are known by their "
                                  "SPIFFE ID here, not DNS names or subjects)");
    }
    if (strncmp(s, spiffe, sizeof(spiffe) - 1) != 0) {
        return proxy_front_refuse(f, pn, p,
                                  "principal_name must match a SPIFFE ID (\"spiffe://...\"): "
                                  "peers are known by their SPIFFE URI SAN here");
    }
    snprintf(out, PATTERN_MAX, "%s", s + sizeof(spiffe) - 1);
    if (!*out) {
        snprintf(out, PATTERN_MAX, "*");
    }
    return 0;
}

static int principal_leaf(struct proxy_front *f, const struct sc_ynode *hcm, const char *k,
                          const struct sc_ynode *v, const char *path, bool neg, struct alt *out)
{
    char pat[PATTERN_MAX];
    if (is(k, "any")) {
        if (neg || !is(sc_ynode_str(v), "true")) {
            return proxy_front_refuse(f, v, path, "any must be true and not negated");
        }
        return 0;
    }
    if (is(k, "authenticated")) {
        if (principal_name(f, v, path, pat) < 0) {
            return SC_ECONFIG;
        }
        set_field(f, out, "principals", neg, pat, v);
    } else if (is(k, "source_ip") || is(k, "direct_remote_ip") || is(k, "remote_ip")) {
        if (cidr(f, v, path, pat) < 0) {
            return SC_ECONFIG;
        }
        const char *ura = sc_ynode_str(sc_ynode_get(hcm, "use_remote_address"));
        if (is(k, "remote_ip") && !is(ura, "true")) {
            /* Without use_remote_address Envoy takes the client from X-Forwarded-For; the
             * proxy trusts no entry of it unless xff_num_trusted_hops says so. */
            return proxy_front_refuse(f, v, path,
                                      "remote_ip needs the connection manager's "
                                      "use_remote_address: true (the client is the peer)");
        }
        set_field(f, out, is(k, "remote_ip") ? "remote_ip_blocks" : "ip_blocks", neg, pat, v);
    } else if (is(k, "header")) {
        const char *name;
        bool inv;
        if (header_matcher(f, v, path, &name, pat, &inv) < 0) {
            return SC_ECONFIG;
        }
        if (name[0] == ':') {
            return proxy_front_refuse(f, v, path,
                                      "a pseudo-header in principals is not supported (match it "
                                      "in permissions)");
        }
        char key[PROXY_FRONT_PATH];
        snprintf(key, sizeof(key), "request.headers[%s]", name);
        add_when(f, out, key, neg != inv, pat, v);
    } else if (is(k, "url_path")) {
        return proxy_front_refuse(f, v, path,
                                  "url_path in principals is not supported (match "
                                  "it in permissions)");
    } else {
        return proxy_front_refuse(f, v, path, "%.64s is not supported", k);
    }
    return f->err ? SC_ECONFIG : 0;
}

static int permission_leaf(struct proxy_front *f, const struct sc_ynode *hcm, const char *k,
                           const struct sc_ynode *v, const char *path, bool neg, struct alt *out)
{
    (void)hcm;
    char pat[PATTERN_MAX];
    if (is(k, "any")) {
        if (neg || !is(sc_ynode_str(v), "true")) {
            return proxy_front_refuse(f, v, path, "any must be true and not negated");
        }
        return 0;
    }
    if (is(k, "url_path")) {
        static const char *const uk[] = { "path", NULL };
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".path");
        if (proxy_front_keys(f, v, path, uk, NULL) < 0 ||
            pattern(f, sc_ynode_get(v, "path"), p, pat) < 0) {
            return SC_ECONFIG;
        }
        set_field(f, out, "paths", neg, pat, v);
    } else if (is(k, "destination_port")) {
        int rc;
        const char *s = proxy_front_scalar(f, v, path, &rc);
        if (!s) {
            return rc < 0 ? rc : proxy_front_refuse(f, v, path, "a port is required");
        }
        set_field(f, out, "ports", neg, s, v);
    } else if (is(k, "destination_ip")) {
        if (cidr(f, v, path, pat) < 0) {
            return SC_ECONFIG;
        }
        add_when(f, out, "destination.ip", neg, pat, v);
    } else if (is(k, "requested_server_name")) {
        if (pattern(f, v, path, pat) < 0) {
            return SC_ECONFIG;
        }
        add_when(f, out, "connection.sni", neg, pat, v);
    } else if (is(k, "header")) {
        const char *name;
        bool inv;
        if (header_matcher(f, v, path, &name, pat, &inv) < 0) {
            return SC_ECONFIG;
        }
        if (is(name, ":method")) {
            set_field(f, out, "methods", neg != inv, pat, v);
        } else if (is(name, ":authority") || is(name, "host")) {
            set_field(f, out, "hosts", neg != inv, pat, v);
        } else if (name[0] == ':') {
            /* ':path' carries the query: url_path is the match on the path alone. */
            return proxy_front_refuse(f, v, path,
                                      "header %.32s is not supported (use url_path, :method or "
                                      ":authority)",
                                      name);
        } else {
            char key[PROXY_FRONT_PATH];
            snprintf(key, sizeof(key), "request.headers[%s]", name);
            add_when(f, out, key, neg != inv, pat, v);
        }
    } else {
        return proxy_front_refuse(f, v, path, "%.64s is not supported", k);
    }
    return f->err ? SC_ECONFIG : 0;
}

static const struct side principals_side = { "and_ids", "or_ids",    "ids",
                                             "not_id",  "principal", principal_leaf };
static const struct side permissions_side = { "and_rules", "or_rules",   "rules",
                                              "not_rule",  "permission", permission_leaf };

/* <a> AND <b> into <c>: the fields of both (one field set on both sides has no equivalent) and
 * the conditions of both. */
static int merge(struct proxy_front *f, const struct alt *a, const struct alt *b,
                 const struct sc_ynode *at, const char *path, struct alt *c)
{
    c->fields = sc_ytree_copy(f->out, a->fields);
    c->when = sc_ytree_copy(f->out, a->when);
    for (size_t i = 0; c->fields && i < sc_ynode_count(b->fields); i++) {
        const char *k = sc_ynode_str(sc_ynode_key(b->fields, i));
        if (sc_ynode_get(c->fields, k)) {
            return proxy_front_refuse(f, at, path,
                                      "%s twice in one AND is not supported (a request has one "
                                      "value of it)",
                                      k);
        }
        proxy_front_set(f, c->fields, k, sc_ytree_copy(f->out, sc_ynode_val(b->fields, i)), at);
    }
    for (size_t i = 0; c->when && i < sc_ynode_count(b->when); i++) {
        proxy_front_push(f, c->when, sc_ytree_copy(f->out, sc_ynode_at(b->when, i)), at);
    }
    if (!c->fields || !c->when) {
        return proxy_front_refuse(f, at, path, "configuration too large");
    }
    return f->err ? SC_ECONFIG : 0;
}

/* One principal or permission (a oneof) into the alternatives <out>. */
static int expr(struct proxy_front *f, const struct side *s, const struct sc_ynode *hcm,
                const struct sc_ynode *n, const char *path, int depth, struct alts *out)
{
    out->n = 0;
    if (sc_ynode_kind(n) != SC_Y_MAP || sc_ynode_count(n) != 1) {
        return proxy_front_refuse(f, n, path, "a %s has exactly one field", s->what);
    }
    if (depth > DEPTH_MAX) {
        return proxy_front_refuse(f, n, path, "nested more than %d deep", DEPTH_MAX);
    }
    const char *k = sc_ynode_str(sc_ynode_key(n, 0));
    const struct sc_ynode *v = sc_ynode_val(n, 0);
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".%.64s", k ? k : "?");
    if (!k) {
        return proxy_front_refuse(f, n, path, "expected a string as key");
    }
    if (is(k, s->not_key)) {
        /* Only a leaf negates into a native not_ field or not_values. */
        if (sc_ynode_kind(v) != SC_Y_MAP || sc_ynode_count(v) != 1) {
            return proxy_front_refuse(f, v, p, "a %s has exactly one field", s->what);
        }
        const char *lk = sc_ynode_str(sc_ynode_key(v, 0));
        if (!lk || is(lk, s->and_key) || is(lk, s->or_key) || is(lk, s->not_key)) {
            return proxy_front_refuse(f, v, p,
                                      "%s of %.32s is not supported (negate single matches)",
                                      s->not_key, lk ? lk : "?");
        }
        char lp[PROXY_FRONT_PATH];
        proxy_front_path(lp, p, ".%.64s", lk);
        out->n = 1;
        return new_alt(f, v, &out->v[0]) < 0
                   ? SC_ECONFIG
                   : s->leaf(f, hcm, lk, sc_ynode_val(v, 0), lp, true, &out->v[0]);
    }
    if (!is(k, s->and_key) && !is(k, s->or_key)) {
        out->n = 1;
        return new_alt(f, n, &out->v[0]) < 0 ? SC_ECONFIG
                                             : s->leaf(f, hcm, k, v, p, false, &out->v[0]);
    }
    const char *const lk[] = { s->list_key, NULL };
    const struct sc_ynode *l = sc_ynode_get(v, s->list_key);
    if (proxy_front_keys(f, v, p, lk, NULL) < 0) {
        return SC_ECONFIG;
    }
    if (sc_ynode_kind(l) != SC_Y_SEQ || sc_ynode_count(l) == 0) {
        return proxy_front_refuse(f, l ? l : v, p, "%s needs a non-empty list", s->list_key);
    }
    bool and = is(k, s->and_key);
    if (and) {
        out->n = 1;
        if (new_alt(f, v, &out->v[0]) < 0) {
            return SC_ECONFIG;
        }
    }
    for (size_t i = 0; i < sc_ynode_count(l); i++) {
        char ep[PROXY_FRONT_PATH];
        proxy_front_path(ep, p, ".%s[%zu]", s->list_key, i);
        struct alts *sub = sc_calloc(1, sizeof(*sub));
        int rc = expr(f, s, hcm, sc_ynode_at(l, i), ep, depth + 1, sub);
        if (rc == 0 && and) {
            /* (a1 | a2) & (b1 | b2): every pair. */
            struct alts *prod = sc_calloc(1, sizeof(*prod));
            for (size_t x = 0; rc == 0 && x < out->n; x++) {
                for (size_t y = 0; rc == 0 && y < sub->n; y++) {
                    if (prod->n == ALTS_MAX) {
                        rc = proxy_front_refuse(f, l, p, "more than %d alternatives", ALTS_MAX);
                    } else {
                        rc = merge(f, &out->v[x], &sub->v[y], sc_ynode_at(l, i), ep,
                                   &prod->v[prod->n++]);
                    }
                }
            }
            *out = *prod;
            sc_free(prod);
        } else if (rc == 0) {
            for (size_t y = 0; rc == 0 && y < sub->n; y++) {
                if (out->n == ALTS_MAX) {
                    rc = proxy_front_refuse(f, l, p, "more than %d alternatives", ALTS_MAX);
                } else {
                    out->v[out->n++] = sub->v[y];
                }
            }
        }
        sc_free(sub);
        if (rc < 0) {
            return rc;
        }
    }
    return f->err ? SC_ECONFIG : 0;
}

/* All alternatives of list <l> (principals or permissions). */
static int side_list(struct proxy_front *f, const struct side *s, const struct sc_ynode *hcm,
                     const struct sc_ynode *l, const char *path, struct alts *out)
{
    out->n = 0;
    if (sc_ynode_kind(l) != SC_Y_SEQ || sc_ynode_count(l) == 0) {
        return proxy_front_refuse(f, l, path, "a non-empty list is required");
    }
    for (size_t i = 0; i < sc_ynode_count(l); i++) {
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, "[%zu]", i);
        struct alts *sub = sc_calloc(1, sizeof(*sub));
        int rc = expr(f, s, hcm, sc_ynode_at(l, i), p, 0, sub);
        for (size_t y = 0; rc == 0 && y < sub->n; y++) {
            if (out->n == ALTS_MAX) {
                rc = proxy_front_refuse(f, l, path, "more than %d alternatives", ALTS_MAX);
            } else {
                out->v[out->n++] = sub->v[y];
            }
        }
        sc_free(sub);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* One group of a rule: the alternatives without conditions together, each other one alone. */
struct group {
    const struct alt *v[ALTS_MAX];
    size_t n;
    const struct sc_ynode *when; /* NULL: none */
};

static size_t groups(const struct alts *a, struct group *g)
{
    size_t n = 0;
    struct group plain = { .n = 0 };
    for (size_t i = 0; i < a->n; i++) {
        if (sc_ynode_count(a->v[i].when) == 0) {
            plain.v[plain.n++] = &a->v[i];
        } else {
            g[n] = (struct group){ .n = 1, .when = a->v[i].when };
            g[n++].v[0] = &a->v[i];
        }
    }
    if (plain.n) {
        g[n++] = plain;
    }
    return n;
}

/* The sources (or operations) of group <g> as the list <key> of <rule>. */
static void put_group(struct proxy_front *f, struct sc_ynode *rule, const char *key,
                      const char *inner, const struct group *g, const struct sc_ynode *at)
{
    struct sc_ynode *l = proxy_front_seq(f, at);
    for (size_t i = 0; i < g->n; i++) {
        struct sc_ynode *e = proxy_front_map(f, at);
        proxy_front_set(f, e, inner, sc_ytree_copy(f->out, g->v[i]->fields), at);
        proxy_front_push(f, l, e, at);
    }
    proxy_front_set(f, rule, key, l, at);
}

/* One RBAC policy into the rules of native policy <np>. */
static int policy(struct proxy_front *f, const struct sc_ynode *hcm, struct sc_ynode *np,
                  const struct sc_ynode *pol, const char *path)
{
    static const char *const k[] = { "permissions", "principals", NULL };
    if (proxy_front_keys(f, pol, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    struct alts *pa = sc_calloc(1, sizeof(*pa)), *qa = sc_calloc(1, sizeof(*qa));
    struct group *pg = sc_calloc(ALTS_MAX, sizeof(*pg)), *qg = sc_calloc(ALTS_MAX, sizeof(*qg));
    char p[PROXY_FRONT_PATH], q[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".principals");
    proxy_front_path(q, path, ".permissions");
    int rc = side_list(f, &principals_side, hcm, sc_ynode_get(pol, "principals"), p, pa);
    if (rc == 0) {
        rc = side_list(f, &permissions_side, hcm, sc_ynode_get(pol, "permissions"), q, qa);
    }
    if (rc == 0) {
        size_t np_ = groups(pa, pg), nq = groups(qa, qg);
        if (np_ * nq > 256) {
            rc = proxy_front_refuse(f, pol, path, "more than 256 rules after translation");
        }
        struct sc_ynode *rules = proxy_front_seq(f, pol);
        for (size_t i = 0; rc == 0 && i < np_; i++) {
            for (size_t j = 0; j < nq; j++) {
                struct sc_ynode *r = proxy_front_map(f, pol);
                put_group(f, r, "from", "source", &pg[i], pol);
                put_group(f, r, "to", "operation", &qg[j], pol);
                if (pg[i].when || qg[j].when) {
                    struct sc_ynode *w = proxy_front_seq(f, pol);
                    for (int s = 0; s < 2; s++) {
                        const struct sc_ynode *src = s ? qg[j].when : pg[i].when;
                        for (size_t c = 0; c < sc_ynode_count(src); c++) {
                            proxy_front_push(f, w, sc_ytree_copy(f->out, sc_ynode_at(src, c)), pol);
                        }
                    }
                    proxy_front_set(f, r, "when", w, pol);
                }
                proxy_front_push(f, rules, r, pol);
            }
        }
        proxy_front_set(f, np, "rules", rules, pol);
    }
    sc_free(pa);
    sc_free(qa);
    sc_free(pg);
    sc_free(qg);
    return f->err ? SC_ECONFIG : rc;
}

/* rules or shadow_rules of the RBAC filter into `authorization:`. */
static int rbac_rules(struct proxy_front *f, const struct sc_ynode *hcm, const struct sc_ynode *r,
                      const char *path, bool shadow)
{
    static const char *const k[] = { "action", "policies", NULL };
    if (proxy_front_keys(f, r, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    static const struct proxy_front_enum actions[] = {
        { "ALLOW", "ALLOW" }, { "DENY", "DENY" }, { "LOG", "AUDIT" }, { NULL, NULL }
    };
    const struct proxy_front_enum *action = proxy_front_enum(f, r, "action", path, NULL, actions);
    if (f->err) {
        return SC_ECONFIG;
    }
    const char *ours = action ? action->ours : "ALLOW";
    struct sc_ynode *list = proxy_front_list(f, "authorization", r);
    const struct sc_ynode *pols = sc_ynode_get(r, "policies");
    if (pols && sc_ynode_kind(pols) != SC_Y_MAP && sc_ynode_kind(pols) != SC_Y_NULL) {
        return proxy_front_refuse(f, pols, path, "policies must map names to policies");
    }
    if (sc_ynode_count(pols) == 0 && is(ours, "ALLOW")) {
        /* No policy can match: Envoy denies every request, as an ALLOW policy without rules. */
        struct sc_ynode *np = proxy_front_map(f, r);
        proxy_front_put(f, np, "name", r, shadow ? "shadow:rbac" : "rbac");
        proxy_front_put(f, np, "action", r, "ALLOW");
        if (shadow) {
            proxy_front_put(f, np, "dry_run", r, "true");
        }
        proxy_front_push(f, list, np, r);
    }
    for (size_t i = 0; i < sc_ynode_count(pols) && !f->err; i++) {
        const struct sc_ynode *kn = sc_ynode_key(pols, i);
        const char *name = sc_ynode_str(kn);
        char p[PROXY_FRONT_PATH], nm[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".policies.%.128s", name ? name : "?");
        snprintf(nm, sizeof(nm), "%s%s", shadow ? "shadow:" : "", name ? name : "");
        struct sc_ynode *np = proxy_front_map(f, kn);
        proxy_front_put(f, np, "name", kn, nm);
        proxy_front_put(f, np, "action", r, ours);
        if (shadow) {
            proxy_front_put(f, np, "dry_run", r, "true");
        }
        if (policy(f, hcm, np, sc_ynode_val(pols, i), p) < 0) {
            return SC_ECONFIG;
        }
        proxy_front_push(f, list, np, kn);
    }
    return f->err ? SC_ECONFIG : 0;
}

static int rbac(struct proxy_front *f, const struct sc_ynode *hcm, const struct sc_ynode *tc,
                const char *path)
{
    static const char *const k[] = { "@type", "rules", "shadow_rules", NULL };
    static const char *const n[] = { "shadow_rules_stat_prefix", "rules_stat_prefix",
                                     "track_per_rule_stats", NULL };
    if (proxy_envoy_want_type(f, tc, path, T_RBAC) < 0 || proxy_front_keys(f, tc, path, k, n) < 0) {
        return SC_ECONFIG;
    }
    if (f->rbac_seen) {
        /* Two RBAC filters must both allow; native ALLOW policies allow when any matches. */
        return proxy_front_refuse(f, tc, path, "one rbac filter only");
    }
    f->rbac_seen = true;
    char p[PROXY_FRONT_PATH];
    const struct sc_ynode *r = sc_ynode_get(tc, "rules");
    proxy_front_path(p, path, ".rules");
    if (r && rbac_rules(f, hcm, r, p, false) < 0) {
        return SC_ECONFIG;
    }
    r = sc_ynode_get(tc, "shadow_rules");
    proxy_front_path(p, path, ".shadow_rules");
    if (r) {
        proxy_front_note(f, r, path,
                         "shadow_rules: evaluated, logged and counted as dry_run policies named "
                         "shadow:<name>");
        if (rbac_rules(f, hcm, r, p, true) < 0) {
            return SC_ECONFIG;
        }
    }
    return f->err ? SC_ECONFIG : 0;
}

/* ---- jwt_authn ---- */

/* A DataSource (local_jwks) as jwks (inline) or jwks_file. */
static void local_jwks(struct proxy_front *f, struct sc_ynode *r, const struct sc_ynode *ds,
                       const char *path)
{
    static const char *const k[] = { "inline_string", "filename", NULL };
    if (proxy_front_keys(f, ds, path, k, NULL) == 0) {
        proxy_front_copy(f, r, "jwks", ds, "inline_string");
        proxy_front_copy(f, r, "jwks_file", ds, "filename");
    }
}

static void remote_jwks(struct proxy_front *f, struct sc_ynode *r, const struct sc_ynode *rj,
                        const char *path)
{
    static const char *const k[] = { "http_uri", NULL };
    static const char *const n[] = { "cache_duration", "async_fetch", "retry_policy", NULL };
    static const char *const hk[] = { "uri", NULL };
    static const char *const hn[] = { "cluster", "timeout", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".http_uri");
    if (proxy_front_keys(f, rj, path, k, n) == 0 &&
        proxy_front_keys(f, sc_ynode_get(rj, "http_uri"), p, hk, hn) == 0) {
        /* Fetched from the URI by the proxy's own client, refreshed every
         * jwks_refresh_interval and on an unknown kid. */
        proxy_front_copy(f, r, "jwks_uri", sc_ynode_get(rj, "http_uri"), "uri");
    }
}

static struct sc_ynode *renamed_list(struct proxy_front *f, const struct sc_ynode *l,
                                     const char *path, const char *const (*keys)[2])
{
    struct sc_ynode *out = proxy_front_seq(f, l);
    const char *handled[] = { keys[0][0], keys[1][0], NULL };
    for (size_t i = 0; i < sc_ynode_count(l) && !f->err; i++) {
        const struct sc_ynode *e = sc_ynode_at(l, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, "[%zu]", i);
        if (proxy_front_keys(f, e, p, handled, NULL) < 0) {
            return NULL;
        }
        struct sc_ynode *m = proxy_front_map(f, e);
        proxy_front_copy(f, m, keys[0][1], e, keys[0][0]);
        proxy_front_copy(f, m, keys[1][1], e, keys[1][0]);
        proxy_front_push(f, out, m, e);
    }
    return f->err ? NULL : out;
}

static int jwt_provider(struct proxy_front *f, const struct sc_ynode *pv, const char *path,
                        struct sc_ynode *rules)
{
    static const char *const k[] = { "issuer",
                                     "audiences",
                                     "remote_jwks",
                                     "local_jwks",
                                     "forward",
                                     "from_headers",
                                     "from_params",
                                     "from_cookies",
                                     "forward_payload_header",
                                     "claim_to_headers",
                                     "pad_forward_payload_header",
                                     "clock_skew_seconds",
                                     NULL };
    static const char *const n[] = { "payload_in_metadata",       "header_in_metadata",
                                     "failed_status_in_metadata", "normalize_payload_in_metadata",
                                     "jwt_cache_config",          NULL };
    if (proxy_front_keys(f, pv, path, k, n) < 0) {
        return SC_ECONFIG;
    }
    char p[PROXY_FRONT_PATH];
    struct sc_ynode *r = proxy_front_map(f, pv);
    static const char *const same[][2] = {
        { "issuer", "issuer" },
        { "audiences", "audiences" },
        { "forward", "forward_original_token" },
        { "from_params", "from_params" },
        { "from_cookies", "from_cookies" },
        { "forward_payload_header", "output_payload_to_header" },
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        proxy_front_copy(f, r, same[i][1], pv, same[i][0]);
    }
    proxy_front_path(p, path, ".local_jwks");
    if (sc_ynode_get(pv, "local_jwks")) {
        local_jwks(f, r, sc_ynode_get(pv, "local_jwks"), p);
    }
    proxy_front_path(p, path, ".remote_jwks");
    if (sc_ynode_get(pv, "remote_jwks")) {
        remote_jwks(f, r, sc_ynode_get(pv, "remote_jwks"), p);
    }
    static const char *const hk[2][2] = { { "name", "name" }, { "value_prefix", "prefix" } };
    static const char *const ck[2][2] = { { "header_name", "header" }, { "claim_name", "claim" } };
    const struct sc_ynode *l;
    if ((l = sc_ynode_get(pv, "from_headers")) != NULL) {
        proxy_front_path(p, path, ".from_headers");
        proxy_front_set(f, r, "from_headers", renamed_list(f, l, p, hk), l);
    }
    if ((l = sc_ynode_get(pv, "claim_to_headers")) != NULL) {
        proxy_front_path(p, path, ".claim_to_headers");
        proxy_front_set(f, r, "output_claim_to_headers", renamed_list(f, l, p, ck), l);
    }
    const char *pad = proxy_front_str(f, pv, "pad_forward_payload_header", path);
    if (pad && !is(pad, "false")) {
        return proxy_front_refuse(f, sc_ynode_get(pv, "pad_forward_payload_header"), path,
                                  "pad_forward_payload_header is not supported (base64url "
                                  "without padding)");
    }
    const struct sc_ynode *cs = sc_ynode_get(pv, "clock_skew_seconds");
    const char *skew = proxy_front_str(f, pv, "clock_skew_seconds", path);
    if (skew) {
        char d[64];
        snprintf(d, sizeof(d), "%.32ss", skew);
        const char *had = sc_ynode_str(sc_ynode_get(f->root, "jwt_clock_skew"));
        if (had && !is(had, d)) {
            return proxy_front_refuse(f, cs, path,
                                      "clock_skew_seconds differs from another provider's (one "
                                      "jwt_clock_skew here)");
        }
        if (!had) {
            proxy_front_put(f, f->root, "jwt_clock_skew", cs, d);
        }
    }
    proxy_front_push(f, rules, r, pv);
    return f->err ? SC_ECONFIG : 0;
}

/* A JwtRequirement: the providers one of which must verify a token (<names>), or <*optional>
 * when a missing token passes. */
static int requirement(struct proxy_front *f, const struct sc_ynode *rq, const char *path,
                       const struct sc_ynode **names, size_t *n, bool *optional, int depth)
{
    if (sc_ynode_kind(rq) != SC_Y_MAP || sc_ynode_count(rq) != 1 || depth > DEPTH_MAX) {
        return proxy_front_refuse(f, rq, path, "a requirement has exactly one field");
    }
    const char *k = sc_ynode_str(sc_ynode_key(rq, 0));
    const struct sc_ynode *v = sc_ynode_val(rq, 0);
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".%.64s", k ? k : "?");
    if (is(k, "provider_name")) {
        if (*n == ALTS_MAX) {
            return proxy_front_refuse(f, v, p, "too many providers");
        }
        names[(*n)++] = v;
        return 0;
    }
    if (is(k, "allow_missing")) {
        *optional = true;
        return 0;
    }
    if (is(k, "requires_any")) {
        static const char *const rk[] = { "requirements", NULL };
        const struct sc_ynode *l = sc_ynode_get(v, "requirements");
        if (proxy_front_keys(f, v, p, rk, NULL) < 0) {
            return SC_ECONFIG;
        }
        for (size_t i = 0; i < sc_ynode_count(l); i++) {
            char ep[PROXY_FRONT_PATH];
            proxy_front_path(ep, p, ".requirements[%zu]", i);
            if (requirement(f, sc_ynode_at(l, i), ep, names, n, optional, depth + 1) < 0) {
                return SC_ECONFIG;
            }
        }
        return 0;
    }
    if (is(k, "allow_missing_or_failed")) {
        return proxy_front_refuse(f, v, p,
                                  "allow_missing_or_failed is not supported (an invalid token "
                                  "is answered 401 here)");
    }
    return proxy_front_refuse(f, v, p, "%.64s is not supported", k ? k : "?");
}

/* The path pattern of a jwt_authn rule's RouteMatch. */
static int rule_path(struct proxy_front *f, const struct sc_ynode *m, const char *path, char *out)
{
    static const char *const k[] = { "prefix", "path", NULL };
    if (proxy_front_keys(f, m, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *pre = proxy_front_str(f, m, "prefix", path);
    const char *ex = proxy_front_str(f, m, "path", path);
    if (!pre == !ex) {
        return proxy_front_refuse(f, m, path, "needs one of prefix and path");
    }
    const char *s = pre ? pre : ex;
    if (strchr(s, '*') || strlen(s) + 2 > PATTERN_MAX) {
        return proxy_front_refuse(f, m, path, "unsupported path \"%.64s\"", s);
    }
    snprintf(out, PATTERN_MAX, "%s%s", s, pre ? "*" : "");
    return 0;
}

static int jwt_authn(struct proxy_front *f, const struct sc_ynode *tc, const char *path)
{
    static const char *const k[] = { "@type", "providers", "rules", NULL };
    static const char *const n[] = { "stat_prefix", NULL };
    if (proxy_envoy_want_type(f, tc, path, T_JWT) < 0 || proxy_front_keys(f, tc, path, k, n) < 0) {
        return SC_ECONFIG;
    }
    if (sc_ynode_get(f->root, "request_authentication")) {
        return proxy_front_refuse(f, tc, path, "one jwt_authn filter only");
    }
    const struct sc_ynode *pv = sc_ynode_get(tc, "providers");
    if (sc_ynode_kind(pv) != SC_Y_MAP || sc_ynode_count(pv) == 0) {
        return proxy_front_refuse(f, pv ? pv : tc, path, "providers must name providers");
    }
    struct sc_ynode *ras = proxy_front_list(f, "request_authentication", tc);
    struct sc_ynode *ra = proxy_front_map(f, tc), *jr = proxy_front_seq(f, pv);
    proxy_front_put(f, ra, "name", tc, "jwt_authn");
    char p[PROXY_FRONT_PATH];
    for (size_t i = 0; i < sc_ynode_count(pv) && !f->err; i++) {
        proxy_front_path(p, path, ".providers.%.128s",
                         sc_ynode_str(sc_ynode_key(pv, i)) ? sc_ynode_str(sc_ynode_key(pv, i))
                                                           : "?");
        if (jwt_provider(f, sc_ynode_val(pv, i), p, jr) < 0) {
            return SC_ECONFIG;
        }
    }
    proxy_front_set(f, ra, "jwt_rules", jr, pv);
    proxy_front_push(f, ras, ra, tc);
    /* Rules, first match wins: one that requires a token becomes a DENY policy for requests on
     * its paths (and on none of the earlier rules') without a request principal of one of its
     * providers' issuers. */
    const struct sc_ynode *rules = sc_ynode_get(tc, "rules");
    struct sc_ynode *earlier = proxy_front_seq(f, tc);
    for (size_t i = 0; i < sc_ynode_count(rules) && !f->err; i++) {
        const struct sc_ynode *r = sc_ynode_at(rules, i);
        static const char *const rk[] = { "match", "requires", NULL };
        char pat[PATTERN_MAX], mp[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".rules[%zu]", i);
        proxy_front_path(mp, p, ".match");
        if (proxy_front_keys(f, r, p, rk, NULL) < 0 ||
            rule_path(f, sc_ynode_get(r, "match"), mp, pat) < 0) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *names[ALTS_MAX];
        size_t nn = 0;
        bool optional = false;
        const struct sc_ynode *rq = sc_ynode_get(r, "requires");
        proxy_front_path(mp, p, ".requires");
        if (rq && requirement(f, rq, mp, names, &nn, &optional, 0) < 0) {
            return SC_ECONFIG;
        }
        if (rq && !optional) {
            struct sc_ynode *src = proxy_front_map(f, rq), *op = proxy_front_map(f, rq);
            struct sc_ynode *nrp = proxy_front_seq(f, rq), *paths = proxy_front_seq(f, rq);
            for (size_t j = 0; j < nn; j++) {
                const char *pn = sc_ynode_str(names[j]);
                const struct sc_ynode *prov = pn ? sc_ynode_get(pv, pn) : NULL;
                const char *iss = sc_ynode_str(sc_ynode_get(prov, "issuer"));
                if (!prov || !iss) {
                    return proxy_front_refuse(f, names[j], mp,
                                              prov ? "provider %.64s needs an issuer here"
                                                   : "no provider %.64s",
                                              pn ? pn : "?");
                }
                char ip[PATTERN_MAX];
                snprintf(ip, sizeof(ip), "%.900s/*", iss);
                proxy_front_push(f, nrp, sc_ytree_str(f->out, names[j], ip), names[j]);
            }
            proxy_front_set(f, src, "not_request_principals", nrp, rq);
            proxy_front_push(f, paths, sc_ytree_str(f->out, r, pat), r);
            proxy_front_set(f, op, "paths", paths, r);
            if (sc_ynode_count(earlier)) {
                proxy_front_set(f, op, "not_paths", sc_ytree_copy(f->out, earlier), r);
            }
            struct sc_ynode *pol = proxy_front_map(f, r), *nr = proxy_front_map(f, r);
            char nm[64];
            snprintf(nm, sizeof(nm), "jwt_authn:rule-%zu", i);
            proxy_front_put(f, pol, "name", r, nm);
            proxy_front_put(f, pol, "action", r, "DENY");
            struct sc_ynode *from = proxy_front_seq(f, r), *to = proxy_front_seq(f, r);
            struct sc_ynode *fe = proxy_front_map(f, r), *te = proxy_front_map(f, r);
            proxy_front_set(f, fe, "source", src, rq);
            proxy_front_set(f, te, "operation", op, r);
            proxy_front_push(f, from, fe, rq);
            proxy_front_push(f, to, te, r);
            proxy_front_set(f, nr, "from", from, rq);
            proxy_front_set(f, nr, "to", to, r);
            struct sc_ynode *rl = proxy_front_seq(f, r);
            proxy_front_push(f, rl, nr, r);
            proxy_front_set(f, pol, "rules", rl, r);
            proxy_front_push(f, proxy_front_list(f, "authorization", r), pol, r);
        }
        proxy_front_push(f, earlier, sc_ytree_str(f->out, r, pat), r);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* ---- ext_authz ---- */

/* The one endpoint of bootstrap cluster <name> as <host> and <port>. */
static int authorizer(struct proxy_front *f, const struct sc_ynode *at, const char *name,
                      const char *path, const struct sc_ynode **host, const struct sc_ynode **port)
{
    const struct sc_ynode *cs =
        sc_ynode_get(sc_ynode_get(f->envoy, "static_resources"), "clusters");
    for (size_t i = 0; name && i < sc_ynode_count(cs); i++) {
        const struct sc_ynode *c = sc_ynode_at(cs, i);
        if (!is(sc_ynode_str(sc_ynode_get(c, "name")), name)) {
            continue;
        }
        if (sc_ynode_get(c, "transport_socket")) {
            return proxy_front_refuse(
                f, at, path, "cluster %.64s: an authorizer over TLS is not supported", name);
        }
        const struct sc_ynode *eps = sc_ynode_get(sc_ynode_get(c, "load_assignment"), "endpoints");
        const struct sc_ynode *lbs = sc_ynode_get(sc_ynode_at(eps, 0), "lb_endpoints");
        const struct sc_ynode *sa =
            sc_ynode_get(sc_ynode_get(sc_ynode_get(sc_ynode_at(lbs, 0), "endpoint"), "address"),
                         "socket_address");
        *host = sc_ynode_get(sa, "address");
        *port = sc_ynode_get(sa, "port_value");
        if (sc_ynode_count(eps) != 1 || sc_ynode_count(lbs) != 1 || !*host || !*port) {
            return proxy_front_refuse(f, at, path,
                                      "cluster %.64s: the authorizer's cluster needs exactly one "
                                      "endpoint with an address and port_value",
                                      name);
        }
        return 0;
    }
    return proxy_front_refuse(f, at, path, "no cluster %.64s", name ? name : "?");
}

/* A ListStringMatcher of header names (exact only) as a list. */
static struct sc_ynode *header_names(struct proxy_front *f, const struct sc_ynode *lsm,
                                     const char *path)
{
    static const char *const k[] = { "patterns", NULL };
    if (proxy_front_keys(f, lsm, path, k, NULL) < 0) {
        return NULL;
    }
    const struct sc_ynode *pats = sc_ynode_get(lsm, "patterns");
    struct sc_ynode *out = proxy_front_seq(f, lsm);
    for (size_t i = 0; i < sc_ynode_count(pats) && !f->err; i++) {
        const struct sc_ynode *pm = sc_ynode_at(pats, i);
        static const char *const pk[] = { "exact", "ignore_case", NULL };
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".patterns[%zu]", i);
        if (proxy_front_keys(f, pm, p, pk, NULL) < 0) {
            return NULL;
        }
        /* Header names compare without case: ignore_case changes nothing. */
        const char *s = proxy_front_str(f, pm, "exact", p);
        if (!s) {
            return proxy_front_refuse(f, pm, p, "needs exact (header names)"), NULL;
        }
        proxy_front_push(f, out, sc_ytree_str(f->out, pm, s), pm);
    }
    return f->err ? NULL : out;
}

/* envoy.filters.http.ext_authz with an http_service: an extension provider "ext_authz" and a
 * CUSTOM policy for every request. */
static int ext_authz(struct proxy_front *f, const struct sc_ynode *tc, const char *path)
{
    static const char *const k[] = { "@type", "http_service", "failure_mode_allow",
                                     "status_on_error", NULL };
    static const char *const n[] = { "transport_api_version", "stat_prefix", "clear_route_cache",
                                     NULL };
    if (proxy_envoy_want_type(f, tc, path, T_EXTAUTHZ) < 0 ||
        proxy_front_keys(f, tc, path, k, n) < 0) {
        return SC_ECONFIG;
    }
    if (sc_ynode_get(f->root, "extension_providers")) {
        return proxy_front_refuse(f, tc, path, "one ext_authz filter only");
    }
    const struct sc_ynode *hs = sc_ynode_get(tc, "http_service");
    char p[PROXY_FRONT_PATH], q[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".http_service");
    static const char *const hk[] = { "server_uri", "path_prefix", "authorization_request",
                                      "authorization_response", NULL };
    if (!hs) {
        return proxy_front_refuse(f, tc, path,
                                  "http_service is required (grpc_service is not "
                                  "supported)");
    }
    if (proxy_front_keys(f, hs, p, hk, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *su = sc_ynode_get(hs, "server_uri");
    static const char *const sk[] = { "uri", "cluster", "timeout", NULL };
    proxy_front_path(q, p, ".server_uri");
    if (!su) {
        return proxy_front_refuse(f, hs, p, "server_uri is required");
    }
    if (proxy_front_keys(f, su, q, sk, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *host = NULL, *port = NULL;
    if (authorizer(f, sc_ynode_get(su, "cluster") ? sc_ynode_get(su, "cluster") : su,
                   proxy_front_str(f, su, "cluster", q), q, &host, &port) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *ep = proxy_front_map(f, hs);
    proxy_front_put(f, ep, "name", hs, "ext_authz");
    proxy_front_set(f, ep, "service", sc_ytree_copy(f->out, host), host);
    proxy_front_set(f, ep, "port", sc_ytree_copy(f->out, port), port);
    proxy_front_copy(f, ep, "path_prefix", hs, "path_prefix");
    proxy_front_put_duration(f, ep, "timeout", su, "timeout", q, "200ms"); /* Envoy's default */
    proxy_front_copy(f, ep, "fail_open", tc, "failure_mode_allow");
    const struct sc_ynode *se = sc_ynode_get(tc, "status_on_error");
    static const char *const ek[] = { "code", NULL };
    if (se && proxy_front_keys(f, se, path, ek, NULL) == 0) {
        proxy_front_copy(f, ep, "status_on_error", se, "code");
    }
    const struct sc_ynode *rq = sc_ynode_get(hs, "authorization_request");
    static const char *const rk[] = { "allowed_headers", "headers_to_add", NULL };
    proxy_front_path(q, p, ".authorization_request");
    if (rq && proxy_front_keys(f, rq, q, rk, NULL) == 0) {
        const struct sc_ynode *ah = sc_ynode_get(rq, "allowed_headers");
        if (ah) {
            proxy_front_set(f, ep, "include_request_headers_in_check", header_names(f, ah, q), ah);
        }
        const struct sc_ynode *ha = sc_ynode_get(rq, "headers_to_add");
        struct sc_ynode *add = ha ? proxy_front_map(f, ha) : NULL;
        for (size_t i = 0; add && i < sc_ynode_count(ha) && !f->err; i++) {
            const struct sc_ynode *h = sc_ynode_at(ha, i);
            static const char *const kv[] = { "key", "value", NULL };
            const char *key = proxy_front_str(f, h, "key", q);
            if (proxy_front_keys(f, h, q, kv, NULL) < 0 || !key) {
                return proxy_front_refuse(f, h, q, "headers_to_add: key and value");
            }
            proxy_front_copy(f, add, key, h, "value");
        }
        if (add) {
            proxy_front_set(f, ep, "include_additional_headers_in_check", add, ha);
        }
    }
    const struct sc_ynode *rs = sc_ynode_get(hs, "authorization_response");
    static const char *const ak[] = { "allowed_upstream_headers", "allowed_client_headers", NULL };
    proxy_front_path(q, p, ".authorization_response");
    if (rs && proxy_front_keys(f, rs, q, ak, NULL) == 0) {
        const struct sc_ynode *up = sc_ynode_get(rs, "allowed_upstream_headers");
        const struct sc_ynode *cl = sc_ynode_get(rs, "allowed_client_headers");
        if (up) {
            proxy_front_set(f, ep, "headers_to_upstream_on_allow", header_names(f, up, q), up);
        }
        if (cl) {
            proxy_front_set(f, ep, "headers_to_downstream_on_deny", header_names(f, cl, q), cl);
        }
    }
    proxy_front_push(f, proxy_front_list(f, "extension_providers", tc), ep, tc);
    /* Every request is checked: a CUSTOM policy with one rule that matches everything. */
    struct sc_ynode *pol = proxy_front_map(f, tc), *rules = proxy_front_seq(f, tc);
    proxy_front_put(f, pol, "name", tc, "ext_authz");
    proxy_front_put(f, pol, "action", tc, "CUSTOM");
    proxy_front_put(f, pol, "provider", tc, "ext_authz");
    proxy_front_push(f, rules, proxy_front_map(f, tc), tc);
    proxy_front_set(f, pol, "rules", rules, tc);
    proxy_front_push(f, proxy_front_list(f, "authorization", tc), pol, tc);
    return f->err ? SC_ECONFIG : 0;
}

/* ---- entry points ---- */

bool proxy_envoy_authz_filter_is(const char *type)
{
    return is(type, T_RBAC) || is(type, T_JWT) || is(type, T_EXTAUTHZ);
}

int proxy_envoy_authz_filter(struct proxy_front *f, const struct sc_ynode *hcm,
                             const struct sc_ynode *l, const struct sc_ynode *tc, const char *path)
{
    const char *dir = sc_ynode_str(sc_ynode_get(l, "direction"));
    if (is(dir, "outbound")) {
        return proxy_front_refuse(f, tc, path,
                                  "authorization filters apply to inbound listeners only here");
    }
    if (f->authz_at && f->authz_listener != l) {
        return proxy_front_refuse(f, tc, path,
                                  "authorization filters on more than one listener are not "
                                  "supported (policies apply to every inbound listener)");
    }
    f->authz_at = tc;
    f->authz_listener = l;
    const char *t = sc_ynode_str(sc_ynode_get(tc, "@type"));
    return is(t, T_RBAC)  ? rbac(f, hcm, tc, path)
           : is(t, T_JWT) ? jwt_authn(f, tc, path)
                          : ext_authz(f, tc, path);
}

int proxy_envoy_authz_listeners(struct proxy_front *f, size_t nlisteners)
{
    if (f->authz_at && nlisteners > 1) {
        return proxy_front_refuse(f, f->authz_at, NULL,
                                  "authorization filters in a bootstrap of more than one listener "
                                  "are not supported (policies apply to every inbound listener)");
    }
    return 0;
}

int proxy_envoy_paths(struct proxy_front *f, const struct sc_ynode *hcm, const char *path)
{
    const struct sc_ynode *np = sc_ynode_get(hcm, "normalize_path");
    const struct sc_ynode *ms = sc_ynode_get(hcm, "merge_slashes");
    const struct sc_ynode *es = sc_ynode_get(hcm, "path_with_escaped_slashes_action");
    if (!np && !ms && !es) {
        return 0; /* the proxy's own defaults: decode_and_merge_slashes, reject */
    }
    const struct sc_ynode *at = np ? np : ms ? ms : es;
    bool norm = is(proxy_front_str(f, hcm, "normalize_path", path), "true");
    bool merge = is(proxy_front_str(f, hcm, "merge_slashes", path), "true");
    if (merge && !norm) {
        return proxy_front_refuse(f, ms, path,
                                  "merge_slashes without normalize_path is not supported (slashes "
                                  "are merged after dot segments)");
    }
    /* Envoy's default, IMPLEMENTATION_SPECIFIC_DEFAULT, keeps them */
    static const struct proxy_front_enum actions[] = {
        { "IMPLEMENTATION_SPECIFIC_DEFAULT", "keep" },
        { "KEEP_UNCHANGED", "keep" },
        { "REJECT_REQUEST", "reject" },
        { "UNESCAPE_AND_FORWARD", "decode" },
        { NULL, NULL },
    };
    const struct proxy_front_enum *act =
        proxy_front_enum(f, hcm, "path_with_escaped_slashes_action", path, NULL, actions);
    if (f->err) {
        return SC_ECONFIG;
    }
    const char *esc = act ? act->ours : "keep";
    const char *level = merge ? "merge_slashes" : norm ? "base" : "none";
    if (is(esc, "decode")) {
        level = merge ? "decode_and_merge_slashes" : level;
    }
    const char *had = sc_ynode_str(sc_ynode_get(f->root, "path_normalization"));
    const char *had_esc = sc_ynode_str(sc_ynode_get(f->root, "escaped_slashes"));
    if ((had && !is(had, level)) || (had_esc && !is(had_esc, esc))) {
        return proxy_front_refuse(f, at, path,
                                  "path options differ from another connection manager's (one "
                                  "path_normalization here)");
    }
    if (!had) {
        proxy_front_put(f, f->root, "path_normalization", at, level);
        proxy_front_put(f, f->root, "escaped_slashes", es ? es : at, esc);
    }
    return f->err ? SC_ECONFIG : 0;
}
