// SPDX-License-Identifier: Apache-2.0
// The pod runner's internal interface: the Pod manifest subset as plain structs (filled by the
// option tables of pod_manifest.c, so every unsupported field is an error with its position and
// path), and the pure helpers the supervisor uses (restart backoff, $(VAR) expansion, CRI log
// lines, Kubernetes quantities). Nothing here touches the loop; pod.c owns the processes.
#ifndef SC_ROLES_POD_H
#define SC_ROLES_POD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"

enum pod_action { POD_RUN, POD_CHECK, POD_STATUS };
enum pod_restart { POD_RESTART_ALWAYS, POD_RESTART_ONFAILURE, POD_RESTART_NEVER };

/* The role's own options (flags or the -c file); the manifest itself is a separate file. */
struct pod_cfg {
    int action;
    char *manifest;
    char *pod_dir;
    char *config_dir;
    uint64_t backoff_base_ms;
    uint64_t backoff_max_ms;
    uint64_t backoff_reset_ms;
    bool color;
    bool no_color;
    bool pod_network; /* own network namespace unless spec.hostNetwork: true */
    char *pod_ip;     /* "10.213.0.2/30": the pod's end of the veth pair */
    char *host_ip;    /* "10.213.0.1": the runner's end, the pod's default gateway */
    char *netns;      /* the namespace's name (ip netns); default sidecar-<pod name> */
    char *pod_ip6;    /* optional IPv6 pair: "fd00:215::2/64" */
    char *host_ip6;
};

/* Objects whose mere presence matters ("emptyDir: {}") start with <set>, which the loader's check
 * callback sets. */
struct pod_exec_action {
    bool set;
    struct sc_strv command;
};

struct pod_http_get {
    bool set;
    char *path;
    char *port; /* a number or a container port's name */
    char *host;
    char *scheme;
    struct sc_vec headers; /* struct pod_kv_pair */
};

struct pod_kv_pair {
    char *name;
    char *value;
};

struct pod_tcp_socket {
    bool set;
    char *port;
    char *host;
};

struct pod_sleep_action {
    bool set;
    int64_t seconds;
};

struct pod_handler {
    bool set;
    struct pod_exec_action exec;
    struct pod_http_get http_get;
    struct pod_tcp_socket tcp_socket;
    struct pod_sleep_action sleep;
};

struct pod_probe_spec {
    bool set;
    struct pod_exec_action exec;
    struct pod_http_get http_get;
    struct pod_tcp_socket tcp_socket;
    double initial_delay_s;
    double period_s;
    double timeout_s;
    int64_t success_threshold;
    int64_t failure_threshold;
};

struct pod_lifecycle {
    bool set;
    struct pod_handler post_start;
    struct pod_handler pre_stop;
};

struct pod_key_ref {
    bool set;
    char *name;
    char *key;
    bool optional;
};

struct pod_field_ref {
    bool set;
    char *field_path;
    char *api_version;
};

struct pod_env_source {
    bool set;
    struct pod_field_ref field_ref;
    struct pod_key_ref config_map_key_ref;
    struct pod_key_ref secret_key_ref;
};

struct pod_env {
    char *name;
    char *value;
    struct pod_env_source value_from;
};

struct pod_name_ref {
    bool set;
    char *name;
    bool optional;
};

struct pod_env_from {
    char *prefix;
    struct pod_name_ref config_map_ref;
    struct pod_name_ref secret_ref;
};

struct pod_port {
    char *name;
    int64_t container_port;
    char *protocol;
};

struct pod_mount {
    char *name;
    char *mount_path;
    bool read_only;
    char *sub_path;
};

struct pod_resources {
    bool set;
    struct sc_kvv limits;
    struct sc_kvv requests;
};

struct pod_capabilities {
    bool set;
    struct sc_strv add;
    struct sc_strv drop;
};

/* securityContext of a container (every field) or of the pod (run_as_* only). -1: unset. */
struct pod_security {
    bool set;
    int64_t run_as_user;
    int64_t run_as_group;
    char *run_as_non_root;            /* "true" / "false" / NULL */
    char *allow_privilege_escalation; /* "true" / "false" / NULL */
    bool privileged;
    struct pod_capabilities capabilities;
};

struct pod_container {
    char *name;
    char *image;
    char *image_pull_policy;
    struct sc_strv command;
    struct sc_strv args;
    char *working_dir;
    struct sc_vec env;      /* struct pod_env */
    struct sc_vec env_from; /* struct pod_env_from */
    struct sc_vec ports;    /* struct pod_port */
    struct sc_vec mounts;   /* struct pod_mount */
    struct pod_probe_spec startup_probe;
    struct pod_probe_spec readiness_probe;
    struct pod_probe_spec liveness_probe;
    struct pod_lifecycle lifecycle;
    struct pod_resources resources;
    char *restart_policy; /* only "Always", only on init containers */
    struct pod_security security;
    char *termination_message_path;
    char *termination_message_policy;
};

struct pod_empty_dir {
    bool set;
    char *medium;
    char *size_limit;
};

struct pod_host_path {
    bool set;
    char *path;
    char *type;
};

struct pod_config_volume {
    bool set;
    char *name;        /* configMap.name */
    char *secret_name; /* secret.secretName */
    int64_t default_mode;
    bool optional;
};

struct pod_volume {
    char *name;
    struct pod_empty_dir empty_dir;
    struct pod_host_path host_path;
    struct pod_config_volume config_map;
    struct pod_config_volume secret;
};

struct pod_spec {
    struct sc_vec init_containers; /* struct pod_container */
    struct sc_vec containers;      /* struct pod_container */
    struct sc_vec volumes;         /* struct pod_volume */
    int restart_policy;            /* enum pod_restart */
    double grace_s;
    char *hostname;
    char *node_name;
    char *service_account_name;
    char *host_network; /* "true" / "false" / NULL (unset) */
    struct pod_security security;
};

struct pod_meta {
    bool set;
    char *name;
    char *namespace_;
    char *generate_name;
    struct sc_kvv labels;
    struct sc_kvv annotations;
};

struct pod_template {
    bool set;
    struct pod_meta metadata;
    struct pod_spec spec;
};

struct pod_selector {
    bool set;
    struct sc_kvv match_labels;
};

/* spec of a Pod, a Deployment or a Job: the pod fields inline plus the workload's. */
struct pod_any_spec {
    struct pod_spec pod;
    struct pod_template template_;
    int64_t replicas;
    struct pod_selector selector;
    int64_t backoff_limit;
    int64_t completions;
    int64_t parallelism;
    int64_t ttl_after_finished;
    int64_t active_deadline;
};

struct pod_doc {
    char *api_version;
    char *kind;
    struct pod_meta metadata;
    struct pod_any_spec spec;
};

/* A loaded manifest: <doc> as parsed, and <meta>/<spec> pointing at the pod inside it. */
struct pod_manifest {
    struct pod_doc doc;
    const struct pod_meta *meta; /* the Pod's, else the template's with the workload's name */
    const struct pod_spec *spec;
    const char *name; /* never NULL */
    char *path;
};

/* Returns true when <s> (a manifest boolean kept as text, may be NULL) is true / false. */
bool pod_is_true(const char *s);
bool pod_is_false(const char *s);

/* Returns the capability number of <name> ("NET_ADMIN" or "CAP_NET_ADMIN", any case), or -1. */
int pod_cap_number(const char *name);

/* Returns the name setpriv(1) knows capability <n> by ("net_admin"), or NULL. */
const char *pod_cap_name(int n);

/* Loads and validates the manifest at <path>: a v1 Pod, or the pod template of a Deployment,
 * ReplicaSet, StatefulSet, DaemonSet or Job. Returns a new manifest, or NULL with a new
 * "file:line:col: message (at path.to.field)" in <*err>. */
struct pod_manifest *pod_manifest_load(const char *path, char **err);

/* Frees <m>. NULL-safe. */
void pod_manifest_free(struct pod_manifest *m);

/* Returns the restart delay in milliseconds before restart number <restarts> (0 for the first):
 * <base> doubled per restart, capped at <max>. */
uint64_t pod_backoff_ms(uint64_t base, uint64_t max, unsigned restarts);

/* Looks <name> (<len> bytes, borrowed) up; returns a borrowed value or NULL when undefined. */
typedef const char *(*pod_lookup_cb)(void *arg, const char *name, size_t len);

/* Expands Kubernetes references in <s>: "$(NAME)" becomes the value <lookup> gives, or stays as
 * written when NAME is undefined; "$$" becomes "$" (so "$$(NAME)" is a literal "$(NAME)"). Returns
 * a new string. */
char *pod_expand(const char *s, pod_lookup_cb lookup, void *arg);

/* Appends one CRI log line (kubelet format) to <out>: "<RFC 3339 UTC time with nanoseconds>
 * <stream> <F|P> <msg>\n" for <sec>.<nsec> since the epoch. <partial> gives "P". Returns 0 or
 * SC_ETOOBIG. */
int pod_cri_line(struct sc_buf *out, int64_t sec, long nsec, const char *stream, bool partial,
                 const char *msg, size_t len);

/* Parses a Kubernetes CPU quantity ("500m", "2", "0.5") into millicores. Returns 0 or -EINVAL. */
int pod_parse_cpu(const char *s, uint64_t *millis);

/* Parses a Kubernetes memory quantity ("128Mi", "1G", "1000") into bytes. Returns 0 or -EINVAL. */
int pod_parse_memory(const char *s, uint64_t *bytes);

#endif
