// SPDX-License-Identifier: Apache-2.0
// Istio's tracing configuration as the proxy's `tracing:` block (see proxy_front.h): Telemetry
// resources (telemetry.istio.io, `spec.tracing`) say how much to sample and which provider gets
// the spans; MeshConfig's `extensionProviders` (a document of its own, as the `mesh` text of
// Istio's ConfigMap or istioctl's mesh file) say where a provider is, and `defaultProviders`
// which one is used when no Telemetry names one. The Telemetry resources that apply to this
// workload are merged as Istio does: the root namespace's, then the workload namespace's, then a
// workload-selecting one, each field taken from the most specific resource that sets it.
// Invariant: nothing is dropped silently: what the proxy cannot do (OTLP over gRPC, metrics and
// access logging, per-direction tracing, header-valued tags) is refused at its position.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_front.h"

static const char *const telemetry_versions[] = { "telemetry.istio.io/v1alpha1",
                                                  "telemetry.istio.io/v1", NULL };

static int add_telemetry(struct proxy_front *f, const struct sc_ynode *doc, const char *kind)
{
    const struct sc_ynode *spec;
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, kind, "/%.128s", proxy_istio_name(doc));
    if (proxy_istio_top(f, doc, p, &spec, false) < 0) {
        return SC_ECONFIG;
    }
    f->tel = sc_reallocarray(f->tel, f->ntel + 1, sizeof(*f->tel));
    f->tel[f->ntel++] = doc;
    return 0;
}

const struct proxy_front_kind proxy_istio_telemetry_kinds[] = {
    { "Telemetry", telemetry_versions, add_telemetry },
    { 0 },
};

/* ---- MeshConfig's extension providers ---- */

/* The kinds of extension provider Istio defines that are not tracing ones here. */
static const char *const other_providers[] = {
    "envoyExtAuthzHttp",
    "envoyExtAuthzGrpc",
    "envoyFileAccessLog",
    "envoyHttpAls",
    "envoyTcpAls",
    "envoyOtelAls",
    "prometheus",
    "stackdriver",
    "skywalking",
    "datadog",
    "lightstep",
    "sds",
    NULL,
};

/* Finds extension provider <name> in the MeshConfig document. */
static const struct sc_ynode *find_provider(const struct proxy_front *f, const char *name)
{
    const struct sc_ynode *l = sc_ynode_get(f->mesh, "extensionProviders");
    for (size_t i = 0; i < sc_ynode_count(l); i++) {
        const struct sc_ynode *e = sc_ynode_at(l, i);
        const char *n = sc_ynode_str(sc_ynode_get(e, "name"));
        if (n && strcmp(n, name) == 0) {
            return e;
        }
    }
    return NULL;
}

/* "http://<host>:<port><path>" from a provider's service ("[<namespace>/]<host>"), port and path
 * (<def> when absent). */
static int endpoint(struct proxy_front *f, struct sc_ynode *out, const struct sc_ynode *pv,
                    const struct sc_ynode *path_node, const char *def, const char *path)
{
    const char *svc = proxy_front_str(f, pv, "service", path);
    const char *port = proxy_front_str(f, pv, "port", path);
    const char *pth = path_node ? proxy_front_scalar(f, path_node, path, &(int){ 0 }) : NULL;
    if (f->err) {
        return SC_ECONFIG;
    }
    if (!svc || !*svc || !port) {
        return proxy_front_refuse(f, pv, path, "service and port are required");
    }
    const char *slash = strchr(svc, '/');
    if (slash) {
        svc = slash + 1; /* "<namespace>/<host>": the host is enough to reach it */
    }
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end || pn < 1 || pn > 65535) {
        return proxy_front_refuse(f, sc_ynode_get(pv, "port"), path, "port must be 1 to 65535");
    }
    pth = pth && *pth ? pth : def;
    char *url = sc_asprintf("http://%s%s%s:%ld%s%s", strchr(svc, ':') ? "[" : "", svc,
                            strchr(svc, ':') ? "]" : "", pn, *pth == '/' ? "" : "/", pth);
    proxy_front_put(f, out, "endpoint", sc_ynode_get(pv, "service"), url);
    sc_free(url);
    return f->err ? SC_ECONFIG : 0;
}

/* headers: [{name, value}] into tracing.headers. */
static int export_headers(struct proxy_front *f, struct sc_ynode *out, const struct sc_ynode *hn,
                          const char *path)
{
    if (!hn || sc_ynode_kind(hn) == SC_Y_NULL) {
        return 0;
    }
    if (sc_ynode_kind(hn) != SC_Y_SEQ) {
        return proxy_front_refuse(f, hn, path, "headers must be a list");
    }
    struct sc_ynode *m = proxy_front_map(f, hn);
    static const char *const keys[] = { "name", "value", NULL };
    char p[PROXY_FRONT_PATH];
    for (size_t i = 0; m && i < sc_ynode_count(hn); i++) {
        const struct sc_ynode *h = sc_ynode_at(hn, i);
        proxy_front_path(p, path, ".headers[%zu]", i);
        if (proxy_front_keys(f, h, p, keys, NULL) < 0) {
            return SC_ECONFIG;
        }
        const char *name = proxy_front_str(f, h, "name", p);
        const char *value = proxy_front_str(f, h, "value", p);
        if (!name || !value) {
            return f->err ? SC_ECONFIG : proxy_front_refuse(f, h, p, "name and value are required");
        }
        proxy_front_put(f, m, name, sc_ynode_get(h, "value"), value);
    }
    proxy_front_set(f, out, "headers", m, hn);
    return f->err ? SC_ECONFIG : 0;
}

static void max_tag_length(struct proxy_front *f, const struct sc_ynode *pv, const char *path)
{
    const struct sc_ynode *n = sc_ynode_get(pv, "maxTagLength");
    if (n) {
        proxy_front_note(f, n, path,
                         "maxTagLength has no effect here (a span's attributes share a 2 KiB "
                         "arena; longer values are cut at a character boundary)");
    }
}

/* provider, endpoint, headers and timeout of provider <pv>, whose path, headers and timeout are
 * in <h> (at <hpath>). */
static int destination(struct proxy_front *f, struct sc_ynode *out, const char *provider,
                       const struct sc_ynode *pv, const struct sc_ynode *h, const char *def_path,
                       const char *path, const char *hpath)
{
    proxy_front_put(f, out, "provider", pv, provider);
    max_tag_length(f, pv, path);
    if (endpoint(f, out, pv, sc_ynode_get(h, "path"), def_path, path) < 0 ||
        export_headers(f, out, sc_ynode_get(h, "headers"), hpath) < 0) {
        return SC_ECONFIG;
    }
    proxy_front_put_duration(f, out, "timeout", h, "timeout", hpath, NULL);
    return f->err ? SC_ECONFIG : 0;
}

/* opentelemetry: OTLP/HTTP only (`http` set); Istio's default without it is OTLP/gRPC. */
static int otel_provider(struct proxy_front *f, struct sc_ynode *out, const struct sc_ynode *pv,
                         const char *path)
{
    static const char *const keys[] = { "service", "port", "http", "maxTagLength", NULL };
    if (sc_ynode_get(pv, "grpc") || (!sc_ynode_get(pv, "http") && sc_ynode_kind(pv) == SC_Y_MAP)) {
        const struct sc_ynode *g = sc_ynode_get(pv, "grpc");
        return proxy_front_refuse(f, g ? g : pv, path,
                                  "OTLP over gRPC is not supported: set http (OTLP/HTTP, "
                                  "e.g. http: { path: /v1/traces } and the collector's 4318 "
                                  "port)");
    }
    if (proxy_front_keys(f, pv, path, keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *http = sc_ynode_get(pv, "http");
    static const char *const http_keys[] = { "path", "timeout", "headers", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".http");
    if (sc_ynode_kind(http) != SC_Y_NULL && proxy_front_keys(f, http, p, http_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    return destination(f, out, "otlp_http", pv, http, "/v1/traces", path, p);
}

/* zipkin: Zipkin v2 JSON; B3 written (and W3C with USE_B3_WITH_W3C_PROPAGATION). */
static int zipkin_provider(struct proxy_front *f, struct sc_ynode *out, const struct sc_ynode *pv,
                           const char *path)
{
    static const char *const keys[] = { "service",
                                        "port",
                                        "path",
                                        "maxTagLength",
                                        "timeout",
                                        "headers",
                                        "enable64bitTraceId",
                                        "traceContextOption",
                                        NULL };
    if (proxy_front_keys(f, pv, path, keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *b64 = sc_ynode_get(pv, "enable64bitTraceId");
    const char *b64s = b64 ? proxy_front_scalar(f, b64, path, &(int){ 0 }) : NULL;
    if (b64s && strcmp(b64s, "false") != 0) {
        return proxy_front_refuse(f, b64, path,
                                  "enable64bitTraceId is not supported (trace ids are 128-bit)");
    }
    if (destination(f, out, "zipkin", pv, pv, "/api/v2/spans", path, path) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *tco = sc_ynode_get(pv, "traceContextOption");
    const char *tc = tco ? proxy_front_scalar(f, tco, path, &(int){ 0 }) : NULL;
    if (tc && strcmp(tc, "USE_B3") != 0 && strcmp(tc, "USE_B3_WITH_W3C_PROPAGATION") != 0 &&
        strcmp(tc, "UNSPECIFIED") != 0) {
        return proxy_front_refuse(f, tco, path,
                                  "traceContextOption must be USE_B3 or "
                                  "USE_B3_WITH_W3C_PROPAGATION");
    }
    if (tc && strcmp(tc, "USE_B3_WITH_W3C_PROPAGATION") == 0) {
        struct sc_ynode *l = proxy_front_seq(f, tco);
        struct sc_ynode *b3 = sc_ytree_str(f->out, tco, "b3multi");
        struct sc_ynode *w3c = sc_ytree_str(f->out, tco, "w3c");
        if (!l || !b3 || !w3c) {
            return proxy_front_refuse(f, tco, path, "configuration too large");
        }
        proxy_front_push(f, l, b3, tco);
        proxy_front_push(f, l, w3c, tco);
        proxy_front_set(f, out, "propagation", l, tco);
    }
    return f->err ? SC_ECONFIG : 0;
}

/* Checks the MeshConfig document: every extension provider (tracing ones fully, as they would
 * be translated), defaultProviders. */
static int check_mesh(struct proxy_front *f)
{
    if (proxy_istio_mesh_keys(f) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *l = sc_ynode_get(f->mesh, "extensionProviders");
    if (l && sc_ynode_kind(l) != SC_Y_SEQ && sc_ynode_kind(l) != SC_Y_NULL) {
        return proxy_front_refuse(f, l, "MeshConfig", "extensionProviders must be a list");
    }
    char p[PROXY_FRONT_PATH];
    for (size_t i = 0; i < sc_ynode_count(l); i++) {
        const struct sc_ynode *e = sc_ynode_at(l, i);
        proxy_front_path(p, "MeshConfig", ".extensionProviders[%zu]", i);
        static const char *const keys[] = { "name", "opentelemetry", "zipkin", NULL };
        for (size_t k = 0; other_providers[k]; k++) {
            const struct sc_ynode *o = sc_ynode_get(e, other_providers[k]);
            if (o) {
                return proxy_front_refuse(
                    f, o, p, "%s providers are not read from MeshConfig%s", other_providers[k],
                    strncmp(other_providers[k], "envoyExtAuthz", 13) == 0
                        ? " (write an HTTP authorizer as the proxy document's extension_providers)"
                        : "");
            }
        }
        if (proxy_front_keys(f, e, p, keys, NULL) < 0) {
            return SC_ECONFIG;
        }
        const char *name = proxy_front_str(f, e, "name", p);
        if (!name || !*name) {
            return f->err ? SC_ECONFIG : proxy_front_refuse(f, e, p, "name is required");
        }
        const struct sc_ynode *ot = sc_ynode_get(e, "opentelemetry"),
                              *zk = sc_ynode_get(e, "zipkin");
        if (!ot == !zk) {
            return proxy_front_refuse(f, e, p, "one of opentelemetry and zipkin is required");
        }
        for (size_t j = 0; j < i; j++) {
            const char *n2 = sc_ynode_str(sc_ynode_get(sc_ynode_at(l, j), "name"));
            if (n2 && strcmp(n2, name) == 0) {
                return proxy_front_refuse(f, e, p, "a second provider named \"%.64s\"", name);
            }
        }
        /* Checked as it would be translated (into a scratch mapping). */
        struct sc_ynode *scratch = proxy_front_map(f, e);
        proxy_front_path(p, "MeshConfig", ".extensionProviders[%zu].%s", i,
                         ot ? "opentelemetry" : "zipkin");
        if (!scratch ||
            (ot ? otel_provider(f, scratch, ot, p) : zipkin_provider(f, scratch, zk, p)) < 0) {
            return SC_ECONFIG;
        }
    }
    const struct sc_ynode *dp = sc_ynode_get(f->mesh, "defaultProviders");
    static const char *const dp_keys[] = { "tracing", NULL };
    static const char *const dp_noted[] = { "metrics", "accessLogging", NULL };
    if (dp && proxy_front_keys(f, dp, "MeshConfig.defaultProviders", dp_keys, dp_noted) < 0) {
        return SC_ECONFIG;
    }
    return 0;
}

/* ---- Telemetry ---- */

/* What applies to this workload, field by field, from the least to the most specific. */
struct merged {
    const struct sc_ynode *provider; /* a provider's name node */
    const struct sc_ynode *sampling;
    const struct sc_ynode *disable;
    const struct sc_ynode *tags;
    const struct sc_ynode *at;    /* the last Telemetry that set anything */
    char where[PROXY_FRONT_PATH]; /* its path, for messages */
};

/* Whether mapping <want> (matchLabels) is a subset of the workload's literal labels. */
static bool labels_match(const struct sc_ynode *want, const struct sc_ynode *have)
{
    for (size_t i = 0; i < sc_ynode_count(want); i++) {
        const char *k = sc_ynode_str(sc_ynode_key(want, i));
        const char *v = sc_ynode_str(sc_ynode_val(want, i));
        const char *h = k ? sc_ynode_str(sc_ynode_get(have, k)) : NULL;
        if (!h || !v || strcmp(h, v) != 0) {
            return false;
        }
    }
    return true;
}

/* The level of Telemetry <doc> for this workload: 0 does not apply, 1 the root namespace's, 2 the
 * workload namespace's, 3 one selecting the workload. Refuses what it cannot decide. */
static int level(struct proxy_front *f, const struct sc_ynode *doc, const struct sc_ynode *spec,
                 const char *path)
{
    const char *ns = proxy_istio_ns(f, doc);
    const char *root = sc_ynode_str(sc_ynode_get(f->native, "mesh_root_namespace"));
    root = root && *root ? root : "istio-system";
    const struct sc_ynode *sel = sc_ynode_get(spec, "selector");
    static const char *const sel_keys[] = { "matchLabels", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".spec.selector");
    if (sel && proxy_front_keys(f, sel, p, sel_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *ml = sc_ynode_get(sel, "matchLabels");
    if (sc_ynode_count(ml) == 0) {
        return strcmp(ns, f->ns) == 0 ? 2 : strcmp(ns, root) == 0 ? 1 : 0;
    }
    if (strcmp(ns, f->ns) != 0) {
        return 0;
    }
    const struct sc_ynode *labels = sc_ynode_get(sc_ynode_get(f->native, "workload"), "labels");
    if (sc_ynode_kind(labels) != SC_Y_MAP) {
        return proxy_front_refuse(f, sel, path,
                                  "a selector needs the workload's labels written in the proxy "
                                  "document (workload.labels) to be matched when the file loads");
    }
    return labels_match(ml, labels) ? 3 : 0;
}

/* Reads spec.tracing of Telemetry <doc> into <m> (later calls override earlier ones). */
static int tracing_entry(struct proxy_front *f, struct merged *m, const struct sc_ynode *spec,
                         const char *path)
{
    const struct sc_ynode *tl = sc_ynode_get(spec, "tracing");
    if (!tl || sc_ynode_kind(tl) == SC_Y_NULL) {
        return 0;
    }
    char p[PROXY_FRONT_PATH];
    if (sc_ynode_kind(tl) != SC_Y_SEQ) {
        return proxy_front_refuse(f, tl, path, "spec.tracing must be a list");
    }
    if (sc_ynode_count(tl) > 1) {
        proxy_front_path(p, path, ".spec.tracing[1]");
        return proxy_front_refuse(f, sc_ynode_at(tl, 1), p,
                                  "one tracing entry at most (tracing per direction is not "
                                  "supported: spans are recorded on both)");
    }
    const struct sc_ynode *e = sc_ynode_at(tl, 0);
    proxy_front_path(p, path, ".spec.tracing[0]");
    static const char *const keys[] = {
        "match", "providers", "randomSamplingPercentage", "disableSpanReporting", "customTags", NULL
    };
    static const char *const noted[] = { "useRequestIdForTraceSampling", NULL };
    if (proxy_front_keys(f, e, p, keys, noted) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *match = sc_ynode_get(e, "match");
    if (match) {
        char mp[PROXY_FRONT_PATH];
        proxy_front_path(mp, p, ".match");
        static const char *const mkeys[] = { "mode", NULL };
        if (proxy_front_keys(f, match, mp, mkeys, NULL) < 0) {
            return SC_ECONFIG;
        }
        const char *mode = proxy_front_str(f, match, "mode", mp);
        if (mode && strcmp(mode, "CLIENT_AND_SERVER") != 0) {
            return proxy_front_refuse(f, sc_ynode_get(match, "mode"), mp,
                                      "mode %.32s is not supported (CLIENT_AND_SERVER: spans are "
                                      "recorded on both sides)",
                                      mode);
        }
    }
    const struct sc_ynode *pl = sc_ynode_get(e, "providers");
    if (pl && sc_ynode_kind(pl) != SC_Y_NULL) {
        if (sc_ynode_kind(pl) != SC_Y_SEQ || sc_ynode_count(pl) > 1) {
            return proxy_front_refuse(f, pl, p, "providers: one provider at most");
        }
        const struct sc_ynode *pe = sc_ynode_at(pl, 0);
        static const char *const pkeys[] = { "name", NULL };
        char pp[PROXY_FRONT_PATH];
        proxy_front_path(pp, p, ".providers[0]");
        if (pe && proxy_front_keys(f, pe, pp, pkeys, NULL) < 0) {
            return SC_ECONFIG;
        }
        m->provider = sc_ynode_get(pe, "name");
        if (pe && !sc_ynode_str(m->provider)) {
            return proxy_front_refuse(f, pe, pp, "name is required");
        }
    }
    const struct sc_ynode *v;
    if ((v = sc_ynode_get(e, "randomSamplingPercentage")) != NULL) {
        m->sampling = v;
    }
    if ((v = sc_ynode_get(e, "disableSpanReporting")) != NULL) {
        m->disable = v;
    }
    if ((v = sc_ynode_get(e, "customTags")) != NULL) {
        m->tags = v;
    }
    m->at = e;
    snprintf(m->where, sizeof(m->where), "%s", p);
    return f->err ? SC_ECONFIG : 0;
}

/* customTags: literal values, and environment variables read now (at load and each reload). */
static int custom_tags(struct proxy_front *f, struct sc_ynode *out, const struct sc_ynode *tags,
                       const char *path)
{
    if (sc_ynode_kind(tags) == SC_Y_NULL) {
        return 0;
    }
    if (sc_ynode_kind(tags) != SC_Y_MAP) {
        return proxy_front_refuse(f, tags, path, "customTags must be a mapping");
    }
    struct sc_ynode *m = proxy_front_map(f, tags);
    char p[PROXY_FRONT_PATH];
    for (size_t i = 0; m && i < sc_ynode_count(tags); i++) {
        const char *name = sc_ynode_str(sc_ynode_key(tags, i));
        const struct sc_ynode *t = sc_ynode_val(tags, i);
        proxy_front_path(p, path, ".customTags.%.64s", name ? name : "?");
        static const char *const keys[] = { "literal", "environment", NULL };
        if (sc_ynode_get(t, "header")) {
            return proxy_front_refuse(f, sc_ynode_get(t, "header"), p,
                                      "header tags are not supported (literal and environment "
                                      "are)");
        }
        if (proxy_front_keys(f, t, p, keys, NULL) < 0) {
            return SC_ECONFIG;
        }
        const struct sc_ynode *lit = sc_ynode_get(t, "literal");
        const struct sc_ynode *env = sc_ynode_get(t, "environment");
        char q[PROXY_FRONT_PATH];
        if (!lit == !env) {
            return proxy_front_refuse(f, t, p, "one of literal and environment is required");
        }
        if (lit) {
            proxy_front_path(q, p, ".literal");
            static const char *const lkeys[] = { "value", NULL };
            if (proxy_front_keys(f, lit, q, lkeys, NULL) < 0) {
                return SC_ECONFIG;
            }
            const char *v = proxy_front_str(f, lit, "value", q);
            const struct sc_ynode *vn = sc_ynode_get(lit, "value");
            proxy_front_put(f, m, name, vn ? vn : lit, v ? v : "");
        } else {
            proxy_front_path(q, p, ".environment");
            static const char *const ekeys[] = { "name", "defaultValue", NULL };
            if (proxy_front_keys(f, env, q, ekeys, NULL) < 0) {
                return SC_ECONFIG;
            }
            const char *var = proxy_front_str(f, env, "name", q);
            const char *def = proxy_front_str(f, env, "defaultValue", q);
            if (!var || !*var) {
                return f->err ? SC_ECONFIG : proxy_front_refuse(f, env, q, "name is required");
            }
            const char *v = getenv(var);
            proxy_front_put(f, m, name, env, v ? v : def ? def : "");
        }
    }
    proxy_front_set(f, out, "custom_tags", m, tags);
    return f->err ? SC_ECONFIG : 0;
}

int proxy_istio_telemetry_finish(struct proxy_front *f)
{
    if (f->mesh && check_mesh(f) < 0) {
        return SC_ECONFIG;
    }
    struct merged m = { 0 };
    const struct sc_ynode *at_level[4] = { 0 };
    for (int lv = 1; lv <= 3; lv++) {
        for (size_t i = 0; i < f->ntel; i++) {
            const struct sc_ynode *doc = f->tel[i], *spec = sc_ynode_get(doc, "spec");
            char path[PROXY_FRONT_PATH];
            proxy_front_path(path, "Telemetry", "/%.128s", proxy_istio_name(doc));
            static const char *const spec_keys[] = { "selector", "tracing", NULL };
            if (lv == 1 && proxy_front_keys(f, spec, path, spec_keys, NULL) < 0) {
                return SC_ECONFIG;
            }
            int l = level(f, doc, spec, path);
            if (l < 0) {
                return SC_ECONFIG;
            }
            if (l != lv || !sc_ynode_get(spec, "tracing")) {
                continue;
            }
            if (at_level[lv]) {
                return proxy_front_refuse(f, doc, path,
                                          "Telemetry/%.64s applies at the same level: Istio "
                                          "takes the older one, which a file does not tell",
                                          proxy_istio_name(at_level[lv]));
            }
            at_level[lv] = doc;
            if (tracing_entry(f, &m, spec, path) < 0) {
                return SC_ECONFIG;
            }
        }
    }
    const struct sc_ynode *def = sc_ynode_get(sc_ynode_get(f->mesh, "defaultProviders"), "tracing");
    if (!m.at && sc_ynode_count(def) == 0) {
        return 0; /* nothing about tracing */
    }
    const struct sc_ynode *en = sc_ynode_get(f->mesh, "enableTracing");
    const char *ens = proxy_front_str(f, f->mesh, "enableTracing", "MeshConfig");
    if (ens && strcmp(ens, "false") == 0) {
        /* Istio generates no tracing configuration at all: no spans, no trace headers. */
        proxy_front_note(f, en, "MeshConfig",
                         "enableTracing is false: the Telemetry and default providers' tracing "
                         "is not applied");
        return 0;
    } else if (ens && strcmp(ens, "true") != 0) {
        return proxy_front_refuse(f, en, "MeshConfig", "enableTracing must be true or false");
    }
    const struct sc_ynode *at = m.at ? m.at : def;
    const char *where = m.at ? m.where : "MeshConfig.defaultProviders.tracing";
    const struct sc_ynode *pname = m.provider ? m.provider : sc_ynode_at(def, 0);
    const char *name = sc_ynode_str(pname);
    struct sc_ynode *out = proxy_front_map(f, at);
    if (!out) {
        return SC_ECONFIG;
    }
    const char *dis = m.disable ? sc_ynode_str(m.disable) : NULL;
    if (!name || (dis && strcmp(dis, "true") == 0)) {
        /* No provider, or span reporting off: no spans; the traceparent is still written. */
        proxy_front_put(f, out, "provider", at, "none");
    } else {
        const struct sc_ynode *pv = f->mesh ? find_provider(f, name) : NULL;
        if (!pv) {
            return proxy_front_refuse(f, pname, where,
                                      "provider \"%.64s\" is not among MeshConfig's "
                                      "extensionProviders",
                                      name);
        }
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, "MeshConfig", ".extensionProviders[%.64s]", name);
        const struct sc_ynode *ot = sc_ynode_get(pv, "opentelemetry");
        int rc = ot ? otel_provider(f, out, ot, p)
                    : zipkin_provider(f, out, sc_ynode_get(pv, "zipkin"), p);
        if (rc < 0) {
            return SC_ECONFIG;
        }
    }
    if (m.sampling) {
        proxy_front_set(f, out, "sampling", sc_ytree_copy(f->out, m.sampling), m.sampling);
    }
    if (m.tags && custom_tags(f, out, m.tags, where) < 0) {
        return SC_ECONFIG;
    }
    /* The proxy document's own tracing block keeps what Istio does not say (batching, queue,
     * retries); a field both set is refused rather than one silently winning. */
    struct sc_ynode *mine = sc_ynode_get_mut(f->root, "tracing");
    if (!mine || sc_ynode_kind(mine) != SC_Y_MAP) {
        proxy_front_set(f, f->root, "tracing", out, at);
        return f->err ? SC_ECONFIG : 0;
    }
    for (size_t i = 0; i < sc_ynode_count(out); i++) {
        const char *k = sc_ynode_str(sc_ynode_key(out, i));
        if (sc_ynode_get(mine, k)) {
            return proxy_front_refuse(f, sc_ynode_get(mine, k), where,
                                      "tracing.%s is set both here and in the proxy document", k);
        }
        proxy_front_set(f, mine, k, (struct sc_ynode *)sc_ynode_val(out, i), at);
    }
    return f->err ? SC_ECONFIG : 0;
}
