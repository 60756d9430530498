// SPDX-License-Identifier: Apache-2.0
// String view helpers; nothing here allocates.
#include "core/str.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* The 8 bytes of <w> with ASCII 'A'..'Z' lower-cased and every other byte unchanged: per byte,
 * its low 7 bits plus a bias set the byte's high bit when it is >= 'A' (resp. > 'Z'); no sum
 * carries into the next byte. */
static inline uint64_t fold8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t b = w & ~high;
    uint64_t ge_a = b + (0x80 - 'A') * ones;
    uint64_t gt_z = b + (0x80 - 'Z' - 1) * ones;
    uint64_t upper = ge_a & ~gt_z & ~w & high;
    return w | (upper >> 2);
}

static inline uint64_t load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* sc_str_caseeq for n >= 8: eight bytes a step, the last step overlapping the one before. Kept
 * out of line so callers that inline sc_str_caseeq stay as small as with the byte loop. */
__attribute__((noinline)) static bool caseeq8(const char *a, const char *b, size_t n)
{
    for (size_t i = 0;; i += 8) {
        if (i + 8 > n) {
            i = n - 8;
        }
        uint64_t x = load8(a + i), y = load8(b + i);
        if (x != y && fold8(x) != fold8(y)) {
            return false;
        }
        if (i + 8 == n) {
            return true;
        }
    }
}

bool sc_str_caseeq(struct sc_str a, struct sc_str b)
{
    if (a.len != b.len) {
        return false;
    }
    if (a.len >= 8) {
        return caseeq8(a.p, b.p, a.len); /* header names are compared on every request */
    }
    for (size_t i = 0; i < a.len; i++) {
        if (a.p[i] != b.p[i] && lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i])) {
            return false;
        }
    }
    return true;
}

struct sc_str sc_str_trim(struct sc_str s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

struct sc_str sc_str_split(struct sc_str *s, char sep)
{
    const char *hit = s->len ? memchr(s->p, sep, s->len) : NULL;
    struct sc_str head = *s;
    if (!hit) {
        s->p += s->len;
        s->len = 0;
        return head;
    }
    head.len = (size_t)(hit - s->p);
    s->len -= head.len + 1;
    s->p = hit + 1;
    return head;
}

int sc_str_to_u64(struct sc_str s, uint64_t max, uint64_t *out)
{
    if (s.len == 0) {
        return -EINVAL;
    }
    uint64_t v = 0;
    if (s.len <= 19) {
        /* Up to 19 digits cannot overflow 64 bits: one check of the limit at the end. */
        for (size_t i = 0; i < s.len; i++) {
            unsigned d = (unsigned)(unsigned char)s.p[i] - '0';
            if (d > 9) {
                return -EINVAL;
            }
            v = v * 10 + d;
        }
        if (v > max) {
            return -EINVAL;
        }
        *out = v;
        return 0;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned)(unsigned char)s.p[i] - '0';
        if (d > 9 || v > (max - d) / 10) {
            return -EINVAL;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
