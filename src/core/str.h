// SPDX-License-Identifier: Apache-2.0
// String views: a pointer and a length into memory someone else owns. A view borrows; it is valid
// only as long as the memory it points into. Views are not NUL-terminated.
#ifndef SC_CORE_STR_H
#define SC_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sc_str {
    const char *p;
    size_t len;
};

#define SC_STR(lit) ((struct sc_str){ (lit), sizeof(lit) - 1 })
#define SC_STR_NULL ((struct sc_str){ NULL, 0 })
/* For printf: printf("%.*s", SC_STR_FMT(s)). */
#define SC_STR_FMT(s) (int)(s).len, (s).p

static inline struct sc_str sc_str_c(const char *s)
{
    return (struct sc_str){ s, s ? strlen(s) : 0 };
}

static inline struct sc_str sc_str_n(const char *p, size_t len)
{
    return (struct sc_str){ p, len };
}

static inline bool sc_str_eq(struct sc_str a, struct sc_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Compares ASCII case-insensitively (header names, tokens). */
bool sc_str_caseeq(struct sc_str a, struct sc_str b);

/* Returns true when <s> starts with <prefix>. */
static inline bool sc_str_startswith(struct sc_str s, struct sc_str prefix)
{
    return s.len >= prefix.len && memcmp(s.p, prefix.p, prefix.len) == 0;
}

/* Returns <s> without leading and trailing spaces and tabs (OWS). */
struct sc_str sc_str_trim(struct sc_str s);

/* Splits <*s> at the first <sep>: returns the part before it and advances <*s> past it. When there
 * is no <sep>, returns all of <*s> and leaves it empty. */
struct sc_str sc_str_split(struct sc_str *s, char sep);

/* Parses <s> as an unsigned decimal integer with no sign, spaces or leading '+'. Returns 0 and sets
 * <*out>, or -EINVAL when empty, not all digits, or above <max>. */
int sc_str_to_u64(struct sc_str s, uint64_t max, uint64_t *out);

#endif
