// SPDX-License-Identifier: Apache-2.0
// Upstream connections of one worker: load balancing over a cluster's endpoints, the per-endpoint
// idle pools (and the per-worker pools of original_dst destinations), opening a connection through
// the transport chain, and returning it to its pool or closing it. A connection belongs to one
// exchange while active and to its endpoint's pool while idle; every path that takes it out of
// either closes it or hands it on, and the circuit breakers' counts follow it.
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
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_route_policy.h"

static void on_connect(void *owner, int status);
static void on_uconn_closed(void *owner);
static void connect_new(struct proxy_dconn *dc, struct proxy_endpoint *ep,
                        const struct sockaddr_storage *ss);
static void attempt_original_dst(struct proxy_dconn *dc);

/* What an upstream transport reports: the HTTP/1 codec reads and writes, this file connects and
 * closes. */
const struct sc_xport_cbs proxy_upstream_cbs = {
    .alloc = proxy_h1_ualloc,
    .read = proxy_h1_uread,
    .write_done = proxy_h1_uwrite,
    .connected = on_connect,
    .closed = on_uconn_closed,
};

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

struct proxy_pool *proxy_ep_pool(struct proxy_endpoint *ep, struct proxy_worker *w)
{
    return ep_pool(ep, w);
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
    sc_list_init(&uc->h2cnode);
    sc_list_init(&uc->h2waiters);
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
    if (uc->h2) {
        proxy_h2_up_free(uc);
    }
    proxy_rt_unref(uc->rt);
    uc->rt = NULL;
    w->nuconns--;
    uc->in.start = uc->in.end = 0;
    proxy_rbuf_put(w, &uc->in);
    if (w->nfree_uc < MAX_FREE && !w->closed_all) {
        sc_list_append(&w->free_uc, &uc->node);
        w->nfree_uc++;
    } else {
        sc_free(uc);
    }
    proxy_check_done(w);
}

struct proxy_uconn *proxy_uconn_new(struct proxy_worker *w)
{
    return uconn_get(w);
}

void proxy_uconn_closed_one(struct proxy_uconn *uc)
{
    uconn_closed_one(uc);
}

static void on_uconn_timer_closed(uv_handle_t *h)
{
    uconn_closed_one(h->data);
}

static void on_uconn_closed(void *owner)
{
    uconn_closed_one(owner);
}

void proxy_endpoint_release(struct proxy_exch *r)
{
    if (r->active) {
        atomic_fetch_sub_explicit(&r->active->active, 1, memory_order_relaxed);
        r->active = NULL;
    }
}

void proxy_uconn_close(struct proxy_uconn *uc)
{
    if (uc->state == U_CLOSING) {
        return;
    }
    if ((uc->h2wait || !sc_list_empty(&uc->h2waiters) || !sc_list_empty(&uc->h2cnode)) &&
        proxy_h2_wait_close(uc)) {
        return; /* a waiting try took it over */
    }
    struct odst_dest *od = NULL;
    sc_list_remove(&uc->node);
    if (uc->state == U_IDLE) {
        ep_pool(uc->ep, uc->w)->nidle--;
        if (uc->ep->cluster->original_dst) {
            od = sc_container_of(uc->ep, struct odst_dest, ep);
        }
    }
    if (uc->ex) {
        struct proxy_dconn *dc = uc->ex->dc;
        /* The bytes of a cancelled write are in the retry copy already: skip them in the input,
         * and forget how much of this connection's input a pending client write covers. */
        if (uc->wpending) {
            dc->in.start += uc->wconsume;
            uc->wconsume = 0;
        }
        if (dc->wpending) {
            dc->wconsume = 0;
        }
        proxy_endpoint_release(&dc->ex);
        dc->ex.uc = NULL;
        uc->ex = NULL;
    }
    if (uc->m_active) {
        sc_metrics_gauge_add(uc->m_active, -1);
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
    if (uc->h2ph) {
        uc->closes = 1; /* a waiting try's placeholder: nothing to close */
        uconn_closed_one(uc);
        return;
    }
    uc->closes = 2;
    if (uc->h2) {
        uc->closes += proxy_h2_up_conn_closing(uc); /* fails its streams */
    }
    if (uc->tls) {
        proxy_tls_cluster_closing(uc->ep->cluster, uc->x);
    }
    sc_xport_close(uc->x);
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
    proxy_uconn_close(uc);
}

/* Returns <uc> to its endpoint's pool when it can carry another request, else closes it. */
void proxy_uconn_release(struct proxy_uconn *uc, bool reusable)
{
    struct proxy_worker *w = uc->w;
    struct proxy_cluster *c = uc->ep->cluster;
    struct proxy_pool *pool = ep_pool(uc->ep, w);
    if (uc->ex) {
        proxy_endpoint_release(uc->ex);
        uc->ex->uc = NULL;
        uc->ex = NULL;
    }
    if (!reusable || uc->eof || w->draining || uc->rt != w->rt || uc->in.start != uc->in.end ||
        uc->wpending || uc->h2s) {
        proxy_uconn_close(uc);
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
            proxy_uconn_close(uc);
            return;
        }
        uc->ep = &d->ep;
        pool = &d->pool;
        w->nodst_idle++;
    }
    if (!pool || pool->nidle >= c->max_idle) {
        proxy_uconn_close(uc);
        return;
    }
    uc->state = U_IDLE;
    uc->in.start = uc->in.end = 0;
    proxy_rbuf_put(w, &uc->in);
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
static void on_connect_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_dconn *dc = uc->ex ? uc->ex->dc : NULL;
    proxy_h2_wait_fail(uc, "upstream connect timeout");
    if (dc) {
        proxy_attempt_failed(&dc->ex, COND_CONNECT, F_UF | F_UT, "upstream connect timeout");
    } else {
        proxy_uconn_close(uc);
    }
}

static void on_connect(void *owner, int status)
{
    struct proxy_uconn *uc = owner;
    if (uc->state == U_CLOSING) {
        return;
    }
    struct proxy_dconn *dc = uc->ex ? uc->ex->dc : NULL;
    proxy_h2_wait_unlist(uc); /* connected or failed: no more tries wait for it */
    if (uc->bk_pending) {
        uc->bk_pending = false;
        proxy_breaker_connected(uc->ep->cluster);
    }
    const char *tls = proxy_tls_upstream_done(uc, status);
    if (status < 0 || tls) {
        char why[96];
        if (tls && status < 0) {
            snprintf(why, sizeof(why), "upstream TLS handshake failed: %s", tls);
            tls = why;
        }
        proxy_h2_wait_fail(uc, tls ? tls : uv_strerror(status));
        if (dc) {
            proxy_attempt_failed(&dc->ex, COND_CONNECT, F_UF, tls ? tls : uv_strerror(status));
        } else {
            proxy_uconn_close(uc);
        }
        return;
    }
    uc->m_active = uc->ep->cluster->m_cx_active;
    sc_metrics_gauge_add(uc->m_active, 1);
    if (!dc) {
        proxy_uconn_close(uc);
        return;
    }
    if (uc->ep->cluster->h2up.protocol != PROXY_UP_HTTP1) {
        if (proxy_h2_up_connected(uc)) {
            proxy_h2_wait_flush(uc);
            return; /* an HTTP/2 connection now, the exchange's try its first stream */
        }
        proxy_h2_wait_flush(uc); /* HTTP/1: each waiting try opens its own */
    }
    proxy_upstream_ready(dc);
}

/* The <i>th endpoint of <c>, counting only those of subset <ss> when there is one. */
#define SUBSET_EP(c, ss, i) (&(c)->eps[(ss) ? (ss)->idx[(i)] : (i)])

/* Picks an endpoint with addresses, preferring one other than <avoid>; only within subset <ss>
 * when it is not NULL. */
/* Consistent hashing: the usable endpoint scoring highest for <hash>, one other than <avoid> when
 * there is one (a retry goes to the next in the key's order). */
static struct proxy_endpoint *pick_hashed(struct proxy_cluster *c, struct proxy_subset *ss,
                                          size_t neps, uint64_t hash, struct proxy_endpoint *avoid,
                                          uint64_t now)
{
    struct proxy_endpoint *best = NULL, *fallback = NULL;
    uint64_t bs = 0;
    for (size_t i = 0; i < neps; i++) {
        struct proxy_endpoint *e = SUBSET_EP(c, ss, i);
        if (!proxy_endpoint_usable(e, now)) {
            continue;
        }
        if (e == avoid) {
            fallback = e;
            continue;
        }
        uint64_t s = proxy_hash_score(hash, e->hkey);
        if (!best || s > bs) {
            best = e;
            bs = s;
        }
    }
    return best ? best : fallback;
}

static struct proxy_endpoint *pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                            struct proxy_subset *ss, struct proxy_endpoint *avoid,
                                            const struct proxy_exch *r)
{
    size_t neps = ss ? ss->n : c->neps;
    if (neps == 0) {
        return NULL;
    }
    struct proxy_endpoint *best = NULL;
    uint64_t now = uv_now(w->loop);
    if (r && r->hashed) {
        return pick_hashed(c, ss, neps, r->hash, avoid, now);
    }
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
int proxy_endpoint_addr(struct proxy_endpoint *ep, struct sockaddr_storage *out)
{
    return endpoint_addr(ep, out);
}

void proxy_attempt(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
    struct proxy_worker *w = r->w;
    struct proxy_cluster *c = r->cluster;
    if (c->original_dst) {
        attempt_original_dst(dc);
        return;
    }
    struct proxy_endpoint *ep = pick_endpoint(w, c, r->subset, r->ep, r);
    if (!ep) {
        proxy_local_reply(r, 503, "no healthy upstream", F_UH);
        return;
    }
    r->ep = ep;
    r->tries++;
    r->upstream_ns = proxy_now_ns();
    r->active = ep;
    atomic_fetch_add_explicit(&ep->active, 1, memory_order_relaxed);
    if (c->h2up.protocol != PROXY_UP_HTTP1 && proxy_h2_up_attempt(r, ep)) {
        return; /* a stream of a pooled HTTP/2 connection, or waiting for a connecting one */
    }
    proxy_attempt_open(r);
}

void proxy_attempt_open(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
    struct proxy_worker *w = r->w;
    struct proxy_endpoint *ep = r->ep;
    struct proxy_pool *pool = ep_pool(ep, w);
    if (!sc_list_empty(&pool->idle)) {
        struct proxy_uconn *uc = sc_list_entry(pool->idle.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        pool->nidle--;
        uc->ex = r;
        uc->reused = true;
        uc->got_bytes = false;
        r->uc = uc;
        proxy_upstream_ready(dc);
        return;
    }
    struct sockaddr_storage ss;
    if (endpoint_addr(ep, &ss) < 0) {
        proxy_endpoint_release(r);
        proxy_local_reply(r, 503, "no healthy upstream", F_UH);
        return;
    }
    connect_new(dc, ep, &ss);
}

/* Opens a new upstream connection for <dc> to <ss>, counted on <ep>. */
static void connect_new(struct proxy_dconn *dc, struct proxy_endpoint *ep,
                        const struct sockaddr_storage *ss)
{
    struct proxy_worker *w = dc->w;
    struct proxy_exch *r = &dc->ex;
    struct proxy_cluster *c = ep->cluster;
    if (!proxy_breaker_connect(c)) {
        proxy_endpoint_release(r);
        proxy_local_reply(&dc->ex, 503,
                          "upstream overflow: max_connections or max_pending_requests", F_UO);
        return;
    }
    struct proxy_uconn *uc = uconn_get(w);
    uc->rt = proxy_rt_ref(r->rt);
    uc->ep = ep;
    uc->ex = &dc->ex;
    uc->bk_cx = uc->bk_pending = true;
    dc->ex.uc = uc;
    sc_tcp_xport_init(&uc->tx, w->loop, &proxy_upstream_cbs, uc);
    uc->x = &uc->tx.base;
    uv_timer_init(w->loop, &uc->timer);
    uc->timer.data = uc;
    uc->state = U_CONNECTING;
    proxy_tls_upstream(uc); /* the cluster's TLS layer, when it originates TLS */
    /* The cluster's source address (the inbound passthrough's 127.0.0.6), when it has one. */
    int rc = proxy_icpt_bind(&uc->tx.tcp, c, ss->ss_family);
    if (rc == 0) {
        rc = sc_xport_connect(uc->x, (const struct sockaddr *)ss);
    }
    if (rc < 0) {
        proxy_attempt_failed(&dc->ex, COND_CONNECT, F_UF, uv_strerror(rc));
        return;
    }
    uv_timer_start(&uc->timer, on_connect_timeout, c->connect_timeout_ms, 0);
    struct proxy_pool *pool = ep_pool(ep, w);
    if (c->h2up.protocol != PROXY_UP_HTTP1 && pool && !r->upgrade && !r->is_connect) {
        sc_list_append(&pool->h2conn, &uc->h2cnode); /* tries may wait for it */
    }
}

/* The address iptables redirected this connection from, when it was intercepted: IPv4 through
 * SO_ORIGINAL_DST, IPv6 through IP6T_SO_ORIGINAL_DST (an IPv4-mapped client on an IPv6 socket is
 * tracked as IPv4). */
bool proxy_original_dst(struct proxy_dconn *dc)
{
    if (!dc->od) {
        dc->od = SC_NEW(struct proxy_odst);
    }
    if (dc->od->checked) {
        return dc->od->has_orig;
    }
    dc->od->checked = true;
    memset(&dc->od->dst, 0, sizeof(dc->od->dst));
    uv_os_fd_t fd;
    if (sc_xport_query(dc->x, SC_XQ_FD, &fd) < 0) {
        return false;
    }
    struct sockaddr_storage local;
    dc->od->has_orig = proxy_sock_original_dst(fd, &dc->od->orig, &local);
    const struct sockaddr_storage *ss = &dc->od->orig;
    if (!dc->od->has_orig) {
        ss = local.ss_family != AF_UNSPEC ? &local : NULL;
    }
    if (ss) {
        dc->od->dst = *ss;
    }
    dc->od->dport = !ss ? 0
                    : ss->ss_family == AF_INET6
                        ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port)
                        : ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return dc->od->has_orig;
}

uint16_t proxy_dest_port(struct proxy_dconn *dc)
{
    (void)proxy_original_dst(dc);
    return dc->od->dport;
}

bool proxy_sock_original_dst(int fd, struct sockaddr_storage *out, struct sockaddr_storage *lout)
{
    struct sockaddr_storage od, local;
    socklen_t olen = sizeof(od), llen = sizeof(local);
    memset(&od, 0, sizeof(od));
    lout->ss_family = AF_UNSPEC;
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0) {
        return false;
    }
    *lout = local;
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
    *out = od;
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
        uc->ex = &dc->ex;
        uc->reused = true;
        uc->got_bytes = false;
        dc->ex.uc = uc;
        proxy_upstream_ready(dc);
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
        proxy_dconn_closed_one(dc);
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
        proxy_endpoint_release(&dc->ex);
        proxy_local_reply(&dc->ex, 503, "cannot resolve the request's destination", F_UH);
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
    struct proxy_exch *r = &dc->ex;
    struct proxy_endpoint *ep = &dc->od->ep; /* allocated by start_request */
    ep->cluster = r->cluster;
    ep->name = dc->od->name;
    ep->pools = NULL;
    r->ep = ep;
    r->tries++;
    r->upstream_ns = proxy_now_ns();
    r->active = ep;
    atomic_fetch_add_explicit(&ep->active, 1, memory_order_relaxed);
    if (proxy_original_dst(dc)) {
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
        proxy_endpoint_release(r);
        proxy_local_reply(&dc->ex, 503, "destination lookup busy", F_UH);
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
        proxy_endpoint_release(r);
        proxy_local_reply(&dc->ex, 400, "no destination: the request has no usable Host", F_UH);
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
        proxy_endpoint_release(r);
        proxy_local_reply(&dc->ex, 503, "cannot resolve the request's destination", F_UH);
        return;
    }
    dc->od->resolving = true;
}

struct proxy_endpoint *proxy_pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                           struct proxy_endpoint *avoid)
{
    return pick_endpoint(w, c, NULL, avoid, NULL);
}

void proxy_close_pools(struct proxy_worker *w, struct proxy_rt *rt)
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
            proxy_uconn_close(sc_list_entry(d->pool.idle.next, struct proxy_uconn, node));
        }
    }
    for (size_t c = 0; c < rt->nclusters; c++) {
        for (size_t e = 0; e < rt->clusters[c].neps; e++) {
            struct proxy_pool *pool = &rt->clusters[c].eps[e].pools[w->id];
            while (!sc_list_empty(&pool->idle)) {
                proxy_uconn_close(sc_list_entry(pool->idle.next, struct proxy_uconn, node));
            }
            if (rt->clusters[c].h2up.protocol != PROXY_UP_HTTP1) {
                proxy_h2_up_close_pool(pool);
            }
        }
    }
}
