// SPDX-License-Identifier: Apache-2.0
// Unit tests for the OpenID Connect login's codecs (src/roles/proxy/proxy_oidc.c and
// proxy_oidc_crypto.c): the session cookie sealed and opened (every field back, a flipped
// character, another key, another cookie name, a truncated value refused), query parameters
// (percent-decoding, '+', repeats and malformed escapes refused, prefixes of other names not
// matched), local redirect targets (every open-redirect shape refused), and AES-GCM itself.
// Sessions of format version 1 (before token expiry and refresh tokens) are still read.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "roles/proxy/proxy_oidc_int.h"

static const uint8_t key1[PROXY_OIDC_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const uint8_t key2[PROXY_OIDC_KEY_LEN] = "fedcba9876543210fedcba9876543210";

static void test_session_round_trip(void **state)
{
    (void)state;
    struct proxy_oidc_session s = {
        .expires = 1900000000,
        .iss = SC_STR("https://login.example"),
        .sub = SC_STR("u-1"),
        .email = SC_STR("alice@example.com"),
        .user = SC_STR("alice"),
        .groups = SC_STR("dev,ops"),
        .token_exp = 1800000000,
        .refresh_token = SC_STR("rt-1.abc"),
    };
    char v[1024];
    long n = proxy_oidc_session_encode(key1, SC_STR("_c"), &s, v, sizeof(v));
    assert_true(n > 0);
    assert_int_equal(strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     (size_t)n);
    uint8_t buf[4096];
    struct proxy_oidc_session t;
    assert_int_equal(proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(v, (size_t)n), &t, buf,
                                               sizeof(buf), NULL),
                     0);
    assert_int_equal(t.expires, s.expires);
    assert_true(sc_str_eq(t.iss, s.iss) && sc_str_eq(t.sub, s.sub));
    assert_true(sc_str_eq(t.email, s.email) && sc_str_eq(t.user, s.user));
    assert_true(sc_str_eq(t.groups, s.groups) && t.id_token.len == 0);
    assert_int_equal(t.token_exp, s.token_exp);
    assert_true(sc_str_eq(t.refresh_token, s.refresh_token));
    /* another key, another cookie name, a truncated or flipped value: refused */
    assert_int_equal(proxy_oidc_session_decode(key2, SC_STR("_c"), sc_str_n(v, (size_t)n), &t, buf,
                                               sizeof(buf), NULL),
                     -1);
    assert_int_equal(proxy_oidc_session_decode(key1, SC_STR("_c_csrf"), sc_str_n(v, (size_t)n), &t,
                                               buf, sizeof(buf), NULL),
                     -1);
    assert_int_equal(proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(v, (size_t)n - 1), &t,
                                               buf, sizeof(buf), NULL),
                     -1);
    for (long i = 0; i < n; i++) {
        char w[1024];
        memcpy(w, v, (size_t)n);
        w[i] = w[i] == 'A' ? 'B' : 'A';
        assert_int_equal(proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(w, (size_t)n), &t,
                                                   buf, sizeof(buf), NULL),
                         -1);
    }
    /* two seals of the same session differ (a fresh nonce each) */
    char v2[1024];
    assert_int_equal(proxy_oidc_session_encode(key1, SC_STR("_c"), &s, v2, sizeof(v2)), n);
    assert_true(memcmp(v, v2, (size_t)n) != 0);
    /* too small an output: refused, not truncated */
    assert_int_equal(proxy_oidc_session_encode(key1, SC_STR("_c"), &s, v2, 64), -1);
}

/* A version-1 session (expiry, then six fields: no token expiry, no refresh token) sealed by
 * hand: still opened, with neither. */
static void test_session_v1(void **state)
{
    (void)state;
    uint8_t plain[64], box[64 + PROXY_OIDC_SEAL_OVERHEAD];
    size_t n = 0;
    plain[n++] = 1;
    for (int i = 7; i >= 0; i--) {
        plain[n++] = (uint8_t)((uint64_t)1900000000 >> (i * 8));
    }
    const char *f[6] = { "https://login.example", "u-1", "a@b", "alice", "", "" };
    for (size_t i = 0; i < 6; i++) {
        size_t l = strlen(f[i]);
        plain[n++] = 0;
        plain[n++] = (uint8_t)l;
        memcpy(plain + n, f[i], l);
        n += l;
    }
    assert_int_equal(proxy_oidc_seal(key1, plain, n, SC_STR("_c"), box), 0);
    char v[256];
    size_t vl = proxy_oidc_b64url(box, n + PROXY_OIDC_SEAL_OVERHEAD, v);
    uint8_t buf[1024];
    struct proxy_oidc_session t;
    assert_int_equal(
        proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(v, vl), &t, buf, sizeof(buf), NULL),
        0);
    assert_int_equal(t.expires, 1900000000);
    assert_int_equal(t.token_exp, 0);
    assert_true(sc_str_eq(t.sub, SC_STR("u-1")) && sc_str_eq(t.user, SC_STR("alice")));
    assert_int_equal(t.refresh_token.len, 0);
    /* a version-1 body with a seventh field, or another version: refused */
    plain[0] = 3;
    assert_int_equal(proxy_oidc_seal(key1, plain, n, SC_STR("_c"), box), 0);
    vl = proxy_oidc_b64url(box, n + PROXY_OIDC_SEAL_OVERHEAD, v);
    assert_int_equal(
        proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(v, vl), &t, buf, sizeof(buf), NULL),
        -1);
    plain[0] = 1;
    plain[n++] = 0;
    plain[n++] = 0;
    assert_int_equal(proxy_oidc_seal(key1, plain, n, SC_STR("_c"), box), 0);
    vl = proxy_oidc_b64url(box, n + PROXY_OIDC_SEAL_OVERHEAD, v);
    assert_int_equal(
        proxy_oidc_session_decode(key1, SC_STR("_c"), sc_str_n(v, vl), &t, buf, sizeof(buf), NULL),
        -1);
}

static long param(const char *q, const char *name, char *out)
{
    return proxy_oidc_query_param(sc_str_c(q), name, out, 64);
}

static void test_query_params(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(param("code=abc&state=x%20y", "state", out), 3);
    assert_string_equal(out, "x y");
    assert_int_equal(param("code=a+b", "code", out), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(param("codex=1&xcode=2", "code", out), -1);
    assert_int_equal(param("code=1&code=2", "code", out), -2);
    assert_int_equal(param("code=%zz", "code", out), -2);
    assert_int_equal(param("code=%4", "code", out), -2);
    assert_int_equal(param("code=%00", "code", out), -2);
    assert_int_equal(param("code", "code", out), -2);
    assert_int_equal(param("code=", "code", out), 0);
    assert_int_equal(param("", "code", out), -1);
    char big[200];
    memset(big, 'a', sizeof(big));
    memcpy(big, "code=", 5);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(param(big, "code", out), -2);
}

static void test_local_targets(void **state)
{
    (void)state;
    const char *ok[] = { "/", "/a", "/a/b?c=//d", "/%2F%2Fevil" };
    const char *bad[] = { "",
                          "//evil",
                          "/\\evil",
                          "\\\\evil",
                          "https://evil/",
                          "http:evil",
                          "evil",
                          "/\tx",
                          "/a\r\nSet-Cookie: x",
                          "/a b",
                          "javascript:alert(1)" };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_true(proxy_oidc_local_target(sc_str_c(ok[i])));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(proxy_oidc_local_target(sc_str_c(bad[i])));
    }
}

static void test_seal_open(void **state)
{
    (void)state;
    uint8_t box[64 + PROXY_OIDC_SEAL_OVERHEAD], out[64];
    const uint8_t msg[] = "hello";
    assert_int_equal(proxy_oidc_seal(key1, msg, 5, SC_STR("a"), box), 0);
    assert_int_equal(proxy_oidc_open(key1, box, 5 + PROXY_OIDC_SEAL_OVERHEAD, SC_STR("a"), out), 5);
    assert_memory_equal(out, msg, 5);
    assert_int_equal(proxy_oidc_open(key1, box, 5 + PROXY_OIDC_SEAL_OVERHEAD, SC_STR("b"), out),
                     -1);
    assert_int_equal(proxy_oidc_open(key1, box, PROXY_OIDC_SEAL_OVERHEAD - 1, SC_STR("a"), out),
                     -1);
    /* cached contexts: two keys alternate, a third evicts, every answer as uncached */
    struct proxy_oidc_aead *a = NULL;
    const uint8_t key3[PROXY_OIDC_KEY_LEN] = "k3k3k3k3k3k3k3k3k3k3k3k3k3k3k3k3";
    const uint8_t *keys[] = { key1, key2, key1, key3, key2, key1 };
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(proxy_oidc_seal(keys[i], msg, 5, SC_STR("a"), box), 0);
        assert_int_equal(proxy_oidc_open_cached(&a, keys[i], box, 5 + PROXY_OIDC_SEAL_OVERHEAD,
                                                SC_STR("a"), out),
                         5);
        assert_memory_equal(out, msg, 5);
        const uint8_t *other = keys[i] == key1 ? key2 : key1;
        assert_int_equal(
            proxy_oidc_open_cached(&a, other, box, 5 + PROXY_OIDC_SEAL_OVERHEAD, SC_STR("a"), out),
            -1);
    }
    proxy_oidc_aead_free(a);
    uint8_t d[32];
    proxy_oidc_sha256("abc", 3, d);
    assert_int_equal(d[0], 0xba); /* FIPS 180-2's "abc" example: ba7816bf... */
    assert_int_equal(d[31], 0xad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_round_trip), cmocka_unit_test(test_session_v1),
        cmocka_unit_test(test_query_params),       cmocka_unit_test(test_local_targets),
        cmocka_unit_test(test_seal_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
