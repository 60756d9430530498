// SPDX-License-Identifier: Apache-2.0
// What a sidecar reads from Istio's MeshConfig (see proxy_front.h): the document of its own that
// holds the `mesh` text of Istio's ConfigMap (or istioctl's mesh file), recognised by any of its
// top-level fields. Its `defaultConfig` (ProxyConfig) gives the drain at termination and the
// worker count; the top level gives the outbound traffic policy (the default a Sidecar
// overrides), the default HTTP retry policy of routes without `retries`, the access log, the
// connect timeout, the protocol detection timeout, path normalisation and the root namespace.
// Tracing (extensionProviders, defaultProviders, enableTracing) is proxy_istio_telemetry.c's.
// Invariant: a field that would change the proxy's behaviour and has no equivalent is refused at
// its position; fields for Istio's control plane, its agent or the pod's start are noted; a
// value the proxy document sets itself is refused here rather than silently overridden.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "roles/proxy/proxy_front.h"

#define MESH "MeshConfig"
#define PROXY_CONFIG "MeshConfig.defaultConfig"

/* The top-level fields handled here or by proxy_istio_telemetry.c, and those only noted. */
static const char *const mesh_keys[] = {
    "extensionProviders",    "defaultProviders",       "enableTracing",  "defaultConfig",
    "outboundTrafficPolicy", "defaultHttpRetryPolicy", "accessLogFile",  "accessLogEncoding",
    "accessLogFormat",       "h2UpgradePolicy",        "connectTimeout", "protocolDetectionTimeout",
    "inboundTrafficPolicy",  "pathNormalization",      "rootNamespace",  NULL
};
static const char *const mesh_noted[] = { "ingressClass",
                                          "ingressService",
                                          "ingressControllerMode",
                                          "ingressSelector",
                                          "enablePrometheusMerge",
                                          "defaultServiceExportTo",
                                          "defaultVirtualServiceExportTo",
                                          "defaultDestinationRuleExportTo",
                                          "trustDomainAliases",
                                          "configSources",
                                          "discoverySelectors",
                                          "enableEnvoyAccessLogService",
                                          "disableEnvoyListenerLog",
                                          "localityLbSetting",
                                          "certificates",
                                          "caCertificates",
                                          "thriftConfig",
                                          "serviceSettings",
                                          NULL };

bool proxy_istio_is_mesh(const struct sc_ynode *doc)
{
    for (size_t i = 0; mesh_keys[i]; i++) {
        if (sc_ynode_get(doc, mesh_keys[i])) {
            return true;
        }
    }
    return false;
}

int proxy_istio_mesh_keys(struct proxy_front *f)
{
    return proxy_front_keys(f, f->mesh, MESH, mesh_keys, mesh_noted);
}

const struct proxy_front_enum proxy_istio_outbound_modes[] = { { "ALLOW_ANY", NULL },
                                                               { "REGISTRY_ONLY", NULL },
                                                               { NULL, NULL } };

bool proxy_istio_mesh_registry_only(struct proxy_front *f)
{
    const struct sc_ynode *otp = sc_ynode_get(f->mesh, "outboundTrafficPolicy");
    const char *mode = sc_ynode_str(sc_ynode_get(otp, "mode"));
    return mode && strcmp(mode, "REGISTRY_ONLY") == 0;
}

const struct sc_ynode *proxy_istio_mesh_retry(const struct proxy_front *f)
{
    const struct sc_ynode *rp = sc_ynode_get(f->mesh, "defaultHttpRetryPolicy");
    return sc_ynode_kind(rp) == SC_Y_MAP ? rp : NULL;
}

/* Puts <key>: <value> at the top of the native document, unless the proxy document sets <key>
 * itself: then refused at <at>, naming both. */
static void put_top(struct proxy_front *f, const char *key, const struct sc_ynode *at,
                    const char *path, const char *value)
{
    const struct sc_ynode *own = sc_ynode_get(f->native, key);
    if (own) {
        proxy_front_refuse(f, at, path,
                           "the proxy document sets %s too (line %u): set it in one place", key,
                           sc_ynode_line(own));
        return;
    }
    proxy_front_put(f, f->root, key, at, value);
}

/* A duration of <src>'s <key> into top-level <ours>. */
static void put_duration(struct proxy_front *f, const struct sc_ynode *src, const char *key,
                         const char *ours, const char *path)
{
    const struct sc_ynode *n = sc_ynode_get(src, key);
    if (!n) {
        return;
    }
    char d[32];
    const char *s = proxy_front_str(f, src, key, path);
    if (s && proxy_front_duration(s, d, sizeof(d)) < 0) {
        proxy_front_refuse(f, n, path, "%s: %.32s is not a duration", key, s);
        return;
    }
    if (s) {
        put_top(f, ours, n, path, d);
    }
}

/* defaultConfig: the ProxyConfig every sidecar of the mesh starts with. */
static void proxy_config(struct proxy_front *f, const struct sc_ynode *pc)
{
    static const char *const keys[] = {
        "terminationDrainDuration",        "drainDuration", "concurrency",
        "holdApplicationUntilProxyStarts", "proxyMetadata", NULL
    };
    /* For Istio's agent and control plane, or the pod's start: nothing the proxy does. */
    static const char *const noted[] = { "discoveryAddress",
                                         "controlPlaneAuthPolicy",
                                         "statNameLength",
                                         "statusPort",
                                         "proxyStatsMatcher",
                                         "extraStatTags",
                                         "meshId",
                                         "serviceCluster",
                                         "configPath",
                                         "binaryPath",
                                         "proxyAdminPort",
                                         "image",
                                         "parentShutdownDuration",
                                         NULL };
    const struct sc_ynode *tr = sc_ynode_get(pc, "tracing");
    if (tr) {
        proxy_front_refuse(f, tr, PROXY_CONFIG,
                           "tracing is not supported: name the tracing provider in "
                           "extensionProviders and defaultProviders.tracing (or a Telemetry)");
        return;
    }
    if (proxy_front_keys(f, pc, PROXY_CONFIG, keys, noted) < 0) {
        return;
    }
    /* Istio drains this long at SIGTERM before the proxy exits: our graceful drain. */
    put_duration(f, pc, "terminationDrainDuration", "drain_timeout", PROXY_CONFIG);
    const struct sc_ynode *dd = sc_ynode_get(pc, "drainDuration");
    if (dd) {
        proxy_front_note(f, dd, PROXY_CONFIG,
                         "drainDuration is Envoy's hot-restart drain: the proxy does not hot "
                         "restart (a reload swaps the configuration in place)");
    }
    const struct sc_ynode *cn = sc_ynode_get(pc, "concurrency");
    if (cn) {
        const char *s = proxy_front_str(f, pc, "concurrency", PROXY_CONFIG);
        char *end = NULL;
        long n = s ? strtol(s, &end, 10) : -1;
        if (!s || *end || n < 0) {
            proxy_front_refuse(f, cn, PROXY_CONFIG, "concurrency must be 0 or more");
            return;
        }
        if (n == 0) { /* Istio: as many workers as the CPUs the proxy may use */
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            n = cpus < 1 ? 1 : cpus;
        }
        char v[16];
        snprintf(v, sizeof(v), "%ld", n > 64 ? 64 : n);
        if (n > 64) {
            proxy_front_note(f, cn, PROXY_CONFIG,
                             "concurrency %ld: the proxy runs 64 workers at most", n);
        }
        put_top(f, "workers", cn, PROXY_CONFIG, v);
    }
    const struct sc_ynode *hold = sc_ynode_get(pc, "holdApplicationUntilProxyStarts");
    if (hold) {
        proxy_front_note(f, hold, PROXY_CONFIG,
                         "holdApplicationUntilProxyStarts orders the pod's start: the proxy as a "
                         "native sidecar (sidecar inject, sidecar pod run) starts before the app");
    }
    const struct sc_ynode *md = sc_ynode_get(pc, "proxyMetadata");
    if (md && sc_ynode_kind(md) != SC_Y_MAP) {
        proxy_front_refuse(f, md, PROXY_CONFIG, "proxyMetadata must map names to values");
    } else if (md) {
        proxy_front_note(f, md, PROXY_CONFIG,
                         "proxyMetadata sets environment variables of Istio's agent; the proxy "
                         "reads none of them");
    }
}

/* accessLogFile, accessLogEncoding, accessLogFormat: the access log is JSON lines on stdout. */
static void access_log(struct proxy_front *f)
{
    const struct sc_ynode *file = sc_ynode_get(f->mesh, "accessLogFile");
    const char *path = proxy_front_str(f, f->mesh, "accessLogFile", MESH);
    const struct sc_ynode *fmt = sc_ynode_get(f->mesh, "accessLogFormat");
    const char *fs = proxy_front_str(f, f->mesh, "accessLogFormat", MESH);
    if (fs && *fs) {
        proxy_front_refuse(f, fmt, MESH,
                           "accessLogFormat is not supported: the access log's fields are fixed "
                           "(docs/proxy.md)");
        return;
    }
    const struct sc_ynode *enc = sc_ynode_get(f->mesh, "accessLogEncoding");
    static const struct proxy_front_enum encodings[] = { { "TEXT", NULL },
                                                         { "JSON", NULL },
                                                         { NULL, NULL } };
    const struct proxy_front_enum *es =
        proxy_front_enum(f, f->mesh, "accessLogEncoding", MESH, NULL, encodings);
    if (f->err) {
        return;
    }
    if (!file) {
        return;
    }
    if (path && strcmp(path, "/dev/stdout") == 0) {
        put_top(f, "access_log", file, MESH, "stdout");
        if (!es || strcmp(es->name, "TEXT") == 0) {
            proxy_front_note(f, enc ? enc : file, MESH,
                             "the access log is written as JSON lines (accessLogEncoding TEXT is "
                             "Istio's default)");
        }
    } else if (!path || !*path) {
        put_top(f, "access_log", file, MESH, "off");
    } else {
        proxy_front_refuse(f, file, MESH,
                           "accessLogFile %.128s: the access log goes to /dev/stdout or nowhere",
                           path);
    }
}

int proxy_istio_mesh_finish(struct proxy_front *f)
{
    if (!f->mesh) {
        return 0;
    }
    const struct sc_ynode *pc = sc_ynode_get(f->mesh, "defaultConfig");
    if (pc) {
        proxy_config(f, pc);
    }
    const struct sc_ynode *otp = sc_ynode_get(f->mesh, "outboundTrafficPolicy");
    static const char *const mode_key[] = { "mode", NULL };
    if (otp && proxy_front_keys(f, otp, MESH ".outboundTrafficPolicy", mode_key, NULL) == 0) {
        proxy_front_enum(f, otp, "mode", MESH, "outboundTrafficPolicy.mode",
                         proxy_istio_outbound_modes);
    }
    const struct sc_ynode *itp = sc_ynode_get(f->mesh, "inboundTrafficPolicy");
    if (itp && proxy_front_keys(f, itp, MESH ".inboundTrafficPolicy", mode_key, NULL) == 0) {
        const char *m = proxy_front_str(f, itp, "mode", MESH);
        if (m && strcmp(m, "LOCALHOST") != 0) {
            proxy_front_refuse(f, sc_ynode_get(itp, "mode"), MESH,
                               "inboundTrafficPolicy.mode %.32s is not supported: inbound "
                               "requests go to the app's address (upstream), as LOCALHOST does",
                               m);
        }
    }
    const struct sc_ynode *rp = sc_ynode_get(f->mesh, "defaultHttpRetryPolicy");
    if (rp && sc_ynode_kind(rp) != SC_Y_MAP && sc_ynode_kind(rp) != SC_Y_NULL) {
        proxy_front_refuse(f, rp, MESH, "defaultHttpRetryPolicy must be a mapping");
    }
    access_log(f);
    const struct proxy_front_enum *h2 =
        proxy_front_enum(f, f->mesh, "h2UpgradePolicy", MESH, NULL, proxy_istio_h2_upgrade);
    if (h2 && h2->ours) {
        proxy_front_refuse(f, sc_ynode_get(f->mesh, "h2UpgradePolicy"), MESH,
                           "h2UpgradePolicy UPGRADE mesh-wide is not supported: set "
                           "connectionPool.http.h2UpgradePolicy in the DestinationRules");
    }
    put_duration(f, f->mesh, "connectTimeout", "connect_timeout", MESH);
    const struct sc_ynode *pn = sc_ynode_get(f->mesh, "pathNormalization");
    static const char *const pn_keys[] = { "normalization", NULL };
    if (pn && proxy_front_keys(f, pn, MESH ".pathNormalization", pn_keys, NULL) == 0) {
        static const struct proxy_front_enum levels[] = { { "DEFAULT", "base" },
                                                          { "NONE", "none" },
                                                          { "BASE", "base" },
                                                          { "MERGE_SLASHES", "merge_slashes" },
                                                          { "DECODE_AND_MERGE_SLASHES",
                                                            "decode_and_merge_slashes" },
                                                          { NULL, NULL } };
        const struct proxy_front_enum *n = proxy_front_enum(
            f, pn, "normalization", MESH, "pathNormalization.normalization", levels);
        if (n) {
            put_top(f, "path_normalization", sc_ynode_get(pn, "normalization"), MESH, n->ours);
        }
    }
    const struct sc_ynode *rn = sc_ynode_get(f->mesh, "rootNamespace");
    if (rn) {
        const char *s = proxy_front_str(f, f->mesh, "rootNamespace", MESH);
        if (s && *s) {
            put_top(f, "mesh_root_namespace", rn, MESH, s);
        }
    }
    /* Listeners that detect protocols give up waiting for the client after this long. */
    const struct sc_ynode *pdt = sc_ynode_get(f->mesh, "protocolDetectionTimeout");
    const char *ps = proxy_front_str(f, f->mesh, "protocolDetectionTimeout", MESH);
    char d[32];
    if (ps && proxy_front_duration(ps, d, sizeof(d)) < 0) {
        proxy_front_refuse(f, pdt, MESH, "protocolDetectionTimeout: %.32s is not a duration", ps);
    } else if (ps) {
        struct sc_ynode *ls = sc_ynode_get_mut(f->root, "listeners");
        size_t n = 0;
        for (size_t i = 0; i < sc_ynode_count(ls) && !f->err; i++) {
            struct sc_ynode *l = (struct sc_ynode *)sc_ynode_at(ls, i);
            const char *proto = sc_ynode_str(sc_ynode_get(l, "protocol"));
            if (proto && strcmp(proto, "auto") == 0 &&
                !sc_ynode_get(l, "protocol_detection_timeout")) {
                proxy_front_put(f, l, "protocol_detection_timeout", pdt, d);
                n++;
            }
        }
        if (n == 0) {
            proxy_front_note(f, pdt, MESH,
                             "protocolDetectionTimeout: no listener detects protocols "
                             "(protocol: auto) without a timeout of its own");
        }
    }
    return f->err ? SC_ECONFIG : 0;
}
