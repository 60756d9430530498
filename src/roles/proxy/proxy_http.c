// SPDX-License-Identifier: Apache-2.0
// The HTTP/1.1 data path of one worker: downstream connections (accept, parse, route), upstream
// connections (connect, pool, reuse), and the two pumps that stream bodies between them.
//
// Each connection object owns one read buffer, allocated once and recycled through the worker's
// free list with the object, so the steady state allocates nothing per request. Bytes move from a
// read buffer straight to the other side's socket: uv_try_write first (usually the only syscall),
// and only the remainder is queued with uv_write, during which the source stops reading. That one
// rule is the backpressure: at most one read buffer of data is in flight per direction, whatever
// the body size. Request bodies are also copied into a capped retry buffer while they fit, so a
// failed try can be replayed on another endpoint. Every state has a timer: idle and head timeouts
// downstream, connect, per-try and pool-idle timeouts upstream, the route deadline once the
// request is sent, and a stream-idle timeout while bodies or tunnels move.
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/tcp.h"
#include "net/transport.h"
#include "roles/proxy/proxy.h"

#define BUF_INITIAL 16384
#define MAX_HEADERS 100
#define MAX_FREE 256
#define MAX_IOV 8

enum dstate { D_HEAD, D_REQ, D_TUNNEL, D_CLOSING };
enum ustate { U_CONNECTING, U_ACTIVE, U_IDLE, U_CLOSING };
enum body { B_NONE, B_LENGTH, B_CHUNKED, B_EOF, B_RAW };
/* What to do when the pending downstream write completes. */
enum dnext { DN_NONE, DN_LOCAL, DN_INTERIM, DN_BODY, DN_TUNNEL };

enum {
    F_UF = 1 << 0,  /* upstream connection failure */
    F_UT = 1 << 1,  /* upstream request timeout */
    F_URX = 1 << 2, /* retry limit reached / not retriable */
    F_UH = 1 << 3,  /* no healthy upstream */
    F_UC = 1 << 4,  /* upstream connection termination */
    F_DC = 1 << 5,  /* downstream connection termination */
    F_NR = 1 << 6,  /* no route */
    F_UPE = 1 << 7, /* upstream protocol error */
    F_DPE = 1 << 8, /* downstream protocol error */
    F_SI = 1 << 9,  /* stream idle timeout */
};

enum { COND_CONNECT = 1, COND_RESET, COND_TIMEOUT, COND_STATUS };

struct rbuf {
    char *p;
    size_t start, end, cap;
};

struct proxy_uconn {
    struct sc_tcp_xport tx; /* the transport chain's bottom; the top is &tx.base for now */
    uv_timer_t timer;
    struct sc_list node; /* the endpoint's idle pool, or the free list */
    struct proxy_worker *w;
    struct proxy_rt *rt; /* a reference while open */
    struct proxy_endpoint *ep;
    struct proxy_dconn *dc;
    struct sc_metric *m_active;
    struct rbuf in;
    size_t last_len;
    size_t wconsume;
    int state;
    int closes;
    bool wpending;
    bool reused;
    bool got_bytes;
    bool eof;
};

struct proxy_req {
    struct proxy_rt *rt; /* a reference while the request runs */
    struct proxy_listener *lsn;
    struct proxy_route *route;
    struct proxy_endpoint *ep;     /* the current or last try's endpoint */
    struct proxy_endpoint *active; /* counted in ep->active */
    struct sc_buf head;            /* the upstream request head, kept for retries */
    struct sc_buf copy;            /* request body bytes sent so far, while they fit */
    struct sc_http1_chunked ch;
    struct sc_http1_chunked rch;
    uint64_t remaining;
    uint64_t rremaining;
    uint64_t start_ns;
    uint64_t upstream_ns;
    uint64_t upstream_total_ns;
    uint64_t body_done_ms;
    uint64_t bytes_in;
    uint64_t bytes_out;
    unsigned flags;
    int body;
    int rbody;
    int status;
    int minor;
    int tries;
    int retries;
    bool keep_alive;
    bool body_done;
    bool retriable;
    bool is_head;
    bool is_connect;
    bool upgrade;
    bool resp_head_sent;
    bool resp_done;
    bool dechunk;
    bool free_retry_used;
    bool resp_keep_alive;
    char method[16];
    char path[256];
    size_t path_len;
    char request_id[64];
    size_t request_id_len;
};

struct proxy_dconn {
    struct sc_tcp_xport tx;
    uv_timer_t timer;
    uv_timer_t btimer;
    struct sc_list node;
    struct proxy_worker *w;
    size_t lidx;
    struct sc_metric *m_active;
    struct proxy_uconn *uc;
    struct rbuf in;
    size_t last_len;
    struct sc_buf out;
    size_t wconsume; /* bytes of uc->in the pending write covers */
    int wnext;
    int state;
    int closes;
    bool wpending;
    bool rpaused;
    bool eof; /* the client half-closed */
    bool in_parse;
    bool reparse;
    bool close_after;
    uint64_t head_start_ms;
    uint64_t last_activity;
    char peer[48];
    struct proxy_req req;
};

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

static void hex(char *out, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = d[v & 15];
        v >>= 4;
    }
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

static void rbuf_get(struct proxy_worker *w, struct rbuf *b)
{
    if (b->p) {
        return;
    }
    if (w->bufs) {
        struct pooled_buf *pb = w->bufs;
        w->bufs = pb->next;
        w->nbufs--;
        b->p = (char *)pb;
    } else {
        b->p = sc_malloc(BUF_INITIAL);
    }
    b->cap = BUF_INITIAL;
    b->start = b->end = 0;
}

/* Gives an empty buffer back (a grown one is freed: big heads are rare). */
static void rbuf_put(struct proxy_worker *w, struct rbuf *b)
{
    if (!b->p || b->start != b->end) {
        return;
    }
    if (b->cap == BUF_INITIAL && w->nbufs < POOL_MAX && !w->closed_all) {
        struct pooled_buf *pb = (struct pooled_buf *)(void *)b->p;
        pb->next = w->bufs;
        w->bufs = pb;
        w->nbufs++;
    } else {
        sc_free(b->p);
    }
    b->p = NULL;
    b->cap = b->start = b->end = 0;
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

/* The values of a message's Connection headers, gathered once so that checking each header
 * against the tokens they list costs no rescan of the head. */
struct conn_tokens {
    struct sc_str v[8];
    size_t n;
    const struct sc_http_msg *slow; /* more Connection headers than fit: search the message */
};

static void conn_tokens_init(struct conn_tokens *ct, const struct sc_http_msg *m)
{
    ct->n = 0;
    ct->slow = NULL;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (h->name.len == 10 && sc_str_caseeq(h->name, SC_STR("connection"))) {
            if (ct->n == SC_ARRAY_LEN(ct->v)) {
                ct->slow = m;
                return;
            }
            ct->v[ct->n++] = h->value;
        }
    }
}

/* True when <name> is hop-by-hop: a fixed name or one of the Connection tokens. */
static bool hop_by_hop(struct sc_str name, const struct conn_tokens *ct)
{
    switch (name.len) {
    case 2:
        if (sc_str_caseeq(name, SC_STR("te"))) {
            return true;
        }
        break;
    case 7:
        if (sc_str_caseeq(name, SC_STR("trailer")) || sc_str_caseeq(name, SC_STR("upgrade"))) {
            return true;
        }
        break;
    case 10:
        if (sc_str_caseeq(name, SC_STR("connection")) ||
            sc_str_caseeq(name, SC_STR("keep-alive"))) {
            return true;
        }
        break;
    case 16:
        if (sc_str_caseeq(name, SC_STR("proxy-connection"))) {
            return true;
        }
        break;
    case 17:
        if (sc_str_caseeq(name, SC_STR("transfer-encoding"))) {
            return true;
        }
        break;
    default:
        break;
    }
    if (ct->slow) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http_find(ct->slow, SC_STR("connection"), &from)) != NULL) {
            if (sc_http_has_token(h->value, name)) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < ct->n; i++) {
        if (sc_http_has_token(ct->v[i], name)) {
            return true;
        }
    }
    return false;
}

static bool is_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

static bool all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '0') {
            return false;
        }
    }
    return true;
}

/* ---- upstream connections ---- */

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
    if (uc->state == U_IDLE) {
        uc->ep->pools[uc->w->id].nidle--;
    }
    sc_list_remove(&uc->node);
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
    uc->state = U_CLOSING;
    uc->closes = 2;
    sc_xport_close(&uc->tx.base);
    uv_close((uv_handle_t *)&uc->timer, on_uconn_timer_closed);
}

static void on_pool_idle_timeout(uv_timer_t *t)
{
    uconn_close(t->data);
}

/* Returns <uc> to its endpoint's pool when it can carry another request, else closes it. */
static void uconn_release(struct proxy_uconn *uc, bool reusable)
{
    struct proxy_worker *w = uc->w;
    struct proxy_pool *pool = &uc->ep->pools[w->id];
    if (uc->dc) {
        endpoint_release(&uc->dc->req);
        uc->dc->uc = NULL;
        uc->dc = NULL;
    }
    if (!reusable || uc->eof || w->draining || uc->rt != w->rt ||
        pool->nidle >= uc->ep->cluster->max_idle || uc->in.start != uc->in.end || uc->wpending) {
        uconn_close(uc);
        return;
    }
    uc->state = U_IDLE;
    uc->in.start = uc->in.end = 0;
    rbuf_put(w, &uc->in);
    uc->last_len = 0;
    sc_list_prepend(&pool->idle, &uc->node);
    pool->nidle++;
    if (uc->ep->cluster->idle_timeout_ms) {
        uv_timer_start(&uc->timer, on_pool_idle_timeout, uc->ep->cluster->idle_timeout_ms, 0);
    } else {
        uv_timer_stop(&uc->timer);
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

static void on_uread(void *owner, ssize_t nread)
{
    struct proxy_uconn *uc = owner;
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
            /* The tunnel ends once what the upstream sent has reached the client. */
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
    } else {
        uv_timer_stop(&uc->timer);
    }
    sc_xport_read_start(&uc->tx.base);
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

/* Picks an endpoint with addresses, preferring one other than <avoid>. */
static struct proxy_endpoint *pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                            struct proxy_endpoint *avoid)
{
    if (c->neps == 0) {
        return NULL;
    }
    struct proxy_endpoint *best = NULL;
    if (c->lb == PROXY_LB_LEAST_REQUEST && c->neps > 1) {
        for (int tries = 0; tries < 4 && !best; tries++) {
            struct proxy_endpoint *a = &c->eps[proxy_rand(w) % c->neps];
            struct proxy_endpoint *b = &c->eps[proxy_rand(w) % c->neps];
            if (atomic_load(&a->naddrs) == 0 || (a == avoid && b != avoid)) {
                a = b;
            }
            if (atomic_load(&b->naddrs) == 0 || (b == avoid && a != avoid)) {
                b = a;
            }
            if (atomic_load(&a->naddrs) == 0) {
                continue;
            }
            best = atomic_load(&a->active) <= atomic_load(&b->active) ? a : b;
        }
        if (best) {
            return best;
        }
    }
    unsigned start = atomic_fetch_add_explicit(&c->rr, 1, memory_order_relaxed);
    for (size_t i = 0; i < c->neps; i++) {
        struct proxy_endpoint *e = &c->eps[(start + i) % c->neps];
        if (atomic_load(&e->naddrs) == 0) {
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

static void attempt(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct proxy_cluster *c = r->route->cluster;
    struct proxy_endpoint *ep = pick_endpoint(w, c, r->ep);
    if (!ep) {
        local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    r->ep = ep;
    r->tries++;
    r->upstream_ns = now_ns();
    r->active = ep;
    atomic_fetch_add_explicit(&ep->active, 1, memory_order_relaxed);
    struct proxy_pool *pool = &ep->pools[w->id];
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
    struct proxy_uconn *uc = uconn_get(w);
    uc->rt = proxy_rt_ref(r->rt);
    uc->ep = ep;
    uc->dc = dc;
    dc->uc = uc;
    sc_tcp_xport_init(&uc->tx, w->loop, &ucbs, uc);
    uv_timer_init(w->loop, &uc->timer);
    uc->timer.data = uc;
    uc->state = U_CONNECTING;
    int rc = sc_tcp_xport_connect(&uc->tx, (struct sockaddr *)&ss);
    if (rc < 0) {
        attempt_failed(dc, COND_CONNECT, F_UF, uv_strerror(rc));
        return;
    }
    uv_timer_start(&uc->timer, on_connect_timeout, c->connect_timeout_ms, 0);
}

static void on_backoff(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    if (dc->state == D_REQ && !dc->uc) {
        attempt(dc);
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
    sc_counter_inc(rt->cluster->m_retry);
    uv_timer_start(&dc->btimer, on_backoff, delay, 0);
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
    /* A pooled connection the server closed while idle is not the request's fault: try once
     * more on a fresh connection, without counting a retry, when the request can be replayed. */
    if (stale && r->retriable && !r->free_retry_used && !r->resp_head_sent) {
        r->free_retry_used = true;
        r->ep = NULL;
        attempt(dc);
        return;
    }
    if (may_retry(dc, cond, 0)) {
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
    if (dc->state == D_TUNNEL && dc->req.body_done) {
        dconn_close(dc);
        return;
    }
    pump_req(dc, NULL, 0);
}

static void request_body_done(struct proxy_dconn *dc)
{
    dc->req.body_done = true;
    dc->req.body_done_ms = uv_now(dc->w->loop);
    arm_dtimer(dc);
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
        if (!tunnel && r->retriable && n > 0 && sc_buf_append(&r->copy, p, n) < 0) {
            /* Past the retry buffer: this request can no longer be replayed. */
            r->retriable = false;
            sc_buf_reset(&r->copy);
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

static bool closing_after_response(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    return dc->close_after || dc->w->draining || !r->keep_alive || r->rbody == B_EOF || r->dechunk;
}

/* Appends the response head for the client to dc->out. Returns 0 or SC_ETOOBIG. */
static int build_resp_head(struct proxy_dconn *dc, const struct sc_http_msg *m)
{
    struct proxy_req *r = &dc->req;
    struct sc_buf *b = &dc->out;
    bool upgrade = m->status == 101;
    int rc = sc_buf_appendf(b, "HTTP/1.1 %d ", m->status);
    rc |= sc_buf_append_str(b, m->reason.len ? m->reason : sc_str_c(sc_http_reason(m->status)));
    rc |= sc_buf_append(b, "\r\n", 2);
    struct sc_str via = SC_STR_NULL;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (hop_by_hop(h->name, &ct)) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("via"))) {
            via = h->value;
            continue;
        }
        rc |= sc_http1_write_header(b, h->name, h->value);
    }
    if (via.len) {
        rc |= sc_buf_append_cstr(b, "Via: ");
        rc |= sc_buf_append_str(b, via);
        rc |= sc_buf_append_cstr(b, ", 1.1 sidecar\r\n");
    } else {
        rc |= sc_buf_append_cstr(b, "Via: 1.1 sidecar\r\n");
    }
    if (upgrade) {
        const struct sc_http_header *u = sc_http_find(m, SC_STR("upgrade"), NULL);
        rc |= sc_buf_append_cstr(b, "Connection: upgrade\r\n");
        if (u) {
            rc |= sc_http1_write_header(b, SC_STR("Upgrade"), u->value);
        }
    } else {
        if (r->rbody == B_CHUNKED && !r->dechunk) {
            rc |= sc_buf_append_cstr(b, "Transfer-Encoding: chunked\r\n");
        }
        if (closing_after_response(dc)) {
            rc |= sc_buf_append_cstr(b, "Connection: close\r\n");
        } else if (r->minor == 0) {
            rc |= sc_buf_append_cstr(b, "Connection: keep-alive\r\n");
        }
    }
    rc |= sc_buf_append(b, "\r\n", 2);
    return rc ? SC_ETOOBIG : 0;
}

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
            /* Interim response (100 Continue, 103 Early Hints): pass it on to 1.1 clients. */
            size_t len = (size_t)rc;
            if (r->minor == 0) {
                uc->in.start += len;
                continue;
            }
            uv_buf_t iov = uv_buf_init(uc->in.p + uc->in.start, (unsigned)len);
            int wr = dwrite(dc, &iov, 1, len, DN_INTERIM);
            if (wr != 0) {
                return;
            }
            uc->in.start += len;
            continue;
        }
        if (m.status == 101 && !r->upgrade) {
            attempt_failed(dc, 0, F_UPE, "upstream switched protocols without an upgrade request");
            return;
        }
        if (may_retry(dc, COND_STATUS, m.status)) {
            r->upstream_total_ns += now_ns() - r->upstream_ns;
            uconn_close(uc);
            schedule_retry(dc);
            return;
        }
        r->upstream_total_ns += now_ns() - r->upstream_ns;
        uv_timer_stop(&uc->timer);
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
        sc_buf_reset(&dc->out);
        if (build_resp_head(dc, &m) < 0) {
            sc_buf_reset(&dc->out);
            attempt_failed(dc, 0, F_UPE, "upstream response head too large");
            return;
        }
        uc->in.start += (size_t)rc;
        r->resp_head_sent = true;
        if (tunnel) {
            dc->state = D_TUNNEL;
        }
        arm_dtimer(dc);
        uv_buf_t pre = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
        r->bytes_out += dc->out.len;
        pump_resp(dc, &pre, 1);
        if (tunnel && dc->state == D_TUNNEL) {
            pump_req(dc, NULL, 0);
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
                dconn_close(dc);
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

static bool idempotent(struct sc_str m)
{
    static const struct sc_str t[] = { SC_STR("GET"), SC_STR("HEAD"),   SC_STR("OPTIONS"),
                                       SC_STR("PUT"), SC_STR("DELETE"), SC_STR("TRACE") };
    for (size_t i = 0; i < SC_ARRAY_LEN(t); i++) {
        if (sc_str_eq(m, t[i])) {
            return true;
        }
    }
    return false;
}

/* The path of a request target: origin-form up to '?', the path of an absolute-form target, "/"
 * for CONNECT and "*". Also returns, in <*origin>, the origin-form target sent upstream. */
static struct sc_str target_path(struct sc_str t, struct sc_str *origin)
{
    *origin = t;
    if (t.len && t.p[0] != '/') {
        const char *s = memmem(t.p, t.len, "://", 3);
        if (!s) {
            return SC_STR("/");
        }
        const char *auth = s + 3;
        const char *slash = memchr(auth, '/', (size_t)(t.p + t.len - auth));
        if (!slash) {
            *origin = SC_STR("/");
            return SC_STR("/");
        }
        *origin = sc_str_n(slash, (size_t)(t.p + t.len - slash));
        t = *origin;
    }
    const char *q = memchr(t.p, '?', t.len);
    return q ? sc_str_n(t.p, (size_t)(q - t.p)) : t;
}

static bool route_matches(const struct proxy_route *rt, const struct sc_http_msg *m,
                          struct sc_str path, pcre2_match_data *md)
{
    if (rt->nmethods) {
        bool ok = false;
        for (size_t i = 0; i < rt->nmethods && !ok; i++) {
            ok = sc_str_eq(m->method, sc_str_c(rt->methods[i]));
        }
        if (!ok) {
            return false;
        }
    }
    if (rt->prefix && !sc_str_startswith(path, sc_str_c(rt->prefix))) {
        return false;
    }
    if (rt->path && !sc_str_eq(path, sc_str_c(rt->path))) {
        return false;
    }
    if (rt->re &&
        pcre2_match(rt->re, (PCRE2_SPTR)(path.p ? path.p : ""), path.len, 0, 0, md, NULL) < 0) {
        return false;
    }
    for (size_t i = 0; i < rt->nheaders; i++) {
        const struct proxy_header_match *hm = &rt->headers[i];
        const struct sc_http_header *h = sc_http_find(m, hm->name, NULL);
        if (!hm->present) {
            if (h) {
                return false;
            }
            continue;
        }
        if (!h || (hm->value.p && !sc_str_eq(h->value, hm->value))) {
            return false;
        }
    }
    return true;
}

static void gen_request_id(struct proxy_worker *w, char out[37])
{
    uint64_t a = proxy_rand(w), b = proxy_rand(w);
    a = (a & ~0xf000ULL) | 0x4000ULL;                        /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* RFC 4122 variant */
    hex(out, a >> 32, 8);
    out[8] = '-';
    hex(out + 9, (a >> 16) & 0xffff, 4);
    out[13] = '-';
    hex(out + 14, a & 0xffff, 4);
    out[18] = '-';
    hex(out + 19, b >> 48, 4);
    out[23] = '-';
    hex(out + 24, b & 0xffffffffffffULL, 12);
    out[36] = '\0';
}

/* Builds the upstream request head into r->head. Returns 0 or SC_ETOOBIG. */
static int build_req_head(struct proxy_dconn *dc, const struct sc_http_msg *m, struct sc_str origin)
{
    struct proxy_req *r = &dc->req;
    struct proxy_worker *w = dc->w;
    struct sc_buf *b = &r->head;
    int rc = sc_http1_write_request_line(b, m->method, r->is_connect ? m->target : origin);
    bool have_host = false;
    const struct sc_http_header *xff = NULL, *via = NULL, *rid = NULL, *tp = NULL;
    size_t nxff = 0;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (hop_by_hop(h->name, &ct)) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-forwarded-for"))) {
            xff = xff ? xff : h;
            nxff++;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("via"))) {
            via = h;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-forwarded-proto"))) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-request-id"))) {
            if (!rid && h->value.len > 0 && h->value.len < sizeof(r->request_id)) {
                rid = h;
            }
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("traceparent"))) {
            tp = tp ? tp : h;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("host"))) {
            have_host = true;
        }
        rc |= sc_http1_write_header(b, h->name, h->value);
    }
    if (!have_host) {
        rc |= sc_http1_write_header(b, SC_STR("Host"), sc_str_c(r->route->cluster->eps[0].name));
    }
    if (r->body == B_CHUNKED) {
        rc |= sc_buf_append_cstr(b, "Transfer-Encoding: chunked\r\n");
    }
    if (r->upgrade) {
        const struct sc_http_header *u = sc_http_find(m, SC_STR("upgrade"), NULL);
        rc |= sc_buf_append_cstr(b, "Connection: upgrade\r\n");
        if (u) {
            rc |= sc_http1_write_header(b, SC_STR("Upgrade"), u->value);
        }
    }
    /* Via: the received protocol version, appended to what earlier proxies wrote. */
    rc |= sc_buf_append_cstr(b, "Via: ");
    if (via) {
        rc |= sc_buf_append_str(b, via->value);
        rc |= sc_buf_append(b, ", ", 2);
    }
    rc |= sc_buf_append_cstr(b, r->minor == 0 ? "1.0 sidecar\r\n" : "1.1 sidecar\r\n");
    rc |= sc_buf_append_cstr(b, "X-Forwarded-For: ");
    if (xff) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http_find(m, SC_STR("x-forwarded-for"), &from)) != NULL) {
            rc |= sc_buf_append_str(b, h->value);
            rc |= sc_buf_append(b, ", ", 2);
        }
    }
    rc |= sc_buf_append_cstr(b, dc->peer);
    rc |= sc_buf_append_cstr(b, "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ");
    if (rid) {
        memcpy(r->request_id, rid->value.p, rid->value.len);
        r->request_id_len = rid->value.len;
    } else {
        gen_request_id(w, r->request_id);
        r->request_id_len = 36;
    }
    rc |= sc_buf_append(b, r->request_id, r->request_id_len);
    /* traceparent: keep the trace id and flags, new parent id for this hop. */
    char t[56];
    memcpy(t, "00-", 3);
    bool valid = tp && tp->value.len == 55 && tp->value.p[2] == '-' && tp->value.p[35] == '-' &&
                 tp->value.p[52] == '-' && is_hex(tp->value.p, 2) &&
                 !(tp->value.p[0] == 'f' && tp->value.p[1] == 'f') && is_hex(tp->value.p + 3, 32) &&
                 !all_zero(tp->value.p + 3, 32) && is_hex(tp->value.p + 36, 16) &&
                 is_hex(tp->value.p + 53, 2);
    if (valid) {
        memcpy(t + 3, tp->value.p + 3, 32);
        memcpy(t + 53, tp->value.p + 53, 2);
    } else {
        hex(t + 3, proxy_rand(w), 16);
        hex(t + 19, proxy_rand(w) | 1, 16);
        memcpy(t + 53, "01", 2);
    }
    t[35] = '-';
    hex(t + 36, proxy_rand(w) | 1, 16);
    t[52] = '-';
    rc |= sc_buf_append_cstr(b, "\r\ntraceparent: ");
    rc |= sc_buf_append(b, t, 55);
    rc |= sc_buf_append(b, "\r\n\r\n", 4);
    (void)nxff;
    return rc ? SC_ETOOBIG : 0;
}

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
    struct sc_str path = target_path(m->target, &origin);
    r->path_len = m->target.len < sizeof(r->path) ? m->target.len : sizeof(r->path);
    memcpy(r->path, m->target.p, r->path_len);

    struct proxy_listener *l = r->lsn;
    struct proxy_route *found = NULL;
    for (size_t i = 0; i < l->nroutes && !found; i++) {
        if (route_matches(&l->routes[i], m, path, w->md)) {
            found = &l->routes[i];
        }
    }
    if (!found) {
        dc->close_after = r->body != B_NONE;
        local_reply(dc, 404, "no route matched the request", F_NR);
        return;
    }
    r->route = found;
    r->retriable = (idempotent(m->method) || found->retry_non_idempotent) && !r->upgrade &&
                   !r->is_connect && r->rt->retry_buffer > 0;
    if (found->cluster->neps == 0) {
        dc->close_after = r->body != B_NONE;
        local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    if (build_req_head(dc, m, origin) < 0) {
        dc->close_after = true;
        local_reply(dc, 431, "request head too large after forwarding headers were added", F_DPE);
        return;
    }
    if (r->body == B_NONE) {
        request_body_done(dc);
    } else {
        arm_dtimer(dc);
    }
    attempt(dc);
    dread_update(dc);
}

/* Answers the request from the proxy itself: 4xx/5xx with the reason as the body. */
static void local_reply(struct proxy_dconn *dc, int status, const char *reason, unsigned flags)
{
    struct proxy_req *r = &dc->req;
    r->flags |= flags;
    uv_timer_stop(&dc->btimer);
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
    sc_buf_reset(&dc->out);
    if (sc_http1_write_simple(&dc->out, status, "text/plain; charset=utf-8",
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

static const char *flags_str(unsigned f, char *out, size_t cap)
{
    static const char *const names[] = { "UF", "UT", "URX", "UH",  "UC",
                                         "DC", "NR", "UPE", "DPE", "SI" };
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        if (f & (1u << i)) {
            int n = snprintf(out + len, cap - len, "%s%s", len ? "," : "", names[i]);
            if (n < 0 || (size_t)n >= cap - len) {
                break;
            }
            len += (size_t)n;
        }
    }
    if (len == 0) {
        snprintf(out, cap, "-");
    }
    return out;
}

/* Writes the buffered access-log lines to stdout in one write(2) (lines are whole, so several
 * workers' writes never interleave within a line). */
static void log_flush(struct proxy_worker *w)
{
    struct sc_buf *b = &w->logbuf;
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(STDOUT_FILENO, b->p + off, b->len - off);
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    sc_buf_reset(b);
}

static void on_logcheck(uv_check_t *c)
{
    struct proxy_worker *w = c->data;
    log_flush(w);
    uv_check_stop(c);
}

static void access_log(struct proxy_dconn *dc, double dur)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    time_t now = time(NULL);
    if ((uint64_t)now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
        w->date_sec = (uint64_t)now;
    }
    char flags[64], path[600], ua[16];
    size_t plen = 0, mlen = 0;
    sc_json_escape(path, sizeof(path), &plen, r->path, r->path_len);
    sc_json_escape(ua, sizeof(ua), &mlen, r->method, strlen(r->method));
    char rid[140];
    size_t rlen = 0;
    sc_json_escape(rid, sizeof(rid), &rlen, r->request_id, r->request_id_len);
    struct sc_buf *b = &w->logbuf;
    for (int i = 0; i < 2; i++) {
        size_t before = b->len;
        int rc = sc_buf_appendf(
            b,
            "{\"time\":\"%s\",\"listener\":\"%s\",\"method\":\"%.*s\",\"path\":\"%.*s\","
            "\"protocol\":\"HTTP/1.%d\",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
            "\"duration_ms\":%.3f,\"upstream_ms\":%.3f,\"retries\":%d,\"route\":\"%s\","
            "\"cluster\":\"%s\",\"endpoint\":\"%s\",\"request_id\":\"%.*s\","
            "\"flags\":\"%s\",\"peer\":\"%s\"}\n",
            w->date, r->lsn->name, (int)mlen, ua, (int)plen, path, r->minor, r->status,
            (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out, dur * 1e3,
            (double)r->upstream_total_ns / 1e6, r->retries, r->route->name,
            r->route->cluster ? r->route->cluster->name : "", r->ep ? r->ep->name : "", (int)rlen,
            rid, flags_str(r->flags, flags, sizeof(flags)), dc->peer);
        if (rc == 0) {
            break;
        }
        b->len = before;
        log_flush(w);
    }
    if (!uv_is_active((uv_handle_t *)&w->logcheck)) {
        uv_check_start(&w->logcheck, on_logcheck);
    }
}

static void count_request(struct proxy_dconn *dc, double dur)
{
    struct proxy_req *r = &dc->req;
    int code = r->status;
    if (code < 100 || code > 599) {
        code = 0;
    }
    struct proxy_route *rt = r->route;
    size_t idx = code ? (size_t)(code - 100) : 0;
    struct sc_metric *m = code ? atomic_load_explicit(&rt->codes[idx], memory_order_acquire) : NULL;
    if (!m) {
        char cs[8];
        snprintf(cs, sizeof(cs), "%d", code);
        const char *lv[] = { r->lsn->name, rt->name, rt->cluster ? rt->cluster->name : "", cs };
        m = sc_metric_get(dc->w->px->pm.requests, lv);
        if (code) {
            atomic_store_explicit(&rt->codes[idx], m, memory_order_release);
        }
    }
    sc_counter_inc(m);
    sc_histogram_observe(r->lsn->m_duration, dur);
}

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
    count_request(dc, dur);
    if (r->rt->access_log) {
        access_log(dc, dur);
    }
    endpoint_release(r);
    proxy_rt_unref(r->rt);
    r->rt = NULL;
    /* Keep small buffers for the next request; give back what a large one grew. */
    if (r->copy.cap > 4096) {
        sc_buf_cleanup(&r->copy);
    }
    if (r->head.cap > 8192) {
        sc_buf_cleanup(&r->head);
    }
    if (dc->out.cap > 8192 && !dc->wpending) {
        sc_buf_cleanup(&dc->out);
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    uv_timer_stop(&dc->btimer);
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
        if (dc->state == D_TUNNEL) {
            /* The client finished: close once its last bytes reached the upstream. */
            dc->req.body_done = true;
            dc->rpaused = true;
            dread_update(dc);
            if (!dc->uc || !dc->uc->wpending) {
                dconn_close(dc);
            }
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
    if (w->nfree_dc < MAX_FREE && !w->closed_all) {
        sc_list_append(&w->free_dc, &dc->node);
        w->nfree_dc++;
    } else {
        sc_buf_cleanup(&dc->out);
        sc_buf_cleanup(&dc->req.head);
        sc_buf_cleanup(&dc->req.copy);
        sc_free(dc);
    }
    check_done(w);
}

static void on_dconn_timer_closed(uv_handle_t *h)
{
    dconn_closed_one(h->data);
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
    dc->closes = 3;
    sc_xport_close(&dc->tx.base);
    uv_close((uv_handle_t *)&dc->timer, on_dconn_timer_closed);
    uv_close((uv_handle_t *)&dc->btimer, on_dconn_timer_closed);
}

static void on_dtimer(uv_timer_t *t);

/* Arms the connection's one timer for its current state; on_dtimer re-evaluates when it fires,
 * so activity that moves a deadline costs nothing until then. */
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
    uv_timer_start(&dc->timer, on_dtimer, deadline > now ? deadline - now : 0, 0);
}

static void on_dtimer(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
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
            if (r->route->cluster) {
                sc_counter_inc(r->route->cluster->m_timeout);
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
        memset(dc, 0, sizeof(*dc));
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
    uv_timer_init(w->loop, &dc->btimer);
    dc->timer.data = dc;
    dc->btimer.data = dc;
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
    if ((w->draining || w->closed_all) && !w->done && w->nconns == 0 && w->nuconns == 0 &&
        w->listeners_open == 0) {
        w->done = true;
        log_flush(w);
        uv_close((uv_handle_t *)&w->logcheck, NULL);
        proxy_worker_done(w);
    }
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
        sc_free(dc);
    }
    while (!sc_list_empty(&w->free_uc)) {
        struct proxy_uconn *uc = sc_list_entry(w->free_uc.next, struct proxy_uconn, node);
        sc_list_remove(&uc->node);
        sc_free(uc->in.p);
        sc_free(uc);
    }
    w->nfree_dc = w->nfree_uc = 0;
    while (w->bufs) {
        struct pooled_buf *pb = w->bufs;
        w->bufs = pb->next;
        sc_free(pb);
    }
    w->nbufs = 0;
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
    sc_buf_init(&w->logbuf, 65536);
    w->md = pcre2_match_data_create(32, NULL);
    if (getrandom(w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng)) {
        w->rng[0] = uv_hrtime() ^ (uint64_t)(uintptr_t)w;
        w->rng[1] = 0x9e3779b97f4a7c15ULL ^ (uint64_t)w->id;
    }
    if ((w->rng[0] | w->rng[1]) == 0) {
        w->rng[1] = 1;
    }
}
