// SPDX-License-Identifier: Apache-2.0
// The HTTP/1.1 data path of one worker: downstream connections (accept, parse, route), upstream
// connections (connect, pool, reuse, retry), and the two pumps that stream bodies between them.
// All socket I/O goes through the transport chain (net/transport.h), so TLS is one more layer.
//
// Connection objects are recycled through the worker's free lists and read buffers are lent from a
// bounded per-worker pool only while a connection has bytes in flight, so the steady state
// allocates nothing per request and an idle keep-alive connection costs its small struct. Bytes
// move from a read buffer straight to the other side's transport: written at once when the socket
// takes them (usually the only syscall), else queued, and while a write is queued its source stops
// reading. That one rule is the backpressure: at most one read buffer of data is in flight per
// direction, whatever the body size. Request bodies are also copied into a capped retry buffer
// while they fit, so a failed try can be replayed on another endpoint. Every state has a timer:
// idle and head timeouts downstream, connect, per-try and pool-idle timeouts upstream, the route
// deadline once the request is sent, and a stream-idle timeout while bodies or tunnels move.
#include <arpa/inet.h>
#include <netdb.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tcp.h"
#include "net/transport.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_route_policy.h"

static void dconn_close(struct proxy_dconn *dc);
static void uconn_close(struct proxy_uconn *uc);
static void try_parse_head(struct proxy_dconn *dc);
static void parse_loop(struct proxy_dconn *dc);
static void attempt(struct proxy_dconn *dc);
static void pump_req(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix);
static void pump_resp(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix);
static void parse_resp_head(struct proxy_dconn *dc);
static void arm_dtimer(struct proxy_dconn *dc);
static void finish_request(struct proxy_dconn *dc);
static void local_reply(struct proxy_dconn *dc, int status, const char *reason, unsigned flags);
static void check_done(struct proxy_worker *w);
static void dread_update(struct proxy_dconn *dc);
static void on_ualloc(void *owner, uv_buf_t *buf);
static void on_uread(void *owner, ssize_t nread);
static void on_uwrite(void *owner, int status);
static void on_connect(void *owner, int status);
static void on_uconn_closed(void *owner);
static void on_dalloc(void *owner, uv_buf_t *buf);
static void on_dread(void *owner, ssize_t nread);
static void on_dwrite(void *owner, int status);
static void on_dconn_closed(void *owner);
static void dconn_closed_one(struct proxy_dconn *dc);
static int dwrite(struct proxy_dconn *dc, uv_buf_t *iov, unsigned n, size_t consume, int next);
static bool tunnel_fins(struct proxy_dconn *dc);
static void connect_new(struct proxy_dconn *dc, struct proxy_endpoint *ep,
                        const struct sockaddr_storage *ss);

/* What the transports report to each side; downstream never connects. */
static const struct sc_xport_cbs ucbs = {
    .alloc = on_ualloc,
    .read = on_uread,
    .write_done = on_uwrite,
    .connected = on_connect,
    .closed = on_uconn_closed,
};

static const struct sc_xport_cbs dcbs = {
    .alloc = on_dalloc,
    .read = on_dread,
    .write_done = on_dwrite,
    .connected = NULL,
    .closed = on_dconn_closed,
};

/* ---- small utilities ---- */

uint64_t proxy_rand(struct proxy_worker *w)
{
    uint64_t s0 = w->rng[0], s1 = w->rng[1];
    uint64_t r = s0 + s1;
    s1 ^= s0;
    w->rng[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    w->rng[1] = (s1 << 37) | (s1 >> 27);
    return r;
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

/* Read buffers are lent to connections only while they have bytes in flight: an idle keep-alive
 * connection gives its buffer back to the worker's pool (bounded), so 10,000 idle clients cost
 * their small structs, not 10,000 buffers, and the steady state still allocates nothing. */
#define POOL_MAX 512

struct pooled_buf {
    struct pooled_buf *next;
};

/* A free block of <size> bytes from <p>, or a new one. */
static char *pool_take(struct proxy_blk_pool *p, size_t size)
{
    struct pooled_buf *pb = p->head;
    if (!pb) {
        return sc_malloc(size);
    }
    p->head = pb->next;
    p->n--;
    return (char *)pb;
}

/* Keeps block <blk> in <p> when <fits> (it has the pool's size) and the pool has room, else frees
 * it. */
static void pool_give(struct proxy_worker *w, struct proxy_blk_pool *p, char *blk, bool fits)
{
    if (fits && p->n < POOL_MAX && !w->closed_all) {
        struct pooled_buf *pb = (struct pooled_buf *)(void *)blk;
        pb->next = p->head;
        p->head = pb;
        p->n++;
    } else {
        sc_free(blk);
    }
}

/* Frees every block of <p>. */
static void pool_drain(struct proxy_blk_pool *p)
{
    while (p->head) {
        struct pooled_buf *pb = p->head;
        p->head = pb->next;
        sc_free(pb);
    }
    p->n = 0;
}

static void rbuf_get(struct proxy_worker *w, struct rbuf *b)
{
    if (b->p) {
        return;
    }
    b->p = pool_take(&w->bufs, BUF_INITIAL);
    b->cap = BUF_INITIAL;
    b->start = b->end = 0;
}

/* Gives an empty buffer back (a grown one is freed: big heads are rare). */
static void rbuf_put(struct proxy_worker *w, struct rbuf *b)
{
    if (!b->p || b->start != b->end) {
        return;
    }
    pool_give(w, &w->bufs, b->p, b->cap == BUF_INITIAL);
    b->p = NULL;
    b->cap = b->start = b->end = 0;
}

/* Head buffers (the upstream request head, the client's response head, the retry copy of a
 * request body) come from a second bounded pool, lent while a request runs and given back when
 * it finishes, so an idle keep-alive connection holds no buffer at all. One that grew past HBUF
 * (a large head or body) is freed instead. */
#define HBUF 2048

static void hbuf_get(struct proxy_worker *w, struct sc_buf *b)
{
    if (b->p) {
        return;
    }
    b->p = pool_take(&w->hbufs, HBUF);
    b->cap = HBUF;
    b->len = 0;
}

static void hbuf_put(struct proxy_worker *w, struct sc_buf *b)
{
    if (!b->p) {
        return;
    }
    pool_give(w, &w->hbufs, b->p, b->cap == HBUF);
    b->p = NULL;
    b->cap = b->len = 0;
}

/* Makes room at the end of <b>: moves data to the front, or grows up to <max>. */
static void rbuf_room(struct rbuf *b, size_t max)
{
    if (b->start == b->end) {
        b->start = b->end = 0;
    }
    if (b->end < b->cap) {
        return;
    }
    if (b->start > 0) {
        memmove(b->p, b->p + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
        return;
    }
    if (b->cap < max) {
        size_t n = b->cap * 2 > max ? max : b->cap * 2;
        b->p = sc_realloc(b->p, n);
        b->cap = n;
    }
}

/* ---- upstream connections ---- */

/* The worker's pool of <ep>: endpoints of static clusters have one per worker; an original_dst
 * destination's endpoint (struct odst_dest) belongs to one worker and has one; a request's own
 * destination (dc->od->ep) has none. */
static struct proxy_pool *ep_pool(struct proxy_endpoint *ep, struct proxy_worker *w)
{
    if (!ep->pools) {
        return NULL;
    }
    return ep->cluster->original_dst ? ep->pools : &ep->pools[w->id];
}

/* An original_dst destination with idle connections: it exists while its pool is not empty, so
 * the worker's list holds at most ODST_MAX_DESTS of them and never an empty one. */
struct odst_dest {
    struct sc_list node; /* worker->odst, most recently used first */
    struct proxy_endpoint ep;
    struct proxy_pool pool;
    char name[64];
};

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
               x->sin6_scope_id == y->sin6_scope_id;
    }
    return false;
}

static struct odst_dest *odst_find(struct proxy_worker *w, const struct proxy_cluster *c,
                                   const struct sockaddr_storage *ss)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &w->odst)
    {
        struct odst_dest *d = sc_list_entry(pos, struct odst_dest, node);
        if (d->ep.cluster == c && same_addr(&d->ep.addrs[0], ss)) {
            return d;
        }
    }
    return NULL;
}

/* Called when an idle connection left destination <d>'s pool: an empty destination goes. */
static void odst_left(struct proxy_worker *w, struct odst_dest *d)
{
    w->nodst_idle--;
    if (d->pool.nidle == 0) {
        sc_list_remove(&d->node);
        w->nodst--;
        sc_free(d);
    }
}

static struct proxy_uconn *uconn_get(struct proxy_worker *w)
{
    struct proxy_uconn *uc;
    if (!sc_list_empty(&w->free_uc)) {
        uc = sc_list_entry(w->free_uc.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        w->nfree_uc--;
        memset(uc, 0, sizeof(*uc));
    } else {
        uc = SC_NEW(struct proxy_uconn);
    }
    sc_list_init(&uc->node);
    uc->w = w;
    w->nuconns++;
    return uc;
}

static void uconn_closed_one(struct proxy_uconn *uc)
{
    if (--uc->closes > 0) {
        return;
    }
    struct proxy_worker *w = uc->w;
    proxy_rt_unref(uc->rt);
    uc->rt = NULL;
    w->nuconns--;
    uc->in.start = uc->in.end = 0;
    rbuf_put(w, &uc->in);
    if (w->nfree_uc < MAX_FREE && !w->closed_all) {
        sc_list_append(&w->free_uc, &uc->node);
        w->nfree_uc++;
    } else {
        sc_free(uc);
    }
    check_done(w);
}

static void on_uconn_timer_closed(uv_handle_t *h)
{
    uconn_closed_one(h->data);
}

static void on_uconn_closed(void *owner)
{
    uconn_closed_one(owner);
}

static void endpoint_release(struct proxy_req *r)
{
    if (r->active) {
        atomic_fetch_sub_explicit(&r->active->active, 1, memory_order_relaxed);
        r->active = NULL;
    }
}

static void uconn_close(struct proxy_uconn *uc)
{
    if (uc->state == U_CLOSING) {
        return;
    }
    struct odst_dest *od = NULL;
    sc_list_remove(&uc->node);
    if (uc->state == U_IDLE) {
        ep_pool(uc->ep, uc->w)->nidle--;
        if (uc->ep->cluster->original_dst) {
            od = sc_container_of(uc->ep, struct odst_dest, ep);
        }
    }
    if (uc->dc) {
        struct proxy_dconn *dc = uc->dc;
        /* The bytes of a cancelled write are in the retry copy already: skip them in the input,
         * and forget how much of this connection's input a pending client write covers. */
        if (uc->wpending) {
            dc->in.start += uc->wconsume;
            uc->wconsume = 0;
        }
        if (dc->wpending) {
            dc->wconsume = 0;
        }
        endpoint_release(&dc->req);
        dc->uc = NULL;
        uc->dc = NULL;
    }
    if (uc->m_active) {
        sc_gauge_add(uc->m_active, -1);
        uc->m_active = NULL;
    }
    if (uc->bk_pending) {
        uc->bk_pending = false;
        proxy_breaker_connected(uc->ep->cluster);
    }
    if (uc->bk_cx) {
        uc->bk_cx = false;
        proxy_breaker_closed(uc->ep->cluster);
    }
    uc->state = U_CLOSING;
    uc->closes = 2;
    sc_xport_close(&uc->tx.base);
    uv_close((uv_handle_t *)&uc->timer, on_uconn_timer_closed);
    if (od) {
        uc->ep = NULL;
        odst_left(uc->w, od);
    }
}

static void on_pool_idle_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    uc->idle_timer = false;
    if (uc->state != U_IDLE) {
        return; /* borrowed: its release re-arms */
    }
    uint64_t now = uv_now(uc->w->loop), end = uc->idle_since + uc->ep->cluster->idle_timeout_ms;
    if (now < end) {
        uv_timer_start(&uc->timer, on_pool_idle_timeout, end - now, 0);
        uc->idle_timer = true;
        return;
    }
    uconn_close(uc);
}

/* Returns <uc> to its endpoint's pool when it can carry another request, else closes it. */
static void uconn_release(struct proxy_uconn *uc, bool reusable)
{
    struct proxy_worker *w = uc->w;
    struct proxy_cluster *c = uc->ep->cluster;
    struct proxy_pool *pool = ep_pool(uc->ep, w);
    if (uc->dc) {
        endpoint_release(&uc->dc->req);
        uc->dc->uc = NULL;
        uc->dc = NULL;
    }
    if (!reusable || uc->eof || w->draining || uc->rt != w->rt || uc->in.start != uc->in.end ||
        uc->wpending) {
        uconn_close(uc);
        return;
    }
    if (c->original_dst) {
        /* The request's own destination (dc->od->ep, which goes with the request) hands the
         * connection to the worker's pool for that address, bounded in destinations and in
         * connections. */
        struct odst_dest *d = odst_find(w, c, &uc->ep->addrs[0]);
        if (!d && w->nodst < ODST_MAX_DESTS && w->nodst_idle < ODST_MAX_IDLE && c->max_idle > 0) {
            d = SC_NEW(struct odst_dest);
            d->ep.cluster = c;
            d->ep.pools = &d->pool;
            d->ep.addrs[0] = uc->ep->addrs[0];
            atomic_init(&d->ep.naddrs, 1);
            snprintf(d->name, sizeof(d->name), "%s", uc->ep->name);
            d->ep.name = d->name;
            sc_list_init(&d->pool.idle);
            sc_list_prepend(&w->odst, &d->node);
            w->nodst++;
        }
        if (!d || w->nodst_idle >= ODST_MAX_IDLE || d->pool.nidle >= c->max_idle) {
            uconn_close(uc);
            return;
        }
        uc->ep = &d->ep;
        pool = &d->pool;
        w->nodst_idle++;
    }
    if (!pool || pool->nidle >= c->max_idle) {
        uconn_close(uc);
        return;
    }
    uc->state = U_IDLE;
    uc->in.start = uc->in.end = 0;
    rbuf_put(w, &uc->in);
    uc->last_len = 0;
    sc_list_prepend(&pool->idle, &uc->node);
    pool->nidle++;
    uc->idle_since = uv_now(w->loop);
    uint64_t to = c->idle_timeout_ms;
    if (!to) {
        uv_timer_stop(&uc->timer);
        uc->idle_timer = false;
    } else if (!uc->idle_timer || !uv_is_active((uv_handle_t *)&uc->timer) ||
               uv_timer_get_due_in(&uc->timer) > to) {
        /* Left running while a request borrows the connection: the common reuse costs no
         * timer-heap work, and on_pool_idle_timeout re-checks when it fires. */
        uv_timer_start(&uc->timer, on_pool_idle_timeout, to, 0);
        uc->idle_timer = true;
    }
}

static void on_ualloc(void *owner, uv_buf_t *buf)
{
    struct proxy_uconn *uc = owner;
    uint32_t max = uc->rt ? uc->rt->max_request_head : 65536;
    rbuf_get(uc->w, &uc->in);
    rbuf_room(&uc->in, max);
    *buf = uv_buf_init(uc->in.p + uc->in.end, (unsigned)(uc->in.cap - uc->in.end));
}

/* A try failed before its response head was forwarded. Retries when the policy allows. */
static void attempt_failed(struct proxy_dconn *dc, int cond, unsigned flag, const char *why);

/* Busy polling: while the spin idle handle is active, libuv polls with a zero timeout, so the
 * worker sees the next event without going to sleep and being woken by an interrupt, which on
 * a CPU of its own is most of the latency a proxy adds. A loop turn after reads pushes the end
 * back (one clock read per turn, not per read); a turn that read nothing yields the CPU, so a
 * task sharing it is not starved. */
static void on_spin(uv_idle_t *h)
{
    struct proxy_worker *w = h->data;
    if (w->spin_read) {
        w->spin_read = false;
        w->spin_until = uv_hrtime() + w->rt->busy_poll_ns;
    } else if (uv_hrtime() >= w->spin_until) {
        uv_idle_stop(h);
    } else {
        sched_yield();
    }
}

static inline void spin_on(struct proxy_worker *w)
{
    if (w->rt->busy_poll_ns) {
        w->spin_read = true;
        if (!uv_is_active((uv_handle_t *)&w->spin)) {
            uv_idle_start(&w->spin, on_spin);
        }
    }
}

static void on_uread(void *owner, ssize_t nread)
{
    struct proxy_uconn *uc = owner;
    spin_on(uc->w);
    if (nread == 0 || uc->state == U_CLOSING) {
        return;
    }
    if (uc->state == U_IDLE) {
        /* Data or EOF on an idle connection: the server closed it or misbehaves. */
        uconn_close(uc);
        return;
    }
    struct proxy_dconn *dc = uc->dc;
    if (!dc) {
        uconn_close(uc);
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    if (nread < 0) {
        struct proxy_req *r = &dc->req;
        uc->eof = true;
        if (dc->state == D_TUNNEL) {
            if (nread != UV_EOF) {
                r->flags |= F_UC;
                dconn_close(dc);
                return;
            }
            /* A FIN: once what the upstream sent has reached the client, the client gets a FIN
             * too, and the other direction goes on until the client's own. */
            r->resp_done = true;
            sc_xport_read_stop(&uc->tx.base);
            pump_resp(dc, NULL, 0);
            return;
        }
        if (!r->resp_head_sent) {
            if (nread == UV_ENOBUFS) {
                attempt_failed(dc, 0, F_UPE, "upstream response head too large");
            } else {
                attempt_failed(dc, COND_RESET, F_UC, "upstream connection closed before response");
            }
            return;
        }
        if (r->rbody == B_EOF) {
            r->resp_done = true;
            sc_xport_read_stop(&uc->tx.base);
            pump_resp(dc, NULL, 0);
            return;
        }
        /* Reset mid-body: the client sees a truncated message, never a silently short one. */
        r->flags |= F_UC;
        dconn_close(dc);
        return;
    }
    uc->in.end += (size_t)nread;
    uc->got_bytes = true;
    if (dc->state == D_TUNNEL || dc->req.resp_head_sent) {
        pump_resp(dc, NULL, 0);
    } else {
        parse_resp_head(dc);
    }
}

static void on_per_try_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_dconn *dc = uc->dc;
    if (!dc) {
        uconn_close(uc);
        return;
    }
    sc_counter_inc(uc->ep->cluster->m_timeout);
    attempt_failed(dc, COND_TIMEOUT, F_UT, "upstream per-try timeout");
}

/* The connection is ready for the request: send the head, any replayed body, then stream. */
static void upstream_ready(struct proxy_dconn *dc)
{
    struct proxy_uconn *uc = dc->uc;
    struct proxy_req *r = &dc->req;
    uc->state = U_ACTIVE;
    uc->last_len = 0;
    if (r->route->per_try_timeout_ms) {
        uv_timer_start(&uc->timer, on_per_try_timeout, r->route->per_try_timeout_ms, 0);
        uc->idle_timer = false;
    } else if (!uc->idle_timer) {
        uv_timer_stop(&uc->timer); /* the connect timeout */
    }
    sc_xport_read_start(&uc->tx.base);
    if (r->expect && !r->sent_continue && !r->body_done && !r->resp_head_sent && !dc->wpending) {
        /* Expect: 100-continue is answered here, as Envoy does by default: the header is not
         * forwarded, so the client never waits on an upstream that ignores it, and an upstream
         * 100 is dropped (one per request). Sent once the request is on its way, so a request
         * refused locally (404, 413, 503) gets its final status instead and keeps its body. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t iov = uv_buf_init(cont, sizeof(cont) - 1);
        r->sent_continue = true;
        r->bytes_out += iov.len;
        if (dwrite(dc, &iov, 1, 0, DN_INTERIM) < 0) {
            return;
        }
    }
    uv_buf_t pre[2] = { uv_buf_init(r->head.p, (unsigned)r->head.len),
                        uv_buf_init(r->copy.p, (unsigned)r->copy.len) };
    pump_req(dc, pre, r->copy.len ? 2 : 1);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_dconn *dc = uc->dc;
    if (dc) {
        attempt_failed(dc, COND_CONNECT, F_UF | F_UT, "upstream connect timeout");
    } else {
        uconn_close(uc);
    }
}

static void on_connect(void *owner, int status)
{
    struct proxy_uconn *uc = owner;
    if (uc->state == U_CLOSING) {
        return;
    }
    struct proxy_dconn *dc = uc->dc;
    if (uc->bk_pending) {
        uc->bk_pending = false;
        proxy_breaker_connected(uc->ep->cluster);
    }
    if (status < 0) {
        if (dc) {
            attempt_failed(dc, COND_CONNECT, F_UF, uv_strerror(status));
        } else {
            uconn_close(uc);
        }
        return;
    }
    uc->m_active = uc->ep->cluster->m_cx_active;
    sc_gauge_add(uc->m_active, 1);
    if (!dc) {
        uconn_close(uc);
        return;
    }
    upstream_ready(dc);
}

/* The <i>th endpoint of <c>, counting only those of subset <ss> when there is one. */
#define SUBSET_EP(c, ss, i) (&(c)->eps[(ss) ? (ss)->idx[(i)] : (i)])

/* Picks an endpoint with addresses, preferring one other than <avoid>; only within subset <ss>
 * when it is not NULL. */
static struct proxy_endpoint *pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                            struct proxy_subset *ss, struct proxy_endpoint *avoid)
{
    size_t neps = ss ? ss->n : c->neps;
    if (neps == 0) {
        return NULL;
    }
    struct proxy_endpoint *best = NULL;
    uint64_t now = uv_now(w->loop);
    if (c->lb == PROXY_LB_LEAST_REQUEST && neps > 1) {
        for (int tries = 0; tries < 4 && !best; tries++) {
            struct proxy_endpoint *a = SUBSET_EP(c, ss, proxy_rand(w) % neps);
            struct proxy_endpoint *b = SUBSET_EP(c, ss, proxy_rand(w) % neps);
            bool au = proxy_endpoint_usable(a, now), bu = proxy_endpoint_usable(b, now);
            if (!au || (a == avoid && b != avoid)) {
                a = b;
                au = bu;
            }
            if (!bu || (b == avoid && a != avoid)) {
                b = a;
            }
            if (!au) {
                continue;
            }
            best = atomic_load(&a->active) <= atomic_load(&b->active) ? a : b;
        }
        if (best) {
            return best;
        }
    }
    unsigned start = atomic_fetch_add_explicit(ss ? &ss->rr : &c->rr, 1, memory_order_relaxed);
    for (size_t i = 0; i < neps; i++) {
        struct proxy_endpoint *e = SUBSET_EP(c, ss, (start + i) % neps);
        if (!proxy_endpoint_usable(e, now)) {
            continue;
        }
        if (e != avoid) {
            return e;
        }
        best = e;
    }
    return best;
}

static int endpoint_addr(struct proxy_endpoint *ep, struct sockaddr_storage *out)
{
    if (ep->dns) {
        uv_mutex_lock(&ep->mu);
    }
    int n = atomic_load(&ep->naddrs);
    if (n > 0) {
        unsigned i = atomic_fetch_add_explicit(&ep->next_addr, 1, memory_order_relaxed);
        *out = ep->addrs[i % (unsigned)n];
    }
    if (ep->dns) {
        uv_mutex_unlock(&ep->mu);
    }
    return n > 0 ? 0 : -ENOENT;
}

static void attempt_original_dst(struct proxy_dconn *dc);

static void attempt(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct proxy_cluster *c = r->cluster;
    if (c->original_dst) {
        attempt_original_dst(dc);
        return;
    }
    struct proxy_endpoint *ep = pick_endpoint(w, c, r->subset, r->ep);
    if (!ep) {
        local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    r->ep = ep;
    r->tries++;
    r->upstream_ns = now_ns();
    r->active = ep;
    atomic_fetch_add_explicit(&ep->active, 1, memory_order_relaxed);
    struct proxy_pool *pool = ep_pool(ep, w);
    if (!sc_list_empty(&pool->idle)) {
        struct proxy_uconn *uc = sc_list_entry(pool->idle.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        pool->nidle--;
        uc->dc = dc;
        uc->reused = true;
        uc->got_bytes = false;
        dc->uc = uc;
        upstream_ready(dc);
        return;
    }
    struct sockaddr_storage ss;
    if (endpoint_addr(ep, &ss) < 0) {
        endpoint_release(r);
        local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    connect_new(dc, ep, &ss);
}

/* Opens a new upstream connection for <dc> to <ss>, counted on <ep>. */
static void connect_new(struct proxy_dconn *dc, struct proxy_endpoint *ep,
                        const struct sockaddr_storage *ss)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct proxy_cluster *c = ep->cluster;
    if (!proxy_breaker_connect(c)) {
        endpoint_release(r);
        local_reply(dc, 503, "upstream overflow: max_connections or max_pending_requests", F_UO);
        return;
    }
    struct proxy_uconn *uc = uconn_get(w);
    uc->rt = proxy_rt_ref(r->rt);
    uc->ep = ep;
    uc->dc = dc;
    uc->bk_cx = uc->bk_pending = true;
    dc->uc = uc;
    sc_tcp_xport_init(&uc->tx, w->loop, &ucbs, uc);
    uv_timer_init(w->loop, &uc->timer);
    uc->timer.data = uc;
    uc->state = U_CONNECTING;
    int rc = sc_tcp_xport_connect(&uc->tx, (const struct sockaddr *)ss);
    if (rc < 0) {
        attempt_failed(dc, COND_CONNECT, F_UF, uv_strerror(rc));
        return;
    }
    uv_timer_start(&uc->timer, on_connect_timeout, c->connect_timeout_ms, 0);
}

/* The address iptables redirected this connection from, when it was intercepted: IPv4 through
 * SO_ORIGINAL_DST, IPv6 through IP6T_SO_ORIGINAL_DST (an IPv4-mapped client on an IPv6 socket is
 * tracked as IPv4). */
static bool original_dst(struct proxy_dconn *dc)
{
    if (dc->od->checked) {
        return dc->od->has_orig;
    }
    dc->od->checked = true;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&dc->tx.tcp, &fd) < 0) {
        return false;
    }
    struct sockaddr_storage od, local;
    socklen_t olen = sizeof(od), llen = sizeof(local);
    memset(&od, 0, sizeof(od));
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) {
        return false;
    }
    if (local.ss_family == AF_INET6 &&
        !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&local)->sin6_addr)) {
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &od, &olen) < 0 ||
            od.ss_family != AF_INET6) {
            return false;
        }
    } else if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &od, &olen) < 0 || od.ss_family != AF_INET) {
        return false;
    }
    if (od.ss_family == local.ss_family && same_addr(&od, &local)) {
        return false; /* not redirected: the client connected to us directly */
    }
    dc->od->orig = od;
    dc->od->has_orig = true;
    return true;
}

/* Sends the request to original destination <ss>: on an idle connection of the worker's pool for
 * that address when there is one, else on a new connection. */
static void odst_connect(struct proxy_dconn *dc, const struct sockaddr_storage *ss)
{
    struct proxy_worker *w = dc->w;
    struct proxy_endpoint *ep = &dc->od->ep;
    if (&ep->addrs[0] != ss) {
        ep->addrs[0] = *ss; /* the pool key when the connection is released */
    }
    struct odst_dest *d = odst_find(w, ep->cluster, ss);
    if (d) {
        struct proxy_uconn *uc = sc_list_entry(d->pool.idle.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        d->pool.nidle--;
        sc_list_remove(&d->node);
        sc_list_prepend(&w->odst, &d->node);
        odst_left(w, d);
        uc->ep = ep;
        uc->dc = dc;
        uc->reused = true;
        uc->got_bytes = false;
        dc->uc = uc;
        upstream_ready(dc);
        return;
    }
    connect_new(dc, ep, ss);
}

static void on_dyn_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct proxy_dconn *dc = req->data;
    dc->od->resolving = false;
    if (dc->state == D_CLOSING) {
        uv_freeaddrinfo(res);
        dconn_closed_one(dc);
        return;
    }
    if (dc->od->stale) {
        dc->od->stale = false;
        uv_freeaddrinfo(res);
        return;
    }
    struct addrinfo *a = res;
    while (a && a->ai_family != AF_INET && a->ai_family != AF_INET6) {
        a = a->ai_next;
    }
    if (status < 0 || !a || a->ai_addrlen > sizeof(dc->od->ep.addrs[0])) {
        uv_freeaddrinfo(res);
        endpoint_release(&dc->req);
        local_reply(dc, 503, "cannot resolve the request's destination", F_UH);
        return;
    }
    memset(&dc->od->ep.addrs[0], 0, sizeof(dc->od->ep.addrs[0]));
    memcpy(&dc->od->ep.addrs[0], a->ai_addr, a->ai_addrlen);
    atomic_store(&dc->od->ep.naddrs, 1);
    uv_freeaddrinfo(res);
    odst_connect(dc, &dc->od->ep.addrs[0]);
}

/* original_dst clusters: connect to where the client meant to go, from iptables interception
 * (SO_ORIGINAL_DST) or else the request's authority (absolute-form target or Host), resolving a
 * name asynchronously. Connections are pooled per worker by destination address. */
static void attempt_original_dst(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    struct proxy_endpoint *ep = &dc->od->ep; /* allocated by start_request */
    ep->cluster = r->cluster;
    ep->name = dc->od->name;
    ep->pools = NULL;
    r->ep = ep;
    r->tries++;
    r->upstream_ns = now_ns();
    r->active = ep;
    atomic_fetch_add_explicit(&ep->active, 1, memory_order_relaxed);
    if (original_dst(dc)) {
        sc_addr_format((struct sockaddr *)&dc->od->orig, dc->od->name, sizeof(dc->od->name));
        odst_connect(dc, &dc->od->orig);
        return;
    }
    if (atomic_load(&ep->naddrs) > 0) {
        odst_connect(dc, &ep->addrs[0]); /* a retry: resolved already */
        return;
    }
    if (dc->od->resolving) {
        /* A stale lookup is still out (cancellation is best effort): do not reuse its request. */
        endpoint_release(r);
        local_reply(dc, 503, "destination lookup busy", F_UH);
        return;
    }
    /* dyn_name holds "host:port" from the request (start_request). */
    char host[256], port[8];
    const char *colon = strrchr(dc->od->name, ':');
    const char *rb = strrchr(dc->od->name, ']');
    bool has_port = colon && (!rb || colon > rb);
    size_t hl = has_port ? (size_t)(colon - dc->od->name) : strlen(dc->od->name);
    const char *h = dc->od->name;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        endpoint_release(r);
        local_reply(dc, 400, "no destination: the request has no usable Host", F_UH);
        return;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, sizeof(port), "%s", has_port ? colon + 1 : "80");
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    dc->od->gai.data = dc;
    dc->od->stale = false;
    int rc = uv_getaddrinfo(dc->w->loop, &dc->od->gai, on_dyn_resolved, host, port, &hints);
    if (rc < 0) {
        endpoint_release(r);
        local_reply(dc, 503, "cannot resolve the request's destination", F_UH);
        return;
    }
    dc->od->resolving = true;
}

static void on_backoff(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    if (dc->state == D_REQ && !dc->uc) {
        attempt(dc);
    }
}

static void btimer_start(struct proxy_dconn *dc, uint64_t ms)
{
    if (!dc->btimer) {
        dc->btimer = SC_NEW(uv_timer_t);
        uv_timer_init(dc->w->loop, dc->btimer);
        dc->btimer->data = dc;
    }
    uv_timer_start(dc->btimer, on_backoff, ms, 0);
}

static void btimer_stop(struct proxy_dconn *dc)
{
    if (dc->btimer) {
        uv_timer_stop(dc->btimer);
    }
}

static bool retriable_status(const struct proxy_route *rt, int status)
{
    if ((rt->retry_on & PROXY_RETRY_5XX) && status >= 500) {
        return true;
    }
    if ((rt->retry_on & PROXY_RETRY_GATEWAY) && status >= 502 && status <= 504) {
        return true;
    }
    if (rt->retry_on & PROXY_RETRY_STATUS) {
        for (size_t i = 0; i < rt->nstatus_codes; i++) {
            if (rt->status_codes[i] == status) {
                return true;
            }
        }
    }
    return false;
}

static bool may_retry(struct proxy_dconn *dc, int cond, int status)
{
    struct proxy_req *r = &dc->req;
    const struct proxy_route *rt = r->route;
    if (r->resp_head_sent || !r->retriable || r->retries >= rt->num_retries || dc->w->closed_all) {
        return false;
    }
    switch (cond) {
    case COND_CONNECT:
        return (rt->retry_on &
                (PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0;
    case COND_RESET:
        return (rt->retry_on & (PROXY_RETRY_RESET | PROXY_RETRY_5XX)) != 0;
    case COND_TIMEOUT:
        return (rt->retry_on & (PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0;
    case COND_STATUS:
        return retriable_status(rt, status);
    default:
        return false;
    }
}

static void schedule_retry(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    const struct proxy_route *rt = r->route;
    uint64_t interval = rt->base_interval_ms << (r->retries < 16 ? r->retries : 16);
    if (interval > rt->max_interval_ms) {
        interval = rt->max_interval_ms;
    }
    /* Full jitter in [interval/2, interval]: spreads retry storms, keeps the backoff growing. */
    uint64_t delay = interval / 2 + (interval ? proxy_rand(dc->w) % (interval / 2 + 1) : 0);
    r->retries++;
    sc_counter_inc(r->cluster->m_retry);
    btimer_start(dc, delay);
    dread_update(dc);
}

static void attempt_failed(struct proxy_dconn *dc, int cond, unsigned flag, const char *why)
{
    struct proxy_req *r = &dc->req;
    struct proxy_uconn *uc = dc->uc;
    bool stale = uc && uc->reused && !uc->got_bytes && cond == COND_RESET;
    if (uc) {
        r->upstream_total_ns += now_ns() - r->upstream_ns;
        uconn_close(uc);
    }
    sc_debug("upstream try failed", SC_LS("reason", why),
             SC_LS("endpoint", r->ep ? r->ep->name : ""));
    if (r->ep && r->ep->st && !stale) {
        /* Local-origin failures count as the gateway error a client would have seen. */
        proxy_outlier_record(r->ep, (flag & F_UT) ? 504 : cond ? 503 : 502, uv_now(dc->w->loop));
    }
    /* A pooled connection the server closed while idle is not the request's fault: try once
     * more on a fresh connection, without counting a retry, when the request can be replayed. */
    if (stale && r->retriable && !r->free_retry_used && !r->resp_head_sent) {
        r->free_retry_used = true;
        r->ep = NULL;
        attempt(dc);
        return;
    }
    if (may_retry(dc, cond, 0) && proxy_breaker_retry(r)) {
        schedule_retry(dc);
        return;
    }
    if (r->retries > 0 || (cond && r->route->num_retries > 0)) {
        flag |= F_URX;
    }
    if (r->resp_head_sent) {
        r->flags |= flag;
        dconn_close(dc);
        return;
    }
    int status = (flag & F_UT) ? 504 : 502;
    local_reply(dc, status, why, flag);
}

/* ---- downstream writes ---- */

/* Writes to the client. <consume> bytes of the upstream buffer are covered by <iov>. */
static int dwrite(struct proxy_dconn *dc, uv_buf_t *iov, unsigned n, size_t consume, int next)
{
    int rc = sc_xport_write(&dc->tx.base, iov, n);
    if (rc < 0) {
        dc->req.flags |= F_DC;
        dconn_close(dc);
        return rc;
    }
    if (rc == 1) {
        dc->wpending = true;
        dc->wconsume = consume;
        dc->wnext = next;
        if (dc->uc && dc->uc->state == U_ACTIVE) {
            sc_xport_read_stop(&dc->uc->tx.base);
        }
        return 1;
    }
    sc_buf_reset(&dc->out);
    return 0;
}

static void after_local_reply(struct proxy_dconn *dc)
{
    finish_request(dc);
}

static void on_dwrite(void *owner, int status)
{
    struct proxy_dconn *dc = owner;
    dc->wpending = false;
    if (dc->state == D_CLOSING) {
        return;
    }
    if (status < 0) {
        dc->req.flags |= F_DC;
        dconn_close(dc);
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    sc_buf_reset(&dc->out);
    struct proxy_uconn *uc = dc->uc;
    if (uc) {
        uc->in.start += dc->wconsume;
        if (uc->state == U_ACTIVE && !uc->eof) {
            sc_xport_read_start(&uc->tx.base);
        }
    }
    dc->wconsume = 0;
    switch (dc->wnext) {
    case DN_LOCAL:
        after_local_reply(dc);
        break;
    case DN_INTERIM:
        if (uc) {
            parse_resp_head(dc);
        }
        break;
    case DN_BODY:
    case DN_TUNNEL:
        pump_resp(dc, NULL, 0);
        break;
    default:
        break;
    }
}

/* ---- request body: client -> upstream ---- */

static void on_uwrite(void *owner, int status)
{
    struct proxy_uconn *uc = owner;
    uc->wpending = false;
    if (uc->state == U_CLOSING || !uc->dc) {
        return;
    }
    struct proxy_dconn *dc = uc->dc;
    if (status < 0) {
        if (!dc->req.resp_head_sent && dc->state != D_TUNNEL) {
            attempt_failed(dc, COND_RESET, F_UC, "upstream write failed");
        } else {
            dc->req.flags |= F_UC;
            dconn_close(dc);
        }
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    dc->in.start += uc->wconsume;
    uc->wconsume = 0;
    if (dc->state == D_TUNNEL && tunnel_fins(dc)) {
        return;
    }
    pump_req(dc, NULL, 0);
}

/* In a tunnel, passes each side's FIN on once that side's bytes have all been delivered
 * (shutdown of the other side's write direction, which keeps reading), and closes the tunnel when
 * both directions are finished; the stream idle timer bounds a side that never finishes. Returns
 * true when the connection was closed. */
static bool tunnel_fins(struct proxy_dconn *dc)
{
    struct proxy_uconn *uc = dc->uc;
    if (dc->state != D_TUNNEL) {
        return dc->state == D_CLOSING;
    }
    if (!uc) {
        dconn_close(dc);
        return true;
    }
    if (dc->tun_eof && !dc->shut_up && !uc->wpending && dc->in.start == dc->in.end) {
        dc->shut_up = true;
        if (sc_xport_shutdown(&uc->tx.base) < 0) {
            dconn_close(dc);
            return true;
        }
    }
    if (uc->eof && dc->req.resp_done && !dc->shut_dn && !dc->wpending &&
        uc->in.start == uc->in.end) {
        dc->shut_dn = true;
        if (sc_xport_shutdown(&dc->tx.base) < 0) {
            dconn_close(dc);
            return true;
        }
    }
    if (dc->shut_up && dc->shut_dn) {
        dconn_close(dc);
        return true;
    }
    return false;
}

static void request_body_done(struct proxy_dconn *dc)
{
    dc->req.body_done = true;
    dc->req.body_done_ms = uv_now(dc->w->loop);
    arm_dtimer(dc);
    if (dc->req.pol.mirror) {
        proxy_mirror_start(dc);
    }
}

static void pump_req(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix)
{
    struct proxy_req *r = &dc->req;
    bool tunnel = dc->state == D_TUNNEL;
    for (;;) {
        struct proxy_uconn *uc = dc->uc;
        if (!uc || uc->wpending || uc->state != U_ACTIVE) {
            break;
        }
        size_t avail = dc->in.end - dc->in.start;
        const char *p = avail ? dc->in.p + dc->in.start : NULL;
        size_t n = 0;
        bool done_now = false;
        if (tunnel) {
            n = avail;
        } else if (!r->body_done) {
            switch (r->body) {
            case B_LENGTH:
                n = avail < r->remaining ? avail : (size_t)r->remaining;
                r->remaining -= n;
                done_now = r->remaining == 0;
                break;
            case B_CHUNKED:
                while (n < avail) {
                    size_t used = 0;
                    struct sc_str data;
                    struct sc_http_error err = { 0 };
                    int rc = sc_http1_chunked_next(&r->ch, p + n, avail - n, &used, &data, &err);
                    if (rc < 0) {
                        if (r->resp_head_sent) {
                            r->flags |= F_DPE;
                            dconn_close(dc);
                        } else {
                            dc->close_after = true;
                            local_reply(dc, 400, err.reason ? err.reason : "bad chunked body",
                                        F_DPE);
                        }
                        return;
                    }
                    n += used;
                    if (r->rt->max_request_body && r->ch.body_bytes > r->rt->max_request_body) {
                        if (r->resp_head_sent) {
                            r->flags |= F_DPE;
                            dconn_close(dc);
                        } else {
                            dc->close_after = true;
                            local_reply(dc, 413, "request body larger than max_request_body",
                                        F_DPE);
                        }
                        return;
                    }
                    if (rc == SC_HTTP1_CHUNK_DONE) {
                        done_now = true;
                        break;
                    }
                    if (rc == SC_HTTP1_CHUNK_MORE) {
                        break;
                    }
                }
                break;
            default:
                done_now = true;
                break;
            }
        }
        if (!tunnel && (r->retriable || r->pol.mirror) && n > 0 &&
            sc_buf_append(&r->copy, p, n) < 0) {
            /* Past the retry buffer: this request can no longer be replayed (nor mirrored). */
            r->retriable = false;
            sc_buf_reset(&r->copy);
            proxy_mirror_drop(dc);
        }
        if (n == 0 && nprefix == 0) {
            if (done_now) {
                request_body_done(dc);
            }
            break;
        }
        uv_buf_t iov[3];
        unsigned k = 0;
        for (unsigned i = 0; i < nprefix; i++) {
            iov[k++] = prefix[i];
        }
        if (n) {
            iov[k++] = uv_buf_init((char *)p, (unsigned)n);
        }
        nprefix = 0;
        r->bytes_in += n;
        int rc = sc_xport_write(&uc->tx.base, iov, k);
        if (done_now) {
            request_body_done(dc);
        }
        if (rc < 0) {
            if (tunnel || r->resp_head_sent) {
                r->flags |= F_UC;
                dconn_close(dc);
            } else {
                attempt_failed(dc, COND_RESET, F_UC, "upstream write failed");
            }
            return;
        }
        if (rc == 1) {
            uc->wpending = true;
            uc->wconsume = n;
            break;
        }
        dc->in.start += n;
        if (n == 0 || dc->in.start == dc->in.end) {
            break;
        }
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    dread_update(dc);
}

/* ---- response: upstream -> client ---- */

static void parse_resp_head(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    struct proxy_worker *w = dc->w;
    for (;;) {
        struct proxy_uconn *uc = dc->uc;
        if (!uc || dc->wpending) {
            return;
        }
        size_t avail = uc->in.end - uc->in.start;
        if (avail == 0) {
            return;
        }
        struct sc_http_msg m = { .headers = w->hdrs };
        struct sc_http_error err = { 0 };
        struct sc_http_limits lim = sc_http_default_limits;
        lim.max_head = r->rt->max_request_head;
        unsigned flags =
            (r->is_head ? SC_HTTP_RESP_TO_HEAD : 0) | (r->is_connect ? SC_HTTP_RESP_TO_CONNECT : 0);
        int rc = sc_http1_parse_response(uc->in.p + uc->in.start, avail, uc->last_len, &lim, flags,
                                         &m, MAX_HEADERS, &err);
        if (rc == 0) {
            uc->last_len = avail;
            if (avail >= r->rt->max_request_head) {
                attempt_failed(dc, 0, F_UPE, "upstream response head too large");
            }
            return;
        }
        if (rc < 0) {
            attempt_failed(dc, 0, F_UPE, err.reason ? err.reason : "malformed upstream response");
            return;
        }
        uc->last_len = 0;
        if (m.status > 599) {
            /* RFC 9110 section 15: outside 100..599 is invalid; never pass one on to clients. */
            attempt_failed(dc, 0, F_UPE, "invalid upstream status code");
            return;
        }
        if (m.status >= 100 && m.status < 200 && m.status != 101) {
            /* Interim response (100 Continue, 103 Early Hints): passed on to HTTP/1.1 clients,
             * rebuilt as our own HTTP/1.1 head; HTTP/1.0 has no 1xx, so from an HTTP/1.0
             * upstream or to an HTTP/1.0 client it is dropped. */
            size_t len = (size_t)rc;
            if (r->minor == 0 || m.minor_version == 0 || (m.status == 100 && r->sent_continue)) {
                uc->in.start += len;
                continue;
            }
            hbuf_get(w, &dc->out);
            sc_buf_reset(&dc->out);
            if (proxy_build_interim_head(dc, &m) < 0) {
                sc_buf_reset(&dc->out);
                uc->in.start += len;
                continue;
            }
            uc->in.start += len;
            uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
            r->bytes_out += dc->out.len;
            if (dwrite(dc, &iov, 1, 0, DN_INTERIM) != 0) {
                return;
            }
            continue;
        }
        if (m.status == 101 && !r->upgrade) {
            attempt_failed(dc, 0, F_UPE, "upstream switched protocols without an upgrade request");
            return;
        }
        if (r->ep && r->ep->st) {
            proxy_outlier_record(r->ep, m.status, uv_now(w->loop));
        }
        if (may_retry(dc, COND_STATUS, m.status) && proxy_breaker_retry(r)) {
            r->upstream_total_ns += now_ns() - r->upstream_ns;
            uconn_close(uc);
            schedule_retry(dc);
            return;
        }
        r->upstream_total_ns += now_ns() - r->upstream_ns;
        if (!uc->idle_timer) {
            uv_timer_stop(&uc->timer); /* the per-try timeout */
        }
        r->status = m.status;
        r->rbody = m.body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
                   : m.body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                   : m.body == SC_HTTP_BODY_EOF     ? B_EOF
                                                    : B_NONE;
        r->rremaining = m.content_length;
        bool tunnel = m.status == 101 || (r->is_connect && m.status >= 200 && m.status < 300);
        if (tunnel) {
            r->rbody = B_RAW;
        }
        if (r->rbody == B_CHUNKED) {
            sc_http1_chunked_init(&r->rch);
            r->dechunk = r->minor == 0;
        }
        if (!m.keep_alive && r->rbody != B_RAW) {
            /* The upstream closes after this response: it cannot go back to the pool. */
            uc->reused = false;
        }
        r->resp_keep_alive = m.keep_alive;
        hbuf_get(w, &dc->out);
        sc_buf_reset(&dc->out);
        if (proxy_build_resp_head(dc, &m) < 0) {
            sc_buf_reset(&dc->out);
            attempt_failed(dc, 0, F_UPE, "upstream response head too large");
            return;
        }
        uc->in.start += (size_t)rc;
        r->resp_head_sent = true;
        if (tunnel) {
            dc->state = D_TUNNEL;
            /* Reading paused for the head (full buffer) resumes; a client that already
             * half-closed gets its buffered bytes sent, then its FIN passed on. */
            dc->tun_eof = dc->eof;
            dc->rpaused = dc->eof;
        }
        arm_dtimer(dc);
        uv_buf_t pre = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
        r->bytes_out += dc->out.len;
        pump_resp(dc, &pre, 1);
        if (tunnel && dc->state == D_TUNNEL) {
            pump_req(dc, NULL, 0);
            tunnel_fins(dc);
        }
        return;
    }
}

/* Called once the whole response went out to the client. */
static void response_complete(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    struct proxy_uconn *uc = dc->uc;
    r->resp_done = true;
    if (uc) {
        bool reusable =
            r->body_done && r->resp_keep_alive && r->rbody != B_EOF && uc->state == U_ACTIVE;
        uconn_release(uc, reusable);
    }
    if (!r->body_done) {
        /* The response ended before the request body: the rest of it cannot be skipped safely. */
        dc->close_after = true;
    }
    finish_request(dc);
}

static void pump_resp(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix)
{
    struct proxy_req *r = &dc->req;
    for (;;) {
        struct proxy_uconn *uc = dc->uc;
        if (dc->wpending) {
            return;
        }
        if (!uc) {
            if (nprefix == 0) {
                if (r->resp_done || r->rbody == B_NONE) {
                    response_complete(dc);
                } else {
                    dconn_close(dc);
                }
                return;
            }
        }
        size_t avail = uc ? uc->in.end - uc->in.start : 0;
        const char *p = avail ? uc->in.p + uc->in.start : NULL;
        uv_buf_t iov[MAX_IOV + 1];
        unsigned k = 0;
        for (unsigned i = 0; i < nprefix; i++) {
            iov[k++] = prefix[i];
        }
        nprefix = 0;
        size_t consumed = 0;
        bool done = false;
        switch (r->rbody) {
        case B_NONE:
            done = true;
            break;
        case B_LENGTH:
            consumed = avail < r->rremaining ? avail : (size_t)r->rremaining;
            r->rremaining -= consumed;
            done = r->rremaining == 0;
            if (consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
            }
            break;
        case B_CHUNKED:
            while (consumed < avail && k < MAX_IOV) {
                size_t used = 0;
                struct sc_str data = SC_STR_NULL;
                struct sc_http_error err = { 0 };
                int rc = sc_http1_chunked_next(&r->rch, p + consumed, avail - consumed, &used,
                                               &data, &err);
                if (rc < 0) {
                    r->flags |= F_UPE;
                    dconn_close(dc);
                    return;
                }
                if (r->dechunk && rc == SC_HTTP1_CHUNK_DATA && data.len) {
                    iov[k++] = uv_buf_init((char *)data.p, (unsigned)data.len);
                }
                consumed += used;
                if (rc == SC_HTTP1_CHUNK_DONE) {
                    done = true;
                    break;
                }
                if (rc == SC_HTTP1_CHUNK_MORE) {
                    break;
                }
            }
            if (!r->dechunk && consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
            }
            break;
        case B_EOF:
        case B_RAW:
            consumed = avail;
            done = r->resp_done;
            if (consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
            }
            break;
        default:
            break;
        }
        for (unsigned i = 0; i < k; i++) {
            r->bytes_out += iov[i].len;
        }
        if (k > 0) {
            int wr = dwrite(dc, iov, k, consumed, r->rbody == B_RAW ? DN_TUNNEL : DN_BODY);
            if (wr < 0) {
                return;
            }
            if (wr == 1) {
                if (done) {
                    r->resp_done = true;
                }
                return;
            }
        }
        if (uc) {
            uc->in.start += consumed;
            if (uc->in.start == uc->in.end) {
                uc->in.start = uc->in.end = 0;
            }
        }
        if (done || (r->resp_done && r->rbody != B_RAW)) {
            if (r->rbody == B_RAW) {
                tunnel_fins(dc);
            } else {
                response_complete(dc);
            }
            return;
        }
        if (!uc || consumed == 0 || uc->in.start == uc->in.end) {
            break;
        }
    }
}

/* ---- requests ---- */

static void start_request(struct proxy_dconn *dc, const struct sc_http_msg *m, size_t headlen)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct sc_buf head = r->head, copy = r->copy;
    memset(r, 0, sizeof(*r));
    r->head = head;
    r->copy = copy;
    sc_buf_reset(&r->head);
    sc_buf_reset(&r->copy);
    r->active = NULL;
    r->rt = proxy_rt_ref(w->rt);
    r->lsn = &r->rt->listeners[dc->lidx];
    r->start_ns = now_ns();
    r->minor = m->minor_version;
    r->keep_alive = m->keep_alive;
    r->is_head = sc_str_eq(m->method, SC_STR("HEAD"));
    r->is_connect = sc_str_eq(m->method, SC_STR("CONNECT"));
    r->upgrade = m->upgrade && !r->is_connect;
    r->expect = m->expect_continue && m->minor_version == 1;
    size_t ml = m->method.len < sizeof(r->method) - 1 ? m->method.len : sizeof(r->method) - 1;
    memcpy(r->method, m->method.p, ml);
    r->method[ml] = '\0';
    r->body = m->body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
              : m->body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                                                : B_NONE;
    r->remaining = m->content_length;
    if (r->body == B_CHUNKED) {
        sc_http1_chunked_init(&r->ch);
    }
    if (r->body == B_LENGTH && r->remaining == 0) {
        r->body = B_NONE;
    }
    r->copy.max = r->rt->retry_buffer;
    r->active = NULL;
    dc->state = D_REQ;
    dc->in.start += headlen;
    dc->last_len = 0;
    dc->last_activity = uv_now(w->loop);
    r->active = NULL;
    r->route = &r->lsn->noroute;
    r->status = 0;
    r->active = NULL;
    r->resp_keep_alive = false;

    struct sc_str origin;
    struct sc_str path = proxy_target_path(m->target, &origin);
    /* The access log's path: what goes upstream (an absolute-form target's userinfo and
     * authority stay out of the log), or CONNECT's authority. */
    struct sc_str logged = r->is_connect ? m->target : origin;
    size_t slash = logged.len && logged.p[0] == '?';
    r->path[0] = '/';
    r->path_len =
        slash + (logged.len < sizeof(r->path) - slash ? logged.len : sizeof(r->path) - slash);
    memcpy(r->path + slash, logged.p, r->path_len - slash);

    struct proxy_listener *l = r->lsn;
    struct proxy_route *found = NULL;
    for (size_t i = 0; i < l->nroutes && !found; i++) {
        if (proxy_route_matches(&l->routes[i], m, path, w->md)) {
            found = &l->routes[i];
        }
    }
    if (!found) {
        dc->close_after = r->body != B_NONE;
        local_reply(dc, 404, "no route matched the request", F_NR);
        return;
    }
    r->route = found;
    r->cluster = found->cluster;
    if (found->pol || r->lsn->rl) {
        int pst = 0;
        const char *why = NULL;
        unsigned pfl = 0;
        if (proxy_route_policy_request(dc, m, &pst, &why, &pfl) != PROXY_ROUTE_POL_GO) {
            /* A bodyless request keeps its connection: a 429 is no reason to reconnect. */
            dc->close_after = r->body != B_NONE;
            r->body_done = r->body == B_NONE;
            local_reply(dc, pst, why, pfl);
            return;
        }
    }
    r->retriable = (proxy_idempotent(m->method) || found->retry_non_idempotent) && !r->upgrade &&
                   !r->is_connect && r->rt->retry_buffer > 0;
    if (r->cluster->original_dst) {
        /* The destination: an absolute-form target's authority, else Host; port 80 default. */
        struct sc_str auth = m->host;
        bool absolute = false;
        struct sc_str ta =
            r->is_connect ? SC_STR_NULL : proxy_target_authority(m->target, &absolute);
        if (absolute) {
            auth = ta; /* userinfo, path and query left out */
        } else if (r->is_connect) {
            auth = m->target;
        }
        /* The destination names the endpoint in the access log and metrics: what the config
         * loader admits for an endpoint (proxy_endpoint_check), no more. The Host header was
         * checked by the parser already; an absolute-form authority only for visible ASCII. */
        if (!proxy_endpoint_chars_ok(auth)) {
            dc->close_after = r->body != B_NONE;
            local_reply(dc, 400, "invalid destination in the request target", F_DPE);
            return;
        }
        if (!dc->od) {
            dc->od = SC_NEW(struct proxy_odst);
        }
        size_t n = auth.len < sizeof(dc->od->name) - 1 ? auth.len : sizeof(dc->od->name) - 1;
        if (n) {
            memcpy(dc->od->name, auth.p, n);
        }
        dc->od->name[n] = '\0';
        atomic_store(&dc->od->ep.naddrs, 0);
    } else if (r->cluster->neps == 0) {
        dc->close_after = r->body != B_NONE;
        local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    uint64_t maxb = r->rt->max_request_body;
    if (maxb && r->body == B_LENGTH && r->remaining > maxb) {
        dc->close_after = true;
        local_reply(dc, 413, "request body larger than max_request_body", F_DPE);
        return;
    }
    hbuf_get(w, &r->head);
    if (r->body != B_NONE && r->retriable) {
        hbuf_get(w, &r->copy);
    }
    if (proxy_build_req_head(dc, m, origin) < 0) {
        dc->close_after = true;
        local_reply(dc, 431, "request head too large after forwarding headers were added", F_DPE);
        return;
    }
    if (!proxy_breaker_request(r->cluster, r)) {
        dc->close_after = r->body != B_NONE;
        local_reply(dc, 503, "upstream overflow: max_requests", F_UO);
        return;
    }
    if (r->body == B_NONE) {
        request_body_done(dc);
    } else {
        arm_dtimer(dc);
    }
    if (r->pol.delay_ms) {
        /* Fault injection. The loop's cached time may be behind the request's start. */
        uv_update_time(w->loop);
        btimer_start(dc, r->pol.delay_ms);
    } else {
        attempt(dc);
    }
    dread_update(dc);
}

/* Answers the request from the proxy itself: 4xx/5xx with the reason as the body. */
static void local_reply(struct proxy_dconn *dc, int status, const char *reason, unsigned flags)
{
    struct proxy_req *r = &dc->req;
    r->flags |= flags;
    btimer_stop(dc);
    if (dc->uc) {
        uconn_close(dc->uc);
    }
    if (r->resp_head_sent || dc->wpending) {
        dconn_close(dc);
        return;
    }
    if (!r->body_done) {
        dc->close_after = true;
    }
    bool close = dc->close_after || dc->w->draining || !r->keep_alive;
    dc->close_after = close;
    r->status = status;
    r->resp_head_sent = true;
    r->resp_done = true;
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", reason ? reason : sc_http_reason(status));
    if (n < 0 || (size_t)n >= sizeof(body)) {
        n = (int)sizeof(body) - 1;
    }
    hbuf_get(dc->w, &dc->out);
    sc_buf_reset(&dc->out);
    if (proxy_route_policy_write_local(dc, &dc->out, status, "text/plain; charset=utf-8",
                                       sc_str_n(body, (size_t)n), close) < 0) {
        dconn_close(dc);
        return;
    }
    dread_update(dc);
    arm_dtimer(dc);
    r->bytes_out += dc->out.len;
    uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
    int rc = dwrite(dc, &iov, 1, 0, DN_LOCAL);
    if (rc == 0) {
        after_local_reply(dc);
    }
}

/* ---- access log and metrics ---- */

static void finish_request(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    if (!r->rt) {
        return;
    }
    double dur = (double)(now_ns() - r->start_ns) / 1e9;
    if (r->status == 0 && (r->flags & F_DC)) {
        r->status = 0;
    }
    proxy_count_request(dc, dur);
    if (r->rt->access_log) {
        proxy_access_log(dc, dur);
    }
    endpoint_release(r);
    proxy_breaker_release(r);
    proxy_rt_unref(r->rt);
    r->rt = NULL;
    if (dc->od && dc->od->resolving && !dc->od->stale) {
        dc->od->stale = true; /* its answer is for a request that is over */
        uv_cancel((uv_req_t *)&dc->od->gai);
    }
    /* The head buffers go back to the worker's pool (a pending write still reads dc->out). */
    hbuf_put(dc->w, &r->copy);
    hbuf_put(dc->w, &r->head);
    if (!dc->wpending) {
        hbuf_put(dc->w, &dc->out);
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    btimer_stop(dc);
    if (dc->close_after || dc->w->draining || !r->keep_alive || dc->state == D_TUNNEL) {
        dconn_close(dc);
        return;
    }
    dc->state = D_HEAD;
    dc->last_len = 0;
    if (dc->in.start == dc->in.end) {
        dc->in.start = dc->in.end = 0;
        rbuf_put(dc->w, &dc->in);
    }
    dc->head_start_ms = uv_now(dc->w->loop);
    dc->rpaused = dc->eof;
    if (dc->eof && dc->in.end == dc->in.start) {
        dconn_close(dc);
        return;
    }
    arm_dtimer(dc);
    dread_update(dc);
    if (dc->in.end > dc->in.start) {
        parse_loop(dc); /* a pipelined request is already here */
    }
}

/* ---- downstream connections ---- */

static void on_dalloc(void *owner, uv_buf_t *buf)
{
    struct proxy_dconn *dc = owner;
    rbuf_get(dc->w, &dc->in);
    size_t max = dc->state == D_HEAD ? dc->w->rt->max_request_head : dc->in.cap;
    rbuf_room(&dc->in, max);
    *buf = uv_buf_init(dc->in.p + dc->in.end, (unsigned)(dc->in.cap - dc->in.end));
}

static void on_dread(void *owner, ssize_t nread)
{
    struct proxy_dconn *dc = owner;
    spin_on(dc->w);
    if (nread == 0 || dc->state == D_CLOSING) {
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    if (nread < 0) {
        if (dc->state == D_HEAD) {
            if (nread == UV_ENOBUFS) {
                dc->close_after = true;
                local_reply(dc, 431, "request head too large", F_DPE);
                return;
            }
            dconn_close(dc);
            return;
        }
        if (dc->state == D_REQ && dc->req.body_done && (nread == UV_EOF || nread == UV_ENOBUFS)) {
            /* A half-closed client still gets its answers (to every complete request it sent);
             * a full buffer waits until the current request is answered. */
            if (nread == UV_EOF) {
                dc->eof = true;
            }
            dc->rpaused = true;
            dread_update(dc);
            return;
        }
        if (dc->state == D_TUNNEL && nread == UV_EOF) {
            /* The client's FIN goes upstream once its last bytes have; the upstream may still
             * answer until its own FIN. */
            dc->tun_eof = true;
            dc->rpaused = true;
            dread_update(dc);
            tunnel_fins(dc);
            return;
        }
        dc->req.flags |= F_DC;
        dconn_close(dc);
        return;
    }
    bool was_empty = dc->in.end == dc->in.start;
    dc->in.end += (size_t)nread;
    switch (dc->state) {
    case D_HEAD:
        if (was_empty) {
            dc->head_start_ms = uv_now(dc->w->loop);
            arm_dtimer(dc);
        }
        parse_loop(dc);
        break;
    case D_REQ:
        if (dc->req.body_done) {
            break; /* a pipelined request: parsed once this one is answered */
        }
        pump_req(dc, NULL, 0);
        break;
    case D_TUNNEL:
        pump_req(dc, NULL, 0);
        break;
    default:
        break;
    }
}

/* Whether to read from the client now. While a request body streams, only when the upstream can
 * take more (backpressure). Once the body is complete, reading goes on (so a client that leaves is
 * noticed and pipelined requests wait in the buffer) until the buffer is full, which costs no
 * epoll_ctl per request in the common case. */
static bool dread_want(const struct proxy_dconn *dc)
{
    const struct proxy_uconn *uc = dc->uc;
    switch (dc->state) {
    case D_HEAD:
        return true;
    case D_TUNNEL:
        return uc && uc->state == U_ACTIVE && !uc->wpending && !dc->rpaused;
    case D_REQ:
        if (dc->close_after || dc->rpaused) {
            return false;
        }
        if (!dc->req.body_done) {
            return uc && uc->state == U_ACTIVE && !uc->wpending;
        }
        return !(uc && uc->wpending);
    default:
        return false;
    }
}

static void dread_update(struct proxy_dconn *dc)
{
    bool want = dread_want(dc);
    if (dc->state == D_CLOSING) {
        return;
    }
    if (want) {
        (void)sc_xport_read_start(&dc->tx.base);
    } else {
        sc_xport_read_stop(&dc->tx.base);
    }
}

/* Parses and starts requests from the buffer. A request answered at once (a local reply, a
 * fast upstream) finishes inside try_parse_head and asks for the next one; that is done here, in
 * a loop, so a buffer full of pipelined requests never nests calls. */
static void parse_loop(struct proxy_dconn *dc)
{
    if (dc->in_parse) {
        dc->reparse = true;
        return;
    }
    dc->in_parse = true;
    do {
        dc->reparse = false;
        try_parse_head(dc);
    } while (dc->reparse && dc->state == D_HEAD);
    dc->in_parse = false;
}

static void try_parse_head(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    if (dc->state != D_HEAD || dc->in.end == dc->in.start) {
        return;
    }
    struct sc_http_msg m = { .headers = w->hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http_default_limits;
    lim.max_head = w->rt->max_request_head;
    size_t avail = dc->in.end - dc->in.start;
    int rc = sc_http1_parse_request(dc->in.p + dc->in.start, avail, dc->last_len, &lim, &m,
                                    MAX_HEADERS, &err);
    if (rc == 0) {
        dc->last_len = avail;
        if (dc->eof) {
            dconn_close(dc); /* the rest of this request will never come */
            return;
        }
        if (avail >= w->rt->max_request_head) {
            rc = SC_EHTTP;
            err.status = 431;
            err.reason = "request head too large";
        } else {
            return;
        }
    }
    if (rc < 0) {
        /* Answer on a pseudo request so it is logged and counted like any other. */
        struct proxy_req *r = &dc->req;
        struct sc_buf head = r->head, copy = r->copy;
        memset(r, 0, sizeof(*r));
        r->head = head;
        r->copy = copy;
        r->rt = proxy_rt_ref(w->rt);
        r->lsn = &r->rt->listeners[dc->lidx];
        r->route = &r->lsn->noroute;
        r->start_ns = now_ns();
        r->minor = 1;
        snprintf(r->method, sizeof(r->method), "-");
        dc->state = D_REQ;
        dc->close_after = true;
        dc->in.start = dc->in.end = 0;
        local_reply(dc, err.status ? err.status : 400, err.reason ? err.reason : "bad request",
                    F_DPE);
        return;
    }
    start_request(dc, &m, (size_t)rc);
}

static void dconn_closed_one(struct proxy_dconn *dc)
{
    if (--dc->closes > 0) {
        return;
    }
    struct proxy_worker *w = dc->w;
    sc_gauge_add(dc->m_active, -1);
    atomic_fetch_sub_explicit(&w->px->conns, 1, memory_order_relaxed);
    w->nconns--;
    dc->in.start = dc->in.end = 0;
    rbuf_put(w, &dc->in);
    hbuf_put(w, &dc->out);
    hbuf_put(w, &dc->req.head);
    hbuf_put(w, &dc->req.copy);
    if (w->nfree_dc < MAX_FREE && !w->closed_all) {
        sc_list_append(&w->free_dc, &dc->node);
        w->nfree_dc++;
    } else {
        sc_buf_cleanup(&dc->out);
        sc_buf_cleanup(&dc->req.head);
        sc_buf_cleanup(&dc->req.copy);
        sc_free(dc->od);
        sc_free(dc);
    }
    check_done(w);
}

static void on_dconn_timer_closed(uv_handle_t *h)
{
    dconn_closed_one(h->data);
}

static void on_btimer_closed(uv_handle_t *h)
{
    struct proxy_dconn *dc = h->data;
    sc_free(h);
    dc->btimer = NULL;
    dconn_closed_one(dc);
}

static void on_dconn_closed(void *owner)
{
    dconn_closed_one(owner);
}

static void dconn_close(struct proxy_dconn *dc)
{
    if (dc->state == D_CLOSING) {
        return;
    }
    if (dc->req.rt) {
        if (!dc->req.resp_done) {
            dc->req.flags |= F_DC;
        }
        int st = dc->state;
        dc->state = D_CLOSING;
        finish_request(dc);
        dc->state = st;
    }
    if (dc->uc) {
        uconn_close(dc->uc);
    }
    dc->state = D_CLOSING;
    sc_list_remove(&dc->node);
    dc->closes = dc->btimer ? 3 : 2;
    if (dc->od && dc->od->resolving) {
        dc->closes++; /* on_dyn_resolved releases the object */
        uv_cancel((uv_req_t *)&dc->od->gai);
    }
    sc_xport_close(&dc->tx.base);
    uv_close((uv_handle_t *)&dc->timer, on_dconn_timer_closed);
    if (dc->btimer) {
        uv_close((uv_handle_t *)dc->btimer, on_btimer_closed);
    }
}

static void on_dtimer(uv_timer_t *t);

/* Arms the connection's one timer for its current state; on_dtimer re-evaluates when it fires,
 * so activity that moves a deadline later costs nothing until then. */
static void arm_dtimer(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    struct proxy_rt *rt = dc->req.rt ? dc->req.rt : w->rt;
    uint64_t now = uv_now(w->loop), deadline;
    struct proxy_req *r = &dc->req;
    switch (dc->state) {
    case D_HEAD:
        deadline = dc->in.end == dc->in.start ? dc->last_activity + rt->idle_timeout_ms
                                              : dc->head_start_ms + rt->request_headers_timeout_ms;
        break;
    case D_REQ:
        if (!r->resp_head_sent && r->body_done && r->route && r->route->timeout_ms) {
            deadline = r->body_done_ms + r->route->timeout_ms;
        } else {
            deadline = dc->last_activity + rt->stream_idle_timeout_ms;
        }
        break;
    case D_TUNNEL:
        deadline = dc->last_activity + rt->stream_idle_timeout_ms;
        break;
    default:
        return;
    }
    /* Already armed for this deadline or an earlier one: on_dtimer re-evaluates when it fires,
     * so the deadlines each request moves later cost no timer-heap work. */
    if (dc->timer_due && dc->timer_due <= deadline) {
        return;
    }
    dc->timer_due = deadline > now ? deadline : now;
    uv_timer_start(&dc->timer, on_dtimer, dc->timer_due - now, 0);
}

static void on_dtimer(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    dc->timer_due = 0;
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct proxy_rt *rt = r->rt ? r->rt : w->rt;
    uint64_t now = uv_now(w->loop);
    switch (dc->state) {
    case D_HEAD:
        if (dc->in.end == dc->in.start) {
            if (now < dc->last_activity + rt->idle_timeout_ms) {
                arm_dtimer(dc);
                return;
            }
            dconn_close(dc);
            return;
        }
        if (now < dc->head_start_ms + rt->request_headers_timeout_ms) {
            arm_dtimer(dc); /* armed for an earlier deadline of the connection */
            return;
        }
        dc->close_after = true;
        dc->in.start = dc->in.end = 0;
        {
            struct sc_buf head = r->head, copy = r->copy;
            memset(r, 0, sizeof(*r));
            r->head = head;
            r->copy = copy;
        }
        r->rt = proxy_rt_ref(w->rt);
        r->lsn = &r->rt->listeners[dc->lidx];
        r->route = &r->lsn->noroute;
        r->start_ns = now_ns();
        r->minor = 1;
        snprintf(r->method, sizeof(r->method), "-");
        dc->state = D_REQ;
        local_reply(dc, 408, "request head timeout", F_DPE);
        return;
    case D_REQ:
        if (!r->resp_head_sent && r->body_done && r->route && r->route->timeout_ms) {
            if (now < r->body_done_ms + r->route->timeout_ms) {
                arm_dtimer(dc);
                return;
            }
            if (r->cluster) {
                sc_counter_inc(r->cluster->m_timeout);
            }
            if (r->retries > 0) {
                r->flags |= F_URX;
            }
            local_reply(dc, 504, "upstream request timeout", F_UT);
            return;
        }
        /* fallthrough */
    case D_TUNNEL:
        if (now < dc->last_activity + rt->stream_idle_timeout_ms) {
            arm_dtimer(dc);
            return;
        }
        if (!r->resp_head_sent) {
            local_reply(dc, 504, "stream idle timeout", F_SI);
        } else {
            r->flags |= F_SI;
            dconn_close(dc);
        }
        return;
    default:
        return;
    }
}

static void on_refused_closed(uv_handle_t *h)
{
    sc_free(h);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct proxy_worker *w = server->data;
    if (status < 0) {
        sc_warn("accept failed", SC_LERR(status));
        return;
    }
    if (atomic_load_explicit(&w->px->conns, memory_order_relaxed) >= w->rt->max_connections) {
        /* Over the limit: take the connection off the queue and close it, so the kernel's accept
         * queue does not fill with clients that would wait for nothing. */
        uv_tcp_t *h = sc_malloc(sizeof(*h));
        uv_tcp_init(w->loop, h);
        if (uv_accept(server, (uv_stream_t *)h) == 0) {
            sc_warn("max_connections reached; connection refused",
                    SC_LI("max_connections", w->rt->max_connections));
        }
        uv_close((uv_handle_t *)h, on_refused_closed);
        return;
    }
    struct proxy_dconn *dc;
    if (!sc_list_empty(&w->free_dc)) {
        dc = sc_list_entry(w->free_dc.next, struct proxy_dconn, node);
        sc_list_remove(&dc->node);
        w->nfree_dc--;
        struct sc_buf out = dc->out, head = dc->req.head, copy = dc->req.copy;
        struct proxy_odst *od = dc->od;
        memset(dc, 0, sizeof(*dc));
        dc->od = od;
        if (od) {
            od->checked = od->has_orig = od->stale = false; /* per connection */
        }
        dc->out = out;
        dc->req.head = head;
        dc->req.copy = copy;
    } else {
        dc = SC_NEW(struct proxy_dconn);
        sc_buf_init(&dc->out, 65536 + 8192);
        sc_buf_init(&dc->req.head, 65536 + 8192);
        sc_buf_init(&dc->req.copy, 0);
    }
    dc->w = w;
    dc->lidx = (size_t)((uv_tcp_t *)server - w->listeners);
    sc_tcp_xport_init(&dc->tx, w->loop, &dcbs, dc);
    uv_timer_init(w->loop, &dc->timer);
    dc->timer.data = dc;
    sc_list_append(&w->conns, &dc->node);
    w->nconns++;
    atomic_fetch_add_explicit(&w->px->conns, 1, memory_order_relaxed);
    dc->m_active = w->rt->listeners[dc->lidx].m_cx_active;
    sc_gauge_add(dc->m_active, 1);
    dc->state = D_HEAD;
    if (uv_accept(server, (uv_stream_t *)&dc->tx.tcp) < 0) {
        dconn_close(dc);
        return;
    }
    sc_tcp_tune(&dc->tx.tcp);
    sc_tcp_peer_ip(&dc->tx.tcp, dc->peer, sizeof(dc->peer));
    dc->last_activity = uv_now(w->loop);
    arm_dtimer(dc);
    dread_update(dc);
}

/* ---- workers ---- */

int proxy_worker_listen(struct proxy_worker *w, char **err)
{
    struct proxy_rt *rt = w->rt;
    uv_check_init(w->loop, &w->logcheck);
    w->logcheck.data = w;
    uv_idle_init(w->loop, &w->spin);
    w->spin.data = w;
    uv_unref((uv_handle_t *)&w->spin); /* never what keeps a draining worker alive */
    uv_timer_init(w->loop, &w->logtimer);
    w->logtimer.data = w;
    w->listeners = sc_calloc(rt->nlisteners, sizeof(*w->listeners));
    w->nlisteners = rt->nlisteners;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        uv_tcp_t *h = &w->listeners[i];
        h->data = w;
        int rc = sc_tcp_listen(w->loop, h, (struct sockaddr *)&rt->listeners[i].ss, 511,
                               w->px->nworkers > 1, on_accept, err);
        w->listeners_open++;
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct proxy_worker *w = h->data;
    w->listeners_open--;
    check_done(w);
}

static void close_listeners(struct proxy_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        uv_handle_t *h = (uv_handle_t *)&w->listeners[i];
        if (h->loop && !uv_is_closing(h)) {
            uv_close(h, on_listener_closed);
        }
    }
}

static void close_pools(struct proxy_worker *w, struct proxy_rt *rt)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &w->odst)
    {
        struct odst_dest *d = sc_list_entry(pos, struct odst_dest, node);
        bool mine = false;
        for (size_t c = 0; c < rt->nclusters && !mine; c++) {
            mine = d->ep.cluster == &rt->clusters[c];
        }
        if (!mine) {
            continue;
        }
        for (size_t n = d->pool.nidle; n > 0; n--) {
            /* the last one frees <d> */
            uconn_close(sc_list_entry(d->pool.idle.next, struct proxy_uconn, node));
        }
    }
    for (size_t c = 0; c < rt->nclusters; c++) {
        for (size_t e = 0; e < rt->clusters[c].neps; e++) {
            struct proxy_pool *pool = &rt->clusters[c].eps[e].pools[w->id];
            while (!sc_list_empty(&pool->idle)) {
                uconn_close(sc_list_entry(pool->idle.next, struct proxy_uconn, node));
            }
        }
    }
}

static void check_done(struct proxy_worker *w)
{
    if ((w->draining || w->closed_all) && !atomic_load(&w->done) && w->nconns == 0 &&
        w->nuconns == 0 && w->listeners_open == 0 && w->nmirrors == 0) {
        atomic_store(&w->done, true);
        uv_close((uv_handle_t *)&w->spin, NULL);
        proxy_log_finish(w);
        proxy_worker_done(w);
    }
}

void proxy_worker_check_done(struct proxy_worker *w)
{
    check_done(w);
}

void proxy_worker_poll(struct proxy_worker *w)
{
    struct proxy_rt *nrt = atomic_exchange(&w->pending_rt, NULL);
    if (nrt) {
        struct proxy_rt *old = w->rt;
        w->rt = nrt;
        close_pools(w, old);
        proxy_rt_unref(old);
    }
    if (atomic_load(&w->stop_requested) && !w->draining) {
        w->draining = true;
        close_listeners(w);
        close_pools(w, w->rt);
        proxy_mirror_stop_all(w);
        struct sc_list *pos, *tmp;
        sc_list_foreach(pos, tmp, &w->conns)
        {
            struct proxy_dconn *dc = sc_list_entry(pos, struct proxy_dconn, node);
            if (dc->state == D_HEAD && dc->in.start == dc->in.end && !dc->wpending) {
                dconn_close(dc);
            }
        }
        check_done(w);
    }
    if (atomic_load(&w->stop_now) && !w->closed_all) {
        w->closed_all = true;
        w->draining = true;
        close_listeners(w);
        close_pools(w, w->rt);
        proxy_mirror_stop_all(w);
        struct sc_list *pos, *tmp;
        sc_list_foreach(pos, tmp, &w->conns)
        {
            dconn_close(sc_list_entry(pos, struct proxy_dconn, node));
        }
        check_done(w);
    }
}

void proxy_worker_cleanup(struct proxy_worker *w)
{
    while (!sc_list_empty(&w->free_dc)) {
        struct proxy_dconn *dc = sc_list_entry(w->free_dc.next, struct proxy_dconn, node);
        sc_list_remove(&dc->node);
        sc_free(dc->in.p);
        sc_buf_cleanup(&dc->out);
        sc_buf_cleanup(&dc->req.head);
        sc_buf_cleanup(&dc->req.copy);
        sc_free(dc->od);
        sc_free(dc);
    }
    while (!sc_list_empty(&w->free_uc)) {
        struct proxy_uconn *uc = sc_list_entry(w->free_uc.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        sc_free(uc->in.p);
        sc_free(uc);
    }
    w->nfree_dc = w->nfree_uc = 0;
    pool_drain(&w->bufs);
    pool_drain(&w->hbufs);
    sc_free(w->listeners);
    w->listeners = NULL;
    sc_buf_cleanup(&w->logbuf);
    if (w->md) {
        pcre2_match_data_free(w->md);
        w->md = NULL;
    }
}

void proxy_worker_init(struct proxy_worker *w)
{
    sc_list_init(&w->conns);
    sc_list_init(&w->free_dc);
    sc_list_init(&w->free_uc);
    sc_list_init(&w->odst);
    sc_list_init(&w->mirrors);
    sc_buf_init(&w->logbuf, 256 * 1024); /* the bound for a slow reader; lines beyond drop */
    w->md = pcre2_match_data_create(32, NULL);
    if (getrandom(w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng)) {
        w->rng[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)w;
        w->rng[1] = 0x9e3779b97f4a7c15ULL ^ (uint64_t)w->id;
    }
    if ((w->rng[0] | w->rng[1]) == 0) {
        w->rng[1] = 1;
    }
}

struct proxy_endpoint *proxy_pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                           struct proxy_endpoint *avoid)
{
    return pick_endpoint(w, c, NULL, avoid);
}
