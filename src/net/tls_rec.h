// SPDX-License-Identifier: Apache-2.0
// The TLS 1.3 record layer after the handshake (RFC 8446 section 5), kept apart from the transport
// so that it can be tested against known vectors and fuzzed: one AEAD context per direction keyed
// from a traffic secret (HKDF-Expand-Label, section 7.1/7.3), records sealed and opened in place
// with the per-record nonce (section 5.3), the inner content type and padding (section 5.2),
// alerts (section 6) and KeyUpdate (section 4.6.3) in both directions.
//
// Key invariants: nothing is reported before its record's tag verified; every malformed or
// unexpected record is fatal and names the alert to send (fail closed); a direction never reuses
// a nonce (the write side rekeys itself before the AEAD's record limit, the read side refuses to
// wrap its sequence number); secrets and keys are wiped when replaced or freed.
#ifndef SC_NET_TLS_REC_H
#define SC_NET_TLS_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define SC_TLS_REC_PLAIN_MAX 16384                      /* plaintext bytes per record (2^14) */
#define SC_TLS_REC_CIPHER_MAX (16384 + 256)             /* body of a protected record, at most */
#define SC_TLS_REC_OVERHEAD (5 + 1 + 16)                /* header, inner type, tag */
#define SC_TLS_REC_KEY_UPDATE (SC_TLS_REC_OVERHEAD + 5) /* one KeyUpdate record */
/* What sc_tls_rec_seal may write for <n> plaintext bytes (a KeyUpdate may precede the record). */
#define SC_TLS_REC_SEAL_MAX(n) ((n) + SC_TLS_REC_OVERHEAD + SC_TLS_REC_KEY_UPDATE)
#define SC_TLS_REC_SECRET_MAX 48 /* SHA-384 */

/* Alert descriptions (RFC 8446 section 6). */
enum {
    SC_TLS_ALERT_CLOSE_NOTIFY = 0,
    SC_TLS_ALERT_UNEXPECTED_MESSAGE = 10,
    SC_TLS_ALERT_BAD_RECORD_MAC = 20,
    SC_TLS_ALERT_RECORD_OVERFLOW = 22,
    SC_TLS_ALERT_DECODE_ERROR = 50,
    SC_TLS_ALERT_INTERNAL_ERROR = 80,
    SC_TLS_ALERT_USER_CANCELED = 90,
    SC_TLS_ALERT_ILLEGAL_PARAMETER = 47,
};

/* One direction: its AEAD context (key set), static IV, record sequence number and the traffic
 * secret the next KeyUpdate derives from. */
struct sc_tls_rec_dir {
    void *aead; /* EVP_CIPHER_CTX */
    uint64_t seq;
    unsigned char iv[12];
    unsigned char secret[SC_TLS_REC_SECRET_MAX];
};

struct sc_tls_rec {
    struct sc_tls_rec_dir rd, wr;
    const char *digest; /* "SHA256" or "SHA384" */
    unsigned char hlen; /* secret length */
    unsigned char klen; /* key length */
    bool chacha;
    bool client;          /* set by the caller: NewSessionTicket is accepted (and dropped) */
    bool key_update_owed; /* the peer asked for our KeyUpdate and it is not sent yet */
    uint64_t rekey_after; /* write records under one key before we update it ourselves */
};

/* What one record brought. */
enum sc_tls_rec_ev {
    SC_TLS_REC_MORE,  /* the record is not complete yet: nothing consumed */
    SC_TLS_REC_DATA,  /* application data (may be empty) at data/len */
    SC_TLS_REC_NONE,  /* a record for the layer itself (KeyUpdate, tickets, user_canceled) */
    SC_TLS_REC_CLOSE, /* the peer's close_notify */
    SC_TLS_REC_ALERT, /* the peer sent a fatal alert (<alert>); send nothing back */
    SC_TLS_REC_FAIL,  /* fatal: send <alert>, then close */
};

struct sc_tls_rec_in {
    size_t used;         /* input bytes the record took */
    unsigned char *data; /* SC_TLS_REC_DATA: the plaintext, inside the input */
    size_t len;
    int alert;       /* SC_TLS_REC_FAIL: the alert to send; SC_TLS_REC_ALERT: the one received */
    const char *why; /* SC_TLS_REC_FAIL / ALERT: static text for logs */
};

/* Derives HKDF-Expand-Label(<secret>, <label>, <context>, <outlen>) (RFC 8446 section 7.1; the
 * "tls13 " prefix is added here) with the hash <digest> ("SHA256", "SHA384"). Returns 0, or -1
 * for an unknown digest, <outlen> above the hash's length (TLS 1.3 never asks for more), a secret
 * longer than the hash's block or a label or context above 255 bytes. */
int sc_tls_hkdf_expand_label(const char *digest, const unsigned char *secret, size_t slen,
                             const char *label, const unsigned char *context, size_t clen,
                             unsigned char *out, size_t outlen);

/* Sets up <r> for the cipher suite <suite> (0x1301 TLS_AES_128_GCM_SHA256, 0x1302
 * TLS_AES_256_GCM_SHA384, 0x1303 TLS_CHACHA20_POLY1305_SHA256) from the traffic secrets the
 * handshake produced: <rsecret> opens what the peer sends, <wsecret> seals ours (<slen> bytes
 * each, the suite's hash length). Sequence numbers start at 0. Returns 0, or -1 for another suite
 * or a wrong secret length (then <r> holds nothing to clean up). */
int sc_tls_rec_init(struct sc_tls_rec *r, unsigned suite, const unsigned char *rsecret,
                    const unsigned char *wsecret, size_t slen);

/* Frees the AEAD contexts and wipes the secrets. Safe on a zeroed or cleaned-up <r>. */
void sc_tls_rec_cleanup(struct sc_tls_rec *r);

/* Opens the record at the start of <p> (<avail> bytes there) in place and tells what it brought
 * (see enum sc_tls_rec_ev; <in> says where and how much). A KeyUpdate from the peer updates the
 * read key here; when it asks for ours, key_update_owed is set and the next seal (or
 * sc_tls_rec_owed) sends it. On a client (<client> set), NewSessionTicket messages (several may
 * share a record) are checked for their structure and dropped; a handshake message split across
 * records is refused. */
enum sc_tls_rec_ev sc_tls_rec_open(struct sc_tls_rec *r, unsigned char *p, size_t avail,
                                   struct sc_tls_rec_in *in);

/* Seals the <n> pieces of <iov> (<total> bytes, at most SC_TLS_REC_PLAIN_MAX) as one record of
 * inner type <type> (23 data, 21 alert, 22 handshake) at <out>, which has room for
 * SC_TLS_REC_SEAL_MAX(total). An owed KeyUpdate, or one our record limit calls for, goes first.
 * Returns the bytes written. */
size_t sc_tls_rec_seal(struct sc_tls_rec *r, unsigned char type, const uv_buf_t *iov, unsigned n,
                       size_t total, unsigned char *out);

/* Seals the alert <desc> (close_notify, or a fatal one) at <out> (room for
 * SC_TLS_REC_SEAL_MAX(2)). Returns the bytes written. */
size_t sc_tls_rec_alert(struct sc_tls_rec *r, int desc, unsigned char *out);

/* Sends an owed KeyUpdate at <out> (room for SC_TLS_REC_KEY_UPDATE) and updates the write key.
 * Returns the bytes written (0: none was owed). */
size_t sc_tls_rec_owed(struct sc_tls_rec *r, unsigned char *out);

#endif
