// SPDX-License-Identifier: Apache-2.0
// A counting HTTP/1.1 sink for bench/logs.sh: one thread, epoll, keep-alive connections on a
// loopback port. Every POST (any path: the generic HTTP output, Loki's /loki/api/v1/push,
// Elasticsearch's /_bulk) is read whole (Content-Length bodies), its records counted by a marker
// that every bench line holds once (after undoing Content-Encoding: gzip, and snappy for
// application/x-protobuf), and answered 200 with "{}" (for /_bulk: an errors:false result) at
// once or after LATENCY_MS, without holding up other connections meanwhile. Records count once
// answered, i.e. once the shipper may acknowledge them. GET /count answers
// "records requests body_bytes max_concurrent"; GET /wait?n=N is held until N records have been
// answered and then answers "records realtime_seconds" (the wall clock at that moment), so that a
// harness waits without polling. A request with `Expect: 100-continue` gets its interim 100 as
// soon as its head is in; answers that do not fit the socket at once are kept and written when it
// is writable. A measuring tool, written in C so that the sink is never what limits a run; the
// tests' fakes of real backends are tests/integration/fake_*.py.
//
// Usage: bench_http_sink PORT [LATENCY_MS] [MARKER]
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <snappy-c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_BODY (256u << 20)

struct conn {
    int fd;
    char *buf; /* received, not yet consumed */
    size_t len, cap;
    uint64_t due_ms; /* a delayed answer is pending until then (0: none) */
    uint64_t pending_records;
    int pending_bulk;
    struct conn *next_due; /* unsorted list of connections with a pending answer */
    char *out;             /* answers not yet written (the socket was full) */
    size_t out_len, out_cap;
    bool want_out;   /* registered for EPOLLOUT */
    bool continued;  /* the 100 for the request at the head of buf was sent */
    uint64_t wait_n; /* a GET /wait is held until records >= wait_n (0: none) */
    struct conn *next_wait;
};

static uint64_t records, requests, body_bytes, active, max_active;
static const char *marker = "request handled";
static uint64_t latency_ms;
static struct conn *due_list, *wait_list;
static int ep;
static char *tmp;
static size_t tmp_cap;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t count(const char *p, size_t n)
{
    size_t ml = strlen(marker);
    uint64_t c = 0;
    const char *end = p + n;
    while ((p = memmem(p, (size_t)(end - p), marker, ml))) {
        c++;
        p += ml;
    }
    return c;
}

static void grow_tmp(size_t n)
{
    if (n > tmp_cap) {
        tmp = realloc(tmp, n);
        tmp_cap = n;
        if (!tmp) {
            abort();
        }
    }
}

static uint64_t count_gzip(const char *p, size_t n)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 15 + 16) != Z_OK) {
        return 0;
    }
    grow_tmp(n * 12 + 65536);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)tmp;
    z.avail_out = (uInt)tmp_cap;
    inflate(&z, Z_FINISH);
    size_t out = tmp_cap - z.avail_out;
    inflateEnd(&z);
    return count(tmp, out);
}

static uint64_t count_snappy(const char *p, size_t n)
{
    size_t out;
    if (snappy_uncompressed_length(p, n, &out) != SNAPPY_OK) {
        return 0;
    }
    grow_tmp(out + 1);
    if (snappy_uncompress(p, n, tmp, &out) != SNAPPY_OK) {
        return 0;
    }
    return count(tmp, out);
}

/* Writes what is queued on <c>; what the socket does not take stays queued, and the connection
 * waits for EPOLLOUT. Returns -1 when the peer is gone. */
static int flush_out(struct conn *c)
{
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            break;
        }
        if (w <= 0) {
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    bool want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
    return 0;
}

static void write_all(struct conn *c, const char *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) {
            abort();
        }
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    flush_out(c); /* a closed peer shows up as a read error */
}

static void answer(struct conn *c, const char *body, const char *ctype)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", ctype,
                     strlen(body), body);
    write_all(c, head, (size_t)n);
}

static double realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Answers the held GET /wait requests whose count has been reached. */
static void wake_waiters(void)
{
    for (struct conn **pp = &wait_list; *pp;) {
        struct conn *c = *pp;
        if (records < c->wait_n) {
            pp = &c->next_wait;
            continue;
        }
        *pp = c->next_wait;
        c->wait_n = 0;
        char out[80];
        snprintf(out, sizeof(out), "%llu %.6f\n", (unsigned long long)records, realtime());
        answer(c, out, "text/plain");
    }
}

static void finish(struct conn *c)
{
    records += c->pending_records;
    active--;
    answer(c, c->pending_bulk ? "{\"took\":1,\"errors\":false,\"items\":[]}" : "{}",
           "application/json");
    c->due_ms = 0;
    wake_waiters();
}

/* Finds header <name> in the head [p, p+n); returns its value (trimmed) or NULL. */
static const char *header(const char *p, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = p + n;
    const char *line = memchr(p, '\n', n);
    while (line && line + 1 < end) {
        line++;
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < end && *v == ' ') {
                v++;
            }
            const char *e = memchr(v, '\r', (size_t)(end - v));
            *vlen = e ? (size_t)(e - v) : (size_t)(end - v);
            return v;
        }
        line = memchr(line, '\n', (size_t)(end - line));
    }
    return NULL;
}

/* Handles every complete request in c->buf; returns -1 to close. */
static int process(struct conn *c)
{
    size_t off = 0;
    while (!c->due_ms && !c->wait_n) {
        char *p = c->buf + off;
        size_t avail = c->len - off;
        char *eoh = memmem(p, avail, "\r\n\r\n", 4);
        if (!eoh) {
            break;
        }
        size_t hlen = (size_t)(eoh - p) + 4, vl = 0;
        const char *cl = header(p, hlen, "Content-Length", &vl);
        size_t blen = cl ? strtoull(cl, NULL, 10) : 0;
        if (blen > MAX_BODY) {
            return -1;
        }
        if (avail < hlen + blen) {
            const char *ex = header(p, hlen, "Expect", &vl);
            if (!c->continued && ex && vl == 12 && strncasecmp(ex, "100-continue", 12) == 0) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                write_all(c, cont, sizeof(cont) - 1);
                c->continued = true;
            }
            break;
        }
        c->continued = false;
        const char *body = p + hlen;
        if (strncmp(p, "GET /wait?n=", 12) == 0) {
            c->wait_n = strtoull(p + 12, NULL, 10);
            c->wait_n = c->wait_n ? c->wait_n : 1;
            c->next_wait = wait_list;
            wait_list = c;
            wake_waiters();
        } else if (strncmp(p, "GET /count", 10) == 0) {
            char out[160];
            snprintf(out, sizeof(out), "%llu %llu %llu %llu\n", (unsigned long long)records,
                     (unsigned long long)requests, (unsigned long long)body_bytes,
                     (unsigned long long)max_active);
            answer(c, out, "text/plain");
        } else {
            requests++;
            body_bytes += blen;
            const char *ce = header(p, hlen, "Content-Encoding", &vl);
            bool gz = ce && vl == 4 && strncasecmp(ce, "gzip", 4) == 0;
            const char *ct = header(p, hlen, "Content-Type", &vl);
            bool pb = ct && vl >= 22 && strncasecmp(ct, "application/x-protobuf", 22) == 0;
            c->pending_records = gz   ? count_gzip(body, blen)
                                 : pb ? count_snappy(body, blen)
                                      : count(body, blen);
            c->pending_bulk = memmem(p, hlen, "/_bulk", 6) != NULL;
            if (++active > max_active) {
                max_active = active;
            }
            if (latency_ms) {
                c->due_ms = now_ms() + latency_ms;
                c->next_due = due_list;
                due_list = c;
            } else {
                finish(c);
            }
        }
        off += hlen + blen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static void conn_close(struct conn *c)
{
    for (struct conn **pp = &due_list; *pp; pp = &(*pp)->next_due) {
        if (*pp == c) {
            *pp = c->next_due;
            active--;
            break;
        }
    }
    for (struct conn **pp = &wait_list; *pp; pp = &(*pp)->next_wait) {
        if (*pp == c) {
            *pp = c->next_wait;
            break;
        }
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c->out);
    free(c);
}

static int on_readable(struct conn *c)
{
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 1 << 20;
            if (c->cap > MAX_BODY + (1u << 20)) {
                return -1;
            }
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf) {
                return -1;
            }
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return process(c);
        }
        if (n <= 0) {
            return -1;
        }
        c->len += (size_t)n;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [LATENCY_MS] [MARKER]\n", argv[0]);
        return 2;
    }
    latency_ms = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    if (argc > 3) {
        marker = argv[3];
    }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 512) < 0) {
        perror("bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[64];
    for (;;) {
        int timeout = -1;
        uint64_t now = now_ms();
        for (struct conn **pp = &due_list; *pp;) {
            struct conn *c = *pp;
            if (c->due_ms <= now) {
                *pp = c->next_due;
                finish(c);
                if (process(c) < 0) {
                    conn_close(c);
                }
                continue;
            }
            int left = (int)(c->due_ms - now);
            timeout = timeout < 0 || left < timeout ? left : timeout;
            pp = &c->next_due;
        }
        int n = epoll_wait(ep, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event ce = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && flush_out(c) < 0) {
                conn_close(c);
                continue;
            }
            if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && on_readable(c) < 0) {
                conn_close(c);
            }
        }
    }
}
