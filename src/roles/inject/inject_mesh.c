// SPDX-License-Identifier: Apache-2.0
// The mesh config of the injector (--mesh-config FILE, the same file for `sidecar inject` and
// `sidecar webhook`): what is added to a pod when its annotations do not say otherwise. Declared
// once as an option table, inlined in both roles' tables (so the keys may also sit in the role's
// -c file, and `sidecar docs inject` lists them), so defaults, validation, `file:line:col` errors
// and the reference docs come from the same place.
#include "roles/inject/inject.h"

#include <stddef.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

static const char *const identities[] = { "projected", "csi", "none", NULL };

static int check_roles(void *field, char **err)
{
    static const char *const known[] = { "proxy", "logs", "metrics", "secrets" };
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        bool ok = false;
        for (size_t k = 0; k < SC_ARRAY_LEN(known); k++) {
            ok = ok || strcmp(v->v[i], known[k]) == 0;
        }
        if (!ok) {
            *err = sc_asprintf("unknown role \"%s\" (proxy, logs, metrics, secrets)", v->v[i]);
            return SC_ECONFIG;
        }
    }
    return 0;
}

static int check_ports(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        uint64_t port;
        if (sc_str_to_u64(sc_str_c(v->v[i]), 65535, &port) < 0 || port == 0) {
            *err = sc_asprintf("\"%s\" is not a port number", v->v[i]);
            return SC_ECONFIG;
        }
    }
    return 0;
}

const struct sc_opt inject_mesh_opts[] = {
    { .name = "image",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, image),
      .def = "sidecar:" SC_VERSION,
      .help = "the sidecar image every injected container runs (push `make image` to your "
              "registry and name it here)" },
    { .name = "image_pull_policy",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, image_pull_policy),
      .def = "IfNotPresent",
      .help = "imagePullPolicy of the injected containers" },
    { .name = "roles",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, roles),
      .def = "proxy",
      .help = "roles injected when a pod names none (sidecar.dev/roles): proxy, logs, metrics, "
              "secrets",
      .check = check_roles },
    { .name = "trust_domain",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, trust_domain),
      .def = "cluster.local",
      .help = "SPIFFE trust domain of workload identities "
              "(spiffe://<trust_domain>/ns/<namespace>/sa/<service account>)" },
    { .name = "rewrite_probes",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct inject_mesh, rewrite_probes),
      .def = "true",
      .help = "rewrite the app's HTTP probes to /app-health/... on the proxy's status port "
              "(15024), which forwards them to the app, so STRICT mTLS does not break kubelet "
              "probes (see docs/kubernetes.md)" },
    { .name = "hold_application",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct inject_mesh, hold_application),
      .def = "true",
      .help = "classic mode: the proxy's postStart hook waits for its readiness, so the app "
              "starts after it" },
    { .name = "podinfo",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct inject_mesh, podinfo),
      .def = "true",
      .help = "give the sidecars the downward API volume at /etc/podinfo (labels, annotations; "
              "the secrets role needs it); false for runtimes without downwardAPI volumes "
              "(podman kube play 4)" },
    { .name = "identity",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct inject_mesh, identity),
      .def = "projected",
      .help = "the proxy's identity volume: projected (a service-account token and the CA "
              "bundle ConfigMap), csi (a certificate from cert-manager's CSI driver), none",
      .enums = identities },
    { .name = "identity_issuer",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, identity_issuer),
      .def = "sidecar-mesh-ca",
      .help = "identity: csi: the cert-manager issuer that signs workload certificates" },
    { .name = "identity_issuer_kind",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, identity_issuer_kind),
      .def = "ClusterIssuer",
      .help = "identity: csi: Issuer or ClusterIssuer" },
    { .name = "identity_audience",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, identity_audience),
      .def = "sidecar",
      .help = "identity: projected: the audience of the service-account token" },
    { .name = "ca_configmap",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, ca_configmap),
      .def = "sidecar-ca-root",
      .help = "identity: projected: the ConfigMap holding the trust bundle as ca.crt" },
    { .name = "exclude_inbound_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, exclude_inbound_ports),
      .help = "inbound ports never intercepted, besides the sidecars' own",
      .check = check_ports },
    { .name = "exclude_outbound_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, exclude_outbound_ports),
      .help = "outbound ports never intercepted",
      .check = check_ports },
    { .name = "exclude_outbound_cidrs",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, exclude_outbound_cidrs),
      .help = "outbound address ranges never intercepted" },
    { .name = "cpu_request",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, cpu_request),
      .def = "10m",
      .help = "CPU request of each sidecar container" },
    { .name = "memory_request",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, memory_request),
      .def = "16Mi",
      .help = "memory request of each sidecar container" },
    { .name = "cpu_limit",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, cpu_limit),
      .def = "1",
      .help = "CPU limit of each sidecar container (empty: none)" },
    { .name = "memory_limit",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, memory_limit),
      .def = "128Mi",
      .help = "memory limit of each sidecar container (empty: none)" },
    { .name = "uid",
      .type = SC_OPT_INT,
      .offset = offsetof(struct inject_mesh, uid),
      .def = "1337",
      .help = "user and group id the sidecars run as (the iptables rules exempt it)",
      .min = 1,
      .max = 2147483647 },
    { .name = "logs_path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, logs_path),
      .def = "/var/log/app",
      .help = "logs role: the directory the app writes *.log files to (a shared emptyDir)" },
    { .name = "logs_output",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, logs_output),
      .def = "stdout",
      .help = "logs role: outputs, as the logs role's --output (stdout, loki=URL, "
              "elasticsearch=URL, http=URL)" },
    { .name = "logs_parser",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, logs_parser),
      .def = "none",
      .help = "logs role: parser (none, json, logfmt, cri)" },
    { .name = "metrics_port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct inject_mesh, metrics_port),
      .def = "9090",
      .help = "metrics role: the port Prometheus scrapes (the pod's prometheus.io/port is "
              "pointed at it)",
      .min = 1,
      .max = 65535 },
    { .name = "vault_addr",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_mesh, vault_addr),
      .def = "https://vault.vault.svc:8200",
      .help = "secrets role: Vault's address (a pod's vault.hashicorp.com/service overrides)" },
    { .name = "exclude_namespaces",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct inject_mesh, exclude_namespaces),
      .help = "webhook: namespaces never injected, besides kube-system and kube-public" },
    { 0 },
};

int inject_mesh_load(struct inject_mesh *m, const char *path, char **err)
{
    if (path && sc_config_load_file(inject_mesh_opts, m, path, err) < 0) {
        return SC_ECONFIG;
    }
    return 0;
}
