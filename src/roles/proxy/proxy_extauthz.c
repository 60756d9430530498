// SPDX-License-Identifier: Apache-2.0
// External authorization over HTTP (see proxy_extauthz.h): the provider's options and address,
// and the check of one request: sent with the one HTTP/1 client (net/h1client.h) on the worker's
// loop, answered into the exchange (proxy_exchange_route to go on, or a local reply with the
// authorizer's status, headers and body). The pending check owns a copy of the request head and
// of what the upstream request gets; the exchange's end cancels it (proxy_extauthz_cancel).
#include "roles/proxy/proxy_extauthz.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "net/h1client.h"
#include "roles/proxy/proxy_conn.h"

#define MAX_NAMES 32
#define DENY_BODY_MAX (64 * 1024)

const struct sc_opt proxy_extauthz_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_extauthz_cfg, name),
      .help = "the provider's name, as CUSTOM policies' provider names it",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_name_check },
    { .name = "service",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_extauthz_cfg, service),
      .help = "the authorizer's host name or address (resolved at load and reload)",
      .flags = SC_OPT_REQUIRED },
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_extauthz_cfg, port),
      .help = "the authorizer's port",
      .flags = SC_OPT_REQUIRED,
      .min = 1,
      .max = 65535 },
    { .name = "path_prefix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_extauthz_cfg, path_prefix),
      .help = "prepended to the request's path and query in the check (oauth2-proxy: "
              "/oauth2/auth?rd=... is not added: set the prefix to the endpoint)" },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_extauthz_cfg, timeout_ms),
      .def = "600ms",
      .help = "deadline of a check (connect included)",
      .min = 1,
      .max = 60000 },
    { .name = "fail_open",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_extauthz_cfg, fail_open),
      .def = "false",
      .help = "allow the request when the authorizer cannot be reached or answers malformed" },
    { .name = "status_on_error",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_extauthz_cfg, status_on_error),
      .def = "403",
      .help = "the status sent to the client when the check fails and fail_open is false",
      .min = 400,
      .max = 599 },
    { .name = "include_request_headers_in_check",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_extauthz_cfg, include_request_headers_in_check),
      .help = "client headers sent to the authorizer besides Host and Authorization "
              "(Cookie for oauth2-proxy)",
      .max = MAX_NAMES },
    { .name = "include_additional_headers_in_check",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_extauthz_cfg, include_additional_headers_in_check),
      .help = "fixed headers added to every check" },
    { .name = "headers_to_upstream_on_allow",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_extauthz_cfg, headers_to_upstream_on_allow),
      .help = "headers of an allowing answer set on the upstream request, replacing the "
              "client's (X-Auth-Request-User, X-Auth-Request-Email)",
      .max = MAX_NAMES },
    { .name = "headers_to_downstream_on_deny",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_extauthz_cfg, headers_to_downstream_on_deny),
      .help = "headers of a denying answer sent to the client (empty: all but framing and "
              "hop-by-hop ones: Location, WWW-Authenticate, Set-Cookie, ...)",
      .max = MAX_NAMES },
    { 0 },
};

struct proxy_extauthz {
    char *name;
    struct sockaddr_storage addr;
    char *host; /* "service:port": the check's Host */
    char *prefix;
    uint64_t timeout_ms;
    bool fail_open;
    int status_on_error;
    struct sc_strv include;
    struct sc_kvv additional;
    struct sc_strv to_upstream;
    struct sc_strv to_downstream;
    struct sc_metric *m_allowed, *m_denied, *m_error;
};

struct sc_metric_family *proxy_extauthz_metrics(struct sc_metrics *reg)
{
    static const char *const labels[] = { "provider", "result", NULL };
    return sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_ext_authz_total",
                             "External authorization checks by provider and result (allowed, "
                             "denied, error: unreachable, timed out or malformed).",
                             labels, NULL, 0);
}

struct proxy_extauthz *proxy_extauthz_new(const struct proxy_extauthz_cfg *c,
                                          struct sc_metric_family *fam, char **err)
{
    char port[8];
    snprintf(port, sizeof(port), "%d", (int)c->port);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    int rc = getaddrinfo(c->service, port, &hints, &ai);
    if (rc != 0 || !ai) {
        *err = sc_asprintf("extension_providers \"%s\": service %s: %s", c->name, c->service,
                           gai_strerror(rc));
        return NULL;
    }
    struct proxy_extauthz *p = SC_NEW(struct proxy_extauthz);
    memcpy(&p->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    p->name = sc_strdup(c->name);
    p->host = sc_asprintf("%s:%s", c->service, port);
    p->prefix = sc_strdup(c->path_prefix ? c->path_prefix : "");
    p->timeout_ms = c->timeout_ms;
    p->fail_open = c->fail_open;
    p->status_on_error = (int)c->status_on_error;
    sc_config_strv_copy(&p->include, &c->include_request_headers_in_check);
    sc_config_strv_copy(&p->to_upstream, &c->headers_to_upstream_on_allow);
    sc_config_strv_copy(&p->to_downstream, &c->headers_to_downstream_on_deny);
    p->additional.v =
        c->include_additional_headers_in_check.n
            ? sc_calloc(c->include_additional_headers_in_check.n, sizeof(struct sc_kv))
            : NULL;
    for (size_t i = 0; i < c->include_additional_headers_in_check.n; i++) {
        p->additional.v[i].key = sc_strdup(c->include_additional_headers_in_check.v[i].key);
        p->additional.v[i].value = sc_strdup(c->include_additional_headers_in_check.v[i].value);
        p->additional.n++;
    }
    if (fam) {
        const char *a[] = { p->name, "allowed" }, *d[] = { p->name, "denied" },
                   *e[] = { p->name, "error" };
        p->m_allowed = sc_metrics_get(fam, a);
        p->m_denied = sc_metrics_get(fam, d);
        p->m_error = sc_metrics_get(fam, e);
    }
    return p;
}

void proxy_extauthz_free(struct proxy_extauthz *p)
{
    if (!p) {
        return;
    }
    sc_free(p->name);
    sc_free(p->host);
    sc_free(p->prefix);
    sc_config_strv_free(&p->include);
    sc_config_strv_free(&p->to_upstream);
    sc_config_strv_free(&p->to_downstream);
    for (size_t i = 0; i < p->additional.n; i++) {
        sc_free(p->additional.v[i].key);
        sc_free(p->additional.v[i].value);
    }
    sc_free(p->additional.v);
    sc_free(p);
}

/* ---- one check ---- */

struct proxy_extauthz_call {
    struct proxy_dconn *dc;
    const struct proxy_extauthz *p;
    struct sc_h1cli *cli;
    char *head; /* the request head as the client sent it */
    size_t headlen;
    char *origin; /* the normalised target */
    size_t origin_len, path_len;
    long strip_off;    /* offset in head of the value that carried a JWT not forwarded; -1 */
    bool then_deny;    /* the DENY/ALLOW verdict denies after an allowing check */
    struct sc_buf add; /* upstream header lines: the JWT rules' and the authorizer's */
    struct sc_str drop[2 * MAX_NAMES + 64];
    size_t ndrop;
    char *names; /* storage for the authorizer's names in drop */
};

static bool name_in(const struct sc_strv *v, struct sc_str name)
{
    for (size_t i = 0; i < v->n; i++) {
        if (sc_str_caseeq(sc_str_c(v->v[i]), name)) {
            return true;
        }
    }
    return false;
}

/* Framing, routing and hop-by-hop fields never copied from the authorizer to the client. */
static bool hop_or_framing(struct sc_str n)
{
    static const char *const names[] = {
        "content-length", "transfer-encoding", "connection",  "keep-alive", "host", "upgrade", "te",
        "trailer",        "proxy-connection",  "content-type"
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        if (sc_str_caseeq(n, sc_str_c(names[i]))) {
            return true;
        }
    }
    return false;
}

static void call_free(struct proxy_extauthz_call *c)
{
    sc_free(c->head);
    sc_free(c->origin);
    sc_free(c->names);
    sc_buf_cleanup(&c->add);
    sc_free(c);
}

void proxy_extauthz_cancel(struct proxy_exch *ex)
{
    struct proxy_extauthz_call *c = ex->authz_call;
    if (!c) {
        return;
    }
    ex->authz_call = NULL;
    sc_h1cli_cancel(c->cli);
    call_free(c);
}

/* The check allowed the request: the exchange goes on with the head as the client sent it. */
static void resume(struct proxy_extauthz_call *c, const struct sc_http_msg *auth)
{
    struct proxy_dconn *dc = c->dc;
    struct proxy_exch *r = &dc->ex;
    struct proxy_worker *w = dc->w;
    /* The authorizer's headers for upstream replace the client's of the same names. */
    size_t nl = 0;
    for (size_t i = 0; auth && i < auth->nheaders; i++) {
        nl += auth->headers[i].name.len + 1;
    }
    c->names = sc_calloc(1, nl + 1);
    char *np = c->names;
    for (size_t i = 0; auth && i < auth->nheaders; i++) {
        const struct sc_http_header *h = &auth->headers[i];
        if (!name_in(&c->p->to_upstream, h->name)) {
            continue;
        }
        sc_http1_write_header(&c->add, h->name, h->value);
        if (c->ndrop < SC_ARRAY_LEN(c->drop)) {
            memcpy(np, h->name.p, h->name.len);
            c->drop[c->ndrop++] = sc_str_n(np, h->name.len);
            np += h->name.len + 1;
        }
    }
    struct sc_http_msg m = { .headers = w->hdrs };
    struct sc_http_error herr;
    struct sc_http_limits lim = sc_http1_default_limits;
    lim.max_head = (uint32_t)c->headlen;
    if (sc_http1_parse_request(c->head, c->headlen, 0, &lim, &m, SC_ARRAY_LEN(w->hdrs), &herr) <=
        0) {
        proxy_local_reply(r, 500, "the request head could not be read again", F_DPE);
        return; /* cannot happen: it parsed before */
    }
    r->authn_strip = SC_STR_NULL;
    for (size_t i = 0; c->strip_off >= 0 && i < m.nheaders; i++) {
        if (m.headers[i].value.p == c->head + c->strip_off) {
            r->authn_strip = m.headers[i].value;
        }
    }
    r->authn_add = sc_str_n(c->add.p, c->add.len);
    r->authn_drop = c->drop;
    r->nauthn_drop = c->ndrop;
    proxy_exchange_route(dc, &m, sc_str_n(c->origin, c->origin_len),
                         c->path_len ? sc_str_n(c->origin, c->path_len) : SC_STR("/"));
}

static void on_checked(void *arg, const struct sc_h1cli_resp *resp)
{
    struct proxy_extauthz_call *c = arg;
    struct proxy_dconn *dc = c->dc;
    struct proxy_exch *r = &dc->ex;
    const struct proxy_extauthz *p = c->p;
    c->cli = NULL;
    r->authz_call = NULL;
    dc->rpaused = false;
    if (resp->error) {
        sc_metrics_counter_inc(p->m_error);
        sc_warn("external authorization failed", SC_LS("provider", p->name),
                SC_LS("reason", resp->reason ? resp->reason : ""));
        if (p->fail_open && !c->then_deny) {
            resume(c, NULL);
        } else if (p->fail_open) {
            proxy_local_reply(r, 403, "RBAC: access denied", F_RBAC);
        } else {
            proxy_local_reply(r, p->status_on_error, "external authorization failed", F_UAEX);
        }
        call_free(c);
        return;
    }
    if (resp->status >= 200 && resp->status < 300) {
        sc_metrics_counter_inc(p->m_allowed);
        if (c->then_deny) {
            proxy_local_reply(r, 403, "RBAC: access denied", F_RBAC);
        } else {
            resume(c, resp->msg);
        }
        call_free(c);
        return;
    }
    /* Denied: the authorizer's answer goes to the client (a 401, a 302 to a login page). */
    sc_metrics_counter_inc(p->m_denied);
    struct sc_buf hb;
    sc_buf_init(&hb, 64 * 1024);
    for (size_t i = 0; i < resp->msg->nheaders; i++) {
        const struct sc_http_header *h = &resp->msg->headers[i];
        bool pass =
            p->to_downstream.n ? name_in(&p->to_downstream, h->name) : !hop_or_framing(h->name);
        if (pass && !hop_or_framing(h->name)) {
            sc_http1_write_header(&hb, h->name, h->value);
        }
    }
    r->reply_headers = sc_str_n(hb.p, hb.len);
    struct sc_str body = resp->body;
    if (body.len > DENY_BODY_MAX) {
        body.len = DENY_BODY_MAX;
    }
    int status = resp->status >= 300 && resp->status <= 599 ? resp->status : 403;
    proxy_local_reply_body(r, status, body, F_UAEX);
    r->reply_headers = SC_STR_NULL;
    sc_buf_cleanup(&hb);
    call_free(c);
}

int proxy_extauthz_start(struct proxy_exch *ex, const struct proxy_extauthz *p,
                         const struct sc_http_msg *m, struct sc_str head, struct sc_str origin,
                         size_t path_len, struct sc_str strip, struct sc_str add,
                         const struct sc_str *drop, size_t ndrop, bool then_deny)
{
    struct proxy_dconn *dc = ex->dc;
    struct proxy_extauthz_call *c = SC_NEW(struct proxy_extauthz_call);
    c->dc = dc;
    c->p = p;
    c->then_deny = then_deny;
    c->head = sc_strndup(head.p, head.len);
    c->headlen = head.len;
    c->origin = sc_strndup(origin.p, origin.len);
    c->origin_len = origin.len;
    c->path_len = path_len;
    c->strip_off =
        strip.p && strip.p >= head.p && strip.p < head.p + head.len ? (long)(strip.p - head.p) : -1;
    sc_buf_init(&c->add, 64 * 1024);
    sc_buf_append_str(&c->add, add);
    for (size_t i = 0; i < ndrop && c->ndrop < 64; i++) {
        c->drop[c->ndrop++] = drop[i]; /* the snapshot's: it outlives the exchange */
    }
    /* The check: the client's method, the prefix and target, Host and Authorization, the
     * headers the provider names, its fixed ones. */
    struct sc_http_header hs[2 + MAX_NAMES + 32];
    size_t n = 0;
    hs[n++] = (struct sc_http_header){ SC_STR("Host"), m->host };
    for (size_t i = 0; i < m->nheaders && n < SC_ARRAY_LEN(hs); i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (sc_str_caseeq(h->name, SC_STR("authorization")) || name_in(&p->include, h->name)) {
            hs[n++] = *h;
        }
    }
    for (size_t i = 0; i < p->additional.n && n < SC_ARRAY_LEN(hs); i++) {
        hs[n++] = (struct sc_http_header){ sc_str_c(p->additional.v[i].key),
                                           sc_str_c(p->additional.v[i].value) };
    }
    size_t pl = strlen(p->prefix);
    char *target = sc_calloc(1, pl + origin.len + 1);
    memcpy(target, p->prefix, pl);
    memcpy(target + pl, origin.p, origin.len);
    struct sc_h1cli_req req = {
        .method = m->method,
        .target = sc_str_n(target, pl + origin.len),
        .headers = hs,
        .nheaders = n,
        .timeout_ms = p->timeout_ms,
        .max_body = DENY_BODY_MAX,
    };
    int rc =
        sc_h1cli_send(ex->w->loop, (const struct sockaddr *)&p->addr, &req, on_checked, c, &c->cli);
    sc_free(target);
    if (rc < 0) {
        call_free(c);
        return rc;
    }
    ex->authz_call = c;
    dc->rpaused = true; /* nothing more is read until the check answers */
    proxy_dread_update(dc);
    ex->down->arm_timer(ex); /* the stream idle timeout bounds the wait too */
    return 0;
}
