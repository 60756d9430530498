// SPDX-License-Identifier: Apache-2.0
// Cluster traffic policy of the proxy: circuit breakers (with the retry budget), outlier detection
// and active health checks, named as in Envoy's cluster and Istio's DestinationRule.
//
// The configuration lives in each cluster's config (struct proxy_policy_cfg, option table
// proxy_policy_opts, inlined into the cluster's table). The state it drives (breaker counters,
// consecutive errors and ejections per endpoint, health-check results) does not live in the
// immutable snapshot: each snapshot cluster points to a reference-counted struct
// proxy_cluster_state, shared by all workers through atomics, which a reload hands over to the new
// snapshot when the cluster's endpoints and policy did not change. So a reload keeps an ejected
// endpoint ejected, and requests in flight on the old snapshot release their breaker slots on the
// same counters the new snapshot checks.
#ifndef SC_ROLES_PROXY_PROXY_POLICY_H
#define SC_ROLES_PROXY_PROXY_POLICY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "roles/proxy/proxy_health_grpc.h"
#include "roles/proxy/proxy_health_tcp.h"

/* ---- configuration (the option table proxy_policy_opts describes these) ---- */

struct proxy_retry_budget_cfg {
    double budget_percent;
    int64_t min_retry_concurrency;
};

struct proxy_breaker_cfg {
    int64_t max_connections;
    int64_t max_pending_requests;
    int64_t max_requests;
    int64_t max_retries;
    struct proxy_retry_budget_cfg retry_budget;
};

struct proxy_outlier_cfg {
    int64_t consecutive_5xx;            /* 0: off */
    int64_t consecutive_gateway_errors; /* 0: off */
    uint64_t interval_ms;
    uint64_t base_ejection_time_ms;
    uint64_t max_ejection_time_ms;
    int64_t max_ejection_percent;
};

#define PROXY_HC_MAX_RANGES 8

struct proxy_hc_cfg {
    char *path; /* NULL: no active health checks */
    char *host; /* Host header; default: the endpoint */
    uint64_t interval_ms;
    uint64_t timeout_ms;
    int64_t healthy_threshold;
    int64_t unhealthy_threshold;
    struct sc_strv expected_statuses; /* "200-399" or "204"; empty: 200-399 */
    struct proxy_hc_grpc_cfg grpc;    /* set: gRPC health checks instead of HTTP */
    struct proxy_hc_tcp_cfg tcp;      /* set: TCP health checks instead of HTTP */
};

struct proxy_policy_cfg {
    struct proxy_breaker_cfg circuit_breakers;
    struct proxy_outlier_cfg outlier_detection;
    struct proxy_hc_cfg health_check;
};

/* The cluster keys above; inlined into the cluster's option table. */
extern const struct sc_opt proxy_policy_opts[];

/* Checks what the table cannot (expected status ranges). <cluster> names the cluster in the
 * message. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_policy_check(const struct proxy_policy_cfg *pc, const char *cluster, char **err);

/* ---- shared state, outside the snapshot ---- */

struct proxy_cluster;
struct proxy_endpoint;
struct proxy_metrics;
struct proxy_rt;
struct proxy;
struct proxy_exch;

/* Per endpoint: written by every worker (outlier) and by the main loop (health checks). */
struct proxy_ep_state {
    char *name;
    atomic_uint consecutive_5xx;
    atomic_uint consecutive_gw;
    atomic_bool ejected;
    _Atomic uint64_t ejected_until_ms;
    _Atomic uint64_t admitted_ms; /* when it was last readmitted (decay of the multiplier) */
    atomic_uint ejections;        /* the multiplier of base_ejection_time */
    atomic_bool hc_failed;        /* active health checks took it out of load balancing */
    unsigned hc_ok, hc_fail;      /* consecutive results; main loop only */
    uint64_t hc_next_ms;          /* when the next check is due (uv_now); main loop only */
};

/* The limits and parameters a cluster's policy config resolves to. */
struct proxy_policy {
    uint32_t max_connections;
    uint32_t max_pending_requests;
    uint32_t max_requests;
    uint32_t max_retries;
    double budget_percent;
    uint32_t min_retry_concurrency;
    uint32_t consecutive_5xx;
    uint32_t consecutive_gw;
    uint64_t interval_ms;
    uint64_t base_ejection_ms;
    uint64_t max_ejection_ms;
    uint32_t max_ejection_percent;
    bool hc;
    char *hc_path;
    char *hc_host;
    uint64_t hc_interval_ms;
    uint64_t hc_timeout_ms;
    uint32_t hc_healthy;
    uint32_t hc_unhealthy;
    uint16_t hc_ranges[PROXY_HC_MAX_RANGES][2];
    size_t hc_nranges;
    bool hc_grpc; /* grpc.health.v1.Health/Check instead of GET hc_path */
    char *hc_grpc_service;
    char *hc_grpc_authority;
    struct proxy_hc_tcp_spec *hc_tcp; /* TCP checks instead of HTTP (owned), or NULL */
};

struct proxy_cluster_state {
    atomic_int refs;
    char *name;
    char *key; /* the endpoints and policy it was built for: equal keys may share state */
    struct proxy_policy pol;
    atomic_int cx;      /* upstream connections open, all workers */
    atomic_int pending; /* requests waiting for a new connection to be established */
    atomic_int rq;      /* requests in flight */
    atomic_int retries; /* requests retrying */
    atomic_int ejected; /* endpoints ejected now */
    struct proxy_ep_state *eps;
    size_t neps;
    struct sc_metric *m_overflow;
    struct sc_metric *m_retry_overflow;
    struct sc_metric *m_ej_active;
    struct sc_metric *m_ej_total;
    struct sc_metric *m_hc_unhealthy;
};

/* Builds the state of a snapshot cluster from its config <pc> and endpoint names (borrowed).
 * Returns it with one reference. */
struct proxy_cluster_state *proxy_cluster_state_new(const char *cluster,
                                                    const struct proxy_policy_cfg *pc,
                                                    char *const *endpoints, size_t neps,
                                                    struct proxy_metrics *pm);

/* Drops a reference; the last one frees the state (and takes its ejections off the gauge).
 * NULL-safe; any thread. */
void proxy_cluster_state_unref(struct proxy_cluster_state *st);

/* Hands the state of every cluster of <ort> whose key is unchanged over to the same cluster of
 * <nrt>, which is not yet published to any worker. */
void proxy_policy_carry(struct proxy_rt *nrt, struct proxy_rt *ort);

/* Registers the policy metric families in <pm>. */
void proxy_policy_metrics_init(struct proxy_metrics *pm);

/* ---- the data path's hooks (any worker) ---- */

/* True when <ep> may take traffic at <now_ms> (uv_now): it has an address, is not ejected (an
 * ejection whose time is up ends here) and did not fail its health checks. */
bool proxy_endpoint_usable(struct proxy_endpoint *ep, uint64_t now_ms);

/* Takes a max_requests slot for request <r> on cluster <c>. Returns false (counted as an
 * overflow) when the cluster is full. */
bool proxy_breaker_request(struct proxy_cluster *c, struct proxy_exch *r);

/* Takes a connection and a pending slot for a new upstream connection of <c>. Returns false
 * (counted) when max_connections or max_pending_requests is reached; then nothing is held. */
bool proxy_breaker_connect(struct proxy_cluster *c);

/* The pending connection of <c> is established or failed. */
void proxy_breaker_connected(struct proxy_cluster *c);

/* An upstream connection of <c> closed. */
void proxy_breaker_closed(struct proxy_cluster *c);

/* Request <r> wants to retry: true when max_retries and the retry budget allow it (the request
 * then holds one retry slot until it finishes); false is counted as a retry overflow. */
bool proxy_breaker_retry(struct proxy_exch *r);

/* Releases what request <r> holds (request and retry slots). */
void proxy_breaker_release(struct proxy_exch *r);

/* Records the outcome of one try on <ep>: an upstream <status>, or a local-origin failure
 * (connect failure, reset, timeout) reported as 503. May eject the endpoint. */
void proxy_outlier_record(struct proxy_endpoint *ep, int status, uint64_t now_ms);

/* Ends the ejections of <rt> whose time is up (for the metrics, on the main loop). */
void proxy_outlier_sweep(struct proxy_rt *rt, uint64_t now_ms);

/* ---- arithmetic, exposed for the unit tests ---- */

/* How long the <n>th ejection (n >= 1) lasts: base * n, capped at max (when max >= base). */
uint64_t proxy_ejection_ms(const struct proxy_policy *p, unsigned n);

/* True when one more of <neps> endpoints may be ejected while <ejected> are: the ejected share
 * stays at or under <percent>. A lone endpoint under 100% is never ejected. */
bool proxy_may_eject(unsigned ejected, size_t neps, unsigned percent);

/* The ejection multiplier after an endpoint stayed admitted for <admitted_for_ms>: one less per
 * full interval, as Envoy lowers it at each interval an endpoint is not ejected. */
unsigned proxy_ejections_decay(unsigned ejections, uint64_t admitted_for_ms, uint64_t interval_ms);

/* The number of concurrent retries allowed with <active> requests in flight: the larger of
 * budget_percent of <active> (rounded down) and min_retry_concurrency, never above
 * max_retries. */
uint32_t proxy_retry_limit(const struct proxy_policy *p, uint32_t active);

/* ---- active health checks (main loop) ---- */

/* Starts a checker per endpoint of every cluster of <rt> with a health_check. An endpoint never
 * checked is checked at once; one whose state a reload kept, when its next check is due (its
 * results are kept too). */
void proxy_health_start(struct proxy *px, struct proxy_rt *rt);

/* Stops every checker (their handles close asynchronously). */
void proxy_health_stop(struct proxy *px);

#endif
