// SPDX-License-Identifier: Apache-2.0
// The header sink: where head rewriting (proxy_headers.c, the route's transforms, XFCC, the
// rate-limit headers) writes a head, whatever the codec that sends it. The rules decide which
// fields go out and with which values; a sink decides how they are framed. The HTTP/1 sink
// (proxy_headers.c) writes text straight into a capped buffer, with no copy beyond that one;
// other codecs gather the fields into their own representation.
#ifndef SC_ROLES_PROXY_PROXY_HSINK_H
#define SC_ROLES_PROXY_PROXY_HSINK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/str.h"

struct proxy_hsink;

/* Every op returns 0 or a negative error (SC_ETOOBIG: the head passed its cap); a caller may OR
 * the results together and check once at the end. */
struct proxy_hsink_ops {
    /* Starts a request head: <method> and the origin-form (or authority-form, for CONNECT)
     * <target>. The authority travels as a Host field (header()), which a sink may move. */
    int (*request)(struct proxy_hsink *s, struct sc_str method, struct sc_str target);
    /* Starts a response head (final or interim): <status>, and the <reason> phrase an HTTP/1
     * sink writes (empty: the standard one). */
    int (*status)(struct proxy_hsink *s, int status, struct sc_str reason);
    /* Adds a field; <name> is a valid token and <value> holds no CR, LF or NUL. */
    int (*header)(struct proxy_hsink *s, struct sc_str name, struct sc_str value);
    /* Opens a field whose value is written in pieces: returns the buffer to append the value to
     * (nothing else may be written to it before close()). NULL when the head is full. */
    struct sc_buf *(*open)(struct proxy_hsink *s, struct sc_str name);
    /* Closes the field open() started. */
    int (*close)(struct proxy_hsink *s);
    /* Ends the head (an HTTP/1 sink re-declares its framing first). */
    int (*end)(struct proxy_hsink *s);
};

/* A sink. <b> is where an HTTP/1 sink writes, or the scratch space another sink keeps its
 * fields in. The framing fields are HTTP/1's, set by the codec that owns the sink before the head
 * is built; other sinks ignore them. */
struct proxy_hsink {
    const struct proxy_hsink_ops *ops;
    struct sc_buf *b;
    void *ctx;                   /* the sink's own state (other codecs) */
    struct sc_str upgrade_value; /* the Upgrade field sent with `upgrade` (when not NULL) */
    bool upgrade;                /* `Connection: upgrade`: the head switches protocols */
    bool chunked;                /* `Transfer-Encoding: chunked` */
    bool close;                  /* `Connection: close` */
    bool keep_alive;             /* `Connection: keep-alive` (to an HTTP/1.0 peer) */
};

/* The HTTP/1 sink: text into <b>. */
extern const struct proxy_hsink_ops proxy_h1_hsink_ops;

static inline struct proxy_hsink proxy_h1_hsink(struct sc_buf *b)
{
    return (struct proxy_hsink){ .ops = &proxy_h1_hsink_ops, .b = b };
}

static inline int proxy_hsink_header(struct proxy_hsink *s, struct sc_str name, struct sc_str value)
{
    return s->ops->header(s, name, value);
}

/* Adds header lines in HTTP/1 form ("Name: value" lines, each ending in CRLF, already checked:
 * an authenticator's or authorizer's output, a trailer section the chunked decoder validated) to
 * <s>, leaving out the fields <drop> (may be NULL) names: copied as they are into an HTTP/1 sink
 * when nothing is dropped, split into fields otherwise. Returns 0 or SC_ETOOBIG. */
int proxy_hsink_lines(struct proxy_hsink *s, struct sc_str lines, bool (*drop)(struct sc_str name));

/* Opens a field written in pieces: appends to the returned buffer, then proxy_hsink_close. */
static inline struct sc_buf *proxy_hsink_open(struct proxy_hsink *s, struct sc_str name)
{
    return s->ops->open(s, name);
}

static inline int proxy_hsink_close(struct proxy_hsink *s)
{
    return s->ops->close(s);
}

#endif
