// SPDX-License-Identifier: Apache-2.0
// Byte-stream transports as a chain of layers: TCP at the bottom, and later TLS, PROXY protocol or
// a peer-identity check stacked on it, each a const ops table plus an instance with a `next`. The
// owner (an HTTP/1 connection) reads, writes and closes through the top layer only and learns of
// progress through its callbacks, so adding a layer changes no owner code.
//
// Contract shared by every layer: read bytes go into buffers the owner provides (alloc), so a
// layer copies nothing it does not have to; write() takes effect in order, either completely at
// once (returns 0) or with the remainder queued (returns 1, and write_done fires exactly once,
// after which the owner may write again: at most one write is pending per transport); close() is
// idempotent, cancels a pending write (write_done fires with UV_ECANCELED first) and fires closed
// exactly once, after which the owner may free the memory holding the transport.
#ifndef SC_NET_TRANSPORT_H
#define SC_NET_TRANSPORT_H

#include <stdbool.h>
#include <sys/types.h>

#include <uv.h>

struct sc_xport;

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
 * or a negative libuv error and then no callback. */
int sc_tcp_xport_connect(struct sc_tcp_xport *t, const struct sockaddr *addr);

#endif
