// SPDX-License-Identifier: Apache-2.0
// The escape tables and the bounded escaper (json.h has the spellings). The bounded escaper runs
// the same word test and escape writer as the unbounded one, plus a check for bytes from 0x80 up
// (validated, or replaced by U+FFFD), and checks the room at each step, so its output is the
// unbounded writer's output of the repaired text, cut at a character boundary.
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

bool sc_json_escape(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    const unsigned char *t = sc_json_esc[SC_JSON_COMPACT];
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t o = *len;
    while (p < end) {
        /* Eight plain ASCII bytes at a time while they fit. */
        while (end - p >= 8 && cap - o >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if ((v & 0x8080808080808080ull) | sc_json_word_special(v, SC_JSON_COMPACT)) {
                break;
            }
            memcpy(out + o, p, 8);
            o += 8;
            p += 8;
        }
        if (p == end) {
            break;
        }
        unsigned char c = *p;
        if (c < 0x80) {
            if (!t[c]) {
                if (o == cap) {
                    goto full; /* a run of plain bytes fills the room to its last byte */
                }
                out[o++] = (char)c;
            } else {
                char esc[8];
                size_t k = sc_json_put_escape(esc, c, SC_JSON_COMPACT);
                if (cap - o < k) {
                    goto full;
                }
                memcpy(out + o, esc, k);
                o += k;
            }
            p++;
            continue;
        }
        size_t l = sc_utf8_seq(p, (size_t)(end - p));
        const char *src = l ? (const char *)p : SC_UTF8_REPLACEMENT;
        size_t k = l ? l : 3;
        if (cap - o < k) {
            goto full;
        }
        memcpy(out + o, src, k);
        o += k;
        p += l ? l : 1;
    }
    *len = o;
    return true;
full:
    *len = o;
    return false;
}
