// SPDX-License-Identifier: Apache-2.0
// Distributed tracing in the proxy: the `tracing:` options, the per-snapshot sampling settings,
// the span an exchange records, and the exporter that ships spans to a collector. A request's
// trace context (read from W3C or B3 headers, or new) lives in its exchange and costs no
// allocation; only a sampled request allocates a span, which the exchange hands to the exporter
// when it ends. The exporter runs on the main loop: workers only append to its bounded queue
// under a mutex, so a slow or absent collector costs dropped (and counted) spans, never a
// request's time.
#ifndef SC_ROLES_PROXY_PROXY_TRACE_H
#define SC_ROLES_PROXY_PROXY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/str.h"
#include "net/http1.h"

/* ---- configuration as loaded (proxy_trace_opts in proxy_trace.c) ---- */

enum proxy_trace_provider {
    PROXY_TRACE_NONE,
    PROXY_TRACE_OTLP_HTTP, /* OTLP/HTTP, protobuf body */
    PROXY_TRACE_OTLP_JSON, /* OTLP/HTTP, JSON body */
    PROXY_TRACE_ZIPKIN,    /* Zipkin v2 JSON */
};

/* Propagation formats written upstream (bits); every format is read whatever these say. */
enum { PROXY_PROP_W3C = 1 << 0, PROXY_PROP_B3 = 1 << 1, PROXY_PROP_B3MULTI = 1 << 2 };

struct proxy_trace_cfg {
    int provider; /* enum proxy_trace_provider */
    char *endpoint;
    double sampling; /* percent, 0 to 100, 0.01 precision */
    char *force_header;
    struct sc_strv propagation;
    char *service_name;
    struct sc_kvv headers;     /* extra export request headers (API keys) */
    struct sc_kvv custom_tags; /* attributes added to every span */
    int64_t max_batch_size;
    uint64_t batch_interval_ms;
    int64_t max_queue_size;
    uint64_t timeout_ms;
    int compression; /* 0 none, 1 gzip */
    int64_t max_retries;
    uint64_t initial_backoff_ms;
    uint64_t max_backoff_ms;
};

extern const struct sc_opt proxy_trace_opts[];

/* ---- the span ---- */

enum { PROXY_SPAN_SERVER = 2, PROXY_SPAN_CLIENT = 3 }; /* OTLP SpanKind numbers */
enum { PROXY_ATTR_STR, PROXY_ATTR_INT };

#define PROXY_SPAN_MAX_ATTRS 32
#define PROXY_SPAN_MAX_EVENTS 8
#define PROXY_SPAN_ARENA 2048

struct proxy_span_event {
    uint64_t time_ns;
    const char *name; /* a string literal */
    size_t nlen;
};

/* One finished or running span, a fixed block the exporter recycles (proxy_tracer_span). Its
 * attributes are kept as they go on the wire: each is recorded once as an OTLP protobuf
 * `Span.attributes` field (a KeyValue with a string or int AnyValue) appended at the front of the
 * arena, so the protobuf encoder copies them in one piece and the JSON encoders read them back
 * (proxy_span_attr_next). The span's name and tracestate sit at the arena's back. Strings are
 * valid UTF-8, truncated to what the arena holds. */
struct proxy_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    bool has_parent;
    uint8_t kind;      /* PROXY_SPAN_* */
    uint8_t status;    /* OTLP StatusCode: 0 unset, 2 error */
    uint64_t start_ns; /* since the Unix epoch */
    uint64_t end_ns;
    uint16_t name_off, name_len;
    uint16_t state_off, state_len; /* tracestate */
    uint16_t nattrs, nevents;
    uint16_t dropped_attrs, dropped_events;
    uint16_t attr_len;       /* encoded attributes: arena[0, attr_len) */
    uint16_t str_off;        /* strings: arena[str_off, PROXY_SPAN_ARENA) */
    uint32_t esz;            /* its encoded size (OTLP protobuf, set while encoding) */
    struct proxy_span *next; /* the exporter's free list */
    struct proxy_span_event events[PROXY_SPAN_MAX_EVENTS];
    char arena[PROXY_SPAN_ARENA];
};

/* Empties <s> for a new recording (everything before the events and the arena). */
void proxy_span_reset(struct proxy_span *s);

/* Copies <v> into the back of the span's arena as valid UTF-8 (an invalid byte becomes '?'),
 * truncated at a character boundary to the room left. Returns the copied length and sets <*off>. */
uint16_t proxy_span_put(struct proxy_span *s, struct sc_str v, uint16_t *off);

/* Adds a string attribute (copied once, made valid UTF-8, truncated to what the arena holds;
 * dropped and counted when no slot or room is left). <key> is a string literal of <klen> bytes
 * (under 100): the macros below pass its length, known at compile time. */
void proxy_span_str_n(struct proxy_span *s, const char *key, size_t klen, struct sc_str v);
void proxy_span_int_n(struct proxy_span *s, const char *key, size_t klen, int64_t v);
#define proxy_span_str(s, key, v) proxy_span_str_n((s), "" key, sizeof(key) - 1, (v))
#define proxy_span_int(s, key, v) proxy_span_int_n((s), "" key, sizeof(key) - 1, (v))
/* Attributes that are the same on every span they go on (a listener's, a route's, a cluster's,
 * an endpoint's, the custom tags), encoded once when a snapshot is set up and copied into a span
 * in one piece. */
struct proxy_span_blob {
    char *p;
    uint16_t len;
    uint16_t n;       /* attributes in it */
    uint16_t dropped; /* attributes that did not fit when it was made */
};

/* Makes <b> (returns new memory in b->p) from the attributes recorded in <scratch>, then empties
 * <scratch> for the next. */
void proxy_span_blob_take(struct proxy_span_blob *b, struct proxy_span *scratch);

/* Adds the attributes of <b> to <s> (all, or none and counted dropped when the span is full). */
void proxy_span_blob_add(struct proxy_span *s, const struct proxy_span_blob *b);

/* Adds <n> attributes already encoded as <len> bytes at <p> (all, or none and counted dropped
 * when the span is full). */
void proxy_span_add_encoded(struct proxy_span *s, const char *p, size_t len, unsigned n);

/* A downstream connection's own attributes, encoded on its first sampled request and copied into
 * the spans of its next ones: network.peer.address and .port, and server.address and .port of
 * the Host value it sent last (<hostv>). Kept with the connection's block while it is recycled
 * (proxy_span_conn_clear), freed with it. */
struct proxy_span_conn {
    uint16_t peer_len, peer_n;
    uint16_t host_len, host_n;
    uint16_t hostv_len; /* 0: nothing cached */
    char hostv[128];
    char peer[96];
    char host[192];
};

/* Forgets what <pc> holds (a new connection takes its block). NULL-safe. */
static inline void proxy_span_conn_clear(struct proxy_span_conn *pc)
{
    if (pc) {
        pc->peer_len = pc->peer_n = pc->host_len = pc->host_n = pc->hostv_len = 0;
    }
}

/* Adds event <name> (a literal of <nlen> bytes) at <time_ns> (Unix epoch). */
void proxy_span_event_n(struct proxy_span *s, const char *name, size_t nlen, uint64_t time_ns);
#define proxy_span_event(s, name, t) proxy_span_event_n((s), "" name, sizeof(name) - 1, (t))

/* One attribute read back from a span's encoded ones. */
struct proxy_span_attr {
    struct sc_str key;
    bool is_int;
    int64_t i;         /* is_int */
    struct sc_str str; /* !is_int */
};

/* Reads the attribute at <*pos> (start at 0) of <s> and moves <*pos> past it. Returns false after
 * the last one. */
bool proxy_span_attr_next(const struct proxy_span *s, size_t *pos, struct proxy_span_attr *a);

/* ---- encoders (proxy_trace_export.c, proxy_trace_otlp.c) ---- */

/* Protobuf varints (the span's attributes and the OTLP request): the size of <v>, and <v> written
 * at <o> (returns the end). */
static inline size_t proxy_pb_vsz(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline char *proxy_pb_varint(char *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

/* The resource the spans describe (service.name, k8s.pod.name, ...): <n> string pairs. */
struct proxy_trace_resource {
    struct sc_kv *kv;
    size_t n;
};

/* Appends a body for <n> spans to <out>: OTLP ExportTraceServiceRequest as protobuf or JSON, or a
 * Zipkin v2 span list. Returns 0 or SC_ETOOBIG (<out>'s cap). */
int proxy_trace_encode_otlp_proto(struct sc_buf *out, const struct proxy_trace_resource *res,
                                  struct proxy_span *const *spans, size_t n);
int proxy_trace_encode_otlp_json(struct sc_buf *out, const struct proxy_trace_resource *res,
                                 struct proxy_span *const *spans, size_t n);
int proxy_trace_encode_zipkin(struct sc_buf *out, const struct proxy_trace_resource *res,
                              struct proxy_span *const *spans, size_t n);

/* The spans an OTLP collector's answer says it rejected (partial_success.rejected_spans), from a
 * protobuf or JSON body; 0 when it says nothing, or the body cannot be read. */
int64_t proxy_trace_rejected_proto(struct sc_str body);
int64_t proxy_trace_rejected_json(struct sc_str body);

/* ---- the exporter (proxy_trace_export.c) ---- */

struct proxy_tracer;
struct sc_metrics;

/* Returns a new exporter on <loop> (the main loop) for <cfg> (provider other than none), its
 * metrics registered in <reg>, describing <res> (taken). Never fails: a collector that cannot be
 * reached shows in the metrics. */
struct proxy_tracer *proxy_tracer_new(uv_loop_t *loop, struct sc_metrics *reg,
                                      const struct proxy_trace_cfg *cfg,
                                      struct proxy_trace_resource res);

/* Applies a reloaded <cfg> (batching, endpoint, retries); spans queued stay queued. Main loop. */
void proxy_tracer_configure(struct proxy_tracer *t, const struct proxy_trace_cfg *cfg);

/* A thread's own few span blocks (a worker's), taken from the exporter's free list in one go
 * when a span is pushed, so that starting a span takes no lock. Its owner frees it
 * (proxy_span_cache_free). */
struct proxy_span_cache {
    struct proxy_span *head; /* linked through next */
    unsigned n;
};
#define PROXY_SPAN_CACHE_MAX 32

/* Frees the blocks of <c>. */
void proxy_span_cache_free(struct proxy_span_cache *c);

/* Counts a sampled span and returns an empty one to record it in (proxy_span_reset done): from
 * the calling thread's <c> (without a lock) when it has one, else from the exporter's free list
 * of spans already exported, else a new one. Any thread. */
struct proxy_span *proxy_tracer_span(struct proxy_tracer *t, struct proxy_span_cache *c);

/* Queues finished span <s> (taken), from any thread: when the queue is full the oldest span is
 * dropped and counted; a full batch wakes the exporter. Under the same lock, a low <c> (the
 * calling thread's) is refilled from the free list. Never blocks but on the queue's mutex. */
void proxy_tracer_push(struct proxy_tracer *t, struct proxy_span *s, struct proxy_span_cache *c);

/* Sends what is queued (one attempt, no retry) and then calls <cb>, or calls it at once when
 * nothing is queued; within the export timeout either way. Main loop. */
void proxy_tracer_flush(struct proxy_tracer *t, void (*cb)(void *arg), void *arg);

/* Cancels the export in flight, drops (and counts) what is queued, and frees <t> once its
 * handles have closed. NULL-safe. Main loop. */
void proxy_tracer_close(struct proxy_tracer *t);

/* ---- the proxy's side (proxy_trace.c) ---- */

/* What a snapshot knows of tracing (struct proxy_rt's trace; NULL: tracing off). */
struct proxy_trace_rt {
    uint32_t threshold; /* sampled when a draw in [0, 1000000) falls below */
    char force[64];     /* lower-case header name that forces sampling; "" none */
    size_t force_len;
    unsigned propagate; /* PROXY_PROP_* */
    uint8_t *kinds;     /* per listener: PROXY_SPAN_SERVER or PROXY_SPAN_CLIENT */
    size_t nkinds;
    struct proxy_tracer *tracer; /* borrowed: the proxy's, outlives every snapshot */
    /* Attributes encoded at setup (proxy_span_blob), indexed like the snapshot's listeners
     * (per listener: sidecar.listener with url.scheme http, then https), routes (per listener,
     * its routes then its noroute: http.route, sidecar.route), clusters (sidecar.cluster) and
     * their endpoints (sidecar.upstream.endpoint); <tags>: custom_tags. */
    struct proxy_span_blob *lsn; /* 2 per listener */
    struct proxy_span_blob **routes;
    struct proxy_span_blob *clusters;
    size_t nclusters;
    struct proxy_span_blob **eps;
    struct proxy_span_blob proto[3]; /* network.protocol.version: 1.0, 1.1, 2 */
    struct proxy_span_blob tags;
};

/* Frees <tr>. NULL-safe. */
void proxy_trace_rt_free(struct proxy_trace_rt *tr);

struct proxy;
struct proxy_rt;
struct proxy_cfg;
struct proxy_exch;

/* Sets up tracing for snapshot <rt> of <cfg>: starts the proxy's exporter on first use (or
 * reconfigures it) and gives <rt> its sampling settings; leaves rt->trace NULL when the provider
 * is none. Main loop. */
void proxy_trace_setup(struct proxy *px, struct proxy_rt *rt, const struct proxy_cfg *cfg);

/* Starts the trace of exchange <ex> for request <m>: reads the incoming context, decides
 * sampling, and allocates the span when sampled. Only called when ex->rt->trace is set. */
void proxy_trace_begin(struct proxy_exch *ex, const struct sc_http_msg *m);

/* Writes the trace headers for the next hop (traceparent and the configured B3 forms) through
 * <put> (a codec's header sink, HTTP/2 fields; NULL: HTTP/1 lines appended to <arg>, a struct
 * sc_buf). Returns what <put> returned, OR-ed. */
typedef int (*proxy_trace_put_cb)(void *arg, struct sc_str name, struct sc_str value);
int proxy_trace_headers(struct proxy_exch *ex, proxy_trace_put_cb put, void *arg);

/* Whether request header <name> (any case) is one the tracer writes itself (traceparent, b3,
 * x-b3-*), so a codec drops the client's copy when the exchange traces. */
bool proxy_trace_owns_header(struct sc_str name);

/* Records what the upstream response head <m> says (gRPC status). */
void proxy_trace_response(struct proxy_exch *ex, const struct sc_http_msg *m);

/* Adds event <name> (a literal: "retry", "per_try_timeout") to the exchange's span, if any. */
void proxy_trace_event_n(struct proxy_exch *ex, const char *name, size_t nlen);
#define proxy_trace_event(ex, name) proxy_trace_event_n((ex), "" name, sizeof(name) - 1)

/* Ends the exchange's span (status, attributes) and queues it for export. */
void proxy_trace_end(struct proxy_exch *ex);

#endif
