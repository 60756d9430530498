// SPDX-License-Identifier: Apache-2.0
// A snappy block encoder (the raw block format of Google's format_description.txt: the length as
// a varint, then literals and copies; not the framed stream format), for the bodies that must be
// snappy-compressed: Loki's protobuf push and Prometheus remote_write. Any conforming decoder
// reads what it writes. It is a greedy LZ77 matcher tuned for log batches: one hash table of
// 8-byte sequences (4-byte below 32 KiB of input) for the whole input (not cleared every 64 KiB),
// each match extended forwards eight bytes at a time and backwards to the pending literal, copies
// at most 64 KiB back (1- and 2-byte offsets only), and a step that grows over input that finds no
// match. Hashing eight bytes rather than four finds fewer, longer matches in batches of log lines
// (keys and values recur, but four bytes recur everywhere): fewer copies to write, and a smaller
// block than libsnappy's; a small input has too few lines for that, and keeps its short matches.
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
 * (2^32 - 1 bytes). Uses a 32 KiB table per thread, allocated on its first call. */
int sc_snappy_compress(const char *in, size_t n, char *out, size_t *outlen);

#endif
