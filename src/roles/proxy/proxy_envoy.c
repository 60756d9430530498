// SPDX-License-Identifier: Apache-2.0
// An Envoy v3 bootstrap as proxy configuration (see proxy_front.h): static listeners with one
// filter chain holding an http_connection_manager with an inline route_config, static clusters
// (STATIC, STRICT_DNS, LOGICAL_DNS, ORIGINAL_DST) with their policies and TLS, and the admin
// address. Envoy's defaults where they differ from ours are written out (a 15s route timeout, no
// retries without a retry_policy, a 5s connect timeout, outlier detection every 10s ejecting at
// most 10%, no access log unless one is configured). Invariant: every field is either translated,
// noted as having no effect (statistics, runtime, identification), or refused with its path.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/str.h"
#include "core/value.h"
#include "roles/proxy/proxy_envoy.h"

#define T_ROUTER T_PREFIX "envoy.extensions.filters.http.router.v3.Router"
#define T_FAULT T_PREFIX "envoy.extensions.filters.http.fault.v3.HTTPFault"
#define T_LOCAL_RL T_PREFIX "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
#define T_GRPC_WEB T_PREFIX "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"

struct env {
    struct proxy_front *f;
    bool access_log; /* some connection manager logs */
};

/* ---- helpers ---- */

int proxy_envoy_want_type(struct proxy_front *f, const struct sc_ynode *tc, const char *path,
                          const char *want)
{
    const struct sc_ynode *t = sc_ynode_get(tc, "@type");
    const char *s = sc_ynode_str(t);
    if (!s) {
        return proxy_front_refuse(f, tc ? tc : t, path, "typed_config needs an @type");
    }
    if (strcmp(s, want) != 0) {
        return proxy_front_refuse(f, t, path, "@type %.200s is not supported here (expected %s)", s,
                                  want);
    }
    return 0;
}

/* The Envoy name of a typed extension: its name, else its @type. */
static const char *ext_name(const struct sc_ynode *ext)
{
    const char *t = sc_ynode_str(sc_ynode_get(sc_ynode_get(ext, "typed_config"), "@type"));
    const char *n = sc_ynode_str(sc_ynode_get(ext, "name"));
    return n ? n : t ? t : "?";
}

/* ---- routes ---- */

/* Header mutations of one level (route, virtual host or route_config) into <ops> {request,
 * response}{set, add, remove}; the most specific level comes first and wins a name. */
static void header_ops(struct proxy_front *f, struct sc_ynode *ops, const struct sc_ynode *src,
                       const char *path)
{
    for (int resp = 0; resp < 2 && !f->err; resp++) {
        const struct sc_ynode *add =
            sc_ynode_get(src, resp ? "response_headers_to_add" : "request_headers_to_add");
        const struct sc_ynode *rm =
            sc_ynode_get(src, resp ? "response_headers_to_remove" : "request_headers_to_remove");
        if (!add && !rm) {
            continue;
        }
        const char *side = resp ? "response" : "request";
        struct sc_ynode *o = sc_ynode_get_mut(ops, side);
        if (!o) {
            o = proxy_front_map(f, add ? add : rm);
            proxy_front_set(f, ops, side, o, add ? add : rm);
        }
        for (size_t i = 0; i < sc_ynode_count(add) && !f->err; i++) {
            const struct sc_ynode *h = sc_ynode_at(add, i);
            static const char *const hk[] = { "header", "append", "append_action", NULL };
            static const char *const hn[] = { "keep_empty_value", NULL };
            static const char *const kv[] = { "key", "value", NULL };
            if (proxy_front_keys(f, h, path, hk, hn) < 0 ||
                proxy_front_keys(f, sc_ynode_get(h, "header"), path, kv, NULL) < 0) {
                return;
            }
            const char *app = proxy_front_str(f, h, "append", path);
            static const struct proxy_front_enum actions[] = { { "APPEND_IF_EXISTS_OR_ADD", NULL },
                                                               { "OVERWRITE_IF_EXISTS_OR_ADD",
                                                                 "set" },
                                                               { NULL, NULL } };
            const struct proxy_front_enum *act =
                proxy_front_enum(f, h, "append_action", path, NULL, actions);
            if (f->err) {
                return;
            }
            bool set = is(app, "false") || (act && act->ours);
            const struct sc_ynode *hd = sc_ynode_get(h, "header");
            const char *k = proxy_front_str(f, hd, "key", path);
            if (!k) {
                proxy_front_refuse(f, h, path, "header.key is required");
                return;
            }
            struct sc_ynode *m = sc_ynode_get_mut(o, set ? "set" : "add");
            if (!m) {
                m = proxy_front_map(f, h);
                proxy_front_set(f, o, set ? "set" : "add", m, h);
            }
            if (!sc_ynode_get(m, k)) {
                const struct sc_ynode *v = sc_ynode_get(hd, "value");
                proxy_front_set(f, m, k,
                                v ? sc_ytree_copy(f->out, v) : sc_ytree_str(f->out, hd, ""), hd);
            }
        }
        if (rm) {
            struct sc_ynode *l = sc_ynode_get_mut(o, "remove");
            if (!l) {
                l = proxy_front_seq(f, rm);
                proxy_front_set(f, o, "remove", l, rm);
            }
            for (size_t i = 0; i < sc_ynode_count(rm); i++) {
                proxy_front_push(f, l, sc_ytree_copy(f->out, sc_ynode_at(rm, i)), rm);
            }
        }
    }
}

static void retry_policy(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *rp,
                         const char *path)
{
    static const char *const rk[] = {
        "retry_on", "num_retries", "per_try_timeout", "retry_back_off", "retriable_status_codes",
        NULL
    };
    static const char *const rn[] = { "host_selection_retry_max_attempts", NULL };
    struct sc_ynode *o = proxy_front_map(f, rp ? rp : rt);
    if (!rp) {
        proxy_front_put(f, o, "num_retries", rt, "0"); /* Envoy retries only when told */
        proxy_front_set(f, rt, "retry_policy", o, rt);
        return;
    }
    if (proxy_front_keys(f, rp, path, rk, rn) < 0) {
        return;
    }
    proxy_front_copy(f, o, "num_retries", rp, "num_retries");
    if (!sc_ynode_get(rp, "num_retries")) {
        proxy_front_put(f, o, "num_retries", rp, "1");
    }
    proxy_front_put_duration(f, o, "per_try_timeout", rp, "per_try_timeout", path, NULL);
    const struct sc_ynode *bo = sc_ynode_get(rp, "retry_back_off");
    static const char *const bk[] = { "base_interval", "max_interval", NULL };
    if (bo && proxy_front_keys(f, bo, path, bk, NULL) == 0) {
        proxy_front_put_duration(f, o, "base_interval", bo, "base_interval", path, NULL);
        proxy_front_put_duration(f, o, "max_interval", bo, "max_interval", path, NULL);
    }
    const struct sc_ynode *codes = sc_ynode_get(rp, "retriable_status_codes");
    if (codes) {
        proxy_front_copy(f, o, "retriable_status_codes", rp, "retriable_status_codes");
    }
    const struct sc_ynode *on = sc_ynode_get(rp, "retry_on");
    const char *s = proxy_front_str(f, rp, "retry_on", path);
    struct sc_ynode *l = proxy_front_seq(f, on ? on : rp);
    while (s && *s && !f->err) {
        size_t n = strcspn(s, ",");
        char part[64];
        snprintf(part, sizeof(part), "%.*s", (int)(n < 63 ? n : 63), s);
        s += n + (s[n] == ',');
        const struct proxy_front_enum *e = proxy_front_enum_find(proxy_front_retry_on, part);
        if (!e) {
            proxy_front_refuse(f, on, path, "retry_on %.32s is not supported", part);
            return;
        }
        proxy_front_push(f, l, sc_ytree_str(f->out, on, e->ours), on);
    }
    if (sc_ynode_count(l)) {
        proxy_front_set(f, o, "retry_on", l, on);
    }
    proxy_front_set(f, rt, "retry_policy", o, rp);
}

/* A route's match into ours; <dom> (a list of the output, NULL: any) is the virtual host's
 * domains. */
/* Envoy's QueryParameterMatchers <ql> as our match.query_parameters. */
static struct sc_ynode *query_params(struct proxy_front *f, const struct sc_ynode *ql,
                                     const char *path)
{
    struct sc_ynode *out = proxy_front_seq(f, ql);
    for (size_t i = 0; i < sc_ynode_count(ql) && !f->err; i++) {
        const struct sc_ynode *q = sc_ynode_at(ql, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".query_parameters[%zu]", i);
        static const char *const qk[] = { "name", "string_match", "present_match", NULL };
        if (proxy_front_keys(f, q, p, qk, NULL) < 0) {
            break;
        }
        struct sc_ynode *e = proxy_front_map(f, q);
        proxy_front_copy(f, e, "name", q, "name");
        const struct sc_ynode *sm = sc_ynode_get(q, "string_match");
        const char *pm = proxy_front_str(f, q, "present_match", p);
        if (sm && pm) {
            proxy_front_refuse(f, q, p, "use one of string_match and present_match");
            break;
        }
        if (is(pm, "false")) {
            proxy_front_put(f, e, "present", q, "false"); /* Envoy: matches when absent */
        }
        /* contains and ignore_case: true have no equivalent */
        static const char *const sk[] = { "exact",      "prefix",      "suffix",
                                          "safe_regex", "ignore_case", NULL };
        if (sm && proxy_front_keys(f, sm, p, sk, NULL) == 0) {
            if (is(proxy_front_str(f, sm, "ignore_case", p), "true")) {
                proxy_front_refuse(f, sc_ynode_get(sm, "ignore_case"), p,
                                   "ignore_case: true is not supported");
                break;
            }
            proxy_front_copy(f, e, "exact", sm, "exact");
            proxy_front_copy(f, e, "prefix", sm, "prefix");
            proxy_front_copy(f, e, "suffix", sm, "suffix");
            const struct sc_ynode *re = sc_ynode_get(sm, "safe_regex");
            static const char *const rk[] = { "regex", NULL };
            static const char *const rn[] = { "google_re2", NULL };
            if (re && proxy_front_keys(f, re, p, rk, rn) == 0) {
                proxy_front_copy(f, e, "regex", re, "regex");
                proxy_front_regex(f, re, p, sc_ynode_str(sc_ynode_get(re, "regex")), NULL);
            }
        }
        proxy_front_push(f, out, e, q);
    }
    return out;
}

static struct sc_ynode *route_match(struct proxy_front *f, const struct sc_ynode *mn,
                                    struct sc_ynode *dom, const char *path)
{
    static const char *const mk[] = { "prefix",  "path",           "safe_regex",
                                      "headers", "case_sensitive", "query_parameters",
                                      NULL };
    struct sc_ynode *m = proxy_front_map(f, mn);
    if (proxy_front_keys(f, mn, path, mk, NULL) < 0) {
        return NULL;
    }
    if (is(proxy_front_str(f, mn, "case_sensitive", path), "false")) {
        proxy_front_refuse(f, sc_ynode_get(mn, "case_sensitive"), path,
                           "case_sensitive: false is not supported");
        return NULL;
    }
    proxy_front_copy(f, m, "prefix", mn, "prefix");
    proxy_front_copy(f, m, "path", mn, "path");
    const struct sc_ynode *re = sc_ynode_get(mn, "safe_regex");
    static const char *const rk[] = { "regex", NULL };
    static const char *const rn[] = { "google_re2", NULL };
    if (re && proxy_front_keys(f, re, path, rk, rn) == 0) {
        proxy_front_copy(f, m, "regex", re, "regex");
    }
    struct sc_ynode *hs = proxy_front_seq(f, mn);
    const struct sc_ynode *hl = sc_ynode_get(mn, "headers");
    for (size_t i = 0; i < sc_ynode_count(hl) && !f->err; i++) {
        const struct sc_ynode *h = sc_ynode_at(hl, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".headers[%zu]", i);
        static const char *const hk[] = { "name",          "exact_match",  "string_match",
                                          "present_match", "invert_match", NULL };
        if (proxy_front_keys(f, h, p, hk, NULL) < 0) {
            return NULL; /* prefix, suffix, contains and regex header matches: no equivalent */
        }
        struct sc_ynode *e = proxy_front_map(f, h);
        proxy_front_copy(f, e, "name", h, "name");
        proxy_front_copy(f, e, "value", h, "exact_match");
        const struct sc_ynode *sm = sc_ynode_get(h, "string_match");
        static const char *const sk[] = { "exact", NULL };
        if (sm && proxy_front_keys(f, sm, p, sk, NULL) == 0) {
            proxy_front_copy(f, e, "value", sm, "exact");
        }
        bool invert = is(proxy_front_str(f, h, "invert_match", p), "true");
        const char *pm = proxy_front_str(f, h, "present_match", p);
        if (invert && (sc_ynode_get(e, "value") || is(pm, "false"))) {
            proxy_front_refuse(f, sc_ynode_get(h, "invert_match"), p,
                               "invert_match is supported with present_match: true only");
            return NULL;
        }
        if (invert || is(pm, "false")) {
            proxy_front_put(f, e, "present", h, "false");
        }
        proxy_front_push(f, hs, e, h);
    }
    const struct sc_ynode *ql = sc_ynode_get(mn, "query_parameters");
    if (ql) {
        proxy_front_set(f, m, "query_parameters", query_params(f, ql, path), ql);
    }
    if (dom) {
        proxy_front_set(f, m, "authority", dom, mn);
    }
    if (sc_ynode_count(hs)) {
        proxy_front_set(f, m, "headers", hs, mn);
    }
    return f->err ? NULL : m;
}

static void put_percent(struct proxy_front *f, struct sc_ynode *dst, const struct sc_ynode *at,
                        double pc);

/* The action of one route (cluster, weights, timeout, retries, rewrites, mirror) into <rt>. */
static void route_action(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *ra,
                         const struct sc_ynode *vh_retry, const char *path)
{
    static const char *const ak[] = { "cluster",
                                      "weighted_clusters",
                                      "timeout",
                                      "retry_policy",
                                      "prefix_rewrite",
                                      "regex_rewrite",
                                      "host_rewrite_literal",
                                      "request_mirror_policies",
                                      "hash_policy",
                                      "max_stream_duration",
                                      "cors",
                                      NULL };
    static const char *const an[] = { NULL };
    if (proxy_front_keys(f, ra, path, ak, an) < 0) {
        return;
    }
    const struct sc_ynode *hp = sc_ynode_get(ra, "hash_policy");
    if (hp) {
        proxy_front_set(f, rt, "hash_policy", proxy_envoy_hash_policy(f, hp, path), hp);
    }
    proxy_front_copy(f, rt, "cluster", ra, "cluster");
    const struct sc_ynode *wc = sc_ynode_get(ra, "weighted_clusters");
    static const char *const wk[] = { "clusters", NULL };
    static const char *const wn[] = { "total_weight", NULL };
    if (wc && proxy_front_keys(f, wc, path, wk, wn) == 0) {
        const struct sc_ynode *cl = sc_ynode_get(wc, "clusters");
        struct sc_ynode *l = proxy_front_seq(f, cl ? cl : wc);
        static const char *const ck[] = { "name", "weight", NULL };
        for (size_t i = 0; i < sc_ynode_count(cl) && !f->err; i++) {
            const struct sc_ynode *c = sc_ynode_at(cl, i);
            if (proxy_front_keys(f, c, path, ck, NULL) < 0) {
                return;
            }
            struct sc_ynode *e = proxy_front_map(f, c);
            proxy_front_copy(f, e, "cluster", c, "name");
            proxy_front_copy(f, e, "weight", c, "weight");
            proxy_front_push(f, l, e, c);
        }
        proxy_front_set(f, rt, "weighted_clusters", l, wc);
    }
    if (!sc_ynode_get(ra, "cluster") && !wc && !f->err) {
        proxy_front_refuse(f, ra, path,
                           "cluster or weighted_clusters is required "
                           "(cluster_header is not supported)");
        return;
    }
    proxy_front_put_duration(f, rt, "timeout", ra, "timeout", path, "15s"); /* Envoy's default */
    const struct sc_ynode *msd = sc_ynode_get(ra, "max_stream_duration");
    static const char *const dk[] = { "grpc_timeout_header_max", "grpc_timeout_header_offset",
                                      NULL };
    char mpath[PROXY_FRONT_PATH];
    proxy_front_path(mpath, path, ".max_stream_duration");
    if (msd && proxy_front_keys(f, msd, mpath, dk, NULL) == 0) {
        /* A gRPC call's grpc-timeout and its cap (docs/grpc.md); the stream duration of other
         * requests (max_stream_duration itself) is refused. */
        struct sc_ynode *g = proxy_front_map(f, msd);
        proxy_front_put_duration(f, g, "timeout_max", msd, "grpc_timeout_header_max", mpath, NULL);
        proxy_front_put_duration(f, g, "timeout_offset", msd, "grpc_timeout_header_offset", mpath,
                                 NULL);
        proxy_front_set(f, rt, "grpc", g, msd);
    }
    const struct sc_ynode *rp = sc_ynode_get(ra, "retry_policy");
    char rpath[PROXY_FRONT_PATH];
    proxy_front_path(rpath, path, ".retry_policy");
    retry_policy(f, rt, rp ? rp : vh_retry, rpath);
    proxy_front_copy(f, rt, "prefix_rewrite", ra, "prefix_rewrite");
    const struct sc_ynode *rr = sc_ynode_get(ra, "regex_rewrite");
    static const char *const rrk[] = { "pattern", "substitution", NULL };
    static const char *const pk[] = { "regex", NULL };
    static const char *const pn[] = { "google_re2", NULL };
    const struct sc_ynode *pat = sc_ynode_get(rr, "pattern");
    if (rr && proxy_front_keys(f, rr, path, rrk, NULL) == 0 &&
        (!pat || proxy_front_keys(f, pat, path, pk, pn) == 0)) {
        proxy_front_regex_rewrite(f, rt, rr, sc_ynode_get(pat, "regex"),
                                  sc_ynode_get(rr, "substitution"), path);
    }
    proxy_front_copy(f, rt, "host_rewrite", ra, "host_rewrite_literal");
    const struct sc_ynode *mp = sc_ynode_get(ra, "request_mirror_policies");
    if (sc_ynode_count(mp) > 1) {
        proxy_front_refuse(f, sc_ynode_at(mp, 1), path, "one request mirror policy only");
        return;
    }
    if (sc_ynode_count(mp) == 1) {
        const struct sc_ynode *m = sc_ynode_at(mp, 0);
        static const char *const mk[] = { "cluster", "runtime_fraction", NULL };
        if (proxy_front_keys(f, m, path, mk, NULL) < 0) {
            return;
        }
        struct sc_ynode *o = proxy_front_map(f, m);
        proxy_front_copy(f, o, "cluster", m, "cluster");
        const struct sc_ynode *rf = sc_ynode_get(m, "runtime_fraction");
        const struct sc_ynode *dv = sc_ynode_get(rf, "default_value");
        double pc = 0;
        if (rf && !sc_ynode_get(dv, "numerator")) {
            proxy_front_refuse(f, rf, path,
                               "runtime_fraction.default_value.numerator is "
                               "required");
            return;
        } else if (rf && proxy_envoy_fraction(f, dv, path, &pc) == 0) {
            put_percent(f, o, rf, pc);
        }
        proxy_front_set(f, rt, "mirror", o, m);
    }
}

/* A route's redirect or direct_response (Envoy's RedirectAction and DirectResponseAction) into
 * <rt>. */
static void route_answer(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *r,
                         const char *path)
{
    char p[PROXY_FRONT_PATH];
    const struct sc_ynode *rd = sc_ynode_get(r, "redirect");
    if (rd) {
        proxy_front_path(p, path, ".redirect");
        static const char *const k[] = { "scheme_redirect", "https_redirect", "host_redirect",
                                         "port_redirect",   "path_redirect",  "prefix_rewrite",
                                         "strip_query",     "response_code",  NULL };
        if (proxy_front_keys(f, rd, p, k, NULL) < 0) {
            return;
        }
        struct sc_ynode *o = proxy_front_map(f, rd);
        const char *scheme = proxy_front_str(f, rd, "scheme_redirect", p);
        if (scheme && !is(scheme, "http") && !is(scheme, "https")) {
            proxy_front_refuse(f, sc_ynode_get(rd, "scheme_redirect"), p,
                               "scheme_redirect: only http and https are supported");
            return;
        }
        proxy_front_copy(f, o, "scheme", rd, "scheme_redirect");
        proxy_front_copy(f, o, "https_redirect", rd, "https_redirect");
        proxy_front_copy(f, o, "host", rd, "host_redirect");
        proxy_front_copy(f, o, "port", rd, "port_redirect");
        proxy_front_copy(f, o, "path", rd, "path_redirect");
        proxy_front_copy(f, o, "prefix_rewrite", rd, "prefix_rewrite");
        proxy_front_copy(f, o, "strip_query", rd, "strip_query");
        const char *code = proxy_front_str(f, rd, "response_code", p);
        static const char *const names[] = { "MOVED_PERMANENTLY", "FOUND", "SEE_OTHER",
                                             "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT" };
        static const char *const codes[] = { "301", "302", "303", "307", "308" };
        for (size_t i = 0; code && i < 5; i++) {
            if (is(code, names[i]) ||
                (code[0] >= '0' && code[0] <= '4' && !code[1] && (size_t)(code[0] - '0') == i)) {
                proxy_front_put(f, o, "response_code", sc_ynode_get(rd, "response_code"), codes[i]);
                code = NULL;
            }
        }
        if (code) {
            proxy_front_refuse(f, sc_ynode_get(rd, "response_code"), p,
                               "response_code %.32s is not a RedirectResponseCode", code);
            return;
        }
        proxy_front_set(f, rt, "redirect", o, rd);
        return;
    }
    const struct sc_ynode *dr = sc_ynode_get(r, "direct_response");
    proxy_front_path(p, path, ".direct_response");
    static const char *const dk[] = { "status", "body", NULL };
    if (proxy_front_keys(f, dr, p, dk, NULL) < 0) {
        return;
    }
    if (!sc_ynode_get(dr, "status")) {
        proxy_front_refuse(f, dr, p, "status is required");
        return;
    }
    struct sc_ynode *o = proxy_front_map(f, dr);
    proxy_front_copy(f, o, "status", dr, "status");
    const struct sc_ynode *b = sc_ynode_get(dr, "body");
    static const char *const bk[] = { "inline_string", NULL };
    proxy_front_path(p, path, ".direct_response.body");
    if (b && proxy_front_keys(f, b, p, bk, NULL) < 0) {
        return; /* filename, inline_bytes, environment_variable */
    }
    proxy_front_copy(f, o, "body", b, "inline_string");
    proxy_front_set(f, rt, "direct_response", o, dr);
}

struct vhost_levels {
    const struct sc_ynode *rc, *vh; /* route_config and virtual host, for header mutations */
    const char *vpath;              /* the virtual host's path */
    bool cors;                      /* the connection manager has the cors filter */
};

/* One Envoy route (for the domains <dom>, NULL: any) into a native route appended to <routes>. */
static void route(struct proxy_front *f, struct sc_ynode *routes, const struct sc_ynode *r,
                  const struct sc_ynode *dom, const struct vhost_levels *lv, const char *path)
{
    static const char *const rk[] = { "name",
                                      "match",
                                      "route",
                                      "redirect",
                                      "direct_response",
                                      "request_headers_to_add",
                                      "request_headers_to_remove",
                                      "response_headers_to_add",
                                      "response_headers_to_remove",
                                      "typed_per_filter_config",
                                      NULL };
    static const char *const rn[] = { "decorator", "metadata", NULL };
    if (proxy_front_keys(f, r, path, rk, rn) < 0) {
        return;
    }
    int nact = !!sc_ynode_get(r, "route") + !!sc_ynode_get(r, "redirect") +
               !!sc_ynode_get(r, "direct_response");
    if (nact != 1) {
        proxy_front_refuse(f, r, path,
                           "exactly one of route, redirect and direct_response is needed "
                           "(filter_action is not supported)");
        return;
    }
    struct sc_ynode *rt = proxy_front_map(f, r);
    proxy_front_copy(f, rt, "name", r, "name");
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".match");
    const struct sc_ynode *mn = sc_ynode_get(r, "match");
    if (!mn) {
        proxy_front_refuse(f, r, path, "match is required");
        return;
    }
    proxy_front_set(f, rt, "match", route_match(f, mn, dom ? sc_ytree_copy(f->out, dom) : NULL, p),
                    mn);
    if (sc_ynode_get(r, "route")) {
        proxy_front_path(p, path, ".route");
        route_action(f, rt, sc_ynode_get(r, "route"), sc_ynode_get(lv->vh, "retry_policy"), p);
    } else {
        route_answer(f, rt, r, path);
    }
    proxy_envoy_cors_route(f, rt, r, lv->vh, lv->cors, path, lv->vpath);
    struct sc_ynode *ops = proxy_front_map(f, r);
    header_ops(f, ops, r, path);
    header_ops(f, ops, lv->vh, path);
    header_ops(f, ops, lv->rc, path);
    if (sc_ynode_count(ops)) {
        proxy_front_set(f, rt, "headers", ops, r);
    }
    proxy_front_push(f, routes, rt, r);
}

/* Envoy's order of domain matching: exact names, then suffix wildcards, then prefix wildcards,
 * then "*". */
static int domain_class(const char *d)
{
    size_t n = strlen(d);
    if (strcmp(d, "*") == 0) {
        return 3;
    }
    if (n > 1 && d[0] == '*') {
        return 1;
    }
    if (n > 1 && d[n - 1] == '*') {
        return 2;
    }
    return 0;
}

/* route_config: the virtual hosts' routes, grouped by domain class in Envoy's order of
 * precedence, each with the domains of that class as its authority match. */
static void route_config(struct proxy_front *f, struct sc_ynode *routes, const struct sc_ynode *rc,
                         bool cors, const char *path)
{
    static const char *const rk[] = { "name",
                                      "virtual_hosts",
                                      "request_headers_to_add",
                                      "request_headers_to_remove",
                                      "response_headers_to_add",
                                      "response_headers_to_remove",
                                      NULL };
    static const char *const rn[] = { "validate_clusters", NULL };
    if (proxy_front_keys(f, rc, path, rk, rn) < 0) {
        return;
    }
    const struct sc_ynode *vhs = sc_ynode_get(rc, "virtual_hosts");
    for (size_t i = 0; i < sc_ynode_count(vhs) && !f->err; i++) {
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".virtual_hosts[%zu]", i);
        proxy_envoy_cors_vhost(f, sc_ynode_at(vhs, i), cors, p);
    }
    for (int cls = 0; cls < 4 && !f->err; cls++) {
        for (size_t i = 0; i < sc_ynode_count(vhs) && !f->err; i++) {
            const struct sc_ynode *vh = sc_ynode_at(vhs, i);
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, path, ".virtual_hosts[%zu]", i);
            static const char *const vk[] = { "name",
                                              "domains",
                                              "routes",
                                              "retry_policy",
                                              "request_headers_to_add",
                                              "request_headers_to_remove",
                                              "response_headers_to_add",
                                              "response_headers_to_remove",
                                              "cors",
                                              "typed_per_filter_config",
                                              NULL };
            if (proxy_front_keys(f, vh, p, vk, NULL) < 0) {
                return;
            }
            const struct sc_ynode *doms = sc_ynode_get(vh, "domains");
            if (sc_ynode_count(doms) == 0) {
                proxy_front_refuse(f, vh, p, "domains is required");
                return;
            }
            struct sc_ynode *mine = proxy_front_seq(f, doms);
            for (size_t d = 0; d < sc_ynode_count(doms) && !f->err; d++) {
                const char *s = sc_ynode_str(sc_ynode_at(doms, d));
                if (!s || !*s) {
                    proxy_front_refuse(f, sc_ynode_at(doms, d), p, "a domain must be a name");
                    return;
                }
                if (domain_class(s) == cls && cls < 3) {
                    proxy_front_push(f, mine, sc_ytree_copy(f->out, sc_ynode_at(doms, d)), doms);
                } else if (domain_class(s) == cls) {
                    mine = NULL; /* "*": any Host */
                    break;
                }
            }
            if (mine && sc_ynode_count(mine) == 0) {
                continue;
            }
            struct vhost_levels lv = { rc, vh, p, cors };
            const struct sc_ynode *rs = sc_ynode_get(vh, "routes");
            for (size_t r = 0; r < sc_ynode_count(rs) && !f->err; r++) {
                char rp[PROXY_FRONT_PATH];
                proxy_front_path(rp, p, ".routes[%zu]", r);
                route(f, routes, sc_ynode_at(rs, r), mine, &lv, rp);
            }
        }
    }
}

int proxy_envoy_fraction(struct proxy_front *f, const struct sc_ynode *fp, const char *path,
                         double *out)
{
    static const char *const k[] = { "numerator", "denominator", NULL };
    if (proxy_front_keys(f, fp, path, k, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *num = proxy_front_str(f, fp, "numerator", path);
    char *end = NULL;
    double n = num ? strtod(num, &end) : 0;
    if (num && (*end || n < 0)) {
        return proxy_front_refuse(f, sc_ynode_get(fp, "numerator"), path,
                                  "numerator must be a non-negative integer");
    }
    static const struct proxy_front_enum denominators[] = {
        { "HUNDRED", "100" }, { "TEN_THOUSAND", "10000" }, { "MILLION", "1000000" }, { NULL, NULL }
    };
    const struct proxy_front_enum *den =
        proxy_front_enum(f, fp, "denominator", path, NULL, denominators);
    if (f->err) {
        return SC_ECONFIG;
    }
    double d = strtod(den ? den->ours : "100", NULL);
    *out = n * 100.0 / d > 100 ? 100 : n * 100.0 / d;
    return 0;
}

static void put_percent(struct proxy_front *f, struct sc_ynode *dst, const struct sc_ynode *at,
                        double pc)
{
    char s[32];
    snprintf(s, sizeof(s), "%.6g", pc);
    proxy_front_put(f, dst, "percentage", at, s);
}

/* envoy.filters.http.fault: delay and abort for every route of the connection manager. */
static struct sc_ynode *fault_filter(struct proxy_front *f, const struct sc_ynode *tc,
                                     const char *path)
{
    static const char *const k[] = { "@type", "delay", "abort", NULL };
    static const char *const dk[] = { "fixed_delay", "percentage", NULL };
    static const char *const ak[] = { "http_status", "percentage", NULL };
    if (proxy_front_keys(f, tc, path, k, NULL) < 0) {
        return NULL; /* headers, upstream_cluster, downstream_nodes, max_active_faults */
    }
    struct sc_ynode *out = proxy_front_map(f, tc);
    for (int ab = 0; ab < 2 && !f->err; ab++) {
        const struct sc_ynode *x = sc_ynode_get(tc, ab ? "abort" : "delay");
        if (!x || proxy_front_keys(f, x, path, ab ? ak : dk, NULL) < 0) {
            continue; /* header_delay, header_abort, grpc_status, http3_error: refused */
        }
        struct sc_ynode *o = proxy_front_map(f, x);
        if (ab) {
            proxy_front_copy(f, o, "http_status", x, "http_status");
        } else {
            proxy_front_put_duration(f, o, "fixed_delay", x, "fixed_delay", path, NULL);
        }
        double pc = 100;
        const struct sc_ynode *fp = sc_ynode_get(x, "percentage");
        if (fp && proxy_envoy_fraction(f, fp, path, &pc) < 0) {
            return NULL;
        }
        put_percent(f, o, fp ? fp : x, pc);
        proxy_front_set(f, out, ab ? "abort" : "delay", o, x);
    }
    return f->err ? NULL : out;
}

/* Whether a RuntimeFractionalPercent <rf> (filter_enabled, filter_enforced) is 100%; absent is
 * 0%, as in Envoy. Any other share is refused. */
static bool all_of(struct proxy_front *f, const struct sc_ynode *rf, const char *path)
{
    static const char *const k[] = { "default_value", "runtime_key", NULL };
    double pc = 0;
    if (!rf || proxy_front_keys(f, rf, path, k, NULL) < 0 ||
        proxy_envoy_fraction(f, sc_ynode_get(rf, "default_value"), path, &pc) < 0) {
        return false;
    }
    if (pc != 0 && pc != 100) {
        proxy_front_refuse(f, rf, path, "only 0%% or 100%% of requests is supported");
        return false;
    }
    return pc == 100;
}

/* envoy.filters.http.local_ratelimit: one token bucket for the listener. */
static void local_ratelimit(struct proxy_front *f, struct sc_ynode *l, const struct sc_ynode *tc,
                            const char *path)
{
    static const char *const k[] = { "@type",
                                     "stat_prefix",
                                     "token_bucket",
                                     "filter_enabled",
                                     "filter_enforced",
                                     "enable_x_ratelimit_headers",
                                     NULL };
    if (proxy_front_keys(f, tc, path, k, NULL) < 0) {
        return; /* descriptors, status, response_headers_to_add, per-connection buckets */
    }
    bool enabled = all_of(f, sc_ynode_get(tc, "filter_enabled"), path);
    bool enforced = all_of(f, sc_ynode_get(tc, "filter_enforced"), path);
    if (f->err) {
        return;
    }
    if (!enabled || !enforced) {
        proxy_front_note(f, tc, path,
                         "local_ratelimit with filter_enabled or filter_enforced "
                         "at 0%% limits nothing (as in Envoy)");
        return;
    }
    const struct sc_ynode *tb = sc_ynode_get(tc, "token_bucket");
    static const char *const tk[] = { "max_tokens", "tokens_per_fill", "fill_interval", NULL };
    if (!tb) {
        proxy_front_refuse(f, tc, path, "token_bucket is required");
        return;
    }
    if (proxy_front_keys(f, tb, path, tk, NULL) < 0) {
        return;
    }
    const char *iv = proxy_front_str(f, tb, "fill_interval", path);
    uint64_t ms = 0;
    if (!iv || sc_value_parse_duration(iv, &ms) < 0 ||
        (ms != 1000 && ms != 60000 && ms != 3600000)) {
        proxy_front_refuse(
            f, sc_ynode_get(tb, "fill_interval") ? sc_ynode_get(tb, "fill_interval") : tb, path,
            "fill_interval must be 1s, 60s or 3600s");
        return;
    }
    struct sc_ynode *rl = proxy_front_map(f, tc);
    proxy_front_copy(f, rl, "requests_per_unit", tb, "tokens_per_fill");
    if (!sc_ynode_get(tb, "tokens_per_fill")) {
        proxy_front_put(f, rl, "requests_per_unit", tb, "1");
    }
    proxy_front_put(f, rl, "unit", tb, ms == 1000 ? "second" : ms == 60000 ? "minute" : "hour");
    proxy_front_copy(f, rl, "burst", tb, "max_tokens");
    static const struct proxy_front_enum xh_modes[] = { { "OFF", NULL },
                                                        { "DRAFT_VERSION_03", "true" },
                                                        { NULL, NULL } };
    const struct proxy_front_enum *xh =
        proxy_front_enum(f, tc, "enable_x_ratelimit_headers", path, NULL, xh_modes);
    if (f->err) {
        return;
    }
    if (xh && xh->ours) {
        proxy_front_put(f, rl, "headers", sc_ynode_get(tc, "enable_x_ratelimit_headers"), xh->ours);
    }
    proxy_front_set(f, l, "rate_limit", rl, tc);
}

/* The HTTP filters: fault and local_ratelimit map onto the routes' fault and the listener's rate
 * limit, grpc_web onto the listener's grpc_web; the router must be last, and every other filter
 * is refused by name until the proxy has its equivalent. Returns the fault every route gets, or
 * NULL. */
static struct sc_ynode *http_filters(struct proxy_front *f, struct sc_ynode *l,
                                     const struct sc_ynode *hcm, const struct sc_ynode *hf,
                                     const char *path, struct sc_ynode **health, bool *cors)
{
    size_t n = sc_ynode_count(hf);
    struct sc_ynode *fault = NULL;
    const char *policy_seen = NULL; /* a filter the proxy applies after CORS */
    if (n == 0) {
        proxy_front_refuse(f, hf, path, "http_filters must end with envoy.filters.http.router");
        return NULL;
    }
    for (size_t i = 0; i < n && !f->err; i++) {
        const struct sc_ynode *h = sc_ynode_at(hf, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, "[%zu]", i);
        const struct sc_ynode *tc = sc_ynode_get(h, "typed_config");
        const char *t = sc_ynode_str(sc_ynode_get(tc, "@type"));
        const char *nm = sc_ynode_str(sc_ynode_get(h, "name"));
        static const char *const k[] = { "name", "typed_config", NULL };
        bool router = t ? is(t, T_ROUTER) : is(nm, "envoy.filters.http.router");
        if (router != (i + 1 == n)) {
            proxy_front_refuse(f, h, p,
                               router ? "the router must be the last HTTP filter"
                                      : "the last HTTP filter must be the router");
            return NULL;
        }
        if (proxy_envoy_cors_filter_is(t, nm)) {
            if (proxy_front_keys(f, h, p, k, NULL) < 0) {
                return NULL;
            }
            if (*cors) {
                proxy_front_refuse(f, h, p, "one cors filter only");
                return NULL;
            }
            if (policy_seen) {
                proxy_front_refuse(f, h, p,
                                   "the cors filter must come before %.64s (the proxy answers "
                                   "CORS preflights before authorization, rate limits and "
                                   "faults)",
                                   policy_seen);
                return NULL;
            }
            proxy_front_path(p, path, "[%zu].typed_config", i);
            if (proxy_envoy_cors_filter(f, tc, p) < 0) {
                return NULL;
            }
            *cors = true;
            continue;
        }
        if (is(t, T_FAULT) || is(t, T_LOCAL_RL) || proxy_envoy_authz_filter_is(t)) {
            policy_seen = ext_name(h);
        }
        if (is(t, T_FAULT) || is(t, T_LOCAL_RL)) {
            if (proxy_front_keys(f, h, p, k, NULL) < 0) {
                return NULL;
            }
            proxy_front_path(p, path, "[%zu].typed_config", i);
            if (is(t, T_FAULT) && fault) {
                proxy_front_refuse(f, h, p, "one fault filter only");
            } else if (is(t, T_FAULT)) {
                fault = fault_filter(f, tc, p);
            } else if (sc_ynode_get(l, "rate_limit")) {
                proxy_front_refuse(f, h, p, "one local_ratelimit filter only");
            } else if (fault) {
                proxy_front_refuse(f, h, p,
                                   "local_ratelimit must come before fault (rate limits "
                                   "are checked first)");
            } else {
                local_ratelimit(f, l, tc, p);
            }
            continue;
        }
        if (proxy_envoy_authz_filter_is(t)) {
            if (proxy_front_keys(f, h, p, k, NULL) < 0) {
                return NULL;
            }
            proxy_front_path(p, path, "[%zu].typed_config", i);
            if (proxy_envoy_authz_filter(f, hcm, l, tc, p) < 0) {
                return NULL;
            }
            continue;
        }
        if (proxy_envoy_health_filter_is(t, nm)) {
            if (proxy_front_keys(f, h, p, k, NULL) < 0) {
                return NULL;
            }
            if (*health) {
                proxy_front_refuse(f, h, p, "one health_check filter only");
                return NULL;
            }
            proxy_front_path(p, path, "[%zu].typed_config", i);
            if (!(*health = proxy_envoy_health_filter(f, tc, p))) {
                return NULL;
            }
            continue;
        }
        if (t ? is(t, T_GRPC_WEB) : is(nm, "envoy.filters.http.grpc_web")) {
            /* the listener's grpc_web (GrpcWeb has no fields) */
            static const char *const gk[] = { "@type", NULL };
            if (proxy_front_keys(f, h, p, k, NULL) < 0 ||
                (tc && proxy_front_keys(f, tc, p, gk, NULL) < 0)) {
                return NULL;
            }
            proxy_front_put(f, l, "grpc_web", h, "true");
            continue;
        }
        if (!router) {
            proxy_front_refuse(f, h, p, "%.200s is not supported", ext_name(h));
            return NULL;
        }
        static const char *const tk[] = { "@type", NULL };
        static const char *const tn[] = { "dynamic_stats", "suppress_envoy_headers",
                                          "start_child_span", NULL };
        if (proxy_front_keys(f, h, p, k, NULL) == 0 && tc) {
            proxy_front_keys(f, tc, p, tk, tn);
        }
    }
    return f->err ? NULL : fault;
}

static const char *const fcc_modes[][2] = {
    { "SANITIZE", "sanitize" },
    { "FORWARD_ONLY", "forward_only" },
    { "APPEND_FORWARD", "append_forward" },
    { "SANITIZE_SET", "sanitize_set" },
};

/* The connection manager's codec onto listener <l>'s `http2` block: codec_type (AUTO: HTTP/1.1
 * and HTTP/2, HTTP1: http2.enabled false, HTTP2: http2.only), http2_protocol_options,
 * max_request_headers_kb (the HTTP/2 header list bound) and
 * common_http_protocol_options.max_headers_count (the listener's max_request_headers, both
 * codecs). */
static void hcm_codec(struct proxy_front *f, struct sc_ynode *l, const struct sc_ynode *tc,
                      const char *path)
{
    const char *codec = proxy_front_str(f, tc, "codec_type", path);
    const struct sc_ynode *cn = sc_ynode_get(tc, "codec_type");
    if (codec && !is(codec, "AUTO") && !is(codec, "HTTP1") && !is(codec, "HTTP2")) {
        proxy_front_refuse(f, cn, path, "codec_type %.16s is not supported (AUTO, HTTP1, HTTP2)",
                           codec);
        return;
    }
    const struct sc_ynode *o2 = sc_ynode_get(tc, "http2_protocol_options");
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".http2_protocol_options");
    struct sc_ynode *h = o2 ? proxy_envoy_http2_options(f, o2, p, true) : proxy_front_map(f, tc);
    if (!h) {
        return;
    }
    if (is(codec, "HTTP1")) {
        proxy_front_put(f, h, "enabled", cn, "false");
    } else if (is(codec, "HTTP2")) {
        proxy_front_put(f, h, "only", cn, "true");
    }
    const char *kb = proxy_front_str(f, tc, "max_request_headers_kb", path);
    if (kb) {
        char *end = NULL;
        unsigned long v = strtoul(kb, &end, 10);
        if (!end || *end || v < 1 || v > 1024) {
            proxy_front_refuse(f, sc_ynode_get(tc, "max_request_headers_kb"), path,
                               "max_request_headers_kb %.16s is not between 1 and 1024", kb);
            return;
        }
        char s[24];
        snprintf(s, sizeof(s), "%luKiB", v);
        proxy_front_put(f, h, "max_header_list_size", sc_ynode_get(tc, "max_request_headers_kb"),
                        s);
    }
    const struct sc_ynode *cho = sc_ynode_get(tc, "common_http_protocol_options");
    const char *mhc = cho ? proxy_front_str(f, cho, "max_headers_count", path) : NULL;
    if (mhc) {
        uint64_t n = 0;
        const struct sc_ynode *mn = sc_ynode_get(cho, "max_headers_count");
        if (sc_str_to_u64(sc_str_c(mhc), 1024, &n) < 0 || n == 0) {
            proxy_front_refuse(f, mn, path,
                               "max_headers_count %.16s is not between 1 and 1024 (the proxy's "
                               "bound)",
                               mhc);
            return;
        }
        proxy_front_put(f, l, "max_request_headers", mn, mhc);
    }
    if (sc_ynode_count(h) > 0) {
        proxy_front_set(f, l, "http2", h, o2 ? o2 : tc);
    }
}

void proxy_envoy_hcm(struct proxy_front *f, bool *access_log, struct sc_ynode *l,
                     const struct sc_ynode *tc, const char *path)
{
    if (proxy_envoy_want_type(f, tc, path, T_HCM) < 0) {
        return;
    }
    static const char *const hk[] = { "@type",
                                      "codec_type",
                                      "route_config",
                                      "rds",
                                      "http_filters",
                                      "access_log",
                                      "stream_idle_timeout",
                                      "forward_client_cert_details",
                                      "common_http_protocol_options",
                                      "http2_protocol_options",
                                      "max_request_headers_kb",
                                      "normalize_path",
                                      "merge_slashes",
                                      "path_with_escaped_slashes_action",
                                      "use_remote_address",
                                      NULL };
    static const char *const hn[] = { "stat_prefix", "generate_request_id",
                                      "server_name", "set_current_client_cert_details",
                                      "tracing",     "upgrade_configs",
                                      NULL };
    if (proxy_front_keys(f, tc, path, hk, hn) < 0) {
        return;
    }
    if (sc_ynode_get(tc, "rds")) {
        proxy_front_refuse(f, sc_ynode_get(tc, "rds"), path,
                           "rds is not supported: write the route_config inline");
        return;
    }
    hcm_codec(f, l, tc, path);
    if (f->err) {
        return;
    }
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".http_filters");
    struct sc_ynode *health = NULL;
    bool cors = false;
    struct sc_ynode *fault =
        http_filters(f, l, tc, sc_ynode_get(tc, "http_filters"), p, &health, &cors);
    if (proxy_envoy_paths(f, tc, path) < 0) {
        return;
    }
    if (sc_ynode_get(tc, "use_remote_address")) {
        /* rbac's remote_ip is accepted only with it (proxy_envoy_authz.c). */
        proxy_front_note(f, sc_ynode_get(tc, "use_remote_address"), path,
                         "use_remote_address: the client address is the connection's peer here");
    }
    if (sc_ynode_get(tc, "access_log")) {
        *access_log = true;
        proxy_front_note(f, sc_ynode_get(tc, "access_log"), path,
                         "access_log: the proxy writes its own JSON access log to stdout");
    }
    if (!sc_ynode_get(f->root, "stream_idle_timeout")) {
        proxy_front_put_duration(f, f->root, "stream_idle_timeout", tc, "stream_idle_timeout", path,
                                 NULL);
    }
    const struct sc_ynode *cho = sc_ynode_get(tc, "common_http_protocol_options");
    static const char *const ck[] = { "idle_timeout", "headers_with_underscores_action",
                                      "max_headers_count", NULL };
    if (cho && proxy_front_keys(f, cho, path, ck, NULL) == 0 &&
        !sc_ynode_get(f->root, "idle_timeout")) {
        proxy_front_put_duration(f, f->root, "idle_timeout", cho, "idle_timeout", path, NULL);
    }
    const char *us = cho ? proxy_front_str(f, cho, "headers_with_underscores_action", path) : NULL;
    if (us && !sc_ynode_get(f->root, "headers_with_underscores")) {
        static const char *const us_modes[][2] = { { "ALLOW", "allow" },
                                                   { "DROP_HEADER", "drop" },
                                                   { "REJECT_REQUEST", "reject" } };
        const char *ours = NULL;
        for (size_t i = 0; i < sizeof(us_modes) / sizeof(us_modes[0]); i++) {
            ours = is(us, us_modes[i][0]) ? us_modes[i][1] : ours;
        }
        if (!ours) {
            proxy_front_refuse(f, sc_ynode_get(cho, "headers_with_underscores_action"), path,
                               "headers_with_underscores_action %.32s is not one of ALLOW, "
                               "DROP_HEADER, REJECT_REQUEST",
                               us);
        } else {
            proxy_front_put(f, f->root, "headers_with_underscores",
                            sc_ynode_get(cho, "headers_with_underscores_action"), ours);
        }
    }
    const char *fcc = proxy_front_str(f, tc, "forward_client_cert_details", path);
    if (fcc) {
        const char *ours = NULL;
        for (size_t i = 0; i < sizeof(fcc_modes) / sizeof(fcc_modes[0]); i++) {
            ours = is(fcc, fcc_modes[i][0]) ? fcc_modes[i][1] : ours;
        }
        if (!ours) {
            proxy_front_refuse(f, sc_ynode_get(tc, "forward_client_cert_details"), path,
                               "forward_client_cert_details %.32s is not supported", fcc);
            return;
        }
        proxy_front_put(f, l, "forward_client_cert",
                        sc_ynode_get(tc, "forward_client_cert_details"), ours);
    }
    struct sc_ynode *routes = proxy_envoy_hcm_routes(f, tc, path, health, fault);
    if (routes) {
        proxy_front_set(f, l, "routes", routes, sc_ynode_get(tc, "route_config"));
    }
}

struct sc_ynode *proxy_envoy_hcm_routes(struct proxy_front *f, const struct sc_ynode *tc,
                                        const char *path, const struct sc_ynode *health,
                                        const struct sc_ynode *fault)
{
    const struct sc_ynode *rc = sc_ynode_get(tc, "route_config");
    if (!rc) {
        proxy_front_refuse(f, tc, path, "route_config is required");
        return NULL;
    }
    struct sc_ynode *routes = proxy_front_seq(f, rc);
    if (health) {
        /* a filter: before every route */
        proxy_front_push(f, routes, sc_ytree_copy(f->out, health), rc);
    }
    /* the filters were checked (http_filters): only whether CORS policies apply is asked */
    const struct sc_ynode *hf = sc_ynode_get(tc, "http_filters");
    bool cors = false;
    for (size_t i = 0; i < sc_ynode_count(hf) && !cors; i++) {
        const struct sc_ynode *h = sc_ynode_at(hf, i);
        cors = proxy_envoy_cors_filter_is(
            sc_ynode_str(sc_ynode_get(sc_ynode_get(h, "typed_config"), "@type")),
            sc_ynode_str(sc_ynode_get(h, "name")));
    }
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".route_config");
    route_config(f, routes, rc, cors, p);
    for (size_t i = health ? 1 : 0; fault && i < sc_ynode_count(routes) && !f->err; i++) {
        proxy_front_set(f, (struct sc_ynode *)sc_ynode_at(routes, i), "fault",
                        sc_ytree_copy(f->out, fault), fault);
    }
    return f->err ? NULL : routes;
}

/* ---- listeners ---- */

static void listener_filters(struct proxy_front *f, const struct sc_ynode *lf, const char *path)
{
    for (size_t i = 0; i < sc_ynode_count(lf) && !f->err; i++) {
        const struct sc_ynode *x = sc_ynode_at(lf, i);
        const char *n = ext_name(x);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, "[%zu]", i);
        if (strstr(n, "tls_inspector") || strstr(n, "original_dst") ||
            strstr(n, "http_inspector") || strstr(n, "TlsInspector") || strstr(n, "OriginalDst") ||
            strstr(n, "HttpInspector")) {
            proxy_front_note(f, x, p,
                             "%.128s: the proxy detects TLS and recovers the original "
                             "destination by itself",
                             n);
        } else {
            proxy_front_refuse(f, x, p, "%.200s is not supported", n);
        }
    }
}

static void listener(struct env *e, const struct sc_ynode *ln, size_t i, struct sc_ynode *out)
{
    struct proxy_front *f = e->f;
    char path[PROXY_FRONT_PATH];
    snprintf(path, sizeof(path), "static_resources.listeners[%zu]", i);
    static const char *const lk[] = { "name",
                                      "address",
                                      "filter_chains",
                                      "default_filter_chain",
                                      "listener_filters",
                                      "use_original_dst",
                                      "traffic_direction",
                                      NULL };
    static const char *const ln_noted[] = { "per_connection_buffer_limit_bytes",
                                            "stat_prefix",
                                            "listener_filters_timeout",
                                            "continue_on_listener_filters_timeout",
                                            "enable_reuse_port",
                                            "connection_balance_config",
                                            "metadata",
                                            NULL };
    if (proxy_front_keys(f, ln, path, lk, ln_noted) < 0) {
        return;
    }
    struct sc_ynode *l = proxy_front_map(f, ln);
    const char *name = proxy_front_str(f, ln, "name", path);
    char gen[32];
    snprintf(gen, sizeof(gen), "listener_%zu", i);
    proxy_front_put(f, l, "name", sc_ynode_get(ln, "name") ? sc_ynode_get(ln, "name") : ln,
                    name ? name : gen);
    char addr[ADDR_MAX], p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".address");
    if (proxy_envoy_address(f, sc_ynode_get(ln, "address"), p, addr, sizeof(addr)) < 0) {
        return;
    }
    proxy_front_put(f, l, "address", sc_ynode_get(ln, "address"), addr);
    static const struct proxy_front_enum dirs[] = { { "UNSPECIFIED", NULL },
                                                    { "INBOUND", "inbound" },
                                                    { "OUTBOUND", "outbound" },
                                                    { NULL, NULL } };
    const struct proxy_front_enum *dir =
        proxy_front_enum(f, ln, "traffic_direction", path, NULL, dirs);
    if (f->err) {
        return;
    }
    if (dir && dir->ours) {
        proxy_front_put(f, l, "direction", sc_ynode_get(ln, "traffic_direction"), dir->ours);
    }
    if (sc_ynode_get(ln, "use_original_dst")) {
        proxy_front_note(f, sc_ynode_get(ln, "use_original_dst"), path,
                         "use_original_dst: an original_dst cluster reads each connection's "
                         "original destination itself");
    }
    proxy_front_path(p, path, ".listener_filters");
    listener_filters(f, sc_ynode_get(ln, "listener_filters"), p);
    if (proxy_envoy_chains(f, &e->access_log, ln, path, addr, l) == 0) {
        proxy_front_push(f, out, l, ln);
    }
}

/* ---- the bootstrap ---- */

int proxy_envoy_translate(struct proxy_front *f, const struct sc_ynode *doc)
{
    struct env e = { .f = f };
    f->envoy = doc;
    static const char *const bk[] = { "static_resources", "admin", NULL };
    static const char *const bn[] = {
        "node",      "layered_runtime",  "stats_sinks",     "stats_config", "stats_flush_interval",
        "watchdogs", "overload_manager", "cluster_manager", "tracing",      NULL
    };
    if (proxy_front_keys(f, doc, "", bk, bn) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *admin = sc_ynode_get(doc, "admin");
    static const char *const ak[] = { "address", NULL };
    static const char *const an[] = { "access_log", "access_log_path", "profile_path", NULL };
    if (admin && proxy_front_keys(f, admin, "admin", ak, an) == 0) {
        char addr[ADDR_MAX];
        if (proxy_envoy_address(f, sc_ynode_get(admin, "address"), "admin.address", addr,
                                sizeof(addr)) < 0) {
            return SC_ECONFIG;
        }
        proxy_front_put(f, f->root, "admin", sc_ynode_get(admin, "address"), addr);
    }
    const struct sc_ynode *sr = sc_ynode_get(doc, "static_resources");
    static const char *const sk[] = { "listeners", "clusters", NULL };
    if (proxy_front_keys(f, sr, "static_resources", sk, NULL) < 0) {
        return SC_ECONFIG; /* secrets: SDS is not supported */
    }
    const struct sc_ynode *ls = sc_ynode_get(sr, "listeners");
    const struct sc_ynode *cs = sc_ynode_get(sr, "clusters");
    struct sc_ynode *lout = proxy_front_seq(f, ls ? ls : sr),
                    *cout = proxy_front_seq(f, cs ? cs : sr);
    for (size_t i = 0; i < sc_ynode_count(ls) && !f->err; i++) {
        listener(&e, sc_ynode_at(ls, i), i, lout);
    }
    for (size_t i = 0; i < sc_ynode_count(cs) && !f->err; i++) {
        proxy_envoy_cluster(f, sc_ynode_at(cs, i), i, cout);
    }
    if (f->err) {
        return SC_ECONFIG;
    }
    if (sc_ynode_count(lout) == 0) {
        return proxy_front_refuse(f, sr, "static_resources", "no listeners");
    }
    if (proxy_envoy_authz_listeners(f, sc_ynode_count(lout)) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_set(f, f->root, "listeners", lout, ls);
    proxy_front_set(f, f->root, "clusters", cout, cs ? cs : sr);
    proxy_front_put(f, f->root, "access_log", sr, e.access_log ? "stdout" : "off");
    return f->err ? SC_ECONFIG : 0;
}
