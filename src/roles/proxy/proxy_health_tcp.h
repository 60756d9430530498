// SPDX-License-Identifier: Apache-2.0
// TCP health checks (proxy_health_tcp.c): the check a cluster's health_check makes instead of an
// HTTP GET when it has a `tcp` block, as Envoy's tcp_health_check: connect (over the cluster's
// TLS when it originates TLS), optionally write a payload, optionally read until every expected
// block has arrived, in order but not necessarily next to each other. Payloads are written in hex
// in the configuration. Invariant: a check reads at most PROXY_HC_TCP_MAX_REPLY bytes.
#ifndef SC_ROLES_PROXY_PROXY_HEALTH_TCP_H
#define SC_ROLES_PROXY_PROXY_HEALTH_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/config.h"
#include "net/transport.h"

/* The largest payload sent or expected (bytes, decoded), and the most reply a check reads. */
#define PROXY_HC_TCP_MAX_PAYLOAD 1024
#define PROXY_HC_TCP_MAX_RECV 8
#define PROXY_HC_TCP_MAX_REPLY 65536

/* health_check.tcp as loaded: present (<set>) or not. */
struct proxy_hc_tcp_cfg {
    bool set;               /* the block is present: TCP checks instead of HTTP */
    char *send;             /* hex bytes written once connected; NULL or "": none */
    struct sc_strv receive; /* hex blocks the reply must hold in order; empty: connect only */
};

/* The keys of health_check.tcp. */
extern const struct sc_opt proxy_hc_tcp_opts[];

/* The check callback of the `tcp` entry: marks the block present (sets <set>). */
int proxy_hc_tcp_mark(void *field, char **err);

/* Checks <c>'s payloads (hex, at most PROXY_HC_TCP_MAX_PAYLOAD bytes each). Returns 0, or
 * SC_ECONFIG with a new message naming <cluster> in <*err>. */
int proxy_hc_tcp_check(const struct proxy_hc_tcp_cfg *c, const char *cluster, char **err);

/* The decoded payloads of a checked block. */
struct proxy_hc_tcp_spec {
    uint8_t *send; /* NULL when none */
    size_t send_len;
    uint8_t *recv[PROXY_HC_TCP_MAX_RECV];
    size_t recv_len[PROXY_HC_TCP_MAX_RECV];
    size_t nrecv;
};

/* Returns the payloads of checked <c> as a new spec (NULL when <c> is not set). */
struct proxy_hc_tcp_spec *proxy_hc_tcp_spec_new(const struct proxy_hc_tcp_cfg *c);
void proxy_hc_tcp_spec_free(struct proxy_hc_tcp_spec *s);

/* Whether <reply> (<n> bytes) holds every block of <s> in order (each after the end of the one
 * before it). */
bool proxy_hc_tcp_matches(const struct proxy_hc_tcp_spec *s, const uint8_t *reply, size_t n);

/* One check in flight. */
struct proxy_hc_tcp_call;

/* What one check does. Borrowed for the duration of the call (the spec must outlive it). */
struct proxy_hc_tcp_req {
    const struct proxy_hc_tcp_spec *spec;
    uint64_t timeout_ms; /* connect, write and reply together */
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom); /* the cluster's TLS; optional */
    void *wrap_arg;
};

/* Starts a check of <addr>; <cb> fires once with the verdict and a reason, never from inside this
 * call and never after proxy_hc_tcp_cancel. Stores the call in <*out>. Returns 0 or a negative
 * error (then no callback). */
int proxy_hc_tcp_send(uv_loop_t *loop, const struct sockaddr *addr,
                      const struct proxy_hc_tcp_req *req, sc_oneshot_verdict_cb cb, void *arg,
                      struct proxy_hc_tcp_call **out);

/* Abandons the check (no callback); NULL-safe. */
void proxy_hc_tcp_cancel(struct proxy_hc_tcp_call *c);

#endif
