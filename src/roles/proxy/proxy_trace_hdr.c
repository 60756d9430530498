// SPDX-License-Identifier: Apache-2.0
// What the codecs call for tracing, kept apart from the exporter so a codec links only this: the
// trace headers written for the next hop (through a header sink, HTTP/1 lines by default), the
// client's B3 headers the proxy rewrites instead of forwarding, the response's gRPC status, and
// the span's bounded attribute store (strings copied into its arena as valid UTF-8).
#include <string.h>

#include "core/utf8.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_trace.h"
#include "roles/proxy/proxy_trace_ctx.h"

/* Copies <v> into the arena as valid UTF-8 (an invalid byte becomes '?'), truncated at a
 * character boundary to what is left. Returns the copied length; sets <*off>. */
uint16_t proxy_span_put(struct proxy_span *s, struct sc_str v, uint16_t *off)
{
    size_t room = PROXY_SPAN_ARENA - s->arena_len;
    size_t n = v.len < room ? v.len : room;
    char *o = s->arena + s->arena_len;
    size_t i = 0, w = 0;
    while (i < n) {
        size_t k = sc_utf8_seq((const unsigned char *)v.p + i, v.len - i);
        if (k == 0) {
            o[w++] = '?';
            i++;
            continue;
        }
        if (w + k > room) {
            break;
        }
        memcpy(o + w, v.p + i, k);
        w += k;
        i += k;
    }
    *off = s->arena_len;
    s->arena_len = (uint16_t)(s->arena_len + w);
    return (uint16_t)w;
}

void proxy_span_str(struct proxy_span *s, const char *key, struct sc_str v)
{
    if (s->nattrs == PROXY_SPAN_MAX_ATTRS) {
        s->dropped_attrs++;
        return;
    }
    struct proxy_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->type = PROXY_ATTR_STR;
    a->len = proxy_span_put(s, v, &a->off);
}

void proxy_span_int(struct proxy_span *s, const char *key, int64_t v)
{
    if (s->nattrs == PROXY_SPAN_MAX_ATTRS) {
        s->dropped_attrs++;
        return;
    }
    struct proxy_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->type = PROXY_ATTR_INT;
    a->i = v;
}

void proxy_span_event(struct proxy_span *s, const char *name, uint64_t time_ns)
{
    if (s->nevents == PROXY_SPAN_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    s->events[s->nevents].time_ns = time_ns;
    s->events[s->nevents].name = name;
    s->nevents++;
}

static int put_h1(void *arg, struct sc_str name, struct sc_str value)
{
    struct sc_buf *b = arg;
    return sc_http1_write_header(b, name, value);
}

int proxy_trace_headers(struct proxy_exch *ex, proxy_trace_put_cb put, void *arg)
{
    const struct proxy_exch_trace *t = &ex->tr;
    unsigned p = ex->rt->trace ? ex->rt->trace->propagate : PROXY_PROP_W3C;
    int rc = 0;
    if (!put) {
        put = put_h1;
    }
    if (p & PROXY_PROP_W3C) {
        char v[55];
        proxy_traceparent_format(v, t->trace_id, t->span_id, t->sampled);
        rc |= put(arg, SC_STR("traceparent"), sc_str_n(v, sizeof(v)));
    }
    if (p & PROXY_PROP_B3) {
        char v[32 + 1 + 16 + 2 + 1 + 16];
        size_t n = 0;
        proxy_trace_hex(v, t->trace_id, 16);
        v[32] = '-';
        proxy_trace_hex(v + 33, t->span_id, 8);
        v[49] = '-';
        v[50] = t->debug ? 'd' : t->sampled ? '1' : '0';
        n = 51;
        if (t->has_parent) {
            v[51] = '-';
            proxy_trace_hex(v + 52, t->parent_id, 8);
            n = 68;
        }
        rc |= put(arg, SC_STR("b3"), sc_str_n(v, n));
    }
    if (p & PROXY_PROP_B3MULTI) {
        char tid[32], sid[16], pid[16];
        proxy_trace_hex(tid, t->trace_id, 16);
        proxy_trace_hex(sid, t->span_id, 8);
        rc |= put(arg, SC_STR("x-b3-traceid"), sc_str_n(tid, 32));
        rc |= put(arg, SC_STR("x-b3-spanid"), sc_str_n(sid, 16));
        if (t->has_parent) {
            proxy_trace_hex(pid, t->parent_id, 8);
            rc |= put(arg, SC_STR("x-b3-parentspanid"), sc_str_n(pid, 16));
        }
        if (t->debug) {
            rc |= put(arg, SC_STR("x-b3-flags"), SC_STR("1"));
        } else {
            rc |= put(arg, SC_STR("x-b3-sampled"), t->sampled ? SC_STR("1") : SC_STR("0"));
        }
    }
    return rc;
}

bool proxy_trace_owns_header(struct sc_str n)
{
    switch (n.len) {
    case 2:
        return sc_str_caseeq(n, SC_STR("b3"));
    case 10:
        return sc_str_caseeq(n, SC_STR("x-b3-flags"));
    case 11:
        return sc_str_caseeq(n, SC_STR("x-b3-spanid")) || sc_str_caseeq(n, SC_STR("traceparent"));
    case 12:
        return sc_str_caseeq(n, SC_STR("x-b3-traceid")) || sc_str_caseeq(n, SC_STR("x-b3-sampled"));
    case 17:
        return sc_str_caseeq(n, SC_STR("x-b3-parentspanid"));
    default:
        return false;
    }
}

void proxy_trace_response(struct proxy_exch *ex, const struct sc_http_msg *m)
{
    struct proxy_span *s = ex->span;
    if (!s) {
        return;
    }
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (h->name.len == 11 && sc_str_caseeq(h->name, SC_STR("grpc-status"))) {
            uint64_t v;
            if (sc_str_to_u64(h->value, 16, &v) == 0) {
                proxy_span_int(s, "rpc.grpc.status_code", (int64_t)v);
                proxy_span_str(s, "rpc.system", SC_STR("grpc"));
            }
            return;
        }
    }
}
