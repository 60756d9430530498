// SPDX-License-Identifier: Apache-2.0
// Unit tests for the UTF-8 validator: every sequence of up to three bytes and the four-byte
// boundaries checked against a reference decoder written from the definition, and input placed
// flush against a guard page so that an overread faults.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/utf8.h"

/* The definition, slowly: decode the code point, then refuse overlong forms, surrogates and
 * code points past U+10FFFF. */
static size_t ref_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

static void test_every_short_sequence(void **state)
{
    (void)state;
    unsigned char b[4] = { 0 };
    for (unsigned x = 0; x < (1u << 24); x++) {
        b[0] = (unsigned char)(x >> 16);
        b[1] = (unsigned char)(x >> 8);
        b[2] = (unsigned char)x;
        for (size_t n = 1; n <= 3; n++) {
            if (sc_utf8_seq(b, n) != ref_seq(b, n)) {
                fail_msg("%02x %02x %02x (n=%zu): %zu, want %zu", b[0], b[1], b[2], n,
                         sc_utf8_seq(b, n), ref_seq(b, n));
            }
        }
    }
    /* Four bytes: every lead and second byte, with continuation and non-continuation tails. */
    static const unsigned char tails[] = { 0x00, 0x7f, 0x80, 0xbf, 0xc0, 0xff };
    for (unsigned lead = 0xf0; lead <= 0xff; lead++) {
        for (unsigned second = 0; second <= 0xff; second++) {
            for (size_t t = 0; t < sizeof(tails); t++) {
                for (size_t u = 0; u < sizeof(tails); u++) {
                    unsigned char q[4] = { (unsigned char)lead, (unsigned char)second, tails[t],
                                           tails[u] };
                    for (size_t n = 1; n <= 4; n++) {
                        assert_int_equal(sc_utf8_seq(q, n), ref_seq(q, n));
                    }
                }
            }
        }
    }
}

static void test_known(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        { "", true },
        { "plain ascii", true },
        { "caf\xc3\xa9", true },
        { "\xe6\x97\xa5\xe6\x9c\xac", true },
        { "\xf0\x9f\x98\x80", true },
        { "\xf4\x8f\xbf\xbf", true },  /* U+10FFFF */
        { "\xf4\x90\x80\x80", false }, /* past U+10FFFF */
        { "\xc0\x80", false },         /* overlong NUL */
        { "\xc1\xbf", false },
        { "\xe0\x80\xaf", false },     /* overlong '/' */
        { "\xf0\x8f\xbf\xbf", false }, /* overlong U+FFFF */
        { "\xed\xa0\x80", false },     /* U+D800 */
        { "\xed\xbf\xbf", false },     /* U+DFFF */
        { "\xee\x80\x80", true },      /* U+E000 */
        { "\xc3", false },             /* cut short */
        { "abc\xe6\x97", false },
        { "\x80", false },
        { "\xff", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(sc_utf8_valid(cases[i].s, strlen(cases[i].s)), cases[i].ok);
    }
    /* NUL is valid UTF-8 */
    assert_true(sc_utf8_valid("a\0b", 3));
}

/* The prefix stops at the first bad byte wherever it falls relative to the eight-byte words. */
static void test_prefix_every_offset(void **state)
{
    (void)state;
    char buf[64];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t bad = 0; bad < len; bad++) {
            memset(buf, 'a', len);
            buf[bad] = (char)0xff;
            assert_int_equal(sc_utf8_valid_prefix(buf, len), bad);
        }
        memset(buf, 'a', len);
        assert_int_equal(sc_utf8_valid_prefix(buf, len), len);
        if (len >= 2) {
            /* a two-byte character cut by the end */
            buf[len - 1] = (char)0xc3;
            assert_int_equal(sc_utf8_valid_prefix(buf, len), len - 1);
        }
    }
}

/* A sequence cut short by the end of the input is refused without reading past the end. */
static void test_guard_page(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    static const char *const tails[] = { "\xf0\x9f\x98", "\xe6\x97", "\xc3", "abcdefgh\xf4\x8f",
                                         "abcdefghijklmno" };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        size_t n = strlen(tails[i]);
        unsigned char *p = m + pg - n;
        memcpy(p, tails[i], n);
        size_t want = i == 4 ? n : i == 3 ? 8 : 0;
        assert_int_equal(sc_utf8_valid_prefix((const char *)p, n), want);
        if (want < n) {
            assert_int_equal(sc_utf8_seq(p + want, n - want), 0);
        }
    }
    munmap(m, (size_t)pg * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_short_sequence),
        cmocka_unit_test(test_known),
        cmocka_unit_test(test_prefix_every_offset),
        cmocka_unit_test(test_guard_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
