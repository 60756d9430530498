// SPDX-License-Identifier: Apache-2.0
// Upstream HTTP/2: a cluster's `protocol` (http1, http2 with prior knowledge, or auto: h2 when TLS
// ALPN selects it), one nghttp2 client session per upstream connection, and each try of an
// exchange carried as one stream.
//
// A stream looks like an HTTP/1 upstream connection to the rest of the proxy: it is a struct
// proxy_uconn whose transport (uc->x) is the stream. The HTTP/1 codec (proxy_h1.c) writes the
// request head and body into it as HTTP/1 bytes; the stream turns the head into a HEADERS frame
// (the head's fields through the HTTP/2 header sink of proxy_h2_msg.c) and the body into DATA
// (chunked framing removed, trailers sent as HTTP/2 trailers), keeping what it was given until
// nghttp2 sends it (a write stays pending while more than a window is queued: backpressure). The
// response comes back as HTTP/1 bytes: the received header block, checked by proxy_h2_head, is
// written as an HTTP/1.1 head (Transfer-Encoding: chunked when it has no Content-Length), DATA as
// the body (chunk-framed then) and trailers as the chunked trailer section. So routing, retries,
// timeouts, head rewriting and the response path stay those of HTTP/1, and a stream ends, fails or
// is cancelled exactly as a connection would (RST_STREAM when the proxy gives it up).
//
// Flow control: automatic WINDOW_UPDATE is off; received DATA is acknowledged only once it was
// handed on to the exchange, which stops taking it while its client is slow. So a stream buffers at
// most its window (initial_stream_window_size) and the connection at most its own window.
//
// Connections are pooled per endpoint and worker (proxy_pool.h2) and shared by up to
// min(our max_concurrent_streams, the peer's SETTINGS_MAX_CONCURRENT_STREAMS) streams; a try that
// finds none with a free stream waits for a connecting one with room (proxy_h2_wait.c), else
// opens a new connection (proxy_upstream.c). An idle one stays for the cluster's idle_timeout
// (up to max_idle idle per endpoint). GOAWAY takes a
// connection out of the pool: its streams above last_stream_id fail as refused (retried as safe:
// the server did not process them), the others finish. A PING every keepalive_interval checks a
// connection that is quiet, and one unanswered for keepalive_timeout closes it.
//
// Callbacks into the exchange never run inside an nghttp2 callback nor inside a call the exchange
// made into the stream: nghttp2 callbacks record what happened on the stream, and the connection
// runs the recorded events afterwards (after a read, or on its `kick` idle handle).
#include <stdio.h>
#include <string.h>

#include "net/nghttp2.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/transport.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_grpc_web.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_policy.h"

#define H2_RBUF 16384
#define H2_WBUF 65536
/* A request body queued for DATA beyond this keeps the stream's write pending. */
#define H2_OUT_HIGH 65536

struct proxy_h2_stream {
    struct sc_xport x; /* the stream as the transport of its struct proxy_uconn */
    struct proxy_h2_conn *hc;
    struct proxy_uconn *uc; /* the owner; NULL once it let go of the stream */
    struct sc_list node;    /* hc->streams */
    struct sc_list rnode;   /* hc->ready: events to run */
    bool ready;
    int32_t id; /* 0: no HEADERS submitted yet */
    /* request: HTTP/1 head and body in, HEADERS/DATA/trailers out */
    bool submitted;
    bool req_end;   /* the whole body is in <out> */
    bool req_sent;  /* END_STREAM went out */
    bool deferred;  /* the data provider waits for more */
    bool wpending;  /* a write returned 1: write_done is owed */
    bool wdone_due; /* and is due now */
    int body;       /* B_NONE, B_LENGTH, B_CHUNKED */
    uint64_t remaining;
    struct sc_http1_chunked ch;
    struct sc_buf tail; /* framing after the last chunk's data: the trailer section */
    struct sc_buf out;  /* body bytes not yet sent as DATA */
    size_t out_off;
    struct proxy_h2_out *trailers; /* request trailers to send after the body */
    /* response: HEADERS/DATA/trailers in, HTTP/1 bytes out */
    bool reading;
    bool got_head; /* the final response head was written to <rx> */
    bool chunked;  /* the body is written chunk-framed */
    bool resp_end; /* END_STREAM received */
    bool h2closed; /* nghttp2 closed the stream */
    bool busy;     /* a callback into the exchange runs: closing defers the free */
    int err;       /* the failure to report once <rx> is delivered (a UV_* code), 0: none */
    bool refused;  /* the server did not process it (REFUSED_STREAM, above GOAWAY's last id) */
    const char *why;
    struct sc_buf rx;
    size_t rx_off;
    size_t unconsumed;         /* DATA bytes received and not yet acknowledged */
    struct proxy_grpc_web *gw; /* a gRPC-Web request translated to gRPC (proxy_grpc_web.c) */
};

struct proxy_h2_conn {
    struct proxy_uconn *uc; /* the connection: transport, endpoint, breakers, timer */
    struct proxy_worker *w;
    struct proxy_pool *pool; /* NULL: not shared (a request's own destination) */
    nghttp2_session *s;
    const struct proxy_h2_up_cluster *cfg;
    struct sc_list node; /* pool->h2 */
    bool pooled;
    struct sc_list streams; /* every struct proxy_h2_stream not yet freed */
    struct sc_list ready;
    uint32_t nstreams; /* streams with an owner */
    uv_idle_t kick;
    bool kicked;
    bool running;
    bool again;
    bool dead; /* failed or closing: takes nothing more */
    bool logged;
    bool closing; /* its handles are closing: no more kicks */
    bool goaway;  /* the peer sent GOAWAY (or we did): no new streams */
    bool wpending;
    uint64_t last_rx;
    uint64_t ping_sent; /* loop time of the PING awaiting its ACK, 0: none */
    uint64_t idle_since;
    const char *why;
    struct proxy_h2_head hd; /* the header block being received (blocks never interleave) */
    struct proxy_h2_out o;
    char rbuf[H2_RBUF];
    struct sc_buf wbuf;
};

static const struct sc_xport_cbs h2cbs;
static void conn_run(struct proxy_h2_conn *hc);
static void conn_kick(struct proxy_h2_conn *hc);
static void conn_fail(struct proxy_h2_conn *hc, const char *why);
static void fail_streams(struct proxy_h2_conn *hc, bool keep_complete);
static void on_kick(uv_idle_t *h);
static void conn_arm(struct proxy_h2_conn *hc);
static void stream_free(struct proxy_h2_stream *st);
static bool stream_maybe_free(struct proxy_h2_stream *st);

/* ---- options ---- */

static const char *const protocols[] = { "http1", "http2", "auto", NULL };

static const struct sc_opt h2_opts[] = {
    { .name = "max_concurrent_streams",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, max_concurrent_streams),
      .def = "100",
      .help = "streams one connection carries at once (also bounded by the server's "
              "SETTINGS_MAX_CONCURRENT_STREAMS); more open another connection",
      .min = 1,
      .max = 1000000 },
    { .name = "initial_stream_window_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, initial_stream_window_size),
      .def = "64KiB",
      .help = "response bytes a stream may receive before the proxy has passed them on "
              "(flow control)",
      .min = 65535,
      .max = 2147483647 },
    { .name = "initial_connection_window_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, initial_connection_window_size),
      .def = "1MiB",
      .help = "the same for all the streams of a connection together",
      .min = 65535,
      .max = 2147483647 },
    { .name = "max_header_list_size",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, max_header_list_size),
      .def = "64KiB",
      .help = "largest response header block (names, values and 32 bytes per field); a larger "
              "one fails the try (502)",
      .min = 1024,
      .max = 16777216 },
    { .name = "keepalive_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, keepalive_interval_ms),
      .def = "0s",
      .help = "a connection quiet this long is sent a PING (0: never)" },
    { .name = "keepalive_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_h2_up_opts_cfg, keepalive_timeout_ms),
      .def = "20s",
      .help = "a PING not answered within this closes the connection (its streams fail as "
              "reset)",
      .min = 1 },
    { 0 },
};

const struct sc_opt proxy_h2_up_cluster_opts[] = {
    { .name = "protocol",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_h2_up_cfg, protocol),
      .def = "http1",
      .help = "http1, http2 (prior knowledge, or TLS offering ALPN h2) or auto (HTTP/2 when TLS "
              "ALPN selects h2, else HTTP/1.1)",
      .enums = protocols },
    { .name = "http2",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_h2_up_cfg, http2),
      .help = "HTTP/2 connections to the cluster (protocol http2 or auto)",
      .sub = h2_opts },
    { 0 },
};

void proxy_h2_up_metrics_init(struct proxy_metrics *pm)
{
    static const char *const labels[] = { "cluster", "event", NULL };
    pm->h2_events = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_http2_events_total",
        "Events on HTTP/2 upstream connections: goaway (received), refused and reset (streams "
        "the server refused or reset), protocol_error (a malformed answer or session), "
        "ping_timeout (an unanswered keepalive PING).",
        labels, NULL, 0);
}

void proxy_h2_up_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc,
                              struct proxy_metrics *pm)
{
    static const char *const ev[PROXY_H2E_N] = { "goaway", "refused", "reset", "protocol_error",
                                                 "ping_timeout" };
    const struct proxy_h2_up_opts_cfg *o = cc ? &cc->h2up.http2 : NULL;
    struct proxy_h2_up_cluster *h = &c->h2up;
    h->protocol = cc ? cc->h2up.protocol : PROXY_UP_HTTP1;
    h->max_streams = o && o->max_concurrent_streams > 0 ? (uint32_t)o->max_concurrent_streams : 100;
    h->stream_window =
        o && o->initial_stream_window_size ? (uint32_t)o->initial_stream_window_size : 65536;
    h->conn_window = o && o->initial_connection_window_size
                         ? (uint32_t)o->initial_connection_window_size
                         : 1048576;
    h->max_header_list =
        o && o->max_header_list_size ? (uint32_t)o->max_header_list_size : PROXY_H2_MAX_HEADER_LIST;
    h->ka_interval_ms = o ? o->keepalive_interval_ms : 0;
    h->ka_timeout_ms = o && o->keepalive_timeout_ms ? o->keepalive_timeout_ms : 20000;
    if (c->original_dst) {
        h->protocol = PROXY_UP_HTTP1; /* each request's own destination: not pooled by name */
    }
    for (int i = 0; i < PROXY_H2E_N && h->protocol != PROXY_UP_HTTP1; i++) {
        const char *lv[] = { c->name, ev[i] };
        h->m_ev[i] = sc_metrics_get(pm->h2_events, lv);
    }
}

void proxy_h2_up_alpn(const struct proxy_cluster_cfg *cc, struct sc_strv *alpn)
{
    static char *h2[] = { "h2" };
    static char *both[] = { "h2", "http/1.1" };
    if (!cc || alpn->n || cc->type == PROXY_CLUSTER_ORIGINAL_DST) {
        return;
    }
    if (cc->h2up.protocol == PROXY_UP_HTTP2) {
        alpn->v = h2;
        alpn->n = 1;
    } else if (cc->h2up.protocol == PROXY_UP_AUTO) {
        alpn->v = both;
        alpn->n = 2;
    }
}

/* ---- the stream as a transport (what the HTTP/1 codec reads and writes) ---- */

static void ready_push(struct proxy_h2_stream *st)
{
    if (!st->ready && st->hc) {
        st->ready = true;
        sc_list_append(&st->hc->ready, &st->rnode);
    }
}

static void ready_drop(struct proxy_h2_stream *st)
{
    if (st->ready) {
        st->ready = false;
        sc_list_remove(&st->rnode);
    }
}

static int st_read_start(struct sc_xport *x)
{
    struct proxy_h2_stream *st = (struct proxy_h2_stream *)x;
    st->reading = true;
    if (st->hc && (st->rx_off < st->rx.len || st->err)) {
        ready_push(st);
        conn_kick(st->hc);
    } else if (!st->hc && st->uc) {
        /* The connection went away: the failure is reported as a read would. */
        st->err = st->err ? st->err : UV_ECONNRESET;
    }
    return 0;
}

static void st_read_stop(struct sc_xport *x)
{
    ((struct proxy_h2_stream *)x)->reading = false;
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud);

/* The HTTP/1 request head <h> (as proxy_build_req_head wrote it) becomes a HEADERS frame. */
static int submit_head(struct proxy_h2_stream *st, struct sc_str h)
{
    struct proxy_h2_conn *hc = st->hc;
    struct sc_http_header hdrs[MAX_HEADERS];
    struct sc_http_msg m = { .headers = hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http1_default_limits;
    lim.max_head = (uint32_t)h.len + 1;
    int rc = sc_http1_parse_request(h.p, h.len, 0, &lim, &m, MAX_HEADERS, &err);
    if (rc <= 0 || (size_t)rc != h.len) {
        st->why = "request head not translatable to HTTP/2";
        return UV_EPROTO;
    }
    bool tls = hc->uc->ep->cluster->tls.src != NULL;
    struct proxy_hsink sk = proxy_h2_out_sink(&hc->o, tls ? SC_STR("https") : SC_STR("http"), 0);
    if (st->uc && st->uc->ex && st->uc->ex->lsn && st->uc->ex->lsn->grpc_web) {
        st->gw = proxy_grpc_web_request(&m);
    }
    int e = sk.ops->request(&sk, m.method, m.target);
    bool te = false;
    for (size_t i = 0; i < m.nheaders; i++) {
        struct sc_str v = m.headers[i].value;
        if (st->gw && !proxy_grpc_web_req_field(st->gw, m.headers[i].name, &v)) {
            continue;
        }
        te = te || sc_str_caseeq(m.headers[i].name, SC_STR("te"));
        e |= sk.ops->header(&sk, m.headers[i].name, v);
    }
    const struct sc_http_header *ct = sc_http1_find(&m, SC_STR("content-type"), NULL);
    bool te_trailers = st->uc && st->uc->ex && st->uc->ex->te_trailers;
    if (!te && (te_trailers || st->gw || (ct && proxy_grpc_is(ct->value)))) {
        /* The HTTP/1 head cannot carry it (hop-by-hop there): the client's "te: trailers"
         * (RFC 9113 section 8.2.2), and gRPC servers require it. */
        e |= sk.ops->header(&sk, SC_STR("te"), SC_STR("trailers"));
    }
    e |= sk.ops->end(&sk);
    nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
    int n = e ? -1 : proxy_h2_out_nv(&hc->o, nv, SC_ARRAY_LEN(nv));
    if (n < 0) {
        st->why = "request head too large for HTTP/2";
        return UV_EPROTO;
    }
    st->body = m.body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
               : m.body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                                                : B_NONE;
    st->remaining = m.content_length;
    if (st->body == B_LENGTH && st->remaining == 0) {
        st->body = B_NONE;
    }
    if (st->body == B_CHUNKED) {
        sc_http1_chunked_init(&st->ch);
    }
    st->req_end = st->body == B_NONE;
    nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read };
    int32_t id =
        nghttp2_submit_request(hc->s, NULL, nv, (size_t)n, st->body == B_NONE ? NULL : &prd, st);
    if (id < 0) {
        st->refused = id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;
        hc->goaway = hc->goaway || st->refused;
        st->why = nghttp2_strerror(id);
        return UV_ECONNRESET;
    }
    st->id = id;
    st->submitted = true;
    st->req_sent = st->body == B_NONE;
    return 0;
}

/* The framing after a chunked body's last data: "\r\n" (the end of the last chunk, when it was
 * not consumed with its data), "0[;ext]\r\n", the trailer fields, "\r\n". */
static int take_trailers(struct proxy_h2_stream *st)
{
    struct sc_str t = sc_str_n(st->tail.p, st->tail.len);
    if (t.len >= 2 && t.p[0] == '\r' && t.p[1] == '\n') {
        t = sc_str_n(t.p + 2, t.len - 2);
    }
    const char *eol = memchr(t.p, '\n', t.len);
    if (!eol) {
        return 0;
    }
    t = sc_str_n(eol + 1, t.len - (size_t)(eol + 1 - t.p));
    if (t.len <= 2) {
        return 0; /* no trailer fields */
    }
    st->trailers = SC_NEW(struct proxy_h2_out);
    struct proxy_hsink sk = proxy_h2_out_sink(st->trailers, SC_STR_NULL, 0);
    return proxy_h2_trailers_from_h1(t, &sk) < 0 ? UV_EPROTO : 0;
}

/* Body bytes for DATA: as they are, or translated from gRPC-Web (a malformed body is reported
 * by st_write). */
static int out_add(struct proxy_h2_stream *st, const char *p, size_t n)
{
    int rc =
        st->gw ? proxy_grpc_web_req_data(st->gw, p, n, &st->out) : sc_buf_append(&st->out, p, n);
    return rc == -1 ? 0 : rc < 0 ? UV_ENOBUFS : 0;
}

/* Adds body bytes <p>/<n> (HTTP/1 framing as the client sent it) to what goes out as DATA. */
static int add_body(struct proxy_h2_stream *st, const char *p, size_t n)
{
    if (st->body == B_LENGTH) {
        size_t k = n < st->remaining ? n : (size_t)st->remaining;
        st->remaining -= k;
        st->req_end = st->remaining == 0;
        return out_add(st, p, k);
    }
    if (st->body != B_CHUNKED || st->req_end) {
        return 0;
    }
    size_t off = 0;
    while (off < n) {
        size_t used = 0;
        struct sc_str data = SC_STR_NULL;
        struct sc_http_error err = { 0 };
        int rc = sc_http1_chunked_next(&st->ch, p + off, n - off, &used, &data, &err);
        if (rc < 0) {
            return UV_EPROTO; /* the codec checked it already */
        }
        if (rc == SC_HTTP1_CHUNK_DATA) {
            sc_buf_reset(&st->tail);
            if (data.len && out_add(st, data.p, data.len) < 0) {
                return UV_ENOBUFS;
            }
        } else if (sc_buf_append(&st->tail, p + off, used) < 0) {
            return UV_EPROTO;
        }
        off += used;
        if (rc == SC_HTTP1_CHUNK_DONE) {
            st->req_end = true;
            return take_trailers(st);
        }
    }
    return 0;
}

static int st_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    struct proxy_h2_stream *st = (struct proxy_h2_stream *)x;
    struct proxy_h2_conn *hc = st->hc;
    if (!hc || hc->dead || st->h2closed) {
        return UV_ECONNRESET;
    }
    if (st->out_off) {
        sc_buf_consume(&st->out, st->out_off); /* what went out as DATA already */
        st->out_off = 0;
    }
    unsigned i = 0;
    if (!st->submitted) {
        if (n == 0) {
            return 0;
        }
        int rc = submit_head(st, sc_str_n(iov[0].base, iov[0].len));
        if (rc < 0) {
            return rc;
        }
        i = 1;
    }
    for (; i < n; i++) {
        int rc = add_body(st, iov[i].base, iov[i].len);
        if (rc < 0) {
            return rc;
        }
    }
    if (st->gw &&
        (proxy_grpc_web_bad(st->gw) || (st->req_end && proxy_grpc_web_req_end(st->gw) < 0))) {
        /* a malformed gRPC-Web body: answered 400 from the stream's events (stream_step) */
        st->err = st->err ? st->err : UV_EINVAL;
        st->why = proxy_grpc_web_bad(st->gw);
        ready_push(st);
        conn_kick(hc);
        return 0;
    }
    if (st->deferred && (st->out.len > st->out_off || st->req_end)) {
        st->deferred = false;
        nghttp2_session_resume_data(hc->s, st->id);
    }
    conn_kick(hc);
    if (st->out.len - st->out_off >= H2_OUT_HIGH) {
        st->wpending = true;
        return 1;
    }
    return 0;
}

static int st_shutdown(struct sc_xport *x)
{
    (void)x;
    return UV_ENOTSUP; /* tunnels are not carried on HTTP/2 streams */
}

static int st_query(struct sc_xport *x, enum sc_xq q, void *out)
{
    struct proxy_h2_stream *st = (struct proxy_h2_stream *)x;
    return st->hc ? sc_xport_query(st->hc->uc->x, q, out) : UV_ENOTSUP;
}

static bool st_alive(struct sc_xport *x)
{
    struct proxy_h2_stream *st = (struct proxy_h2_stream *)x;
    return st->hc && !st->hc->dead;
}

/* The owner lets go of the stream (the exchange is over, failed or cancelled): a stream still
 * open is reset, and the owner learns it is closed at once. */
static void st_close(struct sc_xport *x)
{
    struct proxy_h2_stream *st = (struct proxy_h2_stream *)x;
    struct proxy_uconn *uc = st->uc;
    if (!uc) {
        return;
    }
    st->uc = NULL;
    ready_drop(st);
    struct proxy_h2_conn *hc = st->hc;
    if (hc) {
        hc->nstreams--;
        if (hc->nstreams == 0) {
            hc->idle_since = uv_now(hc->w->loop);
        }
        if (st->id > 0 && !st->h2closed && !hc->dead) {
            if (!(st->resp_end && st->req_sent)) {
                nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, st->id,
                                          st->resp_end ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
            }
            if (st->unconsumed) {
                nghttp2_session_consume(hc->s, st->id, st->unconsumed);
                st->unconsumed = 0;
            }
        }
        conn_kick(hc);
    }
    st->x.cbs->closed(uc);
    stream_maybe_free(st);
}

static const struct sc_xport_ops stream_ops = {
    .name = "h2-stream",
    .read_start = st_read_start,
    .read_stop = st_read_stop,
    .write = st_write,
    .close = st_close,
    .shutdown = st_shutdown,
    .query = st_query,
    .alive = st_alive,
};

static void stream_free(struct proxy_h2_stream *st)
{
    ready_drop(st);
    sc_list_remove(&st->node);
    if (st->hc && st->id > 0 && !st->h2closed && !st->hc->dead) {
        nghttp2_session_set_stream_user_data(st->hc->s, st->id, NULL);
    }
    sc_buf_cleanup(&st->out);
    sc_buf_cleanup(&st->rx);
    sc_buf_cleanup(&st->tail);
    if (st->trailers) {
        proxy_h2_out_free(st->trailers);
        sc_free(st->trailers);
    }
    proxy_grpc_web_free(st->gw);
    sc_free(st);
}

/* Frees <st> once nothing refers to it: its owner let go, no callback of its runs, and nghttp2
 * is done with it (closed it, or never had it, or the session is going). Returns true when
 * freed. */
static bool stream_maybe_free(struct proxy_h2_stream *st)
{
    if (st->uc || st->busy) {
        return false;
    }
    if (st->hc && st->id > 0 && !st->h2closed && !st->hc->dead) {
        return false; /* on_stream_close frees it (the data provider may still read <out>) */
    }
    stream_free(st);
    return true;
}

/* Opens a stream on <hc> for the try of <ex> and sends the request on it. */
static void stream_open(struct proxy_h2_conn *hc, struct proxy_exch *ex)
{
    struct proxy_worker *w = hc->w;
    struct proxy_uconn *uc = proxy_uconn_new(w);
    struct proxy_h2_stream *st = SC_NEW(struct proxy_h2_stream);
    st->x.ops = &stream_ops;
    st->x.cbs = &proxy_upstream_cbs;
    st->x.owner = uc;
    st->hc = hc;
    st->uc = uc;
    sc_buf_init(&st->out, (size_t)ex->rt->retry_buffer + 2 * H2_OUT_HIGH);
    sc_buf_init(&st->rx, (size_t)hc->cfg->stream_window * 2 + 2 * H2_RBUF + 65536);
    sc_buf_init(&st->tail, 32768);
    sc_list_append(&hc->streams, &st->node);
    hc->nstreams++;
    uc->rt = proxy_rt_ref(ex->rt);
    uc->ep = ex->ep;
    uc->ex = ex;
    uc->x = &st->x;
    uc->h2s = st;
    /* A stream is never "stale" as an idle HTTP/1 connection can be: only a refused one is
     * sent again without counting a retry (stream_step). */
    uc->reused = false;
    uc->state = U_CONNECTING;
    uv_timer_init(w->loop, &uc->timer);
    uc->timer.data = uc;
    ex->uc = uc;
    proxy_upstream_ready(ex->dc);
}

/* ---- nghttp2 callbacks: they record, conn_run reports ---- */

static struct proxy_h2_stream *stream_of(struct proxy_h2_conn *hc, int32_t id)
{
    return nghttp2_session_get_stream_user_data(hc->s, id);
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    struct proxy_h2_stream *st = src->ptr;
    size_t avail = st->out.len - st->out_off;
    size_t k = avail < len ? avail : len;
    if (k) {
        memcpy(buf, st->out.p + st->out_off, k);
        st->out_off += k;
        if (st->out_off == st->out.len) {
            sc_buf_reset(&st->out);
            st->out_off = 0;
        }
    }
    if (st->wpending && st->out.len - st->out_off < H2_OUT_HIGH) {
        st->wpending = false;
        st->wdone_due = true;
        ready_push(st);
    }
    if (st->out.len == st->out_off && st->req_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->req_sent = true;
        if (st->trailers) {
            nghttp2_nv nv[PROXY_H2_MAX_FIELDS + 8];
            int n = proxy_h2_out_nv(st->trailers, nv, SC_ARRAY_LEN(nv));
            if (n > 0 && nghttp2_submit_trailer(st->hc->s, st->id, nv, (size_t)n) == 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
        }
        return (ssize_t)k;
    }
    if (k == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)k;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct proxy_h2_conn *hc = ud;
    struct proxy_h2_stream *st = stream_of(hc, f->hd.stream_id);
    if (f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    int kind = st && st->got_head ? PROXY_H2_TRAILERS : PROXY_H2_RESPONSE;
    proxy_h2_head_init(&hc->hd, kind, hc->cfg->max_header_list, 0);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct proxy_h2_conn *hc = ud;
    struct proxy_h2_stream *st = stream_of(hc, f->hd.stream_id);
    if (!st || f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    const char *why = NULL;
    int rc = proxy_h2_head_add(&hc->hd, sc_str_n((const char *)name, nlen),
                               sc_str_n((const char *)value, vlen), &why);
    if (rc != PROXY_H2_OK) {
        st->why = rc == PROXY_H2_TOO_BIG ? "upstream response head too large" : why;
        st->err = UV_EPROTO;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* Writes the received response head as an HTTP/1.1 head into st->rx. */
static int head_to_h1(struct proxy_h2_stream *st, const struct sc_http_msg *m, bool end_stream)
{
    struct sc_buf *b = &st->rx;
    int e = sc_http1_write_status_line(b, 1, m->status);
    bool has_cl = false;
    bool gw = st->gw && proxy_grpc_web_resp_begin(st->gw, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        struct sc_str v = h->value;
        if (gw && !proxy_grpc_web_resp_field(st->gw, h->name, &v)) {
            continue;
        }
        has_cl = has_cl || sc_str_eq(h->name, SC_STR("content-length"));
        e |= sc_buf_append_str(b, h->name);
        e |= sc_buf_append(b, ": ", 2);
        e |= sc_buf_append_str(b, v);
        e |= sc_buf_append(b, "\r\n", 2);
    }
    bool interim = m->status < 200;
    bool bodiless =
        m->status == 204 || m->status == 304 || (st->uc && st->uc->ex && st->uc->ex->is_head);
    if (!interim && !bodiless && !has_cl) {
        if (end_stream) {
            e |= sc_buf_append_cstr(b, "content-length: 0\r\n");
        } else {
            e |= sc_buf_append_cstr(b, "transfer-encoding: chunked\r\n");
            st->chunked = true;
        }
    }
    e |= sc_buf_append(b, "\r\n", 2);
    return e ? UV_ENOBUFS : 0;
}

static void resp_end(struct proxy_h2_stream *st)
{
    if (!st->resp_end) {
        st->resp_end = true;
        if (st->chunked && proxy_grpc_web_active(st->gw)) {
            (void)proxy_grpc_web_resp_end(st->gw, NULL, &st->rx);
        } else if (st->chunked) {
            (void)sc_buf_append(&st->rx, "0\r\n\r\n", 5);
        }
    }
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct proxy_h2_conn *hc = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        /* No new streams; nghttp2 closes those above last_stream_id as refused. */
        hc->goaway = true;
        hc->why = "upstream sent GOAWAY";
        sc_metrics_counter_inc(hc->cfg->m_ev[PROXY_H2E_GOAWAY]);
        return 0;
    }
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
        hc->ping_sent = 0;
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS) {
        conn_kick(hc); /* a larger stream limit may let waiting tries in */
        return 0;
    }
    struct proxy_h2_stream *st = f->hd.stream_id ? stream_of(hc, f->hd.stream_id) : NULL;
    if (!st) {
        return 0;
    }
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        const char *why = NULL;
        int rc = proxy_h2_head_finish(&hc->hd, end, &why);
        if (rc != PROXY_H2_OK) {
            st->why = rc == PROXY_H2_TOO_BIG ? "upstream response head too large" : why;
            st->err = UV_EPROTO;
            nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
            ready_push(st);
            return 0;
        }
        if (hc->hd.kind == PROXY_H2_TRAILERS) {
            if (st->chunked && !st->resp_end && proxy_grpc_web_active(st->gw)) {
                st->resp_end = true;
                if (proxy_grpc_web_resp_end(st->gw, &hc->hd.m, &st->rx) < 0) {
                    st->why = "gRPC-Web trailer frame too large";
                    st->err = UV_EPROTO;
                }
            } else if (st->chunked && !st->resp_end) {
                st->resp_end = true;
                if (proxy_h2_trailers_to_h1(&hc->hd.m, &st->rx) < 0) {
                    (void)sc_buf_append(&st->rx, "0\r\n\r\n", 5);
                }
            }
        } else if (st->uc) {
            if (head_to_h1(st, &hc->hd.m, end) < 0) {
                st->why = "upstream response head too large";
                st->err = UV_EPROTO;
            }
            st->got_head = st->got_head || hc->hd.m.status >= 200;
        }
        ready_push(st);
    }
    if (end) {
        resp_end(st);
        ready_push(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct proxy_h2_conn *hc = ud;
    struct proxy_h2_stream *st = stream_of(hc, id);
    if (!st || !st->uc || !st->got_head) {
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    int e = 0;
    if (st->chunked && proxy_grpc_web_active(st->gw)) {
        e = proxy_grpc_web_resp_data(st->gw, data, len, &st->rx);
    } else {
        if (st->chunked) {
            e |= sc_http1_write_chunk_size(&st->rx, len);
        }
        e |= sc_buf_append(&st->rx, data, len);
        if (st->chunked) {
            e |= sc_buf_append(&st->rx, "\r\n", 2);
        }
    }
    if (e) {
        /* Past the window the stream announced: nghttp2 enforces it, so this cannot happen. */
        st->why = "upstream sent more than the stream window";
        st->err = UV_EPROTO;
        nghttp2_session_consume(s, id, len);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->unconsumed += len;
    ready_push(st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    struct proxy_h2_conn *hc = ud;
    struct proxy_h2_stream *st = stream_of(hc, id);
    if (!st) {
        return 0;
    }
    st->h2closed = true;
    if (stream_maybe_free(st) || !st->uc) {
        return 0;
    }
    if (!st->resp_end && !st->err) {
        st->err = UV_ECONNRESET;
        st->refused = code == NGHTTP2_REFUSED_STREAM;
        st->why = st->refused ? "upstream refused the stream" : "upstream reset the stream";
        sc_metrics_counter_inc(hc->cfg->m_ev[st->refused ? PROXY_H2E_REFUSED : PROXY_H2E_RESET]);
    }
    ready_push(st);
    return 0;
}

/* ---- running a stream's recorded events (outside nghttp2, outside the exchange's calls) ---- */

/* Reports one event of <st> to its exchange. Returns false when nothing is left to report. */
static bool stream_step(struct proxy_h2_stream *st)
{
    struct proxy_uconn *uc = st->uc;
    struct proxy_h2_conn *hc = st->hc;
    if (!uc) {
        return false;
    }
    if (st->wdone_due) {
        st->wdone_due = false;
        st->x.cbs->write_done(uc, 0);
        return true;
    }
    if (!st->reading) {
        return false;
    }
    if (st->rx_off < st->rx.len) {
        uv_buf_t b;
        st->x.cbs->alloc(uc, &b);
        if (b.len == 0) {
            st->x.cbs->read(uc, UV_ENOBUFS);
            return true;
        }
        size_t k = st->rx.len - st->rx_off;
        k = k < b.len ? k : b.len;
        memcpy(b.base, st->rx.p + st->rx_off, k);
        st->rx_off += k;
        if (st->rx_off == st->rx.len) {
            sc_buf_reset(&st->rx);
            st->rx_off = 0;
            if (st->unconsumed && hc && !hc->dead) {
                nghttp2_session_consume(hc->s, st->id, st->unconsumed);
                st->unconsumed = 0;
                conn_kick(hc);
            }
        }
        st->x.cbs->read(uc, (ssize_t)k);
        return true;
    }
    if (st->err) {
        int err = st->err;
        st->err = 0;
        struct proxy_exch *ex = uc->ex;
        if (ex && err == UV_EINVAL) {
            proxy_local_reply(ex, 400, st->why ? st->why : "malformed request body", F_DPE);
            return true;
        }
        if (ex && err == UV_EPROTO) {
            if (hc) {
                sc_metrics_counter_inc(hc->cfg->m_ev[PROXY_H2E_PROTOCOL]);
            }
            proxy_attempt_failed(ex, 0, F_UPE, st->why ? st->why : "malformed upstream response");
            return true;
        }
        if (st->refused && ex) {
            /* Not processed by the server: as safe to send again as a request never sent. */
            uc->reused = true;
            uc->got_bytes = false;
            if (ex->body == B_NONE) {
                ex->retriable = true;
            }
        }
        st->x.cbs->read(uc, err);
        return true;
    }
    return false;
}

static void run_streams(struct proxy_h2_conn *hc)
{
    while (!sc_list_empty(&hc->ready)) {
        struct proxy_h2_stream *st = sc_list_entry(hc->ready.next, struct proxy_h2_stream, rnode);
        ready_drop(st);
        st->busy = true;
        bool more = stream_step(st);
        st->busy = false;
        if (stream_maybe_free(st)) {
            continue;
        }
        if (more) {
            ready_push(st);
        }
    }
}

/* ---- the connection ---- */

static void on_kick(uv_idle_t *h)
{
    struct proxy_h2_conn *hc = h->data;
    uv_idle_stop(h);
    hc->kicked = false;
    conn_run(hc);
}

static void conn_kick(struct proxy_h2_conn *hc)
{
    if (hc->running) {
        hc->again = true;
        return;
    }
    if (!hc->kicked && !hc->closing) {
        hc->kicked = true;
        uv_idle_start(&hc->kick, on_kick);
    }
}

/* Writes what nghttp2 has to send, as far as the transport takes it. Returns 0 or an error. */
static int conn_flush(struct proxy_h2_conn *hc)
{
    while (!hc->wpending && !hc->dead) {
        sc_buf_reset(&hc->wbuf);
        while (hc->wbuf.len < H2_WBUF / 2) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(hc->s, &data);
            if (n < 0) {
                hc->why = nghttp2_strerror((int)n);
                return -1;
            }
            if (n == 0) {
                break;
            }
            if (sc_buf_append(&hc->wbuf, data, (size_t)n) < 0) {
                return -1;
            }
        }
        if (hc->wbuf.len == 0) {
            return 0;
        }
        uv_buf_t b = uv_buf_init(hc->wbuf.p, (unsigned)hc->wbuf.len);
        int rc = sc_xport_write(hc->uc->x, &b, 1);
        if (rc < 0) {
            hc->why = "upstream write failed";
            return -1;
        }
        hc->wpending = rc == 1;
    }
    return 0;
}

static bool conn_usable(const struct proxy_h2_conn *hc)
{
    return !hc->dead && !hc->goaway && hc->uc->rt == hc->w->rt && !hc->w->draining;
}

static uint32_t conn_limit(const struct proxy_h2_conn *hc)
{
    uint32_t peer =
        nghttp2_session_get_remote_settings(hc->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return peer < hc->cfg->max_streams ? peer : hc->cfg->max_streams;
}

static void unpool(struct proxy_h2_conn *hc)
{
    if (hc->pooled) {
        hc->pooled = false;
        sc_list_remove(&hc->node);
    }
}

static void conn_run(struct proxy_h2_conn *hc)
{
    if (hc->running) {
        hc->again = true;
        return;
    }
    hc->running = true;
    do {
        hc->again = false;
        if (conn_flush(hc) < 0) {
            hc->dead = true;
            break;
        }
        run_streams(hc);
    } while (hc->again && !hc->dead);
    hc->running = false;
    if (!hc->dead && !nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s) &&
        !hc->wpending) {
        hc->dead = true;
        hc->why = hc->why ? hc->why : "HTTP/2 session ended";
    }
    if (hc->dead) {
        conn_fail(hc, hc->why ? hc->why : "HTTP/2 connection failed");
        return;
    }
    if (hc->goaway) {
        unpool(hc);
    }
    if (hc->nstreams == 0) {
        /* An idle connection stays for the cluster's idle_timeout (conn_arm), as long as the
         * endpoint has fewer than max_idle idle ones: closing it because another has free
         * streams would open a new one at the next burst. */
        uint32_t idle = 0;
        if (hc->pooled) {
            struct sc_list *pos, *tmp;
            sc_list_foreach(pos, tmp, &hc->pool->h2)
            {
                struct proxy_h2_conn *o = sc_list_entry(pos, struct proxy_h2_conn, node);
                idle += o != hc && o->nstreams == 0;
            }
        }
        if (!hc->pooled || !conn_usable(hc) || idle >= hc->uc->ep->cluster->max_idle) {
            conn_fail(hc, NULL);
            return;
        }
    }
    conn_arm(hc);
}

/* Closes <hc>: a GOAWAY when it is still healthy, its streams failed as reset. */
static void conn_fail(struct proxy_h2_conn *hc, const char *why)
{
    if (hc->running) {
        hc->dead = true;
        hc->why = why;
        hc->again = true;
        return;
    }
    if (why && !hc->logged) {
        hc->logged = true;
        sc_debug("upstream HTTP/2 connection closed", SC_LS("reason", why),
                 SC_LS("endpoint", hc->uc->ep ? hc->uc->ep->name : ""));
    }
    if (!hc->dead && hc->s) {
        nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->s), NGHTTP2_NO_ERROR,
                              NULL, 0);
        (void)conn_flush(hc);
    }
    hc->dead = true;
    unpool(hc);
    /* Streams that have their whole response keep delivering it (on the kick handle); the
     * connection closes after the last one lets go. */
    hc->running = true;
    fail_streams(hc, true);
    hc->running = false;
    if (hc->nstreams == 0) {
        proxy_uconn_close(hc->uc); /* proxy_h2_up_conn_closing fails any stream left */
    } else {
        uv_timer_stop(&hc->uc->timer);
        if (!sc_list_empty(&hc->ready) && !hc->kicked) {
            hc->kicked = true;
            uv_idle_start(&hc->kick, on_kick);
        }
    }
}

static void on_conn_timer(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_h2_conn *hc = uc->h2;
    uint64_t now = uv_now(hc->w->loop);
    const struct proxy_h2_up_cluster *cfg = hc->cfg;
    if (hc->ping_sent && now >= hc->ping_sent + cfg->ka_timeout_ms) {
        sc_metrics_counter_inc(cfg->m_ev[PROXY_H2E_PING_TIMEOUT]);
        conn_fail(hc, "upstream HTTP/2 PING timeout");
        return;
    }
    uint64_t idle_to = uc->ep->cluster->idle_timeout_ms;
    if (hc->nstreams == 0 && idle_to && now >= hc->idle_since + idle_to) {
        conn_fail(hc, NULL);
        return;
    }
    if (cfg->ka_interval_ms && !hc->ping_sent && now >= hc->last_rx + cfg->ka_interval_ms) {
        if (nghttp2_submit_ping(hc->s, NGHTTP2_FLAG_NONE, NULL) == 0) {
            hc->ping_sent = now;
            conn_kick(hc);
        }
    }
    conn_arm(hc);
}

/* Arms the connection's timer for its nearest deadline: the PING's answer, the next PING, the
 * idle timeout. */
static void conn_arm(struct proxy_h2_conn *hc)
{
    struct proxy_uconn *uc = hc->uc;
    const struct proxy_h2_up_cluster *cfg = hc->cfg;
    uint64_t now = uv_now(hc->w->loop), due = UINT64_MAX;
    if (hc->ping_sent) {
        due = hc->ping_sent + cfg->ka_timeout_ms;
    } else if (cfg->ka_interval_ms) {
        due = hc->last_rx + cfg->ka_interval_ms;
    }
    uint64_t idle_to = uc->ep->cluster->idle_timeout_ms;
    if (hc->nstreams == 0 && idle_to && hc->idle_since + idle_to < due) {
        due = hc->idle_since + idle_to;
    }
    if (due == UINT64_MAX) {
        uv_timer_stop(&uc->timer);
        return;
    }
    uv_timer_start(&uc->timer, on_conn_timer, due > now ? due - now : 0, 0);
}

/* ---- the connection's transport callbacks (owner: its struct proxy_uconn) ---- */

static void h2_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_uconn *uc = owner;
    *buf = uv_buf_init(uc->h2->rbuf, sizeof(uc->h2->rbuf));
}

static void h2_read(void *owner, ssize_t nread)
{
    struct proxy_uconn *uc = owner;
    struct proxy_h2_conn *hc = uc->h2;
    proxy_spin_on(uc->w);
    if (nread == 0 || uc->state == U_CLOSING || hc->dead) {
        return;
    }
    if (nread < 0) {
        conn_fail(hc, nread == UV_EOF ? "upstream closed the HTTP/2 connection"
                                      : "upstream HTTP/2 connection failed");
        return;
    }
    hc->last_rx = uv_now(hc->w->loop);
    ssize_t rc = nghttp2_session_mem_recv(hc->s, (const uint8_t *)hc->rbuf, (size_t)nread);
    if (rc < 0) {
        hc->why = nghttp2_strerror((int)rc);
        sc_metrics_counter_inc(hc->cfg->m_ev[PROXY_H2E_PROTOCOL]);
        (void)conn_flush(hc); /* the GOAWAY nghttp2 queued, if any */
        hc->dead = true;
        conn_fail(hc, hc->why);
        return;
    }
    conn_run(hc);
}

static void h2_write_done(void *owner, int status)
{
    struct proxy_uconn *uc = owner;
    struct proxy_h2_conn *hc = uc->h2;
    hc->wpending = false;
    if (uc->state == U_CLOSING || hc->dead) {
        return;
    }
    if (status < 0) {
        conn_fail(hc, "upstream write failed");
        return;
    }
    conn_run(hc);
}

static void h2_connected(void *owner, int status)
{
    (void)owner;
    (void)status; /* the connection was connected before it became HTTP/2 */
}

static void h2_closed(void *owner)
{
    proxy_uconn_closed_one(owner);
}

static const struct sc_xport_cbs h2cbs = {
    .alloc = h2_alloc,
    .read = h2_read,
    .write_done = h2_write_done,
    .connected = h2_connected,
    .closed = h2_closed,
};

static void on_kick_closed(uv_handle_t *h)
{
    struct proxy_h2_conn *hc = h->data;
    proxy_uconn_closed_one(hc->uc);
}

/* ---- hooks (proxy_upstream.c) ---- */

bool proxy_h2_up_attempt(struct proxy_exch *ex, struct proxy_endpoint *ep)
{
    struct proxy_pool *pool = proxy_ep_pool(ep, ex->w);
    if (!pool || ex->upgrade || ex->is_connect) {
        return false;
    }
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &pool->h2)
    {
        struct proxy_h2_conn *hc = sc_list_entry(pos, struct proxy_h2_conn, node);
        if (conn_usable(hc) && hc->nstreams < conn_limit(hc)) {
            stream_open(hc, ex);
            return true;
        }
    }
    return proxy_h2_wait(ex, ep, pool); /* for a connection still connecting, when one has room */
}

static int session_new(struct proxy_h2_conn *hc)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 65536 + 8192);
    nghttp2_option_set_peer_max_concurrent_streams(opt, hc->cfg->max_streams);
    int rc = nghttp2_session_client_new3(&hc->s, cb, hc, opt, proxy_h2_mem(hc->w));
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        return -1;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, hc->cfg->stream_window },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hc->cfg->max_header_list },
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0 }, /* a client takes no pushed streams */
    };
    if (nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv, SC_ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)hc->cfg->conn_window) != 0) {
        return -1;
    }
    return 0;
}

bool proxy_h2_up_connected(struct proxy_uconn *uc)
{
    struct proxy_cluster *c = uc->ep->cluster;
    if (c->h2up.protocol == PROXY_UP_HTTP1) {
        return false;
    }
    if (c->h2up.protocol == PROXY_UP_AUTO &&
        !sc_str_eq(sc_xport_query_str(uc->x, SC_XQ_ALPN), SC_STR("h2"))) {
        return false; /* the server chose HTTP/1.1 (or offered no ALPN): an HTTP/1 connection */
    }
    struct proxy_exch *ex = uc->ex;
    if (ex && (ex->upgrade || ex->is_connect)) {
        proxy_attempt_failed(ex, 0, F_UPE,
                             "upgrade and CONNECT are not carried over an HTTP/2 upstream");
        return true;
    }
    struct proxy_worker *w = uc->w;
    struct proxy_h2_conn *hc = SC_NEW(struct proxy_h2_conn);
    hc->uc = uc;
    hc->w = w;
    hc->cfg = &c->h2up;
    sc_list_init(&hc->streams);
    sc_list_init(&hc->ready);
    sc_buf_init(&hc->wbuf, H2_WBUF);
    uv_idle_init(w->loop, &hc->kick);
    hc->kick.data = hc;
    hc->last_rx = hc->idle_since = uv_now(w->loop);
    uc->h2 = hc;
    uc->x->cbs = &h2cbs; /* the top layer reports to the session from now on */
    uc->state = U_ACTIVE;
    uc->ex = NULL;
    uv_timer_stop(&uc->timer); /* the connect timeout */
    uc->idle_timer = false;
    if (ex) {
        ex->uc = NULL;
    }
    if (session_new(hc) < 0) {
        hc->why = "cannot start an HTTP/2 session";
        hc->dead = true;
        if (ex) {
            proxy_attempt_failed(ex, COND_CONNECT, F_UF, hc->why);
        }
        proxy_uconn_close(uc);
        return true;
    }
    hc->pool = proxy_ep_pool(uc->ep, w);
    if (hc->pool) {
        sc_list_prepend(&hc->pool->h2, &hc->node);
        hc->pooled = true;
    }
    (void)sc_xport_read_start(uc->x);
    if (ex) {
        stream_open(hc, ex);
    }
    conn_kick(hc);
    return true;
}

/* Fails the streams of dying <hc> as a reset connection would (a refused one is safe to send
 * again). With <keep_complete>, a stream whose whole response arrived keeps it: its client still
 * gets it, and the connection closes after the last such stream. */
static void fail_streams(struct proxy_h2_conn *hc, bool keep_complete)
{
    struct sc_list doomed, *pos, *tmp;
    sc_list_init(&doomed);
    sc_list_foreach(pos, tmp, &hc->streams)
    {
        struct proxy_h2_stream *st = sc_list_entry(pos, struct proxy_h2_stream, node);
        if (!(keep_complete && st->uc && st->resp_end && !st->err)) {
            sc_list_remove(&st->node);
            sc_list_append(&doomed, &st->node);
        }
    }
    while (!sc_list_empty(&doomed)) {
        struct proxy_h2_stream *st = sc_list_entry(doomed.next, struct proxy_h2_stream, node);
        sc_list_remove(&st->node);
        sc_list_init(&st->node);
        ready_drop(st);
        st->hc = NULL;
        if (!st->uc) {
            stream_free(st);
            continue;
        }
        struct proxy_uconn *suc = st->uc;
        hc->nstreams--;
        st->busy = true;
        if (st->err == UV_EPROTO && suc->ex) {
            proxy_attempt_failed(suc->ex, 0, F_UPE, st->why);
        } else {
            if (st->refused && suc->ex) {
                suc->reused = true;
                suc->got_bytes = false;
                if (suc->ex->body == B_NONE) {
                    suc->ex->retriable = true;
                }
            }
            if (suc->ex && suc->ex->resp_head_sent) {
                suc->ex->flags |= F_UC;
            }
            st->x.cbs->read(suc, UV_ECONNRESET);
        }
        st->busy = false;
        if (st->uc) {
            st->err = UV_ECONNRESET; /* it still holds the stream: reported on its next read */
        } else {
            stream_free(st);
        }
    }
}

unsigned proxy_h2_up_conn_closing(struct proxy_uconn *uc)
{
    struct proxy_h2_conn *hc = uc->h2;
    hc->dead = true;
    unpool(hc);
    uv_timer_stop(&uc->timer);
    fail_streams(hc, false);
    if (hc->s) {
        nghttp2_session_del(hc->s);
        hc->s = NULL;
    }
    hc->closing = true;
    uv_close((uv_handle_t *)&hc->kick, on_kick_closed);
    return 1;
}

void proxy_h2_up_free(struct proxy_uconn *uc)
{
    struct proxy_h2_conn *hc = uc->h2;
    uc->h2 = NULL;
    if (hc) {
        proxy_h2_head_free(&hc->hd);
        proxy_h2_out_free(&hc->o);
        sc_buf_cleanup(&hc->wbuf);
        sc_free(hc);
    }
}

void proxy_h2_up_close_pool(struct proxy_pool *pool)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &pool->h2)
    {
        struct proxy_h2_conn *hc = sc_list_entry(pos, struct proxy_h2_conn, node);
        unpool(hc);
        if (hc->nstreams == 0) {
            conn_fail(hc, NULL);
        } else {
            /* Streams in flight finish; the connection closes after the last one. */
            hc->goaway = true;
            nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(hc->s), NGHTTP2_NO_ERROR,
                                  NULL, 0);
            conn_kick(hc);
        }
    }
}
