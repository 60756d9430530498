// SPDX-License-Identifier: Apache-2.0
// Request mirroring: a copy of a request goes to a shadow cluster, fire and forget. The copy is the
// upstream head already built for the real request (Host with "-shadow" appended, as Envoy does,
// and Connection: close) plus the request body the retry buffer retained, sent as it is by the
// HTTP/1 client of net/h1client.h on a connection of its own that is never pooled (over the shadow
// cluster's TLS when it originates TLS); the response is read to its end and dropped.
//
// The client's exchange never waits for a mirror: the copy is made once the request body is
// complete and everything after that happens in the HTTP/1 client's callbacks. A worker
// holds at most MIRROR_MAX mirrors in flight and each has a deadline, so a shadow that cannot keep
// up costs dropped (and counted) copies, never memory or latency.
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "net/h1client.h"
#include "roles/proxy/proxy_conn.h"

#define MIRROR_MAX 64
#define MIRROR_DEADLINE_MS 10000

struct mirror {
    struct sc_list node;
    struct proxy_worker *w;
    struct proxy_endpoint *ep; /* the shadow endpoint, until the request is sent */
    struct sc_h1cli *cli;
    struct sc_buf out; /* the copy, borrowed by the client until it is done */
};

static void mirror_free(struct mirror *mr)
{
    struct proxy_worker *w = mr->w;
    sc_list_remove(&mr->node);
    sc_buf_cleanup(&mr->out);
    sc_free(mr);
    w->nmirrors--;
    proxy_worker_check_done(w);
}

static void on_mirror_done(void *arg, const struct sc_h1cli_resp *r)
{
    if (r->error) {
        sc_debug("mirror failed", SC_LS("error", r->reason));
    }
    mirror_free(arg);
}

/* The client's wrap hook: the shadow cluster's TLS layer when it originates TLS. */
static struct sc_xport *wrap_cluster(void *arg, struct sc_xport *bottom)
{
    struct mirror *mr = arg;
    return proxy_tls_cluster_layer(mr->ep, mr->w->loop, bottom);
}

/* An address of an endpoint of <c>, round robin over those that have one; <*epp> is its
 * endpoint. */
static int pick_addr(struct proxy_cluster *c, struct sockaddr_storage *out,
                     struct proxy_endpoint **epp)
{
    unsigned start = atomic_fetch_add_explicit(&c->rr, 1, memory_order_relaxed);
    for (size_t i = 0; i < c->neps; i++) {
        struct proxy_endpoint *ep = &c->eps[(start + i) % c->neps];
        if (ep->dns) {
            uv_mutex_lock(&ep->mu);
        }
        int n = atomic_load(&ep->naddrs);
        if (n > 0) {
            *out = ep->addrs[atomic_fetch_add_explicit(&ep->next_addr, 1, memory_order_relaxed) %
                             (unsigned)n];
        }
        if (ep->dns) {
            uv_mutex_unlock(&ep->mu);
        }
        if (n > 0) {
            *epp = ep;
            return 0;
        }
    }
    return -ENOENT;
}

/* Copies upstream head <h> into <out> with "-shadow" appended to the Host value and
 * Connection: close added. Returns 0 or an error when it does not fit. */
static int shadow_head(struct sc_str h, struct sc_buf *out)
{
    int rc = 0;
    const char *p = h.p, *end = h.p + h.len;
    bool first = true;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        struct sc_str line = sc_str_n(p, ll);
        if (ll <= 2) {
            rc |= sc_buf_append_cstr(out, "Connection: close\r\n\r\n");
            break;
        }
        if (!first && ll > 7 && sc_str_caseeq(sc_str_n(p, 5), SC_STR("host:"))) {
            /* "Host: value\r\n" -> "Host: value-shadow\r\n" (before any port) */
            struct sc_str v = sc_str_trim(sc_str_n(p + 5, ll - 7));
            const char *colon = memrchr(v.p, ':', v.len);
            const char *rb = memrchr(v.p, ']', v.len);
            size_t hl = colon && (!rb || colon > rb) ? (size_t)(colon - v.p) : v.len;
            rc |= sc_buf_append_cstr(out, "Host: ");
            rc |= sc_buf_append(out, v.p, hl);
            rc |= sc_buf_append_cstr(out, "-shadow");
            rc |= sc_buf_append(out, v.p + hl, v.len - hl);
            rc |= sc_buf_append(out, "\r\n", 2);
        } else {
            rc |= sc_buf_append_str(out, line);
        }
        first = false;
        p += ll;
    }
    return rc;
}

void proxy_mirror_start(struct proxy_exch *r)
{
    struct proxy_worker *w = r->w;
    const struct proxy_route_policy *pol = r->route->pol;
    r->pol.mirror = false;
    if (!pol || !pol->mirror) {
        return;
    }
    struct sockaddr_storage ss;
    struct proxy_endpoint *ep = NULL;
    if (w->draining || w->nmirrors >= MIRROR_MAX || pick_addr(pol->mirror, &ss, &ep) < 0) {
        sc_metrics_counter_inc(pol->m_mirror_dropped);
        return;
    }
    struct mirror *mr = SC_NEW(struct mirror);
    mr->w = w;
    mr->ep = ep;
    sc_buf_init(&mr->out, r->head.len + r->copy.len + 64);
    if (shadow_head(sc_str_n(r->head.p, r->head.len), &mr->out) < 0 ||
        sc_buf_append(&mr->out, r->copy.p, r->copy.len) < 0) {
        sc_buf_cleanup(&mr->out);
        sc_free(mr);
        sc_metrics_counter_inc(pol->m_mirror_dropped);
        return;
    }
    sc_list_append(&w->mirrors, &mr->node);
    w->nmirrors++;
    const struct sc_h1cli_req req = {
        .method = r->is_head ? SC_STR("HEAD") : SC_STR("GET"),
        .raw = sc_buf_str(&mr->out),
        .timeout_ms = MIRROR_DEADLINE_MS,
        .discard_body = true,
        .wrap = wrap_cluster,
        .wrap_arg = mr,
    };
    if (sc_h1cli_send(w->loop, (struct sockaddr *)&ss, &req, on_mirror_done, mr, &mr->cli) < 0) {
        sc_metrics_counter_inc(pol->m_mirror_dropped);
        mirror_free(mr);
        return;
    }
    sc_metrics_counter_inc(pol->m_mirror);
}

void proxy_mirror_drop(struct proxy_exch *r)
{
    if (r->pol.mirror) {
        r->pol.mirror = false;
        sc_metrics_counter_inc(r->route->pol->m_mirror_dropped);
    }
}

void proxy_mirror_stop_all(struct proxy_worker *w)
{
    while (!sc_list_empty(&w->mirrors)) {
        struct mirror *mr = sc_list_entry(w->mirrors.next, struct mirror, node);
        sc_h1cli_cancel(mr->cli);
        mirror_free(mr);
    }
}
