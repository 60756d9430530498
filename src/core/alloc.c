// SPDX-License-Identifier: Apache-2.0
// The one wrapper file allowed to call the C allocator directly (see scripts/lint.sh).
#include "core/alloc.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void oom(size_t n)
{
    char msg[96];
    int len = snprintf(msg, sizeof(msg), "sidecar: out of memory allocating %zu bytes\n", n);
    if (len > 0) {
        ssize_t w = write(STDERR_FILENO, msg, (size_t)len);
        (void)w;
    }
    abort();
}

void *sc_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        oom(n);
    }
    return p;
}

void *sc_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        oom(n * size);
    }
    return p;
}

void *sc_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        oom(n);
    }
    return q;
}

void *sc_reallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        oom(SIZE_MAX);
    }
    return sc_realloc(p, n * size);
}

void sc_free(void *p)
{
    free(p);
}

char *sc_strdup(const char *s)
{
    return s ? sc_strndup(s, strlen(s)) : NULL;
}

char *sc_strndup(const char *p, size_t n)
{
    char *s = sc_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

char *sc_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return sc_strdup("");
    }
    char *s = sc_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void (*sc_alloc_zeroed_observer)(const void *p, size_t n);

void sc_free_secret(void *p, size_t n)
{
    if (p) {
        explicit_bzero(p, n);
        if (sc_alloc_zeroed_observer) {
            sc_alloc_zeroed_observer(p, n);
        }
        free(p);
    }
}

void sc_free_zeroed(void *p)
{
    if (p) {
        sc_free_secret(p, malloc_usable_size(p));
    }
}
