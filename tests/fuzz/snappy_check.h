// SPDX-License-Identifier: Apache-2.0
// What the snappy encoder's unit test and fuzz target check of every block it writes: read back
// by libsnappy's decompressor (the reference decoder, linked by these tests only) it is the input
// byte for byte, within sc_snappy_bound; and walked element by element it keeps the encoder's own
// promises: copies 1..65535 bytes back (no 4-byte offsets), lengths 4..64, into bytes written.
#ifndef SC_TESTS_SNAPPY_CHECK_H
#define SC_TESTS_SNAPPY_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <snappy-c.h>

#include "core/snappy.h"

/* Walks the elements of the block <b>[0..n) (format_description.txt): false when one is not
 * what the encoder promises or the lengths do not add up to the varint at the start. */
static inline bool snappy_check_walk(const uint8_t *b, size_t n)
{
    size_t i = 0, want = 0, have = 0;
    for (unsigned shift = 0;; shift += 7) {
        if (i >= n || shift > 28) {
            return false;
        }
        want |= (size_t)(b[i] & 0x7f) << shift;
        if (!(b[i++] & 0x80)) {
            break;
        }
    }
    while (i < n) {
        unsigned t = b[i++];
        size_t len, off;
        switch (t & 3) {
        case 0:
            len = (t >> 2) + 1;
            if (len > 60) {
                size_t k = len - 60;
                if (n - i < k) {
                    return false;
                }
                len = 0;
                for (size_t j = 0; j < k; j++) {
                    len |= (size_t)b[i + j] << (8 * j);
                }
                len += 1;
                i += k;
            }
            if (n - i < len) {
                return false;
            }
            i += len;
            have += len;
            continue;
        case 1:
            if (i >= n) {
                return false;
            }
            len = ((t >> 2) & 7) + 4;
            off = (size_t)(t >> 5) << 8 | b[i++];
            break;
        case 2:
            if (n - i < 2) {
                return false;
            }
            len = (t >> 2) + 1;
            off = b[i] | (size_t)b[i + 1] << 8;
            i += 2;
            if (len < 4) {
                return false;
            }
            break;
        default:
            return false;
        }
        if (off == 0 || off > have) {
            return false;
        }
        have += len;
    }
    return have == want;
}

/* Compresses <in>[0..n) into a block sized exactly sc_snappy_bound(n) (so that a write past it
 * is caught under ASan) and checks it; <*out_len> gets its size when not NULL. */
static inline bool snappy_check(const uint8_t *in, size_t n, size_t *out_len)
{
    size_t cap = sc_snappy_bound(n), len = 0, dlen = 0;
    char *out = malloc(cap);
    bool ok = out && sc_snappy_compress((const char *)in, n, out, &len) == 0 && len <= cap &&
              snappy_check_walk((const uint8_t *)out, len) &&
              snappy_validate_compressed_buffer(out, len) == SNAPPY_OK &&
              snappy_uncompressed_length(out, len, &dlen) == SNAPPY_OK && dlen == n;
    char *back = ok ? malloc(n + 1) : NULL;
    ok = ok && back && snappy_uncompress(out, len, back, &dlen) == SNAPPY_OK && dlen == n &&
         (n == 0 || memcmp(back, in, n) == 0);
    if (out_len) {
        *out_len = len;
    }
    free(back);
    free(out);
    return ok;
}

#endif
