// SPDX-License-Identifier: Apache-2.0
// `sidecar proxy`: the role's entry point. It builds the runtime snapshot from the config, binds
// every listener on every worker before reporting ready, runs worker 0 on the app's loop and the
// others on their own threads and loops (SO_REUSEPORT spreads connections), and turns the app's
// stop and reload into messages each worker handles on its own loop. Workers share nothing but the
// immutable snapshot (reference counted) and the atomic metrics.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_front.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_probe.h"

static void on_done_async(uv_async_t *a);
static void h_drain(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp);

static void on_worker_async(uv_async_t *a)
{
    proxy_worker_poll(a->data);
}

static void on_worker_async_closed(uv_handle_t *h)
{
    (void)h;
}

void proxy_worker_done(struct proxy_worker *w)
{
    struct proxy *px = w->px;
    atomic_fetch_add(&px->workers_done, 1);
    if (w->id == 0) {
        on_done_async(&px->done_async);
    } else {
        uv_close((uv_handle_t *)&w->async, on_worker_async_closed);
        uv_async_send(&px->done_async);
    }
}

static void on_done_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_traces_flushed(void *arg)
{
    struct proxy *px = arg;
    proxy_tracer_close(px->tracer);
    px->tracer = NULL;
    sc_app_stopped(px->app, 0);
}

static void on_done_async(uv_async_t *a)
{
    struct proxy *px = a->data;
    /* After POST /drain the workers finish without the process exiting: that waits for stop. */
    if (px->stopped || !px->stopping || atomic_load(&px->workers_done) < px->nworkers) {
        return;
    }
    px->stopped = true;
    uv_close((uv_handle_t *)&px->done_async, on_done_closed);
    sc_admin_close(px->status);
    px->status = NULL;
    if (px->tracer) {
        /* The spans of the last requests go out (within one export timeout) before the exit. */
        proxy_tracer_flush(px->tracer, on_traces_flushed, px);
        return;
    }
    sc_app_stopped(px->app, 0);
}

static void worker_thread(void *arg)
{
    struct proxy_worker *w = arg;
    uv_run(w->loop, UV_RUN_DEFAULT);
}

static void init_metrics(struct proxy *px)
{
    struct proxy_metrics *pm = &px->pm;
    pm->reg = sc_app_metrics(px->app);
    static const char *const req_labels[] = { "listener", "route", "cluster", "code", NULL };
    static const char *const l_labels[] = { "listener", NULL };
    static const char *const c_labels[] = { "cluster", NULL };
    pm->requests = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_requests_total",
                                     "Requests answered, by listener, route, cluster and status "
                                     "code (0: the client went away first).",
                                     req_labels, NULL, 0);
    pm->duration = sc_metrics_family(
        pm->reg, SC_METRIC_HISTOGRAM, "sidecar_request_duration_seconds",
        "Time from the request head to the end of the response.", l_labels, NULL, 0);
    pm->retry = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_rq_retry_total",
                                  "Retries sent to the cluster.", c_labels, NULL, 0);
    pm->ucx_active = sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "sidecar_upstream_cx_active",
                                       "Open upstream connections.", c_labels, NULL, 0);
    pm->dcx_active = sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "sidecar_downstream_cx_active",
                                       "Open client connections.", l_labels, NULL, 0);
    pm->timeout = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_rq_timeout_total",
                                    "Upstream tries that timed out (per-try or route timeout).",
                                    c_labels, NULL, 0);
    struct sc_metric_family *dropped = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_access_log_dropped_total",
        "Access-log lines dropped because stdout's reader did not keep up (or went away).", NULL,
        NULL, 0);
    pm->log_dropped = sc_metrics_get(dropped, NULL);
    proxy_policy_metrics_init(pm);
    proxy_tls_metrics_init(pm);
    proxy_h2_metrics_init(pm);
    pm->authz = proxy_authz_metrics(pm->reg);
    proxy_tcp_metrics_init(pm);
    proxy_h2_up_metrics_init(pm);
    proxy_grpc_metrics_init(pm);
    proxy_cors_metrics_init(pm);
    static const char *const lr_labels[] = { "listener", "route", NULL };
    pm->rate_limited =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_rq_rate_limited_total",
                          "Requests refused by a local rate limit (429), by listener "
                          "and route (empty route: the listener's limit).",
                          lr_labels, NULL, 0);
    pm->mirror =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_mirror_rq_total",
                          "Request copies sent to a mirror (shadow) cluster.", c_labels, NULL, 0);
    pm->mirror_dropped = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_mirror_rq_dropped_total",
        "Request copies not sent or cut short: too many in flight, body past retry_buffer, no "
        "endpoint, connect failure.",
        c_labels, NULL, 0);
}

/* Ends the outlier ejections whose time is up before /metrics reports them. */
static void on_collect(struct sc_metrics *r, void *arg)
{
    struct proxy *px = arg;
    (void)r;
    proxy_outlier_sweep(px->rt, uv_now(sc_app_loop(px->app)));
    proxy_tls_collect(&px->pm);
    proxy_oidc_collect();
}

static void proxy_free(struct proxy *px)
{
    if (!px) {
        return;
    }
    for (int i = 0; i < px->nworkers; i++) {
        struct proxy_worker *w = &px->workers[i];
        proxy_worker_cleanup(w);
        proxy_rt_unref(atomic_exchange(&w->pending_rt, NULL));
        proxy_rt_unref(w->rt);
        if (i > 0 && w->loop) {
            if (uv_loop_close(w->loop) == UV_EBUSY) {
                sc_warn("worker loop still has handles", SC_LI("worker", i));
            }
        }
    }
    proxy_rt_unref(px->rt);
    proxy_tls_shutdown(); /* after the last snapshot let go of its stores */
    proxy_jwks_cleanup(); /* and of its key sets */
    proxy_oidc_cleanup();
    sc_admin_close(px->status);
    proxy_probe_stop();
    proxy_log_close(px);
    sc_free(px->workers);
    sc_free(px);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

/* The status port, when configured: /healthz and /ready as on the admin port, and (registered
 * by proxy_probe_start) the app's rewritten probes. */
static int status_start(struct proxy *px, const struct proxy_cfg *cfg, char **err)
{
    const char *addr = cfg->status.listen;
    if (!addr || !*addr) {
        return 0;
    }
    px->status = sc_admin_new(sc_app_loop(px->app));
    sc_app_serve_health(px->app, px->status);
    char *why = NULL;
    if (sc_admin_listen(px->status, addr, &why) < 0) {
        *err = sc_asprintf("status_listen %s: %s", addr, why ? why : "cannot listen");
        sc_free(why);
        return SC_ECONFIG;
    }
    char bound[80];
    if (sc_admin_address(px->status, bound, sizeof(bound)) == 0) {
        sc_info("status listening", SC_LS("address", bound));
    }
    return 0;
}

static int proxy_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    const struct proxy_cfg *cfg = cfgp;
    struct proxy *px = SC_NEW(struct proxy);
    px->app = app;
    sc_list_init(&px->resolvers);
    sc_list_init(&px->checkers);
    init_metrics(px);
    proxy_log_open(px);
    px->nworkers = proxy_cfg_workers(cfg);
    if (status_start(px, cfg, err) < 0 ||
        proxy_probe_start(px->status ? px->status : sc_app_admin(app), sc_app_loop(app), err) < 0) {
        px->nworkers = 0;
        proxy_free(px);
        return SC_ECONFIG;
    }
    px->rt = proxy_rt_new(cfg, px->nworkers, &px->pm, err);
    if (!px->rt) {
        px->nworkers = 0;
        proxy_free(px);
        return SC_ECONFIG;
    }
    proxy_trace_setup(px, px->rt, cfg);
    px->workers = sc_calloc((size_t)px->nworkers, sizeof(*px->workers));
    int started = 0;
    int rc = 0;
    for (int i = 0; i < px->nworkers; i++) {
        px->workers[i].px = px;
        px->workers[i].id = i;
        proxy_worker_init(&px->workers[i]);
    }
    for (int i = 0; i < px->nworkers; i++) {
        struct proxy_worker *w = &px->workers[i];
        w->rt = proxy_rt_ref(px->rt);
        if (i == 0) {
            w->loop = sc_app_loop(app);
        } else {
            uv_loop_init(&w->own_loop);
            w->loop = &w->own_loop;
            uv_async_init(w->loop, &w->async, on_worker_async);
            w->async.data = w;
        }
        rc = proxy_worker_listen(w, err);
        if (rc < 0) {
            break;
        }
    }
    uv_async_init(sc_app_loop(app), &px->done_async, on_done_async);
    px->done_async.data = px;
    if (rc < 0) {
        /* Nothing runs yet: close every handle of the extra loops and of worker 0. */
        for (int i = 0; i < px->nworkers; i++) {
            struct proxy_worker *w = &px->workers[i];
            if (i > 0 && w->loop) {
                uv_walk(w->loop, walk_close, NULL);
                uv_run(w->loop, UV_RUN_DEFAULT);
            } else {
                if (w->logcheck.loop) {
                    uv_close((uv_handle_t *)&w->logcheck, NULL);
                    uv_close((uv_handle_t *)&w->spin, NULL);
                }
                if (w->logtimer.loop) {
                    uv_close((uv_handle_t *)&w->logtimer, NULL);
                }
                for (size_t l = 0; l < w->nlisteners; l++) {
                    if (w->listeners[l].loop && !uv_is_closing((uv_handle_t *)&w->listeners[l])) {
                        uv_close((uv_handle_t *)&w->listeners[l], NULL);
                    }
                }
            }
        }
        uv_close((uv_handle_t *)&px->done_async, NULL);
        proxy_tracer_close(px->tracer);
        uv_run(sc_app_loop(app), UV_RUN_NOWAIT);
        proxy_free(px);
        return rc;
    }
    for (int i = 1; i < px->nworkers; i++) {
        uv_thread_create(&px->workers[i].thread, worker_thread, &px->workers[i]);
        started++;
    }
    proxy_dns_start(px, px->rt);
    proxy_health_start(px, px->rt);
    proxy_tls_watch(px);
    proxy_jwks_start(sc_app_loop(app));
    proxy_oidc_start(sc_app_loop(app));
    sc_metrics_on_collect(px->pm.reg, on_collect, px);
    for (size_t i = 0; i < px->rt->nlisteners; i++) {
        sc_info("listening", SC_LS("listener", px->rt->listeners[i].name),
                SC_LS("address", px->rt->listeners[i].address), SC_LI("workers", px->nworkers));
    }
    if (sc_app_admin(app)) {
        sc_admin_handle(sc_app_admin(app), "POST", "/drain", h_drain, px);
    }
    sc_app_set_ready(app, true);
    *state = px;
    return 0;
}

static void poll_worker(struct proxy_worker *w)
{
    if (w->id == 0) {
        proxy_worker_poll(w);
    } else if (!atomic_load(&w->done)) {
        uv_async_send(&w->async);
    }
}

static void drain_workers(struct proxy *px, bool now)
{
    for (int i = 0; i < px->nworkers; i++) {
        struct proxy_worker *w = &px->workers[i];
        atomic_store(&w->stop_requested, true);
        if (now) {
            atomic_store(&w->stop_now, true);
        }
        poll_worker(w);
    }
}

static void proxy_stop(struct sc_app *app, void *state, bool now)
{
    struct proxy *px = state;
    if (!px->stopping) {
        px->stopping = true;
        proxy_dns_stop(px);
        proxy_health_stop(px);
        proxy_oidc_stop();
        proxy_jwks_stop();
    }
    sc_app_set_ready(app, false);
    drain_workers(px, now);
    on_done_async(&px->done_async); /* the workers may have finished already (POST /drain) */
}

/* POST /drain: stop accepting, close idle connections, answer in-flight requests with
 * Connection: close, and report not ready, without exiting (SIGTERM or /quitquitquit does). */
static void h_drain(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct proxy *px = arg;
    (void)req;
    sc_info("drain requested", SC_LS("via", "/drain"));
    sc_app_set_ready(px->app, false);
    drain_workers(px, false);
    sc_buf_append_cstr(&resp->body, "draining\n");
}

/* Gives DNS endpoints of a new snapshot the addresses the same endpoint (same cluster and name)
 * had in the old one, so a reload never leaves a gap with no address while names re-resolve. */
static void carry_dns(struct proxy_rt *nrt, struct proxy_rt *ort)
{
    for (size_t c = 0; c < nrt->nclusters; c++) {
        struct proxy_cluster *nc = &nrt->clusters[c];
        struct proxy_cluster *oc = proxy_rt_cluster(ort, nc->name);
        for (size_t e = 0; oc && e < nc->neps; e++) {
            struct proxy_endpoint *ne = &nc->eps[e];
            for (size_t k = 0; ne->dns && k < oc->neps; k++) {
                struct proxy_endpoint *oe = &oc->eps[k];
                if (!oe->dns || strcmp(oe->name, ne->name) != 0) {
                    continue;
                }
                uv_mutex_lock(&oe->mu);
                int n = atomic_load(&oe->naddrs);
                memcpy(ne->addrs, oe->addrs, sizeof(ne->addrs[0]) * (size_t)n);
                atomic_store(&ne->naddrs, n);
                uv_mutex_unlock(&oe->mu);
                break;
            }
        }
    }
}

static int proxy_reload(struct sc_app *app, void *state, const void *cfgp, char **err)
{
    struct proxy *px = state;
    const struct proxy_cfg *cfg = cfgp;
    (void)app;
    /* workers, the listeners' number, names and addresses, and status_listen are SC_OPT_RESTART:
     * the app checked them. */
    struct proxy_rt *nrt = proxy_rt_new(cfg, px->nworkers, &px->pm, err);
    if (!nrt) {
        return SC_ECONFIG;
    }
    if (px->stopping) {
        proxy_rt_unref(nrt);
        return 0;
    }
    proxy_trace_setup(px, nrt, cfg);
    carry_dns(nrt, px->rt);
    proxy_policy_carry(nrt, px->rt);
    proxy_dns_stop(px);
    proxy_dns_start(px, nrt);
    proxy_health_stop(px);
    proxy_health_start(px, nrt);
    for (int i = 0; i < px->nworkers; i++) {
        struct proxy_worker *w = &px->workers[i];
        proxy_rt_unref(atomic_exchange(&w->pending_rt, proxy_rt_ref(nrt)));
        poll_worker(w);
    }
    proxy_rt_unref(px->rt);
    px->rt = nrt;
    proxy_tls_watch(px);
    proxy_jwks_start(sc_app_loop(px->app));
    proxy_oidc_start(sc_app_loop(px->app));
    return 0;
}

static void proxy_cleanup(void *state)
{
    struct proxy *px = state;
    for (int i = 1; i < px->nworkers; i++) {
        uv_thread_join(&px->workers[i].thread);
    }
    proxy_free(px);
}

static const char proxy_usage[] =
    "Quick start: sidecar proxy --listen 0.0.0.0:9001 --upstream 127.0.0.1:8080 [--retries 3]\n"
    "With -c FILE: listeners -> routes -> clusters; POST /drain on the admin port stops\n"
    "accepting and closes keep-alive connections without exiting.";

const struct sc_role sc_role_proxy = {
    .name = "proxy",
    .summary = "HTTP/1.1 proxy: listeners, routes, clusters, retries, timeouts, pooling",
    .usage = proxy_usage,
    .opts = proxy_opts,
    .cfg_size = sizeof(struct proxy_cfg),
    .admin_default = "127.0.0.1:15000",
    .check = proxy_config_check,
    .start = proxy_start,
    .stop = proxy_stop,
    .reload = proxy_reload,
    .cleanup = proxy_cleanup,
    .dump = proxy_config_dump,
    .load_file = proxy_front_load,
};
