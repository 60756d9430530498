// SPDX-License-Identifier: Apache-2.0
// What the codecs call for tracing, kept apart from the exporter so a codec links only this: the
// trace headers written for the next hop (through a header sink, HTTP/1 lines by default), the
// client's B3 headers the proxy rewrites instead of forwarding, the response's gRPC status, and
// the span's bounded attribute store (strings copied into its arena as valid UTF-8).
#include <stddef.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/utf8.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_trace.h"
#include "roles/proxy/proxy_trace_ctx.h"

static inline bool ascii8(const char *p, uint64_t *x)
{
    memcpy(x, p, 8);
    return !(*x & 0x8080808080808080ull);
}

/* Copies <n> bytes (under 128) from <p> to <o> in 8-byte moves, the last one overlapping: keys
 * are short literals, and a call to memcpy costs more than the copy. */
static inline void copy_short(char *o, const char *p, size_t n)
{
    if (n < 8) {
        memcpy(o, p, n);
        return;
    }
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(o + i, p + i, 8);
    }
    memcpy(o + n - 8, p + n - 8, 8);
}

/* Copies up to <room> bytes of <v> to <o> as valid UTF-8 (an invalid byte becomes '?'), cut at a
 * character boundary. Returns the length written (never more than v.len or room). */
static size_t utf8_copy(char *o, struct sc_str v, size_t room)
{
    size_t n = v.len < room ? v.len : room;
    size_t i = 0, w;
    uint64_t x;
    /* ASCII, the common case, is copied eight bytes at a time, the last eight overlapping the
     * ones before; anything else is checked one UTF-8 sequence at a time from the first
     * eight-byte block that is not ASCII. */
    if (n >= 8) {
        while (i + 8 <= n && ascii8(v.p + i, &x)) {
            memcpy(o + i, &x, 8);
            i += 8;
        }
        if (i == n || (i + 8 > n && ascii8(v.p + n - 8, &x))) {
            memcpy(o + n - 8, &x, 8);
            return n;
        }
    } else if (n >= 4) {
        uint32_t a, b; /* the first four and the last four, overlapping */
        memcpy(&a, v.p, 4);
        memcpy(&b, v.p + n - 4, 4);
        if (!((a | b) & 0x80808080u)) {
            memcpy(o, &a, 4);
            memcpy(o + n - 4, &b, 4);
            return n;
        }
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
        if (w + k > n) {
            break;
        }
        memcpy(o + w, v.p + i, k);
        w += k;
        i += k;
    }
    return w;
}

uint16_t proxy_span_put(struct proxy_span *s, struct sc_str v, uint16_t *off)
{
    size_t room = (size_t)(s->str_off - s->attr_len);
    size_t n = v.len < room ? v.len : room;
    char *o = s->arena + s->str_off - n;
    size_t w = utf8_copy(o, v, n);
    if (w < n) {
        memmove(o + (n - w), o, w);
    }
    s->str_off = (uint16_t)(s->str_off - w);
    *off = s->str_off;
    return (uint16_t)w;
}

/* The attributes' wire bits (proxy_trace.h; proxy_trace_otlp.c writes the rest). */
enum {
    PB_ATTR = PROXY_PB_ATTR,
    PB_KEY = PROXY_PB_KEY,
    PB_VALUE = PROXY_PB_VALUE,
    PB_STR = PROXY_PB_STR,
    PB_INT = PROXY_PB_INT
};

/* Writes an attribute's header (field tag and length, KeyValue key, AnyValue's tag and length) for
 * a value part of <any> bytes at <o>. Returns the end. */
static char *attr_head(char *o, const char *key, size_t klen, size_t any)
{
    *o++ = (char)PB_ATTR;
    o = proxy_pb_varint(o, 2 + klen + 1 + proxy_pb_vsz(any) + any);
    *o++ = (char)PB_KEY;
    *o++ = (char)klen;
    copy_short(o, key, klen);
    o += klen;
    *o++ = (char)PB_VALUE;
    return proxy_pb_varint(o, any);
}

/* Whether another attribute may be recorded; counts it dropped when not. */
static bool attr_slot(struct proxy_span *s, size_t need)
{
    if (s->nattrs == PROXY_SPAN_MAX_ATTRS || (size_t)(s->str_off - s->attr_len) < need) {
        s->dropped_attrs++;
        return false;
    }
    s->nattrs++;
    return true;
}

void proxy_span_str_n(struct proxy_span *s, const char *key, size_t klen, struct sc_str v)
{
    /* Besides key and value: four tags, the key's length (one byte) and three lengths under the
     * arena's size (two bytes each at most): 8 to 11 bytes. A short value has one-byte lengths,
     * so it is copied straight into place; a long one is copied after the longest header and
     * moved down if it gets a shorter one (after truncation). */
    size_t max_head = klen + 11;
    if (!attr_slot(s, max_head + 1)) {
        return;
    }
    char *o = s->arena + s->attr_len;
    size_t room = (size_t)(s->str_off - s->attr_len) - max_head;
    if (v.len + klen + 6 < 0x80) {
        /* Every length fits one byte: the header is written by hand. */
        size_t w = utf8_copy(o + klen + 8, v, room);
        o[0] = (char)PB_ATTR;
        o[1] = (char)(klen + 6 + w);
        o[2] = (char)PB_KEY;
        o[3] = (char)klen;
        copy_short(o + 4, key, klen);
        o[klen + 4] = (char)PB_VALUE;
        o[klen + 5] = (char)(2 + w);
        o[klen + 6] = (char)PB_STR;
        o[klen + 7] = (char)w;
        s->attr_len = (uint16_t)(s->attr_len + klen + 8 + w);
        return;
    }
    size_t head = max_head;
    size_t w = utf8_copy(o + head, v, room);
    char *e = attr_head(o, key, klen, 1 + proxy_pb_vsz(w) + w);
    *e++ = (char)PB_STR;
    e = proxy_pb_varint(e, w);
    if (e != o + head) {
        memmove(e, o + head, w);
    }
    s->attr_len = (uint16_t)(e + w - s->arena);
}

void proxy_span_int_n(struct proxy_span *s, const char *key, size_t klen, int64_t v)
{
    proxy_span_int_in(s, key, klen, v);
}

void proxy_span_blob_take(struct proxy_span_blob *b, struct proxy_span *scratch)
{
    size_t len = (size_t)(scratch->attr_len - PROXY_SPAN_PRE);
    b->p = sc_calloc(1, len + PROXY_BLOB_PAD);
    memcpy(b->p, scratch->arena + PROXY_SPAN_PRE, len);
    b->len = (uint16_t)len;
    b->n = scratch->nattrs;
    b->dropped = scratch->dropped_attrs;
    proxy_span_reset(scratch);
}

void proxy_span_add_encoded(struct proxy_span *s, const char *p, size_t len, unsigned n)
{
    if (s->nattrs + n > PROXY_SPAN_MAX_ATTRS || (size_t)(s->str_off - s->attr_len) < len) {
        s->dropped_attrs = (uint16_t)(s->dropped_attrs + n);
        return;
    }
    memcpy(s->arena + s->attr_len, p, len);
    s->attr_len = (uint16_t)(s->attr_len + len);
    s->nattrs = (uint16_t)(s->nattrs + n);
}

const char proxy_span_method_names[PROXY_SPAN_METHODS][8] = {
    "", "GET", "HEAD", "PUT", "POST", "PATCH", "TRACE", "DELETE", "OPTIONS", "CONNECT",
};

/* Reads a varint at <*p> (before <end>). */
static bool get_varint(const char **p, const char *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = (uint8_t) * (*p)++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            return true;
        }
    }
    return false;
}

/* Reads a length-delimited field of tag <tag> at <*p>: its bytes. */
static bool get_len(const char **p, const char *end, unsigned tag, struct sc_str *out)
{
    uint64_t n;
    if (*p >= end || (uint8_t) * *p != tag) {
        return false;
    }
    (*p)++;
    if (!get_varint(p, end, &n) || n > (uint64_t)(end - *p)) {
        return false;
    }
    *out = sc_str_n(*p, (size_t)n);
    *p += n;
    return true;
}

bool proxy_span_attr_next(const struct proxy_span *s, size_t *pos, struct proxy_span_attr *a)
{
    if (*pos < PROXY_SPAN_PRE) {
        *pos = PROXY_SPAN_PRE;
    }
    const char *p = s->arena + *pos, *end = s->arena + s->attr_len;
    struct sc_str kv, any;
    if (!get_len(&p, end, PB_ATTR, &kv)) {
        return false;
    }
    *pos = (size_t)(p - s->arena);
    const char *q = kv.p, *ke = kv.p + kv.len;
    if (!get_len(&q, ke, PB_KEY, &a->key) || !get_len(&q, ke, PB_VALUE, &any)) {
        return false;
    }
    const char *r = any.p;
    a->is_int = any.len && (uint8_t)*r == PB_INT;
    if (a->is_int) {
        uint64_t v;
        r++;
        if (!get_varint(&r, any.p + any.len, &v)) {
            return false;
        }
        a->i = (int64_t)v;
        a->str = SC_STR_NULL;
        return true;
    }
    a->i = 0;
    return get_len(&r, any.p + any.len, PB_STR, &a->str);
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
    if (!put && p == PROXY_PROP_W3C) {
        /* OTLP's default, on HTTP/1: "traceparent: 00-<trace>-<span>-<flags>" straight into the
         * head, the ids hex-coded in place. */
        struct sc_buf *b = arg;
        static const char name[] = "traceparent: 00-";
        size_t len = sizeof(name) - 1 + 52 + 2;
        if (sc_buf_room(b, len) < 0) {
            return SC_ETOOBIG;
        }
        char *o = b->p + b->len;
        memcpy(o, name, 16);
        proxy_trace_hex(o + 16, t->trace_id, 16);
        o[48] = '-';
        proxy_trace_hex(o + 49, t->span_id, 8);
        memcpy(o + 65, t->sampled ? "-01\r\n" : "-00\r\n", 5);
        b->len += len;
        return 0;
    }
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

void proxy_trace_grpc_status(struct proxy_exch *ex, struct sc_str v)
{
    uint64_t n;
    if (sc_str_to_u64(v, 16, &n) == 0) {
        proxy_span_int(ex->span, "rpc.grpc.status_code", (int64_t)n);
        proxy_span_str(ex->span, "rpc.system", SC_STR("grpc"));
    }
}
