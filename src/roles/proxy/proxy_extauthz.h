// SPDX-License-Identifier: Apache-2.0
// External authorization for CUSTOM AuthorizationPolicies: Istio's `envoyExtAuthzHttp` extension
// provider, Envoy's ext_authz HTTP contract (nginx auth_request, oauth2-proxy's /oauth2/auth).
// The request's method, path (path_prefix + the normalised target) and chosen headers go to the
// authorizer; a 2xx allows, copying named headers of its answer into the upstream request; any
// other status goes back to the client with the authorizer's body and headers; an error or a
// timeout denies with status_on_error unless fail_open. While the check runs the exchange keeps a
// copy of the request head and reads nothing more from the client.
#ifndef SC_ROLES_PROXY_PROXY_EXTAUTHZ_H
#define SC_ROLES_PROXY_PROXY_EXTAUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"

struct proxy_extauthz_cfg {
    char *name;
    char *service; /* host name or address of the authorizer */
    int64_t port;
    char *path_prefix;
    uint64_t timeout_ms;
    bool fail_open;
    int64_t status_on_error;
    struct sc_strv include_request_headers_in_check;
    struct sc_kvv include_additional_headers_in_check;
    struct sc_strv headers_to_upstream_on_allow;
    struct sc_strv headers_to_downstream_on_deny;
};

extern const struct sc_opt proxy_extauthz_opts[]; /* one provider (envoy_ext_authz_http) */

struct proxy_extauthz; /* a compiled provider */

/* Compiles provider <c> (its address resolved now, at load). Returns it or NULL with a new
 * message in <*err>. Main loop only. */
struct proxy_extauthz *proxy_extauthz_new(const struct proxy_extauthz_cfg *c,
                                          struct sc_metric_family *fam, char **err);
void proxy_extauthz_free(struct proxy_extauthz *p);

/* Registers sidecar_ext_authz_total{provider,result}. */
struct sc_metric_family *proxy_extauthz_metrics(struct sc_metrics *reg);

#endif
