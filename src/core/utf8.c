// SPDX-License-Identifier: Apache-2.0
// UTF-8 validation (see utf8.h for what valid means). The second byte of a sequence carries the
// range checks that rule out overlong forms, surrogates and code points past U+10FFFF (as in the
// Unicode standard's table 3-7), so no code point is ever assembled; later bytes need only be
// continuation bytes. Invariant: no byte past <n>, and none past the first mismatch, is read.
#include "core/utf8.h"

#include <stdint.h>
#include <string.h>

size_t sc_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong below U+0800 */
        hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80; /* overlong below U+10000 */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (len > n || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return len;
}

size_t sc_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            if (!(v & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = sc_utf8_seq(p + i, n - i);
        if (l == 0) {
            return i;
        }
        i += l;
    }
    return n;
}
