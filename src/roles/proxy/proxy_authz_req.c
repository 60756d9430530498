// SPDX-License-Identifier: Apache-2.0
// The exchange's side of normalisation and authorization: normalises the request target once
// (the result is what routing, policies, the access log and the upstream all see), gathers the
// attributes the applicable policies need (peer identity, addresses, SNI) and takes the decision.
// Codecs never see any of it, so HTTP/1 and HTTP/2 requests are judged alike.
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/tlbuf.h"
#include "net/transport.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_normalize.h"

/* The normalised target lives here until the upstream head is built, within one call of
 * proxy_exchange_start on this thread. A target longer than this that needs normalising is
 * refused (the parser's request-line cap is smaller by default). */
#define NORM_CAP 65536
static _Thread_local void *norm_buf; /* NORM_CAP bytes (core/tlbuf.h) */

/* The address the client connected to: its original destination when iptables redirected it,
 * else the socket's own address. */
static void dest_of(struct proxy_exch *ex, struct proxy_az_ip *ip, int *port)
{
    struct proxy_dconn *dc = ex->dc;
    (void)proxy_original_dst(dc); /* fills od->dst once per connection */
    const struct sockaddr_storage ss = dc->od->dst;
    proxy_az_ip_from_sa(&ss, ip);
    *port = ss.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
            : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : 0;
}

int proxy_underscores(const struct proxy_rt *rt, struct sc_http_msg *m)
{
    if (!m->underscore || rt->headers_with_underscores == PROXY_US_ALLOW) {
        return 0;
    }
    sc_metrics_counter_inc(rt->m_underscores[rt->headers_with_underscores]);
    if (rt->headers_with_underscores == PROXY_US_REJECT) {
        return 400;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        if (!memchr(m->headers[i].name.p, '_', m->headers[i].name.len)) {
            m->headers[k++] = m->headers[i];
        }
    }
    m->nheaders = k;
    m->underscore = false;
    return 0;
}

/* Keeps the request principal of <a> for the access log (the first identity found wins). */
static void keep_principal(struct proxy_exch *ex, const struct proxy_az_auth *a)
{
    if (a && a->principal.len && ex->rt->access_log && !ex->request_principal) {
        ex->request_principal = sc_strndup(a->principal.p, a->principal.len);
    }
}

static int authenticate(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str raw,
                        struct sc_str *origin, struct sc_str *path, const char **why,
                        unsigned *flags);

int proxy_authz_request(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str raw,
                        struct sc_str *origin, struct sc_str *path, const char **why,
                        unsigned *flags)
{
    const struct proxy_rt *rt = ex->rt;
    if (!ex->is_connect && origin->len && origin->p[0] == '/') {
        size_t olen = 0, plen = 0;
        int rc =
            proxy_normalize_target(*origin, rt->path_normalization, rt->escaped_slashes,
                                   sc_tlbuf_get(&norm_buf, NORM_CAP), NORM_CAP, &olen, &plen, why);
        if (rc < 0) {
            *flags = F_DPE;
            return 400;
        }
        if (rc == 0) {
            *origin = sc_str_n(norm_buf, olen);
            *path = sc_str_n(norm_buf, plen);
        } else {
            *path = sc_str_n(origin->p, plen); /* PROXY_NORM_SAME: the target's own path */
        }
    }
    if (!ex->lsn->authn) {
        return 0;
    }
    return authenticate(ex, m, raw, origin, path, why, flags);
}

/* The login, JWT and authorization steps of proxy_authz_request, on a listener where one
 * applies: apart, so that a request without them pays only for the normalisation above. */
static __attribute__((noinline)) int authenticate(struct proxy_exch *ex,
                                                  const struct sc_http_msg *m, struct sc_str raw,
                                                  struct sc_str *origin, struct sc_str *path,
                                                  const char **why, unsigned *flags)
{
    const struct proxy_rt *rt = ex->rt;
    if (ex->lsn->cors && !ex->is_connect && proxy_cors_preflight_first(ex, m, *path)) {
        return 0; /* answered by the route's CORS policy, never forwarded (proxy_cors.c) */
    }
    const struct proxy_az_auth *login = NULL;
    /* The listener's own login, else the top-level one on inbound listeners. */
    const struct proxy_listener *lsn = ex->lsn;
    const struct proxy_oidc *oidc =
        lsn->oidc ? lsn->oidc : (rt->oidc && lsn->inbound && !lsn->oidc_off ? rt->oidc : NULL);
    if (oidc && !ex->is_connect) {
        int st = proxy_oidc_request(ex, oidc, m, raw, *origin, *path, why, &login);
        if (st) {
            *flags = 0;
            return st;
        }
        keep_principal(ex, login);
    }
    if (!ex->lsn->inbound || (!rt->authz && !rt->jwt)) {
        return 0;
    }
    /* A login's identity stands where a JWT's would (they are never configured together). */
    struct proxy_jwt_result jr = { .auth = login, .strip = ex->authn_strip, .add = ex->authn_add };
    if (rt->jwt) {
        struct proxy_worker *w = ex->w;
        size_t want = proxy_jwt_cache_want(rt->jwt);
        if (proxy_jwt_cache_size(w->jwt_cache) != want) {
            proxy_jwt_cache_free(w->jwt_cache);
            w->jwt_cache = proxy_jwt_cache_new(want);
        }
        const char *q = ex->is_connect ? NULL : memchr(origin->p, '?', origin->len);
        struct sc_str query =
            q ? sc_str_n(q + 1, (size_t)(origin->p + origin->len - q - 1)) : SC_STR_NULL;
        if (proxy_jwt_authenticate(rt->jwt, w->jwt_cache, m, query, (int64_t)time(NULL), &jr, why) <
            0) {
            ex->www_authenticate = true;
            *flags = 0;
            return 401;
        }
        ex->authn_drop = proxy_jwt_drop_names(rt->jwt, &ex->nauthn_drop);
        ex->authn_strip = jr.strip;
        ex->authn_add = jr.add;
        keep_principal(ex, jr.auth);
    }
    const struct proxy_authz *az = rt->authz;
    if (!az) {
        return 0;
    }
    unsigned needs = proxy_authz_needs(az);
    char host[256];
    struct sc_str authority = m->host;
    bool absolute = false;
    struct sc_str ta = ex->is_connect ? m->target : proxy_target_authority(m->target, &absolute);
    if (absolute || ex->is_connect) {
        authority = ta;
    }
    struct proxy_az_req rq = {
        .m = m,
        .method = m->method,
        .path = ex->is_connect ? SC_STR_NULL : *path,
        .authority = authority,
        .auth = jr.auth,
        .conn = &ex->cl->azc,
    };
    if (needs & PROXY_AZ_NEED_HOST) {
        rq.host = sc_str_n(host, proxy_host_normalize(authority, host, sizeof(host)));
    }
    proxy_az_ip_from_sa(&ex->cl->addr, &rq.source);
    if ((needs & PROXY_AZ_NEED_PEER) && ex->cl->tls) {
        rq.principal = proxy_tls_peer_principal(ex);
    }
    if ((needs & PROXY_AZ_NEED_SNI) && ex->cl->tls) {
        rq.sni = sc_xport_query_str(ex->cl->tls, SC_XQ_SNI);
    }
    if (needs & PROXY_AZ_NEED_DEST) {
        dest_of(ex, &rq.dest, &rq.dport);
    }
    if (needs & PROXY_AZ_NEED_REMOTE) {
        proxy_authz_remote_ip(m, proxy_authz_xff_hops(az), &rq.source, &rq.remote);
        if (rq.remote.fam < 0) {
            /* A trusted hop wrote something that is not an address: no decision can be
             * trusted, so none is taken (fail closed). */
            ex->authz_policy = "";
            *why = "RBAC: access denied";
            *flags = F_RBAC;
            sc_debug("authorization failed closed",
                     SC_LS("reason", "unparsable X-Forwarded-For entry at the trusted hop"));
            return 403;
        }
    }
    struct proxy_az_decision d;
    proxy_authz_eval(az, &rq, &d);
    ex->authz_audit = d.audit;
    ex->authz_dry_run = d.dry_run;
    ex->authz_dry_denied = d.dry_run_denied;
    ex->authz_policy = d.policy;
    if (d.ext) {
        size_t ndrop = 0;
        const struct sc_str *drop = rt->jwt ? proxy_jwt_drop_names(rt->jwt, &ndrop) : NULL;
        if (oidc) {
            drop = ex->authn_drop;
            ndrop = ex->nauthn_drop;
        }
        size_t plen = origin->len && origin->p[0] == '/' ? path->len : 0;
        if (proxy_extauthz_start(ex, d.ext, m, raw, *origin, plen, jr.strip, jr.add, drop, ndrop,
                                 d.result == PROXY_AZ_RES_DENY) == 0) {
            return PROXY_AUTHZ_PENDING;
        }
        *why = "external authorization failed";
        *flags = F_UAEX;
        return 403; /* the check could not even be sent: fail closed */
    }
    if (d.result != PROXY_AZ_RES_ALLOW) {
        if (!ex->authz_policy) {
            ex->authz_policy = "";
        }
        *why = "RBAC: access denied";
        *flags = F_RBAC;
        return 403;
    }
    return 0;
}

int proxy_authz_rt_init(struct proxy_rt *rt, const struct proxy_cfg *cfg, struct proxy_metrics *pm,
                        char **err)
{
    rt->path_normalization = cfg->authz.path_normalization;
    rt->escaped_slashes = cfg->authz.escaped_slashes;
    rt->headers_with_underscores = cfg->authz.headers_with_underscores;
    static const char *const us_labels[] = { "action", NULL };
    struct sc_metric_family *us =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_headers_with_underscores_total",
                          "Requests with a header name holding '_', by what was done "
                          "(headers_with_underscores): dropped (the headers) or rejected (400).",
                          us_labels, NULL, 0);
    const char *drop[] = { "dropped" }, *reject[] = { "rejected" };
    rt->m_underscores[PROXY_US_DROP] = sc_metrics_get(us, drop);
    rt->m_underscores[PROXY_US_REJECT] = sc_metrics_get(us, reject);
    rt->authz = NULL;
    rt->jwt = NULL;
    rt->oidc = proxy_oidc_new(&cfg->oidc, pm->reg, err);
    if (!rt->oidc && cfg->oidc.issuer && cfg->oidc.enabled) {
        return SC_ECONFIG;
    }
    if (cfg->authz.authorization.n == 0 && cfg->jwt.request_authentication.n == 0) {
        return 0;
    }
    struct proxy_workload wl;
    int rc = proxy_workload_init(&wl, &cfg->workload, err);
    if (rc < 0) {
        return rc;
    }
    char *e = NULL;
    const char *root = cfg->mesh_root_namespace ? cfg->mesh_root_namespace : "istio-system";
    rt->authz = proxy_authz_new(&cfg->authz, &wl, root, pm->reg, &e);
    if (!e) {
        rt->jwt = proxy_jwt_new(&cfg->jwt, &wl, root, pm->reg, &e);
    }
    proxy_workload_cleanup(&wl);
    if (e) {
        *err = e;
        return SC_ECONFIG;
    }
    return 0;
}
