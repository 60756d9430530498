// SPDX-License-Identifier: Apache-2.0
// Istio's security resources as proxy configuration (see proxy_front.h): AuthorizationPolicy
// becomes an `authorization:` entry and RequestAuthentication a `request_authentication:` entry.
// The native structs follow Istio's spec key for key (proxy_authz.h, proxy_jwt.h), so the
// translation renames camelCase keys to snake_case and copies values; the option tables then
// validate every value at the position of the Istio text. Invariant: a field that would change
// who is allowed and has no equivalent (targetRef, serviceAccounts, spaceDelimitedClaims) is
// refused, never dropped: a policy silently widened or narrowed is worse than none.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_front.h"
#include "roles/proxy/proxy_jwt.h"

#define DRY_RUN "istio.io/dry-run"

/* An Istio key and the native key it becomes. */
struct rename {
    const char *from, *to;
};

static const struct rename source_keys[] = {
    { "principals", "principals" },
    { "notPrincipals", "not_principals" },
    { "requestPrincipals", "request_principals" },
    { "notRequestPrincipals", "not_request_principals" },
    { "namespaces", "namespaces" },
    { "notNamespaces", "not_namespaces" },
    { "ipBlocks", "ip_blocks" },
    { "notIpBlocks", "not_ip_blocks" },
    { "remoteIpBlocks", "remote_ip_blocks" },
    { "notRemoteIpBlocks", "not_remote_ip_blocks" },
    { 0 },
};

static const struct rename operation_keys[] = {
    { "hosts", "hosts" },        { "notHosts", "not_hosts" }, { "ports", "ports" },
    { "notPorts", "not_ports" }, { "methods", "methods" },    { "notMethods", "not_methods" },
    { "paths", "paths" },        { "notPaths", "not_paths" }, { 0 },
};

static const struct rename cond_keys[] = {
    { "key", "key" },
    { "values", "values" },
    { "notValues", "not_values" },
    { 0 },
};

static const struct rename jwt_keys[] = {
    { "issuer", "issuer" },
    { "audiences", "audiences" },
    { "jwks", "jwks" },
    { "jwksUri", "jwks_uri" },
    { "fromParams", "from_params" },
    { "fromCookies", "from_cookies" },
    { "forwardOriginalToken", "forward_original_token" },
    { "outputPayloadToHeader", "output_payload_to_header" },
    { 0 },
};

static const struct rename header_keys[] = { { "name", "name" }, { "prefix", "prefix" }, { 0 } };
static const struct rename claim_keys[] = { { "header", "header" }, { "claim", "claim" }, { 0 } };

/* Refusals that say why rather than only "not supported". */
static const struct {
    const char *key, *why;
} refused[] = {
    { "targetRef", "targetRef is not supported (it attaches the policy to a gateway or waypoint; "
                   "a sidecar takes selector.matchLabels)" },
    { "targetRefs", "targetRefs is not supported (it attaches the policy to a gateway or "
                    "waypoint; a sidecar takes selector.matchLabels)" },
    { "serviceAccounts", "serviceAccounts is not supported (use principals)" },
    { "notServiceAccounts", "notServiceAccounts is not supported (use notPrincipals)" },
    { "spaceDelimitedClaims", "spaceDelimitedClaims is not supported (claims are matched as "
                              "strings or arrays of strings)" },
};

/* Refuses the first key of mapping <n> listed in refused[] with its reason. */
static int refuse_known(struct proxy_front *f, const struct sc_ynode *n, const char *path)
{
    for (size_t i = 0; sc_ynode_kind(n) == SC_Y_MAP && i < sc_ynode_count(n); i++) {
        const char *k = sc_ynode_str(sc_ynode_key(n, i));
        for (size_t r = 0; k && r < sizeof(refused) / sizeof(refused[0]); r++) {
            if (strcmp(k, refused[r].key) == 0) {
                return proxy_front_refuse(f, sc_ynode_key(n, i), path, "%s", refused[r].why);
            }
        }
    }
    return 0;
}

/* Checks mapping <src> against the renames <rn> plus <extra> handled keys (NULL-terminated),
 * then copies each renamed key present into a new mapping. Returns it, or NULL after a refusal. */
static struct sc_ynode *renamed(struct proxy_front *f, const struct sc_ynode *src,
                                const struct rename *rn, const char *const *extra, const char *path)
{
    const char *handled[32];
    size_t n = 0;
    for (size_t i = 0; rn[i].from && n < 31; i++) {
        handled[n++] = rn[i].from;
    }
    for (size_t i = 0; extra && extra[i] && n < 31; i++) {
        handled[n++] = extra[i];
    }
    handled[n] = NULL;
    if (refuse_known(f, src, path) < 0 || proxy_front_keys(f, src, path, handled, NULL) < 0) {
        return NULL;
    }
    struct sc_ynode *out = proxy_front_map(f, src);
    for (size_t i = 0; out && rn[i].from; i++) {
        proxy_front_copy(f, out, rn[i].to, src, rn[i].from);
    }
    return f->err ? NULL : out;
}

/* The list <key> of <src>: each element through <one> into a new list set as <key2> of <dst>. */
static int each(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                const struct sc_ynode *src, const char *key, const char *path,
                struct sc_ynode *(*one)(struct proxy_front *f, const struct sc_ynode *e,
                                        const char *path))
{
    const struct sc_ynode *l = sc_ynode_get(src, key);
    if (!l || sc_ynode_kind(l) == SC_Y_NULL) {
        return 0;
    }
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".%s", key);
    if (sc_ynode_kind(l) != SC_Y_SEQ) {
        return proxy_front_refuse(f, l, p, "expected a list");
    }
    struct sc_ynode *out = proxy_front_seq(f, l);
    for (size_t i = 0; out && i < sc_ynode_count(l) && !f->err; i++) {
        proxy_front_path(p, path, ".%s[%zu]", key, i);
        const struct sc_ynode *e = sc_ynode_at(l, i);
        struct sc_ynode *v = one(f, e, p);
        if (v) {
            proxy_front_push(f, out, v, e);
        }
    }
    if (!f->err) {
        proxy_front_set(f, dst, key2, out, l);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* Loads the translated <entry> alone as native key <key> (an AuthorizationPolicy with the native
 * document's extension_providers) and runs the module's own check, so a value only the check
 * refuses (a CIDR, a `when` key, a provider no extension_providers names, a missing jwks) is
 * reported at the resource's position. A value the loader refuses, or a required key missing,
 * is left to the final load, which reports it (the checks assume required keys are set). */
static int native_check(struct proxy_front *f, const char *key, struct sc_ynode *entry,
                        const struct sc_ynode *doc, const char *path)
{
    bool authz = strcmp(key, "authorization") == 0;
    struct sc_ytree *t = sc_ytree_new(f->name);
    struct sc_ynode *root = sc_ytree_map(t, doc), *l = sc_ytree_seq(t, doc);
    struct sc_ynode *e = sc_ytree_copy(t, entry);
    const struct sc_ynode *providers = sc_ynode_get(f->native, "extension_providers");
    int rc = root && l && e && sc_ynode_push(t, l, e) == 0 && sc_ynode_put(t, root, key, l) == 0
                 ? 0
                 : -1;
    if (rc == 0 && authz && providers) {
        struct sc_ynode *p = sc_ytree_copy(t, providers);
        rc = p ? sc_ynode_put(t, root, "extension_providers", p) : -1;
    }
    if (rc < 0) {
        sc_ytree_free(t);
        return proxy_front_refuse(f, doc, path, "configuration too large");
    }
    char *err = NULL;
    if (authz) {
        struct proxy_authz_cfg c = { 0 };
        if (sc_ytree_load(proxy_authz_opts, &c, f->name, root, &err) == 0 &&
            sc_config_check_required(proxy_authz_opts, &c, f->name, &err) == 0) {
            rc = proxy_authz_check(&c, &err);
        }
        sc_config_free(proxy_authz_opts, &c);
    } else {
        struct proxy_jwt_cfg c = { 0 };
        if (sc_ytree_load(proxy_jwt_opts, &c, f->name, root, &err) == 0 &&
            sc_config_check_required(proxy_jwt_opts, &c, f->name, &err) == 0) {
            rc = proxy_jwt_check(&c, &err);
        }
        sc_config_free(proxy_jwt_opts, &c);
    }
    sc_ytree_free(t);
    if (rc < 0) {
        proxy_front_refuse(f, doc, path, "%s", err);
    }
    sc_free(err);
    return rc < 0 ? SC_ECONFIG : 0;
}

/* ---- AuthorizationPolicy ---- */

/* from[i] / to[i]: a mapping holding only <inner> (source / operation). */
static struct sc_ynode *wrapped(struct proxy_front *f, const struct sc_ynode *e, const char *path,
                                const char *inner, const struct rename *rn)
{
    const char *const keys[] = { inner, NULL };
    if (proxy_front_keys(f, e, path, keys, NULL) < 0) {
        return NULL;
    }
    struct sc_ynode *out = proxy_front_map(f, e);
    const struct sc_ynode *in = sc_ynode_get(e, inner);
    if (out && in && sc_ynode_kind(in) != SC_Y_NULL) {
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".%s", inner);
        struct sc_ynode *v = renamed(f, in, rn, NULL, p);
        if (!v) {
            return NULL;
        }
        proxy_front_set(f, out, inner, v, in);
    }
    return f->err ? NULL : out;
}

static struct sc_ynode *from_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    return wrapped(f, e, path, "source", source_keys);
}

static struct sc_ynode *to_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    return wrapped(f, e, path, "operation", operation_keys);
}

static struct sc_ynode *when_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    return renamed(f, e, cond_keys, NULL, path);
}

static struct sc_ynode *rule_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    static const char *const keys[] = { "from", "to", "when", NULL };
    if (proxy_front_keys(f, e, path, keys, NULL) < 0) {
        return NULL;
    }
    /* A rule {} (or null) matches every request, as in Istio. */
    struct sc_ynode *out = proxy_front_map(f, e);
    if (!out || each(f, out, "from", e, "from", path, from_one) < 0 ||
        each(f, out, "to", e, "to", path, to_one) < 0 ||
        each(f, out, "when", e, "when", path, when_one) < 0) {
        return NULL;
    }
    return out;
}

/* metadata, selector: name, namespace, match_labels of the native entry <e>. */
static int scope(struct proxy_front *f, struct sc_ynode *e, const struct sc_ynode *doc,
                 const struct sc_ynode *spec, const char *path)
{
    const struct sc_ynode *meta = sc_ynode_get(doc, "metadata");
    proxy_front_copy(f, e, "name", meta, "name");
    proxy_front_copy(f, e, "namespace", meta, "namespace");
    const struct sc_ynode *sel = sc_ynode_get(spec, "selector");
    static const char *const sel_keys[] = { "matchLabels", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".spec.selector");
    if (proxy_front_keys(f, sel, p, sel_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_copy(f, e, "match_labels", sel, "matchLabels");
    return f->err ? SC_ECONFIG : 0;
}

/* metadata.annotations: istio.io/dry-run is the policy's dry_run; the rest is noted. */
static int annotations(struct proxy_front *f, struct sc_ynode *e, const struct sc_ynode *doc,
                       const char *path)
{
    const struct sc_ynode *an = sc_ynode_get(sc_ynode_get(doc, "metadata"), "annotations");
    if (!an || sc_ynode_kind(an) == SC_Y_NULL) {
        return 0;
    }
    if (sc_ynode_kind(an) != SC_Y_MAP) {
        return proxy_front_refuse(f, an, path, "metadata.annotations must be a mapping");
    }
    for (size_t i = 0; i < sc_ynode_count(an); i++) {
        const struct sc_ynode *k = sc_ynode_key(an, i), *v = sc_ynode_val(an, i);
        const char *ks = sc_ynode_str(k);
        if (ks && strcmp(ks, DRY_RUN) == 0 && e) {
            proxy_front_set(f, e, "dry_run", sc_ytree_copy(f->out, v), v);
        } else {
            proxy_front_note(f, k, path, "metadata.annotations.%.64s has no effect here",
                             ks ? ks : "?");
        }
    }
    return f->err ? SC_ECONFIG : 0;
}

static int add_ap(struct proxy_front *f, const struct sc_ynode *doc, const char *kind)
{
    char path[PROXY_FRONT_PATH], p[PROXY_FRONT_PATH];
    proxy_front_path(path, kind, "/%.128s", proxy_istio_name(doc));
    const struct sc_ynode *spec;
    if (proxy_istio_top(f, doc, path, &spec, true) < 0) {
        return SC_ECONFIG;
    }
    static const char *const spec_keys[] = { "selector", "rules", "action", "provider", NULL };
    proxy_front_path(p, path, ".spec");
    if (refuse_known(f, spec, p) < 0 || proxy_front_keys(f, spec, p, spec_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *ap = proxy_front_map(f, doc);
    struct sc_ynode *list = proxy_front_list(f, "authorization", doc);
    if (!ap || !list || scope(f, ap, doc, spec, path) < 0 || annotations(f, ap, doc, path) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_copy(f, ap, "action", spec, "action");
    const struct sc_ynode *prov = sc_ynode_get(spec, "provider");
    static const char *const prov_keys[] = { "name", NULL };
    proxy_front_path(p, path, ".spec.provider");
    if (proxy_front_keys(f, prov, p, prov_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_copy(f, ap, "provider", prov, "name");
    proxy_front_path(p, path, ".spec");
    if (each(f, ap, "rules", spec, "rules", p, rule_one) < 0 ||
        native_check(f, "authorization", ap, spec, p) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_push(f, list, ap, doc);
    return f->err ? SC_ECONFIG : 0;
}

/* ---- RequestAuthentication ---- */

static struct sc_ynode *header_one(struct proxy_front *f, const struct sc_ynode *e,
                                   const char *path)
{
    return renamed(f, e, header_keys, NULL, path);
}

static struct sc_ynode *claim_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    return renamed(f, e, claim_keys, NULL, path);
}

static struct sc_ynode *jwt_one(struct proxy_front *f, const struct sc_ynode *e, const char *path)
{
    static const char *const extra[] = { "fromHeaders", "outputClaimToHeaders", "timeout", NULL };
    struct sc_ynode *out = renamed(f, e, jwt_keys, extra, path);
    if (!out || each(f, out, "from_headers", e, "fromHeaders", path, header_one) < 0 ||
        each(f, out, "output_claim_to_headers", e, "outputClaimToHeaders", path, claim_one) < 0) {
        return NULL;
    }
    const struct sc_ynode *t = sc_ynode_get(e, "timeout");
    if (t) {
        /* Istio's jwksUri fetch timeout: our fetch has its own bound and retry schedule. */
        proxy_front_note(f, t, path,
                         "timeout is accepted and has no effect here (jwks_uri fetches have "
                         "their own timeout and retry)");
    }
    return out;
}

static int add_ra(struct proxy_front *f, const struct sc_ynode *doc, const char *kind)
{
    char path[PROXY_FRONT_PATH], p[PROXY_FRONT_PATH];
    proxy_front_path(path, kind, "/%.128s", proxy_istio_name(doc));
    const struct sc_ynode *spec;
    if (proxy_istio_top(f, doc, path, &spec, true) < 0 || annotations(f, NULL, doc, path) < 0) {
        return SC_ECONFIG;
    }
    static const char *const spec_keys[] = { "selector", "jwtRules", NULL };
    proxy_front_path(p, path, ".spec");
    if (refuse_known(f, spec, p) < 0 || proxy_front_keys(f, spec, p, spec_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *ra = proxy_front_map(f, doc);
    struct sc_ynode *list = proxy_front_list(f, "request_authentication", doc);
    if (!ra || !list || scope(f, ra, doc, spec, path) < 0 ||
        each(f, ra, "jwt_rules", spec, "jwtRules", p, jwt_one) < 0 ||
        native_check(f, "request_authentication", ra, spec, p) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_push(f, list, ra, doc);
    return f->err ? SC_ECONFIG : 0;
}

const struct proxy_front_kind proxy_istio_authz_kinds[] = {
    { "AuthorizationPolicy", proxy_istio_security_versions, add_ap },
    { "RequestAuthentication", proxy_istio_security_versions, add_ra },
    { 0 },
};
