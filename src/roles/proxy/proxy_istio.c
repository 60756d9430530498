// SPDX-License-Identifier: Apache-2.0
// Istio resources as proxy configuration (see proxy_front.h). PeerAuthentication becomes a
// peer_authentication entry at once. VirtualService, DestinationRule and ServiceEntry are gathered
// and translated together: each destination host becomes one cluster per port, "<fqdn>:<port>",
// whose endpoints come from a ServiceEntry (labelled, so subsets select on them) or from DNS (a
// Kubernetes Service name), whose policy (proxy_istio_policy.c) and subsets come from the
// DestinationRule of the host (a subset with a policy of its own is a cluster of its own), and
// each VirtualService http route becomes routes of the outbound listeners matching the request's
// Host against every form of the virtual service's hosts. Invariant: a field without an equivalent
// is refused at its position; a subset that selects no endpoint is refused at the route naming it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_front.h"

#define NAME_MAX_LEN 253
#define DEFAULT_PORT "80"

static const char *const networking_versions[] = { "networking.istio.io/v1alpha3",
                                                   "networking.istio.io/v1beta1",
                                                   "networking.istio.io/v1", NULL };
const char *const proxy_istio_security_versions[] = { "security.istio.io/v1beta1",
                                                      "security.istio.io/v1", NULL };

static const char *const top_keys[] = { "apiVersion", "kind", "metadata", "spec", NULL };
static const char *const top_noted[] = { "status", NULL };
static const char *const meta_keys[] = { "name", "namespace", NULL };
static const char *const meta_noted[] = { "annotations",
                                          "labels",
                                          "uid",
                                          "resourceVersion",
                                          "generation",
                                          "creationTimestamp",
                                          "managedFields",
                                          "ownerReferences",
                                          "generateName",
                                          "finalizers",
                                          "deletionTimestamp",
                                          NULL };

/* ---- small helpers ---- */

/* The resource's namespace: metadata.namespace, else the workload's. */
const char *proxy_istio_ns(const struct proxy_front *f, const struct sc_ynode *doc)
{
    const char *ns = sc_ynode_str(sc_ynode_get(sc_ynode_get(doc, "metadata"), "namespace"));
    return ns && *ns ? ns : f->ns;
}

const char *proxy_istio_name(const struct sc_ynode *doc)
{
    const char *n = sc_ynode_str(sc_ynode_get(sc_ynode_get(doc, "metadata"), "name"));
    return n ? n : "";
}

int proxy_istio_top(struct proxy_front *f, const struct sc_ynode *doc, const char *path,
                    const struct sc_ynode **spec, bool annotations)
{
    /* With <annotations>, the caller reads metadata.annotations itself (meta_noted's first). */
    if (proxy_front_keys(f, doc, path, top_keys, top_noted) < 0 ||
        proxy_front_keys(f, sc_ynode_get(doc, "metadata"), path,
                         annotations
                             ? (const char *const[]){ "name", "namespace", "annotations", NULL }
                             : meta_keys,
                         annotations ? meta_noted + 1 : meta_noted) < 0) {
        return SC_ECONFIG;
    }
    if (!*proxy_istio_name(doc)) {
        return proxy_front_refuse(f, doc, path, "metadata.name is required");
    }
    *spec = sc_ynode_get(doc, "spec");
    if (sc_ynode_kind(*spec) != SC_Y_MAP) {
        return proxy_front_refuse(f, *spec ? *spec : doc, path, "spec must be a mapping");
    }
    if (sc_ynode_count(*spec) > PROXY_FRONT_MAX_KEYS) {
        return proxy_front_refuse(f, *spec, path, "spec has more than %d keys",
                                  PROXY_FRONT_MAX_KEYS);
    }
    return 0;
}

void proxy_istio_fqdn(const char *h, const char *ns, char *out, size_t len)
{
    if (strchr(h, '.') || strcmp(h, "*") == 0) {
        snprintf(out, len, "%s", h);
    } else {
        snprintf(out, len, "%s.%s.svc.cluster.local", h, ns);
    }
}

/* ---- PeerAuthentication ---- */

static int add_peer_auth(struct proxy_front *f, const struct sc_ynode *doc, const char *kind)
{
    char path[PROXY_FRONT_PATH];
    proxy_front_path(path, kind, "/%.128s", proxy_istio_name(doc));
    const struct sc_ynode *spec;
    if (proxy_istio_top(f, doc, path, &spec, false) < 0) {
        return SC_ECONFIG;
    }
    static const char *const spec_keys[] = { "selector", "mtls", "portLevelMtls", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".spec");
    if (proxy_front_keys(f, spec, p, spec_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *pa = proxy_front_map(f, doc);
    struct sc_ynode *list = proxy_front_list(f, "peer_authentication", doc);
    if (!pa || !list) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *meta = sc_ynode_get(doc, "metadata");
    proxy_front_copy(f, pa, "name", meta, "name");
    proxy_front_copy(f, pa, "namespace", meta, "namespace");
    const struct sc_ynode *sel = sc_ynode_get(spec, "selector");
    static const char *const sel_keys[] = { "matchLabels", NULL };
    proxy_front_path(p, path, ".spec.selector");
    if (proxy_front_keys(f, sel, p, sel_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_copy(f, pa, "match_labels", sel, "matchLabels");
    const struct sc_ynode *mtls = sc_ynode_get(spec, "mtls");
    static const char *const mtls_keys[] = { "mode", NULL };
    proxy_front_path(p, path, ".spec.mtls");
    if (proxy_front_keys(f, mtls, p, mtls_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_copy(f, pa, "mode", mtls, "mode");
    const struct sc_ynode *plm = sc_ynode_get(spec, "portLevelMtls");
    if (plm && sc_ynode_kind(plm) != SC_Y_NULL) {
        if (sc_ynode_kind(plm) != SC_Y_MAP) {
            return proxy_front_refuse(f, plm, path, "spec.portLevelMtls must map ports to modes");
        }
        struct sc_ynode *ports = proxy_front_seq(f, plm);
        for (size_t i = 0; i < sc_ynode_count(plm) && !f->err; i++) {
            const struct sc_ynode *k = sc_ynode_key(plm, i), *v = sc_ynode_val(plm, i);
            proxy_front_path(p, path, ".spec.portLevelMtls.%.16s",
                             sc_ynode_str(k) ? sc_ynode_str(k) : "?");
            if (proxy_front_keys(f, v, p, mtls_keys, NULL) < 0) {
                return SC_ECONFIG;
            }
            struct sc_ynode *e = proxy_front_map(f, k);
            proxy_front_set(f, e, "port", sc_ytree_copy(f->out, k), k);
            proxy_front_copy(f, e, "mode", v, "mode");
            proxy_front_push(f, ports, e, k);
        }
        proxy_front_set(f, pa, "port_level_mtls", ports, plm);
    }
    proxy_front_push(f, list, pa, doc);
    return f->err ? SC_ECONFIG : 0;
}

static int add_pa(struct proxy_front *f, const struct sc_ynode *doc, const char *path)
{
    return add_peer_auth(f, doc, path);
}

/* ---- gathering the traffic resources ---- */

static int gather(struct proxy_front *f, const struct sc_ynode ***v, size_t *n,
                  const struct sc_ynode *doc, const char *path)
{
    const struct sc_ynode *spec;
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, "/%.128s", proxy_istio_name(doc));
    if (proxy_istio_top(f, doc, p, &spec, false) < 0) {
        return SC_ECONFIG;
    }
    *v = sc_reallocarray(*v, *n + 1, sizeof(**v));
    (*v)[(*n)++] = doc;
    return 0;
}

static int add_vs(struct proxy_front *f, const struct sc_ynode *doc, const char *path)
{
    return gather(f, &f->vs, &f->nvs, doc, path);
}

static int add_dr(struct proxy_front *f, const struct sc_ynode *doc, const char *path)
{
    return gather(f, &f->dr, &f->ndr, doc, path);
}

static int add_se(struct proxy_front *f, const struct sc_ynode *doc, const char *path)
{
    return gather(f, &f->se, &f->nse, doc, path);
}

static int add_sidecar(struct proxy_front *f, const struct sc_ynode *doc, const char *path)
{
    return gather(f, &f->sidecar, &f->nsidecar, doc, path);
}

const struct proxy_front_kind proxy_istio_kinds[] = {
    { "PeerAuthentication", proxy_istio_security_versions, add_pa },
    { "VirtualService", networking_versions, add_vs },
    { "DestinationRule", networking_versions, add_dr },
    { "ServiceEntry", networking_versions, add_se },
    { "Sidecar", networking_versions, add_sidecar },
    { 0 },
};

/* ---- hosts and clusters ---- */

/* Finds the resource among <v> whose host (spec.host, or one of spec.hosts) is <host> after
 * expansion in the resource's namespace. */
const struct sc_ynode *proxy_istio_find_host(const struct proxy_front *f, const struct sc_ynode **v,
                                             size_t n, const char *host)
{
    char h[NAME_MAX_LEN + 64];
    for (size_t i = 0; i < n; i++) {
        const struct sc_ynode *spec = sc_ynode_get(v[i], "spec");
        const char *one = sc_ynode_str(sc_ynode_get(spec, "host"));
        if (one) {
            proxy_istio_fqdn(one, proxy_istio_ns(f, v[i]), h, sizeof(h));
            if (strcmp(h, host) == 0) {
                return v[i];
            }
        }
        const struct sc_ynode *hs = sc_ynode_get(spec, "hosts");
        for (size_t j = 0; j < sc_ynode_count(hs); j++) {
            const char *s = sc_ynode_str(sc_ynode_at(hs, j));
            if (s) {
                proxy_istio_fqdn(s, proxy_istio_ns(f, v[i]), h, sizeof(h));
                if (strcmp(h, host) == 0) {
                    return v[i];
                }
            }
        }
    }
    return NULL;
}

/* The clusters made so far, by name, so a host used by several routes is one cluster. */
struct istio_made {
    char **names;
    struct sc_ynode **nodes;
    size_t n;
};

static struct sc_ynode *made_find(const struct istio_made *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->names[i], name) == 0) {
            return m->nodes[i];
        }
    }
    return NULL;
}

/* Do labels <have> carry all of <want>? */
static bool labels_match(const struct sc_ynode *have, const struct sc_ynode *want)
{
    for (size_t j = 0; j < sc_ynode_count(want); j++) {
        const char *k = sc_ynode_str(sc_ynode_key(want, j));
        const char *v = sc_ynode_str(sc_ynode_val(want, j));
        const char *h = k ? sc_ynode_str(sc_ynode_get(have, k)) : NULL;
        if (!h || !v || strcmp(h, v) != 0) {
            return false;
        }
    }
    return true;
}

/* Adds to cluster <c> the endpoints of ServiceEntry <se> for <port> (its port number), only those
 * whose labels carry all of <only> when it is not NULL. Returns whether any endpoint carries
 * labels. */
static bool se_endpoints(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *se,
                         const char *host, const char *port, const char *path,
                         const struct sc_ynode *only)
{
    const struct sc_ynode *spec = sc_ynode_get(se, "spec");
    static const char *const se_keys[] = { "hosts", "ports", "resolution", "endpoints", NULL };
    static const char *const se_noted[] = { "exportTo", "subjectAltNames", "workloadSelector",
                                            "location", "addresses",       NULL };
    if (proxy_front_keys(f, spec, path, se_keys, se_noted) < 0) {
        return false;
    }
    static const struct proxy_front_enum resolutions[] = { { "NONE", NULL },
                                                           { "STATIC", NULL },
                                                           { "DNS", NULL },
                                                           { "DNS_ROUND_ROBIN", NULL },
                                                           { NULL, NULL } };
    const struct proxy_front_enum *res =
        proxy_front_enum(f, spec, "resolution", path, NULL, resolutions);
    if (f->err) {
        return false;
    }
    /* The port's name, for endpoints that map it to a port of their own. */
    const char *pname = NULL;
    const struct sc_ynode *ports = sc_ynode_get(spec, "ports");
    for (size_t i = 0; i < sc_ynode_count(ports); i++) {
        const struct sc_ynode *p = sc_ynode_at(ports, i);
        const char *num = sc_ynode_str(sc_ynode_get(p, "number"));
        if (num && strcmp(num, port) == 0) {
            pname = sc_ynode_str(sc_ynode_get(p, "name"));
            const char *tport = sc_ynode_str(sc_ynode_get(p, "targetPort"));
            port = tport ? tport : port;
        }
    }
    const struct sc_ynode *eps = sc_ynode_get(spec, "endpoints");
    char addr[NAME_MAX_LEN + 16];
    bool labelled = false;
    if (sc_ynode_count(eps) == 0) {
        if (res && strcmp(res->name, "STATIC") == 0) {
            proxy_front_refuse(f, spec, path, "resolution STATIC needs endpoints");
            return false;
        }
        struct sc_ynode *l = proxy_front_seq(f, spec);
        snprintf(addr, sizeof(addr), "%.253s:%.10s", host, port);
        proxy_front_push(f, l, sc_ytree_str(f->out, spec, addr), spec);
        proxy_front_set(f, c, "endpoints", l, spec);
        return false;
    }
    struct sc_ynode *l = proxy_front_seq(f, eps);
    static const char *const ep_keys[] = { "address", "ports", "labels", NULL };
    static const char *const ep_noted[] = { "network", "locality", "weight", "serviceAccount",
                                            NULL };
    for (size_t i = 0; i < sc_ynode_count(eps) && !f->err; i++) {
        const struct sc_ynode *ep = sc_ynode_at(eps, i);
        if (proxy_front_keys(f, ep, path, ep_keys, ep_noted) < 0) {
            return false;
        }
        const char *a = proxy_front_str(f, ep, "address", path);
        if (!a) {
            proxy_front_refuse(f, ep, path, "endpoints[%zu].address is required", i);
            return false;
        }
        if (only && !labels_match(sc_ynode_get(ep, "labels"), only)) {
            continue;
        }
        const char *p = pname ? sc_ynode_str(sc_ynode_get(sc_ynode_get(ep, "ports"), pname)) : NULL;
        snprintf(addr, sizeof(addr), strchr(a, ':') ? "[%s]:%s" : "%s:%s", a, p ? p : port);
        struct sc_ynode *e = proxy_front_map(f, ep);
        proxy_front_put(f, e, "address", sc_ynode_get(ep, "address"), addr);
        proxy_front_copy(f, e, "labels", ep, "labels");
        labelled = labelled || sc_ynode_count(sc_ynode_get(ep, "labels")) > 0;
        proxy_front_push(f, l, e, ep);
    }
    proxy_front_set(f, c, "labeled_endpoints", l, eps);
    return labelled;
}

/* Does any labelled endpoint of ServiceEntry <se> carry all <labels>? */
static bool subset_selects(const struct sc_ynode *se, const struct sc_ynode *labels)
{
    const struct sc_ynode *eps = sc_ynode_get(sc_ynode_get(se, "spec"), "endpoints");
    for (size_t i = 0; i < sc_ynode_count(eps); i++) {
        if (labels_match(sc_ynode_get(sc_ynode_at(eps, i), "labels"), labels)) {
            return true;
        }
    }
    return false;
}

/* Returns the name of the cluster for <host> (a FQDN) on <port> (NULL: the ServiceEntry's first
 * port, else 80) and, with <sub> (an entry of the DestinationRule's subsets), of that subset: a
 * cluster "<host>:<port>/<subset>" of the endpoints it selects with the subset's own policy, as
 * Istio makes a cluster per subset. Made on first use; <at> is where the destination was named. */
static const char *cluster_for(struct proxy_front *f, struct istio_made *m, const char *host,
                               const char *port, const struct sc_ynode *sub,
                               const struct sc_ynode *at)
{
    const struct sc_ynode *se = proxy_istio_find_host(f, f->se, f->nse, host);
    if (!port) {
        const struct sc_ynode *ports = sc_ynode_get(sc_ynode_get(se, "spec"), "ports");
        port = sc_ynode_str(sc_ynode_get(sc_ynode_at(ports, 0), "number"));
        port = port ? port : DEFAULT_PORT;
    }
    const char *sname = sc_ynode_str(sc_ynode_get(sub, "name"));
    char name[NAME_MAX_LEN + 96];
    snprintf(name, sizeof(name), sub ? "%.253s:%.10s/%.63s" : "%.253s:%.10s", host, port,
             sname ? sname : "");
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->names[i], name) == 0) {
            return m->names[i];
        }
    }
    struct sc_ynode *c = proxy_front_map(f, at);
    struct sc_ynode *clusters = proxy_front_list(f, "clusters", at);
    if (!c || !clusters) {
        return NULL;
    }
    proxy_front_put(f, c, "name", at, name);
    char path[PROXY_FRONT_PATH];
    if (se) {
        snprintf(path, sizeof(path), "ServiceEntry/%.128s.spec", proxy_istio_name(se));
        se_endpoints(f, c, se, host, port, path, sub ? sc_ynode_get(sub, "labels") : NULL);
    } else {
        struct sc_ynode *l = proxy_front_seq(f, at);
        char addr[NAME_MAX_LEN + 16];
        snprintf(addr, sizeof(addr), "%.253s:%.10s", host, port);
        proxy_front_push(f, l, sc_ytree_str(f->out, at, addr), at);
        proxy_front_set(f, c, "endpoints", l, at);
    }
    const struct sc_ynode *dr = proxy_istio_find_host(f, f->dr, f->ndr, host);
    if (dr) {
        const struct sc_ynode *spec = sc_ynode_get(dr, "spec");
        snprintf(path, sizeof(path), "DestinationRule/%.128s.spec", proxy_istio_name(dr));
        static const char *const dr_keys[] = { "host", "trafficPolicy", "subsets", NULL };
        static const char *const dr_noted[] = { "exportTo", "workloadSelector", NULL };
        if (proxy_front_keys(f, spec, path, dr_keys, dr_noted) < 0) {
            return NULL;
        }
        if (proxy_istio_policy(f, c, dr, port, sub) < 0) {
            return NULL;
        }
        const struct sc_ynode *subs = sc_ynode_get(spec, "subsets");
        if (sc_ynode_count(subs)) {
            struct sc_ynode *l = proxy_front_seq(f, subs);
            static const char *const sub_keys[] = { "name", "labels", "trafficPolicy", NULL };
            for (size_t i = 0; i < sc_ynode_count(subs) && !f->err; i++) {
                const struct sc_ynode *s = sc_ynode_at(subs, i);
                char sp[PROXY_FRONT_PATH];
                proxy_front_path(sp, path, ".subsets[%zu]", i);
                if (proxy_front_keys(f, s, sp, sub_keys, NULL) < 0) {
                    return NULL;
                }
                struct sc_ynode *e = proxy_front_map(f, s);
                proxy_front_copy(f, e, "name", s, "name");
                proxy_front_copy(f, e, "labels", s, "labels");
                proxy_front_push(f, l, e, s);
            }
            if (!sub) { /* a subset's own cluster holds its endpoints only */
                proxy_front_set(f, c, "subsets", l, subs);
            }
        }
    }
    proxy_front_push(f, clusters, c, at);
    if (f->err) {
        return NULL;
    }
    m->names = sc_reallocarray(m->names, m->n + 1, sizeof(*m->names));
    m->nodes = sc_reallocarray(m->nodes, m->n + 1, sizeof(*m->nodes));
    m->names[m->n] = sc_strdup(name);
    m->nodes[m->n] = c;
    return m->names[m->n++];
}

/* Checks that <subset> of <host> exists in its DestinationRule and selects an endpoint; <*def>
 * gets its entry in the rule's subsets. */
static int check_subset(struct proxy_front *f, const char *host, const struct sc_ynode *sn,
                        const char *path, const struct sc_ynode **def)
{
    const char *subset = sc_ynode_str(sn);
    const struct sc_ynode *dr = proxy_istio_find_host(f, f->dr, f->ndr, host);
    const struct sc_ynode *subs = sc_ynode_get(sc_ynode_get(dr, "spec"), "subsets");
    for (size_t i = 0; subset && i < sc_ynode_count(subs); i++) {
        const struct sc_ynode *s = sc_ynode_at(subs, i);
        const char *n = sc_ynode_str(sc_ynode_get(s, "name"));
        if (n && strcmp(n, subset) == 0) {
            const struct sc_ynode *se = proxy_istio_find_host(f, f->se, f->nse, host);
            if (!se || !subset_selects(se, sc_ynode_get(s, "labels"))) {
                return proxy_front_refuse(f, sn, path,
                                          "subset %.64s of %.128s selects no endpoint (subsets "
                                          "select the labelled endpoints of a ServiceEntry)",
                                          subset, host);
            }
            *def = s;
            return 0;
        }
    }
    return proxy_front_refuse(f, sn, path, "no DestinationRule defines subset %.64s of %.128s",
                              subset ? subset : "?", host);
}

/* ---- VirtualService routes ---- */

struct dest {
    const char *cluster;
    const struct sc_ynode *subset;
    const struct sc_ynode *weight;
    const struct sc_ynode *at;
};

/* Resolves a destination {host, subset, port} into a cluster, and the subset the route then
 * selects in it. A subset with a traffic policy of its own, or any subset when <own> (mirrors and
 * TCP routes, which select no subset), is a cluster of its own holding its endpoints only. */
static int destination(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *d,
                       const char *ns, const char *path, bool own, struct dest *out)
{
    static const char *const d_keys[] = { "host", "subset", "port", NULL };
    if (proxy_front_keys(f, d, path, d_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *h = proxy_front_str(f, d, "host", path);
    if (!h || !*h) {
        return proxy_front_refuse(f, d, path, "destination.host is required");
    }
    if (strlen(h) > NAME_MAX_LEN) {
        return proxy_front_refuse(f, sc_ynode_get(d, "host"), path,
                                  "a host name has at most %d characters", NAME_MAX_LEN);
    }
    char host[NAME_MAX_LEN + 64];
    proxy_istio_fqdn(h, ns, host, sizeof(host));
    const struct sc_ynode *pn = sc_ynode_get(d, "port");
    static const char *const p_keys[] = { "number", NULL };
    if (pn && proxy_front_keys(f, pn, path, p_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *port = sc_ynode_str(sc_ynode_get(pn, "number"));
    out->subset = sc_ynode_get(d, "subset");
    const struct sc_ynode *def = NULL;
    if (out->subset && check_subset(f, host, out->subset, path, &def) < 0) {
        return SC_ECONFIG;
    }
    if (def && (own || sc_ynode_get(def, "trafficPolicy"))) {
        out->subset = NULL; /* the cluster is the subset */
    } else {
        def = NULL;
    }
    out->cluster = cluster_for(f, m, host, port, def, sc_ynode_get(d, "host"));
    return out->cluster ? 0 : SC_ECONFIG;
}

const char *proxy_istio_destination(struct proxy_front *f, struct istio_made *m,
                                    const struct sc_ynode *d, const char *ns, const char *path)
{
    struct dest out = { 0 };
    if (destination(f, m, d, ns, path, true, &out) < 0) {
        return NULL;
    }
    return out.cluster;
}

/* Istio's retryOn conditions as ours (the gRPC statuses act on gRPC calls only). */
static int retry_on(struct proxy_front *f, struct sc_ynode *rp, const struct sc_ynode *rn,
                    const char *path)
{
    const char *s = sc_ynode_str(rn);
    if (!s) {
        return 0;
    }
    struct sc_ynode *on = proxy_front_seq(f, rn), *codes = proxy_front_seq(f, rn);
    char part[64];
    const char *p = s;
    while (*p && !f->err) {
        size_t n = strcspn(p, ",");
        snprintf(part, sizeof(part), "%.*s", (int)(n < 63 ? n : 63), p);
        p += n + (p[n] == ',');
        char *t = part;
        while (*t == ' ') {
            t++;
        }
        if (!*t) {
            continue;
        }
        const struct proxy_front_enum *e = proxy_front_enum_find(proxy_front_retry_on, t);
        const char *ours = e ? e->ours : NULL;
        if (!ours && t[0] >= '1' && t[0] <= '5' && strlen(t) == 3) {
            proxy_front_push(f, codes, sc_ytree_str(f->out, rn, t), rn);
            ours = "retriable-status-codes";
        } else if (!ours) {
            return proxy_front_refuse(f, rn, path, "retryOn %.32s is not supported", t);
        }
        proxy_front_push(f, on, sc_ytree_str(f->out, rn, ours), rn);
    }
    if (sc_ynode_count(on)) {
        proxy_front_set(f, rp, "retry_on", on, rn);
    }
    if (sc_ynode_count(codes)) {
        proxy_front_set(f, rp, "retriable_status_codes", codes, rn);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* A percentage {value: N} (or the deprecated integer <old>) into <key> of <dst>. */
static void percentage(struct proxy_front *f, struct sc_ynode *dst, const struct sc_ynode *src,
                       const char *old, const char *path)
{
    const struct sc_ynode *pc = sc_ynode_get(src, "percentage");
    static const char *const pk[] = { "value", NULL };
    if (pc && proxy_front_keys(f, pc, path, pk, NULL) == 0) {
        proxy_front_copy(f, dst, "percentage", pc, "value");
    } else if (!pc && old) {
        proxy_front_copy(f, dst, "percentage", src, old);
    }
    if (!sc_ynode_get(dst, "percentage") && !f->err) {
        proxy_front_put(f, dst, "percentage", src, "100");
    }
}

static void fault(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *fn,
                  const char *path)
{
    static const char *const f_keys[] = { "delay", "abort", NULL };
    static const char *const d_keys[] = { "fixedDelay", "percentage", "percent", NULL };
    static const char *const a_keys[] = { "httpStatus", "percentage", NULL };
    if (proxy_front_keys(f, fn, path, f_keys, NULL) < 0) {
        return;
    }
    struct sc_ynode *out = proxy_front_map(f, fn);
    const struct sc_ynode *d = sc_ynode_get(fn, "delay");
    if (d && proxy_front_keys(f, d, path, d_keys, NULL) == 0) {
        struct sc_ynode *o = proxy_front_map(f, d);
        proxy_front_put_duration(f, o, "fixed_delay", d, "fixedDelay", path, NULL);
        percentage(f, o, d, "percent", path);
        proxy_front_set(f, out, "delay", o, d);
    }
    const struct sc_ynode *a = sc_ynode_get(fn, "abort");
    if (a && proxy_front_keys(f, a, path, a_keys, NULL) == 0) {
        struct sc_ynode *o = proxy_front_map(f, a);
        proxy_front_copy(f, o, "http_status", a, "httpStatus");
        percentage(f, o, a, NULL, path);
        proxy_front_set(f, out, "abort", o, a);
    }
    proxy_front_set(f, rt, "fault", out, fn);
}

/* Istio's headers {request, response} {set, add, remove} are our own shape. */
static void headers(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *hn,
                    const char *path)
{
    static const char *const h_keys[] = { "request", "response", NULL };
    static const char *const o_keys[] = { "set", "add", "remove", NULL };
    if (proxy_front_keys(f, hn, path, h_keys, NULL) < 0 ||
        proxy_front_keys(f, sc_ynode_get(hn, "request"), path, o_keys, NULL) < 0 ||
        proxy_front_keys(f, sc_ynode_get(hn, "response"), path, o_keys, NULL) < 0) {
        return;
    }
    proxy_front_set(f, rt, "headers", sc_ytree_copy(f->out, hn), hn);
}

/* The Host header values a request for <host> may carry: for a Kubernetes service name, the
 * short forms that resolve to it in the workload's namespace. */
static size_t host_forms(const struct proxy_front *f, const char *host, const char *port,
                         char out[][NAME_MAX_LEN + 16], size_t max)
{
    size_t n = 0;
    char base[4][NAME_MAX_LEN + 1];
    size_t nb = 0;
    snprintf(base[nb++], sizeof(base[0]), "%s", host);
    const char *suffix = strstr(host, ".svc.cluster.local");
    if (suffix && suffix[strlen(".svc.cluster.local")] == '\0') {
        size_t svc = (size_t)(suffix - host); /* "name.ns" */
        snprintf(base[nb++], sizeof(base[0]), "%.*s.svc", (int)svc, host);
        snprintf(base[nb++], sizeof(base[0]), "%.*s", (int)svc, host);
        const char *dot = memchr(host, '.', svc);
        if (dot && strlen(f->ns) == svc - (size_t)(dot - host) - 1 &&
            strncmp(dot + 1, f->ns, strlen(f->ns)) == 0) {
            snprintf(base[nb++], sizeof(base[0]), "%.*s", (int)(dot - host), host);
        }
    }
    (void)port; /* a name without a port matches the Host with any port */
    for (size_t i = 0; i < nb && n < max; i++) {
        snprintf(out[n++], NAME_MAX_LEN + 16, "%.253s", base[i]);
    }
    return n;
}

/* The match part of one native route from an Istio HTTPMatchRequest (NULL: match all). */
static struct sc_ynode *match(struct proxy_front *f, const struct sc_ynode *mn,
                              char forms[][NAME_MAX_LEN + 16], size_t nforms,
                              const struct sc_ynode *at, const char *path)
{
    struct sc_ynode *m = proxy_front_map(f, mn ? mn : at);
    struct sc_ynode *hs = proxy_front_seq(f, mn ? mn : at);
    if (mn) { /* its keys were checked by http_route */
        const char *icase = proxy_front_str(f, mn, "ignoreUriCase", path);
        if (icase && strcmp(icase, "true") == 0) {
            proxy_front_refuse(f, sc_ynode_get(mn, "ignoreUriCase"), path,
                               "ignoreUriCase is not supported");
            return NULL;
        }
        static const char *const sm_keys[] = { "exact", "prefix", "regex", NULL };
        const struct sc_ynode *uri = sc_ynode_get(mn, "uri");
        if (uri && proxy_front_keys(f, uri, path, sm_keys, NULL) == 0) {
            proxy_front_copy(f, m, "path", uri, "exact");
            proxy_front_copy(f, m, "prefix", uri, "prefix");
            proxy_front_copy(f, m, "regex", uri, "regex");
        }
        const struct sc_ynode *meth = sc_ynode_get(mn, "method");
        static const char *const ex_keys[] = { "exact", NULL };
        if (meth && proxy_front_keys(f, meth, path, ex_keys, NULL) == 0) {
            const struct sc_ynode *e = sc_ynode_get(meth, "exact");
            struct sc_ynode *l = proxy_front_seq(f, e);
            proxy_front_push(f, l, sc_ytree_copy(f->out, e), e);
            proxy_front_set(f, m, "methods", l, e);
        }
        /* the port the client addressed: the original destination's under interception */
        const struct sc_ynode *pn = sc_ynode_get(mn, "port");
        if (pn) {
            struct sc_ynode *l = proxy_front_seq(f, pn);
            proxy_front_push(f, l, sc_ytree_copy(f->out, pn), pn);
            proxy_front_set(f, m, "destination_ports", l, pn);
        }
        const struct sc_ynode *qp = sc_ynode_get(mn, "queryParams");
        struct sc_ynode *ql = proxy_front_seq(f, qp ? qp : mn);
        for (size_t i = 0; i < sc_ynode_count(qp) && !f->err; i++) {
            const struct sc_ynode *k = sc_ynode_key(qp, i), *v = sc_ynode_val(qp, i);
            if (proxy_front_keys(f, v, path, sm_keys, NULL) < 0) {
                return NULL;
            }
            struct sc_ynode *e = proxy_front_map(f, k);
            proxy_front_set(f, e, "name", sc_ytree_copy(f->out, k), k);
            proxy_front_copy(f, e, "exact", v, "exact");
            proxy_front_copy(f, e, "prefix", v, "prefix");
            proxy_front_copy(f, e, "regex", v, "regex");
            if (sc_ynode_get(v, "regex")) {
                proxy_front_regex(f, v, path, sc_ynode_str(sc_ynode_get(v, "regex")), NULL);
            }
            proxy_front_push(f, ql, e, k);
        }
        if (qp) {
            proxy_front_set(f, m, "query_parameters", ql, qp);
        }
        for (int w = 0; w < 2; w++) {
            const struct sc_ynode *hn = sc_ynode_get(mn, w ? "withoutHeaders" : "headers");
            for (size_t i = 0; i < sc_ynode_count(hn) && !f->err; i++) {
                const struct sc_ynode *k = sc_ynode_key(hn, i), *v = sc_ynode_val(hn, i);
                static const char *const hv_keys[] = { "exact", NULL };
                if (proxy_front_keys(f, v, path, hv_keys, NULL) < 0) {
                    return NULL; /* prefix and regex header matches have no equivalent */
                }
                struct sc_ynode *e = proxy_front_map(f, k);
                proxy_front_set(f, e, "name", sc_ytree_copy(f->out, k), k);
                proxy_front_copy(f, e, "value", v, "exact");
                if (w) {
                    proxy_front_put(f, e, "present", k, "false");
                }
                proxy_front_push(f, hs, e, k);
            }
        }
    }
    if (nforms) {
        struct sc_ynode *l = proxy_front_seq(f, at);
        for (size_t i = 0; i < nforms; i++) {
            proxy_front_push(f, l, sc_ytree_str(f->out, at, forms[i]), at);
        }
        proxy_front_set(f, m, "authority", l, at);
    }
    if (sc_ynode_count(hs)) {
        proxy_front_set(f, m, "headers", hs, at);
    }
    return f->err ? NULL : m;
}

/* Appends to <routes> the native routes of http[<i>] of VirtualService <vs>. */
static int http_route(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *vs,
                      const struct sc_ynode *h, size_t i, struct sc_ynode *routes,
                      char hosts[][NAME_MAX_LEN + 16], size_t nhosts, const char *vpath)
{
    char path[PROXY_FRONT_PATH];
    proxy_front_path(path, vpath, ".http[%zu]", i);
    static const char *const h_keys[] = { "name",           "match",      "route",
                                          "timeout",        "retries",    "fault",
                                          "rewrite",        "mirror",     "mirrorPercentage",
                                          "mirror_percent", "headers",    "redirect",
                                          "directResponse", "corsPolicy", NULL };
    if (proxy_front_keys(f, h, path, h_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const char *ns = proxy_istio_ns(f, vs);
    /* The matches first, as the document reads. */
    static const char *const m_keys[] = {
        "uri",  "method",      "headers",      "withoutHeaders",  "ignoreUriCase",
        "port", "queryParams", "sourceLabels", "sourceNamespace", "gateways",
        NULL
    };
    static const char *const m_noted[] = { "name", NULL };
    const struct sc_ynode *ms0 = sc_ynode_get(h, "match");
    size_t napply = 0;
    for (size_t k = 0; k < sc_ynode_count(ms0); k++) {
        char mp[PROXY_FRONT_PATH];
        proxy_front_path(mp, path, ".match[%zu]", k);
        if (proxy_front_keys(f, sc_ynode_at(ms0, k), mp, m_keys, m_noted) < 0) {
            return SC_ECONFIG;
        }
        int rc = proxy_istio_source_applies(f, vs, sc_ynode_at(ms0, k), mp);
        if (rc < 0) {
            return SC_ECONFIG;
        }
        napply += (size_t)rc;
    }
    if (sc_ynode_count(ms0) && napply == 0) {
        return 0; /* every match is for other workloads or gateways: the route is not this one's */
    }
    /* The action, shared by the route of every match. */
    struct sc_ynode *act = proxy_front_map(f, h);
    char rname[160];
    const char *hn = sc_ynode_str(sc_ynode_get(h, "name"));
    if (hn) {
        snprintf(rname, sizeof(rname), "%.64s.%.64s", proxy_istio_name(vs), hn);
    } else {
        snprintf(rname, sizeof(rname), "%.64s.%zu", proxy_istio_name(vs), i);
    }
    proxy_front_put(f, act, "name", h, rname);
    const struct sc_ynode *rl = sc_ynode_get(h, "route");
    int nact = (sc_ynode_count(rl) > 0) + !!sc_ynode_get(h, "redirect") +
               !!sc_ynode_get(h, "directResponse");
    if (nact != 1) {
        return proxy_front_refuse(f, h, path,
                                  "exactly one of route, redirect and directResponse is needed "
                                  "(delegate is not supported)");
    }
    if (sc_ynode_count(rl) == 0 && proxy_istio_answer(f, act, h, path) < 0) {
        return SC_ECONFIG;
    }
    struct sc_ynode *wl = proxy_front_seq(f, rl);
    long total = 0;
    for (size_t r = 0; r < sc_ynode_count(rl) && !f->err; r++) {
        char rp[PROXY_FRONT_PATH];
        proxy_front_path(rp, path, ".route[%zu]", r);
        const struct sc_ynode *rd = sc_ynode_at(rl, r);
        static const char *const rd_keys[] = { "destination", "weight", NULL };
        if (proxy_front_keys(f, rd, rp, rd_keys, NULL) < 0) {
            return SC_ECONFIG;
        }
        struct dest d = { 0 };
        if (destination(f, m, sc_ynode_get(rd, "destination"), ns, rp, false, &d) < 0) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *w = sc_ynode_get(rd, "weight");
        const char *ws = sc_ynode_str(w);
        char *end = NULL;
        long wv = ws ? strtol(ws, &end, 10) : 0;
        if (ws && (*end || wv < 0 || wv > 100)) {
            return proxy_front_refuse(f, w, rp, "weight must be 0 to 100");
        }
        total += ws ? wv : 0;
        struct sc_ynode *e = proxy_front_map(f, rd);
        proxy_front_put(f, e, "cluster", sc_ynode_get(rd, "destination"), d.cluster);
        if (d.subset) {
            proxy_front_set(f, e, "subset", sc_ytree_copy(f->out, d.subset), d.subset);
        }
        proxy_front_put(f, e, "weight", w ? w : rd, ws ? ws : "100");
        proxy_front_push(f, wl, e, rd);
    }
    if (sc_ynode_count(rl) > 1 && total != 100) {
        return proxy_front_refuse(f, rl, path, "route weights add up to %ld, not 100", total);
    }
    if (sc_ynode_count(rl) == 1) {
        const struct sc_ynode *d = sc_ynode_get(sc_ynode_at(rl, 0), "destination");
        proxy_front_copy(f, act, "cluster", sc_ynode_at(wl, 0), "cluster");
        (void)d;
        proxy_front_copy(f, act, "subset", sc_ynode_at(wl, 0), "subset");
    } else if (sc_ynode_count(rl) > 1) {
        proxy_front_set(f, act, "weighted_clusters", wl, rl);
    }
    /* Istio routes have no timeout unless one is given, and retry twice by default. */
    if (sc_ynode_get(h, "timeout")) {
        proxy_front_put_duration(f, act, "timeout", h, "timeout", path, NULL);
    } else {
        proxy_front_put(f, act, "timeout", h, "0ms");
    }
    struct sc_ynode *rp = proxy_front_map(f, h);
    const struct sc_ynode *rt = sc_ynode_get(h, "retries");
    static const char *const rt_keys[] = { "attempts", "perTryTimeout", "retryOn", NULL };
    static const char *const rt_noted[] = { "retryRemoteLocalities", NULL };
    const char *rpath = path;
    if (!rt && proxy_istio_mesh_retry(f)) { /* MeshConfig's default for routes without one */
        rt = proxy_istio_mesh_retry(f);
        rpath = "MeshConfig.defaultHttpRetryPolicy";
    }
    if (rt) {
        if (proxy_front_keys(f, rt, rpath, rt_keys, rt_noted) < 0) {
            return SC_ECONFIG;
        }
        proxy_front_copy(f, rp, "num_retries", rt, "attempts");
        if (!sc_ynode_get(rt, "attempts")) {
            proxy_front_put(f, rp, "num_retries", rt, "2");
        }
        proxy_front_put_duration(f, rp, "per_try_timeout", rt, "perTryTimeout", rpath, NULL);
        if (retry_on(f, rp, sc_ynode_get(rt, "retryOn"), rpath) < 0) {
            return SC_ECONFIG;
        }
    } else {
        proxy_front_put(f, rp, "num_retries", h, "2");
    }
    if (!sc_ynode_get(rp, "retry_on")) {
        /* Istio's default: connect-failure, refused-stream, unavailable, cancelled and 503. */
        struct sc_ynode *on = proxy_front_seq(f, h), *codes = proxy_front_seq(f, h);
        proxy_front_push(f, on, sc_ytree_str(f->out, h, "connect-failure"), h);
        proxy_front_push(f, on, sc_ytree_str(f->out, h, "reset"), h);
        proxy_front_push(f, on, sc_ytree_str(f->out, h, "retriable-status-codes"), h);
        proxy_front_push(f, codes, sc_ytree_str(f->out, h, "503"), h);
        proxy_front_set(f, rp, "retry_on", on, h);
        if (!sc_ynode_get(rp, "retriable_status_codes")) {
            proxy_front_set(f, rp, "retriable_status_codes", codes, h);
        }
    }
    proxy_front_set(f, act, "retry_policy", rp, h);
    if (sc_ynode_get(h, "fault")) {
        fault(f, act, sc_ynode_get(h, "fault"), path);
    }
    if (sc_ynode_get(h, "headers")) {
        headers(f, act, sc_ynode_get(h, "headers"), path);
    }
    if (sc_ynode_get(h, "corsPolicy") &&
        proxy_istio_cors(f, act, sc_ynode_get(h, "corsPolicy"), path) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *mir = sc_ynode_get(h, "mirror");
    if (mir) {
        struct dest d = { 0 };
        if (destination(f, m, mir, ns, path, true, &d) < 0) {
            return SC_ECONFIG;
        }
        struct sc_ynode *o = proxy_front_map(f, mir);
        proxy_front_put(f, o, "cluster", mir, d.cluster);
        const struct sc_ynode *mp = sc_ynode_get(h, "mirrorPercentage");
        static const char *const pk[] = { "value", NULL };
        if (mp && proxy_front_keys(f, mp, path, pk, NULL) == 0) {
            proxy_front_copy(f, o, "percentage", mp, "value");
        } else {
            proxy_front_copy(f, o, "percentage", h, "mirror_percent");
        }
        proxy_front_set(f, act, "mirror", o, mir);
    }
    const struct sc_ynode *rw = sc_ynode_get(h, "rewrite");
    static const char *const rw_keys[] = { "uri", "authority", "uriRegexRewrite", NULL };
    static const char *const rx_keys[] = { "match", "rewrite", NULL };
    const struct sc_ynode *rx = sc_ynode_get(rw, "uriRegexRewrite");
    if (rw && proxy_front_keys(f, rw, path, rw_keys, NULL) == 0 &&
        (!rx || proxy_front_keys(f, rx, path, rx_keys, NULL) == 0)) {
        proxy_front_copy(f, act, "host_rewrite", rw, "authority");
        if (rx) { /* regex_rewrite refuses it next to uri (prefix_rewrite) */
            proxy_front_regex_rewrite(f, act, rx, sc_ynode_get(rx, "match"),
                                      sc_ynode_get(rx, "rewrite"), path);
        }
        if (sc_ynode_get(rw, "uri")) {
            /* Istio replaces the matched prefix: every match must then be a prefix match. */
            const struct sc_ynode *ms = sc_ynode_get(h, "match");
            bool prefixes = sc_ynode_count(ms) > 0;
            for (size_t k = 0; k < sc_ynode_count(ms); k++) {
                prefixes =
                    prefixes && sc_ynode_get(sc_ynode_get(sc_ynode_at(ms, k), "uri"), "prefix");
            }
            if (!prefixes) {
                return proxy_front_refuse(f, sc_ynode_get(rw, "uri"), path,
                                          "rewrite.uri is supported with uri prefix matches only");
            }
            proxy_front_copy(f, act, "prefix_rewrite", rw, "uri");
        }
    }
    if (f->err) {
        return SC_ECONFIG;
    }
    /* One route per match (Istio ORs them); the same name, so metrics count them together. */
    const struct sc_ynode *ms = sc_ynode_get(h, "match");
    size_t nm = sc_ynode_count(ms) ? sc_ynode_count(ms) : 1;
    for (size_t k = 0; k < nm && !f->err; k++) {
        char mp[PROXY_FRONT_PATH];
        proxy_front_path(mp, path, ".match[%zu]", k);
        if (sc_ynode_at(ms, k) && !proxy_istio_source_applies(f, vs, sc_ynode_at(ms, k), NULL)) {
            continue; /* noted above */
        }
        struct sc_ynode *route = sc_ytree_copy(f->out, act);
        struct sc_ynode *mt = match(f, sc_ynode_at(ms, k), hosts, nhosts, h, mp);
        if (!route || !mt) {
            return proxy_front_refuse(f, h, path, "configuration too large");
        }
        proxy_front_set(f, route, "match", mt, h);
        proxy_front_push(f, routes, route, h);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* ---- Sidecar: which hosts the workload's outbound traffic may reach ---- */

#define MAX_EGRESS 64

struct scope {
    bool active;        /* a Sidecar applies */
    bool registry_only; /* outboundTrafficPolicy.mode REGISTRY_ONLY */
    size_t n;
    struct {
        char ns[64];
        char host[NAME_MAX_LEN + 1];
    } eg[MAX_EGRESS];
};

/* The namespace a host belongs to: a Kubernetes service name's own, else the namespace of the
 * resource that declares it. */
static void host_ns(const char *fq, const char *res_namespace, char *out, size_t len)
{
    const char *dot = strchr(fq, '.');
    const char *suffix = strstr(fq, ".svc.cluster.local");
    if (dot && suffix && suffix[strlen(".svc.cluster.local")] == '\0' && suffix > dot) {
        snprintf(out, len, "%.*s", (int)(suffix - dot - 1), dot + 1);
    } else {
        snprintf(out, len, "%s", res_namespace);
    }
}

/* Whether the scope lets the workload reach <fq> of namespace <ns> (Istio's "ns/host" egress
 * hosts: "*" any namespace, "." the Sidecar's, "~" none; "*" any host, "*.x" a suffix). */
static bool allowed(const struct scope *sc, const char *fq, const char *ns)
{
    if (!sc->active) {
        return true;
    }
    for (size_t i = 0; i < sc->n; i++) {
        const char *en = sc->eg[i].ns, *eh = sc->eg[i].host;
        if (strcmp(en, "*") != 0 && strcmp(en, ns) != 0) {
            continue;
        }
        size_t hl = strlen(eh), fl = strlen(fq);
        if (strcmp(eh, "*") == 0 || strcmp(eh, fq) == 0 ||
            (eh[0] == '*' && hl > 1 && fl > hl - 1 && strcmp(fq + fl - (hl - 1), eh + 1) == 0)) {
            return true;
        }
    }
    return false;
}

/* Reads the workload's Sidecar (one without workloadSelector, or whose selector the workload's
 * labels satisfy) into <sc>. */
static int sidecar_scope(struct proxy_front *f, struct scope *sc)
{
    for (size_t i = 0; i < f->nsidecar; i++) {
        const struct sc_ynode *doc = f->sidecar[i], *spec = sc_ynode_get(doc, "spec");
        char path[PROXY_FRONT_PATH];
        snprintf(path, sizeof(path), "Sidecar/%.128s.spec", proxy_istio_name(doc));
        static const char *const k[] = { "egress", "outboundTrafficPolicy", "workloadSelector",
                                         NULL };
        if (proxy_front_keys(f, spec, path, k, NULL) < 0) {
            return SC_ECONFIG;
        }
        if (strcmp(proxy_istio_ns(f, doc), f->ns) != 0) {
            proxy_front_note(f, doc, path,
                             "a Sidecar of namespace %.64s does not apply to this "
                             "workload (namespace %.64s)",
                             proxy_istio_ns(f, doc), f->ns);
            continue;
        }
        const struct sc_ynode *sel = sc_ynode_get(spec, "workloadSelector");
        static const char *const sk[] = { "labels", NULL };
        if (sel && proxy_front_keys(f, sel, path, sk, NULL) < 0) {
            return SC_ECONFIG;
        }
        if (!proxy_istio_workload_has(f, sc_ynode_get(sel, "labels"))) {
            proxy_front_note(f, sel, path,
                             "workloadSelector does not select this workload "
                             "(workload.labels of the proxy document, the labels file)");
            continue;
        }
        if (sc->active) {
            return proxy_front_refuse(f, doc, path, "a second Sidecar applies to this workload");
        }
        sc->active = true;
        const struct sc_ynode *otp = sc_ynode_get(spec, "outboundTrafficPolicy");
        static const char *const ok[] = { "mode", NULL };
        if (otp && proxy_front_keys(f, otp, path, ok, NULL) < 0) {
            return SC_ECONFIG;
        }
        const struct proxy_front_enum *mode = proxy_front_enum(
            f, otp, "mode", path, "outboundTrafficPolicy.mode", proxy_istio_outbound_modes);
        if (f->err) {
            return SC_ECONFIG;
        }
        if (mode) { /* else MeshConfig's */
            sc->registry_only = strcmp(mode->name, "REGISTRY_ONLY") == 0;
        }
        const struct sc_ynode *eg = sc_ynode_get(spec, "egress");
        if (!eg) {
            sc->eg[0].ns[0] = '*';
            sc->eg[0].host[0] = '*';
            sc->n = 1; /* no egress: every host, as Istio */
        }
        for (size_t j = 0; j < sc_ynode_count(eg); j++) {
            const struct sc_ynode *e = sc_ynode_at(eg, j);
            static const char *const ek[] = { "hosts", NULL };
            if (proxy_front_keys(f, e, path, ek, NULL) < 0) {
                return SC_ECONFIG; /* port, bind, captureMode */
            }
            const struct sc_ynode *hs = sc_ynode_get(e, "hosts");
            for (size_t h = 0; h < sc_ynode_count(hs); h++) {
                const char *s = sc_ynode_str(sc_ynode_at(hs, h));
                const char *slash = s ? strchr(s, '/') : NULL;
                if (!slash || slash == s || !slash[1] || slash - s >= 64 ||
                    strlen(slash + 1) > NAME_MAX_LEN) {
                    return proxy_front_refuse(f, sc_ynode_at(hs, h), path,
                                              "egress hosts read \"namespace/host\"");
                }
                if (sc->n == MAX_EGRESS) {
                    return proxy_front_refuse(f, sc_ynode_at(hs, h), path,
                                              "more than %d egress hosts", MAX_EGRESS);
                }
                snprintf(sc->eg[sc->n].ns, sizeof(sc->eg[0].ns), "%.*s", (int)(slash - s), s);
                if (strcmp(sc->eg[sc->n].ns, ".") == 0) {
                    snprintf(sc->eg[sc->n].ns, sizeof(sc->eg[0].ns), "%.63s", f->ns);
                }
                char fq[NAME_MAX_LEN + 64];
                proxy_istio_fqdn(slash + 1,
                                 strcmp(sc->eg[sc->n].ns, "*") ? sc->eg[sc->n].ns : f->ns, fq,
                                 sizeof(fq));
                snprintf(sc->eg[sc->n].host, sizeof(sc->eg[0].host), "%.253s",
                         strchr(slash + 1, '*') ? slash + 1 : fq);
                sc->n++;
            }
        }
    }
    return 0;
}

#define MAX_FORMS 64

/* The Host values of VirtualService <vs> (none when it has "*"); <*n> gets their count. */
static int vs_hosts(struct proxy_front *f, const struct sc_ynode *vs, const char *path,
                    const struct scope *sc, char forms[][NAME_MAX_LEN + 16], size_t *n, bool *none)
{
    *none = true;
    const struct sc_ynode *spec = sc_ynode_get(vs, "spec");
    const struct sc_ynode *hs = sc_ynode_get(spec, "hosts");
    *n = 0;
    if (sc_ynode_count(hs) == 0) {
        return proxy_front_refuse(f, spec, path, "hosts is required");
    }
    for (size_t i = 0; i < sc_ynode_count(hs); i++) {
        const char *h = sc_ynode_str(sc_ynode_at(hs, i));
        if (!h) {
            return proxy_front_refuse(f, sc_ynode_at(hs, i), path, "hosts[%zu] is not a name", i);
        }
        if (strcmp(h, "*") == 0) {
            *n = 0;
            *none = !allowed(sc, "*", "*");
            return 0;
        }
        if (strlen(h) > NAME_MAX_LEN) {
            return proxy_front_refuse(f, sc_ynode_at(hs, i), path,
                                      "a host name has at most %d characters", NAME_MAX_LEN);
        }
        if (h[0] == '*') {
            return proxy_front_refuse(f, sc_ynode_at(hs, i), path,
                                      "wildcard host %.64s is not supported", h);
        }
        char fq[NAME_MAX_LEN + 64], ns[NAME_MAX_LEN + 64];
        proxy_istio_fqdn(h, proxy_istio_ns(f, vs), fq, sizeof(fq));
        const struct sc_ynode *se = proxy_istio_find_host(f, f->se, f->nse, fq);
        host_ns(fq, se ? proxy_istio_ns(f, se) : proxy_istio_ns(f, vs), ns, sizeof(ns));
        if (!allowed(sc, fq, ns)) {
            continue; /* outside the Sidecar's egress hosts */
        }
        *none = false;
        const char *port = sc_ynode_str(sc_ynode_get(
            sc_ynode_at(sc_ynode_get(sc_ynode_get(se, "spec"), "ports"), 0), "number"));
        *n += host_forms(f, fq, port, forms + *n, MAX_FORMS - *n);
    }
    return 0;
}

/* The outbound listeners VirtualService routes go to, made (with the proxy's default inbound
 * listener and its cluster) when the configuration has no listeners of its own. */
static int outbound_listeners(struct proxy_front *f, const struct sc_ynode *at,
                              const struct scope *sc, struct sc_ynode **out, size_t *n)
{
    struct sc_ynode *ls = sc_ynode_get_mut(f->root, "listeners");
    *n = 0;
    if (sc_ynode_count(ls) == 0) {
        ls = proxy_front_list(f, "listeners", at);
        struct sc_ynode *clusters = proxy_front_list(f, "clusters", at);
        if (!ls || !clusters) {
            return SC_ECONFIG;
        }
        const char *app = sc_ynode_str(sc_ynode_get(f->root, "upstream"));
        struct sc_ynode *in = proxy_front_map(f, at), *ir = proxy_front_seq(f, at),
                        *r = proxy_front_map(f, at);
        proxy_front_put(f, in, "name", at, "inbound");
        proxy_front_put(f, in, "address", at, "0.0.0.0:15006");
        proxy_front_put(f, r, "name", at, "inbound");
        proxy_front_put(f, r, "cluster", at, "inbound");
        proxy_front_push(f, ir, r, at);
        proxy_front_set(f, in, "routes", ir, at);
        proxy_front_push(f, ls, in, at);
        struct sc_ynode *ob = proxy_front_map(f, at);
        proxy_front_put(f, ob, "name", at, "outbound");
        proxy_front_put(f, ob, "address", at, "127.0.0.1:15001");
        proxy_front_put(f, ob, "direction", at, "outbound");
        struct sc_ynode *orl = proxy_front_seq(f, at), *orr = proxy_front_map(f, at);
        proxy_front_put(f, orr, "name", at, "outbound");
        proxy_front_put(f, orr, "cluster", at, "outbound");
        if (!sc->registry_only) {
            /* ALLOW_ANY: what no route takes goes to its original destination. */
            proxy_front_push(f, orl, orr, at);
        }
        proxy_front_set(f, ob, "routes", orl, at);
        proxy_front_push(f, ls, ob, at);
        struct sc_ynode *ic = proxy_front_map(f, at), *eps = proxy_front_seq(f, at);
        proxy_front_put(f, ic, "name", at, "inbound");
        proxy_front_push(f, eps, sc_ytree_str(f->out, at, app ? app : "127.0.0.1:8080"), at);
        proxy_front_set(f, ic, "endpoints", eps, at);
        proxy_front_push(f, clusters, ic, at);
        struct sc_ynode *oc = proxy_front_map(f, at);
        proxy_front_put(f, oc, "name", at, "outbound");
        proxy_front_put(f, oc, "type", at, "original_dst");
        proxy_front_push(f, clusters, oc, at);
        if (f->err) {
            return SC_ECONFIG;
        }
    }
    for (size_t i = 0; i < sc_ynode_count(ls) && *n < 64; i++) {
        struct sc_ynode *l = (struct sc_ynode *)sc_ynode_at(ls, i);
        const char *dir = sc_ynode_str(sc_ynode_get(l, "direction"));
        if (dir && strcmp(dir, "outbound") == 0) {
            out[(*n)++] = l;
        }
    }
    if (*n == 0) {
        return proxy_front_refuse(f, at, NULL,
                                  "Istio traffic resources route on outbound listeners, and the "
                                  "proxy configuration has none (direction: outbound)");
    }
    if (sc->registry_only && sc_ynode_count(sc_ynode_get(f->native, "listeners"))) {
        proxy_front_note(f, at, NULL,
                         "outboundTrafficPolicy REGISTRY_ONLY leaves the proxy "
                         "document's own outbound routes as they are");
    }
    return 0;
}

int proxy_istio_finish(struct proxy_front *f)
{
    struct scope *sc = sc_calloc(1, sizeof(*sc));
    sc->registry_only = proxy_istio_mesh_registry_only(f);
    if (sidecar_scope(f, sc) < 0 ||
        (f->nvs == 0 && f->ndr == 0 && f->nse == 0 && !sc->registry_only)) {
        sc_free(sc);
        return f->err ? SC_ECONFIG : 0;
    }
    struct istio_made m = { 0 };
    struct sc_ynode *routes = NULL;
    /* REGISTRY_ONLY alone (a MeshConfig, no traffic resource) comes here too: its document. */
    const struct sc_ynode *at = f->nvs        ? f->vs[0]
                                : f->ndr      ? f->dr[0]
                                : f->nse      ? f->se[0]
                                : f->nsidecar ? f->sidecar[0]
                                              : f->mesh;
    struct sc_ynode *ols[64];
    size_t nols = 0;
    char(*forms)[NAME_MAX_LEN + 16] = sc_calloc(MAX_FORMS, sizeof(*forms));
    if (outbound_listeners(f, at, sc, ols, &nols) < 0) {
        goto out;
    }
    routes = proxy_front_seq(f, at);
    struct sc_ynode *troutes = proxy_front_seq(f, at);
    for (size_t v = 0; v < f->nvs && !f->err; v++) {
        const struct sc_ynode *vs = f->vs[v];
        const struct sc_ynode *spec = sc_ynode_get(vs, "spec");
        char path[PROXY_FRONT_PATH];
        snprintf(path, sizeof(path), "VirtualService/%.128s.spec", proxy_istio_name(vs));
        static const char *const vs_keys[] = { "hosts", "http", "gateways", "tcp", "tls", NULL };
        static const char *const vs_noted[] = { "exportTo", NULL };
        if (proxy_front_keys(f, spec, path, vs_keys, vs_noted) < 0) {
            break;
        }
        int gateways_only = proxy_istio_gateways(f, vs, path);
        if (gateways_only < 0) {
            goto out;
        }
        if (gateways_only) {
            continue;
        }
        size_t nforms;
        bool none;
        if (vs_hosts(f, vs, path, sc, forms, &nforms, &none) < 0) {
            break;
        }
        if (none) {
            proxy_front_note(f, vs, path,
                             "no host of this VirtualService is among the "
                             "Sidecar's egress hosts");
            continue;
        }
        const struct sc_ynode *http = sc_ynode_get(spec, "http");
        for (size_t i = 0; i < sc_ynode_count(http) && !f->err; i++) {
            http_route(f, &m, vs, sc_ynode_at(http, i), i, routes, forms, nforms, path);
        }
        proxy_istio_tcp(f, &m, vs, path, troutes);
    }
    /* Hosts with a DestinationRule or ServiceEntry and no VirtualService still get a route, so
     * their endpoints and policy apply as Istio applies them. */
    for (int pass = 0; pass < 2 && !f->err; pass++) {
        const struct sc_ynode **v = pass ? f->se : f->dr;
        size_t n = pass ? f->nse : f->ndr;
        for (size_t i = 0; i < n && !f->err; i++) {
            const struct sc_ynode *spec = sc_ynode_get(v[i], "spec");
            const struct sc_ynode *one = sc_ynode_get(spec, "host");
            const struct sc_ynode *hs = sc_ynode_get(spec, "hosts");
            size_t nh = one ? 1 : sc_ynode_count(hs);
            for (size_t j = 0; j < nh && !f->err; j++) {
                const struct sc_ynode *hn = one ? one : sc_ynode_at(hs, j);
                const char *h = sc_ynode_str(hn);
                if (!h || h[0] == '*' || strlen(h) > NAME_MAX_LEN) {
                    proxy_front_refuse(f, hn, pass ? "ServiceEntry" : "DestinationRule",
                                       "host must be a name of at most 253 characters "
                                       "(wildcards are not supported)");
                    break;
                }
                char fq[NAME_MAX_LEN + 64];
                proxy_istio_fqdn(h, proxy_istio_ns(f, v[i]), fq, sizeof(fq));
                if (proxy_istio_find_host(f, f->vs, f->nvs, fq)) {
                    continue;
                }
                const struct sc_ynode *se = proxy_istio_find_host(f, f->se, f->nse, fq);
                char hns[NAME_MAX_LEN + 64];
                host_ns(fq, se ? proxy_istio_ns(f, se) : proxy_istio_ns(f, v[i]), hns, sizeof(hns));
                if (!allowed(sc, fq, hns)) {
                    continue;
                }
                const char *port = sc_ynode_str(sc_ynode_get(
                    sc_ynode_at(sc_ynode_get(sc_ynode_get(se, "spec"), "ports"), 0), "number"));
                char pname[NAME_MAX_LEN + 64];
                snprintf(pname, sizeof(pname), "%.253s:%.10s", fq, port ? port : DEFAULT_PORT);
                if (made_find(&m, pname)) {
                    continue;
                }
                const char *c = cluster_for(f, &m, fq, port, NULL, hn);
                size_t nforms = host_forms(f, fq, port, forms, MAX_FORMS);
                if (c) {
                    struct sc_ynode *r = proxy_front_map(f, hn),
                                    *mt = match(f, NULL, forms, nforms, hn, "");
                    proxy_front_put(f, r, "name", hn, fq);
                    proxy_front_put(f, r, "cluster", hn, c);
                    proxy_front_set(f, r, "match", mt, hn);
                    proxy_front_push(f, routes, r, hn);
                }
            }
        }
    }
    /* The routes go first in every outbound listener, before its own. */
    for (size_t i = 0; i < nols && !f->err; i++) {
        struct sc_ynode *lr = sc_ynode_get_mut(ols[i], "routes");
        struct sc_ynode *merged = sc_ytree_copy(f->out, routes);
        for (size_t k = 0; merged && k < sc_ynode_count(lr); k++) {
            proxy_front_push(f, merged, sc_ytree_copy(f->out, sc_ynode_at(lr, k)),
                             sc_ynode_at(lr, k));
        }
        if (lr) {
            /* Replace the listener's list in place: its key keeps its position. */
            for (size_t k = 0; k < sc_ynode_count(ols[i]); k++) {
                if (sc_ynode_val(ols[i], k) == lr) {
                    sc_ynode_replace(ols[i], k, merged);
                }
            }
        } else {
            proxy_front_set(f, ols[i], "routes", merged, at);
        }
        if (sc_ynode_count(troutes)) {
            proxy_istio_tcp_listener(f, ols[i], troutes, at);
        }
    }
out:
    for (size_t i = 0; i < m.n; i++) {
        sc_free(m.names[i]);
    }
    sc_free(m.names);
    sc_free(m.nodes);
    sc_free(forms);
    sc_free(sc);
    return f->err ? SC_ECONFIG : 0;
}
