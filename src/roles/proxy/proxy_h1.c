// SPDX-License-Identifier: Apache-2.0
// The HTTP/1.1 codecs of the proxy: the downstream connection (accept, read, parse request heads,
// write responses) and the upstream side (send the request head and body, parse the response head,
// stream the response body). All socket I/O goes through the transport chain (net/transport.h),
// reached through the connection's top layer, so TLS is one more layer below.
//
// Bytes move from a read buffer straight to the other side's transport: written at once when the
// socket takes them (usually the only syscall), else queued, and while a write is queued its
// source stops reading. That one rule is the backpressure: at most one read buffer of data is in
// flight per direction, whatever the body size. Request bodies are also copied into a capped retry
// buffer while they fit, so a failed try can be replayed on another endpoint.
#include <arpa/inet.h>
#include <netdb.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/tcp.h"
#include "net/transport.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_hsink.h"
#include "roles/proxy/proxy_route_policy.h"

static void on_dalloc(void *owner, uv_buf_t *buf);
static void on_dread(void *owner, ssize_t nread);
static void on_dwrite(void *owner, int status);
static void on_dconn_closed(void *owner);
static bool closing_after_response(const struct proxy_dconn *dc);
static void on_dhandshake(void *owner, int status);
static bool tunnel_fins(struct proxy_dconn *dc);
static void try_parse_head(struct proxy_dconn *dc);
static struct proxy_dconn *dconn_new(struct proxy_worker *w, size_t lidx, struct sc_xport *top);
static void dconn_start(struct proxy_dconn *dc, uv_tcp_t *tcp, const struct sockaddr_storage *peer,
                        const char *peer_ip);

/* What a downstream transport reports (it never connects). */
const struct sc_xport_cbs proxy_dconn_cbs = {
    .alloc = on_dalloc,
    .read = on_dread,
    .write_done = on_dwrite,
    .connected = on_dhandshake, /* a TLS layer's handshake */
    .closed = on_dconn_closed,
};

void proxy_h1_ualloc(void *owner, uv_buf_t *buf)
{
    struct proxy_uconn *uc = owner;
    uint32_t max = uc->rt ? uc->rt->max_request_head : 65536;
    proxy_rbuf_get(uc->w, &uc->in);
    proxy_rbuf_room(&uc->in, max);
    *buf = uv_buf_init(uc->in.p + uc->in.end, (unsigned)(uc->in.cap - uc->in.end));
}
void proxy_h1_uread(void *owner, ssize_t nread)
{
    struct proxy_uconn *uc = owner;
    proxy_spin_on(uc->w);
    if (nread == 0 || uc->state == U_CLOSING) {
        return;
    }
    if (uc->state == U_IDLE) {
        /* Data or EOF on an idle connection: the server closed it or misbehaves. */
        proxy_uconn_close(uc);
        return;
    }
    struct proxy_dconn *dc = uc->ex ? uc->ex->dc : NULL;
    if (!dc) {
        proxy_uconn_close(uc);
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    if (nread < 0) {
        struct proxy_exch *r = &dc->ex;
        uc->eof = true;
        if (dc->state == D_TUNNEL) {
            if (nread != UV_EOF) {
                r->flags |= F_UC;
                proxy_dconn_close(dc);
                return;
            }
            /* A FIN: once what the upstream sent has reached the client, the client gets a FIN
             * too, and the other direction goes on until the client's own. */
            r->resp_done = true;
            sc_xport_read_stop(uc->x);
            proxy_pump_resp(dc, NULL, 0);
            return;
        }
        if (!r->resp_head_sent) {
            if (nread == UV_ENOBUFS) {
                proxy_attempt_failed(&dc->ex, 0, F_UPE, "upstream response head too large");
            } else {
                proxy_attempt_failed(&dc->ex, COND_RESET, F_UC,
                                     "upstream connection closed before response");
            }
            return;
        }
        if (r->rbody == B_EOF) {
            r->resp_done = true;
            sc_xport_read_stop(uc->x);
            proxy_pump_resp(dc, NULL, 0);
            return;
        }
        /* Reset mid-body: the client sees a truncated message, never a silently short one. */
        r->flags |= F_UC;
        proxy_dconn_close(dc);
        return;
    }
    uc->in.end += (size_t)nread;
    uc->got_bytes = true;
    if (dc->state == D_TUNNEL || dc->ex.resp_head_sent) {
        proxy_pump_resp(dc, NULL, 0);
    } else {
        proxy_parse_resp_head(dc);
    }
}
/* The connection is ready for the request: send the head, any replayed body, then stream. */
void proxy_upstream_ready(struct proxy_dconn *dc)
{
    struct proxy_uconn *uc = dc->ex.uc;
    struct proxy_exch *r = &dc->ex;
    uc->state = U_ACTIVE;
    uc->last_len = 0;
    if (r->route->per_try_timeout_ms) {
        uv_timer_start(&uc->timer, proxy_on_per_try_timeout, r->route->per_try_timeout_ms, 0);
        uc->idle_timer = false;
    } else if (!uc->idle_timer) {
        uv_timer_stop(&uc->timer); /* the connect timeout */
    }
    sc_xport_read_start(uc->x);
    if (r->expect && !r->sent_continue && !r->body_done && !r->resp_head_sent && !dc->wpending) {
        /* Expect: 100-continue is answered here, as Envoy does by default: the header is not
         * forwarded, so the client never waits on an upstream that ignores it, and an upstream
         * 100 is dropped (one per request). Sent once the request is on its way, so a request
         * refused locally (404, 413, 503) gets its final status instead and keeps its body. */
        static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t iov = uv_buf_init(cont, sizeof(cont) - 1);
        r->sent_continue = true;
        if (r->down_h2) {
            (void)proxy_h2_interim(dc, NULL); /* a HEADERS frame with :status 100 */
        } else {
            r->bytes_out += iov.len;
            if (proxy_dwrite(dc, &iov, 1, 0, DN_INTERIM) < 0) {
                return;
            }
        }
    }
    if (r->grpc_to_off) {
        proxy_grpc_timeout_refresh(r); /* what is left of the call's deadline for this try */
    }
    uv_buf_t pre[2] = { uv_buf_init(r->head.p, (unsigned)r->head.len),
                        uv_buf_init(r->copy.p, (unsigned)r->copy.len) };
    proxy_pump_req(dc, pre, r->copy.len ? 2 : 1);
}

/* Writes to the client. <consume> bytes of the upstream buffer are covered by <iov>. */
int proxy_dwrite(struct proxy_dconn *dc, uv_buf_t *iov, unsigned n, size_t consume, int next)
{
    int rc = sc_xport_write(dc->x, iov, n);
    if (rc < 0) {
        dc->ex.flags |= F_DC;
        proxy_dconn_close(dc);
        return rc;
    }
    if (rc == 1) {
        dc->wpending = true;
        dc->wconsume = consume;
        dc->wnext = next;
        if (dc->ex.uc && dc->ex.uc->state == U_ACTIVE) {
            sc_xport_read_stop(dc->ex.uc->x);
        }
        return 1;
    }
    sc_buf_reset(&dc->out);
    return 0;
}

static void on_dwrite(void *owner, int status)
{
    struct proxy_dconn *dc = owner;
    dc->wpending = false;
    if (dc->state == D_CLOSING) {
        return;
    }
    if (status < 0) {
        dc->ex.flags |= F_DC;
        proxy_dconn_close(dc);
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    sc_buf_reset(&dc->out);
    struct proxy_uconn *uc = dc->ex.uc;
    if (uc) {
        uc->in.start += dc->wconsume;
        if (uc->state == U_ACTIVE && !uc->eof) {
            sc_xport_read_start(uc->x);
        }
    }
    dc->wconsume = 0;
    switch (dc->wnext) {
    case DN_LOCAL:
        proxy_finish_request(&dc->ex);
        break;
    case DN_INTERIM:
        if (uc) {
            proxy_parse_resp_head(dc);
        }
        break;
    case DN_BODY:
    case DN_TUNNEL:
        proxy_pump_resp(dc, NULL, 0);
        break;
    default:
        break;
    }
}

/* ---- request body: client -> upstream ---- */
void proxy_h1_uwrite(void *owner, int status)
{
    struct proxy_uconn *uc = owner;
    uc->wpending = false;
    if (uc->state == U_CLOSING || !uc->ex) {
        return;
    }
    struct proxy_dconn *dc = uc->ex ? uc->ex->dc : NULL;
    if (status < 0) {
        if (!dc->ex.resp_head_sent && dc->state != D_TUNNEL) {
            proxy_attempt_failed(&dc->ex, COND_RESET, F_UC, "upstream write failed");
        } else {
            dc->ex.flags |= F_UC;
            proxy_dconn_close(dc);
        }
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    dc->in.start += uc->wconsume;
    uc->wconsume = 0;
    if (dc->state == D_TUNNEL && tunnel_fins(dc)) {
        return;
    }
    proxy_pump_req(dc, NULL, 0);
}

/* In a tunnel, passes each side's FIN on once that side's bytes have all been delivered
 * (shutdown of the other side's write direction, which keeps reading), and closes the tunnel when
 * both directions are finished; the stream idle timer bounds a side that never finishes. Returns
 * true when the connection was closed. */
static bool tunnel_fins(struct proxy_dconn *dc)
{
    struct proxy_uconn *uc = dc->ex.uc;
    if (dc->state != D_TUNNEL) {
        return dc->state == D_CLOSING;
    }
    if (!uc) {
        proxy_dconn_close(dc);
        return true;
    }
    if (dc->tun_eof && !dc->shut_up && !uc->wpending && dc->in.start == dc->in.end) {
        dc->shut_up = true;
        if (sc_xport_shutdown(uc->x) < 0) {
            proxy_dconn_close(dc);
            return true;
        }
    }
    if (uc->eof && dc->ex.resp_done && !dc->shut_dn && !dc->wpending &&
        uc->in.start == uc->in.end) {
        dc->shut_dn = true;
        if (sc_xport_shutdown(dc->x) < 0) {
            proxy_dconn_close(dc);
            return true;
        }
    }
    if (dc->shut_up && dc->shut_dn) {
        proxy_dconn_close(dc);
        return true;
    }
    return false;
}
void proxy_pump_req(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix)
{
    struct proxy_exch *r = &dc->ex;
    bool tunnel = dc->state == D_TUNNEL;
    for (;;) {
        struct proxy_uconn *uc = dc->ex.uc;
        if (!uc || uc->wpending || uc->state != U_ACTIVE) {
            break;
        }
        size_t avail = dc->in.end - dc->in.start;
        const char *p = avail ? dc->in.p + dc->in.start : NULL;
        size_t n = 0;
        bool done_now = false;
        if (tunnel) {
            n = avail;
        } else if (!r->body_done) {
            switch (r->body) {
            case B_LENGTH:
                n = avail < r->remaining ? avail : (size_t)r->remaining;
                r->remaining -= n;
                done_now = r->remaining == 0;
                if (r->grpc) {
                    proxy_grpc_frames_feed(&r->greq, p, n);
                }
                break;
            case B_CHUNKED:
                while (n < avail) {
                    size_t used = 0;
                    struct sc_str data;
                    struct sc_http_error err = { 0 };
                    int rc =
                        sc_http1_chunked_next(&r->ch->req, p + n, avail - n, &used, &data, &err);
                    if (rc < 0) {
                        if (r->resp_head_sent) {
                            r->flags |= F_DPE;
                            proxy_dconn_close(dc);
                        } else {
                            dc->ex.close_after = true;
                            proxy_local_reply(&dc->ex, 400,
                                              err.reason ? err.reason : "bad chunked body", F_DPE);
                        }
                        return;
                    }
                    n += used;
                    if (r->grpc && rc == SC_HTTP1_CHUNK_DATA) {
                        proxy_grpc_frames_feed(&r->greq, data.p, data.len);
                    }
                    if (r->rt->max_request_body &&
                        r->ch->req.body_bytes > r->rt->max_request_body) {
                        if (r->resp_head_sent) {
                            r->flags |= F_DPE;
                            proxy_dconn_close(dc);
                        } else {
                            dc->ex.close_after = true;
                            proxy_local_reply(&dc->ex, 413,
                                              "request body larger than max_request_body", F_DPE);
                        }
                        return;
                    }
                    if (rc == SC_HTTP1_CHUNK_DONE) {
                        done_now = true;
                        break;
                    }
                    if (rc == SC_HTTP1_CHUNK_MORE) {
                        break;
                    }
                }
                break;
            default:
                done_now = true;
                break;
            }
        }
        if (!tunnel && (r->retriable || r->pol.mirror) && n > 0 &&
            sc_buf_append(&r->copy, p, n) < 0) {
            /* Past the retry buffer: this request can no longer be replayed (nor mirrored). */
            r->retriable = false;
            sc_buf_reset(&r->copy);
            proxy_mirror_drop(&dc->ex);
        }
        if (n == 0 && nprefix == 0) {
            if (done_now) {
                proxy_request_body_done(&dc->ex);
            }
            break;
        }
        uv_buf_t iov[3];
        unsigned k = 0;
        for (unsigned i = 0; i < nprefix; i++) {
            iov[k++] = prefix[i];
        }
        if (n) {
            iov[k++] = uv_buf_init((char *)p, (unsigned)n);
        }
        nprefix = 0;
        r->bytes_in += n;
        int rc = sc_xport_write(uc->x, iov, k);
        if (done_now) {
            proxy_request_body_done(&dc->ex);
        }
        if (rc < 0) {
            if (tunnel || r->resp_head_sent) {
                r->flags |= F_UC;
                proxy_dconn_close(dc);
            } else {
                proxy_attempt_failed(&dc->ex, COND_RESET, F_UC, "upstream write failed");
            }
            return;
        }
        if (rc == 1) {
            uc->wpending = true;
            uc->wconsume = n;
            break;
        }
        dc->in.start += n;
        if (n == 0 || dc->in.start == dc->in.end) {
            break;
        }
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    proxy_dread_update(dc);
}

/* ---- response: upstream -> client ---- */
void proxy_parse_resp_head(struct proxy_dconn *dc)
{
    struct proxy_exch *r = &dc->ex;
    struct proxy_worker *w = dc->w;
    for (;;) {
        struct proxy_uconn *uc = dc->ex.uc;
        if (!uc || dc->wpending) {
            return;
        }
        size_t avail = uc->in.end - uc->in.start;
        if (avail == 0) {
            return;
        }
        struct sc_http_msg m = { .headers = w->hdrs };
        struct sc_http_error err = { 0 };
        struct sc_http_limits lim = sc_http1_default_limits;
        lim.max_head = r->rt->max_request_head;
        unsigned flags =
            (r->is_head ? SC_HTTP_RESP_TO_HEAD : 0) | (r->is_connect ? SC_HTTP_RESP_TO_CONNECT : 0);
        int rc = sc_http1_parse_response(uc->in.p + uc->in.start, avail, uc->last_len, &lim, flags,
                                         &m, MAX_HEADERS, &err);
        if (rc == 0) {
            uc->last_len = avail;
            if (avail >= r->rt->max_request_head) {
                proxy_attempt_failed(&dc->ex, 0, F_UPE, "upstream response head too large");
            }
            return;
        }
        if (rc < 0) {
            proxy_attempt_failed(&dc->ex, 0, F_UPE,
                                 err.reason ? err.reason : "malformed upstream response");
            return;
        }
        uc->last_len = 0;
        if (m.status > 599) {
            /* RFC 9110 section 15: outside 100..599 is invalid; never pass one on to clients. */
            proxy_attempt_failed(&dc->ex, 0, F_UPE, "invalid upstream status code");
            return;
        }
        if (m.status >= 100 && m.status < 200 && m.status != 101) {
            /* Interim response (100 Continue, 103 Early Hints): passed on to HTTP/1.1 clients,
             * rebuilt as our own HTTP/1.1 head; HTTP/1.0 has no 1xx, so from an HTTP/1.0
             * upstream or to an HTTP/1.0 client it is dropped. */
            size_t len = (size_t)rc;
            if (r->minor == 0 || m.minor_version == 0 || (m.status == 100 && r->sent_continue)) {
                uc->in.start += len;
                continue;
            }
            if (r->down_h2) {
                /* HTTP/2 clients get it as HEADERS ahead of the final head; dropped when the
                 * stream cannot take it. */
                (void)proxy_h2_interim(dc, &m);
                uc->in.start += len;
                continue;
            }
            proxy_hbuf_get(w, &dc->out);
            sc_buf_reset(&dc->out);
            if (proxy_build_interim_head(&m, &dc->out) < 0) {
                sc_buf_reset(&dc->out);
                uc->in.start += len;
                continue;
            }
            uc->in.start += len;
            uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
            r->bytes_out += dc->out.len;
            if (proxy_dwrite(dc, &iov, 1, 0, DN_INTERIM) != 0) {
                return;
            }
            continue;
        }
        if (m.status == 101 && !r->upgrade) {
            proxy_attempt_failed(&dc->ex, 0, F_UPE,
                                 "upstream switched protocols without an upgrade request");
            return;
        }
        if (r->ep && r->ep->st) {
            proxy_outlier_record(r->ep, m.status, uv_now(w->loop));
        }
        int gact = PROXY_GRPC_PASS;
        if (r->grpc) {
            size_t hl = (size_t)rc;
            gact = proxy_grpc_response(r, &m, sc_str_n(uc->in.p + uc->in.start + hl, avail - hl),
                                       r->rt->max_request_head);
            if (gact == PROXY_GRPC_WAIT) {
                return; /* parsed again with the bytes that follow (uc->last_len is 0) */
            }
        }
        if (gact == PROXY_GRPC_RETRY ||
            (proxy_may_retry(&dc->ex, COND_STATUS, m.status) && proxy_breaker_retry(r))) {
            r->upstream_total_ns += proxy_now_ns() - r->upstream_ns;
            proxy_uconn_close(uc);
            proxy_schedule_retry(&dc->ex);
            return;
        }
        r->upstream_total_ns += proxy_now_ns() - r->upstream_ns;
        if (gact == PROXY_GRPC_MAP) {
            /* An HTTP error without grpc-status (an HTTP/1 upstream's 503): the client gets the
             * status gRPC's table maps it to, trailers-only, as a gRPC client expects. */
            char why[64];
            snprintf(why, sizeof(why), "upstream answered HTTP %d without grpc-status", m.status);
            proxy_local_reply(r, m.status, why, 0);
            return;
        }
        if (!uc->idle_timer) {
            uv_timer_stop(&uc->timer); /* the per-try timeout */
        }
        r->status = m.status;
        r->rbody = m.body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
                   : m.body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                   : m.body == SC_HTTP_BODY_EOF     ? B_EOF
                                                    : B_NONE;
        r->rremaining = m.content_length;
        bool tunnel = m.status == 101 || (r->is_connect && m.status >= 200 && m.status < 300);
        if (tunnel) {
            r->rbody = B_RAW;
        }
        if (r->rbody == B_CHUNKED) {
            sc_http1_chunked_init(&proxy_exch_chunked(r)->resp);
            r->dechunk = r->minor == 0 || r->down_h2; /* an HTTP/2 stream frames it itself */
        }
        if (!m.keep_alive && r->rbody != B_RAW) {
            /* The upstream closes after this response: it cannot go back to the pool. */
            uc->reused = false;
        }
        r->resp_keep_alive = m.keep_alive;
        proxy_hbuf_get(w, &dc->out);
        sc_buf_reset(&dc->out);
        if (dc->h2s ? proxy_h2_resp_head(dc, &m) < 0
                    : proxy_build_resp_head(r, &m, &dc->out, closing_after_response(dc)) < 0) {
            sc_buf_reset(&dc->out);
            proxy_attempt_failed(&dc->ex, 0, F_UPE, "upstream response head too large");
            return;
        }
        uc->in.start += (size_t)rc;
        r->resp_head_sent = true;
        if (tunnel) {
            dc->state = D_TUNNEL;
            /* Reading paused for the head (full buffer) resumes; a client that already
             * half-closed gets its buffered bytes sent, then its FIN passed on. */
            dc->tun_eof = dc->eof;
            dc->rpaused = dc->eof;
        }
        proxy_arm_timer(dc);
        uv_buf_t pre = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
        r->bytes_out += dc->out.len;
        proxy_pump_resp(dc, &pre, dc->out.len ? 1 : 0);
        if (tunnel && dc->state == D_TUNNEL) {
            proxy_pump_req(dc, NULL, 0);
            tunnel_fins(dc);
        }
        return;
    }
}

/* Whether the client connection closes after this response: the proxy drains, the client asked
 * (or cannot keep alive), or the body ends at close. */
static bool closing_after_response(const struct proxy_dconn *dc)
{
    const struct proxy_exch *r = &dc->ex;
    return dc->ex.close_after || dc->w->draining || !r->keep_alive || r->rbody == B_EOF ||
           r->dechunk;
}

/* Called once the whole response went out to the client. */
static void response_complete(struct proxy_dconn *dc)
{
    struct proxy_exch *r = &dc->ex;
    struct proxy_uconn *uc = dc->ex.uc;
    r->resp_done = true;
    if (uc) {
        bool reusable =
            r->body_done && r->resp_keep_alive && r->rbody != B_EOF && uc->state == U_ACTIVE;
        proxy_uconn_release(uc, reusable);
    }
    if (!r->body_done) {
        /* The response ended before the request body: the rest of it cannot be skipped safely. */
        dc->ex.close_after = true;
    }
    proxy_finish_request(&dc->ex);
}

void proxy_pump_resp(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix)
{
    struct proxy_exch *r = &dc->ex;
    for (;;) {
        struct proxy_uconn *uc = dc->ex.uc;
        if (dc->wpending) {
            return;
        }
        if (!uc) {
            if (nprefix == 0) {
                if (r->resp_done || r->rbody == B_NONE) {
                    response_complete(dc);
                } else {
                    proxy_dconn_close(dc);
                }
                return;
            }
        }
        size_t avail = uc ? uc->in.end - uc->in.start : 0;
        const char *p = avail ? uc->in.p + uc->in.start : NULL;
        uv_buf_t iov[MAX_IOV + 1];
        unsigned k = 0;
        for (unsigned i = 0; i < nprefix; i++) {
            iov[k++] = prefix[i];
        }
        nprefix = 0;
        size_t consumed = 0;
        bool done = false;
        switch (r->rbody) {
        case B_NONE:
            done = true;
            break;
        case B_LENGTH:
            consumed = avail < r->rremaining ? avail : (size_t)r->rremaining;
            r->rremaining -= consumed;
            done = r->rremaining == 0;
            if (consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
                if (r->grpc) {
                    proxy_grpc_frames_feed(&r->gresp, p, consumed);
                }
            }
            break;
        case B_CHUNKED:
            while (consumed < avail && k < MAX_IOV) {
                size_t used = 0;
                struct sc_str data = SC_STR_NULL;
                struct sc_http_error err = { 0 };
                int rc = sc_http1_chunked_next(&r->ch->resp, p + consumed, avail - consumed, &used,
                                               &data, &err);
                if (rc < 0) {
                    r->flags |= F_UPE;
                    proxy_dconn_close(dc);
                    return;
                }
                if (r->dechunk && rc == SC_HTTP1_CHUNK_DATA && data.len) {
                    iov[k++] = uv_buf_init((char *)data.p, (unsigned)data.len);
                }
                if (r->down_h2) {
                    /* the trailer section, for HTTP/2 trailers */
                    proxy_h2_resp_framing(dc, rc == SC_HTTP1_CHUNK_DATA,
                                          sc_str_n(p + consumed, used));
                }
                if (r->grpc) {
                    /* messages counted, the trailers' grpc-status */
                    proxy_grpc_resp_framing(
                        r, rc == SC_HTTP1_CHUNK_DATA,
                        rc == SC_HTTP1_CHUNK_DATA ? data : sc_str_n(p + consumed, used));
                }
                consumed += used;
                if (rc == SC_HTTP1_CHUNK_DONE) {
                    done = true;
                    break;
                }
                if (rc == SC_HTTP1_CHUNK_MORE) {
                    break;
                }
            }
            if (!r->dechunk && consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
            }
            break;
        case B_EOF:
        case B_RAW:
            consumed = avail;
            done = r->resp_done;
            if (consumed) {
                iov[k++] = uv_buf_init((char *)p, (unsigned)consumed);
            }
            break;
        default:
            break;
        }
        for (unsigned i = 0; i < k; i++) {
            r->bytes_out += iov[i].len;
        }
        if (k > 0) {
            int wr = proxy_dwrite(dc, iov, k, consumed, r->rbody == B_RAW ? DN_TUNNEL : DN_BODY);
            if (wr < 0) {
                return;
            }
            if (wr == 1) {
                if (done) {
                    r->resp_done = true;
                }
                return;
            }
        }
        if (uc) {
            uc->in.start += consumed;
            if (uc->in.start == uc->in.end) {
                uc->in.start = uc->in.end = 0;
            }
        }
        if (done || (r->resp_done && r->rbody != B_RAW)) {
            if (r->rbody == B_RAW) {
                tunnel_fins(dc);
            } else {
                response_complete(dc);
            }
            return;
        }
        if (!uc || consumed == 0 || uc->in.start == uc->in.end) {
            break;
        }
    }
}

/* ---- requests ---- */
static void on_dalloc(void *owner, uv_buf_t *buf)
{
    struct proxy_dconn *dc = owner;
    proxy_rbuf_get(dc->w, &dc->in);
    size_t max = dc->state == D_HEAD ? dc->w->rt->max_request_head : dc->in.cap;
    proxy_rbuf_room(&dc->in, max);
    *buf = uv_buf_init(dc->in.p + dc->in.end, (unsigned)(dc->in.cap - dc->in.end));
}

static void on_dread(void *owner, ssize_t nread)
{
    struct proxy_dconn *dc = owner;
    proxy_spin_on(dc->w);
    if (nread == 0 || dc->state == D_CLOSING) {
        return;
    }
    dc->last_activity = uv_now(dc->w->loop);
    if (nread < 0) {
        if (dc->state == D_HEAD) {
            if (nread == UV_ENOBUFS) {
                dc->ex.close_after = true;
                proxy_local_reply(&dc->ex, 431, "request head too large", F_DPE);
                return;
            }
            proxy_dconn_close(dc);
            return;
        }
        if (dc->state == D_REQ && dc->ex.body_done && (nread == UV_EOF || nread == UV_ENOBUFS)) {
            /* A half-closed client still gets its answers (to every complete request it sent);
             * a full buffer waits until the current request is answered. */
            if (nread == UV_EOF) {
                dc->eof = true;
            }
            dc->rpaused = true;
            proxy_dread_update(dc);
            return;
        }
        if (dc->state == D_TUNNEL && nread == UV_EOF) {
            /* The client's FIN goes upstream once its last bytes have; the upstream may still
             * answer until its own FIN. */
            dc->tun_eof = true;
            dc->rpaused = true;
            proxy_dread_update(dc);
            tunnel_fins(dc);
            return;
        }
        dc->ex.flags |= F_DC;
        proxy_dconn_close(dc);
        return;
    }
    bool was_empty = dc->in.end == dc->in.start;
    dc->in.end += (size_t)nread;
    switch (dc->state) {
    case D_HEAD:
        if (was_empty) {
            dc->head_start_ms = uv_now(dc->w->loop);
            proxy_arm_timer(dc);
        }
        if (dc->sniff && proxy_tls_sniff(dc)) {
            break; /* more bytes needed, or TLS took them */
        }
        proxy_parse_loop(dc);
        break;
    case D_REQ:
        if (dc->ex.body_done) {
            break; /* a pipelined request: parsed once this one is answered */
        }
        proxy_pump_req(dc, NULL, 0);
        break;
    case D_TUNNEL:
        proxy_pump_req(dc, NULL, 0);
        break;
    default:
        break;
    }
}

/* Whether to read from the client now. While a request body streams, only when the upstream can
 * take more (backpressure). Once the body is complete, reading goes on (so a client that leaves is
 * noticed and pipelined requests wait in the buffer) until the buffer is full, which costs no
 * epoll_ctl per request in the common case. */
static bool dread_want(const struct proxy_dconn *dc)
{
    const struct proxy_uconn *uc = dc->ex.uc;
    switch (dc->state) {
    case D_HEAD:
        return true;
    case D_TUNNEL:
        return uc && uc->state == U_ACTIVE && !uc->wpending && !dc->rpaused;
    case D_REQ:
        if (dc->ex.close_after || dc->rpaused) {
            return false;
        }
        if (!dc->ex.body_done) {
            return uc && uc->state == U_ACTIVE && !uc->wpending;
        }
        return !(uc && uc->wpending);
    default:
        return false;
    }
}

void proxy_dread_update(struct proxy_dconn *dc)
{
    bool want = dread_want(dc);
    if (dc->state == D_CLOSING) {
        return;
    }
    if (want) {
        (void)sc_xport_read_start(dc->x);
    } else {
        sc_xport_read_stop(dc->x);
    }
}

/* Parses and starts requests from the buffer. A request answered at once (a local reply, a
 * fast upstream) finishes inside try_parse_head and asks for the next one; that is done here, in
 * a loop, so a buffer full of pipelined requests never nests calls. */
void proxy_parse_loop(struct proxy_dconn *dc)
{
    if (dc->in_parse) {
        dc->reparse = true;
        return;
    }
    dc->in_parse = true;
    do {
        dc->reparse = false;
        try_parse_head(dc);
    } while (dc->reparse && dc->state == D_HEAD);
    dc->in_parse = false;
}

static void try_parse_head(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    if (dc->state != D_HEAD || dc->in.end == dc->in.start) {
        return;
    }
    if (dc->in.p[dc->in.start] == 'P' && w->rt->listeners[dc->lidx].http2.enabled) {
        int h2 = proxy_h2_preface(dc);
        if (h2 != 0) {
            if (h2 > 0) {
                proxy_h2_start(dc); /* h2c with prior knowledge */
            }
            return;
        }
    }
    if (__builtin_expect(w->rt->listeners[dc->lidx].http2.only, 0)) {
        proxy_exch_begin(dc, true);
        dc->ex.close_after = true;
        dc->in.start = dc->in.end = 0;
        proxy_local_reply(&dc->ex, 505, "this listener serves HTTP/2 only (http2.only)", F_DPE);
        return;
    }
    struct sc_http_msg m = { .headers = w->hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http1_default_limits;
    lim.max_head = w->rt->max_request_head;
    lim.max_headers = w->rt->listeners[dc->lidx].max_headers;
    size_t avail = dc->in.end - dc->in.start;
    int rc = sc_http1_parse_request(dc->in.p + dc->in.start, avail, dc->last_len, &lim, &m,
                                    lim.max_headers, &err);
    if (rc == 0) {
        dc->last_len = avail;
        if (dc->eof) {
            proxy_dconn_close(dc); /* the rest of this request will never come */
            return;
        }
        if (avail >= w->rt->max_request_head) {
            rc = SC_EHTTP;
            err.status = 431;
            err.reason = "request head too large";
        } else {
            return;
        }
    }
    if (rc > 0 && proxy_underscores(w->rt, &m) != 0) {
        rc = SC_EHTTP;
        err.status = 400;
        err.reason = "header name with underscore (headers_with_underscores: reject)";
    }
    if (rc < 0) {
        /* Answer on a pseudo request so it is logged and counted like any other. */
        proxy_exch_begin(dc, true);
        dc->ex.close_after = true;
        dc->in.start = dc->in.end = 0;
        proxy_local_reply(&dc->ex, err.status ? err.status : 400,
                          err.reason ? err.reason : "bad request", F_DPE);
        return;
    }
    proxy_exchange_start(dc, &m, (size_t)rc);
}
void proxy_dconn_closed_one(struct proxy_dconn *dc)
{
    if (--dc->closes > 0) {
        return;
    }
    if (dc->h2s) {
        proxy_h2_stream_freed(dc); /* a stream is not a connection */
        return;
    }
    if (dc->h2) {
        proxy_h2_conn_freed(dc);
    }
    struct proxy_worker *w = dc->w;
    sc_metrics_gauge_add(dc->m_active, -1);
    sc_free(dc->cl->xfcc);
    dc->cl->xfcc = NULL;
    atomic_fetch_sub_explicit(&w->px->conns, 1, memory_order_relaxed);
    w->nconns--;
    proxy_dconn_recycle(dc);
    proxy_check_done(w);
}

void proxy_dconn_recycle(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    bool stream = dc->tx == NULL;
    dc->in.start = dc->in.end = 0;
    if (stream) {
        proxy_rbuf_keep(w, &dc->in);
        proxy_hbuf_keep(w, &dc->ex.head);
    } else {
        proxy_rbuf_put(w, &dc->in);
        proxy_hbuf_put(w, &dc->ex.head);
    }
    proxy_hbuf_put(w, &dc->out);
    proxy_hbuf_put(w, &dc->ex.copy);
    size_t *n = stream ? &w->nfree_sdc : &w->nfree_dc;
    if (*n < (stream ? MAX_FREE_STREAMS : MAX_FREE_DC) && !w->closed_all) {
        sc_list_append(stream ? &w->free_sdc : &w->free_dc, &dc->node);
        (*n)++;
    } else {
        proxy_dconn_free(dc);
    }
}

void proxy_dconn_free(struct proxy_dconn *dc)
{
    sc_free(dc->in.p);
    sc_buf_cleanup(&dc->out);
    sc_buf_cleanup(&dc->ex.head);
    sc_buf_cleanup(&dc->ex.copy);
    sc_free(dc->ex.path);
    sc_free(dc->ex.ch);
    sc_free(dc->od);
    if (dc->tx) {
        sc_free(dc->cl->trace); /* a connection's own client */
    } else {
        proxy_h2_stream_free(dc->h2s);
    }
    sc_free(dc); /* a proxy_dconn_conn's address too */
}

static void on_dconn_timer_closed(uv_handle_t *h)
{
    proxy_dconn_closed_one(h->data);
}

static void on_btimer_closed(uv_handle_t *h)
{
    struct proxy_dconn *dc = h->data;
    sc_free(h);
    dc->btimer = NULL;
    proxy_dconn_closed_one(dc);
}

static void on_dconn_closed(void *owner)
{
    struct proxy_dconn *dc = owner;
    if (dc->ext) {
        sc_free(dc->ext); /* an adopted chain's bottom, closed before its top reports */
        dc->ext = NULL;
    }
    proxy_dconn_closed_one(dc);
}

void proxy_dconn_close(struct proxy_dconn *dc)
{
    if (dc->state == D_CLOSING) {
        return;
    }
    if (dc->ex.rt) {
        if (!dc->ex.resp_done) {
            dc->ex.flags |= F_DC;
        }
        int st = dc->state;
        dc->state = D_CLOSING;
        proxy_finish_request(&dc->ex);
        dc->state = st;
    }
    if (dc->ex.uc) {
        proxy_uconn_close(dc->ex.uc);
    }
    dc->state = D_CLOSING;
    sc_list_remove(&dc->node);
    dc->closes = dc->btimer ? 3 : 2;
    if (dc->h2) {
        dc->closes += proxy_h2_conn_closing(dc);
    }
    if (dc->od && dc->od->resolving) {
        dc->closes++; /* on_dyn_resolved releases the object */
        uv_cancel((uv_req_t *)&dc->od->gai);
    }
    sc_xport_close(dc->x);
    uv_close((uv_handle_t *)&dc->timer, on_dconn_timer_closed);
    if (dc->btimer) {
        uv_close((uv_handle_t *)dc->btimer, on_btimer_closed);
    }
}
static void on_refused_closed(uv_handle_t *h)
{
    sc_free(h);
}

void proxy_h1_on_accept(uv_stream_t *server, int status)
{
    struct proxy_worker *w = server->data;
    if (status < 0) {
        sc_warn("accept failed", SC_LERR(status));
        return;
    }
    if (atomic_load_explicit(&w->px->conns, memory_order_relaxed) >= w->rt->max_connections) {
        /* Over the limit: take the connection off the queue and close it, so the kernel's accept
         * queue does not fill with clients that would wait for nothing. */
        uv_tcp_t *h = sc_malloc(sizeof(*h));
        uv_tcp_init(w->loop, h);
        if (uv_accept(server, (uv_stream_t *)h) == 0) {
            sc_warn("max_connections reached; connection refused",
                    SC_LI("max_connections", w->rt->max_connections));
        }
        uv_close((uv_handle_t *)h, on_refused_closed);
        return;
    }
    struct proxy_dconn *dc = dconn_new(w, (size_t)((uv_tcp_t *)server - w->listeners), NULL);
    if (uv_accept(server, (uv_stream_t *)&dc->tx->tcp) < 0) {
        proxy_dconn_close(dc);
        return;
    }
    dconn_start(dc, &dc->tx->tcp, NULL, NULL);
}

/* Feeds <n> bytes read before the hand-over to the new connection <dc>. */
static void adopt_bytes(struct proxy_dconn *dc, const char *p, size_t n)
{
    struct proxy_worker *w = dc->w;
    if (n > 0 && dc->state == D_HEAD) {
        proxy_rbuf_get(w, &dc->in);
        if (dc->in.cap - dc->in.end < n) {
            proxy_dconn_close(dc); /* more than a head can be: cannot happen from detection */
            return;
        }
        memcpy(dc->in.p + dc->in.end, p, n);
        dc->in.end += n;
        dc->head_start_ms = uv_now(w->loop);
        proxy_arm_timer(dc);
        proxy_parse_loop(dc);
    }
}

void proxy_h1_adopt(struct proxy_worker *w, size_t lidx, uv_os_sock_t fd,
                    const struct sockaddr_storage *peer, const char *peer_ip, const char *p,
                    size_t n)
{
    struct proxy_dconn *dc = dconn_new(w, lidx, NULL);
    if (uv_tcp_open(&dc->tx->tcp, fd) < 0) {
        close(fd);
        proxy_dconn_close(dc);
        return;
    }
    dconn_start(dc, &dc->tx->tcp, peer, peer_ip);
    adopt_bytes(dc, p, n);
}

void proxy_h1_adopt_tls(struct proxy_worker *w, size_t lidx, struct sc_tcp_xport *bottom,
                        struct sc_xport *top, const struct sockaddr_storage *peer,
                        const char *peer_ip, const char *p, size_t n)
{
    struct proxy_dconn *dc = dconn_new(w, lidx, top);
    dc->ext = bottom;
    top->cbs = &proxy_dconn_cbs;
    top->owner = dc;
    dc->cl->tls = top;
    dconn_start(dc, &bottom->tcp, peer, peer_ip);
    adopt_bytes(dc, p, n);
}

/* A downstream connection of listener <lidx> from the worker's free list or new, counted and
 * linked, its socket handle initialised but not yet holding a socket; with <top>, a chain made
 * elsewhere (its TLS established) takes the place of the connection's own socket. */
static struct proxy_dconn *dconn_new(struct proxy_worker *w, size_t lidx, struct sc_xport *top)
{
    struct proxy_dconn *dc = proxy_dconn_alloc(w, lidx, NULL);
    if (top) {
        dc->x = top;
    } else {
        sc_tcp_xport_init(dc->tx, w->loop, &proxy_dconn_cbs, dc);
        dc->x = &dc->tx->base;
    }
    sc_list_append(&w->conns, &dc->node);
    w->nconns++;
    atomic_fetch_add_explicit(&w->px->conns, 1, memory_order_relaxed);
    dc->m_active = w->rt->listeners[dc->lidx].m_cx_active;
    sc_metrics_gauge_add(dc->m_active, 1);
    return dc;
}

struct proxy_dconn *proxy_dconn_alloc(struct proxy_worker *w, size_t lidx, struct proxy_client *cl)
{
    bool stream = cl != NULL;
    struct sc_list *fl = stream ? &w->free_sdc : &w->free_dc;
    struct proxy_dconn *dc;
    struct proxy_dconn_conn *cc = NULL;
    if (!sc_list_empty(fl)) {
        dc = sc_list_entry(fl->next, struct proxy_dconn, node);
        sc_list_remove(&dc->node);
        struct sc_buf out = dc->out, head = dc->ex.head, copy = dc->ex.copy;
        struct rbuf in = dc->in; /* a stream's small head block (proxy_rbuf_keep), else none */
        char *path = dc->ex.path;
        struct proxy_chunked *ch = dc->ex.ch;
        struct proxy_odst *od = dc->od;
        if (stream) {
            w->nfree_sdc--;
            /* The exchange is left to proxy_exch_begin, which stream_new's caller runs before
             * anything reads it; <h2s> is kept for proxy_h2.c to ready. */
            struct proxy_h2s *h2s = dc->h2s;
            size_t ex_off = offsetof(struct proxy_dconn, ex), ex_end = ex_off + sizeof(dc->ex);
            memset(dc, 0, ex_off);
            memset((char *)dc + ex_end, 0, sizeof(*dc) - ex_end);
            dc->h2s = h2s;
        } else {
            w->nfree_dc--;
            cc = (struct proxy_dconn_conn *)dc;
            struct proxy_span_conn *tc = cc->cl.trace;
            memset(cc, 0, sizeof(*cc));
            cc->cl.trace = tc;
            proxy_span_conn_clear(tc);
        }
        dc->od = od;
        if (od) {
            od->checked = od->has_orig = od->stale = false; /* per connection */
        }
        dc->out = out;
        dc->in = in;
        dc->ex.path = path;
        dc->ex.ch = ch;
        dc->ex.head = head;
        dc->ex.copy = copy;
    } else {
        if (stream) {
            dc = SC_NEW(struct proxy_dconn);
        } else {
            cc = SC_NEW(struct proxy_dconn_conn);
            dc = &cc->dc;
        }
        sc_buf_init(&dc->out, 65536 + 8192);
        sc_buf_init(&dc->ex.head, 65536 + 8192);
        sc_buf_init(&dc->ex.copy, 0);
    }
    if (cc) {
        dc->tx = &cc->tx;
        dc->cl = &cc->cl;
    } else {
        dc->cl = cl;
    }
    dc->w = w;
    dc->lidx = lidx;
    dc->ex.w = w;
    dc->ex.dc = dc;
    dc->ex.cl = dc->cl;
    uv_timer_init(w->loop, &dc->timer);
    dc->timer.data = dc;
    dc->state = D_HEAD;
    return dc;
}

/* <dc> holds its socket <tcp>, accepted from one of the worker's listeners (directly or through
 * the TCP relay's detection), so it has TCP_NODELAY from the listener (sc_tcp_listen): takes the
 * client's address (<peer> and <peer_ip> when the relay read it already, else from the socket),
 * stacks TLS (unless an adopted chain has it already), starts reading. */
static void dconn_start(struct proxy_dconn *dc, uv_tcp_t *tcp, const struct sockaddr_storage *peer,
                        const char *peer_ip)
{
    struct proxy_worker *w = dc->w;
    if (peer && peer_ip) {
        dc->cl->addr = *peer;
        snprintf(dc->cl->ip, sizeof(dc->cl->ip), "%s", peer_ip);
    } else {
        sc_tcp_peer_ip(tcp, &dc->cl->addr, dc->cl->ip, sizeof(dc->cl->ip));
    }
    dc->last_activity = uv_now(w->loop);
    if (w->rt->listeners[dc->lidx].tls.src && !dc->ext) {
        proxy_tls_accepted(dc);
    }
    proxy_arm_timer(dc);
    proxy_dread_update(dc);
}

static void on_dhandshake(void *owner, int status)
{
    struct proxy_dconn *dc = owner;
    if (dc->state != D_CLOSING) {
        proxy_tls_handshake_done(dc, status);
    }
}

/* ---- workers ---- */

/* ---- the HTTP/1 side of the exchange (struct proxy_down_ops) ---- */

static bool h1_can_reply(struct proxy_exch *ex)
{
    return !ex->dc->wpending;
}

static void h1_reply(struct proxy_exch *ex, int status, struct sc_str body)
{
    struct proxy_dconn *dc = ex->dc;
    bool close = ex->close_after || dc->w->draining || !ex->keep_alive;
    ex->close_after = close;
    proxy_hbuf_get(dc->w, &dc->out);
    sc_buf_reset(&dc->out);
    const char *ct = ex->reply_ctype ? ex->reply_ctype : "text/plain; charset=utf-8";
    struct proxy_hsink gw = proxy_h1_hsink(&dc->out);
    gw.close = close;
    /* A gRPC call gets gRPC's trailers-only answer, its status in the head (as over HTTP/2). */
    if (ex->grpc_web ? proxy_grpc_web_local_reply(ex, ex->grpc_web, status, body, &gw) < 0
        : ex->grpc   ? proxy_grpc_local_reply(ex, status, body, &gw) < 0
                     : proxy_route_policy_write_local(ex, &dc->out, status, ct, body, close) < 0) {
        proxy_dconn_close(dc);
        return;
    }
    if (ex->is_head) {
        /* A response to HEAD has no content (RFC 9110 9.3.2); Content-Length stays, as GET's. */
        dc->out.len -= body.len;
    }
    proxy_dread_update(dc);
    proxy_arm_timer(dc);
    ex->bytes_out += dc->out.len;
    uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
    if (proxy_dwrite(dc, &iov, 1, 0, DN_LOCAL) == 0) {
        proxy_finish_request(ex);
    }
}

bool proxy_h1_grpc_end(struct proxy_exch *ex, int code, const char *msg)
{
    struct proxy_dconn *dc = ex->dc;
    if (dc->wpending || ex->rbody != B_CHUNKED || ex->dechunk ||
        !sc_http1_chunked_at_boundary(&ex->ch->resp)) {
        return false;
    }
    proxy_hbuf_get(dc->w, &dc->out);
    sc_buf_reset(&dc->out);
    char num[24];
    int n = snprintf(num, sizeof(num), "0\r\ngrpc-status: %d\r\n", code);
    int rc = sc_buf_append(&dc->out, num, (size_t)n);
    rc |= sc_buf_append(&dc->out, "grpc-message: ", 14);
    rc |= proxy_grpc_message_encode(&dc->out, sc_str_c(msg));
    rc |= sc_buf_append(&dc->out, "\r\n\r\n", 4);
    if (rc) {
        sc_buf_reset(&dc->out);
        return false;
    }
    ex->grpc_status = (uint8_t)(code + 1);
    if (ex->uc) {
        proxy_uconn_close(ex->uc); /* the rest of the upstream's answer is dropped */
    }
    ex->resp_done = true;
    if (!ex->body_done) {
        ex->close_after = true; /* the rest of the request body cannot be skipped safely */
    }
    ex->bytes_out += dc->out.len;
    uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
    if (proxy_dwrite(dc, &iov, 1, 0, DN_LOCAL) == 0) {
        proxy_finish_request(ex);
    }
    return true;
}

/* The exchange is logged: the connection reads the next request (a pipelined one may be here
 * already) or closes. */
static void h1_finish(struct proxy_exch *ex)
{
    struct proxy_dconn *dc = ex->dc;
    if (!dc->wpending) {
        proxy_hbuf_put(dc->w, &dc->out); /* a pending write still reads it */
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    if (ex->close_after || dc->w->draining || !ex->keep_alive || dc->state == D_TUNNEL) {
        proxy_dconn_close(dc);
        return;
    }
    dc->state = D_HEAD;
    dc->last_len = 0;
    if (dc->in.start == dc->in.end) {
        dc->in.start = dc->in.end = 0;
        proxy_rbuf_put(dc->w, &dc->in);
    }
    dc->head_start_ms = uv_now(dc->w->loop);
    dc->rpaused = dc->eof;
    if (dc->eof && dc->in.end == dc->in.start) {
        proxy_dconn_close(dc);
        return;
    }
    proxy_arm_timer(dc);
    proxy_dread_update(dc);
    if (dc->in.end > dc->in.start) {
        proxy_parse_loop(dc); /* a pipelined request is already here */
    }
}

static void h1_abort(struct proxy_exch *ex)
{
    proxy_dconn_close(ex->dc);
}

static void h1_read_update(struct proxy_exch *ex)
{
    proxy_dread_update(ex->dc);
}

static void h1_arm_timer(struct proxy_exch *ex)
{
    proxy_arm_timer(ex->dc);
}

const struct proxy_down_ops proxy_h1_down = {
    .can_reply = h1_can_reply,
    .reply = h1_reply,
    .finish = h1_finish,
    .abort = h1_abort,
    .read_update = h1_read_update,
    .arm_timer = h1_arm_timer,
};

/* ---- the connection's one timer: idle, head, route deadline, stream idle ---- */

static void on_dtimer(uv_timer_t *t);

/* Arms the connection's one timer for its current state; on_dtimer re-evaluates when it fires,
 * so activity that moves a deadline later costs nothing until then. */
void proxy_arm_timer(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    struct proxy_rt *rt = dc->ex.rt ? dc->ex.rt : w->rt;
    uint64_t now = uv_now(w->loop), deadline;
    struct proxy_exch *r = &dc->ex;
    switch (dc->state) {
    case D_HEAD:
        /* A TLS handshake has the head's deadline: a client that never finishes it is not an
         * idle keep-alive connection. */
        deadline = dc->in.end == dc->in.start && !dc->handshaking && !dc->sniff
                       ? dc->last_activity + rt->idle_timeout_ms
                       : dc->head_start_ms + rt->request_headers_timeout_ms;
        break;
    case D_REQ:
        if (!r->resp_head_sent && r->body_done && r->route && r->route->timeout_ms) {
            deadline = r->body_done_ms + r->route->timeout_ms;
        } else {
            deadline = dc->last_activity + rt->stream_idle_timeout_ms;
        }
        if (r->grpc_deadline && r->grpc_deadline < deadline) {
            deadline = r->grpc_deadline; /* a gRPC call's own, the route's timeout its cap */
        }
        break;
    case D_TUNNEL:
        deadline = dc->last_activity + rt->stream_idle_timeout_ms;
        break;
    default:
        return;
    }
    /* Already armed for this deadline or an earlier one: on_dtimer re-evaluates when it fires,
     * so the deadlines each request moves later cost no timer-heap work. */
    if (dc->timer_due && dc->timer_due <= deadline) {
        return;
    }
    dc->timer_due = deadline > now ? deadline : now;
    if (dc->h2s) {
        proxy_h2_stream_due(dc); /* its connection's timer sweeps the streams */
        return;
    }
    uv_timer_start(&dc->timer, on_dtimer, dc->timer_due - now, 0);
}

static void on_dtimer(uv_timer_t *t)
{
    proxy_dconn_timeout(t->data);
}

void proxy_dconn_timeout(struct proxy_dconn *dc)
{
    dc->timer_due = 0;
    struct proxy_worker *w = dc->w;
    struct proxy_exch *r = &dc->ex;
    struct proxy_rt *rt = r->rt ? r->rt : w->rt;
    uint64_t now = uv_now(w->loop);
    switch (dc->state) {
    case D_HEAD:
        if (dc->handshaking || (dc->sniff && dc->in.end == dc->in.start)) {
            if (now < dc->head_start_ms + rt->request_headers_timeout_ms) {
                proxy_arm_timer(dc);
                return;
            }
            proxy_dconn_close(dc); /* no HTTP to answer on yet */
            return;
        }
        if (dc->in.end == dc->in.start) {
            if (now < dc->last_activity + rt->idle_timeout_ms) {
                proxy_arm_timer(dc);
                return;
            }
            proxy_dconn_close(dc);
            return;
        }
        if (now < dc->head_start_ms + rt->request_headers_timeout_ms) {
            proxy_arm_timer(dc); /* armed for an earlier deadline of the connection */
            return;
        }
        dc->ex.close_after = true;
        dc->in.start = dc->in.end = 0;
        proxy_exch_begin(dc, true); /* answered on a pseudo request, logged and counted */
        proxy_local_reply(&dc->ex, 408, "request head timeout", F_DPE);
        return;
    case D_REQ: {
        /* A gRPC call's deadline (proxy_grpc.c) runs until its answer is complete: a call whose
         * answer streams already is reset, as the client's own deadline would end it. */
        bool grpc_due = r->grpc_deadline && now >= r->grpc_deadline;
        if (grpc_due || (!r->resp_head_sent && r->body_done && r->route && r->route->timeout_ms)) {
            if (!grpc_due && now < r->body_done_ms + r->route->timeout_ms) {
                proxy_arm_timer(dc);
                return;
            }
            if (r->cluster) {
                sc_metrics_counter_inc(r->cluster->m_timeout);
            }
            if (r->retries > 0) {
                r->flags |= F_URX;
            }
            if (r->resp_head_sent) {
                r->flags |= F_UT;
                if (!grpc_due || !proxy_grpc_deadline_end(r)) {
                    proxy_dconn_close(dc);
                }
                return;
            }
            proxy_local_reply(&dc->ex, 504,
                              grpc_due ? "gRPC deadline exceeded" : "upstream request timeout",
                              F_UT);
            return;
        }
    }
        /* fallthrough */
    case D_TUNNEL:
        if (now < dc->last_activity + rt->stream_idle_timeout_ms) {
            proxy_arm_timer(dc);
            return;
        }
        if (!r->resp_head_sent) {
            proxy_local_reply(&dc->ex, 504, "stream idle timeout", F_SI);
        } else {
            r->flags |= F_SI;
            proxy_dconn_close(dc);
        }
        return;
    default:
        return;
    }
}
