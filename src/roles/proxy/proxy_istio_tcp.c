// SPDX-License-Identifier: Apache-2.0
// VirtualService tcp[] and tls[] routes (see proxy_front.h) as the outbound listeners'
// tcp_routes, ahead of the listeners' own. A tls route takes TLS connections by server name
// (sniHosts) and port, read from the ClientHello without terminating it; a tcp route takes the
// connections to its port (match.port, else the ports of the VirtualService hosts' ServiceEntry)
// and, with destinationSubnets, to those addresses; without them it takes every connection to its
// port (noted). One destination becomes the route's cluster,
// several its weighted_clusters (weights adding up to 100). A match for other workloads
// (sourceLabels, sourceNamespace) or for gateways only is left out (proxy_istio_source.c);
// destinationSubnets and sourceSubnet become the route's destination_prefix_ranges and
// source_prefix_ranges. Also a
// DestinationRule's consistentHash load balancing, which proxy_istio.c leaves here for room.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_front.h"

#define NAME_MAX 253

/* The destinations of route list <rl> into native route <r>. */
static int destinations(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *vs,
                        const struct sc_ynode *rl, struct sc_ynode *r, const char *path)
{
    if (sc_ynode_count(rl) == 0) {
        return proxy_front_refuse(f, rl ? rl : r, path, "route needs a destination");
    }
    struct sc_ynode *wl = proxy_front_seq(f, rl);
    long total = 0;
    for (size_t i = 0; i < sc_ynode_count(rl) && !f->err; i++) {
        char rp[PROXY_FRONT_PATH];
        proxy_front_path(rp, path, ".route[%zu]", i);
        const struct sc_ynode *rd = sc_ynode_at(rl, i);
        static const char *const rk[] = { "destination", "weight", NULL };
        if (proxy_front_keys(f, rd, rp, rk, NULL) < 0) {
            return SC_ECONFIG;
        }
        const char *c = proxy_istio_destination(f, m, sc_ynode_get(rd, "destination"),
                                                proxy_istio_ns(f, vs), rp);
        if (!c) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *w = sc_ynode_get(rd, "weight");
        const char *ws = sc_ynode_str(w);
        char *end = NULL;
        long wv = ws ? strtol(ws, &end, 10) : 100;
        if (ws && (*end || wv < 0 || wv > 100)) {
            return proxy_front_refuse(f, w, rp, "weight must be 0 to 100");
        }
        total += wv;
        struct sc_ynode *e = proxy_front_map(f, rd);
        proxy_front_put(f, e, "cluster", rd, c);
        proxy_front_put(f, e, "weight", w ? w : rd, ws ? ws : "100");
        proxy_front_push(f, wl, e, rd);
    }
    if (sc_ynode_count(rl) == 1) {
        proxy_front_copy(f, r, "cluster", sc_ynode_at(wl, 0), "cluster");
    } else if (total != 100) {
        return proxy_front_refuse(f, rl, path, "route weights add up to %ld, not 100", total);
    } else {
        proxy_front_set(f, r, "weighted_clusters", wl, rl);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* The ports of the ServiceEntries of <vs>'s hosts onto list destination_ports of <r>. Returns
 * how many. */
static size_t host_ports(struct proxy_front *f, const struct sc_ynode *vs, struct sc_ynode *r,
                         const struct sc_ynode *at)
{
    const struct sc_ynode *hs = sc_ynode_get(sc_ynode_get(vs, "spec"), "hosts");
    size_t n = 0;
    for (size_t i = 0; i < sc_ynode_count(hs); i++) {
        const char *h = sc_ynode_str(sc_ynode_at(hs, i));
        char fq[NAME_MAX + 64];
        if (!h || strlen(h) > NAME_MAX) {
            continue;
        }
        proxy_istio_fqdn(h, proxy_istio_ns(f, vs), fq, sizeof(fq));
        const struct sc_ynode *se = proxy_istio_find_host(f, f->se, f->nse, fq);
        const struct sc_ynode *ps = sc_ynode_get(sc_ynode_get(se, "spec"), "ports");
        for (size_t k = 0; k < sc_ynode_count(ps); k++) {
            const char *num = sc_ynode_str(sc_ynode_get(sc_ynode_at(ps, k), "number"));
            if (num) {
                proxy_front_push_str(f, r, "destination_ports", at, num);
                n++;
            }
        }
    }
    return n;
}

/* One tcp[] (<tls> false) or tls[] entry <e> of <vs>: a native route per match entry. */

/* Checks one subnet of a match (an address or a CIDR block, as the native loader parses them),
 * so a bad one is refused at the Istio field's path; <i> is its index, SIZE_MAX for a scalar. */
static int subnet(struct proxy_front *f, const struct sc_ynode *at, const char *v, const char *mp,
                  const char *field, size_t i)
{
    struct proxy_cidr c;
    char *why = NULL;
    if (v && proxy_cidr_parse(v, &c, &why) == 0) {
        return 0;
    }
    char p[PROXY_FRONT_PATH];
    if (i != SIZE_MAX) {
        proxy_front_path(p, mp, ".%s[%zu]", field, i);
    } else {
        proxy_front_path(p, mp, ".%s", field);
    }
    int rc = proxy_front_refuse(f, at, p, "%s", why ? why : "not an IP address or CIDR block");
    sc_free(why);
    return rc;
}

static int entry(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *vs,
                 const struct sc_ynode *e, bool tls, size_t idx, const char *path,
                 struct sc_ynode *out)
{
    static const char *const ek[] = { "match", "route", NULL };
    if (proxy_front_keys(f, e, path, ek, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *ms = sc_ynode_get(e, "match");
    if (tls && sc_ynode_count(ms) == 0) {
        return proxy_front_refuse(f, e, path, "a tls route needs match[].sniHosts");
    }
    size_t nm = sc_ynode_count(ms) ? sc_ynode_count(ms) : 1;
    for (size_t k = 0; k < nm && !f->err; k++) {
        const struct sc_ynode *mn = sc_ynode_at(ms, k);
        char mp[PROXY_FRONT_PATH];
        proxy_front_path(mp, path, ".match[%zu]", k);
        static const char *const tk[] = {
            "sniHosts",           "port", "gateways", "sourceLabels", "sourceNamespace",
            "destinationSubnets", NULL
        };
        static const char *const ck[] = { "port",
                                          "gateways",
                                          "sourceLabels",
                                          "sourceNamespace",
                                          "sourceSubnet",
                                          "destinationSubnets",
                                          NULL };
        if (mn && proxy_front_keys(f, mn, mp, tls ? tk : ck, NULL) < 0) {
            return SC_ECONFIG;
        }
        int applies = proxy_istio_source_applies(f, vs, mn, mp);
        if (applies <= 0) {
            if (applies < 0) {
                return SC_ECONFIG;
            }
            continue; /* for other workloads or gateways (noted) */
        }
        struct sc_ynode *r = proxy_front_map(f, e);
        char name[160];
        snprintf(name, sizeof(name), "%.64s.%s%zu", proxy_istio_name(vs), tls ? "tls" : "tcp", idx);
        proxy_front_put(f, r, "name", e, name);
        const struct sc_ynode *sni = sc_ynode_get(mn, "sniHosts");
        if (tls && sc_ynode_count(sni) == 0) {
            return proxy_front_refuse(f, mn ? mn : e, mp, "sniHosts is required");
        }
        for (size_t i = 0; i < sc_ynode_count(sni); i++) {
            const char *h = sc_ynode_str(sc_ynode_at(sni, i));
            if (!h || strlen(h) > NAME_MAX) {
                return proxy_front_refuse(f, sc_ynode_at(sni, i), mp,
                                          "a server name has at most %d characters", NAME_MAX);
            }
            proxy_front_push_str(f, r, "server_names", sc_ynode_at(sni, i),
                                 h); /* as the client sends it */
        }
        const struct sc_ynode *pn = sc_ynode_get(mn, "port");
        if (pn) {
            proxy_front_push_str(f, r, "destination_ports", pn,
                                 sc_ynode_str(pn) ? sc_ynode_str(pn) : "");
        } else if (!tls && host_ports(f, vs, r, e) == 0) {
            return proxy_front_refuse(f, mn ? mn : e, mp,
                                      "a tcp route needs match.port or a ServiceEntry port for "
                                      "its hosts: the relay tells destinations apart by port");
        }
        /* Addresses: the original destination's (under interception) and the client's. */
        const struct sc_ynode *ds = sc_ynode_get(mn, "destinationSubnets");
        if (ds && sc_ynode_kind(ds) != SC_Y_SEQ && sc_ynode_kind(ds) != SC_Y_NULL) {
            return proxy_front_refuse(f, ds, mp, "destinationSubnets must be a list of CIDRs");
        }
        for (size_t i = 0; i < sc_ynode_count(ds); i++) {
            const char *c = sc_ynode_str(sc_ynode_at(ds, i));
            if (subnet(f, sc_ynode_at(ds, i), c, mp, "destinationSubnets", i) < 0) {
                return SC_ECONFIG;
            }
            proxy_front_push_str(f, r, "destination_prefix_ranges", sc_ynode_at(ds, i), c);
        }
        const struct sc_ynode *ss = sc_ynode_get(mn, "sourceSubnet");
        const char *ssv = ss ? proxy_front_str(f, mn, "sourceSubnet", mp) : NULL;
        if (ss && subnet(f, ss, ssv, mp, "sourceSubnet", SIZE_MAX) < 0) {
            return SC_ECONFIG;
        }
        if (ssv) {
            proxy_front_push_str(f, r, "source_prefix_ranges", ss, ssv);
        }
        if (!tls && sc_ynode_count(ds) == 0) {
            proxy_front_note(f, mn ? mn : e, mp,
                             "a tcp route without destinationSubnets takes every TCP connection "
                             "to its ports");
        }
        if (tls) {
            proxy_front_put(f, r, "transport_protocol", e, "tls");
        }
        if (destinations(f, m, vs, sc_ynode_get(e, "route"), r, path) < 0) {
            return SC_ECONFIG;
        }
        proxy_front_push(f, out, r, e);
    }
    return f->err ? SC_ECONFIG : 0;
}

int proxy_istio_tcp(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *vs,
                    const char *path, struct sc_ynode *troutes)
{
    const struct sc_ynode *spec = sc_ynode_get(vs, "spec");
    for (int tls = 1; tls >= 0 && !f->err; tls--) {
        const struct sc_ynode *l = sc_ynode_get(spec, tls ? "tls" : "tcp");
        for (size_t i = 0; i < sc_ynode_count(l) && !f->err; i++) {
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, path, ".%s[%zu]", tls ? "tls" : "tcp", i);
            entry(f, m, vs, sc_ynode_at(l, i), tls, i, p, troutes);
        }
    }
    return f->err ? SC_ECONFIG : 0;
}

int proxy_istio_tcp_listener(struct proxy_front *f, struct sc_ynode *l, struct sc_ynode *troutes,
                             const struct sc_ynode *at)
{
    const char *proto = sc_ynode_str(sc_ynode_get(l, "protocol"));
    const char *name = sc_ynode_str(sc_ynode_get(l, "name"));
    if (!proto || strcmp(proto, "http") == 0) {
        if (proto) {
            return proxy_front_refuse(f, at, NULL,
                                      "VirtualService tcp and tls routes need the outbound "
                                      "listener \"%.64s\" to be of protocol auto (it is http)",
                                      name ? name : "");
        }
        proxy_front_put(f, l, "protocol", at, "auto");
    }
    struct sc_ynode *merged = sc_ytree_copy(f->out, troutes);
    const struct sc_ynode *own = sc_ynode_get(l, "tcp_routes");
    for (size_t k = 0; merged && k < sc_ynode_count(own); k++) {
        proxy_front_push(f, merged, sc_ytree_copy(f->out, sc_ynode_at(own, k)),
                         sc_ynode_at(own, k));
    }
    for (size_t k = 0; own && k < sc_ynode_count(l); k++) {
        if (sc_ynode_val(l, k) == own) {
            sc_ynode_replace(l, k, merged);
            return f->err ? SC_ECONFIG : 0;
        }
    }
    proxy_front_set(f, l, "tcp_routes", merged, at);
    return f->err ? SC_ECONFIG : 0;
}

void proxy_istio_consistent_hash(struct proxy_front *f, struct sc_ynode *c,
                                 const struct sc_ynode *ch, const char *path)
{
    /* httpCookie with a ttl (a cookie Istio generates) and useSourceIp false alone: refused */
    static const char *const k[] = {
        "httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName",
        "ringHash",       "maglev",     NULL
    };
    static const char *const n[] = { "minimumRingSize", NULL };
    if (!ch || proxy_front_keys(f, ch, path, k, n) < 0) {
        return;
    }
    const struct sc_ynode *mg = sc_ynode_get(ch, "maglev");
    if (sc_ynode_get(ch, "ringHash") || mg) {
        proxy_front_note(f, mg ? mg : sc_ynode_get(ch, "ringHash"), path,
                         "ringHash and maglev sizes: endpoints are chosen by rendezvous hashing");
    }
    proxy_front_put(f, c, "lb_policy", ch, mg ? "maglev" : "ring_hash");
    struct sc_ynode *hp = proxy_front_seq(f, ch), *e = proxy_front_map(f, ch);
    const struct sc_ynode *cookie = sc_ynode_get(ch, "httpCookie");
    static const char *const ck[] = { "name", NULL };
    static const char *const cn[] = { "path", NULL };
    if (cookie && proxy_front_keys(f, cookie, path, ck, cn) == 0) {
        proxy_front_copy(f, e, "cookie", cookie, "name");
    }
    proxy_front_copy(f, e, "header", ch, "httpHeaderName");
    proxy_front_copy(f, e, "query_parameter", ch, "httpQueryParameterName");
    if (sc_ynode_str(sc_ynode_get(ch, "useSourceIp")) &&
        strcmp(sc_ynode_str(sc_ynode_get(ch, "useSourceIp")), "true") == 0) {
        proxy_front_put(f, e, "source_ip", ch, "true");
    }
    if (sc_ynode_count(e) != 1) {
        proxy_front_refuse(f, ch, path,
                           "consistentHash needs one of httpHeaderName, httpCookie, "
                           "useSourceIp: true and httpQueryParameterName");
        return;
    }
    proxy_front_push(f, hp, e, ch);
    proxy_front_set(f, c, "hash_policy", hp, ch);
}
