// SPDX-License-Identifier: Apache-2.0
// What the Envoy front end's filter-chain readers share (proxy_envoy_chain.c reads the chains and
// maps plaintext and tcp_proxy ones; proxy_envoy_tlschain.c maps chains that terminate TLS each).
// Invariant: a chain is read (keys checked, its one filter found) before either maps it.
#ifndef SC_ROLES_PROXY_ENVOY_CHAIN_H
#define SC_ROLES_PROXY_ENVOY_CHAIN_H

#include "roles/proxy/proxy_envoy.h"

/* The distinct prefix lengths of a chain's CIDR ranges. */
struct envoy_lens {
    int v[129];
    size_t n;
};

/* One filter chain of a listener, as read by proxy_envoy_chain.c (borrowed nodes). */
struct envoy_chain {
    const struct sc_ynode *fc;  /* the chain */
    const struct sc_ynode *nf;  /* its one network filter */
    const struct sc_ynode *tc;  /* the filter's typed_config */
    const struct sc_ynode *dpn; /* filter_chain_match.destination_port */
    const struct sc_ynode *sn;  /* .server_names (NULL when empty) */
    const struct sc_ynode *ap;  /* .application_protocols (NULL when empty) */
    const struct sc_ynode *tpn; /* .transport_protocol */
    const char *dp, *tp;
    const struct sc_ynode *pr;  /* .prefix_ranges (NULL when empty) */
    const struct sc_ynode *spr; /* .source_prefix_ranges (or direct_source_prefix_ranges) */
    const struct sc_ynode *sp;  /* .source_ports */
    const struct sc_ynode *stn; /* .source_type */
    const char *st;             /* "local", "external" or NULL */
    struct envoy_lens dlens, slens;
    bool addr;             /* any address condition */
    struct sc_ynode *dest; /* a tcp_proxy's translation: {cluster} */
    char path[PROXY_FRONT_PATH];
    size_t idx;
    bool hcm, dflt;
};

/* Reads the address conditions of filter_chain_match <m> into <c> (whose path and hcm are set):
 * checks each CidrRange, port and source_type; refuses them on an http_connection_manager chain.
 * Returns 0 or SC_ECONFIG. */
int proxy_envoy_chain_addr_read(struct proxy_front *f, const struct sc_ynode *m,
                                struct envoy_chain *c);

/* Writes <c>'s address conditions into tcp_route <r>: its destination ranges of prefix length
 * <dlen> and source ranges of <slen> (-1: all of them), source ports and type. */
void proxy_envoy_chain_addr_put(struct proxy_front *f, const struct envoy_chain *c, int dlen,
                                int slen, struct sc_ynode *r);

/* Whether trees <a> and <b> hold the same values (mappings compared by key, in any order); <skip>
 * (NULL-terminated, or NULL) names keys of the top mapping left out. */
bool proxy_envoy_same(const struct sc_ynode *a, const struct sc_ynode *b, const char *const *skip,
                      int depth);

/* Maps the http_connection_manager chains of the <n> chains <cs> (<h> the first of them) onto
 * listener <l>: one translation of the connection manager (they agree beyond route_config and
 * stat_prefix: checked by the caller), and when the chains have conditions or (<tls>: the
 * listener terminates TLS) different route_configs, each chain's routes carrying its conditions
 * (destination port, server names, addresses, with <tls> TLS or plaintext), most specific first in
 * Envoy's order, each chain closed by a 404 route so that its connections do not reach a less
 * specific chain's routes. Returns 0 or SC_ECONFIG. */
int proxy_envoy_hcm_chains(struct proxy_front *f, bool *access_log, const struct envoy_chain *cs,
                           size_t n, const struct envoy_chain *h, bool tls, struct sc_ynode *l);

/* Maps the <n> chains <cs> of a listener at <addr>, of which at least one http_connection_manager
 * chain terminates TLS, onto listener <l>: the chains' certificates become the listener's tls
 * (each chain's chosen by its server_names; unmatched names rejected when every TLS chain names
 * its servers), a plaintext chain beside them makes it permissive, and the one routes come from
 * the connection managers, which must be the same. Refuses, at the chain that makes it, what one
 * listener TLS context cannot express: tcp_proxy chains beside them, different client
 * verification, ALPN, versions or connection managers. Returns 0 or SC_ECONFIG (f->err set). */
int proxy_envoy_tls_chains(struct proxy_front *f, bool *access_log, const struct envoy_chain *cs,
                           size_t n, const char *addr, struct sc_ynode *l);

#endif
