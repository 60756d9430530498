// SPDX-License-Identifier: Apache-2.0
// Strict HTTP/1.1 head parser and chunked decoder (RFC 9110, RFC 9112; the writers are in
// http1_write.c). The head parser
// walks the buffer once, line by line, validating every byte as it goes and recording views; it
// never allocates and never reads at or past buf + len. Its key invariant is that a prefix of a
// message fails exactly as the whole message does, or asks for more: a syntax error is reported
// only once the line holding it is complete, and the limits are thresholds on the position of a
// line's LF, checked before the line's syntax. That makes the answer independent of how the bytes
// were split into reads, and lets a call that received no new LF skip the re-parse entirely (the
// previous call already validated every complete line), so a head trickled in one byte at a time
// costs one full parse per line, not per byte.
#include "net/http1.h"

#include <limits.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define HTTP1_SSE2 1
#endif

#include "core/error.h"

const struct sc_http_limits sc_http1_default_limits = {
    .max_line = 8 * 1024,
    .max_head = 64 * 1024,
    .max_headers = 100,
};

/* RFC 9112 2.2 asks servers to ignore "at least one" empty line before a request line; a handful
 * covers clients that send a stray CRLF after a body, and a cap keeps a stream of empty lines from
 * costing a full re-parse each. */
#define MAX_EMPTY_LINES 4

/* Chunked decoder caps, per the header's contract. */
#define CHUNK_MAX_LINE 4096
#define CHUNK_MAX_TRAILERS 16384
#define CHUNK_MAX_DIGITS 16

/* Content-Length values above this are rejected: nothing we forward is that large, and downstream
 * code may hold lengths in signed 64-bit integers. */
#define MAX_CONTENT_LENGTH ((uint64_t)INT64_MAX)

/* Character classes, one bit each, in a table built at compile time from the RFC grammar. */
enum {
    C_TCHAR = 1 << 0, /* token (RFC 9110 5.6.2) */
    C_VCHAR = 1 << 1, /* visible ASCII 0x21-0x7E: request-target */
    C_FIELD = 1 << 2, /* field-value and reason-phrase: HTAB, SP, VCHAR, obs-text */
    C_HEX = 1 << 3,
    C_QDTEXT = 1 << 4, /* quoted-string text (RFC 9110 5.6.4) */
    C_HOST = 1 << 5,   /* reg-name: unreserved, sub-delims and '%' (RFC 3986) */
    C_NAME = 1 << 6,   /* token without '_': field names are scanned with it, and a stop at '_'
                          marks the message (headers_with_underscores) at no cost otherwise */
    C_HOSTCH = 1 << 7, /* C_HOST but '%': a host is scanned with it, stopping at escapes */
};

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'A' && (c) <= 'Z') || ((c) >= 'a' && (c) <= 'z'))
#define IS_TCHAR(c)                                                                                \
    (IS_DIGIT(c) || IS_ALPHA(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' ||         \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||          \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_VCHAR(c) ((c) >= 0x21 && (c) <= 0x7e)
#define IS_FIELD(c) ((c) == '\t' || (c) == ' ' || IS_VCHAR(c) || (c) >= 0x80)
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define IS_QDTEXT(c) (IS_FIELD(c) && (c) != '"' && (c) != '\\')
#define IS_HOST(c)                                                                                 \
    (IS_DIGIT(c) || IS_ALPHA(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' ||         \
     (c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' ||          \
     (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=' || (c) == '%')
#define CLASS(c)                                                                                   \
    ((IS_TCHAR(c) ? C_TCHAR : 0) | (IS_VCHAR(c) ? C_VCHAR : 0) | (IS_FIELD(c) ? C_FIELD : 0) |     \
     (IS_HEX(c) ? C_HEX : 0) | (IS_QDTEXT(c) ? C_QDTEXT : 0) | (IS_HOST(c) ? C_HOST : 0) |         \
     (IS_TCHAR(c) && (c) != '_' ? C_NAME : 0) | (IS_HOST(c) && (c) != '%' ? C_HOSTCH : 0))
#define ROW(b)                                                                                     \
    CLASS(b), CLASS(b + 1), CLASS(b + 2), CLASS(b + 3), CLASS(b + 4), CLASS(b + 5), CLASS(b + 6),  \
        CLASS(b + 7), CLASS(b + 8), CLASS(b + 9), CLASS(b + 10), CLASS(b + 11), CLASS(b + 12),     \
        CLASS(b + 13), CLASS(b + 14), CLASS(b + 15)

static const unsigned char cls[256] = {
    ROW(0x00), ROW(0x10), ROW(0x20), ROW(0x30), ROW(0x40), ROW(0x50), ROW(0x60), ROW(0x70),
    ROW(0x80), ROW(0x90), ROW(0xa0), ROW(0xb0), ROW(0xc0), ROW(0xd0), ROW(0xe0), ROW(0xf0),
};

static inline bool is(unsigned char c, unsigned mask)
{
    return (cls[c] & mask) != 0;
}

static inline unsigned hexval(unsigned char c)
{
    return IS_DIGIT(c) ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/* Compares a token or a field value with a lowercase literal of letters and '-' of the same length.
 * OR-ing 0x20 folds case exactly here: the only other byte that folds onto one of those is CR (onto
 * '-'), which neither tokens nor validated values hold. */
static inline bool token_is(const char *p, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lower[i]) {
            return false;
        }
    }
    return true;
}

static inline bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Returns the index of the first byte at or after <p> that a field value may not hold (a CTL
 * other than HTAB, or DEL; the CR ending the line is one), or <len>. SSE2 tests 16 bytes at a
 * time and never loads past <len>. */
static inline size_t scan_field(const char *buf, size_t p, size_t len)
{
#ifdef HTTP1_SSE2
    const __m128i lim = _mm_set1_epi8(0x1f);
    const __m128i tab = _mm_set1_epi8('\t');
    const __m128i del = _mm_set1_epi8(0x7f);
    while (len - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, lim), v); /* v <= 0x1f, unsigned */
        ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, tab), ctl);
        ctl = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, del));
        int m = _mm_movemask_epi8(ctl);
        if (m != 0) {
            return p + (size_t)__builtin_ctz((unsigned)m);
        }
        p += 16;
    }
#endif
    while (p < len && is((unsigned char)buf[p], C_FIELD)) {
        p++;
    }
    return p;
}

/* Returns the index of the first byte at or after <p> outside 0x21-0x7E (the SP ending a
 * request-target, or an invalid byte), or <len>. */
static inline size_t scan_vchar(const char *buf, size_t p, size_t len)
{
#ifdef HTTP1_SSE2
    const __m128i lo = _mm_set1_epi8(0x20);
    const __m128i hi = _mm_set1_epi8(0x7f);
    while (len - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(buf + p));
        __m128i bad = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, lo), v),  /* v <= 0x20 */
                                   _mm_cmpeq_epi8(_mm_max_epu8(v, hi), v)); /* v >= 0x7f */
        int m = _mm_movemask_epi8(bad);
        if (m != 0) {
            return p + (size_t)__builtin_ctz((unsigned)m);
        }
        p += 16;
    }
#endif
    while (p < len && is((unsigned char)buf[p], C_VCHAR)) {
        p++;
    }
    return p;
}

/* One parse: the input, the effective limits and where errors go. */
struct ps {
    const char *buf;
    size_t len;
    size_t max_line;
    size_t max_head;
    size_t max_headers;
    bool response;
    struct sc_http_error *err;
    struct sc_http_error spare; /* where errors go when the caller passed no <err> */
};

/* What the header fields say about framing and the connection, gathered during the walk. */
struct fields {
    unsigned cl_count;
    uint64_t cl;
    bool te;              /* a Transfer-Encoding field was seen */
    bool te_chunked;      /* chunked was seen among the codings */
    bool te_chunked_last; /* the last coding seen is chunked */
    size_t te_at;
    unsigned host_count;
    bool close;
    bool keep_alive;
    bool conn_upgrade;
    bool upgrade;
    bool expect_continue;
};

enum line_kind {
    LINE_START, /* request or status line: the line limit applies */
    LINE_OTHER, /* empty line before a request line, header field line or the final CRLF */
};

static int fail(struct ps *ps, int status, size_t at, const char *reason)
{
    ps->err->status = ps->response ? 502 : status;
    ps->err->reason = reason;
    ps->err->offset = at;
    return SC_EHTTP;
}

/* Applies the limits to the line starting at <s> whose LF is at <x>, or which is still incomplete
 * with <x> == len. Each limit is a threshold on x: the line is too long when its LF lies at or past
 * s + max_line + 2 (content plus CR), the head when its LF lies at or past max_head. Because an
 * incomplete line's LF can only be further on, a prefix hits a threshold only if the whole line
 * does, and the lower threshold always decides which error it is. Always inlined: it is two
 * compares on every line, and under link-time optimisation whether it was inlined shifted with
 * the size of unrelated code (a call per request head). */
static inline __attribute__((always_inline)) int check_limits(struct ps *ps, size_t s, size_t x,
                                                              enum line_kind kind)
{
    if (kind == LINE_START && x - s >= ps->max_line + 2 && s + ps->max_line + 2 <= ps->max_head) {
        return fail(ps, 414, s + ps->max_line,
                    ps->response ? "status line too long" : "request line too long");
    }
    if (x >= ps->max_head) {
        return fail(ps, 431, ps->max_head, "header section too large");
    }
    return 0;
}

/* The line starting at <s> ran out of input: more is needed unless a limit is already exceeded. */
static int need_more(struct ps *ps, size_t s, enum line_kind kind)
{
    int rc = check_limits(ps, s, ps->len, kind);
    return rc < 0 ? rc : 0;
}

/* Reports the syntax error at <at> in the line starting at <s>, but only once the line is complete
 * and within the limits: until its LF arrives the line is merely incomplete, so a split read
 * cannot change which error a message gets. */
static int bad_line(struct ps *ps, size_t s, size_t at, enum line_kind kind, int status,
                    const char *reason)
{
    const char *lf = memchr(ps->buf + at, '\n', ps->len - at);
    if (lf == NULL) {
        return need_more(ps, s, kind);
    }
    int rc = check_limits(ps, s, (size_t)(lf - ps->buf), kind);
    if (rc < 0) {
        return rc;
    }
    return fail(ps, status, at, reason);
}

/* Explains why a field-value scan stopped at <at>: a bare line end or a byte values may not hold.
 */
static const char *value_error(const char *buf, size_t at)
{
    switch (buf[at]) {
    case '\r':
        return "bare CR";
    case '\n':
        return "bare LF";
    case '\0':
        return "NUL in field value";
    default:
        return "control character in field value";
    }
}

static void ps_init(struct ps *ps, const char *buf, size_t len, const struct sc_http_limits *lim,
                    size_t max_headers, const struct sc_http_msg *msg, bool response,
                    struct sc_http_error *err)
{
    if (lim == NULL) {
        lim = &sc_http1_default_limits;
    }
    ps->buf = buf;
    ps->len = len;
    /* The head length is returned as an int. */
    ps->max_head = lim->max_head < INT_MAX ? lim->max_head : INT_MAX;
    ps->max_line = lim->max_line < ps->max_head ? lim->max_line : ps->max_head;
    ps->max_headers = lim->max_headers < max_headers ? lim->max_headers : max_headers;
    if (msg->headers == NULL) {
        ps->max_headers = 0;
    }
    ps->response = response;
    ps->err = err != NULL ? err : &ps->spare;
    ps->err->status = 0;
    ps->err->reason = NULL;
    ps->err->offset = 0;
}

static void msg_reset(struct sc_http_msg *msg)
{
    msg->method = SC_STR_NULL;
    msg->target = SC_STR_NULL;
    msg->status = 0;
    msg->reason = SC_STR_NULL;
    msg->minor_version = 0;
    msg->nheaders = 0;
    msg->body = SC_HTTP_BODY_NONE;
    msg->content_length = 0;
    msg->keep_alive = false;
    msg->upgrade = false;
    msg->expect_continue = false;
    msg->host = SC_STR_NULL;
    msg->underscore = false;
}

/* The previous call saw buf[0..last_len), validated every complete line in it and asked for more.
 * When the new bytes hold no LF no line was completed, so only the limits can have changed; they
 * depend on whether the incomplete line is the start line, which starts at <s>. */
static int resume_check(struct ps *ps, size_t s)
{
    if (ps->len < ps->max_head && ps->len - s < ps->max_line + 2) {
        return 0; /* no threshold is reachable yet */
    }
    size_t n = ps->len - s < ps->max_line + 2 ? ps->len - s : ps->max_line + 2;
    /* A start line whose LF lay past its threshold would have failed the previous call. */
    bool on_start_line = memchr(ps->buf + s, '\n', n) == NULL;
    return need_more(ps, s, on_start_line ? LINE_START : LINE_OTHER);
}

static bool resumable(const char *buf, size_t len, size_t last_len)
{
    return last_len > 0 && last_len <= len && memchr(buf + last_len, '\n', len - last_len) == NULL;
}

/* Checks a Host value or an authority-form target: uri-host [":" port] (RFC 9110 7.2). Port digits
 * are required when <need_port> (CONNECT). */
static bool valid_authority(const char *p, size_t n, bool need_port)
{
    size_t i = 0;
    if (n > 0 && p[0] == '[') {
        /* IP-literal: IPv6address or IPvFuture; checked for its alphabet, not its structure. */
        i = 1;
        while (i < n && p[i] != ']') {
            unsigned char c = (unsigned char)p[i];
            if (!is(c, C_HOST) && c != ':') {
                return false;
            }
            i++;
        }
        if (i == n || i == 1) {
            return false;
        }
        i++;
    } else {
        for (;;) {
            while (i < n && is((unsigned char)p[i], C_HOSTCH)) {
                i++;
            }
            if (i == n || p[i] != '%') {
                break;
            }
            if (i + 2 >= n || !is((unsigned char)p[i + 1], C_HEX) ||
                !is((unsigned char)p[i + 2], C_HEX)) {
                return false;
            }
            i++;
        }
        if (i < n && p[i] != ':') {
            return false; /* not a host character */
        }
        if (i == 0 && (n > 0 || need_port)) {
            return false; /* a port with no host */
        }
    }
    if (i == n) {
        return !need_port;
    }
    if (p[i] != ':') {
        return false;
    }
    i++;
    size_t digits = n - i;
    if (need_port && (digits == 0 || digits > 5)) {
        return false;
    }
    unsigned port = 0;
    for (; i < n; i++) {
        if (!IS_DIGIT(p[i])) {
            return false;
        }
        port = port * 10 + (unsigned)(p[i] - '0');
        if (port > 65535) {
            return false;
        }
    }
    return true;
}

bool sc_http1_valid_authority(struct sc_str s, bool need_port)
{
    return valid_authority(s.p, s.len, need_port);
}

/* Checks absolute-form: scheme "://" and an authority that is a valid Host value with a
 * non-empty host (RFC 9110 4.2.1 rejects an http URI with an empty host; the authority replaces
 * Host, RFC 9112 3.2.2), userinfo aside. The rest is visible ASCII, which the line scan already
 * ensured. */
static bool valid_absolute(const char *p, size_t n)
{
    size_t i = 0;
    if (n == 0 || !IS_ALPHA(p[0])) {
        return false;
    }
    while (i < n &&
           (IS_ALPHA(p[i]) || IS_DIGIT(p[i]) || p[i] == '+' || p[i] == '-' || p[i] == '.')) {
        i++;
    }
    if (n - i < 4 || p[i] != ':' || p[i + 1] != '/' || p[i + 2] != '/') {
        return false;
    }
    size_t a = i + 3, e = a;
    while (e < n && p[e] != '/' && p[e] != '?' && p[e] != '#') {
        e++;
    }
    for (size_t k = e; k > a; k--) {
        if (p[k - 1] == '@') {
            a = k; /* userinfo: left out when the target goes upstream */
            break;
        }
    }
    return e > a && p[a] != ':' && valid_authority(p + a, e - a, false);
}

/* Returns the next element (OWS trimmed, possibly empty) of a comma-separated list and advances
 * <*pos> past its comma; <*pos> > n once the last element has been returned. */
static struct sc_str next_element(const char *p, size_t n, size_t *pos)
{
    size_t i = *pos;
    while (i < n && ows(p[i])) {
        i++;
    }
    size_t start = i;
    while (i < n && p[i] != ',') {
        i++;
    }
    size_t end = i;
    while (end > start && ows(p[end - 1])) {
        end--;
    }
    *pos = i < n ? i + 1 : n + 1;
    return sc_str_n(p + start, end - start);
}

static bool all_tchar(struct sc_str s)
{
    if (s.len == 0) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        if (!is((unsigned char)s.p[i], C_TCHAR)) {
            return false;
        }
    }
    return true;
}

bool sc_http1_is_token(struct sc_str s)
{
    return all_tchar(s);
}

bool sc_http1_is_field_value(struct sc_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (!is((unsigned char)s.p[i], C_FIELD)) {
            return false;
        }
    }
    return true;
}

/* Reads the codings of one Transfer-Encoding field. Codings before a final chunked may be anything
 * well-formed: a proxy passes them on and the origin answers 501 if it must. A final coding other
 * than chunked is always 400, never 501: whatever the coding, the body cannot be delimited.
 * Stricter than RFC 9110 5.6.1 on purpose: an empty element or a coding with parameters is
 * rejected, because other parsers disagree on them and disagreement about framing is how requests
 * are smuggled. */
static int te_field(struct ps *ps, struct fields *f, struct sc_str v, size_t at)
{
    size_t pos = 0;
    if (v.len == 0) {
        return fail(ps, 400, at, "empty Transfer-Encoding");
    }
    while (pos <= v.len) {
        struct sc_str c = next_element(v.p, v.len, &pos);
        if (!all_tchar(c)) {
            return fail(ps, 400, at, "invalid Transfer-Encoding");
        }
        bool chunked = c.len == 7 && token_is(c.p, "chunked", 7);
        if (chunked && f->te_chunked) {
            return fail(ps, 400, at, "chunked applied more than once");
        }
        f->te_chunked |= chunked;
        f->te_chunked_last = chunked;
    }
    return 0;
}

/* Notes the Connection options this parser acts on. A Connection header naming a field that
 * frames or routes the message (Content-Length, Transfer-Encoding, Host, Trailer) is refused: a
 * proxy drops the fields Connection names, and dropping the framing turns the body into a second
 * request (smuggling). Returns false for those. */
static bool connection_field(struct fields *f, struct sc_str v)
{
    size_t pos = 0;
    while (pos <= v.len) {
        struct sc_str t = next_element(v.p, v.len, &pos);
        if (t.len == 5 && token_is(t.p, "close", 5)) {
            f->close = true;
        } else if (t.len == 10 && token_is(t.p, "keep-alive", 10)) {
            f->keep_alive = true;
        } else if (t.len == 7 && token_is(t.p, "upgrade", 7)) {
            f->conn_upgrade = true;
        } else if ((t.len == 14 && token_is(t.p, "content-length", 14)) ||
                   (t.len == 17 && token_is(t.p, "transfer-encoding", 17)) ||
                   (t.len == 4 && token_is(t.p, "host", 4)) ||
                   (t.len == 7 && token_is(t.p, "trailer", 7))) {
            return false;
        }
    }
    return true;
}

/* Acts on the fields that decide framing, routing and the connection, once their line is complete
 * and within the limits. Errors found here are line errors: a prefix never sees them early. */
static int known_field(struct ps *ps, struct sc_http_msg *msg, struct fields *f,
                       const struct sc_http_header *h, size_t at)
{
    const char *n = h->name.p;
    struct sc_str v = h->value;
    switch (h->name.len) {
    case 4:
        if (token_is(n, "host", 4) && !ps->response) {
            if (f->host_count++ > 0) {
                return fail(ps, 400, at, "more than one Host");
            }
            if (!valid_authority(v.p, v.len, false)) {
                return fail(ps, 400, at, "invalid Host");
            }
            msg->host = v;
        }
        break;
    case 6:
        if (token_is(n, "expect", 6) && sc_http1_has_token(v, SC_STR("100-continue"))) {
            f->expect_continue = true;
        }
        break;
    case 7:
        if (token_is(n, "upgrade", 7)) {
            f->upgrade = true;
        }
        break;
    case 10:
        if (token_is(n, "connection", 10) && !connection_field(f, v)) {
            return fail(ps, 400, at, "Connection names a framing or routing field");
        }
        break;
    case 14:
        if (token_is(n, "content-length", 14)) {
            if (f->te) {
                return fail(ps, 400, at, "both Content-Length and Transfer-Encoding");
            }
            if (f->cl_count++ > 0) {
                return fail(ps, 400, at, "more than one Content-Length");
            }
            uint64_t cl = 0;
            if (v.len == 0) {
                return fail(ps, 400, at, "invalid Content-Length");
            }
            for (size_t i = 0; i < v.len; i++) {
                unsigned d = (unsigned)(unsigned char)v.p[i] - '0';
                if (d > 9) {
                    return fail(ps, 400, at, "invalid Content-Length");
                }
                if (cl > (MAX_CONTENT_LENGTH - d) / 10) {
                    return fail(ps, 400, at, "Content-Length too large");
                }
                cl = cl * 10 + d;
            }
            f->cl = cl;
        }
        break;
    case 17:
        if (token_is(n, "transfer-encoding", 17)) {
            if (msg->minor_version == 0) {
                /* RFC 9112 6.1: the framing of a 1.0 message with Transfer-Encoding is faulty. */
                return fail(ps, 400, at, "Transfer-Encoding in HTTP/1.0");
            }
            if (f->cl_count > 0) {
                return fail(ps, 400, at, "both Content-Length and Transfer-Encoding");
            }
            if (!f->te) {
                f->te_at = at;
            }
            f->te = true;
            return te_field(ps, f, v, at);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Parses header field lines from <p> up to and including the empty line. Returns the head length,
 * 0 for more input, or SC_EHTTP. */
static int parse_fields(struct ps *ps, size_t p, struct sc_http_msg *msg, struct fields *f)
{
    const char *buf = ps->buf;
    size_t len = ps->len;
    for (;;) {
        size_t s = p;
        if (p == len) {
            return need_more(ps, s, LINE_OTHER);
        }
        unsigned char c = (unsigned char)buf[p];
        if (c == '\r') {
            if (p + 1 == len) {
                return need_more(ps, s, LINE_OTHER);
            }
            if (buf[p + 1] != '\n') {
                return bad_line(ps, s, p, LINE_OTHER, 400, "bare CR");
            }
            int rc = check_limits(ps, s, p + 1, LINE_OTHER);
            if (rc < 0) {
                return rc;
            }
            return (int)(p + 2);
        }
        /* The name: a '_' in it only costs off the common path. */
        if (!is(c, C_NAME)) {
            if (c != '_') {
                const char *why = "invalid character in field name";
                if (c == '\n') {
                    why = "bare LF";
                } else if (ows((char)c)) {
                    why = "obs-fold or whitespace before a field line";
                } else if (c == ':') {
                    why = "empty field name";
                }
                return bad_line(ps, s, p, LINE_OTHER, 400, why);
            }
            msg->underscore = true;
        }
        p++;
        while (p < len && is((unsigned char)buf[p], C_NAME)) {
            p++;
        }
        if (p == len) {
            return need_more(ps, s, LINE_OTHER);
        }
        if (buf[p] != ':') {
            if (buf[p] == '_') {
                msg->underscore = true;
                while (p < len && is((unsigned char)buf[p], C_TCHAR)) {
                    p++;
                }
                if (p == len) {
                    return need_more(ps, s, LINE_OTHER);
                }
            }
            if (buf[p] != ':') {
                return bad_line(ps, s, p, LINE_OTHER, 400,
                                ows(buf[p]) ? "whitespace before colon"
                                            : "invalid character in field name");
            }
        }
        size_t name_end = p++;
        while (p < len && ows(buf[p])) {
            p++;
        }
        size_t v0 = p;
        p = scan_field(buf, p, len);
        if (p == len) {
            return need_more(ps, s, LINE_OTHER);
        }
        if (buf[p] != '\r') {
            return bad_line(ps, s, p, LINE_OTHER, 400, value_error(buf, p));
        }
        if (p + 1 == len) {
            return need_more(ps, s, LINE_OTHER);
        }
        if (buf[p + 1] != '\n') {
            return bad_line(ps, s, p, LINE_OTHER, 400, "bare CR");
        }
        int rc = check_limits(ps, s, p + 1, LINE_OTHER);
        if (rc < 0) {
            return rc;
        }
        if (msg->nheaders >= ps->max_headers) {
            return fail(ps, 431, s, "too many header fields");
        }
        size_t v1 = p;
        while (v1 > v0 && ows(buf[v1 - 1])) {
            v1--;
        }
        struct sc_http_header *h = &msg->headers[msg->nheaders++];
        h->name = sc_str_n(buf + s, name_end - s);
        h->value = sc_str_n(buf + v0, v1 - v0);
        rc = known_field(ps, msg, f, h, s);
        if (rc < 0) {
            return rc;
        }
        p += 2;
    }
}

/* Checks a request-target against the method (RFC 9112 3.2): authority-form with CONNECT and only
 * there, asterisk-form only with OPTIONS, else origin-form or absolute-form. */
static const char *target_error(struct sc_str method, struct sc_str t)
{
    if (method.len == 7 && memcmp(method.p, "CONNECT", 7) == 0) {
        return valid_authority(t.p, t.len, true) ? NULL : "CONNECT needs an authority-form target";
    }
    if (t.p[0] == '/') {
        return NULL;
    }
    if (t.len == 1 && t.p[0] == '*') {
        return method.len == 7 && memcmp(method.p, "OPTIONS", 7) == 0
                   ? NULL
                   : "asterisk-form target without OPTIONS";
    }
    return valid_absolute(t.p, t.len) ? NULL : "invalid request target";
}

/* Parses "HTTP/" DIGIT "." DIGIT CRLF at <p> ending the request line that starts at <s>. Returns
 * the index of the LF, 0 for more input, or SC_EHTTP (through <*rc>). */
static size_t request_version(struct ps *ps, size_t s, size_t p, int *major, int *minor, int *rc)
{
    static const char name[] = "HTTP/";
    const char *buf = ps->buf;
    size_t len = ps->len;
    *rc = 0;
    if (len - p >= 10 && memcmp(buf + p, "HTTP/1.", 7) == 0 &&
        (buf[p + 7] == '1' || buf[p + 7] == '0') && buf[p + 8] == '\r' && buf[p + 9] == '\n') {
        *major = 1;
        *minor = buf[p + 7] - '0';
        return p + 9;
    }
    for (size_t k = 0; k < 8; k++) {
        if (p + k == len) {
            *rc = need_more(ps, s, LINE_START);
            return 0;
        }
        char c = buf[p + k];
        bool ok = k < 5 ? c == name[k] : k == 6 ? c == '.' : IS_DIGIT(c);
        if (!ok) {
            *rc = bad_line(ps, s, p + k, LINE_START, 400,
                           c == '\n' ? "bare LF" : "malformed HTTP version");
            return 0;
        }
    }
    *major = buf[p + 5] - '0';
    *minor = buf[p + 7] - '0';
    p += 8;
    if (p == len) {
        *rc = need_more(ps, s, LINE_START);
        return 0;
    }
    if (buf[p] != '\r') {
        *rc = bad_line(ps, s, p, LINE_START, 400,
                       buf[p] == '\n' ? "bare LF" : "malformed HTTP version");
        return 0;
    }
    if (p + 1 == len) {
        *rc = need_more(ps, s, LINE_START);
        return 0;
    }
    if (buf[p + 1] != '\n') {
        *rc = bad_line(ps, s, p, LINE_START, 400, "bare CR");
        return 0;
    }
    return p + 1;
}

int sc_http1_parse_request(const char *buf, size_t len, size_t last_len,
                           const struct sc_http_limits *lim, struct sc_http_msg *msg,
                           size_t max_headers, struct sc_http_error *err)
{
    struct ps ps;
    ps_init(&ps, buf, len, lim, max_headers, msg, false, err);
    msg_reset(msg);

    size_t s = 0;
    for (unsigned empty = 0; s < len && (buf[s] == '\r' || buf[s] == '\n'); empty++) {
        if (buf[s] == '\n') {
            return bad_line(&ps, s, s, LINE_OTHER, 400, "bare LF");
        }
        if (s + 1 == len) {
            return need_more(&ps, s, LINE_OTHER);
        }
        if (buf[s + 1] != '\n') {
            return bad_line(&ps, s, s, LINE_OTHER, 400, "bare CR");
        }
        int rc = check_limits(&ps, s, s + 1, LINE_OTHER);
        if (rc < 0) {
            return rc;
        }
        if (empty == MAX_EMPTY_LINES) {
            return fail(&ps, 400, s, "too many empty lines before the request line");
        }
        s += 2;
    }
    if (resumable(buf, len, last_len)) {
        return resume_check(&ps, s);
    }

    /* method SP request-target SP HTTP-version CRLF */
    size_t p = s;
    while (p < len && is((unsigned char)buf[p], C_TCHAR)) {
        p++;
    }
    if (p == len) {
        return need_more(&ps, s, LINE_START);
    }
    if (p == s || buf[p] != ' ') {
        return bad_line(&ps, s, p, LINE_START, 400,
                        buf[p] == '\n' ? "bare LF" : "invalid request method");
    }
    size_t t0 = ++p;
    p = scan_vchar(buf, p, len);
    if (p == len) {
        return need_more(&ps, s, LINE_START);
    }
    if (buf[p] != ' ' || p == t0) {
        const char *why = "invalid character in request target";
        if (p == t0) {
            why = "empty request target";
        } else if (buf[p] == '\r' || buf[p] == '\n') {
            why = "missing HTTP version";
        }
        return bad_line(&ps, s, p, LINE_START, 400, why);
    }
    msg->method = sc_str_n(buf + s, t0 - 1 - s);
    msg->target = sc_str_n(buf + t0, p - t0);
    int rc, major, minor;
    size_t e = request_version(&ps, s, p + 1, &major, &minor, &rc);
    if (e == 0) {
        return rc;
    }
    rc = check_limits(&ps, s, e, LINE_START);
    if (rc < 0) {
        return rc;
    }
    if (major != 1 || minor > 1) {
        return fail(&ps, 505, p + 1, "HTTP version not supported");
    }
    msg->minor_version = minor;
    const char *why = target_error(msg->method, msg->target);
    if (why != NULL) {
        return fail(&ps, 400, t0, why);
    }

    struct fields f = { 0 };
    int head = parse_fields(&ps, e + 1, msg, &f);
    if (head <= 0) {
        return head;
    }
    if (f.te) {
        /* RFC 9112 6.3: a request whose final coding is not chunked cannot be delimited. */
        if (!f.te_chunked_last) {
            return fail(&ps, 400, f.te_at, "Transfer-Encoding does not end in chunked");
        }
        msg->body = SC_HTTP_BODY_CHUNKED;
    } else if (f.cl_count > 0) {
        msg->body = SC_HTTP_BODY_LENGTH;
        msg->content_length = f.cl;
    }
    if (minor == 1 && f.host_count == 0) {
        return fail(&ps, 400, s, "missing Host");
    }
    msg->keep_alive = !f.close && (minor == 1 || f.keep_alive);
    /* RFC 9110 7.8 and 10.1.1: Upgrade and 100-continue are ignored in HTTP/1.0 requests. */
    msg->upgrade = minor == 1 && f.conn_upgrade && f.upgrade;
    msg->expect_continue = minor == 1 && f.expect_continue;
    return head;
}

int sc_http1_parse_response(const char *buf, size_t len, size_t last_len,
                            const struct sc_http_limits *lim, unsigned flags,
                            struct sc_http_msg *msg, size_t max_headers, struct sc_http_error *err)
{
    struct ps ps;
    ps_init(&ps, buf, len, lim, max_headers, msg, true, err);
    msg_reset(msg);
    if (resumable(buf, len, last_len)) {
        return resume_check(&ps, 0);
    }

    /* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF; the SP before an empty reason is often
     * missing in practice and its absence is harmless. */
    static const char proto[] = "HTTP/1.x ddd";
    size_t p = 0;
    for (; p < sizeof(proto) - 1; p++) {
        if (p == len) {
            return need_more(&ps, 0, LINE_START);
        }
        char c = buf[p];
        bool ok;
        switch (proto[p]) {
        case 'x':
            ok = c == '0' || c == '1';
            break;
        case 'd':
            ok = IS_DIGIT(c);
            break;
        default:
            ok = c == proto[p];
            break;
        }
        if (!ok) {
            return bad_line(&ps, 0, p, LINE_START, 502,
                            c == '\n' ? "bare LF" : "malformed status line");
        }
    }
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (status < 100) {
        return bad_line(&ps, 0, 9, LINE_START, 502, "invalid status code");
    }
    if (p == len) {
        return need_more(&ps, 0, LINE_START);
    }
    size_t r0 = p;
    bool sp = buf[p] == ' ';
    if (sp) {
        r0 = ++p;
        p = scan_field(buf, p, len);
        if (p == len) {
            return need_more(&ps, 0, LINE_START);
        }
    }
    if (buf[p] != '\r') {
        return bad_line(&ps, 0, p, LINE_START, 502,
                        sp || buf[p] == '\n' ? value_error(buf, p) : "malformed status line");
    }
    if (p + 1 == len) {
        return need_more(&ps, 0, LINE_START);
    }
    if (buf[p + 1] != '\n') {
        return bad_line(&ps, 0, p, LINE_START, 502, "bare CR");
    }
    int rc = check_limits(&ps, 0, p + 1, LINE_START);
    if (rc < 0) {
        return rc;
    }
    msg->minor_version = buf[7] - '0';
    msg->status = status;
    msg->reason = sc_str_n(buf + r0, p - r0);

    struct fields f = { 0 };
    int head = parse_fields(&ps, p + 2, msg, &f);
    if (head <= 0) {
        return head;
    }
    bool eof = false;
    if ((flags & SC_HTTP_RESP_TO_HEAD) || status < 200 || status == 204 || status == 304 ||
        ((flags & SC_HTTP_RESP_TO_CONNECT) && status < 300)) {
        msg->body = SC_HTTP_BODY_NONE;
    } else if (f.te) {
        /* RFC 9112 6.3: a response not ending in chunked is delimited by the close. */
        msg->body = f.te_chunked_last ? SC_HTTP_BODY_CHUNKED : SC_HTTP_BODY_EOF;
        eof = !f.te_chunked_last;
    } else if (f.cl_count > 0) {
        msg->body = SC_HTTP_BODY_LENGTH;
        msg->content_length = f.cl;
    } else {
        msg->body = SC_HTTP_BODY_EOF;
        eof = true;
    }
    msg->keep_alive = !eof && !f.close && (msg->minor_version == 1 || f.keep_alive);
    msg->upgrade = f.conn_upgrade && f.upgrade;
    return head;
}

/* Chunked decoder states. */
enum {
    CH_SIZE,          /* hex digits of a chunk size */
    CH_EXT_WS,        /* BWS that must lead to ';' */
    CH_EXT_NAME0,     /* BWS, then the first character of an extension name */
    CH_EXT_NAME,      /* extension name */
    CH_EXT_NAME_WS,   /* BWS after a name: '=' or ';' must follow */
    CH_EXT_VAL0,      /* BWS, then a token or a quoted string */
    CH_EXT_TOKEN,     /* token value */
    CH_EXT_QUOTED,    /* quoted-string value */
    CH_EXT_QUOTED_BS, /* after a backslash in a quoted string */
    CH_EXT_END,       /* after a quoted string: BWS ';' or CRLF */
    CH_SIZE_LF,       /* the LF ending a chunk-size line */
    CH_DATA,          /* chunk data */
    CH_DATA_CR,       /* the CRLF after chunk data */
    CH_DATA_LF,
    CH_TRAILER0,      /* the start of a trailer line or the final CRLF */
    CH_TRAILER_NAME,  /* a trailer field name */
    CH_TRAILER_VALUE, /* a trailer field value */
    CH_TRAILER_LF,    /* the LF ending a trailer line */
    CH_FINAL_LF,      /* the LF ending the chunked body */
    CH_DONE,
    CH_FAILED,
};

void sc_http1_chunked_init(struct sc_http1_chunked *d)
{
    d->state = CH_SIZE;
    d->remaining = 0;
    d->line_len = 0;
    d->trailer_bytes = 0;
    d->max_line = CHUNK_MAX_LINE;
    d->max_trailers = CHUNK_MAX_TRAILERS;
    d->body_bytes = 0;
    d->strict_trailers = false;
    d->tname_len = 0;
}

static int chunk_fail(struct sc_http1_chunked *d, struct sc_http_error *err, size_t at,
                      size_t *consumed, const char *reason)
{
    d->state = CH_FAILED;
    err->status = 400;
    err->reason = reason;
    err->offset = at;
    *consumed = at;
    return SC_EHTTP;
}

/* Advances the size-line states by one byte. Returns the next state, or -1 with <*why> set. */
static int size_line_step(struct sc_http1_chunked *d, unsigned char c, const char **why)
{
    switch (d->state) {
    case CH_SIZE:
        /* line_len counts <c> already, so it is also the number of digits so far */
        if (is(c, C_HEX)) {
            if (d->line_len > CHUNK_MAX_DIGITS) {
                *why = "chunk size has more than 16 hex digits";
                return -1;
            }
            d->remaining = (d->remaining << 4) | hexval(c);
            return CH_SIZE;
        }
        if (d->line_len == 1) {
            *why = "invalid chunk size";
            return -1;
        }
        /* the first byte after the digits: like the end of an extension value */
        if (c == ';') {
            return CH_EXT_NAME0;
        }
        if (ows((char)c)) {
            return CH_EXT_WS;
        }
        if (c == '\r') {
            return CH_SIZE_LF;
        }
        *why = "invalid chunk size";
        return -1;
    case CH_EXT_WS:
        if (ows((char)c)) {
            return CH_EXT_WS;
        }
        if (c == ';') {
            return CH_EXT_NAME0;
        }
        break;
    case CH_EXT_NAME0:
        if (ows((char)c)) {
            return CH_EXT_NAME0;
        }
        if (is(c, C_TCHAR)) {
            return CH_EXT_NAME;
        }
        break;
    case CH_EXT_NAME:
    case CH_EXT_TOKEN:
        if (is(c, C_TCHAR)) {
            return d->state;
        }
        if (c == '=' && d->state == CH_EXT_NAME) {
            return CH_EXT_VAL0;
        }
        if (c == ';') {
            return CH_EXT_NAME0;
        }
        if (c == '\r') {
            return CH_SIZE_LF;
        }
        if (ows((char)c)) {
            return d->state == CH_EXT_NAME ? CH_EXT_NAME_WS : CH_EXT_WS;
        }
        break;
    case CH_EXT_NAME_WS:
        if (ows((char)c)) {
            return CH_EXT_NAME_WS;
        }
        if (c == '=') {
            return CH_EXT_VAL0;
        }
        if (c == ';') {
            return CH_EXT_NAME0;
        }
        break;
    case CH_EXT_VAL0:
        if (ows((char)c)) {
            return CH_EXT_VAL0;
        }
        if (c == '"') {
            return CH_EXT_QUOTED;
        }
        if (is(c, C_TCHAR)) {
            return CH_EXT_TOKEN;
        }
        break;
    case CH_EXT_QUOTED:
        if (c == '"') {
            return CH_EXT_END;
        }
        if (c == '\\') {
            return CH_EXT_QUOTED_BS;
        }
        if (is(c, C_QDTEXT)) {
            return CH_EXT_QUOTED;
        }
        break;
    case CH_EXT_QUOTED_BS:
        if (is(c, C_FIELD)) {
            return CH_EXT_QUOTED;
        }
        break;
    case CH_EXT_END:
        if (c == ';') {
            return CH_EXT_NAME0;
        }
        if (ows((char)c)) {
            return CH_EXT_WS;
        }
        if (c == '\r') {
            return CH_SIZE_LF;
        }
        break;
    default:
        break;
    }
    *why = c == '\n' ? "bare LF in chunk size line" : "invalid chunk extension";
    return -1;
}

/* Keeps the first bytes of a trailer field name, lower-cased, for trailer_forbidden; a longer
 * name than any forbidden one is only counted. */
static void tname_add(struct sc_http1_chunked *d, unsigned char c)
{
    if (d->tname_len < sizeof(d->tname)) {
        d->tname[d->tname_len] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
    }
    if (d->tname_len <= sizeof(d->tname)) {
        d->tname_len++;
    }
}

/* Whether the trailer field just named may not be sent in a trailer section (RFC 9110 6.5.1):
 * fields that frame or route the message, modify or condition the request, authenticate, or
 * control the response or how its content is processed. A recipient that merged them into the
 * head (as some do) would be steered by bytes the proxy judged as body: they are refused. */
static bool trailer_forbidden(const struct sc_http1_chunked *d)
{
    static const char *const names[] = {
        "content-length",
        "transfer-encoding",
        "trailer",
        "te",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "host",
        "expect",
        "max-forwards",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "cache-control",
        "pragma",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "www-authenticate",
        "proxy-authenticate",
        "age",
        "expires",
        "date",
        "location",
        "retry-after",
        "vary",
        "warning",
        "content-encoding",
        "content-type",
        "content-range",
    };
    if (d->tname_len > sizeof(d->tname)) {
        return false;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == d->tname_len && memcmp(names[i], d->tname, d->tname_len) == 0) {
            return true;
        }
    }
    return false;
}

bool sc_http1_chunked_at_boundary(const struct sc_http1_chunked *d)
{
    return d->state == CH_SIZE && d->line_len == 0;
}

int sc_http1_chunked_next(struct sc_http1_chunked *d, const char *buf, size_t len, size_t *consumed,
                          struct sc_str *data, struct sc_http_error *err)
{
    struct sc_http_error spare;
    if (err == NULL) {
        err = &spare;
    }
    *consumed = 0;
    *data = SC_STR_NULL;
    if (d->state == CH_DONE) {
        return SC_HTTP1_CHUNK_DONE;
    }
    if (d->state == CH_FAILED) {
        return chunk_fail(d, err, 0, consumed, "chunked body already failed");
    }
    size_t i = 0;
    while (i < len) {
        if (d->state == CH_DATA) {
            size_t n = len - i;
            if (d->remaining < n) {
                n = (size_t)d->remaining;
            }
            *data = sc_str_n(buf + i, n);
            d->remaining -= n;
            d->body_bytes += n;
            if (d->remaining == 0) {
                d->state = CH_DATA_CR;
            }
            *consumed = i + n;
            return SC_HTTP1_CHUNK_DATA;
        }
        unsigned char c = (unsigned char)buf[i];
        const char *why = NULL;
        switch (d->state) {
        case CH_SIZE_LF:
            if (++d->line_len > d->max_line) {
                return chunk_fail(d, err, i, consumed, "chunk size line too long");
            }
            if (c != '\n') {
                return chunk_fail(d, err, i, consumed, "bare CR in chunk size line");
            }
            d->line_len = 0;
            d->state = d->remaining == 0 ? CH_TRAILER0 : CH_DATA;
            break;
        case CH_DATA_CR:
            if (c != '\r') {
                return chunk_fail(d, err, i, consumed, "missing CRLF after chunk data");
            }
            d->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n') {
                return chunk_fail(d, err, i, consumed, "missing CRLF after chunk data");
            }
            d->state = CH_SIZE;
            break;
        case CH_TRAILER0:
        case CH_TRAILER_NAME:
        case CH_TRAILER_VALUE:
        case CH_TRAILER_LF:
        case CH_FINAL_LF:
            if (++d->trailer_bytes > d->max_trailers) {
                return chunk_fail(d, err, i, consumed, "trailer section too large");
            }
            switch (d->state) {
            case CH_TRAILER0:
                if (c == '\r') {
                    d->state = CH_FINAL_LF;
                } else if (is(c, C_TCHAR)) {
                    d->state = CH_TRAILER_NAME;
                    d->tname_len = 0;
                    tname_add(d, c);
                } else {
                    why = c == '\n'      ? "bare LF in trailer section"
                          : ows((char)c) ? "obs-fold in trailer section"
                                         : "invalid trailer field name";
                }
                break;
            case CH_TRAILER_NAME:
                if (c == ':') {
                    d->state = CH_TRAILER_VALUE;
                    if (d->strict_trailers && trailer_forbidden(d)) {
                        why = "forbidden trailer field";
                    }
                } else if (is(c, C_TCHAR)) {
                    tname_add(d, c);
                } else {
                    why = ows((char)c) ? "whitespace before colon in trailer"
                                       : "invalid trailer field name";
                }
                break;
            case CH_TRAILER_VALUE:
                if (c == '\r') {
                    d->state = CH_TRAILER_LF;
                } else if (!is(c, C_FIELD)) {
                    why = c == '\n' ? "bare LF in trailer section"
                                    : "invalid character in trailer field value";
                }
                break;
            case CH_TRAILER_LF:
                if (c != '\n') {
                    why = "bare CR in trailer section";
                }
                d->state = CH_TRAILER0;
                break;
            default: /* CH_FINAL_LF */
                if (c != '\n') {
                    return chunk_fail(d, err, i, consumed, "bare CR in trailer section");
                }
                d->state = CH_DONE;
                *consumed = i + 1;
                return SC_HTTP1_CHUNK_DONE;
            }
            if (why != NULL) {
                return chunk_fail(d, err, i, consumed, why);
            }
            break;
        default: {
            if (++d->line_len > d->max_line) {
                return chunk_fail(d, err, i, consumed, "chunk size line too long");
            }
            int next = size_line_step(d, c, &why);
            if (next < 0) {
                return chunk_fail(d, err, i, consumed, why);
            }
            d->state = next;
            break;
        }
        }
        i++;
    }
    *consumed = len;
    return SC_HTTP1_CHUNK_MORE;
}

const struct sc_http_header *sc_http1_find(const struct sc_http_msg *m, struct sc_str name,
                                           size_t *from)
{
    for (size_t i = from ? *from : 0; i < m->nheaders; i++) {
        if (sc_str_caseeq(m->headers[i].name, name)) {
            if (from) {
                *from = i + 1;
            }
            return &m->headers[i];
        }
    }
    if (from) {
        *from = m->nheaders;
    }
    return NULL;
}

bool sc_http1_has_token(struct sc_str list, struct sc_str token)
{
    size_t pos = 0;
    if (list.p == NULL) {
        return false;
    }
    while (pos <= list.len) {
        if (sc_str_caseeq(next_element(list.p, list.len, &pos), token)) {
            return true;
        }
    }
    return false;
}
