// SPDX-License-Identifier: Apache-2.0
// The admin HTTP server: a routing table over the HTTP/1.1 server of h1server.h, which does the
// connection work (strict in-order answers, capped heads and bodies, 431/413/400 with a reason,
// idle and lingering closes). Handlers answer synchronously, from inside the server's request
// callback, or defer: the connection then holds the pending request as its user data until the
// answer, and a connection closing first cancels it.
#include "net/admin.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/h1server.h"

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
    struct sc_h1srv *srv;
    struct route *routes;
    size_t nroutes;
    sc_admin_after_cb after_cb; /* set by a handler during dispatch */
    void *after_arg;
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom);
    void *wrap_arg;
    uint32_t max_conns;
    struct sc_h1srv_conn *cur;         /* the connection whose handler runs */
    struct sc_admin_pending *deferred; /* set by sc_admin_defer during dispatch */
    bool dispatching; /* a handler runs: sc_admin_close defers the free to its end */
    bool closed;
};

struct sc_admin_pending {
    struct sc_h1srv_conn *c;
    sc_admin_cancel_cb cancel;
    void *arg;
};

static void admin_free(struct sc_admin *a)
{
    sc_free(a->routes);
    sc_free(a);
}

struct sc_admin *sc_admin_new(uv_loop_t *loop)
{
    struct sc_admin *a = SC_NEW(struct sc_admin);
    a->loop = loop;
    return a;
}

void sc_admin_handle(struct sc_admin *a, const char *method, const char *path,
                     sc_admin_handler_cb cb, void *arg)
{
    a->routes = sc_reallocarray(a->routes, a->nroutes + 1, sizeof(*a->routes));
    a->routes[a->nroutes++] = (struct route){ method, path, cb, arg };
}

struct sc_admin_pending *sc_admin_defer(struct sc_admin *a, sc_admin_cancel_cb cancel, void *arg)
{
    struct sc_admin_pending *p = SC_NEW(struct sc_admin_pending);
    p->c = a->cur;
    p->cancel = cancel;
    p->arg = arg;
    a->deferred = p;
    return p;
}

void sc_admin_answer(struct sc_admin_pending *p, int status, const char *content_type,
                     struct sc_str body)
{
    sc_h1srv_set_data(p->c, NULL);
    sc_h1srv_respond(p->c, status, content_type ? content_type : "text/plain; charset=utf-8", NULL,
                     0, body);
    sc_free(p);
}

/* A connection closes: a request deferred on it will never be answered. */
static void on_conn_closed(void *arg, struct sc_h1srv_conn *c, void *data)
{
    struct sc_admin_pending *p = data;
    (void)arg;
    (void)c;
    if (p) {
        p->cancel(p->arg);
        sc_free(p);
    }
}

void sc_admin_after_response(struct sc_admin *a, sc_admin_after_cb cb, void *arg)
{
    a->after_cb = cb;
    a->after_arg = arg;
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

static void on_request(void *arg, struct sc_h1srv_conn *c, const struct sc_h1srv_req *hreq)
{
    struct sc_admin *a = arg;
    struct sc_admin_req req = {
        .method = hreq->method,
        .path = hreq->path,
        .query = hreq->query,
        .body = hreq->body,
        .msg = hreq->msg,
    };
    struct sc_admin_resp resp = { .status = 200, .content_type = "text/plain; charset=utf-8" };
    sc_buf_init(&resp.body, MAX_RESP_BODY);
    char allow[128];
    const struct route *r = find_route(a, req.method, req.path, allow, sizeof(allow));
    if (r) {
        a->after_cb = NULL;
        a->deferred = NULL;
        a->cur = c;
        a->dispatching = true;
        r->cb(r->arg, &req, &resp);
        a->dispatching = false;
        a->cur = NULL;
        if (a->after_cb) {
            sc_h1srv_after(c, a->after_cb, a->after_arg);
            a->after_cb = NULL;
        }
    } else if (allow[0]) {
        resp.status = 405;
        sc_buf_appendf(&resp.body, "method not allowed; allowed: %s\n", allow);
    } else {
        resp.status = 404;
        sc_buf_appendf(&resp.body, "not found: %.*s\n", SC_STR_FMT(req.path));
    }
    if (a->deferred) {
        sc_h1srv_set_data(c, a->deferred); /* answered later, or cancelled at the close */
        a->deferred = NULL;
    } else {
        sc_h1srv_respond(c, resp.status, resp.content_type, NULL, 0, sc_buf_str(&resp.body));
    }
    sc_buf_cleanup(&resp.body);
    if (a->closed) {
        admin_free(a); /* closed by the handler: the answer went out first */
    }
}

/* The server's wrap hook: the owner's layers, if any. Only called while the server listens, so
 * never after sc_admin_close. */
static struct sc_xport *admin_wrap(void *arg, struct sc_xport *bottom)
{
    struct sc_admin *a = arg;
    return a->wrap ? a->wrap(a->wrap_arg, bottom) : bottom;
}

static const struct sc_h1srv_cbs admin_cbs = {
    .request = on_request,
    .conn_closed = on_conn_closed,
    .wrap = admin_wrap,
};

void sc_admin_set_wrap(struct sc_admin *a, struct sc_xport *(*wrap)(void *arg, struct sc_xport *),
                       void *arg)
{
    a->wrap = wrap;
    a->wrap_arg = arg;
}

void sc_admin_set_max_conns(struct sc_admin *a, uint32_t n)
{
    a->max_conns = n;
}

int sc_admin_listen(struct sc_admin *a, const char *addr, char **err)
{
    struct sockaddr_storage ss;
    char *why = NULL;
    int rc = sc_addr_parse(addr, &ss, err);
    if (rc < 0) {
        return rc;
    }
    const struct sc_h1srv_opts o = {
        .max_conns = a->max_conns ? a->max_conns : MAX_CONNS,
        .max_head = MAX_HEAD,
        .max_headers = MAX_HEADERS,
        .max_body = MAX_BODY,
        .max_resp = MAX_RESP_BODY,
        .idle_ms = IDLE_MS,
        .linger_ms = LINGER_MS,
    };
    a->srv = sc_h1srv_new(a->loop, &o, &admin_cbs, a);
    rc = sc_h1srv_listen(a->srv, (const struct sockaddr *)&ss, &why);
    if (rc < 0) {
        *err = sc_asprintf("admin: cannot listen on %s: %s", addr, uv_strerror(rc));
    }
    sc_free(why);
    return rc;
}

int sc_admin_address(struct sc_admin *a, char *out, size_t outlen)
{
    return a->srv ? sc_h1srv_address(a->srv, out, outlen) : UV_EINVAL;
}

void sc_admin_close(struct sc_admin *a)
{
    if (!a || a->closed) {
        return;
    }
    a->closed = true;
    sc_h1srv_close(a->srv);
    if (!a->dispatching) {
        admin_free(a);
    }
}
