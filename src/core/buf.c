// SPDX-License-Identifier: Apache-2.0
// Capped buffers: growth doubles up to the cap, so appends are amortised O(1) and bounded.
#include "core/buf.h"

#include <stdio.h>

#include "core/alloc.h"
#include "core/error.h"

void sc_buf_init(struct sc_buf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->sensitive = false;
}

void sc_buf_cleanup(struct sc_buf *b)
{
    if (!b) {
        return;
    }
    if (b->sensitive) {
        sc_free_secret(b->p, b->cap);
    } else {
        sc_free(b->p);
    }
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Moves the contents into a block of exactly <cap> bytes (cap >= len). */
static void resize(struct sc_buf *b, size_t cap)
{
    if (b->sensitive && b->p) {
        /* realloc would free the old block with the secret still in it. */
        char *p = sc_malloc(cap);
        memcpy(p, b->p, b->len);
        sc_free_secret(b->p, b->cap);
        b->p = p;
    } else {
        b->p = sc_realloc(b->p, cap);
    }
    b->cap = cap;
}

static void grow(struct sc_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > b->max + 1) {
        cap = b->max + 1; /* +1 leaves room for sc_buf_cstr's terminator */
    }
    resize(b, cap < need ? need : cap);
}

int sc_buf_reserve(struct sc_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n) {
        return SC_ETOOBIG;
    }
    if (b->len + n > b->cap) {
        grow(b, b->len + n);
    }
    return 0;
}

int sc_buf_reserve_exact(struct sc_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n) {
        return SC_ETOOBIG;
    }
    if (b->len + n > b->cap) {
        resize(b, b->len + n);
    }
    return 0;
}

int sc_buf_append(struct sc_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int rc = sc_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int sc_buf_vappendf(struct sc_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return SC_EINVAL;
    }
    if ((size_t)n >= room) {
        /* vsnprintf needs room for its NUL, which sc_buf_reserve(n + 1) may refuse at the cap. */
        int rc = sc_buf_reserve(b, (size_t)n);
        if (rc < 0) {
            return rc;
        }
        if (b->cap - b->len < (size_t)n + 1) {
            grow(b, b->len + (size_t)n + 1);
        }
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    }
    b->len += (size_t)n;
    return 0;
}

int sc_buf_appendf(struct sc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sc_buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void sc_buf_consume(struct sc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

const char *sc_buf_cstr(struct sc_buf *b)
{
    if (b->len + 1 > b->cap) {
        grow(b, b->len + 1);
    }
    b->p[b->len] = '\0';
    return b->p;
}
