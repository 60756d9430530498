// SPDX-License-Identifier: Apache-2.0
// The TLS transport layer's connection state, shared by tls_xport.c (OpenSSL's side: handshakes,
// and records for TLS 1.2 or when the native layer is off) and tls_native.c (the takeover after
// a TLS 1.3 handshake, and the records it carries afterwards). Nothing else includes this.
#ifndef SC_NET_TLS_XPORT_INT_H
#define SC_NET_TLS_XPORT_INT_H

#include "net/tls_int.h"
#include "net/tls_rec.h"

#define TLS_REC 16384                     /* plaintext bytes per record */
#define REC_MAX (TLS_REC + 256)           /* a record with header, nonce, tag and padding */
#define IN_CAP (TLS_REC + 2048)           /* what one read from below may bring */
#define OUT_SLACK 4096                    /* room kept for alerts, tickets, key updates */
#define OUT_CAP (2 * REC_MAX + OUT_SLACK) /* ciphertext collected for one write below */

struct tls_x {
    struct sc_xport base; /* next: the layer below; cbs/owner: ours above */
    struct sc_tls_ctx *ctx;
    SSL *ssl;
    uv_loop_t *loop;
    uv_idle_t *idle; /* made on first need: runs deferred work on the next loop turn */

    /* ciphertext in: leftovers [in_off, in_len) of <in>, or, while a read is processed, the
     * scratch bytes [src, src + src_len) */
    char *in;
    size_t in_off, in_len, in_cap;
    char *src;
    size_t src_len;
    bool scratch_given;

    /* ciphertext out: [0, pend_len) is below, [pend_len, out_len) waits */
    char *out;
    size_t out_len, pend_len;

    /* the owner's pending write */
    uv_buf_t wv_inline[4];
    uv_buf_t *wv;
    unsigned wn, wi;
    size_t woff;
    size_t wretry; /* length of an SSL_write to repeat after WANT_WRITE */

    char *sni;
    char *sess_key;
    char *peer_id;
    const char *fail_text;
    enum sc_tls_fail fail;
    int err;       /* the error reported for a failure */
    int below_err; /* what below's read ended with (UV_EOF or an error) */
    unsigned char first_byte;

    bool server;
    bool handshake_cb;
    bool hs_started;
    bool hs_done;
    bool connecting;    /* the owner's connect has not been answered */
    bool start_pending; /* client: start the handshake on the next idle turn */
    bool reading;       /* the owner wants reads */
    bool below_reading;
    bool below_wpending;
    bool owner_wpending;
    bool read_blocked; /* SSL_read wanted to write while a write was pending */
    bool shutdown_pending;
    bool sent_shutdown;
    bool got_close_notify;
    bool got_eof;
    bool eof_reported;
    bool fatal;
    bool fail_reported;
    bool first_seen;
    bool closing;
    bool in_pump;

    /* The native record layer (native contexts, TLS 1.3): <hs> follows the handshake (secrets
     * from the key log, records OpenSSL wrote and read); at the takeover the SSL object is freed
     * (ssl is NULL) and <rec> carries the records, with what queries need kept here. */
    struct native_hs *hs;
    struct sc_tls_rec *rec;
    char *plain; /* decrypted bytes not yet delivered: in the read buffer, or in <pbuf> */
    size_t plain_len;
    char *pbuf;
    char *alpn;
    size_t alpn_len;
    const char *version, *cipher; /* OpenSSL's static names */
    X509 *peer;                   /* the verified peer certificate, or NULL */
    int cert_idx;
    bool resumed;
};

/* The record framing of one direction of what OpenSSL carried: records complete so far, and
 * where the current one stands. */
struct native_frames {
    uint64_t rec;  /* records complete */
    uint64_t mark; /* ... when OpenSSL switched this direction to the application key */
    size_t have;   /* bytes of the current record's header seen */
    size_t body;   /* bytes of the current record's body still to come */
    unsigned char hdr[5];
    bool marked; /* mark is set */
};

/* What the takeover needs to know of a handshake in progress (and, on a client, of what OpenSSL
 * carried after it until the takeover). */
struct native_hs {
    unsigned char csecret[SC_TLS_REC_SECRET_MAX], ssecret[SC_TLS_REC_SECRET_MAX];
    size_t clen, slen;
    struct native_frames wr; /* what OpenSSL wrote */
    struct native_frames rd; /* what OpenSSL read (clients: the tickets before the takeover) */
    unsigned tickets;        /* client: NewSessionTickets OpenSSL processed */
    bool data_in;            /* client: OpenSSL delivered application data */
    bool bad;                /* something we cannot account for: stay on OpenSSL */
};

/* tls_xport.c */
/* Returns this thread's spare output buffer (OUT_CAP bytes), or a new one. */
char *sc__tlsx_out_acquire(void);
/* Returns <x>'s output buffer to the thread's spare (or frees it). */
void sc__tlsx_out_release(struct tls_x *x);
/* Sends the collected ciphertext below unless a write is pending there: 0 (sent or nothing to
 * send), 1 (below queued it) or a negative error. */
int sc__tlsx_flush(struct tls_x *x);
/* Asks the owner for the next read buffer. Returns false when the owner closed, stopped reading
 * or has no room (then UV_ENOBUFS was reported). */
bool sc__tlsx_owner_buf(struct tls_x *x, uv_buf_t *b);
/* The layer running <ssl>, or NULL when <ssl> is not one of the layer's. */
struct tls_x *sc__tlsx_of(const SSL *ssl);
/* Ciphertext bytes waiting to be read. */
size_t sc__tlsx_avail(const struct tls_x *x);
/* Records the failure <f> and reports it (connected or read, see tls_xport.c). */
void sc__tlsx_fail(struct tls_x *x, enum sc_tls_fail f, const char *text, int err);

/* tls_native.c */
/* Follows the framing of <n> bytes OpenSSL wrote or read. */
void sc__tlsx_count_records(struct native_frames *f, const unsigned char *p, size_t n);
/* At the end of a server handshake, or on a client once settled (see sc__tlsx_native_settle):
 * moves the connection to the native layer when that is exact (x->rec set, x->ssl freed), or
 * leaves it on OpenSSL. Frees x->hs either way. */
void sc__tlsx_takeover(struct tls_x *x);
/* Client, after its handshake and after each pass of OpenSSL's reads: takes the connection over
 * when the server's tickets are in (or its first data, or at once when the connection resumes no
 * sessions) and the record state is exact; gives up (x->hs freed, OpenSSL keeps it) when it can
 * never be exact (TLS 1.2, a KeyUpdate or another message OpenSSL handled). */
void sc__tlsx_native_settle(struct tls_x *x);
/* Makes the native state of client connection <x> (native context) before its handshake. */
void sc__tlsx_native_client(struct tls_x *x);
/* Seals the alert <desc> (>= 0) or an owed KeyUpdate (-1) into the output. */
void sc__tlsx_native_send(struct tls_x *x, int desc);
/* Delivers decrypted bytes to the owner while it reads (the native pump). */
void sc__tlsx_native_deliver(struct tls_x *x);
/* Seals the next record of the owner's pending write into the output (room checked). */
void sc__tlsx_native_seal(struct tls_x *x);
/* Answers <q> from what the takeover kept: 0, or 1 when the generic answer applies. */
int sc__tlsx_native_query(struct tls_x *x, enum sc_xq q, void *out);

#endif
