// SPDX-License-Identifier: Apache-2.0
// Unit tests for the Prometheus text writer: value and bucket-bound spellings as the Go client
// writes them, escaping with and without UTF-8 repair, and appends that stop at a buffer's cap.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/prom.h"

static void check_value(double v, const char *want)
{
    char out[SC_PROM_VALUE_MAX + 1];
    size_t n = sc_prom_value_to(out, v);
    out[n] = 0;
    assert_string_equal(out, want);
    if (!isnan(v)) {
        assert_true(strtod(out, NULL) == v);
    }
}

static void test_values(void **state)
{
    (void)state;
    check_value(NAN, "NaN");
    check_value(INFINITY, "+Inf");
    check_value(-INFINITY, "-Inf");
    check_value(0, "0");
    check_value(-0.0, "-0");
    check_value(42, "42");
    check_value(-7, "-7");
    check_value(999999999999999.0, "999999999999999");
    check_value(1e15, "1e+15");
    check_value(1e6, "1000000");
    check_value(0.1, "0.1");
    check_value(0.1 + 0.2, "0.30000000000000004");
    check_value(2.5e-7, "2.5e-07");
    check_value(1.7976931348623157e308, "1.7976931348623157e+308");
    /* shortest digits: a value 16 digits hold is written with 16 */
    check_value(1.000000000000001, "1.000000000000001");
    struct sc_buf b;
    sc_buf_init(&b, 3);
    assert_int_equal(sc_prom_value(&b, 12), 0);
    assert_int_equal(sc_prom_value(&b, 12), SC_ETOOBIG);
    sc_buf_cleanup(&b);
}

static void test_le(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *want;
    } cases[] = { { 0.005, "0.005" },   { 1, "1" },          { 2.5, "2.5" },
                  { 1e6, "1e+06" },     { 1e-5, "1e-05" },   { 0.0001, "0.0001" },
                  { 100000, "100000" }, { INFINITY, "+Inf" } };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        sc_prom_le(out, sizeof(out), cases[i].v);
        assert_string_equal(out, cases[i].want);
    }
}

static const char *esc(const char *s, size_t n, unsigned flags)
{
    static char out[256];
    char *e = sc_prom_escape_to(out, s, n, flags);
    *e = 0;
    struct sc_buf b;
    sc_buf_init(&b, 1024);
    assert_int_equal(sc_prom_escape(&b, s, n, flags), 0);
    assert_string_equal(sc_buf_cstr(&b), out); /* both writers agree */
    sc_buf_cleanup(&b);
    return out;
}

static void test_escape(void **state)
{
    (void)state;
    const char *s = "a\\b\"c\nd";
    assert_string_equal(esc(s, strlen(s), 0), "a\\\\b\"c\\nd");
    assert_string_equal(esc(s, strlen(s), SC_PROM_ESC_QUOTE), "a\\\\b\\\"c\\nd");
    const char *u = "caf\xc3\xa9\xff\xed\xa0\x80!";
    assert_string_equal(esc(u, strlen(u), 0), u); /* bytes kept as they are */
    assert_string_equal(esc(u, strlen(u), SC_PROM_ESC_UTF8),
                        "caf\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!");
    assert_string_equal(esc("", 0, SC_PROM_ESC_UTF8 | SC_PROM_ESC_QUOTE), "");
    /* worst case 3x: every byte replaced */
    char bad[16];
    memset(bad, 0xff, sizeof(bad));
    assert_int_equal(strlen(esc(bad, sizeof(bad), SC_PROM_ESC_UTF8)), 3 * sizeof(bad));
}

static void test_escape_cap(void **state)
{
    (void)state;
    for (size_t cap = 0; cap < 12; cap++) {
        struct sc_buf b;
        sc_buf_init(&b, cap);
        int rc = sc_prom_escape(&b, "ab\"cd\"e", 7, SC_PROM_ESC_QUOTE); /* 9 bytes escaped */
        assert_int_equal(rc, cap >= 9 ? 0 : SC_ETOOBIG);
        assert_true(b.len <= cap);
        sc_buf_cleanup(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_le),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
