// SPDX-License-Identifier: Apache-2.0
// Per-thread scratch buffers (see tlbuf.h). Each thread keeps its buffers on a list whose
// pthread key destructor frees them at thread exit; the list head is the key's value, so a thread
// that never asks for a buffer has nothing registered.
#include "core/tlbuf.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>

#include "core/alloc.h"

struct tlbuf {
    struct tlbuf *next;
    void **slot;
    alignas(max_align_t) unsigned char data[];
};

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void on_thread_exit(void *arg)
{
    for (struct tlbuf *b = arg, *next; b; b = next) {
        next = b->next;
        *b->slot = NULL;
        sc_free(b);
    }
}

static void key_init(void)
{
    if (pthread_key_create(&key, on_thread_exit) != 0) {
        abort(); /* only when the process is out of keys: as out of memory */
    }
}

void *sc_tlbuf_new(void **slot, size_t size)
{
    pthread_once(&key_once, key_init);
    struct tlbuf *b = sc_malloc(sizeof(*b) + size);
    b->slot = slot;
    b->next = pthread_getspecific(key);
    if (pthread_setspecific(key, b) != 0) {
        abort();
    }
    *slot = b->data;
    return b->data;
}
