// SPDX-License-Identifier: Apache-2.0
// Unit tests for the TCP helpers and the TCP transport (net/tcp.c): every socket the proxy
// accepts or connects carries TCP_NODELAY. Accepted sockets get it from their listener
// (sc_tcp_listen sets it once; the kernel copies it into each accepted socket), with no
// setsockopt of their own, so the test reads the option on the accepted socket itself, for a
// plain and a reuseport listener; connected ones get it when the connect completes. The loop must
// close cleanly at the end of every test (no handle left behind).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "h1_util.h"
#include "net/tcp.h"
#include "net/transport.h"

struct acc {
    uv_loop_t *loop;
    uv_tcp_t conn;
    bool accepted;
};

static void on_conn(uv_stream_t *server, int status)
{
    struct acc *a = server->data;
    assert_int_equal(status, 0);
    uv_tcp_init(a->loop, &a->conn);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&a->conn), 0);
    a->accepted = true;
}

static int nodelay_of(int fd)
{
    int v = -1;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    return v;
}

static void accept_one(bool reuseport)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t lsn;
    struct acc a = { .loop = &loop };
    lsn.data = &a;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char *err = NULL;
    assert_int_equal(
        sc_tcp_listen(&loop, &lsn, (struct sockaddr *)&addr, 16, reuseport, on_conn, &err), 0);
    struct sockaddr_in bound;
    int blen = sizeof(bound);
    assert_int_equal(uv_tcp_getsockname(&lsn, (struct sockaddr *)&bound, &blen), 0);
    /* The client leaves Nagle on: only the server's own socket is under test. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&bound, sizeof(bound)), 0);
    assert_int_equal(nodelay_of(c), 0);
    uint64_t end = tu_now_ms() + 5000;
    while (!a.accepted && tu_now_ms() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    assert_true(a.accepted);
    uv_os_fd_t fd;
    assert_int_equal(uv_fileno((uv_handle_t *)&a.conn, &fd), 0);
    assert_int_equal(nodelay_of(fd), 1);
    close(c);
    uv_close((uv_handle_t *)&a.conn, NULL);
    uv_close((uv_handle_t *)&lsn, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_accepted_socket_inherits_nodelay(void **state)
{
    (void)state;
    accept_one(false);
}

static void test_accepted_socket_inherits_nodelay_reuseport(void **state)
{
    (void)state;
    accept_one(true);
}

struct cli {
    struct sc_tcp_xport tx;
    int connected;
    int nodelay;
    bool closed;
};

static void cli_alloc(void *owner, uv_buf_t *buf)
{
    (void)owner;
    *buf = uv_buf_init(NULL, 0);
}

static void cli_read(void *owner, ssize_t nread)
{
    (void)owner;
    (void)nread;
}

static void cli_write_done(void *owner, int status)
{
    (void)owner;
    (void)status;
}

static void cli_connected(void *owner, int status)
{
    struct cli *c = owner;
    c->connected = status == 0 ? 1 : -1;
    uv_os_fd_t fd;
    if (status == 0 && sc_xport_query(&c->tx.base, SC_XQ_FD, &fd) == 0) {
        c->nodelay = nodelay_of(fd);
    }
}

static void cli_closed(void *owner)
{
    ((struct cli *)owner)->closed = true;
}

static const struct sc_xport_cbs cli_cbs = {
    .alloc = cli_alloc,
    .read = cli_read,
    .write_done = cli_write_done,
    .connected = cli_connected,
    .closed = cli_closed,
};

static void test_connected_socket_has_nodelay(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port = 0;
    int l = tu_listen(&port);
    assert_true(l >= 0);
    struct cli c = { 0 };
    sc_tcp_xport_init(&c.tx, &loop, &cli_cbs, &c);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(sc_xport_connect(&c.tx.base, (struct sockaddr *)&a), 0);
    uint64_t end = tu_now_ms() + 5000;
    while (!c.connected && tu_now_ms() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    assert_int_equal(c.connected, 1);
    assert_int_equal(c.nodelay, 1);
    sc_xport_close(&c.tx.base);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(c.closed);
    close(l);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_socket_inherits_nodelay),
        cmocka_unit_test(test_accepted_socket_inherits_nodelay_reuseport),
        cmocka_unit_test(test_connected_socket_has_nodelay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
