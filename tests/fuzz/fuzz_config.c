// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the YAML configuration loader: the input is loaded as a config file into
// every role's real option table (sc_roles: proxy, metrics, logs, config, secrets, pod) and into a
// table of its own that uses every option type (nested OBJ, OBJLIST inside OBJLIST, INLINE, a check
// callback, bounds, secrets). Beyond "no crash", it checks invariants and abort()s when one breaks:
//   - the return is 0 or SC_ECONFIG;
//   - an error is "fuzz:<line>:<col>: <message>" on one line, with a non-empty message;
//   - a success dumps as a JSON object that serializes, durations render as text that parses back
//     to the same value, and loading the same input again on top succeeds with the same dump;
//   - a loaded configuration may always replace itself at a reload (sc_config_check_reload);
//   - the object is always freeable (ASan reports leaks and double frees).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "roles.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_route {
    char *path;
    struct sc_strv methods;
    uint64_t timeout;
    struct sc_kvv headers;
};

struct fz_tls {
    char *cert;
    char *key;
    bool verify;
};

struct fz_listener {
    char *name;
    char *address;
    int64_t port;
    double weight;
    struct fz_tls tls;
    struct sc_vec routes;
};

struct fz_log {
    int level;
    int format;
};

struct fz_cfg {
    char *name;
    bool debug;
    int64_t workers;
    uint64_t timeout;
    uint64_t max_body;
    uint64_t buffer;
    double ratio;
    struct sc_strv upstreams;
    struct sc_kvv labels;
    struct sc_vec listeners;
    struct fz_tls admin_tls;
    struct fz_log log;
    char *token;
    int64_t shards;
    char *config;
};

static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const formats[] = { "text", "json", NULL };

static int check_pow2(void *field, char **err)
{
    int64_t v = *(int64_t *)field;
    if (v <= 0 || (v & (v - 1)) != 0) {
        *err = sc_strdup("must be a power of two");
        return -1;
    }
    return 0;
}

static int check_name(void *field, char **err)
{
    const char *s = *(char **)field;
    if (s && strchr(s, '/')) {
        *err = sc_strdup("must not contain '/'");
        return -1;
    }
    return 0;
}

static const struct sc_opt route_opts[] = {
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_route, path),
      .flags = SC_OPT_REQUIRED },
    { .name = "methods",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct fz_route, methods),
      .min = 0,
      .max = 4 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct fz_route, timeout),
      .def = "5s",
      .min = 1,
      .max = 86400000 },
    { .name = "headers",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct fz_route, headers),
      .flags = SC_OPT_SECRET },
    { 0 },
};

static const struct sc_opt tls_opts[] = {
    { .name = "cert", .type = SC_OPT_STR, .offset = offsetof(struct fz_tls, cert) },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_tls, key),
      .flags = SC_OPT_SECRET },
    { .name = "verify",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct fz_tls, verify),
      .def = "true" },
    { 0 },
};

static const struct sc_opt listener_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_listener, name),
      .check = check_name },
    { .name = "address",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_listener, address),
      .flags = SC_OPT_REQUIRED },
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct fz_listener, port),
      .def = "80",
      .min = 1,
      .max = 65535 },
    { .name = "weight",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct fz_listener, weight),
      .def = "1.5",
      .min = 0,
      .max = 100 },
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct fz_listener, tls),
      .sub = tls_opts },
    { .name = "routes",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct fz_listener, routes),
      .sub = route_opts,
      .sub_size = sizeof(struct fz_route),
      .min = 0,
      .max = 16 },
    { 0 },
};

static const struct sc_opt log_opts[] = {
    { .name = "log_level",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct fz_log, level),
      .enums = levels,
      .def = "info",
      .flags = SC_OPT_FLAG },
    { .name = "log_format",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct fz_log, format),
      .enums = formats,
      .flags = SC_OPT_FLAG },
    { 0 },
};

static const struct sc_opt cfg_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_cfg, name),
      .def = "sidecar",
      .flags = SC_OPT_FLAG },
    { .name = "debug",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct fz_cfg, debug),
      .flags = SC_OPT_FLAG },
    { .name = "workers",
      .type = SC_OPT_INT,
      .offset = offsetof(struct fz_cfg, workers),
      .def = "4",
      .min = 1,
      .max = 64,
      .flags = SC_OPT_FLAG },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct fz_cfg, timeout),
      .def = "30s",
      .flags = SC_OPT_FLAG },
    { .name = "max_body",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct fz_cfg, max_body),
      .def = "1MiB",
      .flags = SC_OPT_FLAG },
    { .name = "buffer",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct fz_cfg, buffer),
      .def = "64KiB",
      .min = 1024,
      .max = 1 << 30 },
    { .name = "ratio",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct fz_cfg, ratio),
      .def = "0.5" },
    { .name = "upstreams",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct fz_cfg, upstreams),
      .def = "a:1,b:2",
      .flags = SC_OPT_FLAG },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct fz_cfg, labels),
      .def = "env=prod",
      .flags = SC_OPT_FLAG },
    { .name = "listeners",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct fz_cfg, listeners),
      .sub = listener_opts,
      .sub_size = sizeof(struct fz_listener) },
    { .name = "admin_tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct fz_cfg, admin_tls),
      .sub = tls_opts },
    { .name = "log",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct fz_cfg, log),
      .sub = log_opts },
    { .name = "token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_cfg, token),
      .flags = SC_OPT_SECRET },
    { .name = "shards",
      .type = SC_OPT_INT,
      .offset = offsetof(struct fz_cfg, shards),
      .def = "1",
      .check = check_pow2 },
    { .name = "config",
      .type = SC_OPT_STR,
      .offset = offsetof(struct fz_cfg, config),
      .flags = SC_OPT_FLAG_ONLY,
      .flag_alias = "c" },
    { 0 },
};

static void check(bool ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: invariant broken: %s: %s\n", what, detail ? detail : "");
        abort();
    }
}

/* "fuzz:<digits>:<digits>: <non-empty message>" on a single line. */
static bool well_formed(const char *err)
{
    if (strncmp(err, "fuzz:", 5) != 0) {
        return false;
    }
    const char *p = err + 5;
    for (int field = 0; field < 2; field++) {
        if (*p < '1' || *p > '9') {
            return false; /* 1-based: never 0, no leading zeros */
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
        if (*p++ != ':') {
            return false;
        }
    }
    return p[0] == ' ' && p[1] != '\0' && p[1] != ' ' && !strchr(err, '\n');
}

static void check_duration(uint64_t ms, json_t *text)
{
    const char *s = json_string_value(text);
    check(s != NULL, "duration dumps as a string", NULL);
    uint64_t back = 0;
    check(sc_value_parse_duration(s, &back) == 0 && back == ms, "duration text parses back", s);
}

static char *dump_text(const struct fz_cfg *c)
{
    json_t *j = sc_config_dump(cfg_opts, c);
    check(json_is_object(j), "dump is an object", NULL);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    check(s != NULL, "dump serializes", NULL);

    check_duration(c->timeout, json_object_get(j, "timeout"));
    json_t *ls = json_object_get(j, "listeners");
    check(json_array_size(ls) == c->listeners.n, "one JSON element per listener", NULL);
    for (size_t i = 0; i < c->listeners.n; i++) {
        const struct fz_listener *l = &((const struct fz_listener *)c->listeners.v)[i];
        json_t *rs = json_object_get(json_array_get(ls, i), "routes");
        check(json_array_size(rs) == l->routes.n, "one JSON element per route", NULL);
        for (size_t k = 0; k < l->routes.n; k++) {
            const struct fz_route *r = &((const struct fz_route *)l->routes.v)[k];
            check_duration(r->timeout, json_object_get(json_array_get(rs, k), "timeout"));
            check(r->timeout >= 1 && r->timeout <= 86400000, "bounds hold", NULL);
            check(r->methods.n <= 4, "list bounds hold", NULL);
        }
        check(l->port >= 1 && l->port <= 65535, "bounds hold", NULL);
        check(l->routes.n <= 16, "list bounds hold", NULL);
    }
    check(c->workers >= 1 && c->workers <= 64, "bounds hold", NULL);
    check(c->shards > 0 && (c->shards & (c->shards - 1)) == 0, "check callback holds", NULL);
    json_decref(j);
    return s;
}

/* Runs the invariants every table shares over <data> loaded into a fresh <obj> (<table>). */
static void fuzz_table(const struct sc_opt *table, void *obj, const uint8_t *data, size_t size,
                       char *(*dump)(const void *obj, const struct sc_opt *table))
{
    sc_config_defaults(table, obj);
    char *err = NULL;
    int rc = sc_config_load_string(table, obj, "fuzz", (const char *)data, size, &err);
    check(rc == 0 || rc == SC_ECONFIG, "return is 0 or SC_ECONFIG", NULL);
    if (rc != 0) {
        check(err != NULL, "an error has a message", NULL);
        check(well_formed(err), "error reads fuzz:line:col: message", err);
        sc_free(err);
        sc_config_free(table, obj);
        return;
    }
    check(err == NULL, "success leaves err alone", NULL);
    char *first = dump(obj, table);

    /* Loading is idempotent: the same document again on top changes nothing. */
    rc = sc_config_load_string(table, obj, "fuzz", (const char *)data, size, &err);
    check(rc == 0, "a second load of a good document succeeds", err);
    char *second = dump(obj, table);
    check(strcmp(first, second) == 0, "a second load changes nothing", second);

    check(sc_config_check_reload(table, obj, obj, &err) == 0, "a config reloads over itself", err);

    err = NULL;
    rc = sc_config_check_required(table, obj, "fuzz", &err);
    check(rc == 0 ||
              (rc == SC_ECONFIG && err && strncmp(err, "fuzz: missing required key \"", 28) == 0),
          "required check", err);
    sc_free(err);
    sc_free(first); /* json_dumps allocates with the C allocator, which sc_free releases */
    sc_free(second);
    sc_config_free(table, obj);
}

static char *dump_own(const void *obj, const struct sc_opt *table)
{
    (void)table;
    return dump_text(obj);
}

/* A role's table: the dump is an object that serializes. */
static char *dump_role(const void *obj, const struct sc_opt *table)
{
    json_t *j = sc_config_dump(table, obj);
    check(json_is_object(j), "dump is an object", NULL);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    check(s != NULL, "dump serializes", NULL);
    json_decref(j);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool env_ready;
    if (!env_ready) {
        setenv("FUZZ_A", "alpha", 1);
        setenv("FUZZ_PORT", "8080", 1);
        setenv("FUZZ_EMPTY", "", 1);
        unsetenv("FUZZ_UNSET");
        env_ready = true;
    }
    struct fz_cfg c;
    memset(&c, 0, sizeof(c));
    fuzz_table(cfg_opts, &c, data, size, dump_own);
    for (size_t i = 0; i < sc_nroles; i++) {
        void *obj = sc_calloc(1, sc_roles[i]->cfg_size);
        fuzz_table(sc_roles[i]->opts, obj, data, size, dump_role);
        sc_free(obj);
    }
    return 0;
}
