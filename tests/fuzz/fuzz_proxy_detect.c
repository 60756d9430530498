// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the proxy's protocol detection (proxy_detect.c) on the first bytes of an
// intercepted connection. Invariants: it reads nothing past the bytes given (ASan); an answer other
// than MORE never changes when more bytes arrive (the data path acts on the first answer, so a
// later byte must not make it wrong); a ClientHello's server name is printable lowercase ASCII and
// its ALPN names are printable.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_detect: invariant failed: %s (%s:%d)\n", #cond, __FILE__,  \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Detects on an exact-size heap copy, so ASan sees any read past <n>. */
static enum proxy_proto detect_copy(const uint8_t *p, size_t n, struct proxy_hello *h)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    enum proxy_proto r = proxy_detect(c, n, h);
    free(c);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3 * PROXY_DETECT_MAX_HELLO) {
        return 0;
    }
    struct proxy_hello full;
    enum proxy_proto all = detect_copy(data, size, &full);
    if (all == PROXY_PROTO_TLS) {
        size_t n = strlen(full.sni);
        CHECK(n <= PROXY_SNI_MAX);
        for (size_t i = 0; i < n; i++) {
            CHECK(full.sni[i] > 0x20 && full.sni[i] < 0x7f);
            CHECK(!(full.sni[i] >= 'A' && full.sni[i] <= 'Z'));
        }
        CHECK(full.nalpn <= PROXY_ALPN_MAX);
        for (size_t k = 0; k < full.nalpn; k++) {
            CHECK(strlen(full.alpn[k]) > 0);
        }
    }
    /* The first decided prefix answers what the whole input does. Prefixes are sampled on long
     * inputs to keep each run short. */
    size_t step = size > 2048 ? size / 512 : 1;
    for (size_t k = 0; k <= size; k += step) {
        struct proxy_hello h;
        enum proxy_proto r = detect_copy(data, k, &h);
        if (r != PROXY_PROTO_MORE) {
            CHECK(r == all);
            if (r == PROXY_PROTO_TLS) {
                CHECK(strcmp(h.sni, full.sni) == 0);
                CHECK(h.nalpn == full.nalpn);
            }
            break;
        }
    }
    return 0;
}
