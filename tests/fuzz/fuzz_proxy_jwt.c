// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for JWT authentication on untrusted input. The first byte picks the mode:
// even, the rest is an Authorization header value ("Bearer <token>") judged by a rule whose key
// set holds RFC 8037's Ed25519 key (the corpus carries tokens that key signed, so mutations
// reach the claim checks and the signature check); odd, the rest is a JWKS document. Invariants:
// an invalid token always has a reason; an accepted one has an identity whose principal is the
// payload's iss and sub (decoded here independently), its header names EdDSA, and the same token
// is accepted again from the cache with the same principal; a JWKS either fails with a message
// or holds 1 to 64 keys.
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "net/http1.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_jwt.h"
#include "roles/proxy/proxy_peerauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_jwt: invariant failed: %s (%s:%d)\n", #cond, __FILE__,     \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char config[] =
    "jwt_clock_skew: 60s\n"
    "request_authentication:\n"
    "  - name: jwt\n"
    "    jwt_rules:\n"
    "      - issuer: https://iss\n"
    "        jwks: '{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\","
    "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}]}'\n"
    "        output_claim_to_headers: [{header: x-sub, claim: sub}]\n";

struct doc {
    struct proxy_jwt_cfg jwt;
};

static const struct sc_opt doc_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct doc, jwt), .sub = proxy_jwt_opts },
    { 0 },
};

static struct proxy_jwt *j;
static struct proxy_jwt_cache *cache;

static void setup(void)
{
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    CHECK(sc_config_load_string(doc_opts, &d, "fuzz", config, sizeof(config) - 1, &err) == 0);
    struct proxy_workload w;
    memset(&w, 0, sizeof(w));
    w.ns = "shop";
    j = proxy_jwt_new(&d.jwt, &w, "istio-system", NULL, &err);
    CHECK(j != NULL);
    cache = proxy_jwt_cache_new(proxy_jwt_cache_want(j));
    sc_config_free(doc_opts, &d);
}

/* The payload's "iss/sub", decoded here without the code under test's parser state. */
static bool expected_principal(struct sc_str tok, char *out, size_t cap)
{
    const char *d1 = memchr(tok.p, '.', tok.len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok.p + tok.len - d1 - 1)) : NULL;
    if (!d2) {
        return false;
    }
    uint8_t *buf = malloc(tok.len);
    long n = proxy_jwt_b64url(d1 + 1, (size_t)(d2 - d1 - 1), buf, tok.len);
    json_t *p = n > 0 ? json_loadb((const char *)buf, (size_t)n, 0, NULL) : NULL;
    free(buf);
    const char *iss = json_string_value(json_object_get(p, "iss"));
    const char *sub = json_string_value(json_object_get(p, "sub"));
    bool ok = iss != NULL;
    if (ok) {
        snprintf(out, cap, "%s/%s", iss, sub ? sub : "");
    }
    json_decref(p);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!j) {
        setup();
    }
    if (size < 1 || size > 20000) {
        return 0;
    }
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        char *err = NULL;
        struct proxy_jwks *ks = proxy_jwks_parse(in, len, &err);
        CHECK((ks == NULL) == (err != NULL));
        CHECK(!ks || (proxy_jwks_count(ks) >= 1 && proxy_jwks_count(ks) <= 64));
        proxy_jwks_unref(ks);
        sc_free(err);
        return 0;
    }
    struct sc_http_header h[1] = { { SC_STR("Authorization"), { in, len } } };
    struct sc_http_msg m = { .headers = h, .nheaders = 1 };
    struct proxy_jwt_result res;
    const char *why = NULL;
    int64_t now = 1700000000;
    int rc = proxy_jwt_authenticate(j, cache, &m, SC_STR_NULL, now, &res, &why);
    if (rc < 0) {
        CHECK(why != NULL);
        return 0;
    }
    CHECK(rc == 0);
    if (!res.auth) {
        return 0;
    }
    CHECK(len > 7);
    struct sc_str tok = sc_str_trim(sc_str_n(in + 7, len - 7));
    char want[20000];
    CHECK(expected_principal(tok, want, sizeof(want)));
    CHECK(sc_str_eq(res.auth->principal, sc_str_c(want)));
    /* Again: from the cache, the same identity. */
    struct proxy_jwt_result again;
    CHECK(proxy_jwt_authenticate(j, cache, &m, SC_STR_NULL, now, &again, &why) == 0);
    CHECK(again.auth && sc_str_eq(again.auth->principal, res.auth->principal));
    return 0;
}
