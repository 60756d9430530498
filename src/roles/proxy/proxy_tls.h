// SPDX-License-Identifier: Apache-2.0
// TLS in the proxy: the options of a listener's `tls:` (termination with its own certificates),
// its mutual-TLS mode (Istio's PeerAuthentication modes: STRICT, PERMISSIVE, DISABLE) and
// X-Forwarded-Client-Cert handling, a cluster's `tls:` (origination: simple, mutual, or mesh with
// the workload's identity), and the top-level `identity:` (the workload's SPIFFE certificate,
// key and trust bundle). At run time, the certificate stores (net/tls.h) that listeners and
// clusters take their contexts from, watched for changes on the main loop, and the two places the
// data path stacks a TLS layer: on an accepted connection and on a new upstream one.
//
// Invariant: security fails closed. A listener that requires TLS never serves plaintext, a
// handshake that fails closes the connection (counted by reason), verification of upstream
// certificates is on unless a cluster says insecure_skip_verify, and a certificate reload that
// does not build keeps the previous certificate serving.
#ifndef SC_ROLES_PROXY_PROXY_TLS_H
#define SC_ROLES_PROXY_PROXY_TLS_H

#include <stdbool.h>

#include "core/config.h"
#include "net/tls.h"
#include "roles/proxy/proxy_peerauth.h"

struct proxy;
struct proxy_cfg;
struct proxy_cluster;
struct proxy_cluster_cfg;
struct proxy_dconn;
struct proxy_exch;
struct proxy_listener;
struct proxy_listener_cfg;
struct proxy_metrics;
struct proxy_uconn;
struct sc_buf;

/* A listener's mutual-TLS mode (Istio PeerAuthentication). UNSET: STRICT when the listener has
 * certificates of its own; PERMISSIVE on an inbound listener when the workload has an identity;
 * DISABLE otherwise. */
enum proxy_mtls { PROXY_MTLS_UNSET, PROXY_MTLS_STRICT, PROXY_MTLS_PERMISSIVE, PROXY_MTLS_DISABLE };

/* X-Forwarded-Client-Cert towards the application (Envoy's forward_client_cert_details). AUTO:
 * SANITIZE_SET on a listener that verifies client certificates, SANITIZE otherwise; either way a
 * client-sent header never reaches the application. */
enum proxy_xfcc {
    PROXY_XFCC_AUTO,
    PROXY_XFCC_SANITIZE,
    PROXY_XFCC_FORWARD_ONLY,
    PROXY_XFCC_APPEND_FORWARD,
    PROXY_XFCC_SANITIZE_SET,
};

/* A cluster's TLS origination. AUTO: MUTUAL when a certificate is set, SIMPLE when a CA, SNI, SANs
 * or ALPN are, DISABLE otherwise. */
enum proxy_utls {
    PROXY_UTLS_AUTO,
    PROXY_UTLS_DISABLE,
    PROXY_UTLS_SIMPLE,
    PROXY_UTLS_MUTUAL,
    PROXY_UTLS_MESH,
};

/* ---- configuration as loaded ---- */

struct proxy_listener_tls_cfg {
    struct sc_tls_server_opts tls; /* `tls:`; no certificate: no termination of its own */
    int mtls;                      /* enum proxy_mtls */
    int forward_client_cert;       /* enum proxy_xfcc */
    int direction;                 /* 0 inbound, 1 outbound */
};

struct proxy_cluster_tls_cfg {
    int mode; /* enum proxy_utls */
    struct sc_tls_client_opts o;
};

struct proxy_identity_cfg {
    char *cert;
    char *key;
    char *ca;
    char *trust_domain;
};

/* The quick-start flags (--tls-cert, --upstream-tls, ...). */
struct proxy_tls_flags {
    char *tls_cert;
    char *tls_key;
    char *tls_client_ca;
    int mtls; /* enum proxy_mtls */
    bool upstream_tls;
    char *upstream_ca;
    char *upstream_cert;
    char *upstream_key;
    char *upstream_sni;
    struct sc_strv upstream_san;
    char *identity_dir; /* tls.crt, tls.key and ca.crt: the identity when identity: is unset */
    char *trust_domain; /* the identity's trust domain when identity: does not say */
};

/* Option tables: a listener's keys (inline), a cluster's `tls:` object, the top-level
 * `identity:` object and the quick-start flags (inline at the top level). */
extern const struct sc_opt proxy_listener_tls_opts[];
extern const struct sc_opt proxy_cluster_tls_opts[];
extern const struct sc_opt proxy_identity_opts[];
extern const struct sc_opt proxy_tls_flag_opts[];

/* Checks what the tables cannot: an identity needs cert, key and ca together; mesh clusters need
 * an identity; a listener's mtls mode other than DISABLE needs certificates from somewhere.
 * <what> names the place in messages. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_tls_check(const struct proxy_cfg *cfg, char **err);

/* ---- the runtime ---- */

/* A listener's TLS, resolved from its options, the quick-start flags and the identity. */
struct proxy_listener_tls {
    struct proxy_tls_src *src; /* NULL: plaintext only */
    int mode;                  /* STRICT, PERMISSIVE or DISABLE (never UNSET) */
    int xfcc;                  /* never AUTO */
    bool verifies;             /* client certificates are verified (mutual TLS) */
    bool by_port;              /* PeerAuthentication sets modes per port: decided at accept */
    struct proxy_pa_effective pa;
    struct sc_metric *m_hs[SC_TLS_FAIL_PROTOCOL + 1]; /* handshakes by result (NONE: ok) */
    struct sc_metric *m_records[2]; /* handshakes done, by record layer: openssl, native */
};

/* A cluster's TLS origination. */
struct proxy_cluster_tls {
    struct proxy_tls_src *src; /* NULL: plaintext */
    bool sni_from_host;        /* no sni configured: send the endpoint's host name */
    bool mesh;                 /* the peer must be a workload of trust_domain */
    char trust_domain[256];
    struct sc_metric *m_hs[SC_TLS_FAIL_PROTOCOL + 1]; /* handshakes by result (NONE: ok) */
    struct sc_metric *m_records[2]; /* connections closed after a handshake, by the record
                                       layer that carried them last: openssl, native */
};

/* Resolves listener <lc> (NULL for the quick-start and default listeners, <quick_inbound> telling
 * whether it is the inbound one) into <out>. Stores are shared by every snapshot that has the
 * same options, so a reload keeps watching, ticket keys and sessions. Returns 0 or SC_ECONFIG
 * with a new message in <*err> (a certificate that does not load). Main loop only. */
int proxy_tls_listener_init(struct proxy_listener_tls *out, const char *lname,
                            const struct proxy_listener_cfg *lc, bool quick_inbound,
                            const struct proxy_cfg *cfg, struct proxy_metrics *pm, char **err);

/* The same for cluster <cc> (NULL: the quick-start upstream). */
int proxy_tls_cluster_init(struct proxy_cluster_tls *out, const char *cname,
                           const struct proxy_cluster_cfg *cc, const struct proxy_cfg *cfg,
                           struct proxy_metrics *pm, char **err);

/* Drops the references of a snapshot's listener and cluster. Any thread. */
void proxy_tls_listener_release(struct proxy_listener_tls *t);
/* Whether ALPN protocol <p> names the mesh (Istio's values: "istio-peer-exchange", "istio",
 * "istio-http/1.0", "istio-http/1.1", "istio-h2"); mesh clusters offer the first two. */
bool proxy_tls_mesh_alpn(const char *p);
/* Returns a new reference to the current server context of <t> (which terminates: src set). */
struct sc_tls_ctx *proxy_tls_listener_ctx(const struct proxy_listener_tls *t);
void proxy_tls_cluster_release(struct proxy_cluster_tls *t);

/* Starts watching the files of every store on the main loop, and frees stores no snapshot uses
 * any more. Call after each start and reload. */
void proxy_tls_watch(struct proxy *px);

/* Stops watching and frees every store (the proxy is finishing). */
void proxy_tls_shutdown(void);

/* Registers sidecar_tls_handshakes_total and sidecar_tls_cert_expiry_timestamp_seconds. */
void proxy_tls_metrics_init(struct proxy_metrics *pm);

/* Sets the expiry gauges from the current certificates (on collection). */
void proxy_tls_collect(struct proxy_metrics *pm);

/* ---- the data path ---- */

/* A connection was accepted on a listener with TLS: stacks the TLS layer now (STRICT), or marks
 * the connection for sniffing (PERMISSIVE). */
void proxy_tls_accepted(struct proxy_dconn *dc);

/* PERMISSIVE: decides from the bytes read so far. Returns 0 to parse them as plaintext HTTP, 1
 * when more bytes are needed or the TLS layer took them over. */
int proxy_tls_sniff(struct proxy_dconn *dc);

/* The downstream handshake ended with <status> (the TLS layer's connected callback). */
void proxy_tls_handshake_done(struct proxy_dconn *dc, int status);

/* Stacks the cluster's TLS layer on the new upstream connection <uc> (before it connects), when
 * the cluster originates TLS; uc->x becomes the layer. */
void proxy_tls_upstream(struct proxy_uconn *uc);

/* Stacks the TLS layer of <ep>'s cluster on <below> (a transport not yet connected, whose owner
 * the layer becomes) and returns the layer, or returns <below> when the cluster speaks plaintext.
 * Health checks and mirrors pass it as their HTTP/1 client's wrap hook. */
struct sc_xport *proxy_tls_cluster_layer(struct proxy_endpoint *ep, uv_loop_t *loop,
                                         struct sc_xport *below);

/* Stacks the TLS layer of cluster <c> (which originates TLS: c->tls.src set) on <below> for a
 * connection the TCP relay makes to endpoint <ep>, or to <addr> for an original_dst cluster
 * (<ep> NULL), and returns the layer (the owner of <below>, reporting to below's owner). A mesh
 * cluster offers only the mesh's ALPN ("istio-peer-exchange", "istio"), as Istio's TCP clusters
 * do, whatever the cluster offers on its HTTP connections. */
struct sc_xport *proxy_tls_relay_layer(const struct proxy_cluster *c,
                                       const struct proxy_endpoint *ep, const struct sockaddr *addr,
                                       uv_loop_t *loop, struct sc_xport *below);

/* The connect of chain <x>, made by one of the layers above for cluster <c>, ended with
 * <status>: counts the handshake in sidecar_upstream_tls_handshakes_total by result and returns
 * why the connection cannot carry traffic (static text), with its result in <*fail> (NULL: not
 * wanted): the handshake's failure, or for a mesh cluster a peer without a SPIFFE ID of the trust
 * domain (SC_TLS_FAIL_BAD_SAN; subject_alt_names, when set, were checked by the handshake).
 * Returns NULL when it may, and when the TCP connect failed (no handshake took place: the caller
 * reports the socket error). */
const char *proxy_tls_cluster_done(const struct proxy_cluster *c, struct sc_xport *x, int status,
                                   enum sc_tls_fail *fail);

/* The connect of upstream connection <uc> ended with <status>. For a cluster that originates
 * TLS, counts the handshake by result and returns why the connection cannot carry the request
 * (static text): the handshake's failure (a TCP connect failure is no handshake: NULL, the caller
 * reports the socket error), or, for a mesh cluster, a peer without a SPIFFE ID of the trust
 * domain (subject_alt_names, when set, were checked by the handshake). NULL when it may. */
const char *proxy_tls_upstream_done(struct proxy_uconn *uc, int status);

/* Cluster <c>'s upstream chain <x> is closing: when it is a TLS layer whose handshake completed,
 * counts it in sidecar_upstream_tls_record_layer_total by the layer that carried its records
 * last (a client moves to the native layer after the server's tickets, so only then is it known).
 * Plaintext chains and failed handshakes count nothing. */
void proxy_tls_cluster_closing(const struct proxy_cluster *c, struct sc_xport *x);

/* Adds X-Forwarded-Client-Cert for exchange <ex> to header sink <s>, as its listener's mode
 * says, with the client's headers <m>. Returns 0 or SC_ETOOBIG. */
struct sc_http_msg;
struct proxy_hsink;
int proxy_tls_xfcc(struct proxy_exch *ex, const struct sc_http_msg *m, struct proxy_hsink *s);

/* Whether the request of <ex> for <host> came on a TLS connection whose certificate (chosen by
 * SNI among the listener's) does not name it while another of the listener's does: such a
 * request gets 421, so the client opens a connection for that host. */
bool proxy_tls_misdirected(struct proxy_exch *ex, struct sc_str host);

/* The client's Istio principal ("td/ns/x/sa/y"; empty without a SPIFFE certificate) and TLS
 * version ("TLSv1.3"; empty for plaintext) for exchange <ex>. Borrow from its connection. */
struct sc_str proxy_tls_peer_principal(struct proxy_exch *ex);
struct sc_str proxy_tls_version(struct proxy_exch *ex);

#endif
