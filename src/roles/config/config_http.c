// SPDX-License-Identifier: Apache-2.0
// The config role's http(s) source: a GET with the validators of the last response (ETag,
// Last-Modified), so an unchanged config costs a 304. Bodies past CONFIG_MAX_BODY fail the fetch
// rather than growing memory. A plain http:// URL without credentials, with no proxy in the
// environment, goes through the HTTP/1.1 client of net/ (the host name resolved on the loop's
// thread pool); https, credentials and proxies go through the egress client (libcurl), which is
// then loaded on first use. Neither follows redirects.
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "net/h1client.h"
#include "roles/config/config.h"

/* ---- http ---- */

static void set_hdr(struct config_source *s, const char *k, const char *v)
{
    s->hdrs = sc_reallocarray(s->hdrs, s->nhdrs + 1, sizeof(struct sc_kv));
    s->hdrs[s->nhdrs].key = (char *)k;
    s->hdrs[s->nhdrs].value = (char *)v;
    s->nhdrs++;
}

/* A response from either client: 200 delivers, 304 keeps what was written. */
static void on_response(struct config_source *s, int status, struct sc_str etag, struct sc_str lm,
                        struct sc_str body)
{
    if (status == 304 && s->wrote_ok) {
        config_not_modified(s);
        return;
    }
    if (status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP status %d", status);
        config_fetch_failed(s, why);
        return;
    }
    sc_free(s->etag);
    sc_free(s->last_modified);
    s->etag = etag.len ? sc_strndup(etag.p, etag.len) : NULL;
    s->last_modified = lm.len ? sc_strndup(lm.p, lm.len) : NULL;
    config_deliver(s, body.p ? body.p : "", body.len, NULL);
}

static void on_http(void *arg, const struct sc_egress_resp *resp)
{
    struct config_source *s = arg;
    s->xfer = NULL;
    if (resp->error) {
        config_fetch_failed(s, resp->error_msg ? resp->error_msg : sc_strerror(resp->error));
        return;
    }
    on_response(s, resp->status, sc_egress_resp_header(resp, "ETag"),
                sc_egress_resp_header(resp, "Last-Modified"), resp->body);
}

/* ---- plain http:// through net/h1client ---- */

/* One fetch: the name resolution, then the exchange. Owned by its source until the source cancels
 * it; a resolution that cannot be cancelled any more frees it from its callback. */
struct config_h1fetch {
    struct config_source *s; /* NULL once cancelled */
    uv_getaddrinfo_t gai;
    bool resolving;
    struct sc_h1cli *cli;
    char *host;      /* the host as in the URL, without brackets */
    char *port;      /* "80" when the URL has none */
    char *authority; /* the Host header: host[:port] as in the URL */
    char *target;    /* origin-form: path and query */
};

static void h1fetch_free(struct config_h1fetch *f)
{
    sc_free(f->host);
    sc_free(f->port);
    sc_free(f->authority);
    sc_free(f->target);
    sc_free(f);
}

/* Splits http://authority/path?query (no userinfo: credentials go to libcurl). Returns false for
 * what this client does not take. */
static bool h1_split(const char *url, struct config_h1fetch *f)
{
    if (strncmp(url, "http://", 7) != 0) {
        return false;
    }
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || memchr(a, '@', alen)) {
        return false;
    }
    const char *rest = a + alen;
    size_t tlen = strcspn(rest, "#");
    f->authority = sc_strndup(a, alen);
    f->target = *rest == '/' ? sc_strndup(rest, tlen) : sc_asprintf("/%.*s", (int)tlen, rest);
    const char *port = NULL;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (!close) {
            return false;
        }
        f->host = sc_strndup(a + 1, (size_t)(close - a - 1));
        port = close + 1 < a + alen && close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = memchr(a, ':', alen);
        f->host = sc_strndup(a, colon ? (size_t)(colon - a) : alen);
        port = colon ? colon + 1 : NULL;
    }
    f->port =
        port && port < a + alen ? sc_strndup(port, (size_t)(a + alen - port)) : sc_strdup("80");
    return f->host[0] != '\0';
}

/* True when a proxy variable libcurl would honour for http:// is set. */
static bool proxy_in_env(void)
{
    static const char *const vars[] = { "http_proxy", "all_proxy", "ALL_PROXY" };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            return true;
        }
    }
    return false;
}

static void on_h1(void *arg, const struct sc_h1cli_resp *resp)
{
    struct config_h1fetch *f = arg;
    struct config_source *s = f->s;
    s->h1 = NULL;
    h1fetch_free(f);
    if (resp->error) {
        config_fetch_failed(s, resp->reason ? resp->reason : sc_strerror(resp->error));
        return;
    }
    const struct sc_http_header *etag = sc_http1_find(resp->msg, SC_STR("ETag"), NULL);
    const struct sc_http_header *lm = sc_http1_find(resp->msg, SC_STR("Last-Modified"), NULL);
    on_response(s, resp->status, etag ? etag->value : SC_STR_NULL, lm ? lm->value : SC_STR_NULL,
                resp->body);
}

static void h1_send(struct config_h1fetch *f, const struct sockaddr *addr)
{
    struct config_source *s = f->s;
    struct sc_http_header *h = sc_calloc(s->nhdrs + 2, sizeof(*h));
    size_t n = 0;
    h[n++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(f->authority) };
    h[n++] = (struct sc_http_header){ SC_STR("Accept"), SC_STR("*/*") };
    for (size_t i = 0; i < s->nhdrs; i++) {
        h[n++] = (struct sc_http_header){ sc_str_c(s->hdrs[i].key), sc_str_c(s->hdrs[i].value) };
    }
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"),
        .target = sc_str_c(f->target),
        .headers = h,
        .nheaders = n,
        .timeout_ms = s->cf->cfg->timeout_ms,
        .max_body = CONFIG_MAX_BODY,
    };
    int rc = sc_h1cli_send(s->cf->loop, addr, &req, on_h1, f, &f->cli);
    sc_free(h);
    if (rc < 0) {
        s->h1 = NULL;
        h1fetch_free(f);
        config_fetch_failed(s, sc_strerror(rc));
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct config_h1fetch *f = req->data;
    f->resolving = false;
    struct config_source *s = f->s;
    if (!s) { /* cancelled while the resolver ran */
        uv_freeaddrinfo(res);
        h1fetch_free(f);
        return;
    }
    if (status < 0 || !res) {
        char why[160];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", f->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        s->h1 = NULL;
        h1fetch_free(f);
        config_fetch_failed(s, why);
        return;
    }
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    h1_send(f, (struct sockaddr *)&ss);
}

/* Starts the fetch through net/h1client when the source is plain HTTP without credentials or a
 * proxy. Returns false when libcurl must do it. */
static bool h1_fetch(struct config_source *s)
{
    const struct config_source_cfg *c = s->cfg;
    if (c->bearer_token || c->basic_user || proxy_in_env()) {
        return false;
    }
    config_http_cancel(s); /* never two fetches of one source at once */
    struct config_h1fetch *f = SC_NEW(struct config_h1fetch);
    if (!h1_split(s->url, f)) {
        h1fetch_free(f);
        return false;
    }
    uint64_t port = 0;
    if (sc_str_to_u64(sc_str_c(f->port), 65535, &port) < 0 || port == 0) {
        h1fetch_free(f); /* libcurl reports the malformed URL */
        return false;
    }
    f->s = s;
    s->h1 = f;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (uv_ip4_addr(f->host, (int)port, &a4) == 0) {
        h1_send(f, (struct sockaddr *)&a4);
        return true;
    }
    if (uv_ip6_addr(f->host, (int)port, &a6) == 0) {
        h1_send(f, (struct sockaddr *)&a6);
        return true;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    f->gai.data = f;
    f->resolving = true;
    int rc = uv_getaddrinfo(s->cf->loop, &f->gai, on_resolved, f->host, f->port, &hints);
    if (rc < 0) {
        f->resolving = false;
        s->h1 = NULL;
        char why[160];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", f->host, uv_strerror(rc));
        h1fetch_free(f);
        config_fetch_failed(s, why);
    }
    return true;
}

void config_http_cancel(struct config_source *s)
{
    struct config_h1fetch *f = s->h1;
    if (!f) {
        return;
    }
    s->h1 = NULL;
    if (f->resolving) {
        f->s = NULL; /* on_resolved frees it, whether or not the cancel takes */
        uv_cancel((uv_req_t *)&f->gai);
        return;
    }
    sc_h1cli_cancel(f->cli);
    h1fetch_free(f);
}

void config_http_fetch(struct config_source *s)
{
    const struct config_source_cfg *c = s->cfg;
    s->nhdrs = 0;
    for (size_t i = 0; i < c->headers.n; i++) {
        set_hdr(s, c->headers.v[i].key, c->headers.v[i].value);
    }
    /* Conditional headers only once the destination holds what they describe. */
    if (s->wrote_ok && s->etag) {
        set_hdr(s, "If-None-Match", s->etag);
    }
    if (s->wrote_ok && s->last_modified) {
        set_hdr(s, "If-Modified-Since", s->last_modified);
    }
    if (h1_fetch(s)) {
        return;
    }
    struct sc_egress_req req = {
        .url = s->url,
        .headers = s->hdrs,
        .nheaders = s->nhdrs,
        .timeout_ms = s->cf->cfg->timeout_ms,
        .max_response = CONFIG_MAX_BODY,
        .bearer_token = c->bearer_token,
        .basic_user = c->basic_user,
        .basic_password = c->basic_password,
        .tls = &s->tls,
    };
    int rc = sc_egress_send(config_egress(s->cf), &req, on_http, s, &s->xfer);
    if (rc < 0) {
        config_fetch_failed(s, sc_strerror(rc));
    }
}
