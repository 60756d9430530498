// SPDX-License-Identifier: Apache-2.0
// Unit tests for PeerAuthentication resolution (src/roles/proxy/proxy_peerauth.c), loaded from
// YAML through the real option table: Istio's precedence (workload selector over namespace over
// mesh), UNSET inheriting from the scope above, PERMISSIVE when nothing sets a mode, port-level
// modes from the workload policy only (UNSET taking the workload's mode), selectors needing every
// label, policies of other namespaces ignored, the downward API labels file (quoted values,
// escapes, malformed lines refused with file:line:col) and the checks the table cannot make.
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
#include "core/config.h"
#include "core/error.h"
#include "roles/proxy/proxy_peerauth.h"

struct doc {
    struct sc_vec pas;
    struct proxy_workload_cfg wl;
};

static const struct sc_opt doc_opts[] = {
    { .name = "pas",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct doc, pas),
      .sub = proxy_pa_opts,
      .sub_size = sizeof(struct proxy_pa_cfg) },
    { .name = "workload",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct doc, wl),
      .sub = proxy_workload_opts },
    { 0 },
};

/* Loads <yaml>, resolves it for its workload with root namespace "istio-system". */
static struct proxy_pa_effective resolve(const char *yaml)
{
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    int rc = sc_config_load_string(doc_opts, &d, "t.yaml", yaml, strlen(yaml), &err);
    if (rc < 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(proxy_pa_check(d.pas.v, d.pas.n, &err), 0);
    if (!d.wl.labels_file) {
        d.wl.labels_file = sc_strdup("/dev/null");
    }
    struct proxy_workload w;
    assert_int_equal(proxy_workload_init(&w, &d.wl, &err), 0);
    struct proxy_pa_effective e;
    proxy_pa_resolve(d.pas.v, d.pas.n, &w, "istio-system", &e);
    proxy_workload_cleanup(&w);
    sc_config_free(doc_opts, &d);
    return e;
}

static void test_default_is_permissive(void **state)
{
    (void)state;
    struct proxy_pa_effective e = resolve("workload: {namespace: shop}\n");
    assert_int_equal(e.mode, PROXY_PA_PERMISSIVE);
    assert_int_equal(e.nports, 0);
    assert_int_equal(proxy_pa_mode_for(&e, 8080), PROXY_PA_PERMISSIVE);
}

static void test_precedence(void **state)
{
    (void)state;
    const char *mesh = "  - {name: m, namespace: istio-system, mode: STRICT}\n";
    const char *ns = "  - {name: n, namespace: shop, mode: DISABLE}\n";
    const char *wl =
        "  - {name: w, namespace: shop, match_labels: {app: cart}, mode: PERMISSIVE}\n";
    char y[1024];
    snprintf(y, sizeof(y), "workload: {namespace: shop, labels: {app: cart}}\npas:\n%s", mesh);
    assert_int_equal(resolve(y).mode, PROXY_PA_STRICT);
    snprintf(y, sizeof(y), "workload: {namespace: shop, labels: {app: cart}}\npas:\n%s%s", mesh,
             ns);
    assert_int_equal(resolve(y).mode, PROXY_PA_DISABLE);
    /* Order in the list does not matter: scope does. */
    snprintf(y, sizeof(y), "workload: {namespace: shop, labels: {app: cart}}\npas:\n%s%s%s", wl, ns,
             mesh);
    assert_int_equal(resolve(y).mode, PROXY_PA_PERMISSIVE);
}

static void test_unset_inherits(void **state)
{
    (void)state;
    struct proxy_pa_effective e = resolve("workload: {namespace: shop, labels: {app: cart}}\n"
                                          "pas:\n"
                                          "  - {name: m, namespace: istio-system, mode: STRICT}\n"
                                          "  - {name: w, match_labels: {app: cart}}\n");
    assert_int_equal(e.mode, PROXY_PA_STRICT);
}

static void test_selector_needs_every_label_and_namespace(void **state)
{
    (void)state;
    struct proxy_pa_effective e =
        resolve("workload: {namespace: shop, labels: {app: cart}}\n"
                "pas:\n"
                "  - {name: a, match_labels: {app: cart, tier: db}, mode: DISABLE}\n"
                "  - {name: b, namespace: other, match_labels: {app: cart}, mode: DISABLE}\n"
                "  - {name: c, namespace: other, mode: DISABLE}\n");
    assert_int_equal(e.mode, PROXY_PA_PERMISSIVE);
}

static void test_port_level(void **state)
{
    (void)state;
    struct proxy_pa_effective e =
        resolve("workload: {namespace: shop, labels: {app: cart}}\n"
                "pas:\n"
                "  - {name: n, mode: STRICT}\n"
                "  - name: w\n"
                "    match_labels: {app: cart}\n"
                "    port_level_mtls: [{port: 8080, mode: DISABLE}, {port: 9090}]\n");
    assert_int_equal(e.mode, PROXY_PA_STRICT);
    assert_int_equal(proxy_pa_mode_for(&e, 8080), PROXY_PA_DISABLE);
    assert_int_equal(proxy_pa_mode_for(&e, 9090), PROXY_PA_STRICT);
    assert_int_equal(proxy_pa_mode_for(&e, 7070), PROXY_PA_STRICT);
}

static void test_checks(void **state)
{
    (void)state;
    struct doc d;
    char *err = NULL;
    const char *bad[] = {
        "pas: [{name: n, port_level_mtls: [{port: 1, mode: STRICT}]}]\n",
        "pas: [{name: n, match_labels: {a: b}, port_level_mtls: [{port: 1}, {port: 1}]}]\n",
    };
    for (size_t i = 0; i < 2; i++) {
        memset(&d, 0, sizeof(d));
        sc_config_defaults(doc_opts, &d);
        assert_int_equal(sc_config_load_string(doc_opts, &d, "t", bad[i], strlen(bad[i]), &err), 0);
        assert_int_equal(proxy_pa_check(d.pas.v, d.pas.n, &err), SC_ECONFIG);
        sc_free(err);
        err = NULL;
        sc_config_free(doc_opts, &d);
    }
    memset(&d, 0, sizeof(d));
    const char *y = "pas: [{name: n, mode: strictly}]\n";
    assert_int_equal(sc_config_load_string(doc_opts, &d, "t", y, strlen(y), &err), SC_ECONFIG);
    assert_non_null(strstr(err, "t:1:"));
    sc_free(err);
    sc_config_free(doc_opts, &d);
}

static void test_labels_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sidecar-labels-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "app=\"cart\"\ntier=\"a \\\"quoted\\\" \\\\ value\"\n\nversion=\"v1\"\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
    close(fd);
    struct proxy_workload_cfg c;
    memset(&c, 0, sizeof(c));
    c.ns = "shop";
    c.labels_file = path;
    struct proxy_workload w;
    char *err = NULL;
    assert_int_equal(proxy_workload_init(&w, &c, &err), 0);
    assert_int_equal(w.nlabels, 3);
    assert_string_equal(w.labels[0].value, "cart");
    assert_string_equal(w.labels[1].value, "a \"quoted\" \\ value");
    proxy_workload_cleanup(&w);
    /* A line that is not key="value" names the file and line. */
    FILE *f = fopen(path, "w");
    fputs("app=\"cart\"\nbroken\n", f);
    fclose(f);
    assert_int_equal(proxy_workload_init(&w, &c, &err), SC_ECONFIG);
    assert_non_null(strstr(err, ":2:1:"));
    sc_free(err);
    /* A configured file that is missing is an error; the default one may be absent. */
    unlink(path);
    assert_int_equal(proxy_workload_init(&w, &c, &err), SC_ECONFIG);
    sc_free(err);
    c.labels_file = NULL;
    setenv("POD_NAMESPACE", "from-env", 1);
    c.ns = NULL;
    assert_int_equal(proxy_workload_init(&w, &c, &err), 0);
    assert_string_equal(w.ns, "from-env");
    proxy_workload_cleanup(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_permissive),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_unset_inherits),
        cmocka_unit_test(test_selector_needs_every_label_and_namespace),
        cmocka_unit_test(test_port_level),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_labels_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
