// SPDX-License-Identifier: Apache-2.0
// Unit tests for AuthorizationPolicy evaluation (src/roles/proxy/proxy_authz.c), policies loaded
// from YAML through the real option table: Istio's order (DENY before ALLOW, no ALLOW policy
// allows, an ALLOW policy without rules denies, a rule {} matches), AUDIT and dry-run marking
// without enforcing, sources (principals, namespaces, CIDRs, remote addresses by
// X-Forwarded-For, not* forms), operations (hosts without case, port or trailing dot; methods;
// paths with prefix, suffix, "*" and templates; ports), `when` keys, scoping by namespace and
// selector, service-account names matched literally, and config errors; and the indexed
// evaluator against the linear one on random policy sets and requests.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_normalize.h"
#include "roles/proxy/proxy_peerauth.h"

struct doc {
    struct proxy_authz_cfg az;
    struct proxy_workload_cfg wl;
};

static const struct sc_opt doc_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct doc, az), .sub = proxy_authz_opts },
    { .name = "workload",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct doc, wl),
      .sub = proxy_workload_opts },
    { 0 },
};

static struct sc_metrics *reg;

/* Compiles <yaml> for its workload; NULL when no policy applies. Fails the test on errors. */
static struct proxy_authz *load(const char *yaml)
{
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    if (sc_config_load_string(doc_opts, &d, "t.yaml", yaml, strlen(yaml), &err) < 0 ||
        proxy_authz_check(&d.az, &err) < 0) {
        fail_msg("%s", err);
    }
    if (!d.wl.labels_file) {
        d.wl.labels_file = sc_strdup("/dev/null");
    }
    if (!d.wl.ns) {
        d.wl.ns = sc_strdup("shop");
    }
    struct proxy_workload w;
    assert_int_equal(proxy_workload_init(&w, &d.wl, &err), 0);
    struct proxy_authz *az = proxy_authz_new(&d.az, &w, "istio-system", reg, &err);
    assert_null(err);
    proxy_workload_cleanup(&w);
    sc_config_free(doc_opts, &d);
    return az;
}

/* The config error <yaml> is refused with (load or check), or NULL. */
static char *refused(const char *yaml)
{
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    if (sc_config_load_string(doc_opts, &d, "t.yaml", yaml, strlen(yaml), &err) == 0 &&
        sc_config_check_required(doc_opts, &d, "t.yaml", &err) == 0) {
        proxy_authz_check(&d.az, &err);
    }
    sc_config_free(doc_opts, &d);
    return err;
}

struct req {
    const char *method, *path, *host, *principal, *ip, *sni;
    int dport;
    const char *hdrs[8]; /* name, value pairs */
};

/* Evaluates <r> (path normalised as the exchange does) and returns the decision. */
static struct proxy_az_decision eval(struct proxy_authz *az, int hops, struct req r)
{
    struct sc_http_header h[4];
    struct sc_http_msg m = { .headers = h };
    for (size_t i = 0; i + 1 < 8 && r.hdrs[i]; i += 2) {
        h[m.nheaders].name = sc_str_c(r.hdrs[i]);
        h[m.nheaders].value = sc_str_c(r.hdrs[i + 1]);
        m.nheaders++;
    }
    char host[256], norm[512];
    struct sc_str path = sc_str_c(r.path ? r.path : "/");
    size_t olen, plen;
    const char *why;
    int rc = proxy_normalize_target(path, PROXY_PN_DECODE_MERGE, PROXY_ES_REJECT, norm,
                                    sizeof(norm), &olen, &plen, &why);
    assert_true(rc >= 0);
    struct sc_str p = rc == 0 ? sc_str_n(norm, plen) : sc_str_n(path.p, plen);
    struct sc_str auth = sc_str_c(r.host ? r.host : "svc.shop");
    struct proxy_az_req rq = {
        .m = &m,
        .method = sc_str_c(r.method ? r.method : "GET"),
        .path = p,
        .authority = auth,
        .principal = sc_str_c(r.principal),
        .sni = sc_str_c(r.sni),
        .dport = r.dport ? r.dport : 8080,
    };
    rq.host = sc_str_n(host, proxy_host_normalize(auth, host, sizeof(host)));
    assert_int_equal(proxy_az_ip_parse(sc_str_c(r.ip ? r.ip : "10.0.0.5"), &rq.source), 0);
    assert_int_equal(proxy_az_ip_parse(SC_STR("10.0.0.1"), &rq.dest), 0);
    proxy_authz_remote_ip(&m, hops, &rq.source, &rq.remote);
    struct proxy_az_decision d;
    proxy_authz_eval(az, &rq, &d);
    return d;
}

static bool allowed(struct proxy_authz *az, struct req r)
{
    return eval(az, 0, r).result == PROXY_AZ_RES_ALLOW;
}

static void test_order_and_defaults(void **state)
{
    (void)state;
    /* No policy: nothing to evaluate. */
    assert_null(load("authorization: []\n"));
    /* An ALLOW policy without rules denies everything. */
    struct proxy_authz *az = load("authorization:\n  - {name: allow-nothing}\n");
    assert_false(allowed(az, (struct req){ 0 }));
    proxy_authz_free(az);
    /* A rule {} matches everything. */
    az = load("authorization:\n  - {name: allow-all, rules: [{}]}\n");
    assert_true(allowed(az, (struct req){ 0 }));
    proxy_authz_free(az);
    /* A DENY without rules denies nothing, and with no ALLOW policy the rest is allowed. */
    az = load("authorization:\n  - {name: d, action: DENY}\n");
    assert_true(allowed(az, (struct req){ 0 }));
    proxy_authz_free(az);
    /* DENY wins over ALLOW whatever the order. */
    az = load("authorization:\n"
              "  - {name: a, rules: [{}]}\n"
              "  - {name: d, action: DENY, rules: [{to: [{operation: {paths: [/admin*]}}]}]}\n");
    struct proxy_az_decision d = eval(az, 0, (struct req){ .path = "/admin/x" });
    assert_int_equal(d.result, PROXY_AZ_RES_DENY);
    assert_string_equal(d.policy, "d");
    d = eval(az, 0, (struct req){ .path = "/public" });
    assert_int_equal(d.result, PROXY_AZ_RES_ALLOW);
    assert_string_equal(d.policy, "a");
    proxy_authz_free(az);
}

static void test_payment_example(void **state)
{
    (void)state;
    /* Only order-service and refund-service may POST /api/v1/charge and /api/v1/refund. */
    struct proxy_authz *az =
        load("authorization:\n"
             "  - name: payment\n"
             "    rules:\n"
             "      - from:\n"
             "          - source:\n"
             "              principals: [cluster.local/ns/shop/sa/order-service,\n"
             "                           cluster.local/ns/shop/sa/refund-service]\n"
             "        to:\n"
             "          - operation: {methods: [POST], paths: [/api/v1/charge, /api/v1/refund]}\n");
    const char *order = "cluster.local/ns/shop/sa/order-service";
    assert_true(allowed(
        az, (struct req){ .method = "POST", .path = "/api/v1/charge", .principal = order }));
    assert_true(
        allowed(az, (struct req){ .method = "POST",
                                  .path = "/api/v1/refund",
                                  .principal = "cluster.local/ns/shop/sa/refund-service" }));
    assert_false(
        allowed(az, (struct req){ .method = "GET", .path = "/api/v1/charge", .principal = order }));
    assert_false(allowed(az, (struct req){ .method = "POST",
                                           .path = "/api/v1/charge",
                                           .principal = "cluster.local/ns/shop/sa/web" }));
    assert_false(allowed(az, (struct req){ .method = "POST", .path = "/api/v1/charge" }));
    assert_false(allowed(
        az, (struct req){ .method = "POST", .path = "/api/v1/charge/x", .principal = order }));
    /* Respellings the normaliser merges reach the same decision. */
    assert_true(allowed(
        az,
        (struct req){ .method = "POST", .path = "//api/v1/./x/../charge", .principal = order }));
    assert_true(allowed(
        az, (struct req){ .method = "POST", .path = "/api/v1/%63harge", .principal = order }));
    proxy_authz_free(az);
}

static void test_deny_prefix_bypasses(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("authorization:\n"
             "  - {name: deny-admin, action: DENY, rules: [{to: [{operation: {paths: "
             "[/admin*], hosts: [admin.shop]}}]}]}\n");
    const char *paths[] = { "/admin",          "/admin/x",     "//admin",
                            "/x/../admin",     "/%61dmin",     "/./admin",
                            "/x/%2e%2e/admin", "/admin;a=b/x", "/ADMIN-not" };
    for (size_t i = 0; i + 1 < SC_ARRAY_LEN(paths); i++) {
        for (size_t h = 0; h < 4; h++) {
            const char *hosts[] = { "admin.shop", "ADMIN.Shop", "admin.shop.", "admin.shop:80" };
            struct req r = { .path = paths[i], .host = hosts[h] };
            assert_int_equal(eval(az, 0, r).result, PROXY_AZ_RES_DENY);
        }
    }
    /* Paths are case-sensitive (Istio's exact matching). */
    assert_true(allowed(az, (struct req){ .path = "/ADMIN-not", .host = "admin.shop" }));
    assert_true(allowed(az, (struct req){ .path = "/admin", .host = "other.shop" }));
    proxy_authz_free(az);
}

static void test_sources(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("authorization:\n"
             "  - name: ns\n"
             "    rules:\n"
             "      - from: [{source: {namespaces: [shop], not_principals: ['*/sa/blocked']}}]\n"
             "      - from: [{source: {ip_blocks: [192.168.0.0/16, '2001:db8::/32'],\n"
             "                         not_ip_blocks: [192.168.1.1]}}]\n");
    assert_true(allowed(az, (struct req){ .principal = "td/ns/shop/sa/web" }));
    assert_false(allowed(az, (struct req){ .principal = "td/ns/shop/sa/blocked" }));
    assert_false(allowed(az, (struct req){ .principal = "td/ns/other/sa/web" }));
    assert_false(allowed(az, (struct req){ .principal = "td/ns/shopx/sa/web" }));
    assert_true(allowed(az, (struct req){ .ip = "192.168.7.7" }));
    assert_true(allowed(az, (struct req){ .ip = "::ffff:192.168.7.7" }));
    assert_true(allowed(az, (struct req){ .ip = "2001:db8::1" }));
    assert_false(allowed(az, (struct req){ .ip = "192.168.1.1" }));
    assert_false(allowed(az, (struct req){ .ip = "10.1.1.1" }));
    proxy_authz_free(az);
    /* principals "*" needs an identity; not_principals "*" matches plaintext. */
    az =
        load("authorization:\n"
             "  - {name: d, action: DENY, rules: [{from: [{source: {not_principals: ['*']}}]}]}\n");
    assert_false(allowed(az, (struct req){ 0 }));
    assert_true(allowed(az, (struct req){ .principal = "td/ns/a/sa/b" }));
    proxy_authz_free(az);
    /* A '.' in a service-account name is a dot, never a wildcard. */
    az = load("authorization:\n"
              "  - {name: a, rules: [{from: [{source: {principals: [td/ns/a/sa/my.sa]}}]}]}\n");
    assert_true(allowed(az, (struct req){ .principal = "td/ns/a/sa/my.sa" }));
    assert_false(allowed(az, (struct req){ .principal = "td/ns/a/sa/myxsa" }));
    proxy_authz_free(az);
    /* requestPrincipals without a verified token never match. */
    az = load("authorization:\n"
              "  - {name: a, rules: [{from: [{source: {request_principals: ['*']}}]}]}\n");
    assert_false(allowed(az, (struct req){ 0 }));
    proxy_authz_free(az);
}

static void test_remote_ip(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("xff_num_trusted_hops: 1\n"
             "authorization:\n"
             "  - {name: d, action: DENY, rules: [{from: [{source: {remote_ip_blocks: "
             "[203.0.113.0/24]}}]}]}\n");
    const char *xff[] = { "X-Forwarded-For", "1.2.3.4, 203.0.113.9", NULL };
    struct req r = { .hdrs = { xff[0], xff[1] } };
    assert_int_equal(eval(az, 1, r).result, PROXY_AZ_RES_DENY);
    /* Entries left of the trusted hop are the client's to forge: not used. */
    struct req r2 = { .hdrs = { "X-Forwarded-For", "203.0.113.9, 1.2.3.4" } };
    assert_int_equal(eval(az, 1, r2).result, PROXY_AZ_RES_ALLOW);
    /* Several header lines count as one list. */
    struct req r3 = { .hdrs = { "x-forwarded-for", "203.0.113.9", "X-Forwarded-For", "9.9.9.9" } };
    assert_int_equal(eval(az, 1, r3).result, PROXY_AZ_RES_ALLOW);
    assert_int_equal(eval(az, 2, r3).result, PROXY_AZ_RES_DENY);
    /* Without XFF: the peer. */
    assert_int_equal(eval(az, 1, (struct req){ .ip = "203.0.113.1" }).result, PROXY_AZ_RES_DENY);
    proxy_authz_free(az);
}

static void test_operations(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("authorization:\n"
             "  - name: a\n"
             "    rules:\n"
             "      - to: [{operation: {hosts: ['*.shop.svc'], not_methods: [DELETE],\n"
             "                          paths: ['/static/*', '*.png', '/u/{*}/profile',\n"
             "                                  '/files/{**}'], ports: ['8080']}}]\n"
             "      - to: [{operation: {hosts: ['api.shop:9000'], not_paths: ['/private*']}}]\n");
    struct req ok = { .host = "www.SHOP.svc", .path = "/static/a.css" };
    assert_true(allowed(az, ok));
    assert_true(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/x/y.png" }));
    assert_true(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/u/bob/profile" }));
    assert_false(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/u/bob/x/profile" }));
    assert_false(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/u//profile" }));
    assert_true(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/files/a/b/c" }));
    assert_true(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/files" }));
    assert_false(allowed(az, (struct req){ .host = "a.shop.svc", .path = "/filesx" }));
    assert_false(
        allowed(az, (struct req){ .host = "a.shop.svc", .path = "/static/a", .method = "DELETE" }));
    assert_false(
        allowed(az, (struct req){ .host = "a.shop.svc", .path = "/static/a", .dport = 9090 }));
    assert_false(allowed(az, (struct req){ .host = "shop.svc", .path = "/static/a" }));
    /* A pattern with a port compares the authority. */
    assert_true(allowed(az, (struct req){ .host = "API.shop:9000", .path = "/x" }));
    assert_false(allowed(az, (struct req){ .host = "api.shop:9001", .path = "/x" }));
    assert_false(allowed(az, (struct req){ .host = "api.shop", .path = "/x" }));
    assert_false(allowed(az, (struct req){ .host = "api.shop:9000", .path = "/private/x" }));
    proxy_authz_free(az);
}

static void test_when(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("authorization:\n"
             "  - name: a\n"
             "    rules:\n"
             "      - when:\n"
             "          - {key: 'request.headers[X-Tenant]', values: [acme, 'beta-*']}\n"
             "          - {key: source.ip, not_values: [10.9.0.0/16]}\n"
             "          - {key: destination.port, values: ['8080']}\n"
             "          - {key: source.namespace, values: [shop]}\n"
             "          - {key: connection.sni, values: ['*.shop']}\n");
    struct req r = { .hdrs = { "x-tenant", "acme" },
                     .principal = "td/ns/shop/sa/x",
                     .sni = "api.shop" };
    assert_true(allowed(az, r));
    r.hdrs[1] = "beta-1";
    assert_true(allowed(az, r));
    r.hdrs[1] = "other";
    assert_false(allowed(az, r));
    r.hdrs[1] = "acme";
    r.ip = "10.9.1.1";
    assert_false(allowed(az, r));
    r.ip = NULL;
    r.sni = NULL;
    assert_false(allowed(az, r));
    proxy_authz_free(az);
    /* A DENY on a header value catches it among several lines. */
    az = load("authorization:\n"
              "  - {name: d, action: DENY, rules: [{when: [{key: 'request.headers[x-role]', "
              "values: [guest]}]}]}\n");
    struct req two = { .hdrs = { "x-role", "admin", "X-Role", "guest" } };
    assert_int_equal(eval(az, 0, two).result, PROXY_AZ_RES_DENY);
    proxy_authz_free(az);
}

static void test_audit_and_dry_run(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("authorization:\n"
             "  - {name: au, action: AUDIT, rules: [{to: [{operation: {paths: [/pay*]}}]}]}\n"
             "  - {name: dry, action: DENY, dry_run: true, rules: [{to: [{operation: {methods: "
             "[DELETE]}}]}]}\n");
    struct proxy_az_decision d = eval(az, 0, (struct req){ .path = "/pay", .method = "DELETE" });
    assert_int_equal(d.result, PROXY_AZ_RES_ALLOW);
    assert_string_equal(d.audit, "au");
    assert_string_equal(d.dry_run, "dry");
    assert_true(d.dry_run_denied);
    d = eval(az, 0, (struct req){ .path = "/x" });
    assert_null(d.audit);
    assert_null(d.dry_run);
    proxy_authz_free(az);
    /* A dry-run ALLOW that would not allow is reported, never enforced. */
    az = load("authorization:\n"
              "  - {name: dry, dry_run: true, rules: [{to: [{operation: {paths: [/ok]}}]}]}\n");
    d = eval(az, 0, (struct req){ .path = "/no" });
    assert_int_equal(d.result, PROXY_AZ_RES_ALLOW);
    assert_true(d.dry_run_denied);
    proxy_authz_free(az);
}

static void test_scoping(void **state)
{
    (void)state;
    const char *y = "workload: {namespace: shop, labels: {app: pay}}\n"
                    "authorization:\n"
                    "  - {name: other-ns, namespace: web}\n"
                    "  - {name: other-app, match_labels: {app: cart}}\n"
                    "  - {name: mesh, namespace: istio-system, action: DENY, rules: [{to: "
                    "[{operation: {paths: [/mesh]}}]}]}\n"
                    "  - {name: mine, match_labels: {app: pay}, rules: [{}]}\n";
    struct proxy_authz *az = load(y);
    assert_true(allowed(az, (struct req){ .path = "/x" }));
    assert_false(allowed(az, (struct req){ .path = "/mesh" }));
    proxy_authz_free(az);
    assert_null(
        load("workload: {namespace: shop}\nauthorization:\n  - {name: x, namespace: web}\n"));
}

static void test_custom_first(void **state)
{
    (void)state;
    struct proxy_authz *az =
        load("extension_providers: [{name: ext, service: 127.0.0.1, port: 9}]\n"
             "authorization:\n"
             "  - {name: c, action: CUSTOM, provider: ext, rules: [{to: [{operation: "
             "{paths: ['/ext*']}}]}]}\n"
             "  - {name: d, action: DENY, rules: [{to: [{operation: {paths: [/ext/deny]}}]}]}\n");
    struct proxy_az_decision d = eval(az, 0, (struct req){ .path = "/ext/a" });
    assert_non_null(d.ext);
    assert_string_equal(d.custom, "c");
    assert_int_equal(d.result, PROXY_AZ_RES_ALLOW);
    d = eval(az, 0, (struct req){ .path = "/ext/deny" });
    assert_non_null(d.ext);
    assert_int_equal(d.result, PROXY_AZ_RES_DENY); /* applies after the authorizer allows */
    d = eval(az, 0, (struct req){ .path = "/other" });
    assert_null(d.ext);
    proxy_authz_free(az);
}

static void test_config_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "authorization:\n  - {name: a, rules: [{from: [{source: {ip_blocks: [10.0.0.0/33]}}]}]}\n",
        "authorization:\n  - {name: a, rules: [{from: [{source: {ip_blocks: [nope]}}]}]}\n",
        "authorization:\n  - {name: a, rules: [{to: [{operation: {ports: ['0']}}]}]}\n",
        "authorization:\n  - {name: a, rules: [{to: [{operation: {paths: ['/a/{**}/b']}}]}]}\n",
        "authorization:\n  - {name: a, rules: [{to: [{operation: {paths: ['/a{*}']}}]}]}\n",
        "authorization:\n  - {name: a, rules: [{when: [{key: request.bogus, values: [x]}]}]}\n",
        "authorization:\n  - {name: a, rules: [{when: [{key: 'request.headers[]', values: "
        "[x]}]}]}\n",
        "authorization:\n  - {name: a, rules: [{when: [{key: source.ip}]}]}\n",
        "authorization:\n  - {name: a, action: CUSTOM, provider: oauth}\n",
        "extension_providers: [{name: x, service: 127.0.0.1, port: 9}]\n"
        "authorization:\n  - {name: a, action: CUSTOM}\n",
        "extension_providers: [{name: x, service: 127.0.0.1}]\n",
        "authorization:\n  - {name: a, action: DENY, provider: oauth}\n",
        "authorization:\n  - {name: a}\n  - {name: a}\n",
        "authorization:\n  - {name: 'a b'}\n",
        "authorization:\n  - {name: a, action: MAYBE}\n",
        "path_normalization: decode_and_merge_slashes\nescaped_slashes: keep\n",
        "path_normalization: sometimes\n",
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        char *err = refused(bad[i]);
        if (!err) {
            fail_msg("accepted: %s", bad[i]);
        }
        sc_free(err);
    }
}

static int setup(void **state)
{
    (void)state;
    reg = sc_metrics_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sc_metrics_free(reg);
    return 0;
}

/* ---- the index against the linear evaluator ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static const char *pick(const char *const *v, size_t n)
{
    return v[rnd((unsigned)n)];
}

#define PICK(v) pick(v, sizeof(v) / sizeof(v[0]))

static const char *const methods[] = { "GET",   "HEAD",    "POST",  "PUT", "DELETE",
                                       "PATCH", "OPTIONS", "PURGE", "get" };
static const char *const method_pats[] = { "GET", "HEAD", "POST", "DELETE", "PURGE",
                                           "get", "G*",   "*T",   "*" };
static const char *const paths[] = { "/",         "/a",       "/a/",      "/a/b",
                                     "/a/b/c",    "/ab",      "/ab/x",    "/b/a",
                                     "/x.php",    "/a/x.php", "/api/v1",  "/api/v1/charge",
                                     "/api/v2/x", "/apis/v1", "/deny-1/x" };
static const char *const path_pats[] = {
    "/a",        "/a/*",     "/a*",   "/ab",    "/a/b",    "/*",     "*.php",           "*",
    "/api/v1/*", "/api/*",   "/api*", "/a/{*}", "/a/{**}", "/{*}/a", "/api/{*}/charge", "/",
    "/b/*",      "/deny-1/*"
};
static const char *const ips[] = { "10.0.0.5", "10.1.2.3", "127.0.0.1", "192.168.1.9" };
static const char *const cidrs[] = { "10.0.0.0/8", "10.0.0.5", "127.0.0.0/8", "192.168.0.0/16",
                                     "10.1.0.0/16" };
static const char *const princs[] = { "cluster.local/ns/shop/sa/order",
                                      "cluster.local/ns/shop/sa/refund",
                                      "cluster.local/ns/ops/sa/admin", "" };
static const char *const princ_pats[] = { "cluster.local/ns/shop/sa/order", "*/sa/refund",
                                          "cluster.local/ns/ops/*", "*" };
static const char *const nss[] = { "shop", "ops", "sh*", "*" };
static const char *const rprincs[] = { "https://iss/alice", "https://iss/bob", "" };
static const char *const rprinc_pats[] = { "https://iss/alice", "https://iss/*", "*" };
static const char *const hosts[] = { "svc.shop", "Admin.Shop", "x.example.com:8080" };
static const char *const host_pats[] = { "svc.shop", "admin.shop", "*.example.com", "*" };
static const char *const ports[] = { "8080", "9090", "443" };
static const char *const snis[] = { "svc.shop", "other", "" };

/* A random list value: "[a, b]" of <k> picks. */
static void list(char *out, size_t cap, const char *const *v, size_t n)
{
    size_t k = 1 + rnd(2), len = 0;
    len += (size_t)snprintf(out + len, cap - len, "[");
    for (size_t i = 0; i < k; i++) {
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\"", i ? ", " : "", pick(v, n));
    }
    snprintf(out + len, cap - len, "]");
}

#define LIST(buf, v) list(buf, sizeof(buf), v, sizeof(v) / sizeof(v[0]))

/* Appends to <y> one random field "key: [values]" of kind <kind> (0-4: a source's, 5-10 an
 * operation's). */
static void field(struct sc_buf *y, bool source, unsigned kind)
{
    char l[256];
    bool neg = rnd(4) == 0;
    if (source) {
        switch (kind) {
        case 0:
            LIST(l, princ_pats);
            sc_buf_appendf(y, "%sprincipals: %s", neg ? "not_" : "", l);
            break;
        case 1:
            LIST(l, nss);
            sc_buf_appendf(y, "%snamespaces: %s", neg ? "not_" : "", l);
            break;
        case 2:
            LIST(l, cidrs);
            sc_buf_appendf(y, "%sip_blocks: %s", neg ? "not_" : "", l);
            break;
        case 3:
            LIST(l, cidrs);
            sc_buf_appendf(y, "%sremote_ip_blocks: %s", neg ? "not_" : "", l);
            break;
        default:
            LIST(l, rprinc_pats);
            sc_buf_appendf(y, "%srequest_principals: %s", neg ? "not_" : "", l);
        }
        return;
    }
    switch (kind) {
    case 0:
    case 1:
        LIST(l, method_pats);
        sc_buf_appendf(y, "%smethods: %s", neg ? "not_" : "", l);
        break;
    case 2:
    case 3:
        LIST(l, path_pats);
        sc_buf_appendf(y, "%spaths: %s", neg ? "not_" : "", l);
        break;
    case 4:
        LIST(l, host_pats);
        sc_buf_appendf(y, "%shosts: %s", neg ? "not_" : "", l);
        break;
    default:
        LIST(l, ports);
        sc_buf_appendf(y, "%sports: %s", neg ? "not_" : "", l);
    }
}

/* A random rule: sources, operations (one to three fields each) and conditions. */
static void rule(struct sc_buf *y)
{
    static const char *const when_keys[] = { "source.ip",        "destination.port",
                                             "connection.sni",   "request.headers[x-a]",
                                             "source.namespace", "request.auth.principal" };
    static const char *const when_vals[] = { "10.0.0.0/8", "8080", "svc.shop",
                                             "1",          "shop", "https://iss/alice" };
    sc_buf_appendf(y, "{");
    const char *sep = "";
    for (int part = 0; part < 2; part++) {
        if (rnd(3) == 0) {
            continue;
        }
        sc_buf_appendf(y, "%s%s: [", sep, part ? "to" : "from");
        unsigned n = 1 + rnd(2);
        for (unsigned i = 0; i < n; i++) {
            sc_buf_appendf(y, "%s{%s: {", i ? ", " : "", part ? "operation" : "source");
            /* One to three fields of distinct kinds (methods and paths twice as likely). */
            static const unsigned src_kinds[] = { 0, 1, 2, 3, 4 }, op_kinds[] = { 0, 2, 4, 5 };
            const unsigned *kinds = part ? op_kinds : src_kinds;
            unsigned nk = part ? 4 : 5, used = 0, f = 1 + rnd(3);
            for (unsigned k = 0; k < f; k++) {
                unsigned kind = kinds[rnd(nk)];
                if (part && kind != 5 && rnd(2)) {
                    kind++; /* 1: methods, 3: paths (the same keys as 0 and 2) */
                }
                unsigned bit = 1u << (part && kind < 4 ? kind / 2 * 2 : kind);
                if (used & bit) {
                    continue;
                }
                sc_buf_appendf(y, "%s", used ? ", " : "");
                used |= bit;
                field(y, part == 0, kind);
            }
            sc_buf_appendf(y, "}}");
        }
        sc_buf_appendf(y, "]");
        sep = ", ";
    }
    if (rnd(4) == 0) {
        unsigned k = rnd(6);
        sc_buf_appendf(y, "%swhen: [{key: \"%s\", %svalues: [\"%s\"]}]", sep, when_keys[k],
                       rnd(3) == 0 ? "not_" : "", when_vals[k]);
    }
    sc_buf_appendf(y, "}");
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The indexed evaluator, with and without a connection's cache, decides as the linear one on
 * random policy sets (every action, dry runs, every indexed and unindexed field kind) and random
 * requests, several on each connection. */
static void test_index_differential(void **state)
{
    (void)state;
    for (int set = 0; set < 400; set++) {
        struct sc_buf y;
        sc_buf_init(&y, 1 << 20);
        sc_buf_appendf(&y, "xff_num_trusted_hops: 1\n"
                           "extension_providers: [{name: ext, service: 127.0.0.1, port: 9}]\n"
                           "authorization:\n");
        unsigned npol = 1 + rnd(24);
        for (unsigned i = 0; i < npol; i++) {
            static const char *const actions[] = { "ALLOW", "ALLOW", "DENY",
                                                   "DENY",  "AUDIT", "CUSTOM" };
            const char *a = PICK(actions);
            sc_buf_appendf(&y, "  - {name: p%u, action: %s%s%s, rules: [", i, a,
                           strcmp(a, "CUSTOM") == 0 ? ", provider: ext" : "",
                           rnd(6) == 0 ? ", dry_run: true" : "");
            unsigned nr = rnd(4);
            for (unsigned r = 0; r < nr; r++) {
                if (r) {
                    sc_buf_appendf(&y, ", ");
                }
                rule(&y);
            }
            sc_buf_appendf(&y, "]}\n");
        }
        sc_buf_append(&y, "", 1);
        struct proxy_authz *az = load(y.p);
        assert_non_null(az);
        for (int c = 0; c < 12; c++) {
            struct proxy_az_conn conn;
            memset(&conn, 0, sizeof(conn));
            const char *ip = PICK(ips), *princ = PICK(princs), *sni = PICK(snis);
            static const int dports[] = { 8080, 9090, 443 };
            int dport = dports[rnd(3)];
            for (int q = 0; q < 8; q++) {
                const char *method = PICK(methods), *path = PICK(paths), *host = PICK(hosts);
                const char *rp = PICK(rprincs), *xff = PICK(ips);
                struct sc_http_header h[2] = {
                    { SC_STR("X-Forwarded-For"), sc_str_c(xff) },
                    { SC_STR("x-a"), rnd(2) ? SC_STR("1") : SC_STR("2") },
                };
                struct sc_http_msg m = { .headers = h, .nheaders = 2 };
                char hb[256];
                struct proxy_az_auth auth = { .principal = sc_str_c(rp) };
                struct proxy_az_req rq = {
                    .m = &m,
                    .method = sc_str_c(method),
                    .path = sc_str_c(path),
                    .authority = sc_str_c(host),
                    .principal = sc_str_c(princ),
                    .sni = sc_str_c(sni),
                    .dport = dport,
                    .auth = *rp ? &auth : NULL,
                };
                rq.host = sc_str_n(hb, proxy_host_normalize(rq.authority, hb, sizeof(hb)));
                assert_int_equal(proxy_az_ip_parse(sc_str_c(ip), &rq.source), 0);
                assert_int_equal(proxy_az_ip_parse(SC_STR("10.0.0.1"), &rq.dest), 0);
                proxy_authz_remote_ip(&m, 1, &rq.source, &rq.remote);
                struct proxy_az_decision lin, ix, ixc;
                proxy_authz_eval_linear(az, &rq, &lin);
                proxy_authz_eval(az, &rq, &ix);
                rq.conn = &conn;
                proxy_authz_eval(az, &rq, &ixc);
                const struct proxy_az_decision *v[] = { &ix, &ixc };
                for (int k = 0; k < 2; k++) {
                    const struct proxy_az_decision *d = v[k];
                    if (d->result != lin.result || !same(d->policy, lin.policy) ||
                        !same(d->audit, lin.audit) || !same(d->custom, lin.custom) ||
                        d->ext != lin.ext || !same(d->dry_run, lin.dry_run) ||
                        d->dry_run_denied != lin.dry_run_denied) {
                        fail_msg("indexed (%s cache) differs from linear: %s %s host %s from %s "
                                 "%s sni %s port %d rp %s xff %s\n%s",
                                 k ? "with" : "without", method, path, host, ip, princ, sni, dport,
                                 rp, xff, y.p);
                    }
                }
            }
        }
        proxy_authz_free(az);
        sc_buf_cleanup(&y);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_defaults),
        cmocka_unit_test(test_payment_example),
        cmocka_unit_test(test_deny_prefix_bypasses),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_remote_ip),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_when),
        cmocka_unit_test(test_audit_and_dry_run),
        cmocka_unit_test(test_scoping),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_custom_first),
        cmocka_unit_test(test_index_differential),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
