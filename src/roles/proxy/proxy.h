// SPDX-License-Identifier: Apache-2.0
// Internal types of the proxy role, shared by its files and by nothing outside src/roles/proxy/.
//
// The configuration a request runs on is a snapshot (struct proxy_rt): listeners, routes and
// clusters copied out of the loaded config, with compiled regexes, parsed addresses and cached
// metric series. It is immutable once built (only endpoint addresses of DNS clusters change,
// under the endpoint's mutex) and reference counted: every worker holds one reference to its
// current snapshot, every request and every upstream connection one more, so a reload swaps the
// workers' snapshots while in-flight requests finish on the old one, which is freed by whichever
// thread drops its last reference.
#ifndef SC_ROLES_PROXY_PROXY_H
#define SC_ROLES_PROXY_PROXY_H

#include "core/regex.h"
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "app.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/list.h"
#include "core/metrics.h"
#include "net/http1.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_cors.h"
#include "roles/proxy/proxy_grpc_web.h"
#include "roles/proxy/proxy_jwt.h"
#include "roles/proxy/proxy_oidc.h"
#include "roles/proxy/proxy_policy.h"
#include "roles/proxy/proxy_hash.h"
#include "roles/proxy/proxy_route_policy.h"
#include "roles/proxy/proxy_route_query.h"
#include "roles/proxy/proxy_peerauth.h"
#include "roles/proxy/proxy_probe.h"
#include "roles/proxy/proxy_tls.h"
#include "roles/proxy/proxy_tcp.h"
#include "roles/proxy/proxy_trace.h"

/* The most header fields a listener's max_request_headers may allow (HTTP/1 and HTTP/2). */
#define PROXY_MAX_REQUEST_HEADERS 1024

/* ---- configuration as loaded (the option table in proxy_config.c describes these) ---- */

struct proxy_header_match_cfg {
    char *name;
    char *value;  /* exact value; NULL: any */
    bool present; /* false: the header must be absent */
};

extern const struct sc_opt proxy_match_opts[]; /* proxy_route_match.c */

struct proxy_match_cfg {
    char *prefix;
    char *path;
    char *regex;
    struct sc_strv methods;
    struct sc_strv authority;         /* Host names (Envoy's domains, Istio's hosts) */
    struct sc_vec headers;            /* struct proxy_header_match_cfg */
    struct sc_vec cookies;            /* struct proxy_header_match_cfg */
    struct sc_vec query_parameters;   /* struct proxy_query_match_cfg */
    struct sc_strv destination_ports; /* the connection's original destination port */
    struct proxy_route_conn_cfg conn; /* the connection's conditions (proxy_route_match.c) */
};

struct proxy_retry_cfg {
    struct sc_strv retry_on;
    int64_t num_retries;   /* -1: the top-level retries */
    char *per_try_timeout; /* a duration; NULL: the top-level per_try_timeout; 0: none */
    struct sc_strv retriable_status_codes;
    bool retry_non_idempotent;
    uint64_t base_interval_ms;
    uint64_t max_interval_ms;
};

/* A route's `grpc` options (proxy_grpc.c): how a call's grpc-timeout becomes its deadline. */
struct proxy_grpc_route_cfg {
    char *timeout_max;          /* a duration; NULL: the route's timeout is the cap; 0: none */
    uint64_t timeout_offset_ms; /* taken off the client's grpc-timeout */
};
extern const struct sc_opt proxy_grpc_route_opts[];

struct proxy_route_cfg {
    char *name;
    struct proxy_match_cfg match;
    char *cluster;
    char *timeout; /* a duration; NULL: the top-level timeout; 0: none */
    struct proxy_retry_cfg retry_policy;
    char *subset;
    struct sc_vec weighted_clusters; /* struct proxy_weighted_cfg */
    struct proxy_rl_cfg rate_limit;
    struct proxy_fault_cfg fault;
    struct proxy_mirror_cfg mirror;
    struct proxy_headers_cfg headers;
    char *prefix_rewrite;
    struct proxy_regex_rewrite_cfg regex_rewrite;
    struct sc_vec hash_policy; /* struct proxy_hash_policy_cfg */
    char *host_rewrite;
    struct proxy_direct_cfg direct_response;
    struct proxy_redirect_cfg redirect;
    struct proxy_health_ep_cfg health_endpoint;
    struct proxy_grpc_route_cfg grpc;
    struct proxy_cors_cfg cors; /* replaces the listener's (proxy_cors.c) */
};

/* ---- downstream HTTP/2 (proxy_h2.c): a listener's `http2` options ---- */
struct proxy_h2_lcfg {
    bool enabled;                            /* h2c by preface, h2 by ALPN */
    bool only;                               /* HTTP/2 only: HTTP/1 requests get 505 */
    int64_t max_concurrent_streams;          /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint64_t initial_stream_window_size;     /* SETTINGS_INITIAL_WINDOW_SIZE */
    uint64_t initial_connection_window_size; /* the connection's receive window */
    uint64_t max_header_list_size;           /* SETTINGS_MAX_HEADER_LIST_SIZE */
    int64_t stream_reset_burst;              /* RST_STREAM frames a client may send at once */
    int64_t stream_reset_rate;               /* and per second after that */
    uint64_t keepalive_interval_ms;          /* PING a connection quiet this long (0: never) */
    uint64_t keepalive_timeout_ms;           /* and close it when unanswered for this long */
};
extern const struct sc_opt proxy_h2_listener_opts[];
/* Why the proxy sent a GOAWAY (sidecar_http2_goaway_total's reason label). */
enum {
    PROXY_H2_GA_DRAIN,
    PROXY_H2_GA_IDLE,
    PROXY_H2_GA_PROTOCOL,
    PROXY_H2_GA_RESET_FLOOD,
    PROXY_H2_GA_FLOOD,
    PROXY_H2_GA_PING_TIMEOUT,
    PROXY_H2_GA_OTHER,
    PROXY_H2_GA_N
};
/* A listener's HTTP/2 series, resolved when the snapshot is built. */
struct proxy_h2_lmetrics {
    struct sc_metric *conns;   /* sidecar_http2_connections_total */
    struct sc_metric *streams; /* sidecar_http2_streams_total */
    struct sc_metric *refused; /* sidecar_http2_refused_streams_total */
    struct sc_metric *goaway[PROXY_H2_GA_N];
};
struct proxy_metrics;
struct proxy_listener;
/* Registers the HTTP/2 families (proxy_h2.c). */
void proxy_h2_metrics_init(struct proxy_metrics *pm);
/* Registers sidecar_grpc_responses_total and the gRPC message counters (proxy_grpc.c). */
void proxy_grpc_metrics_init(struct proxy_metrics *pm);
/* Resolves listener <l>'s HTTP/2 series. */
void proxy_h2_listener_metrics(struct proxy_listener *l, struct proxy_metrics *pm);
/* ---- end of downstream HTTP/2 ---- */

struct proxy_listener_cfg {
    char *name;
    char *address;
    struct sc_vec routes; /* struct proxy_route_cfg */
    struct proxy_rl_cfg rate_limit;
    struct proxy_listener_tls_cfg tlscfg; /* tls, mtls, forward_client_cert, direction */
    struct proxy_icpt_listener_cfg icpt;  /* protocol, detection, tcp_routes (proxy_tcp.h) */
    struct proxy_oidc_cfg oidc;           /* this listener's own login (proxy_oidc.c) */
    struct proxy_h2_lcfg http2;           /* downstream HTTP/2 (proxy_h2.c) */
    struct proxy_grpc_web_cfg gw;         /* grpc_web (proxy_grpc_web.c) */
    struct proxy_cors_cfg cors;           /* routes' CORS policy unless their own (proxy_cors.c) */
    int64_t max_request_headers;          /* header fields a request may carry */
};

/* ---- upstream HTTP/2 (proxy_h2_up.c): a cluster's protocol and HTTP/2 settings ---- */
enum { PROXY_UP_HTTP1, PROXY_UP_HTTP2, PROXY_UP_AUTO };
struct proxy_h2_up_opts_cfg {
    int64_t max_concurrent_streams;
    uint64_t initial_stream_window_size;
    uint64_t initial_connection_window_size;
    uint64_t max_header_list_size;
    uint64_t keepalive_interval_ms;
    uint64_t keepalive_timeout_ms;
};
struct proxy_h2_up_cfg {
    int protocol; /* PROXY_UP_* */
    struct proxy_h2_up_opts_cfg http2;
};
enum {
    PROXY_H2E_GOAWAY,
    PROXY_H2E_REFUSED,
    PROXY_H2E_RESET,
    PROXY_H2E_PROTOCOL,
    PROXY_H2E_PING_TIMEOUT,
    PROXY_H2E_N
};
struct proxy_h2_up_cluster {
    int protocol;
    struct sc_metric *m_ev[PROXY_H2E_N]; /* sidecar_upstream_http2_events_total */
    uint32_t max_streams;
    uint32_t stream_window;
    uint32_t conn_window;
    uint32_t max_header_list;
    uint64_t ka_interval_ms;
    uint64_t ka_timeout_ms;
};
extern const struct sc_opt proxy_h2_up_cluster_opts[];
/* ---- end of upstream HTTP/2 ---- */

struct proxy_cluster_cfg {
    char *name;
    int type;
    struct sc_strv endpoints;
    int lb_policy;
    struct sc_vec hash_policy;   /* struct proxy_hash_policy_cfg: routes' default */
    uint64_t connect_timeout_ms; /* 0: the top-level connect_timeout */
    uint64_t dns_refresh_ms;
    int64_t max_idle;
    uint64_t idle_timeout_ms;
    struct proxy_policy_cfg policy;  /* circuit_breakers, outlier_detection, health_check */
    struct sc_vec labeled_endpoints; /* struct proxy_labeled_ep_cfg */
    struct sc_vec subsets;           /* struct proxy_subset_cfg */
    struct proxy_cluster_tls_cfg tlscfg;
    struct proxy_icpt_cluster_cfg icpt; /* upstream_bind_address (proxy_tcp.h) */
    struct proxy_h2_up_cfg h2up;        /* protocol and http2 (proxy_h2_up.c) */
};

struct proxy_cfg {
    char *listen;
    char *upstream;
    uint64_t timeout_ms;
    uint64_t connect_timeout_ms;
    int64_t retries;
    uint64_t per_try_timeout_ms;
    int64_t workers;
    int access_log;
    uint64_t idle_timeout_ms;
    uint64_t request_headers_timeout_ms;
    uint64_t stream_idle_timeout_ms;
    uint64_t retry_buffer;
    uint64_t max_request_head;
    uint64_t max_request_body;
    int64_t max_connections;
    uint64_t busy_poll_ms;
    char *rate_limit;        /* --rate-limit N/s|m|h: per client IP on the inbound listeners */
    struct sc_vec listeners; /* struct proxy_listener_cfg */
    struct sc_vec clusters;  /* struct proxy_cluster_cfg */
    struct proxy_identity_cfg identity;
    struct proxy_tls_flags tls_flags;
    struct proxy_workload_cfg workload;
    struct sc_vec peer_authentication; /* struct proxy_pa_cfg */
    char *mesh_root_namespace;
    struct proxy_status_cfg status;
    struct proxy_authz_cfg authz; /* path_normalization, escaped_slashes, authorization, ... */
    struct proxy_jwt_cfg jwt;     /* request_authentication, jwt_clock_skew, ... */
    struct proxy_trace_cfg tracing;
    struct proxy_oidc_cfg oidc; /* login in front of the app (proxy_oidc.c) */
};

extern const struct sc_opt proxy_opts[];

/* Option checks of listener, route and cluster names (letters, digits and "-._:/", 1 to 128
 * bytes) and of endpoint addresses (letters, digits and "-._:[]%"): names and endpoints are written
 * into JSON access log lines and metric labels unescaped, so anything else is refused at load,
 * at the value's file:line:col. */
int proxy_name_check(void *field, char **err);
int proxy_endpoint_check(void *field, char **err);
int proxy_endpoints_check(void *field, char **err);
/* True when <s> has only the characters proxy_endpoint_check admits (empty too). */
bool proxy_endpoint_chars_ok(struct sc_str s);

/* Fills route <r>'s gRPC deadline settings from <c> (timeout_ms set already). */
struct proxy_route;
void proxy_grpc_route_init(struct proxy_route *r, const struct proxy_grpc_route_cfg *c);

/* Role check: cross references and values the table cannot check. */
int proxy_config_check(const void *cfg, char **err);

/* Replaces "listeners" and "clusters" in the /config dump <j> of checked <cfg> with the effective
 * ones: those the file lists plus those synthesised from --listen/--upstream or the defaults, and
 * routes and clusters with the values they inherit from the top level filled in. */
void proxy_config_dump(const void *cfg, json_t *j);

/* ---- the runtime snapshot ---- */

enum {
    PROXY_RETRY_CONNECT_FAILURE = 1 << 0,
    PROXY_RETRY_RESET = 1 << 1,
    PROXY_RETRY_5XX = 1 << 2,
    PROXY_RETRY_GATEWAY = 1 << 3,
    PROXY_RETRY_STATUS = 1 << 4,
    /* gRPC statuses (proxy_grpc.c): in a trailers-only answer, or in trailers before any
     * message reached the client */
    PROXY_RETRY_GRPC_CANCELLED = 1 << 5,
    PROXY_RETRY_GRPC_DEADLINE = 1 << 6,
    PROXY_RETRY_GRPC_INTERNAL = 1 << 7,
    PROXY_RETRY_GRPC_EXHAUSTED = 1 << 8,
    PROXY_RETRY_GRPC_UNAVAILABLE = 1 << 9,
    PROXY_RETRY_GRPC_ANY = 31 << 5,
};

enum { PROXY_LB_ROUND_ROBIN, PROXY_LB_LEAST_REQUEST, PROXY_LB_RING_HASH, PROXY_LB_MAGLEV };
enum { PROXY_CLUSTER_STATIC, PROXY_CLUSTER_ORIGINAL_DST };

#define PROXY_MAX_ADDRS 16
#define PROXY_MAX_STATUS_CODES 16

struct proxy_pool {
    struct sc_list idle; /* struct proxy_uconn, most recently used first */
    uint32_t nidle;
    struct sc_list h2;     /* HTTP/2 connections (struct proxy_uconn with ->h2; proxy_h2_up.c) */
    struct sc_list h2conn; /* connecting HTTP/2 connections (proxy_h2_wait.c) */
};

struct proxy_endpoint {
    char *name; /* as configured: "ip:port" or "host:port" */
    char *host;
    char port[8];
    bool dns;
    uv_mutex_t mu; /* guards addrs/naddrs of DNS endpoints */
    struct sockaddr_storage addrs[PROXY_MAX_ADDRS];
    _Atomic int naddrs;
    atomic_uint next_addr;
    atomic_int active;        /* requests in flight, for least_request */
    struct proxy_pool *pools; /* one per worker */
    struct proxy_cluster *cluster;
    struct proxy_ep_state *st; /* outlier and health state (in cluster->st); NULL: none */
    uint64_t hkey;             /* hash of name: its key in consistent hashing */
};

struct proxy_cluster {
    char *name;
    int lb;
    bool original_dst; /* the destination comes from each connection or request */
    uint64_t connect_timeout_ms;
    uint64_t dns_refresh_ms;
    uint32_t max_idle;
    uint64_t idle_timeout_ms;
    struct proxy_endpoint *eps;
    size_t neps;
    atomic_uint rr;
    struct sc_metric *m_retry;
    struct sc_metric *m_cx_active;
    struct sc_metric *m_timeout;
    struct proxy_cluster_state *st; /* breakers, outlier, health: a reference, kept on reload */
    struct proxy_subset *subsets;
    size_t nsubsets;
    struct proxy_hash_policy *hash; /* hash_policy: routes' default (ring_hash, maglev) */
    size_t nhash;
    struct proxy_cluster_tls tls;
    struct proxy_cluster_bind bind;  /* upstream source addresses (proxy_tcp.h) */
    struct proxy_h2_up_cluster h2up; /* protocol and HTTP/2 settings (proxy_h2_up.c) */
};

struct proxy_header_match {
    struct sc_str name;
    struct sc_str value; /* p == NULL: any */
    bool present;
};

struct proxy_route {
    char *name;
    char *prefix;
    char *path;
    pcre2_code *re;
    char **methods;
    size_t nmethods;
    char **authority;
    size_t nauthority;
    uint16_t *dports; /* original destination ports (proxy_tcp_config.c); none: any */
    size_t ndports;
    struct proxy_route_conn *conn; /* connection conditions (proxy_route_match.c); NULL: none */
    bool conn_match;               /* dports or conn: proxy_route_conn_takes decides first */
    struct proxy_header_match *headers;
    size_t nheaders;
    struct proxy_cluster *cluster;
    uint64_t timeout_ms;
    unsigned retry_on;
    int num_retries;
    uint64_t per_try_timeout_ms;
    int status_codes[PROXY_MAX_STATUS_CODES];
    size_t nstatus_codes;
    bool retry_non_idempotent;
    bool health_pass; /* a pass-through health_endpoint: matched requests go on unless draining */
    uint64_t base_interval_ms;
    uint64_t max_interval_ms;
    /* sidecar_requests_total series by status code (100..599), filled on first use */
    _Atomic(struct sc_metric *) codes[500];
    struct proxy_route_policy *pol; /* NULL: no traffic policy */
    uint64_t grpc_timeout_max_ms;   /* the cap of a call's grpc-timeout; 0: none */
    uint64_t grpc_timeout_offset_ms;
};

struct proxy_listener {
    char *name;
    char *address;
    struct sockaddr_storage ss;
    struct proxy_route *routes;
    size_t nroutes;
    struct proxy_route noroute; /* labels for requests that matched no route */
    struct sc_metric *m_cx_active;
    struct sc_metric *m_duration;
    struct proxy_rl *rl; /* listener-wide rate limit, or NULL */
    bool rl_headers;
    struct proxy_listener_tls tls;
    bool inbound;                    /* traffic to the workload: authorization applies */
    struct proxy_listener_icpt icpt; /* protocol, detection, TCP routes (proxy_tcp.h) */
    struct proxy_oidc *oidc;         /* its own login; NULL: the snapshot's (inbound) */
    bool oidc_off;                   /* no login at all */
    bool authn;                      /* a login, JWT or authorization policy applies here, set
                                        by proxy_rt_new: without one a request skips them */
    struct proxy_h2_lcfg http2;      /* downstream HTTP/2 (proxy_h2.c) */
    struct proxy_h2_lmetrics h2m;
    bool grpc_web; /* gRPC-Web requests are translated on HTTP/2 upstreams (proxy_grpc_web.c) */
    bool cors;     /* a route has a CORS policy: its preflights may go past authentication */
    uint32_t max_headers; /* max_request_headers: fields a request may carry, HTTP/1 and HTTP/2 */
};

struct proxy_rt {
    atomic_int refs;
    struct proxy_listener *listeners;
    size_t nlisteners;
    struct proxy_cluster *clusters;
    size_t nclusters;
    int nworkers;
    bool access_log;
    uint64_t idle_timeout_ms;
    uint64_t request_headers_timeout_ms;
    uint64_t stream_idle_timeout_ms;
    uint64_t retry_buffer;
    uint32_t max_request_head;
    uint64_t max_request_body; /* 0: unlimited */
    int max_connections;
    uint64_t busy_poll_ns;              /* 0: off */
    int path_normalization;             /* enum proxy_pathnorm */
    int escaped_slashes;                /* enum proxy_escslash */
    int headers_with_underscores;       /* enum proxy_underscores */
    struct sc_metric *m_underscores[3]; /* by enum proxy_underscores: [DROP], [REJECT] counted */
    struct proxy_authz *authz;          /* the policies that apply to the workload; NULL: none */
    struct proxy_jwt *jwt;              /* the RequestAuthentication rules that apply; NULL: none */
    struct proxy_trace_rt *trace;       /* NULL: tracing off (proxy_trace.c) */
    struct proxy_oidc *oidc;            /* the login on inbound listeners; NULL: none */
};

struct proxy_metrics {
    struct sc_metrics *reg;
    struct sc_metric_family *requests;
    struct sc_metric_family *duration;
    struct sc_metric_family *retry;
    struct sc_metric_family *ucx_active;
    struct sc_metric_family *dcx_active;
    struct sc_metric_family *timeout;
    struct sc_metric *log_dropped;     /* access-log lines dropped (a slow or gone reader) */
    struct sc_metric_family *overflow; /* proxy_policy.c */
    struct sc_metric_family *retry_overflow;
    struct sc_metric_family *ej_active;
    struct sc_metric_family *ej_total;
    struct sc_metric_family *hc_unhealthy;
    struct sc_metric_family *rate_limited;
    struct sc_metric_family *mirror;
    struct sc_metric_family *mirror_dropped;
    struct sc_metric_family *tls_hs; /* proxy_tls.c */
    struct sc_metric_family *tls_records;
    struct sc_metric_family *tls_expiry;
    struct sc_metric_family *utls_hs;
    struct sc_metric_family *utls_records;
    struct sc_metric_family *authz;     /* proxy_authz.c */
    struct sc_metric_family *tcp_total; /* proxy_tcp.c */
    struct sc_metric_family *tcp_active;
    struct sc_metric_family *tcp_bytes;
    struct sc_metric_family *h2_events; /* proxy_h2_up.c */
    /* downstream HTTP/2 (proxy_h2.c) */
    struct sc_metric_family *h2_conns;
    struct sc_metric_family *h2_streams;
    struct sc_metric_family *h2_refused;
    struct sc_metric_family *h2_goaway;
    /* gRPC (proxy_grpc.c) */
    struct sc_metric_family *grpc_responses;
    struct sc_metric_family *grpc_req_msgs;
    struct sc_metric_family *grpc_resp_msgs;
    /* CORS (proxy_cors.c) */
    struct sc_metric_family *cors_origin;
    struct sc_metric_family *cors_preflight;
};

/* Builds a snapshot from a checked <cfg> for <nworkers> workers, copying everything it keeps.
 * Returns it with one reference, or NULL with a new message in <*err>. */
struct proxy_rt *proxy_rt_new(const struct proxy_cfg *cfg, int nworkers, struct proxy_metrics *pm,
                              char **err);

/* Takes a reference. */
static inline struct proxy_rt *proxy_rt_ref(struct proxy_rt *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    return rt;
}

/* Drops a reference; the last one frees the snapshot (its pools must be empty by then, which
 * holds because each pooled connection holds a reference). NULL-safe. */
void proxy_rt_unref(struct proxy_rt *rt);

/* The number of workers <cfg> asks for (at least 1). */
int proxy_cfg_workers(const struct proxy_cfg *cfg);

/* Fills the snapshot's normalisation settings and compiles the authorization policies that
 * apply to the workload (proxy_authz_req.c). Returns 0 or SC_ECONFIG with a new <*err>. */
/* Applies headers_with_underscores to request <m> when a field name holds '_': drop removes
 * those headers from <m> (everything after sees the request without them), reject returns 400.
 * Returns 0 or 400. Called by each downstream codec before the exchange starts. */
int proxy_underscores(const struct proxy_rt *rt, struct sc_http_msg *m);

int proxy_authz_rt_init(struct proxy_rt *rt, const struct proxy_cfg *cfg, struct proxy_metrics *pm,
                        char **err);

/* Finds <name> in the snapshot. */
struct proxy_cluster *proxy_rt_cluster(struct proxy_rt *rt, const char *name);

/* ---- workers and connections (proxy_worker.c, proxy_h1.c, proxy_upstream.c) ---- */

struct proxy;

struct proxy_worker {
    struct proxy *px;
    int id;
    uv_loop_t *loop;
    uv_loop_t own_loop; /* for workers > 0, which run on their own thread */
    uv_thread_t thread;
    uv_async_t async;
    _Atomic(struct proxy_rt *) pending_rt; /* handed over by reload, taken by the worker */
    atomic_bool stop_requested;
    atomic_bool stop_now;
    struct proxy_rt *rt;
    uv_tcp_t *listeners;
    size_t nlisteners;
    size_t listeners_open;
    struct sc_list conns;    /* struct proxy_dconn */
    struct sc_list free_dc;  /* recycled downstream connections */
    struct sc_list free_sdc; /* recycled HTTP/2 stream dconns (smaller) */
    struct sc_list free_uc;  /* recycled upstream connections */
    size_t nfree_dc, nfree_sdc, nfree_uc;
    struct sc_list odst; /* idle original_dst connections by destination (proxy_worker.c) */
    size_t nodst, nodst_idle;
    struct proxy_blk_pool {
        void *head; /* free blocks of one size, linked through their first bytes */
        size_t n;
    } bufs, hbufs; /* read buffers and head buffers (proxy_worker.c) */
    size_t nconns;
    size_t nuconns;
    bool draining;
    bool closed_all;
    atomic_bool done; /* set by the worker thread, read by the main one */
    uint64_t rng[2];
    struct sc_buf logbuf; /* access-log lines, written once per loop iteration */
    uv_check_t logcheck;
    uv_idle_t spin;      /* active while busy polling: the loop polls without blocking */
    uint64_t spin_until; /* uv_hrtime() at which busy polling stops */
    bool spin_read;      /* a read since the spin handle last ran */
    uv_timer_t logtimer; /* retries a write the reader was not ready for */
    /* parse scratch: heads are rewritten as soon as parsed */
    struct sc_http_header hdrs[PROXY_MAX_REQUEST_HEADERS];
    pcre2_match_data *md;
    struct proxy_jwt_cache *jwt_cache;   /* verified tokens (proxy_jwt.c), made on first use */
    struct sc_egress *oidc_egress;       /* token requests of logins (proxy_oidc_flow.c) */
    struct proxy_oidc_aead *oidc_aead;   /* session cookies' AES-GCM key schedules */
    struct proxy_oidc_cache *oidc_cache; /* opened session cookies, made on first use */
    char date[32];                       /* cached access-log timestamp */
    uint64_t date_sec;
    struct sc_list mirrors; /* mirrored requests in flight (proxy_mirror.c) */
    size_t nmirrors;
    struct sc_list tcps; /* relayed and detecting TCP connections (proxy_tcp.c) */
    size_t ntcps;
    int tcp_pipes[64][2]; /* empty pipes for splice, lent while bytes are in flight */
    size_t ntcp_pipes;
    struct proxy_span_cache spans; /* span blocks for the next sampled requests (proxy_trace.c) */
    /* Downstream HTTP/2 scratch (proxy_h2.c), made on first use: the fields of a head being
     * sent (filled and submitted within one call, so one serves every connection), and a spare
     * header block for the next connection that receives one (a connection keeps its own only
     * while a block is split across reads). */
    struct proxy_h2_out *h2out;
    struct proxy_h2_head *h2hd;
    struct proxy_h2_mem *h2mem; /* nghttp2's allocator for the worker's sessions (proxy_h2_mem.c) */
};

struct proxy {
    struct sc_app *app;
    struct proxy_metrics pm;
    struct proxy_worker *workers;
    int nworkers;
    struct proxy_rt *rt;   /* the main loop's view of the current snapshot */
    uv_async_t done_async; /* workers report they have finished draining */
    atomic_int workers_done;
    atomic_int conns; /* client connections open, all workers */
    struct sc_list resolvers;
    int log_fd;              /* the access log: stdout, or a non-blocking description of it */
    bool log_sock;           /* stdout is a socket: written with MSG_DONTWAIT */
    struct sc_list checkers; /* active health checks (proxy_health.c) */
    struct sc_admin *status; /* the status port (status_listen), NULL without one */
    bool stopping;
    bool stopped;
    struct proxy_tracer *tracer; /* the span exporter, from the first config that traces */
};

/* Prepares the lists, buffers and random state of <w> (id and px set). */
void proxy_worker_init(struct proxy_worker *w);

/* Starts worker <w>'s listeners on its loop. Returns 0, or an error with a new message in
 * <*err>. */
int proxy_worker_listen(struct proxy_worker *w, char **err);

/* Runs on the worker's loop: adopts a pending snapshot, starts a drain, or closes everything. */
void proxy_worker_poll(struct proxy_worker *w);

/* Frees the worker's recycled objects after its loop ended. */
void proxy_worker_cleanup(struct proxy_worker *w);

/* Reports the worker done when it drains and nothing is left open; called by the data path and
 * when a mirror's handles have closed (proxy_mirror.c). */
void proxy_worker_check_done(struct proxy_worker *w);

/* Called on the worker's loop when it has nothing left; reports to the main loop. */
void proxy_worker_done(struct proxy_worker *w);

/* Random numbers for ids and jitter (xoroshiro128+ seeded from the OS per worker). */
uint64_t proxy_rand(struct proxy_worker *w);

/* Opens the descriptor the access log writes to (px->log_fd): a pipe, FIFO or terminal on
 * stdout is reopened through /proc/self/fd/1 as a non-blocking description of its own (stdout's
 * flags, shared with other processes, are left alone); a socket is written with MSG_DONTWAIT; a
 * regular file, which does not apply backpressure, is written as it is. */
void proxy_log_open(struct proxy *px);

/* Closes what proxy_log_open opened. */
void proxy_log_close(struct proxy *px);

/* Starts resolving the DNS endpoints of <rt> on the main loop, every refresh interval. */
void proxy_dns_start(struct proxy *px, struct proxy_rt *rt);

/* Stops every resolver (their handles close asynchronously). */
void proxy_dns_stop(struct proxy *px);

#endif
