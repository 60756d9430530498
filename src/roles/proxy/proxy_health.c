// SPDX-License-Identifier: Apache-2.0
// Active health checks: on the main loop, one checker per endpoint of each cluster with a
// health_check sends "GET <path>" every interval over a fresh connection (Connection: close) and
// reads the response head into a fixed 4 KiB buffer, parsed by the proxy's own HTTP/1 parser; the
// status decides. unhealthy_threshold failures in a row take the endpoint out of load balancing,
// healthy_threshold passes bring it back. The results live in the endpoint's shared state (see
// proxy_policy.h), so a reload that restarts the checkers keeps them. Each check is bounded: one
// connection, one timer for its deadline, one buffer; nothing here allocates per check.
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/http1.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_policy.h"

#define HC_BUF 4096
#define HC_MAX_HEADERS 64

struct checker {
    struct sc_list node;
    struct proxy_rt *rt; /* a reference */
    struct proxy_cluster *c;
    struct proxy_endpoint *ep;
    uv_timer_t timer; /* the next check while idle; the deadline while checking */
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    char req[1024];
    size_t reqlen;
    char buf[HC_BUF];
    size_t len;
    bool checking;    /* a check is in flight: tcp is open */
    bool tcp_closing; /* tcp is closing; the next check waits for it */
    bool stopped;
    bool timer_closed;
};

static void check_start(struct checker *ck);

static void maybe_free(struct checker *ck)
{
    if (ck->stopped && ck->timer_closed && !ck->checking && !ck->tcp_closing) {
        proxy_rt_unref(ck->rt);
        sc_free(ck);
    }
}

static void on_tick(uv_timer_t *t)
{
    check_start(t->data);
}

/* Schedules the next check one interval from now, remembered in the endpoint's state so that a
 * reload restarting the checkers keeps the pace instead of starting over. */
static void schedule_next(struct checker *ck)
{
    uint64_t interval = ck->c->st->pol.hc_interval_ms;
    ck->ep->st->hc_next_ms = uv_now(ck->timer.loop) + interval;
    uv_timer_start(&ck->timer, on_tick, interval, 0);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct checker *ck = h->data;
    ck->tcp_closing = false;
    if (ck->stopped) {
        maybe_free(ck);
        return;
    }
    schedule_next(ck);
}

/* Applies one result to the endpoint's shared health state. */
static void record(struct checker *ck, bool ok, const char *why)
{
    const struct proxy_policy *p = &ck->c->st->pol;
    struct proxy_ep_state *es = ck->ep->st;
    bool failed = atomic_load(&es->hc_failed);
    if (ok) {
        es->hc_fail = 0;
        es->hc_ok++;
        if (failed && es->hc_ok >= p->hc_healthy) {
            atomic_store(&es->hc_failed, false);
            sc_gauge_add(ck->c->st->m_hc_unhealthy, -1);
            sc_info("health check passed; endpoint back in load balancing",
                    SC_LS("cluster", ck->c->name), SC_LS("endpoint", ck->ep->name));
        }
    } else {
        es->hc_ok = 0;
        es->hc_fail++;
        if (!failed && es->hc_fail >= p->hc_unhealthy) {
            atomic_store(&es->hc_failed, true);
            sc_gauge_add(ck->c->st->m_hc_unhealthy, 1);
            sc_warn("health check failed; endpoint out of load balancing",
                    SC_LS("cluster", ck->c->name), SC_LS("endpoint", ck->ep->name),
                    SC_LS("reason", why));
        } else {
            sc_debug("health check failed", SC_LS("cluster", ck->c->name),
                     SC_LS("endpoint", ck->ep->name), SC_LS("reason", why));
        }
    }
}

/* Ends the check in flight with a result and closes its connection. */
static void finish(struct checker *ck, bool ok, const char *why)
{
    if (!ck->checking) {
        return;
    }
    ck->checking = false;
    uv_timer_stop(&ck->timer);
    if (!ck->stopped) {
        record(ck, ok, why);
    }
    ck->tcp_closing = true;
    uv_read_stop((uv_stream_t *)&ck->tcp);
    uv_close((uv_handle_t *)&ck->tcp, on_tcp_closed);
}

static void on_deadline(uv_timer_t *t)
{
    finish(t->data, false, "timeout");
}

static bool expected(const struct proxy_policy *p, int status)
{
    for (size_t i = 0; i < p->hc_nranges; i++) {
        if (status >= p->hc_ranges[i][0] && status <= p->hc_ranges[i][1]) {
            return true;
        }
    }
    return false;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct checker *ck = h->data;
    (void)hint;
    *b = uv_buf_init(ck->buf + ck->len, (unsigned)(sizeof(ck->buf) - ck->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct checker *ck = s->data;
    (void)b;
    if (!ck->checking || n == 0) {
        return;
    }
    if (n < 0) {
        finish(ck, false, n == UV_EOF ? "closed before a response" : uv_strerror((int)n));
        return;
    }
    size_t last = ck->len;
    ck->len += (size_t)n;
    struct sc_http_header hdrs[HC_MAX_HEADERS];
    struct sc_http_msg m = { .headers = hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http_default_limits;
    lim.max_head = HC_BUF;
    lim.max_line = HC_BUF;
    lim.max_headers = HC_MAX_HEADERS;
    int rc = sc_http1_parse_response(ck->buf, ck->len, last, &lim, 0, &m, HC_MAX_HEADERS, &err);
    if (rc < 0) {
        finish(ck, false, err.reason ? err.reason : "malformed response");
    } else if (rc > 0) {
        if (m.status >= 100 && m.status < 200) {
            /* An interim response: drop it and wait for the final one. */
            memmove(ck->buf, ck->buf + rc, ck->len - (size_t)rc);
            ck->len -= (size_t)rc;
            return;
        }
        bool ok = expected(&ck->c->st->pol, m.status);
        char why[48];
        snprintf(why, sizeof(why), "status %d", m.status);
        finish(ck, ok, why);
    } else if (ck->len >= sizeof(ck->buf)) {
        finish(ck, false, "response head too large");
    }
}

static void on_written(uv_write_t *w, int status)
{
    struct checker *ck = w->data;
    if (status < 0 && ck->checking) {
        finish(ck, false, uv_strerror(status));
    }
}

static void on_connected(uv_connect_t *req, int status)
{
    struct checker *ck = req->data;
    if (!ck->checking) {
        return;
    }
    if (status < 0) {
        finish(ck, false, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(ck->req, (unsigned)ck->reqlen);
    ck->wreq.data = ck;
    int rc = uv_write(&ck->wreq, (uv_stream_t *)&ck->tcp, &b, 1, on_written);
    if (rc < 0) {
        finish(ck, false, uv_strerror(rc));
        return;
    }
    rc = uv_read_start((uv_stream_t *)&ck->tcp, on_alloc, on_read);
    if (rc < 0) {
        finish(ck, false, uv_strerror(rc));
    }
}

static bool endpoint_address(struct proxy_endpoint *ep, struct sockaddr_storage *out)
{
    if (ep->dns) {
        uv_mutex_lock(&ep->mu);
    }
    int n = atomic_load(&ep->naddrs);
    if (n > 0) {
        *out = ep->addrs[0];
    }
    if (ep->dns) {
        uv_mutex_unlock(&ep->mu);
    }
    return n > 0;
}

static void check_start(struct checker *ck)
{
    const struct proxy_policy *p = &ck->c->st->pol;
    struct sockaddr_storage ss;
    if (ck->stopped || ck->checking || ck->tcp_closing) {
        return;
    }
    if (!endpoint_address(ck->ep, &ss)) {
        /* A name not resolved yet: nothing to judge. */
        schedule_next(ck);
        return;
    }
    ck->len = 0;
    int rc = uv_tcp_init(ck->timer.loop, &ck->tcp);
    if (rc < 0) {
        schedule_next(ck);
        return;
    }
    ck->tcp.data = ck;
    ck->checking = true;
    ck->creq.data = ck;
    uv_timer_start(&ck->timer, on_deadline, p->hc_timeout_ms, 0);
    rc = uv_tcp_connect(&ck->creq, &ck->tcp, (const struct sockaddr *)&ss, on_connected);
    if (rc < 0) {
        finish(ck, false, uv_strerror(rc));
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct checker *ck = h->data;
    ck->timer_closed = true;
    maybe_free(ck);
}

void proxy_health_start(struct proxy *px, struct proxy_rt *rt)
{
    for (size_t c = 0; c < rt->nclusters; c++) {
        struct proxy_cluster *cl = &rt->clusters[c];
        if (!cl->st || !cl->st->pol.hc || cl->original_dst) {
            continue;
        }
        const struct proxy_policy *p = &cl->st->pol;
        uint64_t now = uv_now(sc_app_loop(px->app));
        for (size_t e = 0; e < cl->neps; e++) {
            struct proxy_endpoint *ep = &cl->eps[e];
            struct checker *ck = SC_NEW(struct checker);
            ck->rt = proxy_rt_ref(rt);
            ck->c = cl;
            ck->ep = ep;
            int n = snprintf(ck->req, sizeof(ck->req),
                             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sidecar-health-check\r\n"
                             "Connection: close\r\n\r\n",
                             p->hc_path, p->hc_host ? p->hc_host : ep->name);
            ck->reqlen = n > 0 && (size_t)n < sizeof(ck->req) ? (size_t)n : 0;
            uv_timer_init(sc_app_loop(px->app), &ck->timer);
            ck->timer.data = ck;
            sc_list_append(&px->checkers, &ck->node);
            if (ck->reqlen == 0) {
                sc_warn("health check request too long; not checking", SC_LS("cluster", cl->name),
                        SC_LS("endpoint", ep->name));
                continue;
            }
            /* A state never checked is checked at once; a kept one when its next check is due. */
            uint64_t next = ep->st->hc_next_ms;
            uv_timer_start(&ck->timer, on_tick, next > now ? next - now : 0, 0);
        }
    }
}

void proxy_health_stop(struct proxy *px)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &px->checkers)
    {
        struct checker *ck = sc_list_entry(pos, struct checker, node);
        sc_list_remove(&ck->node);
        ck->stopped = true;
        if (ck->checking) {
            finish(ck, false, "stopped");
        }
        uv_close((uv_handle_t *)&ck->timer, on_timer_closed);
    }
}
