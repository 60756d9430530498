// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the trace context parsers (src/roles/proxy/proxy_trace_ctx.c) on untrusted
// header values. The first byte picks the parser (traceparent, tracestate, b3, or the four B3
// multi headers split on '\n'); the rest is the value. Invariants: a parser that fails leaves its
// output untouched; a traceparent that parses has non-zero ids and formats back to a value that
// parses to the same context; a B3 context with ids has non-zero ids and its lower-case hex form
// parses again as B3; a valid tracestate is at most 512 bytes and has no control bytes.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_trace_ctx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_trace_ctx: invariant failed: %s (%s:%d)\n", #cond,         \
                    __FILE__, __LINE__);                                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

static void check_ids(const struct proxy_trace_ctx *c)
{
    if (c->has_ids) {
        CHECK(!zero(c->trace_id, 16));
        CHECK(!zero(c->span_id, 8));
    }
    CHECK(c->sampling >= PROXY_TRACE_DEFER && c->sampling <= PROXY_TRACE_DEBUG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct sc_str v = sc_str_n((const char *)data + 1, size - 1);
    struct proxy_trace_ctx c, before;
    memset(&c, 0x5a, sizeof(c));
    before = c;
    switch (data[0] % 4) {
    case 0:
        if (proxy_traceparent_parse(v, &c) == 0) {
            check_ids(&c);
            CHECK(c.has_ids);
            char out[55];
            proxy_traceparent_format(out, c.trace_id, c.span_id, c.sampling == PROXY_TRACE_ACCEPT);
            struct proxy_trace_ctx again;
            CHECK(proxy_traceparent_parse(sc_str_n(out, 55), &again) == 0);
            CHECK(memcmp(again.trace_id, c.trace_id, 16) == 0);
            CHECK(memcmp(again.span_id, c.span_id, 8) == 0);
            CHECK(again.sampling == c.sampling);
        } else {
            CHECK(memcmp(&c, &before, sizeof(c)) == 0);
        }
        break;
    case 1:
        if (proxy_tracestate_valid(v)) {
            CHECK(v.len <= 512);
            for (size_t i = 0; i < v.len; i++) {
                CHECK((unsigned char)v.p[i] >= 0x20 || v.p[i] == '\t');
                CHECK((unsigned char)v.p[i] < 0x7f);
            }
        }
        break;
    case 2:
        if (proxy_b3_parse(v, &c) == 0) {
            check_ids(&c);
            if (c.has_ids) {
                char out[49];
                proxy_trace_hex(out, c.trace_id, 16);
                out[32] = '-';
                proxy_trace_hex(out + 33, c.span_id, 8);
                struct proxy_trace_ctx again;
                CHECK(proxy_b3_parse(sc_str_n(out, 49), &again) == 0);
                CHECK(memcmp(again.trace_id, c.trace_id, 16) == 0);
                CHECK(memcmp(again.span_id, c.span_id, 8) == 0);
            }
        } else {
            CHECK(memcmp(&c, &before, sizeof(c)) == 0);
        }
        break;
    default: {
        struct sc_str f[4] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };
        size_t n = 0;
        const char *p = v.p, *end = v.p + v.len;
        while (n < 4 && p <= end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            f[n++] = sc_str_n(p, nl ? (size_t)(nl - p) : (size_t)(end - p));
            if (!nl) {
                break;
            }
            p = nl + 1;
        }
        if (proxy_b3_multi_parse(f[0], f[1], f[2], f[3], &c) == 0) {
            check_ids(&c);
            CHECK(c.has_ids || c.sampling != PROXY_TRACE_DEFER);
        } else {
            CHECK(memcmp(&c, &before, sizeof(c)) == 0);
        }
        break;
    }
    }
    return 0;
}
