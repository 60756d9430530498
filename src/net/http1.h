// SPDX-License-Identifier: Apache-2.0
// Strict, zero-copy HTTP/1.1 message parsing and writing (RFC 9110 / RFC 9112).
//
// The parser is the proxy's security boundary. It never allocates and never copies: a parsed head
// is a set of views (struct sc_str) into the caller's buffer, valid while that buffer is. It is
// stateless and re-entrant: the caller calls it again with the grown buffer when a head is
// incomplete, passing the length it had before, so that the end-of-head scan resumes. It rejects,
// with a status and a static reason, everything a request smuggler or a confused peer could use:
// Content-Length together with Transfer-Encoding, repeated or malformed Content-Length, a
// Transfer-Encoding whose final coding is not chunked, a Connection header naming Content-Length,
// Transfer-Encoding, Host or Trailer, obs-fold, bare LF or bare CR, whitespace
// before a header colon, invalid header names, NUL/CR/LF/CTL in values, malformed request lines and
// versions, and heads over the configured limits (414 for the request line, 431 for the head).
#ifndef SC_NET_HTTP1_H
#define SC_NET_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/str.h"

struct sc_http_header {
    struct sc_str name;  /* a valid token, case as received */
    struct sc_str value; /* leading and trailing whitespace removed */
};

enum sc_http_body {
    SC_HTTP_BODY_NONE,    /* no body follows the head */
    SC_HTTP_BODY_LENGTH,  /* content_length bytes follow */
    SC_HTTP_BODY_CHUNKED, /* chunked framing follows: use struct sc_http1_chunked */
    SC_HTTP_BODY_EOF,     /* responses only: the body ends when the connection closes */
};

/* A parsed request or response head. Views point into the parsed buffer. */
struct sc_http_msg {
    struct sc_str method; /* requests */
    struct sc_str target; /* requests: origin-, absolute-, authority- (CONNECT) or asterisk-form */
    int status;           /* responses: 100..999 */
    struct sc_str reason; /* responses: may be empty */
    int minor_version;    /* 0 or 1: HTTP/1.0 or HTTP/1.1 */
    struct sc_http_header *headers; /* the caller's array, filled in order */
    size_t nheaders;
    enum sc_http_body body;
    uint64_t content_length; /* when body == SC_HTTP_BODY_LENGTH */
    bool keep_alive;         /* the version's default adjusted by Connection: close / keep-alive */
    bool upgrade;         /* requests: Connection has "upgrade" and an Upgrade header is present */
    bool expect_continue; /* requests: Expect: 100-continue */
    struct sc_str host; /* requests: the single Host value (required for HTTP/1.1); may be empty */
    bool underscore;    /* a field name holds '_' (a proxy's headers_with_underscores acts on it) */
};

struct sc_http_limits {
    uint32_t max_line;    /* request line or status line, bytes; over it: 414 (requests) */
    uint32_t max_head;    /* whole head including the line, bytes; over it: 431 */
    uint32_t max_headers; /* header count; over it (or over the caller's array): 431 */
};

/* Defaults: 8 KiB line, 64 KiB head, 100 headers. */
extern const struct sc_http_limits sc_http1_default_limits;

struct sc_http_error {
    int status;         /* the response status to send: 400, 414, 431, 501, 505 (requests) or
                           502 (a malformed response from an upstream) */
    const char *reason; /* a static, human-readable reason, e.g. "both Content-Length and
                           Transfer-Encoding" */
    size_t offset;      /* byte offset in the buffer where the problem was found */
};

/* Parses a request head from buf[0..len). <last_len> is the <len> of the previous call on the same
 * growing buffer if that call returned 0 (pass 0 on the first call and after any other result:
 * the bytes before <last_len> are taken as already checked), so the scan for the end of the head
 * resumes there. Fills <msg> using msg->headers, an array of <max_headers> entries the caller
 * provides (the limits' count applies too). Leading empty lines (CRLF) before the request line
 * are skipped.
 * Returns the length of the head (> 0) when complete, 0 when more input is needed (and the limits
 * are not yet exceeded), or SC_EHTTP with <err> set. */
int sc_http1_parse_request(const char *buf, size_t len, size_t last_len,
                           const struct sc_http_limits *lim, struct sc_http_msg *msg,
                           size_t max_headers, struct sc_http_error *err);

enum {
    SC_HTTP_RESP_TO_HEAD = 1 << 0,    /* the request was HEAD: no body whatever the headers say */
    SC_HTTP_RESP_TO_CONNECT = 1 << 1, /* the request was CONNECT: a 2xx starts a tunnel */
};

/* Parses a response head, as sc_http1_parse_request does. <flags> are SC_HTTP_RESP_TO_*. Framing
 * follows RFC 9112 section 6.3: 1xx, 204, 304 and responses to HEAD have no body; 2xx to CONNECT
 * has none (a tunnel follows); chunked when Transfer-Encoding ends in chunked; else
 * Content-Length; else until close. Errors carry status 502. */
int sc_http1_parse_response(const char *buf, size_t len, size_t last_len,
                            const struct sc_http_limits *lim, unsigned flags,
                            struct sc_http_msg *msg, size_t max_headers, struct sc_http_error *err);

/* Incremental decoder for chunked bodies. It validates chunk sizes (hex, at most 16 digits, no
 * overflow), extensions (token [= token / quoted-string]), the CRLF after each chunk's data and
 * trailer fields (with <strict_trailers>, refusing those RFC 9110 6.5.1 forbids in trailers:
 * framing, routing, request modifiers, authentication, response control and content processing,
 * e.g. Content-Length, Transfer-Encoding, Host, Authorization, Cookie), and reports where the
 * body's data lies, without copying. A proxy that forwards the chunked framing as received forwards
 * exactly the bytes the decoder consumed. */
struct sc_http1_chunked {
    int state;
    uint64_t remaining;   /* data bytes left in the current chunk */
    size_t line_len;      /* bytes seen of the current size or trailer line */
    size_t trailer_bytes; /* bytes of trailer section seen */
    size_t max_line;      /* cap for a chunk-size line with extensions */
    size_t max_trailers;  /* cap for the whole trailer section */
    uint64_t body_bytes;  /* total data bytes decoded so far */
    bool strict_trailers; /* refuse trailer fields RFC 9110 6.5.1 forbids (a proxy, which
                             forwards them, sets it after init) */
    char tname[20];       /* the current trailer field's name, lower-cased (its first bytes) */
    size_t tname_len;
};

enum {
    SC_HTTP1_CHUNK_MORE = 0, /* input used up without data: call again with more */
    SC_HTTP1_CHUNK_DATA = 1, /* <data> is body data inside the input */
    SC_HTTP1_CHUNK_DONE = 2, /* the last chunk and the trailer section are complete */
};

/* Prepares a decoder; the caps are 4 KiB per size line and 16 KiB of trailers. */
void sc_http1_chunked_init(struct sc_http1_chunked *d);

/* Whether <d> stands between two chunks (before any byte of the next size line): a proxy that
 * forwards the framing as it is may end the body there with a last chunk of its own. */
bool sc_http1_chunked_at_boundary(const struct sc_http1_chunked *d);

/* Consumes from buf[0..len): sets <*consumed> to the bytes used (framing and data) and returns
 * SC_HTTP1_CHUNK_MORE, SC_HTTP1_CHUNK_DATA (with <*data> the data span, which ends the consumed
 * bytes), SC_HTTP1_CHUNK_DONE (nothing after the final CRLF was consumed), or SC_EHTTP with
 * <err> set (status 400). Data is returned in at most one span per call. */
int sc_http1_chunked_next(struct sc_http1_chunked *d, const char *buf, size_t len, size_t *consumed,
                          struct sc_str *data, struct sc_http_error *err);

/* Returns the header named <name> (case-insensitive) from index <*from> on, advancing <*from> past
 * it so the caller can find repeats; NULL when there is none. <from> may be NULL. */
const struct sc_http_header *sc_http1_find(const struct sc_http_msg *m, struct sc_str name,
                                           size_t *from);

/* Returns true when <s> is a token (RFC 9110 5.6.2: a header name, a method); empty is not. */
bool sc_http1_is_token(struct sc_str s);

/* True if <s> is a field-value (RFC 9110 5.5: HTAB, SP, VCHAR and obs-text; empty is one): nothing
 * in it can end a header line. */
bool sc_http1_is_field_value(struct sc_str s);

/* Returns true when the comma-separated <list> holds <token> (case-insensitive, OWS ignored). */
bool sc_http1_has_token(struct sc_str list, struct sc_str token);

/* Returns the standard reason phrase of <status>, or "Unknown". */
const char *sc_http1_reason(int status);

/* True when <s> is a valid Host value or authority-form target: uri-host [":" port] (RFC 9110
 * section 7.2), the port required when <need_port>. */
bool sc_http1_valid_authority(struct sc_str s, bool need_port);

/* Writers: append to <b>, return 0, SC_ETOOBIG from the buffer's cap, or SC_EINVAL for input that
 * would break the framing (a method or name that is not a token, a target, value or content type
 * with CR, LF, NUL or another CTL, a status outside 100..999, a minor version other than 0 or 1).
 * On failure nothing is appended. */
int sc_http1_write_status_line(struct sc_buf *b, int minor_version, int status);
int sc_http1_write_request_line(struct sc_buf *b, struct sc_str method, struct sc_str target);
int sc_http1_write_header(struct sc_buf *b, struct sc_str name, struct sc_str value);
int sc_http1_write_chunk_size(struct sc_buf *b, uint64_t size);

/* Appends a whole HTTP/1.1 response: status line, Content-Type <content_type> (none when NULL),
 * Content-Length, Connection: close when <close> is true, and <body> as given. 1xx, 204 and 304
 * get no Content-Length and need an empty <body>. Used for error replies and the admin server. */
int sc_http1_write_simple(struct sc_buf *b, int status, const char *content_type,
                          struct sc_str body, bool close);

#endif
