// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the gRPC-Web text decoder (proxy_grpc_web.c), which reads a browser's
// base64 request body as it streams in. Invariants: it reads nothing past the bytes given (ASan);
// the outcome and the decoded bytes do not depend on how the input is split into pieces (the
// first byte of the input picks the split); the output never exceeds 3/4 of the input; accepted
// input re-encodes (with the streaming encoder) to bytes that decode back to the same output; the
// output buffer's cap is honoured (SC_ETOOBIG, nothing past it).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "roles/proxy/proxy_grpc_web.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_grpc_web: invariant failed: %s (%s:%d)\n", #cond,          \
                    __FILE__, __LINE__);                                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Decodes <p>/<n> in pieces of <step> bytes (each an exact-size heap copy). Returns 0 when the
 * whole input was accepted and ended on a quantum, -1 when it was refused. */
static int decode(const uint8_t *p, size_t n, size_t step, struct sc_buf *out)
{
    struct proxy_b64_dec d = { 0 };
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += step) {
        size_t k = n - off < step ? n - off : step;
        char *c = malloc(k);
        memcpy(c, p + off, k);
        rc = proxy_b64_decode(&d, c, k, out);
        free(c);
        CHECK(rc == 0 || rc == -1 || rc == SC_ETOOBIG);
    }
    if (rc == 0 && !proxy_b64_decode_done(&d)) {
        rc = -1;
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536) {
        return 0;
    }
    size_t step = 1 + data[0] % 17;
    data++;
    size--;
    struct sc_buf whole, pieces;
    sc_buf_init(&whole, 1 << 20);
    sc_buf_init(&pieces, 1 << 20);
    int a = decode(data, size, size ? size : 1, &whole);
    int b = decode(data, size, step, &pieces);
    CHECK(a == b);
    if (a == 0) {
        CHECK(whole.len == pieces.len && (!whole.len || memcmp(whole.p, pieces.p, whole.len) == 0));
        CHECK(whole.len <= size / 4 * 3);
        /* re-encode in pieces, decode again: the same bytes */
        struct proxy_b64_enc e = { 0 };
        struct sc_buf enc, back;
        sc_buf_init(&enc, 1 << 21);
        sc_buf_init(&back, 1 << 20);
        for (size_t off = 0; off < whole.len; off += step) {
            size_t k = whole.len - off < step ? whole.len - off : step;
            CHECK(proxy_b64_encode(&e, (const uint8_t *)whole.p + off, k, &enc) == 0);
            CHECK(enc.len % 4 == 0);
        }
        CHECK(proxy_b64_encode_end(&e, &enc) == 0);
        CHECK(enc.len % 4 == 0 && enc.len == (whole.len + 2) / 3 * 4);
        CHECK(decode((const uint8_t *)enc.p, enc.len, enc.len ? enc.len : 1, &back) == 0);
        CHECK(back.len == whole.len && (!whole.len || memcmp(back.p, whole.p, whole.len) == 0));
        sc_buf_cleanup(&enc);
        sc_buf_cleanup(&back);
    }
    /* a small cap: refused with SC_ETOOBIG or -1, never written past */
    struct sc_buf small;
    sc_buf_init(&small, 8);
    struct proxy_b64_dec d = { 0 };
    int rc = proxy_b64_decode(&d, (const char *)data, size, &small);
    CHECK(small.len <= 8);
    CHECK(rc == 0 || rc == -1 || rc == SC_ETOOBIG);
    sc_buf_cleanup(&small);
    sc_buf_cleanup(&whole);
    sc_buf_cleanup(&pieces);
    return 0;
}
