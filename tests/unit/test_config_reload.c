// SPDX-License-Identifier: Apache-2.0
// Unit tests for what a reload may change (sc_config_check_reload): options flagged
// SC_OPT_RESTART at the top, in an object and in the elements of a list, beside options that
// reload, with the key path of the first change in the message.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"

/* A table with options that change only with a restart, at the top, in an object and in the
 * elements of a list, beside options that reload. */
struct rl_out {
    char *url;
    char *token;
    int64_t batch;
    struct sc_kvv headers;
};

struct rl_store {
    char *db;
    uint64_t interval_ms;
};

struct rl_cfg {
    char *listen;
    int64_t workers;
    struct rl_store store;
    struct sc_vec outs;
};

static const struct sc_opt rl_out_opts[] = {
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct rl_out, url),
      .flags = SC_OPT_RESTART },
    { .name = "token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct rl_out, token),
      .flags = SC_OPT_RESTART | SC_OPT_SECRET },
    { .name = "batch", .type = SC_OPT_INT, .offset = offsetof(struct rl_out, batch) },
    { .name = "headers",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct rl_out, headers),
      .flags = SC_OPT_RESTART },
    { 0 },
};

static const struct sc_opt rl_store_opts[] = {
    { .name = "db",
      .type = SC_OPT_STR,
      .offset = offsetof(struct rl_store, db),
      .flags = SC_OPT_RESTART },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct rl_store, interval_ms) },
    { 0 },
};

static const struct sc_opt rl_opts[] = {
    { .name = "listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct rl_cfg, listen),
      .def = "0.0.0.0:9090",
      .flags = SC_OPT_RESTART },
    { .name = "workers",
      .type = SC_OPT_INT,
      .offset = offsetof(struct rl_cfg, workers),
      .def = "1" },
    { .name = "store",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct rl_cfg, store),
      .sub = rl_store_opts },
    { .name = "outs",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct rl_cfg, outs),
      .sub = rl_out_opts,
      .sub_size = sizeof(struct rl_out) },
    { 0 },
};

/* Loads <text> over the defaults into <c>. */
static void rl_load(struct rl_cfg *c, const char *text)
{
    char *err = NULL;
    memset(c, 0, sizeof(*c));
    sc_config_defaults(rl_opts, c);
    if (sc_config_load_string(rl_opts, c, "t.yaml", text, strlen(text), &err) < 0) {
        fail_msg("%s", err);
    }
}

/* Returns the reload verdict from <a> to <b>: "" when allowed, else the message. */
static char *rl_check(const char *a, const char *b)
{
    static char msg[256];
    struct rl_cfg ca, cb;
    rl_load(&ca, a);
    rl_load(&cb, b);
    char *err = NULL;
    int rc = sc_config_check_reload(rl_opts, &ca, &cb, &err);
    snprintf(msg, sizeof(msg), "%s", rc == 0 ? "" : err);
    assert_int_equal(rc, err ? SC_ECONFIG : 0);
    sc_free(err);
    sc_config_free(rl_opts, &ca);
    sc_config_free(rl_opts, &cb);
    return msg;
}

static void test_check_reload(void **state)
{
    (void)state;
    const char *base =
        "store: {db: /a, interval: 1s}\n"
        "outs: [{url: http://x, token: s1, batch: 1, headers: {a: b}}, {url: http://y}]\n";
    /* what reloads */
    assert_string_equal(rl_check(base, base), "");
    assert_string_equal(rl_check(base,
                                 "workers: 4\nstore: {db: /a, interval: 5s}\n"
                                 "outs: [{url: http://x, token: s1, batch: 9, headers: {a: b}},"
                                 " {url: http://y}]\n"),
                        "");
    /* what does not, named by its key path; secrets never quoted */
    assert_string_equal(rl_check(base, "listen: 127.0.0.1:1\n"),
                        "listen changes only with a restart");
    assert_string_equal(rl_check(base,
                                 "store: {db: /b, interval: 1s}\n"
                                 "outs: [{url: http://x, token: s1, batch: 1, headers: {a: b}},"
                                 " {url: http://y}]\n"),
                        "store.db changes only with a restart");
    assert_string_equal(rl_check(base,
                                 "store: {db: /a, interval: 1s}\n"
                                 "outs: [{url: http://x, token: s2, batch: 1, headers: {a: b}},"
                                 " {url: http://y}]\n"),
                        "outs[0].token changes only with a restart");
    assert_string_equal(rl_check(base,
                                 "store: {db: /a, interval: 1s}\n"
                                 "outs: [{url: http://x, token: s1, batch: 1, headers: {a: c}},"
                                 " {url: http://y}]\n"),
                        "outs[0].headers changes only with a restart");
    assert_string_equal(rl_check(base,
                                 "store: {db: /a, interval: 1s}\n"
                                 "outs: [{url: http://x, token: s1, batch: 1, headers: {a: b}},"
                                 " {url: http://z}]\n"),
                        "outs[1].url changes only with a restart");
    assert_string_equal(rl_check(base,
                                 "store: {db: /a, interval: 1s}\n"
                                 "outs: [{url: http://x, token: s1, batch: 1, headers: {a: b}}]\n"),
                        "outs changes only with a restart");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
