// SPDX-License-Identifier: Apache-2.0
// The proxy's status port and the app's probes forwarded through it (proxy_probe.c).
#ifndef SC_ROLES_PROXY_PROXY_PROBE_H
#define SC_ROLES_PROXY_PROXY_PROBE_H

#include "core/config.h"

#include <uv.h>

struct sc_admin;

/* The status port: what the kubelet reaches on the pod's address. */
struct proxy_status_cfg {
    char *listen; /* NULL: none; health and the app's probes are served on the admin port */
};

/* Its option rows, embedded inline in the proxy's top level. */
extern const struct sc_opt proxy_status_opts[];

/* Registers GET <path> on <admin> (the status server, else the admin server) for every probe in
 * $SIDECAR_APP_PROBES (written by `sidecar inject`), each forwarded to the app on <loop>. Nothing
 * without the variable or a server. Returns 0, or SC_ECONFIG with a new message in <*err> for a
 * variable that is not the expected JSON. */
int proxy_probe_start(struct sc_admin *admin, uv_loop_t *loop, char **err);

/* Frees the probes (their server is gone). */
void proxy_probe_stop(void);

#endif
