// SPDX-License-Identifier: Apache-2.0
// The one list of roles. A new role adds its descriptor here and nowhere else.
#include "roles.h"

#include <string.h>

extern const struct sc_role sc_role_proxy;
extern const struct sc_role sc_role_metrics;
extern const struct sc_role sc_role_logs;
extern const struct sc_role sc_role_config;
extern const struct sc_role sc_role_secrets;
extern const struct sc_role sc_role_pod;
extern const struct sc_role sc_role_iptables;
extern const struct sc_role sc_role_inject;
extern const struct sc_role sc_role_webhook;
extern const struct sc_role sc_role_wait;

const struct sc_role *const sc_roles[] = {
    &sc_role_proxy, &sc_role_metrics,  &sc_role_logs,   &sc_role_config,  &sc_role_secrets,
    &sc_role_pod,   &sc_role_iptables, &sc_role_inject, &sc_role_webhook, &sc_role_wait,
};

const size_t sc_nroles = sizeof(sc_roles) / sizeof(sc_roles[0]);

const struct sc_role *sc_role_find(const char *name)
{
    for (size_t i = 0; i < sc_nroles; i++) {
        if (strcmp(sc_roles[i]->name, name) == 0) {
            return sc_roles[i];
        }
    }
    return NULL;
}
