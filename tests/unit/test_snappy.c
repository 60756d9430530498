// SPDX-License-Identifier: Apache-2.0
// Unit tests for the snappy encoder: every block goes back through libsnappy's decompressor and an
// element walk (tests/fuzz/snappy_check.h) on edge sizes, runs, incompressible input, repeats
// beyond the 64 KiB window and Loki-like log batches, where it must also compress at least as
// well as libsnappy.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fuzz/snappy_check.h"

static uint32_t rnd_state = 23;

static uint32_t rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return rnd_state >> 8;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)rnd();
    }
}

/* Every size up to 300 and around the literal-length boundaries (60, 256, 65536 bytes), with
 * random bytes (one literal) and with a short period (copies). */
static void test_sizes(void **state)
{
    (void)state;
    static const size_t edges[] = { 1000, 4095, 65535, 65536, 65537, 65600, 200000 };
    uint8_t *buf = malloc(200000);
    for (size_t n = 0; n < 300 + sizeof(edges) / sizeof(edges[0]); n++) {
        size_t len = n < 300 ? n : edges[n - 300];
        fill_random(buf, len);
        assert_true(snappy_check(buf, len, NULL));
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)("abcdefg"[i % 7]);
        }
        assert_true(snappy_check(buf, len, NULL));
    }
    free(buf);
}

/* A run of one byte (copies of 64 with offset 1 after a one-byte literal), random input (one
 * literal, with a 3-byte length), and random blocks repeated beyond the window: no copy may reach
 * them. Random input costs at most a few bytes more than itself. */
static void test_runs_and_noise(void **state)
{
    (void)state;
    size_t n = 1 << 20, len = 0;
    uint8_t *buf = calloc(1, n);
    assert_true(snappy_check(buf, n, &len));
    assert_true(len < n / 20);
    fill_random(buf, n);
    assert_true(snappy_check(buf, n, &len));
    assert_true(len <= n + 16);
    memcpy(buf + 70 * 1024, buf, 1000);
    memcpy(buf + 300 * 1024, buf + 299 * 1024, 1000);
    /* Blocks exactly 64 KiB and 128 KiB apart, where the table's 16-bit positions point back at
     * the current one (distance 0), and 64 KiB + 100 bytes apart, where they point 100 back. */
    memcpy(buf + 512 * 1024 + 65536, buf + 512 * 1024, 1000);
    memcpy(buf + 512 * 1024 + 131072, buf + 512 * 1024, 1000);
    memcpy(buf + 768 * 1024 + 65636, buf + 768 * 1024, 1000);
    assert_true(snappy_check(buf, n, NULL));
    free(buf);
}

/* Log lines as a Loki push holds them: JSON records with recurring keys and values. The block
 * must be within 3% of libsnappy's for the same input (a little bigger below 64 KiB, smaller
 * above, where libsnappy starts each 64 KiB afresh). */
static void test_log_lines(void **state)
{
    (void)state;
    static const char *const words[] = {
        "alpha",         "beta", "gamma",   "req",     "GET",
        "/api/v1/items", "ok",   "user=42", "latency", "tab\\there"
    };
    static const char *const levels[] = { "info", "warn", "error" };
    size_t cap = 2 << 20, n = 0;
    char *buf = malloc(cap);
    for (int i = 0; n + 400 < cap; i++) {
        n += (size_t)snprintf(buf + n, cap - n,
                              "\x12\x0a{\"ts\":\"2026-12-07T02:00:00.%06dZ\",\"level\":\"%s\","
                              "\"msg\":\"",
                              i, levels[rnd() % 3]);
        for (unsigned w = 0, k = 4 + rnd() % 10; w < k; w++) {
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", w ? " " : "", words[rnd() % 10]);
        }
        n += (size_t)snprintf(buf + n, cap - n, "\",\"n\":%d,\"ok\":%s}", i,
                              i % 3 ? "false" : "true");
    }
    for (size_t len = 1000; len <= n; len *= 4) {
        size_t ours = 0, ref = snappy_max_compressed_length(len);
        char *out = malloc(ref);
        assert_int_equal(snappy_compress(buf, len, out, &ref), SNAPPY_OK);
        free(out);
        assert_true(snappy_check((const uint8_t *)buf, len, &ours));
        printf("log lines: %zu bytes -> %zu (libsnappy %zu)\n", len, ours, ref);
        assert_true(ours <= ref + ref / 32);
    }
    free(buf);
}

static void test_too_big(void **state)
{
    (void)state;
    char in[1] = { 0 }, out[64];
    size_t len = 0;
    if (sizeof(size_t) > 4) {
        assert_int_equal(sc_snappy_compress(in, (size_t)UINT32_MAX + 1, out, &len), -EFBIG);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_runs_and_noise),
        cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_too_big),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
