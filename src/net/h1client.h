// SPDX-License-Identifier: Apache-2.0
// A small HTTP/1.1 client over the transport chain, for the plain-HTTP exchanges roles make
// themselves (active health checks, request mirrors, pod httpGet probes): one request on a
// connection of its own (Connection: close, never pooled), connected through sc_xport_connect so
// a layer the caller stacks (TLS) connects and handshakes the same way. The response head is
// parsed by the strict parser of http1.h (interim 1xx responses skipped); the body is read with
// a cap, framed by Content-Length, chunked encoding or the connection's end. libcurl remains the
// client for the outside world (net/egress.h); this one has no proxies, redirects or pooling.
//
// Invariants: the whole exchange runs under one deadline; memory is bounded by the head and body
// caps; the callback fires exactly once, with a response or an error, never from inside
// sc_h1cli_send and never after sc_h1cli_cancel.
#ifndef SC_NET_H1CLIENT_H
#define SC_NET_H1CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/str.h"
#include "net/http1.h"
#include "net/transport.h"

struct sc_h1cli;

/* One request. Everything is borrowed: the views only for the call to sc_h1cli_send (the request
 * is formatted into the client's own buffer), except <raw> and the pieces <iov> points at,
 * which must stay valid until the
 * callback fires or the request is cancelled. */
struct sc_h1cli_req {
    struct sc_str method;                 /* a token, e.g. "GET" */
    struct sc_str target;                 /* origin-form, e.g. "/healthz?x=1" */
    const struct sc_http_header *headers; /* sent in order (Host among them: HTTP/1.1 needs it) */
    size_t nheaders;
    struct sc_str body;  /* with Content-Length when non-empty or the method is POST/PUT/PATCH */
    struct sc_str raw;   /* when set, sent as it is instead of the request built from the fields
                            above (a request a proxy already built); method still tells HEAD */
    const uv_buf_t *iov; /* else when set: the request as <niov> pieces, written as they are in
                            one gather write (borrowed as <raw> is; the array itself only for
                            the call to sc_h1cli_send, until the callback for
                            sc_h1cli_send_host, and never written to but as below) */
    unsigned niov;
    bool iov_writable;   /* <iov>'s array may be moved through in place as the socket takes the
                            bytes rather than copied: borrowed until the callback (both calls),
                            its entries undefined after it */
    uint64_t timeout_ms; /* the deadline for connect, send and the whole response [10 s] */
    uint32_t max_head;   /* response head cap, bytes [16 KiB] */
    uint64_t max_body;   /* response body cap, bytes; over it the exchange fails [1 MiB] */
    bool head_only;      /* done at the final response head: the body is neither read nor
                            waited for (a probe needs the status only) */
    bool discard_body;   /* read the body to its end but keep none of it (a mirror) */
    bool sensitive;      /* the request and response buffers are zeroed when freed (tokens,
                            secrets) */
    /* Streaming: when on_body is set, on_head is first called once with the final response head
     * (optional), then on_body with the decoded body piece by piece as it arrives, instead of the
     * body being kept (resp.body is then empty); max_body still bounds the bytes received. Both
     * get <stream_arg> and views borrowed for the call, return 0 to go on or a negative error
     * that ends the exchange with that error (the callback then fires with it), and must not
     * cancel the request. */
    int (*on_head)(void *arg, const struct sc_http_msg *head);
    int (*on_body)(void *arg, const char *p, size_t n);
    void *stream_arg;
    /* Stacks layers on the connection: receives the bottom (TCP) transport, which reports to the
     * client, and returns the new top, as sc_h1srv_cbs.wrap does. NULL from it fails the request
     * before connecting. Optional. */
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom);
    void *wrap_arg;
};

/* What came back. Views borrow from the client for the duration of the callback. */
struct sc_h1cli_resp {
    int error;          /* 0, or negative: UV_ETIMEDOUT (the deadline), a connect, read or write
                           error, SC_EHTTP (malformed response), SC_ETOOBIG (a cap), SC_ECLOSED
                           (the peer closed before the response was complete) */
    const char *reason; /* when error != 0: what went wrong, valid during the callback */
    int status;         /* the final status, or 0 with an error */
    const struct sc_http_msg *msg; /* the final head (NULL with an error) */
    struct sc_str body;            /* decoded; empty with head_only or discard_body */
};

/* Fires once per request with its outcome. The client is freed after it returns. */
typedef void (*sc_h1cli_done_cb)(void *arg, const struct sc_h1cli_resp *resp);

/* Sends <req> to <addr> on <loop>; <cb> fires once with <arg> when the exchange is over. Stores
 * the request in <*out> (may be NULL) for sc_h1cli_cancel until the callback. Returns 0, or a
 * negative error (SC_EINVAL for a request that cannot be written, SC_ETOOBIG, a libuv error) and
 * then no callback. */
int sc_h1cli_send(uv_loop_t *loop, const struct sockaddr *addr, const struct sc_h1cli_req *req,
                  sc_h1cli_done_cb cb, void *arg, struct sc_h1cli **out);

/* Abandons a request whose callback has not fired: its connection is closed and the callback
 * never fires. The client frees itself once its handles have closed. NULL-safe; not for use
 * after the callback. */
void sc_h1cli_cancel(struct sc_h1cli *c);

/* ---- by host name ---- */

/* A plain http:// URL split for this client. */
struct sc_h1cli_url {
    char *host;      /* without brackets */
    uint16_t port;   /* 80 when the URL has none */
    char *authority; /* for the Host header: host[:port] as in the URL */
    char *target;    /* origin-form: path and query, never empty */
};

/* Splits <url> into <u> when this client can fetch it directly: http://, no userinfo, a valid
 * port, and no proxy variable libcurl would honour for http:// in the environment (http_proxy,
 * all_proxy, ALL_PROXY). Returns false otherwise, with nothing to free: the caller then uses the
 * egress client, which also reports malformed URLs. */
bool sc_h1cli_url_parse(const char *url, struct sc_h1cli_url *u);
void sc_h1cli_url_free(struct sc_h1cli_url *u);

/* A request sent by host name: the name resolved on the loop's thread pool (uv_getaddrinfo, the
 * first address), then sent as sc_h1cli_send does. */
struct sc_h1cli_named;

/* Sends <req> to <host>:<port> (an IP literal is used as it is). The request is formatted at once
 * (views borrowed for the call only), so the exchange holds its own copy; a <raw> request is
 * instead sent as it is, borrowed as sc_h1cli_send borrows it (until the callback fires or the
 * request is cancelled), so a large body already laid out by the caller is never copied; so is
 * an <iov> request, its array included (resolving may outlive the call).
 * <cb> fires once as for sc_h1cli_send; a name that does not resolve is reported through it with
 * the resolver's error and the reason "cannot resolve <host>: ...". The request's deadline
 * (timeout_ms) counts from this call, resolution included: a resolver slower than it is reported
 * as UV_ETIMEDOUT ("timed out resolving <host>"). Returns 0, or a negative error and then no
 * callback. */
int sc_h1cli_send_host(uv_loop_t *loop, const char *host, uint16_t port,
                       const struct sc_h1cli_req *req, sc_h1cli_done_cb cb, void *arg,
                       struct sc_h1cli_named **out);

/* As sc_h1cli_cancel, also while the name is still being resolved. NULL-safe. */
void sc_h1cli_named_cancel(struct sc_h1cli_named *n);

#endif
