// SPDX-License-Identifier: Apache-2.0
// What the Envoy front end's filter-chain readers share (proxy_envoy_chain.c reads the chains and
// maps plaintext and tcp_proxy ones; proxy_envoy_tlschain.c maps chains that terminate TLS each).
// Invariant: a chain is read (keys checked, its one filter found) before either maps it.
#ifndef SC_ROLES_PROXY_ENVOY_CHAIN_H
#define SC_ROLES_PROXY_ENVOY_CHAIN_H

#include "roles/proxy/proxy_envoy.h"

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
    struct sc_ynode *dest; /* a tcp_proxy's translation: {cluster} */
    char path[PROXY_FRONT_PATH];
    size_t idx;
    bool hcm, dflt;
};

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
