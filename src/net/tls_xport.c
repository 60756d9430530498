// SPDX-License-Identifier: Apache-2.0
// The TLS transport layer (see tls.h and transport.h): an SSL object driven through a custom BIO
// over whatever layer sits below. Ciphertext read from below lands in a per-thread scratch buffer
// and is fed to OpenSSL straight from there; only bytes left unread when the owner stops reading
// are copied into a per-connection buffer. Decrypted bytes go straight into the owner's buffers.
// Ciphertext to send collects in one buffer (at most two full records plus alerts and tickets)
// that goes below in one write and returns to a per-thread spare when flushed, so an idle
// connection holds no record buffer of ours, and OpenSSL releases its own (RELEASE_BUFFERS).
//
// After a TLS 1.3 handshake on a native context, tls_native.c takes the records over from OpenSSL
// and the SSL object is freed (x->ssl is NULL, x->rec set): every SSL call here is on a path that
// a native connection does not take.
//
// Callbacks into the owner may close the layer or write; the layer's memory lives until below
// reports closed, so every step re-checks `closing` after calling out. Nothing blocks: when
// OpenSSL needs bytes that have not arrived it says so and the layer waits for below's read.
#include "net/tls_xport_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/tlbuf.h"

static const struct sc_xport_ops tls_ops;
static void pump(struct tls_x *x);
static void update_below_read(struct tls_x *x);
static void defer(struct tls_x *x);

/* ---- per-thread buffers ------------------------------------------------------------------- */

static _Thread_local void *scratch; /* IN_CAP bytes (core/tlbuf.h) */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_destroy(void *p)
{
    sc_free(p);
}

static void spare_init(void)
{
    pthread_key_create(&spare_key, spare_destroy);
}

char *sc__tlsx_out_acquire(void)
{
    pthread_once(&spare_once, spare_init);
    char *p = pthread_getspecific(spare_key);
    if (p) {
        pthread_setspecific(spare_key, NULL);
        return p;
    }
    return sc_malloc(OUT_CAP);
}

void sc__tlsx_out_release(struct tls_x *x)
{
    if (!x->out) {
        return;
    }
    if (!pthread_getspecific(spare_key)) {
        pthread_setspecific(spare_key, x->out);
    } else {
        sc_free(x->out);
    }
    x->out = NULL;
    x->out_len = x->pend_len = 0;
}

/* ---- the BIO ------------------------------------------------------------------------------ */

size_t sc__tlsx_avail(const struct tls_x *x)
{
    return x->src ? x->src_len : x->in_len - x->in_off;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_x *x = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t n = sc__tlsx_avail(x);
    if (n == 0) {
        if (x->got_eof) {
            return 0;
        }
        BIO_set_retry_read(b);
        return -1;
    }
    if (n > (size_t)len) {
        n = (size_t)len;
    }
    if (x->hs) {
        sc__tlsx_count_records(
            &x->hs->rd,
            x->src ? (const unsigned char *)x->src : (const unsigned char *)x->in + x->in_off, n);
    }
    if (x->src) {
        memcpy(buf, x->src, n);
        x->src += n;
        x->src_len -= n;
    } else {
        memcpy(buf, x->in + x->in_off, n);
        x->in_off += n;
        if (x->in_off == x->in_len) {
            sc_free(x->in);
            x->in = NULL;
            x->in_off = x->in_len = x->in_cap = 0;
        }
    }
    return (int)n;
}

static int bio_write(BIO *b, const char *buf, int len)
{
    struct tls_x *x = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!x->out) {
        x->out = sc__tlsx_out_acquire();
        x->out_len = x->pend_len = 0;
    }
    size_t room = OUT_CAP - x->out_len;
    if (room == 0) {
        BIO_set_retry_write(b);
        return -1;
    }
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(x->out + x->out_len, buf, n);
    x->out_len += n;
    if (x->hs) {
        sc__tlsx_count_records(&x->hs->wr, (const unsigned char *)buf, n);
    }
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    /* OpenSSL asks about a dozen times per request, mostly for kTLS (answered 0 here): the
     * layer is looked up only for the two questions that need it. */
    struct tls_x *x;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        x = BIO_get_data(b);
        return x && x->got_eof && sc__tlsx_avail(x) == 0;
    case BIO_CTRL_PENDING:
        x = BIO_get_data(b);
        return x ? (long)sc__tlsx_avail(x) : 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static int bio_type;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    bio_type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    bio_method = BIO_meth_new(bio_type, "sidecar-xport");
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

struct tls_x *sc__tlsx_of(const SSL *ssl)
{
    /* an SSL made on our contexts by someone else (tests, benches) has a BIO of its own */
    pthread_once(&bio_once, bio_method_init);
    BIO *b = SSL_get_rbio(ssl);
    return b && bio_type != 0 && BIO_method_type(b) == bio_type ? BIO_get_data(b) : NULL;
}

/* ---- failures ----------------------------------------------------------------------------- */

const char *sc_tls_fail_name(enum sc_tls_fail f)
{
    static const char *const names[] = {
        [SC_TLS_FAIL_NONE] = "none",
        [SC_TLS_FAIL_UNKNOWN_CA] = "unknown_ca",
        [SC_TLS_FAIL_EXPIRED] = "expired",
        [SC_TLS_FAIL_BAD_SAN] = "bad_san",
        [SC_TLS_FAIL_BAD_CERT] = "bad_certificate",
        [SC_TLS_FAIL_NO_CLIENT_CERT] = "no_client_cert",
        [SC_TLS_FAIL_PROTOCOL_VERSION] = "protocol_version",
        [SC_TLS_FAIL_NOT_TLS] = "not_tls",
        [SC_TLS_FAIL_PEER_CLOSED] = "peer_closed",
        [SC_TLS_FAIL_HANDSHAKE] = "handshake_error",
        [SC_TLS_FAIL_PROTOCOL] = "protocol",
    };
    return (unsigned)f < SC_ARRAY_LEN(names) ? names[f] : "handshake_error";
}

static enum sc_tls_fail verify_fail(long vr)
{
    switch (vr) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return SC_TLS_FAIL_UNKNOWN_CA;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SC_TLS_FAIL_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
        return SC_TLS_FAIL_BAD_SAN;
    default:
        return SC_TLS_FAIL_BAD_CERT;
    }
}

/* Classifies the failure OpenSSL just reported (its error queue is still filled). */
static enum sc_tls_fail classify(struct tls_x *x, int sslerr, const char **text)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    long vr = SSL_get_verify_result(x->ssl);
    *text = e ? sc__tls_err_reason(e) : NULL;
    if (x->server && !x->hs_done && x->first_seen && x->first_byte != 0x16) {
        *text = "the client did not start a TLS handshake";
        return SC_TLS_FAIL_NOT_TLS;
    }
    if (vr != X509_V_OK) {
        *text = X509_verify_cert_error_string(vr);
        return verify_fail(vr);
    }
    switch (reason) {
    case 0:
        if (sslerr == SSL_ERROR_SYSCALL || x->got_eof) {
            *text = "the peer closed the connection";
            return SC_TLS_FAIL_PEER_CLOSED;
        }
        break;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        *text = "the peer closed the connection";
        return SC_TLS_FAIL_PEER_CLOSED;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return SC_TLS_FAIL_NO_CLIENT_CERT;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
        return SC_TLS_FAIL_PROTOCOL_VERSION;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return SC_TLS_FAIL_UNKNOWN_CA;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return SC_TLS_FAIL_EXPIRED;
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return SC_TLS_FAIL_BAD_CERT;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
        if (!x->hs_done) {
            return SC_TLS_FAIL_NOT_TLS;
        }
        break;
    default:
        break;
    }
    return x->hs_done ? SC_TLS_FAIL_PROTOCOL : SC_TLS_FAIL_HANDSHAKE;
}

/* Records a failure and reports it: through connected while a connect or a handshake callback is
 * due, otherwise through read when the owner reads (now or at its next read_start). */
void sc__tlsx_fail(struct tls_x *x, enum sc_tls_fail f, const char *text, int err)
{
    if (x->fatal) {
        return;
    }
    x->fatal = true;
    x->fail = f;
    x->fail_text = text ? text : sc_tls_fail_name(f);
    x->err = err;
    ERR_clear_error();
    if (!x->hs_done && (x->connecting || (x->server && x->handshake_cb))) {
        x->connecting = false;
        x->fail_reported = true;
        x->base.cbs->connected(x->base.owner, err);
    }
}

/* ---- sending ------------------------------------------------------------------------------ */

/* Sends the collected ciphertext below unless a write is pending there. Returns 0 (all sent or
 * nothing to send), 1 (below queued it) or a negative error. */
int sc__tlsx_flush(struct tls_x *x)
{
    if (x->below_wpending || x->out_len == 0 || x->closing) {
        return x->below_wpending ? 1 : 0;
    }
    uv_buf_t b = uv_buf_init(x->out, (unsigned)x->out_len);
    int rc = sc_xport_write(x->base.next, &b, 1);
    if (rc == 0) {
        sc__tlsx_out_release(x);
        return 0;
    }
    if (rc == 1) {
        x->below_wpending = true;
        x->pend_len = x->out_len;
        return 1;
    }
    return rc;
}

static void clear_write(struct tls_x *x)
{
    if (x->wv != x->wv_inline) {
        sc_free(x->wv);
    }
    x->wv = NULL;
    x->wn = x->wi = 0;
    x->woff = 0;
    x->wretry = 0;
}

/* Empties this thread's OpenSSL error queue before an I/O call, as SSL_get_error needs. The queue
 * is almost always empty already (failures clear it), and ERR_clear_error walks all of its slots
 * (about 800 instructions), so it runs only when something is queued. */
static inline void err_clear(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

/* Encrypts the owner's pending plaintext while there is room and below takes it. Returns 0 when
 * everything went below, 1 when some waits (a write below is pending or the handshake is not
 * done), or a negative error. */
static int pump_write(struct tls_x *x)
{
    while (x->wi < x->wn) {
        if (x->below_wpending || !x->hs_done) {
            return 1;
        }
        size_t room = OUT_CAP - (x->out ? x->out_len : 0);
        if (room < REC_MAX + OUT_SLACK) {
            int rc = sc__tlsx_flush(x);
            if (rc < 0) {
                return rc;
            }
            continue;
        }
        if (x->rec) {
            sc__tlsx_native_seal(x);
            continue;
        }
        uv_buf_t *b = &x->wv[x->wi];
        size_t left = b->len - x->woff;
        if (left == 0) {
            x->wi++;
            x->woff = 0;
            continue;
        }
        size_t chunk = x->wretry;
        if (chunk == 0) {
            size_t fit = ((room - OUT_SLACK) / REC_MAX) * TLS_REC;
            chunk = left < fit ? left : fit;
        }
        size_t n = 0;
        err_clear();
        int r = SSL_write_ex(x->ssl, b->base + x->woff, chunk, &n);
        if (r == 1) {
            x->wretry = 0;
            x->woff += n;
            continue;
        }
        int e = SSL_get_error(x->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
            x->wretry = chunk;
            int rc = sc__tlsx_flush(x);
            if (rc < 0) {
                return rc;
            }
            if (rc == 0 && x->out_len == 0) {
                continue;
            }
            return 1;
        }
        const char *text;
        enum sc_tls_fail f = classify(x, e, &text);
        sc__tlsx_fail(x, f, text, UV_EPROTO);
        return UV_EPROTO;
    }
    int rc = sc__tlsx_flush(x);
    return rc < 0 ? rc : x->below_wpending;
}

static int tls_write(struct sc_xport *xp, uv_buf_t *iov, unsigned n)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (x->closing || x->sent_shutdown) {
        return UV_EPIPE;
    }
    if (x->owner_wpending) {
        return UV_EBUSY;
    }
    if (x->fatal) {
        return x->err ? x->err : UV_EPROTO;
    }
    if (x->server && !x->hs_started) {
        /* a server that writes first: the handshake starts now, the bytes wait for it */
        x->hs_started = true;
        update_below_read(x);
        if (sc__tlsx_avail(x) > 0) {
            defer(x);
        }
    }
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += iov[i].len;
    }
    if (total == 0) {
        return 0;
    }
    int rc;
    if (n > 1 && total <= TLS_REC && x->hs_done && !x->below_wpending && !x->rec) {
        /* Small pieces (a head and a short body) go out as one record: encrypted at once, so the
         * staging copy is not needed once SSL_write returns. */
        char stage[TLS_REC];
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(stage + off, iov[i].base, iov[i].len);
            off += iov[i].len;
        }
        uv_buf_t one = uv_buf_init(stage, (unsigned)total);
        x->wv = &one;
        x->wn = 1;
        rc = pump_write(x);
        bool consumed = x->wi == x->wn && x->wretry == 0;
        x->wv = NULL;
        x->wn = x->wi = 0;
        x->woff = x->wretry = 0;
        if (rc >= 0 && !consumed) {
            sc__tlsx_fail(x, SC_TLS_FAIL_PROTOCOL, "a record did not fit the output buffer",
                          UV_EPROTO);
            return UV_EPROTO;
        }
    } else {
        x->wv = n <= SC_ARRAY_LEN(x->wv_inline) ? x->wv_inline : sc_calloc(n, sizeof(uv_buf_t));
        memcpy(x->wv, iov, n * sizeof(uv_buf_t));
        x->wn = n;
        x->wi = 0;
        x->woff = 0;
        rc = pump_write(x);
        if (rc != 1) {
            clear_write(x);
        }
    }
    if (rc == 1) {
        x->owner_wpending = true;
    }
    return rc;
}

/* ---- receiving ---------------------------------------------------------------------------- */

static void handshake_done(struct tls_x *x)
{
    x->hs_done = true;
    if (x->hs) {
        if (x->server) {
            sc__tlsx_takeover(x);
        } else {
            sc__tlsx_native_settle(x);
        }
    }
    if (x->connecting || (x->server && x->handshake_cb)) {
        x->connecting = false;
        x->base.cbs->connected(x->base.owner, 0);
    }
    if (!x->closing && x->owner_wpending) {
        /* a server that wrote before the handshake ended */
        int rc = pump_write(x);
        if (rc != 1) {
            clear_write(x);
            x->owner_wpending = false;
            x->base.cbs->write_done(x->base.owner, rc < 0 ? rc : 0);
        }
    }
}

/* Advances the handshake. Returns 1 when done, 0 when waiting, -1 when it failed. */
static int handshake(struct tls_x *x)
{
    err_clear();
    int r = SSL_do_handshake(x->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(x->ssl, r);
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        const char *text;
        enum sc_tls_fail f = classify(x, e, &text);
        (void)sc__tlsx_flush(x); /* the alert, best effort */
        sc__tlsx_fail(x, f, text, f == SC_TLS_FAIL_PEER_CLOSED ? UV_ECONNRESET : UV_EPROTO);
        return -1;
    }
    if (sc__tlsx_flush(x) < 0) {
        sc__tlsx_fail(x, SC_TLS_FAIL_PEER_CLOSED, "the handshake could not be sent", UV_ECONNRESET);
        return -1;
    }
    if (r == 1) {
        handshake_done(x);
        return 1;
    }
    if (e == SSL_ERROR_WANT_READ && x->got_eof && sc__tlsx_avail(x) == 0) {
        sc__tlsx_fail(x, SC_TLS_FAIL_PEER_CLOSED,
                      "the peer closed the connection during the handshake", UV_ECONNRESET);
        return -1;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        x->read_blocked = true;
    }
    return 0;
}

bool sc__tlsx_owner_buf(struct tls_x *x, uv_buf_t *b)
{
    *b = uv_buf_init(NULL, 0);
    x->base.cbs->alloc(x->base.owner, b);
    if (x->closing || !x->reading) {
        return false;
    }
    if (b->len == 0) {
        x->base.cbs->read(x->base.owner, UV_ENOBUFS);
        return false;
    }
    return true;
}

/* Decrypts into the owner's buffers while it reads and bytes are there. */
static void deliver(struct tls_x *x)
{
    const struct sc_xport_cbs *cbs = x->base.cbs;
    while (x->reading && !x->closing && !x->fatal && !x->eof_reported) {
        /* Read ahead is off, so OpenSSL holds at most one record: nothing to deliver when it has
         * no decrypted bytes and the BIO has nothing new. */
        if (sc__tlsx_avail(x) == 0 && SSL_pending(x->ssl) == 0) {
            if (x->got_eof) {
                x->eof_reported = true;
                cbs->read(x->base.owner, x->below_err ? x->below_err : UV_EOF);
            }
            break;
        }
        uv_buf_t b;
        if (!sc__tlsx_owner_buf(x, &b)) {
            break;
        }
        size_t n = 0;
        err_clear();
        int r = SSL_read_ex(x->ssl, b.base, b.len, &n);
        if (r == 1) {
            if (x->hs) {
                x->hs->data_in = true;
            }
            cbs->read(x->base.owner, (ssize_t)n);
            continue;
        }
        int e = SSL_get_error(x->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            /* a non-data record (a ticket) was consumed, or a record is incomplete */
            if (sc__tlsx_avail(x) == 0 && SSL_pending(x->ssl) == 0 && !x->got_eof) {
                break;
            }
            continue;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            x->read_blocked = true;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            x->got_close_notify = (SSL_get_shutdown(x->ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
            x->eof_reported = true;
            cbs->read(x->base.owner, UV_EOF);
            break;
        }
        const char *text;
        enum sc_tls_fail f = classify(x, e, &text);
        if (f == SC_TLS_FAIL_PEER_CLOSED) {
            x->eof_reported = true;
            cbs->read(x->base.owner, UV_EOF);
            break;
        }
        sc__tlsx_fail(x, f, text, UV_EPROTO);
    }
    if (x->fatal && x->reading && !x->fail_reported && !x->closing) {
        x->fail_reported = true;
        cbs->read(x->base.owner, x->err);
    }
}

/* Runs the handshake and delivery on whatever input there is, then sends what OpenSSL wrote. */
static void pump(struct tls_x *x)
{
    if (x->in_pump || x->closing) {
        return;
    }
    x->in_pump = true;
    if (x->hs_started && !x->hs_done && !x->fatal) {
        (void)handshake(x);
    }
    if (x->hs_done && !x->closing) {
        if (!x->rec) {
            deliver(x);
            if (x->hs && !x->closing) {
                /* a client waiting for its tickets: what OpenSSL read may settle it */
                sc__tlsx_native_settle(x);
            }
        }
        if (x->rec && !x->closing) {
            sc__tlsx_native_deliver(x);
        }
    } else if (x->fatal && x->reading && !x->fail_reported && !x->closing) {
        x->fail_reported = true;
        x->base.cbs->read(x->base.owner, x->err);
    }
    if (!x->closing && sc__tlsx_flush(x) < 0 && !x->fatal) {
        sc__tlsx_fail(x, SC_TLS_FAIL_PROTOCOL, "write failed", UV_EPIPE);
    }
    x->in_pump = false;
}

/* Keeps scratch bytes OpenSSL did not take (the owner stopped reading) in our own buffer. */
static void stash(struct tls_x *x)
{
    if (x->src && x->src_len > 0) {
        size_t have = x->in_len - x->in_off;
        size_t cap = IN_CAP > have + x->src_len ? IN_CAP : have + x->src_len;
        char *in = sc_malloc(cap);
        if (have) {
            memcpy(in, x->in + x->in_off, have);
        }
        memcpy(in + have, x->src, x->src_len);
        sc_free(x->in);
        x->in = in;
        x->in_off = 0;
        x->in_len = have + x->src_len;
        x->in_cap = cap;
    }
    x->src = NULL;
    x->src_len = 0;
}

static void on_below_alloc(void *owner, uv_buf_t *buf)
{
    struct tls_x *x = owner;
    if (x->in && x->in_len > x->in_off) {
        if (x->in_off > 0) {
            memmove(x->in, x->in + x->in_off, x->in_len - x->in_off);
            x->in_len -= x->in_off;
            x->in_off = 0;
        }
        x->scratch_given = false;
        *buf = uv_buf_init(x->in + x->in_len, (unsigned)(x->in_cap - x->in_len));
        return;
    }
    x->scratch_given = true;
    *buf = uv_buf_init(sc_tlbuf_get(&scratch, IN_CAP), IN_CAP);
}

static void on_below_read(void *owner, ssize_t nread)
{
    struct tls_x *x = owner;
    if (x->closing) {
        return;
    }
    if (nread > 0) {
        const char *first = x->scratch_given ? (const char *)scratch : x->in + x->in_len;
        if (!x->first_seen) {
            x->first_seen = true;
            x->first_byte = (unsigned char)first[0];
        }
        if (x->scratch_given) {
            x->src = scratch;
            x->src_len = (size_t)nread;
        } else {
            x->in_len += (size_t)nread;
        }
    } else if (nread < 0) {
        x->got_eof = true;
        x->below_err = nread == UV_EOF ? 0 : (int)nread;
        x->below_reading = false;
    }
    pump(x);
    stash(x);
    update_below_read(x);
}

static void on_below_write_done(void *owner, int status)
{
    struct tls_x *x = owner;
    x->below_wpending = false;
    if (status < 0) {
        sc__tlsx_out_release(x);
        if (!x->closing && !x->fatal) {
            sc__tlsx_fail(x, SC_TLS_FAIL_PROTOCOL, "write failed", status);
        }
        if (x->owner_wpending) {
            x->owner_wpending = false;
            clear_write(x);
            x->base.cbs->write_done(x->base.owner, status);
        }
        return;
    }
    if (x->out) {
        memmove(x->out, x->out + x->pend_len, x->out_len - x->pend_len);
        x->out_len -= x->pend_len;
        x->pend_len = 0;
        if (x->out_len == 0) {
            sc__tlsx_out_release(x);
        }
    }
    if (x->closing) {
        return;
    }
    if (x->owner_wpending) {
        int rc = pump_write(x);
        if (rc == 1) {
            return;
        }
        x->owner_wpending = false;
        clear_write(x);
        x->base.cbs->write_done(x->base.owner, rc < 0 ? rc : 0);
        if (x->closing) {
            return;
        }
    } else if (sc__tlsx_flush(x) == 1) {
        return;
    }
    if (x->shutdown_pending && !x->below_wpending && x->out_len == 0) {
        x->shutdown_pending = false;
        (void)sc_xport_shutdown(x->base.next);
    }
    if (x->read_blocked) {
        x->read_blocked = false;
        pump(x);
        update_below_read(x);
    }
}

/* Below reads while a handshake runs, or while the owner reads, as long as the bytes kept from
 * earlier reads leave room (the next pump takes them first). */
static void update_below_read(struct tls_x *x)
{
    bool room = !x->in || x->in_len < x->in_cap || x->in_off > 0;
    bool want = !x->closing && !x->fatal && !x->got_eof && x->hs_started && room &&
                (!x->hs_done || x->reading);
    if (want && !x->below_reading) {
        if (sc_xport_read_start(x->base.next) == 0) {
            x->below_reading = true;
        }
    } else if (!want && x->below_reading) {
        sc_xport_read_stop(x->base.next);
        x->below_reading = false;
    }
}

/* ---- deferred work ------------------------------------------------------------------------ */

static void start_client(struct tls_x *x)
{
    x->hs_started = true;
    pump(x);
    stash(x);
    update_below_read(x);
}

static void on_idle(uv_idle_t *h)
{
    struct tls_x *x = h->data;
    uv_idle_stop(h);
    if (x->closing) {
        return;
    }
    if (x->start_pending) {
        x->start_pending = false;
        start_client(x);
        return;
    }
    pump(x);
    stash(x);
    update_below_read(x);
}

static void defer(struct tls_x *x)
{
    if (!x->idle) {
        x->idle = SC_NEW(uv_idle_t);
        uv_idle_init(x->loop, x->idle);
        x->idle->data = x;
    }
    uv_idle_start(x->idle, on_idle);
}

/* ---- ops ---------------------------------------------------------------------------------- */

static int tls_read_start(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (x->closing || x->reading) {
        return 0;
    }
    x->reading = true;
    if (x->server && !x->hs_started) {
        x->hs_started = true;
    }
    bool buffered = sc__tlsx_avail(x) > 0 || x->plain_len > 0 ||
                    (x->hs_done && !x->rec && SSL_has_pending(x->ssl)) ||
                    (x->got_eof && !x->eof_reported) || (x->fatal && !x->fail_reported);
    if (buffered) {
        defer(x);
    }
    update_below_read(x);
    return 0;
}

static void tls_read_stop(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    x->reading = false;
    update_below_read(x);
}

static void on_idle_closed(uv_handle_t *h)
{
    struct tls_x *x = h->data;
    sc_free(h);
    const struct sc_xport_cbs *cbs = x->base.cbs;
    void *owner = x->base.owner;
    SSL_free(x->ssl);
    if (x->rec) {
        sc_tls_rec_cleanup(x->rec);
        sc_free(x->rec);
    }
    if (x->hs) {
        OPENSSL_cleanse(x->hs, sizeof(*x->hs));
        sc_free(x->hs);
    }
    X509_free(x->peer);
    sc_free(x->pbuf);
    sc_free(x->alpn);
    sc_tls_ctx_unref(x->ctx);
    sc__tlsx_out_release(x);
    sc_free(x->in);
    sc_free(x->sni);
    sc_free(x->sess_key);
    sc_free(x->peer_id);
    if (x->wv && x->wv != x->wv_inline) {
        sc_free(x->wv);
    }
    sc_free(x);
    cbs->closed(owner);
}

static void on_below_closed(void *owner)
{
    struct tls_x *x = owner;
    if (x->connecting) {
        x->connecting = false;
        x->base.cbs->connected(x->base.owner, UV_ECANCELED);
    }
    if (x->owner_wpending) {
        x->owner_wpending = false;
        clear_write(x);
        x->base.cbs->write_done(x->base.owner, UV_ECANCELED);
    }
    if (!x->idle) {
        /* one path for the release: a handle-less close goes through a fresh idle handle's
         * close, which costs nothing on the loop and keeps the teardown in one place */
        x->idle = SC_NEW(uv_idle_t);
        uv_idle_init(x->loop, x->idle);
    }
    x->idle->data = x;
    uv_close((uv_handle_t *)x->idle, on_idle_closed);
}

static void send_close_notify(struct tls_x *x)
{
    if (x->rec) {
        sc__tlsx_native_send(x, SC_TLS_ALERT_CLOSE_NOTIFY);
    } else {
        err_clear();
        (void)SSL_shutdown(x->ssl);
    }
    x->sent_shutdown = true;
}

static void tls_close(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (x->closing) {
        return;
    }
    if (x->hs_done && !x->fatal && !x->sent_shutdown && !x->below_wpending) {
        /* best-effort close_notify: it goes out only when the socket takes it now */
        send_close_notify(x);
        (void)sc__tlsx_flush(x);
    } else if (x->hs_done && !x->fatal && !x->rec) {
        /* No close_notify now, but the session is good: OpenSSL would otherwise drop it from the
         * caches (and make it unresumable) when the SSL is freed. */
        SSL_set_shutdown(x->ssl, SSL_get_shutdown(x->ssl) | SSL_SENT_SHUTDOWN);
    }
    x->closing = true;
    x->reading = false;
    if (x->idle) {
        uv_idle_stop(x->idle);
    }
    sc_xport_close(x->base.next);
}

static int tls_shutdown(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (x->closing) {
        return UV_EPIPE;
    }
    if (x->owner_wpending) {
        return UV_EBUSY;
    }
    if (!x->hs_done || x->fatal) {
        return x->fatal ? UV_EPIPE : UV_ENOTCONN;
    }
    if (!x->sent_shutdown) {
        send_close_notify(x);
    }
    int rc = sc__tlsx_flush(x);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        x->shutdown_pending = true;
        return 0;
    }
    return sc_xport_shutdown(x->base.next);
}

static void on_below_connected(void *owner, int status)
{
    struct tls_x *x = owner;
    if (status < 0 || x->closing) {
        if (x->connecting) {
            x->connecting = false;
            x->base.cbs->connected(x->base.owner, status < 0 ? status : UV_ECANCELED);
        }
        return;
    }
    start_client(x);
}

static int tls_connect(struct sc_xport *xp, const struct sockaddr *addr)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (x->server) {
        return UV_EINVAL;
    }
    if (x->connecting || x->hs_started || x->closing) {
        return UV_EALREADY;
    }
    if (!addr) {
        x->connecting = true;
        x->start_pending = true;
        defer(x);
        return 0;
    }
    int rc = sc_xport_connect(x->base.next, addr);
    if (rc == 0) {
        x->connecting = true;
    }
    return rc;
}

static int tls_query(struct sc_xport *xp, enum sc_xq q, void *out)
{
    struct tls_x *x = (struct tls_x *)xp;
    struct sc_str *s = out;
    if (x->rec && sc__tlsx_native_query(x, q, out) == 0) {
        return 0;
    }
    switch (q) {
    case SC_XQ_TLS:
        *(bool *)out = x->hs_done && !x->fatal;
        return 0;
    case SC_XQ_ALPN: {
        const unsigned char *p = NULL;
        unsigned len = 0;
        SSL_get0_alpn_selected(x->ssl, &p, &len);
        *s = sc_str_n((const char *)p, p ? len : 0);
        return 0;
    }
    case SC_XQ_SNI: {
        const char *n = x->server ? SSL_get_servername(x->ssl, TLSEXT_NAMETYPE_host_name) : x->sni;
        *s = sc_str_c(n);
        return 0;
    }
    case SC_XQ_TLS_VERSION:
        *s = x->hs_done ? sc_str_c(SSL_get_version(x->ssl)) : SC_STR_NULL;
        return 0;
    case SC_XQ_TLS_CIPHER: {
        const SSL_CIPHER *c = x->hs_done ? SSL_get_current_cipher(x->ssl) : NULL;
        *s = sc_str_c(c ? SSL_CIPHER_standard_name(c) : NULL);
        return 0;
    }
    case SC_XQ_TLS_RESUMED:
        *(bool *)out = x->hs_done && SSL_session_reused(x->ssl);
        return 0;
    case SC_XQ_PEER_CERT: {
        X509 *peer = x->hs_done ? SSL_get0_peer_certificate(x->ssl) : NULL;
        bool verified = SSL_get_verify_mode(x->ssl) != SSL_VERIFY_NONE &&
                        SSL_get_verify_result(x->ssl) == X509_V_OK;
        *(void **)out = peer && verified ? peer : NULL;
        return 0;
    }
    case SC_XQ_PEER_ID: {
        *s = SC_STR_NULL;
        if (!x->peer_id) {
            X509 *peer = NULL;
            (void)tls_query(xp, SC_XQ_PEER_CERT, &peer);
            char buf[SC_SPIFFE_ID_MAX + 1];
            if (peer && sc_tls_spiffe_id(peer, buf, sizeof(buf)) > 0) {
                x->peer_id = sc_strdup(buf);
            }
        }
        *s = sc_str_c(x->peer_id);
        return 0;
    }
    case SC_XQ_TLS_NATIVE:
        *(bool *)out = x->rec != NULL;
        return 0;
    case SC_XQ_ERROR:
        if (x->fail == SC_TLS_FAIL_NONE) {
            return UV_ENOTSUP;
        }
        *(const char **)out = x->fail_text;
        return 0;
    default:
        return UV_ENOTSUP;
    }
}

static bool tls_alive(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    return x->hs_done && !x->closing && !x->fatal && !x->got_close_notify && !x->got_eof &&
           sc__tlsx_avail(x) == 0 && x->plain_len == 0 && (x->rec || !SSL_has_pending(x->ssl));
}

static const struct sc_xport_ops tls_ops = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .close = tls_close,
    .shutdown = tls_shutdown,
    .connect = tls_connect,
    .query = tls_query,
    .alive = tls_alive,
};

static const struct sc_xport_cbs below_cbs = {
    .alloc = on_below_alloc,
    .read = on_below_read,
    .write_done = on_below_write_done,
    .connected = on_below_connected,
    .closed = on_below_closed,
};

/* ---- construction ------------------------------------------------------------------------- */

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

struct sc_xport *sc_tls_xport_new(struct sc_tls_ctx *ctx, const struct sc_tls_xport_args *a)
{
    pthread_once(&bio_once, bio_method_init);
    struct tls_x *x = SC_NEW(struct tls_x);
    x->base.ops = &tls_ops;
    x->base.next = a->below;
    x->base.cbs = a->cbs;
    x->base.owner = a->owner;
    x->ctx = sc_tls_ctx_ref(ctx);
    x->loop = a->loop;
    x->server = ctx->server;
    x->handshake_cb = a->handshake_cb;
    a->below->cbs = &below_cbs;
    a->below->owner = x;

    x->ssl = SSL_new(ctx->ssl);
    if (!x->ssl) {
        sc_error("TLS: SSL_new failed; out of memory");
        abort();
    }
    BIO *b = BIO_new(bio_method);
    if (!b) {
        sc_error("TLS: BIO_new failed; out of memory");
        abort();
    }
    BIO_set_data(b, x);
    SSL_set_bio(x->ssl, b, b);
    if (x->server) {
        SSL_set_accept_state(x->ssl);
        if (ctx->native) {
            x->hs = SC_NEW(struct native_hs);
        }
        if (a->preread.len > 0) {
            x->in_cap = a->preread.len > IN_CAP ? a->preread.len : IN_CAP;
            x->in = sc_malloc(x->in_cap);
            memcpy(x->in, a->preread.p, a->preread.len);
            x->in_len = a->preread.len;
            x->first_seen = true;
            x->first_byte = (unsigned char)a->preread.p[0];
        }
        return &x->base;
    }
    SSL_set_connect_state(x->ssl);
    if (ctx->native) {
        sc__tlsx_native_client(x);
    }
    const char *sni = a->sni ? a->sni : ctx->sni;
    if (sni && *sni) {
        x->sni = sc_strdup(sni);
        bool ip = is_ip(sni);
        if (!ip) {
            SSL_set_tlsext_host_name(x->ssl, sni);
        }
        if (ctx->verify && ctx->nsans == 0) {
            if (ip) {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(x->ssl), sni);
            } else {
                SSL_set1_host(x->ssl, sni);
            }
        }
    }
    if (a->alpn.len &&
        SSL_set_alpn_protos(x->ssl, (const unsigned char *)a->alpn.p, (unsigned)a->alpn.len) != 0) {
        sc_error("TLS: SSL_set_alpn_protos failed; out of memory");
        abort();
    }
    if (ctx->sessions && a->session_key) {
        x->sess_key = sc_strdup(a->session_key);
        SSL_set_app_data(x->ssl, x->sess_key);
        SSL_SESSION *s = sc__tls_sessions_get(ctx->sessions, x->sess_key);
        if (s) {
            SSL_set_session(x->ssl, s);
            SSL_SESSION_free(s);
        }
    }
    return &x->base;
}

enum sc_tls_fail sc_tls_xport_fail(struct sc_xport *x)
{
    return ((struct tls_x *)x)->fail;
}

int sc_tls_xport_cert_index(struct sc_xport *xp)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (!x->server) {
        return -1;
    }
    if (x->rec) {
        return x->cert_idx;
    }
    SSL_CTX *now = SSL_get_SSL_CTX(x->ssl);
    for (size_t i = 0; i < x->ctx->ncerts; i++) {
        if (x->ctx->certs[i].ssl == now) {
            return (int)i;
        }
    }
    return 0;
}

bool sc_tls_xport_misdirected(struct sc_xport *xp, struct sc_str host)
{
    struct tls_x *x = (struct tls_x *)xp;
    if (!x->server || x->ctx->ncerts < 2 || host.len == 0) {
        return false;
    }
    /* strip a port: "name:443", "[v6]:443" (an IP literal is named by no DNS SAN) */
    if (host.p[0] == '[') {
        return false;
    }
    const char *colon = memchr(host.p, ':', host.len);
    if (colon) {
        host.len = (size_t)(colon - host.p);
    }
    int want = sc_tls_ctx_select(x->ctx, host);
    return want >= 0 && want != sc_tls_xport_cert_index(xp);
}

int sc_tls_xport_xfcc(struct sc_xport *xp, char *out, size_t cap)
{
    struct tls_x *x = (struct tls_x *)xp;
    X509 *peer = NULL;
    if (cap > 0) {
        out[0] = '\0';
    }
    (void)tls_query(xp, SC_XQ_PEER_CERT, &peer);
    if (!peer) {
        return -ENOENT;
    }
    struct sc_str by = SC_STR_NULL;
    X509 *own = x->ssl ? SSL_get_certificate(x->ssl)
                : x->server && x->cert_idx >= 0
                    ? SSL_CTX_get0_certificate(x->ctx->certs[x->cert_idx].ssl)
                : x->ctx->ncerts ? SSL_CTX_get0_certificate(x->ctx->ssl)
                                 : NULL;
    GENERAL_NAMES *gens = own ? X509_get_ext_d2i(own, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !by.p; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_URI) {
            by = sc_str_n((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                          (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier));
        }
    }
    int rc = sc_tls_xfcc(peer, by, out, cap);
    GENERAL_NAMES_free(gens);
    return rc;
}

bool sc_tls_xport_is(const struct sc_xport *x)
{
    return x && x->ops == &tls_ops;
}
