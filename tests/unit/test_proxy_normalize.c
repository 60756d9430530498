// SPDX-License-Identifier: Apache-2.0
// Unit tests for request-target and Host normalisation (src/roles/proxy/proxy_normalize.c): RFC
// 3986's dot-segment examples, Istio's levels, the bypass shapes of the mesh CVEs (dot segments,
// encoded dots and slashes, double slashes, backslashes, fragments, %00, ';' on dot segments),
// the query kept as sent, idempotence on every case, and Host without case, port or trailing
// dot. Inputs are placed flush against the end of a heap block so a read past them is caught by
// ASan.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_normalize.h"

/* Normalises <in> at <level>/<esc>; returns the result in a static buffer, or "ERR:<why>". */
static const char *norm(const char *in, int level, int esc)
{
    static char res[1024];
    size_t n = strlen(in);
    char *flush = malloc(n ? n : 1);
    memcpy(flush, in, n);
    char out[1024];
    size_t olen = 0, plen = 0;
    const char *why = NULL;
    int rc = proxy_normalize_target(sc_str_n(flush, n), level, esc, out, n, &olen, &plen, &why);
    if (rc < 0) {
        snprintf(res, sizeof(res), "ERR:%s", why);
    } else if (rc == PROXY_NORM_SAME) {
        const char *q = memchr(in, '?', n);
        assert_int_equal(plen, q ? (size_t)(q - in) : n);
        snprintf(res, sizeof(res), "%s", in);
    } else {
        assert_true(olen <= n);
        const char *q = memchr(out, '?', olen);
        assert_int_equal(plen, q ? (size_t)(q - out) : olen);
        snprintf(res, sizeof(res), "%.*s", (int)olen, out);
        /* Idempotent: the result is already normal. */
        char again[1024];
        size_t ol2, pl2;
        assert_int_equal(proxy_normalize_target(sc_str_n(out, olen), level, esc, again,
                                                sizeof(again), &ol2, &pl2, &why),
                         PROXY_NORM_SAME);
    }
    free(flush);
    return res;
}

#define D(in) norm(in, PROXY_PN_DECODE_MERGE, PROXY_ES_REJECT)

static void test_plain_unchanged(void **state)
{
    (void)state;
    assert_string_equal(D("/"), "/");
    assert_string_equal(D("/api/v1/charge"), "/api/v1/charge");
    assert_string_equal(D("/a/b/?x=1&y=%2F..//"), "/a/b/?x=1&y=%2F..//");
    assert_string_equal(D("/file.txt"), "/file.txt");
    assert_string_equal(D("/.well-known/x"), "/.well-known/x");
    assert_string_equal(D("/a/..b/.c"), "/a/..b/.c");
}

static void test_rfc3986_dot_segments(void **state)
{
    (void)state;
    /* RFC 3986 5.2.4's examples and the CVE-2019-9901 shape. */
    assert_string_equal(D("/a/b/c/./../../g"), "/a/g");
    assert_string_equal(D("/info/../private"), "/private");
    assert_string_equal(D("/public/../admin/x"), "/admin/x");
    assert_string_equal(D("/../../etc/passwd"), "/etc/passwd");
    assert_string_equal(D("/a/b/.."), "/a/");
    assert_string_equal(D("/a/b/."), "/a/b/");
    assert_string_equal(D("/a/./b/./"), "/a/b/");
    assert_string_equal(D("/.."), "/");
    assert_string_equal(D("/a/..?q=/../"), "/?q=/../");
}

static void test_encoded_dots_and_unreserved(void **state)
{
    (void)state;
    assert_string_equal(D("/public/%2e%2e/admin"), "/admin");
    assert_string_equal(D("/public/%2E%2E/admin"), "/admin");
    assert_string_equal(D("/public/.%2e/admin"), "/admin");
    assert_string_equal(D("/%61dmin"), "/admin");
    assert_string_equal(D("/a%7eb%2d"), "/a~b-");
    /* Reserved characters stay encoded, in upper case; %25 is not decoded twice. */
    assert_string_equal(D("/a%3fb%3a"), "/a%3Fb%3A");
    assert_string_equal(D("/%252e%252e/admin"), "/%252e%252e/admin");
    assert_string_equal(D("/a%20b"), "/a%20b");
}

static void test_slashes(void **state)
{
    (void)state;
    /* CVE-2021-31920: escaped and multiple slashes. */
    assert_string_equal(D("//admin"), "/admin");
    assert_string_equal(D("/public//..//admin"), "/admin");
    assert_string_equal(D("/a///b//"), "/a/b/");
    assert_string_equal(norm("//admin", PROXY_PN_BASE, PROXY_ES_REJECT), "//admin");
    assert_string_equal(norm("/a//../b", PROXY_PN_BASE, PROXY_ES_REJECT), "/a/b");
    assert_string_equal(norm("//admin", PROXY_PN_MERGE, PROXY_ES_REJECT), "/admin");
    assert_true(strncmp(D("/public%2F..%2Fadmin"), "ERR:encoded slash", 17) == 0);
    assert_true(strncmp(D("/public%5c..%5cadmin"), "ERR:encoded slash", 17) == 0);
    assert_true(strncmp(D("/a%2fb"), "ERR:encoded slash", 17) == 0);
    assert_string_equal(norm("/public%2F..%2Fadmin", PROXY_PN_DECODE_MERGE, PROXY_ES_DECODE),
                        "/admin");
    assert_string_equal(norm("/public%5C..%5Cadmin", PROXY_PN_DECODE_MERGE, PROXY_ES_DECODE),
                        "/admin");
    assert_string_equal(norm("/a%2F%2Fb", PROXY_PN_DECODE_MERGE, PROXY_ES_DECODE), "/a/b");
    assert_string_equal(norm("/a%2fb", PROXY_PN_MERGE, PROXY_ES_KEEP), "/a%2Fb");
    /* Query strings may carry encoded slashes. */
    assert_string_equal(D("/a?next=%2Fadmin"), "/a?next=%2Fadmin");
}

static void test_refused_at_every_level(void **state)
{
    (void)state;
    for (int level = PROXY_PN_NONE; level <= PROXY_PN_DECODE_MERGE; level++) {
        /* CVE-2021-39156: a fragment. */
        assert_true(
            strncmp(norm("/public#/../admin", level, PROXY_ES_REJECT), "ERR:fragment", 12) == 0);
        assert_true(strncmp(norm("/a\\..\\admin", level, PROXY_ES_REJECT), "ERR:backslash", 13) ==
                    0);
        assert_true(strncmp(norm("/a%00b", level, PROXY_ES_REJECT), "ERR:encoded NUL", 15) == 0);
        assert_true(strncmp(norm("/a?x=%00", level, PROXY_ES_REJECT), "ERR:encoded NUL", 15) == 0);
        assert_true(strncmp(norm("/a%zz", level, PROXY_ES_REJECT), "ERR:malformed", 13) == 0);
        assert_true(strncmp(norm("/a%4", level, PROXY_ES_REJECT), "ERR:malformed", 13) == 0);
        assert_true(strncmp(norm("/a%", level, PROXY_ES_REJECT), "ERR:malformed", 13) == 0);
    }
    /* Level none leaves everything else alone. */
    assert_string_equal(norm("/a/../b//c%2e", PROXY_PN_NONE, PROXY_ES_REJECT), "/a/../b//c%2e");
    assert_string_equal(norm("/a%2Fb", PROXY_PN_NONE, PROXY_ES_REJECT), "/a%2Fb");
}

static void test_dot_segment_parameters(void **state)
{
    (void)state;
    /* Servers that strip ';' parameters would read "..;" as "..". */
    assert_true(strncmp(D("/public/..;/admin"), "ERR:dot segment", 15) == 0);
    assert_true(strncmp(D("/public/.;x/admin"), "ERR:dot segment", 15) == 0);
    assert_true(strncmp(D("/public/%2e%2e;/admin"), "ERR:dot segment", 15) == 0);
    /* Parameters elsewhere are the application's business and stay. */
    assert_string_equal(D("/admin;jsessionid=1/x"), "/admin;jsessionid=1/x");
}

static void test_host(void **state)
{
    (void)state;
    char out[64];
    size_t n = proxy_host_normalize(SC_STR("Example.COM.:8080"), out, sizeof(out));
    assert_int_equal(n, 11);
    assert_memory_equal(out, "example.com", 11);
    n = proxy_host_normalize(SC_STR("EXAMPLE.com"), out, sizeof(out));
    assert_memory_equal(out, "example.com", n);
    n = proxy_host_normalize(SC_STR("[::1]:80"), out, sizeof(out));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "[::1]", 5);
    n = proxy_host_normalize(SC_STR("10.0.0.1"), out, sizeof(out));
    assert_memory_equal(out, "10.0.0.1", n);
    assert_int_equal(proxy_host_normalize(SC_STR(""), out, sizeof(out)), 0);
    assert_int_equal(proxy_host_normalize(SC_STR("a-very-long-name.example.com"), out, 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_unchanged),
        cmocka_unit_test(test_rfc3986_dot_segments),
        cmocka_unit_test(test_encoded_dots_and_unreserved),
        cmocka_unit_test(test_slashes),
        cmocka_unit_test(test_refused_at_every_level),
        cmocka_unit_test(test_dot_segment_parameters),
        cmocka_unit_test(test_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
