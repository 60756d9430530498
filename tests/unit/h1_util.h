// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the unit tests of the HTTP/1 server and client: a loopback peer driven from
// the test's own thread (plain non-blocking sockets polled between turns of the libuv loop, so a
// test decides exactly when each byte goes out), and a pass-through transport layer that a test
// stacks with the modules' wrap hooks to prove they read and write only through the chain's top.
#ifndef SC_TESTS_H1_UTIL_H
#define SC_TESTS_H1_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "core/alloc.h"
#include "net/transport.h"

static inline uint64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Turns the loop for about <ms> milliseconds. */
static inline void tu_spin(uv_loop_t *loop, uint64_t ms)
{
    uint64_t end = tu_now_ms() + ms;
    while (tu_now_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* A listening socket on 127.0.0.1 with a free port; returns the fd and sets <*port>. */
static inline int tu_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0) {
        close(fd);
        return -1;
    }
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Connects a non-blocking socket to 127.0.0.1:<port> (the connect completes while the loop
 * turns). */
static inline int tu_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes all of <p> on non-blocking <fd>, turning the loop while the socket is full; gives up
 * after 5 s or on an error. Returns 0 or -1. */
static inline int tu_send(uv_loop_t *loop, int fd, const void *p, size_t n)
{
    const char *c = p;
    uint64_t end = tu_now_ms() + 5000;
    while (n && tu_now_ms() < end) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) {
            return -1;
        } else {
            uv_run(loop, UV_RUN_NOWAIT);
            usleep(200);
        }
    }
    return n ? -1 : 0;
}

/* Sends <p> one byte per loop turn, so the other side sees every split. */
static inline void tu_send_bytewise(uv_loop_t *loop, int fd, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tu_send(loop, fd, p + i, 1);
        uv_run(loop, UV_RUN_NOWAIT);
    }
}

/* Reads from <fd> into <out> (NUL-terminated, at most <cap> - 1 bytes) while turning the loop,
 * until <until> appears in it, the peer closes (sets <*eof>), or <ms> pass. Returns the length. */
static inline size_t tu_recv(uv_loop_t *loop, int fd, char *out, size_t cap, const char *until,
                             uint64_t ms, bool *eof)
{
    size_t len = 0;
    uint64_t end = tu_now_ms() + ms;
    if (eof) {
        *eof = false;
    }
    out[0] = '\0';
    while (tu_now_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, out + len, cap - 1 - len, MSG_DONTWAIT);
        if (r > 0) {
            len += (size_t)r;
            out[len] = '\0';
            if (until && strstr(out, until)) {
                break;
            }
            if (len == cap - 1) {
                break;
            }
            continue;
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            if (eof) {
                *eof = true;
            }
            break;
        }
        usleep(500);
    }
    return len;
}

/* Accepts one connection on <lfd> while turning the loop (up to 5 s); returns the fd or -1. */
static inline int tu_accept(uv_loop_t *loop, int lfd)
{
    uint64_t end = tu_now_ms() + 5000;
    while (tu_now_ms() < end) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) {
            return fd;
        }
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    return -1;
}

/* Closes every handle left on <loop> and reports whether the loop could be closed cleanly. */
static inline int tu_loop_close(uv_loop_t *loop)
{
    for (int i = 0; i < 2000 && uv_loop_alive(loop); i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    return uv_loop_close(loop);
}

/* ---- a pass-through layer: counts what crosses it, changes nothing ---- */

struct tu_pass {
    struct sc_xport base;
    const struct sc_xport_cbs *up_cbs;
    void *up_owner;
    size_t *read_bytes; /* counters the test owns */
    size_t *write_bytes;
    int *freed;
};

static inline void pass_alloc(void *owner, uv_buf_t *buf)
{
    struct tu_pass *p = owner;
    p->up_cbs->alloc(p->up_owner, buf);
}

static inline void pass_read(void *owner, ssize_t n)
{
    struct tu_pass *p = owner;
    if (n > 0) {
        *p->read_bytes += (size_t)n;
    }
    p->up_cbs->read(p->up_owner, n);
}

static inline void pass_write_done(void *owner, int status)
{
    struct tu_pass *p = owner;
    p->up_cbs->write_done(p->up_owner, status);
}

static inline void pass_connected(void *owner, int status)
{
    struct tu_pass *p = owner;
    p->up_cbs->connected(p->up_owner, status);
}

static inline void pass_closed(void *owner)
{
    struct tu_pass *p = owner;
    const struct sc_xport_cbs *cbs = p->up_cbs;
    void *up = p->up_owner;
    (*p->freed)++;
    sc_free(p); /* the layer frees itself before reporting up */
    cbs->closed(up);
}

static const struct sc_xport_cbs pass_cbs = {
    .alloc = pass_alloc,
    .read = pass_read,
    .write_done = pass_write_done,
    .connected = pass_connected,
    .closed = pass_closed,
};

static inline int pass_read_start(struct sc_xport *x)
{
    return sc_xport_read_start(x->next);
}

static inline void pass_read_stop(struct sc_xport *x)
{
    sc_xport_read_stop(x->next);
}

static inline int pass_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    struct tu_pass *p = (struct tu_pass *)x;
    for (unsigned i = 0; i < n; i++) {
        *p->write_bytes += iov[i].len;
    }
    return sc_xport_write(x->next, iov, n);
}

static inline void pass_close(struct sc_xport *x)
{
    sc_xport_close(x->next);
}

static inline int pass_shutdown(struct sc_xport *x)
{
    return sc_xport_shutdown(x->next);
}

static const struct sc_xport_ops pass_ops = {
    .name = "pass",
    .read_start = pass_read_start,
    .read_stop = pass_read_stop,
    .write = pass_write,
    .close = pass_close,
    .shutdown = pass_shutdown,
};

struct tu_pass_counters {
    size_t read_bytes, write_bytes;
    int made, freed;
};

/* A wrap hook: stacks a pass-through layer on <bottom>, counting into <arg> (struct
 * tu_pass_counters). */
static inline struct sc_xport *tu_pass_wrap(void *arg, struct sc_xport *bottom)
{
    struct tu_pass_counters *k = arg;
    struct tu_pass *p = SC_NEW(struct tu_pass);
    p->base.ops = &pass_ops;
    p->base.next = bottom;
    p->base.cbs = bottom->cbs;
    p->base.owner = bottom->owner;
    p->up_cbs = bottom->cbs;
    p->up_owner = bottom->owner;
    p->read_bytes = &k->read_bytes;
    p->write_bytes = &k->write_bytes;
    p->freed = &k->freed;
    bottom->cbs = &pass_cbs;
    bottom->owner = p;
    k->made++;
    return &p->base;
}

#endif
