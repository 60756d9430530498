// SPDX-License-Identifier: Apache-2.0
// What the files of the Envoy bootstrap translation share (proxy_envoy.c: bootstrap, listeners,
// connection manager, routes, HTTP filters; proxy_envoy_chain.c: filter chains and tcp_proxy;
// proxy_envoy_cluster.c: clusters, addresses, TLS contexts). Included by nothing else.
#ifndef SC_ROLES_PROXY_PROXY_ENVOY_H
#define SC_ROLES_PROXY_PROXY_ENVOY_H

#include <stdbool.h>
#include <string.h>

#include "roles/proxy/proxy_front.h"

#define T_PREFIX "type.googleapis.com/"
#define T_DOWN_TLS T_PREFIX "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define T_UP_TLS T_PREFIX "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define T_HCM                                                                                      \
    T_PREFIX "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define T_TCP_PROXY T_PREFIX "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define ADDR_MAX 300

static inline bool is(const char *s, const char *v)
{
    return s && strcmp(s, v) == 0;
}

/* Checks that typed_config <tc>'s @type is <want>. Returns 0 or SC_ECONFIG after a refusal. */
int proxy_envoy_want_type(struct proxy_front *f, const struct sc_ynode *tc, const char *path,
                          const char *want);

/* Writes "host:port" of an Envoy address {socket_address: {address, port_value}} at <path> into
 * <out> of <len> bytes. Returns 0 or SC_ECONFIG after a refusal. */
int proxy_envoy_address(struct proxy_front *f, const struct sc_ynode *a, const char *path,
                        char *out, size_t len);

/* A transport_socket with a Downstream (<down>) or UpstreamTlsContext as our tls object, or NULL
 * after a refusal. */
struct sc_ynode *proxy_envoy_transport_socket(struct proxy_front *f, const struct sc_ynode *ts,
                                              const char *path, bool down);

/* proxy_envoy_authz.c: whether HTTP filter @type <type> is rbac, jwt_authn or ext_authz; the filter
 * with typed_config <tc> of connection manager <hcm> in output listener <l> onto the native
 * authorization and request_authentication blocks; the check that such filters are in a bootstrap
 * of one listener; the manager's normalize_path, merge_slashes and
 * path_with_escaped_slashes_action onto path_normalization and escaped_slashes. Each returns 0 or
 * SC_ECONFIG after a refusal. */
bool proxy_envoy_authz_filter_is(const char *type);
int proxy_envoy_authz_filter(struct proxy_front *f, const struct sc_ynode *hcm,
                             const struct sc_ynode *l, const struct sc_ynode *tc, const char *path);
int proxy_envoy_authz_listeners(struct proxy_front *f, size_t nlisteners);
int proxy_envoy_paths(struct proxy_front *f, const struct sc_ynode *hcm, const char *path);

/* A FractionalPercent {numerator, denominator} (or a RuntimeFractionalPercent's default_value)
 * <fp> at <path> as a percentage into <out>. Returns 0 or SC_ECONFIG after a refusal. */
int proxy_envoy_fraction(struct proxy_front *f, const struct sc_ynode *fp, const char *path,
                         double *out);

/* proxy_front_cors.c: whether an HTTP filter (@type <t>, else <name>) is the cors filter; its
 * typed_config <tc> (NULL: none) checked; a virtual host <vh>'s CorsPolicy checked (noted as
 * without effect when the connection manager has no cors filter: <on> false); the CorsPolicy
 * that applies to Envoy route <r> of <vh>, merged as Envoy reads it, put as native route <rt>'s
 * cors. Refusals set f->err. */
bool proxy_envoy_cors_filter_is(const char *t, const char *name);
int proxy_envoy_cors_filter(struct proxy_front *f, const struct sc_ynode *tc, const char *path);
void proxy_envoy_cors_vhost(struct proxy_front *f, const struct sc_ynode *vh, bool on,
                            const char *path);
void proxy_envoy_cors_route(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *r,
                            const struct sc_ynode *vh, bool on, const char *rpath,
                            const char *vpath);

/* The http_connection_manager typed_config <tc> at <path> into output listener <l> (its routes and
 * settings); sets <*access_log> when it has an access_log. */
void proxy_envoy_hcm(struct proxy_front *f, bool *access_log, struct sc_ynode *l,
                     const struct sc_ynode *tc, const char *path);

/* The routes of http_connection_manager <tc> at <path>: its route_config's, after a copy of
 * <health> (the health_check filter's route, or NULL), each with a copy of <fault> (the fault
 * filter's, or NULL). Returns a new sequence, or NULL with f->err set. */
struct sc_ynode *proxy_envoy_hcm_routes(struct proxy_front *f, const struct sc_ynode *tc,
                                        const char *path, const struct sc_ynode *health,
                                        const struct sc_ynode *fault);

/* A cluster health check's tcp_health_check <th> (at <path>) as our health_check.tcp
 * (proxy_envoy_health.c): Payload text (hex) or binary (base64) as hex. */
struct sc_ynode *proxy_envoy_tcp_health(struct proxy_front *f, const struct sc_ynode *th,
                                        const char *path);

/* Whether @type <t> (or, without one, filter name <name>) is the health_check HTTP filter. */
bool proxy_envoy_health_filter_is(const char *t, const char *name);

/* The health_check HTTP filter's typed_config <tc> (at <path>) as a native route answering health
 * checks (health_endpoint), to go before every other route of the listener; NULL after a
 * refusal. */
struct sc_ynode *proxy_envoy_health_filter(struct proxy_front *f, const struct sc_ynode *tc,
                                           const char *path);

/* A route's hash_policy list <hp> as ours (proxy_envoy_chain.c). */
struct sc_ynode *proxy_envoy_hash_policy(struct proxy_front *f, const struct sc_ynode *hp,
                                         const char *path);

/* proxy_envoy_chain.c: listener <ln>'s filter_chains and default_filter_chain at <path> (its
 * address <addr>) into output listener <l>: one http_connection_manager chain as the listener's
 * routes, tcp_proxy chains as tcp_routes, the default chain as tcp_cluster. Returns 0 or
 * SC_ECONFIG after a refusal. */
int proxy_envoy_chains(struct proxy_front *f, bool *access_log, const struct sc_ynode *ln,
                       const char *path, const char *addr, struct sc_ynode *l);

/* An Http2ProtocolOptions message <at> as our `http2` settings of a listener (<down>) or a cluster:
 * max_concurrent_streams, the windows, connection_keepalive; flood bounds and the HPACK table
 * size noted (the proxy's own apply). Returns the map, or NULL after a refusal. */
struct sc_ynode *proxy_envoy_http2_options(struct proxy_front *f, const struct sc_ynode *at,
                                           const char *path, bool down);
/* Translates static_resources.clusters[<i>] <cn> and appends it to <out>. */
void proxy_envoy_cluster(struct proxy_front *f, const struct sc_ynode *cn, size_t i,
                         struct sc_ynode *out);

#endif
