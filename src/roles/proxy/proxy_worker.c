// SPDX-License-Identifier: Apache-2.0
// A proxy worker: its listeners, its loop's lifetime (reload hand-over, drain, stop), busy
// polling, and the two bounded pools of blocks that connections borrow buffers from. Read buffers
// are lent to connections only while they have bytes in flight, so the steady state allocates
// nothing per request and an idle keep-alive connection costs its small struct.
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

#include "net/egress.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tcp.h"
#include "net/transport.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_route_policy.h"

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

void proxy_rbuf_get(struct proxy_worker *w, struct rbuf *b)
{
    if (b->p) {
        return;
    }
    b->p = pool_take(&w->bufs, BUF_INITIAL);
    b->cap = BUF_INITIAL;
    b->start = b->end = 0;
}

/* Gives an empty buffer back (a grown one is freed: big heads are rare). */
void proxy_rbuf_put(struct proxy_worker *w, struct rbuf *b)
{
    if (!b->p || b->start != b->end) {
        return;
    }
    pool_give(w, &w->bufs, b->p, b->cap == BUF_INITIAL);
    b->p = NULL;
    b->cap = b->start = b->end = 0;
}

/* An HTTP/2 stream's small blocks of its own (its request head, its upstream head) stay with its
 * dconn up to this size, recycled with it, for the next stream's request. */
#define STREAM_KEEP 1024

void proxy_rbuf_keep(struct proxy_worker *w, struct rbuf *b)
{
    if (b->p && b->start == b->end && b->cap <= STREAM_KEEP) {
        b->start = b->end = 0;
        return;
    }
    proxy_rbuf_put(w, b);
}

/* Head buffers (the upstream request head, the client's response head, the retry copy of a
 * request body) come from a second bounded pool, lent while a request runs and given back when
 * it finishes, so an idle keep-alive connection holds no buffer at all. One that grew past HBUF
 * (a large head or body) is freed instead. */
#define HBUF 2048

void proxy_hbuf_get(struct proxy_worker *w, struct sc_buf *b)
{
    if (b->p) {
        return;
    }
    b->p = pool_take(&w->hbufs, HBUF);
    b->cap = HBUF;
    b->len = 0;
}

void proxy_hbuf_get_size(struct proxy_worker *w, struct sc_buf *b, size_t size)
{
    if (b->p) {
        return;
    }
    if (size >= HBUF) {
        proxy_hbuf_get(w, b);
        return;
    }
    b->p = sc_malloc(size);
    b->cap = size;
    b->len = 0;
}

void proxy_hbuf_put(struct proxy_worker *w, struct sc_buf *b)
{
    if (!b->p) {
        return;
    }
    pool_give(w, &w->hbufs, b->p, b->cap == HBUF);
    b->p = NULL;
    b->cap = b->len = 0;
}

void proxy_hbuf_keep(struct proxy_worker *w, struct sc_buf *b)
{
    if (b->p && b->cap <= STREAM_KEEP) {
        b->len = 0;
        return;
    }
    proxy_hbuf_put(w, b);
}

/* Makes room at the end of <b>: moves data to the front, or grows up to <max>. */
void proxy_rbuf_room(struct rbuf *b, size_t max)
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

void proxy_spin_start(struct proxy_worker *w)
{
    uv_idle_start(&w->spin, on_spin);
}

/* Creates the worker's PCRE2 match data once its routing table has a regex route (path, query
 * parameter or CORS origin): a proxy
 * without one never calls into PCRE2, whose code then stays out of its resident memory. */
static void need_md(struct proxy_worker *w)
{
    const struct proxy_rt *rt = w->rt;
    for (size_t i = 0; i < rt->nlisteners && !w->md; i++) {
        for (size_t k = 0; k < rt->listeners[i].nroutes; k++) {
            const struct proxy_route *r = &rt->listeners[i].routes[k];
            if (r->re || (r->pol && (r->pol->query_regex || proxy_cors_regex(r->pol->cors)))) {
                w->md = pcre2_match_data_create(32, NULL);
                break;
            }
        }
    }
}

int proxy_worker_listen(struct proxy_worker *w, char **err)
{
    struct proxy_rt *rt = w->rt;
    need_md(w);
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
        /* Listeners of protocol tcp or auto accept into the TCP relay (proxy_tcp.c), which hands
         * connections it detects as HTTP/1 back to proxy_h1.c. */
        uv_connection_cb on_accept = rt->listeners[i].icpt.protocol == PROXY_LP_HTTP
                                         ? proxy_h1_on_accept
                                         : proxy_tcp_on_accept;
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
    proxy_check_done(w);
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

void proxy_check_done(struct proxy_worker *w)
{
    if ((w->draining || w->closed_all) && !atomic_load(&w->done) && w->nconns == 0 &&
        w->nuconns == 0 && w->listeners_open == 0 && w->nmirrors == 0 && w->ntcps == 0) {
        atomic_store(&w->done, true);
        uv_close((uv_handle_t *)&w->spin, NULL);
        proxy_log_finish(w);
        proxy_worker_done(w);
    }
}

void proxy_worker_check_done(struct proxy_worker *w)
{
    proxy_check_done(w);
}

/* Stops accepting, closes the pooled and mirrored connections, and closes the client connections
 * that are idle (all of them with <all>); the others finish their request first. */
static void stop(struct proxy_worker *w, bool all)
{
    w->draining = true;
    close_listeners(w);
    sc_egress_close(w->oidc_egress); /* a login still exchanging its code answers 502 */
    w->oidc_egress = NULL;
    proxy_close_pools(w, w->rt);
    proxy_mirror_stop_all(w);
    proxy_tcp_stop(w, all);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &w->conns)
    {
        struct proxy_dconn *dc = sc_list_entry(pos, struct proxy_dconn, node);
        if (all || (dc->state == D_HEAD && dc->in.start == dc->in.end && !dc->wpending)) {
            proxy_dconn_close(dc);
        } else if (dc->h2) {
            proxy_h2_drain(dc); /* GOAWAY; closed once its streams are done */
        }
    }
    proxy_check_done(w);
}

void proxy_worker_poll(struct proxy_worker *w)
{
    struct proxy_rt *nrt = atomic_exchange(&w->pending_rt, NULL);
    if (nrt) {
        struct proxy_rt *old = w->rt;
        w->rt = nrt;
        need_md(w);
        proxy_close_pools(w, old);
        proxy_rt_unref(old);
    }
    if (atomic_load(&w->stop_requested) && !w->draining) {
        stop(w, false);
    }
    if (atomic_load(&w->stop_now) && !w->closed_all) {
        w->closed_all = true;
        stop(w, true);
    }
}

void proxy_worker_cleanup(struct proxy_worker *w)
{
    struct sc_list *lists[] = { &w->free_dc, &w->free_sdc };
    for (size_t i = 0; i < SC_ARRAY_LEN(lists); i++) {
        while (!sc_list_empty(lists[i])) {
            struct proxy_dconn *dc = sc_list_entry(lists[i]->next, struct proxy_dconn, node);
            sc_list_remove(&dc->node);
            proxy_dconn_free(dc);
        }
    }
    while (!sc_list_empty(&w->free_uc)) {
        struct proxy_uconn *uc = sc_list_entry(w->free_uc.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        sc_free(uc->in.p);
        sc_free(uc);
    }
    w->nfree_dc = w->nfree_sdc = w->nfree_uc = 0;
    pool_drain(&w->bufs);
    pool_drain(&w->hbufs);
    proxy_h2_worker_free(w);
    proxy_h2_mem_free(w);
    proxy_tcp_cleanup(w);
    sc_free(w->listeners);
    w->listeners = NULL;
    sc_buf_cleanup(&w->logbuf);
    proxy_span_cache_free(&w->spans);
    proxy_jwt_cache_free(w->jwt_cache);
    w->jwt_cache = NULL;
    proxy_oidc_aead_free(w->oidc_aead);
    w->oidc_aead = NULL;
    proxy_oidc_cache_free(w->oidc_cache);
    w->oidc_cache = NULL;
    if (w->md) {
        pcre2_match_data_free(w->md);
        w->md = NULL;
    }
}

void proxy_worker_init(struct proxy_worker *w)
{
    sc_list_init(&w->conns);
    sc_list_init(&w->free_dc);
    sc_list_init(&w->free_sdc);
    sc_list_init(&w->free_uc);
    sc_list_init(&w->odst);
    sc_list_init(&w->mirrors);
    sc_list_init(&w->tcps);
    sc_buf_init(&w->logbuf, 256 * 1024); /* the bound for a slow reader; lines beyond drop */
    if (getrandom(w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng)) {
        w->rng[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)w;
        w->rng[1] = 0x9e3779b97f4a7c15ULL ^ (uint64_t)w->id;
    }
    if ((w->rng[0] | w->rng[1]) == 0) {
        w->rng[1] = 1;
    }
}
