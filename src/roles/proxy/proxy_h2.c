// SPDX-License-Identifier: Apache-2.0
// The downstream HTTP/2 codec: a client connection that starts with the HTTP/2 preface (h2c with
// prior knowledge) or chose h2 by ALPN is driven by an nghttp2 server session through its memory
// calls (nghttp2 never owns the socket). Each stream is a proxy_dconn of its own over a stream
// transport, so routing, policy, retries, timers, the upstream HTTP/1 codec and the access log
// run for it exactly as for an HTTP/1 request; only heads and framing differ.
//
// Invariants. Nothing a client sends grows without a bound: a stream's request bytes wait in a
// buffer no larger than its flow-control window, and the window is reopened (WINDOW_UPDATE) only
// as the exchange hands them upstream; a stream's response bytes wait in a buffer the data
// provider drains, and the stream's writer (the upstream side) stops reading while it is above
// its mark, so a client that does not read one stream stalls that stream only. nghttp2 is never
// re-entered: callbacks run inside mem_recv/mem_send with <busy> set, and sending, waking
// stream writers and closing the connection happen outside them (a close from deep inside is
// deferred to the connection's timer). A stream dconn outlives nghttp2's stream only until its
// handles close; the connection (and its session) outlives every stream dconn.
#include <string.h>

#include "net/nghttp2.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_route_policy.h"

/* A stream's response bytes buffered before its writer waits, and the most it ever holds (one
 * more write of an upstream read buffer above the mark). */
#define H2S_OUT_HIGH (32 * 1024)
#define H2S_OUT_MAX (512 * 1024)
/* A stream struct is recycled with its dconn, and keeps its response buffer up to this size. */
#define H2S_OUT_KEEP 1024
#define H2S_OUT_MIN 64
/* The connection's output is written in pieces of about this size. */
#define H2C_WRITE 16384
#define H2C_WBUF_MAX (1024 * 1024)
/* A connection that must close but still has output waits this long for the client to read it. */
#define H2C_LINGER_MS 1000
/* Response heads submitted and not yet serialized before the next one is packed first (h2_pack):
 * nghttp2 keeps a copy of each (about 600 bytes with its fields) until it serializes it, and the
 * upstream reads of one loop iteration can complete hundreds of responses. */
#define H2C_PACK_AT 4

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct proxy_h2c;

/* A stream: the transport its dconn reads and writes through, and the bytes in between. */
struct proxy_h2s {
    struct sc_xport x; /* the dconn's transport (dc->x) */
    struct proxy_h2c *c;
    struct proxy_dconn *dc;
    int32_t id;
    struct sc_list wnode; /* on c->wake: its writer waits for the buffer to drain */
    struct sc_buf out;    /* response body bytes for the data provider */
    size_t out_off;       /* bytes of <out> already taken */
    struct sc_buf pend;   /* request DATA not yet handed to the exchange (within the window) */
    struct sc_buf trl;    /* request trailers, as the end of a chunked body */
    struct sc_buf rtrl;   /* the upstream's chunked framing since its last data: trailers */
    bool chunked;         /* the request body has no length: re-framed as chunked for HTTP/1 */
    bool in_eof;          /* the client ended its side */
    bool eof_given;       /* ... and the exchange has the end of the body */
    bool eof;             /* the response is complete: the provider ends the stream when drained */
    bool deferred;        /* the data provider waits for bytes (resume on the next write) */
    bool wblocked;        /* a write returned 1: write_done follows once <out> drains */
    bool waking;
    bool gone;   /* nghttp2 closed the stream (or we reset it) */
    bool closed; /* the transport is closed */
    bool grpc;
    bool delivering;
};

struct proxy_h2c {
    struct proxy_dconn *dc; /* the client connection */
    nghttp2_session *s;
    struct proxy_h2_lcfg cfg;
    struct proxy_h2_lmetrics m; /* the listener's series (valid as long as the registry) */
    int ga_reason;              /* why our own GOAWAY goes out (PROXY_H2_GA_*) */
    struct sc_list streams;     /* open stream dconns, linked through dc->node */
    struct sc_list wake;        /* streams whose writers wait */
    size_t nopen;               /* streams whose transport is open */
    uint64_t idle_since;        /* loop time <nopen> last became 0 (idle_timeout counts from it) */
    uint64_t last_rx;           /* loop time bytes last arrived (keepalive counts from it) */
    uint64_t ping_sent;         /* loop time of our keepalive PING awaiting its ACK, 0: none */
    uint64_t sdue;              /* no open stream's deadline (dc->timer_due) is earlier than this
                                   (UINT64_MAX: none is armed): the timer sweeps them then */
    uint64_t tdue;              /* loop time the connection's timer fires at; 0: not armed */
    size_t nalive;              /* stream dconns not freed yet */
    struct sc_buf wbuf;         /* frames to write */
    uv_check_t check;           /* flushes once per loop iteration what the streams produced */
    bool flush_pending;         /* <check> is started */
    uv_idle_t nowait;           /* active with <check>: the loop does not block in poll first */
    bool busy;                  /* inside nghttp2 or the flush loop */
    bool again;                 /* a flush was asked for while busy */
    bool wpending;              /* a write of <wbuf> is queued on the transport */
    bool closing;               /* the connection is closing: no more output */
    bool draining;              /* GOAWAY sent: closes once its streams are done */
    bool dead;                  /* a connection error: closes once the GOAWAY is out */
    uint32_t unsent;            /* heads submitted since nghttp2's output was last taken */
    bool hd_open;               /* a header block is being received (hd holds part of it) */
    int32_t hd_sid;             /* the stream of the header block being received */
    int hd_rc;
    const char *hd_why;
    /* The header block being received (one at a time per connection): the worker's spare,
     * taken when a block begins and given back once no block is open after a read. */
    struct proxy_h2_head *hd;
};

static void h2_flush(struct proxy_h2c *c);
static void h2_flush_soon(struct proxy_h2c *c);
static void h2c_arm(struct proxy_h2c *c);

/* The worker's scratch for a head being sent. */
static struct proxy_h2_out *out_of(struct proxy_h2c *c)
{
    struct proxy_worker *w = c->dc->w;
    if (!w->h2out) {
        w->h2out = SC_NEW(struct proxy_h2_out);
    }
    return w->h2out;
}

/* Gives <c>'s header block back to the worker (kept as its spare, unless it has one or the block
 * grew past a typical head). */
static void hd_put(struct proxy_h2c *c)
{
    struct proxy_worker *w = c->dc->w;
    struct proxy_h2_head *hd = c->hd;
    if (!hd) {
        return;
    }
    c->hd = NULL;
    c->hd_open = false;
    if (hd->store.cap > 16384) {
        proxy_h2_head_free(hd);
    }
    if (!w->h2hd && !w->closed_all) {
        w->h2hd = hd;
        return;
    }
    proxy_h2_head_free(hd);
    sc_free(hd);
}

void proxy_h2_worker_free(struct proxy_worker *w)
{
    if (w->h2out) {
        proxy_h2_out_free(w->h2out);
        sc_free(w->h2out);
        w->h2out = NULL;
    }
    if (w->h2hd) {
        proxy_h2_head_free(w->h2hd);
        sc_free(w->h2hd);
        w->h2hd = NULL;
    }
}

static struct proxy_h2s *xs(struct sc_xport *x)
{
    return (struct proxy_h2s *)(void *)((char *)x - offsetof(struct proxy_h2s, x));
}

int proxy_h2_preface(const struct proxy_dconn *dc)
{
    size_t avail = dc->in.end - dc->in.start;
    size_t n = avail < sizeof(preface) - 1 ? avail : sizeof(preface) - 1;
    if (memcmp(dc->in.p + dc->in.start, preface, n) != 0) {
        return 0;
    }
    return n == sizeof(preface) - 1 ? 1 : -1;
}

/* ---- the connection's output ---- */

/* Closes the connection from the timer: never from inside a stream's code or nghttp2. */
static void h2c_close_soon(struct proxy_h2c *c)
{
    c->dead = true;
    h2c_arm(c);
}

static void h2c_write(struct proxy_h2c *c)
{
    uv_buf_t iov = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
    int rc = sc_xport_write(c->dc->x, &iov, 1);
    if (rc < 0) {
        sc_buf_reset(&c->wbuf);
        c->dead = true;
        return;
    }
    if (rc == 1) {
        c->wpending = true;
        return;
    }
    sc_buf_reset(&c->wbuf);
}

/* Sends what nghttp2 has to send while the transport takes it, then wakes the stream writers
 * whose buffers drained; repeats while they produce more. Deferred when busy. */
static void h2_flush(struct proxy_h2c *c)
{
    if (c->busy) {
        c->again = true;
        return;
    }
    if (c->closing) {
        return;
    }
    c->busy = true;
    c->unsent = 0;
    do {
        c->again = false;
        while (!c->wpending && !c->dead) {
            const uint8_t *p;
            ssize_t n = nghttp2_session_mem_send(c->s, &p);
            if (n < 0) {
                sc_debug("http2: send failed", SC_LS("reason", nghttp2_strerror((int)n)));
                c->dead = true;
                break;
            }
            if (n == 0) {
                break;
            }
            if (sc_buf_append(&c->wbuf, p, (size_t)n) < 0) {
                c->dead = true; /* cannot happen: written at H2C_WRITE, frames are smaller */
                break;
            }
            if (c->wbuf.len >= H2C_WRITE) {
                h2c_write(c);
            }
        }
        if (!c->wpending && c->wbuf.len && !c->dead) {
            h2c_write(c);
        }
        while (!c->closing && !sc_list_empty(&c->wake)) {
            struct proxy_h2s *s = sc_list_entry(c->wake.next, struct proxy_h2s, wnode);
            sc_list_remove(&s->wnode);
            s->waking = false;
            s->wblocked = false;
            c->again = true;
            proxy_dconn_cbs.write_done(s->dc, 0);
        }
    } while (c->again && !c->closing && !c->dead);
    c->busy = false;
    if (c->closing) {
        return;
    }
    if (c->nopen == 0 && !c->wpending && c->wbuf.len == 0) {
        /* Idle: the connection keeps its session and structs, not its buffers. */
        sc_buf_cleanup(&c->wbuf);
        sc_buf_init(&c->wbuf, H2C_WBUF_MAX);
    }
    bool idle_out = !c->wpending && !nghttp2_session_want_write(c->s);
    if (c->dead || (idle_out && !nghttp2_session_want_read(c->s)) ||
        (c->draining && c->nopen == 0 && idle_out)) {
        h2c_close_soon(c);
    }
}

/* Takes what nghttp2 has queued into <wbuf> now, without writing it (the check writes it with the
 * rest of the iteration's output): nghttp2 frees its copies of the heads submitted so far, and
 * streams whose answers are complete close. Only outside nghttp2's and the flush's calls and
 * with no write pending (the write borrows <wbuf>); never closes the connection itself. */
static void h2_pack(struct proxy_h2c *c)
{
    if (c->busy || c->closing || c->dead || c->wpending) {
        return;
    }
    c->busy = true;
    c->unsent = 0;
    while (c->wbuf.len < H2C_WRITE) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->s, &p);
        if (n <= 0 || sc_buf_append(&c->wbuf, p, (size_t)n) < 0) {
            c->dead = n != 0;
            break;
        }
    }
    c->busy = false;
    if (c->dead) {
        h2c_close_soon(c);
    }
    h2_flush_soon(c);
}

/* What streams produce (response heads and bodies, window updates, resets) is sent once per
 * loop iteration, after every event of the iteration: the responses that upstream reads of one
 * iteration complete share one write to the client. */
static void on_h2c_check(uv_check_t *h)
{
    struct proxy_h2c *c = h->data;
    uv_check_stop(h);
    uv_idle_stop(&c->nowait);
    c->flush_pending = false;
    h2_flush(c);
}

static void on_h2c_nowait(uv_idle_t *h)
{
    (void)h; /* its being active is the point: see h2_flush_soon */
}

/* A check handle alone does not keep the loop from blocking in poll: output produced before
 * the poll phase (by a timer, or by an upstream HTTP/2 stream delivering on its idle handle)
 * would wait for the next unrelated I/O, and with nothing else in flight (the upstream waits
 * for our WINDOW_UPDATE, the client for our DATA) for ever. An active idle handle makes that
 * poll return at once; it is stopped with the check, so flushes requested from I/O callbacks
 * (the poll phase itself) leave the next poll blocking as before. */
static void h2_flush_soon(struct proxy_h2c *c)
{
    if (!c->flush_pending && !c->closing) {
        c->flush_pending = true;
        uv_check_start(&c->check, on_h2c_check);
        uv_idle_start(&c->nowait, on_h2c_nowait);
    }
}

/* ---- the connection's timer: idle, keepalive, drain, deferred close ---- */

/* When the keepalive next needs the timer: the PING's deadline (extended by any frame received
 * since it went out, as Envoy does: a connection that delivers frames is alive), else the next
 * PING; UINT64_MAX when keepalive is off. */
static uint64_t ka_due(const struct proxy_h2c *c)
{
    if (!c->cfg.keepalive_interval_ms || c->draining) {
        return UINT64_MAX;
    }
    if (c->ping_sent) {
        uint64_t from = c->last_rx > c->ping_sent ? c->last_rx : c->ping_sent;
        return from + c->cfg.keepalive_timeout_ms;
    }
    return c->last_rx + c->cfg.keepalive_interval_ms;
}

/* Times out the streams whose deadlines passed (proxy_dconn_timeout, or the stream idle timeout
 * of a stream whose exchange is over) and lowers c->sdue to the earliest deadline left. One
 * timer per connection instead of one per stream: the deadlines that hundreds of streams in
 * flight set and clear cost no timer-heap work. */
static void sweep(struct proxy_h2c *c, uint64_t now)
{
    uint64_t next = UINT64_MAX, idle = c->dc->w->rt->stream_idle_timeout_ms;
    c->sdue = UINT64_MAX; /* streams armed again while sweeping lower it */
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &c->streams)
    {
        struct proxy_dconn *sdc = sc_list_entry(pos, struct proxy_dconn, node);
        if (!sdc->timer_due) {
            continue;
        }
        if (sdc->state == D_H2) {
            /* The exchange is over but the client does not read the rest of the response (a
             * zero window): reset after stream_idle_timeout without progress, so a client
             * cannot hold streams and their buffers open forever. */
            sdc->timer_due = sdc->last_activity + idle;
            if (now < sdc->timer_due) {
                next = sdc->timer_due < next ? sdc->timer_due : next;
                continue;
            }
            sdc->timer_due = 0;
            proxy_dconn_close(sdc);
        } else if (now < sdc->timer_due) {
            next = sdc->timer_due < next ? sdc->timer_due : next;
            continue;
        } else {
            proxy_dconn_timeout(sdc);
        }
        if (c->closing) {
            return;
        }
    }
    if (next < c->sdue) {
        c->sdue = next;
    }
}

void proxy_h2_stream_due(struct proxy_dconn *dc)
{
    struct proxy_h2c *c = dc->h2s->c;
    if (dc->timer_due < c->sdue) {
        c->sdue = dc->timer_due;
        h2c_arm(c);
    }
}

static void on_h2c_timer(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    struct proxy_h2c *c = dc->h2;
    if (!c || dc->state == D_CLOSING) {
        return;
    }
    c->tdue = 0;
    if (c->dead || (c->draining && c->nopen == 0)) {
        proxy_dconn_close(dc);
        return;
    }
    uint64_t now = uv_now(dc->w->loop), idle = dc->w->rt->idle_timeout_ms;
    if (c->ping_sent && now >= ka_due(c)) {
        /* The client neither answered nor sent anything: GOAWAY, and the connection closes
         * with its streams (their exchanges end as the client's). */
        sc_debug("http2: keepalive PING unanswered", SC_LS("peer", dc->cl->ip));
        c->ga_reason = PROXY_H2_GA_PING_TIMEOUT;
        static const char why[] = "keepalive timeout";
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR,
                              (const uint8_t *)why, sizeof(why) - 1);
        h2_flush(c);
        h2c_close_soon(c);
        return;
    }
    if (c->nopen == 0 && now >= c->idle_since + idle) {
        /* Idle: GOAWAY, then close once it is out (or after a second). */
        c->ga_reason = PROXY_H2_GA_IDLE;
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR, NULL,
                              0);
        c->draining = true;
        h2_flush(c);
        if (!c->dead) {
            uv_timer_start(&dc->timer, on_h2c_timer, H2C_LINGER_MS, 0);
            c->tdue = now + H2C_LINGER_MS;
            c->dead = true;
        }
        return;
    }
    if (!c->ping_sent && now >= ka_due(c) &&
        nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, NULL) == 0) {
        c->ping_sent = now;
        h2_flush(c);
        if (c->dead || dc->state == D_CLOSING) {
            return;
        }
    }
    if (now >= c->sdue) {
        sweep(c, now);
        if (c->closing) {
            return;
        }
    }
    h2c_arm(c);
}

/* Arms the connection's timer for its nearest deadline: a deferred close, the idle timeout (no
 * stream open), the keepalive PING or its answer, a stream's deadline. A timer already armed
 * for that time or an earlier one is left alone: on_h2c_timer re-evaluates when it fires. */
static void h2c_arm(struct proxy_h2c *c)
{
    struct proxy_dconn *dc = c->dc;
    if (c->closing) {
        return;
    }
    uint64_t now = uv_now(dc->w->loop), due;
    if (c->dead || (c->draining && c->nopen == 0)) {
        due = now + (c->wpending ? H2C_LINGER_MS : 0);
        uv_timer_start(&dc->timer, on_h2c_timer, due - now, 0);
        c->tdue = due;
        return;
    }
    due = ka_due(c);
    if (c->nopen == 0 && !c->draining && c->idle_since + dc->w->rt->idle_timeout_ms < due) {
        due = c->idle_since + dc->w->rt->idle_timeout_ms;
    }
    if (c->sdue < due) {
        due = c->sdue;
    }
    if (c->tdue && c->tdue <= due) {
        return;
    }
    if (due == UINT64_MAX) {
        return; /* nothing to wait for, and the timer is not armed */
    }
    c->tdue = due > now ? due : now;
    uv_timer_start(&dc->timer, on_h2c_timer, c->tdue - now, 0);
}

/* ---- the stream transport ---- */

/* Hands the request bytes received on <s> to its exchange, framed as the HTTP/1 side reads
 * them, once it took the last ones (dc->in empty), and reopens the window by as much. */
static void deliver(struct proxy_h2s *s)
{
    struct proxy_dconn *dc = s->dc;
    struct proxy_h2c *c = s->c;
    if (s->delivering || s->closed || dc->in.start != dc->in.end) {
        return;
    }
    bool want_eof = s->in_eof && !s->eof_given && s->chunked;
    if (dc->state != D_REQ || dc->ex.body_done) {
        /* Nobody reads it (the exchange is over, or answered before its body): dropped, and
         * the window reopened so the connection's other streams are not starved. */
        if (s->pend.len) {
            nghttp2_session_consume_connection(c->s, s->pend.len);
            if (!s->gone) {
                nghttp2_session_consume_stream(c->s, s->id, s->pend.len);
            }
            sc_buf_reset(&s->pend);
        }
        return;
    }
    if (s->pend.len == 0 && !want_eof) {
        return;
    }
    size_t need = s->pend.len + 32 + s->trl.len;
    proxy_rbuf_get(dc->w, &dc->in);
    dc->in.start = dc->in.end = 0;
    if (dc->in.cap < need) {
        dc->in.p = sc_realloc(dc->in.p, need);
        dc->in.cap = need;
    }
    char *o = dc->in.p;
    size_t n = s->pend.len;
    if (n) {
        if (s->chunked) {
            int k = snprintf(o, 20, "%zx\r\n", n);
            o += k;
        }
        memcpy(o, s->pend.p, n);
        o += n;
        if (s->chunked) {
            memcpy(o, "\r\n", 2);
            o += 2;
        }
        nghttp2_session_consume_connection(c->s, n);
        if (!s->gone) {
            nghttp2_session_consume_stream(c->s, s->id, n);
        }
        sc_buf_reset(&s->pend);
    }
    if (want_eof) {
        s->eof_given = true;
        if (s->trl.len) {
            memcpy(o, s->trl.p, s->trl.len);
            o += s->trl.len;
        } else {
            memcpy(o, "0\r\n\r\n", 5);
            o += 5;
        }
    }
    dc->in.end = (size_t)(o - dc->in.p);
    dc->last_activity = uv_now(dc->w->loop);
    s->delivering = true;
    proxy_pump_req(dc, NULL, 0);
    s->delivering = false;
    h2_flush_soon(c); /* the WINDOW_UPDATE */
}

static int h2s_read_start(struct sc_xport *x)
{
    deliver(xs(x));
    return 0;
}

static void h2s_read_stop(struct sc_xport *x)
{
    (void)x; /* flow control holds the client: the window reopens only as bytes leave */
}

/* Response body bytes from the exchange: buffered for the data provider. Returns 1 (the
 * writer waits for write_done) while the buffer is above its mark. */
static int h2s_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    struct proxy_h2s *s = xs(x);
    struct proxy_h2c *c = s->c;
    if (s->closed || s->gone || c->closing) {
        return UV_EPIPE;
    }
    if (s->out_off == s->out.len) {
        sc_buf_reset(&s->out);
        s->out_off = 0;
    }
    if (!s->out.p) {
        /* A stream's first block has the size of its first write (at least H2S_OUT_MIN): small
         * answers, hundreds in flight, do not each hold a default-sized block. */
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            total += iov[i].len;
        }
        (void)sc_buf_reserve_exact(&s->out, total < H2S_OUT_MIN ? H2S_OUT_MIN : total);
    }
    for (unsigned i = 0; i < n; i++) {
        if (sc_buf_append(&s->out, iov[i].base, iov[i].len) < 0) {
            return UV_ENOBUFS; /* cannot happen: the writer waits above H2S_OUT_HIGH */
        }
    }
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(c->s, s->id);
    }
    h2_flush_soon(c);
    if (s->out.len - s->out_off < H2S_OUT_HIGH) {
        return 0;
    }
    s->wblocked = true;
    return 1;
}

static void unwake(struct proxy_h2s *s)
{
    if (s->waking) {
        sc_list_remove(&s->wnode);
        s->waking = false;
    }
}

/* The stream's dconn closes: a stream nghttp2 still has is reset (the client sees it end, never
 * a silently short body); what it buffered is dropped and its window given back. */
static void h2s_close(struct sc_xport *x)
{
    struct proxy_h2s *s = xs(x);
    struct proxy_h2c *c = s->c;
    if (s->closed) {
        return;
    }
    s->closed = true;
    unwake(s);
    if (!c->closing) {
        if (s->pend.len) {
            nghttp2_session_consume_connection(c->s, s->pend.len);
        }
        if (!s->gone) {
            nghttp2_session_set_stream_user_data(c->s, s->id, NULL);
            nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, s->id,
                                      s->eof ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR);
        }
    }
    s->gone = true;
    sc_buf_reset(&s->pend);
    if (--c->nopen == 0) {
        c->idle_since = uv_now(c->dc->w->loop);
    }
    if (s->wblocked) {
        s->wblocked = false;
        x->cbs->write_done(x->owner, UV_ECANCELED);
    }
    x->cbs->closed(x->owner);
    if (!c->closing) {
        h2c_arm(c);
        h2_flush_soon(c);
    }
}

static int h2s_shutdown(struct sc_xport *x)
{
    (void)x;
    return UV_ENOTSUP; /* no tunnels over HTTP/2 streams */
}

static const struct sc_xport_ops h2s_ops = {
    .name = "h2-stream",
    .read_start = h2s_read_start,
    .read_stop = h2s_read_stop,
    .write = h2s_write,
    .close = h2s_close,
    .shutdown = h2s_shutdown,
};

/* A stream dconn for stream <id> of <c>: not counted as a connection, its client the
 * connection's, its exchange not yet begun (proxy_exch_begin, before anything reads it). */
static struct proxy_h2s *stream_new(struct proxy_h2c *c, int32_t id)
{
    struct proxy_dconn *cd = c->dc;
    struct proxy_dconn *dc = proxy_dconn_alloc(cd->w, cd->lidx, cd->cl);
    struct proxy_h2s *s = dc->h2s;
    if (s) {
        /* A recycled stream's: zeroed but for its small response buffer. */
        struct sc_buf out = s->out;
        memset(s, 0, sizeof(*s));
        s->out = out;
        sc_buf_reset(&s->out);
    } else {
        s = SC_NEW(struct proxy_h2s);
        sc_buf_init(&s->out, H2S_OUT_MAX);
    }
    s->c = c;
    s->dc = dc;
    s->id = id;
    sc_buf_init(&s->pend, c->cfg.initial_stream_window_size + 16384);
    sc_buf_init(&s->trl, 65536);
    sc_buf_init(&s->rtrl, 16384 + 4096 + 64);
    s->x =
        (struct sc_xport){ .ops = &h2s_ops, .next = cd->x, .cbs = &proxy_dconn_cbs, .owner = dc };
    dc->x = &s->x;
    dc->h2s = s;
    dc->last_activity = uv_now(cd->w->loop);
    sc_list_append(&c->streams, &dc->node);
    c->nopen++;
    c->nalive++;
    nghttp2_session_set_stream_user_data(c->s, id, s);
    h2c_arm(c);
    return s;
}

void proxy_h2_stream_freed(struct proxy_dconn *dc)
{
    struct proxy_h2s *s = dc->h2s;
    struct proxy_h2c *c = s->c;
    if (s->out.cap > H2S_OUT_KEEP) {
        sc_buf_cleanup(&s->out);
        sc_buf_init(&s->out, H2S_OUT_MAX);
    }
    sc_buf_cleanup(&s->pend);
    sc_buf_cleanup(&s->trl);
    sc_buf_cleanup(&s->rtrl);
    dc->x = NULL;
    proxy_dconn_recycle(dc); /* keeps <s> with it (proxy_h2_stream_free) */
    c->nalive--;
    if (c->closing) {
        proxy_dconn_closed_one(c->dc);
    }
}

void proxy_h2_stream_free(struct proxy_h2s *s)
{
    if (s) {
        sc_buf_cleanup(&s->out);
        sc_buf_cleanup(&s->pend);
        sc_buf_cleanup(&s->trl);
        sc_buf_cleanup(&s->rtrl);
        sc_free(s);
    }
}

/* ---- the exchange's side (struct proxy_down_ops) ---- */

void proxy_h2_exch_begin(struct proxy_exch *ex)
{
    struct proxy_h2s *s = ex->dc->h2s;
    ex->down = &proxy_h2_down;
    ex->cl = s->c->dc->cl;
    ex->down_h2 = true;
    ex->grpc = s->grpc;
}

void proxy_h2_resp_framing(struct proxy_dconn *dc, bool data, struct sc_str span)
{
    struct proxy_h2s *s = dc->h2s;
    if (data) {
        sc_buf_reset(&s->rtrl);
    } else if (sc_buf_append(&s->rtrl, span.p, span.len) < 0) {
        sc_buf_reset(&s->rtrl); /* the decoder's caps make this unreachable */
    }
}

void proxy_h2_grpc_end(struct proxy_dconn *dc, int code, const char *msg)
{
    struct proxy_h2s *s = dc->h2s;
    sc_buf_reset(&s->rtrl);
    (void)sc_buf_appendf(&s->rtrl, "0\r\ngrpc-status: %d\r\ngrpc-message: %s\r\n\r\n", code, msg);
}

/* Sends the upstream's trailer section (what follows the last chunk's size line in s->rtrl) as
 * HTTP/2 trailers. Returns true when there were any. */
static bool send_trailers(struct proxy_h2s *s)
{
    struct sc_str t = sc_str_n(s->rtrl.p, s->rtrl.len);
    while (t.len && (t.p[0] == '\r' || t.p[0] == '\n')) {
        t.p++;
        t.len--;
    }
    const char *eol = t.len ? memchr(t.p, '\n', t.len) : NULL;
    if (!eol) {
        return false;
    }
    t.len -= (size_t)(eol + 1 - t.p);
    t.p = eol + 1;
    if (t.len <= 2) {
        return false; /* only the blank line: no trailers */
    }
    struct proxy_h2c *c = s->c;
    struct proxy_hsink sk = proxy_h2_out_sink(out_of(c), SC_STR("http"), 0);
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    if (proxy_h2_trailers_from_h1(t, &sk) < 0) {
        return false;
    }
    int n = proxy_h2_out_nv(out_of(c), nv, SC_ARRAY_LEN(nv));
    if (n <= 0) {
        return false;
    }
    return nghttp2_submit_trailer(c->s, s->id, nv, (size_t)n) == 0;
}

/* The data provider: the stream's buffered response bytes; the end of the stream once the
 * exchange completed the response and they are all taken. */
static ssize_t on_data_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    (void)ud;
    struct proxy_h2s *s = nghttp2_session_get_stream_user_data(session, id);
    if (!s) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    size_t avail = s->out.len - s->out_off;
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(buf, s->out.p + s->out_off, n);
        s->out_off += n;
        s->dc->last_activity = uv_now(s->dc->w->loop);
    }
    if (s->out_off == s->out.len) {
        sc_buf_reset(&s->out);
        s->out_off = 0;
        if (s->wblocked && !s->waking) {
            s->waking = true;
            sc_list_append(&s->c->wake, &s->wnode);
        }
        if (s->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (s->rtrl.len && send_trailers(s)) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            sc_buf_reset(&s->rtrl);
            return (ssize_t)n;
        }
    }
    if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static bool h2_can_reply(struct proxy_exch *ex)
{
    (void)ex;
    return true; /* nothing of another response can be in flight on a stream */
}

/* Submits the head in c->out as HEADERS of <s>, with the data provider when a body follows. */
static int submit_head(struct proxy_h2s *s, bool body)
{
    struct proxy_h2c *c = s->c;
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = proxy_h2_out_nv(out_of(c), nv, SC_ARRAY_LEN(nv));
    if (n < 0) {
        return SC_ETOOBIG;
    }
    nghttp2_data_provider prd = { .source.ptr = s, .read_callback = on_data_read };
    int rc = nghttp2_submit_response(c->s, s->id, nv, (size_t)n, body ? &prd : NULL);
    if (rc < 0) {
        return SC_ETOOBIG;
    }
    c->unsent++;
    return 0;
}

static void h2_reply(struct proxy_exch *ex, int status, struct sc_str body)
{
    struct proxy_dconn *dc = ex->dc;
    struct proxy_h2s *s = dc->h2s;
    struct proxy_h2c *c = s->c;
    struct proxy_hsink sk = proxy_h2_out_sink(out_of(c), SC_STR("http"), 0);
    int rc;
    bool with_body = false;
    if (s->grpc || ex->grpc_web) {
        /* A trailers-only answer: gRPC clients read grpc-status, not the HTTP status. */
        struct sc_str reason = body;
        while (reason.len &&
               (reason.p[reason.len - 1] == '\n' || reason.p[reason.len - 1] == '\r')) {
            reason.len--;
        }
        rc = ex->grpc_web ? proxy_grpc_web_local_reply(ex, ex->grpc_web, status, reason, &sk)
                          : proxy_grpc_local_reply(ex, status, reason, &sk);
    } else {
        rc = sk.ops->status(&sk, status, SC_STR_NULL);
        if (ex->www_authenticate) {
            rc |= proxy_hsink_header(&sk, SC_STR("www-authenticate"),
                                     SC_STR("Bearer realm=\"sidecar\", error=\"invalid_token\""));
        }
        rc |= proxy_hsink_lines(&sk, ex->reply_headers, NULL); /* both may be empty */
        rc |= proxy_hsink_lines(&sk, ex->resp_add, NULL);
        rc |= proxy_hsink_header(
            &sk, SC_STR("content-type"),
            sc_str_c(ex->reply_ctype ? ex->reply_ctype : "text/plain; charset=utf-8"));
        char num[24];
        int k = snprintf(num, sizeof(num), "%zu", body.len);
        rc |= proxy_hsink_header(&sk, SC_STR("content-length"), sc_str_n(num, (size_t)k));
        rc |= proxy_route_policy_rl_headers(ex, &sk);
        rc |= sk.ops->end(&sk);
        with_body = body.len > 0 && !ex->is_head;
        if (with_body) {
            sc_buf_reset(&s->out);
            s->out_off = 0;
            rc |= sc_buf_append(&s->out, body.p, body.len);
        }
    }
    if (rc < 0 || submit_head(s, with_body) < 0) {
        proxy_dconn_close(dc);
        return;
    }
    ex->bytes_out += body.len;
    proxy_finish_request(ex);
}

int proxy_h2_interim(struct proxy_dconn *dc, const struct sc_http_msg *m)
{
    struct proxy_h2s *s = dc->h2s;
    struct proxy_h2c *c = s->c;
    if (s->gone || s->closed || c->closing) {
        return SC_EINVAL;
    }
    struct proxy_hsink sk = proxy_h2_out_sink(out_of(c), SC_STR("http"), 0);
    int rc;
    if (m) {
        rc = proxy_head_interim(m, &sk);
    } else {
        rc = sk.ops->status(&sk, 100, SC_STR_NULL);
        rc |= sk.ops->end(&sk);
    }
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = rc < 0 ? -1 : proxy_h2_out_nv(out_of(c), nv, SC_ARRAY_LEN(nv));
    if (n < 0 ||
        nghttp2_submit_headers(c->s, NGHTTP2_FLAG_NONE, s->id, NULL, nv, (size_t)n, NULL) < 0) {
        return SC_ETOOBIG;
    }
    h2_flush_soon(c);
    return 0;
}

int proxy_h2_resp_head(struct proxy_dconn *dc, const struct sc_http_msg *m)
{
    struct proxy_h2s *s = dc->h2s;
    struct proxy_h2c *c = s->c;
    struct proxy_exch *r = &dc->ex;
    if (c->unsent >= H2C_PACK_AT) {
        h2_pack(c); /* bounds what nghttp2 holds when many answers complete at once */
    }
    struct proxy_hsink sk = proxy_h2_out_sink(out_of(c), SC_STR("http"), 0);
    if (proxy_head_response(r, m, &sk) < 0) {
        return SC_ETOOBIG;
    }
    /* An empty body ends the stream with the HEADERS: a gRPC trailers-only answer must (its
     * grpc-status is read from the block that ends the stream). */
    return submit_head(s, r->rbody != B_NONE && !(r->rbody == B_LENGTH && r->rremaining == 0));
}

/* The exchange is logged: the stream ends once the provider has sent what is buffered (a
 * client still sending its body is then told to stop, RST_STREAM NO_ERROR, from
 * on_frame_send). The dconn stays until nghttp2 closes the stream. */
static void h2_finish(struct proxy_exch *ex)
{
    struct proxy_dconn *dc = ex->dc;
    struct proxy_h2s *s = dc->h2s;
    if (!dc->wpending) {
        proxy_hbuf_put(dc->w, &dc->out);
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    dc->state = D_H2;
    /* The stream idle timeout runs from now until the client has taken the response (sweep): a
     * deadline the exchange left armed earlier than that is kept, and re-evaluated then. */
    dc->last_activity = uv_now(dc->w->loop);
    uint64_t due = dc->last_activity + dc->w->rt->stream_idle_timeout_ms;
    if (!dc->timer_due || dc->timer_due > due) {
        dc->timer_due = due;
        proxy_h2_stream_due(dc);
    }
    s->eof = true;
    deliver(s); /* drops what is buffered of the body and reopens its window */
    dc->in.start = dc->in.end = 0;
    proxy_rbuf_keep(dc->w, &dc->in);
    if (s->deferred && !s->gone) {
        s->deferred = false;
        nghttp2_session_resume_data(s->c->s, s->id);
    }
    h2_flush_soon(s->c);
}

static void h2_abort(struct proxy_exch *ex)
{
    proxy_dconn_close(ex->dc);
}

static void h2_read_update(struct proxy_exch *ex)
{
    proxy_dread_update(ex->dc);
}

static void h2_arm_timer(struct proxy_exch *ex)
{
    proxy_arm_timer(ex->dc);
}

const struct proxy_down_ops proxy_h2_down = {
    .can_reply = h2_can_reply,
    .reply = h2_reply,
    .finish = h2_finish,
    .abort = h2_abort,
    .read_update = h2_read_update,
    .arm_timer = h2_arm_timer,
};

/* ---- nghttp2's callbacks ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *f, void *ud)
{
    (void)session;
    struct proxy_h2c *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    int kind = f->headers.cat == NGHTTP2_HCAT_REQUEST ? PROXY_H2_REQUEST : PROXY_H2_TRAILERS;
    struct proxy_worker *w = c->dc->w;
    if (!c->hd) {
        c->hd = w->h2hd ? w->h2hd : SC_NEW(struct proxy_h2_head);
        w->h2hd = NULL;
    }
    proxy_h2_head_init(c->hd, kind, c->cfg.max_header_list_size,
                       w->rt->listeners[c->dc->lidx].max_headers);
    c->hd_open = true;
    c->hd_sid = f->hd.stream_id;
    c->hd_rc = 0;
    c->hd_why = NULL;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)session;
    (void)flags;
    struct proxy_h2c *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != c->hd_sid || c->hd_rc || !c->hd) {
        return 0;
    }
    c->hd_rc = proxy_h2_head_add(c->hd, sc_str_n((const char *)name, namelen),
                                 sc_str_n((const char *)value, valuelen), &c->hd_why);
    return 0;
}

/* The request as HTTP/1 text in dc->in (what an external authorizer re-reads), so the exchange
 * starts on it exactly as for an HTTP/1 request. Returns its length. */
static size_t request_text(struct proxy_dconn *dc, const struct sc_http_msg *m, bool chunked)
{
    size_t need = m->method.len + m->target.len + 64;
    for (size_t i = 0; i < m->nheaders; i++) {
        need += m->headers[i].name.len + m->headers[i].value.len + 4;
    }
    if (!dc->in.p) {
        /* The head's own size, not a 16 KiB read buffer: the stream keeps it while its exchange
         * runs (ext_authz re-reads it), and with 500 streams in flight those buffers were most
         * of the proxy's memory. The stream's dconn keeps it for its next stream (while small:
         * proxy_rbuf_keep). */
        dc->in.p = sc_malloc(need);
        dc->in.cap = need;
    } else if (dc->in.cap < need) {
        dc->in.p = sc_realloc(dc->in.p, need);
        dc->in.cap = need;
    }
    char *o = dc->in.p;
#define PUT(p, n)                                                                                  \
    do {                                                                                           \
        memcpy(o, (p), (n));                                                                       \
        o += (n);                                                                                  \
    } while (0)
    PUT(m->method.p, m->method.len);
    PUT(" ", 1);
    PUT(m->target.p, m->target.len);
    PUT(" HTTP/1.1\r\n", 11);
    for (size_t i = 0; i < m->nheaders; i++) {
        PUT(m->headers[i].name.p, m->headers[i].name.len);
        PUT(": ", 2);
        PUT(m->headers[i].value.p, m->headers[i].value.len);
        PUT("\r\n", 2);
    }
    if (chunked) {
        PUT("transfer-encoding: chunked\r\n", 28);
    }
    PUT("\r\n", 2);
#undef PUT
    dc->in.start = 0;
    dc->in.end = (size_t)(o - dc->in.p);
    return dc->in.end;
}

/* A request's header block is complete: its stream dconn starts the exchange, or answers a
 * malformed or oversized block itself (logged and counted like any request). */
static void on_request(struct proxy_h2c *c, const nghttp2_frame *f)
{
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    const char *why = c->hd_why;
    int rc = c->hd_rc;
    if (rc == 0) {
        rc = proxy_h2_head_finish(c->hd, end, &why);
    }
    struct proxy_h2s *s = stream_new(c, f->hd.stream_id);
    struct proxy_dconn *dc = s->dc;
    s->in_eof = end;
    int status = rc == PROXY_H2_TOO_BIG ? 431 : 400;
    struct sc_http_msg *m = &c->hd->m;
    if (rc == 0 && sc_str_eq(m->method, SC_STR("CONNECT"))) {
        rc = -1;
        status = 501;
        why = "CONNECT is not supported over HTTP/2";
    }
    for (size_t i = 0; rc == 0 && !m->underscore && i < m->nheaders; i++) {
        m->underscore = memchr(m->headers[i].name.p, '_', m->headers[i].name.len) != NULL;
    }
    if (rc == 0 && proxy_underscores(dc->w->rt, m) != 0) {
        rc = -1;
        status = 400;
        why = "header name with underscore (headers_with_underscores: reject)";
    }
    if (rc != 0) {
        proxy_rbuf_get(dc->w, &dc->in);
        proxy_exch_begin(dc, true);
        proxy_local_reply(&dc->ex, status, why ? why : "malformed request", F_DPE);
        return;
    }
    s->chunked = m->body == SC_HTTP_BODY_CHUNKED;
    const struct sc_http_header *ct = sc_http1_find(m, SC_STR("content-type"), NULL);
    s->grpc = ct && proxy_grpc_is(ct->value);
    sc_metrics_counter_inc(c->m.streams);
    /* Expect: 100-continue is answered as for HTTP/1 (proxy_upstream_ready: a 100 HEADERS
     * once the request is on its way), and not forwarded. */
    size_t headlen = request_text(dc, m, s->chunked);
    proxy_exchange_start(dc, m, headlen);
}

/* Request trailers: the end of a chunked body for the HTTP/1 side. */
static void on_trailers(struct proxy_h2c *c, struct proxy_h2s *s, const nghttp2_frame *f)
{
    const char *why = c->hd_why;
    int rc = c->hd_rc;
    if (rc == 0) {
        rc = proxy_h2_head_finish(c->hd, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0, &why);
    }
    if (rc != 0) {
        sc_debug("http2: request trailers refused", SC_LS("reason", why ? why : ""));
        proxy_dconn_close(s->dc);
        return;
    }
    if (s->chunked && proxy_h2_trailers_to_h1(&c->hd->m, &s->trl) < 0) {
        sc_buf_reset(&s->trl);
    }
    s->in_eof = true;
    deliver(s);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *f, void *ud)
{
    struct proxy_h2c *c = ud;
    struct proxy_h2s *s = nghttp2_session_get_stream_user_data(session, f->hd.stream_id);
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        c->hd_open = false;
        if (!c->hd) {
            break; /* nghttp2 always begins a block first: cannot happen */
        }
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (!c->closing) {
                on_request(c, f);
            }
        } else if (s && !s->closed) {
            on_trailers(c, s, f);
        }
        break;
    case NGHTTP2_DATA:
        if (s && !s->closed && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s->in_eof = true;
            deliver(s);
        }
        break;
    case NGHTTP2_PING:
        if (f->hd.flags & NGHTTP2_FLAG_ACK) {
            c->ping_sent = 0; /* the keepalive is answered: the next PING after an interval */
            h2c_arm(c);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct proxy_h2c *c = ud;
    struct proxy_h2s *s = nghttp2_session_get_stream_user_data(session, id);
    if (!s || s->closed) {
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    s->dc->last_activity = uv_now(s->dc->w->loop);
    if (sc_buf_append(&s->pend, data, len) < 0) {
        /* More than the window allows: nghttp2 enforces it, so this is a bug, not a peer. */
        nghttp2_session_consume(session, id, len);
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
        return 0;
    }
    deliver(s);
    (void)c;
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *f, void *ud)
{
    struct proxy_h2c *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        uint32_t code = f->goaway.error_code;
        int r = c->ga_reason >= 0                   ? c->ga_reason
                : code == NGHTTP2_PROTOCOL_ERROR    ? PROXY_H2_GA_PROTOCOL
                : code == NGHTTP2_INTERNAL_ERROR    ? PROXY_H2_GA_RESET_FLOOD
                : code == NGHTTP2_ENHANCE_YOUR_CALM ? PROXY_H2_GA_FLOOD
                : code == NGHTTP2_NO_ERROR          ? PROXY_H2_GA_DRAIN
                                                    : PROXY_H2_GA_OTHER;
        c->ga_reason = -1;
        sc_metrics_counter_inc(c->m.goaway[r]);
        return 0;
    }
    if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM) {
        sc_metrics_counter_inc(c->m.refused);
        return 0;
    }
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct proxy_h2s *s = nghttp2_session_get_stream_user_data(session, f->hd.stream_id);
        if (s && !s->in_eof) {
            /* The response is complete before the request: RFC 9113 section 8.1. */
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                      NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    (void)ud;
    struct proxy_h2s *s = nghttp2_session_get_stream_user_data(session, id);
    if (!s) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(session, id, NULL);
    s->gone = true;
    if (s->dc->state != D_CLOSING) {
        proxy_dconn_close(s->dc); /* a client's reset reaches the upstream side */
    }
    return 0;
}

/* ---- the connection ---- */

static void h2c_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_dconn *dc = owner;
    proxy_rbuf_get(dc->w, &dc->in);
    proxy_rbuf_room(&dc->in, dc->in.cap);
    *buf = uv_buf_init(dc->in.p + dc->in.end, (unsigned)(dc->in.cap - dc->in.end));
}

/* Feeds what dc->in holds to the session. */
static void h2c_input(struct proxy_h2c *c)
{
    struct proxy_dconn *dc = c->dc;
    size_t n = dc->in.end - dc->in.start;
    if (n == 0 || c->dead) {
        return;
    }
    c->busy = true;
    ssize_t rv = nghttp2_session_mem_recv(c->s, (const uint8_t *)dc->in.p + dc->in.start, n);
    c->busy = false;
    if (!c->hd_open) {
        hd_put(c);
    }
    dc->in.start = dc->in.end = 0;
    proxy_rbuf_put(dc->w, &dc->in);
    if (rv < 0) {
        sc_debug("http2: connection error", SC_LS("peer", dc->cl->ip),
                 SC_LS("reason", nghttp2_strerror((int)rv)));
        if (rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            bool flood = rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ||
                         rv == NGHTTP2_ERR_TOO_MANY_SETTINGS;
            c->ga_reason = flood ? PROXY_H2_GA_FLOOD : PROXY_H2_GA_PROTOCOL;
            nghttp2_session_terminate_session(c->s, flood ? NGHTTP2_ENHANCE_YOUR_CALM
                                                          : NGHTTP2_PROTOCOL_ERROR);
            h2_flush(c);
        }
        h2c_close_soon(c);
        return;
    }
    h2_flush(c);
}

static void h2c_read(void *owner, ssize_t nread)
{
    struct proxy_dconn *dc = owner;
    proxy_spin_on(dc->w);
    if (nread == 0 || dc->state == D_CLOSING) {
        return;
    }
    if (nread < 0) {
        /* As Envoy and nginx do for HTTP/2: the client's FIN ends the connection (a client
         * that stopped reading would otherwise hold its streams until their idle timeouts);
         * open streams end as the client's (logged DC). */
        proxy_dconn_close(dc);
        return;
    }
    dc->last_activity = dc->h2->last_rx = uv_now(dc->w->loop);
    dc->in.end += (size_t)nread;
    h2c_input(dc->h2);
}

static void h2c_write_done(void *owner, int status)
{
    struct proxy_dconn *dc = owner;
    struct proxy_h2c *c = dc->h2;
    c->wpending = false;
    if (dc->state == D_CLOSING) {
        return;
    }
    sc_buf_reset(&c->wbuf);
    if (status < 0) {
        proxy_dconn_close(dc);
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    h2_flush(c);
}

static void h2c_closed(void *owner)
{
    proxy_dconn_closed_one(owner);
}

static const struct sc_xport_cbs h2c_cbs = {
    .alloc = h2c_alloc,
    .read = h2c_read,
    .write_done = h2c_write_done,
    .closed = h2c_closed,
};

void proxy_h2_start(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    if (sc_lazylib_nghttp2_load(NULL) < 0) {
        sc_debug("HTTP/2 connection refused: nghttp2 cannot be loaded", SC_LS("peer", dc->cl->ip));
        proxy_dconn_close(dc); /* the reason was logged once, by the load */
        return;
    }
    struct proxy_h2c *c = SC_NEW(struct proxy_h2c);
    c->dc = dc;
    c->cfg = w->rt->listeners[dc->lidx].http2;
    c->m = w->rt->listeners[dc->lidx].h2m;
    c->ga_reason = -1;
    c->sdue = UINT64_MAX;
    c->idle_since = c->last_rx = uv_now(w->loop);
    sc_metrics_counter_inc(c->m.conns);
    sc_list_init(&c->streams);
    sc_list_init(&c->wake);
    sc_buf_init(&c->wbuf, H2C_WBUF_MAX);
    uv_check_init(w->loop, &c->check);
    c->check.data = c;
    uv_idle_init(w->loop, &c->nowait);
    c->nowait.data = c;
    dc->h2 = c;
    dc->state = D_H2;
    dc->timer_due = 0;
    dc->x->cbs = &h2c_cbs;

    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)c->cfg.stream_reset_burst,
                                               (uint64_t)c->cfg.stream_reset_rate);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    int rc = nghttp2_session_server_new3(&c->s, cbs, c, opt, proxy_h2_mem(w));
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0) {
        c->s = NULL;
        proxy_dconn_close(dc);
        return;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)c->cfg.max_concurrent_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)c->cfg.initial_stream_window_size },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->cfg.max_header_list_size },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
    };
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, SC_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)c->cfg.initial_connection_window_size);
    h2c_arm(c);
    (void)sc_xport_read_start(dc->x);
    h2c_input(c);
    h2_flush(c);
}

void proxy_h2_drain(struct proxy_dconn *dc)
{
    struct proxy_h2c *c = dc->h2;
    if (!c || c->closing || c->draining || !c->s) {
        return;
    }
    c->draining = true;
    c->ga_reason = PROXY_H2_GA_DRAIN;
    nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(c);
    h2c_arm(c);
}

static void on_check_closed(uv_handle_t *h)
{
    struct proxy_h2c *c = h->data;
    proxy_dconn_closed_one(c->dc);
}

int proxy_h2_conn_closing(struct proxy_dconn *dc)
{
    struct proxy_h2c *c = dc->h2;
    c->closing = true;
    uv_close((uv_handle_t *)&c->check, on_check_closed);
    uv_close((uv_handle_t *)&c->nowait, on_check_closed);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &c->streams)
    {
        struct proxy_dconn *sdc = sc_list_entry(pos, struct proxy_dconn, node);
        proxy_dconn_close(sdc);
    }
    return (int)c->nalive + 2; /* and the check and idle handles */
}

void proxy_h2_conn_freed(struct proxy_dconn *dc)
{
    struct proxy_h2c *c = dc->h2;
    nghttp2_session_del(c->s);
    hd_put(c);
    sc_buf_cleanup(&c->wbuf);
    sc_free(c);
    dc->h2 = NULL;
}
