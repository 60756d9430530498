// SPDX-License-Identifier: Apache-2.0
// The table of roles: every `sidecar <role>` the binary knows, in the order --help lists them.
// The table is fixed at build time and read-only; a role appears in it exactly once.
#ifndef SC_ROLES_H
#define SC_ROLES_H

#include <stddef.h>

#include "app.h"

extern const struct sc_role *const sc_roles[];
extern const size_t sc_nroles;

/* Returns the role named <name>, or NULL. */
const struct sc_role *sc_role_find(const char *name);

#endif
