// SPDX-License-Identifier: Apache-2.0
// The exposition endpoint (default 0.0.0.0:9090/metrics): a small HTTP/1.1 server on the role's
// loop, separate from the admin server because its answers are asynchronous (a scrape of our
// endpoint waits for the collection it triggers or joins) and streamed. Requests on a connection
// are answered in order and reading pauses while one is pending, so a client cannot queue work in
// our memory; heads are capped at 16 KiB, connections at 256, and idle ones are closed after 60 s.
// The body is rendered from the snapshot (which the connection holds) 256 KiB at a time, gzip'd
// when asked, and sent with chunked framing (close-delimited for HTTP/1.0), so a scrape's memory
// does not grow with the number of series.
#include <string.h>

#include <zlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/http1.h"
#include "net/tcp.h"
#include "roles/metrics/metrics.h"

#define MAX_CONNS 256
#define MAX_HEAD (16 * 1024)
#define MAX_HEADERS 64
#define IDLE_MS 60000
#define PIECE (256 * 1024) /* rendered per write: bounds a scrape's memory whatever its size */

struct metrics_http {
    struct metrics_role *m;
    uv_tcp_t listener;
    uv_timer_t sweep;
    struct sc_list conns;
    size_t nconns;
    int handles;
    bool closing;
};

struct conn {
    uv_tcp_t tcp;
    struct metrics_http *h;
    struct sc_list link;
    struct sc_buf in;
    size_t last_len;
    size_t head_len;
    struct sc_buf head; /* response head (or a whole error reply) */
    uv_write_t wr;
    struct metrics_waiter waiter;
    struct metrics_snapshot *snap; /* held while its body is written */
    bool waiting, writing, closing, keep_alive, is_head, want_om, want_gzip;
    bool minor0;    /* an HTTP/1.0 request: no chunked encoding, the body ends at close */
    bool streaming; /* a body is being rendered and written piece by piece */
    bool stream_done;
    struct prom_render_state rs;
    struct sc_buf piece; /* rendered text of one piece */
    struct sc_buf wire;  /* what goes out: the piece (deflated) with its chunk framing */
    z_stream z;
    bool z_init;
    uint64_t last_active;
};

static void read_start(struct conn *c);
static void process(struct conn *c);

static void maybe_free(struct metrics_http *h)
{
    if (h->closing && h->handles == 0) {
        sc_free(h);
    }
}

static void on_conn_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    struct metrics_http *h = c->h;
    sc_buf_cleanup(&c->in);
    sc_buf_cleanup(&c->head);
    sc_buf_cleanup(&c->piece);
    sc_buf_cleanup(&c->wire);
    if (c->z_init) {
        deflateEnd(&c->z);
    }
    metrics_snapshot_unref(c->snap);
    sc_free(c);
    h->nconns--;
    h->handles--;
    maybe_free(h);
}

static void conn_close(struct conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->waiting) {
        metrics_collect_cancel(&c->waiter);
        c->waiting = false;
    }
    sc_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void pump(struct conn *c);

/* Ends a streamed body: frees its buffers so an idle keep-alive connection stays small. */
static void stream_end(struct conn *c)
{
    c->streaming = false;
    sc_buf_cleanup(&c->piece);
    sc_buf_cleanup(&c->wire);
    if (c->z_init) {
        deflateEnd(&c->z);
        c->z_init = false;
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = false;
    if (status >= 0 && !c->closing && c->streaming && !c->stream_done) {
        pump(c);
        return;
    }
    if (c->streaming) {
        stream_end(c);
    }
    metrics_snapshot_unref(c->snap);
    c->snap = NULL;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    c->last_active = uv_now(c->h->m->loop);
    if (!c->keep_alive) {
        conn_close(c);
        return;
    }
    sc_buf_consume(&c->in, c->head_len);
    c->head_len = 0;
    c->last_len = 0;
    if (c->in.len) {
        process(c);
    } else {
        read_start(c);
    }
}

static void send_bufs(struct conn *c, const struct sc_buf *body)
{
    uv_buf_t b[2];
    unsigned n = 0;
    b[n++] = uv_buf_init(c->head.p, (unsigned)c->head.len);
    if (body && body->len) {
        b[n++] = uv_buf_init(body->p, (unsigned)body->len);
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->writing = true;
    c->wr.data = c;
    int rc = uv_write(&c->wr, (uv_stream_t *)&c->tcp, b, n, on_write);
    if (rc) {
        c->writing = false;
        conn_close(c);
    }
}

static void reply_simple(struct conn *c, int status, const char *text, bool close)
{
    sc_buf_reset(&c->head);
    c->keep_alive = c->keep_alive && !close;
    if (sc_http1_write_simple(&c->head, status, "text/plain; charset=utf-8", sc_str_c(text),
                              !c->keep_alive) != 0) {
        conn_close(c);
        return;
    }
    send_bufs(c, NULL);
}

/* Renders the next piece of the body, deflates it when gzip was asked for, frames it as a chunk
 * (HTTP/1.1) and writes it; the write's callback calls again until the body is done. */
static void pump(struct conn *c)
{
    enum prom_format fmt = c->want_om ? PROM_FMT_OPENMETRICS : PROM_FMT_TEXT;
    sc_buf_reset(&c->wire);
    if (c->head.len) {
        sc_buf_append(&c->wire, c->head.p, c->head.len); /* fits: the wire cap is larger */
        sc_buf_reset(&c->head);
    }
    int done = c->is_head ? 1 : 0;
    while (!done) {
        sc_buf_reset(&c->piece);
        done = prom_render_some(&c->snap->out, fmt, &c->rs, &c->piece, PIECE);
        if (done < 0) {
            /* The status line is gone already: cut the body so the scraper sees an error. */
            sc_error("exposition render failed: one line over max_response_bytes");
            conn_close(c);
            return;
        }
        struct sc_str data = sc_buf_str(&c->piece);
        if (c->want_gzip) {
            size_t start = c->wire.len + 24; /* room for the chunk-size line */
            if (sc_buf_reserve(&c->wire, 24 + deflateBound(&c->z, c->piece.len) + 64) != 0) {
                conn_close(c);
                return;
            }
            c->z.next_in = (Bytef *)c->piece.p;
            c->z.avail_in = (uInt)c->piece.len;
            c->z.next_out = (Bytef *)c->wire.p + start;
            c->z.avail_out = (uInt)(c->wire.cap - start);
            int zr = deflate(&c->z, done ? Z_FINISH : Z_NO_FLUSH);
            if (zr == Z_STREAM_ERROR || (done && zr != Z_STREAM_END)) {
                conn_close(c);
                return;
            }
            size_t n = (size_t)(c->wire.cap - start) - c->z.avail_out;
            /* Frame in place: write the size line into the reserved room, then move the data
             * up against it. */
            char line[24];
            int ll = c->minor0 ? 0 : snprintf(line, sizeof(line), "%zx\r\n", n);
            if (n) {
                memcpy(c->wire.p + c->wire.len, line, (size_t)ll);
                memmove(c->wire.p + c->wire.len + ll, c->wire.p + start, n);
                c->wire.len += (size_t)ll + n;
                if (!c->minor0) {
                    sc_buf_append(&c->wire, "\r\n", 2);
                }
            }
        } else if (data.len) {
            int rc = 0;
            if (!c->minor0) {
                rc |= sc_buf_appendf(&c->wire, "%zx\r\n", data.len);
            }
            rc |= sc_buf_append_str(&c->wire, data);
            if (!c->minor0) {
                rc |= sc_buf_append(&c->wire, "\r\n", 2);
            }
            if (rc) {
                conn_close(c);
                return;
            }
        }
        if (c->wire.len >= PIECE / 2) {
            break;
        }
    }
    if (done && !c->is_head && !c->minor0) {
        sc_buf_append(&c->wire, "0\r\n\r\n", 5);
    }
    c->stream_done = done == 1;
    uv_buf_t b = uv_buf_init(c->wire.p, (unsigned)c->wire.len);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->writing = true;
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writing = false;
        conn_close(c);
    }
}

static void on_snapshot(void *arg, struct metrics_snapshot *snap)
{
    struct conn *c = arg;
    c->waiting = false;
    enum prom_format fmt = c->want_om ? PROM_FMT_OPENMETRICS : PROM_FMT_TEXT;
    if (c->minor0) {
        c->keep_alive = false; /* without chunked framing the body ends when we close */
    }
    sc_buf_reset(&c->head);
    const char *ct = fmt == PROM_FMT_OPENMETRICS
                         ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                         : "text/plain; version=0.0.4; charset=utf-8";
    int rc = sc_buf_appendf(&c->head, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%s%s%s\r\n", ct,
                            c->want_gzip ? "Content-Encoding: gzip\r\n" : "",
                            c->minor0 ? "" : "Transfer-Encoding: chunked\r\n",
                            c->keep_alive ? "" : "Connection: close\r\n");
    if (rc) {
        conn_close(c);
        return;
    }
    c->snap = snap;
    metrics_snapshot_ref(snap);
    memset(&c->rs, 0, sizeof(c->rs));
    sc_buf_init(&c->piece, (size_t)c->h->m->cfg->max_response_bytes);
    sc_buf_init(&c->wire, (size_t)c->h->m->cfg->max_response_bytes + 4096);
    if (c->want_gzip && !c->is_head) {
        memset(&c->z, 0, sizeof(c->z));
        if (deflateInit2(&c->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            conn_close(c);
            return;
        }
        c->z_init = true;
    }
    c->streaming = true;
    c->stream_done = false;
    pump(c);
}

/* Returns true when the Accept header asks for OpenMetrics with a non-zero quality. */
static bool wants_openmetrics(struct sc_str accept)
{
    struct sc_str rest = accept;
    while (rest.len) {
        struct sc_str item = sc_str_trim(sc_str_split(&rest, ','));
        struct sc_str params = item;
        struct sc_str type = sc_str_trim(sc_str_split(&params, ';'));
        if (!sc_str_caseeq(type, SC_STR("application/openmetrics-text"))) {
            continue;
        }
        bool zero = false;
        while (params.len) {
            struct sc_str p = sc_str_trim(sc_str_split(&params, ';'));
            if (p.len >= 2 && (p.p[0] == 'q' || p.p[0] == 'Q') && p.p[1] == '=') {
                struct sc_str q = sc_str_n(p.p + 2, p.len - 2);
                zero = sc_str_eq(q, SC_STR("0")) || sc_str_startswith(q, SC_STR("0.0")) ||
                       sc_str_eq(q, SC_STR("0."));
                if (zero) {
                    for (size_t i = 2; i < q.len; i++) {
                        zero = zero && q.p[i] == '0';
                    }
                }
            }
        }
        if (!zero) {
            return true;
        }
    }
    return false;
}

static void handle(struct conn *c, const struct sc_http_msg *msg)
{
    struct metrics_http *h = c->h;
    c->keep_alive = msg->keep_alive && !h->closing;
    c->minor0 = msg->minor_version == 0;
    sc_counter_inc(h->m->m_requests);
    if (msg->body != SC_HTTP_BODY_NONE &&
        !(msg->body == SC_HTTP_BODY_LENGTH && msg->content_length == 0)) {
        reply_simple(c, 400, "request bodies are not accepted here\n", true);
        return;
    }
    struct sc_str target = msg->target;
    struct sc_str path = sc_str_split(&target, '?');
    bool get = sc_str_eq(msg->method, SC_STR("GET"));
    c->is_head = sc_str_eq(msg->method, SC_STR("HEAD"));
    if (!sc_str_eq(path, sc_str_c(h->m->cfg->path))) {
        if (sc_str_eq(path, SC_STR("/")) && (get || c->is_head)) {
            char body[512];
            snprintf(body, sizeof(body), "sidecar metrics: scrape %s\n", h->m->cfg->path);
            reply_simple(c, 200, body, false);
            return;
        }
        reply_simple(c, 404, "not found\n", false);
        return;
    }
    if (!get && !c->is_head) {
        sc_buf_reset(&c->head);
        sc_buf_append_cstr(&c->head, "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"
                                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
        c->keep_alive = false;
        send_bufs(c, NULL);
        return;
    }
    const struct sc_http_header *acc = sc_http_find(msg, SC_STR("Accept"), NULL);
    c->want_om = acc && wants_openmetrics(acc->value);
    c->want_gzip = false;
    size_t from = 0;
    const struct sc_http_header *ae;
    while ((ae = sc_http_find(msg, SC_STR("Accept-Encoding"), &from)) != NULL) {
        struct sc_str rest = ae->value;
        while (rest.len) {
            struct sc_str item = sc_str_trim(sc_str_split(&rest, ','));
            struct sc_str params = item;
            struct sc_str coding = sc_str_trim(sc_str_split(&params, ';'));
            params = sc_str_trim(params);
            bool q0 = sc_str_eq(params, SC_STR("q=0")) || sc_str_eq(params, SC_STR("q=0.0")) ||
                      sc_str_eq(params, SC_STR("q=0.000"));
            if (sc_str_caseeq(coding, SC_STR("gzip")) && !q0) {
                c->want_gzip = true;
            }
        }
    }
    c->waiting = true;
    metrics_collect(h->m, &c->waiter, on_snapshot, c);
}

static void process(struct conn *c)
{
    struct sc_http_header headers[MAX_HEADERS];
    struct sc_http_msg msg = { .headers = headers };
    struct sc_http_error err;
    int n = sc_http1_parse_request(c->in.p, c->in.len, c->last_len, &sc_http_default_limits, &msg,
                                   MAX_HEADERS, &err);
    if (n == 0) {
        if (c->in.len >= MAX_HEAD) {
            reply_simple(c, 431, "request head too large\n", true);
            return;
        }
        c->last_len = c->in.len;
        read_start(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (n < 0) {
        c->keep_alive = false;
        reply_simple(c, err.status, err.reason, true);
        return;
    }
    c->head_len = (size_t)n;
    handle(c, &msg);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = hd->data;
    (void)suggested;
    if (sc_buf_reserve(&c->in, 4096) != 0 && sc_buf_reserve(&c->in, 1) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    size_t room = c->in.cap - c->in.len;
    if (room > c->in.max - c->in.len) {
        room = c->in.max - c->in.len;
    }
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (nread < 0 || (nread == 0 && buf->base == NULL)) {
        if (nread == 0) {
            reply_simple(c, 431, "request head too large\n", true);
            uv_read_stop(s);
            return;
        }
        conn_close(c);
        return;
    }
    if (nread == 0) {
        return;
    }
    c->in.len += (size_t)nread;
    c->last_active = uv_now(c->h->m->loop);
    process(c);
}

static void read_start(struct conn *c)
{
    if (!c->closing) {
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct metrics_http *h = server->data;
    if (status < 0 || h->closing) {
        return;
    }
    struct conn *c = SC_NEW(struct conn);
    c->h = h;
    uv_tcp_init(h->m->loop, &c->tcp);
    c->tcp.data = c;
    h->handles++;
    h->nconns++;
    sc_list_init(&c->link);
    sc_list_append(&h->conns, &c->link);
    sc_buf_init(&c->in, MAX_HEAD);
    sc_buf_init(&c->head, 4096);
    c->last_active = uv_now(h->m->loop);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || h->nconns > MAX_CONNS) {
        conn_close(c);
        return;
    }
    sc_tcp_tune(&c->tcp);
    read_start(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct metrics_http *h = t->data;
    uint64_t now = uv_now(h->m->loop);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &h->conns)
    {
        struct conn *c = sc_list_entry(pos, struct conn, link);
        if (!c->waiting && !c->writing && now - c->last_active > IDLE_MS) {
            conn_close(c);
        }
    }
}

static void on_handle_closed(uv_handle_t *hd)
{
    struct metrics_http *h = hd->data;
    h->handles--;
    maybe_free(h);
}

int metrics_http_start(struct metrics_role *m, struct metrics_http **out, char **err)
{
    struct sockaddr_storage ss;
    int rc = sc_addr_parse(m->cfg->listen, &ss, err);
    if (rc) {
        return rc;
    }
    struct metrics_http *h = SC_NEW(struct metrics_http);
    h->m = m;
    sc_list_init(&h->conns);
    h->listener.data = h;
    h->handles = 2;
    rc = sc_tcp_listen(m->loop, &h->listener, (const struct sockaddr *)&ss, 511, false,
                       on_connection, err);
    h->listener.data = h;
    uv_timer_init(m->loop, &h->sweep);
    h->sweep.data = h;
    if (rc) {
        h->closing = true;
        uv_close((uv_handle_t *)&h->listener, on_handle_closed);
        uv_close((uv_handle_t *)&h->sweep, on_handle_closed);
        return rc;
    }
    uv_timer_start(&h->sweep, on_sweep, 5000, 5000);
    uv_unref((uv_handle_t *)&h->sweep);
    *out = h;
    return 0;
}

int metrics_http_address(struct metrics_http *h, char *buf, size_t len)
{
    return sc_tcp_local_address(&h->listener, buf, len);
}

void metrics_http_close(struct metrics_http *h)
{
    if (!h || h->closing) {
        return;
    }
    h->closing = true;
    uv_close((uv_handle_t *)&h->listener, on_handle_closed);
    uv_close((uv_handle_t *)&h->sweep, on_handle_closed);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &h->conns)
    {
        struct conn *c = sc_list_entry(pos, struct conn, link);
        if (c->waiting || c->writing) {
            c->keep_alive = false; /* finish the answer in flight, then close */
        } else {
            conn_close(c);
        }
    }
}
