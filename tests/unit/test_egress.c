// SPDX-License-Identifier: Apache-2.0
// Unit tests for the egress client (libcurl multi on a libuv loop). Each test forks a tiny
// blocking HTTP/1.1 server on a free 127.0.0.1 port (one thread per connection inside one child
// process that the test kills and reaps by PID at teardown), drives the client on its own loop,
// and asserts exact callback counts and that the loop closes cleanly once the client is closed.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/egress.h"

/* ---- the fake upstream ---------------------------------------------------------------------- */

#define BIG_LEN 100000
#define STREAM_CHUNKS 20
#define STREAM_CHUNK 997

static char pattern(size_t i)
{
    return (char)('a' + i % 26);
}

/* Writes everything or gives up silently: a gone client shows up as EOF on the next read. */
/* Which accepted connection this thread serves: tells a reused connection from a new one. */
static _Thread_local unsigned conn_id;
static _Thread_local bool head_request; /* HEAD: the response carries no body */

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w <= 0) {
            return;
        }
        c += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, const char *status, const char *extra, const void *body, size_t len)
{
    char head[1024];
    int n =
        snprintf(head, sizeof(head), "HTTP/1.1 %s\r\nX-Conn: %u\r\n%sContent-Length: %zu\r\n\r\n",
                 status, conn_id, extra, len);
    write_all(fd, head, (size_t)n);
    if (!head_request) {
        write_all(fd, body, len);
    }
}

static void send_pattern(int fd, size_t len)
{
    char chunk[4096];
    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
        for (size_t i = 0; i < n; i++) {
            chunk[i] = pattern(off + i);
        }
        write_all(fd, chunk, n);
        off += n;
    }
}

static size_t content_length(const char *head, size_t len)
{
    const char *p = head;
    const char *end = head + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) {
            break;
        }
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            return (size_t)strtoul(p + 15, NULL, 10);
        }
        p = eol + 1;
    }
    return 0;
}

/* Answers one request; returns false when the connection must close. */
static bool route(int fd, const char *method, const char *path, const char *head, size_t hlen,
                  const char *body, size_t blen)
{
    char extra[256];
    if (strcmp(path, "/hello") == 0) {
        respond(fd, "200 OK", "Content-Type: text/plain\r\nX-Test: yes\r\n", "hello world", 11);
    } else if (strcmp(path, "/continue") == 0) {
        write_all(fd, "HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\n", 37);
        respond(fd, "200 OK", "X-Final: 1\r\n", "ok", 2);
    } else if (strcmp(path, "/echo") == 0) {
        snprintf(extra, sizeof(extra), "X-Method: %s\r\n", method);
        respond(fd, "200 OK", extra, body, blen);
    } else if (strcmp(path, "/headers") == 0) {
        respond(fd, "200 OK", "", head, hlen);
    } else if (strcmp(path, "/status500") == 0) {
        respond(fd, "500 Internal Server Error", "", "boom", 4);
    } else if (strcmp(path, "/slow") == 0) {
        usleep(100000);
        respond(fd, "200 OK", "", "slow", 4);
    } else if (strcmp(path, "/stall") == 0) {
        for (;;) {
            pause();
        }
    } else if (strcmp(path, "/big") == 0) {
        snprintf(extra, sizeof(extra), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG_LEN);
        write_all(fd, extra, strlen(extra));
        send_pattern(fd, BIG_LEN);
    } else if (strcmp(path, "/bigclose") == 0) {
        /* No Content-Length: the cap can only be enforced while the body arrives. */
        const char *h = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        write_all(fd, h, strlen(h));
        send_pattern(fd, BIG_LEN);
        return false;
    } else if (strcmp(path, "/stream") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        write_all(fd, h, strlen(h));
        char chunk[STREAM_CHUNK];
        for (size_t c = 0; c < STREAM_CHUNKS; c++) {
            for (size_t i = 0; i < STREAM_CHUNK; i++) {
                chunk[i] = pattern(c * STREAM_CHUNK + i);
            }
            int n = snprintf(extra, sizeof(extra), "%x\r\n", STREAM_CHUNK);
            write_all(fd, extra, (size_t)n);
            write_all(fd, chunk, STREAM_CHUNK);
            write_all(fd, "\r\n", 2);
            usleep(5000);
        }
        write_all(fd, "0\r\n\r\n", 5);
    } else {
        respond(fd, "404 Not Found", "", "", 0);
    }
    return true;
}

/* Serves one keep-alive connection until the peer closes it (a thread of the server process). */
static void *serve_conn(void *arg)
{
    int fd = (int)((uintptr_t)arg & 0xffffffffu);
    conn_id = (unsigned)((uintptr_t)arg >> 32);
    char buf[1 << 16];
    size_t have = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            ssize_t n = have < sizeof(buf) ? read(fd, buf + have, sizeof(buf) - have) : -1;
            if (n <= 0) {
                goto out;
            }
            have += (size_t)n;
        }
        size_t hlen = (size_t)(end - buf) + 4;
        size_t blen = content_length(buf, hlen);
        if (hlen + blen > sizeof(buf)) {
            goto out;
        }
        while (have < hlen + blen) {
            ssize_t n = read(fd, buf + have, sizeof(buf) - have);
            if (n <= 0) {
                goto out;
            }
            have += (size_t)n;
        }
        char method[16] = "";
        char path[256] = "";
        int fields = sscanf(buf, "%15s %255s", method, path);
        head_request = strcmp(method, "HEAD") == 0;
        if (fields != 2 || !route(fd, method, path, buf, hlen, buf + hlen, blen)) {
            goto out;
        }
        memmove(buf, buf + hlen + blen, have - hlen - blen);
        have -= hlen + blen;
    }
out:
    close(fd);
    return NULL;
}

struct server {
    pid_t pid;
    int port;
};

static int bind_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void server_start(struct server *s)
{
    int fd = bind_loopback(&s->port);
    assert_int_equal(listen(fd, 512), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        for (uintptr_t id = 1;; id++) {
            int c = accept(fd, NULL, NULL);
            pthread_t th;
            void *arg = (void *)((id << 32) | (uintptr_t)(unsigned)c);
            if (c >= 0 && pthread_create(&th, &attr, serve_conn, arg) != 0) {
                close(c);
            }
        }
    }
    close(fd);
    s->pid = pid;
}

static void server_stop(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* ---- fixture -------------------------------------------------------------------------------- */

struct ctx {
    uv_loop_t loop;
    struct sc_egress *e; /* NULL once a test closed it itself */
    struct server srv;
    char url[128];
};

struct result {
    struct ctx *c;
    int calls;
    int error;
    int status;
    char *body;
    size_t body_len;
    const char *want_header;
    char *header;  /* value of want_header, or NULL when absent */
    char *header2; /* value of X-Conn */
};

static const char *url(struct ctx *c, const char *path)
{
    snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d%s", c->srv.port, path);
    return c->url;
}

static char *dup_view(struct sc_str s)
{
    return s.len ? sc_strndup(s.p, s.len) : NULL;
}

static void result_cleanup(struct result *r)
{
    sc_free(r->body);
    sc_free(r->header);
    sc_free(r->header2);
    r->body = r->header = r->header2 = NULL;
}

static void record(struct result *r, const struct sc_egress_resp *resp)
{
    result_cleanup(r);
    r->calls++;
    r->error = resp->error;
    r->status = resp->status;
    if (resp->error) {
        assert_non_null(resp->error_msg);
    }
    r->body = sc_strndup(resp->body.p ? resp->body.p : "", resp->body.len);
    r->body_len = resp->body.len;
    if (r->want_header) {
        r->header = dup_view(sc_egress_resp_header(resp, r->want_header));
    }
    r->header2 = dup_view(sc_egress_resp_header(resp, "x-conn"));
}

static void on_done(void *arg, const struct sc_egress_resp *resp)
{
    record(arg, resp);
}

static int setup(void **state)
{
    struct ctx *c = SC_NEW(struct ctx);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    server_start(&c->srv);
    c->e = sc_egress_new(&c->loop);
    assert_non_null(c->e);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    sc_egress_close(c->e);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    server_stop(&c->srv);
    sc_free(c);
    return 0;
}

static void send_ok(struct ctx *c, const struct sc_egress_req *req, struct result *r)
{
    r->c = c;
    assert_int_equal(sc_egress_send(c->e, req, on_done, r, NULL), 0);
}

static void run(struct ctx *c)
{
    uv_run(&c->loop, UV_RUN_DEFAULT);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_get(void **state)
{
    struct ctx *c = *state;
    struct result r = { .want_header = "x-TEST" };
    struct result r2 = { .want_header = "X-Early" };
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/hello") }, &r);
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/continue") }, &r2);
    run(c);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    assert_string_equal(r.header, "yes");
    /* Only the final response's headers are kept: the 100's are gone. */
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, 200);
    assert_null(r2.header);
    assert_string_equal(r2.body, "ok");
    result_cleanup(&r);
    result_cleanup(&r2);
}

static void test_post_put_echo(void **state)
{
    struct ctx *c = *state;
    struct result r = { .want_header = "X-Method" };
    struct result r2 = { .want_header = "X-Method" };
    struct result r3 = { .want_header = "X-Method" };
    static const char body[] = "payload-123";
    send_ok(
        c,
        &(struct sc_egress_req){
            .method = "POST", .url = url(c, "/echo"), .body = body, .body_len = sizeof(body) - 1 },
        &r);
    send_ok(c,
            &(struct sc_egress_req){
                .method = "PUT", .url = url(c, "/echo"), .body = "x", .body_len = 1 },
            &r2);
    send_ok(c, &(struct sc_egress_req){ .method = "DELETE", .url = url(c, "/echo") }, &r3);
    run(c);
    struct result r4 = { .want_header = "X-Test" };
    send_ok(c, &(struct sc_egress_req){ .method = "HEAD", .url = url(c, "/hello") }, &r4);
    run(c);
    assert_int_equal(r4.calls, 1);
    assert_int_equal(r4.error, 0);
    assert_int_equal(r4.status, 200);
    assert_int_equal(r4.body_len, 0);
    assert_string_equal(r4.header, "yes");
    result_cleanup(&r4);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "payload-123");
    assert_string_equal(r.header, "POST");
    assert_int_equal(r2.calls, 1);
    assert_string_equal(r2.body, "x");
    assert_string_equal(r2.header, "PUT");
    assert_int_equal(r3.calls, 1);
    assert_string_equal(r3.header, "DELETE");
    result_cleanup(&r);
    result_cleanup(&r2);
    result_cleanup(&r3);
}

static void test_headers_auth(void **state)
{
    struct ctx *c = *state;
    struct sc_kv hdrs[] = { { "X-One", "1" }, { "X-Empty", "" } };
    struct result r = { 0 };
    struct result r2 = { 0 };
    send_ok(c,
            &(struct sc_egress_req){ .method = "POST",
                                     .url = url(c, "/headers"),
                                     .headers = hdrs,
                                     .nheaders = 2,
                                     .body = "{}",
                                     .body_len = 2,
                                     .bearer_token = "tok123" },
            &r);
    send_ok(c,
            &(struct sc_egress_req){
                .url = url(c, "/headers"), .basic_user = "user", .basic_password = "pass" },
            &r2);
    run(c);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\r\nX-One: 1\r\n"));
    assert_non_null(strstr(r.body, "\r\nX-Empty:"));
    assert_non_null(strstr(r.body, "\r\nAuthorization: Bearer tok123\r\n"));
    assert_null(strstr(r.body, "x-www-form-urlencoded"));
    assert_null(strstr(r.body, "Expect:"));
    assert_null(strcasestr(r.body, "Accept-Encoding"));
    assert_int_equal(r2.calls, 1);
    assert_non_null(strstr(r2.body, "\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"));

    /* A header that would smuggle a second line is refused, and its callback never fires. */
    struct sc_kv bad[] = { { "X-Bad", "a\r\nInjected: 1" } };
    struct result r3 = { 0 };
    assert_int_equal(sc_egress_send(c->e,
                                    &(struct sc_egress_req){
                                        .url = url(c, "/headers"), .headers = bad, .nheaders = 1 },
                                    on_done, &r3, NULL),
                     -EINVAL);
    assert_int_equal(
        sc_egress_send(c->e, &(struct sc_egress_req){ .method = "GE T", .url = url(c, "/hello") },
                       on_done, &r3, NULL),
        -EINVAL);
    assert_int_equal(sc_egress_send(c->e, &(struct sc_egress_req){ .url = "file:///etc/passwd" },
                                    on_done, &r3, NULL),
                     0);
    run(c);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.error, -EIO);
    result_cleanup(&r);
    result_cleanup(&r2);
    result_cleanup(&r3);
}

static void test_status_500(void **state)
{
    struct ctx *c = *state;
    struct result r = { 0 };
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/status500") }, &r);
    run(c);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, 0);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "boom");
    result_cleanup(&r);
}

static void test_refused(void **state)
{
    struct ctx *c = *state;
    int port;
    int fd = bind_loopback(&port); /* bound, not listening: connects are refused */
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", port);
    struct result r = { 0 };
    send_ok(c, &(struct sc_egress_req){ .url = u }, &r);
    run(c);
    close(fd);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, -ECONNREFUSED);
    assert_int_equal(r.status, 0);
    result_cleanup(&r);
}

static void test_timeout(void **state)
{
    struct ctx *c = *state;
    struct result r = { 0 };
    uint64_t t0 = uv_hrtime();
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/stall"), .timeout_ms = 300 }, &r);
    run(c);
    double took = (double)(uv_hrtime() - t0) / 1e9;
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, SC_ETIMEDOUT);
    /* Fires at the deadline, not at curl's or the server's leisure (generous for slow CI). */
    assert_true(took >= 0.25);
    assert_true(took < 10.0);
    result_cleanup(&r);
}

static void test_too_big(void **state)
{
    struct ctx *c = *state;
    struct result r = { 0 };
    struct result r2 = { 0 };
    struct result r3 = { 0 };
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/big"), .max_response = 1000 }, &r);
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/bigclose"), .max_response = 1000 }, &r2);
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/big") }, &r3);
    run(c);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, SC_ETOOBIG);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.error, SC_ETOOBIG);
    assert_int_equal(r3.calls, 1);
    assert_int_equal(r3.error, 0);
    assert_int_equal(r3.body_len, BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++) {
        if (r3.body[i] != pattern(i)) {
            fail_msg("byte %zu differs", i);
        }
    }
    result_cleanup(&r);
    result_cleanup(&r2);
    result_cleanup(&r3);
}

struct stream {
    struct result r;
    struct sc_buf got;
    size_t pieces;
    struct ctx *c;
    struct result side; /* a transfer started from inside on_data */
    struct sc_egress_xfer *self;
    bool cancel_self;
    bool abort;
};

static bool on_stream_data(void *arg, const char *p, size_t len)
{
    struct stream *s = arg;
    if (s->cancel_self) {
        sc_egress_cancel(s->self);
        return true;
    }
    if (s->abort) {
        return false;
    }
    if (s->pieces++ == 0) {
        send_ok(s->c, &(struct sc_egress_req){ .url = url(s->c, "/hello") }, &s->side);
    }
    assert_int_equal(sc_buf_append(&s->got, p, len), 0);
    return true;
}

static void test_stream(void **state)
{
    struct ctx *c = *state;
    struct stream s = { .c = c };
    sc_buf_init(&s.got, 1 << 20);
    struct sc_egress_req req = { .url = url(c, "/stream"),
                                 .on_data = on_stream_data,
                                 .max_response = 10 };
    assert_int_equal(sc_egress_send(c->e, &req, on_done, &s.r, &s.self), 0);
    run(c);
    assert_int_equal(s.r.calls, 1);
    assert_int_equal(s.r.error, 0);
    assert_int_equal(s.r.status, 200);
    assert_int_equal(s.r.body_len, 0);
    assert_int_equal(s.got.len, STREAM_CHUNKS * STREAM_CHUNK);
    for (size_t i = 0; i < s.got.len; i++) {
        if (s.got.p[i] != pattern(i)) {
            fail_msg("byte %zu differs", i);
        }
    }
    /* The transfer started from on_data (curl on the stack) ran once curl returned. */
    assert_int_equal(s.side.calls, 1);
    assert_string_equal(s.side.body, "hello world");

    /* Cancelling itself from on_data: no callback, no leak. */
    struct stream s2 = { .c = c, .cancel_self = true };
    req.on_data = on_stream_data;
    assert_int_equal(sc_egress_send(c->e, &req, on_done, &s2.r, &s2.self), 0);
    run(c);
    assert_int_equal(s2.r.calls, 0);

    /* on_data stopping the stream ends it with -ECANCELED, once. */
    struct stream s3 = { .c = c, .abort = true };
    assert_int_equal(sc_egress_send(c->e, &req, on_done, &s3.r, NULL), 0);
    run(c);
    assert_int_equal(s3.r.calls, 1);
    assert_int_equal(s3.r.error, -ECANCELED);
    assert_int_equal(s3.r.status, 200);
    result_cleanup(&s3.r);
    sc_buf_cleanup(&s.got);
    result_cleanup(&s.r);
    result_cleanup(&s.side);
}

static void on_cancel_timer(uv_timer_t *t)
{
    sc_egress_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state)
{
    struct ctx *c = *state;
    struct result r = { 0 };
    struct result r2 = { 0 };
    struct sc_egress_xfer *x = NULL;
    struct sc_egress_xfer *x2 = NULL;
    assert_int_equal(
        sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/hello") }, on_done, &r, &x),
        0);
    sc_egress_cancel(x); /* before it started */
    assert_int_equal(
        sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/stall") }, on_done, &r2, &x2),
        0);
    uv_timer_t t;
    uv_timer_init(&c->loop, &t);
    t.data = x2;
    uv_timer_start(&t, on_cancel_timer, 100, 0); /* while it waits on the server */
    run(c);
    assert_int_equal(r.calls, 0);
    assert_int_equal(r2.calls, 0);
}

struct closer {
    struct ctx *c;
    int calls;
    int closed;
    int send_rc;
};

static void on_closed_cb(void *arg, const struct sc_egress_resp *resp)
{
    struct closer *k = arg;
    k->calls++;
    if (resp->error == SC_ECLOSED) {
        k->closed++;
    }
    /* A send while closing is refused. */
    k->send_rc = sc_egress_send(k->c->e, &(struct sc_egress_req){ .url = url(k->c, "/hello") },
                                on_closed_cb, k, NULL);
}

static void on_close_timer(uv_timer_t *t)
{
    struct ctx *c = t->data;
    sc_egress_close(c->e);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_close_inflight(void **state)
{
    struct ctx *c = *state;
    struct closer k = { .c = c };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/stall") },
                                        on_closed_cb, &k, NULL),
                         0);
    }
    uv_timer_t t;
    uv_timer_init(&c->loop, &t);
    t.data = c;
    uv_timer_start(&t, on_close_timer, 100, 0);
    run(c);
    c->e = NULL; /* freed by the close; teardown checks uv_loop_close */
    assert_int_equal(k.calls, 3);
    assert_int_equal(k.closed, 3);
    assert_int_equal(k.send_rc, SC_ECLOSED);
    sc_egress_close(NULL);
}

static void on_hello_then_close(void *arg, const struct sc_egress_resp *resp)
{
    struct closer *k = arg;
    assert_int_equal(resp->status, 200);
    sc_egress_close(k->c->e); /* from inside dispatch: deferred until it unwinds */
}

static void test_close_from_callback(void **state)
{
    struct ctx *c = *state;
    struct closer k = { .c = c };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/stall") },
                                        on_closed_cb, &k, NULL),
                         0);
    }
    assert_int_equal(sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/hello") },
                                    on_hello_then_close, &k, NULL),
                     0);
    run(c);
    c->e = NULL;
    assert_int_equal(k.calls, 2);
    assert_int_equal(k.closed, 2);
}

#define NCONC 100

static void test_concurrent(void **state)
{
    struct ctx *c = *state;
    static struct result r[NCONC];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < NCONC; i++) {
        send_ok(c, &(struct sc_egress_req){ .url = url(c, "/hello") }, &r[i]);
    }
    run(c);
    int conns = 0; /* HTTP/1.1 cannot multiplex: several connections were opened */
    for (int i = 0; i < NCONC; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].error, 0);
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body, "hello world");
        assert_non_null(r[i].header2);
        conns += i > 0 && strcmp(r[i].header2, r[0].header2) != 0;
    }
    assert_true(conns > 0);
    for (int i = 0; i < NCONC; i++) {
        result_cleanup(&r[i]);
    }
}

/* More transfers to one host than SC_EGRESS_MAX_HOST_CONNECTIONS, each held a while by the
 * server: all complete, over no more connections than the cap (the rest wait in curl's queue). */
#define NCAP (SC_EGRESS_MAX_HOST_CONNECTIONS * 2 + 10)

static void test_connection_cap(void **state)
{
    struct ctx *c = *state;
    static struct result r[NCAP];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < NCAP; i++) {
        send_ok(c, &(struct sc_egress_req){ .url = url(c, "/slow"), .timeout_ms = 120000 }, &r[i]);
    }
    run(c);
    static char *seen[NCAP];
    int nseen = 0;
    for (int i = 0; i < NCAP; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].error, 0);
        assert_string_equal(r[i].body, "slow");
        assert_non_null(r[i].header2);
        bool dup = false;
        for (int k = 0; k < nseen && !dup; k++) {
            dup = strcmp(seen[k], r[i].header2) == 0;
        }
        if (!dup) {
            seen[nseen++] = r[i].header2;
        }
    }
    print_message("%d transfers over %d connections (cap %d)\n", NCAP, nseen,
                  SC_EGRESS_MAX_HOST_CONNECTIONS);
    assert_true(nseen > 1);
    assert_true(nseen <= SC_EGRESS_MAX_HOST_CONNECTIONS);
    for (int i = 0; i < NCAP; i++) {
        result_cleanup(&r[i]);
    }
}

/* What sc_free_secret handed to the observer: every block must be all zeros. */
static size_t zeroed_blocks, zeroed_largest, dirty_blocks;

static void observe_zeroed(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i]) {
            dirty_blocks++;
            return;
        }
    }
    zeroed_blocks++;
    zeroed_largest = n > zeroed_largest ? n : zeroed_largest;
}

/* A sensitive transfer zeroes its response buffers when they grow (the body grows from 256 bytes
 * to over BIG_LEN) and when they are freed, and its header lines; an ordinary one does not. */
static void test_sensitive_buffers_zeroed(void **state)
{
    struct ctx *c = *state;
    struct sc_kv h[] = { { "X-Vault-Token", "s.not-a-real-token" } };
    struct result r = { 0 };
    zeroed_blocks = zeroed_largest = dirty_blocks = 0;
    sc_alloc_zeroed_observer = observe_zeroed;
    send_ok(c, &(struct sc_egress_req){ .url = url(c, "/big") }, &r);
    run(c);
    assert_int_equal(r.status, 200);
    assert_int_equal(zeroed_blocks, 0);
    result_cleanup(&r);

    send_ok(c,
            &(struct sc_egress_req){
                .url = url(c, "/big"), .headers = h, .nheaders = 1, .sensitive = true },
            &r);
    run(c);
    sc_alloc_zeroed_observer = NULL;
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG_LEN);
    assert_int_equal(dirty_blocks, 0);
    /* At least one growth of the body (curl hands it over in chunks of up to 16 KiB), the final
     * body, the header block and the X-Vault-Token line. */
    assert_true(zeroed_blocks >= 4);
    assert_true(zeroed_largest > BIG_LEN);
    result_cleanup(&r);
}

struct chain {
    struct ctx *c;
    struct result first;
    struct result second;
};

static void on_first(void *arg, const struct sc_egress_resp *resp)
{
    struct chain *ch = arg;
    record(&ch->first, resp);
    send_ok(ch->c,
            &(struct sc_egress_req){
                .method = "POST", .url = url(ch->c, "/echo"), .body = "again", .body_len = 5 },
            &ch->second);
}

static void test_reentrant_reuse(void **state)
{
    struct ctx *c = *state;
    struct chain ch = { .c = c };
    assert_int_equal(sc_egress_send(c->e, &(struct sc_egress_req){ .url = url(c, "/hello") },
                                    on_first, &ch, NULL),
                     0);
    run(c);
    assert_int_equal(ch.first.calls, 1);
    assert_int_equal(ch.second.calls, 1);
    assert_int_equal(ch.second.error, 0);
    assert_string_equal(ch.second.body, "again");
    /* Same server connection process: the keep-alive connection was reused. */
    assert_non_null(ch.first.header2);
    assert_non_null(ch.second.header2);
    assert_string_equal(ch.first.header2, ch.second.header2);
    result_cleanup(&ch.first);
    result_cleanup(&ch.second);
}

/* ---- TLS against openssl s_server ---------------------------------------------------------- */

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int run_cmd(char *const argv[])
{
    int st = 0;
    pid_t pid = spawn(argv);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void make_cert(const char *dir, const char *name)
{
    char key[256];
    char crt[256];
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    snprintf(crt, sizeof(crt), "%s/%s.pem", dir, name);
    char *argv[] = { "/usr/bin/openssl",
                     "req",
                     "-x509",
                     "-newkey",
                     "ec",
                     "-pkeyopt",
                     "ec_paramgen_curve:prime256v1",
                     "-nodes",
                     "-keyout",
                     key,
                     "-out",
                     crt,
                     "-days",
                     "1",
                     "-subj",
                     "/CN=127.0.0.1",
                     "-addext",
                     "subjectAltName=IP:127.0.0.1",
                     NULL };
    assert_int_equal(run_cmd(argv), 0);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons((uint16_t)port) };
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void test_tls(void **state)
{
    struct ctx *c = *state;
    if (access("/usr/bin/openssl", X_OK) != 0) {
        skip();
    }
    char dir[] = "/tmp/test_egress_XXXXXX";
    assert_non_null(mkdtemp(dir));
    make_cert(dir, "server");
    make_cert(dir, "client");
    char f[4][256];
    snprintf(f[0], sizeof(f[0]), "%s/server.pem", dir);
    snprintf(f[1], sizeof(f[1]), "%s/server.key", dir);
    snprintf(f[2], sizeof(f[2]), "%s/client.pem", dir);
    snprintf(f[3], sizeof(f[3]), "%s/client.key", dir);

    int port;
    close(bind_loopback(&port)); /* a free port for s_server (it cannot report one it picked) */
    char accept_arg[16];
    snprintf(accept_arg, sizeof(accept_arg), "%d", port);
    /* -Verify: the client must present a certificate signed by client.pem (mTLS). */
    char *argv[] = { "/usr/bin/openssl", "s_server", "-quiet",  "-www", "-accept",
                     accept_arg,         "-cert",    f[0],      "-key", f[1],
                     "-Verify",          "1",        "-CAfile", f[2],   NULL };
    pid_t srv = spawn(argv);
    for (int i = 0; i < 500 && !port_open(port); i++) {
        usleep(10000);
    }
    char u[64];
    snprintf(u, sizeof(u), "https://127.0.0.1:%d/", port);

    struct sc_egress_tls mtls = { .ca_file = f[0], .cert_file = f[2], .key_file = f[3] };
    struct sc_egress_tls insecure = { .cert_file = f[2],
                                      .key_file = f[3],
                                      .insecure_skip_verify = true };
    struct sc_egress_tls no_client = { .ca_file = f[0] };
    struct sc_egress_tls wrong_ca = { .ca_file = f[2], .cert_file = f[2], .key_file = f[3] };
    struct sc_egress_tls *cases[] = { &mtls, &insecure, &no_client, &wrong_ca };
    const int want_status[] = { 200, 200, 0, 0 };
    /* s_server -www serves one connection at a time: run the cases one after another. */
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        struct result r = { 0 };
        send_ok(c, &(struct sc_egress_req){ .url = u, .tls = cases[i], .timeout_ms = 5000 }, &r);
        run(c);
        assert_int_equal(r.calls, 1);
        if (want_status[i] == 200) {
            assert_int_equal(r.error, 0);
            assert_int_equal(r.status, 200);
        } else {
            assert_int_equal(r.error, -EIO); /* certificate required / self-signed */
            assert_int_equal(r.status, 0);
        }
        result_cleanup(&r);
    }
    kill(srv, SIGKILL);
    waitpid(srv, NULL, 0);
    for (int i = 0; i < 4; i++) {
        unlink(f[i]);
    }
    rmdir(dir);
}

int main(void)
{
    /* Hermetic: the client honours the environment's proxy, which must not catch loopback. */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_put_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sensitive_buffers_zeroed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
