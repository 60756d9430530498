// SPDX-License-Identifier: Apache-2.0
// The escape tables and the bounded escaper (json.h has the spellings). The bounded escaper
// hands whole valid UTF-8 runs to the unbounded one while the room allows six bytes out per byte
// in, and goes one character at a time only near the capacity, so its output is the unbounded
// writer's output cut at a character boundary.
#include "core/json.h"

#include "core/utf8.h"

// clang-format off
#define SC_JSON_CTL_LOWER                                                                          \
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 't', 'n', 'u', 'u', 'r', 'u', 'u',                \
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u'
#define SC_JSON_CTL_JANSSON                                                                        \
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',                \
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u'
const unsigned char sc_json_esc[2][256] = {
    [SC_JSON_COMPACT] = { SC_JSON_CTL_LOWER, ['"'] = '"', ['\\'] = '\\', [0x7f] = 'u' },
    [SC_JSON_JANSSON] = { SC_JSON_CTL_JANSSON, ['"'] = '"', ['\\'] = '\\' },
};
// clang-format on

/* Escapes the one character at <s> (an ASCII byte or the valid sequence of <l> bytes) into <tmp>
 * (room for 6 bytes); returns its length. */
static size_t one_char(char *tmp, const char *s, size_t l)
{
    return sc_json_escape_to(tmp, s, l, SC_JSON_COMPACT);
}

bool sc_json_escape(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = *len, i = 0;
    while (i < n) {
        size_t seg = sc_utf8_valid_prefix(s + i, n - i);
        size_t seg_end = i + seg;
        while (i < seg_end) {
            size_t room = cap - o, left = seg_end - i;
            if (room / 6 >= left) {
                o += sc_json_escape_to(out + o, s + i, left, SC_JSON_COMPACT);
                i = seg_end;
                break;
            }
            size_t m = room / 6;
            while (m > 0 && (p[i + m] & 0xc0) == 0x80) {
                m--; /* never cut a sequence: its lead byte starts the next piece */
            }
            if (m > 0) {
                o += sc_json_escape_to(out + o, s + i, m, SC_JSON_COMPACT);
                i += m;
                continue;
            }
            size_t l = p[i] < 0x80 ? 1 : sc_utf8_seq(p + i, seg_end - i);
            char tmp[8];
            size_t k = one_char(tmp, s + i, l);
            if (k > room) {
                *len = o;
                return false;
            }
            memcpy(out + o, tmp, k);
            o += k;
            i += l;
        }
        if (i < n) {
            /* a byte that starts no valid sequence */
            if (cap - o < 3) {
                *len = o;
                return false;
            }
            memcpy(out + o, SC_UTF8_REPLACEMENT, 3);
            o += 3;
            i++;
        }
    }
    *len = o;
    return true;
}
