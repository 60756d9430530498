// SPDX-License-Identifier: Apache-2.0
// The status port and application probes through it, as Istio's probe rewriting does: `sidecar
// inject` points the app's httpGet probes at /app-health/<container>/<livez|readyz|startupz> on
// the proxy's status port (--status-listen 0.0.0.0:15024, which serves only those paths,
// /healthz and /ready: the admin port's /config, /drain and /quitquitquit stay on loopback) and
// leaves the originals in $SIDECAR_APP_PROBES (a JSON object from each such path to {"httpGet":
// {path, port, host, scheme, httpHeaders}, "timeoutSeconds"}). The kubelet's probe then reaches
// the app on loopback whatever the inbound listener's mTLS mode, so STRICT does not fail the
// probes. HTTPS probes go over TLS without verifying the app's certificate, as the kubelet's do.
// The answer is the app's status code, or 503 with the reason when the app cannot be reached; each
// probe is bounded by its timeout (1 s by default, as the kubelet's) and cancelled when the
// kubelet goes away.
#include "roles/proxy/proxy_probe.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/admin.h"
#include "net/h1client.h"
#include "net/tls.h"

#define MAX_PROBES 64
#define MAX_PROBE_HEADERS 16

struct probe {
    char *path;   /* the admin path, /app-health/... */
    char *target; /* the app's path */
    char *host;   /* the Host header (host:port) */
    struct sockaddr_storage addr;
    uint64_t timeout_ms;
    struct sc_http_header headers[MAX_PROBE_HEADERS + 2];
    size_t nheaders;
    char *names[MAX_PROBE_HEADERS];
    char *values[MAX_PROBE_HEADERS];
    uv_loop_t *loop;
    struct sc_admin *admin;
    bool https; /* over TLS, the certificate not verified (the kubelet's way) */
};

/* One probe in flight: the kubelet's pending request and the client request to the app. */
struct flight {
    struct sc_admin_pending *pending;
    struct sc_h1cli *cli;
};

static struct probe probes[MAX_PROBES];
static size_t nprobes;
static struct sc_tls_ctx *probe_tls; /* made with the first HTTPS probe */

const struct sc_opt proxy_status_opts[] = {
    { .name = "status_listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_status_cfg, listen),
      .help = "serve /healthz, /ready and the app's rewritten probes (/app-health/...) on this "
              "address, apart from the admin port, for the kubelet (`sidecar inject` sets "
              "0.0.0.0:15024); unset: the probes are served on the admin port",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .check = sc_addr_check },
    { 0 },
};

/* The client's wrap hook of an HTTPS probe: a TLS layer that accepts any certificate. */
static struct sc_xport *wrap_tls(void *arg, struct sc_xport *bottom)
{
    struct probe *p = arg;
    struct sc_tls_xport_args a = {
        .loop = p->loop,
        .below = bottom,
        .cbs = bottom->cbs,
        .owner = bottom->owner,
    };
    return sc_tls_xport_new(probe_tls, &a);
}

static void on_cancel(void *arg)
{
    struct flight *f = arg;
    sc_h1cli_cancel(f->cli);
    sc_free(f);
}

static void on_done(void *arg, const struct sc_h1cli_resp *resp)
{
    struct flight *f = arg;
    if (resp->error) {
        char body[160];
        int n = snprintf(body, sizeof(body), "app probe failed: %s\n",
                         resp->reason ? resp->reason : sc_strerror(resp->error));
        sc_admin_answer(f->pending, 503, NULL,
                        sc_str_n(body, n > 0 && (size_t)n < sizeof(body) ? (size_t)n : 0));
    } else {
        sc_admin_answer(f->pending, resp->status, NULL, SC_STR(""));
    }
    sc_free(f);
}

static void h_probe(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct probe *p = arg;
    (void)req;
    struct sc_h1cli_req r = {
        .method = SC_STR("GET"),
        .target = sc_str_c(p->target),
        .headers = p->headers,
        .nheaders = p->nheaders,
        .timeout_ms = p->timeout_ms,
        .head_only = true,
        .wrap = p->https ? wrap_tls : NULL,
        .wrap_arg = p,
    };
    struct flight *f = SC_NEW(struct flight);
    int rc = sc_h1cli_send(p->loop, (struct sockaddr *)&p->addr, &r, on_done, f, &f->cli);
    if (rc < 0) {
        sc_free(f);
        resp->status = 503;
        sc_buf_appendf(&resp->body, "app probe failed: %s\n", sc_strerror(rc));
        return;
    }
    f->pending = sc_admin_defer(p->admin, on_cancel, f);
}

static void probe_free(struct probe *p)
{
    sc_free(p->path);
    sc_free(p->target);
    sc_free(p->host);
    for (size_t i = 0; i < MAX_PROBE_HEADERS; i++) {
        sc_free(p->names[i]);
        sc_free(p->values[i]);
    }
    memset(p, 0, sizeof(*p));
}

static char *json_str_dup(json_t *o, const char *key, const char *def)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v || def ? sc_strdup(v ? v : def) : NULL;
}

/* Fills <p> from one entry of $SIDECAR_APP_PROBES. Returns 0 or SC_EINVAL with <*why>. */
static int probe_load(struct probe *p, const char *path, json_t *entry, const char **why)
{
    json_t *hg = json_object_get(entry, "httpGet");
    json_t *port = json_object_get(hg, "port");
    if (!json_is_object(hg) || !json_is_integer(port) || json_integer_value(port) < 1 ||
        json_integer_value(port) > 65535 || path[0] != '/') {
        *why = "an entry needs httpGet with a numeric port";
        return SC_EINVAL;
    }
    p->path = sc_strdup(path);
    p->target = json_str_dup(hg, "path", "/");
    if (p->target[0] != '/') {
        *why = "httpGet.path must start with /";
        return SC_EINVAL;
    }
    const char *scheme = json_string_value(json_object_get(hg, "scheme"));
    p->https = scheme && strcasecmp(scheme, "HTTPS") == 0;
    /* The app listens on the pod's address, which loopback reaches; a host that is an address
     * is used as it is, a name only names the Host header. */
    const char *host = json_string_value(json_object_get(hg, "host"));
    int pn = (int)json_integer_value(port);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&p->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&p->addr;
    if (host && inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)pn);
    } else {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)pn);
        if (!host || inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
            a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        }
    }
    p->host = sc_asprintf("%s:%d", host ? host : "127.0.0.1", pn);
    json_t *t = json_object_get(entry, "timeoutSeconds");
    p->timeout_ms = json_is_integer(t) && json_integer_value(t) > 0
                        ? (uint64_t)json_integer_value(t) * 1000
                        : 1000; /* the kubelet's default */
    /* The kubelet's headers, replaced by the probe's own of the same name. */
    bool has_host = false, has_ua = false;
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(hg, "httpHeaders"), i, h)
    {
        const char *n = json_string_value(json_object_get(h, "name"));
        const char *v = json_string_value(json_object_get(h, "value"));
        if (!n || !v || p->nheaders >= MAX_PROBE_HEADERS) {
            continue;
        }
        p->names[p->nheaders] = sc_strdup(n);
        p->values[p->nheaders] = sc_strdup(v);
        has_host |= strcasecmp(n, "host") == 0;
        has_ua |= strcasecmp(n, "user-agent") == 0;
        p->headers[p->nheaders] = (struct sc_http_header){ sc_str_c(p->names[p->nheaders]),
                                                           sc_str_c(p->values[p->nheaders]) };
        p->nheaders++;
    }
    if (!has_host) {
        p->headers[p->nheaders++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(p->host) };
    }
    if (!has_ua) {
        p->headers[p->nheaders++] =
            (struct sc_http_header){ SC_STR("User-Agent"), SC_STR("kube-probe/1.29") };
    }
    return 0;
}

/* The client context of HTTPS probes: no verification, as the kubelet's. */
static int probe_tls_init(char **err)
{
    if (probe_tls) {
        return 0;
    }
    struct sc_tls_client_opts o = { .insecure_skip_verify = true };
    char *why = NULL;
    probe_tls = sc_tls_ctx_new_client(&o, NULL, &why);
    if (!probe_tls) {
        *err = sc_asprintf("HTTPS app probes: %s", why ? why : "no TLS client context");
        sc_free(why);
        return SC_ECONFIG;
    }
    return 0;
}

int proxy_probe_start(struct sc_admin *admin, uv_loop_t *loop, char **err)
{
    const char *env = getenv("SIDECAR_APP_PROBES");
    if (!env || !*env || !admin) {
        return 0;
    }
    json_error_t jerr;
    json_t *all = json_loads(env, 0, &jerr);
    if (!json_is_object(all)) {
        *err = sc_asprintf("SIDECAR_APP_PROBES: not a JSON object: %s", jerr.text);
        json_decref(all);
        return SC_ECONFIG;
    }
    int rc = 0;
    const char *path;
    json_t *entry;
    json_object_foreach(all, path, entry)
    {
        if (nprobes >= MAX_PROBES) {
            break;
        }
        struct probe *p = &probes[nprobes];
        const char *why = NULL;
        if (probe_load(p, path, entry, &why) < 0) {
            *err = sc_asprintf("SIDECAR_APP_PROBES: %s: %s", path, why);
            probe_free(p);
            rc = SC_ECONFIG;
            break;
        }
        if (p->https && (rc = probe_tls_init(err)) < 0) {
            probe_free(p);
            break;
        }
        p->loop = loop;
        p->admin = admin;
        sc_admin_handle(admin, "GET", p->path, h_probe, p);
        nprobes++;
    }
    json_decref(all);
    return rc;
}

void proxy_probe_stop(void)
{
    for (size_t i = 0; i < nprobes; i++) {
        probe_free(&probes[i]);
    }
    nprobes = 0;
    sc_tls_ctx_unref(probe_tls);
    probe_tls = NULL;
}
