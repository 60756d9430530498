// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the proxy's request handling, not only its parser: one proxy worker runs
// in-process on a libuv loop with short timeouts, between a client that sends the first part of
// the input and half-closes, and an upstream that answers every connection with the second part
// (after the separator "\n=====\n"; a default 200 response when there is none). The whole
// exchange must end by itself (every state has a timer), and the bytes on both wires must hold
// invariants: whatever reaches the upstream starts with a head our strict parser accepts and that
// carries the forwarding headers and no hop-by-hop ones; whatever reaches the client is an
// HTTP/1.1 response, or for an input that starts with the HTTP/2 preface (h2c), the server's
// SETTINGS frame first. Any violation aborts.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "net/addr.h"
#include "net/http1.h"
#include "net/tcp.h"
#include "roles/proxy/proxy.h"
#include "fuzz_worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy: invariant failed: %s (%s:%d)\n", #cond, __FILE__,         \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CAP 65536

static uv_loop_t loop;
static struct proxy px;
static struct proxy_worker *worker;
static uv_tcp_t up_server;
static int proxy_port;

/* The current input. */
static const char *resp_bytes;
static size_t resp_len;

/* Upstream side. */
struct upconn {
    uv_tcp_t tcp;
    uv_write_t wr;
    uv_shutdown_t sh;
    char in[CAP];
    size_t inlen;
    bool answered;
};
static int up_open;

/* Client side. */
static uv_tcp_t client;
static uv_connect_t creq;
static uv_write_t cwr;
static uv_shutdown_t csh;
static char cin[CAP];
static size_t cinlen;
static bool client_done;
static uv_timer_t guard;
static bool guard_fired;

static void check_forwarded(const char *p, size_t len)
{
    if (len == 0) {
        return;
    }
    struct sc_http_header h[128];
    struct sc_http_msg m = { .headers = h };
    struct sc_http_error err;
    int rc = sc_http1_parse_request(p, len, 0, &sc_http1_default_limits, &m, 128, &err);
    if (rc == 0) {
        /* The head was cut by the proxy closing early; it must at least be a request line. */
        CHECK(memchr(p, ' ', len) != NULL);
        return;
    }
    CHECK(rc > 0);
    CHECK(sc_http1_find(&m, SC_STR("via"), NULL) != NULL);
    CHECK(sc_http1_find(&m, SC_STR("x-request-id"), NULL) != NULL);
    CHECK(sc_http1_find(&m, SC_STR("traceparent"), NULL) != NULL);
    CHECK(sc_http1_find(&m, SC_STR("x-forwarded-for"), NULL) != NULL);
    CHECK(sc_http1_find(&m, SC_STR("keep-alive"), NULL) == NULL);
    CHECK(sc_http1_find(&m, SC_STR("proxy-connection"), NULL) == NULL);
    CHECK(sc_http1_find(&m, SC_STR("te"), NULL) == NULL);
    const struct sc_http_header *c = sc_http1_find(&m, SC_STR("connection"), NULL);
    CHECK(c == NULL || sc_str_caseeq(c->value, SC_STR("upgrade")));
    CHECK(m.minor_version == 1);
}

static void on_up_closed(uv_handle_t *h)
{
    struct upconn *u = h->data;
    check_forwarded(u->in, u->inlen);
    sc_free(u);
    up_open--;
}

static void on_up_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_up_write(uv_write_t *req, int status)
{
    struct upconn *u = req->data;
    if (status == 0 && !uv_is_closing((uv_handle_t *)&u->tcp)) {
        u->sh.data = u;
        uv_shutdown(&u->sh, (uv_stream_t *)&u->tcp, on_up_shutdown);
    }
}

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct upconn *u = h->data;
    (void)hint;
    if (u->inlen == CAP) {
        static char sink[4096];
        *buf = uv_buf_init(sink, sizeof(sink));
        return;
    }
    *buf = uv_buf_init(u->in + u->inlen, (unsigned)(CAP - u->inlen));
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct upconn *u = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_up_closed);
        return;
    }
    if (buf->base >= u->in && buf->base < u->in + CAP) {
        u->inlen += (size_t)n;
    }
    if (!u->answered && n > 0) {
        u->answered = true;
        uv_buf_t b = uv_buf_init((char *)resp_bytes, (unsigned)resp_len);
        u->wr.data = u;
        uv_write(&u->wr, s, &b, 1, on_up_write);
    }
}

static void on_up_accept(uv_stream_t *server, int status)
{
    if (status < 0) {
        return;
    }
    struct upconn *u = SC_NEW(struct upconn);
    uv_tcp_init(&loop, &u->tcp);
    u->tcp.data = u;
    up_open++;
    if (uv_accept(server, (uv_stream_t *)&u->tcp) < 0) {
        uv_close((uv_handle_t *)&u->tcp, on_up_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&u->tcp, on_up_alloc, on_up_read);
}

static void on_client_closed(uv_handle_t *h)
{
    (void)h;
    client_done = true;
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    if (cinlen == CAP) {
        static char sink[4096];
        *buf = uv_buf_init(sink, sizeof(sink));
        return;
    }
    *buf = uv_buf_init(cin + cinlen, (unsigned)(CAP - cinlen));
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_client_closed);
        return;
    }
    if (buf->base >= cin && buf->base < cin + CAP) {
        cinlen += (size_t)n;
    }
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_client_write(uv_write_t *req, int status)
{
    (void)req;
    if (status == 0 && !uv_is_closing((uv_handle_t *)&client)) {
        uv_shutdown(&csh, (uv_stream_t *)&client, on_client_shutdown);
    }
}

static const char *req_bytes;
static size_t req_len;

static void on_client_connect(uv_connect_t *req, int status)
{
    (void)req;
    if (status < 0) {
        uv_close((uv_handle_t *)&client, on_client_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&client, on_client_alloc, on_client_read);
    uv_buf_t b = uv_buf_init((char *)req_bytes, (unsigned)req_len);
    uv_write(&cwr, (uv_stream_t *)&client, &b, 1, on_client_write);
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    guard_fired = true;
}

static void setup(void)
{
    uv_loop_init(&loop);
    struct sockaddr_storage ss;
    sc_addr_parse("127.0.0.1:0", &ss, NULL);
    char *err = NULL;
    CHECK(sc_tcp_listen(&loop, &up_server, (struct sockaddr *)&ss, 128, false, on_up_accept,
                        &err) == 0);
    char upaddr[64];
    CHECK(sc_tcp_local_address(&up_server, upaddr, sizeof(upaddr)) == 0);

    static struct proxy_cfg cfg;
    sc_config_defaults(proxy_opts, &cfg);
    cfg.listen = sc_strdup("127.0.0.1:0");
    cfg.upstream = sc_strdup(upaddr);
    cfg.timeout_ms = 150;
    cfg.connect_timeout_ms = 100;
    cfg.retries = 1;
    cfg.request_headers_timeout_ms = 100;
    cfg.stream_idle_timeout_ms = 100;
    cfg.idle_timeout_ms = 100;
    cfg.access_log = 1;
    cfg.retry_buffer = 4096;
    CHECK(proxy_config_check(&cfg, &err) == 0);

    worker = fuzz_worker_start(&px, &loop, &cfg, &proxy_port);
    uv_timer_init(&loop, &guard);
}

static const char default_resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size > 32768) {
        return 0;
    }
    const char *p = (const char *)data;
    const char *sep = memmem(p, size, "\n=====\n", 7);
    req_bytes = p;
    req_len = sep ? (size_t)(sep - p) : size;
    if (sep) {
        resp_bytes = sep + 7;
        resp_len = size - req_len - 7;
    } else {
        resp_bytes = default_resp;
        resp_len = sizeof(default_resp) - 1;
    }
    if (req_len == 0) {
        return 0;
    }
    cinlen = 0;
    client_done = false;
    guard_fired = false;
    uv_tcp_init(&loop, &client);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", proxy_port, &sa);
    uv_tcp_connect(&creq, &client, (struct sockaddr *)&sa, on_client_connect);
    uv_timer_start(&guard, on_guard, 5000, 0);
    while (!(client_done && up_open == 0 && worker->nconns == 0 && worker->nuconns == 0) &&
           !guard_fired) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&guard);
    CHECK(!guard_fired); /* no exchange may hang: every state has a timer */
    if (getenv("FUZZ_PROXY_VERBOSE")) {
        fprintf(stderr, "--- client received %zu bytes:\n%.*s\n", cinlen,
                (int)(cinlen < 400 ? cinlen : 400), cin);
    }
    if (cinlen > 0 && req_len >= 24 &&
        memcmp(req_bytes, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) == 0) {
        /* HTTP/2 (h2c): the server's preface, a SETTINGS frame on stream 0, comes first. */
        CHECK(cinlen >= 9 && cin[3] == 4 && (cin[4] & 1) == 0);
        CHECK(cin[5] == 0 && cin[6] == 0 && cin[7] == 0 && cin[8] == 0);
    } else if (cinlen > 0) {
        CHECK(cinlen >= 12 && memcmp(cin, "HTTP/1.1 ", 9) == 0);
        CHECK(cin[9] >= '1' && cin[9] <= '5');
    }
    return 0;
}
