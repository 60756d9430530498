// SPDX-License-Identifier: Apache-2.0
// The exchange: one request from the moment its head is parsed until its log line is written.
// It routes the request, applies the route's policy, picks tries (retries with backoff and the
// retry budget), answers locally when the proxy itself must (4xx/5xx with a reason), keeps the
// request's timers (head, route deadline, stream idle) and writes the access log and metrics.
// Codecs (proxy_h1.c) feed it parsed heads and body progress; it never touches a socket itself.
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
#include "roles/proxy/proxy_route_policy.h"

void proxy_on_per_try_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_dconn *dc = uc->dc;
    if (!dc) {
        proxy_uconn_close(uc);
        return;
    }
    sc_counter_inc(uc->ep->cluster->m_timeout);
    proxy_attempt_failed(dc, COND_TIMEOUT, F_UT, "upstream per-try timeout");
}

static void on_backoff(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    if (dc->state == D_REQ && !dc->uc) {
        proxy_attempt(dc);
    }
}

void proxy_btimer_start(struct proxy_dconn *dc, uint64_t ms)
{
    if (!dc->btimer) {
        dc->btimer = SC_NEW(uv_timer_t);
        uv_timer_init(dc->w->loop, dc->btimer);
        dc->btimer->data = dc;
    }
    uv_timer_start(dc->btimer, on_backoff, ms, 0);
}

void proxy_btimer_stop(struct proxy_dconn *dc)
{
    if (dc->btimer) {
        uv_timer_stop(dc->btimer);
    }
}

static bool retriable_status(const struct proxy_route *rt, int status)
{
    if ((rt->retry_on & PROXY_RETRY_5XX) && status >= 500) {
        return true;
    }
    if ((rt->retry_on & PROXY_RETRY_GATEWAY) && status >= 502 && status <= 504) {
        return true;
    }
    if (rt->retry_on & PROXY_RETRY_STATUS) {
        for (size_t i = 0; i < rt->nstatus_codes; i++) {
            if (rt->status_codes[i] == status) {
                return true;
            }
        }
    }
    return false;
}

bool proxy_may_retry(struct proxy_dconn *dc, int cond, int status)
{
    struct proxy_req *r = &dc->req;
    const struct proxy_route *rt = r->route;
    if (r->resp_head_sent || !r->retriable || r->retries >= rt->num_retries || dc->w->closed_all) {
        return false;
    }
    switch (cond) {
    case COND_CONNECT:
        return (rt->retry_on &
                (PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0;
    case COND_RESET:
        return (rt->retry_on & (PROXY_RETRY_RESET | PROXY_RETRY_5XX)) != 0;
    case COND_TIMEOUT:
        return (rt->retry_on & (PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0;
    case COND_STATUS:
        return retriable_status(rt, status);
    default:
        return false;
    }
}

void proxy_schedule_retry(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    const struct proxy_route *rt = r->route;
    uint64_t interval = rt->base_interval_ms << (r->retries < 16 ? r->retries : 16);
    if (interval > rt->max_interval_ms) {
        interval = rt->max_interval_ms;
    }
    /* Full jitter in [interval/2, interval]: spreads retry storms, keeps the backoff growing. */
    uint64_t delay = interval / 2 + (interval ? proxy_rand(dc->w) % (interval / 2 + 1) : 0);
    r->retries++;
    sc_counter_inc(r->cluster->m_retry);
    proxy_btimer_start(dc, delay);
    proxy_dread_update(dc);
}

void proxy_attempt_failed(struct proxy_dconn *dc, int cond, unsigned flag, const char *why)
{
    struct proxy_req *r = &dc->req;
    struct proxy_uconn *uc = dc->uc;
    bool stale = uc && uc->reused && !uc->got_bytes && cond == COND_RESET;
    if (uc) {
        r->upstream_total_ns += proxy_now_ns() - r->upstream_ns;
        proxy_uconn_close(uc);
    }
    sc_debug("upstream try failed", SC_LS("reason", why),
             SC_LS("endpoint", r->ep ? r->ep->name : ""));
    if (r->ep && r->ep->st && !stale) {
        /* Local-origin failures count as the gateway error a client would have seen. */
        proxy_outlier_record(r->ep, (flag & F_UT) ? 504 : cond ? 503 : 502, uv_now(dc->w->loop));
    }
    /* A pooled connection the server closed while idle is not the request's fault: try once
     * more on a fresh connection, without counting a retry, when the request can be replayed. */
    if (stale && r->retriable && !r->free_retry_used && !r->resp_head_sent) {
        r->free_retry_used = true;
        r->ep = NULL;
        proxy_attempt(dc);
        return;
    }
    if (proxy_may_retry(dc, cond, 0) && proxy_breaker_retry(r)) {
        proxy_schedule_retry(dc);
        return;
    }
    if (r->retries > 0 || (cond && r->route->num_retries > 0)) {
        flag |= F_URX;
    }
    if (r->resp_head_sent) {
        r->flags |= flag;
        proxy_dconn_close(dc);
        return;
    }
    int status = (flag & F_UT) ? 504 : 502;
    proxy_local_reply(dc, status, why, flag);
}

void proxy_request_body_done(struct proxy_dconn *dc)
{
    dc->req.body_done = true;
    dc->req.body_done_ms = uv_now(dc->w->loop);
    proxy_arm_timer(dc);
    if (dc->req.pol.mirror) {
        proxy_mirror_start(dc);
    }
}
void proxy_exchange_start(struct proxy_dconn *dc, const struct sc_http_msg *m, size_t headlen)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    struct sc_buf head = r->head, copy = r->copy;
    memset(r, 0, sizeof(*r));
    r->head = head;
    r->copy = copy;
    sc_buf_reset(&r->head);
    sc_buf_reset(&r->copy);
    r->active = NULL;
    r->rt = proxy_rt_ref(w->rt);
    r->lsn = &r->rt->listeners[dc->lidx];
    r->start_ns = proxy_now_ns();
    r->minor = m->minor_version;
    r->keep_alive = m->keep_alive;
    r->is_head = sc_str_eq(m->method, SC_STR("HEAD"));
    r->is_connect = sc_str_eq(m->method, SC_STR("CONNECT"));
    r->upgrade = m->upgrade && !r->is_connect;
    r->expect = m->expect_continue && m->minor_version == 1;
    size_t ml = m->method.len < sizeof(r->method) - 1 ? m->method.len : sizeof(r->method) - 1;
    memcpy(r->method, m->method.p, ml);
    r->method[ml] = '\0';
    r->body = m->body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
              : m->body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                                                : B_NONE;
    r->remaining = m->content_length;
    if (r->body == B_CHUNKED) {
        sc_http1_chunked_init(&r->ch);
    }
    if (r->body == B_LENGTH && r->remaining == 0) {
        r->body = B_NONE;
    }
    r->copy.max = r->rt->retry_buffer;
    r->active = NULL;
    dc->state = D_REQ;
    dc->in.start += headlen;
    dc->last_len = 0;
    dc->last_activity = uv_now(w->loop);
    r->active = NULL;
    r->route = &r->lsn->noroute;
    r->status = 0;
    r->active = NULL;
    r->resp_keep_alive = false;

    struct sc_str origin;
    struct sc_str path = proxy_target_path(m->target, &origin);
    /* The access log's path: what goes upstream (an absolute-form target's userinfo and
     * authority stay out of the log), or CONNECT's authority. */
    struct sc_str logged = r->is_connect ? m->target : origin;
    size_t slash = logged.len && logged.p[0] == '?';
    r->path[0] = '/';
    r->path_len =
        slash + (logged.len < sizeof(r->path) - slash ? logged.len : sizeof(r->path) - slash);
    memcpy(r->path + slash, logged.p, r->path_len - slash);

    struct proxy_listener *l = r->lsn;
    struct proxy_route *found = NULL;
    for (size_t i = 0; i < l->nroutes && !found; i++) {
        if (proxy_route_matches(&l->routes[i], m, path, w->md)) {
            found = &l->routes[i];
        }
    }
    if (!found) {
        dc->close_after = r->body != B_NONE;
        proxy_local_reply(dc, 404, "no route matched the request", F_NR);
        return;
    }
    r->route = found;
    r->cluster = found->cluster;
    if (found->pol || r->lsn->rl) {
        int pst = 0;
        const char *why = NULL;
        unsigned pfl = 0;
        if (proxy_route_policy_request(dc, m, &pst, &why, &pfl) != PROXY_ROUTE_POL_GO) {
            /* A bodyless request keeps its connection: a 429 is no reason to reconnect. */
            dc->close_after = r->body != B_NONE;
            r->body_done = r->body == B_NONE;
            proxy_local_reply(dc, pst, why, pfl);
            return;
        }
    }
    r->retriable = (proxy_idempotent(m->method) || found->retry_non_idempotent) && !r->upgrade &&
                   !r->is_connect && r->rt->retry_buffer > 0;
    if (r->cluster->original_dst) {
        /* The destination: an absolute-form target's authority, else Host; port 80 default. */
        struct sc_str auth = m->host;
        bool absolute = false;
        struct sc_str ta =
            r->is_connect ? SC_STR_NULL : proxy_target_authority(m->target, &absolute);
        if (absolute) {
            auth = ta; /* userinfo, path and query left out */
        } else if (r->is_connect) {
            auth = m->target;
        }
        /* The destination names the endpoint in the access log and metrics: what the config
         * loader admits for an endpoint (proxy_endpoint_check), no more. The Host header was
         * checked by the parser already; an absolute-form authority only for visible ASCII. */
        if (!proxy_endpoint_chars_ok(auth)) {
            dc->close_after = r->body != B_NONE;
            proxy_local_reply(dc, 400, "invalid destination in the request target", F_DPE);
            return;
        }
        if (!dc->od) {
            dc->od = SC_NEW(struct proxy_odst);
        }
        size_t n = auth.len < sizeof(dc->od->name) - 1 ? auth.len : sizeof(dc->od->name) - 1;
        if (n) {
            memcpy(dc->od->name, auth.p, n);
        }
        dc->od->name[n] = '\0';
        atomic_store(&dc->od->ep.naddrs, 0);
    } else if (r->cluster->neps == 0) {
        dc->close_after = r->body != B_NONE;
        proxy_local_reply(dc, 503, "no healthy upstream", F_UH);
        return;
    }
    uint64_t maxb = r->rt->max_request_body;
    if (maxb && r->body == B_LENGTH && r->remaining > maxb) {
        dc->close_after = true;
        proxy_local_reply(dc, 413, "request body larger than max_request_body", F_DPE);
        return;
    }
    proxy_hbuf_get(w, &r->head);
    if (r->body != B_NONE && r->retriable) {
        proxy_hbuf_get(w, &r->copy);
    }
    if (proxy_build_req_head(dc, m, origin) < 0) {
        dc->close_after = true;
        proxy_local_reply(dc, 431, "request head too large after forwarding headers were added", F_DPE);
        return;
    }
    if (!proxy_breaker_request(r->cluster, r)) {
        dc->close_after = r->body != B_NONE;
        proxy_local_reply(dc, 503, "upstream overflow: max_requests", F_UO);
        return;
    }
    if (r->body == B_NONE) {
        proxy_request_body_done(dc);
    } else {
        proxy_arm_timer(dc);
    }
    if (r->pol.delay_ms) {
        /* Fault injection. The loop's cached time may be behind the request's start. */
        uv_update_time(w->loop);
        proxy_btimer_start(dc, r->pol.delay_ms);
    } else {
        proxy_attempt(dc);
    }
    proxy_dread_update(dc);
}

/* Answers the request from the proxy itself: 4xx/5xx with the reason as the body. */
void proxy_local_reply(struct proxy_dconn *dc, int status, const char *reason, unsigned flags)
{
    struct proxy_req *r = &dc->req;
    r->flags |= flags;
    proxy_btimer_stop(dc);
    if (dc->uc) {
        proxy_uconn_close(dc->uc);
    }
    if (r->resp_head_sent || dc->wpending) {
        proxy_dconn_close(dc);
        return;
    }
    if (!r->body_done) {
        dc->close_after = true;
    }
    bool close = dc->close_after || dc->w->draining || !r->keep_alive;
    dc->close_after = close;
    r->status = status;
    r->resp_head_sent = true;
    r->resp_done = true;
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", reason ? reason : sc_http_reason(status));
    if (n < 0 || (size_t)n >= sizeof(body)) {
        n = (int)sizeof(body) - 1;
    }
    proxy_hbuf_get(dc->w, &dc->out);
    sc_buf_reset(&dc->out);
    if (proxy_route_policy_write_local(dc, &dc->out, status, "text/plain; charset=utf-8",
                                       sc_str_n(body, (size_t)n), close) < 0) {
        proxy_dconn_close(dc);
        return;
    }
    proxy_dread_update(dc);
    proxy_arm_timer(dc);
    r->bytes_out += dc->out.len;
    uv_buf_t iov = uv_buf_init(dc->out.p, (unsigned)dc->out.len);
    int rc = proxy_dwrite(dc, &iov, 1, 0, DN_LOCAL);
    if (rc == 0) {
        proxy_finish_request(dc);
    }
}

/* ---- access log and metrics ---- */
void proxy_finish_request(struct proxy_dconn *dc)
{
    struct proxy_req *r = &dc->req;
    if (!r->rt) {
        return;
    }
    double dur = (double)(proxy_now_ns() - r->start_ns) / 1e9;
    if (r->status == 0 && (r->flags & F_DC)) {
        r->status = 0;
    }
    proxy_count_request(dc, dur);
    if (r->rt->access_log) {
        proxy_access_log(dc, dur);
    }
    proxy_endpoint_release(r);
    proxy_breaker_release(r);
    proxy_rt_unref(r->rt);
    r->rt = NULL;
    if (dc->od && dc->od->resolving && !dc->od->stale) {
        dc->od->stale = true; /* its answer is for a request that is over */
        uv_cancel((uv_req_t *)&dc->od->gai);
    }
    /* The head buffers go back to the worker's pool (a pending write still reads dc->out). */
    proxy_hbuf_put(dc->w, &r->copy);
    proxy_hbuf_put(dc->w, &r->head);
    if (!dc->wpending) {
        proxy_hbuf_put(dc->w, &dc->out);
    }
    if (dc->state == D_CLOSING) {
        return;
    }
    proxy_btimer_stop(dc);
    if (dc->close_after || dc->w->draining || !r->keep_alive || dc->state == D_TUNNEL) {
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

/* ---- downstream connections ---- */
static void on_dtimer(uv_timer_t *t);

/* Arms the connection's one timer for its current state; on_dtimer re-evaluates when it fires,
 * so activity that moves a deadline later costs nothing until then. */
void proxy_arm_timer(struct proxy_dconn *dc)
{
    struct proxy_worker *w = dc->w;
    struct proxy_rt *rt = dc->req.rt ? dc->req.rt : w->rt;
    uint64_t now = uv_now(w->loop), deadline;
    struct proxy_req *r = &dc->req;
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
    uv_timer_start(&dc->timer, on_dtimer, dc->timer_due - now, 0);
}

static void on_dtimer(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    dc->timer_due = 0;
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
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
        dc->close_after = true;
        dc->in.start = dc->in.end = 0;
        {
            struct sc_buf head = r->head, copy = r->copy;
            memset(r, 0, sizeof(*r));
            r->head = head;
            r->copy = copy;
        }
        r->rt = proxy_rt_ref(w->rt);
        r->lsn = &r->rt->listeners[dc->lidx];
        r->route = &r->lsn->noroute;
        r->start_ns = proxy_now_ns();
        r->minor = 1;
        snprintf(r->method, sizeof(r->method), "-");
        dc->state = D_REQ;
        proxy_local_reply(dc, 408, "request head timeout", F_DPE);
        return;
    case D_REQ:
        if (!r->resp_head_sent && r->body_done && r->route && r->route->timeout_ms) {
            if (now < r->body_done_ms + r->route->timeout_ms) {
                proxy_arm_timer(dc);
                return;
            }
            if (r->cluster) {
                sc_counter_inc(r->cluster->m_timeout);
            }
            if (r->retries > 0) {
                r->flags |= F_URX;
            }
            proxy_local_reply(dc, 504, "upstream request timeout", F_UT);
            return;
        }
        /* fallthrough */
    case D_TUNNEL:
        if (now < dc->last_activity + rt->stream_idle_timeout_ms) {
            proxy_arm_timer(dc);
            return;
        }
        if (!r->resp_head_sent) {
            proxy_local_reply(dc, 504, "stream idle timeout", F_SI);
        } else {
            r->flags |= F_SI;
            proxy_dconn_close(dc);
        }
        return;
    default:
        return;
    }
}
