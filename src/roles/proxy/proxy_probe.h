// SPDX-License-Identifier: Apache-2.0
// The app's probes forwarded through the proxy's admin port (proxy_probe.c).
#ifndef SC_ROLES_PROXY_PROXY_PROBE_H
#define SC_ROLES_PROXY_PROXY_PROBE_H

#include <uv.h>

struct sc_admin;

/* Registers GET <path> on <admin> for every probe in $SIDECAR_APP_PROBES (written by `sidecar
 * inject`), each forwarded to the app on <loop>. Nothing without the variable or an admin
 * server. Returns 0, or SC_ECONFIG with a new message in <*err> for a variable that is not the
 * expected JSON. */
int proxy_probe_start(struct sc_admin *admin, uv_loop_t *loop, char **err);

/* Frees the probes (the admin server is gone). */
void proxy_probe_stop(void);

#endif
