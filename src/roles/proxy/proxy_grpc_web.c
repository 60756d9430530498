// SPDX-License-Identifier: Apache-2.0
// gRPC-Web <-> gRPC, inside an upstream HTTP/2 stream (see proxy_grpc_web.h): the request's
// content-type and body (base64 for -text, decoded as it streams, strictly: the alphabet of RFC
// 4648 section 4, padding ending a quantum), the response's content-type, its DATA (base64-encoded
// in whole quanta for -text) and its trailers, which become the body's last frame. The base64
// decoder is the parser of untrusted input here; it has a fuzz target (fuzz_proxy_grpc_web.c).
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_grpc_web.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_hsink.h"

const struct sc_opt proxy_grpc_web_listener_opts[] = {
    { .name = "grpc_web",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_grpc_web_cfg, grpc_web),
      .def = "false",
      .help = "translate gRPC-Web requests (content-type application/grpc-web, -web+proto, "
              "-web-text, -web-text+proto) to gRPC for HTTP/2 clusters, and their responses back, "
              "trailers included (Envoy's grpc_web filter); other requests are not affected" },
    { 0 },
};

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of base64 character <c>: 0..63, 64 for '=', 255 for anything else. */
static uint8_t b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return (uint8_t)(c - 'A');
    }
    if (c >= 'a' && c <= 'z') {
        return (uint8_t)(c - 'a' + 26);
    }
    if (c >= '0' && c <= '9') {
        return (uint8_t)(c - '0' + 52);
    }
    return c == '+' ? 62 : c == '/' ? 63 : c == '=' ? 64 : 255;
}

int proxy_b64_decode(struct proxy_b64_dec *d, const char *in, size_t n, struct sc_buf *out)
{
    if (d->bad) {
        return -1;
    }
    if (sc_buf_reserve(out, (n + d->n) / 4 * 3 + 3) < 0) {
        return SC_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t v = b64_value((unsigned char)in[i]);
        if (v == 255) {
            d->bad = true;
            return -1;
        }
        d->q[d->n++] = v;
        if (d->n < 4) {
            continue;
        }
        d->n = 0;
        uint8_t *q = d->q;
        /* "xx==" and "xxx=" end a quantum; padding anywhere else (or a quantum of padding only)
         * is malformed, as are bits the padding would drop that are not zero. */
        if (q[0] == 64 || q[1] == 64 || (q[2] == 64 && q[3] != 64)) {
            d->bad = true;
            return -1;
        }
        uint8_t o[3] = { (uint8_t)(q[0] << 2 | q[1] >> 4), 0, 0 };
        size_t k = 1;
        if (q[2] == 64) {
            if (q[1] & 0x0f) {
                d->bad = true;
                return -1;
            }
        } else {
            o[1] = (uint8_t)(q[1] << 4 | q[2] >> 2);
            k = 2;
            if (q[3] == 64) {
                if (q[2] & 0x03) {
                    d->bad = true;
                    return -1;
                }
            } else {
                o[2] = (uint8_t)(q[2] << 6 | q[3]);
                k = 3;
            }
        }
        memcpy(out->p + out->len, o, k); /* reserved above: at most 3 per quantum */
        out->len += k;
    }
    return 0;
}

bool proxy_b64_decode_done(const struct proxy_b64_dec *d)
{
    return !d->bad && d->n == 0;
}

static void quantum(const uint8_t *q, size_t k, char *o)
{
    o[0] = b64[q[0] >> 2];
    o[1] = b64[(q[0] & 3) << 4 | (k > 1 ? q[1] >> 4 : 0)];
    o[2] = k > 1 ? b64[(q[1] & 0x0f) << 2 | (k > 2 ? q[2] >> 6 : 0)] : '=';
    o[3] = k > 2 ? b64[q[2] & 0x3f] : '=';
}

int proxy_b64_encode(struct proxy_b64_enc *e, const uint8_t *in, size_t n, struct sc_buf *out)
{
    size_t total = e->n + n;
    if (sc_buf_reserve(out, total / 3 * 4) < 0) {
        return SC_ETOOBIG;
    }
    size_t i = 0;
    if (e->n && total >= 3) {
        while (e->n < 3) {
            e->q[e->n++] = in[i++];
        }
        quantum(e->q, 3, out->p + out->len);
        out->len += 4;
        e->n = 0;
    }
    for (; n - i >= 3; i += 3) {
        quantum(in + i, 3, out->p + out->len);
        out->len += 4;
    }
    while (i < n) {
        e->q[e->n++] = in[i++];
    }
    return 0;
}

int proxy_b64_encode_end(struct proxy_b64_enc *e, struct sc_buf *out)
{
    if (e->n == 0) {
        return 0;
    }
    if (sc_buf_reserve(out, 4) < 0) {
        return SC_ETOOBIG;
    }
    quantum(e->q, e->n, out->p + out->len);
    out->len += 4;
    e->n = 0;
    return 0;
}

/* ---- the stream's translation ---- */

struct proxy_grpc_web {
    bool text;   /* -text: base64 both ways */
    bool proto;  /* the client named +proto: upstream gets application/grpc+proto */
    bool active; /* the response is gRPC and is being translated */
    const char *bad;
    struct proxy_b64_dec dec;
    struct proxy_b64_enc enc;
    struct sc_buf tmp; /* one DATA frame encoded, or the trailer frame */
};

static bool ieq(struct sc_str a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && strncasecmp(a.p, b, n) == 0;
}

/* The media type of content-type <v> without parameters or surrounding blanks. */
static struct sc_str media_type(struct sc_str v)
{
    size_t n = 0;
    while (n < v.len && v.p[n] != ';') {
        n++;
    }
    struct sc_str t = sc_str_n(v.p, n);
    while (t.len && (t.p[t.len - 1] == ' ' || t.p[t.len - 1] == '\t')) {
        t.len--;
    }
    return t;
}

static struct sc_str find(const struct sc_http_msg *m, const char *name)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        if (ieq(m->headers[i].name, name)) {
            return m->headers[i].value;
        }
    }
    return SC_STR_NULL;
}

/* The kind of content-type <v>; <*proto> says whether it named +proto. */
static int kind_of(struct sc_str v, bool *proto)
{
    struct sc_str t = media_type(v);
    *proto = false;
    if (ieq(t, "application/grpc-web") || (*proto = ieq(t, "application/grpc-web+proto"))) {
        return PROXY_GW_BINARY;
    }
    if (ieq(t, "application/grpc-web-text") ||
        (*proto = ieq(t, "application/grpc-web-text+proto"))) {
        return PROXY_GW_TEXT;
    }
    return PROXY_GW_NONE;
}

int proxy_grpc_web_kind(const struct sc_http_msg *m)
{
    bool proto;
    return kind_of(find(m, "content-type"), &proto);
}

/* The sink proxy_grpc_web_local_reply writes through: the gRPC answer's fields go to the inner
 * sink, its content-type replaced. */
struct gw_sink {
    struct proxy_hsink *in;
    struct sc_str ctype;
};

static int gw_request(struct proxy_hsink *s, struct sc_str method, struct sc_str target)
{
    struct gw_sink *g = s->ctx;
    return g->in->ops->request(g->in, method, target);
}

static int gw_status(struct proxy_hsink *s, int status, struct sc_str reason)
{
    struct gw_sink *g = s->ctx;
    return g->in->ops->status(g->in, status, reason);
}

static int gw_header(struct proxy_hsink *s, struct sc_str name, struct sc_str value)
{
    struct gw_sink *g = s->ctx;
    return g->in->ops->header(g->in, name, ieq(name, "content-type") ? g->ctype : value);
}

static struct sc_buf *gw_open(struct proxy_hsink *s, struct sc_str name)
{
    struct gw_sink *g = s->ctx;
    return g->in->ops->open(g->in, name);
}

static int gw_close(struct proxy_hsink *s)
{
    struct gw_sink *g = s->ctx;
    return g->in->ops->close(g->in);
}

static int gw_end(struct proxy_hsink *s)
{
    struct gw_sink *g = s->ctx;
    int rc = 0;
    if (g->in->ops == &proxy_h1_hsink_ops) {
        rc = g->in->ops->header(g->in, SC_STR("Content-Length"), SC_STR("0"));
    }
    return rc | g->in->ops->end(g->in);
}

static const struct proxy_hsink_ops gw_sink_ops = {
    .request = gw_request,
    .status = gw_status,
    .header = gw_header,
    .open = gw_open,
    .close = gw_close,
    .end = gw_end,
};

int proxy_grpc_web_local_reply(const struct proxy_exch *ex, int kind, int status,
                               struct sc_str reason, struct proxy_hsink *s)
{
    struct gw_sink g = {
        .in = s,
        .ctype = kind == PROXY_GW_TEXT ? SC_STR("application/grpc-web-text+proto")
                                       : SC_STR("application/grpc-web+proto"),
    };
    struct proxy_hsink outer = { .ops = &gw_sink_ops, .b = s->b, .ctx = &g };
    while (reason.len && (reason.p[reason.len - 1] == '\n' || reason.p[reason.len - 1] == '\r')) {
        reason.len--; /* a local reply's body ends its line */
    }
    return proxy_grpc_local_reply(ex, status, reason, &outer);
}

struct proxy_grpc_web *proxy_grpc_web_request(const struct sc_http_msg *m)
{
    bool proto = false;
    int kind = kind_of(find(m, "content-type"), &proto);
    if (kind == PROXY_GW_NONE) {
        return NULL;
    }
    bool text = kind == PROXY_GW_TEXT;
    struct proxy_grpc_web *g = SC_NEW(struct proxy_grpc_web);
    g->text = text;
    g->proto = proto;
    /* a DATA frame is at most 16 MiB (SETTINGS_MAX_FRAME_SIZE), in practice the 16 KiB default;
     * the trailer frame at most the header list cap (64 KiB by default) */
    sc_buf_init(&g->tmp, 1 << 20);
    return g;
}

void proxy_grpc_web_free(struct proxy_grpc_web *g)
{
    if (g) {
        sc_buf_cleanup(&g->tmp);
        sc_free(g);
    }
}

bool proxy_grpc_web_req_field(struct proxy_grpc_web *g, struct sc_str name, struct sc_str *value)
{
    if (ieq(name, "content-type")) {
        *value = g->proto ? SC_STR("application/grpc+proto") : SC_STR("application/grpc");
        return true;
    }
    return !ieq(name, "content-length") && !ieq(name, "te");
}

int proxy_grpc_web_req_data(struct proxy_grpc_web *g, const char *p, size_t n, struct sc_buf *out)
{
    if (!g->text) {
        return sc_buf_append(out, p, n);
    }
    int rc = proxy_b64_decode(&g->dec, p, n, out);
    if (rc == -1 && !g->bad) {
        g->bad = "malformed grpc-web-text request body (base64)";
    }
    return rc;
}

int proxy_grpc_web_req_end(struct proxy_grpc_web *g)
{
    if (g->text && !proxy_b64_decode_done(&g->dec)) {
        g->bad = g->bad ? g->bad : "grpc-web-text request body ends inside a base64 quantum";
        return -1;
    }
    return 0;
}

const char *proxy_grpc_web_bad(const struct proxy_grpc_web *g)
{
    return g->bad;
}

bool proxy_grpc_web_resp_begin(struct proxy_grpc_web *g, const struct sc_http_msg *m)
{
    struct sc_str t = media_type(find(m, "content-type"));
    g->active = m->status >= 200 && t.len >= 16 && strncasecmp(t.p, "application/grpc", 16) == 0 &&
                (t.len == 16 || t.p[16] == '+');
    return g->active;
}

bool proxy_grpc_web_resp_field(struct proxy_grpc_web *g, struct sc_str name, struct sc_str *value)
{
    if (ieq(name, "content-type")) {
        *value = g->text ? SC_STR("application/grpc-web-text+proto")
                         : SC_STR("application/grpc-web+proto");
        return true;
    }
    return !ieq(name, "content-length");
}

bool proxy_grpc_web_active(const struct proxy_grpc_web *g)
{
    return g && g->active;
}

/* Appends <b> to <out> as one chunk (none when empty). */
static int chunk(struct sc_buf *out, const struct sc_buf *b)
{
    if (b->len == 0) {
        return 0;
    }
    int e = sc_buf_appendf(out, "%zx\r\n", b->len);
    e |= sc_buf_append(out, b->p, b->len);
    e |= sc_buf_append(out, "\r\n", 2);
    return e ? SC_ETOOBIG : 0;
}

int proxy_grpc_web_resp_data(struct proxy_grpc_web *g, const uint8_t *p, size_t n,
                             struct sc_buf *out)
{
    sc_buf_reset(&g->tmp);
    int rc = g->text ? proxy_b64_encode(&g->enc, p, n, &g->tmp) : sc_buf_append(&g->tmp, p, n);
    return rc < 0 ? rc : chunk(out, &g->tmp);
}

int proxy_grpc_web_trailer_frame(const struct sc_http_msg *t, struct sc_buf *out)
{
    size_t start = out->len;
    uint8_t hdr[5] = { 0x80, 0, 0, 0, 0 };
    int e = sc_buf_append(out, hdr, sizeof(hdr));
    for (size_t i = 0; t && i < t->nheaders && !e; i++) {
        struct sc_str nm = t->headers[i].name;
        if (sc_buf_reserve(out, nm.len) < 0) {
            return SC_ETOOBIG;
        }
        for (size_t k = 0; k < nm.len; k++) {
            char c = nm.p[k];
            out->p[out->len++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        e |= sc_buf_append(out, ":", 1);
        e |= sc_buf_append_str(out, t->headers[i].value);
        e |= sc_buf_append(out, "\r\n", 2);
    }
    if (e) {
        return SC_ETOOBIG;
    }
    size_t len = out->len - start - 5;
    uint8_t *h = (uint8_t *)out->p + start;
    h[1] = (uint8_t)(len >> 24);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 8);
    h[4] = (uint8_t)len;
    return 0;
}

int proxy_grpc_web_resp_end(struct proxy_grpc_web *g, const struct sc_http_msg *t,
                            struct sc_buf *out)
{
    sc_buf_reset(&g->tmp);
    int rc = 0;
    if (t) {
        struct sc_buf frame;
        sc_buf_init(&frame, g->tmp.max);
        rc = proxy_grpc_web_trailer_frame(t, &frame);
        if (rc == 0) {
            rc = g->text ? proxy_b64_encode(&g->enc, (const uint8_t *)frame.p, frame.len, &g->tmp)
                         : sc_buf_append(&g->tmp, frame.p, frame.len);
        }
        sc_buf_cleanup(&frame);
    }
    if (rc == 0 && g->text) {
        rc = proxy_b64_encode_end(&g->enc, &g->tmp);
    }
    if (rc == 0) {
        rc = chunk(out, &g->tmp);
    }
    if (rc == 0 && sc_buf_append(out, "0\r\n\r\n", 5) < 0) {
        rc = SC_ETOOBIG;
    }
    return rc;
}
