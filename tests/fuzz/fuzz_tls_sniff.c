// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for first-bytes protocol sniffing (PERMISSIVE mode). Invariants: the answer
// for the whole input is the answer for its first SC_TLS_SNIFF_MAX bytes; MORE is only ever given
// for fewer than SC_TLS_SNIFF_MAX bytes; every prefix answers MORE until the first prefix that
// decides, and every longer prefix gives that same decision; TLS means a handshake record with a
// ClientHello. Any violation aborts.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "net/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tls_sniff: invariant failed: %s (%s:%d)\n", #cond, __FILE__,     \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum sc_tls_sniff whole = sc_tls_sniff(data, size);
    if (size >= SC_TLS_SNIFF_MAX) {
        CHECK(whole != SC_TLS_SNIFF_MORE);
        CHECK(whole == sc_tls_sniff(data, SC_TLS_SNIFF_MAX));
    }
    if (whole == SC_TLS_SNIFF_TLS) {
        CHECK(size >= SC_TLS_SNIFF_MAX && data[0] == 0x16 && data[1] == 0x03 && data[5] == 0x01);
    }
    /* Each prefix in its own exact-size block, so a read past <n> is caught under ASan. */
    enum sc_tls_sniff decided = SC_TLS_SNIFF_MORE;
    size_t lim = size < SC_TLS_SNIFF_MAX + 2 ? size : SC_TLS_SNIFF_MAX + 2;
    for (size_t n = 0; n <= lim; n++) {
        uint8_t *p = sc_malloc(n ? n : 1);
        memcpy(p, data, n);
        enum sc_tls_sniff r = sc_tls_sniff(p, n);
        sc_free(p);
        if (decided == SC_TLS_SNIFF_MORE) {
            decided = r;
        } else {
            CHECK(r == decided);
        }
        if (r == SC_TLS_SNIFF_MORE) {
            CHECK(n < SC_TLS_SNIFF_MAX);
        }
    }
    CHECK(decided == whole);
    return 0;
}
