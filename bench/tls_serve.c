// SPDX-License-Identifier: Apache-2.0
// A minimal HTTPS server on the TLS transport layer, for measuring the layer on its own against
// nginx serving the same fixed response with the same certificate (bench/tls_layer.sh): one loop,
// one thread, keep-alive, a 13-byte body, each request answered once its head is complete. Not a
// product: it reads at most one 1 KiB head per connection and knows nothing of HTTP beyond
// "\r\n\r\n" and "Connection: close".
// Usage: bench_tls_serve CERT KEY PORT [native|openssl] (the record layer after a TLS 1.3
// handshake; default native)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/alloc.h"
#include "net/tls.h"

struct conn {
    struct sc_tcp_xport tcp;
    struct sc_xport *x;
    char buf[1024];
    size_t len;
    bool close_after;
};

static struct sc_tls_ctx *ctx;
static uv_loop_t *loop;

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n"
                           "\r\nHello, world\n";
static const char RESP_CLOSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n"
                                 "Content-Type: text/plain\r\n\r\nHello, world\n";

static void on_alloc(void *owner, uv_buf_t *b)
{
    struct conn *c = owner;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(void *owner, ssize_t n)
{
    struct conn *c = owner;
    if (n < 0) {
        sc_xport_close(c->x);
        return;
    }
    c->len += (size_t)n;
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) {
            if (c->len == sizeof(c->buf)) {
                sc_xport_close(c->x);
            }
            return;
        }
        size_t head = (size_t)(end + 4 - c->buf);
        bool close = memmem(c->buf, head, "Connection: close", 17) != NULL;
        uv_buf_t b = close ? uv_buf_init((char *)RESP_CLOSE, sizeof(RESP_CLOSE) - 1)
                           : uv_buf_init((char *)RESP, sizeof(RESP) - 1);
        int rc = sc_xport_write(c->x, &b, 1);
        memmove(c->buf, c->buf + head, c->len - head);
        c->len -= head;
        if (rc < 0 || close) {
            c->close_after = close && rc == 1;
            if (!c->close_after) {
                sc_xport_close(c->x);
            }
            return;
        }
    }
}

static void on_write_done(void *owner, int status)
{
    struct conn *c = owner;
    if (status < 0 || c->close_after) {
        sc_xport_close(c->x);
    }
}

static void on_connected(void *owner, int status)
{
    struct conn *c = owner;
    if (status < 0) {
        sc_xport_close(c->x);
    }
}

static void on_closed(void *owner)
{
    sc_free(owner);
}

static const struct sc_xport_cbs cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_closed,
};

static void on_accept(uv_stream_t *lis, int status)
{
    if (status < 0) {
        return;
    }
    struct conn *c = SC_NEW(struct conn);
    sc_tcp_xport_init(&c->tcp, loop, &cbs, c);
    if (uv_accept(lis, (uv_stream_t *)&c->tcp.tcp) < 0) {
        sc_xport_close(&c->tcp.base);
        return;
    }
    uv_tcp_nodelay(&c->tcp.tcp, 1);
    struct sc_tls_xport_args a = {
        .loop = loop, .below = &c->tcp.base, .cbs = &cbs, .owner = c, .handshake_cb = true
    };
    c->x = sc_tls_xport_new(ctx, &a);
    sc_xport_read_start(c->x);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: bench_tls_serve CERT KEY PORT [native|openssl]\n");
        return 2;
    }
    struct sc_tls_server_opts o = { .cert = argv[1], .key = argv[2], .session_cache_size = 1024 };
    if (argc == 5 && strcmp(argv[4], "openssl") == 0) {
        o.record_layer = SC_TLS_RECORD_OPENSSL;
    }
    char *alpn[] = { "http/1.1" };
    o.alpn = (struct sc_strv){ alpn, 1 };
    char *err = NULL;
    ctx = sc_tls_ctx_new_server(&o, NULL, &err);
    if (!ctx) {
        fprintf(stderr, "bench_tls_serve: %s\n", err);
        return 1;
    }
    loop = uv_default_loop();
    uv_tcp_t lis;
    uv_tcp_init(loop, &lis);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", (int)strtol(argv[3], NULL, 10), &sa);
    if (uv_tcp_bind(&lis, (struct sockaddr *)&sa, 0) < 0 ||
        uv_listen((uv_stream_t *)&lis, 1024, on_accept) < 0) {
        fprintf(stderr, "bench_tls_serve: cannot listen on %s\n", argv[3]);
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
