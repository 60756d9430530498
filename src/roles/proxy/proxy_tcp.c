// SPDX-License-Identifier: Apache-2.0
// The TCP side of the proxy: listeners of protocol tcp or auto accept here. On an auto listener the
// first bytes decide (proxy_detect.c), within protocol_detection_timeout: an HTTP/1 request line
// is handed to the HTTP/1 codec (proxy_h1_adopt, with the bytes read so far), the HTTP/2 preface,
// a TLS ClientHello and anything else are relayed as bytes; opaque_ports and http_ports decide by
// the original destination port without reading. A relayed connection goes to the cluster of the
// first tcp_route that takes it (destination port, TLS SNI and ALPN, read without terminating
// TLS), else tcp_cluster, else its original destination, from the cluster's source address when
// it has one (the inbound passthrough's 127.0.0.6).
//
// Once connected, the relay moves the bytes with splice(2) (tcp_splice, the default): each
// direction fills a pipe from its source and drains it into its destination, refilling only an
// empty pipe, so a slow reader holds one pipe's worth (64 KiB) per direction and backpressure
// reaches the writer through TCP flow control. Pipes are lent from a per-worker pool while bytes
// are in them, so an idle connection holds none. In copy mode (the bytes detection read, a listener
// with tcp_splice false, no descriptor to spare) each direction goes through one block of the
// worker's buffer pool in the same way: a read is written to the other side at once
// (uv_try_write); what it does not take is queued and the reading side paused until it drains. A
// FIN read on one side is passed to the other once the bytes before it are written (half-close);
// the connection ends when both directions have ended, on an error (reset), or after
// tcp_idle_timeout without a byte either way. TLS on either side means copy mode: mesh mTLS the
// listener terminates (STRICT; PERMISSIVE for a ClientHello offering the mesh's ALPN, peeked for
// even on opaque ports), and TLS the cluster originates (a mesh cluster: the workload's
// certificate, the peer's SPIFFE ID checked, the mesh's ALPN), both read and written through
// their transport chains with the same backpressure and half-close (close_notify, then FIN).
// Each connection writes one access-log line when it ends and is counted in
// sidecar_tcp_connections_total, sidecar_tcp_connections_active and sidecar_tcp_bytes_total.
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tcp.h"
#include "net/tls.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_detect.h"
#include "roles/proxy/proxy_tcp.h"
#include "roles/proxy/proxy_tls.h"

enum { T_DETECT, T_CONNECTING, T_RELAY, T_CLOSING };

/* How the protocol was decided, for the log. */
enum { DET_LISTENER, DET_PORT, DET_BYTES, DET_TIMEOUT, DET_EOF };

struct proxy_tcp {
    struct sc_list node;
    struct proxy_worker *w;
    struct proxy_rt *rt; /* a reference while open */
    struct proxy_listener *lsn;
    size_t lidx;
    uv_tcp_t d; /* the client */
    uv_tcp_t u; /* the upstream (initialised once a destination is chosen) */
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t dwr, uwr;    /* the pending write to the client, to the upstream */
    uv_shutdown_t dsh, ush; /* the FIN to the client, to the upstream */
    struct rbuf up;         /* client bytes not yet written upstream */
    struct rbuf down;       /* upstream bytes not yet written to the client */
    struct proxy_cluster *cluster;
    struct proxy_endpoint *ep; /* a static cluster's endpoint (outlier detection) */
    const char *route;
    struct sockaddr_storage orig;  /* where the client meant to go (has_orig) */
    struct sockaddr_storage uaddr; /* where the relay connects */
    struct sockaddr_storage peer;
    char peer_ip[48];
    char sni[PROXY_SNI_MAX + 1];
    uint64_t start_ns;
    uint64_t connect_ns; /* connect time, once connected */
    uint64_t rx, tx;     /* bytes from the client, to the client */
    uint64_t last_ms;    /* loop time of the last byte either way */
    uint16_t port;       /* the destination port (original, else the listener's) */
    unsigned flags;
    int state;
    int handles; /* libuv handles open (the last one closed frees the connection) */
    int proto;   /* enum proxy_proto */
    int how;     /* DET_* */
    bool has_orig;
    bool d_open;  /* the uv_tcp_t of the client is open (not yet handed to splice mode) */
    bool u_init;  /* the uv_tcp_t of the upstream is open */
    bool counted; /* in the sidecar_tcp_* gauges and counters */
    bool bk_cx;   /* holds a connection of the cluster's breaker */
    bool bk_pending;
    bool d_eof, u_eof;   /* the FIN of that side was read */
    bool u_shut, d_shut; /* the FIN was sent to that side */
    bool uw_pending, dw_pending;
    /* splice mode: both sockets (dup'ed out of their uv_tcp_t) polled directly, one pipe per
     * direction ([0] client to upstream, [1] upstream to client) */
    bool spliced;
    int dfd, ufd;
    uv_poll_t dpoll, upoll;
    int pipes[2][2]; /* -1: none held (taken from the worker's pool while bytes are in it) */
    size_t inpipe[2];
    int want[2]; /* W_* per direction */
    int dmask, umask;
    /* mesh mTLS (a STRICT listener): the client's socket moves out of <d> into a transport chain
     * (<dtx> below, the TLS layer <dx> on top) once its ClientHello is seen; detection and the
     * relay then read and write the decrypted bytes through <dx> (copy mode only) */
    bool mesh;
    bool permissive; /* PERMISSIVE: a ClientHello offering the mesh's ALPN is terminated */
    bool hs_done;
    struct sc_tcp_xport *dtx;
    struct sc_xport *dx;
    const char *tls_fail; /* why the handshake failed, for the log */
    bool peek;            /* PERMISSIVE on an opaque port: read for the mesh's ClientHello */
    /* a cluster that originates TLS (mesh mTLS): the upstream is a chain (<utx> below, the TLS
     * layer <ux> on top) instead of <u>, and the relay reads and writes it through <ux> */
    struct sc_tcp_xport *utx;
    struct sc_xport *ux;
    const char *utls_fail; /* why the upstream's TLS was refused, for the log */
};

enum { W_NONE, W_SRC, W_DST };

static void tcp_close(struct proxy_tcp *t);
static void relay_start(struct proxy_tcp *t);
static void splice_start(struct proxy_tcp *t);
static void decide(struct proxy_tcp *t, enum proxy_proto proto, const struct proxy_hello *hello);

void proxy_tcp_metrics_init(struct proxy_metrics *pm)
{
    static const char *const l_labels[] = { "listener", NULL };
    static const char *const ld_labels[] = { "listener", "direction", NULL };
    pm->tcp_total = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_tcp_connections_total",
                                      "TCP connections relayed (opaque, TLS passthrough, "
                                      "undetected), by listener.",
                                      l_labels, NULL, 0);
    pm->tcp_active =
        sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "sidecar_tcp_connections_active",
                          "TCP connections being relayed now, by listener.", l_labels, NULL, 0);
    pm->tcp_bytes = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_tcp_bytes_total",
                                      "Bytes relayed on TCP connections: received from clients, "
                                      "sent to clients.",
                                      ld_labels, NULL, 0);
}

/* ---- closing and the log line ---- */

/* Writes the Istio principal of chain <x>'s TLS peer (empty: none, or <x> NULL) into <out>, escaped
 * for JSON. */
static void principal(struct sc_xport *x, char *out, size_t cap)
{
    size_t n = 0;
    struct sc_str id = x ? sc_xport_query_str(x, SC_XQ_PEER_ID) : SC_STR_NULL;
    if (sc_str_startswith(id, SC_STR("spiffe://"))) {
        sc_json_escape(out, cap - 1, &n, id.p + 9, id.len - 9);
    }
    out[n] = 0;
}

static void tcp_log(struct proxy_tcp *t)
{
    struct proxy_worker *w = t->w;
    if (!t->rt->access_log) {
        return;
    }
    char date[32], ua[64] = "", od[64] = "", flags[64], sni[PROXY_SNI_MAX * 6 + 1];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (t->uaddr.ss_family) {
        sc_addr_format((const struct sockaddr *)&t->uaddr, ua, sizeof(ua));
    }
    if (t->has_orig) {
        sc_addr_format((const struct sockaddr *)&t->orig, od, sizeof(od));
    }
    size_t sl = 0;
    sc_json_escape(sni, sizeof(sni), &sl, t->sni, strlen(t->sni));
    sni[sl] = 0;
    proxy_log_flags(t->flags, flags, sizeof(flags));
    char pr[512], upr[512];
    principal(t->dx && t->hs_done ? t->dx : NULL, pr, sizeof(pr));
    principal(t->ux && t->connect_ns ? t->ux : NULL, upr, sizeof(upr));
    static const char *const hows[] = { "listener", "port", "bytes", "timeout", "eof" };
    uint64_t dur_us = (proxy_now_ns() - t->start_ns) / 1000;
    uint64_t conn_us = t->connect_ns ? (t->connect_ns - t->start_ns) / 1000 : 0;
    char line[4096];
    int n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%s\",\"listener\":\"%s\",\"protocol\":\"%s\",\"detection\":\"%s\","
        "\"sni\":\"%s\",\"route\":\"%s\",\"cluster\":\"%s\",\"upstream\":\"%s\","
        "\"original_dst\":\"%s\",\"bytes_received\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
        ",\"duration_ms\":%" PRIu64 ".%03u,"
        "\"connect_ms\":%" PRIu64 ".%03u,\"flags\":\"%s\",\"peer\":\"%s\","
        "\"peer_principal\":\"%s\",\"tls_failure\":\"%s\",\"upstream_principal\":\"%s\","
        "\"upstream_tls_failure\":\"%s\"}\n",
        date, t->lsn->name, proxy_proto_name(t->proto), hows[t->how], sni, t->route ? t->route : "",
        t->cluster ? t->cluster->name : "", ua, od, t->rx, t->tx, dur_us / 1000,
        (unsigned)(dur_us % 1000), conn_us / 1000, (unsigned)(conn_us % 1000), flags, t->peer_ip,
        pr, t->tls_fail ? t->tls_fail : "", upr, t->utls_fail ? t->utls_fail : "");
    if (n > 0 && (size_t)n < sizeof(line)) {
        proxy_log_line(w, line, (size_t)n);
    }
}

/* An empty pipe from the worker's pool, or a new one, into <p>. Returns 0 or -1 (errno). */
static int pipe_take(struct proxy_worker *w, int p[2])
{
    if (w->ntcp_pipes) {
        w->ntcp_pipes--;
        p[0] = w->tcp_pipes[w->ntcp_pipes][0];
        p[1] = w->tcp_pipes[w->ntcp_pipes][1];
        return 0;
    }
    return pipe2(p, O_NONBLOCK | O_CLOEXEC);
}

/* Gives empty pipe <p> (-1: none) back to the pool, or closes it when the pool is full. */
static void pipe_give(struct proxy_worker *w, int p[2])
{
    if (p[0] < 0) {
        return;
    }
    if (w->ntcp_pipes < SC_ARRAY_LEN(w->tcp_pipes) && !w->closed_all) {
        w->tcp_pipes[w->ntcp_pipes][0] = p[0];
        w->tcp_pipes[w->ntcp_pipes][1] = p[1];
        w->ntcp_pipes++;
    } else {
        close(p[0]);
        close(p[1]);
    }
    p[0] = p[1] = -1;
}

void proxy_tcp_cleanup(struct proxy_worker *w)
{
    while (w->ntcp_pipes) {
        w->ntcp_pipes--;
        close(w->tcp_pipes[w->ntcp_pipes][0]);
        close(w->tcp_pipes[w->ntcp_pipes][1]);
    }
}

static void closed_one(struct proxy_tcp *t)
{
    if (--t->handles > 0 || t->state != T_CLOSING) {
        return; /* another handle, or the uv_tcp_t's given up for splice mode */
    }
    struct proxy_worker *w = t->w;
    if (t->spliced) {
        close(t->dfd);
        close(t->ufd);
        for (int i = 0; i < 2; i++) {
            if (t->inpipe[i] && t->pipes[i][0] >= 0) {
                close(t->pipes[i][0]); /* bytes left inside: not reusable */
                close(t->pipes[i][1]);
                t->pipes[i][0] = t->pipes[i][1] = -1;
            }
            pipe_give(w, t->pipes[i]);
        }
    }
    t->up.start = t->up.end = t->down.start = t->down.end = 0;
    proxy_rbuf_put(w, &t->up);
    proxy_rbuf_put(w, &t->down);
    sc_list_remove(&t->node);
    w->ntcps--;
    atomic_fetch_sub_explicit(&w->px->conns, 1, memory_order_relaxed);
    proxy_rt_unref(t->rt);
    sc_free(t->dtx);
    sc_free(t->utx);
    sc_free(t);
    proxy_check_done(w);
}

static void on_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

/* Closes both sockets and the timer; logs a relayed connection. Idempotent. */
static void tcp_close(struct proxy_tcp *t)
{
    if (t->state == T_CLOSING) {
        return;
    }
    bool relayed = t->state != T_DETECT || t->tls_fail;
    t->state = T_CLOSING;
    if (t->bk_pending) {
        proxy_breaker_connected(t->cluster);
    }
    if (t->bk_cx) {
        proxy_breaker_closed(t->cluster);
    }
    if (t->counted) {
        sc_metrics_gauge_add(t->lsn->icpt.m_active, -1);
    }
    if (relayed) {
        tcp_log(t);
    }
    if (t->d_open) {
        uv_close((uv_handle_t *)&t->d, on_closed);
    }
    uv_close((uv_handle_t *)&t->timer, on_closed);
    if (t->dx) {
        sc_xport_close(t->dx);
    }
    if (t->ux) {
        proxy_tls_cluster_closing(t->cluster, t->ux);
        sc_xport_close(t->ux);
    }
    if (t->u_init) {
        uv_close((uv_handle_t *)&t->u, on_closed);
    }
    if (t->spliced) {
        uv_close((uv_handle_t *)&t->dpoll, on_closed);
        uv_close((uv_handle_t *)&t->upoll, on_closed);
    }
}

void proxy_tcp_stop(struct proxy_worker *w, bool all)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &w->tcps)
    {
        struct proxy_tcp *t = sc_list_entry(pos, struct proxy_tcp, node);
        if (all || (t->state == T_DETECT && t->up.start == t->up.end)) {
            tcp_close(t);
        }
    }
}

/* ---- the relay ---- */

/* One direction: bytes read from <src> into <b>, written to <dst>. */
struct dir {
    uv_tcp_t *src, *dst;
    struct rbuf *b;
    uv_write_t *wr;
    uv_shutdown_t *sh;
    bool *src_eof, *dst_shut, *wpending;
};

/* The TLS chain of side <s> (&t->d or &t->u), or NULL when the relay uses its socket directly. */
static struct sc_xport *chain_of(struct proxy_tcp *t, uv_tcp_t *s)
{
    return s == &t->d ? t->dx : t->ux;
}

static struct dir dir_up(struct proxy_tcp *t)
{
    return (struct dir){ &t->d,   &t->u,     &t->up,     &t->uwr,
                         &t->ush, &t->d_eof, &t->u_shut, &t->uw_pending };
}

static struct dir dir_down(struct proxy_tcp *t)
{
    return (struct dir){ &t->u,   &t->d,     &t->down,   &t->dwr,
                         &t->dsh, &t->u_eof, &t->d_shut, &t->dw_pending };
}

/* Offers the free room of block <b> (taken from the worker's pool when none is held) as the next
 * read buffer. */
static void block_for(struct proxy_tcp *t, struct rbuf *b, uv_buf_t *buf)
{
    proxy_rbuf_get(t->w, b);
    if (b->start == b->end) {
        b->start = b->end = 0;
    }
    *buf = uv_buf_init(b->p + b->end, (unsigned)(b->cap - b->end));
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct proxy_tcp *t = h->data;
    block_for(t, h == (uv_handle_t *)&t->d ? &t->up : &t->down, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_shutdown(uv_shutdown_t *req, int status);

/* Ends the connection once both directions have ended and nothing is left to write. */
static void maybe_done(struct proxy_tcp *t)
{
    if (t->u_shut && t->d_shut && !t->uw_pending && !t->dw_pending) {
        tcp_close(t);
    }
}

/* Passes <d>'s FIN on once its bytes are out. */
static void pass_fin(struct proxy_tcp *t, struct dir d)
{
    if (!*d.src_eof || *d.dst_shut || *d.wpending || d.b->start != d.b->end) {
        return;
    }
    *d.dst_shut = true;
    struct sc_xport *x = chain_of(t, d.dst);
    if (x) {
        if (sc_xport_shutdown(x) < 0) { /* close_notify then FIN; the caller checks the end */
            tcp_close(t);
        }
        return;
    }
    d.sh->data = t;
    if (uv_shutdown(d.sh, (uv_stream_t *)d.dst, on_shutdown) < 0) {
        tcp_close(t);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct proxy_tcp *t = req->data;
    if (status == UV_ECANCELED || t->state == T_CLOSING) {
        return;
    }
    if (status < 0) {
        tcp_close(t);
        return;
    }
    maybe_done(t);
}

/* Reading <d>'s source is wanted while its buffer is empty and it has not ended. */
static void read_update(struct proxy_tcp *t, struct dir d)
{
    if (t->state != T_RELAY) {
        return;
    }
    bool on = !*d.src_eof && !*d.wpending && d.b->start == d.b->end;
    struct sc_xport *x = chain_of(t, d.src);
    if (x) {
        on ? (void)sc_xport_read_start(x) : sc_xport_read_stop(x);
    } else if (on) {
        (void)uv_read_start((uv_stream_t *)d.src, on_alloc, on_read);
    } else {
        (void)uv_read_stop((uv_stream_t *)d.src);
    }
}

/* Stops reading <s> (through its TLS layer when it has one). */
static void src_stop(struct proxy_tcp *t, uv_tcp_t *s)
{
    struct sc_xport *x = chain_of(t, s);
    if (x) {
        sc_xport_read_stop(x);
    } else {
        (void)uv_read_stop((uv_stream_t *)s);
    }
}

static void on_write(uv_write_t *req, int status);

/* Writes what <d>'s buffer holds: at once when the socket takes it, else queued with reading
 * paused. Gives the empty buffer back. */
static void flush(struct proxy_tcp *t, struct dir d)
{
    struct rbuf *b = d.b;
    if (*d.wpending || b->start == b->end) {
        return;
    }
    uv_buf_t iov = uv_buf_init(b->p + b->start, (unsigned)(b->end - b->start));
    struct sc_xport *x = chain_of(t, d.dst);
    if (x) {
        /* the TLS layer takes all of it, now (0) or queued (1: write_done follows) */
        int rc = sc_xport_write(x, &iov, 1);
        if (rc < 0) {
            t->flags |= d.dst == &t->u ? F_UC : F_DC;
            tcp_close(t);
        } else if (rc == 1) {
            *d.wpending = true;
            src_stop(t, d.src);
        } else {
            if (d.dst == &t->d) {
                t->tx += iov.len;
                sc_metrics_counter_add(t->lsn->icpt.m_tx, iov.len);
            }
            b->start = b->end = 0;
            proxy_rbuf_put(t->w, b);
        }
        return;
    }
    int n = uv_try_write((uv_stream_t *)d.dst, &iov, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS) {
        n = 0;
    }
    if (n < 0) {
        t->flags |= d.dst == &t->u ? F_UC : F_DC;
        tcp_close(t);
        return;
    }
    b->start += (size_t)n;
    if (d.dst == &t->d) {
        t->tx += (uint64_t)n;
        sc_metrics_counter_add(t->lsn->icpt.m_tx, (uint64_t)n);
    }
    if (b->start == b->end) {
        b->start = b->end = 0;
        proxy_rbuf_put(t->w, b);
        return;
    }
    iov = uv_buf_init(b->p + b->start, (unsigned)(b->end - b->start));
    d.wr->data = t;
    if (uv_write(d.wr, (uv_stream_t *)d.dst, &iov, 1, on_write) < 0) {
        tcp_close(t);
        return;
    }
    *d.wpending = true;
    src_stop(t, d.src);
}

static void write_done(struct proxy_tcp *t, struct dir d, int status)
{
    if (status == UV_ECANCELED || t->state == T_CLOSING) {
        return;
    }
    *d.wpending = false;
    if (status < 0) {
        t->flags |= d.dst == &t->u ? F_UC : F_DC;
        tcp_close(t);
        return;
    }
    if (d.dst == &t->d) {
        uint64_t n = d.b->end - d.b->start;
        t->tx += n;
        sc_metrics_counter_add(t->lsn->icpt.m_tx, n);
    }
    t->last_ms = uv_now(t->w->loop);
    d.b->start = d.b->end = 0;
    proxy_rbuf_put(t->w, d.b);
    read_update(t, d);
    pass_fin(t, d);
    maybe_done(t);
    splice_start(t);
}

static void on_write(uv_write_t *req, int status)
{
    struct proxy_tcp *t = req->data;
    write_done(t, req == &t->uwr ? dir_up(t) : dir_down(t), status);
}

static void on_detect_read(struct proxy_tcp *t, ssize_t nread);

static void relay_read(struct proxy_tcp *t, uv_tcp_t *s, ssize_t nread)
{
    if (nread == 0 || t->state == T_CLOSING) {
        return;
    }
    proxy_spin_on(t->w);
    if (t->state == T_DETECT) {
        on_detect_read(t, nread);
        return;
    }
    struct dir d = s == &t->d ? dir_up(t) : dir_down(t);
    if (nread < 0) {
        if (nread == UV_EOF) {
            *d.src_eof = true;
            src_stop(t, s);
            pass_fin(t, d);
            maybe_done(t);
            return;
        }
        t->flags |= s == &t->u ? F_UC : F_DC;
        tcp_close(t);
        return;
    }
    t->last_ms = uv_now(t->w->loop);
    d.b->end += (size_t)nread;
    if (s == &t->d) {
        t->rx += (uint64_t)nread;
        sc_metrics_counter_add(t->lsn->icpt.m_rx, (uint64_t)nread);
    }
    flush(t, d);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    relay_read(s->data, (uv_tcp_t *)s, nread);
}

static void on_timer(uv_timer_t *h)
{
    struct proxy_tcp *t = h->data;
    uint64_t now = uv_now(t->w->loop);
    switch (t->state) {
    case T_DETECT:
        if (t->mesh && !t->hs_done) {
            t->tls_fail = t->dx ? "handshake_timeout" : "not_tls";
            tcp_close(t); /* no ClientHello, or no handshake, in time: STRICT admits neither */
        } else if (t->peek && t->lsn->icpt.detect_timeout_ms) {
            decide(t, PROXY_PROTO_TCP, NULL); /* a server-first protocol: relayed as it is */
        } else if (t->lsn->icpt.detect_timeout_ms) {
            t->how = DET_TIMEOUT;
            decide(t,
                   t->up.end > t->up.start ? proxy_detect((const uint8_t *)t->up.p + t->up.start,
                                                          t->up.end - t->up.start, NULL)
                                           : PROXY_PROTO_TCP,
                   NULL);
        } else {
            tcp_close(t); /* waited tcp_idle_timeout for a first byte */
        }
        break;
    case T_CONNECTING:
        t->flags |= F_UF;
        if (t->cluster) {
            sc_metrics_counter_inc(t->cluster->m_timeout);
        }
        if (t->ep && t->ep->st) {
            proxy_outlier_record(t->ep, 503, now);
        }
        tcp_close(t);
        break;
    case T_RELAY: {
        uint64_t idle = t->lsn->icpt.idle_timeout_ms;
        if (now - t->last_ms >= idle) {
            t->flags |= F_SI;
            tcp_close(t);
        } else {
            uv_timer_start(&t->timer, on_timer, idle - (now - t->last_ms), 0);
        }
        break;
    }
    default:
        break;
    }
}

/* The upstream connect ended, with the TLS handshake when the cluster originates TLS: a failure
 * or a peer the cluster does not accept (a mesh cluster's trust domain) ends the connection. */
static void connected(struct proxy_tcp *t, int status)
{
    if (status == UV_ECANCELED || t->state == T_CLOSING) {
        return;
    }
    uint64_t now = uv_now(t->w->loop);
    if (t->bk_pending) {
        t->bk_pending = false;
        proxy_breaker_connected(t->cluster);
    }
    const char *bad = NULL;
    if (t->ux) {
        enum sc_tls_fail f;
        bad = proxy_tls_cluster_done(t->cluster, t->ux, status, &f);
        t->utls_fail = bad ? sc_tls_fail_name(f) : NULL;
    }
    if (status < 0 || bad) {
        t->flags |= F_UF;
        if (t->ep && t->ep->st) {
            proxy_outlier_record(t->ep, 503, now);
        }
        if (bad) {
            sc_debug("tcp upstream TLS refused", SC_LS("listener", t->lsn->name),
                     SC_LS("cluster", t->cluster->name), SC_LS("reason", bad));
        } else {
            sc_debug("tcp upstream connect failed", SC_LERR(status));
        }
        tcp_close(t);
        return;
    }
    if (t->ep && t->ep->st) {
        proxy_outlier_record(t->ep, 200, now);
    }
    t->connect_ns = proxy_now_ns();
    sc_tcp_tune(t->ux ? &t->utx->tcp : &t->u);
    relay_start(t);
}

static void on_connect(uv_connect_t *req, int status)
{
    connected(req->data, status);
}

static void relay_start(struct proxy_tcp *t)
{
    t->state = T_RELAY;
    t->last_ms = uv_now(t->w->loop);
    if (t->lsn->icpt.idle_timeout_ms) {
        uv_timer_start(&t->timer, on_timer, t->lsn->icpt.idle_timeout_ms, 0);
    } else {
        uv_timer_stop(&t->timer);
    }
    struct dir up = dir_up(t), down = dir_down(t);
    flush(t, up); /* the bytes detection read */
    if (t->state != T_RELAY) {
        return;
    }
    read_update(t, up);
    read_update(t, down);
    pass_fin(t, up);
    splice_start(t);
}

/* ---- splice mode ---- */

/* Bytes moved per splice(2) into an empty pipe (its default capacity), and pipe fills per
 * direction per poll event before the loop gets a turn (a fast sender cannot starve the
 * worker's other connections). */
#define SPLICE_CHUNK 65536
#define SPLICE_BUDGET 16

static void on_poll(uv_poll_t *h, int status, int events);

/* Moves bytes of direction <dir> (0: client to upstream, 1: upstream to client) from its source
 * through its pipe to its destination until one side would block, the source ends (its FIN is
 * passed on once the pipe is empty) or the budget is spent. The pipe is only refilled once empty,
 * so a slow reader holds at most one pipe's worth per direction. */
static void sp_pump(struct proxy_tcp *t, int dir)
{
    int src = dir == 0 ? t->dfd : t->ufd, dst = dir == 0 ? t->ufd : t->dfd;
    bool *src_eof = dir == 0 ? &t->d_eof : &t->u_eof;
    bool *dst_shut = dir == 0 ? &t->u_shut : &t->d_shut;
    int *p = t->pipes[dir];
    struct proxy_listener_icpt *ic = &t->lsn->icpt;
    int budget = SPLICE_BUDGET;
    t->want[dir] = W_NONE;
    while (t->state == T_RELAY) {
        if (t->inpipe[dir]) {
            ssize_t k =
                splice(p[0], NULL, dst, NULL, t->inpipe[dir], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (k > 0) {
                t->inpipe[dir] -= (size_t)k;
                if (dir == 1) {
                    t->tx += (uint64_t)k;
                    sc_metrics_counter_add(ic->m_tx, (uint64_t)k);
                }
                if (!t->inpipe[dir]) {
                    pipe_give(t->w, p); /* an idle connection holds no pipe */
                }
                continue;
            }
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k < 0 && errno == EAGAIN) {
                t->want[dir] = W_DST;
                return;
            }
            t->flags |= dst == t->ufd ? F_UC : F_DC;
            tcp_close(t);
            return;
        }
        if (*src_eof) {
            if (!*dst_shut) {
                *dst_shut = true;
                (void)shutdown(dst, SHUT_WR); /* a peer already gone shows on its side's read */
            }
            return;
        }
        if (budget-- == 0) {
            t->want[dir] = W_SRC; /* level-triggered: the poll fires again at once */
            return;
        }
        if (p[0] < 0 && pipe_take(t->w, p) < 0) {
            sc_warn("tcp relay: no descriptor for a pipe; connection closed",
                    SC_LS("listener", t->lsn->name), SC_LERR(-errno));
            tcp_close(t);
            return;
        }
        ssize_t k = splice(src, NULL, p[1], NULL, SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (k == 0 || (k < 0 && errno != EINTR)) {
            pipe_give(t->w, p); /* still empty */
        }
        if (k > 0) {
            t->inpipe[dir] += (size_t)k;
            t->last_ms = uv_now(t->w->loop);
            if (dir == 0) {
                t->rx += (uint64_t)k;
                sc_metrics_counter_add(ic->m_rx, (uint64_t)k);
            }
            continue;
        }
        if (k == 0) {
            *src_eof = true;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            t->want[dir] = W_SRC;
            return;
        }
        t->flags |= src == t->ufd ? F_UC : F_DC;
        tcp_close(t);
        return;
    }
}

/* Polls each socket for what its directions wait on; ends a connection whose both directions
 * have ended. */
static void sp_update(struct proxy_tcp *t)
{
    if (t->state != T_RELAY) {
        return;
    }
    if (t->d_eof && t->u_eof && t->d_shut && t->u_shut && !t->inpipe[0] && !t->inpipe[1]) {
        tcp_close(t);
        return;
    }
    int dm = (t->want[0] == W_SRC ? UV_READABLE : 0) | (t->want[1] == W_DST ? UV_WRITABLE : 0);
    int um = (t->want[1] == W_SRC ? UV_READABLE : 0) | (t->want[0] == W_DST ? UV_WRITABLE : 0);
    if (dm != t->dmask) {
        t->dmask = dm;
        dm ? uv_poll_start(&t->dpoll, dm, on_poll) : uv_poll_stop(&t->dpoll);
    }
    if (um != t->umask) {
        t->umask = um;
        um ? uv_poll_start(&t->upoll, um, on_poll) : uv_poll_stop(&t->upoll);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct proxy_tcp *t = h->data;
    if (t->state != T_RELAY) {
        return;
    }
    proxy_spin_on(t->w);
    bool client = h == &t->dpoll;
    if (status < 0) {
        t->flags |= client ? F_DC : F_UC;
        tcp_close(t);
        return;
    }
    /* The client's socket: readable feeds direction 0, writable drains direction 1; the
     * upstream's the other way round. */
    if (events & UV_READABLE) {
        sp_pump(t, client ? 0 : 1);
    }
    if ((events & UV_WRITABLE) && t->state == T_RELAY) {
        sp_pump(t, client ? 1 : 0);
    }
    sp_update(t);
}

/* Moves an established relay to splice mode, when the listener asks for it and nothing is in
 * flight in the copy path (buffers empty, no write or FIN pending). Stays in copy mode when a
 * descriptor or pipe cannot be had. */
static void splice_start(struct proxy_tcp *t)
{
    if (!t->lsn->icpt.splice || t->dx || t->ux || t->spliced || t->state != T_RELAY || t->d_eof ||
        t->u_eof || t->uw_pending || t->dw_pending || t->up.start != t->up.end ||
        t->down.start != t->down.end) {
        return;
    }
    uv_os_fd_t dfd, ufd;
    if (uv_fileno((uv_handle_t *)&t->d, &dfd) < 0 || uv_fileno((uv_handle_t *)&t->u, &ufd) < 0) {
        return;
    }
    int nd = fcntl(dfd, F_DUPFD_CLOEXEC, 0), nu = nd < 0 ? -1 : fcntl(ufd, F_DUPFD_CLOEXEC, 0);
    if (nu < 0) {
        sc_debug("tcp relay stays in copy mode", SC_LERR(-errno));
        if (nd >= 0) {
            close(nd);
        }
        return;
    }
    (void)uv_read_stop((uv_stream_t *)&t->d);
    (void)uv_read_stop((uv_stream_t *)&t->u);
    t->dfd = nd;
    t->ufd = nu;
    t->pipes[0][0] = t->pipes[0][1] = t->pipes[1][0] = t->pipes[1][1] = -1;
    uv_poll_init_socket(t->w->loop, &t->dpoll, t->dfd);
    uv_poll_init_socket(t->w->loop, &t->upoll, t->ufd);
    t->dpoll.data = t->upoll.data = t;
    t->handles += 2;
    t->spliced = true;
    t->d_open = t->u_init = false;
    uv_close((uv_handle_t *)&t->d, on_closed); /* the dup'ed descriptors keep the sockets */
    uv_close((uv_handle_t *)&t->u, on_closed);
    t->up.start = t->up.end = t->down.start = t->down.end = 0;
    proxy_rbuf_put(t->w, &t->up);
    proxy_rbuf_put(t->w, &t->down);
    sp_pump(t, 0);
    if (t->state == T_RELAY) {
        sp_pump(t, 1);
    }
    sp_update(t);
}

/* ---- choosing the destination ---- */

static bool port_in(uint16_t port, const uint16_t *ports, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ports[i] == port) {
            return true;
        }
    }
    return false;
}

/* Whether TCP route <r> takes the connection (<hello>: its ClientHello, NULL when not TLS). */
static bool route_takes(const struct proxy_tcp_route *r, uint16_t port,
                        const struct proxy_hello *hello)
{
    if (r->nports && !port_in(port, r->ports, r->nports)) {
        return false;
    }
    if ((r->transport == PROXY_TP_TLS && !hello) || (r->transport == PROXY_TP_RAW && hello)) {
        return false;
    }
    if (r->nserver_names) {
        bool any = false;
        for (size_t i = 0; hello && !any && i < r->nserver_names; i++) {
            any = proxy_sni_match(r->server_names[i], hello->sni);
        }
        if (!any) {
            return false;
        }
    }
    if (r->nalpn) {
        bool any = false;
        for (size_t i = 0; hello && !any && i < r->nalpn; i++) {
            for (size_t k = 0; !any && k < hello->nalpn; k++) {
                any = strcmp(r->alpn[i], hello->alpn[k]) == 0;
            }
        }
        if (!any) {
            return false;
        }
    }
    return true;
}

/* Authorization of a relayed connection on an inbound listener, with Istio's TCP semantics
 * (proxy_az_req.tcp): the policies see the connection's source, destination address and port
 * and the ClientHello's SNI; a DENY rule's HTTP-only fields are ignored (more is denied), an
 * ALLOW rule with them never matches, and the peer's mTLS identity is absent (the relay does not
 * terminate TLS). A CUSTOM policy (an HTTP external authorizer) cannot judge bytes: denied.
 * Returns true when the connection may go on. */
static bool tcp_authorized(struct proxy_tcp *t)
{
    const struct proxy_authz *az = t->rt->authz;
    if (!t->lsn->inbound || !az) {
        return true;
    }
    struct proxy_az_req rq = { .sni = sc_str_c(t->sni), .tcp = true };
    if (t->dx) {
        rq.principal = sc_xport_query_str(t->dx, SC_XQ_PEER_ID);
        if (sc_str_startswith(rq.principal, SC_STR("spiffe://"))) {
            rq.principal.p += 9;
            rq.principal.len -= 9;
        }
    }
    proxy_az_ip_from_sa(&t->peer, &rq.source);
    struct sockaddr_storage dst;
    socklen_t len = sizeof(dst);
    uv_os_fd_t fd = -1;
    if (t->has_orig) {
        dst = t->orig;
    } else if ((t->dx ? sc_xport_query(t->dx, SC_XQ_FD, &fd)
                      : uv_fileno((uv_handle_t *)&t->d, &fd)) < 0 ||
               getsockname(fd, (struct sockaddr *)&dst, &len) < 0) {
        memset(&dst, 0, sizeof(dst));
    }
    proxy_az_ip_from_sa(&dst, &rq.dest);
    rq.dport = t->port;
    struct proxy_az_decision d;
    proxy_authz_eval(az, &rq, &d);
    if (d.ext || d.result != PROXY_AZ_RES_ALLOW) {
        t->flags |= d.ext ? F_UAEX : F_RBAC;
        return false;
    }
    return true;
}

/* The upstream chain's callbacks (a cluster that originates TLS): reads fill the block of the
 * direction to the client, writes finish the direction to the upstream. */
static void u_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_tcp *t = owner;
    block_for(t, &t->down, buf);
}

static void u_read(void *owner, ssize_t nread)
{
    relay_read(owner, &((struct proxy_tcp *)owner)->u, nread);
}

static void u_write_done(void *owner, int status)
{
    struct proxy_tcp *t = owner;
    write_done(t, dir_up(t), status);
}

static void u_connected(void *owner, int status)
{
    connected(owner, status);
}

static void u_closed(void *owner)
{
    closed_one(owner);
}

static const struct sc_xport_cbs ucbs = { u_alloc, u_read, u_write_done, u_connected, u_closed };

/* The cluster of route <r>: its one, or one of its weighted clusters drawn by weight. */
static struct proxy_cluster *route_cluster(const struct proxy_tcp_route *r, struct proxy_worker *w)
{
    if (r->nwc == 0 || r->cum[r->nwc - 1] == 0) {
        return r->cluster;
    }
    uint32_t x = (uint32_t)(proxy_rand(w) % r->cum[r->nwc - 1]);
    size_t k = 0;
    while (k + 1 < r->nwc && x >= r->cum[k]) {
        k++;
    }
    return r->wc[k];
}

/* The client's address and port and the destination address (original, else local) of <t>. */
static void addresses(struct proxy_tcp *t, struct proxy_az_ip *src, uint16_t *sport,
                      struct proxy_az_ip *dst)
{
    proxy_az_ip_from_sa(&t->peer, src);
    *sport =
        ntohs(t->peer.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&t->peer)->sin6_port
                                            : ((const struct sockaddr_in *)&t->peer)->sin_port);
    struct sockaddr_storage local;
    int len = sizeof(local);
    if (t->has_orig) {
        proxy_az_ip_from_sa(&t->orig, dst);
    } else if (uv_tcp_getsockname(&t->d, (struct sockaddr *)&local, &len) == 0) {
        proxy_az_ip_from_sa(&local, dst);
    }
}

/* Routes and connects a connection to be relayed. */
static void relay_connect(struct proxy_tcp *t, const struct proxy_hello *hello)
{
    struct proxy_listener_icpt *ic = &t->lsn->icpt;
    struct proxy_worker *w = t->w;
    t->cluster = ic->cluster;
    t->route = "";
    struct proxy_az_ip src = { 0 }, dst = { 0 };
    uint16_t sport = 0;
    if (ic->by_addr) {
        addresses(t, &src, &sport, &dst);
    }
    for (size_t i = 0; i < ic->nroutes; i++) {
        const struct proxy_tcp_route *r = &ic->routes[i];
        if (route_takes(r, t->port, hello) &&
            (!r->am || proxy_addr_match_takes(r->am, &src, sport, &dst))) {
            t->cluster = route_cluster(&ic->routes[i], w);
            t->route = ic->routes[i].name;
            break;
        }
    }
    sc_metrics_counter_inc(ic->m_total);
    sc_metrics_gauge_add(ic->m_active, 1);
    sc_metrics_counter_add(ic->m_rx, t->rx); /* what detection read */
    t->counted = true;
    t->state = T_CONNECTING;
    if (!tcp_authorized(t)) {
        tcp_close(t);
        return;
    }
    struct proxy_cluster *c = t->cluster;
    if (!c || c->original_dst) {
        if (!t->has_orig) {
            t->flags |= F_NR; /* nowhere to go: not redirected and no cluster */
            tcp_close(t);
            return;
        }
        t->uaddr = t->orig;
    } else {
        t->ep = proxy_pick_endpoint(w, c, NULL);
        if (!t->ep || proxy_endpoint_addr(t->ep, &t->uaddr) < 0) {
            t->flags |= F_UH;
            tcp_close(t);
            return;
        }
    }
    if (c) {
        if (!proxy_breaker_connect(c)) {
            t->flags |= F_UO;
            tcp_close(t);
            return;
        }
        t->bk_cx = t->bk_pending = true;
    }
    int rc;
    if (c && c->tls.src) {
        /* the cluster originates TLS (mesh mTLS): a chain whose connect includes the handshake */
        t->utx = SC_NEW(struct sc_tcp_xport);
        sc_tcp_xport_init(t->utx, w->loop, &ucbs, t);
        t->handles++;
        t->ux = proxy_tls_relay_layer(c, t->ep, (const struct sockaddr *)&t->uaddr, w->loop,
                                      &t->utx->base);
        rc = proxy_icpt_bind(&t->utx->tcp, c, t->uaddr.ss_family);
        if (rc == 0) {
            rc = sc_xport_connect(t->ux, (const struct sockaddr *)&t->uaddr);
        }
    } else {
        uv_tcp_init(w->loop, &t->u);
        t->u.data = t;
        t->u_init = true;
        t->handles++;
        rc = proxy_icpt_bind(&t->u, c, t->uaddr.ss_family);
        if (rc == 0) {
            t->creq.data = t;
            rc = uv_tcp_connect(&t->creq, &t->u, (const struct sockaddr *)&t->uaddr, on_connect);
        }
    }
    if (rc < 0) {
        sc_warn("tcp upstream connect failed", SC_LS("listener", t->lsn->name), SC_LERR(rc));
        t->flags |= F_UF;
        tcp_close(t);
        return;
    }
    uint64_t cto = c ? c->connect_timeout_ms : ic->connect_timeout_ms;
    uv_timer_start(&t->timer, on_timer, cto ? cto : 10000, 0);
}

/* Hands the connection to the HTTP/1 codec with the bytes read so far. */
static void to_http1(struct proxy_tcp *t)
{
    if (t->dx) {
        /* mesh mTLS: the HTTP/1 connection takes the chain with its established session */
        struct sc_tcp_xport *bottom = t->dtx;
        struct sc_xport *top = t->dx;
        sc_xport_read_stop(top);
        t->dtx = NULL;
        t->dx = NULL;
        t->handles--; /* the chain's close is the HTTP/1 connection's now */
        proxy_h1_adopt_tls(t->w, t->lidx, bottom, top, &t->peer, t->peer_ip,
                           t->up.p ? t->up.p + t->up.start : NULL, t->up.end - t->up.start);
        t->up.start = t->up.end = 0;
        tcp_close(t);
        return;
    }
    uv_os_fd_t fd;
    int nfd = -1;
    if (uv_fileno((uv_handle_t *)&t->d, &fd) == 0) {
        nfd = dup(fd);
    }
    if (nfd < 0) {
        sc_warn("cannot hand a connection to HTTP/1", SC_LERR(-errno));
        tcp_close(t);
        return;
    }
    (void)uv_read_stop((uv_stream_t *)&t->d);
    proxy_h1_adopt(t->w, t->lidx, nfd, &t->peer, t->peer_ip, t->up.p ? t->up.p + t->up.start : NULL,
                   t->up.end - t->up.start);
    t->up.start = t->up.end = 0;
    tcp_close(t); /* closes this descriptor; the socket lives on in the HTTP/1 connection */
}

/* The protocol is known: HTTP/1 goes to the HTTP path, everything else is relayed. */
static void decide(struct proxy_tcp *t, enum proxy_proto proto, const struct proxy_hello *hello)
{
    if (proto == PROXY_PROTO_MORE) {
        proto = PROXY_PROTO_TCP;
    }
    t->proto = proto;
    src_stop(t, &t->d);
    switch (proto) {
    case PROXY_PROTO_HTTP1:
        if (t->lsn->nroutes == 0) {
            break; /* no HTTP routes to give it to: relayed by tcp_routes like the rest */
        }
        to_http1(t);
        return;
    case PROXY_PROTO_H2C:
        /* Prior-knowledge HTTP/2 goes to the HTTP path, whose preface check hands it to the
         * HTTP/2 codec; a listener with HTTP/2 off relays it as bytes. */
        if (t->w->rt->listeners[t->lidx].http2.enabled && t->lsn->nroutes > 0) {
            to_http1(t);
            return;
        }
        break;
    case PROXY_PROTO_TLS:
        if (hello && !t->dx) {
            memcpy(t->sni, hello->sni, sizeof(t->sni));
        }
        break;
    default:
        break;
    }
    relay_connect(t, hello);
}

/* Decides by the listener's protocol or the port lists, without reading. Otherwise arms the
 * detection timer and returns false: the first bytes decide. Under PERMISSIVE, a connection the
 * listener or port makes opaque is read too (t->peek), for a ClientHello of the mesh only. */
static bool decide_unread(struct proxy_tcp *t)
{
    const struct proxy_listener_icpt *ic = &t->lsn->icpt;
    if (ic->protocol == PROXY_LP_TCP || port_in(t->port, ic->opaque, ic->nopaque)) {
        t->how = ic->protocol == PROXY_LP_TCP ? DET_LISTENER : DET_PORT;
        t->peek = t->permissive && !t->mesh;
        if (!t->peek) {
            decide(t, PROXY_PROTO_TCP, NULL);
            return true;
        }
    } else if (port_in(t->port, ic->http, ic->nhttp)) {
        t->how = DET_PORT;
        decide(t, PROXY_PROTO_HTTP1, NULL);
        return true;
    }
    uint64_t to = ic->detect_timeout_ms ? ic->detect_timeout_ms : ic->idle_timeout_ms;
    if (to) {
        uv_timer_start(&t->timer, on_timer, to, 0);
    } else {
        uv_timer_stop(&t->timer);
    }
    return false;
}

/* ---- mesh mTLS (STRICT, or PERMISSIVE and the mesh's ALPN) ---- */

/* The client chain's callbacks: reads and writes go to the relay (or to detection while it
 * decides), the end of the handshake is counted and checked, the close is one of the handles. */
static void x_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_tcp *t = owner;
    block_for(t, &t->up, buf);
}

static void x_read(void *owner, ssize_t nread)
{
    relay_read(owner, &((struct proxy_tcp *)owner)->d, nread);
}

static void x_write_done(void *owner, int status)
{
    struct proxy_tcp *t = owner;
    write_done(t, dir_down(t), status);
}

static void x_handshake(void *owner, int status)
{
    struct proxy_tcp *t = owner;
    if (t->state == T_CLOSING) {
        return;
    }
    enum sc_tls_fail f = status < 0 ? sc_tls_xport_fail(t->dx) : SC_TLS_FAIL_NONE;
    if (status < 0 && f == SC_TLS_FAIL_NONE) {
        f = SC_TLS_FAIL_HANDSHAKE;
    }
    sc_metrics_counter_inc(t->lsn->tls.m_hs[f]);
    if (status < 0) {
        sc_debug("tls handshake failed", SC_LS("listener", t->lsn->name), SC_LS("peer", t->peer_ip),
                 SC_LS("reason", sc_tls_fail_name(f)));
        t->tls_fail = sc_tls_fail_name(f);
        tcp_close(t);
        return;
    }
    bool native = false;
    (void)sc_xport_query(t->dx, SC_XQ_TLS_NATIVE, &native);
    sc_metrics_counter_inc(t->lsn->tls.m_records[native]);
    t->hs_done = true;
    (void)decide_unread(t); /* else detected on the decrypted bytes */
}

static void x_closed(void *owner)
{
    closed_one(owner);
}

static const struct sc_xport_cbs xcbs = { x_alloc, x_read, x_write_done, x_handshake, x_closed };

/* A ClientHello arrived: the client's socket moves into a chain with a TLS layer fed the bytes
 * read so far; the handshake starts. */
static void mesh_start(struct proxy_tcp *t)
{
    uv_os_fd_t fd;
    int nfd = uv_fileno((uv_handle_t *)&t->d, &fd) == 0 ? dup(fd) : -1;
    if (nfd < 0) {
        sc_warn("tcp listener: no descriptor to terminate TLS", SC_LERR(-errno));
        tcp_close(t);
        return;
    }
    (void)uv_read_stop((uv_stream_t *)&t->d);
    t->proto = PROXY_PROTO_TLS; /* until the protocol inside is known */
    t->dtx = SC_NEW(struct sc_tcp_xport);
    sc_tcp_xport_init(t->dtx, t->w->loop, &xcbs, t);
    t->handles++;
    t->d_open = false;
    uv_close((uv_handle_t *)&t->d, on_closed); /* the dup keeps the socket */
    if (uv_tcp_open(&t->dtx->tcp, nfd) < 0) {
        close(nfd);
        t->dx = &t->dtx->base;
        tcp_close(t);
        return;
    }
    struct sc_tls_ctx *ctx = proxy_tls_listener_ctx(&t->lsn->tls);
    struct sc_tls_xport_args a = {
        .loop = t->w->loop,
        .below = &t->dtx->base,
        .cbs = &xcbs,
        .owner = t,
        .preread = sc_str_n(t->up.p + t->up.start, t->up.end - t->up.start),
        .handshake_cb = true,
    };
    t->dx = sc_tls_xport_new(ctx, &a);
    sc_tls_ctx_unref(ctx);
    t->up.start = t->up.end = 0; /* the layer copied them */
    (void)sc_xport_read_start(t->dx);
}

/* The first bytes on a STRICT listener: a ClientHello starts the handshake (once it is whole),
 * anything else is closed. */
static void mesh_first_bytes(struct proxy_tcp *t)
{
    size_t n = t->up.end - t->up.start;
    enum sc_tls_sniff s = sc_tls_sniff(t->up.p + t->up.start, n);
    if (s == SC_TLS_SNIFF_MORE) {
        return;
    }
    if (s == SC_TLS_SNIFF_PLAIN) {
        sc_metrics_counter_inc(t->lsn->tls.m_hs[SC_TLS_FAIL_NOT_TLS]);
        sc_debug("plaintext on a STRICT mTLS listener; connection closed",
                 SC_LS("listener", t->lsn->name), SC_LS("peer", t->peer_ip));
        t->tls_fail = sc_tls_fail_name(SC_TLS_FAIL_NOT_TLS);
        enum proxy_proto p = proxy_detect((const uint8_t *)t->up.p + t->up.start, n, NULL);
        t->proto = p == PROXY_PROTO_MORE ? PROXY_PROTO_TCP : p; /* what it was, for the log */
        tcp_close(t);
        return;
    }
    struct proxy_hello hello;
    enum proxy_proto p = proxy_detect((const uint8_t *)t->up.p + t->up.start, n, &hello);
    if (p == PROXY_PROTO_MORE && n < t->up.cap) {
        return; /* the SNI is wanted for the log and the policies */
    }
    if (p == PROXY_PROTO_TLS) {
        memcpy(t->sni, hello.sni, sizeof(t->sni));
    }
    mesh_start(t);
}

static void on_detect_read(struct proxy_tcp *t, ssize_t nread)
{
    if (nread < 0 && t->mesh && !t->hs_done) {
        t->tls_fail = sc_tls_fail_name(SC_TLS_FAIL_PEER_CLOSED);
        tcp_close(t);
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            tcp_close(t);
            return;
        }
        /* The client ended its side before the protocol was clear: relay what it sent. */
        t->d_eof = true;
        t->how = DET_EOF;
        decide(t, PROXY_PROTO_TCP, NULL);
        return;
    }
    t->up.end += (size_t)nread;
    if (t->mesh && !t->dx) {
        mesh_first_bytes(t);
        return;
    }
    t->rx += (uint64_t)nread; /* counted in the metrics once relayed (decrypted, under mTLS) */
    struct proxy_hello hello;
    size_t n = t->up.end - t->up.start;
    enum sc_tls_sniff k = t->peek ? sc_tls_sniff(t->up.p + t->up.start, n) : SC_TLS_SNIFF_TLS;
    if (k == SC_TLS_SNIFF_MORE) {
        return;
    }
    if (k == SC_TLS_SNIFF_PLAIN) {
        decide(t, PROXY_PROTO_TCP, NULL); /* not TLS: bytes, as the port says */
        return;
    }
    enum proxy_proto p = proxy_detect((const uint8_t *)t->up.p + t->up.start, n, &hello);
    if (p == PROXY_PROTO_MORE && n < t->up.cap) {
        return;
    }
    if (!t->peek) {
        t->how = DET_BYTES;
    }
    if (p == PROXY_PROTO_TLS && t->permissive && !t->dx) {
        for (size_t i = 0; i < hello.nalpn; i++) {
            if (proxy_tls_mesh_alpn(hello.alpn[i])) {
                memcpy(t->sni, hello.sni, sizeof(t->sni));
                t->mesh = true;
                t->rx = 0; /* the relay counts decrypted bytes */
                mesh_start(t);
                return;
            }
        }
    }
    if (t->peek) {
        decide(t, PROXY_PROTO_TCP, NULL); /* the application's own TLS: bytes, as the port says */
        return;
    }
    decide(t, p, p == PROXY_PROTO_TLS ? &hello : NULL);
}

/* ---- accepting ---- */

void proxy_tcp_on_accept(uv_stream_t *server, int status)
{
    struct proxy_worker *w = server->data;
    if (status < 0) {
        sc_warn("accept failed", SC_LERR(status));
        return;
    }
    struct proxy_tcp *t = SC_NEW(struct proxy_tcp);
    t->w = w;
    t->rt = proxy_rt_ref(w->rt);
    t->lidx = (size_t)((uv_tcp_t *)server - w->listeners);
    t->lsn = &t->rt->listeners[t->lidx];
    t->start_ns = proxy_now_ns();
    uv_tcp_init(w->loop, &t->d);
    t->d.data = t;
    t->d_open = true;
    uv_timer_init(w->loop, &t->timer);
    t->timer.data = t;
    t->handles = 2;
    sc_list_append(&w->tcps, &t->node);
    w->ntcps++;
    int conns = atomic_fetch_add_explicit(&w->px->conns, 1, memory_order_relaxed);
    t->state = T_DETECT;
    if (uv_accept(server, (uv_stream_t *)&t->d) < 0) {
        tcp_close(t);
        return;
    }
    if (conns >= t->rt->max_connections) {
        sc_warn("max_connections reached; connection refused",
                SC_LI("max_connections", t->rt->max_connections));
        tcp_close(t);
        return;
    }
    sc_tcp_peer_ip(&t->d, &t->peer, t->peer_ip, sizeof(t->peer_ip));
    uv_os_fd_t fd;
    struct sockaddr_storage local;
    local.ss_family = AF_UNSPEC;
    if (uv_fileno((uv_handle_t *)&t->d, &fd) == 0) {
        t->has_orig = proxy_sock_original_dst(fd, &t->orig, &local);
    }
    if (t->has_orig) {
        t->port =
            ntohs(t->orig.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&t->orig)->sin6_port
                                                : ((const struct sockaddr_in *)&t->orig)->sin_port);
    } else if (local.ss_family == AF_INET || local.ss_family == AF_INET6) {
        t->port =
            ntohs(local.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&local)->sin6_port
                                              : ((const struct sockaddr_in *)&local)->sin_port);
    }
    /* TCP_NODELAY comes from the listener (sc_tcp_listen). */
    const struct proxy_listener_icpt *ic = &t->lsn->icpt;
    const struct proxy_listener_tls *lt = &t->lsn->tls;
    int mode = !lt->src      ? PROXY_MTLS_DISABLE
               : lt->by_port ? proxy_pa_mode_for(&lt->pa, t->port)
                             : lt->mode;
    t->permissive = mode == PROXY_MTLS_PERMISSIVE;
    if (mode == PROXY_MTLS_STRICT) {
        /* every connection is mesh mTLS: the port lists apply to what is inside */
        t->mesh = true;
        uint64_t to = ic->detect_timeout_ms ? ic->detect_timeout_ms : ic->idle_timeout_ms;
        uv_timer_start(&t->timer, on_timer, to ? to : 10000, 0);
        (void)uv_read_start((uv_stream_t *)&t->d, on_alloc, on_read);
        return;
    }
    if (!decide_unread(t)) {
        (void)uv_read_start((uv_stream_t *)&t->d, on_alloc, on_read);
    }
}
