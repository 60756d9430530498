// SPDX-License-Identifier: Apache-2.0
// Cluster traffic policy: circuit breakers and the retry budget, outlier detection, and the
// reference-counted per-cluster state they keep outside the snapshot (see proxy_policy.h). Every
// counter here is shared by all workers and touched with atomics only: a breaker slot is taken by
// an increment that is undone when it went over the limit, an ejection reserves its share of the
// cluster with a compare-and-swap, so no lock is ever taken on the data path. Active health checks
// are in proxy_health.c.
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/str.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_policy.h"

/* ---- configuration ---- */

static const struct sc_opt retry_budget_opts[] = {
    { .name = "budget_percent",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_retry_budget_cfg, budget_percent),
      .def = "20",
      .help = "concurrent retries allowed, as a percentage of the cluster's requests in flight",
      .min = 0,
      .max = 100 },
    { .name = "min_retry_concurrency",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_retry_budget_cfg, min_retry_concurrency),
      .def = "3",
      .help = "concurrent retries always allowed, whatever the percentage gives",
      .min = 0,
      .max = 1000000 },
    { 0 },
};

static const struct sc_opt breaker_opts[] = {
    { .name = "max_connections",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_breaker_cfg, max_connections),
      .def = "1024",
      .help = "upstream connections open at once, all endpoints and workers",
      .min = 1,
      .max = 10000000 },
    { .name = "max_pending_requests",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_breaker_cfg, max_pending_requests),
      .def = "1024",
      .help = "requests waiting for a new upstream connection to be established",
      .min = 1,
      .max = 10000000 },
    { .name = "max_requests",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_breaker_cfg, max_requests),
      .def = "1024",
      .help = "requests in flight to the cluster, all workers",
      .min = 1,
      .max = 10000000 },
    { .name = "max_retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_breaker_cfg, max_retries),
      .def = "1024",
      .help = "requests retrying at once (the retry budget may allow fewer)",
      .min = 0,
      .max = 10000000 },
    { .name = "retry_budget",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_breaker_cfg, retry_budget),
      .help = "caps concurrent retries in proportion to the requests in flight",
      .sub = retry_budget_opts },
    { 0 },
};

static const struct sc_opt outlier_opts[] = {
    { .name = "consecutive_5xx",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_outlier_cfg, consecutive_5xx),
      .def = "5",
      .help = "5xx answers (or connect failures, resets, timeouts) in a row that eject an "
              "endpoint (0: off)",
      .min = 0,
      .max = 1000000 },
    { .name = "consecutive_gateway_errors",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_outlier_cfg, consecutive_gateway_errors),
      .def = "0",
      .help = "502, 503 or 504 answers (or connect failures, resets, timeouts) in a row that eject "
              "an endpoint (0: off)",
      .min = 0,
      .max = 1000000 },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_outlier_cfg, interval_ms),
      .def = "30s",
      .help = "each interval an endpoint stays admitted takes one off its ejection count",
      .min = 1,
      .max = 86400000 },
    { .name = "base_ejection_time",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_outlier_cfg, base_ejection_time_ms),
      .def = "30s",
      .help = "an ejection lasts this long times the number of times the endpoint was ejected",
      .min = 1,
      .max = 86400000 },
    { .name = "max_ejection_time",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_outlier_cfg, max_ejection_time_ms),
      .def = "300s",
      .help = "cap on one ejection (when not below base_ejection_time)",
      .min = 1,
      .max = 86400000 },
    { .name = "max_ejection_percent",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_outlier_cfg, max_ejection_percent),
      .def = "50",
      .help = "largest share of the cluster's endpoints ejected at once",
      .min = 0,
      .max = 100 },
    { 0 },
};

static const struct sc_opt hc_opts[] = {
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hc_cfg, path),
      .help = "HTTP path checked with GET on each endpoint (unset, and no grpc: no active "
              "health checks)" },
    { .name = "host",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hc_cfg, host),
      .help = "Host header of the checks (default: the endpoint as configured)" },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_hc_cfg, interval_ms),
      .def = "10s",
      .help = "time between checks of one endpoint",
      .min = 10,
      .max = 86400000 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_hc_cfg, timeout_ms),
      .def = "1s",
      .help = "deadline of one check (connect and response head)",
      .min = 1,
      .max = 3600000 },
    { .name = "healthy_threshold",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_hc_cfg, healthy_threshold),
      .def = "2",
      .help = "passed checks in a row that bring a failed endpoint back",
      .min = 1,
      .max = 1000 },
    { .name = "unhealthy_threshold",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_hc_cfg, unhealthy_threshold),
      .def = "3",
      .help = "failed checks in a row that take an endpoint out of load balancing",
      .min = 1,
      .max = 1000 },
    { .name = "expected_statuses",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_hc_cfg, expected_statuses),
      .help = "statuses that pass, as \"200-399\" ranges or single codes (default 200-399)",
      .max = PROXY_HC_MAX_RANGES },
    { .name = "grpc",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_hc_cfg, grpc),
      .help = "gRPC health checks (grpc.health.v1.Health/Check over HTTP/2, cleartext or the "
              "cluster's TLS) instead of HTTP: present, even empty, turns them on; only SERVING "
              "passes",
      .sub = proxy_hc_grpc_opts,
      .check = proxy_hc_grpc_mark },
    { .name = "tcp",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_hc_cfg, tcp),
      .help = "TCP health checks instead of HTTP (Envoy's tcp_health_check): connect, write send, "
              "expect receive; present, even empty (connect only), turns them on",
      .sub = proxy_hc_tcp_opts,
      .check = proxy_hc_tcp_mark },
    { 0 },
};

const struct sc_opt proxy_policy_opts[] = {
    { .name = "circuit_breakers",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_policy_cfg, circuit_breakers),
      .help = "limits past which requests fail fast with 503 (flag UO) instead of queueing",
      .sub = breaker_opts },
    { .name = "outlier_detection",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_policy_cfg, outlier_detection),
      .help = "ejects endpoints that keep failing from load balancing for a while",
      .sub = outlier_opts },
    { .name = "health_check",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_policy_cfg, health_check),
      .help = "active HTTP, gRPC or TCP health checks of every endpoint (off unless path, grpc or "
              "tcp is set)",
      .sub = hc_opts },
    { 0 },
};

/* Parses "200-399" or "204" into [lo, hi]. Returns 0 or -EINVAL. */
static int parse_range(const char *s, uint16_t out[2])
{
    const char *dash = strchr(s, '-');
    uint64_t lo, hi;
    if (dash) {
        if (sc_str_to_u64(sc_str_n(s, (size_t)(dash - s)), 599, &lo) < 0 ||
            sc_str_to_u64(sc_str_c(dash + 1), 599, &hi) < 0) {
            return -EINVAL;
        }
    } else if (sc_str_to_u64(sc_str_c(s), 599, &lo) < 0) {
        return -EINVAL;
    } else {
        hi = lo;
    }
    if (lo < 100 || hi < lo) {
        return -EINVAL;
    }
    out[0] = (uint16_t)lo;
    out[1] = (uint16_t)hi;
    return 0;
}

int proxy_policy_check(const struct proxy_policy_cfg *pc, const char *cluster, char **err)
{
    const struct proxy_hc_cfg *h = &pc->health_check;
    for (size_t i = 0; i < h->expected_statuses.n; i++) {
        uint16_t r[2];
        if (parse_range(h->expected_statuses.v[i], r) < 0) {
            *err = sc_asprintf("cluster \"%s\": health_check expected status \"%s\" is not a "
                               "status or a range like 200-399 (100 to 599)",
                               cluster, h->expected_statuses.v[i]);
            return SC_ECONFIG;
        }
    }
    if ((h->path && strlen(h->path) > 512) || (h->host && strlen(h->host) > 256)) {
        *err =
            sc_asprintf("cluster \"%s\": health_check path (512) or host (256) too long", cluster);
        return SC_ECONFIG;
    }
    if ((h->path != NULL) + h->grpc.set + h->tcp.set > 1) {
        *err = sc_asprintf("cluster \"%s\": health_check has more than one of path (HTTP), grpc "
                           "and tcp; choose one",
                           cluster);
        return SC_ECONFIG;
    }
    if (proxy_hc_tcp_check(&h->tcp, cluster, err) < 0) {
        return SC_ECONFIG;
    }
    if (h->grpc.service && strlen(h->grpc.service) > PROXY_HC_GRPC_MAX_SERVICE) {
        *err = sc_asprintf("cluster \"%s\": health_check grpc service longer than %d bytes",
                           cluster, PROXY_HC_GRPC_MAX_SERVICE);
        return SC_ECONFIG;
    }
    if (h->grpc.authority && (strlen(h->grpc.authority) > 256 || !*h->grpc.authority)) {
        *err = sc_asprintf("cluster \"%s\": health_check grpc authority must be 1 to 256 bytes",
                           cluster);
        return SC_ECONFIG;
    }
    for (const char *p = h->grpc.authority; p && *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            *err = sc_asprintf("cluster \"%s\": health_check grpc authority has a space or "
                               "control character",
                               cluster);
            return SC_ECONFIG;
        }
    }
    if (h->path && h->path[0] != '/') {
        *err = sc_asprintf("cluster \"%s\": health_check path \"%s\" must start with /", cluster,
                           h->path);
        return SC_ECONFIG;
    }
    for (const char *p = h->path; p && *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            *err = sc_asprintf("cluster \"%s\": health_check path has a space or control "
                               "character",
                               cluster);
            return SC_ECONFIG;
        }
    }
    for (const char *p = h->host; p && *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            *err = sc_asprintf("cluster \"%s\": health_check host has a space or control "
                               "character",
                               cluster);
            return SC_ECONFIG;
        }
    }
    return 0;
}

/* ---- shared state ---- */

static uint32_t u32(int64_t v)
{
    return v <= 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void policy_init(struct proxy_policy *p, const struct proxy_policy_cfg *pc)
{
    const struct proxy_breaker_cfg *b = &pc->circuit_breakers;
    const struct proxy_outlier_cfg *o = &pc->outlier_detection;
    const struct proxy_hc_cfg *h = &pc->health_check;
    p->max_connections = u32(b->max_connections);
    p->max_pending_requests = u32(b->max_pending_requests);
    p->max_requests = u32(b->max_requests);
    p->max_retries = u32(b->max_retries);
    p->budget_percent = b->retry_budget.budget_percent;
    p->min_retry_concurrency = u32(b->retry_budget.min_retry_concurrency);
    p->consecutive_5xx = u32(o->consecutive_5xx);
    p->consecutive_gw = u32(o->consecutive_gateway_errors);
    p->interval_ms = o->interval_ms;
    p->base_ejection_ms = o->base_ejection_time_ms;
    p->max_ejection_ms = o->max_ejection_time_ms;
    p->max_ejection_percent = u32(o->max_ejection_percent);
    p->hc = h->path != NULL || h->grpc.set || h->tcp.set;
    p->hc_tcp = proxy_hc_tcp_spec_new(&h->tcp);
    p->hc_grpc = h->grpc.set;
    p->hc_grpc_service = sc_strdup(h->grpc.service);
    p->hc_grpc_authority = sc_strdup(h->grpc.authority);
    p->hc_path = sc_strdup(h->path);
    p->hc_host = sc_strdup(h->host);
    p->hc_interval_ms = h->interval_ms;
    p->hc_timeout_ms = h->timeout_ms;
    p->hc_healthy = u32(h->healthy_threshold);
    p->hc_unhealthy = u32(h->unhealthy_threshold);
    p->hc_nranges = 0;
    for (size_t i = 0; i < h->expected_statuses.n && i < PROXY_HC_MAX_RANGES; i++) {
        if (parse_range(h->expected_statuses.v[i], p->hc_ranges[p->hc_nranges]) == 0) {
            p->hc_nranges++;
        }
    }
    if (p->hc_nranges == 0) {
        p->hc_ranges[0][0] = 200;
        p->hc_ranges[0][1] = 399;
        p->hc_nranges = 1;
    }
}

/* Everything the state depends on, as text: two clusters with equal keys may share state. */
static char *state_key(const struct proxy_policy *p, char *const *endpoints, size_t neps)
{
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    for (size_t i = 0; i < neps; i++) {
        sc_buf_append_cstr(&b, endpoints[i]);
        sc_buf_append_cstr(&b, ",");
    }
    char tmp[512];
    int n = snprintf(
        tmp, sizeof(tmp), "|%u %u %u %u %.6g %u|%u %u %llu %llu %llu %u|%d %llu %llu %u %u|",
        p->max_connections, p->max_pending_requests, p->max_requests, p->max_retries,
        p->budget_percent, p->min_retry_concurrency, p->consecutive_5xx, p->consecutive_gw,
        (unsigned long long)p->interval_ms, (unsigned long long)p->base_ejection_ms,
        (unsigned long long)p->max_ejection_ms, p->max_ejection_percent, p->hc,
        (unsigned long long)p->hc_interval_ms, (unsigned long long)p->hc_timeout_ms, p->hc_healthy,
        p->hc_unhealthy);
    if (n > 0) {
        sc_buf_append(&b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
    for (size_t i = 0; i < p->hc_nranges; i++) {
        n = snprintf(tmp, sizeof(tmp), "%u-%u,", p->hc_ranges[i][0], p->hc_ranges[i][1]);
        if (n > 0) {
            sc_buf_append(&b, tmp, (size_t)n);
        }
    }
    sc_buf_append_cstr(&b, "|");
    sc_buf_append_cstr(&b, p->hc_path ? p->hc_path : "");
    sc_buf_append_cstr(&b, "|");
    sc_buf_append_cstr(&b, p->hc_host ? p->hc_host : "");
    if (p->hc_grpc) {
        sc_buf_append_cstr(&b, "|grpc|");
        sc_buf_append_cstr(&b, p->hc_grpc_service ? p->hc_grpc_service : "");
        sc_buf_append_cstr(&b, "|");
        sc_buf_append_cstr(&b, p->hc_grpc_authority ? p->hc_grpc_authority : "");
    }
    if (p->hc_tcp) {
        static const char hx[] = "0123456789abcdef";
        sc_buf_append_cstr(&b, "|tcp|");
        for (size_t i = 0; i <= p->hc_tcp->nrecv; i++) {
            const uint8_t *v = i == 0 ? p->hc_tcp->send : p->hc_tcp->recv[i - 1];
            size_t vn = i == 0 ? p->hc_tcp->send_len : p->hc_tcp->recv_len[i - 1];
            for (size_t k = 0; k < vn; k++) {
                char two[2] = { hx[v[k] >> 4], hx[v[k] & 15] };
                sc_buf_append(&b, two, 2);
            }
            sc_buf_append_cstr(&b, ",");
        }
    }
    char *key = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return key;
}

struct proxy_cluster_state *proxy_cluster_state_new(const char *cluster,
                                                    const struct proxy_policy_cfg *pc,
                                                    char *const *endpoints, size_t neps,
                                                    struct proxy_metrics *pm)
{
    struct proxy_cluster_state *st = SC_NEW(struct proxy_cluster_state);
    atomic_init(&st->refs, 1);
    st->name = sc_strdup(cluster);
    policy_init(&st->pol, pc);
    st->key = state_key(&st->pol, endpoints, neps);
    st->neps = neps;
    st->eps = sc_calloc(neps ? neps : 1, sizeof(*st->eps));
    for (size_t i = 0; i < neps; i++) {
        st->eps[i].name = sc_strdup(endpoints[i]);
    }
    if (pm && pm->overflow) {
        const char *lv[] = { st->name };
        st->m_overflow = sc_metrics_get(pm->overflow, lv);
        st->m_retry_overflow = sc_metrics_get(pm->retry_overflow, lv);
        st->m_ej_active = sc_metrics_get(pm->ej_active, lv);
        st->m_ej_total = sc_metrics_get(pm->ej_total, lv);
        st->m_hc_unhealthy = sc_metrics_get(pm->hc_unhealthy, lv);
    }
    return st;
}

void proxy_cluster_state_unref(struct proxy_cluster_state *st)
{
    if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    /* Its ejections end with it: the series is shared with whatever replaces it. */
    int ej = atomic_load(&st->ejected);
    if (ej && st->m_ej_active) {
        sc_metrics_gauge_add(st->m_ej_active, -(double)ej);
    }
    for (size_t i = 0; i < st->neps; i++) {
        if (atomic_load(&st->eps[i].hc_failed)) {
            sc_metrics_gauge_add(st->m_hc_unhealthy, -1);
        }
        sc_free(st->eps[i].name);
    }
    sc_free(st->eps);
    sc_free(st->pol.hc_path);
    sc_free(st->pol.hc_host);
    sc_free(st->pol.hc_grpc_service);
    sc_free(st->pol.hc_grpc_authority);
    proxy_hc_tcp_spec_free(st->pol.hc_tcp);
    sc_free(st->key);
    sc_free(st->name);
    sc_free(st);
}

void proxy_policy_carry(struct proxy_rt *nrt, struct proxy_rt *ort)
{
    for (size_t c = 0; c < nrt->nclusters; c++) {
        struct proxy_cluster *nc = &nrt->clusters[c];
        struct proxy_cluster *oc = proxy_rt_cluster(ort, nc->name);
        if (!oc || !oc->st || !nc->st || oc->st == nc->st || strcmp(oc->st->key, nc->st->key)) {
            continue;
        }
        struct proxy_cluster_state *st = oc->st;
        atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
        proxy_cluster_state_unref(nc->st);
        nc->st = st;
        /* Equal keys: the same endpoints in the same order. */
        for (size_t e = 0; e < nc->neps && e < st->neps; e++) {
            nc->eps[e].st = &st->eps[e];
        }
    }
}

void proxy_policy_metrics_init(struct proxy_metrics *pm)
{
    static const char *const c_labels[] = { "cluster", NULL };
    pm->overflow = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_rq_overflow_total",
        "Requests refused by a circuit breaker (503, flag UO): max_requests, max_connections or "
        "max_pending_requests reached.",
        c_labels, NULL, 0);
    pm->retry_overflow = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_rq_retry_overflow_total",
        "Retries not sent because max_retries or the retry budget was reached.", c_labels, NULL, 0);
    pm->ej_active =
        sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "sidecar_outlier_ejections_active",
                          "Endpoints ejected by outlier detection now.", c_labels, NULL, 0);
    pm->ej_total = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_outlier_ejections_total",
                                     "Ejections by outlier detection.", c_labels, NULL, 0);
    pm->hc_unhealthy = sc_metrics_family(
        pm->reg, SC_METRIC_GAUGE, "sidecar_upstream_endpoints_unhealthy",
        "Endpoints out of load balancing because they failed their active health checks.", c_labels,
        NULL, 0);
}

/* ---- arithmetic ---- */

uint64_t proxy_ejection_ms(const struct proxy_policy *p, unsigned n)
{
    if (n == 0) {
        n = 1;
    }
    uint64_t t = p->base_ejection_ms;
    if (t && n > UINT64_MAX / t) {
        t = UINT64_MAX;
    } else {
        t *= n;
    }
    if (p->max_ejection_ms >= p->base_ejection_ms && t > p->max_ejection_ms) {
        t = p->max_ejection_ms;
    }
    return t;
}

bool proxy_may_eject(unsigned ejected, size_t neps, unsigned percent)
{
    return neps > 0 && (uint64_t)(ejected + 1) * 100 <= (uint64_t)percent * neps;
}

unsigned proxy_ejections_decay(unsigned ejections, uint64_t admitted_for_ms, uint64_t interval_ms)
{
    if (interval_ms == 0) {
        return ejections;
    }
    uint64_t k = admitted_for_ms / interval_ms;
    return k >= ejections ? 0 : ejections - (unsigned)k;
}

uint32_t proxy_retry_limit(const struct proxy_policy *p, uint32_t active)
{
    uint64_t byp = (uint64_t)((double)active * p->budget_percent / 100.0);
    uint64_t lim = byp > p->min_retry_concurrency ? byp : p->min_retry_concurrency;
    return lim > p->max_retries ? p->max_retries : (uint32_t)lim;
}

/* ---- breakers ---- */

/* Takes one unit of <ctr> unless it is at <max>. */
static bool take(atomic_int *ctr, uint32_t max)
{
    int cur = atomic_fetch_add_explicit(ctr, 1, memory_order_relaxed);
    if (cur < 0 || (uint32_t)cur >= max) {
        atomic_fetch_sub_explicit(ctr, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

bool proxy_breaker_request(struct proxy_cluster *c, struct proxy_exch *r)
{
    struct proxy_cluster_state *st = c->st;
    if (!st) {
        return true;
    }
    if (!take(&st->rq, st->pol.max_requests)) {
        sc_metrics_counter_inc(st->m_overflow);
        return false;
    }
    r->bst = st;
    r->rq_held = true;
    return true;
}

bool proxy_breaker_connect(struct proxy_cluster *c)
{
    struct proxy_cluster_state *st = c->st;
    if (!st) {
        return true;
    }
    if (!take(&st->cx, st->pol.max_connections)) {
        sc_metrics_counter_inc(st->m_overflow);
        return false;
    }
    if (!take(&st->pending, st->pol.max_pending_requests)) {
        atomic_fetch_sub_explicit(&st->cx, 1, memory_order_relaxed);
        sc_metrics_counter_inc(st->m_overflow);
        return false;
    }
    return true;
}

void proxy_breaker_connected(struct proxy_cluster *c)
{
    if (c->st) {
        atomic_fetch_sub_explicit(&c->st->pending, 1, memory_order_relaxed);
    }
}

void proxy_breaker_closed(struct proxy_cluster *c)
{
    if (c->st) {
        atomic_fetch_sub_explicit(&c->st->cx, 1, memory_order_relaxed);
    }
}

bool proxy_breaker_retry(struct proxy_exch *r)
{
    struct proxy_cluster_state *st = r->bst;
    if (!st || r->retry_held) {
        return true;
    }
    int active = atomic_load_explicit(&st->rq, memory_order_relaxed);
    uint32_t limit = proxy_retry_limit(&st->pol, active > 0 ? (uint32_t)active : 0);
    if (!take(&st->retries, limit)) {
        sc_metrics_counter_inc(st->m_retry_overflow);
        return false;
    }
    r->retry_held = true;
    return true;
}

void proxy_breaker_release(struct proxy_exch *r)
{
    struct proxy_cluster_state *st = r->bst;
    if (!st) {
        return;
    }
    if (r->retry_held) {
        atomic_fetch_sub_explicit(&st->retries, 1, memory_order_relaxed);
        r->retry_held = false;
    }
    if (r->rq_held) {
        atomic_fetch_sub_explicit(&st->rq, 1, memory_order_relaxed);
        r->rq_held = false;
    }
    r->bst = NULL;
}

/* ---- outlier detection ---- */

static void reset_errors(struct proxy_ep_state *es)
{
    if (atomic_load_explicit(&es->consecutive_5xx, memory_order_relaxed)) {
        atomic_store_explicit(&es->consecutive_5xx, 0, memory_order_relaxed);
    }
    if (atomic_load_explicit(&es->consecutive_gw, memory_order_relaxed)) {
        atomic_store_explicit(&es->consecutive_gw, 0, memory_order_relaxed);
    }
}

/* Ends <es>'s ejection if its time is up. Returns true when the endpoint is admitted. */
static bool readmit_if_due(struct proxy_cluster_state *st, struct proxy_ep_state *es,
                           uint64_t now_ms)
{
    if (now_ms < atomic_load_explicit(&es->ejected_until_ms, memory_order_acquire)) {
        return false;
    }
    bool expect = true;
    if (atomic_compare_exchange_strong(&es->ejected, &expect, false)) {
        atomic_store_explicit(&es->admitted_ms, now_ms, memory_order_relaxed);
        reset_errors(es);
        atomic_fetch_sub_explicit(&st->ejected, 1, memory_order_relaxed);
        sc_metrics_gauge_add(st->m_ej_active, -1);
        sc_info("outlier detection readmitted an endpoint", SC_LS("cluster", st->name),
                SC_LS("endpoint", es->name));
    }
    return true;
}

static void eject(struct proxy_cluster_state *st, struct proxy_ep_state *es, uint64_t now_ms)
{
    const struct proxy_policy *p = &st->pol;
    if (atomic_load_explicit(&es->ejected, memory_order_acquire)) {
        return;
    }
    int cur = atomic_load_explicit(&st->ejected, memory_order_relaxed);
    do {
        if (!proxy_may_eject(cur > 0 ? (unsigned)cur : 0, st->neps, p->max_ejection_percent)) {
            reset_errors(es); /* count afresh: the next run of errors is judged again */
            return;
        }
    } while (!atomic_compare_exchange_weak(&st->ejected, &cur, cur + 1));
    uint64_t admitted = atomic_load_explicit(&es->admitted_ms, memory_order_relaxed);
    unsigned prev = atomic_load_explicit(&es->ejections, memory_order_relaxed);
    unsigned n =
        proxy_ejections_decay(prev, now_ms > admitted ? now_ms - admitted : 0, p->interval_ms) + 1;
    uint64_t dur = proxy_ejection_ms(p, n);
    atomic_store_explicit(&es->ejected_until_ms, now_ms + dur, memory_order_release);
    bool expect = false;
    if (!atomic_compare_exchange_strong(&es->ejected, &expect, true)) {
        atomic_fetch_sub_explicit(&st->ejected, 1, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&es->ejections, n, memory_order_relaxed);
    reset_errors(es);
    sc_metrics_gauge_add(st->m_ej_active, 1);
    sc_metrics_counter_inc(st->m_ej_total);
    sc_warn("outlier detection ejected an endpoint", SC_LS("cluster", st->name),
            SC_LS("endpoint", es->name), SC_LU("ejections", n), SC_LU("ejection_ms", dur));
}

void proxy_outlier_record(struct proxy_endpoint *ep, int status, uint64_t now_ms)
{
    struct proxy_ep_state *es = ep->st;
    struct proxy_cluster_state *st = ep->cluster ? ep->cluster->st : NULL;
    if (!es || !st || (st->pol.consecutive_5xx == 0 && st->pol.consecutive_gw == 0)) {
        return;
    }
    if (status < 500) {
        reset_errors(es);
        return;
    }
    unsigned n5 = atomic_fetch_add_explicit(&es->consecutive_5xx, 1, memory_order_relaxed) + 1;
    bool gw = status >= 502 && status <= 504;
    unsigned ng = 0;
    if (gw) {
        ng = atomic_fetch_add_explicit(&es->consecutive_gw, 1, memory_order_relaxed) + 1;
    } else if (atomic_load_explicit(&es->consecutive_gw, memory_order_relaxed)) {
        atomic_store_explicit(&es->consecutive_gw, 0, memory_order_relaxed);
    }
    if ((st->pol.consecutive_5xx && n5 >= st->pol.consecutive_5xx) ||
        (st->pol.consecutive_gw && gw && ng >= st->pol.consecutive_gw)) {
        eject(st, es, now_ms);
    }
}

bool proxy_endpoint_usable(struct proxy_endpoint *ep, uint64_t now_ms)
{
    if (atomic_load_explicit(&ep->naddrs, memory_order_relaxed) == 0) {
        return false;
    }
    struct proxy_ep_state *es = ep->st;
    if (!es) {
        return true;
    }
    if (atomic_load_explicit(&es->hc_failed, memory_order_relaxed)) {
        return false;
    }
    if (atomic_load_explicit(&es->ejected, memory_order_acquire)) {
        return readmit_if_due(ep->cluster->st, es, now_ms);
    }
    return true;
}

void proxy_outlier_sweep(struct proxy_rt *rt, uint64_t now_ms)
{
    for (size_t c = 0; rt && c < rt->nclusters; c++) {
        struct proxy_cluster_state *st = rt->clusters[c].st;
        for (size_t e = 0; st && e < st->neps; e++) {
            if (atomic_load_explicit(&st->eps[e].ejected, memory_order_acquire)) {
                (void)readmit_if_due(st, &st->eps[e], now_ms);
            }
        }
    }
}
