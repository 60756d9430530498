// SPDX-License-Identifier: Apache-2.0
// The native record layer in the TLS transport (see tls.h, enum sc_tls_record_layer): after a
// TLS 1.3 handshake (a server at its end; a client once the server's session tickets are in) the
// connection's application traffic secrets (from OpenSSL's key log) and record sequence numbers
// (counted from what OpenSSL wrote and read) move to net/tls_rec.c, the SSL object is freed, and
// records are opened in place in the read buffer and sealed straight into the output. Key
// invariant: a connection moves only when its record state is known exactly (no record half read
// or half written, nothing read ahead, no key OpenSSL updated); otherwise OpenSSL keeps it.
#include "net/tls_xport_int.h"

#include <string.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/log.h"

/* Follows the record framing of what OpenSSL writes or reads, so that the takeover knows how many
 * records went each way under the application keys (the session tickets). */
void sc__tlsx_count_records(struct native_frames *f, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (f->body > 0) {
            size_t t = n < f->body ? n : f->body;
            f->body -= t;
            p += t;
            n -= t;
            f->rec += f->body == 0;
            continue;
        }
        f->hdr[f->have++] = *p++;
        n--;
        if (f->have == 5) {
            f->have = 0;
            f->body = (size_t)f->hdr[3] << 8 | f->hdr[4];
            f->rec += f->body == 0;
        }
    }
}

/* ---- the native record layer (TLS 1.3) ---------------------------------------------------- */

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Notes that OpenSSL switched the direction <f> to its application key: the records it carries
 * from here on count for the takeover's sequence number. A record half carried then is a state
 * we cannot account for. */
static void mark(struct native_hs *h, struct native_frames *f)
{
    f->mark = f->rec;
    f->marked = true;
    h->bad |= f->have != 0 || f->body != 0;
}

void sc__tls_on_keylog(const SSL *ssl, const char *line)
{
    struct tls_x *x = sc__tlsx_of(ssl);
    struct native_hs *h = x ? x->hs : NULL;
    if (!h || x->hs_done) {
        return;
    }
    static const char cl[] = "CLIENT_TRAFFIC_SECRET_0 ", sl[] = "SERVER_TRAFFIC_SECRET_0 ";
    bool client = strncmp(line, cl, sizeof(cl) - 1) == 0;
    if (!client && strncmp(line, sl, sizeof(sl) - 1) != 0) {
        return;
    }
    const char *hex = strchr(line + sizeof(cl) - 1, ' '); /* after the client random */
    size_t n = hex ? strlen(++hex) / 2 : 0;
    unsigned char *out = client ? h->csecret : h->ssecret;
    if (n == 0 || n > SC_TLS_REC_SECRET_MAX || hex[2 * n] != '\0') {
        h->bad = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = unhex(hex[2 * i]), lo = unhex(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            h->bad = true;
            return;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    *(client ? &h->clen : &h->slen) = n;
    /* OpenSSL logs a side's secret when it switches that side's key: our own after writing our
     * Finished record (before a server's tickets), the peer's after reading its Finished. A
     * server reads nothing more before the takeover, so only a client marks its read side. */
    if (client != x->server) {
        mark(h, &h->wr);
    } else if (!x->server) {
        mark(h, &h->rd);
    }
}

/* OpenSSL's message callback on a native client until the takeover: the post-handshake messages
 * it processes. Tickets are expected; a KeyUpdate (either way) changes a key we would not know,
 * and anything else is a state we do not follow, so the connection stays on OpenSSL. */
static void on_msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                   void *arg)
{
    (void)version;
    (void)arg;
    if (type != SSL3_RT_HANDSHAKE || len == 0) {
        return; /* record headers, inner content types, alerts */
    }
    struct tls_x *x = sc__tlsx_of(ssl);
    if (!x || !x->hs || !x->hs_done) {
        return;
    }
    if (!write_p && *(const unsigned char *)buf == SSL3_MT_NEWSESSION_TICKET) {
        x->hs->tickets++;
    } else {
        x->hs->bad = true;
    }
}

void sc__tlsx_native_client(struct tls_x *x)
{
    x->hs = SC_NEW(struct native_hs);
    SSL_set_msg_callback(x->ssl, on_msg);
}

/* Frees the handshake's state and its secrets. */
static void hs_free(struct tls_x *x)
{
    if (x->hs) {
        OPENSSL_cleanse(x->hs, sizeof(*x->hs));
        sc_free(x->hs);
        x->hs = NULL;
    }
}

void sc__tlsx_native_settle(struct tls_x *x)
{
    struct native_hs *h = x->hs;
    if (h->bad || !h->wr.marked || !h->rd.marked || SSL_version(x->ssl) != TLS1_3_VERSION ||
        x->fatal || x->got_close_notify || x->eof_reported) {
        hs_free(x);
        SSL_set_msg_callback(x->ssl, NULL);
        return;
    }
    /* a connection that resumes sessions waits for the server's tickets (they come right after
     * the handshake, before its data, from the servers we know), so that OpenSSL keeps them */
    bool want_ticket = x->ctx->sessions && x->sess_key;
    if (want_ticket && h->tickets == 0 && !h->data_in) {
        return;
    }
    /* exact: no record half read or half written (by OpenSSL or by our write retry) */
    if (h->rd.have || h->rd.body || h->wr.have || h->wr.body || x->wretry ||
        SSL_has_pending(x->ssl)) {
        return;
    }
    sc__tlsx_takeover(x);
}

/* At the end of a TLS 1.3 handshake (server) or once settled (client), moves the connection's
 * records from OpenSSL to tls_rec.c and frees the SSL object, when its state is known exactly:
 * the application secrets seen, no record half read or half written, nothing read ahead.
 * Otherwise OpenSSL keeps the connection. */
void sc__tlsx_takeover(struct tls_x *x)
{
    struct native_hs *h = x->hs;
    const SSL_CIPHER *c = SSL_get_current_cipher(x->ssl);
    struct sc_tls_rec *r = NULL;
    if (!h->bad && h->wr.marked && h->clen > 0 && h->clen == h->slen && h->wr.have == 0 &&
        h->wr.body == 0 && h->rd.have == 0 && h->rd.body == 0 && c &&
        SSL_version(x->ssl) == TLS1_3_VERSION && !SSL_has_pending(x->ssl)) {
        r = SC_NEW(struct sc_tls_rec);
        const unsigned char *rs = x->server ? h->csecret : h->ssecret;
        const unsigned char *ws = x->server ? h->ssecret : h->csecret;
        if (sc_tls_rec_init(r, SSL_CIPHER_get_protocol_id(c) & 0xffff, rs, ws, h->clen) < 0) {
            sc_free(r);
            r = NULL;
        } else {
            r->client = !x->server;
            /* records OpenSSL carried under the application keys: a server's tickets; a
             * client's first requests and the tickets and data it read */
            r->wr.seq = h->wr.rec - h->wr.mark;
            r->rd.seq = x->server ? 0 : h->rd.rec - h->rd.mark;
        }
    }
    hs_free(x);
    if (!r) {
        if (!x->server) {
            SSL_set_msg_callback(x->ssl, NULL);
        }
        return;
    }
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(x->ssl, &alpn, &alen);
    if (alen) {
        x->alpn = sc_strndup((const char *)alpn, alen);
        x->alpn_len = alen;
    }
    if (x->server) {
        x->sni = sc_strdup(SSL_get_servername(x->ssl, TLSEXT_NAMETYPE_host_name));
        x->cert_idx = sc_tls_xport_cert_index(&x->base);
    } else {
        x->cert_idx = -1;
    }
    x->version = SSL_get_version(x->ssl);
    x->cipher = SSL_CIPHER_standard_name(c);
    x->resumed = SSL_session_reused(x->ssl);
    if (SSL_get_verify_mode(x->ssl) != SSL_VERIFY_NONE &&
        SSL_get_verify_result(x->ssl) == X509_V_OK) {
        x->peer = SSL_get1_peer_certificate(x->ssl);
    }
    /* the session stays resumable (OpenSSL drops it from the cache when an SSL object that did
     * not shut down is freed) */
    SSL_set_shutdown(x->ssl, SSL_get_shutdown(x->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(x->ssl);
    x->ssl = NULL;
    x->rec = r;
}

/* Seals an alert (<desc> >= 0) or the KeyUpdate the peer asked for (-1) into the output. */
void sc__tlsx_native_send(struct tls_x *x, int desc)
{
    if (!x->out) {
        x->out = sc__tlsx_out_acquire();
        x->out_len = x->pend_len = 0;
    }
    /* pump_write leaves OUT_SLACK free; only a peer that keeps asking for KeyUpdates while not
     * reading gets here without room, and then its update waits (it stays owed) */
    if (OUT_CAP - x->out_len >= SC_TLS_REC_SEAL_MAX(2)) {
        unsigned char *o = (unsigned char *)x->out + x->out_len;
        x->out_len += desc >= 0 ? sc_tls_rec_alert(x->rec, desc, o) : sc_tls_rec_owed(x->rec, o);
    }
    if (x->out_len == 0) {
        sc__tlsx_out_release(x);
    }
}

static void consume(struct tls_x *x, size_t n)
{
    if (x->src) {
        x->src += n;
        x->src_len -= n;
    } else {
        x->in_off += n;
    }
}

/* Fails <x> on the fatal alert <desc> the peer sent, with the reason OpenSSL's classification
 * gives it (a TLS 1.3 server refuses a client's certificate after the client's handshake ended, so
 * a client learns it here). */
static void peer_alert(struct tls_x *x, int desc)
{
    static const struct {
        unsigned char desc;
        enum sc_tls_fail f;
        const char *text;
    } known[] = {
        { 116, SC_TLS_FAIL_NO_CLIENT_CERT, "tlsv13 alert certificate required" },
        { 48, SC_TLS_FAIL_UNKNOWN_CA, "tlsv1 alert unknown ca" },
        { 45, SC_TLS_FAIL_EXPIRED, "sslv3 alert certificate expired" },
        { 42, SC_TLS_FAIL_BAD_CERT, "sslv3 alert bad certificate" },
        { 43, SC_TLS_FAIL_BAD_CERT, "sslv3 alert unsupported certificate" },
        { 44, SC_TLS_FAIL_BAD_CERT, "sslv3 alert certificate revoked" },
        { 46, SC_TLS_FAIL_BAD_CERT, "sslv3 alert certificate unknown" },
        { 70, SC_TLS_FAIL_PROTOCOL_VERSION, "tlsv1 alert protocol version" },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(known); i++) {
        if (known[i].desc == desc) {
            sc__tlsx_fail(x, known[i].f, known[i].text, UV_EPROTO);
            return;
        }
    }
    sc__tlsx_fail(x, SC_TLS_FAIL_PROTOCOL, "the peer sent a fatal alert", UV_EPROTO);
}

/* Opens the next record in place. Returns true when one was consumed (<plain> may now hold
 * data), false when there is nothing more to do now (incomplete, end, failure). */
static bool native_open(struct tls_x *x)
{
    size_t n = sc__tlsx_avail(x);
    unsigned char *p = (unsigned char *)(x->src ? x->src : x->in + x->in_off);
    struct sc_tls_rec_in in;
    enum sc_tls_rec_ev ev = n ? sc_tls_rec_open(x->rec, p, n, &in) : SC_TLS_REC_MORE;
    consume(x, ev == SC_TLS_REC_MORE ? 0 : in.used);
    switch (ev) {
    case SC_TLS_REC_MORE:
        if (x->got_eof) {
            x->eof_reported = true;
            x->base.cbs->read(x->base.owner, x->below_err ? x->below_err : UV_EOF);
        }
        return false;
    case SC_TLS_REC_DATA:
        x->plain = (char *)in.data;
        x->plain_len = in.len;
        return true;
    case SC_TLS_REC_NONE:
        sc__tlsx_native_send(x, -1);
        return true;
    case SC_TLS_REC_CLOSE:
        x->got_close_notify = true;
        x->eof_reported = true;
        x->base.cbs->read(x->base.owner, UV_EOF);
        return false;
    case SC_TLS_REC_ALERT:
        sc_debug("TLS: the peer sent fatal alert %d", in.alert);
        peer_alert(x, in.alert);
        return false;
    case SC_TLS_REC_FAIL:
        /* the alert goes out now: the owner closes the layer on the failure we report */
        sc__tlsx_native_send(x, in.alert);
        (void)sc__tlsx_flush(x);
        /* fall through */
    default:
        sc_debug("TLS: closing a connection: %s (alert %d)", in.why, in.alert);
        sc__tlsx_fail(x, SC_TLS_FAIL_PROTOCOL, in.why, UV_EPROTO);
        return false;
    }
}

/* Delivers decrypted bytes while the owner reads, opening records as needed. Leftovers move to
 * their own buffer, since the read buffer they sit in is reused or moved before the next pass. */
void sc__tlsx_native_deliver(struct tls_x *x)
{
    const struct sc_xport_cbs *cbs = x->base.cbs;
    while (x->reading && !x->closing && !x->fatal && !x->eof_reported) {
        if (x->plain_len == 0) {
            if (!native_open(x)) {
                break;
            }
            continue;
        }
        uv_buf_t b;
        if (!sc__tlsx_owner_buf(x, &b)) {
            break;
        }
        size_t n = b.len < x->plain_len ? b.len : x->plain_len;
        memcpy(b.base, x->plain, n);
        x->plain += n;
        x->plain_len -= n;
        cbs->read(x->base.owner, (ssize_t)n);
    }
    if (x->fatal && x->reading && !x->fail_reported && !x->closing) {
        x->fail_reported = true;
        cbs->read(x->base.owner, x->err);
    }
    if (x->plain_len > 0 && x->plain != x->pbuf) {
        char *keep = sc_malloc(x->plain_len);
        memcpy(keep, x->plain, x->plain_len);
        sc_free(x->pbuf);
        x->pbuf = x->plain = keep;
    } else if (x->plain_len == 0) {
        sc_free(x->pbuf);
        x->pbuf = x->plain = NULL;
    }
    if (x->in && x->in_off == x->in_len) {
        sc_free(x->in);
        x->in = NULL;
        x->in_off = x->in_len = x->in_cap = 0;
    }
}

/* Seals the next record of the owner's pending plaintext (up to a full record, gathered across
 * its pieces) into the output, which has room for it. */
void sc__tlsx_native_seal(struct tls_x *x)
{
    if (!x->out) {
        x->out = sc__tlsx_out_acquire();
        x->out_len = x->pend_len = 0;
    }
    uv_buf_t piece[8];
    unsigned np = 0;
    size_t total = 0;
    while (x->wi < x->wn && np < SC_ARRAY_LEN(piece) && total < TLS_REC) {
        uv_buf_t *b = &x->wv[x->wi];
        size_t take = b->len - x->woff;
        if (take > TLS_REC - total) {
            take = TLS_REC - total;
        }
        if (take > 0) {
            piece[np++] = uv_buf_init(b->base + x->woff, (unsigned)take);
            total += take;
        }
        x->woff += take;
        if (x->woff == b->len) {
            x->wi++;
            x->woff = 0;
        }
    }
    if (total > 0) {
        unsigned char *o = (unsigned char *)x->out + x->out_len;
        x->out_len += sc_tls_rec_seal(x->rec, 23, piece, np, total, o);
    }
}

/* Answers the queries that would need the SSL object, from what the takeover kept. */
int sc__tlsx_native_query(struct tls_x *x, enum sc_xq q, void *out)
{
    struct sc_str *s = out;
    switch (q) {
    case SC_XQ_ALPN:
        *s = sc_str_n(x->alpn, x->alpn_len);
        return 0;
    case SC_XQ_SNI:
        *s = sc_str_c(x->sni);
        return 0;
    case SC_XQ_TLS_VERSION:
        *s = sc_str_c(x->version);
        return 0;
    case SC_XQ_TLS_CIPHER:
        *s = sc_str_c(x->cipher);
        return 0;
    case SC_XQ_TLS_RESUMED:
        *(bool *)out = x->resumed;
        return 0;
    case SC_XQ_PEER_CERT:
        *(void **)out = x->peer;
        return 0;
    default:
        return 1;
    }
}
