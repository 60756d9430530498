// SPDX-License-Identifier: Apache-2.0
// Unit tests for the secrets role's memory hygiene: once secrets_mem_protect() ran, every block
// jansson frees (parsed Vault responses, the values built from them, its own parse buffers) is
// zeroed first, which an observer hook in core/alloc sees before the block goes back to malloc.
// Blocks jansson allocated before the switch must still free cleanly (ASan checks that).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "roles/secrets/secrets_mem.h"

static size_t zeroed, dirty, largest;

static void observe(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i]) {
            dirty++;
            return;
        }
    }
    zeroed++;
    largest = n > largest ? n : largest;
}

static void reset(void)
{
    zeroed = dirty = largest = 0;
    sc_alloc_zeroed_observer = observe;
}

#define SECRET "hunter2-0123456789abcdef0123456789abcdef0123456789abcdef"

static const char vault_resp[] =
    "{\"request_id\":\"r\",\"lease_id\":\"database/creds/app/l1\",\"renewable\":true,"
    "\"lease_duration\":3600,\"data\":{\"username\":\"v-app-1\",\"password\":\"" SECRET "\"}}";

static void parse_and_drop(void)
{
    json_error_t je;
    json_t *j = json_loads(vault_resp, 0, &je);
    assert_non_null(j);
    json_t *data = json_object_get(j, "data");
    json_t *sec = json_pack("{s:O,s:s}", "Data", data, "LeaseID", "database/creds/app/l1");
    assert_non_null(sec);
    char *text = json_dumps(sec, JSON_COMPACT);
    assert_non_null(strstr(text, SECRET));
    sc_free(text);
    json_decref(sec);
    json_decref(j);
}

/* The order matters: jansson's allocator is process-wide and the switch is one way. */
static void test_jansson_zeroes_after_protect(void **state)
{
    (void)state;
    /* Before: jansson frees with plain free and nothing is zeroed. */
    reset();
    parse_and_drop();
    assert_int_equal(zeroed, 0);

    /* A value allocated before the switch and freed after it. */
    json_t *early = json_string(SECRET);
    json_t *early_arr = json_pack("[O]", early);
    char *early_text = json_dumps(early_arr, JSON_COMPACT);

    secrets_mem_protect();
    secrets_mem_protect(); /* idempotent */
    reset();
    parse_and_drop();
    size_t after_parse = zeroed;
    assert_int_equal(dirty, 0);
    /* The secret string itself (and the parser's buffers that held it) went through the
     * zeroing free. */
    assert_true(after_parse >= 4);
    assert_true(largest >= sizeof(SECRET));

    json_decref(early);
    json_decref(early_arr); /* frees the early string and array through the zeroing free */
    sc_free(early_text);    /* callers may still free jansson's strings with sc_free */
    sc_alloc_zeroed_observer = NULL;
    assert_int_equal(dirty, 0);
    assert_true(zeroed > after_parse);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jansson_zeroes_after_protect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
