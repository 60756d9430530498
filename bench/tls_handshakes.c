// SPDX-License-Identifier: Apache-2.0
// Load generator of full TLS 1.3 handshakes for bench/tls.sh: keeps CONNS connections in flight
// against HOST:PORT for SECONDS, each one a new TCP connection and a full handshake (no session is
// ever offered: no resumption, no tickets kept, X25519 key share only), then one small request
// (`GET / HTTP/1.1`, `Connection: close`) whose response is read to the server's close, or with
// --handshake-only nothing after the handshake. wrk and h2load both resume sessions on their
// reconnections, which would measure resumption instead. To spend as little as possible of the
// client's core on work a real server never sees, the client loads no trust store (chain
// verification stops at once and its result is ignored) and checks no name, leaving what TLS 1.3
// makes every client do: verify the server's CertificateVerify signature. Sockets close with an
// RST (SO_LINGER 0) so that no TIME_WAIT piles up on either side. Prints one line:
//     BENCH handshakes=N duration_us=D errors=E non2xx=F resumed=R cpu_us=C
// (resumed counts handshakes the library reports as resumed: 0 unless something is wrong; cpu_us
// is the client's own user + system time, to tell whether the client was the bottleneck).
// Run: bench_tls_handshakes HOST PORT CONNS SECONDS [--handshake-only] [--sni NAME]
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 4096
#define RESP_MAX 4096

enum slot_state { SLOT_CONNECTING, SLOT_HANDSHAKE, SLOT_WRITE, SLOT_READ };

struct slot {
    int fd;
    SSL *ssl;
    enum slot_state state;
    size_t sent;
    size_t got;
    char resp[RESP_MAX];
};

struct client {
    SSL_CTX *ctx;
    struct sockaddr_in addr;
    const char *sni;
    int handshake_only;
    int ep;
    unsigned long long handshakes;
    unsigned long long errors;
    unsigned long long non2xx;
    unsigned long long resumed;
};

static const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Drops the slot's connection: the socket closes with an RST (SO_LINGER 0). */
static void slot_close(struct client *c, struct slot *s)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    if (s->ssl != NULL) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        epoll_ctl(c->ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
}

/* Starts a new connection in the slot: a non-blocking connect. Returns 0 or -errno. */
static int slot_open(struct client *c, struct slot *s)
{
    int one = 1;
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = s };
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return -errno;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->state = SLOT_CONNECTING;
    s->sent = 0;
    s->got = 0;
    if (connect(s->fd, (struct sockaddr *)&c->addr, sizeof(c->addr)) < 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(s->fd);
        s->fd = -1;
        return err;
    }
    if (epoll_ctl(c->ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
        int err = -errno;
        close(s->fd);
        s->fd = -1;
        return err;
    }
    return 0;
}

/* Waits for the direction the last TLS call asked for. */
static void slot_want(struct client *c, struct slot *s, int ssl_err)
{
    struct epoll_event ev = { .events = ssl_err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN,
                              .data.ptr = s };
    epoll_ctl(c->ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Ends the slot's connection (counted as an error or not) and starts the next one. */
static void slot_next(struct client *c, struct slot *s, int failed)
{
    if (failed)
        c->errors++;
    slot_close(c, s);
    for (int tries = 0; slot_open(c, s) < 0; tries++) {
        c->errors++;
        if (tries == 1000) {
            fprintf(stderr, "bench_tls_handshakes: cannot open connections: %s\n", strerror(errno));
            exit(1);
        }
        usleep(1000);
    }
}

/* Advances one slot as far as it goes without blocking. */
static void slot_step(struct client *c, struct slot *s)
{
    int r, e, soerr = 0;
    socklen_t len = sizeof(soerr);

    switch (s->state) {
    case SLOT_CONNECTING:
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr != 0) {
            slot_next(c, s, 1);
            return;
        }
        s->ssl = SSL_new(c->ctx);
        if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1 ||
            SSL_set_tlsext_host_name(s->ssl, c->sni) != 1) {
            slot_next(c, s, 1);
            return;
        }
        SSL_set_connect_state(s->ssl);
        s->state = SLOT_HANDSHAKE;
        /* fall through */
    case SLOT_HANDSHAKE:
        r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                slot_want(c, s, e);
                return;
            }
            ERR_clear_error();
            slot_next(c, s, 1);
            return;
        }
        c->handshakes++;
        if (SSL_session_reused(s->ssl))
            c->resumed++;
        if (c->handshake_only) {
            slot_next(c, s, 0);
            return;
        }
        s->state = SLOT_WRITE;
        /* fall through */
    case SLOT_WRITE:
        while (s->sent < sizeof(request) - 1) {
            r = SSL_write(s->ssl, request + s->sent, (int)(sizeof(request) - 1 - s->sent));
            if (r <= 0) {
                e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    slot_want(c, s, e);
                    return;
                }
                ERR_clear_error();
                slot_next(c, s, 1);
                return;
            }
            s->sent += (size_t)r;
        }
        s->state = SLOT_READ;
        /* fall through */
    case SLOT_READ:
        for (;;) {
            char scratch[RESP_MAX];
            char *dst = s->got < RESP_MAX ? s->resp + s->got : scratch;
            int room = s->got < RESP_MAX ? (int)(RESP_MAX - s->got) : (int)sizeof(scratch);
            r = SSL_read(s->ssl, dst, room);
            if (r > 0) {
                if (s->got < RESP_MAX)
                    s->got += (size_t)r;
                continue;
            }
            e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                slot_want(c, s, e);
                return;
            }
            ERR_clear_error();
            /* The server's close (close_notify or EOF) ends the response. */
            if (s->got == 0) {
                slot_next(c, s, 1);
                return;
            }
            if (s->got < 12 || memcmp(s->resp, "HTTP/1.1 2", 10) != 0)
                c->non2xx++;
            slot_next(c, s, 0);
            return;
        }
    }
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_set1_groups_list(ctx, "X25519") != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_tls_handshakes HOST PORT CONNS SECONDS [--handshake-only] "
                    "[--sni NAME]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static struct slot slots[MAX_CONNS];
    struct client c = { .sni = "localhost" };
    struct epoll_event evs[256];
    struct rusage ru;
    long long start, deadline, end;
    char *endp;
    long conns, secs, port;

    if (argc < 5)
        return usage();
    port = strtol(argv[2], &endp, 10);
    if (*endp != '\0' || port < 1 || port > 65535)
        return usage();
    conns = strtol(argv[3], &endp, 10);
    if (*endp != '\0' || conns < 1 || conns > MAX_CONNS)
        return usage();
    secs = strtol(argv[4], &endp, 10);
    if (*endp != '\0' || secs < 1 || secs > 3600)
        return usage();
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--handshake-only") == 0)
            c.handshake_only = 1;
        else if (strcmp(argv[i], "--sni") == 0 && i + 1 < argc)
            c.sni = argv[++i];
        else
            return usage();
    }
    c.addr.sin_family = AF_INET;
    c.addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, argv[1], &c.addr.sin_addr) != 1)
        return usage();
    c.ctx = client_ctx();
    c.ep = epoll_create1(EPOLL_CLOEXEC);
    if (c.ctx == NULL || c.ep < 0) {
        fprintf(stderr, "bench_tls_handshakes: cannot set up TLS or epoll\n");
        return 1;
    }

    start = now_us();
    deadline = start + secs * 1000000LL;
    for (long i = 0; i < conns; i++) {
        slots[i].fd = -1;
        if (slot_open(&c, &slots[i]) < 0) {
            fprintf(stderr, "bench_tls_handshakes: connect: %s\n", strerror(errno));
            return 1;
        }
    }
    while ((end = now_us()) < deadline) {
        int n = epoll_wait(c.ep, evs, 256, (int)((deadline - end) / 1000) + 1);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++)
            slot_step(&c, evs[i].data.ptr);
    }
    end = now_us();
    getrusage(RUSAGE_SELF, &ru);
    for (long i = 0; i < conns; i++)
        slot_close(&c, &slots[i]);
    SSL_CTX_free(c.ctx);
    close(c.ep);
    printf("BENCH handshakes=%llu duration_us=%lld errors=%llu non2xx=%llu resumed=%llu "
           "cpu_us=%lld\n",
           c.handshakes, end - start, c.errors, c.non2xx, c.resumed,
           (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
               ru.ru_stime.tv_usec);
    return 0;
}
