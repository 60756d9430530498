// SPDX-License-Identifier: Apache-2.0
// Tries waiting for a connecting upstream HTTP/2 connection.
//
// An HTTP/2 connection joins its endpoint's pool (proxy_pool.h2) only once connected. Until then
// it is listed in proxy_pool.h2conn, and a try that finds every pooled connection full waits on it
// instead of opening a connection of its own: the connection is assumed to take the cluster's
// max_concurrent_streams streams (its first try's included), so a burst of tries opens one
// connection per that many tries, not one per try.
//
// A waiting try holds a placeholder struct proxy_uconn (h2wait set, no transport, U_CONNECTING)
// as ex->uc, linked by its node into the connecting connection's h2waiters. Whatever ends a try
// (the client going away, a timeout, a local reply) closes ex->uc, so proxy_uconn_close of the
// placeholder takes the try out of the wait. Once connected, each waiting try is started again
// (a stream of the new connection while it has room); when the connect fails, each fails as its
// own connect would have (retried as the route allows). When the connection's first try goes
// away while it connects, the first waiting try takes its place.
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"

bool proxy_h2_wait(struct proxy_exch *ex, struct proxy_endpoint *ep, struct proxy_pool *pool)
{
    uint32_t cap = ep->cluster->h2up.max_streams;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &pool->h2conn)
    {
        struct proxy_uconn *uc = sc_list_entry(pos, struct proxy_uconn, h2cnode);
        if (uc->state != U_CONNECTING || !uc->ex || uc->rt != ex->w->rt || uc->nh2wait + 1 >= cap) {
            continue;
        }
        struct proxy_uconn *wuc = proxy_uconn_new(ex->w);
        wuc->rt = proxy_rt_ref(ex->rt);
        wuc->ep = ep;
        wuc->ex = ex;
        wuc->state = U_CONNECTING;
        wuc->h2ph = true;
        wuc->h2wait = uc;
        sc_list_append(&uc->h2waiters, &wuc->node);
        uc->nh2wait++;
        ex->uc = wuc;
        return true;
    }
    return false;
}

/* Takes waiting placeholder <wuc> off its connection's list. */
static void unlink_waiter(struct proxy_uconn *wuc)
{
    sc_list_remove(&wuc->node);
    sc_list_init(&wuc->node);
    wuc->h2wait->nh2wait--;
    wuc->h2wait = NULL;
}

/* The first waiting try of <uc>, taken out of the wait (its placeholder closed); NULL: none. */
static struct proxy_exch *pop_waiter(struct proxy_uconn *uc)
{
    if (sc_list_empty(&uc->h2waiters)) {
        return NULL;
    }
    struct proxy_uconn *wuc = sc_list_entry(uc->h2waiters.next, struct proxy_uconn, node);
    struct proxy_exch *ex = wuc->ex;
    unlink_waiter(wuc);
    wuc->ex = NULL;
    ex->uc = NULL;
    proxy_uconn_close(wuc);
    return ex;
}

void proxy_h2_wait_unlist(struct proxy_uconn *uc)
{
    sc_list_remove(&uc->h2cnode);
    sc_list_init(&uc->h2cnode);
}

void proxy_h2_wait_fail(struct proxy_uconn *uc, const char *why)
{
    proxy_h2_wait_unlist(uc); /* a retry must not wait on it again */
    while (!sc_list_empty(&uc->h2waiters)) {
        struct proxy_uconn *wuc = sc_list_entry(uc->h2waiters.next, struct proxy_uconn, node);
        /* The try fails as a connect of its own would have; closing the placeholder (in
         * proxy_attempt_failed) takes it off the list. */
        proxy_attempt_failed(wuc->ex, COND_CONNECT, F_UF, why);
        if (wuc->h2wait == uc) {
            unlink_waiter(wuc); /* not closed (cannot happen): do not loop */
        }
    }
}

void proxy_h2_wait_flush(struct proxy_uconn *uc)
{
    proxy_h2_wait_unlist(uc);
    struct proxy_exch *ex;
    while ((ex = pop_waiter(uc)) != NULL) {
        /* ep->active and the try count were taken when the try began: start it on a stream (of
         * this connection while it has room), else on a connection of its own. */
        if (!proxy_h2_up_attempt(ex, ex->ep)) {
            proxy_attempt_open(ex);
        }
    }
}

bool proxy_h2_wait_close(struct proxy_uconn *uc)
{
    if (uc->h2wait) {
        unlink_waiter(uc);
        return false;
    }
    proxy_h2_wait_unlist(uc);
    if (sc_list_empty(&uc->h2waiters)) {
        return false;
    }
    if (uc->state == U_CONNECTING && uc->ex) {
        /* Its try is over while it connects: the first waiting try takes its place. */
        struct proxy_exch *old = uc->ex;
        struct proxy_exch *ex = pop_waiter(uc);
        proxy_endpoint_release(old);
        old->uc = NULL;
        uc->ex = ex;
        ex->uc = uc;
        struct proxy_pool *pool = proxy_ep_pool(uc->ep, uc->w);
        if (pool) {
            sc_list_append(&pool->h2conn, &uc->h2cnode);
        }
        return true;
    }
    proxy_h2_wait_fail(uc, "upstream HTTP/2 connection closed before it connected");
    return false;
}
