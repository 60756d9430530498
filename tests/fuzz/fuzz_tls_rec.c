// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the TLS 1.3 record layer (net/tls_rec.h). The input's first byte says
// where the stream is first cut and, in its top bit, whether the receiving side is a client
// (which also takes NewSessionTickets) or a server. The rest is a script of records the peer
// sends: each entry is either raw bytes put on the wire as they are,
// or a plaintext the client seals properly (with any inner type, padding or handshake message),
// optionally with one bit flipped. The server opens the stream, split where the script says.
// Invariants: an incomplete record consumes nothing and reports MORE for every prefix; nothing
// is ever consumed beyond the input; delivered data lies inside the record and is at most 2^14
// bytes; while the stream holds only well-sealed records, each data record delivers exactly the
// bytes sealed; after a flipped bit the record fails (never delivers); a KeyUpdate that asks for
// an update leaves one owed; a server refuses every NewSessionTicket; after FAIL, ALERT or CLOSE
// the receiver stops. Any violation aborts.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "net/tls_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tls_rec: invariant failed: %s (%s:%d)\n", #cond, __FILE__,       \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define WIRE_MAX (8 * SC_TLS_REC_SEAL_MAX(SC_TLS_REC_PLAIN_MAX))
#define ENTRIES 16

/* What the script put on the wire, per entry. */
struct entry {
    size_t at, len;       /* its bytes on the wire */
    const uint8_t *plain; /* a sealed data record: what it carries */
    size_t plain_len;
    bool sealed, corrupt, data, key_update_req, ticket;
};

static void client_update(struct sc_tls_rec *c)
{
    unsigned char next[SC_TLS_REC_SECRET_MAX], rd[SC_TLS_REC_SECRET_MAX];
    CHECK(sc_tls_hkdf_expand_label(c->digest, c->wr.secret, c->hlen, "traffic upd", NULL, 0, next,
                                   c->hlen) == 0);
    memcpy(rd, c->rd.secret, c->hlen);
    size_t hlen = c->hlen;
    sc_tls_rec_cleanup(c);
    CHECK(sc_tls_rec_init(c, 0x1301, rd, next, hlen) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char cs[32], ss[32];
    memset(cs, 0x43, sizeof(cs));
    memset(ss, 0x53, sizeof(ss));
    struct sc_tls_rec server, client;
    CHECK(sc_tls_rec_init(&server, 0x1301, cs, ss, 32) == 0);
    CHECK(sc_tls_rec_init(&client, 0x1301, ss, cs, 32) == 0);
    uint8_t *wire = sc_malloc(WIRE_MAX);
    struct entry e[ENTRIES];
    size_t ne = 0, wlen = 0, split = size > 0 ? data[0] : 0;
    server.client = size > 0 && (data[0] & 0x80) != 0; /* the receiver */
    size_t off = size > 0 ? 1 : 0;
    /* entry: flags, inner type, length (2 bytes), bytes */
    while (ne < ENTRIES && off + 4 <= size) {
        uint8_t flags = data[off], type = data[off + 1];
        size_t len = (size_t)data[off + 2] << 8 | data[off + 3];
        off += 4;
        if (len > size - off) {
            len = size - off;
        }
        if (len > SC_TLS_REC_PLAIN_MAX + 1) {
            len = SC_TLS_REC_PLAIN_MAX + 1;
        }
        if (wlen + SC_TLS_REC_SEAL_MAX(len) > WIRE_MAX) {
            break;
        }
        struct entry *x = &e[ne++];
        memset(x, 0, sizeof(*x));
        x->at = wlen;
        if (flags & 1) { /* raw */
            memcpy(wire + wlen, data + off, len);
            x->len = len;
        } else {
            uv_buf_t b = uv_buf_init((char *)data + off, (unsigned)len);
            x->len = sc_tls_rec_seal(&client, type, &b, 1, len, wire + wlen);
            x->sealed = true;
            x->corrupt = (flags & 2) != 0;
            if (x->corrupt) {
                wire[wlen + (size_t)data[off - 3] % x->len] ^= (uint8_t)(1u << (flags >> 5));
            }
            /* a well-formed data record: the type byte last, no zero before it */
            x->data = type == 23;
            x->plain = data + off;
            x->plain_len = len;
            bool ku = type == 22 && len == 5 && data[off] == 24 && data[off + 1] == 0 &&
                      data[off + 2] == 0 && data[off + 3] == 1 && data[off + 4] <= 1;
            x->key_update_req = ku && data[off + 4] == 1;
            x->ticket = type == 22 && len > 0 && data[off] == 4;
            if (ku) {
                client_update(&client);
            }
        }
        wlen += x->len;
        off += len;
    }
    /* open the stream, first cut at <split> bytes, then whole */
    size_t pos = 0, cur = 0;
    bool in_sync = true, stopped = false;
    size_t limit = split < wlen ? split : wlen;
    while (!stopped && pos < wlen) {
        struct sc_tls_rec_in in;
        size_t avail = limit - pos;
        uint8_t *p = sc_malloc(avail ? avail : 1); /* exact size: reads past it are caught */
        memcpy(p, wire + pos, avail);
        enum sc_tls_rec_ev ev = sc_tls_rec_open(&server, p, avail, &in);
        if (ev == SC_TLS_REC_MORE) {
            CHECK(in.used == 0);
            sc_free(p);
            if (limit == wlen) {
                break; /* truncated at the end */
            }
            limit = wlen;
            continue;
        }
        CHECK(in.used <= avail);
        while (cur + 1 < ne && e[cur + 1].at <= pos) {
            cur++;
        }
        const struct entry *x = &e[cur];
        bool exact = in_sync && x->at == pos && x->sealed && in.used == x->len;
        if (ev == SC_TLS_REC_DATA) {
            CHECK(in.len <= SC_TLS_REC_PLAIN_MAX);
            CHECK(in.data >= p + 5 && in.data + in.len <= p + in.used);
            CHECK(!(exact && x->corrupt));
            if (exact && x->data) {
                CHECK(in.len == x->plain_len && memcmp(in.data, x->plain, in.len) == 0);
            }
        } else if (ev == SC_TLS_REC_NONE) {
            if (exact && x->key_update_req) {
                CHECK(server.key_update_owed);
            }
            CHECK(!(exact && x->ticket && !server.client));
        } else {
            stopped = true; /* FAIL, ALERT, CLOSE: the connection ends here */
        }
        if (!exact) {
            in_sync = false;
        }
        sc_free(p);
        pos += in.used;
        if (ev == SC_TLS_REC_FAIL && in.used == 0) {
            break;
        }
    }
    /* whatever state the server is in, what it seals the client's twin can open */
    unsigned char out[SC_TLS_REC_SEAL_MAX(2)];
    size_t n = sc_tls_rec_alert(&server, SC_TLS_ALERT_CLOSE_NOTIFY, out);
    CHECK(n == SC_TLS_REC_SEAL_MAX(2) - SC_TLS_REC_KEY_UPDATE || n == SC_TLS_REC_SEAL_MAX(2));
    sc_tls_rec_cleanup(&server);
    sc_tls_rec_cleanup(&client);
    sc_free(wire);
    return 0;
}
