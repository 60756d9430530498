// SPDX-License-Identifier: Apache-2.0
// Sidecar injection, shared by its two front ends: `sidecar inject` (manifests in, manifests out)
// and `sidecar webhook` (AdmissionReview in, JSONPatch out). One function decides and performs
// the injection into a pod template; everything else walks documents to find templates or turns
// the result into a patch. The mesh config (image, default roles, resources, identity, excluded
// ports) is one option table, loaded from --mesh-config by both front ends.
#ifndef SC_ROLES_INJECT_H
#define SC_ROLES_INJECT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/config.h"

/* The status annotation: present means injected; its value reads
 * "version=0.1.0;roles=proxy,logs;mode=native". */
#define INJECT_STATUS "sidecar.dev/status"
#define INJECT_PREFIX "sidecar.dev/"

enum inject_identity { INJECT_ID_PROJECTED, INJECT_ID_CSI, INJECT_ID_NONE };

struct inject_mesh {
    char *image;
    char *image_pull_policy;
    struct sc_strv roles;
    char *trust_domain;
    bool rewrite_probes;
    bool hold_application;
    bool podinfo;
    int identity;
    char *identity_issuer;
    char *identity_issuer_kind;
    char *identity_audience;
    char *ca_configmap;
    struct sc_strv exclude_inbound_ports;
    struct sc_strv exclude_outbound_ports;
    struct sc_strv exclude_outbound_cidrs;
    char *cpu_request;
    char *memory_request;
    char *cpu_limit;
    char *memory_limit;
    int64_t uid;
    char *logs_path;
    struct sc_strv logs_output;
    char *logs_parser;
    int64_t metrics_port;
    char *vault_addr;
    struct sc_strv exclude_namespaces;
};

/* The mesh config's option table (keys of the --mesh-config file). */
extern const struct sc_opt inject_mesh_opts[];

/* Loads the mesh config file <path> into <m> on top of its current values (the defaults, or
 * what the role's own -c file set: both front ends inline the mesh keys in their option table).
 * NULL <path> changes nothing. Returns 0, or SC_ECONFIG with a new "file:line:col: message" in
 * <*err>. */
int inject_mesh_load(struct inject_mesh *m, const char *path, char **err);

/* One injection run's settings: the mesh config (borrowed) and the choices the front end made
 * (native sidecars or classic containers, CNI instead of the init container). */
struct inject_opts {
    const struct inject_mesh *mesh;
    bool native;
    bool cni;
};

/* Fills <o> from the mesh config <m> (borrowed) and the front end's flags: native sidecars when
 * <native> and the cluster <version> (NULL: unknown) is 1.29 or later; <cni> drops the
 * sidecar-iptables init container. */
void inject_choose(const struct inject_mesh *m, bool native, const char *version, bool cni,
                   struct inject_opts *o);

/* What both front ends (`sidecar inject` and `sidecar webhook`) take, from one option table that
 * each embeds inline: the mesh config file, the mesh keys themselves, and the choices of native
 * sidecars, cluster version and CNI. */
struct inject_front {
    char *mesh_config;
    bool native;
    char *kubernetes_version;
    bool cni;
    struct inject_mesh mesh;
};

extern const struct sc_opt inject_front_opts[];

/* Checks what the option table cannot (the version's form). Returns 0 or SC_ECONFIG with a new
 * message in <*err>. */
int inject_front_check(const struct inject_front *f, char **err);

/* Loads the mesh config file over the inline keys, then fills <o> (which borrows f->mesh).
 * Returns 0 or SC_ECONFIG with a new message in <*err>. */
int inject_front_load(struct inject_front *f, struct inject_opts *o, char **err);

/* Reads a Kubernetes version ("1.28", "v1.30.2") into its minor number; -1 when it is not 1.x. */
int inject_k8s_minor(const char *v);

/* Injects into the pod template <tmpl> (an object with metadata and spec: a Pod, or a workload's
 * spec.template), in place. <where> prefixes field paths in errors ("document 2 (Deployment/web):
 * spec.template."). Returns 1 when it injected, 0 when it left <tmpl> unchanged (<*why> then names
 * the reason, static: "already injected", "sidecar.dev/inject is false", "hostNetwork pod", "no
 * roles"), or SC_ECONFIG with a new message in <*err> (then <tmpl> may be partly changed: callers
 * work on a copy). */
int inject_template(const struct inject_opts *o, json_t *tmpl, const char *where, const char **why,
                    char **err);

/* Injects into every pod template of the document <doc> (Pod, Deployment, StatefulSet,
 * DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, or a List of those); other kinds are
 * left alone. <index> (1-based) names the document in errors. Returns the number of templates
 * injected, or SC_ECONFIG with a new message in <*err>. */
int inject_document(const struct inject_opts *o, json_t *doc, size_t index, char **err);

/* Parses YAML (or JSON) <text> into a new JSON array of its non-empty documents, converted as
 * kubectl converts YAML (YAML 1.1 scalars, merge keys, aliases expanded), keys in order. Errors
 * read "<name>:line:col: message". Returns 0 or SC_ECONFIG / SC_ETOOBIG with a new <*err>. */
int inject_yaml_parse(const char *name, const char *text, size_t len, json_t **docs, char **err);

/* Appends <docs> (a JSON array, borrowed) to <out> as YAML documents separated by "---", in a
 * form that inject_yaml_parse reads back to the same JSON. Returns 0 or SC_ETOOBIG. */
int inject_yaml_emit(json_t *docs, struct sc_buf *out);

/* Returns true when the plain (unquoted) YAML scalar <s> reads as a string. */
bool inject_yaml_plain_is_string(const char *s);

/* Returns a new RFC 6902 JSON Patch (an array) that turns <from> into <to> (both borrowed):
 * objects are compared key by key, arrays of equal length element by element, and other changes
 * replace the value. */
json_t *inject_json_diff(json_t *from, json_t *to);

#endif
