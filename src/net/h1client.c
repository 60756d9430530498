// SPDX-License-Identifier: Apache-2.0
// The HTTP/1.1 client of h1client.h. One input buffer holds the response head and, right after
// it, the decoded body: Content-Length and close-delimited bodies are already in place, chunked
// ones are decoded in place (data moved down over its framing), so the body is one view without a
// second buffer; a discarded or streamed body is dropped as it arrives. The request is written as
// soon as the chain is connected and reading starts at once, so a server that answers early (413)
// and closes is heard even when the write fails.
#include "net/h1client.h"

#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/tcp.h"

#define MAX_HEADERS 64
#define SLACK 16384 /* undecoded bytes the input buffer holds beyond head and kept body */

struct sc_h1cli {
    struct sc_oneshot os; /* first: the connection, its deadline and its handles */
    sc_h1cli_done_cb cb;
    void *arg;
    struct sc_buf out; /* the formatted request */
    struct sc_str send;
    uv_buf_t *send_iov; /* a gathered request (sc_h1cli_req.iov): the client's copy of the array,
                           or the caller's own when iov_writable */
    unsigned send_niov;
    bool own_iov; /* send_iov is the copy, freed with the client */
    struct sc_buf in;
    size_t last_len;
    size_t hlen;     /* the final head's length once parsed, else 0 */
    size_t body_len; /* decoded body bytes kept at in.p + hlen */
    uint64_t got;    /* decoded body bytes received, kept or not */
    enum sc_http_body kind;
    uint64_t clen;
    struct sc_http1_chunked dec;
    struct sc_http_limits lim;
    unsigned rflags;
    uint64_t max_body;
    int (*on_head)(void *arg, const struct sc_http_msg *head);
    int (*on_body)(void *arg, const char *p, size_t n);
    void *stream_arg;
    bool head_only, discard; /* discard: nothing kept (also when streamed to on_body) */
    int werr;                /* a failed write: reading goes on, the response or the end decides */
};
_Static_assert(offsetof(struct sc_h1cli, os) == 0, "sc_oneshot_on_closed takes the owner");

static void freed(void *owner)
{
    struct sc_h1cli *c = owner;
    sc_buf_cleanup(&c->out);
    sc_buf_cleanup(&c->in);
    if (c->own_iov) {
        sc_free(c->send_iov);
    }
    sc_free(c);
}

/* Reports <r> once, then closes the connection. */
static void finish(struct sc_h1cli *c, const struct sc_h1cli_resp *r)
{
    if (!sc_oneshot_finish(&c->os)) {
        return;
    }
    if (c->cb) {
        c->cb(c->arg, r);
    }
    sc_oneshot_close(&c->os);
}

static void fail(struct sc_h1cli *c, int error, const char *reason)
{
    struct sc_h1cli_resp r = { .error = error, .reason = reason };
    finish(c, &r);
}

static void complete(struct sc_h1cli *c)
{
    struct sc_http_header hdrs[MAX_HEADERS];
    struct sc_http_msg msg = { .headers = hdrs };
    struct sc_http_error err = { 0 };
    /* The head was checked when it arrived; parsed again because the buffer may have moved. */
    if (sc_http1_parse_response(c->in.p, c->hlen, 0, &c->lim, c->rflags, &msg, MAX_HEADERS, &err) <=
        0) {
        fail(c, SC_EHTTP, "malformed response");
        return;
    }
    struct sc_h1cli_resp r = {
        .status = msg.status,
        .msg = &msg,
        .body = sc_str_n(c->in.p + c->hlen, c->body_len),
    };
    finish(c, &r);
}

/* Keeps, streams or drops <n> decoded bytes found at <p> (inside the undecoded region). Returns 0,
 * or an error after failing the request. */
static int take(struct sc_h1cli *c, const char *p, size_t n)
{
    c->got += n;
    int rc = 0;
    if (c->on_body) {
        if (c->got > c->max_body) {
            rc = SC_ETOOBIG;
        } else if (n > 0 && (rc = c->on_body(c->stream_arg, p, n)) < 0) {
            fail(c, rc, "stopped by the receiver of the body");
            return rc;
        }
    } else if (!c->discard) {
        if (c->body_len + n > c->max_body) {
            rc = SC_ETOOBIG;
        } else {
            memmove(c->in.p + c->hlen + c->body_len, p, n);
            c->body_len += n;
        }
    }
    if (rc < 0) {
        fail(c, rc, "response body over the cap");
    }
    return rc;
}

/* Removes <n> undecoded bytes from the front of the undecoded region. */
static void drop_raw(struct sc_h1cli *c, size_t n)
{
    char *raw = c->in.p + c->hlen + c->body_len;
    size_t left = c->in.len - c->hlen - c->body_len - n;
    memmove(raw, raw + n, left);
    c->in.len = c->hlen + c->body_len + left;
}

/* Decodes what arrived of the body. Returns 1 when it is complete, 0 for more, or an error after
 * failing the request. */
static int body_progress(struct sc_h1cli *c)
{
    for (;;) {
        char *raw = c->in.p + c->hlen + c->body_len;
        size_t avail = c->in.len - c->hlen - c->body_len;
        if (c->kind == SC_HTTP_BODY_LENGTH || c->kind == SC_HTTP_BODY_EOF) {
            size_t n = avail;
            if (c->kind == SC_HTTP_BODY_LENGTH && n > c->clen - c->got) {
                n = (size_t)(c->clen - c->got);
            }
            int rc = take(c, raw, n);
            if (rc < 0) {
                return rc;
            }
            if (c->discard) {
                drop_raw(c, n); /* kept bytes are already in place */
            }
            return c->kind == SC_HTTP_BODY_LENGTH && c->got == c->clen;
        }
        if (c->kind != SC_HTTP_BODY_CHUNKED) {
            return 1;
        }
        size_t used = 0;
        struct sc_str data = SC_STR_NULL;
        struct sc_http_error err = { 0 };
        int r = sc_http1_chunked_next(&c->dec, raw, avail, &used, &data, &err);
        if (r < 0) {
            fail(c, SC_EHTTP, err.reason ? err.reason : "malformed chunked body");
            return r;
        }
        if (r == SC_HTTP1_CHUNK_DATA) {
            /* the data ends the consumed span: keep it, then drop the framing before it */
            size_t framing = used - data.len;
            int rc = take(c, data.p, data.len);
            if (rc < 0) {
                return rc;
            }
            if (!c->discard) {
                raw += data.len; /* the kept data now sits where the region began */
            }
            size_t left = avail - used;
            memmove(raw, raw + framing + (c->discard ? data.len : 0), left);
            c->in.len = (size_t)(raw - c->in.p) + left;
            continue;
        }
        drop_raw(c, used);
        if (r == SC_HTTP1_CHUNK_DONE) {
            return 1;
        }
        return 0;
    }
}

static void process(struct sc_h1cli *c)
{
    while (c->hlen == 0) {
        struct sc_http_header hdrs[MAX_HEADERS];
        struct sc_http_msg msg = { .headers = hdrs };
        struct sc_http_error err = { 0 };
        int n = sc_http1_parse_response(c->in.p, c->in.len, c->last_len, &c->lim, c->rflags, &msg,
                                        MAX_HEADERS, &err);
        if (n < 0) {
            fail(c, SC_EHTTP, err.reason ? err.reason : "malformed response");
            return;
        }
        if (n == 0) {
            c->last_len = c->in.len;
            return;
        }
        c->last_len = 0;
        if (msg.status < 200) {
            sc_buf_consume(&c->in, (size_t)n); /* an interim response: wait for the final one */
            continue;
        }
        c->hlen = (size_t)n;
        c->kind = msg.body;
        c->clen = msg.content_length;
        if (c->head_only) {
            c->in.len = c->hlen;
            complete(c);
            return;
        }
        int rc = c->on_head ? c->on_head(c->stream_arg, &msg) : 0;
        if (rc < 0) {
            fail(c, rc, "stopped by the receiver of the head");
            return;
        }
        if (c->kind == SC_HTTP_BODY_LENGTH && c->clen > c->max_body &&
            (!c->discard || c->on_body)) {
            fail(c, SC_ETOOBIG, "response body over the cap");
            return;
        }
        if (c->kind == SC_HTTP_BODY_CHUNKED) {
            sc_http1_chunked_init(&c->dec);
        }
    }
    int r = body_progress(c);
    if (r == 1) {
        complete(c);
    }
}

static void on_alloc(void *owner, uv_buf_t *buf)
{
    struct sc_h1cli *c = owner;
    sc_xport_alloc_buf(&c->in, buf);
}

static void on_read(void *owner, ssize_t nread)
{
    struct sc_h1cli *c = owner;
    if (c->os.done) {
        return;
    }
    if (nread == UV_ENOBUFS) {
        fail(c, SC_ETOOBIG, c->hlen ? "response body over the cap" : "response head over the cap");
        return;
    }
    if (nread == UV_EOF && c->hlen && c->kind == SC_HTTP_BODY_EOF) {
        complete(c);
        return;
    }
    if (nread < 0) {
        if (c->werr) {
            fail(c, c->werr, uv_strerror(c->werr));
        } else if (nread == UV_EOF) {
            fail(c, SC_ECLOSED,
                 c->hlen ? "closed in the response body" : "closed before a response");
        } else {
            fail(c, (int)nread, uv_strerror((int)nread));
        }
        return;
    }
    c->in.len += (size_t)nread;
    process(c);
}

static void on_write_done(void *owner, int status)
{
    struct sc_h1cli *c = owner;
    if (status < 0 && !c->os.done) {
        c->werr = status;
    }
}

static void on_connected(void *owner, int status)
{
    struct sc_h1cli *c = owner;
    if (c->os.done) {
        return;
    }
    if (status < 0) {
        fail(c, status, sc_oneshot_error(&c->os, status));
        return;
    }
    int rc = sc_xport_read_start(c->os.top);
    if (rc < 0) {
        fail(c, rc, uv_strerror(rc));
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->send.p, (unsigned)c->send.len);
    rc = c->send_niov ? sc_xport_write(c->os.top, c->send_iov, c->send_niov)
                      : sc_xport_write(c->os.top, &b, 1);
    if (rc < 0) {
        c->werr = rc; /* the peer may have answered already: the read decides */
    }
}

static void on_deadline(uv_timer_t *t)
{
    fail(t->data, UV_ETIMEDOUT, "timed out");
}

static const struct sc_xport_cbs cli_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = sc_oneshot_on_closed,
};

/* Formats the request of <req> into <b>. Returns 0, SC_EINVAL or SC_ETOOBIG. */
static int format_request(struct sc_buf *b, const struct sc_h1cli_req *req)
{
    int rc = sc_http1_write_request_line(b, req->method, req->target);
    for (size_t i = 0; rc == 0 && i < req->nheaders; i++) {
        rc = sc_http1_write_header(b, req->headers[i].name, req->headers[i].value);
    }
    bool with_length = req->body.len > 0 || sc_str_eq(req->method, SC_STR("POST")) ||
                       sc_str_eq(req->method, SC_STR("PUT")) ||
                       sc_str_eq(req->method, SC_STR("PATCH"));
    if (rc == 0 && with_length) {
        rc = sc_buf_appendf(b, "Content-Length: %zu\r\n", req->body.len);
    }
    if (rc == 0) {
        rc = sc_buf_append_cstr(b, "Connection: close\r\n\r\n");
    }
    if (rc == 0) {
        rc = sc_buf_append_str(b, req->body);
    }
    return rc;
}

int sc_h1cli_send(uv_loop_t *loop, const struct sockaddr *addr, const struct sc_h1cli_req *req,
                  sc_h1cli_done_cb cb, void *arg, struct sc_h1cli **out)
{
    struct sc_h1cli *c = SC_NEW(struct sc_h1cli);
    c->cb = cb;
    c->arg = arg;
    c->head_only = req->head_only;
    c->discard = req->discard_body || req->on_body;
    c->on_head = req->on_body ? req->on_head : NULL;
    c->on_body = req->on_body;
    c->stream_arg = req->stream_arg;
    c->max_body = req->max_body ? req->max_body : 1024 * 1024;
    uint32_t max_head = req->max_head ? req->max_head : 16 * 1024;
    c->lim = sc_http1_default_limits;
    c->lim.max_head = max_head;
    c->lim.max_line = max_head < c->lim.max_line ? max_head : c->lim.max_line;
    c->lim.max_headers = MAX_HEADERS;
    c->rflags = sc_str_eq(req->method, SC_STR("HEAD")) ? SC_HTTP_RESP_TO_HEAD : 0;
    sc_buf_init(&c->in, max_head + (c->head_only || c->discard ? 0 : c->max_body) + SLACK);
    c->in.sensitive = req->sensitive;
    if (req->raw.len) {
        sc_buf_init(&c->out, 0);
        c->send = req->raw;
    } else if (req->niov) {
        /* The transport moves through the array as the socket takes the bytes: a copy unless
         * the caller lets it write into its own. */
        sc_buf_init(&c->out, 0);
        if (req->iov_writable) {
            c->send_iov = (uv_buf_t *)req->iov;
        } else {
            c->send_iov = sc_reallocarray(NULL, req->niov, sizeof(*c->send_iov));
            memcpy(c->send_iov, req->iov, req->niov * sizeof(*c->send_iov));
            c->own_iov = true;
        }
        c->send_niov = req->niov;
    } else {
        sc_buf_init(&c->out, 65536 + req->body.len);
        c->out.sensitive = req->sensitive;
        int rc = format_request(&c->out, req);
        if (rc < 0) {
            sc_buf_cleanup(&c->out);
            sc_buf_cleanup(&c->in);
            sc_free(c);
            return rc;
        }
        c->send = sc_buf_str(&c->out);
    }
    uint64_t timeout = req->timeout_ms ? req->timeout_ms : 10000;
    const struct sc_oneshot_args a = {
        .cbs = &cli_cbs,
        .owner = c,
        .wrap = req->wrap,
        .wrap_arg = req->wrap_arg,
        .timeout_ms = timeout,
        .on_deadline = on_deadline,
        .freed = freed,
    };
    int rc = sc_oneshot_start(&c->os, loop, addr, &a);
    if (rc == 0 && out) {
        *out = c;
    }
    return rc; /* failed: <c> is freed once its handles closed */
}

void sc_h1cli_cancel(struct sc_h1cli *c)
{
    if (c) {
        sc_oneshot_cancel(&c->os);
    }
}

/* ---- by host name ---- */

/* True when a proxy variable libcurl would honour for http:// is set. */
static bool proxy_in_env(void)
{
    static const char *const vars[] = { "http_proxy", "all_proxy", "ALL_PROXY" };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            return true;
        }
    }
    return false;
}

void sc_h1cli_url_free(struct sc_h1cli_url *u)
{
    sc_free(u->host);
    sc_free(u->authority);
    sc_free(u->target);
    *u = (struct sc_h1cli_url){ 0 };
}

bool sc_h1cli_url_parse(const char *url, struct sc_h1cli_url *u)
{
    *u = (struct sc_h1cli_url){ 0 };
    if (strncmp(url, "http://", 7) != 0 || proxy_in_env()) {
        return false;
    }
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || memchr(a, '@', alen)) {
        return false;
    }
    const char *port = NULL;
    size_t hlen = 0;
    const char *h = a;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close) {
            return false;
        }
        h = a + 1;
        hlen = (size_t)(close - h);
        if (close + 1 < a + alen && close[1] != ':') {
            return false;
        }
        port = close + 1 < a + alen ? close + 2 : NULL;
    } else {
        const char *colon = memchr(a, ':', alen);
        hlen = colon ? (size_t)(colon - a) : alen;
        port = colon ? colon + 1 : NULL;
    }
    uint64_t pn = 80;
    if (port &&
        (sc_str_to_u64((struct sc_str){ port, (size_t)(a + alen - port) }, 65535, &pn) < 0 ||
         pn == 0)) {
        return false;
    }
    if (hlen == 0) {
        return false;
    }
    const char *rest = a + alen;
    size_t tlen = strcspn(rest, "#");
    u->host = sc_strndup(h, hlen);
    u->port = (uint16_t)pn;
    u->authority = sc_strndup(a, alen);
    u->target = *rest == '/' ? sc_strndup(rest, tlen) : sc_asprintf("/%.*s", (int)tlen, rest);
    return true;
}

struct sc_h1cli_named {
    uv_loop_t *loop;
    uv_getaddrinfo_t gai;
    uv_timer_t timer; /* the deadline while resolving */
    uint64_t started; /* loop time of sc_h1cli_send_host */
    uint64_t timeout_ms;
    bool resolving;
    bool timer_open;
    bool cancelled; /* by the caller or the deadline: the resolver's answer is dropped */
    bool dead;      /* released: freed once the resolver and the timer are done */
    struct sc_h1cli *cli;
    sc_h1cli_done_cb cb;
    void *arg;
    struct sc_h1cli_req req; /* the options; the request itself is in <raw> (or req.iov, the
                                caller's array: borrowed until the callback) */
    struct sc_buf raw;
    char *host;
    char port[8];
};

/* Frees <n> once neither the resolver nor the timer can call back into it. */
static void named_release(struct sc_h1cli_named *n)
{
    n->dead = true;
    if (n->resolving || n->timer_open) {
        return;
    }
    sc_buf_cleanup(&n->raw);
    sc_free(n->host);
    sc_free(n);
}

static void on_named_timer_closed(uv_handle_t *h)
{
    struct sc_h1cli_named *n = h->data;
    n->timer_open = false;
    if (n->dead) {
        named_release(n);
    }
}

static void named_timer_close(struct sc_h1cli_named *n)
{
    if (n->timer_open && !uv_is_closing((uv_handle_t *)&n->timer)) {
        uv_close((uv_handle_t *)&n->timer, on_named_timer_closed);
    }
}

static void on_named_done(void *arg, const struct sc_h1cli_resp *resp)
{
    struct sc_h1cli_named *n = arg;
    n->cli = NULL;
    n->cb(n->arg, resp);
    named_release(n);
}

static int named_send(struct sc_h1cli_named *n, const struct sockaddr *addr)
{
    return sc_h1cli_send(n->loop, addr, &n->req, on_named_done, n, &n->cli);
}

/* Reports <error> with the reason "cannot <what> <host>: <msg>" (or <msg> alone when <what> is
 * NULL); <n> is released. */
static void named_fail(struct sc_h1cli_named *n, int error, const char *what, const char *msg)
{
    char why[200];
    if (what) {
        snprintf(why, sizeof(why), "cannot %s %s: %s", what, n->host, msg);
    } else {
        snprintf(why, sizeof(why), "%s %s", msg, n->host);
    }
    struct sc_h1cli_resp r = { .error = error, .reason = why };
    n->cb(n->arg, &r);
    named_release(n);
}

/* The deadline passed while resolving: reported at once; the resolver's answer, whenever it
 * comes, is dropped. */
static void on_named_deadline(uv_timer_t *t)
{
    struct sc_h1cli_named *n = t->data;
    named_timer_close(n);
    if (!n->resolving || n->cancelled) {
        return;
    }
    n->cancelled = true;
    uv_cancel((uv_req_t *)&n->gai);
    named_fail(n, UV_ETIMEDOUT, NULL, "timed out resolving");
}

static void on_named_resolved(uv_getaddrinfo_t *gai, int status, struct addrinfo *res)
{
    struct sc_h1cli_named *n = gai->data;
    n->resolving = false;
    named_timer_close(n);
    if (n->cancelled) {
        uv_freeaddrinfo(res);
        named_release(n); /* released already by the cancel or the deadline */
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        int err = status < 0 ? status : UV_EAI_NONAME;
        named_fail(n, err, "resolve", uv_strerror(err));
        return;
    }
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    uint64_t spent = uv_now(n->loop) - n->started;
    n->req.timeout_ms = spent < n->timeout_ms ? n->timeout_ms - spent : 1;
    int rc = named_send(n, (struct sockaddr *)&ss);
    if (rc < 0) {
        named_fail(n, rc, "connect to", sc_strerror(rc));
    }
}

int sc_h1cli_send_host(uv_loop_t *loop, const char *host, uint16_t port,
                       const struct sc_h1cli_req *req, sc_h1cli_done_cb cb, void *arg,
                       struct sc_h1cli_named **out)
{
    struct sc_h1cli_named *n = SC_NEW(struct sc_h1cli_named);
    n->loop = loop;
    n->cb = cb;
    n->arg = arg;
    n->req = *req;
    n->req.headers = NULL;
    n->req.nheaders = 0;
    n->req.body = SC_STR_NULL;
    n->timeout_ms = req->timeout_ms ? req->timeout_ms : 10000;
    n->started = uv_now(loop);
    n->host = sc_strdup(host);
    snprintf(n->port, sizeof(n->port), "%u", (unsigned)port);
    int rc = 0;
    if (req->raw.len || req->niov) {
        sc_buf_init(&n->raw, 0); /* borrowed: the caller keeps it until the callback */
    } else {
        sc_buf_init(&n->raw, 65536 + req->body.len);
        n->raw.sensitive = req->sensitive;
        rc = format_request(&n->raw, req);
        n->req.raw = sc_buf_str(&n->raw);
    }
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (rc == 0 && uv_ip4_addr(host, port, &a4) == 0) {
        rc = named_send(n, (struct sockaddr *)&a4);
    } else if (rc == 0 && uv_ip6_addr(host, port, &a6) == 0) {
        rc = named_send(n, (struct sockaddr *)&a6);
    } else if (rc == 0) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        n->gai.data = n;
        n->resolving = true;
        rc = uv_getaddrinfo(loop, &n->gai, on_named_resolved, n->host, n->port, &hints);
        n->resolving = rc == 0;
        if (rc == 0) {
            uv_timer_init(loop, &n->timer);
            n->timer.data = n;
            n->timer_open = true;
            uv_timer_start(&n->timer, on_named_deadline, n->timeout_ms, 0);
        }
    }
    if (rc < 0) {
        named_release(n);
        return rc;
    }
    if (out) {
        *out = n;
    }
    return 0;
}

void sc_h1cli_named_cancel(struct sc_h1cli_named *n)
{
    if (!n) {
        return;
    }
    if (n->resolving) {
        n->cancelled = true; /* on_named_resolved frees it, whether or not the cancel takes */
        uv_cancel((uv_req_t *)&n->gai);
        named_timer_close(n);
        named_release(n);
        return;
    }
    sc_h1cli_cancel(n->cli);
    named_release(n);
}
