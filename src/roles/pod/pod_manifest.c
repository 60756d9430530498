// SPDX-License-Identifier: Apache-2.0
// The Pod manifest subset, declared as option tables: the project's config loader parses the YAML
// and rejects every field the tables do not list, with "file:line:col", and this file adds the
// manifest path of the offending node ("at spec.containers[1].securityContext"), then checks the
// rules a table cannot express (one volume source, restartPolicy only on init containers, probe
// ports, unique names). A manifest is either a v1 Pod or a workload (Deployment, Job, ...) whose
// spec.template is the pod; both shapes share one `spec` table and are told apart after loading.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/pod/pod.h"

/* Marks an object as present; every such object starts with `bool set`. */
static int mark_set(void *field, char **err)
{
    (void)err;
    *(bool *)field = true;
    return 0;
}

#define OBJ(n, st, f, tab)                                                                         \
    {                                                                                              \
        .name = (n), .type = SC_OPT_OBJ, .offset = offsetof(st, f), .sub = (tab),                  \
        .check = mark_set                                                                          \
    }
#define STR(n, st, f)                                                                              \
    {                                                                                              \
        .name = (n), .type = SC_OPT_STR, .offset = offsetof(st, f)                                 \
    }
#define LIST(n, st, f, tab, et)                                                                    \
    {                                                                                              \
        .name = (n), .type = SC_OPT_OBJLIST, .offset = offsetof(st, f), .sub = (tab),              \
        .sub_size = sizeof(et)                                                                     \
    }

static const struct sc_opt exec_opts[] = {
    { .name = "command",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct pod_exec_action, command) },
    { 0 },
};

static const struct sc_opt pair_opts[] = {
    STR("name", struct pod_kv_pair, name),
    STR("value", struct pod_kv_pair, value),
    { 0 },
};

static const struct sc_opt http_opts[] = {
    STR("path", struct pod_http_get, path),
    STR("port", struct pod_http_get, port),
    STR("host", struct pod_http_get, host),
    STR("scheme", struct pod_http_get, scheme),
    LIST("httpHeaders", struct pod_http_get, headers, pair_opts, struct pod_kv_pair),
    { 0 },
};

static const struct sc_opt tcp_opts[] = {
    STR("port", struct pod_tcp_socket, port),
    STR("host", struct pod_tcp_socket, host),
    { 0 },
};

static const struct sc_opt sleep_opts[] = {
    { .name = "seconds",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_sleep_action, seconds),
      .min = 0,
      .max = 86400 },
    { 0 },
};

static const struct sc_opt handler_opts[] = {
    OBJ("exec", struct pod_handler, exec, exec_opts),
    OBJ("httpGet", struct pod_handler, http_get, http_opts),
    OBJ("tcpSocket", struct pod_handler, tcp_socket, tcp_opts),
    OBJ("sleep", struct pod_handler, sleep, sleep_opts),
    { 0 },
};

#define SECONDS(n, f, d)                                                                           \
    {                                                                                              \
        .name = (n), .type = SC_OPT_DOUBLE, .offset = offsetof(struct pod_probe_spec, f),          \
        .def = (d), .min = 0, .max = 86400                                                         \
    }

static const struct sc_opt probe_opts[] = {
    OBJ("exec", struct pod_probe_spec, exec, exec_opts),
    OBJ("httpGet", struct pod_probe_spec, http_get, http_opts),
    OBJ("tcpSocket", struct pod_probe_spec, tcp_socket, tcp_opts),
    SECONDS("initialDelaySeconds", initial_delay_s, "0"),
    SECONDS("periodSeconds", period_s, "10"),
    SECONDS("timeoutSeconds", timeout_s, "1"),
    { .name = "successThreshold",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_probe_spec, success_threshold),
      .def = "1",
      .min = 1,
      .max = 1000000 },
    { .name = "failureThreshold",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_probe_spec, failure_threshold),
      .def = "3",
      .min = 1,
      .max = 1000000 },
    { 0 },
};

static const struct sc_opt lifecycle_opts[] = {
    OBJ("postStart", struct pod_lifecycle, post_start, handler_opts),
    OBJ("preStop", struct pod_lifecycle, pre_stop, handler_opts),
    { 0 },
};

static const struct sc_opt field_ref_opts[] = {
    STR("fieldPath", struct pod_field_ref, field_path),
    STR("apiVersion", struct pod_field_ref, api_version),
    { 0 },
};

static const struct sc_opt key_ref_opts[] = {
    STR("name", struct pod_key_ref, name),
    STR("key", struct pod_key_ref, key),
    { .name = "optional", .type = SC_OPT_BOOL, .offset = offsetof(struct pod_key_ref, optional) },
    { 0 },
};

static const struct sc_opt env_source_opts[] = {
    OBJ("fieldRef", struct pod_env_source, field_ref, field_ref_opts),
    OBJ("configMapKeyRef", struct pod_env_source, config_map_key_ref, key_ref_opts),
    OBJ("secretKeyRef", struct pod_env_source, secret_key_ref, key_ref_opts),
    { 0 },
};

static const struct sc_opt env_opts[] = {
    STR("name", struct pod_env, name),
    STR("value", struct pod_env, value),
    OBJ("valueFrom", struct pod_env, value_from, env_source_opts),
    { 0 },
};

static const struct sc_opt name_ref_opts[] = {
    STR("name", struct pod_name_ref, name),
    { .name = "optional", .type = SC_OPT_BOOL, .offset = offsetof(struct pod_name_ref, optional) },
    { 0 },
};

static const struct sc_opt env_from_opts[] = {
    STR("prefix", struct pod_env_from, prefix),
    OBJ("configMapRef", struct pod_env_from, config_map_ref, name_ref_opts),
    OBJ("secretRef", struct pod_env_from, secret_ref, name_ref_opts),
    { 0 },
};

static const struct sc_opt port_opts[] = {
    STR("name", struct pod_port, name),
    { .name = "containerPort",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_port, container_port),
      .min = 1,
      .max = 65535 },
    STR("protocol", struct pod_port, protocol),
    { 0 },
};

static const struct sc_opt mount_opts[] = {
    STR("name", struct pod_mount, name),
    STR("mountPath", struct pod_mount, mount_path),
    { .name = "readOnly", .type = SC_OPT_BOOL, .offset = offsetof(struct pod_mount, read_only) },
    STR("subPath", struct pod_mount, sub_path),
    { 0 },
};

static const struct sc_opt resources_opts[] = {
    { .name = "limits", .type = SC_OPT_STRMAP, .offset = offsetof(struct pod_resources, limits) },
    { .name = "requests",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct pod_resources, requests) },
    { 0 },
};

static const struct sc_opt caps_opts[] = {
    { .name = "add", .type = SC_OPT_STRLIST, .offset = offsetof(struct pod_capabilities, add) },
    { .name = "drop", .type = SC_OPT_STRLIST, .offset = offsetof(struct pod_capabilities, drop) },
    { 0 },
};

#define RUN_AS(n, f)                                                                               \
    {                                                                                              \
        .name = (n), .type = SC_OPT_INT, .offset = offsetof(struct pod_security, f), .def = "-1"   \
    }

static const struct sc_opt security_opts[] = {
    RUN_AS("runAsUser", run_as_user),
    RUN_AS("runAsGroup", run_as_group),
    STR("runAsNonRoot", struct pod_security, run_as_non_root),
    STR("allowPrivilegeEscalation", struct pod_security, allow_privilege_escalation),
    { .name = "privileged",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_security, privileged) },
    OBJ("capabilities", struct pod_security, capabilities, caps_opts),
    { 0 },
};

/* The pod's securityContext: the defaults of its containers' user and group. */
static const struct sc_opt pod_security_opts[] = {
    RUN_AS("runAsUser", run_as_user),
    RUN_AS("runAsGroup", run_as_group),
    STR("runAsNonRoot", struct pod_security, run_as_non_root),
    { 0 },
};

static const struct sc_opt container_opts[] = {
    STR("name", struct pod_container, name),
    STR("image", struct pod_container, image),
    STR("imagePullPolicy", struct pod_container, image_pull_policy),
    { .name = "command",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct pod_container, command) },
    { .name = "args", .type = SC_OPT_STRLIST, .offset = offsetof(struct pod_container, args) },
    STR("workingDir", struct pod_container, working_dir),
    LIST("env", struct pod_container, env, env_opts, struct pod_env),
    LIST("envFrom", struct pod_container, env_from, env_from_opts, struct pod_env_from),
    LIST("ports", struct pod_container, ports, port_opts, struct pod_port),
    LIST("volumeMounts", struct pod_container, mounts, mount_opts, struct pod_mount),
    OBJ("startupProbe", struct pod_container, startup_probe, probe_opts),
    OBJ("readinessProbe", struct pod_container, readiness_probe, probe_opts),
    OBJ("livenessProbe", struct pod_container, liveness_probe, probe_opts),
    OBJ("lifecycle", struct pod_container, lifecycle, lifecycle_opts),
    OBJ("resources", struct pod_container, resources, resources_opts),
    STR("restartPolicy", struct pod_container, restart_policy),
    OBJ("securityContext", struct pod_container, security, security_opts),
    STR("terminationMessagePath", struct pod_container, termination_message_path),
    STR("terminationMessagePolicy", struct pod_container, termination_message_policy),
    { 0 },
};

static const struct sc_opt empty_dir_opts[] = {
    STR("medium", struct pod_empty_dir, medium),
    STR("sizeLimit", struct pod_empty_dir, size_limit),
    { 0 },
};

static const struct sc_opt host_path_opts[] = {
    STR("path", struct pod_host_path, path),
    STR("type", struct pod_host_path, type),
    { 0 },
};

static const struct sc_opt config_map_opts[] = {
    STR("name", struct pod_config_volume, name),
    { .name = "defaultMode",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_config_volume, default_mode),
      .def = "420",
      .min = 0,
      .max = 0777 },
    { .name = "optional",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_config_volume, optional) },
    { 0 },
};

static const struct sc_opt secret_opts[] = {
    STR("secretName", struct pod_config_volume, secret_name),
    { .name = "defaultMode",
      .type = SC_OPT_INT,
      .offset = offsetof(struct pod_config_volume, default_mode),
      .def = "420",
      .min = 0,
      .max = 0777 },
    { .name = "optional",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_config_volume, optional) },
    { 0 },
};

static const struct sc_opt volume_opts[] = {
    STR("name", struct pod_volume, name),
    OBJ("emptyDir", struct pod_volume, empty_dir, empty_dir_opts),
    OBJ("hostPath", struct pod_volume, host_path, host_path_opts),
    OBJ("configMap", struct pod_volume, config_map, config_map_opts),
    OBJ("secret", struct pod_volume, secret, secret_opts),
    { 0 },
};

static const char *const restart_policies[] = { "Always", "OnFailure", "Never", NULL };

static const struct sc_opt pod_spec_opts[] = {
    LIST("initContainers", struct pod_spec, init_containers, container_opts, struct pod_container),
    LIST("containers", struct pod_spec, containers, container_opts, struct pod_container),
    LIST("volumes", struct pod_spec, volumes, volume_opts, struct pod_volume),
    { .name = "restartPolicy",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct pod_spec, restart_policy),
      .def = "Always",
      .enums = restart_policies },
    { .name = "terminationGracePeriodSeconds",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct pod_spec, grace_s),
      .def = "30",
      .min = 0,
      .max = 86400 },
    STR("hostname", struct pod_spec, hostname),
    STR("nodeName", struct pod_spec, node_name),
    STR("serviceAccountName", struct pod_spec, service_account_name),
    STR("hostNetwork", struct pod_spec, host_network),
    OBJ("securityContext", struct pod_spec, security, pod_security_opts),
    { 0 },
};

static const struct sc_opt meta_opts[] = {
    STR("name", struct pod_meta, name),
    STR("namespace", struct pod_meta, namespace_),
    STR("generateName", struct pod_meta, generate_name),
    { .name = "labels", .type = SC_OPT_STRMAP, .offset = offsetof(struct pod_meta, labels) },
    { .name = "annotations",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct pod_meta, annotations) },
    { 0 },
};

static const struct sc_opt template_opts[] = {
    OBJ("metadata", struct pod_template, metadata, meta_opts),
    { .name = "spec",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct pod_template, spec),
      .sub = pod_spec_opts },
    { 0 },
};

static const struct sc_opt selector_opts[] = {
    { .name = "matchLabels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct pod_selector, match_labels) },
    { 0 },
};

#define WINT(n, f)                                                                                 \
    {                                                                                              \
        .name = (n), .type = SC_OPT_INT, .offset = offsetof(struct pod_any_spec, f), .def = "-1"   \
    }

static const struct sc_opt any_spec_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct pod_any_spec, pod), .sub = pod_spec_opts },
    OBJ("template", struct pod_any_spec, template_, template_opts),
    WINT("replicas", replicas),
    OBJ("selector", struct pod_any_spec, selector, selector_opts),
    WINT("backoffLimit", backoff_limit),
    WINT("completions", completions),
    WINT("parallelism", parallelism),
    WINT("ttlSecondsAfterFinished", ttl_after_finished),
    WINT("activeDeadlineSeconds", active_deadline),
    { 0 },
};

static const struct sc_opt doc_opts[] = {
    STR("apiVersion", struct pod_doc, api_version),
    STR("kind", struct pod_doc, kind),
    OBJ("metadata", struct pod_doc, metadata, meta_opts),
    { .name = "spec",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct pod_doc, spec),
      .sub = any_spec_opts },
    { 0 },
};

/* Walks the YAML at <path> and writes into <out> the path ("spec.containers[1].image") of the
 * node that starts at 1-based <line>:<col>. Returns true when found. */
static bool path_at(const char *path, unsigned long line, unsigned long col, struct sc_buf *best)
{
    struct sc_buf tmp;
    sc_buf_init(&tmp, best->max);
    struct sc_buf *out = &tmp;
    enum { MAXD = 64 };
    struct frame {
        bool map;
        bool want_key; /* map: the next node is a key */
        size_t index;  /* seq: the next element's index */
        size_t len;    /* out->len where the frame's path ends */
    } st[MAXD];
    int depth = 0;
    bool found = false, done = false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        return false;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    sc_buf_reset(out);
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            break;
        }
        bool node = ev.type == YAML_SCALAR_EVENT || ev.type == YAML_MAPPING_START_EVENT ||
                    ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_ALIAS_EVENT;
        bool is_key = false;
        if (node && depth > 0) {
            struct frame *fr = &st[depth - 1];
            if (fr->map && fr->want_key) {
                out->len = fr->len;
                if (ev.type == YAML_SCALAR_EVENT) {
                    sc_buf_appendf(out, "%s%s", out->len ? "." : "",
                                   (const char *)ev.data.scalar.value);
                }
                fr->want_key = false;
                is_key = true;
            } else if (fr->map) {
                fr->want_key = true;
            } else {
                out->len = fr->len;
                sc_buf_appendf(out, "[%zu]", fr->index++);
            }
        }
        /* a block mapping starts where its first key does: the deepest node there wins */
        if (node && ev.start_mark.line + 1 == line && ev.start_mark.column + 1 == col) {
            sc_buf_reset(best);
            sc_buf_append(best, out->p ? out->p : "", out->len);
            found = true;
        } else if (node && (ev.start_mark.line + 1 > line ||
                            (ev.start_mark.line + 1 == line && ev.start_mark.column + 1 > col))) {
            done = true;
        }
        if (!is_key &&
            (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)) {
            if (depth == MAXD) {
                done = true;
            } else {
                st[depth++] = (struct frame){ .map = ev.type == YAML_MAPPING_START_EVENT,
                                              .want_key = true,
                                              .len = out->len };
            }
        } else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT) {
            depth = depth > 0 ? depth - 1 : 0;
        } else if (ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT) {
            done = true;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(f);
    sc_buf_cleanup(&tmp);
    return found;
}

/* Appends " (at PATH)" to a loader error that starts with "<file>:<line>:<col>:". */
static char *with_path(const char *file, char *err)
{
    size_t n = strlen(file);
    if (!err || strncmp(err, file, n) != 0 || err[n] != ':') {
        return err;
    }
    char *e = NULL;
    unsigned long line = strtoul(err + n + 1, &e, 10);
    if (!e || *e != ':') {
        return err;
    }
    unsigned long col = strtoul(e + 1, &e, 10);
    if (!e || *e != ':') {
        return err;
    }
    struct sc_buf path;
    sc_buf_init(&path, 4096);
    if (path_at(file, line, col, &path) && path.len > 0) {
        char *m = sc_asprintf("%s (at %s)", err, sc_buf_cstr(&path));
        sc_free(err);
        err = m;
    }
    sc_buf_cleanup(&path);
    return err;
}

/* Sets <*err> to "file: path: message". Returns SC_ECONFIG. */
static int bad(char **err, const char *file, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(char **err, const char *file, const char *path, const char *fmt, ...)
{
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    sc_buf_appendf(&b, "%s: %s: ", file, path);
    va_list ap;
    va_start(ap, fmt);
    sc_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    *err = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return SC_ECONFIG;
}

static bool is_port(const struct pod_container *c, const char *port)
{
    if (!port || !*port) {
        return false;
    }
    uint64_t v;
    if (sc_str_to_u64(sc_str_c(port), 65535, &v) == 0) {
        return v > 0;
    }
    for (size_t i = 0; i < c->ports.n; i++) {
        const struct pod_port *p = (const struct pod_port *)c->ports.v + i;
        if (p->name && strcmp(p->name, port) == 0) {
            return true;
        }
    }
    return false;
}

static int check_action(const char *file, const char *path, const struct pod_container *c,
                        const struct pod_exec_action *ex, const struct pod_http_get *hg,
                        const struct pod_tcp_socket *ts, const struct pod_sleep_action *sl,
                        char **err)
{
    int n = ex->set + hg->set + ts->set + (sl && sl->set);
    if (n != 1) {
        return bad(err, file, path, "needs exactly one of exec, httpGet, tcpSocket%s (found %d)",
                   sl ? ", sleep" : "", n);
    }
    if (ex->set && ex->command.n == 0) {
        return bad(err, file, path, "exec.command is empty");
    }
    if (hg->set && !is_port(c, hg->port)) {
        return bad(err, file, path, "httpGet.port \"%s\" is neither a port number nor a named port",
                   hg->port ? hg->port : "");
    }
    if (hg->set && hg->scheme && strcmp(hg->scheme, "HTTP") != 0) {
        return bad(err, file, path, "httpGet.scheme %s is not supported (only HTTP)", hg->scheme);
    }
    if (ts->set && !is_port(c, ts->port)) {
        return bad(err, file, path,
                   "tcpSocket.port \"%s\" is neither a port number nor a named port",
                   ts->port ? ts->port : "");
    }
    return 0;
}

static bool has_volume(const struct pod_spec *s, const char *name)
{
    for (size_t i = 0; name && i < s->volumes.n; i++) {
        if (strcmp(((const struct pod_volume *)s->volumes.v)[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

static const char *const field_paths[] = {
    "metadata.name", "metadata.namespace",      "metadata.uid",
    "spec.nodeName", "spec.serviceAccountName", "status.podIP",
    "status.hostIP", "status.podIPs",           NULL,
};

static bool field_path_ok(const char *p)
{
    if (!p) {
        return false;
    }
    for (size_t i = 0; field_paths[i]; i++) {
        if (strcmp(field_paths[i], p) == 0) {
            return true;
        }
    }
    return strncmp(p, "metadata.labels['", 17) == 0 ||
           strncmp(p, "metadata.annotations['", 22) == 0;
}

static bool is_bool(const char *v)
{
    return !v || pod_is_true(v) || pod_is_false(v);
}

/* securityContext of a container (<caps> true) or of the pod. */
static int check_security(const char *file, const char *path, const struct pod_security *sc,
                          bool caps, char **err)
{
    if (!sc->set) {
        return 0;
    }
    char sub[200];
    snprintf(sub, sizeof(sub), "%s.securityContext", path);
    const int64_t ids[] = { sc->run_as_user, sc->run_as_group };
    for (size_t k = 0; k < 2; k++) {
        if (ids[k] < -1 || ids[k] > 2147483647) {
            return bad(err, file, sub, "%s must be 0..2147483647", k ? "runAsGroup" : "runAsUser");
        }
    }
    if (!is_bool(sc->run_as_non_root) || !is_bool(sc->allow_privilege_escalation)) {
        return bad(err, file, sub, "runAsNonRoot and allowPrivilegeEscalation are true or false");
    }
    if (pod_is_true(sc->run_as_non_root) && sc->run_as_user == 0) {
        return bad(err, file, sub, "runAsNonRoot is true but runAsUser is 0");
    }
    const struct sc_strv *lists[] = { &sc->capabilities.add, &sc->capabilities.drop };
    for (size_t k = 0; caps && k < 2; k++) {
        for (size_t i = 0; i < lists[k]->n; i++) {
            const char *n = lists[k]->v[i];
            if (pod_cap_number(n) < 0 && !(k == 1 && strcasecmp(n, "ALL") == 0)) {
                return bad(err, file, sub, "capabilities.%s: unknown capability \"%s\"%s",
                           k ? "drop" : "add", n, k ? "" : " (ALL is only for drop)");
            }
        }
    }
    return 0;
}

static int check_container(const char *file, const struct pod_spec *s,
                           const struct pod_container *c, const char *list, size_t i, bool init,
                           char **err)
{
    char path[96];
    snprintf(path, sizeof(path), "spec.%s[%zu]", list, i);
    char sub[160];
    if (!c->name || !*c->name) {
        return bad(err, file, path, "name is required");
    }
    for (const char *p = c->name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            return bad(err, file, path, "name \"%s\" is not a DNS label (a-z, 0-9, '-')", c->name);
        }
    }
    if (c->command.n == 0) {
        return bad(err, file, path,
                   "command is required: containers run as host processes, so the image's "
                   "entrypoint is not available");
    }
    if (c->restart_policy) {
        if (!init) {
            return bad(err, file, path,
                       "restartPolicy is allowed only on init containers (native sidecars)");
        }
        if (strcmp(c->restart_policy, "Always") != 0) {
            return bad(err, file, path,
                       "restartPolicy \"%s\" is not allowed: init containers accept only Always "
                       "(a native sidecar)",
                       c->restart_policy);
        }
    }
    bool sidecar = init && c->restart_policy;
    if (init && !sidecar &&
        (c->readiness_probe.set || c->liveness_probe.set || c->startup_probe.set)) {
        return bad(err, file, path,
                   "probes are not allowed on init containers unless restartPolicy is Always");
    }
    if (init && !sidecar && c->lifecycle.set) {
        return bad(err, file, path,
                   "lifecycle is not allowed on init containers unless restartPolicy is Always");
    }
    const struct pod_probe_spec *probes[] = { &c->startup_probe, &c->readiness_probe,
                                              &c->liveness_probe };
    const char *pnames[] = { "startupProbe", "readinessProbe", "livenessProbe" };
    for (size_t k = 0; k < 3; k++) {
        const struct pod_probe_spec *p = probes[k];
        if (!p->set) {
            continue;
        }
        snprintf(sub, sizeof(sub), "%s.%s", path, pnames[k]);
        if (check_action(file, sub, c, &p->exec, &p->http_get, &p->tcp_socket, NULL, err) < 0) {
            return SC_ECONFIG;
        }
        if (k != 1 && p->success_threshold != 1) {
            return bad(err, file, sub, "successThreshold must be 1 for %s", pnames[k]);
        }
        if (p->period_s <= 0 || p->timeout_s <= 0) {
            return bad(err, file, sub, "periodSeconds and timeoutSeconds must be positive");
        }
    }
    const struct pod_handler *hs[] = { &c->lifecycle.post_start, &c->lifecycle.pre_stop };
    const char *hnames[] = { "lifecycle.postStart", "lifecycle.preStop" };
    for (size_t k = 0; k < 2; k++) {
        if (!hs[k]->set) {
            continue;
        }
        snprintf(sub, sizeof(sub), "%s.%s", path, hnames[k]);
        if (check_action(file, sub, c, &hs[k]->exec, &hs[k]->http_get, &hs[k]->tcp_socket,
                         &hs[k]->sleep, err) < 0) {
            return SC_ECONFIG;
        }
        if (hs[k]->tcp_socket.set) {
            return bad(err, file, sub, "tcpSocket is not a valid lifecycle handler");
        }
    }
    for (size_t k = 0; k < c->env.n; k++) {
        const struct pod_env *e = (const struct pod_env *)c->env.v + k;
        snprintf(sub, sizeof(sub), "%s.env[%zu]", path, k);
        if (!e->name || !*e->name) {
            return bad(err, file, sub, "name is required");
        }
        const struct pod_env_source *vf = &e->value_from;
        int n = vf->field_ref.set + vf->config_map_key_ref.set + vf->secret_key_ref.set;
        if (vf->set && (n != 1 || e->value)) {
            return bad(err, file, sub,
                       "valueFrom needs exactly one of fieldRef, configMapKeyRef, secretKeyRef, "
                       "and no value");
        }
        if (vf->field_ref.set && !field_path_ok(vf->field_ref.field_path)) {
            return bad(err, file, sub, "valueFrom.fieldRef.fieldPath \"%s\" is not supported",
                       vf->field_ref.field_path ? vf->field_ref.field_path : "");
        }
        const struct pod_key_ref *kr =
            vf->config_map_key_ref.set ? &vf->config_map_key_ref : &vf->secret_key_ref;
        if ((vf->config_map_key_ref.set || vf->secret_key_ref.set) && (!kr->name || !kr->key)) {
            return bad(err, file, sub, "a key reference needs name and key");
        }
    }
    for (size_t k = 0; k < c->env_from.n; k++) {
        const struct pod_env_from *e = (const struct pod_env_from *)c->env_from.v + k;
        snprintf(sub, sizeof(sub), "%s.envFrom[%zu]", path, k);
        const struct pod_name_ref *r = e->config_map_ref.set ? &e->config_map_ref : &e->secret_ref;
        if (e->config_map_ref.set + e->secret_ref.set != 1 || !r->name) {
            return bad(err, file, sub, "needs exactly one of configMapRef, secretRef with a name");
        }
    }
    for (size_t k = 0; k < c->mounts.n; k++) {
        const struct pod_mount *m = (const struct pod_mount *)c->mounts.v + k;
        snprintf(sub, sizeof(sub), "%s.volumeMounts[%zu]", path, k);
        if (!has_volume(s, m->name)) {
            return bad(err, file, sub, "volume \"%s\" is not in spec.volumes",
                       m->name ? m->name : "");
        }
        if (!m->mount_path || m->mount_path[0] != '/' || strstr(m->mount_path, "..")) {
            return bad(err, file, sub, "mountPath must be an absolute path without \"..\"");
        }
        if (m->sub_path && (m->sub_path[0] == '/' || strstr(m->sub_path, ".."))) {
            return bad(err, file, sub, "subPath must be relative, without \"..\"");
        }
    }
    if (check_security(file, path, &c->security, true, err) < 0) {
        return SC_ECONFIG;
    }
    if (c->resources.set) {
        const struct sc_kvv *kv[] = { &c->resources.limits, &c->resources.requests };
        for (size_t k = 0; k < 2; k++) {
            for (size_t j = 0; j < kv[k]->n; j++) {
                const struct sc_kv *q = &kv[k]->v[j];
                uint64_t v;
                int rc = strcmp(q->key, "cpu") == 0      ? pod_parse_cpu(q->value, &v)
                         : strcmp(q->key, "memory") == 0 ? pod_parse_memory(q->value, &v)
                                                         : -2;
                snprintf(sub, sizeof(sub), "%s.resources.%s.%s", path, k ? "requests" : "limits",
                         q->key);
                if (rc == -2) {
                    return bad(err, file, sub, "unsupported resource (only cpu and memory)");
                }
                if (rc < 0) {
                    return bad(err, file, sub, "invalid quantity \"%s\"", q->value);
                }
            }
        }
    }
    return 0;
}

static int check_spec(const char *file, const struct pod_spec *s, char **err)
{
    if (s->containers.n == 0) {
        return bad(err, file, "spec.containers", "at least one container is required");
    }
    if (!is_bool(s->host_network)) {
        return bad(err, file, "spec.hostNetwork", "must be true or false, not \"%s\"",
                   s->host_network);
    }
    if (check_security(file, "spec", &s->security, false, err) < 0) {
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < s->volumes.n; i++) {
        const struct pod_volume *v = (const struct pod_volume *)s->volumes.v + i;
        char path[64];
        snprintf(path, sizeof(path), "spec.volumes[%zu]", i);
        if (!v->name || !*v->name) {
            return bad(err, file, path, "name is required");
        }
        if (strchr(v->name, '/') || strcmp(v->name, ".") == 0 || strcmp(v->name, "..") == 0) {
            return bad(err, file, path, "name \"%s\" is not valid", v->name);
        }
        int n = v->empty_dir.set + v->host_path.set + v->config_map.set + v->secret.set;
        if (n != 1) {
            return bad(err, file, path,
                       "needs exactly one of emptyDir, hostPath, configMap, secret (the other "
                       "volume types are not supported)");
        }
        if (v->host_path.set && (!v->host_path.path || v->host_path.path[0] != '/')) {
            return bad(err, file, path, "hostPath.path must be absolute");
        }
        if ((v->config_map.set && !v->config_map.name) ||
            (v->secret.set && !v->secret.secret_name)) {
            return bad(err, file, path, "configMap.name / secret.secretName is required");
        }
        if (v->empty_dir.set && v->empty_dir.medium && *v->empty_dir.medium &&
            strcmp(v->empty_dir.medium, "Memory") != 0) {
            return bad(err, file, path, "emptyDir.medium must be \"\" or Memory");
        }
        uint64_t b;
        if (v->empty_dir.size_limit && pod_parse_memory(v->empty_dir.size_limit, &b) < 0) {
            return bad(err, file, path, "emptyDir.sizeLimit \"%s\" is not a quantity",
                       v->empty_dir.size_limit);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(((const struct pod_volume *)s->volumes.v)[j].name, v->name) == 0) {
                return bad(err, file, path, "duplicate volume name \"%s\"", v->name);
            }
        }
    }
    const struct sc_vec *lists[] = { &s->init_containers, &s->containers };
    const char *names[] = { "initContainers", "containers" };
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            const struct pod_container *c = (const struct pod_container *)lists[l]->v + i;
            if (check_container(file, s, c, names[l], i, l == 0, err) < 0) {
                return SC_ECONFIG;
            }
            for (size_t m = 0; m <= l; m++) {
                size_t end = m == l ? i : lists[m]->n;
                for (size_t j = 0; j < end; j++) {
                    const struct pod_container *o = (const struct pod_container *)lists[m]->v + j;
                    if (strcmp(o->name, c->name) == 0) {
                        char path[64];
                        snprintf(path, sizeof(path), "spec.%s[%zu]", names[l], i);
                        return bad(err, file, path, "duplicate container name \"%s\"", c->name);
                    }
                }
            }
        }
    }
    return 0;
}

static bool spec_empty(const struct pod_spec *s)
{
    return s->init_containers.n == 0 && s->containers.n == 0 && s->volumes.n == 0;
}

static bool workload_empty(const struct pod_any_spec *s)
{
    return !s->template_.set && s->replicas == -1 && !s->selector.set && s->backoff_limit == -1 &&
           s->completions == -1 && s->parallelism == -1 && s->ttl_after_finished == -1 &&
           s->active_deadline == -1;
}

static const char *const workloads[] = { "Deployment", "ReplicaSet", "StatefulSet",
                                         "DaemonSet",  "Job",        NULL };

struct pod_manifest *pod_manifest_load(const char *path, char **err)
{
    struct pod_manifest *m = SC_NEW(struct pod_manifest);
    m->path = sc_strdup(path);
    sc_config_defaults(doc_opts, &m->doc);
    if (sc_config_load_file(doc_opts, &m->doc, path, err) < 0) {
        *err = with_path(path, *err);
        goto fail;
    }
    struct pod_doc *d = &m->doc;
    if (!d->kind) {
        bad(err, path, "kind", "missing (expected Pod, or a workload such as Deployment or Job)");
        goto fail;
    }
    if (strcmp(d->kind, "Pod") == 0) {
        if (d->api_version && strcmp(d->api_version, "v1") != 0) {
            bad(err, path, "apiVersion", "a Pod is apiVersion v1, not \"%s\"", d->api_version);
            goto fail;
        }
        if (!workload_empty(&d->spec)) {
            bad(err, path, "spec", "a Pod has no template, replicas, selector or Job fields");
            goto fail;
        }
        m->meta = &d->metadata;
        m->spec = &d->spec.pod;
    } else {
        bool known = false;
        for (size_t i = 0; workloads[i]; i++) {
            known = known || strcmp(workloads[i], d->kind) == 0;
        }
        if (!known) {
            bad(err, path, "kind",
                "\"%s\" is not supported (Pod, Deployment, ReplicaSet, "
                "StatefulSet, DaemonSet or Job)",
                d->kind);
            goto fail;
        }
        if (!d->spec.template_.set || !spec_empty(&d->spec.pod)) {
            bad(err, path, "spec", "a %s describes its pod in spec.template (metadata, spec)",
                d->kind);
            goto fail;
        }
        m->meta = &d->spec.template_.metadata;
        m->spec = &d->spec.template_.spec;
    }
    const char *file = path;
    if (check_spec(file, m->spec, err) < 0) {
        if (m->spec == &d->spec.template_.spec) {
            /* the paths above are relative to the pod spec: say where it is */
            char *e = sc_asprintf("%s (in spec.template)", *err);
            sc_free(*err);
            *err = e;
        }
        goto fail;
    }
    m->name = m->meta->name ? m->meta->name : d->metadata.name ? d->metadata.name : "pod";
    return m;
fail:
    pod_manifest_free(m);
    return NULL;
}

void pod_manifest_free(struct pod_manifest *m)
{
    if (!m) {
        return;
    }
    sc_config_free(doc_opts, &m->doc);
    sc_free(m->path);
    sc_free(m);
}
