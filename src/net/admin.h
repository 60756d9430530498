// SPDX-License-Identifier: Apache-2.0
// The admin HTTP server every role runs (default on 127.0.0.1): a small HTTP/1.1 server on the
// role's loop that dispatches (method, path) to handlers. It knows no endpoint itself; the app
// registers /healthz, /ready, /metrics, /config, /quitquitquit and /reload, and roles add theirs.
// Handlers answer synchronously, or defer the answer (sc_admin_defer) to give it later. Bounded: 64
// connections, 64 KiB heads, 1 MiB bodies, and connections idle for 60 s are closed.
#ifndef SC_NET_ADMIN_H
#define SC_NET_ADMIN_H

#include <stdbool.h>

#include <uv.h>

#include "core/buf.h"
#include "core/str.h"
#include "net/http1.h"
#include "net/transport.h"

struct sc_admin;

struct sc_admin_req {
    struct sc_str method;
    struct sc_str path;  /* the target without its query */
    struct sc_str query; /* after '?', may be empty */
    struct sc_str body;
    const struct sc_http_msg *msg;
};

struct sc_admin_resp {
    int status;               /* 200 unless the handler sets it */
    const char *content_type; /* static; "text/plain; charset=utf-8" unless set */
    struct sc_buf body;       /* capped at 64 MiB */
};

/* Answers one request: reads <req> (borrowed for the call), fills <resp>. */
typedef void (*sc_admin_handler_cb)(void *arg, const struct sc_admin_req *req,
                                    struct sc_admin_resp *resp);

/* Called once after the response of the request that asked for it has been written. */
typedef void (*sc_admin_after_cb)(void *arg);

/* Returns a new admin server on <loop>; it listens only after sc_admin_listen. */
struct sc_admin *sc_admin_new(uv_loop_t *loop);

/* Routes <method> <path> (exact match; both borrowed, static) to <cb>. A path registered with other
 * methods answers 405 with Allow; an unknown path 404. */
void sc_admin_handle(struct sc_admin *a, const char *method, const char *path,
                     sc_admin_handler_cb cb, void *arg);

/* A request whose answer comes later (see sc_admin_defer). */
struct sc_admin_pending;

/* Called when the connection of a deferred request closes before its answer: the pending request
 * is gone and sc_admin_answer must not be called for it. */
typedef void (*sc_admin_cancel_cb)(void *arg);

/* From inside a handler: the handler answers later, with sc_admin_answer, instead of filling its
 * response (what it wrote there is ignored). <cancel> fires with <arg> instead if the client's
 * connection closes first. Returns the handle to answer with. */
struct sc_admin_pending *sc_admin_defer(struct sc_admin *a, sc_admin_cancel_cb cancel, void *arg);

/* Answers deferred request <p> with <status>, <content_type> (NULL: text/plain) and <body>
 * (borrowed for the call), and frees <p>. */
void sc_admin_answer(struct sc_admin_pending *p, int status, const char *content_type,
                     struct sc_str body);

/* From inside a handler: runs <cb> once the current response has been written (for example, to
 * start draining after answering /quitquitquit). */
void sc_admin_after_response(struct sc_admin *a, sc_admin_after_cb cb, void *arg);

/* Stacks layers on every connection the server accepts (TLS, for a server that must speak HTTPS),
 * as struct sc_h1srv_cbs.wrap does; NULL keeps plain TCP. Call before sc_admin_listen. */
void sc_admin_set_wrap(struct sc_admin *a, struct sc_xport *(*wrap)(void *arg, struct sc_xport *),
                       void *arg);

/* Caps the open connections (64 unless set; one more is answered 503). Call before
 * sc_admin_listen. */
void sc_admin_set_max_conns(struct sc_admin *a, uint32_t n);

/* Binds and listens on <addr> ("127.0.0.1:15000"; port 0 picks a free one). Returns 0, or a
 * negative error with a new message in <*err>. */
int sc_admin_listen(struct sc_admin *a, const char *addr, char **err);

/* Writes the bound address as "ip:port" into <out>. Returns 0 or a negative libuv error. */
int sc_admin_address(struct sc_admin *a, char *out, size_t outlen);

/* Stops listening and closes every connection (an answer being written goes out first, with
 * Connection: close); the connections' handles close on the loop afterwards. May be called from
 * inside a handler (the free waits for its return). NULL-safe. */
void sc_admin_close(struct sc_admin *a);

#endif
