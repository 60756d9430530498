// SPDX-License-Identifier: Apache-2.0
// TCP listeners and socket tuning on libuv (see tcp.h). The socket of a listener is created by
// uv_tcp_init_ex so options can be set between socket(2) and bind(2): SO_REUSEPORT, and
// TCP_NODELAY, which every accepted socket inherits from its listener.
#include "net/tcp.h"
#include "net/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "net/addr.h"

int sc_tcp_listen(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *addr, int backlog,
                  bool reuseport, uv_connection_cb cb, char **err)
{
    char name[80];
    sc_addr_format(addr, name, sizeof(name));
    int rc = uv_tcp_init_ex(loop, h, addr->sa_family);
    if (rc < 0) {
        uv_tcp_init(loop, h); /* so the caller can close it either way */
        *err = sc_asprintf("listen %s: %s", name, uv_strerror(rc));
        return rc;
    }
    if (reuseport) {
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)h, &fd) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
            rc = -errno;
            *err = sc_asprintf("listen %s: SO_REUSEPORT: %s", name, uv_strerror(rc));
            return rc;
        }
    }
    /* Set once here instead of on every accepted socket: Linux copies the listening socket's
     * TCP options, TCP_NODELAY included, into each connection it accepts (one setsockopt per
     * connection saved). */
    sc_tcp_tune(h);
    rc = uv_tcp_bind(h, addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)h, backlog, cb);
    }
    if (rc < 0) {
        *err = sc_asprintf("listen %s: %s", name, uv_strerror(rc));
        return rc;
    }
    return 0;
}

void sc_tcp_tune(uv_tcp_t *h)
{
    (void)uv_tcp_nodelay(h, 1);
}

int sc_tcp_local_address(const uv_tcp_t *h, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc = uv_tcp_getsockname(h, (struct sockaddr *)&ss, &len);
    if (rc < 0) {
        return rc;
    }
    sc_addr_format((struct sockaddr *)&ss, out, outlen);
    return 0;
}

const char *sc_tcp_peer_ip(const uv_tcp_t *h, struct sockaddr_storage *ss, char *out, size_t outlen)
{
    int len = sizeof(*ss);
    out[0] = '\0';
    if (uv_tcp_getpeername(h, (struct sockaddr *)ss, &len) < 0) {
        ss->ss_family = AF_UNSPEC;
        return out;
    }
    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)outlen);
    } else if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)outlen);
    }
    return out;
}

/* ---- the TCP transport layer (transport.h) ---- */

static struct sc_tcp_xport *tcp_of(struct sc_xport *x)
{
    return (struct sc_tcp_xport *)x;
}

static void on_tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct sc_tcp_xport *t = h->data;
    (void)hint;
    t->base.cbs->alloc(t->base.owner, buf);
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct sc_tcp_xport *t = s->data;
    (void)buf;
    if (nread == 0 || t->closing) {
        return;
    }
    if (nread < 0) {
        /* libuv stops reading at EOF itself; keep our flag in step so a restart is a no-op. */
        uv_read_stop(s);
        t->reading = false;
    }
    t->base.cbs->read(t->base.owner, nread);
}

static int tcp_read_start(struct sc_xport *x)
{
    struct sc_tcp_xport *t = tcp_of(x);
    if (t->reading || t->closing) {
        return 0;
    }
    int rc = uv_read_start((uv_stream_t *)&t->tcp, on_tcp_alloc, on_tcp_read);
    if (rc == 0) {
        t->reading = true;
    }
    return rc;
}

static void tcp_read_stop(struct sc_xport *x)
{
    struct sc_tcp_xport *t = tcp_of(x);
    if (t->reading) {
        uv_read_stop((uv_stream_t *)&t->tcp);
        t->reading = false;
    }
}

static void on_tcp_write(uv_write_t *req, int status)
{
    struct sc_tcp_xport *t = req->data;
    t->base.cbs->write_done(t->base.owner, status);
}

static int tcp_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    struct sc_tcp_xport *t = tcp_of(x);
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += iov[i].len;
    }
    if (total == 0) {
        return 0;
    }
    /* Try the write now: usually the only syscall. Queue only what the socket did not take. */
    int r = uv_try_write((uv_stream_t *)&t->tcp, iov, n);
    if (r == UV_EAGAIN || r == UV_ENOSYS) {
        r = 0;
    } else if (r < 0) {
        return r;
    }
    size_t left = (size_t)r;
    unsigned i = 0;
    while (i < n && left >= iov[i].len) {
        left -= iov[i].len;
        i++;
    }
    if (i == n) {
        return 0;
    }
    iov[i].base += left;
    iov[i].len -= left;
    if (!t->wreq) {
        t->wreq = SC_NEW(uv_write_t);
        t->wreq->data = t;
    }
    int rc = uv_write(t->wreq, (uv_stream_t *)&t->tcp, iov + i, n - i, on_tcp_write);
    return rc < 0 ? rc : 1;
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct sc_tcp_xport *t = h->data;
    /* libuv has called back a pending write (UV_ECANCELED) before the close; the callback may
     * free <t>. */
    sc_free(t->wreq);
    t->wreq = NULL;
    t->base.cbs->closed(t->base.owner);
}

static void tcp_close(struct sc_xport *x)
{
    struct sc_tcp_xport *t = tcp_of(x);
    if (t->closing) {
        return;
    }
    t->closing = true;
    t->reading = false;
    uv_close((uv_handle_t *)&t->tcp, on_tcp_closed);
}

static int tcp_shutdown(struct sc_xport *x)
{
    struct sc_tcp_xport *t = tcp_of(x);
    uv_os_fd_t fd;
    if (t->closing) {
        return UV_EPIPE;
    }
    /* Straight to the socket: libuv's own uv_shutdown would need a request in every transport,
     * and the contract (no write pending) makes its queueing unnecessary. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&t->tcp) > 0) {
        return UV_EBUSY;
    }
    if (uv_fileno((uv_handle_t *)&t->tcp, &fd) < 0) {
        return UV_EBADF;
    }
    return shutdown(fd, SHUT_WR) < 0 ? -errno : 0;
}

static int tcp_connect(struct sc_xport *x, const struct sockaddr *addr)
{
    return sc_tcp_xport_connect(tcp_of(x), addr);
}

static int tcp_query(struct sc_xport *x, enum sc_xq q, void *out)
{
    struct sc_tcp_xport *t = tcp_of(x);
    switch (q) {
    case SC_XQ_FD:
        return uv_fileno((uv_handle_t *)&t->tcp, (uv_os_fd_t *)out);
    case SC_XQ_TLS:
    case SC_XQ_TLS_RESUMED:
        *(bool *)out = false;
        return 0;
    default:
        return UV_ENOTSUP;
    }
}

/* An idle HTTP connection has nothing to read: a readable socket holds the peer's FIN, a reset or
 * bytes nobody asked for, and any of them makes it unusable. */
static bool tcp_alive(struct sc_xport *x)
{
    struct sc_tcp_xport *t = tcp_of(x);
    uv_os_fd_t fd;
    char c;
    if (t->closing || uv_fileno((uv_handle_t *)&t->tcp, &fd) < 0) {
        return false;
    }
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static const struct sc_xport_ops tcp_ops = {
    .name = "tcp",
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .close = tcp_close,
    .shutdown = tcp_shutdown,
    .connect = tcp_connect,
    .query = tcp_query,
    .alive = tcp_alive,
};

/* ---- chain-wide entry points (transport.h) ---- */

int sc_xport_connect(struct sc_xport *x, const struct sockaddr *addr)
{
    for (; x; x = x->next) {
        if (x->ops->connect) {
            return x->ops->connect(x, addr);
        }
    }
    return UV_ENOTSUP;
}

int sc_xport_query(struct sc_xport *x, enum sc_xq q, void *out)
{
    for (; x; x = x->next) {
        if (x->ops->query) {
            int rc = x->ops->query(x, q, out);
            if (rc != UV_ENOTSUP) {
                return rc;
            }
        }
    }
    return UV_ENOTSUP;
}

struct sc_str sc_xport_query_str(struct sc_xport *x, enum sc_xq q)
{
    struct sc_str s = SC_STR_NULL;
    if (sc_xport_query(x, q, &s) < 0) {
        return SC_STR_NULL;
    }
    return s;
}

bool sc_xport_alive(struct sc_xport *x)
{
    for (; x; x = x->next) {
        if (x->ops->alive && !x->ops->alive(x)) {
            return false;
        }
    }
    return true;
}

void sc_xport_alloc_buf(struct sc_buf *b, uv_buf_t *out)
{
    if (sc_buf_reserve(b, 4096) < 0) {
        size_t room = b->max - b->len;
        if (room == 0 || sc_buf_reserve(b, room) < 0) {
            *out = uv_buf_init(NULL, 0);
            return;
        }
    }
    size_t room = b->cap - b->len;
    if (room > b->max - b->len) {
        room = b->max - b->len;
    }
    *out = uv_buf_init(b->p + b->len, (unsigned)room);
}

void sc_tcp_xport_init(struct sc_tcp_xport *t, uv_loop_t *loop, const struct sc_xport_cbs *cbs,
                       void *owner)
{
    memset(t, 0, sizeof(*t));
    t->base.ops = &tcp_ops;
    t->base.cbs = cbs;
    t->base.owner = owner;
    uv_tcp_init(loop, &t->tcp);
    t->tcp.data = t;
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    struct sc_tcp_xport *t = req->data;
    sc_free(req); /* libuv is done with it; the callback may free <t> */
    if (status == 0) {
        sc_tcp_tune(&t->tcp);
    }
    t->base.cbs->connected(t->base.owner, t->closing && status == 0 ? UV_ECANCELED : status);
}

int sc_tcp_xport_connect(struct sc_tcp_xport *t, const struct sockaddr *addr)
{
    uv_connect_t *req = SC_NEW(uv_connect_t);
    req->data = t;
    int rc = uv_tcp_connect(req, &t->tcp, addr, on_tcp_connect);
    if (rc < 0) {
        sc_free(req);
    }
    return rc;
}

/* ---- a connection made for one exchange ---- */

static void oneshot_closed_one(struct sc_oneshot *o)
{
    if (--o->open == 0 && o->freed) {
        o->freed(o->owner);
    }
}

static void on_oneshot_timer_closed(uv_handle_t *h)
{
    oneshot_closed_one((struct sc_oneshot *)((char *)h - offsetof(struct sc_oneshot, timer)));
}

void sc_oneshot_on_closed(void *owner)
{
    oneshot_closed_one(owner); /* the owner's first member */
}

bool sc_oneshot_finish(struct sc_oneshot *o)
{
    if (o->done) {
        return false;
    }
    o->done = true;
    uv_timer_stop(&o->timer);
    return true;
}

void sc_oneshot_verdict(struct sc_oneshot *o, bool ok, const char *why)
{
    if (!sc_oneshot_finish(o)) {
        return;
    }
    if (o->verdict) {
        o->verdict(o->verdict_arg, ok, why);
    }
    sc_oneshot_close(o);
}

void sc_oneshot_on_timeout(uv_timer_t *t)
{
    sc_oneshot_verdict((struct sc_oneshot *)((char *)t - offsetof(struct sc_oneshot, timer)), false,
                       "timeout");
}

void sc_oneshot_cancel(struct sc_oneshot *o)
{
    if (sc_oneshot_finish(o)) {
        sc_oneshot_close(o);
    }
}

const char *sc_oneshot_error(struct sc_oneshot *o, int status)
{
    const char *e = NULL;
    (void)sc_xport_query(o->top, SC_XQ_ERROR, &e);
    return e ? e : uv_strerror(status);
}

void sc_oneshot_close(struct sc_oneshot *o)
{
    if (o->closing) {
        return;
    }
    o->closing = true;
    sc_xport_close(o->top);
    uv_close((uv_handle_t *)&o->timer, on_oneshot_timer_closed);
}

int sc_oneshot_start(struct sc_oneshot *o, uv_loop_t *loop, const struct sockaddr *addr,
                     const struct sc_oneshot_args *a)
{
    o->open = 2;
    o->owner = a->owner;
    o->freed = a->freed;
    o->verdict = a->verdict;
    o->verdict_arg = a->verdict_arg;
    uv_timer_init(loop, &o->timer);
    o->timer.data = a->owner;
    sc_tcp_xport_init(&o->tcp, loop, a->cbs, a->owner);
    o->top = &o->tcp.base;
    int rc = 0;
    if (a->wrap) {
        o->top = a->wrap(a->wrap_arg, &o->tcp.base);
        if (!o->top) {
            o->top = &o->tcp.base;
            rc = UV_EINVAL;
        }
    }
    if (rc == 0 && a->before_connect) {
        rc = a->before_connect(a->owner);
    }
    if (rc == 0) {
        rc = sc_xport_connect(o->top, addr);
    }
    if (rc < 0) {
        sc_oneshot_close(o); /* <freed> follows */
        return rc;
    }
    uv_timer_start(&o->timer, a->on_deadline, a->timeout_ms, 0);
    return 0;
}
