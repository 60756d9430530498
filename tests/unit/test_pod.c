// SPDX-License-Identifier: Apache-2.0
// Unit tests for the pod runner's pure logic: restart backoff, $(VAR) expansion, CRI log lines,
// resource quantities, and manifest validation errors with their path.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "roles/pod/pod.h"

static void test_backoff(void **state)
{
    (void)state;
    const uint64_t base = 10000, max = 300000;
    const uint64_t want[] = { 10000, 20000, 40000, 80000, 160000, 300000, 300000 };
    for (unsigned i = 0; i < SC_ARRAY_LEN(want); i++) {
        assert_int_equal(pod_backoff_ms(base, max, i), want[i]);
    }
    assert_int_equal(pod_backoff_ms(base, max, 1000000), max);
    assert_int_equal(pod_backoff_ms(UINT64_MAX / 2 + 1, UINT64_MAX, 5), UINT64_MAX);
    assert_int_equal(pod_backoff_ms(200, 300000, 2), 800);
}

static const char *lookup(void *arg, const char *name, size_t len)
{
    (void)arg;
    if (len == 3 && memcmp(name, "FOO", 3) == 0) {
        return "bar";
    }
    if (len == 5 && memcmp(name, "EMPTY", 5) == 0) {
        return "";
    }
    return NULL;
}

static void expect_expand(const char *in, const char *want)
{
    char *out = pod_expand(in, lookup, NULL);
    assert_string_equal(out, want);
    sc_free(out);
}

static void test_expand(void **state)
{
    (void)state;
    expect_expand("plain", "plain");
    expect_expand("$(FOO)", "bar");
    expect_expand("a-$(FOO)-b", "a-bar-b");
    expect_expand("$(FOO)$(FOO)", "barbar");
    expect_expand("$(UNSET)", "$(UNSET)");
    expect_expand("$$(FOO)", "$(FOO)");
    expect_expand("$$", "$");
    expect_expand("$(EMPTY)x", "x");
    expect_expand("$(FOO", "$(FOO");
    expect_expand("$()", "$()");
    expect_expand("${FOO}", "${FOO}");
    expect_expand("$", "$");
    expect_expand("", "");
}

static void test_cri_line(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    /* 2026-01-02T15:04:05Z */
    assert_int_equal(pod_cri_line(&b, 1767366245, 7, "stdout", false, "hello", 5), 0);
    assert_string_equal(sc_buf_cstr(&b), "2026-01-02T15:04:05.000000007Z stdout F hello\n");
    sc_buf_reset(&b);
    assert_int_equal(pod_cri_line(&b, 0, 999999999, "stderr", true, "", 0), 0);
    assert_string_equal(sc_buf_cstr(&b), "1970-01-01T00:00:00.999999999Z stderr P \n");
    sc_buf_cleanup(&b);
    sc_buf_init(&b, 20);
    assert_int_equal(pod_cri_line(&b, 0, 0, "stdout", false, "x", 1), SC_ETOOBIG);
    assert_int_equal(b.len, 0);
    sc_buf_cleanup(&b);
}

static void test_quantities(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(pod_parse_cpu("500m", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(pod_parse_cpu("2", &v), 0);
    assert_int_equal(v, 2000);
    assert_int_equal(pod_parse_cpu("0.25", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(pod_parse_cpu("1e3", &v), -EINVAL);
    assert_int_equal(pod_parse_cpu("-1", &v), -EINVAL);
    assert_int_equal(pod_parse_cpu("", &v), -EINVAL);
    assert_int_equal(pod_parse_memory("128Mi", &v), 0);
    assert_int_equal(v, 128 * 1024 * 1024);
    assert_int_equal(pod_parse_memory("1G", &v), 0);
    assert_int_equal(v, 1000000000);
    assert_int_equal(pod_parse_memory("1000", &v), 0);
    assert_int_equal(v, 1000);
    assert_int_equal(pod_parse_memory("1Xi", &v), -EINVAL);
    assert_int_equal(pod_parse_memory("0x10", &v), -EINVAL);
}

static char *write_tmp(const char *text)
{
    char *path = sc_strdup("/tmp/test_pod_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static char *load_err(const char *text)
{
    char *path = write_tmp(text);
    char *err = NULL;
    struct pod_manifest *m = pod_manifest_load(path, &err);
    unlink(path);
    sc_free(path);
    if (m) {
        pod_manifest_free(m);
        return NULL;
    }
    assert_non_null(err);
    return err;
}

static void test_manifest_errors(void **state)
{
    (void)state;
    char *err = load_err("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
                         "  - name: a\n    command: [true]\n  - name: b\n    command: [true]\n"
                         "    stdin: true\n");
    assert_non_null(strstr(err, ":10:5: unknown key \"stdin\""));
    assert_non_null(strstr(err, "(at spec.containers[1].stdin)"));
    sc_free(err);
    err = load_err(
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n"
        "    command: [true]\n    securityContext:\n      capabilities: {drop: [BOGUS]}\n");
    assert_non_null(strstr(err, "spec.containers[0].securityContext: capabilities.drop: unknown "
                                "capability \"BOGUS\""));
    sc_free(err);
    err = load_err("apiVersion: v1\nkind: Pod\nspec:\n  hostNetwork: 1\n  containers:\n"
                   "  - name: a\n    command: [true]\n");
    assert_non_null(strstr(err, "spec.hostNetwork: must be true or false"));
    sc_free(err);
    err = load_err("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n"
                   "    command: [true]\n    restartPolicy: Always\n");
    assert_non_null(strstr(err, "spec.containers[0]: restartPolicy is allowed only on init"));
    sc_free(err);
    err = load_err("kind: Pod\nspec:\n  initContainers:\n  - name: a\n    command: [true]\n"
                   "    restartPolicy: OnFailure\n  containers:\n  - {name: b, command: [true]}\n");
    assert_non_null(strstr(err, "accept only Always"));
    sc_free(err);
    err = load_err("kind: Deployment\nspec:\n  replicas: 1\n  template:\n    spec:\n"
                   "      containers:\n      - name: a\n        command: [true]\n"
                   "        volumeMounts: [{name: v, mountPath: /x}]\n");
    assert_non_null(strstr(err, "volume \"v\" is not in spec.volumes"));
    assert_non_null(strstr(err, "(in spec.template)"));
    sc_free(err);
    /* a valid Job template */
    char *path = write_tmp("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n"
                           "  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n"
                           "      containers:\n      - name: a\n        command: [true]\n");
    char *e = NULL;
    struct pod_manifest *m = pod_manifest_load(path, &e);
    assert_non_null(m);
    assert_string_equal(m->name, "j");
    assert_int_equal(m->spec->restart_policy, POD_RESTART_NEVER);
    pod_manifest_free(m);
    unlink(path);
    sc_free(path);
}

static void test_capabilities(void **state)
{
    (void)state;
    assert_int_equal(pod_cap_number("NET_ADMIN"), 12);
    assert_int_equal(pod_cap_number("CAP_NET_RAW"), 13);
    assert_int_equal(pod_cap_number("sys_admin"), 21);
    assert_int_equal(pod_cap_number("CHECKPOINT_RESTORE"), 40);
    assert_int_equal(pod_cap_number("ALL"), -1);
    assert_int_equal(pod_cap_number("CAP_"), -1);
    assert_int_equal(pod_cap_number(NULL), -1);
    assert_string_equal(pod_cap_name(12), "net_admin");
    assert_null(pod_cap_name(41));
    assert_null(pod_cap_name(-1));
    assert_true(pod_is_true("True") && pod_is_false("FALSE"));
    assert_false(pod_is_true(NULL) || pod_is_false(NULL) || pod_is_true("yes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),         cmocka_unit_test(test_expand),
        cmocka_unit_test(test_cri_line),        cmocka_unit_test(test_quantities),
        cmocka_unit_test(test_manifest_errors), cmocka_unit_test(test_capabilities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
