// SPDX-License-Identifier: Apache-2.0
// Unit tests for the exposition parser and writer: every construct of Prometheus text 0.0.4 and
// OpenMetrics 1.0 that a target may send, a table of malformed inputs with their exact line:col,
// render -> parse round trips (escapes included), format conversion, limits, and input placed
// flush against a guard page so an overread faults.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/prom.h"
#include "core/utf8.h"
#include "roles/metrics/prom.h"

static int parse(struct metrics_prom_set *s, const char *text, enum metrics_prom_format fmt,
                 struct metrics_prom_error *e)
{
    metrics_prom_set_init(s);
    return metrics_prom_parse(s, text, strlen(text), fmt, NULL, e);
}

static const struct metrics_prom_sample *sample(const struct metrics_prom_set *s, const char *fam,
                                                size_t i)
{
    const struct metrics_prom_family *f = metrics_prom_find(s, sc_str_c(fam));
    assert_non_null(f);
    assert_true(i < f->nsamples);
    return &f->samples[i];
}

static const char *label(const struct metrics_prom_sample *sm, const char *name, char *buf,
                         size_t n)
{
    for (uint32_t i = 0; i < sm->nlabels; i++) {
        if (sc_str_eq(sm->labels[i].name, sc_str_c(name))) {
            snprintf(buf, n, "%.*s", SC_STR_FMT(sm->labels[i].value));
            return buf;
        }
    }
    return NULL;
}

static void test_text_basic(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    struct metrics_prom_error e;
    const char *in = "# HELP http_requests_total The total number of HTTP requests.\n"
                     "# TYPE http_requests_total counter\n"
                     "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n"
                     "http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n"
                     "\n"
                     "# Escaping in label values:\n"
                     "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot "
                     "find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n"
                     "metric_without_timestamp_and_labels 12.47\n"
                     "something_weird{problem=\"division by zero\"} +Inf -3982045\n"
                     "nan_value NaN\n"
                     "neg_inf -Inf\n"
                     "trailing_comma{a=\"b\",} 1\n";
    assert_int_equal(parse(&s, in, METRICS_PROM_FMT_TEXT, &e), 0);
    assert_int_equal(s.nsamples, 8);
    const struct metrics_prom_family *f = metrics_prom_find(&s, SC_STR("http_requests_total"));
    assert_int_equal(f->type, METRICS_PROM_COUNTER);
    assert_true(sc_str_eq(f->help, SC_STR("The total number of HTTP requests.")));
    const struct metrics_prom_sample *sm = sample(&s, "http_requests_total", 1);
    assert_true(sm->value == 3);
    assert_true(sm->has_ts && sm->ts_ms == 1395066363000);
    char b[128];
    sm = sample(&s, "msdos_file_access_time_seconds", 0);
    assert_string_equal(label(sm, "path", b, sizeof(b)), "C:\\DIR\\FILE.TXT");
    assert_string_equal(label(sm, "error", b, sizeof(b)), "Cannot find file:\n\"FILE.TXT\"");
    assert_true(sm->value == 1.458255915e9);
    sm = sample(&s, "something_weird", 0);
    assert_true(isinf(sm->value) && sm->value > 0 && sm->ts_ms == -3982045);
    assert_true(isnan(sample(&s, "nan_value", 0)->value));
    assert_true(isinf(sample(&s, "neg_inf", 0)->value));
    metrics_prom_set_cleanup(&s);
}

static void test_text_histogram_summary(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    struct metrics_prom_error e;
    const char *in = "# TYPE h histogram\n"
                     "h_bucket{le=\"0.05\"} 24054\n"
                     "h_bucket{le=\"+Inf\"} 144320\n"
                     "h_sum 53423\n"
                     "h_count 144320\n"
                     "# TYPE rpc summary\n"
                     "rpc{quantile=\"0.5\"} 4773\n"
                     "rpc_sum 1.7560473e+07\n"
                     "rpc_count 2693\n";
    assert_int_equal(parse(&s, in, METRICS_PROM_FMT_TEXT, &e), 0);
    assert_int_equal(s.nfams, 2);
    assert_int_equal(metrics_prom_find(&s, SC_STR("h"))->nsamples, 4);
    assert_int_equal(metrics_prom_find(&s, SC_STR("rpc"))->nsamples, 3);
    metrics_prom_set_cleanup(&s);
}

static void test_openmetrics(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    struct metrics_prom_error e;
    const char *in = "# TYPE acme_http_router_request_seconds summary\n"
                     "# UNIT acme_http_router_request_seconds seconds\n"
                     "# HELP acme_http_router_request_seconds Latency \\\"quoted\\\".\n"
                     "acme_http_router_request_seconds_sum{path=\"/api/v1\"} 9036.32\n"
                     "acme_http_router_request_seconds_count{path=\"/api/v1\"} 807283.0\n"
                     "acme_http_router_request_seconds_created{path=\"/api/v1\"} 1605281325.0\n"
                     "# TYPE foo counter\n"
                     "foo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n"
                     "foo_created 1520430000.123\n"
                     "# TYPE build info\n"
                     "build_info{version=\"1.0\"} 1\n"
                     "# EOF\n";
    assert_int_equal(parse(&s, in, METRICS_PROM_FMT_OPENMETRICS, &e), 0);
    const struct metrics_prom_family *f =
        metrics_prom_find(&s, SC_STR("acme_http_router_request_seconds"));
    assert_true(sc_str_eq(f->unit, SC_STR("seconds")));
    assert_true(sc_str_eq(f->help, SC_STR("Latency \"quoted\".")));
    const struct metrics_prom_sample *sm = sample(&s, "foo", 0);
    assert_true(sm->value == 17 && sm->has_ts && sm->ts_ms == 1520879607789);

    /* Rendered as 0.0.4: foo becomes foo_total, _created samples and info metadata go. */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    assert_int_equal(metrics_prom_render(&s, METRICS_PROM_FMT_TEXT, &b), 0);
    const char *text = sc_buf_cstr(&b);
    assert_non_null(strstr(text, "# TYPE foo_total counter\nfoo_total 17 1520879607789\n"));
    assert_null(strstr(text, "foo_created"));
    assert_null(strstr(text, "# EOF"));
    struct metrics_prom_set t;
    assert_int_equal(parse(&t, text, METRICS_PROM_FMT_TEXT, &e), 0);
    metrics_prom_set_cleanup(&t);

    /* And back to OpenMetrics it parses to the same samples. */
    sc_buf_reset(&b);
    assert_int_equal(metrics_prom_render(&s, METRICS_PROM_FMT_OPENMETRICS, &b), 0);
    assert_int_equal(parse(&t, sc_buf_cstr(&b), METRICS_PROM_FMT_OPENMETRICS, &e), 0);
    assert_int_equal(t.nsamples, s.nsamples);
    metrics_prom_set_cleanup(&t);
    sc_buf_cleanup(&b);
    metrics_prom_set_cleanup(&s);
}

static void test_text_counter_as_openmetrics(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    struct metrics_prom_error e;
    assert_int_equal(parse(&s,
                           "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\n"
                           "# TYPE plain counter\nplain 1\n",
                           METRICS_PROM_FMT_TEXT, &e),
                     0);
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    assert_int_equal(metrics_prom_render(&s, METRICS_PROM_FMT_OPENMETRICS, &b), 0);
    assert_string_equal(sc_buf_cstr(&b), "# HELP x Things.\n# TYPE x counter\nx_total{a=\"1\"} 3\n"
                                         "# TYPE plain unknown\nplain 1\n# EOF\n");
    sc_buf_cleanup(&b);
    metrics_prom_set_cleanup(&s);
}

struct bad {
    const char *in;
    enum metrics_prom_format fmt;
    uint32_t line, col;
};

static void test_errors(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        { "a 1\n1abc 2\n", METRICS_PROM_FMT_TEXT, 2, 1 },
        { "a{b=\"c\" 1\n", METRICS_PROM_FMT_TEXT, 1, 9 },
        { "a{b=\"c\\x\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 7 },
        { "a{b=\"c\",b=\"d\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 9 },
        { "a{b=c} 1\n", METRICS_PROM_FMT_TEXT, 1, 5 },
        { "a 1x\n", METRICS_PROM_FMT_TEXT, 1, 3 },
        { "a\n", METRICS_PROM_FMT_TEXT, 1, 2 },
        { "a 1 abc\n", METRICS_PROM_FMT_TEXT, 1, 5 },
        { "a 1 2 3\n", METRICS_PROM_FMT_TEXT, 1, 7 },
        { "# TYPE a counter\n# TYPE a gauge\n", METRICS_PROM_FMT_TEXT, 2, 3 },
        { "# TYPE a blah\n", METRICS_PROM_FMT_TEXT, 1, 10 },
        { "# TYPE h histogram\nh_bucket 1\n", METRICS_PROM_FMT_TEXT, 2, 1 },
        { "# TYPE s summary\ns 1\n", METRICS_PROM_FMT_TEXT, 2, 1 },
        { "a 1\n# TYPE a gauge\n", METRICS_PROM_FMT_TEXT, 2, 3 },
        { "# HELP a bad \\t escape\n", METRICS_PROM_FMT_TEXT, 1, 14 },
        { "a{b=\"c\nd\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 7 },
        { "a{__name__=\"x\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 3 },
        { "a 1\r\n", METRICS_PROM_FMT_TEXT, 1, 3 },
        { "a 1\n", METRICS_PROM_FMT_OPENMETRICS, 2, 1 },
        { "a 1\n\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 2, 1 },
        { "# EOF\na 1\n", METRICS_PROM_FMT_OPENMETRICS, 2, 1 },
        { "a  1\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 1, 3 },
        { "# TYPE c counter\nc 1\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 2, 1 },
        { "# TYPE a_seconds gauge\n# UNIT a_seconds bytes\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS,
          2, 18 },
        { "a 1 # {x=\"y\"}\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 1, 14 },
        { "a 1\nb 1\na 2\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 3, 1 },
        { "# comment\n# EOF\n", METRICS_PROM_FMT_OPENMETRICS, 1, 3 },
        { "a{b=\"ok\",c=\"\xff\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 13 },
        { "a{b=\"\xed\xa0\x80\"} 1\n", METRICS_PROM_FMT_TEXT, 1, 6 }, /* a UTF-16 surrogate */
        /* found by fuzz_prom: suffixed names that would change family on a round trip */
        { "h_count 1\n# TYPE h histogram\nh_count 2\n", METRICS_PROM_FMT_TEXT, 3, 1 },
        { "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# HELP y y\nh_sum 3\n", METRICS_PROM_FMT_TEXT,
          4, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct metrics_prom_set s;
        struct metrics_prom_error e;
        int rc = parse(&s, cases[i].in, cases[i].fmt, &e);
        if (rc != SC_EINVAL || e.line != cases[i].line || e.col != cases[i].col) {
            fail_msg("case %zu (%s): rc %d at %u:%u (%s), want %u:%u", i, cases[i].in, rc, e.line,
                     e.col, e.msg ? e.msg : "-", cases[i].line, cases[i].col);
        }
        assert_non_null(e.msg);
        metrics_prom_set_cleanup(&s);
    }
}

/* Parses <text> with metrics_prom_stream, fed in pieces of <piece> bytes from a buffer that is
 * overwritten after each call. */
static int parse_streamed(struct metrics_prom_set *s, const char *text,
                          enum metrics_prom_format fmt, size_t piece, struct metrics_prom_error *e)
{
    metrics_prom_set_init(s);
    size_t len = strlen(text);
    struct metrics_prom_stream *st = metrics_prom_stream_new(s, fmt, NULL, len + 1);
    char *buf = sc_malloc(piece);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        memcpy(buf, text + off, n);
        rc = metrics_prom_stream_feed(st, buf, n, e);
        memset(buf, '?', n);
    }
    sc_free(buf);
    if (rc == 0) {
        rc = metrics_prom_stream_end(st, e);
    }
    metrics_prom_stream_free(st);
    return rc;
}

/* The streamed parse gives metrics_prom_parse's result at every split: samples, or the same error.
 */
static void test_stream_every_split(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        enum metrics_prom_format fmt;
    } inputs[] = {
        { "# HELP a_total Some \\ help\n.\n# TYPE a_total counter\n"
          "a_total{x=\"1\",y=\"q\\\"\"} 1 1000\na_total{x=\"2\"} 2\nb 3",
          METRICS_PROM_FMT_TEXT },
        { "# TYPE r_seconds gauge\n# UNIT r_seconds seconds\nr_seconds{le=\"x\"} 1.5\n# EOF\n",
          METRICS_PROM_FMT_OPENMETRICS },
        { "a 1\n  \nb{c=\"d\"} 2\n# TYPE b gauge\n", METRICS_PROM_FMT_TEXT },
        { "a 1\n# EOF\nb 2\n", METRICS_PROM_FMT_OPENMETRICS },
        { "a 1\n", METRICS_PROM_FMT_OPENMETRICS },
    };
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        struct metrics_prom_set want;
        struct metrics_prom_error we;
        int wrc = parse(&want, inputs[i].in, inputs[i].fmt, &we);
        for (size_t piece = 1; piece <= strlen(inputs[i].in); piece++) {
            struct metrics_prom_set got;
            struct metrics_prom_error ge;
            int rc = parse_streamed(&got, inputs[i].in, inputs[i].fmt, piece, &ge);
            assert_int_equal(rc, wrc);
            if (rc) {
                assert_int_equal(ge.line, we.line);
                assert_int_equal(ge.col, we.col);
                assert_string_equal(ge.msg, we.msg);
            } else {
                struct sc_buf a, b;
                sc_buf_init(&a, 1 << 20);
                sc_buf_init(&b, 1 << 20);
                assert_int_equal(metrics_prom_render(&want, inputs[i].fmt, &a), 0);
                assert_int_equal(metrics_prom_render(&got, inputs[i].fmt, &b), 0);
                assert_int_equal(a.len, b.len);
                assert_memory_equal(a.p, b.p, a.len);
                sc_buf_cleanup(&a);
                sc_buf_cleanup(&b);
            }
            metrics_prom_set_cleanup(&got);
        }
        metrics_prom_set_cleanup(&want);
    }
    /* A line longer than the stream allows is refused, not buffered without end. */
    struct metrics_prom_set s;
    metrics_prom_set_init(&s);
    struct metrics_prom_stream *st = metrics_prom_stream_new(&s, METRICS_PROM_FMT_TEXT, NULL, 8);
    struct metrics_prom_error e;
    assert_int_equal(metrics_prom_stream_feed(st, "a 1\nbbbbbbbbbbbb 2\n", 18, &e), SC_ELIMIT);
    assert_int_equal(e.line, 2);
    assert_int_equal(metrics_prom_stream_end(st, &e), SC_ELIMIT);
    metrics_prom_stream_free(st);
    metrics_prom_set_cleanup(&s);
}

static void test_escape_round_trip(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    metrics_prom_set_init(&s);
    static const char *const values[] = { "",
                                          "plain",
                                          "back\\slash",
                                          "quo\"te",
                                          "new\nline",
                                          "\\n literal",
                                          "utf-8 \xc3\xa9\xe2\x82\xac",
                                          "{,}=" };
    struct metrics_prom_family *f = metrics_prom_family_get(&s, SC_STR("esc"), METRICS_PROM_GAUGE);
    f->has_type = true;
    f->has_help = true;
    f->help = SC_STR("help with \\ and \n newline");
    for (size_t i = 0; i < SC_ARRAY_LEN(values); i++) {
        struct metrics_prom_sample *sm = metrics_prom_sample_add(&s, f);
        sm->name = SC_STR("esc");
        sm->labels = metrics_prom_alloc(&s, sizeof(struct metrics_prom_label));
        sm->labels[0].name = SC_STR("v");
        sm->labels[0].value = sc_str_c(values[i]);
        sm->nlabels = 1;
        sm->value = (double)i + 0.1;
    }
    for (int fmt = 0; fmt < 2; fmt++) {
        struct sc_buf b;
        sc_buf_init(&b, 1 << 20);
        assert_int_equal(metrics_prom_render(&s, (enum metrics_prom_format)fmt, &b), 0);
        struct metrics_prom_set t;
        struct metrics_prom_error e;
        assert_int_equal(parse(&t, sc_buf_cstr(&b), (enum metrics_prom_format)fmt, &e), 0);
        const struct metrics_prom_family *g = metrics_prom_find(&t, SC_STR("esc"));
        assert_true(sc_str_eq(g->help, f->help));
        for (size_t i = 0; i < SC_ARRAY_LEN(values); i++) {
            assert_true(sc_str_eq(g->samples[i].labels[0].value, sc_str_c(values[i])));
            assert_true(g->samples[i].value == (double)i + 0.1);
        }
        metrics_prom_set_cleanup(&t);
        sc_buf_cleanup(&b);
    }
    metrics_prom_set_cleanup(&s);
}

static void test_values(void **state)
{
    (void)state;
    static const double vals[] = { 0,
                                   -0.0,
                                   1,
                                   -1,
                                   0.1,
                                   1e-300,
                                   1.7976931348623157e308,
                                   123456789012345678.0,
                                   3.14159265358979,
                                   1e15,
                                   -2.5e-7 };
    for (size_t i = 0; i < SC_ARRAY_LEN(vals); i++) {
        struct sc_buf b;
        sc_buf_init(&b, 256);
        sc_buf_append_cstr(&b, "v ");
        sc_prom_value(&b, vals[i]);
        sc_buf_append_cstr(&b, "\n");
        struct metrics_prom_set s;
        struct metrics_prom_error e;
        assert_int_equal(parse(&s, sc_buf_cstr(&b), METRICS_PROM_FMT_TEXT, &e), 0);
        assert_true(sample(&s, "v", 0)->value == vals[i]);
        metrics_prom_set_cleanup(&s);
        sc_buf_cleanup(&b);
    }
}

static void test_limits(void **state)
{
    (void)state;
    struct metrics_prom_limits lim = { .max_samples = 2, .max_labels = 2 };
    struct metrics_prom_set s;
    struct metrics_prom_error e;
    metrics_prom_set_init(&s);
    const char *in = "a 1\nb 1\nc 1\n";
    assert_int_equal(metrics_prom_parse(&s, in, strlen(in), METRICS_PROM_FMT_TEXT, &lim, &e),
                     SC_ELIMIT);
    assert_int_equal(e.line, 3);
    metrics_prom_set_cleanup(&s);
    metrics_prom_set_init(&s);
    in = "a{x=\"1\",y=\"2\",z=\"3\"} 1\n";
    assert_int_equal(metrics_prom_parse(&s, in, strlen(in), METRICS_PROM_FMT_TEXT, &lim, &e),
                     SC_EINVAL);
    metrics_prom_set_cleanup(&s);
}

static void test_guard_page(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    static const char *const ins[] = { "a{b=\"c\"} 1", "a{b=\"c\\", "# HELP a x\\",
                                       "a 1 # {",      "# TYPE a",  "a 1e" };
    for (size_t i = 0; i < SC_ARRAY_LEN(ins); i++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            size_t n = strlen(ins[i]);
            char *p = m + pg - n;
            memcpy(p, ins[i], n);
            struct metrics_prom_set s;
            struct metrics_prom_error e;
            metrics_prom_set_init(&s);
            (void)metrics_prom_parse(&s, p, n, (enum metrics_prom_format)fmt, NULL, &e);
            /* every prefix too */
            for (size_t k = 0; k < n; k++) {
                metrics_prom_set_cleanup(&s);
                metrics_prom_set_init(&s);
                (void)metrics_prom_parse(&s, m + pg - k, k, (enum metrics_prom_format)fmt, NULL,
                                         &e);
            }
            metrics_prom_set_cleanup(&s);
        }
    }
    munmap(m, (size_t)pg * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_basic),  cmocka_unit_test(test_text_histogram_summary),
        cmocka_unit_test(test_openmetrics), cmocka_unit_test(test_text_counter_as_openmetrics),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_escape_round_trip),
        cmocka_unit_test(test_values),      cmocka_unit_test(test_limits),
        cmocka_unit_test(test_guard_page),  cmocka_unit_test(test_stream_every_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
