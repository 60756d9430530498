// SPDX-License-Identifier: Apache-2.0
// Egress HTTP client: libcurl's multi interface driven by the role's libuv loop (socket polls and
// one timer), so Loki, Elasticsearch, Pushgateway, remote_write, config URLs and Vault are all
// reached without threads and with curl's TLS, proxies, auth and HTTP/2. One client per loop.
// Every transfer is bounded: a deadline, a connect deadline, and a cap on the response body kept.
// Connections are bounded per client: SC_EGRESS_MAX_CONNECTIONS in all and
// SC_EGRESS_MAX_HOST_CONNECTIONS to one host; transfers beyond them wait in curl's queue for a
// connection (their deadline runs meanwhile). A stream (an etcd watch) holds its connection.
#ifndef SC_NET_EGRESS_H
#define SC_NET_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/str.h"

/* Open connections of one client (one loop), and of those to one host:port. */
#define SC_EGRESS_MAX_CONNECTIONS 256
#define SC_EGRESS_MAX_HOST_CONNECTIONS 64

struct sc_egress;
struct sc_egress_xfer;

/* TLS and authentication settings, shared by the requests that point at them (borrowed). */
struct sc_egress_tls {
    const char *ca_file;   /* PEM bundle to verify the server; NULL: the system store */
    const char *cert_file; /* client certificate (mTLS), PEM */
    const char *key_file;  /* its key, PEM */
    bool insecure_skip_verify;
};

struct sc_egress_req {
    const char *method;          /* "GET", "POST", "PUT", "DELETE", ...; NULL means GET */
    const char *url;             /* http:// or https:// */
    const struct sc_kv *headers; /* extra request headers (borrowed until the callback) */
    size_t nheaders;
    /* Content codings to ask for ("gzip"), sent as Accept-Encoding (the way a caller adds that
     * header); the body is then decoded before it is kept or handed to on_data. NULL: none asked,
     * none decoded. */
    const char *accept_encoding;
    const void *body; /* request body (borrowed until the callback), may be NULL */
    size_t body_len;
    uint64_t timeout_ms;         /* whole transfer deadline; 0: 30 s */
    uint64_t connect_timeout_ms; /* 0: 5 s */
    size_t max_response;         /* response body cap; 0: 16 MiB; over it: SC_ETOOBIG */
    const char *bearer_token;    /* Authorization: Bearer ... (borrowed) */
    const char *basic_user;      /* basic auth when set (borrowed) */
    const char *basic_password;
    const struct sc_egress_tls *tls;
    /* When set, response body bytes are delivered here as they arrive instead of being kept
     * (for streams such as etcd watches); return false to abort the transfer. */
    bool (*on_data)(void *arg, const char *p, size_t len);
    /* The request or its response carries secrets (Vault): the response body and header buffers
     * and the request header lines this client built are zeroed when they are grown or freed.
     * libcurl's own copies (socket and TLS buffers, CURLOPT strings) are not. */
    bool sensitive;
};

struct sc_egress_resp {
    int error;             /* 0, or a negative code: SC_ETIMEDOUT, -ECONNREFUSED, SC_ETOOBIG,
                              SC_ECLOSED (client closed), SC_EHTTP (protocol error),
                              -ECANCELED (on_data returned false), -EIO (other) */
    const char *error_msg; /* a human-readable reason when error != 0 (curl's message) */
    int status;            /* HTTP status, or 0 when no response head arrived */
    struct sc_str body;    /* the response body (empty with on_data), valid during the callback */
    double seconds;        /* total transfer time */
    const void *priv;      /* for sc_egress_resp_header */
};

/* Called once per transfer, on the loop, unless the transfer was cancelled. */
typedef void (*sc_egress_cb)(void *arg, const struct sc_egress_resp *resp);

/* Returns a new client on <loop>, or NULL (logged) when libcurl cannot be loaded. libcurl is
 * loaded and initialised by the first call in the process. */
struct sc_egress *sc_egress_new(uv_loop_t *loop);

/* Starts <req> (the strings and body it points to are borrowed until the callback). Returns 0
 * and, when <out> is not NULL, a handle for sc_egress_cancel; or a negative error, in which case
 * <cb> is never called: -EINVAL (a method or header name that is not a token, a header value or
 * token with CR/LF, body_len without body) or SC_ECLOSED (the client is closing). May be called
 * from any callback, on_data included. Proxies come from the environment (http_proxy,
 * https_proxy, no_proxy) as curl does by default; redirects are not followed. */
int sc_egress_send(struct sc_egress *e, const struct sc_egress_req *req, sc_egress_cb cb, void *arg,
                   struct sc_egress_xfer **out);

/* Cancels a transfer that has not called back yet; its callback is never called. */
void sc_egress_cancel(struct sc_egress_xfer *x);

/* Returns the value of response header <name> (case-insensitive) from the final response (not
 * 1xx or a proxy's CONNECT reply), or an empty view. Valid during the callback only. */
struct sc_str sc_egress_resp_header(const struct sc_egress_resp *resp, const char *name);

/* Returns the value of header <name> (case-insensitive) of the response <x> is receiving, or an
 * empty view: from on_data, where the final response's header block is complete, to tell how to
 * read the body as it streams. Valid until on_data returns. */
struct sc_str sc_egress_xfer_header(const struct sc_egress_xfer *x, const char *name);

/* Cancels every transfer (each callback fires once with error SC_ECLOSED), closes the handles
 * and frees the client once they have closed. NULL-safe. */
void sc_egress_close(struct sc_egress *e);

#endif
