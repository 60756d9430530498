// SPDX-License-Identifier: Apache-2.0
// Routing and head rewriting for the proxy (contracts in proxy_conn.h). These functions only read
// a parsed head and write into capped buffers: the forwarding rules (hop-by-hop removal, Via,
// X-Forwarded-*, X-Request-Id, traceparent) live here and nowhere else.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_conn.h"

static void hex(char *out, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = d[v & 15];
        v >>= 4;
    }
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
        if (h->name.len == 10 && sc_str_caseeq(h->name, SC_STR("connection"))) {
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
        if (sc_str_caseeq(name, SC_STR("te"))) {
            return true;
        }
        break;
    case 7:
        if (sc_str_caseeq(name, SC_STR("trailer")) || sc_str_caseeq(name, SC_STR("upgrade"))) {
            return true;
        }
        break;
    case 10:
        if (sc_str_caseeq(name, SC_STR("connection")) ||
            sc_str_caseeq(name, SC_STR("keep-alive"))) {
            return true;
        }
        break;
    case 16:
        if (sc_str_caseeq(name, SC_STR("proxy-connection"))) {
            return true;
        }
        break;
    case 17:
        if (sc_str_caseeq(name, SC_STR("transfer-encoding"))) {
            return true;
        }
        break;
    default:
        break;
    }
    if (ct->slow) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http_find(ct->slow, SC_STR("connection"), &from)) != NULL) {
            if (sc_http_has_token(h->value, name)) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < ct->n; i++) {
        if (sc_http_has_token(ct->v[i], name)) {
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

static bool closing_after_response(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    return dc->close_after || dc->w->draining || !r->keep_alive || r->rbody == B_EOF || r->dechunk;
}

/* Appends the response head for the client to dc->out. Returns 0 or SC_ETOOBIG. */
int proxy_build_resp_head(struct proxy_dconn *dc, const struct sc_http_msg *m)
{
    struct proxy_req *r = &dc->req;
    struct sc_buf *b = &dc->out;
    bool upgrade = m->status == 101;
    const struct proxy_route_policy *pol = r->route->pol;
    char line[13] = { 'H',
                      'T',
                      'T',
                      'P',
                      '/',
                      '1',
                      '.',
                      '1',
                      ' ',
                      (char)('0' + m->status / 100),
                      (char)('0' + m->status / 10 % 10),
                      (char)('0' + m->status % 10),
                      ' ' };
    int rc = sc_buf_append(b, line, sizeof(line));
    rc |= sc_buf_append_str(b, m->reason.len ? m->reason : sc_str_c(sc_http_reason(m->status)));
    rc |= sc_buf_append(b, "\r\n", 2);
    struct sc_str via = SC_STR_NULL;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (hop_by_hop(h->name, &ct) ||
            (pol && proxy_route_policy_skip_resp_header(pol, h->name))) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("via"))) {
            via = h->value;
            continue;
        }
        rc |= sc_http1_write_header(b, h->name, h->value);
    }
    if (via.len) {
        rc |= sc_buf_append_cstr(b, "Via: ");
        rc |= sc_buf_append_str(b, via);
        rc |= sc_buf_append_cstr(b, ", 1.1 sidecar\r\n");
    } else {
        rc |= sc_buf_append_cstr(b, "Via: 1.1 sidecar\r\n");
    }
    if (pol || r->pol.has_rl) {
        rc |= proxy_route_policy_resp_headers(dc, b);
    }
    if (upgrade) {
        const struct sc_http_header *u = sc_http_find(m, SC_STR("upgrade"), NULL);
        rc |= sc_buf_append_cstr(b, "Connection: upgrade\r\n");
        if (u) {
            rc |= sc_http1_write_header(b, SC_STR("Upgrade"), u->value);
        }
    } else {
        if (r->rbody == B_CHUNKED && !r->dechunk) {
            rc |= sc_buf_append_cstr(b, "Transfer-Encoding: chunked\r\n");
        }
        if (closing_after_response(dc)) {
            rc |= sc_buf_append_cstr(b, "Connection: close\r\n");
        } else if (r->minor == 0) {
            rc |= sc_buf_append_cstr(b, "Connection: keep-alive\r\n");
        }
    }
    rc |= sc_buf_append(b, "\r\n", 2);
    return rc ? SC_ETOOBIG : 0;
}

/* Appends an interim (1xx) head for the client to dc->out. Returns 0 or SC_ETOOBIG. */
int proxy_build_interim_head(struct proxy_dconn *dc, const struct sc_http_msg *m)
{
    struct sc_buf *b = &dc->out;
    int rc = sc_http1_write_status_line(b, 1, m->status);
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        if (!hop_by_hop(m->headers[i].name, &ct)) {
            rc |= sc_http1_write_header(b, m->headers[i].name, m->headers[i].value);
        }
    }
    rc |= sc_buf_append(b, "\r\n", 2);
    return rc ? SC_ETOOBIG : 0;
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
 * for CONNECT and "*". Also returns, in <*origin>, the origin-form target sent upstream. */
struct sc_str proxy_target_path(struct sc_str t, struct sc_str *origin)
{
    *origin = t;
    if (t.len && t.p[0] != '/') {
        const char *s = memmem(t.p, t.len, "://", 3);
        if (!s) {
            return SC_STR("/");
        }
        const char *auth = s + 3;
        const char *slash = memchr(auth, '/', (size_t)(t.p + t.len - auth));
        if (!slash) {
            *origin = SC_STR("/");
            return SC_STR("/");
        }
        *origin = sc_str_n(slash, (size_t)(t.p + t.len - slash));
        t = *origin;
    }
    const char *q = memchr(t.p, '?', t.len);
    return q ? sc_str_n(t.p, (size_t)(q - t.p)) : t;
}

bool proxy_route_matches(const struct proxy_route *rt, const struct sc_http_msg *m,
                         struct sc_str path, pcre2_match_data *md)
{
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
    if (rt->re &&
        pcre2_match(rt->re, (PCRE2_SPTR)(path.p ? path.p : ""), path.len, 0, 0, md, NULL) < 0) {
        return false;
    }
    if (rt->pol && !proxy_route_policy_match(rt->pol, m)) {
        return false;
    }
    for (size_t i = 0; i < rt->nheaders; i++) {
        const struct proxy_header_match *hm = &rt->headers[i];
        const struct sc_http_header *h = sc_http_find(m, hm->name, NULL);
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

/* Builds the upstream request head into r->head. Returns 0 or SC_ETOOBIG. */
int proxy_build_req_head(struct proxy_dconn *dc, const struct sc_http_msg *m, struct sc_str origin)
{
    struct proxy_req *r = &dc->req;
    struct proxy_worker *w = dc->w;
    struct sc_buf *b = &r->head;
    const struct proxy_route_policy *pol = r->route->pol;
    int rc =
        pol ? proxy_route_policy_request_line(pol, b, m->method, r->is_connect ? m->target : origin)
            : sc_http1_write_request_line(b, m->method, r->is_connect ? m->target : origin);
    bool have_host = false;
    const struct sc_http_header *xff = NULL, *via = NULL, *rid = NULL, *tp = NULL;
    size_t nxff = 0;
    struct conn_tokens ct;
    conn_tokens_init(&ct, m);
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (hop_by_hop(h->name, &ct) || (pol && proxy_route_policy_skip_req_header(pol, h->name))) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-forwarded-for"))) {
            xff = xff ? xff : h;
            nxff++;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("via"))) {
            via = h;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-forwarded-proto"))) {
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("x-request-id"))) {
            if (!rid && h->value.len > 0 && h->value.len < sizeof(r->request_id)) {
                rid = h;
            }
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("traceparent"))) {
            tp = tp ? tp : h;
            continue;
        }
        if (sc_str_caseeq(h->name, SC_STR("host"))) {
            have_host = true;
        }
        rc |= sc_http1_write_header(b, h->name, h->value);
    }
    if (pol) {
        rc |= proxy_route_policy_req_headers(dc, m, b);
        have_host |= pol->host_rewrite != NULL;
    }
    if (!have_host) {
        struct proxy_cluster *hc = r->cluster ? r->cluster : r->route->cluster;
        rc |= sc_http1_write_header(b, SC_STR("Host"), sc_str_c(hc->eps[0].name));
    }
    if (r->body == B_CHUNKED) {
        rc |= sc_buf_append_cstr(b, "Transfer-Encoding: chunked\r\n");
    }
    if (r->upgrade) {
        const struct sc_http_header *u = sc_http_find(m, SC_STR("upgrade"), NULL);
        rc |= sc_buf_append_cstr(b, "Connection: upgrade\r\n");
        if (u) {
            rc |= sc_http1_write_header(b, SC_STR("Upgrade"), u->value);
        }
    }
    /* Via: the received protocol version, appended to what earlier proxies wrote. */
    rc |= sc_buf_append_cstr(b, "Via: ");
    if (via) {
        rc |= sc_buf_append_str(b, via->value);
        rc |= sc_buf_append(b, ", ", 2);
    }
    rc |= sc_buf_append_cstr(b, r->minor == 0 ? "1.0 sidecar\r\n" : "1.1 sidecar\r\n");
    rc |= sc_buf_append_cstr(b, "X-Forwarded-For: ");
    if (xff) {
        size_t from = 0;
        const struct sc_http_header *h;
        while ((h = sc_http_find(m, SC_STR("x-forwarded-for"), &from)) != NULL) {
            rc |= sc_buf_append_str(b, h->value);
            rc |= sc_buf_append(b, ", ", 2);
        }
    }
    rc |= sc_buf_append_cstr(b, dc->peer);
    rc |= sc_buf_append_cstr(b, "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ");
    if (rid) {
        memcpy(r->request_id, rid->value.p, rid->value.len);
        r->request_id_len = rid->value.len;
    } else {
        gen_request_id(w, r->request_id);
        r->request_id_len = 36;
    }
    rc |= sc_buf_append(b, r->request_id, r->request_id_len);
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
    rc |= sc_buf_append_cstr(b, "\r\ntraceparent: ");
    rc |= sc_buf_append(b, t, 55);
    rc |= sc_buf_append(b, "\r\n\r\n", 4);
    (void)nxff;
    return rc ? SC_ETOOBIG : 0;
}
