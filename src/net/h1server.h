// SPDX-License-Identifier: Apache-2.0
// A small HTTP/1.1 server over the transport chain, for the admin port of every role and the
// metrics role's exposition: it accepts on a TCP listener, optionally lets the owner stack layers
// (TLS) on each accepted socket, and reads and writes only through the top of that chain. It
// parses requests with the strict parser of http1.h, collects the body (Content-Length or
// chunked, answering Expect: 100-continue), and hands one complete request at a time to the
// owner, which answers at once or later, whole or streamed.
//
// Invariants: every connection answers its requests strictly in order and stops reading while a
// response is pending, so pipelined requests wait in the kernel, not in our memory; connections,
// heads, bodies and responses are capped (503, 431, 413 and 400 replies carry a reason and close
// the connection); idle connections are closed; a reply that closes the connection shuts the write
// side and drains what the client still sends for a moment, so the reply is not destroyed by a
// reset.
#ifndef SC_NET_H1SERVER_H
#define SC_NET_H1SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/buf.h"
#include "core/str.h"
#include "net/http1.h"
#include "net/transport.h"

#define SC_H1SRV_MAX_HEADERS 128 /* the most header fields a request may carry */

struct sc_h1srv;
struct sc_h1srv_conn;

/* Limits of one server; a zero field takes the default in brackets. */
struct sc_h1srv_opts {
    uint32_t max_conns;   /* open connections; one more is answered 503 and closed [64] */
    uint32_t max_head;    /* request line and headers, bytes; over it: 431 [64 KiB] */
    uint32_t max_headers; /* header fields, at most SC_H1SRV_MAX_HEADERS; over it: 431 [64] */
    uint64_t max_body;    /* request body, bytes (Content-Length or decoded chunks); over it:
                             413 [1 MiB] */
    uint64_t max_resp;    /* one buffered response or one streamed piece, bytes [64 MiB] */
    uint64_t idle_ms;     /* a connection with no progress (no request bytes, no write
                             completing) for this long is closed [60 s] */
    uint64_t linger_ms;   /* after a closing reply, how long the client's leftovers are drained
                             [2 s] */
    int backlog;          /* listen(2) backlog [128] */
};

/* One complete request; views borrow from the connection until the response is complete. */
struct sc_h1srv_req {
    const struct sc_http_msg *msg; /* the parsed head (method, target, version, headers) */
    struct sc_str method;
    struct sc_str path;  /* the target without its query */
    struct sc_str query; /* after '?', may be empty */
    struct sc_str body;  /* the whole body, decoded when it came chunked; empty when none */
};

struct sc_h1srv_cbs {
    /* A complete request arrived on <c>. The owner answers it exactly once, now or later, with
     * sc_h1srv_respond or sc_h1srv_stream (or sc_h1srv_abort). Required. */
    void (*request)(void *arg, struct sc_h1srv_conn *c, const struct sc_h1srv_req *req);
    /* <c> is closing; its user data (sc_h1srv_set_data) is handed back for the owner to release,
     * and <c> must not be used after this returns. Fired once per connection that had user data.
     * Optional. */
    void (*conn_closed)(void *arg, struct sc_h1srv_conn *c, void *data);
    /* Stacks layers on an accepted socket: receives the bottom (TCP) transport, which reports to
     * the server, and returns the new top. The layer takes bottom->cbs and bottom->owner as its
     * own upward callbacks and registers itself on <bottom>; it frees its memory before its
     * closed callback fires. NULL refuses the connection (closed at once). Optional: without it
     * the server speaks to the TCP transport directly. */
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom);
};

/* Appends the next piece of a streamed response to <out> (which the server emptied and which
 * is capped at max_resp). Returns 0 when more follows (called again once <out> is written),
 * 1 when this was the last piece, or a negative error (the connection is closed). */
typedef int (*sc_h1srv_fill_cb)(void *arg, struct sc_buf *out);

/* Runs once after the response it was attached to has been written (or the connection closed
 * before that). */
typedef void (*sc_h1srv_after_cb)(void *arg);

/* Returns a new server on <loop> with <opts> (copied; NULL: defaults) that reports to <cbs>
 * (borrowed; it must outlive the server) with <arg>. It listens only after sc_h1srv_listen. */
struct sc_h1srv *sc_h1srv_new(uv_loop_t *loop, const struct sc_h1srv_opts *opts,
                              const struct sc_h1srv_cbs *cbs, void *arg);

/* Binds and listens on <addr>. Returns 0, or a negative libuv error with a new message in
 * <*err>. Call at most once. */
int sc_h1srv_listen(struct sc_h1srv *s, const struct sockaddr *addr, char **err);

/* Writes the bound address as "ip:port" into <out>. Returns 0 or a negative libuv error. */
int sc_h1srv_address(struct sc_h1srv *s, char *out, size_t outlen);

/* Stops listening and closes every connection: an idle one at once, one with a response pending
 * after that response (written with Connection: close). The server frees itself once every
 * handle has closed; conn_closed still fires for connections closing after this call. NULL-safe,
 * idempotent. */
void sc_h1srv_close(struct sc_h1srv *s);

/* Answers the current request of <c> with a whole response: status line, Content-Type
 * <content_type> (none when NULL), the <nheaders> fields of <headers> (borrowed; may be NULL),
 * Content-Length, Connection: close when the connection ends after it, then <body> (borrowed for
 * the call; left out for a HEAD request, whose Content-Length stays that of the GET). Returns 0,
 * or SC_ETOOBIG / SC_EINVAL when it cannot be written (then a 500 with the reason is sent
 * instead and the connection closes). */
int sc_h1srv_respond(struct sc_h1srv_conn *c, int status, const char *content_type,
                     const struct sc_http_header *headers, size_t nheaders, struct sc_str body);

/* Answers the current request of <c> with bytes that <fill> produces piece by piece (the owner
 * writes the head and framing itself; sc_h1srv_keep_alive says whether to announce
 * Connection: close). <fill> is first called from within this call or shortly after. */
void sc_h1srv_stream(struct sc_h1srv_conn *c, sc_h1srv_fill_cb fill, void *arg);

/* Whether <c> stays open after the current response: false for HTTP/1.0 without keep-alive, a
 * request with Connection: close, an upgrade request, or a closing server. */
bool sc_h1srv_keep_alive(const struct sc_h1srv_conn *c);

/* Makes <c> close after the current response (e.g. a body whose end is the connection's end). */
void sc_h1srv_close_after(struct sc_h1srv_conn *c);

/* Runs <cb> once the current response of <c> has been written. One per response. */
void sc_h1srv_after(struct sc_h1srv_conn *c, sc_h1srv_after_cb cb, void *arg);

/* Closes <c> at once, whatever is pending (a streamed response that cannot go on). */
void sc_h1srv_abort(struct sc_h1srv_conn *c);

/* Attaches owner data to <c>, handed back by conn_closed. */
void sc_h1srv_set_data(struct sc_h1srv_conn *c, void *data);
void *sc_h1srv_data(const struct sc_h1srv_conn *c);

/* The top of the connection's transport chain, for queries (peer identity, TLS version). */
struct sc_xport *sc_h1srv_xport(struct sc_h1srv_conn *c);

#endif
