// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the gRPC health check's reply parser (proxy_health_grpc.c), which reads
// the body an endpoint sends back. Invariants: it reads nothing past the bytes given (ASan); a
// success means exactly one uncompressed message filling the body, with a status that is an
// int32 or -1; every strict prefix of a body it accepts is refused (a truncated reply never
// passes); the answer does not depend on where the bytes live; and the request encoder's output
// for a service name taken from the input is a well-formed message carrying that name.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_health_grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_hc_grpc: invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Parses an exact-size heap copy, so ASan sees any read past <n>. */
static int parse_copy(const uint8_t *p, size_t n, int *status)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    const char *why = NULL;
    *status = -2;
    int rc = proxy_hc_grpc_parse(c, n, status, &why);
    CHECK(rc == 0 || (rc == -1 && why && *why));
    free(c);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * PROXY_HC_GRPC_MAX_REPLY) {
        return 0;
    }
    int st = 0;
    int rc = parse_copy(data, size, &st);
    if (rc == 0) {
        CHECK(size >= 5 && data[0] == 0);
        size_t len = (size_t)data[1] << 24 | (size_t)data[2] << 16 | (size_t)data[3] << 8 | data[4];
        CHECK(len == size - 5);
        CHECK(st >= -1);
        for (size_t cut = 0; cut < size; cut += 1 + cut / 8) {
            int s2;
            CHECK(parse_copy(data, cut, &s2) == -1);
        }
        int again;
        CHECK(parse_copy(data, size, &again) == 0 && again == st);
    }
    /* The encoder: a service name from the input (NUL-free prefix) round-trips. */
    char svc[PROXY_HC_GRPC_MAX_SERVICE + 2];
    size_t k = 0;
    while (k < size && k < sizeof(svc) - 1 && data[k]) {
        svc[k] = (char)data[k];
        k++;
    }
    svc[k] = '\0';
    uint8_t out[5 + 3 + PROXY_HC_GRPC_MAX_SERVICE];
    int n = proxy_hc_grpc_encode(svc, out, sizeof(out));
    if (k > PROXY_HC_GRPC_MAX_SERVICE) {
        CHECK(n == -1);
    } else {
        CHECK(n >= 5 && out[0] == 0);
        size_t mlen = (size_t)out[1] << 24 | (size_t)out[2] << 16 | (size_t)out[3] << 8 | out[4];
        CHECK(mlen == (size_t)n - 5);
        if (k == 0) {
            CHECK(mlen == 0);
        } else {
            size_t hdr = k < 128 ? 2 : 3;
            CHECK(out[5] == 0x0a && mlen == hdr + k && memcmp(out + 5 + hdr, svc, k) == 0);
            size_t vlen = out[6] & 0x7f;
            if (k >= 128) {
                vlen |= (size_t)out[7] << 7;
            }
            CHECK(vlen == k);
        }
    }
    return 0;
}
