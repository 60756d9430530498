// SPDX-License-Identifier: Apache-2.0
// HTTP/2 <-> HTTP/1.1 translation for the proxy (proxy_h2_msg.c), the part of HTTP/2 the proxy
// writes itself (nghttp2 parses and writes the frames): a header block received on a stream,
// checked against RFC 9113 section 8 and turned into the protocol-neutral struct sc_http_msg
// that routing and head rewriting read; the header sink (proxy_hsink.h) that turns a rewritten
// head into HTTP/2 fields; and gRPC's status rules (content type, grpc-timeout, the HTTP status
// and local-reply mappings).
#ifndef SC_ROLES_PROXY_PROXY_H2_H
#define SC_ROLES_PROXY_PROXY_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/nghttp2.h"

#include "core/buf.h"
#include "core/str.h"
#include "net/http1.h"
#include "roles/proxy/proxy_hsink.h"

/* Fields in one header block, pseudo-header fields included (as MAX_HEADERS for HTTP/1): what
 * the proxy sends, and by default what it takes (a listener's max_request_headers). */
#define PROXY_H2_MAX_FIELDS 100
/* Default SETTINGS_MAX_HEADER_LIST_SIZE: 64 KiB, counted as RFC 9113 section 6.5.2 does (name,
 * value and 32 bytes per field). */
#define PROXY_H2_MAX_HEADER_LIST 65536

enum proxy_h2_kind { PROXY_H2_REQUEST, PROXY_H2_RESPONSE, PROXY_H2_TRAILERS };

/* Outcome of adding a field or finishing a block. */
enum {
    PROXY_H2_OK = 0,
    PROXY_H2_MALFORMED = -1, /* RFC 9113 section 8.1.1: a stream error (PROTOCOL_ERROR) */
    PROXY_H2_TOO_BIG = -2,   /* over the header list size or the field count: 431, or a reset */
};

/* A field kept as offsets into its block's store (which may move while the block grows). */
struct proxy_h2_field {
    uint32_t name, name_len, value, value_len;
};

/* A header block received on a stream, field by field (nghttp2's on_header callback lends each
 * name and value for the call only: they are copied into <store>, bounded by the list size). */
struct proxy_h2_head {
    int kind;
    struct sc_buf store;
    struct proxy_h2_field *f; /* <cap> of them, at least <max_fields> */
    size_t n;
    size_t cap;
    size_t max_fields; /* the most a block may hold (the listener's max_request_headers) */
    size_t list_size;
    size_t max_list_size;
    int method, scheme, authority, path, status, protocol; /* pseudo-header fields: index or -1 */
    int host;                                              /* the Host field: index or -1 */
    size_t ncookies;
    bool regular; /* a regular field was seen: a pseudo-header field after it is malformed */
    /* Filled by proxy_h2_head_finish, borrowing the store: */
    struct sc_http_msg m;
    struct sc_http_header *h; /* <cap> + 1 of them */
};

/* Readies <hd> (zeroed before its first use) for a block of <kind>, bounded by <max_list_size>
 * (0: the default) and <max_fields> fields (0: PROXY_H2_MAX_FIELDS). */
void proxy_h2_head_init(struct proxy_h2_head *hd, int kind, size_t max_list_size,
                        size_t max_fields);

/* Frees what <hd> holds; it may be initialised again. */
void proxy_h2_head_free(struct proxy_h2_head *hd);

/* Adds a field as received (RFC 9113 sections 8.2 and 8.3: lowercase names, no connection-
 * specific fields, `te` only as "trailers", pseudo-header fields first, each known one at most
 * once and only in its kind of block). Returns PROXY_H2_OK, PROXY_H2_MALFORMED or
 * PROXY_H2_TOO_BIG, with <*why> a static reason. */
int proxy_h2_head_add(struct proxy_h2_head *hd, struct sc_str name, struct sc_str value,
                      const char **why);

/* Completes the block into hd->m: a request's method, target (the :path, or the :authority of a
 * CONNECT), Host (the :authority, added as a field when the client sent no Host; one that differs
 * from it is malformed), crumbled cookies joined with "; " (RFC 9113 section 8.2.3), body framing
 * from Content-Length and <end_stream> (a body of unknown length is SC_HTTP_BODY_CHUNKED: the
 * HTTP/1 side re-frames it); a response's status; trailers must end the stream. Returns
 * PROXY_H2_OK, PROXY_H2_MALFORMED or PROXY_H2_TOO_BIG with <*why>. */
int proxy_h2_head_finish(struct proxy_h2_head *hd, bool end_stream, const char **why);

/* Fields to send on a stream, gathered by the HTTP/2 header sink: names lowercased,
 * connection-specific fields dropped (`te` kept as "trailers" only), Host moved to :authority,
 * pseudo-header fields sent first. */
struct proxy_h2_out {
    struct sc_buf store;
    struct proxy_h2_field f[PROXY_H2_MAX_FIELDS + 8];
    size_t n;
    int authority;        /* index of :authority, or -1 */
    size_t open_name;     /* the field open() started: its name's offset */
    size_t open_len;      /* and length */
    struct sc_str scheme; /* :scheme of requests ("http" or "https") */
    int err;
};

/* Readies <o> (zeroed before its first use; bounded by <max> bytes of names and values, 0: the
 * default) and returns a sink writing into it. */
struct proxy_hsink proxy_h2_out_sink(struct proxy_h2_out *o, struct sc_str scheme, size_t max);

/* Frees what <o> holds. */
void proxy_h2_out_free(struct proxy_h2_out *o);

/* Fills <nv> (room for <cap>) with o's fields, pseudo-header fields first, borrowing o's store
 * (nghttp2 copies them when the frame is submitted). Authorization fields are never indexed
 * (HPACK). Returns the count, or -1 when <cap> is short. */
int proxy_h2_out_nv(const struct proxy_h2_out *o, nghttp2_nv *nv, size_t cap);

/* ---- trailers ---- */

/* Writes HTTP/2 trailers <t> (a finished PROXY_H2_TRAILERS block) as the end of an HTTP/1.1
 * chunked body: the last chunk, the trailer fields, the blank line. Fields that cannot follow
 * the content (framing, routing, connection-specific: content-length, transfer-encoding, host,
 * te, trailer, connection, keep-alive, proxy-connection, upgrade) are dropped. Returns 0 or
 * SC_ETOOBIG. */
int proxy_h2_trailers_to_h1(const struct sc_http_msg *t, struct sc_buf *out);

/* Adds the fields of an HTTP/1.1 trailer section <section> ("name: value" lines, each ending in
 * CRLF, as the chunked decoder validated them; the blank line may follow) to sink <s> and ends
 * it, dropping the same fields. Returns 0 or the sink's error. */
int proxy_h2_trailers_from_h1(struct sc_str section, struct proxy_hsink *s);

/* ---- gRPC ---- */

enum {
    PROXY_GRPC_OK = 0,
    PROXY_GRPC_CANCELLED = 1,
    PROXY_GRPC_UNKNOWN = 2,
    PROXY_GRPC_DEADLINE_EXCEEDED = 4,
    PROXY_GRPC_PERMISSION_DENIED = 7,
    PROXY_GRPC_RESOURCE_EXHAUSTED = 8,
    PROXY_GRPC_UNIMPLEMENTED = 12,
    PROXY_GRPC_INTERNAL = 13,
    PROXY_GRPC_UNAVAILABLE = 14,
    PROXY_GRPC_UNAUTHENTICATED = 16,
};

/* True for `application/grpc` and its `+proto`, `+json`, ... and `;params` forms (not
 * grpc-web). */
bool proxy_grpc_is(struct sc_str content_type);

/* Parses a grpc-timeout value (1 to 8 digits and a unit of H, M, S, m, u or n) into
 * milliseconds, rounded up (a nanosecond deadline is still a deadline). Returns 0 or -1. */
int proxy_grpc_timeout_parse(struct sc_str v, uint64_t *ms);

/* The gRPC status of an upstream response that carries none, from its HTTP status (gRPC's
 * table: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED,
 * 429/502/503/504 UNAVAILABLE, other UNKNOWN). */
int proxy_grpc_from_http(int status);

/* The gRPC status of the proxy's own answer <status>: timeouts (408, 504) DEADLINE_EXCEEDED,
 * rate limited (429) RESOURCE_EXHAUSTED, others as proxy_grpc_from_http (no endpoint or overflow,
 * 503: UNAVAILABLE; denied, 403: PERMISSION_DENIED; 401: UNAUTHENTICATED; 400: INTERNAL). */
int proxy_grpc_for_local(int status);

/* Percent-encodes <msg> into <out> as grpc-message wants (bytes outside 0x20..0x7E, and '%',
 * as %XX). Returns 0 or SC_ETOOBIG. */
int proxy_grpc_message_encode(struct sc_buf *out, struct sc_str msg);

/* Writes the proxy's own answer to a gRPC client through <s>, whatever the codec: a trailers-only
 * response (`:status 200`, content-type application/grpc, grpc-status ex->grpc_status when set,
 * else from <status> by proxy_grpc_for_local, grpc-message <reason> percent-encoded) with the
 * exchange's rate-limit headers. Returns 0 or SC_ETOOBIG. */
struct proxy_exch;
int proxy_grpc_local_reply(const struct proxy_exch *ex, int status, struct sc_str reason,
                           struct proxy_hsink *s);

/* ---- upstream HTTP/2 (proxy_h2_up.c) ---- */

struct proxy_cluster;
struct proxy_cluster_cfg;
struct proxy_endpoint;
struct proxy_pool;
struct proxy_uconn;
struct sc_strv;

/* Fills c->h2up from the cluster's `protocol` and `http2` options (<cc> NULL: defaults). */
struct proxy_metrics;
void proxy_h2_up_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc,
                              struct proxy_metrics *pm);

/* Registers sidecar_upstream_http2_events_total. */
void proxy_h2_up_metrics_init(struct proxy_metrics *pm);

/* The ALPN list a TLS cluster offers when its config names none: h2 for http2, h2 and http/1.1
 * for auto; left alone otherwise. */
void proxy_h2_up_alpn(const struct proxy_cluster_cfg *cc, struct sc_strv *alpn);

/* Starts the try of <ex> on a stream of a pooled HTTP/2 connection to <ep> with one free.
 * Returns false when there is none (the caller opens a connection). */
bool proxy_h2_up_attempt(struct proxy_exch *ex, struct proxy_endpoint *ep);

/* <uc> (carrying uc->ex) is connected: when the cluster speaks HTTP/2 on it (prior knowledge, or
 * ALPN h2), it becomes an HTTP/2 connection, pooled, and the exchange's try its first stream.
 * Returns false when it stays an HTTP/1 connection. */
bool proxy_h2_up_connected(struct proxy_uconn *uc);

/* proxy_uconn_close of an HTTP/2 connection: fails its streams, ends the session and closes
 * its own handles; returns how many (their closes end in proxy_uconn_closed_one). */
unsigned proxy_h2_up_conn_closing(struct proxy_uconn *uc);

/* The last handle of an HTTP/2 connection closed: frees its session state. */
void proxy_h2_up_free(struct proxy_uconn *uc);

/* Closes <pool>'s idle HTTP/2 connections; busy ones finish their streams (GOAWAY) and close. */
void proxy_h2_up_close_pool(struct proxy_pool *pool);

/* ---- nghttp2's allocator on a worker (proxy_h2_mem.c) ---- */

struct proxy_worker;

/* The allocator the worker's HTTP/2 sessions are created with (made on first use): small blocks
 * are recycled on the worker's bounded free lists. Only the worker's thread may use it, and every
 * session made with it must be deleted before proxy_h2_mem_free. Returns a pointer that stays
 * valid until then. */
nghttp2_mem *proxy_h2_mem(struct proxy_worker *w);

/* Frees the worker's allocator and the blocks it keeps. */
void proxy_h2_mem_free(struct proxy_worker *w);

#endif
