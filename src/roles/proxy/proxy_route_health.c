// SPDX-License-Identifier: Apache-2.0
// Routes that answer health checks (a route's `health_endpoint`, what Envoy's health_check HTTP
// filter does): the proxy answers 200, or 503 (flag LH) while it drains or when one of the
// min_healthy clusters has fewer healthy endpoints than its percent of all (an empty cluster
// fails unless its percent is 0); healthy is neither failing its active health checks nor
// ejected by outlier detection. A pass_through endpoint answers 503 only while draining and
// otherwise lets the request go on to the next matching route (the app answers). Invariant: the
// answer reads shared endpoint state only (atomics), never blocks, and has no body.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_policy.h"
#include "roles/proxy/proxy_route_policy.h"

static const struct sc_opt min_healthy_opts[] = {
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_min_healthy_cfg, cluster),
      .help = "a cluster of this configuration",
      .flags = SC_OPT_REQUIRED },
    { .name = "percent",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_min_healthy_cfg, percent),
      .help = "the share of its endpoints (0 to 100) that must be healthy for a 200",
      .flags = SC_OPT_REQUIRED },
    { 0 },
};

const struct sc_opt proxy_health_ep_opts[] = {
    { .name = "pass_through",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_health_ep_cfg, pass_through),
      .def = "false",
      .help = "forward matching requests to the next matching route (the app answers) and "
              "answer 503 only while draining" },
    { .name = "min_healthy",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_health_ep_cfg, min_healthy),
      .help = "clusters whose healthy share must reach percent, else 503",
      .max = 64,
      .sub = min_healthy_opts,
      .sub_size = sizeof(struct proxy_min_healthy_cfg) },
    { 0 },
};

int proxy_health_ep_mark(void *field, char **err)
{
    (void)err;
    *(bool *)field = true;
    return 0;
}

int proxy_health_ep_check(const struct proxy_cfg *c, const struct proxy_route_cfg *rc,
                          const char *where, char **err)
{
    const struct proxy_health_ep_cfg *h = &rc->health_endpoint;
    const struct proxy_min_healthy_cfg *m = h->min_healthy.v;
    if (h->pass_through && h->min_healthy.n) {
        *err = sc_asprintf("%s: health_endpoint min_healthy applies to the answers the proxy "
                           "gives, not with pass_through (the app answers)",
                           where);
        return SC_ECONFIG;
    }
    const struct proxy_cluster_cfg *cl = c->clusters.v;
    for (size_t i = 0; i < h->min_healthy.n; i++) {
        if (!(m[i].percent >= 0 && m[i].percent <= 100)) {
            *err = sc_asprintf("%s: health_endpoint min_healthy[%zu] percent is not 0 to 100",
                               where, i);
            return SC_ECONFIG;
        }
        bool known = false;
        for (size_t k = 0; k < c->clusters.n && !known; k++) {
            known = strcmp(cl[k].name, m[i].cluster) == 0;
        }
        if (!known) {
            *err = sc_asprintf("%s: health_endpoint min_healthy[%zu]: unknown cluster \"%s\"",
                               where, i, m[i].cluster);
            return SC_ECONFIG;
        }
    }
    return 0;
}

int proxy_health_ep_status(const struct proxy_exch *r, const struct sc_vec *min_healthy)
{
    if (r->w->draining) {
        return 503;
    }
    const struct proxy_min_healthy_cfg *m = min_healthy->v;
    for (size_t i = 0; i < min_healthy->n; i++) {
        const struct proxy_cluster *c = NULL;
        for (size_t k = 0; k < r->rt->nclusters && !c; k++) {
            c = strcmp(r->rt->clusters[k].name, m[i].cluster) == 0 ? &r->rt->clusters[k] : NULL;
        }
        size_t total = c ? c->neps : 0, healthy = 0;
        for (size_t e = 0; e < total; e++) {
            const struct proxy_ep_state *es = c->eps[e].st;
            healthy += !es || (!atomic_load_explicit(&es->hc_failed, memory_order_relaxed) &&
                               !atomic_load_explicit(&es->ejected, memory_order_relaxed));
        }
        if (total == 0 ? m[i].percent > 0 : (double)healthy < (double)total * m[i].percent / 100) {
            return 503;
        }
    }
    return 200;
}
