// SPDX-License-Identifier: Apache-2.0
// Unit tests for the HTTP/2 translation (src/roles/proxy/proxy_h2_msg.c): a received request,
// response and trailer block turned into the message routing and head rewriting read (Host from
// :authority, cookies joined, body framing), every malformation of RFC 9113 section 8 refused
// with its reason, the header list size and field count bounds; the HTTP/2 header sink fed by
// the same rewriting rules as HTTP/1 (pseudo-header fields first, names lowercased,
// connection-specific fields dropped, te kept as "trailers", Host as :authority); and gRPC's
// content type, grpc-timeout and status mappings.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "net/http1.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"

struct kv {
    const char *n, *v;
};

/* Feeds <fields> (NULL-terminated) into a fresh block of <kind>; returns the first failure's
 * code, or the finish's. */
static int feed(struct proxy_h2_head *hd, int kind, const struct kv *fields, bool end_stream,
                size_t max, const char **why)
{
    proxy_h2_head_init(hd, kind, max, 0);
    *why = NULL;
    for (const struct kv *f = fields; f->n; f++) {
        int rc = proxy_h2_head_add(hd, sc_str_c(f->n), sc_str_c(f->v), why);
        if (rc != PROXY_H2_OK) {
            return rc;
        }
    }
    return proxy_h2_head_finish(hd, end_stream, why);
}

static const char *hval(const struct sc_http_msg *m, const char *name, char *out, size_t cap)
{
    const struct sc_http_header *h = sc_http1_find(m, sc_str_c(name), NULL);
    if (!h) {
        return NULL;
    }
    snprintf(out, cap, "%.*s", SC_STR_FMT(h->value));
    return out;
}

static void test_request(void **state)
{
    (void)state;
    struct proxy_h2_head *hd = SC_NEW(struct proxy_h2_head);
    const char *why;
    char v[256];
    const struct kv get[] = {
        { ":method", "GET" },    { ":scheme", "https" }, { ":authority", "api.example:8443" },
        { ":path", "/a/b?x=1" }, { "cookie", "a=1" },    { "user-agent", "t/1" },
        { "cookie", "b=2" },     { "te", "trailers" },   { NULL, NULL }
    };
    assert_int_equal(feed(hd, PROXY_H2_REQUEST, get, true, 0, &why), PROXY_H2_OK);
    assert_true(sc_str_eq(hd->m.method, SC_STR("GET")));
    assert_true(sc_str_eq(hd->m.target, SC_STR("/a/b?x=1")));
    assert_true(sc_str_eq(hd->m.host, SC_STR("api.example:8443")));
    assert_int_equal(hd->m.body, SC_HTTP_BODY_NONE);
    assert_int_equal(hd->m.minor_version, 1);
    assert_string_equal(hval(&hd->m, "host", v, sizeof(v)), "api.example:8443");
    assert_string_equal(hval(&hd->m, "cookie", v, sizeof(v)), "a=1; b=2");
    assert_string_equal(hval(&hd->m, "user-agent", v, sizeof(v)), "t/1");
    size_t from = 0, ncookie = 0;
    while (sc_http1_find(&hd->m, SC_STR("cookie"), &from)) {
        ncookie++;
    }
    assert_int_equal(ncookie, 1);
    for (size_t i = 0; i < hd->m.nheaders; i++) {
        assert_true(hd->m.headers[i].name.p[0] != ':'); /* no pseudo-header field goes on */
    }

    /* Body framing: a length, or unknown (re-framed as chunked towards HTTP/1). */
    const struct kv post[] = { { ":method", "POST" }, { ":scheme", "http" },     { ":path", "/p" },
                               { "host", "h" },       { "content-length", "5" }, { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_REQUEST, post, false, 0, &why), PROXY_H2_OK);
    assert_int_equal(hd->m.body, SC_HTTP_BODY_LENGTH);
    assert_int_equal(hd->m.content_length, 5);
    assert_true(sc_str_eq(hd->m.host, SC_STR("h")));
    assert_int_equal(feed(hd, PROXY_H2_REQUEST, post, true, 0, &why), PROXY_H2_MALFORMED);
    assert_string_equal(why, "content-length with no body");
    const struct kv stream[] = { { ":method", "POST" },
                                 { ":scheme", "http" },
                                 { ":path", "/p" },
                                 { ":authority", "h" },
                                 { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_REQUEST, stream, false, 0, &why), PROXY_H2_OK);
    assert_int_equal(hd->m.body, SC_HTTP_BODY_CHUNKED);

    /* CONNECT: the authority is the target. */
    const struct kv conn[] = { { ":method", "CONNECT" },
                               { ":authority", "db:5432" },
                               { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_REQUEST, conn, false, 0, &why), PROXY_H2_OK);
    assert_true(sc_str_eq(hd->m.target, SC_STR("db:5432")));
    proxy_h2_head_free(hd);
    sc_free(hd);
}

static void test_malformed(void **state)
{
    (void)state;
    struct proxy_h2_head *hd = SC_NEW(struct proxy_h2_head);
    const char *why;
    static const struct {
        struct kv f[6];
        const char *why;
    } cases[] = {
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "X-Up", "1" } },
          "invalid field name (uppercase or not a token)" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "connection", "x" } },
          "connection-specific field in HTTP/2" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "upgrade", "h2c" } },
          "connection-specific field in HTTP/2" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "te", "gzip" } },
          "te other than \"trailers\" in HTTP/2" },
        { { { ":method", "GET" }, { "a", "1" }, { ":path", "/" } },
          "pseudo-header field after a regular field" },
        { { { ":method", "GET" }, { ":path", "/" }, { ":path", "/x" } },
          "repeated pseudo-header field" },
        { { { ":method", "GET" }, { ":status", "200" } },
          "unknown or misplaced pseudo-header field" },
        { { { ":method", "GET" }, { ":bogus", "1" } }, "unknown or misplaced pseudo-header field" },
        { { { ":method", "GET" }, { ":scheme", "http" } }, "request without :scheme or :path" },
        { { { ":scheme", "http" }, { ":path", "/" } }, "request without :method" },
        { { { ":method", "CONNECT" }, { ":authority", "h:1" }, { ":path", "/" } },
          "CONNECT needs :authority and no :scheme or :path" },
        { { { ":method", "GET" },
            { ":scheme", "http" },
            { ":path", "/" },
            { ":authority", "a" },
            { "host", "b" } },
          "host differs from :authority" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "x", "a\rb" } },
          "invalid character or surrounding whitespace in a field value" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { "x", " a" } },
          "invalid character or surrounding whitespace in a field value" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "x" } },
          ":path is not origin-form" },
        { { { ":method", "G T" }, { ":scheme", "http" }, { ":path", "/" } }, "invalid :method" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, { ":protocol", "ws" } },
          "extended CONNECT (:protocol) is not supported" },
        { { { ":method", "POST" },
            { ":scheme", "http" },
            { ":path", "/" },
            { "content-length", "1x" } },
          "invalid content-length" },
        { { { ":method", "GET" },
            { ":scheme", "http" },
            { ":path", "/" },
            { "host", "a" },
            { "host", "a" } },
          "more than one host field" },
        { { { ":method", "POST" },
            { ":scheme", "http" },
            { ":path", "/" },
            { "content-length", "5" },
            { "content-length", "5" } },
          "more than one content-length" },
        { { { ":method", "POST" },
            { ":scheme", "http" },
            { ":path", "/" },
            { "content-length", "9223372036854775808" } },
          "invalid content-length" },
        { { { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/a b" } },
          "invalid character in :path" },
        { { { ":method", "GET" },
            { ":scheme", "http" },
            { ":path", "/" },
            { ":authority", "a b" } },
          "invalid :authority" },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        assert_int_equal(feed(hd, PROXY_H2_REQUEST, cases[i].f, true, 0, &why), PROXY_H2_MALFORMED);
        assert_string_equal(why, cases[i].why);
    }
    /* Trailers: no pseudo-header fields, and they end the stream. */
    const struct kv tr_pseudo[] = { { ":status", "200" }, { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_TRAILERS, tr_pseudo, true, 0, &why), PROXY_H2_MALFORMED);
    const struct kv tr[] = { { "grpc-status", "0" }, { "grpc-message", "ok" }, { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_TRAILERS, tr, false, 0, &why), PROXY_H2_MALFORMED);
    assert_int_equal(feed(hd, PROXY_H2_TRAILERS, tr, true, 0, &why), PROXY_H2_OK);
    assert_int_equal(hd->m.nheaders, 2);
    proxy_h2_head_free(hd);
    sc_free(hd);
}

static void test_bounds(void **state)
{
    (void)state;
    struct proxy_h2_head *hd = SC_NEW(struct proxy_h2_head);
    const char *why = NULL;
    /* The list size counts 32 bytes per field: 4 fields of 1 + 1 bytes pass 136 at the 5th. */
    proxy_h2_head_init(hd, PROXY_H2_REQUEST, 136, 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(proxy_h2_head_add(hd, SC_STR("a"), SC_STR("b"), &why), PROXY_H2_OK);
    }
    assert_int_equal(proxy_h2_head_add(hd, SC_STR("a"), SC_STR("b"), &why), PROXY_H2_TOO_BIG);
    assert_string_equal(why, "header list larger than max_header_list_size");
    /* The field count. */
    proxy_h2_head_init(hd, PROXY_H2_REQUEST, 0, 0);
    int rc = PROXY_H2_OK;
    for (int i = 0; i <= PROXY_H2_MAX_FIELDS && rc == PROXY_H2_OK; i++) {
        rc = proxy_h2_head_add(hd, SC_STR("x"), SC_STR("y"), &why);
    }
    assert_int_equal(rc, PROXY_H2_TOO_BIG);
    assert_int_equal(hd->n, PROXY_H2_MAX_FIELDS);
    assert_string_equal(why, "too many header fields");
    /* A listener's max_request_headers raises the count (the arrays grow once). */
    proxy_h2_head_init(hd, PROXY_H2_REQUEST, 0, 150);
    rc = PROXY_H2_OK;
    for (int i = 0; i <= 150 && rc == PROXY_H2_OK; i++) {
        rc = proxy_h2_head_add(hd, SC_STR("x"), SC_STR("y"), &why);
    }
    assert_int_equal(rc, PROXY_H2_TOO_BIG);
    assert_int_equal(hd->n, 150);
    /* Joined cookies near the limit still fit the store (twice the list size). */
    proxy_h2_head_init(hd, PROXY_H2_REQUEST, 4096, 0);
    char big[900];
    memset(big, 'c', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(proxy_h2_head_add(hd, SC_STR(":method"), SC_STR("GET"), &why), 0);
    assert_int_equal(proxy_h2_head_add(hd, SC_STR(":scheme"), SC_STR("http"), &why), 0);
    assert_int_equal(proxy_h2_head_add(hd, SC_STR(":path"), SC_STR("/"), &why), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(proxy_h2_head_add(hd, SC_STR("cookie"), sc_str_c(big), &why), 0);
    }
    assert_int_equal(proxy_h2_head_finish(hd, true, &why), PROXY_H2_OK);
    const struct sc_http_header *c = sc_http1_find(&hd->m, SC_STR("cookie"), NULL);
    assert_non_null(c);
    assert_int_equal(c->value.len, 4 * 899 + 3 * 2);
    proxy_h2_head_free(hd);
    sc_free(hd);
}

static void test_response(void **state)
{
    (void)state;
    struct proxy_h2_head *hd = SC_NEW(struct proxy_h2_head);
    const char *why;
    const struct kv ok[] = { { ":status", "200" },
                             { "content-type", "application/grpc" },
                             { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_RESPONSE, ok, false, 0, &why), PROXY_H2_OK);
    assert_int_equal(hd->m.status, 200);
    assert_int_equal(hd->m.body, SC_HTTP_BODY_CHUNKED);
    assert_int_equal(hd->m.nheaders, 1);
    assert_int_equal(feed(hd, PROXY_H2_RESPONSE, ok, true, 0, &why), PROXY_H2_OK);
    assert_int_equal(hd->m.body, SC_HTTP_BODY_NONE);
    const char *bad[] = { "20", "600", "2x0", "099", "101" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        const struct kv f[] = { { ":status", bad[i] }, { NULL, NULL } };
        assert_int_equal(feed(hd, PROXY_H2_RESPONSE, f, true, 0, &why), PROXY_H2_MALFORMED);
    }
    const struct kv none[] = { { "a", "b" }, { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_RESPONSE, none, true, 0, &why), PROXY_H2_MALFORMED);
    assert_string_equal(why, "response without a valid :status");
    const struct kv req_pseudo[] = { { ":path", "/" }, { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_RESPONSE, req_pseudo, true, 0, &why), PROXY_H2_MALFORMED);
    proxy_h2_head_free(hd);
    sc_free(hd);
}

/* The nv fields of <o> as "name: value\n" lines. */
static void nv_text(struct proxy_h2_out *o, char *out, size_t cap)
{
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = proxy_h2_out_nv(o, nv, SC_ARRAY_LEN(nv));
    assert_true(n >= 0);
    size_t w = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        w += (size_t)snprintf(out + w, cap - w, "%.*s: %.*s\n", (int)nv[i].namelen,
                              (const char *)nv[i].name, (int)nv[i].valuelen,
                              (const char *)nv[i].value);
        assert_true(w < cap);
    }
}

static void test_sink_ops(void **state)
{
    (void)state;
    struct proxy_h2_out *o = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink s = proxy_h2_out_sink(o, SC_STR("https"), 0);
    assert_int_equal(s.ops->request(&s, SC_STR("GET"), SC_STR("/x?y")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("User-Agent"), SC_STR("t")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("Host"), SC_STR("api")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("Connection"), SC_STR("close")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("Transfer-Encoding"), SC_STR("chunked")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("TE"), SC_STR("deflate, trailers")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("Authorization"), SC_STR("Bearer x")), 0);
    struct sc_buf *vb = s.ops->open(&s, SC_STR("Via"));
    assert_non_null(vb);
    assert_int_equal(sc_buf_append_cstr(vb, "1.1 a, "), 0);
    assert_int_equal(sc_buf_append_cstr(vb, "1.1 sidecar"), 0);
    assert_int_equal(s.ops->close(&s), 0);
    vb = s.ops->open(&s, SC_STR("Keep-Alive"));
    assert_non_null(vb);
    assert_int_equal(sc_buf_append_cstr(vb, "timeout=5"), 0);
    assert_int_equal(s.ops->close(&s), 0); /* dropped */
    assert_int_equal(s.ops->end(&s), 0);
    char text[1024];
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, ":method: GET\n:scheme: https\n:path: /x?y\n:authority: api\n"
                              "user-agent: t\nte: trailers\nauthorization: Bearer x\n"
                              "via: 1.1 a, 1.1 sidecar\n");
    nghttp2_nv nv[16];
    int n = proxy_h2_out_nv(o, nv, SC_ARRAY_LEN(nv));
    assert_int_equal(n, 8);
    assert_int_equal(nv[6].flags, NGHTTP2_NV_FLAG_NO_INDEX);
    assert_int_equal(nv[4].flags, NGHTTP2_NV_FLAG_NONE);
    assert_int_equal(proxy_h2_out_nv(o, nv, 3), -1);

    /* A response: :status, no reason phrase. */
    s = proxy_h2_out_sink(o, SC_STR_NULL, 0);
    assert_int_equal(s.ops->status(&s, 404, SC_STR("Not Here")), 0);
    assert_int_equal(s.ops->header(&s, SC_STR("Host"), SC_STR("kept in a response")), 0);
    assert_int_equal(s.ops->end(&s), 0);
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, ":status: 404\nhost: kept in a response\n");

    /* Bounded: the store's cap ends the head with SC_ETOOBIG. */
    s = proxy_h2_out_sink(o, SC_STR("http"), 64);
    assert_int_equal(s.ops->request(&s, SC_STR("GET"), SC_STR("/")), 0);
    char big[100];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_not_equal(s.ops->header(&s, SC_STR("x"), sc_str_c(big)), 0);
    assert_int_not_equal(s.ops->end(&s), 0);
    proxy_h2_out_free(o);
    sc_free(o);
}

/* The same rewriting rules as HTTP/1 (proxy_head_request/response), into the HTTP/2 sink. */
static void test_sink_rules(void **state)
{
    (void)state;
    struct proxy_worker *w = SC_NEW(struct proxy_worker);
    struct proxy_dconn_conn *cc = SC_NEW(struct proxy_dconn_conn);
    struct proxy_dconn *dc = &cc->dc;
    struct proxy_cluster *cl = SC_NEW(struct proxy_cluster);
    struct proxy_endpoint *ep = SC_NEW(struct proxy_endpoint);
    struct proxy_route *route = SC_NEW(struct proxy_route);
    struct proxy_listener *lsn = SC_NEW(struct proxy_listener);
    struct proxy_rt *rt = SC_NEW(struct proxy_rt);
    ep->name = "10.0.0.9:8080";
    cl->eps = ep;
    cl->neps = 1;
    route->cluster = cl;
    struct proxy_exch *ex = &dc->ex;
    ex->w = w;
    ex->dc = dc;
    dc->cl = &cc->cl;
    ex->cl = dc->cl;
    ex->route = route;
    lsn->tls.xfcc = PROXY_XFCC_SANITIZE;
    ex->lsn = lsn;
    ex->rt = rt;
    ex->minor = 1;
    snprintf(dc->cl->ip, sizeof(dc->cl->ip), "192.0.2.7");

    struct sc_http_header hh[16];
    struct sc_http_msg m = { .headers = hh };
    struct sc_http_error err;
    const char *req = "POST /rpc HTTP/1.1\r\nHost: api:81\r\nTE: trailers\r\nConnection: TE\r\n"
                      "Content-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n"
                      "X-Request-Id: r1\r\n\r\n";
    assert_true(
        sc_http1_parse_request(req, strlen(req), 0, &sc_http1_default_limits, &m, 16, &err) > 0);
    struct proxy_h2_out *o = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink s = proxy_h2_out_sink(o, SC_STR("http"), 0);
    assert_int_equal(proxy_head_request(ex, &m, m.target, &s), 0);
    char text[2048];
    nv_text(o, text, sizeof(text));
    /* Pseudo-header fields first, Host as :authority, te kept as trailers, no framing fields,
     * the forwarding fields added as for HTTP/1. */
    assert_non_null(
        strstr(text, ":method: POST\n:scheme: http\n:path: /rpc\n:authority: api:81\n"));
    assert_non_null(strstr(text, "\nte: trailers\n"));
    assert_non_null(strstr(text, "\ncontent-type: application/grpc\n"));
    assert_non_null(strstr(text, "\nvia: 1.1 sidecar\n"));
    assert_non_null(strstr(text, "\nx-forwarded-for: 192.0.2.7\n"));
    assert_non_null(strstr(text, "\nx-forwarded-proto: http\n"));
    assert_non_null(strstr(text, "\nx-request-id: r1\n"));
    assert_non_null(strstr(text, "\ntraceparent: 00-"));
    assert_null(strstr(text, "connection"));
    assert_null(strstr(text, "transfer-encoding"));
    assert_null(strstr(text, "\nhost:"));

    const char *resp = "HTTP/1.1 503 Unavailable\r\nContent-Type: application/grpc\r\n"
                       "Connection: close\r\nContent-Length: 0\r\n\r\n";
    memset(&m, 0, sizeof(m));
    m.headers = hh;
    assert_true(sc_http1_parse_response(resp, strlen(resp), 0, &sc_http1_default_limits, 0, &m, 16,
                                        &err) > 0);
    s = proxy_h2_out_sink(o, SC_STR_NULL, 0);
    assert_int_equal(proxy_head_response(ex, &m, &s), 0);
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, ":status: 503\ncontent-type: application/grpc\ncontent-length: 0\n"
                              "via: 1.1 sidecar\n");
    proxy_h2_out_free(o);
    sc_free(o);
    sc_free(w);
    sc_free(cc);
    sc_free(cl);
    sc_free(ep);
    sc_free(route);
    sc_free(lsn);
    sc_free(rt);
}

static void test_trailers(void **state)
{
    (void)state;
    struct proxy_h2_head *hd = SC_NEW(struct proxy_h2_head);
    const char *why;
    const struct kv tr[] = { { "grpc-status", "3" },
                             { "grpc-message", "bad%20arg" },
                             { "content-length", "7" },
                             { "x-sum", "abc" },
                             { NULL, NULL } };
    assert_int_equal(feed(hd, PROXY_H2_TRAILERS, tr, true, 0, &why), PROXY_H2_OK);
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    assert_int_equal(proxy_h2_trailers_to_h1(&hd->m, &b), 0);
    assert_string_equal(sc_buf_cstr(&b),
                        "0\r\ngrpc-status: 3\r\ngrpc-message: bad%20arg\r\nx-sum: abc\r\n\r\n");
    /* What the chunked decoder takes whole. */
    struct sc_http1_chunked ch;
    sc_http1_chunked_init(&ch);
    size_t used = 0;
    struct sc_str data;
    struct sc_http_error err;
    assert_int_equal(sc_http1_chunked_next(&ch, b.p, b.len, &used, &data, &err),
                     SC_HTTP1_CHUNK_DONE);
    assert_int_equal(used, b.len);
    /* And back: an HTTP/1 trailer section into the HTTP/2 sink. */
    struct proxy_h2_out *o = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink s = proxy_h2_out_sink(o, SC_STR_NULL, 0);
    assert_int_equal(proxy_h2_trailers_from_h1(SC_STR("Grpc-Status: 0\r\nX-Sum:  abc \r\n"
                                                      "Transfer-Encoding: x\r\nHost: h\r\n\r\n"),
                                               &s),
                     0);
    char text[256];
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, "grpc-status: 0\nx-sum: abc\n");
    sc_buf_cleanup(&b);
    proxy_h2_out_free(o);
    sc_free(o);
    proxy_h2_head_free(hd);
    sc_free(hd);
}

static void test_grpc(void **state)
{
    (void)state;
    assert_true(proxy_grpc_is(SC_STR("application/grpc")));
    assert_true(proxy_grpc_is(SC_STR("application/grpc+proto")));
    assert_true(proxy_grpc_is(SC_STR("Application/GRPC;charset=utf-8")));
    assert_false(proxy_grpc_is(SC_STR("application/grpc-web")));
    assert_false(proxy_grpc_is(SC_STR("application/json")));
    assert_false(proxy_grpc_is(SC_STR("application/grp")));
    uint64_t ms = 0;
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("1H"), &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("2M"), &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("3S"), &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("250m"), &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("1500u"), &ms), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("1n"), &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(proxy_grpc_timeout_parse(SC_STR("99999999S"), &ms), 0);
    assert_int_equal(ms, 99999999000ULL);
    const char *bad[] = { "", "S", "1", "123456789S", "1s", "-1S", "1 S", "1.5S" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(proxy_grpc_timeout_parse(sc_str_c(bad[i]), &ms), -1);
    }
    assert_int_equal(proxy_grpc_from_http(400), PROXY_GRPC_INTERNAL);
    assert_int_equal(proxy_grpc_from_http(401), PROXY_GRPC_UNAUTHENTICATED);
    assert_int_equal(proxy_grpc_from_http(403), PROXY_GRPC_PERMISSION_DENIED);
    assert_int_equal(proxy_grpc_from_http(404), PROXY_GRPC_UNIMPLEMENTED);
    assert_int_equal(proxy_grpc_from_http(429), PROXY_GRPC_UNAVAILABLE);
    assert_int_equal(proxy_grpc_from_http(502), PROXY_GRPC_UNAVAILABLE);
    assert_int_equal(proxy_grpc_from_http(503), PROXY_GRPC_UNAVAILABLE);
    assert_int_equal(proxy_grpc_from_http(504), PROXY_GRPC_UNAVAILABLE);
    assert_int_equal(proxy_grpc_from_http(500), PROXY_GRPC_UNKNOWN);
    assert_int_equal(proxy_grpc_for_local(503), PROXY_GRPC_UNAVAILABLE);
    assert_int_equal(proxy_grpc_for_local(504), PROXY_GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(proxy_grpc_for_local(429), PROXY_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(proxy_grpc_for_local(403), PROXY_GRPC_PERMISSION_DENIED);
    assert_int_equal(proxy_grpc_for_local(401), PROXY_GRPC_UNAUTHENTICATED);
}

static void test_grpc_local(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 256);
    assert_int_equal(proxy_grpc_message_encode(&b, SC_STR("no healthy upstream")), 0);
    assert_string_equal(sc_buf_cstr(&b), "no healthy upstream");
    sc_buf_reset(&b);
    assert_int_equal(proxy_grpc_message_encode(&b, SC_STR("50% \xc3\xa9\n")), 0);
    assert_string_equal(sc_buf_cstr(&b), "50%25 %C3%A9%0A");
    sc_buf_cleanup(&b);

    struct proxy_exch *ex = SC_NEW(struct proxy_exch);
    struct proxy_h2_out *o = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink s = proxy_h2_out_sink(o, SC_STR_NULL, 0);
    assert_int_equal(proxy_grpc_local_reply(ex, 503, SC_STR("no healthy upstream"), &s), 0);
    char text[512];
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, ":status: 200\ncontent-type: application/grpc\ngrpc-status: 14\n"
                              "grpc-message: no healthy upstream\n");
    /* Rate limited: RESOURCE_EXHAUSTED with the rate-limit headers. */
    ex->pol.has_rl = true;
    ex->pol.rl.limit = 10;
    ex->pol.rl.remaining = 0;
    ex->pol.rl.reset_s = 3;
    ex->pol.rl.retry_after = 3;
    ex->pol.rl.allowed = false;
    s = proxy_h2_out_sink(o, SC_STR_NULL, 0);
    assert_int_equal(proxy_grpc_local_reply(ex, 429, SC_STR("rate limited"), &s), 0);
    nv_text(o, text, sizeof(text));
    assert_string_equal(text, ":status: 200\ncontent-type: application/grpc\ngrpc-status: 8\n"
                              "grpc-message: rate limited\nx-ratelimit-limit: 10\n"
                              "x-ratelimit-remaining: 0\nx-ratelimit-reset: 3\nretry-after: 3\n");
    proxy_h2_out_free(o);
    sc_free(o);
    sc_free(ex);
}

/* Values new on every request are never indexed (they would only churn the peer's table), nor
 * are credentials; everything else may be. */
static void test_never_indexed(void **state)
{
    (void)state;
    struct proxy_h2_out *o = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink s = proxy_h2_out_sink(o, SC_STR("http"), 0);
    assert_int_equal(s.ops->request(&s, SC_STR("GET"), SC_STR("/")), 0);
    static const char *const never[] = { "X-Request-Id", "traceparent",       "x-b3-traceid",
                                         "x-b3-spanid",  "x-b3-parentspanid", "b3",
                                         "grpc-timeout", "x-client-trace-id", "proxy-authorization",
                                         "authorization" };
    static const char *const kept[] = { "tracestate", "x-request",  "content-type",
                                        "b4",         "user-agent", "date" };
    for (size_t i = 0; i < SC_ARRAY_LEN(never); i++) {
        assert_int_equal(s.ops->header(&s, sc_str_c(never[i]), SC_STR("v")), 0);
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(kept); i++) {
        assert_int_equal(s.ops->header(&s, sc_str_c(kept[i]), SC_STR("v")), 0);
    }
    assert_int_equal(s.ops->end(&s), 0);
    nghttp2_nv nv[32];
    int n = proxy_h2_out_nv(o, nv, SC_ARRAY_LEN(nv));
    assert_int_equal(n, 3 + (int)SC_ARRAY_LEN(never) + (int)SC_ARRAY_LEN(kept));
    for (int i = 3; i < n; i++) {
        bool no = i < 3 + (int)SC_ARRAY_LEN(never);
        assert_int_equal(nv[i].flags, no ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE);
    }
    proxy_h2_out_free(o);
    sc_free(o);
}

/* The worker's nghttp2 allocator: blocks of every size hold what was written, small ones are
 * recycled by size class, realloc keeps the contents across classes and to large blocks, and
 * the kept blocks are freed with the allocator. */
static void test_mem(void **state)
{
    (void)state;
    struct proxy_worker *w = SC_NEW(struct proxy_worker);
    nghttp2_mem *m = proxy_h2_mem(w);
    assert_ptr_equal(proxy_h2_mem(w), m);
    void *ud = m->mem_user_data;
    char *p[64];
    for (size_t i = 0; i < SC_ARRAY_LEN(p); i++) {
        size_t size = 1 + i * 37; /* 1 .. 2332 bytes: every class and large blocks */
        p[i] = m->malloc(size, ud);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        memset(p[i], (int)i, size);
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(p); i++) {
        size_t size = 1 + i * 37;
        for (size_t k = 0; k < size; k++) {
            assert_int_equal((unsigned char)p[i][k], (unsigned char)i);
        }
        m->free(p[i], ud);
    }
    /* A freed small block comes back for the same class. */
    char *a = m->malloc(100, ud);
    m->free(a, ud);
    char *b = m->malloc(90, ud);
    if (a != b) {
        /* Sanitized builds keep nothing: every block is malloc's. */
        m->free(b, ud);
        b = m->malloc(100, ud);
    }
    memcpy(b, "0123456789", 10);
    /* Growing within its class keeps the block; past it, and to a large block, the contents. */
    char *c = m->realloc(b, 20, ud);
    assert_memory_equal(c, "0123456789", 10);
    c = m->realloc(c, 500, ud);
    assert_memory_equal(c, "0123456789", 10);
    c = m->realloc(c, 5000, ud);
    assert_memory_equal(c, "0123456789", 10);
    c = m->realloc(c, 9000, ud);
    assert_memory_equal(c, "0123456789", 10);
    m->free(c, ud);
    char *z = m->calloc(3, 50, ud);
    for (size_t k = 0; k < 150; k++) {
        assert_int_equal(z[k], 0);
    }
    m->free(z, ud);
    /* Large blocks (nghttp2's 16 KiB frame buffer) have their later pages unbacked when fresh:
     * they still hold whatever is written, anywhere, through a realloc; calloc's are zero. */
    for (size_t round = 0; round < 4; round++) {
        size_t size = 16384 + 10 + round * 8192;
        unsigned char *big = m->malloc(size, ud);
        assert_non_null(big);
        for (size_t k = 0; k < size; k++) {
            big[k] = (unsigned char)(k * 7 + round);
        }
        big = m->realloc(big, size + 4096, ud);
        for (size_t k = 0; k < size; k++) {
            assert_int_equal(big[k], (unsigned char)(k * 7 + round));
        }
        m->free(big, ud);
        unsigned char *zero = m->calloc(1, size, ud);
        for (size_t k = 0; k < size; k++) {
            assert_int_equal(zero[k], 0);
        }
        m->free(zero, ud);
    }
    m->free(m->realloc(NULL, 10, ud), ud);
    m->free(NULL, ud);
    proxy_h2_mem_free(w);
    assert_null(w->h2mem);
    proxy_h2_mem_free(w);
    sc_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),  cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bounds),   cmocka_unit_test(test_response),
        cmocka_unit_test(test_sink_ops), cmocka_unit_test(test_sink_rules),
        cmocka_unit_test(test_grpc),     cmocka_unit_test(test_grpc_local),
        cmocka_unit_test(test_trailers), cmocka_unit_test(test_never_indexed),
        cmocka_unit_test(test_mem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
