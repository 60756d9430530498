// SPDX-License-Identifier: Apache-2.0
// Transparent interception in the proxy: a listener's protocol (http, tcp, or detected from the
// first bytes), its TCP routes (by destination port, TLS server name and ALPN), the TCP relay
// (proxy_tcp.c) and the source address a cluster binds its upstream sockets to (127.0.0.6 for the
// inbound passthrough). Options and the runtime built from them live in proxy_tcp_config.c; the
// listener and cluster option tables include them inline.
#ifndef SC_ROLES_PROXY_PROXY_TCP_H
#define SC_ROLES_PROXY_PROXY_TCP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <uv.h>

#include "core/config.h"
#include "core/list.h"

struct proxy_cfg;
struct proxy_rt;
struct proxy_listener;
struct proxy_listener_cfg;
struct proxy_cluster;
struct proxy_cluster_cfg;
struct proxy_metrics;
struct proxy_worker;
struct sc_metric;

enum { PROXY_LP_HTTP, PROXY_LP_TCP, PROXY_LP_AUTO };

/* ---- configuration as loaded ---- */

/* Address conditions of a connection, inlined in tcp_routes and HTTP routes' match
 * (proxy_addr_match_opts). */
struct proxy_addr_match_cfg {
    struct sc_strv destination_prefix_ranges; /* CIDR blocks of the destination address */
    struct sc_strv source_prefix_ranges;      /* CIDR blocks of the client's address */
    struct sc_strv source_ports;              /* the client's ports */
    int source_type;                          /* PROXY_ST_* */
};
extern const struct sc_opt proxy_addr_match_opts[];

/* The conditions on an HTTP route's connection (its match's inlined keys beside the request's). */
struct proxy_route_conn_cfg {
    struct proxy_addr_match_cfg addr;
    struct sc_strv server_names; /* SNI patterns of a TLS connection the listener terminates */
    int transport_protocol;      /* PROXY_TP_* */
};

struct proxy_tcp_route_cfg {
    char *name;
    struct sc_strv server_names;          /* TLS SNI patterns ("a.b", "*.b", "*"); empty: any */
    struct sc_strv application_protocols; /* ALPN: any one offered matches; empty: any */
    struct sc_strv destination_ports;     /* original destination ports; empty: any */
    int transport_protocol;               /* PROXY_TP_*: TLS only, plaintext only, or any */
    struct proxy_addr_match_cfg addr;     /* address conditions (proxy_route_match.c) */
    char *cluster;
    struct sc_vec weighted_clusters; /* struct proxy_weighted_cfg (cluster, weight) */
};

struct proxy_cidr;

enum { PROXY_TP_ANY, PROXY_TP_TLS, PROXY_TP_RAW };
/* A route's source_type: any client, a local one (a loopback address or the destination address
 * itself, Envoy's SAME_IP_OR_LOOPBACK), or any other. */
enum { PROXY_ST_ANY, PROXY_ST_LOCAL, PROXY_ST_EXTERNAL };

struct proxy_icpt_listener_cfg {
    int protocol;
    uint64_t detect_timeout_ms;
    struct sc_strv opaque_ports;
    struct sc_strv http_ports;
    struct sc_vec tcp_routes; /* struct proxy_tcp_route_cfg */
    char *tcp_cluster;
    uint64_t tcp_idle_timeout_ms;
    bool tcp_splice;
};

struct proxy_icpt_cluster_cfg {
    struct sc_strv upstream_bind_address;
};

extern const struct sc_opt proxy_icpt_listener_opts[];
extern const struct sc_opt proxy_icpt_cluster_opts[];

/* ---- runtime ---- */

#define PROXY_ICPT_MAX_PORTS 64

struct proxy_tcp_route {
    char *name;
    char **server_names;
    size_t nserver_names;
    char **alpn;
    size_t nalpn;
    uint16_t ports[PROXY_ICPT_MAX_PORTS];
    size_t nports;
    int transport;               /* PROXY_TP_* */
    struct proxy_addr_match *am; /* address conditions; NULL: none (addresses not needed) */
    struct proxy_cluster *cluster;
    struct proxy_cluster **wc; /* weighted_clusters, chosen per connection by cum */
    uint32_t *cum;             /* cumulative weights */
    size_t nwc;
};

struct proxy_listener_icpt {
    int protocol;
    uint64_t detect_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t connect_timeout_ms; /* the top-level connect_timeout, without tcp_cluster */
    bool splice;                 /* relay through pipes with splice(2) */
    uint16_t opaque[PROXY_ICPT_MAX_PORTS];
    size_t nopaque;
    uint16_t http[PROXY_ICPT_MAX_PORTS];
    size_t nhttp;
    struct proxy_tcp_route *routes;
    size_t nroutes;
    bool by_addr;                  /* a route matches addresses */
    struct proxy_cluster *cluster; /* tcp_cluster; NULL: the original destination */
    struct sc_metric *m_total;
    struct sc_metric *m_active;
    struct sc_metric *m_rx; /* bytes from the client */
    struct sc_metric *m_tx; /* bytes to the client */
};

struct proxy_cluster_bind {
    bool has4, has6;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
};

/* Address conditions at run time (proxy_route_match.c). */
struct proxy_addr_match {
    struct proxy_cidr *dranges, *sranges; /* destination and source CIDR blocks */
    size_t ndranges, nsranges;
    uint16_t *sports; /* source ports */
    size_t nsports;
    int source_type; /* PROXY_ST_* */
};

/* Returns new conditions from <c> (checked at load), or NULL when it sets none. */
struct proxy_addr_match *proxy_addr_match_new(const struct proxy_addr_match_cfg *c);

/* Frees <am> (NULL-safe). */
void proxy_addr_match_free(struct proxy_addr_match *am);

struct proxy_az_ip;
/* Whether conditions <am> take a connection from <src> port <sport> to <dst>: every list that is
 * set must hold it, and source_type must agree (local: a loopback source or the destination
 * address itself). */
bool proxy_addr_match_takes(const struct proxy_addr_match *am, const struct proxy_az_ip *src,
                            uint16_t sport, const struct proxy_az_ip *dst);

/* Option check for server-name patterns: a host name, "*.suffix" or "*" (sc_opt_check_cb). */
int proxy_server_names_check(void *field, char **err);

/* Option check for a list of TCP ports, each 1..65535 (sc_opt_check_cb). */
int proxy_icpt_ports_check(void *field, char **err);

/* Returns the ports of <v> (checked at load) as a new array of <*n>. */
uint16_t *proxy_icpt_parse_ports(const struct sc_strv *v, size_t *n);

/* Returns true when HTTP route <r>'s destination_ports hold <port>. */
struct proxy_route;
bool proxy_route_port_in(const struct proxy_route *r, uint16_t port);

/* An HTTP route's connection conditions at run time. */
struct proxy_route_conn {
    struct proxy_addr_match *am; /* NULL: none */
    char **server_names;         /* lowercase patterns (proxy_sni_match) */
    size_t nserver_names;
    int transport; /* PROXY_TP_* */
};

/* Returns new conditions from <c> (checked at load), or NULL when it sets none. */
struct proxy_route_conn *proxy_route_conn_new(const struct proxy_route_conn_cfg *c);

/* Frees <rc> (NULL-safe). */
void proxy_route_conn_free(struct proxy_route_conn *rc);

struct proxy_dconn;
/* Whether HTTP route <r>'s connection conditions (destination_ports, address conditions) take
 * <dc>'s connection: its original destination port, addresses, server name and transport; called
 * only for a route with r->conn_match. Reads the addresses of the connection once (cached in
 * dc->od). */
bool proxy_route_conn_takes(const struct proxy_route *r, struct proxy_dconn *dc);

/* Cross-checks the interception options of <cfg> (cluster names, port lists). */
int proxy_icpt_check(const struct proxy_cfg *cfg, char **err);

/* Builds <l>'s interception runtime from <lc> (NULL: a listener of the defaults: HTTP only) on
 * snapshot <rt>, whose clusters exist. Returns 0 or SC_ECONFIG with a message. */
int proxy_icpt_listener_init(struct proxy_listener *l, const struct proxy_listener_cfg *lc,
                             const struct proxy_cfg *cfg, struct proxy_rt *rt,
                             struct proxy_metrics *pm, char **err);
void proxy_icpt_listener_free(struct proxy_listener *l);

/* Fills <c>'s bind addresses from <cc> (checked at load). */
void proxy_icpt_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc);

/* Binds the not yet opened handle <h> to <c>'s source address for <family>, when it has one.
 * Returns 0 or a negative libuv error. */
int proxy_icpt_bind(uv_tcp_t *h, const struct proxy_cluster *c, int family);

/* Registers sidecar_tcp_* families. */
void proxy_tcp_metrics_init(struct proxy_metrics *pm);

/* Accepts a client on a listener whose protocol is tcp or auto (a worker's uv_tcp_t). */
void proxy_tcp_on_accept(uv_stream_t *server, int status);

/* Closes every TCP connection of <w> (<all>), or only those still being detected. */
void proxy_tcp_stop(struct proxy_worker *w, bool all);

/* Closes the worker's pooled pipes (after its loop ended). */
void proxy_tcp_cleanup(struct proxy_worker *w);

#endif
