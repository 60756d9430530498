// SPDX-License-Identifier: Apache-2.0
// Unit tests for the proxy's routing and head rewriting (src/roles/proxy/proxy_headers.c), with
// exact expectations: the routing path of every target form, each match kind (prefix, exact path,
// anchored regex, methods, header value/presence/absence), and the forwarding rules of the
// upstream request head (hop-by-hop and Connection-named headers removed, X-Forwarded-For
// appended in order, Via appended, X-Request-Id kept or generated as a UUID v4, traceparent keeping
// the trace id with a new parent id, Host from an absolute-form target, Expect answered locally)
// and of the client response head, and a rebuilt head that stops exactly at its buffer's cap.
// Every rewritten head must itself parse with the strict parser.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/http1.h"
#include "roles/proxy/proxy_conn.h"

#define MAXH 64

/* proxy_worker.c provides this in the binary; a fixed sequence keeps the tests deterministic. */
uint64_t proxy_rand(struct proxy_worker *w)
{
    (void)w;
    static uint64_t x = 0x0123456789abcdefULL;
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

/* proxy_tls.c provides this in the binary: these heads come over plaintext with XFCC sanitised. */
int proxy_tls_xfcc(struct proxy_exch *ex, const struct sc_http_msg *m, struct proxy_hsink *b)
{
    (void)ex;
    (void)m;
    (void)b;
    return 0;
}

/* The exchange and its codecs provide these in the binary; routes here have no CORS policy, so
 * a preflight is never answered and no original destination is read. */
void proxy_local_reply(struct proxy_exch *r, int status, const char *reason, unsigned flags)
{
    (void)r;
    (void)status;
    (void)reason;
    (void)flags;
}

void proxy_local_reply_body(struct proxy_exch *r, int status, struct sc_str body, unsigned flags)
{
    (void)r;
    (void)status;
    (void)body;
    (void)flags;
}

/* proxy_route_find's connection conditions (proxy_route_match.c): no route here has any. */
bool proxy_route_conn_takes(const struct proxy_route *r, struct proxy_dconn *dc)
{
    (void)r;
    (void)dc;
    return true;
}

struct parsed {
    struct sc_http_msg m;
    struct sc_http_header h[MAXH];
};

static void parse_req(const char *text, struct parsed *p)
{
    memset(p, 0, sizeof(*p));
    p->m.headers = p->h;
    struct sc_http_error err;
    int rc =
        sc_http1_parse_request(text, strlen(text), 0, &sc_http1_default_limits, &p->m, MAXH, &err);
    assert_true(rc > 0);
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

static void test_target_path(void **state)
{
    (void)state;
    struct sc_str origin;
    struct sc_str p = proxy_target_path(SC_STR("/a/b?x=1"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/a/b")));
    assert_true(sc_str_eq(origin, SC_STR("/a/b?x=1")));
    p = proxy_target_path(SC_STR("http://h:8080/c?d"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/c")));
    assert_true(sc_str_eq(origin, SC_STR("/c?d")));
    p = proxy_target_path(SC_STR("http://h:8080"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/")));
    assert_true(sc_str_eq(origin, SC_STR("/")));
    p = proxy_target_path(SC_STR("http://h:8080?q=1"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/")));
    assert_true(sc_str_eq(origin, SC_STR("?q=1")));
    p = proxy_target_path(SC_STR("example.test:443"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/")));
    p = proxy_target_path(SC_STR("*"), &origin);
    assert_true(sc_str_eq(p, SC_STR("/")));
}

static void test_idempotent(void **state)
{
    (void)state;
    assert_true(proxy_idempotent(SC_STR("GET")));
    assert_true(proxy_idempotent(SC_STR("PUT")));
    assert_true(proxy_idempotent(SC_STR("DELETE")));
    assert_false(proxy_idempotent(SC_STR("POST")));
    assert_false(proxy_idempotent(SC_STR("PATCH")));
    assert_false(proxy_idempotent(SC_STR("get")));
}

static bool matches(struct proxy_route *rt, const char *req)
{
    struct parsed p;
    parse_req(req, &p);
    struct sc_str origin;
    struct sc_str path = proxy_target_path(p.m.target, &origin);
    pcre2_match_data *md = pcre2_match_data_create(8, NULL);
    bool ok = proxy_route_matches(rt, &p.m, path, md);
    pcre2_match_data_free(md);
    return ok;
}

static void test_route_match(void **state)
{
    (void)state;
    struct proxy_route rt;
    memset(&rt, 0, sizeof(rt));
    char prefix[] = "/api";
    rt.prefix = prefix;
    assert_true(matches(&rt, "GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_true(matches(&rt, "GET /api?q HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(matches(&rt, "GET /ap HTTP/1.1\r\nHost: a\r\n\r\n"));

    memset(&rt, 0, sizeof(rt));
    char path[] = "/exact";
    rt.path = path;
    assert_true(matches(&rt, "GET /exact?x HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(matches(&rt, "GET /exact/ HTTP/1.1\r\nHost: a\r\n\r\n"));

    memset(&rt, 0, sizeof(rt));
    int ec;
    PCRE2_SIZE off;
    rt.re = pcre2_compile((PCRE2_SPTR) "(?:/u/[0-9]+)\\z", PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                          &ec, &off, NULL);
    assert_non_null(rt.re);
    assert_true(matches(&rt, "GET /u/42 HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(matches(&rt, "GET /u/42/x HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(matches(&rt, "GET /x/u/42 HTTP/1.1\r\nHost: a\r\n\r\n"));
    pcre2_code_free(rt.re);

    memset(&rt, 0, sizeof(rt));
    char get[] = "GET";
    char *methods[] = { get };
    rt.methods = methods;
    rt.nmethods = 1;
    struct proxy_header_match hm[2] = {
        { .name = SC_STR("x-canary"), .value = SC_STR("1"), .present = true },
        { .name = SC_STR("x-debug"), .value = SC_STR_NULL, .present = false },
    };
    rt.headers = hm;
    rt.nheaders = 2;
    assert_true(matches(&rt, "GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\n\r\n"));
    assert_false(matches(&rt, "POST / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\n\r\n"));
    assert_false(matches(&rt, "GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 2\r\n\r\n"));
    assert_false(matches(&rt, "GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\nX-Debug: y\r\n\r\n"));
    assert_false(matches(&rt, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
}

struct fixture {
    struct proxy_worker w;
    struct proxy_dconn dc;
    struct proxy_client client;
    struct proxy_cluster cl;
    struct proxy_endpoint ep;
    struct proxy_route route;
    struct proxy_listener lsn; /* plaintext: XFCC sanitised */
    struct proxy_rt rt;
};

static struct fixture *fixture_new(void)
{
    struct fixture *f = SC_NEW(struct fixture);
    f->ep.name = "10.0.0.9:8080";
    f->cl.eps = &f->ep;
    f->cl.neps = 1;
    f->route.cluster = &f->cl;
    f->dc.w = &f->w;
    f->dc.ex.w = &f->w;
    f->dc.ex.dc = &f->dc;
    f->dc.cl = &f->client;
    f->dc.ex.cl = &f->client;
    f->dc.ex.route = &f->route;
    f->lsn.tls.xfcc = PROXY_XFCC_SANITIZE;
    f->dc.ex.lsn = &f->lsn;
    f->dc.ex.rt = &f->rt;
    f->dc.ex.minor = 1;
    snprintf(f->client.ip, sizeof(f->client.ip), "192.0.2.7");
    sc_buf_init(&f->dc.ex.head, 65536);
    sc_buf_init(&f->dc.out, 65536);
    return f;
}

static void fixture_free(struct fixture *f)
{
    sc_buf_cleanup(&f->dc.ex.head);
    sc_buf_cleanup(&f->dc.out);
    sc_free(f);
}

/* Rewrites request <text> and parses the result into <out>. */
static void rewrite(struct fixture *f, const char *text, struct parsed *in, struct parsed *out)
{
    parse_req(text, in);
    struct sc_str origin;
    (void)proxy_target_path(in->m.target, &origin);
    f->dc.ex.body = in->m.body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED : B_NONE;
    f->dc.ex.upgrade = in->m.upgrade;
    assert_int_equal(proxy_build_req_head(&f->dc.ex, &in->m, origin), 0);
    const char *head = sc_buf_cstr(&f->dc.ex.head);
    parse_req(head, out);
}

static void test_request_rewrite(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    struct parsed in, out;
    char v[256];
    rewrite(f,
            "GET http://h/p?q HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\n"
            "X-Hop: 1\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: T\r\n"
            "Upgrade: h2c\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n"
            "Via: 1.0 edge\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\n"
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
            "X-Keep: k\r\n\r\n",
            &in, &out);
    assert_true(sc_str_eq(out.m.target, SC_STR("/p?q")));
    const char *gone[] = { "connection", "x-hop",   "keep-alive", "proxy-connection",
                           "te",         "trailer", "upgrade" };
    for (size_t i = 0; i < SC_ARRAY_LEN(gone); i++) {
        assert_null(sc_http1_find(&out.m, sc_str_c(gone[i]), NULL));
    }
    assert_string_equal(hval(&out.m, "x-keep", v, sizeof(v)), "k");
    assert_string_equal(hval(&out.m, "host", v, sizeof(v)), "h");
    assert_string_equal(hval(&out.m, "x-forwarded-for", v, sizeof(v)),
                        "1.1.1.1, 2.2.2.2, 3.3.3.3, 192.0.2.7");
    size_t from = 0, n = 0;
    while (sc_http1_find(&out.m, SC_STR("x-forwarded-for"), &from)) {
        n++;
    }
    assert_int_equal(n, 1);
    assert_string_equal(hval(&out.m, "via", v, sizeof(v)), "1.0 edge, 1.1 sidecar");
    assert_string_equal(hval(&out.m, "x-forwarded-proto", v, sizeof(v)), "http");
    assert_string_equal(hval(&out.m, "x-request-id", v, sizeof(v)), "abc");
    assert_int_equal(f->dc.ex.request_id_len, 3);
    hval(&out.m, "traceparent", v, sizeof(v));
    assert_int_equal(strlen(v), 55);
    assert_memory_equal(v, "00-0af7651916cd43dd8448eb211c80319c-", 36);
    assert_memory_not_equal(v + 36, "b7ad6b7169203331", 16);
    assert_string_equal(v + 52, "-01");
    fixture_free(f);
}

static void test_request_generated_ids_and_framing(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    struct parsed in, out;
    char v[256];
    f->dc.ex.minor = 0;
    rewrite(f, "POST /u HTTP/1.0\r\nContent-Length: 3\r\ntraceparent: bogus\r\n\r\n", &in, &out);
    assert_string_equal(hval(&out.m, "host", v, sizeof(v)), "10.0.0.9:8080");
    assert_string_equal(hval(&out.m, "via", v, sizeof(v)), "1.0 sidecar");
    assert_string_equal(hval(&out.m, "x-forwarded-for", v, sizeof(v)), "192.0.2.7");
    assert_int_equal(out.m.body, SC_HTTP_BODY_LENGTH);
    assert_int_equal(out.m.content_length, 3);
    hval(&out.m, "x-request-id", v, sizeof(v));
    assert_int_equal(strlen(v), 36);
    assert_int_equal(v[14], '4');
    assert_true(strchr("89ab", v[19]) != NULL);
    hval(&out.m, "traceparent", v, sizeof(v));
    assert_int_equal(strlen(v), 55);
    assert_memory_equal(v, "00-", 3);
    assert_memory_not_equal(v + 3, "00000000000000000000000000000000", 32);
    fixture_free(f);

    f = fixture_new();
    rewrite(f, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &in,
            &out);
    assert_int_equal(out.m.body, SC_HTTP_BODY_CHUNKED);
    size_t from = 0, nte = 0;
    while (sc_http1_find(&out.m, SC_STR("transfer-encoding"), &from)) {
        nte++;
    }
    assert_int_equal(nte, 1);
    fixture_free(f);

    f = fixture_new();
    rewrite(f, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            &in, &out);
    assert_string_equal(hval(&out.m, "connection", v, sizeof(v)), "upgrade");
    assert_string_equal(hval(&out.m, "upgrade", v, sizeof(v)), "websocket");
    fixture_free(f);
}

static void test_request_absolute_form_and_expect(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    struct parsed in, out;
    char v[256];
    f->dc.ex.expect = true;
    rewrite(f,
            "PUT http://u:p@api.example:81/x?y HTTP/1.1\r\nHost: other\r\n"
            "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            &in, &out);
    assert_true(sc_str_eq(out.m.target, SC_STR("/x?y")));
    assert_string_equal(hval(&out.m, "host", v, sizeof(v)), "api.example:81");
    size_t from = 0, n = 0;
    while (sc_http1_find(&out.m, SC_STR("host"), &from)) {
        n++;
    }
    assert_int_equal(n, 1);
    assert_null(sc_http1_find(&out.m, SC_STR("expect"), NULL));
    fixture_free(f);
}

/* Builds the head of <text> into a head buffer capped at <max> (grown to <cap> first, so the
 * appends take their fast path up to the cap). Returns the result and the length built. */
static int build_capped(const char *text, size_t max, size_t cap, size_t *len)
{
    struct fixture *f = fixture_new();
    struct parsed in;
    parse_req(text, &in);
    struct sc_str origin;
    (void)proxy_target_path(in.m.target, &origin);
    (void)sc_buf_reserve(&f->dc.ex.head, cap);
    f->dc.ex.head.max = max;
    int rc = proxy_build_req_head(&f->dc.ex, &in.m, origin);
    *len = f->dc.ex.head.len;
    assert_true(*len <= max);
    fixture_free(f);
    return rc;
}

static void test_request_head_cap(void **state)
{
    (void)state;
    char text[1400];
    char big[1001];
    memset(big, 'b', 1000);
    big[1000] = '\0';
    snprintf(text, sizeof(text), "GET /p HTTP/1.1\r\nHost: h\r\nX-Big: %s\r\nX-A: 1\r\n\r\n", big);
    size_t full = 0, len = 0;
    assert_int_equal(build_capped(text, 65536, 0, &full), 0);
    for (size_t cap = 0; cap <= 4096; cap += 4096) {
        assert_int_equal(build_capped(text, full, cap, &len), 0);
        assert_int_equal(len, full);
        for (size_t max = full - 3; max < full; max++) {
            assert_int_equal(build_capped(text, max, cap, &len), SC_ETOOBIG);
        }
        assert_int_equal(build_capped(text, 900, cap, &len), SC_ETOOBIG);
    }
}

static void test_response_rewrite(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    const char *resp = "HTTP/1.1 200 Fine\r\nConnection: close, X-Up\r\nX-Up: 1\r\n"
                       "Keep-Alive: 3\r\nTransfer-Encoding: chunked\r\nVia: 1.1 app\r\n"
                       "X-App: a\r\n\r\n";
    struct parsed in;
    memset(&in, 0, sizeof(in));
    in.m.headers = in.h;
    struct sc_http_error err;
    assert_true(sc_http1_parse_response(resp, strlen(resp), 0, &sc_http1_default_limits, 0, &in.m,
                                        MAXH, &err) > 0);
    f->dc.ex.keep_alive = true;
    f->dc.ex.rbody = B_CHUNKED; /* passed through as chunked */
    assert_int_equal(proxy_build_resp_head(&f->dc.ex, &in.m, &f->dc.out, f->dc.ex.dechunk), 0);
    const char *out = sc_buf_cstr(&f->dc.out);
    assert_true(strncmp(out, "HTTP/1.1 200 Fine\r\n", 19) == 0);
    assert_non_null(strstr(out, "\r\nX-App: a\r\n"));
    assert_non_null(strstr(out, "\r\nVia: 1.1 app, 1.1 sidecar\r\n"));
    assert_non_null(strstr(out, "\r\nTransfer-Encoding: chunked\r\n"));
    assert_null(strstr(out, "X-Up"));
    assert_null(strstr(out, "Keep-Alive"));
    assert_null(strstr(out, "Connection"));
    /* An HTTP/1.0 client is told to close when the body is chunked (it gets it de-chunked). */
    sc_buf_reset(&f->dc.out);
    f->dc.ex.dechunk = true;
    assert_int_equal(proxy_build_resp_head(&f->dc.ex, &in.m, &f->dc.out, f->dc.ex.dechunk), 0);
    out = sc_buf_cstr(&f->dc.out);
    assert_null(strstr(out, "Transfer-Encoding"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_path),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_request_rewrite),
        cmocka_unit_test(test_request_generated_ids_and_framing),
        cmocka_unit_test(test_request_absolute_form_and_expect),
        cmocka_unit_test(test_request_head_cap),
        cmocka_unit_test(test_response_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
