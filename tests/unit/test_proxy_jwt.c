// SPDX-License-Identifier: Apache-2.0
// Unit tests for JWT verification (src/roles/proxy/proxy_jwt.c, proxy_jwks.c,
// proxy_jwt_crypto.c): base64url strictness, JWKS parsing (oct keys and keys of other uses
// skipped, short RSA keys and malformed keys refused), the algorithm pinned by the key (none,
// HS256 and another family's algorithm refused), RFC 8037's Ed25519 signature vector, and
// whole tokens signed in the test with an Ed25519 key: issuer, audience, exp/nbf with the clock
// skew, kid lookup, tampering, token locations, the verified-token cache and claims for `when`.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_jwt.h"
#include "roles/proxy/proxy_peerauth.h"

/* RFC 8037 A.2 and A.4. */
static const char rfc_x[] = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
static const char rfc_jws[] =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

static EVP_PKEY *signer; /* the test's Ed25519 key */
static char jwks_doc[512];

static void b64url_enc(const uint8_t *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n) {
            out[o++] = a[v >> 6 & 63];
        }
        if (i + 2 < n) {
            out[o++] = a[v & 63];
        }
    }
    out[o] = '\0';
}

/* A token with header <hdr> and payload <pl> (JSON), signed by the test key. */
static char *make_token(const char *hdr, const char *pl)
{
    static char tok[4096];
    char h[1024], p[2048], s[200];
    b64url_enc((const uint8_t *)hdr, strlen(hdr), h);
    b64url_enc((const uint8_t *)pl, strlen(pl), p);
    char input[3100];
    snprintf(input, sizeof(input), "%s.%s", h, p);
    uint8_t sig[64];
    size_t sl = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, signer), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &sl, (const uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    b64url_enc(sig, sl, s);
    snprintf(tok, sizeof(tok), "%s.%s", input, s);
    return tok;
}

static void test_b64url(void **state)
{
    (void)state;
    uint8_t out[16];
    assert_int_equal(proxy_jwt_b64url("aGk", 3, out, sizeof(out)), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(proxy_jwt_b64url("-_8", 3, out, sizeof(out)), 2);
    assert_int_equal(proxy_jwt_b64url("aGk=", 4, out, sizeof(out)), -1); /* no padding */
    assert_int_equal(proxy_jwt_b64url("aGl", 3, out, sizeof(out)), -1);  /* non-zero bits */
    assert_int_equal(proxy_jwt_b64url("a", 1, out, sizeof(out)), -1);
    assert_int_equal(proxy_jwt_b64url("a+/b", 4, out, sizeof(out)), -1);
    assert_int_equal(proxy_jwt_b64url("aGVsbG8", 7, out, 2), -1);
}

static void test_rfc8037_vector(void **state)
{
    (void)state;
    uint8_t x[32], sig[64];
    assert_int_equal(proxy_jwt_b64url(rfc_x, strlen(rfc_x), x, sizeof(x)), 32);
    const char *why = NULL;
    void *key = proxy_jwt_key_ed25519(x, 32, &why);
    assert_non_null(key);
    const char *d2 = strrchr(rfc_jws, '.');
    assert_int_equal(proxy_jwt_b64url(d2 + 1, strlen(d2 + 1), sig, sizeof(sig)), 64);
    size_t il = (size_t)(d2 - rfc_jws);
    assert_int_equal(proxy_jwt_verify(key, PROXY_JWS_EDDSA, rfc_jws, il, sig, 64), 0);
    assert_int_equal(proxy_jwt_verify(key, PROXY_JWS_EDDSA, rfc_jws, il - 1, sig, 64), -1);
    sig[0] ^= 1;
    assert_int_equal(proxy_jwt_verify(key, PROXY_JWS_EDDSA, rfc_jws, il, sig, 64), -1);
    proxy_jwt_key_free(key);
}

static void test_alg_names_and_jwks(void **state)
{
    (void)state;
    assert_int_equal(proxy_jwt_alg(SC_STR("RS256")), PROXY_JWS_RS256);
    assert_int_equal(proxy_jwt_alg(SC_STR("EdDSA")), PROXY_JWS_EDDSA);
    assert_int_equal(proxy_jwt_alg(SC_STR("none")), PROXY_JWS_NONE);
    assert_int_equal(proxy_jwt_alg(SC_STR("HS256")), PROXY_JWS_NONE);
    assert_int_equal(proxy_jwt_alg(SC_STR("rs256")), PROXY_JWS_NONE);
    char *err = NULL;
    char doc[512];
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"use\":\"enc\"},"
             "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"kid\":\"a\"}]}",
             rfc_x, rfc_x);
    struct proxy_jwks *ks = proxy_jwks_parse(doc, strlen(doc), &err);
    assert_non_null(ks);
    assert_int_equal(proxy_jwks_count(ks), 1); /* the secret and the encryption key skipped */
    bool known;
    assert_non_null(proxy_jwks_find(ks, SC_STR("a"), PROXY_JWS_EDDSA, &known));
    assert_true(known);
    assert_null(proxy_jwks_find(ks, SC_STR("a"), PROXY_JWS_RS256, &known));
    assert_null(proxy_jwks_find(ks, SC_STR("b"), PROXY_JWS_EDDSA, &known));
    assert_false(known);
    assert_non_null(proxy_jwks_find(ks, SC_STR_NULL, PROXY_JWS_EDDSA, &known));
    proxy_jwks_unref(ks);
    const char *bad[] = {
        "{\"keys\":[]}",
        "{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
        "[]",
        "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", /* far too short */
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAB\",\"y\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AQAB\"}]}",
        "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AQAB\"},]}",
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        err = NULL;
        assert_null(proxy_jwks_parse(bad[i], strlen(bad[i]), &err));
        assert_non_null(err);
        sc_free(err);
    }
    /* A key whose own alg is of another family is refused; an HS alg makes it unusable. */
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"alg\":\"RS256\"}]}",
             rfc_x);
    err = NULL;
    assert_null(proxy_jwks_parse(doc, strlen(doc), &err));
    sc_free(err);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\",\"alg\":\"HS256\"}]}",
             rfc_x);
    err = NULL;
    assert_null(proxy_jwks_parse(doc, strlen(doc), &err));
    sc_free(err);
}

struct doc {
    struct proxy_jwt_cfg jwt;
};

static const struct sc_opt doc_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct doc, jwt), .sub = proxy_jwt_opts },
    { 0 },
};

static struct proxy_jwt *load(const char *extra)
{
    char y[2048];
    snprintf(y, sizeof(y),
             "request_authentication:\n"
             "  - name: jwt\n"
             "    jwt_rules:\n"
             "      - issuer: https://iss\n"
             "        audiences: [shop]\n"
             "        jwks: '%s'\n"
             "%s",
             jwks_doc, extra);
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    if (sc_config_load_string(doc_opts, &d, "t.yaml", y, strlen(y), &err) < 0 ||
        proxy_jwt_check(&d.jwt, &err) < 0) {
        fail_msg("%s", err);
    }
    struct proxy_workload w;
    memset(&w, 0, sizeof(w));
    w.ns = "shop";
    struct proxy_jwt *j = proxy_jwt_new(&d.jwt, &w, "istio-system", NULL, &err);
    assert_non_null(j);
    sc_config_free(doc_opts, &d);
    return j;
}

#define NOW 1700000000

/* Authenticates a request carrying Authorization: <auth> (NULL: none) and query <q>. Returns
 * 0/-1 and the result. */
static int authn(struct proxy_jwt *j, struct proxy_jwt_cache *c, const char *auth, const char *q,
                 struct proxy_jwt_result *res, const char **why)
{
    struct sc_http_header h[1] = { { SC_STR("Authorization"), sc_str_c(auth) } };
    struct sc_http_msg m = { .headers = h, .nheaders = auth ? 1 : 0 };
    *why = NULL;
    return proxy_jwt_authenticate(j, c, &m, sc_str_c(q), NOW, res, why);
}

static char *bearer(const char *tok)
{
    static char b[4200];
    snprintf(b, sizeof(b), "Bearer %s", tok);
    return b;
}

static const char *hdr_ok = "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}";

static void test_tokens(void **state)
{
    (void)state;
    struct proxy_jwt *j = load("");
    struct proxy_jwt_cache *c = proxy_jwt_cache_new(proxy_jwt_cache_want(j));
    struct proxy_jwt_result res;
    const char *why;
    char pl[512];
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"https://iss\",\"sub\":\"alice\",\"aud\":[\"x\",\"shop\"],\"exp\":%d,"
             "\"groups\":[\"dev\",\"ops\"],\"org\":{\"team\":\"pay\"}}",
             NOW + 60);
    char *good = sc_strdup(make_token(hdr_ok, pl));
    assert_int_equal(authn(j, c, bearer(good), NULL, &res, &why), 0);
    assert_non_null(res.auth);
    assert_true(sc_str_eq(res.auth->principal, SC_STR("https://iss/alice")));
    assert_non_null(res.strip.p); /* not forwarded by default */
    /* Cached: the same token again is not verified a second time (same entry). */
    const struct proxy_az_auth *first = res.auth;
    assert_int_equal(authn(j, c, bearer(good), NULL, &res, &why), 0);
    assert_ptr_equal(res.auth, first);
    /* From the access_token parameter too. */
    char q[4200];
    snprintf(q, sizeof(q), "a=1&access_token=%s", good);
    assert_int_equal(authn(j, c, NULL, q, &res, &why), 0);
    assert_non_null(res.auth);
    /* No token: no identity, no error. */
    assert_int_equal(authn(j, c, NULL, "a=1", &res, &why), 0);
    assert_null(res.auth);
    assert_int_equal(authn(j, c, "Basic dXNlcjpwYXNz", NULL, &res, &why), 0);
    assert_null(res.auth);
    /* Invalid tokens. */
    struct {
        const char *hdr, *fmt, *want;
        int t;
    } bad[] = {
        { hdr_ok, "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"exp\":%d}", "expired", NOW - 61 },
        { hdr_ok, "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"nbf\":%d}", "not yet", NOW + 61 },
        { hdr_ok, "{\"iss\":\"https://other\",\"aud\":\"shop\",\"exp\":%d}", "issuer", NOW + 60 },
        { hdr_ok, "{\"iss\":\"https://iss\",\"aud\":\"nope\",\"exp\":%d}", "Audiences", NOW + 60 },
        { hdr_ok, "{\"iss\":\"https://iss\",\"exp\":%d}", "Audiences", NOW + 60 },
        { hdr_ok, "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"exp\":\"%d\"}", "malformed", 1 },
        { hdr_ok, "{\"iss\":\"https://iss\",\"iss\":\"x\",\"aud\":\"shop\",\"a\":%d}", "JSON", 1 },
        { "{\"alg\":\"none\"}", "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"a\":%d}", "algorithm",
          1 },
        { "{\"alg\":\"HS256\",\"kid\":\"k1\"}",
          "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"a\":%d}", "algorithm", 1 },
        { "{\"alg\":\"RS256\",\"kid\":\"k1\"}",
          "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"a\":%d}", "kid or alg", 1 },
        { "{\"alg\":\"EdDSA\",\"kid\":\"k9\"}",
          "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"a\":%d}", "kid or alg", 1 },
        { "{\"alg\":\"EdDSA\",\"crit\":[\"x\"]}",
          "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"a\":%d}", "crit", 1 },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        const char *at = strstr(bad[i].fmt, "%d");
        snprintf(pl, sizeof(pl), "%.*s%d%s", (int)(at - bad[i].fmt), bad[i].fmt, bad[i].t, at + 2);
        assert_int_equal(authn(j, c, bearer(make_token(bad[i].hdr, pl)), NULL, &res, &why), -1);
        if (!strstr(why, bad[i].want)) {
            fail_msg("case %zu: %s", i, why);
        }
    }
    /* Within the skew: passes. */
    snprintf(pl, sizeof(pl), "{\"iss\":\"https://iss\",\"aud\":\"shop\",\"exp\":%d}", NOW - 30);
    assert_int_equal(authn(j, c, bearer(make_token(hdr_ok, pl)), NULL, &res, &why), 0);
    /* Tampering: a payload swapped under a valid signature. */
    char *t = sc_strdup(good);
    char *d1 = strchr(t, '.');
    d1[3] = d1[3] == 'A' ? 'B' : 'A';
    assert_int_equal(authn(j, c, bearer(t), NULL, &res, &why), -1);
    sc_free(t);
    assert_int_equal(authn(j, c, bearer("a.b"), NULL, &res, &why), -1);
    assert_int_equal(authn(j, c, bearer("a.b.c.d"), NULL, &res, &why), -1);
    assert_int_equal(authn(j, c, bearer("!!.b.c"), NULL, &res, &why), -1);
    sc_free(good);
    proxy_jwt_cache_free(c);
    proxy_jwt_free(j);
}

static bool collect(void *arg, struct sc_str v)
{
    char *out = arg;
    strncat(out, v.p, v.len);
    strcat(out, ",");
    return true;
}

static void test_claims_and_outputs(void **state)
{
    (void)state;
    struct proxy_jwt *j = load("        forward_original_token: true\n"
                               "        output_payload_to_header: X-Payload\n"
                               "        output_claim_to_headers:\n"
                               "          - {header: x-team, claim: org.team}\n"
                               "          - {header: x-n, claim: n}\n");
    struct proxy_jwt_cache *c = proxy_jwt_cache_new(proxy_jwt_cache_want(j));
    char pl[512];
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"https://iss\",\"sub\":\"bob\",\"aud\":\"shop\",\"exp\":%d,\"n\":7,"
             "\"groups\":[\"dev\",\"ops\"],\"org\":{\"team\":\"pay\"}}",
             NOW + 60);
    struct proxy_jwt_result res;
    const char *why;
    assert_int_equal(authn(j, c, bearer(make_token(hdr_ok, pl)), NULL, &res, &why), 0);
    assert_null(res.strip.p);
    assert_non_null(memmem(res.add.p, res.add.len, "x-team: pay\r\n", 13));
    assert_non_null(memmem(res.add.p, res.add.len, "x-n: 7\r\n", 8));
    assert_non_null(memmem(res.add.p, res.add.len, "X-Payload: ", 11));
    size_t n;
    const struct sc_str *drop = proxy_jwt_drop_names(j, &n);
    assert_int_equal(n, 3);
    assert_true(sc_str_eq(drop[0], SC_STR("x-payload")));
    char out[128] = "";
    struct sc_str groups = SC_STR("groups");
    assert_int_equal(res.auth->claim(res.auth->ctx, &groups, 1, collect, out), 0);
    assert_string_equal(out, "dev,ops,");
    out[0] = '\0';
    struct sc_str team[2] = { SC_STR("org"), SC_STR("team") };
    assert_int_equal(res.auth->claim(res.auth->ctx, team, 2, collect, out), 0);
    assert_string_equal(out, "pay,");
    struct sc_str missing = SC_STR("nope");
    assert_int_equal(res.auth->claim(res.auth->ctx, &missing, 1, collect, out), -1);
    proxy_jwt_cache_free(c);
    proxy_jwt_free(j);
}

static int setup(void **state)
{
    (void)state;
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    EVP_PKEY_keygen_init(kc);
    EVP_PKEY_keygen(kc, &signer);
    EVP_PKEY_CTX_free(kc);
    uint8_t pub[32];
    size_t pl = sizeof(pub);
    EVP_PKEY_get_raw_public_key(signer, pub, &pl);
    char x[64];
    b64url_enc(pub, pl, x);
    snprintf(jwks_doc, sizeof(jwks_doc),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\",\"x\":\"%s\"}]}", x);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(signer);
    proxy_jwks_cleanup();
    return 0;
}

/* A P-256 key whose x coordinate starts with a zero byte, given with that byte dropped (as some
 * JWK writers do), loads as the same key; a coordinate longer than the curve's is refused. */
static void test_ec_short_coordinate(void **state)
{
    (void)state;
    uint8_t pub[65];
    size_t len = 0;
    EVP_PKEY *orig = NULL;
    for (int i = 0; i < 4096; i++) {
        EVP_PKEY_free(orig);
        orig = EVP_EC_gen("P-256");
        assert_non_null(orig);
        assert_int_equal(
            EVP_PKEY_get_octet_string_param(orig, "encoded-pub-key", pub, sizeof(pub), &len), 1);
        if (len == 65 && pub[1] == 0) {
            break;
        }
    }
    assert_int_equal(pub[1], 0);
    const char *why = NULL;
    EVP_PKEY *k = proxy_jwt_key_ec(PROXY_JWK_EC256, pub + 2, 31, pub + 33, 32, &why);
    assert_non_null(k);
    assert_int_equal(EVP_PKEY_eq(k, orig), 1);
    proxy_jwt_key_free(k);
    uint8_t longer[33] = { 0 };
    memcpy(longer + 1, pub + 1, 32);
    assert_null(proxy_jwt_key_ec(PROXY_JWK_EC256, longer, 33, pub + 33, 32, &why));
    assert_non_null(strstr(why, "wrong length"));
    EVP_PKEY_free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_rfc8037_vector),
        cmocka_unit_test(test_alg_names_and_jwks),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_claims_and_outputs),
        cmocka_unit_test(test_ec_short_coordinate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
