// SPDX-License-Identifier: Apache-2.0
// An Envoy listener's filter chains (see proxy_envoy.h). A listener of one chain holding an
// http_connection_manager is an HTTP listener as before, the chain's transport_socket its tls.
// Several chains, a tcp_proxy or a default_filter_chain become a listener of protocol auto (tcp
// when no chain needs the first bytes): the one http_connection_manager chain gives the routes
// (HTTP/1 and h2c told apart by detection, as http_inspector does), each tcp_proxy chain a
// tcp_route whose destination port, server names, transport protocol and ALPN are the chain's
// filter_chain_match, in Envoy's order of precedence (destination port, then exact server names,
// then wildcards from the longest, then transport protocol, then ALPN; the file's order among
// equals), and a tcp_proxy default_filter_chain the last tcp_route, which takes what no other
// chain does. Invariant: a combination that detection and first-match tcp_routes cannot express
// is refused at the chain that makes it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/str.h"
#include "roles/proxy/proxy_envoy.h"
#include "roles/proxy/proxy_envoy_chain.h"

#define MAX_CHAINS 128
#define MAX_TCP_ROUTES 256 /* the native tcp_routes bound */

/* One native tcp_route to be: the exact server names of chain <c> (wild NULL), one of its
 * wildcard names, or all names when it has none. */
struct troute {
    const struct envoy_chain *c;
    const char *wild;
    int klass;      /* 0 exact names, 1 a wildcard, 2 no names */
    int dlen, slen; /* the prefix length of its destination and source ranges (-1: none) */
    size_t order;
};

static bool takes_plaintext(const struct envoy_chain *c)
{
    return !c->sn && !c->ap && !is(c->tp, "tls");
}

static bool needs_hello(const struct envoy_chain *c)
{
    return c->sn || c->ap || c->tp;
}

/* Envoy's order of precedence: destination port, destination prefix (longest first), server
 * names (exact, then the longest wildcard), transport protocol, ALPN, source type, source prefix
 * (longest first), source ports; the file's order among equals. */
static int troute_cmp(const void *a, const void *b)
{
    const struct troute *x = a, *y = b;
    int k[2][9];
    const struct troute *t[2] = { x, y };
    for (int i = 0; i < 2; i++) {
        k[i][0] = t[i]->c->dp ? 0 : 1;
        k[i][1] = -t[i]->dlen;
        k[i][2] = t[i]->klass;
        k[i][3] = t[i]->wild ? -(int)strlen(t[i]->wild) : 0;
        k[i][4] = t[i]->c->tp ? 0 : 1;
        k[i][5] = t[i]->c->ap ? 0 : 1;
        k[i][6] = t[i]->c->st ? 0 : 1;
        k[i][7] = -t[i]->slen;
        k[i][8] = t[i]->c->sp ? 0 : 1;
    }
    for (int i = 0; i < 9; i++) {
        if (k[0][i] != k[1][i]) {
            return k[0][i] < k[1][i] ? -1 : 1;
        }
    }
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Whether <name> is a cluster of the bootstrap. */
static bool envoy_cluster(const struct proxy_front *f, const char *name)
{
    const struct sc_ynode *cs =
        sc_ynode_get(sc_ynode_get(f->envoy, "static_resources"), "clusters");
    for (size_t i = 0; i < sc_ynode_count(cs); i++) {
        if (is(sc_ynode_str(sc_ynode_get(sc_ynode_at(cs, i), "name")), name)) {
            return true;
        }
    }
    return false;
}

/* A tcp_proxy's cluster (one of weighted_clusters' when it names one) into <dst> as "cluster";
 * its idle_timeout onto the listener's tcp_idle_timeout (<*idle>: the first chain's). */
static int tcp_proxy(struct proxy_front *f, bool *access_log, const struct envoy_chain *c,
                     struct sc_ynode *dst, struct sc_ynode *l, const struct sc_ynode **idle)
{
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, c->path, ".filters[0].typed_config");
    if (proxy_envoy_want_type(f, c->tc, p, T_TCP_PROXY) < 0) {
        return SC_ECONFIG;
    }
    static const char *const k[] = { "@type",        "cluster",    "weighted_clusters",
                                     "idle_timeout", "access_log", NULL };
    static const char *const n[] = { "stat_prefix", NULL };
    if (proxy_front_keys(f, c->tc, p, k, n) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *cl = sc_ynode_get(c->tc, "cluster");
    const struct sc_ynode *wc = sc_ynode_get(c->tc, "weighted_clusters");
    if (!cl == !wc) {
        return proxy_front_refuse(f, c->tc, p, "one of cluster and weighted_clusters is required");
    }
    if (cl) {
        const char *name = sc_ynode_str(cl);
        if (!name || !envoy_cluster(f, name)) {
            return proxy_front_refuse(f, cl, p, "cluster \"%.128s\" is not a static cluster",
                                      name ? name : "");
        }
        proxy_front_put(f, dst, "cluster", cl, name);
    } else {
        static const char *const wk[] = { "clusters", NULL };
        if (proxy_front_keys(f, wc, p, wk, NULL) < 0) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *cs = sc_ynode_get(wc, "clusters");
        struct sc_ynode *out = proxy_front_seq(f, wc);
        for (size_t i = 0; i < sc_ynode_count(cs) && !f->err; i++) {
            const struct sc_ynode *e = sc_ynode_at(cs, i);
            static const char *const ck[] = { "name", "weight", NULL };
            static const char *const cn[] = { "metadata_match", NULL };
            if (proxy_front_keys(f, e, p, ck, cn) < 0) {
                return SC_ECONFIG;
            }
            const char *name = sc_ynode_str(sc_ynode_get(e, "name"));
            if (!name || !envoy_cluster(f, name)) {
                return proxy_front_refuse(f, e, p, "cluster \"%.128s\" is not a static cluster",
                                          name ? name : "");
            }
            struct sc_ynode *o = proxy_front_map(f, e);
            proxy_front_copy(f, o, "cluster", e, "name");
            proxy_front_copy(f, o, "weight", e, "weight");
            proxy_front_push(f, out, o, e);
        }
        proxy_front_set(f, dst, "weighted_clusters", out, wc);
    }
    if (sc_ynode_get(c->tc, "access_log")) {
        *access_log = true;
        proxy_front_note(f, sc_ynode_get(c->tc, "access_log"), p,
                         "access_log: the proxy writes its own JSON access log to stdout");
    }
    const struct sc_ynode *it = sc_ynode_get(c->tc, "idle_timeout");
    if (it) {
        if (*idle && !is(sc_ynode_str(*idle), sc_ynode_str(it))) {
            return proxy_front_refuse(f, it, p,
                                      "idle_timeout differs from another chain's: the listener "
                                      "has one tcp_idle_timeout");
        }
        if (!*idle) {
            *idle = it;
            proxy_front_put_duration(f, l, "tcp_idle_timeout", c->tc, "idle_timeout", p, NULL);
        }
    }
    return f->err ? SC_ECONFIG : 0;
}

/* Reads chain <fc> into <c>: its keys, its one filter, its filter_chain_match. */
static int read_chain(struct proxy_front *f, const struct sc_ynode *fc, struct envoy_chain *c)
{
    static const char *const fk[] = { "filters", "filter_chain_match", "transport_socket", "name",
                                      NULL };
    static const char *const fn[] = { "transport_socket_connect_timeout", "metadata", NULL };
    if (proxy_front_keys(f, fc, c->path, fk, fn) < 0) {
        return SC_ECONFIG;
    }
    c->fc = fc;
    const struct sc_ynode *fs = sc_ynode_get(fc, "filters");
    if (sc_ynode_count(fs) != 1) {
        return proxy_front_refuse(f, fs ? fs : fc, c->path,
                                  "exactly one network filter is supported");
    }
    c->nf = sc_ynode_at(fs, 0);
    char np[PROXY_FRONT_PATH];
    proxy_front_path(np, c->path, ".filters[0]");
    static const char *const nk[] = { "name", "typed_config", NULL };
    if (proxy_front_keys(f, c->nf, np, nk, NULL) < 0) {
        return SC_ECONFIG;
    }
    c->tc = sc_ynode_get(c->nf, "typed_config");
    const char *t = sc_ynode_str(sc_ynode_get(c->tc, "@type"));
    c->hcm = !is(t, T_TCP_PROXY);
    if (t && c->hcm && !is(t, T_HCM)) {
        proxy_front_path(np, c->path, ".filters[0].typed_config");
        return proxy_front_refuse(f, c->nf, np, "%.200s is not supported", t);
    }
    if (c->hcm && sc_ynode_get(fc, "name")) {
        proxy_front_note(f, sc_ynode_get(fc, "name"), c->path,
                         "name: an http_connection_manager chain's name has no effect here");
    }
    const struct sc_ynode *m = sc_ynode_get(fc, "filter_chain_match");
    if (!m) {
        return 0;
    }
    /* address_suffix, suffix_len (deprecated in Envoy) and the rest: refused */
    static const char *const mk[] = { "destination_port",
                                      "server_names",
                                      "transport_protocol",
                                      "application_protocols",
                                      "prefix_ranges",
                                      "source_prefix_ranges",
                                      "direct_source_prefix_ranges",
                                      "source_type",
                                      "source_ports",
                                      NULL };
    if (proxy_front_keys(f, m, c->path, mk, NULL) < 0) {
        return SC_ECONFIG;
    }
    c->dpn = sc_ynode_get(m, "destination_port");
    c->dp = proxy_front_str(f, m, "destination_port", c->path);
    c->tpn = sc_ynode_get(m, "transport_protocol");
    c->tp = proxy_front_str(f, m, "transport_protocol", c->path);
    c->sn =
        sc_ynode_count(sc_ynode_get(m, "server_names")) ? sc_ynode_get(m, "server_names") : NULL;
    c->ap = sc_ynode_count(sc_ynode_get(m, "application_protocols"))
                ? sc_ynode_get(m, "application_protocols")
                : NULL;
    if (proxy_envoy_chain_addr_read(f, m, c) < 0) {
        return SC_ECONFIG;
    }
    uint64_t port = 0;
    if (c->dp && (sc_str_to_u64(sc_str_c(c->dp), 65535, &port) < 0 || port == 0)) {
        return proxy_front_refuse(f, c->dpn, c->path, "destination_port %.16s is not a port",
                                  c->dp);
    }
    if (c->tp && !is(c->tp, "tls") && !is(c->tp, "raw_buffer")) {
        return proxy_front_refuse(f, c->tpn, c->path,
                                  "transport_protocol %.32s is not supported (tls, raw_buffer)",
                                  c->tp);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* The listener of one http_connection_manager chain, as before: its transport_socket is the
 * listener's tls, its match must agree with the listener. */
static int single(struct proxy_front *f, bool *access_log, const struct envoy_chain *c,
                  const char *addr, struct sc_ynode *l)
{
    const struct sc_ynode *ts = sc_ynode_get(c->fc, "transport_socket");
    if (ts) {
        char tp[PROXY_FRONT_PATH];
        proxy_front_path(tp, c->path, ".transport_socket");
        proxy_front_set(f, l, "tls", proxy_envoy_transport_socket(f, ts, tp, true), ts);
    }
    const char *lp = strrchr(addr, ':');
    if (c->dp && !(lp && strcmp(lp + 1, c->dp) == 0)) {
        return proxy_front_refuse(f, c->dpn, c->path,
                                  "destination_port %.8s differs from the listener's port: "
                                  "no connection would reach the chain",
                                  c->dp);
    }
    if (c->tp && !(is(c->tp, "tls") && ts) && !(is(c->tp, "raw_buffer") && !ts)) {
        return proxy_front_refuse(f, c->tpn, c->path,
                                  "transport_protocol %.16s does not match the chain's "
                                  "transport_socket",
                                  c->tp);
    }
    if (c->sn) {
        if (!ts) {
            return proxy_front_refuse(f, c->sn, c->path,
                                      "server_names needs a TLS transport_socket");
        }
        proxy_front_note(f, c->sn, c->path,
                         "server_names: the listener's certificates are chosen by SNI");
    }
    if (c->ap) {
        proxy_front_note(f, c->ap, c->path,
                         "application_protocols: HTTP/1.1 and HTTP/2 are told apart by the "
                         "proxy itself");
    }
    char np[PROXY_FRONT_PATH];
    proxy_front_path(np, c->path, ".filters[0].typed_config");
    proxy_envoy_hcm(f, access_log, l, c->tc, np);
    return f->err ? SC_ECONFIG : 0;
}

/* tcp_route <t> into list <out>. */
static void put_troute(struct proxy_front *f, const struct troute *t, struct sc_ynode *out)
{
    const struct envoy_chain *c = t->c;
    struct sc_ynode *r = proxy_front_map(f, c->fc);
    const struct sc_ynode *nm = sc_ynode_get(c->fc, "name");
    char gen[48];
    if (c->dflt) {
        snprintf(gen, sizeof(gen), "default_filter_chain");
    } else {
        snprintf(gen, sizeof(gen), "chain_%zu", c->idx);
    }
    proxy_front_put(f, r, "name", nm ? nm : c->fc, nm ? sc_ynode_str(nm) : gen);
    for (size_t i = 0; i < sc_ynode_count(c->sn); i++) {
        const struct sc_ynode *s = sc_ynode_at(c->sn, i);
        const char *v = sc_ynode_str(s);
        bool wild = v && v[0] == '*';
        if ((t->klass == 0 && !wild) || (t->wild && v == t->wild)) {
            proxy_front_push_str(f, r, "server_names", s, v ? v : "");
        }
    }
    for (size_t i = 0; i < sc_ynode_count(c->ap); i++) {
        const struct sc_ynode *a = sc_ynode_at(c->ap, i);
        proxy_front_push_str(f, r, "application_protocols", a,
                             sc_ynode_str(a) ? sc_ynode_str(a) : "");
    }
    if (c->dp) {
        proxy_front_push_str(f, r, "destination_ports", c->dpn, c->dp);
    }
    if (c->tp) {
        proxy_front_put(f, r, "transport_protocol", c->tpn, c->tp);
    }
    proxy_envoy_chain_addr_put(f, c, t->dlen, t->slen, r);
    proxy_front_copy(f, r, "cluster", c->dest, "cluster");
    proxy_front_copy(f, r, "weighted_clusters", c->dest, "weighted_clusters");
    proxy_front_push(f, out, r, c->fc);
}

/* Checks the chains that detection alone cannot separate; fills opaque and http ports. */
static int check_http(struct proxy_front *f, const struct envoy_chain *cs, size_t n,
                      struct sc_ynode *l)
{
    for (size_t i = 0; i < n; i++) {
        const struct envoy_chain *c = &cs[i];
        if (c->hcm || !takes_plaintext(c)) {
            continue;
        }
        bool same_port = false;
        for (size_t j = 0; j < n; j++) {
            const struct envoy_chain *h = &cs[j];
            if (!h->hcm) {
                continue;
            }
            if (c->addr) {
                return proxy_front_refuse(f, c->fc, c->path,
                                          "a plaintext chain with address matches next to the "
                                          "http_connection_manager chain (%.200s): detected "
                                          "HTTP/1 would reach its routes whatever the addresses",
                                          h->path);
            }
            if (h->dp && !c->dp) {
                return proxy_front_refuse(f, c->fc, c->path,
                                          "this chain takes plaintext on any port while the "
                                          "http_connection_manager chain %.200s is for "
                                          "destination_port %.8s: HTTP/1 on other ports would "
                                          "reach its routes, not this chain",
                                          h->path, h->dp);
            }
            same_port = same_port || (h->dp && c->dp && is(h->dp, c->dp));
        }
        if (!c->dp || same_port) {
            continue; /* detection decides: HTTP/1 to the routes, the rest here */
        }
        /* A port-specific plaintext chain is more specific than the HTTP one: its port is
         * relayed without detection, unless another chain of that port needs the ClientHello. */
        for (size_t k = 0; k < n; k++) {
            if (k != i && cs[k].dp && is(cs[k].dp, c->dp) && needs_hello(&cs[k])) {
                return proxy_front_refuse(f, c->fc, c->path,
                                          "a plaintext chain for destination_port %.8s next to "
                                          "%.200s, which reads the ClientHello on that port: "
                                          "HTTP/1 there would reach the routes",
                                          c->dp, cs[k].path);
            }
        }
        proxy_front_push_str(f, l, "opaque_ports", c->dpn, c->dp);
    }
    for (size_t i = 0; i < n; i++) {
        const struct envoy_chain *h = &cs[i];
        if (!h->hcm || !h->dp) {
            continue;
        }
        bool alone = true;
        for (size_t k = 0; k < n; k++) {
            alone = alone && (k == i || !cs[k].dp || !is(cs[k].dp, h->dp));
        }
        if (alone) {
            proxy_front_push_str(f, l, "http_ports", h->dpn, h->dp);
        }
    }
    return 0;
}

/* Adds chain <g>'s conditions (destination port, server names of its group's class, address
 * conditions of its group's prefix lengths, and with <tls> whether the connection is TLS) to every
 * route of <rs>, appending them to <out>. */
static void put_chain_routes(struct proxy_front *f, const struct troute *g, bool tls,
                             struct sc_ynode *rs, struct sc_ynode *out)
{
    const struct envoy_chain *c = g->c;
    for (size_t i = 0; i < sc_ynode_count(rs) && !f->err; i++) {
        struct sc_ynode *r = (struct sc_ynode *)sc_ynode_at(rs, i);
        struct sc_ynode *m = sc_ynode_get_mut(r, "match");
        if (!m) {
            m = proxy_front_map(f, c->fc);
            proxy_front_set(f, r, "match", m, c->fc);
        }
        if (c->dp && !tls) { /* with TLS chains it is the listener's port (checked) */
            proxy_front_push_str(f, m, "destination_ports", c->dpn, c->dp);
        }
        for (size_t k = 0; k < sc_ynode_count(c->sn); k++) {
            const struct sc_ynode *sn = sc_ynode_at(c->sn, k);
            const char *v = sc_ynode_str(sn);
            bool wild = v && v[0] == '*';
            if ((g->klass == 0 && !wild) || (g->wild && v == g->wild)) {
                proxy_front_push_str(f, m, "server_names", sn, v ? v : "");
            }
        }
        if (tls) {
            const struct sc_ynode *ts = sc_ynode_get(c->fc, "transport_socket");
            proxy_front_put(f, m, "transport_protocol", ts ? ts : c->fc, ts ? "tls" : "raw_buffer");
        }
        proxy_envoy_chain_addr_put(f, c, g->dlen, g->slen, m);
        proxy_front_push(f, out, r, c->fc);
    }
}

/* The listener's routes from its http_connection_manager chains <hs> (<nh> groups, sorted most
 * specific first): Envoy picks one chain per connection by its filter_chain_match and then only
 * that chain's routes, so each chain's routes carry its conditions, and a chain with conditions
 * ends with a route that answers 404 to what its routes do not take (instead of falling through
 * to a less specific chain's routes). <l0> holds the first chain's translation. */
static void hcm_routes(struct proxy_front *f, const struct troute *hs, size_t nh, bool tls,
                       const struct sc_ynode *l0, struct sc_ynode *l)
{
    const struct sc_ynode *rs0 = sc_ynode_get(l0, "routes");
    const struct sc_ynode *r0 = sc_ynode_at(rs0, 0);
    const struct sc_ynode *health = sc_ynode_get(r0, "health_endpoint") ? r0 : NULL;
    const struct sc_ynode *fault = sc_ynode_get(sc_ynode_at(rs0, health ? 1 : 0), "fault");
    struct sc_ynode *out = proxy_front_seq(f, hs[0].c->fc);
    for (size_t i = 0; i < nh && !f->err; i++) {
        const struct envoy_chain *c = hs[i].c;
        char np[PROXY_FRONT_PATH];
        proxy_front_path(np, c->path, ".filters[0].typed_config");
        struct sc_ynode *rs = proxy_envoy_hcm_routes(f, c->tc, np, health, fault);
        if (!rs) {
            return;
        }
        put_chain_routes(f, &hs[i], tls, rs, out);
        if (((c->dp && !tls) || c->addr || c->sn || tls) && i + 1 < nh) {
            struct sc_ynode *nr = proxy_front_map(f, c->fc);
            char name[64];
            snprintf(name, sizeof(name), "%s_%zu_no_route", c->dflt ? "default" : "chain", c->idx);
            proxy_front_put(f, nr, "name", c->fc, name);
            struct sc_ynode *dr = proxy_front_map(f, c->fc);
            proxy_front_put(f, dr, "status", c->fc, "404");
            proxy_front_set(f, nr, "direct_response", dr, c->fc);
            struct sc_ynode *one = proxy_front_seq(f, c->fc);
            proxy_front_push(f, one, nr, c->fc);
            put_chain_routes(f, &hs[i], tls, one, out);
        }
    }
    proxy_front_set(f, l, "routes", out, hs[0].c->fc);
}

int proxy_envoy_hcm_chains(struct proxy_front *f, bool *access_log, const struct envoy_chain *cs,
                           size_t n, const struct envoy_chain *h, bool tls, struct sc_ynode *l)
{
    struct troute *hs = sc_calloc(MAX_TCP_ROUTES, sizeof(*hs));
    size_t nh = 0;
    bool conds = false;
    for (size_t i = 0; i < n; i++) {
        const struct envoy_chain *c = &cs[i];
        if (!c->hcm) {
            continue;
        }
        conds = conds || (c->dp && !tls) || c->addr ||
                (tls && !proxy_envoy_same(sc_ynode_get(c->tc, "route_config"),
                                          sc_ynode_get(h->tc, "route_config"), NULL, 0));
        for (size_t di = 0; di < (c->dlens.n ? c->dlens.n : 1); di++) {
            for (size_t si = 0; si < (c->slens.n ? c->slens.n : 1); si++) {
                int dl = c->dlens.n ? c->dlens.v[di] : -1, sl = c->slens.n ? c->slens.v[si] : -1;
                size_t ord = c->dflt ? MAX_TCP_ROUTES + nh : nh;
                bool exact = false;
                for (size_t k = 0; k < sc_ynode_count(c->sn) && nh < MAX_TCP_ROUTES; k++) {
                    const char *v = sc_ynode_str(sc_ynode_at(c->sn, k));
                    if (v && v[0] == '*') {
                        hs[nh] = (struct troute){
                            .c = c, .wild = v, .klass = 1, .dlen = dl, .slen = sl, .order = ord
                        };
                        nh++;
                    }
                    exact = exact || !(v && v[0] == '*');
                }
                if ((exact || !c->sn) && nh < MAX_TCP_ROUTES) {
                    hs[nh] = (struct troute){
                        .c = c, .klass = c->sn ? 0 : 2, .dlen = dl, .slen = sl, .order = ord
                    };
                    nh++;
                }
            }
        }
    }
    qsort(hs, nh, sizeof(*hs), troute_cmp);
    struct sc_ynode *l0 = proxy_front_map(f, h->fc);
    char np[PROXY_FRONT_PATH];
    proxy_front_path(np, h->path, ".filters[0].typed_config");
    proxy_envoy_hcm(f, access_log, l0, h->tc, np);
    for (size_t i = 0; i < sc_ynode_count(l0) && !f->err; i++) {
        const char *k = sc_ynode_str(sc_ynode_key(l0, i));
        if (k && (!conds || strcmp(k, "routes") != 0)) {
            proxy_front_copy(f, l, k, l0, k);
        }
    }
    if (conds && !f->err) {
        hcm_routes(f, hs, nh, tls, l0, l);
    }
    sc_free(hs);
    return f->err ? SC_ECONFIG : 0;
}

static int chains(struct proxy_front *f, bool *access_log, const struct sc_ynode *ln,
                  const char *path, const char *addr, struct sc_ynode *l, struct envoy_chain *cs,
                  size_t n)
{
    const struct sc_ynode *fcs = sc_ynode_get(ln, "filter_chains");
    const struct sc_ynode *dfc = sc_ynode_get(ln, "default_filter_chain");
    for (size_t i = 0; i < n; i++) {
        struct envoy_chain *c = &cs[i];
        c->idx = i;
        c->dflt = dfc && i == n - 1;
        if (c->dflt) {
            proxy_front_path(c->path, path, ".default_filter_chain");
        } else {
            proxy_front_path(c->path, path, ".filter_chains[%zu]", i);
        }
        if (read_chain(f, c->dflt ? dfc : sc_ynode_at(fcs, i), c) < 0) {
            return SC_ECONFIG;
        }
        if (c->dflt && sc_ynode_get(dfc, "filter_chain_match")) {
            return proxy_front_refuse(f, sc_ynode_get(dfc, "filter_chain_match"), c->path,
                                      "a default_filter_chain has no filter_chain_match");
        }
    }
    if (n == 1 && cs[0].hcm && !cs[0].dflt && !cs[0].addr) {
        return single(f, access_log, &cs[0], addr, l);
    }
    for (size_t i = 0; i < n; i++) {
        if (cs[i].hcm && sc_ynode_get(cs[i].fc, "transport_socket")) {
            return proxy_envoy_tls_chains(f, access_log, cs, n, addr, l);
        }
    }
    /* Several chains: detection and tcp_routes. */
    const struct envoy_chain *h = NULL;
    const struct sc_ynode *idle = NULL;
    for (size_t i = 0; i < n; i++) {
        struct envoy_chain *c = &cs[i];
        if (sc_ynode_get(c->fc, "transport_socket")) {
            return proxy_front_refuse(f, sc_ynode_get(c->fc, "transport_socket"), c->path,
                                      "a transport_socket on a tcp_proxy chain: TLS is relayed "
                                      "untouched by tcp_proxy chains (terminating it is "
                                      "supported on http_connection_manager chains)");
        }
        if (!c->hcm) {
            if (c->ap && !is(c->tp, "tls")) {
                for (size_t k = 0; k < sc_ynode_count(c->ap); k++) {
                    const char *a = sc_ynode_str(sc_ynode_at(c->ap, k));
                    if (is(a, "http/1.1") || is(a, "http/1.0") || is(a, "h2c")) {
                        return proxy_front_refuse(f, sc_ynode_at(c->ap, k), c->path,
                                                  "application_protocols %.16s on a tcp_proxy "
                                                  "chain: detected HTTP goes to the "
                                                  "http_connection_manager chain",
                                                  a);
                    }
                }
            }
            continue;
        }
        static const char *const rc_only[] = { "stat_prefix", "route_config", NULL };
        if (h && !proxy_envoy_same(c->tc, h->tc, rc_only, 0)) {
            return proxy_front_refuse(f, c->nf, c->path,
                                      "its http_connection_manager differs from %.200s's beyond "
                                      "route_config and stat_prefix: only the routes are chosen "
                                      "per chain (by destination port and addresses)",
                                      h->path);
        }
        for (size_t k = 0; k < i && h; k++) {
            if (cs[k].hcm && !c->dflt &&
                proxy_envoy_same(sc_ynode_get(cs[k].fc, "filter_chain_match"),
                                 sc_ynode_get(c->fc, "filter_chain_match"), NULL, 0)) {
                return proxy_front_refuse(f, c->fc, c->path,
                                          "its filter_chain_match is %.200s's: the two chains "
                                          "would take the same connections",
                                          cs[k].path);
            }
        }
        h = h ? h : c;
        if (c->sn || is(c->tp, "tls")) {
            return proxy_front_refuse(f, c->sn ? c->sn : c->tpn, c->path,
                                      "an http_connection_manager chain for TLS connections "
                                      "needs its own transport_socket: supported on a listener "
                                      "of one chain only");
        }
        if (c->ap) {
            proxy_front_note(f, c->ap, c->path,
                             "application_protocols: HTTP/1.1 and h2c are told apart by "
                             "protocol detection");
        }
    }
    if (check_http(f, cs, n, l) < 0) {
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < n; i++) {
        if (!cs[i].hcm) {
            cs[i].dest = proxy_front_map(f, cs[i].fc);
            if (tcp_proxy(f, access_log, &cs[i], cs[i].dest, l, &idle) < 0) {
                return SC_ECONFIG;
            }
        }
    }
    /* tcp_routes, most specific first. */
    struct troute *ts = sc_calloc(MAX_TCP_ROUTES, sizeof(*ts));
    size_t nt = 0;
    bool hello = false;
    for (size_t i = 0; i < n && !f->err; i++) {
        const struct envoy_chain *c = &cs[i];
        if (c->hcm) {
            continue;
        }
        hello = hello || needs_hello(c);
        /* one route per destination prefix length, source prefix length and name class */
        for (size_t di = 0; di < (c->dlens.n ? c->dlens.n : 1); di++) {
            for (size_t si = 0; si < (c->slens.n ? c->slens.n : 1); si++) {
                int dl = c->dlens.n ? c->dlens.v[di] : -1, sl = c->slens.n ? c->slens.v[si] : -1;
                bool exact = false;
                for (size_t k = 0; k < sc_ynode_count(c->sn); k++) {
                    const char *v = sc_ynode_str(sc_ynode_at(c->sn, k));
                    if (v && v[0] == '*' && nt < MAX_TCP_ROUTES) {
                        ts[nt] = (struct troute){
                            .c = c, .wild = v, .klass = 1, .dlen = dl, .slen = sl, .order = nt
                        };
                        nt++;
                    }
                    exact = exact || !(v && v[0] == '*');
                }
                if ((exact || !c->sn) && nt < MAX_TCP_ROUTES) {
                    ts[nt] = (struct troute){
                        .c = c, .klass = c->sn ? 0 : 2, .dlen = dl, .slen = sl, .order = nt
                    };
                    nt++;
                }
            }
        }
        if (nt == MAX_TCP_ROUTES) {
            sc_free(ts);
            return proxy_front_refuse(f, c->fc, c->path, "more than %d TCP routes",
                                      MAX_TCP_ROUTES - 1);
        }
    }
    qsort(ts, nt, sizeof(*ts), troute_cmp);
    struct sc_ynode *routes = proxy_front_seq(f, fcs ? fcs : ln);
    for (size_t i = 0; i < nt && !f->err; i++) {
        put_troute(f, &ts[i], routes);
    }
    sc_free(ts);
    if (f->err) {
        return SC_ECONFIG;
    }
    if (nt) {
        proxy_front_set(f, l, "tcp_routes", routes, fcs ? fcs : ln);
    }
    proxy_front_put(f, l, "protocol", fcs ? fcs : ln, h || hello ? "auto" : "tcp");
    if (h && proxy_envoy_hcm_chains(f, access_log, cs, n, h, false, l) < 0) {
        return SC_ECONFIG;
    }
    return f->err ? SC_ECONFIG : 0;
}

int proxy_envoy_chains(struct proxy_front *f, bool *access_log, const struct sc_ynode *ln,
                       const char *path, const char *addr, struct sc_ynode *l)
{
    const struct sc_ynode *fcs = sc_ynode_get(ln, "filter_chains");
    const struct sc_ynode *dfc = sc_ynode_get(ln, "default_filter_chain");
    size_t n = sc_ynode_count(fcs) + (dfc ? 1 : 0);
    if (n == 0) {
        return proxy_front_refuse(f, fcs ? fcs : ln, path, "a filter chain is required");
    }
    if (n > MAX_CHAINS) {
        return proxy_front_refuse(f, fcs, path, "at most %d filter chains", MAX_CHAINS);
    }
    struct envoy_chain *cs = sc_calloc(n, sizeof(*cs));
    int rc = chains(f, access_log, ln, path, addr, l, cs, n);
    sc_free(cs);
    return rc;
}

struct sc_ynode *proxy_envoy_hash_policy(struct proxy_front *f, const struct sc_ynode *hp,
                                         const char *path)
{
    struct sc_ynode *out = proxy_front_seq(f, hp);
    for (size_t i = 0; i < sc_ynode_count(hp) && !f->err; i++) {
        const struct sc_ynode *h = sc_ynode_at(hp, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".hash_policy[%zu]", i);
        /* filter_state refused; a cookie with ttl (one Envoy generates) refused below */
        static const char *const k[] = { "header",          "cookie",   "connection_properties",
                                         "query_parameter", "terminal", NULL };
        if (proxy_front_keys(f, h, p, k, NULL) < 0) {
            break;
        }
        struct sc_ynode *e = proxy_front_map(f, h);
        const struct sc_ynode *hd = sc_ynode_get(h, "header");
        const struct sc_ynode *ck = sc_ynode_get(h, "cookie");
        const struct sc_ynode *cp = sc_ynode_get(h, "connection_properties");
        const struct sc_ynode *qp = sc_ynode_get(h, "query_parameter");
        static const char *const hk[] = { "header_name", NULL };
        static const char *const kk[] = { "name", NULL };
        static const char *const kn[] = { "path", NULL };
        static const char *const ci[] = { "source_ip", NULL };
        if (hd && proxy_front_keys(f, hd, p, hk, NULL) == 0) {
            proxy_front_copy(f, e, "header", hd, "header_name");
        }
        if (ck && proxy_front_keys(f, ck, p, kk, kn) == 0) {
            proxy_front_copy(f, e, "cookie", ck, "name"); /* ttl: Envoy would set the cookie */
        }
        if (cp && proxy_front_keys(f, cp, p, ci, NULL) == 0) {
            proxy_front_copy(f, e, "source_ip", cp, "source_ip");
        }
        if (qp && proxy_front_keys(f, qp, p, kk, NULL) == 0) {
            proxy_front_copy(f, e, "query_parameter", qp, "name");
        }
        proxy_front_copy(f, e, "terminal", h, "terminal");
        proxy_front_push(f, out, e, h);
    }
    return out;
}
