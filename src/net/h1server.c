// SPDX-License-Identifier: Apache-2.0
// The HTTP/1.1 server of h1server.h. A connection is in one of four states: reading a request,
// waiting for the owner's answer, sending it, or lingering after a closing reply; reads are on
// only while reading (and lingering), which is what keeps pipelined requests out of our memory.
// Sending is one loop (flush) that writes the buffered response or asks the owner's fill callback
// for the next piece until a write is queued, so a transport that takes every write at once does
// not recurse. One timer per server closes connections that made no progress for too long.
#include "net/h1server.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tcp.h"

#define CHUNK_SLACK 8192 /* undecoded chunk framing the input buffer holds beyond head and body */
#define KEEP_OUT 65536   /* an idle connection keeps at most this much output buffer */

enum { ST_RECV, ST_OWNER, ST_SEND, ST_LINGER };

struct sc_h1srv {
    uv_loop_t *loop;
    struct sc_h1srv_opts o;
    struct sc_http_limits lim; /* the parser's, with our head and header caps */
    const struct sc_h1srv_cbs *cbs;
    void *arg;
    uv_tcp_t listener;
    uv_timer_t sweep;
    bool listening;
    bool closing;
    int handles; /* open handles: listener, timer, connections */
    struct sc_list conns;
    size_t nconns;
};

struct sc_h1srv_conn {
    struct sc_tcp_xport tcp; /* the bottom of the chain */
    struct sc_xport *top;
    struct sc_h1srv *s;
    struct sc_list link;
    struct sc_buf in; /* request bytes: the head, a Content-Length body, what follows */
    size_t last_len;  /* for the resumable head parse */
    size_t hlen;      /* the current request's head length once complete, else 0 */
    size_t req_len;   /* bytes of <in> the request being answered occupies */
    enum sc_http_body body_kind;
    uint64_t clen;
    struct sc_http1_chunked dec;
    struct sc_buf body; /* a chunked request's decoded body */
    struct sc_buf out;
    sc_h1srv_fill_cb fill;
    void *fill_arg;
    sc_h1srv_after_cb after;
    void *after_arg;
    void *data;
    uint64_t last_active;
    int state;
    bool expect_continue, sent_continue;
    bool close_after;  /* the connection ends after the current response */
    bool is_head;      /* the current request is HEAD */
    bool resp_done;    /* everything of the response is in <out> or written */
    bool wpending;     /* a write is queued in the transport */
    bool cont_pending; /* that write is the 100 Continue */
    bool in_flush;
    bool closing;
};

static void process(struct sc_h1srv_conn *c);
static void flush(struct sc_h1srv_conn *c);

static void maybe_free(struct sc_h1srv *s)
{
    if (s->closing && s->handles == 0) {
        sc_free(s);
    }
}

static void run_after(struct sc_h1srv_conn *c)
{
    if (c->after) {
        sc_h1srv_after_cb cb = c->after;
        c->after = NULL;
        cb(c->after_arg);
    }
}

static void conn_close(struct sc_h1srv_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    run_after(c);
    if (c->data && c->s->cbs->conn_closed) {
        void *d = c->data;
        c->data = NULL;
        c->s->cbs->conn_closed(c->s->arg, c, d);
    }
    sc_xport_close(c->top);
}

static void on_closed(void *owner)
{
    struct sc_h1srv_conn *c = owner;
    struct sc_h1srv *s = c->s;
    sc_list_remove(&c->link);
    s->nconns--;
    sc_buf_cleanup(&c->in);
    sc_buf_cleanup(&c->body);
    sc_buf_cleanup(&c->out);
    sc_free(c);
    s->handles--;
    maybe_free(s);
}

static void read_on(struct sc_h1srv_conn *c)
{
    if (!c->closing && sc_xport_read_start(c->top) < 0) {
        conn_close(c);
    }
}

/* Sends a closing reply with <reason> in the body, for a request the owner never sees. */
static void reply_error(struct sc_h1srv_conn *c, int status, const char *reason)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "%s\n", reason);
    sc_xport_read_stop(c->top);
    c->state = ST_SEND;
    c->close_after = true;
    c->is_head = false;
    c->fill = NULL;
    sc_buf_reset(&c->out);
    if (sc_http1_write_simple(&c->out, status, "text/plain; charset=utf-8",
                              sc_str_n(text, n > 0 ? (size_t)n : 0), true) < 0) {
        conn_close(c);
        return;
    }
    c->resp_done = true;
    flush(c);
}

/* Closing right after a reply while the client is still sending would make the kernel answer
 * with a reset that can destroy the reply in flight; so shut the write side, drain what the client
 * still sends for a moment, then close. */
static void linger_close(struct sc_h1srv_conn *c)
{
    c->state = ST_LINGER;
    c->last_active = uv_now(c->s->loop);
    sc_buf_reset(&c->in);
    if (sc_xport_shutdown(c->top) < 0) {
        conn_close(c);
        return;
    }
    read_on(c);
}

/* The response is out: the next request, or the end of the connection. */
static void finish_response(struct sc_h1srv_conn *c)
{
    c->fill = NULL;
    c->resp_done = false;
    c->state = ST_RECV;
    run_after(c);
    if (c->closing) {
        return;
    }
    if (c->close_after || c->s->closing) {
        linger_close(c);
        return;
    }
    sc_buf_consume(&c->in, c->req_len);
    c->req_len = 0;
    c->hlen = 0;
    c->last_len = 0;
    c->sent_continue = false;
    sc_buf_cleanup(&c->body);
    if (c->out.cap > KEEP_OUT) {
        sc_buf_cleanup(&c->out);
    }
    c->last_active = uv_now(c->s->loop);
    process(c);
}

/* Writes what the response has until a write is queued or it is complete. Re-entered (from a
 * fill or an owner's answer given inside finish_response) it returns and the outer loop goes on. */
static void flush(struct sc_h1srv_conn *c)
{
    if (c->in_flush) {
        return;
    }
    c->in_flush = true;
    while (!c->closing && !c->wpending && c->state == ST_SEND) {
        if (c->out.len == 0) {
            if (c->resp_done) {
                finish_response(c);
                continue;
            }
            if (!c->fill) {
                break; /* the owner has not answered yet */
            }
            int r = c->fill(c->fill_arg, &c->out);
            if (r < 0) {
                conn_close(c);
                break;
            }
            if (r == 1) {
                c->resp_done = true;
                c->fill = NULL;
            }
            continue;
        }
        uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
        int rc = sc_xport_write(c->top, &b, 1);
        if (rc < 0) {
            conn_close(c);
            break;
        }
        if (rc == 1) {
            c->wpending = true;
            break;
        }
        sc_buf_reset(&c->out);
    }
    c->in_flush = false;
}

static void on_write_done(void *owner, int status)
{
    struct sc_h1srv_conn *c = owner;
    bool cont = c->cont_pending;
    c->wpending = false;
    c->cont_pending = false;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    c->last_active = uv_now(c->s->loop);
    if (c->state == ST_SEND) {
        if (!cont) {
            sc_buf_reset(&c->out);
        }
        flush(c);
    }
}

static void send_continue(struct sc_h1srv_conn *c)
{
    static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
    c->sent_continue = true;
    int rc = sc_xport_write(c->top, &b, 1);
    if (rc < 0) {
        conn_close(c);
    } else if (rc == 1) {
        c->wpending = true;
        c->cont_pending = true;
    }
}

/* Hands the complete request to the owner. <parsed> is its head when it was parsed from the buffer
 * as it is now; NULL makes it parsed again (the buffer may have moved while the body came in). */
static void dispatch(struct sc_h1srv_conn *c, const struct sc_http_msg *parsed)
{
    struct sc_h1srv *s = c->s;
    struct sc_http_header headers[SC_H1SRV_MAX_HEADERS];
    struct sc_http_msg again = { .headers = headers };
    struct sc_http_error err = { 0 };
    if (!parsed) {
        if (sc_http1_parse_request(c->in.p, c->hlen, 0, &s->lim, &again, s->o.max_headers, &err) <=
            0) {
            conn_close(c);
            return;
        }
        parsed = &again;
    }
    const struct sc_http_msg *m = parsed;
    struct sc_h1srv_req req = { .msg = m, .method = m->method };
    if (c->body_kind == SC_HTTP_BODY_LENGTH) {
        req.body = sc_str_n(c->in.p + c->hlen, (size_t)c->clen);
        c->req_len = c->hlen + (size_t)c->clen;
    } else {
        req.body = sc_buf_str(&c->body);
        c->req_len = c->hlen;
    }
    struct sc_str target = m->target;
    req.path = sc_str_split(&target, '?');
    req.query = target;
    c->close_after = !m->keep_alive || m->upgrade || s->closing;
    c->is_head = sc_str_eq(m->method, SC_STR("HEAD"));
    c->state = ST_OWNER;
    sc_xport_read_stop(c->top);
    s->cbs->request(s->arg, c, &req);
}

/* Reads the chunked body that follows the head, decoding it into c->body and dropping the framing
 * from c->in. Returns 1 when complete, 0 for more, or a negative error after replying. */
static int take_chunks(struct sc_h1srv_conn *c)
{
    for (;;) {
        size_t avail = c->in.len - c->hlen;
        size_t used = 0;
        struct sc_str data = SC_STR_NULL;
        struct sc_http_error err = { 0 };
        int r = sc_http1_chunked_next(&c->dec, c->in.p + c->hlen, avail, &used, &data, &err);
        if (r < 0) {
            reply_error(c, err.status, err.reason);
            return r;
        }
        if (r == SC_HTTP1_CHUNK_DATA && sc_buf_append(&c->body, data.p, data.len) < 0) {
            reply_error(c, 413, "request body too large");
            return SC_ETOOBIG;
        }
        memmove(c->in.p + c->hlen, c->in.p + c->hlen + used, avail - used);
        c->in.len -= used;
        if (r == SC_HTTP1_CHUNK_DONE) {
            return 1;
        }
        if (r == SC_HTTP1_CHUNK_MORE) {
            return 0;
        }
    }
}

/* Takes as much of the current request from c->in as is there: the head, then the body; a
 * complete request goes to the owner. */
static void process(struct sc_h1srv_conn *c)
{
    struct sc_h1srv *s = c->s;
    if (c->state != ST_RECV || c->closing) {
        return;
    }
    struct sc_http_header headers[SC_H1SRV_MAX_HEADERS];
    struct sc_http_msg msg = { .headers = headers };
    bool parsed = false;
    if (c->hlen == 0) {
        if (c->in.len == 0) {
            read_on(c);
            return;
        }
        struct sc_http_error err = { 0 };
        int n = sc_http1_parse_request(c->in.p, c->in.len, c->last_len, &s->lim, &msg,
                                       s->o.max_headers, &err);
        if (n < 0) {
            reply_error(c, err.status, err.reason);
            return;
        }
        if (n == 0) {
            c->last_len = c->in.len;
            read_on(c);
            return;
        }
        c->hlen = (size_t)n;
        c->last_len = 0;
        parsed = true;
        c->body_kind = msg.body;
        c->clen = msg.content_length;
        c->expect_continue = msg.expect_continue && msg.minor_version == 1;
        if (msg.body == SC_HTTP_BODY_LENGTH && msg.content_length > s->o.max_body) {
            reply_error(c, 413, "request body too large");
            return;
        }
        if (msg.body == SC_HTTP_BODY_CHUNKED) {
            sc_http1_chunked_init(&c->dec);
            sc_buf_reset(&c->body);
        }
    }
    bool complete = true;
    if (c->body_kind == SC_HTTP_BODY_LENGTH) {
        complete = c->in.len - c->hlen >= c->clen;
    } else if (c->body_kind == SC_HTTP_BODY_CHUNKED) {
        int r = take_chunks(c);
        if (r < 0) {
            return;
        }
        complete = r == 1;
    }
    if (!complete) {
        if (c->expect_continue && !c->sent_continue && !c->wpending) {
            send_continue(c);
        }
        read_on(c);
        return;
    }
    /* parsed in this call: the buffer has not moved since (chunk decoding moves only the bytes
     * after the head) */
    dispatch(c, parsed ? &msg : NULL);
}

static void on_alloc(void *owner, uv_buf_t *buf)
{
    struct sc_h1srv_conn *c = owner;
    if (c->state == ST_LINGER) {
        sc_buf_reset(&c->in);
    }
    sc_xport_alloc_buf(&c->in, buf);
}

static void on_read(void *owner, ssize_t nread)
{
    struct sc_h1srv_conn *c = owner;
    if (c->closing) {
        return;
    }
    if (nread == UV_ENOBUFS && c->state == ST_RECV) {
        if (c->hlen == 0) {
            reply_error(c, 431, "request head too large");
        } else {
            reply_error(c, 413, "request body too large");
        }
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->last_active = uv_now(c->s->loop);
    if (c->state == ST_LINGER) {
        c->in.len = 0;
        return;
    }
    c->in.len += (size_t)nread;
    process(c);
}

static void on_connected(void *owner, int status)
{
    (void)owner;
    (void)status; /* accepted connections do not connect */
}

static const struct sc_xport_cbs conn_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_closed,
};

static void on_connection(uv_stream_t *server, int status)
{
    struct sc_h1srv *s = server->data;
    if (status < 0) {
        sc_warn("http server: accept failed", SC_LERR(status));
        return;
    }
    struct sc_h1srv_conn *c = SC_NEW(struct sc_h1srv_conn);
    c->s = s;
    sc_tcp_xport_init(&c->tcp, s->loop, &conn_cbs, c);
    c->top = &c->tcp.base;
    sc_buf_init(&c->in, s->o.max_head + s->o.max_body + CHUNK_SLACK);
    sc_buf_init(&c->body, s->o.max_body);
    sc_buf_init(&c->out, s->o.max_resp + 65536);
    s->handles++;
    s->nconns++;
    sc_list_append(&s->conns, &c->link);
    c->last_active = uv_now(s->loop);
    if (uv_accept(server, (uv_stream_t *)&c->tcp.tcp) < 0 || s->closing) {
        conn_close(c);
        return;
    }
    /* TCP_NODELAY comes from the listener (sc_tcp_listen). */
    if (s->cbs->wrap) {
        struct sc_xport *top = s->cbs->wrap(s->arg, &c->tcp.base);
        if (!top) {
            conn_close(c);
            return;
        }
        c->top = top;
    }
    if (s->nconns > s->o.max_conns) {
        reply_error(c, 503, "too many connections");
        return;
    }
    read_on(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct sc_h1srv *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &s->conns)
    {
        struct sc_h1srv_conn *c = sc_list_entry(pos, struct sc_h1srv_conn, link);
        uint64_t limit = c->state == ST_LINGER ? s->o.linger_ms : s->o.idle_ms;
        if (c->state != ST_OWNER && now - c->last_active > limit) {
            conn_close(c);
        }
    }
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct sc_h1srv *s = h->data;
    s->handles--;
    maybe_free(s);
}

struct sc_h1srv *sc_h1srv_new(uv_loop_t *loop, const struct sc_h1srv_opts *opts,
                              const struct sc_h1srv_cbs *cbs, void *arg)
{
    struct sc_h1srv *s = SC_NEW(struct sc_h1srv);
    s->loop = loop;
    s->cbs = cbs;
    s->arg = arg;
    if (opts) {
        s->o = *opts;
    }
    struct sc_h1srv_opts *o = &s->o;
    o->max_conns = o->max_conns ? o->max_conns : 64;
    o->max_head = o->max_head ? o->max_head : 64 * 1024;
    o->max_headers = o->max_headers ? o->max_headers : 64;
    if (o->max_headers > SC_H1SRV_MAX_HEADERS) {
        o->max_headers = SC_H1SRV_MAX_HEADERS;
    }
    o->max_body = o->max_body ? o->max_body : 1024 * 1024;
    o->max_resp = o->max_resp ? o->max_resp : 64u * 1024 * 1024;
    o->idle_ms = o->idle_ms ? o->idle_ms : 60000;
    o->linger_ms = o->linger_ms ? o->linger_ms : 2000;
    o->backlog = o->backlog ? o->backlog : 128;
    s->lim = sc_http1_default_limits;
    s->lim.max_head = o->max_head;
    s->lim.max_headers = o->max_headers;
    sc_list_init(&s->conns);
    return s;
}

int sc_h1srv_listen(struct sc_h1srv *s, const struct sockaddr *addr, char **err)
{
    s->listening = true;
    s->handles += 2;
    int rc = sc_tcp_listen(s->loop, &s->listener, addr, s->o.backlog, false, on_connection, err);
    s->listener.data = s;
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    if (rc < 0) {
        return rc;
    }
    uint64_t every = (s->o.idle_ms < s->o.linger_ms ? s->o.idle_ms : s->o.linger_ms) / 2;
    every = every < 10 ? 10 : every;
    uv_timer_start(&s->sweep, on_sweep, every, every);
    uv_unref((uv_handle_t *)&s->sweep);
    return 0;
}

int sc_h1srv_address(struct sc_h1srv *s, char *out, size_t outlen)
{
    return sc_tcp_local_address(&s->listener, out, outlen);
}

void sc_h1srv_close(struct sc_h1srv *s)
{
    if (!s || s->closing) {
        return;
    }
    s->closing = true;
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
        uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
    }
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &s->conns)
    {
        struct sc_h1srv_conn *c = sc_list_entry(pos, struct sc_h1srv_conn, link);
        if (c->state == ST_OWNER || c->state == ST_SEND) {
            c->close_after = true; /* the answer in flight finishes first */
        } else {
            conn_close(c);
        }
    }
    maybe_free(s);
}

/* Appends a response head and body to <b>; nothing on failure. */
static int write_response(struct sc_buf *b, int status, const char *content_type,
                          const struct sc_http_header *headers, size_t nheaders, struct sc_str body,
                          bool close, bool head_only)
{
    size_t start = b->len;
    bool bodyless = status < 200 || status == 204 || status == 304;
    int rc = sc_http1_write_status_line(b, 1, status);
    if (rc == 0 && content_type) {
        rc = sc_http1_write_header(b, SC_STR("Content-Type"), sc_str_c(content_type));
    }
    for (size_t i = 0; rc == 0 && i < nheaders; i++) {
        rc = sc_http1_write_header(b, headers[i].name, headers[i].value);
    }
    if (rc == 0 && !bodyless) {
        char num[24];
        size_t n = sizeof(num);
        size_t v = body.len;
        do {
            num[--n] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        rc = sc_http1_write_header(b, SC_STR("Content-Length"), sc_str_n(num + n, sizeof(num) - n));
    }
    if (rc == 0 && close) {
        rc = sc_buf_append_cstr(b, "Connection: close\r\n");
    }
    if (rc == 0) {
        rc = sc_buf_append(b, "\r\n", 2);
    }
    if (rc == 0 && !head_only && !bodyless) {
        rc = sc_buf_append_str(b, body);
    }
    if (rc < 0) {
        b->len = start;
    }
    return rc;
}

int sc_h1srv_respond(struct sc_h1srv_conn *c, int status, const char *content_type,
                     const struct sc_http_header *headers, size_t nheaders, struct sc_str body)
{
    if (c->closing || c->state != ST_OWNER) {
        return c->closing ? 0 : SC_EINVAL;
    }
    if (c->s->closing) {
        c->close_after = true;
    }
    sc_buf_reset(&c->out);
    int rc = write_response(&c->out, status, content_type, headers, nheaders, body, c->close_after,
                            c->is_head);
    if (rc < 0) {
        static const char why[] = "response too large\n";
        c->close_after = true;
        (void)write_response(&c->out, 500, "text/plain; charset=utf-8", NULL, 0,
                             sc_str_n(why, sizeof(why) - 1), true, c->is_head);
    }
    c->state = ST_SEND;
    c->resp_done = true;
    flush(c);
    return rc;
}

void sc_h1srv_stream(struct sc_h1srv_conn *c, sc_h1srv_fill_cb fill, void *arg)
{
    if (c->closing || c->state != ST_OWNER) {
        return;
    }
    c->fill = fill;
    c->fill_arg = arg;
    c->state = ST_SEND;
    c->resp_done = false;
    sc_buf_reset(&c->out);
    flush(c);
}

bool sc_h1srv_keep_alive(const struct sc_h1srv_conn *c)
{
    return !c->close_after && !c->s->closing;
}

void sc_h1srv_close_after(struct sc_h1srv_conn *c)
{
    c->close_after = true;
}

void sc_h1srv_after(struct sc_h1srv_conn *c, sc_h1srv_after_cb cb, void *arg)
{
    c->after = cb;
    c->after_arg = arg;
}

void sc_h1srv_abort(struct sc_h1srv_conn *c)
{
    conn_close(c);
}

void sc_h1srv_set_data(struct sc_h1srv_conn *c, void *data)
{
    c->data = data;
}

void *sc_h1srv_data(const struct sc_h1srv_conn *c)
{
    return c->data;
}

struct sc_xport *sc_h1srv_xport(struct sc_h1srv_conn *c)
{
    return c->top;
}
