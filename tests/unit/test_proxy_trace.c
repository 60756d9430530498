// SPDX-License-Identifier: Apache-2.0
// Unit tests for tracing (src/roles/proxy/proxy_trace_ctx.c, proxy_trace.c, proxy_trace_export.c,
// proxy_trace_otlp.c): W3C traceparent and tracestate against the specification's examples and
// its invalid forms; B3 single and multi header forms (64- and 128-bit ids, debug, bare states);
// span strings made valid UTF-8 and bounded; the request path's inline attribute writers against
// the out-of-line ones; the three encoders read back (OTLP protobuf through the generated
// decoder, OTLP and Zipkin JSON through jansson) with the fields the specifications name; and the
// collector's partial-success answers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/utf8.h"
#include "roles/proxy/otlp_trace_service.pb-c.h"
#include "roles/proxy/proxy_trace.h"
#include "roles/proxy/proxy_trace_ctx.h"

static void test_traceparent(void **state)
{
    (void)state;
    struct proxy_trace_ctx c;
    assert_int_equal(proxy_traceparent_parse(
                         SC_STR("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &c),
                     0);
    assert_true(c.has_ids);
    assert_int_equal(c.sampling, PROXY_TRACE_ACCEPT);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.span_id[7], 0xb7);
    char out[55];
    proxy_traceparent_format(out, c.trace_id, c.span_id, true);
    assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55);
    assert_int_equal(proxy_traceparent_parse(
                         SC_STR("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), &c),
                     0);
    assert_int_equal(c.sampling, PROXY_TRACE_DENY);
    /* A later version may append fields after a dash. */
    assert_int_equal(
        proxy_traceparent_parse(
            SC_STR("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"), &c),
        0);
    static const char *const bad[] = {
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 with more */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",     /* short */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* no dash after */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&c, 0x33, sizeof(c));
        assert_int_equal(proxy_traceparent_parse(sc_str_c(bad[i]), &c), -1);
        assert_int_equal(c.trace_id[0], 0x33); /* untouched */
    }
}

static void test_tracestate(void **state)
{
    (void)state;
    assert_true(proxy_tracestate_valid(SC_STR("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")));
    assert_true(proxy_tracestate_valid(SC_STR("fw529a3039@dt=abc, ,a*b/c-d_e=x y")));
    assert_true(proxy_tracestate_valid(SC_STR("")));
    assert_false(proxy_tracestate_valid(SC_STR("Rojo=1")));  /* upper-case key */
    assert_false(proxy_tracestate_valid(SC_STR("a=b=c")));   /* '=' in the value */
    assert_false(proxy_tracestate_valid(SC_STR("a")));       /* no value */
    assert_false(proxy_tracestate_valid(SC_STR("a=")));      /* empty value */
    assert_false(proxy_tracestate_valid(SC_STR("a=b\x01"))); /* control byte */
    assert_false(proxy_tracestate_valid(SC_STR("t@toolongsystemid=1")));
    char many[400] = "";
    size_t n = 0;
    for (int i = 0; i < 33; i++) {
        n += (size_t)snprintf(many + n, sizeof(many) - n, "%sk%d=v", i ? "," : "", i);
    }
    assert_false(proxy_tracestate_valid(sc_str_n(many, n))); /* 33 members */
    char big[600];
    memset(big, 'v', sizeof(big));
    memcpy(big, "k=", 2);
    assert_false(proxy_tracestate_valid(sc_str_n(big, sizeof(big))));
}

static void test_b3(void **state)
{
    (void)state;
    struct proxy_trace_ctx c;
    assert_int_equal(
        proxy_b3_parse(
            SC_STR("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"), &c),
        0);
    assert_true(c.has_ids);
    assert_int_equal(c.sampling, PROXY_TRACE_ACCEPT);
    assert_int_equal(c.trace_id[0], 0x80);
    assert_int_equal(c.span_id[0], 0xe4);
    assert_int_equal(proxy_b3_parse(SC_STR("a3ce929d0e0e4736-e457b5a2e4d86bd1-d"), &c), 0);
    assert_int_equal(c.sampling, PROXY_TRACE_DEBUG);
    assert_int_equal(c.trace_id[0], 0); /* 64-bit trace id, left-padded */
    assert_int_equal(c.trace_id[8], 0xa3);
    assert_int_equal(proxy_b3_parse(SC_STR("a3ce929d0e0e4736-e457b5a2e4d86bd1"), &c), 0);
    assert_int_equal(c.sampling, PROXY_TRACE_DEFER);
    assert_int_equal(proxy_b3_parse(SC_STR("0"), &c), 0);
    assert_false(c.has_ids);
    assert_int_equal(c.sampling, PROXY_TRACE_DENY);
    static const char *const bad[] = {
        "2",
        "a3ce929d0e0e4736",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1-x",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
        "A3CE929D0E0E4736-e457b5a2e4d86bd1",
        "0000000000000000-e457b5a2e4d86bd1",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(proxy_b3_parse(sc_str_c(bad[i]), &c), -1);
    }
    assert_int_equal(proxy_b3_multi_parse(SC_STR("80f198ee56343ba864fe8b2a57d3eff7"),
                                          SC_STR("e457b5a2e4d86bd1"), SC_STR("1"), SC_STR(""), &c),
                     0);
    assert_true(c.has_ids);
    assert_int_equal(c.sampling, PROXY_TRACE_ACCEPT);
    assert_int_equal(proxy_b3_multi_parse(SC_STR(""), SC_STR(""), SC_STR("true"), SC_STR(""), &c),
                     0);
    assert_false(c.has_ids);
    assert_int_equal(c.sampling, PROXY_TRACE_ACCEPT);
    assert_int_equal(proxy_b3_multi_parse(SC_STR(""), SC_STR(""), SC_STR(""), SC_STR("1"), &c), 0);
    assert_int_equal(c.sampling, PROXY_TRACE_DEBUG);
    assert_int_equal(proxy_b3_multi_parse(SC_STR(""), SC_STR(""), SC_STR(""), SC_STR(""), &c), -1);
    assert_int_equal(proxy_b3_multi_parse(SC_STR("80f198ee56343ba864fe8b2a57d3eff7"), SC_STR(""),
                                          SC_STR("1"), SC_STR(""), &c),
                     -1);
    assert_int_equal(proxy_b3_multi_parse(SC_STR(""), SC_STR(""), SC_STR("yes"), SC_STR(""), &c),
                     -1);
}

static struct proxy_span *mkspan(int kind, bool parent)
{
    struct proxy_span *s = sc_calloc(1, sizeof(*s));
    proxy_span_reset(s);
    for (int i = 0; i < 16; i++) {
        s->trace_id[i] = (uint8_t)(i + 1);
    }
    for (int i = 0; i < 8; i++) {
        s->span_id[i] = (uint8_t)(0x10 + i);
        s->parent_id[i] = (uint8_t)(0x20 + i);
    }
    s->has_parent = parent;
    s->kind = (uint8_t)kind;
    s->start_ns = 1700000000000000000ull;
    s->end_ns = s->start_ns + 2500000;
    proxy_span_str(s, "http.request.method", SC_STR("GET"));
    proxy_span_str(s, "url.path", SC_STR("/caf\xc3\xa9/\xff\"q\""));
    proxy_span_int(s, "http.response.status_code", 503);
    proxy_span_str(s, "network.peer.address", SC_STR("127.0.0.1"));
    proxy_span_int(s, "network.peer.port", 40000);
    proxy_span_event(s, "retry", s->start_ns + 1000);
    s->status = 2;
    s->name_len = proxy_span_put(s, SC_STR("GET /caf"), &s->name_off);
    return s;
}

static void test_span_strings(void **state)
{
    (void)state;
    struct proxy_span *s = mkspan(PROXY_SPAN_SERVER, false);
    /* Read back in order: the invalid byte became '?', the valid two-byte character stayed. */
    struct proxy_span_attr a;
    size_t pos = 0;
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(sc_str_eq(a.key, SC_STR("http.request.method")) && !a.is_int);
    assert_true(sc_str_eq(a.str, SC_STR("GET")));
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(sc_str_eq(a.key, SC_STR("url.path")));
    assert_true(sc_str_eq(a.str, SC_STR("/caf\xc3\xa9/?\"q\"")));
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(sc_str_eq(a.key, SC_STR("http.response.status_code")) && a.is_int);
    assert_int_equal(a.i, 503);
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_int_equal(a.i, 40000);
    assert_false(proxy_span_attr_next(s, &pos, &a));
    assert_memory_equal(s->arena + s->name_off, "GET /caf", 8);
    /* A value of 200 bytes has two-byte lengths; one of 4000 is cut to what is left, at a
     * character boundary (the two-byte character at the cut is not split). */
    char mid[200];
    memset(mid, 'm', sizeof(mid));
    proxy_span_str(s, "mid", sc_str_n(mid, sizeof(mid)));
    char big[4000];
    memset(big, 'x', sizeof(big));
    for (size_t i = 0; i + 1 < sizeof(big); i += 2) {
        big[i] = (char)0xc3;
        big[i + 1] = (char)0xa9;
    }
    proxy_span_str(s, "big", sc_str_n(big, sizeof(big)));
    assert_true(s->attr_len <= s->str_off);
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(sc_str_eq(a.key, SC_STR("mid")) && a.str.len == 200);
    assert_true(proxy_span_attr_next(s, &pos, &a));
    assert_true(sc_str_eq(a.key, SC_STR("big")));
    assert_true(a.str.len > 1000 && a.str.len % 2 == 0);
    assert_true(memcmp(a.str.p, big, a.str.len) == 0);
    assert_memory_equal(s->arena + s->name_off, "GET /caf", 8);
    /* Full: further attributes are dropped and counted. */
    for (int i = 0; i < 40; i++) {
        proxy_span_int(s, "n", i);
    }
    assert_true(s->nattrs <= PROXY_SPAN_MAX_ATTRS);
    assert_true(s->dropped_attrs > 0);
    sc_free(s);
    /* Only slots run out: 32 attributes at most. */
    s = mkspan(PROXY_SPAN_SERVER, false);
    for (int i = 0; i < 40; i++) {
        proxy_span_int(s, "n", i);
    }
    assert_int_equal(s->nattrs, PROXY_SPAN_MAX_ATTRS);
    assert_int_equal(s->dropped_attrs, 40 - (PROXY_SPAN_MAX_ATTRS - 5));
    sc_free(s);
}

/* The copy's fast paths (8-byte blocks, the overlapping last block, 4-byte halves) against a
 * byte-at-a-time reference, for every length to 40 and a non-ASCII byte at every place. */
static void test_span_copy_paths(void **state)
{
    (void)state;
    static const char *const odd[] = { "\xc3\xa9", "\xff", "\xe2\x82" };
    for (size_t len = 0; len <= 40; len++) {
        for (size_t at = 0; at <= len; at++) {
            for (size_t k = 0; k < 3; k++) {
                char in[64], want[64];
                for (size_t i = 0; i < len; i++) {
                    in[i] = (char)('a' + i % 26);
                }
                size_t n = len;
                if (at < len) {
                    size_t ol = strlen(odd[k]);
                    memcpy(in + at, odd[k], ol);
                    n = at + ol > len ? at + ol : len;
                }
                size_t w = 0;
                for (size_t i = 0; i < n;) {
                    size_t q = (unsigned char)in[i] < 0x80
                                   ? 1
                                   : sc_utf8_seq((const unsigned char *)in + i, n - i);
                    if (q == 0) {
                        want[w++] = '?';
                        i++;
                    } else {
                        memcpy(want + w, in + i, q);
                        w += q;
                        i += q;
                    }
                }
                struct proxy_span *s = sc_calloc(1, sizeof(*s));
                proxy_span_reset(s);
                uint16_t off;
                uint16_t got = proxy_span_put(s, sc_str_n(in, n), &off);
                assert_int_equal(got, w);
                assert_memory_equal(s->arena + off, want, w);
                proxy_span_str(s, "k", sc_str_n(in, n));
                struct proxy_span_attr a;
                size_t pos = 0;
                assert_true(proxy_span_attr_next(s, &pos, &a));
                assert_int_equal(a.str.len, w);
                assert_memory_equal(a.str.p, want, w);
                sc_free(s);
            }
        }
    }
}

/* The request path's inline writers (proxy_span_str_in, proxy_span_int_in, proxy_span_add_padded)
 * write byte for byte what the out-of-line ones write, whatever the value (ASCII or not, short or
 * long) and however full the span is, and count drops the same. */
static void test_span_inline_writers(void **state)
{
    (void)state;
    struct proxy_span *a = sc_calloc(1, sizeof(*a)), *b = sc_calloc(1, sizeof(*b));
    char val[300];
    for (size_t i = 0; i < sizeof(val); i++) {
        val[i] = (char)('a' + i % 26);
    }
    /* A span filled to leave <room> bytes, then one attribute of every length and kind. */
    for (size_t room = 0; room < 200; room += 7) {
        for (size_t len = 0; len < 140; len += 3) {
            for (int odd = 0; odd < 2; odd++) {
                proxy_span_reset(a);
                proxy_span_reset(b);
                a->str_off = b->str_off = (uint16_t)(room + 40);
                proxy_span_int(a, "n", 1);
                proxy_span_int_fast(b, "n", 1);
                char v[300];
                memcpy(v, val, len);
                if (odd && len) {
                    v[len / 2] = (char)0xff;
                }
                proxy_span_str(a, "url.path", sc_str_n(v, len));
                proxy_span_str_fast(b, "url.path", sc_str_n(v, len));
                proxy_span_int(a, "http.response.status_code", (int64_t)(len * 1000));
                proxy_span_int_fast(b, "http.response.status_code", (int64_t)(len * 1000));
                assert_int_equal(a->attr_len, b->attr_len);
                assert_int_equal(a->nattrs, b->nattrs);
                assert_int_equal(a->dropped_attrs, b->dropped_attrs);
                assert_memory_equal(a->arena, b->arena, a->attr_len);
            }
        }
    }
    /* Pieces added padded or not come out the same; one that does not fit is dropped whole. */
    char piece[100 + PROXY_BLOB_PAD];
    memset(piece, 0, sizeof(piece));
    for (size_t len = 0; len <= 100; len++) {
        for (size_t i = 0; i < len; i++) {
            piece[i] = (char)(len + i);
        }
        for (size_t room = 0; room < 180; room += 11) {
            proxy_span_reset(a);
            proxy_span_reset(b);
            a->str_off = b->str_off = (uint16_t)room;
            proxy_span_add_encoded(a, piece, len, 2);
            proxy_span_add_padded(b, piece, len, 2);
            assert_int_equal(a->attr_len, b->attr_len);
            assert_int_equal(a->nattrs, b->nattrs);
            assert_int_equal(a->dropped_attrs, b->dropped_attrs);
            assert_memory_equal(a->arena, b->arena, a->attr_len);
        }
    }
    sc_free(a);
    sc_free(b);
    /* The methods whose attribute is encoded once, and others that are not them. */
    static const char *const known[] = { "GET",   "HEAD",   "PUT",     "POST",   "PATCH",
                                         "TRACE", "DELETE", "OPTIONS", "CONNECT" };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        unsigned mi = proxy_span_method(sc_str_c(known[i]));
        assert_true(mi > 0 && mi < PROXY_SPAN_METHODS);
        assert_string_equal(proxy_span_method_names[mi], known[i]);
    }
    static const char *const other[] = { "", "GE", "get", "GETS", "PURGE", "OPTION", "CONNECTS" };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        assert_int_equal(proxy_span_method(sc_str_c(other[i])), 0);
    }
}

static struct proxy_trace_resource resource(void)
{
    static struct sc_kv kv[] = { { "service.name", "reviews" }, { "k8s.pod.name", "reviews-1" } };
    return (struct proxy_trace_resource){ kv, 2 };
}

static void test_otlp_proto(void **state)
{
    (void)state;
    struct proxy_span *sp[2] = { mkspan(PROXY_SPAN_SERVER, true),
                                 mkspan(PROXY_SPAN_CLIENT, false) };
    struct proxy_trace_resource res = resource();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    assert_int_equal(proxy_trace_encode_otlp_proto(&b, &res, sp, 2), 0);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
            NULL, b.len, (const uint8_t *)b.p);
    assert_non_null(r);
    assert_int_equal(r->n_resource_spans, 1);
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = r->resource_spans[0];
    assert_int_equal(rs->resource->n_attributes, 2);
    assert_string_equal(rs->resource->attributes[0]->key, "service.name");
    assert_string_equal(rs->resource->attributes[0]->value->string_value, "reviews");
    assert_int_equal(rs->n_scope_spans, 1);
    assert_int_equal(rs->scope_spans[0]->n_spans, 2);
    Opentelemetry__Proto__Trace__V1__Span *s = rs->scope_spans[0]->spans[0];
    assert_int_equal(s->trace_id.len, 16);
    assert_int_equal(s->trace_id.data[0], 1);
    assert_int_equal(s->span_id.len, 8);
    assert_int_equal(s->parent_span_id.len, 8);
    assert_int_equal(s->parent_span_id.data[0], 0x20);
    assert_int_equal(s->kind, 2);
    assert_string_equal(s->name, "GET /caf");
    assert_true(s->start_time_unix_nano == 1700000000000000000ull);
    assert_true(s->end_time_unix_nano == 1700000000002500000ull);
    assert_int_equal(s->n_attributes, 5);
    assert_string_equal(s->attributes[2]->key, "http.response.status_code");
    assert_int_equal(s->attributes[2]->value->int_value, 503);
    assert_int_equal(s->n_events, 1);
    assert_string_equal(s->events[0]->name, "retry");
    assert_int_equal(s->status->code, 2);
    assert_int_equal(rs->scope_spans[0]->spans[1]->kind, 3);
    assert_int_equal(rs->scope_spans[0]->spans[1]->parent_span_id.len, 0);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(r,
                                                                                            NULL);
    sc_buf_cleanup(&b);
    sc_free(sp[0]);
    sc_free(sp[1]);
}

/* Packs what <b> decodes to again (protobuf-c writes fields in their numbers' order): two bodies
 * that say the same come out the same, whatever order their fields were written in. */
static size_t repack(const struct sc_buf *b, uint8_t *out)
{
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
            NULL, b->len, (const uint8_t *)b->p);
    assert_non_null(r);
    size_t n =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(r, out);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(r,
                                                                                            NULL);
    return n;
}

static void test_otlp_finished(void **state)
{
    (void)state;
    struct proxy_trace_resource res = resource();
    /* Spans of every shape proxy_span_finish meets: a parent or none, a status or none, a
     * tracestate, dropped attributes, a short and a long name, a long message (a two-byte
     * length), events (left to the encoder), and one with no room left. */
    enum { N = 9 };
    struct proxy_span *sp[N];
    char lname[200];
    memset(lname, 'n', sizeof(lname));
    for (int i = 0; i < N; i++) {
        sp[i] = mkspan(i % 2 ? PROXY_SPAN_CLIENT : PROXY_SPAN_SERVER, i % 2 == 0);
        sp[i]->nevents = 0;
        sp[i]->status = (uint8_t)(i % 3 == 0 ? 2 : 0);
    }
    sp[2]->state_len = proxy_span_put(sp[2], SC_STR("vendor=abc,x=1"), &sp[2]->state_off);
    sp[3]->dropped_attrs = 300;
    sp[4]->name_len = proxy_span_put(sp[4], sc_str_n(lname, sizeof(lname)), &sp[4]->name_off);
    for (int k = 0; k < 20; k++) {
        proxy_span_str(sp[5], "sidecar.route", SC_STR("a-route-name-that-is-long"));
    }
    proxy_span_event(sp[6], "retry", sp[6]->start_ns + 10);
    sp[7]->str_off = (uint16_t)(sp[7]->attr_len + 40);
    struct sc_buf a, b, c;
    sc_buf_init(&a, 1 << 20);
    sc_buf_init(&b, 1 << 20);
    sc_buf_init(&c, 1 << 20);
    assert_int_equal(proxy_trace_encode_otlp_proto(&a, &res, sp, N), 0);
    struct sc_buf j1, j2;
    sc_buf_init(&j1, 1 << 20);
    sc_buf_init(&j2, 1 << 20);
    assert_int_equal(proxy_trace_encode_zipkin(&j1, &res, sp, N), 0);
    for (int i = 0; i < N; i++) {
        proxy_span_finish(sp[i]);
    }
    assert_int_equal(sp[6]->wire_len, 0); /* events */
    assert_int_equal(sp[7]->wire_len, 0); /* no room */
    assert_true(sp[0]->wire_len > 0 && sp[5]->wire_len > 0x80);
    assert_int_equal(proxy_trace_encode_otlp_proto(&b, &res, sp, N), 0);
    uv_buf_t iov[N + 1];
    assert_int_equal(proxy_trace_encode_otlp_proto_iov(&c, &res, sp, N, iov), SC_EINVAL);
    assert_int_equal(c.len, 0);
    /* Without the two spans it cannot send from their blocks: the gathered pieces make the
     * body the copying encoder makes. */
    struct proxy_span *fin[N - 2] = { sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], sp[8] };
    struct sc_buf d;
    sc_buf_init(&d, 1 << 20);
    assert_int_equal(proxy_trace_encode_otlp_proto(&d, &res, fin, N - 2), 0);
    assert_int_equal(proxy_trace_encode_otlp_proto_iov(&c, &res, fin, N - 2, iov), 0);
    struct sc_buf g;
    sc_buf_init(&g, 1 << 20);
    for (int i = 0; i < N - 1; i++) {
        assert_int_equal(sc_buf_append(&g, iov[i].base, iov[i].len), 0);
    }
    assert_int_equal(g.len, d.len);
    assert_memory_equal(g.p, d.p, d.len);
    /* What the finished spans' bytes say is what the encoder writes itself. */
    uint8_t *ra = sc_malloc(a.len + 64), *rb = sc_malloc(b.len + 64);
    size_t na = repack(&a, ra), nb = repack(&b, rb);
    assert_int_equal(na, nb);
    assert_memory_equal(ra, rb, na);
    /* And the JSON encoders read a span the same once it is finished. */
    assert_int_equal(proxy_trace_encode_zipkin(&j2, &res, sp, N), 0);
    assert_int_equal(j1.len, j2.len);
    assert_memory_equal(j1.p, j2.p, j1.len);
    sc_free(ra);
    sc_free(rb);
    sc_buf_cleanup(&a);
    sc_buf_cleanup(&b);
    sc_buf_cleanup(&c);
    sc_buf_cleanup(&d);
    sc_buf_cleanup(&g);
    sc_buf_cleanup(&j1);
    sc_buf_cleanup(&j2);
    for (int i = 0; i < N; i++) {
        sc_free(sp[i]);
    }
}

static void test_json(void **state)
{
    (void)state;
    struct proxy_span *sp[1] = { mkspan(PROXY_SPAN_SERVER, true) };
    struct proxy_trace_resource res = resource();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    assert_int_equal(proxy_trace_encode_otlp_json(&b, &res, sp, 1), 0);
    json_error_t je;
    json_t *j = json_loadb(b.p, b.len, 0, &je);
    assert_non_null(j);
    json_t *s = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(j, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    assert_string_equal(json_string_value(json_object_get(s, "traceId")),
                        "0102030405060708090a0b0c0d0e0f10");
    assert_string_equal(json_string_value(json_object_get(s, "parentSpanId")), "2021222324252627");
    assert_int_equal(json_integer_value(json_object_get(s, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(s, "startTimeUnixNano")),
                        "1700000000000000000");
    json_t *a1 = json_object_get(json_array_get(json_object_get(s, "attributes"), 1), "value");
    assert_string_equal(json_string_value(json_object_get(a1, "stringValue")),
                        "/caf\xc3\xa9/?\"q\"");
    json_decref(j);

    sc_buf_reset(&b);
    assert_int_equal(proxy_trace_encode_zipkin(&b, &res, sp, 1), 0);
    j = json_loadb(b.p, b.len, 0, &je);
    assert_non_null(j);
    s = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(s, "id")), "1011121314151617");
    assert_string_equal(json_string_value(json_object_get(s, "kind")), "SERVER");
    assert_int_equal(json_integer_value(json_object_get(s, "duration")), 2500);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s, "localEndpoint"), "serviceName")),
        "reviews");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(s, "remoteEndpoint"), "ipv4")),
        "127.0.0.1");
    json_t *tags = json_object_get(s, "tags");
    assert_string_equal(json_string_value(json_object_get(tags, "http.response.status_code")),
                        "503");
    assert_string_equal(json_string_value(json_object_get(tags, "error")), "true");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(s, "annotations"), 0), "value")),
                        "retry");
    json_decref(j);
    sc_buf_cleanup(&b);
    sc_free(sp[0]);
}

static void test_rejected(void **state)
{
    (void)state;
    assert_int_equal(proxy_trace_rejected_json(SC_STR("{}")), 0);
    assert_int_equal(
        proxy_trace_rejected_json(SC_STR("{\"partialSuccess\":{\"rejectedSpans\":\"3\"}}")), 3);
    assert_int_equal(
        proxy_trace_rejected_json(SC_STR("{\"partialSuccess\":{\"rejectedSpans\":4}}")), 4);
    assert_int_equal(proxy_trace_rejected_json(SC_STR("not json")), 0);
    /* ExportTraceServiceResponse{partial_success{rejected_spans: 7}}: field 1 (len 2), field 1
     * varint 7. */
    assert_int_equal(proxy_trace_rejected_proto(sc_str_n("\x0a\x02\x08\x07", 4)), 7);
    assert_int_equal(proxy_trace_rejected_proto(SC_STR("")), 0);
    assert_int_equal(proxy_trace_rejected_proto(sc_str_n("\xff\xff", 2)), 0);
    /* What a collector packs, error_message included, read back by the proxy's wire reader. */
    Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse r =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    ps.rejected_spans = 300;
    ps.error_message = "span too large";
    r.partial_success = &ps;
    uint8_t buf[64];
    size_t n =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__pack(&r, buf);
    assert_int_equal(proxy_trace_rejected_proto(sc_str_n((const char *)buf, n)), 300);
    /* Truncated inside partial_success: nothing rejected is claimed. */
    assert_int_equal(proxy_trace_rejected_proto(sc_str_n((const char *)buf, n - 1)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_b3),
        cmocka_unit_test(test_span_strings),
        cmocka_unit_test(test_span_copy_paths),
        cmocka_unit_test(test_span_inline_writers),
        cmocka_unit_test(test_otlp_proto),
        cmocka_unit_test(test_otlp_finished),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
