// SPDX-License-Identifier: Apache-2.0
// The span exporter: a bounded queue that workers append finished spans to, and one exporter on
// the main loop that takes batches from it (by size, or every batch_interval), encodes them (OTLP
// protobuf or JSON, Zipkin v2 JSON; gzip when asked) and POSTs them: a plain http:// collector
// through net/h1client, the body encoded behind room left for the request head so the request
// goes out as it was encoded (no copy, libcurl never loaded; uncompressed OTLP protobuf is not even
// encoded: each span's message was written in its block when it ended, and the request is
// gathered from the blocks in one write), anything else (https, a proxy in the
// environment) through the egress client, libcurl. One export is in flight at a time; a failed one
// is retried with backoff (Retry-After honoured) on connection errors, timeouts and
// 429/502/503/504, then dropped. Spans are counted as exported only once the collector acknowledged
// them (a 2xx, less what an OTLP partial success rejected); every span that leaves otherwise is
// counted by why. Workers never wait for the exporter: a full queue drops its oldest span.
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/spin.h"
#include "net/egress.h"
#include "net/h1client.h"
#include "net/http1.h"
#include "roles/proxy/proxy_trace.h"
#include "roles/proxy/proxy_trace_ctx.h"

/* Body cap of one export: a batch that encodes larger is dropped (counted) rather than sent. */
#define EXPORT_MAX_BODY (64u << 20)
/* A log line about dropped spans at most this often. */
#define DROP_LOG_MS 10000

/* What an export request borrows until its callback: kept while a reload replaces it. */
struct texp_conf {
    char *url;
    struct sc_kv *hdrs;
    size_t nhdrs;
    /* A plain http:// URL (no proxy in the environment): sent through net/h1client, with <head>
     * (request line and fixed headers; Content-Length and the blank line follow), or <head_err>
     * when the configured headers cannot be written. */
    bool plain;
    struct sc_h1cli_url u;
    struct sc_buf head;
    int head_err;
};

struct proxy_tracer {
    uv_loop_t *loop;
    struct sc_egress *eg; /* libcurl, loaded for a collector h1client cannot reach (https, a
                             proxy); NULL then: it could not be loaded (exports fail, counted) */
    atomic_bool mu;       /* guards the ring and the pool, from every worker (a spin lock:
                             each section is a few loads and stores) */
    struct proxy_span **ring;
    size_t cap, head, count;
    struct proxy_span *pool; /* spans exported, kept for reuse (npool at most pool_cap()) */
    size_t npool;
    atomic_bool kicked; /* an async wake-up is pending */
    uv_async_t async;
    uv_timer_t timer;       /* batch_interval */
    uv_timer_t retry_timer; /* backoff */
    int handles;            /* open handles, for close */
    /* settings (main loop) */
    int provider;
    size_t max_batch;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    bool gzip;
    int64_t max_retries;
    uint64_t initial_backoff_ms, max_backoff_ms;
    struct texp_conf *conf, *retired;
    struct proxy_trace_resource res;
    /* the export in flight or backing off */
    struct sc_egress_xfer *xfer;
    struct sc_h1cli_named *h1;
    struct texp_conf *xfer_conf;
    struct sc_buf body; /* <room> bytes for the request head, then the encoded body */
    size_t room;
    /* A batch sent from the spans' own blocks (OTLP protobuf, plain http://, no gzip): <body>
     * holds the request's bytes up to the first span, iov[0] points at them and the head, iov[1
     * + i] at span i's Span message in block held[i]; the blocks go back to the pool when the
     * batch is done. <gathered>: the spans' bytes. NULL when the body is all in <body>. */
    uv_buf_t *iov;
    struct proxy_span **held;
    size_t nheld, gathered;
    uint64_t sent_ns; /* uv_hrtime of the h1client attempt in flight */
    size_t nspans;
    int attempts;
    bool backing_off;
    bool closing;
    bool flushing;
    void (*flush_cb)(void *arg);
    void *flush_arg;
    uint64_t last_drop_log;
    uint64_t drops_unlogged;
    double full_logged; /* m_full's value when queue drops were last reported */
    struct sc_metric *m_sampled, *m_exported, *m_full, *m_failed, *m_latency, *m_queued;
};

/* ---- JSON encoders ---- */

static int jraw(struct sc_buf *b, const char *s, size_t n)
{
    return sc_buf_append(b, s, n);
}

#define JLIT(b, s) jraw((b), (s), sizeof(s) - 1)

/* Appends <s> (valid UTF-8) quoted. */
static int jstr(struct sc_buf *b, const char *s, size_t n)
{
    if (sc_buf_reserve(b, 6 * n + 2) < 0) {
        return SC_ETOOBIG;
    }
    b->len += sc_json_quote_to(b->p + b->len, s, n, SC_JSON_COMPACT);
    return 0;
}

static int jhex(struct sc_buf *b, const uint8_t *id, size_t n)
{
    char h[34];
    h[0] = '"';
    proxy_trace_hex(h + 1, id, n);
    h[2 * n + 1] = '"';
    return jraw(b, h, 2 * n + 2);
}

static int otlp_kv(struct sc_buf *b, const char *key, size_t klen, struct sc_str sv, bool is_int,
                   int64_t iv)
{
    int rc = JLIT(b, "{\"key\":");
    rc |= jstr(b, key, klen);
    if (is_int) {
        rc |= sc_buf_appendf(b, ",\"value\":{\"intValue\":\"%lld\"}}", (long long)iv);
    } else {
        rc |= JLIT(b, ",\"value\":{\"stringValue\":");
        rc |= jstr(b, sv.p, sv.len);
        rc |= JLIT(b, "}}");
    }
    return rc;
}

int proxy_trace_encode_otlp_json(struct sc_buf *out, const struct proxy_trace_resource *res,
                                 struct proxy_span *const *spans, size_t n)
{
    int rc = JLIT(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    for (size_t i = 0; i < res->n; i++) {
        rc |= i ? JLIT(out, ",") : 0;
        rc |= otlp_kv(out, res->kv[i].key, strlen(res->kv[i].key), sc_str_c(res->kv[i].value),
                      false, 0);
    }
    rc |= JLIT(out, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"sidecar\",\"version\":\"" SC_VERSION
                    "\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        const struct proxy_span *s = spans[i];
        rc |= i ? JLIT(out, ",{\"traceId\":") : JLIT(out, "{\"traceId\":");
        rc |= jhex(out, s->trace_id, 16);
        rc |= JLIT(out, ",\"spanId\":");
        rc |= jhex(out, s->span_id, 8);
        if (s->has_parent) {
            rc |= JLIT(out, ",\"parentSpanId\":");
            rc |= jhex(out, s->parent_id, 8);
        }
        if (s->state_len) {
            rc |= JLIT(out, ",\"traceState\":");
            rc |= jstr(out, s->arena + s->state_off, s->state_len);
        }
        rc |= JLIT(out, ",\"name\":");
        rc |= jstr(out, s->arena + s->name_off, s->name_len);
        rc |=
            sc_buf_appendf(out,
                           ",\"kind\":%d,\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":"
                           "\"%llu\",\"attributes\":[",
                           s->kind, (unsigned long long)s->start_ns, (unsigned long long)s->end_ns);
        struct proxy_span_attr at;
        for (size_t pos = 0, a = 0; proxy_span_attr_next(s, &pos, &at); a++) {
            rc |= a ? JLIT(out, ",") : 0;
            rc |= otlp_kv(out, at.key.p, at.key.len, at.str, at.is_int, at.i);
        }
        rc |= JLIT(out, "]");
        if (s->dropped_attrs) {
            rc |= sc_buf_appendf(out, ",\"droppedAttributesCount\":%u", s->dropped_attrs);
        }
        rc |= JLIT(out, ",\"events\":[");
        for (size_t e = 0; e < s->nevents; e++) {
            rc |= sc_buf_appendf(out, "%s{\"timeUnixNano\":\"%llu\",\"name\":", e ? "," : "",
                                 (unsigned long long)s->events[e].time_ns);
            rc |= jstr(out, s->events[e].name, s->events[e].nlen);
            rc |= JLIT(out, "}");
        }
        rc |= JLIT(out, "]");
        if (s->dropped_events) {
            rc |= sc_buf_appendf(out, ",\"droppedEventsCount\":%u", s->dropped_events);
        }
        rc |= sc_buf_appendf(out, ",\"status\":{\"code\":%d}}", s->status);
    }
    rc |= JLIT(out, "]}]}]}");
    return rc ? SC_ETOOBIG : 0;
}

static const char *res_value(const struct proxy_trace_resource *res, const char *key)
{
    for (size_t i = 0; i < res->n; i++) {
        if (strcmp(res->kv[i].key, key) == 0) {
            return res->kv[i].value;
        }
    }
    return "";
}

/* Zipkin's remoteEndpoint: the peer's address and port when the span has them. */
static int zipkin_remote(struct sc_buf *out, const struct proxy_span *s)
{
    struct sc_str ip = SC_STR_NULL;
    int64_t port = -1;
    struct proxy_span_attr at;
    for (size_t pos = 0; proxy_span_attr_next(s, &pos, &at);) {
        if (sc_str_eq(at.key, SC_STR("network.peer.address"))) {
            ip = at.str;
        } else if (sc_str_eq(at.key, SC_STR("network.peer.port"))) {
            port = at.i;
        }
    }
    if (!ip.len) {
        return 0;
    }
    bool v6 = memchr(ip.p, ':', ip.len) != NULL;
    int rc = v6 ? JLIT(out, ",\"remoteEndpoint\":{\"ipv6\":")
                : JLIT(out, ",\"remoteEndpoint\":{\"ipv4\":");
    rc |= jstr(out, ip.p, ip.len);
    if (port > 0) {
        rc |= sc_buf_appendf(out, ",\"port\":%lld", (long long)port);
    }
    return rc | JLIT(out, "}");
}

int proxy_trace_encode_zipkin(struct sc_buf *out, const struct proxy_trace_resource *res,
                              struct proxy_span *const *spans, size_t n)
{
    const char *svc = res_value(res, "service.name");
    int rc = JLIT(out, "[");
    for (size_t i = 0; i < n; i++) {
        const struct proxy_span *s = spans[i];
        rc |= i ? JLIT(out, ",{\"traceId\":") : JLIT(out, "{\"traceId\":");
        rc |= jhex(out, s->trace_id, 16);
        rc |= JLIT(out, ",\"id\":");
        rc |= jhex(out, s->span_id, 8);
        if (s->has_parent) {
            rc |= JLIT(out, ",\"parentId\":");
            rc |= jhex(out, s->parent_id, 8);
        }
        rc |= s->kind == PROXY_SPAN_CLIENT ? JLIT(out, ",\"kind\":\"CLIENT\",\"name\":")
                                           : JLIT(out, ",\"kind\":\"SERVER\",\"name\":");
        rc |= jstr(out, s->arena + s->name_off, s->name_len);
        uint64_t ts = s->start_ns / 1000, dur = (s->end_ns - s->start_ns) / 1000;
        rc |= sc_buf_appendf(out, ",\"timestamp\":%llu,\"duration\":%llu", (unsigned long long)ts,
                             (unsigned long long)(dur ? dur : 1));
        rc |= JLIT(out, ",\"localEndpoint\":{\"serviceName\":");
        rc |= jstr(out, svc, strlen(svc));
        rc |= JLIT(out, "}");
        rc |= zipkin_remote(out, s);
        rc |= JLIT(out, ",\"tags\":{");
        bool first = true;
        struct proxy_span_attr at;
        for (size_t pos = 0; proxy_span_attr_next(s, &pos, &at);) {
            rc |= first ? 0 : JLIT(out, ",");
            first = false;
            rc |= jstr(out, at.key.p, at.key.len);
            if (at.is_int) {
                rc |= sc_buf_appendf(out, ":\"%lld\"", (long long)at.i);
            } else {
                rc |= JLIT(out, ":");
                rc |= jstr(out, at.str.p, at.str.len);
            }
        }
        if (s->status == 2) {
            /* Zipkin marks a failed span with an "error" tag. */
            rc |= first ? JLIT(out, "\"error\":\"true\"") : JLIT(out, ",\"error\":\"true\"");
        }
        rc |= JLIT(out, "}");
        if (s->nevents) {
            rc |= JLIT(out, ",\"annotations\":[");
            for (size_t e = 0; e < s->nevents; e++) {
                rc |= sc_buf_appendf(out, "%s{\"timestamp\":%llu,\"value\":", e ? "," : "",
                                     (unsigned long long)(s->events[e].time_ns / 1000));
                rc |= jstr(out, s->events[e].name, s->events[e].nlen);
                rc |= JLIT(out, "}");
            }
            rc |= JLIT(out, "]");
        }
        rc |= JLIT(out, "}");
    }
    rc |= JLIT(out, "]");
    return rc ? SC_ETOOBIG : 0;
}

int64_t proxy_trace_rejected_json(struct sc_str body)
{
    if (!body.len) {
        return 0;
    }
    json_t *j = json_loadb(body.p, body.len, 0, NULL);
    json_t *ps = j ? json_object_get(j, "partialSuccess") : NULL;
    json_t *r = ps ? json_object_get(ps, "rejectedSpans") : NULL;
    int64_t n = 0;
    if (json_is_integer(r)) {
        n = json_integer_value(r);
    } else if (json_is_string(r)) {
        n = strtoll(json_string_value(r), NULL, 10); /* int64 travels as a string in OTLP JSON */
    }
    json_decref(j);
    return n > 0 ? n : 0;
}

/* ---- the queue ---- */

static void log_drops(struct proxy_tracer *t, uint64_t n, const char *why)
{
    t->drops_unlogged += n;
    uint64_t now = uv_now(t->loop);
    if (t->last_drop_log && now - t->last_drop_log < DROP_LOG_MS) {
        return;
    }
    t->last_drop_log = now;
    sc_warn("tracing: spans dropped", SC_LU("spans", t->drops_unlogged), SC_LS("reason", why));
    t->drops_unlogged = 0;
}

/* Spans kept for reuse at most: two batches' worth (the one in flight and the one filling while
 * it is), so a steady rate allocates nothing, within a bound whatever the batch size. */
#define POOL_MAX 2048
static size_t pool_cap(const struct proxy_tracer *t)
{
    return 2 * t->max_batch < POOL_MAX ? 2 * t->max_batch : POOL_MAX;
}

void proxy_span_cache_free(struct proxy_span_cache *c)
{
    while (c->head) {
        struct proxy_span *s = c->head;
        c->head = s->next;
        sc_free(s);
    }
    c->n = 0;
}

struct proxy_span *proxy_tracer_span(struct proxy_tracer *t, struct proxy_span_cache *c)
{
    sc_metrics_counter_inc(t->m_sampled);
    struct proxy_span *s = c->head;
    if (s) {
        c->head = s->next;
        c->n--;
    } else {
        sc_spin_lock(&t->mu);
        s = t->pool;
        if (s) {
            t->pool = s->next;
            t->npool--;
        }
        sc_spin_unlock(&t->mu);
    }
    if (!s) {
        s = sc_malloc(sizeof(*s));
    }
    proxy_span_reset(s);
    return s;
}

/* Gives span <s> back: kept for reuse while the pool has room, else freed. Holds t->mu. */
static void recycle_locked(struct proxy_tracer *t, struct proxy_span *s)
{
    if (t->npool < pool_cap(t)) {
        s->next = t->pool;
        t->pool = s;
        t->npool++;
    } else {
        sc_free(s);
    }
}

void proxy_tracer_push(struct proxy_tracer *t, struct proxy_span *s, struct proxy_span_cache *c)
{
    struct proxy_span *old = NULL;
    sc_spin_lock(&t->mu);
    if (t->count == t->cap) {
        old = t->ring[t->head];
        t->head = (t->head + 1) % t->cap;
        t->count--;
    }
    t->ring[(t->head + t->count) % t->cap] = s;
    t->count++;
    bool full = t->count >= t->max_batch;
    if (old) {
        recycle_locked(t, old);
    }
    if (c->n < PROXY_SPAN_CACHE_MAX / 4) {
        while (t->pool && c->n < PROXY_SPAN_CACHE_MAX) {
            struct proxy_span *p = t->pool;
            t->pool = p->next;
            t->npool--;
            p->next = c->head;
            c->head = p;
            c->n++;
        }
    }
    sc_spin_unlock(&t->mu);
    if (old) {
        sc_metrics_counter_inc(t->m_full);
    }
    if (full && !atomic_exchange(&t->kicked, true)) {
        uv_async_send(&t->async);
    }
}

/* Takes up to <max> spans, oldest first, into <out>. */
static size_t take(struct proxy_tracer *t, struct proxy_span **out, size_t max)
{
    sc_spin_lock(&t->mu);
    size_t n = t->count < max ? t->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = t->ring[(t->head + i) % t->cap];
    }
    t->head = (t->head + n) % t->cap;
    t->count -= n;
    size_t left = t->count;
    sc_spin_unlock(&t->mu);
    sc_metrics_gauge_set(t->m_queued, (double)left);
    return n;
}

/* ---- exporting ---- */

static void kick(struct proxy_tracer *t);
static void on_flush_deadline(uv_timer_t *h);

/* Compresses the body of <b> (after its <room> bytes), keeping the same room in front. */
static int gzip_body(struct sc_buf *b, size_t room)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -ENOMEM;
    }
    struct sc_buf out;
    sc_buf_init(&out, b->max);
    size_t bound = deflateBound(&z, (uLong)(b->len - room)) + 32;
    int rc = sc_buf_reserve(&out, room + bound);
    if (rc == 0) {
        z.next_in = (Bytef *)b->p + room;
        z.avail_in = (uInt)(b->len - room);
        z.next_out = (Bytef *)out.p + room;
        z.avail_out = (uInt)bound;
        rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -EIO;
        out.len = room + bound - z.avail_out;
    }
    deflateEnd(&z);
    if (rc == 0) {
        sc_buf_cleanup(b);
        *b = out;
    } else {
        sc_buf_cleanup(&out);
    }
    return rc;
}

static void conf_free(struct texp_conf *c);

/* Gives the <n> span blocks of <batch> back to the pool in one splice (the lock is held for a
 * few stores, not a walk); what the pool has no room for is freed outside it. */
static void give_back(struct proxy_tracer *t, struct proxy_span **batch, size_t n)
{
    if (!n) {
        return;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        batch[i]->next = batch[i + 1];
    }
    size_t keep = 0;
    sc_spin_lock(&t->mu);
    size_t cap = pool_cap(t);
    if (t->npool < cap) {
        keep = cap - t->npool < n ? cap - t->npool : n;
        batch[keep - 1]->next = t->pool;
        t->pool = batch[0];
        t->npool += keep;
    }
    sc_spin_unlock(&t->mu);
    for (size_t i = keep; i < n; i++) {
        sc_free(batch[i]);
    }
}

/* Ends a gathered batch's hold on its blocks (see proxy_tracer.iov). */
static void release_held(struct proxy_tracer *t)
{
    give_back(t, t->held, t->nheld);
    sc_free(t->held);
    sc_free(t->iov);
    t->held = NULL;
    t->iov = NULL;
    t->nheld = 0;
    t->gathered = 0;
}

/* Copies a gathered batch's spans after the bytes in t->body (a client that needs the body in
 * one piece) and releases their blocks. */
static int linearize(struct proxy_tracer *t)
{
    if (!t->iov) {
        return 0;
    }
    int rc = sc_buf_reserve(&t->body, t->gathered);
    for (size_t i = 0; rc == 0 && i < t->nheld; i++) {
        uv_buf_t w = proxy_span_wire(t->held[i]); /* not t->iov: an attempt moved through it */
        rc = sc_buf_append(&t->body, w.base, w.len);
    }
    release_held(t);
    return rc < 0 ? SC_ETOOBIG : 0;
}

static void finish_batch(struct proxy_tracer *t)
{
    t->xfer = NULL;
    t->h1 = NULL;
    t->nspans = 0;
    t->attempts = 0;
    release_held(t);
    sc_buf_cleanup(&t->body);
    if (t->retired && t->retired == t->xfer_conf) {
        conf_free(t->retired);
        t->retired = NULL;
    }
    t->xfer_conf = NULL;
}

static void drop_batch(struct proxy_tracer *t, const char *why)
{
    sc_metrics_counter_add(t->m_failed, t->nspans);
    log_drops(t, t->nspans, why);
    finish_batch(t);
}

static void send_body(struct proxy_tracer *t);

static void on_retry(uv_timer_t *h)
{
    struct proxy_tracer *t = h->data;
    t->backing_off = false;
    send_body(t);
}

/* After an export: the next one goes at once when a whole batch waits (or when flushing), else
 * at the next batch interval, so a busy proxy sends full batches rather than whatever arrived
 * while the last one was in flight (each export costs about as much as 50 spans' encoding). */
static void kick_full(struct proxy_tracer *t)
{
    sc_spin_lock(&t->mu);
    bool full = t->count >= t->max_batch;
    sc_spin_unlock(&t->mu);
    if (full || t->flushing) {
        kick(t);
    }
}

/* What an export attempt came to, from either client. */
struct sent {
    int error;          /* 0 or negative */
    const char *reason; /* with an error, when the client said more */
    bool retriable;     /* the error is one to retry (a connection error, a timeout) */
    int status;
    struct sc_str body;
    struct sc_str retry_after;
    double seconds;
};

static void sent(struct proxy_tracer *t, const struct sent *resp)
{
    sc_metrics_histogram_observe(t->m_latency, resp->seconds);
    int st = resp->status;
    if (resp->error == 0 && st >= 200 && st < 300) {
        int64_t rej = t->provider == PROXY_TRACE_OTLP_HTTP ? proxy_trace_rejected_proto(resp->body)
                      : t->provider == PROXY_TRACE_OTLP_JSON ? proxy_trace_rejected_json(resp->body)
                                                             : 0;
        if (rej > (int64_t)t->nspans) {
            rej = (int64_t)t->nspans;
        }
        sc_metrics_counter_add(t->m_exported, t->nspans - (size_t)rej);
        if (rej > 0) {
            sc_metrics_counter_add(t->m_failed, (uint64_t)rej);
            log_drops(t, (uint64_t)rej, "the collector rejected them (partial success)");
        }
        finish_batch(t);
        kick_full(t);
        return;
    }
    bool retriable =
        resp->error != 0 ? resp->retriable : st == 429 || st == 502 || st == 503 || st == 504;
    if (!retriable || t->flushing || t->closing || t->attempts > t->max_retries) {
        char why[96];
        if (resp->error) {
            snprintf(why, sizeof(why), "export failed: %s",
                     resp->reason ? resp->reason : sc_strerror(resp->error));
        } else {
            snprintf(why, sizeof(why), "the collector answered %d", st);
        }
        drop_batch(t, why);
        kick_full(t);
        return;
    }
    /* Backoff: doubled per attempt with jitter in [d/2, d]; a Retry-After in seconds wins. */
    uint64_t d = t->initial_backoff_ms << (t->attempts - 1 < 20 ? t->attempts - 1 : 20);
    if (d > t->max_backoff_ms) {
        d = t->max_backoff_ms;
    }
    d = d / 2 + (uint64_t)rand() % (d / 2 + 1);
    struct sc_str ra = resp->error ? SC_STR_NULL : resp->retry_after;
    uint64_t secs;
    if (ra.len && sc_str_to_u64(ra, 86400, &secs) == 0) {
        d = secs * 1000 < t->max_backoff_ms ? secs * 1000 : t->max_backoff_ms;
    }
    sc_debug("tracing: export retried", SC_LI("status", st), SC_LU("delay_ms", d));
    t->backing_off = true;
    uv_timer_start(&t->retry_timer, on_retry, d, 0);
}

static void on_egress_sent(void *arg, const struct sc_egress_resp *resp)
{
    struct proxy_tracer *t = arg;
    t->xfer = NULL;
    struct sent r = {
        .error = resp->error,
        .reason = resp->error_msg,
        /* SC_ECLOSED: the client itself is closing */
        .retriable = resp->error != SC_ECLOSED && resp->error != SC_ETOOBIG,
        .status = resp->status,
        .body = resp->body,
        .seconds = resp->seconds,
    };
    if (!resp->error) {
        r.retry_after = sc_egress_resp_header(resp, "retry-after");
    }
    sent(t, &r);
}

static void on_h1_sent(void *arg, const struct sc_h1cli_resp *resp)
{
    struct proxy_tracer *t = arg;
    t->h1 = NULL;
    struct sent r = {
        .error = resp->error,
        .reason = resp->reason,
        /* SC_ECLOSED here: the collector closed before answering, a connection error */
        .retriable = resp->error != SC_ETOOBIG,
        .status = resp->status,
        .body = resp->body,
        .seconds = (double)(uv_hrtime() - t->sent_ns) / 1e9,
    };
    const struct sc_http_header *h =
        resp->msg ? sc_http1_find(resp->msg, SC_STR("Retry-After"), NULL) : NULL;
    if (h) {
        r.retry_after = h->value;
    }
    sent(t, &r);
}

/* Sends the body through net/h1client: the head is written into the room in front of the body
 * (the body is moved only when a reload made the head longer than the room it was encoded with),
 * and the request goes out from the body's buffer as it is. */
static int send_h1(struct proxy_tracer *t, const struct texp_conf *c)
{
    if (c->head_err) {
        return c->head_err;
    }
    size_t blen = t->body.len - t->room + t->gathered;
    char tail[80];
    int tl = snprintf(tail, sizeof(tail), "Content-Length: %zu\r\nConnection: close\r\n\r\n", blen);
    size_t hl = c->head.len + (size_t)tl;
    if (hl > t->room) {
        struct sc_buf nb;
        sc_buf_init(&nb, hl + blen);
        nb.sensitive = t->body.sensitive;
        if (sc_buf_reserve(&nb, hl + t->body.len - t->room) < 0) {
            sc_buf_cleanup(&nb);
            return SC_ETOOBIG;
        }
        memcpy(nb.p + hl, t->body.p + t->room, t->body.len - t->room);
        nb.len = hl + t->body.len - t->room;
        sc_buf_cleanup(&t->body);
        t->body = nb;
        t->room = hl;
    }
    char *o = t->body.p + t->room - hl;
    memcpy(o, c->head.p, c->head.len);
    memcpy(o + c->head.len, tail, (size_t)tl);
    struct sc_h1cli_req req = {
        .method = SC_STR("POST"),
        .timeout_ms = t->timeout_ms,
        .max_body = 1 << 20,
    };
    if (t->iov) {
        t->iov[0] = uv_buf_init(o, (unsigned)(hl + t->body.len - t->room));
        for (size_t i = 0; t->attempts > 1 && i < t->nheld; i++) {
            t->iov[1 + i] = proxy_span_wire(t->held[i]); /* the last attempt moved through it */
        }
        req.iov = t->iov;
        req.niov = (unsigned)(1 + t->nheld);
        req.iov_writable = true;
    } else {
        req.raw = sc_str_n(o, hl + blen);
    }
    t->sent_ns = uv_hrtime();
    return sc_h1cli_send_host(t->loop, c->u.host, c->u.port, &req, on_h1_sent, t, &t->h1);
}

static int send_egress(struct proxy_tracer *t, const struct texp_conf *c)
{
    if (linearize(t) < 0) {
        return SC_ETOOBIG; /* a reload made the collector one h1client cannot reach */
    }
    struct sc_kv hdr[40];
    size_t nh = 0;
    const char *ctype =
        t->provider == PROXY_TRACE_OTLP_HTTP ? "application/x-protobuf" : "application/json";
    hdr[nh++] = (struct sc_kv){ .key = "Content-Type", .value = (char *)ctype };
    hdr[nh++] = (struct sc_kv){ .key = "User-Agent", .value = "sidecar/" SC_VERSION };
    if (t->gzip) {
        hdr[nh++] = (struct sc_kv){ .key = "Content-Encoding", .value = "gzip" };
    }
    for (size_t i = 0; i < c->nhdrs && nh < SC_ARRAY_LEN(hdr); i++) {
        hdr[nh++] = c->hdrs[i];
    }
    struct sc_egress_req req = {
        .method = "POST",
        .url = c->url,
        .headers = hdr,
        .nheaders = nh,
        .body = t->body.p + t->room,
        .body_len = t->body.len - t->room,
        .timeout_ms = t->timeout_ms,
        .max_response = 1 << 20,
    };
    return t->eg ? sc_egress_send(t->eg, &req, on_egress_sent, t, &t->xfer) : SC_EUNSUPPORTED;
}

static void send_body(struct proxy_tracer *t)
{
    t->attempts++;
    int err = t->conf->plain ? send_h1(t, t->conf) : send_egress(t, t->conf);
    if (err < 0) {
        t->xfer = NULL;
        t->h1 = NULL;
        drop_batch(t, "export not started");
        return;
    }
    t->xfer_conf = t->conf;
}

/* Starts the next export when none is in flight: up to max_batch spans from the queue. */
static void kick(struct proxy_tracer *t)
{
    if (t->xfer || t->h1 || t->backing_off || t->nspans || t->closing) {
        return;
    }
    struct proxy_span **batch = sc_reallocarray(NULL, t->max_batch, sizeof(*batch));
    size_t n = take(t, batch, t->max_batch);
    if (n == 0) {
        sc_free(batch);
        if (t->flushing && t->flush_cb) {
            /* Called back from a timer of its own, never from inside the egress callback. */
            uv_timer_start(&t->retry_timer, on_flush_deadline, 0, 0);
        }
        return;
    }
    /* Room for the request head in front of the body (h1client sends them as one piece). */
    t->room = t->conf->plain ? t->conf->head.len + 64 : 0;
    sc_buf_init(&t->body, t->room + EXPORT_MAX_BODY);
    t->body.sensitive = t->conf->nhdrs > 0; /* the head holds the configured headers (API keys) */
    (void)sc_buf_reserve(&t->body, t->room);
    t->body.len = t->room;
    /* OTLP protobuf to a plain http:// collector, uncompressed: the spans' messages are sent
     * from their blocks (proxy_span_finish wrote them there), not copied into the body. */
    int rc = SC_EINVAL;
    if (t->provider == PROXY_TRACE_OTLP_HTTP && t->conf->plain && !t->gzip) {
        t->iov = sc_reallocarray(NULL, n + 1, sizeof(*t->iov)); /* all written: not zeroed */
        rc = proxy_trace_encode_otlp_proto_iov(&t->body, &t->res, batch, n, t->iov);
        if (rc == 0) {
            t->held = batch;
            t->nheld = n;
            for (size_t i = 0; i < n; i++) {
                t->gathered += t->iov[1 + i].len;
            }
        } else {
            sc_free(t->iov);
            t->iov = NULL;
        }
    }
    if (rc == SC_EINVAL) {
        rc = t->provider == PROXY_TRACE_OTLP_HTTP
                 ? proxy_trace_encode_otlp_proto(&t->body, &t->res, batch, n)
             : t->provider == PROXY_TRACE_OTLP_JSON
                 ? proxy_trace_encode_otlp_json(&t->body, &t->res, batch, n)
                 : proxy_trace_encode_zipkin(&t->body, &t->res, batch, n);
    }
    if (!t->iov) {
        give_back(t, batch, n);
        sc_free(batch);
    }
    t->nspans = n;
    if (rc == 0 && t->gzip) {
        rc = gzip_body(&t->body, t->room);
    }
    if (rc < 0) {
        drop_batch(t, "batch too large to encode");
        return;
    }
    send_body(t);
}

static void on_async(uv_async_t *a)
{
    struct proxy_tracer *t = a->data;
    atomic_store(&t->kicked, false);
    kick(t);
}

static void on_timer(uv_timer_t *h)
{
    struct proxy_tracer *t = h->data;
    /* Workers drop from a full queue without logging (they must not wait on anything): the
     * exporter reports those drops here, rate-limited like its own. */
    double full = sc_metrics_value(t->m_full);
    if (full > t->full_logged) {
        uint64_t now = uv_now(t->loop);
        if (!t->last_drop_log || now - t->last_drop_log >= DROP_LOG_MS) {
            log_drops(t, (uint64_t)(full - t->full_logged), "the export queue is full");
            t->full_logged = full;
        }
    }
    kick(t);
}

static struct texp_conf *conf_new(const struct proxy_trace_cfg *cfg)
{
    struct texp_conf *c = SC_NEW(struct texp_conf);
    const char *def = cfg->provider == PROXY_TRACE_ZIPKIN ? "http://localhost:9411/api/v2/spans"
                                                          : "http://localhost:4318/v1/traces";
    c->url = sc_strdup(cfg->endpoint && *cfg->endpoint ? cfg->endpoint : def);
    c->nhdrs = cfg->headers.n;
    c->hdrs = sc_calloc(c->nhdrs ? c->nhdrs : 1, sizeof(*c->hdrs));
    for (size_t i = 0; i < c->nhdrs; i++) {
        c->hdrs[i].key = sc_strdup(cfg->headers.v[i].key);
        c->hdrs[i].value = sc_strdup(cfg->headers.v[i].value);
    }
    c->plain = sc_h1cli_url_parse(c->url, &c->u);
    if (c->plain) {
        /* What every export request of this configuration starts with, written (and its
         * configured headers checked) once. */
        struct sc_buf *b = &c->head;
        sc_buf_init(b, 1 << 20);
        b->sensitive = c->nhdrs > 0;
        int rc = sc_http1_write_request_line(b, SC_STR("POST"), sc_str_c(c->u.target));
        rc = rc ? rc : sc_http1_write_header(b, SC_STR("Host"), sc_str_c(c->u.authority));
        rc = rc ? rc
                : sc_http1_write_header(b, SC_STR("Content-Type"),
                                        cfg->provider == PROXY_TRACE_OTLP_HTTP
                                            ? SC_STR("application/x-protobuf")
                                            : SC_STR("application/json"));
        rc =
            rc ? rc : sc_http1_write_header(b, SC_STR("User-Agent"), SC_STR("sidecar/" SC_VERSION));
        if (cfg->compression == 1) {
            rc = rc ? rc : sc_http1_write_header(b, SC_STR("Content-Encoding"), SC_STR("gzip"));
        }
        for (size_t i = 0; i < c->nhdrs; i++) {
            rc =
                rc ? rc
                   : sc_http1_write_header(b, sc_str_c(c->hdrs[i].key), sc_str_c(c->hdrs[i].value));
        }
        c->head_err = rc;
    }
    return c;
}

static void conf_free(struct texp_conf *c)
{
    if (!c) {
        return;
    }
    sc_free(c->url);
    sc_h1cli_url_free(&c->u);
    sc_buf_cleanup(&c->head);
    for (size_t i = 0; i < c->nhdrs; i++) {
        sc_free(c->hdrs[i].key);
        sc_free(c->hdrs[i].value);
    }
    sc_free(c->hdrs);
    sc_free(c);
}

/* Resizes the ring to <cap>, keeping the newest spans (the oldest are dropped and counted). */
static void resize(struct proxy_tracer *t, size_t cap)
{
    struct proxy_span **ring = sc_calloc(cap, sizeof(*ring));
    uint64_t dropped = 0;
    sc_spin_lock(&t->mu);
    while (t->count > cap) {
        sc_free(t->ring[t->head]);
        t->head = (t->head + 1) % t->cap;
        t->count--;
        dropped++;
    }
    for (size_t i = 0; i < t->count; i++) {
        ring[i] = t->ring[(t->head + i) % t->cap];
    }
    sc_free(t->ring);
    t->ring = ring;
    t->cap = cap;
    t->head = 0;
    sc_spin_unlock(&t->mu);
    if (dropped) {
        sc_metrics_counter_add(t->m_full, dropped);
    }
}

void proxy_tracer_configure(struct proxy_tracer *t, const struct proxy_trace_cfg *cfg)
{
    t->provider = cfg->provider;
    t->timeout_ms = cfg->timeout_ms;
    t->gzip = cfg->compression == 1;
    t->max_retries = cfg->max_retries;
    t->initial_backoff_ms = cfg->initial_backoff_ms;
    t->max_backoff_ms = cfg->max_backoff_ms;
    sc_spin_lock(&t->mu);
    t->max_batch = (size_t)cfg->max_batch_size;
    sc_spin_unlock(&t->mu);
    if ((size_t)cfg->max_queue_size != t->cap) {
        resize(t, (size_t)cfg->max_queue_size);
    }
    if (t->conf) {
        if (t->conf == t->xfer_conf) {
            conf_free(t->retired); /* not in flight: the one in flight is this one */
            t->retired = t->conf;
        } else {
            conf_free(t->conf);
        }
    }
    t->conf = conf_new(cfg);
    if (!t->conf->plain && !t->eg) {
        /* libcurl is loaded now rather than at the first export: its loading and initialisation
         * (millions of instructions) are start-up work, not a stall of the loop under traffic.
         * A plain http:// collector never needs it. */
        t->eg = sc_egress_new(t->loop);
    }
    if (t->interval_ms != cfg->batch_interval_ms) {
        t->interval_ms = cfg->batch_interval_ms;
        uv_timer_start(&t->timer, on_timer, t->interval_ms, t->interval_ms);
    }
}

struct proxy_tracer *proxy_tracer_new(uv_loop_t *loop, struct sc_metrics *reg,
                                      const struct proxy_trace_cfg *cfg,
                                      struct proxy_trace_resource res)
{
    struct proxy_tracer *t = SC_NEW(struct proxy_tracer);
    t->loop = loop;
    t->res = res;
    uv_async_init(loop, &t->async, on_async);
    t->async.data = t;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    uv_timer_init(loop, &t->retry_timer);
    t->retry_timer.data = t;
    t->handles = 3;
    static const char *const labels[] = { "result", NULL };
    struct sc_metric_family *f = sc_metrics_family(
        reg, SC_METRIC_COUNTER, "sidecar_tracing_spans_total",
        "Spans by what became of them: sampled (recorded), exported (acknowledged by the "
        "collector), dropped_queue_full (the oldest when the export queue was full), "
        "dropped_export_failed (the collector refused them, or retries ran out).",
        labels, NULL, 0);
    t->m_sampled = sc_metrics_get(f, (const char *[]){ "sampled" });
    t->m_exported = sc_metrics_get(f, (const char *[]){ "exported" });
    t->m_full = sc_metrics_get(f, (const char *[]){ "dropped_queue_full" });
    t->m_failed = sc_metrics_get(f, (const char *[]){ "dropped_export_failed" });
    static const double buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
    struct sc_metric_family *lat = sc_metrics_family(
        reg, SC_METRIC_HISTOGRAM, "sidecar_tracing_export_duration_seconds",
        "Time of each export request to the trace collector, retries counted one by one.", NULL,
        buckets, SC_ARRAY_LEN(buckets));
    t->m_latency = sc_metrics_get(lat, NULL);
    struct sc_metric_family *q = sc_metrics_family(
        reg, SC_METRIC_GAUGE, "sidecar_tracing_queue_spans",
        "Spans waiting in the export queue (as of the last export).", NULL, NULL, 0);
    t->m_queued = sc_metrics_get(q, NULL);
    proxy_tracer_configure(t, cfg);
    return t;
}

static void on_flush_deadline(uv_timer_t *h)
{
    struct proxy_tracer *t = h->data;
    void (*cb)(void *) = t->flush_cb;
    t->flush_cb = NULL;
    if (cb) {
        cb(t->flush_arg); /* proxy_tracer_close counts what is still queued or in flight */
    }
}

void proxy_tracer_flush(struct proxy_tracer *t, void (*cb)(void *arg), void *arg)
{
    t->flushing = true;
    t->flush_cb = cb;
    t->flush_arg = arg;
    uv_timer_stop(&t->timer);
    if (t->backing_off) {
        t->backing_off = false;
        drop_batch(t, "shutting down");
    }
    /* The whole flush is bounded by one export timeout, however many batches are queued. */
    uv_timer_start(&t->retry_timer, on_flush_deadline, t->timeout_ms, 0);
    kick(t);
}

static void on_closed(uv_handle_t *h)
{
    struct proxy_tracer *t = h->data;
    if (--t->handles > 0) {
        return;
    }
    sc_free(t->ring);
    while (t->pool) {
        struct proxy_span *s = t->pool;
        t->pool = s->next;
        sc_free(s);
    }
    conf_free(t->conf);
    if (t->retired != t->conf) {
        conf_free(t->retired);
    }
    for (size_t i = 0; i < t->res.n; i++) {
        sc_free(t->res.kv[i].key);
        sc_free(t->res.kv[i].value);
    }
    sc_free(t->res.kv);
    sc_free(t);
}

void proxy_tracer_close(struct proxy_tracer *t)
{
    if (!t) {
        return;
    }
    t->closing = true;
    if (t->xfer) {
        sc_egress_cancel(t->xfer);
        t->xfer = NULL;
    }
    if (t->h1) {
        sc_h1cli_named_cancel(t->h1);
        t->h1 = NULL;
    }
    if (t->nspans) {
        drop_batch(t, "shutting down");
    }
    uint64_t left = 0;
    sc_spin_lock(&t->mu);
    while (t->count) {
        sc_free(t->ring[t->head]);
        t->head = (t->head + 1) % t->cap;
        t->count--;
        left++;
    }
    sc_spin_unlock(&t->mu);
    if (left) {
        sc_metrics_counter_add(t->m_failed, left);
        log_drops(t, left, "shutting down");
    }
    sc_egress_close(t->eg);
    t->eg = NULL;
    uv_close((uv_handle_t *)&t->async, on_closed);
    uv_close((uv_handle_t *)&t->timer, on_closed);
    uv_close((uv_handle_t *)&t->retry_timer, on_closed);
}
