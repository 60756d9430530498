// SPDX-License-Identifier: Apache-2.0
// The config role's http(s) source: a GET with the validators of the last response (ETag,
// Last-Modified), so an unchanged config costs a 304. Bodies past CONFIG_MAX_BODY fail the fetch
// rather than growing memory. A plain http:// URL without credentials, with no proxy in the
// environment, goes through the HTTP/1.1 client of net/ (the host name resolved on the loop's
// thread pool by sc_h1cli_send_host); https, credentials and proxies go through the egress client
// (libcurl), which is then loaded on first use. Neither follows redirects.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

static void on_h1(void *arg, const struct sc_h1cli_resp *resp)
{
    struct config_source *s = arg;
    s->h1 = NULL;
    if (resp->error) {
        config_fetch_failed(s, resp->reason ? resp->reason : sc_strerror(resp->error));
        return;
    }
    const struct sc_http_header *etag = sc_http1_find(resp->msg, SC_STR("ETag"), NULL);
    const struct sc_http_header *lm = sc_http1_find(resp->msg, SC_STR("Last-Modified"), NULL);
    on_response(s, resp->status, etag ? etag->value : SC_STR_NULL, lm ? lm->value : SC_STR_NULL,
                resp->body);
}

/* Starts the fetch through net/h1client when the source is plain HTTP without credentials or a
 * proxy. Returns false when libcurl must do it. */
static bool h1_fetch(struct config_source *s)
{
    const struct config_source_cfg *c = s->cfg;
    struct sc_h1cli_url u;
    if (c->bearer_token || c->basic_user || !sc_h1cli_url_parse(s->url, &u)) {
        return false;
    }
    config_http_cancel(s); /* never two fetches of one source at once */
    struct sc_http_header *h = sc_calloc(s->nhdrs + 2, sizeof(*h));
    size_t n = 0;
    h[n++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(u.authority) };
    h[n++] = (struct sc_http_header){ SC_STR("Accept"), SC_STR("*/*") };
    for (size_t i = 0; i < s->nhdrs; i++) {
        h[n++] = (struct sc_http_header){ sc_str_c(s->hdrs[i].key), sc_str_c(s->hdrs[i].value) };
    }
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"),
        .target = sc_str_c(u.target),
        .headers = h,
        .nheaders = n,
        .timeout_ms = s->cf->cfg->timeout_ms,
        .max_body = CONFIG_MAX_BODY,
    };
    int rc = sc_h1cli_send_host(s->cf->loop, u.host, u.port, &req, on_h1, s, &s->h1);
    sc_free(h);
    if (rc < 0) {
        char why[200];
        snprintf(why, sizeof(why), "cannot fetch from %s: %s", u.host, sc_strerror(rc));
        config_fetch_failed(s, why);
    }
    sc_h1cli_url_free(&u);
    return true;
}

void config_http_cancel(struct config_source *s)
{
    sc_h1cli_named_cancel(s->h1);
    s->h1 = NULL;
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
