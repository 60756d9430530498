// SPDX-License-Identifier: Apache-2.0
// Unit tests of the injector: YAML scalars resolved as kubectl resolves them and written back so
// they read the same, JSON Patch generation (pointer escaping, arrays), the injection decisions
// and field-naming errors, and the AdmissionReview handler's answers.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/inject/inject.h"
#include "roles/inject/webhook.h"

static struct inject_mesh mesh;
static struct inject_opts opts;

static int setup(void **state)
{
    (void)state;
    static const char all[] = "roles: [proxy, logs, metrics]\nrewrite_probes: true\n";
    char *err = NULL;
    sc_config_defaults(inject_mesh_opts, &mesh);
    assert_int_equal(
        sc_config_load_string(inject_mesh_opts, &mesh, "mesh", all, sizeof(all) - 1, &err), 0);
    inject_choose(&mesh, true, NULL, false, &opts);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sc_config_free(inject_mesh_opts, &mesh);
    return 0;
}

static json_t *parse1(const char *yaml)
{
    json_t *docs = NULL;
    char *err = NULL;
    int rc = inject_yaml_parse("t", yaml, strlen(yaml), &docs, &err);
    if (rc < 0) {
        fail_msg("%s", err);
    }
    json_t *d = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return d;
}

static void test_scalars(void **state)
{
    (void)state;
    json_t *d = parse1("a: yes\nb: \"yes\"\nc: 0644\nd: 0x1F\ne: 1.5\nf: ~\ng: on\nh: 1_000\n"
                       "i: !!str 12\nj: |\n  two\n  lines\nk: 12abc\nl: -7\nm: 1e3\n");
    assert_true(json_is_true(json_object_get(d, "a")));
    assert_string_equal(json_string_value(json_object_get(d, "b")), "yes");
    assert_int_equal(json_integer_value(json_object_get(d, "c")), 420);
    assert_int_equal(json_integer_value(json_object_get(d, "d")), 31);
    assert_true(json_real_value(json_object_get(d, "e")) == 1.5);
    assert_true(json_is_null(json_object_get(d, "f")));
    assert_true(json_is_true(json_object_get(d, "g")));
    assert_int_equal(json_integer_value(json_object_get(d, "h")), 1000);
    assert_string_equal(json_string_value(json_object_get(d, "i")), "12");
    assert_string_equal(json_string_value(json_object_get(d, "j")), "two\nlines\n");
    assert_string_equal(json_string_value(json_object_get(d, "k")), "12abc");
    assert_int_equal(json_integer_value(json_object_get(d, "l")), -7);
    assert_true(json_real_value(json_object_get(d, "m")) == 1000.0);
    /* Written back, every value reads the same. */
    json_t *docs = json_pack("[O]", d);
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    assert_int_equal(inject_yaml_emit(docs, &b), 0);
    json_t *back = parse1(sc_buf_cstr(&b));
    assert_true(json_equal(back, d));
    assert_non_null(strstr(sc_buf_cstr(&b), "b: \"yes\""));
    json_decref(back);
    json_decref(docs);
    json_decref(d);
    sc_buf_cleanup(&b);
}

static void test_yaml_structure(void **state)
{
    (void)state;
    json_t *d = parse1("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n");
    json_t *m = json_object_get(d, "m");
    assert_int_equal(json_integer_value(json_object_get(m, "x")), 1);
    assert_int_equal(json_integer_value(json_object_get(m, "y")), 3);
    assert_int_equal(json_array_size(json_object_get(d, "list")), 2);
    json_decref(d);

    json_t *docs = NULL;
    char *err = NULL;
    const char *dup = "a: 1\na: 2\n";
    assert_int_equal(inject_yaml_parse("f.yaml", dup, strlen(dup), &docs, &err), SC_ECONFIG);
    assert_string_equal(err, "f.yaml:2:4: duplicate key \"a\"");
    sc_free(err);
    err = NULL;
    /* An alias bomb is refused by the node budget, not expanded. */
    const char *bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    assert_int_equal(inject_yaml_parse("bomb", bomb, strlen(bomb), &docs, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "too large"));
    sc_free(err);
    err = NULL;
    const char *multi = "a: 1\n---\n---\nb: 2\n";
    assert_int_equal(inject_yaml_parse("m", multi, strlen(multi), &docs, &err), 0);
    assert_int_equal(json_array_size(docs), 2);
    json_decref(docs);
}

static void test_json_diff(void **state)
{
    (void)state;
    json_t *a = json_pack("{s:{s:s}, s:[i,i], s:i}", "m", "a/b~c", "x", "l", 1, 2, "gone", 1);
    json_t *b = json_pack("{s:{s:s, s:s}, s:[i,i,i]}", "m", "a/b~c", "y", "n/k", "z", "l", 1, 2, 3);
    json_t *p = inject_json_diff(a, b);
    char *s = json_dumps(p, JSON_COMPACT);
    assert_string_equal(s, "[{\"op\":\"remove\",\"path\":\"/gone\"},"
                           "{\"op\":\"replace\",\"path\":\"/m/a~1b~0c\",\"value\":\"y\"},"
                           "{\"op\":\"add\",\"path\":\"/m/n~1k\",\"value\":\"z\"},"
                           "{\"op\":\"replace\",\"path\":\"/l\",\"value\":[1,2,3]}]");
    sc_free(s);
    json_decref(p);
    json_decref(a);
    json_decref(b);
}

static const char pod_yaml[] =
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n"
    "    prometheus.io/port: \"8081\"\nspec:\n  containers:\n  - name: app\n    image: nginx\n"
    "    ports: [{name: http, containerPort: 8080}]\n"
    "    readinessProbe: {httpGet: {path: /ready, port: http}, timeoutSeconds: 2}\n";

static void test_inject_pod(void **state)
{
    (void)state;
    json_t *pod = parse1(pod_yaml);
    char *err = NULL;
    assert_int_equal(inject_document(&opts, pod, 1, &err), 1);
    json_t *spec = json_object_get(pod, "spec");
    json_t *inits = json_object_get(spec, "initContainers");
    assert_int_equal(json_array_size(inits), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(inits, 0), "name")),
                        "sidecar-iptables");
    assert_string_equal(json_string_value(json_object_get(json_array_get(inits, 1), "name")),
                        "sidecar-proxy");
    json_t *probe =
        json_object_get(json_array_get(json_object_get(spec, "containers"), 0), "readinessProbe");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(probe, "httpGet"), "path")),
        "/app-health/app/readyz");
    json_t *anns = json_object_get(json_object_get(pod, "metadata"), "annotations");
    assert_string_equal(json_string_value(json_object_get(anns, "prometheus.io/port")), "9090");
    assert_non_null(json_object_get(anns, INJECT_STATUS));
    /* Again: nothing changes. */
    json_t *copy = json_deep_copy(pod);
    assert_int_equal(inject_document(&opts, pod, 1, &err), 0);
    assert_true(json_equal(copy, pod));
    json_decref(copy);
    json_decref(pod);
}

static void expect_error(const char *yaml, const char *want)
{
    json_t *d = parse1(yaml);
    char *err = NULL;
    assert_int_equal(inject_document(&opts, d, 3, &err), SC_ECONFIG);
    if (strcmp(err, want) != 0) {
        fail_msg("got \"%s\"\nwant \"%s\"", err, want);
    }
    sc_free(err);
    json_decref(d);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("kind: Deployment\nmetadata: {name: w}\nspec: {}\n",
                 "document 3 (Deployment/w): spec.template: missing (no pod template)");
    expect_error("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n"
                 "  volumes: [{name: sidecar-logs, emptyDir: {}}]\n",
                 "document 3 (Pod/p): spec.volumes[0].name: \"sidecar-logs\" is reserved for "
                 "the injected sidecars; rename it");
    expect_error("kind: Pod\nmetadata: {name: p, annotations: {sidecar.dev/logs: maybe}}\n"
                 "spec: {containers: [{name: a, image: b}]}\n",
                 "document 3 (Pod/p): metadata.annotations[sidecar.dev/logs]: \"maybe\" is not "
                 "\"true\" or \"false\"");
    expect_error("kind: List\nitems:\n- kind: Job\n  metadata: {name: j}\n  spec:\n    template:\n"
                 "      spec: {containers: [{name: a, image: b, livenessProbe: {httpGet: "
                 "{port: web}}}]}\n",
                 "document 3 (Job/j): items[0].spec.template.spec.containers[0].livenessProbe."
                 "httpGet.port: no port named \"web\" in the container");
    expect_error("metadata: {}\n",
                 "document 3: kind: missing (every object needs apiVersion and kind)");
}

static const char *review(const char *ns, const char *pod_json, struct sc_buf *out, int *status)
{
    char *body = sc_asprintf("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\","
                             "\"request\":{\"uid\":\"u-1\",\"kind\":{\"kind\":\"Pod\"},"
                             "\"operation\":\"CREATE\",\"namespace\":\"%s\",\"object\":%s}}",
                             ns, pod_json);
    const char *result = NULL;
    sc_buf_reset(out);
    *status = webhook_review(&opts, body, strlen(body), out, &result);
    sc_free(body);
    return result;
}

static void test_review(void **state)
{
    (void)state;
    struct sc_buf out;
    sc_buf_init(&out, 1 << 22);
    int status;
    const char *pod = "{\"metadata\":{\"name\":\"p\"},\"spec\":{\"containers\":[{\"name\":\"a\","
                      "\"image\":\"b\"}]}}";
    assert_string_equal(review("default", pod, &out, &status), "injected");
    assert_int_equal(status, 200);
    json_t *r = json_loads(sc_buf_cstr(&out), 0, NULL);
    json_t *resp = json_object_get(r, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "uid")), "u-1");
    assert_true(json_is_true(json_object_get(resp, "allowed")));
    assert_string_equal(json_string_value(json_object_get(resp, "patchType")), "JSONPatch");
    json_decref(r);

    assert_string_equal(review("kube-system", pod, &out, &status), "skipped");
    assert_null(strstr(sc_buf_cstr(&out), "patch"));
    const char *host = "{\"spec\":{\"hostNetwork\":true,\"containers\":[{\"name\":\"a\"}]}}";
    assert_string_equal(review("default", host, &out, &status), "skipped");
    const char *done = "{\"metadata\":{\"annotations\":{\"sidecar.dev/status\":\"{}\"}},"
                       "\"spec\":{\"containers\":[{\"name\":\"a\"}]}}";
    assert_string_equal(review("default", done, &out, &status), "skipped");
    assert_null(strstr(sc_buf_cstr(&out), "patch"));
    const char *clash = "{\"spec\":{\"containers\":[{\"name\":\"sidecar-proxy\"}]}}";
    assert_string_equal(review("default", clash, &out, &status), "denied");
    assert_int_equal(status, 200);
    assert_non_null(strstr(sc_buf_cstr(&out), "\"allowed\":false"));
    assert_non_null(strstr(sc_buf_cstr(&out), "spec.containers[0].name"));

    const char *result = NULL;
    sc_buf_reset(&out);
    assert_int_equal(webhook_review(&opts, "{\"kind\":1}", 10, &out, &result), 400);
    assert_string_equal(result, "invalid");
    sc_buf_reset(&out);
    assert_int_equal(webhook_review(&opts, "\xff", 1, &out, &result), 400);
    assert_non_null(strstr(sc_buf_cstr(&out), "malformed AdmissionReview: not JSON"));
    sc_buf_cleanup(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),   cmocka_unit_test(test_yaml_structure),
        cmocka_unit_test(test_json_diff), cmocka_unit_test(test_inject_pod),
        cmocka_unit_test(test_errors),    cmocka_unit_test(test_review),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
