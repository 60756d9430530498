// SPDX-License-Identifier: Apache-2.0
// bench_relay: the floor under any HTTP/1 proxy in bench/pair_syscalls.sh. One thread, one epoll
// set, level-triggered; each accepted connection gets its own upstream connection (made at
// accept, blocking), and whatever one side sends is written to the other at once: one read and
// one write per message, one epoll_wait per wake-up, no parsing, no timers, no allocation after
// the accept. What it costs per request is what the kernel charges for the syscalls and wake-ups
// a proxy cannot avoid; a proxy's own work is what it costs above that. Not a proxy: a partial
// write is finished with a blocking poll (the benchmark's messages are a few hundred bytes).
//
// Usage: bench_relay LISTEN_PORT UPSTREAM_PORT   (both on 127.0.0.1)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536

static int peer[MAX_FD];

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Writes all of <p> to <fd>, waiting for room when the socket is full. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = { .fd = fd, .events = POLLOUT };
            (void)poll(&pfd, 1, -1);
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void drop(int ep, int fd)
{
    int other = peer[fd];
    (void)epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    (void)epoll_ctl(ep, EPOLL_CTL_DEL, other, NULL);
    close(fd);
    close(other);
    peer[fd] = peer[other] = -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bench_relay LISTEN_PORT UPSTREAM_PORT\n");
        return 2;
    }
    struct sockaddr_in la = loopback(atoi(argv[1])), ua = loopback(atoi(argv[2]));
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    (void)setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(ls, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char buf[65536];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0) {
                    continue;
                }
                int u = socket(AF_INET, SOCK_STREAM, 0);
                if (u < 0 || c >= MAX_FD || u >= MAX_FD ||
                    connect(u, (struct sockaddr *)&ua, sizeof(ua)) < 0) {
                    close(c);
                    if (u >= 0) {
                        close(u);
                    }
                    continue;
                }
                (void)fcntl(u, F_SETFL, fcntl(u, F_GETFL) | O_NONBLOCK);
                nodelay(c);
                nodelay(u);
                peer[c] = u;
                peer[u] = c;
                struct epoll_event e1 = { .events = EPOLLIN, .data.fd = c };
                struct epoll_event e2 = { .events = EPOLLIN, .data.fd = u };
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
                epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
                continue;
            }
            if (peer[fd] < 0) {
                continue; /* dropped earlier in this batch */
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (r <= 0 || write_all(peer[fd], buf, (size_t)r) < 0) {
                drop(ep, fd);
            }
        }
    }
}
