// SPDX-License-Identifier: Apache-2.0
// Routes the proxy answers itself: `direct_response` (a fixed status and body) and `redirect` (a
// 3xx with a Location derived from the request's URL). Both go out through the local-reply path
// (proxy_local_reply_body), so HTTP/1 and HTTP/2 clients get them, and the access log and
// sidecar_requests_total count them like any other answer (flag DR for direct responses, RD for
// redirects: the access log's response flags).
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/str.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_route_policy.h"

const struct sc_opt proxy_direct_opts[] = {
    { .name = "status",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_direct_cfg, status),
      .min = 200,
      .max = 599,
      .help = "the answer's status (200 to 599)" },
    { .name = "body",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_direct_cfg, body),
      .help = "the answer's body, inline (at most 4 KiB; default: empty)" },
    { .name = "content_type",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_direct_cfg, content_type),
      .help = "the body's Content-Type (default text/plain; charset=utf-8)" },
    { 0 },
};

const struct sc_opt proxy_redirect_opts[] = {
    { .name = "scheme",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_redirect_cfg, scheme),
      .help = "the Location's scheme (http or https; default: the request's)" },
    { .name = "https_redirect",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_redirect_cfg, https_redirect),
      .def = "false",
      .help = "the same as scheme: https" },
    { .name = "host",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_redirect_cfg, host),
      .help = "the Location's host (default: the request's Host without its port)" },
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_redirect_cfg, port),
      .min = 0,
      .max = 65535,
      .help = "the Location's port (0: the request's, dropped when the scheme changes; a "
              "scheme's default port is left out)" },
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_redirect_cfg, path),
      .help = "the Location's path, replacing the request's (a ?query in it replaces the "
              "request's query)" },
    { .name = "prefix_rewrite",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_redirect_cfg, prefix_rewrite),
      .help = "replaces the route's match.prefix in the request's path (instead of path)" },
    { .name = "strip_query",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_redirect_cfg, strip_query),
      .def = "false",
      .help = "leave the request's query out of the Location" },
    { .name = "response_code",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_redirect_cfg, response_code),
      .def = "301",
      .min = 301,
      .max = 308,
      .help = "301, 302, 303, 307 or 308" },
    { 0 },
};

bool proxy_route_action_set(const struct proxy_route_cfg *rc)
{
    const struct proxy_redirect_cfg *d = &rc->redirect;
    return rc->direct_response.status != 0 || rc->health_endpoint.set || d->scheme ||
           d->https_redirect || d->host || d->port || d->path || d->prefix_rewrite ||
           d->strip_query || (d->response_code && d->response_code != 301);
}

static bool token_ok(const char *s, const char *extra)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("\"<>\\^`{|}", c) || (extra && strchr(extra, c))) {
            return false;
        }
    }
    return true;
}

int proxy_route_action_check(const struct proxy_route_cfg *r, const char *where, char **err)
{
    const struct proxy_redirect_cfg *d = &r->redirect;
    bool redirect = d->scheme || d->https_redirect || d->host || d->port || d->path ||
                    d->prefix_rewrite || d->strip_query ||
                    (d->response_code && d->response_code != 301);
    const char *what = redirect                 ? "redirect"
                       : r->health_endpoint.set ? "health_endpoint"
                                                : "direct_response";
    if ((redirect != 0) + (r->direct_response.status != 0) + r->health_endpoint.set > 1) {
        *err = sc_asprintf("%s: use one of redirect, direct_response and health_endpoint", where);
        return SC_ECONFIG;
    }
    const struct proxy_hdr_ops_cfg *s = &r->headers.response;
    if (r->cluster || r->weighted_clusters.n || r->subset || r->mirror.cluster ||
        r->prefix_rewrite || r->regex_rewrite.pattern || r->host_rewrite ||
        r->fault.delay.percentage > 0 || s->set.n || s->add.n || s->remove.n) {
        *err = sc_asprintf("%s: a %s route answers itself: it takes no cluster, "
                           "weighted_clusters, subset, mirror, prefix_rewrite, regex_rewrite, "
                           "host_rewrite, fault delay or response headers",
                           where, what);
        return SC_ECONFIG;
    }
    if (!redirect) {
        const struct proxy_direct_cfg *dr = &r->direct_response;
        if (dr->body && strlen(dr->body) > PROXY_DIRECT_BODY_MAX) {
            *err = sc_asprintf("%s: direct_response body is longer than %d bytes", where,
                               PROXY_DIRECT_BODY_MAX);
            return SC_ECONFIG;
        }
        if (dr->content_type && (!*dr->content_type || strpbrk(dr->content_type, "\r\n"))) {
            *err = sc_asprintf("%s: direct_response content_type is not a header value", where);
            return SC_ECONFIG;
        }
        return 0;
    }
    int64_t code = d->response_code ? d->response_code : 301;
    if (code != 301 && code != 302 && code != 303 && code != 307 && code != 308) {
        *err = sc_asprintf("%s: redirect response_code must be 301, 302, 303, 307 or 308", where);
        return SC_ECONFIG;
    }
    if (d->scheme && strcmp(d->scheme, "http") != 0 && strcmp(d->scheme, "https") != 0) {
        *err = sc_asprintf("%s: redirect scheme must be http or https", where);
        return SC_ECONFIG;
    }
    if (d->scheme && d->https_redirect) {
        *err = sc_asprintf("%s: use one of redirect scheme and https_redirect", where);
        return SC_ECONFIG;
    }
    if (d->path && d->prefix_rewrite) {
        *err = sc_asprintf("%s: use one of redirect path and prefix_rewrite", where);
        return SC_ECONFIG;
    }
    if (d->prefix_rewrite && !r->match.prefix) {
        *err = sc_asprintf("%s: redirect prefix_rewrite needs a match.prefix", where);
        return SC_ECONFIG;
    }
    if (d->host && (!*d->host || !token_ok(d->host, "/?#@"))) {
        *err = sc_asprintf("%s: redirect host is not a host name", where);
        return SC_ECONFIG;
    }
    if ((d->path && (d->path[0] != '/' || !token_ok(d->path, "#"))) ||
        (d->prefix_rewrite &&
         (d->prefix_rewrite[0] != '/' || !token_ok(d->prefix_rewrite, "#?")))) {
        *err = sc_asprintf("%s: redirect path and prefix_rewrite start with / and hold no "
                           "spaces, controls or #",
                           where);
        return SC_ECONFIG;
    }
    return 0;
}

struct proxy_route_action {
    int status;
    bool redirect;
    bool health;               /* health_endpoint: the status is computed per request */
    struct sc_vec min_healthy; /* struct proxy_min_healthy_cfg, copied */
    /* direct_response */
    char *body;
    size_t body_len;
    char *ctype;
    /* redirect */
    char *scheme; /* NULL: the request's */
    char *host;
    int port;
    char *path;
    char *prefix_rewrite;
    size_t prefix_len; /* the route's match.prefix */
    bool strip_query;
};

struct proxy_route_action *proxy_route_action_new(const struct proxy_route_cfg *rc)
{
    if (!proxy_route_action_set(rc)) {
        return NULL;
    }
    struct proxy_route_action *a = SC_NEW(struct proxy_route_action);
    if (rc->health_endpoint.set) {
        const struct proxy_health_ep_cfg *h = &rc->health_endpoint;
        const struct proxy_min_healthy_cfg *m = h->min_healthy.v;
        a->health = true;
        a->min_healthy.n = h->min_healthy.n;
        a->min_healthy.v = h->min_healthy.n ? sc_calloc(h->min_healthy.n, sizeof(*m)) : NULL;
        struct proxy_min_healthy_cfg *to = a->min_healthy.v;
        for (size_t i = 0; i < h->min_healthy.n; i++) {
            to[i].cluster = sc_strdup(m[i].cluster);
            to[i].percent = m[i].percent;
        }
        return a;
    }
    if (rc->direct_response.status) {
        a->status = (int)rc->direct_response.status;
        a->body = sc_strdup(rc->direct_response.body ? rc->direct_response.body : "");
        a->body_len = strlen(a->body);
        a->ctype = sc_strdup(rc->direct_response.content_type ? rc->direct_response.content_type
                                                              : "text/plain; charset=utf-8");
        return a;
    }
    const struct proxy_redirect_cfg *d = &rc->redirect;
    a->redirect = true;
    a->status = d->response_code ? (int)d->response_code : 301;
    a->scheme = sc_strdup(d->https_redirect ? "https" : d->scheme);
    a->host = sc_strdup(d->host);
    a->port = (int)d->port;
    a->path = sc_strdup(d->path);
    a->prefix_rewrite = sc_strdup(d->prefix_rewrite);
    a->prefix_len = rc->match.prefix ? strlen(rc->match.prefix) : 0;
    a->strip_query = d->strip_query;
    return a;
}

void proxy_route_action_free(struct proxy_route_action *a)
{
    if (!a) {
        return;
    }
    struct proxy_min_healthy_cfg *m = a->min_healthy.v;
    for (size_t i = 0; i < a->min_healthy.n; i++) {
        sc_free(m[i].cluster);
    }
    sc_free(m);
    sc_free(a->body);
    sc_free(a->ctype);
    sc_free(a->scheme);
    sc_free(a->host);
    sc_free(a->path);
    sc_free(a->prefix_rewrite);
    sc_free(a);
}

/* Splits authority <h> into host and port (the port's digits, empty when none). */
static void split_authority(struct sc_str h, struct sc_str *host, struct sc_str *port)
{
    size_t colon = h.len;
    for (size_t i = h.len; i > 0; i--) {
        if (h.p[i - 1] == ']') {
            break;
        }
        if (h.p[i - 1] == ':') {
            colon = i - 1;
            break;
        }
    }
    *host = sc_str_n(h.p, colon);
    *port = colon < h.len ? sc_str_n(h.p + colon + 1, h.len - colon - 1) : SC_STR_NULL;
}

/* Writes "Location: <url>\r\n" for request <m> with target <origin> to <b>. Returns 0, SC_EINVAL
 * (no host), or SC_ETOOBIG. */
static int location(const struct proxy_route_action *a, const struct proxy_exch *r,
                    const struct sc_http_msg *m, struct sc_str origin, struct sc_buf *b)
{
    const char *req_scheme = r->cl->tls ? "https" : "http";
    const char *scheme = a->scheme ? a->scheme : req_scheme;
    struct sc_str host, port;
    split_authority(m->host, &host, &port);
    if (a->host) {
        host = sc_str_c(a->host);
    }
    if (host.len == 0) {
        return SC_EINVAL; /* an HTTP/1.0 request without Host: no URL to start from */
    }
    char pbuf[8];
    if (a->port) {
        int k = snprintf(pbuf, sizeof(pbuf), "%d", a->port);
        port = sc_str_n(pbuf, (size_t)k);
    } else if (strcmp(scheme, req_scheme) != 0) {
        port = SC_STR_NULL; /* http://h:8080 -> https://h: the new scheme's port */
    }
    if ((port.len == 2 && memcmp(port.p, "80", 2) == 0 && strcmp(scheme, "http") == 0) ||
        (port.len == 3 && memcmp(port.p, "443", 3) == 0 && strcmp(scheme, "https") == 0)) {
        port = SC_STR_NULL;
    }
    const char *q = memchr(origin.p, '?', origin.len);
    struct sc_str path = sc_str_n(origin.p, q ? (size_t)(q - origin.p) : origin.len);
    struct sc_str query = q ? sc_str_n(q, origin.len - (size_t)(q - origin.p)) : SC_STR_NULL;
    int rc = sc_buf_appendf(b, "Location: %s://%.*s", scheme, (int)host.len, host.p);
    if (port.len) {
        rc |= sc_buf_appendf(b, ":%.*s", (int)port.len, port.p);
    }
    if (a->path) {
        rc |= sc_buf_append_cstr(b, a->path);
        if (strchr(a->path, '?')) {
            query = SC_STR_NULL; /* the configured query replaces the request's */
        }
    } else if (a->prefix_rewrite && path.len >= a->prefix_len) {
        rc |= sc_buf_append_cstr(b, a->prefix_rewrite);
        rc |= sc_buf_append(b, path.p + a->prefix_len, path.len - a->prefix_len);
    } else {
        rc |= sc_buf_append_str(b, path.len ? path : SC_STR("/"));
    }
    if (!a->strip_query && query.len) {
        rc |= sc_buf_append_str(b, query);
    }
    rc |= sc_buf_append_cstr(b, "\r\n");
    return rc ? SC_ETOOBIG : 0;
}

int proxy_route_action_answer(const struct proxy_exch *r, const struct sc_http_msg *m,
                              struct sc_str origin, struct sc_buf *hdrs, struct sc_str *body,
                              const char **ctype, unsigned *flags)
{
    const struct proxy_route_action *a = r->route->pol->act;
    *ctype = NULL;
    if (a->health) {
        int st = proxy_health_ep_status(r, &a->min_healthy);
        *body = SC_STR_NULL;
        *flags = st == 200 ? 0 : F_LH;
        return st;
    }
    if (!a->redirect) {
        *ctype = a->ctype;
        *body = sc_str_n(a->body, a->body_len);
        *flags = F_DR;
        return a->status;
    }
    *body = SC_STR_NULL;
    *flags = F_RD;
    int rc = location(a, r, m, origin, hdrs);
    if (rc < 0) {
        sc_buf_reset(hdrs);
        *body = rc == SC_EINVAL ? SC_STR("the request has no Host to redirect from\n")
                                : SC_STR("the redirect's Location is too long\n");
        *flags = F_DPE;
        return rc == SC_EINVAL ? 400 : 414;
    }
    return a->status;
}
