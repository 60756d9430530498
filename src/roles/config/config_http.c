// SPDX-License-Identifier: Apache-2.0
// The config role's http(s) source: a GET over the egress client with the validators of the last
// response (ETag, Last-Modified), so an unchanged config costs a 304. Bodies past
// CONFIG_MAX_BODY fail the fetch rather than growing memory.
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
#include "roles/config/config.h"

/* ---- http ---- */

static void set_hdr(struct config_source *s, const char *k, const char *v)
{
    s->hdrs = sc_reallocarray(s->hdrs, s->nhdrs + 1, sizeof(struct sc_kv));
    s->hdrs[s->nhdrs].key = (char *)k;
    s->hdrs[s->nhdrs].value = (char *)v;
    s->nhdrs++;
}

static void on_http(void *arg, const struct sc_egress_resp *resp)
{
    struct config_source *s = arg;
    s->xfer = NULL;
    if (resp->error) {
        config_fetch_failed(s, resp->error_msg ? resp->error_msg : sc_strerror(resp->error));
        return;
    }
    if (resp->status == 304 && s->wrote_ok) {
        config_not_modified(s);
        return;
    }
    if (resp->status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "HTTP status %d", resp->status);
        config_fetch_failed(s, why);
        return;
    }
    struct sc_str etag = sc_egress_resp_header(resp, "ETag");
    struct sc_str lm = sc_egress_resp_header(resp, "Last-Modified");
    sc_free(s->etag);
    sc_free(s->last_modified);
    s->etag = etag.len ? sc_strndup(etag.p, etag.len) : NULL;
    s->last_modified = lm.len ? sc_strndup(lm.p, lm.len) : NULL;
    config_deliver(s, resp->body.p ? resp->body.p : "", resp->body.len, NULL);
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
