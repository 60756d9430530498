// SPDX-License-Identifier: Apache-2.0
// gRPC health checks (proxy_health_grpc.c): the grpc.health.v1.Health/Check call a cluster's
// health_check makes instead of an HTTP GET when it has a `grpc` block, over HTTP/2 (cleartext
// with prior knowledge, or the cluster's TLS), and the two protobuf messages of that call,
// encoded and decoded by hand (bounded; the reply parser has a fuzz target).
#ifndef SC_ROLES_PROXY_PROXY_HEALTH_GRPC_H
#define SC_ROLES_PROXY_PROXY_HEALTH_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/config.h"
#include "net/transport.h"

/* The longest service name a check sends (bytes). */
#define PROXY_HC_GRPC_MAX_SERVICE 256
/* The largest reply body a check reads (a HealthCheckResponse is 2 bytes and a 5-byte frame). */
#define PROXY_HC_GRPC_MAX_REPLY 4096

/* health_check.grpc as loaded: present (<set>) or not. */
struct proxy_hc_grpc_cfg {
    bool set;        /* the block is present: gRPC checks instead of HTTP */
    char *service;   /* HealthCheckRequest.service; NULL or "": the whole server */
    char *authority; /* :authority; NULL: health_check.host, else the endpoint */
};

/* The keys of health_check.grpc. */
extern const struct sc_opt proxy_hc_grpc_opts[];

/* The check callback of the `grpc` entry: marks the block present (sets <set>). */
int proxy_hc_grpc_mark(void *field, char **err);

/* ServingStatus values (grpc/health/v1/health.proto). */
enum {
    PROXY_HC_GRPC_UNKNOWN = 0,
    PROXY_HC_GRPC_SERVING = 1,
    PROXY_HC_GRPC_NOT_SERVING = 2,
    PROXY_HC_GRPC_SERVICE_UNKNOWN = 3,
};

/* Writes the request body for <service> (NULL or "": none) into <out> (room for <cap> bytes):
 * one uncompressed gRPC message holding HealthCheckRequest{service}. Returns its length, or -1
 * when <service> is longer than PROXY_HC_GRPC_MAX_SERVICE or <cap> is short. */
int proxy_hc_grpc_encode(const char *service, uint8_t *out, size_t cap);

/* Parses reply body <p>/<n>: exactly one uncompressed gRPC message holding a HealthCheckResponse
 * (unknown fields skipped, as protobuf wants). Sets <*status> to its ServingStatus (0 when the
 * field is absent; -1 for a value outside int32) and returns 0, or returns -1 with a static
 * reason in <*why> (no message, truncated, compressed, trailing bytes, malformed protobuf). Reads
 * nothing outside <p>/<n>. */
int proxy_hc_grpc_parse(const uint8_t *p, size_t n, int *status, const char **why);

/* The name of ServingStatus <status> ("SERVING", ...; "invalid" for others). */
const char *proxy_hc_grpc_status_name(int status);

/* ---- one check ---- */

struct proxy_hc_grpc_call;
struct proxy_endpoint;

/* What one check sends. Borrowed for the call to proxy_hc_grpc_send only. */
struct proxy_hc_grpc_req {
    const char *service;   /* NULL: the whole server */
    const char *authority; /* :authority */
    uint64_t timeout_ms;   /* connect, handshake and reply */
    /* Stacks the cluster's TLS layer on the TCP transport (as sc_h1cli_req.wrap); NULL: none. */
    struct sc_xport *(*wrap)(void *arg, struct sc_xport *bottom);
    void *wrap_arg;
};

/* Calls Health/Check on <addr> over a connection of its own; <cb> fires once with <arg> (<ok> when
 * the reply said SERVING, else <why> says what failed), never from inside this call and never
 * after proxy_hc_grpc_cancel. Stores the call in <*out> for
 * cancelling. Returns 0, or a negative error and then no callback. */
int proxy_hc_grpc_send(uv_loop_t *loop, const struct sockaddr *addr,
                       const struct proxy_hc_grpc_req *req, sc_oneshot_verdict_cb cb, void *arg,
                       struct proxy_hc_grpc_call **out);

/* Abandons a call whose callback has not fired (it frees itself once its handles closed).
 * NULL-safe. */
void proxy_hc_grpc_cancel(struct proxy_hc_grpc_call *c);

#endif
