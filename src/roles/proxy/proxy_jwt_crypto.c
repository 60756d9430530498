// SPDX-License-Identifier: Apache-2.0
// Every OpenSSL call of JWT verification (see proxy_jwt.h): public keys built from JWK members
// (RSA n/e, EC P-256/P-384 x/y, Ed25519 x) and JWS signature checks with EVP. The key decides
// what it may verify: an RSA key RS256/384/512 and PS256/384/512, an EC key the one ES algorithm
// of its curve, an Ed25519 key EdDSA; nothing here knows HMAC, so a public key can never serve
// as a shared secret.
#include "roles/proxy/proxy_jwt.h"

#include <string.h>

#include "net/ossl.h"

#define MIN_RSA_BITS 2048

/* OpenSSL is loaded at run time (net/ossl.h): a key cannot be built without it, which is the
 * key's error rather than the process's end. */
static bool crypto_ready(const char **why)
{
    if (sc_lazylib_ssl_load(NULL) < 0) {
        *why = "OpenSSL 3 (libssl.so.3, libcrypto.so.3) cannot be loaded";
        return false;
    }
    return true;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1) {
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
            pkey = NULL;
        }
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

void *proxy_jwt_key_rsa(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen,
                        const char **why)
{
    if (!crypto_ready(why)) {
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1) {
        pkey = from_params("RSA", bld);
    }
    if (!pkey) {
        *why = "RSA key does not load";
    } else if (EVP_PKEY_get_bits(pkey) < MIN_RSA_BITS) {
        *why = "RSA key shorter than 2048 bits";
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return pkey;
}

void *proxy_jwt_key_ec(int fam, const uint8_t *x, size_t xlen, const uint8_t *y, size_t ylen,
                       const char **why)
{
    size_t cl = fam == PROXY_JWK_EC256 ? 32 : 48;
    if (!crypto_ready(why)) {
        return NULL;
    }
    /* RFC 7518 wants full-length coordinates; shorter ones (leading zero bytes dropped, as some
     * JWK writers do) are the same integers, so they are left-padded, as big-number readers do. */
    if (!xlen || !ylen || xlen > cl || ylen > cl) {
        *why = "EC key coordinates of the wrong length for the curve";
        return NULL;
    }
    uint8_t pub[1 + 2 * 48] = { 0 };
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1 + (cl - xlen), x, xlen);
    memcpy(pub + 1 + cl + (cl - ylen), y, ylen);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    const char *group = fam == PROXY_JWK_EC256 ? "prime256v1" : "secp384r1";
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * cl) == 1) {
        pkey = from_params("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    if (!pkey) {
        *why = "EC key is not a point of its curve";
    }
    return pkey;
}

void *proxy_jwt_key_ed25519(const uint8_t *x, size_t xlen, const char **why)
{
    if (!crypto_ready(why)) {
        return NULL;
    }
    EVP_PKEY *pkey =
        xlen == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen) : NULL;
    if (!pkey) {
        *why = "Ed25519 key does not load";
    }
    return pkey;
}

void proxy_jwt_key_free(void *key)
{
    EVP_PKEY_free(key);
}

/* A raw JWS ECDSA signature (r || s, each <cl> bytes) as the DER that EVP verifies. */
static int ecdsa_der(const uint8_t *sig, size_t cl, unsigned char **der)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)cl, NULL), *s = BN_bin2bn(sig + cl, (int)cl, NULL);
    int len = -1;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        *der = NULL;
        len = i2d_ECDSA_SIG(es, der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return len;
}

int proxy_jwt_verify(const void *key, int alg, const char *input, size_t ilen, const uint8_t *sig,
                     size_t slen)
{
    EVP_PKEY *pkey = (EVP_PKEY *)key;
    const EVP_MD *md = NULL;
    switch (alg) {
    case PROXY_JWS_RS256:
    case PROXY_JWS_PS256:
    case PROXY_JWS_ES256:
        md = EVP_sha256();
        break;
    case PROXY_JWS_RS384:
    case PROXY_JWS_PS384:
    case PROXY_JWS_ES384:
        md = EVP_sha384();
        break;
    case PROXY_JWS_RS512:
    case PROXY_JWS_PS512:
        md = EVP_sha512();
        break;
    case PROXY_JWS_EDDSA:
        break;
    default:
        return -1;
    }
    unsigned char *der = NULL;
    if (alg == PROXY_JWS_ES256 || alg == PROXY_JWS_ES384) {
        size_t cl = alg == PROXY_JWS_ES256 ? 32 : 48;
        if (slen != 2 * cl) {
            return -1;
        }
        int dl = ecdsa_der(sig, cl, &der);
        if (dl <= 0) {
            return -1;
        }
        sig = der;
        slen = (size_t)dl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = ctx && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) == 1;
    if (ok && (alg == PROXY_JWS_PS256 || alg == PROXY_JWS_PS384 || alg == PROXY_JWS_PS512)) {
        /* RFC 7518 3.5: MGF1 with the same hash, a salt as long as the hash. */
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
    }
    ok = ok && EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)input, ilen) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok ? 0 : -1;
}
