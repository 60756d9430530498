// SPDX-License-Identifier: Apache-2.0
// A DestinationRule's traffic policy for one cluster (see proxy_front.h): Istio makes one cluster
// per host, port and subset, and so does the translation. The policy of a cluster is resolved
// field group by field group (loadBalancer, connectionPool, outlierDetection, tls) with Istio's
// precedence: trafficPolicy.portLevelSettings for the cluster's port replace the top level's four
// groups as a whole (a group the port entry omits takes its default, not the top level's); a
// subset's own policy (with its own portLevelSettings resolved the same way) overrides the
// result group by group; a subset's matching port entry replaces all four groups. Invariant:
// every policy of the rule is checked, also those no route uses, so an error in one is never
// silent.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_front.h"

enum { G_LB, G_CP, G_OD, G_TLS, G_N };
static const char *const group_names[G_N] = { "loadBalancer", "connectionPool", "outlierDetection",
                                              "tls" };

/* The four groups of one resolved policy: where each comes from (NULL: the default) and the
 * path of the policy that holds it, for messages. */
struct policy {
    const struct sc_ynode *g[G_N];
    char path[G_N][PROXY_FRONT_PATH];
};

/* loadBalancer: simple (ROUND_ROBIN, LEAST_REQUEST, RANDOM) or consistentHash. */
static void load_balancer(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *lb,
                          const char *path)
{
    static const char *const lb_keys[] = { "simple", "consistentHash", NULL };
    static const char *const lb_noted[] = { "localityLbSetting", "warmupDurationSecs", NULL };
    if (proxy_front_keys(f, lb, path, lb_keys, lb_noted) == 0) {
        const char *s = proxy_front_str(f, lb, "simple", path);
        if (s && sc_ynode_get(lb, "consistentHash")) {
            proxy_front_refuse(f, lb, path, "use one of simple and consistentHash");
            return;
        }
        proxy_istio_consistent_hash(f, c, sc_ynode_get(lb, "consistentHash"), path);
        static const struct proxy_front_enum simple[] = { { "UNSPECIFIED", NULL },
                                                          { "ROUND_ROBIN", "round_robin" },
                                                          { "LEAST_REQUEST", "least_request" },
                                                          { "LEAST_CONN", "least_request" },
                                                          { "RANDOM", "round_robin" },
                                                          { NULL, NULL } };
        const struct sc_ynode *at = sc_ynode_get(lb, "simple");
        const struct proxy_front_enum *e =
            proxy_front_enum(f, lb, "simple", path, "loadBalancer.simple", simple);
        if (e && e->ours) {
            proxy_front_put(f, c, "lb_policy", at, e->ours);
        }
        if (e && strcmp(e->name, "RANDOM") == 0) {
            proxy_front_note(f, at, path, "RANDOM is served by round_robin (the same spread)");
        }
    }
}

/* connectionPool.http.h2UpgradePolicy (the mesh-wide one too): UPGRADE speaks HTTP/2. */
const struct proxy_front_enum proxy_istio_h2_upgrade[] = {
    { "DEFAULT", NULL }, { "DO_NOT_UPGRADE", NULL }, { "UPGRADE", "http2" }, { NULL, NULL }
};

/* connectionPool: tcp and http limits as circuit_breakers, timeouts, HTTP/2 upstream. */
static void connection_pool(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *cp,
                            const char *path)
{
    static const char *const cp_keys[] = { "tcp", "http", NULL };
    if (proxy_front_keys(f, cp, path, cp_keys, NULL) == 0) {
        struct sc_ynode *cb = proxy_front_map(f, cp);
        const struct sc_ynode *tcp = sc_ynode_get(cp, "tcp");
        static const char *const tcp_keys[] = { "maxConnections", "connectTimeout", NULL };
        static const char *const tcp_noted[] = { "tcpKeepalive", "maxConnectionDuration",
                                                 "idleTimeout", NULL };
        if (proxy_front_keys(f, tcp, path, tcp_keys, tcp_noted) == 0) {
            proxy_front_copy(f, cb, "max_connections", tcp, "maxConnections");
            proxy_front_put_duration(f, c, "connect_timeout", tcp, "connectTimeout", path, NULL);
        }
        const struct sc_ynode *http = sc_ynode_get(cp, "http");
        static const char *const http_keys[] = { "http1MaxPendingRequests",
                                                 "http2MaxRequests",
                                                 "maxRetries",
                                                 "idleTimeout",
                                                 "maxRequestsPerConnection",
                                                 "h2UpgradePolicy",
                                                 "useClientProtocol",
                                                 "maxConcurrentStreams",
                                                 NULL };
        if (proxy_front_keys(f, http, path, http_keys, NULL) == 0) {
            proxy_front_copy(f, cb, "max_pending_requests", http, "http1MaxPendingRequests");
            proxy_front_copy(f, cb, "max_requests", http, "http2MaxRequests");
            proxy_front_copy(f, cb, "max_retries", http, "maxRetries");
            proxy_front_put_duration(f, c, "idle_timeout", http, "idleTimeout", path, NULL);
            const struct sc_ynode *mr = sc_ynode_get(http, "maxRequestsPerConnection");
            const char *s = sc_ynode_str(mr);
            if (s && strcmp(s, "1") == 0) {
                proxy_front_put(f, c, "max_idle", mr, "0"); /* a new connection per request */
            } else if (s && strcmp(s, "0") != 0) {
                proxy_front_refuse(f, mr, path,
                                   "maxRequestsPerConnection other than 0 or 1 is not supported");
            }
            /* HTTP/2 to the destination (proxy_h2_up.c): UPGRADE speaks it with prior
             * knowledge (or ALPN h2 under TLS); maxConcurrentStreams bounds each connection. */
            const struct proxy_front_enum *up =
                proxy_front_enum(f, http, "h2UpgradePolicy", path, NULL, proxy_istio_h2_upgrade);
            if (up && up->ours) {
                proxy_front_put(f, c, "protocol", sc_ynode_get(http, "h2UpgradePolicy"), up->ours);
            }
            if (sc_ynode_get(http, "maxConcurrentStreams")) {
                struct sc_ynode *h2 = proxy_front_map(f, http);
                proxy_front_copy(f, h2, "max_concurrent_streams", http, "maxConcurrentStreams");
                proxy_front_set(f, c, "http2", h2, http);
            }
            const char *ucp = proxy_front_str(f, http, "useClientProtocol", path);
            if (ucp && strcmp(ucp, "true") == 0) {
                proxy_front_refuse(f, sc_ynode_get(http, "useClientProtocol"), path,
                                   "useClientProtocol is not supported");
            }
        }
        if (sc_ynode_count(cb)) {
            proxy_front_set(f, c, "circuit_breakers", cb, cp);
        }
    }
}

/* outlierDetection, with Istio's defaults where they differ from the proxy's. */
static void outlier_detection(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *od,
                              const char *path)
{
    static const char *const od_keys[] = { "consecutive5xxErrors",
                                           "consecutiveGatewayErrors",
                                           "consecutiveErrors",
                                           "interval",
                                           "baseEjectionTime",
                                           "maxEjectionPercent",
                                           NULL };
    static const char *const od_noted[] = { "minHealthPercent", NULL };
    if (proxy_front_keys(f, od, path, od_keys, od_noted) == 0) {
        struct sc_ynode *o = proxy_front_map(f, od);
        proxy_front_copy(f, o, "consecutive_5xx", od, "consecutive5xxErrors");
        proxy_front_copy(f, o, "consecutive_gateway_errors", od, "consecutiveGatewayErrors");
        proxy_front_copy(f, o, "consecutive_gateway_errors", od, "consecutiveErrors");
        /* Istio's defaults where they differ from the proxy's: 10s and 10%. */
        if (sc_ynode_get(od, "interval")) {
            proxy_front_put_duration(f, o, "interval", od, "interval", path, NULL);
        } else {
            proxy_front_put(f, o, "interval", od, "10s");
        }
        if (sc_ynode_get(od, "maxEjectionPercent")) {
            proxy_front_copy(f, o, "max_ejection_percent", od, "maxEjectionPercent");
        } else {
            proxy_front_put(f, o, "max_ejection_percent", od, "10");
        }
        proxy_front_put_duration(f, o, "base_ejection_time", od, "baseEjectionTime", path, NULL);
        proxy_front_set(f, c, "outlier_detection", o, od);
    }
}

/* tls: the mode and the files of TLS origination. */
static void tls_settings(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *tls,
                         const char *path)
{
    static const char *const tls_keys[] = {
        "mode", "clientCertificate", "privateKey",         "caCertificates",
        "sni",  "subjectAltNames",   "insecureSkipVerify", NULL
    };
    if (proxy_front_keys(f, tls, path, tls_keys, NULL) == 0) {
        struct sc_ynode *t = proxy_front_map(f, tls);
        static const struct proxy_front_enum modes[] = { { "DISABLE", "disable" },
                                                         { "SIMPLE", "simple" },
                                                         { "MUTUAL", "mutual" },
                                                         { "ISTIO_MUTUAL", "mesh" },
                                                         { NULL, NULL } };
        const struct proxy_front_enum *mode =
            proxy_front_enum(f, tls, "mode", path, "tls.mode", modes);
        if (mode) {
            proxy_front_put(f, t, "mode", sc_ynode_get(tls, "mode"), mode->ours);
        }
        proxy_front_copy(f, t, "cert", tls, "clientCertificate");
        proxy_front_copy(f, t, "key", tls, "privateKey");
        proxy_front_copy(f, t, "ca", tls, "caCertificates");
        proxy_front_copy(f, t, "sni", tls, "sni");
        proxy_front_copy(f, t, "subject_alt_names", tls, "subjectAltNames");
        proxy_front_copy(f, t, "insecure_skip_verify", tls, "insecureSkipVerify");
        proxy_front_set(f, c, "tls", t, tls);
    }
}

static void apply(struct proxy_front *f, struct sc_ynode *c, const struct policy *p)
{
    if (p->g[G_LB]) {
        load_balancer(f, c, p->g[G_LB], p->path[G_LB]);
    }
    if (p->g[G_CP]) {
        connection_pool(f, c, p->g[G_CP], p->path[G_CP]);
    }
    if (p->g[G_OD]) {
        outlier_detection(f, c, p->g[G_OD], p->path[G_OD]);
    }
    if (p->g[G_TLS]) {
        tls_settings(f, c, p->g[G_TLS], p->path[G_TLS]);
    }
}

/* Reads TrafficPolicy <tp> at <path> into <out> for port <port>: its own groups, replaced as a
 * whole by its portLevelSettings entry for <port> (*port_level set then). Every entry's keys are
 * checked. Returns 0 or SC_ECONFIG. */
static int read_policy(struct proxy_front *f, const struct sc_ynode *tp, const char *path,
                       const char *port, struct policy *out, bool *port_level)
{
    static const char *const tp_keys[] = { "loadBalancer", "connectionPool",    "outlierDetection",
                                           "tls",          "portLevelSettings", NULL };
    static const char *const pl_keys[] = {
        "port", "loadBalancer", "connectionPool", "outlierDetection", "tls", NULL
    };
    static const char *const port_keys[] = { "number", NULL };
    memset(out, 0, sizeof(*out));
    *port_level = false;
    if (!tp || sc_ynode_kind(tp) == SC_Y_NULL) {
        return 0;
    }
    if (proxy_front_keys(f, tp, path, tp_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    for (int g = 0; g < G_N; g++) {
        out->g[g] = sc_ynode_get(tp, group_names[g]);
        snprintf(out->path[g], PROXY_FRONT_PATH, "%s", path);
    }
    const struct sc_ynode *pls = sc_ynode_get(tp, "portLevelSettings");
    if (pls && sc_ynode_kind(pls) != SC_Y_SEQ && sc_ynode_kind(pls) != SC_Y_NULL) {
        return proxy_front_refuse(f, pls, path, "portLevelSettings must be a list");
    }
    for (size_t i = 0; i < sc_ynode_count(pls); i++) {
        const struct sc_ynode *e = sc_ynode_at(pls, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".portLevelSettings[%zu]", i);
        if (proxy_front_keys(f, e, p, pl_keys, NULL) < 0) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *pn = sc_ynode_get(e, "port");
        if (!pn || proxy_front_keys(f, pn, p, port_keys, NULL) < 0) {
            return proxy_front_refuse(f, pn ? pn : e, p, "port.number is required");
        }
        const char *num = proxy_front_str(f, pn, "number", p);
        char *end = NULL;
        long n = num ? strtol(num, &end, 10) : 0;
        if (!num || *end || n < 1 || n > 65535) {
            return proxy_front_refuse(f,
                                      sc_ynode_get(pn, "number") ? sc_ynode_get(pn, "number") : pn,
                                      p, "port.number must be a port, 1 to 65535");
        }
        /* The first entry for the port wins, as in Istio. */
        if (!*port_level && port && strtol(port, NULL, 10) == n) {
            *port_level = true;
            for (int g = 0; g < G_N; g++) {
                out->g[g] = sc_ynode_get(e, group_names[g]);
                snprintf(out->path[g], PROXY_FRONT_PATH, "%s", p);
            }
        }
    }
    return 0;
}

/* Translates every group of every policy of <tp> (its own, each port entry's) into a scratch
 * cluster, so that an error in a policy no cluster uses is still reported. */
static void check_all(struct proxy_front *f, const struct sc_ynode *tp, const char *path)
{
    struct policy *p = sc_calloc(1, sizeof(*p));
    bool pl;
    if (read_policy(f, tp, path, NULL, p, &pl) == 0) {
        struct sc_ynode *scratch = proxy_front_map(f, tp);
        apply(f, scratch, p);
        const struct sc_ynode *pls = sc_ynode_get(tp, "portLevelSettings");
        for (size_t i = 0; i < sc_ynode_count(pls) && !f->err; i++) {
            const char *num =
                sc_ynode_str(sc_ynode_get(sc_ynode_get(sc_ynode_at(pls, i), "port"), "number"));
            if (read_policy(f, tp, path, num, p, &pl) == 0) {
                apply(f, proxy_front_map(f, tp), p);
            }
        }
    }
    sc_free(p);
}

int proxy_istio_policy(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *dr,
                       const char *port, const struct sc_ynode *subset)
{
    const struct sc_ynode *spec = sc_ynode_get(dr, "spec");
    char top_path[PROXY_FRONT_PATH];
    snprintf(top_path, sizeof(top_path), "DestinationRule/%.128s.spec.trafficPolicy",
             proxy_istio_name(dr));
    const struct sc_ynode *tp = sc_ynode_get(spec, "trafficPolicy");
    struct policy *top = sc_calloc(2, sizeof(*top)), *sub = top + 1;
    bool pl = false;
    if (read_policy(f, tp, top_path, port, top, &pl) < 0) {
        goto out;
    }
    /* Every policy of the rule is checked, whichever cluster asks first. */
    check_all(f, tp, top_path);
    const struct sc_ynode *subs = sc_ynode_get(spec, "subsets");
    for (size_t i = 0; i < sc_ynode_count(subs) && !f->err; i++) {
        const struct sc_ynode *stp = sc_ynode_get(sc_ynode_at(subs, i), "trafficPolicy");
        if (stp) {
            char sp[PROXY_FRONT_PATH];
            snprintf(sp, sizeof(sp), "DestinationRule/%.128s.spec.subsets[%zu].trafficPolicy",
                     proxy_istio_name(dr), i);
            check_all(f, stp, sp);
        }
    }
    if (subset && !f->err) {
        size_t idx = 0;
        while (idx < sc_ynode_count(subs) && sc_ynode_at(subs, idx) != subset) {
            idx++;
        }
        char sp[PROXY_FRONT_PATH];
        snprintf(sp, sizeof(sp), "DestinationRule/%.128s.spec.subsets[%zu].trafficPolicy",
                 proxy_istio_name(dr), idx);
        if (read_policy(f, sc_ynode_get(subset, "trafficPolicy"), sp, port, sub, &pl) < 0) {
            goto out;
        }
        for (int g = 0; g < G_N; g++) {
            if (sub->g[g] || pl) {
                top->g[g] = sub->g[g];
                memcpy(top->path[g], sub->path[g], PROXY_FRONT_PATH);
            }
        }
    }
    if (!f->err) {
        apply(f, c, top);
    }
out:
    sc_free(top);
    return f->err ? SC_ECONFIG : 0;
}
