// SPDX-License-Identifier: Apache-2.0
// Unit tests for the JSON string escaper: both spellings byte by byte, the JANSSON spelling
// against jansson itself, and the bounded escaper against the unbounded one at every capacity.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/json.h"
#include "core/utf8.h"

static void test_every_ascii_byte(void **state)
{
    (void)state;
    for (int c = 0; c < 0x80; c++) {
        char in = (char)c, out[16];
        size_t n = sc_json_escape_to(out, &in, 1, SC_JSON_COMPACT);
        out[n] = 0;
        char want[16];
        if (c == '"' || c == '\\') {
            snprintf(want, sizeof(want), "\\%c", c);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            snprintf(want, sizeof(want), "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(want, sizeof(want), "\\u%04x", c);
        } else {
            snprintf(want, sizeof(want), "%c", c);
        }
        assert_string_equal(out, want);
    }
    char out[16];
    size_t n = sc_json_quote_to(out, "\b\f\x7f\x1f", 4, SC_JSON_JANSSON);
    out[n] = 0;
    assert_string_equal(out, "\"\\b\\f\x7f\\u001F\"");
}

/* Quotes <in>[<len>] in the JANSSON spelling into <out> (room for 6 * len + 2) and checks it is
 * what json_dumps writes. */
static void assert_as_jansson(const char *in, size_t len, char *out)
{
    json_t *j = json_stringn(in, len);
    assert_non_null(j);
    char *want = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    size_t n = sc_json_quote_to(out, in, len, SC_JSON_JANSSON);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    free(want);
    json_decref(j);
}

/* JANSSON is what json_dumps writes for a string, on text of every length around the word size
 * with a special byte at every position. */
static void test_jansson_agrees(void **state)
{
    (void)state;
    static const char specials[] = { '"', '\\', '\n', '\r', '\t', '\b', '\f', 0x01, 0x1f, 0x7f };
    char in[40], out[40 * 6 + 2];
    for (size_t len = 0; len <= 24; len++) {
        for (size_t pos = 0; pos <= len; pos++) {
            for (size_t k = 0; k < sizeof(specials); k++) {
                memset(in, 'x', len);
                if (pos < len) {
                    in[pos] = specials[k];
                }
                assert_as_jansson(in, len, out);
            }
        }
    }
    const char *u = "caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80";
    size_t n = sc_json_quote_to(out, u, strlen(u), SC_JSON_JANSSON);
    out[n] = 0;
    assert_int_equal(n, strlen(u) + 2);
}

/* Text dense with special bytes (two or more in a word, next to UTF-8), in both spellings:
 * JANSSON against jansson, COMPACT against a byte-at-a-time escape from the table. */
static void test_dense_specials(void **state)
{
    (void)state;
    static const char *const pool[] = { "\"", "\\", "\n", "\t", "\x01",     "\x1f",        "\x7f",
                                        "a",  "bc", "{",  ":",  "\xc3\xa9", "\xe6\x97\xa5" };
    char in[200], out[200 * 6 + 2], want[200 * 6 + 2];
    unsigned seed = 7;
    for (int round = 0; round < 3000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = 0, target = (seed >> 16) % 128;
        while (len < target) {
            seed = seed * 1103515245u + 12345u;
            const char *t = pool[(seed >> 16) % 13];
            memcpy(in + len, t, strlen(t));
            len += strlen(t);
        }
        assert_as_jansson(in, len, out);
        size_t w = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)in[i];
            if (sc_json_esc[SC_JSON_COMPACT][c]) {
                w += sc_json_put_escape(want + w, c, SC_JSON_COMPACT);
            } else {
                want[w++] = (char)c;
            }
        }
        size_t n = sc_json_escape_to(out, in, len, SC_JSON_COMPACT);
        assert_int_equal(n, w);
        assert_memory_equal(out, want, n);
        /* Escaping twice in one pass is escaping the escaped text (JANSSON both times). */
        static char once[200 * 6], twice[200 * 6 * 6], two[200 * 7];
        size_t n1 = sc_json_escape_to(once, in, len, SC_JSON_JANSSON);
        size_t n2 = sc_json_escape_to(twice, once, n1, SC_JSON_JANSSON);
        assert_int_equal(sc_json_escape2_to(two, in, len), n2);
        assert_memory_equal(two, twice, n2);
    }
}

/* The bounded escaper writes the unbounded output cut at a character boundary, for every
 * capacity, and returns true exactly when all of it fit. */
static void test_bounded_every_cap(void **state)
{
    (void)state;
    static const char in[] = "ab\"c\\d\n\x01 caf\xc3\xa9 \xe6\x97\xa5\xff\xf0\x9f\x98\x80"
                             "longer plain text run\x7f end";
    size_t n = sizeof(in) - 1;
    /* the whole output, built from the parts: valid runs escaped, bad bytes replaced */
    char full[sizeof(in) * 6];
    size_t flen = 0;
    for (size_t i = 0; i < n;) {
        size_t seg = sc_utf8_valid_prefix(in + i, n - i);
        flen += sc_json_escape_to(full + flen, in + i, seg, SC_JSON_COMPACT);
        i += seg;
        if (i < n) {
            memcpy(full + flen, SC_UTF8_REPLACEMENT, 3);
            flen += 3;
            i++;
        }
    }
    size_t prev = 0;
    for (size_t cap = 0; cap <= flen + 2; cap++) {
        char out[sizeof(in) * 6];
        size_t len = 0;
        bool ok = sc_json_escape(out, cap, &len, in, n);
        assert_true(len <= cap);
        assert_true(len >= prev);
        assert_memory_equal(out, full, len);
        assert_int_equal(ok, cap >= flen);
        if (!ok) {
            /* what stopped it did not fit: a whole escape, character or replacement */
            assert_true(len == cap || full[len] == '\\' || (unsigned char)full[len] >= 0x80);
        }
        prev = len;
    }
    /* appends at *len */
    char out[32] = "xy";
    size_t len = 2;
    assert_true(sc_json_escape(out, sizeof(out), &len, "\"", 1));
    assert_int_equal(len, 4);
    assert_memory_equal(out, "xy\\\"", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_ascii_byte),
        cmocka_unit_test(test_jansson_agrees),
        cmocka_unit_test(test_dense_specials),
        cmocka_unit_test(test_bounded_every_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
