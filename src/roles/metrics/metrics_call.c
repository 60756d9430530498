// SPDX-License-Identifier: Apache-2.0
// The pushers' requests (Pushgateway, remote_write) through whichever client fits the URL: a plain
// http:// URL (no proxy variable in the environment) goes through net/h1client, anything else
// (https, a proxy) through the egress client, libcurl, which is loaded then. The caller sees one
// kind of outcome, an sc_egress_resp, either way. Invariant: the callback fires once per call, or
// never after metrics_call_cancel; the call frees itself when it has fired or been cancelled.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/template.h"
#include "net/h1client.h"
#include "roles/metrics/metrics.h"

#define CALL_MAX_HEADERS 16
#define CALL_DEFAULT_MAX_BODY (16u << 20) /* the egress client's default response cap */

struct metrics_call {
    struct sc_egress_xfer *xfer;
    struct sc_h1cli_named *h1;
    sc_egress_cb cb;
    void *arg;
};

int metrics_auth_header(struct sc_buf *out, const char *bearer, const char *user,
                        const char *password)
{
    if (bearer) {
        return sc_buf_appendf(out, "Bearer %s", bearer);
    }
    if (!user) {
        return 0;
    }
    struct sc_buf up;
    sc_buf_init(&up, 65536);
    up.sensitive = true;
    int rc = sc_buf_appendf(&up, "%s:%s", user, password ? password : "");
    rc = rc ? rc : sc_buf_append_cstr(out, "Basic ");
    rc = rc ? rc : sc_template_base64_encode(out, up.p, up.len);
    sc_buf_cleanup(&up);
    return rc;
}

static void on_egress_done(void *arg, const struct sc_egress_resp *resp)
{
    struct metrics_call *call = arg;
    call->xfer = NULL;
    call->cb(call->arg, resp);
    sc_free(call);
}

static void on_h1_done(void *arg, const struct sc_h1cli_resp *resp)
{
    struct metrics_call *call = arg;
    call->h1 = NULL;
    struct sc_egress_resp r = {
        .error = resp->error,
        .error_msg = resp->reason,
        .status = resp->status,
        .body = resp->body,
    };
    call->cb(call->arg, &r);
    sc_free(call);
}

/* Starts <req> through net/h1client when its URL allows. Returns false when libcurl must send
 * it; otherwise 0 or an error in <*rc>. */
static bool h1_send(struct metrics_role *m, struct metrics_call *call,
                    const struct sc_egress_req *req, int *rc)
{
    struct sc_h1cli_url u;
    if (req->nheaders > CALL_MAX_HEADERS - 2 || !sc_h1cli_url_parse(req->url, &u)) {
        return false;
    }
    struct sc_buf auth; /* the Authorization value, zeroed when freed */
    sc_buf_init(&auth, 65536);
    auth.sensitive = true;
    *rc = metrics_auth_header(&auth, req->bearer_token, req->basic_user, req->basic_password);
    struct sc_http_header h[CALL_MAX_HEADERS];
    size_t n = 0;
    h[n++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(u.authority) };
    for (size_t i = 0; i < req->nheaders; i++) {
        h[n++] = (struct sc_http_header){ sc_str_c(req->headers[i].key),
                                          sc_str_c(req->headers[i].value) };
    }
    if (auth.len) {
        h[n++] = (struct sc_http_header){ SC_STR("Authorization"), sc_buf_str(&auth) };
    }
    struct sc_h1cli_req hr = {
        .method = sc_str_c(req->method ? req->method : "GET"),
        .target = sc_str_c(u.target),
        .headers = h,
        .nheaders = n,
        .body = sc_str_n(req->body, req->body_len),
        .timeout_ms = req->timeout_ms ? req->timeout_ms : 30000,
        .max_body = req->max_response ? req->max_response : CALL_DEFAULT_MAX_BODY,
        .sensitive = auth.len > 0,
    };
    if (*rc == 0) {
        *rc = m->finished
                  ? SC_ECLOSED
                  : sc_h1cli_send_host(m->loop, u.host, u.port, &hr, on_h1_done, call, &call->h1);
    }
    sc_buf_cleanup(&auth);
    sc_h1cli_url_free(&u);
    return true;
}

int metrics_call_send(struct metrics_role *m, const struct sc_egress_req *req, sc_egress_cb cb,
                      void *arg, struct metrics_call **out)
{
    struct metrics_call *call = SC_NEW(struct metrics_call);
    call->cb = cb;
    call->arg = arg;
    int rc = 0;
    if (!h1_send(m, call, req, &rc)) {
        rc = sc_egress_send(metrics_egress(m), req, on_egress_done, call, &call->xfer);
    }
    if (rc < 0) {
        sc_free(call);
        return rc;
    }
    *out = call;
    return 0;
}

void metrics_call_cancel(struct metrics_call *call)
{
    if (!call) {
        return;
    }
    sc_egress_cancel(call->xfer);
    sc_h1cli_named_cancel(call->h1);
    sc_free(call);
}
