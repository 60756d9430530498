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
#include <string.h>

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
/* Arena bytes before the attributes: room for the Span message's field tag and length. */
#define PROXY_SPAN_PRE 3

struct proxy_span_event {
    uint64_t time_ns;
    const char *name; /* a string literal */
    size_t nlen;
};

/* One finished or running span, a fixed block the exporter recycles (proxy_tracer_span). Its
 * attributes are kept as they go on the wire: each is recorded once as an OTLP protobuf
 * `Span.attributes` field (a KeyValue with a string or int AnyValue) appended at the front of the
 * arena (after PROXY_SPAN_PRE bytes), so the protobuf encoder copies them in one piece and the
 * JSON encoders read them back (proxy_span_attr_next). The span's name and tracestate sit at the
 * arena's back. Strings are valid UTF-8, truncated to what the arena holds. When the span ends,
 * proxy_span_finish writes the rest of its Span message after the attributes and its field tag
 * and length before them, so the whole message is one piece of the block (<wire_off>,
 * <wire_len>) that an OTLP export sends as it is. */
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
    uint16_t attr_len; /* encoded attributes: arena[PROXY_SPAN_PRE, attr_len) */
    uint8_t method;    /* index of the request's method in the snapshot's blobs; 0: other */
    uint16_t str_off;  /* strings: arena[str_off, PROXY_SPAN_ARENA) */
    uint32_t esz;      /* its encoded size (OTLP protobuf, set while encoding) */
    uint16_t wire_off, wire_len; /* its whole ScopeSpans.spans field (proxy_span_finish; 0:
                                    not written) */
    struct proxy_span *next;     /* the exporter's free list */
    struct proxy_span_event events[PROXY_SPAN_MAX_EVENTS];
    char arena[PROXY_SPAN_ARENA];
    char pad[32]; /* what whole-move copies at the arena's end may write past it */
};

/* Empties <s> for a new recording (everything before the events and the arena). */
static inline void proxy_span_reset(struct proxy_span *s)
{
    /* In pieces of 64 bytes: a compiler clears such a piece with a few vector stores, and the
     * whole with a string instruction that costs a step per word. */
    const size_t n = offsetof(struct proxy_span, events);
    for (size_t i = 0; i < n; i += 64) {
        memset((char *)s + i, 0, n - i < 64 ? n - i : 64);
    }
    s->str_off = PROXY_SPAN_ARENA;
    s->attr_len = PROXY_SPAN_PRE;
}

/* Writes the whole OTLP protobuf Span message of ended span <s> into its block (see struct
 * proxy_span), when it has no events and its arena has room for the fields after the
 * attributes (nothing else is moved); sets wire_off and wire_len, or leaves wire_len 0 (the
 * encoder then writes the span itself). */
void proxy_span_finish(struct proxy_span *s);

/* The Span message proxy_span_finish wrote in <s> (wire_len set), as a write's piece. */
static inline uv_buf_t proxy_span_wire(const struct proxy_span *s)
{
    return (uv_buf_t){ .base = (char *)s->arena + s->wire_off, .len = s->wire_len };
}

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

/* Protobuf varints (the span's attributes and the OTLP request): the size of <v>, and <v> written
 * at <o> (returns the end). */
static inline size_t proxy_pb_vsz(uint64_t v)
{
    if (v < 0x80) {
        return 1; /* most lengths and values here: said without a loop */
    }
    if (v < 0x4000) {
        return 2;
    }
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline char *proxy_pb_varint(char *o, uint64_t v)
{
    if (v < 0x80) {
        *o = (char)v;
        return o + 1;
    }
    if (v < 0x4000) {
        o[0] = (char)(v | 0x80);
        o[1] = (char)(v >> 7);
        return o + 2;
    }
    while (v >= 0x80) {
        *o++ = (char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

/* Protobuf wire bits of an attribute: Span.attributes = 9 and the KeyValue/AnyValue fields, all
 * length-delimited but AnyValue.int_value = 3 (varint). */
enum {
    PROXY_PB_ATTR = 9 << 3 | 2,
    PROXY_PB_KEY = 1 << 3 | 2,
    PROXY_PB_VALUE = 2 << 3 | 2,
    PROXY_PB_STR = 1 << 3 | 2,
    PROXY_PB_INT = 3 << 3
};

/* Copies <n> bytes from <p> to <o>; returns whether they were all ASCII. Eight bytes at a time,
 * the last eight (or four) overlapping the ones before. */
static inline bool proxy_ascii_copy(char *o, const char *p, size_t n)
{
    if (n >= 8) {
        uint64_t acc = 0, x;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, p + i, 8);
            memcpy(o + i, &x, 8);
            acc |= x;
        }
        memcpy(&x, p + n - 8, 8);
        memcpy(o + n - 8, &x, 8);
        return !((acc | x) & 0x8080808080808080ull);
    }
    if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        memcpy(o, &x, 4);
        memcpy(o + n - 4, &y, 4);
        return !((x | y) & 0x80808080u);
    }
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++) {
        o[i] = p[i];
        acc |= (unsigned char)p[i];
    }
    return !(acc & 0x80);
}

/* proxy_span_int_n, inlined where the request path records one: with a literal key, its header
 * is written with moves of known size. */
static inline void proxy_span_int_in(struct proxy_span *s, const char *key, size_t klen, int64_t v)
{
    /* Every length fits one byte (a key under 100 bytes, a varint of 10 at most). */
    size_t any = 1 + proxy_pb_vsz((uint64_t)v);
    if (s->nattrs == PROXY_SPAN_MAX_ATTRS || (size_t)(s->str_off - s->attr_len) < klen + 7 + any) {
        s->dropped_attrs++;
        return;
    }
    s->nattrs++;
    char *o = s->arena + s->attr_len;
    o[0] = (char)PROXY_PB_ATTR;
    o[1] = (char)(klen + 4 + any);
    o[2] = (char)PROXY_PB_KEY;
    o[3] = (char)klen;
    memcpy(o + 4, key, klen);
    o += 4 + klen;
    o[0] = (char)PROXY_PB_VALUE;
    o[1] = (char)any;
    o[2] = (char)PROXY_PB_INT;
    o = proxy_pb_varint(o + 3, (uint64_t)v);
    s->attr_len = (uint16_t)(o - s->arena);
}

/* proxy_span_str_n, inlined where the request path records one: a short ASCII value with room
 * to spare (what proxy_span_str_n would write as it is) is written here, anything else there. */
static inline void proxy_span_str_in(struct proxy_span *s, const char *key, size_t klen,
                                     struct sc_str v)
{
    char *o = s->arena + s->attr_len;
    if (v.len + klen + 6 < 0x80 && s->nattrs < PROXY_SPAN_MAX_ATTRS &&
        (size_t)(s->str_off - s->attr_len) >= klen + 12 + v.len &&
        proxy_ascii_copy(o + klen + 8, v.p, v.len)) {
        s->nattrs++;
        o[0] = (char)PROXY_PB_ATTR;
        o[1] = (char)(klen + 6 + v.len);
        o[2] = (char)PROXY_PB_KEY;
        o[3] = (char)klen;
        memcpy(o + 4, key, klen);
        o[klen + 4] = (char)PROXY_PB_VALUE;
        o[klen + 5] = (char)(2 + v.len);
        o[klen + 6] = (char)PROXY_PB_STR;
        o[klen + 7] = (char)v.len;
        s->attr_len = (uint16_t)(s->attr_len + klen + 8 + v.len);
        return;
    }
    proxy_span_str_n(s, key, klen, v);
}
#define proxy_span_str_fast(s, key, v) proxy_span_str_in((s), "" key, sizeof(key) - 1, (v))
#define proxy_span_int_fast(s, key, v) proxy_span_int_in((s), "" key, sizeof(key) - 1, (v))
/* Attributes that are the same on every span they go on (a listener's, a route's, a cluster's,
 * an endpoint's, the custom tags), encoded once when a snapshot is set up and copied into a span
 * in one piece. */
struct proxy_span_blob {
    char *p;
    uint16_t len;
    uint16_t n;       /* attributes in it */
    uint16_t dropped; /* attributes that did not fit when it was made */
    /* A route's: what its spans' names carry after the method (" <template>", or nothing), when
     * it is valid UTF-8 short enough to be written as it is; NULL otherwise. */
    char *sfx;
    uint16_t sfx_len;
};

/* Blobs (and the connection's cache) are allocated this much longer than they are, so that
 * proxy_span_blob_add copies them in whole moves of this size. */
#define PROXY_BLOB_PAD 32

_Static_assert(sizeof(((struct proxy_span *)0)->pad) >= PROXY_BLOB_PAD, "the span's pad");

/* Makes <b> (returns new memory in b->p) from the attributes recorded in <scratch>, then empties
 * <scratch> for the next. */
void proxy_span_blob_take(struct proxy_span_blob *b, struct proxy_span *scratch);

/* Adds <n> attributes already encoded as <len> bytes at <p> (all, or none and counted dropped
 * when the span is full). */
void proxy_span_add_encoded(struct proxy_span *s, const char *p, size_t len, unsigned n);

/* The same for <len> bytes at <p> that may be read PROXY_BLOB_PAD bytes past their end: a short
 * piece is copied in moves of that size, inline, when the span has room for the overrun (a call
 * to memcpy costs more than such a copy; a long piece goes through memcpy). */
static inline void proxy_span_add_padded(struct proxy_span *s, const char *p, size_t len,
                                         unsigned n)
{
    if (len <= 2 * PROXY_BLOB_PAD && s->nattrs + n <= PROXY_SPAN_MAX_ATTRS &&
        (size_t)(s->str_off - s->attr_len) >= len + PROXY_BLOB_PAD) {
        char *o = s->arena + s->attr_len;
        for (size_t i = 0; i < len; i += PROXY_BLOB_PAD) {
            memcpy(o + i, p + i, PROXY_BLOB_PAD);
        }
        s->attr_len = (uint16_t)(s->attr_len + len);
        s->nattrs = (uint16_t)(s->nattrs + n);
        return;
    }
    if (s->nattrs + n <= PROXY_SPAN_MAX_ATTRS && (size_t)(s->str_off - s->attr_len) >= len) {
        memcpy(s->arena + s->attr_len, p, len); /* a long piece: one call, no other */
        s->attr_len = (uint16_t)(s->attr_len + len);
        s->nattrs = (uint16_t)(s->nattrs + n);
        return;
    }
    proxy_span_add_encoded(s, p, len, n);
}

/* Adds the attributes of <b> to <s> (all, or none and counted dropped when the span is full). */
static inline void proxy_span_blob_add(struct proxy_span *s, const struct proxy_span_blob *b)
{
    proxy_span_add_padded(s, b->p, b->len, b->n);
    s->dropped_attrs = (uint16_t)(s->dropped_attrs + b->dropped);
}

/* A downstream connection's own attributes and its last request's, encoded on its first sampled
 * request and copied in one piece into the spans of its next ones while what they come from
 * stays the same: http.request.method (the method of index <method>, proxy_span_method) and
 * url.path (<pathv>, a request without a query), url.scheme and sidecar.listener,
 * network.protocol.version, server.address and .port of the Host value it sent (<hostv>),
 * network.peer.address and .port, and user_agent.original (<uav>). Recorded under snapshot
 * generation <gen> (proxy_trace_rt.gen; 0: nothing cached). Kept with the connection's block
 * while it is recycled (proxy_span_conn_clear), freed with it. */
struct proxy_span_conn {
    uint64_t gen;
    uint16_t hostv_len, uav_len, pathv_len;
    uint16_t seg_len, seg_n;
    uint8_t proto; /* index of network.protocol.version */
    uint8_t method;
    bool has_ua;
    char hostv[128];
    char uav[256];
    char pathv[128];
    char seg[1024 + PROXY_BLOB_PAD];
    /* The end piece: what proxy_trace_end writes for route <e_route>, cluster <e_cluster>,
     * endpoint <e_ep> and method <e_method> under snapshot generation <e_gen> (0: none): the
     * span's name, and the route's then the endpoint's attributes (their blobs, one after the
     * other, <e_n> attributes, <e_dropped> dropped when the blobs were made). */
    uint64_t e_gen;
    const void *e_route, *e_cluster, *e_ep;
    uint8_t e_method;
    uint16_t e_name_len, e_len, e_n, e_dropped;
    char e_name[64 + PROXY_BLOB_PAD];
    char e_attrs[256 + PROXY_BLOB_PAD];
};

/* Forgets what <pc> holds (a new connection takes its block). NULL-safe. */
static inline void proxy_span_conn_clear(struct proxy_span_conn *pc)
{
    if (pc) {
        pc->gen = 0;
        pc->e_gen = 0;
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

/* The resource the spans describe (service.name, k8s.pod.name, ...): <n> string pairs. */
struct proxy_trace_resource {
    struct sc_kv *kv;
    size_t n;
};

/* Appends a body for <n> spans to <out>: OTLP ExportTraceServiceRequest as protobuf or JSON, or a
 * Zipkin v2 span list. Returns 0 or SC_ETOOBIG (<out>'s cap). */
int proxy_trace_encode_otlp_proto(struct sc_buf *out, const struct proxy_trace_resource *res,
                                  struct proxy_span *const *spans, size_t n);
/* The same body, but the spans proxy_span_finish wrote are not copied: <iov>[1 + i] points at
 * span i's bytes in its block, and <out> gets only what comes before the first span, which
 * <iov>[0] points at (<out> is not moved afterwards: the caller re-points iov[0] if it moves it).
 * Returns 0, or SC_EINVAL (appending nothing) when a span was not written so. */
int proxy_trace_encode_otlp_proto_iov(struct sc_buf *out, const struct proxy_trace_resource *res,
                                      struct proxy_span *const *spans, size_t n, uv_buf_t *iov);
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
    /* The wall clock's lead on the monotonic one (proxy_now_ns), read again every second: a
     * span's times are its exchange's monotonic ones moved by it, with no clock read of their
     * own. <wall_at>: the monotonic time it was read at (0: never). */
    uint64_t wall_off, wall_at;
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

/* The methods whose attribute a snapshot encodes once: the index of <m> (1 to
 * PROXY_SPAN_METHODS - 1), or 0 for any other. */
#define PROXY_SPAN_METHODS 10
extern const char proxy_span_method_names[PROXY_SPAN_METHODS][8];
static inline unsigned proxy_span_method(struct sc_str m)
{
    const char(*n)[8] = proxy_span_method_names;
    switch (m.len) {
    case 3:
        return memcmp(m.p, n[1], 3) == 0 ? 1 : memcmp(m.p, n[3], 3) == 0 ? 3 : 0;
    case 4:
        return memcmp(m.p, n[2], 4) == 0 ? 2 : memcmp(m.p, n[4], 4) == 0 ? 4 : 0;
    case 5:
        return memcmp(m.p, n[5], 5) == 0 ? 5 : memcmp(m.p, n[6], 5) == 0 ? 6 : 0;
    case 6:
        return memcmp(m.p, n[7], 6) == 0 ? 7 : 0;
    case 7:
        return memcmp(m.p, n[8], 7) == 0 ? 8 : memcmp(m.p, n[9], 7) == 0 ? 9 : 0;
    default:
        return 0;
    }
}

/* What a snapshot knows of tracing (struct proxy_rt's trace; NULL: tracing off). */
struct proxy_trace_rt {
    uint64_t gen;       /* a number no other snapshot's tracing had (proxy_span_conn.gen) */
    uint32_t threshold; /* sampled when a draw in [0, 1000000) falls below */
    bool wire;          /* OTLP protobuf: an ended span's message is written in its block */
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
    struct proxy_span_blob
        methods[PROXY_SPAN_METHODS]; /* http.request.method (proxy_span_method) */
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

/* Records the value <v> of the upstream response head's first grpc-status field (a codec passing
 * over the head's fields hands it here) in the exchange's span, which must be set. */
void proxy_trace_grpc_status(struct proxy_exch *ex, struct sc_str v);

/* Adds event <name> (a literal: "retry", "per_try_timeout") to the exchange's span, if any. */
void proxy_trace_event_n(struct proxy_exch *ex, const char *name, size_t nlen);
#define proxy_trace_event(ex, name) proxy_trace_event_n((ex), "" name, sizeof(name) - 1)

/* Ends the exchange's span (status, attributes) at monotonic time <now_ns> (proxy_now_ns) and
 * queues it for export. */
void proxy_trace_end(struct proxy_exch *ex, uint64_t now_ns);

#endif
