// SPDX-License-Identifier: Apache-2.0
// The Envoy bootstrap's clusters, addresses and TLS contexts (see proxy_envoy.c for the rest and
// proxy_front.h for the front end): STATIC, STRICT_DNS, LOGICAL_DNS and ORIGINAL_DST clusters with
// their load assignment, circuit breakers, outlier detection, health check and UpstreamTlsContext,
// and the DownstreamTlsContext of listeners. Invariant: as everywhere in the front end, a field is
// translated, noted or refused with its path.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_envoy.h"

int proxy_envoy_address(struct proxy_front *f, const struct sc_ynode *a, const char *path,
                        char *out, size_t len)
{
    static const char *const a_keys[] = { "socket_address", NULL };
    static const char *const sa_keys[] = { "address", "port_value", "protocol", NULL };
    static const char *const sa_noted[] = { "ipv4_compat", NULL };
    if (!a) {
        return proxy_front_refuse(f, a, path, "address is required");
    }
    if (proxy_front_keys(f, a, path, a_keys, NULL) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_ynode *sa = sc_ynode_get(a, "socket_address");
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".socket_address");
    if (!sa || proxy_front_keys(f, sa, p, sa_keys, sa_noted) < 0) {
        return sa ? SC_ECONFIG : proxy_front_refuse(f, a, path, "socket_address is required");
    }
    const char *host = proxy_front_str(f, sa, "address", p),
               *port = proxy_front_str(f, sa, "port_value", p);
    const char *proto = proxy_front_str(f, sa, "protocol", p);
    if (proto && strcmp(proto, "TCP") != 0) {
        return proxy_front_refuse(f, sc_ynode_get(sa, "protocol"), p,
                                  "protocol %.16s is not supported", proto);
    }
    if (!host || !port) {
        return proxy_front_refuse(f, sa, p, "address and port_value are required");
    }
    snprintf(out, len, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    return 0;
}

/* A DataSource {filename} (inline data is refused: the proxy watches files). */
static void data_source(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                        const struct sc_ynode *src, const char *key, const char *path)
{
    const struct sc_ynode *ds = sc_ynode_get(src, key);
    if (!ds) {
        return;
    }
    static const char *const ds_keys[] = { "filename", NULL };
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".%s", key);
    if (proxy_front_keys(f, ds, p, ds_keys, NULL) == 0) {
        proxy_front_copy(f, dst, key2, ds, "filename");
    }
}

static const struct proxy_front_enum tls_versions[] = {
    { "TLS_AUTO", "auto" },   { "TLSv1_0", "TLSv1.0" }, { "TLSv1_1", "TLSv1.1" },
    { "TLSv1_2", "TLSv1.2" }, { "TLSv1_3", "TLSv1.3" }, { NULL, NULL }
};

/* CommonTlsContext into our tls object <t>; <down> for a listener. */
static void common_tls(struct proxy_front *f, struct sc_ynode *t, const struct sc_ynode *ctx,
                       const char *path, bool down)
{
    static const char *const c_keys[] = { "tls_certificates", "validation_context",
                                          "alpn_protocols", "tls_params", NULL };
    if (!ctx || proxy_front_keys(f, ctx, path, c_keys, NULL) < 0) {
        return;
    }
    const struct sc_ynode *certs = sc_ynode_get(ctx, "tls_certificates");
    static const char *const cert_keys[] = { "certificate_chain", "private_key", NULL };
    struct sc_ynode *more = down ? proxy_front_seq(f, certs) : NULL;
    for (size_t i = 0; i < sc_ynode_count(certs) && !f->err; i++) {
        const struct sc_ynode *c = sc_ynode_at(certs, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".tls_certificates[%zu]", i);
        if (proxy_front_keys(f, c, p, cert_keys, NULL) < 0) {
            return;
        }
        if (i > 0 && !down) {
            proxy_front_refuse(f, c, p, "one client certificate only");
            return;
        }
        struct sc_ynode *dst = i == 0 ? t : proxy_front_map(f, c);
        data_source(f, dst, "cert", c, "certificate_chain", p);
        data_source(f, dst, "key", c, "private_key", p);
        if (i > 0) {
            proxy_front_push(f, more, dst, c);
        }
    }
    if (sc_ynode_count(more)) {
        proxy_front_set(f, t, "certificates", more, certs);
    }
    const struct sc_ynode *vc = sc_ynode_get(ctx, "validation_context");
    static const char *const vc_keys[] = { "trusted_ca", "match_subject_alt_names",
                                           "match_typed_subject_alt_names", NULL };
    char vp[PROXY_FRONT_PATH];
    proxy_front_path(vp, path, ".validation_context");
    if (vc && proxy_front_keys(f, vc, vp, vc_keys, NULL) == 0) {
        data_source(f, t, down ? "client_ca" : "ca", vc, "trusted_ca", vp);
        struct sc_ynode *sans = proxy_front_seq(f, vc);
        for (int typed = 0; typed < 2; typed++) {
            const struct sc_ynode *l = sc_ynode_get(vc, typed ? "match_typed_subject_alt_names"
                                                              : "match_subject_alt_names");
            for (size_t i = 0; i < sc_ynode_count(l) && !f->err; i++) {
                const struct sc_ynode *m = sc_ynode_at(l, i);
                static const char *const tk[] = { "san_type", "matcher", NULL };
                static const char *const mk[] = { "exact", NULL };
                if (down) {
                    proxy_front_refuse(f, m, vp,
                                       "subject alt name checks of clients are not "
                                       "supported (authorization policies check "
                                       "principals)");
                    return;
                }
                if (typed && proxy_front_keys(f, m, vp, tk, NULL) < 0) {
                    return;
                }
                const struct sc_ynode *mm = typed ? sc_ynode_get(m, "matcher") : m;
                if (proxy_front_keys(f, mm, vp, mk, NULL) < 0) {
                    return; /* prefix, suffix, regex matchers: only exact names */
                }
                const struct sc_ynode *e = sc_ynode_get(mm, "exact");
                proxy_front_push(f, sans, sc_ytree_copy(f->out, e), e ? e : mm);
            }
        }
        if (sc_ynode_count(sans)) {
            proxy_front_set(f, t, "subject_alt_names", sans, vc);
        }
    } else if (!vc && !down && !f->err) {
        proxy_front_note(f, ctx, path,
                         "without a validation_context the server's certificate is "
                         "not verified (as Envoy does): insecure_skip_verify");
        proxy_front_put(f, t, "insecure_skip_verify", ctx, "true");
    }
    proxy_front_copy(f, t, "alpn", ctx, "alpn_protocols");
    const struct sc_ynode *tp = sc_ynode_get(ctx, "tls_params");
    static const char *const tp_keys[] = { "tls_minimum_protocol_version",
                                           "tls_maximum_protocol_version", NULL };
    static const char *const tp_noted[] = { "cipher_suites", "ecdh_curves", "signature_algorithms",
                                            NULL };
    if (tp && proxy_front_keys(f, tp, path, tp_keys, tp_noted) == 0) {
        for (int mx = 0; mx < 2; mx++) {
            const char *k = mx ? "tls_maximum_protocol_version" : "tls_minimum_protocol_version";
            const struct proxy_front_enum *v = proxy_front_enum(f, tp, k, path, NULL, tls_versions);
            if (f->err) {
                return;
            }
            if (v) {
                proxy_front_put(f, t, mx ? "max_version" : "min_version", sc_ynode_get(tp, k),
                                v->ours);
            }
        }
    }
}

/* transport_socket {name, typed_config: Downstream/UpstreamTlsContext} into our tls object. */
struct sc_ynode *proxy_envoy_transport_socket(struct proxy_front *f, const struct sc_ynode *ts,
                                              const char *path, bool down)
{
    static const char *const ts_keys[] = { "name", "typed_config", NULL };
    if (proxy_front_keys(f, ts, path, ts_keys, NULL) < 0) {
        return NULL;
    }
    const struct sc_ynode *tc = sc_ynode_get(ts, "typed_config");
    char p[PROXY_FRONT_PATH];
    proxy_front_path(p, path, ".typed_config");
    if (proxy_envoy_want_type(f, tc, p, down ? T_DOWN_TLS : T_UP_TLS) < 0) {
        return NULL;
    }
    static const char *const down_keys[] = { "@type", "common_tls_context",
                                             "require_client_certificate", "session_timeout",
                                             NULL };
    static const char *const up_keys[] = { "@type", "common_tls_context", "sni", "max_session_keys",
                                           NULL };
    static const char *const noted[] = { "disable_stateless_session_resumption",
                                         "ocsp_staple_policy", "allow_renegotiation", NULL };
    if (proxy_front_keys(f, tc, p, down ? down_keys : up_keys, noted) < 0) {
        return NULL;
    }
    struct sc_ynode *t = proxy_front_map(f, ts);
    char cp[PROXY_FRONT_PATH];
    proxy_front_path(cp, p, ".common_tls_context");
    common_tls(f, t, sc_ynode_get(tc, "common_tls_context"), cp, down);
    if (down) {
        const char *req = proxy_front_str(f, tc, "require_client_certificate", p);
        if (sc_ynode_get(t, "client_ca")) {
            proxy_front_put(f, t, "client_cert", tc, is(req, "true") ? "require" : "optional");
        } else if (is(req, "true")) {
            proxy_front_refuse(f, sc_ynode_get(tc, "require_client_certificate"), p,
                               "require_client_certificate needs a validation_context");
        }
        proxy_front_put_duration(f, t, "session_timeout", tc, "session_timeout", p, NULL);
    } else {
        proxy_front_copy(f, t, "sni", tc, "sni");
        if (is(proxy_front_str(f, tc, "max_session_keys", p), "0")) {
            proxy_front_put(f, t, "session_reuse", sc_ynode_get(tc, "max_session_keys"), "false");
        }
        if (!sc_ynode_get(t, "cert")) {
            proxy_front_put(f, t, "mode", ts, "simple");
        }
    }
    return f->err ? NULL : t;
}

/* ---- clusters ---- */

static void cluster_policy(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *cn,
                           const char *path)
{
    const struct sc_ynode *cb = sc_ynode_get(cn, "circuit_breakers");
    static const char *const cbk[] = { "thresholds", NULL };
    if (cb && proxy_front_keys(f, cb, path, cbk, NULL) == 0) {
        const struct sc_ynode *th = sc_ynode_get(cb, "thresholds");
        for (size_t i = 0; i < sc_ynode_count(th) && !f->err; i++) {
            const struct sc_ynode *t = sc_ynode_at(th, i);
            static const char *const tk[] = { "priority",
                                              "max_connections",
                                              "max_pending_requests",
                                              "max_requests",
                                              "max_retries",
                                              "retry_budget",
                                              NULL };
            static const char *const tn[] = { "track_remaining", "max_connection_pools", NULL };
            if (proxy_front_keys(f, t, path, tk, tn) < 0) {
                return;
            }
            const char *pr = proxy_front_str(f, t, "priority", path);
            if (pr && is(pr, "HIGH")) {
                proxy_front_note(f, t, path,
                                 "thresholds for priority HIGH: routes have no "
                                 "priorities here");
                continue;
            }
            struct sc_ynode *o = proxy_front_map(f, t);
            proxy_front_copy(f, o, "max_connections", t, "max_connections");
            proxy_front_copy(f, o, "max_pending_requests", t, "max_pending_requests");
            proxy_front_copy(f, o, "max_requests", t, "max_requests");
            proxy_front_copy(f, o, "max_retries", t, "max_retries");
            const struct sc_ynode *rb = sc_ynode_get(t, "retry_budget");
            static const char *const rbk[] = { "budget_percent", "min_retry_concurrency", NULL };
            if (rb && proxy_front_keys(f, rb, path, rbk, NULL) == 0) {
                struct sc_ynode *b = proxy_front_map(f, rb);
                proxy_front_copy(f, b, "budget_percent", sc_ynode_get(rb, "budget_percent"),
                                 "value");
                proxy_front_copy(f, b, "min_retry_concurrency", rb, "min_retry_concurrency");
                proxy_front_set(f, o, "retry_budget", b, rb);
            }
            proxy_front_set(f, c, "circuit_breakers", o, t);
        }
    }
    const struct sc_ynode *od = sc_ynode_get(cn, "outlier_detection");
    static const char *const ok[] = { "consecutive_5xx",
                                      "consecutive_gateway_failure",
                                      "enforcing_consecutive_5xx",
                                      "enforcing_consecutive_gateway_failure",
                                      "interval",
                                      "base_ejection_time",
                                      "max_ejection_time",
                                      "max_ejection_percent",
                                      NULL };
    static const char *const on[] = {
        "success_rate_minimum_hosts",         "success_rate_request_volume",
        "success_rate_stdev_factor",          "enforcing_success_rate",
        "split_external_local_origin_errors", "failure_percentage_threshold",
        "enforcing_failure_percentage",       NULL
    };
    if (od && proxy_front_keys(f, od, path, ok, on) == 0) {
        struct sc_ynode *o = proxy_front_map(f, od);
        const char *e5 = proxy_front_str(f, od, "enforcing_consecutive_5xx", path);
        const char *eg = proxy_front_str(f, od, "enforcing_consecutive_gateway_failure", path);
        if ((e5 && !is(e5, "100") && !is(e5, "0")) || (eg && !is(eg, "100") && !is(eg, "0"))) {
            proxy_front_refuse(f, od, path,
                               "enforcing percentages other than 0 and 100 are not "
                               "supported");
            return;
        }
        if (is(e5, "0")) {
            proxy_front_put(f, o, "consecutive_5xx", od, "0");
        } else {
            proxy_front_copy(f, o, "consecutive_5xx", od, "consecutive_5xx");
        }
        /* Envoy counts gateway failures but enforces them only when told to. */
        if (is(eg, "100")) {
            proxy_front_copy(f, o, "consecutive_gateway_errors", od, "consecutive_gateway_failure");
            if (!sc_ynode_get(od, "consecutive_gateway_failure")) {
                proxy_front_put(f, o, "consecutive_gateway_errors", od, "5");
            }
        }
        proxy_front_put_duration(f, o, "interval", od, "interval", path, "10s");
        proxy_front_put_duration(f, o, "base_ejection_time", od, "base_ejection_time", path, NULL);
        proxy_front_put_duration(f, o, "max_ejection_time", od, "max_ejection_time", path, NULL);
        proxy_front_copy(f, o, "max_ejection_percent", od, "max_ejection_percent");
        if (!sc_ynode_get(od, "max_ejection_percent")) {
            proxy_front_put(f, o, "max_ejection_percent", od, "10");
        }
        proxy_front_set(f, c, "outlier_detection", o, od);
    }
    const struct sc_ynode *hcs = sc_ynode_get(cn, "health_checks");
    if (sc_ynode_count(hcs) > 1) {
        proxy_front_refuse(f, sc_ynode_at(hcs, 1), path, "one health check per cluster");
        return;
    }
    if (sc_ynode_count(hcs) == 1) {
        const struct sc_ynode *h = sc_ynode_at(hcs, 0);
        static const char *const hk[] = {
            "timeout",           "interval",          "unhealthy_threshold", "healthy_threshold",
            "http_health_check", "grpc_health_check", "tcp_health_check",    NULL
        };
        static const char *const hn[] = { "interval_jitter", "no_traffic_interval",
                                          "unhealthy_interval", "event_log_path", NULL };
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".health_checks[0]");
        if (proxy_front_keys(f, h, p, hk, hn) < 0) {
            return; /* custom_health_check and the rest are refused */
        }
        const struct sc_ynode *hh = sc_ynode_get(h, "http_health_check");
        const struct sc_ynode *gh = sc_ynode_get(h, "grpc_health_check");
        const struct sc_ynode *th = sc_ynode_get(h, "tcp_health_check");
        if ((hh != NULL) + (gh != NULL) + (th != NULL) != 1) {
            proxy_front_refuse(f, h, p,
                               "one of http_health_check, grpc_health_check and "
                               "tcp_health_check is required");
            return;
        }
        struct sc_ynode *o = proxy_front_map(f, h);
        proxy_front_put_duration(f, o, "timeout", h, "timeout", p, NULL);
        proxy_front_put_duration(f, o, "interval", h, "interval", p, NULL);
        proxy_front_copy(f, o, "unhealthy_threshold", h, "unhealthy_threshold");
        proxy_front_copy(f, o, "healthy_threshold", h, "healthy_threshold");
        if (th) {
            proxy_front_set(f, o, "tcp", proxy_envoy_tcp_health(f, th, p), th);
            proxy_front_set(f, c, "health_check", o, h);
            return;
        }
        if (gh) {
            /* service_name and authority; initial_metadata is refused as an unknown key */
            static const char *const ghk[] = { "service_name", "authority", NULL };
            if (proxy_front_keys(f, gh, p, ghk, NULL) < 0) {
                return;
            }
            struct sc_ynode *g = proxy_front_map(f, gh);
            proxy_front_copy(f, g, "service", gh, "service_name");
            proxy_front_copy(f, g, "authority", gh, "authority");
            proxy_front_set(f, o, "grpc", g, gh);
            proxy_front_set(f, c, "health_check", o, h);
            return;
        }
        static const char *const hhk[] = { "path", "host", "expected_statuses", NULL };
        static const char *const hhn[] = { "request_headers_to_add", "codec_client_type", NULL };
        if (proxy_front_keys(f, hh, p, hhk, hhn) < 0) {
            return;
        }
        proxy_front_copy(f, o, "path", hh, "path");
        proxy_front_copy(f, o, "host", hh, "host");
        const struct sc_ynode *es = sc_ynode_get(hh, "expected_statuses");
        if (es) {
            struct sc_ynode *l = proxy_front_seq(f, es);
            for (size_t i = 0; i < sc_ynode_count(es) && !f->err; i++) {
                const char *a = sc_ynode_str(sc_ynode_get(sc_ynode_at(es, i), "start"));
                const char *b = sc_ynode_str(sc_ynode_get(sc_ynode_at(es, i), "end"));
                long lo = a ? strtol(a, NULL, 10) : 0, hi = b ? strtol(b, NULL, 10) : 0;
                if (!a || !b || hi <= lo) {
                    proxy_front_refuse(f, sc_ynode_at(es, i), p,
                                       "expected_statuses need start < end");
                    return;
                }
                char r[48];
                snprintf(r, sizeof(r), "%ld-%ld", lo, hi - 1); /* Envoy's end is exclusive */
                proxy_front_push(f, l, sc_ytree_str(f->out, sc_ynode_at(es, i), r), es);
            }
            proxy_front_set(f, o, "expected_statuses", l, es);
        }
        proxy_front_set(f, c, "health_check", o, h);
    }
}

struct sc_ynode *proxy_envoy_http2_options(struct proxy_front *f, const struct sc_ynode *at,
                                           const char *path, bool down)
{
    static const char *const keys[] = { "max_concurrent_streams", "initial_stream_window_size",
                                        "initial_connection_window_size", "connection_keepalive",
                                        NULL };
    static const char *const dkeys[] = { "max_concurrent_streams",
                                         "initial_stream_window_size",
                                         "initial_connection_window_size",
                                         "connection_keepalive",
                                         "allow_connect",
                                         NULL };
    static const char *const noted[] = { "allow_connect",
                                         "hpack_table_size",
                                         "allow_metadata",
                                         "max_outbound_frames",
                                         "max_outbound_control_frames",
                                         "max_consecutive_inbound_frames_with_empty_payload",
                                         "max_inbound_priority_frames_per_stream",
                                         "max_inbound_window_update_frames_per_data_frame_sent",
                                         "override_stream_error_on_invalid_http_message",
                                         "stream_error_on_invalid_http_messaging",
                                         NULL };
    /* Downstream, allow_connect is extended CONNECT offered to clients (checked below); the
     * others noted are the proxy's own fixed flood bounds and HPACK table (docs/http2.md). */
    if (proxy_front_keys(f, at, path, down ? dkeys : keys, down ? noted + 1 : noted) < 0) {
        return NULL;
    }
    struct sc_ynode *h = proxy_front_map(f, at);
    proxy_front_copy(f, h, "max_concurrent_streams", at, "max_concurrent_streams");
    proxy_front_copy(f, h, "initial_stream_window_size", at, "initial_stream_window_size");
    proxy_front_copy(f, h, "initial_connection_window_size", at, "initial_connection_window_size");
    const struct sc_ynode *ka = sc_ynode_get(at, "connection_keepalive");
    static const char *const kk[] = { "interval", "timeout", NULL };
    static const char *const kn[] = { "interval_jitter", "connection_idle_interval", NULL };
    if (ka && proxy_front_keys(f, ka, path, kk, kn) == 0) {
        proxy_front_put_duration(f, h, "keepalive_interval", ka, "interval", path, NULL);
        proxy_front_put_duration(f, h, "keepalive_timeout", ka, "timeout", path, NULL);
    }
    const char *ac = down ? proxy_front_str(f, at, "allow_connect", path) : NULL;
    if (ac && !is(ac, "false")) {
        proxy_front_refuse(f, sc_ynode_get(at, "allow_connect"), path,
                           "allow_connect: extended CONNECT (RFC 8441) is not supported");
    }
    return f->err ? NULL : h;
}

/* An http2_protocol_options message at <at> as the cluster's `http2` settings. */
static void http2_options(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *at,
                          const char *path)
{
    struct sc_ynode *h = proxy_envoy_http2_options(f, at, path, false);
    if (h) {
        proxy_front_set(f, c, "http2", h, at);
    }
}

/* The upstream protocol: the deprecated http2_protocol_options (HTTP/2 with prior knowledge), or
 * typed_extension_protocol_options' HttpProtocolOptions with explicit_http_config (http2 or
 * HTTP/1.1) or auto_config (ALPN). use_downstream_protocol_config is refused. */
static void upstream_protocol(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *cn,
                              const char *path)
{
    const struct sc_ynode *h2 = sc_ynode_get(cn, "http2_protocol_options");
    if (h2) {
        proxy_front_put(f, c, "protocol", h2, "http2");
        http2_options(f, c, h2, path);
    }
    const struct sc_ynode *te = sc_ynode_get(cn, "typed_extension_protocol_options");
    static const char *const tk[] = { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                                      NULL };
    if (!te || proxy_front_keys(f, te, path, tk, NULL) < 0) {
        return;
    }
    const struct sc_ynode *po =
        sc_ynode_get(te, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    static const char *const pk[] = { "@type", "explicit_http_config", "auto_config",
                                      "common_http_protocol_options", NULL };
    static const char *const pn[] = { "upstream_http_protocol_options", NULL };
    if (proxy_front_keys(f, po, path, pk, pn) < 0) {
        return;
    }
    const struct sc_ynode *cho = sc_ynode_get(po, "common_http_protocol_options");
    static const char *const hk[] = { "idle_timeout", NULL };
    if (cho && proxy_front_keys(f, cho, path, hk, NULL) == 0) {
        proxy_front_put_duration(f, c, "idle_timeout", cho, "idle_timeout", path, NULL);
    }
    const struct sc_ynode *ex = sc_ynode_get(po, "explicit_http_config");
    const struct sc_ynode *ac = sc_ynode_get(po, "auto_config");
    static const char *const ek[] = { "http2_protocol_options", "http_protocol_options", NULL };
    const struct sc_ynode *cfg = ex ? ex : ac;
    if (!cfg) {
        proxy_front_refuse(f, po, path,
                           "HttpProtocolOptions needs explicit_http_config or auto_config "
                           "(use_downstream_protocol_config is not supported)");
        return;
    }
    if (proxy_front_keys(f, cfg, path, ek, NULL) < 0) {
        return;
    }
    const struct sc_ynode *o2 = sc_ynode_get(cfg, "http2_protocol_options");
    if (ac) {
        proxy_front_put(f, c, "protocol", ac, "auto");
    } else if (o2) {
        proxy_front_put(f, c, "protocol", o2, "http2");
    }
    if (o2) {
        http2_options(f, c, o2, path);
    }
}

static void load_assignment(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *la,
                            const char *path)
{
    static const char *const lk[] = { "cluster_name", "endpoints", NULL };
    static const char *const ln[] = { "policy", NULL };
    if (proxy_front_keys(f, la, path, lk, ln) < 0) {
        return;
    }
    const struct sc_ynode *eps = sc_ynode_get(la, "endpoints");
    struct sc_ynode *l = proxy_front_seq(f, eps ? eps : la);
    for (size_t i = 0; i < sc_ynode_count(eps) && !f->err; i++) {
        const struct sc_ynode *le = sc_ynode_at(eps, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".endpoints[%zu]", i);
        static const char *const ek[] = { "lb_endpoints", "priority", NULL };
        static const char *const en[] = { "locality", "load_balancing_weight", NULL };
        if (proxy_front_keys(f, le, p, ek, en) < 0) {
            return;
        }
        const char *prio = proxy_front_str(f, le, "priority", p);
        if (prio && !is(prio, "0")) {
            proxy_front_refuse(f, sc_ynode_get(le, "priority"), p,
                               "priorities other than 0 are not supported");
            return;
        }
        const struct sc_ynode *lbs = sc_ynode_get(le, "lb_endpoints");
        for (size_t j = 0; j < sc_ynode_count(lbs) && !f->err; j++) {
            const struct sc_ynode *lb = sc_ynode_at(lbs, j);
            char q[PROXY_FRONT_PATH];
            proxy_front_path(q, p, ".lb_endpoints[%zu]", j);
            static const char *const bk[] = { "endpoint", "load_balancing_weight", "health_status",
                                              NULL };
            static const char *const bn[] = { "metadata", NULL };
            if (proxy_front_keys(f, lb, q, bk, bn) < 0) {
                return;
            }
            const char *w = proxy_front_str(f, lb, "load_balancing_weight", q);
            if (w && !is(w, "1")) {
                proxy_front_refuse(f, sc_ynode_get(lb, "load_balancing_weight"), q,
                                   "endpoint weights are not supported (all endpoints weigh "
                                   "the same)");
                return;
            }
            const char *hs = proxy_front_str(f, lb, "health_status", q);
            if (hs && !is(hs, "HEALTHY") && !is(hs, "UNKNOWN")) {
                proxy_front_refuse(f, sc_ynode_get(lb, "health_status"), q,
                                   "health_status %.16s is not supported (health checks decide)",
                                   hs);
                return;
            }
            const struct sc_ynode *ep = sc_ynode_get(lb, "endpoint");
            static const char *const epk[] = { "address", NULL };
            static const char *const epn[] = { "health_check_config", "hostname", NULL };
            if (proxy_front_keys(f, ep, q, epk, epn) < 0) {
                return;
            }
            char addr[ADDR_MAX], ap[PROXY_FRONT_PATH];
            proxy_front_path(ap, q, ".endpoint.address");
            if (proxy_envoy_address(f, sc_ynode_get(ep, "address"), ap, addr, sizeof(addr)) < 0) {
                return;
            }
            proxy_front_push(f, l, sc_ytree_str(f->out, sc_ynode_get(ep, "address"), addr), ep);
        }
    }
    proxy_front_set(f, c, "endpoints", l, la);
}

void proxy_envoy_cluster(struct proxy_front *f, const struct sc_ynode *cn, size_t i,
                         struct sc_ynode *out)
{
    char path[PROXY_FRONT_PATH];
    snprintf(path, sizeof(path), "static_resources.clusters[%zu]", i);
    static const char *const ck[] = { "name",
                                      "type",
                                      "connect_timeout",
                                      "lb_policy",
                                      "load_assignment",
                                      "dns_refresh_rate",
                                      "circuit_breakers",
                                      "outlier_detection",
                                      "health_checks",
                                      "transport_socket",
                                      "common_http_protocol_options",
                                      "http2_protocol_options",
                                      "typed_extension_protocol_options",
                                      NULL };
    static const char *const cnote[] = { "per_connection_buffer_limit_bytes",
                                         "dns_lookup_family",
                                         "respect_dns_ttl",
                                         "common_lb_config",
                                         "upstream_connection_options",
                                         "close_connections_on_host_health_failure",
                                         "ignore_health_on_host_removal",
                                         "track_cluster_stats",
                                         "alt_stat_name",
                                         "metadata",
                                         "ring_hash_lb_config",
                                         "maglev_lb_config",
                                         NULL };
    if (proxy_front_keys(f, cn, path, ck, cnote) < 0) {
        return;
    }
    struct sc_ynode *c = proxy_front_map(f, cn);
    proxy_front_copy(f, c, "name", cn, "name");
    if (!sc_ynode_get(cn, "name")) {
        proxy_front_refuse(f, cn, path, "name is required");
        return;
    }
    static const struct proxy_front_enum types[] = { { "STATIC", NULL },
                                                     { "STRICT_DNS", NULL },
                                                     { "LOGICAL_DNS", NULL },
                                                     { "ORIGINAL_DST", "original_dst" },
                                                     { NULL, NULL } };
    const struct proxy_front_enum *type = proxy_front_enum(f, cn, "type", path, NULL, types);
    if (f->err) {
        return;
    }
    bool odst = type && type->ours;
    if (odst) {
        proxy_front_put(f, c, "type", sc_ynode_get(cn, "type"), type->ours);
    }
    proxy_front_put_duration(f, c, "connect_timeout", cn, "connect_timeout", path,
                             "5s"); /* Envoy's default */
    /* RING_HASH and MAGLEV: consistent hashing by the routes' hash_policy (docs/proxy.md) */
    static const struct proxy_front_enum lbs[] = { { "ROUND_ROBIN", NULL },
                                                   { "LEAST_REQUEST", "least_request" },
                                                   { "RING_HASH", "ring_hash" },
                                                   { "MAGLEV", "maglev" },
                                                   { "RANDOM", NULL },
                                                   { "CLUSTER_PROVIDED", NULL },
                                                   { NULL, NULL } };
    const struct proxy_front_enum *lb = proxy_front_enum(f, cn, "lb_policy", path, NULL, lbs);
    const struct sc_ynode *lbn = sc_ynode_get(cn, "lb_policy");
    if (lb && lb->ours) {
        proxy_front_put(f, c, "lb_policy", lbn, lb->ours);
    } else if (lb && is(lb->name, "RANDOM")) {
        proxy_front_note(f, lbn, path, "lb_policy RANDOM is served by round_robin");
    } else if (lb && is(lb->name, "CLUSTER_PROVIDED") && !odst) {
        proxy_front_refuse(f, lbn, path,
                           "lb_policy CLUSTER_PROVIDED is not supported without type ORIGINAL_DST");
    }
    if (f->err) {
        return;
    }
    proxy_front_put_duration(f, c, "dns_refresh", cn, "dns_refresh_rate", path, NULL);
    const struct sc_ynode *la = sc_ynode_get(cn, "load_assignment");
    char p[PROXY_FRONT_PATH];
    if (la && !odst) {
        proxy_front_path(p, path, ".load_assignment");
        load_assignment(f, c, la, p);
    } else if (la) {
        proxy_front_refuse(f, la, path, "an ORIGINAL_DST cluster has no load_assignment");
        return;
    } else if (!odst) {
        proxy_front_refuse(f, cn, path, "load_assignment is required");
        return;
    }
    cluster_policy(f, c, cn, path);
    const struct sc_ynode *cho = sc_ynode_get(cn, "common_http_protocol_options");
    static const char *const hk[] = { "idle_timeout", NULL };
    if (cho && proxy_front_keys(f, cho, path, hk, NULL) == 0) {
        proxy_front_put_duration(f, c, "idle_timeout", cho, "idle_timeout", path, NULL);
    }
    const struct sc_ynode *ts = sc_ynode_get(cn, "transport_socket");
    if (ts) {
        proxy_front_path(p, path, ".transport_socket");
        proxy_front_set(f, c, "tls", proxy_envoy_transport_socket(f, ts, p, false), ts);
    }
    upstream_protocol(f, c, cn, path);
    proxy_front_push(f, out, c, cn);
}
