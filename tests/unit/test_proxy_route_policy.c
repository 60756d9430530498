// SPDX-License-Identifier: Apache-2.0
// Unit tests of the proxy's route policy primitives: the token bucket on a fake clock (exactly
// `burst` at once, then refill at the configured rate, reset and Retry-After arithmetic), the keyed
// table's bound and least-recently-used eviction, the registry that keeps limiters across reloads,
// the weighted pick, the --rate-limit flag, cookie and query-parameter matches, and regex_rewrite.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_route_policy.h"
#include "roles/proxy/proxy_route_query.h"

#define SEC 1000000000ULL
#define MS 1000000ULL

static struct proxy_rl_params params(uint64_t per_unit, uint64_t unit_ns, uint64_t burst)
{
    struct proxy_rl_params p;
    memset(&p, 0, sizeof(p));
    p.per_unit = per_unit;
    p.unit_ns = unit_ns;
    p.capacity = burst;
    p.max_keys = 100;
    return p;
}

static int take_n(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now, int n)
{
    int ok = 0;
    struct proxy_rl_result r;
    for (int i = 0; i < n; i++) {
        proxy_tb_take(b, p, now, &r);
        ok += r.allowed;
    }
    return ok;
}

static void test_bucket_burst_then_refill(void **state)
{
    (void)state;
    /* 10 per second, burst 5. */
    struct proxy_rl_params p = params(10, SEC, 5);
    struct proxy_tb b;
    uint64_t t = 1000 * SEC;
    proxy_tb_init(&b, &p, t);
    struct proxy_rl_result r;
    for (int i = 0; i < 5; i++) {
        proxy_tb_take(&b, &p, t, &r);
        assert_true(r.allowed);
        assert_int_equal(r.limit, 5);
        assert_int_equal(r.remaining, 4 - i);
    }
    proxy_tb_take(&b, &p, t, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after, 1); /* 100 ms to the next token, rounded up to 1 s */
    assert_int_equal(r.reset_s, 1);     /* 500 ms to full, rounded up */
    /* 99 ms later: still nothing; at 100 ms exactly one token. */
    assert_int_equal(take_n(&b, &p, t + 99 * MS, 1), 0);
    assert_int_equal(take_n(&b, &p, t + 100 * MS, 3), 1);
    /* A long pause refills only up to the burst. */
    assert_int_equal(take_n(&b, &p, t + 60 * SEC, 20), 5);
    /* Steady state: over 10 s at 10/s, 100 more requests pass, whatever the polling. */
    uint64_t base = t + 60 * SEC;
    int ok = 0;
    for (uint64_t ms = 1; ms <= 10000; ms++) {
        ok += take_n(&b, &p, base + ms * MS, 1);
    }
    assert_int_equal(ok, 100);
}

static void test_bucket_slow_rates_are_exact(void **state)
{
    (void)state;
    /* 1 per hour, burst 1: the fraction of a token accrues over an hour without loss. */
    struct proxy_rl_params p = params(1, 3600 * SEC, 1);
    struct proxy_tb b;
    uint64_t t = 5 * SEC;
    proxy_tb_init(&b, &p, t);
    assert_int_equal(take_n(&b, &p, t, 2), 1);
    for (uint64_t s = 1; s < 3600; s++) {
        struct proxy_rl_result r;
        proxy_tb_take(&b, &p, t + s * SEC, &r);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after, 3600 - s);
    }
    assert_int_equal(take_n(&b, &p, t + 3600 * SEC, 1), 1);
    /* 3 per minute, burst 6. */
    struct proxy_rl_params q = params(3, 60 * SEC, 6);
    proxy_tb_init(&b, &q, 0);
    assert_int_equal(take_n(&b, &q, 0, 10), 6);
    assert_int_equal(take_n(&b, &q, 19 * SEC, 1), 0);
    assert_int_equal(take_n(&b, &q, 20 * SEC, 1), 1);
    assert_false(proxy_tb_full(&b, &q, 20 * SEC));
    assert_true(proxy_tb_full(&b, &q, 140 * SEC));
}

static void test_keyed_table_bound_and_lru(void **state)
{
    (void)state;
    struct proxy_rl_params p = params(1, 3600 * SEC, 1);
    p.key = PROXY_RL_KEY_CLIENT_IP;
    p.max_keys = 3;
    struct proxy_rl *rl = proxy_rl_acquire("unit/lru", &p, NULL);
    struct proxy_rl_result r;
    uint64_t t = SEC;
    const char *keys[] = { "10.0.0.1", "10.0.0.2", "10.0.0.3" };
    for (size_t i = 0; i < 3; i++) {
        proxy_rl_take(rl, sc_str_c(keys[i]), t, true, &r);
        assert_true(r.allowed);
        proxy_rl_take(rl, sc_str_c(keys[i]), t, true, &r);
        assert_false(r.allowed); /* each key has its own bucket of 1 */
    }
    assert_int_equal(proxy_rl_nkeys(rl), 3);
    /* Touch .1 so that .2 is the least recently used, then a fourth key evicts .2. */
    proxy_rl_take(rl, sc_str_c("10.0.0.1"), t, true, &r);
    proxy_rl_take(rl, sc_str_c("10.0.0.4"), t, true, &r);
    assert_true(r.allowed);
    assert_int_equal(proxy_rl_nkeys(rl), 3);
    proxy_rl_take(rl, sc_str_c("10.0.0.1"), t, true, &r);
    assert_false(r.allowed); /* kept: still empty */
    proxy_rl_take(rl, sc_str_c("10.0.0.2"), t, true, &r);
    assert_true(r.allowed); /* evicted: back with a full bucket */
    assert_int_equal(proxy_rl_nkeys(rl), 3);
    /* Many distinct keys never grow the table past its bound. */
    char k[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        proxy_rl_take(rl, sc_str_c(k), t, true, &r);
    }
    assert_int_equal(proxy_rl_nkeys(rl), 3);
    /* Long keys are told apart beyond the stored prefix. */
    char a[200], b[200];
    memset(a, 'x', sizeof(a));
    memcpy(b, a, sizeof(b));
    a[199] = 'a';
    b[199] = 'b';
    proxy_rl_take(rl, sc_str_n(a, sizeof(a)), t, true, &r);
    assert_true(r.allowed);
    proxy_rl_take(rl, sc_str_n(b, sizeof(b)), t, true, &r);
    assert_true(r.allowed);
    proxy_rl_take(rl, sc_str_n(a, sizeof(a)), t, true, &r);
    assert_false(r.allowed);
    proxy_rl_release(rl);
}

static void test_global_limiter_ignores_key(void **state)
{
    (void)state;
    struct proxy_rl_params p = params(2, SEC, 2);
    struct proxy_rl *rl = proxy_rl_acquire("unit/global", &p, NULL);
    struct proxy_rl_result r;
    int ok = 0; /* acquire filled the bucket at the real "now"; time 0 is before it: no refill */
    for (int i = 0; i < 5; i++) {
        proxy_rl_take(rl, sc_str_c(i % 2 ? "a" : "b"), 0, true, &r);
        ok += r.allowed;
    }
    assert_int_equal(ok, 2);
    assert_int_equal(proxy_rl_nkeys(rl), 0);
    proxy_rl_release(rl);
}

static void test_registry_keeps_limiters(void **state)
{
    (void)state;
    struct proxy_rl_params p = params(5, SEC, 5);
    struct proxy_rl *a = proxy_rl_acquire("l/r", &p, NULL);
    struct proxy_rl *b = proxy_rl_acquire("l/r", &p, NULL);
    assert_ptr_equal(a, b); /* a reload with the same limit shares the buckets */
    struct proxy_rl_params q = params(6, SEC, 5);
    struct proxy_rl *c = proxy_rl_acquire("l/r", &q, NULL);
    assert_ptr_not_equal(a, c); /* a changed limit starts afresh */
    struct proxy_rl *d = proxy_rl_acquire("l/other", &p, NULL);
    assert_ptr_not_equal(a, d);
    proxy_rl_release(a);
    proxy_rl_release(c);
    proxy_rl_release(d);
    struct proxy_rl *e = proxy_rl_acquire("l/r", &p, NULL);
    assert_ptr_equal(b, e); /* b still holds it */
    proxy_rl_release(b);
    proxy_rl_release(e);
}

static void test_weighted_pick(void **state)
{
    (void)state;
    uint32_t cum[] = { 90, 100 };
    size_t n[2] = { 0, 0 };
    for (uint64_t r = 0; r < 100000; r++) {
        n[proxy_weighted_pick(cum, 2, r)]++;
    }
    assert_int_equal(n[0], 90000);
    assert_int_equal(n[1], 10000);
    assert_int_equal(proxy_weighted_pick(cum, 2, 89), 0);
    assert_int_equal(proxy_weighted_pick(cum, 2, 90), 1);
    /* Zero weights are never picked. */
    uint32_t z[] = { 0, 10, 10, 20 };
    size_t m[4] = { 0 };
    for (uint64_t r = 0; r < 2000; r++) {
        m[proxy_weighted_pick(z, 4, r * 7919)]++;
    }
    assert_int_equal(m[0], 0);
    assert_int_equal(m[2], 0);
    assert_int_equal(m[1] + m[3], 2000);
    assert_true(m[1] > 0 && m[3] > 0);
    uint32_t one[] = { 3 };
    assert_int_equal(proxy_weighted_pick(one, 1, 12345), 0);
}

static void test_rate_flag(void **state)
{
    (void)state;
    struct proxy_rl_cfg c;
    assert_int_equal(proxy_rl_parse_flag("100/m", &c), 0);
    assert_int_equal(c.requests_per_unit, 100);
    assert_int_equal(c.burst, 100);
    assert_int_equal(c.unit, PROXY_RL_MINUTE);
    assert_int_equal(c.key, PROXY_RL_KEY_CLIENT_IP);
    assert_int_equal(proxy_rl_parse_flag("5/second", &c), 0);
    assert_int_equal(c.unit, PROXY_RL_SECOND);
    assert_int_equal(proxy_rl_parse_flag("7/h", &c), 0);
    assert_int_equal(c.unit, PROXY_RL_HOUR);
    assert_int_equal(proxy_rl_parse_flag("0/s", &c), -EINVAL);
    assert_int_equal(proxy_rl_parse_flag("10", &c), -EINVAL);
    assert_int_equal(proxy_rl_parse_flag("10/d", &c), -EINVAL);
    assert_int_equal(proxy_rl_parse_flag("x/s", &c), -EINVAL);
    assert_int_equal(proxy_rl_parse_flag(NULL, &c), -EINVAL);
}

static bool cookie_match(const char *name, const char *value, bool present, const char *req)
{
    struct sc_http_header hdrs[16];
    struct sc_http_msg m = { .headers = hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http1_default_limits;
    int rc = sc_http1_parse_request(req, strlen(req), 0, &lim, &m, 16, &err);
    assert_true(rc > 0);
    struct sc_str n = sc_str_c(name), v = value ? sc_str_c(value) : SC_STR_NULL;
    struct proxy_route_policy pol;
    memset(&pol, 0, sizeof(pol));
    pol.cookie_names = &n;
    pol.cookie_values = &v;
    pol.cookie_present = &present;
    pol.ncookies = 1;
    return proxy_route_policy_match(&pol, &m, NULL);
}

static void test_cookie_match(void **state)
{
    (void)state;
    const char *one = "GET / HTTP/1.1\r\nHost: h\r\nCookie: theme=dark; user=tester\r\n\r\n";
    assert_true(cookie_match("user", "tester", true, one));
    assert_true(cookie_match("theme", "dark", true, one));
    assert_true(cookie_match("user", NULL, true, one));
    assert_false(cookie_match("user", "test", true, one));
    assert_false(cookie_match("use", NULL, true, one));
    assert_false(cookie_match("user", NULL, false, one));
    assert_true(cookie_match("other", NULL, false, one));
    /* Several Cookie headers, spaces, quoted values, empty pairs and pairs without '='. */
    const char *many = "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1;;junk; b = \"x y\" \r\n"
                       "Cookie: user=\"tester\"\r\n\r\n";
    assert_true(cookie_match("user", "tester", true, many));
    assert_true(cookie_match("b", "x y", true, many));
    assert_false(cookie_match("junk", NULL, true, many));
    assert_true(cookie_match("a", "1", true, many));
    const char *none = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_false(cookie_match("user", NULL, true, none));
    assert_true(cookie_match("user", NULL, false, none));
    const char *empty = "GET / HTTP/1.1\r\nHost: h\r\nCookie: user=\r\n\r\n";
    assert_true(cookie_match("user", "", true, empty));
    assert_false(cookie_match("user", "x", true, empty));
    assert_true(proxy_route_policy_match(NULL, NULL, NULL));
}

static bool query(const char *target, struct proxy_query_match_cfg c)
{
    struct sc_vec v = { .v = &c, .n = 1 };
    struct proxy_query_match *q = proxy_query_new(&v);
    pcre2_match_data *md = pcre2_match_data_create(8, NULL);
    bool ok = proxy_query_matches(q, 1, sc_str_c(target), md);
    pcre2_match_data_free(md);
    proxy_query_free(q, 1);
    return ok;
}

static void test_query_match(void **state)
{
    (void)state;
    struct proxy_query_match_cfg c = { .name = "v", .exact = "2", .present = true };
    assert_true(query("/a?v=2", c));
    assert_true(query("/a?x=1&v=2&y", c));
    assert_false(query("/a?v=3&v=2", c)); /* the first occurrence counts */
    assert_false(query("/a?v=%32", c));   /* compared as sent */
    assert_false(query("/a?vv=2", c));
    assert_false(query("/a", c));
    assert_false(query("/a?v=2x", c));
    assert_true(query("http://h/a?v=2#frag", c));
    assert_false(query("/a?#v=2", c));
    c = (struct proxy_query_match_cfg){ .name = "debug", .present = true };
    assert_true(query("/?debug", c));
    assert_true(query("/?a=1&debug=", c));
    assert_false(query("/?a=debug", c));
    assert_false(query("/?", c));
    c.present = false;
    assert_true(query("/?a=debug", c));
    assert_false(query("/?debug&a", c));
    c = (struct proxy_query_match_cfg){ .name = "u", .prefix = "ab", .present = true };
    assert_true(query("/?u=abc", c));
    assert_false(query("/?u=a", c));
    c = (struct proxy_query_match_cfg){ .name = "u", .suffix = "-x", .present = true };
    assert_true(query("/?u=a-x&b", c));
    assert_false(query("/?u=-", c));
    c = (struct proxy_query_match_cfg){ .name = "u", .regex = "[a-z]+[0-9]", .present = true };
    assert_true(query("/?u=ab1", c));
    assert_false(query("/?u=ab1x", c)); /* the whole value */
    assert_false(query("/?u=", c));
}

static const char *rewrite(const char *pattern, const char *subst, const char *origin, char *out,
                           size_t cap)
{
    struct proxy_regex_rewrite_cfg c = { .pattern = (char *)pattern,
                                         .substitution = (char *)subst };
    struct proxy_regex_rewrite *rw = proxy_regex_rewrite_new(&c);
    assert_non_null(rw);
    long n = proxy_regex_rewrite_apply(rw, sc_str_c(origin), out, cap);
    proxy_regex_rewrite_free(rw);
    if (n < 0) {
        return NULL;
    }
    out[n] = '\0';
    return out;
}

static void test_regex_rewrite(void **state)
{
    (void)state;
    char out[256];
    assert_string_equal(
        rewrite("^/api/(\\w+)/(\\d+)$", "/v2/\\2/\\1", "/api/book/7?x=1", out, sizeof(out)),
        "/v2/7/book?x=1");
    assert_string_equal(rewrite("/+", "/", "//a///b/", out, sizeof(out)), "/a/b/");
    assert_string_equal(rewrite("^/none$", "/x", "/other", out, sizeof(out)), "/other");
    assert_string_equal(rewrite("a", "$\\\\", "/a?a", out, sizeof(out)), "/$\\?a");
    assert_null(rewrite("a", "xxxxxxxxxx", "/aaaaaaaaaa", out, 32)); /* bounded */
    char *why = NULL;
    assert_int_equal(proxy_route_regex_check("^/(a)$", "/\\2", &why), SC_ECONFIG);
    sc_free(why);
    why = NULL;
    assert_int_equal(proxy_route_regex_check("(", NULL, &why), SC_ECONFIG);
    sc_free(why);
    assert_int_equal(proxy_route_regex_check("^/(a)$", "/\\1\\\\", NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_burst_then_refill),
        cmocka_unit_test(test_bucket_slow_rates_are_exact),
        cmocka_unit_test(test_keyed_table_bound_and_lru),
        cmocka_unit_test(test_global_limiter_ignores_key),
        cmocka_unit_test(test_registry_keeps_limiters),
        cmocka_unit_test(test_weighted_pick),
        cmocka_unit_test(test_rate_flag),
        cmocka_unit_test(test_cookie_match),
        cmocka_unit_test(test_query_match),
        cmocka_unit_test(test_regex_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
