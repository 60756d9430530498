// SPDX-License-Identifier: Apache-2.0
// Per-thread scratch buffers, allocated on a thread's first use and freed when the thread exits.
// A thread_local array would sit in the static TLS block that the loader and pthread_create
// zero for every thread of every role, so each one costs its size in resident memory per thread
// whether or not the thread ever uses it (a 64 KiB normalisation buffer in the logs role's
// threads). Here each thread pays only for the buffers it touches; the buffer's pointer lives in
// a thread_local slot of the caller's, so the steady-state cost is one load and a branch.
//
//     static _Thread_local void *buf;
//     char *p = sc_tlbuf_get(&buf, 65536);
#ifndef SC_CORE_TLBUF_H
#define SC_CORE_TLBUF_H

#include <stddef.h>

/* Allocates this thread's buffer of <size> bytes into the thread_local <*slot> (NULL) and returns
 * it; it is freed, and <*slot> reset to NULL, when the thread exits (the main thread's at process
 * exit). Out of memory aborts. Callers use sc_tlbuf_get. */
void *sc_tlbuf_new(void **slot, size_t size);

/* Returns this thread's buffer in <*slot> (a thread_local pointer, NULL at first), allocating
 * <size> bytes on first use. The same slot must always be asked for the same size. */
static inline void *sc_tlbuf_get(void **slot, size_t size)
{
    void *p = *slot;
    return __builtin_expect(p != NULL, 1) ? p : sc_tlbuf_new(slot, size);
}

#endif
