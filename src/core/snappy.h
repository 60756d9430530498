// SPDX-License-Identifier: Apache-2.0
// A snappy block encoder (the raw block format of Google's format_description.txt: the length as
// a varint, then literals and copies; not the framed stream format), for the bodies that must be
// snappy-compressed: Loki's protobuf push and Prometheus remote_write. Any conforming decoder
// reads what it writes. It is an LZ77 matcher tuned for log batches: one hash table of 4-byte
// sequences for the whole input, copies at most 64 KiB back (1- and 2-byte offsets only), the
// last copy's offset tried first after a match, and growing steps over input that finds no match.
#ifndef SC_CORE_SNAPPY_H
#define SC_CORE_SNAPPY_H

#include <stddef.h>

/* The largest block sc_snappy_compress writes for <n> bytes of input. */
static inline size_t sc_snappy_bound(size_t n)
{
    return 32 + n + n / 6;
}

/* Compresses <in>[0..n) into one snappy block at <out>, which has room for sc_snappy_bound(n)
 * bytes; sets <*outlen> to its size. Returns 0, or -EFBIG when <n> is over the format's limit
 * (2^32 - 1 bytes). Uses a 64 KiB table per thread, allocated on its first call. */
int sc_snappy_compress(const char *in, size_t n, char *out, size_t *outlen);

#endif
