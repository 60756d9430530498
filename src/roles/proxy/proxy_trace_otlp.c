// SPDX-License-Identifier: Apache-2.0
// OTLP/HTTP protobuf encoding of span batches: an ExportTraceServiceRequest (one ResourceSpans,
// one ScopeSpans) built from the messages protoc-c compiled out of proto/*.proto, and the reading
// of the collector's ExportTraceServiceResponse. protobuf-c wants NUL-terminated strings and
// arrays of pointers: one scratch block per batch holds them all, freed once the body is packed.
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/otlp_trace_service.pb-c.h"
#include "roles/proxy/proxy_trace.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue pb_kv;
typedef Opentelemetry__Proto__Common__V1__AnyValue pb_any;
typedef Opentelemetry__Proto__Trace__V1__Span pb_span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event pb_event;
typedef Opentelemetry__Proto__Trace__V1__Status pb_status;

/* A bump allocator over one block sized for the batch up front. */
struct scratch {
    char *p;
    size_t len, cap;
};

static void *grab(struct scratch *s, size_t n)
{
    size_t at = (s->len + 15) & ~(size_t)15;
    if (at + n > s->cap) {
        abort(); /* the batch's sizing is wrong: a bug, not input */
    }
    void *r = s->p + at;
    s->len = at + n;
    return r;
}

static char *cstr(struct scratch *s, const char *p, size_t n)
{
    char *r = grab(s, n + 1);
    memcpy(r, p, n);
    r[n] = '\0';
    return r;
}

static void kv_str(pb_kv *kv, pb_any *v, char *key, char *val)
{
    opentelemetry__proto__common__v1__key_value__init(kv);
    opentelemetry__proto__common__v1__any_value__init(v);
    kv->key = key;
    kv->value = v;
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = val;
}

int proxy_trace_encode_otlp_proto(struct sc_buf *out, const struct proxy_trace_resource *res,
                                  struct proxy_span *const *spans, size_t n)
{
    /* Room: every message and pointer with its alignment, every string with its NUL. */
    size_t nattrs = res->n, nevents = 0, bytes = 0;
    for (size_t i = 0; i < res->n; i++) {
        bytes += strlen(res->kv[i].key) + strlen(res->kv[i].value) + 2;
    }
    for (size_t i = 0; i < n; i++) {
        nattrs += spans[i]->nattrs;
        nevents += spans[i]->nevents;
        bytes += spans[i]->arena_len + 2u * spans[i]->nattrs + 4;
        for (size_t a = 0; a < spans[i]->nattrs; a++) {
            bytes += strlen(spans[i]->attrs[a].key) + 1;
        }
        for (size_t e = 0; e < spans[i]->nevents; e++) {
            bytes += strlen(spans[i]->events[e].name) + 1;
        }
    }
    size_t per = 16 * 4; /* alignment slack per allocation, generously */
    size_t cap = bytes + (nattrs + nevents + n) * per +
                 nattrs * (sizeof(pb_kv) + sizeof(pb_any) + sizeof(pb_kv *)) +
                 nevents * (sizeof(pb_event) + sizeof(pb_event *)) +
                 n * (sizeof(pb_span) + sizeof(pb_span *) + sizeof(pb_status) + 24 + 8 * per) +
                 4096;
    struct scratch s = { .p = sc_malloc(cap), .cap = cap };

    Opentelemetry__Proto__Resource__V1__Resource resource =
        OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    resource.n_attributes = res->n;
    resource.attributes = grab(&s, res->n * sizeof(pb_kv *));
    for (size_t i = 0; i < res->n; i++) {
        pb_kv *kv = grab(&s, sizeof(*kv));
        pb_any *v = grab(&s, sizeof(*v));
        kv_str(kv, v, cstr(&s, res->kv[i].key, strlen(res->kv[i].key)),
               cstr(&s, res->kv[i].value, strlen(res->kv[i].value)));
        resource.attributes[i] = kv;
    }
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
        OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    scope.name = "sidecar";
    scope.version = SC_VERSION;
    Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
        OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    ss.scope = &scope;
    ss.n_spans = n;
    ss.spans = grab(&s, n * sizeof(pb_span *));
    for (size_t i = 0; i < n; i++) {
        const struct proxy_span *sp = spans[i];
        pb_span *p = grab(&s, sizeof(*p));
        opentelemetry__proto__trace__v1__span__init(p);
        uint8_t *ids = grab(&s, 32);
        memcpy(ids, sp->trace_id, 16);
        memcpy(ids + 16, sp->span_id, 8);
        memcpy(ids + 24, sp->parent_id, 8);
        p->trace_id = (ProtobufCBinaryData){ 16, ids };
        p->span_id = (ProtobufCBinaryData){ 8, ids + 16 };
        if (sp->has_parent) {
            p->parent_span_id = (ProtobufCBinaryData){ 8, ids + 24 };
        }
        if (sp->state_len) {
            p->trace_state = cstr(&s, sp->arena + sp->state_off, sp->state_len);
        }
        /* W3C trace flags (sampled) and SpanFlags: whether the parent is remote is known (0x100),
         * and it is (0x200) when it came in a request's headers. */
        p->flags = 0x101u | (sp->has_parent ? 0x200u : 0);
        p->name = cstr(&s, sp->arena + sp->name_off, sp->name_len);
        p->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)sp->kind;
        p->start_time_unix_nano = sp->start_ns;
        p->end_time_unix_nano = sp->end_ns;
        p->n_attributes = sp->nattrs;
        p->attributes = grab(&s, sp->nattrs * sizeof(pb_kv *) + 1);
        for (size_t a = 0; a < sp->nattrs; a++) {
            const struct proxy_span_attr *at = &sp->attrs[a];
            pb_kv *kv = grab(&s, sizeof(*kv));
            pb_any *v = grab(&s, sizeof(*v));
            char *key = cstr(&s, at->key, strlen(at->key));
            if (at->type == PROXY_ATTR_INT) {
                kv_str(kv, v, key, NULL);
                v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
                v->int_value = at->i;
            } else {
                kv_str(kv, v, key, cstr(&s, sp->arena + at->off, at->len));
            }
            p->attributes[a] = kv;
        }
        p->dropped_attributes_count = sp->dropped_attrs;
        p->n_events = sp->nevents;
        p->events = grab(&s, sp->nevents * sizeof(pb_event *) + 1);
        for (size_t e = 0; e < sp->nevents; e++) {
            pb_event *ev = grab(&s, sizeof(*ev));
            opentelemetry__proto__trace__v1__span__event__init(ev);
            ev->time_unix_nano = sp->events[e].time_ns;
            ev->name = cstr(&s, sp->events[e].name, strlen(sp->events[e].name));
            p->events[e] = ev;
        }
        p->dropped_events_count = sp->dropped_events;
        pb_status *st = grab(&s, sizeof(*st));
        opentelemetry__proto__trace__v1__status__init(st);
        st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)sp->status;
        p->status = st;
        ss.spans[i] = p;
    }
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
    Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
        OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    rs.resource = &resource;
    rs.n_scope_spans = 1;
    rs.scope_spans = &ssp;
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    req.n_resource_spans = 1;
    req.resource_spans = &rsp;
    int rc = 0;
    size_t need =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
            &req);
    if (sc_buf_reserve(out, need) < 0) {
        rc = SC_ETOOBIG;
    } else {
        out->len += opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(
            &req, (uint8_t *)out->p + out->len);
    }
    sc_free(s.p);
    return rc;
}

int64_t proxy_trace_rejected_proto(struct sc_str body)
{
    if (!body.len) {
        return 0;
    }
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
            NULL, body.len, (const uint8_t *)body.p);
    int64_t n = 0;
    if (r && r->partial_success && r->partial_success->rejected_spans > 0) {
        n = r->partial_success->rejected_spans;
    }
    if (r) {
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(
            r, NULL);
    }
    return n;
}
