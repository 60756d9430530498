// SPDX-License-Identifier: Apache-2.0
// Capped byte buffers. A buffer owns its memory and never grows past its cap: an append that would
// exceed it fails with SC_ETOOBIG and leaves the buffer unchanged, so whatever a peer controls
// stays bounded. Contents are not NUL-terminated unless sc_buf_cstr() is called.
#ifndef SC_CORE_BUF_H
#define SC_CORE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

struct sc_buf {
    char *p;
    size_t len;     /* bytes in use, from p */
    size_t cap;     /* bytes allocated */
    size_t max;     /* the cap: len never exceeds it */
    bool sensitive; /* set after init for secrets: memory is zeroed when it is freed or grown */
};

/* Prepares an empty buffer that may hold up to <max> bytes; allocates nothing yet (and clears
 * <sensitive>). */
void sc_buf_init(struct sc_buf *b, size_t max);

/* Frees the buffer's memory; the buffer is empty and reusable afterwards. NULL-safe. */
void sc_buf_cleanup(struct sc_buf *b);

/* Ensures room for <n> more bytes. Returns 0, or SC_ETOOBIG when len + n would pass the cap. */
int sc_buf_reserve(struct sc_buf *b, size_t n);

/* As sc_buf_reserve, but a block it must allocate holds exactly len + <n> bytes instead of the
 * next doubling: for a buffer whose size is known ahead (later growth doubles from there). */
int sc_buf_reserve_exact(struct sc_buf *b, size_t n);

/* Appends <n> bytes. Returns 0 or SC_ETOOBIG (nothing appended). */
int sc_buf_append(struct sc_buf *b, const void *p, size_t n);

/* sc_buf_reserve with the common case inline: a buffer that has the room already costs a
 * compare, not a call (for appends of many small pieces in a row). */
static inline int sc_buf_room(struct sc_buf *b, size_t n)
{
    if (n <= b->cap - b->len && n <= b->max - b->len) {
        return 0;
    }
    return sc_buf_reserve(b, n);
}

static inline int sc_buf_append_str(struct sc_buf *b, struct sc_str s)
{
    return sc_buf_append(b, s.p, s.len);
}

static inline int sc_buf_append_cstr(struct sc_buf *b, const char *s)
{
    return sc_buf_append(b, s, strlen(s));
}

/* Appends formatted text. Returns 0 or SC_ETOOBIG (nothing appended). */
int sc_buf_appendf(struct sc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sc_buf_vappendf(struct sc_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Drops the first <n> bytes (n <= len), moving the rest to the front. */
void sc_buf_consume(struct sc_buf *b, size_t n);

/* Empties the buffer, keeping its memory. */
static inline void sc_buf_reset(struct sc_buf *b)
{
    b->len = 0;
}

/* Returns the contents NUL-terminated (the NUL is not counted in len). The terminator may take the
 * buffer one byte past its cap. */
const char *sc_buf_cstr(struct sc_buf *b);

static inline struct sc_str sc_buf_str(const struct sc_buf *b)
{
    return (struct sc_str){ b->p, b->len };
}

#endif
