// SPDX-License-Identifier: Apache-2.0
// Unit tests for the metrics role's pure parts: relabeling (every action, Prometheus's anchoring,
// $1 / ${1} / ${name} / $$ in replacements, hashmod values equal to Prometheus's MD5-based ones,
// config errors), the remote_write protobuf encoding (exact bytes of a small WriteRequest) and the
// Pushgateway grouping-key path encoding.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "roles/metrics/metrics.h"

struct fixture {
    struct metrics_prom_set arena;
    struct metrics_lbls l;
    struct metrics_relabel *r;
};

static void setup_labels(struct fixture *f, const char *const *kv)
{
    metrics_prom_set_init(&f->arena);
    memset(&f->l, 0, sizeof(f->l));
    f->l.arena_set = &f->arena;
    for (size_t i = 0; kv[i]; i += 2) {
        metrics_lbls_set(&f->l, sc_str_c(kv[i]), sc_str_c(kv[i + 1]));
    }
}

static void teardown_labels(struct fixture *f)
{
    sc_free(f->l.v);
    metrics_prom_set_cleanup(&f->arena);
    metrics_relabel_free(f->r);
    f->r = NULL;
}

static char *sv(const char *s)
{
    return s ? sc_strdup(s) : NULL;
}

/* Builds one rule; <sources> is ';'-separated. */
static struct metrics_relabel_cfg rule(int action, const char *sources, const char *regex,
                                       const char *target, const char *replacement, int64_t mod)
{
    struct metrics_relabel_cfg c = { .action = action, .modulus = mod };
    if (sources) {
        char *copy = sc_strdup(sources);
        struct sc_str rest = sc_str_c(copy);
        while (rest.len) {
            struct sc_str part = sc_str_split(&rest, ';');
            c.source_labels.v =
                sc_reallocarray(c.source_labels.v, c.source_labels.n + 1, sizeof(char *));
            c.source_labels.v[c.source_labels.n++] = sc_strndup(part.p, part.len);
        }
        sc_free(copy);
    }
    c.regex = sv(regex);
    c.target_label = sv(target);
    c.replacement = sv(replacement);
    return c;
}

static void free_rule(struct metrics_relabel_cfg *c)
{
    for (size_t i = 0; i < c->source_labels.n; i++) {
        sc_free(c->source_labels.v[i]);
    }
    sc_free(c->source_labels.v);
    sc_free(c->regex);
    sc_free(c->target_label);
    sc_free(c->replacement);
}

static void compile(struct fixture *f, struct metrics_relabel_cfg *rules, size_t n)
{
    char *err = NULL;
    int rc = metrics_relabel_compile(rules, n, &f->r, &err);
    if (rc) {
        fail_msg("compile: %s", err);
    }
    for (size_t i = 0; i < n; i++) {
        free_rule(&rules[i]);
    }
}

static const char *get(struct fixture *f, const char *name, char *buf, size_t len)
{
    struct sc_str v = metrics_lbls_get(&f->l, sc_str_c(name));
    if (!v.p) {
        return NULL;
    }
    snprintf(buf, len, "%.*s", SC_STR_FMT(v));
    return buf;
}

static void test_replace(void **state)
{
    (void)state;
    struct fixture f = { 0 };
    char b[128];
    setup_labels(&f,
                 (const char *const[]){ "__name__", "http_requests_total", "path", "/api/v2/users",
                                        "method", "GET", "code", "200", NULL });
    struct metrics_relabel_cfg rules[] = {
        rule(RELABEL_REPLACE, "path", "/api/v(\\d+)/.*", "api_version", "v$1", 0),
        rule(RELABEL_REPLACE, "method;code", "(GET|POST);(\\d)\\d\\d", "kind", "${1}_${2}xx", 0),
        /* anchored: "api" alone does not match "/api/..." */
        rule(RELABEL_REPLACE, "path", "api", "unanchored", "yes", 0),
        rule(RELABEL_REPLACE, "method", "(?P<verb>.*)", "verb", "${verb}-$$-$9-$1x", 0),
        /* target_label may use groups too */
        rule(RELABEL_REPLACE, "code", "(\\d)(\\d\\d)", "code_$1", "$2", 0),
        /* an empty result removes the label */
        rule(RELABEL_REPLACE, "nothing", "", "method", "", 0),
    };
    compile(&f, rules, SC_ARRAY_LEN(rules));
    assert_true(metrics_relabel_apply(f.r, &f.l));
    assert_string_equal(get(&f, "api_version", b, sizeof(b)), "v2");
    assert_string_equal(get(&f, "kind", b, sizeof(b)), "GET_2xx");
    assert_null(get(&f, "unanchored", b, sizeof(b)));
    assert_string_equal(get(&f, "verb", b, sizeof(b)), "GET-$--");
    assert_string_equal(get(&f, "code_2", b, sizeof(b)), "00");
    assert_null(get(&f, "method", b, sizeof(b)));
    teardown_labels(&f);
}

static void test_keep_drop(void **state)
{
    (void)state;
    struct fixture f = { 0 };
    setup_labels(&f, (const char *const[]){ "__name__", "go_goroutines", NULL });
    struct metrics_relabel_cfg r1[] = { rule(RELABEL_DROP, "__name__", "go_.*", NULL, NULL, 0) };
    compile(&f, r1, 1);
    assert_false(metrics_relabel_apply(f.r, &f.l));
    teardown_labels(&f);

    setup_labels(&f, (const char *const[]){ "__name__", "app_x", "env", "prod", NULL });
    struct metrics_relabel_cfg r2[] = {
        rule(RELABEL_KEEP, "__name__;env", "app_.*;prod", NULL, NULL, 0),
    };
    compile(&f, r2, 1);
    assert_true(metrics_relabel_apply(f.r, &f.l));
    metrics_lbls_set(&f.l, SC_STR("env"), SC_STR("dev"));
    assert_false(metrics_relabel_apply(f.r, &f.l));
    teardown_labels(&f);
}

static void test_label_actions(void **state)
{
    (void)state;
    struct fixture f = { 0 };
    char b[64];
    setup_labels(&f,
                 (const char *const[]){ "__name__", "m", "k8s_label_team", "a", "k8s_label_tier",
                                        "web", "pod_template_hash", "x", "keep_me", "1", NULL });
    struct metrics_relabel_cfg rules[] = {
        rule(RELABEL_LABELMAP, NULL, "k8s_label_(.+)", NULL, "app_$1", 0),
        rule(RELABEL_LABELDROP, NULL, "k8s_label_.*|pod_template_hash", NULL, NULL, 0),
        rule(RELABEL_LABELKEEP, NULL, "app_.*|keep_me", NULL, NULL, 0),
    };
    compile(&f, rules, SC_ARRAY_LEN(rules));
    assert_true(metrics_relabel_apply(f.r, &f.l));
    assert_string_equal(get(&f, "app_team", b, sizeof(b)), "a");
    assert_string_equal(get(&f, "app_tier", b, sizeof(b)), "web");
    assert_string_equal(get(&f, "keep_me", b, sizeof(b)), "1");
    assert_null(get(&f, "k8s_label_team", b, sizeof(b)));
    assert_null(get(&f, "pod_template_hash", b, sizeof(b)));
    assert_string_equal(get(&f, "__name__", b, sizeof(b)), "m"); /* the name always stays */
    assert_int_equal(f.l.n, 4);
    teardown_labels(&f);
}

static void test_hashmod_matches_prometheus(void **state)
{
    (void)state;
    /* Expected values: big-endian uint64 of md5(value)[8:16] mod the modulus, as Prometheus. */
    static const struct {
        const char *a, *b;
        int64_t mod;
        const char *want;
    } cases[] = {
        { "foo", NULL, 1000, "696" },
        { "http_requests_total", "/api", 8, "0" },
        { "", NULL, 7, "1" },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        struct fixture f = { 0 };
        char b[64];
        setup_labels(
            &f, (const char *const[]){ "a", cases[i].a, "b", cases[i].b ? cases[i].b : "", NULL });
        struct metrics_relabel_cfg r[] = {
            rule(RELABEL_HASHMOD, cases[i].b ? "a;b" : "a", NULL, "shard", NULL, cases[i].mod),
        };
        compile(&f, r, 1);
        assert_true(metrics_relabel_apply(f.r, &f.l));
        assert_string_equal(get(&f, "shard", b, sizeof(b)), cases[i].want);
        teardown_labels(&f);
    }
}

static void test_config_errors(void **state)
{
    (void)state;
    struct metrics_relabel_cfg bad[] = {
        rule(RELABEL_REPLACE, "a", "(unclosed", "t", NULL, 0),
        rule(RELABEL_HASHMOD, "a", NULL, "t", NULL, 0),
        rule(RELABEL_REPLACE, "a", NULL, NULL, NULL, 0),
        rule(RELABEL_KEEP, NULL, "x", NULL, NULL, 0),
    };
    static const char *const want[] = { "regex", "modulus", "target_label", "source_labels" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        struct metrics_relabel *r = NULL;
        char *err = NULL;
        assert_int_equal(metrics_relabel_compile(&bad[i], 1, &r, &err), SC_ECONFIG);
        assert_null(r);
        assert_non_null(strstr(err, want[i]));
        assert_non_null(strstr(err, "relabel_configs[0]"));
        sc_free(err);
        free_rule(&bad[i]);
    }
}

static void test_remote_write_encoding(void **state)
{
    (void)state;
    struct metrics_prom_set s;
    metrics_prom_set_init(&s);
    struct metrics_prom_family *f = metrics_prom_family_get(&s, SC_STR("up"), METRICS_PROM_GAUGE);
    f->has_help = true;
    f->help = SC_STR("Up.");
    f->unit = SC_STR("s");
    metrics_prom_family_get(&s, SC_STR("none"),
                            METRICS_PROM_COUNTER); /* no samples: no metadata either */
    struct metrics_prom_sample *sm = metrics_prom_sample_add(&s, f);
    sm->name = SC_STR("up");
    sm->value = 1.0;
    sm->labels = metrics_prom_alloc(&s, sizeof(struct metrics_prom_label));
    sm->labels[0].name = SC_STR("job");
    sm->labels[0].value = SC_STR("a");
    sm->nlabels = 1;
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    assert_int_equal(metrics_rw_encode(&s, 1000, &b), 0);
    /* WriteRequest{timeseries: [{labels: [{__name__, up}, {job, a}], samples: [{1.0, 1000}]}],
     *              metadata: [{type: GAUGE, metric_family_name: up, help: "Up.", unit: s}]} */
    static const unsigned char want[] = {
        0x0a, 0x28,                                                         /* timeseries, 40 B */
        0x0a, 0x0e, 0x0a, 0x08, '_', '_', 'n', 'a',  'm',  'e',  '_',  '_', /* label __name__ */
        0x12, 0x02, 'u',  'p',                                              /* = up */
        0x0a, 0x08, 0x0a, 0x03, 'j', 'o', 'b', 0x12, 0x01, 'a',             /* job = a */
        0x12, 0x0c, 0x09, 0,    0,   0,   0,   0,    0,    0xf0, 0x3f,      /* value 1.0 */
        0x10, 0xe8, 0x07,                                                   /* timestamp 1000 */
        0x1a, 0x0e, 0x08, 0x02,      /* metadata, 14 B; type GAUGE */
        0x12, 0x02, 'u',  'p',       /* metric_family_name */
        0x22, 0x03, 'U',  'p',  '.', /* help */
        0x2a, 0x01, 's',             /* unit */
    };
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.p, want, sizeof(want));
    sc_buf_cleanup(&b);
    metrics_prom_set_cleanup(&s);
}

static void test_push_group(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 1024);
    assert_int_equal(metrics_push_group(&b, "job", "batch-1"), 0);
    assert_int_equal(metrics_push_group(&b, "instance", "a b:9"), 0);
    assert_int_equal(metrics_push_group(&b, "path", "/var/tmp"), 0);
    assert_int_equal(metrics_push_group(&b, "empty", ""), 0);
    assert_string_equal(sc_buf_cstr(&b), "/job/batch-1/instance/a%20b%3A9/path@base64/L3Zhci90bXA="
                                         "/empty@base64/=");
    sc_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replace),       cmocka_unit_test(test_keep_drop),
        cmocka_unit_test(test_label_actions), cmocka_unit_test(test_hashmod_matches_prometheus),
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_remote_write_encoding),
        cmocka_unit_test(test_push_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
