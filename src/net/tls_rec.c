// SPDX-License-Identifier: Apache-2.0
// The TLS 1.3 record layer after the handshake (see tls_rec.h): HKDF-Expand-Label as one HMAC
// over OpenSSL's digests, AEAD sealing and opening through one EVP context per direction, and the
// few post-handshake messages a peer may send (alerts, KeyUpdate; a server's NewSessionTickets to a
// client). Everything else is refused with
// the alert RFC 8446 names, so the caller's only choices are "deliver", "ignore" and "close".
#include "net/tls_rec.h"

#include <pthread.h>
#include <string.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/log.h"

#define TAG_LEN 16
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_DATA 23
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24
/* AES-GCM may protect 2^24.5 full records under one key (RFC 8446 section 5.5); we update ours
 * well before. ChaCha20-Poly1305 has no practical limit, and the same period costs nothing. */
#define REKEY_AFTER (1ULL << 24)

/* OpenSSL's algorithms, fetched once: an implicit fetch on every use (EVP_aes_128_gcm() passed to
 * an init, a digest by name) costs more than the operation itself, and a handshake makes six
 * derivations. Never freed (they live as long as the library). */
static EVP_MD *sha256, *sha384;
static EVP_CIPHER *aes128, *aes256, *chacha;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

/* Per thread, one digest context reused by every derivation (freed at thread exit). */
static pthread_key_t md_key;

static void md_ctx_free(void *p)
{
    EVP_MD_CTX_free(p);
}

static void fetch_all(void)
{
    pthread_key_create(&md_key, md_ctx_free);
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    aes128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    aes256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
}

/* H(<pad> || <a>) into <out> (the hash's length). */
static int digest2(EVP_MD_CTX *c, const EVP_MD *md, const unsigned char *pad, size_t plen,
                   const unsigned char *a, size_t alen, unsigned char *out)
{
    unsigned l = 0;
    return EVP_DigestInit_ex(c, md, NULL) == 1 && EVP_DigestUpdate(c, pad, plen) == 1 &&
                   EVP_DigestUpdate(c, a, alen) == 1 && EVP_DigestFinal_ex(c, out, &l) == 1
               ? 0
               : -1;
}

int sc_tls_hkdf_expand_label(const char *digest, const unsigned char *secret, size_t slen,
                             const char *label, const unsigned char *context, size_t clen,
                             unsigned char *out, size_t outlen)
{
    /* struct { uint16 length; opaque label<7..255> = "tls13 " + label; opaque context<0..255> } */
    unsigned char info[2 + 1 + 255 + 1 + 255];
    size_t llen = strlen(label);
    pthread_once(&fetch_once, fetch_all);
    bool is256 = strcmp(digest, "SHA256") == 0;
    const EVP_MD *md = is256 ? sha256 : strcmp(digest, "SHA384") == 0 ? sha384 : NULL;
    size_t hlen = is256 ? 32 : 48, block = is256 ? 64 : 128;
    /* TLS 1.3 expands at most one hash length (keys, IVs, secrets): HKDF-Expand is then T(1),
     * one HMAC with the secret as key, written out here over the digest (OpenSSL's KDF and MAC
     * objects cost several times the two hashes) */
    if (!md || outlen > hlen || slen > block || 6 + llen > 255 || clen > 255) {
        return -1;
    }
    size_t n = 0;
    info[n++] = (unsigned char)(outlen >> 8);
    info[n++] = (unsigned char)outlen;
    info[n++] = (unsigned char)(6 + llen);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, llen);
    n += llen;
    info[n++] = (unsigned char)clen;
    if (clen) {
        memcpy(info + n, context, clen);
        n += clen;
    }
    info[n++] = 1; /* T(1) = HMAC(PRK, T(0) | info | 0x01) */
    EVP_MD_CTX *c = pthread_getspecific(md_key);
    if (!c) {
        c = EVP_MD_CTX_new();
        if (!c) {
            return -1;
        }
        pthread_setspecific(md_key, c);
    }
    unsigned char pad[128], inner[48], t[48];
    memset(pad, 0x36, block);
    for (size_t i = 0; i < slen; i++) {
        pad[i] ^= secret[i];
    }
    int rc = digest2(c, md, pad, block, info, n, inner);
    for (size_t i = 0; i < block; i++) {
        pad[i] ^= 0x36 ^ 0x5c;
    }
    if (rc == 0) {
        rc = digest2(c, md, pad, block, inner, hlen, t);
    }
    if (rc == 0) {
        memcpy(out, t, outlen);
    }
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    OPENSSL_cleanse(t, sizeof(t));
    return rc;
}

/* Derives the key and IV of <d> from its secret and keys its AEAD context (made on first use). */
static int dir_key(struct sc_tls_rec *r, struct sc_tls_rec_dir *d, bool enc)
{
    unsigned char key[32];
    int rc = -1;
    if (sc_tls_hkdf_expand_label(r->digest, d->secret, r->hlen, "key", NULL, 0, key, r->klen) < 0 ||
        sc_tls_hkdf_expand_label(r->digest, d->secret, r->hlen, "iv", NULL, 0, d->iv, 12) < 0) {
        goto out;
    }
    const EVP_CIPHER *cipher = NULL;
    pthread_once(&fetch_once, fetch_all);
    if (!d->aead) {
        d->aead = EVP_CIPHER_CTX_new();
        if (!d->aead) {
            goto out;
        }
        cipher = r->chacha ? chacha : (r->klen == 16 ? aes128 : aes256);
        if (!cipher) {
            goto out;
        }
    }
    int ok = enc ? EVP_EncryptInit_ex(d->aead, cipher, NULL, key, NULL)
                 : EVP_DecryptInit_ex(d->aead, cipher, NULL, key, NULL);
    rc = ok == 1 ? 0 : -1;
out:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* Replaces the secret of <d> with the next generation (RFC 8446 section 7.2) and rekeys. */
static int dir_update(struct sc_tls_rec *r, struct sc_tls_rec_dir *d, bool enc)
{
    unsigned char next[SC_TLS_REC_SECRET_MAX];
    if (sc_tls_hkdf_expand_label(r->digest, d->secret, r->hlen, "traffic upd", NULL, 0, next,
                                 r->hlen) < 0) {
        return -1;
    }
    memcpy(d->secret, next, r->hlen);
    OPENSSL_cleanse(next, sizeof(next));
    d->seq = 0;
    return dir_key(r, d, enc);
}

int sc_tls_rec_init(struct sc_tls_rec *r, unsigned suite, const unsigned char *rsecret,
                    const unsigned char *wsecret, size_t slen)
{
    memset(r, 0, sizeof(*r));
    switch (suite) {
    case 0x1301:
        r->digest = "SHA256", r->hlen = 32, r->klen = 16;
        break;
    case 0x1302:
        r->digest = "SHA384", r->hlen = 48, r->klen = 32;
        break;
    case 0x1303:
        r->digest = "SHA256", r->hlen = 32, r->klen = 32, r->chacha = true;
        break;
    default:
        return -1;
    }
    if (slen != r->hlen) {
        return -1;
    }
    r->rekey_after = REKEY_AFTER;
    memcpy(r->rd.secret, rsecret, slen);
    memcpy(r->wr.secret, wsecret, slen);
    if (dir_key(r, &r->rd, false) < 0 || dir_key(r, &r->wr, true) < 0) {
        sc_tls_rec_cleanup(r);
        return -1;
    }
    return 0;
}

void sc_tls_rec_cleanup(struct sc_tls_rec *r)
{
    EVP_CIPHER_CTX_free(r->rd.aead);
    EVP_CIPHER_CTX_free(r->wr.aead);
    OPENSSL_cleanse(r, sizeof(*r));
}

static void nonce_of(const struct sc_tls_rec_dir *d, unsigned char nonce[12])
{
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++) {
        nonce[11 - i] ^= (unsigned char)(d->seq >> (8 * i));
    }
}

/* A failure of the cipher itself on our own output (not on input): only exhausted memory or a
 * broken library gets here, and a record cannot be left half made. */
static void seal_failed(void)
{
    sc_error("TLS: sealing a record failed inside OpenSSL");
    abort();
}

/* Seals one record of <type> from <iov> at <out>; returns its length. */
static size_t seal_one(struct sc_tls_rec *r, unsigned char type, const uv_buf_t *iov, unsigned n,
                       size_t total, unsigned char *out)
{
    EVP_CIPHER_CTX *c = r->wr.aead;
    size_t clen = total + 1 + TAG_LEN;
    out[0] = CT_DATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (unsigned char)(clen >> 8);
    out[4] = (unsigned char)clen;
    unsigned char nonce[12];
    nonce_of(&r->wr, nonce);
    unsigned char *q = out + 5;
    int l = 0;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(c, NULL, &l, out, 5) != 1) {
        seal_failed();
    }
    for (unsigned i = 0; i < n; i++) {
        if (iov[i].len == 0) {
            continue;
        }
        if (EVP_EncryptUpdate(c, q, &l, (const unsigned char *)iov[i].base, (int)iov[i].len) != 1) {
            seal_failed();
        }
        q += l;
    }
    if (EVP_EncryptUpdate(c, q, &l, &type, 1) != 1) {
        seal_failed();
    }
    q += l;
    if (EVP_EncryptFinal_ex(c, q, &l) != 1) {
        seal_failed();
    }
    q += l;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, q) != 1) {
        seal_failed();
    }
    r->wr.seq++;
    return 5 + clen;
}

/* Sends KeyUpdate(update_not_requested) under the current key, then moves to the next one. */
static size_t key_update(struct sc_tls_rec *r, unsigned char *out)
{
    unsigned char msg[5] = { HS_KEY_UPDATE, 0, 0, 1, 0 };
    uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg));
    size_t n = seal_one(r, CT_HANDSHAKE, &b, 1, sizeof(msg), out);
    if (dir_update(r, &r->wr, true) < 0) {
        seal_failed();
    }
    r->key_update_owed = false;
    return n;
}

size_t sc_tls_rec_owed(struct sc_tls_rec *r, unsigned char *out)
{
    return r->key_update_owed ? key_update(r, out) : 0;
}

size_t sc_tls_rec_seal(struct sc_tls_rec *r, unsigned char type, const uv_buf_t *iov, unsigned n,
                       size_t total, unsigned char *out)
{
    size_t pre = 0;
    if (r->key_update_owed || r->wr.seq >= r->rekey_after) {
        pre = key_update(r, out);
    }
    return pre + seal_one(r, type, iov, n, total, out + pre);
}

size_t sc_tls_rec_alert(struct sc_tls_rec *r, int desc, unsigned char *out)
{
    /* close_notify is a warning; every other alert we send is fatal (RFC 8446 section 6) */
    unsigned char a[2] = { desc == SC_TLS_ALERT_CLOSE_NOTIFY ? 1 : 2, (unsigned char)desc };
    uv_buf_t b = uv_buf_init((char *)a, 2);
    return sc_tls_rec_seal(r, CT_ALERT, &b, 1, 2, out);
}

static enum sc_tls_rec_ev refuse(struct sc_tls_rec_in *in, int alert, const char *why)
{
    in->alert = alert;
    in->why = why;
    return SC_TLS_REC_FAIL;
}

/* Checks the body of a NewSessionTicket (RFC 8446 section 4.6.1): lifetime, age_add,
 * nonce<0..255>, ticket<1..2^16-1>, extensions<0..2^16-2> as a list of type/length/value, and
 * nothing after. Returns whether it is well formed. */
static bool ticket_ok(const unsigned char *p, size_t len)
{
    size_t i = 8;
    if (len < i + 1 || len < i + 1 + p[i]) {
        return false;
    }
    i += 1 + p[i];
    if (len < i + 2) {
        return false;
    }
    size_t tl = (size_t)p[i] << 8 | p[i + 1];
    i += 2;
    if (tl == 0 || len < i + tl + 2) {
        return false;
    }
    i += tl;
    size_t el = (size_t)p[i] << 8 | p[i + 1];
    i += 2;
    if (len != i + el) {
        return false;
    }
    while (i < len) {
        if (len - i < 4) {
            return false;
        }
        size_t xl = (size_t)p[i + 2] << 8 | p[i + 3];
        i += 4;
        if (len - i < xl) {
            return false;
        }
        i += xl;
    }
    return true;
}

/* The handshake messages of one record after the handshake (RFC 8446 section 5.1: several may
 * share it; a message before a key change must end it). A server accepts only KeyUpdate; a
 * client also NewSessionTicket, which it drops: sessions are resumed from tickets OpenSSL kept
 * before the takeover. */
static enum sc_tls_rec_ev on_handshake(struct sc_tls_rec *r, const unsigned char *p, size_t len,
                                       struct sc_tls_rec_in *in)
{
    if (len == 0) {
        return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "an empty handshake record");
    }
    while (len > 0) {
        if (len < 4) {
            return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "a split handshake message");
        }
        size_t mlen = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (p[0] == HS_NEW_SESSION_TICKET && r->client) {
            if (len - 4 < mlen) {
                return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "a split handshake message");
            }
            if (!ticket_ok(p + 4, mlen)) {
                return refuse(in, SC_TLS_ALERT_DECODE_ERROR, "a malformed NewSessionTicket");
            }
            p += 4 + mlen;
            len -= 4 + mlen;
            continue;
        }
        if (p[0] != HS_KEY_UPDATE) {
            return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE,
                          r->client
                              ? "a handshake message other than KeyUpdate or "
                                "NewSessionTicket after the handshake"
                              : "a handshake message other than KeyUpdate after the handshake");
        }
        if (mlen != 1) {
            return refuse(in, SC_TLS_ALERT_DECODE_ERROR, "a KeyUpdate of the wrong length");
        }
        if (len != 5) {
            return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE,
                          "a KeyUpdate that does not end its record");
        }
        if (p[4] > 1) {
            return refuse(in, SC_TLS_ALERT_ILLEGAL_PARAMETER,
                          "a KeyUpdate with a bad request value");
        }
        if (dir_update(r, &r->rd, false) < 0) {
            return refuse(in, SC_TLS_ALERT_INTERNAL_ERROR, "the read key could not be updated");
        }
        if (p[4] == 1) {
            r->key_update_owed = true;
        }
        return SC_TLS_REC_NONE;
    }
    return SC_TLS_REC_NONE;
}

enum sc_tls_rec_ev sc_tls_rec_open(struct sc_tls_rec *r, unsigned char *p, size_t avail,
                                   struct sc_tls_rec_in *in)
{
    memset(in, 0, sizeof(*in));
    if (avail < 5) {
        return SC_TLS_REC_MORE;
    }
    size_t len = (size_t)p[3] << 8 | p[4];
    if (p[0] != CT_DATA) {
        /* change_cipher_spec is allowed only during the handshake; everything else is protected
         * and so arrives as application_data (RFC 8446 section 5) */
        return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "an unprotected record");
    }
    if (len > SC_TLS_REC_CIPHER_MAX) {
        return refuse(in, SC_TLS_ALERT_RECORD_OVERFLOW, "a record above the size limit");
    }
    if (avail < 5 + len) {
        return SC_TLS_REC_MORE;
    }
    in->used = 5 + len;
    if (len < 1 + TAG_LEN) {
        return refuse(in, SC_TLS_ALERT_BAD_RECORD_MAC, "a record too short for its tag");
    }
    if (r->rd.seq == UINT64_MAX) {
        return refuse(in, SC_TLS_ALERT_INTERNAL_ERROR, "the read sequence number would wrap");
    }
    EVP_CIPHER_CTX *c = r->rd.aead;
    unsigned char nonce[12];
    nonce_of(&r->rd, nonce);
    unsigned char *body = p + 5;
    size_t blen = len - TAG_LEN;
    int l = 0, l2 = 0;
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(c, NULL, &l, p, 5) != 1 ||
        EVP_DecryptUpdate(c, body, &l, body, (int)blen) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, body + blen) != 1 ||
        EVP_DecryptFinal_ex(c, body + l, &l2) != 1 || (size_t)(l + l2) != blen) {
        return refuse(in, SC_TLS_ALERT_BAD_RECORD_MAC, "a record failed authentication");
    }
    r->rd.seq++;
    /* TLSInnerPlaintext: content, the real type, then zero padding */
    size_t i = blen;
    while (i > 0 && body[i - 1] == 0) {
        i--;
    }
    if (i == 0) {
        return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "a record without a content type");
    }
    unsigned char type = body[i - 1];
    size_t plen = i - 1;
    if (plen > SC_TLS_REC_PLAIN_MAX) {
        return refuse(in, SC_TLS_ALERT_RECORD_OVERFLOW, "a plaintext above the size limit");
    }
    switch (type) {
    case CT_DATA:
        in->data = body;
        in->len = plen;
        return SC_TLS_REC_DATA;
    case CT_ALERT:
        if (plen != 2) {
            return refuse(in, SC_TLS_ALERT_DECODE_ERROR, "a malformed alert");
        }
        if (body[1] == SC_TLS_ALERT_CLOSE_NOTIFY) {
            return SC_TLS_REC_CLOSE;
        }
        if (body[1] == SC_TLS_ALERT_USER_CANCELED) {
            return SC_TLS_REC_NONE; /* a close_notify follows */
        }
        in->alert = body[1];
        in->why = "the peer sent a fatal alert";
        return SC_TLS_REC_ALERT;
    case CT_HANDSHAKE:
        return on_handshake(r, body, plen, in);
    default:
        return refuse(in, SC_TLS_ALERT_UNEXPECTED_MESSAGE, "a record of an unexpected type");
    }
}
