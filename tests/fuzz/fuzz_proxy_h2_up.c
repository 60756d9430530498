// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the upstream HTTP/2 session (proxy_h2_up.c) inside a running worker: one
// proxy worker runs in-process on a libuv loop with short timeouts and a `protocol: http2`
// cluster; HTTP/1.1 clients (and, by a flag, one h2c client) send their requests at once, so
// several streams are in flight on one upstream connection, and every upstream connection is
// answered with the fuzzed server bytes. Input: one flags byte, then the server's bytes in
// segments separated by "\n=====\n"; the first segment goes out once the proxy has sent all its
// requests' HEADERS (or after 10 ms), each next one after the proxy writes again (or 10 ms).
//
// Invariants (any violation aborts): every run ends by itself with every connection closed (each
// state has a timer; nothing is left holding buffers); what reaches the upstream is the client
// preface and well-formed frames (DATA at most 16 KiB, stream frames on odd client streams) whose
// header blocks decode to a request with its pseudo-header fields first and no
// connection-specific field; what reaches an HTTP/1 client is a sequence of 1xx heads and one
// final head our strict parser accepts, with a body that matches its framing (a chunked body that
// decodes, never more than Content-Length); what reaches the h2c client is well-formed frames
// whose response header blocks start with a 3-digit :status.
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/nghttp2.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "net/addr.h"
#include "net/http1.h"
#include "net/tcp.h"
#include "roles/proxy/proxy.h"
#include "fuzz_worker.h"
#include "roles/proxy/proxy_h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_h2_up: invariant failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CAP 131072
#define MAX_SEG 16
#define SEG_MS 10

enum {
    F_NCLIENTS = 3,      /* bits 0-1: 1..4 HTTP/1 clients */
    F_H2C = 1 << 2,      /* also one h2c client with two streams */
    F_KEEP_OPEN = 1 << 3 /* the upstream does not half-close after its last segment */
};

static uv_loop_t loop;
static struct proxy px;
static struct proxy_worker *worker;
static uv_tcp_t up_server;
static int proxy_port;
static unsigned flags;
static struct {
    const char *p;
    size_t len;
} seg[MAX_SEG];
static size_t nseg;
static unsigned nreq; /* requests the proxy should put on the upstream connection at once */
static int open_handles;
static uv_timer_t guard;
static bool guard_fired;

/* The free part of a CAP-sized receive buffer holding <len> bytes; past CAP, a scratch sink. */
static uv_buf_t room(char *buf, size_t len)
{
    static char sink[4096];
    return len == CAP ? uv_buf_init(sink, sizeof(sink))
                      : uv_buf_init(buf + len, (unsigned)(CAP - len));
}

/* ---- a frame reader for both directions: checks framing and decodes header blocks ---- */

struct frames {
    const char *who;
    bool server; /* the frames come from the proxy as a server (to the h2c client) */
    nghttp2_hd_inflater *inf;
    size_t pos;
    uint8_t blk[65536 + 16384];
    size_t blklen;
    int32_t blk_stream;
    bool in_block;
    bool blk_overflow;
    int32_t seen[64]; /* streams whose first header block was checked */
    size_t nseen;
    unsigned nheaders;
};

static bool seen_before(const struct frames *f, int32_t id)
{
    for (size_t i = 0; i < f->nseen; i++) {
        if (f->seen[i] == id) {
            return true;
        }
    }
    return false;
}

static bool connection_specific(const uint8_t *n, size_t len)
{
    static const char *const bad[] = { "connection", "keep-alive", "proxy-connection",
                                       "transfer-encoding", "upgrade" };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        if (len == strlen(bad[i]) && memcmp(n, bad[i], len) == 0) {
            return true;
        }
    }
    return false;
}

/* Decodes one complete header block and checks it as a request (upstream side) or a response
 * (h2c client side); a stream's second block is trailers and carries no pseudo-header field. */
static void check_block(struct frames *f)
{
    if (f->blk_overflow) {
        return;
    }
    bool trailers = seen_before(f, f->blk_stream);
    bool interim = false;
    const uint8_t *in = f->blk;
    size_t left = f->blklen;
    bool regular = false, method = false, path = false, scheme = false, status = false;
    size_t nfields = 0;
    for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t n = nghttp2_hd_inflate_hd2(f->inf, &nv, &fl, in, left, 1);
        CHECK(n >= 0); /* the proxy's HPACK encoding always decodes */
        in += n;
        left -= (size_t)n;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
            nfields++;
            for (size_t i = 0; i < nv.namelen; i++) {
                CHECK(!(nv.name[i] >= 'A' && nv.name[i] <= 'Z'));
            }
            if (nv.namelen > 0 && nv.name[0] == ':') {
                CHECK(!regular && !trailers);
                method |= nv.namelen == 7 && memcmp(nv.name, ":method", 7) == 0;
                path |= nv.namelen == 5 && memcmp(nv.name, ":path", 5) == 0;
                scheme |= nv.namelen == 7 && memcmp(nv.name, ":scheme", 7) == 0;
                if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0) {
                    CHECK(nv.valuelen == 3 && nv.value[0] >= '1' && nv.value[0] <= '5');
                    status = true;
                    interim = nv.value[0] == '1';
                }
            } else {
                regular = true;
                CHECK(!connection_specific(nv.name, nv.namelen));
                if (nv.namelen == 2 && memcmp(nv.name, "te", 2) == 0) {
                    CHECK(nv.valuelen == 8 && memcmp(nv.value, "trailers", 8) == 0);
                }
            }
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(f->inf);
            break;
        }
        if (n == 0 && left == 0) {
            break;
        }
    }
    CHECK(left == 0);
    if (!trailers && f->server) {
        CHECK(status);
    } else if (!trailers) {
        CHECK(method && path && scheme);
    }
    (void)nfields;
    /* A response's 1xx heads come before its final head; the block after that is trailers. */
    if (!trailers && !interim && f->nseen < SC_ARRAY_LEN(f->seen)) {
        f->seen[f->nseen++] = f->blk_stream;
    }
}

/* Reads the complete frames of buf[f->pos..len). */
static void frames_scan(struct frames *f, const uint8_t *buf, size_t len)
{
    while (len - f->pos >= 9) {
        const uint8_t *h = buf + f->pos;
        size_t flen = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
        uint8_t type = h[3], fl = h[4];
        int32_t id = (int32_t)(((uint32_t)(h[5] & 0x7f) << 24) | ((uint32_t)h[6] << 16) |
                               ((uint32_t)h[7] << 8) | h[8]);
        if (len - f->pos - 9 < flen) {
            return;
        }
        const uint8_t *pl = h + 9;
        f->pos += 9 + flen;
        CHECK(type <= NGHTTP2_CONTINUATION);
        CHECK(!f->in_block || type == NGHTTP2_CONTINUATION);
        switch (type) {
        case NGHTTP2_DATA:
            CHECK(flen <= 16384 && id != 0);
            break;
        case NGHTTP2_SETTINGS:
        case NGHTTP2_PING:
        case NGHTTP2_GOAWAY:
            CHECK(id == 0);
            break;
        case NGHTTP2_RST_STREAM:
        case NGHTTP2_PRIORITY:
            CHECK(id != 0);
            break;
        case NGHTTP2_HEADERS: {
            CHECK(id != 0);
            CHECK(f->server || (id & 1) == 1); /* a client opens odd streams only */
            size_t off = 0, pad = 0;
            if (fl & NGHTTP2_FLAG_PADDED) {
                CHECK(flen >= 1);
                pad = pl[0];
                off = 1;
            }
            if (fl & NGHTTP2_FLAG_PRIORITY) {
                off += 5;
            }
            CHECK(off + pad <= flen);
            f->nheaders++;
            f->blklen = 0;
            f->blk_overflow = false;
            f->blk_stream = id;
            size_t n = flen - off - pad;
            if (n <= sizeof(f->blk)) {
                memcpy(f->blk, pl + off, n);
                f->blklen = n;
            } else {
                f->blk_overflow = true;
            }
            f->in_block = !(fl & NGHTTP2_FLAG_END_HEADERS);
            if (!f->in_block) {
                check_block(f);
            }
            break;
        }
        case NGHTTP2_CONTINUATION:
            CHECK(f->in_block && id == f->blk_stream);
            if (f->blklen + flen <= sizeof(f->blk)) {
                memcpy(f->blk + f->blklen, pl, flen);
                f->blklen += flen;
            } else {
                f->blk_overflow = true;
            }
            f->in_block = !(fl & NGHTTP2_FLAG_END_HEADERS);
            if (!f->in_block) {
                check_block(f);
            }
            break;
        default:
            break;
        }
    }
}

static void frames_init(struct frames *f, const char *who, bool server)
{
    memset(f, 0, offsetof(struct frames, blk));
    f->who = who;
    f->server = server;
    CHECK(nghttp2_hd_inflate_new(&f->inf) == 0);
    f->nseen = 0;
    f->nheaders = 0;
    f->blklen = 0;
    f->in_block = false;
    f->blk_overflow = false;
}

/* ---- the upstream: answers every connection with the fuzzed server bytes ---- */

struct upconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t sh;
    size_t next; /* the next segment to send */
    bool started;
    bool closing;
    int handles;
    struct frames fr;
    uint8_t in[CAP];
    size_t inlen;
};

struct upwrite {
    uv_write_t w;
};

static void up_send_next(struct upconn *u);

static void on_up_written(uv_write_t *req, int status)
{
    (void)status;
    sc_free(req);
}

static void on_up_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_up_tick(uv_timer_t *t)
{
    up_send_next(t->data);
}

static void up_send_next(struct upconn *u)
{
    if (u->closing || uv_is_closing((uv_handle_t *)&u->tcp)) {
        return;
    }
    if (u->next < nseg) {
        if (seg[u->next].len > 0) {
            struct upwrite *w = SC_NEW(struct upwrite);
            uv_buf_t b = uv_buf_init((char *)seg[u->next].p, (unsigned)seg[u->next].len);
            if (uv_write(&w->w, (uv_stream_t *)&u->tcp, &b, 1, on_up_written) < 0) {
                sc_free(w);
            }
        }
        u->next++;
    }
    if (u->next < nseg) {
        uv_timer_start(&u->timer, on_up_tick, SEG_MS, 0);
    } else if (!(flags & F_KEEP_OPEN) && u->next == nseg) {
        u->next++;
        uv_timer_stop(&u->timer);
        uv_shutdown(&u->sh, (uv_stream_t *)&u->tcp, on_up_shutdown);
    }
}

static void on_up_closed(uv_handle_t *h)
{
    struct upconn *u = h->data;
    open_handles--;
    if (--u->handles == 0) {
        nghttp2_hd_inflate_del(u->fr.inf);
        sc_free(u);
    }
}

static void up_close(struct upconn *u)
{
    if (!u->closing) {
        u->closing = true;
        uv_close((uv_handle_t *)&u->tcp, on_up_closed);
        uv_close((uv_handle_t *)&u->timer, on_up_closed);
    }
}

static void on_up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct upconn *u = h->data;
    (void)hint;
    *buf = room((char *)u->in, u->inlen);
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct upconn *u = s->data;
    if (n < 0) {
        up_close(u);
        return;
    }
    if (n == 0) {
        return;
    }
    bool mine = (const uint8_t *)buf->base >= u->in && (const uint8_t *)buf->base < u->in + CAP;
    if (mine) {
        size_t before = u->inlen;
        u->inlen += (size_t)n;
        if (before < 24) {
            static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            size_t k = u->inlen < 24 ? u->inlen : 24;
            CHECK(memcmp(u->in, preface, k) == 0);
            if (u->inlen >= 24 && u->fr.pos == 0) {
                u->fr.pos = 24;
            }
        }
        if (u->fr.pos >= 24) {
            frames_scan(&u->fr, u->in, u->inlen);
        }
    }
    if (!u->started) {
        if (u->fr.nheaders >= nreq) {
            u->started = true;
            up_send_next(u);
        } else if (!uv_is_active((uv_handle_t *)&u->timer)) {
            u->started = true; /* the first segment after 10 ms at the latest */
            uv_timer_start(&u->timer, on_up_tick, SEG_MS, 0);
        }
        return;
    }
    if (u->next > 0) {
        up_send_next(u); /* the proxy wrote: the next segment answers it */
    }
}

static void on_up_accept(uv_stream_t *server, int status)
{
    if (status < 0) {
        return;
    }
    struct upconn *u = SC_NEW(struct upconn);
    frames_init(&u->fr, "upstream", false);
    uv_tcp_init(&loop, &u->tcp);
    uv_timer_init(&loop, &u->timer);
    u->tcp.data = u;
    u->timer.data = u;
    u->handles = 2;
    open_handles += 2;
    if (uv_accept(server, (uv_stream_t *)&u->tcp) < 0) {
        up_close(u);
        return;
    }
    uv_read_start((uv_stream_t *)&u->tcp, on_up_alloc, on_up_read);
}

/* ---- the clients ---- */

struct client {
    uv_tcp_t tcp;
    uv_connect_t cr;
    uv_write_t wr;
    uv_shutdown_t sh;
    const char *req;
    size_t reqlen;
    bool h2;
    bool head; /* the request was HEAD */
    char in[CAP];
    size_t inlen;
};

static struct client clients[5];
static size_t nclients;

static const char *const h1_requests[] = {
    "GET /a?x=1 HTTP/1.1\r\nHost: svc\r\nTE: trailers\r\nUser-Agent: f\r\n\r\n",
    "POST /b HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "POST /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n",
    "HEAD /d HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, x-drop\r\nX-Drop: 1\r\n\r\n",
};

/* h2c: preface, empty SETTINGS, a GET on stream 1 and a POST with a body on stream 3 (HPACK:
 * static-table indexes, :authority as a literal with an indexed name). */
static const char h2c_request[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                  "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                                  "\x00\x00\x06\x01\x05\x00\x00\x00\x01"
                                  "\x82\x84\x86\x41\x01x"
                                  "\x00\x00\x06\x01\x04\x00\x00\x00\x03"
                                  "\x83\x84\x86\x41\x01x"
                                  "\x00\x00\x02\x00\x01\x00\x00\x00\x03"
                                  "hi";

static void on_client_closed(uv_handle_t *h)
{
    (void)h;
    open_handles--;
}

static void on_client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    (void)hint;
    *buf = room(c->in, c->inlen);
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_client_closed);
        return;
    }
    if (buf->base >= c->in && buf->base < c->in + CAP) {
        c->inlen += (size_t)n;
    }
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_client_write(uv_write_t *req, int status)
{
    struct client *c = req->data;
    /* HTTP/1 clients half-close (they still get their answer); an h2c client's FIN would close
     * its connection, so it waits for the proxy's idle GOAWAY instead. */
    if (status == 0 && !c->h2 && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, on_client_shutdown);
    }
}

static void on_client_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_client_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_client_alloc, on_client_read);
    uv_buf_t b = uv_buf_init((char *)c->req, (unsigned)c->reqlen);
    c->wr.data = c;
    uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_client_write);
}

static void client_start(struct client *c, const char *req, size_t len, bool h2)
{
    c->req = req;
    c->reqlen = len;
    c->h2 = h2;
    c->head = !h2 && memcmp(req, "HEAD ", 5) == 0;
    c->inlen = 0;
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    c->cr.data = c;
    open_handles++;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", proxy_port, &sa);
    uv_tcp_connect(&c->cr, &c->tcp, (struct sockaddr *)&sa, on_client_connect);
}

static const struct sc_http_limits resp_limits = { 65536, 262144, 512 };

/* An HTTP/1 client's bytes: 1xx heads, one final head, a body that matches its framing. */
static void check_h1_client(const struct client *c)
{
    size_t off = 0;
    const char *p = c->in;
    size_t len = c->inlen;
    if (len == 0) {
        return;
    }
    static struct sc_http_header hs[512];
    for (;;) {
        struct sc_http_msg m = { .headers = hs };
        struct sc_http_error err;
        int rc = sc_http1_parse_response(p + off, len - off, 0, &resp_limits,
                                         c->head ? SC_HTTP_RESP_TO_HEAD : 0, &m, 512, &err);
        if (rc == 0) {
            /* Heads are written whole: only a final head may be missing (connection closed). */
            CHECK(off > 0 || len >= 9);
            CHECK(memcmp(p + off, "HTTP/1.1 ", len - off < 9 ? len - off : 9) == 0);
            return;
        }
        if (rc < 0) {
            fprintf(stderr, "bad head at %zu: %s\n%.*s\n", off, err.reason,
                    (int)(len - off < 600 ? len - off : 600), p + off);
        }
        CHECK(rc > 0);
        CHECK(m.minor_version == 1);
        off += (size_t)rc;
        if (m.status >= 100 && m.status < 200) {
            CHECK(m.status != 101);
            continue;
        }
        CHECK(m.status >= 200 && m.status <= 599);
        size_t body = len - off;
        if (m.body == SC_HTTP_BODY_NONE) {
            CHECK(body == 0);
        } else if (m.body == SC_HTTP_BODY_LENGTH) {
            CHECK(body <= m.content_length);
        } else if (m.body == SC_HTTP_BODY_CHUNKED) {
            struct sc_http1_chunked d;
            sc_http1_chunked_init(&d);
            size_t at = off;
            for (;;) {
                size_t used = 0;
                struct sc_str data;
                int r = sc_http1_chunked_next(&d, p + at, len - at, &used, &data, &err);
                if (r < 0) {
                    fprintf(stderr, "bad chunked body: %s\n", err.reason);
                }
                CHECK(r >= 0);
                at += used;
                if (r == SC_HTTP1_CHUNK_DONE) {
                    CHECK(at == len); /* nothing after the last chunk */
                    break;
                }
                if (r == SC_HTTP1_CHUNK_MORE) {
                    break;
                }
            }
        }
        return;
    }
}

static void check_h2c_client(const struct client *c)
{
    if (c->inlen == 0) {
        return;
    }
    /* The server's preface, a SETTINGS frame on stream 0, comes first. */
    CHECK(c->inlen >= 9 && c->in[3] == 4 && (c->in[4] & 1) == 0);
    static struct frames f;
    frames_init(&f, "h2c client", true);
    frames_scan(&f, (const uint8_t *)c->in, c->inlen);
    nghttp2_hd_inflate_del(f.inf);
}

/* ---- the harness ---- */

static void on_guard(uv_timer_t *t)
{
    (void)t;
    guard_fired = true;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the app does: a peer gone mid-write is an error, not death */
    uv_loop_init(&loop);
    struct sockaddr_storage ss;
    sc_addr_parse("127.0.0.1:0", &ss, NULL);
    char *err = NULL;
    CHECK(sc_tcp_listen(&loop, &up_server, (struct sockaddr *)&ss, 128, false, on_up_accept,
                        &err) == 0);
    char upaddr[64];
    CHECK(sc_tcp_local_address(&up_server, upaddr, sizeof(upaddr)) == 0);

    char text[2048];
    snprintf(text, sizeof(text),
             "timeout: 150ms\n"
             "connect_timeout: 100ms\n"
             "request_headers_timeout: 100ms\n"
             "stream_idle_timeout: 100ms\n"
             "idle_timeout: 100ms\n"
             "retry_buffer: 4096\n"
             "access_log: stdout\n"
             "listeners:\n"
             "  - name: l\n"
             "    address: 127.0.0.1:0\n"
             "    routes:\n"
             "      - name: r\n"
             "        cluster: up\n"
             "        retry_policy: { retry_on: [5xx, reset], num_retries: 1 }\n"
             "clusters:\n"
             "  - name: up\n"
             "    endpoints: [\"%s\"]\n"
             "    protocol: http2\n"
             "    idle_timeout: 100ms\n"
             "    http2: { max_concurrent_streams: 4, initial_stream_window_size: 65535, "
             "max_header_list_size: 8KiB, keepalive_interval: 30ms, keepalive_timeout: 60ms }\n",
             upaddr);
    static struct proxy_cfg cfg;
    sc_config_defaults(proxy_opts, &cfg);
    if (sc_config_load_string(proxy_opts, &cfg, "fuzz", text, strlen(text), &err) != 0 ||
        proxy_config_check(&cfg, &err) != 0) {
        fprintf(stderr, "fuzz_proxy_h2_up: config: %s\n", err ? err : "?");
        abort();
    }

    worker = fuzz_worker_start(&px, &loop, &cfg, &proxy_port);
    uv_timer_init(&loop, &guard);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size < 1 || size > 65536) {
        return 0;
    }
    flags = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    nseg = 0;
    while (nseg < MAX_SEG) {
        const char *sep = memmem(p, (size_t)(end - p), "\n=====\n", 7);
        if (!sep || nseg == MAX_SEG - 1) {
            seg[nseg].p = p;
            seg[nseg++].len = (size_t)(end - p);
            break;
        }
        seg[nseg].p = p;
        seg[nseg++].len = (size_t)(sep - p);
        p = sep + 7;
    }
    size_t n1 = (flags & F_NCLIENTS) + 1;
    nclients = 0;
    for (size_t i = 0; i < n1; i++) {
        client_start(&clients[nclients++], h1_requests[i], strlen(h1_requests[i]), false);
    }
    nreq = (unsigned)n1;
    if (flags & F_H2C) {
        client_start(&clients[nclients++], h2c_request, sizeof(h2c_request) - 1, true);
        nreq += 2;
    }
    guard_fired = false;
    uv_timer_start(&guard, on_guard, 5000, 0);
    while (!(open_handles == 0 && worker->nconns == 0 && worker->nuconns == 0) && !guard_fired) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&guard);
    CHECK(!guard_fired); /* no exchange may hang: every state has a timer */
    for (size_t i = 0; i < nclients; i++) {
        if (getenv("FUZZ_PROXY_VERBOSE")) {
            fprintf(stderr, "--- client %zu received %zu bytes:\n%.*s\n", i, clients[i].inlen,
                    (int)(clients[i].inlen < 600 ? clients[i].inlen : 600), clients[i].in);
        }
        if (clients[i].h2) {
            check_h2c_client(&clients[i]);
        } else {
            check_h1_client(&clients[i]);
        }
    }
    return 0;
}
