// SPDX-License-Identifier: Apache-2.0
// Routing and head rewriting for the proxy (contracts in proxy_conn.h). These functions only read
// a parsed head and write into capped buffers: the forwarding rules (hop-by-hop removal, Via,
// X-Forwarded-*, X-Request-Id, traceparent) live here and nowhere else.
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_hsink.h"

/* Writes the low <digits> (even) hex digits of <v>, two per table lookup: request ids and trace
 * ids take 80 digits per request. */
static void hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 2; i >= 0; i -= 2) {
        memcpy(out + i, proxy_hex_pairs + 2 * (v & 0xff), 2);
        v >>= 8;
    }
}

/* Case-insensitive compare of a parsed name or value with a lowercase literal of letters, digits
 * and '-': OR-ing 0x20 maps only CTLs (which a parsed head cannot hold) onto those. Inline, so
 * the per-header checks cost a few instructions each. */
static inline uint64_t fold8(const char *p, const char *lower)
{
    uint64_t v, l;
    memcpy(&v, p, 8);
    memcpy(&l, lower, 8);
    return (v | 0x2020202020202020ull) ^ l;
}

static inline uint32_t fold4(const char *p, const char *lower)
{
    uint32_t v, l;
    memcpy(&v, p, 4);
    memcpy(&l, lower, 4);
    return (v | 0x20202020u) ^ l;
}

/* The same per-byte test, eight (or four) bytes at a time: the literal's words fold to
 * constants, and overlapping words cover lengths that are not multiples of the word. */
static inline bool is_lit(struct sc_str s, const char *lower, size_t n)
{
    if (s.len != n) {
        return false;
    }
    if (n > 24) {
        for (size_t i = 0; i < n; i++) {
            if (((unsigned char)s.p[i] | 0x20) != (unsigned char)lower[i]) {
                return false;
            }
        }
        return true;
    }
    if (n > 16) {
        return (fold8(s.p, lower) | fold8(s.p + 8, lower + 8) |
                fold8(s.p + n - 8, lower + n - 8)) == 0;
    }
    if (n >= 8) {
        return (fold8(s.p, lower) | fold8(s.p + n - 8, lower + n - 8)) == 0;
    }
    if (n >= 4) {
        return (fold4(s.p, lower) | fold4(s.p + n - 4, lower + n - 4)) == 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s.p[i] | 0x20) != (unsigned char)lower[i]) {
            return false;
        }
    }
    return true;
}

#define IS(s, lit) is_lit((s), (lit), sizeof(lit) - 1)

/* Appends <n> bytes: a plain copy when they fit the capacity the head reserved up front, else
 * through sc_buf_append (growth, and the cap that makes a head too large). */
static inline __attribute__((always_inline)) int put(struct sc_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (n <= b->cap - b->len && b->len + n <= b->max) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
        return 0;
    }
    return sc_buf_append(b, p, n);
}

#define PUT_LIT(b, s) put((b), (s), sizeof(s) - 1)

static inline int put_str(struct sc_buf *b, struct sc_str s)
{
    return put(b, s.p, s.len);
}

/* Appends a header line whose name and value come from a parsed head (the parser validated them,
 * so the fast path skips sc_http1_write_header's checks; the slow path keeps them). */
static inline __attribute__((always_inline)) int put_header(struct sc_buf *b, struct sc_str name,
                                                            struct sc_str value)
{
    size_t n = name.len + 4 + value.len;
    if (n <= b->cap - b->len && b->len + n <= b->max) {
        char *w = b->p + b->len;
        memcpy(w, name.p, name.len);
        w += name.len;
        *w++ = ':';
        *w++ = ' ';
        if (value.len) {
            memcpy(w, value.p, value.len);
            w += value.len;
        }
        *w++ = '\r';
        *w = '\n';
        b->len += n;
        return 0;
    }
    return sc_http1_write_header(b, name, value);
}

/* Reserves room for a head rebuilt from <m> plus what the proxy adds, so that the appends that
 * follow are plain copies. A hint only: when it cannot be had, the appends find the limit. */
size_t proxy_head_room(const struct sc_http_msg *m)
{
    /* What the proxy adds to a typical head (X-Forwarded-For and -Proto, X-Request-Id, a
     * traceparent) is about 180 bytes. An HTTP/2 stream's upstream head is a block of this size
     * held until the answer, hundreds at once. */
    size_t n = 256;
    if (m->nheaders) {
        const struct sc_http_header *last = &m->headers[m->nheaders - 1];
        const char *first = m->method.len ? m->method.p : m->headers[0].name.p;
        if (last->value.p + last->value.len > first) {
            n += (size_t)(last->value.p + last->value.len - first);
        }
    }
    return n;
}

static void reserve_for(struct sc_buf *b, const struct sc_http_msg *m)
{
    (void)sc_buf_reserve(b, proxy_head_room(m));
}

/* The values of a message's Connection headers, gathered once so that checking each header
 * against the tokens they list costs no rescan of the head. */
struct conn_tokens {
    struct sc_str v[8];
    size_t n;
    const struct sc_http_msg *slow; /* more Connection headers than fit: search the message */
};

static void conn_tokens_init(struct conn_tokens *ct, const struct sc_http_msg *m)
{
    ct->n = 0;
    ct->slow = NULL;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (h->name.len == 10 && IS(h->name, "connection")) {
            if (IS(h->value, "keep-alive")) {
                continue; /* names only Keep-Alive, hop-by-hop anyway: no per-header scan */
            }
            if (ct->n == SC_ARRAY_LEN(ct->v)) {
                ct->slow = m;
                return;
            }
            ct->v[ct->n++] = h->value;
        }
    }
}

/* True when <name> is hop-by-hop: a fixed name or one of the Connection tokens. */
static bool hop_by_hop(struct sc_str name, const struct conn_tokens *ct)
{
    switch (name.len) {
    case 2:
        if (IS(name, "te")) {
            return true;
        }
        break;
    case 7:
        if (IS(name, "trailer") || IS(name, "upgrade")) {
            return true;
        }
        break;
    case 10:
        if (IS(name, "connection") || IS(name, "keep-alive")) {
            return true;
        }
        break;
    case 16:
        if (IS(name, "proxy-connection")) {
            return true;
        }
        break;
    case 17:
        if (IS(name, "transfer-encoding")) {
            return true;
        }
        break;
    default:
        break;
    }
    if (ct->slow) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http1_find(ct->slow, SC_STR("connection"), &from)) != NULL) {
            if (sc_http1_has_token(h->value, name)) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < ct->n; i++) {
        if (sc_http1_has_token(ct->v[i], name)) {
            return true;
        }
    }
    return false;
}

static bool is_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

static bool all_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '0') {
            return false;
        }
    }
    return true;
}

/* ---- the HTTP/1 sink: text straight into the buffer ---- */

static int h1_request(struct proxy_hsink *s, struct sc_str method, struct sc_str target)
{
    return sc_http1_write_request_line(s->b, method, target);
}

static inline __attribute__((always_inline)) int h1_status(struct proxy_hsink *s, int status,
                                                           struct sc_str reason)
{
    if (status < 100 || status > 999) {
        return SC_EINVAL;
    }
    char line[13] = { 'H',
                      'T',
                      'T',
                      'P',
                      '/',
                      '1',
                      '.',
                      '1',
                      ' ',
                      (char)('0' + status / 100),
                      (char)('0' + status / 10 % 10),
                      (char)('0' + status % 10),
                      ' ' };
    int rc = put(s->b, line, sizeof(line));
    rc |= put_str(s->b, reason.len ? reason : sc_str_c(sc_http1_reason(status)));
    rc |= PUT_LIT(s->b, "\r\n");
    return rc ? SC_ETOOBIG : 0;
}

/* Through the ops (fields from the config or the proxy itself): checked as it writes. */
static int h1_header(struct proxy_hsink *s, struct sc_str name, struct sc_str value)
{
    return sc_http1_write_header(s->b, name, value);
}

static inline __attribute__((always_inline)) struct sc_buf *h1_open(struct proxy_hsink *s,
                                                                    struct sc_str name)
{
    size_t n = name.len + 2;
    struct sc_buf *b = s->b;
    if (n <= b->cap - b->len && b->len + n <= b->max) {
        char *w = b->p + b->len;
        memcpy(w, name.p, name.len);
        w[name.len] = ':';
        w[name.len + 1] = ' ';
        b->len += n;
        return b;
    }
    return put_str(b, name) == 0 && PUT_LIT(b, ": ") == 0 ? b : NULL;
}

static struct sc_buf *h1_open_op(struct proxy_hsink *s, struct sc_str name)
{
    return h1_open(s, name);
}

static int h1_close(struct proxy_hsink *s)
{
    return PUT_LIT(s->b, "\r\n");
}

/* The framing the codec asked for, then the blank line. */
static inline __attribute__((always_inline)) int h1_end(struct proxy_hsink *s)
{
    struct sc_buf *b = s->b;
    int rc = 0;
    if (s->chunked) {
        rc |= PUT_LIT(b, "Transfer-Encoding: chunked\r\n");
    }
    if (s->upgrade) {
        rc |= PUT_LIT(b, "Connection: upgrade\r\n");
        if (s->upgrade_value.p) {
            rc |= put_header(b, SC_STR("Upgrade"), s->upgrade_value);
        }
    } else if (s->close) {
        rc |= PUT_LIT(b, "Connection: close\r\n");
    } else if (s->keep_alive) {
        rc |= PUT_LIT(b, "Connection: keep-alive\r\n");
    }
    rc |= PUT_LIT(b, "\r\n");
    return rc ? SC_ETOOBIG : 0;
}

static int h1_status_op(struct proxy_hsink *s, int status, struct sc_str reason)
{
    return h1_status(s, status, reason);
}

static int h1_end_op(struct proxy_hsink *s)
{
    return h1_end(s);
}

const struct proxy_hsink_ops proxy_h1_hsink_ops = {
    .request = h1_request,
    .status = h1_status_op,
    .header = h1_header,
    .open = h1_open_op,
    .close = h1_close,
    .end = h1_end_op,
};

int proxy_hsink_lines(struct proxy_hsink *s, struct sc_str lines, bool (*drop)(struct sc_str name))
{
    if (!drop && s->ops == &proxy_h1_hsink_ops) {
        return put_str(s->b, lines) ? SC_ETOOBIG : 0;
    }
    const char *p = lines.p, *end = lines.p + lines.len;
    int rc = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if (le > p && le[-1] == '\r') {
            le--;
        }
        const char *colon = le > p ? memchr(p, ':', (size_t)(le - p)) : NULL;
        if (colon && colon > p) {
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            struct sc_str name = sc_str_n(p, (size_t)(colon - p));
            if (!drop || !drop(name)) {
                rc |= s->ops->header(s, name, sc_str_n(v, (size_t)(ve - v)));
            }
        }
        p = eol ? eol + 1 : end;
    }
    return rc ? SC_ETOOBIG : 0;
}

/* The builders below are inlined twice: into the HTTP/1 builders with <h1> true, where every
 * field is a plain copy into the buffer (no indirect call, no check of the sink), and into the
 * generic ones with <h1> false, which go through the sink's ops. */
#define AI static inline __attribute__((always_inline))

AI int s_header(bool h1, struct proxy_hsink *s, struct sc_str name, struct sc_str value)
{
    return h1 ? put_header(s->b, name, value) : s->ops->header(s, name, value);
}

AI struct sc_buf *s_open(bool h1, struct proxy_hsink *s, struct sc_str name)
{
    return h1 ? h1_open(s, name) : s->ops->open(s, name);
}

AI int s_close(bool h1, struct proxy_hsink *s)
{
    return h1 ? PUT_LIT(s->b, "\r\n") : s->ops->close(s);
}

AI int s_end(bool h1, struct proxy_hsink *s)
{
    return h1 ? h1_end(s) : s->ops->end(s);
}

/* A field of literal name and value: one copy of "Name: value\r\n" for HTTP/1. */
#define S_LIT(h1, s, name, value)                                                                  \
    ((h1) ? PUT_LIT((s)->b, name ": " value "\r\n")                                                \
          : (s)->ops->header((s), SC_STR(name), SC_STR(value)))

/* A field for a sink that is not HTTP/1's (the tracer's put callback). */
static int sink_put(void *arg, struct sc_str name, struct sc_str value)
{
    struct proxy_hsink *s = arg;
    return s->ops->header(s, name, value);
}

/* ---- head rewriting, through a sink ---- */

AI int head_response(struct proxy_exch *r, const struct sc_http_msg *m, struct proxy_hsink *s,
                     bool h1)
{
    if (h1) {
        reserve_for(s->b, m);
    }
    bool grpc = r->span != NULL; /* a span still to be told the gRPC status, if any */
    const struct proxy_route_policy *pol = r->route->pol;
    int rc = h1 ? h1_status(s, m->status, m->reason) : s->ops->status(s, m->status, m->reason);
    struct sc_str via = SC_STR_NULL;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (h->name.len == 11 && grpc && IS(h->name, "grpc-status")) {
            proxy_trace_grpc_status(r, h->value); /* whatever the route's policy does with it */
            grpc = false;
        }
        if (hop_by_hop(h->name, &ct) || (pol && proxy_route_policy_skip_resp_header(r, pol, h))) {
            continue;
        }
        if (h->name.len == 3 && IS(h->name, "via")) {
            via = h->value;
            continue;
        }
        rc |= s_header(h1, s, h->name, h->value);
    }
    /* Via names the version of the response received (RFC 9110 section 7.6.3): "2" from an
     * HTTP/2 upstream stream (which hands the proxy an HTTP/1.1 rendition), else the
     * upstream's HTTP/1.x. */
    bool up_h2 = r->uc && r->uc->h2s;
    if (via.len) {
        struct sc_buf *vb = s_open(h1, s, SC_STR("Via"));
        if (!vb) {
            return SC_ETOOBIG;
        }
        rc |= put_str(vb, via);
        rc |= up_h2                   ? PUT_LIT(vb, ", 2 sidecar")
              : m->minor_version == 0 ? PUT_LIT(vb, ", 1.0 sidecar")
                                      : PUT_LIT(vb, ", 1.1 sidecar");
        rc |= s_close(h1, s);
    } else {
        rc |= up_h2                   ? S_LIT(h1, s, "Via", "2 sidecar")
              : m->minor_version == 0 ? S_LIT(h1, s, "Via", "1.0 sidecar")
                                      : S_LIT(h1, s, "Via", "1.1 sidecar");
    }
    if (pol || r->pol.has_rl) {
        rc |= proxy_route_policy_resp_headers(r, s);
    }
    if (r->resp_add.len) {
        rc |= h1 ? put_str(s->b, r->resp_add) : proxy_hsink_lines(s, r->resp_add, NULL);
    }
    rc |= s_end(h1, s);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_head_response(struct proxy_exch *r, const struct sc_http_msg *m, struct proxy_hsink *s)
{
    return head_response(r, m, s, false);
}

int proxy_build_resp_head(struct proxy_exch *r, const struct sc_http_msg *m, struct sc_buf *b,
                          bool close)
{
    struct proxy_hsink s = proxy_h1_hsink(b);
    if (m->status == 101) {
        s.upgrade = true;
        const struct sc_http_header *u = sc_http1_find(m, SC_STR("upgrade"), NULL);
        s.upgrade_value = u ? u->value : SC_STR_NULL;
    } else {
        s.chunked = r->rbody == B_CHUNKED && !r->dechunk;
        s.close = close;
        s.keep_alive = r->minor == 0;
    }
    return head_response(r, m, &s, true);
}

int proxy_head_interim(const struct sc_http_msg *m, struct proxy_hsink *s)
{
    int rc = s->ops->status(s, m->status, SC_STR_NULL);
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        if (!hop_by_hop(m->headers[i].name, &ct)) {
            rc |= s->ops->header(s, m->headers[i].name, m->headers[i].value);
        }
    }
    rc |= s->ops->end(s);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_build_interim_head(const struct sc_http_msg *m, struct sc_buf *b)
{
    struct proxy_hsink s = proxy_h1_hsink(b);
    return proxy_head_interim(m, &s);
}

bool proxy_idempotent(struct sc_str m)
{
    static const struct sc_str t[] = { SC_STR("GET"), SC_STR("HEAD"),   SC_STR("OPTIONS"),
                                       SC_STR("PUT"), SC_STR("DELETE"), SC_STR("TRACE") };
    for (size_t i = 0; i < SC_ARRAY_LEN(t); i++) {
        if (sc_str_eq(m, t[i])) {
            return true;
        }
    }
    return false;
}

/* The path of a request target: origin-form up to '?', the path of an absolute-form target, "/"
 * for CONNECT and "*". Also returns, in <*origin>, the origin-form target sent upstream, borrowed
 * from <t>: for an absolute-form target with a query but no path ("http://h?q=1") that is the
 * query alone ("?q=1"), which proxy_build_req_head sends as "/?q=1". */
struct sc_str proxy_target_path(struct sc_str t, struct sc_str *origin)
{
    *origin = t;
    if (t.len && t.p[0] != '/') {
        const char *s = memmem(t.p, t.len, "://", 3);
        if (!s) {
            return SC_STR("/");
        }
        const char *auth = s + 3, *end = t.p + t.len, *e = auth;
        while (e < end && *e != '/' && *e != '?') {
            e++;
        }
        if (e == end) {
            *origin = SC_STR("/");
            return SC_STR("/");
        }
        if (*e == '?') {
            *origin = sc_str_n(e, (size_t)(end - e));
            return SC_STR("/");
        }
        const char *slash = e;
        *origin = sc_str_n(slash, (size_t)(t.p + t.len - slash));
        t = *origin;
    }
    const char *q = memchr(t.p, '?', t.len);
    return q ? sc_str_n(t.p, (size_t)(q - t.p)) : t;
}

/* Whether the Host <host> matches one of <names> (see the authority option): case-insensitive,
 * a name without a port ignores the Host's port, "*.x" and "x.*" are suffix and prefix
 * wildcards that need at least one character in place of the star. */
static bool authority_matches(char *const *names, size_t n, struct sc_str host)
{
    struct sc_str bare = host;
    for (size_t i = bare.len; i > 0; i--) {
        if (bare.p[i - 1] == ':') {
            bare.len = i - 1;
            break;
        }
        if (bare.p[i - 1] == ']' || bare.p[i - 1] < '0' || bare.p[i - 1] > '9') {
            break; /* no port (an IPv6 literal ends with ']') */
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct sc_str name = sc_str_c(names[i]);
        struct sc_str h = memchr(name.p, ':', name.len) ? host : bare;
        if (name.len == 1 && name.p[0] == '*') {
            return true;
        }
        if (name.len > 1 && name.p[0] == '*') {
            struct sc_str suf = { name.p + 1, name.len - 1 };
            if (h.len > suf.len && strncasecmp(h.p + h.len - suf.len, suf.p, suf.len) == 0) {
                return true;
            }
        } else if (name.len > 1 && name.p[name.len - 1] == '*') {
            if (h.len > name.len - 1 && strncasecmp(h.p, name.p, name.len - 1) == 0) {
                return true;
            }
        } else if (h.len == name.len && strncasecmp(h.p, name.p, name.len) == 0) {
            return true;
        }
    }
    return false;
}

bool proxy_route_matches(const struct proxy_route *rt, const struct sc_http_msg *m,
                         struct sc_str path, pcre2_match_data *md)
{
    if (rt->nauthority) {
        const struct sc_http_header *host = sc_http1_find(m, SC_STR("host"), NULL);
        if (!host || !authority_matches(rt->authority, rt->nauthority, host->value)) {
            return false;
        }
    }
    if (rt->nmethods) {
        bool ok = false;
        for (size_t i = 0; i < rt->nmethods && !ok; i++) {
            ok = sc_str_eq(m->method, sc_str_c(rt->methods[i]));
        }
        if (!ok) {
            return false;
        }
    }
    if (rt->prefix && !sc_str_startswith(path, sc_str_c(rt->prefix))) {
        return false;
    }
    if (rt->path && !sc_str_eq(path, sc_str_c(rt->path))) {
        return false;
    }
    if (rt->re) {
        /* A worker's match data exists once its table has a regex route (proxy_worker.c); a
         * caller without one gets its own for this match. */
        pcre2_match_data *own = md ? NULL : pcre2_match_data_create(32, NULL);
        int rc = pcre2_match(rt->re, (PCRE2_SPTR)(path.p ? path.p : ""), path.len, 0, 0,
                             md ? md : own, NULL);
        pcre2_match_data_free(own);
        if (rc < 0) {
            return false;
        }
    }
    if (rt->pol && !proxy_route_policy_match(rt->pol, m, md)) {
        return false;
    }
    for (size_t i = 0; i < rt->nheaders; i++) {
        const struct proxy_header_match *hm = &rt->headers[i];
        const struct sc_http_header *h = sc_http1_find(m, hm->name, NULL);
        if (!hm->present) {
            if (h) {
                return false;
            }
            continue;
        }
        if (!h || (hm->value.p && !sc_str_eq(h->value, hm->value))) {
            return false;
        }
    }
    return true;
}

static void gen_request_id(struct proxy_worker *w, char out[37])
{
    uint64_t a = proxy_rand(w), b = proxy_rand(w);
    a = (a & ~0xf000ULL) | 0x4000ULL;                        /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* RFC 4122 variant */
    hex(out, a >> 32, 8);
    out[8] = '-';
    hex(out + 9, (a >> 16) & 0xffff, 4);
    out[13] = '-';
    hex(out + 14, a & 0xffff, 4);
    out[18] = '-';
    hex(out + 19, b >> 48, 4);
    out[23] = '-';
    hex(out + 24, b & 0xffffffffffffULL, 12);
    out[36] = '\0';
}

/* The authority of an absolute-form target ("http://user@host:port/p" -> "host:port"); sets
 * <*absolute> to whether <t> is in absolute form at all. Borrows <t>. */
static inline struct sc_str target_authority(struct sc_str t, bool *absolute)
{
    *absolute = false;
    if (t.len == 0 || t.p[0] == '/' || t.p[0] == '*') {
        return SC_STR_NULL;
    }
    const char *s = memmem(t.p, t.len, "://", 3);
    if (!s) {
        return SC_STR_NULL;
    }
    *absolute = true;
    const char *a = s + 3, *end = t.p + t.len, *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#') {
        e++;
    }
    const char *at = memrchr(a, '@', (size_t)(e - a));
    if (at) {
        a = at + 1; /* userinfo is not part of Host (RFC 9110 section 7.2) */
    }
    return sc_str_n(a, (size_t)(e - a));
}

struct sc_str proxy_target_authority(struct sc_str t, bool *absolute)
{
    return target_authority(t, absolute);
}

/* The request line of an absolute-form target with a query but no path: <query> ("?q=1") is sent
 * as "/?q=1" (RFC 9112 section 3.2.1). Out of line: the common path keeps its small frame. */
static __attribute__((noinline)) int query_only_line(const struct proxy_route_policy *pol,
                                                     struct proxy_hsink *s, struct sc_str method,
                                                     struct sc_str query)
{
    char stack[1024];
    char *t = query.len < sizeof(stack) ? stack : sc_malloc(query.len + 1);
    t[0] = '/';
    memcpy(t + 1, query.p, query.len);
    struct sc_str target = sc_str_n(t, query.len + 1);
    int rc = proxy_route_policy_request_line(pol, s, method, target);
    if (t != stack) {
        sc_free(t);
    }
    return rc;
}

static bool authn_drops(const struct proxy_exch *r, struct sc_str name)
{
    for (size_t i = 0; i < r->nauthn_drop; i++) {
        if (r->authn_drop[i].len == name.len && sc_str_caseeq(r->authn_drop[i], name)) {
            return true;
        }
    }
    return false;
}

/* Builds the upstream request head through <s>. Returns 0 or SC_ETOOBIG. */
AI int head_request(struct proxy_exch *r, const struct sc_http_msg *m, struct sc_str origin,
                    struct proxy_hsink *s, bool h1)
{
    struct proxy_worker *w = r->w;
    if (h1) {
        reserve_for(s->b, m);
    }
    const struct proxy_route_policy *pol = r->route->pol;
    struct sc_str target = r->is_connect ? m->target : origin;
    int rc;
    if (!r->is_connect && origin.len && origin.p[0] == '?') {
        rc = query_only_line(pol, s, m->method, origin); /* "http://h?q=1" */
    } else if (pol) {
        rc = proxy_route_policy_request_line(pol, s, m->method, target);
    } else {
        rc = h1 ? sc_http1_write_request_line(s->b, m->method, target)
                : s->ops->request(s, m->method, target);
    }
    /* RFC 9112 section 3.2.2: for an absolute-form target, Host is replaced by the target's
     * authority, and the request goes upstream in origin form (a host_rewrite wins over both). */
    bool absolute = false;
    struct sc_str authority = r->is_connect ? SC_STR_NULL : target_authority(m->target, &absolute);
    bool host_rewrite = pol && pol->host_rewrite;
    if (absolute && !host_rewrite) {
        rc |= s_header(h1, s, SC_STR("Host"), authority);
    }
    bool have_host = absolute;
    const struct sc_http_header *xff = NULL, *via = NULL, *rid = NULL, *tp = NULL;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (hop_by_hop(h->name, &ct) || (pol && proxy_route_policy_skip_req_header(pol, h->name)) ||
            (r->tr.on && proxy_trace_owns_header(h->name))) {
            if (h->name.len == 2 && IS(h->name, "te") &&
                !(pol && proxy_route_policy_skip_req_header(pol, h->name)) &&
                sc_http1_has_token(h->value, SC_STR("trailers"))) {
                /* Hop-by-hop in HTTP/1.1, but an HTTP/2 upstream stream sends "te: trailers"
                 * on (RFC 9113 section 8.2.2): proxy_h2_up.c reads this flag. */
                r->te_trailers = true;
                if (!h1) {
                    rc |= s->ops->header(s, h->name, SC_STR("trailers"));
                }
            }
            continue;
        }
        if (r->authn_strip.p && h->value.p == r->authn_strip.p) {
            continue; /* the token, when its rule does not forward it */
        }
        if (r->nauthn_drop && authn_drops(r, h->name)) {
            continue; /* headers only the proxy writes (JWT outputs) */
        }
        /* The headers the proxy rewrites, told apart by length first (one compare each). */
        switch (h->name.len) {
        case 3:
            if (IS(h->name, "via")) {
                via = h;
                continue;
            }
            break;
        case 4:
            if (IS(h->name, "host")) {
                if (absolute) {
                    continue;
                }
                have_host = true;
            }
            break;
        case 6:
            if (r->expect && IS(h->name, "expect")) {
                continue; /* answered by the proxy (proxy_h1.c proxy_upstream_ready) */
            }
            break;
        case 11:
            if (IS(h->name, "traceparent")) {
                tp = tp ? tp : h;
                continue;
            }
            break;
        case 12:
            if (IS(h->name, "x-request-id")) {
                if (!rid && h->value.len > 0 && h->value.len < sizeof(r->request_id)) {
                    rid = h;
                }
                continue;
            }
            break;
        case 15:
            if (IS(h->name, "x-forwarded-for")) {
                xff = xff ? xff : h;
                continue;
            }
            break;
        case 17:
            if (IS(h->name, "x-forwarded-proto")) {
                continue;
            }
            break;
        case 23:
            if (IS(h->name, "x-forwarded-client-cert")) {
                continue; /* proxy_tls_xfcc decides */
            }
            break;
        default:
            break;
        }
        rc |= s_header(h1, s, h->name, h->value);
    }
    if (r->authn_add.len) {
        rc |= h1 ? put_str(s->b, r->authn_add) : proxy_hsink_lines(s, r->authn_add, NULL);
    }
    if (pol) {
        rc |= proxy_route_policy_req_headers(r, m, s);
        have_host |= host_rewrite;
    }
    if (!have_host) {
        struct proxy_cluster *hc = r->cluster ? r->cluster : r->route->cluster;
        rc |= s->ops->header(s, SC_STR("Host"), sc_str_c(hc->eps[0].name));
    }
    /* Via: the received protocol version, appended to what earlier proxies wrote. */
    struct sc_buf *vb;
    if (via) {
        if ((vb = s_open(h1, s, SC_STR("Via"))) == NULL) {
            return SC_ETOOBIG;
        }
        rc |= put_str(vb, via->value);
        rc |= r->minor == 0 ? PUT_LIT(vb, ", 1.0 sidecar")
              : r->down_h2  ? PUT_LIT(vb, ", 2 sidecar")
                            : PUT_LIT(vb, ", 1.1 sidecar");
        rc |= s_close(h1, s);
    } else {
        rc |= r->minor == 0 ? S_LIT(h1, s, "Via", "1.0 sidecar")
              : r->down_h2  ? S_LIT(h1, s, "Via", "2 sidecar")
                            : S_LIT(h1, s, "Via", "1.1 sidecar");
    }
    vb = s_open(h1, s, SC_STR("X-Forwarded-For"));
    if (!vb) {
        return SC_ETOOBIG;
    }
    if (xff) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http1_find(m, SC_STR("x-forwarded-for"), &from)) != NULL) {
            rc |= put_str(vb, h->value);
            rc |= PUT_LIT(vb, ", ");
        }
    }
    rc |= put(vb, r->cl->ip, strlen(r->cl->ip));
    rc |= s_close(h1, s);
    rc |= r->cl->tls ? S_LIT(h1, s, "X-Forwarded-Proto", "https")
                     : S_LIT(h1, s, "X-Forwarded-Proto", "http");
    if (r->cl->tls || r->lsn->tls.xfcc != PROXY_XFCC_SANITIZE) {
        rc |= proxy_tls_xfcc(r, m, s);
    }
    if (rid) {
        memcpy(r->request_id, rid->value.p, rid->value.len);
        r->request_id_len = rid->value.len;
    } else {
        gen_request_id(w, r->request_id);
        r->request_id_len = 36;
    }
    rc |= s_header(h1, s, SC_STR("X-Request-Id"), sc_str_n(r->request_id, r->request_id_len));
    if (r->tr.on) {
        /* Tracing: this hop's span is the next one's parent (proxy_trace.c). */
        rc |= h1 ? proxy_trace_headers(r, NULL, s->b) : proxy_trace_headers(r, sink_put, s);
        rc |= s_end(h1, s);
        return rc ? SC_ETOOBIG : 0;
    }
    /* traceparent: keep the trace id and flags, new parent id for this hop. */
    char t[56];
    memcpy(t, "00-", 3);
    bool valid = tp && tp->value.len == 55 && tp->value.p[2] == '-' && tp->value.p[35] == '-' &&
                 tp->value.p[52] == '-' && is_hex(tp->value.p, 2) &&
                 !(tp->value.p[0] == 'f' && tp->value.p[1] == 'f') && is_hex(tp->value.p + 3, 32) &&
                 !all_zero(tp->value.p + 3, 32) && is_hex(tp->value.p + 36, 16) &&
                 is_hex(tp->value.p + 53, 2);
    if (valid) {
        memcpy(t + 3, tp->value.p + 3, 32);
        memcpy(t + 53, tp->value.p + 53, 2);
    } else {
        hex(t + 3, proxy_rand(w), 16);
        hex(t + 19, proxy_rand(w) | 1, 16);
        memcpy(t + 53, "01", 2);
    }
    t[35] = '-';
    hex(t + 36, proxy_rand(w) | 1, 16);
    t[52] = '-';
    rc |= s_header(h1, s, SC_STR("traceparent"), sc_str_n(t, 55));
    rc |= s_end(h1, s);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_head_request(struct proxy_exch *r, const struct sc_http_msg *m, struct sc_str origin,
                       struct proxy_hsink *s)
{
    return head_request(r, m, origin, s, false);
}

int proxy_build_req_head(struct proxy_exch *r, const struct sc_http_msg *m, struct sc_str origin)
{
    struct proxy_hsink s = proxy_h1_hsink(&r->head);
    s.chunked = r->body == B_CHUNKED;
    if (r->upgrade) {
        s.upgrade = true;
        const struct sc_http_header *u = sc_http1_find(m, SC_STR("upgrade"), NULL);
        s.upgrade_value = u ? u->value : SC_STR_NULL;
    }
    return head_request(r, m, origin, &s, true);
}
