// SPDX-License-Identifier: Apache-2.0
// Unit tests for the gRPC stream scanners (src/roles/proxy/proxy_grpc.c): message counting from
// the 5-byte length prefixes (whole, split at every byte, large lengths, empty messages) and the
// grpc-status matcher over a chunked body's framing (case, blanks, values out of range, a
// status split at every byte, the last of several).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "roles/proxy/proxy_conn.h"

/* Appends one message of <n> payload bytes (value <v>) to <out>; returns its length. */
static size_t msg(unsigned char *out, uint32_t n, unsigned char v)
{
    out[0] = 0;
    out[1] = (unsigned char)(n >> 24);
    out[2] = (unsigned char)(n >> 16);
    out[3] = (unsigned char)(n >> 8);
    out[4] = (unsigned char)n;
    memset(out + 5, v, n);
    return 5 + (size_t)n;
}

static void test_frames_whole_and_split(void **state)
{
    (void)state;
    static unsigned char buf[70000];
    size_t len = 0;
    len += msg(buf + len, 3, 'a');
    len += msg(buf + len, 0, 0);
    len += msg(buf + len, 65536, 'b');
    len += msg(buf + len, 1, 'c');
    struct proxy_grpc_frames f = { 0 };
    proxy_grpc_frames_feed(&f, (const char *)buf, len);
    assert_int_equal(f.msgs, 4);
    assert_int_equal(f.hpos, 0);
    assert_int_equal(f.skip, 0);
    /* Split at every byte: the same count, and the state between messages at the end. */
    for (size_t cut = 0; cut <= len; cut += cut < 100 ? 1 : 997) {
        struct proxy_grpc_frames g = { 0 };
        proxy_grpc_frames_feed(&g, (const char *)buf, cut);
        proxy_grpc_frames_feed(&g, (const char *)buf + cut, len - cut);
        assert_int_equal(g.msgs, 4);
        assert_int_equal(g.skip, 0);
    }
    /* One byte at a time. */
    struct proxy_grpc_frames h = { 0 };
    for (size_t i = 0; i < len; i++) {
        proxy_grpc_frames_feed(&h, (const char *)buf + i, 1);
    }
    assert_int_equal(h.msgs, 4);
    /* A prefix announcing 4 GiB - 1: counted once, the rest skipped without buffering. */
    unsigned char big[5] = { 1, 0xff, 0xff, 0xff, 0xff };
    struct proxy_grpc_frames b = { 0 };
    proxy_grpc_frames_feed(&b, (const char *)big, 5);
    assert_int_equal(b.msgs, 1);
    assert_int_equal(b.skip, 0xffffffffu);
    proxy_grpc_frames_feed(&b, (const char *)buf, 1000);
    assert_int_equal(b.msgs, 1);
    assert_int_equal(b.skip, 0xffffffffu - 1000);
}

static int tscan(const char *s)
{
    struct proxy_grpc_tscan t = { 0 };
    proxy_grpc_tscan_feed(&t, sc_str_c(s));
    return t.code - 1;
}

static void test_trailer_status(void **state)
{
    (void)state;
    assert_int_equal(tscan("\r\n0\r\ngrpc-status: 14\r\ngrpc-message: x\r\n\r\n"), 14);
    assert_int_equal(tscan("0\r\ngrpc-message: a\r\nGRPC-Status:0\r\n\r\n"), 0);
    assert_int_equal(tscan("0\r\ngrpc-status: \t7 \r\n\r\n"), 7);
    assert_int_equal(tscan("0\r\ngrpc-status: 16\n\n"), 16);
    /* Not a status: out of range, not digits, too long, not at a line start, no value. */
    assert_int_equal(tscan("0\r\ngrpc-status: 17\r\n\r\n"), -1);
    assert_int_equal(tscan("0\r\ngrpc-status: 1a\r\n\r\n"), -1);
    assert_int_equal(tscan("0\r\ngrpc-status: 0000000014\r\n\r\n"), -1);
    assert_int_equal(tscan("0\r\nx-grpc-status: 3\r\n\r\n"), -1);
    assert_int_equal(tscan("0\r\ngrpc-status:\r\n\r\n"), -1);
    assert_int_equal(tscan("0\r\ngrpc-statusx: 3\r\n\r\n"), -1);
    /* The last valid one wins (a repeated field). */
    assert_int_equal(tscan("0\r\ngrpc-status: 2\r\ngrpc-status: 5\r\n\r\n"), 5);
    /* Split at every byte. */
    const char *s = "\r\n0\r\ngrpc-message: m\r\ngrpc-status: 13\r\n\r\n";
    size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++) {
        struct proxy_grpc_tscan t = { 0 };
        proxy_grpc_tscan_feed(&t, sc_str_n(s, cut));
        proxy_grpc_tscan_feed(&t, sc_str_n(s + cut, n - cut));
        assert_int_equal(t.code - 1, 13);
    }
}

static void test_code_names(void **state)
{
    (void)state;
    assert_string_equal(proxy_grpc_code_name(0), "OK");
    assert_string_equal(proxy_grpc_code_name(14), "UNAVAILABLE");
    assert_string_equal(proxy_grpc_code_name(16), "UNAUTHENTICATED");
    assert_string_equal(proxy_grpc_code_name(17), "UNKNOWN");
    assert_string_equal(proxy_grpc_code_name(-1), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_whole_and_split),
        cmocka_unit_test(test_trailer_status),
        cmocka_unit_test(test_code_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
