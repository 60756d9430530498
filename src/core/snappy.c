// SPDX-License-Identifier: Apache-2.0
// The snappy block encoder (see snappy.h). Invariant: every copy it writes points 1..65535 bytes
// back into bytes already written, with a length of 4 or more split into pieces of 4..64, and
// every literal holds the input's bytes as they are, so the block decodes to exactly the input.
// Positions are 32-bit offsets from the input's start, which the format's 2^32 - 1 limit allows.
#include "core/snappy.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/tlbuf.h"

/* The hash table: 2^14 positions at most (32 KiB), one entry per four bytes of a 64 KiB window;
 * smaller inputs use a smaller table, so clearing it costs what the input does. An entry holds a
 * position's low 16 bits: the distance back to it, modulo 2^16, is a copy's offset as it is. */
#define TAB_BITS_MIN 8
#define TAB_BITS_MAX 14
/* Inputs from this size on hash and match eight bytes, smaller ones four (snappy.h). */
#define WIDE_MIN 32768
/* Input shorter than this is one literal; searches stop this far from the end, so that a 16-byte
 * load at any literal's start and the 8-byte loads of a match stay inside the input. */
#define TAIL 16

static _Thread_local void *tab_slot;

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Multiplicative hashing of a word (the golden-ratio constant): the top bits mix all its bytes. */
static inline uint32_t hash8(uint64_t v, unsigned bits)
{
    return (uint32_t)((v * 0x9E3779B97F4A7C15ull) >> (64 - bits));
}

/* The number of leading bytes that are equal in the words <x> was XORed from (x != 0). */
static inline size_t equal_bytes(uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(x) >> 3;
#else
    return (size_t)__builtin_clzll(x) >> 3;
#endif
}

/* The number of equal bytes at <a> and <b> (b < a), reading no further than <end> from <a>. */
static inline size_t match_len(const uint8_t *a, const uint8_t *b, const uint8_t *end)
{
    const uint8_t *s = a;
    while (end - a >= 8) {
        uint64_t x = load64(a) ^ load64(b);
        if (x) {
            return (size_t)(a - s) + equal_bytes(x);
        }
        a += 8;
        b += 8;
    }
    while (a < end && *a == *b) {
        a++;
        b++;
    }
    return (size_t)(a - s);
}

/* A literal of <n> >= 1 bytes: its tag holds n - 1 when below 60, else 60..63 says that 1..4
 * bytes of n - 1 (little-endian) follow. Short literals are stored as 16 bytes when the input has
 * them; the output bound leaves room for the excess. */
static inline uint8_t *put_literal(uint8_t *op, const uint8_t *p, size_t n, const uint8_t *end)
{
    size_t m = n - 1;
    if (m < 60) {
        *op++ = (uint8_t)(m << 2);
        if (n <= 16 && end - p >= 16) {
            memcpy(op, p, 16);
            return op + n;
        }
    } else {
        unsigned k = m < 0x100 ? 1 : m < 0x10000 ? 2 : m < 0x1000000 ? 3 : 4;
        *op++ = (uint8_t)((59 + k) << 2);
        for (unsigned i = 0; i < k; i++) {
            *op++ = (uint8_t)(m >> (8 * i));
        }
    }
    memcpy(op, p, n);
    return op + n;
}

/* A copy with a 2-byte offset: length 1..64 in the tag's upper six bits. Little-endian, its three
 * bytes are one 4-byte store: the byte after them is rewritten by what follows (a block is always
 * far enough below the output bound for that). */
static inline uint8_t *put_copy2(uint8_t *op, size_t off, size_t len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t w = (uint32_t)(2 | (len - 1) << 2) | (uint32_t)off << 8;
    memcpy(op, &w, 4);
#else
    op[0] = (uint8_t)(2 | (len - 1) << 2);
    op[1] = (uint8_t)off;
    op[2] = (uint8_t)(off >> 8);
#endif
    return op + 3;
}

/* A copy of <len> >= 4 bytes from <off> (1..65535) back: a 2-byte copy (length 4..11, offset below
 * 2048: three bits of length and three of offset in the tag, the offset's low byte after it)
 * when it fits, else 3-byte copies of 64 bytes while at least 4 would remain after one, then the
 * rest. */
static inline uint8_t *put_copy1(uint8_t *op, size_t off, size_t len)
{
    op[0] = (uint8_t)(1 + ((len - 4) << 2) + ((off >> 3) & 0xe0));
    op[1] = (uint8_t)off;
    return op + 2;
}

static inline uint8_t *put_copy(uint8_t *op, size_t off, size_t len)
{
    if (__builtin_expect(len <= 64, 1)) {
        return len < 12 && off < 2048 ? put_copy1(op, off, len) : put_copy2(op, off, len);
    }
    while (len >= 68) {
        op = put_copy2(op, off, 64);
        len -= 64;
    }
    if (len > 64) {
        op = put_copy2(op, off, 60);
        len -= 60;
    }
    return len < 12 && off < 2048 ? put_copy1(op, off, len) : put_copy2(op, off, len);
}

/* The matching loop over <in>[0..n) (n > TAIL) with a table of 2^<bits> entries, writing from
 * <op>; returns the end of what it wrote. <key>: the bytes of a loaded word that are hashed and
 * must match (a constant in each of the two copies the compiler makes). */
static inline __attribute__((always_inline)) uint8_t *
compress_body(const uint8_t *in, size_t n, uint8_t *op, uint16_t *tab, unsigned bits, uint64_t key)
{
    const uint8_t *end = in + n, *lit = in;
    const uint8_t *limit = end - TAIL, *ip = in + 1;
    while (ip < limit) {
        /* Look for bytes seen before, 64 KiB back at most; the step grows by one every 32 misses,
         * so input with nothing to match is passed over quickly. */
        const uint8_t *cand;
        uint64_t x;
        size_t skip = 32; /* the step is skip / 32 */
        for (;;) {
            uint64_t w = load64(ip);
            uint32_t h = hash8(w & key, bits);
            /* The entry is an earlier position (0, the input's start, if never written): the
             * distance modulo 2^16 is at most ip's position, so cand is in the input. It is 0
             * for a position a multiple of 64 KiB back, which no copy reaches (cand is ip). */
            size_t pos = (size_t)(ip - in), off = (uint16_t)(pos - tab[h]);
            tab[h] = (uint16_t)pos;
            cand = ip - off;
            x = load64(cand) ^ w;
            if ((x & key) == 0 && off != 0) {
                break;
            }
            ip += skip++ >> 5;
            if (ip >= limit) {
                goto tail;
            }
        }
        /* ip + 16 is within the input (limit). */
        size_t len;
        if (x) {
            len = equal_bytes(x);
        } else {
            x = load64(ip + 8) ^ load64(cand + 8);
            len = x ? 8 + equal_bytes(x) : 16 + match_len(ip + 16, cand + 16, end);
        }
        if (ip > lit) {
            /* The match may start earlier: found after a miss, or sharing fewer bytes than the
             * key with what precedes. */
            while (cand > in && ip[-1] == cand[-1]) {
                ip--;
                cand--;
                len++;
                if (ip == lit) {
                    break;
                }
            }
            if (ip > lit) {
                op = put_literal(op, lit, (size_t)(ip - lit), end);
            }
        }
        op = put_copy(op, (size_t)(ip - cand), len);
        ip += len;
        lit = ip;
    }
tail:
    if (lit < end) {
        op = put_literal(op, lit, (size_t)(end - lit), end);
    }
    return op;
}

int sc_snappy_compress(const char *src, size_t n, char *dst, size_t *outlen)
{
    if (n > UINT32_MAX) {
        return -EFBIG;
    }
    const uint8_t *in = (const uint8_t *)src;
    uint8_t *op = (uint8_t *)dst;
    for (size_t v = n;; v >>= 7) {
        if (v < 0x80) {
            *op++ = (uint8_t)v;
            break;
        }
        *op++ = (uint8_t)(v | 0x80);
    }
    if (n <= TAIL) {
        if (n) {
            op = put_literal(op, in, n, in + n);
        }
        *outlen = (size_t)(op - (uint8_t *)dst);
        return 0;
    }
    unsigned bits = TAB_BITS_MIN;
    while (bits < TAB_BITS_MAX && ((size_t)1 << bits) < n) {
        bits++;
    }
    uint16_t *tab = sc_tlbuf_get(&tab_slot, sizeof(uint16_t) << TAB_BITS_MAX);
    memset(tab, 0, sizeof(uint16_t) << bits);
    if (n >= WIDE_MIN) {
        op = compress_body(in, n, op, tab, bits, ~0ull);
    } else {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        op = compress_body(in, n, op, tab, bits, 0xffffffffull);
#else
        op = compress_body(in, n, op, tab, bits, 0xffffffff00000000ull);
#endif
    }
    *outlen = (size_t)(op - (uint8_t *)dst);
    return 0;
}
