// SPDX-License-Identifier: Apache-2.0
// The exposition endpoint (default 0.0.0.0:9090/metrics), on the HTTP/1.1 server of h1server.h
// and separate from the admin server because its answers are asynchronous (a scrape of our
// endpoint waits for the collection it triggers or joins) and streamed. The server answers a
// connection's requests in order with reading paused while one is pending, so a client cannot
// queue work in our memory; heads are capped at 16 KiB, connections at 256, and idle ones are
// closed after 60 s. The body is rendered from the snapshot (which the scrape holds) 256 KiB at a
// time, gzip'd when asked, and sent with chunked framing (close-delimited for HTTP/1.0), so a
// scrape's memory does not grow with the number of series.
#include <string.h>

#include <zlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/h1server.h"
#include "roles/metrics/metrics.h"

#define MAX_CONNS 256
#define MAX_HEAD (16 * 1024)
#define MAX_HEADERS 64
#define MAX_BODY (64 * 1024) /* bodies are refused; this only bounds what is read before that */
#define IDLE_MS 60000
#define PIECE (256 * 1024) /* rendered per write: bounds a scrape's memory whatever its size */

struct metrics_http {
    struct metrics_role *m;
    struct sc_h1srv *srv;
};

/* One connection's scrape state, created with its first scrape and freed with the connection. */
struct scrape {
    struct metrics_role *m; /* not the server: a scrape in flight outlives metrics_http_close */
    struct sc_h1srv_conn *c;
    struct metrics_waiter waiter;
    struct metrics_snapshot *snap; /* held while its body is written */
    bool waiting, is_head, want_om, want_gzip;
    bool minor0; /* an HTTP/1.0 request: no chunked encoding, the body ends at close */
    struct sc_buf head;
    struct metrics_prom_render_state rs;
    struct sc_buf piece; /* rendered text of one piece */
    z_stream z;
    bool z_init;
};

/* Ends a streamed body: frees its buffers so an idle keep-alive connection stays small. */
static void scrape_end(struct scrape *sc)
{
    sc_buf_cleanup(&sc->piece);
    sc_buf_cleanup(&sc->head);
    if (sc->z_init) {
        deflateEnd(&sc->z);
        sc->z_init = false;
    }
    metrics_snapshot_unref(sc->snap);
    sc->snap = NULL;
}

static void on_conn_closed(void *arg, struct sc_h1srv_conn *c, void *data)
{
    struct scrape *sc = data;
    (void)arg;
    (void)c;
    if (sc->waiting) {
        metrics_collect_cancel(&sc->waiter);
    }
    scrape_end(sc);
    sc_free(sc);
}

/* Renders the next piece of the body, deflates it when gzip was asked for, frames it as a chunk
 * (HTTP/1.1) and appends it to <wire>; the server calls again once it is written, until the body
 * is done. */
static int fill(void *arg, struct sc_buf *wire)
{
    struct scrape *sc = arg;
    enum metrics_prom_format fmt =
        sc->want_om ? METRICS_PROM_FMT_OPENMETRICS : METRICS_PROM_FMT_TEXT;
    if (sc->head.len) {
        sc_buf_append(wire, sc->head.p, sc->head.len); /* fits: the wire cap is larger */
        sc_buf_reset(&sc->head);
    }
    int done = sc->is_head ? 1 : 0;
    while (!done) {
        sc_buf_reset(&sc->piece);
        done = metrics_prom_render_some(&sc->snap->out, fmt, &sc->rs, &sc->piece, PIECE);
        if (done < 0) {
            /* The status line is gone already: cut the body so the scraper sees an error. */
            sc_error("exposition render failed: one line over max_response_bytes");
            return SC_ETOOBIG;
        }
        struct sc_str data = sc_buf_str(&sc->piece);
        if (sc->want_gzip) {
            size_t start = wire->len + 24; /* room for the chunk-size line */
            if (sc_buf_reserve(wire, 24 + deflateBound(&sc->z, sc->piece.len) + 64) != 0) {
                return SC_ETOOBIG;
            }
            sc->z.next_in = (Bytef *)sc->piece.p;
            sc->z.avail_in = (uInt)sc->piece.len;
            sc->z.next_out = (Bytef *)wire->p + start;
            sc->z.avail_out = (uInt)(wire->cap - start);
            int zr = deflate(&sc->z, done ? Z_FINISH : Z_NO_FLUSH);
            if (zr == Z_STREAM_ERROR || (done && zr != Z_STREAM_END)) {
                return SC_EINVAL;
            }
            size_t n = (size_t)(wire->cap - start) - sc->z.avail_out;
            /* Frame in place: write the size line into the reserved room, then move the data
             * up against it. */
            char line[24];
            int ll = sc->minor0 ? 0 : snprintf(line, sizeof(line), "%zx\r\n", n);
            if (n) {
                memcpy(wire->p + wire->len, line, (size_t)ll);
                memmove(wire->p + wire->len + ll, wire->p + start, n);
                wire->len += (size_t)ll + n;
                if (!sc->minor0) {
                    sc_buf_append(wire, "\r\n", 2);
                }
            }
        } else if (data.len) {
            int rc = 0;
            if (!sc->minor0) {
                rc |= sc_buf_appendf(wire, "%zx\r\n", data.len);
            }
            rc |= sc_buf_append_str(wire, data);
            if (!sc->minor0) {
                rc |= sc_buf_append(wire, "\r\n", 2);
            }
            if (rc) {
                return SC_ETOOBIG;
            }
        }
        if (wire->len >= PIECE / 2) {
            break;
        }
    }
    if (done && !sc->is_head && !sc->minor0) {
        sc_buf_append(wire, "0\r\n\r\n", 5);
    }
    if (done) {
        scrape_end(sc);
    }
    return done ? 1 : 0;
}

static void on_snapshot(void *arg, struct metrics_snapshot *snap)
{
    struct scrape *sc = arg;
    sc->waiting = false;
    enum metrics_prom_format fmt =
        sc->want_om ? METRICS_PROM_FMT_OPENMETRICS : METRICS_PROM_FMT_TEXT;
    if (sc->minor0) {
        sc_h1srv_close_after(sc->c); /* without chunked framing the body ends when we close */
    }
    sc_buf_init(&sc->head, 4096);
    const char *ct = fmt == METRICS_PROM_FMT_OPENMETRICS
                         ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                         : "text/plain; version=0.0.4; charset=utf-8";
    int rc = sc_buf_appendf(&sc->head, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%s%s%s\r\n", ct,
                            sc->want_gzip ? "Content-Encoding: gzip\r\n" : "",
                            sc->minor0 ? "" : "Transfer-Encoding: chunked\r\n",
                            sc_h1srv_keep_alive(sc->c) ? "" : "Connection: close\r\n");
    if (rc) {
        sc_h1srv_abort(sc->c);
        return;
    }
    sc->snap = snap;
    metrics_snapshot_ref(snap);
    memset(&sc->rs, 0, sizeof(sc->rs));
    sc_buf_init(&sc->piece, (size_t)sc->m->cfg->max_response_bytes);
    if (sc->want_gzip && !sc->is_head) {
        memset(&sc->z, 0, sizeof(sc->z));
        if (deflateInit2(&sc->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            sc_h1srv_abort(sc->c);
            return;
        }
        sc->z_init = true;
    }
    sc_h1srv_stream(sc->c, fill, sc);
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

static void reply_text(struct sc_h1srv_conn *c, int status, const char *text)
{
    sc_h1srv_respond(c, status, "text/plain; charset=utf-8", NULL, 0, sc_str_c(text));
}

static void on_request(void *arg, struct sc_h1srv_conn *c, const struct sc_h1srv_req *req)
{
    struct metrics_http *h = arg;
    const struct sc_http_msg *msg = req->msg;
    sc_metrics_counter_inc(h->m->m_requests);
    if (req->body.len) {
        sc_h1srv_close_after(c);
        reply_text(c, 400, "request bodies are not accepted here\n");
        return;
    }
    bool get = sc_str_eq(req->method, SC_STR("GET"));
    bool is_head = sc_str_eq(req->method, SC_STR("HEAD"));
    if (!sc_str_eq(req->path, sc_str_c(h->m->cfg->path))) {
        if (sc_str_eq(req->path, SC_STR("/")) && (get || is_head)) {
            char body[512];
            snprintf(body, sizeof(body), "sidecar metrics: scrape %s\n", h->m->cfg->path);
            reply_text(c, 200, body);
            return;
        }
        reply_text(c, 404, "not found\n");
        return;
    }
    if (!get && !is_head) {
        static const struct sc_http_header allow = { SC_STR("Allow"), SC_STR("GET, HEAD") };
        sc_h1srv_close_after(c);
        sc_h1srv_respond(c, 405, NULL, &allow, 1, SC_STR_NULL);
        return;
    }
    struct scrape *sc = sc_h1srv_data(c);
    if (!sc) {
        sc = SC_NEW(struct scrape);
        sc->m = h->m;
        sc->c = c;
        sc_h1srv_set_data(c, sc);
    }
    sc->is_head = is_head;
    sc->minor0 = msg->minor_version == 0;
    const struct sc_http_header *acc = sc_http1_find(msg, SC_STR("Accept"), NULL);
    sc->want_om = acc && wants_openmetrics(acc->value);
    sc->want_gzip = false;
    size_t from = 0;
    const struct sc_http_header *ae;
    while ((ae = sc_http1_find(msg, SC_STR("Accept-Encoding"), &from)) != NULL) {
        struct sc_str rest = ae->value;
        while (rest.len) {
            struct sc_str item = sc_str_trim(sc_str_split(&rest, ','));
            struct sc_str params = item;
            struct sc_str coding = sc_str_trim(sc_str_split(&params, ';'));
            params = sc_str_trim(params);
            bool q0 = sc_str_eq(params, SC_STR("q=0")) || sc_str_eq(params, SC_STR("q=0.0")) ||
                      sc_str_eq(params, SC_STR("q=0.000"));
            if (sc_str_caseeq(coding, SC_STR("gzip")) && !q0) {
                sc->want_gzip = true;
            }
        }
    }
    sc->waiting = true;
    metrics_collect(h->m, &sc->waiter, on_snapshot, sc);
}

static const struct sc_h1srv_cbs http_cbs = {
    .request = on_request,
    .conn_closed = on_conn_closed,
};

int metrics_http_start(struct metrics_role *m, struct metrics_http **out, char **err)
{
    struct sockaddr_storage ss;
    int rc = sc_addr_parse(m->cfg->listen, &ss, err);
    if (rc) {
        return rc;
    }
    struct metrics_http *h = SC_NEW(struct metrics_http);
    h->m = m;
    const struct sc_h1srv_opts o = {
        .max_conns = MAX_CONNS,
        .max_head = MAX_HEAD,
        .max_headers = MAX_HEADERS,
        .max_body = MAX_BODY,
        .max_resp = (uint64_t)m->cfg->max_response_bytes + 4096,
        .idle_ms = IDLE_MS,
        .backlog = 511,
    };
    h->srv = sc_h1srv_new(m->loop, &o, &http_cbs, h);
    rc = sc_h1srv_listen(h->srv, (const struct sockaddr *)&ss, err);
    if (rc) {
        sc_h1srv_close(h->srv);
        sc_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

int metrics_http_address(struct metrics_http *h, char *buf, size_t len)
{
    return sc_h1srv_address(h->srv, buf, len);
}

void metrics_http_close(struct metrics_http *h)
{
    if (!h) {
        return;
    }
    sc_h1srv_close(h->srv);
    sc_free(h);
}
