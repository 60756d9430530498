// SPDX-License-Identifier: Apache-2.0
// Byte-stream transports as a chain of layers: TCP at the bottom, TLS (and later PROXY protocol or
// a peer-identity check) stacked on it, each a const ops table plus an instance with a `next`. The
// owner (an HTTP/1 or HTTP/2 connection, a health check, a mirror) holds a pointer to the top of
// its chain, reads, writes, connects, queries and closes through it only, and learns of progress
// through its callbacks, so adding a layer changes no owner code. A layer is the owner of the
// layer below it: it registers its own callbacks there and reports upwards through its cbs.
//
// Contract shared by every layer: read bytes go into buffers the owner provides (alloc), so a
// layer copies nothing it does not have to; write() takes effect in order, either completely at
// once (returns 0) or with the remainder queued (returns 1, and write_done fires exactly once,
// after which the owner may write again: at most one write is pending per transport); close() is
// idempotent, cancels a pending write (write_done fires with UV_ECANCELED first) and fires closed
// exactly once, after which the owner may free the memory holding the transport. connected fires
// once per connect, after every layer's handshake: an owner never writes into a half-made chain.
// A layer that does not implement an optional op (connect, query, alive) passes it to `next`.
#ifndef SC_NET_TRANSPORT_H
#define SC_NET_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "core/buf.h"
#include "core/str.h"

struct sc_xport;

/* What query() can ask of a chain. Each layer answers what it knows and passes the rest down; the
 * type <out> points to is given per key. Views borrow from the layer and stay valid until it
 * closes. */
enum sc_xq {
    SC_XQ_FD,          /* uv_os_fd_t: the socket */
    SC_XQ_TLS,         /* bool: the chain holds an established TLS session */
    SC_XQ_ALPN,        /* struct sc_str: the protocol ALPN chose (empty: none) */
    SC_XQ_SNI,         /* struct sc_str: the server name the client sent (server side) */
    SC_XQ_TLS_VERSION, /* struct sc_str: "TLSv1.3", "TLSv1.2" */
    SC_XQ_TLS_CIPHER,  /* struct sc_str: the IANA-style OpenSSL cipher name */
    SC_XQ_TLS_RESUMED, /* bool: the session was resumed */
    SC_XQ_PEER_CERT,   /* void *: the peer's verified leaf certificate (an X509 *, borrowed), or
                          NULL when it sent none */
    SC_XQ_PEER_ID,     /* struct sc_str: the peer certificate's SPIFFE ID ("spiffe://td/ns/n/sa/s"
                          when it carries exactly one URI SAN; empty otherwise) */
    SC_XQ_ERROR,       /* const char *: why the last handshake or read failed (static text) */
    SC_XQ_TLS_NATIVE,  /* bool: after a handshake, the TLS layer carries the records itself
                          (net/tls_rec.h) instead of OpenSSL */
};

/* Events a transport reports to the layer or owner above it. <owner> is the pointer given at
 * init. */
struct sc_xport_cbs {
    /* Where the next read should go; a zero-length buffer makes read() report UV_ENOBUFS. */
    void (*alloc)(void *owner, uv_buf_t *buf);
    /* <nread> > 0 bytes were placed in the last alloc'ed buffer; < 0 is UV_EOF or an error. */
    void (*read)(void *owner, ssize_t nread);
    /* The pending write finished (0) or failed. */
    void (*write_done)(void *owner, int status);
    /* An outgoing connection is established (0) or failed; fired once per connect. */
    void (*connected)(void *owner, int status);
    /* The transport is closed; its memory may be reused. */
    void (*closed)(void *owner);
};

struct sc_xport_ops {
    const char *name;
    int (*read_start)(struct sc_xport *x);
    void (*read_stop)(struct sc_xport *x);
    int (*write)(struct sc_xport *x, uv_buf_t *iov, unsigned n);
    void (*close)(struct sc_xport *x);
    int (*shutdown)(struct sc_xport *x);
    /* Optional (NULL passes to next): starts an outgoing connection to <addr>. */
    int (*connect)(struct sc_xport *x, const struct sockaddr *addr);
    /* Optional: answers <q> into <out> (0), or UV_ENOTSUP when this layer does not know. */
    int (*query)(struct sc_xport *x, enum sc_xq q, void *out);
    /* Optional: whether an idle, pooled connection can still carry a request (the peer has not
     * closed it, sent a TLS close_notify or unexpected bytes). */
    bool (*alive)(struct sc_xport *x);
};

struct sc_xport {
    const struct sc_xport_ops *ops;
    struct sc_xport *next; /* the layer below; NULL at the bottom */
    const struct sc_xport_cbs *cbs;
    void *owner;
};

/* Starts reporting reads. Returns 0 or a negative libuv error. Harmless when already reading. */
static inline int sc_xport_read_start(struct sc_xport *x)
{
    return x->ops->read_start(x);
}

/* Stops reporting reads. Harmless when not reading. */
static inline void sc_xport_read_stop(struct sc_xport *x)
{
    x->ops->read_stop(x);
}

/* Writes <iov> (<n> entries; the array is not kept, the bytes are until write_done). Returns 0
 * when everything was written, 1 when the rest is queued (write_done follows once), or a negative
 * libuv error (nothing queued, no callback). */
static inline int sc_xport_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    return x->ops->write(x, iov, n);
}

/* Closes the transport; closed fires once. Idempotent. */
static inline void sc_xport_close(struct sc_xport *x)
{
    x->ops->close(x);
}

/* Ends the write direction (TCP: a FIN) while reads go on: a tunnel passes on one side's
 * half-close. Call only with no write pending. Returns 0, UV_EBUSY when a write is pending, or a
 * negative libuv error. */
static inline int sc_xport_shutdown(struct sc_xport *x)
{
    return x->ops->shutdown(x);
}

/* Connects the chain under <x> to <addr>; cbs->connected fires once, when every layer's handshake
 * is done (or failed; UV_ECANCELED when closed first). Returns 0, or a negative libuv error and
 * then no callback. */
int sc_xport_connect(struct sc_xport *x, const struct sockaddr *addr);

/* Asks the chain under <x> for <q> (see enum sc_xq for the type of <out>). Returns 0 or
 * UV_ENOTSUP when no layer knows. */
int sc_xport_query(struct sc_xport *x, enum sc_xq q, void *out);

/* Returns a string the chain knows for <q> (ALPN, SNI, version, cipher, peer ID), or an empty
 * view. Borrows from the chain. */
struct sc_str sc_xport_query_str(struct sc_xport *x, enum sc_xq q);

/* Whether the idle connection under <x> can be reused (see ops.alive); true when no layer can
 * tell. */
bool sc_xport_alive(struct sc_xport *x);

/* Offers the free room of <b> as the next read buffer (an owner's alloc callback): grows <b> by
 * up to 4 KiB at a time within its cap, and gives a zero-length buffer when it is full, so the
 * read reports UV_ENOBUFS instead of growing past the cap. */
void sc_xport_alloc_buf(struct sc_buf *b, uv_buf_t *out);

/* The bottom layer: a TCP socket on a libuv loop. */
struct sc_tcp_xport {
    struct sc_xport base;
    uv_tcp_t tcp;
    uv_write_t *wreq; /* allocated by the first write the socket does not take at once, kept until
                         the close (most writes complete in uv_try_write) */
    /* no uv_connect_t: most sockets are accepted; a connect allocates one */
    bool reading;
    bool closing;
};

/* Initialises <t> on <loop> with a fresh socket handle that reports to <cbs>/<owner>. The handle
 * then gets a socket from uv_accept on t->tcp or from sc_tcp_xport_connect. Must be closed with
 * sc_xport_close even if nothing else happened. */
void sc_tcp_xport_init(struct sc_tcp_xport *t, uv_loop_t *loop, const struct sc_xport_cbs *cbs,
                       void *owner);

/* Connects to <addr>; cbs->connected fires once (with UV_ECANCELED if closed first). Returns 0,
 * or a negative libuv error and then no callback. The same as sc_xport_connect on the TCP layer. */
int sc_tcp_xport_connect(struct sc_tcp_xport *t, const struct sockaddr *addr);

/* The outcome of an exchange judged pass or fail (the proxy's TCP and gRPC health checks): <why>
 * says what decided it, valid during the call. */
typedef void (*sc_oneshot_verdict_cb)(void *arg, bool ok, const char *why);

/* A connection made for one exchange (net/h1client.c, the proxy's TCP and gRPC health checks):
 * the transport chain (TCP and the layers a wrap hook stacks), a deadline timer, whether the
 * owner's outcome is decided, and the handles left to close before its owner may be freed. The
 * owner's first member is its struct sc_oneshot (sc_oneshot_on_closed relies on it). */
struct sc_oneshot {
    struct sc_tcp_xport tcp; /* the bottom of the chain */
    struct sc_xport *top;    /* its top: the owner reads, writes and queries through it */
    uv_timer_t timer;        /* the deadline; timer.data is the owner */
    int open;                /* handles not yet closed */
    bool closing;
    bool done; /* reported or cancelled: the owner's callbacks ignore what still arrives */
    void *owner;
    void (*freed)(void *owner);
    sc_oneshot_verdict_cb verdict; /* see sc_oneshot_verdict */
    void *verdict_arg;
};

struct sc_oneshot_args {
    const struct sc_xport_cbs *cbs; /* the owner's; closed() is sc_oneshot_on_closed */
    void *owner;
    /* Stacks layers on the TCP transport and returns the new top (NULL: fail). Optional. */
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom);
    void *wrap_arg;
    int (*before_connect)(void *owner); /* runs once the chain is built (0 or an error); optional */
    uint64_t timeout_ms;
    uv_timer_cb on_deadline;       /* sc_oneshot_on_timeout for a verdict */
    void (*freed)(void *owner);    /* every handle closed after sc_oneshot_close: free the owner */
    sc_oneshot_verdict_cb verdict; /* optional: for sc_oneshot_verdict */
    void *verdict_arg;
};

/* Builds <o>'s chain on <loop>, connects it to <addr> (cbs->connected follows) and starts the
 * deadline. Returns 0, or a negative error: then no callback fires but closed() and <freed>,
 * which follow once the handles are closed (the owner must not be used after this call). */
int sc_oneshot_start(struct sc_oneshot *o, uv_loop_t *loop, const struct sockaddr *addr,
                     const struct sc_oneshot_args *a);

/* Closes the chain and the timer (idempotent); <freed> fires once both are closed. */
void sc_oneshot_close(struct sc_oneshot *o);

/* The owner's transport closed() callback (<owner> starts with its struct sc_oneshot): one handle
 * fewer. */
void sc_oneshot_on_closed(void *owner);

/* Decides the exchange: marks it done and stops the deadline. Returns true the first time (the
 * owner then reports its outcome and calls sc_oneshot_close), false once done. */
bool sc_oneshot_finish(struct sc_oneshot *o);

/* Decides an exchange started with a verdict callback: calls it once with <ok> and <why>, then
 * closes; does nothing once done. */
void sc_oneshot_verdict(struct sc_oneshot *o, bool ok, const char *why);

/* An on_deadline for such exchanges: the verdict "timeout". */
void sc_oneshot_on_timeout(uv_timer_t *t);

/* Ends the exchange without an outcome (no callback of the owner's fires any more) and closes it.
 * Does nothing once done. */
void sc_oneshot_cancel(struct sc_oneshot *o);

/* Why connecting failed with <status>: the chain's own account (a TLS layer's) or libuv's. */
const char *sc_oneshot_error(struct sc_oneshot *o, int status);

#endif
