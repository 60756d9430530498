// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the gRPC stream scanners (proxy_grpc.c), which read bytes an upstream or a
// client sent: the message counter over length-prefixed messages and the grpc-status matcher over
// a chunked body's framing. Invariants: they read nothing past the bytes given (ASan); feeding the
// input whole or cut at any point gives the same state (they keep no pointer into the input and
// hold only fixed-size state); a status found is in 0..16; messages counted never exceed the
// bytes fed.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_grpc: invariant failed: %s (%s:%d)\n", #cond, __FILE__,    \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t cut = data[0] % size;
    data++;
    size--;
    cut = cut > size ? size : cut;
    /* An exact-size copy: ASan sees any read past the end. */
    char *p = malloc(size ? size : 1);
    memcpy(p, data, size);

    struct proxy_grpc_frames whole = { 0 }, split = { 0 };
    proxy_grpc_frames_feed(&whole, p, size);
    proxy_grpc_frames_feed(&split, p, cut);
    proxy_grpc_frames_feed(&split, p + cut, size - cut);
    CHECK(whole.msgs == split.msgs && whole.skip == split.skip && whole.hpos == split.hpos &&
          whole.len == split.len);
    CHECK(whole.msgs <= size);
    CHECK(whole.hpos < 5);

    struct proxy_grpc_tscan tw = { 0 }, ts = { 0 };
    proxy_grpc_tscan_feed(&tw, sc_str_n(p, size));
    proxy_grpc_tscan_feed(&ts, sc_str_n(p, cut));
    proxy_grpc_tscan_feed(&ts, sc_str_n(p + cut, size - cut));
    CHECK(tw.code == ts.code && tw.pos == ts.pos && tw.val == ts.val && tw.ndig == ts.ndig);
    CHECK(tw.code <= 17);
    CHECK(tw.pos <= 13);
    free(p);
    return 0;
}
