// SPDX-License-Identifier: Apache-2.0
// The proxy's configuration: the option table (listeners -> routes -> clusters, plus the
// quick-start flags), the cross-reference check, and the runtime snapshot built from a checked
// config. The snapshot copies every string it keeps, because the app frees a config right after a
// successful reload while requests may still run on the snapshot built from it.
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/lazylib.h"
#include "core/log.h"
#include "net/addr.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_route_policy.h"

static const char *const lb_policies[] = { "round_robin", "least_request", "ring_hash", "maglev",
                                           NULL };
static const char *const access_logs[] = { "stdout", "off", NULL };
static const char *const cluster_types[] = { "static", "original_dst", NULL };

static const struct sc_opt retry_opts[] = {
    { .name = "retry_on",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_retry_cfg, retry_on),
      .help = "conditions: connect-failure, reset, 5xx, gateway-error, retriable-status-codes, "
              "and for gRPC calls the statuses cancelled, deadline-exceeded, internal, "
              "resource-exhausted, unavailable (in a trailers-only answer, or in trailers before "
              "any message reached the client) (default connect-failure, reset, gateway-error)" },
    { .name = "num_retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_retry_cfg, num_retries),
      .def = "-1",
      .help = "retries after the first try (-1: the top-level retries)",
      .min = -1,
      .max = 10 },
    { .name = "per_try_timeout",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_retry_cfg, per_try_timeout),
      .help = "duration: deadline for one try's response head; unset: the top-level "
              "per_try_timeout; 0s: none" },
    { .name = "retriable_status_codes",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_retry_cfg, retriable_status_codes),
      .help = "response codes retried (with retriable-status-codes in retry_on)" },
    { .name = "retry_non_idempotent",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_retry_cfg, retry_non_idempotent),
      .def = "false",
      .help = "also retry POST, PATCH and other non-idempotent methods" },
    { .name = "base_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_retry_cfg, base_interval_ms),
      .def = "25ms",
      .help = "backoff before the first retry; doubles per retry, with full jitter" },
    { .name = "max_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_retry_cfg, max_interval_ms),
      .def = "250ms",
      .help = "cap on the backoff" },
    { 0 },
};

static const struct sc_opt route_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, name),
      .help = "route name (metrics and access log; default: route<N>): letters, digits and "
              "-._:/",
      .check = proxy_name_check },
    { .name = "match",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, match),
      .help = "what requests the route takes (all when empty); first match wins",
      .sub = proxy_match_opts },
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, cluster),
      .help = "the cluster requests go to (or weighted_clusters)" },
    { .name = "subset",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, subset),
      .help = "only the endpoints of this subset of the cluster" },
    { .name = "weighted_clusters",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_route_cfg, weighted_clusters),
      .help = "split requests between destinations by weight (instead of cluster)",
      .sub = proxy_weighted_opts,
      .sub_size = sizeof(struct proxy_weighted_cfg),
      .max = 64 },
    { .name = "timeout",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, timeout),
      .help = "duration from the request to the response head, retries included; unset: the "
              "top-level timeout; 0s: no timeout" },
    { .name = "grpc",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, grpc),
      .help = "gRPC calls' deadlines (docs/grpc.md)",
      .sub = proxy_grpc_route_opts },
    { .name = "retry_policy",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, retry_policy),
      .help = "when and how often to retry",
      .sub = retry_opts },
    { .name = "rate_limit",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, rate_limit),
      .help = "local rate limit of the route: token buckets, 429 beyond",
      .sub = proxy_rl_opts },
    { .name = "fault",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, fault),
      .help = "fault injection: delay or abort a share of requests",
      .sub = proxy_fault_opts },
    { .name = "mirror",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, mirror),
      .help = "send a copy of a share of requests to a shadow cluster, answer discarded",
      .sub = proxy_mirror_opts },
    { .name = "headers",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, headers),
      .help = "set, add and remove request and response headers",
      .sub = proxy_headers_opts },
    { .name = "prefix_rewrite",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, prefix_rewrite),
      .help = "replaces the matched path prefix in the request sent upstream" },
    { .name = "regex_rewrite",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, regex_rewrite),
      .help = "rewrites the path sent upstream by a regular expression (the query is kept)",
      .sub = proxy_regex_rewrite_opts },
    { .name = "hash_policy",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_route_cfg, hash_policy),
      .help = "what requests are hashed by for a ring_hash or maglev cluster (tried in order)",
      .max = PROXY_HASH_MAX,
      .sub = proxy_hash_policy_opts,
      .sub_size = sizeof(struct proxy_hash_policy_cfg) },
    { .name = "host_rewrite",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_route_cfg, host_rewrite),
      .help = "Host header sent upstream" },
    { .name = "direct_response",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, direct_response),
      .help = "answer from the proxy with a fixed status and body (instead of cluster)",
      .sub = proxy_direct_opts },
    { .name = "redirect",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, redirect),
      .help = "answer with a redirect to a URL derived from the request's (instead of cluster)",
      .sub = proxy_redirect_opts },
    { .name = "health_endpoint",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_route_cfg, health_endpoint),
      .help = "answer health checks: 200, or 503 while draining or below min_healthy",
      .sub = proxy_health_ep_opts,
      .check = proxy_health_ep_mark },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_route_cfg, cors),
      .sub = proxy_cors_route_opts },
    { 0 },
};

static const struct sc_opt listener_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_listener_cfg, name),
      .help = "listener name (metrics and access log): letters, digits and -._:/",
      .flags = SC_OPT_REQUIRED | SC_OPT_RESTART,
      .check = proxy_name_check },
    { .name = "address",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_listener_cfg, address),
      .help = "address to listen on",
      .flags = SC_OPT_REQUIRED | SC_OPT_RESTART,
      .check = sc_addr_check },
    { .name = "max_request_headers",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_listener_cfg, max_request_headers),
      .def = "100",
      .help = "header fields a request may carry, HTTP/1 and HTTP/2 alike (pseudo-header fields "
              "count on HTTP/2); more: 431. Requests forwarded to an HTTP/2 upstream carry at "
              "most 100",
      .min = 1,
      .max = PROXY_MAX_REQUEST_HEADERS },
    { .name = "routes",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_listener_cfg, routes),
      .help = "routes, tried in order",
      .sub = route_opts,
      .sub_size = sizeof(struct proxy_route_cfg) },
    { .name = "rate_limit",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_listener_cfg, rate_limit),
      .help = "local rate limit shared by every routed request of the listener (checked before "
              "the route's own)",
      .sub = proxy_rl_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_listener_cfg, tlscfg),
      .sub = proxy_listener_tls_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_listener_cfg, icpt),
      .sub = proxy_icpt_listener_opts },
    { .name = "oidc",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_listener_cfg, oidc),
      .help = "this listener's own OpenID Connect login (docs/oidc.md), instead of the "
              "top-level one; enabled: false turns the login off here",
      .sub = proxy_oidc_opts },
    { .name = "http2",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_listener_cfg, http2),
      .help = "downstream HTTP/2: h2c with prior knowledge on plaintext, h2 by ALPN over TLS, "
              "and its limits",
      .sub = proxy_h2_listener_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_listener_cfg, gw),
      .sub = proxy_grpc_web_listener_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_listener_cfg, cors),
      .sub = proxy_cors_listener_opts },
    { 0 },
};

static const struct sc_opt cluster_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cluster_cfg, name),
      .help = "cluster name (metrics and access log): letters, digits and -._:/",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_name_check },
    { .name = "type",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_cluster_cfg, type),
      .def = "static",
      .help = "static (the endpoints below) or original_dst (each connection's original "
              "destination from iptables interception, else the request's authority)",
      .enums = cluster_types },
    { .name = "endpoints",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_cluster_cfg, endpoints),
      .help = "\"ip:port\", or \"name:port\" resolved every dns_refresh",
      .max = 256,
      .check = proxy_endpoints_check },
    { .name = "lb_policy",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_cluster_cfg, lb_policy),
      .def = "round_robin",
      .help = "round_robin, least_request (power of two choices), ring_hash or maglev (both: "
              "consistent hashing by hash_policy)",
      .enums = lb_policies },
    { .name = "hash_policy",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cluster_cfg, hash_policy),
      .help = "ring_hash, maglev: what requests are hashed by when their route has no hash_policy",
      .max = PROXY_HASH_MAX,
      .sub = proxy_hash_policy_opts,
      .sub_size = sizeof(struct proxy_hash_policy_cfg) },
    { .name = "connect_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cluster_cfg, connect_timeout_ms),
      .help = "TCP connect deadline (0: the top-level connect_timeout)" },
    { .name = "dns_refresh",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cluster_cfg, dns_refresh_ms),
      .def = "5s",
      .help = "how often DNS endpoints are re-resolved",
      .min = 100,
      .max = 86400000 },
    { .name = "max_idle",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_cluster_cfg, max_idle),
      .def = "64",
      .help = "idle keep-alive connections kept per endpoint and worker",
      .min = 0,
      .max = 100000 },
    { .name = "idle_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cluster_cfg, idle_timeout_ms),
      .def = "30s",
      .help = "idle pooled connections are closed after this long" },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cluster_cfg, policy),
      .sub = proxy_policy_opts },
    { .name = "labeled_endpoints",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cluster_cfg, labeled_endpoints),
      .help = "more endpoints, with labels that subsets select on",
      .sub = proxy_labeled_ep_opts,
      .sub_size = sizeof(struct proxy_labeled_ep_cfg),
      .max = 256 },
    { .name = "subsets",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cluster_cfg, subsets),
      .help = "named groups of endpoints selected by labels, for routes to name",
      .sub = proxy_subset_opts,
      .sub_size = sizeof(struct proxy_subset_cfg),
      .max = 64 },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cluster_cfg, tlscfg),
      .sub = proxy_cluster_tls_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cluster_cfg, icpt),
      .sub = proxy_icpt_cluster_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cluster_cfg, h2up),
      .sub = proxy_h2_up_cluster_opts },
    { 0 },
};

const struct sc_opt proxy_opts[] = {
    { .name = "listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cfg, listen),
      .help = "quick start: listen here and send everything to --upstream",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .check = sc_addr_check },
    { .name = "upstream",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cfg, upstream),
      .help = "quick start: the application's address (default 127.0.0.1:8080)",
      .flags = SC_OPT_FLAG },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, timeout_ms),
      .def = "30s",
      .help = "default route timeout: request to response head, retries included (0: none)",
      .flags = SC_OPT_FLAG },
    { .name = "connect_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, connect_timeout_ms),
      .def = "1s",
      .help = "default TCP connect deadline",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 3600000 },
    { .name = "retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_cfg, retries),
      .def = "1",
      .help = "default retries after the first try",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = 10 },
    { .name = "per_try_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, per_try_timeout_ms),
      .def = "0",
      .help = "default deadline for one try's response head (0: only the route timeout)",
      .flags = SC_OPT_FLAG },
    { .name = "workers",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_cfg, workers),
      .def = "1",
      .help = "worker threads, each with its own loop and SO_REUSEPORT listeners",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .min = 1,
      .max = 64 },
    { .name = "access_log",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_cfg, access_log),
      .def = "stdout",
      .help = "JSON access log: stdout or off",
      .flags = SC_OPT_FLAG,
      .enums = access_logs },
    { .name = "idle_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, idle_timeout_ms),
      .def = "60s",
      .help = "downstream keep-alive connections idle this long are closed",
      .min = 1,
      .max = 86400000 },
    { .name = "request_headers_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, request_headers_timeout_ms),
      .def = "10s",
      .help = "deadline for a request head once its first byte arrived",
      .min = 1,
      .max = 3600000 },
    { .name = "stream_idle_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, stream_idle_timeout_ms),
      .def = "60s",
      .help = "a body or tunnel with no progress in either direction this long is cut",
      .min = 1,
      .max = 86400000 },
    { .name = "retry_buffer",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_cfg, retry_buffer),
      .def = "64KiB",
      .help = "request bodies up to this size are kept for retries; larger ones are not retried",
      .max = 16777216 },
    { .name = "max_request_head",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_cfg, max_request_head),
      .def = "64KiB",
      .help = "largest request or response head (431 beyond)",
      .min = 1024,
      .max = 1048576 },
    { .name = "max_request_body",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_cfg, max_request_body),
      .def = "0",
      .help = "largest request body (413 beyond); 0: unlimited",
      .flags = SC_OPT_FLAG },
    { .name = "max_connections",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_cfg, max_connections),
      .def = "16384",
      .help = "client connections open at once, all listeners and workers; beyond it new "
              "connections are closed at accept",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 10000000 },
    { .name = "busy_poll",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_cfg, busy_poll_ms),
      .def = "0",
      .help = "after each read, a worker keeps polling without sleeping this long (0: off); for a "
              "proxy with a CPU of its own: it trades that CPU's idle time for latency",
      .flags = SC_OPT_FLAG,
      .max = 1000 },
    { .name = "rate_limit",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cfg, rate_limit),
      .help = "N/s, N/m or N/h: a local rate limit per client IP (burst N) on the inbound "
              "listeners (--listen, inbound, and configured listeners without a rate_limit)",
      .flags = SC_OPT_FLAG,
      .check = proxy_rl_flag_check },
    { .name = "listeners",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cfg, listeners),
      .help = "listeners (default: inbound 0.0.0.0:15006 to 127.0.0.1:8080, and outbound "
              "127.0.0.1:15001 to each request's original destination)",
      .sub = listener_opts,
      .sub_size = sizeof(struct proxy_listener_cfg),
      .max = 64 },
    { .name = "clusters",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cfg, clusters),
      .help = "upstream clusters",
      .sub = cluster_opts,
      .sub_size = sizeof(struct proxy_cluster_cfg),
      .max = 1024 },
    { .name = "identity",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_cfg, identity),
      .help = "the workload's SPIFFE identity for mesh mTLS (files written by cert-manager, SPIRE "
              "or a Kubernetes secret; reloaded when they change)",
      .sub = proxy_identity_opts },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cfg, tls_flags),
      .sub = proxy_tls_flag_opts },
    { .name = "workload",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_cfg, workload),
      .help = "the workload PeerAuthentication selectors are matched against",
      .sub = proxy_workload_opts },
    { .name = "peer_authentication",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cfg, peer_authentication),
      .help = "Istio PeerAuthentication policies: the mTLS mode of inbound listeners that use the "
              "identity (docs/proxy.md)",
      .sub = proxy_pa_opts,
      .sub_size = sizeof(struct proxy_pa_cfg),
      .max = 256 },
    { .name = "mesh_root_namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cfg, mesh_root_namespace),
      .def = "istio-system",
      .help = "a peer_authentication without selector in this namespace is mesh-wide" },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cfg, status),
      .sub = proxy_status_opts },
    { .type = SC_OPT_INLINE, .offset = offsetof(struct proxy_cfg, authz), .sub = proxy_authz_opts },
    { .type = SC_OPT_INLINE, .offset = offsetof(struct proxy_cfg, jwt), .sub = proxy_jwt_opts },
    { .name = "tracing",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_cfg, tracing),
      .help = "distributed tracing: a span per request exported over OTLP or Zipkin, W3C and B3 "
              "propagation, sampling (docs/proxy.md)",
      .sub = proxy_trace_opts },
    { .name = "oidc",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_cfg, oidc),
      .sub = proxy_oidc_opts,
      .help = "OpenID Connect login in front of the app on the inbound listeners (docs/oidc.md)" },
    { 0 },
};

int proxy_cfg_workers(const struct proxy_cfg *cfg)
{
    return cfg->workers < 1 ? 1 : (int)cfg->workers;
}

static unsigned retry_flag(const char *s)
{
    static const struct {
        const char *name;
        unsigned flag;
    } t[] = {
        { "connect-failure", PROXY_RETRY_CONNECT_FAILURE },
        { "reset", PROXY_RETRY_RESET },
        { "5xx", PROXY_RETRY_5XX },
        { "gateway-error", PROXY_RETRY_GATEWAY },
        { "retriable-status-codes", PROXY_RETRY_STATUS },
        { "cancelled", PROXY_RETRY_GRPC_CANCELLED },
        { "deadline-exceeded", PROXY_RETRY_GRPC_DEADLINE },
        { "internal", PROXY_RETRY_GRPC_INTERNAL },
        { "resource-exhausted", PROXY_RETRY_GRPC_EXHAUSTED },
        { "unavailable", PROXY_RETRY_GRPC_UNAVAILABLE },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(t); i++) {
        if (strcmp(s, t[i].name) == 0) {
            return t[i].flag;
        }
    }
    return 0;
}

/* Splits "host:port" of an endpoint. Returns 0 or -EINVAL. */
static int split_endpoint(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) {
        return -EINVAL;
    }
    uint64_t p;
    if (sc_str_to_u64(sc_str_c(colon + 1), 65535, &p) < 0 || p == 0) {
        return -EINVAL;
    }
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen) {
        return -EINVAL;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%u", (unsigned)p);
    return 0;
}

static bool valid_dns_name(const char *h)
{
    for (const char *c = h; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '.' || *c == '_')) {
            return false;
        }
    }
    return true;
}

static bool has_cluster(const struct proxy_cfg *c, const char *name)
{
    const struct proxy_cluster_cfg *cl = c->clusters.v;
    for (size_t i = 0; i < c->clusters.n; i++) {
        if (strcmp(cl[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

static int check_route(const struct proxy_cfg *c, const struct proxy_listener_cfg *l, size_t ri,
                       char **err)
{
    const struct proxy_route_cfg *r = &((const struct proxy_route_cfg *)l->routes.v)[ri];
    const char *rname = r->name ? r->name : "(unnamed)";
    if (r->cluster && !has_cluster(c, r->cluster)) {
        *err = sc_asprintf("listener \"%s\" route %zu (%s): unknown cluster \"%s\"", l->name,
                           ri + 1, rname, r->cluster);
        return SC_ECONFIG;
    }
    int prc = proxy_route_policy_check_route(c, l, ri, err);
    if (prc < 0) {
        return prc;
    }
    int n = (r->match.prefix != NULL) + (r->match.path != NULL) + (r->match.regex != NULL);
    if (n > 1) {
        *err = sc_asprintf("listener \"%s\" route %zu (%s): use one of prefix, path and regex",
                           l->name, ri + 1, rname);
        return SC_ECONFIG;
    }
    if (r->match.regex) {
        if (sc_lazylib_pcre2_load(err) < 0) {
            return SC_ECONFIG;
        }
        int ec;
        PCRE2_SIZE off;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)r->match.regex, PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof(msg));
            *err = sc_asprintf("listener \"%s\" route %zu (%s): regex at offset %zu: %s", l->name,
                               ri + 1, rname, (size_t)off, (const char *)msg);
            return SC_ECONFIG;
        }
        pcre2_code_free(re);
    }
    const struct proxy_retry_cfg *rp = &r->retry_policy;
    for (size_t i = 0; i < rp->retry_on.n; i++) {
        if (!retry_flag(rp->retry_on.v[i])) {
            *err = sc_asprintf("listener \"%s\" route %zu (%s): unknown retry_on \"%s\" (want "
                               "connect-failure, reset, 5xx, gateway-error, "
                               "retriable-status-codes, cancelled, deadline-exceeded, internal, "
                               "resource-exhausted or unavailable)",
                               l->name, ri + 1, rname, rp->retry_on.v[i]);
            return SC_ECONFIG;
        }
    }
    if (rp->retriable_status_codes.n > PROXY_MAX_STATUS_CODES) {
        *err = sc_asprintf("listener \"%s\" route %zu (%s): at most %d retriable_status_codes",
                           l->name, ri + 1, rname, PROXY_MAX_STATUS_CODES);
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < rp->retriable_status_codes.n; i++) {
        uint64_t code;
        if (sc_str_to_u64(sc_str_c(rp->retriable_status_codes.v[i]), 599, &code) < 0 ||
            code < 100) {
            *err = sc_asprintf("listener \"%s\" route %zu (%s): retriable status code \"%s\" is "
                               "not a status from 100 to 599",
                               l->name, ri + 1, rname, rp->retriable_status_codes.v[i]);
            return SC_ECONFIG;
        }
    }
    const struct proxy_header_match_cfg *h = r->match.headers.v;
    for (size_t i = 0; i < r->match.headers.n; i++) {
        if (h[i].name[0] == '\0') {
            *err = sc_asprintf("listener \"%s\" route %zu (%s): empty header name", l->name, ri + 1,
                               rname);
            return SC_ECONFIG;
        }
    }
    return 0;
}

int proxy_config_check(const void *cfg, char **err)
{
    const struct proxy_cfg *c = cfg;
    const struct proxy_cluster_cfg *cl = c->clusters.v;
    int trc = proxy_tls_check(c, err);
    if (trc == 0) {
        trc = proxy_pa_check(c->peer_authentication.v, c->peer_authentication.n, err);
    }
    if (trc == 0) {
        trc = proxy_authz_check(&c->authz, err);
    }
    if (trc == 0) {
        trc = proxy_jwt_check(&c->jwt, err);
    }
    if (trc == 0) {
        trc = proxy_icpt_check(c, err);
    }
    if (trc == 0) {
        trc = proxy_oidc_check_all(c, err);
    }
    if (trc < 0) {
        return trc;
    }
    for (size_t i = 0; i < c->clusters.n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cl[i].name, cl[j].name) == 0) {
                *err = sc_asprintf("cluster \"%s\" is defined twice", cl[i].name);
                return SC_ECONFIG;
            }
        }
        if (strcmp(cl[i].name, "upstream") == 0 && c->listen) {
            *err = sc_asprintf("cluster name \"upstream\" is reserved for --listen/--upstream");
            return SC_ECONFIG;
        }
        if (cl[i].type == PROXY_CLUSTER_ORIGINAL_DST && cl[i].endpoints.n) {
            *err =
                sc_asprintf("cluster \"%s\": an original_dst cluster has no endpoints", cl[i].name);
            return SC_ECONFIG;
        }
        if (cl[i].type == PROXY_CLUSTER_ORIGINAL_DST && cl[i].policy.health_check.path) {
            *err = sc_asprintf("cluster \"%s\": an original_dst cluster has no endpoints to "
                               "health-check",
                               cl[i].name);
            return SC_ECONFIG;
        }
        int prc = proxy_policy_check(&cl[i].policy, cl[i].name, err);
        if (prc < 0) {
            return prc;
        }
        prc = proxy_route_policy_check_cluster(&cl[i], err);
        if (prc < 0) {
            return prc;
        }
        const struct proxy_labeled_ep_cfg *le = cl[i].labeled_endpoints.v;
        for (size_t k = 0; k < cl[i].endpoints.n + cl[i].labeled_endpoints.n; k++) {
            char host[256], port[8];
            const char *e =
                k < cl[i].endpoints.n ? cl[i].endpoints.v[k] : le[k - cl[i].endpoints.n].address;
            struct in6_addr a6;
            if (split_endpoint(e, host, sizeof(host), port, sizeof(port)) < 0 ||
                (strchr(host, ':') ? e[0] != '[' || inet_pton(AF_INET6, host, &a6) != 1
                                   : !valid_dns_name(host))) {
                *err =
                    sc_asprintf("cluster \"%s\": endpoint \"%s\" is not host:port", cl[i].name, e);
                return SC_ECONFIG;
            }
        }
    }
    if (c->upstream) {
        char host[256], port[8];
        if (split_endpoint(c->upstream, host, sizeof(host), port, sizeof(port)) < 0) {
            *err = sc_asprintf("upstream \"%s\" is not host:port", c->upstream);
            return SC_ECONFIG;
        }
    }
    const struct proxy_listener_cfg *l = c->listeners.v;
    for (size_t i = 0; i < c->listeners.n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(l[i].name, l[j].name) == 0) {
                *err = sc_asprintf("listener \"%s\" is defined twice", l[i].name);
                return SC_ECONFIG;
            }
        }
        char where[160];
        snprintf(where, sizeof(where), "listener \"%s\"", l[i].name);
        int lrc = proxy_rl_check(&l[i].rate_limit, where, err);
        if (lrc == 0 && l[i].http2.only && !l[i].http2.enabled) {
            *err = sc_asprintf("%s: http2.only needs http2.enabled", where);
            lrc = SC_ECONFIG;
        }
        if (lrc < 0) {
            return lrc;
        }
        for (size_t r = 0; r < l[i].routes.n; r++) {
            int rc = check_route(c, &l[i], r, err);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* ---- snapshot ---- */

static void route_free(struct proxy_route *r)
{
    sc_free(r->name);
    sc_free(r->prefix);
    sc_free(r->path);
    if (r->re) {
        pcre2_code_free(r->re);
    }
    for (size_t i = 0; i < r->nmethods; i++) {
        sc_free(r->methods[i]);
    }
    sc_free(r->methods);
    for (size_t i = 0; i < r->nauthority; i++) {
        sc_free(r->authority[i]);
    }
    sc_free(r->authority);
    sc_free(r->dports);
    proxy_route_conn_free(r->conn);
    for (size_t i = 0; i < r->nheaders; i++) {
        sc_free((char *)r->headers[i].name.p);
        sc_free((char *)r->headers[i].value.p);
    }
    sc_free(r->headers);
    proxy_route_policy_route_free(r);
}

static void rt_free(struct proxy_rt *rt)
{
    for (size_t i = 0; i < rt->nlisteners; i++) {
        struct proxy_listener *l = &rt->listeners[i];
        for (size_t r = 0; r < l->nroutes; r++) {
            route_free(&l->routes[r]);
        }
        sc_free(l->routes);
        route_free(&l->noroute);
        proxy_rl_release(l->rl);
        proxy_tls_listener_release(&l->tls);
        proxy_icpt_listener_free(l);
        proxy_oidc_free(l->oidc);
        sc_free(l->name);
        sc_free(l->address);
    }
    sc_free(rt->listeners);
    for (size_t i = 0; i < rt->nclusters; i++) {
        struct proxy_cluster *c = &rt->clusters[i];
        for (size_t e = 0; e < c->neps; e++) {
            struct proxy_endpoint *ep = &c->eps[e];
            if (ep->dns) {
                uv_mutex_destroy(&ep->mu);
            }
            sc_free(ep->name);
            sc_free(ep->host);
            sc_free(ep->pools);
        }
        sc_free(c->eps);
        proxy_route_policy_cluster_free(c);
        proxy_tls_cluster_release(&c->tls);
        sc_free(c->name);
        proxy_cluster_state_unref(c->st);
    }
    sc_free(rt->clusters);
    proxy_authz_free(rt->authz);
    proxy_jwt_free(rt->jwt);
    proxy_trace_rt_free(rt->trace);
    proxy_oidc_free(rt->oidc);
    sc_free(rt);
}

void proxy_rt_unref(struct proxy_rt *rt)
{
    if (rt && atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1) {
        rt_free(rt);
    }
}

struct proxy_cluster *proxy_rt_cluster(struct proxy_rt *rt, const char *name)
{
    for (size_t i = 0; i < rt->nclusters; i++) {
        if (strcmp(rt->clusters[i].name, name) == 0) {
            return &rt->clusters[i];
        }
    }
    return NULL;
}

static int endpoint_init(struct proxy_endpoint *ep, struct proxy_cluster *c, const char *s,
                         int nworkers, char **err)
{
    char host[256];
    ep->name = sc_strdup(s);
    ep->cluster = c;
    ep->pools = sc_calloc((size_t)nworkers, sizeof(*ep->pools));
    for (int w = 0; w < nworkers; w++) {
        sc_list_init(&ep->pools[w].idle);
        sc_list_init(&ep->pools[w].h2);
        sc_list_init(&ep->pools[w].h2conn);
    }
    if (split_endpoint(s, host, sizeof(host), ep->port, sizeof(ep->port)) < 0) {
        *err = sc_asprintf("cluster \"%s\": endpoint \"%s\" is not host:port", c->name, s);
        return SC_ECONFIG;
    }
    ep->host = sc_strdup(host);
    uint16_t port = (uint16_t)strtoul(ep->port, NULL, 10);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ep->addrs[0];
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ep->addrs[0];
    if (strcmp(host, "localhost") == 0) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
    } else {
        ep->dns = true;
        uv_mutex_init(&ep->mu);
        return 0;
    }
    atomic_store(&ep->naddrs, 1);
    return 0;
}

/* <quick>: the --upstream cluster, whose TLS comes from the quick-start flags. */
static int cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc, bool quick,
                        const struct proxy_cfg *cfg, int nworkers, struct proxy_metrics *pm,
                        char **err)
{
    c->name = sc_strdup(cc->name);
    c->lb = cc->lb_policy;
    c->original_dst = cc->type == PROXY_CLUSTER_ORIGINAL_DST;
    c->connect_timeout_ms =
        cc->connect_timeout_ms ? cc->connect_timeout_ms : cfg->connect_timeout_ms;
    c->dns_refresh_ms = cc->dns_refresh_ms ? cc->dns_refresh_ms : 5000;
    c->max_idle = (uint32_t)(cc->max_idle < 0 ? 0 : cc->max_idle);
    c->idle_timeout_ms = cc->idle_timeout_ms;
    c->neps = cc->endpoints.n + cc->labeled_endpoints.n;
    c->eps = sc_calloc(c->neps ? c->neps : 1, sizeof(*c->eps));
    const struct proxy_labeled_ep_cfg *le = cc->labeled_endpoints.v;
    for (size_t i = 0; i < c->neps; i++) {
        const char *addr =
            i < cc->endpoints.n ? cc->endpoints.v[i] : le[i - cc->endpoints.n].address;
        int rc = endpoint_init(&c->eps[i], c, addr, nworkers, err);
        if (rc < 0) {
            c->neps = i + 1;
            return rc;
        }
    }
    /* The plain and the labeled endpoints, by the names they were configured with. */
    char **names = sc_calloc(c->neps ? c->neps : 1, sizeof(*names));
    for (size_t i = 0; i < c->neps; i++) {
        names[i] = c->eps[i].name;
    }
    c->st = proxy_cluster_state_new(c->name, &cc->policy, names, c->neps, pm);
    sc_free(names);
    for (size_t i = 0; i < c->neps; i++) {
        c->eps[i].st = &c->st->eps[i];
    }
    proxy_route_policy_cluster_init(c, cc);
    const char *lv[] = { c->name };
    c->m_retry = sc_metrics_get(pm->retry, lv);
    c->m_cx_active = sc_metrics_get(pm->ucx_active, lv);
    c->m_timeout = sc_metrics_get(pm->timeout, lv);
    proxy_icpt_cluster_init(c, cc);
    proxy_h2_up_cluster_init(c, quick ? NULL : cc, pm);
    char *why = NULL;
    if (c->h2up.protocol != PROXY_UP_HTTP1 && sc_lazylib_nghttp2_load(&why) < 0) {
        *err = sc_asprintf("cluster %s: protocol %s: %s", c->name,
                           c->h2up.protocol == PROXY_UP_HTTP2 ? "http2" : "auto", why);
        sc_free(why);
        return SC_EUNSUPPORTED;
    }
    return proxy_tls_cluster_init(&c->tls, c->name, quick ? NULL : cc, cfg, pm, err);
}

static void route_init(struct proxy_route *r, const struct proxy_route_cfg *rc,
                       const struct proxy_cfg *cfg, struct proxy_rt *rt, size_t idx)
{
    r->name = rc->name ? sc_strdup(rc->name) : sc_asprintf("route%zu", idx + 1);
    r->prefix = sc_strdup(rc->match.prefix);
    r->path = sc_strdup(rc->match.path);
    if (rc->match.regex) {
        int ec;
        PCRE2_SIZE off;
        /* Anchored at both ends: the regex describes the whole path, as in Envoy. */
        char *anchored = sc_asprintf("(?:%s)\\z", rc->match.regex);
        r->re = pcre2_compile((PCRE2_SPTR)anchored, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, &ec,
                              &off, NULL);
        sc_free(anchored);
        if (r->re) {
            (void)pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE);
        }
    }
    r->nmethods = rc->match.methods.n;
    r->methods = sc_calloc(r->nmethods ? r->nmethods : 1, sizeof(char *));
    for (size_t i = 0; i < r->nmethods; i++) {
        r->methods[i] = sc_strdup(rc->match.methods.v[i]);
    }
    r->nauthority = rc->match.authority.n;
    r->authority = sc_calloc(r->nauthority ? r->nauthority : 1, sizeof(char *));
    for (size_t i = 0; i < r->nauthority; i++) {
        r->authority[i] = sc_strdup(rc->match.authority.v[i]);
    }
    r->dports = proxy_icpt_parse_ports(&rc->match.destination_ports, &r->ndports);
    r->conn = proxy_route_conn_new(&rc->match.conn);
    r->conn_match = r->ndports || r->conn;
    r->health_pass = rc->health_endpoint.set && rc->health_endpoint.pass_through;
    const struct proxy_header_match_cfg *h = rc->match.headers.v;
    r->nheaders = rc->match.headers.n;
    r->headers = sc_calloc(r->nheaders ? r->nheaders : 1, sizeof(*r->headers));
    for (size_t i = 0; i < r->nheaders; i++) {
        r->headers[i].name = sc_str_c(sc_strdup(h[i].name));
        r->headers[i].value = h[i].value ? sc_str_c(sc_strdup(h[i].value)) : SC_STR_NULL;
        r->headers[i].present = h[i].present;
    }
    r->cluster = rc->cluster ? proxy_rt_cluster(rt, rc->cluster) : NULL;
    r->timeout_ms = cfg->timeout_ms;
    if (rc->timeout && sc_value_parse_duration(rc->timeout, &r->timeout_ms) < 0) {
        r->timeout_ms = cfg->timeout_ms; /* checked at load */
    }
    proxy_grpc_route_init(r, &rc->grpc);
    const struct proxy_retry_cfg *rp = &rc->retry_policy;
    r->retry_on = 0;
    for (size_t i = 0; i < rp->retry_on.n; i++) {
        r->retry_on |= retry_flag(rp->retry_on.v[i]);
    }
    if (rp->retry_on.n == 0) {
        r->retry_on = PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_RESET | PROXY_RETRY_GATEWAY;
    }
    r->num_retries = (int)(rp->num_retries >= 0 ? rp->num_retries : cfg->retries);
    r->per_try_timeout_ms = cfg->per_try_timeout_ms;
    if (rp->per_try_timeout &&
        sc_value_parse_duration(rp->per_try_timeout, &r->per_try_timeout_ms) < 0) {
        r->per_try_timeout_ms = cfg->per_try_timeout_ms; /* checked at load */
    }
    r->nstatus_codes = 0;
    for (size_t i = 0; i < rp->retriable_status_codes.n && i < PROXY_MAX_STATUS_CODES; i++) {
        uint64_t code = 0;
        (void)sc_str_to_u64(sc_str_c(rp->retriable_status_codes.v[i]), 599, &code);
        r->status_codes[r->nstatus_codes++] = (int)code;
    }
    r->retry_non_idempotent = rp->retry_non_idempotent;
    r->base_interval_ms = rp->base_interval_ms ? rp->base_interval_ms : 25;
    r->max_interval_ms = rp->max_interval_ms ? rp->max_interval_ms : 250;
}

/* The quick-start cluster and route, or the defaults when nothing is configured. */
static const char *quick_upstream(const struct proxy_cfg *cfg)
{
    return cfg->upstream ? cfg->upstream : "127.0.0.1:8080";
}

/* The cluster of the quick start (--upstream, or the default app address <*ep>). */
static struct proxy_cluster_cfg quick_cluster_cfg(char **ep)
{
    struct proxy_cluster_cfg c = {
        .name = "upstream",
        .endpoints = { ep, 1 },
        .lb_policy = PROXY_LB_ROUND_ROBIN,
        .dns_refresh_ms = 5000,
        .max_idle = 64,
        .idle_timeout_ms = 30000,
    };
    sc_config_defaults(proxy_policy_opts, &c.policy);
    return c;
}

/* The cluster of the default outbound listener: each request's original destination. */
static struct proxy_cluster_cfg outbound_cluster_cfg(void)
{
    struct proxy_cluster_cfg c = {
        .name = "outbound",
        .type = PROXY_CLUSTER_ORIGINAL_DST,
        .lb_policy = PROXY_LB_ROUND_ROBIN,
        .dns_refresh_ms = 5000,
        .max_idle = 64,
        .idle_timeout_ms = 30000,
    };
    sc_config_defaults(proxy_policy_opts, &c.policy);
    return c;
}

static int listener_init(struct proxy_listener *l, const char *name, const char *addr,
                         struct proxy_metrics *pm, char **err)
{
    l->name = sc_strdup(name);
    l->address = sc_strdup(addr);
    sc_config_defaults(proxy_h2_listener_opts, &l->http2); /* a configured one's replace them */
    l->max_headers = PROXY_H2_MAX_FIELDS;                  /* the option's default */
    l->noroute.name = sc_strdup("");
    l->noroute.methods = sc_calloc(1, sizeof(char *));
    l->noroute.headers = sc_calloc(1, sizeof(*l->noroute.headers));
    if (sc_addr_parse(addr, &l->ss, err) < 0) {
        return SC_ECONFIG;
    }
    const char *lv[] = { l->name };
    l->m_cx_active = sc_metrics_get(pm->dcx_active, lv);
    proxy_h2_listener_metrics(l, pm);
    l->m_duration = sc_metrics_get(pm->duration, lv);
    return 0;
}

struct proxy_rt *proxy_rt_new(const struct proxy_cfg *cfg, int nworkers, struct proxy_metrics *pm,
                              char **err)
{
    struct proxy_rt *rt = SC_NEW(struct proxy_rt);
    atomic_init(&rt->refs, 1);
    rt->nworkers = nworkers;
    rt->access_log = cfg->access_log == 0;
    rt->idle_timeout_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : 60000;
    rt->request_headers_timeout_ms =
        cfg->request_headers_timeout_ms ? cfg->request_headers_timeout_ms : 10000;
    rt->stream_idle_timeout_ms = cfg->stream_idle_timeout_ms ? cfg->stream_idle_timeout_ms : 60000;
    rt->retry_buffer = cfg->retry_buffer;
    rt->max_request_head = cfg->max_request_head ? (uint32_t)cfg->max_request_head : 65536;
    rt->max_connections = cfg->max_connections > 0 ? (int)cfg->max_connections : 16384;
    rt->max_request_body = cfg->max_request_body;
    rt->busy_poll_ns = cfg->busy_poll_ms * 1000000;
    int rc = proxy_authz_rt_init(rt, cfg, pm, err);
    if (rc < 0) {
        rt_free(rt);
        return NULL;
    }

    bool quick = cfg->listen || cfg->listeners.n == 0;
    /* With no listener configured at all, the sidecar defaults: inbound to the app and an
     * outbound listener that forwards to each request's original destination. */
    bool outbound = !cfg->listen && cfg->listeners.n == 0;
    rt->nclusters = cfg->clusters.n + (quick ? 1 : 0) + (outbound ? 1 : 0);
    rt->clusters = sc_calloc(rt->nclusters ? rt->nclusters : 1, sizeof(*rt->clusters));
    const struct proxy_cluster_cfg *ccs = cfg->clusters.v;
    size_t nc = 0;
    for (; nc < cfg->clusters.n; nc++) {
        rc = cluster_init(&rt->clusters[nc], &ccs[nc], false, cfg, nworkers, pm, err);
        if (rc < 0) {
            nc++;
            goto fail;
        }
    }
    if (quick) {
        char *ep = (char *)quick_upstream(cfg);
        struct proxy_cluster_cfg qc = quick_cluster_cfg(&ep);
        rc = cluster_init(&rt->clusters[nc], &qc, true, cfg, nworkers, pm, err);
        nc++;
        if (rc < 0) {
            goto fail;
        }
    }
    if (outbound) {
        struct proxy_cluster_cfg oc = outbound_cluster_cfg();
        rc = cluster_init(&rt->clusters[nc], &oc, false, cfg, nworkers, pm, err);
        nc++;
        if (rc < 0) {
            goto fail;
        }
    }

    rt->nlisteners = cfg->listeners.n + (quick ? 1 : 0) + (outbound ? 1 : 0);
    rt->listeners = sc_calloc(rt->nlisteners, sizeof(*rt->listeners));
    const struct proxy_listener_cfg *lcs = cfg->listeners.v;
    for (size_t i = 0; i < cfg->listeners.n; i++) {
        struct proxy_listener *l = &rt->listeners[i];
        rc = listener_init(l, lcs[i].name, lcs[i].address, pm, err);
        l->inbound = lcs[i].tlscfg.direction == 0;
        l->http2 = lcs[i].http2;
        l->max_headers = (uint32_t)lcs[i].max_request_headers;
        l->grpc_web = lcs[i].gw.grpc_web;
        if (rc == 0) {
            rc = proxy_tls_listener_init(&l->tls, l->name, &lcs[i], false, cfg, pm, err);
        }
        if (rc < 0) {
            goto fail;
        }
        l->nroutes = lcs[i].routes.n;
        l->routes = sc_calloc(l->nroutes ? l->nroutes : 1, sizeof(*l->routes));
        const struct proxy_route_cfg *rcs = lcs[i].routes.v;
        struct proxy_rl_cfg flag_rl;
        const struct proxy_rl_cfg *lrl = &lcs[i].rate_limit;
        if (lrl->requests_per_unit == 0 && cfg->rate_limit &&
            proxy_rl_parse_flag(cfg->rate_limit, &flag_rl) == 0) {
            lrl = &flag_rl;
        }
        proxy_route_policy_listener_init(l, lrl, pm);
        for (size_t r = 0; r < l->nroutes; r++) {
            route_init(&l->routes[r], &rcs[r], cfg, rt, r);
            rc = proxy_route_policy_route_init(&l->routes[r], &rcs[r], &lcs[i], rt, l->name, pm,
                                               err);
            if (rc < 0) {
                goto fail;
            }
            l->cors = l->cors || (l->routes[r].pol && l->routes[r].pol->cors);
            if (!l->routes[r].cluster && !(l->routes[r].pol && l->routes[r].pol->act)) {
                *err =
                    sc_asprintf("listener \"%s\": unknown cluster \"%s\"", l->name, rcs[r].cluster);
                rc = SC_ECONFIG;
                goto fail;
            }
        }
        rc = proxy_icpt_listener_init(l, &lcs[i], cfg, rt, pm, err);
        if (rc == 0) {
            rc = proxy_oidc_listener_init(l, &lcs[i], pm->reg, err);
        }
        if (rc < 0) {
            goto fail;
        }
    }
    if (quick) {
        struct proxy_listener *l = &rt->listeners[cfg->listeners.n];
        rc = listener_init(l, cfg->listen ? "listen" : "inbound",
                           cfg->listen ? cfg->listen : "0.0.0.0:15006", pm, err);
        l->inbound = true;
        if (rc == 0) {
            rc = proxy_tls_listener_init(&l->tls, l->name, NULL, true, cfg, pm, err);
        }
        if (rc == 0) {
            rc = proxy_icpt_listener_init(l, NULL, cfg, rt, pm, err);
        }
        if (rc < 0) {
            goto fail;
        }
        struct proxy_rl_cfg flag_rl;
        if (cfg->rate_limit && proxy_rl_parse_flag(cfg->rate_limit, &flag_rl) == 0) {
            proxy_route_policy_listener_init(l, &flag_rl, pm);
        }
        struct proxy_route_cfg qr = { .name = "default", .cluster = "upstream" };
        qr.retry_policy.num_retries = -1;
        l->nroutes = 1;
        l->routes = sc_calloc(1, sizeof(*l->routes));
        route_init(&l->routes[0], &qr, cfg, rt, 0);
    }
    if (outbound) {
        struct proxy_listener *l = &rt->listeners[rt->nlisteners - 1];
        rc = listener_init(l, "outbound", "127.0.0.1:15001", pm, err);
        if (rc == 0) {
            rc = proxy_tls_listener_init(&l->tls, l->name, NULL, false, cfg, pm, err);
        }
        if (rc == 0) {
            rc = proxy_icpt_listener_init(l, NULL, cfg, rt, pm, err);
        }
        if (rc < 0) {
            goto fail;
        }
        struct proxy_route_cfg orc = { .name = "outbound", .cluster = "outbound" };
        orc.retry_policy.num_retries = -1;
        l->nroutes = 1;
        l->routes = sc_calloc(1, sizeof(*l->routes));
        route_init(&l->routes[0], &orc, cfg, rt, 0);
    }
    for (size_t i = 0; i < rt->nlisteners; i++) {
        struct proxy_listener *l = &rt->listeners[i];
        l->authn = l->oidc || (l->inbound && ((rt->oidc && !l->oidc_off) || rt->authz || rt->jwt));
    }
    return rt;
fail:
    rt->nclusters = nc;
    rt_free(rt);
    return NULL;
}

/* ---- GET /config: the effective listeners, routes and clusters ---- */

/* A route as dumped: its config with inherited values filled in, and the text they point to. */
struct route_eff {
    struct proxy_route_cfg rc;
    char timeout[SC_DURATION_MAX];
    char per_try_timeout[SC_DURATION_MAX];
    char name[32];
};

/* <rc> (the <i>th route) with the values it inherits from the top level filled in, as route_init
 * resolves them. */
static void route_effective(struct route_eff *e, const struct proxy_route_cfg *rc, size_t i,
                            const struct proxy_cfg *cfg)
{
    static char *def_retry_on[] = { "connect-failure", "reset", "gateway-error" };
    e->rc = *rc;
    struct proxy_retry_cfg *rp = &e->rc.retry_policy;
    if (!rc->name) {
        snprintf(e->name, sizeof(e->name), "route%zu", i + 1);
        e->rc.name = e->name;
    }
    if (!rc->timeout) {
        sc_value_format_duration(cfg->timeout_ms, e->timeout);
        e->rc.timeout = e->timeout;
    }
    if (rp->retry_on.n == 0) {
        rp->retry_on = (struct sc_strv){ def_retry_on, SC_ARRAY_LEN(def_retry_on) };
    }
    rp->num_retries = rp->num_retries >= 0 ? rp->num_retries : cfg->retries;
    if (!rp->per_try_timeout) {
        sc_value_format_duration(cfg->per_try_timeout_ms, e->per_try_timeout);
        rp->per_try_timeout = e->per_try_timeout;
    }
    rp->base_interval_ms = rp->base_interval_ms ? rp->base_interval_ms : 25;
    rp->max_interval_ms = rp->max_interval_ms ? rp->max_interval_ms : 250;
}

/* Dumps listener <lc> with its routes resolved, through the listener table. */
static json_t *dump_listener(const struct proxy_listener_cfg *lc, const struct proxy_cfg *cfg)
{
    struct proxy_listener_cfg l = *lc;
    const struct proxy_route_cfg *rcs = lc->routes.v;
    size_t n = lc->routes.n;
    struct route_eff *es = sc_calloc(n ? n : 1, sizeof(*es));
    struct proxy_route_cfg *rs = sc_calloc(n ? n : 1, sizeof(*rs));
    for (size_t i = 0; i < n; i++) {
        route_effective(&es[i], &rcs[i], i, cfg);
        rs[i] = es[i].rc;
    }
    l.routes.v = rs;
    json_t *j = sc_config_dump(listener_opts, &l);
    sc_free(rs);
    sc_free(es);
    return j;
}

static json_t *dump_cluster(const struct proxy_cluster_cfg *cc, const struct proxy_cfg *cfg)
{
    struct proxy_cluster_cfg c = *cc;
    c.connect_timeout_ms =
        cc->connect_timeout_ms ? cc->connect_timeout_ms : cfg->connect_timeout_ms;
    return sc_config_dump(cluster_opts, &c);
}

void proxy_config_dump(const void *cfgp, json_t *j)
{
    const struct proxy_cfg *cfg = cfgp;
    bool quick = cfg->listen || cfg->listeners.n == 0;
    bool outbound = !cfg->listen && cfg->listeners.n == 0;
    json_t *ls = json_array(), *cs = json_array();
    const struct proxy_listener_cfg *lcs = cfg->listeners.v;
    for (size_t i = 0; i < cfg->listeners.n; i++) {
        json_array_append_new(ls, dump_listener(&lcs[i], cfg));
    }
    const struct proxy_cluster_cfg *ccs = cfg->clusters.v;
    for (size_t i = 0; i < cfg->clusters.n; i++) {
        json_array_append_new(cs, dump_cluster(&ccs[i], cfg));
    }
    struct proxy_route_cfg qr = { .name = "default", .cluster = "upstream" };
    qr.retry_policy.num_retries = -1;
    if (quick) {
        struct proxy_listener_cfg ql = { .name = cfg->listen ? "listen" : "inbound",
                                         .address = cfg->listen ? cfg->listen : "0.0.0.0:15006",
                                         .routes = { &qr, 1 } };
        json_array_append_new(ls, dump_listener(&ql, cfg));
        char *ep = (char *)quick_upstream(cfg);
        struct proxy_cluster_cfg qc = quick_cluster_cfg(&ep);
        json_array_append_new(cs, dump_cluster(&qc, cfg));
    }
    if (outbound) {
        struct proxy_route_cfg orc = { .name = "outbound", .cluster = "outbound" };
        orc.retry_policy.num_retries = -1;
        struct proxy_listener_cfg ol = { .name = "outbound",
                                         .address = "127.0.0.1:15001",
                                         .routes = { &orc, 1 } };
        json_array_append_new(ls, dump_listener(&ol, cfg));
        struct proxy_cluster_cfg oc = outbound_cluster_cfg();
        json_array_append_new(cs, dump_cluster(&oc, cfg));
    }
    json_object_set_new(j, "listeners", ls);
    json_object_set_new(j, "clusters", cs);
}

/* ---- DNS: endpoints named by host are re-resolved on the main loop ---- */

struct resolver {
    struct sc_list node;
    struct proxy *px;
    struct proxy_rt *rt; /* a reference */
    struct proxy_endpoint *ep;
    uv_timer_t timer;
    uv_getaddrinfo_t req;
    bool resolving;
    bool stopped;
    bool timer_closed;
};

static void resolver_maybe_free(struct resolver *r)
{
    if (r->stopped && r->timer_closed && !r->resolving) {
        proxy_rt_unref(r->rt);
        sc_free(r);
    }
}

static void on_resolver_timer_closed(uv_handle_t *h)
{
    struct resolver *r = h->data;
    r->timer_closed = true;
    resolver_maybe_free(r);
}

static void on_resolve_timer(uv_timer_t *t);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolver *r = req->data;
    r->resolving = false;
    if (r->stopped) {
        uv_freeaddrinfo(res);
        resolver_maybe_free(r);
        return;
    }
    struct proxy_endpoint *ep = r->ep;
    if (status < 0) {
        sc_warn("DNS resolution failed; keeping the previous addresses",
                SC_LS("endpoint", ep->name), SC_LS("error", uv_strerror(status)));
    } else {
        struct sockaddr_storage tmp[PROXY_MAX_ADDRS];
        int n = 0;
        for (struct addrinfo *a = res; a && n < PROXY_MAX_ADDRS; a = a->ai_next) {
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                a->ai_addrlen <= sizeof(tmp[0])) {
                memset(&tmp[n], 0, sizeof(tmp[n]));
                memcpy(&tmp[n], a->ai_addr, a->ai_addrlen);
                n++;
            }
        }
        uv_mutex_lock(&ep->mu);
        memcpy(ep->addrs, tmp, sizeof(tmp[0]) * (size_t)n);
        atomic_store(&ep->naddrs, n);
        uv_mutex_unlock(&ep->mu);
        sc_debug("resolved", SC_LS("endpoint", ep->name), SC_LI("addresses", n));
    }
    uv_freeaddrinfo(res);
    uv_timer_start(&r->timer, on_resolve_timer, ep->cluster->dns_refresh_ms, 0);
}

static void resolve(struct resolver *r)
{
    if (r->stopped || r->resolving) {
        return;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    r->req.data = r;
    int rc = uv_getaddrinfo(r->timer.loop, &r->req, on_resolved, r->ep->host, r->ep->port, &hints);
    if (rc < 0) {
        sc_warn("DNS resolution failed to start", SC_LS("endpoint", r->ep->name), SC_LERR(rc));
        uv_timer_start(&r->timer, on_resolve_timer, r->ep->cluster->dns_refresh_ms, 0);
        return;
    }
    r->resolving = true;
}

static void on_resolve_timer(uv_timer_t *t)
{
    resolve(t->data);
}

void proxy_dns_start(struct proxy *px, struct proxy_rt *rt)
{
    for (size_t c = 0; c < rt->nclusters; c++) {
        for (size_t e = 0; e < rt->clusters[c].neps; e++) {
            struct proxy_endpoint *ep = &rt->clusters[c].eps[e];
            if (!ep->dns) {
                continue;
            }
            struct resolver *r = SC_NEW(struct resolver);
            r->px = px;
            r->rt = proxy_rt_ref(rt);
            r->ep = ep;
            uv_timer_init(sc_app_loop(px->app), &r->timer);
            r->timer.data = r;
            sc_list_append(&px->resolvers, &r->node);
            uv_timer_start(&r->timer, on_resolve_timer, 0, 0);
        }
    }
}

void proxy_dns_stop(struct proxy *px)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &px->resolvers)
    {
        struct resolver *r = sc_list_entry(pos, struct resolver, node);
        sc_list_remove(&r->node);
        r->stopped = true;
        if (r->resolving) {
            uv_cancel((uv_req_t *)&r->req);
        }
        uv_close((uv_handle_t *)&r->timer, on_resolver_timer_closed);
    }
}
