// SPDX-License-Identifier: Apache-2.0
// The proxy's side of tracing: the `tracing:` options, the sampling settings a snapshot carries,
// and one span per exchange (SERVER on inbound listeners, CLIENT on outbound ones) with the
// OpenTelemetry HTTP semantic conventions and the proxy's own attributes. The incoming context
// (W3C traceparent first, then B3 single, then B3 multi) is parsed once per request; an exchange
// that is not sampled keeps its ids in place and allocates nothing.
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_trace.h"
#include "roles/proxy/proxy_trace_ctx.h"

/* ---- options ---- */

static const char *const providers[] = { "none", "otlp_http", "otlp_json", "zipkin", NULL };
static const char *const compressions[] = { "none", "gzip", NULL };

static int check_sampling(void *field, char **err)
{
    double v = *(double *)field;
    if (!(v >= 0 && v <= 100)) {
        *err = sc_asprintf("sampling is a percentage from 0 to 100");
        return SC_ECONFIG;
    }
    return 0;
}

static int check_endpoint(void *field, char **err)
{
    const char *s = *(char **)field;
    if (s && strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) {
        *err = sc_asprintf("endpoint must be an http:// or https:// URL");
        return SC_ECONFIG;
    }
    return 0;
}

static int check_force(void *field, char **err)
{
    const char *s = *(char **)field;
    size_t n = s ? strlen(s) : 0;
    if (n >= 64) {
        *err = sc_asprintf("force_header is a header name under 64 bytes");
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            *err = sc_asprintf("force_header must be a header name");
            return SC_ECONFIG;
        }
    }
    return 0;
}

static unsigned prop_bit(const char *s)
{
    return strcmp(s, "w3c") == 0       ? PROXY_PROP_W3C
           : strcmp(s, "b3") == 0      ? PROXY_PROP_B3
           : strcmp(s, "b3multi") == 0 ? PROXY_PROP_B3MULTI
                                       : 0;
}

static int check_propagation(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        if (!prop_bit(v->v[i])) {
            *err = sc_asprintf("unknown propagation \"%s\" (w3c, b3, b3multi)", v->v[i]);
            return SC_ECONFIG;
        }
    }
    return 0;
}

static int check_tags(void *field, char **err)
{
    const struct sc_kvv *v = field;
    if (v->n > 16) {
        *err = sc_asprintf("custom_tags: 16 tags at most");
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < v->n; i++) {
        size_t n = strlen(v->v[i].key);
        if (n == 0 || n > 64) {
            *err = sc_asprintf("custom_tags: a tag name is 1 to 64 bytes");
            return SC_ECONFIG;
        }
    }
    return 0;
}

const struct sc_opt proxy_trace_opts[] = {
    { .name = "provider",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_trace_cfg, provider),
      .def = "none",
      .help = "where spans go: none (tracing off), otlp_http (OTLP/HTTP protobuf), otlp_json "
              "(OTLP/HTTP JSON) or zipkin (Zipkin v2 JSON)",
      .enums = providers },
    { .name = "endpoint",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_trace_cfg, endpoint),
      .help = "the collector's URL (default: http://localhost:4318/v1/traces for OTLP, "
              "http://localhost:9411/api/v2/spans for Zipkin)",
      .check = check_endpoint },
    { .name = "sampling",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_trace_cfg, sampling),
      .def = "1",
      .help = "percentage of requests without a sampling decision that are traced, 0.01 "
              "precision (Istio's randomSamplingPercentage); a caller's decision "
              "(traceparent flags, x-b3-sampled) is kept",
      .check = check_sampling },
    { .name = "force_header",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_trace_cfg, force_header),
      .def = "x-client-trace-id",
      .help = "a request carrying this header is always sampled (empty: none); so is one with "
              "B3 debug (x-b3-flags: 1, b3: ...-d)",
      .check = check_force },
    { .name = "propagation",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_trace_cfg, propagation),
      .help = "trace headers written upstream: w3c (traceparent; tracestate passes through), b3 "
              "(the single b3 header), b3multi (x-b3-traceid, x-b3-spanid, x-b3-parentspanid, "
              "x-b3-sampled); every format is read (default: w3c for OTLP, b3multi for Zipkin, "
              "as Envoy's tracers write)",
      .max = 3,
      .check = check_propagation },
    { .name = "service_name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_trace_cfg, service_name),
      .help = "the service.name resource attribute (default: the workload's app label, else "
              "$POD_NAME, else the host name)" },
    { .name = "headers",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_trace_cfg, headers),
      .help = "extra headers sent with every export (an API key)",
      .flags = SC_OPT_SECRET },
    { .name = "custom_tags",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_trace_cfg, custom_tags),
      .help = "attributes added to every span, name: value (Istio's customTags: literal and "
              "environment tags become these)",
      .check = check_tags },
    { .name = "max_batch_size",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_trace_cfg, max_batch_size),
      .def = "512",
      .help = "spans sent in one export at most; a full batch is sent at once",
      .min = 1,
      .max = 8192 },
    { .name = "batch_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_trace_cfg, batch_interval_ms),
      .def = "5s",
      .help = "queued spans are sent at least this often",
      .min = 10,
      .max = 3600000 },
    { .name = "max_queue_size",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_trace_cfg, max_queue_size),
      .def = "2048",
      .help = "spans waiting for export at most; when full, the oldest are dropped and counted "
              "(sidecar_tracing_spans_total{result=\"dropped_queue_full\"})",
      .min = 1,
      .max = 1000000 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_trace_cfg, timeout_ms),
      .def = "10s",
      .help = "deadline of one export request",
      .min = 1,
      .max = 300000 },
    { .name = "compression",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_trace_cfg, compression),
      .def = "none",
      .help = "export body compression: none or gzip",
      .enums = compressions },
    { .name = "max_retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_trace_cfg, max_retries),
      .def = "5",
      .help = "retries of a batch after a connection error, a timeout or 429/502/503/504 "
              "(then its spans are dropped and counted)",
      .min = 0,
      .max = 100 },
    { .name = "initial_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_trace_cfg, initial_backoff_ms),
      .def = "1s",
      .help = "wait before the first retry, doubled (with jitter) for each next one; a "
              "Retry-After from the collector wins",
      .min = 1,
      .max = 3600000 },
    { .name = "max_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_trace_cfg, max_backoff_ms),
      .def = "30s",
      .help = "longest wait between retries (Retry-After included)",
      .min = 1,
      .max = 3600000 },
    { 0 },
};

/* ---- setup ---- */

void proxy_trace_rt_free(struct proxy_trace_rt *tr)
{
    if (!tr) {
        return;
    }
    for (size_t i = 0; i < tr->nkinds; i++) {
        sc_free(tr->lsn[2 * i].p);
        sc_free(tr->lsn[2 * i + 1].p);
        for (struct proxy_span_blob *b = tr->routes[i]; b && b->p; b++) {
            sc_free(b->p);
            sc_free(b->sfx);
        }
        sc_free(tr->routes[i]);
    }
    for (size_t i = 0; i < tr->nclusters; i++) {
        sc_free(tr->clusters[i].p);
        for (struct proxy_span_blob *b = tr->eps[i]; b && b->p; b++) {
            sc_free(b->p);
        }
        sc_free(tr->eps[i]);
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(tr->proto); i++) {
        sc_free(tr->proto[i].p);
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(tr->methods); i++) {
        sc_free(tr->methods[i].p);
    }
    sc_free(tr->lsn);
    sc_free(tr->routes);
    sc_free(tr->clusters);
    sc_free(tr->eps);
    sc_free(tr->tags.p);
    sc_free(tr->kinds);
    sc_free(tr);
}

/* The route's template for http.route and the span's name: its path or prefix, if any. */
static struct sc_str route_template(const struct proxy_route *r)
{
    return r->path ? sc_str_c(r->path) : r->prefix ? sc_str_c(r->prefix) : SC_STR_NULL;
}

/* A span's name: "<method> <route template>", cut to this many bytes. */
#define NAME_MAX_LEN 299

/* Encodes the attributes that are the same on every span of a listener, route, cluster or
 * endpoint of snapshot <rt> (and the custom tags of <tc>) once, into <tr>'s blobs. An endpoint's
 * blob starts with its cluster's attributes (a span records them together). The blob arrays of
 * routes and endpoints end with an empty blob (p NULL). */
static void make_blobs(struct proxy_trace_rt *tr, const struct proxy_rt *rt,
                       const struct proxy_trace_cfg *tc)
{
    struct proxy_span *sc = sc_malloc(sizeof(*sc));
    proxy_span_reset(sc);
    size_t nl = rt->nlisteners;
    tr->lsn = sc_calloc(2 * (nl ? nl : 1), sizeof(*tr->lsn));
    tr->routes = sc_calloc(nl ? nl : 1, sizeof(*tr->routes));
    for (size_t i = 0; i < nl; i++) {
        const struct proxy_listener *l = &rt->listeners[i];
        for (int tls = 0; tls < 2; tls++) {
            proxy_span_str(sc, "url.scheme", tls ? SC_STR("https") : SC_STR("http"));
            proxy_span_str(sc, "sidecar.listener", sc_str_c(l->name));
            proxy_span_blob_take(&tr->lsn[2 * i + (size_t)tls], sc);
        }
        tr->routes[i] = sc_calloc(l->nroutes + 2, sizeof(**tr->routes));
        for (size_t r = 0; r <= l->nroutes; r++) {
            const struct proxy_route *ro = r < l->nroutes ? &l->routes[r] : &l->noroute;
            struct sc_str tpl = route_template(ro);
            if (tpl.len) {
                proxy_span_str(sc, "http.route", tpl);
            }
            proxy_span_str(sc, "sidecar.route", sc_str_c(ro->name));
            struct proxy_span_blob *b = &tr->routes[i][r];
            proxy_span_blob_take(b, sc);
            /* The name's part after the method, written as it is when proxy_trace_end would
             * neither cut it (its method is 15 bytes at most) nor change a byte of it. */
            if (tpl.len <= NAME_MAX_LEN - 16 && sc_utf8_valid(tpl.p, tpl.len)) {
                b->sfx = sc_calloc(1, tpl.len + 1 + PROXY_BLOB_PAD); /* read in whole moves */
                b->sfx[0] = ' ';
                if (tpl.len) {
                    memcpy(b->sfx + 1, tpl.p, tpl.len);
                }
                b->sfx_len = (uint16_t)(tpl.len ? tpl.len + 1 : 0);
            }
        }
    }
    tr->nclusters = rt->nclusters;
    tr->clusters = sc_calloc(rt->nclusters ? rt->nclusters : 1, sizeof(*tr->clusters));
    tr->eps = sc_calloc(rt->nclusters ? rt->nclusters : 1, sizeof(*tr->eps));
    for (size_t i = 0; i < rt->nclusters; i++) {
        const struct proxy_cluster *c = &rt->clusters[i];
        proxy_span_str(sc, "sidecar.cluster", sc_str_c(c->name));
        proxy_span_blob_take(&tr->clusters[i], sc);
        tr->eps[i] = sc_calloc(c->neps + 1, sizeof(**tr->eps));
        for (size_t e = 0; e < c->neps; e++) {
            proxy_span_str(sc, "sidecar.cluster", sc_str_c(c->name));
            proxy_span_str(sc, "sidecar.upstream.endpoint", sc_str_c(c->eps[e].name));
            proxy_span_blob_take(&tr->eps[i][e], sc);
        }
    }
    static const char *const versions[] = { "1.0", "1.1", "2" };
    for (size_t i = 0; i < SC_ARRAY_LEN(tr->proto); i++) {
        proxy_span_str(sc, "network.protocol.version", sc_str_c(versions[i]));
        proxy_span_blob_take(&tr->proto[i], sc);
    }
    for (size_t i = 1; i < SC_ARRAY_LEN(tr->methods); i++) {
        proxy_span_str(sc, "http.request.method", sc_str_c(proxy_span_method_names[i]));
        proxy_span_blob_take(&tr->methods[i], sc);
    }
    for (size_t i = 0; i < tc->custom_tags.n; i++) {
        const struct sc_kv *kv = &tc->custom_tags.v[i];
        proxy_span_str_n(sc, kv->key, strlen(kv->key), sc_str_c(kv->value));
    }
    proxy_span_blob_take(&tr->tags, sc);
    sc_free(sc);
}

static void add_kv(struct proxy_trace_resource *r, const char *k, const char *v)
{
    r->kv = sc_reallocarray(r->kv, r->n + 1, sizeof(*r->kv));
    r->kv[r->n].key = sc_strdup(k);
    r->kv[r->n].value = sc_strdup(v);
    r->n++;
}

/* service.name from the config, the workload's app label, $POD_NAME or the host name;
 * service.namespace and k8s.namespace.name from the workload; k8s.pod.name from $POD_NAME. */
static struct proxy_trace_resource make_resource(const struct proxy_cfg *cfg)
{
    struct proxy_trace_resource r = { 0 };
    struct proxy_workload wl;
    char *err = NULL;
    bool have_wl = proxy_workload_init(&wl, &cfg->workload, &err) == 0;
    sc_free(err);
    const char *app = NULL;
    for (size_t i = 0; have_wl && i < wl.nlabels && !app; i++) {
        if (strcmp(wl.labels[i].key, "app") == 0 ||
            strcmp(wl.labels[i].key, "app.kubernetes.io/name") == 0) {
            app = wl.labels[i].value;
        }
    }
    const char *pod = getenv("POD_NAME");
    char host[256] = "sidecar";
    if (!pod || !*pod) {
        if (gethostname(host, sizeof(host) - 1) == 0) {
            host[sizeof(host) - 1] = '\0';
        }
    }
    const char *svc = cfg->tracing.service_name && *cfg->tracing.service_name
                          ? cfg->tracing.service_name
                      : app           ? app
                      : (pod && *pod) ? pod
                                      : host;
    add_kv(&r, "service.name", svc);
    if (have_wl) {
        add_kv(&r, "service.namespace", wl.ns);
        add_kv(&r, "k8s.namespace.name", wl.ns);
    }
    add_kv(&r, "k8s.pod.name", pod && *pod ? pod : host);
    add_kv(&r, "telemetry.sdk.name", "sidecar");
    if (have_wl) {
        proxy_workload_cleanup(&wl);
    }
    return r;
}

void proxy_trace_setup(struct proxy *px, struct proxy_rt *rt, const struct proxy_cfg *cfg)
{
    const struct proxy_trace_cfg *tc = &cfg->tracing;
    if (tc->provider == PROXY_TRACE_NONE) {
        return; /* an exporter started earlier drains what it holds; nothing new arrives */
    }
    if (!px->tracer) {
        px->tracer = proxy_tracer_new(sc_app_loop(px->app), px->pm.reg, tc, make_resource(cfg));
    } else {
        proxy_tracer_configure(px->tracer, tc);
    }
    static uint64_t gens; /* main loop only */
    struct proxy_trace_rt *tr = SC_NEW(struct proxy_trace_rt);
    tr->gen = ++gens;
    tr->tracer = px->tracer;
    tr->threshold = (uint32_t)(tc->sampling * 10000.0 + 0.5);
    tr->wire = tc->provider == PROXY_TRACE_OTLP_HTTP;
    if (tc->force_header) {
        size_t n = strlen(tc->force_header);
        for (size_t i = 0; i < n; i++) {
            char c = tc->force_header[i];
            tr->force[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        tr->force_len = n;
    }
    for (size_t i = 0; i < tc->propagation.n; i++) {
        tr->propagate |= prop_bit(tc->propagation.v[i]);
    }
    if (!tr->propagate) {
        tr->propagate = tc->provider == PROXY_TRACE_ZIPKIN ? PROXY_PROP_B3MULTI : PROXY_PROP_W3C;
    }
    tr->nkinds = rt->nlisteners;
    tr->kinds = sc_calloc(rt->nlisteners ? rt->nlisteners : 1, 1);
    const struct proxy_listener_cfg *lcs = cfg->listeners.v;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        bool outbound = i < cfg->listeners.n ? lcs[i].tlscfg.direction == 1
                                             : strcmp(rt->listeners[i].name, "outbound") == 0;
        tr->kinds[i] = outbound ? PROXY_SPAN_CLIENT : PROXY_SPAN_SERVER;
    }
    make_blobs(tr, rt, tc);
    rt->trace = tr;
}

/* ---- spans ---- */

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The wall-clock time of monotonic instant <mono> of an exchange that started at wall time
 * span->start_ns and monotonic time <start>. */
static uint64_t at(const struct proxy_span *s, uint64_t start, uint64_t mono)
{
    return s->start_ns + (mono > start ? mono - start : 0);
}

/* A random non-zero id of 8 bytes (a span id, half a trace id); returns it as a number. */
static uint64_t rand_id(struct proxy_worker *w, uint8_t out[8])
{
    uint64_t r;
    do {
        r = proxy_rand(w);
    } while (r == 0);
    memcpy(out, &r, 8);
    return r;
}

/* The port of a Host value ("h:8080", "[::1]:8080"), or <def>; sets <*host> to the name. */
static int64_t host_port(struct sc_str v, struct sc_str *host, int64_t def)
{
    *host = v;
    const char *end = v.p + v.len, *c = end;
    while (c > v.p && c[-1] >= '0' && c[-1] <= '9') {
        c--;
    }
    if (c == end || c == v.p || c[-1] != ':' || end - c > 5) {
        return def;
    }
    if (memchr(v.p, ':', (size_t)(c - 1 - v.p)) && v.p[0] != '[') {
        return def; /* a bare IPv6 address */
    }
    int64_t port = 0;
    for (const char *p = c; p < end; p++) {
        port = port * 10 + (*p - '0');
    }
    host->len = (size_t)(c - 1 - v.p);
    return port;
}

/* Records server.address and .port (from Host value <host>, when there is one) and
 * network.peer.address and .port. */
static void conn_attrs(struct proxy_exch *ex, struct proxy_span *s, struct sc_str host, bool tls)
{
    if (host.len) {
        struct sc_str h;
        int64_t port = host_port(host, &h, tls ? 443 : 80);
        proxy_span_str(s, "server.address", h);
        proxy_span_int(s, "server.port", port);
    }
    proxy_span_str(s, "network.peer.address", sc_str_c(ex->cl->ip));
    const struct sockaddr *sa = (const struct sockaddr *)&ex->cl->addr;
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        uint16_t p = sa->sa_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                              : ((const struct sockaddr_in6 *)sa)->sin6_port;
        proxy_span_int(s, "network.peer.port", ntohs(p));
    }
}

/* Whether the <n> bytes at <a> and <b> are the same: a Host value of 8 to 16 bytes (an address
 * and a port) in two overlapping 8-byte compares, anything else through memcmp. */
static inline __attribute__((always_inline)) bool same_bytes(const char *a, const char *b, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t w, x, y, z;
        memcpy(&w, a, 8);
        memcpy(&x, b, 8);
        memcpy(&y, a + n - 8, 8);
        memcpy(&z, b + n - 8, 8);
        return ((w ^ x) | (y ^ z)) == 0;
    }
    return n == 0 || memcmp(a, b, n) == 0;
}

/* Whether connection cache <pc> holds the piece of a request of method <mi> and path <path>,
 * with protocol version <proto>, Host value <host> and User-Agent <ua> (p NULL: none), under
 * <tr>'s generation (see proxy_span_conn). */
static inline bool conn_hit(const struct proxy_span_conn *pc, const struct proxy_trace_rt *tr,
                            unsigned mi, struct sc_str path, unsigned proto, struct sc_str host,
                            struct sc_str ua)
{
    return pc && pc->gen == tr->gen && pc->method == mi && pc->proto == proto &&
           pc->pathv_len == path.len && pc->hostv_len == host.len && pc->uav_len == ua.len &&
           pc->has_ua == (ua.p != NULL) && same_bytes(pc->pathv, path.p, path.len) &&
           same_bytes(pc->hostv, host.p, host.len) && same_bytes(pc->uav, ua.p, ua.len);
}

/* Records the connection's attributes for listener <li> of the snapshot, protocol version
 * <proto>, Host value <host> and User-Agent <ua> (p NULL: none) after the request's, which the
 * span holds from <from> on (<n0> attributes and <d0> dropped before them), and keeps all of it
 * in the connection's cache for a request of method <mi> and path <path> when <keep> says it
 * may be and nothing of it was cut or dropped. */
static void conn_segment(struct proxy_exch *ex, struct proxy_span *s,
                         const struct proxy_trace_rt *tr, size_t li, bool tls, unsigned proto,
                         struct sc_str host, struct sc_str ua, unsigned mi, struct sc_str path,
                         bool keep, uint16_t from, uint16_t n0, uint16_t d0)
{
    struct proxy_span_conn *pc = ex->cl->trace;
    if (!pc) {
        pc = ex->cl->trace = SC_NEW(struct proxy_span_conn);
    }
    /* Kept only when it cannot have been cut: room for all of it and a margin, and slots. */
    bool k = keep && mi && path.len <= sizeof(pc->pathv) && host.len <= sizeof(pc->hostv) &&
             ua.len <= sizeof(pc->uav) &&
             (size_t)(s->str_off - s->attr_len) >= host.len + ua.len + sizeof(pc->seg) &&
             s->nattrs + 8 <= PROXY_SPAN_MAX_ATTRS;
    proxy_span_blob_add(s, &tr->lsn[2 * li + tls]); /* url.scheme, sidecar.listener */
    proxy_span_blob_add(s, &tr->proto[proto]);
    conn_attrs(ex, s, host, tls);
    if (ua.p) {
        proxy_span_str(s, "user_agent.original", ua);
    }
    pc->gen = 0;
    size_t l = (size_t)(s->attr_len - from);
    if (k && s->dropped_attrs == d0 && l <= sizeof(pc->seg) - PROXY_BLOB_PAD) {
        memcpy(pc->seg, s->arena + from, l);
        pc->seg_len = (uint16_t)l;
        pc->seg_n = (uint16_t)(s->nattrs - n0);
        if (path.len) {
            memcpy(pc->pathv, path.p, path.len);
        }
        pc->pathv_len = (uint16_t)path.len;
        if (host.len) {
            memcpy(pc->hostv, host.p, host.len);
        }
        pc->hostv_len = (uint16_t)host.len;
        if (ua.len) {
            memcpy(pc->uav, ua.p, ua.len);
        }
        pc->uav_len = (uint16_t)ua.len;
        pc->has_ua = ua.p != NULL;
        pc->proto = (uint8_t)proto;
        pc->method = (uint8_t)mi;
        pc->gen = tr->gen;
    }
}

/* Header <h>'s value, none when NULL. */
static inline struct sc_str hval(const struct sc_http_header *h)
{
    return h ? h->value : SC_STR_NULL;
}

void proxy_trace_begin(struct proxy_exch *ex, const struct sc_http_msg *m)
{
    const struct proxy_trace_rt *tr = ex->rt->trace;
    struct proxy_exch_trace *t = &ex->tr;
    /* The headers found, as pointers (half the state of views); the first one counts for
     * traceparent, tracestate and b3 (one with a value), the last for the others. */
    const struct sc_http_header *tp = NULL, *ts = NULL, *b3 = NULL, *bt = NULL, *bs = NULL,
                                *bsm = NULL, *bf = NULL, *uah = NULL;
    bool forced = false;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        struct sc_str n = h->name;
        switch (n.len) {
        case 2:
            if (sc_str_caseeq(n, SC_STR("b3"))) {
                b3 = b3 && b3->value.p ? b3 : h;
            }
            break;
        case 10:
            if (sc_str_caseeq(n, SC_STR("tracestate"))) {
                ts = ts && ts->value.p ? ts : h;
            } else if (sc_str_caseeq(n, SC_STR("user-agent"))) {
                uah = h;
            } else if (sc_str_caseeq(n, SC_STR("x-b3-flags"))) {
                bf = h;
            }
            break;
        case 11:
            if (sc_str_caseeq(n, SC_STR("traceparent"))) {
                tp = tp && tp->value.p ? tp : h;
            } else if (sc_str_caseeq(n, SC_STR("x-b3-spanid"))) {
                bs = h;
            }
            break;
        case 12:
            if (sc_str_caseeq(n, SC_STR("x-b3-traceid"))) {
                bt = h;
            } else if (sc_str_caseeq(n, SC_STR("x-b3-sampled"))) {
                bsm = h;
            }
            break;
        default:
            break;
        }
        if (tr->force_len && n.len == tr->force_len &&
            sc_str_caseeq(n, sc_str_n(tr->force, tr->force_len))) {
            forced = true;
        }
    }
    struct proxy_trace_ctx c = { 0 };
    bool w3c = tp && tp->value.p && proxy_traceparent_parse(tp->value, &c) == 0;
    if (!w3c && !(b3 && b3->value.p && proxy_b3_parse(b3->value, &c) == 0) &&
        (bt || bs || bsm || bf)) {
        (void)proxy_b3_multi_parse(hval(bt), hval(bs), hval(bsm), hval(bf), &c);
    }
    /* This hop's span id is random whatever the context says: its high half is the sampling
     * draw, as a ratio sampler draws from an id rather than from a generator of its own. */
    uint64_t sid = rand_id(ex->w, t->span_id);
    t->on = true;
    t->debug = c.sampling == PROXY_TRACE_DEBUG;
    if (forced || c.sampling == PROXY_TRACE_DEBUG || c.sampling == PROXY_TRACE_ACCEPT) {
        t->sampled = true;
    } else if (c.sampling == PROXY_TRACE_DENY) {
        t->sampled = false;
    } else {
        /* A draw in [0, 1000000) by multiply and shift (no division). */
        t->sampled = (uint32_t)(((sid >> 32) * 1000000u) >> 32) < tr->threshold;
    }
    if (c.has_ids) {
        memcpy(t->trace_id, c.trace_id, 16);
        memcpy(t->parent_id, c.span_id, 8);
        t->has_parent = true;
    } else {
        rand_id(ex->w, t->trace_id);
        rand_id(ex->w, t->trace_id + 8);
    }
    if (!t->sampled) {
        return;
    }
    struct proxy_span *s = proxy_tracer_span(tr->tracer, &ex->w->spans);
    ex->span = s;
    memcpy(s->trace_id, t->trace_id, 16);
    memcpy(s->span_id, t->span_id, 8);
    memcpy(s->parent_id, t->parent_id, 8);
    s->has_parent = t->has_parent;
    struct proxy_span_cache *wc = &ex->w->spans;
    if (!wc->wall_at || ex->start_ns - wc->wall_at >= 1000000000ull) {
        wc->wall_off = wall_ns() - proxy_now_ns();
        wc->wall_at = ex->start_ns;
    }
    s->start_ns = ex->start_ns + wc->wall_off;
    ptrdiff_t li = ex->lsn - ex->rt->listeners;
    bool in_rt = li >= 0 && li < (ptrdiff_t)tr->nkinds;
    s->kind = in_rt ? tr->kinds[li] : PROXY_SPAN_SERVER;
    if (w3c && ts && ts->value.p && proxy_tracestate_valid(ts->value)) {
        s->state_len = proxy_span_put(s, ts->value, &s->state_off);
    }
    struct sc_str origin = m->target, path = m->target;
    if (path.len && path.p[0] == '/' && path.len <= 16) {
        /* A short origin-form target (proxy_target_path's case, without a call to memchr) */
        for (size_t i = 1; i < path.len; i++) {
            if (path.p[i] == '?') {
                path.len = i;
                break;
            }
        }
    } else {
        path = proxy_target_path(m->target, &origin);
    }
    /* The query: after the path when the path is the start of the origin-form target (the
     * path's end is where proxy_target_path found its '?'), else searched for. */
    const char *q = path.p == origin.p ? (path.len < origin.len ? origin.p + path.len : NULL)
                    : origin.len       ? memchr(origin.p, '?', origin.len)
                                       : NULL;
    unsigned mi = proxy_span_method(m->method);
    s->method = (uint8_t)mi;
    struct sc_str up = ex->is_connect ? m->target : path;
    bool query = q && !ex->is_connect;
    bool tls = ex->cl->tls != NULL;
    unsigned proto = ex->down_h2 ? 2 : m->minor_version ? 1 : 0;
    struct sc_str ua = hval(uah);
    if (in_rt && !query && conn_hit(ex->cl->trace, tr, mi, up, proto, m->host, ua)) {
        const struct proxy_span_conn *pc = ex->cl->trace;
        proxy_span_add_padded(s, pc->seg, pc->seg_len, pc->seg_n);
        return;
    }
    uint16_t from = s->attr_len, n0 = s->nattrs, d0 = s->dropped_attrs;
    if (mi) {
        proxy_span_blob_add(s, &tr->methods[mi]);
    } else {
        proxy_span_str_fast(s, "http.request.method", m->method);
    }
    proxy_span_str_fast(s, "url.path", up);
    if (query) {
        proxy_span_str(s, "url.query", sc_str_n(q + 1, origin.len - (size_t)(q + 1 - origin.p)));
    }
    if (in_rt) {
        conn_segment(ex, s, tr, (size_t)li, tls, proto, m->host, ua, mi, up, !query, from, n0, d0);
        return;
    }
    proxy_span_str(s, "url.scheme", tls ? SC_STR("https") : SC_STR("http"));
    proxy_span_str(s, "sidecar.listener", sc_str_c(ex->lsn->name));
    proxy_span_blob_add(s, &tr->proto[proto]);
    conn_attrs(ex, s, m->host, tls);
    if (ua.p) {
        proxy_span_str(s, "user_agent.original", ua);
    }
}

void proxy_trace_event_n(struct proxy_exch *ex, const char *name, size_t nlen)
{
    if (ex->span) {
        proxy_span_event_n(ex->span, name, nlen, at(ex->span, ex->start_ns, proxy_now_ns()));
    }
}

static const char *const flag_names[] = { "UF",  "UT",  "URX", "UH", "UC", "DC", "NR",
                                          "UPE", "DPE", "SI",  "UO", "DI", "FI", "RL" };

/* Writes the span's name, "<method> <route template>" (cut to NAME_MAX_LEN bytes): as it is from
 * the method's name and the route's blob <rb> (NULL: none) when nothing in it needs cutting or
 * mending, else through proxy_span_put. */
static void put_name(struct proxy_exch *ex, struct proxy_span *s, const struct proxy_span_blob *rb,
                     struct sc_str route_tpl)
{
    static const uint8_t mlens[PROXY_SPAN_METHODS] = { 0, 3, 4, 3, 4, 5, 5, 6, 7, 7 };
    size_t ml = mlens[s->method];
    if (ml && rb && rb->sfx && (size_t)(s->str_off - s->attr_len) >= ml + rb->sfx_len) {
        s->str_off = (uint16_t)(s->str_off - ml - rb->sfx_len);
        char *o = s->arena + s->str_off;
        if (ml + rb->sfx_len >= 8) {
            memcpy(o, proxy_span_method_names[s->method], 8); /* the rest is overwritten next */
        } else {
            memcpy(o, proxy_span_method_names[s->method], ml);
        }
        memcpy(o + ml, rb->sfx, rb->sfx_len);
        s->name_off = s->str_off;
        s->name_len = (uint16_t)(ml + rb->sfx_len);
        return;
    }
    ml = strlen(ex->method);
    char name[NAME_MAX_LEN + 1];
    memcpy(name, ex->method, ml);
    if (route_tpl.len) {
        size_t n = route_tpl.len < sizeof(name) - ml - 1 ? route_tpl.len : sizeof(name) - ml - 1;
        name[ml] = ' ';
        memcpy(name + ml + 1, route_tpl.p, n);
        ml += 1 + n;
    }
    s->name_len = proxy_span_put(s, sc_str_n(name, ml), &s->name_off);
}

/* Keeps in the connection's <pc> the end piece of route blob <rb> and endpoint blob <eb> for the
 * exchange's route, cluster <c>, endpoint and the span's method (see proxy_span_conn), when it
 * fits: a method of the table and a route whose name is written as it is (rb->sfx). */
static void end_piece(struct proxy_exch *ex, const struct proxy_span *s,
                      const struct proxy_trace_rt *tr, const struct proxy_cluster *c,
                      const struct proxy_span_blob *rb, const struct proxy_span_blob *eb)
{
    static const uint8_t mlens[PROXY_SPAN_METHODS] = { 0, 3, 4, 3, 4, 5, 5, 6, 7, 7 };
    struct proxy_span_conn *pc = ex->cl->trace;
    size_t ml = mlens[s->method];
    pc->e_gen = 0;
    if (!ml || !rb->sfx || ml + rb->sfx_len > 64 || (size_t)rb->len + eb->len > 256) {
        return;
    }
    memcpy(pc->e_name, proxy_span_method_names[s->method], ml);
    memcpy(pc->e_name + ml, rb->sfx, rb->sfx_len);
    pc->e_name_len = (uint16_t)(ml + rb->sfx_len);
    memcpy(pc->e_attrs, rb->p, rb->len);
    memcpy(pc->e_attrs + rb->len, eb->p, eb->len);
    pc->e_len = (uint16_t)(rb->len + eb->len);
    pc->e_n = (uint16_t)(rb->n + eb->n);
    pc->e_dropped = (uint16_t)(rb->dropped + eb->dropped);
    pc->e_route = ex->route;
    pc->e_cluster = c;
    pc->e_ep = ex->ep;
    pc->e_method = s->method;
    pc->e_gen = tr->gen;
}

/* What proxy_trace_end records when the span is of the common shape: the connection's end piece
 * <pc> is this exchange's, a status of 100 to 16383 that is not an error, no retry, no response
 * flag, no TLS, and room for all of it. Writes the same bytes in the same order as the general
 * path below, with one cursor and one check of room and slots up front. Returns false (having
 * written nothing) when the span is not of that shape. */
static inline __attribute__((always_inline)) bool end_fast(struct proxy_exch *ex,
                                                           struct proxy_span *s,
                                                           const struct proxy_trace_rt *tr,
                                                           const struct proxy_span_conn *pc)
{
    /* http.response.status_code's head for a two-byte value: ATTR, 32, KEY, 25, the key, VALUE,
     * 3, INT (proxy_span_int_n's bytes). */
    _Static_assert(PROXY_PB_ATTR == 0x4a && PROXY_PB_KEY == 0x0a && PROXY_PB_VALUE == 0x12 &&
                       PROXY_PB_INT == 0x18,
                   "st_head's wire bytes");
    static const char st_head[] = "\x4a\x20\x0a\x19"
                                  "http.response.status_code"
                                  "\x12\x03\x18";
    static const char id_key[] = "http.request.header.x-request-id";
    static const char du_key[] = "sidecar.upstream.duration_us";
    int st = ex->status;
    size_t idl = ex->request_id_len;
    if (st < 128 || st >= 500 || ex->retries > 0 || ex->flags || ex->cl->tls ||
        (s->kind == PROXY_SPAN_CLIENT && st >= 400) || idl + sizeof(id_key) - 1 + 6 >= 0x80) {
        return false;
    }
    size_t n = pc->e_name_len;
    size_t need = n + pc->e_len + 34 + (sizeof(id_key) - 1 + 8 + idl) +
                  (sizeof(du_key) - 1 + 7 + 10) + tr->tags.len + PROXY_BLOB_PAD;
    if ((size_t)(s->str_off - s->attr_len) < need ||
        s->nattrs + pc->e_n + tr->tags.n + 3u > PROXY_SPAN_MAX_ATTRS) {
        return false;
    }
    /* The name, "<method> <template>", at the back of the arena (as put_name writes it). When
     * nothing is there yet, it is written in whole moves that may run into the arena's pad. */
    unsigned so = (unsigned)(s->str_off - n);
    char *nm = s->arena + so;
    if (s->str_off == PROXY_SPAN_ARENA) {
        memcpy(nm, pc->e_name, PROXY_BLOB_PAD);
        if (n > PROXY_BLOB_PAD) {
            memcpy(nm + PROXY_BLOB_PAD, pc->e_name + PROXY_BLOB_PAD, PROXY_BLOB_PAD);
        }
    } else {
        memcpy(nm, pc->e_name, n);
    }
    s->str_off = (uint16_t)so;
    s->name_off = (uint16_t)so;
    s->name_len = (uint16_t)n;
    char *o = s->arena + s->attr_len;
    unsigned na = s->nattrs + pc->e_n + 1u;
    /* http.route, sidecar.route, sidecar.cluster, sidecar.upstream.endpoint */
    size_t el = pc->e_len;
    if (el > 2 * PROXY_BLOB_PAD) {
        memcpy(o, pc->e_attrs, el);
    } else {
        for (size_t i = 0; i < el; i += PROXY_BLOB_PAD) {
            memcpy(o + i, pc->e_attrs + i, PROXY_BLOB_PAD);
        }
    }
    o += el;
    memcpy(o, st_head, sizeof(st_head) - 1);
    o[32] = (char)(st | 0x80); /* a two-byte varint: 128 <= st < 16384 */
    o[33] = (char)(st >> 7);
    o += 34;
    if (idl) {
        char *v = o + sizeof(id_key) - 1 + 8;
        if (proxy_ascii_copy(v, ex->request_id, idl)) {
            o[0] = (char)PROXY_PB_ATTR;
            o[1] = (char)(sizeof(id_key) - 1 + 6 + idl);
            o[2] = (char)PROXY_PB_KEY;
            o[3] = (char)(sizeof(id_key) - 1);
            memcpy(o + 4, id_key, sizeof(id_key) - 1);
            o[36] = (char)PROXY_PB_VALUE;
            o[37] = (char)(2 + idl);
            o[38] = (char)PROXY_PB_STR;
            o[39] = (char)idl;
            o = v + idl;
            na++;
        } else {
            s->attr_len = (uint16_t)(o - s->arena);
            s->nattrs = (uint16_t)na;
            proxy_span_str_n(s, id_key, sizeof(id_key) - 1, sc_str_n(ex->request_id, idl));
            o = s->arena + s->attr_len;
            na = s->nattrs;
        }
    }
    if (ex->upstream_total_ns) {
        uint64_t us = ex->upstream_total_ns / 1000;
        size_t any = 1 + proxy_pb_vsz(us);
        o[0] = (char)PROXY_PB_ATTR;
        o[1] = (char)(sizeof(du_key) - 1 + 4 + any);
        o[2] = (char)PROXY_PB_KEY;
        o[3] = (char)(sizeof(du_key) - 1);
        memcpy(o + 4, du_key, sizeof(du_key) - 1);
        o[32] = (char)PROXY_PB_VALUE;
        o[33] = (char)any;
        o[34] = (char)PROXY_PB_INT;
        o = proxy_pb_varint(o + 35, us);
        na++;
    }
    unsigned dropped = s->dropped_attrs + pc->e_dropped;
    if (tr->tags.n) {
        s->attr_len = (uint16_t)(o - s->arena);
        s->nattrs = (uint16_t)na;
        proxy_span_blob_add(s, &tr->tags);
        o = s->arena + s->attr_len;
        na = s->nattrs;
        dropped += tr->tags.dropped;
    }
    s->attr_len = (uint16_t)(o - s->arena);
    s->nattrs = (uint16_t)na;
    s->dropped_attrs = (uint16_t)dropped;
    return true;
}

/* Queues ended span <s>, its OTLP protobuf message written into its block first when that is
 * what the exporter sends. */
static inline void push(const struct proxy_trace_rt *tr, struct proxy_exch *ex,
                        struct proxy_span *s)
{
    if (tr->wire) {
        proxy_span_finish(s);
    }
    proxy_tracer_push(tr->tracer, s, &ex->w->spans);
}

void proxy_trace_end(struct proxy_exch *ex, uint64_t now)
{
    struct proxy_span *s = ex->span;
    ex->span = NULL;
    s->end_ns = at(s, ex->start_ns, now);
    const struct proxy_trace_rt *tr = ex->rt->trace;
    const struct proxy_route *rt = ex->route;
    const struct proxy_cluster *c = ex->cluster ? ex->cluster : rt->cluster;
    struct proxy_span_conn *pc = ex->cl->trace;
    if (pc && pc->e_gen == tr->gen && pc->e_route == rt && pc->e_cluster == c &&
        pc->e_ep == ex->ep && pc->e_method == s->method && end_fast(ex, s, tr, pc)) {
        push(tr, ex, s);
        return;
    }
    struct sc_str route_tpl = route_template(rt);
    const struct proxy_listener *l = ex->lsn;
    ptrdiff_t li = l - ex->rt->listeners;
    ptrdiff_t ri = rt == &l->noroute ? (ptrdiff_t)l->nroutes : rt - l->routes;
    const struct proxy_span_blob *rb = NULL;
    if (li >= 0 && li < (ptrdiff_t)tr->nkinds && ri >= 0 && ri <= (ptrdiff_t)l->nroutes &&
        (ri == (ptrdiff_t)l->nroutes ? &l->noroute : &l->routes[ri]) == rt) {
        rb = &tr->routes[li][ri];
    }
    ptrdiff_t ci = c ? c - ex->rt->clusters : -1;
    bool c_in_rt = c && ci >= 0 && ci < (ptrdiff_t)tr->nclusters && &ex->rt->clusters[ci] == c;
    ptrdiff_t ei = c_in_rt && ex->ep ? ex->ep - c->eps : -1;
    const struct proxy_span_blob *eb =
        ei >= 0 && ei < (ptrdiff_t)c->neps && &c->eps[ei] == ex->ep ? &tr->eps[ci][ei] : NULL;
    if (pc && rb && eb) {
        end_piece(ex, s, tr, c, rb, eb);
        if (pc->e_gen && end_fast(ex, s, tr, pc)) {
            push(tr, ex, s);
            return;
        }
    }
    put_name(ex, s, rb, route_tpl);
    if (rb) {
        proxy_span_blob_add(s, rb); /* http.route, sidecar.route */
    } else {
        if (route_tpl.len) {
            proxy_span_str(s, "http.route", route_tpl);
        }
        proxy_span_str(s, "sidecar.route", sc_str_c(rt->name));
    }
    if (eb) {
        proxy_span_blob_add(s, eb); /* sidecar.cluster, sidecar.upstream.endpoint */
    } else {
        if (c_in_rt) {
            proxy_span_blob_add(s, &tr->clusters[ci]);
        } else if (c) {
            proxy_span_str(s, "sidecar.cluster", sc_str_c(c->name));
        }
        if (ex->ep) {
            proxy_span_str(s, "sidecar.upstream.endpoint", sc_str_c(ex->ep->name));
        }
    }
    if (ex->status > 0) {
        proxy_span_int_fast(s, "http.response.status_code", ex->status);
    }
    if (ex->request_id_len) {
        proxy_span_str_fast(s, "http.request.header.x-request-id",
                            sc_str_n(ex->request_id, ex->request_id_len));
    }
    if (ex->retries > 0) {
        proxy_span_int_fast(s, "sidecar.retries", ex->retries);
    }
    if (ex->upstream_total_ns) {
        proxy_span_int_fast(s, "sidecar.upstream.duration_us",
                            (int64_t)(ex->upstream_total_ns / 1000));
    }
    if (ex->flags) {
        char fl[64];
        size_t n = 0;
        for (size_t i = 0; i < SC_ARRAY_LEN(flag_names); i++) {
            if (ex->flags & (1u << i)) {
                size_t k = strlen(flag_names[i]);
                if (n + k + 1 >= sizeof(fl)) {
                    break;
                }
                if (n) {
                    fl[n++] = ',';
                }
                memcpy(fl + n, flag_names[i], k);
                n += k;
            }
        }
        proxy_span_str(s, "sidecar.response_flags", sc_str_n(fl, n));
        if (ex->flags & F_UT) {
            proxy_span_event(s, "upstream_timeout", s->end_ns);
        }
        if (ex->flags & F_SI) {
            proxy_span_event(s, "stream_idle_timeout", s->end_ns);
        }
    }
    if (ex->cl->tls) {
        struct sc_str pr = proxy_tls_peer_principal(ex);
        if (pr.len) {
            proxy_span_str(s, "sidecar.peer.principal", pr);
        }
    }
    if (tr->tags.n) {
        proxy_span_blob_add(s, &tr->tags);
    }
    /* OpenTelemetry: 5xx is an error on both sides, 4xx on the client side only; no status at
     * all (the client or the upstream went away) is one too. */
    int st = ex->status;
    bool err = st >= 500 || st <= 0 || (s->kind == PROXY_SPAN_CLIENT && st >= 400);
    if (err) {
        s->status = 2;
        char et[16];
        int n = st > 0 ? snprintf(et, sizeof(et), "%d", st) : snprintf(et, sizeof(et), "_OTHER");
        proxy_span_str(s, "error.type", sc_str_n(et, (size_t)n));
    }
    push(tr, ex, s);
}
