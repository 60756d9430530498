// SPDX-License-Identifier: Apache-2.0
// HTTP/2 <-> HTTP/1.1 translation (contracts in proxy_h2.h). Everything here reads what a peer
// sent: bounded by the header list size and the field count, never trusting a length, and
// fuzzed (tests/fuzz/fuzz_proxy_h2.c).
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_route_policy.h"

static inline bool lit(struct sc_str s, const char *l, size_t n)
{
    return s.len == n && memcmp(s.p, l, n) == 0;
}

#define LIT(s, l) lit((s), (l), sizeof(l) - 1)

/* ASCII case-insensitive equality. */
static bool caseeq(struct sc_str a, struct sc_str b)
{
    if (a.len != b.len) {
        return false;
    }
    for (size_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x >= 'A' && x <= 'Z') {
            x = (unsigned char)(x + 32);
        }
        if (y >= 'A' && y <= 'Z') {
            y = (unsigned char)(y + 32);
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

/* RFC 9110 section 5.6.2 token characters, lowercase letters only (RFC 9113 section 8.2.1). */
static const bool lower_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1,  ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1,
    ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static bool lower_token(struct sc_str s)
{
    if (s.len == 0) {
        return false;
    }
    for (size_t i = 0; i < s.len; i++) {
        if (!lower_tchar[(unsigned char)s.p[i]]) {
            return false;
        }
    }
    return true;
}

/* Eight bytes at a time: every field of every head passes through these two. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether a byte of <x> is below 0x20 or is 0x7f (a tab among them: the caller looks closer). */
static inline bool any_ctl(uint64_t x)
{
    uint64_t del = x ^ (ONES * 0x7f);
    return (((x - ONES * 0x20) & ~x) | ((del - ONES) & ~del)) & HIGHS;
}

static bool ctl_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* RFC 9113 section 8.2.1: no NUL, CR or LF anywhere, no leading or trailing SP or HTAB; other
 * controls are refused as the HTTP/1 parser refuses them (the value goes out as HTTP/1). */
static bool valid_value(struct sc_str v)
{
    if (v.len &&
        (v.p[0] == ' ' || v.p[0] == '\t' || v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t')) {
        return false;
    }
    size_t i = 0;
    for (; i + 8 <= v.len; i += 8) {
        uint64_t x;
        memcpy(&x, v.p + i, 8);
        if (any_ctl(x)) {
            for (size_t j = i; j < i + 8; j++) {
                if (ctl_byte((unsigned char)v.p[j])) {
                    return false;
                }
            }
        }
    }
    for (; i < v.len; i++) {
        if (ctl_byte((unsigned char)v.p[i])) {
            return false;
        }
    }
    return true;
}

/* Copies <n> bytes from <src> to <dst> (the same, or not overlapping) with ASCII letters
 * lowercased. */
static void lower_copy(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, src + i, 8);
        uint64_t h = x & ~HIGHS;
        /* The high bit of each byte of h + 0x3f: >= 'A'; of h + 0x25: > 'Z'; only ASCII. */
        uint64_t upper = ((h + ONES * 0x3f) ^ (h + ONES * 0x25)) & ~x & HIGHS;
        x |= upper >> 2;
        memcpy(dst + i, &x, 8);
    }
    for (; i < n; i++) {
        char c = src[i];
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
}

/* The connection-specific fields of RFC 9113 section 8.2.2 (te is handled by its value). */
static bool connection_specific(struct sc_str n)
{
    return LIT(n, "connection") || LIT(n, "keep-alive") || LIT(n, "proxy-connection") ||
           LIT(n, "transfer-encoding") || LIT(n, "upgrade");
}

static struct sc_str fname(const struct proxy_h2_head *hd, int i)
{
    return sc_str_n(hd->store.p + hd->f[i].name, hd->f[i].name_len);
}

static struct sc_str fvalue(const struct proxy_h2_head *hd, int i)
{
    return i < 0 ? SC_STR_NULL : sc_str_n(hd->store.p + hd->f[i].value, hd->f[i].value_len);
}

void proxy_h2_head_init(struct proxy_h2_head *hd, int kind, size_t max_list_size, size_t max_fields)
{
    hd->kind = kind;
    hd->max_fields = max_fields ? max_fields : PROXY_H2_MAX_FIELDS;
    if (hd->cap < hd->max_fields) {
        hd->cap = hd->max_fields;
        hd->f = sc_realloc(hd->f, hd->cap * sizeof(*hd->f));
        hd->h = sc_realloc(hd->h, (hd->cap + 1) * sizeof(*hd->h));
    }
    hd->max_list_size = max_list_size ? max_list_size : PROXY_H2_MAX_HEADER_LIST;
    /* Twice the list size: the joined cookie is a second copy of the crumbs. */
    if (!hd->store.p) {
        sc_buf_init(&hd->store, 2 * hd->max_list_size);
    }
    sc_buf_reset(&hd->store);
    hd->store.max = 2 * hd->max_list_size;
    hd->n = 0;
    hd->list_size = 0;
    hd->method = hd->scheme = hd->authority = hd->path = hd->status = hd->protocol = -1;
    hd->host = -1;
    hd->ncookies = 0;
    hd->regular = false;
    memset(&hd->m, 0, sizeof(hd->m));
}

void proxy_h2_head_free(struct proxy_h2_head *hd)
{
    sc_buf_cleanup(&hd->store);
    memset(&hd->store, 0, sizeof(hd->store));
    sc_free(hd->f);
    sc_free(hd->h);
    hd->f = NULL;
    hd->h = NULL;
    hd->cap = 0;
}

/* The slot of pseudo-header field <name> in <hd> for its kind of block, or NULL. */
static int *pseudo_slot(struct proxy_h2_head *hd, struct sc_str name)
{
    if (hd->kind == PROXY_H2_REQUEST) {
        if (LIT(name, ":method")) {
            return &hd->method;
        }
        if (LIT(name, ":scheme")) {
            return &hd->scheme;
        }
        if (LIT(name, ":authority")) {
            return &hd->authority;
        }
        if (LIT(name, ":path")) {
            return &hd->path;
        }
        if (LIT(name, ":protocol")) {
            return &hd->protocol;
        }
    } else if (hd->kind == PROXY_H2_RESPONSE && LIT(name, ":status")) {
        return &hd->status;
    }
    return NULL;
}

/* Stores <name> and <value> as field <hd->n>. */
static int store(struct proxy_h2_head *hd, struct sc_str name, struct sc_str value)
{
    if (hd->n == hd->max_fields) {
        return PROXY_H2_TOO_BIG;
    }
    size_t at = hd->store.len;
    if (sc_buf_room(&hd->store, name.len + value.len) < 0) {
        return PROXY_H2_TOO_BIG;
    }
    if (name.len) {
        memcpy(hd->store.p + at, name.p, name.len);
    }
    if (value.len) {
        memcpy(hd->store.p + at + name.len, value.p, value.len);
    }
    hd->store.len += name.len + value.len;
    hd->f[hd->n++] = (struct proxy_h2_field){ (uint32_t)at, (uint32_t)name.len,
                                              (uint32_t)(at + name.len), (uint32_t)value.len };
    return PROXY_H2_OK;
}

int proxy_h2_head_add(struct proxy_h2_head *hd, struct sc_str name, struct sc_str value,
                      const char **why)
{
    hd->list_size += name.len + value.len + 32;
    if (hd->list_size > hd->max_list_size) {
        *why = "header list larger than max_header_list_size";
        return PROXY_H2_TOO_BIG;
    }
    if (!valid_value(value)) {
        *why = "invalid character or surrounding whitespace in a field value";
        return PROXY_H2_MALFORMED;
    }
    if (name.len && name.p[0] == ':') {
        int *slot = hd->kind == PROXY_H2_TRAILERS ? NULL : pseudo_slot(hd, name);
        if (!slot) {
            *why = "unknown or misplaced pseudo-header field";
            return PROXY_H2_MALFORMED;
        }
        if (hd->regular) {
            *why = "pseudo-header field after a regular field";
            return PROXY_H2_MALFORMED;
        }
        if (*slot >= 0) {
            *why = "repeated pseudo-header field";
            return PROXY_H2_MALFORMED;
        }
        *slot = (int)hd->n;
    } else {
        if (!lower_token(name)) {
            *why = "invalid field name (uppercase or not a token)";
            return PROXY_H2_MALFORMED;
        }
        if (connection_specific(name)) {
            *why = "connection-specific field in HTTP/2";
            return PROXY_H2_MALFORMED;
        }
        if (LIT(name, "te") && !caseeq(value, SC_STR("trailers"))) {
            *why = "te other than \"trailers\" in HTTP/2";
            return PROXY_H2_MALFORMED;
        }
        hd->regular = true;
        if (hd->kind == PROXY_H2_REQUEST) {
            if (LIT(name, "host")) {
                if (hd->host >= 0) {
                    *why = "more than one host field";
                    return PROXY_H2_MALFORMED;
                }
                hd->host = (int)hd->n;
            } else if (LIT(name, "cookie")) {
                hd->ncookies++;
            }
        }
    }
    int rc = store(hd, name, value);
    if (rc < 0) {
        *why = hd->n == hd->max_fields ? "too many header fields"
                                       : "header list larger than max_header_list_size";
    }
    return rc;
}

/* Parses a Content-Length value: digits only, at most INT64_MAX. */
static bool parse_length(struct sc_str v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19) {
        return false;
    }
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return false;
        }
        uint64_t d = (uint64_t)(v.p[i] - '0');
        if (n > ((uint64_t)INT64_MAX - d) / 10) {
            return false; /* as the HTTP/1 parser: no length past INT64_MAX */
        }
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

/* Joins the cookie crumbs into one field at the end of the store (RFC 9113 section 8.2.3: an
 * HTTP/1.1 peer expects one Cookie field), and drops the others. */
static int join_cookies(struct proxy_h2_head *hd)
{
    size_t need = 6;
    for (size_t i = 0; i < hd->n; i++) {
        if (LIT(fname(hd, (int)i), "cookie")) {
            need += hd->f[i].value_len + 2;
        }
    }
    /* Reserved first: the crumbs are copied from the store into itself. */
    if (sc_buf_reserve(&hd->store, need) < 0) {
        return PROXY_H2_TOO_BIG;
    }
    size_t at = hd->store.len, first = SIZE_MAX, w = 0;
    int rc = sc_buf_append(&hd->store, "cookie", 6);
    size_t vat = hd->store.len;
    for (size_t i = 0; i < hd->n; i++) {
        if (LIT(fname(hd, (int)i), "cookie")) {
            if (first != SIZE_MAX) {
                rc |= sc_buf_append(&hd->store, "; ", 2);
            } else {
                first = w;
            }
            rc |= sc_buf_append(&hd->store, hd->store.p + hd->f[i].value, hd->f[i].value_len);
            if (first != w) {
                continue; /* joined into the first */
            }
        }
        if ((int)i == hd->host) {
            hd->host = (int)w;
        }
        hd->f[w++] = hd->f[i];
    }
    if (rc < 0) {
        return PROXY_H2_TOO_BIG;
    }
    hd->n = w;
    hd->f[first] =
        (struct proxy_h2_field){ (uint32_t)at, 6, (uint32_t)vat, (uint32_t)(hd->store.len - vat) };
    return PROXY_H2_OK;
}

/* Fills hd->h with the regular fields (<*nh> of them), reading Content-Length (one at most, as
 * the HTTP/1 parser wants) and Expect into hd->m. Returns 0 or PROXY_H2_MALFORMED. */
static int regular_fields(struct proxy_h2_head *hd, size_t *nh, bool *has_length, const char **why)
{
    struct sc_http_msg *m = &hd->m;
    *nh = 0;
    for (size_t i = 0; i < hd->n; i++) {
        struct sc_str n = fname(hd, (int)i);
        if (n.p[0] == ':') {
            continue;
        }
        struct sc_str v = fvalue(hd, (int)i);
        if (LIT(n, "content-length")) {
            uint64_t cl;
            if (*has_length) {
                *why = "more than one content-length";
                return PROXY_H2_MALFORMED;
            }
            if (!parse_length(v, &cl)) {
                *why = "invalid content-length";
                return PROXY_H2_MALFORMED;
            }
            *has_length = true;
            m->content_length = cl;
        } else if (hd->kind == PROXY_H2_REQUEST && LIT(n, "expect") &&
                   caseeq(v, SC_STR("100-continue"))) {
            m->expect_continue = true;
        }
        hd->h[(*nh)++] = (struct sc_http_header){ n, v };
    }
    return 0;
}

static int finish_request(struct proxy_h2_head *hd, bool end_stream, const char **why)
{
    struct sc_http_msg *m = &hd->m;
    if (hd->method < 0) {
        *why = "request without :method";
        return PROXY_H2_MALFORMED;
    }
    if (hd->protocol >= 0) {
        *why = "extended CONNECT (:protocol) is not supported";
        return PROXY_H2_MALFORMED;
    }
    struct sc_str method = fvalue(hd, hd->method);
    struct sc_str authority = fvalue(hd, hd->authority);
    /* Methods are case-sensitive tokens. */
    for (size_t i = 0; i < method.len; i++) {
        char c = method.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL))) {
            *why = "invalid :method";
            return PROXY_H2_MALFORMED;
        }
    }
    if (method.len == 0) {
        *why = "empty :method";
        return PROXY_H2_MALFORMED;
    }
    bool connect = LIT(method, "CONNECT");
    if (hd->authority >= 0 && !sc_http1_valid_authority(authority, connect)) {
        *why = "invalid :authority";
        return PROXY_H2_MALFORMED;
    }
    if (connect) {
        if (hd->scheme >= 0 || hd->path >= 0 || authority.len == 0) {
            *why = "CONNECT needs :authority and no :scheme or :path";
            return PROXY_H2_MALFORMED;
        }
        m->target = authority;
    } else {
        struct sc_str path = fvalue(hd, hd->path), scheme = fvalue(hd, hd->scheme);
        if (hd->scheme < 0 || scheme.len == 0 || hd->path < 0 || path.len == 0) {
            *why = "request without :scheme or :path";
            return PROXY_H2_MALFORMED;
        }
        if (path.p[0] != '/' && !(LIT(path, "*") && LIT(method, "OPTIONS"))) {
            *why = ":path is not origin-form";
            return PROXY_H2_MALFORMED;
        }
        for (size_t i = 0; i < path.len; i++) {
            if (path.p[i] < 0x21 || path.p[i] > 0x7e) {
                *why = "invalid character in :path";
                return PROXY_H2_MALFORMED;
            }
        }
        m->target = path;
    }
    struct sc_str host = fvalue(hd, hd->host);
    if (hd->host >= 0 && !sc_http1_valid_authority(host, false)) {
        *why = "invalid host";
        return PROXY_H2_MALFORMED;
    }
    if (hd->host >= 0 && hd->authority >= 0 && !caseeq(host, authority)) {
        *why = "host differs from :authority";
        return PROXY_H2_MALFORMED;
    }
    if (hd->ncookies > 1 && join_cookies(hd) < 0) {
        *why = "header list larger than max_header_list_size";
        return PROXY_H2_TOO_BIG;
    }
    m->method = method;
    m->minor_version = 1;
    m->keep_alive = true;
    /* Regular fields, then Host from :authority when the client sent none (HTTP/1.1 needs it). */
    bool has_length = false;
    size_t nh;
    if (regular_fields(hd, &nh, &has_length, why) < 0) {
        return PROXY_H2_MALFORMED;
    }
    if (hd->host < 0 && hd->authority >= 0) {
        hd->h[nh++] = (struct sc_http_header){ SC_STR("host"), authority };
    }
    m->host = hd->host >= 0 ? host : authority;
    m->headers = hd->h;
    m->nheaders = nh;
    if (end_stream) {
        if (has_length && m->content_length != 0) {
            *why = "content-length with no body";
            return PROXY_H2_MALFORMED;
        }
        m->body = SC_HTTP_BODY_NONE;
    } else {
        m->body = has_length ? SC_HTTP_BODY_LENGTH : SC_HTTP_BODY_CHUNKED;
    }
    return PROXY_H2_OK;
}

static int finish_response(struct proxy_h2_head *hd, bool end_stream, const char **why)
{
    struct sc_http_msg *m = &hd->m;
    struct sc_str st = fvalue(hd, hd->status);
    if (hd->status < 0 || st.len != 3 || st.p[0] < '1' || st.p[0] > '5' || st.p[1] < '0' ||
        st.p[1] > '9' || st.p[2] < '0' || st.p[2] > '9') {
        *why = "response without a valid :status";
        return PROXY_H2_MALFORMED;
    }
    m->status = (st.p[0] - '0') * 100 + (st.p[1] - '0') * 10 + (st.p[2] - '0');
    if (m->status == 101) {
        *why = "101 in HTTP/2";
        return PROXY_H2_MALFORMED;
    }
    m->minor_version = 1;
    m->keep_alive = true;
    bool has_length = false;
    size_t nh;
    if (regular_fields(hd, &nh, &has_length, why) < 0) {
        return PROXY_H2_MALFORMED;
    }
    m->headers = hd->h;
    m->nheaders = nh;
    if (m->status < 200 || end_stream || m->status == 204 || m->status == 304) {
        m->body = SC_HTTP_BODY_NONE;
    } else {
        m->body = has_length ? SC_HTTP_BODY_LENGTH : SC_HTTP_BODY_CHUNKED;
    }
    return PROXY_H2_OK;
}

int proxy_h2_head_finish(struct proxy_h2_head *hd, bool end_stream, const char **why)
{
    memset(&hd->m, 0, sizeof(hd->m));
    switch (hd->kind) {
    case PROXY_H2_REQUEST:
        return finish_request(hd, end_stream, why);
    case PROXY_H2_RESPONSE:
        return finish_response(hd, end_stream, why);
    default:
        break;
    }
    if (!end_stream) {
        *why = "trailers that do not end the stream";
        return PROXY_H2_MALFORMED;
    }
    for (size_t i = 0; i < hd->n; i++) {
        hd->h[i] = (struct sc_http_header){ fname(hd, (int)i), fvalue(hd, (int)i) };
    }
    hd->m.headers = hd->h;
    hd->m.nheaders = hd->n;
    return PROXY_H2_OK;
}

/* ---- the HTTP/2 header sink ---- */

/* Appends a field to <o>, its name lowercased. */
static int out_add(struct proxy_h2_out *o, struct sc_str name, struct sc_str value)
{
    if (o->n == SC_ARRAY_LEN(o->f)) {
        return o->err = SC_ETOOBIG;
    }
    size_t at = o->store.len;
    if (sc_buf_room(&o->store, name.len + value.len) < 0) {
        return o->err = SC_ETOOBIG;
    }
    lower_copy(o->store.p + at, name.p, name.len);
    if (value.len) {
        memcpy(o->store.p + at + name.len, value.p, value.len);
    }
    o->store.len += name.len + value.len;
    o->f[o->n++] = (struct proxy_h2_field){ (uint32_t)at, (uint32_t)name.len,
                                            (uint32_t)(at + name.len), (uint32_t)value.len };
    return 0;
}

/* What becomes of field <name> (<value>) on its way to HTTP/2: 0 dropped, 1 kept, 2 the
 * request's :authority. */
static int out_disposition(struct proxy_h2_out *o, struct sc_str name, struct sc_str value)
{
    if (name.len == 0 || name.p[0] == ':') {
        return 0; /* pseudo-header fields come from the sink's own ops only */
    }
    /* By length first: most fields are none of these. */
    switch (name.len) {
    case 2:
        if (caseeq(name, SC_STR("te"))) {
            return sc_http1_has_token(value, SC_STR("trailers")) ? 1 : 0;
        }
        break;
    case 4:
        if (o->scheme.p && caseeq(name, SC_STR("host"))) {
            return o->authority < 0 ? 2 : 0;
        }
        break;
    case 7:
        return caseeq(name, SC_STR("upgrade")) ? 0 : 1;
    case 10:
        return caseeq(name, SC_STR("connection")) || caseeq(name, SC_STR("keep-alive")) ? 0 : 1;
    case 16:
        return caseeq(name, SC_STR("proxy-connection")) ? 0 : 1;
    case 17:
        return caseeq(name, SC_STR("transfer-encoding")) ? 0 : 1;
    default:
        break;
    }
    return 1;
}

static int out_request(struct proxy_hsink *s, struct sc_str method, struct sc_str target)
{
    struct proxy_h2_out *o = s->ctx;
    out_add(o, SC_STR(":method"), method);
    if (sc_str_eq(method, SC_STR("CONNECT"))) {
        o->authority = (int)o->n;
        out_add(o, SC_STR(":authority"), target);
    } else {
        out_add(o, SC_STR(":scheme"), o->scheme);
        out_add(o, SC_STR(":path"), target);
    }
    return o->err;
}

static int out_status(struct proxy_hsink *s, int status, struct sc_str reason)
{
    (void)reason; /* HTTP/2 has no reason phrase */
    struct proxy_h2_out *o = s->ctx;
    if (status < 100 || status > 999) {
        return o->err = SC_EINVAL;
    }
    char d[3] = { (char)('0' + status / 100), (char)('0' + status / 10 % 10),
                  (char)('0' + status % 10) };
    return out_add(o, SC_STR(":status"), sc_str_n(d, 3));
}

static int out_header(struct proxy_hsink *s, struct sc_str name, struct sc_str value)
{
    struct proxy_h2_out *o = s->ctx;
    switch (out_disposition(o, name, value)) {
    case 1:
        return out_add(o, name,
                       name.len == 2 && caseeq(name, SC_STR("te")) ? SC_STR("trailers") : value);
    case 2:
        o->authority = (int)o->n;
        return out_add(o, SC_STR(":authority"), value);
    default:
        return o->err;
    }
}

static struct sc_buf *out_open(struct proxy_hsink *s, struct sc_str name)
{
    struct proxy_h2_out *o = s->ctx;
    if (o->err || o->n == SC_ARRAY_LEN(o->f)) {
        o->err = SC_ETOOBIG;
        return NULL;
    }
    o->open_name = o->store.len;
    o->open_len = name.len;
    if (sc_buf_append(&o->store, name.p, name.len) < 0) {
        o->err = SC_ETOOBIG;
        return NULL;
    }
    lower_copy(o->store.p + o->open_name, o->store.p + o->open_name, name.len);
    return &o->store;
}

static int out_close(struct proxy_hsink *s)
{
    struct proxy_h2_out *o = s->ctx;
    if (o->store.len < o->open_name + o->open_len) {
        return o->err = SC_ETOOBIG;
    }
    size_t vat = o->open_name + o->open_len;
    struct sc_str name = sc_str_n(o->store.p + o->open_name, o->open_len);
    struct sc_str value = sc_str_n(o->store.p + vat, o->store.len - vat);
    int d = out_disposition(o, name, value);
    if (d == 0 || o->n == SC_ARRAY_LEN(o->f)) {
        o->store.len = o->open_name; /* dropped */
        return o->n == SC_ARRAY_LEN(o->f) ? (o->err = SC_ETOOBIG) : o->err;
    }
    if (d == 2) {
        /* Host written in pieces (a template): sent as :authority under its own name. */
        o->store.len = o->open_name;
        char *v = sc_malloc(value.len + 1);
        memcpy(v, o->store.p + vat, value.len);
        o->authority = (int)o->n;
        int rc = out_add(o, SC_STR(":authority"), sc_str_n(v, value.len));
        sc_free(v);
        return rc;
    }
    o->f[o->n++] = (struct proxy_h2_field){ (uint32_t)o->open_name, (uint32_t)o->open_len,
                                            (uint32_t)vat, (uint32_t)value.len };
    return o->err;
}

static int out_end(struct proxy_hsink *s)
{
    struct proxy_h2_out *o = s->ctx;
    return o->err;
}

static const struct proxy_hsink_ops h2_sink_ops = {
    .request = out_request,
    .status = out_status,
    .header = out_header,
    .open = out_open,
    .close = out_close,
    .end = out_end,
};

struct proxy_hsink proxy_h2_out_sink(struct proxy_h2_out *o, struct sc_str scheme, size_t max)
{
    if (!o->store.p) {
        sc_buf_init(&o->store, max ? max : PROXY_H2_MAX_HEADER_LIST);
    }
    sc_buf_reset(&o->store);
    o->store.max = max ? max : PROXY_H2_MAX_HEADER_LIST;
    o->n = 0;
    o->authority = -1;
    o->open_name = o->open_len = 0;
    o->scheme = scheme;
    o->err = 0;
    return (struct proxy_hsink){ .ops = &h2_sink_ops, .b = &o->store, .ctx = o };
}

void proxy_h2_out_free(struct proxy_h2_out *o)
{
    sc_buf_cleanup(&o->store);
    memset(&o->store, 0, sizeof(o->store));
}

/* Fields HPACK must not add to the peer's dynamic table: credentials (RFC 7541 section 7.1.3),
 * and values that are new on every request (the request id, trace and span ids, a deadline
 * rewritten to the time left), which would only evict useful entries, and cost both encoders a
 * table insertion and an eviction per field. */
static bool never_index(struct sc_str n)
{
    switch (n.len) {
    case 2:
        return LIT(n, "b3");
    case 11:
        return LIT(n, "traceparent") || LIT(n, "x-b3-spanid");
    case 12:
        return LIT(n, "x-request-id") || LIT(n, "x-b3-traceid") || LIT(n, "grpc-timeout");
    case 13:
        return LIT(n, "authorization");
    case 17:
        return LIT(n, "x-b3-parentspanid") || LIT(n, "x-client-trace-id");
    case 19:
        return LIT(n, "proxy-authorization");
    default:
        return false;
    }
}

int proxy_h2_out_nv(const struct proxy_h2_out *o, nghttp2_nv *nv, size_t cap)
{
    if (o->n > cap) {
        return -1;
    }
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < o->n; i++) {
            const struct proxy_h2_field *f = &o->f[i];
            bool pseudo = o->store.p[f->name] == ':';
            if (pseudo != (pass == 0)) {
                continue;
            }
            struct sc_str n = sc_str_n(o->store.p + f->name, f->name_len);
            nv[k++] = (nghttp2_nv){
                .name = (uint8_t *)o->store.p + f->name,
                .value = (uint8_t *)o->store.p + f->value,
                .namelen = f->name_len,
                .valuelen = f->value_len,
                .flags = never_index(n) ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE,
            };
        }
    }
    return (int)k;
}

/* ---- trailers ---- */

static bool trailer_dropped(struct sc_str n)
{
    return caseeq(n, SC_STR("content-length")) || caseeq(n, SC_STR("transfer-encoding")) ||
           caseeq(n, SC_STR("host")) || caseeq(n, SC_STR("te")) || caseeq(n, SC_STR("trailer")) ||
           caseeq(n, SC_STR("connection")) || caseeq(n, SC_STR("keep-alive")) ||
           caseeq(n, SC_STR("proxy-connection")) || caseeq(n, SC_STR("upgrade"));
}

int proxy_h2_trailers_to_h1(const struct sc_http_msg *t, struct sc_buf *out)
{
    int rc = sc_buf_append(out, "0\r\n", 3);
    for (size_t i = 0; i < t->nheaders; i++) {
        const struct sc_http_header *h = &t->headers[i];
        if (!trailer_dropped(h->name)) {
            rc |= sc_http1_write_header(out, h->name, h->value);
        }
    }
    rc |= sc_buf_append(out, "\r\n", 2);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_h2_trailers_from_h1(struct sc_str section, struct proxy_hsink *s)
{
    int rc = proxy_hsink_lines(s, section, trailer_dropped);
    rc |= s->ops->end(s);
    return rc ? SC_ETOOBIG : 0;
}

/* ---- gRPC ---- */

bool proxy_grpc_is(struct sc_str ct)
{
    static const char g[] = "application/grpc";
    if (ct.len < sizeof(g) - 1 || !caseeq(sc_str_n(ct.p, sizeof(g) - 1), SC_STR(g))) {
        return false;
    }
    if (ct.len == sizeof(g) - 1) {
        return true;
    }
    char c = ct.p[sizeof(g) - 1];
    return c == '+' || c == ';';
}

int proxy_grpc_timeout_parse(struct sc_str v, uint64_t *ms)
{
    if (v.len < 2 || v.len > 9) {
        return -1;
    }
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return -1;
        }
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    switch (v.p[v.len - 1]) {
    case 'H':
        *ms = n * 3600000ULL;
        return 0;
    case 'M':
        *ms = n * 60000ULL;
        return 0;
    case 'S':
        *ms = n * 1000ULL;
        return 0;
    case 'm':
        *ms = n;
        return 0;
    case 'u':
        *ms = (n + 999) / 1000;
        return 0;
    case 'n':
        *ms = (n + 999999) / 1000000;
        return 0;
    default:
        return -1;
    }
}

int proxy_grpc_from_http(int status)
{
    switch (status) {
    case 400:
        return PROXY_GRPC_INTERNAL;
    case 401:
        return PROXY_GRPC_UNAUTHENTICATED;
    case 403:
        return PROXY_GRPC_PERMISSION_DENIED;
    case 404:
        return PROXY_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return PROXY_GRPC_UNAVAILABLE;
    default:
        return PROXY_GRPC_UNKNOWN;
    }
}

int proxy_grpc_for_local(int status)
{
    switch (status) {
    case 408:
    case 504:
        return PROXY_GRPC_DEADLINE_EXCEEDED;
    case 429:
        return PROXY_GRPC_RESOURCE_EXHAUSTED;
    default:
        return proxy_grpc_from_http(status);
    }
}

int proxy_grpc_message_encode(struct sc_buf *out, struct sc_str msg)
{
    static const char hexd[] = "0123456789ABCDEF";
    int rc = 0;
    size_t run = 0; /* bytes copied as they are, appended at once */
    for (size_t i = 0; i <= msg.len; i++) {
        unsigned char c = i < msg.len ? (unsigned char)msg.p[i] : 0;
        if (i < msg.len && c >= 0x20 && c <= 0x7e && c != '%') {
            run++;
            continue;
        }
        if (run) {
            rc |= sc_buf_append(out, msg.p + i - run, run);
            run = 0;
        }
        if (i < msg.len) {
            char e[3] = { '%', hexd[c >> 4], hexd[c & 15] };
            rc |= sc_buf_append(out, e, 3);
        }
    }
    return rc ? SC_ETOOBIG : 0;
}

int proxy_grpc_local_reply(const struct proxy_exch *ex, int status, struct sc_str reason,
                           struct proxy_hsink *s)
{
    /* The exchange's own when it set one (an upstream HTTP error mapped by gRPC's table). */
    int code = ex->grpc_status ? ex->grpc_status - 1 : proxy_grpc_for_local(status);
    char num[4];
    size_t n = 0;
    if (code >= 10) {
        num[n++] = (char)('0' + code / 10);
    }
    num[n++] = (char)('0' + code % 10);
    while (reason.len && (reason.p[reason.len - 1] == '\n' || reason.p[reason.len - 1] == '\r')) {
        reason.len--; /* a local reply's text body ends with a newline */
    }
    int rc = s->ops->status(s, 200, SC_STR_NULL);
    rc |= s->ops->header(s, SC_STR("content-type"), SC_STR("application/grpc"));
    rc |= s->ops->header(s, SC_STR("grpc-status"), sc_str_n(num, n));
    if (s->ops == &proxy_h1_hsink_ops) {
        rc |= s->ops->header(s, SC_STR("Content-Length"), SC_STR("0")); /* an HTTP/1.1 client */
    }
    if (reason.len) {
        struct sc_buf *b = s->ops->open(s, SC_STR("grpc-message"));
        if (!b) {
            return SC_ETOOBIG;
        }
        rc |= proxy_grpc_message_encode(b, reason);
        rc |= s->ops->close(s);
    }
    if (ex->resp_add.len) {
        rc |= proxy_hsink_lines(s, ex->resp_add, NULL); /* CORS headers, a renewed session */
    }
    rc |= proxy_route_policy_rl_headers(ex, s);
    rc |= s->ops->end(s);
    return rc ? SC_ETOOBIG : 0;
}
