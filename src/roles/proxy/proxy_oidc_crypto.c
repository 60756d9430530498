// SPDX-License-Identifier: Apache-2.0
// Every OpenSSL call of the OpenID Connect login (see proxy_oidc.h): random bytes for state,
// nonce, PKCE verifiers and GCM nonces; SHA-256 for the PKCE challenge; AES-256-GCM sealing of the
// pre-login and session cookies. ID token signatures go through proxy_jwt_crypto.c.
#include "roles/proxy/proxy_oidc.h"

#include <string.h>

#include "net/ossl.h"

#define NONCE_LEN 12
#define TAG_LEN 16

int proxy_oidc_random(uint8_t *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : -1;
}

void proxy_oidc_sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int ol = 32;
    EVP_Digest(p, n, out, &ol, EVP_sha256(), NULL);
}

int proxy_oidc_seal(const uint8_t key[PROXY_OIDC_KEY_LEN], const uint8_t *in, size_t n,
                    struct sc_str aad, uint8_t *out)
{
    if (proxy_oidc_random(out, NONCE_LEN) < 0) {
        return -1;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int l = 0,
        ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) == 1 &&
             (!aad.len ||
              EVP_EncryptUpdate(ctx, NULL, &l, (const unsigned char *)aad.p, (int)aad.len) == 1) &&
             EVP_EncryptUpdate(ctx, out + NONCE_LEN, &l, in, (int)n) == 1 &&
             EVP_EncryptFinal_ex(ctx, out + NONCE_LEN + l, &l) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + NONCE_LEN + n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* Opens nonce || ciphertext || tag <in> with <ctx> (set up with <cipher> and <key> first when
 * given; else its key schedule is kept and only the nonce changes). */
static long decrypt(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, const uint8_t *key,
                    const uint8_t *in, size_t n, struct sc_str aad, uint8_t *out)
{
    if (!ctx || n < NONCE_LEN + TAG_LEN) {
        return -1;
    }
    size_t cl = n - NONCE_LEN - TAG_LEN;
    int l = 0, ok = EVP_DecryptInit_ex2(ctx, cipher, key, in, NULL) == 1 &&
                    (!aad.len || EVP_DecryptUpdate(ctx, NULL, &l, (const unsigned char *)aad.p,
                                                   (int)aad.len) == 1) &&
                    EVP_DecryptUpdate(ctx, out, &l, in + NONCE_LEN, (int)cl) == 1 &&
                    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                        (void *)(in + NONCE_LEN + cl)) == 1 &&
                    EVP_DecryptFinal_ex(ctx, out + l, &l) == 1;
    return ok ? (long)cl : -1;
}

struct slot {
    EVP_CIPHER_CTX *ctx; /* the key schedule of <key>, kept */
    uint8_t key[PROXY_OIDC_KEY_LEN];
};

struct proxy_oidc_aead {
    EVP_CIPHER *cipher; /* fetched once */
    struct slot s[2];   /* the current and the previous key */
    unsigned next;
};

void proxy_oidc_aead_free(struct proxy_oidc_aead *a)
{
    if (!a) {
        return;
    }
    for (size_t i = 0; i < 2; i++) {
        EVP_CIPHER_CTX_free(a->s[i].ctx);
        OPENSSL_cleanse(a->s[i].key, sizeof(a->s[i].key));
    }
    EVP_CIPHER_free(a->cipher);
    OPENSSL_free(a);
}

/* The context of <a> holding <key>'s schedule, made on first use. */
static EVP_CIPHER_CTX *ctx_for(struct proxy_oidc_aead *a, const uint8_t *key)
{
    for (size_t i = 0; i < 2; i++) {
        if (a->s[i].ctx && memcmp(a->s[i].key, key, PROXY_OIDC_KEY_LEN) == 0) {
            return a->s[i].ctx;
        }
    }
    struct slot *s = &a->s[a->next++ % 2];
    EVP_CIPHER_CTX_free(s->ctx);
    s->ctx = EVP_CIPHER_CTX_new();
    if (s->ctx && EVP_DecryptInit_ex2(s->ctx, a->cipher, key, NULL, NULL) != 1) {
        EVP_CIPHER_CTX_free(s->ctx);
        s->ctx = NULL;
    }
    memcpy(s->key, key, PROXY_OIDC_KEY_LEN);
    return s->ctx;
}

long proxy_oidc_open_cached(struct proxy_oidc_aead **ap, const uint8_t key[PROXY_OIDC_KEY_LEN],
                            const uint8_t *in, size_t n, struct sc_str aad, uint8_t *out)
{
    if (!*ap) {
        struct proxy_oidc_aead *a = OPENSSL_zalloc(sizeof(*a));
        if (!a || !(a->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL))) {
            OPENSSL_free(a);
            return proxy_oidc_open(key, in, n, aad, out);
        }
        *ap = a;
    }
    if (n < NONCE_LEN + TAG_LEN) {
        return -1;
    }
    return decrypt(ctx_for(*ap, key), NULL, NULL, in, n, aad, out);
}

long proxy_oidc_open(const uint8_t key[PROXY_OIDC_KEY_LEN], const uint8_t *in, size_t n,
                     struct sc_str aad, uint8_t *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    long rc = decrypt(ctx, EVP_aes_256_gcm(), key, in, n, aad, out);
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}
