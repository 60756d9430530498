// SPDX-License-Identifier: Apache-2.0
// The webhook's HTTPS server: what the API server talks to. TCP connections get a TLS layer
// (net/tls) from a reloadable store, so a renewed certificate and key (cert-manager rewriting the
// secret volume) serve new connections without a restart while open ones keep theirs; requests
// are HTTP/1.1 with keep-alive (the API server reuses connections), parsed by net/http1 and
// dispatched to handlers with the admin server's signature, so the webhook's routes plug into
// either server. Bounded: 256 connections (more are closed at accept), 64 KiB heads, 1 MiB bodies
// (413), no chunked request bodies (411), connections idle for 60 s are closed; a response is
// written whole before the next request on the connection is read.
#include "roles/inject/webhook.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/http1.h"
#include "net/tcp.h"
#include "net/tls.h"

#define HS_MAX_CONNS 256
#define HS_MAX_HEAD (64u << 10)
#define HS_MAX_BODY (1u << 20)
#define HS_MAX_RESP (64u << 20)
#define HS_IDLE_MS 60000
#define HS_MAX_ROUTES 16
#define HS_MAX_HEADERS 64

struct hs_route {
    const char *method;
    const char *path;
    sc_admin_handler_cb cb;
    void *arg;
};

struct hs_conn;

struct webhook_https {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    struct sc_tls_store *store;
    struct hs_route routes[HS_MAX_ROUTES];
    size_t nroutes;
    struct hs_conn *conns; /* open connections, a doubly linked list */
    size_t nconns;
    bool closing;
    bool inited; /* the listener handle was initialised (by sc_tcp_listen) */
    int handles; /* the listener's close callback still to come */
};

struct hs_conn {
    struct webhook_https *s;
    struct hs_conn *prev, *next;
    struct sc_tcp_xport tcp;
    struct sc_xport *top;
    uv_timer_t idle;
    struct sc_buf in;
    struct sc_buf out;
    size_t last_len;
    int pending; /* close callbacks still to come: the transport and the timer */
    bool writing;
    bool close_after;
    bool closing;
};

static void conn_close(struct hs_conn *c);
static void process(struct hs_conn *c);
static void send_out(struct hs_conn *c);

/* The server's memory goes once its listener and every connection have closed. */
static void maybe_free(struct webhook_https *s)
{
    if (s->closing && s->handles == 0 && s->nconns == 0) {
        sc_tls_store_free(s->store);
        sc_free(s);
    }
}

static void conn_free(struct hs_conn *c)
{
    struct webhook_https *s = c->s;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    s->nconns--;
    sc_buf_cleanup(&c->in);
    sc_buf_cleanup(&c->out);
    sc_free(c);
    maybe_free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct hs_conn *c = h->data;
    if (--c->pending == 0) {
        conn_free(c);
    }
}

static void on_alloc(void *owner, uv_buf_t *buf)
{
    struct hs_conn *c = owner;
    size_t room = c->in.max - c->in.len;
    size_t want = room < 16384 ? room : 16384;
    if (want == 0 || sc_buf_reserve(&c->in, want) < 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)want);
}

static void on_read(void *owner, ssize_t nread)
{
    struct hs_conn *c = owner;
    if (nread < 0) {
        if (nread == UV_ENOBUFS && !c->writing) {
            /* The request is larger than a head and a body may be. */
            c->in.len = 0;
            sc_buf_append_cstr(&c->out, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                                        "Connection: close\r\n\r\n");
            c->close_after = true;
            send_out(c);
            return;
        }
        conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    uv_timer_again(&c->idle);
    process(c);
}

static void on_write_done(void *owner, int status)
{
    struct hs_conn *c = owner;
    c->writing = false;
    sc_buf_reset(&c->out);
    if (status < 0 || c->close_after) {
        conn_close(c);
        return;
    }
    sc_xport_read_start(c->top);
    process(c);
}

static void on_connected(void *owner, int status)
{
    (void)owner;
    (void)status;
}

static void on_xport_closed(void *owner)
{
    struct hs_conn *c = owner;
    if (--c->pending == 0) {
        conn_free(c);
    }
}

static const struct sc_xport_cbs conn_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_xport_closed,
};

static void conn_close(struct hs_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    uv_timer_stop(&c->idle);
    uv_close((uv_handle_t *)&c->idle, on_timer_closed);
    sc_xport_close(c->top);
}

static void on_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

/* Writes the response in <c->out>. Written at once, the caller goes on with the next request;
 * queued, reading pauses until on_write_done. */
static void send_out(struct hs_conn *c)
{
    uv_buf_t iov = uv_buf_init(c->out.p, (unsigned)c->out.len);
    int rc = sc_xport_write(c->top, &iov, 1);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (rc == 1) {
        c->writing = true;
        sc_xport_read_stop(c->top);
        return;
    }
    sc_buf_reset(&c->out);
    if (c->close_after) {
        conn_close(c);
    }
}

static void respond(struct hs_conn *c, int status, const char *type, const struct sc_buf *body,
                    bool keep_alive)
{
    sc_buf_reset(&c->out);
    size_t n = body ? body->len : 0;
    if (sc_http1_write_status_line(&c->out, 1, status) < 0 ||
        sc_buf_appendf(&c->out, "Content-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                       type ? type : "text/plain; charset=utf-8", n,
                       keep_alive ? "" : "Connection: close\r\n") < 0 ||
        (n && sc_buf_append(&c->out, body->p, n) < 0)) {
        conn_close(c);
        return;
    }
    c->close_after = !keep_alive;
    send_out(c);
}

static void respond_text(struct hs_conn *c, int status, const char *text)
{
    struct sc_buf b;
    sc_buf_init(&b, 1024);
    sc_buf_appendf(&b, "%s\n", text);
    respond(c, status, NULL, &b, false);
    sc_buf_cleanup(&b);
}

static void dispatch(struct hs_conn *c, const struct sc_http_msg *msg, struct sc_str body)
{
    struct sc_str target = msg->target;
    const char *q = memchr(target.p, '?', target.len);
    struct sc_admin_req req = {
        .method = msg->method,
        .path = sc_str_n(target.p, q ? (size_t)(q - target.p) : target.len),
        .query = q ? sc_str_n(q + 1, target.len - (size_t)(q + 1 - target.p)) : SC_STR_NULL,
        .body = body,
        .msg = msg,
    };
    const struct hs_route *found = NULL;
    bool path_known = false;
    for (size_t i = 0; i < c->s->nroutes; i++) {
        const struct hs_route *r = &c->s->routes[i];
        if (sc_str_eq(req.path, sc_str_c(r->path))) {
            path_known = true;
            if (sc_str_eq(req.method, sc_str_c(r->method))) {
                found = r;
            }
        }
    }
    struct sc_admin_resp resp = { .status = 200 };
    sc_buf_init(&resp.body, HS_MAX_RESP);
    if (found) {
        found->cb(found->arg, &req, &resp);
    } else {
        resp.status = path_known ? 405 : 404;
        sc_buf_appendf(&resp.body, "%s\n", path_known ? "method not allowed" : "not found");
    }
    respond(c, resp.status, resp.content_type, &resp.body, msg->keep_alive);
    sc_buf_cleanup(&resp.body);
}

/* Handles every complete request in <c->in>, one at a time. */
static void process(struct hs_conn *c)
{
    while (!c->writing && !c->closing && c->in.len > 0) {
        struct sc_http_header headers[HS_MAX_HEADERS];
        struct sc_http_msg msg = { .headers = headers };
        struct sc_http_error herr = { 0 };
        int head = sc_http1_parse_request(c->in.p, c->in.len, c->last_len, NULL, &msg,
                                          HS_MAX_HEADERS, &herr);
        if (head == 0) {
            c->last_len = c->in.len;
            return;
        }
        c->last_len = 0;
        if (head < 0) {
            respond_text(c, herr.status, herr.reason);
            return;
        }
        if (msg.body == SC_HTTP_BODY_CHUNKED) {
            respond_text(c, 411, "a Content-Length is required (no chunked request bodies)");
            return;
        }
        uint64_t len = msg.body == SC_HTTP_BODY_LENGTH ? msg.content_length : 0;
        if (len > HS_MAX_BODY) {
            respond_text(c, 413, "request body larger than 1 MiB");
            return;
        }
        if (c->in.len - (size_t)head < len) {
            return; /* the head is parsed again when the rest of the body is in */
        }
        dispatch(c, &msg, sc_str_n(c->in.p + head, (size_t)len));
        sc_buf_consume(&c->in, (size_t)head + (size_t)len);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct webhook_https *s = server->data;
    if (status < 0 || s->closing) {
        return;
    }
    struct hs_conn *c = sc_calloc(1, sizeof(*c));
    c->s = s;
    sc_buf_init(&c->in, HS_MAX_HEAD + HS_MAX_BODY);
    sc_buf_init(&c->out, HS_MAX_RESP + 4096);
    sc_tcp_xport_init(&c->tcp, s->loop, &conn_cbs, c);
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->nconns++;
    uv_timer_init(s->loop, &c->idle);
    c->idle.data = c;
    c->pending = 2;
    c->top = &c->tcp.base;
    if (uv_accept(server, (uv_stream_t *)&c->tcp.tcp) < 0 || s->nconns > HS_MAX_CONNS) {
        conn_close(c);
        return;
    }
    sc_tcp_tune(&c->tcp.tcp);
    struct sc_tls_ctx *ctx = sc_tls_store_get(s->store);
    struct sc_tls_xport_args args = {
        .loop = s->loop, .below = &c->tcp.base, .cbs = &conn_cbs, .owner = c
    };
    struct sc_xport *tls = sc_tls_xport_new(ctx, &args);
    sc_tls_ctx_unref(ctx);
    if (!tls) {
        conn_close(c);
        return;
    }
    c->top = tls;
    uv_timer_start(&c->idle, on_idle, HS_IDLE_MS, HS_IDLE_MS);
    if (sc_xport_read_start(c->top) < 0) {
        conn_close(c);
    }
}

struct webhook_https *webhook_https_new(uv_loop_t *loop, const char *cert, const char *key,
                                        char **err)
{
    struct sc_tls_server_opts o;
    memset(&o, 0, sizeof(o));
    sc_config_defaults(sc_tls_server_opt_table, &o);
    sc_free(o.cert);
    sc_free(o.key);
    o.cert = sc_strdup(cert);
    o.key = sc_strdup(key);
    struct sc_tls_store *store = sc_tls_store_new_server(&o, "webhook", err);
    sc_config_free(sc_tls_server_opt_table, &o);
    if (!store) {
        return NULL;
    }
    struct webhook_https *s = sc_calloc(1, sizeof(*s));
    s->loop = loop;
    s->store = store;
    return s;
}

void webhook_https_handle(struct webhook_https *s, const char *method, const char *path,
                          sc_admin_handler_cb cb, void *arg)
{
    if (s->nroutes < HS_MAX_ROUTES) {
        s->routes[s->nroutes++] = (struct hs_route){ method, path, cb, arg };
    }
}

int webhook_https_listen(struct webhook_https *s, const char *addr, char **err)
{
    struct sockaddr_storage ss;
    int rc = sc_addr_parse(addr, &ss, err);
    if (rc < 0) {
        return rc;
    }
    if (s->inited) {
        *err = sc_asprintf("the webhook server listens once");
        return SC_EINVAL;
    }
    rc = sc_tcp_listen(s->loop, &s->listener, (const struct sockaddr *)&ss, 128, false,
                       on_connection, err);
    s->listener.data = s;
    s->inited = true;
    s->handles = 1;
    if (rc < 0) {
        return rc;
    }
    s->listening = true;
    return sc_tls_store_watch(s->store, s->loop, 0);
}

int webhook_https_address(struct webhook_https *s, char *out, size_t outlen)
{
    return sc_tcp_local_address(&s->listener, out, outlen);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct webhook_https *s = h->data;
    s->handles--;
    maybe_free(s);
}

void webhook_https_close(struct webhook_https *s)
{
    if (!s || s->closing) {
        return;
    }
    s->closing = true;
    for (struct hs_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    if (s->inited) {
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    } else {
        maybe_free(s);
    }
}
