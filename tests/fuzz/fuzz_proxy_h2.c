// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the HTTP/2 translation (src/roles/proxy/proxy_h2_msg.c): the input is a
// header block as nghttp2 hands it over, field by field (byte 0: the block's kind and whether it
// ends the stream; then fields as <name length:1><name><value length:2, big-endian><value>), with
// a small header list size in some inputs so the bound is hit. Invariants: a refused block says
// why; an accepted one holds no pseudo-header or connection-specific field, only lowercase
// token names and values without CR, LF or NUL, in a request at most one Host and one Cookie; an
// accepted request rewritten for an HTTP/1 upstream by the proxy's own rules parses strictly with
// the same method, target and Host, and rewritten into the HTTP/2 sink sends pseudo-header fields
// first and lowercase names only; trailers written as an HTTP/1 chunked ending are taken whole by
// the chunked decoder and read back as the same fields.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "net/http1.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_h2: invariant failed: %s (%s:%d)\n", #cond, __FILE__,      \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct world {
    struct proxy_worker w;
    struct proxy_dconn dc;
    struct proxy_client client;
    struct proxy_cluster cl;
    struct proxy_endpoint ep;
    struct proxy_route route;
    struct proxy_listener lsn;
    struct proxy_rt rt;
    struct proxy_h2_head hd;
    struct proxy_h2_out out;
};

static struct world *world(void)
{
    static struct world *wd;
    if (wd) {
        return wd;
    }
    wd = SC_NEW(struct world);
    wd->ep.name = "10.0.0.9:8080";
    wd->cl.eps = &wd->ep;
    wd->cl.neps = 1;
    wd->route.cluster = &wd->cl;
    wd->lsn.tls.xfcc = PROXY_XFCC_SANITIZE;
    wd->dc.cl = &wd->client;
    snprintf(wd->client.ip, sizeof(wd->client.ip), "192.0.2.7");
    sc_buf_init(&wd->dc.ex.head, 65536 + 8192);
    return wd;
}

static void check_msg(const struct sc_http_msg *m, bool request)
{
    size_t hosts = 0, cookies = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        struct sc_str n = m->headers[i].name, v = m->headers[i].value;
        CHECK(n.len > 0 && n.p[0] != ':');
        for (size_t k = 0; k < n.len; k++) {
            CHECK(!(n.p[k] >= 'A' && n.p[k] <= 'Z') && n.p[k] > 0x20 && n.p[k] != ':');
        }
        for (size_t k = 0; k < v.len; k++) {
            CHECK(v.p[k] != '\r' && v.p[k] != '\n' && v.p[k] != '\0');
        }
        CHECK(!sc_str_eq(n, SC_STR("connection")) && !sc_str_eq(n, SC_STR("transfer-encoding")) &&
              !sc_str_eq(n, SC_STR("upgrade")) && !sc_str_eq(n, SC_STR("keep-alive")));
        hosts += sc_str_eq(n, SC_STR("host"));
        cookies += sc_str_eq(n, SC_STR("cookie"));
    }
    CHECK(!request || (hosts <= 1 && cookies <= 1));
}

/* Readies the exchange for message <m>; returns the target to send. */
static struct sc_str ready(struct world *wd, const struct sc_http_msg *m)
{
    struct proxy_exch *ex = &wd->dc.ex;
    struct sc_buf head = ex->head;
    memset(ex, 0, sizeof(*ex));
    ex->head = head;
    sc_buf_reset(&ex->head);
    ex->w = &wd->w;
    ex->dc = &wd->dc;
    ex->cl = &wd->client;
    ex->route = &wd->route;
    ex->lsn = &wd->lsn;
    ex->rt = &wd->rt;
    ex->minor = 1;
    ex->is_connect = sc_str_eq(m->method, SC_STR("CONNECT"));
    ex->body = m->body == SC_HTTP_BODY_CHUNKED  ? B_CHUNKED
               : m->body == SC_HTTP_BODY_LENGTH ? B_LENGTH
                                                : B_NONE;
    struct sc_str origin = SC_STR_NULL;
    if (m->target.len) {
        (void)proxy_target_path(m->target, &origin);
    }
    return origin;
}

/* The request rewritten for HTTP/1 must parse, with the same method, target and Host. */
static void check_h1(struct world *wd, const struct sc_http_msg *m)
{
    struct sc_str origin = ready(wd, m);
    struct proxy_exch *ex = &wd->dc.ex;
    if (proxy_build_req_head(ex, m, origin) < 0) {
        return; /* over the head's cap: refused with 431 */
    }
    struct sc_http_header hh[MAX_HEADERS + 16];
    struct sc_http_msg out = { .headers = hh };
    struct sc_http_error err;
    int rc = sc_http1_parse_request(ex->head.p, ex->head.len, 0, &sc_http1_default_limits, &out,
                                    SC_ARRAY_LEN(hh), &err);
    if (rc < 0 && err.status == 431) {
        return; /* more than an HTTP/1 head may carry: refused the same way */
    }
    if (rc < 0) {
        fprintf(stderr, "fuzz_proxy_h2: %s\n%.*s\n", err.reason, (int)ex->head.len, ex->head.p);
    }
    CHECK(rc > 0);
    CHECK(sc_str_eq(out.method, m->method));
    CHECK(sc_str_eq(out.target, ex->is_connect ? m->target : origin));
    CHECK(m->host.len == 0 || sc_str_eq(out.host, m->host));
}

/* The rewritten head in the HTTP/2 sink: pseudo-header fields first, lowercase names. */
static void check_h2(struct world *wd, const struct sc_http_msg *m, bool request)
{
    struct sc_str origin = ready(wd, m);
    struct proxy_hsink s = proxy_h2_out_sink(&wd->out, SC_STR("https"), 0);
    int rc = request ? proxy_head_request(&wd->dc.ex, m, origin, &s)
                     : proxy_head_response(&wd->dc.ex, m, &s);
    if (rc < 0) {
        return;
    }
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = proxy_h2_out_nv(&wd->out, nv, SC_ARRAY_LEN(nv));
    CHECK(n >= 0);
    bool regular = false;
    for (int i = 0; i < n; i++) {
        bool pseudo = nv[i].namelen > 0 && nv[i].name[0] == ':';
        CHECK(!(pseudo && regular));
        regular |= !pseudo;
        for (size_t k = 0; k < nv[i].namelen; k++) {
            CHECK(!(nv[i].name[k] >= 'A' && nv[i].name[k] <= 'Z'));
        }
    }
}

/* Trailers written as the end of an HTTP/1 chunked body are taken whole by the chunked decoder,
 * and read back into the HTTP/2 sink they are the same fields. */
static void check_trailers(struct world *wd, const struct sc_http_msg *m)
{
    struct sc_buf *b = &wd->dc.ex.head;
    sc_buf_reset(b);
    if (proxy_h2_trailers_to_h1(m, b) < 0) {
        return;
    }
    struct sc_http1_chunked ch;
    sc_http1_chunked_init(&ch);
    size_t used = 0;
    struct sc_str data;
    struct sc_http_error err;
    int rc = sc_http1_chunked_next(&ch, b->p, b->len, &used, &data, &err);
    if (rc < 0 || (rc == SC_HTTP1_CHUNK_MORE && b->len - 3 > 16384)) {
        return; /* past the decoder's 16 KiB trailer cap: refused as an HTTP/1 peer would */
    }
    CHECK(rc == SC_HTTP1_CHUNK_DONE && used == b->len);
    struct proxy_hsink s = proxy_h2_out_sink(&wd->out, SC_STR_NULL, 0);
    if (proxy_h2_trailers_from_h1(sc_str_n(b->p + 3, b->len - 3), &s) < 0) {
        return;
    }
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = proxy_h2_out_nv(&wd->out, nv, SC_ARRAY_LEN(nv));
    CHECK(n >= 0);
    size_t k = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (sc_str_eq(h->name, SC_STR("content-length")) || sc_str_eq(h->name, SC_STR("host")) ||
            sc_str_eq(h->name, SC_STR("te")) || sc_str_eq(h->name, SC_STR("trailer"))) {
            continue;
        }
        CHECK((int)k < n);
        CHECK(sc_str_eq(sc_str_n((const char *)nv[k].name, nv[k].namelen), h->name));
        CHECK(sc_str_eq(sc_str_n((const char *)nv[k].value, nv[k].valuelen), h->value));
        k++;
    }
    CHECK((int)k == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct world *wd = world();
    int kind = data[0] % 3;
    bool end_stream = data[0] & 4;
    size_t max = data[0] & 8 ? 256 : 0;
    proxy_h2_head_init(&wd->hd, kind, max, data[0] & 16 ? 150 : 0);
    size_t i = 1;
    const char *why = NULL;
    int rc = PROXY_H2_OK;
    while (rc == PROXY_H2_OK && i < size) {
        size_t nl = data[i++];
        if (size - i < nl + 2) {
            break;
        }
        struct sc_str name = sc_str_n((const char *)data + i, nl);
        i += nl;
        size_t vl = (size_t)data[i] << 8 | data[i + 1];
        i += 2;
        if (size - i < vl) {
            vl = size - i;
        }
        struct sc_str value = sc_str_n((const char *)data + i, vl);
        i += vl;
        rc = proxy_h2_head_add(&wd->hd, name, value, &why);
    }
    if (rc == PROXY_H2_OK) {
        rc = proxy_h2_head_finish(&wd->hd, end_stream, &why);
    }
    if (rc != PROXY_H2_OK) {
        CHECK(why != NULL && (rc == PROXY_H2_MALFORMED || rc == PROXY_H2_TOO_BIG));
        return 0;
    }
    const struct sc_http_msg *m = &wd->hd.m;
    check_msg(m, kind == PROXY_H2_REQUEST);
    if (kind == PROXY_H2_REQUEST) {
        CHECK(m->method.len > 0 && m->target.len > 0);
        check_h1(wd, m);
        check_h2(wd, m, true);
    } else if (kind == PROXY_H2_RESPONSE) {
        CHECK(m->status >= 100 && m->status <= 599);
        check_h2(wd, m, false);
    } else {
        check_trailers(wd, m);
    }
    return 0;
}
