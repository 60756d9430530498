// SPDX-License-Identifier: Apache-2.0
// CORS policies of other people's configurations as the routes' native `cors` block
// (proxy_cors.h): Envoy's envoy.filters.http.cors filter with the CorsPolicy of a virtual host and
// of a route (typed_per_filter_config, else the deprecated `cors` fields), and Istio's
// VirtualService http[].corsPolicy. Envoy reads a policy field by field, the route's first and
// the virtual host's for what the route leaves unset, with filter_enabled and shadow_enabled from
// the most specific policy alone; the translation writes that merge out as the route's block.
// Invariant: every field is translated, noted (runtime keys, which have no runtime here) or
// refused with its path.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "roles/proxy/proxy_envoy.h"

#define T_CORS T_PREFIX "envoy.extensions.filters.http.cors.v3.Cors"
#define T_CORS_POLICY T_PREFIX "envoy.extensions.filters.http.cors.v3.CorsPolicy"
#define CORS_NAME "envoy.filters.http.cors"

/* ---- Envoy ---- */

bool proxy_envoy_cors_filter_is(const char *t, const char *name)
{
    return t ? is(t, T_CORS) : is(name, CORS_NAME);
}

int proxy_envoy_cors_filter(struct proxy_front *f, const struct sc_ynode *tc, const char *path)
{
    static const char *const k[] = { "@type", NULL }; /* Cors has no fields */
    return tc ? proxy_front_keys(f, tc, path, k, NULL) : 0;
}

static const char *const policy_keys[] = { "@type",
                                           "allow_origin_string_match",
                                           "allow_methods",
                                           "allow_headers",
                                           "expose_headers",
                                           "max_age",
                                           "allow_credentials",
                                           "allow_private_network_access",
                                           "forward_not_matching_preflights",
                                           "filter_enabled",
                                           "shadow_enabled",
                                           NULL };

/* A RuntimeFractionalPercent <rf> (<key> of a policy at <path>) checked: its runtime_key is noted
 * (there is no runtime here: the default value applies). */
static void check_percent(struct proxy_front *f, const struct sc_ynode *rf, const char *key,
                          const char *path)
{
    static const char *const k[] = { "default_value", NULL };
    static const char *const kn[] = { "runtime_key", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".%s", key);
    double pc = 0;
    if (rf && proxy_front_keys(f, rf, p, k, kn) == 0 && sc_ynode_get(rf, "default_value")) {
        proxy_envoy_fraction(f, sc_ynode_get(rf, "default_value"), p, &pc);
    }
}

/* The CorsPolicy of level <n> (a virtual host or a route) and its path into <p>: its
 * typed_per_filter_config entry for the cors filter (every other entry refused); with <dep>, the
 * deprecated field <dep> of <depn> instead when the level has no typed one. NULL: none, or
 * refused (f->err). */
static const struct sc_ynode *level_policy(struct proxy_front *f, const struct sc_ynode *n,
                                           const struct sc_ynode *depn, const char *dep,
                                           const char *path, const char *deppath, char *p)
{
    const struct sc_ynode *tp = sc_ynode_get(n, "typed_per_filter_config");
    const struct sc_ynode *pol = NULL;
    if (tp && sc_ynode_kind(tp) != SC_Y_MAP) {
        proxy_front_refuse(f, tp, path, "typed_per_filter_config must be a mapping");
        return NULL;
    }
    for (size_t i = 0; i < sc_ynode_count(tp) && !f->err; i++) {
        const char *k = sc_ynode_str(sc_ynode_key(tp, i));
        char kp[PROXY_FRONT_PATH];
        proxy_front_path(kp, path, ".typed_per_filter_config.%.128s", k ? k : "?");
        if (!is(k, CORS_NAME)) {
            proxy_front_refuse(f, sc_ynode_val(tp, i), kp,
                               "per-route configuration of %.128s is not supported",
                               k ? k : "this filter");
            return NULL;
        }
        if (proxy_envoy_want_type(f, sc_ynode_val(tp, i), kp, T_CORS_POLICY) < 0) {
            return NULL;
        }
        pol = sc_ynode_val(tp, i);
        snprintf(p, PROXY_FRONT_PATH, "%s", kp);
    }
    if (!pol && dep && sc_ynode_get(depn, dep)) {
        pol = sc_ynode_get(depn, dep);
        proxy_front_path(p, deppath, ".%s", dep);
    }
    if (pol && proxy_front_keys(f, pol, p, policy_keys, NULL) < 0) {
        return NULL;
    }
    check_percent(f, sc_ynode_get(pol, "filter_enabled"), "filter_enabled", p);
    check_percent(f, sc_ynode_get(pol, "shadow_enabled"), "shadow_enabled", p);
    return f->err ? NULL : pol;
}

/* The same as a percentage put as <key> of <out> (a missing default_value is 0%, as in Envoy). */
static void runtime_percent(struct proxy_front *f, struct sc_ynode *out, const char *key,
                            const struct sc_ynode *rf, const char *path)
{
    double pc = 0;
    const struct sc_ynode *dv = sc_ynode_get(rf, "default_value");
    if (dv && proxy_envoy_fraction(f, dv, path, &pc) < 0) {
        return;
    }
    char s[32];
    snprintf(s, sizeof(s), "%.6g", pc);
    proxy_front_put(f, out, key, rf, s);
}

/* allow_origin_string_match (StringMatchers) <l> as allow_origins. */
static struct sc_ynode *envoy_origins(struct proxy_front *f, const struct sc_ynode *l,
                                      const char *path)
{
    struct sc_ynode *out = proxy_front_seq(f, l);
    for (size_t i = 0; i < sc_ynode_count(l) && !f->err; i++) {
        const struct sc_ynode *m = sc_ynode_at(l, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".allow_origin_string_match[%zu]", i);
        static const char *const k[] = { "exact",      "prefix",      "suffix", "contains",
                                         "safe_regex", "ignore_case", NULL };
        if (proxy_front_keys(f, m, p, k, NULL) < 0) {
            return NULL;
        }
        struct sc_ynode *e = proxy_front_map(f, m);
        proxy_front_copy(f, e, "exact", m, "exact");
        proxy_front_copy(f, e, "prefix", m, "prefix");
        proxy_front_copy(f, e, "suffix", m, "suffix");
        proxy_front_copy(f, e, "contains", m, "contains");
        proxy_front_copy(f, e, "ignore_case", m, "ignore_case");
        const struct sc_ynode *re = sc_ynode_get(m, "safe_regex");
        static const char *const rk[] = { "regex", NULL };
        static const char *const rn[] = { "google_re2", NULL };
        if (re && proxy_front_keys(f, re, p, rk, rn) == 0) {
            proxy_front_copy(f, e, "regex", re, "regex");
            proxy_front_regex(f, re, p, sc_ynode_str(sc_ynode_get(re, "regex")), NULL);
            if (is(proxy_front_str(f, m, "ignore_case", p), "true")) {
                proxy_front_refuse(f, sc_ynode_get(m, "ignore_case"), p,
                                   "ignore_case does not apply to safe_regex");
            }
        }
        if (sc_ynode_count(e) - !!sc_ynode_get(e, "ignore_case") != 1 && !f->err) {
            proxy_front_refuse(f, m, p, "one of exact, prefix, suffix, contains, safe_regex");
        }
        proxy_front_push(f, out, e, m);
    }
    return f->err ? NULL : out;
}

void proxy_envoy_cors_vhost(struct proxy_front *f, const struct sc_ynode *vh, bool on,
                            const char *path)
{
    char p[PROXY_FRONT_PATH];
    const struct sc_ynode *pol = level_policy(f, vh, vh, "cors", path, path, p);
    if (pol && !on) {
        proxy_front_note(f, pol, p,
                         "this CORS policy has no effect: the connection manager has no "
                         "envoy.filters.http.cors filter (as in Envoy)");
    }
}

void proxy_envoy_cors_route(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *r,
                            const struct sc_ynode *vh, bool on, const char *rpath,
                            const char *vpath)
{
    char rp[PROXY_FRONT_PATH], vp[PROXY_FRONT_PATH], ap[PROXY_FRONT_PATH];
    proxy_front_path(ap, rpath, ".route");
    /* Typed policies at either level hide the deprecated fields of both (Envoy's order). */
    bool typed =
        sc_ynode_get(r, "typed_per_filter_config") || sc_ynode_get(vh, "typed_per_filter_config");
    const struct sc_ynode *lv[2];
    const char *lp[2] = { rp, vp };
    lv[0] = level_policy(f, r, sc_ynode_get(r, "route"), typed ? NULL : "cors", rpath, ap, rp);
    /* the virtual host's was checked by proxy_envoy_cors_vhost */
    const struct sc_ynode *vt =
        sc_ynode_get(sc_ynode_get(vh, "typed_per_filter_config"), CORS_NAME);
    lv[1] = vt ? vt : typed ? NULL : sc_ynode_get(vh, "cors");
    proxy_front_path(vp, vpath, vt ? ".typed_per_filter_config." CORS_NAME : ".cors");
    if (f->err || (!lv[0] && !lv[1])) {
        return;
    }
    if (!on) {
        if (lv[0]) {
            proxy_front_note(f, lv[0], rp,
                             "this CORS policy has no effect: the connection manager has no "
                             "envoy.filters.http.cors filter (as in Envoy)");
        }
        return;
    }
    struct sc_ynode *o = proxy_front_map(f, lv[0] ? lv[0] : lv[1]);
    static const char *const strs[] = { "allow_methods",
                                        "allow_headers",
                                        "expose_headers",
                                        "allow_credentials",
                                        "allow_private_network_access",
                                        "forward_not_matching_preflights" };
    for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
        for (int i = 0; i < 2; i++) {
            const char *v = proxy_front_str(f, lv[i], strs[k], lp[i]);
            if (v && *v) {
                proxy_front_copy(f, o, strs[k], lv[i], strs[k]);
                break;
            }
        }
    }
    for (int i = 0; i < 2 && !f->err; i++) {
        const char *ma = proxy_front_str(f, lv[i], "max_age", lp[i]);
        if (ma && *ma) {
            char *end = NULL;
            unsigned long long s = strtoull(ma, &end, 10);
            if (*end || ma[0] < '0' || ma[0] > '9') {
                proxy_front_refuse(f, sc_ynode_get(lv[i], "max_age"), lp[i],
                                   "max_age must be a number of seconds");
                return;
            }
            char d[32];
            snprintf(d, sizeof(d), "%llus", s);
            proxy_front_put(f, o, "max_age", sc_ynode_get(lv[i], "max_age"), d);
            break;
        }
    }
    for (int i = 0; i < 2 && !f->err; i++) {
        const struct sc_ynode *l = sc_ynode_get(lv[i], "allow_origin_string_match");
        if (sc_ynode_count(l)) {
            proxy_front_set(f, o, "allow_origins", envoy_origins(f, l, lp[i]), l);
            break;
        }
    }
    /* Enabled and shadow come from the most specific policy alone (Envoy reads them so). */
    int top = lv[0] ? 0 : 1;
    const struct sc_ynode *fe = sc_ynode_get(lv[top], "filter_enabled");
    const struct sc_ynode *se = sc_ynode_get(lv[top], "shadow_enabled");
    if (fe) {
        runtime_percent(f, o, "filter_enabled", fe, lp[top]);
    }
    if (se) {
        runtime_percent(f, o, "shadow_enabled", se, lp[top]);
    }
    proxy_front_set(f, rt, "cors", o, lv[top]);
}

/* ---- Istio ---- */

int proxy_istio_cors(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *cp,
                     const char *hpath)
{
    char path[PROXY_FRONT_PATH];
    proxy_front_path(path, hpath, ".corsPolicy");
    static const char *const k[] = { "allowOrigins",     "allowOrigin",         "allowMethods",
                                     "allowHeaders",     "exposeHeaders",       "maxAge",
                                     "allowCredentials", "unmatchedPreflights", NULL };
    if (proxy_front_keys(f, cp, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *o = proxy_front_map(f, cp);
    struct sc_ynode *ol = proxy_front_seq(f, cp);
    const struct sc_ynode *aos = sc_ynode_get(cp, "allowOrigins");
    const struct sc_ynode *ao = sc_ynode_get(cp, "allowOrigin");
    for (size_t i = 0; i < sc_ynode_count(aos) && !f->err; i++) {
        /* StringMatch: exact, prefix or regex (RE2, the whole origin) */
        const struct sc_ynode *m = sc_ynode_at(aos, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".allowOrigins[%zu]", i);
        static const char *const mk[] = { "exact", "prefix", "regex", NULL };
        if (proxy_front_keys(f, m, p, mk, NULL) < 0) {
            return SC_ECONFIG;
        }
        if (sc_ynode_count(m) != 1) {
            return proxy_front_refuse(f, m, p, "one of exact, prefix and regex");
        }
        if (sc_ynode_get(m, "regex")) {
            proxy_front_regex(f, sc_ynode_get(m, "regex"), p,
                              sc_ynode_str(sc_ynode_get(m, "regex")), NULL);
        }
        proxy_front_push(f, ol, sc_ytree_copy(f->out, m), m);
    }
    for (size_t i = 0; !aos && i < sc_ynode_count(ao) && !f->err; i++) {
        /* the deprecated plain strings: exact origins (Istio's translation) */
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".allowOrigin[%zu]", i);
        int rc = 0;
        const char *s = proxy_front_scalar(f, sc_ynode_at(ao, i), p, &rc);
        if (!s) {
            return rc < 0 ? SC_ECONFIG : proxy_front_refuse(f, sc_ynode_at(ao, i), p, "not set");
        }
        struct sc_ynode *e = proxy_front_map(f, sc_ynode_at(ao, i));
        proxy_front_put(f, e, "exact", sc_ynode_at(ao, i), s);
        proxy_front_push(f, ol, e, sc_ynode_at(ao, i));
    }
    if (sc_ynode_count(ol)) {
        proxy_front_set(f, o, "allow_origins", ol, aos ? aos : ao);
    }
    static const char *const lists[][2] = { { "allowMethods", "allow_methods" },
                                            { "allowHeaders", "allow_headers" },
                                            { "exposeHeaders", "expose_headers" } };
    for (size_t j = 0; j < 3 && !f->err; j++) {
        const struct sc_ynode *l = sc_ynode_get(cp, lists[j][0]);
        char joined[4096] = "";
        size_t len = 0;
        for (size_t i = 0; i < sc_ynode_count(l); i++) {
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, path, ".%s[%zu]", lists[j][0], i);
            int rc = 0;
            const char *s = proxy_front_scalar(f, sc_ynode_at(l, i), p, &rc);
            if (!s) {
                return rc < 0 ? SC_ECONFIG : proxy_front_refuse(f, sc_ynode_at(l, i), p, "not set");
            }
            int n = snprintf(joined + len, sizeof(joined) - len, "%s%s", i ? "," : "", s);
            if (n < 0 || (size_t)n >= sizeof(joined) - len) {
                return proxy_front_refuse(f, l, p, "longer than 4 KiB joined");
            }
            len += (size_t)n;
        }
        if (len) {
            proxy_front_put(f, o, lists[j][1], l, joined);
        }
    }
    proxy_front_put_duration(f, o, "max_age", cp, "maxAge", path, NULL);
    proxy_front_copy(f, o, "allow_credentials", cp, "allowCredentials");
    const char *up = proxy_front_str(f, cp, "unmatchedPreflights", path);
    if (up && !is(up, "UNSPECIFIED") && !is(up, "FORWARD") && !is(up, "IGNORE")) {
        return proxy_front_refuse(f, sc_ynode_get(cp, "unmatchedPreflights"), path,
                                  "unmatchedPreflights %.32s is not one of FORWARD, IGNORE", up);
    }
    if (is(up, "IGNORE")) {
        proxy_front_put(f, o, "forward_not_matching_preflights",
                        sc_ynode_get(cp, "unmatchedPreflights"), "false");
    }
    proxy_front_set(f, rt, "cors", o, cp);
    return f->err ? SC_ECONFIG : 0;
}
