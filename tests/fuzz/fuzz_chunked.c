// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the chunked body decoder. The input is decoded whole, in two pieces split
// at a point taken from the data, and (when short) one byte per call; every way must decode the
// same body bytes and end the same way (done at the same offset, still incomplete, or the same
// error). Every data span must lie inside the bytes handed in and end the consumed bytes, and a
// completed body decoded again alone must complete at the same length. Inputs of odd length are
// decoded with strict_trailers (forbidden trailer fields refused): that refuses more, never less.
// Any violation aborts.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_chunked: invariant failed: %s (%s:%d)\n", #cond, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct outcome {
    int rc; /* SC_HTTP1_CHUNK_DONE, SC_HTTP1_CHUNK_MORE or SC_EHTTP */
    size_t used;
    const char *reason;
    struct sc_buf body;
};

/* Decodes <in> handing over pieces that end at the offsets in <cuts> (then the rest), each piece
 * copied to its own exact-size block so that overreads are caught. */
static bool strict; /* this input's strict_trailers */

static void decode(const char *in, size_t len, const size_t *cuts, size_t ncuts, struct outcome *o)
{
    struct sc_http1_chunked d;
    sc_http1_chunked_init(&d);
    d.strict_trailers = strict;
    sc_buf_init(&o->body, len + 1);
    o->rc = SC_HTTP1_CHUNK_MORE;
    o->reason = NULL;
    size_t off = 0, c = 0;
    while (off < len) {
        size_t end = len;
        while (c < ncuts && cuts[c] <= off) {
            c++;
        }
        if (c < ncuts) {
            end = cuts[c];
        }
        size_t n = end - off;
        char *piece = sc_malloc(n);
        memcpy(piece, in + off, n);
        size_t pos = 0;
        while (pos < n) {
            size_t consumed = 0;
            struct sc_str data;
            struct sc_http_error err;
            int rc = sc_http1_chunked_next(&d, piece + pos, n - pos, &consumed, &data, &err);
            CHECK(consumed <= n - pos);
            if (rc < 0) {
                CHECK(rc == SC_EHTTP && err.status == 400 && err.reason && err.reason[0]);
                CHECK(err.offset <= n - pos);
                o->rc = SC_EHTTP;
                o->reason = err.reason;
                o->used = off + pos + consumed;
                sc_free(piece);
                return;
            }
            if (rc == SC_HTTP1_CHUNK_DATA) {
                CHECK(data.len > 0);
                CHECK(data.p >= piece + pos && data.p + data.len == piece + pos + consumed);
                CHECK(sc_buf_append(&o->body, data.p, data.len) == 0);
            } else if (rc == SC_HTTP1_CHUNK_MORE) {
                CHECK(consumed == n - pos);
            }
            pos += consumed;
            if (rc == SC_HTTP1_CHUNK_DONE) {
                o->rc = SC_HTTP1_CHUNK_DONE;
                o->used = off + pos;
                CHECK(d.body_bytes == o->body.len);
                /* done stays done and consumes nothing */
                CHECK(sc_http1_chunked_next(&d, piece + pos, n - pos, &consumed, &data, &err) ==
                      SC_HTTP1_CHUNK_DONE);
                CHECK(consumed == 0);
                sc_free(piece);
                return;
            }
        }
        sc_free(piece);
        off = end;
    }
    CHECK(d.body_bytes == o->body.len);
    o->used = len;
}

static void expect_same(const struct outcome *a, const struct outcome *b)
{
    CHECK(a->rc == b->rc);
    CHECK(a->used == b->used);
    CHECK(a->body.len == b->body.len);
    CHECK(a->body.len == 0 || memcmp(a->body.p, b->body.p, a->body.len) == 0);
    if (a->rc == SC_EHTTP) {
        CHECK(strcmp(a->reason, b->reason) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct outcome whole, split, bytes;
    strict = size % 2 == 1;
    decode(in, size, NULL, 0, &whole);
    if (strict) {
        /* Strictness only adds refusals: without it the same bytes end the same way or complete
         * further, and an error it adds is the forbidden field. */
        struct outcome lax;
        strict = false;
        decode(in, size, NULL, 0, &lax);
        strict = true;
        CHECK(whole.rc == lax.rc ||
              (whole.rc == SC_EHTTP && strcmp(whole.reason, "forbidden trailer field") == 0));
        sc_buf_cleanup(&lax.body);
    }
    CHECK(whole.used <= size);
    CHECK(whole.body.len <= size);

    size_t cut = 0;
    for (size_t i = 0; i < size; i++) {
        cut = cut * 31 + (unsigned char)in[i];
    }
    cut = size ? cut % size : 0;
    decode(in, size, &cut, 1, &split);
    expect_same(&whole, &split);
    sc_buf_cleanup(&split.body);

    if (size <= 2048) {
        size_t *cuts = sc_malloc((size + 1) * sizeof(*cuts));
        for (size_t i = 0; i < size; i++) {
            cuts[i] = i + 1;
        }
        decode(in, size, cuts, size, &bytes);
        expect_same(&whole, &bytes);
        sc_buf_cleanup(&bytes.body);
        sc_free(cuts);
    }

    /* a complete body is complete on its own, at the same length */
    if (whole.rc == SC_HTTP1_CHUNK_DONE) {
        struct outcome again;
        decode(in, whole.used, NULL, 0, &again);
        expect_same(&whole, &again);
        sc_buf_cleanup(&again.body);
    }
    sc_buf_cleanup(&whole.body);
    return 0;
}
