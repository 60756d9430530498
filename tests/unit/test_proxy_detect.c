// SPDX-License-Identifier: Apache-2.0
// Unit tests for protocol detection (src/roles/proxy/proxy_detect.c): HTTP/1 request lines
// (methods, leading empty lines, partial lines waiting for more, near misses that are opaque),
// the HTTP/2 preface, TLS ClientHellos built here byte by byte (SNI lowercased, ALPN list, no
// extensions, a hello split across two records, truncated and malformed ones), and server-name
// patterns (exact, "*.suffix", "*").
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "roles/proxy/proxy_detect.h"

static enum proxy_proto det(const char *s)
{
    return proxy_detect((const uint8_t *)s, strlen(s), NULL);
}

static void test_http1(void **state)
{
    (void)state;
    assert_int_equal(det("GET / HTTP/1.1\r\n"), PROXY_PROTO_HTTP1);
    assert_int_equal(det("POST /a?b=c HTTP/1.0\n"), PROXY_PROTO_HTTP1);
    assert_int_equal(det("\r\nPURGE * HTTP/1.1\r\n"), PROXY_PROTO_HTTP1);
    assert_int_equal(det("M-SEARCH * HTTP/1.1\r\nHost: x\r\n\r\n"), PROXY_PROTO_HTTP1);
    /* Waiting for more while every byte fits. */
    assert_int_equal(det(""), PROXY_PROTO_MORE);
    assert_int_equal(det("GE"), PROXY_PROTO_MORE);
    assert_int_equal(det("GET /long/path"), PROXY_PROTO_MORE);
    assert_int_equal(det("GET / HTTP/1."), PROXY_PROTO_MORE);
    assert_int_equal(det("GET / HTTP/1.1"), PROXY_PROTO_MORE);
    /* Near misses are opaque. */
    assert_int_equal(det("GET / HTTP/2.0\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("GET  / HTTP/1.1\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("GET / HTTP/1.1 \r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("GET / FTP/1.1\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("EHLO client.example\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("*1\r\n$4\r\nPING\r\n"), PROXY_PROTO_TCP);
    assert_int_equal(det("\x20\x00\x00\x01"), PROXY_PROTO_TCP);
}

static void test_h2c(void **state)
{
    (void)state;
    assert_int_equal(det("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), PROXY_PROTO_H2C);
    assert_int_equal(det("PRI * HTTP/2.0\r\n"), PROXY_PROTO_MORE);
    assert_int_equal(det("PRI * HTTP/2.0\r\n\r\nXX"), PROXY_PROTO_TCP);
}

/* Builds a ClientHello record (or two) into <out>: SNI <sni> (NULL: none), ALPN <alpn> (a
 * NULL-terminated list, NULL: none), <no_ext>: no extensions block at all. <split>: the
 * handshake bytes in two records cut at that offset (0: one record). Returns its length. */
static size_t hello(uint8_t *out, const char *sni, const char *const *alpn, bool no_ext,
                    size_t split)
{
    uint8_t body[1024];
    size_t n = 0;
    body[n++] = 3, body[n++] = 3;
    memset(body + n, 0x11, 32), n += 32;
    body[n++] = 0;                                                 /* session id */
    body[n++] = 0, body[n++] = 2, body[n++] = 0x13, body[n++] = 1; /* one suite */
    body[n++] = 1, body[n++] = 0;                                  /* compression: null */
    if (!no_ext) {
        size_t ext_at = n;
        n += 2;
        if (sni) {
            size_t l = strlen(sni);
            uint8_t e[] = { 0, 0, 0, (uint8_t)(l + 5), 0, (uint8_t)(l + 3), 0, 0, (uint8_t)l };
            memcpy(body + n, e, sizeof(e)), n += sizeof(e);
            memcpy(body + n, sni, l), n += l;
        }
        if (alpn) {
            size_t list = 0;
            for (size_t i = 0; alpn[i]; i++) {
                list += 1 + strlen(alpn[i]);
            }
            uint8_t e[] = { 0, 16, 0, (uint8_t)(list + 2), 0, (uint8_t)list };
            memcpy(body + n, e, sizeof(e)), n += sizeof(e);
            for (size_t i = 0; alpn[i]; i++) {
                body[n++] = (uint8_t)strlen(alpn[i]);
                memcpy(body + n, alpn[i], strlen(alpn[i])), n += strlen(alpn[i]);
            }
        }
        body[ext_at] = (uint8_t)((n - ext_at - 2) >> 8);
        body[ext_at + 1] = (uint8_t)(n - ext_at - 2);
    }
    uint8_t hs[1100];
    hs[0] = 1, hs[1] = 0, hs[2] = (uint8_t)(n >> 8), hs[3] = (uint8_t)n;
    memcpy(hs + 4, body, n);
    size_t hl = n + 4, o = 0;
    size_t cuts[2] = { split ? split : hl, hl };
    size_t from = 0;
    for (int r = 0; r < (split ? 2 : 1); r++) {
        size_t len = cuts[r] - from;
        out[o++] = 0x16, out[o++] = 3, out[o++] = 1;
        out[o++] = (uint8_t)(len >> 8), out[o++] = (uint8_t)len;
        memcpy(out + o, hs + from, len), o += len;
        from = cuts[r];
    }
    return o;
}

static void test_tls(void **state)
{
    (void)state;
    uint8_t b[1200];
    struct proxy_hello h;
    static const char *const alpn[] = { "h2", "http/1.1", NULL };
    size_t n = hello(b, "API.Example.Test", alpn, false, 0);
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TLS);
    assert_string_equal(h.sni, "api.example.test");
    assert_int_equal(h.nalpn, 2);
    assert_string_equal(h.alpn[0], "h2");
    assert_string_equal(h.alpn[1], "http/1.1");
    /* Every shorter prefix waits for more. */
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(proxy_detect(b, k, &h), PROXY_PROTO_MORE);
    }
    /* No SNI, no ALPN; no extensions at all. */
    n = hello(b, NULL, NULL, false, 0);
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TLS);
    assert_string_equal(h.sni, "");
    assert_int_equal(h.nalpn, 0);
    n = hello(b, NULL, NULL, true, 0);
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TLS);
    /* A ClientHello across two records. */
    n = hello(b, "split.example", alpn, false, 20);
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TLS);
    assert_string_equal(h.sni, "split.example");
    assert_int_equal(proxy_detect(b, n - 1, &h), PROXY_PROTO_MORE);
    /* Malformed: a wrong extensions length, a handshake that is not a ClientHello, an alert. */
    n = hello(b, "x.example", NULL, false, 0);
    b[5 + 4 + 2 + 32 + 1 + 4 + 2 + 1] ^= 0x40;
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TCP);
    n = hello(b, "x.example", NULL, false, 0);
    b[5] = 2;
    assert_int_equal(proxy_detect(b, n, &h), PROXY_PROTO_TCP);
    static const uint8_t alert[] = { 0x15, 3, 3, 0, 2, 2, 40 };
    assert_int_equal(proxy_detect(alert, sizeof(alert), &h), PROXY_PROTO_TCP);
    static const uint8_t zero_len[] = { 0x16, 3, 1, 0, 0, 1 };
    assert_int_equal(proxy_detect(zero_len, sizeof(zero_len), &h), PROXY_PROTO_TCP);
}

static void test_sni_match(void **state)
{
    (void)state;
    assert_true(proxy_sni_match("a.example", "a.example"));
    assert_true(proxy_sni_match("A.Example", "a.example"));
    assert_false(proxy_sni_match("a.example", "b.example"));
    assert_true(proxy_sni_match("*.example", "a.example"));
    assert_true(proxy_sni_match("*.example", "a.b.example"));
    assert_false(proxy_sni_match("*.example", "example"));
    assert_false(proxy_sni_match("*.example", "aexample"));
    assert_true(proxy_sni_match("*", "anything"));
    assert_false(proxy_sni_match("*", ""));
    assert_false(proxy_sni_match("a.example", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1),
        cmocka_unit_test(test_h2c),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_sni_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
