// SPDX-License-Identifier: Apache-2.0
// The webhook's HTTPS server: what the API server talks to. It is the admin server's routing on
// the HTTP/1.1 server of net/h1server.h with a TLS layer (net/tls) stacked on every accepted
// connection through the server's wrap hook, from a reloadable store, so a renewed certificate and
// key (cert-manager rewriting the secret volume) serve new connections without a restart while
// open ones keep theirs. Requests are HTTP/1.1 with keep-alive (the API server reuses
// connections), answered in order; bounded: 256 connections (one more gets 503), 64 KiB heads,
// 1 MiB bodies (413), connections idle for 60 s are closed.
#include "roles/inject/webhook.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/tls.h"

#define HS_MAX_CONNS 256

struct webhook_https {
    uv_loop_t *loop;
    struct sc_admin *admin;
    struct sc_tls_store *store;
};

/* The server's wrap hook: the current certificate's TLS layer on the accepted connection. */
static struct sc_xport *wrap_tls(void *arg, struct sc_xport *bottom)
{
    struct webhook_https *s = arg;
    struct sc_tls_ctx *ctx = sc_tls_store_get(s->store);
    struct sc_tls_xport_args args = {
        .loop = s->loop,
        .below = bottom,
        .cbs = bottom->cbs,
        .owner = bottom->owner,
    };
    struct sc_xport *tls = sc_tls_xport_new(ctx, &args);
    sc_tls_ctx_unref(ctx);
    return tls;
}

struct webhook_https *webhook_https_new(uv_loop_t *loop, const char *cert, const char *key,
                                        char **err)
{
    struct sc_tls_server_opts o;
    memset(&o, 0, sizeof(o));
    sc_config_defaults(sc_tls_server_opt_table, &o);
    sc_free(o.cert);
    sc_free(o.key);
    o.cert = sc_strdup(cert);
    o.key = sc_strdup(key);
    struct sc_tls_store *store = sc_tls_store_new_server(&o, "webhook", err);
    sc_config_free(sc_tls_server_opt_table, &o);
    if (!store) {
        return NULL;
    }
    struct webhook_https *s = sc_calloc(1, sizeof(*s));
    s->loop = loop;
    s->store = store;
    s->admin = sc_admin_new(loop);
    sc_admin_set_wrap(s->admin, wrap_tls, s);
    sc_admin_set_max_conns(s->admin, HS_MAX_CONNS);
    return s;
}

void webhook_https_handle(struct webhook_https *s, const char *method, const char *path,
                          sc_admin_handler_cb cb, void *arg)
{
    sc_admin_handle(s->admin, method, path, cb, arg);
}

int webhook_https_listen(struct webhook_https *s, const char *addr, char **err)
{
    char *why = NULL;
    int rc = sc_admin_listen(s->admin, addr, &why);
    if (rc < 0) {
        *err = rc == SC_ECONFIG || rc == SC_EINVAL
                   ? why
                   : sc_asprintf("webhook: cannot listen on %s: %s", addr, uv_strerror(rc));
        if (*err != why) {
            sc_free(why);
        }
        return rc;
    }
    return sc_tls_store_watch(s->store, s->loop, 0);
}

int webhook_https_address(struct webhook_https *s, char *out, size_t outlen)
{
    return sc_admin_address(s->admin, out, outlen);
}

void webhook_https_close(struct webhook_https *s)
{
    if (!s) {
        return;
    }
    /* Open connections keep the context they were made with (a reference of their own). */
    sc_admin_close(s->admin);
    sc_tls_store_free(s->store);
    sc_free(s);
}
