// SPDX-License-Identifier: Apache-2.0
// Unit tests for the HTTP/1.1 client (net/h1client.c). The peer is a plain loopback socket the
// test drives between turns of the client's loop (h1_util.h), so it can answer byte by byte, stall,
// close early or reset. Every test asserts the callback fired exactly once (or never, after a
// cancel) and that the loop closes with no handle left: Content-Length, chunked and close-delimited
// bodies split at every byte, interim responses, the head and body caps, the deadline,
// cancel-while-connecting, a refused connection, a peer that closes while the request is being
// written, head-only, discarded and streamed bodies, a stacked transport layer, and the client
// talking to the HTTP/1 server with the TLS layer stacked on both ends through their wrap hooks
// (the test PKI comes from tests/certs.sh, whose path is the first argument).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "h1_util.h"
#include "net/h1client.h"
#include "net/h1server.h"
#include "net/tls.h"

struct tc {
    uv_loop_t loop;
    int lfd, port;
    int fd; /* the accepted connection */
    struct sockaddr_in addr;
    int calls;
    int error;
    int status;
    char reason[128];
    char body[65536];
    size_t body_len;
    char ctype[64];
    char xtls[32];
};

static void on_done(void *arg, const struct sc_h1cli_resp *r)
{
    struct tc *t = arg;
    t->calls++;
    t->error = r->error;
    t->status = r->status;
    snprintf(t->reason, sizeof(t->reason), "%s", r->reason ? r->reason : "");
    t->body_len = r->body.len;
    if (r->body.len) {
        memcpy(t->body, r->body.p, r->body.len < sizeof(t->body) ? r->body.len : sizeof(t->body));
    }
    if (r->msg) {
        const struct sc_http_header *h = sc_http1_find(r->msg, SC_STR("Content-Type"), NULL);
        if (h) {
            snprintf(t->ctype, sizeof(t->ctype), "%.*s", SC_STR_FMT(h->value));
        }
        h = sc_http1_find(r->msg, SC_STR("X-TLS"), NULL);
        if (h) {
            snprintf(t->xtls, sizeof(t->xtls), "%.*s", SC_STR_FMT(h->value));
        }
    }
}

static int setup(void **state)
{
    struct tc *t = SC_NEW(struct tc);
    uv_loop_init(&t->loop);
    t->lfd = tu_listen(&t->port);
    t->fd = -1;
    uv_ip4_addr("127.0.0.1", t->port, &t->addr);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tc *t = *state;
    if (t->fd >= 0) {
        close(t->fd);
    }
    close(t->lfd);
    assert_int_equal(tu_loop_close(&t->loop), 0);
    sc_free(t);
    return 0;
}

static const struct sc_http_header host = { SC_STR("Host"), SC_STR("example") };

static void send_get(struct tc *t, struct sc_h1cli_req *req)
{
    if (!req->method.len) {
        req->method = SC_STR("GET");
        req->target = SC_STR("/x");
        req->headers = &host;
        req->nheaders = 1;
    }
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&t->addr, req, on_done, t, NULL),
                     0);
}

/* Accepts the client's connection and reads its request head; returns it in <out>. */
static void peer_take_request(struct tc *t, char *out, size_t cap)
{
    t->fd = tu_accept(&t->loop, t->lfd);
    assert_true(t->fd >= 0);
    bool eof;
    tu_recv(&t->loop, t->fd, out, cap, "\r\n\r\n", 2000, &eof);
}

static void wait_done(struct tc *t, uint64_t ms)
{
    uint64_t end = tu_now_ms() + ms;
    while (t->calls == 0 && tu_now_ms() < end) {
        uv_run(&t->loop, UV_RUN_NOWAIT);
        usleep(500);
    }
}

static void test_content_length_and_request_bytes(void **state)
{
    struct tc *t = *state;
    const struct sc_http_header hdrs[] = { host, { SC_STR("X-Test"), SC_STR("1") } };
    struct sc_h1cli_req req = {
        .method = SC_STR("POST"),
        .target = SC_STR("/p?q=1"),
        .headers = hdrs,
        .nheaders = 2,
        .body = SC_STR("abc"),
    };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    bool eof;
    if (!strstr(in, "\r\n\r\nabc")) {
        tu_recv(&t->loop, t->fd, in + strlen(in), sizeof(in) - strlen(in), "abc", 2000, &eof);
    }
    assert_string_equal(in, "POST /p?q=1 HTTP/1.1\r\nHost: example\r\nX-Test: 1\r\n"
                            "Content-Length: 3\r\nConnection: close\r\n\r\nabc");
    const char resp[] = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
                        "Content-Length: 5\r\n\r\nhello";
    tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, 0);
    assert_int_equal(t->status, 201);
    assert_string_equal(t->ctype, "text/plain");
    assert_int_equal(t->body_len, 5);
    assert_memory_equal(t->body, "hello", 5);
    tu_spin(&t->loop, 20);
    assert_int_equal(t->calls, 1);
}

static void test_chunked_split_and_interim(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = { 0 };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n1;x=y\r\nd\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
    tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, 0);
    assert_int_equal(t->status, 200);
    assert_int_equal(t->body_len, 20);
    assert_memory_equal(t->body, "abcd0123456789abcdef", 20);
}

static void test_body_until_close(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = { 0 };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
    tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
    tu_spin(&t->loop, 20);
    assert_int_equal(t->calls, 0); /* the body ends only when the connection does */
    close(t->fd);
    t->fd = -1;
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->status, 200);
    assert_int_equal(t->body_len, 13);
    assert_memory_equal(t->body, "until the end", 13);
}

static void test_caps(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = { .max_body = 10 };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n01234567890";
    tu_send(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, SC_ETOOBIG);
    assert_int_equal(t->status, 0);
    close(t->fd);

    /* a chunked body passing the cap */
    t->calls = 0;
    send_get(t, &req);
    peer_take_request(t, in, sizeof(in));
    const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "6\r\n012345\r\n6\r\n678901\r\n0\r\n\r\n";
    tu_send(&t->loop, t->fd, chunked, sizeof(chunked) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, SC_ETOOBIG);
    close(t->fd);

    /* a head over its cap */
    t->calls = 0;
    struct sc_h1cli_req small = { .max_head = 256 };
    send_get(t, &small);
    peer_take_request(t, in, sizeof(in));
    char big[2048];
    int n = snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX-Big: %0600d\r\n\r\n", 0);
    tu_send(&t->loop, t->fd, big, (size_t)n);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_true(t->error == SC_EHTTP || t->error == SC_ETOOBIG);
}

static void test_deadline(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = { .timeout_ms = 100 };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in)); /* and never answer */
    uint64_t t0 = tu_now_ms();
    wait_done(t, 3000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, UV_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 < 3000);
}

static void test_cancel_while_connecting(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"), .target = SC_STR("/"), .headers = &host, .nheaders = 1
    };
    struct sc_h1cli *c = NULL;
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&t->addr, &req, on_done, t, &c), 0);
    assert_non_null(c);
    sc_h1cli_cancel(c); /* the connect is still pending */
    tu_spin(&t->loop, 50);
    assert_int_equal(t->calls, 0);
}

static void test_refused_and_early_close(void **state)
{
    struct tc *t = *state;
    int port = 0;
    int l2 = tu_listen(&port);
    close(l2); /* nobody listens there now */
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"), .target = SC_STR("/"), .headers = &host, .nheaders = 1
    };
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&a, &req, on_done, t, NULL), 0);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, UV_ECONNREFUSED);

    t->calls = 0;
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    tu_send(&t->loop, t->fd, "HTTP/1.1 200 OK\r\nContent-Le", 27);
    close(t->fd);
    t->fd = -1;
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, SC_ECLOSED);

    /* a request that cannot be written fails at once, without a callback */
    const struct sc_http_header bad = { SC_STR("X"), SC_STR("a\r\nb") };
    struct sc_h1cli_req breq = {
        .method = SC_STR("GET"), .target = SC_STR("/"), .headers = &bad, .nheaders = 1
    };
    t->calls = 0;
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&t->addr, &breq, on_done, t, NULL),
                     SC_EINVAL);
    tu_spin(&t->loop, 10);
    assert_int_equal(t->calls, 0);
}

static void test_close_while_writing(void **state)
{
    struct tc *t = *state;
    size_t big = 8 * 1024 * 1024;
    char *body = sc_malloc(big);
    memset(body, 'b', big);
    struct sc_h1cli_req req = { .method = SC_STR("PUT"),
                                .target = SC_STR("/up"),
                                .headers = &host,
                                .nheaders = 1,
                                .body = sc_str_n(body, big) };
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&t->addr, &req, on_done, t, NULL),
                     0);
    sc_free(body); /* the request was formatted into the client's buffer */
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n";
    tu_send(&t->loop, t->fd, resp, sizeof(resp) - 1);
    close(t->fd); /* unread request bytes: the kernel resets the connection */
    t->fd = -1;
    wait_done(t, 3000);
    tu_spin(&t->loop, 20);
    assert_int_equal(t->calls, 1);
    /* whichever the kernel delivers first: the early answer, or the reset */
    assert_true((t->error == 0 && t->status == 413) || t->error < 0);
}

static void test_head_only_and_discard(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = { .head_only = true };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\npartial";
    tu_send(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->status, 503);
    assert_int_equal(t->body_len, 0);
    close(t->fd);

    t->calls = 0;
    struct sc_h1cli_req d = { .discard_body = true, .max_body = 4 };
    send_get(t, &d);
    peer_take_request(t, in, sizeof(in));
    const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "a\r\n0123456789\r\n0\r\n\r\n";
    tu_send_bytewise(&t->loop, t->fd, chunked, sizeof(chunked) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, 0); /* a discarded body is not held to the cap */
    assert_int_equal(t->body_len, 0);
    close(t->fd);

    /* HEAD: Content-Length describes the GET; nothing follows */
    t->calls = 0;
    struct sc_h1cli_req h = {
        .method = SC_STR("HEAD"), .target = SC_STR("/"), .headers = &host, .nheaders = 1
    };
    send_get(t, &h);
    peer_take_request(t, in, sizeof(in));
    tu_send(&t->loop, t->fd, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 40);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->status, 200);
}

/* What the streaming hooks saw. */
struct streamed {
    int heads;
    int status;
    char body[256];
    size_t len;
    int stop_after; /* on_body fails once this many bytes came (0: never) */
};

static int on_stream_head(void *arg, const struct sc_http_msg *head)
{
    struct streamed *s = arg;
    s->heads++;
    s->status = head->status;
    return 0;
}

static int on_stream_body(void *arg, const char *p, size_t n)
{
    struct streamed *s = arg;
    assert_int_equal(s->heads, 1); /* the head always comes first */
    assert_true(n > 0 && s->len + n <= sizeof(s->body));
    memcpy(s->body + s->len, p, n);
    s->len += n;
    return s->stop_after && s->len >= (size_t)s->stop_after ? SC_EINVAL : 0;
}

/* Sends <req>, answers it with <resp> (byte by byte when <bytewise>) and waits for the one
 * callback; the connection is closed afterwards. */
static void stream_exchange(struct tc *t, struct sc_h1cli_req *req, const char *resp, bool bytewise)
{
    t->calls = 0;
    send_get(t, req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    if (bytewise) {
        tu_send_bytewise(&t->loop, t->fd, resp, strlen(resp));
    } else {
        tu_send(&t->loop, t->fd, resp, strlen(resp));
    }
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    tu_spin(&t->loop, 20);
    assert_int_equal(t->calls, 1);
    close(t->fd);
    t->fd = -1;
}

/* A streamed body reaches on_body piece by piece after on_head, is not kept, and is still held to
 * max_body; an error from on_body ends the exchange with it. */
static void test_streamed_body(void **state)
{
    struct tc *t = *state;
    struct streamed st = { 0 };
    struct sc_h1cli_req req = {
        .on_head = on_stream_head, .on_body = on_stream_body, .stream_arg = &st, .max_body = 20
    };
    stream_exchange(t, &req,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n1;x=y\r\nd\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
                    true);
    assert_int_equal(t->error, 0);
    assert_int_equal(t->status, 200);
    assert_int_equal(t->body_len, 0);
    assert_int_equal(st.heads, 1);
    assert_int_equal(st.status, 200);
    assert_int_equal(st.len, 20);
    assert_memory_equal(st.body, "abcd0123456789abcdef", 20);

    /* over max_body as it streams (no Content-Length to refuse up front) */
    st = (struct streamed){ 0 };
    stream_exchange(t, &req, "HTTP/1.0 200 OK\r\n\r\n0123456789012345678901234", false);
    assert_int_equal(t->error, SC_ETOOBIG);
    assert_true(st.len <= 20);

    /* a Content-Length over max_body is refused before any of the body is streamed */
    st = (struct streamed){ 0 };
    stream_exchange(t, &req, "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n012345678901234567890",
                    false);
    assert_int_equal(t->error, SC_ETOOBIG);
    assert_int_equal(st.heads, 1); /* the head was seen */
    assert_int_equal(st.len, 0);

    /* the receiver stops the exchange */
    st = (struct streamed){ .stop_after = 4 };
    stream_exchange(t, &req, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", true);
    assert_int_equal(t->error, SC_EINVAL);
    assert_int_equal(st.len, 4);
}

static struct tu_pass_counters pass;

static struct sc_xport *wrap_pass(void *arg, struct sc_xport *bottom)
{
    assert_ptr_equal(arg, &pass);
    return tu_pass_wrap(&pass, bottom);
}

static struct sc_xport *wrap_refuse(void *arg, struct sc_xport *bottom)
{
    (void)arg;
    (void)bottom;
    return NULL;
}

static void test_wrapped_transport(void **state)
{
    struct tc *t = *state;
    memset(&pass, 0, sizeof(pass));
    struct sc_h1cli_req req = { .method = SC_STR("GET"),
                                .target = SC_STR("/w"),
                                .headers = &host,
                                .nheaders = 1,
                                .wrap = wrap_pass,
                                .wrap_arg = &pass };
    send_get(t, &req);
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    tu_send(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    tu_spin(&t->loop, 20);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->status, 200);
    assert_int_equal(pass.made, 1);
    assert_int_equal(pass.freed, 1);
    assert_int_equal(pass.write_bytes, strlen(in));
    assert_int_equal(pass.read_bytes, sizeof(resp) - 1);

    struct sc_h1cli_req no = { .method = SC_STR("GET"),
                               .target = SC_STR("/"),
                               .headers = &host,
                               .nheaders = 1,
                               .wrap = wrap_refuse };
    t->calls = 0;
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&t->addr, &no, on_done, t, NULL),
                     SC_EINVAL);
    tu_spin(&t->loop, 10);
    assert_int_equal(t->calls, 0);
}

/* ---- both ends over TLS ---- */

static const char *certs_sh;

struct tls_end {
    uv_loop_t *loop;
    struct sc_tls_ctx *ctx;
    const char *sni;
};

static struct sc_xport *wrap_tls(void *arg, struct sc_xport *bottom)
{
    struct tls_end *e = arg;
    const struct sc_tls_xport_args a = {
        .loop = e->loop,
        .below = bottom,
        .cbs = bottom->cbs,
        .owner = bottom->owner,
        .sni = e->sni,
    };
    return sc_tls_xport_new(e->ctx, &a);
}

static void on_tls_request(void *arg, struct sc_h1srv_conn *c, const struct sc_h1srv_req *req)
{
    (void)arg;
    struct sc_str v = sc_xport_query_str(sc_h1srv_xport(c), SC_XQ_TLS_VERSION);
    const struct sc_http_header h = { SC_STR("X-TLS"), v };
    sc_h1srv_respond(c, 200, "text/plain", &h, 1, req->body);
}

static const struct sc_h1srv_cbs tls_srv_cbs = { .request = on_tls_request, .wrap = wrap_tls };

static void test_tls_both_ends(void **state)
{
    struct tc *t = *state;
    char dir[] = "/tmp/sc-h1tls-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[512], cert[300], key[300], ca[300], other[300];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s' >/dev/null 2>&1", certs_sh, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(other, sizeof(other), "%s/other_ca.pem", dir);
    char *err = NULL;
    struct sc_tls_server_opts so = { .cert = cert, .key = key };
    struct tls_end srv_end = { .loop = &t->loop };
    srv_end.ctx = sc_tls_ctx_new_server(&so, NULL, &err);
    assert_non_null(srv_end.ctx);
    struct sc_tls_client_opts co = { .ca = ca };
    struct tls_end cli_end = { .loop = &t->loop, .sni = "localhost" };
    cli_end.ctx = sc_tls_ctx_new_client(&co, NULL, &err);
    assert_non_null(cli_end.ctx);

    struct sc_h1srv *srv = sc_h1srv_new(&t->loop, NULL, &tls_srv_cbs, &srv_end);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(sc_h1srv_listen(srv, (struct sockaddr *)&a, &err), 0);
    char addr[64];
    sc_h1srv_address(srv, addr, sizeof(addr));
    uv_ip4_addr("127.0.0.1", (int)strtol(strrchr(addr, ':') + 1, NULL, 10), &a);

    struct sc_h1cli_req req = { .method = SC_STR("POST"),
                                .target = SC_STR("/"),
                                .headers = &host,
                                .nheaders = 1,
                                .body = SC_STR("over tls"),
                                .wrap = wrap_tls,
                                .wrap_arg = &cli_end };
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&a, &req, on_done, t, NULL), 0);
    wait_done(t, 5000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->error, 0);
    assert_int_equal(t->status, 200);
    assert_int_equal(t->body_len, 8);
    assert_memory_equal(t->body, "over tls", 8);
    assert_string_equal(t->xtls, "TLSv1.3"); /* the server saw the request through its TLS layer */

    /* a client trusting another CA fails the handshake: an error, once */
    struct sc_tls_client_opts wrong = { .ca = other };
    struct tls_end bad_end = { .loop = &t->loop, .sni = "localhost" };
    bad_end.ctx = sc_tls_ctx_new_client(&wrong, NULL, &err);
    assert_non_null(bad_end.ctx);
    t->calls = 0;
    req.wrap_arg = &bad_end;
    assert_int_equal(sc_h1cli_send(&t->loop, (struct sockaddr *)&a, &req, on_done, t, NULL), 0);
    wait_done(t, 5000);
    assert_int_equal(t->calls, 1);
    assert_true(t->error < 0);
    assert_int_equal(t->status, 0);
    sc_tls_ctx_unref(bad_end.ctx);
    sc_free(err);
    sc_h1srv_close(srv);
    tu_spin(&t->loop, 20);
    sc_tls_ctx_unref(srv_end.ctx);
    sc_tls_ctx_unref(cli_end.ctx);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* Which URLs the client takes directly, and how they split. */
static void test_url_parse(void **state)
{
    (void)state;
    unsetenv("http_proxy");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    struct sc_h1cli_url u;
    assert_true(sc_h1cli_url_parse("http://vault:8200/v1/x?y=1#f", &u));
    assert_string_equal(u.host, "vault");
    assert_int_equal(u.port, 8200);
    assert_string_equal(u.authority, "vault:8200");
    assert_string_equal(u.target, "/v1/x?y=1");
    sc_h1cli_url_free(&u);
    assert_true(sc_h1cli_url_parse("http://[::1]?q", &u));
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 80);
    assert_string_equal(u.authority, "[::1]");
    assert_string_equal(u.target, "/?q");
    sc_h1cli_url_free(&u);
    static const char *const refused[] = { "https://h/",      "http://u:p@h/", "http://h:0/",
                                           "http://h:70000/", "http://h:x/",   "http://[::1/",
                                           "http:///x",       "http://:80/" };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        assert_false(sc_h1cli_url_parse(refused[i], &u));
    }
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    assert_false(sc_h1cli_url_parse("http://h/", &u));
    unsetenv("http_proxy");
}

/* A host name resolved on the loop, then the request sent as formatted at the call. */
static void test_send_by_host_name(void **state)
{
    struct tc *t = *state;
    const struct sc_http_header hdrs[] = { { SC_STR("Host"), SC_STR("localhost") } };
    char body[] = "{\"a\":1}";
    struct sc_h1cli_req req = {
        .method = SC_STR("POST"),
        .target = SC_STR("/login"),
        .headers = hdrs,
        .nheaders = 1,
        .body = sc_str_c(body),
        .sensitive = true,
    };
    struct sc_h1cli_named *n = NULL;
    assert_int_equal(
        sc_h1cli_send_host(&t->loop, "localhost", (uint16_t)t->port, &req, on_done, t, &n), 0);
    memset(body, 'x', sizeof(body) - 1); /* borrowed for the call only */
    char in[4096];
    peer_take_request(t, in, sizeof(in));
    bool eof;
    if (!strstr(in, "\r\n\r\n{\"a\":1}")) {
        tu_recv(&t->loop, t->fd, in + strlen(in), sizeof(in) - strlen(in), "}", 2000, &eof);
    }
    assert_string_equal(in, "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n"
                            "Connection: close\r\n\r\n{\"a\":1}");
    const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
    wait_done(t, 2000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->status, 200);
    assert_memory_equal(t->body, "ok", 2);
}

/* A raw request sent by host name goes out as the caller laid it out, borrowed (not copied) until
 * the callback: bytes changed after the call but before the connection writes are what is sent,
 * both by a name resolved on the thread pool and by an IP literal. */
static void test_send_host_raw_borrowed(void **state)
{
    struct tc *t = *state;
    const char *hosts[] = { "localhost", "127.0.0.1" };
    for (size_t i = 0; i < 4; i++) {
        char raw[] = "POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 3\r\n"
                     "Connection: close\r\n\r\nabc";
        struct sc_h1cli_req req = { .method = SC_STR("POST"), .raw = sc_str_c(raw) };
        t->calls = 0;
        assert_int_equal(
            sc_h1cli_send_host(&t->loop, hosts[i % 2], (uint16_t)t->port, &req, on_done, t, NULL),
            0);
        raw[sizeof(raw) - 3] = 'B'; /* borrowed: the change is sent */
        char in[4096];
        peer_take_request(t, in, sizeof(in));
        bool eof;
        if (!strstr(in, "\r\n\r\naBc")) {
            tu_recv(&t->loop, t->fd, in + strlen(in), sizeof(in) - strlen(in), "Bc", 2000, &eof);
        }
        assert_string_equal(in, "POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 3\r\n"
                                "Connection: close\r\n\r\naBc");
        const char resp[] = "HTTP/1.1 503 No\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n";
        tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
        wait_done(t, 2000);
        assert_int_equal(t->calls, 1);
        assert_int_equal(t->error, 0);
        assert_int_equal(t->status, 503);
        close(t->fd);
        t->fd = -1;
        tu_spin(&t->loop, 20);
    }
}

/* A gathered request goes out as its pieces in order: the array and the pieces are borrowed
 * until the callback (a change made to a piece after the call is sent) and the array is left as
 * it was, by a resolved name and by an IP literal; the same with iov_writable, where the array is
 * the caller's still (never freed by the client). */
static void test_send_host_iov(void **state)
{
    struct tc *t = *state;
    const char *hosts[] = { "localhost", "127.0.0.1" };
    for (size_t i = 0; i < 4; i++) {
        char head[] = "POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 6\r\n"
                      "Connection: close\r\n\r\n";
        char a[] = "abc", b[] = "def";
        uv_buf_t iov[3] = { uv_buf_init(head, sizeof(head) - 1), uv_buf_init(a, 3),
                            uv_buf_init(b, 3) };
        struct sc_h1cli_req req = {
            .method = SC_STR("POST"), .iov = iov, .niov = 3, .iov_writable = i >= 2
        };
        t->calls = 0;
        assert_int_equal(
            sc_h1cli_send_host(&t->loop, hosts[i % 2], (uint16_t)t->port, &req, on_done, t, NULL),
            0);
        b[1] = 'E'; /* the pieces are borrowed */
        char in[4096];
        peer_take_request(t, in, sizeof(in));
        bool eof;
        if (!strstr(in, "\r\n\r\nabcdEf")) {
            tu_recv(&t->loop, t->fd, in + strlen(in), sizeof(in) - strlen(in), "Ef", 2000, &eof);
        }
        assert_string_equal(in, "POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 6\r\n"
                                "Connection: close\r\n\r\nabcdEf");
        const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        tu_send_bytewise(&t->loop, t->fd, resp, sizeof(resp) - 1);
        wait_done(t, 2000);
        assert_int_equal(t->calls, 1);
        assert_int_equal(t->error, 0);
        assert_int_equal(t->status, 200);
        if (!req.iov_writable) {
            assert_ptr_equal(iov[0].base, head); /* the caller's array, never written to */
            assert_int_equal(iov[0].len, sizeof(head) - 1);
            assert_ptr_equal(iov[2].base, b);
            assert_int_equal(iov[2].len, 3);
        }
        close(t->fd);
        t->fd = -1;
        tu_spin(&t->loop, 20);
    }
}

/* A name that does not resolve is reported through the callback; a request cancelled while its
 * name is resolving never calls back and frees itself. */
static void test_unresolvable_and_cancel_while_resolving(void **state)
{
    struct tc *t = *state;
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"), .target = SC_STR("/"), .headers = &host, .nheaders = 1
    };
    assert_int_equal(sc_h1cli_send_host(&t->loop, "name.invalid", 80, &req, on_done, t, NULL), 0);
    assert_int_equal(t->calls, 0);
    wait_done(t, 5000);
    assert_int_equal(t->calls, 1);
    assert_true(t->error < 0);
    assert_non_null(strstr(t->reason, "cannot resolve name.invalid"));
    struct sc_h1cli_named *n = NULL;
    assert_int_equal(sc_h1cli_send_host(&t->loop, "localhost", 80, &req, on_done, t, &n), 0);
    sc_h1cli_named_cancel(n);
    tu_spin(&t->loop, 200);
    assert_int_equal(t->calls, 1);
}

int main(int argc, char **argv)
{
    certs_sh = argc > 1 ? argv[1] : "tests/certs.sh";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_content_length_and_request_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_split_and_interim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_until_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_and_early_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_only_and_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrapped_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_both_ends, setup, teardown),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test_setup_teardown(test_send_by_host_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_host_raw_borrowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_host_iov, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unresolvable_and_cancel_while_resolving, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
