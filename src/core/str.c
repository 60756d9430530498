// SPDX-License-Identifier: Apache-2.0
// String view helpers; nothing here allocates.
#include "core/str.h"

#include <errno.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

bool sc_str_caseeq(struct sc_str a, struct sc_str b)
{
    if (a.len != b.len) {
        return false;
    }
    for (size_t i = 0; i < a.len; i++) {
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i])) {
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
