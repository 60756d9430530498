// SPDX-License-Identifier: Apache-2.0
// Unit tests for the logs role's pure parts: the json/logfmt/regex parsers, CRI framing, timestamp
// parsing, UTF-8 repair, the multiline continuation rule and the positions database (atomic
// replace, escaping, corrupt files refused). Parser inputs are also fed from an exactly-sized heap
// copy so ASan catches any read past the end.
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
#include "core/error.h"
#include "roles/logs/logs.h"

static json_t *parse(enum logs_parser p, const char *s, bool *perr)
{
    struct logs_parse_cfg pc = { .parser = p };
    int64_t ts = 0;
    size_t n = strlen(s);
    char *copy = sc_malloc(n ? n : 1);
    memcpy(copy, s, n);
    json_t *ev = logs_parse_line(&pc, sc_str_n(copy, n), &ts, perr);
    sc_free(copy);
    return ev;
}

static void test_json(void **state)
{
    (void)state;
    bool perr;
    json_t *ev = parse(LOGS_P_JSON, "{\"a\":1,\"b\":\"x\"}", &perr);
    assert_false(perr);
    assert_int_equal(json_integer_value(json_object_get(ev, "a")), 1);
    json_decref(ev);
    const char *bad[] = { "", "{", "[1,2]", "42", "{\"a\":1}x", "{\"a\":\"\xff\"}" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        ev = parse(LOGS_P_JSON, bad[i], &perr);
        assert_true(perr);
        assert_true(json_is_true(json_object_get(ev, "parse_error")));
        assert_non_null(json_string_value(json_object_get(ev, "message")));
        json_decref(ev);
    }
}

static void test_utf8_repair(void **state)
{
    (void)state;
    json_t *s = logs_json_str(SC_STR("a\xff\xc3(\xed\xa0\x80z\xf0\x9f\x98\x80"));
    assert_string_equal(json_string_value(s),
                        "a\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz"
                        "\xf0\x9f\x98\x80");
    json_decref(s);
    s = logs_json_str(sc_str_n("a\0b", 3));
    assert_int_equal(json_string_length(s), 5); /* NUL replaced too */
    json_decref(s);
}

static void test_logfmt(void **state)
{
    (void)state;
    json_t *ev = logs_parse_logfmt(SC_STR("a=1 b=\"x y\" c= d e=\"q\\\"\""));
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "a")), "1");
    assert_string_equal(json_string_value(json_object_get(ev, "b")), "x y");
    assert_string_equal(json_string_value(json_object_get(ev, "c")), "");
    assert_true(json_is_true(json_object_get(ev, "d")));
    assert_string_equal(json_string_value(json_object_get(ev, "e")), "q\"");
    json_decref(ev);
    const char *bad[] = { "", "   ", "=x", "a=\"open", "a=b\"c", "a=\"x\"y" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_null(logs_parse_logfmt(sc_str_c(bad[i])));
    }
}

static void test_regex(void **state)
{
    (void)state;
    int ec;
    PCRE2_SIZE off;
    struct logs_parse_cfg pc = { .parser = LOGS_P_REGEX };
    pc.re = pcre2_compile((PCRE2_SPTR) "^(?<a>\\w+) (?<b>\\d+)?", PCRE2_ZERO_TERMINATED, 0, &ec,
                          &off, NULL);
    pc.md = pcre2_match_data_create_from_pattern(pc.re, NULL);
    int64_t ts = 0;
    bool perr;
    json_t *ev = logs_parse_line(&pc, SC_STR("hello 42"), &ts, &perr);
    assert_false(perr);
    assert_string_equal(json_string_value(json_object_get(ev, "a")), "hello");
    assert_string_equal(json_string_value(json_object_get(ev, "b")), "42");
    json_decref(ev);
    ev = logs_parse_line(&pc, SC_STR("hello "), &ts, &perr);
    assert_false(perr);
    assert_null(json_object_get(ev, "b")); /* unset group: absent */
    json_decref(ev);
    ev = logs_parse_line(&pc, SC_STR("!"), &ts, &perr);
    assert_true(perr);
    json_decref(ev);
    pcre2_match_data_free(pc.md);
    pcre2_code_free(pc.re);
}

static void test_cri(void **state)
{
    (void)state;
    struct sc_str t, s, m;
    bool p;
    assert_int_equal(
        logs_cri_split(SC_STR("2024-01-01T00:00:00Z stdout F hi there"), &t, &s, &p, &m), 0);
    assert_true(sc_str_eq(s, SC_STR("stdout")));
    assert_false(p);
    assert_true(sc_str_eq(m, SC_STR("hi there")));
    assert_int_equal(logs_cri_split(SC_STR("T stderr P"), &t, &s, &p, &m), 0);
    assert_true(p);
    assert_int_equal(m.len, 0);
    assert_int_equal(logs_cri_split(SC_STR("T stderr P:x msg"), &t, &s, &p, &m), 0);
    const char *bad[] = { "", "T", "T stdout", "T stdout X msg", "T stdout PF msg", " a F x" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(logs_cri_split(sc_str_c(bad[i]), &t, &s, &p, &m), -EINVAL);
    }
}

static void test_time(void **state)
{
    (void)state;
    int64_t ns;
    assert_int_equal(logs_parse_time(SC_STR("1970-01-01T00:00:01Z"), NULL, &ns), 0);
    assert_true(ns == 1000000000);
    assert_int_equal(logs_parse_time(SC_STR("2024-02-29T12:00:00.123456789+01:00"), "rfc3339", &ns),
                     0);
    assert_true(ns == 1709204400123456789LL);
    assert_int_equal(logs_parse_time(SC_STR("1700000000.5"), "unix", &ns), 0);
    assert_true(ns == 1700000000500000000LL);
    assert_int_equal(logs_parse_time(SC_STR("1700000000123"), "unix_ms", &ns), 0);
    assert_true(ns == 1700000000123000000LL);
    assert_int_equal(logs_parse_time(SC_STR("06/May/2024:07:08:09"), "%d/%b/%Y:%H:%M:%S", &ns), 0);
    assert_true(ns == 1714979289000000000LL);
    const char *bad[] = { "", "2024-13-01T00:00:00Z", "2024-01-01T00:00:00.Z",
                          "2024-01-01T00:00:00+1:00", "x" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(logs_parse_time(sc_str_c(bad[i]), NULL, &ns), -EINVAL);
    }
    assert_int_equal(logs_parse_time(SC_STR("-1"), "unix", &ns), -EINVAL);
    /* No offset: read as UTC (common in application logs). */
    assert_int_equal(logs_parse_time(SC_STR("1970-01-01 00:01:00"), NULL, &ns), 0);
    assert_true(ns == 60000000000LL);
}

static void test_continuation(void **state)
{
    (void)state;
    assert_true(logs_is_continuation(SC_STR("\tat x.y(Z.java:1)")));
    assert_true(logs_is_continuation(SC_STR("  more")));
    assert_true(logs_is_continuation(SC_STR("Caused by: x")));
    assert_true(logs_is_continuation(SC_STR("... 12 more")));
    assert_false(logs_is_continuation(SC_STR("")));
    assert_false(logs_is_continuation(SC_STR("2024 INFO x")));
    assert_false(logs_is_continuation(SC_STR("... more")));
}

static void test_positions(void **state)
{
    (void)state;
    char dir[] = "/tmp/sc-logs-pos-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = sc_asprintf("%s/pos.db", dir);
    struct logs_pos *v = NULL;
    size_t n = 9;
    char *err = NULL;
    assert_int_equal(logs_pos_load(path, &v, &n, &err), 0); /* missing: empty */
    assert_int_equal(n, 0);
    struct logs_pos in[] = { { 1, 2, 3, "/a b/c%d\nx.log" },
                             { 18446744073709551615ull, 0, 7, "" } };
    assert_int_equal(logs_pos_save(path, in, 2), 0);
    assert_int_equal(logs_pos_load(path, &v, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].path, in[0].path);
    assert_true(v[1].dev == in[1].dev && v[1].offset == 7 && v[0].ino == 2);
    logs_pos_free(v, n);
    char *tmp = sc_asprintf("%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1); /* renamed away */
    FILE *f = fopen(path, "w");
    fputs("sidecar-logs-positions 1\n1 2 x /p\n", f);
    fclose(f);
    assert_int_equal(logs_pos_load(path, &v, &n, &err), SC_ECONFIG);
    assert_non_null(strstr(err, ":2: malformed"));
    sc_free(err);
    unlink(path);
    rmdir(dir);
    sc_free(tmp);
    sc_free(path);
}

static struct logs_batch *mk_batch(const char *body, size_t nitems)
{
    struct logs_batch *b = SC_NEW(struct logs_batch);
    sc_buf_init(&b->body, 1 << 20);
    sc_buf_append_cstr(&b->body, body);
    b->items = sc_calloc(16, sizeof(size_t));
    for (size_t i = 0, n = 0; i < b->body.len; i++) {
        if (b->body.p[i] == '\n' && n < nitems) {
            b->items[n++] = i + 1;
        }
    }
    b->nitems = nitems;
    return b;
}

static void free_batch(struct logs_batch *b)
{
    sc_buf_cleanup(&b->body);
    sc_free(b->items);
    sc_free(b);
}

static void test_spool(void **state)
{
    (void)state;
    char dir[] = "/tmp/sc-logs-spool-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct logs_output_cfg cfg = { .batch_count = 16, .spool_limit = 1 << 20 };
    cfg.spool = sc_asprintf("%s/s.spool", dir);
    struct logs_out o = { .cfg = &cfg, .name = "t", .spool_fd = -1 };
    char *err = NULL;
    assert_int_equal(logs_spool_open(&o, &err), 0);
    struct logs_batch *a = mk_batch("a1\na2\n", 2), *b = mk_batch("b1\n", 1);
    assert_int_equal(logs_spool_append(&o, a), 0);
    assert_int_equal(logs_spool_append(&o, b), 0);
    close(o.spool_fd);
    /* A torn third record, as after a crash in the middle of an append. */
    FILE *f = fopen(cfg.spool, "ab");
    fwrite("\x31\x42\x43\x53\xff\x00", 1, 6, f);
    fclose(f);
    struct logs_out o2 = { .cfg = &cfg, .name = "t", .spool_fd = -1 };
    assert_int_equal(logs_spool_open(&o2, &err), 0);
    assert_int_equal(o2.spool_pending, 2);
    struct logs_batch *r = mk_batch("", 0);
    assert_non_null(logs_spool_read(&o2, r));
    assert_int_equal(r->nitems, 2);
    assert_memory_equal(r->body.p, "a1\na2\n", 6);
    assert_int_equal(r->items[1], 6);
    logs_spool_consume(&o2, r);
    close(o2.spool_fd);
    /* The delivered batch stays delivered after a restart. */
    struct logs_out o3 = { .cfg = &cfg, .name = "t", .spool_fd = -1 };
    assert_int_equal(logs_spool_open(&o3, &err), 0);
    assert_int_equal(o3.spool_pending, 1);
    assert_non_null(logs_spool_read(&o3, r));
    assert_memory_equal(r->body.p, "b1\n", 3);
    logs_spool_consume(&o3, r);
    assert_int_equal(o3.spool_pending, 0);
    assert_null(logs_spool_read(&o3, r));
    /* Full: an append past spool_limit is refused. */
    cfg.spool_limit = 20;
    assert_int_equal(logs_spool_append(&o3, a), SC_ETOOBIG);
    close(o3.spool_fd);
    free_batch(a);
    free_batch(b);
    free_batch(r);
    unlink(cfg.spool);
    rmdir(dir);
    sc_free(cfg.spool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),         cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_logfmt),       cmocka_unit_test(test_regex),
        cmocka_unit_test(test_cri),          cmocka_unit_test(test_time),
        cmocka_unit_test(test_continuation), cmocka_unit_test(test_positions),
        cmocka_unit_test(test_spool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
