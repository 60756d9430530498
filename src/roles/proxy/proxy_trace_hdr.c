// SPDX-License-Identifier: Apache-2.0
// What the codecs call for tracing, kept apart from the exporter so a codec links only this: the
// trace headers written for the next hop (through a header sink, HTTP/1 lines by default), the
// client's B3 headers the proxy rewrites instead of forwarding, the response's gRPC status, and
// the span's bounded attribute store (strings copied into its arena as valid UTF-8).
#include <string.h>

#include "core/error.h"
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
    /* ASCII, the common case, is copied eight bytes at a time; anything else is checked one
     * UTF-8 sequence at a time. */
    while (i + 8 <= n) {
        uint64_t x;
        memcpy(&x, v.p + i, 8);
        if (x & 0x8080808080808080ull) {
            break;
        }
        memcpy(o + i, &x, 8);
        i += 8;
    }
    w = i;
    while (i < n) {
        if ((unsigned char)v.p[i] < 0x80) {
            o[w++] = v.p[i++];
            continue;
        }
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

/* A new attribute slot of <type> named <key>, or NULL (counted as dropped) when the span is
 * full. */
static struct proxy_span_attr *span_attr(struct proxy_span *s, const char *key, size_t klen,
                                         int type)
{
    if (s->nattrs == PROXY_SPAN_MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    struct proxy_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->klen = (uint8_t)klen;
    a->type = type;
    return a;
}

void proxy_span_str_n(struct proxy_span *s, const char *key, size_t klen, struct sc_str v)
{
    struct proxy_span_attr *a = span_attr(s, key, klen, PROXY_ATTR_STR);
    if (a) {
        a->len = proxy_span_put(s, v, &a->off);
    }
}

void proxy_span_int_n(struct proxy_span *s, const char *key, size_t klen, int64_t v)
{
    struct proxy_span_attr *a = span_attr(s, key, klen, PROXY_ATTR_INT);
    if (a) {
        a->i = v;
    }
}

void proxy_span_event_n(struct proxy_span *s, const char *name, size_t nlen, uint64_t time_ns)
{
    if (s->nevents == PROXY_SPAN_MAX_EVENTS) {
        s->dropped_events++;
        return;
    }
    s->events[s->nevents].time_ns = time_ns;
    s->events[s->nevents].name = name;
    s->events[s->nevents].nlen = nlen;
    s->nevents++;
}

/* Appends "<name>: <value>\r\n" to the sc_buf <arg>. The values are ours (hex digits, dashes),
 * so the checks of sc_http1_write_header are not needed on this path. */
static int put_h1(void *arg, struct sc_str name, struct sc_str value)
{
    struct sc_buf *b = arg;
    if (sc_buf_reserve(b, name.len + value.len + 4) < 0) {
        return SC_ETOOBIG;
    }
    char *o = b->p + b->len;
    memcpy(o, name.p, name.len);
    o += name.len;
    memcpy(o, ": ", 2);
    memcpy(o + 2, value.p, value.len);
    memcpy(o + 2 + value.len, "\r\n", 2);
    b->len += name.len + value.len + 4;
    return 0;
}

int proxy_trace_headers(struct proxy_exch *ex, proxy_trace_put_cb put, void *arg)
{
    const struct proxy_exch_trace *t = &ex->tr;
    unsigned p = ex->rt->trace ? ex->rt->trace->propagate : PROXY_PROP_W3C;
    int rc = 0;
    if (!put) {
        put = put_h1;
    }
    /* One buffer: "<trace>-<span>-<s>-<parent>", the single b3 form, whose pieces the other forms
     * reuse (traceparent copies the ids around its own prefix and flags). */
    char b3[32 + 1 + 16 + 2 + 1 + 16];
    proxy_trace_hex(b3, t->trace_id, 16);
    b3[32] = '-';
    proxy_trace_hex(b3 + 33, t->span_id, 8);
    b3[49] = '-';
    b3[50] = t->debug ? 'd' : t->sampled ? '1' : '0';
    size_t b3len = 51;
    if (t->has_parent) {
        b3[51] = '-';
        proxy_trace_hex(b3 + 52, t->parent_id, 8);
        b3len = 68;
    }
    if (p & PROXY_PROP_W3C) {
        char v[55];
        memcpy(v, "00-", 3);
        memcpy(v + 3, b3, 49); /* trace id, dash, span id */
        memcpy(v + 52, t->sampled ? "-01" : "-00", 3);
        rc |= put(arg, SC_STR("traceparent"), sc_str_n(v, sizeof(v)));
    }
    if (p & PROXY_PROP_B3) {
        rc |= put(arg, SC_STR("b3"), sc_str_n(b3, b3len));
    }
    if (p & PROXY_PROP_B3MULTI) {
        rc |= put(arg, SC_STR("x-b3-traceid"), sc_str_n(b3, 32));
        rc |= put(arg, SC_STR("x-b3-spanid"), sc_str_n(b3 + 33, 16));
        if (t->has_parent) {
            rc |= put(arg, SC_STR("x-b3-parentspanid"), sc_str_n(b3 + 52, 16));
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
