// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for certificate identity extraction. The first byte picks the input's kind:
// even, the rest is a DER certificate whose SPIFFE ID and XFCC element are extracted; odd, the
// rest is a SPIFFE ID text that is parsed. Invariants: a parsed ID's parts are views into the
// input that rebuild it ("spiffe://" + trust domain + path; principal = the ID without the
// scheme), the trust domain is non-empty lower-case, namespace and service account are set
// together and only for /ns/<ns>/sa/<sa>; an extracted ID parses, has the returned length and is
// refused (SC_ETOOBIG) by a buffer one byte short; an XFCC element has the returned length, a
// 64-hex Hash, balanced quotes, only known keys, only printable ASCII (safe in a header: the
// SANs come from the peer), and is refused by a buffer one byte short.
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_x509_id: invariant failed: %s (%s:%d)\n", #cond, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool inside(struct sc_str v, const char *p, size_t n)
{
    return v.len == 0 || (v.p >= p && v.p + v.len <= p + n);
}

static void check_id(const char *p, size_t n)
{
    struct sc_spiffe_id id;
    if (sc_tls_spiffe_parse(sc_str_n(p, n), &id) < 0) {
        return;
    }
    CHECK(n > 9 && memcmp(p, "spiffe://", 9) == 0 && n <= SC_SPIFFE_ID_MAX);
    CHECK(inside(id.trust_domain, p, n) && inside(id.path, p, n) && inside(id.ns, p, n) &&
          inside(id.sa, p, n) && inside(id.principal, p, n));
    CHECK(id.trust_domain.len > 0 && id.trust_domain.p == p + 9);
    for (size_t i = 0; i < id.trust_domain.len; i++) {
        CHECK(!isupper((unsigned char)id.trust_domain.p[i]) && id.trust_domain.p[i] != '/');
    }
    CHECK(9 + id.trust_domain.len + id.path.len == n);
    CHECK(id.principal.len == n - 9 && id.principal.p == p + 9);
    CHECK((id.ns.len > 0) == (id.sa.len > 0));
    if (id.ns.len > 0) {
        CHECK(id.path.len == 8 + id.ns.len + id.sa.len);
        CHECK(memcmp(id.path.p, "/ns/", 4) == 0);
    }
    CHECK(id.path.len == 0 || id.path.p[id.path.len - 1] != '/');
}

static void check_xfcc(const char *x, size_t n)
{
    CHECK(strlen(x) == n);
    for (size_t i = 0; i < n; i++) {
        CHECK(x[i] >= 0x20 && x[i] < 0x7f); /* safe as a header value: no NUL, CR, LF */
    }
    const char *h = strstr(x, "Hash=");
    CHECK(h != NULL);
    for (int i = 0; i < 64; i++) {
        CHECK(isxdigit((unsigned char)h[5 + i]));
    }
    /* Split at ';' outside quotes; each part is Key=value with a known key. */
    bool q = false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && q && x[i] == '\\') {
            CHECK(i + 1 < n);
            i++;
            continue;
        }
        if (i < n && x[i] == '"') {
            q = !q;
            continue;
        }
        if (i == n || (!q && x[i] == ';')) {
            const char *eq = memchr(x + start, '=', i - start);
            CHECK(eq != NULL);
            size_t kl = (size_t)(eq - (x + start));
            static const char *const keys[] = { "By", "Hash", "Subject", "URI", "DNS" };
            bool known = false;
            for (size_t k = 0; k < 5; k++) {
                known |= strlen(keys[k]) == kl && memcmp(keys[k], x + start, kl) == 0;
            }
            CHECK(known);
            start = i + 1;
        }
    }
    CHECK(!q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        char *copy = sc_malloc(n ? n : 1);
        memcpy(copy, rest, n);
        check_id(copy, n);
        sc_free(copy);
        return 0;
    }
    const unsigned char *der = (const unsigned char *)rest;
    X509 *x = d2i_X509(NULL, &der, (long)n);
    if (!x) {
        return 0;
    }
    char id[SC_SPIFFE_ID_MAX + 1];
    int rc = sc_tls_spiffe_id(x, id, sizeof(id));
    CHECK(rc > 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc > 0) {
        CHECK(strlen(id) == (size_t)rc);
        check_id(id, (size_t)rc);
        struct sc_spiffe_id parsed;
        CHECK(sc_tls_spiffe_parse(sc_str_n(id, (size_t)rc), &parsed) == 0);
        char small[SC_SPIFFE_ID_MAX + 1];
        CHECK(sc_tls_spiffe_id(x, small, (size_t)rc) == SC_ETOOBIG);
        CHECK(sc_tls_spiffe_id(x, small, (size_t)rc + 1) == rc);
    }
    size_t cap = 65536;
    char *out = sc_malloc(cap);
    struct sc_str by =
        (data[0] & 2) ? SC_STR("spiffe://cluster.local/ns/a;b/sa/\"q\"") : SC_STR_NULL;
    int xr = sc_tls_xfcc(x, by, out, cap);
    CHECK(xr >= 0 || xr == SC_ETOOBIG);
    if (xr >= 0) {
        check_xfcc(out, (size_t)xr);
        if (by.len) {
            CHECK(strncmp(out, "By=\"", 4) == 0);
        }
        char *again = sc_malloc((size_t)xr + 1);
        CHECK(sc_tls_xfcc(x, by, again, (size_t)xr) == SC_ETOOBIG);
        CHECK(sc_tls_xfcc(x, by, again, (size_t)xr + 1) == xr);
        CHECK(memcmp(again, out, (size_t)xr + 1) == 0);
        sc_free(again);
    }
    sc_free(out);
    X509_free(x);
    return 0;
}
