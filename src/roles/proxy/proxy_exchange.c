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
#include <stddef.h>
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
#include "roles/proxy/proxy_route_policy.h"

void proxy_on_per_try_timeout(uv_timer_t *t)
{
    struct proxy_uconn *uc = t->data;
    struct proxy_dconn *dc = uc->ex ? uc->ex->dc : NULL;
    if (!dc) {
        proxy_uconn_close(uc);
        return;
    }
    sc_metrics_counter_inc(uc->ep->cluster->m_timeout);
    proxy_trace_event(&dc->ex, "per_try_timeout");
    proxy_attempt_failed(&dc->ex, COND_TIMEOUT, F_UT, "upstream per-try timeout");
}

static void on_backoff(uv_timer_t *t)
{
    struct proxy_dconn *dc = t->data;
    if (dc->state == D_REQ && !dc->ex.uc) {
        proxy_attempt(&dc->ex);
    }
}

void proxy_btimer_start(struct proxy_exch *r, uint64_t ms)
{
    struct proxy_dconn *dc = r->dc;
    if (!dc->btimer) {
        dc->btimer = SC_NEW(uv_timer_t);
        uv_timer_init(dc->w->loop, dc->btimer);
        dc->btimer->data = dc;
    }
    uv_timer_start(dc->btimer, on_backoff, ms, 0);
}

void proxy_btimer_stop(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
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

bool proxy_may_retry(struct proxy_exch *r, int cond, int status)
{
    struct proxy_dconn *dc = r->dc;
    const struct proxy_route *rt = r->route;
    if (r->resp_head_sent || !r->retriable || r->retries >= rt->num_retries || dc->w->closed_all) {
        return false;
    }
    switch (cond) {
    case COND_CONNECT:
        return (rt->retry_on &
                (PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0;
    case COND_RESET:
        /* A gRPC call is not idempotent unless the route says so: once sent, a reset may
         * have been processed (a connection refused or a stream refused is another matter). */
        return (rt->retry_on & (PROXY_RETRY_RESET | PROXY_RETRY_5XX)) != 0 &&
               (!r->grpc || rt->retry_non_idempotent);
    case COND_TIMEOUT:
        return (rt->retry_on & (PROXY_RETRY_5XX | PROXY_RETRY_GATEWAY)) != 0 &&
               (!r->grpc || rt->retry_non_idempotent);
    case COND_STATUS:
        return retriable_status(rt, status);
    case COND_GRPC:
        return true; /* the status decides (proxy_grpc.c) */
    default:
        return false;
    }
}

void proxy_schedule_retry(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
    const struct proxy_route *rt = r->route;
    uint64_t interval = rt->base_interval_ms << (r->retries < 16 ? r->retries : 16);
    if (interval > rt->max_interval_ms) {
        interval = rt->max_interval_ms;
    }
    /* Full jitter in [interval/2, interval]: spreads retry storms, keeps the backoff growing. */
    uint64_t delay = interval / 2 + (interval ? proxy_rand(dc->w) % (interval / 2 + 1) : 0);
    r->retries++;
    sc_metrics_counter_inc(r->cluster->m_retry);
    proxy_trace_event(r, "retry");
    proxy_btimer_start(r, delay);
    r->down->read_update(r);
}

void proxy_attempt_failed(struct proxy_exch *r, int cond, unsigned flag, const char *why)
{
    struct proxy_dconn *dc = r->dc;
    struct proxy_uconn *uc = r->uc;
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
        proxy_attempt(r);
        return;
    }
    if (proxy_may_retry(r, cond, 0) && proxy_breaker_retry(r)) {
        proxy_schedule_retry(r);
        return;
    }
    if (r->retries > 0 || (cond && r->route->num_retries > 0)) {
        flag |= F_URX;
    }
    if (r->resp_head_sent) {
        r->flags |= flag;
        r->down->abort(r);
        return;
    }
    int status = (flag & F_UT) ? 504 : 502;
    proxy_local_reply(r, status, why, flag);
}

void proxy_request_body_done(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
    r->body_done = true;
    r->body_done_ms = uv_now(dc->w->loop);
    r->down->arm_timer(r);
    if (r->pol.mirror) {
        proxy_mirror_start(r);
    }
}
/* Zeroes <r> but for what is written before it is read: the chunked decoders' and the access
 * log's path blocks (kept) and the request id (read up to their lengths, which are zeroed). A
 * field added between them fails the assertion instead of staying unzeroed. */
#define EX_OFF(f) offsetof(struct proxy_exch, f)
#define EX_END(f) (EX_OFF(f) + sizeof(((struct proxy_exch *)0)->f))
_Static_assert(EX_OFF(path) == EX_END(ch) && EX_OFF(path_len) == EX_END(path) &&
                   EX_OFF(request_id) == EX_END(path_len),
               "ch, path, path_len and request_id must be adjacent (zero_exch)");

static inline void zero_exch(struct proxy_exch *r)
{
    char *p = (char *)r;
    memset(p, 0, EX_OFF(ch));
    r->path_len = 0;
    memset(p + EX_END(request_id), 0, sizeof(*r) - EX_END(request_id));
}

struct proxy_chunked *proxy_exch_chunked(struct proxy_exch *r)
{
    if (!r->ch) {
        r->ch = SC_NEW(struct proxy_chunked);
    }
    return r->ch;
}

void proxy_exch_begin(struct proxy_dconn *dc, bool pseudo)
{
    struct proxy_exch *r = &dc->ex;
    struct sc_buf head = r->head, copy = r->copy;
    zero_exch(r);
    r->w = dc->w;
    r->dc = dc;
    r->cl = dc->cl;
    r->head = head;
    r->copy = copy;
    sc_buf_reset(&r->head);
    sc_buf_reset(&r->copy);
    r->rt = proxy_rt_ref(dc->w->rt);
    r->lsn = &r->rt->listeners[dc->lidx];
    r->route = &r->lsn->noroute;
    r->start_ns = proxy_now_ns();
    r->down = &proxy_h1_down;
    if (dc->h2s) {
        proxy_h2_exch_begin(r);
    }
    if (pseudo) {
        r->minor = 1;
        snprintf(r->method, sizeof(r->method), "-");
        dc->state = D_REQ;
    }
}

void proxy_exchange_start(struct proxy_dconn *dc, const struct sc_http_msg *m, size_t headlen)
{
    struct proxy_worker *w = dc->w;
    struct proxy_exch *r = &dc->ex;
    proxy_exch_begin(dc, false);
    r->minor = m->minor_version;
    r->keep_alive = m->keep_alive;
    r->is_head = sc_str_eq(m->method, SC_STR("HEAD"));
    r->is_connect = sc_str_eq(m->method, SC_STR("CONNECT"));
    r->upgrade = m->upgrade && !r->is_connect;
    r->expect = m->expect_continue && m->minor_version == 1;
    if (r->lsn->grpc_web) {
        r->grpc_web = (uint8_t)proxy_grpc_web_kind(m); /* the proxy's own answers are gRPC-Web */
    }
    if (!r->down_h2 && m->minor_version == 1 && m->method.len == 4 &&
        memcmp(m->method.p, "POST", 4) == 0) {
        /* gRPC from an HTTP/1.1 client (as Envoy takes it): a call as over HTTP/2. */
        const struct sc_http_header *ct = sc_http1_find(m, SC_STR("content-type"), NULL);
        r->grpc = ct && proxy_grpc_is(ct->value);
    }
    size_t ml = m->method.len < sizeof(r->method) - 1 ? m->method.len : sizeof(r->method) - 1;
    memcpy(r->method, m->method.p, ml);
    r->method[ml] = '\0';
    r->body = m->body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
              : m->body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                                                : B_NONE;
    r->remaining = m->content_length;
    if (r->body == B_CHUNKED) {
        struct sc_http1_chunked *ch = &proxy_exch_chunked(r)->req;
        sc_http1_chunked_init(ch);
        ch->strict_trailers = true; /* forwarded: no framing, routing or credentials there */
    }
    if (r->body == B_LENGTH && r->remaining == 0) {
        r->body = B_NONE;
    }
    r->copy.max = r->rt->retry_buffer;
    dc->state = D_REQ;
    dc->in.start += headlen;
    dc->last_len = 0;
    dc->last_activity = uv_now(w->loop);

    /* An origin-form target's path part is found by the normaliser's scan (proxy_authz_request),
     * not searched for twice. */
    struct sc_str origin = m->target, path = m->target;
    if (r->is_connect || !origin.len || origin.p[0] != '/') {
        path = proxy_target_path(m->target, &origin);
    }
    const char *azwhy = NULL;
    unsigned azfl = 0;
    struct sc_str raw = sc_str_n(dc->in.p + dc->in.start - headlen, headlen);
    int azst = proxy_authz_request(r, m, raw, &origin, &path, &azwhy, &azfl);
    /* The access log's path: what goes upstream (an absolute-form target's userinfo and
     * authority stay out of the log), or CONNECT's authority. */
    if (r->rt->access_log) {
        struct sc_str logged = r->is_connect ? m->target : origin;
        size_t slash = logged.len && logged.p[0] == '?';
        if (!r->path) {
            r->path = sc_malloc(PROXY_LOG_PATH);
        }
        r->path[0] = '/';
        r->path_len =
            slash + (logged.len < PROXY_LOG_PATH - slash ? logged.len : PROXY_LOG_PATH - slash);
        memcpy(r->path + slash, logged.p, r->path_len - slash);
    }
    if (r->rt->trace) {
        proxy_trace_begin(r, m);
    }
    if (azst == PROXY_AUTHZ_PENDING) {
        return; /* an external authorizer decides; proxy_exchange_route goes on */
    }
    if (azst) {
        /* A refused target or a denied request: answered before routing, as Envoy's RBAC
         * filter does. */
        r->close_after = r->body != B_NONE;
        proxy_local_reply(r, azst, azwhy, azfl);
        return;
    }
    proxy_exchange_route(dc, m, origin, path);
}

void proxy_exchange_route(struct proxy_dconn *dc, const struct sc_http_msg *m, struct sc_str origin,
                          struct sc_str path)
{
    struct proxy_worker *w = dc->w;
    struct proxy_exch *r = &dc->ex;
    if (r->cl->tls && proxy_tls_misdirected(r, m->host)) {
        r->close_after = r->body != B_NONE;
        proxy_local_reply(r, 421,
                          "misdirected request: the connection's certificate is for "
                          "another host",
                          0);
        return;
    }
    struct proxy_route *found = proxy_route_find(dc, m, path);
    if (!found) {
        dc->ex.close_after = r->body != B_NONE;
        proxy_local_reply(&dc->ex, 404, "no route matched the request", F_NR);
        return;
    }
    r->route = found;
    r->cluster = found->cluster;
    if (found->pol || r->lsn->rl) {
        int pst = 0;
        const char *why = NULL;
        unsigned pfl = 0;
        int act = proxy_route_policy_request(r, m, &pst, &why, &pfl);
        if (act == PROXY_ROUTE_POL_DONE) {
            return;
        }
        if (act == PROXY_ROUTE_POL_ACTION) {
            dc->ex.close_after = r->body != B_NONE;
            r->body_done = r->body == B_NONE;
            struct sc_buf hb;
            struct sc_str body;
            sc_buf_init(&hb, 16384);
            int st = proxy_route_action_answer(r, m, origin, &hb, &body, &r->reply_ctype, &pfl);
            r->reply_headers = sc_str_n(hb.p, hb.len);
            proxy_local_reply_body(r, st, body, pfl);
            r->reply_headers = SC_STR_NULL;
            r->reply_ctype = NULL;
            sc_buf_cleanup(&hb);
            return;
        }
        if (act != PROXY_ROUTE_POL_GO) {
            /* A bodyless request keeps its connection: a 429 is no reason to reconnect. */
            dc->ex.close_after = r->body != B_NONE;
            r->body_done = r->body == B_NONE;
            proxy_local_reply(&dc->ex, pst, why, pfl);
            return;
        }
    }
    /* gRPC calls (POST) are retried on their statuses as Envoy does; resets only when the
     * route says they are idempotent (proxy_may_retry). */
    r->retriable = (proxy_idempotent(m->method) || found->retry_non_idempotent || r->grpc) &&
                   !r->upgrade && !r->is_connect && r->rt->retry_buffer > 0;
    if (r->cluster->lb >= PROXY_LB_RING_HASH) {
        /* the route's hash_policy, else the cluster's */
        const struct proxy_route_policy *rp = found->pol;
        bool own = rp && rp->nhash;
        r->hashed = proxy_hash_request(own ? rp->hash : r->cluster->hash,
                                       own ? rp->nhash : r->cluster->nhash, m, r->cl->ip, &r->hash);
    }
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
            dc->ex.close_after = r->body != B_NONE;
            proxy_local_reply(&dc->ex, 400, "invalid destination in the request target", F_DPE);
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
        dc->ex.close_after = r->body != B_NONE;
        proxy_local_reply(&dc->ex, 503, "no healthy upstream", F_UH);
        return;
    }
    uint64_t maxb = r->rt->max_request_body;
    if (maxb && r->body == B_LENGTH && r->remaining > maxb) {
        dc->ex.close_after = true;
        proxy_local_reply(&dc->ex, 413, "request body larger than max_request_body", F_DPE);
        return;
    }
    if (r->down_h2) {
        /* HTTP/2 clients keep many requests in flight, each holding its upstream head until
         * the answer (a retry resends it): a buffer of the room the rebuilt head reserves,
         * instead of a pool block. */
        proxy_hbuf_get_size(w, &r->head, proxy_head_room(m));
    } else {
        proxy_hbuf_get(w, &r->head);
    }
    if (r->body != B_NONE && r->retriable) {
        proxy_hbuf_get(w, &r->copy);
    }
    if (proxy_build_req_head(r, m, origin) < 0) {
        dc->ex.close_after = true;
        proxy_local_reply(&dc->ex, 431,
                          "request head too large after forwarding headers were added", F_DPE);
        return;
    }
    if (r->grpc) {
        proxy_grpc_route(r, m);
    }
    if (!proxy_breaker_request(r->cluster, r)) {
        dc->ex.close_after = r->body != B_NONE;
        proxy_local_reply(&dc->ex, 503, "upstream overflow: max_requests", F_UO);
        return;
    }
    if (r->body == B_NONE) {
        proxy_request_body_done(&dc->ex);
    } else {
        r->down->arm_timer(r);
    }
    if (r->pol.delay_ms) {
        /* Fault injection. The loop's cached time may be behind the request's start. */
        uv_update_time(w->loop);
        proxy_btimer_start(&dc->ex, r->pol.delay_ms);
    } else {
        proxy_attempt(&dc->ex);
    }
    r->down->read_update(r);
}

/* Answers the request from the proxy itself: 4xx/5xx with the reason as the body. */
void proxy_local_reply(struct proxy_exch *r, int status, const char *reason, unsigned flags)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "%s\n", reason ? reason : sc_http1_reason(status));
    if (n < 0 || (size_t)n >= sizeof(body)) {
        n = (int)sizeof(body) - 1;
    }
    proxy_local_reply_body(r, status, sc_str_n(body, (size_t)n), flags);
}

void proxy_local_reply_body(struct proxy_exch *r, int status, struct sc_str body, unsigned flags)
{
    r->flags |= flags;
    proxy_btimer_stop(r);
    if (r->uc) {
        proxy_uconn_close(r->uc);
    }
    if (r->resp_head_sent || !r->down->can_reply(r)) {
        r->down->abort(r);
        return;
    }
    if (!r->body_done) {
        r->close_after = true; /* the rest of the request body cannot be skipped safely */
    }
    r->status = status;
    r->resp_head_sent = true;
    r->resp_done = true;
    if (r->grpc && !r->grpc_status) {
        r->grpc_status = (uint8_t)(proxy_grpc_for_local(status) + 1);
    }
    r->down->reply(r, status, body);
}

/* ---- the end: access log and metrics ---- */

void proxy_finish_request(struct proxy_exch *r)
{
    struct proxy_dconn *dc = r->dc;
    if (!r->rt) {
        return;
    }
    proxy_extauthz_cancel(r); /* a check still running (the client went away, a timeout) */
    proxy_oidc_cancel(r);     /* a login's token request */
    uint64_t now = proxy_now_ns();
    double dur = (double)(now - r->start_ns) / 1e9;
    if (r->status == 0 && (r->flags & F_DC)) {
        r->status = 0;
    }
    proxy_count_request(r, dur);
    if (r->grpc) {
        proxy_grpc_finish(r);
    }
    if (r->span) {
        proxy_trace_end(r, now);
    }
    if (r->rt->access_log) {
        proxy_access_log(r, dur);
    }
    if (r->request_principal || r->pol.cors) {
        sc_free(r->request_principal);
        r->request_principal = NULL;
        proxy_cors_release(r);
    }
    proxy_endpoint_release(r);
    proxy_breaker_release(r);
    proxy_rt_unref(r->rt);
    r->rt = NULL;
    if (dc->od && dc->od->resolving && !dc->od->stale) {
        dc->od->stale = true; /* its answer is for a request that is over */
        uv_cancel((uv_req_t *)&dc->od->gai);
    }
    /* The head buffers go back to the worker's pool (a stream keeps a small head of its own). */
    proxy_hbuf_put(r->w, &r->copy);
    if (dc->h2s) {
        proxy_hbuf_keep(r->w, &r->head);
    } else {
        proxy_hbuf_put(r->w, &r->head);
    }
    proxy_btimer_stop(r);
    r->down->finish(r);
}
