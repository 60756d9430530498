// SPDX-License-Identifier: Apache-2.0
// Active health checks: on the main loop, one checker per endpoint of each cluster with a
// health_check sends "GET <path>" every interval with the HTTP/1 client of net/h1client.h (a
// fresh connection, over the cluster's TLS when it originates TLS, Connection: close, the response
// head capped at 4 KiB and parsed by our strict parser); the status decides. unhealthy_threshold
// failures in a row take the endpoint out of load balancing, healthy_threshold passes bring it
// back. The results live in the endpoint's shared state (see proxy_policy.h), so a reload that
// restarts the checkers keeps them. Each check is bounded: one connection under the client's
// deadline, with its capped buffer. A cluster whose health_check has a `grpc` block calls
// grpc.health.v1.Health/Check over HTTP/2 instead (proxy_health_grpc.c): only SERVING passes; one
// with a `tcp` block connects and matches bytes instead (proxy_health_tcp.c).
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/h1client.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_policy.h"

#define HC_MAX_HEAD 4096

struct checker {
    struct sc_list node;
    struct proxy_rt *rt; /* a reference */
    struct proxy_cluster *c;
    struct proxy_endpoint *ep;
    uv_timer_t timer;                 /* the next check */
    struct sc_h1cli *cli;             /* the check in flight, or NULL */
    struct proxy_hc_grpc_call *gcall; /* the gRPC check in flight, or NULL */
    struct proxy_hc_tcp_call *tcall;  /* the TCP check in flight, or NULL */
    bool stopped;
    bool timer_closed;
};

static void check_start(struct checker *ck);

static void maybe_free(struct checker *ck)
{
    if (ck->stopped && ck->timer_closed && !ck->cli && !ck->gcall && !ck->tcall) {
        proxy_rt_unref(ck->rt);
        sc_free(ck);
    }
}

static void on_tick(uv_timer_t *t)
{
    check_start(t->data);
}

/* Schedules the next check one interval from now, remembered in the endpoint's state so that a
 * reload restarting the checkers keeps the pace instead of starting over. */
static void schedule_next(struct checker *ck)
{
    uint64_t interval = ck->c->st->pol.hc_interval_ms;
    ck->ep->st->hc_next_ms = uv_now(ck->timer.loop) + interval;
    uv_timer_start(&ck->timer, on_tick, interval, 0);
}

/* Applies one result to the endpoint's shared health state. */
static void record(struct checker *ck, bool ok, const char *why)
{
    const struct proxy_policy *p = &ck->c->st->pol;
    struct proxy_ep_state *es = ck->ep->st;
    bool failed = atomic_load(&es->hc_failed);
    if (ok) {
        es->hc_fail = 0;
        es->hc_ok++;
        if (failed && es->hc_ok >= p->hc_healthy) {
            atomic_store(&es->hc_failed, false);
            sc_metrics_gauge_add(ck->c->st->m_hc_unhealthy, -1);
            sc_info("health check passed; endpoint back in load balancing",
                    SC_LS("cluster", ck->c->name), SC_LS("endpoint", ck->ep->name));
        }
    } else {
        es->hc_ok = 0;
        es->hc_fail++;
        if (!failed && es->hc_fail >= p->hc_unhealthy) {
            atomic_store(&es->hc_failed, true);
            sc_metrics_gauge_add(ck->c->st->m_hc_unhealthy, 1);
            sc_warn("health check failed; endpoint out of load balancing",
                    SC_LS("cluster", ck->c->name), SC_LS("endpoint", ck->ep->name),
                    SC_LS("reason", why));
        } else {
            sc_debug("health check failed", SC_LS("cluster", ck->c->name),
                     SC_LS("endpoint", ck->ep->name), SC_LS("reason", why));
        }
    }
}

static bool expected(const struct proxy_policy *p, int status)
{
    for (size_t i = 0; i < p->hc_nranges; i++) {
        if (status >= p->hc_ranges[i][0] && status <= p->hc_ranges[i][1]) {
            return true;
        }
    }
    return false;
}

static void on_done(void *arg, const struct sc_h1cli_resp *r)
{
    struct checker *ck = arg;
    ck->cli = NULL;
    if (r->error) {
        record(ck, false, r->error == UV_ETIMEDOUT ? "timeout" : r->reason);
    } else {
        char why[48];
        snprintf(why, sizeof(why), "status %d", r->status);
        record(ck, expected(&ck->c->st->pol, r->status), why);
    }
    schedule_next(ck);
}

/* The verdict of a TCP or gRPC check (one of them is in flight at a time). */
static void on_verdict(void *arg, bool ok, const char *why)
{
    struct checker *ck = arg;
    ck->gcall = NULL;
    ck->tcall = NULL;
    record(ck, ok, why);
    schedule_next(ck);
}

static bool endpoint_address(struct proxy_endpoint *ep, struct sockaddr_storage *out)
{
    if (ep->dns) {
        uv_mutex_lock(&ep->mu);
    }
    int n = atomic_load(&ep->naddrs);
    if (n > 0) {
        *out = ep->addrs[0];
    }
    if (ep->dns) {
        uv_mutex_unlock(&ep->mu);
    }
    return n > 0;
}

/* The client's wrap hook: the cluster's TLS layer when it originates TLS. */
static struct sc_xport *wrap_cluster(void *arg, struct sc_xport *bottom)
{
    struct checker *ck = arg;
    return proxy_tls_cluster_layer(ck->ep, ck->timer.loop, bottom);
}

static void check_start(struct checker *ck)
{
    const struct proxy_policy *p = &ck->c->st->pol;
    struct sockaddr_storage ss;
    if (ck->stopped || ck->cli || ck->gcall || ck->tcall) {
        return;
    }
    if (!endpoint_address(ck->ep, &ss)) {
        /* A name not resolved yet: nothing to judge. */
        schedule_next(ck);
        return;
    }
    int rc;
    if (p->hc_tcp) {
        const struct proxy_hc_tcp_req t = {
            .spec = p->hc_tcp,
            .timeout_ms = p->hc_timeout_ms,
            .wrap = wrap_cluster,
            .wrap_arg = ck,
        };
        rc = proxy_hc_tcp_send(ck->timer.loop, (const struct sockaddr *)&ss, &t, on_verdict, ck,
                               &ck->tcall);
    } else if (p->hc_grpc) {
        const struct proxy_hc_grpc_req g = {
            .service = p->hc_grpc_service,
            .authority = p->hc_grpc_authority ? p->hc_grpc_authority
                         : p->hc_host         ? p->hc_host
                                              : ck->ep->name,
            .timeout_ms = p->hc_timeout_ms,
            .wrap = wrap_cluster,
            .wrap_arg = ck,
        };
        rc = proxy_hc_grpc_send(ck->timer.loop, (const struct sockaddr *)&ss, &g, on_verdict, ck,
                                &ck->gcall);
    } else {
        const struct sc_http_header hdrs[] = {
            { SC_STR("Host"), sc_str_c(p->hc_host ? p->hc_host : ck->ep->name) },
            { SC_STR("User-Agent"), SC_STR("sidecar-health-check") },
        };
        const struct sc_h1cli_req req = {
            .method = SC_STR("GET"),
            .target = sc_str_c(p->hc_path),
            .headers = hdrs,
            .nheaders = 2,
            .timeout_ms = p->hc_timeout_ms,
            .max_head = HC_MAX_HEAD,
            .head_only = true,
            .wrap = wrap_cluster,
            .wrap_arg = ck,
        };
        rc = sc_h1cli_send(ck->timer.loop, (const struct sockaddr *)&ss, &req, on_done, ck,
                           &ck->cli);
    }
    if (rc < 0) { /* the call is not stored: nothing in flight */
        record(ck, false, rc == SC_EINVAL ? "request cannot be written" : sc_strerror(rc));
        schedule_next(ck);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct checker *ck = h->data;
    ck->timer_closed = true;
    maybe_free(ck);
}

void proxy_health_start(struct proxy *px, struct proxy_rt *rt)
{
    for (size_t c = 0; c < rt->nclusters; c++) {
        struct proxy_cluster *cl = &rt->clusters[c];
        if (!cl->st || !cl->st->pol.hc || cl->original_dst) {
            continue;
        }
        uint64_t now = uv_now(sc_app_loop(px->app));
        for (size_t e = 0; e < cl->neps; e++) {
            struct proxy_endpoint *ep = &cl->eps[e];
            struct checker *ck = SC_NEW(struct checker);
            ck->rt = proxy_rt_ref(rt);
            ck->c = cl;
            ck->ep = ep;
            uv_timer_init(sc_app_loop(px->app), &ck->timer);
            ck->timer.data = ck;
            sc_list_append(&px->checkers, &ck->node);
            /* A state never checked is checked at once; a kept one when its next check is due. */
            uint64_t next = ep->st->hc_next_ms;
            uv_timer_start(&ck->timer, on_tick, next > now ? next - now : 0, 0);
        }
    }
}

void proxy_health_stop(struct proxy *px)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &px->checkers)
    {
        struct checker *ck = sc_list_entry(pos, struct checker, node);
        sc_list_remove(&ck->node);
        ck->stopped = true;
        sc_h1cli_cancel(ck->cli);
        ck->cli = NULL;
        proxy_hc_grpc_cancel(ck->gcall);
        ck->gcall = NULL;
        proxy_hc_tcp_cancel(ck->tcall);
        ck->tcall = NULL;
        uv_close((uv_handle_t *)&ck->timer, on_timer_closed);
    }
}
