// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the request-target normaliser (src/roles/proxy/proxy_normalize.c). The
// first byte picks the level and the escaped-slash action; the rest, with bytes outside visible
// ASCII mapped into it (the HTTP/1 parser admits nothing else), is the target after a '/'.
// Invariants: a result is never longer than its input; normalising it again changes nothing; its
// query is the input's, byte for byte; from BASE up its path has no "." or ".." segment and no
// '%' before a hex pair it could have decoded to an unreserved character; from MERGE up no empty
// segment but a trailing one; with REJECT no %2F or %5C survives, with DECODE none is left.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/proxy/proxy_normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_normalize: invariant failed: %s (%s:%d)\n", #cond,         \
                    __FILE__, __LINE__);                                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int hexv(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) {
        return 0;
    }
    int level = data[0] & 3, esc = (data[0] >> 2) % 3;
    if (level == PROXY_PN_DECODE_MERGE && esc == PROXY_ES_KEEP) {
        esc = PROXY_ES_DECODE; /* refused together at load */
    }
    size_t n = size; /* '/' + the rest */
    char *t = malloc(n);
    t[0] = '/';
    for (size_t i = 1; i < size; i++) {
        unsigned char c = data[i];
        t[i] = (char)(c >= 0x21 && c <= 0x7e ? c : 0x21 + c % 94);
    }
    char *out = malloc(n);
    size_t olen = 0, plen = 0;
    const char *why = NULL;
    int rc =
        proxy_normalize_target((struct sc_str){ t, n }, level, esc, out, n, &olen, &plen, &why);
    const char *res = t;
    size_t rlen = n;
    if (rc < 0) {
        CHECK(why != NULL);
    } else {
        if (rc == 0) {
            res = out;
            rlen = olen;
        }
        CHECK(rlen <= n);
        CHECK(plen <= rlen);
        const char *q = memchr(t, '?', n);
        size_t qlen = q ? n - (size_t)(q - t) : 0;
        CHECK(rlen - plen == qlen);
        CHECK(qlen == 0 || memcmp(res + plen, q, qlen) == 0);
        CHECK(memchr(res, '#', rlen) == NULL && memchr(res, '\\', rlen) == NULL);
        if (level >= PROXY_PN_BASE) {
            for (size_t i = 0; i < plen; i++) {
                if (res[i] == '/') {
                    size_t e = i + 1;
                    while (e < plen && res[e] != '/') {
                        e++;
                    }
                    size_t sl = e - i - 1;
                    CHECK(!(sl == 1 && res[i + 1] == '.'));
                    CHECK(!(sl == 2 && res[i + 1] == '.' && res[i + 2] == '.'));
                    if (level >= PROXY_PN_MERGE) {
                        CHECK(sl > 0 || e == plen);
                    }
                }
                if (res[i] == '%') {
                    CHECK(i + 2 < plen);
                    int v = hexv(res[i + 1]) * 16 + hexv(res[i + 2]);
                    CHECK(v > 0);
                    CHECK(!((v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
                            (v >= '0' && v <= '9') || v == '-' || v == '.' || v == '_' ||
                            v == '~'));
                    CHECK(esc == PROXY_ES_KEEP || (v != '/' && v != '\\'));
                }
            }
        }
        char *again = malloc(rlen ? rlen : 1);
        size_t ol2, pl2;
        CHECK(proxy_normalize_target((struct sc_str){ res, rlen }, level, esc, again, rlen, &ol2,
                                     &pl2, &why) == PROXY_NORM_SAME);
        CHECK(pl2 == plen);
        free(again);
    }
    free(out);
    free(t);
    return 0;
}
