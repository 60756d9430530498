// SPDX-License-Identifier: Apache-2.0
// Unit tests for the logs role's pure parts: the json/logfmt/regex parsers (the JSON object parser
// against jansson, and against a guard page), records and their encoders, CRI framing, timestamp
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
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/logs/logs.h"

static struct logs_ev ev;

/* Parses <s> from an exactly-sized heap copy (ASan catches reads past its end). The record's
 * views may point into the copy: it is freed by the next call (or done()). */
static char *last_copy;

static void done(void)
{
    sc_free(last_copy);
    last_copy = NULL;
    logs_ev_cleanup(&ev);
}

static struct logs_ev *parse_n(enum logs_parser p, const char *s, size_t n, bool *perr)
{
    struct logs_parse_cfg pc = { .parser = p };
    int64_t ts = 0;
    sc_free(last_copy);
    last_copy = sc_malloc(n ? n : 1);
    memcpy(last_copy, s, n);
    logs_parse_line(&pc, sc_str_n(last_copy, n), &ev, &ts, perr);
    return &ev;
}

static struct logs_ev *parse(enum logs_parser p, const char *s, bool *perr)
{
    return parse_n(p, s, strlen(s), perr);
}

/* The record as the file output writes it; returns a static string. */
static const char *dump(const struct logs_ev *e, enum logs_esc style)
{
    static struct sc_buf b;
    static bool init;
    if (!init) {
        sc_buf_init(&b, 1 << 24);
        init = true;
    }
    sc_buf_reset(&b);
    assert_int_equal(logs_ev_dump(&b, e, style, NULL, NULL), 0);
    sc_buf_append(&b, "", 1);
    return b.p;
}

static const char *str(const struct logs_ev *e, const char *key)
{
    static char tmp[256];
    const struct logs_field *f = logs_ev_get(e, sc_str_c(key));
    if (!f || f->type != LOGS_V_STR) {
        return NULL;
    }
    snprintf(tmp, sizeof(tmp), "%.*s", (int)f->val.len, f->val.p);
    return tmp;
}

static void test_json(void **state)
{
    (void)state;
    bool perr;
    struct logs_ev *e = parse(LOGS_P_JSON, "{\"a\":1,\"b\":\"x\"}", &perr);
    assert_false(perr);
    assert_string_equal(dump(e, LOGS_ESC_FAST), "{\"a\":1,\"b\":\"x\"}");
    const char *bad[] = { "", "{", "[1,2]", "42", "{\"a\":1}x", "{\"a\":\"\xff\"}" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        e = parse(LOGS_P_JSON, bad[i], &perr);
        assert_true(perr);
        assert_int_equal(logs_ev_get(e, SC_STR("parse_error"))->type, LOGS_V_TRUE);
        assert_non_null(str(e, "message"));
    }
    done();
}

/* The JSON object parser against jansson: the same lines accepted, and the same bytes printed
 * (jansson's compact, order-preserving dump). The fuzz target does the same on random input. */
static void test_json_like_jansson(void **state)
{
    (void)state;
    const char *cases[] = {
        "{}",
        " \t{ } \r",
        "{\"a\" : \"b\" , \"c\":[1, 2,{\"d\":null}], \"e\":{}}",
        "{\"dup\":1,\"x\":2,\"dup\":\"last\"}",
        "{\"esc\":\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20AC \\ud83d\\ude00 \\u001f\"}",
        "{\"n\":-0,\"i\":9223372036854775807,\"m\":-9223372036854775808,\"z\":0}",
        "{\"r\":1.5,\"e\":1e2,\"E\":-2.5E-3,\"s\":0.1,\"t\":1e-400,\"u\":-0.0}",
        "{\"t\":true,\"f\":false,\"z\":null}",
        "{\"u\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"\":\"empty key\"}",
        "{\"nested\":{\"a\":{\"b\":[[],[{}]]},\"a\":2}}",
        "{\"ctl\":\"\\u0001\\u007f\x7f\"}",
        /* rejected by both */
        "{\"i\":9223372036854775808}",
        "{\"i\":-9223372036854775809}",
        "{\"r\":1e400}",
        "{\"r\":[1e999]}",
        "{\"nul\":\"\\u0000\"}",
        "{\"lone\":\"\\ud800\"}",
        "{\"lone\":\"\\udc00\"}",
        "{\"pair\":\"\\ud800\\u0041\"}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":1e}",
        "{\"a\":+1}",
        "{\"a\":tru}",
        "{\"a\":\"x\ty\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\"}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":[1,]}",
        "{\"a\":{\"b\"}}",
        "{\"a\":\"\xc0\x80\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":1}\n{}",
        "{'a':1}",
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        json_error_t err;
        json_t *j = json_loadb(cases[i], strlen(cases[i]), 0, &err);
        bool ok = j && json_is_object(j);
        logs_ev_reset(&ev);
        int rc = logs_ev_parse_json(&ev, sc_str_c(cases[i]));
        if (rc != (ok ? 0 : SC_EINVAL)) {
            fail_msg("case %zu %s: jansson %s, ours %d", i, cases[i], ok ? "accepts" : "rejects",
                     rc);
        }
        if (ok) {
            char *want = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
            assert_string_equal(dump(&ev, LOGS_ESC_JANSSON), want);
            free(want);
        }
        json_decref(j);
    }
    /* Depth: jansson counts every value, 2048 at most. */
    for (size_t depth = 2045; depth <= 2049; depth++) {
        size_t n = 2 * depth + 16;
        char *s = sc_malloc(n);
        size_t o = 0;
        o += (size_t)snprintf(s, n, "{\"a\":");
        for (size_t k = 0; k < depth - 2; k++) {
            s[o++] = '[';
        }
        s[o++] = '1';
        for (size_t k = 0; k < depth - 2; k++) {
            s[o++] = ']';
        }
        s[o++] = '}';
        json_error_t err;
        json_t *j = json_loadb(s, o, 0, &err);
        logs_ev_reset(&ev);
        assert_int_equal(logs_ev_parse_json(&ev, sc_str_n(s, o)), j ? 0 : SC_EINVAL);
        json_decref(j);
        sc_free(s);
    }
    done();
}

static void test_json_guard_page(void **state)
{
    (void)state;
    /* Every prefix of a valid line, flush against an unreadable page: no read past its end. */
    const char *line =
        "{\"msg\":\"h\\u00e9llo w\xc3\xb6rld\",\"n\":-12.5e3,\"a\":[true,{\"b\":null}]}";
    size_t n = strlen(line);
    long pg = sysconf(_SC_PAGESIZE);
    char *map =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
    for (size_t k = 0; k <= n; k++) {
        char *p = map + pg - k;
        memcpy(p, line, k);
        logs_ev_reset(&ev);
        assert_int_equal(logs_ev_parse_json(&ev, sc_str_n(p, k)), k == n ? 0 : SC_EINVAL);
    }
    munmap(map, (size_t)pg * 2);
    done();
}

static void test_escape_styles(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    struct sc_str s = sc_str_n("a\"\\\b\f\n\r\t\x01\x7f/\xc3\xa9z0123456789", 24);
    assert_int_equal(logs_json_quote(&b, s, LOGS_ESC_FAST), 0);
    sc_buf_append(&b, "", 1);
    assert_string_equal(b.p,
                        "\"a\\\"\\\\\\u0008\\u000c\\n\\r\\t\\u0001\\u007f/\xc3\xa9z0123456789\"");
    sc_buf_reset(&b);
    assert_int_equal(logs_json_quote(&b, s, LOGS_ESC_JANSSON), 0);
    sc_buf_append(&b, "", 1);
    assert_string_equal(b.p, "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\x7f/\xc3\xa9z0123456789\"");
    sc_buf_cleanup(&b);
}

static void test_json_unquote(void **state)
{
    (void)state;
    char out[64];
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    /* Whatever logs_json_quote writes, in either style, comes back byte for byte. */
    static const char text[] = "a\"\\\b\f\n\r\t\x01\x7f/\xc3\xa9\xf0\x9f\x98\x80z";
    struct sc_str s = sc_str_n(text, sizeof(text) - 1);
    for (int style = 0; style < 2; style++) {
        sc_buf_reset(&b);
        assert_int_equal(logs_json_quote(&b, s, style ? LOGS_ESC_JANSSON : LOGS_ESC_FAST), 0);
        assert_int_equal(logs_json_unquote(out, sc_buf_str(&b)), (ssize_t)s.len);
        assert_memory_equal(out, s.p, s.len);
    }
    /* Escapes others write: \/, \u with both cases, a surrogate pair. */
    const char *in = "\"\\/\\u00E9\\u00e9\\ud83d\\ude00x\"";
    assert_int_equal(logs_json_unquote(out, sc_str_c(in)), 10);
    assert_memory_equal(out, "/\xc3\xa9\xc3\xa9\xf0\x9f\x98\x80x", 10);
    assert_int_equal(logs_json_unquote(out, sc_str_c("\"\"")), 0);
    /* Not exactly one valid string: refused. */
    const char *bad[] = { "",          "\"",          "abc",         "\"abc",
                          "\"a\"b",    "\"a\" ",      " \"a\"",      "\"\\x\"",
                          "\"\\u12\"", "\"\\u0000\"", "\"\\ud83d\"", "\"\\ude00\"",
                          "\"\x01\"",  "\"\xc3\"",    "\"\xff\"",    "\"a\\\"" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(logs_json_unquote(out, sc_str_c(bad[i])), -1);
    }
    sc_buf_cleanup(&b);
}

static void test_record_ops(void **state)
{
    (void)state;
    logs_ev_init(&ev);
    /* Like a jansson object: set in place, append new keys, delete, set again goes last. */
    logs_ev_set(&ev, SC_STR("a"), LOGS_V_STR, SC_STR("1"));
    logs_ev_set(&ev, SC_STR("b"), LOGS_V_TRUE, SC_STR_NULL);
    logs_ev_set(&ev, SC_STR("a"), LOGS_V_INT, SC_STR("2"));
    assert_string_equal(dump(&ev, LOGS_ESC_FAST), "{\"a\":2,\"b\":true}");
    assert_true(logs_ev_del(&ev, SC_STR("a")));
    assert_false(logs_ev_del(&ev, SC_STR("a")));
    logs_ev_set(&ev, SC_STR("a"), LOGS_V_NULL, SC_STR_NULL);
    assert_string_equal(dump(&ev, LOGS_ESC_FAST), "{\"b\":true,\"a\":null}");
    logs_ev_rename(&ev, SC_STR("b"), SC_STR("c"));
    assert_string_equal(dump(&ev, LOGS_ESC_FAST), "{\"a\":null,\"c\":true}");
    logs_ev_rename(&ev, SC_STR("c"), SC_STR("a")); /* onto an existing key: in its place */
    assert_string_equal(dump(&ev, LOGS_ESC_FAST), "{\"a\":true}");
    /* first/last fields of the encoders */
    struct logs_field ts = { SC_STR("ts"), SC_STR("T"), LOGS_V_STR };
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    struct logs_field at = { SC_STR("@t"), SC_STR("T"), LOGS_V_STR };
    assert_int_equal(logs_ev_dump(&b, &ev, LOGS_ESC_FAST, &ts, &at), 0);
    sc_buf_append(&b, "", 1);
    assert_string_equal(b.p, "{\"ts\":\"T\",\"a\":true,\"@t\":\"T\"}");
    logs_ev_set(&ev, SC_STR("ts"), LOGS_V_INT, SC_STR("5"));
    logs_ev_set(&ev, SC_STR("@t"), LOGS_V_INT, SC_STR("6"));
    sc_buf_reset(&b);
    assert_int_equal(logs_ev_dump(&b, &ev, LOGS_ESC_FAST, &ts, &at), 0);
    sc_buf_append(&b, "", 1);
    assert_string_equal(b.p, "{\"ts\":5,\"a\":true,\"@t\":6}");
    sc_buf_cleanup(&b);
    /* Many fields: the hash index keeps lookups and duplicate keys right. */
    logs_ev_reset(&ev);
    char keys[3000][8];
    for (int i = 0; i < 3000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        logs_ev_set(&ev, sc_str_c(keys[i]), LOGS_V_INT, SC_STR("1"));
    }
    for (int i = 0; i < 3000; i += 2) {
        logs_ev_del(&ev, sc_str_c(keys[i]));
    }
    for (int i = 0; i < 3000; i++) {
        const struct logs_field *f = logs_ev_get(&ev, sc_str_c(keys[i]));
        assert_true((f != NULL) == (i % 2 == 1));
    }
    assert_int_equal(ev.live, 1500);
    logs_ev_set(&ev, SC_STR("k1"), LOGS_V_STR, SC_STR("x"));
    assert_int_equal(ev.live, 1500);
    assert_string_equal(str(&ev, "k1"), "x");
    done();
}

static void test_utf8_repair(void **state)
{
    (void)state;
    logs_ev_init(&ev);
    struct sc_str s = logs_ev_clean(&ev, SC_STR("a\xff\xc3(\xed\xa0\x80z\xf0\x9f\x98\x80"));
    assert_int_equal(s.len, strlen("a\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf"
                                   "\xbdz\xf0\x9f\x98\x80"));
    assert_memory_equal(s.p,
                        "a\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz"
                        "\xf0\x9f\x98\x80",
                        s.len);
    s = logs_ev_clean(&ev, sc_str_n("a\0b", 3));
    assert_int_equal(s.len, 5); /* NUL replaced too */
    struct sc_str ok = SC_STR("plain ascii text, long enough for whole words \xc3\xa9");
    assert_ptr_equal(logs_ev_clean(&ev, ok).p, ok.p); /* valid: no copy */
    done();
}

static void test_logfmt(void **state)
{
    (void)state;
    logs_ev_init(&ev);
    assert_int_equal(logs_parse_logfmt(SC_STR("a=1 b=\"x y\" c= d e=\"q\\\"\""), &ev), 0);
    assert_string_equal(str(&ev, "a"), "1");
    assert_string_equal(str(&ev, "b"), "x y");
    assert_string_equal(str(&ev, "c"), "");
    assert_int_equal(logs_ev_get(&ev, SC_STR("d"))->type, LOGS_V_TRUE);
    assert_string_equal(str(&ev, "e"), "q\"");
    const char *bad[] = { "", "   ", "=x", "a=\"open", "a=b\"c", "a=\"x\"y" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        logs_ev_reset(&ev);
        assert_int_equal(logs_parse_logfmt(sc_str_c(bad[i]), &ev), SC_EINVAL);
    }
    done();
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
    logs_ev_init(&ev);
    logs_parse_line(&pc, SC_STR("hello 42"), &ev, &ts, &perr);
    assert_false(perr);
    assert_string_equal(str(&ev, "a"), "hello");
    assert_string_equal(str(&ev, "b"), "42");
    logs_parse_line(&pc, SC_STR("hello "), &ev, &ts, &perr);
    assert_false(perr);
    assert_null(logs_ev_get(&ev, SC_STR("b"))); /* unset group: absent */
    logs_parse_line(&pc, SC_STR("!"), &ev, &ts, &perr);
    assert_true(perr);
    pcre2_match_data_free(pc.md);
    pcre2_code_free(pc.re);
    done();
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
    struct logs_pos in[] = {
        { .dev = 1,
          .ino = 2,
          .offset = 3,
          .head_len = 3,
          .head = logs_pos_head("a\nb", 3),
          .path = "/a b/c%d\nx.log" },
        { .dev = 18446744073709551615ull, .offset = 7, .head = UINT64_MAX, .path = "" }
    };
    assert_int_equal(logs_pos_save(path, in, 2), 0);
    assert_int_equal(logs_pos_load(path, &v, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].path, in[0].path);
    assert_true(v[1].dev == in[1].dev && v[1].offset == 7 && v[0].ino == 2);
    assert_true(v[0].head_len == 3 && v[0].head == logs_pos_head("a\nb", 3));
    assert_true(v[1].head_len == 0 && v[1].head == UINT64_MAX);
    assert_true(logs_pos_head("a\nb", 3) != logs_pos_head("a\nc", 3));
    logs_pos_free(v, n);
    /* Version 1 (no head fingerprint) is still read. */
    FILE *f1 = fopen(path, "w");
    fputs("sidecar-logs-positions 1\n5 6 7 /p q\n", f1);
    fclose(f1);
    assert_int_equal(logs_pos_load(path, &v, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].ino == 6 && v[0].offset == 7 && v[0].head_len == 0);
    assert_string_equal(v[0].path, "/p q");
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

/* The at-least-once invariant: the acknowledged sequence covers only a contiguous prefix of
 * delivered units, whatever order they complete in; skipped records ride with the newest unit. */
static void test_ack(void **state)
{
    (void)state;
    struct logs_ack a;
    logs_ack_init(&a);
    /* A record skipped with nothing open is acknowledged at once. */
    logs_ack_skip(&a, 1);
    assert_int_equal(a.acked, 1);
    /* Units 1..4 of records 2-3, 4-5, 6-7, 8-9 (ids 0..3). */
    uint64_t id[4];
    for (int i = 0; i < 4; i++) {
        id[i] = logs_ack_open(&a);
        logs_ack_extend(&a, (uint64_t)(2 + 2 * i));
        logs_ack_extend(&a, (uint64_t)(3 + 2 * i));
    }
    assert_int_equal(logs_ack_open_units(&a), 4);
    /* Out of order: the later ones do not move the acknowledged sequence. */
    assert_false(logs_ack_done(&a, id[1]));
    assert_false(logs_ack_done(&a, id[3]));
    assert_int_equal(a.acked, 1);
    /* Twice, or an id never opened: no effect. */
    assert_false(logs_ack_done(&a, id[1]));
    assert_false(logs_ack_done(&a, 99));
    /* The first one: the prefix 0..1 is through, 2 still holds 3 back. */
    assert_true(logs_ack_done(&a, id[0]));
    assert_int_equal(a.acked, 5);
    assert_int_equal(logs_ack_open_units(&a), 2);
    /* A skipped record joins the newest open unit, not the acknowledged prefix. */
    logs_ack_skip(&a, 10);
    assert_int_equal(a.acked, 5);
    assert_true(logs_ack_done(&a, id[2]));
    assert_int_equal(a.acked, 10);
    assert_int_equal(logs_ack_open_units(&a), 0);
    /* Many units: the ring grows and wraps with ids kept. */
    uint64_t seq = 10, ids[100];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 100; i++) {
            ids[i] = logs_ack_open(&a);
            logs_ack_extend(&a, ++seq);
        }
        for (int i = 99; i >= 1; i--) {
            assert_false(logs_ack_done(&a, ids[i]));
        }
        assert_true(logs_ack_done(&a, ids[0]));
        assert_int_equal(a.acked, seq);
    }
    /* A unit opened and never extended covers nothing beyond what came before. */
    uint64_t e = logs_ack_open(&a);
    assert_false(logs_ack_done(&a, e));
    assert_int_equal(a.acked, seq);
    logs_ack_cleanup(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_like_jansson),
        cmocka_unit_test(test_json_guard_page),
        cmocka_unit_test(test_escape_styles),
        cmocka_unit_test(test_json_unquote),
        cmocka_unit_test(test_record_ops),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_logfmt),
        cmocka_unit_test(test_regex),
        cmocka_unit_test(test_cri),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_spool),
        cmocka_unit_test(test_ack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
