// SPDX-License-Identifier: Apache-2.0
// Unit tests for per-thread buffers: one buffer per slot and thread, allocated on first use,
// writable over its whole size, and freed when its thread exits (the ASan run checks that no
// thread's buffers leak).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdalign.h>
#include <string.h>

#include "core/tlbuf.h"

static _Thread_local void *big, *small;
static _Thread_local int exited;

struct seen {
    void *big, *small;
    void *big_again;
};

/* Uses both buffers from a thread: what it saw goes back to the test through <arg>. */
static void *use(void *arg)
{
    struct seen *s = arg;
    s->big = sc_tlbuf_get(&big, 65536);
    s->small = sc_tlbuf_get(&small, 100);
    memset(s->big, 0xab, 65536);
    memset(s->small, 0xcd, 100);
    s->big_again = sc_tlbuf_get(&big, 65536);
    return NULL;
}

static void test_one_buffer_per_slot_and_thread(void **state)
{
    (void)state;
    assert_null(big);
    struct seen mine;
    use(&mine);
    assert_non_null(mine.big);
    assert_ptr_equal(mine.big, mine.big_again);
    assert_ptr_not_equal(mine.big, mine.small);
    assert_ptr_equal(big, mine.big); /* the slot holds it */
    assert_int_equal((uintptr_t)mine.big % alignof(max_align_t), 0);

    struct seen theirs[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, use, &theirs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_non_null(theirs[i].big);
        assert_ptr_equal(theirs[i].big, theirs[i].big_again);
    }
    /* Each running thread had its own (the joined ones' were freed at their exit). */
    for (int i = 0; i < 4; i++) {
        assert_ptr_not_equal(theirs[i].big, mine.big);
        assert_ptr_not_equal(theirs[i].small, mine.small);
    }
    /* This thread's buffers kept their contents while the others came and went. */
    const unsigned char *b = mine.big;
    assert_int_equal(b[0], 0xab);
    assert_int_equal(b[65535], 0xab);
}

/* A thread that never asks for a buffer has none (the slot stays NULL). */
static void *idle(void *arg)
{
    (void)arg;
    exited = big == NULL && small == NULL;
    return (void *)(intptr_t)exited;
}

static void test_unused_slots_stay_empty(void **state)
{
    (void)state;
    pthread_t t;
    void *r = NULL;
    assert_int_equal(pthread_create(&t, NULL, idle, NULL), 0);
    assert_int_equal(pthread_join(t, &r), 0);
    assert_int_equal((intptr_t)r, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_buffer_per_slot_and_thread),
        cmocka_unit_test(test_unused_slots_stay_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
