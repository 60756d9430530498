// SPDX-License-Identifier: Apache-2.0
// Allocation wrappers: the only place that calls malloc and free. Out of memory aborts the process
// (the orchestrator restarts us); sizes a peer controls go through capped buffers (buf.h) instead.
#ifndef SC_CORE_ALLOC_H
#define SC_CORE_ALLOC_H

#include <stddef.h>

/* Returns new memory of <n> bytes (at least 1); never returns NULL. */
void *sc_malloc(size_t n);

/* Returns new zeroed memory for <n> elements of <size> bytes; aborts on overflow or OOM. */
void *sc_calloc(size_t n, size_t size);

/* Resizes <p> (may be NULL) to <n> bytes; never returns NULL. */
void *sc_realloc(void *p, size_t n);

/* Resizes <p> to hold <n> elements of <size> bytes; aborts on overflow. */
void *sc_reallocarray(void *p, size_t n, size_t size);

/* Frees <p>; NULL-safe. Also frees memory returned by libraries that use the C allocator. */
void sc_free(void *p);

/* Returns a new copy of the NUL-terminated <s>; NULL when <s> is NULL. */
char *sc_strdup(const char *s);

/* Returns a new NUL-terminated copy of the first <n> bytes of <p>. */
char *sc_strndup(const char *p, size_t n);

/* Returns a new string formatted like printf. */
char *sc_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Zeroes <n> bytes at <p> in a way the compiler may not elide (secrets), then frees it. */
void sc_free_secret(void *p, size_t n);

/* Frees <p> (from sc_malloc or any library that uses the C allocator; NULL-safe) after zeroing
 * the whole block as the allocator sized it (malloc_usable_size), so it needs no size and works
 * for blocks allocated before the caller chose it: a free function for libraries that only pass
 * a pointer back (jansson's json_set_alloc_funcs). */
void sc_free_zeroed(void *p);

/* Unit tests only (NULL otherwise): called by sc_free_secret and sc_free_zeroed with each block
 * after it was zeroed and before it is freed, so a test can check that nothing is left in it. */
extern void (*sc_alloc_zeroed_observer)(const void *p, size_t n);

#define SC_NEW(type) ((type *)sc_calloc(1, sizeof(type)))
#define SC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define sc_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
