// SPDX-License-Identifier: Apache-2.0
// Unit tests for the HTTP/1.1 server (net/h1server.c). Each test runs a server on its own loop
// and talks to it from plain sockets on loopback, turning the loop between sends and reads (see
// h1_util.h): keep-alive and strict in-order answers to pipelined requests, chunked bodies split at
// every byte, Expect: 100-continue, the 431/413/400/503 caps with their reasons, idle closes,
// streamed responses, a client that leaves while a large response is being written, a stacked
// transport layer, and a server closed while an answer is pending. The loop must close cleanly at
// the end of every test (no handle left behind).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "h1_util.h"
#include "net/h1server.h"

struct ts {
    uv_loop_t loop;
    struct sc_h1srv *srv;
    int port;
    int requests;
    int outstanding, max_outstanding;
    int conns_closed;
    int pieces, max_pieces;
    char last_body[4096];
    size_t last_body_len;
    struct sc_h1srv_conn *pending; /* an answer deferred by /slow */
    uv_timer_t timer;
    bool timer_on;
};

static int fill_pieces(void *arg, struct sc_buf *out)
{
    struct ts *t = arg;
    if (t->pieces == 0) {
        sc_buf_appendf(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    }
    if (t->pieces == t->max_pieces) {
        sc_buf_append_cstr(out, "0\r\n\r\n");
        t->pieces = 0;
        return 1;
    }
    sc_buf_appendf(out, "5\r\npiece\r\n");
    t->pieces++;
    return 0;
}

static int fill_endless(void *arg, struct sc_buf *out)
{
    struct ts *t = arg;
    if (t->pieces++ == 0) {
        sc_buf_append_cstr(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    }
    if (sc_buf_reserve(out, 256 * 1024) < 0) {
        return SC_ETOOBIG;
    }
    memset(out->p + out->len, 'x', 256 * 1024);
    out->len += 256 * 1024;
    return 0;
}

static void answer_pending(struct ts *t)
{
    struct sc_h1srv_conn *c = t->pending;
    t->pending = NULL;
    t->outstanding--;
    sc_h1srv_respond(c, 200, "text/plain", NULL, 0, SC_STR("slow\n"));
}

static void on_timer(uv_timer_t *tm)
{
    answer_pending(tm->data);
}

static void on_request(void *arg, struct sc_h1srv_conn *c, const struct sc_h1srv_req *req)
{
    struct ts *t = arg;
    t->requests++;
    t->outstanding++;
    if (t->outstanding > t->max_outstanding) {
        t->max_outstanding = t->outstanding;
    }
    size_t n = req->body.len < sizeof(t->last_body) ? req->body.len : sizeof(t->last_body);
    if (n) {
        memcpy(t->last_body, req->body.p, n);
    }
    t->last_body_len = req->body.len;
    sc_h1srv_set_data(c, t);
    if (sc_str_eq(req->path, SC_STR("/slow"))) {
        t->pending = c;
        uv_timer_start(&t->timer, on_timer, 30, 0);
        return;
    }
    t->outstanding--;
    if (sc_str_eq(req->path, SC_STR("/echo"))) {
        const struct sc_http_header h = { SC_STR("X-Method"), req->method };
        sc_h1srv_respond(c, 200, "application/octet-stream", &h, 1, req->body);
    } else if (sc_str_eq(req->path, SC_STR("/stream"))) {
        sc_h1srv_stream(c, fill_pieces, t);
    } else if (sc_str_eq(req->path, SC_STR("/endless"))) {
        sc_h1srv_stream(c, fill_endless, t);
    } else {
        sc_h1srv_respond(c, 404, "text/plain", NULL, 0, SC_STR("not found\n"));
    }
}

static void on_conn_closed(void *arg, struct sc_h1srv_conn *c, void *data)
{
    struct ts *t = arg;
    assert_ptr_equal(data, t);
    if (t->pending == c) {
        t->pending = NULL;
    }
    t->conns_closed++;
}

static struct tu_pass_counters pass;

static struct sc_xport *wrap_pass(void *arg, struct sc_xport *bottom)
{
    (void)arg;
    return tu_pass_wrap(&pass, bottom);
}

static const struct sc_h1srv_cbs cbs = { .request = on_request, .conn_closed = on_conn_closed };
static const struct sc_h1srv_cbs wrap_cbs = {
    .request = on_request,
    .conn_closed = on_conn_closed,
    .wrap = wrap_pass,
};

static struct ts *start(const struct sc_h1srv_opts *o, const struct sc_h1srv_cbs *cb, void *arg)
{
    struct ts *t = SC_NEW(struct ts);
    uv_loop_init(&t->loop);
    uv_timer_init(&t->loop, &t->timer);
    t->timer.data = t;
    t->srv = sc_h1srv_new(&t->loop, o, cb, arg ? arg : t);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    char *err = NULL;
    assert_int_equal(sc_h1srv_listen(t->srv, (struct sockaddr *)&a, &err), 0);
    char addr[64];
    assert_int_equal(sc_h1srv_address(t->srv, addr, sizeof(addr)), 0);
    t->port = (int)strtol(strrchr(addr, ':') + 1, NULL, 10);
    return t;
}

static void stop(struct ts *t)
{
    sc_h1srv_close(t->srv);
    uv_close((uv_handle_t *)&t->timer, NULL);
    assert_int_equal(tu_loop_close(&t->loop), 0);
    sc_free(t);
}

static void test_keep_alive_and_echo(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    char out[8192];
    bool eof;
    const char req[] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    tu_send(&t->loop, fd, req, sizeof(req) - 1);
    tu_recv(&t->loop, fd, out, sizeof(out), "hello", 2000, &eof);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "X-Method: POST\r\n"));
    assert_non_null(strstr(out, "Content-Length: 5\r\n"));
    assert_null(strstr(out, "Connection: close"));
    /* the same connection carries the next request; HEAD gets the head only */
    const char head[] = "HEAD /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    tu_send(&t->loop, fd, head, sizeof(head) - 1);
    tu_recv(&t->loop, fd, out, sizeof(out), NULL, 2000, &eof);
    assert_true(eof);
    assert_non_null(strstr(out, "X-Method: HEAD\r\n"));
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_int_equal(t->requests, 2);
    close(fd);
    stop(t);
}

static void test_pipelined_answers_in_order(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    const char reqs[] = "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
                        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                        "GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    tu_send(&t->loop, fd, reqs, sizeof(reqs) - 1);
    char out[8192];
    bool eof;
    tu_recv(&t->loop, fd, out, sizeof(out), NULL, 3000, &eof);
    assert_true(eof);
    char *a = strstr(out, "slow\n");
    char *b = strstr(out, "abc");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    assert_non_null(strstr(b, "slow\n"));
    assert_int_equal(t->requests, 3);
    assert_int_equal(t->max_outstanding, 1); /* the next request waits for the answer */
    close(fd);
    stop(t);
}

static void test_chunked_body_split_at_every_byte(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    const char req[] = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n";
    tu_send_bytewise(&t->loop, fd, req, sizeof(req) - 1);
    char out[8192];
    bool eof;
    tu_recv(&t->loop, fd, out, sizeof(out), "abcdefg", 2000, &eof);
    assert_non_null(strstr(out, "Content-Length: 7\r\n\r\nabcdefg"));
    assert_int_equal(t->last_body_len, 7);
    close(fd);
    stop(t);
}

static void test_expect_continue(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    const char head[] = "PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                        "Content-Length: 4\r\n\r\n";
    tu_send(&t->loop, fd, head, sizeof(head) - 1);
    char out[8192];
    bool eof;
    tu_recv(&t->loop, fd, out, sizeof(out), "\r\n\r\n", 2000, &eof);
    assert_string_equal(out, "HTTP/1.1 100 Continue\r\n\r\n");
    tu_send(&t->loop, fd, "data", 4);
    tu_recv(&t->loop, fd, out, sizeof(out), "data", 2000, &eof);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    /* too large for the cap: a 413 instead of a 100 */
    const char big[] = "PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                       "Content-Length: 99999999\r\n\r\n";
    tu_send(&t->loop, fd, big, sizeof(big) - 1);
    tu_recv(&t->loop, fd, out, sizeof(out), NULL, 2000, &eof);
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_non_null(strstr(out, "request body too large"));
    close(fd);
    stop(t);
}

/* Sends <req> on a fresh connection and returns what came back before the server closed. */
static void exchange(struct ts *t, const char *req, size_t len, char *out, size_t cap)
{
    int fd = tu_connect(t->port);
    tu_send(&t->loop, fd, req, len);
    bool eof;
    tu_recv(&t->loop, fd, out, cap, NULL, 3000, &eof);
    assert_true(eof);
    close(fd);
}

static void test_caps_and_malformed(void **state)
{
    (void)state;
    const struct sc_h1srv_opts o = { .max_head = 1024, .max_body = 100, .max_headers = 8 };
    struct ts *t = start(&o, &cbs, NULL);
    char out[8192];
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %01500d\r\n\r\n", 0);
    exchange(t, req, (size_t)n, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 431 ", 13) == 0);
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\n%s\r\n",
                 "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\nI: 1\r\n");
    exchange(t, req, (size_t)n, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 431 ", 13) == 0);
    n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n");
    exchange(t, req, (size_t)n, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    /* a chunked body over the cap: 413 once the decoded bytes pass it */
    n = snprintf(req, sizeof(req),
                 "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "40\r\n%064d\r\n40\r\n%064d\r\n0\r\n\r\n",
                 0, 0);
    exchange(t, req, (size_t)n, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    const char bad[] =
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    exchange(t, bad, sizeof(bad) - 1, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    char *body = strstr(out, "\r\n\r\n");
    assert_non_null(body);
    assert_true(strlen(body + 4) > 3); /* the reason */
    const char badchunk[] = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "zz\r\n";
    exchange(t, badchunk, sizeof(badchunk) - 1, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    assert_int_equal(t->requests, 0);
    stop(t);
}

static void test_connection_cap_and_idle_close(void **state)
{
    (void)state;
    const struct sc_h1srv_opts o = { .max_conns = 1, .idle_ms = 150 };
    struct ts *t = start(&o, &cbs, NULL);
    int a = tu_connect(t->port);
    tu_spin(&t->loop, 20);
    char out[4096];
    bool eof;
    exchange(t, "", 0, out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 503 ", 13) == 0);
    /* the idle one is closed by the sweep */
    uint64_t t0 = tu_now_ms();
    tu_recv(&t->loop, a, out, sizeof(out), NULL, 3000, &eof);
    assert_true(eof);
    assert_true(tu_now_ms() - t0 >= 100);
    close(a);
    stop(t);
}

static void test_streamed_response(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    t->max_pieces = 50;
    int fd = tu_connect(t->port);
    const char req[] = "GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\n"
                       "Connection: close\r\n\r\n";
    tu_send(&t->loop, fd, req, sizeof(req) - 1);
    char out[16384];
    bool eof;
    size_t n = tu_recv(&t->loop, fd, out, sizeof(out), NULL, 3000, &eof);
    assert_true(eof);
    size_t count = 0;
    for (char *p = out; (p = strstr(p, "5\r\npiece\r\n")) != NULL; p++) {
        count++;
    }
    assert_int_equal(count, 50);
    char *end = strstr(out, "0\r\n\r\nHTTP/1.1 200 OK\r\n");
    assert_non_null(end); /* the next response follows the last chunk */
    assert_true((size_t)(end - out) < n);
    close(fd);
    stop(t);
}

static void test_client_leaves_while_writing(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    const char req[] = "GET /endless HTTP/1.1\r\nHost: a\r\n\r\n";
    tu_send(&t->loop, fd, req, sizeof(req) - 1);
    tu_spin(&t->loop, 100);
    assert_true(t->pieces > 0);
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd); /* a reset while the server has a write queued */
    for (int i = 0; i < 300 && t->conns_closed == 0; i++) {
        tu_spin(&t->loop, 10);
    }
    assert_int_equal(t->conns_closed, 1);
    stop(t);
}

static void test_wrapped_transport(void **state)
{
    (void)state;
    memset(&pass, 0, sizeof(pass));
    struct ts *t = start(NULL, &wrap_cbs, NULL);
    int fd = tu_connect(t->port);
    const char req[] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                       "Connection: close\r\n\r\nhi";
    tu_send(&t->loop, fd, req, sizeof(req) - 1);
    char out[4096];
    bool eof;
    size_t n = tu_recv(&t->loop, fd, out, sizeof(out), NULL, 2000, &eof);
    assert_true(eof);
    assert_non_null(strstr(out, "\r\n\r\nhi"));
    close(fd);
    tu_spin(&t->loop, 20);
    assert_int_equal(pass.made, 1);
    assert_int_equal(pass.freed, 1);
    assert_int_equal(pass.read_bytes, sizeof(req) - 1);
    assert_int_equal(pass.write_bytes, n);
    stop(t);
}

static void test_close_with_answer_pending(void **state)
{
    (void)state;
    struct ts *t = start(NULL, &cbs, NULL);
    int fd = tu_connect(t->port);
    const char req[] = "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n";
    tu_send(&t->loop, fd, req, sizeof(req) - 1);
    for (int i = 0; i < 200 && !t->pending; i++) {
        tu_spin(&t->loop, 2);
    }
    assert_non_null(t->pending);
    sc_h1srv_close(t->srv); /* the answer in flight still goes out, with Connection: close */
    char out[4096];
    bool eof;
    tu_recv(&t->loop, fd, out, sizeof(out), NULL, 2000, &eof);
    assert_true(eof);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_non_null(strstr(out, "slow\n"));
    close(fd);
    uv_close((uv_handle_t *)&t->timer, NULL);
    assert_int_equal(tu_loop_close(&t->loop), 0);
    sc_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive_and_echo),
        cmocka_unit_test(test_pipelined_answers_in_order),
        cmocka_unit_test(test_chunked_body_split_at_every_byte),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_caps_and_malformed),
        cmocka_unit_test(test_connection_cap_and_idle_close),
        cmocka_unit_test(test_streamed_response),
        cmocka_unit_test(test_client_leaves_while_writing),
        cmocka_unit_test(test_wrapped_transport),
        cmocka_unit_test(test_close_with_answer_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
