// SPDX-License-Identifier: Apache-2.0
// Unit tests for gRPC-Web (src/roles/proxy/proxy_grpc_web.c) and the gRPC health check's messages
// (src/roles/proxy/proxy_health_grpc.c): the streaming base64 decoder fed whole and split at every
// byte (RFC 4648 test vectors, padding ending each message, bad characters, padding in the wrong
// place, non-zero pad bits), the encoder's 4-aligned pieces, the trailer frame, the request
// translation's fields, and HealthCheckRequest/HealthCheckResponse by hand.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "roles/proxy/proxy_grpc_web.h"
#include "roles/proxy/proxy_health_grpc.h"

/* Decodes <in> whole and split at every byte; both must agree. Returns the outcome (0 or -1)
 * and the bytes in <out> (room for 256). */
static int dec(const char *in, char *out, size_t *n)
{
    size_t len = strlen(in);
    struct sc_buf a;
    sc_buf_init(&a, 4096);
    struct proxy_b64_dec d = { 0 };
    int ra = proxy_b64_decode(&d, in, len, &a);
    if (ra == 0 && !proxy_b64_decode_done(&d)) {
        ra = -1;
    }
    for (size_t cut = 0; cut <= len; cut++) {
        struct sc_buf b;
        sc_buf_init(&b, 4096);
        struct proxy_b64_dec e = { 0 };
        int rb = proxy_b64_decode(&e, in, cut, &b);
        if (rb == 0) {
            rb = proxy_b64_decode(&e, in + cut, len - cut, &b);
        }
        if (rb == 0 && !proxy_b64_decode_done(&e)) {
            rb = -1;
        }
        assert_int_equal(ra, rb);
        if (ra == 0) {
            assert_int_equal(a.len, b.len);
            assert_memory_equal(a.p ? a.p : "", b.p ? b.p : "", a.len);
        }
        sc_buf_cleanup(&b);
    }
    *n = a.len;
    if (a.len) {
        memcpy(out, a.p, a.len);
    }
    sc_buf_cleanup(&a);
    return ra;
}

static void test_b64_decode(void **state)
{
    (void)state;
    static const char *const vec[][2] = {
        { "", "" },
        { "Zg==", "f" },
        { "Zm8=", "fo" },
        { "Zm9v", "foo" },
        { "Zm9vYg==", "foob" },
        { "Zm9vYmE=", "fooba" },
        { "Zm9vYmFy", "foobar" },
    };
    char out[256];
    size_t n;
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        assert_int_equal(dec(vec[i][0], out, &n), 0);
        assert_int_equal(n, strlen(vec[i][1]));
        assert_memory_equal(out, vec[i][1], n);
    }
    /* each message padded on its own, concatenated */
    assert_int_equal(dec("Zg==Zm8=Zm9v", out, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "ffofoo", 6);
    /* malformed */
    assert_int_equal(dec("Zm9", out, &n), -1);    /* ends inside a quantum */
    assert_int_equal(dec("Zm9v\n", out, &n), -1); /* whitespace */
    assert_int_equal(dec("Zm-v", out, &n), -1);   /* base64url */
    assert_int_equal(dec("Z===", out, &n), -1);   /* padding too early */
    assert_int_equal(dec("Zm=v", out, &n), -1);   /* data after padding in a quantum */
    assert_int_equal(dec("====", out, &n), -1);   /* padding only */
    assert_int_equal(dec("Zh==", out, &n), -1);   /* bits the padding drops are not zero */
    assert_int_equal(dec("Zm9=", out, &n), -1);
    /* once bad, it stays bad */
    struct sc_buf b;
    sc_buf_init(&b, 64);
    struct proxy_b64_dec d = { 0 };
    assert_int_equal(proxy_b64_decode(&d, "*", 1, &b), -1);
    assert_int_equal(proxy_b64_decode(&d, "Zm9v", 4, &b), -1);
    assert_int_equal(b.len, 0);
    /* the cap */
    struct proxy_b64_dec d2 = { 0 };
    assert_int_equal(proxy_b64_decode(&d2, "Zm9vYmFyZm9vYmFy", 16, &b), 0);
    sc_buf_cleanup(&b);
    sc_buf_init(&b, 4);
    struct proxy_b64_dec d3 = { 0 };
    assert_int_equal(proxy_b64_decode(&d3, "Zm9vYmFyZm9vYmFy", 16, &b), SC_ETOOBIG);
    assert_true(b.len <= 4);
    sc_buf_cleanup(&b);
}

static void test_b64_encode(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    struct proxy_b64_enc e = { 0 };
    const uint8_t *in = (const uint8_t *)"foobar!";
    /* pieces of 1, 2, 4 bytes: only whole quanta come out until the end */
    assert_int_equal(proxy_b64_encode(&e, in, 1, &b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(proxy_b64_encode(&e, in + 1, 2, &b), 0);
    assert_int_equal(b.len, 4);
    assert_int_equal(proxy_b64_encode(&e, in + 3, 4, &b), 0);
    assert_int_equal(b.len, 8);
    assert_int_equal(proxy_b64_encode_end(&e, &b), 0);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.p, "Zm9vYmFyIQ==", 12);
    assert_int_equal(proxy_b64_encode_end(&e, &b), 0); /* nothing waits: nothing more */
    assert_int_equal(b.len, 12);
    sc_buf_cleanup(&b);
}

static void test_trailer_frame(void **state)
{
    (void)state;
    struct sc_http_header h[] = {
        { SC_STR("grpc-status"), SC_STR("0") },
        { SC_STR("Grpc-Message"), SC_STR("ok%20then") },
    };
    struct sc_http_msg t = { .headers = h, .nheaders = 2 };
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    assert_int_equal(proxy_grpc_web_trailer_frame(&t, &b), 0);
    static const char want[] = "\x80\x00\x00\x00\x27grpc-status:0\r\ngrpc-message:ok%20then\r\n";
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(b.p, want, b.len);
    sc_buf_cleanup(&b);
}

static void test_request_fields(void **state)
{
    (void)state;
    struct sc_http_header h[] = {
        { SC_STR("Content-Type"), SC_STR("application/grpc-web-text+proto") },
        { SC_STR("Content-Length"), SC_STR("12") },
    };
    struct sc_http_msg m = { .headers = h, .nheaders = 2 };
    struct proxy_grpc_web *g = proxy_grpc_web_request(&m);
    assert_non_null(g);
    struct sc_str v = h[0].value;
    assert_true(proxy_grpc_web_req_field(g, h[0].name, &v));
    assert_true(sc_str_eq(v, SC_STR("application/grpc+proto")));
    v = h[1].value;
    assert_false(proxy_grpc_web_req_field(g, h[1].name, &v));
    struct sc_buf out;
    sc_buf_init(&out, 4096);
    assert_int_equal(proxy_grpc_web_req_data(g, "AAAAAA", 6, &out), 0);
    assert_int_equal(proxy_grpc_web_req_end(g), -1);
    assert_non_null(proxy_grpc_web_bad(g));
    proxy_grpc_web_free(g);
    sc_buf_cleanup(&out);
    /* not gRPC-Web */
    h[0].value = SC_STR("application/grpc");
    assert_null(proxy_grpc_web_request(&m));
    h[0].value = SC_STR("application/grpc-web; charset=utf-8");
    g = proxy_grpc_web_request(&m);
    assert_non_null(g);
    proxy_grpc_web_free(g);
}

static void test_health_messages(void **state)
{
    (void)state;
    uint8_t out[5 + 3 + PROXY_HC_GRPC_MAX_SERVICE];
    assert_int_equal(proxy_hc_grpc_encode(NULL, out, sizeof(out)), 5);
    assert_memory_equal(out, "\0\0\0\0\0", 5);
    assert_int_equal(proxy_hc_grpc_encode("svc", out, sizeof(out)), 10);
    assert_memory_equal(out, "\0\0\0\0\x05\x0a\x03svc", 10);
    char long_name[200];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[199] = '\0';
    assert_int_equal(proxy_hc_grpc_encode(long_name, out, sizeof(out)), 5 + 3 + 199);
    assert_memory_equal(out + 5, "\x0a\xc7\x01", 3);
    char too_long[PROXY_HC_GRPC_MAX_SERVICE + 2];
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    assert_int_equal(proxy_hc_grpc_encode(too_long, out, sizeof(out)), -1);

    int st = -5;
    const char *why = NULL;
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x02\x08\x01", 7, &st, &why), 0);
    assert_int_equal(st, PROXY_HC_GRPC_SERVING);
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\0", 5, &st, &why), 0);
    assert_int_equal(st, PROXY_HC_GRPC_UNKNOWN);
    /* unknown fields skipped, the last status wins */
    assert_int_equal(
        proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x0d\x08\x02\x12\x02xy\x1d\1\2\3\4\x08\x01",
                            18, &st, &why),
        0);
    assert_int_equal(st, PROXY_HC_GRPC_SERVING);
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"", 0, &st, &why), -1);
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x03\x08\x01", 7, &st, &why),
                     -1); /* truncated */
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\1\0\0\0\x02\x08\x01", 7, &st, &why),
                     -1); /* compressed */
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x02\x08\x81", 7, &st, &why),
                     -1); /* varint runs out */
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x02\x0b\x01", 7, &st, &why),
                     -1); /* group wire type */
    assert_int_equal(proxy_hc_grpc_parse((const uint8_t *)"\0\0\0\0\x02\x0a\x00", 7, &st, &why),
                     -1); /* status not a varint */
    assert_string_equal(proxy_hc_grpc_status_name(2), "NOT_SERVING");
    assert_string_equal(proxy_hc_grpc_status_name(-1), "invalid");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_decode),      cmocka_unit_test(test_b64_encode),
        cmocka_unit_test(test_trailer_frame),   cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_health_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
