// SPDX-License-Identifier: Apache-2.0
// Unit tests for the table-driven configuration loader: every option type through one test table
// (nested OBJ, OBJLIST inside OBJLIST, INLINE), exact "name:line:col: message" errors, env
// expansion, duration and size syntax, flags, the JSON dump, help and doc text, and the limits
// (alias bombs, nesting, input size). Run under ASan, the frees are checked too.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/error.h"

/* ---- the test table ---- */

struct route {
    char *path;
    struct sc_strv methods;
    uint64_t timeout;
};

struct tls {
    char *cert;
    char *key;
    bool verify;
};

struct listener {
    char *name;
    char *address;
    int64_t port;
    struct tls tls;
    struct sc_vec routes;
};

struct common {
    int level;
    char *token;
};

struct cfg {
    char *name;
    bool debug;
    int64_t workers;
    uint64_t timeout;
    uint64_t max_body;
    double ratio;
    struct sc_strv upstreams;
    struct sc_kvv labels;
    struct sc_vec listeners;
    struct tls admin_tls;
    struct common common;
    int64_t shards;
    char *config;
};

static const char *const levels[] = { "debug", "info", "warn", "error", NULL };

static int check_pow2(void *field, char **err)
{
    int64_t v = *(int64_t *)field;
    if (v <= 0 || (v & (v - 1)) != 0) {
        *err = sc_asprintf("must be a power of two, got %lld", (long long)v);
        return -EINVAL;
    }
    return 0;
}

static const struct sc_opt route_opts[] = {
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct route, path),
      .flags = SC_OPT_REQUIRED,
      .help = "path prefix" },
    { .name = "methods",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct route, methods),
      .help = "allowed methods" },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct route, timeout),
      .def = "5s",
      .help = "upstream timeout" },
    { 0 },
};

static const struct sc_opt tls_opts[] = {
    { .name = "cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct tls, cert),
      .help = "certificate file" },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct tls, key),
      .flags = SC_OPT_SECRET,
      .help = "private key" },
    { .name = "verify",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct tls, verify),
      .def = "true",
      .help = "verify peers" },
    { 0 },
};

static const struct sc_opt listener_opts[] = {
    { .name = "name", .type = SC_OPT_STR, .offset = offsetof(struct listener, name) },
    { .name = "address",
      .type = SC_OPT_STR,
      .offset = offsetof(struct listener, address),
      .flags = SC_OPT_REQUIRED,
      .help = "bind address" },
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct listener, port),
      .def = "80",
      .min = 1,
      .max = 65535,
      .help = "bind port" },
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct listener, tls),
      .sub = tls_opts,
      .help = "TLS settings" },
    { .name = "routes",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct listener, routes),
      .sub = route_opts,
      .sub_size = sizeof(struct route),
      .max = 8,
      .help = "routes" },
    { 0 },
};

static const struct sc_opt common_opts[] = {
    { .name = "log_level",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct common, level),
      .enums = levels,
      .def = "info",
      .flags = SC_OPT_FLAG,
      .help = "minimum log level" },
    { .name = "token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct common, token),
      .flags = SC_OPT_SECRET | SC_OPT_FLAG,
      .help = "API token" },
    { 0 },
};

static const struct sc_opt cfg_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct cfg, name),
      .def = "sidecar",
      .flags = SC_OPT_FLAG,
      .help = "instance name" },
    { .name = "debug",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct cfg, debug),
      .flags = SC_OPT_FLAG,
      .help = "debug mode" },
    { .name = "workers",
      .type = SC_OPT_INT,
      .offset = offsetof(struct cfg, workers),
      .def = "4",
      .min = 1,
      .max = 64,
      .flags = SC_OPT_FLAG,
      .help = "worker threads" },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct cfg, timeout),
      .def = "30s",
      .min = 1,
      .max = 3600000,
      .flags = SC_OPT_FLAG,
      .help = "request timeout" },
    { .name = "max_body",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct cfg, max_body),
      .def = "1MiB",
      .flags = SC_OPT_FLAG,
      .help = "largest request body" },
    { .name = "ratio",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct cfg, ratio),
      .def = "0.5",
      .min = 0,
      .max = 1,
      .flags = SC_OPT_FLAG,
      .help = "sampling ratio" },
    { .name = "upstreams",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct cfg, upstreams),
      .def = "x:1, y:2",
      .flags = SC_OPT_FLAG,
      .help = "upstream addresses" },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct cfg, labels),
      .def = "env=prod",
      .flags = SC_OPT_FLAG,
      .help = "labels | added to metrics" },
    { .name = "listeners",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct cfg, listeners),
      .sub = listener_opts,
      .sub_size = sizeof(struct listener),
      .help = "listeners" },
    { .name = "admin_tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct cfg, admin_tls),
      .sub = tls_opts,
      .help = "admin TLS" },
    { .name = "common",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct cfg, common),
      .sub = common_opts },
    { .name = "shards",
      .type = SC_OPT_INT,
      .offset = offsetof(struct cfg, shards),
      .def = "1",
      .check = check_pow2,
      .help = "shard count" },
    { .name = "config",
      .type = SC_OPT_STR,
      .offset = offsetof(struct cfg, config),
      .flags = SC_OPT_FLAG_ONLY,
      .flag_alias = "c",
      .help = "config file" },
    { 0 },
};

static const char full_yaml[] = "name: edge-1\n"
                                "debug: true\n"
                                "workers: 8\n"
                                "timeout: 1m30s\n"
                                "max_body: 2MiB\n"
                                "ratio: 0.25\n"
                                "upstreams: [a:1, b:2]\n"
                                "labels:\n"
                                "  app: web\n"
                                "  tier: \"front\"\n"
                                "log_level: warn\n"
                                "token: s3cret\n"
                                "shards: 4\n"
                                "admin_tls:\n"
                                "  cert: /etc/cert.pem\n"
                                "  verify: false\n"
                                "listeners:\n"
                                "  - name: public\n"
                                "    address: 0.0.0.0\n"
                                "    port: 8080\n"
                                "    tls: {cert: a.pem, key: a.key}\n"
                                "    routes:\n"
                                "      - path: /api\n"
                                "        methods: [GET, POST]\n"
                                "        timeout: 250ms\n"
                                "      - path: /health\n"
                                "        methods: GET\n"
                                "  - address: 127.0.0.1\n"
                                "    port: 9090\n";

static void cfg_init(struct cfg *c)
{
    memset(c, 0, sizeof(*c));
    sc_config_defaults(cfg_opts, c);
}

static int load(struct cfg *c, const char *yaml, char **err)
{
    return sc_config_load_string(cfg_opts, c, "t.yaml", yaml, strlen(yaml), err);
}

static struct listener *listener_at(struct cfg *c, size_t i)
{
    return &((struct listener *)c->listeners.v)[i];
}

static struct route *route_at(struct listener *l, size_t i)
{
    return &((struct route *)l->routes.v)[i];
}

/* Loads <yaml> on top of defaults, expects an error, and compares it with <want>. */
static void expect_err(const char *yaml, const char *want)
{
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    int rc = load(&c, yaml, &err);
    if (rc != SC_ECONFIG || !err || strcmp(err, want) != 0) {
        print_error("yaml:\n%s\nwant: %s\ngot:  %s (rc %d)\n", yaml, want, err ? err : "(null)",
                    rc);
    }
    assert_int_equal(rc, SC_ECONFIG);
    assert_non_null(err);
    assert_string_equal(err, want);
    sc_free(err);
    sc_config_free(cfg_opts, &c);
}

/* ---- tests ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    assert_string_equal(c.name, "sidecar");
    assert_false(c.debug);
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.timeout, 30000);
    assert_int_equal(c.max_body, 1048576);
    assert_true(c.ratio == 0.5);
    assert_int_equal(c.upstreams.n, 2);
    assert_string_equal(c.upstreams.v[0], "x:1");
    assert_string_equal(c.upstreams.v[1], "y:2");
    assert_int_equal(c.labels.n, 1);
    assert_string_equal(c.labels.v[0].key, "env");
    assert_string_equal(c.labels.v[0].value, "prod");
    assert_int_equal(c.listeners.n, 0);
    assert_null(c.admin_tls.cert);
    assert_true(c.admin_tls.verify);
    assert_int_equal(c.common.level, 1);
    assert_null(c.common.token);
    assert_int_equal(c.shards, 1);
    assert_null(c.config);
    sc_config_free(cfg_opts, &c);
}

static void test_load_full(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    assert_int_equal(load(&c, full_yaml, &err), 0);
    assert_null(err);
    assert_string_equal(c.name, "edge-1");
    assert_true(c.debug);
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.timeout, 90000);
    assert_int_equal(c.max_body, 2 * 1048576);
    assert_true(c.ratio == 0.25);
    assert_int_equal(c.upstreams.n, 2);
    assert_string_equal(c.upstreams.v[0], "a:1");
    assert_string_equal(c.upstreams.v[1], "b:2");
    assert_int_equal(c.labels.n, 2);
    assert_string_equal(c.labels.v[0].key, "app");
    assert_string_equal(c.labels.v[0].value, "web");
    assert_string_equal(c.labels.v[1].key, "tier");
    assert_string_equal(c.labels.v[1].value, "front");
    assert_int_equal(c.common.level, 2);
    assert_string_equal(c.common.token, "s3cret");
    assert_int_equal(c.shards, 4);
    assert_string_equal(c.admin_tls.cert, "/etc/cert.pem");
    assert_false(c.admin_tls.verify);
    assert_int_equal(c.listeners.n, 2);

    struct listener *l0 = listener_at(&c, 0), *l1 = listener_at(&c, 1);
    assert_string_equal(l0->name, "public");
    assert_string_equal(l0->address, "0.0.0.0");
    assert_int_equal(l0->port, 8080);
    assert_string_equal(l0->tls.cert, "a.pem");
    assert_string_equal(l0->tls.key, "a.key");
    assert_true(l0->tls.verify); /* the sub-struct default survives */
    assert_int_equal(l0->routes.n, 2);
    struct route *r0 = route_at(l0, 0), *r1 = route_at(l0, 1);
    assert_string_equal(r0->path, "/api");
    assert_int_equal(r0->methods.n, 2);
    assert_string_equal(r0->methods.v[1], "POST");
    assert_int_equal(r0->timeout, 250);
    assert_string_equal(r1->path, "/health");
    assert_int_equal(r1->methods.n, 1); /* a single scalar is a one-element list */
    assert_string_equal(r1->methods.v[0], "GET");
    assert_int_equal(r1->timeout, 5000);

    assert_null(l1->name);
    assert_string_equal(l1->address, "127.0.0.1");
    assert_int_equal(l1->port, 9090);
    assert_null(l1->tls.cert);
    assert_int_equal(l1->routes.n, 0);

    assert_int_equal(sc_config_check_required(cfg_opts, &c, "t.yaml", &err), 0);
    sc_config_free(cfg_opts, &c);
}

static void test_empty_and_null(void **state)
{
    (void)state;
    static const char *const docs[] = { "",
                                        "# only a comment\n",
                                        "---\n",
                                        "~\n",
                                        "---\n...\n",
                                        ("name:\nworkers: ~\ntimeout: null\nlisteners:\n"
                                         "upstreams: Null\nlabels: NULL\nadmin_tls:\n") };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        struct cfg c;
        cfg_init(&c);
        char *err = NULL;
        assert_int_equal(load(&c, docs[i], &err), 0);
        assert_string_equal(c.name, "sidecar");
        assert_int_equal(c.workers, 4);
        assert_int_equal(c.timeout, 30000);
        assert_int_equal(c.upstreams.n, 2);
        assert_int_equal(c.labels.n, 1);
        sc_config_free(cfg_opts, &c);
    }
    /* Quoted or tagged, "null" and "" are strings. */
    struct cfg c;
    cfg_init(&c);
    assert_int_equal(load(&c, "name: \"null\"\nlisteners: [{address: '', name: !!str ~}]\n", NULL),
                     0);
    assert_string_equal(c.name, "null");
    assert_string_equal(listener_at(&c, 0)->address, "");
    assert_string_equal(listener_at(&c, 0)->name, "~");
    sc_config_free(cfg_opts, &c);
}

static void test_load_on_top(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    assert_int_equal(load(&c, full_yaml, NULL), 0);
    /* Keys present replace (lists and maps wholesale); objects merge; absent keys stay. */
    assert_int_equal(load(&c,
                          "name: second\nupstreams: [z:9]\nlabels: {a: b}\n"
                          "admin_tls: {key: k}\nlisteners: [{address: '::1'}]\n",
                          NULL),
                     0);
    assert_string_equal(c.name, "second");
    assert_int_equal(c.upstreams.n, 1);
    assert_string_equal(c.upstreams.v[0], "z:9");
    assert_int_equal(c.labels.n, 1);
    assert_string_equal(c.labels.v[0].key, "a");
    assert_string_equal(c.admin_tls.cert, "/etc/cert.pem");
    assert_string_equal(c.admin_tls.key, "k");
    assert_int_equal(c.listeners.n, 1);
    assert_string_equal(listener_at(&c, 0)->address, "::1");
    assert_int_equal(listener_at(&c, 0)->port, 80);
    assert_int_equal(c.workers, 8);
    assert_int_equal(load(&c, "upstreams: []\nlisteners: []\nlabels: {}\n", NULL), 0);
    assert_int_equal(c.upstreams.n, 0);
    assert_int_equal(c.listeners.n, 0);
    assert_int_equal(c.labels.n, 0);
    sc_config_free(cfg_opts, &c);
}

static void test_errors(void **state)
{
    (void)state;
    /* Unknown keys, with hints from the keys valid at that level (INLINE included). */
    expect_err("name: a\nlistner:\n  - address: x\n",
               "t.yaml:2:1: unknown key \"listner\" (did you mean \"listeners\"?)");
    expect_err("log_levl: info\n",
               "t.yaml:1:1: unknown key \"log_levl\" (did you mean \"log_level\"?)");
    expect_err("frobnicate: 1\n", "t.yaml:1:1: unknown key \"frobnicate\"");
    expect_err("config: x.yaml\n", "t.yaml:1:1: unknown key \"config\""); /* flag only */
    expect_err("listeners:\n"
               "  - address: a\n"
               "  - address: b\n"
               "    routes:\n"
               "      - path: /\n"
               "        tmeout: 1s\n",
               "t.yaml:6:9: unknown key \"tmeout\" (did you mean \"timeout\"?)");
    expect_err("listeners: [{address: a, tls: {cret: x}}]\n",
               "t.yaml:1:32: unknown key \"cret\" (did you mean \"cert\"?)");
    /* Wrong types, at the value. */
    expect_err("workers: {a: 1}\n", "t.yaml:1:10: expected an integer, got a mapping");
    expect_err("name: [a]\n", "t.yaml:1:7: expected a string, got a list");
    expect_err("admin_tls: yes\n", "t.yaml:1:12: expected a mapping, got \"yes\"");
    expect_err("listeners: {address: a}\n",
               "t.yaml:1:12: expected a list of mappings, got a mapping");
    expect_err("listeners: [a]\n", "t.yaml:1:13: expected a mapping, got \"a\"");
    expect_err("listeners:\n  -\n", "t.yaml:2:4: expected a mapping, got null");
    expect_err("upstreams: {a: b}\n", "t.yaml:1:12: expected a list of strings, got a mapping");
    expect_err("upstreams: [a, [b]]\n", "t.yaml:1:16: expected a string, got a list");
    expect_err("labels: [a]\n", "t.yaml:1:9: expected a mapping of strings, got a list");
    expect_err("labels: {a: {b: c}}\n", "t.yaml:1:13: expected a string, got a mapping");
    expect_err("debug: [true]\n", "t.yaml:1:8: expected true or false, got a list");
    expect_err("timeout: {s: 1}\n", "t.yaml:1:10: expected a duration, got a mapping");
    expect_err("max_body: [1]\n", "t.yaml:1:11: expected a size, got a list");
    expect_err("ratio: [1]\n", "t.yaml:1:8: expected a number, got a list");
    expect_err("log_level: [info]\n", "t.yaml:1:12: expected a string, got a list");
    expect_err("debug: yes\n", "t.yaml:1:8: invalid boolean \"yes\" (expected true or false)");
    /* A message stays one line: control bytes it quotes from the input are escaped. */
    expect_err("debug: \"a\\r\\nb\"\n",
               "t.yaml:1:8: invalid boolean \"a\\x0d\\x0ab\" (expected true or false)");
    expect_err("[a, b]\n", "t.yaml:1:1: expected a mapping at the top level, got a list");
    expect_err("hello\n", "t.yaml:1:1: expected a mapping at the top level, got \"hello\"");
    expect_err("? [a]\n: b\n", "t.yaml:1:3: expected a string as key, got a list");
    expect_err("\"\": 1\n", "t.yaml:1:1: empty key");
    /* Bad values. */
    expect_err(
        "timeout: 10 parsecs\n",
        "t.yaml:1:10: invalid duration \"10 parsecs\" (expected e.g. 250ms, 30s, 5m, 1h30m)");
    expect_err("max_body: 12XB\n",
               "t.yaml:1:11: invalid size \"12XB\" (expected e.g. 512, 64KiB, 1MiB, 10MB)");
    expect_err("log_level: verbose\n", "t.yaml:1:12: invalid value \"verbose\" (expected one of: "
                                       "debug, info, warn, error)");
    expect_err("workers: 100\n", "t.yaml:1:10: 100 is out of range [1, 64]");
    expect_err("workers: 12abc\n", "t.yaml:1:10: invalid integer \"12abc\"");
    expect_err("workers: 99999999999999999999\n",
               "t.yaml:1:10: invalid integer \"99999999999999999999\"");
    expect_err("timeout: 2h\n", "t.yaml:1:10: 2h is out of range [1ms, 1h]");
    expect_err("ratio: 1.5\n", "t.yaml:1:8: 1.5 is out of range [0, 1]");
    expect_err("ratio: nan\n", "t.yaml:1:8: invalid number \"nan\"");
    expect_err("listeners: [{address: a, port: 0}]\n", "t.yaml:1:32: 0 is out of range [1, 65535]");
    expect_err("listeners:\n  - address: a\n    routes: [{path: a}, {path: b}, {path: c}, "
               "{path: d}, {path: e}, {path: f}, {path: g}, {path: h}, {path: i}]\n",
               "t.yaml:3:13: expected between 0 and 8 elements, got 9");
    expect_err("shards: 3\n", "t.yaml:1:9: must be a power of two, got 3");
    /* Duplicates name the first occurrence. */
    expect_err("bogus: 1\nname: a\nname: b\n", "t.yaml:1:1: unknown key \"bogus\"");
    expect_err("name: a\nworkers: 2\nname: b\n",
               "t.yaml:3:1: duplicate key \"name\" (first at line 1)");
    expect_err("labels:\n  a: 1\n  b: 2\n  a: 3\n",
               "t.yaml:4:3: duplicate key \"a\" (first at line 2)");
    /* YAML syntax errors come from libyaml's marks. */
    expect_err("name: a\n  workers: 2\n",
               "t.yaml:2:10: mapping values are not allowed in this context");
    expect_err("upstreams: [a, b\n", "t.yaml:2:1: did not find expected ',' or ']' (while parsing "
                                     "a flow sequence started at line 1, column 12)");
    expect_err("name: \"abc\n", "t.yaml:2:1: found unexpected end of stream (while scanning a "
                                "quoted scalar started at line 1, column 7)");
    expect_err("name: a\n---\nname: b\n", "t.yaml:2:1: only one YAML document is allowed");
    expect_err("name: *nope\n", "t.yaml:1:7: undefined alias \"nope\"");
    expect_err("name: \"a\\0b\"\n", "t.yaml:1:7: NUL character in a scalar");
    expect_err("name: \xff\n", "t.yaml:1:7: invalid leading UTF-8 octet (byte 0xff)");
    /* Errors inside a value count characters, not bytes, as libyaml does. */
    expect_err("labels: {é: \"x\", \"\xc3\xa9\": y}\n",
               "t.yaml:1:18: duplicate key \"\xc3\xa9\" (first at line 1)");
}

static void test_env(void **state)
{
    (void)state;
    setenv("SC_T_A", "alpha", 1);
    setenv("SC_T_EMPTY", "", 1);
    setenv("SC_T_PORT", "8443", 1);
    unsetenv("SC_T_UNSET");

    static const struct {
        const char *in, *out;
    } ok[] = {
        { "plain", "plain" },
        { "${SC_T_A}", "alpha" },
        { "x-${SC_T_A}-y", "x-alpha-y" },
        { "${SC_T_UNSET:-dflt}", "dflt" },
        { "${SC_T_EMPTY:-dflt}", "dflt" },
        { "${SC_T_A:-dflt}", "alpha" },
        { "${SC_T_UNSET:-}", "" },
        { "$$", "$" },
        { "$${SC_T_A}", "${SC_T_A}" },
        { "cost: $5", "cost: $5" },
        { "trailing $", "trailing $" },
        { "${SC_T_A}${SC_T_A}", "alphaalpha" },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *err = NULL;
        char *s = sc_value_env_expand(ok[i].in, &err, NULL);
        assert_non_null(s);
        assert_string_equal(s, ok[i].out);
        sc_free(s);
    }
    static const struct {
        const char *in, *msg;
        size_t pos;
    } bad[] = {
        { "ab${SC_T_UNSET}", "environment variable \"SC_T_UNSET\" is not set", 2 },
        { "${SC_T_A", "unterminated \"${\"", 0 },
        { "x${SC_T_A:-abc", "unterminated \"${\"", 1 },
        { "${}", "invalid variable reference: expected ${NAME} or ${NAME:-default}", 0 },
        { "${1A}", "invalid variable reference: expected ${NAME} or ${NAME:-default}", 0 },
        { "${A B}", "invalid variable reference: expected ${NAME} or ${NAME:-default}", 0 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        size_t pos = 99;
        assert_null(sc_value_env_expand(bad[i].in, &err, &pos));
        assert_non_null(err);
        assert_string_equal(err, bad[i].msg);
        assert_int_equal(pos, bad[i].pos);
        sc_free(err);
    }

    /* Through the loader: scalars expand before conversion; keys never do. */
    struct cfg c;
    cfg_init(&c);
    assert_int_equal(load(&c,
                          "name: n-${SC_T_A}\nlisteners: [{address: '${SC_T_A}', port: "
                          "\"${SC_T_PORT}\"}]\nlabels: {k: $$HOME}\n",
                          NULL),
                     0);
    assert_string_equal(c.name, "n-alpha");
    assert_string_equal(listener_at(&c, 0)->address, "alpha");
    assert_int_equal(listener_at(&c, 0)->port, 8443);
    assert_string_equal(c.labels.v[0].value, "$HOME");
    sc_config_free(cfg_opts, &c);
    expect_err("${SC_T_A}: 1\n", "t.yaml:1:1: unknown key \"${SC_T_A}\"");
    /* The column of the reference itself in plain and simple quoted scalars... */
    expect_err("name: abc-${SC_T_UNSET}\n",
               "t.yaml:1:11: environment variable \"SC_T_UNSET\" is not set");
    expect_err("name: 'é ${SC_T_UNSET}'\n",
               "t.yaml:1:10: environment variable \"SC_T_UNSET\" is not set");
    /* ...else the scalar's start. */
    expect_err("name: \"x ${SC_T_UNSET}\"\n",
               "t.yaml:1:7: environment variable \"SC_T_UNSET\" is not set");
    expect_err("workers: ${SC_T_A}\n", "t.yaml:1:10: invalid integer \"alpha\"");

    /* A message too long for the message buffer is cut, not lost. */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 16);
    sc_buf_append_cstr(&b, "name: ${SC_T_");
    for (int i = 0; i < 8000; i++) {
        sc_buf_append(&b, "X", 1);
    }
    sc_buf_append_cstr(&b, "}\n");
    cfg_init(&c);
    char *err = NULL;
    assert_int_equal(load(&c, sc_buf_cstr(&b), &err), SC_ECONFIG);
    assert_int_equal(strncmp(err, "t.yaml:1:7: environment variable \"SC_T_XXX", 42), 0);
    assert_int_equal(strcmp(err + strlen(err) - 6, "XXX..."), 0);
    assert_true(strlen(err) < 4200);
    sc_free(err);
    sc_config_free(cfg_opts, &c);
    sc_buf_cleanup(&b);
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t ms;
    } ok[] = {
        { "0", 0 },
        { "0s", 0 },
        { "250ms", 250 },
        { "30s", 30000 },
        { "5m", 300000 },
        { "1h", 3600000 },
        { "1h30m", 5400000 },
        { "1.5s", 1500 },
        { "0.25s", 250 },
        { "1h2m3s4ms", 3723004 },
        { "2.5h", 9000000 },
        { "1.0ms", 1 },
        { "9223372036854775807ms", 9223372036854775807ULL },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 1;
        assert_int_equal(sc_value_parse_duration(ok[i].in, &v), 0);
        assert_int_equal(v, ok[i].ms);
    }
    static const char *const bad[] = {
        "",
        "10",
        "10 s",
        "-1s",
        "1.5ms",
        "s",
        "1x",
        "1sm",
        "1s1s",
        "1m1h",
        ".5s",
        "1.s",
        "1S",
        "1us",
        "00",
        " 1s",
        "1s ",
        "10 parsecs",
        "9223372036854775808ms",
        "99999999999999999999h",
        "2562047788015216h",
        "0.0000000001s",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        if (sc_value_parse_duration(bad[i], &v) != -EINVAL) {
            print_error("duration \"%s\" accepted\n", bad[i]);
            fail();
        }
        assert_int_equal(v, 7);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t bytes;
    } ok[] = {
        { "0", 0 },
        { "512", 512 },
        { "512B", 512 },
        { "64KiB", 65536 },
        { "1MiB", 1048576 },
        { "2GiB", 2147483648ULL },
        { "1TiB", 1099511627776ULL },
        { "10KB", 10000 },
        { "10kB", 10000 },
        { "10MB", 10000000 },
        { "3GB", 3000000000ULL },
        { "1TB", 1000000000000ULL },
        { "256Mi", 268435456 },
        { "4Ki", 4096 },
        { "1Gi", 1073741824 },
        { "9223372036854775807", 9223372036854775807ULL },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 1;
        assert_int_equal(sc_value_parse_size(ok[i].in, &v), 0);
        assert_int_equal(v, ok[i].bytes);
    }
    static const char *const bad[] = {
        "",           "MiB",
        "10M",        "10K",
        "10G",        "1.5MiB",
        "-1",         "10 MiB",
        "10mb",       "10b",
        "1XB",        "0x10",
        "10MiBs",     "9223372036854775808",
        "8388608TiB", "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        if (sc_value_parse_size(bad[i], &v) != -EINVAL) {
            print_error("size \"%s\" accepted\n", bad[i]);
            fail();
        }
        assert_int_equal(v, 7);
    }
}

static void test_flags(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "workers", "16", &err), 0);
    assert_int_equal(c.workers, 16);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "debug", NULL, &err), 0);
    assert_true(c.debug);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "debug", "FALSE", &err), 0);
    assert_false(c.debug);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "max-body", "64KiB", &err), 0);
    assert_int_equal(c.max_body, 65536);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "max_body", "1KB", &err), 0);
    assert_int_equal(c.max_body, 1000);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "log-level", "error", &err), 0);
    assert_int_equal(c.common.level, 3);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "token", "t0k", &err), 0);
    assert_string_equal(c.common.token, "t0k");
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "name", "n1", &err), 0);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "name", "n2", &err), 0);
    assert_string_equal(c.name, "n2");
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "c", "/etc/sc.yaml", &err), 0);
    assert_string_equal(c.config, "/etc/sc.yaml");
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "config", "/x.yaml", &err), 0);
    assert_string_equal(c.config, "/x.yaml");
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "timeout", "1m", &err), 0);
    assert_int_equal(c.timeout, 60000);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "ratio", "0.125", &err), 0);
    assert_true(c.ratio == 0.125);

    /* Lists append, commas split; maps take key=value and replace an existing key. */
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "upstreams", "a:1", &err), 0);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "upstreams", "b:2, c:3,,", &err), 0);
    assert_int_equal(c.upstreams.n, 5);
    assert_string_equal(c.upstreams.v[2], "a:1");
    assert_string_equal(c.upstreams.v[3], "b:2");
    assert_string_equal(c.upstreams.v[4], "c:3");
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "labels", "team=core", &err), 0);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "labels", "env=dev=1", &err), 0);
    assert_int_equal(c.labels.n, 2);
    assert_string_equal(c.labels.v[0].key, "env");
    assert_string_equal(c.labels.v[0].value, "dev=1");
    assert_string_equal(c.labels.v[1].key, "team");
    assert_string_equal(c.labels.v[1].value, "core");
    assert_null(err);

    static const struct {
        const char *flag, *value, *msg;
        int rc;
    } bad[] = {
        { "workers", "abc", "--workers: invalid integer \"abc\"", SC_ECONFIG },
        { "workers", "0", "--workers: 0 is out of range [1, 64]", SC_ECONFIG },
        { "workers", NULL, "--workers: requires a value", SC_ECONFIG },
        { "debug", "maybe", "--debug: invalid boolean \"maybe\" (expected true or false)",
          SC_ECONFIG },
        { "log_level", "loud",
          "--log-level: invalid value \"loud\" (expected one of: debug, info, warn, error)",
          SC_ECONFIG },
        { "labels", "novalue", "--labels: expected key=value, got \"novalue\"", SC_ECONFIG },
        { "labels", "=v", "--labels: expected key=value, got \"=v\"", SC_ECONFIG },
        { "timeout", "10 parsecs",
          "--timeout: invalid duration \"10 parsecs\" (expected e.g. 250ms, 30s, 5m, 1h30m)",
          SC_ECONFIG },
        { "wrokers", "1", "unknown flag \"--wrokers\" (did you mean \"--workers\"?)", -ENOENT },
        { "log_lvel", "1", "unknown flag \"--log-lvel\" (did you mean \"--log-level\"?)", -ENOENT },
        { "zzz", "1", "unknown flag \"--zzz\"", -ENOENT },
        /* Not flags: file-only keys and nested keys. */
        { "shards", "2", "unknown flag \"--shards\"", -ENOENT },
        { "listeners", "x", "unknown flag \"--listeners\"", -ENOENT },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        assert_int_equal(sc_config_set_flag(cfg_opts, &c, bad[i].flag, bad[i].value, &err),
                         bad[i].rc);
        assert_non_null(err);
        assert_string_equal(err, bad[i].msg);
        sc_free(err);
    }
    assert_ptr_equal(sc_config_find_flag(cfg_opts, "c"), &cfg_opts[12]);
    assert_ptr_equal(sc_config_find_flag(cfg_opts, "log-level"), &common_opts[0]);
    assert_null(sc_config_find_flag(cfg_opts, "shards"));
    sc_config_free(cfg_opts, &c);
}

static void test_required(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    assert_int_equal(sc_config_check_required(cfg_opts, &c, "t.yaml", &err), 0);
    assert_int_equal(load(&c,
                          "listeners:\n  - address: a\n  - address: b\n    routes:\n"
                          "      - path: /\n      - methods: [GET]\n",
                          NULL),
                     0);
    assert_int_equal(sc_config_check_required(cfg_opts, &c, "t.yaml", &err), SC_ECONFIG);
    assert_string_equal(err, "t.yaml: missing required key \"listeners[1].routes[1].path\"");
    sc_free(err);
    sc_config_free(cfg_opts, &c);

    cfg_init(&c);
    assert_int_equal(load(&c, "listeners: [{name: x}]\n", NULL), 0);
    assert_int_equal(sc_config_check_required(cfg_opts, &c, "t.yaml", &err), SC_ECONFIG);
    assert_string_equal(err, "t.yaml: missing required key \"listeners[0].address\"");
    sc_free(err);
    sc_config_free(cfg_opts, &c);
}

static void test_dump(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    json_t *j = sc_config_dump(cfg_opts, &c);
    assert_true(json_is_object(j));
    assert_string_equal(json_string_value(json_object_get(j, "timeout")), "30s");
    assert_true(json_is_null(json_object_get(j, "token"))); /* unset secrets stay null */
    assert_true(json_is_null(json_object_get(j, "config")));
    assert_int_equal(json_array_size(json_object_get(j, "listeners")), 0);
    json_decref(j);

    assert_int_equal(load(&c, full_yaml, NULL), 0);
    j = sc_config_dump(cfg_opts, &c);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "edge-1");
    assert_true(json_is_true(json_object_get(j, "debug")));
    assert_int_equal(json_integer_value(json_object_get(j, "workers")), 8);
    assert_string_equal(json_string_value(json_object_get(j, "timeout")), "90s");
    assert_int_equal(json_integer_value(json_object_get(j, "max_body")), 2097152);
    assert_true(json_real_value(json_object_get(j, "ratio")) == 0.25);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "upstreams"), 1)),
                        "b:2");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "labels"), "tier")),
                        "front");
    assert_string_equal(json_string_value(json_object_get(j, "log_level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "token")), "<redacted>");
    assert_null(json_object_get(j, "common")); /* INLINE keys sit at this level */
    json_t *l0 = json_array_get(json_object_get(j, "listeners"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(l0, "tls"), "key")),
                        "<redacted>");
    assert_string_equal(json_string_value(json_object_get(json_object_get(l0, "tls"), "cert")),
                        "a.pem");
    json_t *r0 = json_array_get(json_object_get(l0, "routes"), 0);
    assert_string_equal(json_string_value(json_object_get(r0, "timeout")), "250ms");
    char *text = json_dumps(j, JSON_SORT_KEYS);
    assert_non_null(text);
    assert_null(strstr(text, "s3cret"));
    assert_null(strstr(text, "a.key"));
    sc_free(text);
    json_decref(j);

    /* Durations render as the shortest exact text, which parses back. */
    static const struct {
        uint64_t ms;
        const char *text;
    } durs[] = {
        { 0, "0" },          { 1, "1ms" },       { 250, "250ms" },     { 1000, "1s" },
        { 1500, "1500ms" },  { 60000, "1m" },    { 90000, "90s" },     { 300000, "5m" },
        { 3600000, "1h" },   { 5400000, "90m" }, { 3723000, "3723s" }, { 3723004, "1h2m3s4ms" },
        { 86400000, "24h" },
    };
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
        c.timeout = durs[i].ms;
        j = sc_config_dump(cfg_opts, &c);
        const char *s = json_string_value(json_object_get(j, "timeout"));
        assert_string_equal(s, durs[i].text);
        uint64_t back;
        assert_int_equal(sc_value_parse_duration(s, &back), 0);
        assert_int_equal(back, durs[i].ms);
        json_decref(j);
    }

    /* Text that is not UTF-8 (from a flag or the environment) still dumps as valid JSON. */
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "name",
                                        "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80"
                                        "bad\xff\xed\xa0\x80\xc3",
                                        NULL),
                     0);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "labels", "k\xfe=v\xfd", NULL), 0);
    j = sc_config_dump(cfg_opts, &c);
    assert_string_equal(json_string_value(json_object_get(j, "name")),
                        "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80"
                        "bad\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "labels"), "k\xef\xbf\xbd")),
        "v\xef\xbf\xbd");
    json_decref(j);
    sc_config_free(cfg_opts, &c);
}

/* Returns what <fn> writes to a FILE, as a new string. */
static char *capture(void (*fn)(const struct sc_opt *, FILE *))
{
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    assert_non_null(f);
    fn(cfg_opts, f);
    fclose(f);
    char *s = sc_strdup(p);
    sc_free(p); /* open_memstream allocates with the C allocator, which sc_free releases */
    return s;
}

static void test_help(void **state)
{
    (void)state;
    char *h = capture(sc_config_help);
    static const char *const want[] = {
        "Flags:\n",
        "  --workers INT",
        "worker threads [1..64] (default: 4)\n",
        "  --debug ",
        "debug mode\n",
        "  --timeout DURATION",
        "request timeout [1ms..1h] (default: 30s)\n",
        "  --log-level {debug|info|warn|error}",
        "minimum log level (one of: debug, info, warn, error) (default: info)\n",
        "  --upstreams VALUE[,VALUE...]",
        "  --labels KEY=VALUE",
        "  -c, --config VALUE",
        "Config file keys:\n",
        "  listeners[]",
        "    address ",
        "    tls ",
        "      cert ",
        "    routes[]",
        "      methods[]",
        "  admin_tls ",
        "  log_level ",
        "  shards ",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(h, want[i])) {
            print_error("help lacks \"%s\":\n%s", want[i], h);
            fail();
        }
    }
    /* Flags and descriptions line up. */
    const char *a = strstr(h, "  --workers INT"), *b = strstr(h, "  --debug ");
    assert_int_equal(strstr(a, "worker threads") - a, strstr(b, "debug mode") - b);
    /* Flag-only options are not file keys, and file-only keys are not flags. */
    assert_null(strstr(strstr(h, "Config file keys:"), "  config"));
    assert_null(strstr(h, "--shards"));
    sc_free(h);

    char *d = capture(sc_config_doc);
    assert_non_null(strstr(d, "| key | type | default | flag | description |\n"));
    assert_non_null(
        strstr(d, "| `workers` | int | `4` | `--workers` | worker threads [1..64] |\n"));
    assert_non_null(strstr(d, "labels \\| added to metrics"));
    assert_non_null(strstr(d, "\n#### `listeners[]`\n"));
    assert_non_null(strstr(d, "\n#### `listeners[].tls`\n"));
    assert_non_null(strstr(d, "\n#### `listeners[].routes[]`\n"));
    assert_non_null(strstr(d, "| `path` | string |  |  | path prefix (required) |\n"));
    assert_non_null(strstr(d, "| `-c`, `--config` |"));
    sc_free(d);
}

static void test_did_you_mean(void **state)
{
    (void)state;
    static const char *const c[] = { "listener", "listeners", "address", "port", "id" };
    assert_string_equal(sc_value_did_you_mean("listner", c, 5), "listener");
    assert_string_equal(sc_value_did_you_mean("adress", c, 5), "address");
    assert_string_equal(sc_value_did_you_mean("addrses", c, 5), "address"); /* transposition */
    assert_string_equal(sc_value_did_you_mean("PORT", c, 5), "port");
    assert_string_equal(sc_value_did_you_mean("prot", c, 5), "port");
    assert_null(sc_value_did_you_mean("x", c, 5));
    assert_null(sc_value_did_you_mean("zzzzzz", c, 5));
    assert_null(sc_value_did_you_mean("completely-different", c, 5));
    assert_null(sc_value_did_you_mean("listner", c, 0));
}

static void test_anchors_and_merge(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    int rc = load(&c,
                  "labels: &base {team: core, env: dev}\n"
                  "listeners:\n"
                  "  - &l {address: a, port: 81, routes: [&r {path: /, methods: &m [GET]}]}\n"
                  "  - <<: *l\n"
                  "    port: 82\n"
                  "  - {<<: [{address: c}, *l], routes: [{<<: *r, methods: *m, path: /x}]}\n"
                  "upstreams: *m\n",
                  &err);
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(c.labels.n, 2);
    assert_int_equal(c.listeners.n, 3);
    assert_string_equal(listener_at(&c, 1)->address, "a");
    assert_int_equal(listener_at(&c, 1)->port, 82);
    assert_int_equal(listener_at(&c, 1)->routes.n, 1);
    assert_string_equal(listener_at(&c, 2)->address, "c"); /* the first merged mapping wins */
    assert_int_equal(listener_at(&c, 2)->port, 81);
    assert_string_equal(route_at(listener_at(&c, 2), 0)->path, "/x");
    assert_int_equal(c.upstreams.n, 1);
    assert_string_equal(c.upstreams.v[0], "GET");
    sc_config_free(cfg_opts, &c);

    expect_err("listeners: [{<<: 5}]\n",
               "t.yaml:1:18: expected a mapping or a list of mappings to merge, got \"5\"");
    expect_err("labels: &a {x: *a}\n",
               "t.yaml:1:16: alias refers to a node that contains it: \"a\"");
    /* Errors inside an anchored node point into it; a wrong type points at the alias. */
    expect_err("labels: &a {x: y}\nadmin_tls: *a\n", "t.yaml:1:13: unknown key \"x\"");
    expect_err("upstreams: &a [x]\nname: *a\n", "t.yaml:2:7: expected a string, got a list");
}

static void test_limits(void **state)
{
    (void)state;
    /* A billion laughs: each level merges ten copies of the one before, 10^8 mappings deep
     * down. Loading must stop at the node limit after bounded work. */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    sc_buf_append_cstr(&b, "listeners:\n  - &a1 {address: x, routes: [");
    for (int i = 0; i < 8; i++) {
        sc_buf_append_cstr(&b, "{path: p, methods: [a, b, c, d, e, f, g, h, i, j]},");
    }
    sc_buf_append_cstr(&b, "]}\n");
    for (int lvl = 2; lvl < 10; lvl++) {
        sc_buf_appendf(&b, "  - &a%d {address: x, <<: [", lvl);
        for (int i = 0; i < 10; i++) {
            sc_buf_appendf(&b, "%s*a%d", i ? ", " : "", lvl - 1);
        }
        sc_buf_append_cstr(&b, "]}\n");
    }
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    const char *yaml = sc_buf_cstr(&b);
    assert_int_equal(load(&c, yaml, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "too many nodes after alias expansion (limit 1000000)"));
    sc_free(err);
    sc_config_free(cfg_opts, &c);
    sc_buf_cleanup(&b);

    /* The same through list elements: eight routes, each a merge of eight copies of the last. */
    sc_buf_init(&b, 1 << 20);
    sc_buf_append_cstr(&b, "listeners:\n  - address: x\n    routes:\n");
    sc_buf_append_cstr(&b, "      - &r0 {path: p, methods: &m0 [lol, lol, lol, lol, lol]}\n");
    for (int lvl = 1; lvl < 8; lvl++) {
        sc_buf_appendf(&b, "      - &r%d {path: p, <<: [", lvl);
        for (int i = 0; i < 8; i++) {
            sc_buf_appendf(&b, "%s*r%d", i ? ", " : "", lvl - 1);
        }
        sc_buf_append_cstr(&b, "]}\n");
    }
    sc_buf_append_cstr(&b, "  - address: y\n    routes: [*r7, *r7, *r7, *r7, *r7, *r7, *r7]\n");
    cfg_init(&c);
    yaml = sc_buf_cstr(&b);
    assert_int_equal(load(&c, yaml, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "too many nodes after alias expansion (limit 1000000)"));
    sc_free(err);
    sc_config_free(cfg_opts, &c);
    sc_buf_cleanup(&b);

    /* Large values repeated through aliases hit the byte budget. */
    sc_buf_init(&b, 8 << 20);
    sc_buf_append_cstr(&b, "name: &s ");
    for (int i = 0; i < 1 << 20; i++) {
        sc_buf_append(&b, "x", 1);
    }
    sc_buf_append_cstr(&b, "\nupstreams: [");
    for (int i = 0; i < 64; i++) {
        sc_buf_append_cstr(&b, "*s, ");
    }
    sc_buf_append_cstr(&b, "]\n");
    cfg_init(&c);
    assert_int_equal(sc_config_load_string(cfg_opts, &c, "t.yaml", b.p, b.len, &err), SC_ECONFIG);
    assert_string_equal(err, "t.yaml:2:133: values too large after alias expansion (limit 32 MiB)");
    sc_free(err);
    sc_config_free(cfg_opts, &c);
    sc_buf_cleanup(&b);

    /* Nesting: 64 levels parse (and fail on meaning), 65 do not. */
    for (int depth = 64; depth <= 66; depth++) {
        sc_buf_init(&b, 1 << 16);
        sc_buf_append_cstr(&b, "labels: ");
        for (int i = 1; i < depth; i++) {
            sc_buf_append(&b, "[", 1);
        }
        for (int i = 1; i < depth; i++) {
            sc_buf_append(&b, "]", 1);
        }
        sc_buf_append(&b, "\n", 1);
        cfg_init(&c);
        assert_int_equal(sc_config_load_string(cfg_opts, &c, "t.yaml", b.p, b.len, &err),
                         SC_ECONFIG);
        if (depth == 64) {
            assert_string_equal(err, "t.yaml:1:9: expected a mapping of strings, got a list");
        } else {
            assert_string_equal(err, "t.yaml:1:72: nesting deeper than 64 levels");
        }
        sc_free(err);
        sc_config_free(cfg_opts, &c);
        sc_buf_cleanup(&b);
    }
    /* A flood of brackets must fail as fast as a short one. */
    size_t n = 4 << 20;
    char *flood = sc_malloc(n);
    memset(flood, '[', n);
    cfg_init(&c);
    assert_int_equal(sc_config_load_string(cfg_opts, &c, "t.yaml", flood, n, &err), SC_ECONFIG);
    assert_string_equal(err, "t.yaml:1:65: nesting deeper than 64 levels");
    sc_free(err);
    assert_int_equal(sc_config_load_string(cfg_opts, &c, "t.yaml", flood, n + 1, &err), SC_ECONFIG);
    assert_string_equal(err, "t.yaml:1:1: input too large (over 4 MiB)");
    sc_free(err);
    sc_free(flood);
    sc_config_free(cfg_opts, &c);
}

/* The input ends flush against an unreadable page: reading one byte past it faults. */
static void test_guard_page(void **state)
{
    (void)state;
    long page = sysconf(_SC_PAGESIZE);
    char *mem =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
    static const char *const inputs[] = { "name: abc", "name: 'abc",       "labels: {a: b",
                                          "name: a\n", "name: \"${X",      "workers: 1",
                                          "a",         "name: &x y\nx: *x" };
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        size_t len = strlen(inputs[i]);
        char *p = mem + page - len;
        memcpy(p, inputs[i], len);
        struct cfg c;
        cfg_init(&c);
        char *err = NULL;
        int rc = sc_config_load_string(cfg_opts, &c, "t.yaml", p, len, &err);
        assert_true(rc == 0 || rc == SC_ECONFIG);
        sc_free(err);
        sc_config_free(cfg_opts, &c);
    }
    munmap(mem, (size_t)page * 2);
}

static void test_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sc_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "workers: 2\nbogus: 1\n", 20), 20);
    close(fd);
    struct cfg c;
    cfg_init(&c);
    char *err = NULL;
    assert_int_equal(sc_config_load_file(cfg_opts, &c, path, &err), SC_ECONFIG);
    char *want = sc_asprintf("%s:2:1: unknown key \"bogus\"", path);
    assert_string_equal(err, want);
    assert_int_equal(c.workers, 4); /* key errors come before any value is set */
    sc_free(want);
    sc_free(err);
    unlink(path);
    assert_int_equal(sc_config_load_file(cfg_opts, &c, path, &err), SC_ECONFIG);
    want = sc_asprintf("%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
    sc_free(want);
    sc_free(err);
    sc_config_free(cfg_opts, &c);
}

static void test_free_zeroes(void **state)
{
    (void)state;
    struct cfg c;
    cfg_init(&c);
    assert_int_equal(load(&c, full_yaml, NULL), 0);
    assert_int_equal(sc_config_set_flag(cfg_opts, &c, "config", "x", NULL), 0);
    sc_config_free(cfg_opts, &c);
    assert_null(c.name);
    assert_null(c.upstreams.v);
    assert_int_equal(c.upstreams.n, 0);
    assert_null(c.labels.v);
    assert_int_equal(c.labels.n, 0);
    assert_null(c.listeners.v);
    assert_int_equal(c.listeners.n, 0);
    assert_null(c.admin_tls.cert);
    assert_null(c.common.token);
    assert_null(c.config);
    sc_config_free(cfg_opts, &c); /* twice is harmless */
    sc_config_free(cfg_opts, NULL);
    sc_config_free(NULL, &c);

    /* A failed load leaves a freeable object (ASan reports any leak). */
    cfg_init(&c);
    assert_int_equal(load(&c,
                          "listeners:\n  - address: a\n    routes: [{path: p, methods: [a]}]\n"
                          "  - address: b\n    routes: [{path: q, methods: [b, {c: d}]}]\n",
                          NULL),
                     SC_ECONFIG);
    sc_config_free(cfg_opts, &c);
}

/* A table that contains itself through OBJLIST: data may nest as deep as YAML allows, aliases can
 * nest it deeper still, and help and doc must stop somewhere. */
struct tnode {
    char *name;
    struct sc_vec kids;
    struct tls tls;
    char *cfg;
    char *long_flag;
};

static const struct sc_opt tnode_opts[6];
static const struct sc_opt tnode_opts[6] = {
    { .name = "name", .type = SC_OPT_STR, .offset = offsetof(struct tnode, name) },
    { .name = "kids",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct tnode, kids),
      .sub = tnode_opts,
      .sub_size = sizeof(struct tnode) },
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct tnode, tls),
      .sub = tls_opts,
      .flags = SC_OPT_FLAG },
    { .name = "cfg",
      .type = SC_OPT_STR,
      .offset = offsetof(struct tnode, cfg),
      .flags = SC_OPT_FLAG_ONLY | SC_OPT_REQUIRED,
      .help = "config file" },
    { .name = "a_very_long_flag_name_that_overflows_the_column",
      .type = SC_OPT_STR,
      .offset = offsetof(struct tnode, long_flag),
      .flags = SC_OPT_FLAG,
      .help = "long" },
    { 0 },
};

static void test_recursive_table(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 1 << 16);
    sc_buf_append_cstr(&b, "kids:\n  - &d ");
    for (int i = 0; i < 20; i++) {
        sc_buf_append_cstr(&b, "{kids: [");
    }
    sc_buf_append_cstr(&b, "{name: leaf}");
    for (int i = 0; i < 20; i++) {
        sc_buf_append_cstr(&b, "]}");
    }
    sc_buf_append_cstr(&b, "\n  - ");
    for (int i = 0; i < 20; i++) {
        sc_buf_append_cstr(&b, "{kids: [");
    }
    sc_buf_append_cstr(&b, "*d");
    for (int i = 0; i < 20; i++) {
        sc_buf_append_cstr(&b, "]}");
    }
    sc_buf_append_cstr(&b, "\n");

    /* The first element alone loads (41 levels deep), and frees and dumps as deep. */
    struct tnode t;
    memset(&t, 0, sizeof(t));
    sc_config_defaults(tnode_opts, &t);
    char *err = NULL;
    const char *yaml = sc_buf_cstr(&b);
    size_t first_len = (size_t)(strstr(yaml, "\n  - {") - yaml) + 1;
    assert_int_equal(sc_config_load_string(tnode_opts, &t, "r.yaml", yaml, first_len, &err), 0);
    json_t *j = sc_config_dump(tnode_opts, &t);
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(strstr(text, "\"name\":\"leaf\""));
    sc_free(text);
    json_decref(j);
    sc_config_free(tnode_opts, &t);

    /* Through the alias the walk would go about 80 levels deep. */
    sc_config_defaults(tnode_opts, &t);
    assert_int_equal(sc_config_load_string(tnode_opts, &t, "r.yaml", b.p, b.len, &err), SC_ECONFIG);
    assert_non_null(strstr(err, ": nesting deeper than 64 levels"));
    assert_int_equal(strncmp(err, "r.yaml:2:", 9), 0);
    sc_free(err);

    /* A required flag-only option is named as a flag. */
    assert_int_equal(sc_config_check_required(tnode_opts, &t, "r.yaml", &err), SC_ECONFIG);
    assert_string_equal(err, "r.yaml: missing required flag \"--cfg\"");
    sc_free(err);
    /* An object cannot come from the command line. */
    assert_int_equal(sc_config_set_flag(tnode_opts, &t, "tls", "x", &err), SC_ECONFIG);
    assert_string_equal(err, "--tls: cannot be set from the command line");
    sc_free(err);
    sc_config_free(tnode_opts, &t);
    sc_buf_cleanup(&b);

    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    sc_config_help(tnode_opts, f);
    sc_config_doc(tnode_opts, f);
    fclose(f);
    /* An over-long flag gets a line of its own; the self-reference stops with "...". */
    assert_non_null(strstr(p, "  --a-very-long-flag-name-that-overflows-the-column VALUE\n"));
    assert_non_null(strstr(p, "...\n"));
    assert_non_null(strstr(p, "#### `kids[].kids[].kids[]`"));
    sc_free(p);

    /* A directory opens but does not read. */
    struct cfg c;
    cfg_init(&c);
    assert_int_equal(sc_config_load_file(cfg_opts, &c, "/", &err), SC_ECONFIG);
    assert_string_equal(err, "/: cannot read: Is a directory");
    sc_free(err);
    sc_config_free(cfg_opts, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_load_full),
        cmocka_unit_test(test_empty_and_null),
        cmocka_unit_test(test_load_on_top),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_did_you_mean),
        cmocka_unit_test(test_anchors_and_merge),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_guard_page),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_free_zeroes),
        cmocka_unit_test(test_recursive_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
