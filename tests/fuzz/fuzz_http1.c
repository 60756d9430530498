// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the HTTP/1 head parser. Each input is parsed as a request (with the default
// limits and with small ones, so the limit paths are reached) and as a response, and the results
// must satisfy invariants, not merely not crash: errors carry a known status and a reason; a
// parsed head lies inside the input, its names are tokens and its values hold no CR, LF, NUL or
// CTL; the framing agrees with the fields; the same head cut to its own length parses the same; a
// prefix asks for more or fails the same way; resuming from a prefix gives the fresh result; and a
// chunked body after the head goes through the chunked decoder. Any violation aborts.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http1: invariant failed: %s (%s:%d)\n", #cond, __FILE__,         \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAXH 64

struct res {
    int rc;
    struct sc_http_error err;
    struct sc_http_msg msg;
    struct sc_http_header h[MAXH];
    const char *base;
};

struct mode {
    bool response;
    unsigned flags;
    const struct sc_http_limits *lim;
};

static void run(const struct mode *m, const char *buf, size_t len, size_t last, struct res *r)
{
    memset(r, 0, sizeof(*r));
    r->msg.headers = r->h;
    r->base = buf;
    if (m->response) {
        r->rc = sc_http1_parse_response(buf, len, last, m->lim, m->flags, &r->msg, MAXH, &r->err);
    } else {
        r->rc = sc_http1_parse_request(buf, len, last, m->lim, &r->msg, MAXH, &r->err);
    }
}

/* Parses a copy of exactly <len> bytes, so that reading past the end is caught by ASan. */
static void run_exact(const struct mode *m, const char *src, size_t len, size_t last, struct res *r,
                      char **copy)
{
    *copy = sc_malloc(len ? len : 1);
    memcpy(*copy, src, len);
    run(m, *copy, len, last, r);
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool inside(const struct res *r, struct sc_str v, size_t end)
{
    return v.p != NULL && v.p >= r->base && v.p + v.len <= r->base + end;
}

static bool view_same(const struct res *a, struct sc_str x, const struct res *b, struct sc_str y)
{
    if (x.len != y.len || (x.p == NULL) != (y.p == NULL)) {
        return false;
    }
    return x.p == NULL || x.p - a->base == y.p - b->base;
}

static bool same(const struct res *a, const struct res *b)
{
    if (a->rc != b->rc) {
        return false;
    }
    if (a->rc < 0) {
        return a->err.status == b->err.status && strcmp(a->err.reason, b->err.reason) == 0 &&
               a->err.offset == b->err.offset;
    }
    const struct sc_http_msg *x = &a->msg, *y = &b->msg;
    if (a->rc == 0) {
        return true;
    }
    if (!view_same(a, x->method, b, y->method) || !view_same(a, x->target, b, y->target) ||
        !view_same(a, x->reason, b, y->reason) || !view_same(a, x->host, b, y->host) ||
        x->status != y->status || x->minor_version != y->minor_version ||
        x->nheaders != y->nheaders || x->body != y->body ||
        x->content_length != y->content_length || x->keep_alive != y->keep_alive ||
        x->upgrade != y->upgrade || x->expect_continue != y->expect_continue) {
        return false;
    }
    for (size_t i = 0; i < x->nheaders; i++) {
        if (!view_same(a, x->headers[i].name, b, y->headers[i].name) ||
            !view_same(a, x->headers[i].value, b, y->headers[i].value)) {
            return false;
        }
    }
    return true;
}

static size_t count_field(const struct sc_http_msg *m, const char *name,
                          const struct sc_http_header **last)
{
    size_t n = 0;
    size_t from = 0;
    const struct sc_http_header *h;
    while ((h = sc_http1_find(m, sc_str_c(name), &from)) != NULL) {
        n++;
        *last = h;
    }
    return n;
}

/* Runs the chunked decoder over a body, whole and in two pieces, checking the spans it returns. */
static void check_chunked_body(const char *p, size_t len, size_t split)
{
    int results[2];
    uint64_t bytes[2];
    size_t used[2];
    for (int pass = 0; pass < 2; pass++) {
        struct sc_http1_chunked d;
        sc_http1_chunked_init(&d);
        size_t off = 0;
        uint64_t got = 0;
        int rc = SC_HTTP1_CHUNK_MORE;
        size_t piece_end = pass == 0 ? len : split;
        while (off < len) {
            if (off >= piece_end) {
                piece_end = len;
            }
            size_t consumed = 0;
            struct sc_str data;
            struct sc_http_error err;
            rc = sc_http1_chunked_next(&d, p + off, piece_end - off, &consumed, &data, &err);
            CHECK(consumed <= piece_end - off);
            if (rc < 0) {
                CHECK(rc == SC_EHTTP && err.status == 400 && err.reason && err.reason[0]);
                break;
            }
            if (rc == SC_HTTP1_CHUNK_DATA) {
                CHECK(data.len > 0 && data.p >= p + off && data.p + data.len == p + off + consumed);
                got += data.len;
            }
            off += consumed;
            if (rc == SC_HTTP1_CHUNK_DONE) {
                break;
            }
            CHECK(consumed > 0 || rc == SC_HTTP1_CHUNK_DATA);
        }
        CHECK(d.body_bytes == got);
        results[pass] = rc == SC_HTTP1_CHUNK_DATA ? SC_HTTP1_CHUNK_MORE : rc;
        bytes[pass] = got;
        used[pass] = off;
    }
    CHECK(results[0] == results[1]);
    CHECK(bytes[0] == bytes[1]);
    if (results[0] != SC_EHTTP) {
        CHECK(used[0] == used[1]);
    }
}

static void check_success(const struct mode *m, const char *buf, size_t len, const struct res *r)
{
    const struct sc_http_msg *msg = &r->msg;
    size_t head = (size_t)r->rc;
    CHECK(head <= len);
    CHECK(head >= 4 && memcmp(buf + head - 4, "\r\n\r\n", 4) == 0);
    CHECK(msg->minor_version == 0 || msg->minor_version == 1);
    CHECK(msg->nheaders <= MAXH);
    if (m->response) {
        CHECK(msg->status >= 100 && msg->status <= 999);
        CHECK(msg->method.p == NULL && msg->target.p == NULL);
        CHECK(msg->reason.p != NULL && inside(r, msg->reason, head));
        for (size_t i = 0; i < msg->reason.len; i++) {
            unsigned char c = (unsigned char)msg->reason.p[i];
            CHECK(c == '\t' || c >= 0x20);
            CHECK(c != 0x7f);
        }
    } else {
        CHECK(inside(r, msg->method, head) && msg->method.len > 0);
        for (size_t i = 0; i < msg->method.len; i++) {
            CHECK(is_tchar((unsigned char)msg->method.p[i]));
        }
        CHECK(inside(r, msg->target, head) && msg->target.len > 0);
        for (size_t i = 0; i < msg->target.len; i++) {
            unsigned char c = (unsigned char)msg->target.p[i];
            CHECK(c > 0x20 && c < 0x7f);
        }
        CHECK(msg->status == 0);
    }
    for (size_t i = 0; i < msg->nheaders; i++) {
        struct sc_str n = msg->headers[i].name, v = msg->headers[i].value;
        CHECK(inside(r, n, head) && n.len > 0);
        for (size_t k = 0; k < n.len; k++) {
            CHECK(is_tchar((unsigned char)n.p[k]));
        }
        CHECK(v.p != NULL && inside(r, v, head));
        for (size_t k = 0; k < v.len; k++) {
            unsigned char c = (unsigned char)v.p[k];
            CHECK(c != '\r' && c != '\n' && c != 0 && c != 0x7f && (c >= 0x20 || c == '\t'));
        }
        if (v.len > 0) {
            CHECK(v.p[0] != ' ' && v.p[0] != '\t');
            CHECK(v.p[v.len - 1] != ' ' && v.p[v.len - 1] != '\t');
        }
        if (i > 0) {
            CHECK(n.p > msg->headers[i - 1].value.p); /* in order */
        }
    }
    /* framing agrees with the fields */
    const struct sc_http_header *cl = NULL, *te = NULL, *host = NULL;
    size_t ncl = count_field(msg, "content-length", &cl);
    size_t nte = count_field(msg, "transfer-encoding", &te);
    size_t nhost = count_field(msg, "host", &host);
    CHECK(ncl <= 1);
    CHECK(!(ncl && nte));
    CHECK(!(nte && msg->minor_version == 0));
    if (msg->body == SC_HTTP_BODY_CHUNKED) {
        CHECK(nte > 0);
    }
    if (msg->body == SC_HTTP_BODY_LENGTH) {
        uint64_t v;
        CHECK(ncl == 1 && sc_str_to_u64(cl->value, UINT64_MAX, &v) == 0);
        CHECK(v == msg->content_length);
    } else {
        CHECK(msg->content_length == 0);
    }
    if (!m->response) {
        CHECK(msg->body != SC_HTTP_BODY_EOF);
        if (msg->body == SC_HTTP_BODY_NONE) {
            CHECK(ncl == 0 && nte == 0);
        }
        CHECK(nhost <= 1);
        if (msg->minor_version == 1) {
            CHECK(nhost == 1);
        }
        if (nhost == 1) {
            CHECK(view_same(r, msg->host, r, host->value));
        } else {
            CHECK(msg->host.p == NULL);
        }
        if (msg->minor_version == 0) {
            CHECK(!msg->upgrade && !msg->expect_continue);
        }
    } else {
        bool bodyless = msg->status < 200 || msg->status == 204 || msg->status == 304 ||
                        (m->flags & SC_HTTP_RESP_TO_HEAD) ||
                        ((m->flags & SC_HTTP_RESP_TO_CONNECT) && msg->status < 300);
        if (bodyless) {
            CHECK(msg->body == SC_HTTP_BODY_NONE);
        }
        if (msg->body == SC_HTTP_BODY_EOF) {
            CHECK(!msg->keep_alive);
        }
    }
    if (msg->upgrade) {
        const struct sc_http_header *u = NULL;
        CHECK(count_field(msg, "upgrade", &u) > 0);
    }

    /* the head cut to its own length parses the same; one byte less asks for more */
    struct res cut;
    char *copy;
    run_exact(m, buf, head, 0, &cut, &copy);
    CHECK(same(r, &cut));
    sc_free(copy);
    run_exact(m, buf, head - 1, 0, &cut, &copy);
    CHECK(cut.rc == 0);
    sc_free(copy);

    if (msg->body == SC_HTTP_BODY_CHUNKED) {
        size_t rest = len - head;
        check_chunked_body(buf + head, rest, rest ? (size_t)(unsigned char)buf[len - 1] % rest : 0);
    }
}

static void check(const struct mode *m, const char *buf, size_t len)
{
    struct res r;
    run(m, buf, len, 0, &r);
    CHECK(r.rc == SC_EHTTP || r.rc >= 0);
    if (r.rc < 0) {
        int st = r.err.status;
        if (m->response) {
            CHECK(st == 502);
        } else {
            CHECK(st == 400 || st == 414 || st == 431 || st == 501 || st == 505);
        }
        CHECK(r.err.reason != NULL && r.err.reason[0] != '\0');
        CHECK(r.err.offset <= len);
    } else if (r.rc > 0) {
        check_success(m, buf, len, &r);
    }

    /* a prefix asks for more or gives the same answer; resuming from it gives the fresh result */
    if (len > 1) {
        size_t k = 1 + ((size_t)(unsigned char)buf[0] * 131 + len) % (len - 1);
        struct res pre, res2;
        char *copy;
        run_exact(m, buf, k, 0, &pre, &copy);
        sc_free(copy);
        if (pre.rc != 0) {
            CHECK(same(&r, &pre));
        } else {
            CHECK(r.rc <= 0 || (size_t)r.rc > k);
            run(m, buf, len, k, &res2);
            CHECK(same(&r, &res2));
        }
    }

    /* small inputs also grow one byte per call */
    if (len <= 300) {
        size_t last = 0;
        for (size_t k = 1; k <= len; k++) {
            struct res g;
            char *copy;
            run_exact(m, buf, k, last, &g, &copy);
            if (k == len) {
                CHECK(same(&r, &g));
            } else if (g.rc != 0) {
                CHECK(same(&r, &g));
            }
            sc_free(copy);
            last = g.rc == 0 ? k : 0;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct sc_http_limits small = { .max_line = 40,
                                                 .max_head = 200,
                                                 .max_headers = 4 };
    const char *buf = (const char *)data;
    const struct mode req = { .response = false, .lim = NULL };
    const struct mode req_small = { .response = false, .lim = &small };
    const struct mode resp = { .response = true, .flags = (unsigned)(size & 3), .lim = NULL };
    const struct mode resp_small = { .response = true, .flags = 0, .lim = &small };
    check(&req, buf, size);
    check(&req_small, buf, size);
    check(&resp, buf, size);
    check(&resp_small, buf, size);
    return 0;
}
