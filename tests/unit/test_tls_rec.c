// SPDX-License-Identifier: Apache-2.0
// Unit tests for the TLS 1.3 record layer (net/tls_rec.h): HKDF-Expand-Label and the traffic keys
// against RFC 8448 section 3 (simple 1-RTT handshake), the two application data records of that
// trace sealed and opened byte for byte, and then, between a "server" and a "client" made from
// the same secrets: KeyUpdate both ways (requested and not), our own rekey at the record limit,
// padding, alerts, every refusal with its alert, and input split at every byte.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/alloc.h"
#include "net/tls_rec.h"

/* RFC 8448 section 3: the application traffic secrets and the keys derived from them */
#define C_AP "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
#define S_AP "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"
#define C_AP_KEY "17422dda596ed5d9acd890e3c63f5051"
#define C_AP_IV "5b78923dee08579033e523d9"
#define S_AP_KEY "9f02283b6c9c07efc26bb9f2ac92e356"
#define S_AP_IV "cf782b88dd83549aadf1e984"
/* the client's first application record (sequence 0) and the server's (sequence 1, after its
 * NewSessionTicket), each carrying the bytes 00..31 */
#define C_REC                                                                                      \
    "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8"                     \
    "a5b46b395bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4"
#define S_REC                                                                                      \
    "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf9"                     \
    "7d90e6dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d"

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = 0;
    for (; h[0]; h++) {
        if (h[0] == ' ') {
            continue;
        }
        int hi = h[0] <= '9' ? h[0] - '0' : h[0] - 'a' + 10;
        int lo = h[1] <= '9' ? h[1] - '0' : h[1] - 'a' + 10;
        out[n++] = (unsigned char)(hi << 4 | lo);
        h++;
    }
    return n;
}

static void assert_hex(const unsigned char *got, size_t n, const char *want)
{
    unsigned char w[512];
    assert_int_equal(unhex(want, w), n);
    assert_memory_equal(got, w, n);
}

static void secrets(unsigned char c[32], unsigned char s[32])
{
    unhex(C_AP, c);
    unhex(S_AP, s);
}

/* A server (reads the client's secret, writes its own) and the client facing it. */
static void pair(struct sc_tls_rec *server, struct sc_tls_rec *client)
{
    unsigned char c[32], s[32];
    secrets(c, s);
    assert_int_equal(sc_tls_rec_init(server, 0x1301, c, s, 32), 0);
    assert_int_equal(sc_tls_rec_init(client, 0x1301, s, c, 32), 0);
}

static void test_hkdf_rfc8448(void **state)
{
    (void)state;
    unsigned char c[32], s[32], out[32];
    secrets(c, s);
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", s, 32, "key", NULL, 0, out, 16), 0);
    assert_hex(out, 16, S_AP_KEY);
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", s, 32, "iv", NULL, 0, out, 12), 0);
    assert_hex(out, 12, S_AP_IV);
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", c, 32, "key", NULL, 0, out, 16), 0);
    assert_hex(out, 16, C_AP_KEY);
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", c, 32, "iv", NULL, 0, out, 12), 0);
    assert_hex(out, 12, C_AP_IV);
    /* refusals: an output longer than HkdfLabel can say, an unknown hash */
    unsigned char big[300];
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", s, 32, "key", NULL, 0, big, 256), -1);
    assert_int_equal(sc_tls_hkdf_expand_label("NOPE", s, 32, "key", NULL, 0, out, 16), -1);
}

static void test_init_refuses(void **state)
{
    (void)state;
    struct sc_tls_rec r;
    unsigned char c[32], s[32];
    secrets(c, s);
    assert_int_equal(sc_tls_rec_init(&r, 0x1304, c, s, 32), -1); /* AES-CCM: not ours */
    assert_int_equal(sc_tls_rec_init(&r, 0x1302, c, s, 32), -1); /* SHA-384 needs 48 bytes */
    sc_tls_rec_cleanup(&r);
}

static void test_rfc8448_records(void **state)
{
    (void)state;
    struct sc_tls_rec server, client;
    pair(&server, &client);
    unsigned char plain[50], rec[128], want[128];
    for (int i = 0; i < 50; i++) {
        plain[i] = (unsigned char)i;
    }
    uv_buf_t b = uv_buf_init((char *)plain, 50);
    /* the server's record: sequence 1, its ticket went first */
    server.wr.seq = 1;
    size_t n = sc_tls_rec_seal(&server, 23, &b, 1, 50, rec);
    assert_int_equal(n, 72);
    assert_hex(rec, n, S_REC);
    /* the client's, opened by the server in place */
    size_t wn = unhex(C_REC, want);
    struct sc_tls_rec_in in;
    assert_int_equal(sc_tls_rec_open(&server, want, wn, &in), SC_TLS_REC_DATA);
    assert_int_equal(in.used, wn);
    assert_int_equal(in.len, 50);
    assert_memory_equal(in.data, plain, 50);
    assert_int_equal(server.rd.seq, 1);
    /* the same record again (a replay) is under the wrong nonce now */
    unhex(C_REC, want);
    assert_int_equal(sc_tls_rec_open(&server, want, wn, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_BAD_RECORD_MAC);
    /* and the client seals the same bytes */
    n = sc_tls_rec_seal(&client, 23, &b, 1, 50, rec);
    assert_hex(rec, n, C_REC);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
}

/* Opens everything in <buf>, expecting the events in <want> (NULL-terminated by -1). */
static size_t open_all(struct sc_tls_rec *r, unsigned char *buf, size_t len, const int *want,
                       struct sc_tls_rec_in *last)
{
    size_t off = 0;
    for (int i = 0; want[i] >= 0; i++) {
        assert_int_equal(sc_tls_rec_open(r, buf + off, len - off, last), want[i]);
        off += last->used;
    }
    return off;
}

static void test_split_at_every_byte(void **state)
{
    (void)state;
    struct sc_tls_rec server, client;
    pair(&server, &client);
    char msg[3000];
    memset(msg, 'x', sizeof(msg));
    uv_buf_t b[2] = { uv_buf_init(msg, 1000), uv_buf_init(msg + 1000, 2000) };
    unsigned char rec[SC_TLS_REC_SEAL_MAX(3000)];
    size_t n = sc_tls_rec_seal(&client, 23, b, 2, 3000, rec);
    assert_int_equal(n, 3000 + SC_TLS_REC_OVERHEAD);
    for (size_t cut = 0; cut < n; cut++) {
        /* a prefix is never enough and never consumed, whatever its length */
        unsigned char *part = sc_malloc(cut ? cut : 1);
        memcpy(part, rec, cut);
        struct sc_tls_rec_in in;
        assert_int_equal(sc_tls_rec_open(&server, part, cut, &in), SC_TLS_REC_MORE);
        assert_int_equal(server.rd.seq, 0);
        sc_free(part);
    }
    struct sc_tls_rec_in in;
    assert_int_equal(sc_tls_rec_open(&server, rec, n, &in), SC_TLS_REC_DATA);
    assert_int_equal(in.len, 3000);
    assert_memory_equal(in.data, msg, 3000);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
}

static void test_key_update_requested(void **state)
{
    (void)state;
    struct sc_tls_rec server, client;
    pair(&server, &client);
    /* the client asks for an update: KeyUpdate(update_requested) under its current key, then
     * its next key (a fresh client made from the next secret stands for that) */
    unsigned char ku[5] = { 24, 0, 0, 1, 1 };
    uv_buf_t b = uv_buf_init((char *)ku, 5);
    unsigned char buf[256];
    size_t n = sc_tls_rec_seal(&client, 22, &b, 1, 5, buf);
    unsigned char c[32], s[32], cnext[32];
    secrets(c, s);
    assert_int_equal(sc_tls_hkdf_expand_label("SHA256", c, 32, "traffic upd", NULL, 0, cnext, 32),
                     0);
    struct sc_tls_rec client2;
    assert_int_equal(sc_tls_rec_init(&client2, 0x1301, s, cnext, 32), 0);
    uv_buf_t d = uv_buf_init("after", 5);
    n += sc_tls_rec_seal(&client2, 23, &d, 1, 5, buf + n);
    struct sc_tls_rec_in in;
    const int want[] = { SC_TLS_REC_NONE, SC_TLS_REC_DATA, -1 };
    assert_int_equal(open_all(&server, buf, n, want, &in), n);
    assert_int_equal(in.len, 5);
    assert_memory_equal(in.data, "after", 5);
    assert_memory_equal(server.rd.secret, cnext, 32);
    assert_true(server.key_update_owed);
    /* the server's next record is preceded by its KeyUpdate(update_not_requested) */
    uv_buf_t r = uv_buf_init("reply", 5);
    n = sc_tls_rec_seal(&server, 23, &r, 1, 5, buf);
    assert_int_equal(n, SC_TLS_REC_KEY_UPDATE + 5 + SC_TLS_REC_OVERHEAD);
    assert_false(server.key_update_owed);
    assert_int_equal(server.wr.seq, 1);
    const int want2[] = { SC_TLS_REC_NONE, SC_TLS_REC_DATA, -1 };
    assert_int_equal(open_all(&client2, buf, n, want2, &in), n);
    assert_false(client2.key_update_owed); /* not requested back */
    assert_memory_equal(in.data, "reply", 5);
    /* an owed update with nothing to send goes out alone */
    server.key_update_owed = true;
    n = sc_tls_rec_owed(&server, buf);
    assert_int_equal(n, SC_TLS_REC_KEY_UPDATE);
    assert_int_equal(sc_tls_rec_owed(&server, buf + n), 0);
    assert_int_equal(sc_tls_rec_open(&client2, buf, n, &in), SC_TLS_REC_NONE);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
    sc_tls_rec_cleanup(&client2);
}

static void test_rekey_at_limit(void **state)
{
    (void)state;
    struct sc_tls_rec server, client;
    pair(&server, &client);
    server.rekey_after = 3;
    unsigned char buf[1024];
    size_t n = 0;
    for (int i = 0; i < 7; i++) {
        uv_buf_t b = uv_buf_init("0123456789", 10);
        n += sc_tls_rec_seal(&server, 23, &b, 1, 10, buf + n);
    }
    /* 3 records, an update, 3 records, an update, 1 record */
    const int want[] = {
        SC_TLS_REC_DATA, SC_TLS_REC_DATA, SC_TLS_REC_DATA, SC_TLS_REC_NONE, SC_TLS_REC_DATA,
        SC_TLS_REC_DATA, SC_TLS_REC_DATA, SC_TLS_REC_NONE, SC_TLS_REC_DATA, -1
    };
    struct sc_tls_rec_in in;
    assert_int_equal(open_all(&client, buf, n, want, &in), n);
    assert_memory_equal(in.data, "0123456789", 10);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
}

/* Seals <inner> (content, type, padding) as the client and opens it at the server. */
static enum sc_tls_rec_ev inner(const void *p, size_t len, struct sc_tls_rec_in *in)
{
    struct sc_tls_rec server, client;
    pair(&server, &client);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    static unsigned char buf[SC_TLS_REC_SEAL_MAX(SC_TLS_REC_PLAIN_MAX + 2)];
    size_t n = sc_tls_rec_seal(&client, 0, &b, 1, len, buf); /* type 0: pure padding at the end */
    enum sc_tls_rec_ev ev = sc_tls_rec_open(&server, buf, n, in);
    if (ev == SC_TLS_REC_DATA) {
        static unsigned char keep[SC_TLS_REC_PLAIN_MAX];
        memcpy(keep, in->data, in->len);
        in->data = keep;
    }
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
    return ev;
}

static void test_inner_plaintext(void **state)
{
    (void)state;
    struct sc_tls_rec_in in;
    /* padding is stripped */
    assert_int_equal(inner("ab\x17\0\0\0\0", 7, &in), SC_TLS_REC_DATA);
    assert_int_equal(in.len, 2);
    assert_memory_equal(in.data, "ab", 2);
    /* an empty data record is data */
    assert_int_equal(inner("\x17", 1, &in), SC_TLS_REC_DATA);
    assert_int_equal(in.len, 0);
    /* all padding: no type */
    assert_int_equal(inner("\0\0\0", 3, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* 2^14 bytes of data is the most a record carries */
    static char big[SC_TLS_REC_PLAIN_MAX + 2];
    memset(big, 'a', sizeof(big));
    big[SC_TLS_REC_PLAIN_MAX] = 0x17;
    assert_int_equal(inner(big, SC_TLS_REC_PLAIN_MAX + 1, &in), SC_TLS_REC_DATA);
    assert_int_equal(in.len, SC_TLS_REC_PLAIN_MAX);
    big[SC_TLS_REC_PLAIN_MAX] = 'a';
    big[SC_TLS_REC_PLAIN_MAX + 1] = 0x17;
    assert_int_equal(inner(big, sizeof(big), &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_RECORD_OVERFLOW);
    /* alerts */
    assert_int_equal(inner("\x01\x00\x15", 3, &in), SC_TLS_REC_CLOSE);
    assert_int_equal(inner("\x01\x5a\x15", 3, &in), SC_TLS_REC_NONE); /* user_canceled */
    assert_int_equal(inner("\x02\x28\x15", 3, &in), SC_TLS_REC_ALERT);
    assert_int_equal(in.alert, 40);
    assert_int_equal(inner("\x01\x15", 2, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_DECODE_ERROR);
    /* handshake messages: only a well-formed KeyUpdate, alone in its record */
    assert_int_equal(inner("\x04\x00\x00\x01\x00\x16", 6, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    assert_int_equal(inner("\x18\x00\x00\x01\x02\x16", 6, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_ILLEGAL_PARAMETER);
    assert_int_equal(inner("\x18\x00\x00\x02\x00\x00\x16", 7, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_DECODE_ERROR);
    assert_int_equal(inner("\x18\x00\x00\x01\x00\x18\x00\x00\x01\x00\x16", 11, &in),
                     SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    assert_int_equal(inner("\x18\x00\x16", 3, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* other inner types */
    assert_int_equal(inner("\x01\x14", 2, &in), SC_TLS_REC_FAIL);
    assert_int_equal(inner("x\x99", 2, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
}

static void test_outer_refusals(void **state)
{
    (void)state;
    struct sc_tls_rec server, client;
    pair(&server, &client);
    struct sc_tls_rec_in in;
    /* a handshake or change_cipher_spec record in the clear */
    unsigned char clear[] = { 0x16, 3, 3, 0, 1, 1 };
    assert_int_equal(sc_tls_rec_open(&server, clear, sizeof(clear), &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    unsigned char ccs[] = { 0x14, 3, 3, 0, 1, 1 };
    assert_int_equal(sc_tls_rec_open(&server, ccs, sizeof(ccs), &in), SC_TLS_REC_FAIL);
    /* a length above 2^14 + 256, known from the header alone */
    unsigned char big[] = { 0x17, 3, 3, 0x41, 0x01 };
    assert_int_equal(sc_tls_rec_open(&server, big, sizeof(big), &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_RECORD_OVERFLOW);
    /* shorter than a tag */
    unsigned char tiny[5 + 16] = { 0x17, 3, 3, 0, 16 };
    assert_int_equal(sc_tls_rec_open(&server, tiny, sizeof(tiny), &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_BAD_RECORD_MAC);
    /* every single-bit change anywhere in a record fails authentication */
    uv_buf_t b = uv_buf_init("payload", 7);
    unsigned char rec[64], copy[64];
    size_t n = sc_tls_rec_seal(&client, 23, &b, 1, 7, rec);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, rec, n);
        copy[i] ^= 0x01;
        enum sc_tls_rec_ev ev = sc_tls_rec_open(&server, copy, n, &in);
        assert_true(ev == SC_TLS_REC_FAIL || ev == SC_TLS_REC_MORE);
        assert_int_equal(server.rd.seq, 0);
    }
    assert_int_equal(sc_tls_rec_open(&server, rec, n, &in), SC_TLS_REC_DATA);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
}

/* Seals <msgs> (handshake messages) as the server and opens them at a client (<client> set on
 * it, as the transport does) or, with <at_server>, the other way round. */
static enum sc_tls_rec_ev handshake_to(bool at_server, const void *msgs, size_t len,
                                       struct sc_tls_rec_in *in)
{
    struct sc_tls_rec server, client;
    pair(&server, &client);
    client.client = true;
    uv_buf_t b = uv_buf_init((char *)msgs, (unsigned)len);
    unsigned char buf[512];
    size_t n = sc_tls_rec_seal(at_server ? &client : &server, 22, &b, 1, len, buf);
    enum sc_tls_rec_ev ev = sc_tls_rec_open(at_server ? &server : &client, buf, n, in);
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
    return ev;
}

/* NewSessionTicket: lifetime, age_add, nonce<1>, ticket<3>, one extension (early_data) */
#define NST                                                                                        \
    "\x04\x00\x00\x19"                                                                             \
    "\x00\x00\x1c\x20\x01\x02\x03\x04"                                                             \
    "\x01\x00"                                                                                     \
    "\x00\x03tkt"                                                                                  \
    "\x00\x08\x00\x2a\x00\x04\x00\x00\x40\x00"

static void test_client_tickets(void **state)
{
    (void)state;
    struct sc_tls_rec_in in;
    /* a client drops tickets, one or several in a record, a KeyUpdate after them too */
    assert_int_equal(handshake_to(false, NST, 29, &in), SC_TLS_REC_NONE);
    assert_int_equal(handshake_to(false, NST NST, 58, &in), SC_TLS_REC_NONE);
    assert_int_equal(handshake_to(false, NST "\x18\x00\x00\x01\x00", 34, &in), SC_TLS_REC_NONE);
    /* a server refuses them */
    assert_int_equal(handshake_to(true, NST, 29, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* a ticket cut short (split across records) */
    assert_int_equal(handshake_to(false, NST, 20, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    assert_int_equal(handshake_to(false, NST NST, 31, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* an empty handshake record */
    assert_int_equal(handshake_to(false, "", 0, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
    /* malformed bodies: each length pointing past the end, an empty ticket, trailing bytes, an
     * extension cut short */
    static const struct {
        const char *m;
        size_t len;
    } bad[] = {
        { "\x04\x00\x00\x08\x00\x00\x1c\x20\x01\x02\x03\x04", 12 },
        { "\x04\x00\x00\x0a\x00\x00\x1c\x20\x01\x02\x03\x04\x05\x00", 14 },
        { "\x04\x00\x00\x0d\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x00\x00\x00", 17 },
        { "\x04\x00\x00\x0d\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x09\x00\x00", 17 },
        { "\x04\x00\x00\x0f\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x01t\x00\x00\x00", 19 },
        { "\x04\x00\x00\x11\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x01t\x00\x02\x00\x2a", 21 },
        { "\x04\x00\x00\x14\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x01t\x00\x05\x00\x2a\x00\x09"
          "\x00",
          24 },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(handshake_to(false, bad[i].m, bad[i].len, &in), SC_TLS_REC_FAIL);
        assert_int_equal(in.alert, SC_TLS_ALERT_DECODE_ERROR);
    }
    /* the smallest good one: no nonce, a one-byte ticket, no extensions */
    assert_int_equal(handshake_to(false,
                                  "\x04\x00\x00\x0e\x00\x00\x1c\x20\x01\x02\x03\x04\x00\x00\x01t"
                                  "\x00\x00",
                                  18, &in),
                     SC_TLS_REC_NONE);
    /* other handshake messages stay refused on a client */
    assert_int_equal(handshake_to(false, "\x0d\x00\x00\x00", 4, &in), SC_TLS_REC_FAIL);
    assert_int_equal(in.alert, SC_TLS_ALERT_UNEXPECTED_MESSAGE);
}

static void test_suites(void **state)
{
    (void)state;
    static const unsigned suites[] = { 0x1301, 0x1302, 0x1303 };
    for (size_t i = 0; i < 3; i++) {
        unsigned char c[48], s[48];
        memset(c, 0x11, sizeof(c));
        memset(s, 0x22, sizeof(s));
        size_t len = suites[i] == 0x1302 ? 48 : 32;
        struct sc_tls_rec server, client;
        assert_int_equal(sc_tls_rec_init(&server, suites[i], c, s, len), 0);
        assert_int_equal(sc_tls_rec_init(&client, suites[i], s, c, len), 0);
        unsigned char buf[256];
        uv_buf_t b = uv_buf_init("hello", 5);
        size_t n = sc_tls_rec_alert(&client, SC_TLS_ALERT_CLOSE_NOTIFY, buf);
        n += sc_tls_rec_seal(&server, 23, &b, 1, 5, buf + n);
        struct sc_tls_rec_in in;
        assert_int_equal(sc_tls_rec_open(&server, buf, n, &in), SC_TLS_REC_CLOSE);
        assert_int_equal(sc_tls_rec_open(&client, buf + in.used, n - in.used, &in),
                         SC_TLS_REC_DATA);
        assert_memory_equal(in.data, "hello", 5);
        sc_tls_rec_cleanup(&server);
        sc_tls_rec_cleanup(&client);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hkdf_rfc8448),         cmocka_unit_test(test_init_refuses),
        cmocka_unit_test(test_rfc8448_records),      cmocka_unit_test(test_split_at_every_byte),
        cmocka_unit_test(test_key_update_requested), cmocka_unit_test(test_rekey_at_limit),
        cmocka_unit_test(test_inner_plaintext),      cmocka_unit_test(test_outer_refusals),
        cmocka_unit_test(test_client_tickets),       cmocka_unit_test(test_suites),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
