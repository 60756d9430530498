// SPDX-License-Identifier: Apache-2.0
// gRPC health checks: one grpc.health.v1.Health/Check call per check, on a connection of its own
// (as the HTTP checks of net/h1client.h), over HTTP/2 with prior knowledge or over the cluster's
// TLS layer, closed once the call is over. nghttp2 parses and writes the frames, driven through
// its memory calls over the transport chain as the proxy's upstream sessions are (it validates
// the received fields as HTTP/2 requires); this file keeps only what the verdict needs: :status,
// content-type, grpc-status and grpc-message (from the headers of a trailers-only reply or from
// the trailers) and the body, capped at PROXY_HC_GRPC_MAX_REPLY.
//
// A check passes only when the reply is HTTP 200, application/grpc, grpc-status 0 and a single
// HealthCheckResponse saying SERVING; anything else (another status, a non-OK grpc-status, a
// reset stream, a malformed or oversized reply, the deadline) fails it with that reason. The
// request and reply messages are a handful of protobuf bytes, encoded and decoded here by hand,
// bounded, with the parser fuzzed (tests/fuzz/fuzz_proxy_hc_grpc.c).
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/nghttp2.h"
#include "net/transport.h"
#include "roles/proxy/proxy_health_grpc.h"

#define HC_PATH "/grpc.health.v1.Health/Check"

/* ---- options ---- */

const struct sc_opt proxy_hc_grpc_opts[] = {
    { .name = "service",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hc_grpc_cfg, service),
      .help = "the service name sent in HealthCheckRequest (unset or empty: the server as a "
              "whole)" },
    { .name = "authority",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hc_grpc_cfg, authority),
      .help = ":authority of the checks (default: health_check.host, else the endpoint as "
              "configured)" },
    { 0 },
};

int proxy_hc_grpc_mark(void *field, char **err)
{
    (void)err;
    *(bool *)field = true;
    return 0;
}

/* ---- the messages ---- */

int proxy_hc_grpc_encode(const char *service, uint8_t *out, size_t cap)
{
    size_t slen = service ? strlen(service) : 0;
    if (slen > PROXY_HC_GRPC_MAX_SERVICE) {
        return -1;
    }
    /* field 1, wire type 2: tag 0x0a, the length as a varint (two bytes at most here) */
    size_t mlen = slen ? 1 + (slen < 128 ? 1 : 2) + slen : 0;
    if (cap < 5 + mlen) {
        return -1;
    }
    out[0] = 0; /* not compressed */
    out[1] = (uint8_t)(mlen >> 24);
    out[2] = (uint8_t)(mlen >> 16);
    out[3] = (uint8_t)(mlen >> 8);
    out[4] = (uint8_t)mlen;
    size_t o = 5;
    if (slen) {
        out[o++] = 0x0a;
        if (slen < 128) {
            out[o++] = (uint8_t)slen;
        } else {
            out[o++] = (uint8_t)(0x80 | (slen & 0x7f));
            out[o++] = (uint8_t)(slen >> 7);
        }
        memcpy(out + o, service, slen);
        o += slen;
    }
    return (int)o;
}

/* Reads a varint at p[*i] (at most 10 bytes, within <n>). Returns 0 or -1. */
static int varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned k = 0; k < 10; k++) {
        if (*i >= n) {
            return -1;
        }
        uint8_t b = p[(*i)++];
        if (k == 9 && b > 1) {
            return -1; /* past 64 bits */
        }
        r |= (uint64_t)(b & 0x7f) << (7 * k);
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int proxy_hc_grpc_parse(const uint8_t *p, size_t n, int *status, const char **why)
{
    if (n == 0) {
        *why = "reply has no message";
        return -1;
    }
    if (n < 5) {
        *why = "reply message truncated";
        return -1;
    }
    if (p[0] & 1) {
        *why = "reply message compressed (none was offered)";
        return -1;
    }
    if (p[0] != 0) {
        *why = "reply message has unknown flags";
        return -1;
    }
    size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
    if (len > n - 5) {
        *why = "reply message truncated";
        return -1;
    }
    if (len < n - 5) {
        *why = "reply has more than one message";
        return -1;
    }
    const uint8_t *m = p + 5;
    size_t i = 0;
    int st = PROXY_HC_GRPC_UNKNOWN;
    while (i < len) {
        uint64_t key, v;
        if (varint(m, len, &i, &key) < 0) {
            *why = "malformed HealthCheckResponse (field key)";
            return -1;
        }
        uint64_t field = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (field == 0 || field > 536870911) {
            *why = "malformed HealthCheckResponse (field number)";
            return -1;
        }
        switch (wt) {
        case 0:
            if (varint(m, len, &i, &v) < 0) {
                *why = "malformed HealthCheckResponse (varint)";
                return -1;
            }
            if (field == 1) {
                /* an enum is an int32: a negative one comes sign-extended to 64 bits */
                st = v <= 0x7fffffff ? (int)v : -1;
            }
            break;
        case 1:
        case 5: {
            size_t w = wt == 1 ? 8 : 4;
            if (len - i < w) {
                *why = "malformed HealthCheckResponse (truncated field)";
                return -1;
            }
            i += w;
            break;
        }
        case 2:
            if (varint(m, len, &i, &v) < 0 || v > len - i) {
                *why = "malformed HealthCheckResponse (length)";
                return -1;
            }
            i += (size_t)v;
            break;
        default:
            *why = "malformed HealthCheckResponse (wire type)";
            return -1;
        }
        if (field == 1 && wt != 0) {
            *why = "malformed HealthCheckResponse (status is not a varint)";
            return -1;
        }
    }
    *status = st;
    return 0;
}

const char *proxy_hc_grpc_status_name(int status)
{
    static const char *const names[] = { "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" };
    return status >= 0 && status < 4 ? names[status] : "invalid";
}

/* ---- the call ---- */

struct proxy_hc_grpc_call {
    struct sc_oneshot os; /* first: the connection, its deadline and its handles */
    nghttp2_session *s;
    int32_t id;
    bool wpending, ended;
    bool trailers; /* the next HEADERS block is the trailers */
    bool too_big;  /* the reply passed PROXY_HC_GRPC_MAX_REPLY */
    uint32_t reset;
    int http_status;
    bool grpc_ctype;
    int grpc_status; /* -1: none seen */
    char grpc_message[128];
    char authority[320];
    uint8_t req[5 + 3 + PROXY_HC_GRPC_MAX_SERVICE];
    size_t req_len, req_off;
    struct sc_buf body;
    struct sc_buf wbuf;
    char rbuf[16384];
};
_Static_assert(offsetof(struct proxy_hc_grpc_call, os) == 0,
               "sc_oneshot_on_closed takes the owner");

static void freed(void *owner)
{
    struct proxy_hc_grpc_call *c = owner;
    if (c->s) {
        nghttp2_session_del(c->s);
    }
    sc_buf_cleanup(&c->body);
    sc_buf_cleanup(&c->wbuf);
    sc_free(c);
}

/* Reports the outcome once, then closes the connection. */
static void finish(struct proxy_hc_grpc_call *c, bool ok, const char *why)
{
    sc_oneshot_verdict(&c->os, ok, why);
}

/* The verdict on a finished stream. */
static void judge(struct proxy_hc_grpc_call *c)
{
    char why[200];
    if (c->reset) {
        snprintf(why, sizeof(why), "stream reset (%s)", nghttp2_http2_strerror(c->reset));
    } else if (c->http_status != 200) {
        snprintf(why, sizeof(why), "HTTP status %d", c->http_status);
    } else if (!c->grpc_ctype) {
        snprintf(why, sizeof(why), "reply is not application/grpc");
    } else if (c->grpc_status < 0) {
        snprintf(why, sizeof(why), "reply has no grpc-status");
    } else if (c->grpc_status != 0) {
        snprintf(why, sizeof(why), "grpc-status %d%s%.120s", c->grpc_status,
                 c->grpc_message[0] ? ": " : "", c->grpc_message);
    } else {
        int st = 0;
        const char *bad = NULL;
        if (proxy_hc_grpc_parse((const uint8_t *)c->body.p, c->body.len, &st, &bad) < 0) {
            finish(c, false, bad);
            return;
        }
        if (st == PROXY_HC_GRPC_SERVING) {
            finish(c, true, NULL);
            return;
        }
        snprintf(why, sizeof(why), "status %s", proxy_hc_grpc_status_name(st));
    }
    finish(c, false, why);
}

/* Writes what nghttp2 has to send, as far as the transport takes it. Returns 0 or -1. */
static int flush(struct proxy_hc_grpc_call *c)
{
    while (!c->wpending && !c->os.done) {
        sc_buf_reset(&c->wbuf);
        for (;;) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->s, &data);
            if (n < 0) {
                return -1;
            }
            if (n == 0) {
                break;
            }
            if (sc_buf_append(&c->wbuf, data, (size_t)n) < 0) {
                return -1;
            }
            if (c->wbuf.len >= 16384) {
                break;
            }
        }
        if (c->wbuf.len == 0) {
            return 0;
        }
        uv_buf_t b = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
        int rc = sc_xport_write(c->os.top, &b, 1);
        if (rc < 0) {
            return -1;
        }
        c->wpending = rc == 1;
    }
    return 0;
}

/* After nghttp2 ran: the stream's end decides, else what it wants to send goes out. */
static void progress(struct proxy_hc_grpc_call *c)
{
    if (c->os.done) {
        return;
    }
    if (c->ended) {
        judge(c);
        return;
    }
    if (flush(c) < 0) {
        finish(c, false, "HTTP/2 write failed");
        return;
    }
    if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) && !c->wpending) {
        finish(c, false, "HTTP/2 session ended before the reply");
    }
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    struct proxy_hc_grpc_call *c = src->ptr;
    size_t k = c->req_len - c->req_off;
    k = k < len ? k : len;
    memcpy(buf, c->req + c->req_off, k);
    c->req_off += k;
    if (c->req_off == c->req_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)k;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct proxy_hc_grpc_call *c = ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == c->id &&
        f->headers.cat == NGHTTP2_HCAT_HEADERS) {
        c->trailers = true;
    }
    return 0;
}

static bool name_is(const uint8_t *name, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(name, want, n) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct proxy_hc_grpc_call *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != c->id) {
        return 0;
    }
    if (!c->trailers && name_is(name, nlen, ":status")) {
        uint64_t st = 0;
        c->http_status =
            sc_str_to_u64(sc_str_n((const char *)value, vlen), 999, &st) == 0 ? (int)st : 0;
    } else if (!c->trailers && name_is(name, nlen, "content-type")) {
        struct sc_str v = sc_str_n((const char *)value, vlen);
        /* application/grpc, application/grpc+proto, application/grpc;params */
        c->grpc_ctype = v.len >= 16 && strncasecmp(v.p, "application/grpc", 16) == 0 &&
                        (v.len == 16 || v.p[16] == '+' || v.p[16] == ';');
    } else if (name_is(name, nlen, "grpc-status")) {
        uint64_t st = 0;
        c->grpc_status = sc_str_to_u64(sc_str_n((const char *)value, vlen), 1000, &st) == 0
                             ? (int)st
                             : 1000; /* not a number: not OK either */
    } else if (name_is(name, nlen, "grpc-message")) {
        size_t k = vlen < sizeof(c->grpc_message) - 1 ? vlen : sizeof(c->grpc_message) - 1;
        for (size_t i = 0; i < k; i++) {
            /* kept printable for the log (it is percent-encoded on the wire anyway) */
            c->grpc_message[i] = value[i] >= 0x20 && value[i] < 0x7f ? (char)value[i] : '?';
        }
        c->grpc_message[k] = '\0';
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)s;
    (void)flags;
    struct proxy_hc_grpc_call *c = ud;
    if (id == c->id && sc_buf_append(&c->body, data, len) < 0) {
        c->too_big = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* past the cap: the session fails */
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    struct proxy_hc_grpc_call *c = ud;
    if (id == c->id) {
        c->ended = true;
        c->reset = code;
    }
    return 0;
}

/* ---- transport callbacks ---- */

static void on_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_hc_grpc_call *c = owner;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(void *owner, ssize_t nread)
{
    struct proxy_hc_grpc_call *c = owner;
    if (nread == 0 || c->os.done) {
        return;
    }
    if (nread < 0) {
        finish(c, false,
               nread == UV_EOF ? "connection closed before the reply" : "connection failed");
        return;
    }
    ssize_t rc = nghttp2_session_mem_recv(c->s, (const uint8_t *)c->rbuf, (size_t)nread);
    if (rc < 0) {
        finish(c, false, c->too_big ? "reply too large" : "HTTP/2 protocol error");
        return;
    }
    progress(c);
}

static void on_write_done(void *owner, int status)
{
    struct proxy_hc_grpc_call *c = owner;
    c->wpending = false;
    if (c->os.done) {
        return;
    }
    if (status < 0) {
        finish(c, false, "write failed");
        return;
    }
    progress(c);
}

/* Readies the session and the request (sent once connected). */
static int session_start(void *owner)
{
    struct proxy_hc_grpc_call *c = owner;
    if (sc_lazylib_nghttp2_load(NULL) < 0) {
        return SC_EUNSUPPORTED; /* the reason is logged once, by the load */
    }
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        return SC_EINVAL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_client_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        c->s = NULL;
        return SC_EINVAL;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PROXY_HC_GRPC_MAX_REPLY * 4 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384 },
    };
    if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, SC_ARRAY_LEN(iv)) != 0) {
        return SC_EINVAL;
    }
    bool tls = c->os.top != &c->os.tcp.base; /* the cluster's TLS layer is stacked */
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }
    nghttp2_nv nv[] = {
        NV(":method", "POST"),
        NV(":scheme", tls ? "https" : "http"),
        NV(":authority", c->authority),
        NV(":path", HC_PATH),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "sidecar-health-check"),
    };
#undef NV
    nghttp2_data_provider prd = { .source.ptr = c, .read_callback = data_read };
    c->id = nghttp2_submit_request(c->s, NULL, nv, SC_ARRAY_LEN(nv), &prd, c);
    return c->id < 0 ? SC_EINVAL : 0;
}

static void on_connected(void *owner, int status)
{
    struct proxy_hc_grpc_call *c = owner;
    if (c->os.done) {
        return;
    }
    if (status < 0) {
        finish(c, false, sc_oneshot_error(&c->os, status));
        return;
    }
    if (!c->s) {
        finish(c, false, "cannot start an HTTP/2 session");
        return;
    }
    if (sc_xport_read_start(c->os.top) < 0) {
        finish(c, false, "cannot read the connection");
        return;
    }
    progress(c);
}

static const struct sc_xport_cbs call_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = sc_oneshot_on_closed,
};

int proxy_hc_grpc_send(uv_loop_t *loop, const struct sockaddr *addr,
                       const struct proxy_hc_grpc_req *req, sc_oneshot_verdict_cb cb, void *arg,
                       struct proxy_hc_grpc_call **out)
{
    struct proxy_hc_grpc_call *c = SC_NEW(struct proxy_hc_grpc_call);
    int n = proxy_hc_grpc_encode(req->service, c->req, sizeof(c->req));
    if (n < 0 || !req->authority || strlen(req->authority) >= sizeof(c->authority)) {
        sc_free(c);
        return SC_EINVAL;
    }
    c->req_len = (size_t)n;
    snprintf(c->authority, sizeof(c->authority), "%s", req->authority);
    c->grpc_status = -1;
    sc_buf_init(&c->body, PROXY_HC_GRPC_MAX_REPLY);
    sc_buf_init(&c->wbuf, 65536);
    const struct sc_oneshot_args a = {
        .cbs = &call_cbs,
        .owner = c,
        .wrap = req->wrap,
        .wrap_arg = req->wrap_arg,
        .before_connect = session_start,
        .timeout_ms = req->timeout_ms ? req->timeout_ms : 1000,
        .on_deadline = sc_oneshot_on_timeout,
        .freed = freed,
        .verdict = cb,
        .verdict_arg = arg,
    };
    int rc = sc_oneshot_start(&c->os, loop, addr, &a);
    if (rc == 0 && out) {
        *out = c;
    }
    return rc; /* failed: <c> is freed once its handles closed */
}

void proxy_hc_grpc_cancel(struct proxy_hc_grpc_call *c)
{
    if (c) {
        sc_oneshot_cancel(&c->os);
    }
}
