// SPDX-License-Identifier: Apache-2.0
// Envoy listeners whose http_connection_manager chains terminate TLS each (see
// proxy_envoy_chain.h): the shape of Istio's inbound listener, a chain per certificate chosen by
// server_names and transport_protocol, and often a raw_buffer chain for plaintext beside them.
// They map onto one listener TLS context: the chain without server_names gives the default
// certificate, every other chain's certificates are served for its server_names (exact, then the
// longest wildcard suffix, as Envoy's filter chain match orders them), with the chain's own client
// verification when it differs from the default chain's, and, when every TLS chain names its
// servers, a ClientHello naming none of them fails as Envoy's would find no chain. A plaintext
// chain makes the listener permissive (TLS and plaintext told apart by the first bytes, as
// tls_inspector does). Connection managers that differ in route_config give each chain's routes
// its conditions (proxy_envoy_hcm_chains). Invariant: what one TLS context cannot express (ALPN,
// versions or session timeouts per chain, connection managers that differ beyond their routes,
// tcp_proxy chains beside them) is refused at the chain that makes it.
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_envoy_chain.h"

/* The TLS settings that one listener context has once, whatever the chain. */
static const char *const rc_only[] = { "stat_prefix", "route_config", NULL };

static const char *const shared_keys[] = { "alpn", "min_version", "max_version", "session_timeout",
                                           NULL };

/* Client verification: the listener's (the default chain's), or a certificate's own. */
static const char *const verify_keys[] = { "client_ca", "client_cert", NULL };

/* Checks chain <c> (translated TLS <t>, NULL for plaintext) against the listener at <addr> and the
 * chains before it; sets <*plain>, <*dflt>, <*ref> and <*tref>. */
static int check_chain(struct proxy_front *f, const struct envoy_chain *c, struct sc_ynode *t,
                       const char *addr, const struct envoy_chain *hcm,
                       const struct envoy_chain **plain, const struct envoy_chain **dflt,
                       const struct envoy_chain **ref, const struct sc_ynode **tref)
{
    if (!c->hcm) {
        return proxy_front_refuse(f, c->fc, c->path,
                                  "a tcp_proxy chain next to chains that terminate TLS (%.200s): "
                                  "a listener either terminates TLS for its routes or relays "
                                  "it by server name",
                                  hcm->path);
    }
    const char *lp = strrchr(addr, ':');
    if (c->dp && !(lp && strcmp(lp + 1, c->dp) == 0)) {
        return proxy_front_refuse(f, c->dpn, c->path,
                                  "destination_port %.8s differs from the listener's port: "
                                  "with chains that terminate TLS every chain is for the "
                                  "listener's port",
                                  c->dp);
    }
    if (c->addr) {
        return proxy_front_refuse(f, c->fc, c->path,
                                  "address matches (prefix_ranges, source_prefix_ranges, "
                                  "source_type, source_ports) on a chain next to chains that "
                                  "terminate TLS: supported on plaintext and tcp_proxy chains");
    }
    if (c != hcm && !proxy_envoy_same(c->tc, hcm->tc, rc_only, 0)) {
        return proxy_front_refuse(f, c->nf, c->path,
                                  "its http_connection_manager differs from %.200s's beyond "
                                  "route_config and stat_prefix: only the routes are chosen per "
                                  "chain (by server name and transport)",
                                  hcm->path);
    }
    if (c->ap) {
        proxy_front_note(f, c->ap, c->path,
                         "application_protocols: HTTP/1.1 and HTTP/2 are told apart by the "
                         "proxy itself");
    }
    if (!t) {
        if (c->sn || is(c->tp, "tls")) {
            return proxy_front_refuse(f, c->sn ? c->sn : c->tpn, c->path,
                                      "a chain for TLS connections without a transport_socket "
                                      "next to chains that terminate TLS: TLS would reach the "
                                      "routes undecrypted");
        }
        if (*plain) {
            return proxy_front_refuse(f, c->fc, c->path,
                                      "a second plaintext chain (%.200s is the first): they "
                                      "would take the same connections",
                                      (*plain)->path);
        }
        *plain = c;
        return 0;
    }
    if (is(c->tp, "raw_buffer")) {
        return proxy_front_refuse(f, c->tpn, c->path,
                                  "transport_protocol raw_buffer with a TLS transport_socket: "
                                  "the chain would take plaintext it cannot decrypt");
    }
    if (!c->sn) {
        if (*dflt) {
            return proxy_front_refuse(f, c->fc, c->path,
                                      "a second TLS chain without server_names (%.200s is the "
                                      "first): the listener has one default certificate",
                                      (*dflt)->path);
        }
        *dflt = c;
    }
    if (!*ref) {
        *ref = c;
        *tref = t;
        return 0;
    }
    for (size_t k = 0; shared_keys[k]; k++) {
        if (!proxy_envoy_same(sc_ynode_get(t, shared_keys[k]), sc_ynode_get(*tref, shared_keys[k]),
                              NULL, 0)) {
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, c->path, ".transport_socket");
            return proxy_front_refuse(f, sc_ynode_get(c->fc, "transport_socket"), p,
                                      "its %s differs from %.200s's: the listener has one TLS "
                                      "context, whose certificates alone are chosen per chain "
                                      "(by server_names)",
                                      shared_keys[k], (*ref)->path);
        }
    }
    return 0;
}

/* Appends chain <c>'s certificates (translated TLS <t>) to <certs>, served for its server_names;
 * <with_default>: its first pair too (else it is the listener's default certificate). Client
 * verification that differs from the listener's (<vref>) goes with each certificate. */
static void add_certs(struct proxy_front *f, const struct envoy_chain *c, const struct sc_ynode *t,
                      struct sc_ynode *certs, bool with_default, const struct sc_ynode *vref)
{
    bool own = false;
    for (size_t k = 0; verify_keys[k]; k++) {
        own = own || !proxy_envoy_same(sc_ynode_get(t, verify_keys[k]),
                                       sc_ynode_get(vref, verify_keys[k]), NULL, 0);
    }
    const struct sc_ynode *more = sc_ynode_get(t, "certificates");
    for (size_t i = 0; i < sc_ynode_count(more) + 1 && !f->err; i++) {
        if (i == 0 && !with_default) {
            continue;
        }
        const struct sc_ynode *src = i == 0 ? t : sc_ynode_at(more, i - 1);
        struct sc_ynode *e = proxy_front_map(f, src);
        proxy_front_copy(f, e, "cert", src, "cert");
        proxy_front_copy(f, e, "key", src, "key");
        if (own && sc_ynode_get(t, "client_ca")) {
            proxy_front_copy(f, e, "client_ca", t, "client_ca");
            proxy_front_copy(f, e, "client_cert", t, "client_cert");
        } else if (own) {
            proxy_front_put(f, e, "client_cert", c->fc, "none");
        }
        for (size_t k = 0; k < sc_ynode_count(c->sn); k++) {
            const struct sc_ynode *s = sc_ynode_at(c->sn, k);
            proxy_front_push_str(f, e, "server_names", s, sc_ynode_str(s) ? sc_ynode_str(s) : "");
        }
        proxy_front_push(f, certs, e, src);
    }
}

static int build(struct proxy_front *f, bool *access_log, const struct envoy_chain *cs, size_t n,
                 const char *addr, struct sc_ynode *l, struct sc_ynode **ts)
{
    const struct envoy_chain *hcm = NULL, *plain = NULL, *dflt = NULL, *ref = NULL;
    const struct sc_ynode *tref = NULL;
    for (size_t i = 0; i < n && !hcm; i++) {
        hcm = sc_ynode_get(cs[i].fc, "transport_socket") && cs[i].hcm ? &cs[i] : NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct envoy_chain *c = &cs[i];
        const struct sc_ynode *tsn = sc_ynode_get(c->fc, "transport_socket");
        if (tsn && c->hcm) {
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, c->path, ".transport_socket");
            ts[i] = proxy_envoy_transport_socket(f, tsn, p, true);
            if (!ts[i]) {
                return SC_ECONFIG;
            }
        }
        if (check_chain(f, c, ts[i], addr, hcm, &plain, &dflt, &ref, &tref) < 0) {
            return SC_ECONFIG;
        }
    }
    const struct sc_ynode *at = sc_ynode_get(ref->fc, "transport_socket");
    struct sc_ynode *tls = proxy_front_map(f, at);
    for (size_t k = 0; shared_keys[k]; k++) {
        proxy_front_copy(f, tls, shared_keys[k], tref, shared_keys[k]);
    }
    const struct sc_ynode *vref = dflt ? ts[dflt - cs] : tref;
    for (size_t k = 0; verify_keys[k]; k++) {
        proxy_front_copy(f, tls, verify_keys[k], vref, verify_keys[k]);
    }
    struct sc_ynode *certs = proxy_front_seq(f, at);
    if (dflt) {
        const struct sc_ynode *td = ts[dflt - cs];
        proxy_front_copy(f, tls, "cert", td, "cert");
        proxy_front_copy(f, tls, "key", td, "key");
        add_certs(f, dflt, td, certs, false, vref);
    } else {
        proxy_front_put(f, tls, "unmatched_sni", at, "reject");
    }
    for (size_t i = 0; i < n && !f->err; i++) {
        if (ts[i] && &cs[i] != dflt) {
            add_certs(f, &cs[i], ts[i], certs, true, vref);
        }
    }
    if (sc_ynode_count(certs)) {
        proxy_front_set(f, tls, "certificates", certs, at);
    }
    proxy_front_set(f, l, "tls", tls, at);
    proxy_front_put(f, l, "mtls", plain ? plain->fc : at, plain ? "permissive" : "strict");
    if (f->err) {
        return SC_ECONFIG;
    }
    return proxy_envoy_hcm_chains(f, access_log, cs, n, hcm, true, l);
}

int proxy_envoy_tls_chains(struct proxy_front *f, bool *access_log, const struct envoy_chain *cs,
                           size_t n, const char *addr, struct sc_ynode *l)
{
    struct sc_ynode **ts = sc_calloc(n, sizeof(*ts));
    int rc = build(f, access_log, cs, n, addr, l, ts);
    sc_free(ts);
    return rc;
}
