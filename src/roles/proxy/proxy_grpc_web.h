// SPDX-License-Identifier: Apache-2.0
// gRPC-Web (proxy_grpc_web.c): requests with content-type application/grpc-web[+proto] or
// application/grpc-web-text[+proto] on a listener with `grpc_web: true` are carried to an HTTP/2
// cluster as gRPC (content-type application/grpc, te: trailers, the -text body base64-decoded),
// and the gRPC response comes back as gRPC-Web: content-type application/grpc-web+proto (or
// -text+proto, base64-encoded in 4-byte-aligned pieces), the trailers as a last body frame
// (flag 0x80, "name:value\r\n" lines). The translation runs inside the upstream HTTP/2 stream
// (proxy_h2_up.c), which already turns the exchange's HTTP/1 bytes into frames and back, so HTTP/1
// clients (browsers) and HTTP/2 clients get it alike and the plain path never sees it.
//
// Bounds: the decoder keeps at most 3 characters between calls and the encoder 2 bytes; a body
// grows by at most 4/3 plus framing, within the stream's capped buffers.
#ifndef SC_ROLES_PROXY_PROXY_GRPC_WEB_H
#define SC_ROLES_PROXY_PROXY_GRPC_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/str.h"
#include "net/http1.h"

/* listeners[].grpc_web as loaded (inlined into the listener's table). */
struct proxy_grpc_web_cfg {
    bool grpc_web;
};
extern const struct sc_opt proxy_grpc_web_listener_opts[];

/* ---- base64 (RFC 4648 section 4), streamed ---- */

/* Decoder state: up to 3 characters of an unfinished quantum. Zero it before use. */
struct proxy_b64_dec {
    uint8_t q[4];
    unsigned n;
    bool bad;
};

/* Decodes <n> characters at <in> into <out>. Padding may end any quantum (gRPC-Web clients send
 * each message padded on its own), after which a new quantum starts; anything else outside the
 * alphabet, or padding in the wrong place, is an error. Returns 0, -1 (malformed: the state stays
 * bad) or SC_ETOOBIG (<out> is full). */
int proxy_b64_decode(struct proxy_b64_dec *d, const char *in, size_t n, struct sc_buf *out);

/* True when the decoded input ended on a quantum boundary (nothing left over, nothing bad). */
bool proxy_b64_decode_done(const struct proxy_b64_dec *d);

/* Encoder state: up to 2 bytes not yet encoded. Zero it before use. */
struct proxy_b64_enc {
    uint8_t q[3];
    unsigned n;
};

/* Encodes <n> bytes at <in>, appending whole quanta to <out> (a multiple of 4 characters); the
 * last 0 to 2 bytes wait for more, or for proxy_b64_encode_end. Returns 0 or SC_ETOOBIG. */
int proxy_b64_encode(struct proxy_b64_enc *e, const uint8_t *in, size_t n, struct sc_buf *out);

/* Encodes what waits, padded. Returns 0 or SC_ETOOBIG. */
int proxy_b64_encode_end(struct proxy_b64_enc *e, struct sc_buf *out);

/* ---- the exchange ---- */

enum { PROXY_GW_NONE, PROXY_GW_BINARY, PROXY_GW_TEXT };

/* What request head <m> is by its content-type: PROXY_GW_BINARY (application/grpc-web[+proto]),
 * PROXY_GW_TEXT (application/grpc-web-text[+proto]) or PROXY_GW_NONE. */
int proxy_grpc_web_kind(const struct sc_http_msg *m);

/* Writes the proxy's own answer to a gRPC-Web request through <s> (any codec): the trailers-only
 * gRPC answer of proxy_grpc_local_reply (HTTP 200, grpc-status from <status>, grpc-message
 * <reason>) with the gRPC-Web content-type of <kind>, and content-length 0 for an HTTP/1 sink.
 * Returns 0 or SC_ETOOBIG. */
struct proxy_exch;
struct proxy_hsink;
int proxy_grpc_web_local_reply(const struct proxy_exch *ex, int kind, int status,
                               struct sc_str reason, struct proxy_hsink *s);

/* ---- the stream's translation ---- */

struct proxy_grpc_web;

/* The gRPC-Web state for a request with head <m>, when <m> is a gRPC-Web request (by its
 * content-type); NULL otherwise. Returns new (freed with proxy_grpc_web_free). */
struct proxy_grpc_web *proxy_grpc_web_request(const struct sc_http_msg *m);
void proxy_grpc_web_free(struct proxy_grpc_web *g);

/* Whether request field <name> goes to the upstream, and with which value: content-type becomes
 * application/grpc[+proto], content-length and te are dropped (the body changes length; te is
 * added as "trailers" by the caller). Updates <*value>. */
bool proxy_grpc_web_req_field(struct proxy_grpc_web *g, struct sc_str name, struct sc_str *value);

/* Request body bytes <p>/<n> as the client sent them, appended to <out> as gRPC (decoded for
 * -text). Returns 0, SC_ETOOBIG, or -1 when the body is malformed (proxy_grpc_web_bad then says
 * why). */
int proxy_grpc_web_req_data(struct proxy_grpc_web *g, const char *p, size_t n, struct sc_buf *out);

/* The request body is complete: checks that a -text body ended on a quantum. Returns 0 or -1. */
int proxy_grpc_web_req_end(struct proxy_grpc_web *g);

/* Why the request body was refused, or NULL. */
const char *proxy_grpc_web_bad(const struct proxy_grpc_web *g);

/* The response head <m> arrived: returns true when it is a gRPC response (content-type
 * application/grpc...) to translate; a response of another type passes unchanged. */
bool proxy_grpc_web_resp_begin(struct proxy_grpc_web *g, const struct sc_http_msg *m);

/* As proxy_grpc_web_req_field, for the translated response: content-type becomes the gRPC-Web
 * one, content-length is dropped (the body grows by the trailer frame). */
bool proxy_grpc_web_resp_field(struct proxy_grpc_web *g, struct sc_str name, struct sc_str *value);

/* Whether the response is being translated (proxy_grpc_web_resp_begin said so). */
bool proxy_grpc_web_active(const struct proxy_grpc_web *g);

/* Response DATA <p>/<n>, appended to <out> as one HTTP/1 chunk (encoded for -text; no chunk when
 * nothing whole is ready yet). Returns 0 or SC_ETOOBIG. */
int proxy_grpc_web_resp_data(struct proxy_grpc_web *g, const uint8_t *p, size_t n,
                             struct sc_buf *out);

/* The response ends: trailers <t> (NULL: none came) become the trailer frame, appended to <out>
 * as the last chunk(s), then the chunked body's end. Returns 0 or SC_ETOOBIG. */
int proxy_grpc_web_resp_end(struct proxy_grpc_web *g, const struct sc_http_msg *t,
                            struct sc_buf *out);

/* Writes the gRPC-Web trailer frame for fields <t> into <out>: 0x80, the length (4 bytes, big
 * endian), "name:value\r\n" per field with names lowercased. Returns 0 or SC_ETOOBIG. */
int proxy_grpc_web_trailer_frame(const struct sc_http_msg *t, struct sc_buf *out);

#endif
