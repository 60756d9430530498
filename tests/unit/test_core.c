// SPDX-License-Identifier: Apache-2.0
// Unit tests for the core basics: views, capped buffers, lists, errors and log lines.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "core/str.h"

static void test_str(void **state)
{
    (void)state;
    assert_true(sc_str_eq(SC_STR("abc"), sc_str_c("abc")));
    assert_false(sc_str_eq(SC_STR("abc"), SC_STR("abd")));
    assert_true(sc_str_caseeq(SC_STR("Content-Length"), SC_STR("content-LENGTH")));
    assert_false(sc_str_caseeq(SC_STR("a"), SC_STR("ab")));
    /* Every byte pair at every position of lengths 1..19 (the word-wise compare), against the
     * definition: equal after lower-casing ASCII letters only. */
    for (size_t len = 1; len < 20; len++) {
        for (size_t pos = 0; pos < len; pos += (len > 9 ? 3 : 1)) {
            for (int x = 0; x < 256; x++) {
                for (int y = 0; y < 256; y++) {
                    char a[20], b[20];
                    memset(a, 'q', len);
                    memset(b, 'Q', len);
                    a[pos] = (char)x;
                    b[pos] = (char)y;
                    int lx = x >= 'A' && x <= 'Z' ? x | 0x20 : x;
                    int ly = y >= 'A' && y <= 'Z' ? y | 0x20 : y;
                    assert_int_equal(sc_str_caseeq(sc_str_n(a, len), sc_str_n(b, len)), lx == ly);
                }
            }
        }
    }
    struct sc_str t = sc_str_trim(SC_STR(" \t x y \t"));
    assert_true(sc_str_eq(t, SC_STR("x y")));
    struct sc_str s = SC_STR("a,b,,c");
    assert_true(sc_str_eq(sc_str_split(&s, ','), SC_STR("a")));
    assert_true(sc_str_eq(sc_str_split(&s, ','), SC_STR("b")));
    assert_true(sc_str_eq(sc_str_split(&s, ','), SC_STR("")));
    assert_true(sc_str_eq(sc_str_split(&s, ','), SC_STR("c")));
    assert_int_equal(s.len, 0);

    uint64_t v;
    assert_int_equal(sc_str_to_u64(SC_STR("18446744073709551615"), UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(sc_str_to_u64(SC_STR("18446744073709551616"), UINT64_MAX, &v), -EINVAL);
    assert_int_equal(sc_str_to_u64(SC_STR("65536"), 65535, &v), -EINVAL);
    /* 19 digits take the path without per-digit overflow checks: the limit still holds. */
    assert_int_equal(sc_str_to_u64(SC_STR("9999999999999999999"), UINT64_MAX, &v), 0);
    assert_true(v == 9999999999999999999ull);
    assert_int_equal(sc_str_to_u64(SC_STR("9223372036854775808"), INT64_MAX, &v), -EINVAL);
    assert_int_equal(sc_str_to_u64(SC_STR("9223372036854775807"), INT64_MAX, &v), 0);
    assert_int_equal(sc_str_to_u64(SC_STR("00000000000000000001"), 10, &v), 0);
    assert_true(v == 1);
    assert_int_equal(sc_str_to_u64(SC_STR("1x"), 10, &v), -EINVAL);
    assert_int_equal(sc_str_to_u64(SC_STR(""), 10, &v), -EINVAL);
    assert_int_equal(sc_str_to_u64(SC_STR("+1"), 10, &v), -EINVAL);
    assert_int_equal(sc_str_to_u64(SC_STR("1 "), 10, &v), -EINVAL);
}

static void test_buf_cap(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 10);
    assert_int_equal(sc_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(sc_buf_append(&b, "x", 1), SC_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(sc_buf_cstr(&b), "0123456789");
    sc_buf_consume(&b, 4);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.p, "456789", 6);
    assert_int_equal(sc_buf_appendf(&b, "%d", 1234), 0);
    assert_int_equal(sc_buf_appendf(&b, "%s", "z"), SC_ETOOBIG);
    assert_string_equal(sc_buf_cstr(&b), "4567891234");
    sc_buf_reset(&b);
    assert_int_equal(b.len, 0);
    sc_buf_cleanup(&b);
    sc_buf_cleanup(&b);
    /* an exact reservation allocates what it is asked, no more, and keeps the cap */
    assert_int_equal(sc_buf_reserve_exact(&b, 7), 0);
    assert_int_equal(b.cap, 7);
    assert_int_equal(sc_buf_append(&b, "0123456", 7), 0);
    assert_int_equal(b.cap, 7);
    assert_int_equal(sc_buf_reserve_exact(&b, 4), SC_ETOOBIG);
    assert_int_equal(sc_buf_reserve_exact(&b, 3), 0);
    assert_int_equal(b.cap, 10);
    sc_buf_cleanup(&b);
}

static void test_buf_growth(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(sc_buf_appendf(&b, "line %05d\n", i), 0);
    }
    assert_int_equal(b.len, 110000);
    assert_true(b.cap <= (1 << 20) + 1);
    assert_memory_equal(b.p + 109989, "line 09999\n", 11);
    sc_buf_cleanup(&b);
}

struct item {
    int v;
    struct sc_list link;
};

static void test_list(void **state)
{
    (void)state;
    struct sc_list head;
    sc_list_init(&head);
    assert_true(sc_list_empty(&head));
    struct item items[4];
    for (int i = 0; i < 4; i++) {
        items[i].v = i;
        sc_list_append(&head, &items[i].link);
    }
    struct item zero = { .v = -1 };
    sc_list_prepend(&head, &zero.link);
    sc_list_remove(&items[2].link);
    sc_list_remove(&items[2].link); /* twice is harmless */
    assert_true(sc_list_unlinked(&items[2].link));
    int expect[] = { -1, 0, 1, 3 };
    int n = 0;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &head)
    {
        struct item *it = sc_list_entry(pos, struct item, link);
        assert_int_equal(it->v, expect[n++]);
        sc_list_remove(pos);
    }
    assert_int_equal(n, 4);
    assert_true(sc_list_empty(&head));
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(sc_strerror(SC_ETOOBIG), "limit exceeded: buffer or queue full");
    assert_string_equal(sc_strerror(-ENOENT), "No such file or directory");
    assert_string_equal(sc_strerror(0), "success");
    assert_string_equal(sc_strerror(-4999), "unknown error");
    /* libuv codes without an errno (its resolver's) are described by libuv */
    assert_string_equal(sc_strerror(UV_EAI_NONAME), "unknown node or service");
    assert_string_equal(sc_strerror(-3999), "unknown error");
}

/* Runs sc_log_at with stderr redirected to a temp file and returns what it wrote. */
static char *capture_log(enum sc_log_format fmt, void (*emit)(void))
{
    char path[] = "/tmp/sc-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    sc_log_setup(SC_LOG_DEBUG, fmt, "test");
    emit();
    dup2(saved, STDERR_FILENO);
    close(saved);
    sc_log_setup(SC_LOG_INFO, SC_LOG_TEXT, NULL);
    char *out = sc_malloc(65536);
    ssize_t n = pread(fd, out, 65535, 0);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
    unlink(path);
    return out;
}

static void emit_fields(void)
{
    sc_info("listener bound", SC_LS("addr", "0.0.0.0:9001"), SC_LI("workers", -2),
            SC_LU("big", 4294967296ull), SC_LB("tls", false), SC_LD("ratio", 0.25),
            SC_LS("quote", "a \"b\"\n\x01"), SC_LSN("cut", "abcdef", 3), SC_LS("null", NULL),
            SC_LS("bad_utf8", "\xff\xfe ok \xc3\xa9"));
    sc_debug("debug line");
}

static void test_log_json(void **state)
{
    (void)state;
    char *out = capture_log(SC_LOG_JSON, emit_fields);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "role")), "test");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "listener bound");
    assert_string_equal(json_string_value(json_object_get(j, "addr")), "0.0.0.0:9001");
    assert_int_equal(json_integer_value(json_object_get(j, "workers")), -2);
    assert_true(json_is_false(json_object_get(j, "tls")));
    assert_true(json_real_value(json_object_get(j, "ratio")) == 0.25);
    assert_string_equal(json_string_value(json_object_get(j, "quote")), "a \"b\"\n\x01");
    assert_string_equal(json_string_value(json_object_get(j, "cut")), "abc");
    assert_string_equal(json_string_value(json_object_get(j, "null")), "");
    assert_string_equal(json_string_value(json_object_get(j, "bad_utf8")),
                        "\xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9");
    assert_non_null(strstr(nl + 1, "\"msg\":\"debug line\""));
    json_decref(j);
    sc_free(out);
}

static void test_log_text(void **state)
{
    (void)state;
    char *out = capture_log(SC_LOG_TEXT, emit_fields);
    assert_non_null(strstr(out, " info listener bound addr=0.0.0.0:9001 workers=-2 "));
    assert_non_null(strstr(out, " quote=\"a \\\"b\\\"\\n\\u0001\""));
    assert_non_null(strstr(out, " tls=false ratio=0.25 "));
    sc_free(out);
}

static void emit_huge(void)
{
    char *big = sc_malloc(40000);
    memset(big, 'x', 39999);
    big[39999] = '\0';
    sc_warn("huge", SC_LS("first", "kept"), SC_LS("value", big), SC_LS("after", "dropped"));
    sc_free(big);
}

static void test_log_truncates_whole_fields(void **state)
{
    (void)state;
    char *out = capture_log(SC_LOG_JSON, emit_huge);
    assert_true(strlen(out) <= 16384);
    json_error_t jerr;
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "first")), "kept");
    assert_null(json_object_get(j, "value"));
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    sc_free(out);
}

/* sc_json_escape: runs of plain bytes copied whole, escapes, UTF-8 kept, invalid bytes replaced,
 * and a stop at the capacity that keeps everything that fits (appending at *len). */
static void test_json_escape(void **state)
{
    (void)state;
    char out[64];
    size_t len = 2;
    memcpy(out, "[[", 2);
    const char in[] = "GET /a?b=1 \"q\" \\ \n\t\x01\x7f \xc3\xa9 \xff end";
    assert_true(sc_json_escape(out, sizeof(out), &len, in, sizeof(in) - 1));
    const char want[] =
        "[[GET /a?b=1 \\\"q\\\" \\\\ \\n\\t\\u0001\\u007f \xc3\xa9 \xef\xbf\xbd end";
    assert_int_equal(len, sizeof(want) - 1);
    assert_memory_equal(out, want, len);
    /* Stops inside a plain run, inside an escape (never half of one), with what fits kept. */
    len = 0;
    assert_false(sc_json_escape(out, 5, &len, "abcdefgh", 8));
    assert_int_equal(len, 5);
    assert_memory_equal(out, "abcde", 5);
    len = 0;
    assert_false(sc_json_escape(out, 4, &len, "ab\"c", 4));
    assert_int_equal(len, 4);
    assert_memory_equal(out, "ab\\\"", 4);
    len = 0;
    assert_false(sc_json_escape(out, 3, &len, "ab\"c", 4));
    assert_int_equal(len, 2);
    len = 0;
    assert_true(sc_json_escape(out, sizeof(out), &len, "", 0));
    assert_int_equal(len, 0);
}

static void test_log_parse(void **state)
{
    (void)state;
    enum sc_log_level l;
    enum sc_log_format f;
    assert_int_equal(sc_log_level_parse("warn", &l), 0);
    assert_int_equal(l, SC_LOG_WARN);
    assert_int_equal(sc_log_level_parse("verbose", &l), -EINVAL);
    assert_int_equal(sc_log_format_parse("json", &f), 0);
    assert_int_equal(f, SC_LOG_JSON);
    assert_int_equal(sc_log_format_parse("xml", &f), -EINVAL);
}

static size_t zeroed_n, zeroed_bytes, dirty_n;

static void observe_zeroed(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i]) {
            dirty_n++;
            return;
        }
    }
    zeroed_n++;
    zeroed_bytes += n;
}

/* A sensitive buffer zeroes every block it gives up: the old one at each growth (where realloc
 * would have freed it with the contents in it) and the last one at cleanup. sc_free_zeroed
 * zeroes the whole block without being told its size. An ordinary buffer zeroes nothing. */
static void test_buf_sensitive_and_free_zeroed(void **state)
{
    (void)state;
    zeroed_n = zeroed_bytes = dirty_n = 0;
    sc_alloc_zeroed_observer = observe_zeroed;
    struct sc_buf b;
    sc_buf_init(&b, 1u << 20);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sc_buf_append_cstr(&b, "password=hunter2;"), 0);
    }
    sc_buf_cleanup(&b);
    assert_int_equal(zeroed_n, 0);

    sc_buf_init(&b, 1u << 20);
    b.sensitive = true;
    for (int i = 0; i < 100; i++) { /* 1700 bytes: 256 -> 512 -> 1024 -> 2048 */
        assert_int_equal(sc_buf_append_cstr(&b, "password=hunter2;"), 0);
    }
    assert_int_equal(b.len, 1700);
    assert_memory_equal(b.p + 1683, "password=hunter2;", 17);
    assert_int_equal(zeroed_n, 3);
    sc_buf_cleanup(&b);
    assert_int_equal(zeroed_n, 4);
    assert_int_equal(zeroed_bytes, 256 + 512 + 1024 + 2048);

    char *p = sc_strdup("token=s.0123456789abcdef");
    sc_free_zeroed(p);
    assert_int_equal(zeroed_n, 5);
    assert_true(zeroed_bytes >= 256 + 512 + 1024 + 2048 + 25);
    sc_free_zeroed(NULL);
    sc_alloc_zeroed_observer = NULL;
    assert_int_equal(dirty_n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str),         cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_growth),  cmocka_unit_test(test_list),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_text),    cmocka_unit_test(test_log_truncates_whole_fields),
        cmocka_unit_test(test_log_parse),   cmocka_unit_test(test_buf_sensitive_and_free_zeroed),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
