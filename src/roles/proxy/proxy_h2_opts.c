// SPDX-License-Identifier: Apache-2.0
// The downstream HTTP/2 codec's listener options (listeners[].http2, declared once as data: they
// drive parsing, defaults, --help and the reference docs) and its metric families. The codec
// itself is proxy_h2.c; a listener's series are looked up here once, so a connection only copies
// the pointers.
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"

const struct sc_opt proxy_h2_listener_opts[] = {
    { .name = "enabled",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_h2_lcfg, enabled),
      .def = "true",
      .help = "serve HTTP/2: h2c with prior knowledge (told from HTTP/1 by the connection "
              "preface) on plaintext, h2 by ALPN over TLS (offered as \"h2, http/1.1\" when "
              "tls.alpn is not set); false: HTTP/1 only, h2 never selected",
      .flags = SC_OPT_RESTART },
    { .name = "only",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_h2_lcfg, only),
      .def = "false",
      .help = "serve HTTP/2 alone (Envoy's codec_type HTTP2): a plaintext connection must open "
              "with the preface (h2c with prior knowledge), TLS offers only h2 by ALPN when "
              "tls.alpn is not set, and an HTTP/1 request is answered 505 and its connection "
              "closed",
      .flags = SC_OPT_RESTART },
    { .name = "max_concurrent_streams",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_h2_lcfg, max_concurrent_streams),
      .def = "100",
      .help = "SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once (more are "
              "refused with REFUSED_STREAM)",
      .min = 1,
      .max = 10000 },
    { .name = "initial_stream_window_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_lcfg, initial_stream_window_size),
      .def = "64KiB",
      .help = "SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may send before the "
              "proxy has passed them upstream (the most it buffers per stream)",
      .min = 16384,
      .max = 16777216 },
    { .name = "initial_connection_window_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_lcfg, initial_connection_window_size),
      .def = "1MiB",
      .help = "request body bytes all the streams of a connection may have in flight",
      .min = 65535,
      .max = 2147483647 },
    { .name = "max_header_list_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_lcfg, max_header_list_size),
      .def = "64KiB",
      .help = "SETTINGS_MAX_HEADER_LIST_SIZE: a request's header block (names, values and 32 "
              "bytes per field), larger ones answered 431",
      .min = 1024,
      .max = 1048576 },
    { .name = "stream_reset_burst",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_h2_lcfg, stream_reset_burst),
      .def = "1000",
      .help = "Rapid Reset (CVE-2023-44487) bound: RST_STREAM frames a client may send at once; "
              "past this and stream_reset_rate the connection gets GOAWAY",
      .min = 1,
      .max = 1000000 },
    { .name = "stream_reset_rate",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_h2_lcfg, stream_reset_rate),
      .def = "33",
      .help = "RST_STREAM frames per second a client regains after the burst",
      .min = 1,
      .max = 1000000 },
    { .name = "keepalive_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_h2_lcfg, keepalive_interval_ms),
      .def = "0s",
      .help = "a client connection nothing was received on for this long is sent a PING, "
              "whether streams are open or not (Envoy's connection_keepalive.interval; 0: "
              "never)" },
    { .name = "keepalive_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_h2_lcfg, keepalive_timeout_ms),
      .def = "20s",
      .help = "a PING neither answered nor followed by any frame within this closes the "
              "connection with GOAWAY (reason ping_timeout); its open streams end as reset",
      .min = 1 },
    { 0 },
};

static const char *const ga_names[PROXY_H2_GA_N] = {
    "drain", "idle", "protocol_error", "rapid_reset", "flood", "ping_timeout", "other",
};

void proxy_h2_metrics_init(struct proxy_metrics *pm)
{
    static const char *const ll[] = { "listener", NULL };
    static const char *const gl[] = { "listener", "reason", NULL };
    pm->h2_conns =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_http2_connections_total",
                          "Client connections that spoke HTTP/2 (h2c or h2).", ll, NULL, 0);
    pm->h2_streams =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_http2_streams_total",
                          "Requests received on HTTP/2 streams (each is also counted in "
                          "sidecar_requests_total, with protocol HTTP/2 in the access log).",
                          ll, NULL, 0);
    pm->h2_refused = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_http2_refused_streams_total",
        "Streams refused (REFUSED_STREAM) because the client passed max_concurrent_streams.", ll,
        NULL, 0);
    pm->h2_goaway = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_http2_goaway_total",
        "GOAWAY frames sent to clients, by reason: drain, idle, protocol_error, rapid_reset (the "
        "RST_STREAM rate bound), flood (SETTINGS, PING or other frames the client made us queue, "
        "CONTINUATION floods), ping_timeout (a keepalive PING left unanswered), other.",
        gl, NULL, 0);
}

void proxy_h2_listener_metrics(struct proxy_listener *l, struct proxy_metrics *pm)
{
    const char *lv[] = { l->name, NULL };
    l->h2m.conns = sc_metrics_get(pm->h2_conns, lv);
    l->h2m.streams = sc_metrics_get(pm->h2_streams, lv);
    l->h2m.refused = sc_metrics_get(pm->h2_refused, lv);
    for (int i = 0; i < PROXY_H2_GA_N; i++) {
        const char *gv[] = { l->name, ga_names[i], NULL };
        l->h2m.goaway[i] = sc_metrics_get(pm->h2_goaway, gv);
    }
}
