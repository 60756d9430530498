// SPDX-License-Identifier: Apache-2.0
// `sidecar webhook`: the mutating admission webhook. It serves POST /inject (AdmissionReview v1,
// see webhook_review.c) with /healthz, /ready and /metrics on its listener, and counts each
// review (sidecar_webhook_requests_total{result}) and its latency. The listener is a pluggable
// server: plain HTTP on the admin server's HTTP/1 code today; HTTPS (which the API server
// requires) plugs in as another server once the TLS layer (net/tls) exists, and until then
// --tls-cert/--tls-key are refused at start with that reason rather than served in plaintext.
// Invariant: request bodies are capped (1 MiB by the server), every request gets an answer.
#include "roles/inject/webhook.h"

#include <string.h>
#include <time.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"

struct webhook_cfg {
    char *listen;
    char *tls_cert;
    char *tls_key;
    struct inject_front front;
};

/* The server the webhook's routes are served on: plain HTTP (the admin server's code, for tests
 * and behind a TLS-terminating proxy) or HTTPS (webhook_https.c, what the API server needs). */
struct webhook_server {
    const char *name;
    void (*handle)(void *srv, const char *method, const char *path, sc_admin_handler_cb cb,
                   void *arg);
    int (*listen)(void *srv, const char *addr, char **err);
    int (*address)(void *srv, char *out, size_t outlen);
    void (*close)(void *srv);
};

struct webhook {
    struct sc_app *app;
    struct inject_opts opts;
    void *server;
    const struct webhook_server *srv;
    struct sc_metric_family *requests;
    struct sc_metric *latency;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void h_inject(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct webhook *w = arg;
    double t0 = now_s();
    const char *result = "error";
    resp->status = webhook_review(&w->opts, req->body.p ? req->body.p : "", req->body.len,
                                  &resp->body, &result);
    resp->content_type = resp->status == 200 ? "application/json" : "text/plain; charset=utf-8";
    const char *labels[] = { result };
    sc_metrics_counter_inc(sc_metrics_get(w->requests, labels));
    sc_metrics_histogram_observe(w->latency, now_s() - t0);
    if (resp->status != 200) {
        sc_warn("admission review refused", SC_LI("status", resp->status),
                SC_LSN("reason", resp->body.p, resp->body.len > 200 ? 200 : resp->body.len));
    }
}

static void h_health(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct webhook *w = arg;
    (void)req;
    if (sc_app_draining(w->app)) {
        resp->status = 503;
        sc_buf_append_cstr(&resp->body, "draining\n");
        return;
    }
    sc_buf_append_cstr(&resp->body, "ok\n");
}

static void h_metrics(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct webhook *w = arg;
    (void)req;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (sc_metrics_render(sc_app_metrics(w->app), &resp->body) < 0) {
        resp->status = 500;
        sc_buf_reset(&resp->body);
        sc_buf_append_cstr(&resp->body, "metrics exposition too large\n");
    }
}

static void plain_handle(void *srv, const char *method, const char *path, sc_admin_handler_cb cb,
                         void *arg)
{
    sc_admin_handle(srv, method, path, cb, arg);
}

static int plain_listen(void *srv, const char *addr, char **err)
{
    return sc_admin_listen(srv, addr, err);
}

static int plain_address(void *srv, char *out, size_t outlen)
{
    return sc_admin_address(srv, out, outlen);
}

static void plain_close(void *srv)
{
    sc_admin_close(srv);
}

static const struct webhook_server plain_server = { "http", plain_handle, plain_listen,
                                                    plain_address, plain_close };

static void https_handle(void *srv, const char *method, const char *path, sc_admin_handler_cb cb,
                         void *arg)
{
    webhook_https_handle(srv, method, path, cb, arg);
}

static int https_listen(void *srv, const char *addr, char **err)
{
    return webhook_https_listen(srv, addr, err);
}

static int https_address(void *srv, char *out, size_t outlen)
{
    return webhook_https_address(srv, out, outlen);
}

static void https_close(void *srv)
{
    webhook_https_close(srv);
}

static const struct webhook_server https_server = { "https", https_handle, https_listen,
                                                    https_address, https_close };

static int webhook_check(const void *cfgp, char **err)
{
    const struct webhook_cfg *cfg = cfgp;
    if (!cfg->tls_cert != !cfg->tls_key) {
        *err = sc_asprintf("--tls-cert and --tls-key go together");
        return SC_ECONFIG;
    }
    return inject_front_check(&cfg->front, err);
}

static int webhook_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    /* The config block is ours until cleanup: --mesh-config loads on top of it. */
    struct webhook_cfg *cfg = (struct webhook_cfg *)cfgp;
    struct inject_opts opts;
    if (inject_front_load(&cfg->front, &opts, err) < 0) {
        return SC_ECONFIG;
    }
    struct webhook *w = sc_calloc(1, sizeof(*w));
    w->app = app;
    w->opts = opts;
    static const char *const labels[] = { "result", NULL };
    static const double buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,   0.25,   0.5,   1,    2.5 };
    struct sc_metrics *m = sc_app_metrics(app);
    w->requests = sc_metrics_family(m, SC_METRIC_COUNTER, "sidecar_webhook_requests_total",
                                    "admission reviews answered, by result (injected, skipped, "
                                    "denied, invalid, error)",
                                    labels, NULL, 0);
    struct sc_metric_family *lat = sc_metrics_family(
        m, SC_METRIC_HISTOGRAM, "sidecar_webhook_request_duration_seconds",
        "time to answer one admission review", NULL, buckets, SC_ARRAY_LEN(buckets));
    w->latency = sc_metrics_get(lat, NULL);
    int rc = 0;
    if (cfg->tls_cert) {
        w->srv = &https_server;
        w->server = webhook_https_new(sc_app_loop(app), cfg->tls_cert, cfg->tls_key, err);
        if (!w->server) {
            rc = SC_ECONFIG;
            goto fail;
        }
    } else {
        w->srv = &plain_server;
        w->server = sc_admin_new(sc_app_loop(app));
    }
    w->srv->handle(w->server, "POST", "/inject", h_inject, w);
    w->srv->handle(w->server, "GET", "/healthz", h_health, w);
    w->srv->handle(w->server, "GET", "/ready", h_health, w);
    w->srv->handle(w->server, "GET", "/metrics", h_metrics, w);
    rc = w->srv->listen(w->server, cfg->listen, err);
    if (rc < 0) {
        goto fail;
    }
    char bound[80];
    if (w->srv->address(w->server, bound, sizeof(bound)) == 0) {
        sc_info("webhook listening", SC_LS("address", bound), SC_LS("server", w->srv->name));
    }
    if (!cfg->tls_cert) {
        sc_warn("serving admission reviews over plain HTTP: the API server calls webhooks over "
                "HTTPS only (--tls-cert and --tls-key)");
    }
    sc_app_set_ready(app, true);
    *state = w;
    return 0;
fail:
    if (w->server) {
        w->srv->close(w->server);
    }
    sc_free(w);
    return rc;
}

static void webhook_stop(struct sc_app *app, void *state, bool now)
{
    struct webhook *w = state;
    (void)now;
    if (w->server) {
        w->srv->close(w->server);
        w->server = NULL;
    }
    sc_app_stopped(app, 0);
}

static void webhook_cleanup(void *state)
{
    struct webhook *w = state;
    sc_free(w);
}

static const struct sc_opt webhook_opts[] = {
    { .name = "listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct webhook_cfg, listen),
      .def = "0.0.0.0:9443",
      .help = "address of POST /inject (with /healthz, /ready, /metrics)",
      .flags = SC_OPT_FLAG,
      .check = sc_addr_check },
    { .name = "tls_cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct webhook_cfg, tls_cert),
      .help = "serving certificate (PEM, chain allowed): HTTPS, reloaded when the file changes; "
              "without it the webhook serves plain HTTP",
      .flags = SC_OPT_FLAG },
    { .name = "tls_key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct webhook_cfg, tls_key),
      .help = "the certificate's private key (PEM); see tls_cert",
      .flags = SC_OPT_FLAG | SC_OPT_SECRET },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct webhook_cfg, front),
      .sub = inject_front_opts },
    { 0 },
};

const struct sc_role sc_role_webhook = {
    .name = "webhook",
    .summary = "mutating admission webhook: AdmissionReview in, sidecar-injecting JSONPatch out",
    .opts = webhook_opts,
    .cfg_size = sizeof(struct webhook_cfg),
    .admin_default = "127.0.0.1:15040",
    .check = webhook_check,
    .start = webhook_start,
    .stop = webhook_stop,
    .cleanup = webhook_cleanup,
};
