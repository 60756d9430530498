// SPDX-License-Identifier: Apache-2.0
// Unit tests for the HTTP/1 parser and chunked decoder (the writers: test_http1_write.c). Every
// head case, valid or not, is parsed four ways: from an exact heap copy, flush against a PROT_NONE
// guard page (an overread faults), fed one byte more per call with last_len, and split in two at
// every byte. Prefixes must ask for more or fail exactly as the whole input does; whole inputs must
// give the same result every way. Chunked bodies are decoded whole and one byte at a time.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/http1.h"

#define MAXH 128

/* ---- guard pages ---- */

struct guard {
    char *map;
    size_t maplen;
    char *end; /* the first byte of the PROT_NONE page */
};

static void guard_init(struct guard *g, size_t len)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + pg - 1) / pg + 1;
    g->maplen = (pages + 1) * pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    g->end = g->map + pages * pg;
    assert_int_equal(mprotect(g->end, pg, PROT_NONE), 0);
}

/* Copies <len> bytes so that they end exactly at the guard page; returns where they start. */
static char *guard_put(struct guard *g, const char *src, size_t len)
{
    char *dst = g->end - len;
    memcpy(dst, src, len);
    return dst;
}

static void guard_cleanup(struct guard *g)
{
    munmap(g->map, g->maplen);
}

/* ---- parsing any way ---- */

struct popts {
    bool response;
    unsigned flags;
    const struct sc_http_limits *lim; /* NULL: defaults */
};

struct outcome {
    int rc;
    struct sc_http_error err;
    struct sc_http_msg msg;
    struct sc_http_header h[MAXH];
    const char *base;
};

static void parse(const struct popts *o, const char *buf, size_t len, size_t last,
                  struct outcome *out)
{
    memset(out, 0, sizeof(*out));
    out->msg.headers = out->h;
    out->base = buf;
    const struct sc_http_limits *lim = o->lim ? o->lim : &sc_http1_default_limits;
    if (o->response) {
        out->rc =
            sc_http1_parse_response(buf, len, last, lim, o->flags, &out->msg, MAXH, &out->err);
    } else {
        out->rc = sc_http1_parse_request(buf, len, last, lim, &out->msg, MAXH, &out->err);
    }
}

static bool view_same(const char *ba, struct sc_str a, const char *bb, struct sc_str b)
{
    if (a.len != b.len || (a.p == NULL) != (b.p == NULL)) {
        return false;
    }
    return a.p == NULL || a.p - ba == b.p - bb;
}

/* Whether two parses of the same bytes (perhaps at different addresses) agree on everything. */
static bool outcome_same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc) {
        return false;
    }
    if (a->rc < 0) {
        return a->err.status == b->err.status && strcmp(a->err.reason, b->err.reason) == 0 &&
               a->err.offset == b->err.offset;
    }
    if (a->rc == 0) {
        return true;
    }
    const struct sc_http_msg *x = &a->msg, *y = &b->msg;
    if (!view_same(a->base, x->method, b->base, y->method) ||
        !view_same(a->base, x->target, b->base, y->target) ||
        !view_same(a->base, x->reason, b->base, y->reason) ||
        !view_same(a->base, x->host, b->base, y->host) || x->status != y->status ||
        x->minor_version != y->minor_version || x->nheaders != y->nheaders || x->body != y->body ||
        x->content_length != y->content_length || x->keep_alive != y->keep_alive ||
        x->upgrade != y->upgrade || x->expect_continue != y->expect_continue) {
        return false;
    }
    for (size_t i = 0; i < x->nheaders; i++) {
        if (!view_same(a->base, x->headers[i].name, b->base, y->headers[i].name) ||
            !view_same(a->base, x->headers[i].value, b->base, y->headers[i].value)) {
            return false;
        }
    }
    return true;
}

static void describe(const char *name, const char *what, const struct outcome *o)
{
    print_error("%s: %s: rc %d status %d reason %s offset %zu\n", name, what, o->rc, o->err.status,
                o->err.reason ? o->err.reason : "-", o->err.offset);
}

/* A prefix of <len0> bytes may only ask for more or give what the whole input gives. */
static void check_prefix(const char *name, const struct outcome *whole, size_t len0,
                         const struct outcome *got)
{
    bool ok;
    if (got->rc == 0) {
        ok = whole->rc <= 0 || (size_t)whole->rc > len0;
    } else {
        ok = outcome_same(whole, got);
    }
    if (!ok) {
        describe(name, "whole", whole);
        describe(name, "prefix", got);
        fail_msg("%s: prefix of %zu bytes disagrees with the whole input", name, len0);
    }
}

/* Parses <in> every way; <*out> is the whole-input result, its views into <g>'s copy. */
static void parse_all_ways(const char *name, const struct popts *o, const char *in, size_t len,
                           struct guard *g, struct outcome *out)
{
    /* 1. an exact heap copy */
    char *heap = sc_malloc(len ? len : 1);
    memcpy(heap, in, len);
    struct outcome ref;
    parse(o, heap, len, 0, &ref);

    /* 2. flush against the guard page */
    guard_init(g, len);
    char *flush = guard_put(g, in, len);
    parse(o, flush, len, 0, out);
    if (!outcome_same(&ref, out)) {
        fail_msg("%s: guard-page parse differs", name);
    }

    /* 3. grown one byte at a time, resuming from the previous length; each prefix flush against
     * the guard page while that is cheap */
    struct guard pg;
    bool flush_prefixes = len <= 16384;
    if (flush_prefixes) {
        guard_init(&pg, len);
    }
    size_t last = 0;
    struct outcome got;
    for (size_t k = 1; k <= len; k++) {
        const char *b = flush_prefixes ? guard_put(&pg, in, k) : flush;
        parse(o, b, k, last, &got);
        if (k == len) {
            if (!outcome_same(&ref, &got)) {
                describe(name, "whole", &ref);
                describe(name, "fed", &got);
                fail_msg("%s: fed byte by byte, the whole input differs", name);
            }
        } else {
            check_prefix(name, &ref, k, &got);
        }
        last = got.rc == 0 ? k : 0;
    }
    if (flush_prefixes) {
        guard_cleanup(&pg);
    }

    /* 4. two reads split at every byte (sampled for big inputs) */
    size_t step = len <= 16384 ? 1 : 97;
    for (size_t k = 1; k < len; k += step) {
        parse(o, flush, k, 0, &got);
        check_prefix(name, &ref, k, &got);
        if (got.rc == 0) {
            parse(o, flush, len, k, &got);
            if (!outcome_same(&ref, &got)) {
                describe(name, "whole", &ref);
                describe(name, "split", &got);
                fail_msg("%s: split at %zu, the whole input differs", name, k);
            }
        }
    }
    sc_free(heap);
}

static void expect_view(const char *name, const char *field, struct sc_str got, const char *exp)
{
    if (exp == NULL) {
        if (got.p != NULL) {
            fail_msg("%s: %s: expected none, got \"%.*s\"", name, field, SC_STR_FMT(got));
        }
        return;
    }
    if (got.p == NULL || got.len != strlen(exp) || memcmp(got.p, exp, got.len) != 0) {
        fail_msg("%s: %s: expected \"%s\", got \"%.*s\"", name, field, exp,
                 got.p ? (int)got.len : 4, got.p ? got.p : "NULL");
    }
}

/* ---- valid requests ---- */

struct hexp {
    const char *name;
    const char *value;
};

struct req_case {
    const char *name;
    const char *in;
    const char *method;
    const char *target;
    int minor;
    enum sc_http_body body;
    uint64_t cl;
    bool keep_alive;
    bool upgrade;
    bool expect_continue;
    const char *host; /* NULL: no Host */
    size_t tail;      /* bytes after the head */
    size_t nh;
    struct hexp h[8];
};

static const struct req_case good_requests[] = {
    { .name = "curl GET",
      .in = "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "example.com",
      .nh = 3,
      .h = { { "Host", "example.com" }, { "User-Agent", "curl/8.5.0" }, { "Accept", "*/*" } } },
    { .name = "1.0 without Host",
      .in = "GET /index.html HTTP/1.0\r\n\r\n",
      .method = "GET",
      .target = "/index.html" },
    { .name = "1.0 keep-alive",
      .in = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
      .method = "GET",
      .target = "/",
      .keep_alive = true,
      .nh = 1,
      .h = { { "Connection", "Keep-Alive" } } },
    { .name = "1.1 close",
      .in = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .host = "a",
      .nh = 2,
      .h = { { "Host", "a" }, { "Connection", "close" } } },
    { .name = "close wins over keep-alive",
      .in = "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: foo, CLOSE\r\n\r\n",
      .method = "GET",
      .target = "/",
      .nh = 2,
      .h = { { "Connection", "keep-alive" }, { "Connection", "foo, CLOSE" } } },
    { .name = "POST with Content-Length",
      .in = "POST /api/v1/items HTTP/1.1\r\nHost: api.local:8080\r\nContent-Type: "
            "application/json\r\n"
            "Content-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
      .method = "POST",
      .target = "/api/v1/items",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .cl = 13,
      .keep_alive = true,
      .host = "api.local:8080",
      .tail = 13,
      .nh = 3,
      .h = { { "Host", "api.local:8080" },
             { "Content-Type", "application/json" },
             { "Content-Length", "13" } } },
    { .name = "Content-Length zero with leading zeros",
      .in = "PUT /x HTTP/1.1\r\nHost: h\r\ncontent-length: 000\r\n\r\n",
      .method = "PUT",
      .target = "/x",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .host = "h",
      .nh = 2,
      .h = { { "Host", "h" }, { "content-length", "000" } } },
    { .name = "chunked POST",
      .in = "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
            "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      .method = "POST",
      .target = "/upload",
      .minor = 1,
      .body = SC_HTTP_BODY_CHUNKED,
      .keep_alive = true,
      .host = "h",
      .tail = 15,
      .nh = 2,
      .h = { { "Host", "h" }, { "Transfer-Encoding", "chunked" } } },
    { .name = "gzip then chunked",
      .in = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
            "CHUNKED\r\n\r\n",
      .method = "POST",
      .target = "/",
      .minor = 1,
      .body = SC_HTTP_BODY_CHUNKED,
      .keep_alive = true,
      .host = "h",
      .nh = 3,
      .h = { { "Host", "h" },
             { "Transfer-Encoding", "gzip" },
             { "Transfer-Encoding", "CHUNKED" } } },
    { .name = "CONNECT",
      .in = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
      .method = "CONNECT",
      .target = "example.com:443",
      .minor = 1,
      .keep_alive = true,
      .host = "example.com:443",
      .nh = 1,
      .h = { { "Host", "example.com:443" } } },
    { .name = "CONNECT IPv6",
      .in = "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
      .method = "CONNECT",
      .target = "[::1]:8443",
      .minor = 1,
      .keep_alive = true,
      .host = "[::1]:8443",
      .nh = 1,
      .h = { { "Host", "[::1]:8443" } } },
    { .name = "OPTIONS *",
      .in = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
      .method = "OPTIONS",
      .target = "*",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 1,
      .h = { { "Host", "h" } } },
    { .name = "absolute-form",
      .in = "GET http://example.com/a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n",
      .method = "GET",
      .target = "http://example.com/a?b=c",
      .minor = 1,
      .keep_alive = true,
      .host = "example.com",
      .nh = 1,
      .h = { { "Host", "example.com" } } },
    { .name = "absolute-form with userinfo, an IPv6 literal and no path",
      .in = "GET http://u:p@[::1]:8080?b HTTP/1.1\r\nHost: x\r\n\r\n",
      .method = "GET",
      .target = "http://u:p@[::1]:8080?b",
      .minor = 1,
      .keep_alive = true,
      .host = "x",
      .nh = 1,
      .h = { { "Host", "x" } } },
    { .name = "websocket upgrade",
      .in = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
      .method = "GET",
      .target = "/chat",
      .minor = 1,
      .keep_alive = true,
      .upgrade = true,
      .host = "server.example.com",
      .nh = 5,
      .h = { { "Host", "server.example.com" },
             { "Upgrade", "websocket" },
             { "Connection", "keep-alive, Upgrade" },
             { "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==" },
             { "Sec-WebSocket-Version", "13" } } },
    { .name = "Connection upgrade without Upgrade",
      .in = "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 2,
      .h = { { "Host", "h" }, { "Connection", "upgrade" } } },
    { .name = "Upgrade ignored in 1.0",
      .in = "GET / HTTP/1.0\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
      .method = "GET",
      .target = "/",
      .nh = 2,
      .h = { { "Upgrade", "x" }, { "Connection", "upgrade" } } },
    { .name = "expect 100-continue",
      .in = "PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
      .method = "PUT",
      .target = "/f",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .cl = 3,
      .keep_alive = true,
      .expect_continue = true,
      .host = "h",
      .nh = 3,
      .h = { { "Host", "h" }, { "Expect", "100-Continue" }, { "Content-Length", "3" } } },
    { .name = "expect ignored in 1.0",
      .in = "PUT /f HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
      .method = "PUT",
      .target = "/f",
      .nh = 1,
      .h = { { "Expect", "100-continue" } } },
    { .name = "leading empty lines",
      .in = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 1,
      .h = { { "Host", "h" } } },
    { .name = "OWS trimmed, empty values",
      .in = "GET / HTTP/1.1\r\nHost:h\r\nX-A: \t a  b \t \r\nX-Empty:\r\nX-Spaces:   \r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 4,
      .h = { { "Host", "h" }, { "X-A", "a  b" }, { "X-Empty", "" }, { "X-Spaces", "" } } },
    { .name = "obs-text in value",
      .in = "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9\x80\xff\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 2,
      .h = { { "Host", "h" }, { "X-Name", "caf\xc3\xa9\x80\xff" } } },
    { .name = "tchar names and method",
      .in = "M-SEARCH / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n",
      .method = "M-SEARCH",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 2,
      .h = { { "Host", "h" }, { "!#$%&'*+-.^_`|~09AZaz", "v" } } },
    { .name = "empty Host",
      .in = "GET / HTTP/1.1\r\nHost:\r\n\r\n",
      .method = "GET",
      .target = "/",
      .minor = 1,
      .keep_alive = true,
      .host = "",
      .nh = 1,
      .h = { { "Host", "" } } },
    { .name = "pipelined",
      .in = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
      .method = "GET",
      .target = "/1",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .tail = 28,
      .nh = 1,
      .h = { { "Host", "h" } } },
    { .name = "target with every visible character",
      .in = "GET /a!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\nHost: h\r\n\r\n",
      .method = "GET",
      .target = "/a!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~",
      .minor = 1,
      .keep_alive = true,
      .host = "h",
      .nh = 1,
      .h = { { "Host", "h" } } },
    { .name = "long target past SIMD blocks",
      .in = "GET /0123456789abcdef0123456789abcdef0123456789abcdef?q=0123456789 HTTP/1.1\r\nHost: "
            "very-long-host-name.example.internal.svc.cluster.local\r\n\r\n",
      .method = "GET",
      .target = "/0123456789abcdef0123456789abcdef0123456789abcdef?q=0123456789",
      .minor = 1,
      .keep_alive = true,
      .host = "very-long-host-name.example.internal.svc.cluster.local",
      .nh = 1,
      .h = { { "Host", "very-long-host-name.example.internal.svc.cluster.local" } } },
};

static void check_request(const struct req_case *c, const struct outcome *o)
{
    size_t len = strlen(c->in);
    size_t head = len - c->tail;
    if (o->rc != (int)head) {
        describe(c->name, "result", o);
        fail_msg("%s: expected head length %zu, got %d", c->name, head, o->rc);
    }
    const struct sc_http_msg *m = &o->msg;
    expect_view(c->name, "method", m->method, c->method);
    expect_view(c->name, "target", m->target, c->target);
    expect_view(c->name, "host", m->host, c->host);
    assert_int_equal(m->minor_version, c->minor);
    assert_int_equal(m->body, c->body);
    assert_int_equal(m->content_length, c->cl);
    assert_int_equal(m->keep_alive, c->keep_alive);
    assert_int_equal(m->upgrade, c->upgrade);
    assert_int_equal(m->expect_continue, c->expect_continue);
    if (m->nheaders != c->nh) {
        fail_msg("%s: expected %zu headers, got %zu", c->name, c->nh, m->nheaders);
    }
    for (size_t i = 0; i < c->nh; i++) {
        expect_view(c->name, "header name", m->headers[i].name, c->h[i].name);
        expect_view(c->name, "header value", m->headers[i].value, c->h[i].value);
    }
}

static void test_valid_requests(void **state)
{
    (void)state;
    const struct popts o = { 0 };
    for (size_t i = 0; i < sizeof(good_requests) / sizeof(good_requests[0]); i++) {
        const struct req_case *c = &good_requests[i];
        struct guard g;
        struct outcome out;
        parse_all_ways(c->name, &o, c->in, strlen(c->in), &g, &out);
        check_request(c, &out);
        guard_cleanup(&g);
    }
}

/* ---- invalid requests ---- */

struct bad_case {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    int status;
};

#define H "Host: h\r\n"
/* A literal that may hold NUL bytes, with its length. */
#define BIN(s) s, sizeof(s) - 1

static const struct bad_case bad_requests[] = {
    /* framing: request smuggling vectors */
    { "CL then TE",
      "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400 },
    { "TE then CL",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0, 400 },
    { "duplicate CL", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 0,
      400 },
    { "CL list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n", 0, 400 },
    { "CL letters", "POST / HTTP/1.1\r\n" H "Content-Length: abc\r\n\r\n", 0, 400 },
    { "CL plus sign", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", 0, 400 },
    { "CL minus sign", "POST / HTTP/1.1\r\n" H "Content-Length: -1\r\n\r\n", 0, 400 },
    { "CL inner space", "POST / HTTP/1.1\r\n" H "Content-Length: 1 2\r\n\r\n", 0, 400 },
    { "CL empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 0, 400 },
    { "CL hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x10\r\n\r\n", 0, 400 },
    { "CL overflow", "POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999\r\n\r\n", 0,
      400 },
    { "CL past int64", "POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775808\r\n\r\n", 0,
      400 },
    { "TE gzip only", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 0, 400 },
    { "TE chunked then gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n", 0,
      400 },
    { "TE chunked twice", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n", 0,
      400 },
    { "TE across fields, gzip last",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 0,
      400 },
    { "TE empty element", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked,\r\n\r\n", 0, 400 },
    { "TE with parameter", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n", 0,
      400 },
    { "TE xchunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", 0, 400 },
    { "TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", 0, 400 },
    { "TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400 },
    { "TE vertical tab", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\vchunked\r\n\r\n", 0, 400 },
    /* a Connection header may not take framing or routing away (a proxy drops what it names) */
    { "Connection names Content-Length",
      "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nConnection: content-length\r\n\r\n", 0, 400 },
    { "Connection names Transfer-Encoding first",
      "POST / HTTP/1.1\r\n" H "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
      0, 400 },
    { "Connection names Host", "GET / HTTP/1.1\r\n" H "Connection: keep-alive, host\r\n\r\n", 0,
      400 },
    { "Connection names Trailer", "GET / HTTP/1.1\r\n" H "Connection: close,TRAILER\r\n\r\n", 0,
      400 },
    /* field syntax */
    { "obs-fold", "GET / HTTP/1.1\r\n" H "X-A: a\r\n b\r\n\r\n", 0, 400 },
    { "obs-fold with tab", "GET / HTTP/1.1\r\n" H "X-A: a\r\n\tb\r\n\r\n", 0, 400 },
    { "whitespace before first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 0, 400 },
    { "bare LF in request line", "GET / HTTP/1.1\n" H "\r\n", 0, 400 },
    { "bare LF after method", "GET\n", 0, 400 },
    { "bare LF in field line", "GET / HTTP/1.1\r\n" H "X-A: b\n\r\n", 0, 400 },
    { "bare LF ends head", "GET / HTTP/1.1\r\n" H "\n", 0, 400 },
    { "bare LF in value", "GET / HTTP/1.1\r\n" H "X-A: a\nb\r\n\r\n", 0, 400 },
    { "bare LF leading", "\nGET / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "bare CR in value", "GET / HTTP/1.1\r\n" H "X-A: a\rb\r\n\r\n", 0, 400 },
    { "bare CR in request line", "GET / HTTP/1.1\rX\r\n" H "\r\n", 0, 400 },
    { "bare CR at line start", "GET / HTTP/1.1\r\n" H "\rX: y\r\n\r\n", 0, 400 },
    { "bare CR ends head", "GET / HTTP/1.1\r\n" H "\rx\r\n", 0, 400 },
    { "space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 0, 400 },
    { "tab before colon", "GET / HTTP/1.1\r\n" H "X-A\t: b\r\n\r\n", 0, 400 },
    { "name with (", "GET / HTTP/1.1\r\n" H "X(A): b\r\n\r\n", 0, 400 },
    { "name with @", "GET / HTTP/1.1\r\n" H "X@A: b\r\n\r\n", 0, 400 },
    { "name with obs-text", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: b\r\n\r\n", 0, 400 },
    { "name with NUL", BIN("GET / HTTP/1.1\r\n" H "X\0A: b\r\n\r\n"), 400 },
    { "empty name", "GET / HTTP/1.1\r\n" H ": b\r\n\r\n", 0, 400 },
    { "no colon", "GET / HTTP/1.1\r\n" H "X-A\r\n\r\n", 0, 400 },
    { "NUL in value", BIN("GET / HTTP/1.1\r\n" H "X-A: a\0b\r\n\r\n"), 400 },
    { "SOH in value",
      "GET / HTTP/1.1\r\n" H "X-A: a\x01"
      "b\r\n\r\n",
      0, 400 },
    { "ESC in value", "GET / HTTP/1.1\r\n" H "X-A: \x1b[1m\r\n\r\n", 0, 400 },
    { "DEL in value", "GET / HTTP/1.1\r\n" H "X-A: a\x7f\r\n\r\n", 0, 400 },
    { "CTL deep in a long value",
      "GET / HTTP/1.1\r\n" H "X-A: 0123456789abcdef0123456789abcdef0123\x0b"
      "56789\r\n\r\n",
      0, 400 },
    /* Host */
    { "missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 0, 400 },
    { "two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, 400 },
    { "two Hosts in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 0, 400 },
    { "Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, 400 },
    { "Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, 400 },
    { "Host with userinfo", "GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n", 0, 400 },
    { "Host bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 0, 400 },
    { "Host port only", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 0, 400 },
    { "Host bad percent", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 0, 400 },
    /* request line */
    { "HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 0, 505 },
    { "HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", 0, 505 },
    { "HTTP/0.9 version", "GET / HTTP/0.9\r\n\r\n", 0, 505 },
    { "HTTP/3.1", "GET / HTTP/3.1\r\n" H "\r\n", 0, 505 },
    { "HTTP/1.1x", "GET / HTTP/1.1x\r\n" H "\r\n", 0, 400 },
    { "lowercase http", "GET / http/1.1\r\n" H "\r\n", 0, 400 },
    { "HTTP/11.1", "GET / HTTP/11.1\r\n" H "\r\n", 0, 400 },
    { "HTTP/2", "GET / HTTP/2\r\n" H "\r\n", 0, 400 },
    { "space after version", "GET / HTTP/1.1 \r\n" H "\r\n", 0, 400 },
    { "HTTP/0.9 request", "GET /\r\n\r\n", 0, 400 },
    { "two spaces after method", "GET  / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "two spaces after target", "GET /  HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "leading space", " GET / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "tab separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "method with (", "GE(T / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "target with obs-text", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "target with DEL", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "target with tab", "GET /a\tb HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "relative target", "GET a/b HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "asterisk with GET", "GET * HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "authority-form with GET", "GET example.com:80 HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "CONNECT origin-form", "CONNECT / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "CONNECT port too big", "CONNECT example.com:65536 HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "CONNECT absolute-form", "CONNECT http://example.com:80/ HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form empty host", "GET http://:80/x HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form port not digits", "GET http://h:x?c HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form empty host, no path", "GET http://:xy?c HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form userinfo only", "GET http://u@/x HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "absolute-form bad host byte", "GET http://a\"b/x HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "too many empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 0, 400 },
    { "NUL in request line", BIN("GET /\0 HTTP/1.1\r\n" H "\r\n"), 400 },
};

static void check_error(const char *name, const struct outcome *o, int status)
{
    if (o->rc != SC_EHTTP || o->err.status != status) {
        describe(name, "result", o);
        fail_msg("%s: expected status %d", name, status);
    }
    assert_non_null(o->err.reason);
    assert_true(strlen(o->err.reason) > 0);
}

static void run_bad(const struct popts *o, const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct bad_case *c = &cases[i];
        struct guard g;
        struct outcome out;
        parse_all_ways(c->name, o, c->in, c->len ? c->len : strlen(c->in), &g, &out);
        check_error(c->name, &out, c->status);
        guard_cleanup(&g);
    }
}

static void test_invalid_requests(void **state)
{
    (void)state;
    const struct popts o = { 0 };
    run_bad(&o, bad_requests, sizeof(bad_requests) / sizeof(bad_requests[0]));
}

/* ---- limits ---- */

/* Builds "GET /aaa... HTTP/1.1\r\n" with a target of <tlen> bytes, then <extra>. */
static char *long_line(size_t tlen, const char *extra, size_t *len)
{
    size_t elen = strlen(extra);
    *len = 4 + tlen + 11 + elen;
    char *s = sc_malloc(*len + 1);
    memcpy(s, "GET ", 4);
    s[4] = '/';
    memset(s + 5, 'a', tlen - 1);
    memcpy(s + 4 + tlen, " HTTP/1.1\r\n", 11);
    memcpy(s + 15 + tlen, extra, elen + 1);
    return s;
}

static void run_one(const char *name, const struct popts *o, const char *in, size_t len, int status)
{
    struct guard g;
    struct outcome out;
    parse_all_ways(name, o, in, len ? len : strlen(in), &g, &out);
    if (status > 0) {
        check_error(name, &out, status);
    } else if (out.rc <= 0) {
        describe(name, "result", &out);
        fail_msg("%s: expected success", name);
    }
    guard_cleanup(&g);
}

static void test_limits(void **state)
{
    (void)state;
    const struct popts o = { 0 };
    size_t len;
    /* 8192 bytes of request line is the most allowed: "GET " + target + " HTTP/1.1" */
    char *s = long_line(8192 - 13, H "\r\n", &len);
    run_one("line at the limit", &o, s, len, 0);
    sc_free(s);
    s = long_line(8192 - 12, H "\r\n", &len);
    run_one("line one over", &o, s, len, 414);
    sc_free(s);
    /* an incomplete request line fails as soon as it cannot fit */
    s = long_line(9000, "", &len);
    struct outcome out;
    parse(&o, s, 8194, 0, &out);
    check_error("incomplete long line", &out, 414);
    parse(&o, s, 8193, 0, &out);
    assert_int_equal(out.rc, 0);
    sc_free(s);

    /* 431 by size: 100 fields of ~700 bytes pass 64 KiB */
    size_t cap = 100 * 720 + 64;
    char *big = sc_malloc(cap);
    len = 0;
    len += (size_t)snprintf(big, cap, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 96; i++) {
        len += (size_t)snprintf(big + len, cap - len, "X-%02d: ", i);
        memset(big + len, 'v', 680);
        len += 680;
        memcpy(big + len, "\r\n", 2);
        len += 2;
    }
    memcpy(big + len, "\r\n", 2);
    len += 2;
    run_one("head too large", &o, big, len, 431);
    parse(&o, big, 65536, 0, &out);
    check_error("incomplete head too large", &out, 431);
    parse(&o, big, 65535, 0, &out);
    assert_int_equal(out.rc, 0);

    /* 431 by count: 100 fields pass, 101 do not, and an incomplete head fails once the 101st field
     * line is complete */
    len = (size_t)snprintf(big, cap, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 99; i++) {
        len += (size_t)snprintf(big + len, cap - len, "X-%02d: v\r\n", i);
    }
    size_t at100 = len;
    memcpy(big + len, "\r\n", 3);
    run_one("100 fields", &o, big, len + 2, 0);
    len += (size_t)snprintf(big + len, cap - len, "X-Last: v\r\n\r\n");
    run_one("101 fields", &o, big, len, 431);
    parse(&o, big, len - 2, 0, &out);
    check_error("101 fields, incomplete head", &out, 431);
    parse(&o, big, at100 + 5, 0, &out);
    assert_int_equal(out.rc, 0);

    /* the caller's array is a limit too */
    struct sc_http_header hs[2];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    const char *three = "GET / HTTP/1.1\r\n" H "A: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(sc_http1_parse_request(three, strlen(three), 0, NULL, &msg, 2, &err),
                     SC_EHTTP);
    assert_int_equal(err.status, 431);
    struct sc_http_header hs3[3];
    msg.headers = hs3;
    assert_true(sc_http1_parse_request(three, strlen(three), 0, NULL, &msg, 3, &err) > 0);
    sc_free(big);

    /* small custom limits, all ways */
    const struct sc_http_limits small = { .max_line = 20, .max_head = 64, .max_headers = 2 };
    const struct popts os = { .lim = &small };
    run_one("small: fits", &os, "GET /012345 HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n", 0, 0);
    run_one("small: line", &os, "GET /01234567 HTTP/1.1\r\nHost: h\r\n\r\n", 0, 414);
    run_one("small: count", &os, "GET / HTTP/1.1\r\nHost: h\r\nA: b\r\nC: d\r\n\r\n", 0, 431);
    run_one("small: head", &os,
            "GET / HTTP/1.1\r\nHost: h\r\nA: 01234567890123456789012345678901234\r\n\r\n", 0, 431);
    run_one("small: error before the limit", &os,
            "GET / HTTP/1.1\r\nHost: h\r\nA\x01: 01234567890123456789012345678901234\r\n\r\n", 0,
            431);
    run_one("small: error in a short line", &os, "GET / HTTP/1.1\r\nHost: h\r\nA\x01: 0\r\n\r\n", 0,
            400);
    /* a limit wins over an error earlier in the same line: the error only counts once the line is
     * complete, and by then the limit has been passed */
    const struct sc_http_limits tiny_line = { .max_line = 10, .max_head = 1000, .max_headers = 5 };
    const struct popts ot = { .lim = &tiny_line };
    run_one("tiny: bad byte in a long line", &ot, "GET /\x01xxxxxxxxxxx HTTP/1.1\r\n\r\n", 0, 414);
    run_one("tiny: line limit beyond head limit",
            &(const struct popts){ .lim = &(const struct sc_http_limits){ 100, 12, 5 } },
            "GET /abcdefghijk HTTP/1.1\r\n\r\n", 0, 431);
}

/* A head of 90 fields of 600 bytes fed one byte per call: every prefix asks for more, the last
 * byte completes it, and it stays cheap (one full re-parse per LF, not per byte). */
static void test_trickle(void **state)
{
    (void)state;
    size_t cap = 64 * 1024;
    char *big = sc_malloc(cap);
    size_t len = (size_t)snprintf(big, cap, "GET / HTTP/1.1\r\n" H);
    for (int i = 0; i < 90; i++) {
        len += (size_t)snprintf(big + len, cap - len, "X-%02d: ", i);
        memset(big + len, 'v', 600);
        len += 600;
        memcpy(big + len, "\r\n", 2);
        len += 2;
    }
    memcpy(big + len, "\r\n", 2);
    len += 2;
    struct sc_http_header hs[MAXH];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    size_t last = 0;
    int rc = 0;
    for (size_t k = 1; k <= len; k++) {
        rc = sc_http1_parse_request(big, k, last, NULL, &msg, MAXH, &err);
        assert_true(rc >= 0);
        if (k < len) {
            assert_int_equal(rc, 0);
        }
        last = k;
    }
    assert_int_equal(rc, (int)len);
    assert_int_equal(msg.nheaders, 91);
    sc_free(big);
}

/* ---- responses ---- */

struct resp_case {
    const char *name;
    const char *in;
    unsigned flags;
    int status;
    const char *reason;
    int minor;
    enum sc_http_body body;
    uint64_t cl;
    bool keep_alive;
    size_t nh;
    size_t tail; /* bytes after the head */
};

static const struct resp_case good_responses[] = {
    { .name = "200 with length",
      .in = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
      .status = 200,
      .reason = "OK",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .cl = 5,
      .keep_alive = true,
      .nh = 1,
      .tail = 5 },
    { .name = "chunked",
      .in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      .status = 200,
      .reason = "OK",
      .minor = 1,
      .body = SC_HTTP_BODY_CHUNKED,
      .keep_alive = true,
      .nh = 1 },
    { .name = "until close",
      .in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
      .status = 200,
      .reason = "OK",
      .minor = 1,
      .body = SC_HTTP_BODY_EOF,
      .nh = 1 },
    { .name = "TE not chunked: until close",
      .in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
      .status = 200,
      .reason = "OK",
      .minor = 1,
      .body = SC_HTTP_BODY_EOF,
      .nh = 1 },
    { .name = "204 ignores length",
      .in = "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
      .status = 204,
      .reason = "No Content",
      .minor = 1,
      .keep_alive = true,
      .nh = 1 },
    { .name = "304",
      .in = "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
      .status = 304,
      .reason = "Not Modified",
      .minor = 1,
      .keep_alive = true,
      .nh = 1 },
    { .name = "100 continue",
      .in = "HTTP/1.1 100 Continue\r\n\r\n",
      .status = 100,
      .reason = "Continue",
      .minor = 1,
      .keep_alive = true },
    { .name = "101 upgrade",
      .in = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      .status = 101,
      .reason = "Switching Protocols",
      .minor = 1,
      .keep_alive = true,
      .nh = 2 },
    { .name = "to HEAD",
      .in = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
      .flags = SC_HTTP_RESP_TO_HEAD,
      .status = 200,
      .reason = "OK",
      .minor = 1,
      .keep_alive = true,
      .nh = 1 },
    { .name = "to CONNECT",
      .in = "HTTP/1.1 200 Connection established\r\n\r\n",
      .flags = SC_HTTP_RESP_TO_CONNECT,
      .status = 200,
      .reason = "Connection established",
      .minor = 1,
      .keep_alive = true },
    { .name = "407 to CONNECT has a body",
      .in = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
      .flags = SC_HTTP_RESP_TO_CONNECT,
      .status = 407,
      .reason = "Proxy Authentication Required",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .nh = 1 },
    { .name = "no reason, no SP",
      .in = "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
      .status = 200,
      .reason = "",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .nh = 1 },
    { .name = "empty reason",
      .in = "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
      .status = 404,
      .reason = "",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .nh = 1 },
    { .name = "reason with spaces and obs-text",
      .in = "HTTP/1.1 200 Tr\xe8s  bien\t!\r\nContent-Length: 0\r\n\r\n",
      .status = 200,
      .reason = "Tr\xe8s  bien\t!",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .nh = 1 },
    { .name = "1.0 keep-alive",
      .in = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
      .status = 200,
      .reason = "OK",
      .body = SC_HTTP_BODY_LENGTH,
      .cl = 2,
      .keep_alive = true,
      .nh = 2 },
    { .name = "1.0 default close",
      .in = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
      .status = 200,
      .reason = "OK",
      .body = SC_HTTP_BODY_LENGTH,
      .cl = 2,
      .nh = 1 },
    { .name = "1.1 close",
      .in = "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
      .status = 500,
      .reason = "Oops",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .nh = 2 },
    { .name = "status 999",
      .in = "HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n",
      .status = 999,
      .reason = "Whatever",
      .minor = 1,
      .body = SC_HTTP_BODY_LENGTH,
      .keep_alive = true,
      .nh = 1 },
};

static void test_valid_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(good_responses) / sizeof(good_responses[0]); i++) {
        const struct resp_case *c = &good_responses[i];
        const struct popts o = { .response = true, .flags = c->flags };
        struct guard g;
        struct outcome out;
        size_t len = strlen(c->in);
        parse_all_ways(c->name, &o, c->in, len, &g, &out);
        size_t head = len - c->tail;
        if (out.rc != (int)head) {
            describe(c->name, "result", &out);
            fail_msg("%s: expected head length %zu", c->name, head);
        }
        assert_int_equal(out.msg.status, c->status);
        expect_view(c->name, "reason", out.msg.reason, c->reason);
        assert_int_equal(out.msg.minor_version, c->minor);
        assert_int_equal(out.msg.body, c->body);
        assert_int_equal(out.msg.content_length, c->cl);
        assert_int_equal(out.msg.keep_alive, c->keep_alive);
        assert_int_equal(out.msg.nheaders, c->nh);
        assert_null(out.msg.method.p);
        guard_cleanup(&g);
    }
    /* the 101 response reports the upgrade */
    struct sc_http_header hs[4];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    const char *up = good_responses[7].in;
    assert_true(sc_http1_parse_response(up, strlen(up), 0, NULL, 0, &msg, 4, &err) > 0);
    assert_true(msg.upgrade);
}

static const struct bad_case bad_responses[] = {
    { "short status", "HTTP/1.1 20\r\n\r\n", 0, 502 },
    { "status 099", "HTTP/1.1 099 X\r\n\r\n", 0, 502 },
    { "HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", 0, 502 },
    { "HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", 0, 502 },
    { "ICY", "ICY 200 OK\r\n\r\n", 0, 502 },
    { "two spaces", "HTTP/1.1  200 OK\r\n\r\n", 0, 502 },
    { "status with letters", "HTTP/1.1 2x0 OK\r\n\r\n", 0, 502 },
    { "four digits", "HTTP/1.1 2000 OK\r\n\r\n", 0, 502 },
    { "bare LF status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 0, 502 },
    { "CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 0, 502 },
    { "CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
      502 },
    { "duplicate CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 0, 502 },
    { "bad CL", "HTTP/1.1 200 OK\r\nContent-Length: 3a\r\n\r\n", 0, 502 },
    { "TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 502 },
    { "obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 0, 502 },
    { "space before colon", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n", 0, 502 },
    { "NUL in value", BIN("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n"), 502 },
    { "leading CRLF", "\r\nHTTP/1.1 200 OK\r\n\r\n", 0, 502 },
};

static void test_invalid_responses(void **state)
{
    (void)state;
    const struct popts o = { .response = true };
    run_bad(&o, bad_responses, sizeof(bad_responses) / sizeof(bad_responses[0]));
    /* limits on responses also answer 502 */
    const struct sc_http_limits small = { .max_line = 16, .max_head = 40, .max_headers = 1 };
    const struct popts os = { .response = true, .lim = &small };
    run_one("response line too long", &os, "HTTP/1.1 200 Fine enough\r\n\r\n", 0, 502);
    run_one("response too many fields", &os, "HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\n", 0, 502);
}

/* ---- chunked decoder ---- */

struct chunk_case {
    const char *name;
    const char *in;
    size_t len;       /* 0: strlen */
    int rc;           /* SC_HTTP1_CHUNK_DONE, SC_HTTP1_CHUNK_MORE or SC_EHTTP */
    const char *body; /* decoded data (for DONE and MORE) */
    size_t end;       /* DONE: bytes consumed in all (0: all of the input) */
};

static const struct chunk_case chunk_cases[] = {
    { "one chunk", "5\r\nhello\r\n0\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE, "hello", 0 },
    { "two chunks, hex cases", "3\r\nabc\r\nA\r\n0123456789\r\nb\r\nhello world\r\n0\r\n\r\n", 0,
      SC_HTTP1_CHUNK_DONE, "abc0123456789hello world", 0 },
    { "leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE, "hello", 0 },
    { "16 digits", "0000000000000003\r\nabc\r\n0\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE, "abc", 0 },
    { "extensions", "5;a=b\r\nhello\r\n1 ; name = \"quo\\\"ted\" ;flag\r\n!\r\n0;last\r\n\r\n", 0,
      SC_HTTP1_CHUNK_DONE, "hello!", 0 },
    { "extension names only", "1;a;b;c\r\nx\r\n0\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE, "x", 0 },
    { "trailers", "2\r\nhi\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE,
      "hi", 0 },
    { "stops after final CRLF", "1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, SC_HTTP1_CHUNK_DONE,
      "x", 11 },
    { "only the last chunk", "0\r\n\r\n", 0, SC_HTTP1_CHUNK_DONE, "", 0 },
    { "incomplete", "5\r\nhel", 0, SC_HTTP1_CHUNK_MORE, "hel", 0 },
    { "incomplete trailer", "0\r\nX: y\r\n", 0, SC_HTTP1_CHUNK_MORE, "", 0 },
    { "binary data", BIN("4\r\n\0\r\n\xff\r\n0\r\n\r\n"), SC_HTTP1_CHUNK_DONE, NULL, 0 },
    /* errors */
    { "no size", "\r\nhello\r\n0\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "not hex", "g\r\n", 0, SC_EHTTP, NULL, 0 },
    { "0x prefix", "0x5\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "sign", "-5\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "plus sign", "+5\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "leading space", " 5\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailing space", "5 \r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "17 digits", "00000000000000005\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "bare LF after size", "5\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "bare CR after size", "5\rhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "empty extension", "5;\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension without name", "5;=x\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension without value", "5;a=\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension name then space", "5;a \r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension two words", "5;a b\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension bad char", "5;a=b@c\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension open quote", "5;a=\"x\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "extension CTL in quote", "5;a=\"\x01\"\r\nhello\r\n", 0, SC_EHTTP, NULL, 0 },
    { "missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "LF only after data", "5\r\nhello\n0\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "CR only after data", "5\r\nhello\r0\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "data longer than size", "3\r\nhello\r\n0\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer space before colon", "0\r\nX : y\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer CTL", "0\r\nX: a\x01\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer bare LF", "0\r\nX: a\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer no colon", "0\r\nX\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "trailer empty name", "0\r\n: x\r\n\r\n", 0, SC_EHTTP, NULL, 0 },
    { "final bare LF", "0\r\n\n", 0, SC_EHTTP, NULL, 0 },
    { "final bare CR", "0\r\n\rx", 0, SC_EHTTP, NULL, 0 },
};

/* Decodes <in> handing the decoder at most <step> bytes per call; collects the data. Returns the
 * final result and sets <*used> to the bytes consumed in all. */
static int decode(const char *in, size_t len, size_t step, struct sc_buf *body, size_t *used,
                  struct sc_http_error *err)
{
    struct sc_http1_chunked d;
    sc_http1_chunked_init(&d);
    size_t off = 0;
    int rc = SC_HTTP1_CHUNK_MORE;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        size_t consumed;
        struct sc_str data;
        rc = sc_http1_chunked_next(&d, in + off, n, &consumed, &data, err);
        if (rc < 0) {
            off += consumed;
            break;
        }
        assert_true(consumed <= n);
        if (rc == SC_HTTP1_CHUNK_DATA) {
            assert_true(data.p >= in + off && data.p + data.len == in + off + consumed);
            assert_int_equal(sc_buf_append(body, data.p, data.len), 0);
        } else if (rc == SC_HTTP1_CHUNK_MORE) {
            assert_int_equal(consumed, n);
        }
        off += consumed;
        if (rc == SC_HTTP1_CHUNK_DONE) {
            break;
        }
    }
    *used = off;
    if (rc == SC_HTTP1_CHUNK_DATA) {
        rc = SC_HTTP1_CHUNK_MORE;
    }
    return rc;
}

static void test_chunked(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
        const struct chunk_case *c = &chunk_cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        struct guard g;
        guard_init(&g, len);
        const char *in = guard_put(&g, c->in, len);
        struct sc_buf whole, bytes;
        sc_buf_init(&whole, 1 << 20);
        sc_buf_init(&bytes, 1 << 20);
        size_t used1, used2;
        struct sc_http_error e1, e2;
        int rc1 = decode(in, len, len, &whole, &used1, &e1);
        int rc2 = decode(in, len, 1, &bytes, &used2, &e2);
        if (rc1 != c->rc || rc2 != c->rc) {
            fail_msg("%s: expected %d, got %d whole and %d byte by byte (%s)", c->name, c->rc, rc1,
                     rc2, rc1 < 0 ? e1.reason : "");
        }
        assert_int_equal(used1, used2);
        if (c->rc == SC_EHTTP) {
            assert_int_equal(e1.status, 400);
            assert_int_equal(e2.status, 400);
            assert_string_equal(e1.reason, e2.reason);
            assert_true(strlen(e1.reason) > 0);
        } else {
            assert_int_equal(whole.len, bytes.len);
            assert_memory_equal(whole.p, bytes.p, whole.len);
            if (c->body != NULL) {
                assert_int_equal(whole.len, strlen(c->body));
                assert_memory_equal(whole.p, c->body, whole.len);
            }
        }
        if (c->rc == SC_HTTP1_CHUNK_DONE) {
            assert_int_equal(used1, c->end ? c->end : len);
        }
        sc_buf_cleanup(&whole);
        sc_buf_cleanup(&bytes);
        guard_cleanup(&g);
    }
    /* binary data came through */
    struct sc_buf b;
    sc_buf_init(&b, 64);
    size_t used;
    struct sc_http_error err;
    assert_int_equal(decode("4\r\n\0\r\n\xff\r\n0\r\n\r\n", 14, 14, &b, &used, &err),
                     SC_HTTP1_CHUNK_DONE);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.p, "\0\r\n\xff", 4);
    sc_buf_cleanup(&b);
}

/* Field names with '_' mark the message (headers_with_underscores), wherever the '_' is; a
 * Connection naming TE (as RFC 9110 7.6.1 wants with "TE: trailers") is not framing; with
 * strict_trailers the decoder refuses the trailer fields RFC 9110 6.5.1 forbids, and takes others.
 */
static void test_framing_rules(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool underscore;
    } us[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: a\r\n_x: b\r\n\r\n", true },
        { "GET / HTTP/1.1\r\nHost: a\r\nx_: b\r\nY: c\r\n\r\n", true },
        { "GET /a_b HTTP/1.1\r\nHost: a\r\nX: b_c\r\n\r\n", false },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: TE\r\nTE: trailers\r\n\r\n", false },
    };
    for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++) {
        struct sc_http_header h[8];
        struct sc_http_msg m = { .headers = h };
        struct sc_http_error err = { 0 };
        int rc = sc_http1_parse_request(us[i].in, strlen(us[i].in), 0, &sc_http1_default_limits, &m,
                                        8, &err);
        assert_int_equal(rc, (int)strlen(us[i].in));
        assert_int_equal(m.underscore, us[i].underscore);
    }
    static const struct {
        const char *in;
        bool ok;
    } tr[] = {
        { "0\r\nX-Checksum: 1\r\n\r\n", true },
        { "0\r\nContent-Length: 5\r\n\r\n", false },
        { "0\r\ntransfer-encoding: chunked\r\n\r\n", false },
        { "0\r\nHOST: evil\r\n\r\n", false },
        { "0\r\nAuthorization: Bearer x\r\n\r\n", false },
        { "0\r\nX: 1\r\nCookie: a=b\r\n\r\n", false },
        { "0\r\nproxy-authorization-extra: 1\r\n\r\n", true },
        { "1\r\na\r\n0\r\nhostx: 1\r\n\r\n", true },
    };
    for (size_t i = 0; i < sizeof(tr) / sizeof(tr[0]); i++) {
        for (size_t step = 1; step <= strlen(tr[i].in); step += strlen(tr[i].in) - 1) {
            struct sc_http1_chunked d;
            sc_http1_chunked_init(&d);
            d.strict_trailers = true;
            const char *in = tr[i].in;
            size_t len = strlen(in), off = 0;
            int rc = 0;
            struct sc_http_error err = { 0 };
            while (off < len) {
                size_t n = len - off < step ? len - off : step, used = 0;
                struct sc_str data;
                rc = sc_http1_chunked_next(&d, in + off, n, &used, &data, &err);
                if (rc < 0 || rc == SC_HTTP1_CHUNK_DONE) {
                    break;
                }
                off += used;
            }
            if (tr[i].ok) {
                assert_int_equal(rc, SC_HTTP1_CHUNK_DONE);
            } else {
                assert_int_equal(rc, SC_EHTTP);
                assert_int_equal(err.status, 400);
                assert_string_equal(err.reason, "forbidden trailer field");
            }
        }
        /* Without strict_trailers (a server that does not forward them) every name passes. */
        struct sc_http1_chunked d;
        sc_http1_chunked_init(&d);
        size_t used;
        struct sc_str data;
        struct sc_http_error err = { 0 };
        assert_int_equal(sc_http1_chunked_next(&d, tr[i].in, strlen(tr[i].in), &used, &data, &err),
                         strncmp(tr[i].in, "1\r\n", 3) == 0 ? SC_HTTP1_CHUNK_DATA
                                                            : SC_HTTP1_CHUNK_DONE);
    }
}

static void test_chunked_caps(void **state)
{
    (void)state;
    struct sc_buf body;
    sc_buf_init(&body, 1 << 20);
    struct sc_http_error err;
    size_t used;
    /* a size line of 4096 bytes passes, 4097 does not */
    char *line = sc_malloc(8192);
    for (size_t n = 4096; n <= 4097; n++) {
        size_t len = 0;
        line[len++] = '1';
        line[len++] = ';';
        memset(line + len, 'e', n - 4);
        len += n - 4;
        memcpy(line + len, "\r\nx\r\n0\r\n\r\n", 11);
        len += 10;
        sc_buf_reset(&body);
        int rc = decode(line, len, 7, &body, &used, &err);
        assert_int_equal(rc, n == 4096 ? SC_HTTP1_CHUNK_DONE : SC_EHTTP);
    }
    /* 16 KiB of trailers pass, one byte more does not */
    char *tr = sc_malloc(20000);
    for (size_t total = 16384; total <= 16385; total++) {
        /* "0\r\n", then "X: " value "\r\n" and the final "\r\n": total bytes of trailers */
        size_t vlen = total - 7;
        memcpy(tr, "0\r\nX: ", 6);
        memset(tr + 6, 'v', vlen);
        memcpy(tr + 6 + vlen, "\r\n\r\n", 4);
        size_t len = 6 + vlen + 4;
        sc_buf_reset(&body);
        int rc = decode(tr, len, 1000, &body, &used, &err);
        assert_int_equal(rc, total == 16384 ? SC_HTTP1_CHUNK_DONE : SC_EHTTP);
    }
    /* a failed decoder stays failed; a done one stays done */
    struct sc_http1_chunked d;
    sc_http1_chunked_init(&d);
    struct sc_str data;
    assert_int_equal(sc_http1_chunked_next(&d, "z", 1, &used, &data, &err), SC_EHTTP);
    assert_int_equal(sc_http1_chunked_next(&d, "5\r\n", 3, &used, &data, &err), SC_EHTTP);
    sc_http1_chunked_init(&d);
    assert_int_equal(sc_http1_chunked_next(&d, "0\r\n\r\n", 5, &used, &data, &err),
                     SC_HTTP1_CHUNK_DONE);
    assert_int_equal(sc_http1_chunked_next(&d, "0\r\n\r\n", 5, &used, &data, &err),
                     SC_HTTP1_CHUNK_DONE);
    assert_int_equal(used, 0);
    /* the largest size is accepted and counted down */
    sc_http1_chunked_init(&d);
    assert_int_equal(sc_http1_chunked_next(&d, "ffffffffffffffff\r\nab", 20, &used, &data, &err),
                     SC_HTTP1_CHUNK_DATA);
    assert_int_equal(data.len, 2);
    assert_true(d.remaining == UINT64_MAX - 2);
    sc_free(line);
    sc_free(tr);
    sc_buf_cleanup(&body);
}

/* ---- helpers and writers ---- */

static void test_helpers(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nY: 3\r\n\r\n";
    struct sc_http_header hs[8];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    assert_true(sc_http1_parse_request(in, strlen(in), 0, NULL, &msg, 8, &err) > 0);
    size_t from = 0;
    const struct sc_http_header *h = sc_http1_find(&msg, SC_STR("X-a"), &from);
    assert_non_null(h);
    assert_true(sc_str_eq(h->value, SC_STR("1")));
    h = sc_http1_find(&msg, SC_STR("X-a"), &from);
    assert_non_null(h);
    assert_true(sc_str_eq(h->value, SC_STR("2")));
    assert_null(sc_http1_find(&msg, SC_STR("X-a"), &from));
    assert_null(sc_http1_find(&msg, SC_STR("Z"), NULL));
    assert_non_null(sc_http1_find(&msg, SC_STR("y"), NULL));

    assert_true(sc_http1_has_token(SC_STR("keep-alive, Upgrade"), SC_STR("upgrade")));
    assert_true(sc_http1_has_token(SC_STR(" \tclose\t "), SC_STR("close")));
    assert_true(sc_http1_has_token(SC_STR("a,,b"), SC_STR("b")));
    assert_false(sc_http1_has_token(SC_STR("closed"), SC_STR("close")));
    assert_false(sc_http1_has_token(SC_STR(""), SC_STR("close")));
    assert_false(sc_http1_has_token(SC_STR_NULL, SC_STR("close")));

    assert_string_equal(sc_http1_reason(200), "OK");
    assert_string_equal(sc_http1_reason(431), "Request Header Fields Too Large");
    assert_string_equal(sc_http1_reason(511), "Network Authentication Required");
    assert_string_equal(sc_http1_reason(100), "Continue");
    assert_string_equal(sc_http1_reason(299), "Unknown");
    assert_string_equal(sc_http1_reason(-1), "Unknown");
}

/* The decoder stands between two chunks only before any byte of the next size line: at the
 * start, and after a chunk's CRLF (fed one byte at a time, so every state is seen). */
static void test_chunked_boundary(void **state)
{
    (void)state;
    static const char body[] = "5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\n";
    /* the byte counts after which the decoder stands between chunks */
    static const size_t at[] = { 0, 10, 22 };
    struct sc_http1_chunked d;
    sc_http1_chunked_init(&d);
    size_t k = 0;
    for (size_t i = 0; i <= sizeof(body) - 1; i++) {
        bool want = k < SC_ARRAY_LEN(at) && at[k] == i;
        assert_int_equal(sc_http1_chunked_at_boundary(&d), want);
        k += want;
        if (i == sizeof(body) - 1) {
            break;
        }
        size_t used = 0;
        struct sc_str data;
        int rc = sc_http1_chunked_next(&d, body + i, 1, &used, &data, NULL);
        assert_true(rc >= 0);
        assert_int_equal(used, 1);
    }
    assert_int_equal(k, SC_ARRAY_LEN(at));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_boundary),  cmocka_unit_test(test_valid_requests),
        cmocka_unit_test(test_invalid_requests),  cmocka_unit_test(test_limits),
        cmocka_unit_test(test_trickle),           cmocka_unit_test(test_valid_responses),
        cmocka_unit_test(test_invalid_responses), cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_caps),      cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_framing_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
