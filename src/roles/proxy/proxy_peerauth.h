// SPDX-License-Identifier: Apache-2.0
// Istio's PeerAuthentication for the proxy: which mutual-TLS mode (STRICT, PERMISSIVE, DISABLE)
// the workload's inbound listeners use, from policies at mesh (the root namespace, no selector),
// namespace (no selector) and workload (a selector matching the workload's labels) scope, with
// per-port overrides. The workload (namespace, labels, service account) comes from the config, the
// environment (POD_NAMESPACE) and the Kubernetes downward API labels file. Pure functions of the
// loaded config: nothing here touches a connection.
#ifndef SC_ROLES_PROXY_PROXY_PEERAUTH_H
#define SC_ROLES_PROXY_PROXY_PEERAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* Istio's modes; UNSET inherits from the scope above. Values match enum proxy_mtls. */
enum proxy_pa_mode { PROXY_PA_UNSET, PROXY_PA_STRICT, PROXY_PA_PERMISSIVE, PROXY_PA_DISABLE };

#define PROXY_PA_MAX_PORTS 32

struct proxy_workload_cfg {
    char *ns;              /* "namespace"; default $POD_NAMESPACE, else "default" */
    struct sc_kvv labels;  /* added to (and winning over) those of labels_file */
    char *labels_file;     /* the downward API file, key="value" per line */
    char *service_account; /* informational (the identity's SPIFFE ID names it too) */
};

struct proxy_pa_port_cfg {
    int64_t port;
    int mode;
};

/* One PeerAuthentication (security.istio.io/v1 spec, as our keys). */
struct proxy_pa_cfg {
    char *name;
    char *ns;                      /* "namespace": the policy's namespace */
    struct sc_kvv match_labels;    /* selector.matchLabels; empty: the whole namespace */
    int mode;                      /* mtls.mode */
    struct sc_vec port_level_mtls; /* struct proxy_pa_port_cfg; only with a selector */
};

extern const struct sc_opt proxy_workload_opts[];
extern const struct sc_opt proxy_pa_opts[];
/* The names of enum proxy_pa_mode as Istio writes them (UNSET, STRICT, PERMISSIVE, DISABLE). */
extern const char *const proxy_pa_mode_names[];

/* The workload as resolved: namespace and labels (owned, up to 64). */
struct proxy_workload {
    char *ns;
    struct sc_kv labels[64];
    size_t nlabels;
};

/* Resolves <c> into <w>: the namespace from the config, else $POD_NAMESPACE, else "default";
 * labels from <c>->labels_file (or /etc/podinfo/labels when unset and present) with <c>->labels
 * on top. Returns 0, or SC_ECONFIG with a new message in <*err> when a configured labels file
 * cannot be read or a line is not key="value". Free with proxy_workload_cleanup. */
int proxy_workload_init(struct proxy_workload *w, const struct proxy_workload_cfg *c, char **err);
void proxy_workload_cleanup(struct proxy_workload *w);

/* Whether workload <w> has every label of <match_labels> (an empty selector selects it). */
bool proxy_workload_selected(const struct proxy_workload *w, const struct sc_kvv *match_labels);

/* The effective policy for a workload: its mode and per-port overrides. */
struct proxy_pa_effective {
    int mode; /* never UNSET: PERMISSIVE when no scope sets one (Istio's default) */
    size_t nports;
    struct {
        int port;
        int mode; /* never UNSET */
    } ports[PROXY_PA_MAX_PORTS];
};

/* Resolves <pas> (<n> policies) for workload <w> with Istio's precedence: a workload policy (same
 * namespace, selector matching every one of its labels; the first one listed when several do) over
 * the namespace's policy (same namespace, no selector) over the mesh's (namespace <root_ns>, no
 * selector); an UNSET mode inherits from the scope above; port-level modes come from the
 * workload policy only, an UNSET one taking the workload's effective mode. */
void proxy_pa_resolve(const struct proxy_pa_cfg *pas, size_t n, const struct proxy_workload *w,
                      const char *root_ns, struct proxy_pa_effective *out);

/* The mode for connections to <port> (the port the client dialled). */
int proxy_pa_mode_for(const struct proxy_pa_effective *e, int port);

/* Checks what the option table cannot: port-level modes only with a selector, ports 1..65535 and
 * each listed once, names set. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_pa_check(const struct proxy_pa_cfg *pas, size_t n, char **err);

#endif
