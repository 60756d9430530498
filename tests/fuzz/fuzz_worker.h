// SPDX-License-Identifier: Apache-2.0
// One proxy worker running in-process on a libuv loop, for the fuzz targets that drive a whole
// worker (fuzz_proxy.c, fuzz_proxy_h2_up.c): the app-runtime functions the proxy files call, and
// the worker's start with a checked configuration and the metric families its data path uses.
#ifndef SC_FUZZ_WORKER_H
#define SC_FUZZ_WORKER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/metrics.h"
#include "net/tcp.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_h2.h"

static uv_loop_t *fuzz_worker_loop;

/* The app-runtime functions the proxy files use, for a harness that runs without the app. */
uv_loop_t *sc_app_loop(struct sc_app *app)
{
    (void)app;
    return fuzz_worker_loop;
}

void proxy_worker_done(struct proxy_worker *w)
{
    (void)w;
}

/* Starts worker 0 of <px> on <loop> with the checked <cfg>, listening on its first listener's
 * address; returns it and sets <port> to the port it listens on. Any failure aborts. */
static struct proxy_worker *fuzz_worker_start(struct proxy *px, uv_loop_t *loop,
                                              const struct proxy_cfg *cfg, int *port)
{
    char *err = NULL;
    fuzz_worker_loop = loop;
    px->pm.reg = sc_metrics_new();
    static const char *const rl[] = { "listener", "route", "cluster", "code", NULL };
    static const char *const ll[] = { "listener", NULL };
    static const char *const cl[] = { "cluster", NULL };
    px->pm.requests = sc_metrics_family(px->pm.reg, SC_METRIC_COUNTER, "r", "r", rl, NULL, 0);
    px->pm.duration = sc_metrics_family(px->pm.reg, SC_METRIC_HISTOGRAM, "d", "d", ll, NULL, 0);
    px->pm.retry = sc_metrics_family(px->pm.reg, SC_METRIC_COUNTER, "x", "x", cl, NULL, 0);
    px->pm.ucx_active = sc_metrics_family(px->pm.reg, SC_METRIC_GAUGE, "u", "u", cl, NULL, 0);
    px->pm.dcx_active = sc_metrics_family(px->pm.reg, SC_METRIC_GAUGE, "c", "c", ll, NULL, 0);
    px->pm.timeout = sc_metrics_family(px->pm.reg, SC_METRIC_COUNTER, "t", "t", cl, NULL, 0);
    proxy_h2_up_metrics_init(&px->pm);
    proxy_h2_metrics_init(&px->pm);
    proxy_log_open(px);
    px->nworkers = 1;
    px->workers = sc_calloc(1, sizeof(*px->workers));
    struct proxy_worker *w = &px->workers[0];
    w->px = px;
    w->id = 0;
    proxy_worker_init(w);
    w->loop = loop;
    w->rt = proxy_rt_new(cfg, 1, &px->pm, &err);
    char paddr[64];
    if (w->rt == NULL || proxy_worker_listen(w, &err) != 0 ||
        sc_tcp_local_address(&w->listeners[0], paddr, sizeof(paddr)) != 0) {
        fprintf(stderr, "fuzz worker: %s\n", err ? err : "cannot start");
        abort();
    }
    *port = (int)strtol(strrchr(paddr, ':') + 1, NULL, 10);
    return w;
}

#endif
