// SPDX-License-Identifier: Apache-2.0
// Egress HTTP client: libcurl's multi interface driven by the caller's libuv loop. curl tells us
// which sockets to watch (one uv_poll_t each, freed in its close callback) and when to wake it
// (one uv_timer_t); we hand events back with curl_multi_socket_action and complete transfers from
// curl_multi_info_read. Key invariant: user code never runs while curl is on the stack except
// on_data, and anything on_data asks for (send, cancel, close) is deferred until curl has
// returned, so curl's multi API is never entered recursively. Each transfer calls back exactly
// once unless cancelled; the client is freed only after every uv handle's close callback ran.
//
// Proxies: curl's default behaviour is kept, so http_proxy/https_proxy/no_proxy from the
// environment apply to egress traffic (that is what operators expect of a sidecar's outbound
// calls). Redirects are not followed: the caller sees the 3xx. Accept-Encoding is not sent unless
// the caller adds it. Connections are reused through the multi handle's connection cache, and
// HTTP/2 is used when a TLS server offers it (curl's default). The multi handle caps open
// connections (SC_EGRESS_MAX_CONNECTIONS, SC_EGRESS_MAX_HOST_CONNECTIONS in egress.h): a burst
// of transfers to one slow host queues inside curl instead of opening a socket each.
//
// libcurl is loaded with dlopen when the first client is created, not linked: its dependency tree
// (OpenSSL, nghttp2, Kerberos, LDAP, ...) costs several MiB of resident memory at start-up, which
// roles that never call out (the proxy) must not pay. libcurl is called through a table
// of pointers, lc, filled once per process; every call goes through it.
#include "net/egress.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/ssl.h>

#define CURL_FUNCS(X)                                                                              \
    X(CURLcode, global_init, (long))                                                               \
    X(CURL *, easy_init, (void))                                                                   \
    X(void, easy_cleanup, (CURL *))                                                                \
    X(CURLcode, easy_setopt, (CURL *, CURLoption, ...))                                            \
    X(CURLcode, easy_getinfo, (CURL *, CURLINFO, ...))                                             \
    X(const char *, easy_strerror, (CURLcode))                                                     \
    X(CURLM *, multi_init, (void))                                                                 \
    X(CURLMcode, multi_cleanup, (CURLM *))                                                         \
    X(CURLMcode, multi_setopt, (CURLM *, CURLMoption, ...))                                        \
    X(CURLMcode, multi_add_handle, (CURLM *, CURL *))                                              \
    X(CURLMcode, multi_remove_handle, (CURLM *, CURL *))                                           \
    X(CURLMcode, multi_assign, (CURLM *, curl_socket_t, void *))                                   \
    X(CURLMsg *, multi_info_read, (CURLM *, int *))                                                \
    X(CURLMcode, multi_socket_action, (CURLM *, curl_socket_t, int, int *))                        \
    X(const char *, multi_strerror, (CURLMcode))                                                   \
    X(struct curl_slist *, slist_append, (struct curl_slist *, const char *))                      \
    X(void, slist_free_all, (struct curl_slist *))

#define CURL_FIELD(ret, name, args) ret(*name) args;
static struct {
    CURL_FUNCS(CURL_FIELD)
} lc;
#undef CURL_FIELD

#include "core/alloc.h"
#include "core/lazylib.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_MAX_RESPONSE (16u * 1024 * 1024)
/* curl sends at most one upload buffer per socket event (64 KiB by default), so a body of a few
 * MiB takes dozens of loop turns, each behind whatever else the loop runs (a log tailer parsing
 * its read budget): a batch's round trip grew by milliseconds per MiB with no network in sight. A
 * larger body gets a larger buffer, up to this; curl allocates it for the transfer only. */
#define MAX_UPLOAD_BUFFER (256u * 1024)
#define CURL_UPLOAD_BUFFER (64u * 1024)
/* The final response's header block; curl itself refuses a single header over 100 KiB. */
#define MAX_RESPONSE_HEADERS (64u * 1024)

#ifndef CURL_WRITEFUNC_ERROR /* curl < 7.87: any count other than the one passed is an error */
#define CURL_WRITEFUNC_ERROR 0xFFFFFFFF
#endif

struct sc_egress {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct sc_list xfers;  /* every transfer that has not called back (sc_egress_xfer.link) */
    struct sc_list socks;  /* polls that curl still uses (struct sock.link) */
    unsigned open_handles; /* uv handles whose close callback has not run, the timer included */
    unsigned busy;         /* dispatch depth: close is deferred while > 0 */
    bool in_curl;          /* inside curl_multi_socket_action: on_data may be on the stack */
    bool deferred;         /* a send or cancel waits for curl to return */
    bool closing;
    bool closed; /* the multi handle is gone; the uv handles are closing */
};

struct sc_egress_xfer {
    struct sc_list link;
    struct sc_egress *e;
    CURL *easy;
    struct curl_slist *headers;
    sc_egress_cb cb;
    void *arg;
    bool (*on_data)(void *arg, const char *p, size_t len);
    struct sc_buf body;
    struct sc_buf head; /* header lines of the final response, as received */
    bool added;         /* curl_multi_add_handle done */
    bool cancelled;     /* never call back; destroy once curl is off the stack */
    bool body_started;  /* header lines after the body are trailers: ignored */
    bool too_big;
    bool aborted;   /* on_data returned false */
    bool sensitive; /* zero header lines when freeing (the buffers zero themselves) */
    char errbuf[CURL_ERROR_SIZE];
};

struct sock {
    uv_poll_t poll;
    struct sc_list link;
    struct sc_egress *e;
    curl_socket_t fd;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static const char *global_error; /* why libcurl is unusable, or NULL */

/* libcurl prints OpenSSL's errors, whose strings OpenSSL loads only on request (the TLS code asks
 * when it first describes an error, core/lazylib.h): asked for here, through OpenSSL's own
 * initialisation when the TLS code has not initialised it yet, else by the TLS code's loader. */
static void ssl_err_strings(void)
{
    void *ssl = dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!ssl) {
        return; /* a libcurl without OpenSSL */
    }
    __typeof__(&OPENSSL_init_ssl) init;
    *(void **)&init = dlsym(ssl, "OPENSSL_init_ssl");
    if (init) {
        init(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    }
    dlclose(ssl);
    sc_lazylib_ssl_err_strings();
}

/* Loads libcurl and initialises it, once per process. The library stays loaded until exit. */
static void load_curl(void)
{
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        global_error = "cannot load libcurl.so.4 (Debian package libcurl4)";
        return;
    }
#define CURL_LOAD(ret, name, args)                                                                 \
    *(void **)&lc.name = dlsym(lib, "curl_" #name);                                                \
    if (!lc.name) {                                                                                \
        global_error = "libcurl.so.4 lacks curl_" #name;                                           \
        return;                                                                                    \
    }
    CURL_FUNCS(CURL_LOAD)
#undef CURL_LOAD
    if (lc.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        global_error = "curl_global_init failed";
        return;
    }
    ssl_err_strings();
}

static void on_handle_closed(uv_handle_t *h);

/* ---- transfers ---------------------------------------------------------------------------- */

/* Removes <x> from curl and frees it; no callback. */
static void xfer_destroy(struct sc_egress_xfer *x)
{
    sc_list_remove(&x->link);
    if (x->added && x->e->multi) {
        lc.multi_remove_handle(x->e->multi, x->easy);
    }
    lc.easy_cleanup(x->easy);
    if (x->sensitive) {
        for (struct curl_slist *l = x->headers; l; l = l->next) {
            explicit_bzero(l->data, strlen(l->data));
        }
    }
    lc.slist_free_all(x->headers);
    sc_buf_cleanup(&x->body);
    sc_buf_cleanup(&x->head);
    sc_free(x);
}

static int map_error(struct sc_egress_xfer *x, CURLcode rc, const char **msg)
{
    *msg = x->errbuf[0] ? x->errbuf : lc.easy_strerror(rc);
    if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        *msg = "response over the size limit";
        return SC_ETOOBIG;
    }
    if (x->aborted) {
        *msg = "transfer aborted by on_data";
        return -ECANCELED;
    }
    switch (rc) {
    case CURLE_OK:
        *msg = NULL;
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return SC_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
        return SC_EHTTP;
    default:
        return -EIO;
    }
}

/* Calls <x>'s callback once with <error> (or curl's outcome when <error> is 0), then frees it. */
static void xfer_finish(struct sc_egress_xfer *x, CURLcode rc, int error)
{
    struct sc_egress_resp resp = { .priv = x };
    long status = 0;
    lc.easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    lc.easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &resp.seconds);
    resp.status = (int)status;
    if (error) {
        resp.error = error;
        resp.error_msg = sc_strerror(error);
    } else {
        resp.error = map_error(x, rc, &resp.error_msg);
    }
    if (!x->on_data) {
        resp.body = sc_buf_str(&x->body);
    }
    /* Unlink first so a cancel or close from inside the callback no longer sees it. */
    sc_list_remove(&x->link);
    if (x->added && x->e->multi) {
        lc.multi_remove_handle(x->e->multi, x->easy);
        x->added = false;
    }
    x->cancelled = true; /* sc_egress_cancel on it from its own callback is a no-op */
    x->cb(x->arg, &resp);
    xfer_destroy(x);
}

/* CURLOPT_WRITEFUNCTION: keeps the body under its cap, or streams it to on_data. Any other
 * return than <len> makes curl fail the transfer with CURLE_WRITE_ERROR, which map_error turns
 * into the reason recorded here. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct sc_egress_xfer *x = ud;
    size_t len = size * n;
    x->body_started = true;
    if (x->cancelled) {
        return CURL_WRITEFUNC_ERROR;
    }
    if (x->on_data) {
        if (len && !x->on_data(x->arg, p, len)) {
            x->aborted = true;
            return CURL_WRITEFUNC_ERROR;
        }
        return len;
    }
    if (sc_buf_append(&x->body, p, len) < 0) {
        x->too_big = true;
        return CURL_WRITEFUNC_ERROR;
    }
    return len;
}

/* CURLOPT_HEADERFUNCTION: records the final response's header lines for sc_egress_resp_header. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct sc_egress_xfer *x = ud;
    size_t len = size * n;
    /* A status line starts a new response (1xx, a proxy's CONNECT reply, an auth round): only
     * the last one's headers are kept. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        sc_buf_reset(&x->head);
        x->body_started = false;
        return len;
    }
    if (x->body_started) {
        return len; /* trailers */
    }
    if (sc_buf_append(&x->head, p, len) < 0) {
        x->too_big = true;
        return CURL_WRITEFUNC_ERROR;
    }
    return len;
}

/* Returns true when <s> is a non-empty HTTP token (method, header name). */
static bool is_token(const char *s)
{
    if (!s || !*s) {
        return false;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c)) {
            return false;
        }
    }
    return true;
}

static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

static bool has_header(const struct sc_egress_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (sc_str_caseeq(sc_str_c(req->headers[i].key), sc_str_c(name))) {
            return true;
        }
    }
    return false;
}

static int append_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *l = lc.slist_append(*list, line);
    if (!l) {
        return -ENOMEM;
    }
    *list = l;
    return 0;
}

/* Builds the request's header list. Returns 0 or -EINVAL for a header curl would mangle. */
static int build_headers(const struct sc_egress_req *req, bool has_body, struct curl_slist **out,
                         bool sensitive)
{
    struct curl_slist *list = NULL;
    int rc = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const char *k = req->headers[i].key;
        const char *v = req->headers[i].value ? req->headers[i].value : "";
        if (!is_token(k) || has_crlf(v)) {
            rc = -EINVAL;
            goto out;
        }
        /* "Name:" would tell curl to drop the header; "Name;" sends it with an empty value. */
        char *line = *v ? sc_asprintf("%s: %s", k, v) : sc_asprintf("%s;", k);
        rc = append_header(&list, line);
        if (sensitive) {
            sc_free_secret(line, strlen(line));
        } else {
            sc_free(line);
        }
        if (rc < 0) {
            goto out;
        }
    }
    if (has_body) {
        /* curl would label a body form-urlencoded and, for large ones, wait for 100-continue;
         * a body the caller did not label goes out unlabelled, and never waits. */
        if (!has_header(req, "Content-Type") && (rc = append_header(&list, "Content-Type:")) < 0) {
            goto out;
        }
        if (!has_header(req, "Expect") && (rc = append_header(&list, "Expect:")) < 0) {
            goto out;
        }
    }
    *out = list;
    list = NULL;
out:
    for (struct curl_slist *l = list; sensitive && l; l = l->next) {
        explicit_bzero(l->data, strlen(l->data));
    }
    lc.slist_free_all(list);
    return rc;
}

/* Returns <ms> for curl's long options, <dflt> for 0. */
static long clamp_ms(uint64_t ms, long dflt)
{
    if (ms == 0) {
        return dflt;
    }
    return ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms;
}

/* Applies <req> to <x>'s easy handle. Returns 0, -EINVAL for a request we refuse, or -EIO. */
static int setup_easy(struct sc_egress_xfer *x, const struct sc_egress_req *req)
{
    CURL *c = x->easy;
    const char *method = req->method ? req->method : "GET";
    bool is_head = strcmp(method, "HEAD") == 0;
    bool has_body = req->body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0;
    int rc = 0;

    if (!req->url || !is_token(method) || has_crlf(req->bearer_token) ||
        (req->body_len && !req->body)) {
        return -EINVAL;
    }
    if ((rc = build_headers(req, has_body, &x->headers, x->sensitive)) < 0) {
        return rc;
    }

    CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (cc == CURLE_OK) {                                                                      \
            cc = lc.easy_setopt(c, opt, val);                                                      \
        }                                                                                          \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_PRIVATE, x);
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, x);
    SET(CURLOPT_TIMEOUT_MS, clamp_ms(req->timeout_ms, DEFAULT_TIMEOUT_MS));
    SET(CURLOPT_CONNECTTIMEOUT_MS, clamp_ms(req->connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS));
    if (!x->on_data && !is_head && x->body.max <= (uint64_t)INT64_MAX) {
        /* Refuses an announced Content-Length over the cap before reading the body. */
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->body.max);
    }
    if (x->headers) {
        SET(CURLOPT_HTTPHEADER, x->headers);
    }
    if (req->accept_encoding) {
        SET(CURLOPT_ACCEPT_ENCODING, req->accept_encoding);
    }

    if (is_head) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (has_body) {
        /* POSTFIELDS borrows the body, which the contract keeps alive until the callback. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        if (req->body_len > CURL_UPLOAD_BUFFER) {
            size_t ub = req->body_len < MAX_UPLOAD_BUFFER ? req->body_len : MAX_UPLOAD_BUFFER;
            SET(CURLOPT_UPLOAD_BUFFERSIZE, (long)ub);
        }
        if (strcmp(method, "POST") != 0) {
            SET(CURLOPT_CUSTOMREQUEST, method);
        }
    } else if (strcmp(method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, method);
    }

    if (req->bearer_token) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        SET(CURLOPT_XOAUTH2_BEARER, req->bearer_token);
    } else if (req->basic_user) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, req->basic_user);
        SET(CURLOPT_PASSWORD, req->basic_password ? req->basic_password : "");
    }

    const struct sc_egress_tls *tls = req->tls;
    if (tls) {
        if (tls->ca_file) {
            SET(CURLOPT_CAINFO, tls->ca_file);
        }
        if (tls->cert_file) {
            SET(CURLOPT_SSLCERT, tls->cert_file);
        }
        if (tls->key_file) {
            SET(CURLOPT_SSLKEY, tls->key_file);
        }
        if (tls->insecure_skip_verify) {
            SET(CURLOPT_SSL_VERIFYPEER, 0L);
            SET(CURLOPT_SSL_VERIFYHOST, 0L);
        }
    }
#undef SET
    if (cc != CURLE_OK) {
        /* The URL is not logged: it may carry credentials. */
        sc_warn("egress: bad request option", SC_LS("error", lc.easy_strerror(cc)));
        return cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_BAD_FUNCTION_ARGUMENT ? -EINVAL
                                                                                     : -EIO;
    }
    return 0;
}

/* ---- driving curl from the loop ------------------------------------------------------------ */

static void finish_close(struct sc_egress *e);

/* Completes every transfer curl has finished. Runs with curl off the stack, so callbacks may
 * start, cancel or close freely; stops when a callback closed the client. */
static void drain(struct sc_egress *e)
{
    CURLMsg *m;
    int left;
    while (!e->closing && (m = lc.multi_info_read(e->multi, &left))) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        /* The message dies with curl_multi_remove_handle: copy what we need first. */
        CURLcode rc = m->data.result;
        char *priv = NULL;
        lc.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv) {
            xfer_finish((struct sc_egress_xfer *)(void *)priv, rc, 0);
        }
    }
}

/* Carries out sends and cancels that on_data asked for while curl was on the stack. */
static void run_deferred(struct sc_egress *e)
{
    e->deferred = false;
restart:
    for (struct sc_list *n = e->xfers.next; n != &e->xfers;) {
        struct sc_egress_xfer *x = sc_list_entry(n, struct sc_egress_xfer, link);
        n = n->next;
        if (x->cancelled) {
            xfer_destroy(x);
        } else if (!x->added) {
            CURLMcode mc = lc.multi_add_handle(e->multi, x->easy);
            if (mc == CURLM_OK) {
                x->added = true;
                continue;
            }
            sc_error("egress: curl_multi_add_handle failed", SC_LS("error", lc.multi_strerror(mc)));
            /* The callback may cancel any transfer, <n> included: walk again from the head
             * (every transfer behind us is added or gone, so this ends). */
            xfer_finish(x, CURLE_FAILED_INIT, -EIO);
            if (e->closing) {
                return;
            }
            goto restart;
        }
    }
}

/* Calls back every open transfer with SC_ECLOSED, then tears the client down. */
static void close_all(struct sc_egress *e)
{
    while (!sc_list_empty(&e->xfers)) {
        struct sc_egress_xfer *x = sc_list_entry(e->xfers.next, struct sc_egress_xfer, link);
        if (x->cancelled) {
            xfer_destroy(x);
        } else {
            xfer_finish(x, CURLE_OK, SC_ECLOSED);
        }
    }
    finish_close(e);
}

/* Hands one event to curl, then does what curl's callbacks could not: deferred sends and
 * cancels, completions, and a close requested meanwhile. */
static void dispatch(struct sc_egress *e, curl_socket_t fd, int flags)
{
    int running = 0;
    e->busy++;
    e->in_curl = true;
    CURLMcode mc = lc.multi_socket_action(e->multi, fd, flags, &running);
    e->in_curl = false;
    if (mc != CURLM_OK) {
        sc_error("egress: curl_multi_socket_action failed", SC_LS("error", lc.multi_strerror(mc)));
    }
    if (e->deferred && !e->closing) {
        run_deferred(e);
    }
    drain(e);
    e->busy--;
    if (e->closing && e->busy == 0 && !e->closed) {
        close_all(e);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = sc_container_of(h, struct sock, poll);
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE) {
            flags |= CURL_CSELECT_IN;
        }
        if (events & UV_WRITABLE) {
            flags |= CURL_CSELECT_OUT;
        }
    }
    dispatch(s->e, s->fd, flags);
}

static void on_timer(uv_timer_t *t)
{
    struct sc_egress *e = sc_container_of(t, struct sc_egress, timer);
    dispatch(e, CURL_SOCKET_TIMEOUT, 0);
}

static void sock_close(struct sock *s)
{
    sc_list_remove(&s->link);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch <fd> for <what>, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct sc_egress *e = userp;
    struct sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            /* curl closes the fd after this returns; uv_close stops the watcher now. */
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = SC_NEW(struct sock);
        s->e = e;
        s->fd = fd;
        int rc = uv_poll_init_socket(e->loop, &s->poll, fd);
        if (rc < 0) {
            sc_error("egress: uv_poll_init_socket failed", SC_LS("error", uv_strerror(rc)));
            sc_free(s);
            return -1;
        }
        e->open_handles++;
        sc_list_append(&e->socks, &s->link);
        lc.multi_assign(e->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }
    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }
    int rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc < 0) {
        sc_error("egress: uv_poll_start failed", SC_LS("error", uv_strerror(rc)));
        return -1;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: (re)arms the single timer; curl must not be re-entered from here, so
 * even a 0 ms timeout goes through the loop. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct sc_egress *e = userp;
    if (e->closed) {
        return 0;
    }
    if (timeout_ms < 0) {
        uv_timer_stop(&e->timer);
        return 0;
    }
    uv_timer_start(&e->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* Close callback of every poll and of the timer: the last one frees a closed client. */
static void on_handle_closed(uv_handle_t *h)
{
    struct sc_egress *e;
    if (h->type == UV_POLL) {
        struct sock *s = sc_container_of((uv_poll_t *)h, struct sock, poll);
        e = s->e;
        sc_free(s);
    } else {
        e = sc_container_of((uv_timer_t *)h, struct sc_egress, timer);
    }
    if (--e->open_handles == 0 && e->closed) {
        sc_free(e);
    }
}

/* Drops the multi handle and closes the remaining uv handles; frees <e> once they have closed. */
static void finish_close(struct sc_egress *e)
{
    e->closed = true;
    /* Cleanup closes the cached connections, which may still report sockets to remove. */
    lc.multi_cleanup(e->multi);
    e->multi = NULL;
    while (!sc_list_empty(&e->socks)) {
        sock_close(sc_list_entry(e->socks.next, struct sock, link));
    }
    uv_close((uv_handle_t *)&e->timer, on_handle_closed);
}

/* ---- API ---------------------------------------------------------------------------------- */

struct sc_egress *sc_egress_new(uv_loop_t *loop)
{
    pthread_once(&global_once, load_curl);
    if (global_error) {
        sc_error("egress: libcurl is not usable", SC_LS("error", global_error));
        return NULL;
    }
    struct sc_egress *e = SC_NEW(struct sc_egress);
    e->loop = loop;
    sc_list_init(&e->xfers);
    sc_list_init(&e->socks);
    e->multi = lc.multi_init();
    if (!e->multi) {
        sc_free(e);
        return NULL;
    }
    uv_timer_init(loop, &e->timer);
    e->open_handles = 1;
    lc.multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    lc.multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    lc.multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    lc.multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    lc.multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)SC_EGRESS_MAX_CONNECTIONS);
    lc.multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)SC_EGRESS_MAX_HOST_CONNECTIONS);
    return e;
}

int sc_egress_send(struct sc_egress *e, const struct sc_egress_req *req, sc_egress_cb cb, void *arg,
                   struct sc_egress_xfer **out)
{
    if (!e || !req || !cb) {
        return -EINVAL;
    }
    if (e->closing) {
        return SC_ECLOSED;
    }
    struct sc_egress_xfer *x = SC_NEW(struct sc_egress_xfer);
    sc_list_init(&x->link);
    x->e = e;
    x->cb = cb;
    x->arg = arg;
    x->on_data = req->on_data;
    x->sensitive = req->sensitive;
    sc_buf_init(&x->body, req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE);
    sc_buf_init(&x->head, MAX_RESPONSE_HEADERS);
    x->body.sensitive = req->sensitive;
    x->head.sensitive = req->sensitive;
    x->easy = lc.easy_init();
    int rc = x->easy ? setup_easy(x, req) : -ENOMEM;
    if (rc < 0) {
        xfer_destroy(x);
        return rc;
    }
    sc_list_append(&e->xfers, &x->link);
    if (e->in_curl) {
        /* Called from on_data: curl refuses to be re-entered, so add it once it returns. */
        e->deferred = true;
    } else {
        CURLMcode mc = lc.multi_add_handle(e->multi, x->easy);
        if (mc != CURLM_OK) {
            sc_error("egress: curl_multi_add_handle failed", SC_LS("error", lc.multi_strerror(mc)));
            xfer_destroy(x);
            return -EIO;
        }
        x->added = true;
    }
    if (out) {
        *out = x;
    }
    return 0;
}

void sc_egress_cancel(struct sc_egress_xfer *x)
{
    if (!x || x->cancelled) {
        return;
    }
    x->cancelled = true;
    if (x->e->in_curl) {
        /* on_data is on the stack (maybe this transfer's own): destroy it after curl returns. */
        x->e->deferred = true;
        return;
    }
    xfer_destroy(x);
}

struct sc_str sc_egress_resp_header(const struct sc_egress_resp *resp, const char *name)
{
    if (!resp || !resp->priv || !name) {
        return SC_STR_NULL;
    }
    return sc_egress_xfer_header(resp->priv, name);
}

struct sc_str sc_egress_xfer_header(const struct sc_egress_xfer *x, const char *name)
{
    if (!x || !name) {
        return SC_STR_NULL;
    }
    struct sc_str rest = sc_buf_str(&x->head);
    struct sc_str want = sc_str_c(name);
    while (rest.len) {
        struct sc_str line = sc_str_split(&rest, '\n');
        if (line.len && line.p[line.len - 1] == '\r') {
            line.len--;
        }
        const char *colon = memchr(line.p, ':', line.len);
        if (!colon) {
            continue;
        }
        struct sc_str key = sc_str_n(line.p, (size_t)(colon - line.p));
        if (sc_str_caseeq(key, want)) {
            return sc_str_trim(sc_str_n(colon + 1, line.len - key.len - 1));
        }
    }
    return SC_STR_NULL;
}

void sc_egress_close(struct sc_egress *e)
{
    if (!e || e->closing) {
        return;
    }
    e->closing = true;
    if (e->busy) {
        /* A callback is running inside dispatch: it finishes the close when it unwinds. */
        return;
    }
    close_all(e);
}
