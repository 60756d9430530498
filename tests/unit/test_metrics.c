// SPDX-License-Identifier: Apache-2.0
// Unit tests for the metrics registry: the exact exposition text of each metric type, escaping,
// the series cap, removal, NULL-safety, exact totals under concurrent updates, the process_*
// metrics, misuse aborting (in a forked child), and promtool accepting a realistic render.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#if defined(__SANITIZE_ADDRESS__)
#define CHURN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHURN_ASAN 1
#endif
#endif
#ifdef CHURN_ASAN
/* From the AddressSanitizer runtime (its header is not always installed). */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Renders <r> into <b> (reset first) and returns the NUL-terminated text. */
static const char *render(struct sc_metrics *r, struct sc_buf *b)
{
    sc_buf_reset(b);
    assert_int_equal(sc_metrics_render(r, b), 0);
    return sc_buf_cstr(b);
}

/* Finds the sample line that starts with <prefix> followed by a space; sets <*v> to its value. */
static bool find_sample(const char *text, const char *prefix, double *v)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return true;
        }
    }
    return false;
}

/* Returns the value of the sample <prefix>, failing the test when there is none. */
static double sample(const char *text, const char *prefix)
{
    double v = 0;
    if (!find_sample(text, prefix, &v)) {
        fail_msg("no sample %s in:\n%s", prefix, text);
    }
    return v;
}

static void test_counter_labels(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    const char *labels[] = { "method", "code", NULL };
    struct sc_metric_family *f = sc_metrics_family(r, SC_METRIC_COUNTER, "http_requests_total",
                                                   "Requests handled.", labels, NULL, 0);
    struct sc_metric *get200 = sc_metrics_get(f, (const char *[]){ "GET", "200" });
    struct sc_metric *post500 = sc_metrics_get(f, (const char *[]){ "POST", "500" });
    assert_non_null(get200);
    assert_ptr_equal(sc_metrics_get(f, (const char *[]){ "GET", "200" }), get200);
    assert_ptr_not_equal(get200, post500);
    sc_metrics_counter_add(get200, 41);
    sc_metrics_counter_inc(get200);
    sc_metrics_counter_inc(post500);
    sc_metrics_counter_add(sc_metrics_counter(r, "sidecar_reloads_total", "Configuration reloads."),
                           18446744073709551615ULL);
    /* Registering again with the same shape hands back the same family and series. */
    assert_ptr_equal(sc_metrics_family(r, SC_METRIC_COUNTER, "http_requests_total", "other help",
                                       labels, NULL, 0),
                     f);
    assert_ptr_equal(sc_metrics_counter(r, "sidecar_reloads_total", "x"),
                     sc_metrics_counter(r, "sidecar_reloads_total", "y"));
    assert_true(sc_metrics_value(get200) == 42.0);

    assert_string_equal(render(r, &b), "# HELP http_requests_total Requests handled.\n"
                                       "# TYPE http_requests_total counter\n"
                                       "http_requests_total{method=\"GET\",code=\"200\"} 42\n"
                                       "http_requests_total{method=\"POST\",code=\"500\"} 1\n"
                                       "# HELP sidecar_reloads_total Configuration reloads.\n"
                                       "# TYPE sidecar_reloads_total counter\n"
                                       "sidecar_reloads_total 18446744073709551615\n");
    /* A family without series renders nothing. */
    sc_metrics_family(r, SC_METRIC_GAUGE, "empty_gauge", "Nothing yet.", NULL, NULL, 0);
    const char *text = render(r, &b);
    assert_string_equal(text + b.len - 43, "sidecar_reloads_total 18446744073709551615\n");
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_gauge_values(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    struct sc_metric *t = sc_metrics_gauge(r, "room_temperature_celsius", "Temperature.");
    sc_metrics_gauge_set(t, 1.5);
    sc_metrics_gauge_add(t, -5.0);
    assert_true(sc_metrics_value(t) == -3.5);

    const char *labels[] = { "case", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(r, SC_METRIC_GAUGE, "test_value", "Formatting cases.", labels, NULL, 0);
    struct {
        const char *label;
        double v;
    } cases[] = {
        { "zero", 0.0 },      { "tenth", 0.1 },      { "sum", 0.1 + 0.2 },   { "million", 1e6 },
        { "big", 1e20 },      { "tiny", 1e-7 },      { "third", 1.0 / 3.0 }, { "neg", -2.75 },
        { "pinf", INFINITY }, { "ninf", -INFINITY }, { "nan", NAN },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sc_metrics_gauge_set(sc_metrics_get(f, (const char *[]){ cases[i].label }), cases[i].v);
    }
    assert_string_equal(render(r, &b), "# HELP room_temperature_celsius Temperature.\n"
                                       "# TYPE room_temperature_celsius gauge\n"
                                       "room_temperature_celsius -3.5\n"
                                       "# HELP test_value Formatting cases.\n"
                                       "# TYPE test_value gauge\n"
                                       "test_value{case=\"zero\"} 0\n"
                                       "test_value{case=\"tenth\"} 0.1\n"
                                       "test_value{case=\"sum\"} 0.30000000000000004\n"
                                       "test_value{case=\"million\"} 1000000\n"
                                       "test_value{case=\"big\"} 1e+20\n"
                                       "test_value{case=\"tiny\"} 1e-07\n"
                                       "test_value{case=\"third\"} 0.3333333333333333\n"
                                       "test_value{case=\"neg\"} -2.75\n"
                                       "test_value{case=\"pinf\"} +Inf\n"
                                       "test_value{case=\"ninf\"} -Inf\n"
                                       "test_value{case=\"nan\"} NaN\n");
    /* Every finite value reads back exactly. */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "test_value{case=\"%s\"}", cases[i].label);
        double got = sample(b.p, prefix);
        if (isnan(cases[i].v)) {
            assert_true(isnan(got));
        } else {
            assert_true(got == cases[i].v);
        }
    }
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_histogram(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    struct sc_metric_family *lat = sc_metrics_family(r, SC_METRIC_HISTOGRAM, "request_seconds",
                                                     "Request latency.", NULL, NULL, 0);
    struct sc_metric *h = sc_metrics_get(lat, NULL);
    sc_metrics_histogram_observe(h, 0.00003);
    sc_metrics_histogram_observe(h, 0.0001); /* a bound is inclusive */
    sc_metrics_histogram_observe(h, 0.003);
    sc_metrics_histogram_observe(h, 0.75);
    sc_metrics_histogram_observe(h, 42);
    assert_true(sc_metrics_value(h) == 5.0);

    const char *labels[] = { "route", NULL };
    const double bounds[] = { 0.5, 1, 2.5, INFINITY }; /* a trailing +Inf is implied anyway */
    struct sc_metric_family *sz =
        sc_metrics_family(r, SC_METRIC_HISTOGRAM, "batch_size_ratio", "Custom buckets.", labels,
                          bounds, sizeof(bounds) / sizeof(bounds[0]));
    struct sc_metric *a = sc_metrics_get(sz, (const char *[]){ "/a" });
    sc_metrics_histogram_observe(a, 0.5);
    sc_metrics_histogram_observe(a, 0.25);
    sc_metrics_histogram_observe(a, 2);
    sc_metrics_histogram_observe(a, 3);
    sc_metrics_get(sz, (const char *[]){ "/b" }); /* an empty histogram still renders */

    const double odd[] = { 1e-5, 100000, 1e6, 1234567 };
    sc_metrics_histogram_observe(
        sc_metrics_get(sc_metrics_family(r, SC_METRIC_HISTOGRAM, "odd_bytes", "Bounds formatting.",
                                         NULL, odd, 4),
                       NULL),
        1e6);

    assert_string_equal(render(r, &b), "# HELP request_seconds Request latency.\n"
                                       "# TYPE request_seconds histogram\n"
                                       "request_seconds_bucket{le=\"0.0001\"} 2\n"
                                       "request_seconds_bucket{le=\"0.00025\"} 2\n"
                                       "request_seconds_bucket{le=\"0.0005\"} 2\n"
                                       "request_seconds_bucket{le=\"0.001\"} 2\n"
                                       "request_seconds_bucket{le=\"0.0025\"} 2\n"
                                       "request_seconds_bucket{le=\"0.005\"} 3\n"
                                       "request_seconds_bucket{le=\"0.01\"} 3\n"
                                       "request_seconds_bucket{le=\"0.025\"} 3\n"
                                       "request_seconds_bucket{le=\"0.05\"} 3\n"
                                       "request_seconds_bucket{le=\"0.1\"} 3\n"
                                       "request_seconds_bucket{le=\"0.25\"} 3\n"
                                       "request_seconds_bucket{le=\"0.5\"} 3\n"
                                       "request_seconds_bucket{le=\"1\"} 4\n"
                                       "request_seconds_bucket{le=\"2.5\"} 4\n"
                                       "request_seconds_bucket{le=\"5\"} 4\n"
                                       "request_seconds_bucket{le=\"10\"} 4\n"
                                       "request_seconds_bucket{le=\"+Inf\"} 5\n"
                                       "request_seconds_sum 42.75313\n"
                                       "request_seconds_count 5\n"
                                       "# HELP batch_size_ratio Custom buckets.\n"
                                       "# TYPE batch_size_ratio histogram\n"
                                       "batch_size_ratio_bucket{route=\"/a\",le=\"0.5\"} 2\n"
                                       "batch_size_ratio_bucket{route=\"/a\",le=\"1\"} 2\n"
                                       "batch_size_ratio_bucket{route=\"/a\",le=\"2.5\"} 3\n"
                                       "batch_size_ratio_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
                                       "batch_size_ratio_sum{route=\"/a\"} 5.75\n"
                                       "batch_size_ratio_count{route=\"/a\"} 4\n"
                                       "batch_size_ratio_bucket{route=\"/b\",le=\"0.5\"} 0\n"
                                       "batch_size_ratio_bucket{route=\"/b\",le=\"1\"} 0\n"
                                       "batch_size_ratio_bucket{route=\"/b\",le=\"2.5\"} 0\n"
                                       "batch_size_ratio_bucket{route=\"/b\",le=\"+Inf\"} 0\n"
                                       "batch_size_ratio_sum{route=\"/b\"} 0\n"
                                       "batch_size_ratio_count{route=\"/b\"} 0\n"
                                       "# HELP odd_bytes Bounds formatting.\n"
                                       "# TYPE odd_bytes histogram\n"
                                       "odd_bytes_bucket{le=\"1e-05\"} 0\n"
                                       "odd_bytes_bucket{le=\"100000\"} 0\n"
                                       "odd_bytes_bucket{le=\"1e+06\"} 1\n"
                                       "odd_bytes_bucket{le=\"1.234567e+06\"} 1\n"
                                       "odd_bytes_bucket{le=\"+Inf\"} 1\n"
                                       "odd_bytes_sum 1000000\n"
                                       "odd_bytes_count 1\n");
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

/* Undoes label-value escaping the way a Prometheus parser does. */
static void unescape(const char *s, size_t n, char *out)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            i++;
            out[j++] = s[i] == 'n' ? '\n' : s[i];
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
}

static void test_escaping(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    const char *labels[] = { "path", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(r, SC_METRIC_COUNTER, "escape_total",
                          "Help with a \\ backslash,\na newline and \"quotes\".", labels, NULL, 0);
    const char *nasty = "C:\\dir\\\"quoted\"\nnext \xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80";
    sc_metrics_counter_inc(sc_metrics_get(f, (const char *[]){ nasty }));
    sc_metrics_counter_inc(sc_metrics_get(f, (const char *[]){ "" }));
    assert_string_equal(render(r, &b),
                        "# HELP escape_total Help with a \\\\ backslash,\\na newline and "
                        "\"quotes\".\n"
                        "# TYPE escape_total counter\n"
                        "escape_total{path=\"C:\\\\dir\\\\\\\"quoted\\\"\\nnext "
                        "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80\"} 1\n"
                        "escape_total{path=\"\"} 1\n");

    /* Round trip: what a parser reads back is the value we were given. */
    const char *start = strstr(b.p, "{path=\"") + 7;
    const char *end = strstr(start, "\"} 1\n");
    char back[256];
    unescape(start, (size_t)(end - start), back);
    assert_string_equal(back, nasty);
    const char *help = strstr(b.p, "# HELP escape_total ") + 20;
    unescape(help, (size_t)(strchr(help, '\n') - help), back);
    assert_string_equal(back, "Help with a \\ backslash,\na newline and \"quotes\".");

    /* Invalid UTF-8 (a stray byte, a truncated sequence, an overlong '/', a surrogate) would make
     * the whole scrape unparsable; each bad byte becomes U+FFFD. Lookup still uses the raw
     * bytes. */
    struct sc_metrics *r2 = sc_metrics_new();
    struct sc_metric_family *g =
        sc_metrics_family(r2, SC_METRIC_GAUGE, "utf8_value", "UTF-8.", labels, NULL, 0);
    struct sc_metric *m = sc_metrics_get(g, (const char *[]){ "a\xff"
                                                              "b\xe2\x9c"
                                                              "c\xc0\xaf\xed\xa0\x80" });
    assert_ptr_equal(sc_metrics_get(g, (const char *[]){ "a\xff"
                                                         "b\xe2\x9c"
                                                         "c\xc0\xaf\xed\xa0\x80" }),
                     m);
    sc_metrics_gauge_set(m, 1);
    assert_string_equal(render(r2, &b), "# HELP utf8_value UTF-8.\n"
                                        "# TYPE utf8_value gauge\n"
                                        "utf8_value{path=\"a\xef\xbf\xbd"
                                        "b\xef\xbf\xbd\xef\xbf\xbd"
                                        "c\xef\xbf\xbd\xef\xbf\xbd"
                                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"} 1\n");
    sc_metrics_free(r2);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_series_cap(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 64 << 20);
    const char *labels[] = { "peer", NULL };
    struct sc_metric_family *f = sc_metrics_family(r, SC_METRIC_COUNTER, "peer_bytes_total",
                                                   "Bytes per peer.", labels, NULL, 0);
    char id[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "10.0.%d.%d", i / 256, i % 256);
        struct sc_metric *m = sc_metrics_get(f, (const char *[]){ id });
        assert_non_null(m);
        sc_metrics_counter_add(m, (uint64_t)i);
    }
    /* Lookups of existing series still work at the cap. */
    struct sc_metric *first = sc_metrics_get(f, (const char *[]){ "10.0.0.0" });
    assert_non_null(first);
    assert_non_null(sc_metrics_get(f, (const char *[]){ "10.0.39.15" }));

    enum sc_log_level saved = sc_log_min_level;
    sc_log_setup(SC_LOG_ERROR, SC_LOG_TEXT, NULL); /* the cap's one warning is expected */
    assert_null(sc_metrics_get(f, (const char *[]){ "192.168.0.1" }));
    assert_null(sc_metrics_get(f, (const char *[]){ "192.168.0.2" }));
    sc_log_setup(saved, SC_LOG_TEXT, NULL);
    sc_metrics_counter_inc(NULL); /* what a caller does with the NULL */

    const char *text = render(r, &b);
    assert_true(sample(text, "sidecar_metrics_series_dropped_total") == 2.0);
    assert_true(sample(text, "peer_bytes_total{peer=\"10.0.39.15\"}") == 9999.0);
    assert_null(strstr(text, "192.168"));

    /* Removing one makes room for one. */
    sc_metrics_remove(f, (const char *[]){ "10.0.0.7" });
    assert_non_null(sc_metrics_get(f, (const char *[]){ "192.168.0.1" }));
    assert_null(sc_metrics_get(f, (const char *[]){ "192.168.0.3" }));
    text = render(r, &b);
    assert_true(sample(text, "sidecar_metrics_series_dropped_total") == 3.0);
    assert_true(sample(text, "peer_bytes_total{peer=\"192.168.0.1\"}") == 0.0);

    /* Each family has its own cap. */
    assert_non_null(sc_metrics_counter(r, "other_total", "Another family."));
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_remove(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    const char *labels[] = { "endpoint", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(r, SC_METRIC_GAUGE, "endpoint_up", "Endpoint health.", labels, NULL, 0);
    struct sc_metric *a = sc_metrics_get(f, (const char *[]){ "a" });
    struct sc_metric *bb = sc_metrics_get(f, (const char *[]){ "b" });
    struct sc_metric *c = sc_metrics_get(f, (const char *[]){ "c" });
    sc_metrics_gauge_set(a, 1);
    sc_metrics_gauge_set(bb, 2);
    sc_metrics_gauge_set(c, 3);
    sc_metrics_remove(f, (const char *[]){ "b" });
    sc_metrics_remove(f, (const char *[]){ "b" });       /* twice is harmless */
    sc_metrics_remove(f, (const char *[]){ "missing" }); /* so is an unknown one */
    sc_metrics_gauge_set(bb, 7); /* a stale pointer stays valid, it just no longer renders */
    assert_string_equal(render(r, &b), "# HELP endpoint_up Endpoint health.\n"
                                       "# TYPE endpoint_up gauge\n"
                                       "endpoint_up{endpoint=\"a\"} 1\n"
                                       "endpoint_up{endpoint=\"c\"} 3\n");
    /* Asked for again, it comes back at zero, last in creation order. */
    assert_ptr_equal(sc_metrics_get(f, (const char *[]){ "b" }), bb);
    assert_true(sc_metrics_value(bb) == 0.0);
    assert_string_equal(render(r, &b), "# HELP endpoint_up Endpoint health.\n"
                                       "# TYPE endpoint_up gauge\n"
                                       "endpoint_up{endpoint=\"a\"} 1\n"
                                       "endpoint_up{endpoint=\"c\"} 3\n"
                                       "endpoint_up{endpoint=\"b\"} 0\n");
    /* A family whose series are all gone renders nothing. */
    sc_metrics_remove(f, (const char *[]){ "a" });
    sc_metrics_remove(f, (const char *[]){ "b" });
    sc_metrics_remove(f, (const char *[]){ "c" });
    assert_string_equal(render(r, &b), "");

    struct sc_metric *h = sc_metrics_get(
        sc_metrics_family(r, SC_METRIC_HISTOGRAM, "gone_seconds", "Removed.", NULL, NULL, 0), NULL);
    sc_metrics_histogram_observe(h, 1);
    sc_metrics_remove(sc_metrics_family(r, SC_METRIC_HISTOGRAM, "gone_seconds", "", NULL, NULL, 0),
                      NULL);
    sc_metrics_histogram_observe(h, 1);
    assert_string_equal(render(r, &b), "");
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_null_safety(void **state)
{
    sc_metrics_counter_add(NULL, 1);
    sc_metrics_counter_inc(NULL);
    sc_metrics_gauge_set(NULL, 1);
    sc_metrics_gauge_add(NULL, 1);
    sc_metrics_histogram_observe(NULL, 1);
    assert_true(sc_metrics_value(NULL) == 0.0);
    assert_null(sc_metrics_get(NULL, NULL));
    sc_metrics_remove(NULL, NULL);
    sc_metrics_free(NULL);
    sc_metrics_on_collect(NULL, NULL, NULL);
    sc_metrics_add_process(NULL);
    /* Without a registry, code still runs: every metric is a no-op. Names are still checked. */
    assert_null(sc_metrics_counter(NULL, "orphan_total", "No registry."));
    assert_null(sc_metrics_family(NULL, SC_METRIC_HISTOGRAM, "orphan_seconds", "", NULL, NULL, 0));
    struct sc_buf b;
    sc_buf_init(&b, 1024);
    assert_int_equal(sc_metrics_render(NULL, &b), 0);
    assert_int_equal(b.len, 0);

    /* Updates of the wrong type are ignored. */
    struct sc_metrics *r = sc_metrics_new();
    struct sc_metric *c = sc_metrics_counter(r, "typed_total", "Counter.");
    struct sc_metric *g = sc_metrics_gauge(r, "typed_gauge", "Gauge.");
    sc_metrics_gauge_set(c, 5);
    sc_metrics_histogram_observe(c, 5);
    sc_metrics_counter_add(g, 5);
    sc_metrics_histogram_observe(g, 5);
    assert_true(sc_metrics_value(c) == 0.0);
    assert_true(sc_metrics_value(g) == 0.0);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_render_cap(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    sc_metrics_counter_inc(
        sc_metrics_counter(r, "some_total", "A counter with a long enough help text."));
    struct sc_buf b;
    sc_buf_init(&b, 40);
    assert_int_equal(sc_metrics_render(r, &b), SC_ETOOBIG);
    assert_true(b.len <= 40);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

struct collect_state {
    int calls[2];
    int order[4];
    int n;
    struct sc_metric *g;
};

static void on_collect_first(struct sc_metrics *r, void *arg)
{
    struct collect_state *s = arg;
    s->calls[0]++;
    s->order[s->n++ % 4] = 0;
    sc_metrics_gauge_set(s->g, s->calls[0] * 10);
}

static void on_collect_second(struct sc_metrics *r, void *arg)
{
    struct collect_state *s = arg;
    s->calls[1]++;
    s->order[s->n++ % 4] = 1;
}

static void test_collect(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    struct collect_state s = { .g = sc_metrics_gauge(r, "queue_depth", "Computed on demand.") };
    sc_metrics_on_collect(r, on_collect_first, &s);
    sc_metrics_on_collect(r, on_collect_second, &s);
    assert_string_equal(render(r, &b), "# HELP queue_depth Computed on demand.\n"
                                       "# TYPE queue_depth gauge\n"
                                       "queue_depth 10\n");
    assert_true(sample(render(r, &b), "queue_depth") == 20.0);
    assert_int_equal(s.calls[0], 2);
    assert_int_equal(s.calls[1], 2);
    assert_int_equal(s.order[0], 0);
    assert_int_equal(s.order[1], 1);
    assert_int_equal(s.order[2], 0);
    assert_int_equal(s.order[3], 1);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

#define THREADS 4
#define ITERATIONS 1000000

struct worker {
    struct sc_metric *counter;
    struct sc_metric *hist;
    struct sc_metric *gauge;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < ITERATIONS; i++) {
        sc_metrics_counter_inc(w->counter);
        /* Values exact in binary, so the sum has an exact expected total. */
        sc_metrics_histogram_observe(w->hist, (i & 1) ? 0.5 : 2.0);
        sc_metrics_gauge_add(w->gauge, (i & 1) ? 1.0 : -0.5);
    }
    return NULL;
}

/* Scrapes while the workers run. cmocka's asserts may not fire off the main thread, so this
 * returns the number of bad scrapes (failed, or a bucket above le="+Inf") for main to check. */
static void *render_main(void *arg)
{
    struct sc_metrics *r = arg;
    struct sc_buf b;
    uintptr_t bad = 0;
    sc_buf_init(&b, 1 << 20);
    for (int i = 0; i < 50; i++) {
        sc_buf_reset(&b);
        double le25 = 0, inf = 0;
        if (sc_metrics_render(r, &b) != 0 ||
            !find_sample(sc_buf_cstr(&b), "work_seconds_bucket{le=\"2.5\"}", &le25) ||
            !find_sample(sc_buf_cstr(&b), "work_seconds_bucket{le=\"+Inf\"}", &inf) || le25 > inf) {
            bad++;
        }
    }
    sc_buf_cleanup(&b);
    return (void *)bad;
}

static void test_threads(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    struct worker w = {
        .counter = sc_metrics_counter(r, "work_items_total", "Items."),
        .hist = sc_metrics_get(
            sc_metrics_family(r, SC_METRIC_HISTOGRAM, "work_seconds", "Time.", NULL, NULL, 0),
            NULL),
        .gauge = sc_metrics_gauge(r, "work_level", "Level."),
    };
    pthread_t t[THREADS + 1];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w), 0);
    }
    assert_int_equal(pthread_create(&t[THREADS], NULL, render_main, r), 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    void *bad;
    assert_int_equal(pthread_join(t[THREADS], &bad), 0);
    assert_int_equal((uintptr_t)bad, 0);
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    const char *text = render(r, &b);
    assert_true(sample(text, "work_items_total") == (double)THREADS * ITERATIONS);
    assert_true(sample(text, "work_seconds_count") == (double)THREADS * ITERATIONS);
    assert_true(sample(text, "work_seconds_bucket{le=\"0.5\"}") ==
                (double)THREADS * ITERATIONS / 2);
    assert_true(sample(text, "work_seconds_bucket{le=\"1\"}") == (double)THREADS * ITERATIONS / 2);
    assert_true(sample(text, "work_seconds_bucket{le=\"2.5\"}") == (double)THREADS * ITERATIONS);
    assert_true(sample(text, "work_seconds_bucket{le=\"+Inf\"}") == (double)THREADS * ITERATIONS);
    assert_true(sample(text, "work_seconds_sum") == (double)THREADS * ITERATIONS / 2 * 2.5);
    assert_true(sample(text, "work_level") == (double)THREADS * ITERATIONS / 2 * 0.5);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

static void test_process(void **state)
{
    struct sc_metrics *r = sc_metrics_new();
    sc_metrics_add_process(r);
    sc_metrics_add_process(r); /* idempotent */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    const char *text = render(r, &b);
    assert_non_null(strstr(text, "# HELP process_resident_memory_bytes Resident memory size in "
                                 "bytes.\n# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(text, "# HELP process_cpu_seconds_total Total user and system CPU time "
                                 "spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# HELP process_start_time_seconds Start time of the process "
                                 "since unix epoch in seconds.\n"));
    double rss = sample(text, "process_resident_memory_bytes");
    double vsz = sample(text, "process_virtual_memory_bytes");
    assert_true(rss > 0);
    assert_true(vsz >= rss);
    double fds = sample(text, "process_open_fds");
    assert_true(fds >= 3); /* stdin, stdout, stderr */
    FILE *extra = tmpfile();
    assert_non_null(extra);
    assert_true(sample(render(r, &b), "process_open_fds") == fds + 1);
    fclose(extra);
    text = render(r, &b);
    assert_true(sample(text, "process_max_fds") >= fds);
    assert_true(sample(text, "process_cpu_seconds_total") >= 0);
    double start = sample(text, "process_start_time_seconds");
    double now = (double)time(NULL);
    /* Boot time has one-second resolution. */
    assert_true(start > now - 3600 && start <= now + 2);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

/* Runs <fn> in a child and asserts that it aborted (its message goes to /dev/null). */
static void expect_abort(void (*fn)(struct sc_metrics *))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) {
            _exit(2);
        }
        struct sc_metrics *r = sc_metrics_new();
        fn(r);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void bad_metric_name(struct sc_metrics *r)
{
    sc_metrics_counter(r, "9lives_total", "Starts with a digit.");
}

static void bad_metric_char(struct sc_metrics *r)
{
    sc_metrics_gauge(r, "has-dash", "Dash.");
}

static void bad_label_name(struct sc_metrics *r)
{
    const char *labels[] = { "ok", "a:b", NULL };
    sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", labels, NULL, 0);
}

static void reserved_label_name(struct sc_metrics *r)
{
    const char *labels[] = { "__name", NULL };
    sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", labels, NULL, 0);
}

static void duplicate_label(struct sc_metrics *r)
{
    const char *labels[] = { "a", "a", NULL };
    sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", labels, NULL, 0);
}

static void histogram_le_label(struct sc_metrics *r)
{
    const char *labels[] = { "le", NULL };
    sc_metrics_family(r, SC_METRIC_HISTOGRAM, "x_seconds", "", labels, NULL, 0);
}

static void unsorted_buckets(struct sc_metrics *r)
{
    const double bounds[] = { 1, 0.5 };
    sc_metrics_family(r, SC_METRIC_HISTOGRAM, "x_seconds", "", NULL, bounds, 2);
}

static void clash_type(struct sc_metrics *r)
{
    sc_metrics_counter(r, "x_total", "");
    sc_metrics_gauge(r, "x_total", "");
}

static void clash_labels(struct sc_metrics *r)
{
    const char *one[] = { "a", NULL };
    const char *two[] = { "b", NULL };
    sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", one, NULL, 0);
    sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", two, NULL, 0);
}

static void clash_buckets(struct sc_metrics *r)
{
    const double bounds[] = { 1, 2 };
    sc_metrics_family(r, SC_METRIC_HISTOGRAM, "x_seconds", "", NULL, NULL, 0);
    sc_metrics_family(r, SC_METRIC_HISTOGRAM, "x_seconds", "", NULL, bounds, 2);
}

static void clash_own_counter(struct sc_metrics *r)
{
    sc_metrics_gauge(r, "sidecar_metrics_series_dropped_total", "");
}

static void get_without_values(struct sc_metrics *r)
{
    const char *labels[] = { "a", NULL };
    sc_metrics_get(sc_metrics_family(r, SC_METRIC_COUNTER, "x_total", "", labels, NULL, 0), NULL);
}

static void test_misuse_aborts(void **state)
{
    expect_abort(bad_metric_name);
    expect_abort(bad_metric_char);
    expect_abort(bad_label_name);
    expect_abort(reserved_label_name);
    expect_abort(duplicate_label);
    expect_abort(histogram_le_label);
    expect_abort(unsorted_buckets);
    expect_abort(clash_type);
    expect_abort(clash_labels);
    expect_abort(clash_buckets);
    expect_abort(clash_own_counter);
    expect_abort(get_without_values);

    /* Valid edge cases do not abort. */
    struct sc_metrics *r = sc_metrics_new();
    const char *labels[] = { "_private", "x9", NULL };
    assert_non_null(
        sc_metrics_family(r, SC_METRIC_COUNTER, ":colon:name_total", "", labels, NULL, 0));
    assert_non_null(sc_metrics_family(r, SC_METRIC_GAUGE, "_x", "", NULL, NULL, 0));
    sc_metrics_free(r);
}

/* A registry shaped like the proxy's: labelled counters, gauges, histograms, process metrics. */
static struct sc_metrics *realistic_registry(void)
{
    struct sc_metrics *r = sc_metrics_new();
    sc_metrics_add_process(r);
    const char *req_labels[] = { "listener", "method", "code", NULL };
    struct sc_metric_family *req = sc_metrics_family(
        r, SC_METRIC_COUNTER, "sidecar_proxy_requests_total",
        "HTTP requests proxied, by listener, method and status code.", req_labels, NULL, 0);
    sc_metrics_counter_add(sc_metrics_get(req, (const char *[]){ "outbound", "GET", "200" }), 1234);
    sc_metrics_counter_add(sc_metrics_get(req, (const char *[]){ "outbound", "POST", "503" }), 7);
    sc_metrics_counter_add(sc_metrics_get(req, (const char *[]){ "inbound", "GET", "200" }), 99);
    const char *up_labels[] = { "upstream", NULL };
    struct sc_metric_family *up = sc_metrics_family(
        r, SC_METRIC_GAUGE, "sidecar_upstream_healthy",
        "Whether the upstream passed its last health check (1) or not (0).", up_labels, NULL, 0);
    sc_metrics_gauge_set(sc_metrics_get(up, (const char *[]){ "127.0.0.1:8080" }), 1);
    sc_metrics_gauge_set(sc_metrics_get(up, (const char *[]){ "weird \"name\"\\with\nnewline" }),
                         0);
    sc_metrics_gauge_set(
        sc_metrics_gauge(r, "sidecar_proxy_connections", "Open client connections."), 12);
    sc_metrics_gauge_set(
        sc_metrics_gauge(r, "sidecar_temperature_ratio", "Odd values.\nSecond line."), NAN);
    const char *lat_labels[] = { "listener", NULL };
    struct sc_metric_family *lat =
        sc_metrics_family(r, SC_METRIC_HISTOGRAM, "sidecar_proxy_added_latency_seconds",
                          "Latency the proxy adds on top of the upstream's.", lat_labels, NULL, 0);
    struct sc_metric *o = sc_metrics_get(lat, (const char *[]){ "outbound" });
    for (int i = 0; i < 1000; i++) {
        sc_metrics_histogram_observe(o, 0.00001 * (i % 50) + 0.00002);
    }
    sc_metrics_histogram_observe(o, 12);
    sc_metrics_get(lat, (const char *[]){ "inbound" });
    const double sizes[] = { 1024, 16384, 131072, 1048576 };
    sc_metrics_histogram_observe(
        sc_metrics_get(sc_metrics_family(r, SC_METRIC_HISTOGRAM,
                                         "sidecar_proxy_response_size_bytes",
                                         "Response body sizes.", NULL, sizes, 4),
                       NULL),
        5000);
    return r;
}

static void test_promtool(void **state)
{
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0) {
        print_message("skipped: %s is not installed\n", promtool);
        skip();
    }
    struct sc_metrics *r = realistic_registry();
    /* Also a drop, so the registry's own counter is checked too. */
    const char *l[] = { "n", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(r, SC_METRIC_COUNTER, "sidecar_cap_test_total", "Cap test.", l, NULL, 0);
    char id[16];
    enum sc_log_level saved = sc_log_min_level;
    sc_log_setup(SC_LOG_ERROR, SC_LOG_TEXT, NULL);
    for (int i = 0; i <= 10000; i++) {
        snprintf(id, sizeof(id), "%d", i);
        sc_metrics_get(f, (const char *[]){ id });
    }
    sc_log_setup(saved, SC_LOG_TEXT, NULL);

    struct sc_buf b;
    sc_buf_init(&b, 16 << 20);
    const char *text = render(r, &b);
    assert_true(sample(text, "sidecar_metrics_series_dropped_total") == 1.0);

    char in[] = "/tmp/test_metrics_XXXXXX";
    int fd = mkstemp(in);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.p, b.len), (ssize_t)b.len);
    close(fd);
    char out[64];
    snprintf(out, sizeof(out), "%s.out", in);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s check metrics < %s > %s 2>&1", promtool, in, out);
    int status = system(cmd);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char msg[4096] = "";
        FILE *fp = fopen(out, "r");
        if (fp) {
            size_t n = fread(msg, 1, sizeof(msg) - 1, fp);
            msg[n] = '\0';
            fclose(fp);
        }
        fail_msg("promtool rejected %s (status %d):\n%s", in, status, msg);
    }
    unlink(in);
    unlink(out);
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

/* The memory the process holds: its resident set; under AddressSanitizer, whose quarantine keeps
 * freed blocks resident on purpose, the bytes allocated and not freed. */
static size_t mem_in_use(void)
{
#ifdef CHURN_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
#endif
}

/* Endpoints that come and go: 100,000 series created and removed, 100 live at any time, leave
 * the memory where the first thousand put it; a reused series starts at zero with its own labels.
 */
static void test_remove_churn(void **state)
{
    (void)state;
    struct sc_metrics *r = sc_metrics_new();
    const char *labels[] = { "endpoint", NULL };
    struct sc_metric_family *f = sc_metrics_family(r, SC_METRIC_COUNTER, "requests_total",
                                                   "Requests by endpoint.", labels, NULL, 0);
    struct sc_metric_family *h =
        sc_metrics_family(r, SC_METRIC_HISTOGRAM, "latency_seconds", "Latency.", labels, NULL, 0);
    enum { TOTAL = 100000, LIVE = 100, WARM = 1000 };
    size_t base = 0;
    for (int i = 0; i < TOTAL; i++) {
        char v[32];
        snprintf(v, sizeof(v), "10.%d.%d.%d:8080", i >> 16, (i >> 8) & 255, i & 255);
        const char *vals[] = { v };
        struct sc_metric *m = sc_metrics_get(f, vals);
        assert_non_null(m);
        assert_true(sc_metrics_value(m) == 0.0);
        sc_metrics_counter_add(m, 3);
        sc_metrics_histogram_observe(sc_metrics_get(h, vals), 0.25);
        if (i >= LIVE) {
            char old[32];
            int k = i - LIVE;
            snprintf(old, sizeof(old), "10.%d.%d.%d:8080", k >> 16, (k >> 8) & 255, k & 255);
            sc_metrics_remove(f, (const char *[]){ old });
            sc_metrics_remove(h, (const char *[]){ old });
        }
        if (i == WARM) {
            base = mem_in_use();
        }
    }
    size_t end = mem_in_use();
    if (end > base + (1u << 20)) {
        fail_msg("memory grew by %zu bytes over %d series", end - base, TOTAL - WARM);
    }
    /* What renders: the last LIVE endpoints, each with its own count. */
    struct sc_buf b;
    sc_buf_init(&b, 4 << 20);
    const char *text = render(r, &b);
    size_t lines = 0;
    for (const char *p = strstr(text, "requests_total{"); p; p = strstr(p + 1, "requests_total{")) {
        lines++;
    }
    assert_int_equal(lines, LIVE);
    assert_true(sample(text, "requests_total{endpoint=\"10.1.134.159:8080\"}") == 3.0);
    assert_false(strstr(text, "10.1.134.59:8080\"}") != NULL); /* removed */
    sc_buf_cleanup(&b);
    sc_metrics_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_labels), cmocka_unit_test(test_gauge_values),
        cmocka_unit_test(test_histogram),      cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_series_cap),     cmocka_unit_test(test_remove),
        cmocka_unit_test(test_null_safety),    cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_collect),        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_process),        cmocka_unit_test(test_misuse_aborts),
        cmocka_unit_test(test_promtool),       cmocka_unit_test(test_remove_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
