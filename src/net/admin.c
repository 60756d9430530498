// SPDX-License-Identifier: Apache-2.0
// The admin HTTP server. Requests on one connection are answered strictly in order: reading stops
// while a response is being written and resumes after it, so pipelined requests queue in the
// kernel, not in our memory. Every buffer is capped; a head or body over its cap gets 431/413 and
// the connection is closed after the reply.
#include "net/admin.h"

#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "net/addr.h"

#define MAX_CONNS 64
#define MAX_HEAD (64 * 1024)
#define MAX_BODY (1024 * 1024)
#define MAX_RESP_BODY (64u * 1024 * 1024)
#define IDLE_MS 60000
#define LINGER_MS 2000
#define MAX_HEADERS 64

struct route {
    const char *method;
    const char *path;
    sc_admin_handler_cb cb;
    void *arg;
};

struct sc_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    bool listening;
    bool closing;
    int handles; /* open handles (listener, timer, connections) */
    struct route *routes;
    size_t nroutes;
    struct sc_list conns;
    size_t nconns;
    sc_admin_after_cb after_cb; /* set by a handler during dispatch */
    void *after_arg;
};

struct conn {
    uv_tcp_t tcp;
    struct sc_admin *a;
    struct sc_list link;
    struct sc_buf in;
    size_t last_len;
    struct sc_buf out;
    uv_write_t wr;
    uv_shutdown_t shut;
    bool writing;
    bool close_after;
    bool lingering; /* reply sent and write side shut: reading and discarding until EOF */
    bool closing;
    bool sent_continue;
    uint64_t last_active;
    sc_admin_after_cb after_cb;
    void *after_arg;
};

static void on_conn_closed(uv_handle_t *h);
static void process(struct conn *c);
static void read_start(struct conn *c);

struct sc_admin *sc_admin_new(uv_loop_t *loop)
{
    struct sc_admin *a = SC_NEW(struct sc_admin);
    a->loop = loop;
    sc_list_init(&a->conns);
    return a;
}

void sc_admin_handle(struct sc_admin *a, const char *method, const char *path,
                     sc_admin_handler_cb cb, void *arg)
{
    a->routes = sc_reallocarray(a->routes, a->nroutes + 1, sizeof(*a->routes));
    a->routes[a->nroutes++] = (struct route){ method, path, cb, arg };
}

void sc_admin_after_response(struct sc_admin *a, sc_admin_after_cb cb, void *arg)
{
    a->after_cb = cb;
    a->after_arg = arg;
}

static void maybe_free(struct sc_admin *a)
{
    if (a->closing && a->handles == 0) {
        sc_free(a->routes);
        sc_free(a);
    }
}

static void conn_close(struct conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct sc_admin *a = c->a;
    sc_list_remove(&c->link);
    a->nconns--;
    sc_buf_cleanup(&c->in);
    sc_buf_cleanup(&c->out);
    sc_free(c);
    a->handles--;
    maybe_free(a);
}

/* The listener and the sweep timer carry the server in their data field. */
static void on_server_handle_closed(uv_handle_t *h)
{
    struct sc_admin *a = h->data;
    a->handles--;
    maybe_free(a);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_discard_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        conn_close(c);
    } else {
        c->in.len = 0;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    c->in.len = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_discard_read);
}

/* Closing right after a reply while the client is still sending would make the kernel answer
 * with a reset that can destroy the reply in flight; so shut the write side, drain what the client
 * still sends for a moment, then close (a "lingering close"). */
static void linger_close(struct conn *c)
{
    c->lingering = true;
    c->last_active = now_ms();
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = false;
    sc_buf_reset(&c->out);
    if (c->after_cb) {
        sc_admin_after_cb cb = c->after_cb;
        c->after_cb = NULL;
        cb(c->after_arg);
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after) {
        linger_close(c);
        return;
    }
    process(c);
}

static void send_out(struct conn *c)
{
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    c->writing = true;
    c->wr.data = c;
    uv_read_stop((uv_stream_t *)&c->tcp);
    int rc = uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        c->writing = false;
        conn_close(c);
    }
}

static void reply_error(struct conn *c, int status, const char *reason)
{
    sc_buf_reset(&c->out);
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", reason);
    sc_http1_write_simple(&c->out, status, "text/plain; charset=utf-8",
                          sc_str_n(body, n > 0 ? (size_t)n : 0), true);
    c->close_after = true;
    send_out(c);
}

/* Finds the route for <method> and <path>; HEAD runs the GET route (its body is not sent). Without
 * one, <allow> lists the methods <path> has (empty: no such path). */
static const struct route *find_route(struct sc_admin *a, struct sc_str method, struct sc_str path,
                                      char *allow, size_t allowlen)
{
    size_t alen = 0;
    allow[0] = '\0';
    if (sc_str_eq(method, sc_str_c("HEAD"))) {
        method = sc_str_c("GET");
    }
    for (size_t i = 0; i < a->nroutes; i++) {
        const struct route *r = &a->routes[i];
        if (!sc_str_eq(path, sc_str_c(r->path))) {
            continue;
        }
        if (sc_str_eq(method, sc_str_c(r->method))) {
            return r;
        }
        bool get = strcmp(r->method, "GET") == 0;
        int n = snprintf(allow + alen, allowlen - alen, "%s%s%s", alen ? ", " : "", r->method,
                         get ? ", HEAD" : "");
        if (n > 0 && (size_t)n < allowlen - alen) {
            alen += (size_t)n;
        }
    }
    return NULL;
}

static void dispatch(struct conn *c, const struct sc_http_msg *msg, struct sc_str body)
{
    struct sc_admin *a = c->a;
    struct sc_admin_req req = { .method = msg->method, .msg = msg, .body = body };
    struct sc_str target = msg->target;
    req.path = sc_str_split(&target, '?');
    req.query = target;

    struct sc_admin_resp resp = { .status = 200, .content_type = "text/plain; charset=utf-8" };
    sc_buf_init(&resp.body, MAX_RESP_BODY);
    char allow[128];
    const struct route *r = find_route(a, req.method, req.path, allow, sizeof(allow));
    if (r) {
        a->after_cb = NULL;
        r->cb(r->arg, &req, &resp);
        c->after_cb = a->after_cb;
        c->after_arg = a->after_arg;
        a->after_cb = NULL;
    } else if (allow[0]) {
        resp.status = 405;
        sc_buf_appendf(&resp.body, "method not allowed; allowed: %s\n", allow);
    } else {
        resp.status = 404;
        sc_buf_appendf(&resp.body, "not found: %.*s\n", SC_STR_FMT(req.path));
    }

    if (!msg->keep_alive || a->closing) {
        c->close_after = true;
    }
    sc_buf_reset(&c->out);
    int rc = sc_http1_write_simple(&c->out, resp.status, resp.content_type, sc_buf_str(&resp.body),
                                   c->close_after);
    if (rc == 0 && sc_str_eq(req.method, sc_str_c("HEAD"))) {
        c->out.len -= resp.body.len; /* the head, with the Content-Length a GET would get */
    }
    sc_buf_cleanup(&resp.body);
    if (rc < 0) {
        sc_buf_reset(&c->out);
        reply_error(c, 500, "response too large");
        return;
    }
    send_out(c);
}

/* Handles as many complete requests from c->in as possible, one response at a time. */
static void process(struct conn *c)
{
    while (!c->writing && !c->closing) {
        if (c->in.len == 0) {
            break;
        }
        struct sc_http_header headers[MAX_HEADERS];
        struct sc_http_msg msg = { .headers = headers };
        struct sc_http_error herr = { 0 };
        int hlen = sc_http1_parse_request(c->in.p, c->in.len, c->last_len, &sc_http_default_limits,
                                          &msg, MAX_HEADERS, &herr);
        if (hlen < 0) {
            reply_error(c, herr.status, herr.reason);
            return;
        }
        if (hlen == 0) {
            c->last_len = c->in.len;
            break;
        }
        size_t total = (size_t)hlen;
        struct sc_str body = SC_STR_NULL;
        if (msg.body == SC_HTTP_BODY_LENGTH) {
            if (msg.content_length > MAX_BODY) {
                reply_error(c, 413, "request body too large for the admin server (1 MiB)");
                return;
            }
            if (c->in.len - (size_t)hlen < msg.content_length) {
                if (msg.expect_continue && !c->sent_continue) {
                    static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                    uv_buf_t b = uv_buf_init(cont, sizeof(cont) - 1);
                    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
                    c->sent_continue = true;
                }
                c->last_len = 0; /* the head is complete: only the body is awaited */
                break;
            }
            body = sc_str_n(c->in.p + hlen, msg.content_length);
            total += msg.content_length;
        } else if (msg.body == SC_HTTP_BODY_CHUNKED) {
            /* Admin requests carry no meaningful bodies; chunked ones are declined plainly. */
            reply_error(c, 411,
                        "chunked request bodies are not accepted here; send Content-Length");
            return;
        }
        if (msg.upgrade) {
            c->close_after = true;
        }
        dispatch(c, &msg, body);
        sc_buf_consume(&c->in, total);
        c->last_len = 0;
        c->sent_continue = false;
        /* dispatch started a write: the loop ends; on_write resumes. */
    }
    if (!c->writing && !c->closing) {
        read_start(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    if (sc_buf_reserve(&c->in, 4096) < 0) {
        size_t room = c->in.max - c->in.len;
        if (room == 0 || sc_buf_reserve(&c->in, room) < 0) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)room);
        return;
    }
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (nread == UV_ENOBUFS) {
        reply_error(c, 431, "request too large for the admin server");
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    c->last_active = now_ms();
    process(c);
}

static void read_start(struct conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct sc_admin *a = server->data;
    if (status < 0) {
        sc_warn("admin accept failed", SC_LERR(status));
        return;
    }
    struct conn *c = SC_NEW(struct conn);
    c->a = a;
    sc_buf_init(&c->in, MAX_HEAD + MAX_BODY);
    sc_buf_init(&c->out, MAX_RESP_BODY + 4096);
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    a->handles++;
    a->nconns++;
    sc_list_append(&a->conns, &c->link);
    c->last_active = now_ms();
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (a->nconns > MAX_CONNS) {
        reply_error(c, 503, "too many admin connections");
        return;
    }
    read_start(c);
}

static void on_sweep(uv_timer_t *t)
{
    struct sc_admin *a = t->data;
    uint64_t now = now_ms();
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &a->conns)
    {
        struct conn *c = sc_list_entry(pos, struct conn, link);
        if (!c->writing && now - c->last_active > (c->lingering ? LINGER_MS : IDLE_MS)) {
            conn_close(c);
        }
    }
}

int sc_admin_listen(struct sc_admin *a, const char *addr, char **err)
{
    struct sockaddr_storage ss;
    int rc = sc_addr_parse(addr, &ss, err);
    if (rc < 0) {
        return rc;
    }
    uv_tcp_init(a->loop, &a->listener);
    a->listener.data = a;
    a->handles++;
    a->listening = true;
    rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    }
    if (rc < 0) {
        *err = sc_asprintf("admin: cannot listen on %s: %s", addr, uv_strerror(rc));
        return rc;
    }
    uv_timer_init(a->loop, &a->sweep);
    a->sweep.data = a;
    a->handles++;
    uv_timer_start(&a->sweep, on_sweep, LINGER_MS / 2, LINGER_MS / 2);
    uv_unref((uv_handle_t *)&a->sweep);
    return 0;
}

int sc_admin_address(struct sc_admin *a, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc = uv_tcp_getsockname(&a->listener, (struct sockaddr *)&ss, &len);
    if (rc == 0) {
        sc_addr_format((struct sockaddr *)&ss, out, outlen);
    }
    return rc;
}

void sc_admin_close(struct sc_admin *a)
{
    if (!a || a->closing) {
        return;
    }
    a->closing = true;
    if (a->listening) {
        uv_close((uv_handle_t *)&a->listener, on_server_handle_closed);
        if (a->sweep.loop) {
            uv_close((uv_handle_t *)&a->sweep, on_server_handle_closed);
        }
    }
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &a->conns)
    {
        struct conn *c = sc_list_entry(pos, struct conn, link);
        /* A response being written finishes first: its write callback closes the connection. */
        if (c->writing) {
            c->close_after = true;
        } else {
            conn_close(c);
        }
    }
    maybe_free(a);
}
